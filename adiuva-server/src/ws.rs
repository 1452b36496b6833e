//! `WS /api/v1/chat/stream` (plan 8a, steps 14, 17, 23–25): chat with tools that run on
//! the device.
//!
//! One socket carries any number of chats, one at a time. The client's request frame is
//! `{"type": "chat_request", …ChatRequest}` (a bare `ChatRequest` too) or, v2,
//! `{"type": "user_request", …, "source", "scope", "api_key"}` — the format is detected
//! per request and answered in kind. While a chat runs, the server streams
//! `{"type": "text_chunk", "text"}`, sends `{"type": "tool_call", "id", "name",
//! "arguments"}` and waits (30 s by default) for `{"type": "tool_result", "id", "result"}`
//! or `{"type": "tool_result", "id", "error"}`; a concurrent receive loop resolves them.
//! The chat ends with `{"type": "final", "done": true, "response", "actions"}` (v1) or
//! `{"type": "ai_response", "response", "navigation", "mutations", "context"}` (v2). A v2
//! router may ask `{"type": "ask_user_clarification", "question"}`; the next
//! `user_request` answers it. Malformed frames get `{"type": "error", "code", "detail"}`
//! and the socket stays usable. Every text frame passes through the sanitizer. A client
//! that disconnects cancels the chat (the model call is dropped). The server pings every
//! 30 s.
//!
//! Limits (issue #9, item 4), so no client can make a socket hold unbounded memory: a
//! message or frame over `chat_max_message_bytes` (1 MiB) closes the socket with 1009
//! before it is buffered; the outgoing queue holds [`OUTBOX_FRAMES`] frames, and a
//! client that lets it fill (it does not read) is disconnected; error frames never echo
//! more than [`MAX_DETAIL_CHARS`] characters of what the client sent; a socket from
//! which nothing arrives (not even a pong) for `chat_pong_timeout_secs` is closed; a
//! user may hold `chat_max_sockets_per_user` sockets on one instance (one more: 429
//! `too_many_sockets` before the upgrade).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adiuva_core::Adiuva;
use adiuva_core::auth::Principal;
use adiuva_core::chat::orchestrator::{ChatOutcome, Orchestrator, answering};
use adiuva_core::chat::{ChatRequest, ToolExecutor};
use adiuva_core::domain::UserId;
use async_trait::async_trait;
use futures::{SinkExt as _, StreamExt as _};
use poem::http::StatusCode;
use poem::web::websocket::{CloseCode, Message, WebSocket, WebSocketConfig, WebSocketStream};
use poem::web::{Data, Query};
use poem::{IntoResponse, Request, Response, handler};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;

/// Counts each chat on a socket against its user's per-minute budget, like an HTTP
/// request (`None`: rate limits are off).
#[derive(Clone)]
pub struct WsBudget(pub Option<Arc<dyn adiuva_core::ports::RateLimiter>>);

/// How long the server waits for a tool result, and how often it pings.
#[derive(Debug, Clone, Copy)]
pub struct WsTimings {
    /// A tool call without a result after this becomes an error result for the model.
    pub tool_timeout: Duration,
    /// Interval of WebSocket pings.
    pub ping_every: Duration,
    /// A socket from which nothing (a pong included) arrives for this long is closed.
    pub pong_timeout: Duration,
}

impl Default for WsTimings {
    fn default() -> Self {
        Self {
            tool_timeout: Duration::from_secs(30),
            ping_every: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(60),
        }
    }
}

/// Frames the server may have queued for one socket; a client that lets more pile up
/// is not reading and is disconnected. A chat produces frames as fast as the model
/// streams, which a reading client drains long before this.
pub const OUTBOX_FRAMES: usize = 256;

/// Longest `detail` of an error frame, in characters: details quote what the client sent
/// (ids, types, parse errors), and the client decides how long that is.
pub const MAX_DETAIL_CHARS: usize = 300;

/// How long a closing socket's last frames may take to leave before it is dropped.
const CLOSE_DRAIN: Duration = Duration::from_secs(5);

