//! `/agents/*` (issue 12): the catalog, local and cloud configs with their validation,
//! ownership and tier limits, manual runs (a cloud run reading a fake Gmail, a local run
//! through a device's `agent_trigger` / `data_response`), the run log and the setup
//! journey over a fake OpenAI-compatible model.

use std::time::Duration;

use adiuva_adapters::llm::fake::{FakeOpenAi, Reply};
use adiuva_adapters::providers::fake::{FakeGoogle, FakeMail};
use adiuva_core::domain::Tier;
use reqwest::Method;
use serde_json::{Value, json};

use crate::chat::{Socket, next, send as ws_send};
use crate::devices::online;
use crate::helpers::{
    TestApp, assert_error, assert_unauthorized, assert_validation_error, json_body, send,
};
use crate::oauth::{Providers, connect_google, create_cloud, provider_app};

/// Longest wait for a background run to finish.
const BOUND: Duration = Duration::from_secs(20);

/// What the scripted model answers: a journey (its request offers `finish_setup`) asks
/// one question, then finishes when told "just pick"; anything else is a run, answered
/// with one task per run.
fn scripted(body: &Value) -> Option<Reply> {
    if let Some(reply) = journey_script(body) {
        return Some(reply);
    }
    Some(Reply::text(
        &json!({"results": [{"type": "task", "title": "Reply to Ann", "notes": "about the contract", "source_id": "m1"}]})
            .to_string(),
    ))
}

/// A journey's model (its request offers `finish_setup`): asks once, then finishes when
/// told "just pick". `None` for any other request.
pub(crate) fn journey_script(body: &Value) -> Option<Reply> {
    let offers_finish = body["tools"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t["function"]["name"] == "finish_setup"));
    if !offers_finish {
        return None;
    }
    if crate::chat::last_user(body).contains("just pick") {
        return Some(Reply::tool_calls(&[(
            "finish_setup",
            &json!({
                "name": "Friday review",
                "schedule": "0 17 * * 5",
                "timezone": "Europe/Berlin",
                "filters": {},
            })
            .to_string(),
        )]));
    }
    Some(Reply::text("When should it run?"))
}

async fn model() -> FakeOpenAi {
    let fake = FakeOpenAi::start().await.expect("fake model");
    fake.set_handler(scripted);
    fake
}

async fn app_with_model(fake: &FakeOpenAi) -> TestApp {
    provider_app(Providers {
        model_url: Some(fake.url()),
        ..Providers::default()
    })
    .await
}

/// `method` `path` with a JSON body as `token`.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Value,
) -> reqwest::Response {
    send(app.request_as(method, path, token).json(&body)).await
}

/// A local agent (weekly_review) named `name`.
async fn create_local(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    call(app, Method::POST, "/agents/local", token, body).await
}

fn local(name: &str) -> Value {
    json!({"name": name, "agent_type": "weekly_review"})
}

async fn created(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), 200, "created");
    json_body(resp).await
}

/// `POST /agents/{id}/run`.
async fn run_now(app: &TestApp, token: &str, id: &str) -> reqwest::Response {
    send(app.request_as(Method::POST, &format!("/agents/{id}/run"), token)).await
}

