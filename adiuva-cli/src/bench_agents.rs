//! `adiuva bench-agents`: the agents platform under load (issue 12).
//!
//! 1. **Scheduler throughput.** `--agents` agents (local agents of many users) are all
//!    due at once; `--instances` in-process instances, each with its own connection pool
//!    on one PostgreSQL database (or one instance on SQLite without `--postgres-url`),
//!    tick until every slot is claimed. The figure is slots claimed per second, from the
//!    first tick to the last run finished, and how the slots spread over the instances.
//!    Each run is a local run with no device online, so it ends `skipped` at once: what
//!    is measured is the claim (compare-and-swap + unique slot row), the run's start and
//!    its finish. The benchmark then checks every agent ran its slot exactly once.
//! 2. **One cloud run, excluding the model.** A cloud agent reading `--items` mails from
//!    an in-process provider (no network) with an in-process model that answers at once:
//!    what remains is Adiuva's own cost of a run — reading the config, opening the
//!    sealed token, the run rows, building the prompt, parsing and sanitizing the
//!    results, sealing and queueing them for the user's device, saving the cursor.
//!    `--runs` manual runs one after another; p50/p99 per run.
//!
//! Point `--postgres-url` at a scratch database: the benchmark creates users there.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adiuva_adapters::database::AnyDatabase;
use adiuva_core::Adiuva;
use adiuva_core::agents::{AgentInput, AgentsConfig};
use adiuva_core::auth::{AuthConfig, Principal};
use adiuva_core::chat::orchestrator::{ModelRoles, Orchestrator};
use adiuva_core::domain::{Role, Tier};
use adiuva_core::ports::db::{AgentKind, AgentLimits, DeviceInfo, DeviceSession, RunStatus};
use adiuva_core::ports::llm::{ChatModel, Completion, CompletionRequest, LlmError, StreamEvent};
use adiuva_core::ports::providers::{
    AuthorizeRequest, Provider, ProviderApi, ProviderError, SourceItem, SourcePage, SourceQuery,
    TokenSet,
};
use adiuva_core::seal::Keyring;
use adiuva_core::{Error, Secret};
use async_trait::async_trait;
use clap::Args;
use futures::stream::BoxStream;

use crate::bench_chat::percentile;
use crate::commands::CliResult;

/// Options of `adiuva bench-agents`.
#[derive(Debug, Args)]
pub struct BenchAgentsArgs {
    /// Agents due at once for the throughput part.
    #[arg(long, default_value_t = 1_000)]
    agents: usize,
    /// Instances sharing them (PostgreSQL only; SQLite runs one).
    #[arg(long, default_value_t = 3)]
    instances: usize,
    /// Manual cloud runs for the per-run cost.
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Mails each cloud run reads.
    #[arg(long, default_value_t = 20)]
    items: usize,
    /// A scratch PostgreSQL database (else SQLite in a temporary directory).
    #[arg(long, env = "ADIUVA_BENCH_POSTGRES_URL")]
    postgres_url: Option<String>,
}

/// The same key for every instance: they must open each other's sealed tokens.
const KEY: &str = "bench:0000000000000000000000000000000000000000000000000000000000000b0b";
const JWT: &str = "bench-agents-secret-0123456789abcdef";

