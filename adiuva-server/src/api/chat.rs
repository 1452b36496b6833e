//! `POST /chat` (plan 8a) and `/plans/playbook` (plan 8b). The WebSocket
//! `/chat/stream` lives in `crate::ws` (OpenAPI cannot describe it).

use adiuva_core::Adiuva;
use std::collections::BTreeMap;

use adiuva_core::chat::{ChatContext, ChatRequest, ExecutionMode, FinalReply, RestAnswer};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi, Union};
use serde_json::Value;

use super::auth::BillingTier;
use super::schema::{self, AnyObject};
use super::{ApiTags, BearerAuth, Described};
use crate::error::{ApiError, Coded, ErrorBody};
use crate::{api_errors, error_codes};

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
    pub context: Option<Described<schema::ChatContext>>,
    /// `direct` (default) or `plan`. (No schema `default`: generators would make the
    /// field required.)
    pub execution_mode: Option<ExecutionModeIn>,
    /// Your own model API key for this request only; never stored or logged. Trimmed;
    /// up to 512 bytes of visible ASCII (else 422). Absent or blank: the server's key.
    pub api_key: Option<String>,
    /// `home` (default) or `popup`.
    pub source: Option<ChatSource>,
    /// The popup's scope, e.g. `{"project_id": "…"}`.
    pub scope: Option<Described<schema::ChatScope>>,
}

/// `POST /chat`'s body: a chat request, and optionally the device to run its tools on.
#[derive(Debug, Object)]
pub struct ChatPostIn {
    /// The request.
    #[oai(flatten)]
    pub request: ChatRequestIn,
    /// Run the chat's tools on this device of yours (its `device_hello` id) over its
    /// device socket, wherever it is connected, instead of returning writes as
    /// `actions`: the answer then carries the writes the device ran as `mutations`. A
    /// device that is offline or does not answer within the tool timeout gives the model
    /// an error result. Unknown device: 404 `device_not_found`.
    #[oai(validator(min_length = 1, max_length = 128))]
    pub device_id: Option<String>,
}

/// Where the message was typed (v2).
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ChatSource {
    /// The main window.
    Home,
    /// A popup scoped to an entity (`scope`).
    Popup,
}

impl ChatSource {
    fn as_str(self) -> &'static str {
        match self {
            Self::Home => "home",
            Self::Popup => "popup",
        }
    }
}

/// What a [`PlanActionOut`] asks the client to do.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ActionType {
    /// Insert `data` into `table`.
    CreateRecord,
    /// Update the record `data.id` of `table` with the other fields of `data`.
    UpdateRecord,
    /// Delete the record `data.id` of `table`.
    DeleteRecord,
    /// Index a document for search.
    IndexDocument,
    /// Show a notification.
    SendNotification,
    /// Hand over to `agent`.
    CallAgent,
}

impl ActionType {
    fn parse(kind: &str) -> Option<Self> {
        Some(match kind {
            "create_record" => Self::CreateRecord,
            "update_record" => Self::UpdateRecord,
            "delete_record" => Self::DeleteRecord,
            "index_document" => Self::IndexDocument,
            "send_notification" => Self::SendNotification,
            "call_agent" => Self::CallAgent,
            _ => return None,
        })
    }
}

/// What the client should do (plan `PlanAction`).
#[derive(Debug, Object)]
pub struct PlanActionOut {
    /// `create_record`, `update_record`, `delete_record`, `index_document`,
    /// `send_notification` or `call_agent`.
    #[oai(rename = "type")]
    pub kind: ActionType,
    /// The client table.
    #[oai(nullable)]
    pub table: Option<String>,
    /// The record's fields.
    #[oai(nullable)]
    pub data: Option<Described<AnyObject>>,
    /// For `call_agent`.
    #[oai(nullable)]
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
    #[oai(nullable)]
    pub ui_directive: Option<Described<AnyObject>>,
    /// One `navigate` directive for each entity the answer is about that differs from
    /// `scope`'s.
    pub navigation: Vec<crate::frames::Navigation>,
    /// Whether the answer moved the client away from `scope`, and where to.
    pub context: ResponseContextOut,
    /// With `device_id` only: the writes the device ran during the turn (sanitized);
    /// `actions` is then empty.
    #[oai(skip_serializing_if_is_none)]
    pub mutations: Option<Vec<crate::frames::Mutation>>,
}

