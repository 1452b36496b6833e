//! Typed settings: defaults < `adiuva.toml` < environment < command-line flags.
//!
//! Every key is described once, in [`KEYS`]; `.env.example` and `adiuva config example`
//! are generated from that table so the documentation cannot drift from the parser.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use adiuva_core::Secret;
use adiuva_core::auth::{AuthConfig, JwtAlgorithm};

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

/// All settings. Build with [`Settings::load`] (or [`Settings::for_data_dir`] in tests).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `dev` or `prod`.
    pub env: Environment,
    /// Listen address.
    pub bind: SocketAddr,
    /// Where the embedded database, blobs and generated secret live.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…` (default: `sqlite://<data_dir>/adiuva.db`).
    pub database_url: Option<RedactedUrl>,
    /// `file://…` or `memory://` (default: `file://<data_dir>/blobs`).
    pub blob_url: Option<String>,
    /// HMAC secret for access tokens.
    pub jwt_secret: Option<Secret<String>>,
    /// HS256, HS384 or HS512.
    pub jwt_algorithm: JwtAlgorithm,
    /// Access-token lifetime.
    pub access_token_ttl_secs: i64,
    /// Refresh-token lifetime.
    pub refresh_token_ttl_days: i64,
    /// Extra allowed CORS origins (`app://…` and `http://localhost:*` always are).
    pub cors_origins: Vec<String>,
    /// Whether request budgets are enforced.
    pub rate_limit_enabled: bool,
    /// Requests per minute per client IP for unauthenticated requests.
    pub rate_limit_ip_per_minute: u32,
    /// Login attempts per minute per target email (all instances together).
    pub login_attempts_per_email_per_minute: u32,
    /// Backups kept per user; older ones are deleted after each upload.
    pub backup_retention: usize,
    /// Bytes per "GB" of tier quotas.
    pub quota_gb_bytes: i64,
    /// Largest JSON request body.
    pub body_limit_bytes: usize,
    /// Log format.
    pub log_format: LogFormat,
    /// `tracing` filter, e.g. `info` or `adiuva_server=debug,info`.
    pub log_level: String,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_timeout_secs: u64,
    /// Server-side OpenAI key (chat; reserved until the chat capability lands).
    pub openai_api_key: Option<Secret<String>>,
    /// OpenAI-compatible endpoint (Ollama, vLLM, …).
    pub openai_base_url: Option<String>,
    /// Key for `cerebras/` models.
    pub cerebras_api_key: Option<Secret<String>>,
    /// Cerebras endpoint.
    pub cerebras_base_url: String,
    /// Router model.
    pub router_model: String,
    /// Agent model.
    pub agent_model: String,
    /// Synthesis model.
    pub synthesis_model: String,
    /// Seconds the WebSocket waits for a tool result.
    pub chat_tool_timeout_secs: u64,
    /// Seconds between the WebSocket's pings.
    pub chat_ping_interval_secs: u64,
    /// Seconds a whole chat turn may take (REST and WebSocket).
    pub chat_turn_timeout_secs: u64,
    /// The chat models' context window, in tokens; prompts are fitted to it.
    pub model_context_tokens: usize,
    /// Most tokens of each agent reply.
    pub agent_max_tokens: u32,
    /// Most tokens of a pipeline's synthesis.
    pub synthesis_max_tokens: u32,
    /// Seconds a chat socket may go without sending anything (a pong included).
    pub chat_pong_timeout_secs: u64,
    /// Largest chat WebSocket message (and frame) a client may send, in bytes.
    pub chat_max_message_bytes: usize,
    /// Open chat sockets per user on this instance.
    pub chat_max_sockets_per_user: usize,
    /// Seconds to receive a request head (from the accept, or from its first byte).
    pub header_read_timeout_secs: u64,
    /// Seconds an idle kept-alive connection waits for its next request.
    pub keep_alive_timeout_secs: u64,
    /// Seconds a response write may make no progress before the connection is cut.
    pub send_timeout_secs: u64,
    /// Bytes per second a request body must average.
    pub min_body_rate_bytes_per_sec: u64,
    /// Most seconds the server waits, in total, for a slow request body.
    pub body_read_timeout_secs: u64,
    /// Open connections per client IP (0: no cap).
    pub max_connections_per_ip: usize,
    /// Redis for shared rate limits and the device bus.
    pub redis_url: Option<RedactedUrl>,
    /// Stripe API key.
    pub stripe_secret_key: Option<Secret<String>>,
    /// Stripe webhook signing secret.
    pub stripe_webhook_secret: Option<Secret<String>>,
    /// S3 bucket.
    pub s3_bucket: Option<String>,
    /// S3 region.
    pub s3_region: Option<String>,
    /// S3-compatible endpoint URL.
    pub s3_endpoint: Option<String>,
    /// S3 access key id.
    pub aws_access_key_id: Option<Secret<String>>,
    /// S3 secret key.
    pub aws_secret_access_key: Option<Secret<String>>,
    /// Which vector index (`embedded`, `memory`, `pgvector`, `qdrant[://…]`, `pinecone`).
    pub vector_url: Option<String>,
    /// Qdrant collection-name prefix (one collection per dimension).
    pub qdrant_collection: String,
    /// Pinecone data-plane URL (unset: resolved through the control plane).
    pub pinecone_host: Option<String>,
    /// Pinecone control plane.
    pub pinecone_controller_url: String,
    /// Pinecone key.
    pub pinecone_api_key: Option<Secret<String>>,
    /// Pinecone index.
    pub pinecone_index: Option<String>,
    /// Qdrant URL.
    pub qdrant_url: Option<String>,
    /// Qdrant key.
    pub qdrant_api_key: Option<Secret<String>>,
}

