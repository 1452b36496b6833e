//! The SQL repositories, written once for every dialect.
//!
//! Each statement is one text for SQLite and PostgreSQL: placeholders are `$N`, which
//! sqlx's SQLite driver binds to the N-th argument as PostgreSQL does; sums are
//! `CAST(… AS BIGINT)` (PostgreSQL's `SUM` of a `BIGINT` is `NUMERIC`). What truly differs
//! lives in each dialect's `dialect` module, and only that:
//!
//! - `type Db` — the sqlx database;
//! - `fn id(Uuid)` — how an id is bound (TEXT on SQLite, UUID on PostgreSQL);
//! - `fn list(&[T])` — how a list is bound (one JSON array on SQLite, an array on PostgreSQL),
//!   and the three vector statements that take lists (`VECTOR_SIZES`, `DELETE_VECTORS`,
//!   `UPSERT_VECTORS`);
//! - `BEGIN_QUOTA` and `LOCK_USER` — how a quota-checked write serialises with the user's
//!   other writes: SQLite's `BEGIN IMMEDIATE` takes its single write lock before the first
//!   read; PostgreSQL locks the owner's `users` row (`FOR UPDATE`), so other users are not
//!   blocked. Under that lock the write reads the sums, core's [`adiuva_core::quota`]
//!   decides, and the write follows in the same transaction.
//!
//! The devices repository (`devices`) reuses that lock for a hello's device limit, and
//! `BEGIN_QUOTA` for its queue writes, which lock the device's row before its queue rows.
//! The agents repository (`agents`) reuses it for the tier limits of config writes, and
//! takes stale runs over with the dialect's `TAKE_OVER_RUNS` (PostgreSQL skips the rows
//! another instance is taking, so no run goes to two).
//!
//! A dialect invokes [`impl_repos!`] once with its database type and its `dialect` module.

mod agents;
mod devices;
mod storage;
mod users;
mod vectors;

pub(crate) use agents::impl_agent_repos;
pub(crate) use devices::impl_device_repos;
pub(crate) use storage::impl_storage_repos;
pub(crate) use users::impl_user_repos;
pub(crate) use vectors::impl_vector_repos;

/// Implements every repository of the `Database` port for `$db` (which has `pool()`),
/// with `$d` the dialect module described above.
macro_rules! impl_repos {
    ($db:ty, $d:ident) => {
        impl $db {
            /// Starts a transaction holding the user's quota lock (see the module docs of
            /// `repos`). A missing user is `NotFound`.
            async fn quota_tx(
                &self,
                user: adiuva_core::domain::UserId,
            ) -> adiuva_core::ports::db::RepoResult<sqlx::Transaction<'static, $d::Db>> {
                use crate::rows::repo_err;
                let mut tx = self
                    .pool()
                    .begin_with($d::BEGIN_QUOTA)
                    .await
                    .map_err(repo_err)?;
                sqlx::query($d::LOCK_USER)
                    .bind($d::id(user.0))
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(repo_err)?
                    .ok_or(adiuva_core::ports::db::RepoError::NotFound)?;
                Ok(tx)
            }

            /// What the user stores under `cloud_storage_gb`, read inside `tx`.
            async fn cloud_usage(
                tx: &mut sqlx::Transaction<'static, $d::Db>,
                user: adiuva_core::domain::UserId,
            ) -> adiuva_core::ports::db::RepoResult<adiuva_core::quota::CloudUsage> {
                let (records, vectors): (i64, i64) = sqlx::query_as(concat!(
                    "SELECT (",
                    $crate::repos::sum_of!("storage_records"),
                    "), (",
                    $crate::repos::sum_of!("vector_items"),
                    ")"
                ))
                .bind($d::id(user.0))
                .fetch_one(&mut **tx)
                .await
                .map_err(crate::rows::repo_err)?;
                Ok(adiuva_core::quota::CloudUsage { records, vectors })
            }
        }

        $crate::repos::impl_user_repos!($db, $d);
        $crate::repos::impl_storage_repos!($db, $d);
        $crate::repos::impl_vector_repos!($db, $d);
        $crate::repos::impl_device_repos!($db, $d);
        $crate::repos::impl_agent_repos!($db, $d);
    };
}

pub(crate) use impl_repos;

/// `SELECT` of the sum of `size_bytes` of one user's rows of `$table` (user id is `$1`).
macro_rules! sum_of {
    ($table:literal) => {
        concat!(
            "SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) FROM ",
            $table,
            " WHERE user_id = $1"
        )
    };
}

/// The columns of `users`, in the order every statement lists them.
macro_rules! user_columns {
    () => {
        "id, email, password_hash, role, tier, stripe_customer_id, created_at, updated_at"
    };
}

