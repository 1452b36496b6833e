//! Request budgets (plan 9b): per IP before sign-in, per user by tier after.

use adiuva_core::domain::Tier;

use crate::helpers::{PASSWORD, assert_error, email, spawn_app_with};

#[tokio::test]
async fn unauthenticated_requests_are_limited_per_ip() {
    let app = spawn_app_with(|s| s.rate_limit_ip_per_minute = 3).await;
    for _ in 0..3 {
        assert_eq!(app.login(&email("nobody"), PASSWORD).await.status(), 401);
    }
    let resp = app.login(&email("nobody"), PASSWORD).await;
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body = assert_error(resp, 429, "rate_limited").await;
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("3 per minute"),
        "{body}"
    );
    // Health stays reachable for load balancers.
    assert_eq!(app.get("/health").await.status(), 200);
    // A 429 still carries CORS headers for the desktop app.
    let resp = app
        .client
        .get(app.url("/auth/me"))
        .header("origin", "app://adiuva")
        .send()
        .await
        .expect("req");
    assert_eq!(resp.status(), 429);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "app://adiuva"
    );
}

#[tokio::test]
async fn signed_in_users_are_limited_by_their_tier() {
    let app = spawn_app_with(|s| s.rate_limit_ip_per_minute = 1000).await;
    let e = email("budget");
    let t = app.register_ok(&e).await;
    let token = t["access_token"].as_str().expect("access");
    for i in 0..20 {
        assert_eq!(
            app.me(token).await.status(),
            200,
            "request {i} of the free tier's 20"
        );
    }
    let resp = app.me(token).await;
    assert!(resp.headers().contains_key("retry-after"));
    assert_error(resp, 429, "rate_limited").await;
    // Another user has a budget of their own.
    let other = app.register_ok(&email("other")).await;
    assert_eq!(
        app.me(other["access_token"].as_str().expect("access"))
            .await
            .status(),
        200
    );
    // Upgrading raises the budget at once: the tier is read from the database.
    app.adiuva
        .accounts()
        .set_tier(&e, Tier::Pro)
        .await
        .expect("tier");
    assert_eq!(app.me(token).await.status(), 200);
}

#[tokio::test]
async fn limits_can_be_turned_off() {
    let app = spawn_app_with(|s| {
        s.rate_limit_enabled = false;
        s.rate_limit_ip_per_minute = 1;
    })
    .await;
    for _ in 0..5 {
        assert_eq!(app.login(&email("x"), PASSWORD).await.status(), 401);
    }
}

/// The same budgets counted in Redis, which all instances share (the adapter suite
/// checks two limiters on one Redis share a budget); CI sets the URL.
#[tokio::test]
async fn budgets_are_counted_in_redis_when_configured() {
    let Some(url) = adiuva_core::testing::services::service(
        "ADIUVA_TEST_REDIS_URL",
        "Redis-backed rate limits",
    ) else {
        return;
    };
    let app = spawn_app_with(|s| {
        s.redis_url = Some(adiuva_server::settings::RedactedUrl(url));
        s.rate_limit_ip_per_minute = 1000;
    })
    .await;
    let t = app.register_ok(&email("redis")).await;
    let token = t["access_token"].as_str().expect("access");
    for i in 0..20 {
        assert_eq!(app.me(token).await.status(), 200, "request {i}");
    }
    assert_error(app.me(token).await, 429, "rate_limited").await;
}
