//! The black-box suite lives in `api/`; this crate has no library code.
