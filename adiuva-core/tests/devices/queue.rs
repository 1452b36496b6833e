//! The durable queue: order, delivery while online, re-sending until acked, its bound
//! and age, and a long queue to a slow reader.

use std::time::{Duration, Instant};

use adiuva_core::Error;
use adiuva_core::devices::{DeviceConfig, FromDevice, MAX_QUEUED_FRAME_BYTES, Queued, ToDevice};
use adiuva_core::ports::db::DeviceRepo;
use serde_json::json;

use super::support::*;

fn note(n: usize) -> Queued {
    Queued::Notification {
        kind: "message".into(),
        payload: json!({ "n": n }),
    }
}

async fn ack(d: &TestDevice, frame: &ToDevice) {
    d.receive(FromDevice::Ack {
        id: frame_id(frame),
    })
    .await
    .expect("ack taken");
}

#[tokio::test]
async fn frames_queued_on_one_instance_reach_a_device_online_on_the_other_in_order() {
    let env = Env::new(config()).await;
    let u = env.user().await;
    let mut d = connect(&env.b, &u, "desk").await;
    assert_eq!(d.hello_ack().await, (0, 0));
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(env.a.enqueue(u.user.id, "desk", note(n)).await.unwrap());
    }
    let trigger = Queued::AgentTrigger {
        agent_id: "weekly".into(),
        run_id: "r1".into(),
        input: json!({"week": 48}),
    };
    ids.push(env.b.enqueue(u.user.id, "desk", trigger).await.unwrap());
    for (n, id) in ids.iter().enumerate().take(5) {
        let f = d.next().await;
        assert_eq!(frame_id(&f), id.to_string());
        assert_eq!(payload(&f), json!({ "n": n }));
        ack(&d, &f).await;
    }
    match d.next().await {
        ToDevice::AgentTrigger {
            id,
            agent_id,
            run_id,
            input,
        } => {
            assert_eq!(id, ids[5].to_string());
            assert_eq!((agent_id.as_str(), run_id.as_str()), ("weekly", "r1"));
            assert_eq!(input, json!({"week": 48}));
        }
        other => panic!("expected the agent trigger, got {other:?}"),
    }
}

#[tokio::test]
async fn unacked_frames_are_sent_again_after_a_reconnect_and_acked_ones_never() {
    let env = Env::new(config()).await;
    let u = env.user().await;
    let mut d = connect(&env.a, &u, "desk").await;
    d.hello_ack().await;
    for n in 0..3 {
        env.a.enqueue(u.user.id, "desk", note(n)).await.unwrap();
    }
    let first = d.next().await;
    ack(&d, &first).await;
    let second = d.next().await;
    let third = d.next().await;
    assert_eq!(payload(&third), json!({"n": 2}));
    d.close().await;

    // Reconnecting on the other instance: the two unacked frames again, same ids.
    let mut d = connect(&env.b, &u, "desk").await;
    assert_eq!(d.hello_ack().await, (2, 0));
    let again = [d.next().await, d.next().await];
    assert_eq!(again[0], second);
    assert_eq!(again[1], third);
    for f in &again {
        ack(&d, f).await;
    }
    // Acking twice: the frame is gone.
    let twice = d
        .receive(FromDevice::Ack {
            id: frame_id(&again[0]),
        })
        .await;
    assert!(twice.is_err());
    d.close().await;

    let mut d = connect(&env.a, &u, "desk").await;
    assert_eq!(d.hello_ack().await, (0, 0));
    env.b.enqueue(u.user.id, "desk", note(3)).await.unwrap();
    assert_eq!(
        payload(&d.next().await),
        json!({"n": 3}),
        "nothing acked came back"
    );
}

#[tokio::test]
async fn the_queue_is_bounded_and_drops_the_oldest_first() {
    let env = Env::new(DeviceConfig {
        queue_max_frames: 3,
        ..config()
    })
    .await;
    let u = env.user().await;
    connect(&env.a, &u, "desk").await.close().await;
    for n in 0..7 {
        env.b.enqueue(u.user.id, "desk", note(n)).await.unwrap();
    }
    let mut d = connect(&env.a, &u, "desk").await;
    assert_eq!(d.hello_ack().await, (3, 4));
    for n in 4..7 {
        assert_eq!(payload(&d.next().await), json!({ "n": n }));
    }
}

#[tokio::test]
async fn frames_older_than_the_max_age_are_never_delivered_and_are_counted() {
    let env = Env::new(DeviceConfig {
        queue_max_age: Duration::from_secs(3600),
        ..config()
    })
    .await;
    let u = env.user().await;
    connect(&env.a, &u, "desk").await.close().await;
    env.a.enqueue(u.user.id, "desk", note(0)).await.unwrap();
    env.a.enqueue(u.user.id, "desk", note(1)).await.unwrap();
    env.clock.advance(3_600_000);
    env.a.enqueue(u.user.id, "desk", note(2)).await.unwrap();

    // Too old, even before expiry removed them.
    let mut d = connect(&env.b, &u, "desk").await;
    assert_eq!(d.hello_ack().await, (1, 0));
    assert_eq!(payload(&d.next().await), json!({"n": 2}));
    d.close().await;

    // The hubs' periodic expiry (every minute) removes and counts them; here it is run
    // once by hand rather than waited for.
    assert_eq!(env.db.expire_frames(env.now()).await.unwrap(), 2);
    let mut d = connect(&env.b, &u, "desk").await;
    assert_eq!(d.hello_ack().await, (1, 2));
}

#[tokio::test]
async fn ten_thousand_frames_reach_a_slow_reader_in_order() {
    const N: usize = 10_000;
    let env = Env::new(DeviceConfig {
        queue_max_frames: 20_000,
        ..config()
    })
    .await;
    let u = env.user().await;
    connect(&env.a, &u, "desk").await.close().await;
    for n in 0..N {
        env.a.enqueue(u.user.id, "desk", note(n)).await.unwrap();
    }
    // Room for 4 frames: delivery waits for the reader all the way.
    let started = Instant::now();
    let mut d = connect_with(&env.b, &u, hello("desk"), 4).await.unwrap();
    assert_eq!(d.hello_ack().await, (N as u64, 0));
    for n in 0..N {
        let f = d.next().await;
        assert_eq!(payload(&f), json!({ "n": n }));
        if n % 64 == 0 {
            // A slow reader: it stops now and then.
            tokio::task::yield_now().await;
        }
    }
    let took = started.elapsed();
    println!(
        "delivered {N} queued frames to a 4-frame link in {took:?} ({:.0} frames/s, MemoryDb, debug build)",
        N as f64 / took.as_secs_f64()
    );
    assert!(d.try_next().is_none(), "nothing more");
}

#[tokio::test]
async fn a_frame_over_the_size_cap_is_refused_and_nothing_is_queued() {
    let env = Env::new(config()).await;
    let u = env.user().await;
    connect(&env.a, &u, "desk").await.close().await;
    let big = Queued::Notification {
        kind: "message".into(),
        payload: json!({ "text": "x".repeat(MAX_QUEUED_FRAME_BYTES) }),
    };
    match env.a.enqueue(u.user.id, "desk", big).await {
        Err(Error::TooLarge { code, .. }) => assert_eq!(code, "frame_too_large"),
        other => panic!("expected frame_too_large, got {other:?}"),
    }
    let mut d = connect(&env.b, &u, "desk").await;
    assert_eq!(d.hello_ack().await, (0, 0));
}
