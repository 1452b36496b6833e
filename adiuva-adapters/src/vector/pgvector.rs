//! The pgvector vector index: points live in the application's PostgreSQL database, in
//! one table, searched through per-dimension HNSW indexes.
//!
//! # Approximate
//!
//! Unfiltered searches of large namespaces go through an HNSW index (m = 16,
//! ef_construction = 64, pgvector's defaults) with `hnsw.ef_search` =
//! max([`DEFAULT_EF_SEARCH`] (100; pgvector's own default is 40) or the value given to
//! [`PgVectorIndex::with_ef_search`], `top_k`), capped at pgvector's limit of 1000. HNSW
//! may miss true neighbours. Measured here on 3,000 uniformly random 64-dimensional
//! vectors (a hard case: real embeddings are clustered and do better), recall@10 is
//! about 0.99 at ef_search 100, 0.97 at 64 and 0.92 at 40; this adapter's tests demand
//! ≥ 0.95. A larger `ef_search` buys recall for latency.
//!
//! Exact instead: searches with an id filter (they score exactly the named ids), and
//! searches the planner serves from the primary key because the namespace is small
//! (see *Plans* below).
//!
//! # Plans
//!
//! PostgreSQL chooses per search, from its statistics, between the HNSW index and
//! reading the namespace through the primary key and sorting it exactly; the search
//! sets `plan_cache_mode = force_custom_plan` for its transaction so that choice is made
//! for the actual namespace, not once for an average one. Until `ANALYZE` has run
//! (autovacuum does it soon after large changes; [`PgVectorIndex::analyze`] does it at
//! once) the planner takes every namespace for small, and searches are exact and slower
//! on large namespaces.
//!
//! # Layout
//!
//! One table, `vector_points (namespace, id, dim, embedding vector, payload, updated_at)`,
//! primary key `(namespace, id)`, created by [`PgVectorIndex::new`] rather than by the
//! sqlx migrations, because the extension is optional: deployments on another vector
//! backend need not install it. HNSW needs a fixed dimension, while `embedding` is an
//! unconstrained `vector`; so the first write of each dimension `D` creates the partial
//! expression index
//!
//! ```sql
//! CREATE INDEX vector_points_hnsw_D ON vector_points
//!     USING hnsw ((embedding::vector(D)) vector_cosine_ops) WHERE dim = D
//! ```
//!
//! and a search in a `D`-dimensional namespace orders by exactly that expression under
//! exactly that predicate (with `D` as a literal, so generic plans match it too). HNSW
//! supports at most [`MAX_DIM`] dimensions; longer vectors are refused.
//!
//! A namespace's dimension is that of its rows (all equal); with no rows it has none, so
//! an emptied or deleted namespace takes any dimension, as the port's contract says.
//!
//! # Filtering and ordering
//!
//! The HNSW scan covers every namespace of that dimension, and the `namespace = $1`
//! filter is applied after it; a small namespace next to a large one could then get too
//! few hits. pgvector 0.8's iterative scan (`hnsw.iterative_scan = strict_order`, set for
//! the search's transaction only) keeps scanning until the limit is met or
//! `hnsw.max_scan_tuples` (default 20,000) is reached. If the index still returns fewer
//! than `top_k` hits, the search is repeated exactly over the namespace's rows, so a
//! namespace never looks emptier than it is.
//!
//! Hits are ordered by score descending, then id ascending, re-sorted in Rust after the
//! fetch. Caveat: on the HNSW path, when several points tie with the `top_k`-th score,
//! which of them make the cut is up to the index, not the id order.
//!
//! # Bulk writes
//!
//! An upsert sends up to 1,000 points per statement (ids and payloads as arrays, all
//! floats as one binary `real[]`), so the client side is cheap: 10,000 384-d points
//! take about 0.6 s without an HNSW index. With the index, PostgreSQL inserts each point
//! into the graph one by one, which dominates: about 18 s for the same 10,000 points
//! on a 2-core machine (a bulk `CREATE INDEX` over them takes about 3 s, but the index
//! must exist while other namespaces are being searched).
//!
//! # Concurrency
//!
//! An upsert is one transaction that holds `pg_advisory_xact_lock` on a hash of its
//! namespace while it checks the dimension and writes, so two first writers with
//! different dimensions cannot both win: the second sees the first's rows and fails
//! with [`VectorError::DimensionMismatch`]. Creating a dimension's index is serialised by
//! another advisory lock. Both use the two-key form of advisory locks with their own
//! class numbers, which cannot collide with one-key advisory locks elsewhere.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use adiuva_core::ports::vector::{VectorError, VectorFilter, VectorHit, VectorIndex, VectorPoint};
use adiuva_core::vector::{dedup_last, exact::validate, sort_hits};
use async_trait::async_trait;
use bytes::Bytes;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{AssertSqlSafe, Row};

