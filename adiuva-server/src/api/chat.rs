//! `POST /chat` (plan 8a) and `/plans/playbook` (plan 8b). The WebSocket
//! `/chat/stream` lives in `crate::ws` (OpenAPI cannot describe it).

use adiuva_core::Adiuva;
use adiuva_core::chat::agents::RestExecutor;
use adiuva_core::chat::orchestrator::ChatOutcome;
use adiuva_core::chat::{ChatContext, ChatRequest, ExecutionMode};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi, Union};
use serde_json::Value;

use super::{ApiTags, BearerAuth};
use crate::api_errors;
use crate::error::{ApiError, ErrorBody};

/// `direct` (answer) or `plan` (an execution plan of template ids).
#[derive(Debug, Clone, Copy, Enum, Default)]
#[oai(rename_all = "snake_case")]
pub enum ExecutionModeIn {
    /// Answer now.
    #[default]
    Direct,
    /// Return a plan.
    Plan,
}

/// A chat message (plan `ChatRequest`, with `api_key` (BYOK), `source` and `scope`).
#[derive(Debug, Object)]
pub struct ChatRequestIn {
    /// The user's message.
    pub message: String,
    /// Plan `ChatContext`: `user_profile`, `relevant_documents`, `recent_tasks`,
    /// `conversation_history`, and any other lists the device sends (`projects`,
    /// `notes`, `checkpoints`, `task_comments`), which read tools answer from. Used for
    /// this request only.
    pub context: Option<Value>,
    /// `direct` (default) or `plan`.
    #[oai(default)]
    pub execution_mode: ExecutionModeIn,
    /// Your own model API key for this request only; never stored or logged. Trimmed;
    /// up to 512 bytes of visible ASCII (else 422). Absent or blank: the server's key.
    pub api_key: Option<String>,
    /// `home` (default) or `popup`.
    pub source: Option<String>,
    /// The popup's scope, e.g. `{"project_id": "…"}`.
    pub scope: Option<Value>,
}

/// What the client should do (plan `PlanAction`).
#[derive(Debug, Object)]
pub struct PlanActionOut {
    /// `create_record`, `update_record`, `delete_record`, `index_document`,
    /// `send_notification` or `call_agent`.
    #[oai(rename = "type")]
    pub kind: String,
    /// The client table.
    pub table: Option<String>,
    /// The record's fields.
    pub data: Option<Value>,
    /// For `call_agent`.
    pub agent: Option<String>,
}

/// A direct answer (plan `ChatResponse`).
#[derive(Debug, Object)]
pub struct ChatResponseOut {
    /// The reply.
    pub response: String,
    /// The writes the client should apply (tools run on the device).
    pub actions: Vec<PlanActionOut>,
    /// What the client should render beside the text (plan step 24): a `task_card`,
    /// `chart` or `diagram` object, or null. The rules are in `ARCHITECTURE.md`.
    pub ui_directive: Option<Value>,
    /// `{"action": "navigate", "target", "filter"}` for each entity the answer is about
    /// that differs from `scope`'s.
    pub navigation: Vec<Value>,
    /// Whether the answer moved the client away from `scope`, and where to.
    pub context: ResponseContextOut,
}

/// Plan `ResponseContext`.
#[derive(Debug, Object)]
pub struct ResponseContextOut {
    /// A navigation directive points elsewhere than `scope`.
    pub scope_changed: bool,
    /// The first navigation directive's `filter`, or null.
    pub new_scope: Option<Value>,
}

impl ChatResponseOut {
    fn new(
        response: String,
        actions: Vec<PlanActionOut>,
        directives: adiuva_core::chat::directives::Directives,
    ) -> Self {
        Self {
            response,
            actions,
            context: ResponseContextOut {
                scope_changed: !directives.navigation.is_empty(),
                new_scope: directives.new_scope(),
            },
            ui_directive: directives.ui_directive,
            navigation: directives.navigation,
        }
    }
}

/// One plan step: template ids, never prompt text (plan `PlanStep`).
#[derive(Debug, Object)]
pub struct PlanStepOut {
    /// What the step does.
    pub action: String,
    /// Server-side template id (`llm` steps).
    pub prompt_template: Option<String>,
    /// Variables or parameters.
    pub variables: Option<Value>,
    /// Input from this earlier step (0-based).
    pub data_from_step: Option<i64>,
}

/// A plan (plan `ExecutionPlan`).
#[derive(Debug, Object)]
pub struct ExecutionPlanOut {
    /// The agent.
    pub agent: String,
    /// Steps in order.
    pub steps: Vec<PlanStepOut>,
}

/// `ChatResponse` for `direct`, `ExecutionPlan` for `plan`.
#[derive(Debug, Union)]
#[oai(one_of)]
pub enum ChatAnswer {
    /// Direct.
    Response(ChatResponseOut),
    /// Plan.
    Plan(ExecutionPlanOut),
}

