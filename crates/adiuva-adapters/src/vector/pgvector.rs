//! The pgvector vector index (in progress).
