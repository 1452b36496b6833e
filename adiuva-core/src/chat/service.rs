//! [`ChatService`]: one chat turn as typed events that are already clean.
//!
//! Transports only serialize what this yields. Every text that leaves a turn passes the
//! sanitizer here, by construction: the reply streams through a [`StreamSanitizer`]
//! before it becomes [`ChatEvent::Text`], a tool call's arguments are cleaned before the
//! [`ChatPeer`] sees the [`ToolCall`], a [`FinalReply`] is made only from the reply the
//! orchestrator sanitized whole at its one assembly point (response, mutations,
//! directives) plus the REST actions cleaned here, and every error detail is cleaned.
//! The orchestrator's raw text never reaches a transport.
//!
//! A socket holds a [`ChatSession`]: it owns what lives between turns (the router's open
//! question, v2) and admits each request (the account is re-checked, and the turn counts
//! against the user's budget, the [`RatePolicy`] HTTP requests spend too).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::agents::RestExecutor;
use super::orchestrator::{ChatOutcome, Orchestrator, answering};
use super::sanitizer::StreamSanitizer;
use super::{ChatRequest, ExecutionPlan, PlanAction, ToolExecutor};
use crate::auth::{AuthService, Principal};
use crate::error::Error;
use crate::rate::{Cost, RatePolicy};

/// Which frames a turn is answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `chat_request` → `final`; the router may not ask questions.
    V1,
    /// `user_request` → `ai_response` or `ask_user_clarification`.
    V2,
}

/// A tool call for the device, arguments sanitized.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The tool.
    pub name: String,
    /// Its arguments (a JSON object, sanitized).
    pub arguments: Map<String, Value>,
}

/// A write the device ran (v2 `mutations`), sanitized.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    /// `create_record`, `update_record` or `delete_record`.
    pub action: String,
    /// The client table.
    pub table: String,
    /// The tool's arguments.
    pub data: Value,
}

/// Where the client should look (v2 `navigation`).
#[derive(Debug, Clone, PartialEq)]
pub struct Navigation {
    /// The kind of entity (`project`).
    pub target: String,
    /// Which one, e.g. `{"project_id": "p2"}`.
    pub filter: Map<String, Value>,
}

/// The end of an answered turn, every text in it sanitized.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FinalReply {
    /// The reply.
    pub response: String,
    /// REST: the writes for the client to apply. Empty over a socket, where the device
    /// ran them.
    pub actions: Vec<PlanAction>,
    /// The writes the device ran.
    pub mutations: Vec<Mutation>,
    /// The entities the answer is about outside the popup's scope (`chat::directives`).
    pub navigation: Vec<Navigation>,
    /// A card, chart or diagram for the client (`chat::directives`).
    pub ui_directive: Option<Value>,
    /// The first navigation's filter, when the scope changed.
    pub new_scope: Option<Map<String, Value>>,
}

/// What a turn yields, in order: text chunks, then exactly one of the others.
#[derive(Debug)]
pub enum ChatEvent {
    /// A piece of the reply (sanitized), as it is produced.
    Text(String),
    /// The answer.
    Final(FinalReply),
    /// `execution_mode: plan`: the plan (template ids only).
    Plan(ExecutionPlan),
    /// The router asks the user first (v2); the next request answers it.
    Clarification(String),
    /// The turn failed (details sanitized).
    Error(Error),
}

/// The end of a REST turn.
#[derive(Debug)]
pub enum RestAnswer {
    /// The answer (a router's question, should one come, is its response).
    Reply(FinalReply),
    /// `execution_mode: plan`: the plan.
    Plan(ExecutionPlan),
}

/// The other end of a socket turn: receives the events and runs the tools.
#[async_trait]
pub trait ChatPeer: Send + Sync {
    /// One event of the turn.
    fn event(&self, event: ChatEvent);
    /// Runs a tool on the device: `Ok(result)`, or `Err(why)` for the model to see.
    async fn run_tool(&self, call: ToolCall) -> Result<Value, String>;
}

/// Chat turns over REST and sockets.
#[derive(Clone)]
pub struct ChatService {
    orchestrator: Arc<Orchestrator>,
    auth: AuthService,
    budget: Option<RatePolicy>,
}

impl ChatService {
    pub(crate) fn new(orchestrator: Arc<Orchestrator>, auth: AuthService) -> Self {
        Self {
            orchestrator,
            auth,
            budget: None,
        }
    }

    /// Counts socket turns against `budget`, the one policy HTTP requests spend too
    /// (`None`: rate limits are off). REST turns are counted by the HTTP rate limit, as
    /// requests.
    pub fn with_budget(mut self, budget: Option<RatePolicy>) -> Self {
        self.budget = budget;
        self
    }

