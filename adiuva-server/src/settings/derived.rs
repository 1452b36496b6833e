//! What the settings give the rest of the server: the URLs and adapter configurations in
//! effect, the JWT secret (generated in dev) and the limits handed to core.

use std::path::Path;

use adiuva_core::Secret;
use adiuva_core::auth::AuthConfig;
use adiuva_core::seal::Keyring;

/// Each request to an OAuth provider or its API (token exchange, one page of mail) gives
/// up after this.
const PROVIDER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

use super::{ConfigError, Environment, LogFormat, Settings};

impl Settings {
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

    /// The device bus asked for: `device_bus_url` as given; unset, Redis at `redis_url`
    /// when set, else `memory`. What the forms mean (and which are refused) is the one
    /// rule of `adiuva_adapters::device_bus::connect`. Holds credentials: show it through
    /// [`redact_url`](super::redact_url).
    pub fn device_bus_url(&self) -> String {
        match (&self.device_bus_url, &self.redis_url) {
            (Some(url), _) => url.0.trim().to_owned(),
            (None, Some(redis)) => redis.0.clone(),
            (None, None) => "memory".into(),
        }
    }

    /// How devices are reached and how long things wait (a call waits as long as a chat
    /// socket's tool call).
    pub fn device_config(&self) -> adiuva_core::devices::DeviceConfig {
        let secs = |s: u64| std::time::Duration::from_secs(s.max(1));
        adiuva_core::devices::DeviceConfig {
            presence_ttl: secs(self.device_presence_ttl_secs),
            call_timeout: secs(self.chat_tool_timeout_secs),
            queue_max_frames: self.device_queue_max_frames,
            queue_max_age: secs(self.device_queue_max_age_secs),
            max_devices_per_user: self.device_max_per_user,
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
        self.resolve_generated(
            self.jwt_secret.as_ref(),
            "jwt_secret",
            "JWT_SECRET is required when ENV=prod: set it to at least 32 random bytes (for example the output of `openssl rand -hex 32`)",
            "a JWT secret",
        )
    }

    /// The keyring sealing OAuth tokens, OAuth state and journey sessions: the configured
    /// `oauth_token_key`; in dev without one, the key kept in `<data_dir>/oauth_token_key`,
    /// generated on first use (so sealed tokens survive restarts); in prod without one, an
    /// error. A key that does not parse is an error naming the setting, never the key.
    pub fn resolve_oauth_keyring(&self) -> Result<Keyring, ConfigError> {
        let key = self.resolve_generated(
            self.oauth_token_key.as_ref(),
            "oauth_token_key",
            "OAUTH_TOKEN_KEY is required when ENV=prod: set it to 32 random bytes as 64 hex digits (for example the output of `openssl rand -hex 32`)",
            "an OAuth token key",
        )?;
        Keyring::parse(key.expose()).map_err(|e| ConfigError(e.to_string()))
    }

    /// A secret setting's value, or (dev only) the one kept in `<data_dir>/<file>`,
    /// generated on first use as 32 random bytes in hex.
    fn resolve_generated(
        &self,
        configured: Option<&Secret<String>>,
        file: &str,
        required: &str,
        what: &str,
    ) -> Result<Secret<String>, ConfigError> {
        if let Some(s) = configured {
            return Ok(s.clone());
        }
        if self.env == Environment::Prod {
            return Err(ConfigError(required.into()));
        }
        let path = self.data_dir.join(file);
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => return Ok(Secret::new(s.trim().to_owned())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ConfigError(format!("cannot read {}: {e}", path.display()))),
        }
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| ConfigError(format!("no randomness for {what}: {e}")))?;
        let generated = hex::encode(bytes);
        std::fs::create_dir_all(&self.data_dir).map_err(|e| {
            ConfigError(format!(
                "cannot create the data directory {}: {e}",
                self.data_dir.display()
            ))
        })?;
        write_private(&path, &generated).map_err(|e| {
            ConfigError(format!(
                "cannot write the generated {what} to {}: {e}",
                path.display()
            ))
        })?;
        tracing::info!(path = %path.display(), "generated {what} for development");
        Ok(Secret::new(generated))
    }

    /// How agents run: the scheduler's pace, leases, timeouts and caps, the OAuth
    /// redirect base and the model (the chat's agent model and reply limit).
    pub fn agents_config(&self) -> adiuva_core::agents::AgentsConfig {
        let secs = |s: u64| std::time::Duration::from_secs(s.max(1));
        adiuva_core::agents::AgentsConfig {
            tick: secs(self.scheduler_tick_secs),
            lease: secs(self.agent_run_lease_secs.max(3)),
            local_timeout: secs(self.agent_local_timeout_secs),
            journey_ttl: secs(self.agent_journey_ttl_secs),
            max_items_per_run: self.agent_max_items_per_run.max(1),
            max_concurrent_runs: self.agent_max_concurrent_runs.max(1),
            redirect_base_url: self
                .oauth_redirect_base_url
                .trim_end_matches('/')
                .to_owned(),
            model: self.agent_model.clone(),
            max_tokens: self.agent_max_tokens,
        }
    }

    /// Google's adapter configuration, when its client id is set.
    pub fn google_config(&self) -> Option<adiuva_adapters::providers::GoogleConfig> {
        let client_id = self.google_client_id.as_ref()?.trim().to_owned();
        Some(adiuva_adapters::providers::GoogleConfig {
            client_id,
            client_secret: self
                .google_client_secret
                .clone()
                .unwrap_or_else(|| Secret::new(String::new())),
            auth_url: self.google_auth_url.clone(),
            token_url: self.google_token_url.clone(),
            gmail_api_url: self.gmail_api_url.clone(),
            timeout: PROVIDER_TIMEOUT,
        })
    }

    /// Microsoft's adapter configuration, when its client id is set.
    pub fn microsoft_config(&self) -> Option<adiuva_adapters::providers::MicrosoftConfig> {
        let client_id = self.microsoft_client_id.as_ref()?.trim().to_owned();
        Some(adiuva_adapters::providers::MicrosoftConfig {
            client_id,
            client_secret: self
                .microsoft_client_secret
                .clone()
                .unwrap_or_else(|| Secret::new(String::new())),
            authority_url: self.microsoft_authority_url.clone(),
            graph_url: self.ms_graph_url.clone(),
            timeout: PROVIDER_TIMEOUT,
        })
    }

    /// Session settings for the core.
    pub fn auth_config(&self) -> Result<AuthConfig, ConfigError> {
        let mut c = AuthConfig::new(self.resolve_jwt_secret()?);
        c.jwt_algorithm = self.jwt_algorithm;
        c.access_ttl_secs = self.access_token_ttl_secs;
        c.refresh_ttl_secs = self.refresh_token_ttl_days * 24 * 3600;
        Ok(c)
    }
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
