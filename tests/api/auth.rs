//! Accounts and sessions over HTTP.

use adiuva_core::domain::Tier;
use base64::Engine as _;
use serde_json::{Value, json};

use crate::helpers::{
    JWT_SECRET, PASSWORD, TestApp, access, assert_error, assert_unauthorized,
    assert_validation_error, detail, email, json_body, refresh_token, send, spawn_app,
};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

#[tokio::test]
async fn register_then_me_then_login() {
    let app = spawn_app().await;
    let raw = email("Reg");
    let before = now_ms();
    let tokens = app
        .register_ok(&format!("  {}  ", raw.to_uppercase()))
        .await;
    for k in ["access_token", "refresh_token"] {
        assert!(tokens[k].as_str().is_some_and(|t| t.len() > 20), "{k}");
    }
    let expires_at = tokens["expires_at"]
        .as_i64()
        .expect("expires_at is an integer");
    let fifteen_min = 15 * 60 * 1000;
    assert!(
        expires_at >= before + fifteen_min - 1000 && expires_at <= now_ms() + fifteen_min + 1000,
        "ms, 15 min ahead: {expires_at}"
    );

    let me = app.me(access(&tokens)).await;
    assert_eq!(me.status(), 200);
    let me: Value = json_body(me).await;
    assert_eq!(me["email"], raw.to_lowercase(), "trimmed and lower-cased");
    assert_eq!(me["tier"], "free");
    assert_eq!(me["role"], "user");
    assert!(uuid::Uuid::parse_str(me["id"].as_str().expect("id")).is_ok());
    assert!(me.get("password_hash").is_none() && me.get("password").is_none());

    let login = app.login(&raw, PASSWORD).await;
    assert_eq!(login.status(), 200);
    let again: Value = json_body(login).await;
    assert_ne!(again["refresh_token"], tokens["refresh_token"]);
    assert_eq!(app.me_json(access(&again)).await["id"], me["id"]);
}

#[tokio::test]
async fn duplicate_email_is_409_whatever_the_case() {
    let app = spawn_app().await;
    let e = email("dup");
    app.register_ok(&e).await;
    assert_error(app.register(&e).await, 409, "conflict").await;
    assert_error(
        app.register(&format!(" {} ", e.to_uppercase())).await,
        409,
        "conflict",
    )
    .await;
}

/// Registers `email` with `password`, asserts the 422, and returns its detail.
async fn refused_registration(app: &TestApp, email: &str, password: &str) -> String {
    let body = json!({ "email": email, "password": password });
    let refused = assert_validation_error(app.post_json("/auth/register", &body).await).await;
    detail(&refused).to_owned()
}

