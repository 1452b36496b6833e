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
//! and the socket stays usable. The frames are typed in [`crate::frames`] (and described
//! by `/api/v1/asyncapi.json`); this module only serializes the events of core's
//! [`ChatSession`], which are sanitized before they get here, and the session owns the
//! clarification state and the per-chat rate budget. A client that disconnects cancels
//! the chat (the model call is dropped). The server pings every 30 s.
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
use adiuva_core::chat::service::Refused;
use adiuva_core::chat::{ChatEvent, ChatPeer, ChatSession, Protocol, ToolCall};
use adiuva_core::domain::UserId;
use async_trait::async_trait;
use futures::{SinkExt as _, StreamExt as _};
use poem::http::StatusCode;
use poem::web::websocket::{CloseCode, Message, WebSocket, WebSocketConfig, WebSocketStream};
use poem::web::{Data, Query};
use poem::{IntoResponse, Request, Response, handler};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;
pub use crate::frames::MAX_DETAIL_CHARS;
use crate::frames::{self, Incoming, ServerFrame};

/// How long the server waits for a tool result, and how often it pings (from the
/// settings, their one home; `startup::routes` builds it).
#[derive(Debug, Clone, Copy)]
pub struct WsTimings {
    /// A tool call without a result after this becomes an error result for the model.
    pub tool_timeout: Duration,
    /// Interval of WebSocket pings.
    pub ping_every: Duration,
    /// A socket from which nothing (a pong included) arrives for this long is closed.
    pub pong_timeout: Duration,
}

/// Frames the server may have queued for one socket; a client that lets more pile up
/// is not reading and is disconnected. A chat produces frames as fast as the model
/// streams, which a reading client drains long before this.
pub const OUTBOX_FRAMES: usize = 256;

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
    let user = principal.id();
    let chat = match app.chat_service() {
        Ok(c) => c.session(principal),
        Err(e) => return reject(e),
    };
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
    ws.config(ws_limits.config())
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            session(chat, user, socket, timings).await;
        })
        .into_response()
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Result<Value, String>>>>>;

/// The socket's side of a chat turn: serializes the turn's events into frames and runs
/// tool calls on the device (sends the frame, waits for the matching result).
struct WsPeer {
    out: Outbox,
    pending: Pending,
    next: Arc<AtomicU64>,
    timeout: Duration,
    protocol: Protocol,
}

#[async_trait]
impl ChatPeer for WsPeer {
    fn event(&self, event: ChatEvent) {
        send(&self.out, &event_frame(event, self.protocol));
    }

    async fn run_tool(&self, call: ToolCall) -> Result<Value, String> {
        // Our own ids: a model may reuse its call ids across turns.
        let id = format!("tc_{}", self.next.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(id.clone(), tx);
        }
        let frame = ServerFrame::ToolCall(frames::ToolCall {
            id: id.clone(),
            name: call.name,
            arguments: call.arguments.into_iter().collect(),
        });
        if !self.out.send(Message::Text(frame.to_text())) {
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

fn send(out: &Outbox, frame: &ServerFrame) {
    out.send(Message::Text(frame.to_text()));
}

/// The frame of an error: its code and (bounded) detail, and `retry_after` when rate
/// limited.
fn error_frame(e: adiuva_core::Error) -> ServerFrame {
    let e = ApiError::from(e);
    let mut frame = ServerFrame::error(&e.body.code, e.body.detail);
    if let ServerFrame::Error(f) = &mut frame {
        f.retry_after = e.retry_after;
    }
    frame
}

/// A turn's event as the frame of its protocol.
fn event_frame(event: ChatEvent, protocol: Protocol) -> ServerFrame {
    match event {
        ChatEvent::Text(text) => ServerFrame::TextChunk(frames::TextChunk { text }),
        ChatEvent::Final(reply) if protocol == Protocol::V2 => {
            ServerFrame::AiResponse(frames::AiResponse {
                response: frames::AiReply {
                    text: reply.response,
                    ui_directive: reply.ui_directive,
                    data: None,
                },
                context: frames::ScopeContext {
                    scope_changed: !reply.navigation.is_empty(),
                    new_scope: reply.new_scope.map(|s| s.into_iter().collect()),
                },
                navigation: reply.navigation.into_iter().map(Into::into).collect(),
                mutations: reply
                    .mutations
                    .into_iter()
                    .map(|m| frames::Mutation {
                        action: m.action,
                        table: m.table,
                        data: m.data,
                    })
                    .collect(),
            })
        }
        ChatEvent::Final(reply) => ServerFrame::Final(frames::Final {
            done: true,
            response: reply.response,
            actions: crate::api::chat::actions_out(reply.actions),
            plan: None,
        }),
        ChatEvent::Plan(plan) => ServerFrame::Final(frames::Final {
            done: true,
            response: String::new(),
            actions: Vec::new(),
            plan: Some(plan.into()),
        }),
        ChatEvent::Clarification(question) => {
            ServerFrame::AskUserClarification(frames::AskUserClarification { question })
        }
        ChatEvent::Error(e) => error_frame(e),
    }
}

async fn session(chat: ChatSession, user: UserId, socket: WebSocketStream, timings: WsTimings) {
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
    // Tool call ids count up over the socket's life, across turns.
    let next_call = Arc::new(AtomicU64::new(1));
    let mut running: Option<tokio::task::JoinHandle<()>> = None;
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
                send(
                    &out,
                    &ServerFrame::error("malformed_frame", "frames are JSON text"),
                );
                continue;
            }
        };
        let parsed = match Incoming::parse(&text) {
            Ok(Incoming::Request(_)) if running.as_ref().is_some_and(|h| !h.is_finished()) => {
                send(&out, &in_progress());
                continue;
            }
            other => other,
        };
        let (request, v2) = match parsed {
            Ok(Incoming::ToolResult { id, result }) => {
                let waiting = pending.lock().ok().and_then(|mut p| p.remove(&id));
                match waiting {
                    Some(tx) => {
                        let _ = tx.send(result);
                    }
                    None => send(
                        &out,
                        &ServerFrame::error(
                            "unknown_tool_call",
                            format!("no tool call '{id}' is waiting"),
                        ),
                    ),
                }
                continue;
            }
            Ok(Incoming::Request(Ok(request))) => request,
            Ok(Incoming::Request(Err((code, detail)))) | Err((code, detail)) => {
                send(&out, &ServerFrame::error(code, detail));
                continue;
            }
        };
        let request = match crate::api::chat::to_core_request(request) {
            Ok(r) => r,
            Err(e) => {
                send(&out, &error_frame(e));
                continue;
            }
        };
        let protocol = if v2 { Protocol::V2 } else { Protocol::V1 };
        let turn = match chat.admit(request, protocol).await {
            Ok(turn) => turn,
            Err(Refused { error, close }) => {
                send(&out, &error_frame(error));
                if close {
                    break;
                }
                continue;
            }
        };
        let peer = WsPeer {
            out: out.clone(),
            pending: pending.clone(),
            next: next_call.clone(),
            timeout: timings.tool_timeout,
            protocol,
        };
        running = Some(tokio::spawn(async move { turn.run(&peer).await }));
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
    if tokio::time::timeout(CLOSE_DRAIN, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    tracing::info!(user_id = %user, "chat socket closed");
}

fn in_progress() -> ServerFrame {
    ServerFrame::error(
        "chat_in_progress",
        "wait for the current reply's final frame",
    )
}
