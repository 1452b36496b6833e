//! The frames of `WS /api/v1/ws/device`, both directions, as typed values.
//!
//! Like the chat socket's ([`super`]): the socket writes [`DeviceServerFrame`]s with
//! poem-openapi's `ToJSON`, and the AsyncAPI document takes their schemas from the same
//! derives. The rules (what a frame means, when it is sent) are core's
//! ([`adiuva_core::devices`]); this module converts core's [`ToDevice`] into frames and
//! parses a device's text into core's [`FromDevice`] and [`Hello`] with
//! [`DeviceIncoming::parse`], which names what is wrong with a refused frame.
//!
//! The exactly-once rule: `agent_trigger` and `notification` are queued durably and
//! re-sent after every reconnect until the device `ack`s them; the device acks after
//! processing a frame and drops any frame whose `id` it has already processed.

use std::collections::BTreeMap;

use adiuva_core::devices::{FromDevice, Hello, ToDevice};
use poem_openapi::types::{ParseFromJSON as _, ToJSON as _};
use poem_openapi::{Object, Union};
use serde_json::Value;

use super::{ErrorFrame, Refusal, ToolResultFrame, bounded};

// ---- server → device ----------------------------------------------------------------

/// The answer to `device_hello`, always the server's first frame.
#[derive(Debug, Object)]
pub struct HelloAck {
    /// This socket's session (a UUID).
    pub session_id: String,
    /// The server's clock, ms since the Unix epoch.
    pub server_time: i64,
    /// Queued frames (`agent_trigger`, `notification`) about to be delivered.
    pub pending: u64,
    /// Queued frames that expired (the queue's bound or age) since the device's last hello.
    pub expired: u64,
}

/// Run a tool on the device; answer `tool_result` with the same `id` (within the tool
/// timeout, else the caller gets an error result).
#[derive(Debug, Object)]
pub struct DeviceToolCall {
    /// The call's id.
    pub id: String,
    /// The tool (`create_task`, `list_notes`, …).
    pub name: String,
    /// Its arguments (sanitized).
    pub arguments: BTreeMap<String, Value>,
}

/// Send local data; answer `data_response` with the same `id`.
#[derive(Debug, Object)]
pub struct DataRequest {
    /// The request's id.
    pub id: String,
    /// What kinds of data (`tasks`, `files`, …).
    pub data_types: Vec<String>,
    /// Which (kind-specific).
    pub filter: BTreeMap<String, Value>,
}

/// Run a local agent: read the data `input` asks for and answer with `data_response`
/// whose `id` is `run_id` and whose `data` is `{"items": [{"id", "type", "title", …}]}`.
/// Queued: `ack` it after processing; drop it if its `id` was processed.
#[derive(Debug, Object)]
pub struct AgentTrigger {
    /// The frame's id (a UUID).
    pub id: String,
    /// The agent config.
    pub agent_id: String,
    /// The run (the `id` of the `data_response` that answers).
    pub run_id: String,
    /// What the run needs: `agent_type`, `data_types`, `filters`, `max_items`.
    pub input: Value,
}

/// Something to show or apply. Queued: `ack` it after processing; drop it if its `id`
/// was processed.
#[derive(Debug, Object)]
pub struct Notification {
    /// The frame's id (a UUID).
    pub id: String,
    /// What it is (`agent_result`, `message`, …).
    pub kind: String,
    /// Its content. `agent_result`: `{agent_id, run_id, agent_type, produces, results:
    /// [{type: task|note, title, notes, source_id?}]}`.
    pub payload: Value,
}

/// The answer to `ping` (or the device's answer to a server `ping`); no fields.
#[derive(Debug, Object)]
pub struct Pong {}

/// A keep-alive the other side answers with `pong`; no fields.
#[derive(Debug, Object)]
pub struct Ping {}

/// Every frame the server sends on `/ws/device`, tagged by `type`.
#[derive(Debug, Union)]
#[oai(discriminator_name = "type", one_of)]
pub enum DeviceServerFrame {
    /// `hello_ack`.
    #[oai(mapping = "hello_ack")]
    HelloAck(HelloAck),
    /// `tool_call`.
    #[oai(mapping = "tool_call")]
    ToolCall(DeviceToolCall),
    /// `data_request`.
    #[oai(mapping = "data_request")]
    DataRequest(DataRequest),
    /// `agent_trigger` (queued).
    #[oai(mapping = "agent_trigger")]
    AgentTrigger(AgentTrigger),
    /// `notification` (queued).
    #[oai(mapping = "notification")]
    Notification(Notification),
    /// `pong`.
    #[oai(mapping = "pong")]
    Pong(Pong),
    /// `error`.
    #[oai(mapping = "error")]
    Error(ErrorFrame),
}

