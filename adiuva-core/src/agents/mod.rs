//! The agents platform: scheduled assistant agents that read the user's device (local
//! agents) or a provider (cloud agents: Gmail, Outlook, Teams), run a server-side prompt
//! over what they read, and deliver results to the user's devices through the device
//! queue.
//!
//! - `catalog.rs` — the built-in agent types ([`catalog`]).
//! - `configs.rs` — config CRUD: validation (type, cron, zone, filters, provider, token),
//!   tier limits (`agents`, `batch_active`, `providers`, checked in the writing
//!   statement), `next_run_at`.
//! - `schedule.rs` — cron + time zone ([`Schedule`]).
//! - `oauth.rs` — authorize (PKCE S256, a sealed expiring `state` bound to the user),
//!   callback (code exchange, the token set sealed), refresh (rotated refresh tokens
//!   saved).
//! - `journey.rs` — the model-led setup conversation.
//! - `runner.rs` — one run: cloud (token → provider → model → results) or local
//!   (`agent_trigger` → the device's `data_response` → model → results); results are
//!   queued to the user's devices, sealed.
//! - `scheduler.rs` — the tick: claims due slots (once across instances), renews the
//!   leases of this instance's runs, takes over runs whose instance died.
//!
//! Rule 1: a run log keeps counts and ids, never content; provider items and model
//! output live in memory for the run only and reach storage only sealed (the device
//! queue). Rule 2: prompts are composed here and never sent; model output passes the
//! sanitizer before it leaves.

mod catalog;
mod configs;
mod journey;
mod oauth;
mod results;
mod runner;
pub mod schedule;
mod scheduler;
pub(crate) mod tokens;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::auth::Principal;
use crate::chat::orchestrator::Orchestrator;
use crate::devices::DeviceHub;
use crate::domain::Millis;
use crate::error::Error;
use crate::ports::db::{AgentKind, AgentRun, AgentStatus};
use crate::ports::providers::{Provider, ProviderApi};
use crate::ports::{Clock, Database};
use crate::seal::Keyring;
use crate::tiers::TierManager;

pub use catalog::{CatalogItem, catalog, catalog_item};

/// Every server-side prompt text of the agents platform (the chat sanitizer learns them:
/// none may reach a client).
pub(crate) fn server_prompt_texts() -> Vec<String> {
    catalog::all_prompt_texts()
        .chain([
            journey::JOURNEY_PROMPT,
            results::FORMAT,
            results::FALLBACK_PROMPT,
        ])
        .map(str::to_owned)
        .collect()
}

/// The tools the agents platform offers the model (their schemas stay server-side too).
pub(crate) fn server_tool_definitions() -> Vec<crate::ports::llm::ToolDefinition> {
    catalog().iter().map(journey::finish_tool).collect()
}
pub use schedule::Schedule;

/// Default seconds between scheduler ticks (`ADIUVA_SCHEDULER_TICK_SECS`).
pub const DEFAULT_TICK_SECS: u64 = 60;
/// Default lease of a running run; renewed every third of it.
pub const DEFAULT_LEASE_SECS: u64 = 60;
/// Default time a local run waits for its device's `data_response`.
pub const DEFAULT_LOCAL_TIMEOUT_SECS: u64 = 300;
/// Default lifetime of a setup-journey session.
pub const DEFAULT_JOURNEY_TTL_SECS: u64 = 1800;
/// Default most items one run reads.
pub const DEFAULT_MAX_ITEMS_PER_RUN: u32 = 50;
/// Default runs one instance executes at once.
pub const DEFAULT_MAX_CONCURRENT_RUNS: usize = 16;
/// Lifetime of an OAuth `state` (the user has this long to consent).
pub const OAUTH_STATE_TTL_SECS: u64 = 600;

