//! `spawn_app()`: the real server on 127.0.0.1 port 0 with a fresh temporary data dir
//! (and so a fresh SQLite database) per test, plus a capture of every log line.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use adiuva_core::Adiuva;
use adiuva_core::domain::Tier;
use adiuva_core::testing::CountingDb;
use adiuva_server::settings::{LogFormat, Settings};
use adiuva_server::startup::Application;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The JWT secret every test server uses, so tests can forge tokens.
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";
/// The token key every test server uses: instances of one deployment share it (what one
/// seals — a queued frame, an OAuth token — another opens).
pub const OAUTH_TOKEN_KEY: &str =
    "k1:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// A password that passes the rules.
pub const PASSWORD: &str = "correct horse battery";

/// A running server.
pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub client: reqwest::Client,
    pub adiuva: Adiuva,
    pub database: adiuva_adapters::database::AnyDatabase,
    /// A second handle on the server's blob directory (tests plant orphans with it).
    pub blobs: adiuva_adapters::blobs::ObjectBlobs,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
    /// Kept alive (and dropped after the server) when the app runs on PostgreSQL.
    _pg: Option<adiuva_adapters::postgres::testing::TestDatabase>,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let cap = Capture::default();
        let writer = cap.clone();
        adiuva_server::telemetry::init_with_writer(LogFormat::Json, "info", move || writer.clone());
        cap
    })
}

/// Every log line written so far by any test server in this process, parsed.
pub fn log_lines() -> Vec<Value> {
    let bytes = capture().0.lock().expect("log lock").clone();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Every log line as raw text.
pub fn log_text() -> String {
    String::from_utf8_lossy(&capture().0.lock().expect("log lock")).into_owned()
}

/// A server with default settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A server with settings adjusted by `adjust`.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spawn(adjust, false).await.0
}

/// A server whose every database call is counted by the returned [`CountingDb`] (the
/// real database underneath); `app.adiuva` goes through it too.
pub async fn spawn_app_counting_db(
    adjust: impl FnOnce(&mut Settings),
) -> (TestApp, Arc<CountingDb>) {
    let (app, counting) = spawn(adjust, true).await;
    (app, counting.expect("wrapped"))
}

async fn spawn(
    adjust: impl FnOnce(&mut Settings),
    count_db: bool,
) -> (TestApp, Option<Arc<CountingDb>>) {
    adiuva_adapters::install_crypto_provider();
    capture();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = Settings::for_data_dir(dir.path());
    settings.bind = "127.0.0.1:0".parse().expect("addr");
    settings.jwt_secret = Some(adiuva_core::Secret::new(JWT_SECRET.to_owned()));
    settings.oauth_token_key = Some(adiuva_core::Secret::new(OAUTH_TOKEN_KEY.to_owned()));
    adjust(&mut settings);
    let (blob_url, s3) = (settings.blob_url(), settings.s3_options());
    let mut app = Application::build(settings)
        .await
        .expect("the server builds");
    let counting = count_db.then(|| {
        let backend = app.backend_mut();
        let db = Arc::new(CountingDb::new(backend.adiuva.database().clone()));
        backend.adiuva = backend.adiuva.with_database(db.clone());
        db
    });
    let port = app.port();
    let adiuva = app.backend().adiuva.clone();
    let database = app.backend().database.clone();
    let blobs = adiuva_adapters::blobs::ObjectBlobs::from_url(&blob_url, &s3).expect("blob store");
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let app = TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        adiuva,
        database,
        blobs,
        shutdown: Some(tx),
        handle: Some(handle),
        _dir: dir,
        _pg: None,
    };
    (app, counting)
}

/// A server on a fresh PostgreSQL database (from `ADIUVA_TEST_POSTGRES_URL`), or `None`
/// (after printing SKIPPED) when none is configured outside CI.
pub async fn spawn_app_on_postgres() -> Option<TestApp> {
    spawn_app_on_postgres_with(|_| {}).await
}

/// [`spawn_app_on_postgres`] with settings adjusted by `adjust`.
pub async fn spawn_app_on_postgres_with(adjust: impl FnOnce(&mut Settings)) -> Option<TestApp> {
    let pg = adiuva_adapters::postgres::testing::TestDatabase::create("api").await?;
    let url = pg.url().to_owned();
    let mut app = spawn_app_with(|s| {
        s.database_url = Some(adiuva_server::settings::RedactedUrl(url));
        adjust(s);
    })
    .await;
    assert_eq!(app.adiuva.database().backend(), "postgres");
    app._pg = Some(pg);
    Some(app)
}