use crate::AdapterError;

/// The most dimensions an HNSW index in pgvector accepts.
pub const MAX_DIM: usize = 2000;

/// The `hnsw.ef_search` used unless [`PgVectorIndex::with_ef_search`] says otherwise.
/// pgvector's default of 40 gave recall@10 of only 0.92 on random 64-d vectors.
pub const DEFAULT_EF_SEARCH: usize = 100;

/// pgvector refuses a larger `hnsw.ef_search`.
const MAX_EF_SEARCH: usize = 1000;

/// Points written per statement inside an upsert's transaction: bounds the size of one
/// bind message (1,000 × 384 floats ≈ 1.5 MB) whatever the batch.
const ROWS_PER_STATEMENT: usize = 1000;

/// Advisory-lock classes (first key of the two-key form): "AdVn" and "AdVi".
const LOCK_NAMESPACE: i32 = 0x4164_566E;
const LOCK_INDEX: i32 = 0x4164_5669;
/// Serialises `new` across instances: concurrent `CREATE EXTENSION/TABLE IF NOT EXISTS`
/// can otherwise fail on the catalog's unique indexes.
const LOCK_SETUP: (i32, i32) = (0x4164_5673, 0);

const SETUP_SQL: &str = "CREATE TABLE IF NOT EXISTS vector_points (
    namespace  text        NOT NULL,
    id         text        NOT NULL,
    dim        integer     NOT NULL,
    embedding  vector      NOT NULL,
    payload    bytea       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, id)
)";

/// `$1` namespace, `$2` dim, `$3` all vectors concatenated (`real[]`, `dim` per point),
/// `$4` ids, `$5` payloads. One statement per chunk: the floats travel in binary and
/// each point's slice is cast to `vector` on the server.
const UPSERT_SQL: &str = "INSERT INTO vector_points (namespace, id, dim, embedding, payload, updated_at)
SELECT $1, t.id, $2, ($3::real[])[(t.ord::int - 1) * $2 + 1 : t.ord::int * $2]::vector, t.payload, now()
FROM UNNEST($4::text[], $5::bytea[]) WITH ORDINALITY AS t(id, payload, ord)
ON CONFLICT (namespace, id) DO UPDATE
SET dim = EXCLUDED.dim, embedding = EXCLUDED.embedding, payload = EXCLUDED.payload,
    updated_at = EXCLUDED.updated_at";

/// Exact scoring over a namespace's rows (no index can serve `embedding <=> q` on the
/// unconstrained column): `$1` namespace, `$2` query, `$3` limit.
const EXACT_SQL: &str = "SELECT id, payload, 1 - (embedding <=> $2::real[]::vector) AS score
FROM vector_points WHERE namespace = $1
ORDER BY embedding <=> $2::real[]::vector, id LIMIT $3";

