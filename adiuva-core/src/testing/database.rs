//! The [`Database`] conformance suite: users, refresh tokens, records, backups, blob
//! keys, subscriptions, vector usage, devices with their queues (in [`devices`]), and
//! agents with their runs and journey sessions (in [`agents`]).
//!
//! Longer than the ~600-line rule on purpose: it is test support, one flat list of
//! checks that every backend runs through [`run_all`], and reads best as that one list.

use uuid::Uuid;

pub mod agents;
pub mod devices;

use crate::domain::{Email, Role, Tier, UserId};
use crate::ports::Database;
use crate::ports::db::{
    BackupMeta, RecordMeta, RecordSwap, RefreshToken, RepoError, Subscription, User,
};

/// Asserts `result` is `Err(NotFound)`; `why` names the check.
fn assert_not_found<T: std::fmt::Debug>(result: Result<T, RepoError>, why: &str) {
    assert!(
        matches!(result, Err(RepoError::NotFound)),
        "{why} (NotFound expected): {result:?}"
    );
}

/// Asserts `result` is `Err(Conflict(_))`; `why` names the check.
fn assert_conflict<T: std::fmt::Debug>(result: Result<T, RepoError>, why: &str) {
    assert!(
        matches!(result, Err(RepoError::Conflict(_))),
        "{why} (Conflict expected): {result:?}"
    );
}

/// Runs every check below against `db`. The database may be shared with other runs:
/// every check makes its own users.
pub async fn run_all(db: &dyn Database) {
    ping(db).await;
    users_insert_and_find(db).await;
    users_duplicate_email_conflicts(db).await;
    users_concurrent_duplicate_insert_one_wins(db).await;
    users_list_pages_oldest_first(db).await;
    users_set_tier_and_role(db).await;
    users_delete_cascades_tokens(db).await;
    tokens_insert_find_and_use_once(db).await;
    tokens_concurrent_use_one_wins(db).await;
    tokens_revoke_family_only(db).await;
    tokens_delete_expired(db).await;
    records_are_scoped_listed_and_deleted(db).await;
    record_quota_holds_under_concurrency(db).await;
    record_blob_swap_is_compare_and_swap(db).await;
    backups_are_scoped_ordered_and_within_quota(db).await;
    backups_of_one_timestamp_one_wins(db).await;
    blob_keys_span_every_table_with_blobs(db).await;
    subscriptions_upsert_idempotently(db).await;
    vector_usage_shares_the_storage_quota(db).await;
    vector_usage_quota_holds_under_concurrency(db).await;
    devices::devices_connect_update_and_replace(db).await;
    devices::devices_limit_admits_known_devices_only(db).await;
    devices::devices_concurrent_hellos_respect_the_limit(db).await;
    devices::devices_disconnect_only_the_live_session(db).await;
    devices::devices_touch_and_release_by_instance(db).await;
    devices::devices_with_queued_frames_of_one_instance(db).await;
    devices::devices_list_oldest_first_then_by_id(db).await;
    devices::devices_of_another_user_are_invisible(db).await;
    devices::devices_delete_cascades_the_queue(db).await;
    devices::devices_go_with_their_user(db).await;
    devices::device_queue_orders_filters_and_counts(db).await;
    devices::device_queue_ack_removes_once(db).await;
    devices::device_queue_bound_drops_the_oldest(db).await;
    devices::device_queue_expiry_is_counted(db).await;
    devices::device_queue_payloads_round_trip(db).await;
    devices::device_queue_concurrent_enqueues_serialise(db).await;
    agents::agents_insert_get_and_list_by_kind(db).await;
    agents::agents_update_and_delete_are_scoped(db).await;
    agents::agents_limits_on_insert_and_update(db).await;
    agents::agents_limits_hold_under_concurrency(db).await;
    agents::agents_tokens_and_cursors(db).await;
    agents::due_agents_filter_order_and_limit(db).await;
    agents::claim_slot_is_compare_and_swap(db).await;
    agents::claim_slot_concurrent_claims_one_wins(db).await;
    agents::runs_insert_start_and_renew(db).await;
    agents::take_over_hands_each_stale_run_to_one_caller(db).await;
    agents::finish_run_once(db).await;
    agents::runs_list_newest_first_paged_and_scoped(db).await;
    agents::journeys_are_scoped_expire_and_update(db).await;
    agents::agents_go_with_their_user(db).await;
}

