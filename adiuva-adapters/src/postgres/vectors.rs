//! Vector item accounting on PostgreSQL. A reservation locks the owner's `users` row
//! (as record writes do), so all quota-checked writes of one user are serialised.

use adiuva_core::domain::{Millis, UserId};
use adiuva_core::ports::db::{RepoResult, VectorItemSize, VectorUsageRepo};
use async_trait::async_trait;
use sqlx::Row as _;

use super::PgDb;
use super::records::lock_user;
use crate::rows::repo_err;

const UPSERT: &str = "INSERT INTO vector_items (user_id, item_id, size_bytes, updated_at)
     SELECT $1, i, s, $4 FROM UNNEST($2::text[], $3::bigint[]) AS t (i, s)
     ON CONFLICT (user_id, item_id) DO UPDATE SET size_bytes = excluded.size_bytes, updated_at = excluded.updated_at";

#[async_trait]
impl VectorUsageRepo for PgDb {
    async fn reserve_vector_items(
        &self,
        user_id: UserId,
        items: &[(String, i64)],
        quota_bytes: Option<i64>,
        now: Millis,
    ) -> RepoResult<Option<Vec<VectorItemSize>>> {
        let (ids, sizes): (Vec<String>, Vec<i64>) = items.iter().cloned().unzip();
        let mut tx = lock_user(self, user_id).await?;
        let rows = sqlx::query(
            "SELECT item_id, size_bytes FROM vector_items WHERE user_id = $1 AND item_id = ANY($2)",
        )
        .bind(user_id.0)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(repo_err)?;
        let old: std::collections::HashMap<String, i64> = rows
            .iter()
            .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
            .collect();
        if let Some(quota) = quota_bytes {
            let used: i64 = sqlx::query_scalar(
                "SELECT ((SELECT COALESCE(SUM(size_bytes), 0) FROM storage_records WHERE user_id = $1)
                       + (SELECT COALESCE(SUM(size_bytes), 0) FROM vector_items WHERE user_id = $1))::bigint",
            )
            .bind(user_id.0)
            .fetch_one(&mut *tx)
            .await
            .map_err(repo_err)?;
            if used - old.values().sum::<i64>() + sizes.iter().sum::<i64>() > quota {
                return Ok(None);
            }
        }
        sqlx::query(UPSERT)
            .bind(user_id.0)
            .bind(&ids)
            .bind(&sizes)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(repo_err)?;
        tx.commit().await.map_err(repo_err)?;
        Ok(Some(
            ids.into_iter()
                .map(|id| {
                    let was = old.get(&id).copied();
                    (id, was)
                })
                .collect(),
        ))
    }

    async fn restore_vector_items(
        &self,
        user_id: UserId,
        previous: &[VectorItemSize],
    ) -> RepoResult<()> {
        let new: Vec<String> = previous
            .iter()
            .filter(|(_, b)| b.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        let (ids, sizes): (Vec<String>, Vec<i64>) = previous
            .iter()
            .filter_map(|(id, b)| b.map(|b| (id.clone(), b)))
            .unzip();
        let mut tx = self.pool().begin().await.map_err(repo_err)?;
        sqlx::query("DELETE FROM vector_items WHERE user_id = $1 AND item_id = ANY($2)")
            .bind(user_id.0)
            .bind(&new)
            .execute(&mut *tx)
            .await
            .map_err(repo_err)?;
        sqlx::query(UPSERT)
            .bind(user_id.0)
            .bind(&ids)
            .bind(&sizes)
            .bind(0i64)
            .execute(&mut *tx)
            .await
            .map_err(repo_err)?;
        tx.commit().await.map_err(repo_err)
    }

    async fn release_vector_items(&self, user_id: UserId, ids: &[String]) -> RepoResult<u64> {
        let done = sqlx::query("DELETE FROM vector_items WHERE user_id = $1 AND item_id = ANY($2)")
            .bind(user_id.0)
            .bind(ids)
            .execute(self.pool())
            .await
            .map_err(repo_err)?;
        Ok(done.rows_affected())
    }

    async fn release_all_vector_items(&self, user_id: UserId) -> RepoResult<()> {
        sqlx::query("DELETE FROM vector_items WHERE user_id = $1")
            .bind(user_id.0)
            .execute(self.pool())
            .await
            .map_err(repo_err)?;
        Ok(())
    }

    async fn vector_bytes(&self, user_id: UserId) -> RepoResult<i64> {
        sqlx::query_scalar(
            "SELECT COALESCE(SUM(size_bytes), 0)::bigint FROM vector_items WHERE user_id = $1",
        )
        .bind(user_id.0)
        .fetch_one(self.pool())
        .await
        .map_err(repo_err)
    }
}
