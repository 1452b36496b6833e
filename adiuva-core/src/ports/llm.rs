//! Language models, normalised. Each provider's wire format stays inside its adapter.

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

/// What a model call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    /// No model or key is configured for this role.
    #[error("no language model is configured: {0}")]
    NotConfigured(String),
    /// The provider refused the key.
    #[error("the model provider rejected the API key")]
    Unauthorized,
    /// The provider is rate limiting us even after retries.
    #[error("the model provider is rate limiting")]
    RateLimited,
    /// Timeout, connection failure or 5xx after retries.
    #[error("the model provider is unavailable: {0}")]
    Unavailable(String),
    /// The reply could not be understood.
    #[error("unexpected reply from the model provider: {0}")]
    Protocol(String),
    /// The provider refused the prompt as longer than the model's context window. Never
    /// retried: the same prompt fails the same way.
    #[error("the model provider refused the prompt as too long for its context window: {0}")]
    ContextLengthExceeded(String),
    /// The provider refused the request as invalid (HTTP 400, 404 unknown model, 422, …).
    /// Never retried: the same request fails the same way.
    #[error("the model provider rejected the request: {0}")]
    Rejected(String),
    /// Raised before any call, by the chat's prompt fitting (`chat::window`): even
    /// without any droppable context, the parts a prompt cannot lose (instructions, tool
    /// definitions, the user's message, the room kept for the answer) need more tokens
    /// than the configured context window has.
    #[error(
        "the prompt needs about {needed} tokens, but the model's context window leaves {available} for it"
    )]
    PromptTooLong {
        /// Estimated tokens of the parts that cannot be dropped.
        needed: usize,
        /// Tokens the window leaves for the prompt.
        available: usize,
    },
}

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Instructions.
    System,
    /// The person.
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
}

/// A tool call the model asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's call id, echoed in the result.
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Arguments as the model wrote them (JSON text, possibly malformed).
    pub arguments: String,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Speaker.
    pub role: Role,
    /// Text.
    pub content: String,
    /// Calls made by an assistant message.
    pub tool_calls: Vec<ToolCall>,
    /// For a tool message: which call it answers.
    pub tool_call_id: Option<String>,
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    /// Name.
    pub name: String,
    /// What it does (shown to the model only).
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: serde_json::Value,
}

/// A completion request.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    /// Model name (`gpt-4o-mini`, `cerebras/llama3.1-8b`, …).
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Tools on offer.
    pub tools: Vec<ToolDefinition>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// The most tokens the reply may have (`None`: the provider's default, which for a
    /// local server may be "until the context is full"). Every chat call sets it.
    pub max_tokens: Option<u32>,
    /// A per-request key (BYOK). Used for this call only; never stored or logged.
    pub api_key: Option<String>,
}

/// A whole reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Text (may be empty when only tools were called).
    pub content: String,
    /// Tool calls, in order.
    pub tool_calls: Vec<ToolCall>,
}

/// A piece of a streamed reply.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// More text.
    Text(String),
    /// More of tool call number `index`: the id and name arrive first, arguments in pieces.
    ToolCallDelta {
        /// Position of the call in the reply.
        index: usize,
        /// Set on the first delta.
        id: Option<String>,
        /// Set on the first delta.
        name: Option<String>,
        /// A piece of the arguments text.
        arguments: String,
    },
}

/// A chat model.
///
/// Contract: `complete` and `stream` describe the same reply (concatenating a stream's
/// text and per-index argument pieces gives the `Completion`); retries of transient
/// failures (429, 502/503/504, connection errors) are the adapter's business and invisible
/// here, and a failure that cannot change on retry ([`LlmError::ContextLengthExceeded`],
/// [`LlmError::Rejected`], [`LlmError::Unauthorized`]) is returned at once; the reply
/// stops after `max_tokens` tokens; `api_key` overrides the server's key for that
/// call only and is never persisted or logged.
#[async_trait]
pub trait ChatModel: Send + Sync {
    /// One whole reply.
    async fn complete(&self, req: CompletionRequest) -> Result<Completion, LlmError>;
    /// The reply as it is produced.
    async fn stream(
        &self,
        req: CompletionRequest,
    ) -> Result<BoxStream<'static, Result<StreamEvent, LlmError>>, LlmError>;
}

/// Turns texts into vectors.
///
/// Contract: returns one vector per input, **in input order**, all of one dimension.
#[async_trait]
pub trait Embedder: Send + Sync {
    /// The dimension of every vector returned.
    fn dimension(&self) -> usize;
    /// Embeds `texts`.
    async fn embed(
        &self,
        texts: &[String],
        api_key: Option<&str>,
    ) -> Result<Vec<Vec<f32>>, LlmError>;
}
