//! Calls: answered wherever the socket is, and never a hang.

use std::time::Duration;

use adiuva_core::Error;
use adiuva_core::devices::{DeviceConfig, DeviceRequest, FromDevice, ToDevice};
use serde_json::{Map, json};

use super::presence::tool;
use super::support::*;

/// Echoes the call back, so each answer says which call it answers.
fn echo(frame: &ToDevice) -> Result<serde_json::Value, String> {
    match frame {
        ToDevice::ToolCall {
            name, arguments, ..
        } => Ok(json!({ "tool": name, "arguments": arguments })),
        ToDevice::DataRequest { data_types, .. } => Ok(json!({ "data": data_types })),
        _ => Err("not a call".into()),
    }
}

fn with_args(name: &str, args: serde_json::Value) -> DeviceRequest {
    let serde_json::Value::Object(arguments) = args else {
        panic!("arguments are an object")
    };
    DeviceRequest::Tool {
        name: name.into(),
        arguments,
    }
}

#[tokio::test]
async fn a_call_reaches_a_device_on_this_instance() {
    let env = Env::new(config()).await;
    let u = env.user().await;
    let d = connect(&env.a, &u, "desk").await;
    let device = d.answer_calls(echo);
    let r = within(
        "call",
        env.a.call(
            u.user.id,
            "desk",
            with_args("list_tasks", json!({"status": "todo"})),
        ),
    )
    .await;
    assert_eq!(
        r.unwrap(),
        json!({"tool": "list_tasks", "arguments": {"status": "todo"}})
    );
    let seen = device.seen();
    assert!(matches!(&seen[0], ToDevice::ToolCall { name, .. } if name == "list_tasks"));
}

#[tokio::test]
async fn calls_reach_a_device_on_the_other_instance_and_answers_come_back() {
    let env = Env::new(config()).await;
    let u = env.user().await;
    let d = connect(&env.b, &u, "desk").await;
    let device = d.answer_calls(echo);
    // Several at once: each answer goes to its own caller.
    let calls = (0..8).map(|n| {
        let a = env.a.clone();
        let user = u.user.id;
        async move {
            a.call(user, "desk", with_args("get_task", json!({ "task_id": n })))
                .await
        }
    });
    let answers = within("calls", futures::future::join_all(calls)).await;
    for (n, a) in answers.into_iter().enumerate() {
        assert_eq!(a.unwrap()["arguments"]["task_id"], n);
    }
    let data = DeviceRequest::Data {
        data_types: vec!["tasks".into()],
        filter: Map::new(),
    };
    let r = within("data request", env.a.call(u.user.id, "desk", data)).await;
    assert_eq!(r.unwrap(), json!({"data": ["tasks"]}));
    // Call ids are unique.
    let mut ids: Vec<String> = device.seen().iter().map(frame_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 9);
}

#[tokio::test]
async fn a_device_error_reaches_the_caller_as_its_error() {
    let env = Env::new(config()).await;
    let u = env.user().await;
    let _device = connect(&env.b, &u, "desk")
        .await
        .answer_calls(|_| Err("no such task".into()));
    let r = within("call", env.a.call(u.user.id, "desk", tool("get_task"))).await;
    assert_eq!(r.unwrap_err(), "no such task");
}

#[tokio::test]
async fn an_offline_device_fails_at_once_not_at_the_timeout() {
    // A call timeout far beyond the test's deadline: waiting for it would fail `within`.
    let env = Env::new(DeviceConfig {
        call_timeout: Duration::from_secs(3600),
        ..config()
    })
    .await;
    let u = env.user().await;
    connect(&env.b, &u, "desk").await.close().await;
    for hub in [&env.a, &env.b] {
        let r = within(
            "an offline call",
            hub.call(u.user.id, "desk", tool("list_tasks")),
        )
        .await;
        assert_eq!(r.unwrap_err(), "the device is offline");
    }
}

#[tokio::test]
async fn a_silent_device_fails_at_the_timeout() {
    let env = Env::new(DeviceConfig {
        call_timeout: Duration::from_millis(200),
        ..config()
    })
    .await;
    let u = env.user().await;
    let mut d = connect(&env.b, &u, "desk").await;
    d.hello_ack().await;
    let r = within(
        "a silent call",
        env.a.call(u.user.id, "desk", tool("list_tasks")),
    )
    .await;
    assert_eq!(r.unwrap_err(), "the device did not answer within 200 ms");
    // It did get the call; its late answer finds nobody waiting and is dropped quietly.
    let ToDevice::ToolCall { id, .. } = d.next().await else {
        panic!("a tool call")
    };
    let _ = d
        .receive(FromDevice::ToolResult {
            id,
            outcome: Ok(json!("late")),
        })
        .await;
    let r = within(
        "a silent local call",
        env.b.call(u.user.id, "desk", tool("list_tasks")),
    )
    .await;
    assert!(r.unwrap_err().contains("did not answer"));
}