fn unique_email(tag: &str) -> Email {
    Email::parse(&format!("{tag}-{}@example.com", Uuid::new_v4().simple())).expect("valid email")
}

/// A user with a unique email created at `at`.
pub fn sample_user(tag: &str, at: i64) -> User {
    User {
        id: UserId::new(),
        email: unique_email(tag),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
        role: Role::User,
        tier: Tier::Free,
        stripe_customer_id: None,
        created_at: at,
        updated_at: at,
    }
}

/// [`sample_user`], inserted into `db`.
async fn stored_user(db: &dyn Database, tag: &str, at: i64) -> User {
    let user = sample_user(tag, at);
    db.insert_user(&user).await.expect("insert a user");
    user
}

fn sample_token(user: UserId, family: Uuid, expires_at: i64) -> RefreshToken {
    RefreshToken {
        id: Uuid::now_v7(),
        user_id: user,
        family_id: family,
        token_hash: format!("{:064x}", Uuid::new_v4().as_u128()),
        expires_at,
        created_at: 1_000,
        used_at: None,
        revoked_at: None,
    }
}

/// `ping` answers and `backend` names the technology.
pub async fn ping(db: &dyn Database) {
    db.ping().await.expect("ping");
    assert!(!db.backend().is_empty(), "backend() names the database");
}

/// Inserted users are found by id and by email, whole.
pub async fn users_insert_and_find(db: &dyn Database) {
    let mut user = sample_user("find", 1_700_000_000_000);
    user.stripe_customer_id = Some("cus_123".into());
    db.insert_user(&user).await.expect("insert");
    assert_eq!(
        db.user_by_id(user.id).await.expect("by id"),
        Some(user.clone())
    );
    assert_eq!(
        db.user_by_email(&user.email).await.expect("by email"),
        Some(user.clone())
    );
    assert_eq!(
        db.user_by_id(UserId::new()).await.expect("by id"),
        None,
        "unknown id is None"
    );
    let other = unique_email("nobody");
    assert_eq!(
        db.user_by_email(&other).await.expect("by email"),
        None,
        "unknown email is None"
    );
}

/// A second user with the same email is a `Conflict` and changes nothing.
pub async fn users_duplicate_email_conflicts(db: &dyn Database) {
    let user = stored_user(db, "dup", 1).await;
    let mut again = sample_user("dup", 2);
    again.email = user.email.clone();
    match db.insert_user(&again).await {
        Err(RepoError::Conflict(_)) => {}
        other => panic!("a duplicate email must be Conflict, got {other:?}"),
    }
    assert_eq!(
        db.user_by_email(&user.email)
            .await
            .expect("find")
            .map(|u| u.id),
        Some(user.id)
    );
}

/// Of many concurrent inserts of one email, exactly one succeeds.
pub async fn users_concurrent_duplicate_insert_one_wins(db: &dyn Database) {
    let email = unique_email("race");
    let users: Vec<User> = (0..8)
        .map(|i| User {
            email: email.clone(),
            ..sample_user("race", i)
        })
        .collect();
    let results = futures::future::join_all(users.iter().map(|u| db.insert_user(u))).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Err(RepoError::Conflict(_))))
        .count();
    assert_eq!(
        (ok, conflicts),
        (1, 7),
        "one insert wins, the rest conflict: {results:?}"
    );
}

/// `list_users` is oldest first and pages with offset/limit.
pub async fn users_list_pages_oldest_first(db: &dyn Database) {
    // Far in the future so that these sort after users made by other checks.
    let base = 4_000_000_000_000;
    let made: Vec<User> = (0..5).map(|i| sample_user("list", base + i)).collect();
    for u in made.iter().rev() {
        db.insert_user(u).await.expect("insert");
    }
    let all = db.list_users(0, 10_000).await.expect("list");
    let tail: Vec<UserId> = all
        .iter()
        .filter(|u| u.created_at >= base)
        .map(|u| u.id)
        .collect();
    let want: Vec<UserId> = made.iter().map(|u| u.id).collect();
    assert_eq!(tail, want, "oldest first");
    let skip = (all.len() - 5) as u64;
    let page = db.list_users(skip + 1, 2).await.expect("page");
    assert_eq!(
        page.iter().map(|u| u.id).collect::<Vec<_>>(),
        want[1..3].to_vec(),
        "offset/limit"
    );
}

