//! The chat agents, their 23 tools, the shared tool loop, the registry and the REST
//! executor, driven by a scripted model (no network).

use std::sync::{Arc, Mutex};

use adiuva_core::chat::agents::{
    AgentContext, AgentRegistry, BuiltinAgent, CallAgentError, ChatAgent, RegisterError,
    RestExecutor, ToolEffect, ToolSpec,
};
use adiuva_core::chat::tool_loop::{CLOSING_TEXT, MAX_TOOL_ITERATIONS, run_tool_loop};
use adiuva_core::chat::{ChatContext, ChatRequest, PlanAction, ToolExecutor};
use adiuva_core::ports::llm::{Completion, Message, Role, ToolCall};
use adiuva_core::testing::llm::{ScriptedModel, calls, text};
use async_trait::async_trait;
use serde_json::{Value, json};

// ---- the plan's tool table ----------------------------------------------------------------

const TASK_FIELDS: [&str; 9] = [
    "title",
    "description",
    "status",
    "priority",
    "assignees",
    "due_date",
    "project_id",
    "is_ai_suggested",
    "is_approved",
];
const CHECKPOINT_FIELDS: [&str; 5] = [
    "project_id",
    "title",
    "date",
    "is_ai_suggested",
    "is_approved",
];

struct Expected {
    agent: &'static str,
    name: &'static str,
    properties: Vec<&'static str>,
    required: Vec<&'static str>,
    /// `None` for reads, else `(action, table)`.
    write: Option<(&'static str, &'static str)>,
}

fn e(
    agent: &'static str,
    name: &'static str,
    properties: &[&'static str],
    required: &[&'static str],
    write: Option<(&'static str, &'static str)>,
) -> Expected {
    Expected {
        agent,
        name,
        properties: properties.to_vec(),
        required: required.to_vec(),
        write,
    }
}

fn with_first(first: &'static str, rest: &[&'static str]) -> Vec<&'static str> {
    let mut v = vec![first];
    v.extend_from_slice(rest);
    v
}

fn expected_tools() -> Vec<Expected> {
    let t = "task_agent";
    let c = "checkpoint_agent";
    let p = "project_agent";
    let n = "note_agent";
    vec![
        e(
            t,
            "list_tasks",
            &["project_id", "status", "search", "order_by"],
            &[],
            None,
        ),
        e(
            t,
            "create_task",
            &TASK_FIELDS,
            &["title"],
            Some(("create_record", "tasks")),
        ),
        e(
            t,
            "update_task",
            &with_first("task_id", &TASK_FIELDS),
            &["task_id"],
            Some(("update_record", "tasks")),
        ),
        e(
            t,
            "delete_task",
            &["task_id"],
            &["task_id"],
            Some(("delete_record", "tasks")),
        ),
        e(t, "list_tasks_due_today", &[], &[], None),
        e(t, "list_task_comments", &["task_id"], &["task_id"], None),
        e(
            t,
            "add_task_comment",
            &["task_id", "author", "content"],
            &["task_id", "content"],
            Some(("create_record", "task_comments")),
        ),
        e(
            t,
            "delete_task_comment",
            &["comment_id"],
            &["comment_id"],
            Some(("delete_record", "task_comments")),
        ),
        e(c, "list_checkpoints", &["project_id"], &[], None),
        e(
            c,
            "create_checkpoint",
            &CHECKPOINT_FIELDS,
            &["project_id", "title"],
            Some(("create_record", "checkpoints")),
        ),
        e(
            c,
            "update_checkpoint",
            &with_first("checkpoint_id", &CHECKPOINT_FIELDS),
            &["checkpoint_id"],
            Some(("update_record", "checkpoints")),
        ),
        e(
            c,
            "delete_checkpoint",
            &["checkpoint_id"],
            &["checkpoint_id"],
            Some(("delete_record", "checkpoints")),
        ),
        e(
            p,
            "list_projects",
            &["client_id", "include_archived"],
            &[],
            None,
        ),
        e(p, "list_all_projects", &[], &[], None),
        e(p, "get_project", &["project_id"], &["project_id"], None),
        e(
            p,
            "create_project",
            &["name", "client_id"],
            &["name"],
            Some(("create_record", "projects")),
        ),
        e(
            p,
            "update_project",
            &["project_id", "name", "client_id", "status"],
            &["project_id"],
            Some(("update_record", "projects")),
        ),
        e(
            p,
            "delete_project",
            &["project_id"],
            &["project_id"],
            Some(("delete_record", "projects")),
        ),
        e(n, "list_notes", &["project_id"], &[], None),
        e(n, "get_note", &["note_id"], &["note_id"], None),
        e(
            n,
            "create_note",
            &["title", "content", "project_id"],
            &["title"],
            Some(("create_record", "notes")),
        ),
        e(
            n,
            "update_note",
            &["note_id", "title", "content", "project_id"],
            &["note_id"],
            Some(("update_record", "notes")),
        ),
        e(
            n,
            "delete_note",
            &["note_id"],
            &["note_id"],
            Some(("delete_record", "notes")),
        ),
    ]
}

fn spec(registry: &AgentRegistry, name: &str) -> ToolSpec {
    registry.tool_spec(name).expect("tool exists").1.clone()
}

/// A valid value for property `prop` of `spec` (the first enum value, else by type).
fn sample(spec: &ToolSpec, prop: &str) -> Value {
    let schema = &spec.parameters["properties"][prop];
    if let Some(first) = schema.get("enum").and_then(|e| e.get(0)) {
        return first.clone();
    }
    match schema["type"].as_str() {
        Some("integer") => json!(1_700_000_000_000_i64),
        Some("boolean") => json!(true),
        _ => json!(format!("{prop}-value")),
    }
}

fn minimal_args(spec: &ToolSpec, required: &[&str]) -> Value {
    Value::Object(
        required
            .iter()
            .map(|r| ((*r).to_owned(), sample(spec, r)))
            .collect(),
    )
}

// ---- tool table and schemas ----------------------------------------------------------------

