//! The AsyncAPI 3.0 document of the WebSockets, served at `/api/v1/asyncapi.json` and
//! printed by `adiuva asyncapi`.
//!
//! The schemas come from the frame types' poem-openapi derives ([`crate::frames`]), the
//! same code that writes the frames, so the document describes what is sent. Each socket
//! is one channel (`/api/v1/chat/stream`, `/api/v1/ws/device`: the entries of
//! [`CHANNELS`]) with a message per frame type and two operations: what the server
//! receives and what it sends. Both sockets have frames named alike (`tool_call`,
//! `error`, …): the device channel's messages are named `device.<type>` among the
//! document's components (the chat socket's keep their bare names).

use poem::{Response, handler};
use poem_openapi::registry::Registry;
use poem_openapi::types::Type;
use serde_json::{Map, Value, json};

use crate::api::API_PREFIX;
use crate::frames::device::{DeviceClientFrame, DeviceServerFrame};
use crate::frames::{ClientFrame, ServerFrame};

/// One socket: its address, what it is for, and its frames as `(message name, schema
/// name, summary)` per direction.
struct Channel {
    id: &'static str,
    /// Before each message's name among the document's components.
    prefix: &'static str,
    path: &'static str,
    description: &'static str,
    receives: &'static [(&'static str, &'static str, &'static str)],
    sends: &'static [(&'static str, &'static str, &'static str)],
}

const CHANNELS: &[Channel] = &[CHAT, DEVICE];

const CHAT: Channel = Channel {
    id: "chatStream",
    prefix: "",
    path: "/chat/stream",
    description: "Chat with tools that run on the device. Authenticate with \
        `Authorization: Bearer <access token>` or `?token=`. One chat at a time per socket; \
        each request is answered in its protocol (v1 `chat_request` → `final`, v2 \
        `user_request` → `ai_response` or `ask_user_clarification`). Messages over the size \
        limit close the socket with 1009; the server pings every 30 s.",
    receives: &[
        (
            "chat_request",
            "ClientFrame_ChatRequestFrame",
            "v1: start a chat (`type` may be omitted).",
        ),
        (
            "user_request",
            "ClientFrame_UserRequestFrame",
            "v2: start a chat, or answer the router's question.",
        ),
        (
            "tool_result",
            "ClientFrame_ToolResultFrame",
            "The device's answer to a `tool_call`.",
        ),
    ],
    sends: &[
        (
            "text_chunk",
            "ServerFrame_TextChunk",
            "A piece of the reply, as it is produced.",
        ),
        (
            "tool_call",
            "ServerFrame_ToolCall",
            "Run a tool on the device and answer with `tool_result`.",
        ),
        ("final", "ServerFrame_Final", "v1: the chat's last frame."),
        (
            "ai_response",
            "ServerFrame_AiResponse",
            "v2: the chat's last frame.",
        ),
        (
            "ask_user_clarification",
            "ServerFrame_AskUserClarification",
            "v2: the router asks a question; the next `user_request` answers it.",
        ),
        (
            "error",
            "ServerFrame_ErrorFrame",
            "A refused frame or a failed chat.",
        ),
    ],
};

/// `pong` goes both ways with one shape, so it is one message of the channel.
const PONG: &str = "The answer to a `ping` (`{\"type\": \"pong\"}`).";

const DEVICE: Channel = Channel {
    id: "deviceSocket",
    prefix: "device.",
    path: "/ws/device",
    description: "The desktop app's persistent socket: the server reaches the device \
        through it from any instance. Authenticate with `Authorization: Bearer <access \
        token>` or `?token=` (checked at the upgrade; the socket is closed when its sign-in \
        session is revoked or the account deleted). The first frame is \
        `device_hello` within 10 s (else `error` `hello_required` and a close, 1008), \
        answered with `hello_ack`; a second socket with the same `device_id` replaces the \
        first, which is closed with a reason. Calls (`tool_call`, `data_request`) are \
        answered with the same `id` (`tool_result`, `data_response`) within the tool \
        timeout, and are never stored. **Exactly once:** queued frames (`agent_trigger`, \
        `notification`) are stored until acked and re-sent after every reconnect until \
        the device acks them; the device acks a frame after processing it and drops any \
        frame whose `id` it has already processed. A queue is bounded (its oldest frames \
        expire first, and by age); `hello_ack.expired` counts those the device missed. \
        Malformed frames get an `error` frame and the socket stays usable; messages over \
        the size limit close it with 1009; the server pings every 30 s and closes a socket \
        silent for the pong timeout (1001). **Agents:** a local agent's run arrives as \
        `agent_trigger` (`input`: `agent_type`, `data_types`, `filters`, `max_items`); the \
        device acks it and answers with `data_response` whose `id` is the trigger's \
        `run_id` and whose `data` is `{\"items\": [{\"id\", \"type\", \"title\", …}]}` (or \
        `error`), within `agent_local_timeout_secs`. Every agent run's results (local or \
        cloud) arrive as `notification` of `kind` `agent_result`, `payload` `{agent_id, \
        run_id, agent_type, produces, results: [{type: task|note, title, notes, \
        source_id?}]}`, sealed while queued.",
    receives: &[
        (
            "device_hello",
            "DeviceClientFrame_DeviceHello",
            "The first frame: who the device is.",
        ),
        (
            "tool_result",
            "DeviceClientFrame_ToolResultFrame",
            "The answer to a `tool_call`.",
        ),
        (
            "data_response",
            "DeviceClientFrame_DataResponse",
            "The answer to a `data_request`, or to an `agent_trigger` (then `id` is the trigger's `run_id`).",
        ),
        (
            "ack",
            "DeviceClientFrame_Ack",
            "A queued frame was processed: stop re-sending it.",
        ),
        ("ping", "DeviceClientFrame_Ping", "Answered with `pong`."),
        ("pong", "DeviceClientFrame_Pong", PONG),
    ],
    sends: &[
        (
            "hello_ack",
            "DeviceServerFrame_HelloAck",
            "The answer to `device_hello`: the session, the clock, the queue.",
        ),
        (
            "tool_call",
            "DeviceServerFrame_DeviceToolCall",
            "Run a tool and answer with `tool_result`.",
        ),
        (
            "data_request",
            "DeviceServerFrame_DataRequest",
            "Send local data; answer with `data_response`.",
        ),
        (
            "agent_trigger",
            "DeviceServerFrame_AgentTrigger",
            "Run a local agent: ack it, then answer with `data_response` whose `id` is its `run_id` (queued: drop it if already processed).",
        ),
        (
            "notification",
            "DeviceServerFrame_Notification",
            "Show or apply something; `kind` `agent_result` carries an agent run's results (queued: ack it, drop it if already processed).",
        ),
        ("pong", "DeviceServerFrame_Pong", PONG),
        (
            "error",
            "DeviceServerFrame_ErrorFrame",
            "A refused frame or hello.",
        ),
    ],
};

