//! `/storage/vectors` (plan 8d): the cloud vector store. Each user searches only their
//! own items; payloads are client-encrypted and travel as standard base64.

use adiuva_core::Adiuva;
use adiuva_core::vector::service::{DEFAULT_TOP_K, VectorItemInput, VectorQuery};
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::{ApiTags, Base64Bytes, BearerAuth};
use crate::api_errors;

/// One item (plan `VectorItem`, plus the optional `vector`).
#[derive(Debug, Object)]
pub struct VectorItem {
    /// The client's id, 1-256 bytes, unique per user; an existing id is replaced.
    pub id: String,
    /// The client-encrypted payload (vector metadata, text…), standard base64, at most
    /// 24 KiB decoded. Returned with search hits.
    pub blob: Base64Bytes,
    /// SHA-256 of the payload bytes, 64 hex digits. Verified before anything is stored.
    pub checksum: String,
    /// The item's embedding, computed on the device (optionally rotated by a secret
    /// orthogonal matrix, which keeps cosine similarity). At most 2,000 numbers, finite,
    /// not all zero; every item of a user has the same length. Without it the server
    /// derives the plan's 32-dimensional vector from SHA-256 of the blob, which is **not
    /// semantic**: only identical ciphertexts match.
    #[oai(validator(max_items = 2000))]
    pub vector: Option<Vec<f32>>,
}

/// Items to store (plan `VectorUpsertRequest`).
#[derive(Debug, Object)]
pub struct VectorUpsertRequest {
    /// At most 100 items; all or nothing.
    #[oai(validator(max_items = 100))]
    pub vectors: Vec<VectorItem>,
}

/// How many items were stored.
#[derive(Debug, Object)]
pub struct VectorUpsertResponse {
    /// Items stored or replaced (an id sent twice counts once: the last wins).
    pub upserted: u64,
}

/// A search (plan `VectorSearchRequest`, plus `query_vector`). Send `query_vector`, or
/// `query_blob` (plan compatibility); with both, `query_vector` is used.
#[derive(Debug, Object)]
pub struct VectorSearchRequest {
    /// The query's embedding, in the same space (and rotation) as the stored vectors.
    #[oai(validator(max_items = 2000))]
    pub query_vector: Option<Vec<f32>>,
    /// Plan compatibility: a ciphertext whose SHA-256-derived vector is compared. Finds
    /// items stored from the identical blob; scores are otherwise meaningless.
    pub query_blob: Option<Base64Bytes>,
    /// How many results, 1 to 100 (default 10). Optional, and so not declared with a
    /// schema `default`: generators make a field with a default required.
    #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
    pub top_k: Option<u32>,
}

/// One hit (plan `VectorSearchResult`).
#[derive(Debug, Object)]
pub struct VectorSearchResult {
    /// The item's id.
    pub id: String,
    /// Cosine similarity in [-1, 1]; higher is closer.
    pub score: f32,
    /// The item's payload, standard base64.
    pub blob: Base64Bytes,
}

/// Hits, best first; equal scores by id (plan `VectorSearchResponse`).
#[derive(Debug, Object)]
pub struct VectorSearchResponse {
    /// At most `top_k`.
    pub results: Vec<VectorSearchResult>,
}

/// Ids to delete.
#[derive(Debug, Object)]
pub struct VectorDeleteRequest {
    /// At most 1,000 ids; unknown ones are ignored.
    #[oai(validator(max_items = 1000))]
    pub ids: Vec<String>,
}

/// Deleted.
#[derive(Debug, Object)]
pub struct VectorDeleteResponse {
    /// Always true.
    pub ok: bool,
    /// How many of the ids existed.
    pub deleted: u64,
}

