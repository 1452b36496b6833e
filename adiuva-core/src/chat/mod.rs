//! Chat: the orchestrator, its agents and their client-executed tools, plans and
//! playbooks, and the sanitizer every reply passes through. Prompts live here and never
//! leave the server.
//!
//! Shape of a chat: the orchestrator classifies the message with the router model,
//! hands it to one agent (or a pipeline of agents), and each agent runs the shared tool
//! loop ([`tool_loop`]) with its tools; a tool call is executed by a [`ToolExecutor`]:
//! on the device over the WebSocket, or (REST) turned into a `PlanAction` / answered
//! from the request's context.

pub mod agents;
pub mod directives;
pub mod executor;
pub mod orchestrator;
pub mod plans;
pub mod sanitizer;
pub mod service;
pub mod tool_loop;
pub mod types;
pub mod window;

pub use executor::ToolExecutor;
pub use service::{
    ChatEvent, ChatPeer, ChatService, ChatSession, FinalReply, Protocol, RestAnswer, ToolCall,
};
pub use types::{
    ChatContext, ChatRequest, ChatResponse, ExecutionMode, ExecutionPlan, PlanAction, PlanStep,
};
