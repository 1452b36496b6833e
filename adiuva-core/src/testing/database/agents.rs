//! The [`AgentRepo`](crate::ports::db::AgentRepo) checks of the [`Database`] suite:
//! configs and their tier limits, slots claimed once, run leases and take-overs, and
//! journey sessions. Run by [`super::run_all`].
//!
//! Three statements read the whole database rather than one user: `due_agents`,
//! `take_over_runs` and `delete_expired_journeys`. Each has one check that owns a window of
//! time no other check uses ([`due_agents_filter_order_and_limit`] below [`T`] for
//! `next_run_at`, [`take_over_hands_each_stale_run_to_one_caller`] below [`T`] for
//! `lease_until`, [`journeys_are_scoped_expire_and_update`] below [`T`] for `expires_at`),
//! so their counts are exact on a database the other checks share. Every other check keeps
//! its times at or above [`T`].
//!
//! Longer than the ~600-line rule for the parent's reason: test support, one flat list of
//! checks (one per rule of the contract) that reads best as that list.

use std::collections::BTreeSet;

use uuid::Uuid;

use super::{assert_conflict, assert_not_found, stored_user};
use crate::domain::UserId;
use crate::ports::Database;
use crate::ports::db::{
    AgentConfigRow, AgentKind, AgentLimits, AgentRun, AgentStatus, JourneyRow, RepoError,
    RunOutcome, RunStatus, RunTrigger, SlotClaim,
};

/// The start of the time every check but the three window owners uses.
const T: i64 = 1_000_000;
/// A lease or expiry no check reaches.
const FOREVER: i64 = 9_000_000_000_000;
/// No limits.
const UNLIMITED: AgentLimits = AgentLimits {
    configured: None,
    enabled: None,
    providers: None,
};

/// A disabled, unscheduled config of `kind` (cloud ones on `google` with a sealed token).
fn sample_agent(user: UserId, kind: AgentKind, at: i64) -> AgentConfigRow {
    let cloud = kind == AgentKind::Cloud;
    AgentConfigRow {
        id: Uuid::now_v7(),
        user_id: user,
        kind,
        name: format!("agent {at}"),
        agent_type: if cloud { "inbox_triage" } else { "daily_brief" }.into(),
        schedule: Some("0 8 * * 1-5".into()),
        timezone: "Europe/Berlin".into(),
        enabled: false,
        filters: serde_json::json!({"query": "is:unread", "labels": ["a", "b"], "max": 50}),
        output: serde_json::json!({}),
        prompt_template: "triage_v1".into(),
        provider: cloud.then(|| "google".into()),
        oauth_token_sealed: cloud.then(|| format!("sealed-{}", Uuid::new_v4().simple())),
        status: AgentStatus::Active,
        sync_cursor: None,
        next_run_at: None,
        created_at: at,
        updated_at: at,
    }
}

/// [`sample_agent`], changed by `edit`, inserted without limits.
async fn stored_agent(
    db: &dyn Database,
    user: UserId,
    kind: AgentKind,
    at: i64,
    edit: impl FnOnce(&mut AgentConfigRow),
) -> AgentConfigRow {
    let mut row = sample_agent(user, kind, at);
    edit(&mut row);
    db.insert_agent(&row, UNLIMITED)
        .await
        .expect("insert an agent");
    row
}

/// A run of `agent` in `status`: scheduled for `slot`, or manual without one.
fn sample_run(agent: &AgentConfigRow, status: RunStatus, slot: Option<i64>, at: i64) -> AgentRun {
    AgentRun {
        id: Uuid::now_v7(),
        user_id: agent.user_id,
        agent_id: agent.id,
        status,
        trigger: if slot.is_some() {
            RunTrigger::Schedule
        } else {
            RunTrigger::Manual
        },
        scheduled_for: slot,
        created_at: at,
        started_at: None,
        finished_at: None,
        items_read: 0,
        items_produced: 0,
        error: None,
        instance_id: None,
        lease_until: None,
        attempts: 1,
        device_id: None,
    }
}

/// [`sample_run`] leased until `lease_until` (queued, on no instance), inserted.
async fn stored_run(
    db: &dyn Database,
    agent: &AgentConfigRow,
    at: i64,
    lease_until: Option<i64>,
) -> AgentRun {
    let mut run = sample_run(agent, RunStatus::Queued, None, at);
    run.lease_until = lease_until;
    db.insert_run(&run).await.expect("insert a run");
    run
}

/// The claim of `agent`'s slot `slot` read as `expected`, moving on to `next`.
fn claim(agent: &AgentConfigRow, expected: i64, slot: i64, next: Option<i64>) -> SlotClaim {
    let mut run = sample_run(agent, RunStatus::Running, Some(slot), slot);
    run.instance_id = Some(Uuid::new_v4());
    run.lease_until = Some(FOREVER);
    run.started_at = Some(slot);
    SlotClaim {
        agent_id: agent.id,
        expected_next_run_at: expected,
        next_run_at: next,
        run,
    }
}

async fn get_agent(db: &dyn Database, row: &AgentConfigRow) -> AgentConfigRow {
    db.agent(row.user_id, row.id)
        .await
        .expect("get an agent")
        .expect("the agent exists")
}

async fn get_run(db: &dyn Database, run: &AgentRun) -> AgentRun {
    db.run(run.user_id, run.id)
        .await
        .expect("get a run")
        .expect("the run exists")
}

