//! [`Adiuva`]: the library's front door, built from ports. The server and the CLI are
//! two hosts of it; a program can embed it with no HTTP at all.

use std::sync::Arc;

use crate::agents::{AgentService, AgentsConfig};
use crate::auth::{AuthConfig, AuthService, LoginLimit};
use crate::backup::{BackupService, DEFAULT_RETENTION};
use crate::chat::orchestrator::Orchestrator;
use crate::devices::{DeviceConfig, DeviceHub, MemoryDeviceBus};
use crate::domain::{Email, Role, Tier};
use crate::error::Error;
use crate::gc::GarbageCollector;
use crate::ports::db::User;
use crate::ports::{BlobStore, Clock, Database, DeviceBus, ProviderApi, SystemClock, VectorIndex};
use crate::rate::RatePolicy;
use crate::seal::Keyring;
use crate::storage::RecordService;
use crate::tiers::TierManager;
use crate::vector::VectorService;

/// The assembled backend.
#[derive(Clone)]
pub struct Adiuva {
    db: Arc<dyn Database>,
    blobs: Option<Arc<dyn BlobStore>>,
    vectors: Option<Arc<dyn VectorIndex>>,
    chat: Option<Arc<Orchestrator>>,
    backup_retention: usize,
    quota_gb_bytes: i64,
    clock: Arc<dyn Clock>,
    auth: AuthService,
    rates: Option<RatePolicy>,
    devices: DeviceHub,
    agents: AgentService,
    keyring: Arc<Keyring>,
}

impl std::fmt::Debug for Adiuva {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adiuva")
            .field("database", &self.db.backend())
            .finish_non_exhaustive()
    }
}

/// Collects ports; [`AdiuvaBuilder::build`] checks that the required ones are there.
#[derive(Default)]
pub struct AdiuvaBuilder {
    db: Option<Arc<dyn Database>>,
    blobs: Option<Arc<dyn BlobStore>>,
    vectors: Option<Arc<dyn VectorIndex>>,
    chat: Option<Arc<Orchestrator>>,
    backup_retention: Option<usize>,
    quota_gb_bytes: Option<i64>,
    clock: Option<Arc<dyn Clock>>,
    auth: Option<AuthConfig>,
    login_limit: Option<LoginLimit>,
    rates: Option<RatePolicy>,
    device_bus: Option<Arc<dyn DeviceBus>>,
    device_config: Option<DeviceConfig>,
    keyring: Option<Keyring>,
    providers: Vec<Arc<dyn ProviderApi>>,
    agents_config: Option<AgentsConfig>,
}

impl AdiuvaBuilder {
    /// The database (required).
    pub fn database(mut self, db: Arc<dyn Database>) -> Self {
        self.db = Some(db);
        self
    }

    /// The blob store (needed for cloud records; without one they answer 503).
    pub fn blobs(mut self, blobs: Arc<dyn BlobStore>) -> Self {
        self.blobs = Some(blobs);
        self
    }

    /// The vector index (needed for `/storage/vectors`; without one it answers 503).
    pub fn vectors(mut self, index: Arc<dyn VectorIndex>) -> Self {
        self.vectors = Some(index);
        self
    }

    /// The chat orchestrator (without one, chat answers 503 `llm_unavailable`).
    pub fn chat(mut self, orchestrator: Arc<Orchestrator>) -> Self {
        self.chat = Some(orchestrator);
        self
    }

    /// How many backups to keep per user (default 10).
    pub fn backup_retention(mut self, keep: usize) -> Self {
        self.backup_retention = Some(keep);
        self
    }

    /// Bytes per "GB" of tier quotas (default 1 GiB; tests use small units).
    pub fn quota_gb_bytes(mut self, bytes: i64) -> Self {
        self.quota_gb_bytes = Some(bytes);
        self
    }

    /// The clock (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Session settings (required: they carry the JWT secret).
    pub fn auth(mut self, config: AuthConfig) -> Self {
        self.auth = Some(config);
        self
    }

    /// Counts login attempts per target email (without it, only the host's per-IP
    /// budgets bound password guessing).
    pub fn login_limit(mut self, limit: LoginLimit) -> Self {
        self.login_limit = Some(limit);
        self
    }

    /// The request budgets every host enforces, HTTP and WebSocket alike (without it,
    /// requests and chats are not counted).
    pub fn rate_policy(mut self, policy: RatePolicy) -> Self {
        self.rates = Some(policy);
        self
    }

    /// The device bus (default: in process, one instance).
    pub fn device_bus(mut self, bus: Arc<dyn DeviceBus>) -> Self {
        self.device_bus = Some(bus);
        self
    }

