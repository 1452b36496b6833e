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

use std::collections::VecDeque;
use std::time::Duration;

use adiuva_core::Secret;
use adiuva_core::ports::llm::{
    ChatModel, Completion, CompletionRequest, Embedder, LlmError, Message, Role, StreamEvent,
    ToolCall, ToolDefinition,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::AdapterError;
use crate::http::{HttpClient, HttpConfig, HttpError, RetrySchedule, message_of, shorten};

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
/// Longest SSE line we buffer; a provider that never sends a newline is not speaking SSE.
const MAX_SSE_LINE: usize = 16 * 1024 * 1024;

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
// Wire format: requests

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    /// The output limit, for every OpenAI-compatible server (see the module docs).
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    /// The output limit, for OpenAI's own API.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: Role,
    /// `null` only for an assistant message that just calls tools, as OpenAI writes it.
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

#[derive(Serialize)]
struct WireToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunctionCall<'a>,
}

#[derive(Serialize)]
struct WireFunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunctionDef<'a>,
}

#[derive(Serialize)]
struct WireFunctionDef<'a> {
    name: &'a str,
    description: &'a str,
    parameters: &'a Value,
}

fn wire_message(m: &Message) -> WireMessage<'_> {
    let content = if m.role == Role::Assistant && m.content.is_empty() && !m.tool_calls.is_empty() {
        None
    } else {
        Some(m.content.as_str())
    };
    WireMessage {
        role: m.role,
        content,
        tool_calls: m
            .tool_calls
            .iter()
            .map(|c| WireToolCall {
                id: &c.id,
                kind: "function",
                function: WireFunctionCall {
                    name: &c.name,
                    arguments: &c.arguments,
                },
            })
            .collect(),
        tool_call_id: m.tool_call_id.as_deref(),
    }
}

fn wire_tool(t: &ToolDefinition) -> WireTool<'_> {
    WireTool {
        kind: "function",
        function: WireFunctionDef {
            name: &t.name,
            description: &t.description,
            parameters: &t.parameters,
        },
    }
}

/// Whether `base` is OpenAI's own API, which wants `max_completion_tokens`.
fn is_openai_api(base: &str) -> bool {
    reqwest::Url::parse(base)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| h.eq_ignore_ascii_case("api.openai.com"))
        })
        .unwrap_or(false)
}

fn chat_body(req: &CompletionRequest, route: &Route<'_>, stream: bool) -> Result<Bytes, LlmError> {
    let openai = is_openai_api(route.base);
    let wire = WireRequest {
        model: route.model,
        messages: req.messages.iter().map(wire_message).collect(),
        tools: req.tools.iter().map(wire_tool).collect(),
        temperature: req.temperature,
        max_tokens: req.max_tokens.filter(|_| !openai),
        max_completion_tokens: req.max_tokens.filter(|_| openai),
        stream,
    };
    serde_json::to_vec(&wire)
        .map(Bytes::from)
        .map_err(|e| LlmError::Protocol(format!("cannot encode the request: {e}")))
}

// ---------------------------------------------------------------------------------------
// Wire format: answers

#[derive(Deserialize)]
struct WireCompletion {
    #[serde(default)]
    choices: Vec<WireChoice>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireAnswer,
}

#[derive(Deserialize)]
struct WireAnswer {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireAnswerCall>>,
}

#[derive(Deserialize)]
struct WireAnswerCall {
    #[serde(default)]
    id: Option<String>,
    function: WireAnswerFunction,
}

#[derive(Deserialize)]
struct WireAnswerFunction {
    name: String,
    /// A JSON string per OpenAI; some local servers send the object itself.
    #[serde(default)]
    arguments: Value,
}

