//! The qdrant vector index (in progress).

use std::sync::Arc;

use adiuva_core::ports::VectorIndex;

use crate::AdapterError;

/// Placeholder until the adapter lands.
pub async fn connect(
    _url: &str,
    _settings: &super::VectorSettings,
) -> Result<(Arc<dyn VectorIndex>, String), AdapterError> {
    Err(AdapterError::Unsupported(
        "the qdrant vector index is not in this build yet".into(),
    ))
}
