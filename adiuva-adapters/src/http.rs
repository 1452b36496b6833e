//! [`HttpClient`]: the one outgoing HTTP client every REST adapter uses (the
//! OpenAI-compatible models, Pinecone; Stripe, OAuth, Gmail and Graph next), so timeouts,
//! retries, secret scrubbing and error bodies behave the same for all of them.
//!
//! - **Timeouts:** a connect deadline, and one `timeout` that bounds a whole buffered
//!   exchange ([`Call::send`]) and the longest silence of a streamed one ([`Call::stream`]).
//! - **Retries:** up to `max_retries` more attempts, with exponential backoff and jitter
//!   (half the doubled delay plus a random part of the other half), or the server's
//!   `Retry-After` (seconds or an HTTP date; OpenAI's `retry-after-ms` too), each wait
//!   capped by `max_delay`. Which error statuses are worth another attempt is the
//!   adapter's to say ([`Call::retry_when`]; by default 408, 429, 502, 503, 504 — not a
//!   500, which means the server failed on *this* request). A request that was never sent
//!   (connection refused) is always retried; once its body may have reached the server, a
//!   request is sent again only if its method is idempotent or the adapter marked it
//!   [`Call::replay_safe`].
//! - **Secrets:** keys go in headers marked sensitive ([`sensitive`], [`bearer`]), so
//!   reqwest never prints them; every message this module writes has the client's and the
//!   call's secrets replaced by `***` and its URLs passed through
//!   [`adiuva_core::secret::redact_url`].
//! - **Error bodies:** at most [`MAX_ERROR_BODY`] bytes are read; the message is taken from
//!   `{"error":{"message"}}`, `{"error":"…"}`, `{"message"}`, `{"detail"}` or the text
//!   itself, and shortened to [`MAX_MESSAGE`] characters.
//!
//! Past the ~600-line rule only by its unit tests (the last ~50 lines): the client is one
//! retry/timeout/scrubbing loop that reads best whole.

use std::fmt;
use std::hash::{BuildHasher as _, Hasher as _};
use std::time::{Duration, SystemTime};

use adiuva_core::secret::{Secret, redact_url};
use bytes::{Bytes, BytesMut};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::AdapterError;

/// The most of an error body that is read (the rest is left unread).
pub const MAX_ERROR_BODY: usize = 64 * 1024;
/// The longest error message quoted from a body, in characters.
pub const MAX_MESSAGE: usize = 300;

/// How often and how patiently to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySchedule {
    /// Attempts after the first one.
    pub max_retries: u32,
    /// Backoff before the first retry; doubled before each further one.
    pub base_delay: Duration,
    /// Cap on any one wait, including a server's `Retry-After`.
    pub max_delay: Duration,
}

/// Timeouts and retries of one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConfig {
    /// Deadline for establishing a connection.
    pub connect_timeout: Duration,
    /// Deadline of one buffered attempt; for a streamed answer, the longest silence.
    pub timeout: Duration,
    /// The retry schedule.
    pub retry: RetrySchedule,
}

/// Why a call failed. `Display` and `Debug` never hold a secret: messages are scrubbed
/// when they are made.
#[non_exhaustive]
pub enum HttpError {
    /// The service answered with an error status (the last one, after any retries).
    Status {
        /// The status.
        status: StatusCode,
        /// The service's message (see the module docs), shortened.
        message: String,
        /// The error body as text, scrubbed, at most [`MAX_ERROR_BODY`] bytes read.
        body: String,
        /// Attempts made.
        attempts: u32,
    },
    /// No usable answer: the connection failed, the deadline passed, or the body broke off.
    Transport {
        /// What happened, with its causes.
        message: String,
        /// Whether a deadline passed.
        timed_out: bool,
        /// Attempts made.
        attempts: u32,
    },
    /// The request could not be built (a URL or header the HTTP stack refuses).
    Invalid(String),
}

impl HttpError {
    /// The status, if the service answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    fn attempts(&self) -> u32 {
        match self {
            HttpError::Status { attempts, .. } | HttpError::Transport { attempts, .. } => *attempts,
            HttpError::Invalid(_) => 1,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Status {
                status, message, ..
            } => write!(f, "HTTP {status}: {message}")?,
            HttpError::Transport { message, .. } => f.write_str(message)?,
            HttpError::Invalid(message) => return f.write_str(message),
        }
        match self.attempts() {
            n if n > 1 => write!(f, " (after {n} attempts)"),
            _ => Ok(()),
        }
    }
}

