//! One run of an agent (see the module docs of `agents`).
//!
//! A cloud run executes here from start to end: token → provider → model → results
//! queued to the user's devices. A local run has two halves: this instance queues an
//! `agent_trigger` and lets the run wait (on no instance, leased until the local
//! timeout); the device's `data_response` (its `id` is the run's id) reaches whichever
//! instance holds its socket, and that instance finishes the run ([`TriggerAnswers`]).
//!
//! Rule 1: what a run stores is counts, ids and fixed sentences; provider items, device
//! data and model output stay in memory and leave only sealed, in the device queue.

use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::results::{self, ModelInput};
use super::tokens::{open_tokens, seal_tokens};
use super::{AgentService, Inner, catalog};
use crate::auth::Principal;
use crate::devices::{Queued, TriggerAnswers};
use crate::domain::{Millis, UserId};
use crate::error::Error;
use crate::ports::db::{
    AgentConfigRow, AgentKind, AgentRun, AgentStatus, RunOutcome, RunStatus, RunTrigger,
};
use crate::ports::providers::{Provider, ProviderApi, ProviderError, Source, SourceQuery};

/// A token expiring within this is refreshed before the read.
const REFRESH_AHEAD_MS: Millis = 60_000;
/// A run taken over this many times is given up (a run that kills its instance must
/// not kill every instance in turn).
const MAX_ATTEMPTS: i32 = 3;
/// The longest a device's error message kept in the run log.
const DEVICE_ERROR_CHARS: usize = 300;
/// A provider call that takes longer is abandoned (the adapters time out sooner; this
/// bounds core even with one that does not).
const PROVIDER_DEADLINE: Duration = Duration::from_secs(120);
/// What a run says when the provider did not answer by [`PROVIDER_DEADLINE`].
const PROVIDER_SLOW: &str = "the provider did not answer in time; the next run tries again";
/// Most runs one `runs` page lists.
const MAX_RUNS_PAGE: u64 = 100;

/// Why runs end without results (fixed sentences: a run log never holds content).
pub(super) const NO_DEVICE_REGISTERED: &str = "no device is registered to receive results";
pub(super) const NO_DEVICE_ONLINE: &str = "no device is online";
pub(super) const STILL_RUNNING: &str = "the previous run was still going";