/// One documented key.
#[derive(Debug)]
pub struct KeyDoc {
    /// Name in `adiuva.toml`.
    pub key: &'static str,
    /// Environment variables, highest precedence first.
    pub env: &'static [&'static str],
    /// Default, as text (empty: unset).
    pub default: &'static str,
    /// What it does.
    pub doc: &'static str,
}

/// Every key the server reads.
pub const KEYS: &[KeyDoc] = &[
    KeyDoc {
        key: "env",
        env: &["ADIUVA_ENV", "ENV"],
        default: "dev",
        doc: "dev or prod. prod requires JWT_SECRET and logs JSON.",
    },
    KeyDoc {
        key: "bind",
        env: &["ADIUVA_BIND"],
        default: "127.0.0.1:8080",
        doc: "Address to listen on (`adiuva serve --bind`).",
    },
    KeyDoc {
        key: "data_dir",
        env: &["ADIUVA_DATA_DIR"],
        default: "./data",
        doc: "Directory for the embedded database, blobs and the generated dev secret (`--data-dir`).",
    },
    KeyDoc {
        key: "database_url",
        env: &["ADIUVA_DATABASE_URL", "DATABASE_URL"],
        default: "",
        doc: "Database URL: sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DB. Unset: sqlite://<data_dir>/adiuva.db.",
    },
    KeyDoc {
        key: "blob_url",
        env: &["ADIUVA_BLOB_URL"],
        default: "",
        doc: "Blob store URL: file://DIR, s3://BUCKET (see s3_*) or memory://. Unset: file://<data_dir>/blobs.",
    },
    KeyDoc {
        key: "jwt_secret",
        env: &["ADIUVA_JWT_SECRET", "JWT_SECRET"],
        default: "",
        doc: "HMAC secret for access tokens, at least 32 bytes. Unset in dev: generated once into <data_dir>/jwt_secret. Required in prod.",
    },
    KeyDoc {
        key: "jwt_algorithm",
        env: &["ADIUVA_JWT_ALGORITHM", "JWT_ALGORITHM"],
        default: "HS256",
        doc: "HS256, HS384 or HS512.",
    },
    KeyDoc {
        key: "access_token_ttl_secs",
        env: &["ADIUVA_ACCESS_TOKEN_TTL_SECS"],
        default: "900",
        doc: "Access-token lifetime in seconds.",
    },
    KeyDoc {
        key: "refresh_token_ttl_days",
        env: &["ADIUVA_REFRESH_TOKEN_TTL_DAYS"],
        default: "30",
        doc: "Refresh-token lifetime in days.",
    },
    KeyDoc {
        key: "cors_origins",
        env: &["ADIUVA_CORS_ORIGINS", "CORS_ORIGINS"],
        default: "",
        doc: "Extra allowed origins, comma-separated. app://… and http://localhost:<port> are always allowed.",
    },
    KeyDoc {
        key: "body_limit_bytes",
        env: &["ADIUVA_BODY_LIMIT_BYTES"],
        default: "10485760",
        doc: "Largest JSON request body in bytes (larger: 413). Backups stream and are limited by the tier quota instead.",
    },
    KeyDoc {
        key: "rate_limit_enabled",
        env: &["ADIUVA_RATE_LIMIT_ENABLED"],
        default: "true",
        doc: "Enforce request budgets: per user by tier (20/60/120/200 per minute) and per IP for unauthenticated requests. Counted in Redis when redis_url is set, else in this process.",
    },
    KeyDoc {
        key: "rate_limit_ip_per_minute",
        env: &["ADIUVA_RATE_LIMIT_IP_PER_MINUTE"],
        default: "60",
        doc: "Requests per minute per client IP to routes that take no token (register, login, refresh, health, the API document) or that come without a valid one; a token sent to a public route is ignored.",
    },
    KeyDoc {
        key: "login_attempts_per_email_per_minute",
        env: &["ADIUVA_LOGIN_ATTEMPTS_PER_EMAIL_PER_MINUTE"],
        default: "10",
        doc: "Login attempts per minute per target email, right or wrong, from any IP (counted with the other budgets, in Redis when redis_url is set). Over it: 429 rate_limited before any password hashing.",
    },
    KeyDoc {
        key: "quota_gb_bytes",
        env: &["ADIUVA_QUOTA_GB_BYTES"],
        default: "1073741824",
        doc: "Bytes counted as one GB in tier quotas (cloud_storage_gb, backup_gb). Lower it only to exercise quotas in tests.",
    },
    KeyDoc {
        key: "backup_retention",
        env: &["ADIUVA_BACKUP_RETENTION"],
        default: "10",
        doc: "Backups kept per user; older ones are deleted (with their blobs) after each upload.",
    },
    KeyDoc {
        key: "log_format",
        env: &["ADIUVA_LOG_FORMAT"],
        default: "auto",
        doc: "auto (text in dev, JSON in prod), text or json.",
    },
    KeyDoc {
        key: "log_level",
        env: &["ADIUVA_LOG", "RUST_LOG"],
        default: "info",
        doc: "tracing filter, e.g. info or adiuva_server=debug,info.",
    },
    KeyDoc {
        key: "shutdown_timeout_secs",
        env: &["ADIUVA_SHUTDOWN_TIMEOUT_SECS"],
        default: "30",
        doc: "How long SIGINT/SIGTERM waits for in-flight requests.",
    },
    KeyDoc {
        key: "openai_api_key",
        env: &["ADIUVA_OPENAI_API_KEY", "OPENAI_API_KEY"],
        default: "",
        doc: "Server-side key for the chat models. Unset: chat works only with a per-request api_key (BYOK) or a keyless openai_base_url; otherwise 503 llm_unavailable.",
    },
    KeyDoc {
        key: "openai_base_url",
        env: &["ADIUVA_OPENAI_BASE_URL", "OPENAI_BASE_URL"],
        default: "",
        doc: "Any OpenAI-compatible endpoint (Ollama, vLLM, llama.cpp, LM Studio); a non-OpenAI URL may need no key. Unset: https://api.openai.com/v1.",
    },
    KeyDoc {
        key: "cerebras_api_key",
        env: &["ADIUVA_CEREBRAS_API_KEY", "CEREBRAS_API_KEY"],
        default: "",
        doc: "Key for models named cerebras/<model>, sent to cerebras_base_url.",
    },
    KeyDoc {
        key: "cerebras_base_url",
        env: &["ADIUVA_CEREBRAS_BASE_URL", "CEREBRAS_BASE_URL"],
        default: "https://api.cerebras.ai/v1",
        doc: "Cerebras's OpenAI-compatible endpoint.",
    },
    KeyDoc {
        key: "router_model",
        env: &["ADIUVA_ROUTER_MODEL", "ROUTER_MODEL"],
        default: "gpt-4o-mini",
        doc: "Model that classifies a message's intent (which agent answers).",
    },
    KeyDoc {
        key: "agent_model",
        env: &["ADIUVA_AGENT_MODEL", "AGENT_MODEL"],
        default: "gpt-4o-mini",
        doc: "Model that runs the agents and their tools (cerebras/<model> for Cerebras).",
    },
    KeyDoc {
        key: "synthesis_model",
        env: &["ADIUVA_SYNTHESIS_MODEL", "SYNTHESIS_MODEL"],
        default: "gpt-4o-mini",
        doc: "Model that merges a multi-agent pipeline's results into one answer.",
    },
    KeyDoc {
        key: "chat_tool_timeout_secs",
        env: &["ADIUVA_CHAT_TOOL_TIMEOUT_SECS"],
        default: "30",
        doc: "How long the chat WebSocket waits for the device's tool_result before the model gets an error result.",
    },
    KeyDoc {
        key: "chat_ping_interval_secs",
        env: &["ADIUVA_CHAT_PING_INTERVAL_SECS"],
        default: "30",
        doc: "Interval of the chat WebSocket's pings (keeps proxies from closing idle sockets).",
    },
    KeyDoc {
        key: "chat_turn_timeout_secs",
        env: &["ADIUVA_CHAT_TURN_TIMEOUT_SECS"],
        default: "120",
        doc: "Deadline of a whole chat turn (routing, agents, tool round trips, synthesis). Past it the model calls are dropped and the client gets the text so far and chat_timeout (REST: 504 with partial_response; WebSocket: an error frame after the text_chunks).",
    },
    KeyDoc {
        key: "model_context_tokens",
        env: &["ADIUVA_MODEL_CONTEXT_TOKENS"],
        default: "8192",
        doc: "Context window of the chat models, in tokens (llama.cpp: its -c per slot). Prompts are fitted to it, dropping the oldest history and context first; a message that cannot fit is 413 message_too_long. Must be at least twice agent_max_tokens and synthesis_max_tokens.",
    },
    KeyDoc {
        key: "agent_max_tokens",
        env: &["ADIUVA_AGENT_MAX_TOKENS"],
        default: "1024",
        doc: "Most tokens of each agent reply (sent as max_tokens; each tool round is one reply). The router is always limited to a few tokens.",
    },
    KeyDoc {
        key: "synthesis_max_tokens",
        env: &["ADIUVA_SYNTHESIS_MAX_TOKENS"],
        default: "1024",
        doc: "Most tokens of the reply that merges a multi-agent pipeline's results.",
    },
    KeyDoc {
        key: "chat_pong_timeout_secs",
        env: &["ADIUVA_CHAT_PONG_TIMEOUT_SECS"],
        default: "60",
        doc: "A chat WebSocket from which nothing arrives (not even a pong to the pings) for this long is closed (1001).",
    },
    KeyDoc {
        key: "chat_max_message_bytes",
        env: &["ADIUVA_CHAT_MAX_MESSAGE_BYTES"],
        default: "1048576",
        doc: "Largest chat WebSocket message (and frame) a client may send; larger: the socket is closed with 1009.",
    },
    KeyDoc {
        key: "chat_max_sockets_per_user",
        env: &["ADIUVA_CHAT_MAX_SOCKETS_PER_USER"],
        default: "10",
        doc: "Open chat WebSockets per user, counted per instance; one more is refused with 429 too_many_sockets.",
    },
    KeyDoc {
        key: "header_read_timeout_secs",
        env: &["ADIUVA_HEADER_READ_TIMEOUT_SECS"],
        default: "15",
        doc: "Time to receive a complete request head: from the accept on a new connection, from its first byte on a kept-alive one. A deadline, not an inactivity timer.",
    },
    KeyDoc {
        key: "keep_alive_timeout_secs",
        env: &["ADIUVA_KEEP_ALIVE_TIMEOUT_SECS"],
        default: "75",
        doc: "An idle kept-alive connection is closed when no new request starts within this. Keep it above a load balancer's idle timeout.",
    },
    KeyDoc {
        key: "send_timeout_secs",
        env: &["ADIUVA_SEND_TIMEOUT_SECS"],
        default: "60",
        doc: "A response write that makes no progress for this long (the client stopped reading) closes the connection.",
    },
    KeyDoc {
        key: "min_body_rate_bytes_per_sec",
        env: &["ADIUVA_MIN_BODY_RATE_BYTES_PER_SEC"],
        default: "500",
        doc: "Average rate a request body must keep; a slower or stalled body (a backup too) is cut off and nothing is kept.",
    },
    KeyDoc {
        key: "body_read_timeout_secs",
        env: &["ADIUVA_BODY_READ_TIMEOUT_SECS"],
        default: "20",
        doc: "Longest the server waits for a request body's bytes in total; each min_body_rate_bytes_per_sec bytes received earn a second back (up to this).",
    },
    KeyDoc {
        key: "max_connections_per_ip",
        env: &["ADIUVA_MAX_CONNECTIONS_PER_IP"],
        default: "256",
        doc: "Open connections per client IP (0: no cap); more are answered 429 too_many_connections and closed. Behind a reverse proxy every connection comes from the proxy: raise it or set 0.",
    },
    KeyDoc {
        key: "redis_url",
        env: &["ADIUVA_REDIS_URL", "REDIS_URL"],
        default: "",
        doc: "Redis (redis://) for rate limits shared by all instances. Unset: counted in this process.",
    },
    KeyDoc {
        key: "stripe_secret_key",
        env: &["ADIUVA_STRIPE_SECRET_KEY", "STRIPE_SECRET_KEY"],
        default: "",
        doc: "Stripe API key (not used by this build yet).",
    },
    KeyDoc {
        key: "stripe_webhook_secret",
        env: &["ADIUVA_STRIPE_WEBHOOK_SECRET", "STRIPE_WEBHOOK_SECRET"],
        default: "",
        doc: "Stripe webhook signing secret (not used by this build yet).",
    },
    KeyDoc {
        key: "s3_bucket",
        env: &["ADIUVA_S3_BUCKET", "S3_BUCKET"],
        default: "",
        doc: "S3 bucket; with blob_url unset, selects s3://<bucket> as the blob store.",
    },
    KeyDoc {
        key: "s3_region",
        env: &["ADIUVA_S3_REGION", "S3_REGION"],
        default: "",
        doc: "Region for s3:// blob URLs (default us-east-1).",
    },
    KeyDoc {
        key: "s3_endpoint",
        env: &["ADIUVA_S3_ENDPOINT", "S3_ENDPOINT"],
        default: "",
        doc: "Endpoint of an S3-compatible service for s3:// blob URLs (MinIO, R2, …); unset: AWS.",
    },
    KeyDoc {
        key: "aws_access_key_id",
        env: &["ADIUVA_AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"],
        default: "",
        doc: "Access key id for s3:// blob URLs (unset: the AWS credential chain).",
    },
    KeyDoc {
        key: "aws_secret_access_key",
        env: &["ADIUVA_AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"],
        default: "",
        doc: "Secret access key for s3:// blob URLs.",
    },
    KeyDoc {
        key: "vector_url",
        env: &["ADIUVA_VECTOR_URL", "VECTOR_URL"],
        default: "embedded",
        doc: "Vector index: embedded (exact, persisted in the database, one instance only), memory (exact, not persisted), pgvector (PostgreSQL database with the vector extension; HNSW), qdrant or qdrant://host:6334 (gRPC; qdrant+https:// for TLS), pinecone (needs pinecone_api_key and pinecone_index). Unset: qdrant when qdrant_url is set, pinecone when pinecone_api_key and pinecone_index are, else embedded.",
    },
    KeyDoc {
        key: "pinecone_api_key",
        env: &["ADIUVA_PINECONE_API_KEY", "PINECONE_API_KEY"],
        default: "",
        doc: "Pinecone API key.",
    },
    KeyDoc {
        key: "pinecone_index",
        env: &["ADIUVA_PINECONE_INDEX", "PINECONE_INDEX"],
        default: "",
        doc: "Pinecone index name (cosine metric; its dimension is every user's dimension). Each user is a namespace.",
    },
    KeyDoc {
        key: "pinecone_host",
        env: &["ADIUVA_PINECONE_HOST", "PINECONE_HOST"],
        default: "",
        doc: "Pinecone index host (data plane URL). Unset: looked up through the control plane.",
    },
    KeyDoc {
        key: "pinecone_controller_url",
        env: &["ADIUVA_PINECONE_CONTROLLER_URL", "PINECONE_CONTROLLER_URL"],
        default: "https://api.pinecone.io",
        doc: "Pinecone control plane, to look up the index host.",
    },
    KeyDoc {
        key: "qdrant_url",
        env: &["ADIUVA_QDRANT_URL", "QDRANT_URL"],
        default: "",
        doc: "Qdrant gRPC URL (http://host:6334); with vector_url unset, selects Qdrant.",
    },
    KeyDoc {
        key: "qdrant_api_key",
        env: &["ADIUVA_QDRANT_API_KEY", "QDRANT_API_KEY"],
        default: "",
        doc: "Qdrant API key.",
    },
    KeyDoc {
        key: "qdrant_collection",
        env: &["ADIUVA_QDRANT_COLLECTION", "QDRANT_COLLECTION"],
        default: "adiuva_vectors",
        doc: "Qdrant collection prefix: one shared collection per dimension (<prefix>_<dim>), users told apart by a payload filter.",
    },
];

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