/// Runs the benchmark.
pub async fn run(args: &BenchAgentsArgs) -> CliResult {
    let base =
        adiuva_server::settings::Settings::load(&adiuva_server::settings::Overrides::default())?;
    crate::commands::quiet_logs(&base);
    let dir = tempfile::tempdir()?;
    let url = match &args.postgres_url {
        Some(u) => u.clone(),
        None => format!("sqlite://{}", dir.path().join("bench.db").display()),
    };
    let backend = if args.postgres_url.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let instances = if args.postgres_url.is_some() {
        args.instances.max(1)
    } else {
        1
    };
    let mut ok = true;
    if args.agents > 0 {
        ok &= throughput(&url, backend, instances, args.agents).await?;
    }
    if args.runs > 0 {
        cloud_run_cost(&url, backend, args.runs, args.items).await?;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One instance over its own pool on `url`.
async fn instance(
    url: &str,
    max_concurrent_runs: usize,
) -> Result<Adiuva, Box<dyn std::error::Error>> {
    let db = AnyDatabase::connect(url).await?;
    db.migrate().await?;
    let model: Arc<dyn ChatModel> = Arc::new(InstantModel);
    let chat = Orchestrator::new(model, ModelRoles::default())?;
    let config = AgentsConfig {
        max_concurrent_runs,
        tick: Duration::from_secs(1),
        ..AgentsConfig::default()
    };
    Ok(Adiuva::builder()
        .database(db.port())
        .auth(AuthConfig::new(Secret::new(JWT.to_owned())))
        .chat(Arc::new(chat))
        .keyring(Keyring::parse(KEY)?)
        .provider(Arc::new(InstantGmail))
        .agents_config(config)
        .build()?)
}

async fn user(app: &Adiuva, email: &str) -> Result<Principal, Error> {
    let user = app
        .accounts()
        .create(email, "bench password 1234", Role::User, Tier::Team)
        .await?;
    Ok(Principal {
        user,
        session: None,
    })
}

async fn throughput(
    url: &str,
    backend: &str,
    instances: usize,
    agents: usize,
) -> Result<bool, Box<dyn std::error::Error>> {
    let mut apps = Vec::new();
    for _ in 0..instances {
        apps.push(instance(url, 16).await?);
    }
    let a = &apps[0];
    let db = a.database().clone();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let per_user = 100;
    let mut ids = Vec::with_capacity(agents);
    let setup = Instant::now();
    for u in 0..agents.div_ceil(per_user) {
        let p = user(a, &format!("bench-{tag}-{u}@example.com")).await?;
        for i in 0..per_user.min(agents - u * per_user) {
            let input = AgentInput {
                name: format!("weekly {i}"),
                agent_type: "weekly_review".into(),
                // Once a year: the one slot the benchmark makes due is the only one.
                schedule: Some("0 0 1 1 *".into()),
                ..AgentInput::default()
            };
            let view = a.agents().create(&p, AgentKind::Local, input).await?;
            ids.push(view.id);
        }
    }
    // Due now: the slot is the row's next_run_at (the catch-up rule runs it once).
    let now = a.clock().now_ms();
    let slot = now - 1_000;
    for id in &ids {
        if let Some(mut row) = db.agent_by_id(*id).await? {
            row.next_run_at = Some(slot);
            db.update_agent(&row, AgentLimits::default()).await?;
        }
    }
    println!(
        "scheduler throughput ({backend}, {instances} instance(s), {agents} agents due at once; setup {:.1} s):",
        setup.elapsed().as_secs_f64()
    );
    let start = Instant::now();
    let mut tasks = Vec::new();
    for app in &apps {
        let agents = app.agents().clone();
        tasks.push(tokio::spawn(async move {
            let mut claimed = 0u64;
            loop {
                let r = agents.tick().await?;
                claimed += r.claimed;
                if r.claimed == 0 && r.taken_over == 0 {
                    break;
                }
            }
            agents.idle(Duration::from_secs(120)).await;
            Ok::<u64, Error>(claimed)
        }));
    }
    let mut spread = Vec::new();
    for t in tasks {
        spread.push(t.await??);
    }
    let elapsed = start.elapsed();
    let mut once = 0usize;
    let mut skipped = 0usize;
    for id in &ids {
        let runs = db.runs_for_slot(*id, slot).await?;
        if runs.len() == 1 {
            once += 1;
            if runs[0].status == RunStatus::Skipped {
                skipped += 1;
            }
        }
    }
    println!(
        "  {:.0} slots/s ({} claimed in {:.2} s; per instance {:?}); ran exactly once: {once}/{agents} ({skipped} skipped: no device online)",
        agents as f64 / elapsed.as_secs_f64(),
        spread.iter().sum::<u64>(),
        elapsed.as_secs_f64(),
        spread,
    );
    Ok(once == agents)
}

async fn cloud_run_cost(
    url: &str,
    backend: &str,
    runs: usize,
    items: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    ITEMS.store(items, std::sync::atomic::Ordering::Relaxed);
    let app = instance(url, 16).await?;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let p = user(&app, &format!("bench-cloud-{tag}@example.com")).await?;
    let now = app.clock().now_ms();
    // A registered (offline) device: results are queued for it.
    let db = app.database().clone();
    db.connect_device(
        p.user.id,
        "desk",
        &DeviceInfo {
            name: "Desk".into(),
            platform: "linux".into(),
            app_version: "1.0.0".into(),
            capabilities: Vec::new(),
        },
        DeviceSession {
            session_id: uuid::Uuid::new_v4(),
            instance_id: uuid::Uuid::new_v4(),
        },
        20,
        now,
    )
    .await?;
    // The token through the real OAuth path (the in-process provider issues it).
    let consent = app.agents().oauth_authorize(&p, "google").await?;
    let state = consent
        .split("state=")
        .nth(1)
        .and_then(|s| s.split('&').next())
        .ok_or("no state in the consent URL")?
        .to_owned();
    let token = app
        .agents()
        .oauth_callback("google", "bench-code", &state)
        .await?;
    let agent = app
        .agents()
        .create(
            &p,
            AgentKind::Cloud,
            AgentInput {
                name: "Inbox".into(),
                agent_type: "inbox_triage".into(),
                schedule: Some(String::new()),
                provider: Some("google".into()),
                oauth_token_encrypted: Some(token),
                ..AgentInput::default()
            },
        )
        .await?;
    let mut took = Vec::with_capacity(runs);
    let mut produced = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let run = app.agents().run_now(&p, agent.id).await?;
        app.agents().idle(Duration::from_secs(60)).await;
        took.push(t.elapsed().as_micros() as u64);
        let got = db.run(p.user.id, run).await?.ok_or("the run is gone")?;
        if got.status != RunStatus::Succeeded {
            return Err(format!("a run ended {:?}: {:?}", got.status, got.error).into());
        }
        produced = got.items_produced;
    }
    took.sort_unstable();
    let mean = took.iter().sum::<u64>() as f64 / took.len().max(1) as f64 / 1000.0;
    println!(
        "one cloud run excluding the model ({backend}; {items} mails read, {produced} results queued for one device): p50 {:.2} ms, p99 {:.2} ms, mean {mean:.2} ms over {runs} runs",
        percentile(&took, 0.50),
        percentile(&took, 0.99),
    );
    Ok(())
}

static ITEMS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(20);

/// A Gmail that answers at once from memory (no network: the benchmark measures Adiuva).
struct InstantGmail;

#[async_trait]
impl ProviderApi for InstantGmail {
    fn provider(&self) -> Provider {
        Provider::Google
    }

    fn authorize_url(&self, request: &AuthorizeRequest) -> String {
        format!("https://consent.invalid/?state={}", request.state)
    }

    async fn exchange_code(
        &self,
        _code: &str,
        _verifier: &str,
        _redirect_uri: &str,
        now: i64,
    ) -> Result<TokenSet, ProviderError> {
        Ok(TokenSet {
            access_token: Secret::new("bench-access".into()),
            refresh_token: Some(Secret::new("bench-refresh".into())),
            expires_at: now + 3_600_000,
            scope: Provider::Google.scopes().join(" "),
        })
    }

    async fn refresh(&self, tokens: &TokenSet, now: i64) -> Result<TokenSet, ProviderError> {
        Ok(TokenSet {
            expires_at: now + 3_600_000,
            ..tokens.clone()
        })
    }

    async fn read(
        &self,
        _tokens: &mut TokenSet,
        query: &SourceQuery,
        now: i64,
    ) -> Result<SourcePage, ProviderError> {
        let n = ITEMS
            .load(std::sync::atomic::Ordering::Relaxed)
            .min(query.max_items as usize);
        let items = (0..n)
            .map(|i| SourceItem {
                id: format!("m{i}"),
                thread_id: Some(format!("t{i}")),
                from: "Ann <ann@example.com>".into(),
                subject: format!("Quarterly numbers, part {i}"),
                snippet: "Could you send the figures by Friday?".into(),
                body: "Hi, could you send the quarterly figures by Friday? Thanks, Ann. "
                    .repeat(12),
                received_at: now - i as i64 * 60_000,
                link: None,
            })
            .collect();
        Ok(SourcePage {
            items,
            cursor: Some("4242".into()),
        })
    }
}

/// A model that answers every run with five suggested tasks, at once.
struct InstantModel;

fn results() -> String {
    let tasks: Vec<serde_json::Value> = (0..5)
        .map(|i| {
            serde_json::json!({"type": "task", "title": format!("Send the figures to Ann ({i})"),
                "notes": "She asked for them by Friday.", "source_id": format!("m{i}")})
        })
        .collect();
    serde_json::json!({ "results": tasks }).to_string()
}

#[async_trait]
impl ChatModel for InstantModel {
    async fn complete(&self, _req: CompletionRequest) -> Result<Completion, LlmError> {
        Ok(Completion {
            content: results(),
            tool_calls: Vec::new(),
        })
    }

    async fn stream(
        &self,
        _req: CompletionRequest,
    ) -> Result<BoxStream<'static, Result<StreamEvent, LlmError>>, LlmError> {
        use futures::StreamExt as _;
        Ok(futures::stream::iter([Ok(StreamEvent::Text(results()))]).boxed())
    }
}
