//! `/agents/*` (issue 12): the agent catalog, local and cloud agent configs, manual runs,
//! the run log and the setup journey. Scheduled runs start by themselves (the scheduler,
//! `adiuva_core::agents`); a local run reaches the device as an `agent_trigger` frame and
//! every run's results arrive as `notification` frames of kind `agent_result` on the
//! device socket (AsyncAPI document).

use std::collections::BTreeMap;

use adiuva_core::Adiuva;
use adiuva_core::agents::{AgentInput, AgentPatch, AgentView, CatalogItem, JourneyReply};
use adiuva_core::ports::db::{AgentKind, AgentRun, AgentStatus, RunStatus, RunTrigger};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};
use serde_json::{Map, Value};

use super::{ApiTags, BearerAuth, Ok, path_id};
use crate::api_errors;
use crate::error::ApiError;

/// Where an agent reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum AgentKindOut {
    /// Reads the user's device (triggered over the device socket).
    Local,
    /// Reads a provider (Gmail, Outlook, Teams) with the user's OAuth token.
    Cloud,
}

impl From<AgentKind> for AgentKindOut {
    fn from(k: AgentKind) -> Self {
        match k {
            AgentKind::Local => Self::Local,
            AgentKind::Cloud => Self::Cloud,
        }
    }
}

/// Whether an agent may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum AgentStatusOut {
    /// Runs on its schedule while enabled.
    Active,
    /// The provider refused its token: paused until a new `oauth_token_encrypted` is set.
    NeedsReauth,
}

impl From<AgentStatus> for AgentStatusOut {
    fn from(s: AgentStatus) -> Self {
        match s {
            AgentStatus::Active => Self::Active,
            AgentStatus::NeedsReauth => Self::NeedsReauth,
        }
    }
}

/// A run's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum RunStatusOut {
    /// Claimed, not started.
    Queued,
    /// Executing (a local run: waiting for its device's data).
    Running,
    /// Finished; results delivered (or nothing to deliver).
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Not run (overlap, no device…; `error` says why).
    Skipped,
    /// The provider refused the token; the agent is paused.
    NeedsReauth,
}

