//! Backups (plan 8e): whole-database snapshots the client encrypts, streamed to the
//! blob store and never held whole in memory.
//!
//! Every upload writes under its own key, `{user_id}/backup-{id}` with the row's fresh
//! id, so no two uploads ever write the same bytes and a row only ever points at the
//! bytes it describes (its size is the size really kept, which is what the quota sums).
//! Of two uploads with one timestamp, the row decides: the first to insert wins, the
//! other gets 409 and deletes its own blob (see [`BackupService::upload`]).
//!
//! The body is hashed and counted while it streams. If the bytes end and their SHA-256
//! is not the declared checksum, or they pass what the tier's quota has left, the stream
//! fails before it ends, so the blob store aborts the upload and nothing is kept: no row,
//! no blob. The newest `retention` backups per user are kept; older ones are deleted with
//! their blobs after each upload.

use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::auth::Principal;
use crate::domain::{Checksum, Millis, UserId};
use crate::error::Error;
use crate::ports::blob::{BlobError, BlobStore, ByteStream};
use crate::ports::db::BackupMeta;
use crate::ports::{Clock, Database};
use crate::storage::{MAX_RACE_RETRIES, blob_error, busy, discard_blob, named};
use crate::tiers::{Feature, TierManager};

/// Backups kept per user when not configured.
pub const DEFAULT_RETENTION: usize = 10;

/// The latest `X-Backup-Timestamp` accepted (ms): 9999-12-31T23:59:59.999Z, the last
/// instant an HTTP date (`Last-Modified`) can express. Timestamps are `0..=` this.
pub const MAX_TIMESTAMP_MS: Millis = 253_402_300_799_999;

/// Backups for one deployment.
#[derive(Clone)]
pub struct BackupService {
    db: Arc<dyn Database>,
    tiers: TierManager,
    blobs: Arc<dyn BlobStore>,
    clock: Arc<dyn Clock>,
    retention: usize,
}

impl std::fmt::Debug for BackupService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupService")
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

/// Why a streamed body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    ChecksumMismatch,
    OverQuota,
}

struct Verifying {
    inner: ByteStream,
    hasher: Sha256,
    size: u64,
    allowance: Option<u64>,
    expected: Checksum,
    refusal: Arc<Mutex<Option<Refusal>>>,
    done: bool,
}

/// Wraps `body` so it fails (instead of ending) on a checksum mismatch or on passing
/// `allowance` bytes; the reason lands in `refusal`.
fn verifying(
    body: ByteStream,
    expected: Checksum,
    allowance: Option<u64>,
    refusal: Arc<Mutex<Option<Refusal>>>,
) -> ByteStream {
    let state = Verifying {
        inner: body,
        hasher: Sha256::new(),
        size: 0,
        allowance,
        expected,
        refusal,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let refuse = |st: &mut Verifying, why: Refusal, text: &str| {
            st.done = true;
            if let Ok(mut r) = st.refusal.lock() {
                *r = Some(why);
            }
            Err(BlobError::Aborted(text.to_owned()))
        };
        match st.inner.next().await {
            Some(Ok(chunk)) => {
                st.size += chunk.len() as u64;
                if st.allowance.is_some_and(|a| st.size > a) {
                    let e = refuse(&mut st, Refusal::OverQuota, "over the backup quota");
                    return Some((e, st));
                }
                st.hasher.update(&chunk);
                Some((Ok(chunk), st))
            }
            Some(Err(e)) => {
                st.done = true;
                Some((Err(e), st))
            }
            None => {
                st.done = true;
                let got = hex::encode(std::mem::take(&mut st.hasher).finalize());
                let same =
                    subtle::ConstantTimeEq::ct_eq(got.as_bytes(), st.expected.as_str().as_bytes());
                if bool::from(same) {
                    None
                } else {
                    let e = refuse(&mut st, Refusal::ChecksumMismatch, "checksum mismatch");
                    Some((e, st))
                }
            }
        }
    })
    .boxed()
}

fn conflict(timestamp: Millis) -> Error {
    Error::Conflict(format!(
        "a backup with timestamp {timestamp} already exists; nothing was kept"
    ))
}

