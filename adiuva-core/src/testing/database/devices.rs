//! The [`DeviceRepo`](crate::ports::db::DeviceRepo) checks of the [`Database`] suite:
//! devices and presence, then each device's durable queue. Run by [`super::run_all`].
//!
//! Frames that must not expire during a check expire at [`FOREVER`]; the only check that
//! sweeps ([`device_queue_expiry_is_counted`]) works in a window of time no other check
//! uses, so its counts are exact on a database the other checks share.
//!
//! Longer than the ~600-line rule for the parent's reason: test support, one flat list of
//! checks (one per rule of the contract) that reads best as that list.

use std::sync::atomic::{AtomicBool, Ordering};

use uuid::Uuid;

use super::{assert_conflict, assert_not_found, stored_user};
use crate::domain::UserId;
use crate::ports::Database;
use crate::ports::db::{
    Device, DeviceConnected, DeviceInfo, DeviceSession, NewQueuedFrame, RepoError,
};

/// An `expires_at` no check reaches.
const FOREVER: i64 = 9_000_000_000_000;

fn info(name: &str) -> DeviceInfo {
    DeviceInfo {
        name: name.into(),
        platform: "linux".into(),
        app_version: "1.2.3".into(),
        capabilities: vec!["tools".into(), "files".into()],
    }
}

fn session() -> DeviceSession {
    DeviceSession {
        session_id: Uuid::new_v4(),
        instance_id: Uuid::new_v4(),
    }
}

fn frame(expires_at: i64) -> NewQueuedFrame {
    NewQueuedFrame {
        frame_id: Uuid::new_v4(),
        kind: "notification".into(),
        payload: br#"{"type":"notification"}"#.to_vec(),
        expires_at,
    }
}

/// Connects `device_id` (its name is its id) with a limit of ten devices.
async fn hello(
    db: &dyn Database,
    user: UserId,
    device_id: &str,
    session: DeviceSession,
    now: i64,
) -> DeviceConnected {
    db.connect_device(user, device_id, &info(device_id), session, 10, now)
        .await
        .expect("connect a device")
}

/// The device, which must exist.
async fn get(db: &dyn Database, user: UserId, device_id: &str) -> Device {
    db.device(user, device_id)
        .await
        .expect("read a device")
        .expect("the device exists")
}

/// Queues a frame that never expires; its seq.
async fn enqueue(db: &dyn Database, user: UserId, device_id: &str, max_frames: u32) -> i64 {
    db.enqueue_frame(user, device_id, &frame(FOREVER), max_frames, 5)
        .await
        .expect("enqueue")
        .seq
}

/// The seqs queued for the device (all of them, none expired).
async fn seqs(db: &dyn Database, user: UserId, device_id: &str) -> Vec<i64> {
    db.queued_frames(user, device_id, 0, 5, 10_000)
        .await
        .expect("queued frames")
        .iter()
        .map(|f| f.seq)
        .collect()
}

/// A hello registers the device whole; the next one updates its info, keeps
/// `created_at`, and returns the live session it replaces. An unknown user is NotFound.
pub async fn devices_connect_update_and_replace(db: &dyn Database) {
    let user = stored_user(db, "dev", 1).await;
    let first = session();
    assert_eq!(
        hello(db, user.id, "laptop", first, 100).await,
        DeviceConnected {
            replaced: None,
            expired: 0
        }
    );
    assert_eq!(
        get(db, user.id, "laptop").await,
        Device {
            user_id: user.id,
            device_id: "laptop".into(),
            info: info("laptop"),
            session: Some(first),
            last_seen: 100,
            created_at: 100,
            expired_count: 0,
        }
    );
    let second = session();
    let mut newer = info("Work laptop");
    newer.app_version = "2.0.0".into();
    newer.capabilities = vec![];
    let connected = db
        .connect_device(user.id, "laptop", &newer, second, 10, 200)
        .await
        .expect("reconnect");
    assert_eq!(
        connected.replaced,
        Some(first),
        "the replaced session is returned"
    );
    let got = get(db, user.id, "laptop").await;
    assert_eq!(
        (got.info, got.session, got.last_seen, got.created_at),
        (newer, Some(second), 200, 100),
        "info and session updated, created_at kept"
    );
    // A hello after a disconnect replaces nothing.
    assert!(
        db.disconnect_device(user.id, "laptop", second.session_id, 300)
            .await
            .expect("disconnect")
    );
    assert_eq!(
        hello(db, user.id, "laptop", session(), 400).await.replaced,
        None
    );
    assert_not_found(
        db.connect_device(UserId::new(), "x", &info("x"), session(), 10, 1)
            .await,
        "a hello of an unknown user",
    );
}

