//! Rate limiters: fixed windows counted in this process (the embedded default) or in
//! Redis, shared by every instance (`redis://` URL).
//!
//! Both count fixed windows: the first request of a key opens a window of `window`
//! length; at most `limit` requests pass in it; `retry_after` is what is left of it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use adiuva_core::ports::rate_limit::{RateDecision, RateLimiter};
use async_trait::async_trait;

use crate::AdapterError;

/// Windows per key, in memory. Expired windows are swept once the map grows.
#[derive(Debug, Default)]
pub struct MemoryRateLimiter {
    windows: Mutex<HashMap<String, (Instant, Duration, u32)>>,
}

impl MemoryRateLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self::default()
    }
}

const SWEEP_AT: usize = 10_000;

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn check(&self, key: &str, limit: u32, window: Duration) -> RateDecision {
        let now = Instant::now();
        let Ok(mut map) = self.windows.lock() else {
            return RateDecision::Allowed { remaining: limit };
        };
        if map.len() >= SWEEP_AT {
            map.retain(|_, (start, len, _)| now.duration_since(*start) < *len);
        }
        let entry = map.entry(key.to_owned()).or_insert((now, window, 0));
        if now.duration_since(entry.0) >= entry.1 {
            *entry = (now, window, 0);
        }
        if entry.2 >= limit {
            return RateDecision::Limited {
                retry_after: entry
                    .1
                    .saturating_sub(now.duration_since(entry.0))
                    .max(Duration::from_millis(1)),
            };
        }
        entry.2 += 1;
        RateDecision::Allowed {
            remaining: limit - entry.2,
        }
    }
}

/// Windows in Redis: `INCR` and `PEXPIRE … NX` in one transaction, so every instance
/// counts against the same budget. If Redis cannot be reached the request is allowed and
/// a warning logged (failing open keeps the API up when only the limiter is down).
#[derive(Clone)]
pub struct RedisRateLimiter {
    conn: redis::aio::ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisRateLimiter {
    /// Connects to a `redis://` URL. Keys are `adiuva:rl:<key>`.
    pub async fn connect(url: &str) -> Result<Self, AdapterError> {
        let redacted = crate::postgres::redact(url);
        if url.starts_with("rediss://") {
            return Err(AdapterError::Unsupported(format!(
                "'{redacted}': TLS Redis (rediss://) is not supported by this build; use redis://"
            )));
        }
        let client = redis::Client::open(url).map_err(|e| {
            AdapterError::Unsupported(format!("'{redacted}' is not a usable Redis URL: {e}"))
        })?;
        let conn = tokio::time::timeout(Duration::from_secs(10), client.get_connection_manager())
            .await
            .map_err(|_| {
                AdapterError::Connect(format!("Redis at '{redacted}' did not answer within 10 s"))
            })?
            .map_err(|e| {
                AdapterError::Connect(format!("cannot connect to Redis at '{redacted}': {e}"))
            })?;
        Ok(Self {
            conn,
            prefix: "adiuva:rl:".into(),
        })
    }

    /// A limiter whose keys live under another prefix (tests isolate runs with it).
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_owned();
        self
    }

    /// Round-trips a PING.
    pub async fn ping(&self) -> Result<(), AdapterError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| AdapterError::Connect(format!("Redis does not answer: {e}")))
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, key: &str, limit: u32, window: Duration) -> RateDecision {
        let mut conn = self.conn.clone();
        let k = format!("{}{key}", self.prefix);
        let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let result: redis::RedisResult<(u64, i64, i64)> = redis::pipe()
            .atomic()
            .cmd("INCR")
            .arg(&k)
            .cmd("PEXPIRE")
            .arg(&k)
            .arg(ms)
            .arg("NX")
            .cmd("PTTL")
            .arg(&k)
            .query_async(&mut conn)
            .await;
        match result {
            Ok((count, _, ttl_ms)) => {
                if count <= u64::from(limit) {
                    RateDecision::Allowed {
                        remaining: limit - count as u32,
                    }
                } else {
                    let ttl = u64::try_from(ttl_ms).unwrap_or(ms).clamp(1, ms);
                    RateDecision::Limited {
                        retry_after: Duration::from_millis(ttl),
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "rate limiter: Redis unavailable; allowing the request");
                RateDecision::Allowed { remaining: limit }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance_in_memory() {
        adiuva_core::testing::rate_limit::run_all(&MemoryRateLimiter::new()).await;
    }

    #[tokio::test]
    async fn conformance_on_redis_shared_by_two_instances() {
        let Some(url) =
            adiuva_core::testing::services::service("ADIUVA_TEST_REDIS_URL", "Redis rate limiter")
        else {
            return;
        };
        let prefix = format!("adiuva-test:{}:", uuid::Uuid::new_v4().simple());
        let first = RedisRateLimiter::connect(&url)
            .await
            .expect("connect")
            .with_prefix(&prefix);
        let second = RedisRateLimiter::connect(&url)
            .await
            .expect("connect")
            .with_prefix(&prefix);
        first.ping().await.expect("ping");
        adiuva_core::testing::rate_limit::run_all(&first).await;
        adiuva_core::testing::rate_limit::instances_share_budgets(&first, &second).await;
    }

    #[tokio::test]
    async fn a_bad_redis_url_says_why() {
        let e = RedisRateLimiter::connect("rediss://x:6380")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("rediss://"), "{e}");
        let e = RedisRateLimiter::connect("redis://127.0.0.1:1")
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("cannot connect") || e.to_string().contains("did not answer"),
            "{e}"
        );
    }
}
