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
use poem::web::websocket::WebSocket;
use poem::web::{Data, Query};
use poem::{IntoResponse, Request, Response, handler};
use serde_json::Value;
use tokio::sync::oneshot;

use super::socket::{
    self, Ended, Flow, Outbox, Session, Socket, TokenQuery, WsLimits, WsTimings, reject,
};
use crate::error::ApiError;
use crate::frames::{self, Incoming, ServerFrame};

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
    let principal = match socket::principal(req, q).await {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    let user = principal.id();
    let chat = match app.chat_service() {
        Ok(c) => c.session(principal),
        Err(e) => return reject(e),
    };
    let slot = match ws_limits.try_open(user) {
        Ok(slot) => slot,
        Err(e) => return socket::refusal(&e),
    };
    let timings = *timings;
    ws.config(ws_limits.config())
        .on_upgrade(move |ws| async move {
            let _slot = slot;
            session(chat, user, ws, timings).await;
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
        if !self.out.text(frame.to_text()) {
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
    out.text(frame.to_text());
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

/// The chat socket's state between frames.
struct ChatSocket {
    chat: ChatSession,
    out: Outbox,
    pending: Pending,
    /// Tool call ids count up over the socket's life, across turns.
    next_call: Arc<AtomicU64>,
    running: Option<tokio::task::JoinHandle<()>>,
    tool_timeout: Duration,
}

#[async_trait]
impl Session for ChatSocket {
    async fn text(&mut self, text: String) -> Flow {
        let out = &self.out;
        let parsed = match Incoming::parse(&text) {
            Ok(Incoming::Request(_)) if self.running.as_ref().is_some_and(|h| !h.is_finished()) => {
                send(out, &in_progress());
                return Flow::Continue;
            }
            other => other,
        };
        let (request, v2) = match parsed {
            Ok(Incoming::ToolResult { id, result }) => {
                let waiting = self.pending.lock().ok().and_then(|mut p| p.remove(&id));
                match waiting {
                    Some(tx) => {
                        let _ = tx.send(result);
                    }
                    None => send(
                        out,
                        &ServerFrame::error(
                            "unknown_tool_call",
                            format!("no tool call '{id}' is waiting"),
                        ),
                    ),
                }
                return Flow::Continue;
            }
            Ok(Incoming::Request(Ok(request))) => request,
            Ok(Incoming::Request(Err((code, detail)))) | Err((code, detail)) => {
                send(out, &ServerFrame::error(code, detail));
                return Flow::Continue;
            }
        };
        let request = match crate::api::chat::to_core_request(request) {
            Ok(r) => r,
            Err(e) => {
                send(out, &error_frame(e));
                return Flow::Continue;
            }
        };
        let protocol = if v2 { Protocol::V2 } else { Protocol::V1 };
        let turn = match self.chat.admit(request, protocol).await {
            Ok(turn) => turn,
            Err(Refused { error, close }) => {
                send(out, &error_frame(error));
                return if close { Flow::Close } else { Flow::Continue };
            }
        };
        let peer = WsPeer {
            out: out.clone(),
            pending: self.pending.clone(),
            next: self.next_call.clone(),
            timeout: self.tool_timeout,
            protocol,
        };
        self.running = Some(tokio::spawn(async move { turn.run(&peer).await }));
        Flow::Continue
    }
}

async fn session(
    chat: ChatSession,
    user: UserId,
    ws: poem::web::websocket::WebSocketStream,
    timings: WsTimings,
) {
    let (socket, out) = Socket::new(ws);
    let mut state = ChatSocket {
        chat,
        out,
        pending: Arc::default(),
        next_call: Arc::new(AtomicU64::new(1)),
        running: None,
        tool_timeout: timings.tool_timeout,
    };
    tracing::info!(user_id = %user, "chat socket opened");
    let ended = socket::drive(socket, &mut state, timings).await;
    // The client went away (or was sent away): cancel the chat (dropping its model call).
    if let Some(h) = state.running.take() {
        h.abort();
    }
    match ended {
        Ended::NotReading => {
            tracing::warn!(user_id = %user, "closing a chat socket: the client does not read");
        }
        Ended::Unresponsive => {
            tracing::info!(user_id = %user, "closing a chat socket: nothing received within the pong timeout");
        }
        _ => {}
    }
    tracing::info!(user_id = %user, "chat socket closed");
}

fn in_progress() -> ServerFrame {
    ServerFrame::error(
        "chat_in_progress",
        "wait for the current reply's final frame",
    )
}
