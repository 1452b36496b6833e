//! The 23 client-executed tools (plan step 6): their JSON Schemas, what each does to the
//! device's data, and a validator for the subset of JSON Schema they use.
//!
//! The schemas follow the desktop app's data model: `status` is `todo|in_progress|done`,
//! `priority` is `high|medium|low`, `assignees` is a JSON-encoded string, dates are
//! integer millisecond timestamps, flags are integers `0|1`, and on updates an optional
//! integer field set to `-1` means "leave unchanged" (the plan's sentinel, which the
//! device's tool implementations already understand).
//!
//! Longer than the ~600-line rule on purpose: it is the table of the 23 tools' schemas,
//! which the device's implementations must match field for field; one table in one place
//! is easier to check against the app than pieces spread over files.

use serde_json::{Map, Value, json};

use crate::ports::llm::ToolDefinition;

/// What running a tool does to the device's data. Decides how the REST path answers it:
/// reads are answered from the request's context, writes become `PlanAction`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolEffect {
    /// Only reads.
    Read,
    /// Changes one record.
    Write {
        /// `create_record`, `update_record` or `delete_record`.
        action: &'static str,
        /// `tasks`, `task_comments`, `checkpoints`, `projects` or `notes`.
        table: &'static str,
    },
}

/// One tool an agent offers the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// Name the model calls it by (unique across all agents: the device runs tools by name).
    pub name: &'static str,
    /// What it does, for the model.
    pub description: &'static str,
    /// JSON Schema of the arguments: `type: object`, `properties`, `required`,
    /// `additionalProperties: false`; properties are `string`, `integer`, `boolean` or
    /// `number`, optionally with an `enum`.
    pub parameters: Value,
    /// What it does to the data.
    pub effect: ToolEffect,
}

impl ToolSpec {
    /// The definition given to the model.
    pub fn definition(&self) -> ToolDefinition {
        ToolDefinition {
            name: self.name.to_owned(),
            description: self.description.to_owned(),
            parameters: self.parameters.clone(),
        }
    }

    /// For updates and deletes: the argument holding the id of the record changed (the
    /// first required parameter, e.g. `task_id`, `comment_id`).
    pub fn record_id_param(&self) -> Option<&str> {
        match self.effect {
            ToolEffect::Write { action, .. } if action != "create_record" => {
                self.parameters.get("required")?.get(0)?.as_str()
            }
            _ => None,
        }
    }

    /// Checks `arguments` against [`Self::parameters`] and returns them normalised, or a
    /// message for the model listing every problem.
    ///
    /// Normalisation: a `null` for an optional field counts as absent (smaller models send
    /// `null` for "not given"), and an integer written as `5.0` becomes `5`.
    pub fn validate(&self, arguments: &Value) -> Result<Map<String, Value>, String> {
        validate_object(&self.parameters, arguments)
            .map_err(|problems| format!("invalid arguments for `{}`: {problems}", self.name))
    }
}

/// Validates `value` against an object schema of the subset described on
/// [`ToolSpec::parameters`].
pub(crate) fn validate_object(schema: &Value, value: &Value) -> Result<Map<String, Value>, String> {
    let Some(given) = value.as_object() else {
        return Err("the arguments must be a JSON object".into());
    };
    let empty = Map::new();
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));

    let mut problems = Vec::new();
    let mut out = Map::new();
    for (key, v) in given {
        let Some(prop) = props.get(key) else {
            if closed {
                let mut allowed: Vec<&str> = props.keys().map(String::as_str).collect();
                allowed.sort_unstable();
                problems.push(if allowed.is_empty() {
                    format!("unknown field `{key}` (this tool takes no arguments)")
                } else {
                    format!("unknown field `{key}` (allowed: {})", allowed.join(", "))
                });
            } else {
                out.insert(key.clone(), v.clone());
            }
            continue;
        };
        if v.is_null() && !required.contains(&key.as_str()) {
            continue;
        }
        match check_value(prop, v) {
            Ok(v) => {
                out.insert(key.clone(), v);
            }
            Err(why) => problems.push(format!("`{key}` {why}")),
        }
    }
    for key in &required {
        if given.get(*key).is_none_or(Value::is_null) {
            problems.push(format!("missing required field `{key}`"));
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems.join("; "))
    }
}

