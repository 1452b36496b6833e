//! Conformance suites and the in-memory reference adapter (feature `testing`).
//!
//! Every adapter runs the whole suite for its port from one test, e.g.
//! `adiuva_core::testing::database::run_all(&db).await`. A failing check panics with a
//! message naming the rule broken.

pub mod blobs;
mod counting_db;
pub mod database;
pub mod device_bus;
pub mod llm;
mod memory_db;
pub mod rate_limit;
pub mod services;
pub mod vectors;

pub use counting_db::{CountingDb, USER_READS};
pub use memory_db::MemoryDb;