/// Asserts `result` is `Err(Conflict(name))`.
fn assert_limit<T: std::fmt::Debug>(result: Result<T, RepoError>, name: &str) {
    assert!(
        matches!(&result, Err(RepoError::Conflict(n)) if n == name),
        "Conflict({name}) expected: {result:?}"
    );
}

/// Configs round-trip whole, are found only by their owner, and list by kind, oldest
/// first; an unknown owner is NotFound and a duplicate id a Conflict.
pub async fn agents_insert_get_and_list_by_kind(db: &dyn Database) {
    let user = stored_user(db, "agents", 1).await;
    let other = stored_user(db, "agents-other", 1).await;
    let newer = stored_agent(db, user.id, AgentKind::Local, T + 20, |_| {}).await;
    let older = stored_agent(db, user.id, AgentKind::Local, T + 10, |a| {
        a.schedule = None;
        a.enabled = true;
        a.output = serde_json::json!({"device_id": "phone"});
        a.sync_cursor = Some("cursor-1".into());
        a.next_run_at = Some(T + 60_000);
        a.status = AgentStatus::NeedsReauth;
        a.filters = serde_json::json!({"nested": {"deep": [1, 2.5, null, true, "ü"]}});
    })
    .await;
    let cloud = stored_agent(db, user.id, AgentKind::Cloud, T + 5, |_| {}).await;
    let theirs = stored_agent(db, other.id, AgentKind::Local, T, |_| {}).await;

    assert_eq!(
        get_agent(db, &older).await,
        older,
        "every field round-trips"
    );
    assert_eq!(get_agent(db, &cloud).await, cloud);
    assert_eq!(
        db.agent_by_id(newer.id).await.expect("by id"),
        Some(newer.clone())
    );
    assert_eq!(
        db.agent(user.id, theirs.id).await.expect("get"),
        None,
        "another user's config is invisible"
    );
    assert_eq!(
        db.list_agents(user.id, AgentKind::Local)
            .await
            .expect("list"),
        vec![older.clone(), newer.clone()],
        "local configs, oldest first"
    );
    assert_eq!(
        db.list_agents(user.id, AgentKind::Cloud)
            .await
            .expect("list"),
        vec![cloud.clone()]
    );
    assert_eq!(
        db.list_agents(other.id, AgentKind::Cloud)
            .await
            .expect("list"),
        vec![]
    );
    assert_not_found(
        db.insert_agent(&sample_agent(UserId::new(), AgentKind::Local, T), UNLIMITED)
            .await,
        "an unknown owner",
    );
    let mut dup = sample_agent(user.id, AgentKind::Local, T);
    dup.id = newer.id;
    assert_conflict(db.insert_agent(&dup, UNLIMITED).await, "a duplicate id");
    assert_eq!(get_agent(db, &newer).await, newer, "the first stays");
}

/// Updates replace every field but id, owner, kind and creation; updates and deletes of
/// another user's config, or of the other kind, are NotFound; a delete takes the runs.
pub async fn agents_update_and_delete_are_scoped(db: &dyn Database) {
    let user = stored_user(db, "agentupd", 1).await;
    let other = stored_user(db, "agentupd-other", 1).await;
    let row = stored_agent(db, user.id, AgentKind::Cloud, T, |_| {}).await;

    let mut changed = row.clone();
    changed.name = "renamed".into();
    changed.agent_type = "meeting_prep".into();
    changed.schedule = None;
    changed.timezone = "UTC".into();
    changed.enabled = true;
    changed.filters = serde_json::json!({"channel": "general"});
    changed.output = serde_json::json!({"device_id": "laptop"});
    changed.prompt_template = "prep_v2".into();
    changed.provider = Some("microsoft".into());
    changed.oauth_token_sealed = Some("sealed-new".into());
    changed.status = AgentStatus::NeedsReauth;
    changed.sync_cursor = Some("42".into());
    changed.next_run_at = Some(T + 1_000);
    changed.updated_at = T + 50;
    let mut sent = changed.clone();
    sent.created_at = T + 999;
    db.update_agent(&sent, UNLIMITED).await.expect("update");
    assert_eq!(
        get_agent(db, &row).await,
        changed,
        "all fields but the creation time are replaced"
    );

    let mut theirs = changed.clone();
    theirs.user_id = other.id;
    theirs.name = "hijacked".into();
    assert_not_found(
        db.update_agent(&theirs, UNLIMITED).await,
        "another user's update",
    );
    let mut wrong_kind = changed.clone();
    wrong_kind.kind = AgentKind::Local;
    wrong_kind.name = "wrong kind".into();
    assert_not_found(
        db.update_agent(&wrong_kind, UNLIMITED).await,
        "an update of the other kind",
    );
    let mut ghost = changed.clone();
    ghost.id = Uuid::now_v7();
    assert_not_found(db.update_agent(&ghost, UNLIMITED).await, "an unknown id");
    assert_eq!(
        get_agent(db, &row).await,
        changed,
        "refused updates change nothing"
    );

    let run = stored_run(db, &row, T, Some(FOREVER)).await;
    let slot = claim(&changed, T + 1_000, T + 1_000, None);
    assert!(db.claim_slot(&slot).await.expect("claim").is_some());
    assert_not_found(
        db.delete_agent(other.id, AgentKind::Cloud, row.id).await,
        "another user's delete",
    );
    assert_not_found(
        db.delete_agent(user.id, AgentKind::Local, row.id).await,
        "a delete of the other kind",
    );
    db.delete_agent(user.id, AgentKind::Cloud, row.id)
        .await
        .expect("delete");
    assert_eq!(db.agent_by_id(row.id).await.expect("get"), None);
    assert_eq!(
        db.run(user.id, run.id).await.expect("run"),
        None,
        "runs go too"
    );
    assert_eq!(
        db.runs_for_slot(row.id, T + 1_000).await.expect("slot"),
        vec![]
    );
    assert_eq!(
        db.list_runs(user.id, None, 0, 10).await.expect("list"),
        vec![]
    );
    assert_not_found(
        db.delete_agent(user.id, AgentKind::Cloud, row.id).await,
        "deleted already",
    );
}

