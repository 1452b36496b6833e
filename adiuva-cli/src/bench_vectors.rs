//! `adiuva bench-vectors`: search latency and recall@10 of a vector index against brute
//! force, at several sizes, at the port level (no HTTP: this measures the index).
//!
//! Data: `clusters` random centres with Gaussian-ish points around them, which is how
//! real embeddings look (topics), rather than uniform noise, on which every ANN index
//! looks worse and every exact one looks the same. Queries come from the same
//! distribution but are not stored points. The truth is computed here in f64.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use adiuva_adapters::database::AnyDatabase;
use adiuva_adapters::vector::pgvector::PgVectorIndex;
use adiuva_adapters::vector::{VectorSettings, connect};
use adiuva_core::ports::VectorIndex;
use adiuva_core::ports::vector::{VectorFilter, VectorPoint};
use adiuva_core::vector::exact::{dot, normalized};
use adiuva_core::vector::{cosine, random_vector};
use bytes::Bytes;
use clap::Args;

use crate::commands::CliResult;

/// Options of `adiuva bench-vectors`.
#[derive(Debug, Args)]
pub struct BenchVectorsArgs {
    /// Vector index: embedded, memory, pgvector, qdrant://host:port or pinecone (as
    /// the vector_url setting; qdrant and pinecone take their other settings from the
    /// environment).
    #[arg(long, default_value = "embedded")]
    index: String,
    /// Database URL (default: SQLite in a temporary directory). pgvector needs PostgreSQL.
    #[arg(long)]
    database_url: Option<String>,
    /// Sizes to measure, comma-separated; each grows the same namespace.
    #[arg(long, default_value = "10000,100000")]
    sizes: String,
    /// Dimensions.
    #[arg(long, default_value_t = 384)]
    dim: usize,
    /// Queries per size.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Cluster centres in the synthetic data.
    #[arg(long, default_value_t = 100)]
    clusters: usize,
    /// pgvector only: the least `hnsw.ef_search` (higher: better recall, slower).
    #[arg(long, default_value_t = adiuva_adapters::vector::pgvector::DEFAULT_EF_SEARCH)]
    ef_search: usize,
}

fn clustered(seed: u64, centres: &[Vec<f32>], dim: usize) -> Vec<f32> {
    let centre = &centres[(seed as usize * 7919) % centres.len()];
    let noise = random_vector(seed.wrapping_mul(31).wrapping_add(17), dim);
    centre
        .iter()
        .zip(noise)
        .map(|(c, n)| c + 0.35 * n)
        .collect()
}

fn id(i: usize) -> String {
    format!("v{i:07}")
}

/// Indices of the ten best scores, best first, ties by index (= by id).
fn top10(scores: impl Iterator<Item = f64>) -> Vec<usize> {
    let mut all: Vec<(f64, usize)> = scores.enumerate().map(|(i, s)| (s, i)).collect();
    all.select_nth_unstable_by(9, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    all.truncate(10);
    all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    all.into_iter().map(|(_, i)| i).collect()
}

fn percentile(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    sorted_us[i] as f64 / 1000.0
}

fn rss_mb() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or("?".to_string(), |kb| format!("{:.0}", kb as f64 / 1024.0))
    };
    format!("rss {} MB, peak {} MB", field("VmRSS:"), field("VmHWM:"))
}

