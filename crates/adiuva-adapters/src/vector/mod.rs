//! [`VectorIndex`](adiuva_core::ports::VectorIndex) adapters, one module per backend,
//! and the choice between them from settings.

pub mod embedded;
pub mod pgvector;
pub mod pinecone;
#[cfg(feature = "qdrant")]
pub mod qdrant;
