//! Hello, presence, replacement, forgetting, shutdown.

use adiuva_core::Error;
use adiuva_core::devices::{DeviceConfig, DeviceRequest, Hello, Queued};
use adiuva_core::ports::db::DeviceRepo;
use serde_json::{Map, json};

use super::support::*;

fn expect_validation(r: Result<TestDevice, Error>, want: &str) {
    match r {
        Err(Error::Validation { field, .. }) => assert_eq!(field, want),
        Err(other) => panic!("expected a validation error on {want}, got {other:?}"),
        Ok(_) => panic!("expected a validation error on {want}, the hello was accepted"),
    }
}

/// Makes a valid hello break one rule.
type Breaks = Box<dyn Fn(&mut Hello)>;

#[tokio::test]
async fn a_hello_that_breaks_a_rule_is_refused_naming_the_field() {
    let env = Env::new(config()).await;
    let u = env.user().await;
    let bad: Vec<(&str, Breaks)> = vec![
        ("device_id", Box::new(|h| h.device_id = String::new())),
        ("device_id", Box::new(|h| h.device_id = "a".repeat(129))),
        ("device_id", Box::new(|h| h.device_id = "has space".into())),
        ("device_id", Box::new(|h| h.device_id = "slash/no".into())),
        ("name", Box::new(|h| h.name = String::new())),
        ("name", Box::new(|h| h.name = "   ".into())),
        ("name", Box::new(|h| h.name = "n".repeat(201))),
        ("name", Box::new(|h| h.name = "bell\u{7}".into())),
        ("platform", Box::new(|h| h.platform = "p".repeat(65))),
        ("app_version", Box::new(|h| h.app_version = "1.0\n".into())),
        (
            "capabilities",
            Box::new(|h| h.capabilities = vec!["c".into(); 33]),
        ),
        (
            "capabilities",
            Box::new(|h| h.capabilities = vec![String::new()]),
        ),
        (
            "capabilities",
            Box::new(|h| h.capabilities = vec!["x".repeat(65)]),
        ),
    ];
    for (field, breaks) in bad {
        let mut h = hello("desk");
        breaks(&mut h);
        expect_validation(connect_with(&env.a, &u, h, 8).await, field);
    }
    assert!(
        env.a.list(u.user.id).await.unwrap().is_empty(),
        "nothing was registered"
    );

    // The limits themselves are allowed.
    let mut h = hello(&format!("{}.-_:", "A9".repeat(62)));
    h.name = "n".repeat(200);
    h.platform = String::new();
    h.capabilities = vec!["c".repeat(64); 32];
    let mut d = connect_with(&env.a, &u, h, 8)
        .await
        .expect("the limits are allowed");
    assert_eq!(d.hello_ack().await, (0, 0));
}

#[tokio::test]
async fn hello_ack_comes_first_with_what_is_pending_and_what_expired() {
    let env = Env::new(DeviceConfig {
        queue_max_frames: 2,
        ..config()
    })
    .await;
    let u = env.user().await;
    connect(&env.a, &u, "desk").await.close().await;
    for n in 0..3 {
        let note = Queued::Notification {
            kind: "message".into(),
            payload: json!({ "n": n }),
        };
        env.b.enqueue(u.user.id, "desk", note).await.unwrap();
    }
    let mut d = connect(&env.b, &u, "desk").await;
    assert_eq!(
        d.hello_ack().await,
        (2, 1),
        "two pending, the oldest dropped"
    );
    assert_eq!(payload(&d.next().await), json!({"n": 1}));
    assert_eq!(payload(&d.next().await), json!({"n": 2}));
    d.close().await;
    // The expired count was taken by that hello.
    let mut d = connect(&env.a, &u, "desk").await;
    assert_eq!(d.hello_ack().await, (2, 0));
}

