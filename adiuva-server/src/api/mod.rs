//! The HTTP API. Each module exports its routes as one `OpenApi` struct; they are joined
//! in [`api_service`], served under `/api/v1`.

pub mod agents;
pub mod auth;
pub mod backup;
pub mod chat;
pub mod devices;
pub mod health;
pub mod oauth;
pub mod schema;
pub mod storage;
pub mod vectors;

use adiuva_core::Adiuva;
use adiuva_core::auth::Principal;
use adiuva_core::domain::UserId;
use poem::Request;
use poem_openapi::auth::Bearer;
use poem_openapi::{OpenApiService, SecurityScheme, Tags};

use crate::error::ApiError;
use crate::middleware::rate_limit::Authenticated;

pub use schema::{Base64Bytes, Described};

/// Operation groups in the documentation.
#[derive(Tags)]
pub enum ApiTags {
    /// Accounts and sessions.
    Auth,
    /// Liveness and version.
    System,
    /// Client-encrypted cloud records and vectors.
    Storage,
    /// Client-encrypted backups.
    Backup,
    /// Chat with the agents; plans and playbooks. (The WebSocket `/chat/stream` is
    /// described by the AsyncAPI document `/api/v1/asyncapi.json`.)
    Chat,
    /// The user's desktop devices and their presence. (The device WebSocket `/ws/device`
    /// is described by the AsyncAPI document `/api/v1/asyncapi.json`.)
    Devices,
    /// Scheduled agents over your devices and your mail (Gmail, Outlook, Teams), their
    /// runs, the setup journey and connecting providers (OAuth). Triggers and results
    /// travel on the device WebSocket (AsyncAPI document).
    Agents,
}

/// `{"ok": true}`.
#[derive(Debug, poem_openapi::Object)]
pub struct Ok {
    /// Always true.
    pub ok: bool,
}

impl Ok {
    /// The only value.
    pub fn yes() -> Self {
        Self { ok: true }
    }
}

/// `Authorization: Bearer <access token>`: a JWT from `/auth/login`, `/auth/register` or
/// `/auth/refresh`. Verified for signature, algorithm and expiry, and that its account
/// still exists and its session has not been revoked; the token carries only the user id.
///
/// Holds the request's [`Principal`]: the user's row as read once for this request
/// (tier and role included), which handlers pass on instead of reading it again.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "check_bearer")]
pub struct BearerAuth(pub Principal);

impl BearerAuth {
    /// The caller's user id.
    pub fn id(&self) -> UserId {
        self.0.id()
    }
}

/// poem-openapi has parsed the header already; the token is still taken from
/// [`bearer_token`], the parser the rate-limit middleware used, so the two cannot judge
/// different strings (and the middleware's outcome is found for this request).
async fn check_bearer(req: &Request, bearer: Bearer) -> poem::Result<Principal> {
    let token = bearer_token(req).unwrap_or(&bearer.token);
    authenticate(req, token)
        .await
        .map_err(|e| ApiError::from(e).into())
}

/// The one door for every authenticated route, REST and WebSocket: the outcome the
/// rate-limit middleware already reached for this request's token (so a request
/// verifies the token and reads the account once), else
/// [`AuthService::authenticate`](adiuva_core::auth::AuthService::authenticate).
pub async fn authenticate(req: &Request, token: &str) -> Result<Principal, adiuva_core::Error> {
    let token = token.trim();
    if let Some(done) = req.extensions().get::<Authenticated>()
        && done.token == token
    {
        return done
            .outcome
            .clone()
            .map_err(adiuva_core::Error::Unauthorized);
    }
    let app = req
        .data::<Adiuva>()
        .ok_or_else(|| adiuva_core::Error::internal("Adiuva missing from request data"))?;
    app.auth().authenticate(token).await
}

/// The token of an `Authorization: Bearer …` header (scheme case-insensitive).
pub fn bearer_token(req: &Request) -> Option<&str> {
    let value = req
        .headers()
        .get(poem::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The routes that take a bearer token: every operation of the OpenAPI document that
/// declares a security scheme, plus the WebSockets (which OpenAPI cannot describe).
/// Read from the document so a new public route cannot be forgotten here.
#[derive(Debug, Clone)]
pub struct AuthenticatedRoutes {
    /// Path templates split into segments; `{param}` matches any one segment.
    templates: Vec<Vec<String>>,
}

impl AuthenticatedRoutes {
    /// From [`api_service`]'s document.
    pub fn from_spec() -> Self {
        let spec: serde_json::Value =
            serde_json::from_str(&openapi_json()).unwrap_or(serde_json::Value::Null);
        let mut paths: Vec<String> = spec["paths"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, ops)| {
                ops.as_object()
                    .into_iter()
                    .flatten()
                    .any(|(_, op)| op["security"].as_array().is_some_and(|s| !s.is_empty()))
            })
            .map(|(path, _)| format!("{API_PREFIX}{path}"))
            .collect();
        paths.push(format!("{API_PREFIX}/chat/stream"));
        paths.push(format!("{API_PREFIX}/ws/device"));
        Self {
            templates: paths.iter().map(|p| segments(p)).collect(),
        }
    }

    /// Whether `path` is one of them.
    pub fn contains(&self, path: &str) -> bool {
        let path = segments(path);
        self.templates.iter().any(|t| {
            t.len() == path.len()
                && t.iter()
                    .zip(&path)
                    .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}')))
        })
    }
}

fn segments(path: &str) -> Vec<String> {
    path.trim_end_matches('/')
        .split('/')
        .map(str::to_owned)
        .collect()
}

/// A resource id from the path. Not a UUID cannot be anyone's: the same 404 as another
/// user's id, so the answer says nothing about what exists.
pub fn path_id(raw: &str, what: &'static str) -> Result<uuid::Uuid, adiuva_core::Error> {
    uuid::Uuid::parse_str(raw).map_err(|_| adiuva_core::Error::NotFound(what))
}

/// The whole API (every module's routes).
pub type Api = (
    health::HealthApi,
    auth::AuthApi,
    storage::StorageApi,
    vectors::VectorsApi,
    backup::BackupApi,
    chat::ChatApi,
    devices::DevicesApi,
    agents::AgentsApi,
    oauth::OAuthApi,
);

/// Path prefix of every route.
pub const API_PREFIX: &str = "/api/v1";

/// The OpenAPI service: routes plus their documentation. Needs no state, so the CLI can
/// print the document without a database.
pub fn api_service() -> OpenApiService<Api, ()> {
    OpenApiService::new(
        (
            health::HealthApi,
            auth::AuthApi,
            storage::StorageApi,
            vectors::VectorsApi,
            backup::BackupApi,
            chat::ChatApi,
            devices::DevicesApi,
            agents::AgentsApi,
            oauth::OAuthApi,
        ),
        "Adiuva API",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Cloud backend of the Adiuva local-first productivity app. Every error is JSON \
             `{\"detail\", \"code\"}`. Timestamps are integer milliseconds since the Unix epoch.",
    )
    .server(API_PREFIX)
}

/// The OpenAPI 3 document as JSON, exactly as served at `/api/v1/openapi.json`.
pub fn openapi_json() -> String {
    api_service().spec()
}