impl fmt::Debug for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body is left out: it is long, and the message already quotes it.
        match self {
            HttpError::Status {
                status,
                message,
                attempts,
                ..
            } => f
                .debug_struct("Status")
                .field("status", status)
                .field("message", message)
                .field("attempts", attempts)
                .finish_non_exhaustive(),
            HttpError::Transport {
                message,
                timed_out,
                attempts,
            } => f
                .debug_struct("Transport")
                .field("message", message)
                .field("timed_out", timed_out)
                .field("attempts", attempts)
                .finish(),
            HttpError::Invalid(m) => f.debug_tuple("Invalid").field(m).finish(),
        }
    }
}

impl std::error::Error for HttpError {}

/// A header value marked sensitive: reqwest and hyper never print it nor put it in
/// HTTP/2 compression tables. `None` if the text cannot be a header value.
pub fn sensitive(value: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(value).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// `Bearer <key>` (the key trimmed), marked sensitive.
pub fn bearer(key: &str) -> Option<HeaderValue> {
    sensitive(&format!("Bearer {}", key.trim()))
}

/// The shared HTTP client of one adapter (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    http: reqwest::Client,
    cfg: HttpConfig,
    secrets: Vec<Secret<String>>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("config", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client with `cfg`'s timeouts sending `headers` on every request (mark secret
    /// ones with [`sensitive`]); `secrets` are scrubbed from every message it writes.
    pub fn new(
        cfg: HttpConfig,
        headers: HeaderMap,
        secrets: impl IntoIterator<Item = Secret<String>>,
    ) -> Result<Self, AdapterError> {
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(cfg.connect_timeout)
            // Per read, so a long stream is fine while bytes keep coming; buffered calls
            // also get a total deadline per attempt (see `Call::send`).
            .read_timeout(cfg.timeout)
            .build()
            .map_err(|e| AdapterError::Connect(format!("cannot set up an HTTP client: {e}")))?;
        let secrets = secrets
            .into_iter()
            .filter(|s| !s.expose().trim().is_empty())
            .collect();
        Ok(Self { http, cfg, secrets })
    }

    /// The same client with another retry schedule.
    pub fn with_retry(mut self, retry: RetrySchedule) -> Self {
        self.cfg.retry = retry;
        self
    }

    /// Its timeouts and retries.
    pub fn config(&self) -> &HttpConfig {
        &self.cfg
    }

    /// A call to `url`; nothing is sent until [`Call::send`] or [`Call::stream`].
    pub fn call<'a>(&'a self, method: Method, url: impl Into<String>) -> Call<'a> {
        Call {
            client: self,
            method,
            url: url.into(),
            headers: HeaderMap::new(),
            body: None,
            replay_safe: false,
            retry_when: default_retry,
            secrets: Vec::new(),
        }
    }

    /// The message of an error body (see [`error_message`]), scrubbed before it is cut
    /// so no part of a secret survives.
    pub fn message(&self, body: &[u8]) -> String {
        error_message(self.scrub(&String::from_utf8_lossy(body), &[]).as_bytes())
    }

    /// `text` with every secret this client and `extra` know of replaced by `***`.
    pub fn scrub(&self, text: &str, extra: &[&str]) -> String {
        let mut text = text.to_owned();
        let own = self.secrets.iter().map(|s| s.expose().trim());
        for key in own.chain(extra.iter().map(|k| k.trim())) {
            if !key.is_empty() {
                text = text.replace(key, "***");
            }
        }
        text
    }
}

/// Retried by default: a timeout, rate limiting, a gateway or an overloaded server.
fn default_retry(status: StatusCode, _body: &[u8]) -> bool {
    matches!(
        status,
        StatusCode::REQUEST_TIMEOUT
            | StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
    )
}

/// One request being prepared (see [`HttpClient::call`]).
#[must_use = "a call does nothing until it is sent"]
pub struct Call<'a> {
    client: &'a HttpClient,
    method: Method,
    url: String,
    headers: HeaderMap,
    body: Option<Bytes>,
    replay_safe: bool,
    retry_when: fn(StatusCode, &[u8]) -> bool,
    secrets: Vec<&'a str>,
}

/// What one attempt came to.
enum Attempt {
    Done(reqwest::Response),
    Failed {
        error: HttpError,
        retry: bool,
        wait: Option<Duration>,
    },
}

impl<'a> Call<'a> {
    /// Adds a header (mark secret values with [`sensitive`]).
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// A JSON body.
    pub fn json(self, body: Bytes) -> Self {
        self.body("application/json", body)
    }