#[tokio::test]
async fn list_shows_every_device_with_presence_and_last_seen() {
    let env = Env::new(config()).await;
    let u = env.user().await;
    let desk = connect(&env.a, &u, "desk").await;
    let t0 = env.now();
    env.clock.advance(10);
    let _laptop = connect(&env.b, &u, "laptop").await;

    for hub in [&env.a, &env.b] {
        let list = hub.list(u.user.id).await.unwrap();
        let ids: Vec<_> = list.iter().map(|d| d.device_id.as_str()).collect();
        assert_eq!(ids, ["desk", "laptop"], "oldest first");
        assert!(list.iter().all(|d| d.online));
        assert_eq!(list[0].last_seen, t0);
        assert_eq!(list[0].name, "Work laptop");
        assert_eq!(list[0].platform, "linux");
        assert_eq!(list[0].app_version, "1.2.3");
        assert_eq!(list[0].capabilities, ["tools"]);
        assert_eq!(list[0].created_at, t0);
    }

    env.clock.advance(5);
    let closed_at = env.now();
    desk.close().await;
    let desk = env.b.require(u.user.id, "desk").await.unwrap();
    assert!(!desk.online, "offline at once after its socket closed");
    assert_eq!(desk.last_seen, closed_at);
    assert!(env.b.require(u.user.id, "laptop").await.unwrap().online);
}

#[tokio::test]
async fn a_device_whose_holder_died_goes_offline_after_the_ttl() {
    let mut env = Env::new(config()).await;
    let u = env.user().await;
    let _d = connect(&env.b, &u, "desk").await;
    let ttl = env.a.config().presence_ttl.as_millis() as i64;

    // While B lives, its heartbeat keeps the device online past the TTL.
    env.clock.advance(ttl + 1);
    eventually("B's heartbeat refreshes the device", || async {
        env.a.require(u.user.id, "desk").await.unwrap().online
    })
    .await;

    // B dies without a shutdown: no heartbeat, no close.
    env.b_task = None;
    assert!(env.a.require(u.user.id, "desk").await.unwrap().online);
    env.clock.advance(ttl + 1);
    let status = env.a.require(u.user.id, "desk").await.unwrap();
    assert!(
        !status.online,
        "offline once the TTL passed without a heartbeat"
    );
    let asked = env.a.call(u.user.id, "desk", tool("list_tasks")).await;
    assert_eq!(asked.unwrap_err(), "the device is offline");
}

pub fn tool(name: &str) -> DeviceRequest {
    DeviceRequest::Tool {
        name: name.into(),
        arguments: Map::new(),
    }
}

#[tokio::test]
async fn a_second_connection_replaces_the_first_on_the_same_instance() {
    let env = Env::new(config()).await;
    let u = env.user().await;
    let old = connect(&env.a, &u, "desk").await;
    let mut new = connect(&env.a, &u, "desk").await;
    assert_eq!(old.closed_reason().await, "replaced by a newer connection");
    assert!(!new.is_closed());
    // The old socket's close does not end the new session.
    old.close().await;
    assert!(env.b.require(u.user.id, "desk").await.unwrap().online);
    new.hello_ack().await;
    let answering = new.answer_calls(|_| Ok(json!("new")));
    let r = within("call", env.b.call(u.user.id, "desk", tool("list_tasks"))).await;
    assert_eq!(r.unwrap(), json!("new"));
    drop(answering);
}

#[tokio::test]
async fn a_second_connection_replaces_the_first_on_the_other_instance() {
    let env = Env::new(config()).await;
    let u = env.user().await;
    let old = connect(&env.a, &u, "desk").await;
    let new = connect(&env.b, &u, "desk").await;
    assert_eq!(old.closed_reason().await, "replaced by a newer connection");
    old.close().await;
    assert!(env.a.require(u.user.id, "desk").await.unwrap().online);
    let answering = new.answer_calls(|_| Ok(json!("on b")));
    let r = within("call", env.a.call(u.user.id, "desk", tool("list_tasks"))).await;
    assert_eq!(r.unwrap(), json!("on b"));
    assert!(!answering.is_closed());
}

#[tokio::test]
async fn forgetting_a_device_closes_its_socket_on_either_instance() {
    let env = Env::new(config()).await;
    let u = env.user().await;
    let on_b = connect(&env.b, &u, "desk").await;
    let on_a = connect(&env.a, &u, "laptop").await;
    env.a.forget(u.user.id, "desk").await.unwrap();
    env.a.forget(u.user.id, "laptop").await.unwrap();
    assert_eq!(on_b.closed_reason().await, "device forgotten");
    assert_eq!(on_a.closed_reason().await, "device forgotten");
    on_b.close().await;
    on_a.close().await;
    assert!(env.b.list(u.user.id).await.unwrap().is_empty());
    assert!(matches!(
        env.b.require(u.user.id, "desk").await,
        Err(Error::NotFound("device"))
    ));
    assert!(matches!(
        env.b.forget(u.user.id, "desk").await,
        Err(Error::NotFound("device"))
    ));
}

