//! Chat agents (plan steps 3 and 6): the [`ChatAgent`] trait, the four built-in agents
//! with their 23 client-executed tools, and the [`AgentRegistry`] the orchestrator owns.
//!
//! An agent is a system prompt plus a set of tools. [`ChatAgent::handle`] composes the
//! messages (prompt, the device's context, earlier turns, the query) and runs the shared
//! [`tool_loop`](crate::chat::tool_loop). The tools act on data held by the device, so
//! the agent never executes them itself: a [`ToolExecutor`] does (the device over the
//! WebSocket, or [`RestExecutor`] for `POST /chat`).

mod builtin;
mod rest;
mod tools;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

pub use builtin::{
    BuiltinAgent, FRAGMENT_CONDUCT, FRAGMENT_CONFIDENTIAL, FRAGMENT_CONTEXT_INTRO,
    FRAGMENT_IDENTITY, FRAGMENT_TOOL_USE, SHARED_FRAGMENTS, compose_system_prompt,
};
pub use rest::RestExecutor;
pub use tools::{
    PROJECT_STATUSES, TASK_ORDERS, TASK_PRIORITIES, TASK_STATUSES, ToolEffect, ToolSpec,
    checkpoint_tools, note_tools, project_tools, task_tools,
};

use crate::chat::tool_loop::run_tool_loop;
pub use crate::chat::tool_loop::{AgentOutcome, ExecutedCall, MAX_TOOL_ITERATIONS};
use crate::chat::window::{ContextWindow, estimate_tokens, items_to_drop, message_tokens};
use crate::chat::{ChatRequest, ToolExecutor};
use crate::ports::llm::{ChatModel, LlmError, Message, Role, ToolDefinition};

/// Everything an agent's turn needs. Borrowed: the orchestrator owns the pieces.
///
/// Beyond the plan's `context` dict it carries the model, the BYOK key, the executor
/// for tool calls, and `now_ms`, which the model needs to turn "tomorrow" into a
/// timestamp.
#[derive(Clone, Copy)]
pub struct AgentContext<'a> {
    /// The model the agent talks to.
    pub model: &'a dyn ChatModel,
    /// Its name (`gpt-4o-mini`, `cerebras/llama3.1-8b`, …).
    pub model_name: &'a str,
    /// BYOK key passed on every model call (never stored or logged).
    pub api_key: Option<&'a str>,
    /// Runs the tool calls.
    pub executor: &'a dyn ToolExecutor,
    /// The request, for its message, context and scope.
    pub request: &'a ChatRequest,
    /// Answers of earlier agents in a pipeline (plan step 4 `previous_results`).
    pub previous_results: &'a [String],
    /// Receives reply text as it is produced (WebSocket `text_chunk`s).
    pub text_sink: Option<&'a tokio::sync::mpsc::UnboundedSender<String>>,
    /// Current time, ms since the Unix epoch.
    pub now_ms: i64,
    /// The most tokens each of the agent's model replies may have (`None`: the
    /// provider's default).
    pub max_tokens: Option<u32>,
    /// The model's context window every prompt is fitted to (`None`: no fitting).
    pub window: Option<ContextWindow>,
}

impl<'a> AgentContext<'a> {
    /// A context with the request's own `api_key`, no previous results and no sink.
    pub fn new(
        model: &'a dyn ChatModel,
        model_name: &'a str,
        executor: &'a dyn ToolExecutor,
        request: &'a ChatRequest,
        now_ms: i64,
    ) -> Self {
        Self {
            model,
            model_name,
            api_key: request.api_key.as_ref().map(|k| k.expose()),
            executor,
            request,
            previous_results: &[],
            text_sink: None,
            now_ms,
            max_tokens: None,
            window: None,
        }
    }
}

impl std::fmt::Debug for AgentContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No api_key and no request content: Debug output may end up in logs.
        f.debug_struct("AgentContext")
            .field("model_name", &self.model_name)
            .field("has_api_key", &self.api_key.is_some())
            .field("previous_results", &self.previous_results.len())
            .field("streaming", &self.text_sink.is_some())
            .field("now_ms", &self.now_ms)
            .field("max_tokens", &self.max_tokens)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