    /// A body of any type (`application/x-www-form-urlencoded` for OAuth and Stripe).
    pub fn body(mut self, content_type: &'static str, body: Bytes) -> Self {
        self.headers
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        self.body = Some(body);
        self
    }

    /// Sending this request twice is harmless (the adapter knows: a completion, an
    /// upsert by id, a call with an idempotency key), so it may be retried after its body
    /// was sent even if its method is not idempotent.
    pub fn replay_safe(mut self) -> Self {
        self.replay_safe = true;
        self
    }

    /// Which error answers are worth another attempt (instead of the default).
    pub fn retry_when(mut self, f: fn(StatusCode, &[u8]) -> bool) -> Self {
        self.retry_when = f;
        self
    }

    /// One more secret to scrub from this call's messages (a per-request key).
    pub fn secret(mut self, secret: &'a str) -> Self {
        self.secrets.push(secret);
        self
    }

    /// Sends with retries; the whole body of a 2xx answer. Each attempt must finish
    /// within the client's `timeout`.
    pub async fn send(self) -> Result<Bytes, HttpError> {
        let deadline = self.client.cfg.timeout;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let outcome = match self.attempt(Some(deadline), attempts).await {
                Attempt::Done(resp) => match resp.bytes().await {
                    Ok(body) => return Ok(body),
                    Err(e) => self.transport(&e, attempts),
                },
                failed => failed,
            };
            self.pause_or_fail(outcome, attempts).await?;
        }
    }

    /// Sends with retries until an answer starts; the 2xx response whose body is still
    /// to be read (it fails if the service stays silent for the client's `timeout`).
    pub async fn stream(self) -> Result<reqwest::Response, HttpError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.attempt(None, attempts).await {
                Attempt::Done(resp) => return Ok(resp),
                failed => self.pause_or_fail(failed, attempts).await?,
            }
        }
    }

    /// Whether the method means the same when repeated (RFC 9110 §9.2.2).
    fn idempotent(&self) -> bool {
        self.replay_safe
            || matches!(
                self.method,
                Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
            )
    }

    async fn attempt(&self, deadline: Option<Duration>, attempts: u32) -> Attempt {
        let mut req = self
            .client
            .http
            .request(self.method.clone(), &self.url)
            .headers(self.headers.clone());
        if let Some(body) = &self.body {
            req = req.body(body.clone());
        }
        if let Some(deadline) = deadline {
            req = req.timeout(deadline);
        }
        let mut resp = match req.send().await {
            Ok(resp) if resp.status().is_success() => return Attempt::Done(resp),
            Ok(resp) => resp,
            Err(e) if e.is_builder() => {
                return Attempt::Failed {
                    error: HttpError::Invalid(format!(
                        "cannot build a request to {}: {}",
                        redact_url(&self.url),
                        self.chain(&e)
                    )),
                    retry: false,
                    wait: None,
                };
            }
            Err(e) => return self.transport(&e, attempts),
        };
        let status = resp.status();
        let wait = retry_after(resp.headers(), SystemTime::now());
        let mut body = BytesMut::new();
        while body.len() < MAX_ERROR_BODY {
            match resp.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                // A broken error body still says enough: the status.
                Ok(None) | Err(_) => break,
            }
        }
        body.truncate(MAX_ERROR_BODY);
        let retry = (self.retry_when)(status, &body) && self.idempotent();
        let text = self
            .client
            .scrub(&String::from_utf8_lossy(&body), &self.secrets);
        Attempt::Failed {
            error: HttpError::Status {
                status,
                message: error_message(text.as_bytes()),
                body: text,
                attempts,
            },
            retry,
            wait,
        }
    }

    /// A transport failure: retried if nothing was sent yet, or if sending again is safe.
    fn transport(&self, e: &reqwest::Error, attempts: u32) -> Attempt {
        let message = if e.is_timeout() {
            let limit = if e.is_connect() {
                self.client.cfg.connect_timeout
            } else {
                self.client.cfg.timeout
            };
            format!("no answer from {} within {limit:?}", origin(&self.url))
        } else {
            self.chain(e)
        };
        Attempt::Failed {
            error: HttpError::Transport {
                message,
                timed_out: e.is_timeout(),
                attempts,
            },
            retry: e.is_connect() || self.idempotent(),
            wait: None,
        }
    }

    /// Returns the error if it is final; else waits before the next attempt.
    async fn pause_or_fail(&self, outcome: Attempt, attempts: u32) -> Result<(), HttpError> {
        let Attempt::Failed { error, retry, wait } = outcome else {
            return Ok(());
        };
        let schedule = self.client.cfg.retry;
        if !retry || attempts > schedule.max_retries {
            return Err(error);
        }
        let delay = wait
            .unwrap_or_else(|| backoff(schedule.base_delay, attempts))
            .min(schedule.max_delay);
        tracing::debug!(
            attempt = attempts,
            delay_ms = delay.as_millis() as u64,
            why = %error,
            url = %redact_url(&self.url),
            "retrying an outgoing request"
        );
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// A reqwest error with its causes, URLs redacted, secrets scrubbed.
    fn chain(&self, e: &reqwest::Error) -> String {
        let mut text = e.to_string();
        if let Some(url) = e.url() {
            text = text.replace(url.as_str(), &redact_url(url.as_str()));
        }
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        self.client.scrub(&text, &self.secrets)
    }
}

