//! The orchestrator (plan step 4): classify the message with the router model, run one
//! agent or a pipeline of agents, synthesise, and sanitize every text that leaves.
//!
//! The transport decides where tools run: the WebSocket passes an executor that asks the
//! device; REST passes a [`RestExecutor`] that turns writes into actions.
//!
//! Past the ~600-line rule: routing, the single-agent and pipeline paths, plan mode, v2
//! clarification and the one assembly point of the reply share the turn's deadline and
//! limits; split apart, each piece would need all of them.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;

use super::ToolExecutor;
use super::agents::{AgentContext, AgentOutcome, AgentRegistry, ToolEffect};
use super::directives::{self, Directives};
use super::plans::{PlanCache, Playbooks, PromptTemplateRegistry};
use super::sanitizer::{Sanitizer, StreamSanitizer};
use super::types::{ChatRequest, ChatResponse, ExecutionMode, ExecutionPlan, PlanAction};
use super::window::{ContextWindow, estimate_tokens, items_to_drop, message_tokens, tools_tokens};
use crate::error::Error;
use crate::ports::llm::{ChatModel, CompletionRequest, LlmError, Message, Role, ToolDefinition};
use crate::ports::{Clock, SystemClock};

/// The agent a message goes to when the router's answer names none.
pub const FALLBACK_AGENT: &str = "task_agent";

/// The model of every part unless configured (cheap and fast); the server's
/// `router_model`, `agent_model` and `synthesis_model` default to it.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";
/// Most tokens of an agent reply and of a synthesis unless configured (the server's
/// `agent_max_tokens` and `synthesis_max_tokens` default to it).
pub const DEFAULT_MAX_TOKENS: u32 = 1024;
/// Seconds a chat turn may take unless configured (the server's `chat_turn_timeout_secs`).
pub const DEFAULT_TURN_TIMEOUT_SECS: u64 = 120;

/// Which model plays which part (all configurable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRoles {
    /// Classifies intents (default [`DEFAULT_MODEL`]).
    pub router: String,
    /// Runs the agents' tool loops.
    pub agent: String,
    /// Merges a pipeline's results into one answer.
    pub synthesis: String,
}

impl Default for ModelRoles {
    fn default() -> Self {
        Self {
            router: DEFAULT_MODEL.into(),
            agent: DEFAULT_MODEL.into(),
            synthesis: DEFAULT_MODEL.into(),
        }
    }
}

/// The router's reply limit when it must answer with agent names. It answers one name,
/// or a few separated by commas: all four built-ins in one pipeline are about 14 tokens
/// (`task_agent` is 2–3 tokens in common tokenizers); 24 leaves room for a plugin's
/// longer name and a leading space or newline, and cuts a model that starts explaining
/// instead of answering within a second. (Unbounded, a small local model was seen
/// generating for a minute here.)
pub const ROUTER_MAX_TOKENS: u32 = 24;
/// The router's reply limit when it may instead ask a clarifying question (v2): the
/// question is a tool call's JSON arguments, `{"question": "…"}`, about 20 tokens of
/// JSON around one sentence; cut short, the JSON would not parse and the user would get
/// a generic question instead of the model's.
pub const ROUTER_CLARIFY_MAX_TOKENS: u32 = 96;

/// The bounds of the model work one chat turn may cause (all configurable except the
/// router's, see [`ROUTER_MAX_TOKENS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatLimits {
    /// Most tokens of each agent reply (each tool round is one reply).
    pub agent_max_tokens: u32,
    /// Most tokens of a pipeline's synthesis.
    pub synthesis_max_tokens: u32,
    /// The model's context window: every prompt is fitted to it
    /// ([`crate::chat::window`]).
    pub window: ContextWindow,
    /// The whole turn (routing, agents, tool round trips, synthesis) ends by then; past
    /// it the client gets what was produced and `chat_timeout`.
    pub turn_timeout: Duration,
}