/// Plan `ResponseContext`.
#[derive(Debug, Object)]
pub struct ResponseContextOut {
    /// A navigation directive points elsewhere than `scope`.
    pub scope_changed: bool,
    /// The first navigation directive's `filter`, or null.
    #[oai(nullable)]
    pub new_scope: Option<BTreeMap<String, Value>>,
}

impl From<FinalReply> for ChatResponseOut {
    fn from(reply: FinalReply) -> Self {
        Self {
            response: reply.response,
            actions: actions_out(reply.actions),
            ui_directive: reply.ui_directive.map(Described::new),
            context: ResponseContextOut {
                scope_changed: !reply.navigation.is_empty(),
                new_scope: reply.new_scope.map(|s| s.into_iter().collect()),
            },
            navigation: reply.navigation.into_iter().map(Into::into).collect(),
            mutations: None,
        }
    }
}

impl ChatResponseOut {
    /// The answer of a turn whose tools ran on a device: its writes are `mutations`.
    fn from_device(mut reply: FinalReply) -> Self {
        let mutations = std::mem::take(&mut reply.mutations)
            .into_iter()
            .map(|m| crate::frames::Mutation {
                action: m.action,
                table: m.table,
                data: m.data,
            })
            .collect();
        Self {
            mutations: Some(mutations),
            ..reply.into()
        }
    }
}

/// One plan step: template ids, never prompt text (plan `PlanStep`).
#[derive(Debug, Object)]
pub struct PlanStepOut {
    /// What the step does.
    pub action: String,
    /// Server-side template id (`llm` steps).
    #[oai(nullable)]
    pub prompt_template: Option<String>,
    /// Variables or parameters.
    #[oai(nullable)]
    pub variables: Option<Described<AnyObject>>,
    /// Input from this earlier step (0-based).
    #[oai(nullable)]
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

/// `ChatResponse` for `direct`, `ExecutionPlan` for `plan`; `mode` says which.
#[derive(Debug, Union)]
#[oai(one_of, discriminator_name = "mode")]
pub enum ChatAnswer {
    /// Direct.
    #[oai(mapping = "direct")]
    Response(ChatResponseOut),
    /// Plan.
    #[oai(mapping = "plan")]
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
    pub min_tier: BillingTier,
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
                    variables: s.variables.map(Described::new),
                    data_from_step: s.data_from_step,
                })
                .collect(),
        }
    }
}

impl TryFrom<adiuva_core::chat::PlanAction> for PlanActionOut {
    type Error = String;

    /// Fails only on an action type the document does not list.
    fn try_from(a: adiuva_core::chat::PlanAction) -> Result<Self, Self::Error> {
        let kind = ActionType::parse(&a.kind).ok_or(a.kind)?;
        Ok(Self {
            kind,
            table: a.table,
            data: a.data.map(Described::new),
            agent: a.agent,
        })
    }
}

/// The actions as the document describes them, for `POST /chat` and the socket's `final`.
/// The core only makes the listed types (write tools become record actions); one it did
/// not would be a bug, logged and left out rather than sent undocumented.
pub fn actions_out(actions: Vec<adiuva_core::chat::PlanAction>) -> Vec<PlanActionOut> {
    actions
        .into_iter()
        .filter_map(|a| {
            PlanActionOut::try_from(a)
                .map_err(|kind| tracing::error!(kind, "bug: an action type the API does not list"))
                .ok()
        })
        .collect()
}