/// `scheme://host[:port]` of a URL, for messages (no path, query or credentials).
fn origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => redact_url(url),
    }
}

/// The wait before retry number `attempt`: `base · 2^(attempt-1)`, of which the upper half
/// is random, so clients that failed together do not all come back together.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let full = base.saturating_mul(1 << (attempt.saturating_sub(1)).min(16));
    let half = full / 2;
    // A fresh `RandomState` is randomly keyed: randomness without a dependency.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(random.checked_rem(nanos + 1).unwrap_or(0))
}

/// The wait a server asks for: OpenAI's `retry-after-ms`, or `Retry-After` in seconds or
/// as an HTTP date (a date in the past means now).
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| headers.get(name)?.to_str().ok().map(str::trim);
    let number = |s: &str| s.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0);
    if let Some(ms) = text("retry-after-ms").and_then(number) {
        return Some(Duration::from_secs_f64(ms.min(86_400_000.0) / 1000.0));
    }
    let value = text(RETRY_AFTER.as_str())?;
    if let Some(secs) = number(value) {
        return Some(Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The message of an error body: `{"error":{"message"}}` (OpenAI, Pinecone's control
/// plane), `{"error":"…"}` (Ollama), `{"message"}` (vLLM, Pinecone's data plane),
/// `{"detail"}`, or the text itself; at most [`MAX_MESSAGE`] characters.
pub fn error_message(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(v) => message_of(&v).unwrap_or_else(|| v.to_string()),
        Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
    };
    if text.is_empty() {
        return "(no message)".into();
    }
    shorten(text)
}

/// The message field of a parsed error body, if it has one.
pub fn message_of(v: &Value) -> Option<String> {
    let error = v.get("error");
    error
        .and_then(|e| e.get("message"))
        .or_else(|| error.filter(|e| e.is_string()))
        .or_else(|| v.get("message"))
        .or_else(|| v.get("detail"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// `text` cut to [`MAX_MESSAGE`] characters, marked with `…` when cut.
pub fn shorten(text: String) -> String {
    match text.char_indices().nth(MAX_MESSAGE) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_its_three_spellings() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 07:28:00
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(150)));
        let mut date = HeaderMap::new();
        date.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:30 GMT"),
        );
        assert_eq!(retry_after(&date, now), Some(Duration::from_secs(30)));
        let later = now + Duration::from_secs(60);
        assert_eq!(retry_after(&date, later), Some(Duration::ZERO), "past: now");
        date.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&date, now), None);
    }

    #[test]
    fn error_messages_from_the_usual_shapes() {
        assert_eq!(error_message(br#"{"error":{"message":"bad"}}"#), "bad");
        assert_eq!(
            error_message(br#"{"error":"model not found"}"#),
            "model not found"
        );
        assert_eq!(error_message(br#"{"object":"error","message":"m"}"#), "m");
        assert_eq!(error_message(br#"{"code":3,"message":"dim"}"#), "dim");
        assert_eq!(error_message(br#"{"detail":"d"}"#), "d");
        assert_eq!(error_message(b" plain text "), "plain text");
        assert_eq!(error_message(b""), "(no message)");
        assert!(error_message("x".repeat(1000).as_bytes()).chars().count() <= MAX_MESSAGE + 1);
    }

    #[test]
    fn backoff_doubles_with_jitter_in_the_upper_half() {
        let base = Duration::from_millis(100);
        for attempt in 1..=4 {
            let full = base * (1 << (attempt - 1));
            let d = backoff(base, attempt);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
        assert_eq!(backoff(Duration::ZERO, 3), Duration::ZERO);
    }
}