pub(crate) fn ms(d: Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

/// Makes the device hub hand this service the `data_response`s that answer
/// `agent_trigger`s (their id is the run's id). The hub holds it weakly: the sink lives
/// as long as the service.
pub(super) fn register_trigger_answers(s: &AgentService) {
    let inner: Arc<Inner> = s.inner.clone();
    let weak: Weak<Inner> = Arc::downgrade(&inner);
    let sink: Weak<dyn TriggerAnswers> = weak;
    s.inner.devices.set_trigger_answers(sink);
}

pub(super) async fn run_now(
    s: &AgentService,
    p: &Principal,
    agent_id: Uuid,
) -> Result<Uuid, Error> {
    let inner = &s.inner;
    let cfg = inner
        .db
        .agent(p.user.id, agent_id)
        .await?
        .ok_or(Error::NotFound("agent"))?;
    if cfg.kind == AgentKind::Cloud && cfg.status == AgentStatus::NeedsReauth {
        return Err(Error::Forbidden {
            code: "needs_reauth",
            detail: "the agent is paused until its provider is connected again".into(),
        });
    }
    let now = inner.clock.now_ms();
    if !inner.db.active_runs(agent_id, now).await?.is_empty() {
        return Err(Error::Conflict("run_in_progress".into()));
    }
    let run = new_run(inner, &cfg, RunTrigger::Manual, None, now);
    inner.db.insert_run(&run).await?;
    let id = run.id;
    spawn_run(inner, run);
    Ok(id)
}

pub(super) async fn runs(
    s: &AgentService,
    p: &Principal,
    agent_id: Option<Uuid>,
    page: u64,
    limit: u64,
) -> Result<Vec<AgentRun>, Error> {
    if page == 0 {
        return Err(Error::validation("page", "must be 1 or more"));
    }
    if limit == 0 || limit > MAX_RUNS_PAGE {
        return Err(Error::validation("limit", "must be between 1 and 100"));
    }
    if let Some(id) = agent_id
        && s.inner.db.agent(p.user.id, id).await?.is_none()
    {
        return Err(Error::NotFound("agent"));
    }
    let offset = (page - 1).saturating_mul(limit);
    Ok(s.inner
        .db
        .list_runs(p.user.id, agent_id, offset, limit)
        .await?)
}

/// A run of `cfg` executing on this instance (status `Running`, leased).
pub(super) fn new_run(
    inner: &Inner,
    cfg: &AgentConfigRow,
    trigger: RunTrigger,
    scheduled_for: Option<Millis>,
    now: Millis,
) -> AgentRun {
    AgentRun {
        id: Uuid::now_v7(),
        user_id: cfg.user_id,
        agent_id: cfg.id,
        status: RunStatus::Running,
        trigger,
        scheduled_for,
        created_at: now,
        started_at: Some(now),
        finished_at: None,
        items_read: 0,
        items_produced: 0,
        error: None,
        instance_id: Some(inner.instance_id),
        lease_until: Some(now.saturating_add(ms(inner.config.lease))),
        attempts: 1,
        device_id: None,
    }
}

/// Counts a run as executing on this instance until dropped ([`AgentService::idle`]),
/// and remembers its id (a lapsed lease of a run still executing here is not a reason
/// to execute it twice: see [`taken_over`]).
struct Executing {
    inner: Arc<Inner>,
    run: Option<Uuid>,
}

impl Executing {
    fn new(inner: &Arc<Inner>, run: Option<Uuid>) -> Self {
        track(inner, run);
        Executing {
            inner: inner.clone(),
            run,
        }
    }
}

impl Drop for Executing {
    fn drop(&mut self) {
        untrack(&self.inner, self.run);
    }
}

fn track(inner: &Inner, run: Option<Uuid>) {
    if let Some(id) = run {
        lock(&inner.running).insert(id);
    }
    inner.executing.send_modify(|n| *n += 1);
}

fn untrack(inner: &Inner, run: Option<Uuid>) {
    if let Some(id) = run {
        lock(&inner.running).remove(&id);
    }
    inner.executing.send_modify(|n| *n = n.saturating_sub(1));
}

/// A poisoned set is still a consistent set (every critical section is one insert,
/// remove or lookup).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Executes `run` in the background, once a permit is free (its lease is renewed
/// meanwhile by the scheduler's renewal, which covers every run this instance holds).
pub(super) fn spawn_run(inner: &Arc<Inner>, run: AgentRun) {
    let guard = Executing::new(inner, Some(run.id));
    let inner = inner.clone();
    tokio::spawn(async move {
        let _guard = guard;
        let Ok(_permit) = inner.permits.clone().acquire_owned().await else {
            return;
        };
        execute(&inner, run).await;
    });
}

/// Executes a run this instance holds (claimed, manual or taken over).
pub(super) async fn execute(inner: &Inner, run: AgentRun) {
    let cfg = match inner.db.agent_by_id(run.agent_id).await {
        // Deleted meanwhile: its runs went with it.
        Ok(None) => return,
        Ok(Some(c)) => c,
        Err(e) => {
            // The lease runs out and another tick takes the run over.
            tracing::warn!(error = %e, run = %run.id, "reading a run's agent failed");
            return;
        }
    };
    let outcome = match cfg.kind {
        AgentKind::Cloud => Some(cloud(inner, &cfg, &run).await),
        AgentKind::Local => local_start(inner, &cfg, &run).await,
    };
    if let Some(outcome) = outcome {
        finish(inner, run.id, outcome).await;
    }
}

async fn finish(inner: &Inner, run_id: Uuid, outcome: RunOutcome) {
    match inner.db.finish_run(run_id, &outcome).await {
        Ok(true) => {
            tracing::info!(
                run = %run_id,
                status = outcome.status.as_str(),
                items_read = outcome.items_read,
                items_produced = outcome.items_produced,
                "agent run finished"
            );
        }
        Ok(false) => tracing::info!(run = %run_id, "agent run was finished elsewhere"),
        Err(e) => tracing::warn!(error = %e, run = %run_id, "could not finish an agent run"),
    }
}

pub(super) fn outcome(inner: &Inner, status: RunStatus, error: Option<&str>) -> RunOutcome {
    RunOutcome {
        status,
        items_read: 0,
        items_produced: 0,
        error: error.map(str::to_owned),
        finished_at: inner.clock.now_ms(),
    }
}

fn failed(inner: &Inner, why: &str) -> RunOutcome {
    outcome(inner, RunStatus::Failed, Some(why))
}

/// A run taken over from a dead instance: a cloud run executes again; a local one
/// waited past its timeout (or its processing instance died) and fails.
pub(super) async fn taken_over(inner: &Arc<Inner>, run: AgentRun) {
    let kind = match inner.db.agent_by_id(run.agent_id).await {
        Ok(Some(c)) => c.kind,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, run = %run.id, "reading a taken-over run's agent failed");
            return;
        }
    };
    if lock(&inner.running).contains(&run.id) {
        // Our own run, still executing: its renewal was late (a slow database). Taking
        // it over made the lease ours again; executing it twice would read twice.
        tracing::warn!(run = %run.id, "a run's lease lapsed while it executed here");
        return;
    }
    if kind == AgentKind::Local {
        let secs = inner.config.local_timeout.as_secs();
        let why = format!("the device did not answer within {secs} seconds");
        finish(inner, run.id, failed(inner, &why)).await;
        return;
    }
    if run.attempts > MAX_ATTEMPTS {
        let why = format!("gave up after {MAX_ATTEMPTS} attempts whose instance stopped");
        finish(inner, run.id, failed(inner, &why)).await;
        return;
    }
    spawn_run(inner, run);
}