fn secret(v: &str) -> Option<Secret<String>> {
    (!v.is_empty()).then(|| Secret::new(v.to_owned()))
}

fn opt(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_owned())
}

fn number<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, ConfigError> {
    v.trim().parse().map_err(|_| {
        ConfigError(format!(
            "{key} must be a non-negative whole number (got '{v}')"
        ))
    })
}

impl Settings {
    /// The defaults, with everything stored under `data_dir`.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        let mut s = Self::empty();
        for k in KEYS {
            if !k.default.is_empty() {
                // Defaults are constants that parse; a failure here is a bug caught by tests.
                let _ = s.set(k.key, k.default);
            }
        }
        s.data_dir = data_dir.into();
        s
    }

    fn empty() -> Self {
        Self {
            env: Environment::Dev,
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            blob_url: None,
            jwt_secret: None,
            jwt_algorithm: JwtAlgorithm::Hs256,
            access_token_ttl_secs: 900,
            refresh_token_ttl_days: 30,
            cors_origins: Vec::new(),
            body_limit_bytes: 10 * 1024 * 1024,
            backup_retention: adiuva_core::backup::DEFAULT_RETENTION,
            quota_gb_bytes: adiuva_core::tiers::GIB,
            rate_limit_enabled: true,
            rate_limit_ip_per_minute: 60,
            login_attempts_per_email_per_minute: 10,
            log_format: LogFormat::Auto,
            log_level: "info".into(),
            shutdown_timeout_secs: 30,
            openai_api_key: None,
            openai_base_url: None,
            cerebras_api_key: None,
            cerebras_base_url: "https://api.cerebras.ai/v1".into(),
            router_model: "gpt-4o-mini".into(),
            agent_model: "gpt-4o-mini".into(),
            synthesis_model: "gpt-4o-mini".into(),
            chat_tool_timeout_secs: 30,
            chat_ping_interval_secs: 30,
            chat_turn_timeout_secs: 120,
            model_context_tokens: adiuva_core::chat::window::DEFAULT_CONTEXT_TOKENS,
            agent_max_tokens: 1024,
            synthesis_max_tokens: 1024,
            chat_pong_timeout_secs: 60,
            chat_max_message_bytes: 1 << 20,
            chat_max_sockets_per_user: 10,
            header_read_timeout_secs: 15,
            keep_alive_timeout_secs: 75,
            send_timeout_secs: 60,
            min_body_rate_bytes_per_sec: 500,
            body_read_timeout_secs: 20,
            max_connections_per_ip: 256,
            redis_url: None,
            stripe_secret_key: None,
            stripe_webhook_secret: None,
            s3_bucket: None,
            s3_region: None,
            s3_endpoint: None,
            aws_access_key_id: None,
            aws_secret_access_key: None,
            vector_url: None,
            qdrant_collection: "adiuva_vectors".into(),
            pinecone_host: None,
            pinecone_controller_url: "https://api.pinecone.io".into(),
            pinecone_api_key: None,
            pinecone_index: None,
            qdrant_url: None,
            qdrant_api_key: None,
        }
    }

    /// Sets one key from text (as found in the file or environment).
    pub fn set(&mut self, key: &str, v: &str) -> Result<(), ConfigError> {
        match key {
            "env" => {
                self.env = match v.trim().to_ascii_lowercase().as_str() {
                    "dev" | "development" => Environment::Dev,
                    "prod" | "production" => Environment::Prod,
                    _ => return Err(ConfigError(format!("ENV must be dev or prod (got '{v}')"))),
                }
            }
            "bind" => {
                self.bind = v.trim().parse().map_err(|_| {
                    ConfigError(format!(
                        "bind must be an address like 127.0.0.1:8080 (got '{v}')"
                    ))
                })?
            }
            "data_dir" => self.data_dir = PathBuf::from(v),
            "database_url" => self.database_url = opt(v).map(RedactedUrl),
            "blob_url" => self.blob_url = opt(v),
            "jwt_secret" => self.jwt_secret = secret(v),
            "jwt_algorithm" => {
                self.jwt_algorithm =
                    JwtAlgorithm::parse(v).map_err(|e| ConfigError(e.to_string()))?
            }
            "access_token_ttl_secs" => self.access_token_ttl_secs = number(key, v)?,
            "refresh_token_ttl_days" => self.refresh_token_ttl_days = number(key, v)?,
            "cors_origins" => {
                self.cors_origins = v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            }
            "body_limit_bytes" => self.body_limit_bytes = number(key, v)?,
            "rate_limit_enabled" => {
                self.rate_limit_enabled = match v.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" => true,
                    "false" | "0" | "no" | "off" => false,
                    _ => {
                        return Err(ConfigError(format!(
                            "rate_limit_enabled must be true or false (got '{v}')"
                        )));
                    }
                }
            }
            "quota_gb_bytes" => {
                self.quota_gb_bytes = number(key, v)?;
                if self.quota_gb_bytes < 1 {
                    return Err(ConfigError("quota_gb_bytes must be at least 1".into()));
                }
            }
            "rate_limit_ip_per_minute" => self.rate_limit_ip_per_minute = number(key, v)?,
            "login_attempts_per_email_per_minute" => {
                self.login_attempts_per_email_per_minute = number(key, v)?;
                if self.login_attempts_per_email_per_minute == 0 {
                    return Err(ConfigError(
                        "login_attempts_per_email_per_minute must be at least 1 (turn all budgets off with rate_limit_enabled = false)".into(),
                    ));
                }
            }
            "backup_retention" => {
                self.backup_retention = number(key, v)?;
                if self.backup_retention == 0 {
                    return Err(ConfigError("backup_retention must be at least 1".into()));
                }
            }
            "log_format" => {
                self.log_format = match v.trim().to_ascii_lowercase().as_str() {
                    "auto" => LogFormat::Auto,
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => {
                        return Err(ConfigError(format!(
                            "log_format must be auto, text or json (got '{v}')"
                        )));
                    }
                }
            }
            "log_level" => self.log_level = v.to_owned(),
            "shutdown_timeout_secs" => self.shutdown_timeout_secs = number(key, v)?,
            "openai_api_key" => self.openai_api_key = secret(v),
            "openai_base_url" => self.openai_base_url = opt(v),
            "cerebras_api_key" => self.cerebras_api_key = secret(v),
            "cerebras_base_url" => self.cerebras_base_url = v.trim().to_owned(),
            "router_model" => self.router_model = v.trim().to_owned(),
            "agent_model" => self.agent_model = v.trim().to_owned(),
            "synthesis_model" => self.synthesis_model = v.trim().to_owned(),
            "chat_tool_timeout_secs" => self.chat_tool_timeout_secs = number(key, v)?,
            "chat_ping_interval_secs" => self.chat_ping_interval_secs = number(key, v)?,
            "chat_turn_timeout_secs" => {
                self.chat_turn_timeout_secs = number(key, v)?;
                if self.chat_turn_timeout_secs == 0 {
                    return Err(ConfigError(
                        "chat_turn_timeout_secs must be at least 1".into(),
                    ));
                }
            }
            "model_context_tokens" => {
                self.model_context_tokens = number(key, v)?;
                if self.model_context_tokens < 512 {
                    return Err(ConfigError(
                        "model_context_tokens must be at least 512 (the assistant's instructions alone need several hundred)".into(),
                    ));
                }
            }
            "agent_max_tokens" => {
                self.agent_max_tokens = number(key, v)?;
                if self.agent_max_tokens == 0 {
                    return Err(ConfigError("agent_max_tokens must be at least 1".into()));
                }
            }
            "synthesis_max_tokens" => {
                self.synthesis_max_tokens = number(key, v)?;
                if self.synthesis_max_tokens == 0 {
                    return Err(ConfigError(
                        "synthesis_max_tokens must be at least 1".into(),
                    ));
                }
            }
            "chat_pong_timeout_secs" => self.chat_pong_timeout_secs = number(key, v)?,
            "chat_max_message_bytes" => self.chat_max_message_bytes = number(key, v)?,
            "chat_max_sockets_per_user" => self.chat_max_sockets_per_user = number(key, v)?,
            "header_read_timeout_secs" => self.header_read_timeout_secs = number(key, v)?,
            "keep_alive_timeout_secs" => self.keep_alive_timeout_secs = number(key, v)?,
            "send_timeout_secs" => self.send_timeout_secs = number(key, v)?,
            "min_body_rate_bytes_per_sec" => self.min_body_rate_bytes_per_sec = number(key, v)?,
            "body_read_timeout_secs" => self.body_read_timeout_secs = number(key, v)?,
            "max_connections_per_ip" => self.max_connections_per_ip = number(key, v)?,
            "redis_url" => self.redis_url = opt(v).map(RedactedUrl),
            "stripe_secret_key" => self.stripe_secret_key = secret(v),
            "stripe_webhook_secret" => self.stripe_webhook_secret = secret(v),
            "s3_bucket" => self.s3_bucket = opt(v),
            "s3_region" => self.s3_region = opt(v),
            "s3_endpoint" => self.s3_endpoint = opt(v),
            "aws_access_key_id" => self.aws_access_key_id = secret(v),
            "aws_secret_access_key" => self.aws_secret_access_key = secret(v),
            "vector_url" => self.vector_url = opt(v),
            "qdrant_collection" => self.qdrant_collection = v.to_owned(),
            "pinecone_host" => self.pinecone_host = opt(v),
            "pinecone_controller_url" => self.pinecone_controller_url = v.to_owned(),
            "pinecone_api_key" => self.pinecone_api_key = secret(v),
            "pinecone_index" => self.pinecone_index = opt(v),
            "qdrant_url" => self.qdrant_url = opt(v),
            "qdrant_api_key" => self.qdrant_api_key = secret(v),
            other => return Err(ConfigError(format!("unknown setting '{other}'"))),
        }
        Ok(())
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
        let mut s = Self::for_data_dir("./data");
        let file = match &overrides.config_file {
            Some(path) => Some(path.clone()),
            None => Some(PathBuf::from("adiuva.toml")).filter(|p| p.is_file()),
        };
        if let Some(path) = file {
            s.apply_file(&path)?;
        }
        for k in KEYS {
            if let Some(v) = k.env.iter().find_map(|name| env(name)) {
                s.set(k.key, &v).map_err(|e| {
                    ConfigError(format!("{} (from ${}): {e}", k.key, env_name_used(k, &env)))
                })?;
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

    fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "cannot read the config file {}: {e}",
                path.display()
            ))
        })?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| ConfigError(format!("{} is not valid TOML: {e}", path.display())))?;
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
                        _ => Err(ConfigError(format!(
                            "{}: '{key}' may only list strings",
                            path.display()
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .join(","),
                other => {
                    return Err(ConfigError(format!(
                        "{}: '{key}' has an unsupported value of type {}",
                        path.display(),
                        other.type_str()
                    )));
                }
            };
            self.set(&key, &text)
                .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        }
        Ok(())
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.0.clone(),
            None => format!("sqlite://{}", self.data_dir.join("adiuva.db").display()),
        }
    }

    /// The blob-store URL in effect.
    pub fn blob_url(&self) -> String {
        match (&self.blob_url, &self.s3_bucket) {
            (Some(url), _) => url.clone(),
            (None, Some(bucket)) => format!("s3://{bucket}"),
            (None, None) => format!("file://{}", self.data_dir.join("blobs").display()),
        }
    }

    /// The vector index choice and its backends' settings.
    pub fn vector_settings(&self) -> adiuva_adapters::vector::VectorSettings {
        adiuva_adapters::vector::VectorSettings {
            url: self.vector_url.clone(),
            qdrant_url: self.qdrant_url.clone(),
            qdrant_api_key: self.qdrant_api_key.clone(),
            qdrant_collection: self.qdrant_collection.clone(),
            pinecone_api_key: self.pinecone_api_key.clone(),
            pinecone_index: self.pinecone_index.clone(),
            pinecone_host: self.pinecone_host.clone(),
            pinecone_controller_url: self.pinecone_controller_url.clone(),
        }
    }

    /// Which model plays which part in a chat.
    pub fn model_roles(&self) -> adiuva_core::chat::orchestrator::ModelRoles {
        adiuva_core::chat::orchestrator::ModelRoles {
            router: self.router_model.clone(),
            agent: self.agent_model.clone(),
            synthesis: self.synthesis_model.clone(),
        }
    }

    /// The bounds of a chat turn's model work.
    pub fn chat_limits(&self) -> adiuva_core::chat::orchestrator::ChatLimits {
        adiuva_core::chat::orchestrator::ChatLimits {
            agent_max_tokens: self.agent_max_tokens,
            synthesis_max_tokens: self.synthesis_max_tokens,
            window: adiuva_core::chat::window::ContextWindow {
                tokens: self.model_context_tokens,
            },
            turn_timeout: std::time::Duration::from_secs(self.chat_turn_timeout_secs.max(1)),
        }
    }

    /// The OpenAI-compatible adapter's configuration (secrets exposed to it only).
    pub fn llm_config(&self) -> adiuva_adapters::llm::openai::OpenAiConfig {
        let mut cfg = adiuva_adapters::llm::openai::OpenAiConfig::default();
        if let Some(url) = &self.openai_base_url {
            cfg.base_url = url.clone();
        }
        cfg.api_key = self.openai_api_key.clone();
        cfg.cerebras_base_url = self.cerebras_base_url.clone();
        cfg.cerebras_api_key = self.cerebras_api_key.clone();
        cfg
    }

    /// The connection layer's timeouts and caps (a zero timeout counts as one second:
    /// zero would close every connection at once).
    pub fn conn_limits(&self) -> crate::conn::ConnLimits {
        let secs = |s: u64| std::time::Duration::from_secs(s.max(1));
        crate::conn::ConnLimits {
            io: crate::conn::IoTimeouts {
                header_read: secs(self.header_read_timeout_secs),
                keep_alive: secs(self.keep_alive_timeout_secs),
                write_stall: secs(self.send_timeout_secs),
            },
            body: crate::conn::BodyRate {
                min_rate: self.min_body_rate_bytes_per_sec,
                patience: secs(self.body_read_timeout_secs),
            },
            max_per_ip: self.max_connections_per_ip,
        }
    }

    /// S3 connection options from `s3_region`, `s3_endpoint` and the AWS keys.
    pub fn s3_options(&self) -> adiuva_adapters::blobs::S3Options {
        adiuva_adapters::blobs::S3Options {
            region: self.s3_region.clone(),
            endpoint: self.s3_endpoint.clone(),
            access_key_id: self.aws_access_key_id.clone(),
            secret_access_key: self.aws_secret_access_key.clone(),
        }
    }

    /// The log format in effect.
    pub fn effective_log_format(&self) -> LogFormat {
        match (self.log_format, self.env) {
            (LogFormat::Auto, Environment::Prod) => LogFormat::Json,
            (LogFormat::Auto, Environment::Dev) => LogFormat::Text,
            (f, _) => f,
        }
    }

    /// The JWT secret: the configured one; in dev without one, the secret kept in
    /// `<data_dir>/jwt_secret`, generated on first use; in prod without one, an error.
    pub fn resolve_jwt_secret(&self) -> Result<Secret<String>, ConfigError> {
        if let Some(s) = &self.jwt_secret {
            return Ok(s.clone());
        }
        if self.env == Environment::Prod {
            return Err(ConfigError(
                "JWT_SECRET is required when ENV=prod: set it to at least 32 random bytes (for example the output of `openssl rand -hex 32`)".into(),
            ));
        }
        let path = self.data_dir.join("jwt_secret");
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => return Ok(Secret::new(s.trim().to_owned())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ConfigError(format!("cannot read {}: {e}", path.display()))),
        }
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| ConfigError(format!("no randomness for a JWT secret: {e}")))?;
        let generated = hex::encode(bytes);
        std::fs::create_dir_all(&self.data_dir).map_err(|e| {
            ConfigError(format!(
                "cannot create the data directory {}: {e}",
                self.data_dir.display()
            ))
        })?;
        write_private(&path, &generated).map_err(|e| {
            ConfigError(format!(
                "cannot write the generated JWT secret to {}: {e}",
                path.display()
            ))
        })?;
        tracing::info!(path = %path.display(), "generated a JWT secret for development");
        Ok(Secret::new(generated))
    }

    /// Session settings for the core.
    pub fn auth_config(&self) -> Result<AuthConfig, ConfigError> {
        let mut c = AuthConfig::new(self.resolve_jwt_secret()?);
        c.jwt_algorithm = self.jwt_algorithm;
        c.access_ttl_secs = self.access_token_ttl_secs;
        c.refresh_ttl_secs = self.refresh_token_ttl_days * 24 * 3600;
        Ok(c)
    }

    /// Every key, documented, in `.env` form.
    pub fn example_env() -> String {
        let mut out = String::from(
            "# Adiuva configuration. Every key is optional; defaults shown.\n# Precedence: defaults < adiuva.toml < environment < command-line flags.\n# The first variable named is preferred; the others are accepted aliases.\n\n",
        );
        for k in KEYS {
            out.push_str(&format!("# {}\n", k.doc));
            if k.env.len() > 1 {
                out.push_str(&format!("# Also: {}\n", k.env[1..].join(", ")));
            }
            out.push_str(&format!("{}={}\n\n", k.env[0], k.default));
        }
        out
    }

    /// Every key, documented, in `adiuva.toml` form.
    pub fn example_toml() -> String {
        let mut out = String::from(
            "# adiuva.toml: read from the working directory, or from `--config FILE`.\n# Every key is optional; the environment overrides this file.\n\n",
        );
        for k in KEYS {
            out.push_str(&format!("# {} (env: {})\n", k.doc, k.env.join(", ")));
            let numeric = !k.default.is_empty() && k.default.bytes().all(|b| b.is_ascii_digit());
            if numeric {
                out.push_str(&format!("# {} = {}\n\n", k.key, k.default));
            } else {
                out.push_str(&format!("# {} = \"{}\"\n\n", k.key, k.default));
            }
        }
        out
    }
}

