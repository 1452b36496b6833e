//! Plan step 24: what an answer carries besides its text — a UI directive
//! (`render_ui_directive`) and navigation across entities (`cross_entity_resolve`).
//!
//! Both are decided from the turn's **successful tool calls** (what the agents actually
//! read and wrote) and the user's message, never from the model's prose: the model can
//! be wrong about what it did, the tool calls cannot. [`resolve`] is called once, where
//! the orchestrator assembles the final reply, for REST and WebSocket alike.
//!
//! `ui_directive` — at most one, the first rule that applies:
//! 1. `chart`: the message asks for quantities ([`QUANTITY_WORDS`]: "how many", "count",
//!    "statistics", …) and a read listed records. The records of the first such list are
//!    counted by `status` (by `kind` when they have none):
//!    `{"type": "chart", "chart": "bar", "title": "tasks by status", "series": [{"label", "value"}]}`.
//! 2. `diagram`: the turn looked at one project's structure — `get_project` of it, or
//!    reads of two or more kinds of its parts (tasks, checkpoints, notes) filtered by it:
//!    `{"type": "diagram", "diagram": "project_structure", "nodes": [{"id", "kind", "label"}], "edges": [{"from", "to"}]}`
//!    with the project and every part the turn read of it.
//! 3. `task_card`: the answer is about exactly one task — the one task the turn wrote
//!    (created or updated), or, with no task written, the one task its reads returned:
//!    `{"type": "task_card", "task": {…the task's fields}}`. A deleted task gets no card.
//!
//! Otherwise `null`.
//!
//! `navigation` — one `{"action": "navigate", "target": kind, "filter": {"<kind>_id": id}}`
//! per entity the answer is about that differs from the popup's scope of the same kind
//! (the scope is `{"project_id": …}`, `{"task_id": …}`, `{"note_id": …}` or
//! `{"checkpoint_id": …}`). An answer is about the entities its successful calls name in
//! their arguments (`list_tasks {project_id}`, `update_task {task_id}`, a write's
//! `project_id`) and the single records its reads returned (`get_note` → the note and
//! its `project_id`). Reads and writes alike, in call order, each entity once.
//! `context.new_scope` is the first directive's filter, `scope_changed` whether there is
//! one. No scope, no navigation.

use serde_json::{Map, Value, json};

use super::ChatRequest;
use super::tool_loop::ExecutedCall;

/// Words and phrases (lowercase, matched as whole words) that make a message ask for
/// counts or statistics.
pub const QUANTITY_WORDS: &[&str] = &[
    "how many",
    "how much",
    "count",
    "counts",
    "number of",
    "statistics",
    "stats",
    "breakdown",
    "distribution",
    "percentage",
    "percent",
    "chart",
    "graph",
];

/// The entity kinds a scope and a navigation directive can name: (kind, id key, list
/// key in results).
const ENTITIES: &[(&str, &str, &str)] = &[
    ("project", "project_id", "projects"),
    ("task", "task_id", "tasks"),
    ("note", "note_id", "notes"),
    ("checkpoint", "checkpoint_id", "checkpoints"),
];

/// The parts of a project a diagram shows.
const PROJECT_PARTS: &[&str] = &["task", "checkpoint", "note"];

/// The directives of one answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Directives {
    /// `task_card`, `chart` or `diagram`; `None` when no rule applies.
    pub ui_directive: Option<Value>,
    /// Navigation directives (`{action, target, filter}`), in call order.
    pub navigation: Vec<Value>,
}

impl Directives {
    /// The filter of the first navigation directive: the scope the client moves to.
    pub fn new_scope(&self) -> Option<Value> {
        self.navigation
            .first()
            .and_then(|n| n.get("filter").cloned())
    }

    /// The v2 `context`: `{"scope_changed", "new_scope"}`.
    pub fn context(&self) -> Value {
        json!({"scope_changed": !self.navigation.is_empty(), "new_scope": self.new_scope()})
    }

    /// Every value passed through `clean` (directives carry tool arguments, which the
    /// model wrote).
    pub fn map_values(self, clean: impl Fn(&Value) -> Value) -> Self {
        Self {
            ui_directive: self.ui_directive.as_ref().map(&clean),
            navigation: self.navigation.iter().map(&clean).collect(),
        }
    }
}

/// Both directives for an answer to `req` whose agents made `calls`.
pub fn resolve(req: &ChatRequest, calls: &[ExecutedCall]) -> Directives {
    let ok: Vec<Call<'_>> = calls
        .iter()
        .filter_map(|c| {
            Some(Call {
                name: &c.name,
                args: c.arguments.as_object()?,
                result: c.result.as_ref().ok()?,
            })
        })
        .collect();
    Directives {
        ui_directive: render_ui_directive(&req.message, &ok),
        navigation: cross_entity_resolve(req.scope.as_ref(), &ok),
    }
}

