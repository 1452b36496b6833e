//! Building and running the server: [`Application::build`] then
//! [`Application::run_until_stopped`]. Binding happens in `build`, so `port()` is known
//! before serving (tests bind port 0).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use adiuva_adapters::blobs::ObjectBlobs;
use adiuva_adapters::database::AnyDatabase;
use adiuva_adapters::providers::{GoogleProvider, MicrosoftProvider};
use adiuva_adapters::rate_limit::{MemoryRateLimiter, RedisRateLimiter};
use adiuva_core::Adiuva;
use adiuva_core::auth::LoginLimit;
use adiuva_core::chat::orchestrator::Orchestrator;
use adiuva_core::ports::{ChatModel, DeviceBus, RateLimiter};
use adiuva_core::rate::RatePolicy;
use poem::{EndpointExt, IntoEndpoint, Route};

use crate::api::{API_PREFIX, api_service};
use crate::error::to_json_error;
use crate::middleware::{BodyLimit, RateLimit, RequestId, cors};
use crate::settings::{ConfigError, Settings};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A setting is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An adapter could not be set up.
    #[error(transparent)]
    Adapter(#[from] adiuva_adapters::AdapterError),
    /// The core refused its configuration.
    #[error("{0}")]
    Core(#[from] adiuva_core::Error),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The backend assembled from settings: adapters chosen by URL, migrations applied.
#[derive(Clone)]
pub struct Backend {
    /// The facade.
    pub adiuva: Adiuva,
    /// The database with its operational handle.
    pub database: AnyDatabase,
    /// Where blobs live (for logs).
    pub blob_location: String,
    /// Which vector index (for logs).
    pub vector_location: String,
    /// Counts request budgets (Redis when configured, else in process).
    pub rate_limiter: Arc<dyn RateLimiter>,
    /// Where budgets are counted (for logs).
    pub rate_limiter_location: String,
    /// Where the device bus is (for logs; credentials redacted).
    pub device_bus_location: String,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("database", &self.database)
            .field("blob_location", &self.blob_location)
            .field("vector_location", &self.vector_location)
            .field("rate_limiter", &self.rate_limiter_location)
            .field("device_bus", &self.device_bus_location)
            .finish_non_exhaustive()
    }
}

impl Backend {
    /// Connects the database (migrating it), checks the blob store and builds [`Adiuva`].
    pub async fn connect(settings: &Settings) -> Result<Self, StartupError> {
        Self::connect_with_model(settings, None).await
    }

    /// [`connect`](Self::connect) with a given chat model instead of the
    /// OpenAI-compatible adapter the settings describe (benchmarks, embedding).
    pub async fn connect_with_model(
        settings: &Settings,
        model: Option<Arc<dyn ChatModel>>,
    ) -> Result<Self, StartupError> {
        let auth = settings.auth_config()?;
        // Before anything is touched: a prod server without its token key stops here.
        let keyring = settings.resolve_oauth_keyring()?;
        let database = AnyDatabase::connect(&settings.database_url()).await?;
        let applied = database.migrate().await?;
        if !applied.is_empty() {
            tracing::info!(migrations = ?applied, "applied database migrations");
        }
        let blobs = ObjectBlobs::from_url(&settings.blob_url(), &settings.s3_options())?;
        blobs.probe().await?;
        let blob_location = blobs.location().to_owned();
        let (vectors, vector_location) =
            adiuva_adapters::vector::connect(&settings.vector_settings(), &database).await?;
        let model: Arc<dyn ChatModel> = match model {
            Some(m) => m,
            None => Arc::new(adiuva_adapters::llm::openai::OpenAiCompatible::new(
                settings.llm_config(),
            )?),
        };
        let orchestrator =
            Orchestrator::new(model, settings.model_roles())?.with_limits(settings.chat_limits());
        let (rate_limiter, rate_limiter_location): (Arc<dyn RateLimiter>, String) =
            match &settings.redis_url {
                Some(url) => (
                    Arc::new(RedisRateLimiter::connect(&url.0).await?),
                    format!("redis at {}", url.redacted()),
                ),
                None => (Arc::new(MemoryRateLimiter::new()), "in process".into()),
            };
        let (device_bus, device_bus_location) = device_bus(settings).await?;
        let mut builder = Adiuva::builder()
            .device_bus(device_bus)
            .device_config(settings.device_config())
            .keyring(keyring)
            .agents_config(settings.agents_config());
        // A provider is offered only when its client id is set; without it its routes
        // answer 503 oauth_not_configured.
        if let Some(google) = settings.google_config() {
            builder = builder.provider(Arc::new(GoogleProvider::new(google)?));
        }
        if let Some(microsoft) = settings.microsoft_config() {
            builder = builder.provider(Arc::new(MicrosoftProvider::new(microsoft)?));
        }
        if settings.rate_limit_enabled {
            builder = builder
                .login_limit(LoginLimit {
                    limiter: rate_limiter.clone(),
                    per_minute: settings.login_attempts_per_email_per_minute,
                })
                .rate_policy(RatePolicy::new(
                    rate_limiter.clone(),
                    settings.rate_limit_ip_per_minute,
                ));
        }
        let adiuva = builder
            .chat(Arc::new(orchestrator))
            .database(database.port())
            .blobs(Arc::new(blobs))
            .vectors(vectors)
            .backup_retention(settings.backup_retention)
            .quota_gb_bytes(settings.quota_gb_bytes)
            .auth(auth)
            .build()?;
        Ok(Self {
            adiuva,
            database,
            rate_limiter,
            rate_limiter_location,
            device_bus_location,
            blob_location,
            vector_location,
        })
    }
}

/// The device bus `device_bus_url` names, and where it is (for logs, redacted).
async fn device_bus(settings: &Settings) -> Result<(Arc<dyn DeviceBus>, String), StartupError> {
    Ok(
        adiuva_adapters::device_bus::connect(&settings.device_bus_url(), &settings.database_url())
            .await?,
    )
}

/// The OAuth providers offered (their client id set), for the start-up log line.
fn oauth_providers(settings: &Settings) -> String {
    let mut names = Vec::new();
    if settings.google_client_id.is_some() {
        names.push("google");
    }
    if settings.microsoft_client_id.is_some() {
        names.push("microsoft");
    }
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}

/// A bound, ready-to-serve server.
pub struct Application {
    listener: tokio::net::TcpListener,
    port: u16,
    backend: Backend,
    settings: Arc<Settings>,
}

impl Application {
    /// Assembles the backend and binds `settings.bind` (port 0 picks a free port).
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::build_inner(settings, None).await
    }

    /// [`build`](Self::build) with a given chat model (see
    /// [`Backend::connect_with_model`]).
    pub async fn build_with_model(
        settings: Settings,
        model: Arc<dyn ChatModel>,
    ) -> Result<Self, StartupError> {
        Self::build_inner(settings, Some(model)).await
    }

    async fn build_inner(
        settings: Settings,
        model: Option<Arc<dyn ChatModel>>,
    ) -> Result<Self, StartupError> {
        let backend = Backend::connect_with_model(&settings, model).await?;
        let bind_error = |source| StartupError::Bind {
            addr: settings.bind,
            source,
        };
        let listener = tokio::net::TcpListener::bind(settings.bind)
            .await
            .map_err(bind_error)?;
        let port = listener.local_addr().map_err(bind_error)?.port();
        Ok(Self {
            listener,
            port,
            backend,
            settings: Arc::new(settings),
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The assembled backend.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The backend, to swap a part before serving (tests wrap the database with
    /// [`Adiuva::with_database`] to count its calls).
    pub fn backend_mut(&mut self) -> &mut Backend {
        &mut self.backend
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests
    /// finish (up to `shutdown_timeout_secs`) and closes the database.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let s = &self.settings;
        tracing::info!(
            url = %format!("http://{}:{}", s.bind.ip(), self.port),
            docs = %format!("http://{}:{}/docs", s.bind.ip(), self.port),
            data_dir = %s.data_dir.display(),
            database = %crate::settings::redact_url(&s.database_url()),
            blobs = %self.backend.blob_location,
            vectors = %self.backend.vector_location,
            rate_limits = %if s.rate_limit_enabled { self.backend.rate_limiter_location.as_str() } else { "off" },
            device_bus = %self.backend.device_bus_location,
            instance = %self.backend.adiuva.devices().instance_id(),
            scheduler = s.scheduler_enabled,
            oauth_providers = %oauth_providers(s),
            env = ?s.env,
            "adiuva listening"
        );
        let app = routes(&self.settings, &self.backend);
        let hub = self.backend.adiuva.devices().clone();
        // The bus mailbox, presence heartbeat and queue expiry run while the server serves.
        let hub_task = hub.start().await.map_err(std::io::Error::other)?;
        // The scheduler starts after the hub: a local run's trigger goes through it.
        let scheduler = if self.settings.scheduler_enabled {
            Some(
                self.backend
                    .adiuva
                    .agents()
                    .start()
                    .await
                    .map_err(std::io::Error::other)?,
            )
        } else {
            None
        };
        let housekeeping = tokio::spawn(housekeeping(self.backend.adiuva.clone()));
        let timeout = Duration::from_secs(self.settings.shutdown_timeout_secs);
        // A graceful stop closes the device sockets first (they never end on their own, so
        // the drain would wait for them) and ends their sessions, so other instances see
        // the devices offline at once.
        let shutdown = async move {
            shutdown.await;
            hub.shutdown().await;
        };
        let result = crate::conn::serve(
            self.listener,
            app,
            self.settings.conn_limits(),
            shutdown,
            timeout,
        )
        .await;
        // No new slot is claimed once serving stopped; a run cut short here keeps its
        // lease, which another instance takes over when it passes.
        drop(scheduler);
        drop(hub_task);
        housekeeping.abort();
        self.backend.database.close().await;
        tracing::info!("adiuva stopped");
        result
    }
}

/// A backup body is opaque bytes whatever the client labels it (the desktop app and curl
/// send none or `application/x-www-form-urlencoded`), so `PUT /backup` is always read as
/// `application/octet-stream`.
async fn opaque_backup_bodies<E: poem::Endpoint>(
    ep: Arc<E>,
    mut req: poem::Request,
) -> poem::Result<poem::Response> {
    if req.method() == poem::http::Method::PUT && req.uri().path() == BACKUP_PATH {
        req.headers_mut().insert(
            poem::http::header::CONTENT_TYPE,
            poem::http::HeaderValue::from_static("application/octet-stream"),
        );
    }
    ep.call(req).await.map(poem::IntoResponse::into_response)
}

const BACKUP_PATH: &str = "/api/v1/backup";

/// Periodic chores: purge expired refresh tokens at start and then hourly. With several
/// instances each does it; the DELETE is idempotent, so that costs only a query.
async fn housekeeping(adiuva: Adiuva) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        match adiuva.auth().purge_expired_tokens().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "purged expired refresh tokens"),
            Err(e) => tracing::warn!(error = %e, "purging expired refresh tokens failed"),
        }
    }
}