/// Tier and role updates persist and touch `updated_at`; unknown ids are `NotFound`.
pub async fn users_set_tier_and_role(db: &dyn Database) {
    let user = stored_user(db, "tier", 10).await;
    db.set_tier(user.id, Tier::Power, 20)
        .await
        .expect("set tier");
    db.set_role(user.id, Role::Admin, 30)
        .await
        .expect("set role");
    let got = db.user_by_id(user.id).await.expect("find").expect("exists");
    assert_eq!(
        (got.tier, got.role, got.updated_at),
        (Tier::Power, Role::Admin, 30)
    );
    assert_not_found(
        db.set_tier(UserId::new(), Tier::Pro, 1).await,
        "set_tier of an unknown user",
    );
    assert_not_found(
        db.set_role(UserId::new(), Role::User, 1).await,
        "set_role of an unknown user",
    );
}

/// Deleting a user removes the row and its refresh tokens; twice is `NotFound`.
pub async fn users_delete_cascades_tokens(db: &dyn Database) {
    let user = stored_user(db, "del", 1).await;
    let token = sample_token(user.id, Uuid::now_v7(), i64::MAX / 2);
    db.insert_refresh_token(&token).await.expect("token");
    db.delete_user(user.id).await.expect("delete");
    assert_eq!(db.user_by_id(user.id).await.expect("find"), None);
    assert_eq!(
        db.refresh_token_by_hash(&token.token_hash)
            .await
            .expect("token"),
        None,
        "tokens go with the user"
    );
    assert_not_found(db.delete_user(user.id).await, "deleting twice");
}

/// Tokens are found by hash; `mark_refresh_token_used` succeeds once.
pub async fn tokens_insert_find_and_use_once(db: &dyn Database) {
    let user = stored_user(db, "tok", 1).await;
    let token = sample_token(user.id, Uuid::now_v7(), 9_000);
    db.insert_refresh_token(&token).await.expect("insert token");
    assert_eq!(
        db.refresh_token_by_hash(&token.token_hash)
            .await
            .expect("find"),
        Some(token.clone())
    );
    assert_conflict(
        db.insert_refresh_token(&token).await,
        "same hash twice conflicts",
    );
    assert!(
        db.mark_refresh_token_used(token.id, 2_000)
            .await
            .expect("use")
    );
    assert!(
        !db.mark_refresh_token_used(token.id, 2_001)
            .await
            .expect("reuse"),
        "second use is refused"
    );
    let used = db
        .refresh_token_by_hash(&token.token_hash)
        .await
        .expect("find")
        .expect("exists");
    assert_eq!(used.used_at, Some(2_000));
    assert!(
        db.refresh_token_by_hash("0".repeat(64).as_str())
            .await
            .expect("find")
            .is_none()
    );
}

/// Of concurrent uses of one token, exactly one wins.
pub async fn tokens_concurrent_use_one_wins(db: &dyn Database) {
    let user = stored_user(db, "tokrace", 1).await;
    let token = sample_token(user.id, Uuid::now_v7(), 9_000);
    db.insert_refresh_token(&token).await.expect("insert token");
    let results =
        futures::future::join_all((0..8).map(|i| db.mark_refresh_token_used(token.id, 2_000 + i)))
            .await;
    let wins = results.iter().filter(|r| matches!(r, Ok(true))).count();
    assert_eq!(wins, 1, "exactly one concurrent use wins: {results:?}");
}

