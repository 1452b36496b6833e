//! [`OpenAiCompatible`]: the [`ChatModel`] and [`Embedder`] ports over any API that speaks
//! OpenAI's wire format — OpenAI itself, Cerebras, and the local servers (Ollama, vLLM,
//! llama.cpp, LM Studio) that imitate it.
//!
//! How the ports map onto the wire:
//! - `complete` is `POST {base}/chat/completions`; `stream` is the same with
//!   `"stream": true`, read as server-sent events (`data:` lines, ending with `[DONE]`).
//!   Events may be split across network chunks or share one; the parser buffers bytes,
//!   not text, so a character split between chunks survives.
//! - `embed` is `POST {base}/embeddings`; the answer is put back in input order by its
//!   `index` field, and every vector must have the configured dimension.
//! - **Routing:** a model named `cerebras/<name>` goes to the Cerebras base URL with the
//!   Cerebras key and is sent as `<name>`; every other model goes to `base_url`, which
//!   may point at a local server.
//! - **Keys:** the request's own key (BYOK) wins for that call only; otherwise the
//!   server's key for the endpoint. OpenAI's and Cerebras's hosted APIs need a key, so
//!   without one the call is [`LlmError::NotConfigured`] before any request; any other
//!   base URL may be keyless, and then no `Authorization` header is sent. Keys never
//!   appear in errors, logs or `Debug` output.
//! - **Output limit:** `max_tokens` goes on the wire as `max_tokens`, the name every
//!   OpenAI-compatible server reads (llama.cpp, vLLM, Ollama, LM Studio, Cerebras; a
//!   server that does not know a field ignores it, so the newer name would silently mean
//!   "no limit" on many of them — llama.cpp only learned it in 2026). OpenAI's own API
//!   (`api.openai.com`) gets `max_completion_tokens` instead: it deprecated
//!   `max_tokens`, and its reasoning models refuse it.
//! - **Retries** (through [`crate::http`], which also scrubs keys and reads error bodies):
//!   only what can change on retry: 429, 408, 502, 503, 504, connection errors and
//!   timeouts, with exponential backoff and jitter (a `Retry-After`/`retry-after-ms`
//!   header is honoured, capped by [`OpenAiConfig::max_retry_delay`]); a completion is
//!   safe to send again. Everything else is answered at once ([`classify`]): a prompt too long for the model's context window
//!   — whatever the status: OpenAI says 400 `context_length_exceeded`, vLLM 400
//!   "maximum context length", llama.cpp 500 `exceed_context_size_error` — is
//!   [`LlmError::ContextLengthExceeded`]; 401/403 [`LlmError::Unauthorized`]; other 4xx
//!   (invalid request, unknown model) [`LlmError::Rejected`] with the provider's
//!   message; a 500 [`LlmError::Unavailable`] (a server failing on *this* request,
//!   which local servers use for request errors too: retrying it three times cost 122 s
//!   against llama.cpp). A stream is retried only until its answer starts; a failure
//!   after that ends the stream with an error (classified the same way).
//! - **Timeouts:** a whole non-streamed exchange must finish within
//!   [`OpenAiConfig::timeout`]; a stream may last longer but fails if the provider is
//!   silent for that long.
//!
//! Past the ~600-line rule by its unit tests (the last ~100 lines); the wire types
//! (`wire.rs`) and the stream parser (`stream.rs`) are already their own modules.

use std::time::Duration;