/// How agents run (from the settings).
#[derive(Debug, Clone)]
pub struct AgentsConfig {
    /// Seconds between scheduler ticks.
    pub tick: Duration,
    /// A running run's lease; its instance renews it every third. Past it, another
    /// instance takes the run over.
    pub lease: Duration,
    /// A local run fails when its device has not answered within this.
    pub local_timeout: Duration,
    /// A journey session expires this long after its last message.
    pub journey_ttl: Duration,
    /// Most items one run reads.
    pub max_items_per_run: u32,
    /// Runs this instance executes at once (the rest wait their turn, leased).
    pub max_concurrent_runs: usize,
    /// The public base URL the providers redirect to:
    /// `{base}/api/v1/oauth/{provider}/callback`.
    pub redirect_base_url: String,
    /// The model runs and journeys use (the server's agent model).
    pub model: String,
    /// Most tokens of a run's or a journey's reply.
    pub max_tokens: u32,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(DEFAULT_TICK_SECS),
            lease: Duration::from_secs(DEFAULT_LEASE_SECS),
            local_timeout: Duration::from_secs(DEFAULT_LOCAL_TIMEOUT_SECS),
            journey_ttl: Duration::from_secs(DEFAULT_JOURNEY_TTL_SECS),
            max_items_per_run: DEFAULT_MAX_ITEMS_PER_RUN,
            max_concurrent_runs: DEFAULT_MAX_CONCURRENT_RUNS,
            redirect_base_url: "http://localhost:8000".into(),
            model: crate::chat::orchestrator::DEFAULT_MODEL.into(),
            max_tokens: crate::chat::orchestrator::DEFAULT_MAX_TOKENS,
        }
    }
}

/// `LocalAgentConfigCreate` / `CloudAgentConfigCreate`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentInput {
    /// 1–100 characters, no control characters.
    pub name: String,
    /// A catalog type of the right kind.
    pub agent_type: String,
    /// Cron (5 fields); `None`: the catalog's default schedule. An empty string: runs
    /// only when asked.
    pub schedule: Option<String>,
    /// IANA zone; `None`: `UTC`.
    pub timezone: Option<String>,
    /// `None`: true.
    pub enabled: Option<bool>,
    /// Type-specific filters (see the catalog); at most 4 KiB of JSON.
    pub filters: Map<String, Value>,
    /// `{"device_id": …}` or `{}`; at most 1 KiB of JSON.
    pub output: Map<String, Value>,
    /// A template id from the catalog or a journey; `None`: the type's default.
    pub prompt_template: Option<String>,
    /// Cloud: `google` / `microsoft` (one the type reads).
    pub provider: Option<String>,
    /// Cloud: the `encrypted_token` the OAuth callback answered (for that provider).
    pub oauth_token_encrypted: Option<String>,
}

/// `…ConfigUpdate`: what is `Some` changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentPatch {
    /// New name.
    pub name: Option<String>,
    /// New schedule (empty: manual only).
    pub schedule: Option<String>,
    /// New zone.
    pub timezone: Option<String>,
    /// Enable / disable.
    pub enabled: Option<bool>,
    /// New filters.
    pub filters: Option<Map<String, Value>>,
    /// New output.
    pub output: Option<Map<String, Value>>,
    /// New template.
    pub prompt_template: Option<String>,
    /// Cloud: a new token (re-authorisation; clears `needs_reauth`).
    pub oauth_token_encrypted: Option<String>,
}

/// A config as the API shows it (never the token itself).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentView {
    /// Id.
    pub id: Uuid,
    /// Local or cloud.
    pub kind: AgentKind,
    /// Name.
    pub name: String,
    /// Type.
    pub agent_type: String,
    /// Cron, or `None` (manual only).
    pub schedule: Option<String>,
    /// Zone.
    pub timezone: String,
    /// Enabled.
    pub enabled: bool,
    /// Filters.
    pub filters: Map<String, Value>,
    /// Output.
    pub output: Map<String, Value>,
    /// Template id.
    pub prompt_template: String,
    /// Cloud: provider.
    pub provider: Option<String>,
    /// Cloud: whether a token is stored.
    pub connected: bool,
    /// Active or needs re-authorisation.
    pub status: AgentStatus,
    /// Next scheduled slot (ms).
    pub next_run_at: Option<Millis>,
    /// Created (ms).
    pub created_at: Millis,
    /// Updated (ms).
    pub updated_at: Millis,
}