/// Each limit refuses the insert or update that would break it, naming it and writing
/// nothing; a write that does not grow a count over a lowered limit passes.
pub async fn agents_limits_on_insert_and_update(db: &dyn Database) {
    let user = stored_user(db, "agentlim", 1).await;
    let configured = AgentLimits {
        configured: Some(2),
        ..UNLIMITED
    };
    let a = sample_agent(user.id, AgentKind::Local, T);
    db.insert_agent(&a, configured).await.expect("1 of 2");
    let b = sample_agent(user.id, AgentKind::Cloud, T + 1);
    db.insert_agent(&b, configured).await.expect("2 of 2");
    let c = sample_agent(user.id, AgentKind::Local, T + 2);
    assert_limit(db.insert_agent(&c, configured).await, "agents.limit");
    assert_eq!(
        db.agent_by_id(c.id).await.expect("get"),
        None,
        "not written"
    );

    // Enabled agents (batch_active).
    let enabled = AgentLimits {
        enabled: Some(1),
        ..UNLIMITED
    };
    let mut on = a.clone();
    on.enabled = true;
    on.updated_at = T + 10;
    db.update_agent(&on, enabled).await.expect("1 of 1 enabled");
    let mut also_on = b.clone();
    also_on.enabled = true;
    also_on.name = "changed too".into();
    assert_limit(
        db.update_agent(&also_on, enabled).await,
        "batch_active.limit",
    );
    assert_eq!(
        get_agent(db, &b).await,
        b,
        "a refused update changes nothing"
    );
    let mut new_on = sample_agent(user.id, AgentKind::Local, T + 3);
    new_on.enabled = true;
    assert_limit(
        db.insert_agent(&new_on, enabled).await,
        "batch_active.limit",
    );
    new_on.enabled = false;
    db.insert_agent(&new_on, enabled)
        .await
        .expect("a disabled agent does not count as enabled");

    // Distinct providers among cloud agents.
    let providers = AgentLimits {
        providers: Some(1),
        ..UNLIMITED
    };
    let google2 = sample_agent(user.id, AgentKind::Cloud, T + 4);
    db.insert_agent(&google2, providers)
        .await
        .expect("a second google agent is the same provider");
    let mut ms = sample_agent(user.id, AgentKind::Cloud, T + 5);
    ms.provider = Some("microsoft".into());
    assert_limit(db.insert_agent(&ms, providers).await, "providers.limit");
    let mut moved = google2.clone();
    moved.provider = Some("microsoft".into());
    assert_limit(db.update_agent(&moved, providers).await, "providers.limit");
    let mut two = providers;
    two.providers = Some(2);
    db.update_agent(&moved, two)
        .await
        .expect("2 of 2 providers");

    // Over lowered limits (4 configured, 1 enabled, 2 providers): edits that do not grow
    // a count pass, and so does disabling.
    let lowered = AgentLimits {
        configured: Some(1),
        enabled: Some(0),
        providers: Some(1),
    };
    let mut renamed = moved.clone();
    renamed.name = "renamed".into();
    db.update_agent(&renamed, lowered)
        .await
        .expect("an edit over lowered limits");
    let mut off = on.clone();
    off.enabled = false;
    db.update_agent(&off, lowered).await.expect("disabling");
    assert!(!get_agent(db, &a).await.enabled);
    assert_limit(
        db.insert_agent(&sample_agent(user.id, AgentKind::Local, T + 6), lowered)
            .await,
        "agents.limit",
    );
    assert_eq!(
        db.list_agents(user.id, AgentKind::Local)
            .await
            .expect("list")
            .len()
            + db.list_agents(user.id, AgentKind::Cloud)
                .await
                .expect("list")
                .len(),
        4
    );
}

/// Concurrent inserts at a limit of 3 (and concurrent enables at a limit of 2): exactly
/// that many succeed, the rest are refused.
pub async fn agents_limits_hold_under_concurrency(db: &dyn Database) {
    let user = stored_user(db, "agentrace", 1).await;
    let rows: Vec<AgentConfigRow> = (0..10)
        .map(|i| sample_agent(user.id, AgentKind::Local, T + i))
        .collect();
    let limits = AgentLimits {
        configured: Some(3),
        ..UNLIMITED
    };
    let results = futures::future::join_all(rows.iter().map(|r| db.insert_agent(r, limits))).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(RepoError::Conflict(n)) if n == "agents.limit"))
        .count();
    assert_eq!((ok, refused), (3, 7), "three of ten fit: {results:?}");
    let stored = db
        .list_agents(user.id, AgentKind::Local)
        .await
        .expect("list");
    assert_eq!(stored.len(), 3);

    let enable: Vec<AgentConfigRow> = stored
        .iter()
        .map(|a| AgentConfigRow {
            enabled: true,
            ..a.clone()
        })
        .collect();
    let limits = AgentLimits {
        enabled: Some(2),
        ..UNLIMITED
    };
    let results =
        futures::future::join_all(enable.iter().map(|r| db.update_agent(r, limits))).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        2,
        "two of three enables fit: {results:?}"
    );
    let now_enabled = db
        .list_agents(user.id, AgentKind::Local)
        .await
        .expect("list")
        .iter()
        .filter(|a| a.enabled)
        .count();
    assert_eq!(now_enabled, 2);
}

