//! Cloud records (plan 8c): client-encrypted blobs with metadata rows. The server checks
//! integrity and quota, never content.
//!
//! Every version of a record's bytes is written under its own key
//! (`{user}/{table}/{id}.{version}`), and the bytes under a key never change. Write order
//! keeps the invariant "a row only ever points at durable bytes that match its checksum":
//!
//! - create: the blob is written (durably) first, then the row is inserted under the
//!   quota; a refused or failed insert deletes the blob.
//! - update: the new version's blob is written first, then the row is switched to it by
//!   a compare-and-swap on the previous key (under the quota, atomically), then the
//!   previous blob is deleted. Only the caller whose swap replaced a key deletes that
//!   key's blob, so concurrent updates never delete each other's bytes; a swap that finds
//!   the row moved on re-reads it and swaps again (last writer wins, as before).
//! - delete: the row is deleted (returning the key it pointed at then), then that blob.
//!
//! A reader opens the key of the row it read; if an update switched the row and deleted
//! that blob in between, it re-reads the row and tries again. A crash between two steps
//! leaves only a blob no row points at, which `adiuva storage gc` finds.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;
use uuid::Uuid;

use crate::auth::Principal;
use crate::domain::{Checksum, TableName, UserId};
use crate::error::Error;
use crate::ports::blob::{BlobError, BlobStore, ByteStream};
use crate::ports::db::{RecordMeta, RecordSwap};
use crate::ports::{Clock, Database};
use crate::tiers::{Feature, TierManager};

/// Largest page of a listing.
pub const MAX_PAGE_SIZE: u64 = 200;

/// How often a read re-reads the row after the blob it named was replaced and deleted
/// meanwhile, and how often an update re-tries its swap after another update won. Each
/// retry needs another writer to finish a whole update in between, so a few suffice;
/// past them the caller gets a 409 rather than a loop.
pub(crate) const MAX_RACE_RETRIES: usize = 8;

/// A fresh key for one version of a record's bytes.
fn version_key(user: UserId, table: &str, id: Uuid) -> String {
    format!("{user}/{table}/{id}.{}", Uuid::now_v7().simple())
}

pub(crate) fn busy(what: &str) -> Error {
    Error::Conflict(format!(
        "the {what} changed too often while this request ran; try again"
    ))
}

/// A repository error, with a missing row named `what` (the port's `NotFound` does not
/// say what was missing).
pub(crate) fn named(what: &'static str) -> impl FnOnce(crate::ports::RepoError) -> Error {
    move |e| match Error::from(e) {
        Error::NotFound(_) => Error::NotFound(what),
        other => other,
    }
}

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

    /// Stores a new record; returns its metadata. The quota is the one of the tier
    /// `who` was read with (no second read of the user).
    pub async fn create(
        &self,
        who: &Principal,
        table: &str,
        blob: Bytes,
        checksum: &str,
    ) -> Result<RecordMeta, Error> {
        let user = who.id();
        let table = TableName::parse(table)?;
        let checksum = verified(&blob, checksum)?;
        let quota = self
            .tiers
            .quota_bytes_on(who.user.tier, Feature::CloudStorageGb)?;
        // The quota is checked once, atomically with the insert below: a record is at most
        // a JSON body, so writing its blob before a refusal costs little.
        let size = blob.len() as i64;
        let id = Uuid::now_v7();
        let now = self.clock.now_ms();
        let meta = RecordMeta {
            id,
            user_id: user,
            blob_key: version_key(user, table.as_str(), id),
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

    /// The record's metadata and its bytes as a stream. The bytes are always the ones
    /// the returned metadata describes (see the module docs).
    pub async fn download(
        &self,
        user: UserId,
        id: Uuid,
    ) -> Result<(RecordMeta, ByteStream), Error> {
        let mut meta = self.meta(user, id).await?;
        for _ in 0..MAX_RACE_RETRIES {
            match self.blobs.get(&meta.blob_key).await {
                Ok((_, body)) => return Ok((meta, body)),
                // An update switched the row and deleted this version after we read the
                // row: read it again. The same key still missing is a real loss.
                Err(BlobError::NotFound) => {
                    let again = self.meta(user, id).await?;
                    if again.blob_key == meta.blob_key {
                        return Err(blob_error(BlobError::NotFound));
                    }
                    meta = again;
                }
                Err(e) => return Err(blob_error(e)),
            }
        }
        Err(busy("record"))
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

    /// Replaces a record's bytes: writes the new version, switches the row to it, then
    /// deletes the previous version (see the module docs for why in that order).
    pub async fn update(
        &self,
        who: &Principal,
        id: Uuid,
        blob: Bytes,
        checksum: &str,
    ) -> Result<RecordMeta, Error> {
        let user = who.id();
        let mut current = self.meta(user, id).await?;
        let checksum = verified(&blob, checksum)?;
        let quota = self
            .tiers
            .quota_bytes_on(who.user.tier, Feature::CloudStorageGb)?;
        let new_key = version_key(user, &current.table, id);
        let size = blob.len() as i64;
        self.blobs
            .put(&new_key, one_chunk(blob), Some(checksum.as_str()))
            .await
            .map_err(blob_error)?;
        for _ in 0..MAX_RACE_RETRIES {
            let new = RecordMeta {
                blob_key: new_key.clone(),
                checksum: checksum.as_str().to_owned(),
                size_bytes: size,
                updated_at: self.clock.now_ms().max(current.updated_at),
                ..current.clone()
            };
            let swapped = self
                .db
                .replace_record_blob(&new, &current.blob_key, quota)
                .await;
            match swapped {
                Ok(RecordSwap::Replaced) => {
                    // This call alone unlinked the previous version from the row, so it
                    // alone deletes it; a reader still holding the old key re-reads.
                    self.discard_blob(&current.blob_key).await;
                    return Ok(new);
                }
                Ok(RecordSwap::OverQuota) => {
                    self.discard_blob(&new_key).await;
                    return Err(quota_exceeded());
                }
                Ok(RecordSwap::Stale) => match self.db.record(user, id).await {
                    Ok(Some(now)) => current = now,
                    Ok(None) => {
                        self.discard_blob(&new_key).await;
                        return Err(Error::NotFound("record"));
                    }
                    Err(e) => {
                        self.discard_blob(&new_key).await;
                        return Err(e.into());
                    }
                },
                Err(e) => {
                    self.discard_blob(&new_key).await;
                    return Err(named("record")(e));
                }
            }
        }
        self.discard_blob(&new_key).await;
        Err(busy("record"))
    }

    /// Deletes a record and its blob.
    pub async fn delete(&self, user: UserId, id: Uuid) -> Result<(), Error> {
        let gone = self
            .db
            .delete_record(user, id)
            .await
            .map_err(named("record"))?;
        self.discard_blob(&gone.blob_key).await;
        Ok(())
    }

    async fn discard_blob(&self, key: &str) {
        discard_blob(self.blobs.as_ref(), key).await;
    }
}
