//! The vectors API on the backends other than the embedded index: the same
//! [`vector_flow`](crate::vectors::vector_flow) through the server, with the backend
//! chosen by settings exactly as an operator would.

use adiuva_adapters::vector::pinecone::fake::PineconeFake;
use adiuva_adapters::vector::qdrant::fake::QdrantFake;
use adiuva_core::domain::Tier;
use serde_json::json;

use crate::helpers::{assert_error, log_text, spawn_app_on_postgres_with, spawn_app_with};
use crate::records::user_on;
use crate::vectors::{item, plane, search, search_ids, upsert};

/// Pinecone through its control plane (host looked up by index name), each user a
/// namespace; the index's dimension is every user's dimension; the key never reaches a
/// log.
#[tokio::test]
async fn vectors_on_pinecone() {
    let key = "pc-secret-key-for-the-test-0123456789";
    let fake = PineconeFake::start(key, "adiuva-test", 8)
        .await
        .expect("fake");
    let app = spawn_app_with(|s| {
        s.vector_url = Some("pinecone".into());
        s.pinecone_api_key = Some(adiuva_core::Secret::new(key.into()));
        s.pinecone_index = Some("adiuva-test".into());
        s.pinecone_controller_url = fake.url();
    })
    .await;
    crate::vectors::vector_flow(&app, 8).await;
    let t = user_on(&app, Tier::Pro).await;
    let body = assert_error(
        upsert(&app, &t, vec![item("x", b"x", &plane(4, 1.0, 0.0))]).await,
        422,
        "validation_error",
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("8-dimensional"),
        "{body}"
    );
    assert!(
        search_ids(&app, &t, json!({"query_vector": plane(8, 1.0, 0.0)}))
            .await
            .is_empty()
    );
    assert!(
        !log_text().contains(key),
        "the Pinecone key never reaches a log"
    );
}

/// Qdrant over gRPC (`qdrant://host:port`), one shared collection per dimension with the
/// user id as a payload filter; two dimensions live side by side for two users.
#[tokio::test]
async fn vectors_on_qdrant() {
    let key = "qdrant-secret-key-for-the-test-42";
    let fake = QdrantFake::start_with_api_key(key).await.expect("fake");
    let url = fake.url().replace("http://", "qdrant://");
    let app = spawn_app_with(|s| {
        s.vector_url = Some(url);
        s.qdrant_api_key = Some(adiuva_core::Secret::new(key.into()));
        s.qdrant_collection = "api_test".into();
    })
    .await;
    crate::vectors::vector_flow(&app, 8).await;
    // Another user with another dimension: a second collection, no interference.
    let t = user_on(&app, Tier::Pro).await;
    assert_eq!(
        upsert(&app, &t, vec![item("x", b"x", &plane(4, 1.0, 0.0))])
            .await
            .status(),
        200
    );
    assert_eq!(
        search_ids(&app, &t, json!({"query_vector": plane(4, 1.0, 0.0)})).await,
        ["x"]
    );
    assert_error(
        search(&app, &t, json!({"query_vector": plane(8, 1.0, 0.0)})).await,
        422,
        "validation_error",
    )
    .await;
    let mut names: Vec<String> = fake.collections().into_iter().map(|c| c.0).collect();
    names.sort();
    assert_eq!(
        names,
        ["api_test_4", "api_test_8"],
        "one collection per dimension"
    );
    assert!(
        !log_text().contains(key),
        "the Qdrant key never reaches a log"
    );
}

/// pgvector in the application's PostgreSQL database (`vector_url = pgvector`).
#[tokio::test]
async fn vectors_on_pgvector() {
    let Some(app) = spawn_app_on_postgres_with(|s| s.vector_url = Some("pgvector".into())).await
    else {
        return;
    };
    assert_eq!(app.adiuva.vectors().expect("vectors").backend(), "pgvector");
    crate::vectors::vector_flow(&app, 8).await;
}

/// pgvector needs PostgreSQL: on SQLite the server refuses to start and says why.
#[tokio::test]
async fn pgvector_on_sqlite_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = adiuva_server::settings::Settings::for_data_dir(dir.path());
    settings.bind = "127.0.0.1:0".parse().expect("addr");
    settings.jwt_secret = Some(adiuva_core::Secret::new("x".repeat(40)));
    settings.vector_url = Some("pgvector".into());
    let Err(e) = adiuva_server::startup::Application::build(settings).await else {
        panic!("pgvector on SQLite must not start");
    };
    assert!(
        e.to_string().contains("needs a PostgreSQL database_url"),
        "{e}"
    );
}