/// The core request from the API body (`context` must be an object).
pub fn to_core_request(body: ChatRequestIn) -> Result<ChatRequest, adiuva_core::Error> {
    let context: ChatContext = match body.context.map(|c| c.0) {
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
        execution_mode: match body.execution_mode.unwrap_or_default() {
            ExecutionModeIn::Direct => ExecutionMode::Direct,
            ExecutionModeIn::Plan => ExecutionMode::Plan,
        },
        api_key: adiuva_core::domain::ByokKey::parse_optional(body.api_key.as_deref())?,
        source: body.source.map(|s| s.as_str().to_owned()),
        scope: body.scope.map(|s| s.0),
    })
}

/// `chat_timeout`: the turn ran past `chat_turn_timeout_secs` and was stopped.
#[derive(Debug, Object)]
pub struct ChatTimeoutBody {
    /// A sentence for people.
    pub detail: String,
    /// `chat_timeout`.
    pub code: ChatTimeoutCode,
    /// The reply text written before the deadline (sanitized; may be empty). The
    /// turn's write actions are not included: a half-finished turn is not applied.
    pub partial_response: String,
}

/// The code of a [`ChatTimeoutBody`].
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ChatTimeoutCode {
    /// The turn's deadline passed.
    ChatTimeout,
}

/// Errors of a chat. Written out rather than declared with `api_errors!` because the
/// deadline's 504 carries the partial reply beside `{"detail", "code"}`.
#[derive(poem_openapi::ApiResponse, Debug)]
pub enum ChatError {
    /// `llm_key_rejected`: the model provider refused the API key.
    #[oai(status = 400)]
    BadRequest(Json<Coded<ChatError, 400>>),
    /// Missing or invalid access token.
    #[oai(status = 401)]
    Unauthorized(Json<Coded<ChatError, 401>>),
    /// The body is over the size limit, or `message_too_long`: the message cannot fit
    /// the model's context window even with all context dropped (no model was called).
    #[oai(status = 413)]
    PayloadTooLarge(Json<Coded<ChatError, 413>>),
    /// The body is not JSON.
    #[oai(status = 415)]
    UnsupportedMediaType(Json<Coded<ChatError, 415>>),
    /// Malformed JSON, an empty message or a context that is not an object.
    #[oai(status = 422)]
    Unprocessable(Json<Coded<ChatError, 422>>),
    /// `rate_limited`: over the per-minute budget; see `Retry-After`.
    #[oai(status = 429)]
    TooManyRequests(
        Json<Coded<ChatError, 429>>,
        /// Seconds until the budget has room again.
        #[oai(header = "Retry-After")]
        Option<u64>,
    ),
    /// `device_not_found`: `device_id` is not a device of yours.
    #[oai(status = 404)]
    NotFound(Json<Coded<ChatError, 404>>),
    /// Unexpected failure; details are in the server log under the request id.
    #[oai(status = 500)]
    Internal(Json<Coded<ChatError, 500>>),
    /// The model provider refused the request in a way a retry cannot change:
    /// `context_length_exceeded` (the prompt is longer than the model's real window:
    /// the server's `model_context_tokens` is set too high) or `llm_rejected` (e.g. an
    /// unknown model).
    #[oai(status = 502)]
    BadGateway(Json<Coded<ChatError, 502>>),
    /// `llm_unavailable`, `llm_rate_limited`: no model, or the provider is down or
    /// rate limiting after retries; retry later.
    #[oai(status = 503)]
    Unavailable(Json<Coded<ChatError, 503>>),
    /// `chat_timeout`: the turn took longer than `chat_turn_timeout_secs`; the text
    /// written so far is in `partial_response`.
    #[oai(status = 504)]
    Timeout(Json<ChatTimeoutBody>),
}

error_codes!(ChatError {
    400 => [llm_key_rejected],
    401 => [unauthorized],
    404 => [device_not_found],
    413 => [payload_too_large, message_too_long],
    415 => [unsupported_media_type],
    422 => [validation_error, malformed_json],
    429 => [rate_limited],
    500 => [internal_error],
    502 => [context_length_exceeded, llm_rejected],
    503 => [llm_unavailable, llm_rate_limited, database_unavailable],
});