/// A playbook: a prebuilt plan for a common operation.
#[derive(Debug, Object)]
pub struct PlaybookOut {
    /// Stable id.
    pub id: String,
    /// Title.
    pub title: String,
    /// What it does.
    pub description: String,
    /// The cheapest tier that has it.
    pub min_tier: String,
    /// The plan.
    pub plan: ExecutionPlanOut,
}

impl From<adiuva_core::chat::ExecutionPlan> for ExecutionPlanOut {
    fn from(p: adiuva_core::chat::ExecutionPlan) -> Self {
        Self {
            agent: p.agent,
            steps: p
                .steps
                .into_iter()
                .map(|s| PlanStepOut {
                    action: s.action,
                    prompt_template: s.prompt_template,
                    variables: s.variables,
                    data_from_step: s.data_from_step,
                })
                .collect(),
        }
    }
}

impl From<adiuva_core::chat::PlanAction> for PlanActionOut {
    fn from(a: adiuva_core::chat::PlanAction) -> Self {
        Self {
            kind: a.kind,
            table: a.table,
            data: a.data,
            agent: a.agent,
        }
    }
}

/// The core request from the API body (`context` must be an object).
pub fn to_core_request(body: ChatRequestIn) -> Result<ChatRequest, adiuva_core::Error> {
    let context: ChatContext = match body.context {
        None | Some(Value::Null) => ChatContext::default(),
        Some(v @ Value::Object(_)) => serde_json::from_value(v)
            .map_err(|e| adiuva_core::Error::validation("context", e.to_string()))?,
        Some(_) => {
            return Err(adiuva_core::Error::validation(
                "context",
                "must be an object",
            ));
        }
    };
    Ok(ChatRequest {
        message: body.message,
        context,
        execution_mode: match body.execution_mode {
            ExecutionModeIn::Direct => ExecutionMode::Direct,
            ExecutionModeIn::Plan => ExecutionMode::Plan,
        },
        api_key: adiuva_core::domain::ByokKey::parse_optional(body.api_key.as_deref())?,
        source: body.source,
        scope: body.scope,
    })
}

/// `chat_timeout`: the turn ran past `chat_turn_timeout_secs` and was stopped.
#[derive(Debug, Object)]
pub struct ChatTimeoutBody {
    /// A sentence for people.
    pub detail: String,
    /// `chat_timeout`.
    pub code: String,
    /// The reply text written before the deadline (sanitized; may be empty). The
    /// turn's write actions are not included: a half-finished turn is not applied.
    pub partial_response: String,
}

/// Errors of a chat. Written out rather than declared with `api_errors!` because the
/// deadline's 504 carries the partial reply beside `{"detail", "code"}`.
#[derive(poem_openapi::ApiResponse, Debug)]
pub enum ChatError {
    /// `llm_key_rejected`: the model provider refused the API key.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Missing or invalid access token.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The body is over the size limit, or `message_too_long`: the message cannot fit
    /// the model's context window even with all context dropped (no model was called).
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// The body is not JSON.
    #[oai(status = 415)]
    UnsupportedMediaType(Json<ErrorBody>),
    /// Malformed JSON, an empty message or a context that is not an object.
    #[oai(status = 422)]
    Unprocessable(Json<ErrorBody>),
    /// `rate_limited`: over the per-minute budget; see `Retry-After`.
    #[oai(status = 429)]
    TooManyRequests(Json<ErrorBody>),
    /// Unexpected failure; details are in the server log under the request id.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// The model provider refused the request in a way a retry cannot change:
    /// `context_length_exceeded` (the prompt is longer than the model's real window:
    /// the server's `model_context_tokens` is set too high) or `llm_rejected` (e.g. an
    /// unknown model).
    #[oai(status = 502)]
    BadGateway(Json<ErrorBody>),
    /// `llm_unavailable`, `llm_rate_limited`: no model, or the provider is down or
    /// rate limiting after retries; retry later.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
    /// `chat_timeout`: the turn took longer than `chat_turn_timeout_secs`; the text
    /// written so far is in `partial_response`.
    #[oai(status = 504)]
    Timeout(Json<ChatTimeoutBody>),
}

impl From<ApiError> for ChatError {
    fn from(e: ApiError) -> Self {
        let body = Json(e.body);
        match e.status.as_u16() {
            400 => Self::BadRequest(body),
            401 => Self::Unauthorized(body),
            413 => Self::PayloadTooLarge(body),
            415 => Self::UnsupportedMediaType(body),
            422 => Self::Unprocessable(body),
            429 => Self::TooManyRequests(body),
            502 => Self::BadGateway(body),
            503 => Self::Unavailable(body),
            500 => Self::Internal(body),
            other => {
                tracing::error!(status = other, code = %body.code, "bug: status not declared for ChatError");
                Self::Internal(Json(ErrorBody {
                    detail: "internal server error".into(),
                    code: "internal_error".into(),
                }))
            }
        }
    }
}

