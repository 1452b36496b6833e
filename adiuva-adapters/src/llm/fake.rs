//! [`FakeOpenAi`]: a scripted OpenAI-compatible server on one real socket, for tests.
//!
//! It speaks OpenAI's wire format rather than what [`super::OpenAiCompatible`] happens
//! to send: `POST /v1/chat/completions` checks the request the way OpenAI does (a model,
//! known roles, every `tool` message answering a call of an earlier assistant message,
//! tools as `{"type":"function","function":{"name",…}}`) and answers either with one
//! JSON completion or, for `"stream": true`, with server-sent events in OpenAI's chunk
//! format: text in several chunks, each tool call's id and name on its first delta only
//! and its arguments in several deltas, a final chunk with the `finish_reason`, then
//! `data: [DONE]`. The event bytes are re-cut into pieces of uneven size (one byte, part
//! of an event, several events) written with small pauses, so a client must reassemble
//! events. `POST /v1/embeddings` answers deterministic unit vectors derived from each text
//! (see [`FakeOpenAi::embedding`]), listed in **reverse** `index` order so a client must
//! sort them.
//!
//! What it answers comes from a queue of [`Reply`]s, then from an optional handler, and
//! every request (path, JSON body, `Authorization` header) is recorded. The fake keeps
//! keys in its records: it is a test tool, and tests assert which key was sent.
//!
//! Longer than the ~600-line rule on purpose: it is test support, one scripted server whose
//! request checks mirror OpenAI's wire rules; they read best as one list.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use poem::http::{Method, StatusCode};
use poem::{Body, Request, Response};
use serde_json::{Value, json};

use crate::fake_server::{LocalServer, lock};
use sha2::{Digest as _, Sha256};

/// The embedding dimension of [`FakeOpenAi::start`].
pub const DEFAULT_DIMENSION: usize = 16;

/// Sizes the SSE bytes are re-cut into, in turn: a single byte, part of an event, more
/// than one event.
const PIECE_SIZES: &[usize] = &[1, 23, 7, 300, 64];
/// Pause between SSE pieces, so they tend to arrive in separate reads.
const PIECE_PAUSE: Duration = Duration::from_millis(1);

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// An assistant message with this text.
    Text(String),
    /// An assistant message calling these tools: `(name, arguments JSON text)`.
    ToolCalls(Vec<(String, String)>),
    /// This status with this raw body (see [`Reply::error`] for OpenAI's error shape).
    Status(u16, String),
    /// The reply, after a pause (the request is recorded before it).
    Delay(Duration, Box<Reply>),
    /// The reply with one more response header (e.g. `Retry-After`).
    Header(String, String, Box<Reply>),
    /// Streamed: this text in pieces of `piece_chars` characters, one SSE event per
    /// piece written on its own, `pause` apart (a model producing tokens at its pace).
    /// Not streamed: like [`Reply::Text`].
    Paced {
        /// The whole text.
        text: String,
        /// Characters per piece.
        piece_chars: usize,
        /// Pause before each piece.
        pause: Duration,
    },
    /// A model that never stops: streamed, this text again and again, a chunk every
    /// [`ENDLESS_PAUSE`], never a `finish_reason`; not streamed, no answer at all (the
    /// connection stays open). For deadlines.
    Endless(String),
}

/// Pause between the chunks of a [`Reply::Endless`] stream.
pub const ENDLESS_PAUSE: Duration = Duration::from_millis(20);

impl Reply {
    /// [`Reply::Text`].
    pub fn text(s: &str) -> Self {
        Reply::Text(s.into())
    }

    /// [`Reply::ToolCalls`] from `(name, arguments)` pairs.
    pub fn tool_calls(calls: &[(&str, &str)]) -> Self {
        Reply::ToolCalls(
            calls
                .iter()
                .map(|(n, a)| ((*n).to_owned(), (*a).to_owned()))
                .collect(),
        )
    }

    /// `status` with OpenAI's error body `{"error":{"message","type","param","code"}}`.
    pub fn error(status: u16, message: &str) -> Self {
        let kind = match status {
            401 | 403 => "invalid_request_error",
            429 => "rate_limit_error",
            s if s >= 500 => "server_error",
            _ => "invalid_request_error",
        };
        Reply::Status(
            status,
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
                .to_string(),
        )
    }