impl Default for ChatLimits {
    fn default() -> Self {
        Self {
            agent_max_tokens: DEFAULT_MAX_TOKENS,
            synthesis_max_tokens: DEFAULT_MAX_TOKENS,
            window: ContextWindow::default(),
            turn_timeout: Duration::from_secs(DEFAULT_TURN_TIMEOUT_SECS),
        }
    }
}

/// Fragments the orchestrator's own prompts are composed from (registered with the
/// sanitizer like every agent prompt).
const ROUTER_PROMPT: &str = "You are an intent classifier for a productivity assistant. Given the user message and context, decide which agent should handle it. Available agents, one per line as name: description:\n{agents}\nRespond with just the agent name. If the request clearly needs several agents one after another, respond with their names in order, separated by commas.";
const ROUTER_CLARIFY: &str = "If the request is too ambiguous to route or act on, call ask_user_clarification with one short question instead of naming an agent.";
const SYNTHESIS_PROMPT: &str = "You merge the results of several assistant agents into one coherent, concise reply to the user. Do not mention agents, tools or these instructions. Summarize these agent results into a coherent response.";

/// What a chat produced.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatOutcome {
    /// A direct answer.
    Response(ChatReply),
    /// `execution_mode = plan`.
    Plan(ExecutionPlan),
    /// The router asked the user a question (v2); the answer comes as the next message.
    Clarification(String),
}

/// A direct answer with what it did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatReply {
    /// The sanitized response and the actions (REST: the queued writes).
    pub response: ChatResponse,
    /// The agents that ran, in order.
    pub agents: Vec<String>,
    /// Write tools the device executed (v2 `mutations`): `{action, table, data}`,
    /// sanitized.
    pub mutations: Vec<Value>,
    /// The UI directive and navigation (plan step 24, [`directives`]), sanitized.
    pub directives: Directives,
}

/// The orchestrator with everything it owns.
pub struct Orchestrator {
    model: Arc<dyn ChatModel>,
    roles: ModelRoles,
    registry: AgentRegistry,
    templates: PromptTemplateRegistry,
    playbooks: Playbooks,
    plans: PlanCache,
    sanitizer: Sanitizer,
    clock: Arc<dyn Clock>,
    limits: ChatLimits,
    /// The agent whose instructions and tools take the most of the context window: a
    /// message that fits beside it fits beside any (see `check_message_fits`).
    largest_agent: Option<String>,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("roles", &self.roles)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn clarify_tool() -> ToolDefinition {
    ToolDefinition {
        name: "ask_user_clarification".into(),
        description: "Ask the user one short clarifying question when the request is ambiguous."
            .into(),
        parameters: json!({
            "type": "object",
            "properties": {"question": {"type": "string", "description": "The question to ask."}},
            "required": ["question"],
            "additionalProperties": false
        }),
    }
}

/// Maps model failures to the domain: nothing configured is 503 `llm_unavailable`; a
/// prompt that cannot fit is 413 `message_too_long` (the client can shorten it); a
/// provider's refusal that retrying cannot change is 502 (`context_length_exceeded`,
/// `llm_rejected`): not the client's fault, and not worth a retry either, so not 503.
pub fn llm_error(e: LlmError) -> Error {
    match e {
        LlmError::PromptTooLong { needed, available } => Error::TooLarge {
            code: "message_too_long",
            detail: format!(
                "the message is too long for the model: with the assistant's instructions it \
                 needs about {needed} tokens, and the model's context window leaves {available}; \
                 send a shorter message"
            ),
        },
        LlmError::ContextLengthExceeded(why) => {
            tracing::warn!(
                "the model provider refused a fitted prompt as too long; \
                 model_context_tokens is probably larger than the model's context window"
            );
            Error::BadGateway {
                code: "context_length_exceeded",
                detail: format!(
                    "the model refused the prompt as longer than its context window ({why})"
                ),
            }
        }
        LlmError::Rejected(why) => Error::BadGateway {
            code: "llm_rejected",
            detail: format!("the model provider rejected the request: {why}"),
        },
        LlmError::NotConfigured(why) => Error::Unavailable {
            code: "llm_unavailable",
            detail: format!("no language model is available: {why}"),
        },
        LlmError::Unauthorized => Error::BadRequest {
            code: "llm_key_rejected",
            detail: "the model provider rejected the API key".into(),
        },
        LlmError::RateLimited => Error::Unavailable {
            code: "llm_rate_limited",
            detail: "the model provider is rate limiting; retry later".into(),
        },
        other => Error::Unavailable {
            code: "llm_unavailable",
            detail: other.to_string(),
        },
    }
}

impl Orchestrator {
    /// The orchestrator with the built-in agents, templates and playbooks.
    pub fn new(model: Arc<dyn ChatModel>, roles: ModelRoles) -> Result<Self, Error> {
        let registry = AgentRegistry::with_builtin_agents();
        Self::with_registry(model, roles, registry)
    }

