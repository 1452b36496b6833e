//! Ports: the traits adapters implement. Each is small, `Send + Sync`, used as
//! `Arc<dyn Port>`, and states its contract in its docs. Construction is not part of a
//! port: adapters are built from settings by the host and handed to [`crate::Adiuva`].

pub mod billing;
pub mod blob;
pub mod clock;
pub mod db;
pub mod device_bus;
pub mod llm;
pub mod providers;
pub mod rate_limit;
pub mod vector;

pub use billing::Billing;
pub use blob::BlobStore;
pub use clock::{Clock, ManualClock, SystemClock};
pub use db::{
    AgentRepo, BackupRepo, BlobKeyRepo, Database, DeviceRepo, RecordRepo, RefreshTokenRepo,
    RepoError, UserRepo,
};
pub use device_bus::DeviceBus;
pub use llm::{ChatModel, Embedder};
pub use providers::ProviderApi;
pub use rate_limit::RateLimiter;
pub use vector::VectorIndex;
