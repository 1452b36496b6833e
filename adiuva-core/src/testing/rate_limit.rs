//! The [`RateLimiter`] conformance suite. Keys are made unique per run.

use std::time::Duration;

use crate::ports::rate_limit::{RateDecision, RateLimiter};

fn key(tag: &str) -> String {
    format!("conformance:{tag}:{}", uuid::Uuid::new_v4().simple())
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
    assert!(matches!(
        limiter.check(&a, 1, window).await,
        RateDecision::Allowed { .. }
    ));
    assert!(matches!(
        limiter.check(&a, 1, window).await,
        RateDecision::Limited { .. }
    ));
    assert!(
        matches!(
            limiter.check(&b, 1, window).await,
            RateDecision::Allowed { .. }
        ),
        "b unaffected"
    );
}

/// After the window, the budget is back.
pub async fn the_window_resets(limiter: &dyn RateLimiter) {
    let k = key("reset");
    let window = Duration::from_millis(300);
    assert!(matches!(
        limiter.check(&k, 1, window).await,
        RateDecision::Allowed { .. }
    ));
    assert!(matches!(
        limiter.check(&k, 1, window).await,
        RateDecision::Limited { .. }
    ));
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(
        matches!(
            limiter.check(&k, 1, window).await,
            RateDecision::Allowed { .. }
        ),
        "window over"
    );
}

/// Two limiters over one shared backend (two server instances) share one budget.
pub async fn instances_share_budgets(first: &dyn RateLimiter, second: &dyn RateLimiter) {
    let k = key("shared");
    let window = Duration::from_secs(60);
    for _ in 0..3 {
        assert!(matches!(
            first.check(&k, 4, window).await,
            RateDecision::Allowed { .. }
        ));
    }
    assert!(matches!(
        second.check(&k, 4, window).await,
        RateDecision::Allowed { remaining: 0 }
    ));
    assert!(matches!(
        first.check(&k, 4, window).await,
        RateDecision::Limited { .. }
    ));
    assert!(matches!(
        second.check(&k, 4, window).await,
        RateDecision::Limited { .. }
    ));
}