#[tokio::test]
async fn a_device_that_disconnects_mid_call_fails_the_caller_at_once() {
    let env = Env::new(DeviceConfig {
        call_timeout: Duration::from_secs(3600),
        ..config()
    })
    .await;
    let u = env.user().await;
    for (holder, caller) in [(&env.b, &env.a), (&env.a, &env.a)] {
        let mut d = connect(holder, &u, "desk").await;
        d.hello_ack().await;
        let call = {
            let caller = caller.clone();
            let user = u.user.id;
            tokio::spawn(async move { caller.call(user, "desk", tool("list_tasks")).await })
        };
        assert!(matches!(d.next().await, ToDevice::ToolCall { .. }));
        d.close().await;
        let r = within("the caller's error", call).await.unwrap();
        assert_eq!(r.unwrap_err(), "the device disconnected before it answered");
    }
}

#[tokio::test]
async fn a_replaced_socket_fails_its_calls_at_once() {
    let env = Env::new(DeviceConfig {
        call_timeout: Duration::from_secs(3600),
        ..config()
    })
    .await;
    let u = env.user().await;
    let mut old = connect(&env.b, &u, "desk").await;
    old.hello_ack().await;
    let call = {
        let a = env.a.clone();
        let user = u.user.id;
        tokio::spawn(async move { a.call(user, "desk", tool("list_tasks")).await })
    };
    assert!(matches!(old.next().await, ToDevice::ToolCall { .. }));
    let _new = connect(&env.a, &u, "desk").await;
    let r = within("the caller's error", call).await.unwrap();
    assert_eq!(r.unwrap_err(), "the device disconnected before it answered");
}

#[tokio::test]
async fn a_holder_that_died_fails_the_caller_at_the_timeout() {
    let mut env = Env::new(DeviceConfig {
        call_timeout: Duration::from_millis(300),
        ..config()
    })
    .await;
    let u = env.user().await;
    let _d = connect(&env.b, &u, "desk").await;
    // B's process is gone: its mailbox no longer listens, but its session is still
    // within the presence TTL.
    env.b_task = None;
    assert!(env.a.require(u.user.id, "desk").await.unwrap().online);
    let r = within(
        "a call to a dead holder",
        env.a.call(u.user.id, "desk", tool("list_tasks")),
    )
    .await;
    assert_eq!(r.unwrap_err(), "the device did not answer within 300 ms");
}

#[tokio::test]
async fn an_answer_nothing_waits_for_is_a_bad_request_and_the_socket_stays_usable() {
    let env = Env::new(config()).await;
    let u = env.user().await;
    let d = connect(&env.b, &u, "desk").await;
    let unknown_call = d
        .receive(FromDevice::ToolResult {
            id: "dc_nobody_1".into(),
            outcome: Ok(json!(1)),
        })
        .await;
    assert!(matches!(
        unknown_call,
        Err(Error::BadRequest {
            code: "unknown_call",
            ..
        })
    ));
    let unknown_data = d
        .receive(FromDevice::DataResponse {
            id: String::new(),
            outcome: Err("x".into()),
        })
        .await;
    assert!(matches!(
        unknown_data,
        Err(Error::BadRequest {
            code: "unknown_call",
            ..
        })
    ));
    for id in ["not-a-uuid", "7f1c1ad2-4a8e-4c57-9b5e-0a3c8c1f2d11"] {
        let r = d.receive(FromDevice::Ack { id: id.into() }).await;
        assert!(
            matches!(
                r,
                Err(Error::BadRequest {
                    code: "unknown_frame",
                    ..
                })
            ),
            "{r:?}"
        );
    }
    let _device = d.answer_calls(echo);
    let r = within("call", env.a.call(u.user.id, "desk", tool("list_tasks"))).await;
    assert_eq!(r.unwrap()["tool"], "list_tasks");
}

#[tokio::test]
async fn a_thousand_calls_across_instances_are_each_answered_to_their_caller() {
    let env = Env::new(config()).await;
    let u = env.user().await;
    let _device = connect(&env.b, &u, "desk").await.answer_calls(echo);
    let mut took = Vec::new();
    for n in 0..1000 {
        let started = std::time::Instant::now();
        let r = within(
            "call",
            env.a.call(
                u.user.id,
                "desk",
                with_args("get_task", json!({ "task_id": n })),
            ),
        )
        .await;
        took.push(started.elapsed());
        assert_eq!(r.unwrap()["arguments"]["task_id"], n);
    }
    took.sort();
    println!(
        "round trip A → bus → B → device → B → bus → A (MemoryDeviceBus, MemoryDb, debug): p50 {:?}, p99 {:?}",
        took[took.len() / 2],
        took[took.len() * 99 / 100]
    );
}
