//! Journey.
