//! [`RestExecutor`]: runs tool calls for `POST /chat`, where there is no socket to the
//! device. Write tools become [`PlanAction`]s the client applies after the reply; read
//! tools answer from the request's [`ChatContext`].
//!
//! Limits, said to the model in the results: `recent_tasks` is what the device chose to
//! send, so task lists may be incomplete; records written earlier in the same request are
//! not visible to reads (they are only queued); "today" is the UTC day of `now_ms`.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::{AgentRegistry, ToolEffect, ToolSpec};
use crate::chat::{ChatContext, PlanAction, ToolExecutor};

const DAY_MS: i64 = 86_400_000;

const NOT_SENT: &str = "The device holds this data and did not send it with this request, so it cannot be listed now; say so to the user rather than assuming there is none.";
const RECENT_ONLY: &str =
    "Only the user's recent tasks were sent with this request; the list may be incomplete.";

/// A [`ToolExecutor`] for the REST chat endpoint. One per request.
pub struct RestExecutor {
    tools: HashMap<&'static str, ToolSpec>,
    context: ChatContext,
    now_ms: i64,
    actions: Mutex<Vec<PlanAction>>,
}

impl std::fmt::Debug for RestExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The context is user data: not printed.
        f.debug_struct("RestExecutor")
            .field("tools", &self.tools.len())
            .field("now_ms", &self.now_ms)
            .finish_non_exhaustive()
    }
}

impl RestExecutor {
    /// An executor for the tools of `registry`, answering reads from `context` (the
    /// request's), with "today" taken as the UTC day of `now_ms`.
    pub fn new(registry: &AgentRegistry, context: ChatContext, now_ms: i64) -> Self {
        let tools = registry
            .agents
            .values()
            .flat_map(|a| a.tools().iter().cloned())
            .map(|t| (t.name, t))
            .collect();
        Self {
            tools,
            context,
            now_ms,
            actions: Mutex::new(Vec::new()),
        }
    }

    /// The actions queued by write tools so far, in call order; leaves none behind.
    pub fn take_actions(&self) -> Vec<PlanAction> {
        self.actions
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .unwrap_or_default()
    }

    fn queue(
        &self,
        spec: &ToolSpec,
        action: &str,
        table: &str,
        arguments: &Value,
    ) -> Result<Value, String> {
        let mut data = arguments.as_object().cloned().unwrap_or_default();
        if action == "update_record" {
            // `-1` on an integer field means "unchanged" (plan sentinel): a generic
            // `update_record` on the client would otherwise write -1 into the record.
            let props = spec.parameters.get("properties");
            data.retain(|k, v| {
                let integer = props
                    .and_then(|p| p.get(k))
                    .and_then(|p| p.get("type"))
                    .and_then(Value::as_str)
                    == Some("integer");
                !(integer && v.as_i64() == Some(-1))
            });
        }
        if let Some(param) = spec.record_id_param()
            && let Some(id) = data.get(param).cloned()
        {
            data.insert("id".into(), id);
        }
        let mut actions = self
            .actions
            .lock()
            .map_err(|_| "the action queue is unavailable".to_owned())?;
        actions.push(PlanAction {
            kind: action.to_owned(),
            table: Some(table.to_owned()),
            data: Some(Value::Object(data)),
            agent: None,
        });
        Ok(json!({"ok": true, "queued": true}))
    }

    fn read(&self, name: &str, args: &Map<String, Value>) -> Result<Value, String> {
        match name {
            "list_tasks" => {
                let mut tasks: Vec<&Value> = self
                    .context
                    .recent_tasks
                    .iter()
                    .filter(|t| field_matches(t, "project_id", args.get("project_id")))
                    .filter(|t| field_matches(t, "status", args.get("status")))
                    .filter(|t| match args.get("search").and_then(Value::as_str) {
                        None => true,
                        Some(q) => contains_text(t, q),
                    })
                    .collect();
                if let Some(order) = args.get("order_by").and_then(Value::as_str) {
                    tasks.sort_by(|a, b| order_tasks(order, a, b));
                }
                Ok(listing("tasks", tasks, Some(RECENT_ONLY)))
            }
            "list_tasks_due_today" => {
                let start = self.now_ms.div_euclid(DAY_MS) * DAY_MS;
                let tasks = self
                    .context
                    .recent_tasks
                    .iter()
                    .filter(|t| {
                        int_field(t, "due_date").is_some_and(|d| d >= start && d < start + DAY_MS)
                    })
                    .collect();
                Ok(listing("tasks", tasks, Some(RECENT_ONLY)))
            }
            "list_task_comments" => {
                self.list_extra("task_comments", &[("task_id", args.get("task_id"))], |_| {
                    true
                })
            }
            "list_checkpoints" => self.list_extra(
                "checkpoints",
                &[("project_id", args.get("project_id"))],
                |_| true,
            ),
            "list_projects" => {
                let archived = args.get("include_archived") == Some(&Value::Bool(true));
                self.list_extra("projects", &[("client_id", args.get("client_id"))], |p| {
                    archived || p.get("status").and_then(Value::as_str) != Some("archived")
                })
            }
            "list_all_projects" => self.list_extra("projects", &[], |_| true),
            "get_project" => self.get_extra("projects", "project", args.get("project_id")),
            "list_notes" => {
                self.list_extra("notes", &[("project_id", args.get("project_id"))], |_| true)
            }
            "get_note" => self.get_extra("notes", "note", args.get("note_id")),
            _ => Err(format!(
                "`{name}` can only run on the device, which is not connected for this request"
            )),
        }
    }