/// Size caps of the chat socket, and its open sockets per user.
#[derive(Clone)]
pub struct WsLimits {
    /// Largest message (and frame) a client may send, in bytes.
    pub max_message_bytes: usize,
    /// Open sockets per user on this instance.
    pub max_sockets_per_user: usize,
    open: Arc<Mutex<HashMap<UserId, usize>>>,
}

impl WsLimits {
    /// The caps, with no socket open yet.
    pub fn new(max_message_bytes: usize, max_sockets_per_user: usize) -> Self {
        Self {
            max_message_bytes,
            max_sockets_per_user,
            open: Arc::default(),
        }
    }

    fn config(&self) -> WebSocketConfig {
        let mut c = WebSocketConfig::default();
        // tungstenite's defaults (64 MiB messages, 16 MiB frames) let one socket buffer
        // that much of an unfinished message; a chat frame needs far less.
        c.max_message_size = Some(self.max_message_bytes);
        c.max_frame_size = Some(self.max_message_bytes);
        // Allocated up front per socket (128 KiB by default); reads of larger frames
        // still work, in more steps.
        c.read_buffer_size = 8 * 1024;
        c.write_buffer_size = 8 * 1024;
        // The writer flushes every frame, so this only bounds a failing socket's buffer.
        c.max_write_buffer_size = 8 * 1024 + self.max_message_bytes.max(1 << 20);
        c
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, usize>> {
        // Only counters live here; a panic elsewhere cannot leave them half-updated.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn try_open(&self, user: UserId) -> Option<OpenSocket> {
        let mut open = self.lock();
        let n = open.entry(user).or_insert(0);
        if *n >= self.max_sockets_per_user {
            return None;
        }
        *n += 1;
        Some(OpenSocket {
            limits: self.clone(),
            user,
        })
    }
}

/// One socket counted against its user until dropped (also when the upgrade fails).
struct OpenSocket {
    limits: WsLimits,
    user: UserId,
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        let mut open = self.limits.lock();
        if let Some(n) = open.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

/// Why the server ends a session on its own.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// The outgoing queue is full: the client does not read.
    NotReading,
    /// Nothing arrived for `pong_timeout`.
    Unresponsive,
}

/// The socket's bounded outgoing queue. Sending never waits: a full queue means the
/// client stopped reading, and the session is stopped instead.
#[derive(Clone)]
struct Outbox {
    tx: mpsc::Sender<Message>,
    stop: mpsc::Sender<Stop>,
}

impl Outbox {
    /// Queues `m`; false when the socket is gone or the client is not reading.
    fn send(&self, m: Message) -> bool {
        match self.tx.try_send(m) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                let _ = self.stop.try_send(Stop::NotReading);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

fn reject(e: adiuva_core::Error) -> Response {
    let e = ApiError::from(e);
    let mut resp = Response::builder()
        .status(e.status)
        .content_type("application/json")
        .body(serde_json::to_vec(&e.body).unwrap_or_default());
    if e.status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            poem::http::header::WWW_AUTHENTICATE,
            poem::http::HeaderValue::from_static("Bearer"),
        );
    }
    resp
}

/// The upgrade: authenticates (header or `?token=`) before accepting the socket.
#[handler]
pub async fn chat_stream(
    req: &Request,
    ws: WebSocket,
    Query(q): Query<TokenQuery>,
    Data(app): Data<&Adiuva>,
    Data(timings): Data<&WsTimings>,
    Data(budget): Data<&WsBudget>,
    Data(ws_limits): Data<&WsLimits>,
) -> Response {
    let header = crate::api::bearer_token(req).map(str::to_owned);
    let Some(token) = header.or(q.token) else {
        return reject(adiuva_core::Error::Unauthorized(
            "send the access token in the Authorization header or as ?token=",
        ));
    };
    let principal = match crate::api::authenticate(req, &token).await {
        Ok(p) => p,
        Err(e) => return reject(e),
    };
    let orchestrator = match app.chat() {
        Ok(o) => o,
        Err(e) => return reject(e),
    };
    let user = principal.id();
    let Some(slot) = ws_limits.try_open(user) else {
        tracing::warn!(user_id = %user, "refused a chat socket: too many open");
        let e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_sockets",
            format!(
                "at most {} chat sockets per user may be open at once; close one first",
                ws_limits.max_sockets_per_user
            ),
        );
        return Response::builder()
            .status(e.status)
            .content_type("application/json")
            .body(serde_json::to_vec(&e.body).unwrap_or_default());
    };
    let timings = *timings;
    let (limiter, app) = (budget.0.clone(), app.clone());
    ws.config(ws_limits.config())
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            session(orchestrator, principal, socket, timings, limiter, app).await;
        })
        .into_response()
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Result<Value, String>>>>>;

