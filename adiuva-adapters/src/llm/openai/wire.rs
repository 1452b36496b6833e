//! OpenAI's wire format: the chat and embeddings requests we send and the answers (whole
//! or streamed chunks) we read. Kept apart from the adapter so the mapping between port
//! types and JSON is in one place.

use adiuva_core::ports::llm::{
    Completion, CompletionRequest, LlmError, Message, Role, ToolCall, ToolDefinition,
};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Route;

// Requests

#[derive(Serialize)]
pub(super) struct WireRequest<'a> {
    pub(super) model: &'a str,
    pub(super) messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) temperature: Option<f32>,
    /// The output limit, for every OpenAI-compatible server (see the module docs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) max_tokens: Option<u32>,
    /// The output limit, for OpenAI's own API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(super) stream: bool,
}

#[derive(Serialize)]
pub(super) struct WireMessage<'a> {
    pub(super) role: Role,
    /// `null` only for an assistant message that just calls tools, as OpenAI writes it.
    pub(super) content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) tool_calls: Vec<WireToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tool_call_id: Option<&'a str>,
}

#[derive(Serialize)]
pub(super) struct WireToolCall<'a> {
    pub(super) id: &'a str,
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) function: WireFunctionCall<'a>,
}

#[derive(Serialize)]
pub(super) struct WireFunctionCall<'a> {
    pub(super) name: &'a str,
    pub(super) arguments: &'a str,
}

#[derive(Serialize)]
pub(super) struct WireTool<'a> {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) function: WireFunctionDef<'a>,
}

#[derive(Serialize)]
pub(super) struct WireFunctionDef<'a> {
    pub(super) name: &'a str,
    pub(super) description: &'a str,
    pub(super) parameters: &'a Value,
}

pub(super) fn wire_message(m: &Message) -> WireMessage<'_> {
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

pub(super) fn wire_tool(t: &ToolDefinition) -> WireTool<'_> {
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
pub(super) fn is_openai_api(base: &str) -> bool {
    reqwest::Url::parse(base)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| h.eq_ignore_ascii_case("api.openai.com"))
        })
        .unwrap_or(false)
}

pub(super) fn chat_body(
    req: &CompletionRequest,
    route: &Route<'_>,
    stream: bool,
) -> Result<Bytes, LlmError> {
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

// Answers

#[derive(Deserialize)]
pub(super) struct WireCompletion {
    #[serde(default)]
    pub(super) choices: Vec<WireChoice>,
}

#[derive(Deserialize)]
pub(super) struct WireChoice {
    pub(super) message: WireAnswer,
}

#[derive(Deserialize)]
pub(super) struct WireAnswer {
    #[serde(default)]
    pub(super) content: Option<String>,
    #[serde(default)]
    pub(super) tool_calls: Option<Vec<WireAnswerCall>>,
}

#[derive(Deserialize)]
pub(super) struct WireAnswerCall {
    #[serde(default)]
    pub(super) id: Option<String>,
    pub(super) function: WireAnswerFunction,
}

#[derive(Deserialize)]
pub(super) struct WireAnswerFunction {
    pub(super) name: String,
    /// A JSON string per OpenAI; some local servers send the object itself.
    #[serde(default)]
    pub(super) arguments: Value,
}

pub(super) fn arguments_text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub(super) fn parse_completion(body: &[u8]) -> Result<Completion, LlmError> {
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
pub(super) struct WireChunk {
    #[serde(default)]
    pub(super) choices: Vec<WireChunkChoice>,
    #[serde(default)]
    pub(super) error: Option<Value>,
}

#[derive(Deserialize)]
pub(super) struct WireChunkChoice {
    #[serde(default)]
    pub(super) delta: Option<WireDelta>,
    #[serde(default)]
    pub(super) finish_reason: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct WireDelta {
    #[serde(default)]
    pub(super) content: Option<String>,
    #[serde(default)]
    pub(super) tool_calls: Option<Vec<WireDeltaCall>>,
}

#[derive(Deserialize)]
pub(super) struct WireDeltaCall {
    #[serde(default)]
    pub(super) index: Option<usize>,
    #[serde(default)]
    pub(super) id: Option<String>,
    #[serde(default)]
    pub(super) function: Option<WireDeltaFunction>,
}

#[derive(Deserialize)]
pub(super) struct WireDeltaFunction {
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) arguments: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct WireEmbeddings {
    pub(super) data: Vec<WireEmbedding>,
}

#[derive(Deserialize)]
pub(super) struct WireEmbedding {
    pub(super) index: usize,
    pub(super) embedding: Vec<f32>,
}
