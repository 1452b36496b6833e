//! `/backup` (plan 8e): streamed, client-encrypted backups.

use adiuva_core::Adiuva;
use adiuva_core::backup::{BackupUpload, LatestBackup};
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
        /// The backup's timestamp as an HTTP date (absent for a timestamp an HTTP date
        /// cannot express, which uploads no longer accept).
        #[oai(header = "Last-Modified")]
        Option<String>,
    ),
    /// Not newer than `If-Modified-Since`.
    #[oai(status = 304)]
    NotModified,
}

api_errors!(
    /// Errors of uploading a backup.
    BackupUploadError {
        400 => BadRequest [checksum_mismatch, upload_incomplete]: "`checksum_mismatch` (X-Backup-Checksum is not the SHA-256 of the body) or `upload_incomplete`; nothing was kept.",
        401 => Unauthorized [unauthorized]: "Missing or invalid access token.",
        403 => Forbidden [tier_required, quota_exceeded]: "`tier_required` (the free tier has no backups) or `quota_exceeded`.",
        409 => Conflict [conflict]: "A backup with this timestamp exists, or another upload with it finished first; nothing of this upload was kept.",
        422 => Unprocessable [validation_error]: "A missing or malformed X-Backup-* header, or a timestamp outside 0..=253402300799999 (the end of year 9999).",
    }
    unavailable [blob_store_unavailable]
);

api_errors!(
    /// Errors of downloading the latest backup.
    BackupGetError {
        401 => Unauthorized [unauthorized]: "Missing or invalid access token.",
        404 => NotFound [not_found]: "You have no backup.",
        409 => Conflict [conflict]: "The backups were deleted too often while the latest was read; try again.",
    }
    unavailable [blob_store_unavailable]
);

api_errors!(
    /// Errors of listing backups.
    BackupHistoryError {
        401 => Unauthorized [unauthorized]: "Missing or invalid access token.",
    }
    unavailable [blob_store_unavailable]
);

api_errors!(
    /// Errors of deleting a backup.
    BackupDeleteError {
        401 => Unauthorized [unauthorized]: "Missing or invalid access token.",
        404 => NotFound [not_found]: "No such backup of yours.",
    }
    unavailable [blob_store_unavailable]
);

/// `ms` since the epoch as an HTTP date, or `None` when it has none (before 1970 or
/// after 9999, where `httpdate` would panic): a header is left out, never a panic.
fn http_date(ms: i64) -> Option<String> {
    /// 9999-12-31T23:59:59Z, the last second an HTTP date can name.
    const MAX_SECS: u64 = 253_402_300_799;
    let secs = u64::try_from(ms.div_euclid(1000))
        .ok()
        .filter(|s| *s <= MAX_SECS)?;
    Some(httpdate::fmt_http_date(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
    ))
}

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
        /// The client's timestamp, ms since the epoch, 0 to 253402300799999 (the end of
        /// year 9999); one backup per timestamp.
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
        app.backups()?.upload(&auth.0, up, stream).await?;
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
    ) -> Result<BackupDownload, BackupGetError> {
        // An unparseable date is ignored, as RFC 9110 §13.1.3 says (httpdate accepts
        // years 1970–9999 only, so parsing cannot overflow).
        let since = if_modified_since
            .0
            .as_deref()
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_secs()).ok());
        let (meta, stream) = match app.backups()?.download_latest(auth.id(), since).await? {
            LatestBackup::NotModified => return Ok(BackupDownload::NotModified),
            LatestBackup::Found(meta, stream) => (meta, stream),
        };
        let body = Body::from_bytes_stream(stream.map_err(std::io::Error::other));
        Ok(BackupDownload::Ok(
            Binary(body),
            meta.version,
            meta.timestamp,
            meta.checksum,
            http_date(meta.timestamp),
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
    ) -> Result<Json<Vec<BackupMetadata>>, BackupHistoryError> {
        let all = app.backups()?.history(auth.id()).await?;
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
    ) -> Result<Json<Ok>, BackupDeleteError> {
        app.backups()?
            .delete(auth.id(), path_id(&id.0, "backup")?)
            .await?;
        Ok(Json(Ok::yes()))
    }
}

#[cfg(test)]
mod tests {
    use super::http_date;

    #[test]
    fn http_dates_cover_the_accepted_range_and_never_panic() {
        assert_eq!(
            http_date(0).as_deref(),
            Some("Thu, 01 Jan 1970 00:00:00 GMT")
        );
        assert_eq!(
            http_date(adiuva_core::backup::MAX_TIMESTAMP_MS).as_deref(),
            Some("Fri, 31 Dec 9999 23:59:59 GMT")
        );
        for unformattable in [
            -1,
            adiuva_core::backup::MAX_TIMESTAMP_MS + 1,
            i64::MAX,
            i64::MIN,
        ] {
            assert_eq!(http_date(unformattable), None, "{unformattable}");
        }
    }
}
