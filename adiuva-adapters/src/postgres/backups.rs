//! Backup metadata on PostgreSQL; quota-checked inserts lock the owner's row first.
//! Also the blob keys every table points at (for `storage gc`).

use adiuva_core::domain::UserId;
use adiuva_core::ports::db::{BackupMeta, BackupRepo, BlobKeyRepo, RepoError, RepoResult};
use async_trait::async_trait;
use uuid::Uuid;

use super::PgDb;
use super::records::lock_user;
use crate::rows::{backup_from_row, repo_err};

macro_rules! backup_columns {
    () => {
        "id, user_id, blob_key, version, timestamp, checksum, size_bytes, created_at"
    };
}

#[async_trait]
impl BackupRepo for PgDb {
    async fn insert_backup_within_quota(
        &self,
        m: &BackupMeta,
        quota_bytes: Option<i64>,
    ) -> RepoResult<bool> {
        let mut tx = lock_user(self, m.user_id).await?;
        let done = sqlx::query(concat!(
            "INSERT INTO backups (",
            backup_columns!(),
            ") SELECT $1, $2, $3, $4, $5, $6, $7, $8
             WHERE $9::bigint IS NULL
                OR (SELECT COALESCE(SUM(size_bytes), 0) FROM backups WHERE user_id = $2) + $7 <= $9::bigint"
        ))
        .bind(m.id)
        .bind(m.user_id.0)
        .bind(&m.blob_key)
        .bind(m.version)
        .bind(m.timestamp)
        .bind(&m.checksum)
        .bind(m.size_bytes)
        .bind(m.created_at)
        .bind(quota_bytes)
        .execute(&mut *tx)
        .await
        .map_err(repo_err)?;
        tx.commit().await.map_err(repo_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_backups(&self, user_id: UserId) -> RepoResult<Vec<BackupMeta>> {
        sqlx::query(concat!(
            "SELECT ",
            backup_columns!(),
            " FROM backups WHERE user_id = $1 ORDER BY timestamp DESC"
        ))
        .bind(user_id.0)
        .fetch_all(self.pool())
        .await
        .map_err(repo_err)?
        .iter()
        .map(backup_from_row)
        .collect()
    }

    async fn delete_backup(&self, user_id: UserId, id: Uuid) -> RepoResult<BackupMeta> {
        sqlx::query(concat!(
            "DELETE FROM backups WHERE id = $1 AND user_id = $2 RETURNING ",
            backup_columns!()
        ))
        .bind(id)
        .bind(user_id.0)
        .fetch_optional(self.pool())
        .await
        .map_err(repo_err)?
        .as_ref()
        .map(backup_from_row)
        .transpose()?
        .ok_or(RepoError::NotFound)
    }

    async fn backup_bytes(&self, user_id: UserId) -> RepoResult<i64> {
        sqlx::query_scalar(
            "SELECT COALESCE(SUM(size_bytes), 0)::bigint FROM backups WHERE user_id = $1",
        )
        .bind(user_id.0)
        .fetch_one(self.pool())
        .await
        .map_err(repo_err)
    }
}

/// Every table whose rows own blobs is one arm of these unions; a new one (plugin
/// packages) adds its arm, and `storage gc` keeps its blobs.
#[async_trait]
impl BlobKeyRepo for PgDb {
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
            "SELECT blob_key FROM storage_records WHERE user_id = $1
             UNION ALL SELECT blob_key FROM backups WHERE user_id = $1",
        )
        .bind(user_id.0)
        .fetch_all(self.pool())
        .await
        .map_err(repo_err)
    }
}