/// Exact scoring of named ids: `$1` namespace, `$2` query, `$3` ids, `$4` limit.
const EXACT_IDS_SQL: &str = "SELECT id, payload, 1 - (embedding <=> $2::real[]::vector) AS score
FROM vector_points WHERE namespace = $1 AND id = ANY($3::text[])
ORDER BY embedding <=> $2::real[]::vector, id LIMIT $4";

/// [`VectorIndex`] on PostgreSQL with the pgvector extension (0.8 or later for iterative
/// scans; older versions work, falling back to exact scans when the index starves).
/// See the [module docs](self) for layout, recall and ordering.
#[derive(Debug, Clone)]
pub struct PgVectorIndex {
    pool: PgPool,
    ef_search: usize,
    iterative_scan: bool,
    /// Dimensions whose HNSW index this process has seen exist.
    indexed: Arc<Mutex<HashSet<usize>>>,
}

fn unavailable(e: sqlx::Error) -> VectorError {
    VectorError::Unavailable(format!("PostgreSQL (pgvector): {e}"))
}

fn lock_poisoned<T>(_: T) -> VectorError {
    VectorError::Unavailable("an earlier operation panicked while holding the index cache".into())
}

/// `"0.8.0"` → `(0, 8)`.
fn major_minor(version: &str) -> (u32, u32) {
    let mut parts = version.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl PgVectorIndex {
    /// Sets up the index in the database behind `pool` (normally
    /// [`PgDb::pool`](crate::postgres::PgDb::pool)): `CREATE EXTENSION IF NOT EXISTS
    /// vector` and the `vector_points` table, both idempotent and safe to run from
    /// several instances at once.
    ///
    /// Fails with [`AdapterError::Unsupported`] when the server lacks the extension (or
    /// this role may not create it), and [`AdapterError::Connect`] when the database
    /// cannot be reached.
    pub async fn new(pool: PgPool) -> Result<Self, AdapterError> {
        let connect = |e: sqlx::Error| {
            AdapterError::Connect(format!(
                "setting up the pgvector index in PostgreSQL failed: {e}"
            ))
        };
        let available: Option<String> = sqlx::query_scalar(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'",
        )
        .fetch_optional(&pool)
        .await
        .map_err(connect)?;
        if available.is_none() {
            return Err(AdapterError::Unsupported(
                "the PostgreSQL server has no pgvector extension: install it on the database \
                 server (on Debian, run scripts/install-pgvector.sh there) or choose another \
                 vector backend, e.g. ADIUVA_VECTOR_URL=embedded"
                    .into(),
            ));
        }
        let mut tx = pool.begin().await.map_err(connect)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(LOCK_SETUP.0)
            .bind(LOCK_SETUP.1)
            .execute(&mut *tx)
            .await
            .map_err(connect)?;
        sqlx::query("CREATE EXTENSION IF NOT EXISTS vector")
            .execute(&mut *tx)
            .await
            .map_err(|e| match e.as_database_error().and_then(|d| d.code()) {
                // 42501 insufficient_privilege: pgvector is not a trusted extension.
                Some(code) if code == "42501" => AdapterError::Unsupported(format!(
                    "pgvector is installed on the server but this database role may not enable \
                     it ({e}): have a superuser run `CREATE EXTENSION vector` in this database, \
                     or choose another vector backend, e.g. ADIUVA_VECTOR_URL=embedded"
                )),
                _ => connect(e),
            })?;
        sqlx::query(SETUP_SQL)
            .execute(&mut *tx)
            .await
            .map_err(connect)?;
        let version: String =
            sqlx::query_scalar("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
                .fetch_one(&mut *tx)
                .await
                .map_err(connect)?;
        tx.commit().await.map_err(connect)?;
        Ok(Self {
            pool,
            ef_search: DEFAULT_EF_SEARCH,
            iterative_scan: major_minor(&version) >= (0, 8),
            indexed: Arc::default(),
        })
    }

    /// Uses `ef_search` (capped at 1000) as the least HNSW candidate list per search:
    /// higher recall, slower searches. A search for more than `ef_search` hits uses
    /// `top_k` instead.
    pub fn with_ef_search(mut self, ef_search: usize) -> Self {
        self.ef_search = ef_search.clamp(1, MAX_EF_SEARCH);
        self
    }

    /// The approximate (HNSW) search statement for a `dim`-dimensional namespace, as
    /// [`search`](VectorIndex::search) runs it: `$1` namespace (`text`), `$2` query
    /// (`real[]`), `$3` limit (`bigint`). Public so that benchmarks and tests can
    /// `EXPLAIN` it; run it after [`search_settings_sql`](Self::search_settings_sql) in
    /// the same transaction to reproduce a search.
    pub fn hnsw_search_sql(dim: usize) -> String {
        format!(
            "SELECT id, payload, 1 - (embedding::vector({dim}) <=> $2::real[]::vector({dim})) AS score \
             FROM vector_points WHERE dim = {dim} AND namespace = $1 \
             ORDER BY embedding::vector({dim}) <=> $2::real[]::vector({dim}) LIMIT $3"
        )
    }

    /// The transaction-local settings a search of `top_k` applies before
    /// [`hnsw_search_sql`](Self::hnsw_search_sql); takes no parameters.
    pub fn search_settings_sql(&self, top_k: usize) -> String {
        let ef = self.ef_search.max(top_k).min(MAX_EF_SEARCH);
        // force_custom_plan: the statement is prepared and cached per connection; a
        // generic plan would be costed for an average namespace and then used for all,
        // while the right plan differs (exact over a small namespace, HNSW over a large).
        let mut sql = format!(
            "SELECT set_config('plan_cache_mode', 'force_custom_plan', true), \
             set_config('hnsw.ef_search', '{ef}', true)"
        );
        if self.iterative_scan {
            sql.push_str(", set_config('hnsw.iterative_scan', 'strict_order', true)");
        }
        sql
    }

    /// Refreshes the planner's statistics of `vector_points` (`ANALYZE`). Autovacuum
    /// does this within a minute or so of large changes; until then the planner may
    /// misjudge namespace sizes and choose an exact scan where HNSW would be faster (or
    /// the reverse). Call it after a bulk load, e.g. in benchmarks.
    pub async fn analyze(&self) -> Result<(), VectorError> {
        sqlx::query("ANALYZE vector_points")
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Creates the HNSW index for `dim` unless it exists. Its own transaction, so the
    /// table's SHARE lock that `CREATE INDEX` takes is not held through an upsert.
    async fn ensure_index(&self, dim: usize) -> Result<(), VectorError> {
        if self.indexed.lock().map_err(lock_poisoned)?.contains(&dim) {
            return Ok(());
        }
        let name = format!("vector_points_hnsw_{dim}");
        // Checked first without locks: even a no-op CREATE INDEX IF NOT EXISTS waits for
        // every writer's transaction on the table.
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&name)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        if !exists {
            let mut tx = self.pool.begin().await.map_err(unavailable)?;
            // Two first writers of one dimension: the second waits here, then finds the
            // index and does nothing (without the lock, both could try to insert the
            // same name into pg_class and one would fail).
            sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
                .bind(LOCK_INDEX)
                .bind(i32::try_from(dim).unwrap_or(i32::MAX))
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            sqlx::query(AssertSqlSafe(format!(
                "CREATE INDEX IF NOT EXISTS {name} ON vector_points \
                 USING hnsw ((embedding::vector({dim})) vector_cosine_ops) WHERE dim = {dim}"
            )))
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
        }
        self.indexed.lock().map_err(lock_poisoned)?.insert(dim);
        Ok(())
    }

    /// The namespace's dimension: that of any of its rows (they all share it).
    async fn stored_dim<'e>(
        &self,
        executor: impl sqlx::PgExecutor<'e>,
        namespace: &str,
    ) -> Result<Option<usize>, VectorError> {
        let dim: Option<i32> =
            sqlx::query_scalar("SELECT dim FROM vector_points WHERE namespace = $1 LIMIT 1")
                .bind(namespace)
                .fetch_optional(executor)
                .await
                .map_err(unavailable)?;
        Ok(dim.map(|d| usize::try_from(d).unwrap_or(0)))
    }

    async fn run_search(
        &self,
        namespace: &str,
        query: &[f32],
        top_k: usize,
        filter: &VectorFilter,
    ) -> Result<Vec<VectorHit>, VectorError> {
        validate(query)?;
        if query.len() > MAX_DIM {
            return Err(too_long(query.len()));
        }
        if top_k == 0 || filter.ids.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Vec::new());
        }
        let limit = to_i64(top_k);
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let Some(dim) = self.stored_dim(&mut *tx, namespace).await? else {
            return Ok(Vec::new());
        };
        check_dim(Some(dim), query.len())?;
        let rows = if let Some(ids) = &filter.ids {
            sqlx::query(EXACT_IDS_SQL)
                .bind(namespace)
                .bind(query)
                .bind(ids)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await
                .map_err(unavailable)?
        } else {
            sqlx::query(AssertSqlSafe(self.search_settings_sql(top_k)))
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            let rows = sqlx::query(AssertSqlSafe(Self::hnsw_search_sql(dim)))
                .bind(namespace)
                .bind(query)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await
                .map_err(unavailable)?;
            if rows.len() < top_k {
                // Fewer than asked: the namespace is that small, or the index scan gave
                // up before finding all of it. Exact over the namespace settles both.
                sqlx::query(EXACT_SQL)
                    .bind(namespace)
                    .bind(query)
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(unavailable)?
            } else {
                rows
            }
        };
        tx.commit().await.map_err(unavailable)?;
        let mut hits = rows.iter().map(hit).collect::<Result<Vec<_>, _>>()?;
        sort_hits(&mut hits);
        hits.truncate(top_k);
        Ok(hits)
    }

    async fn run_upsert(
        &self,
        namespace: &str,
        points: Vec<VectorPoint>,
    ) -> Result<usize, VectorError> {
        let points = dedup_last(points);
        let Some(first) = points.first() else {
            return Ok(0);
        };
        let dim = first.vector.len();
        for p in &points {
            validate(&p.vector)?;
            if p.vector.len() > MAX_DIM {
                return Err(too_long(p.vector.len()));
            }
        }
        // Within the batch first; against the namespace below, under its lock.
        if let Some(p) = points.iter().find(|p| p.vector.len() != dim) {
            return Err(VectorError::DimensionMismatch {
                expected: dim,
                got: p.vector.len(),
            });
        }
        let dim_sql = i32::try_from(dim).unwrap_or(i32::MAX);
        if !self.indexed.lock().map_err(lock_poisoned)?.contains(&dim) {
            // A dimension new to this process: refuse an obvious mismatch before
            // creating an index for it, so refused batches leave no empty indexes
            // behind. Unlocked, hence only a pre-check; the locked one below decides.
            let stored = self.stored_dim(&self.pool, namespace).await?;
            check_dim(stored, dim)?;
            self.ensure_index(dim).await?;
        }

        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(LOCK_NAMESPACE)
            .bind(namespace)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        // After the lock, so this statement's snapshot includes a concurrent first
        // writer's committed rows.
        check_dim(self.stored_dim(&mut *tx, namespace).await?, dim)?;
        let mut flat = Vec::with_capacity(dim * points.len().min(ROWS_PER_STATEMENT));
        for chunk in points.chunks(ROWS_PER_STATEMENT) {
            flat.clear();
            for p in chunk {
                flat.extend_from_slice(&p.vector);
            }
            let ids: Vec<&str> = chunk.iter().map(|p| p.id.as_str()).collect();
            let payloads: Vec<&[u8]> = chunk.iter().map(|p| p.payload.as_ref()).collect();
            sqlx::query(UPSERT_SQL)
                .bind(namespace)
                .bind(dim_sql)
                .bind(&flat)
                .bind(&ids)
                .bind(&payloads)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(points.len())
    }
}

