//! [`VectorIndex`] adapters, one module per backend, and the choice between them from
//! settings ([`connect`]).

use std::sync::Arc;

use adiuva_core::Secret;
use adiuva_core::ports::VectorIndex;
use adiuva_core::vector::MemoryVectorIndex;

use crate::AdapterError;
use crate::database::AnyDatabase;

pub mod embedded;
pub mod pgvector;
pub mod pinecone;
#[cfg(feature = "qdrant")]
pub mod qdrant;

/// What the vector index is chosen from (the server's settings).
#[derive(Clone, Debug, Default)]
pub struct VectorSettings {
    /// `embedded`, `memory`, `pgvector`, `qdrant`, `qdrant://host:port`,
    /// `qdrant+https://host:port`, `pinecone`; `None` = inferred (see [`Self::backend`]).
    pub url: Option<String>,
    /// Qdrant's gRPC URL.
    pub qdrant_url: Option<String>,
    /// Qdrant's API key.
    pub qdrant_api_key: Option<Secret<String>>,
    /// Qdrant collection prefix.
    pub qdrant_collection: String,
    /// Pinecone API key.
    pub pinecone_api_key: Option<Secret<String>>,
    /// Pinecone index name.
    pub pinecone_index: Option<String>,
    /// Pinecone data-plane URL; `None` = looked up through the control plane.
    pub pinecone_host: Option<String>,
    /// Pinecone control plane.
    pub pinecone_controller_url: String,
}

/// The backend [`VectorSettings`] select.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VectorBackend {
    /// Exact, persisted in the application database (the default).
    Embedded,
    /// Exact, in process memory only.
    Memory,
    /// pgvector in the application database (must be PostgreSQL).
    PgVector,
    /// Qdrant at this gRPC URL.
    Qdrant(String),
    /// Pinecone.
    Pinecone,
}

impl VectorSettings {
    /// Which backend: `url` when set; else Qdrant when `qdrant_url` is set, Pinecone when
    /// its key and index are, else embedded.
    pub fn backend(&self) -> Result<VectorBackend, AdapterError> {
        let qdrant = |url: Option<&str>| -> Result<VectorBackend, AdapterError> {
            let url = url.or(self.qdrant_url.as_deref()).ok_or_else(|| {
                AdapterError::Unsupported(
                    "vector_url = qdrant needs qdrant_url (e.g. http://127.0.0.1:6334)".into(),
                )
            })?;
            let url = if let Some(rest) = url.strip_prefix("qdrant+https://") {
                format!("https://{rest}")
            } else if let Some(rest) = url.strip_prefix("qdrant://") {
                format!("http://{rest}")
            } else {
                url.to_owned()
            };
            Ok(VectorBackend::Qdrant(url))
        };
        match self.url.as_deref().map(str::trim) {
            None | Some("") => {
                if self.qdrant_url.is_some() {
                    qdrant(None)
                } else if self.pinecone_api_key.is_some() && self.pinecone_index.is_some() {
                    Ok(VectorBackend::Pinecone)
                } else {
                    Ok(VectorBackend::Embedded)
                }
            }
            Some("embedded") => Ok(VectorBackend::Embedded),
            Some("memory" | "memory://") => Ok(VectorBackend::Memory),
            Some("pgvector" | "pgvector://") => Ok(VectorBackend::PgVector),
            Some("qdrant" | "qdrant://") => qdrant(None),
            Some(url) if url.starts_with("qdrant://") || url.starts_with("qdrant+https://") => {
                qdrant(Some(url))
            }
            Some("pinecone" | "pinecone://") => {
                if self.pinecone_api_key.is_none() || self.pinecone_index.is_none() {
                    return Err(AdapterError::Unsupported(
                        "vector_url = pinecone needs pinecone_api_key and pinecone_index".into(),
                    ));
                }
                Ok(VectorBackend::Pinecone)
            }
            Some(other) => Err(AdapterError::Unsupported(format!(
                "vector_url must be embedded, memory, pgvector, qdrant, qdrant://host:port or pinecone (got '{other}')"
            ))),
        }
    }
}

/// Builds the selected index over the application database `db`; returns it with a
/// description for logs (no secrets).
pub async fn connect(
    settings: &VectorSettings,
    db: &AnyDatabase,
) -> Result<(Arc<dyn VectorIndex>, String), AdapterError> {
    match settings.backend()? {
        VectorBackend::Embedded => {
            if matches!(db, AnyDatabase::Postgres(_)) {
                tracing::warn!(
                    "the embedded vector index keeps a copy in this process: with more than one instance on this PostgreSQL, set vector_url = pgvector (or qdrant/pinecone)"
                );
            }
            Ok((
                Arc::new(embedded::EmbeddedVectorIndex::new(db)),
                format!("embedded (exact, in the {} database)", db.port().backend()),
            ))
        }
        VectorBackend::Memory => Ok((
            Arc::new(MemoryVectorIndex::new()),
            "memory (exact, not persisted)".into(),
        )),
        VectorBackend::PgVector => pgvector::connect(db).await,
        #[cfg(feature = "qdrant")]
        VectorBackend::Qdrant(url) => qdrant::connect(&url, settings).await,
        #[cfg(not(feature = "qdrant"))]
        VectorBackend::Qdrant(_) => Err(AdapterError::Unsupported(
            "this build has no Qdrant support (cargo feature `qdrant`)".into(),
        )),
        VectorBackend::Pinecone => pinecone::connect(settings).await,
    }
}