// ---- cloud -----------------------------------------------------------------------------

/// The source a cloud type reads at a provider.
fn source_of(agent_type: &str, provider: Provider) -> Option<Source> {
    match (agent_type, provider) {
        ("inbox_triage", Provider::Google) => Some(Source::Gmail),
        ("inbox_triage", Provider::Microsoft) => Some(Source::Outlook),
        ("teams_digest", Provider::Microsoft) => Some(Source::Teams),
        _ => None,
    }
}

fn provider_api(inner: &Inner, provider: Provider) -> Option<Arc<dyn ProviderApi>> {
    inner
        .providers
        .iter()
        .find(|p| p.provider() == provider)
        .cloned()
}

/// A fixed sentence per provider failure (an adapter's text may quote the provider).
fn provider_failure(e: &ProviderError) -> &'static str {
    match e {
        ProviderError::InvalidGrant(_) | ProviderError::Unauthorized => {
            "the provider rejected the agent's token"
        }
        ProviderError::Forbidden(_) => "the provider refused access (a missing permission?)",
        ProviderError::NotFound(_) => "the provider does not have what the filters name",
        ProviderError::RateLimited => "the provider is rate limiting; the next run tries again",
        ProviderError::Unavailable(_) => "the provider is unavailable; the next run tries again",
        ProviderError::Protocol(_) => "the provider answered something unexpected",
        ProviderError::NotConfigured(_) => "the provider is not configured on this server",
    }
}

async fn pause_for_reauth(inner: &Inner, cfg: &AgentConfigRow, why: &str) -> RunOutcome {
    if let Err(e) = inner
        .db
        .pause_agent_for_reauth(cfg.id, inner.clock.now_ms())
        .await
    {
        tracing::warn!(error = %e, agent = %cfg.id, "could not pause an agent for re-authorisation");
    }
    outcome(inner, RunStatus::NeedsReauth, Some(why))
}

async fn save_tokens(
    inner: &Inner,
    cfg: &AgentConfigRow,
    provider: Provider,
    tokens: &crate::ports::providers::TokenSet,
) {
    let sealed = seal_tokens(&inner.keyring, provider, tokens);
    if let Err(e) = inner
        .db
        .set_agent_token(cfg.id, &sealed, inner.clock.now_ms())
        .await
    {
        tracing::warn!(error = %e, agent = %cfg.id, "could not save a refreshed token");
    }
}