impl DeviceServerFrame {
    /// An error frame; its detail is cut to [`super::MAX_DETAIL_CHARS`].
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

impl From<&ToDevice> for DeviceServerFrame {
    fn from(frame: &ToDevice) -> Self {
        match frame.clone() {
            ToDevice::HelloAck {
                session_id,
                server_time,
                pending,
                expired,
            } => Self::HelloAck(HelloAck {
                session_id: session_id.to_string(),
                server_time,
                pending,
                expired,
            }),
            ToDevice::ToolCall {
                id,
                name,
                arguments,
            } => Self::ToolCall(DeviceToolCall {
                id,
                name,
                arguments: arguments.into_iter().collect(),
            }),
            ToDevice::DataRequest {
                id,
                data_types,
                filter,
            } => Self::DataRequest(DataRequest {
                id,
                data_types,
                filter: filter.into_iter().collect(),
            }),
            ToDevice::AgentTrigger {
                id,
                agent_id,
                run_id,
                input,
            } => Self::AgentTrigger(AgentTrigger {
                id,
                agent_id,
                run_id,
                input,
            }),
            ToDevice::Notification { id, kind, payload } => {
                Self::Notification(Notification { id, kind, payload })
            }
        }
    }
}

// ---- device → server ----------------------------------------------------------------

/// The device's first frame: who it is. Answered with `hello_ack`, or an `error`
/// (`validation_error` naming the field) after which the device may say hello again
/// until the hello deadline (10 s after the upgrade).
#[derive(Debug, Object)]
pub struct DeviceHello {
    /// Chosen by the device, stable across restarts: 1–128 characters of
    /// `A–Z a–z 0–9 . _ : -`. A second socket with the same id replaces the first.
    pub device_id: String,
    /// Display name, 1–200 characters.
    pub name: String,
    /// `macos`, `windows`, `linux`, … (at most 64 characters).
    pub platform: String,
    /// The app's version (at most 64 characters).
    pub app_version: String,
    /// What it can do (`tools`, `files`, …): at most 32, each at most 64 characters.
    pub capabilities: Option<Vec<String>>,
}

/// The device's answer to a `data_request` or an `agent_trigger`: `data`, or `error`
/// when it cannot answer.
#[derive(Debug, Object)]
pub struct DataResponse {
    /// The `id` of the `data_request`, or the `run_id` of the `agent_trigger`.
    pub id: String,
    /// The data.
    pub data: Option<Value>,
    /// Why there is none.
    pub error: Option<String>,
}

/// A queued frame (`agent_trigger`, `notification`) was processed: the server stops
/// re-sending it.
#[derive(Debug, Object)]
pub struct Ack {
    /// The frame's `id`.
    pub id: String,
}

/// Every frame a device sends on `/ws/device`, tagged by `type`.
#[derive(Debug, Union)]
#[oai(discriminator_name = "type", one_of)]
pub enum DeviceClientFrame {
    /// `device_hello` (first).
    #[oai(mapping = "device_hello")]
    DeviceHello(DeviceHello),
    /// `tool_result`.
    #[oai(mapping = "tool_result")]
    ToolResult(ToolResultFrame),
    /// `data_response`.
    #[oai(mapping = "data_response")]
    DataResponse(DataResponse),
    /// `ack`.
    #[oai(mapping = "ack")]
    Ack(Ack),
    /// `ping` (answered with `pong`).
    #[oai(mapping = "ping")]
    Ping(Ping),
    /// `pong`.
    #[oai(mapping = "pong")]
    Pong(Pong),
}

/// A device frame as the socket reads it.
#[derive(Debug)]
pub enum DeviceIncoming {
    /// `device_hello`.
    Hello(Hello),
    /// An answer or an ack, for the hub.
    Frame(FromDevice),
    /// `ping`: answer `pong`.
    Ping,
    /// `pong`: nothing to do (it proves the device alive).
    Pong,
}

const TYPES: &str = "device_hello, tool_result, data_response, ack, ping, pong";

impl DeviceIncoming {
    /// Reads one text frame.
    pub fn parse(text: &str) -> Result<Self, Refusal> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| ("malformed_frame", format!("not JSON: {e}")))?;
        let Value::Object(map) = &value else {
            return Err(("malformed_frame", "a frame must be a JSON object".into()));
        };
        let kind = match map.get("type") {
            Some(Value::String(t)) => t.as_str(),
            Some(_) => {
                return Err((
                    "unknown_frame_type",
                    format!("`type` must be one of {TYPES}"),
                ));
            }
            None => return Err(("malformed_frame", format!("a frame needs `type` ({TYPES})"))),
        };
        let id = || match map.get("id") {
            Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
            _ => Err(("malformed_frame", format!("{kind} needs a string `id`"))),
        };
        // A device that sends a non-string error still failed: its error is shown as JSON.
        let outcome = |field: &str| match (map.get("error"), map.get(field)) {
            (Some(e), _) if !e.is_null() => {
                Err(e.as_str().map_or_else(|| e.to_string(), str::to_owned))
            }
            (_, Some(r)) => Ok(r.clone()),
            _ => Ok(Value::Null),
        };
        Ok(match kind {
            "device_hello" => {
                let hello = DeviceHello::parse_from_json(Some(value.clone())).map_err(|e| {
                    (
                        "validation_error",
                        format!("not a device_hello: {}", e.message()),
                    )
                })?;
                Self::Hello(Hello {
                    device_id: hello.device_id,
                    name: hello.name,
                    platform: hello.platform,
                    app_version: hello.app_version,
                    capabilities: hello.capabilities.unwrap_or_default(),
                })
            }
            "tool_result" => Self::Frame(FromDevice::ToolResult {
                id: id()?,
                outcome: outcome("result"),
            }),
            "data_response" => Self::Frame(FromDevice::DataResponse {
                id: id()?,
                outcome: outcome("data"),
            }),
            "ack" => Self::Frame(FromDevice::Ack { id: id()? }),
            "ping" => Self::Ping,
            "pong" => Self::Pong,
            other => {
                return Err((
                    "unknown_frame_type",
                    format!("'{other}' is not a frame a device sends ({TYPES})"),
                ));
            }
        })
    }
}
