//! The shared tool loop every agent runs (plan step 3, `_tool_loop`): stream a reply,
//! execute the tool calls it makes, send the results back, repeat.
//!
//! Rules, in the order they apply:
//! - Only the calling agent's tools are offered, and only those can run: a call naming
//!   any other tool gets an error result.
//! - Arguments are JSON-parsed and validated against the tool's schema *before* the
//!   executor sees them; unparsable JSON or a schema violation becomes an error result
//!   (`{"error": "…"}`) the model reads and can correct. Nothing here aborts the chat
//!   except the model call itself failing.
//! - Calls of one reply run in order, one at a time (a later call may depend on an
//!   earlier write on the device).
//! - At most `max_iter` model calls offer tools. If the model is still calling tools
//!   after that, the loop makes **one closing call without tools** so the model answers
//!   in words from what it has; if that reply is empty too, a fixed closing sentence is
//!   used. (A closing call beats cutting off: the user gets an answer that reflects the
//!   work done.)
//! - Every model call asks for at most `ctx.max_tokens` tokens. With `ctx.window` set,
//!   the conversation is kept inside the model's context window as it grows
//!   ([`crate::chat::window`]): before each call the oldest history turns are dropped
//!   if needed; a tool result is cut to the room left for the next call; and when even
//!   this turn's own messages leave no room, the loop ends without another call, with
//!   the fixed closing sentence (a refusal from the provider would lose the whole turn).
//! - Text is streamed to `ctx.text_sink` as it arrives. Texts of successive replies are
//!   joined with a blank line, in the sink and in [`AgentOutcome::text`] alike, so a
//!   streaming client and a REST client read the same words.

use std::collections::BTreeMap;

use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::chat::agents::{AgentContext, ToolSpec};
use crate::chat::window::{clip_to_tokens, items_to_drop, message_tokens, messages_tokens};
use crate::ports::llm::{
    CompletionRequest, LlmError, Message, Role, StreamEvent, ToolCall, ToolDefinition,
};

/// Below this many tokens of room, a tool result is replaced by an error the model can
/// act on instead of being cut to a useless stub.
const MIN_TOOL_RESULT_TOKENS: usize = 64;

/// The plan's `max_iter`: model calls that may call tools, per agent turn.
pub const MAX_TOOL_ITERATIONS: usize = 5;

/// Said when the model ends without any words after running out of tool rounds.
pub const CLOSING_TEXT: &str = "I stopped before finishing because the request needed too many steps. Tell me what to do next and I will continue.";

/// One tool call the loop handled.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutedCall {
    /// The model's id for the call.
    pub id: String,
    /// Tool name as the model wrote it.
    pub name: String,
    /// The arguments: validated and normalised when valid; as parsed when invalid; the
    /// raw text as a JSON string when not even JSON.
    pub arguments: Value,
    /// The tool's result, or the error the model was shown.
    pub result: Result<Value, String>,
}

/// What an agent's turn produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentOutcome {
    /// The agent's answer (every reply's text, joined by blank lines; not yet sanitized).
    pub text: String,
    /// Every tool call, in the order run.
    pub tool_calls: Vec<ExecutedCall>,
}

