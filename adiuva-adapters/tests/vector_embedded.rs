//! The embedded vector index: the conformance suite on SQLite and on PostgreSQL, and
//! persistence across a restart (a new index over the same database).

use adiuva_adapters::database::AnyDatabase;
use adiuva_adapters::postgres::testing::TestDatabase;
use adiuva_adapters::vector::embedded::EmbeddedVectorIndex;
use adiuva_core::ports::vector::{VectorError, VectorFilter, VectorIndex};
use adiuva_core::testing::vectors::{Options, point, random_vector, run_all};

async fn sqlite(dir: &tempfile::TempDir) -> AnyDatabase {
    let url = format!("sqlite://{}", dir.path().join("adiuva.db").display());
    let db = AnyDatabase::connect(&url).await.expect("connect");
    db.migrate().await.expect("migrate");
    db
}

/// What a restart must keep: points, payloads, replacements, deletions, dimensions.
async fn survives_a_restart(db: &AnyDatabase) {
    let first = EmbeddedVectorIndex::new(db);
    let ns = "restart-ns";
    let pts: Vec<_> = (0..50)
        .map(|i| point(&format!("p{i}"), &random_vector(i, 16)))
        .collect();
    first.upsert(ns, pts.clone()).await.expect("upsert");
    first
        .upsert(ns, vec![point("p0", &random_vector(999, 16))])
        .await
        .expect("replace");
    assert_eq!(first.delete(ns, &["p1".into()]).await.expect("delete"), 1);
    let q = random_vector(7, 16);
    let all = VectorFilter::default();
    let before = first.search(ns, &q, 50, &all).await.expect("search");

    let second = EmbeddedVectorIndex::new(db);
    let after = second.search(ns, &q, 50, &all).await.expect("search");
    assert_eq!(
        before, after,
        "a new index over the same database finds the same"
    );
    assert_eq!(after.len(), 49);
    assert!(
        matches!(
            second
                .upsert(ns, vec![point("x", &random_vector(1, 8))])
                .await,
            Err(VectorError::DimensionMismatch {
                expected: 16,
                got: 8
            })
        ),
        "the dimension is remembered"
    );
    second.delete_namespace(ns).await.expect("drop");
    let third = EmbeddedVectorIndex::new(db);
    assert!(
        third
            .search(ns, &q, 5, &all)
            .await
            .expect("search")
            .is_empty()
    );
}

#[tokio::test]
async fn conformance_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sqlite(&dir).await;
    run_all(&EmbeddedVectorIndex::new(&db), Options::EXACT).await;
    survives_a_restart(&db).await;
}

#[tokio::test]
async fn conformance_on_postgres() {
    let Some(test_db) = TestDatabase::create("embedded_vectors").await else {
        return;
    };
    let db = AnyDatabase::connect(test_db.url()).await.expect("connect");
    db.migrate().await.expect("migrate");
    run_all(&EmbeddedVectorIndex::new(&db), Options::EXACT).await;
    survives_a_restart(&db).await;
    db.close().await;
    test_db.drop_now().await;
}
