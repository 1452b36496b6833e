//! Examples live in `embedded.rs` and friends; this crate has no library code.
