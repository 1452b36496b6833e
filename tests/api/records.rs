//! Cloud records over HTTP (plan 8c), on SQLite + local disk (and on PostgreSQL in
//! `postgres.rs`).

use adiuva_core::domain::Tier;
use adiuva_core::ports::BlobStore as _;
use base64::Engine as _;
use reqwest::{Method, Response};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::helpers::{
    TestApp, assert_error, assert_pro_required, assert_unauthorized, assert_validation_error,
    header_text, json_body, send, spawn_app, spawn_app_with, status_counts,
};

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn sha(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// What `storage gc` would collect now, blob keys and unfinished uploads together. No
/// grace period: the test server is idle when this runs.
pub async fn orphans(app: &TestApp) -> Vec<String> {
    let report = gc(app, false).await;
    report
        .orphans
        .into_iter()
        .chain(report.unfinished)
        .collect()
}

/// Runs `storage gc` with no grace period.
pub async fn gc(app: &TestApp, apply: bool) -> adiuva_core::gc::GcReport {
    app.adiuva
        .garbage_collector()
        .expect("gc")
        .run(adiuva_core::gc::GcOptions {
            min_age_ms: 0,
            apply,
        })
        .await
        .expect("gc runs")
}

/// A signed-in user on `tier`; returns the access token.
pub async fn user_on(app: &TestApp, tier: Tier) -> String {
    app.account_on("rec", tier).await.1
}

/// `POST /storage/records` of `blob` into `table`, with its true checksum.
pub async fn create(app: &TestApp, token: &str, table: &str, blob: &[u8]) -> Response {
    let body = json!({"table": table, "blob": b64(blob), "checksum": sha(blob)});
    send(
        app.request_as(Method::POST, "/storage/records", token)
            .json(&body),
    )
    .await
}

/// Creates a record (which must succeed) and returns its id.
async fn create_ok(app: &TestApp, token: &str, table: &str, blob: &[u8]) -> String {
    let resp = create(app, token, table, blob).await;
    assert_eq!(resp.status(), 200, "create");
    let created: Value = resp.json().await.expect("json");
    created["id"].as_str().expect("id").to_owned()
}

/// `/storage/records/{id}`.
fn path(id: &str) -> String {
    format!("/storage/records/{id}")
}

/// `method` on record `id` as `token`, without a body.
async fn on_record(app: &TestApp, method: Method, id: &str, token: &str) -> Response {
    send(app.request_as(method, &path(id), token)).await
}

/// `PUT /storage/records/{id}` with `blob` and `checksum`.
async fn update_with(
    app: &TestApp,
    token: &str,
    id: &str,
    blob: &[u8],
    checksum: &str,
) -> Response {
    let body = json!({"blob": b64(blob), "checksum": checksum});
    send(app.request_as(Method::PUT, &path(id), token).json(&body)).await
}

/// `PUT /storage/records/{id}` with `blob` and its true checksum.
async fn update(app: &TestApp, token: &str, id: &str, blob: &[u8]) -> Response {
    update_with(app, token, id, blob, &sha(blob)).await
}

/// `GET /storage/records` + `query`, parsed (the listing rows).
async fn list(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    app.get_json_as(&format!("/storage/records{query}"), token)
        .await
}

/// Full flow for one user on any stack.
pub async fn record_flow(app: &TestApp) {
    let token = user_on(app, Tier::Pro).await;
    let blob = b"\x00\x01 client-encrypted \xff bytes".to_vec();
    let resp = create(app, &token, "notes", &blob).await;
    assert_eq!(resp.status(), 200);
    let created: Value = json_body(resp).await;
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(created["created_at"].as_i64().is_some());

    let got = on_record(app, Method::GET, &id, &token).await;
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "application/octet-stream");
    assert_eq!(got.headers()["x-checksum"], sha(&blob).as_str());
    assert_eq!(
        got.headers()["etag"],
        format!("\"{}\"", sha(&blob)).as_str()
    );
    assert_eq!(got.bytes().await.expect("body").as_ref(), blob.as_slice());

    create(app, &token, "tasks", b"second").await;
    let all = list(app, &token, "").await;
    assert_eq!(all.len(), 2);
    assert_eq!(all[1]["id"], id.as_str(), "newest first");
    assert!(
        all.iter().all(|r| r.get("blob").is_none()),
        "listing never returns blobs"
    );
    assert_eq!(list(app, &token, "?table=notes").await.len(), 1);
    let page2 = list(app, &token, "?page=2&limit=1").await;
    assert_eq!(page2[0]["id"], id.as_str());

    let new = b"replaced".to_vec();
    let put = update(app, &token, &id, &new).await;
    assert_eq!(put.status(), 200);
    assert_eq!(json_body::<Value>(put).await, json!({"ok": true}));
    let got = on_record(app, Method::GET, &id, &token).await;
    assert_eq!(got.headers()["x-checksum"], sha(&new).as_str());
    assert_eq!(got.bytes().await.expect("body").as_ref(), new.as_slice());

    let del = on_record(app, Method::DELETE, &id, &token).await;
    assert_eq!(json_body::<Value>(del).await, json!({"ok": true}));
    for method in [Method::GET, Method::DELETE] {
        let gone = on_record(app, method, &id, &token).await;
        assert_error(gone, 404, "not_found").await;
    }
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
    let body = json!({"table": "notes", "blob": b64(b"real"), "checksum": sha(b"other")});
    let resp = send(
        app.request_as(Method::POST, "/storage/records", &token)
            .json(&body),
    )
    .await;
    assert_error(resp, 400, "checksum_mismatch").await;
    assert!(list(&app, &token, "").await.is_empty());
    let left = orphans(&app).await;
    assert!(left.is_empty(), "no blob either: {left:?}");

    // An update with a wrong checksum leaves the old bytes.
    let id = create_ok(&app, &token, "notes", b"keep me").await;
    let bad = update_with(&app, &token, &id, b"new", &sha(b"not new")).await;
    assert_error(bad, 400, "checksum_mismatch").await;
    let got = on_record(&app, Method::GET, &id, &token).await;
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
        let resp = send(
            app.request_as(Method::POST, "/storage/records", &token)
                .json(&body),
        )
        .await;
        assert_eq!(resp.status(), 422, "{why}");
        assert_validation_error(resp).await;
    }
    for query in ["?limit=1000", "?table=a/b"] {
        let resp = app
            .get_as(&format!("/storage/records{query}"), &token)
            .await;
        assert_validation_error(resp).await;
    }
}

