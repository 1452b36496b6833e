//! Typed settings: defaults < `adiuva.toml` < environment < command-line flags.
//!
//! Every key is declared once, in the `settings!` invocation below: its name (the field
//! and the `adiuva.toml` key), environment variables, default, description (the doc
//! comment), type (which says how it is parsed and whether it is secret) and bounds. The
//! [`Settings`] struct, its loading, [`KEYS`], `.env.example` (`adiuva config example`),
//! README's settings table (`--format markdown`) and `adiuva config show` all come from it.
//!
//! **Adding a key** is one entry here (then `adiuva config example > .env.example` and
//! paste `adiuva config example --format markdown` over README's table; tests fail until
//! both match). A new value type implements [`declare::Value`].

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use adiuva_core::Secret;
use adiuva_core::auth::JwtAlgorithm;

mod declare;
mod derived;
mod docs;
#[cfg(test)]
mod tests;

pub use declare::{KeyDoc, Value};
use declare::{SetError, trimmed};

/// Where the server runs: `dev` is forgiving, `prod` refuses unsafe defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// Local development (default): generated JWT secret, readable logs.
    Dev,
    /// Production: a JWT secret is required, logs are JSON.
    Prod,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Text in dev, JSON in prod.
    Auto,
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A URL whose password is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct RedactedUrl(pub String);