async fn cloud(inner: &Inner, cfg: &AgentConfigRow, run: &AgentRun) -> RunOutcome {
    let targets = match targets(inner, cfg).await {
        Ok(t) if t.is_empty() => {
            return outcome(inner, RunStatus::Skipped, Some(NO_DEVICE_REGISTERED));
        }
        Ok(t) => t,
        Err(why) => return failed(inner, why),
    };
    let Some(sealed) = cfg.oauth_token_sealed.as_deref() else {
        return pause_for_reauth(inner, cfg, "no provider token is stored").await;
    };
    let Ok((provider, mut tokens)) = open_tokens(&inner.keyring, sealed) else {
        return pause_for_reauth(inner, cfg, "the stored provider token does not open").await;
    };
    if cfg.provider.as_deref() != Some(provider.as_str()) {
        return pause_for_reauth(inner, cfg, "the stored token is another provider's").await;
    }
    let Some(source) = source_of(&cfg.agent_type, provider) else {
        return failed(inner, "this agent type cannot read this provider");
    };
    let Some(api) = provider_api(inner, provider) else {
        return failed(inner, "the provider is not configured on this server");
    };
    let now = inner.clock.now_ms();
    if tokens.expires_at <= now.saturating_add(REFRESH_AHEAD_MS) && tokens.refresh_token.is_some() {
        let refreshed = tokio::time::timeout(PROVIDER_DEADLINE, api.refresh(&tokens, now)).await;
        let Ok(refreshed) = refreshed else {
            return failed(inner, PROVIDER_SLOW);
        };
        match refreshed {
            Ok(t) => {
                tokens = t;
                // Saved at once: a rotated refresh token is the only one that works now.
                save_tokens(inner, cfg, provider, &tokens).await;
            }
            Err(ProviderError::InvalidGrant(_)) => {
                return pause_for_reauth(
                    inner,
                    cfg,
                    provider_failure(&ProviderError::Unauthorized),
                )
                .await;
            }
            Err(e) => return failed(inner, provider_failure(&e)),
        }
    }
    let before = tokens.clone();
    let query = SourceQuery {
        source,
        filters: object(&cfg.filters),
        cursor: cfg.sync_cursor.clone(),
        max_items: inner.config.max_items_per_run,
    };
    let page = tokio::time::timeout(
        PROVIDER_DEADLINE,
        api.read(&mut tokens, &query, inner.clock.now_ms()),
    )
    .await;
    if tokens != before {
        save_tokens(inner, cfg, provider, &tokens).await;
    }
    let Ok(page) = page else {
        return failed(inner, PROVIDER_SLOW);
    };
    let page = match page {
        Ok(p) => p,
        Err(e @ ProviderError::InvalidGrant(_)) => {
            return pause_for_reauth(inner, cfg, provider_failure(&e)).await;
        }
        Err(e) => {
            tracing::warn!(agent = %cfg.id, run = %run.id, kind = provider_failure(&e), "provider read failed");
            return failed(inner, provider_failure(&e));
        }
    };
    let mut items = page.items;
    items.truncate(inner.config.max_items_per_run as usize);
    let read = items.len() as i64;
    let produced = if items.is_empty() {
        0
    } else {
        let input: Vec<Value> = items.iter().map(results::source_item).collect();
        match process(inner, cfg, run, input, &targets).await {
            Ok(n) => n,
            Err(why) => {
                let mut o = failed(inner, &why);
                o.items_read = read;
                return o;
            }
        }
    };
    if page.cursor != cfg.sync_cursor
        && let Err(e) = inner
            .db
            .set_agent_cursor(cfg.id, page.cursor.as_deref(), inner.clock.now_ms())
            .await
    {
        tracing::warn!(error = %e, agent = %cfg.id, "could not save the sync cursor");
    }
    RunOutcome {
        status: RunStatus::Succeeded,
        items_read: read,
        items_produced: produced,
        error: None,
        finished_at: inner.clock.now_ms(),
    }
}

fn object(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// The devices results go to: `output.device_id` when set, else every registered
/// device of the user.
async fn targets(inner: &Inner, cfg: &AgentConfigRow) -> Result<Vec<String>, &'static str> {
    let devices = inner
        .devices
        .list(cfg.user_id)
        .await
        .map_err(|_| "the user's devices could not be read")?;
    match cfg.output.get("device_id").and_then(Value::as_str) {
        Some(id) => Ok(devices
            .into_iter()
            .filter(|d| d.device_id == id)
            .map(|d| d.device_id)
            .collect()),
        None => Ok(devices.into_iter().map(|d| d.device_id).collect()),
    }
}