/// Tokens are set per config and replaced per user by their old value; cursors are set
/// and cleared; an unknown config is NotFound.
pub async fn agents_tokens_and_cursors(db: &dyn Database) {
    let user = stored_user(db, "agenttok", 1).await;
    let other = stored_user(db, "agenttok-other", 1).await;
    let shared = |a: &mut AgentConfigRow| a.oauth_token_sealed = Some("sealed-old".into());
    let a = stored_agent(db, user.id, AgentKind::Cloud, T, shared).await;
    let b = stored_agent(db, user.id, AgentKind::Cloud, T + 1, shared).await;
    let c = stored_agent(db, user.id, AgentKind::Cloud, T + 2, |_| {}).await;
    let theirs = stored_agent(db, other.id, AgentKind::Cloud, T, shared).await;

    assert_eq!(
        db.replace_agent_tokens(user.id, "sealed-old", "sealed-new", T + 10)
            .await
            .expect("replace"),
        2
    );
    for row in [&a, &b] {
        let got = get_agent(db, row).await;
        assert_eq!(
            (got.oauth_token_sealed.as_deref(), got.updated_at),
            (Some("sealed-new"), T + 10)
        );
    }
    assert_eq!(get_agent(db, &c).await, c, "another token is untouched");
    assert_eq!(
        get_agent(db, &theirs).await,
        theirs,
        "another user's is untouched"
    );
    assert_eq!(
        db.replace_agent_tokens(user.id, "sealed-old", "x", T + 11)
            .await
            .expect("replace"),
        0
    );

    db.set_agent_token(c.id, "sealed-rotated", T + 20)
        .await
        .expect("set");
    let got = get_agent(db, &c).await;
    assert_eq!(
        (got.oauth_token_sealed.as_deref(), got.updated_at),
        (Some("sealed-rotated"), T + 20)
    );
    db.set_agent_cursor(c.id, Some("history-9"), T + 30)
        .await
        .expect("cursor");
    let got = get_agent(db, &c).await;
    assert_eq!(
        (got.sync_cursor.as_deref(), got.updated_at),
        (Some("history-9"), T + 30)
    );
    db.set_agent_cursor(c.id, None, T + 31)
        .await
        .expect("clear");
    assert_eq!(get_agent(db, &c).await.sync_cursor, None);

    let ghost = Uuid::now_v7();
    assert_not_found(db.set_agent_token(ghost, "s", T).await, "token of a ghost");
    assert_not_found(
        db.set_agent_cursor(ghost, Some("c"), T).await,
        "cursor of a ghost",
    );
    assert_not_found(db.pause_agent_for_reauth(ghost, T).await, "pause a ghost");
}

/// `due_agents` returns enabled, active configs due at `now`, earliest first, at most
/// `limit`; a config paused for re-authorisation loses its slot and is not due. Owns the
/// `next_run_at` window below [`T`].
pub async fn due_agents_filter_order_and_limit(db: &dyn Database) {
    let user = stored_user(db, "agentdue", 1).await;
    let due = |next: Option<i64>, enabled: bool, status: AgentStatus| {
        move |a: &mut AgentConfigRow| {
            a.next_run_at = next;
            a.enabled = enabled;
            a.status = status;
        }
    };
    let active = AgentStatus::Active;
    let a = stored_agent(
        db,
        user.id,
        AgentKind::Local,
        1,
        due(Some(30), true, active),
    )
    .await;
    let b = stored_agent(
        db,
        user.id,
        AgentKind::Cloud,
        2,
        due(Some(10), true, active),
    )
    .await;
    let c = stored_agent(
        db,
        user.id,
        AgentKind::Local,
        3,
        due(Some(20), true, active),
    )
    .await;
    let d = stored_agent(
        db,
        user.id,
        AgentKind::Local,
        4,
        due(Some(100), true, active),
    )
    .await;
    let paused = stored_agent(
        db,
        user.id,
        AgentKind::Cloud,
        5,
        due(Some(15), true, active),
    )
    .await;
    stored_agent(
        db,
        user.id,
        AgentKind::Local,
        6,
        due(Some(101), true, active),
    )
    .await;
    stored_agent(
        db,
        user.id,
        AgentKind::Local,
        7,
        due(Some(5), false, active),
    )
    .await;
    let reauth = AgentStatus::NeedsReauth;
    stored_agent(db, user.id, AgentKind::Cloud, 8, due(Some(5), true, reauth)).await;
    stored_agent(db, user.id, AgentKind::Local, 9, due(None, true, active)).await;

    let ids = |rows: Vec<AgentConfigRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(db.due_agents(100, 50).await.expect("due")),
        vec![b.id, paused.id, c.id, a.id, d.id],
        "enabled, active, next_run_at <= now, earliest first"
    );
    assert_eq!(
        ids(db.due_agents(100, 2).await.expect("due")),
        vec![b.id, paused.id]
    );
    assert_eq!(db.due_agents(9, 50).await.expect("due"), vec![]);

    db.pause_agent_for_reauth(paused.id, 60)
        .await
        .expect("pause");
    let got = get_agent(db, &paused).await;
    assert_eq!(
        (got.status, got.next_run_at, got.updated_at),
        (AgentStatus::NeedsReauth, None, 60)
    );
    assert_eq!(
        ids(db.due_agents(100, 50).await.expect("due")),
        vec![b.id, c.id, a.id, d.id],
        "a paused config is not due"
    );
    let whole = db.due_agents(10, 1).await.expect("due");
    assert_eq!(whole, vec![b.clone()], "due configs come whole");
    // Leave the window empty for any later run over this database.
    db.delete_user(user.id).await.expect("delete user");
    assert_eq!(db.due_agents(T - 1, 50).await.expect("due"), vec![]);
}