/// A chat agent: a prompt and a set of tools, run through the shared tool loop.
///
/// Contract: `name` is unique in a registry and stable (the router answers with it);
/// tool names are unique across all agents of a registry (the device runs tools by
/// name); `system_prompt` never leaves the server.
#[async_trait]
pub trait ChatAgent: Send + Sync {
    /// Unique name, e.g. `task_agent`.
    fn name(&self) -> &str;
    /// One line for the router's prompt.
    fn description(&self) -> &str;
    /// The composed system prompt (server-side only).
    fn system_prompt(&self) -> &str;
    /// The tools the model may call during this agent's turn, and no others.
    fn tools(&self) -> &[ToolSpec];
    /// Prompt pieces besides the shared fragments (for the sanitizer's fingerprints).
    fn prompt_fragments(&self) -> Vec<&str> {
        Vec::new()
    }
    /// Answers `query`: composes the messages and runs the tool loop with this agent's
    /// tools, at most [`MAX_TOOL_ITERATIONS`] rounds.
    async fn handle(&self, query: &str, ctx: &AgentContext<'_>) -> Result<AgentOutcome, LlmError> {
        let definitions: Vec<ToolDefinition> =
            self.tools().iter().map(ToolSpec::definition).collect();
        let messages = compose_messages(self.system_prompt(), query, &definitions, ctx)?;
        run_tool_loop(ctx, messages, self.tools(), MAX_TOOL_ITERATIONS).await
    }
}

/// Caps that keep the composed prompt bounded whatever the device sends.
const MAX_HISTORY_TURNS: usize = 20;
const MAX_TURN_CHARS: usize = 4_000;
const MAX_DOCUMENTS: usize = 8;
const MAX_DOCUMENT_CHARS: usize = 2_000;
const MAX_TASKS: usize = 50;
const MAX_FIELD_CHARS: usize = 4_000;

/// The messages of an agent turn: one system message (the prompt, then the device's
/// context summarised), earlier turns from `conversation_history` (user/assistant only,
/// the last 20), then `query` as the user message.
///
/// With `ctx.window` set, the prompt is fitted to it (rule and estimate in
/// [`crate::chat::window`]), reserving `ctx.max_tokens` for the reply and room for
/// `tools`. The system prompt, the time, the profile, the scope and `query` are never
/// dropped; the rest goes in this order until the prompt fits: history turns, oldest
/// first; relevant documents, then recent tasks, each list from its end (devices list
/// the most relevant and most recent first); results of earlier pipeline steps, oldest
/// first. If even the undroppable parts do not fit: [`LlmError::PromptTooLong`], before
/// any model call.
pub fn compose_messages(
    system_prompt: &str,
    query: &str,
    tools: &[ToolDefinition],
    ctx: &AgentContext<'_>,
) -> Result<Vec<Message>, LlmError> {
    let c = &ctx.request.context;
    let history: Vec<Message> = {
        let turns = &c.conversation_history;
        let start = turns.len().saturating_sub(MAX_HISTORY_TURNS);
        turns[start..]
            .iter()
            .filter_map(|turn| {
                let role = match turn.get("role").and_then(|r| r.as_str()) {
                    Some("user") => Role::User,
                    Some("assistant") => Role::Assistant,
                    _ => return None,
                };
                let content = turn.get("content").and_then(|c| c.as_str())?;
                (!content.trim().is_empty())
                    .then(|| message(role, truncate(content, MAX_TURN_CHARS)))
            })
            .collect()
    };
    let documents: Vec<String> = c
        .relevant_documents
        .iter()
        .take(MAX_DOCUMENTS)
        .map(|d| format!("\n- {}", truncate(d, MAX_DOCUMENT_CHARS)))
        .collect();
    let tasks: Vec<String> = c
        .recent_tasks
        .iter()
        .take(MAX_TASKS)
        .map(|t| format!("\n- {}", truncate(&t.to_string(), MAX_FIELD_CHARS)))
        .collect();
    let previous: Vec<String> = ctx
        .previous_results
        .iter()
        .enumerate()
        .map(|(i, r)| format!("\n{}. {}", i + 1, truncate(r, MAX_FIELD_CHARS)))
        .collect();

    let mut system = String::from(system_prompt);
    system.push_str("\n\n");
    system.push_str(&context_header(ctx));
    let query_message = message(Role::User, query.to_owned());

    // What may be dropped, in the order it is dropped.
    let mut order: Vec<(Slot, usize)> = Vec::new();
    order.extend(
        history
            .iter()
            .enumerate()
            .map(|(i, m)| (Slot::History(i), message_tokens(m))),
    );
    order.extend(
        documents
            .iter()
            .enumerate()
            .rev()
            .map(|(i, d)| (Slot::Document(i), estimate_tokens(d))),
    );
    order.extend(
        tasks
            .iter()
            .enumerate()
            .rev()
            .map(|(i, t)| (Slot::Task(i), estimate_tokens(t))),
    );
    order.extend(
        previous
            .iter()
            .enumerate()
            .map(|(i, p)| (Slot::Previous(i), estimate_tokens(p))),
    );
    let dropped = match ctx.window {
        None => 0,
        Some(window) => {
            let budget = window.prompt_budget(ctx.max_tokens, tools);
            // The section headings count as fixed, kept or not: a little conservative.
            let fixed = message_tokens(&message(Role::System, system.clone()))
                + estimate_tokens(&format!("{DOCUMENTS}{TASKS}{PREVIOUS}"))
                + message_tokens(&query_message);
            let costs: Vec<usize> = order.iter().map(|(_, cost)| *cost).collect();
            items_to_drop(budget, fixed, &costs)?
        }
    };
    let gone: std::collections::HashSet<Slot> =
        order[..dropped].iter().map(|(slot, _)| *slot).collect();
    if dropped > 0 {
        tracing::debug!(
            dropped,
            "prompt fitted to the context window: dropped the oldest history and context items"
        );
    }

    let section =
        |system: &mut String, heading: &str, items: &[String], slot: fn(usize) -> Slot| {
            let kept: Vec<&String> = items
                .iter()
                .enumerate()
                .filter(|(i, _)| !gone.contains(&slot(*i)))
                .map(|(_, item)| item)
                .collect();
            if !kept.is_empty() {
                system.push_str(heading);
                kept.into_iter().for_each(|item| system.push_str(item));
            }
        };
    section(&mut system, DOCUMENTS, &documents, Slot::Document);
    section(&mut system, TASKS, &tasks, Slot::Task);
    section(&mut system, PREVIOUS, &previous, Slot::Previous);

    let mut messages = vec![message(Role::System, system)];
    messages.extend(
        history
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !gone.contains(&Slot::History(*i)))
            .map(|(_, m)| m),
    );
    messages.push(query_message);
    Ok(messages)
}

