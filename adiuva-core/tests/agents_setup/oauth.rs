//! OAuth.
