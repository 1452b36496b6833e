//! Cloud records, backups, the blob keys they point at, and subscriptions, written once
//! for every SQL dialect (see `repos`). Quota-checked writes run in the dialect's quota
//! transaction (`quota_tx`) and let core decide (`adiuva_core::quota`).

/// Implements `RecordRepo`, `BackupRepo`, `BlobKeyRepo` and `SubscriptionRepo` for `$db`.
macro_rules! impl_storage_repos {
    ($db:ty, $d:ident) => {
        const _: () = {
            use adiuva_core::domain::UserId;
            use adiuva_core::ports::db::{
                BackupMeta, BackupRepo, BlobKeyRepo, RecordMeta, RecordRepo, RecordSwap,
                RepoError, RepoResult, Subscription, SubscriptionRepo,
            };
            use async_trait::async_trait;
            use uuid::Uuid;

            use $crate::repos::{backup_columns, record_columns, subscription_columns, sum_of};
            use $crate::rows::{
                backup_from_row, record_from_row, repo_err, subscription_from_row,
            };

            #[async_trait]
            impl RecordRepo for $db {
                async fn insert_record_within_quota(
                    &self,
                    m: &RecordMeta,
                    quota_bytes: Option<i64>,
                ) -> RepoResult<bool> {
                    let mut tx = self.quota_tx(m.user_id).await?;
                    if quota_bytes.is_some()
                        && !Self::cloud_usage(&mut tx, m.user_id)
                            .await?
                            .admits(quota_bytes, 0, m.size_bytes)
                    {
                        return Ok(false);
                    }
                    sqlx::query(concat!(
                        "INSERT INTO storage_records (",
                        record_columns!(),
                        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                    ))
                    .bind($d::id(m.id))
                    .bind($d::id(m.user_id.0))
                    .bind(&m.table)
                    .bind(&m.blob_key)
                    .bind(&m.checksum)
                    .bind(m.size_bytes)
                    .bind(m.created_at)
                    .bind(m.updated_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(repo_err)?;
                    tx.commit().await.map_err(repo_err)?;
                    Ok(true)
                }

                async fn record(&self, user_id: UserId, id: Uuid) -> RepoResult<Option<RecordMeta>> {
                    sqlx::query(concat!(
                        "SELECT ",
                        record_columns!(),
                        " FROM storage_records WHERE id = $1 AND user_id = $2"
                    ))
                    .bind($d::id(id))
                    .bind($d::id(user_id.0))
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
                        " FROM storage_records WHERE user_id = $1 AND ($2 IS NULL OR table_name = $2) \
                         ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
                    ))
                    .bind($d::id(user_id.0))
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
                    // Under the quota lock every quota-checked write of this user waits for
                    // this one, so the row read here is the one swapped, and the outcome
                    // (stale, over quota) is exact.
                    let mut tx = self.quota_tx(m.user_id).await?;
                    let current: Option<(String, i64)> = sqlx::query_as(
                        "SELECT blob_key, size_bytes FROM storage_records WHERE id = $1 AND user_id = $2",
                    )
                    .bind($d::id(m.id))
                    .bind($d::id(m.user_id.0))
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(repo_err)?;
                    let Some((blob_key, size_bytes)) = current else {
                        return Err(RepoError::NotFound);
                    };
                    if blob_key != previous_blob_key {
                        return Ok(RecordSwap::Stale);
                    }
                    if quota_bytes.is_some()
                        && !Self::cloud_usage(&mut tx, m.user_id)
                            .await?
                            .admits(quota_bytes, size_bytes, m.size_bytes)
                    {
                        return Ok(RecordSwap::OverQuota);
                    }
                    // Still conditioned on the key: a delete is not quota-checked, so on
                    // PostgreSQL it can remove the row meanwhile.
                    let done = sqlx::query(
                        "UPDATE storage_records SET blob_key = $1, checksum = $2, size_bytes = $3, \
                         updated_at = $4 WHERE id = $5 AND user_id = $6 AND blob_key = $7",
                    )
                    .bind(&m.blob_key)
                    .bind(&m.checksum)
                    .bind(m.size_bytes)
                    .bind(m.updated_at)
                    .bind($d::id(m.id))
                    .bind($d::id(m.user_id.0))
                    .bind(previous_blob_key)
                    .execute(&mut *tx)
                    .await
                    .map_err(repo_err)?;
                    tx.commit().await.map_err(repo_err)?;
                    match done.rows_affected() {
                        0 => Err(RepoError::NotFound),
                        _ => Ok(RecordSwap::Replaced),
                    }
                }

                async fn delete_record(&self, user_id: UserId, id: Uuid) -> RepoResult<RecordMeta> {
                    sqlx::query(concat!(
                        "DELETE FROM storage_records WHERE id = $1 AND user_id = $2 RETURNING ",
                        record_columns!()
                    ))
                    .bind($d::id(id))
                    .bind($d::id(user_id.0))
                    .fetch_optional(self.pool())
                    .await
                    .map_err(repo_err)?
                    .as_ref()
                    .map(record_from_row)
                    .transpose()?
                    .ok_or(RepoError::NotFound)
                }

                async fn stored_bytes(&self, user_id: UserId) -> RepoResult<i64> {
                    sqlx::query_scalar(sum_of!("storage_records"))
                        .bind($d::id(user_id.0))
                        .fetch_one(self.pool())
                        .await
                        .map_err(repo_err)
                }
            }

            #[async_trait]
            impl BackupRepo for $db {
                async fn insert_backup_within_quota(
                    &self,
                    m: &BackupMeta,
                    quota_bytes: Option<i64>,
                ) -> RepoResult<bool> {
                    let mut tx = self.quota_tx(m.user_id).await?;
                    if quota_bytes.is_some() {
                        let used: i64 = sqlx::query_scalar(sum_of!("backups"))
                            .bind($d::id(m.user_id.0))
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(repo_err)?;
                        if !adiuva_core::quota::fits(quota_bytes, used, 0, m.size_bytes) {
                            return Ok(false);
                        }
                    }
                    sqlx::query(concat!(
                        "INSERT INTO backups (",
                        backup_columns!(),
                        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                    ))
                    .bind($d::id(m.id))
                    .bind($d::id(m.user_id.0))
                    .bind(&m.blob_key)
                    .bind(m.version)
                    .bind(m.timestamp)
                    .bind(&m.checksum)
                    .bind(m.size_bytes)
                    .bind(m.created_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(repo_err)?;
                    tx.commit().await.map_err(repo_err)?;
                    Ok(true)
                }

                async fn list_backups(&self, user_id: UserId) -> RepoResult<Vec<BackupMeta>> {
                    sqlx::query(concat!(
                        "SELECT ",
                        backup_columns!(),
                        " FROM backups WHERE user_id = $1 ORDER BY timestamp DESC"
                    ))
                    .bind($d::id(user_id.0))
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
                    .bind($d::id(id))
                    .bind($d::id(user_id.0))
                    .fetch_optional(self.pool())
                    .await
                    .map_err(repo_err)?
                    .as_ref()
                    .map(backup_from_row)
                    .transpose()?
                    .ok_or(RepoError::NotFound)
                }

                async fn backup_bytes(&self, user_id: UserId) -> RepoResult<i64> {
                    sqlx::query_scalar(sum_of!("backups"))
                        .bind($d::id(user_id.0))
                        .fetch_one(self.pool())
                        .await
                        .map_err(repo_err)
                }
            }

            /// Every table whose rows own blobs is one arm of these unions; a new one
            /// (plugin packages) adds its arm, and `storage gc` keeps its blobs.
            #[async_trait]
            impl BlobKeyRepo for $db {
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
                        "SELECT blob_key FROM storage_records WHERE user_id = $1 \
                         UNION ALL SELECT blob_key FROM backups WHERE user_id = $1",
                    )
                    .bind($d::id(user_id.0))
                    .fetch_all(self.pool())
                    .await
                    .map_err(repo_err)
                }
            }

            #[async_trait]
            impl SubscriptionRepo for $db {
                async fn upsert_subscription(&self, s: &Subscription) -> RepoResult<()> {
                    sqlx::query(concat!(
                        "INSERT INTO subscriptions (",
                        subscription_columns!(),
                        ") VALUES ($1, $2, $3, $4, $5, $6, $7) \
                         ON CONFLICT (stripe_subscription_id) DO UPDATE SET tier = excluded.tier, \
                         status = excluded.status, current_period_end = excluded.current_period_end"
                    ))
                    .bind($d::id(s.id))
                    .bind($d::id(s.user_id.0))
                    .bind(&s.stripe_subscription_id)
                    .bind(s.tier.as_str())
                    .bind(&s.status)
                    .bind(s.current_period_end)
                    .bind(s.created_at)
                    .execute(self.pool())
                    .await
                    .map_err(repo_err)?;
                    Ok(())
                }

                async fn subscription_for_user(
                    &self,
                    user_id: UserId,
                ) -> RepoResult<Option<Subscription>> {
                    sqlx::query(concat!(
                        "SELECT ",
                        subscription_columns!(),
                        " FROM subscriptions WHERE user_id = $1 \
                         ORDER BY created_at DESC, id DESC LIMIT 1"
                    ))
                    .bind($d::id(user_id.0))
                    .fetch_optional(self.pool())
                    .await
                    .map_err(repo_err)?
                    .as_ref()
                    .map(subscription_from_row)
                    .transpose()
                }
            }
        };
    };
}

pub(crate) use impl_storage_repos;
