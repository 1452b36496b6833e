//! The Qdrant vector index: the whole conformance suite against the fake Qdrant
//! (required), and against a real Qdrant when `ADIUVA_TEST_QDRANT_URL` is set.

#![cfg(feature = "qdrant")]

use adiuva_adapters::AdapterError;
use adiuva_adapters::vector::qdrant::QdrantIndex;
use adiuva_adapters::vector::qdrant::fake::QdrantFake;
use adiuva_core::ports::vector::{VectorError, VectorFilter, VectorIndex};
use adiuva_core::testing::vectors::{self, Options, point};

/// A collection prefix no other test (or earlier run, on a shared Qdrant) uses.
fn prefix() -> String {
    format!("adiuva_test_{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn conforms_against_the_fake() {
    let fake = QdrantFake::start().await.expect("start the fake");
    let prefix = prefix();
    let index = QdrantIndex::connect(fake.url(), None, &prefix)
        .await
        .expect("connect");
    assert_eq!(index.name(), "qdrant");
    vectors::run_all(&index, Options::EXACT).await;

    // The layout the module documents: one collection per dimension used.
    let mut names: Vec<(String, usize)> = fake
        .collections()
        .into_iter()
        .map(|(name, dim, _)| (name, dim))
        .collect();
    names.sort();
    let want: Vec<(String, usize)> = [2, 24, 3, 4, 5]
        .iter()
        .map(|d| (format!("{prefix}_{d}"), *d))
        .collect();
    assert_eq!(
        names, want,
        "one collection per dimension, named prefix_dim"
    );
    fake.shutdown().await;
}

#[tokio::test]
async fn two_indexes_share_collections_and_see_each_others_writes() {
    let fake = QdrantFake::start().await.expect("start the fake");
    let prefix = prefix();
    let a = QdrantIndex::connect(fake.url(), None, &prefix)
        .await
        .expect("connect a");
    let b = QdrantIndex::connect(fake.url(), None, &prefix)
        .await
        .expect("connect b");
    let ns = vectors::namespace("shared");
    a.upsert(&ns, vec![point("x", &[1.0, 0.0, 0.0])])
        .await
        .expect("a writes 3-d");
    // b has no cached knowledge of the 3-d collection, yet sees the namespace's dimension.
    match b.upsert(&ns, vec![point("y", &[1.0, 0.0])]).await {
        Err(VectorError::DimensionMismatch {
            expected: 3,
            got: 2,
        }) => {}
        other => panic!("b must see a's dimension: {other:?}"),
    }
    let hits = b
        .search(&ns, &[1.0, 0.0, 0.0], 5, &VectorFilter::default())
        .await
        .expect("b searches");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].id, "x");
    assert_eq!(b.delete(&ns, &["x".into()]).await.expect("b deletes"), 1);
    assert!(
        a.search(&ns, &[1.0, 0.0, 0.0], 5, &VectorFilter::default())
            .await
            .expect("a searches")
            .is_empty()
    );
}

