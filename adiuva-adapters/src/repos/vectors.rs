//! Vector item accounting, written once for every SQL dialect (see `repos`). Id lists
//! are bound through the dialect's `list` and used by its three list statements.

/// Implements `VectorUsageRepo` for `$db`.
macro_rules! impl_vector_repos {
    ($db:ty, $d:ident) => {
        const _: () = {
            use std::collections::HashMap;

            use adiuva_core::domain::{Millis, UserId};
            use adiuva_core::ports::db::{RepoResult, VectorItemSize, VectorUsageRepo};
            use async_trait::async_trait;

            use $crate::repos::sum_of;
            use $crate::rows::repo_err;

            #[async_trait]
            impl VectorUsageRepo for $db {
                async fn reserve_vector_items(
                    &self,
                    user_id: UserId,
                    items: &[(String, i64)],
                    quota_bytes: Option<i64>,
                    now: Millis,
                ) -> RepoResult<Option<Vec<VectorItemSize>>> {
                    let (ids, sizes): (Vec<String>, Vec<i64>) = items.iter().cloned().unzip();
                    let mut tx = self.quota_tx(user_id).await?;
                    let old: HashMap<String, i64> =
                        sqlx::query_as::<_, (String, i64)>($d::VECTOR_SIZES)
                            .bind($d::id(user_id.0))
                            .bind($d::list(&ids))
                            .fetch_all(&mut *tx)
                            .await
                            .map_err(repo_err)?
                            .into_iter()
                            .collect();
                    if quota_bytes.is_some()
                        && !Self::cloud_usage(&mut tx, user_id).await?.admits(
                            quota_bytes,
                            old.values().sum(),
                            sizes.iter().sum(),
                        )
                    {
                        return Ok(None);
                    }
                    sqlx::query($d::UPSERT_VECTORS)
                        .bind($d::id(user_id.0))
                        .bind($d::list(&ids))
                        .bind($d::list(&sizes))
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
                    sqlx::query($d::DELETE_VECTORS)
                        .bind($d::id(user_id.0))
                        .bind($d::list(&new))
                        .execute(&mut *tx)
                        .await
                        .map_err(repo_err)?;
                    sqlx::query($d::UPSERT_VECTORS)
                        .bind($d::id(user_id.0))
                        .bind($d::list(&ids))
                        .bind($d::list(&sizes))
                        .bind(0i64)
                        .execute(&mut *tx)
                        .await
                        .map_err(repo_err)?;
                    tx.commit().await.map_err(repo_err)
                }

                async fn release_vector_items(
                    &self,
                    user_id: UserId,
                    ids: &[String],
                ) -> RepoResult<u64> {
                    let done = sqlx::query($d::DELETE_VECTORS)
                        .bind($d::id(user_id.0))
                        .bind($d::list(ids))
                        .execute(self.pool())
                        .await
                        .map_err(repo_err)?;
                    Ok(done.rows_affected())
                }

                async fn release_all_vector_items(&self, user_id: UserId) -> RepoResult<()> {
                    sqlx::query("DELETE FROM vector_items WHERE user_id = $1")
                        .bind($d::id(user_id.0))
                        .execute(self.pool())
                        .await
                        .map_err(repo_err)?;
                    Ok(())
                }

                async fn vector_bytes(&self, user_id: UserId) -> RepoResult<i64> {
                    sqlx::query_scalar(sum_of!("vector_items"))
                        .bind($d::id(user_id.0))
                        .fetch_one(self.pool())
                        .await
                        .map_err(repo_err)
                }
            }
        };
    };
}

pub(crate) use impl_vector_repos;
