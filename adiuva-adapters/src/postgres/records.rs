//! Cloud-record metadata on PostgreSQL. Quota-checked writes lock the owner's `users`
//! row first (`FOR UPDATE`), so concurrent writes of one user are serialised and the sum
//! each checks includes the others; other users are not blocked.

use adiuva_core::domain::UserId;
use adiuva_core::ports::db::{RecordMeta, RecordRepo, RecordSwap, RepoError, RepoResult};
use async_trait::async_trait;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::PgDb;
use crate::rows::{record_from_row, repo_err, swap_outcome};

macro_rules! record_columns {
    () => {
        "id, user_id, table_name, blob_key, checksum, size_bytes, created_at, updated_at"
    };
}

/// Starts a transaction holding the user's row lock. A missing user is `NotFound`.
pub(super) async fn lock_user(
    db: &PgDb,
    user_id: UserId,
) -> RepoResult<Transaction<'static, Postgres>> {
    let mut tx = db.pool().begin().await.map_err(repo_err)?;
    let found = sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
        .bind(user_id.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(repo_err)?;
    if found.is_none() {
        return Err(RepoError::NotFound);
    }
    Ok(tx)
}

#[async_trait]
impl RecordRepo for PgDb {
    async fn insert_record_within_quota(
        &self,
        m: &RecordMeta,
        quota_bytes: Option<i64>,
    ) -> RepoResult<bool> {
        let mut tx = lock_user(self, m.user_id).await?;
        let done = sqlx::query(concat!(
            "INSERT INTO storage_records (",
            record_columns!(),
            ") SELECT $1, $2, $3, $4, $5, $6, $7, $8
             WHERE $9::bigint IS NULL
                OR (SELECT COALESCE(SUM(size_bytes), 0) FROM storage_records WHERE user_id = $2) + (SELECT COALESCE(SUM(size_bytes), 0) FROM vector_items WHERE user_id = $2) + $6 <= $9::bigint"
        ))
        .bind(m.id)
        .bind(m.user_id.0)
        .bind(&m.table)
        .bind(&m.blob_key)
        .bind(&m.checksum)
        .bind(m.size_bytes)
        .bind(m.created_at)
        .bind(m.updated_at)
        .bind(quota_bytes)
        .execute(&mut *tx)
        .await
        .map_err(repo_err)?;
        tx.commit().await.map_err(repo_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn record(&self, user_id: UserId, id: Uuid) -> RepoResult<Option<RecordMeta>> {
        sqlx::query(concat!(
            "SELECT ",
            record_columns!(),
            " FROM storage_records WHERE id = $1 AND user_id = $2"
        ))
        .bind(id)
        .bind(user_id.0)
        .fetch_optional(self.pool())
        .await
        .map_err(repo_err)?
        .as_ref()
        .map(record_from_row)
        .transpose()
    }

    async fn list_records(
        &self,
        user_id: UserId,
        table: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> RepoResult<Vec<RecordMeta>> {
        sqlx::query(concat!(
            "SELECT ",
            record_columns!(),
            " FROM storage_records WHERE user_id = $1 AND ($2::text IS NULL OR table_name = $2)
             ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
        ))
        .bind(user_id.0)
        .bind(table)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await
        .map_err(repo_err)?
        .iter()
        .map(record_from_row)
        .collect()
    }

    async fn replace_record_blob(
        &self,
        m: &RecordMeta,
        previous_blob_key: &str,
        quota_bytes: Option<i64>,
    ) -> RepoResult<RecordSwap> {
        // Under the owner's row lock; the `blob_key = $7` condition is re-checked on the
        // latest row version, so of concurrent swaps from one key exactly one matches.
        let mut tx = lock_user(self, m.user_id).await?;
        let done = sqlx::query(
            "UPDATE storage_records SET blob_key = $1, checksum = $2, size_bytes = $3, updated_at = $4
             WHERE id = $5 AND user_id = $6 AND blob_key = $7
               AND ($8::bigint IS NULL
                    OR (SELECT COALESCE(SUM(size_bytes), 0) FROM storage_records WHERE user_id = $6) + (SELECT COALESCE(SUM(size_bytes), 0) FROM vector_items WHERE user_id = $6) - size_bytes + $3 <= $8::bigint)",
        )
        .bind(&m.blob_key)
        .bind(&m.checksum)
        .bind(m.size_bytes)
        .bind(m.updated_at)
        .bind(m.id)
        .bind(m.user_id.0)
        .bind(previous_blob_key)
        .bind(quota_bytes)
        .execute(&mut *tx)
        .await
        .map_err(repo_err)?;
        tx.commit().await.map_err(repo_err)?;
        swap_outcome(self, m, previous_blob_key, done.rows_affected()).await
    }

    async fn delete_record(&self, user_id: UserId, id: Uuid) -> RepoResult<RecordMeta> {
        sqlx::query(concat!(
            "DELETE FROM storage_records WHERE id = $1 AND user_id = $2 RETURNING ",
            record_columns!()
        ))
        .bind(id)
        .bind(user_id.0)
        .fetch_optional(self.pool())
        .await
        .map_err(repo_err)?
        .as_ref()
        .map(record_from_row)
        .transpose()?
        .ok_or(RepoError::NotFound)
    }

    async fn stored_bytes(&self, user_id: UserId) -> RepoResult<i64> {
        sqlx::query_scalar(
            "SELECT COALESCE(SUM(size_bytes), 0)::bigint FROM storage_records WHERE user_id = $1",
        )
        .bind(user_id.0)
        .fetch_one(self.pool())
        .await
        .map_err(repo_err)
    }
}
