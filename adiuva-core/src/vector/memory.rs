//! [`MemoryVectorIndex`]: the exact index for every namespace, in process memory only.
//! The embedded adapter (`adiuva-adapters`) persists it in the database; on its own it
//! serves tests and `memory://` deployments.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use super::exact::{ExactIndex, normalized};
use crate::ports::vector::{VectorError, VectorFilter, VectorHit, VectorIndex, VectorPoint};

/// Namespaces → their exact index. A namespace's lock is held for one operation; a
/// search of one user never waits for another user's upsert.
#[derive(Debug, Default)]
pub struct MemoryVectorIndex {
    namespaces: RwLock<HashMap<String, Arc<RwLock<ExactIndex>>>>,
}

fn poisoned<T>(_: T) -> VectorError {
    VectorError::Unavailable("an earlier operation panicked while holding the index".into())
}

impl MemoryVectorIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// The namespace's index, if it has one.
    pub fn namespace(&self, ns: &str) -> Result<Option<Arc<RwLock<ExactIndex>>>, VectorError> {
        Ok(self.namespaces.read().map_err(poisoned)?.get(ns).cloned())
    }

    /// The namespace's index, created empty when missing.
    pub fn namespace_or_new(&self, ns: &str) -> Result<Arc<RwLock<ExactIndex>>, VectorError> {
        if let Some(ix) = self.namespace(ns)? {
            return Ok(ix);
        }
        let mut all = self.namespaces.write().map_err(poisoned)?;
        Ok(all.entry(ns.to_owned()).or_default().clone())
    }

    /// Replaces a namespace's whole index (the embedded adapter's load from disk).
    pub fn install(&self, ns: &str, index: ExactIndex) -> Result<(), VectorError> {
        self.namespaces
            .write()
            .map_err(poisoned)?
            .insert(ns.to_owned(), Arc::new(RwLock::new(index)));
        Ok(())
    }

    /// Forgets a namespace.
    pub fn remove_namespace(&self, ns: &str) -> Result<(), VectorError> {
        self.namespaces.write().map_err(poisoned)?.remove(ns);
        Ok(())
    }

    /// Validates, normalises and inserts a (deduplicated) batch, all or nothing.
    pub fn upsert_now(&self, ns: &str, points: &[VectorPoint]) -> Result<usize, VectorError> {
        let ix = self.namespace_or_new(ns)?;
        let mut ix = ix.write().map_err(poisoned)?;
        ix.check_batch(points)?;
        for p in points {
            ix.insert_normalized(&p.id, &normalized(&p.vector), p.payload.clone());
        }
        Ok(points.len())
    }

    /// The exact top-k in one namespace.
    pub fn search_now(
        &self,
        ns: &str,
        query: &[f32],
        top_k: usize,
        filter: &VectorFilter,
    ) -> Result<Vec<VectorHit>, VectorError> {
        match self.namespace(ns)? {
            Some(ix) => ix.read().map_err(poisoned)?.search(query, top_k, filter),
            None => {
                super::exact::validate(query)?;
                Ok(Vec::new())
            }
        }
    }

    /// Removes ids; how many existed.
    pub fn delete_now(&self, ns: &str, ids: &[String]) -> Result<usize, VectorError> {
        let Some(ix) = self.namespace(ns)? else {
            return Ok(0);
        };
        let mut ix = ix.write().map_err(poisoned)?;
        Ok(ids.iter().filter(|id| ix.remove(id)).count())
    }
}

#[async_trait]
impl VectorIndex for MemoryVectorIndex {
    async fn upsert(
        &self,
        namespace: &str,
        points: Vec<VectorPoint>,
    ) -> Result<usize, VectorError> {
        let points = super::dedup_last(points);
        self.upsert_now(namespace, &points)
    }

    async fn search(
        &self,
        namespace: &str,
        query: &[f32],
        top_k: usize,
        filter: &VectorFilter,
    ) -> Result<Vec<VectorHit>, VectorError> {
        self.search_now(namespace, query, top_k, filter)
    }

    async fn delete(&self, namespace: &str, ids: &[String]) -> Result<usize, VectorError> {
        self.delete_now(namespace, ids)
    }

    async fn delete_namespace(&self, namespace: &str) -> Result<(), VectorError> {
        self.remove_namespace(namespace)
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}
