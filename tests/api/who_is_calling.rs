//! Who is calling, decided once (issue 10, item 2): a request's token is verified and
//! its user row read exactly once, whether the rate limiter or the route's bearer check
//! is the first to ask, and tier-gated routes use the tier of that one read. And one
//! rate policy: HTTP requests and WebSocket chats of one user spend one budget.

use adiuva_core::domain::Tier;
use serde_json::{Value, json};

use crate::chat::{SERVER_KEY, chat_app, connect, fake_with, next, play_device, send};
use crate::helpers::{TestApp, assert_error, email, spawn_app_counting_db};
use crate::records::{b64, sha};
use crate::vectors::item;

/// Registers through the library (no HTTP budget spent) on `tier`; returns the token.
async fn signed_in(app: &TestApp, tier: Tier) -> (String, String) {
    let e = email("once");
    let tokens = app
        .adiuva
        .auth()
        .register(&e, crate::helpers::PASSWORD)
        .await
        .expect("register");
    app.adiuva
        .accounts()
        .set_tier(&e, tier)
        .await
        .expect("tier");
    (e, tokens.access_token)
}

fn verb(app: &TestApp, method: &str, path: &str, token: &str) -> reqwest::RequestBuilder {
    app.client
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            app.url(path),
        )
        .bearer_auth(token)
}

/// One request per kind of authenticated route, the tier-gated ones above all; each
/// must read its user once. Run with rate limits on (the middleware authenticates and
/// hands the principal to the route) and off (the route's bearer check does).
async fn every_route_reads_its_user_once(limits_on: bool) {
    let (app, db) = spawn_app_counting_db(|s| {
        s.rate_limit_enabled = limits_on;
        s.quota_gb_bytes = 1 << 20;
    })
    .await;
    let (_, token) = signed_in(&app, Tier::Pro).await;
    let blob = b"sealed bytes";
    let body = json!({"table": "notes", "blob": b64(blob), "checksum": sha(blob)});

    db.reset();
    let resp = verb(&app, "POST", "/storage/records", &token)
        .json(&body)
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status(), 200, "create a record (gated: cloud storage)");
    assert_eq!(db.user_reads(), 1, "create a record: {:?}", db.snapshot());
    let id = resp.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let other = b"other sealed bytes";
    let requests: Vec<(&str, reqwest::RequestBuilder)> = vec![
        (
            "update a record (gated)",
            verb(&app, "PUT", &format!("/storage/records/{id}"), &token)
                .json(&json!({"blob": b64(other), "checksum": sha(other)})),
        ),
        (
            "upsert vectors (gated)",
            verb(&app, "POST", "/storage/vectors/upsert", &token)
                .json(&json!({"vectors": [item("v1", b"vec", &[1.0, 0.0])]})),
        ),
        (
            "upload a backup (gated: backups)",
            verb(&app, "PUT", "/backup", &token)
                .header("x-backup-version", "1")
                .header("x-backup-timestamp", "1700000000000")
                .header("x-backup-checksum", sha(b"backup"))
                .body(b"backup".to_vec()),
        ),
        (
            "list playbooks (by tier)",
            verb(&app, "GET", "/plans/playbook", &token),
        ),
        ("read the profile", verb(&app, "GET", "/auth/me", &token)),
        (
            "list records",
            verb(&app, "GET", "/storage/records", &token),
        ),
        ("list devices", verb(&app, "GET", "/devices", &token)),
    ];
    for (what, req) in requests {
        db.reset();
        let resp = req.send().await.expect(what);
        assert_eq!(resp.status(), 200, "{what}");
        assert_eq!(db.user_reads(), 1, "{what}: {:?}", db.snapshot());
    }

    // The chat socket: the upgrade reads the user once, and so does each chat on it
    // (the re-check that the account and session still stand, which also gives the
    // tier for the budget).
    db.reset();
    let mut ws = connect(&app, &token).await;
    assert_eq!(db.user_reads(), 1, "the upgrade: {:?}", db.snapshot());
    db.reset();
    send(&mut ws, json!({"type": "chat_request", "message": "hi"})).await;
    let frame = next(&mut ws).await;
    assert_eq!(frame["code"], "llm_unavailable", "{frame}");
    assert_eq!(db.user_reads(), 1, "a chat: {:?}", db.snapshot());

    // The device socket: the upgrade reads the user once; its hello reads no user.
    db.reset();
    let mut device = crate::devices::connect_device(&app, &token).await;
    assert_eq!(
        db.user_reads(),
        1,
        "the device upgrade: {:?}",
        db.snapshot()
    );
    db.reset();
    send(&mut device, crate::devices::hello("laptop-1")).await;
    assert_eq!(next(&mut device).await["type"], "hello_ack");
    assert_eq!(db.user_reads(), 0, "a device hello: {:?}", db.snapshot());

    // A socket that sends its token as `?token=` (browsers cannot set the header): the
    // middleware sees no header, so the upgrade's own authentication is the one read.
    db.reset();
    let url = format!(
        "ws://127.0.0.1:{}/api/v1/chat/stream?token={token}",
        app.port
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("ws connect with ?token=");
    assert_eq!(
        db.user_reads(),
        1,
        "the ?token= upgrade: {:?}",
        db.snapshot()
    );
    db.reset();
    send(&mut ws, json!({"type": "chat_request", "message": "hi"})).await;
    let frame = next(&mut ws).await;
    assert_eq!(frame["code"], "llm_unavailable", "{frame}");
    assert_eq!(db.user_reads(), 1, "a chat on it: {:?}", db.snapshot());
}