use adiuva_core::Secret;
use adiuva_core::ports::llm::{
    ChatModel, Completion, CompletionRequest, Embedder, LlmError, StreamEvent,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::AdapterError;
use crate::http::{HttpClient, HttpConfig, HttpError, RetrySchedule};

mod stream;
mod wire;

use stream::StreamState;
use wire::{WireEmbeddings, chat_body, parse_completion};

/// OpenAI's API, the default `base_url`.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// Cerebras's OpenAI-compatible API, the default `cerebras_base_url`.
pub const CEREBRAS_BASE_URL: &str = "https://api.cerebras.ai/v1";
/// Models named with this prefix go to Cerebras (without the prefix).
pub const CEREBRAS_PREFIX: &str = "cerebras/";
/// The default embedding model.
pub const DEFAULT_EMBEDDING_MODEL: &str = "text-embedding-3-small";
/// The dimension of [`DEFAULT_EMBEDDING_MODEL`]'s vectors.
pub const DEFAULT_EMBEDDING_DIMENSION: usize = 1536;

/// Hosts of hosted APIs that refuse keyless calls; asking them without a key would only
/// earn a 401, so such calls are refused up front with a sentence saying which key is
/// missing.
const KEYED_HOSTS: &[(&str, &str)] = &[
    ("api.openai.com", "an OpenAI API key"),
    ("api.cerebras.ai", "a Cerebras API key"),
];
/// Texts per embeddings request (OpenAI allows 2,048 but also limits tokens per request).
const EMBED_BATCH: usize = 256;

/// How to reach the model providers. `Default` is OpenAI's API with no keys.
#[derive(Clone, Debug)]
pub struct OpenAiConfig {
    /// Where every model not prefixed `cerebras/` goes (`OPENAI_BASE_URL`): OpenAI's API
    /// or a local OpenAI-compatible server (Ollama `http://localhost:11434/v1`, vLLM,
    /// llama.cpp, LM Studio).
    pub base_url: String,
    /// The server's key for `base_url` (optional for local servers).
    pub api_key: Option<Secret<String>>,
    /// Where `cerebras/…` models go.
    pub cerebras_base_url: String,
    /// The server's Cerebras key.
    pub cerebras_api_key: Option<Secret<String>>,
    /// The model [`Embedder::embed`] uses (routed like chat models).
    pub embedding_model: String,
    /// The length of its vectors; an answer of another length is an error.
    pub embedding_dimension: usize,
    /// Deadline of one non-streamed attempt; for a stream, the longest silence.
    pub timeout: Duration,
    /// Deadline for establishing a connection.
    pub connect_timeout: Duration,
    /// Retries after the first attempt on 429, 5xx, connection errors and timeouts.
    pub max_retries: u32,
    /// Wait before the first retry; doubled before each further one.
    pub retry_base_delay: Duration,
    /// Cap on any one wait between attempts, including a provider's `Retry-After`.
    pub max_retry_delay: Duration,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        Self {
            base_url: OPENAI_BASE_URL.into(),
            api_key: None,
            cerebras_base_url: CEREBRAS_BASE_URL.into(),
            cerebras_api_key: None,
            embedding_model: DEFAULT_EMBEDDING_MODEL.into(),
            embedding_dimension: DEFAULT_EMBEDDING_DIMENSION,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            max_retries: 2,
            retry_base_delay: Duration::from_millis(200),
            max_retry_delay: Duration::from_secs(20),
        }
    }
}

/// A [`ChatModel`] and [`Embedder`] over OpenAI-compatible APIs (see the module docs).
#[derive(Clone, Debug)]
pub struct OpenAiCompatible {
    http: HttpClient,
    cfg: OpenAiConfig,
}

/// Where one call goes and with which key.
struct Route<'a> {
    /// Base URL without a trailing slash.
    base: &'a str,
    /// The model name as sent (prefix removed).
    model: &'a str,
    key: Option<&'a str>,
    /// Whether `key` is the request's own (BYOK) key.
    byok: bool,
}

/// A key as it is sent: trimmed (a key read from an environment variable or file often
/// ends in a newline), and a blank key counts as none. Sending and scrubbing both go
/// through this, so what is scrubbed from a provider's echo is exactly what was sent.
fn present(key: Option<&str>) -> Option<&str> {
    key.map(str::trim).filter(|k| !k.is_empty())
}

/// Which key a hosted API at `base` needs, if it needs one.
fn required_key(base: &str) -> Option<&'static str> {
    let host = reqwest::Url::parse(base)
        .ok()?
        .host_str()?
        .to_ascii_lowercase();
    KEYED_HOSTS
        .iter()
        .find(|(h, _)| *h == host)
        .map(|(_, what)| *what)
}

