//! Programs that embed the Adiuva library; see `embedded.rs`. This crate has no library
//! code of its own: it exists so `cargo test --workspace` builds (and `embedded_runs`
//! runs) every example.