    /// [`Reply::Paced`].
    pub fn paced(text: &str, piece_chars: usize, pause: Duration) -> Self {
        Reply::Paced {
            text: text.into(),
            piece_chars,
            pause,
        }
    }

    /// [`Reply::Endless`].
    pub fn endless(piece: &str) -> Self {
        Reply::Endless(piece.into())
    }

    /// llama.cpp's `llama-server` refusing a prompt longer than its context: HTTP 500
    /// with `type: "exceed_context_size_error"`.
    pub fn llama_cpp_context_exceeded(n_prompt_tokens: usize, n_ctx: usize) -> Self {
        Reply::Status(
            500,
            json!({"error": {
                "code": 500,
                "message": "the request exceeds the available context size, try increasing it",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": n_prompt_tokens,
                "n_ctx": n_ctx,
            }})
            .to_string(),
        )
    }

    /// OpenAI refusing a prompt longer than the model's context: HTTP 400 with
    /// `code: "context_length_exceeded"`.
    pub fn openai_context_length_exceeded(limit: usize, requested: usize) -> Self {
        Reply::Status(
            400,
            json!({"error": {
                "message": format!(
                    "This model's maximum context length is {limit} tokens. However, your \
                     messages resulted in {requested} tokens. Please reduce the length of the \
                     messages."
                ),
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }})
            .to_string(),
        )
    }

    /// The reply after a pause.
    pub fn delayed(self, pause: Duration) -> Self {
        Reply::Delay(pause, Box::new(self))
    }

    /// The reply with a `Retry-After: <seconds>` header.
    pub fn retry_after(self, seconds: u64) -> Self {
        Reply::Header("Retry-After".into(), seconds.to_string(), Box::new(self))
    }
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// The path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The JSON body (`Null` if it was not JSON).
    pub body: Value,
    /// The `Authorization` header, if any (`Bearer <key>`).
    pub authorization: Option<String>,
}

impl RecordedRequest {
    /// The key after `Bearer `, if the request carried one.
    pub fn bearer(&self) -> Option<&str> {
        self.authorization.as_deref()?.strip_prefix("Bearer ")
    }
}

type Handler = dyn Fn(&Value) -> Option<Reply> + Send + Sync;

/// A running fake OpenAI-compatible API. Stops when dropped.
pub struct FakeOpenAi {
    shared: Arc<Shared>,
    server: LocalServer,
}

struct Shared {
    dim: usize,
    queue: Mutex<VecDeque<Reply>>,
    handler: Mutex<Option<Arc<Handler>>>,
    requests: Mutex<Vec<RecordedRequest>>,
    counter: AtomicUsize,
}

impl FakeOpenAi {
    /// Starts a fake on 127.0.0.1 and a free port, with embeddings of
    /// [`DEFAULT_DIMENSION`].
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with_dimension(DEFAULT_DIMENSION).await
    }

    /// Starts a fake whose embeddings have `dim` dimensions.
    pub async fn start_with_dimension(dim: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            dim,
            queue: Mutex::default(),
            handler: Mutex::default(),
            requests: Mutex::default(),
            counter: AtomicUsize::new(0),
        });
        let state = shared.clone();
        let server = LocalServer::start("OpenAI", move |_| {
            poem::endpoint::make(move |req: Request| {
                let state = state.clone();
                async move { state.handle(req).await }
            })
        })
        .await?;
        Ok(Self { shared, server })
    }

    /// The base URL, `http://127.0.0.1:<port>/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.server.addr())
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Queues a reply for the next request (any route; on `/v1/embeddings` a `Text` or
    /// `ToolCalls` reply means "answer normally").
    pub fn push(&self, reply: Reply) {
        lock(&self.shared.queue).push_back(reply);
    }

    /// Answers requests the queue does not, from the request body. With no handler, or
    /// when it returns `None`, a chat request gets a 400 saying nothing was scripted and
    /// an embeddings request gets its vectors.
    pub fn set_handler(&self, f: impl Fn(&Value) -> Option<Reply> + Send + Sync + 'static) {
        *lock(&self.shared.handler) = Some(Arc::new(f));
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// How many requests arrived so far (failed ones included).
    pub fn request_count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// The vector this fake returns for `text`.
    pub fn embedding(&self, text: &str) -> Vec<f32> {
        embedding_of(text, self.shared.dim)
    }

    /// Stops listening and closes every connection; returns once the port is closed.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// A deterministic unit vector for `text`: SHA-256 of the text and a block number gives
/// bytes, mapped to [-1, 1] and normalised.
pub fn embedding_of(text: &str, dim: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(dim);
    let mut block = 0u32;
    while out.len() < dim {
        let digest = Sha256::new()
            .chain_update(text.as_bytes())
            .chain_update(block.to_le_bytes())
            .finalize();
        out.extend(
            digest
                .iter()
                .take(dim - out.len())
                .map(|b| f32::from(*b) / 127.5 - 1.0),
        );
        block += 1;
    }
    let norm = out.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        out.iter_mut().for_each(|v| *v /= norm);
    }
    out
}

fn respond(status: StatusCode, body: String) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(body)
}

