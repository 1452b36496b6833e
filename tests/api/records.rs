//! Cloud records over HTTP (plan 8c), on SQLite + local disk (and on PostgreSQL in
//! `postgres.rs`).

use adiuva_core::domain::Tier;
use adiuva_core::ports::BlobStore as _;
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::helpers::{TestApp, assert_error, email, spawn_app, spawn_app_with};

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn sha(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A signed-in user on `tier`; returns the access token.
pub async fn user_on(app: &TestApp, tier: Tier) -> String {
    let e = email("rec");
    let t = app.register_ok(&e).await;
    app.adiuva
        .accounts()
        .set_tier(&e, tier)
        .await
        .expect("tier");
    t["access_token"].as_str().expect("access").to_owned()
}

async fn create(app: &TestApp, token: &str, table: &str, blob: &[u8]) -> reqwest::Response {
    app.client
        .post(app.url("/storage/records"))
        .bearer_auth(token)
        .json(&json!({"table": table, "blob": b64(blob), "checksum": sha(blob)}))
        .send()
        .await
        .expect("req")
}

fn verb(app: &TestApp, method: &str, path: &str, token: &str) -> reqwest::RequestBuilder {
    app.client
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            app.url(path),
        )
        .bearer_auth(token)
}

/// Full flow for one user on any stack.
pub async fn record_flow(app: &TestApp) {
    let token = user_on(app, Tier::Pro).await;
    let blob = b"\x00\x01 client-encrypted \xff bytes".to_vec();
    let resp = create(app, &token, "notes", &blob).await;
    assert_eq!(resp.status(), 200);
    let created: Value = resp.json().await.expect("json");
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(created["created_at"].as_i64().is_some());

    let got = verb(app, "GET", &format!("/storage/records/{id}"), &token)
        .send()
        .await
        .expect("req");
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "application/octet-stream");
    assert_eq!(got.headers()["x-checksum"], sha(&blob).as_str());
    assert_eq!(
        got.headers()["etag"],
        format!("\"{}\"", sha(&blob)).as_str()
    );
    assert_eq!(got.bytes().await.expect("body").as_ref(), blob.as_slice());

    create(app, &token, "tasks", b"second").await;
    let list: Vec<Value> = verb(app, "GET", "/storage/records", &token)
        .send()
        .await
        .expect("req")
        .json()
        .await
        .expect("json");
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["id"], id.as_str(), "newest first");
    assert!(
        list.iter().all(|r| r.get("blob").is_none()),
        "listing never returns blobs"
    );
    let notes: Vec<Value> = verb(app, "GET", "/storage/records?table=notes", &token)
        .send()
        .await
        .expect("req")
        .json()
        .await
        .expect("json");
    assert_eq!(notes.len(), 1);
    let page2: Vec<Value> = verb(app, "GET", "/storage/records?page=2&limit=1", &token)
        .send()
        .await
        .expect("req")
        .json()
        .await
        .expect("json");
    assert_eq!(page2[0]["id"], id.as_str());

    let new = b"replaced".to_vec();
    let put = verb(app, "PUT", &format!("/storage/records/{id}"), &token)
        .json(&json!({"blob": b64(&new), "checksum": sha(&new)}))
        .send()
        .await
        .expect("req");
    assert_eq!(put.status(), 200);
    assert_eq!(
        put.json::<Value>().await.expect("json"),
        json!({"ok": true})
    );
    let got = verb(app, "GET", &format!("/storage/records/{id}"), &token)
        .send()
        .await
        .expect("req");
    assert_eq!(got.headers()["x-checksum"], sha(&new).as_str());
    assert_eq!(got.bytes().await.expect("body").as_ref(), new.as_slice());

    let del = verb(app, "DELETE", &format!("/storage/records/{id}"), &token)
        .send()
        .await
        .expect("req");
    assert_eq!(
        del.json::<Value>().await.expect("json"),
        json!({"ok": true})
    );
    assert_error(
        verb(app, "GET", &format!("/storage/records/{id}"), &token)
            .send()
            .await
            .expect("req"),
        404,
        "not_found",
    )
    .await;
    assert_error(
        verb(app, "DELETE", &format!("/storage/records/{id}"), &token)
            .send()
            .await
            .expect("req"),
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn create_get_list_update_delete() {
    let app = spawn_app().await;
    record_flow(&app).await;
}

#[tokio::test]
async fn a_wrong_checksum_is_400_and_stores_nothing() {
    let app = spawn_app().await;
    let token = user_on(&app, Tier::Pro).await;
    let resp = verb(&app, "POST", "/storage/records", &token)
        .json(&json!({"table": "notes", "blob": b64(b"real"), "checksum": sha(b"other")}))
        .send()
        .await
        .expect("req");
    assert_error(resp, 400, "checksum_mismatch").await;
    let list: Vec<Value> = verb(&app, "GET", "/storage/records", &token)
        .send()
        .await
        .expect("req")
        .json()
        .await
        .expect("json");
    assert!(list.is_empty());
    let orphans = app
        .adiuva
        .records()
        .expect("records")
        .garbage_collect(false)
        .await
        .expect("gc");
    assert!(orphans.is_empty(), "no blob either: {orphans:?}");

    // An update with a wrong checksum leaves the old bytes.
    let created: Value = create(&app, &token, "notes", b"keep me")
        .await
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("id");
    let bad = verb(&app, "PUT", &format!("/storage/records/{id}"), &token)
        .json(&json!({"blob": b64(b"new"), "checksum": sha(b"not new")}))
        .send()
        .await
        .expect("req");
    assert_error(bad, 400, "checksum_mismatch").await;
    let got = verb(&app, "GET", &format!("/storage/records/{id}"), &token)
        .send()
        .await
        .expect("req");
    assert_eq!(got.bytes().await.expect("body").as_ref(), b"keep me");
}

#[tokio::test]
async fn bad_input_is_422() {
    let app = spawn_app().await;
    let token = user_on(&app, Tier::Pro).await;
    for (body, why) in [
        (
            json!({"table": "notes", "blob": "not base64!!", "checksum": sha(b"x")}),
            "invalid base64",
        ),
        (
            json!({"table": "../etc", "blob": b64(b"x"), "checksum": sha(b"x")}),
            "table with a slash",
        ),
        (
            json!({"table": "", "blob": b64(b"x"), "checksum": sha(b"x")}),
            "empty table",
        ),
        (
            json!({"table": "1abc", "blob": b64(b"x"), "checksum": sha(b"x")}),
            "table starting with a digit",
        ),
        (
            json!({"table": "a".repeat(65), "blob": b64(b"x"), "checksum": sha(b"x")}),
            "long table",
        ),
        (
            json!({"table": "notes", "blob": b64(b"x"), "checksum": "abc"}),
            "short checksum",
        ),
        (
            json!({"table": "notes", "blob": b64(b"x")}),
            "missing checksum",
        ),
    ] {
        let resp = verb(&app, "POST", "/storage/records", &token)
            .json(&body)
            .send()
            .await
            .expect("req");
        assert_eq!(resp.status(), 422, "{why}");
        assert_error(resp, 422, "validation_error").await;
    }
    assert_error(
        verb(&app, "GET", "/storage/records?limit=1000", &token)
            .send()
            .await
            .expect("req"),
        422,
        "validation_error",
    )
    .await;
    assert_error(
        verb(&app, "GET", "/storage/records?table=a/b", &token)
            .send()
            .await
            .expect("req"),
        422,
        "validation_error",
    )
    .await;
}

#[tokio::test]
async fn another_users_record_is_404_on_every_verb() {
    let app = spawn_app().await;
    let alice = user_on(&app, Tier::Pro).await;
    let bob = user_on(&app, Tier::Pro).await;
    let created: Value = create(&app, &alice, "notes", b"alice's")
        .await
        .json()
        .await
        .expect("json");
    let path = format!("/storage/records/{}", created["id"].as_str().expect("id"));
    assert_error(
        verb(&app, "GET", &path, &bob).send().await.expect("req"),
        404,
        "not_found",
    )
    .await;
    let put = verb(&app, "PUT", &path, &bob)
        .json(&json!({"blob": b64(b"mine"), "checksum": sha(b"mine")}))
        .send()
        .await
        .expect("req");
    assert_error(put, 404, "not_found").await;
    assert_error(
        verb(&app, "DELETE", &path, &bob).send().await.expect("req"),
        404,
        "not_found",
    )
    .await;
    let list: Vec<Value> = verb(&app, "GET", "/storage/records", &bob)
        .send()
        .await
        .expect("req")
        .json()
        .await
        .expect("json");
    assert!(list.is_empty());
    // Alice's record is untouched; a non-UUID id is the same 404.
    let got = verb(&app, "GET", &path, &alice).send().await.expect("req");
    assert_eq!(got.bytes().await.expect("body").as_ref(), b"alice's");
    assert_error(
        verb(&app, "GET", "/storage/records/not-a-uuid", &alice)
            .send()
            .await
            .expect("req"),
        404,
        "not_found",
    )
    .await;
    // No token at all.
    assert_error(
        app.client.get(app.url(&path)).send().await.expect("req"),
        401,
        "unauthorized",
    )
    .await;
}

#[tokio::test]
async fn the_free_tier_cannot_store() {
    let app = spawn_app().await;
    let token = user_on(&app, Tier::Free).await;
    let body = assert_error(
        create(&app, &token, "notes", b"x").await,
        403,
        "tier_required",
    )
    .await;
    assert!(
        body["detail"].as_str().expect("detail").contains("pro"),
        "{body}"
    );
}

#[tokio::test]
async fn gc_finds_and_deletes_blobs_without_rows() {
    let app = spawn_app().await;
    let token = user_on(&app, Tier::Pro).await;
    let created: Value = create(&app, &token, "notes", b"kept")
        .await
        .json()
        .await
        .expect("json");
    // A blob left behind by a write that died between blob and row.
    let records = app.adiuva.records().expect("records");
    let me: Value = app.me(&token).await.json().await.expect("me");
    let orphan_key = format!(
        "{}/notes/{}",
        me["id"].as_str().expect("id"),
        uuid::Uuid::now_v7()
    );
    app.blobs
        .put(
            &orphan_key,
            futures::StreamExt::boxed(futures::stream::iter([Ok(bytes::Bytes::from_static(
                b"lost",
            ))])),
            None,
        )
        .await
        .expect("put");
    assert_eq!(
        records.garbage_collect(false).await.expect("gc"),
        vec![orphan_key.clone()]
    );
    assert_eq!(
        records.garbage_collect(true).await.expect("gc"),
        vec![orphan_key.clone()]
    );
    assert!(records.garbage_collect(false).await.expect("gc").is_empty());
    let got = verb(
        &app,
        "GET",
        &format!("/storage/records/{}", created["id"].as_str().expect("id")),
        &token,
    )
    .send()
    .await
    .expect("req");
    assert_eq!(
        got.bytes().await.expect("body").as_ref(),
        b"kept",
        "the real record is untouched"
    );
}

#[tokio::test]
async fn the_quota_holds_under_concurrent_uploads() {
    // 1 quota "GB" = 1000 bytes here, so pro's 5 GB is 5000 bytes.
    let app = spawn_app_with(|s| s.quota_gb_bytes = 1000).await;
    let token = user_on(&app, Tier::Pro).await;
    let blobs: Vec<Vec<u8>> = (0..12u8).map(|i| vec![i; 1000]).collect();
    let results =
        futures::future::join_all(blobs.iter().map(|b| create(&app, &token, "notes", b))).await;
    let statuses: Vec<u16> = results.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 403).count(),
        7,
        "{statuses:?}"
    );
    for r in results.into_iter().filter(|r| r.status() == 403) {
        assert_error(r, 403, "quota_exceeded").await;
    }
    let list: Vec<Value> = verb(&app, "GET", "/storage/records", &token)
        .send()
        .await
        .expect("req")
        .json()
        .await
        .expect("json");
    assert_eq!(list.len(), 5);
    let orphans = app
        .adiuva
        .records()
        .expect("records")
        .garbage_collect(false)
        .await
        .expect("gc");
    assert!(
        orphans.is_empty(),
        "refused uploads left no blobs: {orphans:?}"
    );
    // Growing a record past the quota is refused too; shrinking is fine.
    let id = list[0]["id"].as_str().expect("id");
    let big = vec![9u8; 1001];
    let put = verb(&app, "PUT", &format!("/storage/records/{id}"), &token)
        .json(&json!({"blob": b64(&big), "checksum": sha(&big)}))
        .send()
        .await
        .expect("req");
    assert_error(put, 403, "quota_exceeded").await;
    let small = vec![9u8; 10];
    let put = verb(&app, "PUT", &format!("/storage/records/{id}"), &token)
        .json(&json!({"blob": b64(&small), "checksum": sha(&small)}))
        .send()
        .await
        .expect("req");
    assert_eq!(put.status(), 200);
}