#[tokio::test]
async fn another_users_record_is_404_on_every_verb() {
    let app = spawn_app().await;
    let alice = user_on(&app, Tier::Pro).await;
    let bob = user_on(&app, Tier::Pro).await;
    let id = create_ok(&app, &alice, "notes", b"alice's").await;
    let get = on_record(&app, Method::GET, &id, &bob).await;
    assert_error(get, 404, "not_found").await;
    let put = update(&app, &bob, &id, b"mine").await;
    assert_error(put, 404, "not_found").await;
    let delete = on_record(&app, Method::DELETE, &id, &bob).await;
    assert_error(delete, 404, "not_found").await;
    assert!(list(&app, &bob, "").await.is_empty());
    // Alice's record is untouched; a non-UUID id is the same 404.
    let got = on_record(&app, Method::GET, &id, &alice).await;
    assert_eq!(got.bytes().await.expect("body").as_ref(), b"alice's");
    let not_uuid = on_record(&app, Method::GET, "not-a-uuid", &alice).await;
    assert_error(not_uuid, 404, "not_found").await;
    // No token at all.
    assert_unauthorized(app.get(&path(&id)).await).await;
}

#[tokio::test]
async fn the_free_tier_cannot_store() {
    let app = spawn_app().await;
    let token = user_on(&app, Tier::Free).await;
    assert_pro_required(create(&app, &token, "notes", b"x").await).await;
}