/// Runs the model over `items` and queues the results to `targets`; how many results.
async fn process(
    inner: &Inner,
    cfg: &AgentConfigRow,
    run: &AgentRun,
    items: Vec<Value>,
    targets: &[String],
) -> Result<i64, String> {
    let Some(chat) = inner.chat.as_ref() else {
        return Err("no chat model is configured".into());
    };
    let input = ModelInput {
        agent_type: &cfg.agent_type,
        template: &cfg.prompt_template,
        filters: &cfg.filters,
        items,
    };
    let found = results::run_model(chat, &inner.config, &input).await?;
    let produces: Vec<&str> = catalog::catalog_item(&cfg.agent_type)
        .map(|c| c.produces.to_vec())
        .unwrap_or_default();
    let payload = json!({
        "agent_id": cfg.id,
        "run_id": run.id,
        "agent_type": cfg.agent_type,
        "produces": produces,
        "results": found,
    });
    let mut queued = 0usize;
    for device in targets {
        let frame = Queued::Notification {
            kind: "agent_result".into(),
            payload: payload.clone(),
        };
        match inner
            .devices
            .enqueue_once(
                cfg.user_id,
                device,
                frame_id(run.id, "result", device),
                frame,
            )
            .await
        {
            Ok(_) => queued += 1,
            // Forgotten meanwhile: the others still get it.
            Err(Error::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(error = %e, run = %run.id, "queueing an agent result failed");
                return Err("the results could not be queued for the device".into());
            }
        }
    }
    if queued == 0 && !targets.is_empty() {
        return Err(NO_DEVICE_REGISTERED.into());
    }
    Ok(found.len() as i64)
}

/// A queued frame's id derived from the run (and device), so a run executed again
/// (taken over) queues the same frame id and the queue keeps one copy.
pub(crate) fn frame_id(run_id: Uuid, what: &str, device_id: &str) -> Uuid {
    let mut h = Sha256::new();
    h.update(b"adiuva/agent-frame\0");
    h.update(run_id.as_bytes());
    h.update(what.as_bytes());
    h.update(b"\0");
    h.update(device_id.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

// ---- local -----------------------------------------------------------------------------

/// Queues the `agent_trigger` and leaves the run waiting for the device (`None`), or
/// ends it at once.
async fn local_start(inner: &Inner, cfg: &AgentConfigRow, run: &AgentRun) -> Option<RunOutcome> {
    let devices = match inner.devices.list(cfg.user_id).await {
        Ok(d) => d,
        Err(_) => return Some(failed(inner, "the user's devices could not be read")),
    };
    let device = match cfg.output.get("device_id").and_then(Value::as_str) {
        Some(id) => match devices.iter().find(|d| d.device_id == id) {
            Some(d) => d.device_id.clone(),
            None => {
                return Some(outcome(
                    inner,
                    RunStatus::Skipped,
                    Some("the output device is not registered"),
                ));
            }
        },
        None => match devices
            .iter()
            .filter(|d| d.online)
            .max_by_key(|d| d.last_seen)
        {
            Some(d) => d.device_id.clone(),
            None => return Some(outcome(inner, RunStatus::Skipped, Some(NO_DEVICE_ONLINE))),
        },
    };
    let now = inner.clock.now_ms();
    let until = now.saturating_add(ms(inner.config.local_timeout));
    match inner
        .db
        .start_run(run.id, None, until, Some(&device), now)
        .await
    {
        Ok(true) => {}
        Ok(false) => return None,
        Err(e) => {
            tracing::warn!(error = %e, run = %run.id, "could not hand a local run to its device");
            return None;
        }
    }
    let data_types = match cfg.filters.get("data_types").and_then(Value::as_array) {
        Some(a) => Value::Array(a.clone()),
        None => json!(
            catalog::catalog_item(&cfg.agent_type)
                .map(|c| c.reads.to_vec())
                .unwrap_or_default()
        ),
    };
    let trigger = Queued::AgentTrigger {
        agent_id: cfg.id.to_string(),
        run_id: run.id.to_string(),
        input: json!({
            "agent_type": cfg.agent_type,
            "data_types": data_types,
            "filters": cfg.filters,
            "max_items": inner.config.max_items_per_run,
        }),
    };
    match inner
        .devices
        .enqueue_once(
            cfg.user_id,
            &device,
            frame_id(run.id, "trigger", &device),
            trigger,
        )
        .await
    {
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, run = %run.id, "queueing an agent trigger failed");
            Some(failed(
                inner,
                "the trigger could not be queued for the device",
            ))
        }
    }
}

