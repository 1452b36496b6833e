//! Local servers speaking Google's and Microsoft's wire formats (token endpoints, Gmail,
//! Graph), for tests and the benchmark: [`FakeGoogle`] and [`FakeMicrosoft`], each on
//! 127.0.0.1 and a free port, with `config()` (a provider config pointing at it), a
//! mailbox to fill, and controls.
//!
//! OAuth, as both providers document it: [`FakeGoogle::consent`] plays the browser on the
//! URL our server made (it checks the client id, `response_type=code`, PKCE `S256`, the
//! scopes, and for Google `access_type=offline` + `prompt=consent`) and returns a one-time
//! code. The token endpoint checks the client secret, the redirect URI and the PKCE
//! verifier; a code works once (any use spends it). Refreshing keeps Google's refresh
//! token and rotates Microsoft's (the old one dies). Failures are `400
//! {"error":"invalid_grant"}` (`401 {"error":"invalid_client"}` for a wrong secret); their
//! `error_description` quotes the presented code, refresh token or secret, as careless
//! servers do, so tests prove the client scrubs them.
//!
//! Gmail: `users/me/messages` (list; `q` understands `is:unread`, `is:read`,
//! `from:<text>` and free words, each a case-insensitive substring of the subject or
//! body, all required), `messages/{id}` (`format=full`: headers, snippet, a text/plain
//! or text/html part in base64url), `history` (`messageAdded` records; each added message
//! takes the next history id; a start before [`FakeGoogle::forget_history_before`] is
//! 404) and `profile`. Graph: `me/mailFolders/{folder}/messages` (`$filter` clauses
//! `isRead eq true|false`, `receivedDateTime gt|ge|lt <time>`, joined by `and`,
//! parentheses ignored; anything else is 400; `$top`, newest first, `@odata.nextLink`
//! with `$skip`) and `teams/{team}/channels/{channel}/messages` (`$top` ≤ 50, newest
//! first, nextLink with `$skiptoken`; an unknown channel is 404).
//!
//! Every API answers 401 for a missing, unknown, expired or
//! [`expire_access_tokens`](FakeGoogle::expire_access_tokens)'d token.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adiuva_core::Secret;
use adiuva_core::domain::Millis;
use adiuva_core::ports::providers::Provider;
use base64::Engine as _;
use chrono::SecondsFormat;
use poem::http::{Method, StatusCode};
use poem::{Request, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::form_urlencoded;

use super::{GoogleConfig, MicrosoftConfig, parse_time};
use crate::fake_server::{LocalServer, lock};

/// The client id both fakes accept.
pub const FAKE_CLIENT_ID: &str = "fake-client-id";
/// The client secret both fakes accept.
pub const FAKE_CLIENT_SECRET: &str = "fake-client-secret-3a9c";

/// A mail to put in a fake mailbox.
#[derive(Debug, Clone, Default)]
pub struct FakeMail {
    /// Sender's display name.
    pub from_name: String,
    /// Sender's address.
    pub from_address: String,
    /// Subject.
    pub subject: String,
    /// The body.
    pub body: String,
    /// Whether `body` is HTML (Gmail: a text/html part only; Outlook: contentType html).
    pub html: bool,
    /// Unread.
    pub unread: bool,
    /// Received (ms).
    pub received_at: Millis,
}

impl FakeMail {
    /// An unread plain-text mail.
    pub fn new(from: &str, subject: &str, body: &str, received_at: Millis) -> Self {
        Self {
            from_name: from.to_owned(),
            from_address: format!("{}@example.com", from.to_lowercase().replace(' ', ".")),
            subject: subject.to_owned(),
            body: body.to_owned(),
            html: false,
            unread: true,
            received_at,
        }
    }

    fn matches_words(&self, q: &str) -> bool {
        let lower = |s: &str| s.to_lowercase();
        q.split_whitespace().all(|w| {
            let w = lower(w);
            match w.as_str() {
                "is:unread" => self.unread,
                "is:read" => !self.unread,
                _ => match w.strip_prefix("from:") {
                    Some(f) => {
                        lower(&self.from_name).contains(f) || lower(&self.from_address).contains(f)
                    }
                    None => lower(&self.subject).contains(&w) || lower(&self.body).contains(&w),
                },
            }
        })
    }
}

struct Consent {
    challenge: String,
    redirect_uri: String,
    scope: String,
}

struct OAuth {
    rotate: bool,
    consents: HashMap<String, Consent>,
    refresh: HashMap<String, String>,
    access: HashMap<String, Instant>,
    lifetime: Duration,
    counter: u64,
}

#[derive(Default)]
struct Faults {
    rate_limited: VecDeque<u64>,
    failures: VecDeque<u16>,
    delay: Duration,
    foreign_next_link: Option<String>,
}

struct GmailMsg {
    id: String,
    history_id: u64,
    mail: FakeMail,
}

struct Gmail {
    msgs: Vec<GmailMsg>,
    history_id: u64,
    forgotten_before: u64,
}

struct OutlookMsg {
    id: String,
    folder: String,
    mail: FakeMail,
}

struct TeamsMsg {
    id: String,
    from: String,
    html: String,
    created_at: Millis,
}

struct State {
    provider: Provider,
    base_url: String,
    oauth: Mutex<OAuth>,
    faults: Mutex<Faults>,
    requests: Mutex<HashMap<String, usize>>,
    page_size: Mutex<usize>,
    gmail: Mutex<Gmail>,
    outlook: Mutex<Vec<OutlookMsg>>,
    teams: Mutex<HashMap<(String, String), Vec<TeamsMsg>>>,
}

/// A running fake (either provider). Stops when dropped.
struct Fake {
    state: Arc<State>,
    server: LocalServer,
}

impl Fake {
    async fn start(provider: Provider) -> std::io::Result<Self> {
        let mut state = None;
        let server = LocalServer::start("OAuth provider", |addr: SocketAddr| {
            let s = Arc::new(State {
                provider,
                base_url: format!("http://{addr}"),
                oauth: Mutex::new(OAuth {
                    rotate: provider == Provider::Microsoft,
                    consents: HashMap::new(),
                    refresh: HashMap::new(),
                    access: HashMap::new(),
                    lifetime: Duration::from_secs(3600),
                    counter: 0,
                }),
                faults: Mutex::default(),
                requests: Mutex::default(),
                page_size: Mutex::new(usize::MAX),
                gmail: Mutex::new(Gmail {
                    msgs: Vec::new(),
                    history_id: 1000,
                    forgotten_before: 0,
                }),
                outlook: Mutex::default(),
                teams: Mutex::default(),
            });
            state = Some(s.clone());
            poem::endpoint::make(move |req: Request| {
                let s = s.clone();
                async move { s.handle(req).await }
            })
        })
        .await?;
        let state = state.ok_or_else(|| std::io::Error::other("the fake was not built"))?;
        Ok(Self { state, server })
    }

    fn consent(&self, authorize_url: &str) -> Result<(String, String), String> {
        let url = url::Url::parse(authorize_url).map_err(|e| format!("not a URL: {e}"))?;
        let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
        let get = |k: &str| q.get(k).map(String::as_str).unwrap_or_default();
        let expected_path = match self.state.provider {
            Provider::Google => "/o/oauth2/v2/auth",
            Provider::Microsoft => "/common/oauth2/v2.0/authorize",
        };
        if !authorize_url.starts_with(&self.state.base_url) || url.path() != expected_path {
            return Err(format!("not this provider's consent page: {}", url.path()));
        }
        if get("client_id") != FAKE_CLIENT_ID {
            return Err("unknown client_id".into());
        }
        if get("response_type") != "code" {
            return Err("response_type must be code".into());
        }
        if get("code_challenge_method") != "S256" || get("code_challenge").len() != 43 {
            return Err("PKCE S256 with a 43-character challenge is required".into());
        }
        let scopes: HashSet<&str> = get("scope").split(' ').collect();
        for want in self.state.provider.scopes() {
            if !scopes.contains(want) {
                return Err(format!("scope {want} was not asked for"));
            }
        }
        if self.state.provider == Provider::Google
            && (get("access_type") != "offline" || get("prompt") != "consent")
        {
            return Err("Google needs access_type=offline and prompt=consent".into());
        }
        if get("redirect_uri").is_empty() || get("state").is_empty() {
            return Err("redirect_uri and state are required".into());
        }
        let mut o = lock(&self.state.oauth);
        o.counter += 1;
        let code = format!("code-{}-{}", o.counter, uuid::Uuid::new_v4().simple());
        o.consents.insert(
            code.clone(),
            Consent {
                challenge: get("code_challenge").to_owned(),
                redirect_uri: get("redirect_uri").to_owned(),
                scope: get("scope").to_owned(),
            },
        );
        Ok((code, get("state").to_owned()))
    }

    fn requests(&self, path_prefix: &str) -> usize {
        lock(&self.state.requests)
            .iter()
            .filter(|(p, _)| p.starts_with(path_prefix))
            .map(|(_, n)| n)
            .sum()
    }
}

/// Methods both fakes share, spelled once.
macro_rules! common {
    ($t:ty) => {
        impl $t {
            /// Plays the browser on `authorize_url` (made by our server): checks it as the
            /// provider would and returns a one-time code and the `state` it carried, or
            /// why the provider would refuse it.
            pub fn consent(&self, authorize_url: &str) -> Result<(String, String), String> {
                self.0.consent(authorize_url)
            }

            /// `http://127.0.0.1:<port>`.
            pub fn url(&self) -> String {
                self.0.state.base_url.clone()
            }

            /// Every refresh token issued so far dies (`invalid_grant` from now on).
            pub fn revoke_refresh_tokens(&self) {
                lock(&self.0.state.oauth).refresh.clear();
            }

            /// Every access token issued so far is refused (401) from now on.
            pub fn expire_access_tokens(&self) {
                lock(&self.0.state.oauth).access.clear();
            }

            /// How long access tokens issued from now on live (`expires_in`, and enforced).
            pub fn set_access_token_lifetime(&self, lifetime: Duration) {
                lock(&self.0.state.oauth).lifetime = lifetime;
            }

            /// The next `n` requests (any route) answer 429 with `Retry-After:
            /// retry_after_secs`.
            pub fn rate_limit_next(&self, n: usize, retry_after_secs: u64) {
                lock(&self.0.state.faults)
                    .rate_limited
                    .extend(std::iter::repeat_n(retry_after_secs, n));
            }

            /// The next `n` requests (any route) answer `status` with the provider's error
            /// body (after any queued 429s).
            pub fn fail_next(&self, n: usize, status: u16) {
                lock(&self.0.state.faults)
                    .failures
                    .extend(std::iter::repeat_n(status, n));
            }

            /// Every request waits this long before it is answered.
            pub fn delay(&self, delay: Duration) {
                lock(&self.0.state.faults).delay = delay;
            }

            /// Requests whose path starts with `path_prefix` (`""`: all), refused ones
            /// included.
            pub fn requests(&self, path_prefix: &str) -> usize {
                self.0.requests(path_prefix)
            }

            /// Pages hold at most `n` items whatever the client asks (to test paging).
            pub fn set_page_size(&self, n: usize) {
                *lock(&self.0.state.page_size) = n.max(1);
            }

            /// Stops listening; returns once the port is closed.
            pub async fn shutdown(self) {
                self.0.server.shutdown().await;
            }
        }
    };
}

/// A fake Google: OAuth and the Gmail API.
pub struct FakeGoogle(Fake);

/// A fake Microsoft: the identity platform and Graph (Outlook, Teams).
pub struct FakeMicrosoft(Fake);

common!(FakeGoogle);
common!(FakeMicrosoft);

impl FakeGoogle {
    /// Starts on 127.0.0.1 and a free port.
    pub async fn start() -> std::io::Result<Self> {
        Ok(Self(Fake::start(Provider::Google).await?))
    }

    /// A config pointing at this fake (its client id and secret; 5 s timeout).
    pub fn config(&self) -> GoogleConfig {
        let base = self.url();
        GoogleConfig {
            client_id: FAKE_CLIENT_ID.into(),
            client_secret: Secret::new(FAKE_CLIENT_SECRET.into()),
            auth_url: format!("{base}/o/oauth2/v2/auth"),
            token_url: format!("{base}/token"),
            gmail_api_url: base,
            timeout: Duration::from_secs(5),
        }
    }

    /// Adds a message (the next history id); returns its id.
    pub fn add_gmail_message(&self, mail: FakeMail) -> String {
        let mut g = lock(&self.0.state.gmail);
        g.history_id += 1;
        let id = format!("{:016x}", g.history_id * 7919);
        let history_id = g.history_id;
        g.msgs.push(GmailMsg {
            id: id.clone(),
            history_id,
            mail,
        });
        id
    }

    /// Marks a message read or unread.
    pub fn set_gmail_unread(&self, id: &str, unread: bool) {
        let mut g = lock(&self.0.state.gmail);
        if let Some(m) = g.msgs.iter_mut().find(|m| m.id == id) {
            m.mail.unread = unread;
        }
    }

    /// The mailbox's current history id.
    pub fn history_id(&self) -> u64 {
        lock(&self.0.state.gmail).history_id
    }

    /// History before `id` is gone: a `startHistoryId` below it is 404.
    pub fn forget_history_before(&self, id: u64) {
        lock(&self.0.state.gmail).forgotten_before = id;
    }
}

impl FakeMicrosoft {
    /// Starts on 127.0.0.1 and a free port.
    pub async fn start() -> std::io::Result<Self> {
        Ok(Self(Fake::start(Provider::Microsoft).await?))
    }

    /// A config pointing at this fake (authority `…/common`, Graph `…/v1.0`; 5 s timeout).
    pub fn config(&self) -> MicrosoftConfig {
        let base = self.url();
        MicrosoftConfig {
            client_id: FAKE_CLIENT_ID.into(),
            client_secret: Secret::new(FAKE_CLIENT_SECRET.into()),
            authority_url: format!("{base}/common"),
            graph_url: format!("{base}/v1.0"),
            timeout: Duration::from_secs(5),
        }
    }

    /// Adds a mail to `folder` (`inbox`, …); returns its id.
    pub fn add_outlook_message(&self, folder: &str, mail: FakeMail) -> String {
        let mut o = lock(&self.0.state.outlook);
        let id = format!("AAMk-{}", o.len() + 1);
        o.push(OutlookMsg {
            id: id.clone(),
            folder: folder.to_lowercase(),
            mail,
        });
        id
    }

    /// Adds a message (HTML body) to a channel, creating the channel; returns its id.
    pub fn add_teams_message(
        &self,
        team: &str,
        channel: &str,
        from: &str,
        html: &str,
        created_at: Millis,
    ) -> String {
        let mut t = lock(&self.0.state.teams);
        let msgs = t.entry((team.into(), channel.into())).or_default();
        let id = format!("{}", 1_700_000_000_000u64 + msgs.len() as u64 + 1);
        msgs.push(TeamsMsg {
            id: id.clone(),
            from: from.into(),
            html: html.into(),
            created_at,
        });
        id
    }

    /// The next nextLinks point at `base` (another host) instead of this fake's Graph.
    pub fn send_next_links_to(&self, base: &str) {
        lock(&self.0.state.faults).foreign_next_link = Some(base.trim_end_matches('/').into());
    }
}

fn respond(status: StatusCode, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(body.to_string())
}

fn iso(ms: Millis, format: SecondsFormat) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(format, true))
        .unwrap_or_default()
}

