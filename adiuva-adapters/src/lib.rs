//! # adiuva-adapters
//!
//! Implementations of `adiuva-core`'s ports, one module per technology, and the
//! URL-driven choice between them ([`database::AnyDatabase::connect`],
//! [`blobs::check_blob_url`]). Each adapter owns its schema and migrations
//! (`migrations/<dialect>/`) and runs the core conformance suite in its tests.

pub mod blobs;
pub mod database;
pub mod device_bus;
#[cfg(feature = "testing")]
mod fake_server;
pub mod http;
pub mod llm;
pub mod postgres;
pub mod providers;
pub mod rate_limit;
mod repos;
mod rows;
pub mod sqlite;
pub mod vector;

/// Makes aws-lc-rs the process's rustls crypto provider. qdrant-client links ring (through
/// tonic) while everything else uses aws-lc-rs; with two providers linked rustls cannot
/// choose one and TLS clients built later panic. Call first thing in `main` and in test
/// setup; calling again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Why an adapter could not be set up. Every variant reads as a sentence an operator can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// The URL names something this build cannot serve.
    #[error("{0}")]
    Unsupported(String),
    /// The backend is configured but cannot be reached or opened.
    #[error("{0}")]
    Connect(String),
    /// Applying the schema failed.
    #[error("{0}")]
    Migrate(String),
}
