//! The durable queue as a device sees it (issue 11, item 5): frames queued through
//! `DeviceHub::enqueue` arrive in order with their ids, come again after a reconnect
//! until acked, and a queue over its bound expires its oldest frames, counted in
//! `hello_ack`.

use adiuva_core::devices::Queued;
use serde_json::json;

use crate::chat::{Socket, next, send, token};
use crate::devices::{online, until_online, user_of};
use crate::helpers::{spawn_app, spawn_app_with};

fn note(n: usize) -> Queued {
    Queued::Notification {
        kind: "message".into(),
        payload: json!({"n": n}),
    }
}

/// Queues notifications numbered `ns` for the device; their ids, in order.
async fn enqueue_notes(
    hub: &adiuva_core::devices::DeviceHub,
    user: adiuva_core::domain::UserId,
    device_id: &str,
    ns: std::ops::RangeInclusive<usize>,
) -> Vec<String> {
    let mut ids = Vec::new();
    for n in ns {
        let id = hub
            .enqueue(user, device_id, note(n))
            .await
            .expect("enqueue");
        ids.push(id.to_string());
    }
    ids
}

/// Reads `n` queued frames; their ids and payload numbers.
async fn queued(ws: &mut Socket, n: usize) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    while out.len() < n {
        let f = next(ws).await;
        assert_eq!(f["type"], "notification", "{f}");
        out.push((
            f["id"].as_str().expect("id").to_owned(),
            f["payload"]["n"].as_u64().expect("n"),
        ));
    }
    out
}

#[tokio::test]
async fn queued_frames_arrive_in_order_and_again_until_acked() {
    let app = spawn_app().await;
    let t = token(&app).await;
    let user = user_of(&app, &t).await;
    let hub = app.adiuva.devices();
    let (mut ws, _) = online(&app, &t, "laptop-1").await;
    // Online: delivered at once.
    let live = hub
        .enqueue(user, "laptop-1", note(0))
        .await
        .expect("enqueue");
    assert_eq!(queued(&mut ws, 1).await, [(live.to_string(), 0)]);
    send(&mut ws, json!({"type": "ack", "id": live.to_string()})).await;
    ws.close(None).await.expect("close");
    until_online(&app, &t, "laptop-1", false).await;

    let ids = enqueue_notes(hub, user, "laptop-1", 1..=3).await;
    let (mut ws, ack) = online(&app, &t, "laptop-1").await;
    assert_eq!(ack["pending"], 3, "{ack}");
    let got = queued(&mut ws, 3).await;
    assert_eq!(
        got,
        [
            (ids[0].clone(), 1),
            (ids[1].clone(), 2),
            (ids[2].clone(), 3)
        ]
    );
    // Only the first is acked before the device goes away: the others come again.
    send(&mut ws, json!({"type": "ack", "id": ids[0]})).await;
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next(&mut ws).await["type"], "pong", "the ack was processed");
    ws.close(None).await.expect("close");
    until_online(&app, &t, "laptop-1", false).await;

    let (mut ws, ack) = online(&app, &t, "laptop-1").await;
    assert_eq!(ack["pending"], 2, "{ack}");
    assert_eq!(
        queued(&mut ws, 2).await,
        [(ids[1].clone(), 2), (ids[2].clone(), 3)]
    );
    for id in &ids[1..] {
        send(&mut ws, json!({"type": "ack", "id": id})).await;
    }
    // An ack of something not queued is refused.
    send(&mut ws, json!({"type": "ack", "id": ids[0]})).await;
    assert_eq!(next(&mut ws).await["type"], "error");
    ws.close(None).await.expect("close");
    until_online(&app, &t, "laptop-1", false).await;

    let (mut ws, ack) = online(&app, &t, "laptop-1").await;
    assert_eq!(ack["pending"], 0, "everything was acked: {ack}");
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next(&mut ws).await["type"], "pong");
    // A device the user does not have cannot be queued for.
    let err = hub
        .enqueue(user, "no-such", note(9))
        .await
        .expect_err("not found");
    assert!(
        matches!(err, adiuva_core::Error::NotFound("device")),
        "{err:?}"
    );
}

#[tokio::test]
async fn frames_beyond_the_queue_bound_expire_and_hello_ack_counts_them() {
    let app = spawn_app_with(|s| s.device_queue_max_frames = 2).await;
    let t = token(&app).await;
    let user = user_of(&app, &t).await;
    let (mut ws, _) = online(&app, &t, "laptop-1").await;
    ws.close(None).await.expect("close");
    until_online(&app, &t, "laptop-1", false).await;
    let hub = app.adiuva.devices();
    let ids = enqueue_notes(hub, user, "laptop-1", 1..=3).await;
    let (mut ws, ack) = online(&app, &t, "laptop-1").await;
    assert_eq!(ack["expired"], 1, "{ack}");
    assert_eq!(ack["pending"], 2, "{ack}");
    assert_eq!(
        queued(&mut ws, 2).await,
        [(ids[1].clone(), 2), (ids[2].clone(), 3)],
        "the oldest expired"
    );
}

/// A frame queued without its wake-up reaching the holder — another instance wrote it and
/// the bus (at most once) lost the message — still reaches the connected device: the
/// holder's heartbeat (a third of the presence TTL) finds it waiting.
#[tokio::test]
async fn a_frame_whose_wake_up_was_lost_arrives_at_the_next_heartbeat() {
    let app = spawn_app_with(|s| s.device_presence_ttl_secs = 3).await;
    let t = token(&app).await;
    let user = user_of(&app, &t).await;
    let (mut ws, _) = online(&app, &t, "laptop-1").await;
    let id = uuid::Uuid::new_v4();
    let frame = adiuva_core::devices::ToDevice::Notification {
        id: id.to_string(),
        kind: "message".into(),
        payload: json!({"n": 1}),
    };
    let now = app.adiuva.clock().now_ms();
    // Straight into the queue: no hub, so no wake-up message.
    app.adiuva
        .database()
        .enqueue_frame(
            user,
            "laptop-1",
            &adiuva_core::ports::db::NewQueuedFrame {
                frame_id: id,
                kind: "notification".into(),
                payload: serde_json::to_vec(&frame).expect("serialize"),
                expires_at: now + 60_000,
            },
            100,
            now,
        )
        .await
        .expect("queued");
    let got = next(&mut ws).await;
    assert_eq!(got["id"], id.to_string(), "{got}");
    // Sent once: later sweeps find it still queued (not acked) but do not send it again.
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next(&mut ws).await["type"], "pong");
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(
        next(&mut ws).await["type"],
        "pong",
        "no second copy before the ack"
    );
}