/// The run's row from `GET /agents/runs`, once it is no longer queued or running.
async fn finished_run(app: &TestApp, token: &str, agent: &str, run: &str) -> Value {
    tokio::time::timeout(BOUND, async {
        loop {
            let runs: Value = app
                .get_json_as(&format!("/agents/runs?agent_id={agent}"), token)
                .await;
            if let Some(r) = runs
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["id"] == run)
                && r["status"] != "queued"
                && r["status"] != "running"
            {
                return r.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the run finishes")
}

/// The next queued frame of `kind` (`agent_trigger`, `notification`), acked.
async fn next_queued(ws: &mut Socket, kind: &str) -> Value {
    loop {
        let f = next(ws).await;
        if f["type"] == kind {
            ws_send(ws, json!({"type": "ack", "id": f["id"]})).await;
            return f;
        }
    }
}

#[tokio::test]
async fn the_catalog_describes_every_type() {
    let app = provider_app(Providers::default()).await;
    let (_, token) = app.account_on("catalog", Tier::Free).await;
    let catalog: Value = app.get_json_as("/agents/catalog", &token).await;
    let items = catalog.as_array().expect("an array");
    let by_type = |t: &str| {
        items
            .iter()
            .find(|i| i["agent_type"] == t)
            .unwrap_or_else(|| panic!("{t} in {catalog}"))
            .clone()
    };
    for t in [
        "inbox_triage",
        "teams_digest",
        "weekly_review",
        "local_files",
    ] {
        let item = by_type(t);
        for field in [
            "name",
            "description",
            "kind",
            "reads",
            "providers",
            "produces",
            "default_schedule",
            "filters",
            "scopes",
        ] {
            assert!(item.get(field).is_some(), "{t}.{field} in {item}");
        }
        assert_eq!(
            item["default_schedule"]
                .as_str()
                .map(|s| s.split_whitespace().count()),
            Some(5),
            "{item}"
        );
    }
    let inbox = by_type("inbox_triage");
    assert_eq!(inbox["kind"], "cloud");
    assert_eq!(inbox["providers"], json!(["google", "microsoft"]));
    assert_eq!(
        inbox["scopes"]["google"],
        json!(["https://www.googleapis.com/auth/gmail.readonly"])
    );
    assert!(
        inbox["scopes"]["microsoft"]
            .as_array()
            .is_some_and(|s| s.contains(&json!("https://graph.microsoft.com/Mail.Read")))
    );
    let teams = by_type("teams_digest");
    assert!(teams["filters"]["team_id"].is_string(), "{teams}");
    let files = by_type("local_files");
    assert_eq!(files["kind"], "local");
    assert_eq!(files["providers"], json!([]));
    assert_eq!(files["scopes"], json!({}));
    assert_unauthorized(app.get("/agents/catalog").await).await;
}

#[tokio::test]
async fn local_agents_are_created_listed_changed_and_deleted_by_their_owner_only() {
    let app = provider_app(Providers::default()).await;
    let (_, token) = app.account_on("crud", Tier::Pro).await;
    let (_, other) = app.account_on("crud-other", Tier::Pro).await;

    let agent = created(create_local(&app, &token, local("Review")).await).await;
    let id = agent["id"].as_str().expect("id").to_owned();
    assert_eq!(agent["name"], "Review");
    assert_eq!(agent["agent_type"], "weekly_review");
    assert_eq!(agent["timezone"], "UTC");
    assert_eq!(agent["enabled"], true);
    assert_eq!(agent["status"], "active");
    assert_eq!(agent["filters"], json!({}));
    assert_eq!(agent["output"], json!({}));
    assert!(
        agent["prompt_template"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    assert!(
        agent["schedule"].is_string(),
        "the catalog's default: {agent}"
    );
    assert!(agent["next_run_at"].as_i64().is_some(), "{agent}");
    assert!(agent["created_at"].as_i64().is_some());
    assert!(agent.get("provider").is_none(), "{agent}");

    let listed: Value = app.get_json_as("/agents/local", &token).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert_eq!(listed[0]["id"], id.as_str());
    let none: Value = app.get_json_as("/agents/local", &other).await;
    assert_eq!(none, json!([]));
    let cloud: Value = app.get_json_as("/agents/cloud", &token).await;
    assert_eq!(cloud, json!([]), "a local agent is not a cloud one");

    // Manual only: an empty schedule; no next run.
    let changed = call(
        &app,
        Method::PUT,
        &format!("/agents/local/{id}"),
        &token,
        json!({"name": "Renamed", "schedule": "", "timezone": "Europe/Berlin", "filters": {"project": "Apollo"}}),
    )
    .await;
    assert_eq!(changed.status(), 200);
    let changed: Value = json_body(changed).await;
    assert_eq!(changed["name"], "Renamed");
    assert_eq!(changed["timezone"], "Europe/Berlin");
    assert_eq!(changed["filters"], json!({"project": "Apollo"}));
    assert!(changed["schedule"].is_null(), "{changed}");
    assert!(changed["next_run_at"].is_null(), "{changed}");

    // Another user's id, the wrong kind's route, a non-UUID: 404 agent_not_found.
    for (method, path, who) in [
        (Method::PUT, format!("/agents/local/{id}"), &other),
        (Method::DELETE, format!("/agents/local/{id}"), &other),
        (Method::PUT, format!("/agents/cloud/{id}"), &token),
        (Method::DELETE, format!("/agents/cloud/{id}"), &token),
        (Method::PUT, "/agents/local/not-a-uuid".to_owned(), &token),
    ] {
        let resp = call(&app, method.clone(), &path, who, json!({"name": "x"})).await;
        assert_error(resp, 404, "agent_not_found").await;
    }
    assert_error(run_now(&app, &other, &id).await, 404, "agent_not_found").await;
    assert_error(
        app.get_as(&format!("/agents/runs?agent_id={id}"), &other)
            .await,
        404,
        "agent_not_found",
    )
    .await;

    let resp = send(app.request_as(Method::DELETE, &format!("/agents/local/{id}"), &token)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(json_body::<Value>(resp).await, json!({"ok": true}));
    let resp = send(app.request_as(Method::DELETE, &format!("/agents/local/{id}"), &token)).await;
    assert_error(resp, 404, "agent_not_found").await;
    assert_eq!(
        app.get_json_as::<Value>("/agents/local", &token).await,
        json!([])
    );
    assert_unauthorized(app.get("/agents/local").await).await;
}

#[tokio::test]
async fn every_bad_field_is_a_422() {
    let app = provider_app(Providers::default()).await;
    let (_, token) = app.account_on("invalid", Tier::Pro).await;
    let big = "x".repeat(5000);
    let cases = [
        json!({"name": "", "agent_type": "weekly_review"}),
        json!({"name": "x".repeat(101), "agent_type": "weekly_review"}),
        json!({"name": "bad\u{7}name", "agent_type": "weekly_review"}),
        json!({"name": "n", "agent_type": "no_such_type"}),
        json!({"name": "n", "agent_type": "inbox_triage"}),
        json!({"name": "n", "agent_type": "weekly_review", "schedule": "every day"}),
        json!({"name": "n", "agent_type": "weekly_review", "schedule": "61 * * * *"}),
        json!({"name": "n", "agent_type": "weekly_review", "timezone": "Mars/Olympus"}),
        json!({"name": "n", "agent_type": "weekly_review", "filters": {"project": big}}),
        json!({"name": "n", "agent_type": "weekly_review", "filters": {"nope": "x"}}),
        json!({"name": "n", "agent_type": "weekly_review", "output": {"printer": "x"}}),
        json!({"name": "n", "agent_type": "weekly_review", "prompt_template": "inbox_triage.default"}),
        json!({"agent_type": "weekly_review"}),
    ];
    for body in cases {
        let resp = create_local(&app, &token, body.clone()).await;
        assert_eq!(resp.status(), 422, "{body}");
        let err: Value = json_body(resp).await;
        assert_eq!(err["code"], "validation_error", "{body}: {err}");
    }
    let malformed = send(
        app.request_as(Method::POST, "/agents/local", &token)
            .header("content-type", "application/json")
            .body("{\"name\":"),
    )
    .await;
    assert_error(malformed, 422, "malformed_json").await;
    // A cloud agent needs a provider and a token; teams_digest needs its channel.
    for body in [
        json!({"name": "n", "agent_type": "inbox_triage", "provider": "google"}),
        json!({"name": "n", "agent_type": "weekly_review", "provider": "google", "oauth_token_encrypted": "x"}),
    ] {
        let resp = call(&app, Method::POST, "/agents/cloud", &token, body.clone()).await;
        assert_eq!(resp.status(), 422, "{body}");
    }
    // An update is validated the same way.
    let agent = created(create_local(&app, &token, local("ok")).await).await;
    let id = agent["id"].as_str().expect("id");
    for body in [
        json!({"schedule": "* *"}),
        json!({"timezone": "Nowhere/Else"}),
        json!({"name": ""}),
    ] {
        let resp = call(
            &app,
            Method::PUT,
            &format!("/agents/local/{id}"),
            &token,
            body.clone(),
        )
        .await;
        assert_validation_error(resp).await;
    }
}

#[tokio::test]
async fn the_free_tier_has_three_agents_two_enabled() {
    let app = provider_app(Providers::default()).await;
    let (_, free) = app.account_on("free-agents", Tier::Free).await;
    created(create_local(&app, &free, local("one")).await).await;
    created(create_local(&app, &free, local("two")).await).await;
    // A third enabled one is over `batch_active` (2)…
    assert_error(
        create_local(&app, &free, local("three")).await,
        403,
        "quota_exceeded",
    )
    .await;
    // …a disabled one is not.
    let third = created(
        create_local(
            &app,
            &free,
            json!({"name": "three", "agent_type": "weekly_review", "enabled": false}),
        )
        .await,
    )
    .await;
    // A fourth is over `agents` (3).
    assert_error(
        create_local(
            &app,
            &free,
            json!({"name": "four", "agent_type": "local_files", "enabled": false}),
        )
        .await,
        403,
        "quota_exceeded",
    )
    .await;
    // Enabling the third is over `batch_active`.
    let id = third["id"].as_str().expect("id");
    assert_error(
        call(
            &app,
            Method::PUT,
            &format!("/agents/local/{id}"),
            &free,
            json!({"enabled": true}),
        )
        .await,
        403,
        "quota_exceeded",
    )
    .await;
    // Pro has room.
    let (_, pro) = app.account_on("pro-agents", Tier::Pro).await;
    for i in 0..4 {
        created(create_local(&app, &pro, local(&format!("p{i}"))).await).await;
    }
}

#[tokio::test]
async fn runs_are_listed_newest_first_and_paged() {
    let app = provider_app(Providers::default()).await;
    let (_, token) = app.account_on("runs", Tier::Pro).await;
    let agent = created(create_local(&app, &token, local("no device")).await).await;
    let id = agent["id"].as_str().expect("id").to_owned();
    // No device online: each run is skipped at once (and says why).
    let mut runs = Vec::new();
    for _ in 0..3 {
        let resp = run_now(&app, &token, &id).await;
        assert_eq!(resp.status(), 200);
        let started: Value = json_body(resp).await;
        assert_eq!(started["ok"], true);
        let run = started["run_id"].as_str().expect("run_id").to_owned();
        let row = finished_run(&app, &token, &id, &run).await;
        assert_eq!(row["status"], "skipped", "{row}");
        assert!(
            row["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{row}"
        );
        runs.push(run);
    }
    let all: Value = app.get_json_as("/agents/runs", &token).await;
    let ids: Vec<&str> = all
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        runs.iter().rev().map(String::as_str).collect::<Vec<_>>()
    );
    let first = &all[0];
    for field in [
        "id",
        "agent_id",
        "status",
        "trigger",
        "scheduled_for",
        "started_at",
        "finished_at",
        "items_read",
        "items_produced",
        "error",
    ] {
        assert!(first.get(field).is_some(), "{field} in {first}");
    }
    assert_eq!(first["agent_id"], id.as_str());
    assert_eq!(first["trigger"], "manual");
    assert!(first["scheduled_for"].is_null());
    assert_eq!(first["items_read"], 0);
    assert!(first["finished_at"].as_i64().is_some(), "{first}");

    let page1: Value = app.get_json_as("/agents/runs?page=1&limit=2", &token).await;
    let page2: Value = app.get_json_as("/agents/runs?page=2&limit=2", &token).await;
    assert_eq!(page1.as_array().map(Vec::len), Some(2));
    assert_eq!(page2.as_array().map(Vec::len), Some(1));
    assert_eq!(page2[0]["id"], runs[0].as_str());
    let (_, other) = app.account_on("runs-other", Tier::Pro).await;
    assert_eq!(
        app.get_json_as::<Value>("/agents/runs", &other).await,
        json!([])
    );

    for bad in [
        "/agents/runs?limit=0",
        "/agents/runs?limit=101",
        "/agents/runs?page=0",
        "/agents/runs?agent_id=not-a-uuid",
    ] {
        assert_validation_error(app.get_as(bad, &token).await).await;
    }
    let unknown = uuid::Uuid::new_v4();
    assert_error(
        app.get_as(&format!("/agents/runs?agent_id={unknown}"), &token)
            .await,
        404,
        "agent_not_found",
    )
    .await;
    assert_error(
        run_now(&app, &token, &unknown.to_string()).await,
        404,
        "agent_not_found",
    )
    .await;
    assert_unauthorized(app.get("/agents/runs").await).await;
}

#[tokio::test]
async fn a_local_run_triggers_the_device_and_delivers_its_results() {
    let fake = model().await;
    let app = app_with_model(&fake).await;
    let (_, token) = app.account_on("local-run", Tier::Pro).await;
    let (mut ws, _) = online(&app, &token, "laptop-1").await;
    let agent = created(create_local(&app, &token, local("Weekly")).await).await;
    let id = agent["id"].as_str().expect("id").to_owned();

    let started: Value = json_body(run_now(&app, &token, &id).await).await;
    let run = started["run_id"].as_str().expect("run_id").to_owned();
    let trigger = next_queued(&mut ws, "agent_trigger").await;
    assert_eq!(trigger["run_id"], run.as_str(), "{trigger}");
    assert_eq!(trigger["agent_id"], id.as_str());
    assert_eq!(trigger["input"]["agent_type"], "weekly_review");
    // While the device works, the agent has a run in progress.
    assert_error(run_now(&app, &token, &id).await, 409, "run_in_progress").await;

    let secret_item = "Contract renewal with Ann due Friday";
    ws_send(
        &mut ws,
        json!({
            "type": "data_response",
            "id": run,
            "data": {"items": [
                {"id": "m1", "type": "task", "title": secret_item},
                {"id": "m2", "type": "task", "title": "Water the plants"},
            ]},
        }),
    )
    .await;
    let note = next_queued(&mut ws, "notification").await;
    assert_eq!(note["kind"], "agent_result", "{note}");
    assert_eq!(note["payload"]["run_id"], run.as_str());
    assert_eq!(note["payload"]["agent_id"], id.as_str());
    assert_eq!(
        note["payload"]["results"][0]["title"], "Reply to Ann",
        "{note}"
    );

    let row = finished_run(&app, &token, &id, &run).await;
    assert_eq!(row["status"], "succeeded", "{row}");
    assert_eq!(row["items_read"], 2);
    assert_eq!(row["items_produced"], 1);
    // The device's data reached the model, and the run log keeps counts only.
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.body.to_string().contains(secret_item)),
        "the items went to the model"
    );
    assert!(!row.to_string().contains(secret_item));
    // Done: another run may start.
    assert_eq!(run_now(&app, &token, &id).await.status(), 200);
}

#[tokio::test]
async fn a_cloud_run_reads_gmail_and_notifies_the_devices() {
    let fake = model().await;
    let google = FakeGoogle::start().await.expect("fake google");
    let app = provider_app(Providers {
        google: Some(&google),
        model_url: Some(fake.url()),
        ..Providers::default()
    })
    .await;
    let (_, token) = app.account_on("cloud-run", Tier::Pro).await;
    let (mut ws, _) = online(&app, &token, "desk-1").await;
    let now = chrono_now();
    google.add_gmail_message(FakeMail::new(
        "Ann",
        "Contract",
        "Please sign the contract by Friday",
        now - 60_000,
    ));
    google.add_gmail_message(FakeMail::new(
        "Bob",
        "Lunch",
        "Lunch tomorrow?",
        now - 30_000,
    ));
    let sealed = connect_google(&app, &google, &token).await;
    let agent: Value = json_body(
        create_cloud(
            &app,
            &token,
            "inbox_triage",
            "google",
            &sealed,
            json!({"query": "is:unread"}),
        )
        .await,
    )
    .await;
    let id = agent["id"].as_str().expect("id").to_owned();
    let started: Value = json_body(run_now(&app, &token, &id).await).await;
    let run = started["run_id"].as_str().expect("run_id").to_owned();

    let note = next_queued(&mut ws, "notification").await;
    assert_eq!(note["kind"], "agent_result", "{note}");
    assert_eq!(note["payload"]["run_id"], run.as_str());
    assert_eq!(note["payload"]["agent_type"], "inbox_triage");
    assert!(
        note["payload"]["results"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    );
    let row = finished_run(&app, &token, &id, &run).await;
    assert_eq!(row["status"], "succeeded", "{row}");
    assert_eq!(row["items_read"], 2, "{row}");
    assert_eq!(row["items_produced"], 1);
    assert!(google.requests("/gmail/v1/users/me/messages") >= 1);
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.body.to_string().contains("sign the contract")),
        "the mail went to the model"
    );
    assert!(!row.to_string().contains("contract"));

    // A revoked refresh token with an expired access token pauses the agent.
    google.expire_access_tokens();
    google.revoke_refresh_tokens();
    let started: Value = json_body(run_now(&app, &token, &id).await).await;
    let run = started["run_id"].as_str().expect("run_id").to_owned();
    let row = finished_run(&app, &token, &id, &run).await;
    assert_eq!(row["status"], "needs_reauth", "{row}");
    assert_error(run_now(&app, &token, &id).await, 403, "needs_reauth").await;
}

#[tokio::test]
async fn the_journey_asks_then_proposes_a_config_that_can_be_created() {
    let fake = model().await;
    let app = app_with_model(&fake).await;
    let (_, token) = app.account_on("journey", Tier::Pro).await;
    let resp = call(
        &app,
        Method::POST,
        "/agents/journey/start",
        &token,
        json!({"agent_type": "weekly_review", "data_types": ["tasks"]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let first: Value = json_body(resp).await;
    assert_eq!(first["done"], false, "{first}");
    assert_eq!(first["message"], "When should it run?");
    let session = first["session_id"].as_str().expect("session").to_owned();

    let resp = call(
        &app,
        Method::POST,
        "/agents/journey/message",
        &token,
        json!({"session_id": session, "message": "Fridays at five, just pick the rest"}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let done: Value = json_body(resp).await;
    assert_eq!(done["done"], true, "{done}");
    assert_eq!(done["session_id"], session.as_str());
    let config = done["config"].clone();
    assert_eq!(config["agent_type"], "weekly_review", "{done}");
    assert_eq!(config["schedule"], "0 17 * * 5");
    assert_eq!(config["timezone"], "Europe/Berlin");
    assert!(done["prompt_template"].is_string(), "{done}");
    // The proposal is a valid config as it stands.
    let mut body = config.as_object().cloned().expect("object");
    body.retain(|_, v| !v.is_null());
    body.remove("provider");
    let made = created(create_local(&app, &token, Value::Object(body)).await).await;
    assert_eq!(made["schedule"], "0 17 * * 5");

    // Nothing more to say to a finished journey.
    assert_error(
        call(
            &app,
            Method::POST,
            "/agents/journey/message",
            &token,
            json!({"session_id": session, "message": "again"}),
        )
        .await,
        400,
        "journey_done",
    )
    .await;
    // Someone else's session, an unknown one, garbage: 404.
    let (_, other) = app.account_on("journey-other", Tier::Pro).await;
    for (who, sid) in [
        (&other, session.clone()),
        (&token, uuid::Uuid::new_v4().to_string()),
        (&token, "nope".to_owned()),
    ] {
        assert_error(
            call(
                &app,
                Method::POST,
                "/agents/journey/message",
                who,
                json!({"session_id": sid, "message": "hi"}),
            )
            .await,
            404,
            "journey_not_found",
        )
        .await;
    }
    assert_validation_error(
        call(
            &app,
            Method::POST,
            "/agents/journey/start",
            &token,
            json!({"agent_type": "no_such_type"}),
        )
        .await,
    )
    .await;
    // The journey's server prompt never reaches the user.
    assert!(!done.to_string().contains("finish_setup"), "{done}");
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[tokio::test]
async fn agents_run_on_postgres_too() {
    let fake = model().await;
    let url = fake.url();
    let Some(app) = crate::helpers::spawn_app_on_postgres_with(move |s| {
        s.openai_base_url = Some(url);
        s.openai_api_key = Some(adiuva_core::Secret::new(crate::chat::SERVER_KEY.into()));
    })
    .await
    else {
        return;
    };
    let (_, token) = app.account_on("pg-agents", Tier::Free).await;
    let (mut ws, _) = online(&app, &token, "pg-laptop").await;
    let agent = created(create_local(&app, &token, local("one")).await).await;
    created(create_local(&app, &token, local("two")).await).await;
    assert_error(
        create_local(&app, &token, local("three")).await,
        403,
        "quota_exceeded",
    )
    .await;
    let id = agent["id"].as_str().expect("id").to_owned();
    let started: Value = json_body(run_now(&app, &token, &id).await).await;
    let run = started["run_id"].as_str().expect("run_id").to_owned();
    let trigger = next_queued(&mut ws, "agent_trigger").await;
    assert_eq!(trigger["run_id"], run.as_str());
    ws_send(
        &mut ws,
        json!({"type": "data_response", "id": run, "data": {"items": [{"id": "t1", "type": "task", "title": "Plan"}]}}),
    )
    .await;
    let note = next_queued(&mut ws, "notification").await;
    assert_eq!(note["kind"], "agent_result", "{note}");
    let row = finished_run(&app, &token, &id, &run).await;
    assert_eq!(row["status"], "succeeded", "{row}");
    assert_eq!(row["items_read"], 1);
}

/// The serving process runs the scheduler: an every-minute agent gets a scheduled run at
/// the next minute's slot (here skipped: no device is online) without anyone asking.
#[tokio::test]
async fn the_server_runs_due_agents_on_their_schedule() {
    let app = crate::helpers::spawn_app_with(|s| s.scheduler_tick_secs = 1).await;
    let (_, token) = app.account_on("scheduled", Tier::Pro).await;
    let agent = created(
        create_local(
            &app,
            &token,
            json!({"name": "every minute", "agent_type": "weekly_review", "schedule": "* * * * *"}),
        )
        .await,
    )
    .await;
    let id = agent["id"].as_str().expect("id").to_owned();
    let slot = agent["next_run_at"].as_i64().expect("a next run");
    assert_eq!(slot % 60_000, 0, "a minute boundary");
    // At most a minute until the slot, plus a few ticks.
    let run = tokio::time::timeout(Duration::from_secs(75), async {
        loop {
            let runs: Value = app
                .get_json_as(&format!("/agents/runs?agent_id={id}"), &token)
                .await;
            if let Some(r) = runs.as_array().and_then(|r| r.first())
                && r["status"] != "queued"
                && r["status"] != "running"
            {
                return r.clone();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await
    .expect("a scheduled run within the bound");
    assert_eq!(run["trigger"], "schedule", "{run}");
    assert_eq!(run["scheduled_for"], slot, "{run}");
    assert_eq!(run["status"], "skipped", "no device online: {run}");
    let after: Value = app.get_json_as("/agents/local", &token).await;
    assert_eq!(
        after[0]["next_run_at"].as_i64(),
        Some(slot + 60_000),
        "the next slot: {after}"
    );
}