/// A claim is a compare-and-swap of `next_run_at` plus the slot's run: a stale expected
/// value, a slot already run, or an unknown agent claims nothing and changes nothing.
pub async fn claim_slot_is_compare_and_swap(db: &dyn Database) {
    let user = stored_user(db, "agentclaim", 1).await;
    let agent = stored_agent(db, user.id, AgentKind::Cloud, T, |a| {
        a.enabled = true;
        a.next_run_at = Some(T + 60_000);
    })
    .await;
    let first = claim(&agent, T + 60_000, T + 60_000, Some(T + 120_000));
    assert_eq!(
        db.claim_slot(&first).await.expect("claim"),
        Some(first.run.clone()),
        "the winner gets its run back"
    );
    let got = get_agent(db, &agent).await;
    assert_eq!(got.next_run_at, Some(T + 120_000), "moved to the next slot");
    assert_eq!(
        get_run(db, &first.run).await,
        first.run,
        "the run round-trips"
    );
    assert_eq!(
        db.runs_for_slot(agent.id, T + 60_000).await.expect("slot"),
        vec![first.run.clone()]
    );

    let stale = claim(&agent, T + 60_000, T + 60_000, Some(T + 120_000));
    assert_eq!(db.claim_slot(&stale).await.expect("claim"), None, "stale");
    // The expected value matches but the slot already ran: nothing is written, not even
    // the move of next_run_at (one transaction).
    let again = claim(&agent, T + 120_000, T + 60_000, Some(T + 999_000));
    assert_eq!(
        db.claim_slot(&again).await.expect("claim"),
        None,
        "slot ran"
    );
    assert_eq!(
        get_agent(db, &agent).await.next_run_at,
        Some(T + 120_000),
        "rolled back"
    );
    assert_eq!(db.run(user.id, again.run.id).await.expect("run"), None);

    let mut foreign = claim(&agent, T + 120_000, T + 120_000, Some(T + 999_000));
    foreign.run.user_id = UserId::new();
    assert_eq!(
        db.claim_slot(&foreign).await.expect("claim"),
        None,
        "a run of another owner"
    );
    assert_eq!(get_agent(db, &agent).await.next_run_at, Some(T + 120_000));

    let mut ghost = claim(&agent, T + 120_000, T + 120_000, None);
    ghost.agent_id = Uuid::now_v7();
    ghost.run.agent_id = ghost.agent_id;
    assert_eq!(db.claim_slot(&ghost).await.expect("claim"), None, "unknown");

    // A skipped slot is a run too, and the last slot clears next_run_at.
    let mut last = claim(&agent, T + 120_000, T + 120_000, None);
    last.run.status = RunStatus::Skipped;
    last.run.error = Some("the previous run is still active".into());
    last.run.instance_id = None;
    last.run.lease_until = None;
    last.run.started_at = None;
    last.run.finished_at = Some(T + 120_000);
    assert_eq!(
        db.claim_slot(&last).await.expect("claim"),
        Some(last.run.clone())
    );
    assert_eq!(get_agent(db, &agent).await.next_run_at, None);
    assert_eq!(get_run(db, &last.run).await, last.run);
}

/// Ten concurrent claims of one slot: exactly one wins, and the slot has one run.
pub async fn claim_slot_concurrent_claims_one_wins(db: &dyn Database) {
    let user = stored_user(db, "agentclaimrace", 1).await;
    let agent = stored_agent(db, user.id, AgentKind::Cloud, T, |a| {
        a.enabled = true;
        a.next_run_at = Some(T + 60_000);
    })
    .await;
    let claims: Vec<SlotClaim> = (0..10)
        .map(|_| claim(&agent, T + 60_000, T + 60_000, Some(T + 120_000)))
        .collect();
    let results = futures::future::join_all(claims.iter().map(|c| db.claim_slot(c))).await;
    let won: Vec<&AgentRun> = results
        .iter()
        .filter_map(|r| r.as_ref().expect("a claim answers").as_ref())
        .collect();
    assert_eq!(won.len(), 1, "exactly one claim wins: {results:?}");
    assert_eq!(
        db.runs_for_slot(agent.id, T + 60_000).await.expect("slot"),
        vec![won[0].clone()]
    );
    assert_eq!(get_agent(db, &agent).await.next_run_at, Some(T + 120_000));
}