/// Runs tool calls on the device: sends the frame, waits for the matching result.
struct WsExecutor {
    orchestrator: Arc<Orchestrator>,
    out: Outbox,
    pending: Pending,
    next: AtomicU64,
    timeout: Duration,
}

#[async_trait]
impl ToolExecutor for WsExecutor {
    async fn execute(
        &self,
        _call_id: &str,
        name: &str,
        arguments: &Value,
    ) -> Result<Value, String> {
        // Our own ids: a model may reuse its call ids across turns.
        let id = format!("tc_{}", self.next.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(id.clone(), tx);
        }
        let arguments = self.orchestrator.clean_value(arguments);
        let frame = json!({"type": "tool_call", "id": id, "name": name, "arguments": arguments});
        if !self.out.send(Message::Text(frame.to_string())) {
            return Err("the device disconnected".into());
        }
        let outcome = tokio::time::timeout(self.timeout, rx).await;
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&id);
        }
        match outcome {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the device disconnected".into()),
            Err(_) => Err(format!(
                "the device did not answer within {} s",
                self.timeout.as_secs_f32()
            )),
        }
    }
}

fn send(out: &Outbox, frame: Value) {
    out.send(Message::Text(frame.to_string()));
}

/// An error frame; its detail is cut to [`MAX_DETAIL_CHARS`] (it may quote the client).
fn error_frame(code: &str, detail: impl Into<String>) -> Value {
    json!({"type": "error", "code": code, "detail": bounded(detail.into())})
}

