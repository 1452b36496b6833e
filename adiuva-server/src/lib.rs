//! # adiuva-server
//!
//! The HTTP host of the Adiuva library: poem + poem-openapi routes under `/api/v1`,
//! OpenAPI at `/api/v1/openapi.json`, the sockets' AsyncAPI at `/api/v1/asyncapi.json`
//! (their frames are typed in [`frames`]), docs at `/docs`, middleware for request ids,
//! CORS and body limits, and one mapping from core errors to HTTP statuses.
//!
//! **Architecture Invariant:** no SQL and no business rule lives here. Handlers parse,
//! call [`adiuva_core::Adiuva`], and shape the answer.

pub mod api;
pub mod asyncapi;
pub mod conn;
pub mod error;
pub mod frames;
pub mod middleware;
pub mod settings;
pub mod startup;
pub mod telemetry;
pub mod ws;

pub use settings::Settings;
pub use startup::{Application, Backend};