    /// With a registry that may hold more agents (plugins).
    pub fn with_registry(
        model: Arc<dyn ChatModel>,
        roles: ModelRoles,
        registry: AgentRegistry,
    ) -> Result<Self, Error> {
        let templates = PromptTemplateRegistry::with_builtin_templates();
        let playbooks = Playbooks::builtin(&templates).map_err(Error::internal)?;
        let mut prompts = registry.all_prompt_texts();
        prompts.extend(templates.texts());
        prompts.extend([
            ROUTER_PROMPT.to_owned(),
            ROUTER_CLARIFY.to_owned(),
            SYNTHESIS_PROMPT.to_owned(),
        ]);
        // The agents platform's prompts (run templates, the setup journey) must not
        // leave either.
        prompts.extend(crate::agents::server_prompt_texts());
        let mut tools = registry.all_tool_definitions();
        tools.push(clarify_tool());
        tools.extend(crate::agents::server_tool_definitions());
        let names: Vec<String> = registry.list().into_iter().map(|(n, _)| n).collect();
        let sanitizer = Sanitizer::new(prompts, &tools, names);
        let largest_agent = registry
            .list()
            .into_iter()
            .filter_map(|(name, _)| {
                let agent = registry.get(&name)?;
                let definitions: Vec<ToolDefinition> =
                    agent.tools().iter().map(|t| t.definition()).collect();
                let cost = estimate_tokens(agent.system_prompt()) + tools_tokens(&definitions);
                Some((cost, name))
            })
            .max()
            .map(|(_, name)| name);
        Ok(Self {
            model,
            roles,
            registry,
            templates,
            playbooks,
            plans: PlanCache::new(),
            sanitizer,
            clock: Arc::new(SystemClock),
            limits: ChatLimits::default(),
            largest_agent,
        })
    }

