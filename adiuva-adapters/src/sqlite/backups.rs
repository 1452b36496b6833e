//! Backup metadata on SQLite; the quota check is part of the INSERT (see `records.rs`).
//! Also the blob keys every table points at (for `storage gc`).

use adiuva_core::domain::UserId;
use adiuva_core::ports::db::{BackupMeta, BackupRepo, BlobKeyRepo, RepoError, RepoResult};
use async_trait::async_trait;
use uuid::Uuid;

use super::SqliteDb;
use crate::rows::{backup_from_row, repo_err};

macro_rules! backup_columns {
    () => {
        "id, user_id, blob_key, version, timestamp, checksum, size_bytes, created_at"
    };
}

#[async_trait]
impl BackupRepo for SqliteDb {
    async fn insert_backup_within_quota(
        &self,
        m: &BackupMeta,
        quota_bytes: Option<i64>,
    ) -> RepoResult<bool> {
        let done = sqlx::query(concat!(
            "INSERT INTO backups (",
            backup_columns!(),
            ") SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8
             WHERE ?9 IS NULL
                OR (SELECT COALESCE(SUM(size_bytes), 0) FROM backups WHERE user_id = ?2) + ?7 <= ?9"
        ))
        .bind(m.id.to_string())
        .bind(m.user_id.to_string())
        .bind(&m.blob_key)
        .bind(m.version)
        .bind(m.timestamp)
        .bind(&m.checksum)
        .bind(m.size_bytes)
        .bind(m.created_at)
        .bind(quota_bytes)
        .execute(self.pool())
        .await
        .map_err(repo_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_backups(&self, user_id: UserId) -> RepoResult<Vec<BackupMeta>> {
        sqlx::query(concat!(
            "SELECT ",
            backup_columns!(),
            " FROM backups WHERE user_id = ? ORDER BY timestamp DESC"
        ))
        .bind(user_id.to_string())
        .fetch_all(self.pool())
        .await
        .map_err(repo_err)?
        .iter()
        .map(backup_from_row)
        .collect()
    }

    async fn delete_backup(&self, user_id: UserId, id: Uuid) -> RepoResult<BackupMeta> {
        sqlx::query(concat!(
            "DELETE FROM backups WHERE id = ? AND user_id = ? RETURNING ",
            backup_columns!()
        ))
        .bind(id.to_string())
        .bind(user_id.to_string())
        .fetch_optional(self.pool())
        .await
        .map_err(repo_err)?
        .as_ref()
        .map(backup_from_row)
        .transpose()?
        .ok_or(RepoError::NotFound)
    }

    async fn backup_bytes(&self, user_id: UserId) -> RepoResult<i64> {
        sqlx::query_scalar("SELECT COALESCE(SUM(size_bytes), 0) FROM backups WHERE user_id = ?")
            .bind(user_id.to_string())
            .fetch_one(self.pool())
            .await
            .map_err(repo_err)
    }
}

/// Every table whose rows own blobs is one arm of these unions; a new one (plugin
/// packages) adds its arm, and `storage gc` keeps its blobs.
#[async_trait]
impl BlobKeyRepo for SqliteDb {
    async fn referenced_blob_keys(&self) -> RepoResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT blob_key FROM storage_records UNION ALL SELECT blob_key FROM backups",
        )
        .fetch_all(self.pool())
        .await
        .map_err(repo_err)
    }

    async fn user_blob_keys(&self, user_id: UserId) -> RepoResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT blob_key FROM storage_records WHERE user_id = ?1
             UNION ALL SELECT blob_key FROM backups WHERE user_id = ?1",
        )
        .bind(user_id.to_string())
        .fetch_all(self.pool())
        .await
        .map_err(repo_err)
    }
}
