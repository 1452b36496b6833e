//! The cloud vector store over HTTP (plan 8d), on the embedded index (and, through
//! [`vector_flow`], on every other backend in `postgres.rs` and `vector_backends.rs`).

use adiuva_core::domain::Tier;
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, assert_error, assert_unauthorized, assert_validation_error, detail, json_body, send,
    spawn_app, spawn_app_with,
};
use crate::records::{b64, sha, user_on};

/// An item with a vector.
pub fn item(id: &str, blob: &[u8], vector: &[f32]) -> Value {
    json!({"id": id, "blob": b64(blob), "checksum": sha(blob), "vector": vector})
}

/// A vector of `dim` with `(a, b)` first.
pub fn plane(dim: usize, a: f32, b: f32) -> Vec<f32> {
    let mut v = vec![0.0; dim];
    v[0] = a;
    v[1] = b;
    v
}

/// `method` on `path` as `token` with the JSON `body`.
async fn call(app: &TestApp, method: Method, path: &str, token: &str, body: &Value) -> Response {
    send(app.request_as(method, path, token).json(body)).await
}

/// `POST /storage/vectors/upsert`.
pub async fn upsert(app: &TestApp, token: &str, items: Vec<Value>) -> Response {
    let body = json!({"vectors": items});
    call(app, Method::POST, "/storage/vectors/upsert", token, &body).await
}

/// `POST /storage/vectors/search`.
pub async fn search(app: &TestApp, token: &str, body: Value) -> Response {
    call(app, Method::POST, "/storage/vectors/search", token, &body).await
}

/// `DELETE /storage/vectors` of `ids` (a JSON array).
pub async fn delete(app: &TestApp, token: &str, ids: Value) -> Response {
    call(
        app,
        Method::DELETE,
        "/storage/vectors",
        token,
        &json!({"ids": ids}),
    )
    .await
}

/// The `results` of a search answer.
async fn results(resp: Response) -> Vec<Value> {
    let mut hits: Value = json_body(resp).await;
    match hits["results"].take() {
        Value::Array(results) => results,
        other => panic!("results is an array, got {other}"),
    }
}

