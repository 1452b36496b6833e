//! The black-box suite: one binary, real server, real sockets.

mod auth;
mod backups;
mod chat;
mod connections;
mod errors;
mod helpers;
mod openapi;
mod postgres;
mod rate_limits;
mod records;
mod system;
mod vector_backends;
mod vectors;
mod ws_limits;