/// Revoking a family revokes all of its tokens and no others; revoked tokens cannot be used.
pub async fn tokens_revoke_family_only(db: &dyn Database) {
    let user = stored_user(db, "fam", 1).await;
    let (fam, other) = (Uuid::now_v7(), Uuid::now_v7());
    let a = sample_token(user.id, fam, 9_000);
    let b = sample_token(user.id, fam, 9_000);
    let c = sample_token(user.id, other, 9_000);
    for t in [&a, &b, &c] {
        db.insert_refresh_token(t).await.expect("insert token");
    }
    let in_session = |family| db.user_in_session(user.id, family);
    assert!(
        in_session(fam).await.expect("live").is_some(),
        "a live session"
    );
    assert!(
        in_session(Uuid::now_v7()).await.expect("unknown").is_some(),
        "a family without rows (purged) is not revoked"
    );
    assert_eq!(db.revoke_token_family(fam, 5_000).await.expect("revoke"), 2);
    assert_eq!(
        in_session(fam).await.expect("revoked"),
        None,
        "a revoked session's access tokens are refused"
    );
    assert!(in_session(other).await.expect("other").is_some());
    assert_eq!(
        db.user_in_session(UserId::new(), other)
            .await
            .expect("no user"),
        None
    );
    assert_eq!(
        db.revoke_token_family(fam, 5_001)
            .await
            .expect("revoke again"),
        0,
        "already revoked"
    );
    for t in [&a, &b] {
        let got = db
            .refresh_token_by_hash(&t.token_hash)
            .await
            .expect("find")
            .expect("kept");
        assert_eq!(got.revoked_at, Some(5_000));
        assert!(
            !db.mark_refresh_token_used(t.id, 6_000).await.expect("use"),
            "revoked tokens cannot be used"
        );
    }
    let got = db
        .refresh_token_by_hash(&c.token_hash)
        .await
        .expect("find")
        .expect("kept");
    assert_eq!(got.revoked_at, None, "other families untouched");
    // Revoked at 5,000: named once from then on (two rows, one family), never the live one.
    let since = db
        .families_revoked_since(5_000)
        .await
        .expect("revoked since");
    assert_eq!(since.iter().filter(|f| **f == fam).count(), 1, "{since:?}");
    assert!(!since.contains(&other), "a live family is not revoked");
    assert!(
        !db.families_revoked_since(5_001)
            .await
            .expect("revoked since")
            .contains(&fam),
        "revoked before `since`"
    );
}

/// Expired tokens are deleted; live ones stay.
pub async fn tokens_delete_expired(db: &dyn Database) {
    let user = stored_user(db, "exp", 1).await;
    let old = sample_token(user.id, Uuid::now_v7(), 100);
    let live = sample_token(user.id, Uuid::now_v7(), i64::MAX / 2);
    db.insert_refresh_token(&old).await.expect("insert");
    db.insert_refresh_token(&live).await.expect("insert");
    assert!(db.delete_expired_refresh_tokens(101).await.expect("delete") >= 1);
    assert!(
        db.refresh_token_by_hash(&old.token_hash)
            .await
            .expect("find")
            .is_none()
    );
    assert!(
        db.refresh_token_by_hash(&live.token_hash)
            .await
            .expect("find")
            .is_some()
    );
}

fn sample_record(user: UserId, table: &str, size: i64, at: i64) -> RecordMeta {
    let id = Uuid::now_v7();
    RecordMeta {
        id,
        user_id: user,
        table: table.into(),
        blob_key: format!("{user}/{table}/{id}.{}", Uuid::now_v7().simple()),
        checksum: "ab".repeat(32),
        size_bytes: size,
        created_at: at,
        updated_at: at,
    }
}

/// Records are found only by their owner; listing is newest first, filtered and paged.
pub async fn records_are_scoped_listed_and_deleted(db: &dyn Database) {
    let (alice, bob) = (
        stored_user(db, "rec-a", 1).await,
        stored_user(db, "rec-b", 1).await,
    );
    let made: Vec<RecordMeta> = (0..4)
        .map(|i| {
            sample_record(
                alice.id,
                if i % 2 == 0 { "notes" } else { "tasks" },
                10 + i,
                100 + i,
            )
        })
        .collect();
    for r in &made {
        assert!(
            db.insert_record_within_quota(r, None)
                .await
                .expect("insert")
        );
    }
    assert_eq!(
        db.record(alice.id, made[0].id).await.expect("get"),
        Some(made[0].clone())
    );
    assert_eq!(
        db.record(bob.id, made[0].id).await.expect("get"),
        None,
        "another user's id is not found"
    );
    let all = db.list_records(alice.id, None, 0, 10).await.expect("list");
    assert_eq!(
        all.iter().map(|r| r.id).collect::<Vec<_>>(),
        made.iter().rev().map(|r| r.id).collect::<Vec<_>>(),
        "newest first"
    );
    let notes = db
        .list_records(alice.id, Some("notes"), 0, 10)
        .await
        .expect("list");
    assert_eq!(
        notes.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![made[2].id, made[0].id]
    );
    let page = db.list_records(alice.id, None, 1, 2).await.expect("page");
    assert_eq!(
        page.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![made[2].id, made[1].id]
    );
    assert!(
        db.list_records(bob.id, None, 0, 10)
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        db.stored_bytes(alice.id).await.expect("sum"),
        10 + 11 + 12 + 13
    );
    assert_not_found(
        db.delete_record(bob.id, made[0].id).await,
        "not bob's to delete",
    );
    assert_eq!(
        db.delete_record(alice.id, made[0].id)
            .await
            .expect("delete"),
        made[0],
        "delete returns the row as it was"
    );
    assert_not_found(
        db.delete_record(alice.id, made[0].id).await,
        "deleting twice",
    );
    let mut changed = made[1].clone();
    changed.user_id = bob.id;
    changed.blob_key = format!("{}.next", made[1].blob_key);
    assert_not_found(
        db.replace_record_blob(&changed, &made[1].blob_key, None)
            .await,
        "update is scoped",
    );
}