/// Manual runs need their agent and are not bound by the slot constraint; scheduled runs
/// are, once per slot. Active runs hold their agent until their lease passes; starting
/// moves an active run to Running on an instance (or none); renewals reach only this
/// instance's active runs.
pub async fn runs_insert_start_and_renew(db: &dyn Database) {
    let user = stored_user(db, "agentruns", 1).await;
    let agent = stored_agent(db, user.id, AgentKind::Local, T, |_| {}).await;
    let ghost = sample_agent(user.id, AgentKind::Local, T);
    assert_not_found(
        db.insert_run(&sample_run(&ghost, RunStatus::Queued, None, T))
            .await,
        "a run of an unknown agent",
    );
    let queued = stored_run(db, &agent, T, Some(T + 100)).await;
    let second = stored_run(db, &agent, T + 1, Some(T + 100)).await;
    assert_eq!(get_run(db, &queued).await, queued, "the run round-trips");
    let scheduled = sample_run(&agent, RunStatus::Skipped, Some(T + 5), T + 5);
    db.insert_run(&scheduled).await.expect("a scheduled run");
    assert_conflict(
        db.insert_run(&sample_run(&agent, RunStatus::Queued, Some(T + 5), T + 6))
            .await,
        "a second run of one slot",
    );
    assert_conflict(db.insert_run(&queued).await, "a duplicate run id");

    assert_eq!(
        db.active_runs(agent.id, T + 100).await.expect("active"),
        vec![queued.clone(), second.clone()],
        "queued runs hold the agent until their lease passes"
    );
    assert_eq!(
        db.active_runs(agent.id, T + 101).await.expect("active"),
        vec![],
        "a passed lease does not hold it"
    );

    let here = Uuid::new_v4();
    assert!(
        db.start_run(queued.id, Some(here), T + 500, Some("phone"), T + 10)
            .await
            .expect("start")
    );
    let got = get_run(db, &queued).await;
    assert_eq!(
        (
            got.status,
            got.instance_id,
            got.lease_until,
            got.started_at,
            got.device_id.as_deref()
        ),
        (
            RunStatus::Running,
            Some(here),
            Some(T + 500),
            Some(T + 10),
            Some("phone")
        )
    );
    // Again (a local run moving to waiting for its device): started_at and the device stay.
    assert!(
        db.start_run(queued.id, None, T + 600, None, T + 20)
            .await
            .expect("start")
    );
    let got = get_run(db, &queued).await;
    assert_eq!(
        (
            got.instance_id,
            got.lease_until,
            got.started_at,
            got.device_id.as_deref()
        ),
        (None, Some(T + 600), Some(T + 10), Some("phone"))
    );
    assert!(
        !db.start_run(scheduled.id, Some(here), T + 500, None, T)
            .await
            .expect("start"),
        "a finished run does not start"
    );
    assert!(
        !db.start_run(Uuid::now_v7(), Some(here), T + 500, None, T)
            .await
            .expect("start"),
        "an unknown run does not start"
    );

    // Renewals: this instance's two active runs, not another's, not a finished one.
    let there = Uuid::new_v4();
    db.start_run(queued.id, Some(here), T + 500, None, T + 30)
        .await
        .expect("start");
    db.start_run(second.id, Some(here), T + 500, None, T + 30)
        .await
        .expect("start");
    let elsewhere = stored_run(db, &agent, T + 2, Some(T + 500)).await;
    db.start_run(elsewhere.id, Some(there), T + 500, None, T + 30)
        .await
        .expect("start");
    let done = stored_run(db, &agent, T + 3, Some(T + 500)).await;
    db.start_run(done.id, Some(here), T + 500, None, T + 30)
        .await
        .expect("start");
    let outcome = RunOutcome {
        status: RunStatus::Succeeded,
        items_read: 1,
        items_produced: 1,
        error: None,
        finished_at: T + 40,
    };
    assert!(db.finish_run(done.id, &outcome).await.expect("finish"));
    assert_eq!(db.renew_leases(here, T + 9_000).await.expect("renew"), 2);
    assert_eq!(get_run(db, &queued).await.lease_until, Some(T + 9_000));
    assert_eq!(get_run(db, &second).await.lease_until, Some(T + 9_000));
    assert_eq!(get_run(db, &elsewhere).await.lease_until, Some(T + 500));
    assert_eq!(get_run(db, &done).await.lease_until, None);
    assert_eq!(
        db.renew_leases(Uuid::new_v4(), T + 9_000)
            .await
            .expect("renew"),
        0
    );
    // Park the runs beyond every lease window.
    for id in [queued.id, second.id, elsewhere.id] {
        db.start_run(id, Some(there), FOREVER, None, T + 50)
            .await
            .expect("park");
    }
}

