//! `/storage/records` (plan 8c): client-encrypted records. Blobs travel as standard
//! base64 in JSON and come back as raw bytes with `X-Checksum` and `ETag`.

use adiuva_core::Adiuva;
use adiuva_core::ports::db::RecordMeta;
use futures::StreamExt as _;
use poem::Body;
use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::{Binary, Json};
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::{ApiTags, Base64Bytes, BearerAuth, Ok, path_id};
use crate::api_errors;

/// A new record (plan `StorageRecordCreate`).
#[derive(Debug, Object)]
pub struct StorageRecordCreate {
    /// The client's table: 1-64 letters, digits or underscores, not starting with a digit.
    pub table: String,
    /// The client-encrypted bytes, standard base64.
    pub blob: Base64Bytes,
    /// SHA-256 of the bytes, 64 hex digits. Verified before anything is stored.
    pub checksum: String,
}

/// New bytes for a record (plan `StorageRecordUpdate`).
#[derive(Debug, Object)]
pub struct StorageRecordUpdate {
    /// The client-encrypted bytes, standard base64.
    pub blob: Base64Bytes,
    /// SHA-256 of the bytes, 64 hex digits.
    pub checksum: String,
}

/// A created record.
#[derive(Debug, Object)]
pub struct RecordCreated {
    /// UUID.
    pub id: String,
    /// ms since the epoch.
    pub created_at: i64,
}

/// Record metadata (plan `RecordMeta`), never the blob.
#[derive(Debug, Object)]
pub struct RecordMetaOut {
    /// UUID.
    pub id: String,
    /// The client's table.
    pub table: String,
    /// SHA-256 of the blob.
    pub checksum: String,
    /// Blob size in bytes.
    pub size_bytes: i64,
    /// ms since the epoch.
    pub created_at: i64,
    /// ms since the epoch.
    pub updated_at: i64,
}