api_errors!(
    /// Errors of storing vectors.
    VectorWriteError {
        400 => ChecksumMismatch [checksum_mismatch]: "`checksum_mismatch`: an item's checksum is not the SHA-256 of its blob; nothing was stored.",
        401 => Unauthorized [unauthorized]: "Missing or invalid access token.",
        403 => Forbidden [tier_required, quota_exceeded]: "`tier_required` (the free tier has no cloud storage) or `quota_exceeded`.",
        413 => PayloadTooLarge [payload_too_large]: "The body is over the size limit.",
        415 => UnsupportedMediaType [unsupported_media_type]: "The body is not JSON.",
        422 => Unprocessable [validation_error, malformed_json]: "Malformed JSON, invalid base64, too many items, a bad id, blob or vector, or a vector whose dimension differs from your stored ones.",
    }
    unavailable [vector_index_unavailable]
);

api_errors!(
    /// Errors of searching or deleting vectors.
    VectorReadError {
        401 => Unauthorized [unauthorized]: "Missing or invalid access token.",
        413 => PayloadTooLarge [payload_too_large]: "The body is over the size limit.",
        415 => UnsupportedMediaType [unsupported_media_type]: "The body is not JSON.",
        422 => Unprocessable [validation_error, malformed_json]: "Malformed JSON, no query, a bad `top_k`, too many ids, or a query vector whose dimension differs from your stored ones.",
    }
    unavailable [vector_index_unavailable]
);

/// The cloud vector store.
pub struct VectorsApi;

#[OpenApi(tag = "ApiTags::Storage")]
impl VectorsApi {
    /// Store or replace vector items.
    ///
    /// Checksums are verified in constant time before anything is stored. Needs a tier
    /// with cloud storage (pro and up); each item's payload plus 4 bytes per dimension
    /// counts against the same quota as records.
    #[oai(
        path = "/storage/vectors/upsert",
        method = "post",
        operation_id = "upsert_vectors"
    )]
    async fn upsert(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
        body: Json<VectorUpsertRequest>,
    ) -> Result<Json<VectorUpsertResponse>, VectorWriteError> {
        let items = body
            .0
            .vectors
            .into_iter()
            .map(|v| VectorItemInput {
                id: v.id,
                blob: v.blob.0,
                checksum: v.checksum,
                vector: v.vector,
            })
            .collect();
        let n = app.vectors()?.upsert(&auth.0, items).await?;
        Ok(Json(VectorUpsertResponse { upserted: n as u64 }))
    }

    /// Search your items by cosine similarity.
    ///
    /// Only the caller's items are searched. Exact on the embedded index; pgvector and
    /// Qdrant use HNSW (approximate).
    #[oai(
        path = "/storage/vectors/search",
        method = "post",
        operation_id = "search_vectors"
    )]
    async fn search(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
        body: Json<VectorSearchRequest>,
    ) -> Result<Json<VectorSearchResponse>, VectorReadError> {
        let body = body.0;
        let query = match (body.query_vector, body.query_blob) {
            (Some(v), _) => VectorQuery::Vector(v),
            (None, Some(b)) => VectorQuery::Blob(b.0),
            (None, None) => {
                return Err(adiuva_core::Error::validation(
                    "query_vector",
                    "is required (or `query_blob`, for plan-compatible clients)",
                )
                .into());
            }
        };
        let hits = app
            .vectors()?
            .search(
                auth.id(),
                query,
                body.top_k.map_or(DEFAULT_TOP_K, |k| k as usize),
            )
            .await?;
        Ok(Json(VectorSearchResponse {
            results: hits
                .into_iter()
                .map(|h| VectorSearchResult {
                    id: h.id,
                    score: h.score,
                    blob: Base64Bytes(h.payload),
                })
                .collect(),
        }))
    }

    /// Delete your items by id.
    #[oai(
        path = "/storage/vectors",
        method = "delete",
        operation_id = "delete_vectors"
    )]
    async fn delete(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
        body: Json<VectorDeleteRequest>,
    ) -> Result<Json<VectorDeleteResponse>, VectorReadError> {
        let n = app.vectors()?.delete(auth.id(), &body.0.ids).await?;
        Ok(Json(VectorDeleteResponse {
            ok: true,
            deleted: n as u64,
        }))
    }
}
