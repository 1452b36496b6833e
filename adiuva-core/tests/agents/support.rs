//! Instances of the backend on shared ports, a fake provider, users, devices, agents.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adiuva_core::Adiuva;
use adiuva_core::agents::{AgentsConfig, Schedule};
use adiuva_core::auth::{AuthConfig, Principal};
use adiuva_core::chat::orchestrator::{ModelRoles, Orchestrator};
use adiuva_core::devices::{
    DeviceConfig, DeviceConnection, DeviceHub, DeviceLink, Hello, HubTask, MemoryDeviceBus,
    ToDevice,
};
use adiuva_core::domain::{Email, Millis, Role, Tier, UserId};
use adiuva_core::ports::db::{
    AgentConfigRow, AgentKind, AgentLimits, AgentRepo, AgentRun, AgentStatus, DeviceRepo, User,
    UserRepo,
};
use adiuva_core::ports::llm::CompletionRequest;
use adiuva_core::ports::providers::{
    AuthorizeRequest, Provider, ProviderApi, ProviderError, SourceItem, SourcePage, SourceQuery,
    TokenSet,
};
use adiuva_core::ports::{Clock, ManualClock};
use adiuva_core::seal::Keyring;
use adiuva_core::secret::Secret;
use adiuva_core::testing::MemoryDb;
use adiuva_core::testing::llm::{ScriptedModel, text};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

/// Every wait ends by this; a hang fails the test instead.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// Mail text that must never reach a run log or the queue in plaintext.
pub const MAIL_BODY: &str = "CONFIDENTIAL-MAIL-BODY-7731";
/// What the scripted model proposes (a result: sealed in the queue).
pub const RESULT_TITLE: &str = "Answer-Alice-about-the-offsite";

pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {DEADLINE:?}"))
}

pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// What the fake provider does on `read`.
#[derive(Debug, Clone)]
pub enum ReadMode {
    /// Answers one mail (and the next cursor).
    Mail,
    /// Answers nothing new.
    Empty,
    /// Fails.
    Fail(ProviderError),
}

/// A provider in this process: Google, tokens it hands out itself, a read that can be
/// held (`hold`) until released.
pub struct FakeProvider {
    pub mode: Mutex<ReadMode>,
    pub reads: Mutex<Vec<SourceQuery>>,
    pub tokens_seen: Mutex<Vec<String>>,
    pub refreshes: AtomicU64,
    /// While false, `read` waits.
    pub open: watch::Sender<bool>,
    /// Expiry of the tokens `exchange_code` hands out, relative to `now`.
    pub token_ttl_ms: Mutex<Millis>,
}

impl FakeProvider {
    pub fn new() -> Arc<Self> {
        Arc::new(FakeProvider {
            mode: Mutex::new(ReadMode::Mail),
            reads: Mutex::default(),
            tokens_seen: Mutex::default(),
            refreshes: AtomicU64::new(0),
            open: watch::Sender::new(true),
            token_ttl_ms: Mutex::new(3_600_000),
        })
    }

    pub fn set_mode(&self, mode: ReadMode) {
        *self.mode.lock().expect("lock") = mode;
    }

    pub fn read_count(&self) -> usize {
        self.reads.lock().expect("lock").len()
    }
}

#[async_trait::async_trait]
impl ProviderApi for FakeProvider {
    fn provider(&self) -> Provider {
        Provider::Google
    }

    fn authorize_url(&self, request: &AuthorizeRequest) -> String {
        format!("https://accounts.test/auth?state={}", request.state)
    }

    async fn exchange_code(
        &self,
        _code: &str,
        _verifier: &str,
        _redirect_uri: &str,
        now: Millis,
    ) -> Result<TokenSet, ProviderError> {
        Ok(TokenSet {
            access_token: Secret::new("access-1".into()),
            refresh_token: Some(Secret::new("refresh-1".into())),
            expires_at: now + *self.token_ttl_ms.lock().expect("lock"),
            scope: "https://www.googleapis.com/auth/gmail.readonly".into(),
        })
    }

    async fn refresh(&self, tokens: &TokenSet, now: Millis) -> Result<TokenSet, ProviderError> {
        let n = self.refreshes.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(TokenSet {
            access_token: Secret::new(format!("access-r{n}")),
            refresh_token: tokens.refresh_token.clone(),
            expires_at: now + 3_600_000,
            scope: tokens.scope.clone(),
        })
    }