#[tokio::test]
async fn api_key_is_checked_and_never_echoed() {
    let key = "s3cr3t-key-for-the-fake";
    let fake = QdrantFake::start_with_api_key(key)
        .await
        .expect("start the fake");
    let prefix = prefix();

    let index = QdrantIndex::connect(fake.url(), Some(key), &prefix)
        .await
        .expect("the right key connects");
    let ns = vectors::namespace("key");
    index
        .upsert(&ns, vec![point("x", &[1.0, 0.0])])
        .await
        .expect("and may write");

    let wrong = "wrong-key-that-must-not-leak";
    for (what, api_key) in [("a wrong key", Some(wrong)), ("no key", None)] {
        match QdrantIndex::connect(fake.url(), api_key, &prefix).await {
            Err(AdapterError::Connect(msg)) => {
                assert!(
                    msg.contains("API key"),
                    "{what}: the error points at the key: {msg}"
                );
                assert!(!msg.contains(wrong), "{what}: the key is not echoed: {msg}");
                assert!(!msg.contains(key), "{what}: the key is not echoed: {msg}");
            }
            other => panic!("{what} must be a Connect error: {other:?}"),
        }
    }

    // A key that cannot be sent as a header is refused without being quoted.
    let bad = "bad key\nwith newline";
    match QdrantIndex::connect(fake.url(), Some(bad), &prefix).await {
        Err(AdapterError::Connect(msg)) => assert!(!msg.contains("bad key"), "{msg}"),
        other => panic!("an unsendable key must be a Connect error: {other:?}"),
    }
    fake.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_qdrant_is_a_clear_connect_error() {
    // Bind then drop a listener: that port is closed for the moment.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    match QdrantIndex::connect(&url, Some("key-not-in-errors"), "adiuva_vectors").await {
        Err(AdapterError::Connect(msg)) => {
            assert!(msg.contains(&url), "names the URL: {msg}");
            assert!(msg.contains("6334"), "hints at the gRPC port: {msg}");
            assert!(!msg.contains("key-not-in-errors"), "no key: {msg}");
        }
        other => panic!("an unreachable Qdrant must be a Connect error: {other:?}"),
    }
    for (bad_url, prefix) in [
        ("qdrant://127.0.0.1:6334", "adiuva_vectors"),
        ("not a url", "adiuva_vectors"),
        ("http://127.0.0.1:6334", "bad/prefix"),
    ] {
        assert!(
            matches!(
                QdrantIndex::connect(bad_url, None, prefix).await,
                Err(AdapterError::Connect(_))
            ),
            "{bad_url} with prefix {prefix} is refused"
        );
    }
}

#[tokio::test]
async fn a_backend_failure_is_unavailable() {
    let fake = QdrantFake::start().await.expect("start the fake");
    let index = QdrantIndex::connect(fake.url(), None, &prefix())
        .await
        .expect("connect");
    fake.shutdown().await;
    let ns = vectors::namespace("gone");
    match index.upsert(&ns, vec![point("x", &[1.0, 0.0])]).await {
        Err(VectorError::Unavailable(msg)) => assert!(msg.contains("qdrant"), "{msg}"),
        other => panic!("a stopped Qdrant is Unavailable: {other:?}"),
    }
}

/// The suite against a real Qdrant (HNSW, so approximate). Not a required service: CI
/// has no Qdrant, and the fake run above is the one that must pass.
#[tokio::test]
async fn conforms_against_a_real_qdrant_when_configured() {
    let Ok(url) = std::env::var("ADIUVA_TEST_QDRANT_URL") else {
        eprintln!("NOTE: ADIUVA_TEST_QDRANT_URL not set; real-Qdrant conformance not run");
        return;
    };
    // qdrant-client links ring (through tonic) next to the tree's aws-lc-rs, so rustls
    // cannot pick a provider by itself; for an https URL, make it ours. (tonic would
    // fall back to ring rather than fail, but one provider per process is the rule.)
    adiuva_adapters::install_crypto_provider();
    let key = std::env::var("ADIUVA_TEST_QDRANT_API_KEY").ok();
    let index = QdrantIndex::connect(&url, key.as_deref(), &prefix())
        .await
        .expect("connect to ADIUVA_TEST_QDRANT_URL");
    vectors::run_all(&index, Options::APPROXIMATE).await;
}

