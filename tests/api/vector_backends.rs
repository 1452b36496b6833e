//! The vectors API on the backends other than the embedded index: the same
//! [`vector_flow`](crate::vectors::vector_flow) through the server, with the backend
//! chosen by settings exactly as an operator would.

use adiuva_adapters::vector::pinecone::fake::PineconeFake;
use adiuva_core::domain::Tier;
use serde_json::json;

use crate::helpers::{assert_error, log_text, spawn_app_with};
use crate::records::user_on;
use crate::vectors::{item, plane, search_ids, upsert};

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
