//! The cloud vector store over HTTP (plan 8d), on the embedded index (and, through
//! [`vector_flow`], on every other backend in `postgres.rs` and `vector_backends.rs`).

use adiuva_core::domain::Tier;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, spawn_app, spawn_app_with};
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

async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    token: &str,
    body: &Value,
) -> reqwest::Response {
    app.client
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            app.url(path),
        )
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("request")
}

/// `POST /storage/vectors/upsert`.
pub async fn upsert(app: &TestApp, token: &str, items: Vec<Value>) -> reqwest::Response {
    call(
        app,
        "POST",
        "/storage/vectors/upsert",
        token,
        &json!({"vectors": items}),
    )
    .await
}

/// `POST /storage/vectors/search`.
pub async fn search(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    call(app, "POST", "/storage/vectors/search", token, &body).await
}

/// The ids of a 200 search answer.
pub async fn search_ids(app: &TestApp, token: &str, body: Value) -> Vec<String> {
    let resp = search(app, token, body).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
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
    assert_eq!(
        resp.json::<Value>().await.expect("json"),
        json!({"upserted": 3})
    );

    let resp = search(
        app,
        &a,
        json!({"query_vector": plane(dim, 1.0, 0.0), "top_k": 2}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let hits: Value = resp.json().await.expect("json");
    let results = hits["results"].as_array().expect("results");
    assert_eq!(results.len(), 2, "top_k bounds the results");
    assert_eq!(results[0]["id"], "same");
    assert_eq!(
        results[0]["blob"],
        b64(b"A: same direction"),
        "payload round-trips"
    );
    assert!((results[0]["score"].as_f64().expect("score") - 1.0).abs() < 1e-3);
    let near = 1.0 / (1.0f64 + 0.09).sqrt();
    assert!(
        (results[1]["score"].as_f64().expect("score") - near).abs() < 1e-3,
        "cosine score"
    );

    // B stores the same ids with other payloads: neither sees the other's.
    let resp = upsert(
        app,
        &b,
        vec![
            item("same", b"B: mine", &plane(dim, 0.0, 1.0)),
            item("b-only", b"B: only", &plane(dim, 1.0, 0.0)),
        ],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let resp = search(
        app,
        &b,
        json!({"query_vector": plane(dim, 1.0, 0.0), "top_k": 10}),
    )
    .await;
    let hits: Value = resp.json().await.expect("json");
    let results = hits["results"].as_array().expect("results");
    let ids: Vec<&str> = results
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        ids,
        ["b-only", "same"],
        "B's search never returns A's items"
    );
    assert_eq!(results[1]["blob"], b64(b"B: mine"));
    assert_eq!(
        search_ids(app, &a, json!({"query_vector": plane(dim, 1.0, 0.0)})).await,
        ["same", "near", "far"],
        "A's items are untouched by B's upsert"
    );

    // B cannot delete A's "near"; A can.
    let resp = call(
        app,
        "DELETE",
        "/storage/vectors",
        &b,
        &json!({"ids": ["near"]}),
    )
    .await;
    assert_eq!(
        resp.json::<Value>().await.expect("json"),
        json!({"ok": true, "deleted": 0})
    );
    let resp = call(
        app,
        "DELETE",
        "/storage/vectors",
        &a,
        &json!({"ids": ["near", "unknown"]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.expect("json"),
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
    assert!(
        body["detail"].as_str().expect("detail").contains("'bad'"),
        "{body}"
    );
    assert!(
        search_ids(&app, &t, json!({"query_vector": plane(4, 1.0, 0.0)}))
            .await
            .is_empty(),
        "nothing of the batch was stored"
    );
    let mut malformed = item("m", b"x", &plane(4, 1.0, 0.0));
    malformed["checksum"] = json!("not-hex");
    assert_error(
        upsert(&app, &t, vec![malformed]).await,
        422,
        "validation_error",
    )
    .await;
}

#[tokio::test]
async fn a_different_dimension_is_422_and_stores_nothing() {
    let app = spawn_app().await;
    let t = user_on(&app, Tier::Pro).await;
    assert_eq!(
        upsert(&app, &t, vec![item("a", b"a", &plane(4, 1.0, 0.0))])
            .await
            .status(),
        200
    );
    let body = assert_error(
        upsert(&app, &t, vec![item("b", b"b", &plane(6, 1.0, 0.0))]).await,
        422,
        "validation_error",
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("6 dimensions"),
        "{body}"
    );
    assert_error(
        search(&app, &t, json!({"query_vector": plane(5, 1.0, 0.0)})).await,
        422,
        "validation_error",
    )
    .await;
    // One request, one dimension; and an item without a vector is 32-dimensional.
    let no_vector = json!({"id": "c", "blob": b64(b"c"), "checksum": sha(b"c")});
    assert_error(
        upsert(&app, &t, vec![no_vector]).await,
        422,
        "validation_error",
    )
    .await;
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
    assert_error(upsert(&app, &t, many).await, 422, "validation_error").await;
    let hundred: Vec<Value> = (0..100)
        .map(|i| item(&format!("i{i}"), b"x", &plane(4, 1.0, 0.0)))
        .collect();
    assert_eq!(
        upsert(&app, &t, hundred).await.status(),
        200,
        "100 items is the cap, not over it"
    );
    let big = vec![7u8; 24 * 1024 + 1];
    assert_error(
        upsert(&app, &t, vec![item("big", &big, &plane(4, 1.0, 0.0))]).await,
        422,
        "validation_error",
    )
    .await;
    let long = vec![0.5f32; 2001];
    assert_error(
        upsert(&app, &t, vec![item("long", b"x", &long)]).await,
        422,
        "validation_error",
    )
    .await;
    assert_error(
        upsert(&app, &t, vec![item("zero", b"x", &[0.0; 4])]).await,
        422,
        "validation_error",
    )
    .await;
    assert_error(
        upsert(&app, &t, vec![item("", b"x", &plane(4, 1.0, 0.0))]).await,
        422,
        "validation_error",
    )
    .await;
    let long_id = "x".repeat(257);
    assert_error(
        upsert(&app, &t, vec![item(&long_id, b"x", &plane(4, 1.0, 0.0))]).await,
        422,
        "validation_error",
    )
    .await;
    let q = plane(4, 1.0, 0.0);
    for top_k in [0, 101] {
        assert_error(
            search(&app, &t, json!({"query_vector": q, "top_k": top_k})).await,
            422,
            "validation_error",
        )
        .await;
    }
    assert_eq!(
        search_ids(&app, &t, json!({"query_vector": q, "top_k": 100}))
            .await
            .len(),
        100
    );
    assert_error(
        search(&app, &t, json!({"top_k": 3})).await,
        422,
        "validation_error",
    )
    .await;
    assert_error(
        search(&app, &t, json!({"query_blob": "***", "top_k": 3})).await,
        422,
        "validation_error",
    )
    .await;
    let ids: Vec<String> = (0..1001).map(|i| format!("i{i}")).collect();
    assert_error(
        call(&app, "DELETE", "/storage/vectors", &t, &json!({"ids": ids})).await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(
        search_ids(&app, &t, json!({"query_vector": q, "top_k": 100}))
            .await
            .len(),
        100,
        "refused requests changed nothing"
    );
    let resp = app
        .client
        .post(app.url("/storage/vectors/search"))
        .json(&json!({"query_vector": q}))
        .send()
        .await
        .expect("req");
    assert_error(resp, 401, "unauthorized").await;
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
    assert_eq!(upsert(&app, &t, items).await.status(), 200);
    let resp = search(&app, &t, json!({"query_blob": b64(b"ciphertext 3")})).await;
    assert_eq!(resp.status(), 200);
    let hits: Value = resp.json().await.expect("json");
    let results = hits["results"].as_array().expect("results");
    assert_eq!(results.len(), 5, "default top_k 10 returns all five");
    assert_eq!(results[0]["id"], "n3");
    assert_eq!(results[0]["blob"], b64(b"ciphertext 3"));
    assert!((results[0]["score"].as_f64().expect("score") - 1.0).abs() < 1e-5);
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
    assert_eq!(upsert(&app, &t, items).await.status(), 200);
    // A 2,000-byte record would make 5,048.
    let blob = vec![2u8; 2000];
    let resp = app
        .client
        .post(app.url("/storage/records"))
        .bearer_auth(&t)
        .json(&json!({"table": "notes", "blob": b64(&blob), "checksum": sha(&blob)}))
        .send()
        .await
        .expect("req");
    assert_error(resp, 403, "quota_exceeded").await;
    // Replacing v0 by a smaller item frees room; a new 2,000-byte item does not fit.
    assert_eq!(
        upsert(&app, &t, vec![item("v0", b"tiny", &plane(4, 1.0, 0.0))])
            .await
            .status(),
        200
    );
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
    call(
        &app,
        "DELETE",
        "/storage/vectors",
        &t,
        &json!({"ids": ["v1", "v2"]}),
    )
    .await;
    assert_eq!(
        upsert(
            &app,
            &t,
            vec![item("v3", &[3u8; 3000], &plane(4, 0.0, 1.0))]
        )
        .await
        .status(),
        200
    );
}

/// Deleting an account empties its namespace, so a new account never inherits it.
#[tokio::test]
async fn deleting_an_account_deletes_its_vectors() {
    let app = spawn_app().await;
    let e = crate::helpers::email("vecdel");
    let tokens = app.register_ok(&e).await;
    app.adiuva
        .accounts()
        .set_tier(&e, Tier::Pro)
        .await
        .expect("tier");
    let t = tokens["access_token"].as_str().expect("access").to_owned();
    assert_eq!(
        upsert(&app, &t, vec![item("a", b"a", &plane(4, 1.0, 0.0))])
            .await
            .status(),
        200
    );
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