/// The quota is checked atomically with the write, also under concurrent inserts.
pub async fn record_quota_holds_under_concurrency(db: &dyn Database) {
    let user = stored_user(db, "quota", 1).await;
    let rows: Vec<RecordMeta> = (0..10)
        .map(|i| sample_record(user.id, "t", 100, 10 + i))
        .collect();
    let results = futures::future::join_all(
        rows.iter()
            .map(|r| db.insert_record_within_quota(r, Some(350))),
    )
    .await;
    let stored = results.iter().filter(|r| matches!(r, Ok(true))).count();
    assert_eq!(stored, 3, "exactly 3 × 100 bytes fit in 350: {results:?}");
    assert_eq!(db.stored_bytes(user.id).await.expect("sum"), 300);
    // Updates count the difference: growing one record by 50 fits, by 51 does not.
    let kept = db.list_records(user.id, None, 0, 10).await.expect("list");
    let mut grow = kept[0].clone();
    grow.size_bytes = 151;
    grow.checksum = "cd".repeat(32);
    grow.blob_key = format!("{}.big", kept[0].blob_key);
    assert_eq!(
        db.replace_record_blob(&grow, &kept[0].blob_key, Some(350))
            .await
            .expect("update"),
        RecordSwap::OverQuota
    );
    assert_eq!(
        db.record(user.id, grow.id).await.expect("get"),
        Some(kept[0].clone()),
        "a refused update changes nothing"
    );
    grow.size_bytes = 150;
    assert_eq!(
        db.replace_record_blob(&grow, &kept[0].blob_key, Some(350))
            .await
            .expect("update"),
        RecordSwap::Replaced
    );
    let got = db
        .record(user.id, grow.id)
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(
        (got.size_bytes, got.checksum, got.blob_key),
        (150, "cd".repeat(32), grow.blob_key.clone()),
        "the row points at the new version"
    );
    assert!(
        !db.insert_record_within_quota(&sample_record(user.id, "t", 1, 99), Some(350))
            .await
            .expect("insert"),
        "full: one more byte is refused"
    );
    assert!(
        db.insert_record_within_quota(&sample_record(user.id, "t", 1, 99), None)
            .await
            .expect("unlimited")
    );
}

fn sample_backup(user: UserId, timestamp: i64, size: i64) -> BackupMeta {
    BackupMeta {
        id: Uuid::now_v7(),
        user_id: user,
        blob_key: format!("{user}/backup-{}", Uuid::now_v7().simple()),
        version: 3,
        timestamp,
        checksum: "ef".repeat(32),
        size_bytes: size,
        created_at: timestamp + 1,
    }
}

