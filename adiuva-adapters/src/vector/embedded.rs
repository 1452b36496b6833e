//! The embedded vector index: core's exact in-memory index ([`MemoryVectorIndex`]),
//! persisted in the application database (`embedded_vectors`, SQLite or PostgreSQL).
//!
//! A namespace is loaded from the database on first use and stays in memory; every write
//! goes to the database first and then to memory, under one writer lock, so memory never
//! holds what the database does not. Search is exact (recall 1.0).
//!
//! The in-memory copy makes this a **single-instance** backend: several instances on one
//! PostgreSQL would each keep their own copy and miss the others' writes. A deployment
//! with more than one instance uses pgvector, Qdrant or Pinecone.

use adiuva_core::ports::vector::{VectorError, VectorFilter, VectorHit, VectorIndex, VectorPoint};
use adiuva_core::vector::exact::normalized;
use adiuva_core::vector::{ExactIndex, MemoryVectorIndex, dedup_last};
use async_trait::async_trait;
use bytes::Bytes;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;

use crate::database::AnyDatabase;

/// Searches over more floats than this run on the blocking pool, not an async worker
/// (≈0.25 ms of scanning).
const INLINE_SEARCH_FLOATS: usize = 256 * 1024;

#[derive(Debug, Clone)]
enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The exact index, persisted in the application database.
#[derive(Debug)]
pub struct EmbeddedVectorIndex {
    memory: MemoryVectorIndex,
    store: Store,
    /// Serialises writes and loads: a load must not install a snapshot older than a
    /// write that finished meanwhile.
    writer: tokio::sync::Mutex<()>,
}

fn unavailable(e: sqlx::Error) -> VectorError {
    VectorError::Unavailable(format!("the database failed: {e}"))
}

fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

impl EmbeddedVectorIndex {
    /// The index over the application database (which must be migrated).
    pub fn new(db: &AnyDatabase) -> Self {
        let store = match db {
            AnyDatabase::Sqlite(db) => Store::Sqlite(db.pool().clone()),
            AnyDatabase::Postgres(db) => Store::Postgres(db.pool().clone()),
        };
        Self {
            memory: MemoryVectorIndex::new(),
            store,
            writer: tokio::sync::Mutex::new(()),
        }
    }

    async fn load(&self, ns: &str) -> Result<ExactIndex, VectorError> {
        type Row = (String, Vec<u8>, Vec<u8>);
        let rows: Vec<Row> = match &self.store {
            Store::Sqlite(pool) => {
                sqlx::query_as(
                    "SELECT id, vector, payload FROM embedded_vectors WHERE namespace = ?",
                )
                .bind(ns)
                .fetch_all(pool)
                .await
            }
            Store::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT id, vector, payload FROM embedded_vectors WHERE namespace = $1",
                )
                .bind(ns)
                .fetch_all(pool)
                .await
            }
        }
        .map_err(unavailable)?;
        let mut index = ExactIndex::new();
        for (id, vector, payload) in rows {
            let vector = from_bytes(&vector);
            index
                .check_dim(vector.len())
                .map_err(|e| VectorError::Other(format!("stored vector '{id}': {e}").into()))?;
            index.insert_normalized(&id, &vector, Bytes::from(payload));
        }
        Ok(index)
    }

    /// Loads the namespace unless memory has it; the caller holds the writer lock.
    async fn ensure_loaded_locked(&self, ns: &str) -> Result<(), VectorError> {
        if self.memory.namespace(ns)?.is_none() {
            let index = self.load(ns).await?;
            self.memory.install(ns, index)?;
        }
        Ok(())
    }

    async fn ensure_loaded(&self, ns: &str) -> Result<(), VectorError> {
        if self.memory.namespace(ns)?.is_some() {
            return Ok(());
        }
        let _writer = self.writer.lock().await;
        self.ensure_loaded_locked(ns).await
    }

    async fn persist(
        &self,
        ns: &str,
        rows: &[(String, Vec<f32>, Bytes)],
    ) -> Result<(), VectorError> {
        match &self.store {
            Store::Sqlite(pool) => {
                let mut tx = pool.begin().await.map_err(unavailable)?;
                for (id, unit, payload) in rows {
                    sqlx::query(
                        "INSERT INTO embedded_vectors (namespace, id, dim, vector, payload)
                         VALUES (?, ?, ?, ?, ?)
                         ON CONFLICT (namespace, id) DO UPDATE
                         SET dim = excluded.dim, vector = excluded.vector, payload = excluded.payload",
                    )
                    .bind(ns)
                    .bind(id)
                    .bind(unit.len() as i64)
                    .bind(to_bytes(unit))
                    .bind(payload.as_ref())
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                }
                tx.commit().await.map_err(unavailable)
            }
            Store::Postgres(pool) => {
                let ids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
                let dims: Vec<i32> = rows.iter().map(|r| r.1.len() as i32).collect();
                let vectors: Vec<Vec<u8>> = rows.iter().map(|r| to_bytes(&r.1)).collect();
                let payloads: Vec<&[u8]> = rows.iter().map(|r| r.2.as_ref()).collect();
                sqlx::query(
                    "INSERT INTO embedded_vectors (namespace, id, dim, vector, payload)
                     SELECT $1, * FROM UNNEST($2::text[], $3::int[], $4::bytea[], $5::bytea[])
                     ON CONFLICT (namespace, id) DO UPDATE
                     SET dim = excluded.dim, vector = excluded.vector, payload = excluded.payload",
                )
                .bind(ns)
                .bind(&ids)
                .bind(&dims)
                .bind(&vectors)
                .bind(&payloads)
                .execute(pool)
                .await
                .map_err(unavailable)
                .map(|_| ())
            }
        }
    }

    async fn unpersist(&self, ns: &str, ids: Option<&[String]>) -> Result<(), VectorError> {
        match (&self.store, ids) {
            (Store::Sqlite(pool), Some(ids)) => {
                let ids = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
                sqlx::query(
                    "DELETE FROM embedded_vectors WHERE namespace = ? AND id IN (SELECT value FROM json_each(?))",
                )
                .bind(ns)
                .bind(ids)
                .execute(pool)
                .await
                .map(|d| d.rows_affected())
            }
            (Store::Sqlite(pool), None) => {
                sqlx::query("DELETE FROM embedded_vectors WHERE namespace = ?")
                    .bind(ns)
                    .execute(pool)
                    .await
                    .map(|d| d.rows_affected())
            }
            (Store::Postgres(pool), Some(ids)) => {
                sqlx::query("DELETE FROM embedded_vectors WHERE namespace = $1 AND id = ANY($2)")
                    .bind(ns)
                    .bind(ids)
                    .execute(pool)
                    .await
                    .map(|d| d.rows_affected())
            }
            (Store::Postgres(pool), None) => {
                sqlx::query("DELETE FROM embedded_vectors WHERE namespace = $1")
                    .bind(ns)
                    .execute(pool)
                    .await
                    .map(|d| d.rows_affected())
            }
        }
        .map_err(unavailable)
        .map(|_| ())
    }
}