/// What a journey step answers.
#[derive(Debug, Clone, PartialEq)]
pub struct JourneyReply {
    /// The session.
    pub session_id: Uuid,
    /// The model's message (sanitized).
    pub message: String,
    /// Whether the conversation ended with a config.
    pub done: bool,
    /// When done: the template id the config runs.
    pub prompt_template: Option<String>,
    /// When done: a ready config to `POST` (name, agent_type, schedule, timezone,
    /// filters, prompt_template; a cloud type also names its provider).
    pub config: Option<AgentInput>,
}

/// What one scheduler tick did (tests and the benchmark read it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Slots this instance claimed (runs started or skipped).
    pub claimed: u64,
    /// Of those, skipped (overlap).
    pub skipped: u64,
    /// Runs taken over from a dead instance (or local runs failed at their timeout).
    pub taken_over: u64,
}

/// The agents platform of one instance. Cheap to clone.
#[derive(Clone)]
pub struct AgentService {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) db: Arc<dyn Database>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) keyring: Arc<Keyring>,
    pub(crate) providers: Vec<Arc<dyn ProviderApi>>,
    pub(crate) devices: DeviceHub,
    pub(crate) chat: Option<Arc<Orchestrator>>,
    pub(crate) config: AgentsConfig,
    /// This instance (run leases name it; the device hub's id).
    pub(crate) instance_id: Uuid,
    /// Bounds the runs this instance executes at once.
    pub(crate) permits: Arc<tokio::sync::Semaphore>,
    /// Runs this instance executes now (started, waiting for a permit, or finishing a
    /// device's answer); `idle` waits for zero.
    pub(crate) executing: tokio::sync::watch::Sender<usize>,
    /// The ids of the runs executing here (a run taken over by its own instance is not
    /// executed twice).
    pub(crate) running: std::sync::Mutex<std::collections::HashSet<Uuid>>,
}

impl std::fmt::Debug for AgentService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentService")
            .field("instance_id", &self.inner.instance_id)
            .finish_non_exhaustive()
    }
}

/// The scheduler's background work; stops when dropped.
#[derive(Debug)]
pub struct SchedulerTask {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for SchedulerTask {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl AgentService {
    /// The platform over these ports (the facade builds it).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        db: Arc<dyn Database>,
        clock: Arc<dyn Clock>,
        keyring: Arc<Keyring>,
        providers: Vec<Arc<dyn ProviderApi>>,
        devices: DeviceHub,
        chat: Option<Arc<Orchestrator>>,
        // The limits are the plan's matrix (`tiers::allowance`) by the principal's tier;
        // no byte quota applies to agents, so the manager itself is not kept.
        _tiers: TierManager,
        config: AgentsConfig,
    ) -> Self {
        let permits = Arc::new(tokio::sync::Semaphore::new(
            config.max_concurrent_runs.max(1),
        ));
        let service = Self {
            inner: Arc::new(Inner {
                instance_id: devices.instance_id(),
                db,
                clock,
                keyring,
                providers,
                devices,
                chat,
                config,
                permits,
                executing: tokio::sync::watch::Sender::new(0),
                running: std::sync::Mutex::default(),
            }),
        };
        runner::register_trigger_answers(&service);
        service
    }

    /// The settings in effect.
    pub fn config(&self) -> &AgentsConfig {
        &self.inner.config
    }

    /// The provider adapter, or `Unavailable` (`oauth_not_configured`).
    pub(crate) fn provider(&self, provider: Provider) -> Result<Arc<dyn ProviderApi>, Error> {
        self.inner
            .providers
            .iter()
            .find(|p| p.provider() == provider)
            .cloned()
            .ok_or_else(|| Error::Unavailable {
                code: "oauth_not_configured",
                detail: format!(
                    "{} sign-in is not configured on this server",
                    provider.as_str()
                ),
            })
    }

    // ---- configs (configs.rs) ----

    /// The user's configs of `kind`, oldest first.
    pub async fn list(
        &self,
        principal: &Principal,
        kind: AgentKind,
    ) -> Result<Vec<AgentView>, Error> {
        configs::list(self, principal, kind).await
    }

    /// Creates a config: `Validation` (422) on a bad field; `Forbidden`
    /// (`quota_exceeded`) beyond the tier's `agents`, `batch_active` or `providers`.
    pub async fn create(
        &self,
        principal: &Principal,
        kind: AgentKind,
        input: AgentInput,
    ) -> Result<AgentView, Error> {
        configs::create(self, principal, kind, input).await
    }

