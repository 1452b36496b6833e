//! The rules of `render_ui_directive` and `cross_entity_resolve`, one case per path.

use serde_json::{Value, json};

use super::*;

fn call(name: &str, args: Value, result: Value) -> ExecutedCall {
    ExecutedCall {
        id: format!("call_{name}"),
        name: name.into(),
        arguments: args,
        result: Ok(result),
    }
}

fn failed(name: &str, args: Value) -> ExecutedCall {
    ExecutedCall {
        id: format!("call_{name}"),
        name: name.into(),
        arguments: args,
        result: Err("no such task".into()),
    }
}

fn req(message: &str, scope: Option<Value>) -> ChatRequest {
    ChatRequest {
        message: message.into(),
        scope,
        source: Some("popup".into()),
        ..Default::default()
    }
}

fn tasks(list: Value) -> Value {
    let n = list.as_array().map_or(0, Vec::len);
    json!({"tasks": list, "count": n})
}

#[test]
fn one_task_read_is_a_task_card() {
    let calls = [call(
        "list_tasks",
        json!({"search": "report"}),
        tasks(json!([{"id": "t1", "title": "Write report", "status": "todo"}])),
    )];
    let d = resolve(&req("what about the report?", None), &calls);
    assert_eq!(
        d.ui_directive,
        Some(
            json!({"type": "task_card", "task": {"id": "t1", "title": "Write report", "status": "todo"}})
        )
    );
    // a device answering with a bare array counts the same
    let calls = [call(
        "list_tasks_due_today",
        json!({}),
        json!([{"id": "t1", "title": "Write report"}]),
    )];
    let d = resolve(&req("due today?", None), &calls);
    assert_eq!(d.ui_directive.expect("card")["task"]["id"], "t1");
}

#[test]
fn the_one_written_task_is_the_card_even_after_a_longer_read() {
    let calls = [
        call(
            "list_tasks",
            json!({}),
            tasks(json!([
                {"id": "t1", "title": "Write report", "status": "todo"},
                {"id": "t2", "title": "Call the bank", "status": "todo"}
            ])),
        ),
        call(
            "update_task",
            json!({"task_id": "t1", "status": "done"}),
            json!({"ok": true}),
        ),
    ];
    let d = resolve(&req("mark the report done", None), &calls);
    assert_eq!(
        d.ui_directive,
        Some(
            json!({"type": "task_card", "task": {"id": "t1", "title": "Write report", "status": "done"}})
        )
    );
    // a created task: its arguments, with the id the device gave it
    let calls = [call(
        "create_task",
        json!({"title": "Ship it", "priority": "high"}),
        json!({"id": "t9"}),
    )];
    let d = resolve(&req("add ship it", None), &calls);
    assert_eq!(
        d.ui_directive,
        Some(
            json!({"type": "task_card", "task": {"title": "Ship it", "priority": "high", "id": "t9"}})
        )
    );
}

#[test]
fn no_card_for_several_tasks_a_deletion_or_a_failed_call() {
    let two = tasks(json!([{"id": "t1", "title": "a"}, {"id": "t2", "title": "b"}]));
    let d = resolve(
        &req("what is open?", None),
        &[call("list_tasks", json!({}), two)],
    );
    assert_eq!(d.ui_directive, None);
    let calls = [
        call("create_task", json!({"title": "a"}), json!({"id": "t1"})),
        call("create_task", json!({"title": "b"}), json!({"id": "t2"})),
    ];
    assert_eq!(resolve(&req("add two", None), &calls).ui_directive, None);
    let calls = [call(
        "delete_task",
        json!({"task_id": "t1"}),
        json!({"ok": true}),
    )];
    assert_eq!(resolve(&req("delete it", None), &calls).ui_directive, None);
    let calls = [failed(
        "update_task",
        json!({"task_id": "t1", "status": "done"}),
    )];
    assert_eq!(
        resolve(&req("close t1", None), &calls),
        Directives::default()
    );
    assert_eq!(resolve(&req("hello", None), &[]), Directives::default());
}

#[test]
fn a_question_about_quantities_over_a_list_is_a_chart() {
    let list = tasks(json!([
        {"id": "t1", "status": "todo"},
        {"id": "t2", "status": "done"},
        {"id": "t3", "status": "todo"}
    ]));
    let d = resolve(
        &req("How many tasks do I have?", None),
        &[call("list_tasks", json!({}), list.clone())],
    );
    assert_eq!(
        d.ui_directive,
        Some(
            json!({"type": "chart", "chart": "bar", "title": "tasks by status", "series": [
                {"label": "todo", "value": 2}, {"label": "done", "value": 1}
            ]})
        )
    );
    // records without a status are counted by kind
    let d = resolve(
        &req("give me stats on my notes", None),
        &[call(
            "list_notes",
            json!({}),
            json!({"notes": [{"id": "n1"}, {"id": "n2"}]}),
        )],
    );
    assert_eq!(
        d.ui_directive,
        Some(
            json!({"type": "chart", "chart": "bar", "title": "notes", "series": [{"label": "note", "value": 2}]})
        )
    );
    // the same list without a question about numbers is no chart (and 3 tasks no card)
    let d = resolve(
        &req("what is open?", None),
        &[call("list_tasks", json!({}), list)],
    );
    assert_eq!(d.ui_directive, None);
    // a question about numbers with nothing listed is no chart either
    let d = resolve(&req("how many tasks?", None), &[]);
    assert_eq!(d.ui_directive, None);
}

