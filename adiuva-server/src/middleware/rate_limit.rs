//! Per-user and per-IP request budgets (plan 9b): a request to a route that requires a
//! bearer token, carrying a token that [`AuthService::authenticate`] accepts, counts
//! against its user's tier budget per minute (20 / 60 / 120 / 200); any other request
//! against its client IP's budget. Over budget: 429 `{"code": "rate_limited"}` with
//! `Retry-After` in seconds. `/api/v1/health` is exempt so load-balancer probes never
//! starve.
//!
//! Which routes take a token is read from the OpenAPI document (operations that declare
//! the bearer scheme, plus the chat WebSocket), not from the request: on a public route
//! (`/auth/login`, `/auth/register`, `/auth/refresh`, the document…) a token is ignored,
//! so a client cannot move its password guesses onto the budgets of accounts it owns.
//! Login attempts are also counted per target email, in core (`AuthService::login`).
//!
//! The principal this middleware authenticated is left in the request's extensions, so
//! the route's own bearer check does not read the database a second time.
//!
//! The client IP is the socket's peer address: behind a proxy, limit at the proxy or
//! raise the per-IP budget.

use std::sync::Arc;
use std::time::Duration;

use adiuva_core::Adiuva;
use adiuva_core::auth::Principal;
use adiuva_core::ports::RateLimiter;
use adiuva_core::ports::rate_limit::RateDecision;
use adiuva_core::tiers::rate_limit_per_minute;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};

use crate::error::ApiError;

const MINUTE: Duration = Duration::from_secs(60);

/// The rate-limit middleware.
#[derive(Clone)]
pub struct RateLimit {
    limiter: Arc<dyn RateLimiter>,
    adiuva: Adiuva,
    ip_per_minute: u32,
    authenticated: Arc<crate::api::AuthenticatedRoutes>,
}

impl RateLimit {
    /// Budgets counted by `limiter`; unauthenticated clients get `ip_per_minute`.
    pub fn new(limiter: Arc<dyn RateLimiter>, adiuva: Adiuva, ip_per_minute: u32) -> Self {
        Self {
            limiter,
            adiuva,
            ip_per_minute,
            authenticated: Arc::new(crate::api::AuthenticatedRoutes::from_spec()),
        }
    }
}

/// A principal established for this request, with the token it came from.
#[derive(Clone)]
pub(crate) struct Authenticated {
    pub(crate) token: String,
    pub(crate) principal: Principal,
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
    /// The budget key and size for this request, and the principal when the route
    /// takes a token and the token is good.
    async fn budget(&self, req: &Request) -> (String, u32, Option<Authenticated>) {
        let token = crate::api::bearer_token(req);
        if let Some(token) = token
            && self.config.authenticated.contains(req.uri().path())
            && let Ok(principal) = self.config.adiuva.auth().authenticate(token).await
        {
            let key = format!("user:{}", principal.id());
            let limit = rate_limit_per_minute(principal.user.tier);
            let token = token.to_owned();
            return (key, limit, Some(Authenticated { token, principal }));
        }
        let ip = req
            .remote_addr()
            .as_socket_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
        (format!("ip:{ip}"), self.config.ip_per_minute, None)
    }
}

impl<E: Endpoint> Endpoint for RateLimitEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> Result<Self::Output> {
        let path = req.uri().path();
        if !path.starts_with("/api/") || path == "/api/v1/health" {
            return self.inner.call(req).await.map(IntoResponse::into_response);
        }
        let (key, limit, authenticated) = self.budget(&req).await;
        match self.config.limiter.check(&key, limit, MINUTE).await {
            RateDecision::Allowed { .. } => {
                if let Some(a) = authenticated {
                    req.extensions_mut().insert(a);
                }
                self.inner.call(req).await.map(IntoResponse::into_response)
            }
            RateDecision::Limited { retry_after } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                tracing::info!(budget = %key.split(':').next().unwrap_or(""), limit, retry_after_secs = secs, "rate limited");
                let err = ApiError::rate_limited(
                    format!(
                        "too many requests: the limit is {limit} per minute; retry in {secs} s"
                    ),
                    secs,
                );
                Ok(poem::error::ResponseError::as_response(&err))
            }
        }
    }
}
