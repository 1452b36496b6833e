//! The pgvector index against a real PostgreSQL with the extension (see
//! `scripts/install-pgvector.sh`), one fresh database per test. Skipped unless
//! `ADIUVA_TEST_POSTGRES_URL` is set (CI sets it and requires it).

use adiuva_adapters::postgres::testing::TestDatabase;
use adiuva_adapters::vector::pgvector::{MAX_DIM, PgVectorIndex};
use adiuva_core::ports::vector::{VectorError, VectorFilter, VectorIndex, VectorPoint};
use adiuva_core::testing::vectors::{
    Options, brute_force, cosine, namespace, point, random_vector, run_all,
};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row};

async fn setup(tag: &str) -> Option<(TestDatabase, PgPool, PgVectorIndex)> {
    let db = TestDatabase::create(tag).await?;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(db.url())
        .await
        .expect("connect to the test database");
    let index = PgVectorIndex::new(pool.clone())
        .await
        .expect("the vector extension is installed (scripts/install-pgvector.sh)");
    Some((db, pool, index))
}

async fn teardown(db: TestDatabase, pool: PgPool) {
    pool.close().await;
    db.drop_now().await;
}

/// `n` random points of `dim`, ids `{prefix}{i:05}`, seeds from `seed0`.
fn random_points(prefix: &str, n: u64, dim: usize, seed0: u64) -> Vec<VectorPoint> {
    (0..n)
        .map(|i| point(&format!("{prefix}{i:05}"), &random_vector(seed0 + i, dim)))
        .collect()
}

async fn upsert_all(index: &PgVectorIndex, ns: &str, points: &[VectorPoint]) {
    for chunk in points.chunks(1000) {
        assert_eq!(
            index.upsert(ns, chunk.to_vec()).await.expect("upsert"),
            chunk.len()
        );
    }
}

/// Forbids the exact plan (primary-key scan + sort), so the planner must take HNSW.
const FORCE_HNSW: &str = "SET LOCAL enable_sort = off";
const NO_ITERATIVE_SCAN: &str = "SET LOCAL hnsw.iterative_scan = off";

