//! The [`RateLimiter`] conformance suite. Keys are made unique per run.

use std::time::Duration;

use crate::ports::rate_limit::{RateDecision, RateLimiter};

fn key(tag: &str) -> String {
    format!("conformance:{tag}:{}", uuid::Uuid::new_v4().simple())
}

/// Whether one more call on `key` (a budget of `limit` per `window`) passes: `true` for
/// `Allowed`, `false` for `Limited` (the only two verdicts).
async fn passes(limiter: &dyn RateLimiter, key: &str, limit: u32, window: Duration) -> bool {
    matches!(
        limiter.check(key, limit, window).await,
        RateDecision::Allowed { .. }
    )
}

/// Runs every check below.
pub async fn run_all(limiter: &dyn RateLimiter) {
    allows_the_limit_then_refuses(limiter).await;
    keys_are_independent(limiter).await;
    the_window_resets(limiter).await;
}

/// `limit` calls pass, the next is refused with a retry-after within the window.
pub async fn allows_the_limit_then_refuses(limiter: &dyn RateLimiter) {
    let k = key("limit");
    let window = Duration::from_secs(60);
    for i in 0..5 {
        match limiter.check(&k, 5, window).await {
            RateDecision::Allowed { remaining } => {
                assert_eq!(remaining, 4 - i, "remaining after call {i}")
            }
            other => panic!("call {i} of 5 must pass: {other:?}"),
        }
    }
    match limiter.check(&k, 5, window).await {
        RateDecision::Limited { retry_after } => {
            assert!(
                retry_after > Duration::ZERO && retry_after <= window,
                "retry_after {retry_after:?}"
            )
        }
        other => panic!("the 6th call must be limited: {other:?}"),
    }
}

/// One key's budget does not touch another's.
pub async fn keys_are_independent(limiter: &dyn RateLimiter) {
    let (a, b) = (key("a"), key("b"));
    let window = Duration::from_secs(60);
    assert!(passes(limiter, &a, 1, window).await, "a's one call");
    assert!(!passes(limiter, &a, 1, window).await, "a's budget is spent");
    assert!(passes(limiter, &b, 1, window).await, "b unaffected");
}

/// After the window, the budget is back.
pub async fn the_window_resets(limiter: &dyn RateLimiter) {
    let k = key("reset");
    let window = Duration::from_millis(300);
    assert!(passes(limiter, &k, 1, window).await, "the one call");
    assert!(!passes(limiter, &k, 1, window).await, "the budget is spent");
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(passes(limiter, &k, 1, window).await, "window over");
}

/// Two limiters over one shared backend (two server instances) share one budget.
pub async fn instances_share_budgets(first: &dyn RateLimiter, second: &dyn RateLimiter) {
    let k = key("shared");
    let window = Duration::from_secs(60);
    for i in 0..3 {
        assert!(passes(first, &k, 4, window).await, "call {i} of 4");
    }
    assert!(matches!(
        second.check(&k, 4, window).await,
        RateDecision::Allowed { remaining: 0 }
    ));
    assert!(
        !passes(first, &k, 4, window).await,
        "the shared budget is spent"
    );
    assert!(!passes(second, &k, 4, window).await, "for both instances");
}
