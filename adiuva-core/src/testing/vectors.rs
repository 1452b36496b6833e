//! The [`VectorIndex`] conformance suite. Every check uses fresh random namespaces, so
//! runs can share a backend (one PostgreSQL, one Qdrant collection, one Pinecone index).

use bytes::Bytes;

use crate::ports::vector::{VectorError, VectorFilter, VectorHit, VectorIndex, VectorPoint};

/// What the backend under test is.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// `Some(d)` when the backend's dimension is fixed per deployment (Pinecone: the
    /// index's); the suite then uses `d` everywhere and skips the checks that give two
    /// namespaces different dimensions. `None`: dimension per namespace.
    pub fixed_dim: Option<usize>,
    /// Whether search is exact (brute force): the recall check then demands 1.0;
    /// otherwise (HNSW) it demands at least `min_recall`.
    pub exact: bool,
    /// The least recall@10 accepted from an approximate backend on 400 random points.
    pub min_recall: f64,
}

impl Options {
    /// An exact backend with per-namespace dimensions (embedded, memory).
    pub const EXACT: Self = Self {
        fixed_dim: None,
        exact: true,
        min_recall: 1.0,
    };
    /// An approximate backend with per-namespace dimensions (pgvector, Qdrant).
    pub const APPROXIMATE: Self = Self {
        fixed_dim: None,
        exact: false,
        min_recall: 0.9,
    };
}

/// A fresh namespace for one check.
pub fn namespace(tag: &str) -> String {
    format!("conf-{tag}-{}", uuid::Uuid::new_v4().simple())
}

/// A point whose payload is its id's bytes.
pub fn point(id: &str, vector: &[f32]) -> VectorPoint {
    VectorPoint {
        id: id.into(),
        vector: vector.to_vec(),
        payload: Bytes::from(format!("payload-of-{id}")),
    }
}

pub use crate::vector::{cosine, random_vector};

/// The exact top `k` of `points` for `query` by [`cosine`] in f64, as `(score, id)` in
/// the port's order: the reference recall is measured against.
pub fn brute_force<'a>(query: &[f32], points: &'a [VectorPoint], k: usize) -> Vec<(f64, &'a str)> {
    let mut truth: Vec<(f64, &str)> = points
        .iter()
        .map(|p| (cosine(query, &p.vector), p.id.as_str()))
        .collect();
    truth.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    truth.truncate(k);
    truth
}

/// A vector of `dim` whose first two components are `(a, b)`, the rest zero.
fn plane(dim: usize, a: f32, b: f32) -> Vec<f32> {
    let mut v = vec![0.0; dim];
    v[0] = a;
    v[1] = b;
    v
}

fn ids(hits: &[VectorHit]) -> Vec<&str> {
    hits.iter().map(|h| h.id.as_str()).collect()
}

fn all() -> VectorFilter {
    VectorFilter::default()
}

/// The best 10 hits in `ns` for `query`, unfiltered.
async fn top10(index: &dyn VectorIndex, ns: &str, query: &[f32]) -> Vec<VectorHit> {
    index.search(ns, query, 10, &all()).await.expect("search")
}

/// `n` points `{prefix}0`, `{prefix}1`, … at ever wider angles from the first axis, so a
/// query along it ranks them by id.
fn fan(prefix: &str, n: usize, d: usize) -> Vec<VectorPoint> {
    (0..n)
        .map(|i| point(&format!("{prefix}{i}"), &plane(d, 1.0, i as f32)))
        .collect()
}

/// Runs every check below against `index`.
pub async fn run_all(index: &dyn VectorIndex, opts: Options) {
    let d = opts.fixed_dim.unwrap_or(4);
    empty_namespace_searches_empty(index, d).await;
    ranks_by_cosine_with_true_scores(index, d).await;
    ties_are_ordered_by_id(index, d).await;
    top_k_truncates(index, d).await;
    upsert_replaces_and_last_in_batch_wins(index, d).await;
    payload_round_trips(index, d).await;
    dimension_is_fixed_per_namespace(index, d).await;
    invalid_vectors_are_refused(index, d).await;
    namespaces_are_isolated(index, d).await;
    delete_counts_and_removes(index, d).await;
    filter_by_ids(index, d).await;
    delete_namespace_drops_everything(index, d).await;
    if opts.fixed_dim.is_none() {
        namespaces_have_their_own_dimensions(index).await;
        emptied_namespace_takes_any_dimension(index).await;
    }
    recall_against_brute_force(index, opts).await;
}