/// The ids of a 200 search answer.
pub async fn search_ids(app: &TestApp, token: &str, body: Value) -> Vec<String> {
    let resp = search(app, token, body).await;
    assert_eq!(resp.status(), 200);
    results(resp)
        .await
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Upserts `items`, asserting the 200.
async fn upsert_ok(app: &TestApp, token: &str, items: Vec<Value>) {
    assert_eq!(upsert(app, token, items).await.status(), 200);
}

/// Store, search, isolate two users, delete — with `dim`-dimensional vectors.
pub async fn vector_flow(app: &TestApp, dim: usize) {
    let a = user_on(app, Tier::Pro).await;
    let b = user_on(app, Tier::Pro).await;
    let resp = upsert(
        app,
        &a,
        vec![
            item("same", b"A: same direction", &plane(dim, 2.0, 0.0)),
            item("near", b"A: near", &plane(dim, 1.0, 0.3)),
            item("far", b"A: far", &plane(dim, -1.0, 0.0)),
        ],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(json_body::<Value>(resp).await, json!({"upserted": 3}));

    let resp = search(
        app,
        &a,
        json!({"query_vector": plane(dim, 1.0, 0.0), "top_k": 2}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let hits = results(resp).await;
    assert_eq!(hits.len(), 2, "top_k bounds the results");
    assert_eq!(hits[0]["id"], "same");
    assert_eq!(
        hits[0]["blob"],
        b64(b"A: same direction"),
        "payload round-trips"
    );
    assert!((hits[0]["score"].as_f64().expect("score") - 1.0).abs() < 1e-3);
    let near = 1.0 / (1.0f64 + 0.09).sqrt();
    assert!(
        (hits[1]["score"].as_f64().expect("score") - near).abs() < 1e-3,
        "cosine score"
    );

    // B stores the same ids with other payloads: neither sees the other's.
    let mine = item("same", b"B: mine", &plane(dim, 0.0, 1.0));
    upsert_ok(
        app,
        &b,
        vec![mine, item("b-only", b"B: only", &plane(dim, 1.0, 0.0))],
    )
    .await;
    let resp = search(
        app,
        &b,
        json!({"query_vector": plane(dim, 1.0, 0.0), "top_k": 10}),
    )
    .await;
    let hits = results(resp).await;
    let ids: Vec<&str> = hits.iter().map(|r| r["id"].as_str().expect("id")).collect();
    assert_eq!(
        ids,
        ["b-only", "same"],
        "B's search never returns A's items"
    );
    assert_eq!(hits[1]["blob"], b64(b"B: mine"));
    assert_eq!(
        search_ids(app, &a, json!({"query_vector": plane(dim, 1.0, 0.0)})).await,
        ["same", "near", "far"],
        "A's items are untouched by B's upsert"
    );

    // B cannot delete A's "near"; A can.
    let resp = delete(app, &b, json!(["near"])).await;
    assert_eq!(
        json_body::<Value>(resp).await,
        json!({"ok": true, "deleted": 0})
    );
    let resp = delete(app, &a, json!(["near", "unknown"])).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        json_body::<Value>(resp).await,
        json!({"ok": true, "deleted": 1})
    );
    assert_eq!(
        search_ids(app, &a, json!({"query_vector": plane(dim, 1.0, 0.0)})).await,
        ["same", "far"]
    );
}

#[tokio::test]
async fn vector_flow_on_the_embedded_index() {
    let app = spawn_app().await;
    vector_flow(&app, 8).await;
}

#[tokio::test]
async fn a_bad_checksum_refuses_the_whole_batch() {
    let app = spawn_app().await;
    let t = user_on(&app, Tier::Pro).await;
    let mut bad = item("bad", b"payload", &plane(4, 1.0, 0.0));
    bad["checksum"] = json!(sha(b"other bytes"));
    let resp = upsert(
        &app,
        &t,
        vec![item("good", b"fine", &plane(4, 1.0, 0.0)), bad],
    )
    .await;
    let body = assert_error(resp, 400, "checksum_mismatch").await;
    assert!(detail(&body).contains("'bad'"), "{body}");
    assert!(
        search_ids(&app, &t, json!({"query_vector": plane(4, 1.0, 0.0)}))
            .await
            .is_empty(),
        "nothing of the batch was stored"
    );
    let mut malformed = item("m", b"x", &plane(4, 1.0, 0.0));
    malformed["checksum"] = json!("not-hex");
    assert_validation_error(upsert(&app, &t, vec![malformed]).await).await;
}

#[tokio::test]
async fn a_different_dimension_is_422_and_stores_nothing() {
    let app = spawn_app().await;
    let t = user_on(&app, Tier::Pro).await;
    upsert_ok(&app, &t, vec![item("a", b"a", &plane(4, 1.0, 0.0))]).await;
    let six = upsert(&app, &t, vec![item("b", b"b", &plane(6, 1.0, 0.0))]).await;
    let body = assert_validation_error(six).await;
    assert!(detail(&body).contains("6 dimensions"), "{body}");
    let five = search(&app, &t, json!({"query_vector": plane(5, 1.0, 0.0)})).await;
    assert_validation_error(five).await;
    // One request, one dimension; and an item without a vector is 32-dimensional.
    let no_vector = json!({"id": "c", "blob": b64(b"c"), "checksum": sha(b"c")});
    assert_validation_error(upsert(&app, &t, vec![no_vector]).await).await;
    assert_eq!(
        search_ids(&app, &t, json!({"query_vector": plane(4, 1.0, 0.0)})).await,
        ["a"]
    );
}

#[tokio::test]
async fn caps_and_bad_input_are_422() {
    let app = spawn_app().await;
    let t = user_on(&app, Tier::Pro).await;
    let many: Vec<Value> = (0..101)
        .map(|i| item(&format!("i{i}"), b"x", &plane(4, 1.0, 0.0)))
        .collect();
    assert_validation_error(upsert(&app, &t, many).await).await;
    let hundred: Vec<Value> = (0..100)
        .map(|i| item(&format!("i{i}"), b"x", &plane(4, 1.0, 0.0)))
        .collect();
    assert_eq!(
        upsert(&app, &t, hundred).await.status(),
        200,
        "100 items is the cap, not over it"
    );
    let big = vec![7u8; 24 * 1024 + 1];
    let long_id = "x".repeat(257);
    for bad in [
        item("big", &big, &plane(4, 1.0, 0.0)),
        item("long", b"x", &[0.5f32; 2001]),
        item("zero", b"x", &[0.0; 4]),
        item("", b"x", &plane(4, 1.0, 0.0)),
        item(&long_id, b"x", &plane(4, 1.0, 0.0)),
    ] {
        assert_validation_error(upsert(&app, &t, vec![bad]).await).await;
    }
    let q = plane(4, 1.0, 0.0);
    for top_k in [0, 101] {
        let resp = search(&app, &t, json!({"query_vector": q, "top_k": top_k})).await;
        assert_validation_error(resp).await;
    }
    assert_eq!(
        search_ids(&app, &t, json!({"query_vector": q, "top_k": 100}))
            .await
            .len(),
        100
    );
    for bad in [
        json!({"top_k": 3}),
        json!({"query_blob": "***", "top_k": 3}),
    ] {
        assert_validation_error(search(&app, &t, bad).await).await;
    }
    let ids: Vec<String> = (0..1001).map(|i| format!("i{i}")).collect();
    assert_validation_error(delete(&app, &t, json!(ids)).await).await;
    assert_eq!(
        search_ids(&app, &t, json!({"query_vector": q, "top_k": 100}))
            .await
            .len(),
        100,
        "refused requests changed nothing"
    );
    let anonymous = app
        .post_json("/storage/vectors/search", &json!({"query_vector": q}))
        .await;
    assert_unauthorized(anonymous).await;
}

/// Plan-era clients send no vector: the server derives one from the ciphertext, and a
/// search by the same ciphertext finds it first with score 1.
#[tokio::test]
async fn blob_only_items_work_as_the_plan_describes() {
    let app = spawn_app().await;
    let t = user_on(&app, Tier::Pro).await;
    let items: Vec<Value> = (0..5)
        .map(|i| {
            let blob = format!("ciphertext {i}").into_bytes();
            json!({"id": format!("n{i}"), "blob": b64(&blob), "checksum": sha(&blob)})
        })
        .collect();
    upsert_ok(&app, &t, items).await;
    let resp = search(&app, &t, json!({"query_blob": b64(b"ciphertext 3")})).await;
    assert_eq!(resp.status(), 200);
    let hits = results(resp).await;
    assert_eq!(hits.len(), 5, "default top_k 10 returns all five");
    assert_eq!(hits[0]["id"], "n3");
    assert_eq!(hits[0]["blob"], b64(b"ciphertext 3"));
    assert!((hits[0]["score"].as_f64().expect("score") - 1.0).abs() < 1e-5);
}

#[tokio::test]
async fn free_tier_cannot_store_but_can_search() {
    let app = spawn_app().await;
    let t = user_on(&app, Tier::Free).await;
    assert_error(
        upsert(&app, &t, vec![item("a", b"a", &plane(4, 1.0, 0.0))]).await,
        403,
        "tier_required",
    )
    .await;
    assert!(
        search_ids(&app, &t, json!({"query_vector": plane(4, 1.0, 0.0)}))
            .await
            .is_empty()
    );
}

/// Vector bytes (payload + 4 per dimension) share the cloud-storage quota with records.
#[tokio::test]
async fn vectors_count_against_the_storage_quota() {
    // Pro has 5 "GB"; with 1,000-byte GBs that is 5,000 bytes.
    let app = spawn_app_with(|s| s.quota_gb_bytes = 1000).await;
    let t = user_on(&app, Tier::Pro).await;
    // 3 × (1,000 + 4 × 4) = 3,048 bytes.
    let items: Vec<Value> = (0..3)
        .map(|i| item(&format!("v{i}"), &[1u8; 1000], &plane(4, 1.0, i as f32)))
        .collect();
    upsert_ok(&app, &t, items).await;
    // A 2,000-byte record would make 5,048.
    let record = crate::records::create(&app, &t, "notes", &[2u8; 2000]).await;
    assert_error(record, 403, "quota_exceeded").await;
    // Replacing v0 by a smaller item frees room; a new 2,000-byte item does not fit.
    upsert_ok(&app, &t, vec![item("v0", b"tiny", &plane(4, 1.0, 0.0))]).await;
    assert_error(
        upsert(
            &app,
            &t,
            vec![item("v3", &[3u8; 3000], &plane(4, 0.0, 1.0))],
        )
        .await,
        403,
        "quota_exceeded",
    )
    .await;
    assert_eq!(
        search_ids(
            &app,
            &t,
            json!({"query_vector": plane(4, 0.0, 1.0), "top_k": 10})
        )
        .await
        .len(),
        3,
        "the refused item was not stored"
    );
    // Deleting frees the bytes.
    delete(&app, &t, json!(["v1", "v2"])).await;
    upsert_ok(
        &app,
        &t,
        vec![item("v3", &[3u8; 3000], &plane(4, 0.0, 1.0))],
    )
    .await;
}

/// Deleting an account empties its namespace, so a new account never inherits it.
#[tokio::test]
async fn deleting_an_account_deletes_its_vectors() {
    let app = spawn_app().await;
    let (e, t) = app.account_on("vecdel", Tier::Pro).await;
    upsert_ok(&app, &t, vec![item("a", b"a", &plane(4, 1.0, 0.0))]).await;
    let user = app.adiuva.accounts().find(&e).await.expect("user");
    app.adiuva.accounts().delete(&e).await.expect("delete");
    let left = app
        .adiuva
        .vectors()
        .expect("vectors")
        .search(
            user.id,
            adiuva_core::vector::VectorQuery::Vector(plane(4, 1.0, 0.0)),
            10,
        )
        .await
        .expect("search");
    assert!(left.is_empty(), "the namespace was emptied: {left:?}");
}
