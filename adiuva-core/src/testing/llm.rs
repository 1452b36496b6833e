//! [`ScriptedModel`]: a [`ChatModel`] that answers from a script, for tests of the tool
//! loop, agents and orchestrator without a network. (The OpenAI-compatible adapter is
//! tested against a fake *server* instead.)

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt as _;
use futures::stream::BoxStream;

use crate::ports::llm::{
    ChatModel, Completion, CompletionRequest, LlmError, StreamEvent, ToolCall,
};

type Handler = dyn Fn(&CompletionRequest) -> Option<Completion> + Send + Sync;

/// Replies in order from a queue; when the queue is empty, asks the handler (if any);
/// records every request.
#[derive(Default)]
pub struct ScriptedModel {
    queue: Mutex<VecDeque<Result<Completion, String>>>,
    handler: Option<Arc<Handler>>,
    requests: Mutex<Vec<CompletionRequest>>,
}

impl std::fmt::Debug for ScriptedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedModel").finish_non_exhaustive()
    }
}

/// A reply with text only.
pub fn text(s: &str) -> Completion {
    Completion {
        content: s.into(),
        tool_calls: Vec::new(),
    }
}

/// A reply that calls tools: `(name, arguments JSON text)`; ids are `call_<n>`.
pub fn calls(list: &[(&str, &str)]) -> Completion {
    Completion {
        content: String::new(),
        tool_calls: list
            .iter()
            .enumerate()
            .map(|(i, (name, args))| ToolCall {
                id: format!("call_{i}_{name}"),
                name: (*name).into(),
                arguments: (*args).into(),
            })
            .collect(),
    }
}

impl ScriptedModel {
    /// An empty script.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers every request the queue does not with `f` (`None` → error).
    pub fn with_handler(
        f: impl Fn(&CompletionRequest) -> Option<Completion> + Send + Sync + 'static,
    ) -> Self {
        Self {
            handler: Some(Arc::new(f)),
            ..Self::default()
        }
    }

    /// Queues a reply.
    pub fn push(&self, reply: Completion) {
        if let Ok(mut q) = self.queue.lock() {
            q.push_back(Ok(reply));
        }
    }

    /// Queues a failure ([`LlmError::Unavailable`] with this text).
    pub fn push_error(&self, why: &str) {
        if let Ok(mut q) = self.queue.lock() {
            q.push_back(Err(why.into()));
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<CompletionRequest> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn next(&self, req: &CompletionRequest) -> Result<Completion, LlmError> {
        if let Ok(mut r) = self.requests.lock() {
            r.push(req.clone());
        }
        let queued = self.queue.lock().ok().and_then(|mut q| q.pop_front());
        match queued {
            Some(Ok(c)) => Ok(c),
            Some(Err(why)) => Err(LlmError::Unavailable(why)),
            None => self.handler.as_ref().and_then(|h| h(req)).ok_or_else(|| {
                LlmError::Protocol("the script has no reply for this request".into())
            }),
        }
    }
}

/// A completion as the stream events a provider would send: text in small pieces, each
/// tool call's id and name first and its arguments in two pieces.
pub fn as_events(c: &Completion) -> Vec<StreamEvent> {
    let mut out = Vec::new();
    let chars: Vec<char> = c.content.chars().collect();
    for piece in chars.chunks(8) {
        out.push(StreamEvent::Text(piece.iter().collect()));
    }
    for (index, call) in c.tool_calls.iter().enumerate() {
        let mid = call.arguments.len() / 2;
        let mid = (0..=mid)
            .rev()
            .find(|i| call.arguments.is_char_boundary(*i))
            .unwrap_or(0);
        out.push(StreamEvent::ToolCallDelta {
            index,
            id: Some(call.id.clone()),
            name: Some(call.name.clone()),
            arguments: call.arguments[..mid].into(),
        });
        out.push(StreamEvent::ToolCallDelta {
            index,
            id: None,
            name: None,
            arguments: call.arguments[mid..].into(),
        });
    }
    out
}

#[async_trait]
impl ChatModel for ScriptedModel {
    async fn complete(&self, req: CompletionRequest) -> Result<Completion, LlmError> {
        self.next(&req)
    }

    async fn stream(
        &self,
        req: CompletionRequest,
    ) -> Result<BoxStream<'static, Result<StreamEvent, LlmError>>, LlmError> {
        let c = self.next(&req)?;
        Ok(futures::stream::iter(as_events(&c).into_iter().map(Ok)).boxed())
    }
}