/// A namespace nobody wrote to has no hits.
pub async fn empty_namespace_searches_empty(index: &dyn VectorIndex, d: usize) {
    let ns = namespace("empty");
    let hits = top10(index, &ns, &plane(d, 1.0, 0.0)).await;
    assert!(
        hits.is_empty(),
        "an unwritten namespace has no hits: {hits:?}"
    );
}

/// Order by cosine, and the scores are the cosines (not distances, not dot products of
/// unnormalised vectors), within [-1, 1].
pub async fn ranks_by_cosine_with_true_scores(index: &dyn VectorIndex, d: usize) {
    let ns = namespace("rank");
    let pts = [
        point("same", &plane(d, 2.0, 0.0)),
        point("near", &plane(d, 1.0, 0.2)),
        point("orthogonal", &plane(d, 0.0, 3.0)),
        point("opposite", &plane(d, -5.0, 0.0)),
        point("diagonal", &plane(d, 1.0, 1.0)),
    ];
    assert_eq!(
        index.upsert(&ns, pts.to_vec()).await.expect("upsert"),
        5,
        "upsert returns how many points it took"
    );
    let q = plane(d, 0.5, 0.0);
    let hits = top10(index, &ns, &q).await;
    assert_eq!(
        ids(&hits),
        ["same", "near", "diagonal", "orthogonal", "opposite"],
        "ordered by cosine, not by magnitude"
    );
    for h in &hits {
        let p = pts.iter().find(|p| p.id == h.id).expect("known id");
        let want = cosine(&q, &p.vector);
        assert!(
            (f64::from(h.score) - want).abs() < 1e-4,
            "{}: score {} is the cosine {want}",
            h.id,
            h.score
        );
        assert!((-1.0..=1.0).contains(&h.score), "score in [-1, 1]");
    }
}

/// Equal scores come out by id ascending, whatever the insertion order.
pub async fn ties_are_ordered_by_id(index: &dyn VectorIndex, d: usize) {
    let ns = namespace("ties");
    let v = plane(d, 1.0, 1.0);
    let pts = ["delta", "alpha", "charlie", "bravo"]
        .iter()
        .map(|id| point(id, &v))
        .collect();
    index.upsert(&ns, pts).await.expect("upsert");
    let hits = top10(index, &ns, &v).await;
    assert_eq!(
        ids(&hits),
        ["alpha", "bravo", "charlie", "delta"],
        "ties by id"
    );
}

/// `top_k` bounds the hits; a larger `top_k` returns everything.
pub async fn top_k_truncates(index: &dyn VectorIndex, d: usize) {
    let ns = namespace("topk");
    index.upsert(&ns, fan("p", 7, d)).await.expect("upsert");
    let q = plane(d, 1.0, 0.0);
    let three = index.search(&ns, &q, 3, &all()).await.expect("search");
    assert_eq!(ids(&three), ["p0", "p1", "p2"], "the best three");
    let many = index.search(&ns, &q, 100, &all()).await.expect("search");
    assert_eq!(many.len(), 7, "top_k above the count returns all");
}

/// Upserting an id again replaces vector and payload; within one batch the last wins.
pub async fn upsert_replaces_and_last_in_batch_wins(index: &dyn VectorIndex, d: usize) {
    let ns = namespace("replace");
    index
        .upsert(
            &ns,
            vec![
                point("a", &plane(d, 1.0, 0.0)),
                point("b", &plane(d, 0.0, 1.0)),
            ],
        )
        .await
        .expect("upsert");
    let mut moved = point("a", &plane(d, 0.0, 1.0));
    moved.payload = Bytes::from_static(b"second");
    let mut last = point("b", &plane(d, 1.0, 0.0));
    last.payload = Bytes::from_static(b"last");
    index
        .upsert(&ns, vec![moved, point("b", &plane(d, -1.0, 0.0)), last])
        .await
        .expect("upsert again");
    let hits = top10(index, &ns, &plane(d, 1.0, 0.0)).await;
    assert_eq!(hits.len(), 2, "replacing does not add points: {hits:?}");
    assert_eq!(hits[0].id, "b", "the last of b's two vectors counts");
    assert_eq!(hits[0].payload, Bytes::from_static(b"last"));
    assert_eq!(hits[1].id, "a");
    assert_eq!(
        hits[1].payload,
        Bytes::from_static(b"second"),
        "payload replaced"
    );
    assert!(hits[1].score.abs() < 1e-4, "a's vector was replaced");
}