fn bounded(mut s: String) -> String {
    if let Some((cut, _)) = s.char_indices().nth(MAX_DETAIL_CHARS) {
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// What the client asked, and in which protocol.
struct Incoming {
    request: ChatRequest,
    v2: bool,
}

/// Parses one client frame into a chat request, or says why not.
fn parse_request(v: Value) -> Result<Incoming, (&'static str, String)> {
    let Value::Object(mut map) = v else {
        return Err(("malformed_frame", "a frame must be a JSON object".into()));
    };
    let kind = map.remove("type");
    let v2 = match kind.as_ref().and_then(Value::as_str) {
        None | Some("chat_request") => false,
        Some("user_request") => true,
        Some(other) => {
            return Err((
                "unknown_frame_type",
                format!(
                    "'{other}' is not a frame a client sends here (chat_request, user_request, tool_result)"
                ),
            ));
        }
    };
    if !map.contains_key("message") {
        return Err(("malformed_frame", "a chat request needs `message`".into()));
    }
    let request: ChatRequest = serde_json::from_value(Value::Object(map))
        .map_err(|e| ("malformed_frame", format!("not a chat request: {e}")))?;
    if request.message.trim().is_empty() {
        return Err(("validation_error", "message must not be empty".into()));
    }
    Ok(Incoming { request, v2 })
}

async fn session(
    orchestrator: Arc<Orchestrator>,
    principal: Principal,
    socket: WebSocketStream,
    timings: WsTimings,
    limiter: Option<Arc<dyn adiuva_core::ports::RateLimiter>>,
    app: Adiuva,
) {
    let user = principal.id();
    let (mut sink, mut stream) = socket.split();
    let (tx, mut out_rx) = mpsc::channel::<Message>(OUTBOX_FRAMES);
    let (stop, mut stopped) = mpsc::channel::<Stop>(2);
    let out = Outbox { tx, stop };
    // When anything last arrived from the client, in ms since `opened`.
    let opened = tokio::time::Instant::now();
    let last_seen = Arc::new(AtomicU64::new(0));
    let mut writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let pinger = {
        let (out, last_seen) = (out.clone(), last_seen.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(timings.ping_every);
            every.tick().await;
            loop {
                every.tick().await;
                let silent = opened
                    .elapsed()
                    .saturating_sub(Duration::from_millis(last_seen.load(Ordering::Relaxed)));
                if silent >= timings.pong_timeout {
                    let _ = out.stop.try_send(Stop::Unresponsive);
                    break;
                }
                if !out.send(Message::Ping(Vec::new())) {
                    break;
                }
            }
        })
    };
    let pending: Pending = Arc::default();
    let executor = Arc::new(WsExecutor {
        orchestrator: orchestrator.clone(),
        out: out.clone(),
        pending: pending.clone(),
        next: AtomicU64::new(1),
        timeout: timings.tool_timeout,
    });
    let mut running: Option<tokio::task::JoinHandle<Option<(ChatRequest, String)>>> = None;
    let mut awaiting_answer: Option<(ChatRequest, String)> = None;
    tracing::info!(user_id = %user, "chat socket opened");
    let mut stopped_by: Option<Stop> = None;
    loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            why = stopped.recv() => {
                stopped_by = why;
                break;
            }
        };
        let Some(frame) = frame else { break };
        let seen = u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        last_seen.store(seen, Ordering::Relaxed);
        let text = match frame {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(_)) => break,
            Err(e) => {
                // poem passes tungstenite's errors on as text; a capacity error is the
                // one that means "message too big" (1009), and is raised before the
                // oversized frame or message is buffered.
                if e.to_string().starts_with("Space limit exceeded") {
                    // "Space limit exceeded: Message too long: <size> > <max>": well
                    // under a close reason's 123 bytes.
                    out.send(Message::close_with(CloseCode::Size, e.to_string()));
                }
                break;
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(Message::Binary(_)) => {
                send(&out, error_frame("malformed_frame", "frames are JSON text"));
                continue;
            }
        };
        let value: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                send(
                    &out,
                    error_frame("malformed_frame", format!("not JSON: {e}")),
                );
                continue;
            }
        };
        if value.get("type").and_then(Value::as_str) == Some("tool_result") {
            let Some(id) = value.get("id").and_then(Value::as_str) else {
                send(
                    &out,
                    error_frame("malformed_frame", "tool_result needs `id`"),
                );
                continue;
            };
            let result = match (value.get("error"), value.get("result")) {
                (Some(e), _) if !e.is_null() => {
                    Err(e.as_str().map_or_else(|| e.to_string(), str::to_owned))
                }
                (_, Some(r)) => Ok(r.clone()),
                _ => Ok(Value::Null),
            };
            let waiting = pending.lock().ok().and_then(|mut p| p.remove(id));
            match waiting {
                Some(tx) => {
                    let _ = tx.send(result);
                }
                None => send(
                    &out,
                    error_frame(
                        "unknown_tool_call",
                        format!("no tool call '{id}' is waiting"),
                    ),
                ),
            }
            continue;
        }
        if let Some(h) = &running
            && !h.is_finished()
        {
            send(
                &out,
                error_frame(
                    "chat_in_progress",
                    "wait for the current reply's final frame",
                ),
            );
            continue;
        }
        if let Some(h) = running.take()
            && let Ok(Some(question_asked)) = h.await
        {
            awaiting_answer = Some(question_asked);
        }
        let mut incoming = match parse_request(value) {
            Ok(i) => i,
            Err((code, detail)) => {
                send(&out, error_frame(code, detail));
                continue;
            }
        };
        // Each chat re-checks the account and session (deleted, or revoked by refresh
        // reuse, since the socket opened): the same read gives the tier for the budget.
        let current = match app.auth().reauthenticate(&principal).await {
            Ok(p) => p,
            Err(e) => {
                let e = ApiError::from(e);
                send(&out, error_frame(&e.body.code, e.body.detail));
                break;
            }
        };
        if let Some(limiter) = &limiter
            && let Some(frame) = over_budget(limiter.as_ref(), &current).await
        {
            send(&out, frame);
            continue;
        }
        if let Some((earlier, question)) = awaiting_answer.take() {
            incoming.request = answering(&earlier, &question, incoming.request);
        }
        let (orchestrator, executor, out2) = (orchestrator.clone(), executor.clone(), out.clone());
        running = Some(tokio::spawn(async move {
            run_chat(&orchestrator, executor.as_ref(), incoming, &out2).await
        }));
    }
    // The client went away (or is being sent away): cancel the chat (dropping its model
    // call) and stop.
    if let Some(h) = running.take() {
        h.abort();
    }
    pinger.abort();
    match stopped_by {
        Some(Stop::NotReading) => {
            // Nothing more can reach a client that does not read: drop the socket.
            tracing::warn!(user_id = %user, "closing a chat socket: the client does not read");
            writer.abort();
        }
        Some(Stop::Unresponsive) => {
            tracing::info!(user_id = %user, "closing a chat socket: nothing received within the pong timeout");
            out.send(Message::close_with(
                CloseCode::Away,
                "no pong or frame received in time",
            ));
        }
        None => {}
    }
    drop(out);
    drop(executor);
    if tokio::time::timeout(CLOSE_DRAIN, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    tracing::info!(user_id = %user, "chat socket closed");
}

