//! The tick: each slot once across instances, catch-up, overlap, takeover, DST.

use adiuva_core::domain::Millis;
use adiuva_core::ports::db::{AgentKind, AgentRepo, AgentRun, RunStatus, RunTrigger};
use chrono::DateTime;
use uuid::Uuid;

use super::support::*;

fn ms(s: &str) -> Millis {
    DateTime::parse_from_rfc3339(s)
        .expect("rfc3339")
        .timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_ticking_together_run_each_slot_exactly_once() {
    let env = Env::new(3).await;
    let who = env.user().await;
    register(env.apps[0].devices(), &who, "laptop").await;
    let token = env.token(&who).await;
    let mut agents = Vec::new();
    for _ in 0..12 {
        agents.push(
            env.agent(
                &who,
                AgentKind::Cloud,
                "inbox_triage",
                Some("*/5 * * * *"),
                "UTC",
                Some(token.clone()),
            )
            .await,
        );
    }
    let mut slots = Vec::new();
    for _ in 0..3 {
        env.clock.advance(5 * 60_000);
        slots.push(env.now());
        let (claimed, skipped, _) = env.tick_all().await;
        assert_eq!(
            (claimed, skipped),
            (12, 0),
            "every agent's slot claimed once"
        );
        env.idle().await;
        // A second round at the same instant claims nothing.
        assert_eq!(env.tick_all().await, (0, 0, 0));
    }
    for a in &agents {
        for slot in &slots {
            let runs = env.db.runs_for_slot(a.id, *slot).await.expect("slot runs");
            assert_eq!(runs.len(), 1, "one run per slot");
            assert_eq!(runs[0].status, RunStatus::Succeeded, "{:?}", runs[0].error);
            assert_eq!((runs[0].items_read, runs[0].items_produced), (1, 1));
        }
        assert_eq!(env.runs(&who, a.id).await.len(), slots.len());
    }
    assert_eq!(
        env.provider.read_count(),
        12 * 3,
        "the provider was read once per run"
    );
    assert_eq!(
        env.queued(&who, "laptop").await.len(),
        12 * 3,
        "one result frame per run"
    );
}

#[tokio::test]
async fn a_scheduler_that_was_down_catches_up_with_one_run() {
    let env = Env::new(1).await;
    let who = env.user().await;
    let a = env
        .agent(
            &who,
            AgentKind::Local,
            "weekly_review",
            Some("0 * * * *"),
            "UTC",
            None,
        )
        .await;
    assert_eq!(a.next_run_at, Some(ms("2026-12-01T11:00:00Z")));
    env.clock.set(ms("2026-12-01T15:20:00Z"));
    assert_eq!(env.tick_all().await, (1, 0, 0));
    env.idle().await;
    let runs = env.runs(&who, a.id).await;
    assert_eq!(runs.len(), 1, "one run, not five");
    assert_eq!(runs[0].scheduled_for, Some(ms("2026-12-01T15:00:00Z")));
    // No device: a local run is skipped, saying why.
    assert_eq!(runs[0].status, RunStatus::Skipped);
    assert_eq!(runs[0].error.as_deref(), Some("no device is online"));
    let row = env.db.agent_by_id(a.id).await.expect("db").expect("agent");
    assert_eq!(row.next_run_at, Some(ms("2026-12-01T16:00:00Z")));
    assert_eq!(env.tick_all().await, (0, 0, 0));
}

#[tokio::test]
async fn a_slot_arriving_while_the_previous_run_goes_on_is_skipped() {
    let env = Env::new(1).await;
    let who = env.user().await;
    register(env.apps[0].devices(), &who, "laptop").await;
    let token = env.token(&who).await;
    let a = env
        .agent(
            &who,
            AgentKind::Cloud,
            "inbox_triage",
            Some("* * * * *"),
            "UTC",
            Some(token),
        )
        .await;
    env.provider.open.send_replace(false);
    env.clock.advance(60_000);
    assert_eq!(env.tick_all().await, (1, 0, 0));
    eventually("the first run reads", || async {
        env.provider.read_count() == 1
    })
    .await;
    env.clock.advance(60_000);
    assert_eq!(
        env.tick_all().await,
        (1, 1, 0),
        "the second slot is claimed as skipped"
    );
    env.provider.open.send_replace(true);
    env.idle().await;
    let runs = env.runs(&who, a.id).await;
    assert_eq!(runs.len(), 2);
    let skipped: Vec<&AgentRun> = runs
        .iter()
        .filter(|r| r.status == RunStatus::Skipped)
        .collect();
    assert_eq!(skipped.len(), 1);
    assert_eq!(
        skipped[0].error.as_deref(),
        Some("the previous run was still going")
    );
    assert!(runs.iter().any(|r| r.status == RunStatus::Succeeded));
    assert_eq!(
        env.provider.read_count(),
        1,
        "the skipped slot read nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_whose_instance_died_is_taken_over_once_and_its_results_queued_once() {
    let env = Env::new(3).await;
    let who = env.user().await;
    register(env.apps[0].devices(), &who, "laptop").await;
    let token = env.token(&who).await;
    let a = env
        .agent(
            &who,
            AgentKind::Cloud,
            "inbox_triage",
            None,
            "UTC",
            Some(token),
        )
        .await;
    // A run claimed by an instance that died: running, its lease passed.
    let now = env.now();
    let run = AgentRun {
        id: Uuid::now_v7(),
        user_id: who.user.id,
        agent_id: a.id,
        status: RunStatus::Running,
        trigger: RunTrigger::Schedule,
        scheduled_for: Some(now - 120_000),
        created_at: now - 120_000,
        started_at: Some(now - 120_000),
        finished_at: None,
        items_read: 0,
        items_produced: 0,
        error: None,
        instance_id: Some(Uuid::new_v4()),
        lease_until: Some(now - 60_000),
        attempts: 1,
        device_id: None,
    };
    env.db.insert_run(&run).await.expect("run");
    assert_eq!(
        env.tick_all().await,
        (0, 0, 1),
        "one instance takes it over"
    );
    env.idle().await;
    assert_eq!(env.tick_all().await, (0, 0, 0), "and only once");
    let got = env
        .db
        .run(who.user.id, run.id)
        .await
        .expect("db")
        .expect("run");
    assert_eq!(got.status, RunStatus::Succeeded, "{:?}", got.error);
    assert_eq!(got.attempts, 2);
    assert_eq!(env.provider.read_count(), 1);
    assert_eq!(env.queued(&who, "laptop").await.len(), 1);
}

/// A daily agent at 02:30 Berlin ticked every ten minutes across both DST changes runs
/// once a day (03:00 on the spring-forward day, the first 02:30 on the fall-back day).
#[tokio::test]
async fn a_daily_agent_runs_once_a_day_across_berlin_dst_changes() {
    for (from, to, want) in [
        (
            "2026-03-28T00:00:00+01:00",
            "2026-03-31T00:00:00+02:00",
            [
                "2026-03-28T02:30:00+01:00",
                "2026-03-29T03:00:00+02:00",
                "2026-03-30T02:30:00+02:00",
            ],
        ),
        (
            "2026-10-24T00:00:00+02:00",
            "2026-10-27T00:00:00+01:00",
            [
                "2026-10-24T02:30:00+02:00",
                "2026-10-25T02:30:00+02:00",
                "2026-10-26T02:30:00+01:00",
            ],
        ),
    ] {
        let env = Env::new(1).await;
        env.clock.set(ms(from));
        let who = env.user().await;
        let a = env
            .agent(
                &who,
                AgentKind::Local,
                "weekly_review",
                Some("30 2 * * *"),
                "Europe/Berlin",
                None,
            )
            .await;
        while env.now() < ms(to) {
            env.clock.advance(10 * 60_000);
            env.tick_all().await;
            env.idle().await;
        }
        let mut slots: Vec<Millis> = env
            .runs(&who, a.id)
            .await
            .iter()
            .filter_map(|r| r.scheduled_for)
            .collect();
        slots.sort();
        let want: Vec<Millis> = want.iter().map(|s| ms(s)).collect();
        assert_eq!(slots, want, "{from}");
    }
}

/// The background scheduler claims due slots by itself and renews its runs' leases, so
/// a long run is not taken over by another instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_started_scheduler_ticks_and_renews_the_leases_of_its_runs() {
    let config = adiuva_core::agents::AgentsConfig {
        // One tick at start, then none during the test: only the renewal works.
        tick: std::time::Duration::from_secs(3600),
        lease: std::time::Duration::from_millis(300),
        ..agents_config()
    };
    let env = Env::build(2, true, config).await;
    let who = env.user().await;
    register(env.apps[0].devices(), &who, "laptop").await;
    let token = env.token(&who).await;
    let a = env
        .agent(
            &who,
            AgentKind::Cloud,
            "inbox_triage",
            Some("0 * * * *"),
            "UTC",
            Some(token),
        )
        .await;
    env.provider.open.send_replace(false);
    env.clock.advance(3_600_000);
    let _task = env.apps[0].agents().start().await.expect("starts");
    eventually("the background tick claims the slot", || async {
        env.provider.read_count() == 1
    })
    .await;
    let first_lease = env.runs(&who, a.id).await[0].lease_until.expect("leased");
    // Past the first lease on the shared clock: the renewal (every 100 ms of real time)
    // moves it on, so the other instance finds nothing to take over.
    env.clock.advance(10_000);
    eventually("the lease is renewed", || async {
        env.runs(&who, a.id).await[0]
            .lease_until
            .is_some_and(|l| l > env.now())
    })
    .await;
    let report = env.apps[1].agents().tick().await.expect("tick");
    assert_eq!(report.taken_over, 0);
    assert!(env.runs(&who, a.id).await[0].lease_until > Some(first_lease));
    env.provider.open.send_replace(true);
    env.idle().await;
    let runs = env.runs(&who, a.id).await;
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0].status, RunStatus::Succeeded);
    assert_eq!(runs[0].attempts, 1);
}