/// A mismatch unless the namespace is empty or already holds `got`-dimensional points.
fn check_dim(stored: Option<usize>, got: usize) -> Result<(), VectorError> {
    match stored {
        Some(expected) if expected != got => Err(VectorError::DimensionMismatch { expected, got }),
        _ => Ok(()),
    }
}

fn too_long(len: usize) -> VectorError {
    VectorError::Invalid(format!(
        "the vector has {len} dimensions; the pgvector index (HNSW) supports at most {MAX_DIM}"
    ))
}

fn hit(row: &PgRow) -> Result<VectorHit, VectorError> {
    let id: String = row.try_get("id").map_err(unavailable)?;
    let payload: Vec<u8> = row.try_get("payload").map_err(unavailable)?;
    let score: f64 = row.try_get("score").map_err(unavailable)?;
    Ok(VectorHit {
        id,
        // pgvector computes in single precision; identical directions can land a hair
        // above 1.
        score: (score as f32).clamp(-1.0, 1.0),
        payload: Bytes::from(payload),
    })
}

#[async_trait]
impl VectorIndex for PgVectorIndex {
    #[tracing::instrument(skip_all, fields(namespace = %namespace, points = points.len()), err(level = "debug"))]
    async fn upsert(
        &self,
        namespace: &str,
        points: Vec<VectorPoint>,
    ) -> Result<usize, VectorError> {
        self.run_upsert(namespace, points).await
    }