/// At `max_devices` a new device is a Conflict and writes nothing; a known device still
/// reconnects; other users' devices do not count.
pub async fn devices_limit_admits_known_devices_only(db: &dyn Database) {
    let user = stored_user(db, "devlimit", 1).await;
    let other = stored_user(db, "devlimit-other", 1).await;
    for i in 0..3 {
        hello(db, other.id, &format!("o{i}"), session(), 1).await;
    }
    for id in ["a", "b"] {
        db.connect_device(user.id, id, &info(id), session(), 2, 10)
            .await
            .expect("within the limit");
    }
    let refused = db
        .connect_device(user.id, "c", &info("c"), session(), 2, 20)
        .await;
    assert!(
        matches!(&refused, Err(RepoError::Conflict(rule)) if rule == "devices.limit"),
        "a third device over a limit of two is Conflict(\"devices.limit\"): {refused:?}"
    );
    assert_eq!(db.device(user.id, "c").await.expect("read"), None);
    assert_eq!(
        db.list_devices(user.id).await.expect("list").len(),
        2,
        "nothing written"
    );
    let again = session();
    db.connect_device(user.id, "a", &info("a"), again, 2, 30)
        .await
        .expect("a known device reconnects at the limit");
    assert_eq!(get(db, user.id, "a").await.session, Some(again));
    assert_conflict(
        db.connect_device(user.id, "c", &info("c"), session(), 1, 40)
            .await,
        "over a limit lowered below the count",
    );
    db.delete_device(user.id, "b").await.expect("delete");
    db.connect_device(user.id, "c", &info("c"), session(), 2, 50)
        .await
        .expect("a deleted device frees its place");
}

/// Concurrent hellos of new devices of one user never exceed the limit.
pub async fn devices_concurrent_hellos_respect_the_limit(db: &dyn Database) {
    let user = stored_user(db, "devrace", 1).await;
    let ids: Vec<String> = (0..10).map(|i| format!("race-{i}")).collect();
    let infos: Vec<DeviceInfo> = ids.iter().map(|id| info(id)).collect();
    let results = futures::future::join_all(
        ids.iter()
            .zip(&infos)
            .map(|(id, i)| db.connect_device(user.id, id, i, session(), 3, 7)),
    )
    .await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(RepoError::Conflict(_))))
        .count();
    assert_eq!(
        (ok, refused),
        (3, 7),
        "exactly three of ten new devices fit a limit of three: {results:?}"
    );
    assert_eq!(db.list_devices(user.id).await.expect("list").len(), 3);
}

/// Disconnect ends only the live session; a replaced or unknown one is false.
pub async fn devices_disconnect_only_the_live_session(db: &dyn Database) {
    let user = stored_user(db, "devdisc", 1).await;
    let old = session();
    let live = session();
    hello(db, user.id, "phone", old, 10).await;
    hello(db, user.id, "phone", live, 20).await;
    assert!(
        !db.disconnect_device(user.id, "phone", old.session_id, 30)
            .await
            .expect("disconnect"),
        "a replaced session does not end the live one"
    );
    let got = get(db, user.id, "phone").await;
    assert_eq!((got.session, got.last_seen), (Some(live), 20));
    assert!(
        db.disconnect_device(user.id, "phone", live.session_id, 40)
            .await
            .expect("disconnect")
    );
    let got = get(db, user.id, "phone").await;
    assert_eq!((got.session, got.last_seen), (None, 40));
    assert!(
        !db.disconnect_device(user.id, "phone", live.session_id, 50)
            .await
            .expect("disconnect"),
        "already ended"
    );
    assert!(
        !db.disconnect_device(user.id, "tablet", live.session_id, 50)
            .await
            .expect("disconnect"),
        "an unknown device"
    );
}

