//! Users and refresh tokens, written once for every SQL dialect: the Rust is the same,
//! only the statements differ, so each dialect supplies a `sql` module of constants and
//! invokes [`impl_user_repos!`]. Ids are bound as text (PostgreSQL casts with `::uuid`).

/// Implements `UserRepo` and `RefreshTokenRepo` for `$db` with the statements in `$sql`.
macro_rules! impl_user_repos {
    ($db:ty, $sql:ident) => {
        use adiuva_core::domain::{Email, Millis, Role, Tier, UserId};
        use adiuva_core::ports::db::{RefreshToken, RefreshTokenRepo, RepoResult, User, UserRepo};
        use async_trait::async_trait;
        use uuid::Uuid;

        use crate::rows::{expect_one, repo_err, token_from_row, user_from_row};

        impl $db {
            /// At most one user selected by `sql` with one bound key.
            async fn one_user(&self, sql: &'static str, key: String) -> RepoResult<Option<User>> {
                sqlx::query(sql)
                    .bind(key)
                    .fetch_optional(self.pool())
                    .await
                    .map_err(repo_err)?
                    .as_ref()
                    .map(user_from_row)
                    .transpose()
            }

            /// Runs `UPDATE users SET <col> = ?, updated_at = ? WHERE id = ?`; no row is `NotFound`.
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
                    .bind(id.to_string())
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
                sqlx::query($sql::INSERT_USER)
                    .bind(user.id.to_string())
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
                self.one_user($sql::USER_BY_ID, id.to_string()).await
            }

            async fn user_in_session(
                &self,
                id: UserId,
                family_id: Uuid,
            ) -> RepoResult<Option<User>> {
                sqlx::query($sql::USER_IN_SESSION)
                    .bind(id.to_string())
                    .bind(family_id.to_string())
                    .fetch_optional(self.pool())
                    .await
                    .map_err(repo_err)?
                    .as_ref()
                    .map(user_from_row)
                    .transpose()
            }

            async fn user_by_email(&self, email: &Email) -> RepoResult<Option<User>> {
                self.one_user($sql::USER_BY_EMAIL, email.as_str().to_owned())
                    .await
            }

            async fn list_users(&self, offset: u64, limit: u64) -> RepoResult<Vec<User>> {
                sqlx::query($sql::LIST_USERS)
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
                self.update_user($sql::SET_TIER, tier.as_str(), id, now)
                    .await
            }

            async fn set_role(&self, id: UserId, role: Role, now: Millis) -> RepoResult<()> {
                self.update_user($sql::SET_ROLE, role.as_str(), id, now)
                    .await
            }

            async fn delete_user(&self, id: UserId) -> RepoResult<()> {
                // Tokens go by ON DELETE CASCADE.
                let done = sqlx::query($sql::DELETE_USER)
                    .bind(id.to_string())
                    .execute(self.pool())
                    .await
                    .map_err(repo_err)?;
                expect_one(done.rows_affected())
            }
        }

        #[async_trait]
        impl RefreshTokenRepo for $db {
            async fn insert_refresh_token(&self, t: &RefreshToken) -> RepoResult<()> {
                sqlx::query($sql::INSERT_TOKEN)
                    .bind(t.id.to_string())
                    .bind(t.user_id.to_string())
                    .bind(t.family_id.to_string())
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
                sqlx::query($sql::TOKEN_BY_HASH)
                    .bind(token_hash)
                    .fetch_optional(self.pool())
                    .await
                    .map_err(repo_err)?
                    .as_ref()
                    .map(token_from_row)
                    .transpose()
            }

            async fn mark_refresh_token_used(&self, id: Uuid, now: Millis) -> RepoResult<bool> {
                // One conditional UPDATE: the database decides the race, not a read-then-write.
                let done = sqlx::query($sql::MARK_TOKEN_USED)
                    .bind(now)
                    .bind(id.to_string())
                    .execute(self.pool())
                    .await
                    .map_err(repo_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn revoke_token_family(&self, family_id: Uuid, now: Millis) -> RepoResult<u64> {
                let done = sqlx::query($sql::REVOKE_FAMILY)
                    .bind(now)
                    .bind(family_id.to_string())
                    .execute(self.pool())
                    .await
                    .map_err(repo_err)?;
                Ok(done.rows_affected())
            }

            async fn delete_expired_refresh_tokens(&self, now: Millis) -> RepoResult<u64> {
                let done = sqlx::query($sql::DELETE_EXPIRED_TOKENS)
                    .bind(now)
                    .execute(self.pool())
                    .await
                    .map_err(repo_err)?;
                Ok(done.rows_affected())
            }
        }
    };
}

pub(crate) use impl_user_repos;

/// The columns of `users`, in the order every statement lists them.
macro_rules! user_columns {
    () => {
        "id, email, password_hash, role, tier, stripe_customer_id, created_at, updated_at"
    };
}

/// The columns of `refresh_tokens`.
macro_rules! token_columns {
    () => {
        "id, user_id, family_id, token_hash, expires_at, created_at, used_at, revoked_at"
    };
}

pub(crate) use {token_columns, user_columns};
