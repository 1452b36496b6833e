//! The black-box suite: one binary, real server, real sockets.

mod asyncapi;
mod auth;
mod backups;
mod chat;
mod chat_directives;
mod chat_leaks;
mod chat_limits;
mod chat_stream;
mod connections;
mod device_queue;
mod devices;
mod errors;
mod helpers;
mod input_edges;
mod openapi;
mod postgres;
mod rate_limits;
mod records;
mod secrets;
mod sessions;
mod system;
mod typescript_client;
mod vector_backends;
mod vectors;
mod who_is_calling;
mod ws_limits;