/// Backups: newest timestamp first, owner-scoped, one per timestamp, quota-checked.
pub async fn backups_are_scoped_ordered_and_within_quota(db: &dyn Database) {
    let (alice, bob) = (
        stored_user(db, "bk-a", 1).await,
        stored_user(db, "bk-b", 1).await,
    );
    let made: Vec<BackupMeta> = [300, 100, 200]
        .iter()
        .map(|t| sample_backup(alice.id, *t, 40))
        .collect();
    for b in &made {
        assert!(
            db.insert_backup_within_quota(b, Some(120))
                .await
                .expect("insert")
        );
    }
    assert_eq!(
        db.list_backups(alice.id)
            .await
            .expect("list")
            .iter()
            .map(|b| b.timestamp)
            .collect::<Vec<_>>(),
        vec![300, 200, 100]
    );
    assert_eq!(db.list_backups(alice.id).await.expect("list")[0], made[0]);
    assert!(
        !db.insert_backup_within_quota(&sample_backup(alice.id, 400, 1), Some(120))
            .await
            .expect("insert"),
        "full"
    );
    assert_conflict(
        db.insert_backup_within_quota(&sample_backup(alice.id, 300, 1), None)
            .await,
        "one backup per timestamp",
    );
    assert_eq!(db.backup_bytes(alice.id).await.expect("sum"), 120);
    assert!(db.list_backups(bob.id).await.expect("list").is_empty());
    assert_not_found(db.delete_backup(bob.id, made[0].id).await, "not bob's");
    assert_eq!(
        db.delete_backup(alice.id, made[0].id)
            .await
            .expect("delete"),
        made[0]
    );
    assert_not_found(
        db.delete_backup(alice.id, made[0].id).await,
        "deleting twice",
    );
    // Concurrent inserts never exceed the quota together.
    let racers: Vec<BackupMeta> = (0..8)
        .map(|i| sample_backup(bob.id, 1000 + i, 30))
        .collect();
    let results = futures::future::join_all(
        racers
            .iter()
            .map(|b| db.insert_backup_within_quota(b, Some(100))),
    )
    .await;
    assert_eq!(
        results.iter().filter(|r| matches!(r, Ok(true))).count(),
        3,
        "{results:?}"
    );
}

/// Switching a record to a new blob is a compare-and-swap on the previous key: of
/// concurrent swaps from one version exactly one wins, and a swap from a version that is
/// no longer current changes nothing.
pub async fn record_blob_swap_is_compare_and_swap(db: &dyn Database) {
    let user = stored_user(db, "swap", 1).await;
    let first = sample_record(user.id, "notes", 10, 5);
    assert!(
        db.insert_record_within_quota(&first, None)
            .await
            .expect("insert")
    );
    let versions: Vec<RecordMeta> = (0..8)
        .map(|i| RecordMeta {
            blob_key: format!("{}.v{i}", first.blob_key),
            checksum: format!("{i:064x}"),
            size_bytes: 20 + i,
            updated_at: 6,
            ..first.clone()
        })
        .collect();
    let results = futures::future::join_all(
        versions
            .iter()
            .map(|v| db.replace_record_blob(v, &first.blob_key, Some(1000))),
    )
    .await;
    let won: Vec<&RecordMeta> = versions
        .iter()
        .zip(&results)
        .filter(|(_, r)| matches!(r, Ok(RecordSwap::Replaced)))
        .map(|(v, _)| v)
        .collect();
    assert_eq!(won.len(), 1, "exactly one swap wins: {results:?}");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(RecordSwap::Replaced | RecordSwap::Stale))),
        "{results:?}"
    );
    let now = db
        .record(user.id, first.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(&now, won[0], "the row is the winner's, whole");
    assert_eq!(
        db.stored_bytes(user.id).await.expect("sum"),
        won[0].size_bytes
    );
    let late = RecordMeta {
        blob_key: format!("{}.late", first.blob_key),
        ..first.clone()
    };
    assert_eq!(
        db.replace_record_blob(&late, &first.blob_key, None)
            .await
            .expect("swap"),
        RecordSwap::Stale,
        "the previous key is no longer current"
    );
    assert_eq!(
        db.record(user.id, first.id).await.expect("get").as_ref(),
        Some(won[0])
    );
    let mut missing = late.clone();
    missing.id = Uuid::now_v7();
    assert_not_found(
        db.replace_record_blob(&missing, &won[0].blob_key, None)
            .await,
        "swapping a record that is gone",
    );
}

/// Concurrent inserts of one timestamp: exactly one row, the others `Conflict`.
pub async fn backups_of_one_timestamp_one_wins(db: &dyn Database) {
    let user = stored_user(db, "bk-race", 1).await;
    let racers: Vec<BackupMeta> = (0..6)
        .map(|i| {
            let id = Uuid::now_v7();
            BackupMeta {
                id,
                blob_key: format!("{}/backup-{}", user.id, id.simple()),
                size_bytes: 10 + i,
                ..sample_backup(user.id, 777, 0)
            }
        })
        .collect();
    let results = futures::future::join_all(
        racers
            .iter()
            .map(|b| db.insert_backup_within_quota(b, Some(1000))),
    )
    .await;
    assert_eq!(
        results.iter().filter(|r| matches!(r, Ok(true))).count(),
        1,
        "{results:?}"
    );
    assert_eq!(
        results
            .iter()
            .filter(|r| matches!(r, Err(RepoError::Conflict(_))))
            .count(),
        5,
        "{results:?}"
    );
    let kept = db.list_backups(user.id).await.expect("list");
    assert_eq!(kept.len(), 1);
    assert_eq!(
        db.backup_bytes(user.id).await.expect("sum"),
        kept[0].size_bytes,
        "the quota counts the row that was kept"
    );
}