/// Heartbeats and releases address exactly the devices an instance holds live.
pub async fn devices_touch_and_release_by_instance(db: &dyn Database) {
    let user = stored_user(db, "devinst", 1).await;
    let other = stored_user(db, "devinst-other", 1).await;
    let here = Uuid::new_v4();
    let there = Uuid::new_v4();
    let on = |instance_id| DeviceSession {
        session_id: Uuid::new_v4(),
        instance_id,
    };
    hello(db, user.id, "d1", on(here), 10).await;
    hello(db, user.id, "d2", on(here), 10).await;
    hello(db, other.id, "d3", on(here), 10).await;
    hello(db, user.id, "d4", on(there), 10).await;
    let gone = on(here);
    hello(db, user.id, "d5", gone, 10).await;
    assert!(
        db.disconnect_device(user.id, "d5", gone.session_id, 11)
            .await
            .expect("disconnect")
    );
    assert_eq!(
        db.touch_instance_devices(here, 100).await.expect("touch"),
        3,
        "d1, d2 and another user's d3"
    );
    assert_eq!(get(db, user.id, "d1").await.last_seen, 100);
    assert_eq!(get(db, other.id, "d3").await.last_seen, 100);
    assert_eq!(
        get(db, user.id, "d4").await.last_seen,
        10,
        "another instance"
    );
    assert_eq!(get(db, user.id, "d5").await.last_seen, 11, "not held");
    assert_eq!(
        db.release_instance_devices(here, 200)
            .await
            .expect("release"),
        3
    );
    let d2 = get(db, user.id, "d2").await;
    assert_eq!((d2.session, d2.last_seen), (None, 200));
    assert_eq!(get(db, other.id, "d3").await.session, None);
    assert!(get(db, user.id, "d4").await.session.is_some(), "still held");
    assert_eq!(
        db.touch_instance_devices(here, 300).await.expect("touch"),
        0
    );
    assert_eq!(
        db.release_instance_devices(here, 300)
            .await
            .expect("release"),
        0
    );
}

/// `devices_with_queued_frames` names exactly the devices an instance holds that have
/// unexpired frames waiting: not another instance's, not one without a live session,
/// not one whose frames all expired or were acked.
pub async fn devices_with_queued_frames_of_one_instance(db: &dyn Database) {
    let user = stored_user(db, "devqueued", 1).await;
    let other = stored_user(db, "devqueued-other", 1).await;
    let here = Uuid::new_v4();
    let on = |instance_id| DeviceSession {
        session_id: Uuid::new_v4(),
        instance_id,
    };
    for (u, d) in [(user.id, "full"), (user.id, "empty"), (other.id, "theirs")] {
        hello(db, u, d, on(here), 10).await;
    }
    hello(db, user.id, "elsewhere", on(Uuid::new_v4()), 10).await;
    let gone = on(here);
    hello(db, user.id, "offline", gone, 10).await;
    for (u, d) in [
        (user.id, "full"),
        (other.id, "theirs"),
        (user.id, "elsewhere"),
        (user.id, "offline"),
    ] {
        enqueue(db, u, d, 100).await;
    }
    assert!(
        db.disconnect_device(user.id, "offline", gone.session_id, 11)
            .await
            .expect("disconnect")
    );
    let stale = db
        .enqueue_frame(user.id, "empty", &frame(50), 100, 5)
        .await
        .expect("enqueue");
    let mut found = db
        .devices_with_queued_frames(here, 50)
        .await
        .expect("devices with frames");
    found.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        found,
        vec![
            (user.id, "full".to_owned()),
            (other.id, "theirs".to_owned())
        ],
        "held here, frames not expired at 50 (\"empty\"'s expires at 50)"
    );
    assert!(
        db.devices_with_queued_frames(here, 49)
            .await
            .expect("devices with frames")
            .iter()
            .any(|(_, d)| d == "empty"),
        "before its frame expires: {stale:?}"
    );
    let queued = db
        .queued_frames(other.id, "theirs", 0, 5, 10)
        .await
        .expect("frames");
    for f in queued {
        assert!(
            db.ack_frame(other.id, "theirs", f.frame_id)
                .await
                .expect("ack")
        );
    }
    assert_eq!(
        db.devices_with_queued_frames(here, 50)
            .await
            .expect("devices with frames"),
        vec![(user.id, "full".to_owned())],
        "acked: nothing waits for \"theirs\""
    );
}