impl From<RunStatus> for RunStatusOut {
    fn from(s: RunStatus) -> Self {
        match s {
            RunStatus::Queued => Self::Queued,
            RunStatus::Running => Self::Running,
            RunStatus::Succeeded => Self::Succeeded,
            RunStatus::Failed => Self::Failed,
            RunStatus::Skipped => Self::Skipped,
            RunStatus::NeedsReauth => Self::NeedsReauth,
        }
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum RunTriggerOut {
    /// `POST /agents/{id}/run`.
    Manual,
    /// Its schedule.
    Schedule,
}

impl From<RunTrigger> for RunTriggerOut {
    fn from(t: RunTrigger) -> Self {
        match t {
            RunTrigger::Manual => Self::Manual,
            RunTrigger::Schedule => Self::Schedule,
        }
    }
}

/// One built-in agent type.
#[derive(Debug, Object)]
pub struct AgentCatalogItem {
    /// Its id (the configs' `agent_type`).
    pub agent_type: String,
    /// Display name.
    pub name: String,
    /// One sentence.
    pub description: String,
    /// Local (reads the device) or cloud (reads a provider).
    pub kind: AgentKindOut,
    /// Local data types (`tasks`, `files`, …) or sources (`gmail`, `outlook`, `teams`).
    pub reads: Vec<String>,
    /// Cloud: the providers it can read (`google`, `microsoft`); empty for local agents.
    pub providers: Vec<String>,
    /// What it produces (`suggested_tasks`, `digest_note`, …).
    pub produces: Vec<String>,
    /// Cron (5 fields), read in the config's time zone.
    pub default_schedule: String,
    /// The filters it understands: name → what it does.
    pub filters: BTreeMap<String, String>,
    /// The OAuth scopes it asks each provider for (empty for local agents).
    pub scopes: BTreeMap<String, Vec<String>>,
}

impl From<&CatalogItem> for AgentCatalogItem {
    fn from(c: &CatalogItem) -> Self {
        Self {
            agent_type: c.agent_type.into(),
            name: c.name.into(),
            description: c.description.into(),
            kind: c.kind.into(),
            reads: c.reads.iter().map(|s| (*s).to_owned()).collect(),
            providers: c.providers.iter().map(|p| p.as_str().to_owned()).collect(),
            produces: c.produces.iter().map(|s| (*s).to_owned()).collect(),
            default_schedule: c.default_schedule.into(),
            filters: c
                .filters
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            scopes: c
                .scopes()
                .into_iter()
                .map(|(p, s)| {
                    (
                        p.as_str().to_owned(),
                        s.iter().map(|s| (*s).to_owned()).collect(),
                    )
                })
                .collect(),
        }
    }
}

/// A new local agent (reads your device).
#[derive(Debug, Object)]
pub struct LocalAgentConfigCreate {
    /// 1–100 characters.
    pub name: String,
    /// A local type of the catalog.
    pub agent_type: String,
    /// Cron (5 fields). Absent: the type's default; empty: runs only when asked.
    pub schedule: Option<String>,
    /// IANA time zone the schedule is read in (default `UTC`).
    pub timezone: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
    /// Type-specific filters (see the catalog); at most 4 KiB of JSON.
    pub filters: Option<BTreeMap<String, Value>>,
    /// `{"device_id": "…"}` (deliver to that device only) or `{}` (all your devices).
    pub output: Option<BTreeMap<String, Value>>,
    /// A template id (from the catalog or a journey); absent: the type's default.
    pub prompt_template: Option<String>,
}

/// Changes to a local agent: what is present changes.
#[derive(Debug, Object)]
pub struct LocalAgentConfigUpdate {
    /// New name.
    pub name: Option<String>,
    /// New cron (empty: runs only when asked).
    pub schedule: Option<String>,
    /// New time zone.
    pub timezone: Option<String>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// New filters.
    pub filters: Option<BTreeMap<String, Value>>,
    /// New output.
    pub output: Option<BTreeMap<String, Value>>,
    /// New template id.
    pub prompt_template: Option<String>,
}

/// A local agent.
#[derive(Debug, Object)]
pub struct LocalAgentConfigResponse {
    /// UUID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Catalog type.
    pub agent_type: String,
    /// Cron, or null (runs only when asked).
    #[oai(nullable)]
    pub schedule: Option<String>,
    /// IANA time zone.
    pub timezone: String,
    /// Runs on its schedule.
    pub enabled: bool,
    /// Filters.
    pub filters: BTreeMap<String, Value>,
    /// Output.
    pub output: BTreeMap<String, Value>,
    /// Template id.
    pub prompt_template: String,
    /// `active`, or `needs_reauth` (cloud agents only).
    pub status: AgentStatusOut,
    /// Next scheduled run, ms since the epoch (null: none scheduled).
    #[oai(nullable)]
    pub next_run_at: Option<i64>,
    /// Created, ms since the epoch.
    pub created_at: i64,
    /// Last changed, ms since the epoch.
    pub updated_at: i64,
}

/// A new cloud agent (reads a provider).
#[derive(Debug, Object)]
pub struct CloudAgentConfigCreate {
    /// 1–100 characters.
    pub name: String,
    /// A cloud type of the catalog.
    pub agent_type: String,
    /// `google` or `microsoft`: one the type reads.
    pub provider: String,
    /// The `encrypted_token` `GET /oauth/{provider}/callback` answered.
    pub oauth_token_encrypted: String,
    /// Cron (5 fields). Absent: the type's default; empty: runs only when asked.
    pub schedule: Option<String>,
    /// IANA time zone the schedule is read in (default `UTC`).
    pub timezone: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
    /// Type-specific filters (see the catalog); at most 4 KiB of JSON.
    pub filters: Option<BTreeMap<String, Value>>,
    /// `{"device_id": "…"}` (deliver to that device only) or `{}` (all your devices).
    pub output: Option<BTreeMap<String, Value>>,
    /// A template id; absent: the type's default.
    pub prompt_template: Option<String>,
}

/// Changes to a cloud agent: what is present changes.
#[derive(Debug, Object)]
pub struct CloudAgentConfigUpdate {
    /// New name.
    pub name: Option<String>,
    /// New cron (empty: runs only when asked).
    pub schedule: Option<String>,
    /// New time zone.
    pub timezone: Option<String>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// New filters.
    pub filters: Option<BTreeMap<String, Value>>,
    /// New output.
    pub output: Option<BTreeMap<String, Value>>,
    /// New template id.
    pub prompt_template: Option<String>,
    /// A new token from the OAuth callback (re-authorisation; ends `needs_reauth`).
    pub oauth_token_encrypted: Option<String>,
}

/// A cloud agent (its token is never shown).
#[derive(Debug, Object)]
pub struct CloudAgentConfigResponse {
    /// UUID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Catalog type.
    pub agent_type: String,
    /// `google` or `microsoft`.
    pub provider: String,
    /// Whether a token is stored.
    pub connected: bool,
    /// Cron, or null (runs only when asked).
    #[oai(nullable)]
    pub schedule: Option<String>,
    /// IANA time zone.
    pub timezone: String,
    /// Runs on its schedule.
    pub enabled: bool,
    /// Filters.
    pub filters: BTreeMap<String, Value>,
    /// Output.
    pub output: BTreeMap<String, Value>,
    /// Template id.
    pub prompt_template: String,
    /// `active`, or `needs_reauth`: the provider refused the token; connect again.
    pub status: AgentStatusOut,
    /// Next scheduled run, ms since the epoch (null: none scheduled).
    #[oai(nullable)]
    pub next_run_at: Option<i64>,
    /// Created, ms since the epoch.
    pub created_at: i64,
    /// Last changed, ms since the epoch.
    pub updated_at: i64,
}

fn map(m: Option<BTreeMap<String, Value>>) -> Map<String, Value> {
    m.map(|m| m.into_iter().collect()).unwrap_or_default()
}

fn tree(m: Map<String, Value>) -> BTreeMap<String, Value> {
    m.into_iter().collect()
}

impl From<LocalAgentConfigCreate> for AgentInput {
    fn from(c: LocalAgentConfigCreate) -> Self {
        Self {
            name: c.name,
            agent_type: c.agent_type,
            schedule: c.schedule,
            timezone: c.timezone,
            enabled: c.enabled,
            filters: map(c.filters),
            output: map(c.output),
            prompt_template: c.prompt_template,
            provider: None,
            oauth_token_encrypted: None,
        }
    }
}

impl From<CloudAgentConfigCreate> for AgentInput {
    fn from(c: CloudAgentConfigCreate) -> Self {
        Self {
            name: c.name,
            agent_type: c.agent_type,
            schedule: c.schedule,
            timezone: c.timezone,
            enabled: c.enabled,
            filters: map(c.filters),
            output: map(c.output),
            prompt_template: c.prompt_template,
            provider: Some(c.provider),
            oauth_token_encrypted: Some(c.oauth_token_encrypted),
        }
    }
}

impl From<LocalAgentConfigUpdate> for AgentPatch {
    fn from(u: LocalAgentConfigUpdate) -> Self {
        Self {
            name: u.name,
            schedule: u.schedule,
            timezone: u.timezone,
            enabled: u.enabled,
            filters: u.filters.map(|m| m.into_iter().collect()),
            output: u.output.map(|m| m.into_iter().collect()),
            prompt_template: u.prompt_template,
            oauth_token_encrypted: None,
        }
    }
}

impl From<CloudAgentConfigUpdate> for AgentPatch {
    fn from(u: CloudAgentConfigUpdate) -> Self {
        Self {
            name: u.name,
            schedule: u.schedule,
            timezone: u.timezone,
            enabled: u.enabled,
            filters: u.filters.map(|m| m.into_iter().collect()),
            output: u.output.map(|m| m.into_iter().collect()),
            prompt_template: u.prompt_template,
            oauth_token_encrypted: u.oauth_token_encrypted,
        }
    }
}

impl From<AgentView> for LocalAgentConfigResponse {
    fn from(v: AgentView) -> Self {
        Self {
            id: v.id.to_string(),
            name: v.name,
            agent_type: v.agent_type,
            schedule: v.schedule,
            timezone: v.timezone,
            enabled: v.enabled,
            filters: tree(v.filters),
            output: tree(v.output),
            prompt_template: v.prompt_template,
            status: v.status.into(),
            next_run_at: v.next_run_at,
            created_at: v.created_at,
            updated_at: v.updated_at,
        }
    }
}

impl From<AgentView> for CloudAgentConfigResponse {
    fn from(v: AgentView) -> Self {
        Self {
            id: v.id.to_string(),
            name: v.name,
            agent_type: v.agent_type,
            provider: v.provider.unwrap_or_default(),
            connected: v.connected,
            schedule: v.schedule,
            timezone: v.timezone,
            enabled: v.enabled,
            filters: tree(v.filters),
            output: tree(v.output),
            prompt_template: v.prompt_template,
            status: v.status.into(),
            next_run_at: v.next_run_at,
            created_at: v.created_at,
            updated_at: v.updated_at,
        }
    }
}

/// One run of an agent: counts and ids only, never content.
#[derive(Debug, Object)]
pub struct AgentRunLogResponse {
    /// Run UUID.
    pub id: String,
    /// The agent's UUID.
    pub agent_id: String,
    /// State.
    pub status: RunStatusOut,
    /// Manual or scheduled.
    pub trigger: RunTriggerOut,
    /// The schedule slot it ran for, ms since the epoch (null for manual runs).
    #[oai(nullable)]
    pub scheduled_for: Option<i64>,
    /// Started, ms since the epoch (null while queued or when skipped).
    #[oai(nullable)]
    pub started_at: Option<i64>,
    /// Finished, ms since the epoch (null while queued or running).
    #[oai(nullable)]
    pub finished_at: Option<i64>,
    /// Mails, messages or local items read.
    pub items_read: i64,
    /// Results produced (tasks, notes…).
    pub items_produced: i64,
    /// Why it failed or was skipped (null otherwise).
    #[oai(nullable)]
    pub error: Option<String>,
}

impl From<AgentRun> for AgentRunLogResponse {
    fn from(r: AgentRun) -> Self {
        Self {
            id: r.id.to_string(),
            agent_id: r.agent_id.to_string(),
            status: r.status.into(),
            trigger: r.trigger.into(),
            scheduled_for: r.scheduled_for,
            started_at: r.started_at,
            finished_at: r.finished_at,
            items_read: r.items_read,
            items_produced: r.items_produced,
            error: r.error,
        }
    }
}

/// A manual run started.
#[derive(Debug, Object)]
pub struct AgentRunStarted {
    /// Always true.
    pub ok: bool,
    /// The run's UUID (see `GET /agents/runs`; a local run's `agent_trigger` carries it).
    pub run_id: String,
}

/// Start a setup conversation.
#[derive(Debug, Object)]
pub struct JourneyStartRequest {
    /// A catalog type.
    pub agent_type: String,
    /// Local data types the user offers (`tasks`, `files`, …); may be empty.
    #[oai(default)]
    pub data_types: Vec<String>,
}

/// Continue a setup conversation.
#[derive(Debug, Object)]
pub struct JourneyMessageRequest {
    /// From the start's answer.
    pub session_id: String,
    /// The user's reply.
    pub message: String,
}

/// A config the journey produced, ready to `POST /agents/local` or `/agents/cloud`
/// (a cloud one after adding `oauth_token_encrypted`).
#[derive(Debug, Object)]
pub struct JourneyConfig {
    /// Name.
    pub name: String,
    /// Catalog type.
    pub agent_type: String,
    /// Cron, or null (the type's default).
    #[oai(nullable)]
    pub schedule: Option<String>,
    /// IANA zone, or null (`UTC`).
    #[oai(nullable)]
    pub timezone: Option<String>,
    /// Filters.
    pub filters: BTreeMap<String, Value>,
    /// Template id.
    #[oai(nullable)]
    pub prompt_template: Option<String>,
    /// Cloud: the provider; null for local types.
    #[oai(nullable)]
    pub provider: Option<String>,
}

/// One step of the setup conversation.
#[derive(Debug, Object)]
pub struct JourneyResponse {
    /// The session (send it with the next message).
    pub session_id: String,
    /// The assistant's message.
    pub message: String,
    /// The conversation ended with a config.
    pub done: bool,
    /// When done: the template id the config runs.
    #[oai(skip_serializing_if_is_none)]
    pub prompt_template: Option<String>,
    /// When done: the config to create.
    #[oai(skip_serializing_if_is_none)]
    pub config: Option<JourneyConfig>,
}

impl From<JourneyReply> for JourneyResponse {
    fn from(r: JourneyReply) -> Self {
        Self {
            session_id: r.session_id.to_string(),
            message: r.message,
            done: r.done,
            prompt_template: r.prompt_template,
            config: r.config.map(|c| JourneyConfig {
                name: c.name,
                agent_type: c.agent_type,
                schedule: c.schedule,
                timezone: c.timezone,
                filters: tree(c.filters),
                prompt_template: c.prompt_template,
                provider: c.provider,
            }),
        }
    }
}

api_errors!(
    /// Errors of reading the catalog or listing agents.
    AgentReadError {
        401 => Unauthorized [unauthorized]: "Missing or invalid access token.",
    }
);

api_errors!(
    /// Errors of creating an agent.
    AgentCreateError {
        401 => Unauthorized [unauthorized]: "Missing or invalid access token.",
        403 => Forbidden [quota_exceeded, tier_required]: "`quota_exceeded`: over your tier's agents, enabled agents or connected providers; `tier_required`: your tier has no agents of this kind.",
        413 => PayloadTooLarge [payload_too_large]: "The body is over the size limit.",
        415 => UnsupportedMediaType [unsupported_media_type]: "The body is not JSON.",
        422 => Unprocessable [validation_error, malformed_json]: "Malformed JSON, an unknown type, a bad name, cron, time zone, filters or output, or (cloud) a provider the type does not read or a token that does not open.",
    }
    unavailable [oauth_not_configured]
);

api_errors!(
    /// Errors of changing an agent.
    AgentUpdateError {
        401 => Unauthorized [unauthorized]: "Missing or invalid access token.",
        403 => Forbidden [quota_exceeded, tier_required]: "`quota_exceeded`: enabling it goes over your tier's enabled agents.",
        404 => NotFound [agent_not_found]: "`agent_not_found`: no such agent of yours (of this kind).",
        413 => PayloadTooLarge [payload_too_large]: "The body is over the size limit.",
        415 => UnsupportedMediaType [unsupported_media_type]: "The body is not JSON.",
        422 => Unprocessable [validation_error, malformed_json]: "Malformed JSON or a bad field.",
    }
    unavailable [oauth_not_configured]
);

api_errors!(
    /// Errors of deleting an agent.
    AgentDeleteError {
        401 => Unauthorized [unauthorized]: "Missing or invalid access token.",
        404 => NotFound [agent_not_found]: "`agent_not_found`: no such agent of yours (of this kind).",
    }
);

api_errors!(
    /// Errors of starting a run.
    AgentRunError {
        401 => Unauthorized [unauthorized]: "Missing or invalid access token.",
        403 => Forbidden [needs_reauth, tier_required, quota_exceeded]: "`needs_reauth`: the provider refused the agent's token; connect it again.",
        404 => NotFound [agent_not_found]: "`agent_not_found`: no such agent of yours.",
        409 => Conflict [run_in_progress]: "`run_in_progress`: the agent has a run queued or running.",
    }
    unavailable [oauth_not_configured, llm_unavailable]
);

api_errors!(
    /// Errors of listing runs.
    RunListError {
        401 => Unauthorized [unauthorized]: "Missing or invalid access token.",
        404 => NotFound [agent_not_found]: "`agent_not_found`: `agent_id` is not an agent of yours.",
        422 => Unprocessable [validation_error]: "A bad `agent_id` or paging parameter.",
    }
);

api_errors!(
    /// Errors of a setup-journey step.
    JourneyError {
        400 => BadRequest [journey_done, llm_key_rejected]: "`journey_done`: the conversation already ended with a config.",
        401 => Unauthorized [unauthorized]: "Missing or invalid access token.",
        403 => Forbidden [tier_required]: "`tier_required`: your tier has no agents.",
        404 => NotFound [journey_not_found]: "`journey_not_found`: no such session of yours, or it expired.",
        413 => PayloadTooLarge [payload_too_large, message_too_long]: "The body is over the size limit, or the message cannot fit the model's context.",
        415 => UnsupportedMediaType [unsupported_media_type]: "The body is not JSON.",
        422 => Unprocessable [validation_error, malformed_json]: "Malformed JSON, an unknown agent type or an empty message.",
        502 => BadGateway [context_length_exceeded, llm_rejected]: "The model provider refused the request.",
        504 => Timeout [chat_timeout]: "The model took too long.",
    }
    unavailable [llm_unavailable, llm_rate_limited]
);

/// The agents platform.
pub struct AgentsApi;

fn agent_id(raw: &str) -> Result<uuid::Uuid, adiuva_core::Error> {
    path_id(raw, "agent")
}

#[OpenApi(tag = "ApiTags::Agents")]
impl AgentsApi {
    /// The built-in agent types.
    #[oai(
        path = "/agents/catalog",
        method = "get",
        operation_id = "agent_catalog"
    )]
    async fn catalog(
        &self,
        _auth: BearerAuth,
    ) -> Result<Json<Vec<AgentCatalogItem>>, AgentReadError> {
        Ok(Json(
            adiuva_core::agents::catalog()
                .iter()
                .map(Into::into)
                .collect(),
        ))
    }