/// A chat counts like an HTTP request against the user's tier budget (the same key as
/// the HTTP middleware's): over it, an error frame with `retry_after` seconds.
async fn over_budget(
    limiter: &dyn adiuva_core::ports::RateLimiter,
    principal: &Principal,
) -> Option<Value> {
    let limit = adiuva_core::tiers::rate_limit_per_minute(principal.user.tier);
    match limiter
        .check(
            &format!("user:{}", principal.id()),
            limit,
            Duration::from_secs(60),
        )
        .await
    {
        adiuva_core::ports::rate_limit::RateDecision::Limited { retry_after } => {
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            Some(json!({
                "type": "error",
                "code": "rate_limited",
                "detail": format!("too many requests: the limit is {limit} per minute; retry in {secs} s"),
                "retry_after": secs.max(1),
            }))
        }
        _ => None,
    }
}

/// One chat; returns the request and the question when the router asked one.
async fn run_chat(
    orchestrator: &Orchestrator,
    executor: &dyn ToolExecutor,
    incoming: Incoming,
    out: &Outbox,
) -> Option<(ChatRequest, String)> {
    let Incoming { request, v2 } = incoming;
    let (text_tx, mut text_rx) = mpsc::unbounded_channel::<String>();
    let chat = async {
        let r = orchestrator
            .orchestrate_stream(&request, executor, &text_tx, v2)
            .await;
        drop(text_tx);
        r
    };
    let forward = async {
        let mut clean = orchestrator.stream_sanitizer();
        while let Some(piece) = text_rx.recv().await {
            let text = clean.push(&piece);
            if !text.is_empty() {
                send(out, json!({"type": "text_chunk", "text": text}));
            }
        }
        let rest = clean.finish();
        if !rest.is_empty() {
            send(out, json!({"type": "text_chunk", "text": rest}));
        }
    };
    let (result, ()) = tokio::join!(chat, forward);
    match result {
        Ok(ChatOutcome::Response(reply)) if v2 => {
            let d = &reply.directives;
            send(
                out,
                json!({
                    "type": "ai_response",
                    "response": {"text": reply.response.response, "ui_directive": d.ui_directive, "data": null},
                    "navigation": d.navigation,
                    "mutations": reply.mutations,
                    "context": d.context(),
                }),
            );
            None
        }
        Ok(ChatOutcome::Response(reply)) => {
            send(
                out,
                json!({"type": "final", "done": true, "response": reply.response.response, "actions": reply.response.actions}),
            );
            None
        }
        Ok(ChatOutcome::Plan(plan)) => {
            send(
                out,
                json!({"type": "final", "done": true, "response": "", "actions": [], "plan": plan}),
            );
            None
        }
        Ok(ChatOutcome::Clarification(question)) => {
            send(
                out,
                json!({"type": "ask_user_clarification", "question": question}),
            );
            Some((request, question))
        }
        Err(e) => {
            let e = ApiError::from(e);
            send(
                out,
                error_frame(&e.body.code, orchestrator.clean(&e.body.detail)),
            );
            None
        }
    }
}
