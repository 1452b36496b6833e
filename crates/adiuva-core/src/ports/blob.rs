//! Opaque bytes: client-encrypted records and backups. The server never inspects them.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

/// What a blob store can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// No blob under that key.
    #[error("blob not found")]
    NotFound,
    /// The key is not acceptable to the store (empty, `..`, absolute).
    #[error("invalid blob key: {0}")]
    InvalidKey(String),
    /// The body stream supplied to `put` failed; nothing was stored.
    #[error("upload aborted: {0}")]
    Aborted(String),
    /// The store cannot be reached.
    #[error("blob store unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

/// A stream of chunks, as uploaded or downloaded.
pub type ByteStream = BoxStream<'static, Result<Bytes, BlobError>>;

/// What is known about a stored blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// The key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// The client's checksum, kept in the blob's metadata.
    pub checksum: Option<String>,
}

/// A key/value store of opaque blobs.
///
/// Contract:
/// - Keys are `/`-separated relative paths of safe segments (`{user_id}/{table}/{id}`).
/// - `put` consumes the stream to the end and only then makes the blob visible, whole:
///   readers see the old blob or the new one, never a prefix. If the stream yields an
///   error, nothing is stored and any partial upload is cleaned up (a local temp file is
///   removed, an S3 multipart upload aborted).
/// - `put` holds at most a few chunks in memory: a 400 MB body must not be buffered.
/// - `delete` is idempotent: a missing key is not an error.
/// - `list` returns every key under a prefix, in no particular order.
///
/// Backends differ in visibility only: local disk renames atomically; S3 is
/// read-after-write consistent.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Stores the stream under `key`, with `checksum` in the blob's metadata.
    async fn put(
        &self,
        key: &str,
        body: ByteStream,
        checksum: Option<&str>,
    ) -> Result<BlobInfo, BlobError>;
    /// Streams the blob.
    async fn get(&self, key: &str) -> Result<(BlobInfo, ByteStream), BlobError>;
    /// Deletes the blob if present.
    async fn delete(&self, key: &str) -> Result<(), BlobError>;
    /// Every key under `prefix` (empty = all).
    async fn list(&self, prefix: &str) -> Result<Vec<String>, BlobError>;
}
