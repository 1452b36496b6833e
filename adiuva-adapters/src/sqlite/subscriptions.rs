//! Subscriptions on SQLite.

use adiuva_core::domain::UserId;
use adiuva_core::ports::db::{RepoResult, Subscription, SubscriptionRepo};
use async_trait::async_trait;

use super::SqliteDb;
use crate::rows::{repo_err, subscription_from_row};

#[async_trait]
impl SubscriptionRepo for SqliteDb {
    async fn upsert_subscription(&self, s: &Subscription) -> RepoResult<()> {
        sqlx::query(
            "INSERT INTO subscriptions (id, user_id, stripe_subscription_id, tier, status, current_period_end, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (stripe_subscription_id) DO UPDATE SET
                tier = excluded.tier, status = excluded.status, current_period_end = excluded.current_period_end",
        )
        .bind(s.id.to_string())
        .bind(s.user_id.to_string())
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

    async fn subscription_for_user(&self, user_id: UserId) -> RepoResult<Option<Subscription>> {
        sqlx::query(
            "SELECT id, user_id, stripe_subscription_id, tier, status, current_period_end, created_at
             FROM subscriptions WHERE user_id = ? ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(user_id.to_string())
        .fetch_optional(self.pool())
        .await
        .map_err(repo_err)?
        .as_ref()
        .map(subscription_from_row)
        .transpose()
    }
}
