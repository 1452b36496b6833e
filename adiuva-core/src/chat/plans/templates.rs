//! Prompt templates: id → text, server-side only. Plans carry the ids; the texts are
//! also the sanitizer's fingerprints, so an echo of one never reaches a client.

use std::collections::BTreeMap;
use std::fmt;

use super::PlanError;

/// The built-in templates, `(id, text)`. In the texts, `{message}` is the user's
/// message, `{input}` the output of the step named by `data_from_step`, and any other
/// `{name}` the step's variable of that name.
const BUILTIN_TEMPLATES: &[(&str, &str)] = &[
    (
        "task_agent.plan",
        "You are the task planner inside Adiuva, a personal productivity app. \
The user asked: {message}\n\
Their current tasks, as JSON, are: {input}\n\
Decide which tasks to create so the request is fulfilled. Never duplicate a task \
that already exists with the same meaning; prefer fewer, concrete tasks whose titles \
start with a verb. Give each new task a priority of high, medium or low and a due date \
in milliseconds since the Unix epoch only when the user implied one. Reply with only a \
JSON array of objects with the fields title, description, priority and due_date.",
    ),
    (
        "checkpoint_agent.plan",
        "You are the milestone planner inside Adiuva, a personal productivity app. \
The user asked: {message}\n\
The project's existing checkpoints, as JSON, are: {input}\n\
Propose the checkpoints that are missing so the request is fulfilled. A checkpoint is \
a dated milestone with a short title naming an outcome, not an activity. Keep the \
existing dates unless the user asked to move them, and never place two checkpoints on \
the same day. Reply with only a JSON array of objects with the fields project_id, \
title and date in milliseconds since the Unix epoch.",
    ),
    (
        "project_agent.plan",
        "You are the project organiser inside Adiuva, a personal productivity app. \
The user asked: {message}\n\
All of their projects, as JSON, are: {input}\n\
Work out which new projects the request needs. Reuse an existing project when one \
clearly matches instead of creating a near duplicate, and suggest archiving rather \
than deleting. Reply with only a JSON array of objects with the fields name and \
client_id, leaving client_id empty when no client was mentioned.",
    ),
    (
        "note_agent.plan",
        "You are the note keeper inside Adiuva, a personal productivity app. \
The user asked: {message}\n\
The existing notes, as JSON, are: {input}\n\
Write the note or notes the request calls for in clear Markdown with a heading, short \
paragraphs and bullet lists where they help. Do not repeat what an existing note \
already says; refer to it by title instead. Reply with only a JSON array of objects \
with the fields title, content and project_id.",
    ),
    (
        "email_to_task.extract",
        "You turn an email into one actionable task for the reader of that email. \
Read the email below and identify the single most important thing the reader must do. \
Write a task title of at most ten words starting with a verb, a description of two or \
three sentences that keeps names, amounts and links from the email, a priority of high \
when the sender mentions urgency or a deadline within three days and medium otherwise, \
and a due date in milliseconds since the Unix epoch if the email states or clearly \
implies one. Pick the project whose name best matches the email from this list, or \
none: {input}\n\
The email:\n{email}\n\
Reply with only a JSON object with the fields title, description, priority, due_date \
and project_id.",
    ),
    (
        "weekly_report.compose",
        "You write a concise weekly status report from a list of tasks. \
The tasks, as JSON with status, priority, due_date and project, are: {input}\n\
Cover the last {period_days} days. Start with a one-paragraph summary of the week, \
then three sections in Markdown: Done, In progress and Blocked or overdue, each a \
bullet list grouped by project. Mention due dates in plain words, call out every high \
priority task that is overdue, and end with at most three suggested priorities for next \
week. Do not invent tasks or progress that the data does not show. Reply with only a \
JSON object with the fields title and content, where content is the Markdown report.",
    ),
    (
        "project_checkpoints.propose",
        "You plan the milestones of one project. \
The project's existing checkpoints, as JSON, are: {input}\n\
The project is {project_id} and the plan should cover the next {horizon_weeks} weeks. \
Propose between three and six new checkpoints that divide the remaining work into \
steps of roughly equal effort, each a verifiable outcome such as a delivered draft or \
a signed-off review. Space them at least one week apart, keep them after today and \
after every existing checkpoint, and leave room before the final one for review. \
Reply with only a JSON array of objects with the fields title and date in \
milliseconds since the Unix epoch.",
    ),
    (
        "project_notes.summarise",
        "You summarise the notes of one project for someone who has not read them. \
The notes, as JSON with title, content and updated_at, are: {input}\n\
Write a summary in Markdown of at most three hundred words: a short overview, the key \
decisions with the note each came from, open questions, and any commitments with \
their dates. Prefer the most recent note when two notes disagree and say that they \
disagree. Quote nothing longer than one sentence. Reply with only a JSON object with \
the fields title and content.",
    ),
];

/// Prompt templates by id. The texts never leave the server: plans carry ids, and the
/// sanitizer is built from [`texts`](Self::texts). `Debug` prints the ids only.
#[derive(Clone, Default)]
pub struct PromptTemplateRegistry {
    templates: BTreeMap<String, String>,
}

impl fmt::Debug for PromptTemplateRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The texts are the product's prompt IP; keep them out of logs.
        f.debug_struct("PromptTemplateRegistry")
            .field("ids", &self.ids())
            .finish()
    }
}

impl PromptTemplateRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry holding the templates the agent plans and built-in playbooks use.
    pub fn with_builtin_templates() -> Self {
        let mut r = Self::new();
        for (id, text) in BUILTIN_TEMPLATES {
            // The built-in ids are distinct (checked by a test), so this cannot fail.
            let _ = r.register(*id, *text);
        }
        r
    }

    /// Adds a template. An id already registered is an error (nothing is replaced).
    pub fn register(
        &mut self,
        id: impl Into<String>,
        text: impl Into<String>,
    ) -> Result<(), PlanError> {
        let id = id.into();
        if self.templates.contains_key(&id) {
            return Err(PlanError::DuplicateTemplate(id));
        }
        self.templates.insert(id, text.into());
        Ok(())
    }

    /// The text of template `id`.
    pub fn get(&self, id: &str) -> Option<&str> {
        self.templates.get(id).map(String::as_str)
    }

    /// Every id, sorted.
    pub fn ids(&self) -> Vec<&str> {
        self.templates.keys().map(String::as_str).collect()
    }

    /// Every text (for the sanitizer's fingerprints), in id order.
    pub fn texts(&self) -> Vec<String> {
        self.templates.values().cloned().collect()
    }

    /// How many templates there are.
    pub fn len(&self) -> usize {
        self.templates.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_all_registered_and_duplicates_refused() {
        let mut r = PromptTemplateRegistry::with_builtin_templates();
        assert_eq!(r.len(), BUILTIN_TEMPLATES.len());
        assert!(r.get("weekly_report.compose").unwrap().contains("{input}"));
        assert_eq!(
            r.register("weekly_report.compose", "x"),
            Err(PlanError::DuplicateTemplate("weekly_report.compose".into()))
        );
        // the original text is kept
        assert!(r.get("weekly_report.compose").unwrap().len() > 100);
        r.register("custom", "Say hello.").unwrap();
        assert_eq!(r.get("custom"), Some("Say hello."));
        assert!(r.ids().contains(&"custom"));
        assert_eq!(r.texts().len(), r.len());
    }

    #[test]
    fn debug_shows_ids_not_texts() {
        let r = PromptTemplateRegistry::with_builtin_templates();
        let d = format!("{r:?}");
        assert!(d.contains("task_agent.plan"));
        assert!(!d.contains("productivity app"));
    }
}