/// Runs the index's own HNSW statement with its settings and then `extra` ones, and
/// returns the ids, or the plan's lines when `explain`.
async fn raw_hnsw(
    pool: &PgPool,
    index: &PgVectorIndex,
    ns: &str,
    query: &[f32],
    top_k: usize,
    extra: &[&'static str],
    explain: bool,
) -> Vec<String> {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query(AssertSqlSafe(index.search_settings_sql(top_k)))
        .execute(&mut *tx)
        .await
        .expect("settings");
    for sql in extra {
        sqlx::query(*sql)
            .execute(&mut *tx)
            .await
            .expect("extra setting");
    }
    let sql = PgVectorIndex::hnsw_search_sql(query.len());
    let sql = if explain {
        format!("EXPLAIN {sql}")
    } else {
        sql
    };
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(ns)
        .bind(query)
        .bind(top_k as i64)
        .fetch_all(&mut *tx)
        .await
        .expect("raw search");
    tx.rollback().await.expect("rollback");
    rows.iter()
        .map(|r| r.try_get::<String, _>(0).expect("text column"))
        .collect()
}

#[tokio::test]
async fn conformance_suite() {
    let Some((db, pool, index)) = setup("pgvector").await else {
        return;
    };
    run_all(&index, Options::APPROXIMATE).await;
    assert_eq!(index.name(), "pgvector");
    // A second instance on the same database (another server, a restart) sets up again
    // without harm and sees the same points.
    let again = PgVectorIndex::new(pool.clone())
        .await
        .expect("new is idempotent");
    let ns = namespace("again");
    index
        .upsert(&ns, vec![point("x", &[1.0, 2.0])])
        .await
        .expect("upsert");
    let hits = again
        .search(&ns, &[1.0, 2.0], 5, &VectorFilter::default())
        .await
        .expect("search");
    assert_eq!(hits.len(), 1);
    teardown(db, pool).await;
}

#[tokio::test]
async fn recall_at_10_over_3000_points_uses_the_hnsw_index() {
    let Some((db, pool, index)) = setup("pgvector").await else {
        return;
    };
    let dim = 64;
    let ns = namespace("recall3k");
    let pts = random_points("p", 3000, dim, 1);
    upsert_all(&index, &ns, &pts).await;
    // As autovacuum would soon: with statistics the planner knows the namespace is the
    // whole table and takes HNSW (without, it guesses "small" and scans exactly).
    index.analyze().await.expect("analyze");
    let plan = raw_hnsw(&pool, &index, &ns, &random_vector(7, dim), 10, &[], true)
        .await
        .join("\n");
    assert!(
        plan.contains("Index Scan using vector_points_hnsw_64"),
        "the search uses the 64-d HNSW index:\n{plan}"
    );

    let (mut found, mut wanted) = (0usize, 0usize);
    for qi in 0..30u64 {
        let q = random_vector(1_000_000 + qi, dim);
        let truth = brute_force(&q, &pts, 10);
        let hits = index
            .search(&ns, &q, 10, &VectorFilter::default())
            .await
            .expect("search");
        assert_eq!(hits.len(), 10);
        for h in &hits {
            let p = pts.iter().find(|p| p.id == h.id).expect("a stored id");
            assert!(
                (f64::from(h.score) - cosine(&q, &p.vector)).abs() < 1e-4,
                "scores are true cosines"
            );
        }
        wanted += truth.len();
        found += truth
            .iter()
            .filter(|(_, id)| hits.iter().any(|h| h.id == *id))
            .count();
    }
    let recall = found as f64 / wanted as f64;
    println!("recall@10 over 3000 random 64-d points, 30 queries: {recall:.3}");
    assert!(recall >= 0.95, "recall@10 {recall:.3} is below 0.95");
    teardown(db, pool).await;
}

#[tokio::test]
async fn a_small_namespace_next_to_a_large_one_finds_all_its_points() {
    let Some((db, pool, index)) = setup("pgvector").await else {
        return;
    };
    let dim = 64;
    let (big, small) = (namespace("big"), namespace("small"));
    upsert_all(&index, &big, &random_points("b", 3000, dim, 1)).await;
    let mine = random_points("s", 5, dim, 50_000);
    upsert_all(&index, &small, &mine).await;
    let q = random_vector(99, dim);

    let hits = index
        .search(&small, &q, 10, &VectorFilter::default())
        .await
        .expect("search");
    let mut ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["s00000", "s00001", "s00002", "s00003", "s00004"]);

    // With statistics the planner scans a 5-point namespace exactly; without them, or
    // forced as here, it takes HNSW, which then finds all five only thanks to the
    // iterative scan (the adapter's exact fallback is not what saved it) ...
    let plan = raw_hnsw(&pool, &index, &small, &q, 10, &[FORCE_HNSW], true)
        .await
        .join("\n");
    assert!(
        plan.contains("Index Scan using vector_points_hnsw_64"),
        "HNSW plan:\n{plan}"
    );
    assert_eq!(
        raw_hnsw(&pool, &index, &small, &q, 10, &[FORCE_HNSW], false)
            .await
            .len(),
        5,
        "iterative scan returns the whole small namespace"
    );
    // ... and without it the filter after the scan starves, which is why it is on.
    let starved = raw_hnsw(
        &pool,
        &index,
        &small,
        &q,
        10,
        &[FORCE_HNSW, NO_ITERATIVE_SCAN],
        false,
    )
    .await;
    assert!(
        starved.len() < 5,
        "without iterative scan the HNSW candidates are mostly the big namespace's: {starved:?}"
    );
    teardown(db, pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_writers_with_different_dimensions_one_wins() {
    let Some((db, pool, index)) = setup("pgvector").await else {
        return;
    };
    for round in 0..10 {
        let ns = namespace("race");
        let (a, b) = (index.clone(), index.clone());
        let (na, nb) = (ns.clone(), ns.clone());
        let three =
            tokio::spawn(
                async move { a.upsert(&na, vec![point("three", &[1.0, 2.0, 3.0])]).await },
            );
        let five = tokio::spawn(async move {
            b.upsert(&nb, vec![point("five", &[1.0, 2.0, 3.0, 4.0, 5.0])])
                .await
        });
        let (three, five) = (three.await.expect("task"), five.await.expect("task"));
        let winner = match (&three, &five) {
            (Ok(1), Err(VectorError::DimensionMismatch { expected, got })) => {
                assert_eq!((*expected, *got), (3, 5), "round {round}");
                3
            }
            (Err(VectorError::DimensionMismatch { expected, got }), Ok(1)) => {
                assert_eq!((*expected, *got), (5, 3), "round {round}");
                5
            }
            other => panic!("round {round}: exactly one first writer wins: {other:?}"),
        };
        let q = vec![1.0; winner];
        let hits = index
            .search(&ns, &q, 10, &VectorFilter::default())
            .await
            .expect("search");
        assert_eq!(hits.len(), 1, "only the winner's point is stored");
    }
    teardown(db, pool).await;
}

#[tokio::test]
async fn vectors_longer_than_hnsw_allows_are_invalid() {
    let Some((db, pool, index)) = setup("pgvector").await else {
        return;
    };
    let ns = namespace("long");
    let long = vec![0.5; MAX_DIM + 1];
    match index.upsert(&ns, vec![point("x", &long)]).await {
        Err(VectorError::Invalid(why)) => assert!(why.contains("2000"), "{why}"),
        other => panic!("a 2001-d vector is refused: {other:?}"),
    }
    assert!(matches!(
        index.search(&ns, &long, 3, &VectorFilter::default()).await,
        Err(VectorError::Invalid(_))
    ));
    let max = vec![0.5; MAX_DIM];
    index
        .upsert(&ns, vec![point("x", &max)])
        .await
        .expect("2000 dimensions fit");
    let hits = index
        .search(&ns, &max, 3, &VectorFilter::default())
        .await
        .expect("search");
    assert_eq!(hits.len(), 1);
    teardown(db, pool).await;
}