impl From<adiuva_core::Error> for ChatError {
    fn from(e: adiuva_core::Error) -> Self {
        match e {
            adiuva_core::Error::Timeout {
                code,
                detail,
                partial,
            } => {
                tracing::warn!(code, "chat turn stopped at its deadline");
                ChatError::Timeout(Json(ChatTimeoutBody {
                    detail,
                    code: code.to_owned(),
                    partial_response: partial,
                }))
            }
            other => ApiError::from(other).into(),
        }
    }
}

api_errors!(
    /// Errors of reading playbooks.
    PlaybookError {
        401 => Unauthorized: "Missing or invalid access token.",
        403 => Forbidden: "`tier_required`: the playbook needs a higher tier.",
        404 => NotFound: "No such playbook.",
    }
);

/// Chat and plans.
pub struct ChatApi;

#[OpenApi(tag = "ApiTags::Chat")]
impl ChatApi {
    /// Send a message; get an answer (or, with `execution_mode: plan`, a plan).
    ///
    /// Tools run on the device, so here write tools become `actions` the client applies
    /// and read tools answer from `context`. Use the WebSocket `/chat/stream` for
    /// streamed replies and live tool calls. No model configured (and no `api_key`) →
    /// 503 `llm_unavailable`.
    ///
    /// Bounded: the prompt is fitted to the model's context window (oldest history and
    /// context dropped first; a message that cannot fit → 413 `message_too_long`), every
    /// model reply has a token limit, and the turn has a deadline (504 `chat_timeout`
    /// with `partial_response`).
    #[oai(path = "/chat", method = "post", operation_id = "chat")]
    async fn chat(
        &self,
        app: Data<&Adiuva>,
        _auth: BearerAuth,
        body: Json<ChatRequestIn>,
    ) -> Result<Json<ChatAnswer>, ChatError> {
        let req = to_core_request(body.0)?;
        let orchestrator = app.chat()?;
        let executor = RestExecutor::new(
            orchestrator.registry(),
            req.context.clone(),
            orchestrator.now_ms(),
        );
        match orchestrator
            .orchestrate(&req, &executor, None, false)
            .await?
        {
            ChatOutcome::Response(reply) => Ok(Json(ChatAnswer::Response(ChatResponseOut::new(
                reply.response.response,
                executor
                    .take_actions()
                    .into_iter()
                    .map(Into::into)
                    .collect(),
                reply.directives,
            )))),
            ChatOutcome::Plan(plan) => Ok(Json(ChatAnswer::Plan(plan.into()))),
            ChatOutcome::Clarification(question) => Ok(Json(ChatAnswer::Response(
                ChatResponseOut::new(question, Vec::new(), Default::default()),
            ))),
        }
    }

    /// The playbooks your tier can run.
    #[oai(
        path = "/plans/playbook",
        method = "get",
        operation_id = "list_playbooks"
    )]
    async fn playbooks(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
    ) -> Result<Json<Vec<PlaybookOut>>, PlaybookError> {
        let tier = app.tiers().get_tier(auth.0).await?;
        let orchestrator = app.chat()?;
        Ok(Json(
            orchestrator
                .playbooks()
                .for_tier(tier)
                .into_iter()
                .map(playbook_out)
                .collect(),
        ))
    }

    /// One playbook.
    #[oai(
        path = "/plans/playbook/:id",
        method = "get",
        operation_id = "get_playbook"
    )]
    async fn playbook(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
        id: Path<String>,
    ) -> Result<Json<PlaybookOut>, PlaybookError> {
        let tier = app.tiers().get_tier(auth.0).await?;
        let orchestrator = app.chat()?;
        let playbook = orchestrator
            .playbooks()
            .get(&id.0, tier)
            .map_err(|e| match e {
                adiuva_core::chat::plans::PlaybookError::NotFound => {
                    adiuva_core::Error::NotFound("playbook")
                }
                adiuva_core::chat::plans::PlaybookError::TierRequired { min } => {
                    adiuva_core::Error::Forbidden {
                        code: "tier_required",
                        detail: format!("this playbook requires the {min} tier or above"),
                    }
                }
                other => adiuva_core::Error::internal(other.to_string()),
            })?;
        Ok(Json(playbook_out(playbook)))
    }
}

fn playbook_out(p: &adiuva_core::chat::plans::Playbook) -> PlaybookOut {
    PlaybookOut {
        id: p.id.to_string(),
        title: p.title.to_string(),
        description: p.description.to_string(),
        min_tier: p.min_tier.to_string(),
        plan: p.plan.clone().into(),
    }
}