impl From<ApiError> for ChatError {
    fn from(e: ApiError) -> Self {
        let (retry_after, body) = (e.retry_after, e.body);
        match e.status.as_u16() {
            400 => Self::BadRequest(Json(Coded::new(body))),
            401 => Self::Unauthorized(Json(Coded::new(body))),
            404 => Self::NotFound(Json(Coded::new(body))),
            413 => Self::PayloadTooLarge(Json(Coded::new(body))),
            415 => Self::UnsupportedMediaType(Json(Coded::new(body))),
            422 => Self::Unprocessable(Json(Coded::new(body))),
            429 => Self::TooManyRequests(Json(Coded::new(body)), retry_after),
            502 => Self::BadGateway(Json(Coded::new(body))),
            503 => Self::Unavailable(Json(Coded::new(body))),
            500 => Self::Internal(Json(Coded::new(body))),
            other => {
                tracing::error!(status = other, code = %body.code, "bug: status not declared for ChatError");
                Self::Internal(Json(Coded::new(ErrorBody {
                    detail: "internal server error".into(),
                    code: "internal_error".into(),
                })))
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
                // `chat_timeout` is the core's only timeout code.
                tracing::warn!(code, "chat turn stopped at its deadline");
                ChatError::Timeout(Json(ChatTimeoutBody {
                    detail,
                    code: ChatTimeoutCode::ChatTimeout,
                    partial_response: partial,
                }))
            }
            other => ApiError::from(other).into(),
        }
    }
}

api_errors!(
    /// Errors of listing playbooks.
    PlaybookListError {
        401 => Unauthorized [unauthorized]: "Missing or invalid access token.",
    }
    unavailable [llm_unavailable]
);

api_errors!(
    /// Errors of reading a playbook.
    PlaybookError {
        401 => Unauthorized [unauthorized]: "Missing or invalid access token.",
        403 => Forbidden [tier_required]: "`tier_required`: the playbook needs a higher tier.",
        404 => NotFound [not_found]: "No such playbook.",
    }
    unavailable [llm_unavailable]
);

/// Chat and plans.
pub struct ChatApi;

#[OpenApi(tag = "ApiTags::Chat")]
impl ChatApi {
    /// Send a message; get an answer (or, with `execution_mode: plan`, a plan).
    ///
    /// Tools run on the device, so here write tools become `actions` the client applies
    /// and read tools answer from `context` — or, with `device_id`, every tool runs on
    /// that device over its device socket (`WS /ws/device`) and the writes it ran come
    /// back as `mutations`. Use the WebSocket `/chat/stream` for streamed replies and
    /// live tool calls. No model configured (and no `api_key`) →
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
        auth: BearerAuth,
        body: Json<ChatPostIn>,
    ) -> Result<Json<ChatAnswer>, ChatError> {
        let ChatPostIn { request, device_id } = body.0;
        let req = to_core_request(request)?;
        let service = app.chat_service()?;
        let answer = match device_id {
            Some(device) => {
                match service
                    .device_turn(&auth.0, req, app.devices(), &device)
                    .await?
                {
                    RestAnswer::Reply(reply) => {
                        ChatAnswer::Response(ChatResponseOut::from_device(reply))
                    }
                    RestAnswer::Plan(plan) => ChatAnswer::Plan(plan.into()),
                }
            }
            None => match service.rest_turn(&req).await? {
                RestAnswer::Reply(reply) => ChatAnswer::Response(reply.into()),
                RestAnswer::Plan(plan) => ChatAnswer::Plan(plan.into()),
            },
        };
        Ok(Json(answer))
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
    ) -> Result<Json<Vec<PlaybookOut>>, PlaybookListError> {
        let tier = auth.0.user.tier;
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
        let tier = auth.0.user.tier;
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
        min_tier: p.min_tier.into(),
        plan: p.plan.clone().into(),
    }
}
