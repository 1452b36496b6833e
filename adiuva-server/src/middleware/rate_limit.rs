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

use adiuva_core::Adiuva;
use adiuva_core::auth::Principal;
use adiuva_core::rate::{Cost, RatePolicy};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};

use crate::error::ApiError;

/// The rate-limit middleware: asks the core [`RatePolicy`] (the same one the chat
/// socket asks), so the two cannot disagree on keys or limits.
#[derive(Clone)]
pub struct RateLimit {
    policy: Option<RatePolicy>,
    adiuva: Adiuva,
    authenticated: Arc<crate::api::AuthenticatedRoutes>,
}

impl RateLimit {
    /// Budgets decided by `adiuva`'s [`RatePolicy`] (none: requests pass uncounted).
    pub fn new(adiuva: Adiuva) -> Self {
        Self {
            policy: adiuva.rate_policy().cloned(),
            adiuva,
            authenticated: Arc::new(crate::api::AuthenticatedRoutes::from_spec()),
        }
    }
}

/// A principal established for this request, with the token it came from. Handlers
/// take it from the request's extensions (see [`crate::api::authenticate`]).
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
    /// The principal, when the route takes a token and the token is good: the one
    /// authentication of this request.
    async fn principal(&self, req: &Request) -> Option<Authenticated> {
        let token = crate::api::bearer_token(req)?;
        if !self.config.authenticated.contains(req.uri().path()) {
            return None;
        }
        let principal = self.config.adiuva.auth().authenticate(token).await.ok()?;
        Some(Authenticated {
            token: token.to_owned(),
            principal,
        })
    }
}

impl<E: Endpoint> Endpoint for RateLimitEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> Result<Self::Output> {
        let path = req.uri().path();
        let Some(policy) = &self.config.policy else {
            return self.inner.call(req).await.map(IntoResponse::into_response);
        };
        if !path.starts_with("/api/") || path == "/api/v1/health" {
            return self.inner.call(req).await.map(IntoResponse::into_response);
        }
        let authenticated = self.principal(&req).await;
        let decision = match &authenticated {
            Some(a) => policy.check(&a.principal, Cost::Request).await,
            None => {
                let ip = req.remote_addr().as_socket_addr().map(|a| a.ip());
                policy.check_ip(ip).await
            }
        };
        match decision {
            Ok(()) => {
                if let Some(a) = authenticated {
                    req.extensions_mut().insert(a);
                }
                self.inner.call(req).await.map(IntoResponse::into_response)
            }
            Err(e) => Ok(poem::error::ResponseError::as_response(&ApiError::from(e))),
        }
    }
}
