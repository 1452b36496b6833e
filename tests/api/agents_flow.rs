//! Issue 12, item 8, the whole flow over real sockets: a setup journey proposes a config,
//! the user connects Google through OAuth (against the fake), creates the cloud agent,
//! the serving process's scheduler runs it at its slot reading the fake Gmail, and the
//! results wait in the device queue until the user's device connects — then arrive as an
//! `agent_result` notification.

use std::time::Duration;

use adiuva_adapters::llm::fake::{FakeOpenAi, Reply};
use adiuva_adapters::providers::fake::{FakeGoogle, FakeMail};
use adiuva_core::domain::Tier;
use reqwest::Method;
use serde_json::{Value, json};

use crate::chat::{next, send as ws_send};
use crate::devices::online;
use crate::helpers::{json_body, send};
use crate::oauth::{Providers, connect_google, provider_app};

/// The model: the journey asks once, then proposes an every-minute inbox agent; a run
/// answers with one task per mail it was shown.
fn script(body: &Value) -> Option<Reply> {
    let offers_finish = body["tools"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t["function"]["name"] == "finish_setup"));
    if offers_finish {
        if crate::chat::last_user(body).contains("every minute") {
            return Some(Reply::tool_calls(&[(
                "finish_setup",
                &json!({"name": "Inbox minder", "schedule": "* * * * *", "timezone": "Europe/Berlin",
                        "filters": {"query": "is:unread"}})
                .to_string(),
            )]));
        }
        return Some(Reply::text("How often should I look at your inbox?"));
    }
    let prompt = body.to_string();
    let mut results = Vec::new();
    if prompt.contains("renew the lease") {
        results
            .push(json!({"type": "task", "title": "Renew the office lease", "source_id": "lease"}));
    }
    if prompt.contains("dentist") {
        results
            .push(json!({"type": "task", "title": "Confirm the dentist", "source_id": "dentist"}));
    }
    Some(Reply::text(&json!({ "results": results }).to_string()))
}

async fn post(app: &crate::helpers::TestApp, path: &str, token: &str, body: Value) -> Value {
    let resp = send(app.request_as(Method::POST, path, token).json(&body)).await;
    assert_eq!(resp.status(), 200, "{path}");
    json_body(resp).await
}

#[tokio::test]
async fn journey_oauth_schedule_gmail_and_a_device_that_connects_later() {
    let model = FakeOpenAi::start().await.expect("fake model");
    model.set_handler(script);
    let google = FakeGoogle::start().await.expect("fake Google");
    let app = provider_app(Providers {
        google: Some(&google),
        model_url: Some(model.url()),
        scheduler_tick_secs: Some(1),
        ..Providers::default()
    })
    .await;
    let (_, token) = app.account_on("flow", Tier::Pro).await;
    // The device has said hello once (it is registered), and is offline from now on.
    let (ws, _) = online(&app, &token, "laptop").await;
    drop(ws);

    // 1. The journey.
    let first = post(
        &app,
        "/agents/journey/start",
        &token,
        json!({"agent_type": "inbox_triage", "data_types": ["mail"]}),
    )
    .await;
    assert_eq!(first["done"], false, "{first}");
    let done = post(
        &app,
        "/agents/journey/message",
        &token,
        json!({"session_id": first["session_id"], "message": "every minute, unread mail only"}),
    )
    .await;
    assert_eq!(done["done"], true, "{done}");
    let mut config = done["config"].as_object().cloned().expect("a config");
    config.retain(|_, v| !v.is_null());
    assert_eq!(config["schedule"], "* * * * *");
    assert_eq!(
        config["provider"], "google",
        "a cloud type names its provider"
    );

    // 2. OAuth against the fake, then the config with the sealed token.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_millis() as i64;
    google.add_gmail_message(FakeMail::new(
        "Landlord <landlord@example.com>",
        "Lease",
        "Please renew the lease before the 15th.",
        now - 120_000,
    ));
    google.add_gmail_message(FakeMail::new(
        "Clinic <clinic@example.com>",
        "Appointment",
        "Reply to confirm your dentist appointment.",
        now - 60_000,
    ));
    let sealed = connect_google(&app, &google, &token).await;
    config.insert("oauth_token_encrypted".into(), json!(sealed));
    let agent = post(&app, "/agents/cloud", &token, Value::Object(config)).await;
    let id = agent["id"].as_str().expect("id").to_owned();
    let slot = agent["next_run_at"].as_i64().expect("scheduled");
    assert_eq!(agent["connected"], true);

    // 3. The scheduler runs it at its slot (at most a minute away, plus ticks).
    let run = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            let runs: Value = app
                .get_json_as(&format!("/agents/runs?agent_id={id}"), &token)
                .await;
            if let Some(r) = runs
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["scheduled_for"] == slot)
                && r["status"] != "queued"
                && r["status"] != "running"
            {
                return r.clone();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await
    .expect("a scheduled run");
    assert_eq!(run["trigger"], "schedule", "{run}");
    assert_eq!(run["scheduled_for"], slot, "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["items_read"], 2, "{run}");
    assert_eq!(run["items_produced"], 2, "{run}");
    assert!(
        !run.to_string().contains("lease"),
        "no mail text in the log: {run}"
    );
    assert!(google.requests("/gmail/v1/users/me/messages") >= 1);

    // 4. The device connects later: the results were queued for it.
    let (mut ws, ack) = online(&app, &token, "laptop").await;
    assert!(ack["pending"].as_u64().is_some_and(|n| n >= 1), "{ack}");
    let note = loop {
        let f = next(&mut ws).await;
        if f["type"] == "notification" {
            ws_send(&mut ws, json!({"type": "ack", "id": f["id"]})).await;
            if f["payload"]["run_id"] == run["id"] {
                break f;
            }
        }
    };
    assert_eq!(note["kind"], "agent_result", "{note}");
    assert_eq!(note["payload"]["agent_id"], id.as_str());
    let titles: Vec<&str> = note["payload"]["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["title"].as_str())
        .collect();
    assert!(titles.contains(&"Renew the office lease"), "{note}");
    assert!(titles.contains(&"Confirm the dentist"), "{note}");
}
