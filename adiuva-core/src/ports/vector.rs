//! Namespaced vector search over client-encrypted payloads.

use async_trait::async_trait;
use bytes::Bytes;

/// What a vector index can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VectorError {
    /// The vector's length differs from the namespace's dimension.
    #[error("dimension mismatch: the namespace holds {expected}-dimensional vectors, got {got}")]
    DimensionMismatch {
        /// The namespace's dimension.
        expected: usize,
        /// What was sent.
        got: usize,
    },
    /// A vector that cannot be compared (empty, NaN, all zeros).
    #[error("invalid vector: {0}")]
    Invalid(String),
    /// The index cannot be reached.
    #[error("vector index unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

/// One stored point.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorPoint {
    /// The client's id, unique within the namespace.
    pub id: String,
    /// The vector.
    pub vector: Vec<f32>,
    /// Opaque payload returned with hits (client-encrypted).
    pub payload: Bytes,
}

/// One search hit.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorHit {
    /// The point's id.
    pub id: String,
    /// Cosine similarity in [-1, 1].
    pub score: f32,
    /// The point's payload.
    pub payload: Bytes,
}

/// A filter on ids (the only metadata the server may see).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VectorFilter {
    /// When set, only these ids are candidates.
    pub ids: Option<Vec<String>>,
}

/// A namespaced vector index.
///
/// Contract (checked for every adapter by `adiuva_core::testing::vectors::run_all`):
/// - Similarity is **cosine**; scores lie in [-1, 1] (1 = same direction).
/// - Results are ordered by score descending, then id ascending; at most `top_k`.
/// - `upsert` replaces a point with the same id (vector and payload); a batch naming an
///   id twice keeps the last one; a batch is all-or-nothing with respect to validation.
/// - A namespace's dimension is fixed by its first write; a vector (stored or queried)
///   of another length is [`VectorError::DimensionMismatch`]. A namespace with no points
///   (never written, emptied, or deleted) takes any dimension. Backends whose
///   dimension is fixed per deployment (Pinecone: per index) report that one instead.
/// - Empty, non-finite or all-zero vectors are [`VectorError::Invalid`].
/// - Namespaces never see each other's points, ids or dimensions.
/// - Exact backends return the true top-k; ANN backends (HNSW) may miss some, and say so
///   in their docs.
#[async_trait]
pub trait VectorIndex: Send + Sync {
    /// Inserts or replaces points; returns how many.
    async fn upsert(&self, namespace: &str, points: Vec<VectorPoint>)
    -> Result<usize, VectorError>;
    /// The `top_k` nearest points to `query`.
    async fn search(
        &self,
        namespace: &str,
        query: &[f32],
        top_k: usize,
        filter: &VectorFilter,
    ) -> Result<Vec<VectorHit>, VectorError>;
    /// Deletes these ids (missing ones are ignored); returns how many existed.
    async fn delete(&self, namespace: &str, ids: &[String]) -> Result<usize, VectorError>;
    /// Drops the namespace and its dimension.
    async fn delete_namespace(&self, namespace: &str) -> Result<(), VectorError>;
    /// A short name for logs and `doctor` (`embedded`, `pgvector`, `qdrant`, …).
    fn name(&self) -> &'static str;
}