    async fn read(
        &self,
        tokens: &mut TokenSet,
        query: &SourceQuery,
        _now: Millis,
    ) -> Result<SourcePage, ProviderError> {
        self.reads.lock().expect("lock").push(query.clone());
        self.tokens_seen
            .lock()
            .expect("lock")
            .push(tokens.access_token.expose().clone());
        let mut open = self.open.subscribe();
        open.wait_for(|o| *o).await.expect("gate");
        let mode = self.mode.lock().expect("lock").clone();
        let n = self.read_count();
        match mode {
            ReadMode::Mail => Ok(SourcePage {
                items: vec![SourceItem {
                    id: format!("m{n}"),
                    thread_id: None,
                    from: "Alice <alice@example.com>".into(),
                    subject: "Offsite".into(),
                    snippet: "Can you confirm".into(),
                    body: format!("Hello, {MAIL_BODY} please confirm."),
                    received_at: 1,
                    link: None,
                }],
                cursor: Some(format!("cursor-{n}")),
            }),
            ReadMode::Empty => Ok(SourcePage {
                items: vec![],
                cursor: query.cursor.clone(),
            }),
            ReadMode::Fail(e) => Err(e),
        }
    }
}

/// The model's answer: one task per run (from the item it was given).
fn model_script(req: &CompletionRequest) -> Option<adiuva_core::ports::llm::Completion> {
    let data = &req.messages.last()?.content;
    let source = serde_json::from_str::<Value>(data)
        .ok()
        .and_then(|v| v["items"][0]["id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    Some(text(&format!(
        "Here is what I found:\n```json\n{}\n```",
        json!({"results": [{"type": "task", "title": RESULT_TITLE, "notes": "reply today", "source_id": source}]})
    )))
}

pub fn agents_config() -> AgentsConfig {
    AgentsConfig {
        lease: Duration::from_secs(600),
        local_timeout: Duration::from_secs(300),
        ..AgentsConfig::default()
    }
}

/// Instances of the backend on one database, bus, clock and key.
pub struct Env {
    pub db: Arc<MemoryDb>,
    pub clock: Arc<ManualClock>,
    pub provider: Arc<FakeProvider>,
    pub model: Arc<ScriptedModel>,
    pub apps: Vec<Adiuva>,
    _tasks: Vec<HubTask>,
}

/// 2026-12-01T10:00:00Z.
pub const START: Millis = 1_796_119_200_000;

impl Env {
    pub async fn new(instances: usize) -> Env {
        Env::with(instances, true).await
    }

    pub async fn with(instances: usize, with_model: bool) -> Env {
        Env::build(instances, with_model, agents_config()).await
    }

    pub async fn build(instances: usize, with_model: bool, config: AgentsConfig) -> Env {
        let db = Arc::new(MemoryDb::new());
        let bus = MemoryDeviceBus::new();
        let clock = Arc::new(ManualClock::new(START));
        let key = Keyring::generate_key();
        let provider = FakeProvider::new();
        let model = Arc::new(ScriptedModel::with_handler(model_script));
        let mut apps = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..instances {
            let mut b = Adiuva::builder()
                .database(db.clone())
                .auth(AuthConfig::new(Secret::new(
                    "a test secret of 32 bytes or more".into(),
                )))
                .clock(clock.clone())
                .device_bus(Arc::new(bus.clone()))
                .device_config(DeviceConfig {
                    presence_ttl: Duration::from_secs(3600),
                    ..DeviceConfig::default()
                })
                .keyring(Keyring::parse(&key).expect("key"))
                .provider(provider.clone())
                .agents_config(config.clone());
            if with_model {
                let o = Orchestrator::new(model.clone(), ModelRoles::default()).expect("orch");
                b = b.chat(Arc::new(o));
            }
            let app = b.build().expect("app");
            tasks.push(app.devices().start().await.expect("hub starts"));
            apps.push(app);
        }
        Env {
            db,
            clock,
            provider,
            model,
            apps,
            _tasks: tasks,
        }
    }

    pub fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    pub async fn user(&self) -> Principal {
        let id = UserId::new();
        let now = self.now();
        let user = User {
            id,
            email: Email::parse(&format!("{}@example.com", id.0.simple())).expect("email"),
            password_hash: "not used".into(),
            role: Role::User,
            tier: Tier::Free,
            stripe_customer_id: None,
            created_at: now,
            updated_at: now,
        };
        self.db.insert_user(&user).await.expect("user");
        Principal {
            user,
            session: None,
        }
    }

    /// A sealed Google token set for `who`, through the real authorize → callback path.
    pub async fn token(&self, who: &Principal) -> String {
        let agents = self.apps[0].agents();
        let url = agents
            .oauth_authorize(who, "google")
            .await
            .expect("authorize");
        let state = url.split("state=").nth(1).expect("state").to_owned();
        agents
            .oauth_callback("google", "the-code", &state)
            .await
            .expect("callback")
    }