fn arguments_text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn parse_completion(body: &[u8]) -> Result<Completion, LlmError> {
    let wire: WireCompletion = serde_json::from_slice(body)
        .map_err(|e| LlmError::Protocol(format!("the chat completion could not be read: {e}")))?;
    let choice = wire
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| LlmError::Protocol("the chat completion has no choices".into()))?;
    let tool_calls = choice
        .message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, c)| ToolCall {
            // Some local servers omit ids; the tool result still needs one to answer.
            id: c
                .id
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| format!("call_{i}")),
            name: c.function.name,
            arguments: arguments_text(c.function.arguments),
        })
        .collect();
    Ok(Completion {
        content: choice.message.content.unwrap_or_default(),
        tool_calls,
    })
}

#[derive(Deserialize)]
struct WireChunk {
    #[serde(default)]
    choices: Vec<WireChunkChoice>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct WireChunkChoice {
    #[serde(default)]
    delta: Option<WireDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireDeltaCall>>,
}

#[derive(Deserialize)]
struct WireDeltaCall {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireDeltaFunction>,
}

#[derive(Deserialize)]
struct WireDeltaFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct WireEmbeddings {
    data: Vec<WireEmbedding>,
}

#[derive(Deserialize)]
struct WireEmbedding {
    index: usize,
    embedding: Vec<f32>,
}

// ---------------------------------------------------------------------------------------
// Server-sent events

/// Splits an SSE byte stream into the `data` payloads of its events. Bytes are buffered
/// until a whole line is there, so lines (and UTF-8 characters) split across chunks are
/// put back together; `\n` and `\r\n` line ends are accepted.
#[derive(Default)]
pub(crate) struct SseParser {
    line: Vec<u8>,
    data: String,
    has_data: bool,
}

impl SseParser {
    /// Feeds one network chunk; appends the payloads of events it completes to `out`.
    pub(crate) fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<String>) -> Result<(), LlmError> {
        while let Some(pos) = chunk.iter().position(|b| *b == b'\n') {
            self.line.extend_from_slice(&chunk[..pos]);
            chunk = &chunk[pos + 1..];
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, out);
        }
        self.line.extend_from_slice(chunk);
        if self.line.len() > MAX_SSE_LINE {
            return Err(LlmError::Protocol(
                "the event stream sent an over-long line".into(),
            ));
        }
        Ok(())
    }

    /// The end of the stream: an event not followed by a blank line still counts.
    pub(crate) fn finish(&mut self, out: &mut Vec<String>) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, out);
        }
        if self.has_data {
            self.has_data = false;
            out.push(std::mem::take(&mut self.data));
        }
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<String>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if self.has_data {
                self.has_data = false;
                out.push(std::mem::take(&mut self.data));
            }
            return;
        }
        if line.starts_with(b":") {
            // A comment (some providers send keep-alives like `: PROCESSING`).
            return;
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &[][..]),
        };
        if field == b"data" {
            let value = value.strip_prefix(b" ").unwrap_or(value);
            if self.has_data {
                self.data.push('\n');
            }
            self.data.push_str(&String::from_utf8_lossy(value));
            self.has_data = true;
        }
    }
}

/// Turns the payloads of a chat-completion stream into [`StreamEvent`]s.
#[derive(Default)]
struct ChunkDecoder {
    /// `[DONE]` arrived, or an error ended the stream.
    done: bool,
    /// A `finish_reason` arrived: a stream closed after it without `[DONE]` is complete
    /// (some local servers omit `[DONE]`).
    finished: bool,
}