fn openai_error(status: StatusCode, message: &str) -> Response {
    respond(
        status,
        json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}})
            .to_string(),
    )
}

/// The reply with its pause and extra headers peeled off.
struct Unwrapped {
    reply: Option<Reply>,
    pause: Duration,
    headers: Vec<(String, String)>,
}

fn unwrap(mut reply: Option<Reply>) -> Unwrapped {
    let mut pause = Duration::ZERO;
    let mut headers = Vec::new();
    loop {
        match reply {
            Some(Reply::Delay(d, inner)) => {
                pause += d;
                reply = Some(*inner);
            }
            Some(Reply::Header(name, value, inner)) => {
                headers.push((name, value));
                reply = Some(*inner);
            }
            other => {
                return Unwrapped {
                    reply: other,
                    pause,
                    headers,
                };
            }
        }
    }
}

impl Shared {
    async fn handle(self: Arc<Self>, req: Request) -> Response {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        let authorization = req.header("authorization").map(str::to_owned);
        let raw = req.into_body().into_bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        lock(&self.requests).push(RecordedRequest {
            path: path.clone(),
            body: body.clone(),
            authorization,
        });
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        if method != Method::POST {
            return openai_error(
                StatusCode::NOT_FOUND,
                &format!("Invalid URL ({method} {path})"),
            );
        }
        if !body.is_object() {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "We could not parse the JSON body of your request.",
            );
        }
        let scripted = lock(&self.queue).pop_front();
        let scripted = match scripted {
            Some(r) => Some(r),
            None => {
                let handler = lock(&self.handler).clone();
                handler.and_then(|h| h(&body))
            }
        };
        let Unwrapped {
            reply,
            pause,
            headers,
        } = unwrap(scripted);
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        let mut resp = match (path.as_str(), reply) {
            (_, Some(Reply::Status(status, text))) => respond(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                text,
            ),
            ("/v1/chat/completions", reply) => self.chat(&body, reply, n),
            ("/v1/embeddings", _) => self.embeddings(&body),
            _ => openai_error(StatusCode::NOT_FOUND, &format!("Invalid URL (POST {path})")),
        };
        for (name, value) in headers {
            if let (Ok(name), Ok(value)) = (
                poem::http::HeaderName::try_from(name),
                poem::http::HeaderValue::try_from(value),
            ) {
                resp.headers_mut().insert(name, value);
            }
        }
        resp
    }

    fn chat(&self, body: &Value, reply: Option<Reply>, n: usize) -> Response {
        if let Err(message) = check_chat_request(body) {
            return openai_error(StatusCode::BAD_REQUEST, &message);
        }
        let model = body["model"].as_str().unwrap_or_default().to_owned();
        let (content, calls) = match reply {
            Some(Reply::Endless(piece)) => {
                let id = format!("chatcmpl-fake-{n}");
                return endless(&id, &model, piece, body.get("stream") == Some(&json!(true)));
            }
            Some(Reply::Paced {
                text,
                piece_chars,
                pause,
            }) if body.get("stream").and_then(Value::as_bool) == Some(true) => {
                let id = format!("chatcmpl-fake-{n}");
                return paced(&id, &model, &text, piece_chars, pause);
            }
            Some(Reply::Text(t) | Reply::Paced { text: t, .. }) => (t, Vec::new()),
            Some(Reply::ToolCalls(c)) => (String::new(), c),
            _ => {
                return openai_error(
                    StatusCode::BAD_REQUEST,
                    "FakeOpenAi has no reply scripted for this request",
                );
            }
        };
        let calls: Vec<(String, String, String)> = calls
            .into_iter()
            .enumerate()
            .map(|(i, (name, args))| (format!("call_{n}_{i}"), name, args))
            .collect();
        let finish = if calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        };
        let id = format!("chatcmpl-fake-{n}");
        if body.get("stream").and_then(Value::as_bool) == Some(true) {
            return stream(&id, &model, &content, &calls, finish);
        }
        let mut message = json!({
            "role": "assistant",
            "content": if content.is_empty() && !calls.is_empty() { Value::Null } else { json!(content) },
            "refusal": null,
        });
        if !calls.is_empty() {
            message["tool_calls"] = calls
                .iter()
                .map(|(id, name, args)| {
                    json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}})
                })
                .collect();
        }
        respond(
            StatusCode::OK,
            json!({
                "id": id,
                "object": "chat.completion",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            })
            .to_string(),
        )
    }

    fn embeddings(&self, body: &Value) -> Response {
        if body
            .get("model")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "you must provide a model parameter",
            );
        }
        let inputs: Vec<&str> = match body.get("input") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(items)) if !items.is_empty() => {
                match items.iter().map(Value::as_str).collect::<Option<Vec<_>>>() {
                    Some(v) => v,
                    None => {
                        return openai_error(
                            StatusCode::BAD_REQUEST,
                            "'input' must be a string or an array of strings",
                        );
                    }
                }
            }
            _ => {
                return openai_error(
                    StatusCode::BAD_REQUEST,
                    "'input' must be a non-empty string or array of strings",
                );
            }
        };
        // Reverse index order: a client that trusts the list order gets it wrong.
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .rev()
            .map(|(i, text)| {
                json!({"object": "embedding", "index": i, "embedding": embedding_of(text, self.dim)})
            })
            .collect();
        respond(
            StatusCode::OK,
            json!({
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": inputs.len(), "total_tokens": inputs.len()},
            })
            .to_string(),
        )
    }
}

