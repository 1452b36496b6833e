//! The black-box suite: one binary, real server, real sockets.

mod auth;
mod errors;
mod helpers;
mod openapi;
mod postgres;
mod records;
mod system;
