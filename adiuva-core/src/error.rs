//! The domain error: what went wrong, in terms a caller can act on. The server maps each
//! kind to one HTTP status in one place; the CLI prints its `Display`.

use std::borrow::Cow;

use crate::ports::db::RepoError;

/// Everything the facade can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Input broke a rule (HTTP 422).
    #[error("{field} {message}")]
    Validation {
        /// The offending field, as the client named it.
        field: Cow<'static, str>,
        /// What is wrong with it.
        message: String,
    },
    /// The request is well-formed but cannot be accepted as sent (HTTP 400), e.g. a
    /// checksum that does not match the bytes.
    #[error("{detail}")]
    BadRequest {
        /// A snake_case code, e.g. `checksum_mismatch`.
        code: &'static str,
        /// A sentence for people.
        detail: String,
    },
    /// Missing, wrong or expired credentials (HTTP 401). The text is safe to show.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The caller is known but may not do this (HTTP 403).
    #[error("{detail}")]
    Forbidden {
        /// A snake_case code for programs, e.g. `tier_required`.
        code: &'static str,
        /// A sentence for people.
        detail: String,
    },
    /// The thing does not exist, or belongs to someone else (HTTP 404).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Over a request budget (HTTP 429 `rate_limited` with `Retry-After`).
    #[error("{detail}")]
    RateLimited {
        /// A sentence for people.
        detail: String,
        /// Whole seconds until the budget has room again (at least 1).
        retry_after_secs: u64,
    },
    /// It already exists (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// A backend we depend on is down or not configured (HTTP 503).
    #[error("{detail}")]
    Unavailable {
        /// A snake_case code, e.g. `database_unavailable`.
        code: &'static str,
        /// A sentence for people.
        detail: String,
    },
    /// The request is too large to be processed (HTTP 413), e.g. a chat message that
    /// does not fit the model's context window.
    #[error("{detail}")]
    TooLarge {
        /// A snake_case code, e.g. `message_too_long`.
        code: &'static str,
        /// A sentence for people.
        detail: String,
    },
    /// A provider we call refused the request in a way retrying cannot change (HTTP 502),
    /// e.g. the model rejected the prompt as too long or the model name as unknown.
    #[error("{detail}")]
    BadGateway {
        /// A snake_case code, e.g. `llm_rejected`.
        code: &'static str,
        /// A sentence for people.
        detail: String,
    },
    /// The work ran past its deadline and was stopped (HTTP 504).
    #[error("{detail}")]
    Timeout {
        /// A snake_case code, e.g. `chat_timeout`.
        code: &'static str,
        /// A sentence for people.
        detail: String,
        /// What was produced before the deadline (for a chat: the reply text so far,
        /// already sanitized; may be empty).
        partial: String,
    },
    /// A bug or an unexpected backend failure (HTTP 500). Logged whole, shown opaque.
    #[error("internal error: {0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// A validation error on `field`.
    pub fn validation(field: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Error::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    /// An internal error from anything that can be displayed.
    pub fn internal(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Internal(e.into())
    }

    /// The snake_case code sent to clients in `{"detail", "code"}`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Validation { .. } => "validation_error",
            Error::BadRequest { code, .. } => code,
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden { code, .. } => code,
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::RateLimited { .. } => "rate_limited",
            Error::Unavailable { code, .. } => code,
            Error::TooLarge { code, .. } => code,
            Error::BadGateway { code, .. } => code,
            Error::Timeout { code, .. } => code,
            Error::Internal(_) => "internal_error",
        }
    }
}

impl From<RepoError> for Error {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::NotFound => Error::NotFound("record"),
            // The driver's words (constraint names, error text) stay in the log: a
            // client learns what kind of failure it was, never the database's message.
            RepoError::Conflict(what) => {
                tracing::debug!(constraint = %what, "database conflict");
                Error::Conflict("it already exists".into())
            }
            RepoError::Unavailable(why) => {
                tracing::warn!(cause = %why, "database unavailable");
                Error::Unavailable {
                    code: "database_unavailable",
                    detail: "the database is unavailable; retry later".into(),
                }
            }
            RepoError::Invalid(why) => {
                Error::internal(format!("invalid data in the database: {why}"))
            }
            RepoError::Other(e) => Error::Internal(e),
        }
    }
}
