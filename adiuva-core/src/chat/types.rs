//! The chat wire types the desktop app speaks (plan step 2, 23), as plain serde types.
//! The server mirrors them in its OpenAPI schema.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `direct`: answer now; `plan`: return an [`ExecutionPlan`] of template ids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionMode {
    /// Answer the message.
    #[default]
    Direct,
    /// Return a plan the client executes.
    Plan,
}

/// What the device sends along with a message (plan `ChatContext`). Used for this
/// request and dropped; never stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChatContext {
    /// Free-form profile facts.
    pub user_profile: serde_json::Map<String, Value>,
    /// Snippets the device found relevant.
    pub relevant_documents: Vec<String>,
    /// Recent tasks as the device stores them.
    pub recent_tasks: Vec<Value>,
    /// Earlier turns: `{"role": "user"|"assistant", "content": "…"}`.
    pub conversation_history: Vec<Value>,
    /// Anything else the device sends (projects, notes, checkpoints…), kept as given.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

/// A chat request (plan `ChatRequest` + steps 17 and 23). Its `Debug` never shows
/// `api_key`, and serializing it leaves the key out.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The user's message.
    pub message: String,
    /// The device's context.
    #[serde(default)]
    pub context: ChatContext,
    /// Direct answer or plan.
    #[serde(default)]
    pub execution_mode: ExecutionMode,
    /// BYOK: the user's own model key for this request only. Never stored or logged.
    #[serde(
        default,
        skip_serializing,
        deserialize_with = "crate::domain::ByokKey::deserialize_optional"
    )]
    pub api_key: Option<crate::domain::ByokKey>,
    /// `home` (default) or `popup` (v2).
    #[serde(default)]
    pub source: Option<String>,
    /// The popup's scope (v2), e.g. `{"project_id": "…"}`.
    #[serde(default)]
    pub scope: Option<Value>,
}

impl std::fmt::Debug for ChatRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatRequest")
            .field("message", &self.message)
            .field("context", &self.context)
            .field("execution_mode", &self.execution_mode)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("source", &self.source)
            .field("scope", &self.scope)
            .finish()
    }
}

impl std::fmt::Display for ExecutionMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Direct => "direct",
            Self::Plan => "plan",
        })
    }
}

/// What a client should do (plan `PlanAction`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanAction {
    /// `create_record`, `update_record`, `delete_record`, `index_document`,
    /// `send_notification` or `call_agent`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The client table (`tasks`, `task_comments`, `checkpoints`, `projects`, `notes`).
    #[serde(default)]
    pub table: Option<String>,
    /// The record's fields (or the id to delete).
    #[serde(default)]
    pub data: Option<Value>,
    /// For `call_agent`.
    #[serde(default)]
    pub agent: Option<String>,
}

/// A direct answer (plan `ChatResponse`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The reply text (sanitized).
    pub response: String,
    /// What the client should apply.
    pub actions: Vec<PlanAction>,
}

/// One step of a plan (plan `PlanStep`): template ids, never prompt text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanStep {
    /// What the step does (`llm`, `create_record`, `list_records`, …).
    pub action: String,
    /// A server-side template id for `llm` steps.
    #[serde(default)]
    pub prompt_template: Option<String>,
    /// Template variables or action parameters.
    #[serde(default)]
    pub variables: Option<Value>,
    /// Takes its input from this earlier step (0-based).
    #[serde(default)]
    pub data_from_step: Option<i64>,
}

/// A plan (plan `ExecutionPlan`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionPlan {
    /// The agent the plan belongs to.
    pub agent: String,
    /// Steps in order.
    pub steps: Vec<PlanStep>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byok_key_is_never_printed_or_serialized() {
        let req: ChatRequest =
            serde_json::from_str(r#"{"message": "hi", "api_key": "sk-secret-123"}"#)
                .expect("parse");
        assert_eq!(
            req.api_key.as_ref().map(|k| k.expose()),
            Some("sk-secret-123")
        );
        assert!(!format!("{req:?}").contains("sk-secret-123"));
        assert!(
            !serde_json::to_string(&req)
                .expect("json")
                .contains("sk-secret-123")
        );
    }
}