#[test]
fn agents_have_the_plan_tools_8_4_6_5() {
    let registry = AgentRegistry::with_builtin_agents();
    let expected = expected_tools();
    assert_eq!(expected.len(), 23);
    for (agent, count) in [
        ("task_agent", 8),
        ("checkpoint_agent", 4),
        ("project_agent", 6),
        ("note_agent", 5),
    ] {
        let a = registry.get(agent).expect("built-in agent");
        let names: Vec<&str> = a.tools().iter().map(|t| t.name).collect();
        let want: Vec<&str> = expected
            .iter()
            .filter(|e| e.agent == agent)
            .map(|e| e.name)
            .collect();
        assert_eq!(names.len(), count, "{agent}");
        assert_eq!(names, want, "{agent}'s tools, in the plan's order");
    }
    assert_eq!(registry.all_tool_definitions().len(), 23);
}

#[test]
fn every_schema_is_exact() {
    let registry = AgentRegistry::with_builtin_agents();
    for exp in expected_tools() {
        let (owner, spec) = registry.tool_spec(exp.name).expect(exp.name);
        assert_eq!(owner, exp.agent, "{}", exp.name);
        let p = &spec.parameters;
        assert_eq!(p["type"], "object", "{}", exp.name);
        assert_eq!(p["additionalProperties"], false, "{}", exp.name);
        let props = p["properties"].as_object().expect("properties");
        let mut got: Vec<&str> = props.keys().map(String::as_str).collect();
        let mut want = exp.properties.clone();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "{} properties", exp.name);
        let required: Vec<&str> = p["required"]
            .as_array()
            .expect("required is an array")
            .iter()
            .map(|r| r.as_str().expect("string"))
            .collect();
        assert_eq!(required, exp.required, "{} required", exp.name);
        for (name, prop) in props {
            let ty = prop["type"].as_str().expect("every property has a type");
            assert!(
                ["string", "integer", "boolean"].contains(&ty),
                "{}.{name}: {ty}",
                exp.name
            );
            assert!(
                prop["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{}.{name} has a description",
                exp.name
            );
        }
        match (exp.write, spec.effect) {
            (None, ToolEffect::Read) => {}
            (
                Some((action, table)),
                ToolEffect::Write {
                    action: a,
                    table: t,
                },
            ) => {
                assert_eq!((a, t), (action, table), "{}", exp.name);
            }
            (want, got) => panic!("{}: effect {got:?}, want {want:?}", exp.name),
        }
        let def = spec.definition();
        assert_eq!(def.name, exp.name);
        assert_eq!(def.parameters, spec.parameters);
        assert!(!def.description.is_empty());
    }
}

#[test]
fn enums_dates_and_sentinels_follow_the_plan() {
    let r = AgentRegistry::with_builtin_agents();
    let prop = |tool: &str, p: &str| spec(&r, tool).parameters["properties"][p].clone();
    for tool in ["list_tasks", "create_task", "update_task"] {
        assert_eq!(
            prop(tool, "status")["enum"],
            json!(["todo", "in_progress", "done"])
        );
    }
    for tool in ["create_task", "update_task"] {
        assert_eq!(
            prop(tool, "priority")["enum"],
            json!(["high", "medium", "low"])
        );
        assert_eq!(prop(tool, "assignees")["type"], "string");
        assert!(
            prop(tool, "assignees")["description"]
                .as_str()
                .is_some_and(|d| d.contains("JSON-encoded"))
        );
        assert_eq!(prop(tool, "due_date")["type"], "integer");
    }
    assert_eq!(
        prop("update_project", "status")["enum"],
        json!(["active", "archived"])
    );
    assert_eq!(prop("create_checkpoint", "date")["type"], "integer");
    assert_eq!(prop("create_task", "is_approved")["enum"], json!([0, 1]));
    // Updates document the -1 sentinel on every optional integer field.
    for (tool, fields) in [
        (
            "update_task",
            vec!["due_date", "is_ai_suggested", "is_approved"],
        ),
        (
            "update_checkpoint",
            vec!["date", "is_ai_suggested", "is_approved"],
        ),
    ] {
        for f in fields {
            let p = prop(tool, f);
            assert_eq!(p["type"], "integer");
            assert!(
                p["description"].as_str().is_some_and(|d| d.contains("-1")),
                "{tool}.{f} documents -1"
            );
            assert!(spec(&r, tool).validate(&json!({ f: -1, (if tool == "update_task" { "task_id" } else { "checkpoint_id" }): "x" })).is_ok());
        }
    }
    // The plan's guidance lives in the descriptions.
    assert!(spec(&r, "delete_project").description.contains("archiv"));
    assert!(spec(&r, "update_note").description.contains("get_note"));
    assert!(spec(&r, "create_note").description.contains("Markdown"));
}

#[test]
fn validation_accepts_minimal_and_full_arguments_for_every_tool() {
    let r = AgentRegistry::with_builtin_agents();
    for exp in expected_tools() {
        let s = spec(&r, exp.name);
        let minimal = minimal_args(&s, &exp.required);
        assert_eq!(
            s.validate(&minimal).map(Value::Object),
            Ok(minimal.clone()),
            "{}",
            exp.name
        );
        let full = minimal_args(&s, &exp.properties);
        assert!(s.validate(&full).is_ok(), "{}: {full}", exp.name);
    }
}