/// The columns of `refresh_tokens`.
macro_rules! token_columns {
    () => {
        "id, user_id, family_id, token_hash, expires_at, created_at, used_at, revoked_at"
    };
}

/// The columns of `storage_records`.
macro_rules! record_columns {
    () => {
        "id, user_id, table_name, blob_key, checksum, size_bytes, created_at, updated_at"
    };
}

/// The columns of `backups`.
macro_rules! backup_columns {
    () => {
        "id, user_id, blob_key, version, timestamp, checksum, size_bytes, created_at"
    };
}

/// The columns of `subscriptions`.
macro_rules! subscription_columns {
    () => {
        "id, user_id, stripe_subscription_id, tier, status, current_period_end, created_at"
    };
}

/// The columns of `devices` that make a `Device` (`next_seq` is the repository's own).
macro_rules! device_columns {
    () => {
        "user_id, device_id, name, platform, app_version, capabilities, session_id, \
         instance_id, last_seen, created_at, expired_count"
    };
}

/// The columns of `device_queue` that make a `QueuedFrame`.
macro_rules! frame_columns {
    () => {
        "seq, frame_id, kind, payload, created_at, expires_at"
    };
}

/// The columns of `agents`.
macro_rules! agent_columns {
    () => {
        "id, user_id, kind, name, agent_type, schedule, timezone, enabled, filters, output, \
         prompt_template, provider, oauth_token_sealed, status, sync_cursor, next_run_at, \
         created_at, updated_at"
    };
}

/// The columns of `agent_runs`.
macro_rules! run_columns {
    () => {
        "id, user_id, agent_id, status, triggered_by, scheduled_for, created_at, started_at, \
         finished_at, items_read, items_produced, error, instance_id, lease_until, attempts, \
         device_id"
    };
}

/// The columns of `agent_journeys`.
macro_rules! journey_columns {
    () => {
        "id, user_id, agent_type, state_sealed, done, created_at, expires_at"
    };
}

/// `take_over_runs`' choice of stale runs, as a CTE (`$1` is `now`, `$4` the limit); the
/// dialect closes it, adding its row locks. Materialised: evaluated once, so the UPDATE
/// takes exactly the rows chosen (as a subquery PostgreSQL may re-run it per row, and with
/// SKIP LOCKED each re-run picks further rows).
macro_rules! take_over_pick {
    () => {
        "WITH picked AS MATERIALIZED (SELECT id FROM agent_runs \
         WHERE status IN ('queued', 'running') AND lease_until < $1 \
         ORDER BY lease_until LIMIT $4"
    };
}

/// What `take_over_runs` sets on each run it picked: `$2` the instance, `$3` the lease.
/// The WHERE repeats the choice, so a run changed since is left alone.
macro_rules! take_over_set {
    () => {
        concat!(
            " UPDATE agent_runs SET status = 'running', instance_id = $2, lease_until = $3, \
             started_at = COALESCE(started_at, $1), attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM picked) AND status IN ('queued', 'running') \
             AND lease_until < $1 RETURNING ",
            $crate::repos::run_columns!()
        )
    };
}

pub(crate) use {
    agent_columns, backup_columns, device_columns, frame_columns, journey_columns, record_columns,
    run_columns, subscription_columns, sum_of, take_over_pick, take_over_set, token_columns,
    user_columns,
};

/// Both dialects: a quota-checked write for a user that does not exist is `NotFound`
/// (the lock it takes is the user's), and writes nothing.
#[cfg(test)]
pub(crate) async fn quota_writes_of_an_unknown_user_are_not_found(
    db: &dyn adiuva_core::ports::Database,
) {
    use adiuva_core::domain::UserId;
    use adiuva_core::ports::db::{BackupMeta, RecordMeta, RepoError};

    let ghost = UserId::new();
    let id = uuid::Uuid::now_v7();
    let record = RecordMeta {
        id,
        user_id: ghost,
        table: "tasks".into(),
        blob_key: format!("{ghost}/tasks/{id}"),
        checksum: "ab".repeat(32),
        size_bytes: 1,
        created_at: 1,
        updated_at: 1,
    };
    for quota in [None, Some(100)] {
        assert!(matches!(
            db.insert_record_within_quota(&record, quota).await,
            Err(RepoError::NotFound)
        ));
        assert!(matches!(
            db.replace_record_blob(&record, &record.blob_key, quota)
                .await,
            Err(RepoError::NotFound)
        ));
        let backup = BackupMeta {
            id,
            user_id: ghost,
            blob_key: format!("{ghost}/backup-{id}"),
            version: 1,
            timestamp: 1,
            checksum: "ab".repeat(32),
            size_bytes: 1,
            created_at: 1,
        };
        assert!(matches!(
            db.insert_backup_within_quota(&backup, quota).await,
            Err(RepoError::NotFound)
        ));
        assert!(matches!(
            db.reserve_vector_items(ghost, &[("v".into(), 1)], quota, 1)
                .await,
            Err(RepoError::NotFound)
        ));
    }
    assert_eq!(db.stored_bytes(ghost).await.expect("sum"), 0);
    assert_eq!(db.vector_bytes(ghost).await.expect("sum"), 0);
}

