//! The HTTP API. Each module exports its routes as one `OpenApi` struct; they are joined
//! in [`api_service`], served under `/api/v1`.

pub mod auth;
pub mod backup;
pub mod chat;
pub mod health;
pub mod storage;
pub mod vectors;

use adiuva_core::Adiuva;
use adiuva_core::domain::UserId;
use poem::Request;
use poem_openapi::auth::Bearer;
use poem_openapi::{OpenApiService, SecurityScheme, Tags};

use crate::error::ApiError;

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
    /// described in the README: OpenAPI cannot express it.)
    Chat,
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
/// `/auth/refresh`. Verified for signature, algorithm and expiry; carries only the user id.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "check_bearer")]
pub struct BearerAuth(pub UserId);

async fn check_bearer(req: &Request, bearer: Bearer) -> poem::Result<UserId> {
    let app = req.data::<Adiuva>().ok_or_else(|| {
        poem::Error::from_string(
            "Adiuva missing from request data",
            poem::http::StatusCode::INTERNAL_SERVER_ERROR,
        )
    })?;
    app.auth()
        .verify_access_token(&bearer.token)
        .map_err(|e| ApiError::from(e).into())
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
