//! The scheduler tick (see the module docs of `agents`).
//!
//! Every instance ticks; the database decides who runs what. A due agent's slot is
//! claimed by a compare-and-swap of its `next_run_at` plus a unique `(agent, slot)` run,
//! so of any number of instances exactly one claims it. A run's lease is renewed while
//! its instance lives; a run whose lease passed is taken over by one instance.

use std::sync::Arc;
use std::time::Duration;

use super::runner::{self, STILL_RUNNING, ms};
use super::{AgentService, Inner, Schedule, TickReport};
use crate::domain::Millis;
use crate::error::Error;
use crate::ports::db::{AgentConfigRow, RunStatus, RunTrigger, SlotClaim};

/// Due agents read per query.
const DUE_BATCH: u32 = 500;
/// Batches one tick claims at most (a backlog beyond it waits for the next tick).
const MAX_DUE_BATCHES: usize = 20;
/// Runs taken over per tick.
const TAKE_OVER_BATCH: u32 = 100;
/// Expired journey sessions are deleted this often.
const JOURNEY_SWEEP_EVERY: Duration = Duration::from_secs(600);

pub(super) async fn start(s: &AgentService) -> Result<Vec<tokio::task::JoinHandle<()>>, Error> {
    let service = s.clone();
    let ticker = tokio::spawn(async move {
        let every = service.inner.config.tick.max(Duration::from_millis(10));
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sweep: Option<tokio::time::Instant> = None;
        loop {
            interval.tick().await;
            if let Err(e) = tick(&service).await {
                tracing::warn!(error = %e, "agent scheduler tick failed");
            }
            if last_sweep.is_none_or(|t| t.elapsed() >= JOURNEY_SWEEP_EVERY) {
                last_sweep = Some(tokio::time::Instant::now());
                let now = service.inner.clock.now_ms();
                match service.inner.db.delete_expired_journeys(now).await {
                    Ok(n) if n > 0 => tracing::info!(deleted = n, "expired journeys deleted"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "deleting expired journeys failed"),
                }
            }
        }
    });
    let inner = s.inner.clone();
    let renewal = tokio::spawn(async move {
        let every = (inner.config.lease / 3).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(every).await;
            renew(&inner).await;
        }
    });
    Ok(vec![ticker, renewal])
}

/// Extends the lease of every run this instance executes.
async fn renew(inner: &Inner) {
    let until = inner.clock.now_ms().saturating_add(ms(inner.config.lease));
    if let Err(e) = inner.db.renew_leases(inner.instance_id, until).await {
        tracing::warn!(error = %e, "renewing agent run leases failed");
    }
}

pub(super) async fn tick(s: &AgentService) -> Result<TickReport, Error> {
    let inner = &s.inner;
    let mut report = TickReport::default();
    let now = inner.clock.now_ms();
    for _ in 0..MAX_DUE_BATCHES {
        let due = inner.db.due_agents(now, DUE_BATCH).await?;
        let full = due.len() == DUE_BATCH as usize;
        for cfg in due {
            // One agent's failure never stops the others.
            if let Err(e) = claim(inner, &cfg, now, &mut report).await {
                tracing::warn!(error = %e, agent = %cfg.id, "claiming an agent's slot failed");
            }
        }
        if !full {
            break;
        }
    }
    let lease_until = now.saturating_add(ms(inner.config.lease));
    match inner
        .db
        .take_over_runs(now, inner.instance_id, lease_until, TAKE_OVER_BATCH)
        .await
    {
        Ok(runs) => {
            for run in runs {
                report.taken_over += 1;
                tracing::info!(run = %run.id, attempts = run.attempts, "agent run taken over");
                runner::taken_over(inner, run).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "taking over agent runs failed"),
    }
    Ok(report)
}

/// Claims the slot of one due agent: the latest slot up to now (a scheduler that was
/// down catches up with one run, never a burst), skipped when a run is still active.
async fn claim(
    inner: &Arc<Inner>,
    cfg: &AgentConfigRow,
    now: Millis,
    report: &mut TickReport,
) -> Result<(), Error> {
    let Some(expected) = cfg.next_run_at else {
        return Ok(());
    };
    let schedule = cfg
        .schedule
        .as_deref()
        .and_then(|c| Schedule::parse(c, &cfg.timezone).ok());
    let (slot, next) = match &schedule {
        Some(s) => (
            s.latest_at_or_before(expected.saturating_sub(1), now)
                .unwrap_or(expected),
            s.next_after(now),
        ),
        // A stored schedule that no longer parses (or was removed) runs this slot and
        // no other.
        None => (expected, None),
    };
    let mut run = runner::new_run(inner, cfg, RunTrigger::Schedule, Some(slot), now);
    let busy = !inner.db.active_runs(cfg.id, now).await?.is_empty();
    if busy {
        run.status = RunStatus::Skipped;
        run.started_at = None;
        run.finished_at = Some(now);
        run.error = Some(STILL_RUNNING.into());
        run.instance_id = None;
        run.lease_until = None;
    }
    let claim = SlotClaim {
        agent_id: cfg.id,
        expected_next_run_at: expected,
        next_run_at: next,
        run,
    };
    let Some(run) = inner.db.claim_slot(&claim).await? else {
        // Another instance claimed it.
        return Ok(());
    };
    report.claimed += 1;
    if busy {
        report.skipped += 1;
    } else {
        runner::spawn_run(inner, run);
    }
    Ok(())
}

pub(super) async fn idle(s: &AgentService, max: Duration) -> bool {
    let mut rx = s.inner.executing.subscribe();
    tokio::time::timeout(max, rx.wait_for(|n| *n == 0))
        .await
        .is_ok_and(|r| r.is_ok())
}