/// OpenAI's checks on a chat request that a client could get wrong.
fn check_chat_request(body: &Value) -> Result<(), String> {
    if body
        .get("model")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err("you must provide a model parameter".into());
    }
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or("'messages' must be a non-empty array")?;
    let mut open_calls: HashSet<String> = HashSet::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let content = m.get("content");
        match role {
            "system" | "user" => {
                if !content.is_some_and(Value::is_string) {
                    return Err(format!("messages[{i}].content must be a string"));
                }
            }
            "assistant" => {
                let calls = m.get("tool_calls");
                let has_calls = calls.is_some_and(|c| c.as_array().is_some_and(|a| !a.is_empty()));
                match content {
                    Some(Value::String(_)) => {}
                    Some(Value::Null) | None if has_calls => {}
                    _ => return Err(format!("messages[{i}].content must be a string")),
                }
                if let Some(calls) = calls {
                    for (j, c) in calls.as_array().into_iter().flatten().enumerate() {
                        let ok = c.get("id").and_then(Value::as_str).is_some()
                            && c.get("type").and_then(Value::as_str) == Some("function")
                            && c["function"].get("name").and_then(Value::as_str).is_some()
                            && c["function"].get("arguments").is_some_and(Value::is_string);
                        if !ok {
                            return Err(format!(
                                "messages[{i}].tool_calls[{j}] must be {{id, type: \"function\", \
                                 function: {{name, arguments: string}}}}"
                            ));
                        }
                        open_calls.insert(c["id"].as_str().unwrap_or_default().to_owned());
                    }
                }
            }
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str);
                if !id.is_some_and(|id| open_calls.contains(id)) {
                    return Err(format!(
                        "Invalid parameter: messages[{i}] with role 'tool' must be a response \
                         to a preceeding message with 'tool_calls'."
                    ));
                }
                if !content.is_some_and(Value::is_string) {
                    return Err(format!("messages[{i}].content must be a string"));
                }
            }
            other => return Err(format!("messages[{i}].role {other:?} is not supported")),
        }
    }
    if let Some(tools) = body.get("tools") {
        let tools = tools.as_array().ok_or("'tools' must be an array")?;
        for (i, t) in tools.iter().enumerate() {
            let ok = t.get("type").and_then(Value::as_str) == Some("function")
                && t["function"].get("name").and_then(Value::as_str).is_some()
                && t["function"].get("parameters").is_none_or(Value::is_object);
            if !ok {
                return Err(format!(
                    "tools[{i}] must be {{type: \"function\", function: {{name, description, \
                     parameters}}}}"
                ));
            }
        }
    }
    Ok(())
}