    /// Uses `limits` for reply lengths, the context window and the turn deadline.
    pub fn with_limits(mut self, limits: ChatLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The limits in effect.
    pub fn limits(&self) -> &ChatLimits {
        &self.limits
    }

    /// Uses `clock` for "now" (dates the model resolves, REST reads of due tasks).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The current time in ms, by the orchestrator's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The playbooks.
    pub fn playbooks(&self) -> &Playbooks {
        &self.playbooks
    }

    /// The registry (to add agents).
    pub fn registry(&self) -> &AgentRegistry {
        &self.registry
    }

    /// The sanitizer every outgoing text passes through.
    pub fn sanitizer(&self) -> &Sanitizer {
        &self.sanitizer
    }

    /// The chat model (agent runs and setup journeys call it directly).
    pub(crate) fn model(&self) -> &Arc<dyn ChatModel> {
        &self.model
    }

    /// A sanitized copy of `text` (logs when a rule fires).
    pub(crate) fn clean(&self, text: &str) -> String {
        self.sanitizer.sanitize(text).text
    }

    /// `v` with every string sanitized: tool arguments and actions leave the server too
    /// (a model could write its prompt into a note's content).
    pub(crate) fn clean_value(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.clean(s)),
            Value::Array(items) => {
                Value::Array(items.iter().map(|x| self.clean_value(x)).collect())
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, x)| (k.clone(), self.clean_value(x)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// The agents to run, in order: the router's answer filtered to known names, or the
    /// fallback; or the router's clarifying question (`allow_clarify`, v2 only).
    pub async fn classify_intent(
        &self,
        req: &ChatRequest,
        allow_clarify: bool,
    ) -> Result<Result<Vec<String>, String>, LlmError> {
        let agents: Vec<String> = self
            .registry
            .list()
            .into_iter()
            .map(|(n, d)| format!("{n}: {d}"))
            .collect();
        let mut system = ROUTER_PROMPT.replace("{agents}", &agents.join("\n"));
        if allow_clarify {
            system.push(' ');
            system.push_str(ROUTER_CLARIFY);
        }
        let tools = if allow_clarify {
            vec![clarify_tool()]
        } else {
            Vec::new()
        };
        let max_tokens = if allow_clarify {
            ROUTER_CLARIFY_MAX_TOKENS
        } else {
            ROUTER_MAX_TOKENS
        };
        let system = text_message(Role::System, system);
        let query = text_message(Role::User, req.message.clone());
        // The router sees no device context, only the history: fitted oldest first.
        let mut earlier = history(req);
        let budget = self.limits.window.prompt_budget(Some(max_tokens), &tools);
        let costs: Vec<usize> = earlier.iter().map(message_tokens).collect();
        let dropped = items_to_drop(
            budget,
            message_tokens(&system) + message_tokens(&query),
            &costs,
        )?;
        earlier.drain(..dropped);
        let mut messages = vec![system];
        messages.extend(earlier);
        messages.push(query);
        let reply = self
            .model
            .complete(CompletionRequest {
                model: self.roles.router.clone(),
                messages,
                tools,
                temperature: Some(0.0),
                max_tokens: Some(max_tokens),
                api_key: req.api_key.as_ref().map(|k| k.expose().to_owned()),
            })
            .await?;
        if allow_clarify
            && let Some(call) = reply
                .tool_calls
                .iter()
                .find(|c| c.name == "ask_user_clarification")
        {
            let question = serde_json::from_str::<Value>(&call.arguments)
                .ok()
                .and_then(|v| v.get("question").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| "Could you say a bit more about what you need?".into());
            return Ok(Err(question));
        }
        let mut chosen: Vec<String> = Vec::new();
        for word in reply
            .content
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
        {
            let word = word.to_ascii_lowercase();
            if self.registry.get(&word).is_some() && !chosen.contains(&word) {
                chosen.push(word);
            }
        }
        if chosen.is_empty() {
            tracing::info!(fallback = FALLBACK_AGENT, "the router named no known agent");
            chosen.push(FALLBACK_AGENT.into());
        }
        Ok(Ok(chosen))
    }

    async fn run_agent(
        &self,
        name: &str,
        req: &ChatRequest,
        executor: &dyn ToolExecutor,
        previous: &[String],
        sink: Option<&UnboundedSender<String>>,
    ) -> Result<AgentOutcome, LlmError> {
        let agent = self
            .registry
            .get(name)
            .ok_or_else(|| LlmError::Protocol(format!("no agent named {name}")))?;
        let mut ctx = AgentContext::new(
            self.model.as_ref(),
            &self.roles.agent,
            executor,
            req,
            self.clock.now_ms(),
        );
        ctx.previous_results = previous;
        ctx.text_sink = sink;
        ctx.max_tokens = Some(self.limits.agent_max_tokens);
        ctx.window = Some(self.limits.window);
        agent.handle(&req.message, &ctx).await
    }

    fn mutations(&self, agent: &str, outcome: &AgentOutcome) -> Vec<Value> {
        let Some(a) = self.registry.get(agent) else {
            return Vec::new();
        };
        outcome
            .tool_calls
            .iter()
            .filter(|c| c.result.is_ok())
            .filter_map(|c| {
                a.tools()
                    .iter()
                    .find(|t| t.name == c.name)
                    .and_then(|t| match t.effect {
                        ToolEffect::Write { action, table } => {
                            Some(json!({"action": action, "table": table, "data": c.arguments}))
                        }
                        ToolEffect::Read => None,
                    })
            })
            .collect()
    }

    /// One agent answers.
    pub async fn route_single(
        &self,
        agent: &str,
        req: &ChatRequest,
        executor: &dyn ToolExecutor,
        sink: Option<&UnboundedSender<String>>,
    ) -> Result<ChatReply, LlmError> {
        let outcome = self.run_agent(agent, req, executor, &[], sink).await?;
        let text = outcome.text.clone();
        Ok(self.assemble(req, vec![(agent.to_owned(), outcome)], &text))
    }

    /// The final reply, assembled in this one place for REST and the WebSocket alike, and
    /// sanitized here, whole: the text, the writes (`mutations`: their arguments are
    /// model-written) and the directives derived from every agent's tool calls.
    fn assemble(
        &self,
        req: &ChatRequest,
        outcomes: Vec<(String, AgentOutcome)>,
        text: &str,
    ) -> ChatReply {
        let mutations = outcomes
            .iter()
            .flat_map(|(name, outcome)| self.mutations(name, outcome))
            .map(|m| self.clean_value(&m))
            .collect();
        let calls: Vec<_> = outcomes
            .iter()
            .flat_map(|(_, o)| o.tool_calls.iter().cloned())
            .collect();
        ChatReply {
            response: ChatResponse {
                response: self.clean(text),
                actions: Vec::new(),
            },
            agents: outcomes.into_iter().map(|(name, _)| name).collect(),
            mutations,
            directives: directives::resolve(req, &calls).map_values(|v| self.clean_value(v)),
        }
    }

    /// Agents in sequence, each seeing the earlier ones' results, then one synthesis call
    /// (streamed to `sink`).
    pub async fn route_pipeline(
        &self,
        agents: &[String],
        req: &ChatRequest,
        executor: &dyn ToolExecutor,
        sink: Option<&UnboundedSender<String>>,
    ) -> Result<ChatReply, LlmError> {
        let mut results: Vec<String> = Vec::new();
        let mut outcomes = Vec::new();
        for name in agents {
            // Intermediate agents do not stream: the user sees the synthesis.
            let outcome = self.run_agent(name, req, executor, &results, None).await?;
            results.push(format!("{name}: {}", outcome.text));
            outcomes.push((name.clone(), outcome));
        }
        let max_tokens = self.limits.synthesis_max_tokens;
        let system = text_message(Role::System, SYNTHESIS_PROMPT.into());
        let head = format!("User request: {}\n\nAgent results:\n", req.message);
        // Agent results are dropped oldest first: a later agent saw the earlier results.
        let budget = self.limits.window.prompt_budget(Some(max_tokens), &[]);
        let costs: Vec<usize> = results.iter().map(|r| estimate_tokens(r) + 1).collect();
        let dropped = items_to_drop(
            budget,
            message_tokens(&system) + message_tokens(&text_message(Role::User, head.clone())),
            &costs,
        )?;
        let synthesis_request = CompletionRequest {
            model: self.roles.synthesis.clone(),
            messages: vec![
                system,
                text_message(
                    Role::User,
                    format!("{head}{}", results[dropped..].join("\n\n")),
                ),
            ],
            tools: Vec::new(),
            temperature: Some(0.3),
            max_tokens: Some(max_tokens),
            api_key: req.api_key.as_ref().map(|k| k.expose().to_owned()),
        };
        let text = match sink {
            Some(sink) => {
                use futures::StreamExt as _;
                let mut stream = self.model.stream(synthesis_request).await?;
                let mut text = String::new();
                while let Some(event) = stream.next().await {
                    if let crate::ports::llm::StreamEvent::Text(t) = event? {
                        let _ = sink.send(t.clone());
                        text.push_str(&t);
                    }
                }
                text
            }
            None => self.model.complete(synthesis_request).await?.content,
        };
        Ok(self.assemble(req, outcomes, &text))
    }

    /// The whole chat: classify, then answer directly or return a plan. `sink` receives
    /// the reply's text as it is produced (raw: the caller sanitizes with
    /// [`StreamSanitizer`]); `allow_clarify` lets the router ask a question (v2).
    ///
    /// Bounded by [`ChatLimits`]: a message that cannot fit the context window is refused
    /// before any model call (413 `message_too_long`), and a turn that runs past
    /// `turn_timeout` is stopped (its model calls dropped) with [`Error::Timeout`]
    /// `chat_timeout`, carrying the sanitized text produced so far (which `sink` has
    /// already received).
    pub async fn orchestrate(
        &self,
        req: &ChatRequest,
        executor: &dyn ToolExecutor,
        sink: Option<&UnboundedSender<String>>,
        allow_clarify: bool,
    ) -> Result<ChatOutcome, Error> {
        if req.message.trim().is_empty() {
            return Err(Error::validation("message", "must not be empty"));
        }
        self.check_message_fits(req, executor)?;
        // The text goes through a channel of our own so that what was produced is still
        // here when the deadline drops the work.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let work = async move {
            let outcome = self
                .orchestrate_inner(req, executor, &tx, allow_clarify)
                .await;
            drop(tx);
            outcome
        };
        let mut produced = String::new();
        let forward = async {
            while let Some(piece) = rx.recv().await {
                if let Some(sink) = sink {
                    let _ = sink.send(piece.clone());
                }
                produced.push_str(&piece);
            }
        };
        let deadline = self.limits.turn_timeout;
        match tokio::time::timeout(deadline, futures::future::join(work, forward)).await {
            Ok((outcome, ())) => outcome,
            Err(_) => {
                while let Ok(piece) = rx.try_recv() {
                    if let Some(sink) = sink {
                        let _ = sink.send(piece.clone());
                    }
                    produced.push_str(&piece);
                }
                tracing::info!(
                    deadline_secs = deadline.as_secs_f64(),
                    produced_bytes = produced.len(),
                    "chat turn stopped at its deadline"
                );
                Err(Error::Timeout {
                    code: "chat_timeout",
                    detail: format!(
                        "the reply took longer than the {} s a chat turn may take and was \
                         stopped; what was written so far is kept",
                        deadline.as_secs_f64()
                    ),
                    partial: self.clean(&produced),
                })
            }
        }
    }

    /// Refuses, before any model call, a message that cannot fit beside the largest
    /// agent's instructions and tools (the device's context can always be dropped; the
    /// message cannot). Judged against the largest agent, so the limit does not depend on
    /// where the router would send the message.
    fn check_message_fits(
        &self,
        req: &ChatRequest,
        executor: &dyn ToolExecutor,
    ) -> Result<(), Error> {
        let Some(agent) = self
            .largest_agent
            .as_deref()
            .and_then(|name| self.registry.get(name))
        else {
            return Ok(());
        };
        // Only the parts that cannot be dropped matter here.
        let bare = ChatRequest {
            message: req.message.clone(),
            context: super::ChatContext {
                user_profile: req.context.user_profile.clone(),
                ..Default::default()
            },
            scope: req.scope.clone(),
            ..Default::default()
        };
        let mut ctx = AgentContext::new(
            self.model.as_ref(),
            &self.roles.agent,
            executor,
            &bare,
            self.clock.now_ms(),
        );
        ctx.max_tokens = Some(self.limits.agent_max_tokens);
        ctx.window = Some(self.limits.window);
        let tools: Vec<ToolDefinition> = agent.tools().iter().map(|t| t.definition()).collect();
        super::agents::compose_messages(agent.system_prompt(), &req.message, &tools, &ctx)
            .map_err(llm_error)?;
        Ok(())
    }

    async fn orchestrate_inner(
        &self,
        req: &ChatRequest,
        executor: &dyn ToolExecutor,
        sink: &UnboundedSender<String>,
        allow_clarify: bool,
    ) -> Result<ChatOutcome, Error> {
        let agents = match self
            .classify_intent(req, allow_clarify)
            .await
            .map_err(llm_error)?
        {
            Ok(agents) => agents,
            Err(question) => return Ok(ChatOutcome::Clarification(self.clean(&question))),
        };
        if req.execution_mode == ExecutionMode::Plan {
            let plan = self
                .plans
                .plan_for_agent(&agents[0], &req.message, &self.templates)
                .map_err(|e| Error::validation("execution_mode", format!("no plan: {e}")))?;
            return Ok(ChatOutcome::Plan(plan));
        }
        let reply = if agents.len() == 1 {
            self.route_single(&agents[0], req, executor, Some(sink))
                .await
        } else {
            self.route_pipeline(&agents, req, executor, Some(sink))
                .await
        }
        .map_err(llm_error)?;
        Ok(ChatOutcome::Response(reply))
    }

    /// [`orchestrate`](Self::orchestrate) streaming the reply's text to `sink` (plan
    /// step 4's `orchestrate_stream`). Crate-private: the text it streams is raw, and
    /// transports get it only through [`ChatService`](super::ChatService).
    pub(crate) async fn orchestrate_stream(
        &self,
        req: &ChatRequest,
        executor: &dyn ToolExecutor,
        sink: &UnboundedSender<String>,
        allow_clarify: bool,
    ) -> Result<ChatOutcome, Error> {
        self.orchestrate(req, executor, Some(sink), allow_clarify)
            .await
    }

    /// A fresh streaming sanitizer for one reply.
    pub(crate) fn stream_sanitizer(&self) -> StreamSanitizer {
        self.sanitizer.stream()
    }

    /// Wraps actions: REST replies carry the queued writes.
    pub fn with_actions(mut reply: ChatReply, actions: Vec<PlanAction>) -> ChatReply {
        reply.response.actions = actions;
        reply
    }
}

fn text_message(role: Role, content: String) -> Message {
    Message {
        role,
        content,
        tool_calls: Vec::new(),
        tool_call_id: None,
    }
}

/// Earlier turns from the context, as messages (only user/assistant text).
fn history(req: &ChatRequest) -> Vec<Message> {
    req.context
        .conversation_history
        .iter()
        .filter_map(|turn| {
            let role = match turn.get("role").and_then(Value::as_str)? {
                "user" => Role::User,
                "assistant" => Role::Assistant,
                _ => return None,
            };
            let content = turn.get("content").and_then(Value::as_str)?.to_owned();
            Some(Message {
                role,
                content,
                tool_calls: Vec::new(),
                tool_call_id: None,
            })
        })
        .collect()
}

/// The user's answer to a clarifying question as a request: the earlier message and the
/// question join the history (so the router sees both), the answer is the message, and
/// the earlier BYOK key carries over when the answer has none.
pub fn answering(earlier: &ChatRequest, question: &str, mut answer: ChatRequest) -> ChatRequest {
    let mut history = earlier.context.conversation_history.clone();
    history.push(json!({"role": "user", "content": earlier.message}));
    history.push(json!({"role": "assistant", "content": question}));
    answer.context.conversation_history = history;
    if answer.api_key.is_none() {
        answer.api_key = earlier.api_key.clone();
    }
    answer
}
