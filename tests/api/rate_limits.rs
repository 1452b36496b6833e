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
    assert_rate_limited(resp, 3).await;
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

/// Issue #9 item 8: a token sent to a public route does not choose the budget. Four
/// accounts' tokens on `/auth/login` from one IP run out the per-IP budget at the same
/// count as no token at all.
#[tokio::test]
async fn tokens_on_public_routes_buy_no_extra_guesses() {
    const BUDGET: usize = 6;
    let guesses_until_429 = |with_tokens: bool| async move {
        let app = spawn_app_with(|s| {
            s.rate_limit_ip_per_minute = BUDGET as u32;
            s.login_attempts_per_email_per_minute = 1000;
        })
        .await;
        // Accounts made through the library, so registering spends no HTTP budget.
        let mut tokens = Vec::new();
        for i in 0..4 {
            let t = app
                .adiuva
                .auth()
                .register(&email(&format!("owned{i}")), PASSWORD)
                .await
                .expect("register");
            tokens.push(t.access_token);
        }
        let mut allowed = 0;
        for i in 0..BUDGET * 5 {
            let mut req = app.client.post(app.url("/auth/login")).json(
                &serde_json::json!({"email": email("victim"), "password": "wrong password!"}),
            );
            if with_tokens {
                req = req.bearer_auth(&tokens[i % tokens.len()]);
            }
            let resp = req.send().await.expect("login");
            if resp.status() == 429 {
                assert!(resp.headers().contains_key("retry-after"));
                assert_error(resp, 429, "rate_limited").await;
                break;
            }
            assert_eq!(resp.status(), 401, "guess {i}");
            allowed += 1;
        }
        allowed
    };
    let without = guesses_until_429(false).await;
    let with = guesses_until_429(true).await;
    assert_eq!(without, BUDGET);
    assert_eq!(
        with,
        without,
        "tokens bought {} extra guesses",
        with - without
    );
}

/// Login attempts also count per target email, whatever the IP: over the cap the answer
/// is 429 before any password hashing, even for the right password; other emails are
/// unaffected.
#[tokio::test]
async fn login_attempts_are_capped_per_target_email() {
    let app = spawn_app_with(|s| {
        s.rate_limit_ip_per_minute = 1000;
        s.login_attempts_per_email_per_minute = 3;
    })
    .await;
    let victim = email("victim");
    app.register_ok(&victim).await;
    for _ in 0..3 {
        assert_eq!(app.login(&victim, "wrong password!").await.status(), 401);
    }
    let hashes = app.adiuva.auth().hasher().verifications();
    // The same address however it is spelled: the count is per normalised email.
    let resp = app
        .login(&format!("  {}  ", victim.to_uppercase()), PASSWORD)
        .await;
    assert_rate_limited(resp, 3).await;
    assert_eq!(
        app.adiuva.auth().hasher().verifications(),
        hashes,
        "a refused attempt costs no argon2 hash"
    );
    let other = email("other");
    app.register_ok(&other).await;
    assert_eq!(app.login(&other, PASSWORD).await.status(), 200);
}

/// A 429 `rate_limited` naming the limit, with a `Retry-After` of 1–60 s.
async fn assert_rate_limited(resp: reqwest::Response, per_minute: u32) {
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
            .contains(&format!("{per_minute} per minute")),
        "{body}"
    );
}
