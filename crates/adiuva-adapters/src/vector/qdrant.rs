//! The qdrant vector index (in progress).