impl ChunkDecoder {
    fn payload(&mut self, payload: &str, out: &mut VecDeque<Result<StreamEvent, LlmError>>) {
        if self.done {
            return;
        }
        if payload.trim() == "[DONE]" {
            self.done = true;
            return;
        }
        let chunk: WireChunk = match serde_json::from_str(payload) {
            Ok(c) => c,
            Err(e) => {
                self.done = true;
                out.push_back(Err(LlmError::Protocol(format!(
                    "a stream event could not be read: {e}"
                ))));
                return;
            }
        };
        if let Some(error) = chunk.error {
            self.done = true;
            let wrapped = serde_json::json!({ "error": error });
            let message = message_of(&wrapped).unwrap_or_else(|| "(no message)".into());
            let message = format!(
                "the provider ended the stream with an error: {}",
                shorten(message)
            );
            out.push_back(Err(
                if is_context_length_error(wrapped.to_string().as_bytes()) {
                    LlmError::ContextLengthExceeded(message)
                } else {
                    LlmError::Unavailable(message)
                },
            ));
            return;
        }
        let Some(choice) = chunk.choices.into_iter().next() else {
            // Usage-only or keep-alive chunks carry no choice.
            return;
        };
        if choice.finish_reason.is_some() {
            self.finished = true;
        }
        let Some(delta) = choice.delta else { return };
        if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
            out.push_back(Ok(StreamEvent::Text(text)));
        }
        for (position, call) in delta.tool_calls.unwrap_or_default().into_iter().enumerate() {
            let (name, arguments) = match call.function {
                Some(f) => (f.name, f.arguments),
                None => (None, None),
            };
            out.push_back(Ok(StreamEvent::ToolCallDelta {
                index: call.index.unwrap_or(position),
                id: call.id.filter(|s| !s.is_empty()),
                name: name.filter(|s| !s.is_empty()),
                arguments: arguments.unwrap_or_default(),
            }));
        }
    }
}

struct StreamState {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    parser: SseParser,
    decoder: ChunkDecoder,
    pending: VecDeque<Result<StreamEvent, LlmError>>,
    /// Nothing more will be read.
    ended: bool,
    /// For error messages (no key in it).
    base: String,
}

impl StreamState {
    fn absorb(&mut self, payloads: Vec<String>) {
        for p in payloads {
            self.decoder.payload(&p, &mut self.pending);
        }
        if self.decoder.done {
            self.ended = true;
        }
    }

