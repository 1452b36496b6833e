//! The embedded vector index (in progress).
