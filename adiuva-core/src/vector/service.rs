//! The cloud vector store (plan 8d): each user's items live in the namespace named by
//! their id; payloads are client-encrypted and never read.
//!
//! **What is searched.** A client should send `vector` (an embedding it computed, which
//! it may rotate with a secret orthogonal matrix: rotations keep cosine similarity, so
//! search works and the server holds only rotated vectors). Items sent without one get
//! the plan's compatibility vector, [`hash_vector`] of the ciphertext, whose scores carry
//! no meaning.
//!
//! **Accounting.** Every item's stored bytes (payload + 4 bytes per dimension) are
//! recorded in the database with the quota check in the same statement, before the
//! index is written; a failed index write puts the old sizes back. So the quota holds
//! whatever the index backend, and the index never holds an item the quota refused.

use std::sync::Arc;

use bytes::Bytes;

use super::{HASH_DIM, dedup_last, hash_vector};
use crate::auth::Principal;
use crate::domain::{UserId, VectorId};
use crate::error::Error;
use crate::ports::Clock;
use crate::ports::Database;
use crate::ports::vector::{VectorError, VectorFilter, VectorHit, VectorIndex, VectorPoint};
use crate::storage::{quota_exceeded, verified};
use crate::tiers::{Feature, TierManager};

/// Most items per upsert.
pub const MAX_BATCH: usize = 100;
/// Most ids per delete.
pub const MAX_DELETE: usize = 1000;
/// Largest `top_k`.
pub const MAX_TOP_K: usize = 100;
/// Default `top_k` (the plan's).
pub const DEFAULT_TOP_K: usize = 10;
/// Largest payload per item, in bytes. Pinecone keeps payloads in metadata limited to
/// 40 KB per vector; 24 KiB is 32 KiB as base64, which fits, on every backend alike.
pub const MAX_PAYLOAD: usize = 24 * 1024;
/// Largest dimension: pgvector's HNSW index stops at 2,000.
pub const MAX_DIM: usize = 2000;
/// Longest item id, in bytes.
pub const MAX_ID_LEN: usize = VectorId::MAX_BYTES;

/// One item to store, as the API received it.
#[derive(Debug, Clone)]
pub struct VectorItemInput {
    /// The client's id, unique per user.
    pub id: String,
    /// Client-encrypted payload.
    pub blob: Bytes,
    /// SHA-256 of `blob`, hex.
    pub checksum: String,
    /// The embedding; `None` → the plan's non-semantic hash vector.
    pub vector: Option<Vec<f32>>,
}

/// What a search is for: a real query vector, or (plan compatibility) the ciphertext of
/// a query whose hash vector is compared.
#[derive(Debug, Clone)]
pub enum VectorQuery {
    /// An embedding of the query, in the same space as the stored vectors.
    Vector(Vec<f32>),
    /// `query_blob`: only finds items stored from the very same ciphertext.
    Blob(Bytes),
}

/// The vector store for one deployment.
#[derive(Clone)]
pub struct VectorService {
    db: Arc<dyn Database>,
    index: Arc<dyn VectorIndex>,
    clock: Arc<dyn Clock>,
    tiers: TierManager,
}

impl std::fmt::Debug for VectorService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorService")
            .field("index", &self.index.name())
            .finish_non_exhaustive()
    }
}

/// Maps the index's errors to the domain's: caller mistakes are 422, an unreachable
/// backend is 503.
pub fn vector_error(e: VectorError) -> Error {
    match e {
        VectorError::DimensionMismatch { expected, got } => Error::Validation {
            field: "vector".into(),
            message: format!(
                "has {got} dimensions, but your vector store holds {expected}-dimensional vectors (items sent without a vector use the {HASH_DIM}-dimensional compatibility vector); delete your items to change dimension"
            ),
        },
        VectorError::Invalid(why) => Error::validation("vector", why),
        VectorError::Unavailable(why) => {
            // The cause is for the log; the client gets no backend text.
            tracing::warn!(cause = %why, "vector index unavailable");
            Error::Unavailable {
                code: "vector_index_unavailable",
                detail: "the vector index is unavailable; retry later".into(),
            }
        }
        other => Error::internal(other),
    }
}

fn check_vector(field: &'static str, v: &[f32]) -> Result<(), Error> {
    if v.len() > MAX_DIM {
        return Err(Error::validation(
            field,
            format!("has {} dimensions; at most {MAX_DIM} are allowed", v.len()),
        ));
    }
    super::exact::validate(v).map_err(|e| match e {
        VectorError::Invalid(why) => Error::validation(field, why),
        other => vector_error(other),
    })
}

fn namespace(user: UserId) -> String {
    user.to_string()
}

impl VectorService {
    /// The vector store over these ports.
    pub fn new(
        db: Arc<dyn Database>,
        index: Arc<dyn VectorIndex>,
        clock: Arc<dyn Clock>,
        tiers: TierManager,
    ) -> Self {
        Self {
            db,
            index,
            clock,
            tiers,
        }
    }