/// The second half of a local run: the device answered.
async fn local_answer(
    inner: &Inner,
    user: UserId,
    device_id: &str,
    run_id: Uuid,
    answer: Result<Value, String>,
) {
    let run = match inner.db.run(user, run_id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            tracing::info!(run = %run_id, "a device answered an unknown run");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, run = %run_id, "reading an answered run failed");
            return;
        }
    };
    // Only the waiting run, from the device it was sent to: a late, repeated or
    // misdirected answer changes nothing.
    if !run.status.is_active()
        || run.instance_id.is_some()
        || run.device_id.as_deref() != Some(device_id)
    {
        tracing::info!(run = %run_id, "an answer for a run that is not waiting for this device");
        return;
    }
    let cfg = match inner.db.agent(user, run.agent_id).await {
        Ok(Some(c)) if c.kind == AgentKind::Local => c,
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(error = %e, run = %run_id, "reading an answered run's agent failed");
            return;
        }
    };
    // This instance now holds the run (leased and renewed): if it dies while the model
    // works, the run is taken over and failed rather than left waiting.
    let now = inner.clock.now_ms();
    let lease = now.saturating_add(ms(inner.config.lease));
    match inner
        .db
        .start_run(run.id, Some(inner.instance_id), lease, None, now)
        .await
    {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(error = %e, run = %run_id, "could not take an answered run");
            return;
        }
    }
    let data = match answer {
        Ok(d) => d,
        Err(why) => {
            let why: String = why.chars().take(DEVICE_ERROR_CHARS).collect();
            let why = format!("the device answered with an error: {why}");
            finish(inner, run.id, failed(inner, &why)).await;
            return;
        }
    };
    let max = inner.config.max_items_per_run as usize;
    let items: Vec<Value> = data
        .get("items")
        .and_then(Value::as_array)
        .map(|a| a.iter().take(max).map(results::device_item).collect())
        .unwrap_or_default();
    let read = items.len() as i64;
    let outcome = if items.is_empty() {
        outcome(inner, RunStatus::Succeeded, None)
    } else {
        let targets = match targets(inner, &cfg).await {
            Ok(t) => t,
            Err(why) => {
                finish(inner, run.id, failed(inner, why)).await;
                return;
            }
        };
        match process(inner, &cfg, &run, items, &targets).await {
            Ok(n) => RunOutcome {
                status: RunStatus::Succeeded,
                items_read: read,
                items_produced: n,
                error: None,
                finished_at: inner.clock.now_ms(),
            },
            Err(why) => {
                let mut o = failed(inner, &why);
                o.items_read = read;
                o
            }
        }
    };
    finish(inner, run.id, outcome).await;
}

#[async_trait::async_trait]
impl TriggerAnswers for Inner {
    async fn answer(
        &self,
        user: UserId,
        device_id: &str,
        run_id: Uuid,
        outcome: Result<Value, String>,
    ) {
        // Counted as executing (idle waits for it) and bounded like any run.
        struct Tracked<'a>(&'a Inner, Uuid);
        impl Drop for Tracked<'_> {
            fn drop(&mut self) {
                untrack(self.0, Some(self.1));
            }
        }
        track(self, Some(run_id));
        let _tracked = Tracked(self, run_id);
        if let Ok(_permit) = self.permits.acquire().await {
            local_answer(self, user, device_id, run_id, outcome).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_ids_are_deterministic_per_run_purpose_and_device() {
        let run = Uuid::new_v4();
        let a = frame_id(run, "result", "laptop");
        assert_eq!(a, frame_id(run, "result", "laptop"));
        assert_ne!(a, frame_id(run, "result", "phone"));
        assert_ne!(a, frame_id(run, "trigger", "laptop"));
        assert_ne!(a, frame_id(Uuid::new_v4(), "result", "laptop"));
        assert_eq!(a.get_version_num(), 8);
    }

    #[test]
    fn sources_follow_the_type_and_provider() {
        assert_eq!(
            source_of("inbox_triage", Provider::Google),
            Some(Source::Gmail)
        );
        assert_eq!(
            source_of("inbox_triage", Provider::Microsoft),
            Some(Source::Outlook)
        );
        assert_eq!(
            source_of("teams_digest", Provider::Microsoft),
            Some(Source::Teams)
        );
        assert_eq!(source_of("teams_digest", Provider::Google), None);
        assert_eq!(source_of("weekly_review", Provider::Google), None);
    }
}