/// An instance whose own run's lease lapsed (its renewal was late) takes it back
/// without executing it a second time.
#[tokio::test]
async fn a_run_whose_lease_lapsed_on_its_own_instance_is_not_executed_twice() {
    let env = Env::new(1).await;
    let who = env.user().await;
    register(env.apps[0].devices(), &who, "laptop").await;
    let token = env.token(&who).await;
    let a = env
        .agent(
            &who,
            AgentKind::Cloud,
            "inbox_triage",
            Some("0 * * * *"),
            "UTC",
            Some(token),
        )
        .await;
    env.provider.open.send_replace(false);
    env.clock.advance(3_600_000);
    assert_eq!(env.tick_all().await, (1, 0, 0));
    eventually("the run reads", || async { env.provider.read_count() == 1 }).await;
    env.clock.advance(601_000);
    assert_eq!(env.tick_all().await, (0, 0, 1));
    env.provider.open.send_replace(true);
    env.idle().await;
    assert_eq!(env.provider.read_count(), 1, "read once");
    let runs = env.runs(&who, a.id).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Succeeded);
    assert_eq!(env.queued(&who, "laptop").await.len(), 1);
}

/// A stored schedule that no longer parses runs its due slot once and no more; the
/// other agents of the tick run as usual.
#[tokio::test]
async fn a_broken_stored_schedule_runs_its_slot_once_and_stops_without_stopping_others() {
    let env = Env::new(1).await;
    let who = env.user().await;
    let mut broken = env
        .agent(
            &who,
            AgentKind::Local,
            "weekly_review",
            Some("0 * * * *"),
            "UTC",
            None,
        )
        .await;
    broken.schedule = Some("not a cron".into());
    env.db
        .update_agent(&broken, adiuva_core::ports::db::AgentLimits::default())
        .await
        .expect("update");
    let fine = env
        .agent(
            &who,
            AgentKind::Local,
            "weekly_review",
            Some("0 * * * *"),
            "UTC",
            None,
        )
        .await;
    env.clock.advance(3_600_000);
    assert_eq!(env.tick_all().await, (2, 0, 0));
    env.idle().await;
    let row = env
        .db
        .agent_by_id(broken.id)
        .await
        .expect("db")
        .expect("agent");
    assert_eq!(row.next_run_at, None);
    env.clock.advance(3_600_000);
    assert_eq!(env.tick_all().await, (1, 0, 0), "only the healthy agent");
    env.idle().await;
    assert_eq!(env.runs(&who, broken.id).await.len(), 1);
    assert_eq!(env.runs(&who, fine.id).await.len(), 2);
}