/// Checks one property value: its `type`, then its `enum`.
fn check_value(prop: &Value, v: &Value) -> Result<Value, String> {
    let ty = prop.get("type").and_then(Value::as_str).unwrap_or("");
    let v = match ty {
        "string" if v.is_string() => v.clone(),
        "boolean" if v.is_boolean() => v.clone(),
        "number" if v.is_number() => v.clone(),
        "integer" => match as_integer(v) {
            Some(i) => Value::from(i),
            None => return Err(format!("must be an integer, got {}", describe(v))),
        },
        "" => v.clone(),
        other => return Err(format!("must be a {other}, got {}", describe(v))),
    };
    if let Some(allowed) = prop.get("enum").and_then(Value::as_array)
        && !allowed.contains(&v)
    {
        let list: Vec<String> = allowed
            .iter()
            .map(|a| match a {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        return Err(format!("must be one of {}, got {v}", list.join(", ")));
    }
    Ok(v)
}

/// An integer, accepting `5.0` (some providers serialise every number as a float).
fn as_integer(v: &Value) -> Option<i64> {
    if let Some(i) = v.as_i64() {
        return Some(i);
    }
    let f = v.as_f64()?;
    // The bounds keep the cast exact; ms timestamps are far inside them.
    (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ---- schema building blocks ------------------------------------------------------------

fn object(props: Vec<(&str, Value)>, required: &[&str]) -> Value {
    let properties: Map<String, Value> = props.into_iter().map(|(k, v)| (k.into(), v)).collect();
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

fn integer(description: &str) -> Value {
    json!({"type": "integer", "description": description})
}

fn boolean(description: &str) -> Value {
    json!({"type": "boolean", "description": description})
}

fn one_of_strings(values: &[&str], description: &str) -> Value {
    json!({"type": "string", "enum": values, "description": description})
}

fn one_of_integers(values: &[i64], description: &str) -> Value {
    json!({"type": "integer", "enum": values, "description": description})
}

fn write(action: &'static str, table: &'static str) -> ToolEffect {
    ToolEffect::Write { action, table }
}

/// Task statuses.
pub const TASK_STATUSES: [&str; 3] = ["todo", "in_progress", "done"];
/// Task priorities.
pub const TASK_PRIORITIES: [&str; 3] = ["high", "medium", "low"];
/// Project statuses.
pub const PROJECT_STATUSES: [&str; 2] = ["active", "archived"];
/// Orders `list_tasks` accepts.
pub const TASK_ORDERS: [&str; 5] = ["due_date", "priority", "created_at", "updated_at", "title"];

const UNCHANGED: &str = "Omit it or pass -1 to leave it unchanged.";

/// The fields `create_task` and `update_task` share; `update` adds the `-1` sentinel.
fn task_fields(update: bool) -> Vec<(&'static str, Value)> {
    let flag_values: &[i64] = if update { &[-1, 0, 1] } else { &[0, 1] };
    let sentinel = |d: &str| {
        if update {
            format!("{d} {UNCHANGED}")
        } else {
            d.to_owned()
        }
    };
    vec![
        ("title", string("Short title of the task.")),
        (
            "description",
            string("Longer description (plain text or Markdown)."),
        ),
        (
            "status",
            one_of_strings(
                &TASK_STATUSES,
                "Workflow status. New tasks default to todo.",
            ),
        ),
        (
            "priority",
            one_of_strings(&TASK_PRIORITIES, "Priority. New tasks default to medium."),
        ),
        (
            "assignees",
            string(
                "People assigned, as a JSON-encoded array of names inside a string, e.g. \"[\\\"Alice\\\",\\\"Bob\\\"]\".",
            ),
        ),
        (
            "due_date",
            integer(&sentinel(
                "Due date as a Unix timestamp in milliseconds (UTC).",
            )),
        ),
        (
            "project_id",
            string("Id of the project the task belongs to."),
        ),
        (
            "is_ai_suggested",
            one_of_integers(
                flag_values,
                &sentinel(
                    "1 if you are proposing this task on your own initiative, 0 if the user asked for it.",
                ),
            ),
        ),
        (
            "is_approved",
            one_of_integers(
                flag_values,
                &sentinel(
                    "1 once the user has approved the task, 0 while a suggestion awaits approval.",
                ),
            ),
        ),
    ]
}

fn checkpoint_fields(update: bool) -> Vec<(&'static str, Value)> {
    let flag_values: &[i64] = if update { &[-1, 0, 1] } else { &[0, 1] };
    let sentinel = |d: &str| {
        if update {
            format!("{d} {UNCHANGED}")
        } else {
            d.to_owned()
        }
    };
    vec![
        (
            "project_id",
            string("Id of the project the checkpoint belongs to."),
        ),
        ("title", string("Title of the checkpoint (milestone).")),
        (
            "date",
            integer(&sentinel(
                "Date of the checkpoint as a Unix timestamp in milliseconds (UTC).",
            )),
        ),
        (
            "is_ai_suggested",
            one_of_integers(
                flag_values,
                &sentinel(
                    "1 if you are proposing this checkpoint on your own initiative, 0 if the user asked for it.",
                ),
            ),
        ),
        (
            "is_approved",
            one_of_integers(
                flag_values,
                &sentinel(
                    "1 once the user has approved the checkpoint, 0 while a suggestion awaits approval.",
                ),
            ),
        ),
    ]
}

fn with_id(
    id: (&'static str, Value),
    rest: Vec<(&'static str, Value)>,
) -> Vec<(&'static str, Value)> {
    let mut all = vec![id];
    all.extend(rest);
    all
}

/// `task_agent`'s 8 tools.
pub fn task_tools() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "list_tasks",
            description: "Lists the user's tasks, optionally filtered by project, status or a search text, and ordered.",
            parameters: object(
                vec![
                    ("project_id", string("Only tasks of this project.")),
                    (
                        "status",
                        one_of_strings(&TASK_STATUSES, "Only tasks with this status."),
                    ),
                    (
                        "search",
                        string(
                            "Only tasks whose title or description contains this text (case-insensitive).",
                        ),
                    ),
                    (
                        "order_by",
                        one_of_strings(
                            &TASK_ORDERS,
                            "Sort order: due_date (soonest first), priority (high first), created_at or updated_at (newest first), title (A-Z).",
                        ),
                    ),
                ],
                &[],
            ),
            effect: ToolEffect::Read,
        },
        ToolSpec {
            name: "create_task",
            description: "Creates a task.",
            parameters: object(task_fields(false), &["title"]),
            effect: write("create_record", "tasks"),
        },
        ToolSpec {
            name: "update_task",
            description: "Updates a task: only the fields given change.",
            parameters: object(
                with_id(
                    ("task_id", string("Id of the task to update.")),
                    task_fields(true),
                ),
                &["task_id"],
            ),
            effect: write("update_record", "tasks"),
        },
        ToolSpec {
            name: "delete_task",
            description: "Deletes a task and its comments.",
            parameters: object(
                vec![("task_id", string("Id of the task to delete."))],
                &["task_id"],
            ),
            effect: write("delete_record", "tasks"),
        },
        ToolSpec {
            name: "list_tasks_due_today",
            description: "Lists the tasks due today.",
            parameters: object(vec![], &[]),
            effect: ToolEffect::Read,
        },
        ToolSpec {
            name: "list_task_comments",
            description: "Lists the comments on a task, oldest first.",
            parameters: object(vec![("task_id", string("Id of the task."))], &["task_id"]),
            effect: ToolEffect::Read,
        },
        ToolSpec {
            name: "add_task_comment",
            description: "Adds a comment to a task.",
            parameters: object(
                vec![
                    ("task_id", string("Id of the task.")),
                    (
                        "author",
                        string("Who wrote the comment; use \"AI\" for your own comments."),
                    ),
                    ("content", string("Text of the comment.")),
                ],
                &["task_id", "content"],
            ),
            effect: write("create_record", "task_comments"),
        },
        ToolSpec {
            name: "delete_task_comment",
            description: "Deletes a comment from a task.",
            parameters: object(
                vec![("comment_id", string("Id of the comment to delete."))],
                &["comment_id"],
            ),
            effect: write("delete_record", "task_comments"),
        },
    ]
}

/// `checkpoint_agent`'s 4 tools.
pub fn checkpoint_tools() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "list_checkpoints",
            description: "Lists project checkpoints (milestones), of one project or of all projects.",
            parameters: object(
                vec![("project_id", string("Only checkpoints of this project."))],
                &[],
            ),
            effect: ToolEffect::Read,
        },
        ToolSpec {
            name: "create_checkpoint",
            description: "Creates a checkpoint (milestone) in a project. project_id is required.",
            parameters: object(checkpoint_fields(false), &["project_id", "title"]),
            effect: write("create_record", "checkpoints"),
        },
        ToolSpec {
            name: "update_checkpoint",
            description: "Updates a checkpoint: only the fields given change. Use it to approve a suggested checkpoint (is_approved = 1).",
            parameters: object(
                with_id(
                    ("checkpoint_id", string("Id of the checkpoint to update.")),
                    checkpoint_fields(true),
                ),
                &["checkpoint_id"],
            ),
            effect: write("update_record", "checkpoints"),
        },
        ToolSpec {
            name: "delete_checkpoint",
            description: "Deletes a checkpoint.",
            parameters: object(
                vec![("checkpoint_id", string("Id of the checkpoint to delete."))],
                &["checkpoint_id"],
            ),
            effect: write("delete_record", "checkpoints"),
        },
    ]
}

/// `project_agent`'s 6 tools.
pub fn project_tools() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "list_projects",
            description: "Lists projects, optionally of one client; archived projects only when asked.",
            parameters: object(
                vec![
                    ("client_id", string("Only projects of this client.")),
                    (
                        "include_archived",
                        boolean("Also list archived projects (default false)."),
                    ),
                ],
                &[],
            ),
            effect: ToolEffect::Read,
        },
        ToolSpec {
            name: "list_all_projects",
            description: "Lists every project of every client, archived ones included.",
            parameters: object(vec![], &[]),
            effect: ToolEffect::Read,
        },
        ToolSpec {
            name: "get_project",
            description: "Gets one project with all its fields.",
            parameters: object(
                vec![("project_id", string("Id of the project."))],
                &["project_id"],
            ),
            effect: ToolEffect::Read,
        },
        ToolSpec {
            name: "create_project",
            description: "Creates a project.",
            parameters: object(
                vec![
                    ("name", string("Name of the project.")),
                    ("client_id", string("Id of the client the project is for.")),
                ],
                &["name"],
            ),
            effect: write("create_record", "projects"),
        },
        ToolSpec {
            name: "update_project",
            description: "Updates a project: only the fields given change. To archive a project set status to archived; to restore it set active.",
            parameters: object(
                vec![
                    ("project_id", string("Id of the project to update.")),
                    ("name", string("New name.")),
                    ("client_id", string("Id of the client the project is for.")),
                    (
                        "status",
                        one_of_strings(&PROJECT_STATUSES, "active or archived."),
                    ),
                ],
                &["project_id"],
            ),
            effect: write("update_record", "projects"),
        },
        ToolSpec {
            name: "delete_project",
            description: "Permanently deletes a project and everything in it; this cannot be undone. Prefer archiving (update_project with status archived); delete only when the user explicitly asks for permanent deletion.",
            parameters: object(
                vec![("project_id", string("Id of the project to delete."))],
                &["project_id"],
            ),
            effect: write("delete_record", "projects"),
        },
    ]
}

