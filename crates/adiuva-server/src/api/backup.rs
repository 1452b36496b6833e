//! `/backup` (plan 8e): streamed, client-encrypted backups.

use adiuva_core::Adiuva;
use adiuva_core::backup::BackupUpload;
use adiuva_core::ports::blob::BlobError;
use adiuva_core::ports::db::BackupMeta;
use futures::{StreamExt as _, TryStreamExt as _};
use poem::web::Data;
use poem::{Body, Request};
use poem_openapi::param::{Header, Path};
use poem_openapi::payload::{Binary, Json};
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::{ApiTags, BearerAuth, Ok, path_id};
use crate::api_errors;

/// One backup (plan `BackupMetadata`, plus `id`, `size_bytes`, `created_at`).
#[derive(Debug, Object)]
pub struct BackupMetadata {
    /// UUID, for `DELETE /backup/{id}`.
    pub id: String,
    /// The client's backup format version.
    pub version: i64,
    /// The client's timestamp, ms since the epoch.
    pub timestamp: i64,
    /// SHA-256 of the bytes.
    pub checksum: String,
    /// Always 1: a backup is stored as one streamed object.
    pub chunk_count: i64,
    /// Size in bytes.
    pub size_bytes: i64,
    /// Upload time, ms since the epoch.
    pub created_at: i64,
}

impl From<BackupMeta> for BackupMetadata {
    fn from(m: BackupMeta) -> Self {
        Self {
            id: m.id.to_string(),
            version: m.version,
            timestamp: m.timestamp,
            checksum: m.checksum,
            chunk_count: 1,
            size_bytes: m.size_bytes,
            created_at: m.created_at,
        }
    }
}

/// The latest backup.
#[derive(ApiResponse)]
pub enum BackupDownload {
    /// The newest backup's bytes.
    #[oai(status = 200, content_type = "application/octet-stream")]
    Ok(
        Binary<Body>,
        /// Format version.
        #[oai(header = "X-Backup-Version")]
        i64,
        /// The client's timestamp (ms).
        #[oai(header = "X-Backup-Timestamp")]
        i64,
        /// SHA-256 of the bytes.
        #[oai(header = "X-Backup-Checksum")]
        String,
        /// The backup's timestamp as an HTTP date.
        #[oai(header = "Last-Modified")]
        String,
    ),
    /// Not newer than `If-Modified-Since`.
    #[oai(status = 304)]
    NotModified,
}

api_errors!(
    /// Errors of uploading a backup.
    BackupUploadError {
        400 => BadRequest: "`checksum_mismatch` (X-Backup-Checksum is not the SHA-256 of the body) or `upload_incomplete`; nothing was kept.",
        401 => Unauthorized: "Missing or invalid access token.",
        403 => Forbidden: "`tier_required` (the free tier has no backups) or `quota_exceeded`.",
        409 => Conflict: "A backup with this timestamp exists.",
        422 => Unprocessable: "A missing or malformed X-Backup-* header.",
    }
);

api_errors!(
    /// Errors of reading or deleting backups.
    BackupReadError {
        401 => Unauthorized: "Missing or invalid access token.",
        404 => NotFound: "No such backup of yours (or none at all).",
    }
);

/// Backups.
pub struct BackupApi;

#[OpenApi(tag = "ApiTags::Backup")]
impl BackupApi {
    /// Upload a backup (raw body).
    ///
    /// Streamed to storage while it is hashed: never held whole in memory. A wrong
    /// checksum, an over-quota body or a cut-off upload keeps nothing. Keeps the newest
    /// backups per user (10 by default) and deletes older ones.
    #[oai(path = "/backup", method = "put", operation_id = "put_backup")]
    // One parameter per header: that is what documents them in the OpenAPI spec.
    #[allow(clippy::too_many_arguments)]
    async fn put(
        &self,
        app: Data<&Adiuva>,
        req: &Request,
        auth: BearerAuth,
        /// The client's backup format version.
        #[oai(name = "X-Backup-Version")]
        version: Header<i64>,
        /// The client's timestamp, ms since the epoch; also the backup's key.
        #[oai(name = "X-Backup-Timestamp")]
        timestamp: Header<i64>,
        /// SHA-256 of the body, 64 hex digits.
        #[oai(name = "X-Backup-Checksum")]
        checksum: Header<String>,
        body: Binary<Body>,
    ) -> Result<Json<Ok>, BackupUploadError> {
        let declared_len = req
            .headers()
            .get(poem::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let stream = body
            .0
            .into_bytes_stream()
            .map_err(|e| BlobError::Aborted(e.to_string()))
            .boxed();
        let up = BackupUpload {
            version: version.0,
            timestamp: timestamp.0,
            checksum: checksum.0,
            declared_len,
        };
        app.backups()?.upload(auth.0, up, stream).await?;
        Ok(Json(Ok::yes()))
    }

    /// Download the latest backup.
    ///
    /// With `If-Modified-Since`, answers 304 unless the latest backup's timestamp is later.
    #[oai(path = "/backup", method = "get", operation_id = "get_backup")]
    async fn get(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
        /// An HTTP date; compared with the backup's timestamp at one-second precision.
        #[oai(name = "If-Modified-Since")]
        if_modified_since: Header<Option<String>>,
    ) -> Result<BackupDownload, BackupReadError> {
        let backups = app.backups()?;
        let meta = backups.latest(auth.0).await?;
        let modified_secs = meta.timestamp.div_euclid(1000);
        let since = if_modified_since
            .0
            .as_deref()
            .and_then(|v| httpdate::parse_http_date(v).ok());
        if let Some(since) = since {
            let since_secs = since
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            if modified_secs <= since_secs {
                return Ok(BackupDownload::NotModified);
            }
        }
        let last_modified = httpdate::fmt_http_date(
            std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(u64::try_from(modified_secs).unwrap_or(0)),
        );
        let stream = backups.open(&meta).await?;
        let body = Body::from_bytes_stream(stream.map_err(std::io::Error::other));
        Ok(BackupDownload::Ok(
            Binary(body),
            meta.version,
            meta.timestamp,
            meta.checksum,
            last_modified,
        ))
    }

    /// List backups, newest first (no blobs).
    #[oai(
        path = "/backup/history",
        method = "get",
        operation_id = "backup_history"
    )]
    async fn history(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
    ) -> Result<Json<Vec<BackupMetadata>>, BackupReadError> {
        let all = app.backups()?.history(auth.0).await?;
        Ok(Json(all.into_iter().map(Into::into).collect()))
    }

    /// Delete one backup and its bytes.
    #[oai(
        path = "/backup/:id",
        method = "delete",
        operation_id = "delete_backup"
    )]
    async fn delete(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
        id: Path<String>,
    ) -> Result<Json<Ok>, BackupReadError> {
        app.backups()?
            .delete(auth.0, path_id(&id.0, "backup")?)
            .await?;
        Ok(Json(Ok::yes()))
    }
}
