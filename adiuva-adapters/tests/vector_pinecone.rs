//! The Pinecone adapter against the fake Pinecone server (always), and against a real
//! Pinecone index when `ADIUVA_TEST_PINECONE_API_KEY` and `ADIUVA_TEST_PINECONE_INDEX`
//! are set.

use std::time::Duration;

use adiuva_adapters::AdapterError;
use adiuva_adapters::vector::pinecone::fake::PineconeFake;
use adiuva_adapters::vector::pinecone::{PineconeConfig, PineconeIndex, RetryPolicy};
use adiuva_core::ports::vector::{VectorError, VectorFilter, VectorIndex, VectorPoint};
use adiuva_core::testing::vectors::{Options, namespace, point, run_all};
use bytes::Bytes;

const KEY: &str = "pcsk_test_secret_key_123";
const INDEX: &str = "adiuva-test";
const DIM: usize = 8;

fn config(fake: &PineconeFake, key: &str) -> PineconeConfig {
    PineconeConfig {
        api_key: key.into(),
        index: INDEX.into(),
        host: Some(fake.url()),
        controller_url: fake.url(),
    }
}

async fn fake_and_index() -> (PineconeFake, PineconeIndex) {
    let fake = PineconeFake::start(KEY, INDEX, DIM)
        .await
        .expect("start fake");
    let index = PineconeIndex::connect(config(&fake, KEY))
        .await
        .expect("connect");
    (fake, index)
}

fn unit(i: usize) -> Vec<f32> {
    let mut v = vec![0.0; DIM];
    v[i % DIM] = 1.0;
    v
}

#[tokio::test]
async fn the_adapter_conforms_against_the_fake() {
    let (fake, index) = fake_and_index().await;
    assert_eq!(index.name(), "pinecone");
    assert_eq!(index.dimension(), DIM);
    run_all(
        &index,
        Options {
            fixed_dim: Some(DIM),
            exact: true,
            min_recall: 1.0,
        },
    )
    .await;
    assert_eq!(
        fake.last_api_version().as_deref(),
        Some("2025-04"),
        "every request names the API version"
    );
}

#[tokio::test]
async fn the_host_is_resolved_through_the_control_plane() {
    let fake = PineconeFake::start(KEY, INDEX, DIM).await.expect("fake");
    let index = PineconeIndex::connect(PineconeConfig {
        host: None,
        ..config(&fake, KEY)
    })
    .await
    .expect("connect through the control plane");
    assert_eq!(index.host(), fake.url(), "the control plane's host is used");
    assert_eq!(index.dimension(), DIM);
    let ns = namespace("resolved");
    index
        .upsert(&ns, vec![point("a", &unit(0))])
        .await
        .expect("upsert");
    assert_eq!(fake.vector_count(&ns), 1, "the write reached the index");

    let missing = PineconeIndex::connect(PineconeConfig {
        host: None,
        index: "no-such-index".into(),
        ..config(&fake, KEY)
    })
    .await;
    match missing {
        Err(AdapterError::Connect(msg)) => {
            assert!(msg.contains("no index named \"no-such-index\""), "{msg}")
        }
        other => panic!("an unknown index is a Connect error: {other:?}"),
    }
}

#[tokio::test]
async fn a_wrong_key_is_a_clear_error_without_the_key() {
    let fake = PineconeFake::start(KEY, INDEX, DIM).await.expect("fake");
    let wrong = "pcsk_wrong_key_456";
    for host in [Some(fake.url()), None] {
        let err = PineconeIndex::connect(PineconeConfig {
            host,
            ..config(&fake, wrong)
        })
        .await
        .expect_err("a wrong key cannot connect");
        let AdapterError::Connect(msg) = &err else {
            panic!("a wrong key is a Connect error: {err:?}");
        };
        assert!(msg.contains("401"), "{msg}");
        assert!(msg.contains("Invalid API Key"), "Pinecone's message: {msg}");
        assert!(msg.contains("check the Pinecone API key"), "{msg}");
        assert!(!msg.contains(wrong) && !msg.contains(KEY), "{msg}");
    }
    let cfg = config(&fake, wrong);
    assert!(
        !format!("{cfg:?}").contains(wrong),
        "the config's Debug hides the key"
    );
    let index = PineconeIndex::connect(config(&fake, KEY))
        .await
        .expect("connect");
    assert!(
        !format!("{index:?}").contains(KEY),
        "the index's Debug hides the key"
    );
}