fn poisoned<T>(_: T) -> VectorError {
    VectorError::Unavailable("an earlier operation panicked while holding the index".into())
}

#[async_trait]
impl VectorIndex for EmbeddedVectorIndex {
    async fn upsert(
        &self,
        namespace: &str,
        points: Vec<VectorPoint>,
    ) -> Result<usize, VectorError> {
        let points = dedup_last(points);
        let _writer = self.writer.lock().await;
        self.ensure_loaded_locked(namespace).await?;
        let index = self.memory.namespace_or_new(namespace)?;
        index.read().map_err(poisoned)?.check_batch(&points)?;
        let rows: Vec<(String, Vec<f32>, Bytes)> = points
            .into_iter()
            .map(|p| (p.id, normalized(&p.vector), p.payload))
            .collect();
        self.persist(namespace, &rows).await?;
        let mut index = index.write().map_err(poisoned)?;
        for (id, unit, payload) in &rows {
            index.insert_normalized(id, unit, payload.clone());
        }
        Ok(rows.len())
    }

    async fn search(
        &self,
        namespace: &str,
        query: &[f32],
        top_k: usize,
        filter: &VectorFilter,
    ) -> Result<Vec<VectorHit>, VectorError> {
        self.ensure_loaded(namespace).await?;
        let Some(index) = self.memory.namespace(namespace)? else {
            return self.memory.search_now(namespace, query, top_k, filter);
        };
        let work = {
            let ix = index.read().map_err(poisoned)?;
            ix.len() * ix.dim()
        };
        if work <= INLINE_SEARCH_FLOATS || filter.ids.is_some() {
            return index.read().map_err(poisoned)?.search(query, top_k, filter);
        }
        // A big scan would stall every other request on this async worker.
        let (query, filter) = (query.to_vec(), filter.clone());
        tokio::task::spawn_blocking(move || {
            index
                .read()
                .map_err(poisoned)?
                .search(&query, top_k, &filter)
        })
        .await
        .map_err(|e| VectorError::Other(Box::new(e)))?
    }

    async fn delete(&self, namespace: &str, ids: &[String]) -> Result<usize, VectorError> {
        let _writer = self.writer.lock().await;
        self.ensure_loaded_locked(namespace).await?;
        self.unpersist(namespace, Some(ids)).await?;
        self.memory.delete_now(namespace, ids)
    }

    async fn delete_namespace(&self, namespace: &str) -> Result<(), VectorError> {
        let _writer = self.writer.lock().await;
        self.unpersist(namespace, None).await?;
        self.memory.remove_namespace(namespace)
    }

    fn name(&self) -> &'static str {
        "embedded"
    }
}
