//! The pgvector vector index (in progress).

use std::sync::Arc;

use adiuva_core::ports::VectorIndex;

use crate::AdapterError;

/// Placeholder until the adapter lands.
pub async fn connect(
    _db: &crate::database::AnyDatabase,
) -> Result<(Arc<dyn VectorIndex>, String), AdapterError> {
    Err(AdapterError::Unsupported(
        "the pgvector vector index is not in this build yet".into(),
    ))
}