#[test]
fn validation_rejects_missing_unknown_mistyped_and_out_of_enum() {
    let r = AgentRegistry::with_builtin_agents();
    for exp in expected_tools() {
        let s = spec(&r, exp.name);
        // Unknown key, on every tool.
        let mut args = minimal_args(&s, &exp.required);
        args["bogus"] = json!(1);
        let err = s.validate(&args).expect_err(exp.name);
        assert!(err.contains("unknown field `bogus`"), "{}: {err}", exp.name);
        // Each required field missing, or null.
        for req in &exp.required {
            let mut args = minimal_args(&s, &exp.required);
            args.as_object_mut().expect("object").remove(*req);
            let err = s.validate(&args).expect_err(exp.name);
            assert!(
                err.contains(&format!("missing required field `{req}`")),
                "{err}"
            );
            args[*req] = Value::Null;
            assert!(s.validate(&args).is_err(), "{}: null {req}", exp.name);
        }
        // Each property with a wrong type, and each enum with a value outside it.
        for prop in &exp.properties {
            let schema = &s.parameters["properties"][*prop];
            let wrong = match schema["type"].as_str() {
                Some("string") => json!(42),
                _ => json!("not a number"),
            };
            let mut args = minimal_args(&s, &exp.required);
            args[*prop] = wrong;
            let err = s.validate(&args).expect_err(prop);
            assert!(
                err.contains(&format!("`{prop}` must be")),
                "{}: {err}",
                exp.name
            );
            if schema.get("enum").is_some() {
                let outside = if schema["type"] == "integer" {
                    json!(7)
                } else {
                    json!("someday")
                };
                args[*prop] = outside;
                let err = s.validate(&args).expect_err(prop);
                assert!(err.contains("must be one of"), "{}: {err}", exp.name);
            }
        }
        assert!(s.validate(&json!(["not", "an", "object"])).is_err());
    }
}

#[test]
fn validation_normalises_optional_nulls_and_float_integers() {
    let r = AgentRegistry::with_builtin_agents();
    let s = spec(&r, "create_task");
    let got = s
        .validate(&json!({"title": "t", "project_id": null, "due_date": 1_700_000_000_000.0}))
        .expect("valid");
    assert_eq!(
        Value::Object(got),
        json!({"title": "t", "due_date": 1_700_000_000_000_i64})
    );
    let err = s
        .validate(&json!({"title": "t", "due_date": 1.5}))
        .expect_err("fraction");
    assert!(err.contains("`due_date` must be an integer"), "{err}");
    // Every problem is reported at once.
    let err = s
        .validate(&json!({"status": "later", "x": 1}))
        .expect_err("three problems");
    assert!(
        err.contains("title") && err.contains("status") && err.contains("`x`"),
        "{err}"
    );
}

// ---- the tool loop -------------------------------------------------------------------------

/// Records calls; answers `{"ok": true, "tool": name}`, or an error for `failing`.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(String, String, Value)>>,
    failing: Option<&'static str>,
}

impl Recorder {
    fn seen(&self) -> Vec<(String, String, Value)> {
        self.seen.lock().expect("lock").clone()
    }
}

#[async_trait]
impl ToolExecutor for Recorder {
    async fn execute(&self, call_id: &str, name: &str, arguments: &Value) -> Result<Value, String> {
        self.seen.lock().expect("lock").push((
            call_id.to_owned(),
            name.to_owned(),
            arguments.clone(),
        ));
        if self.failing == Some(name) {
            return Err("the device could not do it".into());
        }
        Ok(json!({"ok": true, "tool": name}))
    }
}

fn ctx<'a>(
    model: &'a ScriptedModel,
    executor: &'a dyn ToolExecutor,
    request: &'a ChatRequest,
) -> AgentContext<'a> {
    AgentContext::new(model, "test-model", executor, request, 1_735_787_045_000)
}

fn start(query: &str) -> Vec<Message> {
    vec![
        Message {
            role: Role::System,
            content: "sys".into(),
            tool_calls: vec![],
            tool_call_id: None,
        },
        Message {
            role: Role::User,
            content: query.into(),
            tool_calls: vec![],
            tool_call_id: None,
        },
    ]
}

fn task_tools() -> Vec<ToolSpec> {
    BuiltinAgent::task_agent().tools().to_vec()
}

fn tool_messages(m: &[Message]) -> Vec<(String, Value)> {
    m.iter()
        .filter(|m| m.role == Role::Tool)
        .map(|m| {
            (
                m.tool_call_id.clone().expect("tool_call_id"),
                serde_json::from_str(&m.content).expect("tool content is JSON"),
            )
        })
        .collect()
}

#[tokio::test]
async fn text_only_reply_ends_the_loop() {
    let model = ScriptedModel::new();
    model.push(text("Hello there, nothing to do."));
    let exec = Recorder::default();
    let req = ChatRequest::default();
    let out = run_tool_loop(&ctx(&model, &exec, &req), start("hi"), &task_tools(), 5)
        .await
        .expect("ok");
    assert_eq!(out.text, "Hello there, nothing to do.");
    assert!(out.tool_calls.is_empty());
    assert_eq!(model.requests().len(), 1);
    assert_eq!(model.requests()[0].model, "test-model");
    assert!(exec.seen().is_empty());
}

#[tokio::test]
async fn one_tool_round_trip() {
    let model = ScriptedModel::new();
    model.push(calls(&[(
        "create_task",
        r#"{"title":"Buy milk","priority":"high"}"#,
    )]));
    model.push(text("Created the task."));
    let exec = Recorder::default();
    let req = ChatRequest::default();
    let out = run_tool_loop(&ctx(&model, &exec, &req), start("add"), &task_tools(), 5)
        .await
        .expect("ok");
    assert_eq!(out.text, "Created the task.");
    assert_eq!(out.tool_calls.len(), 1);
    let call = &out.tool_calls[0];
    assert_eq!(call.name, "create_task");
    assert_eq!(
        call.arguments,
        json!({"title": "Buy milk", "priority": "high"})
    );
    assert_eq!(call.result, Ok(json!({"ok": true, "tool": "create_task"})));
    assert_eq!(
        exec.seen(),
        vec![(
            "call_0_create_task".to_owned(),
            "create_task".to_owned(),
            json!({"title": "Buy milk", "priority": "high"})
        )]
    );
    // Second request: assistant message with the call, then the tool result.
    let reqs = model.requests();
    assert_eq!(reqs.len(), 2);
    let m = &reqs[1].messages;
    assert_eq!(m.len(), 4);
    assert_eq!(m[2].role, Role::Assistant);
    assert_eq!(
        m[2].tool_calls,
        vec![ToolCall {
            id: "call_0_create_task".into(),
            name: "create_task".into(),
            arguments: r#"{"title":"Buy milk","priority":"high"}"#.into(),
        }]
    );
    assert_eq!(
        tool_messages(m),
        vec![(
            "call_0_create_task".to_owned(),
            json!({"ok": true, "tool": "create_task"})
        )]
    );
}

