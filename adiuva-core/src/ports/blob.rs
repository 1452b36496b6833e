//! Opaque bytes: client-encrypted records and backups. The server never inspects them.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::domain::Millis;

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

/// A blob as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    /// The key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was last written (ms since the epoch): `storage gc` leaves blobs younger
    /// than its grace period alone, since a blob being written has no row yet.
    pub last_modified: Millis,
}

/// An upload that never finished: bytes a crashed process left outside any key (a local
/// staging file). Never visible through `get` or `list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnfinishedUpload {
    /// Opaque to callers; give it back to
    /// [`discard_unfinished_upload`](BlobStore::discard_unfinished_upload). For a local
    /// directory it is the staging file's path relative to the directory.
    pub id: String,
    /// Bytes written so far.
    pub size: u64,
    /// The last write (ms since the epoch): an upload still running keeps it recent.
    pub last_modified: Millis,
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
/// - `list` returns every key under a prefix, in no particular order, with its age.
/// - A key's bytes, once `put` returned, are durable (local disk fsyncs the file and its
///   directory before the rename makes it visible; S3 acknowledges only stored parts).
///
/// Backends differ in visibility and in what a crash leaves: local disk renames
/// atomically and a killed upload leaves a staging file, which
/// [`unfinished_uploads`](BlobStore::unfinished_uploads) reports; S3 is read-after-write
/// consistent and a killed upload leaves an incomplete multipart upload that S3 itself
/// expires (a bucket lifecycle rule `AbortIncompleteMultipartUpload`), so it reports none.
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
    /// Every blob under `prefix` (empty = all).
    async fn list(&self, prefix: &str) -> Result<Vec<StoredBlob>, BlobError>;
    /// Uploads a crashed process left unfinished. Default: none (backends that leave
    /// nothing, or clean up by themselves).
    async fn unfinished_uploads(&self) -> Result<Vec<UnfinishedUpload>, BlobError> {
        Ok(Vec::new())
    }
    /// Removes an unfinished upload's bytes; a missing one is not an error. Only for
    /// uploads idle longer than any upload can run: a live upload's bytes would go.
    async fn discard_unfinished_upload(&self, id: &str) -> Result<(), BlobError> {
        let _ = id;
        Ok(())
    }
}
