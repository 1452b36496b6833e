//! Per-user and per-IP request budgets (plan 9b): an authenticated request counts
//! against its user's tier budget per minute (20 / 60 / 120 / 200), read from the
//! database; any other request against its client IP's budget. Over budget: 429
//! `{"code": "rate_limited"}` with `Retry-After` in seconds. `/api/v1/health` is exempt
//! so load-balancer probes never starve.
//!
//! The client IP is the socket's peer address: behind a proxy, limit at the proxy or
//! raise the per-IP budget.

use std::sync::Arc;
use std::time::Duration;

use adiuva_core::Adiuva;
use adiuva_core::ports::RateLimiter;
use adiuva_core::ports::rate_limit::RateDecision;
use adiuva_core::tiers::rate_limit_per_minute;
use poem::http::{HeaderValue, StatusCode, header};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};

use crate::error::ApiError;

const MINUTE: Duration = Duration::from_secs(60);

/// The rate-limit middleware.
#[derive(Clone)]
pub struct RateLimit {
    limiter: Arc<dyn RateLimiter>,
    adiuva: Adiuva,
    ip_per_minute: u32,
}

impl RateLimit {
    /// Budgets counted by `limiter`; unauthenticated clients get `ip_per_minute`.
    pub fn new(limiter: Arc<dyn RateLimiter>, adiuva: Adiuva, ip_per_minute: u32) -> Self {
        Self {
            limiter,
            adiuva,
            ip_per_minute,
        }
    }
}

impl<E: Endpoint> Middleware<E> for RateLimit {
    type Output = RateLimitEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        RateLimitEndpoint {
            inner: ep,
            config: self.clone(),
        }
    }
}

/// See [`RateLimit`].
pub struct RateLimitEndpoint<E> {
    inner: E,
    config: RateLimit,
}

impl<E: Endpoint> RateLimitEndpoint<E> {
    /// The budget key and size for this request.
    async fn budget(&self, req: &Request) -> (String, u32) {
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(token) = bearer
            && let Ok(user) = self.config.adiuva.auth().verify_access_token(token.trim())
            && let Ok(tier) = self.config.adiuva.tiers().get_tier(user).await
        {
            return (format!("user:{user}"), rate_limit_per_minute(tier));
        }
        let ip = req
            .remote_addr()
            .as_socket_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
        (format!("ip:{ip}"), self.config.ip_per_minute)
    }
}

impl<E: Endpoint> Endpoint for RateLimitEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Self::Output> {
        let path = req.uri().path();
        if !path.starts_with("/api/") || path == "/api/v1/health" {
            return self.inner.call(req).await.map(IntoResponse::into_response);
        }
        let (key, limit) = self.budget(&req).await;
        match self.config.limiter.check(&key, limit, MINUTE).await {
            RateDecision::Allowed { .. } => {
                self.inner.call(req).await.map(IntoResponse::into_response)
            }
            RateDecision::Limited { retry_after } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                tracing::info!(budget = %key.split(':').next().unwrap_or(""), limit, retry_after_secs = secs, "rate limited");
                let err = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!(
                        "too many requests: the limit is {limit} per minute; retry in {secs} s"
                    ),
                );
                let mut resp = poem::error::ResponseError::as_response(&err);
                if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
                Ok(resp)
            }
        }
    }
}