/// A successful call.
struct Call<'a> {
    name: &'a str,
    args: &'a Map<String, Value>,
    result: &'a Value,
}

/// The entity kind a tool is about, from its name (`list_tasks` → task). Comments are
/// not an entity of their own here.
fn tool_kind(name: &str) -> Option<&'static str> {
    if name.contains("comment") {
        return None;
    }
    ["checkpoint", "project", "note", "task"]
        .into_iter()
        .find(|k| name.contains(k))
}

fn is_write(name: &str) -> bool {
    ["create_", "update_", "delete_", "add_"]
        .iter()
        .any(|p| name.starts_with(p))
}

fn id_of(record: &Value) -> Option<&str> {
    record.get("id").and_then(Value::as_str)
}

/// The records a read returned, with their kind: a list under its key
/// (`{"tasks": […]}`), one record under its kind (`{"project": {…}}`), a bare array or a
/// bare record (a device may answer either) of the tool's kind.
fn records<'a>(call: &Call<'a>) -> Vec<(&'static str, &'a Value)> {
    let own = tool_kind(call.name);
    match call.result {
        Value::Array(items) => own
            .map(|k| {
                items
                    .iter()
                    .filter(|r| r.is_object())
                    .map(|r| (k, r))
                    .collect()
            })
            .unwrap_or_default(),
        Value::Object(o) => {
            for (kind, _, list) in ENTITIES {
                if let Some(items) = o.get(*list).and_then(Value::as_array) {
                    return items
                        .iter()
                        .filter(|r| r.is_object())
                        .map(|r| (*kind, r))
                        .collect();
                }
                if let Some(one) = o.get(*kind).filter(|r| r.is_object()) {
                    return vec![(*kind, one)];
                }
            }
            match own {
                Some(k) if o.contains_key("id") && !is_write(call.name) => vec![(k, call.result)],
                _ => Vec::new(),
            }
        }
        _ => Vec::new(),
    }
}

/// Whether the call listed records (as opposed to reading one by id).
fn is_list(call: &Call<'_>) -> bool {
    call.name.starts_with("list_")
}

// ---------------------------------------------------------------------------------
// render_ui_directive

fn render_ui_directive(message: &str, calls: &[Call<'_>]) -> Option<Value> {
    chart(message, calls)
        .or_else(|| diagram(calls))
        .or_else(|| task_card(calls))
}

fn asks_for_quantities(message: &str) -> bool {
    // Whole words: "count" is not in "account", nor "stats" in "states".
    let words: Vec<String> = message
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let padded = format!(" {} ", words.join(" "));
    QUANTITY_WORDS
        .iter()
        .any(|w| padded.contains(&format!(" {w} ")))
}

fn chart(message: &str, calls: &[Call<'_>]) -> Option<Value> {
    if !asks_for_quantities(message) {
        return None;
    }
    let listed = calls
        .iter()
        .filter(|c| is_list(c))
        .map(records)
        .find(|r| !r.is_empty())?;
    let kind = listed[0].0;
    let by_status = listed.iter().all(|(_, r)| r.get("status").is_some());
    let mut series: Vec<(String, u64)> = Vec::new();
    for (k, r) in &listed {
        let label = if by_status {
            match r.get("status") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => continue,
            }
        } else {
            (*k).to_owned()
        };
        match series.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += 1,
            None => series.push((label, 1)),
        }
    }
    let title = if by_status {
        format!("{kind}s by status")
    } else {
        format!("{kind}s")
    };
    Some(json!({
        "type": "chart",
        "chart": "bar",
        "title": title,
        "series": series
            .into_iter()
            .map(|(label, value)| json!({"label": label, "value": value}))
            .collect::<Vec<_>>(),
    }))
}

fn label_of(kind: &str, record: &Value) -> String {
    let field = if kind == "project" { "name" } else { "title" };
    record
        .get(field)
        .or_else(|| record.get("title"))
        .or_else(|| record.get("name"))
        .and_then(Value::as_str)
        .or_else(|| id_of(record))
        .unwrap_or(kind)
        .to_owned()
}