/// The document as JSON.
pub fn asyncapi_document() -> Value {
    let mut registry = Registry::new();
    ServerFrame::register(&mut registry);
    ClientFrame::register(&mut registry);
    DeviceServerFrame::register(&mut registry);
    DeviceClientFrame::register(&mut registry);
    let schemas: Map<String, Value> = registry
        .schemas
        .iter()
        .map(|(name, schema)| {
            let v = serde_json::to_value(schema).unwrap_or(Value::Null);
            (name.clone(), json_schema(v))
        })
        .collect();
    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();
    for c in CHANNELS {
        let mut channel_messages = Map::new();
        for (direction, frames) in [("receive", c.receives), ("send", c.sends)] {
            let mut refs = Vec::new();
            for (name, schema, summary) in frames {
                let key = format!("{}{name}", c.prefix);
                messages.insert(
                    key.clone(),
                    json!({
                        "name": name,
                        "title": name,
                        "summary": summary,
                        "contentType": "application/json",
                        "payload": {"$ref": format!("#/components/schemas/{schema}")},
                    }),
                );
                channel_messages.insert(
                    (*name).to_owned(),
                    json!({"$ref": format!("#/components/messages/{key}")}),
                );
                refs.push(json!({"$ref": format!("#/channels/{}/messages/{name}", c.id)}));
            }
            let verb = if direction == "send" {
                "Send"
            } else {
                "Receive"
            };
            operations.insert(
                format!("{}{verb}", c.id),
                json!({
                    "action": direction,
                    "channel": {"$ref": format!("#/channels/{}", c.id)},
                    "summary": if direction == "send" { "Frames the server sends." } else { "Frames the server receives." },
                    "messages": refs,
                }),
            );
        }
        channels.insert(
            c.id.to_owned(),
            json!({
                "address": format!("{API_PREFIX}{}", c.path),
                "description": c.description,
                "messages": channel_messages,
            }),
        );
    }
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Adiuva WebSockets",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every frame of the Adiuva sockets: JSON text messages tagged by \
                `type`. The HTTP API is in `/api/v1/openapi.json`.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    })
}

/// The document as JSON text, exactly as served.
pub fn asyncapi_json() -> String {
    asyncapi_document().to_string()
}

/// Rewrites a poem-openapi (OpenAPI 3.0) schema as an AsyncAPI (JSON Schema) one: the
/// discriminator is a property name there, and an optional property may be `null` on the
/// wire (poem writes `None` as `null` unless the field skips it), which OpenAPI 3.0 says
/// with `nullable` and JSON Schema with a `null` type.
fn json_schema(v: Value) -> Value {
    match v {
        Value::Object(mut map) => {
            if let Some(name) = map
                .get("discriminator")
                .and_then(|d| d.get("propertyName"))
                .cloned()
            {
                map.insert("discriminator".into(), name);
            }
            let required: Vec<Value> = map
                .get("required")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if let Some(Value::Object(props)) = map.get_mut("properties") {
                for (name, prop) in props.iter_mut() {
                    if !required.contains(&Value::String(name.clone())) {
                        *prop = or_null(std::mem::take(prop));
                    }
                }
            }
            let nullable = map.remove("nullable") == Some(Value::Bool(true));
            let map: Map<String, Value> = map
                .into_iter()
                .map(|(k, x)| {
                    // Property names and enum values are data, not schemas.
                    if k == "enum" || k == "required" {
                        (k, x)
                    } else {
                        (k, json_schema(x))
                    }
                })
                .collect();
            if nullable {
                or_null(Value::Object(map))
            } else {
                Value::Object(map)
            }
        }
        Value::Array(items) => Value::Array(items.into_iter().map(json_schema).collect()),
        other => other,
    }
}

/// `schema`, or `null`.
fn or_null(schema: Value) -> Value {
    match schema {
        Value::Object(mut map) if map.get("type").is_some_and(Value::is_string) => {
            let ty = map.remove("type").unwrap_or(Value::Null);
            map.insert("type".into(), json!([ty, "null"]));
            Value::Object(map)
        }
        // `{}` (any JSON) already admits null.
        Value::Object(map) if map.is_empty() => Value::Object(map),
        other => json!({"anyOf": [other, {"type": "null"}]}),
    }
}

/// `GET /api/v1/asyncapi.json`: public, like the OpenAPI document.
#[handler]
pub async fn asyncapi_endpoint() -> Response {
    Response::builder()
        .content_type("application/json; charset=utf-8")
        .body(asyncapi_json())
}