fn check_base_url(name: &str, url: &str) -> Result<(), AdapterError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(()),
        _ => Err(AdapterError::Unsupported(format!(
            "the {name} {url:?} is not an http(s) URL; give one such as {OPENAI_BASE_URL} or \
             http://localhost:11434/v1"
        ))),
    }
}

impl OpenAiCompatible {
    /// An adapter for `cfg`. Fails only if a base URL is not an http(s) URL or the HTTP
    /// client cannot be built; keys are checked per call, since BYOK may supply them.
    pub fn new(cfg: OpenAiConfig) -> Result<Self, AdapterError> {
        check_base_url("model base URL", &cfg.base_url)?;
        check_base_url("Cerebras base URL", &cfg.cerebras_base_url)?;
        let http = HttpClient::new(
            HttpConfig {
                connect_timeout: cfg.connect_timeout,
                timeout: cfg.timeout,
                retry: RetrySchedule {
                    max_retries: cfg.max_retries,
                    base_delay: cfg.retry_base_delay,
                    max_delay: cfg.max_retry_delay,
                },
            },
            HeaderMap::new(),
            [&cfg.api_key, &cfg.cerebras_api_key]
                .into_iter()
                .flatten()
                .cloned(),
        )?;
        Ok(Self { http, cfg })
    }

    /// Whether a call for `model` could be made: `byok` says whether the request carries
    /// its own key. `false` means the call would fail with [`LlmError::NotConfigured`]
    /// (the server answers 503 `llm_unavailable` early).
    pub fn is_configured_for(&self, model: &str, byok: bool) -> bool {
        self.route(model, byok.then_some("byok")).is_ok()
    }

    /// The endpoint, wire model name and key for `model`.
    fn route<'a>(&'a self, model: &'a str, byok: Option<&'a str>) -> Result<Route<'a>, LlmError> {
        let (base, wire_model, server_key) = match model.strip_prefix(CEREBRAS_PREFIX) {
            Some(bare) => (
                self.cfg.cerebras_base_url.as_str(),
                bare,
                self.cfg
                    .cerebras_api_key
                    .as_ref()
                    .map(|k| k.expose().as_str()),
            ),
            None => (
                self.cfg.base_url.as_str(),
                model,
                self.cfg.api_key.as_ref().map(|k| k.expose().as_str()),
            ),
        };
        if wire_model.trim().is_empty() {
            return Err(LlmError::NotConfigured(format!(
                "the model name {model:?} names no model"
            )));
        }
        let byok = present(byok);
        let key = byok.or(present(server_key));
        if key.is_none()
            && let Some(what) = required_key(base)
        {
            return Err(LlmError::NotConfigured(format!(
                "the model {model:?} needs {what}, and neither the server nor the request \
                 has one"
            )));
        }
        Ok(Route {
            base: base.trim_end_matches('/'),
            model: wire_model,
            key,
            byok: byok.is_some(),
        })
    }

    /// POSTs `body` to `{base}/{path}` with retries (see [`crate::http`]). A
    /// non-streamed call returns the whole 2xx body; a streamed one the response whose
    /// body is still to be read.
    async fn post(
        &self,
        route: &Route<'_>,
        path: &str,
        body: Bytes,
        streaming: bool,
    ) -> Result<Answer, LlmError> {
        let mut call = self
            .http
            .call(Method::POST, format!("{}/{path}", route.base))
            .json(body)
            // A completion or an embedding changes nothing at the provider.
            .replay_safe()
            .retry_when(|status, body| classify(status, body) == Class::Retry);
        if let Some(key) = route.key {
            let auth = crate::http::bearer(key).ok_or_else(|| {
                if route.byok {
                    // The user's key cannot be right if it cannot even be sent.
                    LlmError::Unauthorized
                } else {
                    LlmError::NotConfigured(
                        "the server's API key holds characters an HTTP header cannot carry".into(),
                    )
                }
            })?;
            call = call.header(AUTHORIZATION, auth).secret(key);
        }
        let answer = if streaming {
            let accept = HeaderValue::from_static("text/event-stream");
            call.header(ACCEPT, accept)
                .stream()
                .await
                .map(Answer::Stream)
        } else {
            call.send().await.map(Answer::Body)
        };
        answer.map_err(llm_error)
    }
}