/// Runs the loop. `messages` starts with the system message; `tools` are the calling
/// agent's tools (no other tool is offered or run). See the module docs for the rules.
pub async fn run_tool_loop(
    ctx: &AgentContext<'_>,
    mut messages: Vec<Message>,
    tools: &[ToolSpec],
    max_iter: usize,
) -> Result<AgentOutcome, LlmError> {
    let definitions: Vec<_> = tools.iter().map(ToolSpec::definition).collect();
    let mut text = TextOut::new(ctx);
    let mut calls = Vec::new();
    // Where the user's message is: history lies between it and the system message.
    let mut query_at = messages.len().saturating_sub(1);

    for round in 0..max_iter {
        if !make_room(ctx, &mut messages, &mut query_at, &definitions) {
            return Ok(out_of_room(text, calls));
        }
        let reply = stream_reply(ctx, &messages, definitions.clone(), round, &mut text).await?;
        if reply.tool_calls.is_empty() {
            return Ok(AgentOutcome {
                text: text.all,
                tool_calls: calls,
            });
        }
        messages.push(Message {
            role: Role::Assistant,
            content: reply.content,
            tool_calls: reply.tool_calls.clone(),
            tool_call_id: None,
        });
        for call in reply.tool_calls {
            let executed = run_call(ctx, tools, call).await;
            let content = match &executed.result {
                Ok(v) => v.to_string(),
                Err(e) => json!({ "error": e }).to_string(),
            };
            let content = fit_tool_result(ctx, &messages, &definitions, content);
            messages.push(Message {
                role: Role::Tool,
                content,
                tool_calls: Vec::new(),
                tool_call_id: Some(executed.id.clone()),
            });
            calls.push(executed);
        }
    }

    tracing::debug!(
        max_iter,
        "tool loop: out of rounds, closing call without tools"
    );
    if !make_room(ctx, &mut messages, &mut query_at, &[]) {
        return Ok(out_of_room(text, calls));
    }
    let closing = stream_reply(ctx, &messages, Vec::new(), max_iter, &mut text).await?;
    if closing.content.trim().is_empty() {
        text.push_reply_start();
        text.push(CLOSING_TEXT);
    }
    Ok(AgentOutcome {
        text: text.all,
        tool_calls: calls,
    })
}

/// Drops the oldest history turns until the next call fits the window; `false` when
/// even the system message, the user's message and this turn's exchanges do not fit.
fn make_room(
    ctx: &AgentContext<'_>,
    messages: &mut Vec<Message>,
    query_at: &mut usize,
    tools: &[ToolDefinition],
) -> bool {
    let Some(window) = ctx.window else {
        return true;
    };
    if *query_at == 0 || *query_at >= messages.len() {
        return true;
    }
    let budget = window.prompt_budget(ctx.max_tokens, tools);
    let fixed = message_tokens(&messages[0]) + messages_tokens(&messages[*query_at..]);
    let history: Vec<usize> = messages[1..*query_at].iter().map(message_tokens).collect();
    match items_to_drop(budget, fixed, &history) {
        Ok(0) => true,
        Ok(k) => {
            tracing::debug!(
                dropped = k,
                "tool loop: dropped the oldest history turns to fit the context window"
            );
            messages.drain(1..1 + k);
            *query_at -= k;
            true
        }
        Err(_) => false,
    }
}

/// `content` cut to the room the next call leaves for it.
fn fit_tool_result(
    ctx: &AgentContext<'_>,
    messages: &[Message],
    tools: &[ToolDefinition],
    content: String,
) -> String {
    let Some(window) = ctx.window else {
        return content;
    };
    let used = messages_tokens(messages)
        + message_tokens(&Message {
            role: Role::Tool,
            content: String::new(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        });
    let room = window
        .prompt_budget(ctx.max_tokens, tools)
        .saturating_sub(used);
    if room < MIN_TOOL_RESULT_TOKENS {
        json!({"error": "the result is too large for the model's context window; ask for less"})
            .to_string()
    } else {
        clip_to_tokens(&content, room)
    }
}

/// The turn ends without another model call: the window is full.
fn out_of_room(mut text: TextOut<'_>, calls: Vec<ExecutedCall>) -> AgentOutcome {
    tracing::debug!("tool loop: the context window is full, closing without another call");
    text.push_reply_start();
    text.push(CLOSING_TEXT);
    AgentOutcome {
        text: text.all,
        tool_calls: calls,
    }
}

/// One model reply, reassembled from the stream.
struct Reply {
    content: String,
    tool_calls: Vec<ToolCall>,
}

/// Text written so far, mirrored to the sink.
struct TextOut<'a> {
    all: String,
    sink: Option<&'a tokio::sync::mpsc::UnboundedSender<String>>,
    /// Whether the current reply has written anything yet.
    reply_started: bool,
}

impl<'a> TextOut<'a> {
    fn new(ctx: &AgentContext<'a>) -> Self {
        Self {
            all: String::new(),
            sink: ctx.text_sink,
            reply_started: false,
        }
    }

