//! `X-Request-Id`: accepted from the client when sane, generated otherwise, echoed in
//! the response, and a field of the span every log line of the request is written in.

use std::time::Instant;

use poem::http::HeaderValue;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};
use tracing::Instrument;

/// The header name.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The request-id middleware. Outermost, so that everything below logs inside its span.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestId;

impl<E: Endpoint> Middleware<E> for RequestId {
    type Output = RequestIdEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        RequestIdEndpoint { inner: ep }
    }
}

/// See [`RequestId`].
#[derive(Debug)]
pub struct RequestIdEndpoint<E> {
    inner: E,
}

/// A client-supplied id is kept only if it is short and plain, so it cannot forge log
/// structure or smuggle data into headers.
fn acceptable(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

impl<E: Endpoint> Endpoint for RequestIdEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Self::Output> {
        let id = req
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| acceptable(v))
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
        let started = Instant::now();
        let result = self.inner.call(req).instrument(span.clone()).await;
        let mut resp = match result {
            Ok(r) => r.into_response(),
            Err(e) => e.into_response(),
        };
        span.in_scope(|| {
            tracing::info!(
                status = resp.status().as_u16(),
                latency_ms = started.elapsed().as_secs_f64() * 1000.0,
                "request finished"
            )
        });
        if let Ok(v) = HeaderValue::from_str(&id) {
            resp.headers_mut().insert(REQUEST_ID_HEADER, v);
        }
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_plain_ids_are_kept() {
        assert!(super::acceptable("abc-123_X.y:z"));
        assert!(!super::acceptable(""));
        assert!(!super::acceptable("has space"));
        assert!(!super::acceptable("new\nline"));
        assert!(!super::acceptable(&"a".repeat(129)));
    }
}