#[tokio::test]
async fn gc_finds_and_deletes_blobs_without_rows() {
    let app = spawn_app().await;
    let token = user_on(&app, Tier::Pro).await;
    let id = create_ok(&app, &token, "notes", b"kept").await;
    // A blob left behind by a write that died between blob and row.
    let me = app.me_json(&token).await;
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
    assert_eq!(orphans(&app).await, vec![orphan_key.clone()]);
    let young = app
        .adiuva
        .garbage_collector()
        .expect("gc")
        .run(adiuva_core::gc::GcOptions::default())
        .await
        .expect("gc");
    assert!(
        young.is_empty() && young.too_young == 1,
        "the default grace period spares a blob just written: {young:?}"
    );
    assert_eq!(gc(&app, true).await.orphans, vec![orphan_key.clone()]);
    assert!(orphans(&app).await.is_empty());
    let got = on_record(&app, Method::GET, &id, &token).await;
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
    assert_eq!(status_counts(&results), [(200, 5), (403, 7)].into());
    for r in results.into_iter().filter(|r| r.status() == 403) {
        assert_error(r, 403, "quota_exceeded").await;
    }
    let kept = list(&app, &token, "").await;
    assert_eq!(kept.len(), 5);
    let left = orphans(&app).await;
    assert!(left.is_empty(), "refused uploads left no blobs: {left:?}");
    // Growing a record past the quota is refused too; shrinking is fine.
    let id = kept[0]["id"].as_str().expect("id");
    let put = update(&app, &token, id, &[9u8; 1001]).await;
    assert_error(put, 403, "quota_exceeded").await;
    let put = update(&app, &token, id, &[9u8; 10]).await;
    assert_eq!(put.status(), 200);
}

/// A blob of `len` bytes that differs per `seed`.
fn patterned(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// GETs a record and checks the body against the checksum it came with; returns the body.
async fn get_consistent(app: &TestApp, token: &str, id: &str) -> Vec<u8> {
    let got = on_record(app, Method::GET, id, token).await;
    assert_eq!(got.status(), 200);
    let checksum = header_text(&got, "x-checksum");
    assert_eq!(header_text(&got, "etag"), format!("\"{checksum}\""));
    let body = got.bytes().await.expect("body").to_vec();
    assert_eq!(
        sha(&body),
        checksum,
        "the bytes served match the X-Checksum sent with them ({} bytes)",
        body.len()
    );
    body
}

/// Readers never see bytes that do not match the checksum they are sent with, while a
/// record is updated again and again with blobs of different sizes (64 KiB–1 MiB).
pub async fn readers_during_updates_get_matching_bytes(app: &TestApp) {
    let token = user_on(app, Tier::Pro).await;
    let id = create_ok(app, &token, "notes", &patterned(64 * 1024, 0)).await;
    let done = std::sync::atomic::AtomicBool::new(false);
    let sizes = [64 * 1024, 1024 * 1024, 300 * 1024, 900 * 1024, 128 * 1024];
    let mut sent = Vec::new();
    let updater = async {
        for round in 0..30u8 {
            let blob = patterned(sizes[usize::from(round) % sizes.len()], round);
            let put = update(app, &token, &id, &blob).await;
            assert_eq!(put.status(), 200, "update {round}");
            sent.push(sha(&blob));
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    };
    let reader = || async {
        let mut reads = 0usize;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            get_consistent(app, &token, &id).await;
            reads += 1;
        }
        reads
    };
    let ((), r1, r2, r3) = tokio::join!(updater, reader(), reader(), reader());
    assert!(r1 + r2 + r3 > 0, "the readers ran");
    let last = get_consistent(app, &token, &id).await;
    assert_eq!(
        Some(&sha(&last)),
        sent.last(),
        "the last update is what is kept"
    );
    let left = orphans(app).await;
    assert!(
        left.is_empty(),
        "every replaced version was deleted: {left:?}"
    );
}

/// Concurrent updates of one record: all succeed (last writer wins), the row ends on one
/// of them with the size and checksum of the bytes it serves, and no version is left
/// behind or deleted from under the winner.
pub async fn concurrent_updates_leave_one_consistent_version(app: &TestApp) {
    let token = user_on(app, Tier::Pro).await;
    let id = create_ok(app, &token, "notes", b"first").await;
    for round in 0..4u8 {
        let blobs: Vec<Vec<u8>> = (0..6u8)
            .map(|i| patterned(100 * 1024 + usize::from(i) * 37 * 1024, round * 10 + i))
            .collect();
        let results =
            futures::future::join_all(blobs.iter().map(|blob| update(app, &token, &id, blob)))
                .await;
        for r in results {
            assert_eq!(r.status(), 200, "round {round}");
        }
        let body = get_consistent(app, &token, &id).await;
        assert!(blobs.contains(&body), "the row is one of the updates");
        let rows = list(app, &token, "").await;
        assert_eq!(rows[0]["size_bytes"], body.len(), "round {round}");
        assert_eq!(rows[0]["checksum"], sha(&body).as_str());
        let left = orphans(app).await;
        assert!(
            left.is_empty(),
            "round {round}: no version left behind: {left:?}"
        );
    }
}

// Rate limits off: these tests send hundreds of requests a minute on purpose.
#[tokio::test]
async fn readers_during_updates_never_get_torn_bytes() {
    let app = spawn_app_with(|s| s.rate_limit_enabled = false).await;
    readers_during_updates_get_matching_bytes(&app).await;
}

#[tokio::test]
async fn concurrent_updates_of_one_record_stay_consistent() {
    let app = spawn_app_with(|s| s.rate_limit_enabled = false).await;
    concurrent_updates_leave_one_consistent_version(&app).await;
}

#[tokio::test]
async fn record_updates_are_consistent_on_postgres() {
    let Some(app) =
        crate::helpers::spawn_app_on_postgres_with(|s| s.rate_limit_enabled = false).await
    else {
        return;
    };
    concurrent_updates_leave_one_consistent_version(&app).await;
    readers_during_updates_get_matching_bytes(&app).await;
}

#[tokio::test]
async fn deleting_an_account_deletes_its_blobs() {
    let app = spawn_app().await;
    let (e, token) = app.account_on("gone", Tier::Pro).await;
    assert_eq!(create(&app, &token, "notes", b"mine").await.status(), 200);
    let upload = crate::backups::upload(&app, &token, "1", "5", &sha(b"snapshot"));
    assert_eq!(send(upload.body("snapshot")).await.status(), 200);
    let other = user_on(&app, Tier::Pro).await;
    assert_eq!(create(&app, &other, "notes", b"theirs").await.status(), 200);
    assert_eq!(stored_files(&app).len(), 3);
    app.adiuva.accounts().delete(&e).await.expect("delete");
    assert_eq!(
        stored_files(&app).len(),
        1,
        "the record's and the backup's blobs went with the account"
    );
    assert!(orphans(&app).await.is_empty());
}

/// Every file in the test server's blob directory (blobs and staging files).
pub fn stored_files(app: &TestApp) -> Vec<(std::path::PathBuf, u64)> {
    fn walk(dir: &std::path::Path, out: &mut Vec<(std::path::PathBuf, u64)>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if let Ok(m) = e.metadata() {
                out.push((p, m.len()));
            }
        }
    }
    let mut out = Vec::new();
    walk(&app.blob_dir(), &mut out);
    out
}