impl TestApp {
    /// The blob directory of a server on local disk (the default blob store).
    pub fn blob_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("blobs")
    }

    /// `address` + `/api/v1` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.address)
    }

    /// `method` on `/api/v1` + `path`, without credentials; the test adds headers and a
    /// body, then [`send`]s it.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// [`request`](Self::request) as the holder of the access token `token`.
    pub fn request_as(&self, method: Method, path: &str, token: &str) -> RequestBuilder {
        self.request(method, path).bearer_auth(token)
    }

    /// GETs `/api/v1` + `path` without credentials.
    pub async fn get(&self, path: &str) -> Response {
        send(self.request(Method::GET, path)).await
    }

    /// GETs `/api/v1` + `path` as the holder of `token`.
    pub async fn get_as(&self, path: &str, token: &str) -> Response {
        send(self.request_as(Method::GET, path, token)).await
    }

    /// [`get_as`](Self::get_as), the body parsed as JSON (whatever the status).
    pub async fn get_json_as<T: serde::de::DeserializeOwned>(&self, path: &str, token: &str) -> T {
        json_body(self.get_as(path, token).await).await
    }

    /// POSTs JSON.
    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        send(self.request(Method::POST, path).json(body)).await
    }

    /// Registers `email` with [`PASSWORD`].
    pub async fn register(&self, email: &str) -> Response {
        self.post_json(
            "/auth/register",
            &json!({ "email": email, "password": PASSWORD }),
        )
        .await
    }

    /// Registers and returns the tokens, asserting success.
    pub async fn register_ok(&self, email: &str) -> Value {
        let resp = self.register(email).await;
        assert_eq!(resp.status(), 200, "register {email}");
        resp.json().await.expect("tokens")
    }

    /// Logs in.
    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/auth/login",
            &json!({ "email": email, "password": password }),
        )
        .await
    }

    /// Refreshes.
    pub async fn refresh(&self, token: &str) -> Response {
        self.post_json("/auth/refresh", &json!({ "refresh_token": token }))
            .await
    }

    /// GET /auth/me with a bearer token.
    pub async fn me(&self, access_token: &str) -> Response {
        self.get_as("/auth/me", access_token).await
    }

    /// The profile `GET /auth/me` answers for `access_token` (whatever the status).
    pub async fn me_json(&self, access_token: &str) -> Value {
        json_body(self.me(access_token).await).await
    }

    /// Puts the account `email` on `tier` (tests grant tiers the way an operator does).
    pub async fn set_tier(&self, email: &str, tier: Tier) {
        self.adiuva
            .accounts()
            .set_tier(email, tier)
            .await
            .expect("set tier");
    }

    /// A fresh account (its email tagged `tag`) on `tier`: its email and access token.
    pub async fn account_on(&self, tag: &str, tier: Tier) -> (String, String) {
        let e = email(tag);
        let tokens = self.register_ok(&e).await;
        self.set_tier(&e, tier).await;
        (e, access(&tokens).to_owned())
    }

    /// Starts shutdown without waiting.
    pub fn begin_stop(&mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.handle.take().expect("running")
    }
}

/// Sends `req`; panics only when the server does not answer at all.
pub async fn send(req: RequestBuilder) -> Response {
    req.send().await.expect("the server answers")
}

/// The body of `resp` parsed as JSON (`Value` or any deserializable shape).
pub async fn json_body<T: serde::de::DeserializeOwned>(resp: Response) -> T {
    resp.json().await.expect("a JSON body")
}

/// The access token of a tokens answer (register, login, refresh).
pub fn access(tokens: &Value) -> &str {
    tokens["access_token"].as_str().expect("an access token")
}

/// The refresh token of a tokens answer.
pub fn refresh_token(tokens: &Value) -> &str {
    tokens["refresh_token"].as_str().expect("a refresh token")
}

/// Asserts an error response: status, JSON `{"detail", "code"}` with this code, and
/// returns the body.
pub async fn assert_error(resp: Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status, "status");
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(
        ct.starts_with("application/json"),
        "error bodies are JSON, got {ct:?}"
    );
    let body: Value = resp.json().await.expect("JSON body");
    assert_eq!(body["code"], code, "code in {body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "detail in {body}"
    );
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(2),
        "exactly detail and code: {body}"
    );
    body
}

/// The `detail` of an error body.
pub fn detail(body: &Value) -> &str {
    body["detail"].as_str().expect("an error detail")
}

/// [`assert_error`] for the most common refusal: 422 `validation_error`.
pub async fn assert_validation_error(resp: Response) -> Value {
    assert_error(resp, 422, "validation_error").await
}

/// [`assert_error`] for a missing, bad or revoked token: 401 `unauthorized`.
pub async fn assert_unauthorized(resp: Response) -> Value {
    assert_error(resp, 401, "unauthorized").await
}

/// Asserts a free-tier refusal: 403 `tier_required`, and the detail names the tier that
/// would do (`pro`).
pub async fn assert_pro_required(resp: Response) {
    let body = assert_error(resp, 403, "tier_required").await;
    assert!(detail(&body).contains("pro"), "{body}");
}

/// The header `name` of `resp`, which must be there and ASCII.
pub fn header_text(resp: &Response, name: &str) -> String {
    resp.headers()[name].to_str().expect("ascii").to_owned()
}

/// How many of `responses` have each status: the outcome of concurrent requests.
pub fn status_counts(responses: &[Response]) -> std::collections::BTreeMap<u16, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for r in responses {
        *counts.entry(r.status().as_u16()).or_insert(0) += 1;
    }
    counts
}

/// A unique email for this test.
pub fn email(tag: &str) -> String {
    format!("{tag}-{}@example.com", uuid::Uuid::new_v4().simple())
}
