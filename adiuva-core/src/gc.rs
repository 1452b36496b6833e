//! `adiuva storage gc`: finds the bytes no row points at.
//!
//! Two kinds of leftovers exist, both only after a crash (or a failed delete, which is
//! logged): a blob whose row was never written, was switched away from, or was deleted
//! (a record's new or old version, a backup of an upload that lost, of a deleted row or
//! of a deleted user), and an unfinished upload the blob store keeps outside any key
//! (a local staging file). The first kind is found by difference — every key the store
//! lists minus [`BlobKeyRepo::referenced_blob_keys`], one repository method that spans
//! every table owning blobs — never by the shape of a key, so a new blob-owning table
//! needs no change here.
//!
//! **Safe while the server runs:** a blob being written has no row yet, and an upload
//! being streamed has a staging file. Neither is touched unless it is older than
//! `min_age` ([`DEFAULT_MIN_AGE_MS`], 24 h): longer than any upload or update can take.
//! The store is listed *before* the rows are read, so a blob whose row appears between
//! the two reads is seen as referenced.
//!
//! [`BlobKeyRepo::referenced_blob_keys`]: crate::ports::BlobKeyRepo::referenced_blob_keys

use std::collections::HashSet;
use std::sync::Arc;

use crate::domain::Millis;
use crate::error::Error;
use crate::ports::blob::BlobStore;
use crate::ports::{Clock, Database};
use crate::storage::blob_error;

/// Leftovers younger than this (24 h) are never collected: an upload or an update could
/// still be writing them. A backup streamed for longer than that would be at risk, so
/// the server's body timeouts must stay well below it.
pub const DEFAULT_MIN_AGE_MS: Millis = 24 * 60 * 60 * 1000;

/// What to collect.
#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    /// Only leftovers last written at least this long ago (ms).
    pub min_age_ms: Millis,
    /// Delete what was found (otherwise only report it).
    pub apply: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            min_age_ms: DEFAULT_MIN_AGE_MS,
            apply: false,
        }
    }
}

/// What a run found (and, with `apply`, deleted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blob keys no row points at, sorted.
    pub orphans: Vec<String>,
    /// Bytes held by `orphans`.
    pub orphan_bytes: u64,
    /// Unfinished uploads (ids as the store names them, e.g. a staging file's path), sorted.
    pub unfinished: Vec<String>,
    /// Bytes held by `unfinished`.
    pub unfinished_bytes: u64,
    /// Leftovers seen but younger than `min_age`, left alone.
    pub too_young: usize,
}

impl GcReport {
    /// Nothing to collect.
    pub fn is_empty(&self) -> bool {
        self.orphans.is_empty() && self.unfinished.is_empty()
    }
}

/// Garbage collection over the database and the blob store.
#[derive(Clone)]
pub struct GarbageCollector {
    db: Arc<dyn Database>,
    blobs: Arc<dyn BlobStore>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for GarbageCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GarbageCollector").finish_non_exhaustive()
    }
}

impl GarbageCollector {
    /// A collector over these ports.
    pub fn new(db: Arc<dyn Database>, blobs: Arc<dyn BlobStore>, clock: Arc<dyn Clock>) -> Self {
        Self { db, blobs, clock }
    }

    /// Finds (and with `apply`, deletes) every blob no row points at and every
    /// unfinished upload, of those older than `min_age_ms`.
    pub async fn run(&self, options: GcOptions) -> Result<GcReport, Error> {
        let cutoff = self
            .clock
            .now_ms()
            .saturating_sub(options.min_age_ms.max(0));
        // Listed first, rows read second: see the module docs.
        let listed = self.blobs.list("").await.map_err(blob_error)?;
        let unfinished = self.blobs.unfinished_uploads().await.map_err(blob_error)?;
        let referenced: HashSet<String> =
            self.db.referenced_blob_keys().await?.into_iter().collect();
        let mut report = GcReport::default();
        for blob in listed {
            if referenced.contains(&blob.key) {
                continue;
            }
            if blob.last_modified > cutoff {
                report.too_young += 1;
                continue;
            }
            report.orphan_bytes += blob.size;
            report.orphans.push(blob.key);
        }
        for upload in unfinished {
            if upload.last_modified > cutoff {
                report.too_young += 1;
                continue;
            }
            report.unfinished_bytes += upload.size;
            report.unfinished.push(upload.id);
        }
        report.orphans.sort();
        report.unfinished.sort();
        if options.apply {
            for key in &report.orphans {
                self.blobs.delete(key).await.map_err(blob_error)?;
            }
            for id in &report.unfinished {
                self.blobs
                    .discard_unfinished_upload(id)
                    .await
                    .map_err(blob_error)?;
            }
        }
        Ok(report)
    }
}