/// The fake answers as Qdrant does, checked with qdrant-client's raw requests (not
/// through the adapter, which would hide what the fake says).
#[tokio::test]
async fn the_fake_speaks_qdrant() {
    use qdrant_client::qdrant::{
        CreateCollectionBuilder, DeleteCollectionBuilder, Distance, GetPointsBuilder, PointStruct,
        QueryPointsBuilder, ScrollPointsBuilder, UpsertPointsBuilder, VectorParamsBuilder,
    };
    use qdrant_client::{Payload, Qdrant, QdrantError};

    fn code(e: QdrantError) -> tonic::Code {
        match e {
            QdrantError::ResponseError { status } => status.code(),
            other => panic!("expected a gRPC status, got {other}"),
        }
    }

    let fake = QdrantFake::start_with_api_key("k").await.expect("start");
    let unauthenticated = Qdrant::from_url(fake.url())
        .skip_compatibility_check()
        .build()
        .expect("client");
    unauthenticated
        .health_check()
        .await
        .expect("the health check needs no key, as in Qdrant");
    assert_eq!(
        code(
            unauthenticated
                .list_collections()
                .await
                .expect_err("needs the key")
        ),
        tonic::Code::Unauthenticated
    );

    let q = Qdrant::from_url(fake.url())
        .api_key("k")
        .skip_compatibility_check()
        .build()
        .expect("client");
    let c = "fake_wire";
    q.create_collection(
        CreateCollectionBuilder::new(c)
            .vectors_config(VectorParamsBuilder::new(2, Distance::Cosine)),
    )
    .await
    .expect("create");
    assert!(
        q.create_collection(
            CreateCollectionBuilder::new(c)
                .vectors_config(VectorParamsBuilder::new(2, Distance::Cosine))
        )
        .await
        .is_err(),
        "an existing collection cannot be created again"
    );
    assert_eq!(
        code(
            q.create_collection(
                CreateCollectionBuilder::new("dot")
                    .vectors_config(VectorParamsBuilder::new(2, Distance::Dot))
            )
            .await
            .expect_err("Dot is not implemented")
        ),
        tonic::Code::Unimplemented
    );

    let p = |id: u64, v: Vec<f32>| PointStruct::new(id, v, Payload::new());
    // One wrong vector refuses the whole batch.
    assert_eq!(
        code(
            q.upsert_points(UpsertPointsBuilder::new(
                c,
                vec![p(1, vec![1.0, 0.0]), p(2, vec![1.0, 0.0, 0.0])]
            ))
            .await
            .expect_err("wrong size")
        ),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        code(
            q.upsert_points(UpsertPointsBuilder::new("nope", vec![p(1, vec![1.0, 0.0])]))
                .await
                .expect_err("missing collection")
        ),
        tonic::Code::NotFound
    );
    q.upsert_points(
        UpsertPointsBuilder::new(
            c,
            vec![
                p(9, vec![3.0, 4.0]),
                p(3, vec![6.0, 8.0]),
                p(5, vec![0.0, -2.0]),
            ],
        )
        .wait(true),
    )
    .await
    .expect("upsert");

    let hits = q
        .query(
            QueryPointsBuilder::new(c)
                .query(vec![3.0, 4.0])
                .with_vectors(true),
        )
        .await
        .expect("query")
        .result;
    let ids: Vec<_> = hits.iter().map(|h| h.id.clone().expect("id")).collect();
    assert_eq!(
        ids,
        [3.into(), 9.into(), 5.into()],
        "ties by point id, then the rest"
    );
    assert!((hits[0].score - 1.0).abs() < 1e-6 && (hits[2].score + 0.8).abs() < 1e-6);
    assert!(hits[0].payload.is_empty(), "no payload unless asked");
    let stored = hits[0].vectors.clone().expect("vectors").vectors_options;
    let Some(qdrant_client::qdrant::vectors_output::VectorsOptions::Vector(v)) = stored else {
        panic!("a default vector: {stored:?}")
    };
    let Some(qdrant_client::qdrant::vector_output::Vector::Dense(d)) = v.vector else {
        panic!("dense")
    };
    assert_eq!(d.data, [0.6, 0.8], "Cosine vectors are stored normalised");

    assert_eq!(
        code(
            q.query(QueryPointsBuilder::new(c).query(vec![1.0, 0.0, 0.0]))
                .await
                .expect_err("wrong query size")
        ),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        code(
            q.query(QueryPointsBuilder::new(c).query(vec![1.0, 0.0]).limit(0))
                .await
                .expect_err("limit 0")
        ),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        code(
            q.scroll(ScrollPointsBuilder::new(c))
                .await
                .expect_err("scroll")
        ),
        tonic::Code::Unimplemented
    );
    let got = q
        .get_points(GetPointsBuilder::new(c, vec![5.into(), 404.into()]))
        .await
        .expect("get")
        .result;
    assert_eq!(got.len(), 1, "missing ids are left out");
    assert!(
        !q.delete_collection(DeleteCollectionBuilder::new("nope"))
            .await
            .expect("deleting a missing collection is not an error")
            .result
    );
    fake.shutdown().await;
}