/// The whole HTTP surface with its middleware, outermost last:
/// body limit → opaque backup bodies → rate limits → JSON errors → CORS → JSON errors
/// (CORS refusals) → request id.
pub fn routes(settings: &Settings, backend: &Backend) -> impl poem::Endpoint + 'static {
    let adiuva = backend.adiuva.clone();
    let limits = RateLimit::new(adiuva.clone());
    let api = api_service();
    let docs = api.swagger_ui();
    let spec = api.spec_endpoint();
    let timings = crate::ws::WsTimings {
        tool_timeout: Duration::from_secs(settings.chat_tool_timeout_secs.max(1)),
        ping_every: Duration::from_secs(settings.chat_ping_interval_secs.max(1)),
        pong_timeout: Duration::from_secs(settings.chat_pong_timeout_secs.max(1)),
    };
    let ws_limits = crate::ws::WsLimits::new(
        settings.chat_max_message_bytes.max(1024),
        settings.chat_max_sockets_per_user,
    );
    // A replacing socket overlaps the one it replaces until the hub closes that one.
    let device_limits = crate::ws::WsLimits::devices(
        settings.chat_max_message_bytes.max(1024),
        (settings.device_max_per_user as usize).saturating_mul(2),
    );
    Route::new()
        .nest(API_PREFIX, api.into_endpoint())
        .at(
            format!("{API_PREFIX}/chat/stream"),
            poem::get(crate::ws::chat_stream)
                .data(timings)
                .data(ws_limits),
        )
        .at(
            format!("{API_PREFIX}/ws/device"),
            poem::get(crate::ws::device_socket)
                .data(timings)
                .data(device_limits),
        )
        .at(format!("{API_PREFIX}/openapi.json"), spec)
        .at(
            format!("{API_PREFIX}/asyncapi.json"),
            poem::get(crate::asyncapi::asyncapi_endpoint),
        )
        .nest("/docs", docs)
        .data(adiuva)
        .with(BodyLimit::new(
            settings.body_limit_bytes,
            vec![format!("{API_PREFIX}/backup")],
        ))
        .around(opaque_backup_bodies)
        .with(limits)
        .catch_all_error(to_json_error)
        .with(cors(&settings.cors_origins))
        .catch_all_error(to_json_error)
        .with(RequestId)
}

/// Installs SIGINT and SIGTERM handlers now and returns a future that resolves when
/// either arrives. Installing eagerly (not on first poll) means a signal that arrives
/// while the server is still starting is not lost to the default action.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let int = signal(SignalKind::interrupt());
        let term = signal(SignalKind::terminate());
        async move {
            match (int, term) {
                (Ok(mut int), Ok(mut term)) => tokio::select! {
                    _ = int.recv() => tracing::info!("SIGINT received; draining in-flight requests"),
                    _ = term.recv() => tracing::info!("SIGTERM received; draining in-flight requests"),
                },
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!(error = %e, "cannot install signal handlers; stop the server with SIGKILL");
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!("Ctrl-C received; draining in-flight requests");
            } else {
                std::future::pending::<()>().await;
            }
        }
    }
}
