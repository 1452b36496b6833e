//! Users and refresh tokens, written once for every SQL dialect (see `repos`).

/// Implements `UserRepo` and `RefreshTokenRepo` for `$db` with the dialect module `$d`.
macro_rules! impl_user_repos {
    ($db:ty, $d:ident) => {
        const _: () = {
            use adiuva_core::domain::{Email, Millis, Role, Tier, UserId};
            use adiuva_core::ports::db::{
                RefreshToken, RefreshTokenRepo, RepoResult, User, UserRepo,
            };
            use async_trait::async_trait;
            use uuid::Uuid;

            use $crate::repos::{token_columns, user_columns};
            use $crate::rows::{expect_one, repo_err, token_from_row, user_from_row};

            impl $db {
                /// At most one user selected by `sql` with one bound key.
                async fn one_user<K>(&self, sql: &'static str, key: K) -> RepoResult<Option<User>>
                where
                    K: for<'q> sqlx::Encode<'q, $d::Db> + sqlx::Type<$d::Db> + Send,
                {
                    sqlx::query(sql)
                        .bind(key)
                        .fetch_optional(self.pool())
                        .await
                        .map_err(repo_err)?
                        .as_ref()
                        .map(user_from_row)
                        .transpose()
                }

                /// Runs `UPDATE users SET <col> = $1, updated_at = $2 WHERE id = $3`; no row
                /// is `NotFound`.
                async fn update_user(
                    &self,
                    sql: &'static str,
                    value: &str,
                    id: UserId,
                    now: Millis,
                ) -> RepoResult<()> {
                    let done = sqlx::query(sql)
                        .bind(value)
                        .bind(now)
                        .bind($d::id(id.0))
                        .execute(self.pool())
                        .await
                        .map_err(repo_err)?;
                    expect_one(done.rows_affected())
                }
            }

            #[async_trait]
            impl UserRepo for $db {
                #[tracing::instrument(skip_all, fields(user_id = %user.id), err(level = "debug"))]
                async fn insert_user(&self, user: &User) -> RepoResult<()> {
                    sqlx::query(concat!(
                        "INSERT INTO users (",
                        user_columns!(),
                        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                    ))
                    .bind($d::id(user.id.0))
                    .bind(user.email.as_str())
                    .bind(&user.password_hash)
                    .bind(user.role.as_str())
                    .bind(user.tier.as_str())
                    .bind(&user.stripe_customer_id)
                    .bind(user.created_at)
                    .bind(user.updated_at)
                    .execute(self.pool())
                    .await
                    .map_err(repo_err)?;
                    Ok(())
                }

                async fn user_by_id(&self, id: UserId) -> RepoResult<Option<User>> {
                    let sql = concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1");
                    self.one_user(sql, $d::id(id.0)).await
                }

                async fn user_in_session(
                    &self,
                    id: UserId,
                    family_id: Uuid,
                ) -> RepoResult<Option<User>> {
                    sqlx::query(concat!(
                        "SELECT ",
                        user_columns!(),
                        " FROM users WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM refresh_tokens \
                         WHERE family_id = $2 AND revoked_at IS NOT NULL)"
                    ))
                    .bind($d::id(id.0))
                    .bind($d::id(family_id))
                    .fetch_optional(self.pool())
                    .await
                    .map_err(repo_err)?
                    .as_ref()
                    .map(user_from_row)
                    .transpose()
                }

                async fn user_by_email(&self, email: &Email) -> RepoResult<Option<User>> {
                    let sql = concat!("SELECT ", user_columns!(), " FROM users WHERE email = $1");
                    self.one_user(sql, email.as_str().to_owned()).await
                }

                async fn list_users(&self, offset: u64, limit: u64) -> RepoResult<Vec<User>> {
                    sqlx::query(concat!(
                        "SELECT ",
                        user_columns!(),
                        " FROM users ORDER BY created_at, id LIMIT $1 OFFSET $2"
                    ))
                    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                    .bind(i64::try_from(offset).unwrap_or(i64::MAX))
                    .fetch_all(self.pool())
                    .await
                    .map_err(repo_err)?
                    .iter()
                    .map(user_from_row)
                    .collect()
                }

                async fn set_tier(&self, id: UserId, tier: Tier, now: Millis) -> RepoResult<()> {
                    let sql = "UPDATE users SET tier = $1, updated_at = $2 WHERE id = $3";
                    self.update_user(sql, tier.as_str(), id, now).await
                }

                async fn set_role(&self, id: UserId, role: Role, now: Millis) -> RepoResult<()> {
                    let sql = "UPDATE users SET role = $1, updated_at = $2 WHERE id = $3";
                    self.update_user(sql, role.as_str(), id, now).await
                }

                async fn delete_user(&self, id: UserId) -> RepoResult<()> {
                    // The rows that belong to the user go by ON DELETE CASCADE.
                    let done = sqlx::query("DELETE FROM users WHERE id = $1")
                        .bind($d::id(id.0))
                        .execute(self.pool())
                        .await
                        .map_err(repo_err)?;
                    expect_one(done.rows_affected())
                }
            }

            #[async_trait]
            impl RefreshTokenRepo for $db {
                async fn insert_refresh_token(&self, t: &RefreshToken) -> RepoResult<()> {
                    sqlx::query(concat!(
                        "INSERT INTO refresh_tokens (",
                        token_columns!(),
                        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                    ))
                    .bind($d::id(t.id))
                    .bind($d::id(t.user_id.0))
                    .bind($d::id(t.family_id))
                    .bind(&t.token_hash)
                    .bind(t.expires_at)
                    .bind(t.created_at)
                    .bind(t.used_at)
                    .bind(t.revoked_at)
                    .execute(self.pool())
                    .await
                    .map_err(repo_err)?;
                    Ok(())
                }

                async fn refresh_token_by_hash(
                    &self,
                    token_hash: &str,
                ) -> RepoResult<Option<RefreshToken>> {
                    sqlx::query(concat!(
                        "SELECT ",
                        token_columns!(),
                        " FROM refresh_tokens WHERE token_hash = $1"
                    ))
                    .bind(token_hash)
                    .fetch_optional(self.pool())
                    .await
                    .map_err(repo_err)?
                    .as_ref()
                    .map(token_from_row)
                    .transpose()
                }

                async fn mark_refresh_token_used(&self, id: Uuid, now: Millis) -> RepoResult<bool> {
                    // One conditional UPDATE: the database decides the race, not a
                    // read-then-write.
                    let done = sqlx::query(
                        "UPDATE refresh_tokens SET used_at = $1 \
                         WHERE id = $2 AND used_at IS NULL AND revoked_at IS NULL",
                    )
                    .bind(now)
                    .bind($d::id(id))
                    .execute(self.pool())
                    .await
                    .map_err(repo_err)?;
                    Ok(done.rows_affected() == 1)
                }

                async fn revoke_token_family(
                    &self,
                    family_id: Uuid,
                    now: Millis,
                ) -> RepoResult<u64> {
                    let done = sqlx::query(
                        "UPDATE refresh_tokens SET revoked_at = $1 \
                         WHERE family_id = $2 AND revoked_at IS NULL",
                    )
                    .bind(now)
                    .bind($d::id(family_id))
                    .execute(self.pool())
                    .await
                    .map_err(repo_err)?;
                    Ok(done.rows_affected())
                }

                async fn families_revoked_since(&self, since: Millis) -> RepoResult<Vec<Uuid>> {
                    let rows = sqlx::query(
                        "SELECT DISTINCT family_id FROM refresh_tokens WHERE revoked_at >= $1",
                    )
                    .bind(since)
                    .fetch_all(self.pool())
                    .await
                    .map_err(repo_err)?;
                    rows.iter()
                        .map(|row| $crate::rows::IdColumn::uuid(row, "family_id"))
                        .collect()
                }

                async fn delete_expired_refresh_tokens(&self, now: Millis) -> RepoResult<u64> {
                    let done = sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1")
                        .bind(now)
                        .execute(self.pool())
                        .await
                        .map_err(repo_err)?;
                    Ok(done.rows_affected())
                }
            }
        };
    };
}

pub(crate) use impl_user_repos;
