//! Types that only change what the OpenAPI document says, never the wire: base64 as
//! `format: byte`, JSON the core validates documented with a real schema, and the
//! shapes of the chat `context` and `scope` the desktop app sends (plan `ChatContext`).
//! A client generated from the document needs no cast for any of them.

use std::borrow::Cow;
use std::marker::PhantomData;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{Base64, ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use poem_openapi::{Enum, Object};
use serde_json::Value;

/// Bytes as standard base64 in JSON, documented `format: byte` (OpenAPI's name for
/// base64; poem-openapi's `Base64` says `bytes`, which generators read as a plain string).
/// Parsing and printing are `Base64`'s, so the wire is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base64Bytes(pub bytes::Bytes);

impl Type for Base64Bytes {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "string_byte".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new_with_format("string", "byte")))
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl ParseFromJSON for Base64Bytes {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        Base64::<bytes::Bytes>::parse_from_json(value)
            .map(|b| Self(b.0))
            .map_err(ParseError::propagate)
    }
}

impl ToJSON for Base64Bytes {
    fn to_json(&self) -> Option<Value> {
        Base64(self.0.clone()).to_json()
    }
}

/// A JSON value passed through as is (the core parses and validates it, with its own
/// error messages), documented with `S`'s schema. For request fields whose shape the
/// core owns (`context`, `scope`) and response fields the core builds (`data`,
/// `variables`): the document is precise while the server's parsing stays one home.
pub struct Described<S>(pub Value, PhantomData<fn() -> S>);

impl<S> Described<S> {
    /// Wraps a value.
    pub fn new(value: Value) -> Self {
        Self(value, PhantomData)
    }
}

impl<S> std::fmt::Debug for Described<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<S: Type> Type for Described<S> {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        S::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        S::schema_ref()
    }

    fn register(registry: &mut Registry) {
        S::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl<S: Type> ParseFromJSON for Described<S> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        Ok(Self::new(value.unwrap_or_default()))
    }
}

impl<S: Type> ToJSON for Described<S> {
    fn to_json(&self) -> Option<Value> {
        Some(self.0.clone())
    }
}

/// A JSON object with any fields: tool arguments, record fields, template variables.
pub type AnyObject = std::collections::HashMap<String, Value>;

/// A task's workflow status (the task tools' `status`).
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Not started.
    Todo,
    /// Started.
    InProgress,
    /// Finished.
    Done,
}

/// A task's priority.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "snake_case")]
pub enum TaskPriority {
    /// High.
    High,
    /// Medium.
    Medium,
    /// Low.
    Low,
}

/// A project's status.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ProjectStatus {
    /// In use.
    Active,
    /// Archived: listed only when asked.
    Archived,
}

/// Who said a history turn.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "snake_case")]
pub enum TurnRole {
    /// The user.
    User,
    /// The assistant.
    Assistant,
}

/// A task as the device stores it; read tools filter on these fields. Other fields the
/// device keeps may be sent too.
#[derive(Debug, Object)]
pub struct ContextTask {
    /// The device's id.
    pub id: String,
    /// Short title.
    pub title: Option<String>,
    /// Longer description.
    pub description: Option<String>,
    /// Workflow status.
    pub status: Option<TaskStatus>,
    /// Priority.
    pub priority: Option<TaskPriority>,
    /// People assigned, a JSON-encoded array of names.
    pub assignees: Option<String>,
    /// Due date, ms since the epoch.
    pub due_date: Option<i64>,
    /// The task's project.
    pub project_id: Option<String>,
    /// 1 when the assistant proposed it.
    pub is_ai_suggested: Option<i64>,
    /// 1 once the user approved it.
    pub is_approved: Option<i64>,
    /// ms since the epoch.
    pub created_at: Option<i64>,
    /// ms since the epoch.
    pub updated_at: Option<i64>,
}

/// A comment on a task.
#[derive(Debug, Object)]
pub struct ContextTaskComment {
    /// The device's id.
    pub id: String,
    /// The task it belongs to.
    pub task_id: String,
    /// Who wrote it (`AI` for the assistant).
    pub author: Option<String>,
    /// The text.
    pub content: Option<String>,
    /// ms since the epoch.
    pub created_at: Option<i64>,
}

/// A project.
#[derive(Debug, Object)]
pub struct ContextProject {
    /// The device's id.
    pub id: String,
    /// Name.
    pub name: Option<String>,
    /// The client it is for.
    pub client_id: Option<String>,
    /// Active or archived.
    pub status: Option<ProjectStatus>,
}

/// A note.
#[derive(Debug, Object)]
pub struct ContextNote {
    /// The device's id.
    pub id: String,
    /// Title.
    pub title: Option<String>,
    /// Markdown body.
    pub content: Option<String>,
    /// The note's project.
    pub project_id: Option<String>,
}

/// A checkpoint (project milestone).
#[derive(Debug, Object)]
pub struct ContextCheckpoint {
    /// The device's id.
    pub id: String,
    /// The checkpoint's project.
    pub project_id: Option<String>,
    /// Title.
    pub title: Option<String>,
    /// Date, ms since the epoch.
    pub date: Option<i64>,
    /// 1 when the assistant proposed it.
    pub is_ai_suggested: Option<i64>,
    /// 1 once the user approved it.
    pub is_approved: Option<i64>,
}

/// An earlier turn of the conversation.
#[derive(Debug, Object)]
pub struct ConversationTurn {
    /// Who said it.
    pub role: TurnRole,
    /// What was said.
    pub content: String,
}

/// What the device sends with a message (plan `ChatContext`), used for this request
/// only and never stored. Every list is optional; read tools answer from them (a list
/// not sent reads as "the device did not send it").
#[derive(Debug, Object)]
pub struct ChatContext {
    /// Free-form profile facts.
    pub user_profile: Option<AnyObject>,
    /// Snippets the device found relevant.
    pub relevant_documents: Option<Vec<String>>,
    /// Recent tasks.
    pub recent_tasks: Option<Vec<ContextTask>>,
    /// Earlier turns, oldest first (the oldest are dropped first to fit the model).
    pub conversation_history: Option<Vec<ConversationTurn>>,
    /// Projects.
    pub projects: Option<Vec<ContextProject>>,
    /// Notes.
    pub notes: Option<Vec<ContextNote>>,
    /// Checkpoints.
    pub checkpoints: Option<Vec<ContextCheckpoint>>,
    /// Task comments.
    pub task_comments: Option<Vec<ContextTaskComment>>,
}

/// What a popup is scoped to (v2). A write to another project than `project_id` comes
/// back with a navigation directive.
#[derive(Debug, Object)]
pub struct ChatScope {
    /// The project the popup shows.
    pub project_id: Option<String>,
    /// The task the popup shows.
    pub task_id: Option<String>,
    /// The note the popup shows.
    pub note_id: Option<String>,
}
