//! A minimum rate for request bodies.
//!
//! The server's patience is a budget of waiting time, at most `patience`: time spent
//! waiting for the client's next bytes uses it up, and every `min_rate` bytes received
//! earn one second back (never above `patience`). When it runs out the body fails with
//! `TimedOut`, so whatever reads it fails like a cut-off upload (a backup's blob upload
//! is aborted and nothing is kept). Only time spent *waiting for the client* counts: a
//! handler that pauses reading (say, while the blob store takes a part) costs the client
//! nothing. A body that stalls completely is cut after `patience`; one dripped below
//! `min_rate` is cut once its deficit reaches `patience`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::time::{Instant, Sleep};

/// The rule (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct BodyRate {
    /// Bytes per second a body must average.
    pub min_rate: u64,
    /// The most waiting time the server banks for a client.
    pub patience: Duration,
}

/// A body stream under a [`BodyRate`].
pub struct MinRate<S> {
    inner: S,
    rule: BodyRate,
    /// Waiting time left.
    credit: Duration,
    /// When the current wait for the client began.
    waiting_since: Option<Instant>,
    deadline: Pin<Box<Sleep>>,
}

impl<S> MinRate<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, rule: BodyRate) -> Self {
        Self {
            inner,
            rule,
            credit: rule.patience,
            waiting_since: None,
            deadline: Box::pin(tokio::time::sleep(rule.patience)),
        }
    }

    fn earned(&self, bytes: usize) -> Duration {
        Duration::from_secs_f64(bytes as f64 / self.rule.min_rate.max(1) as f64)
    }
}

impl<S> Stream for MinRate<S>
where
    S: Stream<Item = io::Result<Bytes>> + Unpin,
{
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(item) => {
                if let Some(since) = this.waiting_since.take() {
                    this.credit = this.credit.saturating_sub(since.elapsed());
                }
                if let Some(Ok(bytes)) = &item {
                    this.credit = (this.credit + this.earned(bytes.len())).min(this.rule.patience);
                }
                Poll::Ready(item)
            }
            Poll::Pending => {
                if this.waiting_since.is_none() {
                    let now = Instant::now();
                    this.waiting_since = Some(now);
                    this.deadline.as_mut().reset(now + this.credit);
                }
                if this.deadline.as_mut().poll(cx).is_ready() {
                    this.waiting_since = None;
                    this.credit = Duration::ZERO;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the request body arrived slower than {} bytes/s",
                            this.rule.min_rate
                        ),
                    ))));
                }
                Poll::Pending
            }
        }
    }
}
