//! The frames of `WS /api/v1/chat/stream`, both directions, as typed values; the device
//! socket's are in [`device`].
//!
//! One home for the wire and its description: the socket writes [`ServerFrame`]s with
//! poem-openapi's `ToJSON`, and [`crate::asyncapi`] takes their JSON Schemas from the
//! same derives, so the document cannot drift from what is sent. Shared shapes (the chat
//! request, actions, plans) are the REST API's types, reused rather than copied.
//!
//! Client frames ([`ChatRequestFrame`], [`UserRequestFrame`], [`ToolResultFrame`]) are
//! described here; the socket reads them with [`Incoming::parse`], which keeps the
//! socket's own error codes (`unknown_frame_type`, `malformed_frame`) and accepts a v1
//! request without `type` (older clients send a bare `ChatRequest`).

pub mod device;

use std::collections::BTreeMap;

use poem_openapi::types::{ParseFromJSON as _, ToJSON as _};
use poem_openapi::{Enum, Object, Union};
use serde_json::Value;

use crate::api::chat::{ChatRequestIn, ExecutionPlanOut, PlanActionOut};

/// Longest `detail` of an error frame, in characters: details quote what the client sent
/// (ids, types, parse errors), and the client decides how long that is.
pub const MAX_DETAIL_CHARS: usize = 300;

// ---- server → client ----------------------------------------------------------------

/// A piece of the reply's text, as it is produced (sanitized).
#[derive(Debug, Object)]
pub struct TextChunk {
    /// The text; concatenated in order, the chunks are the reply.
    pub text: String,
}

/// The server asks the device to run a tool; answer with a `tool_result` of the same `id`.
#[derive(Debug, Object)]
pub struct ToolCall {
    /// The server's id for this call (`tc_<n>`), unique on the socket.
    pub id: String,
    /// The tool (`create_task`, `list_notes`, …).
    pub name: String,
    /// The tool's arguments (sanitized).
    pub arguments: BTreeMap<String, Value>,
}

/// v1: the chat's last frame.
#[derive(Debug, Object)]
pub struct Final {
    /// Always true.
    pub done: bool,
    /// The whole reply (sanitized); empty for a plan.
    pub response: String,
    /// Always empty over the socket, where the device ran the writes itself (see
    /// `tool_call`); kept for the plan's v1 shape, which `POST /chat` shares.
    pub actions: Vec<PlanActionOut>,
    /// With `execution_mode: plan`: the plan (template ids, never prompt text).
    #[oai(skip_serializing_if_is_none)]
    pub plan: Option<ExecutionPlanOut>,
}

/// The reply of a v2 `ai_response`.
#[derive(Debug, Object)]
pub struct AiReply {
    /// The whole reply (sanitized).
    pub text: String,
    /// A card, chart or diagram for the client to render; null when there is none.
    pub ui_directive: Option<Value>,
    /// Structured data for the directive; null when there is none.
    pub data: Option<Value>,
}

/// `navigate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum NavigationAction {
    /// Move the client's view.
    Navigate,
}

/// Where the client should look after a change outside the popup's scope.
#[derive(Debug, Object)]
pub struct Navigation {
    /// `navigate`.
    pub action: NavigationAction,
    /// The kind of entity (`project`).
    pub target: String,
    /// Which one, e.g. `{"project_id": "p2"}`.
    pub filter: BTreeMap<String, Value>,
}

impl From<adiuva_core::chat::service::Navigation> for Navigation {
    fn from(n: adiuva_core::chat::service::Navigation) -> Self {
        Self {
            action: NavigationAction::Navigate,
            target: n.target,
            filter: n.filter.into_iter().collect(),
        }
    }
}

/// A write the device ran during the turn (sanitized).
#[derive(Debug, Object)]
pub struct Mutation {
    /// `create_record`, `update_record` or `delete_record`.
    pub action: String,
    /// The client table.
    pub table: String,
    /// The record's fields as the tool received them.
    pub data: Value,
}

/// Whether the answer moved the client's scope.
#[derive(Debug, Object)]
pub struct ScopeContext {
    /// True when `navigation` is not empty.
    pub scope_changed: bool,
    /// The first navigation's filter; null when the scope did not change.
    pub new_scope: Option<BTreeMap<String, Value>>,
}

/// v2: the chat's last frame.
#[derive(Debug, Object)]
pub struct AiResponse {
    /// The reply.
    pub response: AiReply,
    /// Where the change happened, when outside the popup's scope.
    pub navigation: Vec<Navigation>,
    /// The writes the device ran.
    pub mutations: Vec<Mutation>,
    /// Whether the scope changed.
    pub context: ScopeContext,
}

/// v2: the router needs an answer first; the next `user_request` is the answer.
#[derive(Debug, Object)]
pub struct AskUserClarification {
    /// The question (sanitized).
    pub question: String,
}

/// Something went wrong; the socket stays usable unless the code says otherwise
/// (`unauthorized` closes it).
#[derive(Debug, Object)]
pub struct ErrorFrame {
    /// Machine-readable: `malformed_frame`, `unknown_frame_type`, `unknown_tool_call`,
    /// `chat_in_progress`, `validation_error`, `rate_limited`, `chat_timeout`,
    /// `llm_unavailable`, … (the same codes as `POST /chat`).
    pub code: String,
    /// A sentence for people (at most 300 characters).
    pub detail: String,
    /// `rate_limited` only: seconds until the budget has room again.
    #[oai(skip_serializing_if_is_none)]
    pub retry_after: Option<u64>,
}

