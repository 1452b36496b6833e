//! The device hub's hooks for agents: sealed queue, `enqueue_once`.

use adiuva_core::devices::{FromDevice, Queued, ToDevice};
use adiuva_core::ports::db::{DeviceRepo, NewQueuedFrame};
use serde_json::json;
use uuid::Uuid;

use super::support::*;

#[tokio::test]
async fn enqueue_once_queues_a_frame_id_once_and_payloads_rest_sealed() {
    let env = Env::new(1).await;
    let who = env.user().await;
    let hub = env.apps[0].devices();
    register(hub, &who, "laptop").await;
    let id = Uuid::new_v4();
    let note = || Queued::Notification {
        kind: "agent_result".into(),
        payload: json!({"secret": MAIL_BODY}),
    };
    assert!(
        hub.enqueue_once(who.user.id, "laptop", id, note())
            .await
            .expect("first")
    );
    assert!(
        !hub.enqueue_once(who.user.id, "laptop", id, note())
            .await
            .expect("again")
    );
    let queued = env.queued(&who, "laptop").await;
    assert_eq!(queued.len(), 1);
    queue_holds_no(&queued, MAIL_BODY);
    assert!(matches!(
        hub.enqueue_once(who.user.id, "nope", Uuid::new_v4(), note())
            .await,
        Err(adiuva_core::Error::NotFound("device"))
    ));
    // Delivered opened.
    let mut dev = connect(hub, &who, "laptop").await;
    let ToDevice::Notification {
        id: got, payload, ..
    } = dev.next().await
    else {
        panic!("the note");
    };
    assert_eq!(got, id.to_string());
    assert_eq!(payload["secret"], MAIL_BODY);
}

#[tokio::test]
async fn a_plain_json_frame_from_the_previous_build_still_delivers() {
    let env = Env::new(1).await;
    let who = env.user().await;
    let hub = env.apps[0].devices();
    register(hub, &who, "laptop").await;
    let id = Uuid::new_v4();
    let frame = ToDevice::Notification {
        id: id.to_string(),
        kind: "message".into(),
        payload: json!({"n": 1}),
    };
    let now = env.now();
    env.db
        .enqueue_frame(
            who.user.id,
            "laptop",
            &NewQueuedFrame {
                frame_id: id,
                kind: "notification".into(),
                payload: serde_json::to_vec(&frame).expect("json"),
                expires_at: now + 60_000,
            },
            100,
            now,
        )
        .await
        .expect("queued");
    let mut dev = connect(hub, &who, "laptop").await;
    assert_eq!(dev.next().await, frame);
}

#[tokio::test]
async fn a_data_response_for_no_call_and_no_run_is_still_an_error_when_not_a_uuid() {
    let env = Env::new(1).await;
    let who = env.user().await;
    let dev = connect(env.apps[0].devices(), &who, "laptop").await;
    let e = dev
        .conn
        .receive(FromDevice::DataResponse {
            id: "not-a-run".into(),
            outcome: Ok(json!({})),
        })
        .await
        .expect_err("unknown");
    assert!(matches!(
        e,
        adiuva_core::Error::BadRequest {
            code: "unknown_call",
            ..
        }
    ));
}