/// Runs whose lease passed are taken over: each by exactly one of several concurrent
/// callers, on its instance, with one more attempt; fresh, unleased and finished runs
/// stay. Owns the `lease_until` window below [`T`].
pub async fn take_over_hands_each_stale_run_to_one_caller(db: &dyn Database) {
    let user = stored_user(db, "agenttake", 1).await;
    let agent = stored_agent(db, user.id, AgentKind::Cloud, T, |_| {}).await;
    let mut stale = BTreeSet::new();
    for i in 0..7 {
        let run = stored_run(db, &agent, T + i, Some(10 + i)).await;
        if i % 2 == 0 {
            db.start_run(run.id, Some(Uuid::new_v4()), 10 + i, None, T)
                .await
                .expect("start");
        }
        stale.insert(run.id);
    }
    let fresh = stored_run(db, &agent, T + 10, Some(5_000)).await;
    let unleased = stored_run(db, &agent, T + 11, None).await;
    let finished = stored_run(db, &agent, T + 12, Some(20)).await;
    let outcome = RunOutcome {
        status: RunStatus::Failed,
        items_read: 0,
        items_produced: 0,
        error: Some("the provider timed out".into()),
        finished_at: T + 13,
    };
    assert!(db.finish_run(finished.id, &outcome).await.expect("finish"));

    let first = Uuid::new_v4();
    let taken = db
        .take_over_runs(1_000, first, FOREVER, 2)
        .await
        .expect("take");
    assert_eq!(taken.len(), 2, "at most the limit");
    for run in &taken {
        assert_eq!(
            (run.status, run.instance_id, run.lease_until, run.attempts),
            (RunStatus::Running, Some(first), Some(FOREVER), 2)
        );
        assert_eq!(&get_run(db, run).await, run, "returned as stored");
    }

    let instances: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let results = futures::future::join_all(
        instances
            .iter()
            .map(|i| db.take_over_runs(1_000, *i, FOREVER, 2)),
    )
    .await;
    let mut all: Vec<AgentRun> = taken;
    for (instance, result) in instances.iter().zip(results) {
        let got = result.expect("take");
        assert!(got.len() <= 2, "at most the limit per caller");
        for run in &got {
            assert_eq!(run.instance_id, Some(*instance));
            assert_eq!(run.attempts, 2, "one more attempt");
        }
        all.extend(got);
    }
    all.extend(
        db.take_over_runs(1_000, Uuid::new_v4(), FOREVER, 100)
            .await
            .expect("take the rest"),
    );
    let ids: Vec<Uuid> = all.iter().map(|r| r.id).collect();
    let unique: BTreeSet<Uuid> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "no run handed out twice: {ids:?}");
    assert_eq!(unique, stale, "exactly the runs whose lease passed");
    assert_eq!(
        db.take_over_runs(1_000, Uuid::new_v4(), FOREVER, 100)
            .await
            .expect("take"),
        vec![],
        "nothing left"
    );
    assert_eq!(get_run(db, &fresh).await.lease_until, Some(5_000));
    assert_eq!(get_run(db, &unleased).await.status, RunStatus::Queued);
    assert_eq!(get_run(db, &finished).await.status, RunStatus::Failed);
    // Leave the window empty for any later run over this database.
    db.start_run(fresh.id, None, FOREVER, None, T)
        .await
        .expect("park");
}

/// Finishing is conditional: the first finish of an active run wins, a second (another
/// instance's) is false and changes nothing.
pub async fn finish_run_once(db: &dyn Database) {
    let user = stored_user(db, "agentfinish", 1).await;
    let agent = stored_agent(db, user.id, AgentKind::Cloud, T, |_| {}).await;
    let run = stored_run(db, &agent, T, Some(FOREVER)).await;
    let here = Uuid::new_v4();
    db.start_run(run.id, Some(here), FOREVER, None, T + 1)
        .await
        .expect("start");
    let outcome = RunOutcome {
        status: RunStatus::NeedsReauth,
        items_read: 12,
        items_produced: 3,
        error: Some("the provider refused the token".into()),
        finished_at: T + 9,
    };
    assert!(db.finish_run(run.id, &outcome).await.expect("finish"));
    let got = get_run(db, &run).await;
    assert_eq!(
        (
            got.status,
            got.items_read,
            got.items_produced,
            got.error.as_deref(),
            got.finished_at,
            got.instance_id,
            got.lease_until,
            got.started_at
        ),
        (
            RunStatus::NeedsReauth,
            12,
            3,
            Some("the provider refused the token"),
            Some(T + 9),
            None,
            None,
            Some(T + 1)
        )
    );
    let late = RunOutcome {
        status: RunStatus::Succeeded,
        items_read: 1,
        items_produced: 1,
        error: None,
        finished_at: T + 20,
    };
    assert!(
        !db.finish_run(run.id, &late).await.expect("finish"),
        "finished already"
    );
    assert_eq!(
        get_run(db, &run).await,
        got,
        "a late finish changes nothing"
    );
    assert!(
        !db.finish_run(Uuid::now_v7(), &late).await.expect("finish"),
        "an unknown run"
    );
    assert_eq!(db.active_runs(agent.id, T).await.expect("active"), vec![]);
}