/// `list_devices` is the user's devices, oldest first, then by id (bytewise).
pub async fn devices_list_oldest_first_then_by_id(db: &dyn Database) {
    let user = stored_user(db, "devlist", 1).await;
    let other = stored_user(db, "devlist-other", 1).await;
    hello(db, user.id, "zeta", session(), 1).await;
    hello(db, user.id, "a", session(), 2).await;
    hello(db, user.id, "B", session(), 2).await;
    hello(db, user.id, "alpha", session(), 3).await;
    hello(db, other.id, "aaa", session(), 0).await;
    // A later hello changes last_seen, not the order.
    hello(db, user.id, "zeta", session(), 9).await;
    let ids: Vec<String> = db
        .list_devices(user.id)
        .await
        .expect("list")
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    assert_eq!(ids, ["zeta", "B", "a", "alpha"]);
    assert!(
        db.list_devices(UserId::new())
            .await
            .expect("list")
            .is_empty()
    );
}

/// Another user's device is invisible: None, NotFound, empty, false — and untouched.
pub async fn devices_of_another_user_are_invisible(db: &dyn Database) {
    let owner = stored_user(db, "devown", 1).await;
    let intruder = stored_user(db, "devintr", 1).await;
    let live = session();
    hello(db, owner.id, "desk", live, 10).await;
    let queued = db
        .enqueue_frame(owner.id, "desk", &frame(FOREVER), 10, 5)
        .await
        .expect("enqueue");
    let me = intruder.id;
    assert_eq!(db.device(me, "desk").await.expect("read"), None);
    assert_not_found(db.delete_device(me, "desk").await, "delete");
    assert_not_found(
        db.enqueue_frame(me, "desk", &frame(FOREVER), 10, 5).await,
        "enqueue",
    );
    let mut known = frame(FOREVER);
    known.frame_id = queued.frame_id;
    assert_not_found(
        db.enqueue_frame(me, "desk", &known, 10, 5).await,
        "enqueue with a frame id queued elsewhere (no probing of ids)",
    );
    assert!(
        db.queued_frames(me, "desk", 0, 5, 100)
            .await
            .expect("frames")
            .is_empty()
    );
    assert_eq!(db.queued_count(me, "desk", 5).await.expect("count"), 0);
    assert!(
        !db.ack_frame(me, "desk", queued.frame_id)
            .await
            .expect("ack")
    );
    assert!(
        !db.disconnect_device(me, "desk", live.session_id, 20)
            .await
            .expect("disconnect")
    );
    assert!(db.list_devices(me).await.expect("list").is_empty());
    let kept = get(db, owner.id, "desk").await;
    assert_eq!((kept.session, kept.last_seen), (Some(live), 10));
    assert_eq!(
        db.queued_frames(owner.id, "desk", 0, 5, 100)
            .await
            .expect("frames"),
        vec![queued],
        "the owner's queue is untouched"
    );
}

/// Deleting a device returns it as it was and takes its queue; its id starts afresh.
pub async fn devices_delete_cascades_the_queue(db: &dyn Database) {
    let user = stored_user(db, "devdel", 1).await;
    hello(db, user.id, "old", session(), 10).await;
    hello(db, user.id, "kept", session(), 10).await;
    let first = db
        .enqueue_frame(user.id, "old", &frame(FOREVER), 10, 5)
        .await
        .expect("enqueue");
    enqueue(db, user.id, "old", 10).await;
    enqueue(db, user.id, "kept", 10).await;
    let before = get(db, user.id, "old").await;
    assert_eq!(
        db.delete_device(user.id, "old").await.expect("delete"),
        before
    );
    assert_eq!(db.device(user.id, "old").await.expect("read"), None);
    assert_not_found(db.delete_device(user.id, "old").await, "deleted twice");
    assert_not_found(
        db.enqueue_frame(user.id, "old", &frame(FOREVER), 10, 5)
            .await,
        "enqueue to a deleted device",
    );
    assert_eq!(db.queued_count(user.id, "old", 5).await.expect("count"), 0);
    assert!(
        !db.ack_frame(user.id, "old", first.frame_id)
            .await
            .expect("ack")
    );
    assert_eq!(
        seqs(db, user.id, "kept").await,
        [1],
        "other devices keep theirs"
    );
    // The rows are gone, not hidden: the same id registers anew and its frame id is free.
    hello(db, user.id, "old", session(), 20).await;
    assert_eq!(get(db, user.id, "old").await.created_at, 20);
    let mut reused = frame(FOREVER);
    reused.frame_id = first.frame_id;
    let again = db
        .enqueue_frame(user.id, "old", &reused, 10, 5)
        .await
        .expect("the deleted frame's id is free");
    assert_eq!(again.seq, 1, "a new device's queue starts at 1");
}

