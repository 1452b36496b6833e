//! `POST /chat` with `device_id`: the turn's tools run on the device, wherever it is.

use std::sync::Arc;

use adiuva_core::auth::AuthConfig;
use adiuva_core::chat::orchestrator::{ModelRoles, Orchestrator};
use adiuva_core::chat::{ChatRequest, RestAnswer};
use adiuva_core::devices::{DeviceConfig, MemoryDeviceBus, ToDevice};
use adiuva_core::ports::ManualClock;
use adiuva_core::ports::llm::{CompletionRequest, Role};
use adiuva_core::testing::MemoryDb;
use adiuva_core::testing::llm::{ScriptedModel, calls, text};
use adiuva_core::{Adiuva, Error, Secret};
use serde_json::json;

use super::support::*;

/// The router sends everything to the task agent, which creates a task once and then
/// reports the tool's result.
fn create_task_script(req: &CompletionRequest) -> Option<adiuva_core::ports::llm::Completion> {
    let system = req
        .messages
        .iter()
        .find(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .unwrap_or_default();
    if system.contains("intent classifier") {
        return Some(text("task_agent"));
    }
    match req.messages.last() {
        Some(m) if m.role == Role::Tool => Some(text(&format!("done: {}", m.content))),
        _ => Some(calls(&[("create_task", r#"{"title": "Ship it"}"#)])),
    }
}

/// Two instances of the whole backend on one database and one bus.
struct Apps {
    a: Adiuva,
    b: Adiuva,
    model: Arc<ScriptedModel>,
    db: Arc<MemoryDb>,
    clock: Arc<ManualClock>,
    _tasks: Vec<adiuva_core::devices::HubTask>,
}

async fn apps(config: DeviceConfig) -> Apps {
    let db = Arc::new(MemoryDb::new());
    let bus = MemoryDeviceBus::new();
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let model = Arc::new(ScriptedModel::with_handler(create_task_script));
    let app = || {
        let orchestrator =
            Orchestrator::new(model.clone(), ModelRoles::default()).expect("orchestrator");
        Adiuva::builder()
            .database(db.clone())
            .auth(AuthConfig::new(Secret::new(
                "a test secret of 32 bytes or more".into(),
            )))
            .clock(clock.clone())
            .chat(Arc::new(orchestrator))
            .device_bus(Arc::new(bus.clone()))
            .device_config(config.clone())
            .build()
            .expect("app")
    };
    let (a, b) = (app(), app());
    let tasks = vec![
        a.devices().start().await.expect("a starts"),
        b.devices().start().await.expect("b starts"),
    ];
    Apps {
        a,
        b,
        model,
        db,
        clock,
        _tasks: tasks,
    }
}

fn request(message: &str) -> ChatRequest {
    serde_json::from_value(json!({ "message": message })).expect("request")
}

#[tokio::test]
async fn a_device_turn_runs_write_tools_on_a_device_held_by_the_other_instance() {
    let apps = apps(config()).await;
    let u = user(&*apps.db, 0).await;
    let device = connect(apps.b.devices(), &u, "desk")
        .await
        .answer_calls(|_| Ok(json!({"id": "t1", "title": "Ship it"})));

    let chat = apps.a.chat_service().unwrap();
    let answer = within(
        "the device turn",
        chat.device_turn(&u, request("add a task Ship it"), apps.a.devices(), "desk"),
    )
    .await
    .expect("the turn answers");
    let RestAnswer::Reply(reply) = answer else {
        panic!("a reply")
    };
    assert!(
        reply.actions.is_empty(),
        "the device ran the write: {:?}",
        reply.actions
    );
    assert_eq!(reply.mutations.len(), 1, "{:?}", reply.mutations);
    assert_eq!(reply.mutations[0].action, "create_record");
    assert_eq!(reply.mutations[0].table, "tasks");
    assert_eq!(reply.mutations[0].data["title"], "Ship it");
    assert!(reply.response.starts_with("done:"), "{}", reply.response);
    assert!(
        reply.response.contains("t1"),
        "the device's result reached the model"
    );

    let seen = device.seen();
    assert!(
        matches!(&seen[..], [ToDevice::ToolCall { name, arguments, .. }]
            if name == "create_task" && arguments["title"] == "Ship it"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_device_turn_with_the_device_offline_gives_the_model_the_error_and_answers() {
    let apps = apps(config()).await;
    let u = user(&*apps.db, 0).await;
    connect(apps.b.devices(), &u, "desk").await.close().await;
    apps.clock.advance(1);

    let chat = apps.a.chat_service().unwrap();
    let answer = within(
        "the device turn",
        chat.device_turn(&u, request("add a task Ship it"), apps.a.devices(), "desk"),
    )
    .await
    .expect("the turn still answers");
    let RestAnswer::Reply(reply) = answer else {
        panic!("a reply")
    };
    assert!(
        reply.mutations.is_empty(),
        "nothing ran: {:?}",
        reply.mutations
    );
    assert!(reply.actions.is_empty());
    let tool_results: Vec<String> = apps
        .model
        .requests()
        .iter()
        .filter_map(|r| r.messages.last())
        .filter(|m| m.role == Role::Tool)
        .map(|m| m.content.clone())
        .collect();
    assert_eq!(tool_results.len(), 1, "{tool_results:?}");
    assert!(
        tool_results[0].contains("the device is offline"),
        "the model saw why: {}",
        tool_results[0]
    );
}

#[tokio::test]
async fn a_device_turn_for_a_device_the_user_does_not_have_is_not_found() {
    let apps = apps(config()).await;
    let owner = user(&*apps.db, 0).await;
    let other = user(&*apps.db, 0).await;
    let _d = connect(apps.a.devices(), &owner, "desk").await;
    let chat = apps.a.chat_service().unwrap();
    for (who, device) in [(&other, "desk"), (&owner, "nope")] {
        let r = chat
            .device_turn(who, request("add a task"), apps.a.devices(), device)
            .await;
        assert!(matches!(r, Err(Error::NotFound("device"))), "{r:?}");
    }
    assert!(
        apps.model.requests().is_empty(),
        "the model was never asked"
    );
}