/// Runs list newest first (then by id), paged, per user, of one agent or all.
pub async fn runs_list_newest_first_paged_and_scoped(db: &dyn Database) {
    let user = stored_user(db, "agentlist", 1).await;
    let other = stored_user(db, "agentlist-other", 1).await;
    let a = stored_agent(db, user.id, AgentKind::Local, T, |_| {}).await;
    let b = stored_agent(db, user.id, AgentKind::Cloud, T, |_| {}).await;
    let theirs = stored_agent(db, other.id, AgentKind::Local, T, |_| {}).await;
    let mut runs = Vec::new();
    for (agent, at) in [
        (&a, T + 1),
        (&b, T + 2),
        (&a, T + 3),
        (&b, T + 3),
        (&a, T + 5),
    ] {
        let mut run = sample_run(agent, RunStatus::Succeeded, None, at);
        run.finished_at = Some(at + 1);
        run.items_read = 4;
        db.insert_run(&run).await.expect("insert");
        runs.push(run);
    }
    let their_run = stored_run(db, &theirs, T + 4, None).await;
    let mut newest = runs.clone();
    newest.sort_by_key(|r| std::cmp::Reverse((r.created_at, r.id)));

    assert_eq!(
        db.list_runs(user.id, None, 0, 10).await.expect("list"),
        newest,
        "newest first, ties by id"
    );
    assert_eq!(
        db.list_runs(user.id, None, 2, 2).await.expect("page"),
        newest[2..4].to_vec()
    );
    assert_eq!(
        db.list_runs(user.id, None, 5, 2).await.expect("page"),
        vec![]
    );
    let of_a: Vec<AgentRun> = newest
        .iter()
        .filter(|r| r.agent_id == a.id)
        .cloned()
        .collect();
    assert_eq!(
        db.list_runs(user.id, Some(a.id), 0, 10)
            .await
            .expect("list"),
        of_a
    );
    assert_eq!(
        db.list_runs(user.id, Some(theirs.id), 0, 10)
            .await
            .expect("list"),
        vec![],
        "another user's agent lists nothing"
    );
    assert_eq!(
        db.list_runs(other.id, None, 0, 10).await.expect("list"),
        vec![their_run.clone()]
    );
    assert_eq!(db.run(other.id, runs[0].id).await.expect("run"), None);
    assert_eq!(db.run(user.id, their_run.id).await.expect("run"), None);
    assert_eq!(db.runs_for_slot(a.id, T).await.expect("slot"), vec![]);
}

fn sample_journey(user: UserId, created_at: i64, expires_at: i64) -> JourneyRow {
    JourneyRow {
        id: Uuid::now_v7(),
        user_id: user,
        agent_type: "inbox_triage".into(),
        state_sealed: format!("sealed-{}", Uuid::new_v4().simple()),
        done: false,
        created_at,
        expires_at,
    }
}

/// Journey sessions are their owner's, live until `expires_at`, updated in place, and
/// swept once expired. Owns the `expires_at` window below [`T`].
pub async fn journeys_are_scoped_expire_and_update(db: &dyn Database) {
    let user = stored_user(db, "agentjourney", 1).await;
    let other = stored_user(db, "agentjourney-other", 1).await;
    let live = sample_journey(user.id, 1, 500);
    let old = sample_journey(user.id, 1, 100);
    let older = sample_journey(other.id, 1, 50);
    for j in [&live, &old, &older] {
        db.insert_journey(j).await.expect("insert");
    }
    assert_not_found(
        db.insert_journey(&sample_journey(UserId::new(), 1, 500))
            .await,
        "an unknown owner",
    );
    assert_conflict(db.insert_journey(&live).await, "a duplicate id");

    assert_eq!(
        db.journey(user.id, live.id, 499).await.expect("get"),
        Some(live.clone())
    );
    assert_eq!(
        db.journey(user.id, live.id, 500).await.expect("get"),
        None,
        "gone at expires_at"
    );
    assert_eq!(
        db.journey(other.id, live.id, 1).await.expect("get"),
        None,
        "another user's"
    );

    db.update_journey(user.id, live.id, "sealed-2", true, 900)
        .await
        .expect("update");
    let got = db
        .journey(user.id, live.id, 600)
        .await
        .expect("get")
        .expect("extended");
    assert_eq!(
        (
            got.state_sealed.as_str(),
            got.done,
            got.expires_at,
            got.created_at
        ),
        ("sealed-2", true, 900, 1)
    );
    assert_not_found(
        db.update_journey(other.id, live.id, "x", false, 900).await,
        "another user's update",
    );
    assert_not_found(
        db.update_journey(user.id, Uuid::now_v7(), "x", false, 900)
            .await,
        "an unknown session",
    );

    assert_eq!(
        db.delete_expired_journeys(100).await.expect("sweep"),
        2,
        "expired at 100: old and older"
    );
    assert_eq!(db.journey(user.id, old.id, 0).await.expect("get"), None);
    assert_eq!(
        db.journey(user.id, live.id, 0).await.expect("get"),
        Some(got.clone())
    );
    assert_eq!(db.delete_expired_journeys(100).await.expect("sweep"), 0);
    // Leave the window empty for any later run over this database.
    db.delete_user(user.id).await.expect("delete user");
    assert_eq!(db.delete_expired_journeys(T - 1).await.expect("sweep"), 0);
}

/// A deleted user takes their configs, runs and journey sessions.
pub async fn agents_go_with_their_user(db: &dyn Database) {
    let user = stored_user(db, "agentgone", 1).await;
    let other = stored_user(db, "agentgone-other", 1).await;
    let agent = stored_agent(db, user.id, AgentKind::Cloud, T, |_| {}).await;
    let run = stored_run(db, &agent, T, None).await;
    let journey = sample_journey(user.id, T, FOREVER);
    db.insert_journey(&journey).await.expect("journey");
    let kept = stored_agent(db, other.id, AgentKind::Cloud, T, |_| {}).await;
    let kept_run = stored_run(db, &kept, T, None).await;

    db.delete_user(user.id).await.expect("delete user");
    assert_eq!(db.agent_by_id(agent.id).await.expect("get"), None);
    assert_eq!(db.run(user.id, run.id).await.expect("run"), None);
    assert_eq!(
        db.list_runs(user.id, None, 0, 10).await.expect("list"),
        vec![]
    );
    assert_eq!(
        db.journey(user.id, journey.id, T).await.expect("journey"),
        None
    );
    assert_eq!(get_agent(db, &kept).await, kept, "other users keep theirs");
    assert_eq!(get_run(db, &kept_run).await, kept_run);
}