/// [`Reply::Endless`]: a stream that never ends, or (not streamed) a body that never
/// comes.
fn endless(id: &str, model: &str, piece: String, streamed: bool) -> Response {
    if !streamed {
        let never = futures::stream::pending::<Result<Bytes, std::io::Error>>();
        return Response::builder()
            .status(StatusCode::OK)
            .content_type("application/json")
            .body(Body::from_bytes_stream(never));
    }
    let event = |delta: Value| {
        let chunk = json!({
            "id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}],
        });
        Bytes::from(format!("data: {chunk}\n\n"))
    };
    let first = event(json!({"role": "assistant", "content": ""}));
    let next = event(json!({"content": piece}));
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(
        futures::stream::unfold(next, |next| async move {
            tokio::time::sleep(ENDLESS_PAUSE).await;
            Some((Ok(next.clone()), next))
        }),
    );
    Response::builder()
        .status(StatusCode::OK)
        .content_type("text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_bytes_stream(body))
}

/// [`Reply::Paced`] streamed: one SSE event per piece, each its own write after `pause`.
fn paced(id: &str, model: &str, text: &str, piece_chars: usize, pause: Duration) -> Response {
    let event = |delta: Value, finish: Value| {
        let chunk = json!({
            "id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        Bytes::from(format!("data: {chunk}\n\n"))
    };
    let mut events = vec![event(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    events.extend(
        pieces(text, piece_chars)
            .into_iter()
            .map(|p| event(json!({"content": p}), Value::Null)),
    );
    events.push(event(json!({}), json!("stop")));
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let body = futures::stream::unfold(events.into_iter(), move |mut events| async move {
        let next = events.next()?;
        tokio::time::sleep(pause).await;
        Some((Ok::<_, std::io::Error>(next), events))
    });
    Response::builder()
        .status(StatusCode::OK)
        .content_type("text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_bytes_stream(body))
}

/// Splits `s` into pieces of about `size` bytes, on character boundaries.
fn pieces(s: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars
        .chunks(size.max(1))
        .map(|c| c.iter().collect())
        .collect()
}

/// The SSE answer: OpenAI's chunks, re-cut into uneven pieces written with pauses.
fn stream(
    id: &str,
    model: &str,
    content: &str,
    calls: &[(String, String, String)],
    finish: &str,
) -> Response {
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        Value::Null,
    )];
    for piece in pieces(content, 4) {
        events.push(chunk(json!({"content": piece}), Value::Null));
    }
    for (index, (call_id, name, args)) in calls.iter().enumerate() {
        events.push(chunk(
            json!({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                "function": {"name": name, "arguments": ""}}]}),
            Value::Null,
        ));
        for piece in pieces(args, 5) {
            events.push(chunk(
                json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                Value::Null,
            ));
        }
    }
    events.push(chunk(json!({}), json!(finish)));
    let mut text = String::new();
    for e in events {
        text.push_str("data: ");
        text.push_str(&e.to_string());
        text.push_str("\n\n");
    }
    text.push_str("data: [DONE]\n\n");
    let bytes = Bytes::from(text);
    let mut cuts = Vec::new();
    let mut at = 0;
    for size in PIECE_SIZES.iter().cycle() {
        if at >= bytes.len() {
            break;
        }
        let end = (at + size).min(bytes.len());
        cuts.push(bytes.slice(at..end));
        at = end;
    }
    let body = futures::stream::unfold(cuts.into_iter(), |mut cuts| async move {
        let piece = cuts.next()?;
        tokio::time::sleep(PIECE_PAUSE).await;
        Some((Ok::<_, std::io::Error>(piece), cuts))
    });
    Response::builder()
        .status(StatusCode::OK)
        .content_type("text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_bytes_stream(body))
}
