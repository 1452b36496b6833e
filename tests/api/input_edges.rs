//! Issue #9 item 9: strings a backend cannot store (NUL) or that no id needs (control
//! characters) are refused at the edge with 422 on every backend, and a database
//! failure's text never reaches a client.

use adiuva_core::domain::Tier;
use serde_json::json;

use crate::helpers::{
    PASSWORD, TestApp, assert_error, assert_unauthorized, assert_validation_error, detail,
    spawn_app, spawn_app_on_postgres_with,
};
use crate::records::{create, user_on};
use crate::vectors::{delete, item, upsert};

/// The same refusals on whichever database `app` runs on.
async fn nul_and_control_characters_are_422(app: &TestApp) {
    let token = user_on(app, Tier::Pro).await;
    for bad in ["a\u{0}b", "\u{0}", "tab\there", "bell\u{7}", "c1\u{85}"] {
        let resp = upsert(app, &token, vec![item(bad, b"payload", &[1.0, 0.0])]).await;
        let body = assert_validation_error(resp).await;
        assert!(detail(&body).contains("vectors[0].id"), "{body}");
        assert_validation_error(delete(app, &token, json!(["ok", bad])).await).await;
    }
    // A good id next to a bad one: nothing is stored.
    let resp = upsert(
        app,
        &token,
        vec![
            item("fine", b"x", &[1.0, 0.0]),
            item("no\u{0}", b"y", &[0.0, 1.0]),
        ],
    )
    .await;
    assert_validation_error(resp).await;
    let resp = upsert(app, &token, vec![item("fine", b"x", &[1.0, 0.0])]).await;
    assert_eq!(resp.status(), 200, "the good id alone is stored");

    // Record table names, in the body and the query string.
    let resp = create(app, &token, "notes\u{0}", b"record").await;
    assert_validation_error(resp).await;
    let resp = app.get_as("/storage/records?table=notes%00", &token).await;
    assert_validation_error(resp).await;

    // Emails: registering is 422; a login with one is the usual 401.
    assert_validation_error(app.register("nul\u{0}@example.com").await).await;
    assert_unauthorized(app.login("nul\u{0}@example.com", PASSWORD).await).await;
}

#[tokio::test]
async fn nul_and_control_characters_are_422_on_sqlite() {
    nul_and_control_characters_are_422(&spawn_app().await).await;
}

#[tokio::test]
async fn nul_and_control_characters_are_422_on_postgres() {
    let Some(app) = spawn_app_on_postgres_with(|_| {}).await else {
        return;
    };
    nul_and_control_characters_are_422(&app).await;
}

/// A table renamed away under the running server: the 503 says the backend is
/// unavailable and nothing of what PostgreSQL said; the log keeps the cause.
#[tokio::test]
async fn a_database_failure_shows_the_client_no_driver_text() {
    let mut url = String::new();
    let Some(app) = spawn_app_on_postgres_with(|s| {
        url = s.database_url.as_ref().expect("url").0.clone();
    })
    .await
    else {
        return;
    };
    let token = user_on(&app, Tier::Pro).await;
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    sqlx::query("ALTER TABLE embedded_vectors RENAME TO embedded_vectors_gone")
        .execute(&pool)
        .await
        .expect("rename");
    let resp = upsert(&app, &token, vec![item("v1", b"x", &[1.0, 0.0])]).await;
    let body = assert_error(resp, 503, "vector_index_unavailable").await;
    let text = body.to_string();
    for driver_word in [
        "embedded_vectors",
        "relation",
        "database",
        "error returned",
        "sqlx",
    ] {
        assert!(!text.contains(driver_word), "{driver_word:?} in {text}");
    }
    assert!(
        crate::helpers::log_text().contains("embedded_vectors"),
        "the cause is in the log"
    );
    pool.close().await;
}