/// Deleting the user takes their devices and queues.
pub async fn devices_go_with_their_user(db: &dyn Database) {
    let user = stored_user(db, "devuser", 1).await;
    let other = stored_user(db, "devuser-other", 1).await;
    hello(db, user.id, "d", session(), 10).await;
    hello(db, other.id, "d", session(), 10).await;
    let queued = db
        .enqueue_frame(user.id, "d", &frame(FOREVER), 10, 5)
        .await
        .expect("enqueue");
    db.delete_user(user.id).await.expect("delete the user");
    assert_eq!(db.device(user.id, "d").await.expect("read"), None);
    assert!(db.list_devices(user.id).await.expect("list").is_empty());
    assert_eq!(db.queued_count(user.id, "d", 5).await.expect("count"), 0);
    let mut reused = frame(FOREVER);
    reused.frame_id = queued.frame_id;
    db.enqueue_frame(other.id, "d", &reused, 10, 5)
        .await
        .expect("the frame row went with the user");
    assert!(get(db, other.id, "d").await.session.is_some());
}

/// Seqs increase from 1; `queued_frames` filters by seq and expiry, orders by seq and
/// takes at most `limit`; `queued_count` counts the unexpired; a duplicate frame id is a
/// Conflict that takes no seq.
pub async fn device_queue_orders_filters_and_counts(db: &dyn Database) {
    let user = stored_user(db, "devq", 1).await;
    hello(db, user.id, "d", session(), 10).await;
    let expiries = [FOREVER, 50, FOREVER, 100, FOREVER];
    let mut queued = Vec::new();
    for (i, expires_at) in expiries.into_iter().enumerate() {
        let mut f = frame(expires_at);
        f.kind = format!("kind-{i}");
        let q = db
            .enqueue_frame(user.id, "d", &f, 10, 20 + i as i64)
            .await
            .expect("enqueue");
        assert_eq!(
            (
                q.seq,
                q.frame_id,
                q.kind,
                q.payload,
                q.created_at,
                q.expires_at
            ),
            (
                i as i64 + 1,
                f.frame_id,
                f.kind,
                f.payload,
                20 + i as i64,
                expires_at
            ),
            "the queued frame is what was given, with the next seq and created_at = now"
        );
        queued.push(
            db.queued_frames(user.id, "d", i as i64, 0, 1)
                .await
                .expect("read")[0]
                .clone(),
        );
    }
    assert_conflict(
        db.enqueue_frame(user.id, "d", &frame_with(queued[0].frame_id), 10, 30)
            .await,
        "a duplicate frame id",
    );
    let at = |now: i64, after: i64, limit: u32| async move {
        db.queued_frames(user.id, "d", after, now, limit)
            .await
            .expect("read")
            .iter()
            .map(|f| f.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(at(0, 0, 100).await, [1, 2, 3, 4, 5]);
    assert_eq!(
        at(50, 0, 100).await,
        [1, 3, 4, 5],
        "expires_at = now is expired"
    );
    assert_eq!(at(100, 0, 100).await, [1, 3, 5]);
    assert_eq!(at(0, 2, 100).await, [3, 4, 5], "after_seq");
    assert_eq!(at(0, 0, 2).await, [1, 2], "limit");
    assert_eq!(at(50, 1, 2).await, [3, 4], "all three together");
    assert_eq!(at(0, 5, 100).await, Vec::<i64>::new());
    assert_eq!(
        db.queued_frames(user.id, "d", 0, 0, 100)
            .await
            .expect("read"),
        queued,
        "whole frames come back"
    );
    assert_eq!(db.queued_count(user.id, "d", 0).await.expect("count"), 5);
    assert_eq!(db.queued_count(user.id, "d", 100).await.expect("count"), 3);
    assert_eq!(
        enqueue(db, user.id, "d", 10).await,
        6,
        "the refused duplicate took no seq"
    );
}

fn frame_with(frame_id: Uuid) -> NewQueuedFrame {
    NewQueuedFrame {
        frame_id,
        ..frame(FOREVER)
    }
}

/// An ack removes the frame once; then, or for an unknown frame, it is false.
pub async fn device_queue_ack_removes_once(db: &dyn Database) {
    let user = stored_user(db, "devack", 1).await;
    hello(db, user.id, "d", session(), 10).await;
    hello(db, user.id, "e", session(), 10).await;
    let a = db
        .enqueue_frame(user.id, "d", &frame(FOREVER), 10, 5)
        .await
        .expect("enqueue");
    enqueue(db, user.id, "d", 10).await;
    assert!(
        !db.ack_frame(user.id, "e", a.frame_id).await.expect("ack"),
        "not this device's frame"
    );
    assert!(db.ack_frame(user.id, "d", a.frame_id).await.expect("ack"));
    assert!(
        !db.ack_frame(user.id, "d", a.frame_id).await.expect("ack"),
        "acked already"
    );
    assert!(
        !db.ack_frame(user.id, "d", Uuid::new_v4())
            .await
            .expect("ack")
    );
    assert_eq!(seqs(db, user.id, "d").await, [2]);
    assert_eq!(db.queued_count(user.id, "d", 5).await.expect("count"), 1);
}

/// Over `max_frames` the oldest go and are counted; a hello takes and resets the count.
pub async fn device_queue_bound_drops_the_oldest(db: &dyn Database) {
    let user = stored_user(db, "devbound", 1).await;
    hello(db, user.id, "d", session(), 10).await;
    for _ in 0..5 {
        enqueue(db, user.id, "d", 3).await;
    }
    assert_eq!(
        seqs(db, user.id, "d").await,
        [3, 4, 5],
        "the newest three stay"
    );
    assert_eq!(get(db, user.id, "d").await.expired_count, 2);
    assert_eq!(enqueue(db, user.id, "d", 3).await, 6, "seqs go on");
    assert_eq!(seqs(db, user.id, "d").await, [4, 5, 6]);
    assert_eq!(
        hello(db, user.id, "d", session(), 20).await.expired,
        3,
        "the hello takes the count"
    );
    assert_eq!(
        get(db, user.id, "d").await.expired_count,
        0,
        "and resets it"
    );
    assert_eq!(hello(db, user.id, "d", session(), 30).await.expired, 0);
    assert_eq!(
        seqs(db, user.id, "d").await,
        [4, 5, 6],
        "a hello does not touch the queue"
    );
    // The bound counts frames, not seqs: an acked frame leaves room.
    hello(db, user.id, "h", session(), 10).await;
    let first = db
        .enqueue_frame(user.id, "h", &frame(FOREVER), 3, 5)
        .await
        .expect("enqueue");
    let second = db
        .enqueue_frame(user.id, "h", &frame(FOREVER), 3, 5)
        .await
        .expect("enqueue");
    enqueue(db, user.id, "h", 3).await;
    assert!(
        db.ack_frame(user.id, "h", second.frame_id)
            .await
            .expect("ack")
    );
    enqueue(db, user.id, "h", 3).await;
    assert_eq!(seqs(db, user.id, "h").await, [1, 3, 4], "three frames fit");
    assert_eq!(get(db, user.id, "h").await.expired_count, 0);
    enqueue(db, user.id, "h", 3).await;
    assert_eq!(seqs(db, user.id, "h").await, [3, 4, 5]);
    assert!(
        !db.ack_frame(user.id, "h", first.frame_id)
            .await
            .expect("ack"),
        "a dropped frame is not queued"
    );
    assert_eq!(get(db, user.id, "h").await.expired_count, 1);
}

/// `expire_frames` deletes what expired at `now` and counts it into each device's
/// `expired_count`.
pub async fn device_queue_expiry_is_counted(db: &dyn Database) {
    // A window of time only this check uses: first sweep whatever others left before it.
    const T: i64 = 5_000_000_000_000;
    db.expire_frames(T).await.expect("sweep what came before");
    let user = stored_user(db, "devexp", 1).await;
    hello(db, user.id, "d", session(), 10).await;
    hello(db, user.id, "e", session(), 10).await;
    for (device, expires_at) in [("d", T + 10), ("d", T + 20), ("e", T + 10), ("d", FOREVER)] {
        db.enqueue_frame(user.id, device, &frame(expires_at), 10, 5)
            .await
            .expect("enqueue");
    }
    assert_eq!(db.expire_frames(T + 9).await.expect("expire"), 0);
    assert_eq!(db.expire_frames(T + 10).await.expect("expire"), 2);
    assert_eq!(db.expire_frames(T + 10).await.expect("expire"), 0, "once");
    assert_eq!(db.expire_frames(T + 25).await.expect("expire"), 1);
    assert_eq!(get(db, user.id, "d").await.expired_count, 2);
    assert_eq!(get(db, user.id, "e").await.expired_count, 1);
    assert_eq!(
        seqs(db, user.id, "d").await,
        [3],
        "only the live frame is left"
    );
    assert_eq!(db.queued_count(user.id, "e", 0).await.expect("count"), 0);
    assert_eq!(hello(db, user.id, "d", session(), 20).await.expired, 2);
}

/// Payloads are bytes, returned exactly: empty, every byte value (not UTF-8), and 1 MiB.
pub async fn device_queue_payloads_round_trip(db: &dyn Database) {
    let user = stored_user(db, "devbytes", 1).await;
    hello(db, user.id, "d", session(), 10).await;
    let every_byte: Vec<u8> = (0..=255u8).rev().collect();
    // A cheap deterministic pattern that is not valid UTF-8 either.
    let mib: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let payloads = [Vec::new(), every_byte, mib];
    for p in &payloads {
        let mut f = frame(FOREVER);
        f.payload = p.clone();
        db.enqueue_frame(user.id, "d", &f, 10, 5)
            .await
            .expect("enqueue");
    }
    let got: Vec<Vec<u8>> = db
        .queued_frames(user.id, "d", 0, 5, 10)
        .await
        .expect("read")
        .into_iter()
        .map(|f| f.payload)
        .collect();
    assert!(got == payloads, "payload bytes differ after a round trip");
}

/// Eight concurrent writers × 25 frames to one device get seqs 1..=200, and a reader that
/// follows the queue by `after_seq` meanwhile misses none (seq order is commit order).
pub async fn device_queue_concurrent_enqueues_serialise(db: &dyn Database) {
    let user = stored_user(db, "devconc", 1).await;
    hello(db, user.id, "d", session(), 10).await;
    let done = AtomicBool::new(false);
    let writers = async {
        let results = futures::future::join_all((0..8).map(|_| async {
            let mut got = Vec::new();
            for _ in 0..25 {
                got.push(enqueue(db, user.id, "d", 1_000).await);
            }
            got
        }))
        .await;
        done.store(true, Ordering::SeqCst);
        results
    };
    let reader = async {
        let mut seen: Vec<i64> = Vec::new();
        loop {
            // Read `finished` first: the read after it then sees every commit.
            let finished = done.load(Ordering::SeqCst);
            let after = seen.last().copied().unwrap_or(0);
            let page = db
                .queued_frames(user.id, "d", after, 5, 1_000)
                .await
                .expect("follow the queue");
            seen.extend(page.iter().map(|f| f.seq));
            if finished {
                return seen;
            }
            // Lets the writers run when the database answers without waiting (MemoryDb).
            tokio::task::yield_now().await;
        }
    };
    let (written, seen) = futures::join!(writers, reader);
    let mut all: Vec<i64> = written.into_iter().flatten().collect();
    for w in all.chunks(25) {
        assert!(
            w.windows(2).all(|p| p[0] < p[1]),
            "one writer's seqs increase"
        );
    }
    all.sort_unstable();
    let expected: Vec<i64> = (1..=200).collect();
    assert_eq!(all, expected, "200 distinct seqs without a gap");
    assert_eq!(
        seen, expected,
        "a reader following by after_seq saw every frame, in order"
    );
}