/// Arbitrary bytes (not UTF-8, 24 KiB, empty) come back unchanged.
pub async fn payload_round_trips(index: &dyn VectorIndex, d: usize) {
    let ns = namespace("payload");
    let big: Vec<u8> = (0..24 * 1024).map(|i| (i * 31 % 256) as u8).collect();
    let pts = vec![
        VectorPoint {
            id: "binary".into(),
            vector: plane(d, 1.0, 0.0),
            payload: Bytes::from(big.clone()),
        },
        VectorPoint {
            id: "empty".into(),
            vector: plane(d, 0.0, 1.0),
            payload: Bytes::new(),
        },
        VectorPoint {
            id: "ünïcødé id/with:odd chars".into(),
            vector: plane(d, 1.0, 1.0),
            payload: Bytes::from_static(&[0, 255, 0xC3, 0x28]),
        },
    ];
    index.upsert(&ns, pts.clone()).await.expect("upsert");
    let hits = top10(index, &ns, &plane(d, 1.0, 0.0)).await;
    for p in &pts {
        let h = hits
            .iter()
            .find(|h| h.id == p.id)
            .expect("every id comes back");
        assert_eq!(h.payload, p.payload, "{}: payload unchanged", p.id);
    }
}

/// A different length, stored or queried, is a dimension mismatch naming both; nothing
/// of a refused batch is stored.
pub async fn dimension_is_fixed_per_namespace(index: &dyn VectorIndex, d: usize) {
    let ns = namespace("dim");
    index
        .upsert(&ns, vec![point("a", &plane(d, 1.0, 0.0))])
        .await
        .expect("first write fixes the dimension");
    let wrong = vec![1.0; d + 1];
    match index
        .upsert(
            &ns,
            vec![point("ok", &plane(d, 0.0, 1.0)), point("bad", &wrong)],
        )
        .await
    {
        Err(VectorError::DimensionMismatch { expected, got }) => {
            assert_eq!(
                (expected, got),
                (d, d + 1),
                "the error names both dimensions"
            )
        }
        other => panic!("a longer vector must be a dimension mismatch: {other:?}"),
    }
    match index.search(&ns, &wrong, 5, &all()).await {
        Err(VectorError::DimensionMismatch { expected, got }) => {
            assert_eq!((expected, got), (d, d + 1))
        }
        other => panic!("a longer query must be a dimension mismatch: {other:?}"),
    }
    let hits = top10(index, &ns, &plane(d, 1.0, 1.0)).await;
    assert_eq!(ids(&hits), ["a"], "the refused batch stored nothing");
}

/// Empty, NaN, infinite and all-zero vectors are refused, stored or queried.
pub async fn invalid_vectors_are_refused(index: &dyn VectorIndex, d: usize) {
    let ns = namespace("invalid");
    index
        .upsert(&ns, vec![point("a", &plane(d, 1.0, 0.0))])
        .await
        .expect("upsert");
    let mut nan = plane(d, 1.0, 0.0);
    nan[1] = f32::NAN;
    let mut inf = plane(d, 1.0, 0.0);
    inf[0] = f32::INFINITY;
    for (what, v) in [("zero", vec![0.0; d]), ("nan", nan), ("inf", inf)] {
        assert!(
            matches!(
                index.upsert(&ns, vec![point(what, &v)]).await,
                Err(VectorError::Invalid(_))
            ),
            "storing a {what} vector is refused"
        );
        assert!(
            matches!(
                index.search(&ns, &v, 3, &all()).await,
                Err(VectorError::Invalid(_))
            ),
            "querying a {what} vector is refused"
        );
    }
    assert!(
        matches!(
            index.search(&ns, &[], 3, &all()).await,
            Err(VectorError::Invalid(_) | VectorError::DimensionMismatch { .. })
        ),
        "an empty query is refused"
    );
    let hits = top10(index, &ns, &plane(d, 1.0, 0.0)).await;
    assert_eq!(ids(&hits), ["a"], "refused points were not stored");
}