    /// Updates a config (`NotFound("agent")` for another user's or the other kind's id).
    pub async fn update(
        &self,
        principal: &Principal,
        kind: AgentKind,
        id: Uuid,
        patch: AgentPatch,
    ) -> Result<AgentView, Error> {
        configs::update(self, principal, kind, id, patch).await
    }

    /// Deletes a config and its runs.
    pub async fn delete(
        &self,
        principal: &Principal,
        kind: AgentKind,
        id: Uuid,
    ) -> Result<(), Error> {
        configs::delete(self, principal, kind, id).await
    }

    // ---- runs (runner.rs) ----

    /// Starts a manual run now (in the background); its id. `NotFound("agent")`;
    /// `Conflict` when the agent has an active run; a paused (`needs_reauth`) cloud agent
    /// → `Forbidden` (`needs_reauth`).
    pub async fn run_now(&self, principal: &Principal, agent_id: Uuid) -> Result<Uuid, Error> {
        runner::run_now(self, principal, agent_id).await
    }

    /// The user's runs, newest first; `page` from 1, `limit` 1–100. An `agent_id` that
    /// is not the user's → `NotFound("agent")`.
    pub async fn runs(
        &self,
        principal: &Principal,
        agent_id: Option<Uuid>,
        page: u64,
        limit: u64,
    ) -> Result<Vec<AgentRun>, Error> {
        runner::runs(self, principal, agent_id, page, limit).await
    }

    // ---- journey (journey.rs) ----

    /// Starts a setup conversation for `agent_type` (`Validation` if unknown).
    pub async fn journey_start(
        &self,
        principal: &Principal,
        agent_type: &str,
        data_types: Vec<String>,
    ) -> Result<JourneyReply, Error> {
        journey::start(self, principal, agent_type, data_types).await
    }

    /// Continues it; `NotFound("journey")` when expired or another user's.
    pub async fn journey_message(
        &self,
        principal: &Principal,
        session_id: Uuid,
        message: &str,
    ) -> Result<JourneyReply, Error> {
        journey::message(self, principal, session_id, message).await
    }

    // ---- OAuth (oauth.rs) ----

    /// The consent URL for `provider` (`NotFound("provider")` if unknown;
    /// `Unavailable` `oauth_not_configured` without a client id).
    pub async fn oauth_authorize(
        &self,
        principal: &Principal,
        provider: &str,
    ) -> Result<String, Error> {
        oauth::authorize(self, principal, provider).await
    }

    /// The provider sent the browser back: verifies `state` (sealed, unexpired, this
    /// provider — `BadRequest` `invalid_state`), exchanges the code (`invalid_grant` →
    /// `BadRequest` `invalid_grant`) and answers the sealed token set.
    pub async fn oauth_callback(
        &self,
        provider: &str,
        code: &str,
        state: &str,
    ) -> Result<String, Error> {
        oauth::callback(self, provider, code, state).await
    }

    /// Refreshes a sealed token set of the user's (`Validation` on
    /// `encrypted_token` when it does not open or is another provider's); saves the
    /// result into the user's configs that held the old one; the new sealed set.
    /// `invalid_grant` pauses those configs (`needs_reauth`) and answers `BadRequest`
    /// `invalid_grant`.
    pub async fn oauth_refresh(
        &self,
        principal: &Principal,
        provider: &str,
        encrypted_token: &str,
    ) -> Result<String, Error> {
        oauth::refresh(self, principal, provider, encrypted_token).await
    }

    // ---- scheduler (scheduler.rs) ----

    /// Starts the tick loop and the lease renewal (once per serving process).
    pub async fn start(&self) -> Result<SchedulerTask, Error> {
        Ok(SchedulerTask {
            tasks: scheduler::start(self).await?,
        })
    }

    /// One tick now: claims due slots, takes over expired runs (tests, the benchmark).
    /// Runs it starts go on in the background.
    pub async fn tick(&self) -> Result<TickReport, Error> {
        scheduler::tick(self).await
    }

    /// Waits until this instance executes no run (tests, graceful stop), at most `max`.
    pub async fn idle(&self, max: Duration) -> bool {
        scheduler::idle(self, max).await
    }
}