/// `GET /storage/records/{id}` with `If-None-Match` naming the current `ETag` (alone, in a
/// list, weak, or `*`) answers 304 with the `ETag` and no bytes; after an update the old
/// tag gets the new bytes; another user's id is 404 whatever the header says.
#[tokio::test]
async fn if_none_match_answers_304_while_the_record_is_unchanged() {
    let app = spawn_app().await;
    let token = user_on(&app, Tier::Pro).await;
    let id = create_ok(&app, &token, "notes", b"version one").await;
    let path = path(&id);
    let get = |token: &str, if_none_match: &str| {
        send(
            app.request_as(Method::GET, &path, token)
                .header("if-none-match", if_none_match),
        )
    };
    let first = on_record(&app, Method::GET, &id, &token).await;
    assert_eq!(first.status(), 200);
    let tag = header_text(&first, "etag");
    assert_eq!(tag, format!("\"{}\"", sha(b"version one")));
    for header in [
        tag.clone(),
        format!("\"other\", {tag}"),
        format!("W/{tag}"),
        "*".to_owned(),
    ] {
        let again = get(&token, &header).await;
        assert_eq!(again.status(), 304, "If-None-Match: {header}");
        assert_eq!(again.headers()["etag"], tag.as_str());
        assert!(again.bytes().await.expect("body").is_empty());
    }
    let other_tag = get(&token, "\"something else\"").await;
    assert_eq!(other_tag.status(), 200);
    assert_eq!(
        other_tag.bytes().await.expect("body").as_ref(),
        b"version one"
    );

    let updated = update(&app, &token, &id, b"version two").await;
    assert_eq!(updated.status(), 200);
    let after = get(&token, &tag).await;
    assert_eq!(after.status(), 200, "the old tag no longer matches");
    assert_eq!(
        after.headers()["etag"],
        format!("\"{}\"", sha(b"version two")).as_str()
    );
    assert_eq!(after.bytes().await.expect("body").as_ref(), b"version two");

    let stranger = user_on(&app, Tier::Pro).await;
    let theirs = get(&stranger, "*").await;
    assert_error(theirs, 404, "not_found").await;
}
