//! Where tool calls run. Tools belong to the device's data (tasks, notes…), so the server
//! never executes them itself: over the WebSocket the device runs them and answers; over
//! REST, write tools become actions and read tools answer from the request's context.

use async_trait::async_trait;
use serde_json::Value;

/// Runs one tool call.
///
/// Contract: `Ok(result)` is the tool's JSON result; `Err(message)` is an error the
/// *model* sees as the tool's result (a device error, a timeout, bad arguments) — it
/// never aborts the chat. `arguments` are already parsed and are a JSON object.
#[async_trait]
pub trait ToolExecutor: Send + Sync {
    /// Executes `name` with `arguments`; `call_id` is the model's id for the call.
    async fn execute(&self, call_id: &str, name: &str, arguments: &Value) -> Result<Value, String>;
}