impl RedactedUrl {
    /// The URL with its credentials shown as `***` (see [`redact_url`]).
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl fmt::Debug for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

/// Every credential a URL can carry, hidden: the one rule, kept in core
/// ([`adiuva_core::secret::redact_url`]) so adapters and hosts share it.
pub use adiuva_core::secret::redact_url;

// The one declaration. Defaults that core or an adapter also needs are that crate's
// constant, named here, so each lives in one place.
declare::settings! {
    /// dev or prod. prod requires JWT_SECRET and logs JSON.
    env: Environment = "dev", env ["ADIUVA_ENV", "ENV"];
    /// Address to listen on (`adiuva serve --bind`).
    bind: SocketAddr = "127.0.0.1:8080", env ["ADIUVA_BIND"];
    /// Directory for the embedded database, blobs and the generated dev secret (`--data-dir`).
    data_dir: PathBuf = "./data", env ["ADIUVA_DATA_DIR"];
    /// Database URL: sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DB. Unset:
    /// `sqlite://<data_dir>/adiuva.db`.
    database_url: Option<RedactedUrl> = "", env ["ADIUVA_DATABASE_URL", "DATABASE_URL"];
    /// Blob store URL: file://DIR, s3://BUCKET (see s3_*) or memory://. Unset:
    /// `file://<data_dir>/blobs`.
    blob_url: Option<String> = "", env ["ADIUVA_BLOB_URL"];
    /// HMAC secret for access tokens, at least 32 bytes. Unset in dev: generated once into
    /// `<data_dir>/jwt_secret`. Required in prod.
    jwt_secret: Option<Secret<String>> = "", env ["ADIUVA_JWT_SECRET", "JWT_SECRET"];
    /// HS256, HS384 or HS512.
    jwt_algorithm: JwtAlgorithm = "HS256", env ["ADIUVA_JWT_ALGORITHM", "JWT_ALGORITHM"];
    /// Access-token lifetime in seconds.
    access_token_ttl_secs: i64 = "900", env ["ADIUVA_ACCESS_TOKEN_TTL_SECS"];
    /// Refresh-token lifetime in days.
    refresh_token_ttl_days: i64 = "30", env ["ADIUVA_REFRESH_TOKEN_TTL_DAYS"];
    /// Extra allowed origins, comma-separated. app://… and `http://localhost:<port>` are always
    /// allowed.
    cors_origins: Vec<String> = "", env ["ADIUVA_CORS_ORIGINS", "CORS_ORIGINS"];
    /// Largest JSON request body in bytes (larger: 413). Backups stream and are limited by the
    /// tier quota instead.
    body_limit_bytes: usize = "10485760", env ["ADIUVA_BODY_LIMIT_BYTES"];
    /// Enforce request budgets: per user by tier (20/60/120/200 per minute) and per IP for
    /// unauthenticated requests. Counted in Redis when redis_url is set, else in this process.
    rate_limit_enabled: bool = "true", env ["ADIUVA_RATE_LIMIT_ENABLED"];
    /// Requests per minute per client IP to routes that take no token (register, login,
    /// refresh, health, the API document) or that come without a valid one; a token sent to a
    /// public route is ignored.
    rate_limit_ip_per_minute: u32 = "60", env ["ADIUVA_RATE_LIMIT_IP_PER_MINUTE"];
    /// Login attempts per minute per target email, right or wrong, from any IP (counted with
    /// the other budgets, in Redis when redis_url is set). Over it: 429 rate_limited before any
    /// password hashing.
    login_attempts_per_email_per_minute: u32 = "10",
        env ["ADIUVA_LOGIN_ATTEMPTS_PER_EMAIL_PER_MINUTE"],
        min 1 ("turn all budgets off with rate_limit_enabled = false");
    /// Bytes counted as one GB in tier quotas (cloud_storage_gb, backup_gb). Lower it only to
    /// exercise quotas in tests.
    quota_gb_bytes: i64 = adiuva_core::tiers::GIB, env ["ADIUVA_QUOTA_GB_BYTES"], min 1;
    /// Backups kept per user; older ones are deleted (with their blobs) after each upload.
    backup_retention: usize = adiuva_core::backup::DEFAULT_RETENTION,
        env ["ADIUVA_BACKUP_RETENTION"], min 1;
    /// auto (text in dev, JSON in prod), text or json.
    log_format: LogFormat = "auto", env ["ADIUVA_LOG_FORMAT"];
    /// tracing filter, e.g. info or adiuva_server=debug,info.
    log_level: String = "info", env ["ADIUVA_LOG", "RUST_LOG"];
    /// How long SIGINT/SIGTERM waits for in-flight requests.
    shutdown_timeout_secs: u64 = "30", env ["ADIUVA_SHUTDOWN_TIMEOUT_SECS"];
    /// Server-side key for the chat models. Unset: chat works only with a per-request api_key
    /// (BYOK) or a keyless openai_base_url; otherwise 503 llm_unavailable.
    openai_api_key: Option<Secret<String>> = "", env ["ADIUVA_OPENAI_API_KEY", "OPENAI_API_KEY"];
    /// Any OpenAI-compatible endpoint (Ollama, vLLM, llama.cpp, LM Studio); a non-OpenAI URL
    /// may need no key. Unset: `https://api.openai.com/v1`.
    openai_base_url: Option<String> = "", env ["ADIUVA_OPENAI_BASE_URL", "OPENAI_BASE_URL"];
    /// Key for models named `cerebras/<model>`, sent to cerebras_base_url.
    cerebras_api_key: Option<Secret<String>> = "",
        env ["ADIUVA_CEREBRAS_API_KEY", "CEREBRAS_API_KEY"];
    /// Cerebras's OpenAI-compatible endpoint.
    cerebras_base_url: String = adiuva_adapters::llm::openai::CEREBRAS_BASE_URL,
        env ["ADIUVA_CEREBRAS_BASE_URL", "CEREBRAS_BASE_URL"], parse trimmed;
    /// Model that classifies a message's intent (which agent answers).
    router_model: String = adiuva_core::chat::orchestrator::DEFAULT_MODEL,
        env ["ADIUVA_ROUTER_MODEL", "ROUTER_MODEL"], parse trimmed;
    /// Model that runs the agents and their tools (`cerebras/<model>` for Cerebras).
    agent_model: String = adiuva_core::chat::orchestrator::DEFAULT_MODEL,
        env ["ADIUVA_AGENT_MODEL", "AGENT_MODEL"], parse trimmed;
    /// Model that merges a multi-agent pipeline's results into one answer.
    synthesis_model: String = adiuva_core::chat::orchestrator::DEFAULT_MODEL,
        env ["ADIUVA_SYNTHESIS_MODEL", "SYNTHESIS_MODEL"], parse trimmed;
    /// How long a tool call waits for the device's tool_result (the chat WebSocket, and the device
    /// socket for `POST /chat` with device_id) before the model gets an error result.
    chat_tool_timeout_secs: u64 = "30", env ["ADIUVA_CHAT_TOOL_TIMEOUT_SECS"];
    /// Interval of the WebSockets' pings, chat and device (keeps proxies from closing idle
    /// sockets).
    chat_ping_interval_secs: u64 = "30", env ["ADIUVA_CHAT_PING_INTERVAL_SECS"];
    /// Deadline of a whole chat turn (routing, agents, tool round trips, synthesis). Past it
    /// the model calls are dropped and the client gets the text so far and `chat_timeout`
    /// (REST: 504 with `partial_response`; WebSocket: an `error` frame after the
    /// `text_chunk`s).
    chat_turn_timeout_secs: u64 = adiuva_core::chat::orchestrator::DEFAULT_TURN_TIMEOUT_SECS,
        env ["ADIUVA_CHAT_TURN_TIMEOUT_SECS"], min 1;
    /// Context window of the chat models, in tokens (llama.cpp: its `-c` per slot). Prompts are
    /// fitted to it, dropping the oldest history and context first; a message that cannot fit
    /// is 413 `message_too_long`. Must be at least twice `agent_max_tokens` and
    /// `synthesis_max_tokens`.
    model_context_tokens: usize = adiuva_core::chat::window::DEFAULT_CONTEXT_TOKENS,
        env ["ADIUVA_MODEL_CONTEXT_TOKENS"],
        min 512 ("the assistant's instructions alone need several hundred");
    /// Most tokens of each agent reply (sent as `max_tokens`; each tool round is one reply).
    /// The router is always limited to a few tokens.
    agent_max_tokens: u32 = adiuva_core::chat::orchestrator::DEFAULT_MAX_TOKENS,
        env ["ADIUVA_AGENT_MAX_TOKENS"], min 1;
    /// Most tokens of the reply that merges a multi-agent pipeline's results.
    synthesis_max_tokens: u32 = adiuva_core::chat::orchestrator::DEFAULT_MAX_TOKENS,
        env ["ADIUVA_SYNTHESIS_MAX_TOKENS"], min 1;
    /// A chat or device WebSocket from which nothing arrives (not even a pong to the pings) for
    /// this long is closed (1001).
    chat_pong_timeout_secs: u64 = "60", env ["ADIUVA_CHAT_PONG_TIMEOUT_SECS"];
    /// Largest chat or device WebSocket message (and frame) a client may send; larger: the
    /// socket is closed with 1009.
    chat_max_message_bytes: usize = "1048576", env ["ADIUVA_CHAT_MAX_MESSAGE_BYTES"];
    /// Open chat WebSockets per user, counted per instance; one more is refused with 429
    /// too_many_sockets.
    chat_max_sockets_per_user: usize = "10", env ["ADIUVA_CHAT_MAX_SOCKETS_PER_USER"];
    /// Time to receive a complete request head: from the accept on a new connection, from its
    /// first byte on a kept-alive one. A deadline, not an inactivity timer.
    header_read_timeout_secs: u64 = "15", env ["ADIUVA_HEADER_READ_TIMEOUT_SECS"];
    /// An idle kept-alive connection is closed when no new request starts within this. Keep it
    /// above a load balancer's idle timeout.
    keep_alive_timeout_secs: u64 = "75", env ["ADIUVA_KEEP_ALIVE_TIMEOUT_SECS"];
    /// A response write that makes no progress for this long (the client stopped reading)
    /// closes the connection.
    send_timeout_secs: u64 = "60", env ["ADIUVA_SEND_TIMEOUT_SECS"];
    /// Average rate a request body must keep; a slower or stalled body (a backup too) is cut
    /// off and nothing is kept.
    min_body_rate_bytes_per_sec: u64 = "500", env ["ADIUVA_MIN_BODY_RATE_BYTES_PER_SEC"];
    /// Longest the server waits for a request body's bytes in total; each
    /// min_body_rate_bytes_per_sec bytes received earn a second back (up to this).
    body_read_timeout_secs: u64 = "20", env ["ADIUVA_BODY_READ_TIMEOUT_SECS"];
    /// Open connections per client IP (0: no cap); more are answered 429 too_many_connections
    /// and closed. Behind a reverse proxy every connection comes from the proxy: raise it or
    /// set 0.
    max_connections_per_ip: usize = "256", env ["ADIUVA_MAX_CONNECTIONS_PER_IP"];
    /// Redis (redis://) for rate limits shared by all instances. Unset: counted in this
    /// process.
    redis_url: Option<RedactedUrl> = "", env ["ADIUVA_REDIS_URL", "REDIS_URL"];
    /// Device bus, how an instance reaches a device whose socket another instance holds: memory
    /// (one instance only), redis://…, postgres (the database_url's PostgreSQL, LISTEN/NOTIFY)
    /// or postgres://…. Unset: Redis at redis_url when set, else memory.
    device_bus_url: Option<RedactedUrl> = "", env ["ADIUVA_DEVICE_BUS_URL"];
    /// A device socket whose instance has not refreshed its presence for this long counts as
    /// offline (its instance died); instances refresh every third of it.
    device_presence_ttl_secs: u64 = adiuva_core::devices::DEFAULT_PRESENCE_TTL_SECS,
        env ["ADIUVA_DEVICE_PRESENCE_TTL_SECS"],
        min 3 ("instances refresh every third of it");
    /// Frames a device's offline queue holds; beyond it the oldest expire (the device sees the
    /// count in hello_ack).
    device_queue_max_frames: u32 = adiuva_core::devices::DEFAULT_QUEUE_MAX_FRAMES,
        env ["ADIUVA_DEVICE_QUEUE_MAX_FRAMES"], min 1;
    /// A queued frame not delivered and acked within this many seconds expires.
    device_queue_max_age_secs: u64 = adiuva_core::devices::DEFAULT_QUEUE_MAX_AGE_SECS,
        env ["ADIUVA_DEVICE_QUEUE_MAX_AGE_SECS"], min 1;
    /// Devices a user may register; a device_hello beyond it is refused. Each instance also
    /// holds at most twice this many device sockets per user (a replacing socket overlaps the
    /// one it replaces).
    device_max_per_user: u32 = adiuva_core::devices::DEFAULT_MAX_DEVICES_PER_USER,
        env ["ADIUVA_DEVICE_MAX_PER_USER"], min 1;
    /// Google OAuth client id (Gmail agents). Unset: Google is not offered
    /// (`/oauth/google/*` answers 503 oauth_not_configured).
    google_client_id: Option<String> = "", env ["ADIUVA_GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_ID"];
    /// Google OAuth client secret.
    google_client_secret: Option<Secret<String>> = "",
        env ["ADIUVA_GOOGLE_CLIENT_SECRET", "GOOGLE_CLIENT_SECRET"];
    /// Google's consent page.
    google_auth_url: String = adiuva_adapters::providers::GOOGLE_AUTH_URL,
        env ["ADIUVA_GOOGLE_AUTH_URL", "GOOGLE_AUTH_URL"], parse trimmed;
    /// Google's token endpoint.
    google_token_url: String = adiuva_adapters::providers::GOOGLE_TOKEN_URL,
        env ["ADIUVA_GOOGLE_TOKEN_URL", "GOOGLE_TOKEN_URL"], parse trimmed;
    /// The Gmail API's base URL.
    gmail_api_url: String = adiuva_adapters::providers::GMAIL_API_URL,
        env ["ADIUVA_GMAIL_API_URL", "GMAIL_API_URL"], parse trimmed;
    /// Microsoft OAuth client (application) id (Outlook and Teams agents). Unset: Microsoft
    /// is not offered (`/oauth/microsoft/*` answers 503 oauth_not_configured).
    microsoft_client_id: Option<String> = "",
        env ["ADIUVA_MICROSOFT_CLIENT_ID", "MICROSOFT_CLIENT_ID"];
    /// Microsoft OAuth client secret.
    microsoft_client_secret: Option<Secret<String>> = "",
        env ["ADIUVA_MICROSOFT_CLIENT_SECRET", "MICROSOFT_CLIENT_SECRET"];
    /// Microsoft identity platform authority (`…/common`, or `…/<tenant>`).
    microsoft_authority_url: String = adiuva_adapters::providers::MICROSOFT_AUTHORITY_URL,
        env ["ADIUVA_MICROSOFT_AUTHORITY_URL", "MICROSOFT_AUTHORITY_URL"], parse trimmed;
    /// Microsoft Graph's base URL.
    ms_graph_url: String = adiuva_adapters::providers::MS_GRAPH_URL,
        env ["ADIUVA_MS_GRAPH_URL", "MS_GRAPH_URL"], parse trimmed;
    /// Public base URL of this server as the browser reaches it; providers redirect to
    /// `<base>/api/v1/oauth/<provider>/callback` (register that URL with them).
    oauth_redirect_base_url: String = "http://localhost:8000",
        env ["ADIUVA_OAUTH_REDIRECT_BASE_URL", "OAUTH_REDIRECT_BASE_URL"], parse trimmed;
    /// Key sealing OAuth tokens, OAuth state and journey sessions: 32 bytes as 64 hex digits
    /// or base64; `id:key,id:key` rotates (the first seals, all open). Unset in dev: generated
    /// once into `<data_dir>/oauth_token_key`. Required in prod.
    oauth_token_key: Option<Secret<String>> = "",
        env ["ADIUVA_OAUTH_TOKEN_KEY", "OAUTH_TOKEN_KEY"];
    /// Run the agent scheduler in this process (every instance may; slots are claimed once).
    scheduler_enabled: bool = "true", env ["ADIUVA_SCHEDULER_ENABLED", "SCHEDULER_ENABLED"];
    /// Seconds between scheduler ticks (due agents start within one tick of their slot).
    scheduler_tick_secs: u64 = adiuva_core::agents::DEFAULT_TICK_SECS,
        env ["ADIUVA_SCHEDULER_TICK_SECS", "SCHEDULER_TICK_SECS"], min 1;
    /// Lease of a running agent run; its instance renews it every third. A run whose lease
    /// passed (its instance died) is taken over by another instance.
    agent_run_lease_secs: u64 = adiuva_core::agents::DEFAULT_LEASE_SECS,
        env ["ADIUVA_AGENT_RUN_LEASE_SECS"],
        min 3 ("instances renew it every third");
    /// How long a local agent run waits for its device's data_response before it fails.
    agent_local_timeout_secs: u64 = adiuva_core::agents::DEFAULT_LOCAL_TIMEOUT_SECS,
        env ["ADIUVA_AGENT_LOCAL_TIMEOUT_SECS"], min 1;
    /// A setup-journey session expires this long after its last message.
    agent_journey_ttl_secs: u64 = adiuva_core::agents::DEFAULT_JOURNEY_TTL_SECS,
        env ["ADIUVA_AGENT_JOURNEY_TTL_SECS"], min 1;
    /// Most items (mails, messages, local items) one agent run reads.
    agent_max_items_per_run: u32 = adiuva_core::agents::DEFAULT_MAX_ITEMS_PER_RUN,
        env ["ADIUVA_AGENT_MAX_ITEMS_PER_RUN"], min 1;
    /// Agent runs one instance executes at once; the rest wait their turn.
    agent_max_concurrent_runs: usize = adiuva_core::agents::DEFAULT_MAX_CONCURRENT_RUNS,
        env ["ADIUVA_AGENT_MAX_CONCURRENT_RUNS"], min 1;
    /// Stripe API key (not used by this build yet).
    stripe_secret_key: Option<Secret<String>> = "",
        env ["ADIUVA_STRIPE_SECRET_KEY", "STRIPE_SECRET_KEY"];
    /// Stripe webhook signing secret (not used by this build yet).
    stripe_webhook_secret: Option<Secret<String>> = "",
        env ["ADIUVA_STRIPE_WEBHOOK_SECRET", "STRIPE_WEBHOOK_SECRET"];
    /// S3 bucket; with blob_url unset, selects `s3://<bucket>` as the blob store.
    s3_bucket: Option<String> = "", env ["ADIUVA_S3_BUCKET", "S3_BUCKET"];
    /// Region for s3:// blob URLs (default us-east-1).
    s3_region: Option<String> = "", env ["ADIUVA_S3_REGION", "S3_REGION"];
    /// Endpoint of an S3-compatible service for s3:// blob URLs (MinIO, R2, …); unset: AWS.
    s3_endpoint: Option<String> = "", env ["ADIUVA_S3_ENDPOINT", "S3_ENDPOINT"];
    /// Access key id for s3:// blob URLs (unset: the AWS credential chain).
    aws_access_key_id: Option<Secret<String>> = "",
        env ["ADIUVA_AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"];
    /// Secret access key for s3:// blob URLs.
    aws_secret_access_key: Option<Secret<String>> = "",
        env ["ADIUVA_AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"];
    /// Vector index: embedded (exact, persisted in the database, one instance only), memory
    /// (exact, not persisted), pgvector (PostgreSQL database with the vector extension; HNSW),
    /// qdrant or qdrant://host:6334 (gRPC; qdrant+https:// for TLS), pinecone (needs
    /// pinecone_api_key and pinecone_index). Unset: qdrant when qdrant_url is set, pinecone
    /// when pinecone_api_key and pinecone_index are, else embedded.
    vector_url: Option<String> = "embedded", env ["ADIUVA_VECTOR_URL", "VECTOR_URL"];
    /// Pinecone API key.
    pinecone_api_key: Option<Secret<String>> = "",
        env ["ADIUVA_PINECONE_API_KEY", "PINECONE_API_KEY"];
    /// Pinecone index name (cosine metric; its dimension is every user's dimension). Each user
    /// is a namespace.
    pinecone_index: Option<String> = "", env ["ADIUVA_PINECONE_INDEX", "PINECONE_INDEX"];
    /// Pinecone index host (data plane URL). Unset: looked up through the control plane.
    pinecone_host: Option<String> = "", env ["ADIUVA_PINECONE_HOST", "PINECONE_HOST"];
    /// Pinecone control plane, to look up the index host.
    pinecone_controller_url: String = adiuva_adapters::vector::pinecone::DEFAULT_CONTROLLER_URL,
        env ["ADIUVA_PINECONE_CONTROLLER_URL", "PINECONE_CONTROLLER_URL"];
    /// Qdrant gRPC URL (http://host:6334); with vector_url unset, selects Qdrant.
    qdrant_url: Option<String> = "", env ["ADIUVA_QDRANT_URL", "QDRANT_URL"];
    /// Qdrant API key.
    qdrant_api_key: Option<Secret<String>> = "", env ["ADIUVA_QDRANT_API_KEY", "QDRANT_API_KEY"];
    /// Qdrant collection prefix: one shared collection per dimension (`<prefix>_<dim>`), users
    /// told apart by a payload filter.
    qdrant_collection: String = "adiuva_vectors",
        env ["ADIUVA_QDRANT_COLLECTION", "QDRANT_COLLECTION"];
}

/// A setting that could not be used. The text names the key and says why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// What the command line adds on top of file and environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config FILE`: must exist. Without it `./adiuva.toml` is read if present.
    pub config_file: Option<PathBuf>,
    /// `--data-dir DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--bind ADDR`.
    pub bind: Option<SocketAddr>,
}