#[tokio::test]
async fn bad_emails_and_short_passwords_are_422() {
    let app = spawn_app().await;
    for bad in [
        "",
        "plain",
        "a@b",
        "@example.com",
        "a b@example.com",
        "a@@example.com",
        "a@example..com",
    ] {
        let detail = refused_registration(&app, bad, PASSWORD).await;
        assert!(detail.starts_with("email"), "{bad:?}: {detail}");
    }
    for short in ["", "123456789", "ninechars"] {
        let detail = refused_registration(&app, &email("pw"), short).await;
        assert!(detail.contains("at least 10"), "{detail}");
    }
    // Nothing was created by the failures.
    assert!(
        app.adiuva
            .accounts()
            .list(0, 100)
            .await
            .expect("list")
            .is_empty()
    );
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_401() {
    let app = spawn_app().await;
    let e = email("who");
    app.register_ok(&e).await;
    let hasher = app.adiuva.auth().hasher();
    let before = hasher.verifications();
    let wrong = app.login(&e, "not the password").await;
    let wrong_headers = wrong.headers().get("www-authenticate").cloned();
    let wrong = assert_unauthorized(wrong).await;
    let unknown = assert_unauthorized(app.login(&email("nobody"), PASSWORD).await).await;
    assert_eq!(wrong, unknown, "indistinguishable bodies");
    assert_eq!(
        wrong_headers.as_ref().and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    // Both ran one argon2 verification: the unknown email against the dummy hash.
    assert_eq!(hasher.verifications(), before + 2);
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let app = spawn_app().await;
    let e = email("rot");
    let first = app.register_ok(&e).await;
    let r1 = refresh_token(&first);

    let second: Value = json_body(app.refresh(r1).await).await;
    let r2 = refresh_token(&second);
    assert_ne!(r1, r2, "rotated on every use");
    assert_eq!(app.me(access(&second)).await.status(), 200);

    let third: Value = json_body(app.refresh(r2).await).await;
    let r3 = refresh_token(&third);

    // r1 was already rotated: replaying it revokes the whole family, r3 included.
    assert_unauthorized(app.refresh(r1).await).await;
    assert_unauthorized(app.refresh(r3).await).await;

    // A separate login is a separate family and is unaffected.
    let other: Value = json_body(app.login(&e, PASSWORD).await).await;
    assert_eq!(app.refresh(refresh_token(&other)).await.status(), 200);
}

#[tokio::test]
async fn concurrent_use_of_one_refresh_token_lets_at_most_one_through() {
    let app = spawn_app().await;
    let t = app.register_ok(&email("race")).await;
    let token = refresh_token(&t);
    let results = futures::future::join_all((0..6).map(|_| app.refresh(token))).await;
    let ok = results.iter().filter(|r| r.status() == 200).count();
    assert_eq!(
        ok,
        1,
        "exactly one rotation wins: {:?}",
        results.iter().map(|r| r.status()).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn bad_refresh_tokens_are_401() {
    let app = spawn_app().await;
    let t = app.register_ok(&email("badref")).await;
    for bad in ["", "garbage", access(&t)] {
        assert_unauthorized(app.refresh(bad).await).await;
    }
    assert_validation_error(app.post_json("/auth/refresh", &json!({})).await).await;
}

fn sign(header: &Value, claims: &Value, secret: &[u8]) -> String {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let alg = match header["alg"].as_str() {
        Some("HS512") => jsonwebtoken::Algorithm::HS512,
        _ => jsonwebtoken::Algorithm::HS256,
    };
    encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).expect("sign")
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
}

#[tokio::test]
async fn forged_expired_and_malformed_access_tokens_are_401() {
    let app = spawn_app().await;
    let t = app.register_ok(&email("jwt")).await;
    let access = access(&t).to_owned();
    let me = app.me_json(&access).await;
    let sub = me["id"].as_str().expect("id").to_owned();
    let now = now_ms() / 1000;
    let hs256 = json!({"alg": "HS256"});
    let valid_claims = json!({"sub": sub, "iat": now, "exp": now + 600, "typ": "access"});

    // Sanity: a token we sign with the server's secret and the right claims works.
    assert_eq!(
        app.me(&sign(&hs256, &valid_claims, JWT_SECRET.as_bytes()))
            .await
            .status(),
        200
    );

    let mut cases: Vec<(&str, String)> = vec![
        (
            "expired",
            sign(
                &hs256,
                &json!({"sub": sub, "iat": now - 1000, "exp": now - 10, "typ": "access"}),
                JWT_SECRET.as_bytes(),
            ),
        ),
        (
            "wrong key",
            sign(
                &hs256,
                &valid_claims,
                b"another-secret-another-secret-another!!",
            ),
        ),
        (
            "wrong algorithm",
            sign(
                &json!({"alg": "HS512"}),
                &valid_claims,
                JWT_SECRET.as_bytes(),
            ),
        ),
        (
            "not an access token",
            sign(
                &hs256,
                &json!({"sub": sub, "iat": now, "exp": now + 600, "typ": "refresh"}),
                JWT_SECRET.as_bytes(),
            ),
        ),
        (
            "no exp",
            sign(
                &hs256,
                &json!({"sub": sub, "iat": now, "typ": "access"}),
                JWT_SECRET.as_bytes(),
            ),
        ),
        (
            "sub not a uuid",
            sign(
                &hs256,
                &json!({"sub": "admin", "iat": now, "exp": now + 600, "typ": "access"}),
                JWT_SECRET.as_bytes(),
            ),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&valid_claims)
            ),
        ),
        ("garbage", "not.a.jwt".into()),
    ];
    // Tampered: same signature, claims changed to another subject.
    let parts: Vec<&str> = access.split('.').collect();
    let other = json!({"sub": uuid::Uuid::now_v7().to_string(), "iat": now, "exp": now + 600, "typ": "access"});
    cases.push((
        "tampered payload",
        format!("{}.{}.{}", parts[0], b64(&other), parts[2]),
    ));
    let mut sig = parts[2].to_owned();
    let last = if sig.ends_with('A') { 'B' } else { 'A' };
    sig.pop();
    sig.push(last);
    cases.push((
        "tampered signature",
        format!("{}.{}.{}", parts[0], parts[1], sig),
    ));

    for (name, token) in cases {
        let resp = app.me(&token).await;
        assert_eq!(resp.status(), 401, "{name}");
        assert_unauthorized(resp).await;
    }
    // No header, another scheme.
    assert_unauthorized(app.get("/auth/me").await).await;
    let basic = app
        .request(reqwest::Method::GET, "/auth/me")
        .header("authorization", "Basic dXNlcjpwYXNz");
    assert_unauthorized(send(basic).await).await;
}

#[tokio::test]
async fn tier_and_role_come_from_the_database_not_the_token() {
    let app = spawn_app().await;
    let e = email("tier");
    let t = app.register_ok(&e).await;
    let access = access(&t);
    app.set_tier(&e, Tier::Power).await;
    let me = app.me_json(access).await;
    assert_eq!(me["tier"], "power", "the same token shows the new tier");
    // The token carries no tier or role claim at all.
    let payload = access.split('.').nth(1).expect("payload");
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("b64"),
    )
    .expect("json");
    assert!(
        claims.get("tier").is_none() && claims.get("role").is_none(),
        "{claims}"
    );
}

#[tokio::test]
async fn a_deleted_account_cannot_use_its_tokens() {
    let app = spawn_app().await;
    let e = email("gone");
    let t = app.register_ok(&e).await;
    app.adiuva.accounts().delete(&e).await.expect("delete");
    assert_unauthorized(app.me(access(&t)).await).await;
    assert_unauthorized(app.refresh(refresh_token(&t)).await).await;
}
