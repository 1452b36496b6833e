//! The request budgets (plan 9b), decided in one place for every door: a signed-in
//! user has one budget per minute, sized by their tier ([`rate_limit_per_minute`]) and
//! spent by HTTP requests and WebSocket chats alike; a caller without a token spends
//! its IP's budget. The HTTP middleware and the chat socket both ask [`RatePolicy`];
//! neither knows a key format or a limit.
//!
//! Counting happens in the [`RateLimiter`] port, so every instance that shares the
//! limiter (Redis) shares the budgets.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Principal;
use crate::error::Error;
use crate::ports::RateLimiter;
use crate::ports::rate_limit::RateDecision;
use crate::tiers::rate_limit_per_minute;

/// Every budget is per minute (the plan's unit).
pub const WINDOW: Duration = Duration::from_secs(60);

/// What spends the budget. Each costs one unit of the same per-user budget: a chat is
/// a request that happens to arrive over a socket. The kind only names it in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cost {
    /// An HTTP request (the chat socket's upgrade included).
    Request,
    /// One chat on an open socket.
    Chat,
}

impl Cost {
    fn as_str(self) -> &'static str {
        match self {
            Cost::Request => "request",
            Cost::Chat => "chat",
        }
    }
}

/// The per-user and per-IP budgets over a [`RateLimiter`].
#[derive(Clone)]
pub struct RatePolicy {
    limiter: Arc<dyn RateLimiter>,
    ip_per_minute: u32,
}

impl std::fmt::Debug for RatePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RatePolicy")
            .field("ip_per_minute", &self.ip_per_minute)
            .finish_non_exhaustive()
    }
}

impl RatePolicy {
    /// Budgets counted by `limiter`; callers without a token get `ip_per_minute`.
    pub fn new(limiter: Arc<dyn RateLimiter>, ip_per_minute: u32) -> Self {
        Self {
            limiter,
            ip_per_minute,
        }
    }

    /// Counts one `cost` against the principal's budget: their tier's requests per
    /// minute, read with the principal (so fresh for this request, never from the
    /// token). Over it: [`Error::RateLimited`] (429 `rate_limited`, `Retry-After`).
    pub async fn check(&self, who: &Principal, cost: Cost) -> Result<(), Error> {
        let limit = rate_limit_per_minute(who.user.tier);
        let key = format!("user:{}", who.id());
        count(
            self.limiter.as_ref(),
            &key,
            limit,
            cost.as_str(),
            |limit, secs| {
                format!("too many requests: the limit is {limit} per minute; retry in {secs} s")
            },
        )
        .await
    }

    /// Counts one request against the budget of a caller known only by its IP.
    pub async fn check_ip(&self, ip: Option<IpAddr>) -> Result<(), Error> {
        let key = match ip {
            Some(ip) => format!("ip:{ip}"),
            None => "ip:unknown".to_owned(),
        };
        count(
            self.limiter.as_ref(),
            &key,
            self.ip_per_minute,
            "anonymous request",
            |limit, secs| {
                format!("too many requests: the limit is {limit} per minute; retry in {secs} s")
            },
        )
        .await
    }
}

/// Counts one unit against `key`'s budget of `limit` per [`WINDOW`]; over it,
/// [`Error::RateLimited`] whose detail `say(limit, secs)` writes. The one place that
/// turns a [`RateDecision`] into an error (login attempts per email use it too).
pub(crate) async fn count(
    limiter: &dyn RateLimiter,
    key: &str,
    limit: u32,
    what: &'static str,
    say: impl FnOnce(u32, u64) -> String,
) -> Result<(), Error> {
    match limiter.check(key, limit, WINDOW).await {
        RateDecision::Allowed { .. } => Ok(()),
        RateDecision::Limited { retry_after } => {
            // Whole seconds, rounded up and at least 1: a client that waits this long
            // finds room.
            let secs = (retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)).max(1);
            // The key's kind (`user`, `ip`, `login`), never the id, IP or email.
            let budget = key.split(':').next().unwrap_or("");
            tracing::info!(budget, what, limit, retry_after_secs = secs, "rate limited");
            Err(Error::RateLimited {
                detail: say(limit, secs),
                retry_after_secs: secs,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::domain::{Email, Role, Tier, UserId};
    use crate::ports::db::User;

    /// A fixed-window counter without expiry: enough to see which key a check spends.
    #[derive(Default)]
    struct Counts(Mutex<Vec<(String, u32)>>);

    #[async_trait]
    impl RateLimiter for Counts {
        async fn check(&self, key: &str, limit: u32, _window: Duration) -> RateDecision {
            let mut seen = self.0.lock().expect("lock");
            let used = seen.iter().filter(|(k, _)| k == key).count() as u32;
            seen.push((key.to_owned(), limit));
            if used < limit {
                RateDecision::Allowed {
                    remaining: limit - used - 1,
                }
            } else {
                RateDecision::Limited {
                    retry_after: Duration::from_millis(1500),
                }
            }
        }
    }

    fn principal(tier: Tier) -> Principal {
        Principal {
            user: User {
                id: UserId::new(),
                email: Email::parse("a@example.com").expect("email"),
                password_hash: String::new(),
                role: Role::User,
                tier,
                stripe_customer_id: None,
                created_at: 0,
                updated_at: 0,
            },
            session: None,
        }
    }

    #[tokio::test]
    async fn requests_and_chats_spend_one_budget_sized_by_the_tier() {
        let counts = Arc::new(Counts::default());
        let policy = RatePolicy::new(counts.clone(), 1000);
        let who = principal(Tier::Free);
        for i in 0..20 {
            let cost = if i % 2 == 0 {
                Cost::Request
            } else {
                Cost::Chat
            };
            policy.check(&who, cost).await.expect("within 20");
        }
        for cost in [Cost::Request, Cost::Chat] {
            match policy.check(&who, cost).await {
                Err(Error::RateLimited {
                    detail,
                    retry_after_secs,
                }) => {
                    assert_eq!(retry_after_secs, 2, "1.5 s rounds up");
                    assert!(detail.contains("20 per minute"), "{detail}");
                }
                other => panic!("{cost:?} over budget: {other:?}"),
            }
        }
        // Another tier, another size; another user, another budget.
        policy
            .check(&principal(Tier::Pro), Cost::Chat)
            .await
            .expect("own budget");
        let seen = counts.0.lock().expect("lock");
        assert!(seen.iter().any(|(_, l)| *l == 60));
    }

    #[tokio::test]
    async fn anonymous_callers_spend_their_ip_budget() {
        let policy = RatePolicy::new(Arc::new(Counts::default()), 2);
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        policy.check_ip(Some(ip)).await.expect("1");
        policy.check_ip(Some(ip)).await.expect("2");
        let e = policy.check_ip(Some(ip)).await.expect_err("3rd");
        assert_eq!(e.code(), "rate_limited");
        policy
            .check_ip(Some("192.0.2.8".parse().expect("ip")))
            .await
            .expect("another IP");
    }
}