    /// The index backend's name.
    pub fn backend(&self) -> &'static str {
        self.index.name()
    }

    /// Verifies and stores items (replacing ones with the same id); returns how many.
    /// All-or-nothing: one bad checksum, vector or id refuses the whole batch.
    /// The quota is the one of the tier `who` was read with.
    pub async fn upsert(
        &self,
        who: &Principal,
        items: Vec<VectorItemInput>,
    ) -> Result<usize, Error> {
        let user = who.id();
        if items.len() > MAX_BATCH {
            return Err(Error::validation(
                "vectors",
                format!(
                    "holds {} items; at most {MAX_BATCH} per request",
                    items.len()
                ),
            ));
        }
        let quota = self
            .tiers
            .quota_bytes_on(who.user.tier, Feature::CloudStorageGb)?;
        if items.is_empty() {
            return Ok(0);
        }
        let mut points = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            VectorId::parse(format!("vectors[{i}].id"), &item.id)?;
            if item.blob.len() > MAX_PAYLOAD {
                return Err(Error::validation(
                    format!("vectors[{i}].blob"),
                    format!("is {} bytes; at most {MAX_PAYLOAD}", item.blob.len()),
                ));
            }
            verified(&item.blob, &item.checksum).map_err(|e| match e {
                Error::BadRequest { code, .. } => Error::BadRequest {
                    code,
                    detail: format!(
                        "item '{}': the checksum is not the SHA-256 of the blob as sent; nothing was stored",
                        item.id
                    ),
                },
                other => other,
            })?;
            let vector = match item.vector {
                Some(v) => {
                    check_vector("vector", &v)?;
                    v
                }
                None => hash_vector(&item.blob),
            };
            points.push(VectorPoint {
                id: item.id,
                vector,
                payload: item.blob,
            });
        }
        let points = dedup_last(points);
        if let Some(bad) = points
            .iter()
            .find(|p| p.vector.len() != points[0].vector.len())
        {
            return Err(Error::validation(
                "vectors",
                format!(
                    "mixes {}- and {}-dimensional vectors (an item without a vector has {HASH_DIM}); one request, one dimension",
                    points[0].vector.len(),
                    bad.vector.len()
                ),
            ));
        }
        let sizes: Vec<(String, i64)> = points
            .iter()
            .map(|p| (p.id.clone(), (p.payload.len() + 4 * p.vector.len()) as i64))
            .collect();
        let previous = self
            .db
            .reserve_vector_items(user, &sizes, quota, self.clock.now_ms())
            .await?
            .ok_or_else(quota_exceeded)?;
        match self.index.upsert(&namespace(user), points).await {
            Ok(n) => Ok(n),
            Err(e) => {
                if let Err(undo) = self.db.restore_vector_items(user, &previous).await {
                    tracing::error!(error = %undo, "could not restore vector accounting after a failed index write");
                }
                Err(vector_error(e))
            }
        }
    }

    /// The user's `top_k` best items for `query`, best first. Reading needs no tier: a
    /// user who downgraded can still find and delete what they stored.
    pub async fn search(
        &self,
        user: UserId,
        query: VectorQuery,
        top_k: usize,
    ) -> Result<Vec<VectorHit>, Error> {
        if !(1..=MAX_TOP_K).contains(&top_k) {
            return Err(Error::validation(
                "top_k",
                format!("must be 1 to {MAX_TOP_K}"),
            ));
        }
        let query = match query {
            VectorQuery::Vector(v) => {
                check_vector("query_vector", &v)?;
                v
            }
            VectorQuery::Blob(b) => hash_vector(&b),
        };
        self.index
            .search(&namespace(user), &query, top_k, &VectorFilter::default())
            .await
            .map_err(|e| match e {
                VectorError::DimensionMismatch { expected, got } => Error::Validation {
                    field: "query_vector".into(),
                    message: format!(
                        "has {got} dimensions, but your vector store holds {expected}-dimensional vectors"
                    ),
                },
                other => vector_error(other),
            })
    }

    /// Deletes the user's items with these ids; returns how many existed.
    pub async fn delete(&self, user: UserId, ids: &[String]) -> Result<usize, Error> {
        if ids.len() > MAX_DELETE {
            return Err(Error::validation(
                "ids",
                format!("holds {} ids; at most {MAX_DELETE} per request", ids.len()),
            ));
        }
        if ids.is_empty() {
            return Ok(0);
        }
        for (i, id) in ids.iter().enumerate() {
            VectorId::parse(format!("ids[{i}]"), id)?;
        }
        // Index first: if it fails the item still exists and is still counted.
        let n = self
            .index
            .delete(&namespace(user), ids)
            .await
            .map_err(vector_error)?;
        self.db.release_vector_items(user, ids).await?;
        Ok(n)
    }

    /// Deletes everything the user stored (account deletion).
    pub async fn delete_all(&self, user: UserId) -> Result<(), Error> {
        self.index
            .delete_namespace(&namespace(user))
            .await
            .map_err(vector_error)?;
        self.db.release_all_vector_items(user).await?;
        Ok(())
    }

    /// The user's stored vector bytes (payloads + vectors).
    pub async fn stored_bytes(&self, user: UserId) -> Result<i64, Error> {
        Ok(self.db.vector_bytes(user).await?)
    }
}
