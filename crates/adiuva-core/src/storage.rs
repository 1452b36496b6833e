//! Cloud records (plan 8c): client-encrypted blobs with metadata rows. The server checks
//! integrity and quota, never content.
//!
//! Write order keeps the invariant "no row without its blob": a new record's blob is
//! stored first and its row inserted after (a refused or failed insert deletes the blob);
//! an update changes the row first, under the quota, and then replaces the blob (if that
//! fails the row is put back). Deletion removes the row, then the blob. A crash between
//! the two steps can leave a blob without a row, which `adiuva storage gc` finds.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;
use uuid::Uuid;

use crate::domain::{Checksum, TableName, UserId};
use crate::error::Error;
use crate::ports::blob::{BlobError, BlobStore, ByteStream};
use crate::ports::db::RecordMeta;
use crate::ports::{Clock, Database};
use crate::tiers::{Feature, TierManager};

/// Largest page of a listing.
pub const MAX_PAGE_SIZE: u64 = 200;

/// Records for one deployment.
#[derive(Clone)]
pub struct RecordService {
    db: Arc<dyn Database>,
    tiers: TierManager,
    blobs: Arc<dyn BlobStore>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for RecordService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordService").finish_non_exhaustive()
    }
}

pub(crate) fn blob_error(e: BlobError) -> Error {
    match e {
        BlobError::NotFound => Error::NotFound("blob"),
        BlobError::Unavailable(why) => {
            // The cause is for the log; the client gets no backend text.
            tracing::warn!(cause = %why, "blob store unavailable");
            Error::Unavailable {
                code: "blob_store_unavailable",
                detail: "the blob store is unavailable; retry later".into(),
            }
        }
        other => Error::internal(other),
    }
}

pub(crate) fn verified(blob: &[u8], checksum: &str) -> Result<Checksum, Error> {
    let checksum = Checksum::parse(checksum)?;
    if !checksum.matches(blob) {
        return Err(Error::BadRequest {
            code: "checksum_mismatch",
            detail: "the checksum is not the SHA-256 of the blob as sent; nothing was stored"
                .into(),
        });
    }
    Ok(checksum)
}

/// Deletes a blob whose row was refused or removed; a failure is logged, not returned,
/// because the blob is then an orphan that `adiuva storage gc` finds.
pub(crate) async fn discard_blob(blobs: &dyn BlobStore, key: &str) {
    if let Err(e) = blobs.delete(key).await {
        tracing::warn!(blob_key = %key, error = %e, "could not delete a blob; `adiuva storage gc` will find it");
    }
}

fn one_chunk(bytes: Bytes) -> ByteStream {
    futures::stream::iter([Ok(bytes)]).boxed()
}

pub(crate) fn quota_exceeded() -> Error {
    Error::Forbidden {
        code: "quota_exceeded",
        detail: "this would exceed your tier's cloud storage quota; nothing was stored".into(),
    }
}

impl RecordService {
    /// Records over these ports.
    pub fn new(
        db: Arc<dyn Database>,
        blobs: Arc<dyn BlobStore>,
        clock: Arc<dyn Clock>,
        tiers: TierManager,
    ) -> Self {
        Self {
            db,
            tiers,
            blobs,
            clock,
        }
    }

    /// Stores a new record; returns its metadata.
    pub async fn create(
        &self,
        user: UserId,
        table: &str,
        blob: Bytes,
        checksum: &str,
    ) -> Result<RecordMeta, Error> {
        let table = TableName::parse(table)?;
        let checksum = verified(&blob, checksum)?;
        let quota = self
            .tiers
            .quota_bytes(user, Feature::CloudStorageGb)
            .await?;
        // The quota is checked once, atomically with the insert below: a record is at most
        // a JSON body, so writing its blob before a refusal costs little.
        let size = blob.len() as i64;
        let id = Uuid::now_v7();
        let now = self.clock.now_ms();
        let meta = RecordMeta {
            id,
            user_id: user,
            blob_key: format!("{user}/{}/{id}", table.as_str()),
            table: table.as_str().to_owned(),
            checksum: checksum.as_str().to_owned(),
            size_bytes: size,
            created_at: now,
            updated_at: now,
        };
        self.blobs
            .put(&meta.blob_key, one_chunk(blob), Some(&meta.checksum))
            .await
            .map_err(blob_error)?;
        match self.db.insert_record_within_quota(&meta, quota).await {
            Ok(true) => Ok(meta),
            Ok(false) => {
                self.discard_blob(&meta.blob_key).await;
                Err(quota_exceeded())
            }
            Err(e) => {
                self.discard_blob(&meta.blob_key).await;
                Err(e.into())
            }
        }
    }

