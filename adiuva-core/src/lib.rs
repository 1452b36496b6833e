//! # adiuva-core
//!
//! The domain logic of the Adiuva backend and the ports its adapters implement.
//!
//! **Architecture Invariant:** this crate performs no I/O and depends on no I/O crate
//! (no sqlx, reqwest, hyper, poem, object_store, cloud SDKs). It sees the world only
//! through the traits in [`ports`]. Tokio is used for `spawn_blocking`, semaphores,
//! channels, timers and spawning tasks (the device hub's) only — never its net or fs.
//! This is checked by `tests/core_has_no_io.rs`.
//!
//! Start at [`Adiuva`]: build it from ports with [`Adiuva::builder`].

pub mod agents;
pub mod auth;
pub mod backup;
pub mod chat;
pub mod devices;
pub mod domain;
pub mod error;
mod facade;
pub mod gc;
pub mod ports;
pub mod quota;
pub mod rate;
pub mod seal;
pub mod secret;
pub mod storage;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tiers;
pub mod vector;

pub use error::Error;
pub use facade::{Accounts, Adiuva, AdiuvaBuilder};
pub use secret::Secret;