fn quota_exceeded() -> Error {
    Error::Forbidden {
        code: "quota_exceeded",
        detail: "this backup would exceed your tier's backup quota; nothing was kept".into(),
    }
}

/// The answer of [`BackupService::download_latest`].
pub enum LatestBackup {
    /// The newest backup and its bytes.
    Found(BackupMeta, ByteStream),
    /// The newest backup is not newer than `If-Modified-Since`.
    NotModified,
}

impl std::fmt::Debug for LatestBackup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Found(meta, _) => f.debug_tuple("Found").field(meta).finish_non_exhaustive(),
            Self::NotModified => f.write_str("NotModified"),
        }
    }
}

/// What the client declares about an upload.
#[derive(Debug, Clone)]
pub struct BackupUpload {
    /// `X-Backup-Version`.
    pub version: i64,
    /// `X-Backup-Timestamp` (ms).
    pub timestamp: Millis,
    /// `X-Backup-Checksum`.
    pub checksum: String,
    /// `Content-Length`, when sent: lets an over-quota upload be refused before any byte.
    pub declared_len: Option<u64>,
}

impl BackupService {
    /// Backups over these ports, keeping the newest `retention` per user.
    pub fn new(
        db: Arc<dyn Database>,
        blobs: Arc<dyn BlobStore>,
        clock: Arc<dyn Clock>,
        tiers: TierManager,
        retention: usize,
    ) -> Self {
        Self {
            db,
            tiers,
            blobs,
            clock,
            retention: retention.max(1),
        }
    }

    /// Streams a backup to the blob store and records it.
    /// The quota is the one of the tier `who` was read with.
    pub async fn upload(
        &self,
        who: &Principal,
        up: BackupUpload,
        body: ByteStream,
    ) -> Result<BackupMeta, Error> {
        let user = who.id();
        let checksum = Checksum::parse(&up.checksum)?;
        if !(0..=MAX_TIMESTAMP_MS).contains(&up.timestamp) {
            return Err(Error::validation(
                "X-Backup-Timestamp",
                format!(
                    "must be ms since the epoch, from 0 to {MAX_TIMESTAMP_MS} (the end of year 9999)"
                ),
            ));
        }
        if up.version < 0 {
            return Err(Error::validation(
                "X-Backup-Version",
                "must not be negative",
            ));
        }
        let quota = self
            .tiers
            .quota_bytes_on(who.user.tier, Feature::BackupGb)?;
        let used = self.db.backup_bytes(user).await?;
        if let Some(len) = up.declared_len {
            TierManager::check_quota(
                quota,
                used,
                i64::try_from(len).unwrap_or(i64::MAX),
                Feature::BackupGb,
            )?;
        }
        // Who wins a timestamp is decided when the row is inserted (the unique
        // (user_id, timestamp) index), not by reserving it before streaming: a pending
        // row would need its own state in every query, would hold quota and the timestamp
        // hostage after a crash until something expired it, and would still need the
        // insert's check. Each upload streams to its own key, so a loser only ever wastes
        // its own bytes and deletes its own blob; a crash leaves a blob without a row,
        // which `storage gc` finds. This early check only spares the common case (the
        // timestamp is already taken) a useless upload.
        let existing = self.db.list_backups(user).await?;
        if existing.iter().any(|b| b.timestamp == up.timestamp) {
            return Err(conflict(up.timestamp));
        }
        let id = Uuid::now_v7();
        let key = format!("{user}/backup-{}", id.simple());
        let refusal = Arc::new(Mutex::new(None));
        let allowance = quota.map(|q| u64::try_from(q.saturating_sub(used)).unwrap_or(0));
        let body = verifying(body, checksum.clone(), allowance, refusal.clone());
        let info = match self.blobs.put(&key, body, Some(checksum.as_str())).await {
            Ok(info) => info,
            Err(e) => {
                let why = refusal.lock().ok().and_then(|r| *r);
                return Err(match (why, e) {
                    (Some(Refusal::ChecksumMismatch), _) => Error::BadRequest {
                        code: "checksum_mismatch",
                        detail:
                            "X-Backup-Checksum is not the SHA-256 of the body; nothing was kept"
                                .into(),
                    },
                    (Some(Refusal::OverQuota), _) => quota_exceeded(),
                    (None, BlobError::Aborted(why)) => Error::BadRequest {
                        code: "upload_incomplete",
                        detail: format!("the upload ended early ({why}); nothing was kept"),
                    },
                    (None, other) => blob_error(other),
                });
            }
        };
        let meta = BackupMeta {
            id,
            user_id: user,
            blob_key: key,
            version: up.version,
            timestamp: up.timestamp,
            checksum: checksum.as_str().to_owned(),
            size_bytes: i64::try_from(info.size).unwrap_or(i64::MAX),
            created_at: self.clock.now_ms(),
        };
        match self.db.insert_backup_within_quota(&meta, quota).await {
            Ok(true) => {}
            Ok(false) => {
                self.discard_blob(&meta.blob_key).await;
                return Err(quota_exceeded());
            }
            // Another upload with this timestamp won the race. The blob under our key is
            // ours alone, so it goes.
            Err(crate::ports::RepoError::Conflict(_)) => {
                self.discard_blob(&meta.blob_key).await;
                return Err(conflict(up.timestamp));
            }
            Err(e) => {
                self.discard_blob(&meta.blob_key).await;
                return Err(e.into());
            }
        }
        self.apply_retention(user).await;
        Ok(meta)
    }