/// A droppable item of an agent's prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Slot {
    History(usize),
    Document(usize),
    Task(usize),
    Previous(usize),
}

const DOCUMENTS: &str = "\n\nRelevant documents:";
const TASKS: &str = "\n\nRecent tasks:";
const PREVIOUS: &str = "\n\nResults from earlier steps of this request:";

fn message(role: Role, content: String) -> Message {
    Message {
        role,
        content,
        tool_calls: Vec::new(),
        tool_call_id: None,
    }
}

/// The part of the device's context that is never dropped: the time, the profile and
/// the scope (each capped).
fn context_header(ctx: &AgentContext<'_>) -> String {
    let c = &ctx.request.context;
    let mut out = format!(
        "{FRAGMENT_CONTEXT_INTRO}\n\nCurrent time: {} (Unix ms {}).",
        iso_utc(ctx.now_ms),
        ctx.now_ms
    );
    if !c.user_profile.is_empty() {
        let profile = serde_json::Value::Object(c.user_profile.clone()).to_string();
        out.push_str("\n\nUser profile: ");
        out.push_str(&truncate(&profile, MAX_FIELD_CHARS));
    }
    if let Some(scope) = &ctx.request.scope {
        out.push_str("\n\nThe user is looking at: ");
        out.push_str(&truncate(&scope.to_string(), MAX_FIELD_CHARS));
    }
    out
}

/// At most `max` characters, cut on a character boundary, marked with `…` when cut.
fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((cut, _)) => format!("{}…", &s[..cut]),
    }
}

/// `YYYY-MM-DDTHH:MMZ` for a ms timestamp (UTC), without a date crate.
pub(crate) fn iso_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Registering an agent failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegisterError {
    /// An agent with this name is already registered.
    #[error("an agent named `{0}` is already registered")]
    DuplicateAgent(String),
    /// Another agent already offers a tool with this name (the device runs tools by name).
    #[error("tool `{tool}` is already offered by agent `{owner}`")]
    DuplicateTool {
        /// The tool name.
        tool: String,
        /// The agent that has it.
        owner: String,
    },
}