    /// One REST turn: write tools become `actions`, read tools answer from the request's
    /// context; no streaming, no clarification (a question comes back as the response).
    pub async fn rest_turn(&self, request: &ChatRequest) -> Result<RestAnswer, Error> {
        let o = &self.orchestrator;
        let executor = RestExecutor::new(o.registry(), request.context.clone(), o.now_ms());
        let outcome = o
            .orchestrate(request, &executor, None, false)
            .await
            .map_err(|e| self.clean_error(e))?;
        Ok(match outcome {
            ChatOutcome::Response(reply) => {
                let actions = executor
                    .take_actions()
                    .into_iter()
                    .map(|a| self.clean_action(a))
                    .collect();
                RestAnswer::Reply(final_reply(reply, actions))
            }
            ChatOutcome::Plan(plan) => RestAnswer::Plan(plan),
            ChatOutcome::Clarification(question) => RestAnswer::Reply(FinalReply {
                response: question,
                ..FinalReply::default()
            }),
        })
    }

    /// `POST /chat` with `device_id`: a turn whose tools run on that device through
    /// `devices`, wherever it is connected (write tools are run there, not returned as
    /// `actions`; the writes it ran are the reply's `mutations`). An offline or silent
    /// device gives the model error results, never a hang. `NotFound("device")` for a
    /// device the user does not have.
    pub async fn device_turn(
        &self,
        principal: &Principal,
        request: ChatRequest,
        devices: &crate::devices::DeviceHub,
        device_id: &str,
    ) -> Result<RestAnswer, Error> {
        let user = principal.user.id;
        devices.require(user, device_id).await?;
        // No second admission: the HTTP middleware already counted this request and
        // authenticated it. V1: a REST answer cannot carry a router's question.
        let turn = Turn {
            service: self.clone(),
            request,
            protocol: Protocol::V1,
            awaiting: Arc::default(),
        };
        let peer = devices.chat_peer(user, device_id);
        turn.run(&peer).await;
        match peer.take_outcome() {
            // The device ran the writes: they are the reply's mutations, not actions.
            Some(ChatEvent::Final(reply)) => Ok(RestAnswer::Reply(FinalReply {
                actions: Vec::new(),
                ..reply
            })),
            Some(ChatEvent::Plan(plan)) => Ok(RestAnswer::Plan(plan)),
            Some(ChatEvent::Clarification(question)) => Ok(RestAnswer::Reply(FinalReply {
                response: question,
                ..FinalReply::default()
            })),
            Some(ChatEvent::Error(e)) => Err(e),
            Some(ChatEvent::Text(_)) | None => {
                Err(Error::internal("a device turn ended without an outcome"))
            }
        }
    }

    /// A socket's chat state, for `principal`.
    pub fn session(&self, principal: Principal) -> ChatSession {
        ChatSession {
            service: self.clone(),
            principal,
            awaiting: Arc::default(),
        }
    }

    fn clean_action(&self, a: PlanAction) -> PlanAction {
        let o = &self.orchestrator;
        PlanAction {
            kind: a.kind,
            table: a.table.map(|t| o.clean(&t)),
            data: a.data.map(|d| o.clean_value(&d)),
            agent: a.agent,
        }
    }

    /// `e` with every sentence sanitized (a provider's refusal may quote the prompt).
    fn clean_error(&self, e: Error) -> Error {
        let c = |s: String| self.orchestrator.clean(&s);
        match e {
            Error::Validation { field, message } => Error::Validation {
                field,
                message: c(message),
            },
            Error::BadRequest { code, detail } => Error::BadRequest {
                code,
                detail: c(detail),
            },
            Error::Unavailable { code, detail } => Error::Unavailable {
                code,
                detail: c(detail),
            },
            Error::TooLarge { code, detail } => Error::TooLarge {
                code,
                detail: c(detail),
            },
            Error::BadGateway { code, detail } => Error::BadGateway {
                code,
                detail: c(detail),
            },
            Error::Timeout {
                code,
                detail,
                partial,
            } => Error::Timeout {
                code,
                detail: c(detail),
                partial: c(partial),
            },
            other => other,
        }
    }
}

/// Why a socket request was not started.
#[derive(Debug)]
pub struct Refused {
    /// What to tell the client.
    pub error: Error,
    /// The account or session is gone: close the socket.
    pub close: bool,
}

/// One socket's chat state: the router's open question (v2) between turns.
pub struct ChatSession {
    service: ChatService,
    principal: Principal,
    awaiting: Arc<Mutex<Option<(ChatRequest, String)>>>,
}

