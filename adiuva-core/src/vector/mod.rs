//! Vector search over client-encrypted payloads: the exact in-memory index every
//! embedded deployment uses, the plan-compatible hash vector, and the service behind
//! `/storage/vectors` (see [`service`]).

pub mod exact;
mod memory;
pub mod service;

use sha2::{Digest as _, Sha256};

pub use exact::ExactIndex;
pub use memory::MemoryVectorIndex;
pub use service::{VectorItemInput, VectorQuery, VectorService};

use crate::ports::vector::{VectorHit, VectorPoint};

/// Dimension of the plan-compatible hash vector.
pub const HASH_DIM: usize = 32;

/// The plan's compatibility vector: the 32 bytes of SHA-256(ciphertext), each scaled to
/// [0, 1]. **Not semantic**: two encryptions of the same text share nothing, so scores
/// between such vectors mean nothing; it only lets plan-era clients that send no vector
/// store and list their items. Identical ciphertexts score 1.0.
pub fn hash_vector(blob: &[u8]) -> Vec<f32> {
    Sha256::digest(blob)
        .iter()
        .map(|&b| f32::from(b) / 255.0)
        .collect()
}

/// Keeps the last point of each id, in first-seen order: a batch that names an id
/// twice means "the later one", as two upserts in a row would.
pub fn dedup_last(points: Vec<VectorPoint>) -> Vec<VectorPoint> {
    let mut index = std::collections::HashMap::with_capacity(points.len());
    let mut out: Vec<VectorPoint> = Vec::with_capacity(points.len());
    for p in points {
        match index.get(&p.id) {
            Some(&i) => out[i] = p,
            None => {
                index.insert(p.id.clone(), out.len());
                out.push(p);
            }
        }
    }
    out
}

/// A deterministic pseudo-random vector (xorshift), components in [-1, 1): synthetic
/// data for conformance tests and `adiuva bench-vectors`.
pub fn random_vector(seed: u64, dim: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..dim)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Cosine similarity computed in f64: the reference the conformance suite and the
/// benchmarks compare against, and what a backend computes when it scores a few vectors
/// itself. Zero-length or all-zero input scores 0.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut d, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        d += x * y;
        na += x * x;
        nb += y * y;
    }
    let n = na.sqrt() * nb.sqrt();
    if n == 0.0 { 0.0 } else { d / n }
}

/// Puts hits in the port's order: score descending, then id ascending. Backends whose
/// engine orders ties its own way (pgvector, Qdrant, Pinecone) finish with this.
pub fn sort_hits(hits: &mut [VectorHit]) {
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
}
