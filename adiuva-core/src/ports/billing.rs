//! Payments. Disabled by default (tiers are then set with `adiuva user set-tier`).

use async_trait::async_trait;

use crate::domain::{Millis, Tier, UserId};

/// What billing can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BillingError {
    /// Billing is not configured on this server.
    #[error("billing is not enabled on this server")]
    Disabled,
    /// A webhook's signature did not verify (or is too old).
    #[error("invalid webhook signature")]
    BadSignature,
    /// The provider refused the request.
    #[error("payment provider error: {0}")]
    Provider(String),
    /// The provider cannot be reached.
    #[error("payment provider unavailable: {0}")]
    Unavailable(String),
}

/// A subscription change announced by the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BillingEvent {
    /// A subscription started or changed.
    SubscriptionActive {
        /// Whose.
        user_id: UserId,
        /// Provider id.
        subscription_id: String,
        /// What it pays for.
        tier: Tier,
        /// End of the paid period.
        current_period_end: Millis,
    },
    /// A subscription ended: the user falls back to `free`.
    SubscriptionEnded {
        /// Provider id.
        subscription_id: String,
    },
    /// A payment failed (the subscription stays until the provider ends it).
    PaymentFailed {
        /// Provider id.
        subscription_id: String,
    },
    /// Anything we do not act on.
    Ignored,
}

/// A payment provider.
///
/// Contract: `verify_webhook` checks the signature over the exact bytes received before
/// parsing anything; events may repeat and arrive out of order, so handlers are idempotent.
#[async_trait]
pub trait Billing: Send + Sync {
    /// A hosted checkout page for `tier`; returns its URL.
    async fn create_checkout(
        &self,
        user_id: UserId,
        email: &str,
        tier: Tier,
    ) -> Result<String, BillingError>;
    /// Verifies and decodes a webhook.
    fn verify_webhook(
        &self,
        payload: &[u8],
        signature_header: &str,
        now: Millis,
    ) -> Result<BillingEvent, BillingError>;
    /// Cancels at period end.
    async fn cancel_subscription(&self, subscription_id: &str) -> Result<(), BillingError>;
}