/// Both dialects: 1,000 agents due in one minute, claimed by three instances ticking at
/// once, each reading the due agents and claiming every one: each slot runs exactly once
/// and every agent moves to its next slot. Prints how long it took (no timing assert: the
/// machine's speed is not the contract).
#[cfg(test)]
pub(crate) async fn a_thousand_due_slots_are_claimed_once_by_three_instances(
    db: &dyn adiuva_core::ports::Database,
) {
    use adiuva_core::ports::db::{
        AgentConfigRow, AgentKind, AgentLimits, AgentRun, AgentStatus, RunStatus, RunTrigger,
        SlotClaim,
    };
    use uuid::Uuid;

    const SLOT: i64 = 60_000;
    const NEXT: i64 = 120_000;
    let user = adiuva_core::testing::database::sample_user("bench-claims", 1);
    db.insert_user(&user).await.expect("user");
    for i in 0..1_000 {
        let row = AgentConfigRow {
            id: Uuid::now_v7(),
            user_id: user.id,
            kind: AgentKind::Local,
            name: format!("agent {i}"),
            agent_type: "daily_brief".into(),
            schedule: Some("* * * * *".into()),
            timezone: "UTC".into(),
            enabled: true,
            filters: serde_json::json!({}),
            output: serde_json::json!({}),
            prompt_template: "brief_v1".into(),
            provider: None,
            oauth_token_sealed: None,
            status: AgentStatus::Active,
            sync_cursor: None,
            next_run_at: Some(SLOT - i % 7),
            created_at: i,
            updated_at: i,
        };
        db.insert_agent(&row, AgentLimits::default())
            .await
            .expect("agent");
    }

    let started = std::time::Instant::now();
    let instance = |instance_id: Uuid| async move {
        let mut won = 0_usize;
        // Bounded: each round claims or loses every agent it read.
        for _ in 0..100 {
            let due = db.due_agents(SLOT, 200).await.expect("due");
            if due.is_empty() {
                break;
            }
            for agent in due {
                let expected = agent.next_run_at.expect("due agents have a slot");
                let claim = SlotClaim {
                    agent_id: agent.id,
                    expected_next_run_at: expected,
                    next_run_at: Some(NEXT),
                    run: AgentRun {
                        id: Uuid::now_v7(),
                        user_id: agent.user_id,
                        agent_id: agent.id,
                        status: RunStatus::Running,
                        trigger: RunTrigger::Schedule,
                        scheduled_for: Some(expected),
                        created_at: SLOT,
                        started_at: Some(SLOT),
                        finished_at: None,
                        items_read: 0,
                        items_produced: 0,
                        error: None,
                        instance_id: Some(instance_id),
                        lease_until: Some(SLOT + 60_000),
                        attempts: 1,
                        device_id: None,
                    },
                };
                if db.claim_slot(&claim).await.expect("claim").is_some() {
                    won += 1;
                }
            }
        }
        won
    };
    let wins = futures::future::join_all((0..3).map(|_| instance(Uuid::new_v4()))).await;
    let elapsed = started.elapsed();
    println!(
        "{}: 1,000 due slots claimed by 3 instances in {elapsed:?} (wins per instance {wins:?})",
        db.backend()
    );
    assert_eq!(wins.iter().sum::<usize>(), 1_000, "every slot claimed once");
    let runs = db.list_runs(user.id, None, 0, 2_000).await.expect("runs");
    let agents: std::collections::BTreeSet<Uuid> = runs.iter().map(|r| r.agent_id).collect();
    assert_eq!(
        (runs.len(), agents.len()),
        (1_000, 1_000),
        "one run per agent"
    );
    assert!(db.due_agents(SLOT, 10).await.expect("due").is_empty());
    let moved = db
        .list_agents(user.id, AgentKind::Local)
        .await
        .expect("list")
        .iter()
        .filter(|a| a.next_run_at == Some(NEXT))
        .count();
    assert_eq!(moved, 1_000, "every agent moved to its next slot");
}