/// What a successful exchange produced.
enum Answer {
    Body(Bytes),
    Stream(reqwest::Response),
}

/// A failed exchange as the port's error (see the module docs).
fn llm_error(e: HttpError) -> LlmError {
    let HttpError::Status {
        status,
        message,
        body,
        attempts,
        ..
    } = &e
    else {
        return match e {
            HttpError::Invalid(m) => LlmError::NotConfigured(m),
            other => LlmError::Unavailable(other.to_string()),
        };
    };
    let quoted = || format!("HTTP {status}: {message}");
    match classify(*status, body.as_bytes()) {
        Class::Retry if *status == StatusCode::TOO_MANY_REQUESTS => {
            tracing::debug!(%message, attempts, "the model provider kept rate limiting");
            LlmError::RateLimited
        }
        Class::Retry => LlmError::Unavailable(e.to_string()),
        Class::ContextLength => LlmError::ContextLengthExceeded(quoted()),
        Class::Unauthorized => LlmError::Unauthorized,
        Class::Rejected => LlmError::Rejected(quoted()),
        Class::Failed => LlmError::Unavailable(quoted()),
    }
}

/// What to do about a provider's error answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Worth another attempt: rate limiting, a gateway or an overloaded server.
    Retry,
    /// The prompt is longer than the model's context window.
    ContextLength,
    /// The key was refused.
    Unauthorized,
    /// The request itself is wrong (bad parameter, unknown model).
    Rejected,
    /// The provider failed on this request; retrying the same request will not help.
    Failed,
}

/// Classifies an error answer by its status and body (see the module docs). The body is
/// looked at first: llama.cpp reports a context overflow as a 500, which must not be
/// retried like a transient 5xx.
fn classify(status: StatusCode, body: &[u8]) -> Class {
    if is_context_length_error(body) {
        return Class::ContextLength;
    }
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Class::Unauthorized,
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::REQUEST_TIMEOUT
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => Class::Retry,
        s if s.is_client_error() => Class::Rejected,
        _ => Class::Failed,
    }
}

/// Whether an error body says the prompt does not fit the model's context window, in
/// any of the usual dialects: OpenAI's `code: "context_length_exceeded"`, llama.cpp's
/// `type: "exceed_context_size_error"` or "Context size has been exceeded", vLLM's and
/// Ollama's "maximum context length".
fn is_context_length_error(body: &[u8]) -> bool {
    const MARKERS: &[&str] = &[
        "context_length_exceeded",
        "exceed_context_size",
        "context size has been exceeded",
        "exceeds the available context size",
        "maximum context length",
        "context length exceeded",
        "exceeds the context window",
    ];
    let mut texts: Vec<String> = Vec::new();
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => {
            let error = v.get("error").unwrap_or(&v);
            for field in ["code", "type", "message"] {
                if let Some(s) = error.get(field).and_then(Value::as_str) {
                    texts.push(s.to_ascii_lowercase());
                }
            }
            if let Some(s) = error
                .as_str()
                .or_else(|| v.get("message").and_then(Value::as_str))
            {
                texts.push(s.to_ascii_lowercase());
            }
        }
        Err(_) => texts.push(String::from_utf8_lossy(body).to_ascii_lowercase()),
    }
    texts.iter().any(|t| MARKERS.iter().any(|m| t.contains(m)))
}

// ---------------------------------------------------------------------------------------
// The ports