    /// Deletes all but the newest `retention` backups. Failures are logged, not returned:
    /// the upload itself succeeded.
    async fn apply_retention(&self, user: UserId) {
        let all = match self.db.list_backups(user).await {
            Ok(all) => all,
            Err(e) => return tracing::warn!(error = %e, "backup retention: listing failed"),
        };
        for old in all.into_iter().skip(self.retention) {
            match self.db.delete_backup(user, old.id).await {
                Ok(_) => self.discard_blob(&old.blob_key).await,
                Err(e) => {
                    tracing::warn!(backup_id = %old.id, error = %e, "backup retention: delete failed")
                }
            }
        }
    }

    /// The user's backups, newest timestamp first.
    pub async fn history(&self, user: UserId) -> Result<Vec<BackupMeta>, Error> {
        Ok(self.db.list_backups(user).await?)
    }

    /// The newest backup's metadata; `NotFound` when there is none.
    pub async fn latest(&self, user: UserId) -> Result<BackupMeta, Error> {
        self.history(user)
            .await?
            .into_iter()
            .next()
            .ok_or(Error::NotFound("backup"))
    }

    /// The newest backup's metadata and its bytes, which are always the ones the
    /// metadata describes: if the backup was deleted (retention, `DELETE`) between
    /// reading its row and opening its blob, the rows are read again. With
    /// `if_modified_since` (seconds since the epoch), a backup whose timestamp is not
    /// later, at one-second precision, is [`LatestBackup::NotModified`].
    pub async fn download_latest(
        &self,
        user: UserId,
        if_modified_since: Option<i64>,
    ) -> Result<LatestBackup, Error> {
        let mut meta = self.latest(user).await?;
        for _ in 0..MAX_RACE_RETRIES {
            if if_modified_since.is_some_and(|since| meta.timestamp.div_euclid(1000) <= since) {
                return Ok(LatestBackup::NotModified);
            }
            match self.blobs.get(&meta.blob_key).await {
                Ok((_, body)) => return Ok(LatestBackup::Found(meta, body)),
                Err(BlobError::NotFound) => {
                    let again = self.latest(user).await?;
                    if again.blob_key == meta.blob_key {
                        return Err(blob_error(BlobError::NotFound));
                    }
                    meta = again;
                }
                Err(e) => return Err(blob_error(e)),
            }
        }
        Err(busy("backups"))
    }

    /// Deletes one of the user's backups with its blob.
    pub async fn delete(&self, user: UserId, id: Uuid) -> Result<(), Error> {
        let meta = self
            .db
            .delete_backup(user, id)
            .await
            .map_err(named("backup"))?;
        self.discard_blob(&meta.blob_key).await;
        Ok(())
    }

    async fn discard_blob(&self, key: &str) {
        discard_blob(self.blobs.as_ref(), key).await;
    }
}