pub async fn run(args: &BenchVectorsArgs) -> CliResult {
    let sizes: Vec<usize> = args
        .sizes
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let dir = tempfile::tempdir()?;
    let db_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let db = AnyDatabase::connect(&db_url).await?;
    db.migrate().await?;
    let settings = VectorSettings {
        url: Some(args.index.clone()),
        qdrant_url: std::env::var("ADIUVA_QDRANT_URL").ok(),
        qdrant_api_key: std::env::var("ADIUVA_QDRANT_API_KEY").ok().map(Into::into),
        qdrant_collection: format!("bench_{}", std::process::id()),
        pinecone_api_key: std::env::var("ADIUVA_PINECONE_API_KEY")
            .ok()
            .map(Into::into),
        pinecone_index: std::env::var("ADIUVA_PINECONE_INDEX").ok(),
        pinecone_host: std::env::var("ADIUVA_PINECONE_HOST").ok(),
        pinecone_controller_url: std::env::var("ADIUVA_PINECONE_CONTROLLER_URL")
            .unwrap_or_else(|_| "https://api.pinecone.io".into()),
    };
    // pgvector's planner picks HNSW only once it has statistics: keep a handle to ANALYZE
    // after each load, as autovacuum would eventually.
    let mut pgvector = None;
    let (index, location): (Arc<dyn VectorIndex>, String) = match (&db, args.index.as_str()) {
        (AnyDatabase::Postgres(pg), "pgvector") => {
            let ix = PgVectorIndex::new(pg.pool().clone())
                .await?
                .with_ef_search(args.ef_search);
            pgvector = Some(ix.clone());
            (
                Arc::new(ix),
                format!("pgvector (HNSW, ef_search {})", args.ef_search),
            )
        }
        _ => connect(&settings, &db).await?,
    };
    let ns = format!("bench-{}", uuid_like());
    println!(
        "index: {location}; dim {}, {} clusters, {} queries per size, top 10",
        args.dim, args.clusters, args.queries
    );
    let centres: Vec<Vec<f32>> = (0..args.clusters)
        .map(|c| random_vector(1_000_000 + c as u64, args.dim))
        .collect();
    let queries: Vec<Vec<f32>> = (0..args.queries)
        .map(|q| clustered(5_000_000 + q as u64, &centres, args.dim))
        .collect();
    let mut stored: Vec<Vec<f32>> = Vec::new();
    let all = VectorFilter::default();
    let payload = Bytes::from_static(&[0u8; 64]);
    for &size in &sizes {
        let started = Instant::now();
        let from = stored.len();
        while stored.len() < size {
            let batch: Vec<VectorPoint> = (stored.len()..size.min(stored.len() + 1000))
                .map(|i| VectorPoint {
                    id: id(i),
                    vector: clustered(i as u64, &centres, args.dim),
                    payload: payload.clone(),
                })
                .collect();
            stored.extend(batch.iter().map(|p| p.vector.clone()));
            index.upsert(&ns, batch).await?;
        }
        let ingest = started.elapsed();
        if let Some(pg) = &pgvector {
            pg.analyze().await?;
        }
        // Warm-up (loads the namespace into memory on the embedded index).
        index.search(&ns, &queries[0], 10, &all).await?;
        // Latency first, queries back to back (as a busy server runs them); the truth is
        // computed afterwards so its 100k-row scans do not flush the caches between them.
        let mut latencies = Vec::with_capacity(queries.len());
        let mut answers = Vec::with_capacity(queries.len());
        for q in &queries {
            let t = Instant::now();
            let hits = index.search(&ns, q, 10, &all).await?;
            latencies.push(t.elapsed().as_micros() as u64);
            answers.push(hits);
        }
        // Two references: cosine in f64 (the mathematical truth), and brute force in f32
        // exactly as an exact index computes it (normalise, then dot) — an exact index
        // must equal the latter; near-ties can make both differ from f64 in the last bit.
        let units: Vec<Vec<f32>> = stored.iter().map(|v| normalized(v)).collect();
        let (mut found, mut found_f32, mut same_as_f32) = (0usize, 0usize, 0usize);
        for (q, hits) in queries.iter().zip(&answers) {
            let truth = top10(stored.iter().map(|v| cosine(q, v)));
            let qn = normalized(q);
            let truth_f32 = top10(
                units
                    .iter()
                    .map(|u| f64::from(dot(u, &qn).clamp(-1.0, 1.0))),
            );
            let got: Vec<String> = hits.iter().map(|h| h.id.clone()).collect();
            found += truth.iter().filter(|i| got.contains(&id(**i))).count();
            found_f32 += truth_f32.iter().filter(|i| got.contains(&id(**i))).count();
            same_as_f32 += usize::from(truth_f32.iter().map(|i| id(*i)).collect::<Vec<_>>() == got);
        }
        latencies.sort_unstable();
        println!(
            "{size:>8} vectors: inserted {} in {:.1} s; search p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; recall@10 {:.4} (vs f32 brute force {:.4}, identical top-10 in {same_as_f32}/{} queries); {}",
            size - from,
            ingest.as_secs_f64(),
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0),
            found as f64 / (10 * queries.len()) as f64,
            found_f32 as f64 / (10 * queries.len()) as f64,
            queries.len(),
            rss_mb()
        );
    }
    index.delete_namespace(&ns).await?;
    db.close().await;
    Ok(ExitCode::SUCCESS)
}

fn uuid_like() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )
}