#[async_trait]
impl ChatModel for OpenAiCompatible {
    #[tracing::instrument(
        skip_all,
        fields(model = %req.model, tools = req.tools.len(), byok = req.api_key.is_some()),
        err(level = "debug")
    )]
    async fn complete(&self, req: CompletionRequest) -> Result<Completion, LlmError> {
        let route = self.route(&req.model, req.api_key.as_deref())?;
        let body = chat_body(&req, &route, false)?;
        match self.post(&route, "chat/completions", body, false).await? {
            Answer::Body(b) => parse_completion(&b),
            Answer::Stream(_) => Err(LlmError::Protocol("unexpected stream".into())),
        }
    }

    #[tracing::instrument(
        skip_all,
        fields(model = %req.model, tools = req.tools.len(), byok = req.api_key.is_some()),
        err(level = "debug")
    )]
    async fn stream(
        &self,
        req: CompletionRequest,
    ) -> Result<BoxStream<'static, Result<StreamEvent, LlmError>>, LlmError> {
        let route = self.route(&req.model, req.api_key.as_deref())?;
        let body = chat_body(&req, &route, true)?;
        let resp = match self.post(&route, "chat/completions", body, true).await? {
            Answer::Stream(resp) => resp,
            Answer::Body(_) => return Err(LlmError::Protocol("unexpected body".into())),
        };
        let state = StreamState::new(resp.bytes_stream().boxed(), route.base.to_owned());
        Ok(futures::stream::unfold(state, StreamState::next).boxed())
    }
}

#[async_trait]
impl Embedder for OpenAiCompatible {
    fn dimension(&self) -> usize {
        self.cfg.embedding_dimension
    }

    #[tracing::instrument(
        skip_all,
        fields(model = %self.cfg.embedding_model, texts = texts.len(), byok = api_key.is_some()),
        err(level = "debug")
    )]
    async fn embed(
        &self,
        texts: &[String],
        api_key: Option<&str>,
    ) -> Result<Vec<Vec<f32>>, LlmError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let route = self.route(&self.cfg.embedding_model, api_key)?;
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(EMBED_BATCH) {
            let body = serde_json::to_vec(&serde_json::json!({
                "model": route.model,
                "input": batch,
            }))
            .map(Bytes::from)
            .map_err(|e| LlmError::Protocol(format!("cannot encode the request: {e}")))?;
            let bytes = match self.post(&route, "embeddings", body, false).await? {
                Answer::Body(b) => b,
                Answer::Stream(_) => return Err(LlmError::Protocol("unexpected stream".into())),
            };
            out.extend(self.parse_embeddings(&bytes, batch.len())?);
        }
        Ok(out)
    }
}