    async fn next(mut self) -> Option<(Result<StreamEvent, LlmError>, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((event, self));
            }
            if self.ended {
                return None;
            }
            let mut payloads = Vec::new();
            match self.body.next().await {
                Some(Ok(bytes)) => {
                    if let Err(e) = self.parser.feed(&bytes, &mut payloads) {
                        self.pending.push_back(Err(e));
                        self.ended = true;
                        continue;
                    }
                    self.absorb(payloads);
                }
                Some(Err(e)) => {
                    let why = if e.is_timeout() {
                        "the provider went silent".to_owned()
                    } else {
                        // Body errors carry no request headers, hence no key.
                        e.to_string()
                    };
                    self.pending.push_back(Err(LlmError::Unavailable(format!(
                        "the stream from {} broke off: {why}",
                        self.base
                    ))));
                    self.ended = true;
                }
                None => {
                    self.parser.finish(&mut payloads);
                    self.absorb(payloads);
                    if !self.decoder.done && !self.decoder.finished {
                        self.pending.push_back(Err(LlmError::Unavailable(format!(
                            "the stream from {} ended before the reply was complete",
                            self.base
                        ))));
                    }
                    self.ended = true;
                }
            }
        }
    }
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
        let state = StreamState {
            body: resp.bytes_stream().boxed(),
            parser: SseParser::default(),
            decoder: ChunkDecoder::default(),
            pending: VecDeque::new(),
            ended: false,
            base: route.base.to_owned(),
        };
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

    const BODY: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"héllo \"}}]}\n\n\
        : keep-alive\n\n\
        data: {\"choices\":[{\"delta\":{\"content\":\"wörld\"}}]}\r\n\r\n\
        data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n\
        data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":1}\"}}]}}]}\n\n\
        data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n\
        data: [DONE]\n\n";

    fn payloads(pieces: &[&[u8]]) -> Vec<String> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for p in pieces {
            parser.feed(p, &mut out).expect("feed");
        }
        parser.finish(&mut out);
        out
    }

    #[test]
    fn sse_payloads_are_the_same_however_the_bytes_are_split() {
        let whole = payloads(&[BODY.as_bytes()]);
        assert_eq!(whole.len(), 6);
        assert_eq!(whole[5], "[DONE]");
        assert!(whole[0].contains("héllo"));
        let bytes = BODY.as_bytes();
        // Every single cut (including inside the two-byte characters and `\r\n`).
        for cut in 0..=bytes.len() {
            assert_eq!(
                payloads(&[&bytes[..cut], &bytes[cut..]]),
                whole,
                "cut at {cut}"
            );
        }
        // Byte by byte.
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(payloads(&singles), whole);
    }

    #[test]
    fn multi_line_data_and_a_missing_final_blank_line() {
        let out = payloads(&[b"event: x\ndata: a\ndata: b\n\ndata:c"]);
        assert_eq!(out, vec!["a\nb".to_owned(), "c".to_owned()]);
    }

    #[test]
    fn chunks_decode_to_events_and_stop_at_done() {
        let mut decoder = ChunkDecoder::default();
        let mut events = VecDeque::new();
        for p in payloads(&[BODY.as_bytes()]) {
            decoder.payload(&p, &mut events);
        }
        decoder.payload(
            "{\"choices\":[{\"delta\":{\"content\":\"late\"}}]}",
            &mut events,
        );
        let events: Vec<StreamEvent> = events.into_iter().map(|e| e.expect("event")).collect();
        assert_eq!(
            events,
            vec![
                StreamEvent::Text("héllo ".into()),
                StreamEvent::Text("wörld".into()),
                StreamEvent::ToolCallDelta {
                    index: 0,
                    id: Some("c1".into()),
                    name: Some("f".into()),
                    arguments: String::new()
                },
                StreamEvent::ToolCallDelta {
                    index: 0,
                    id: None,
                    name: None,
                    arguments: "{\"a\":1}".into()
                },
            ]
        );
        assert!(decoder.done && decoder.finished);
    }

    #[test]
    fn an_error_event_ends_the_stream() {
        let mut decoder = ChunkDecoder::default();
        let mut events = VecDeque::new();
        decoder.payload(
            "{\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}",
            &mut events,
        );
        assert!(decoder.done);
        match events.pop_front() {
            Some(Err(LlmError::Unavailable(m))) => assert!(m.contains("overloaded"), "{m}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    fn state_over(pieces: Vec<&'static str>) -> StreamState {
        StreamState {
            body: futures::stream::iter(pieces.into_iter().map(|p| Ok(Bytes::from(p)))).boxed(),
            parser: SseParser::default(),
            decoder: ChunkDecoder::default(),
            pending: VecDeque::new(),
            ended: false,
            base: "http://x/v1".into(),
        }
    }

    async fn drain(state: StreamState) -> Vec<Result<StreamEvent, LlmError>> {
        futures::stream::unfold(state, StreamState::next)
            .collect()
            .await
    }

    #[tokio::test]
    async fn a_stream_cut_off_before_done_ends_with_an_error() {
        let events = drain(state_over(vec![
            "data: {\"choices\":[{\"delta\":{\"content\":\"par",
            "tial\"}}]}\n\n",
        ]))
        .await;
        assert!(matches!(&events[0], Ok(StreamEvent::Text(t)) if t == "partial"));
        assert!(
            matches!(&events[1], Err(LlmError::Unavailable(_))),
            "{events:?}"
        );
        assert_eq!(events.len(), 2);
    }

    #[tokio::test]
    async fn a_stream_with_a_finish_reason_but_no_done_is_complete() {
        let events = drain(state_over(vec![
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"stop\"}]}",
        ]))
        .await;
        assert_eq!(events.len(), 1);
        assert!(matches!(&events[0], Ok(StreamEvent::Text(t)) if t == "hi"));
    }

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
    fn a_context_overflow_inside_a_stream_is_not_unavailable() {
        let mut decoder = ChunkDecoder::default();
        let mut events = VecDeque::new();
        decoder.payload(
            r#"{"error":{"code":500,"message":"Context size has been exceeded.","type":"exceed_context_size_error"}}"#,
            &mut events,
        );
        assert!(matches!(
            events.pop_front(),
            Some(Err(LlmError::ContextLengthExceeded(_)))
        ));
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