/// `note_agent`'s 5 tools.
pub fn note_tools() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "list_notes",
            description: "Lists notes (titles and ids), of one project or all.",
            parameters: object(
                vec![("project_id", string("Only notes of this project."))],
                &[],
            ),
            effect: ToolEffect::Read,
        },
        ToolSpec {
            name: "get_note",
            description: "Gets one note with its full Markdown content.",
            parameters: object(vec![("note_id", string("Id of the note."))], &["note_id"]),
            effect: ToolEffect::Read,
        },
        ToolSpec {
            name: "create_note",
            description: "Creates a note. The content is Markdown.",
            parameters: object(
                vec![
                    ("title", string("Title of the note.")),
                    ("content", string("Body of the note, in Markdown.")),
                    (
                        "project_id",
                        string("Id of the project the note belongs to."),
                    ),
                ],
                &["title"],
            ),
            effect: write("create_record", "notes"),
        },
        ToolSpec {
            name: "update_note",
            description: "Updates a note: only the fields given change, and content replaces the whole body. Call get_note first and send the complete new content, so that existing content is preserved.",
            parameters: object(
                vec![
                    ("note_id", string("Id of the note to update.")),
                    ("title", string("New title.")),
                    (
                        "content",
                        string("The complete new body, in Markdown (replaces the old one)."),
                    ),
                    (
                        "project_id",
                        string("Id of the project the note belongs to."),
                    ),
                ],
                &["note_id"],
            ),
            effect: write("update_record", "notes"),
        },
        ToolSpec {
            name: "delete_note",
            description: "Deletes a note.",
            parameters: object(
                vec![("note_id", string("Id of the note to delete."))],
                &["note_id"],
            ),
            effect: write("delete_record", "notes"),
        },
    ]
}