#[tokio::test]
async fn a_request_reads_its_user_once_with_rate_limits_on() {
    every_route_reads_its_user_once(true).await;
}

#[tokio::test]
async fn a_request_reads_its_user_once_with_rate_limits_off() {
    every_route_reads_its_user_once(false).await;
}

/// The one read is fresh: a tier change applies to the very next request of a token
/// issued before it (the tier comes from the database, never from the token).
#[tokio::test]
async fn the_one_read_sees_a_tier_change_at_once() {
    let (app, db) = spawn_app_counting_db(|_| {}).await;
    let (e, token) = signed_in(&app, Tier::Free).await;
    let blob = b"bytes";
    let body = json!({"table": "notes", "blob": b64(blob), "checksum": sha(blob)});
    db.reset();
    let resp = verb(&app, "POST", "/storage/records", &token)
        .json(&body)
        .send()
        .await
        .expect("create");
    assert_error(resp, 403, "tier_required").await;
    assert_eq!(db.user_reads(), 1, "{:?}", db.snapshot());
    app.adiuva
        .accounts()
        .set_tier(&e, Tier::Pro)
        .await
        .expect("tier");
    db.reset();
    let resp = verb(&app, "POST", "/storage/records", &token)
        .json(&body)
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status(), 200);
    assert_eq!(db.user_reads(), 1, "{:?}", db.snapshot());
}

/// One bearer parser: however the header is spelled (scheme case, extra spaces), the
/// middleware and the route's check judge the same token, so the route finds the
/// middleware's outcome and the user is read once.
#[tokio::test]
async fn every_spelling_of_the_header_is_parsed_once() {
    let (app, db) = spawn_app_counting_db(|_| {}).await;
    let (_, token) = signed_in(&app, Tier::Free).await;
    for header in [
        format!("Bearer {token}"),
        format!("bearer {token}"),
        format!("BEARER   {token}  "),
    ] {
        db.reset();
        let resp = app
            .client
            .get(app.url("/auth/me"))
            .header("authorization", &header)
            .send()
            .await
            .expect("me");
        assert_eq!(resp.status(), 200, "{header:?}");
        assert_eq!(db.user_reads(), 1, "{header:?}: {:?}", db.snapshot());
    }
}

/// A refusal is decided once too: the token of a deleted account costs one read, and
/// the answer is the same 401 whichever check reached it.
#[tokio::test]
async fn a_refused_token_costs_one_read_too() {
    for limits_on in [true, false] {
        let (app, db) = spawn_app_counting_db(|s| s.rate_limit_enabled = limits_on).await;
        let (e, token) = signed_in(&app, Tier::Pro).await;
        app.adiuva.accounts().delete(&e).await.expect("delete");
        db.reset();
        let resp = verb(&app, "GET", "/storage/records", &token)
            .send()
            .await
            .expect("list");
        assert_error(resp, 401, "unauthorized").await;
        assert_eq!(
            db.user_reads(),
            1,
            "limits on: {limits_on}; {:?}",
            db.snapshot()
        );
    }
}

/// A chat that answers "ok" (the router picks the note agent).
async fn ok_chat_app() -> (adiuva_adapters::llm::fake::FakeOpenAi, TestApp) {
    use adiuva_adapters::llm::fake::Reply;
    let fake = fake_with(|body: &Value| {
        Some(if crate::chat::is_router(body) {
            Reply::Text("note_agent".into())
        } else {
            Reply::Text("ok".into())
        })
    })
    .await;
    let app = chat_app(&fake, Some(SERVER_KEY)).await;
    (fake, app)
}

/// HTTP requests spend the budget chats need: a free user (20 a minute) who opens a
/// socket (1) and sends 19 HTTP requests has a chat refused with the `rate_limited`
/// error frame; the socket stays open.
#[tokio::test]
async fn http_requests_use_up_the_budget_of_chats() {
    let (_fake, app) = ok_chat_app().await;
    let (_, token) = signed_in(&app, Tier::Free).await;
    let mut ws = connect(&app, &token).await;
    for i in 0..19 {
        assert_eq!(app.me(&token).await.status(), 200, "request {i}");
    }
    send(&mut ws, json!({"type": "chat_request", "message": "hi"})).await;
    let frame = next(&mut ws).await;
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(frame["code"], "rate_limited", "{frame}");
    assert!(
        frame["retry_after"]
            .as_u64()
            .is_some_and(|s| (1..=60).contains(&s)),
        "{frame}"
    );
    assert!(
        frame["detail"]
            .as_str()
            .is_some_and(|d| d.contains("20 per minute")),
        "{frame}"
    );
    // HTTP is over budget too: one budget, not two.
    let resp = app.me(&token).await;
    assert!(resp.headers().contains_key("retry-after"));
    assert_error(resp, 429, "rate_limited").await;
}

/// And the other way: chats spend the budget HTTP requests need. The upgrade and 19
/// chats use a free user's 20; the next HTTP request is 429 with `Retry-After`.
#[tokio::test]
async fn chats_use_up_the_budget_of_http_requests() {
    let (_fake, app) = ok_chat_app().await;
    let (_, token) = signed_in(&app, Tier::Free).await;
    let mut ws = connect(&app, &token).await;
    for i in 0..19 {
        send(&mut ws, json!({"type": "chat_request", "message": "hi"})).await;
        let (_, _, last) = play_device(&mut ws, |_, _| json!(null)).await;
        assert_eq!(last["type"], "final", "chat {i}: {last}");
    }
    let resp = app.me(&token).await;
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_error(resp, 429, "rate_limited").await;
}