/// One namespace never returns, deletes or is shaped by another's points.
pub async fn namespaces_are_isolated(index: &dyn VectorIndex, d: usize) {
    let (a, b) = (namespace("iso-a"), namespace("iso-b"));
    index
        .upsert(
            &a,
            vec![
                point("shared-id", &plane(d, 1.0, 0.0)),
                point("only-a", &plane(d, 1.0, 0.1)),
            ],
        )
        .await
        .expect("upsert a");
    index
        .upsert(&b, vec![point("shared-id", &plane(d, 0.0, 1.0))])
        .await
        .expect("upsert b");
    let hits = top10(index, &b, &plane(d, 1.0, 0.0)).await;
    assert_eq!(ids(&hits), ["shared-id"], "b sees only its own point");
    assert_eq!(hits[0].payload, Bytes::from("payload-of-shared-id"));
    assert!(
        hits[0].score.abs() < 1e-4,
        "b's shared-id is b's vector, not a's"
    );
    assert_eq!(
        index.delete(&b, &["only-a".into()]).await.expect("delete"),
        0,
        "b cannot delete a's id"
    );
    assert_eq!(
        index
            .delete(&b, &["shared-id".into()])
            .await
            .expect("delete"),
        1
    );
    let hits = top10(index, &a, &plane(d, 1.0, 0.0)).await;
    assert_eq!(
        ids(&hits),
        ["shared-id", "only-a"],
        "a is untouched by b's delete"
    );
}

/// `delete` reports how many existed, ignores unknown ids, and the points are gone.
pub async fn delete_counts_and_removes(index: &dyn VectorIndex, d: usize) {
    let ns = namespace("delete");
    index.upsert(&ns, fan("d", 5, d)).await.expect("upsert");
    let n = index
        .delete(&ns, &["d1".into(), "d3".into(), "nope".into(), "d1".into()])
        .await
        .expect("delete");
    assert_eq!(n, 2, "two of the ids existed");
    let hits = top10(index, &ns, &plane(d, 1.0, 0.0)).await;
    assert_eq!(ids(&hits), ["d0", "d2", "d4"]);
    assert_eq!(index.delete(&ns, &["d1".into()]).await.expect("again"), 0);
    assert_eq!(index.delete(&ns, &[]).await.expect("nothing"), 0);
}

/// An id filter restricts the candidates.
pub async fn filter_by_ids(index: &dyn VectorIndex, d: usize) {
    let ns = namespace("filter");
    index.upsert(&ns, fan("f", 6, d)).await.expect("upsert");
    let filter = VectorFilter {
        ids: Some(vec!["f5".into(), "f2".into(), "missing".into()]),
    };
    let hits = index
        .search(&ns, &plane(d, 1.0, 0.0), 10, &filter)
        .await
        .expect("search");
    assert_eq!(
        ids(&hits),
        ["f2", "f5"],
        "only the named ids, in score order"
    );
}

/// After `delete_namespace` nothing is found and another namespace is untouched.
pub async fn delete_namespace_drops_everything(index: &dyn VectorIndex, d: usize) {
    let (ns, other) = (namespace("dropns"), namespace("keep"));
    index
        .upsert(&ns, vec![point("x", &plane(d, 1.0, 0.0))])
        .await
        .expect("upsert");
    index
        .upsert(&other, vec![point("x", &plane(d, 1.0, 0.0))])
        .await
        .expect("upsert other");
    index.delete_namespace(&ns).await.expect("delete namespace");
    index
        .delete_namespace(&ns)
        .await
        .expect("deleting a deleted namespace is fine");
    let q = plane(d, 1.0, 0.0);
    assert!(
        index
            .search(&ns, &q, 5, &all())
            .await
            .expect("search")
            .is_empty()
    );
    assert_eq!(
        index
            .search(&other, &q, 5, &all())
            .await
            .expect("search")
            .len(),
        1
    );
}

