//! Authenticate once, then spend a request budget (plan 9b). A request to a route that
//! requires a bearer token, carrying a token that [`AuthService::authenticate`] accepts,
//! counts against its user's tier budget per minute (20 / 60 / 120 / 200); any other
//! request against its client IP's budget. Which budget and how big is core's
//! [`RatePolicy`] — the one the chat socket asks for each chat. Over budget: 429
//! `{"code": "rate_limited"}` with `Retry-After` in seconds. `/api/v1/health` is exempt so load-balancer probes never
//! starve.
//!
//! Which routes take a token is read from the OpenAPI document (operations that declare
//! the bearer scheme, plus the chat WebSocket), not from the request: on a public route
//! (`/auth/login`, `/auth/register`, `/auth/refresh`, the document…) a token is ignored,
//! so a client cannot move its password guesses onto the budgets of accounts it owns.
//! Login attempts are also counted per target email, in core (`AuthService::login`).
//!
//! The outcome of this authentication (the principal, or the 401) is left in the
//! request's extensions, so the route's own bearer check neither verifies the token nor
//! reads the database a second time.
//!
//! [`AuthService::authenticate`]: adiuva_core::auth::AuthService::authenticate
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

/// This request's one authentication, with the token it judged. Handlers take it from
/// the request's extensions (see [`crate::api::authenticate`]) instead of verifying
/// and reading again. A refusal is kept too (its 401 text), so a dead account's token
/// costs one read, not two; a failure to check (the database is down) is not kept, and
/// the route's own check answers it.
#[derive(Clone)]
pub(crate) struct Authenticated {
    pub(crate) token: String,
    pub(crate) outcome: Result<Principal, &'static str>,
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
    /// The one authentication of this request, when the route takes a token and one
    /// was sent.
    async fn authenticate(&self, req: &Request) -> Option<Authenticated> {
        let token = crate::api::bearer_token(req)?;
        if !self.config.authenticated.contains(req.uri().path()) {
            return None;
        }
        let outcome = match self.config.adiuva.auth().authenticate(token).await {
            Ok(principal) => Ok(principal),
            Err(adiuva_core::Error::Unauthorized(why)) => Err(why),
            Err(_) => return None,
        };
        Some(Authenticated {
            token: token.to_owned(),
            outcome,
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
        let authenticated = self.authenticate(&req).await;
        let decision = match authenticated.as_ref().map(|a| &a.outcome) {
            Some(Ok(principal)) => policy.check(principal, Cost::Request).await,
            _ => {
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