fn pct_decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

type Answer = Result<Value, (StatusCode, Value)>;

/// One `$filter` clause, as a test on a mail.
type Clause = Box<dyn Fn(&FakeMail) -> bool>;

impl State {
    async fn handle(self: Arc<Self>, req: Request) -> Response {
        let path = req.uri().path().to_owned();
        *lock(&self.requests).entry(path.clone()).or_default() += 1;
        let (limited, failure, delay) = {
            let mut f = lock(&self.faults);
            let limited = f.rate_limited.pop_front();
            let failure = match limited {
                Some(_) => None,
                None => f.failures.pop_front(),
            };
            (limited, failure, f.delay)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Some(secs) = limited {
            // Careless, like some proxies: the message quotes the presented bearer token,
            // so tests prove the client's retry log scrubs it.
            let presented = req
                .header("Authorization")
                .and_then(|h| h.strip_prefix("Bearer "))
                .unwrap_or("none");
            let message = format!("Rate limit exceeded for token {presented}");
            let mut r = respond(
                StatusCode::TOO_MANY_REQUESTS,
                &self.api_error(429, &message),
            );
            if let Ok(v) = secs.to_string().parse() {
                r.headers_mut().insert("Retry-After", v);
            }
            return r;
        }
        if let Some(code) = failure {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return respond(status, &self.api_error(code, "Injected failure"));
        }
        let query: HashMap<String, String> =
            form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let method = req.method().clone();
        let auth = req.header("Authorization").map(str::to_owned);
        let body = req.into_body().into_bytes().await.unwrap_or_default();
        let token_path = match self.provider {
            Provider::Google => "/token",
            Provider::Microsoft => "/common/oauth2/v2.0/token",
        };
        let answer = if path == token_path && method == Method::POST {
            self.token(&body)
        } else if method != Method::GET {
            Err((
                StatusCode::METHOD_NOT_ALLOWED,
                self.api_error(405, "Method not allowed"),
            ))
        } else if !self.authorised(auth.as_deref()) {
            Err((
                StatusCode::UNAUTHORIZED,
                self.api_error(401, "Invalid or expired access token"),
            ))
        } else {
            let segs: Vec<String> = path.split('/').skip(1).map(pct_decode).collect();
            let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
            match (self.provider, segs.as_slice()) {
                (Provider::Google, ["gmail", "v1", "users", "me", "messages"]) => {
                    self.gmail_list(&query)
                }
                (Provider::Google, ["gmail", "v1", "users", "me", "messages", id]) => {
                    self.gmail_get(id)
                }
                (Provider::Google, ["gmail", "v1", "users", "me", "history"]) => {
                    self.gmail_history(&query)
                }
                (Provider::Google, ["gmail", "v1", "users", "me", "profile"]) => Ok(
                    json!({"emailAddress": "me@example.com", "messagesTotal": lock(&self.gmail).msgs.len(),
                              "historyId": lock(&self.gmail).history_id.to_string()}),
                ),
                (Provider::Microsoft, ["v1.0", "me", "mailFolders", folder, "messages"]) => {
                    self.outlook_list(folder, &query)
                }
                (Provider::Microsoft, ["v1.0", "teams", team, "channels", channel, "messages"]) => {
                    self.teams_list(team, channel, &query)
                }
                _ => Err((StatusCode::NOT_FOUND, self.api_error(404, "Not found"))),
            }
        };
        match answer {
            Ok(v) => respond(StatusCode::OK, &v),
            Err((status, v)) => respond(status, &v),
        }
    }

    /// The provider's API error body.
    fn api_error(&self, code: u16, message: &str) -> Value {
        match self.provider {
            Provider::Google => {
                json!({"error": {"code": code, "message": message, "status": match code {
                401 => "UNAUTHENTICATED", 404 => "NOT_FOUND", 429 => "RESOURCE_EXHAUSTED", _ => "INVALID_ARGUMENT"}}})
            }
            Provider::Microsoft => json!({"error": {"code": match code {
                401 => "InvalidAuthenticationToken", 404 => "NotFound", 429 => "TooManyRequests", _ => "BadRequest"},
                "message": message}}),
        }
    }

    fn authorised(&self, header: Option<&str>) -> bool {
        let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        lock(&self.oauth)
            .access
            .get(token)
            .is_some_and(|until| *until > Instant::now())
    }

    fn token(&self, body: &[u8]) -> Answer {
        let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
        let get = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
        // Like some real servers, the description echoes what was presented (the code or
        // refresh token), so tests can prove the client scrubs it.
        let grant_error = |d: &str| {
            Err((
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_grant", "error_description": d}),
            ))
        };
        if get("client_id") != FAKE_CLIENT_ID || get("client_secret") != FAKE_CLIENT_SECRET {
            return Err((
                StatusCode::UNAUTHORIZED,
                json!({"error": "invalid_client",
                       "error_description": format!("The client secret {} is wrong.", get("client_secret"))}),
            ));
        }
        if self.provider == Provider::Microsoft && get("scope").is_empty() {
            return Err((
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_request", "error_description": "scope is required"}),
            ));
        }
        let mut o = lock(&self.oauth);
        let (scope, old_refresh) = match get("grant_type") {
            "authorization_code" => {
                // Any use spends the code.
                let Some(c) = o.consents.remove(get("code")) else {
                    return grant_error(&format!(
                        "The code {} is invalid or was already used.",
                        get("code")
                    ));
                };
                if c.redirect_uri != get("redirect_uri") {
                    return grant_error("redirect_uri does not match the authorization request.");
                }
                let digest = Sha256::digest(get("code_verifier").as_bytes());
                let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
                if challenge != c.challenge {
                    return grant_error("The code_verifier does not match the code_challenge.");
                }
                (c.scope, None)
            }
            "refresh_token" => match o.refresh.get(get("refresh_token")) {
                Some(scope) => (scope.clone(), Some(get("refresh_token").to_owned())),
                None => {
                    return grant_error(&format!(
                        "The refresh token {} is invalid, expired or revoked.",
                        get("refresh_token")
                    ));
                }
            },
            _ => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    json!({"error": "unsupported_grant_type"}),
                ));
            }
        };
        o.counter += 1;
        let n = o.counter;
        let access = format!("at-{n}-{}", uuid::Uuid::new_v4().simple());
        let lifetime = o.lifetime;
        o.access.insert(access.clone(), Instant::now() + lifetime);
        let mut answer = json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": lifetime.as_secs(),
            "scope": scope,
        });
        let issue_refresh = match &old_refresh {
            None => true,
            Some(old) if o.rotate => {
                o.refresh.remove(old);
                true
            }
            Some(_) => false,
        };
        if issue_refresh {
            let refresh = format!("rt-{n}-{}", uuid::Uuid::new_v4().simple());
            o.refresh.insert(refresh.clone(), scope);
            answer["refresh_token"] = json!(refresh);
        }
        Ok(answer)
    }

    fn page_size(&self, asked: Option<&String>, default: usize, max: usize) -> usize {
        let asked = asked
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(default);
        asked.clamp(1, max).min(*lock(&self.page_size))
    }

    fn gmail_list(&self, q: &HashMap<String, String>) -> Answer {
        let g = lock(&self.gmail);
        let mut hits: Vec<&GmailMsg> = g
            .msgs
            .iter()
            .filter(|m| {
                m.mail
                    .matches_words(q.get("q").map(String::as_str).unwrap_or_default())
            })
            .collect();
        hits.sort_by_key(|m| std::cmp::Reverse(m.mail.received_at));
        let size = self.page_size(q.get("maxResults"), 100, 500);
        let from: usize = q.get("pageToken").and_then(|t| t.parse().ok()).unwrap_or(0);
        let page: Vec<Value> = hits
            .iter()
            .skip(from)
            .take(size)
            .map(|m| json!({"id": m.id, "threadId": format!("t{}", m.id)}))
            .collect();
        let mut answer = json!({"resultSizeEstimate": hits.len()});
        if !page.is_empty() {
            answer["messages"] = json!(page);
        }
        if from + size < hits.len() {
            answer["nextPageToken"] = json!((from + size).to_string());
        }
        Ok(answer)
    }

    fn gmail_get(&self, id: &str) -> Answer {
        let g = lock(&self.gmail);
        let Some(m) = g.msgs.iter().find(|m| m.id == id) else {
            return Err((
                StatusCode::NOT_FOUND,
                self.api_error(404, "Requested entity was not found."),
            ));
        };
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE.encode(s.as_bytes());
        let mime = if m.mail.html {
            "text/html"
        } else {
            "text/plain"
        };
        let snippet: String = m.mail.body.chars().take(100).collect();
        Ok(json!({
            "id": m.id,
            "threadId": format!("t{}", m.id),
            "labelIds": if m.mail.unread { json!(["INBOX", "UNREAD"]) } else { json!(["INBOX"]) },
            "snippet": snippet,
            "historyId": m.history_id.to_string(),
            "internalDate": m.mail.received_at.to_string(),
            "payload": {
                "mimeType": "multipart/alternative",
                "headers": [
                    {"name": "From", "value": format!("{} <{}>", m.mail.from_name, m.mail.from_address)},
                    {"name": "Subject", "value": m.mail.subject},
                ],
                "body": {"size": 0},
                "parts": [{"partId": "0", "mimeType": mime, "body": {"size": m.mail.body.len(), "data": b64(&m.mail.body)}}],
            },
        }))
    }

    fn gmail_history(&self, q: &HashMap<String, String>) -> Answer {
        let g = lock(&self.gmail);
        let Some(start) = q.get("startHistoryId").and_then(|s| s.parse::<u64>().ok()) else {
            return Err((
                StatusCode::BAD_REQUEST,
                self.api_error(400, "startHistoryId is required"),
            ));
        };
        if start < g.forgotten_before {
            return Err((
                StatusCode::NOT_FOUND,
                self.api_error(404, "Requested entity was not found."),
            ));
        }
        let mut added: Vec<&GmailMsg> = g.msgs.iter().filter(|m| m.history_id > start).collect();
        added.sort_by_key(|m| m.history_id);
        let size = self.page_size(q.get("maxResults"), 100, 500);
        let from: usize = q.get("pageToken").and_then(|t| t.parse().ok()).unwrap_or(0);
        let records: Vec<Value> = added
            .iter()
            .skip(from)
            .take(size)
            .map(|m| json!({"id": m.history_id.to_string(), "messages": [{"id": m.id}],
                            "messagesAdded": [{"message": {"id": m.id, "threadId": format!("t{}", m.id)}}]}))
            .collect();
        let mut answer = json!({"historyId": g.history_id.to_string()});
        if !records.is_empty() {
            answer["history"] = json!(records);
        }
        if from + size < added.len() {
            answer["nextPageToken"] = json!((from + size).to_string());
        }
        Ok(answer)
    }

    fn next_link(
        &self,
        path: &str,
        q: &HashMap<String, String>,
        skip_key: &str,
        skip: usize,
    ) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        let mut keys: Vec<&String> = q.keys().filter(|k| k.as_str() != skip_key).collect();
        keys.sort();
        for k in keys {
            s.append_pair(k, &q[k]);
        }
        s.append_pair(skip_key, &skip.to_string());
        let base = lock(&self.faults)
            .foreign_next_link
            .clone()
            .unwrap_or_else(|| self.base_url.clone());
        format!("{base}{path}?{}", s.finish())
    }

    fn outlook_list(&self, folder: &str, q: &HashMap<String, String>) -> Answer {
        let bad = |m: &str| Err((StatusCode::BAD_REQUEST, self.api_error(400, m)));
        // Clauses: isRead eq true|false; receivedDateTime gt|ge|lt <time>; joined by and.
        let mut clauses: Vec<Clause> = Vec::new();
        if let Some(f) = q.get("$filter") {
            let f = f.replace(['(', ')'], " ");
            if f.contains(" or ") || f.contains(" not ") {
                return bad("Unsupported filter operator");
            }
            for clause in f.split(" and ").map(str::trim) {
                let parts: Vec<&str> = clause.split_whitespace().collect();
                match parts.as_slice() {
                    ["isRead", "eq", v @ ("true" | "false")] => {
                        let read = *v == "true";
                        clauses.push(Box::new(move |m| m.unread != read));
                    }
                    ["receivedDateTime", op @ ("gt" | "ge" | "lt"), t] => {
                        let Some(t) = parse_time(t) else {
                            return bad("Invalid DateTimeOffset in filter");
                        };
                        // Graph keeps whole seconds.
                        let op = op.to_string();
                        clauses.push(Box::new(move |m| {
                            let r = m.received_at - m.received_at.rem_euclid(1000);
                            match op.as_str() {
                                "gt" => r > t,
                                "ge" => r >= t,
                                _ => r < t,
                            }
                        }));
                    }
                    _ => return bad(&format!("Invalid filter clause: {clause}")),
                }
            }
        }
        let o = lock(&self.outlook);
        let mut hits: Vec<&OutlookMsg> = o
            .iter()
            .filter(|m| m.folder == folder.to_lowercase() && clauses.iter().all(|c| c(&m.mail)))
            .collect();
        hits.sort_by_key(|m| std::cmp::Reverse(m.mail.received_at));
        let size = self.page_size(q.get("$top"), 10, 1000);
        let from: usize = q.get("$skip").and_then(|t| t.parse().ok()).unwrap_or(0);
        let value: Vec<Value> = hits
            .iter()
            .skip(from)
            .take(size)
            .map(|m| {
                let preview: String = m.mail.body.chars().take(255).collect();
                json!({
                    "id": m.id,
                    "conversationId": format!("conv-{}", m.id),
                    "subject": m.mail.subject,
                    "bodyPreview": preview,
                    "isRead": !m.mail.unread,
                    "receivedDateTime": iso(m.mail.received_at, SecondsFormat::Secs),
                    "webLink": format!("https://outlook.office365.com/owa/?ItemID={}", m.id),
                    "from": {"emailAddress": {"name": m.mail.from_name, "address": m.mail.from_address}},
                    "body": {"contentType": if m.mail.html { "html" } else { "text" }, "content": m.mail.body},
                })
            })
            .collect();
        let mut answer = json!({"value": value});
        if from + size < hits.len() {
            let path = format!("/v1.0/me/mailFolders/{}/messages", super::segment(folder));
            answer["@odata.nextLink"] = json!(self.next_link(&path, q, "$skip", from + size));
        }
        Ok(answer)
    }

    fn teams_list(&self, team: &str, channel: &str, q: &HashMap<String, String>) -> Answer {
        let t = lock(&self.teams);
        let Some(msgs) = t.get(&(team.to_owned(), channel.to_owned())) else {
            return Err((
                StatusCode::NOT_FOUND,
                self.api_error(404, "Channel not found"),
            ));
        };
        let mut sorted: Vec<&TeamsMsg> = msgs.iter().collect();
        sorted.sort_by_key(|m| std::cmp::Reverse(m.created_at));
        let size = self.page_size(q.get("$top"), 20, 50);
        let from: usize = q
            .get("$skiptoken")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        let value: Vec<Value> = sorted
            .iter()
            .skip(from)
            .take(size)
            .map(|m| {
                json!({
                    "id": m.id,
                    "replyToId": null,
                    "messageType": "message",
                    "createdDateTime": iso(m.created_at, SecondsFormat::Millis),
                    "lastModifiedDateTime": iso(m.created_at, SecondsFormat::Millis),
                    "deletedDateTime": null,
                    "subject": null,
                    "body": {"contentType": "html", "content": m.html},
                    "from": {"user": {"id": "u1", "displayName": m.from}},
                    "webUrl": format!("https://teams.microsoft.com/l/message/{}/{}", super::segment(channel), m.id),
                })
            })
            .collect();
        let mut answer = json!({"value": value});
        if from + size < sorted.len() {
            let path = format!(
                "/v1.0/teams/{}/channels/{}/messages",
                super::segment(team),
                super::segment(channel)
            );
            answer["@odata.nextLink"] = json!(self.next_link(&path, q, "$skiptoken", from + size));
        }
        Ok(answer)
    }
}