    /// Your local agents, oldest first.
    #[oai(
        path = "/agents/local",
        method = "get",
        operation_id = "list_local_agents"
    )]
    async fn list_local(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
    ) -> Result<Json<Vec<LocalAgentConfigResponse>>, AgentReadError> {
        let rows = app.agents().list(&auth.0, AgentKind::Local).await?;
        Ok(Json(rows.into_iter().map(Into::into).collect()))
    }

    /// Create a local agent.
    #[oai(
        path = "/agents/local",
        method = "post",
        operation_id = "create_local_agent"
    )]
    async fn create_local(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
        body: Json<LocalAgentConfigCreate>,
    ) -> Result<Json<LocalAgentConfigResponse>, AgentCreateError> {
        let view = app
            .agents()
            .create(&auth.0, AgentKind::Local, body.0.into())
            .await?;
        Ok(Json(view.into()))
    }

    /// Change a local agent.
    #[oai(
        path = "/agents/local/:id",
        method = "put",
        operation_id = "update_local_agent"
    )]
    async fn update_local(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
        id: Path<String>,
        body: Json<LocalAgentConfigUpdate>,
    ) -> Result<Json<LocalAgentConfigResponse>, AgentUpdateError> {
        let id = agent_id(&id.0)?;
        let view = app
            .agents()
            .update(&auth.0, AgentKind::Local, id, body.0.into())
            .await?;
        Ok(Json(view.into()))
    }

    /// Delete a local agent and its run log.
    #[oai(
        path = "/agents/local/:id",
        method = "delete",
        operation_id = "delete_local_agent"
    )]
    async fn delete_local(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
        id: Path<String>,
    ) -> Result<Json<Ok>, AgentDeleteError> {
        let id = agent_id(&id.0)?;
        app.agents().delete(&auth.0, AgentKind::Local, id).await?;
        Ok(Json(Ok::yes()))
    }

    /// Your cloud agents, oldest first (never their tokens).
    #[oai(
        path = "/agents/cloud",
        method = "get",
        operation_id = "list_cloud_agents"
    )]
    async fn list_cloud(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
    ) -> Result<Json<Vec<CloudAgentConfigResponse>>, AgentReadError> {
        let rows = app.agents().list(&auth.0, AgentKind::Cloud).await?;
        Ok(Json(rows.into_iter().map(Into::into).collect()))
    }

    /// Create a cloud agent with the token the OAuth callback answered.
    #[oai(
        path = "/agents/cloud",
        method = "post",
        operation_id = "create_cloud_agent"
    )]
    async fn create_cloud(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
        body: Json<CloudAgentConfigCreate>,
    ) -> Result<Json<CloudAgentConfigResponse>, AgentCreateError> {
        let view = app
            .agents()
            .create(&auth.0, AgentKind::Cloud, body.0.into())
            .await?;
        Ok(Json(view.into()))
    }

    /// Change a cloud agent (a new `oauth_token_encrypted` re-connects it).
    #[oai(
        path = "/agents/cloud/:id",
        method = "put",
        operation_id = "update_cloud_agent"
    )]
    async fn update_cloud(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
        id: Path<String>,
        body: Json<CloudAgentConfigUpdate>,
    ) -> Result<Json<CloudAgentConfigResponse>, AgentUpdateError> {
        let id = agent_id(&id.0)?;
        let view = app
            .agents()
            .update(&auth.0, AgentKind::Cloud, id, body.0.into())
            .await?;
        Ok(Json(view.into()))
    }

    /// Delete a cloud agent and its run log.
    #[oai(
        path = "/agents/cloud/:id",
        method = "delete",
        operation_id = "delete_cloud_agent"
    )]
    async fn delete_cloud(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
        id: Path<String>,
    ) -> Result<Json<Ok>, AgentDeleteError> {
        let id = agent_id(&id.0)?;
        app.agents().delete(&auth.0, AgentKind::Cloud, id).await?;
        Ok(Json(Ok::yes()))
    }

    /// Your agents' runs, newest first.
    #[oai(
        path = "/agents/runs",
        method = "get",
        operation_id = "list_agent_runs"
    )]
    async fn runs(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
        /// Only this agent's runs.
        agent_id: Query<Option<String>>,
        /// Page, from 1.
        #[oai(default = "default_page", validator(minimum(value = "1")))]
        page: Query<u64>,
        /// Page size, 1 to 100.
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "100"))
        )]
        limit: Query<u64>,
    ) -> Result<Json<Vec<AgentRunLogResponse>>, RunListError> {
        let agent = match agent_id.0.as_deref() {
            None => None,
            Some(raw) => Some(uuid::Uuid::parse_str(raw.trim()).map_err(|_| {
                adiuva_core::Error::validation("agent_id", "agent_id must be a UUID")
            })?),
        };
        let rows = app.agents().runs(&auth.0, agent, page.0, limit.0).await?;
        Ok(Json(rows.into_iter().map(Into::into).collect()))
    }

    /// Run an agent now (in the background). A local agent's devices get an
    /// `agent_trigger`; results arrive as `agent_result` notifications.
    #[oai(path = "/agents/:id/run", method = "post", operation_id = "run_agent")]
    async fn run(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
        id: Path<String>,
    ) -> Result<Json<AgentRunStarted>, AgentRunError> {
        let id = agent_id(&id.0)?;
        let run_id = app.agents().run_now(&auth.0, id).await.map_err(run_error)?;
        Ok(Json(AgentRunStarted {
            ok: true,
            run_id: run_id.to_string(),
        }))
    }

    /// Start a setup conversation for an agent type: the model asks what to watch
    /// and when, and ends with a ready config.
    #[oai(
        path = "/agents/journey/start",
        method = "post",
        operation_id = "journey_start"
    )]
    async fn journey_start(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
        body: Json<JourneyStartRequest>,
    ) -> Result<Json<JourneyResponse>, JourneyError> {
        let reply = app
            .agents()
            .journey_start(&auth.0, &body.0.agent_type, body.0.data_types)
            .await?;
        Ok(Json(reply.into()))
    }

    /// Answer the setup conversation.
    #[oai(
        path = "/agents/journey/message",
        method = "post",
        operation_id = "journey_message"
    )]
    async fn journey_message(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
        body: Json<JourneyMessageRequest>,
    ) -> Result<Json<JourneyResponse>, JourneyError> {
        // Not a UUID cannot be anyone's session: the same 404 as an expired one.
        let session = uuid::Uuid::parse_str(body.0.session_id.trim())
            .map_err(|_| adiuva_core::Error::NotFound("journey"))?;
        let reply = app
            .agents()
            .journey_message(&auth.0, session, &body.0.message)
            .await?;
        Ok(Json(reply.into()))
    }
}

/// Core answers `Conflict` when the agent already has an active run; on this route
/// that is the documented `run_in_progress`.
fn run_error(e: adiuva_core::Error) -> AgentRunError {
    match e {
        adiuva_core::Error::Conflict(_) => ApiError::new(
            poem::http::StatusCode::CONFLICT,
            "run_in_progress",
            "the agent has a run queued or running; try again when it has finished",
        )
        .into(),
        other => other.into(),
    }
}

fn default_page() -> u64 {
    1
}

fn default_limit() -> u64 {
    20
}