fn env_name_used(k: &KeyDoc, env: &impl Fn(&str) -> Option<String>) -> String {
    k.env
        .iter()
        .find(|n| env(n).is_some())
        .copied()
        .unwrap_or(k.env[0])
        .to_owned()
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn every_default_parses() {
        let mut s = Settings::empty();
        for k in KEYS {
            if !k.default.is_empty() {
                s.set(k.key, k.default)
                    .unwrap_or_else(|e| panic!("default of {}: {e}", k.key));
            }
        }
    }

    #[test]
    fn every_key_is_settable_and_documented_in_both_examples() {
        let (env_ex, toml_ex) = (Settings::example_env(), Settings::example_toml());
        for k in KEYS {
            assert!(
                env_ex.contains(&format!("{}=", k.env[0])),
                "{} in .env example",
                k.key
            );
            assert!(
                toml_ex.contains(&format!("# {} =", k.key)),
                "{} in toml example",
                k.key
            );
        }
        let mut s = Settings::empty();
        assert!(s.set("no_such_key", "x").is_err());
    }

    #[test]
    fn layers_file_then_env_then_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("adiuva.toml");
        std::fs::write(&file, "bind = \"127.0.0.1:9000\"\nbody_limit_bytes = 100\ncors_origins = [\"https://a.example\", \"https://b.example\"]\nenv = \"prod\"\n").expect("write");
        let over = Overrides {
            config_file: Some(file),
            ..Default::default()
        };
        let s = Settings::load_from(
            &over,
            env(&[
                ("ADIUVA_BODY_LIMIT_BYTES", "200"),
                ("JWT_SECRET", "s3cr3t-s3cr3t"),
            ]),
        )
        .expect("load");
        assert_eq!(s.bind.port(), 9000, "file beats default");
        assert_eq!(s.body_limit_bytes, 200, "env beats file");
        assert_eq!(
            s.cors_origins,
            vec!["https://a.example", "https://b.example"]
        );
        assert_eq!(s.env, Environment::Prod);
        assert_eq!(s.effective_log_format(), LogFormat::Json);
        assert_eq!(
            s.jwt_secret.as_ref().map(|s| s.expose().as_str()),
            Some("s3cr3t-s3cr3t")
        );
        let over = Overrides {
            bind: Some("127.0.0.1:1".parse().expect("addr")),
            ..over
        };
        assert_eq!(
            Settings::load_from(&over, env(&[]))
                .expect("load")
                .bind
                .port(),
            1,
            "flags beat all"
        );
    }

    #[test]
    fn adiuva_prefixed_names_beat_plan_names() {
        let s = Settings::load_from(
            &Overrides::default(),
            env(&[
                ("DATABASE_URL", "sqlite://a.db"),
                ("ADIUVA_DATABASE_URL", "sqlite://b.db"),
            ]),
        )
        .expect("load");
        assert_eq!(s.database_url(), "sqlite://b.db");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Settings::load_from(&Overrides::default(), env(&[("JWT_ALGORITHM", "RS256")]))
            .unwrap_err();
        assert!(e.to_string().contains("JWT_ALGORITHM"), "{e}");
        let e = Settings::load_from(
            &Overrides::default(),
            env(&[("ADIUVA_BODY_LIMIT_BYTES", "lots")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("body_limit_bytes"), "{e}");
        let over = Overrides {
            config_file: Some("/nonexistent/adiuva.toml".into()),
            ..Default::default()
        };
        assert!(Settings::load_from(&over, env(&[])).is_err());
    }

    #[test]
    fn secrets_never_print() {
        let s = Settings::load_from(
            &Overrides::default(),
            env(&[
                ("JWT_SECRET", "topsecret-value-123"),
                ("OPENAI_API_KEY", "sk-live-abc"),
                ("DATABASE_URL", "postgres://u:pw-xyz@db/adiuva"),
            ]),
        )
        .expect("load");
        let dbg = format!("{s:?}");
        for leaked in ["topsecret-value-123", "sk-live-abc", "pw-xyz"] {
            assert!(!dbg.contains(leaked), "{leaked} leaked into Debug: {dbg}");
        }
        assert!(dbg.contains("u:***@db"));
    }

    #[test]
    fn dev_secret_is_generated_once_and_prod_refuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Settings::for_data_dir(dir.path());
        let a = s.resolve_jwt_secret().expect("generated");
        let b = s.resolve_jwt_secret().expect("kept");
        assert_eq!(a.expose(), b.expose());
        assert!(a.expose().len() >= 32);
        let mut p = Settings::for_data_dir(dir.path());
        p.env = Environment::Prod;
        let e = p.resolve_jwt_secret().unwrap_err();
        assert!(e.to_string().contains("JWT_SECRET is required"), "{e}");
    }
}