/// Every frame the server sends on `/chat/stream`, tagged by `type`.
#[derive(Debug, Union)]
#[oai(discriminator_name = "type", one_of)]
pub enum ServerFrame {
    /// `text_chunk`.
    #[oai(mapping = "text_chunk")]
    TextChunk(TextChunk),
    /// `tool_call`.
    #[oai(mapping = "tool_call")]
    ToolCall(ToolCall),
    /// `final` (v1).
    #[oai(mapping = "final")]
    Final(Final),
    /// `ai_response` (v2).
    #[oai(mapping = "ai_response")]
    AiResponse(AiResponse),
    /// `ask_user_clarification` (v2).
    #[oai(mapping = "ask_user_clarification")]
    AskUserClarification(AskUserClarification),
    /// `error`.
    #[oai(mapping = "error")]
    Error(ErrorFrame),
}

impl ServerFrame {
    /// An error frame; its detail is cut to [`MAX_DETAIL_CHARS`] (it may quote the client).
    pub fn error(code: &str, detail: impl Into<String>) -> Self {
        Self::Error(ErrorFrame {
            code: code.to_owned(),
            detail: bounded(detail.into()),
            retry_after: None,
        })
    }

    /// The frame as the JSON text that goes on the wire.
    pub fn to_text(&self) -> String {
        self.to_json().unwrap_or(Value::Null).to_string()
    }
}

pub(crate) fn bounded(mut s: String) -> String {
    if let Some((cut, _)) = s.char_indices().nth(MAX_DETAIL_CHARS) {
        s.truncate(cut);
        s.push('…');
    }
    s
}

// ---- client → server ----------------------------------------------------------------

/// v1: start a chat (answered with `text_chunk`s, `tool_call`s and `final`). `type` may
/// be left out: a bare `ChatRequest` is a v1 request too.
#[derive(Debug, Object)]
pub struct ChatRequestFrame {
    /// The request, as `POST /chat` takes it.
    #[oai(flatten)]
    pub request: ChatRequestIn,
}

/// v2: start a chat, or answer the router's question (answered with `text_chunk`s,
/// `tool_call`s and `ai_response` or `ask_user_clarification`).
#[derive(Debug, Object)]
pub struct UserRequestFrame {
    /// The request, as `POST /chat` takes it (`source`, `scope` matter here).
    #[oai(flatten)]
    pub request: ChatRequestIn,
}

/// The device's answer to a `tool_call`: `result`, or `error` when the tool failed (the
/// model sees the error as the tool's result).
#[derive(Debug, Object)]
pub struct ToolResultFrame {
    /// The `id` of the `tool_call`.
    pub id: String,
    /// The tool's result.
    pub result: Option<Value>,
    /// Why the tool failed.
    pub error: Option<String>,
}

/// Every frame a client sends on `/chat/stream`, tagged by `type`.
#[derive(Debug, Union)]
#[oai(discriminator_name = "type", one_of)]
pub enum ClientFrame {
    /// `chat_request` (v1).
    #[oai(mapping = "chat_request")]
    ChatRequest(ChatRequestFrame),
    /// `user_request` (v2).
    #[oai(mapping = "user_request")]
    UserRequest(UserRequestFrame),
    /// `tool_result`.
    #[oai(mapping = "tool_result")]
    ToolResult(ToolResultFrame),
}

/// A client frame as the socket reads it.
#[derive(Debug)]
pub enum Incoming {
    /// Anything but a `tool_result`: a chat request (`true`: v2), or why it is not one.
    Request(Result<(ChatRequestIn, bool), Refusal>),
    /// A tool's answer: `Ok(result)` or `Err(error)`.
    ToolResult {
        /// The call's id.
        id: String,
        /// The result.
        result: Result<Value, String>,
    },
}

/// Why a client frame was refused: an error code and a detail.
pub type Refusal = (&'static str, String);

impl Incoming {
    /// Reads one text frame; text that is not JSON is refused outright.
    pub fn parse(text: &str) -> Result<Self, Refusal> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| ("malformed_frame", format!("not JSON: {e}")))?;
        if value.get("type").and_then(Value::as_str) == Some("tool_result") {
            return Self::tool_result(&value);
        }
        Ok(Self::Request(Self::request(value)))
    }

    fn request(value: Value) -> Result<(ChatRequestIn, bool), Refusal> {
        let Value::Object(mut map) = value else {
            return Err(("malformed_frame", "a frame must be a JSON object".into()));
        };
        let v2 = match map.remove("type").as_ref().map(|t| t.as_str()) {
            None | Some(Some("chat_request")) => false,
            Some(Some("user_request")) => true,
            Some(other) => {
                let other = other.map_or_else(|| "(not a string)".to_owned(), str::to_owned);
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
        let request = ChatRequestIn::parse_from_json(Some(Value::Object(map))).map_err(|e| {
            (
                "malformed_frame",
                format!("not a chat request: {}", e.message()),
            )
        })?;
        if request.message.trim().is_empty() {
            return Err(("validation_error", "message must not be empty".into()));
        }
        Ok((request, v2))
    }

    fn tool_result(value: &Value) -> Result<Self, Refusal> {
        let Some(id) = value.get("id").and_then(Value::as_str) else {
            return Err(("malformed_frame", "tool_result needs `id`".into()));
        };
        // A device that sends a non-string error still failed: its error is shown as JSON.
        let result = match (value.get("error"), value.get("result")) {
            (Some(e), _) if !e.is_null() => {
                Err(e.as_str().map_or_else(|| e.to_string(), str::to_owned))
            }
            (_, Some(r)) => Ok(r.clone()),
            _ => Ok(Value::Null),
        };
        Ok(Self::ToolResult {
            id: id.to_owned(),
            result,
        })
    }
}