#[tokio::test]
async fn a_non_cosine_index_is_refused_at_connect() {
    for metric in ["dotproduct", "euclidean"] {
        let fake = PineconeFake::start_with_metric(KEY, INDEX, DIM, metric)
            .await
            .expect("fake");
        for host in [Some(fake.url()), None] {
            match PineconeIndex::connect(PineconeConfig {
                host,
                ..config(&fake, KEY)
            })
            .await
            {
                Err(AdapterError::Connect(msg)) => {
                    assert!(msg.contains(metric) && msg.contains("cosine"), "{msg}")
                }
                other => panic!("a {metric} index is a Connect error: {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn transient_failures_are_retried() {
    let (fake, index) = fake_and_index().await;
    let ns = namespace("retry");
    fake.fail_next(2, 503);
    let before = fake.requests();
    assert_eq!(
        index
            .upsert(&ns, vec![point("a", &unit(0))])
            .await
            .expect("two 503s then success"),
        1
    );
    assert_eq!(fake.requests() - before, 3, "two failures and one success");
    fake.fail_next(1, 429);
    let hits = index
        .search(&ns, &unit(0), 5, &VectorFilter::default())
        .await
        .expect("a 429 is retried");
    assert_eq!(hits.len(), 1);
}

#[tokio::test]
async fn persistent_failures_give_up_as_unavailable() {
    let (fake, index) = fake_and_index().await;
    let ns = namespace("giveup");
    fake.fail_always(Some(500));
    let before = fake.requests();
    match index
        .search(&ns, &unit(0), 5, &VectorFilter::default())
        .await
    {
        Err(VectorError::Unavailable(msg)) => {
            assert!(
                msg.contains("500") && msg.contains("after 3 attempts"),
                "{msg}"
            );
            assert!(!msg.contains(KEY), "{msg}");
        }
        other => panic!("always 500 is Unavailable: {other:?}"),
    }
    assert_eq!(fake.requests() - before, 3, "three attempts, no more");

    // Other 4xx are not retried.
    fake.fail_always(None);
    fake.fail_next(1, 403);
    let before = fake.requests();
    assert!(matches!(
        index.delete_namespace(&ns).await,
        Err(VectorError::Unavailable(_))
    ));
    assert_eq!(fake.requests() - before, 1, "a 403 is final");

    // A server that is gone is Unavailable too, after the retries.
    let index = index.with_retry(RetryPolicy {
        attempts: 2,
        base_delay: Duration::from_millis(10),
    });
    fake.shutdown().await;
    match index.upsert(&ns, vec![point("a", &unit(0))]).await {
        Err(VectorError::Unavailable(msg)) => assert!(msg.contains("after 2 attempts"), "{msg}"),
        other => panic!("an unreachable server is Unavailable: {other:?}"),
    }
}

#[tokio::test]
async fn payloads_over_pinecones_metadata_limit_are_invalid() {
    let (fake, index) = fake_and_index().await;
    let ns = namespace("big");
    let ok = VectorPoint {
        id: "fits".into(),
        vector: unit(0),
        payload: Bytes::from(vec![7u8; 30_000]),
    };
    let big = VectorPoint {
        id: "too-big".into(),
        vector: unit(1),
        payload: Bytes::from(vec![7u8; 31 * 1024]),
    };
    let before = fake.requests();
    match index.upsert(&ns, vec![ok.clone(), big]).await {
        Err(VectorError::Invalid(msg)) => {
            assert!(msg.contains("too-big") && msg.contains("40960"), "{msg}")
        }
        other => panic!("a 31 KiB payload is Invalid: {other:?}"),
    }
    assert_eq!(fake.requests(), before, "refused before any request");
    assert_eq!(
        index.upsert(&ns, vec![ok]).await.expect("30,000 bytes fit"),
        1
    );
    let stored = fake.metadata(&ns, "fits").expect("stored");
    assert!(stored["blob"].is_string(), "the payload is base64 metadata");
}

#[tokio::test]
async fn large_batches_are_split_and_ids_travel_encoded() {
    let (fake, index) = fake_and_index().await;
    let ns = namespace("batches");
    let pts: Vec<VectorPoint> = (0..250)
        .map(|i| VectorPoint {
            id: format!("ïd-{i:03}"),
            vector: unit(i),
            payload: Bytes::from(vec![1u8; 20 * 1024]),
        })
        .collect();
    let before = fake.requests();
    assert_eq!(index.upsert(&ns, pts).await.expect("upsert"), 250);
    // 250 records of ~27 KB: the 2 MB limit, not the 100-record one, sets the batches.
    assert!(
        fake.requests() - before >= 4,
        "split under 2 MB per request"
    );
    assert_eq!(fake.vector_count(&ns), 250);
    let ids: Vec<String> = (0..250).map(|i| format!("ïd-{i:03}")).collect();
    assert_eq!(index.delete(&ns, &ids).await.expect("delete"), 250);
    assert_eq!(fake.vector_count(&ns), 0);
}

#[tokio::test]
async fn the_real_pinecone_conforms() {
    let (Ok(api_key), Ok(index)) = (
        std::env::var("ADIUVA_TEST_PINECONE_API_KEY"),
        std::env::var("ADIUVA_TEST_PINECONE_INDEX"),
    ) else {
        println!(
            "NOTE: ADIUVA_TEST_PINECONE_API_KEY / ADIUVA_TEST_PINECONE_INDEX not set; \
             real-Pinecone conformance not run"
        );
        return;
    };
    let host = std::env::var("ADIUVA_TEST_PINECONE_HOST").ok();
    let index = PineconeIndex::connect(PineconeConfig {
        host,
        ..PineconeConfig::new(api_key, index)
    })
    .await
    .expect("connect to the real Pinecone index");
    let dim = index.dimension();
    run_all(
        &index,
        Options {
            fixed_dim: Some(dim),
            exact: false,
            min_recall: 0.9,
        },
    )
    .await;
}

#[tokio::test]
async fn ties_across_the_cut_are_settled_by_id() {
    let (fake, index) = fake_and_index().await;
    let ns = namespace("cut");
    // 40 equal scores: the fake, like Pinecone, returns ties in no particular order, so
    // the adapter must widen its request to see the whole tie before cutting at 5.
    let pts: Vec<VectorPoint> = (0..40)
        .rev()
        .map(|i| point(&format!("t{i:02}"), &unit(0)))
        .collect();
    index.upsert(&ns, pts).await.expect("upsert");
    let before = fake.requests();
    let hits = index
        .search(&ns, &unit(0), 5, &VectorFilter::default())
        .await
        .expect("search");
    let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(ids, ["t00", "t01", "t02", "t03", "t04"]);
    assert!(fake.requests() - before > 1, "the request was widened");
}

#[tokio::test]
async fn an_id_filter_scores_fetched_records_exactly() {
    let (fake, index) = fake_and_index().await;
    let ns = namespace("idfilter");
    let mut diag = vec![0.0; DIM];
    (diag[0], diag[1]) = (1.0, 1.0);
    index
        .upsert(
            &ns,
            vec![
                point("ünï", &diag),
                point("x-axis", &unit(0)),
                point("y-axis", &unit(1)),
            ],
        )
        .await
        .expect("upsert");
    let filter = VectorFilter {
        ids: Some(vec![
            "y-axis".into(),
            "ünï".into(),
            "ünï".into(),
            "gone".into(),
        ]),
    };
    let before = fake.requests();
    let hits = index
        .search(&ns, &unit(0), 10, &filter)
        .await
        .expect("search");
    assert_eq!(fake.requests() - before, 1, "one fetch, no query");
    let got: Vec<(&str, f32)> = hits.iter().map(|h| (h.id.as_str(), h.score)).collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].0, "ünï");
    assert!((got[0].1 - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
    assert_eq!(got[1], ("y-axis", 0.0));
    assert_eq!(hits[0].payload, Bytes::from("payload-of-ünï"));
}