impl OpenAiCompatible {
    /// The vectors of one batch of `n` texts, in input order.
    fn parse_embeddings(&self, body: &[u8], n: usize) -> Result<Vec<Vec<f32>>, LlmError> {
        let wire: WireEmbeddings = serde_json::from_slice(body)
            .map_err(|e| LlmError::Protocol(format!("the embeddings could not be read: {e}")))?;
        let mut slots: Vec<Option<Vec<f32>>> = vec![None; n];
        for item in wire.data {
            let slot = slots.get_mut(item.index).ok_or_else(|| {
                LlmError::Protocol(format!(
                    "the embeddings answer has index {} for {n} inputs",
                    item.index
                ))
            })?;
            if slot.is_some() {
                return Err(LlmError::Protocol(format!(
                    "the embeddings answer repeats index {}",
                    item.index
                )));
            }
            if item.embedding.len() != self.cfg.embedding_dimension {
                return Err(LlmError::Protocol(format!(
                    "the embedding model {:?} returned vectors of {} dimensions, but {} are \
                     configured; set the embedding dimension to match the model",
                    self.cfg.embedding_model,
                    item.embedding.len(),
                    self.cfg.embedding_dimension
                )));
            }
            *slot = Some(item.embedding);
        }
        slots
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                v.ok_or_else(|| {
                    LlmError::Protocol(format!("the embeddings answer lacks input {i}"))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_errors_are_classified_by_body_then_status() {
        let llama_cpp = br#"{"error":{"code":500,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error","n_prompt_tokens":5000,"n_ctx":4096}}"#;
        let llama_cpp_old = br#"{"error":{"code":500,"message":"Context size has been exceeded.","type":"server_error"}}"#;
        let openai = br#"{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
        let vllm = br#"{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.","type":"BadRequestError","code":400}"#;
        let s = |n| StatusCode::from_u16(n).expect("status");
        assert_eq!(classify(s(500), llama_cpp), Class::ContextLength);
        assert_eq!(classify(s(500), llama_cpp_old), Class::ContextLength);
        assert_eq!(classify(s(400), openai), Class::ContextLength);
        assert_eq!(classify(s(400), vllm), Class::ContextLength);
        let plain = br#"{"error":{"message":"boom","type":"server_error"}}"#;
        for retry in [408, 429, 502, 503, 504] {
            assert_eq!(classify(s(retry), plain), Class::Retry, "{retry}");
        }
        assert_eq!(classify(s(500), plain), Class::Failed);
        assert_eq!(classify(s(400), plain), Class::Rejected);
        assert_eq!(classify(s(404), b"model not found"), Class::Rejected);
        assert_eq!(classify(s(401), plain), Class::Unauthorized);
        assert_eq!(classify(s(403), plain), Class::Unauthorized);
    }

    #[test]
    fn the_output_limit_goes_out_under_the_name_the_server_reads() {
        let mut req = CompletionRequest {
            model: "m".into(),
            messages: Vec::new(),
            tools: Vec::new(),
            temperature: None,
            max_tokens: Some(77),
            api_key: None,
        };
        let body = |base: &str, req: &CompletionRequest| -> Value {
            let route = Route {
                base,
                model: "m",
                key: None,
                byok: false,
            };
            serde_json::from_slice(&chat_body(req, &route, false).expect("body")).expect("json")
        };
        let local = body("http://127.0.0.1:8080/v1", &req);
        assert_eq!(local["max_tokens"], 77);
        assert!(local.get("max_completion_tokens").is_none());
        let openai = body(OPENAI_BASE_URL, &req);
        assert_eq!(openai["max_completion_tokens"], 77);
        assert!(openai.get("max_tokens").is_none());
        req.max_tokens = None;
        let unbounded = body("http://127.0.0.1:8080/v1", &req);
        assert!(unbounded.get("max_tokens").is_none());
    }

    #[test]
    fn routing_and_keys() {
        let adapter = |api_key: Option<&str>, base: &str| {
            OpenAiCompatible::new(OpenAiConfig {
                base_url: base.into(),
                api_key: api_key.map(|k| Secret::new(k.to_owned())),
                ..OpenAiConfig::default()
            })
            .expect("adapter")
        };
        let hosted = adapter(None, OPENAI_BASE_URL);
        assert!(!hosted.is_configured_for("gpt-4o-mini", false));
        assert!(hosted.is_configured_for("gpt-4o-mini", true));
        assert!(!hosted.is_configured_for("cerebras/llama3.1-8b", false));
        assert!(adapter(Some("sk"), OPENAI_BASE_URL).is_configured_for("gpt-4o", false));
        assert!(!adapter(Some("  "), OPENAI_BASE_URL).is_configured_for("gpt-4o", false));
        let local = adapter(None, "http://localhost:11434/v1/");
        assert!(local.is_configured_for("llama3.2", false));
        let route = local.route("llama3.2", None).expect("route");
        assert_eq!(route.base, "http://localhost:11434/v1");
        assert!(route.key.is_none());
        let route = hosted
            .route("cerebras/llama3.1-8b", Some("byok"))
            .expect("route");
        assert_eq!(
            (route.base, route.model, route.key, route.byok),
            (CEREBRAS_BASE_URL, "llama3.1-8b", Some("byok"), true)
        );
        match hosted.route("cerebras/x", None) {
            Err(LlmError::NotConfigured(m)) => assert!(m.contains("Cerebras API key"), "{m}"),
            _ => panic!("expected NotConfigured"),
        }
        assert!(matches!(
            hosted.route("cerebras/", Some("k")),
            Err(LlmError::NotConfigured(_))
        ));
        assert!(matches!(
            OpenAiCompatible::new(OpenAiConfig {
                base_url: "localhost:11434".into(),
                ..OpenAiConfig::default()
            }),
            Err(AdapterError::Unsupported(_))
        ));
    }
}