    /// The user's record metadata, or `NotFound` (also for another user's id).
    pub async fn meta(&self, user: UserId, id: Uuid) -> Result<RecordMeta, Error> {
        self.db
            .record(user, id)
            .await?
            .ok_or(Error::NotFound("record"))
    }

    /// The record's metadata and its bytes as a stream.
    pub async fn download(
        &self,
        user: UserId,
        id: Uuid,
    ) -> Result<(RecordMeta, ByteStream), Error> {
        let meta = self.meta(user, id).await?;
        let (_, body) = self.blobs.get(&meta.blob_key).await.map_err(blob_error)?;
        Ok((meta, body))
    }

    /// The user's records, newest first; `page` counts from 1, `limit` is capped at
    /// [`MAX_PAGE_SIZE`].
    pub async fn list(
        &self,
        user: UserId,
        table: Option<&str>,
        page: u64,
        limit: u64,
    ) -> Result<Vec<RecordMeta>, Error> {
        let table = table.map(TableName::parse).transpose()?;
        let limit = limit.clamp(1, MAX_PAGE_SIZE);
        let offset = page.max(1).saturating_sub(1).saturating_mul(limit);
        Ok(self
            .db
            .list_records(user, table.as_ref().map(TableName::as_str), offset, limit)
            .await?)
    }

    /// Replaces a record's bytes.
    pub async fn update(
        &self,
        user: UserId,
        id: Uuid,
        blob: Bytes,
        checksum: &str,
    ) -> Result<RecordMeta, Error> {
        let old = self.meta(user, id).await?;
        let checksum = verified(&blob, checksum)?;
        let quota = self
            .tiers
            .quota_bytes(user, Feature::CloudStorageGb)
            .await?;
        let new = RecordMeta {
            checksum: checksum.as_str().to_owned(),
            size_bytes: blob.len() as i64,
            updated_at: self.clock.now_ms().max(old.updated_at),
            ..old.clone()
        };
        if !self.db.update_record_within_quota(&new, quota).await? {
            return Err(quota_exceeded());
        }
        if let Err(e) = self
            .blobs
            .put(&new.blob_key, one_chunk(blob), Some(&new.checksum))
            .await
        {
            // The old blob is intact (puts are all-or-nothing): put the old row back.
            if let Err(revert) = self.db.update_record_within_quota(&old, None).await {
                tracing::error!(record_id = %id, error = %revert, "could not restore a record row after a failed blob write");
            }
            return Err(blob_error(e));
        }
        Ok(new)
    }

    /// Deletes a record and its blob.
    pub async fn delete(&self, user: UserId, id: Uuid) -> Result<(), Error> {
        let meta = self.meta(user, id).await?;
        self.db
            .delete_record(user, id)
            .await
            .map_err(|e| match Error::from(e) {
                Error::NotFound(_) => Error::NotFound("record"),
                other => other,
            })?;
        self.discard_blob(&meta.blob_key).await;
        Ok(())
    }

    async fn discard_blob(&self, key: &str) {
        discard_blob(self.blobs.as_ref(), key).await;
    }

    /// Blobs in the store that no record or backup row points at; with `apply`, deletes
    /// them. Returns the orphans found. (Run it when no upload is in flight: a blob being
    /// written has no row yet.)
    pub async fn garbage_collect(&self, apply: bool) -> Result<Vec<String>, Error> {
        let known: std::collections::HashSet<String> =
            self.db.all_record_keys().await?.into_iter().collect();
        let mut orphans: Vec<String> = self
            .blobs
            .list("")
            .await
            .map_err(blob_error)?
            .into_iter()
            .filter(|k| {
                k.split('/').count() == 3 && !k.starts_with("_probe/") && !known.contains(k)
            })
            .collect();
        orphans.sort();
        if apply {
            for k in &orphans {
                self.blobs.delete(k).await.map_err(blob_error)?;
            }
        }
        Ok(orphans)
    }
}
