//! The pinecone vector index (in progress).
