//! Caps request bodies. A declared `Content-Length` over the limit is refused before a
//! byte is read; a chunked body is read up to the limit and refused as soon as it passes
//! it. Either way: 413 `{"code": "payload_too_large"}`.
//!
//! Routes that stream large bodies to the blob store (backups) are exempted by prefix and
//! enforce their own limits.

use poem::http::{StatusCode, header};
use poem::{Endpoint, Middleware, Request, Result};

use crate::error::ApiError;

/// The body-limit middleware.
#[derive(Debug, Clone)]
pub struct BodyLimit {
    limit: usize,
    exempt_prefixes: Vec<String>,
}

impl BodyLimit {
    /// At most `limit` bytes per body, except under `exempt_prefixes`.
    pub fn new(limit: usize, exempt_prefixes: Vec<String>) -> Self {
        Self {
            limit,
            exempt_prefixes,
        }
    }
}

impl<E: Endpoint> Middleware<E> for BodyLimit {
    type Output = BodyLimitEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        BodyLimitEndpoint {
            inner: ep,
            config: self.clone(),
        }
    }
}

/// See [`BodyLimit`].
#[derive(Debug)]
pub struct BodyLimitEndpoint<E> {
    inner: E,
    config: BodyLimit,
}

fn too_large(limit: usize) -> poem::Error {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body is larger than the limit of {limit} bytes"),
    )
    .into()
}

impl<E: Endpoint> Endpoint for BodyLimitEndpoint<E> {
    type Output = E::Output;

    async fn call(&self, mut req: Request) -> Result<Self::Output> {
        let path = req.uri().path();
        if self
            .config
            .exempt_prefixes
            .iter()
            .any(|p| path.starts_with(p.as_str()))
        {
            return self.inner.call(req).await;
        }
        let limit = self.config.limit;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large(limit));
        }
        let body = req.take_body();
        let bytes = match body.into_bytes_limit(limit).await {
            Ok(b) => b,
            Err(poem::error::ReadBodyError::PayloadTooLarge) => return Err(too_large(limit)),
            Err(e) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "body_read_failed",
                    format!("could not read the request body: {e}"),
                )
                .into());
            }
        };
        req.set_body(bytes);
        self.inner.call(req).await
    }
}