/// `referenced_blob_keys` spans records and backups (every table with blobs) and drops
/// deleted rows; `user_blob_keys` is one user's, and both follow a record's swap.
pub async fn blob_keys_span_every_table_with_blobs(db: &dyn Database) {
    let (alice, bob) = (
        stored_user(db, "keys-a", 1).await,
        stored_user(db, "keys-b", 1).await,
    );
    let record = sample_record(alice.id, "notes", 5, 1);
    let gone = sample_record(alice.id, "notes", 5, 2);
    let backup = sample_backup(alice.id, 42, 5);
    let bobs = sample_backup(bob.id, 42, 5);
    for r in [&record, &gone] {
        assert!(db.insert_record_within_quota(r, None).await.expect("rec"));
    }
    for b in [&backup, &bobs] {
        assert!(db.insert_backup_within_quota(b, None).await.expect("bk"));
    }
    db.delete_record(alice.id, gone.id).await.expect("delete");
    let next = RecordMeta {
        blob_key: format!("{}.next", record.blob_key),
        ..record.clone()
    };
    assert_eq!(
        db.replace_record_blob(&next, &record.blob_key, None)
            .await
            .expect("swap"),
        RecordSwap::Replaced
    );
    let all = db.referenced_blob_keys().await.expect("keys");
    for k in [&next.blob_key, &backup.blob_key, &bobs.blob_key] {
        assert!(all.contains(k), "{k} is referenced");
    }
    for k in [&record.blob_key, &gone.blob_key] {
        assert!(!all.contains(k), "{k} is no longer referenced");
    }
    let mut mine = db.user_blob_keys(alice.id).await.expect("mine");
    mine.sort();
    let mut want = vec![next.blob_key.clone(), backup.blob_key.clone()];
    want.sort();
    assert_eq!(mine, want);
    db.delete_user(alice.id).await.expect("delete user");
    assert!(db.user_blob_keys(alice.id).await.expect("none").is_empty());
    let all = db.referenced_blob_keys().await.expect("keys");
    assert!(!all.contains(&next.blob_key) && !all.contains(&backup.blob_key));
    assert!(all.contains(&bobs.blob_key));
}

/// Webhooks repeat: upserting by the provider's id is idempotent; the newest subscription
/// is the user's; deleting the user removes it.
pub async fn subscriptions_upsert_idempotently(db: &dyn Database) {
    let user = stored_user(db, "sub", 1).await;
    assert_eq!(db.subscription_for_user(user.id).await.expect("get"), None);
    let first = Subscription {
        id: Uuid::now_v7(),
        user_id: user.id,
        stripe_subscription_id: format!("sub_{}", Uuid::new_v4().simple()),
        tier: Tier::Pro,
        status: "active".into(),
        current_period_end: 5_000,
        created_at: 100,
    };
    db.upsert_subscription(&first).await.expect("insert");
    db.upsert_subscription(&first)
        .await
        .expect("repeat is fine");
    let changed = Subscription {
        id: Uuid::now_v7(),
        tier: Tier::Power,
        status: "past_due".into(),
        current_period_end: 9_000,
        ..first.clone()
    };
    db.upsert_subscription(&changed).await.expect("update");
    let got = db
        .subscription_for_user(user.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        (
            got.id,
            got.tier,
            got.status.as_str(),
            got.current_period_end
        ),
        (first.id, Tier::Power, "past_due", 9_000),
        "updated in place"
    );
    let newer = Subscription {
        id: Uuid::now_v7(),
        stripe_subscription_id: format!("sub_{}", Uuid::new_v4().simple()),
        created_at: 200,
        ..first.clone()
    };
    db.upsert_subscription(&newer).await.expect("second");
    assert_eq!(
        db.subscription_for_user(user.id)
            .await
            .expect("get")
            .map(|s| s.id),
        Some(newer.id),
        "newest wins"
    );
    db.delete_user(user.id).await.expect("delete");
    assert_eq!(db.subscription_for_user(user.id).await.expect("get"), None);
}