    #[tracing::instrument(skip_all, fields(namespace = %namespace, top_k), err(level = "debug"))]
    async fn search(
        &self,
        namespace: &str,
        query: &[f32],
        top_k: usize,
        filter: &VectorFilter,
    ) -> Result<Vec<VectorHit>, VectorError> {
        self.run_search(namespace, query, top_k, filter).await
    }

    #[tracing::instrument(skip_all, fields(namespace = %namespace, ids = ids.len()), err(level = "debug"))]
    async fn delete(&self, namespace: &str, ids: &[String]) -> Result<usize, VectorError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let done = sqlx::query("DELETE FROM vector_points WHERE namespace = $1 AND id = ANY($2)")
            .bind(namespace)
            .bind(ids)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
    }

    #[tracing::instrument(skip_all, fields(namespace = %namespace), err(level = "debug"))]
    async fn delete_namespace(&self, namespace: &str) -> Result<(), VectorError> {
        sqlx::query("DELETE FROM vector_points WHERE namespace = $1")
            .bind(namespace)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    fn name(&self) -> &'static str {
        "pgvector"
    }
}

/// pgvector in the application database, which must be PostgreSQL.
pub async fn connect(
    db: &crate::database::AnyDatabase,
) -> Result<(std::sync::Arc<dyn VectorIndex>, String), AdapterError> {
    let crate::database::AnyDatabase::Postgres(pg) = db else {
        return Err(AdapterError::Unsupported(
            "vector_url = pgvector needs a PostgreSQL database_url (this one is SQLite); use vector_url = embedded".into(),
        ));
    };
    let index = PgVectorIndex::new(pg.pool().clone()).await?;
    Ok((
        std::sync::Arc::new(index),
        "pgvector (HNSW, in the PostgreSQL database)".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_major_and_minor() {
        assert_eq!(major_minor("0.8.0"), (0, 8));
        assert!(major_minor("0.10.1") >= (0, 8));
        assert!(major_minor("0.7.4") < (0, 8));
    }

    #[test]
    fn the_search_sql_matches_the_index_expression_and_predicate() {
        let sql = PgVectorIndex::hnsw_search_sql(384);
        assert!(sql.contains("ORDER BY embedding::vector(384) <=>"));
        assert!(sql.contains("WHERE dim = 384"));
    }
}