#[tokio::test]
async fn another_users_device_is_not_found() {
    let env = Env::new(config()).await;
    let owner = env.user().await;
    let other = env.user().await;
    let d = connect(&env.a, &owner, "desk").await;
    let _answering = d.answer_calls(|_| Ok(json!("owner's")));
    let them = other.user.id;

    assert!(env.b.list(them).await.unwrap().is_empty());
    assert!(matches!(
        env.b.require(them, "desk").await,
        Err(Error::NotFound("device"))
    ));
    assert!(matches!(
        env.b.forget(them, "desk").await,
        Err(Error::NotFound("device"))
    ));
    let note = Queued::Notification {
        kind: "message".into(),
        payload: json!({}),
    };
    assert!(matches!(
        env.b.enqueue(them, "desk", note).await,
        Err(Error::NotFound("device"))
    ));
    let r = within("call", env.b.call(them, "desk", tool("list_tasks"))).await;
    assert_eq!(r.unwrap_err(), "no such device is registered");
    // The owner's device is untouched.
    assert!(env.a.require(owner.user.id, "desk").await.unwrap().online);
}

#[tokio::test]
async fn a_user_may_register_a_bounded_number_of_devices() {
    let env = Env::new(DeviceConfig {
        max_devices_per_user: 2,
        ..config()
    })
    .await;
    let u = env.user().await;
    let _one = connect(&env.a, &u, "one").await;
    let _two = connect(&env.b, &u, "two").await;
    match connect_with(&env.a, &u, hello("three"), 8).await {
        Err(Error::Forbidden { code, detail }) => {
            assert_eq!(code, "too_many_devices");
            assert!(detail.contains('2'), "{detail}");
        }
        other => panic!("expected too_many_devices, got {:?}", other.map(|d| d.conn)),
    }
    // A known device may always reconnect.
    let _again = connect(&env.a, &u, "two").await;
    env.a.forget(u.user.id, "one").await.unwrap();
    let _three = connect(&env.a, &u, "three").await;
}

#[tokio::test]
async fn shutdown_closes_the_sockets_and_other_instances_see_them_offline_at_once() {
    let env = Env::new(config()).await;
    let u = env.user().await;
    let d = connect(&env.b, &u, "desk").await;
    env.b.shutdown().await;
    assert_eq!(d.closed_reason().await, "server shutting down");
    assert!(!env.a.require(u.user.id, "desk").await.unwrap().online);
    d.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_hellos_for_one_device_leave_exactly_the_live_session_open() {
    let env = Env::new(config()).await;
    let u = env.user().await;
    let mut kept = Vec::new();
    for round in 0..20 {
        let (x, y) = futures::join!(
            connect(&env.a, &u, "desk"),
            connect(if round % 2 == 0 { &env.b } else { &env.a }, &u, "desk"),
        );
        let live = env
            .db
            .device(u.user.id, "desk")
            .await
            .unwrap()
            .and_then(|d| d.session)
            .expect("a live session")
            .session_id;
        let (winner, loser) = if x.conn.session_id == live {
            (x, y)
        } else {
            (y, x)
        };
        assert_eq!(winner.conn.session_id, live);
        assert_eq!(
            loser.closed_reason().await,
            "replaced by a newer connection"
        );
        assert!(
            !winner.is_closed(),
            "round {round}: the live session stays open"
        );
        loser.close().await;
        kept.push(winner);
    }
    // Each round's winner was replaced by the next round's hellos.
    let last = kept.pop().expect("a last winner");
    for earlier in &kept {
        assert_eq!(
            earlier.closed_reason().await,
            "replaced by a newer connection"
        );
    }
    assert!(!last.is_closed());
    assert!(env.a.require(u.user.id, "desk").await.unwrap().online);
}