/// Calling an agent by name failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallAgentError {
    /// No agent has this name.
    #[error("no agent named `{0}`")]
    UnknownAgent(String),
    /// The model call failed.
    #[error(transparent)]
    Model(#[from] LlmError),
}

/// The agents available to the orchestrator. A plain value the orchestrator owns (no
/// global): plugins add agents with [`AgentRegistry::register`].
#[derive(Clone, Default)]
pub struct AgentRegistry {
    agents: BTreeMap<String, Arc<dyn ChatAgent>>,
}

impl std::fmt::Debug for AgentRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRegistry")
            .field("agents", &self.agents.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl AgentRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The four built-in agents: `task_agent`, `checkpoint_agent`, `project_agent`,
    /// `note_agent`.
    pub fn with_builtin_agents() -> Self {
        let mut registry = Self::new();
        for agent in [
            BuiltinAgent::task_agent(),
            BuiltinAgent::checkpoint_agent(),
            BuiltinAgent::project_agent(),
            BuiltinAgent::note_agent(),
        ] {
            // The built-ins have distinct names and tools (checked by tests).
            let _ = registry.register(Arc::new(agent));
        }
        registry
    }

    /// Adds an agent. Fails, changing nothing, if its name or one of its tool names is
    /// taken.
    pub fn register(&mut self, agent: Arc<dyn ChatAgent>) -> Result<(), RegisterError> {
        let name = agent.name().to_owned();
        if self.agents.contains_key(&name) {
            return Err(RegisterError::DuplicateAgent(name));
        }
        for tool in agent.tools() {
            if let Some((owner, _)) = self.tool_spec(tool.name) {
                return Err(RegisterError::DuplicateTool {
                    tool: tool.name.to_owned(),
                    owner: owner.to_owned(),
                });
            }
        }
        self.agents.insert(name, agent);
        Ok(())
    }

    /// The agent called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn ChatAgent>> {
        self.agents.get(name).cloned()
    }

    /// `(name, description)` of every agent, sorted by name (for the router's prompt).
    pub fn list(&self) -> Vec<(String, String)> {
        self.agents
            .values()
            .map(|a| (a.name().to_owned(), a.description().to_owned()))
            .collect()
    }

    /// Runs agent `name` on `query` (also how one agent calls another).
    pub async fn call_agent(
        &self,
        name: &str,
        query: &str,
        ctx: &AgentContext<'_>,
    ) -> Result<AgentOutcome, CallAgentError> {
        let agent = self
            .agents
            .get(name)
            .ok_or_else(|| CallAgentError::UnknownAgent(name.to_owned()))?;
        Ok(agent.handle(query, ctx).await?)
    }

    /// Every system prompt and prompt fragment, deduplicated, for the sanitizer.
    pub fn all_prompt_texts(&self) -> Vec<String> {
        let mut texts: Vec<String> = SHARED_FRAGMENTS
            .iter()
            .chain(std::iter::once(&FRAGMENT_CONTEXT_INTRO))
            .map(|s| (*s).to_owned())
            .collect();
        for agent in self.agents.values() {
            texts.push(agent.system_prompt().to_owned());
            texts.extend(agent.prompt_fragments().into_iter().map(str::to_owned));
        }
        let mut seen = std::collections::HashSet::new();
        texts.retain(|t| !t.is_empty() && seen.insert(t.clone()));
        texts
    }

    /// The definitions of every agent's tools (agents in name order, tools in the
    /// agent's order).
    pub fn all_tool_definitions(&self) -> Vec<ToolDefinition> {
        self.agents
            .values()
            .flat_map(|a| a.tools().iter().map(ToolSpec::definition))
            .collect()
    }

    /// The tool called `name` and the name of the agent offering it.
    pub fn tool_spec(&self, name: &str) -> Option<(&str, &ToolSpec)> {
        self.agents.iter().find_map(|(agent, a)| {
            a.tools()
                .iter()
                .find(|t| t.name == name)
                .map(|t| (agent.as_str(), t))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_utc_formats_known_instants() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00Z");
        assert_eq!(iso_utc(951_782_400_000), "2000-02-29T00:00Z");
        assert_eq!(iso_utc(1_735_787_045_000), "2025-01-02T03:04Z");
        assert_eq!(iso_utc(-60_000), "1969-12-31T23:59Z");
    }

    #[test]
    fn truncate_cuts_on_char_boundaries() {
        assert_eq!(truncate("héllo", 10), "héllo");
        assert_eq!(truncate("héllo", 2), "hé…");
    }
}