/// Two namespaces may hold different dimensions, and a deleted namespace starts over.
pub async fn namespaces_have_their_own_dimensions(index: &dyn VectorIndex) {
    let (a, b) = (namespace("dim-a"), namespace("dim-b"));
    index
        .upsert(&a, vec![point("x", &[1.0, 0.0, 0.0])])
        .await
        .expect("3-d");
    index
        .upsert(&b, vec![point("x", &[1.0, 0.0, 0.0, 0.0, 0.0])])
        .await
        .expect("5-d");
    let hits = index
        .search(&b, &[1.0, 0.0, 0.0, 0.0, 0.0], 5, &all())
        .await
        .expect("search");
    assert_eq!(ids(&hits), ["x"]);
    assert!(matches!(
        index.search(&b, &[1.0, 0.0, 0.0], 5, &all()).await,
        Err(VectorError::DimensionMismatch {
            expected: 5,
            got: 3
        })
    ));
    index.delete_namespace(&a).await.expect("drop a");
    index
        .upsert(&a, vec![point("y", &[0.0, 1.0])])
        .await
        .expect("a deleted namespace takes a new dimension");
    let hits = index
        .search(&a, &[0.0, 1.0], 5, &all())
        .await
        .expect("search");
    assert_eq!(ids(&hits), ["y"], "nothing of the old namespace remains");
}

/// A namespace emptied by `delete` takes any dimension again.
pub async fn emptied_namespace_takes_any_dimension(index: &dyn VectorIndex) {
    let ns = namespace("emptied");
    index
        .upsert(&ns, vec![point("x", &[1.0, 0.0, 0.0])])
        .await
        .expect("3-d");
    assert_eq!(index.delete(&ns, &["x".into()]).await.expect("delete"), 1);
    index
        .upsert(&ns, vec![point("y", &[1.0, 0.0])])
        .await
        .expect("an emptied namespace takes a new dimension");
}

/// recall@10 over 400 random points against the suite's own brute force, for 20 queries.
/// Exact backends must also reproduce brute force's scores.
pub async fn recall_against_brute_force(index: &dyn VectorIndex, opts: Options) {
    let d = opts.fixed_dim.unwrap_or(24);
    let ns = namespace("recall");
    let pts: Vec<VectorPoint> = (0..400)
        .map(|i| point(&format!("r{i:03}"), &random_vector(i + 1, d)))
        .collect();
    for batch in pts.chunks(100) {
        index.upsert(&ns, batch.to_vec()).await.expect("upsert");
    }
    let (mut found, mut wanted) = (0usize, 0usize);
    for qi in 0..20u64 {
        let q = random_vector(10_000 + qi, d);
        let truth = brute_force(&q, &pts, 10);
        let hits = top10(index, &ns, &q).await;
        assert!(hits.len() <= 10, "at most top_k hits");
        for w in hits.windows(2) {
            assert!(
                w[0].score > w[1].score || (w[0].score == w[1].score && w[0].id < w[1].id),
                "hits ordered by score, then id: {hits:?}"
            );
        }
        wanted += truth.len();
        found += truth
            .iter()
            .filter(|(_, id)| hits.iter().any(|h| h.id == *id))
            .count();
        if opts.exact {
            for (h, (score, id)) in hits.iter().zip(&truth) {
                assert_eq!(h.id, *id, "exact search returns brute force's order");
                assert!((f64::from(h.score) - score).abs() < 1e-4);
            }
        }
    }
    let recall = found as f64 / wanted as f64;
    let min = if opts.exact { 1.0 } else { opts.min_recall };
    assert!(recall >= min, "recall@10 {recall:.3} is below {min}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vector::MemoryVectorIndex;

    #[tokio::test]
    async fn the_memory_index_conforms() {
        run_all(&MemoryVectorIndex::new(), Options::EXACT).await;
    }
}
