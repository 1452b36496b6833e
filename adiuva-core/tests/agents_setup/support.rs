//! One backend with a manual clock, a scripted model and two in-test OAuth providers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use adiuva_core::Adiuva;
use adiuva_core::agents::{AgentInput, AgentsConfig};
use adiuva_core::auth::{AuthConfig, Principal};
use adiuva_core::chat::orchestrator::{ModelRoles, Orchestrator};
use adiuva_core::domain::{Email, Role, Tier, UserId};
use adiuva_core::ports::ManualClock;
use adiuva_core::ports::db::{User, UserRepo};
use adiuva_core::ports::providers::{
    AuthorizeRequest, Provider, ProviderApi, ProviderError, SourcePage, SourceQuery, TokenSet,
};
use adiuva_core::seal::Keyring;
use adiuva_core::secret::Secret;
use adiuva_core::testing::MemoryDb;
use adiuva_core::testing::llm::ScriptedModel;
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The manual clock's start (2027-01-15, a Friday, 08:00 UTC).
pub const T0: i64 = 1_800_000_000_000;

/// A provider the way the OAuth flow sees it: it remembers the challenge of every
/// consent it handed a code for, and its token endpoint checks the verifier against it
/// (S256) and the redirect URI, like Google's and Microsoft's do.
pub struct FakeProvider {
    provider: Provider,
    /// The last authorize request (what the consent page would have been given).
    pub last_authorize: Mutex<Option<AuthorizeRequest>>,
    /// code → (challenge, redirect_uri) of the consent that issued it.
    codes: Mutex<HashMap<String, (String, String)>>,
    /// Scripted answers of the token endpoint (exchange and refresh); empty: success.
    pub failures: Mutex<VecDeque<ProviderError>>,
    /// Verifiers the token endpoint received.
    pub verifiers: Mutex<Vec<String>>,
    /// Refresh tokens the token endpoint received on refresh.
    pub refreshed_with: Mutex<Vec<Option<String>>>,
    /// Whether a refresh answers a new refresh token (Microsoft rotates them).
    pub rotates: bool,
    issued: Mutex<u32>,
}

impl FakeProvider {
    pub fn new(provider: Provider) -> Arc<FakeProvider> {
        Arc::new(FakeProvider {
            provider,
            last_authorize: Mutex::new(None),
            codes: Mutex::new(HashMap::new()),
            failures: Mutex::new(VecDeque::new()),
            verifiers: Mutex::new(Vec::new()),
            refreshed_with: Mutex::new(Vec::new()),
            rotates: provider == Provider::Microsoft,
            issued: Mutex::new(0),
        })
    }

    /// The user consents: a code for the last authorize request.
    pub fn consent(&self) -> String {
        let req = self
            .last_authorize
            .lock()
            .expect("lock")
            .clone()
            .expect("authorize was called");
        let code = format!("code-{}", uuid::Uuid::new_v4().simple());
        self.codes
            .lock()
            .expect("lock")
            .insert(code.clone(), (req.code_challenge, req.redirect_uri));
        code
    }

    pub fn fail_next(&self, e: ProviderError) {
        self.failures.lock().expect("lock").push_back(e);
    }

    fn tokens(&self, now: i64) -> TokenSet {
        let mut n = self.issued.lock().expect("lock");
        *n += 1;
        TokenSet {
            access_token: Secret::new(format!("access-{}-{n}", self.provider.as_str())),
            refresh_token: Some(Secret::new(format!(
                "refresh-{}-{n}",
                self.provider.as_str()
            ))),
            expires_at: now + 3_600_000,
            scope: self.provider.scopes().join(" "),
        }
    }
}

#[async_trait]
impl ProviderApi for FakeProvider {
    fn provider(&self) -> Provider {
        self.provider
    }

    fn authorize_url(&self, request: &AuthorizeRequest) -> String {
        *self.last_authorize.lock().expect("lock") = Some(request.clone());
        // The test reads the state back out of the URL, as a browser would carry it.
        format!(
            "https://consent.example/{}?response_type=code&state={}&code_challenge={}&code_challenge_method=S256&redirect_uri={}&scope={}",
            self.provider.as_str(),
            request.state,
            request.code_challenge,
            request.redirect_uri,
            request.scopes.join("+"),
        )
    }

    async fn exchange_code(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
        now: i64,
    ) -> Result<TokenSet, ProviderError> {
        self.verifiers
            .lock()
            .expect("lock")
            .push(verifier.to_owned());
        if let Some(e) = self.failures.lock().expect("lock").pop_front() {
            return Err(e);
        }
        let Some((challenge, redirect)) = self.codes.lock().expect("lock").remove(code) else {
            return Err(ProviderError::InvalidGrant("unknown or used code".into()));
        };
        let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        if computed != challenge || redirect != redirect_uri {
            return Err(ProviderError::InvalidGrant(
                "PKCE or redirect mismatch".into(),
            ));
        }
        Ok(self.tokens(now))
    }