fn diagram(calls: &[Call<'_>]) -> Option<Value> {
    // The project read by id, else the one project whose parts of 2+ kinds were read.
    let fetched = calls.iter().find_map(|c| {
        (c.name == "get_project")
            .then(|| records(c))
            .and_then(|r| r.into_iter().find(|(k, _)| *k == "project"))
            .and_then(|(_, p)| Some((id_of(p)?.to_owned(), Some(p))))
    });
    let part_reads = |project: &str| -> Vec<(&'static str, &Value)> {
        calls
            .iter()
            .filter(|c| is_list(c))
            .filter(|c| c.args.get("project_id").and_then(Value::as_str) == Some(project))
            .flat_map(records)
            .filter(|(k, _)| PROJECT_PARTS.contains(k))
            .collect()
    };
    let (project, record) = match fetched {
        Some(p) => p,
        None => {
            let mut candidates: Vec<&str> = calls
                .iter()
                .filter(|c| is_list(c))
                .filter_map(|c| c.args.get("project_id").and_then(Value::as_str))
                .collect();
            candidates.dedup();
            let p = candidates.into_iter().find(|p| {
                let parts = part_reads(p);
                let mut kinds: Vec<&str> = parts.iter().map(|(k, _)| *k).collect();
                kinds.sort_unstable();
                kinds.dedup();
                kinds.len() >= 2
            })?;
            (p.to_owned(), None)
        }
    };
    let label = record.map_or_else(|| project.clone(), |r| label_of("project", r));
    let mut nodes = vec![json!({"id": project, "kind": "project", "label": label})];
    let mut edges = Vec::new();
    for (kind, r) in part_reads(&project) {
        let Some(id) = id_of(r) else { continue };
        if nodes.iter().any(|n| n["id"] == id && n["kind"] == kind) {
            continue;
        }
        nodes.push(json!({"id": id, "kind": kind, "label": label_of(kind, r)}));
        edges.push(json!({"from": project, "to": id}));
    }
    Some(json!({"type": "diagram", "diagram": "project_structure", "nodes": nodes, "edges": edges}))
}

fn task_card(calls: &[Call<'_>]) -> Option<Value> {
    // (id if known, fields) of every task the turn wrote; a delete rules out a card.
    let mut written: Vec<(Option<String>, Map<String, Value>)> = Vec::new();
    for c in calls.iter().filter(|c| tool_kind(c.name) == Some("task")) {
        match c.name {
            "delete_task" => return None,
            "create_task" => {
                let mut fields = c.args.clone();
                let id = id_of(c.result).map(str::to_owned);
                if let Some(id) = &id {
                    fields.insert("id".into(), id.clone().into());
                }
                written.push((id, fields));
            }
            "update_task" => {
                let id = c
                    .args
                    .get("task_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let mut fields = c.args.clone();
                if let Some(id) = fields.remove("task_id") {
                    fields.insert("id".into(), id);
                }
                match written.iter_mut().find(|(w, _)| w.is_some() && *w == id) {
                    Some((_, f)) => f.extend(fields),
                    None => written.push((id, fields)),
                }
            }
            _ => {}
        }
    }
    let read: Vec<&Value> = calls
        .iter()
        .filter(|c| !is_write(c.name))
        .flat_map(records)
        .filter(|(k, _)| *k == "task")
        .map(|(_, r)| r)
        .collect();
    let task = match written.as_slice() {
        [(id, fields)] => {
            // What a read said about the task, updated by the write.
            let mut task = id
                .as_deref()
                .and_then(|id| read.iter().find(|r| id_of(r) == Some(id)))
                .and_then(|r| r.as_object().cloned())
                .unwrap_or_default();
            task.extend(fields.clone());
            Value::Object(task)
        }
        [] => {
            let mut ids: Vec<Option<&str>> = read.iter().map(|r| id_of(r)).collect();
            ids.dedup();
            match (ids.as_slice(), read.first()) {
                ([_], Some(r)) => (*r).clone(),
                _ => return None,
            }
        }
        _ => return None,
    };
    Some(json!({"type": "task_card", "task": task}))
}

// ---------------------------------------------------------------------------------
// cross_entity_resolve

/// The entities `call` is about: the ids its arguments name, and the single record it
/// returned with that record's project.
fn subjects(call: &Call<'_>) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (kind, key, _) in ENTITIES {
        if let Some(id) = call.args.get(*key).and_then(Value::as_str) {
            out.push((*kind, id.to_owned()));
        }
    }
    if !is_list(call)
        && let [(kind, record)] = records(call).as_slice()
    {
        if let Some(id) = id_of(record) {
            out.push((kind, id.to_owned()));
        }
        if *kind != "project"
            && let Some(p) = record.get("project_id").and_then(Value::as_str)
        {
            out.push(("project", p.to_owned()));
        }
    }
    out
}

fn cross_entity_resolve(scope: Option<&Value>, calls: &[Call<'_>]) -> Vec<Value> {
    let Some(scope) = scope.and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut out: Vec<Value> = Vec::new();
    for (kind, id) in calls.iter().flat_map(subjects) {
        let key = format!("{kind}_id");
        let Some(scoped) = scope.get(&key).and_then(Value::as_str) else {
            continue;
        };
        if scoped == id {
            continue;
        }
        let directive = json!({"action": "navigate", "target": kind, "filter": {key: id}});
        if !out.contains(&directive) {
            out.push(directive);
        }
    }
    out
}

#[cfg(test)]
mod tests;