fn items(prefix: &str, n: usize, bytes: i64) -> Vec<(String, i64)> {
    (0..n).map(|i| (format!("{prefix}{i}"), bytes)).collect()
}

/// Vector items and records count against one quota; replacing an item counts its new
/// size only; restore and release undo exactly; another user is untouched.
pub async fn vector_usage_shares_the_storage_quota(db: &dyn Database) {
    let user = stored_user(db, "vecquota", 1).await;
    let other = stored_user(db, "vecother", 1).await;
    let first = db
        .reserve_vector_items(user.id, &items("a", 3, 100), Some(1000), 5)
        .await
        .expect("reserve")
        .expect("300 of 1000 fits");
    assert!(
        first.iter().all(|(_, b)| b.is_none()),
        "all were new: {first:?}"
    );
    assert_eq!(db.vector_bytes(user.id).await.expect("bytes"), 300);
    db.insert_record_within_quota(&sample_record(user.id, "t", 500, 10), Some(1000))
        .await
        .expect("record")
        .then_some(())
        .expect("a 500-byte record fits beside 300 vector bytes");
    assert!(
        !db.insert_record_within_quota(&sample_record(user.id, "t", 201, 11), Some(1000))
            .await
            .expect("record"),
        "a record quota counts vector bytes (300 + 500 + 201 > 1000)"
    );
    assert!(
        db.reserve_vector_items(user.id, &items("b", 1, 201), Some(1000), 6)
            .await
            .expect("reserve")
            .is_none(),
        "vector bytes count records (800 + 201 > 1000)"
    );
    assert_eq!(
        db.vector_bytes(user.id).await.expect("bytes"),
        300,
        "refused → nothing written"
    );
    // Replacing a0 (100) by 300 bytes adds 200: exactly fills 1000.
    let prev = db
        .reserve_vector_items(
            user.id,
            &[("a0".into(), 300), ("n".into(), 0)],
            Some(1000),
            7,
        )
        .await
        .expect("reserve")
        .expect("a replacement counts only its growth");
    assert_eq!(
        prev,
        vec![("a0".to_string(), Some(100)), ("n".to_string(), None)]
    );
    assert_eq!(db.vector_bytes(user.id).await.expect("bytes"), 500);
    db.restore_vector_items(user.id, &prev)
        .await
        .expect("restore");
    assert_eq!(
        db.vector_bytes(user.id).await.expect("bytes"),
        300,
        "restore undoes"
    );
    assert_eq!(
        db.release_vector_items(user.id, &["a1".into(), "zzz".into()])
            .await
            .expect("release"),
        1
    );
    db.reserve_vector_items(other.id, &items("a", 2, 50), None, 8)
        .await
        .expect("reserve")
        .expect("unlimited");
    db.release_all_vector_items(user.id)
        .await
        .expect("release all");
    assert_eq!(db.vector_bytes(user.id).await.expect("bytes"), 0);
    assert_eq!(
        db.vector_bytes(other.id).await.expect("bytes"),
        100,
        "other user untouched"
    );
    db.delete_user(other.id).await.expect("delete user");
    assert_eq!(
        db.vector_bytes(other.id).await.expect("bytes"),
        0,
        "rows go with the user"
    );
}

/// Ten concurrent reservations of 100 bytes under a 350-byte quota: exactly three win.
pub async fn vector_usage_quota_holds_under_concurrency(db: &dyn Database) {
    let user = stored_user(db, "vecrace", 1).await;
    let batches: Vec<Vec<(String, i64)>> =
        (0..10).map(|i| items(&format!("r{i}-"), 1, 100)).collect();
    let results = futures::future::join_all(
        batches
            .iter()
            .map(|b| db.reserve_vector_items(user.id, b, Some(350), 9)),
    )
    .await;
    let won = results.iter().filter(|r| matches!(r, Ok(Some(_)))).count();
    assert_eq!(won, 3, "exactly 3 × 100 bytes fit in 350: {results:?}");
    assert_eq!(db.vector_bytes(user.id).await.expect("bytes"), 300);
}