impl ChatSession {
    /// Admits a request: re-checks the account and session (deleted, or revoked by
    /// refresh reuse, since the socket opened), counts the turn against the budget, and
    /// when the router asked a question last turn, makes this request its answer.
    pub async fn admit(&self, request: ChatRequest, protocol: Protocol) -> Result<Turn, Refused> {
        let current = self
            .service
            .auth
            .reauthenticate(&self.principal)
            .await
            .map_err(|error| Refused { error, close: true })?;
        if let Some(budget) = &self.service.budget {
            budget
                .check(&current, Cost::Chat)
                .await
                .map_err(|error| Refused {
                    error,
                    close: false,
                })?;
        }
        let earlier = self
            .awaiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let request = match earlier {
            Some((earlier, question)) => answering(&earlier, &question, request),
            None => request,
        };
        Ok(Turn {
            service: self.service.clone(),
            request,
            protocol,
            awaiting: self.awaiting.clone(),
        })
    }
}

/// An admitted socket turn.
pub struct Turn {
    service: ChatService,
    request: ChatRequest,
    protocol: Protocol,
    awaiting: Arc<Mutex<Option<(ChatRequest, String)>>>,
}

impl Turn {
    /// Runs the turn: `peer` receives the text as it is produced, runs the tools, and
    /// gets the last event. A question of the router is kept for the next request.
    pub async fn run(self, peer: &dyn ChatPeer) {
        let Turn {
            service,
            request,
            protocol,
            awaiting,
        } = self;
        let o = &service.orchestrator;
        let (text_tx, mut text_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let executor = PeerExecutor {
            peer,
            service: &service,
        };
        let chat = async {
            let r = o
                .orchestrate_stream(&request, &executor, &text_tx, protocol == Protocol::V2)
                .await;
            drop(text_tx);
            r
        };
        let forward = async {
            let mut clean: StreamSanitizer = o.stream_sanitizer();
            while let Some(piece) = text_rx.recv().await {
                let text = clean.push(&piece);
                if !text.is_empty() {
                    peer.event(ChatEvent::Text(text));
                }
            }
            let rest = clean.finish();
            if !rest.is_empty() {
                peer.event(ChatEvent::Text(rest));
            }
        };
        let (result, ()) = futures::future::join(chat, forward).await;
        let event = match result {
            Ok(ChatOutcome::Response(reply)) => ChatEvent::Final(final_reply(reply, Vec::new())),
            Ok(ChatOutcome::Plan(plan)) => ChatEvent::Plan(plan),
            Ok(ChatOutcome::Clarification(question)) => {
                *awaiting
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some((request, question.clone()));
                ChatEvent::Clarification(question)
            }
            Err(e) => ChatEvent::Error(service.clean_error(e)),
        };
        peer.event(event);
    }
}

/// Runs the orchestrator's tool calls on the peer, arguments cleaned first.
struct PeerExecutor<'a> {
    peer: &'a dyn ChatPeer,
    service: &'a ChatService,
}

#[async_trait]
impl ToolExecutor for PeerExecutor<'_> {
    async fn execute(
        &self,
        _call_id: &str,
        name: &str,
        arguments: &Value,
    ) -> Result<Value, String> {
        let arguments = match self.service.orchestrator.clean_value(arguments) {
            Value::Object(map) => map,
            // The executor contract promises an object; anything else is wrapped, not lost.
            other => Map::from_iter([("value".to_owned(), other)]),
        };
        self.peer
            .run_tool(ToolCall {
                name: name.to_owned(),
                arguments,
            })
            .await
    }
}

/// The typed end of an answered turn: `reply` as the orchestrator assembled it (already
/// sanitized whole) and the REST `actions` the service cleaned.
fn final_reply(reply: super::orchestrator::ChatReply, actions: Vec<PlanAction>) -> FinalReply {
    // The reply comes sanitized, whole, from the orchestrator's one assembly point
    // (`Orchestrator::assemble`); here it only gets its types.
    let directives = reply.directives;
    let new_scope = match directives.new_scope() {
        Some(Value::Object(f)) => Some(f),
        _ => None,
    };
    let navigation: Vec<Navigation> = directives
        .navigation
        .into_iter()
        .map(|n| Navigation {
            target: n["target"].as_str().unwrap_or_default().to_owned(),
            filter: match &n["filter"] {
                Value::Object(f) => f.clone(),
                _ => Map::new(),
            },
        })
        .collect();
    FinalReply {
        response: reply.response.response,
        actions,
        mutations: reply
            .mutations
            .into_iter()
            .map(|mut m| Mutation {
                action: m["action"].as_str().unwrap_or_default().to_owned(),
                table: m["table"].as_str().unwrap_or_default().to_owned(),
                data: m["data"].take(),
            })
            .collect(),
        new_scope,
        navigation,
        ui_directive: directives.ui_directive,
    }
}