    fn extra(&self, key: &str) -> Option<&Vec<Value>> {
        self.context.extra.get(key).and_then(Value::as_array)
    }

    fn list_extra(
        &self,
        key: &str,
        filters: &[(&str, Option<&Value>)],
        keep: impl Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        let Some(records) = self.extra(key) else {
            return Ok(listing(key, Vec::new(), Some(NOT_SENT)));
        };
        let found = records
            .iter()
            .filter(|r| filters.iter().all(|(f, want)| field_matches(r, f, *want)))
            .filter(|r| keep(r))
            .collect();
        Ok(listing(key, found, None))
    }

    fn get_extra(&self, key: &str, what: &str, id: Option<&Value>) -> Result<Value, String> {
        let Some(records) = self.extra(key) else {
            return Err(format!(
                "the device did not send its {key} with this request, so this {what} cannot be read now"
            ));
        };
        records
            .iter()
            .find(|r| id.is_some() && r.get("id") == id)
            .map(|r| json!({ what: r }))
            .ok_or_else(|| format!("no {what} with this id in the data the device sent"))
    }
}

fn listing(key: &str, records: Vec<&Value>, note: Option<&str>) -> Value {
    let mut out = json!({ key: records, "count": records.len() });
    if let (Some(note), Some(obj)) = (note, out.as_object_mut()) {
        obj.insert("note".into(), note.into());
    }
    out
}

/// True when no filter is given or the record's field equals it.
fn field_matches(record: &Value, field: &str, want: Option<&Value>) -> bool {
    want.is_none_or(|w| record.get(field) == Some(w))
}

fn contains_text(task: &Value, query: &str) -> bool {
    let q = query.to_lowercase();
    ["title", "description"].iter().any(|f| {
        task.get(*f)
            .and_then(Value::as_str)
            .is_some_and(|s| s.to_lowercase().contains(&q))
    })
}

fn int_field(record: &Value, field: &str) -> Option<i64> {
    let v = record.get(field)?;
    // The cast is exact for any ms timestamp.
    v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))
}

/// The orders `list_tasks` documents: due date and title ascending, priority high first,
/// creation and update newest first; records missing the field go last.
fn order_tasks(order: &str, a: &Value, b: &Value) -> Ordering {
    fn last_if_missing<T: Ord>(a: Option<T>, b: Option<T>) -> Ordering {
        match (a, b) {
            (Some(a), Some(b)) => a.cmp(&b),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        }
    }
    match order {
        "due_date" => last_if_missing(int_field(a, "due_date"), int_field(b, "due_date")),
        "created_at" | "updated_at" => last_if_missing(
            int_field(a, order).map(std::cmp::Reverse),
            int_field(b, order).map(std::cmp::Reverse),
        ),
        "priority" => {
            let rank = |t: &Value| {
                t.get("priority")
                    .and_then(Value::as_str)
                    .and_then(|p| ["high", "medium", "low"].iter().position(|x| *x == p))
            };
            last_if_missing(rank(a), rank(b))
        }
        "title" => {
            let title = |t: &Value| {
                t.get("title")
                    .and_then(Value::as_str)
                    .map(str::to_lowercase)
            };
            last_if_missing(title(a), title(b))
        }
        _ => Ordering::Equal,
    }
}

#[async_trait]
impl ToolExecutor for RestExecutor {
    async fn execute(
        &self,
        _call_id: &str,
        name: &str,
        arguments: &Value,
    ) -> Result<Value, String> {
        let Some(spec) = self.tools.get(name) else {
            return Err(format!("unknown tool `{name}`"));
        };
        // The loop validates already; validating again keeps this executor safe to use
        // on its own (e.g. from a plan step).
        let args = spec.validate(arguments)?;
        match spec.effect {
            ToolEffect::Write { action, table } => {
                self.queue(spec, action, table, &Value::Object(args))
            }
            ToolEffect::Read => self.read(name, &args),
        }
    }
}