    /// How devices are reached (default: [`DeviceConfig::default`]).
    pub fn device_config(mut self, config: DeviceConfig) -> Self {
        self.device_config = Some(config);
        self
    }

    /// The server's token keys (`OAUTH_TOKEN_KEY`): seal OAuth tokens, OAuth states,
    /// journeys and queued frames. Default: one random key, so nothing sealed outlives
    /// the process — every instance of one deployment must be given the same keyring.
    pub fn keyring(mut self, keyring: Keyring) -> Self {
        self.keyring = Some(keyring);
        self
    }

    /// An OAuth provider and its sources (without one, its routes answer 503
    /// `oauth_not_configured` and cloud agents of it cannot be created).
    pub fn provider(mut self, provider: Arc<dyn ProviderApi>) -> Self {
        self.providers
            .retain(|p| p.provider() != provider.provider());
        self.providers.push(provider);
        self
    }

    /// How agents run (default: [`AgentsConfig::default`]).
    pub fn agents_config(mut self, config: AgentsConfig) -> Self {
        self.agents_config = Some(config);
        self
    }

    /// Assembles the backend.
    pub fn build(self) -> Result<Adiuva, Error> {
        let db = self
            .db
            .ok_or_else(|| Error::internal("Adiuva needs a database"))?;
        let config = self
            .auth
            .ok_or_else(|| Error::internal("Adiuva needs an AuthConfig"))?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let mut auth = AuthService::new(db.clone(), clock.clone(), config)?;
        if let Some(limit) = self.login_limit {
            auth = auth.with_login_limit(limit);
        }
        let keyring = Arc::new(self.keyring.unwrap_or_else(Keyring::random));
        let devices = DeviceHub::new(
            db.clone(),
            self.device_bus
                .unwrap_or_else(|| Arc::new(MemoryDeviceBus::new())),
            clock.clone(),
            self.device_config.unwrap_or_default(),
            keyring.clone(),
        );
        let quota_gb_bytes = self.quota_gb_bytes.unwrap_or(crate::tiers::GIB);
        let agents = AgentService::new(
            db.clone(),
            clock.clone(),
            keyring.clone(),
            self.providers,
            devices.clone(),
            self.chat.clone(),
            TierManager::new(db.clone()).with_gb_bytes(quota_gb_bytes),
            self.agents_config.unwrap_or_default(),
        );
        Ok(Adiuva {
            agents,
            keyring,
            devices,
            db,
            blobs: self.blobs,
            vectors: self.vectors,
            chat: self.chat,
            backup_retention: self.backup_retention.unwrap_or(DEFAULT_RETENTION),
            quota_gb_bytes,
            clock,
            auth,
            rates: self.rates,
        })
    }
}

impl Adiuva {
    /// Starts assembling.
    pub fn builder() -> AdiuvaBuilder {
        AdiuvaBuilder::default()
    }

    /// The same backend over another handle on its database: a wrapper that adds
    /// behaviour around any [`Database`] (tests count reads with
    /// `testing::CountingDb`). Everything else, keys and budgets included, is shared.
    pub fn with_database(&self, db: Arc<dyn Database>) -> Adiuva {
        Adiuva {
            auth: self.auth.with_database(db.clone()),
            db,
            ..self.clone()
        }
    }

    /// Registration, login, refresh, token checks.
    pub fn auth(&self) -> &AuthService {
        &self.auth
    }

    /// The request budgets (`None`: not counted), one policy for every door.
    pub fn rate_policy(&self) -> Option<&RatePolicy> {
        self.rates.as_ref()
    }

