//! Middleware around every route: request ids and logging, body limits, CORS.

mod body_limit;
mod cors;
pub(crate) mod rate_limit;
mod request_id;

pub use body_limit::BodyLimit;
pub use cors::cors;
pub use rate_limit::RateLimit;
pub use request_id::{REQUEST_ID_HEADER, RequestId};