    async fn refresh(&self, tokens: &TokenSet, now: i64) -> Result<TokenSet, ProviderError> {
        self.refreshed_with
            .lock()
            .expect("lock")
            .push(tokens.refresh_token.as_ref().map(|t| t.expose().clone()));
        if let Some(e) = self.failures.lock().expect("lock").pop_front() {
            return Err(e);
        }
        let mut fresh = self.tokens(now);
        if !self.rotates {
            fresh.refresh_token = None;
        }
        Ok(fresh)
    }

    async fn read(
        &self,
        _tokens: &mut TokenSet,
        _query: &SourceQuery,
        _now: i64,
    ) -> Result<SourcePage, ProviderError> {
        Err(ProviderError::Unavailable("not used by these tests".into()))
    }
}

pub struct Env {
    pub app: Adiuva,
    pub db: Arc<MemoryDb>,
    pub clock: Arc<ManualClock>,
    pub model: Arc<ScriptedModel>,
    pub google: Arc<FakeProvider>,
    pub microsoft: Arc<FakeProvider>,
}

pub struct Options {
    pub model: bool,
    pub microsoft: bool,
}

impl Env {
    pub fn new() -> Env {
        Env::with(Options {
            model: true,
            microsoft: true,
        })
    }

    pub fn with(options: Options) -> Env {
        let db = Arc::new(MemoryDb::new());
        let clock = Arc::new(ManualClock::new(T0));
        let model = Arc::new(ScriptedModel::new());
        let google = FakeProvider::new(Provider::Google);
        let microsoft = FakeProvider::new(Provider::Microsoft);
        let mut builder = Adiuva::builder()
            .database(db.clone())
            .clock(clock.clone())
            .auth(AuthConfig::new(Secret::new("x".repeat(40))))
            .keyring(Keyring::random())
            .agents_config(AgentsConfig {
                redirect_base_url: "https://adiuva.example/".into(),
                ..AgentsConfig::default()
            })
            .provider(google.clone());
        if options.microsoft {
            builder = builder.provider(microsoft.clone());
        }
        if options.model {
            let orchestrator =
                Orchestrator::new(model.clone(), ModelRoles::default()).expect("orchestrator");
            builder = builder.chat(Arc::new(orchestrator));
        }
        Env {
            app: builder.build().expect("backend"),
            db,
            clock,
            model,
            google,
            microsoft,
        }
    }

    pub async fn user(&self, tier: Tier) -> Principal {
        let id = UserId::new();
        let user = User {
            id,
            email: Email::parse(&format!("{}@example.com", id.0.simple())).expect("email"),
            password_hash: "not used".into(),
            role: Role::User,
            tier,
            stripe_customer_id: None,
            created_at: T0,
            updated_at: T0,
        };
        self.db.insert_user(&user).await.expect("user");
        Principal {
            user,
            session: None,
        }
    }

    pub fn fake(&self, provider: &str) -> &FakeProvider {
        match provider {
            "google" => &self.google,
            _ => &self.microsoft,
        }
    }

    /// Authorize → the state out of the consent URL → a code from the fake's consent.
    pub async fn consent(&self, p: &Principal, provider: &str) -> (String, String) {
        let url = self
            .app
            .agents()
            .oauth_authorize(p, provider)
            .await
            .expect("authorize");
        (self.fake(provider).consent(), state_of(&url))
    }

    /// The whole flow: a sealed token set of `provider` for `p`.
    pub async fn connect(&self, p: &Principal, provider: &str) -> String {
        let (code, state) = self.consent(p, provider).await;
        self.app
            .agents()
            .oauth_callback(provider, &code, &state)
            .await
            .expect("callback")
    }
}

/// The `state` parameter of a consent URL.
pub fn state_of(url: &str) -> String {
    url.split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("state="))
        .expect("state in the URL")
        .to_owned()
}

/// A local config of `agent_type` with every optional field left to its default.
pub fn local(name: &str, agent_type: &str) -> AgentInput {
    AgentInput {
        name: name.into(),
        agent_type: agent_type.into(),
        ..AgentInput::default()
    }
}

/// A cloud config.
pub fn cloud(name: &str, agent_type: &str, provider: &str, token: &str) -> AgentInput {
    AgentInput {
        name: name.into(),
        agent_type: agent_type.into(),
        provider: Some(provider.into()),
        oauth_token_encrypted: Some(token.into()),
        ..AgentInput::default()
    }
}

/// Teams filters that pass.
pub fn teams_filters() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("team_id".into(), "team-1".into());
    m.insert("channel_id".into(), "channel-1".into());
    m
}

/// `{key: value}`.
pub fn map(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}
