//! Cloud-record metadata on SQLite. Quota checks are part of the writing statement:
//! SQLite runs one writer at a time and an INSERT/UPDATE takes the write lock before it
//! reads, so the sum it checks is the sum it writes against.

use adiuva_core::domain::UserId;
use adiuva_core::ports::db::{RecordMeta, RecordRepo, RecordSwap, RepoError, RepoResult};
use async_trait::async_trait;
use uuid::Uuid;

use super::SqliteDb;
use crate::rows::{record_from_row, repo_err, swap_outcome};

macro_rules! record_columns {
    () => {
        "id, user_id, table_name, blob_key, checksum, size_bytes, created_at, updated_at"
    };
}

#[async_trait]
impl RecordRepo for SqliteDb {
    async fn insert_record_within_quota(
        &self,
        m: &RecordMeta,
        quota_bytes: Option<i64>,
    ) -> RepoResult<bool> {
        let done = sqlx::query(concat!(
            "INSERT INTO storage_records (",
            record_columns!(),
            ") SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8
             WHERE ?9 IS NULL
                OR (SELECT COALESCE(SUM(size_bytes), 0) FROM storage_records WHERE user_id = ?2) + (SELECT COALESCE(SUM(size_bytes), 0) FROM vector_items WHERE user_id = ?2) + ?6 <= ?9"
        ))
        .bind(m.id.to_string())
        .bind(m.user_id.to_string())
        .bind(&m.table)
        .bind(&m.blob_key)
        .bind(&m.checksum)
        .bind(m.size_bytes)
        .bind(m.created_at)
        .bind(m.updated_at)
        .bind(quota_bytes)
        .execute(self.pool())
        .await
        .map_err(repo_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn record(&self, user_id: UserId, id: Uuid) -> RepoResult<Option<RecordMeta>> {
        sqlx::query(concat!(
            "SELECT ",
            record_columns!(),
            " FROM storage_records WHERE id = ? AND user_id = ?"
        ))
        .bind(id.to_string())
        .bind(user_id.to_string())
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
            " FROM storage_records WHERE user_id = ?1 AND (?2 IS NULL OR table_name = ?2)
             ORDER BY created_at DESC, id DESC LIMIT ?3 OFFSET ?4"
        ))
        .bind(user_id.to_string())
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
        // One statement: SQLite takes the write lock before it reads, so the key it
        // compares and the sum it checks are the ones it writes against.
        let done = sqlx::query(
            "UPDATE storage_records SET blob_key = ?1, checksum = ?2, size_bytes = ?3, updated_at = ?4
             WHERE id = ?5 AND user_id = ?6 AND blob_key = ?7
               AND (?8 IS NULL
                    OR (SELECT COALESCE(SUM(size_bytes), 0) FROM storage_records WHERE user_id = ?6) + (SELECT COALESCE(SUM(size_bytes), 0) FROM vector_items WHERE user_id = ?6) - size_bytes + ?3 <= ?8)",
        )
        .bind(&m.blob_key)
        .bind(&m.checksum)
        .bind(m.size_bytes)
        .bind(m.updated_at)
        .bind(m.id.to_string())
        .bind(m.user_id.to_string())
        .bind(previous_blob_key)
        .bind(quota_bytes)
        .execute(self.pool())
        .await
        .map_err(repo_err)?;
        swap_outcome(self, m, previous_blob_key, done.rows_affected()).await
    }

    async fn delete_record(&self, user_id: UserId, id: Uuid) -> RepoResult<RecordMeta> {
        sqlx::query(concat!(
            "DELETE FROM storage_records WHERE id = ? AND user_id = ? RETURNING ",
            record_columns!()
        ))
        .bind(id.to_string())
        .bind(user_id.to_string())
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
            "SELECT COALESCE(SUM(size_bytes), 0) FROM storage_records WHERE user_id = ?",
        )
        .bind(user_id.to_string())
        .fetch_one(self.pool())
        .await
        .map_err(repo_err)
    }
}