    /// Inserts an agent directly (the scheduler's view), its next slot after now.
    pub async fn agent(
        &self,
        who: &Principal,
        kind: AgentKind,
        agent_type: &str,
        schedule: Option<&str>,
        timezone: &str,
        token: Option<String>,
    ) -> AgentConfigRow {
        let now = self.now();
        let next = schedule.map(|c| {
            Schedule::parse(c, timezone)
                .expect("schedule")
                .next_after(now)
                .expect("a slot")
        });
        let row = AgentConfigRow {
            id: Uuid::now_v7(),
            user_id: who.user.id,
            kind,
            name: "test agent".into(),
            agent_type: agent_type.into(),
            schedule: schedule.map(str::to_owned),
            timezone: timezone.into(),
            enabled: true,
            filters: json!({}),
            output: json!({}),
            prompt_template: adiuva_core::agents::catalog_item(agent_type)
                .expect("a catalog type")
                .prompt_template
                .into(),
            provider: (kind == AgentKind::Cloud).then(|| "google".to_owned()),
            oauth_token_sealed: token,
            status: AgentStatus::Active,
            sync_cursor: None,
            next_run_at: next,
            created_at: now,
            updated_at: now,
        };
        self.db
            .insert_agent(&row, AgentLimits::default())
            .await
            .expect("agent");
        row
    }

    /// Every instance ticks at once; (claimed, skipped, taken_over) summed.
    pub async fn tick_all(&self) -> (u64, u64, u64) {
        let reports = futures::future::join_all(self.apps.iter().map(|a| a.agents().tick())).await;
        let mut sum = (0, 0, 0);
        for r in reports {
            let r = r.expect("tick");
            sum.0 += r.claimed;
            sum.1 += r.skipped;
            sum.2 += r.taken_over;
        }
        sum
    }

    pub async fn idle(&self) {
        for a in &self.apps {
            assert!(a.agents().idle(DEADLINE).await, "runs did not finish");
        }
    }

    pub async fn runs(&self, who: &Principal, agent: Uuid) -> Vec<AgentRun> {
        self.db
            .list_runs(who.user.id, Some(agent), 0, 1000)
            .await
            .expect("runs")
    }

    pub async fn queued(
        &self,
        who: &Principal,
        device: &str,
    ) -> Vec<adiuva_core::ports::db::QueuedFrame> {
        self.db
            .queued_frames(who.user.id, device, 0, self.now(), 10_000)
            .await
            .expect("queue")
    }
}

struct TestLink {
    tx: mpsc::Sender<ToDevice>,
}

#[async_trait::async_trait]
impl DeviceLink for TestLink {
    fn send(&self, frame: &ToDevice) -> bool {
        self.tx.try_send(frame.clone()).is_ok()
    }

    async fn deliver(&self, frame: &ToDevice) -> bool {
        self.tx.send(frame.clone()).await.is_ok()
    }

    fn close(&self, _reason: &str) {}
}

/// A connected device that records the frames it is sent.
pub struct TestDevice {
    pub conn: DeviceConnection,
    rx: mpsc::Receiver<ToDevice>,
}

pub async fn connect(hub: &DeviceHub, who: &Principal, device_id: &str) -> TestDevice {
    let (tx, rx) = mpsc::channel(1024);
    let hello = Hello {
        device_id: device_id.into(),
        name: "Laptop".into(),
        platform: "linux".into(),
        app_version: "1.0.0".into(),
        capabilities: vec![],
    };
    let conn = hub
        .connect(who, hello, Arc::new(TestLink { tx }))
        .await
        .expect("connects");
    let mut d = TestDevice { conn, rx };
    assert!(matches!(d.next().await, ToDevice::HelloAck { .. }));
    d
}

/// Registers a device and disconnects it (registered, offline).
pub async fn register(hub: &DeviceHub, who: &Principal, device_id: &str) {
    let d = connect(hub, who, device_id).await;
    d.conn.close().await;
}

impl TestDevice {
    pub async fn next(&mut self) -> ToDevice {
        within("the next frame", self.rx.recv())
            .await
            .expect("the link is open")
    }

    /// No frame arrives within a short while.
    pub async fn nothing_more(&mut self) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(self.rx.try_recv().is_err(), "an unexpected frame arrived");
    }
}

/// The frames of the device repo in plaintext never hold `needle`.
pub fn queue_holds_no(frames: &[adiuva_core::ports::db::QueuedFrame], needle: &str) {
    for f in frames {
        let text = String::from_utf8_lossy(&f.payload);
        assert!(!text.contains(needle), "plaintext {needle} in the queue");
    }
}
