//! Vector item accounting on SQLite. A reservation runs in a `BEGIN IMMEDIATE`
//! transaction: it holds SQLite's single write lock from its first read, so the sum it
//! checks is the sum it writes against. Id lists travel as one JSON parameter.

use adiuva_core::domain::{Millis, UserId};
use adiuva_core::ports::db::{RepoResult, VectorItemSize, VectorUsageRepo};
use async_trait::async_trait;
use sqlx::Row as _;

use super::SqliteDb;
use crate::rows::repo_err;

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

const UPSERT: &str = "INSERT INTO vector_items (user_id, item_id, size_bytes, updated_at)
     SELECT ?1, json_extract(value, '$[0]'), json_extract(value, '$[1]'), ?3 FROM json_each(?2) WHERE true
     ON CONFLICT (user_id, item_id) DO UPDATE SET size_bytes = excluded.size_bytes, updated_at = excluded.updated_at";

#[async_trait]
impl VectorUsageRepo for SqliteDb {
    async fn reserve_vector_items(
        &self,
        user_id: UserId,
        items: &[(String, i64)],
        quota_bytes: Option<i64>,
        now: Millis,
    ) -> RepoResult<Option<Vec<VectorItemSize>>> {
        let user = user_id.to_string();
        let ids: Vec<&str> = items.iter().map(|(id, _)| id.as_str()).collect();
        let mut tx = self
            .pool()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(repo_err)?;
        let rows = sqlx::query(
            "SELECT item_id, size_bytes FROM vector_items
             WHERE user_id = ?1 AND item_id IN (SELECT value FROM json_each(?2))",
        )
        .bind(&user)
        .bind(json(&ids))
        .fetch_all(&mut *tx)
        .await
        .map_err(repo_err)?;
        let old: std::collections::HashMap<String, i64> = rows
            .iter()
            .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
            .collect();
        if let Some(quota) = quota_bytes {
            let used: i64 = sqlx::query_scalar(
                "SELECT (SELECT COALESCE(SUM(size_bytes), 0) FROM storage_records WHERE user_id = ?1)
                      + (SELECT COALESCE(SUM(size_bytes), 0) FROM vector_items WHERE user_id = ?1)",
            )
            .bind(&user)
            .fetch_one(&mut *tx)
            .await
            .map_err(repo_err)?;
            let adding: i64 = items.iter().map(|(_, b)| b).sum();
            if used - old.values().sum::<i64>() + adding > quota {
                return Ok(None);
            }
        }
        sqlx::query(UPSERT)
            .bind(&user)
            .bind(json(&items))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(repo_err)?;
        tx.commit().await.map_err(repo_err)?;
        Ok(Some(
            items
                .iter()
                .map(|(id, _)| (id.clone(), old.get(id).copied()))
                .collect(),
        ))
    }

    async fn restore_vector_items(
        &self,
        user_id: UserId,
        previous: &[VectorItemSize],
    ) -> RepoResult<()> {
        let user = user_id.to_string();
        let new: Vec<&str> = previous
            .iter()
            .filter(|(_, b)| b.is_none())
            .map(|(id, _)| id.as_str())
            .collect();
        let old: Vec<(&str, i64)> = previous
            .iter()
            .filter_map(|(id, b)| b.map(|b| (id.as_str(), b)))
            .collect();
        let mut tx = self.pool().begin().await.map_err(repo_err)?;
        sqlx::query(
            "DELETE FROM vector_items WHERE user_id = ?1 AND item_id IN (SELECT value FROM json_each(?2))",
        )
        .bind(&user)
        .bind(json(&new))
        .execute(&mut *tx)
        .await
        .map_err(repo_err)?;
        sqlx::query(UPSERT)
            .bind(&user)
            .bind(json(&old))
            .bind(0i64)
            .execute(&mut *tx)
            .await
            .map_err(repo_err)?;
        tx.commit().await.map_err(repo_err)
    }

    async fn release_vector_items(&self, user_id: UserId, ids: &[String]) -> RepoResult<u64> {
        let done = sqlx::query(
            "DELETE FROM vector_items WHERE user_id = ?1 AND item_id IN (SELECT value FROM json_each(?2))",
        )
        .bind(user_id.to_string())
        .bind(json(&ids))
        .execute(self.pool())
        .await
        .map_err(repo_err)?;
        Ok(done.rows_affected())
    }

    async fn release_all_vector_items(&self, user_id: UserId) -> RepoResult<()> {
        sqlx::query("DELETE FROM vector_items WHERE user_id = ?")
            .bind(user_id.to_string())
            .execute(self.pool())
            .await
            .map_err(repo_err)?;
        Ok(())
    }

    async fn vector_bytes(&self, user_id: UserId) -> RepoResult<i64> {
        sqlx::query_scalar(
            "SELECT COALESCE(SUM(size_bytes), 0) FROM vector_items WHERE user_id = ?",
        )
        .bind(user_id.to_string())
        .fetch_one(self.pool())
        .await
        .map_err(repo_err)
    }
}