    /// Marks the start of a new reply's text: a blank line separates it from earlier text.
    fn push_reply_start(&mut self) {
        if !self.all.is_empty() {
            self.emit("\n\n");
        }
        self.reply_started = true;
    }

    fn push(&mut self, piece: &str) {
        if piece.is_empty() {
            return;
        }
        if !self.reply_started {
            self.push_reply_start();
        }
        self.emit(piece);
    }

    fn emit(&mut self, piece: &str) {
        self.all.push_str(piece);
        if let Some(sink) = self.sink {
            // A closed receiver means the client left; the turn still completes so that
            // whatever it wrote is consistent, and the caller decides what to do.
            let _ = sink.send(piece.to_owned());
        }
    }
}

async fn stream_reply(
    ctx: &AgentContext<'_>,
    messages: &[Message],
    tools: Vec<ToolDefinition>,
    round: usize,
    text: &mut TextOut<'_>,
) -> Result<Reply, LlmError> {
    let req = CompletionRequest {
        model: ctx.model_name.to_owned(),
        messages: messages.to_vec(),
        tools,
        temperature: None,
        max_tokens: ctx.max_tokens,
        api_key: ctx.api_key.map(str::to_owned),
    };
    let mut stream = ctx.model.stream(req).await?;
    text.reply_started = false;
    let mut content = String::new();
    #[derive(Default)]
    struct Partial {
        id: Option<String>,
        name: Option<String>,
        arguments: String,
    }
    let mut partials: BTreeMap<usize, Partial> = BTreeMap::new();
    while let Some(event) = stream.next().await {
        match event? {
            StreamEvent::Text(piece) => {
                content.push_str(&piece);
                text.push(&piece);
            }
            StreamEvent::ToolCallDelta {
                index,
                id,
                name,
                arguments,
            } => {
                let p = partials.entry(index).or_default();
                if p.id.is_none() {
                    p.id = id.filter(|s| !s.is_empty());
                }
                if p.name.is_none() {
                    p.name = name.filter(|s| !s.is_empty());
                }
                p.arguments.push_str(&arguments);
            }
        }
    }
    let tool_calls = partials
        .into_iter()
        .map(|(index, p)| ToolCall {
            // A provider that omits ids still needs distinct ones to pair results.
            id: p.id.unwrap_or_else(|| format!("call_{round}_{index}")),
            name: p.name.unwrap_or_default(),
            arguments: p.arguments,
        })
        .collect();
    Ok(Reply {
        content,
        tool_calls,
    })
}

/// Parses, validates and executes one call; never fails (errors become the result).
async fn run_call(ctx: &AgentContext<'_>, tools: &[ToolSpec], call: ToolCall) -> ExecutedCall {
    let ToolCall {
        id,
        name,
        arguments: raw,
    } = call;
    // Models send "" for a tool without parameters.
    let parsed = if raw.trim().is_empty() {
        Ok(Value::Object(Default::default()))
    } else {
        serde_json::from_str::<Value>(&raw)
    };
    let (arguments, result) = match (tools.iter().find(|t| t.name == name), parsed) {
        (None, parsed) => {
            let known: Vec<&str> = tools.iter().map(|t| t.name).collect();
            let why = format!(
                "unknown tool `{name}`; the tools available are: {}",
                known.join(", ")
            );
            (parsed.unwrap_or(Value::String(raw)), Err(why))
        }
        (Some(_), Err(e)) => (
            Value::String(raw),
            Err(format!(
                "the arguments are not valid JSON ({e}); send one JSON object matching the tool's parameters"
            )),
        ),
        (Some(spec), Ok(parsed)) => match spec.validate(&parsed) {
            Err(why) => (parsed, Err(why)),
            Ok(valid) => {
                let valid = Value::Object(valid);
                let result = ctx.executor.execute(&id, &name, &valid).await;
                (valid, result)
            }
        },
    };
    if result.is_err() {
        // Only the tool's name: the reason may quote argument values, which are user content.
        tracing::debug!(tool = %name, "tool call answered with an error");
    }
    ExecutedCall {
        id,
        name,
        arguments,
        result,
    }
}