    /// Administration of accounts (the `adiuva user` commands).
    pub fn accounts(&self) -> Accounts<'_> {
        Accounts { app: self }
    }

    /// Tier gates and quotas, read from the database.
    pub fn tiers(&self) -> TierManager {
        TierManager::new(self.db.clone()).with_gb_bytes(self.quota_gb_bytes)
    }

    fn blob_store(&self) -> Result<Arc<dyn BlobStore>, Error> {
        self.blobs.clone().ok_or_else(|| Error::Unavailable {
            code: "blob_store_unavailable",
            detail: "no blob store is configured".into(),
        })
    }

    /// Cloud records; `Unavailable` when no blob store was given.
    pub fn records(&self) -> Result<RecordService, Error> {
        Ok(RecordService::new(
            self.db.clone(),
            self.blob_store()?,
            self.clock.clone(),
            self.tiers(),
        ))
    }

    /// Backups; `Unavailable` when no blob store was given.
    pub fn backups(&self) -> Result<BackupService, Error> {
        Ok(BackupService::new(
            self.db.clone(),
            self.blob_store()?,
            self.clock.clone(),
            self.tiers(),
            self.backup_retention,
        ))
    }

    /// `storage gc`: blobs no row points at; `Unavailable` when no blob store was given.
    pub fn garbage_collector(&self) -> Result<GarbageCollector, Error> {
        Ok(GarbageCollector::new(
            self.db.clone(),
            self.blob_store()?,
            self.clock.clone(),
        ))
    }

    /// The cloud vector store; `Unavailable` when no vector index was given.
    pub fn vectors(&self) -> Result<VectorService, Error> {
        let index = self.vectors.clone().ok_or_else(|| Error::Unavailable {
            code: "vector_index_unavailable",
            detail: "no vector index is configured".into(),
        })?;
        Ok(VectorService::new(
            self.db.clone(),
            index,
            self.clock.clone(),
            self.tiers(),
        ))
    }

    /// The chat orchestrator; `Unavailable` (`llm_unavailable`) when none was given.
    pub fn chat(&self) -> Result<Arc<Orchestrator>, Error> {
        self.chat.clone().ok_or_else(|| Error::Unavailable {
            code: "llm_unavailable",
            detail: "chat is not configured on this server".into(),
        })
    }

    /// Chat turns (REST and sockets) as sanitized events; `Unavailable`
    /// (`llm_unavailable`) when no orchestrator was given.
    pub fn chat_service(&self) -> Result<crate::chat::ChatService, Error> {
        Ok(
            crate::chat::ChatService::new(self.chat()?, self.auth.clone())
                .with_budget(self.rates.clone()),
        )
    }

    /// Device sockets, presence, calls and queues (one hub per instance).
    pub fn devices(&self) -> &DeviceHub {
        &self.devices
    }

    /// Agent configs, runs, the setup journey, OAuth and the scheduler.
    pub fn agents(&self) -> &AgentService {
        &self.agents
    }

    /// The server's token keys.
    pub fn keyring(&self) -> &Arc<Keyring> {
        &self.keyring
    }

    /// The database port, for health checks.
    pub fn database(&self) -> &Arc<dyn Database> {
        &self.db
    }

    /// The clock port.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
}

/// Account administration, addressed by email as an operator would.
#[derive(Debug)]
pub struct Accounts<'a> {
    app: &'a Adiuva,
}

impl Accounts<'_> {
    /// Creates a user with a role and tier.
    pub async fn create(
        &self,
        email: &str,
        password: &str,
        role: Role,
        tier: Tier,
    ) -> Result<User, Error> {
        self.app.auth.create_user(email, password, role, tier).await
    }

    /// Users, oldest first.
    pub async fn list(&self, offset: u64, limit: u64) -> Result<Vec<User>, Error> {
        Ok(self.app.db.list_users(offset, limit).await?)
    }

    /// The user with this email, or `NotFound`.
    pub async fn find(&self, email: &str) -> Result<User, Error> {
        let email = Email::parse(email)?;
        self.app
            .db
            .user_by_email(&email)
            .await?
            .ok_or(Error::NotFound("user"))
    }

    /// Sets a user's tier.
    pub async fn set_tier(&self, email: &str, tier: Tier) -> Result<User, Error> {
        let user = self.find(email).await?;
        self.app
            .db
            .set_tier(user.id, tier, self.app.clock.now_ms())
            .await?;
        self.find(email).await
    }

    /// Sets a user's role.
    pub async fn set_role(&self, email: &str, role: Role) -> Result<User, Error> {
        let user = self.find(email).await?;
        self.app
            .db
            .set_role(user.id, role, self.app.clock.now_ms())
            .await?;
        self.find(email).await
    }

    /// Deletes a user, their sessions, their vector items (the index may live outside
    /// the database, so it is emptied first) and the blobs of their records and backups
    /// (after the rows: a failure to delete one is logged and leaves an orphan that
    /// `adiuva storage gc` finds, as does an upload that was still running).
    pub async fn delete(&self, email: &str) -> Result<User, Error> {
        let user = self.find(email).await?;
        if let Ok(vectors) = self.app.vectors() {
            vectors.delete_all(user.id).await?;
        }
        let keys = self.app.db.user_blob_keys(user.id).await?;
        self.app.db.delete_user(user.id).await?;
        if let Some(blobs) = &self.app.blobs {
            for key in keys {
                crate::storage::discard_blob(blobs.as_ref(), &key).await;
            }
        }
        Ok(user)
    }
}
