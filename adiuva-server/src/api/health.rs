//! `GET /health`.

use adiuva_core::Adiuva;
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;

/// Whether a part answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum HealthStatus {
    /// It answers.
    Ok,
    /// It does not answer.
    Unavailable,
}

/// Service health.
#[derive(Debug, Object)]
pub struct Health {
    /// `ok`, or `unavailable` when the database does not answer.
    pub status: HealthStatus,
    /// Server version.
    pub version: String,
    /// `ok` or `unavailable`.
    pub database: HealthStatus,
}

/// Health responses.
#[derive(ApiResponse)]
pub enum HealthResponse {
    /// Everything answers.
    #[oai(status = 200)]
    Ok(Json<Health>),
    /// The database does not answer.
    #[oai(status = 503)]
    Unavailable(Json<Health>),
}

/// Liveness.
pub struct HealthApi;

#[OpenApi]
impl HealthApi {
    /// Server status and version; checks that the database answers.
    #[oai(
        path = "/health",
        method = "get",
        tag = "ApiTags::System",
        operation_id = "health"
    )]
    async fn health(&self, app: Data<&Adiuva>) -> HealthResponse {
        let version = env!("CARGO_PKG_VERSION").to_owned();
        match app.database().ping().await {
            Ok(()) => HealthResponse::Ok(Json(Health {
                status: HealthStatus::Ok,
                version,
                database: HealthStatus::Ok,
            })),
            Err(e) => {
                tracing::warn!(error = %e, "health check: database unavailable");
                HealthResponse::Unavailable(Json(Health {
                    status: HealthStatus::Unavailable,
                    version,
                    database: HealthStatus::Unavailable,
                }))
            }
        }
    }
}