#[tokio::test]
async fn several_calls_in_one_reply_run_in_order() {
    let model = ScriptedModel::new();
    model.push(calls(&[
        ("list_tasks", r#"{"status":"todo"}"#),
        ("delete_task", r#"{"task_id":"t1"}"#),
        ("list_tasks_due_today", ""),
    ]));
    model.push(text("Done."));
    let exec = Recorder::default();
    let req = ChatRequest::default();
    let out = run_tool_loop(&ctx(&model, &exec, &req), start("q"), &task_tools(), 5)
        .await
        .expect("ok");
    let names: Vec<String> = exec.seen().into_iter().map(|(_, n, _)| n).collect();
    assert_eq!(names, ["list_tasks", "delete_task", "list_tasks_due_today"]);
    assert_eq!(out.tool_calls.len(), 3);
    let ids: Vec<String> = tool_messages(&model.requests()[1].messages)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        ids,
        [
            "call_0_list_tasks",
            "call_1_delete_task",
            "call_2_list_tasks_due_today"
        ]
    );
}

#[tokio::test]
async fn malformed_json_is_an_error_result_and_the_loop_continues() {
    let model = ScriptedModel::new();
    model.push(calls(&[("create_task", r#"{"title": "oops""#)]));
    model.push(calls(&[("create_task", r#"{"title": "fixed"}"#)]));
    model.push(text("Fixed it."));
    let exec = Recorder::default();
    let req = ChatRequest::default();
    let out = run_tool_loop(&ctx(&model, &exec, &req), start("q"), &task_tools(), 5)
        .await
        .expect("ok");
    assert_eq!(out.text, "Fixed it.");
    // The executor only saw the good call.
    assert_eq!(exec.seen().len(), 1);
    assert_eq!(exec.seen()[0].2, json!({"title": "fixed"}));
    let first = &out.tool_calls[0];
    assert_eq!(first.arguments, json!(r#"{"title": "oops""#));
    assert!(
        first
            .result
            .as_ref()
            .is_err_and(|e| e.contains("not valid JSON"))
    );
    let results = tool_messages(&model.requests()[1].messages);
    assert!(
        results[0].1["error"]
            .as_str()
            .is_some_and(|e| e.contains("not valid JSON")),
        "{results:?}"
    );
}

#[tokio::test]
async fn schema_violation_is_an_error_result_and_the_executor_is_not_called() {
    let model = ScriptedModel::new();
    model.push(calls(&[(
        "create_task",
        r#"{"title":"x","status":"someday","colour":"red"}"#,
    )]));
    model.push(text("Sorry."));
    let exec = Recorder::default();
    let req = ChatRequest::default();
    let out = run_tool_loop(&ctx(&model, &exec, &req), start("q"), &task_tools(), 5)
        .await
        .expect("ok");
    assert!(exec.seen().is_empty());
    let err = out.tool_calls[0].result.clone().expect_err("invalid");
    assert!(
        err.contains("`status` must be one of todo, in_progress, done"),
        "{err}"
    );
    assert!(err.contains("unknown field `colour`"), "{err}");
    let results = tool_messages(&model.requests()[1].messages);
    assert_eq!(results[0].1, json!({ "error": err }));
    assert_eq!(out.text, "Sorry.");
}

#[tokio::test]
async fn unknown_tool_and_another_agents_tool_are_error_results() {
    let model = ScriptedModel::new();
    model.push(calls(&[
        ("launch_rockets", "{}"),
        ("create_note", r#"{"title":"n"}"#),
    ]));
    model.push(text("Cannot."));
    let exec = Recorder::default();
    let req = ChatRequest::default();
    let out = run_tool_loop(&ctx(&model, &exec, &req), start("q"), &task_tools(), 5)
        .await
        .expect("ok");
    assert!(
        exec.seen().is_empty(),
        "a task-agent turn never runs note tools"
    );
    for call in &out.tool_calls {
        let err = call.result.clone().expect_err("unknown");
        assert!(
            err.contains(&format!("unknown tool `{}`", call.name)),
            "{err}"
        );
    }
}

#[tokio::test]
async fn executor_errors_reach_the_model() {
    let model = ScriptedModel::new();
    model.push(calls(&[("delete_task", r#"{"task_id":"t9"}"#)]));
    model.push(text("The device refused."));
    let exec = Recorder {
        failing: Some("delete_task"),
        ..Recorder::default()
    };
    let req = ChatRequest::default();
    let out = run_tool_loop(&ctx(&model, &exec, &req), start("q"), &task_tools(), 5)
        .await
        .expect("ok");
    assert_eq!(
        out.tool_calls[0].result,
        Err("the device could not do it".into())
    );
    assert_eq!(
        tool_messages(&model.requests()[1].messages)[0].1,
        json!({"error": "the device could not do it"})
    );
}

#[tokio::test]
async fn max_iter_stops_with_a_closing_call_without_tools() {
    // A model that never stops calling tools.
    let model = ScriptedModel::with_handler(|req| {
        Some(if req.tools.is_empty() {
            text("Here is where I got to.")
        } else {
            calls(&[("list_tasks", "{}")])
        })
    });
    let exec = Recorder::default();
    let req = ChatRequest::default();
    let out = run_tool_loop(
        &ctx(&model, &exec, &req),
        start("q"),
        &task_tools(),
        MAX_TOOL_ITERATIONS,
    )
    .await
    .expect("ok");
    assert_eq!(MAX_TOOL_ITERATIONS, 5);
    let reqs = model.requests();
    assert_eq!(reqs.len(), 6, "5 rounds with tools + 1 closing call");
    assert!(reqs[..5].iter().all(|r| r.tools.len() == 8));
    assert!(reqs[5].tools.is_empty());
    assert_eq!(exec.seen().len(), 5);
    assert_eq!(out.tool_calls.len(), 5);
    assert_eq!(out.text, "Here is where I got to.");
}

#[tokio::test]
async fn a_silent_closing_call_gets_the_closing_text() {
    let model = ScriptedModel::with_handler(|req| {
        Some(if req.tools.is_empty() {
            text("")
        } else {
            calls(&[("list_tasks", "{}")])
        })
    });
    let exec = Recorder::default();
    let req = ChatRequest::default();
    let out = run_tool_loop(&ctx(&model, &exec, &req), start("q"), &task_tools(), 2)
        .await
        .expect("ok");
    assert_eq!(model.requests().len(), 3);
    assert_eq!(out.text, CLOSING_TEXT);
}

#[tokio::test]
async fn text_reaches_the_sink_as_produced_and_matches_the_outcome() {
    let model = ScriptedModel::new();
    let mut first = calls(&[("list_tasks", "{}")]);
    first.content = "Let me look.".into();
    model.push(first);
    model.push(text("You have no open tasks today."));
    let exec = Recorder::default();
    let req = ChatRequest::default();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut c = ctx(&model, &exec, &req);
    c.text_sink = Some(&tx);
    let out = run_tool_loop(&c, start("q"), &task_tools(), 5)
        .await
        .expect("ok");
    let mut chunks = Vec::new();
    while let Ok(chunk) = rx.try_recv() {
        chunks.push(chunk);
    }
    assert!(chunks.len() > 3, "streamed in pieces: {chunks:?}");
    assert_eq!(chunks.concat(), out.text);
    assert_eq!(out.text, "Let me look.\n\nYou have no open tasks today.");
    // The assistant message kept its text next to its tool calls.
    assert_eq!(model.requests()[1].messages[2].content, "Let me look.");
}

#[tokio::test]
async fn api_key_is_forwarded_on_every_call() {
    let model = ScriptedModel::with_handler(|req| {
        Some(if req.tools.is_empty() {
            text("end")
        } else {
            calls(&[("list_tasks", "{}")])
        })
    });
    let exec = Recorder::default();
    let req = ChatRequest {
        api_key: Some(adiuva_core::domain::ByokKey::parse("sk-user-byok").expect("key")),
        ..ChatRequest::default()
    };
    let c = ctx(&model, &exec, &req);
    assert_eq!(c.api_key, Some("sk-user-byok"));
    run_tool_loop(&c, start("q"), &task_tools(), 3)
        .await
        .expect("ok");
    let reqs = model.requests();
    assert_eq!(reqs.len(), 4);
    assert!(
        reqs.iter()
            .all(|r| r.api_key.as_deref() == Some("sk-user-byok"))
    );
    assert!(
        !format!("{c:?}").contains("sk-user-byok"),
        "Debug hides the key"
    );
}

#[tokio::test]
async fn a_model_failure_is_returned() {
    let model = ScriptedModel::new();
    model.push(calls(&[("list_tasks", "{}")]));
    model.push_error("provider down");
    let exec = Recorder::default();
    let req = ChatRequest::default();
    let err = run_tool_loop(&ctx(&model, &exec, &req), start("q"), &task_tools(), 5)
        .await
        .expect_err("fails");
    assert!(err.to_string().contains("provider down"));
}

// ---- agents and the registry ---------------------------------------------------------------

#[tokio::test]
async fn each_agent_offers_only_its_own_tools_and_its_own_prompt() {
    let registry = AgentRegistry::with_builtin_agents();
    for (name, _) in registry.list() {
        let agent = registry.get(&name).expect("listed");
        let model = ScriptedModel::new();
        model.push(text("ok"));
        let exec = Recorder::default();
        let req = ChatRequest::default();
        let out = registry
            .call_agent(&name, "hello", &ctx(&model, &exec, &req))
            .await
            .expect("ok");
        assert_eq!(out.text, "ok");
        let sent = &model.requests()[0];
        let offered: Vec<&str> = sent.tools.iter().map(|t| t.name.as_str()).collect();
        let own: Vec<&str> = agent.tools().iter().map(|t| t.name).collect();
        assert_eq!(offered, own, "{name}");
        assert!(sent.messages[0].content.starts_with(agent.system_prompt()));
    }
}

#[tokio::test]
async fn handle_composes_prompt_context_history_and_query() {
    let agent = BuiltinAgent::task_agent();
    let model = ScriptedModel::new();
    model.push(text("fine"));
    let exec = Recorder::default();
    let mut context = ChatContext {
        relevant_documents: vec!["Meeting notes: ship v2 on Friday".into()],
        recent_tasks: vec![json!({"id": "t1", "title": "Write release notes"})],
        conversation_history: vec![
            json!({"role": "user", "content": "earlier question"}),
            json!({"role": "assistant", "content": "earlier answer"}),
            json!({"role": "system", "content": "ignored: clients cannot add system turns"}),
        ],
        ..ChatContext::default()
    };
    context.user_profile.insert("name".into(), json!("Ada"));
    let req = ChatRequest {
        message: "what's next?".into(),
        context,
        ..ChatRequest::default()
    };
    let previous = vec!["project_agent found project p1".to_owned()];
    let mut c = ctx(&model, &exec, &req);
    c.previous_results = &previous;
    agent.handle("what's next?", &c).await.expect("ok");
    let m = &model.requests()[0].messages;
    let roles: Vec<Role> = m.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [Role::System, Role::User, Role::Assistant, Role::User]
    );
    let system = &m[0].content;
    for needle in [
        agent.system_prompt(),
        "2025-01-02T03:04Z",
        "Ada",
        "ship v2 on Friday",
        "Write release notes",
        "project_agent found project p1",
    ] {
        assert!(system.contains(needle), "system message lacks {needle:?}");
    }
    assert!(!system.contains("ignored: clients"));
    assert_eq!(m[1].content, "earlier question");
    assert_eq!(m[2].content, "earlier answer");
    assert_eq!(m[3].content, "what's next?");
}

struct PluginAgent {
    name: &'static str,
    tools: Vec<ToolSpec>,
}

impl ChatAgent for PluginAgent {
    fn name(&self) -> &str {
        self.name
    }
    fn description(&self) -> &str {
        "A plugin agent"
    }
    fn system_prompt(&self) -> &str {
        "You are the plugin's secret prompt."
    }
    fn tools(&self) -> &[ToolSpec] {
        &self.tools
    }
}

#[tokio::test]
async fn registry_register_get_list_duplicates_and_call_agent() {
    let mut registry = AgentRegistry::with_builtin_agents();
    assert_eq!(
        registry.list(),
        vec![
            (
                "checkpoint_agent".to_owned(),
                "Manages project checkpoints (milestones): list, create, update, delete".to_owned()
            ),
            (
                "note_agent".to_owned(),
                "Manages notes: list, get, create, update, delete".to_owned()
            ),
            (
                "project_agent".to_owned(),
                "Manages projects: list, get, create, update, archive, delete".to_owned()
            ),
            (
                "task_agent".to_owned(),
                "Manages tasks and comments: list, create, update, delete, due-today, comments"
                    .to_owned()
            ),
        ]
    );
    assert!(registry.get("calendar_agent").is_none());

    let plugin = Arc::new(PluginAgent {
        name: "analytics_agent",
        tools: vec![],
    });
    registry.register(plugin).expect("new name");
    assert_eq!(registry.list().len(), 5);
    assert_eq!(registry.list()[0].0, "analytics_agent", "sorted by name");
    assert_eq!(
        registry
            .get("analytics_agent")
            .expect("registered")
            .description(),
        "A plugin agent"
    );
    assert!(
        registry
            .all_prompt_texts()
            .contains(&"You are the plugin's secret prompt.".to_owned())
    );

    let again = Arc::new(PluginAgent {
        name: "task_agent",
        tools: vec![],
    });
    assert_eq!(
        registry.register(again),
        Err(RegisterError::DuplicateAgent("task_agent".into()))
    );
    let clash = Arc::new(PluginAgent {
        name: "other_agent",
        tools: vec![BuiltinAgent::note_agent().tools()[0].clone()],
    });
    assert_eq!(
        registry.register(clash),
        Err(RegisterError::DuplicateTool {
            tool: "list_notes".into(),
            owner: "note_agent".into()
        })
    );
    assert_eq!(
        registry.list().len(),
        5,
        "failed registrations change nothing"
    );

    let model = ScriptedModel::new();
    model.push(text("analytics here"));
    let exec = Recorder::default();
    let req = ChatRequest::default();
    let c = ctx(&model, &exec, &req);
    let out = registry
        .call_agent("analytics_agent", "stats", &c)
        .await
        .expect("ok");
    assert_eq!(out.text, "analytics here");
    assert!(matches!(
        registry.call_agent("nobody", "x", &c).await,
        Err(CallAgentError::UnknownAgent(n)) if n == "nobody"
    ));
}

#[test]
fn prompt_texts_cover_every_agent_and_stay_out_of_tool_definitions() {
    let registry = AgentRegistry::with_builtin_agents();
    let texts = registry.all_prompt_texts();
    for (name, _) in registry.list() {
        let agent = registry.get(&name).expect("agent");
        assert!(texts.contains(&agent.system_prompt().to_owned()), "{name}");
        for f in agent.prompt_fragments() {
            assert!(texts.contains(&f.to_owned()));
            assert!(
                agent.system_prompt().contains(f),
                "{name}'s prompt is built from its fragments"
            );
        }
    }
    for f in adiuva_core::chat::agents::SHARED_FRAGMENTS {
        assert!(texts.contains(&f.to_owned()));
    }
    // Tool definitions (which a provider sees, like the prompt) carry no prompt text.
    let defs = serde_json::to_string(&registry.all_tool_definitions()).expect("json");
    for t in &texts {
        assert!(!defs.contains(t.as_str()));
    }
}

// ---- the REST executor ---------------------------------------------------------------------

const NOW: i64 = 1_735_787_045_000; // 2025-01-02T03:04:05Z
const TODAY_NOON: i64 = 1_735_819_200_000; // 2025-01-02T12:00Z

fn rest_context() -> ChatContext {
    let mut c = ChatContext {
        recent_tasks: vec![
            json!({"id": "t1", "title": "Write report", "status": "todo", "priority": "low", "project_id": "p1", "due_date": TODAY_NOON}),
            json!({"id": "t2", "title": "Call Bob", "description": "about the REPORT", "status": "done", "priority": "high", "project_id": "p2", "due_date": TODAY_NOON + 86_400_000}),
            json!({"id": "t3", "title": "Archive mail", "status": "todo", "priority": "medium", "project_id": "p1"}),
        ],
        ..ChatContext::default()
    };
    c.extra.insert(
        "projects".into(),
        json!([
            {"id": "p1", "name": "Alpha", "client_id": "c1", "status": "active"},
            {"id": "p2", "name": "Beta", "client_id": "c1", "status": "archived"},
            {"id": "p3", "name": "Gamma", "client_id": "c2", "status": "active"}
        ]),
    );
    c.extra.insert(
        "notes".into(),
        json!([{"id": "n1", "title": "Ideas", "content": "# Ideas", "project_id": "p1"}]),
    );
    c.extra.insert(
        "task_comments".into(),
        json!([{"id": "k1", "task_id": "t1", "content": "hi"}, {"id": "k2", "task_id": "t2", "content": "yo"}]),
    );
    c
}

fn ids(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .expect("list")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn rest_write_tools_become_actions_in_order() {
    let registry = AgentRegistry::with_builtin_agents();
    let exec = RestExecutor::new(&registry, ChatContext::default(), NOW);
    let cases: Vec<(&str, Value, PlanAction)> = vec![
        (
            "create_task",
            json!({"title": "A", "due_date": NOW}),
            action(
                "create_record",
                "tasks",
                json!({"title": "A", "due_date": NOW}),
            ),
        ),
        (
            "update_task",
            json!({"task_id": "t1", "status": "done", "due_date": -1, "is_approved": -1}),
            action(
                "update_record",
                "tasks",
                json!({"task_id": "t1", "id": "t1", "status": "done"}),
            ),
        ),
        (
            "delete_task",
            json!({"task_id": "t1"}),
            action(
                "delete_record",
                "tasks",
                json!({"task_id": "t1", "id": "t1"}),
            ),
        ),
        (
            "add_task_comment",
            json!({"task_id": "t1", "author": "AI", "content": "c"}),
            action(
                "create_record",
                "task_comments",
                json!({"task_id": "t1", "author": "AI", "content": "c"}),
            ),
        ),
        (
            "delete_task_comment",
            json!({"comment_id": "k1"}),
            action(
                "delete_record",
                "task_comments",
                json!({"comment_id": "k1", "id": "k1"}),
            ),
        ),
        (
            "create_checkpoint",
            json!({"project_id": "p1", "title": "Beta", "date": NOW}),
            action(
                "create_record",
                "checkpoints",
                json!({"project_id": "p1", "title": "Beta", "date": NOW}),
            ),
        ),
        (
            "update_checkpoint",
            json!({"checkpoint_id": "c1", "is_approved": 1, "date": -1}),
            action(
                "update_record",
                "checkpoints",
                json!({"checkpoint_id": "c1", "id": "c1", "is_approved": 1}),
            ),
        ),
        (
            "delete_checkpoint",
            json!({"checkpoint_id": "c1"}),
            action(
                "delete_record",
                "checkpoints",
                json!({"checkpoint_id": "c1", "id": "c1"}),
            ),
        ),
        (
            "create_project",
            json!({"name": "P"}),
            action("create_record", "projects", json!({"name": "P"})),
        ),
        (
            "update_project",
            json!({"project_id": "p1", "status": "archived"}),
            action(
                "update_record",
                "projects",
                json!({"project_id": "p1", "id": "p1", "status": "archived"}),
            ),
        ),
        (
            "delete_project",
            json!({"project_id": "p1"}),
            action(
                "delete_record",
                "projects",
                json!({"project_id": "p1", "id": "p1"}),
            ),
        ),
        (
            "create_note",
            json!({"title": "N", "content": "# md"}),
            action(
                "create_record",
                "notes",
                json!({"title": "N", "content": "# md"}),
            ),
        ),
        (
            "update_note",
            json!({"note_id": "n1", "content": "new"}),
            action(
                "update_record",
                "notes",
                json!({"note_id": "n1", "id": "n1", "content": "new"}),
            ),
        ),
        (
            "delete_note",
            json!({"note_id": "n1"}),
            action(
                "delete_record",
                "notes",
                json!({"note_id": "n1", "id": "n1"}),
            ),
        ),
    ];
    let writes = expected_tools()
        .iter()
        .filter(|e| e.write.is_some())
        .count();
    assert_eq!(cases.len(), writes, "every write tool is covered");
    for (tool, args, _) in &cases {
        assert_eq!(
            exec.execute("id", tool, args).await,
            Ok(json!({"ok": true, "queued": true})),
            "{tool}"
        );
    }
    let want: Vec<PlanAction> = cases.into_iter().map(|(_, _, a)| a).collect();
    assert_eq!(exec.take_actions(), want);
    assert!(exec.take_actions().is_empty(), "taken once");
    // Invalid arguments queue nothing.
    assert!(exec.execute("id", "create_task", &json!({})).await.is_err());
    assert!(exec.execute("id", "nope", &json!({})).await.is_err());
    assert!(exec.take_actions().is_empty());
}

fn action(kind: &str, table: &str, data: Value) -> PlanAction {
    PlanAction {
        kind: kind.into(),
        table: Some(table.into()),
        data: Some(data),
        agent: None,
    }
}

#[tokio::test]
async fn rest_reads_answer_from_the_context() {
    let registry = AgentRegistry::with_builtin_agents();
    let exec = RestExecutor::new(&registry, rest_context(), NOW);
    let run = |tool: &'static str, args: Value| {
        let exec = &exec;
        async move { exec.execute("id", tool, &args).await }
    };

    let all = run("list_tasks", json!({})).await.expect("ok");
    assert_eq!(ids(&all, "tasks"), ["t1", "t2", "t3"]);
    assert_eq!(all["count"], 3);
    assert!(all["note"].as_str().is_some_and(|n| n.contains("recent")));
    let p1 = run("list_tasks", json!({"project_id": "p1", "status": "todo"}))
        .await
        .expect("ok");
    assert_eq!(ids(&p1, "tasks"), ["t1", "t3"]);
    let found = run("list_tasks", json!({"search": "report"}))
        .await
        .expect("ok");
    assert_eq!(
        ids(&found, "tasks"),
        ["t1", "t2"],
        "title or description, any case"
    );
    let by_priority = run("list_tasks", json!({"order_by": "priority"}))
        .await
        .expect("ok");
    assert_eq!(ids(&by_priority, "tasks"), ["t2", "t3", "t1"]);
    let by_due = run("list_tasks", json!({"order_by": "due_date"}))
        .await
        .expect("ok");
    assert_eq!(ids(&by_due, "tasks"), ["t1", "t2", "t3"], "undated last");
    let today = run("list_tasks_due_today", json!({})).await.expect("ok");
    assert_eq!(ids(&today, "tasks"), ["t1"]);

    let comments = run("list_task_comments", json!({"task_id": "t1"}))
        .await
        .expect("ok");
    assert_eq!(ids(&comments, "task_comments"), ["k1"]);
    let active = run("list_projects", json!({"client_id": "c1"}))
        .await
        .expect("ok");
    assert_eq!(ids(&active, "projects"), ["p1"]);
    let with_archived = run(
        "list_projects",
        json!({"client_id": "c1", "include_archived": true}),
    )
    .await
    .expect("ok");
    assert_eq!(ids(&with_archived, "projects"), ["p1", "p2"]);
    let every = run("list_all_projects", json!({})).await.expect("ok");
    assert_eq!(ids(&every, "projects"), ["p1", "p2", "p3"]);
    let one = run("get_project", json!({"project_id": "p3"}))
        .await
        .expect("ok");
    assert_eq!(one["project"]["name"], "Gamma");
    assert!(
        run("get_project", json!({"project_id": "zz"}))
            .await
            .is_err()
    );
    let notes = run("list_notes", json!({"project_id": "p1"}))
        .await
        .expect("ok");
    assert_eq!(ids(&notes, "notes"), ["n1"]);
    let note = run("get_note", json!({"note_id": "n1"})).await.expect("ok");
    assert_eq!(note["note"]["content"], "# Ideas");

    // Checkpoints were not sent: an empty list that says the device holds them.
    let cps = run("list_checkpoints", json!({})).await.expect("ok");
    assert_eq!(cps["checkpoints"], json!([]));
    assert!(cps["note"].as_str().is_some_and(|n| n.contains("device")));
    assert!(exec.take_actions().is_empty(), "reads queue nothing");

    let bare = RestExecutor::new(&registry, ChatContext::default(), NOW);
    let err = bare
        .execute("id", "get_note", &json!({"note_id": "n1"}))
        .await
        .expect_err("no notes sent");
    assert!(err.contains("did not send"), "{err}");
}

#[tokio::test]
async fn rest_executor_through_an_agent_turn() {
    let registry = AgentRegistry::with_builtin_agents();
    let req = ChatRequest {
        message: "archive Alpha".into(),
        context: rest_context(),
        ..ChatRequest::default()
    };
    let exec = RestExecutor::new(&registry, req.context.clone(), NOW);
    let model = ScriptedModel::new();
    model.push(calls(&[("list_projects", "{}")]));
    model.push(calls(&[(
        "update_project",
        r#"{"project_id":"p1","status":"archived"}"#,
    )]));
    model.push(Completion {
        content: "Archived Alpha.".into(),
        tool_calls: vec![],
    });
    let out = registry
        .call_agent("project_agent", &req.message, &ctx(&model, &exec, &req))
        .await
        .expect("ok");
    assert_eq!(out.text, "Archived Alpha.");
    assert_eq!(
        ids(out.tool_calls[0].result.as_ref().expect("ok"), "projects"),
        ["p1", "p3"]
    );
    assert_eq!(
        exec.take_actions(),
        vec![action(
            "update_record",
            "projects",
            json!({"project_id": "p1", "id": "p1", "status": "archived"})
        )]
    );
}

// ---- fitting to the context window --------------------------------------------------------

fn definitions(tools: &[ToolSpec]) -> Vec<adiuva_core::ports::llm::ToolDefinition> {
    tools.iter().map(ToolSpec::definition).collect()
}

/// History goes oldest first, then tasks from the end; the system prompt and the message
/// stay; what is left fits the budget.
#[test]
fn compose_drops_the_oldest_history_then_the_last_context_items() {
    use adiuva_core::chat::agents::compose_messages;
    use adiuva_core::chat::window::{ContextWindow, messages_tokens};
    let model = ScriptedModel::new();
    let exec = Recorder::default();
    let history: Vec<Value> = (0..6)
        .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": format!("turn {i} {}", "x".repeat(600))}))
        .collect();
    let tasks: Vec<Value> = (0..10)
        .map(|i| json!({"title": format!("task {i} {}", "y".repeat(300))}))
        .collect();
    let req = ChatRequest {
        message: "the message".into(),
        context: ChatContext {
            conversation_history: history,
            recent_tasks: tasks,
            ..Default::default()
        },
        ..Default::default()
    };
    let agent = BuiltinAgent::task_agent();
    let tools = definitions(agent.tools());
    let unbounded = compose_messages(
        agent.system_prompt(),
        "the message",
        &tools,
        &ctx(&model, &exec, &req),
    )
    .expect("no window");
    assert_eq!(unbounded.len(), 8, "system, six turns, the message");

    // Room for everything but about the history plus a few tasks.
    let mut c = ctx(&model, &exec, &req);
    c.max_tokens = Some(100);
    let full = messages_tokens(&unbounded);
    let window = ContextWindow {
        tokens: full + 100 + adiuva_core::chat::window::tools_tokens(&tools) - 1_800,
    };
    c.window = Some(window);
    let fitted = compose_messages(agent.system_prompt(), "the message", &tools, &c).expect("fits");
    assert!(messages_tokens(&fitted) <= window.prompt_budget(Some(100), &tools));
    assert!(fitted[0].content.starts_with(agent.system_prompt()));
    assert_eq!(
        fitted.last().map(|m| m.content.as_str()),
        Some("the message")
    );
    assert_eq!(fitted.len(), 2, "all six history turns went first");
    assert!(
        fitted[0].content.contains("task 0 "),
        "the first tasks stay"
    );
    assert!(!fitted[0].content.contains("task 9 "), "the last task went");

    // A window too small for the prompt and the message: refused.
    c.window = Some(ContextWindow { tokens: 300 });
    assert!(matches!(
        compose_messages(agent.system_prompt(), "the message", &tools, &c),
        Err(adiuva_core::ports::llm::LlmError::PromptTooLong { .. })
    ));
}

/// A tool result larger than the room left is cut so the next call still fits, and
/// every call carries the agent's `max_tokens`.
#[tokio::test]
async fn a_tool_result_is_cut_to_the_room_left_in_the_window() {
    use adiuva_core::chat::window::{ContextWindow, messages_tokens};
    struct Huge;
    #[async_trait]
    impl ToolExecutor for Huge {
        async fn execute(&self, _: &str, _: &str, _: &Value) -> Result<Value, String> {
            Ok(json!({"tasks": "z".repeat(100_000)}))
        }
    }
    let model = ScriptedModel::new();
    model.push(calls(&[("list_tasks", "{}")]));
    model.push(text("summarised"));
    let req = ChatRequest::default();
    let mut c = ctx(&model, &Huge, &req);
    let window = ContextWindow { tokens: 6_000 };
    c.window = Some(window);
    c.max_tokens = Some(500);
    let tools = task_tools();
    let out = run_tool_loop(&c, start("list"), &tools, 5)
        .await
        .expect("ok");
    assert_eq!(out.text, "summarised");
    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    let second = &requests[1];
    assert!(
        messages_tokens(&second.messages) <= window.prompt_budget(Some(500), &definitions(&tools)),
        "the second call fits"
    );
    let tool = second
        .messages
        .iter()
        .find(|m| m.role == Role::Tool)
        .expect("tool result");
    assert!(tool.content.ends_with("context window]"), "cut and marked");
    assert!(requests.iter().all(|r| r.max_tokens == Some(500)));
}