impl Settings {
    /// The defaults, with everything stored under `data_dir`.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        let mut s = Self::defaults();
        s.data_dir = data_dir.into();
        s
    }

    /// Sets one key from text (as found in the file or environment).
    pub fn set(&mut self, key: &str, v: &str) -> Result<(), ConfigError> {
        self.set_text(key, v).map_err(|e| match e {
            SetError::Unknown => ConfigError(format!("unknown setting '{key}'")),
            SetError::Invalid(why) => ConfigError(format!("{key} {why}")),
        })
    }

    /// Layers defaults, the config file, the process environment and `overrides`.
    pub fn load(overrides: &Overrides) -> Result<Self, ConfigError> {
        Self::load_from(overrides, |name| std::env::var(name).ok())
    }

    /// [`Settings::load`] with an explicit environment (for tests).
    pub fn load_from(
        overrides: &Overrides,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut s = Self::defaults();
        let file = match &overrides.config_file {
            Some(path) => Some(path.clone()),
            None => Some(PathBuf::from("adiuva.toml")).filter(|p| p.is_file()),
        };
        if let Some(path) = file {
            s.apply_file(&path)?;
        }
        for k in KEYS {
            // The first variable set wins, and the error names it and the key.
            if let Some((name, v)) = k.env.iter().find_map(|n| env(n).map(|v| (n, v)))
                && let Err(SetError::Invalid(why)) = s.set_text(k.key, &v)
            {
                return Err(ConfigError(format!("{} (from ${name}) {why}", k.key)));
            }
        }
        if let Some(dir) = &overrides.data_dir {
            s.data_dir = dir.clone();
        }
        if let Some(bind) = overrides.bind {
            s.bind = bind;
        }
        s.check_chat_limits()?;
        Ok(s)
    }

    /// The reply limits must leave room for a prompt in the context window, or every
    /// chat would be refused as `message_too_long`.
    fn check_chat_limits(&self) -> Result<(), ConfigError> {
        let largest = self.agent_max_tokens.max(self.synthesis_max_tokens) as usize;
        if largest.saturating_mul(2) > self.model_context_tokens {
            return Err(ConfigError(format!(
                "model_context_tokens ({}) must be at least twice agent_max_tokens and \
                 synthesis_max_tokens (largest {largest}), or no prompt would fit beside the reply",
                self.model_context_tokens
            )));
        }
        Ok(())
    }

    /// Applies `adiuva.toml`: scalars as their text, arrays as comma-separated lists.
    fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let at = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read the config file {at}: {e}")))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| ConfigError(format!("{at} is not valid TOML: {e}")))?;
        for (key, value) in table {
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Array(items) => items
                    .iter()
                    .map(|i| match i {
                        toml::Value::String(s) => Ok(s.clone()),
                        toml::Value::Integer(n) => Ok(n.to_string()),
                        _ => Err(ConfigError(format!("{at}: '{key}' may only list strings"))),
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .join(","),
                other => {
                    return Err(ConfigError(format!(
                        "{at}: '{key}' has an unsupported value of type {}",
                        other.type_str()
                    )));
                }
            };
            self.set(&key, &text)
                .map_err(|e| ConfigError(format!("{at}: {e}")))?;
        }
        Ok(())
    }
}