impl From<RecordMeta> for RecordMetaOut {
    fn from(m: RecordMeta) -> Self {
        Self {
            id: m.id.to_string(),
            table: m.table,
            checksum: m.checksum,
            size_bytes: m.size_bytes,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

/// The record's bytes.
#[derive(ApiResponse)]
pub enum RecordDownload {
    /// The client-encrypted bytes as stored.
    #[oai(status = 200, content_type = "application/octet-stream")]
    Ok(
        Binary<Body>,
        /// SHA-256 of the bytes.
        #[oai(header = "X-Checksum")]
        String,
        /// The checksum, quoted: changes whenever the bytes do.
        #[oai(header = "ETag")]
        String,
    ),
    /// `If-None-Match` names the record's current `ETag`: the bytes the client holds are
    /// still the record's. No body.
    #[oai(status = 304)]
    NotModified(
        /// The current `ETag`.
        #[oai(header = "ETag")]
        String,
    ),
}

/// The record's `ETag`: its checksum, quoted.
fn etag(checksum: &str) -> String {
    format!("\"{checksum}\"")
}

/// Whether an `If-None-Match` header names `etag` (RFC 9110 §13.1.2: a list of entity
/// tags or `*`, compared weakly, so `W/"…"` matches too).
fn none_match(header: &str, etag: &str) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

api_errors!(
    /// Errors of creating a record.
    RecordCreateError {
        400 => ChecksumMismatch [checksum_mismatch]: "`checksum_mismatch`: the checksum is not the SHA-256 of the blob; nothing was stored.",
        401 => Unauthorized [unauthorized]: "Missing or invalid access token.",
        403 => Forbidden [tier_required, quota_exceeded]: "`tier_required` (the free tier has no cloud storage) or `quota_exceeded`.",
        413 => PayloadTooLarge [payload_too_large]: "The body is over the size limit.",
        415 => UnsupportedMediaType [unsupported_media_type]: "The body is not JSON.",
        422 => Unprocessable [validation_error, malformed_json]: "Malformed JSON, invalid base64, a bad table name or checksum.",
    }
    unavailable [blob_store_unavailable]
);

api_errors!(
    /// Errors of replacing a record's bytes.
    RecordUpdateError {
        400 => ChecksumMismatch [checksum_mismatch]: "`checksum_mismatch`: the checksum is not the SHA-256 of the blob; nothing was stored.",
        401 => Unauthorized [unauthorized]: "Missing or invalid access token.",
        403 => Forbidden [tier_required, quota_exceeded]: "`tier_required` (the free tier has no cloud storage) or `quota_exceeded`.",
        404 => NotFound [not_found]: "No such record of yours.",
        409 => Conflict [conflict]: "Other updates of this record kept winning the race; nothing was changed, try again.",
        413 => PayloadTooLarge [payload_too_large]: "The body is over the size limit.",
        415 => UnsupportedMediaType [unsupported_media_type]: "The body is not JSON.",
        422 => Unprocessable [validation_error, malformed_json]: "Malformed JSON, invalid base64 or a bad checksum.",
    }
    unavailable [blob_store_unavailable]
);

api_errors!(
    /// Errors of listing records.
    RecordListError {
        401 => Unauthorized [unauthorized]: "Missing or invalid access token.",
        422 => Unprocessable [validation_error]: "A bad table name or paging parameter.",
    }
    unavailable [blob_store_unavailable]
);

api_errors!(
    /// Errors of downloading a record.
    RecordGetError {
        401 => Unauthorized [unauthorized]: "Missing or invalid access token.",
        404 => NotFound [not_found]: "No such record of yours.",
        409 => Conflict [conflict]: "The record was replaced too often while it was read; try again.",
    }
    unavailable [blob_store_unavailable]
);

api_errors!(
    /// Errors of deleting a record.
    RecordDeleteError {
        401 => Unauthorized [unauthorized]: "Missing or invalid access token.",
        404 => NotFound [not_found]: "No such record of yours.",
    }
    unavailable [blob_store_unavailable]
);

/// Cloud records.
pub struct StorageApi;

#[OpenApi(tag = "ApiTags::Storage")]
impl StorageApi {
    /// Store a client-encrypted record.
    ///
    /// The checksum is verified in constant time before anything is stored. Needs a tier
    /// with cloud storage (pro and up); the user's stored bytes count against its quota.
    #[oai(
        path = "/storage/records",
        method = "post",
        operation_id = "create_record"
    )]
    async fn create(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
        body: Json<StorageRecordCreate>,
    ) -> Result<Json<RecordCreated>, RecordCreateError> {
        let body = body.0;
        let meta = app
            .records()?
            .create(&auth.0, &body.table, body.blob.0, &body.checksum)
            .await?;
        Ok(Json(RecordCreated {
            id: meta.id.to_string(),
            created_at: meta.created_at,
        }))
    }

    /// List record metadata, newest first (never blobs).
    #[oai(
        path = "/storage/records",
        method = "get",
        operation_id = "list_records"
    )]
    async fn list(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
        /// Only this table.
        table: Query<Option<String>>,
        /// Page, from 1.
        #[oai(default = "default_page", validator(minimum(value = "1")))]
        page: Query<u64>,
        /// Page size, 1 to 200.
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "200"))
        )]
        limit: Query<u64>,
    ) -> Result<Json<Vec<RecordMetaOut>>, RecordListError> {
        let rows = app
            .records()?
            .list(auth.id(), table.0.as_deref(), page.0, limit.0)
            .await?;
        Ok(Json(rows.into_iter().map(Into::into).collect()))
    }

    /// Download a record's bytes.
    #[oai(
        path = "/storage/records/:id",
        method = "get",
        operation_id = "get_record"
    )]
    async fn get(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
        id: Path<String>,
        /// `ETag`s of copies the client holds: a match answers 304 without the bytes.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> Result<RecordDownload, RecordGetError> {
        let records = app.records()?;
        let id = path_id(&id.0, "record")?;
        if let Some(header) = if_none_match.0.as_deref() {
            // Only the row is read: an unchanged record costs no blob read.
            let current = etag(&records.meta(auth.id(), id).await?.checksum);
            if none_match(header, &current) {
                return Ok(RecordDownload::NotModified(current));
            }
        }
        let (meta, mut stream) = records.download(auth.id(), id).await?;
        // Records are small (bounded by the JSON body limit): answer with one
        // Content-Length body. A chunked stream of small writes meets delayed ACKs and
        // costs ~40 ms a request on loopback.
        let mut bytes = Vec::with_capacity(usize::try_from(meta.size_bytes).unwrap_or(0));
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                adiuva_core::Error::internal(format!("reading a record's blob: {e}"))
            })?;
            bytes.extend_from_slice(&chunk);
        }
        let body = Body::from_vec(bytes);
        let etag = etag(&meta.checksum);
        Ok(RecordDownload::Ok(Binary(body), meta.checksum, etag))
    }

    /// Replace a record's bytes.
    #[oai(
        path = "/storage/records/:id",
        method = "put",
        operation_id = "update_record"
    )]
    async fn update(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
        id: Path<String>,
        body: Json<StorageRecordUpdate>,
    ) -> Result<Json<Ok>, RecordUpdateError> {
        let body = body.0;
        app.records()?
            .update(
                &auth.0,
                path_id(&id.0, "record")?,
                body.blob.0,
                &body.checksum,
            )
            .await?;
        Ok(Json(Ok::yes()))
    }

    /// Delete a record and its bytes.
    #[oai(
        path = "/storage/records/:id",
        method = "delete",
        operation_id = "delete_record"
    )]
    async fn delete(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
        id: Path<String>,
    ) -> Result<Json<Ok>, RecordDeleteError> {
        app.records()?
            .delete(auth.id(), path_id(&id.0, "record")?)
            .await?;
        Ok(Json(Ok::yes()))
    }
}

fn default_page() -> u64 {
    1
}

fn default_limit() -> u64 {
    50
}

#[cfg(test)]
mod tests {
    use super::none_match;

    #[test]
    fn if_none_match_lists_wildcards_and_weak_tags() {
        let tag = "\"abc\"";
        assert!(none_match("\"abc\"", tag));
        assert!(none_match("\"x\", W/\"abc\"", tag));
        assert!(none_match("*", tag));
        assert!(!none_match("\"abd\"", tag));
        assert!(!none_match("abc", tag), "an unquoted tag is not the tag");
        assert!(!none_match("", tag));
    }
}
