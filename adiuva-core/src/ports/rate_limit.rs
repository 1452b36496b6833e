//! Request budgets per key per window.

use std::time::Duration;

use async_trait::async_trait;

/// The verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Go ahead; `remaining` requests are left in this window.
    Allowed {
        /// Requests left.
        remaining: u32,
    },
    /// Over budget; try again after this long.
    Limited {
        /// Until the window has room.
        retry_after: Duration,
    },
}

/// Counts requests.
///
/// Contract: at most `limit` calls per `key` are allowed in any window of length `window`
/// (fixed or sliding, the adapter documents which); a shared backend (Redis) enforces the
/// budget across all instances. If the backend is down the limiter fails open and logs,
/// rather than taking the whole API down with it.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Counts one request against `key`.
    async fn check(&self, key: &str, limit: u32, window: Duration) -> RateDecision;
}