#[test]
fn a_project_with_its_parts_is_a_diagram() {
    let calls = [
        call(
            "get_project",
            json!({"project_id": "p1"}),
            json!({"project": {"id": "p1", "name": "Apollo"}}),
        ),
        call(
            "list_checkpoints",
            json!({"project_id": "p1"}),
            json!({"checkpoints": [{"id": "k1", "title": "Beta"}]}),
        ),
        call(
            "list_tasks",
            json!({"project_id": "p1"}),
            tasks(json!([{"id": "t1", "title": "Ship"}])),
        ),
    ];
    let d = resolve(&req("show me Apollo", None), &calls);
    assert_eq!(
        d.ui_directive,
        Some(json!({"type": "diagram", "diagram": "project_structure",
            "nodes": [
                {"id": "p1", "kind": "project", "label": "Apollo"},
                {"id": "k1", "kind": "checkpoint", "label": "Beta"},
                {"id": "t1", "kind": "task", "label": "Ship"}
            ],
            "edges": [{"from": "p1", "to": "k1"}, {"from": "p1", "to": "t1"}]}))
    );
    // without get_project: two kinds of one project's parts
    let d = resolve(&req("structure of p1", None), &calls[1..]);
    assert_eq!(d.ui_directive.expect("diagram")["nodes"][0]["id"], "p1");
    // one kind of part is a list, not a structure (and one task is its card)
    let d = resolve(&req("tasks of p1", None), &calls[2..]);
    assert_eq!(d.ui_directive.expect("card")["type"], "task_card");
}

#[test]
fn navigation_when_the_answer_is_about_another_entity_than_the_scope() {
    let scope = Some(json!({"project_id": "p1"}));
    // a read of another project
    let calls = [call(
        "list_tasks",
        json!({"project_id": "p2"}),
        tasks(json!([])),
    )];
    let d = resolve(&req("tasks of Hermes?", scope.clone()), &calls);
    let nav = json!({"action": "navigate", "target": "project", "filter": {"project_id": "p2"}});
    assert_eq!(d.navigation, vec![nav.clone()]);
    assert_eq!(
        d.context(),
        json!({"scope_changed": true, "new_scope": {"project_id": "p2"}})
    );
    // a write elsewhere (what the v2 socket already did)
    let calls = [call(
        "create_task",
        json!({"title": "Ship", "project_id": "p2"}),
        json!({"id": "t9"}),
    )];
    assert_eq!(
        resolve(&req("add", scope.clone()), &calls).navigation,
        vec![nav.clone()]
    );
    // a single record read whose project is another one
    let calls = [call(
        "get_note",
        json!({"note_id": "n1"}),
        json!({"note": {"id": "n1", "project_id": "p2"}}),
    )];
    assert_eq!(
        resolve(&req("note n1?", scope.clone()), &calls).navigation,
        vec![nav.clone()]
    );
    // a task scope and another task
    let calls = [call(
        "update_task",
        json!({"task_id": "t2", "status": "done"}),
        json!({"ok": true}),
    )];
    let d = resolve(&req("close t2", Some(json!({"task_id": "t1"}))), &calls);
    assert_eq!(
        d.navigation,
        vec![json!({"action": "navigate", "target": "task", "filter": {"task_id": "t2"}})]
    );
    // each entity once
    let calls = [
        call("list_tasks", json!({"project_id": "p2"}), tasks(json!([]))),
        call(
            "list_notes",
            json!({"project_id": "p2"}),
            json!({"notes": []}),
        ),
    ];
    assert_eq!(
        resolve(&req("p2?", scope.clone()), &calls).navigation,
        vec![nav]
    );
}

#[test]
fn no_navigation_inside_the_scope_without_a_scope_or_after_a_failure() {
    let scope = Some(json!({"project_id": "p1"}));
    let calls = [call(
        "list_tasks",
        json!({"project_id": "p1"}),
        tasks(json!([{"id": "t1", "project_id": "p1"}, {"id": "t2", "project_id": "p1"}])),
    )];
    let d = resolve(&req("tasks here?", scope.clone()), &calls);
    assert!(d.navigation.is_empty());
    assert_eq!(
        d.context(),
        json!({"scope_changed": false, "new_scope": null})
    );
    let other = [call(
        "list_tasks",
        json!({"project_id": "p2"}),
        tasks(json!([])),
    )];
    assert!(resolve(&req("p2?", None), &other).navigation.is_empty());
    let failed = [failed("list_tasks", json!({"project_id": "p2"}))];
    assert!(
        resolve(&req("p2?", scope.clone()), &failed)
            .navigation
            .is_empty()
    );
    // a list of many projects is not "about" each of them
    let all = [call(
        "list_all_projects",
        json!({}),
        json!({"projects": [{"id": "p1"}, {"id": "p2"}]}),
    )];
    assert!(
        resolve(&req("projects?", scope), &all)
            .navigation
            .is_empty()
    );
}

#[test]
fn cleaning_reaches_every_value() {
    let d = Directives {
        ui_directive: Some(json!({"type": "task_card", "task": {"title": "secret"}})),
        navigation: vec![json!({"filter": {"project_id": "secret"}})],
    };
    let cleaned = d.map_values(|v| {
        serde_json::from_str(&v.to_string().replace("secret", "clean")).expect("json")
    });
    assert!(!format!("{cleaned:?}").contains("secret"));
}

#[test]
fn quantity_words_match_whole_words_only() {
    assert!(asks_for_quantities("How many tasks are done?"));
    assert!(asks_for_quantities("statistics, please"));
    assert!(asks_for_quantities("what's the number of notes"));
    assert!(!asks_for_quantities("which account is it on?"));
    assert!(!asks_for_quantities("what states can a task have?"));
    assert!(!asks_for_quantities("the manyfold number"));
}
