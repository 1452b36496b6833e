//! Execution plans (plan step 5) and playbooks (step 8b).
//!
//! A plan is what `execution_mode = plan` returns: a list of steps the desktop app runs
//! itself. Steps name client tools (`list_tasks`, `create_task`, …) and, for `llm` steps,
//! a *template id* from the server's [`PromptTemplateRegistry`]; the prompt text stays
//! on the server (DESIGN.md, "prompts never leave the server"), and the client asks the
//! server to run a template by id.
//!
//! Step conventions the client relies on:
//! - `data_from_step: n` — the step takes the output of earlier step `n` (0-based) as its
//!   input; the builder only accepts references to *earlier* steps.
//! - `variables` — the tool's arguments, or an `llm` step's template variables. A string
//!   value of the form `{{name}}` is a placeholder the client fills from what the user
//!   gave when starting a playbook (`{{email}}`, `{{project_id}}`).
//!
//! Built plans are cached in a [`PlanCache`] (an LRU of 1000); [`Playbooks`] are the
//! pre-built plans for common operations, each with the tier it needs.

mod cache;
mod playbooks;
mod templates;

pub use cache::{PLAN_CACHE_CAPACITY, PlanCache};
pub use playbooks::{Playbook, PlaybookError, Playbooks};
pub use templates::PromptTemplateRegistry;

use serde_json::{Value, json};

use super::types::{ExecutionPlan, PlanStep};

/// The action name of a step that runs a server-side prompt template.
pub const LLM_ACTION: &str = "llm";

/// The built-in agents and their tool names, taken from the agents' own specs (one
/// source of truth). Playbooks and agent plans may only use these.
pub(crate) fn agent_tools() -> &'static [(&'static str, Vec<&'static str>)] {
    use crate::chat::agents::{checkpoint_tools, note_tools, project_tools, task_tools};
    static TOOLS: std::sync::OnceLock<Vec<(&'static str, Vec<&'static str>)>> =
        std::sync::OnceLock::new();
    TOOLS.get_or_init(|| {
        let names = |specs: Vec<crate::chat::agents::ToolSpec>| {
            specs.into_iter().map(|t| t.name).collect::<Vec<_>>()
        };
        vec![
            ("task_agent", names(task_tools())),
            ("checkpoint_agent", names(checkpoint_tools())),
            ("project_agent", names(project_tools())),
            ("note_agent", names(note_tools())),
        ]
    })
}

/// Whether `name` is one of the four chat agents.
pub(crate) fn is_known_agent(name: &str) -> bool {
    agent_tools().iter().any(|(agent, _)| *agent == name)
}

/// Whether `name` is one of the 23 client tools.
pub(crate) fn is_known_tool(name: &str) -> bool {
    agent_tools().iter().any(|(_, tools)| tools.contains(&name))
}

/// Why a plan (or a template registration) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// A plan needs at least one step.
    #[error("the plan has no steps")]
    Empty,
    /// A plan belongs to an agent.
    #[error("the plan names no agent")]
    NoAgent,
    /// The agent is not one the server knows.
    #[error("unknown agent '{0}'")]
    UnknownAgent(String),
    /// A step's action is not a known tool (playbooks only use the client tools).
    #[error("step {step}: unknown action '{action}'")]
    UnknownAction {
        /// The step (0-based).
        step: usize,
        /// Its action.
        action: String,
    },
    /// `data_from_step` points past the end of the plan.
    #[error("step {step} takes its input from step {from}, which does not exist")]
    MissingStep {
        /// The step (0-based).
        step: usize,
        /// The step it names.
        from: usize,
    },
    /// `data_from_step` points at the step itself.
    #[error("step {step} takes its input from itself")]
    SelfReference {
        /// The step (0-based).
        step: usize,
    },
    /// `data_from_step` points at a step that runs later.
    #[error("step {step} takes its input from step {from}, which runs after it")]
    LaterStep {
        /// The step (0-based).
        step: usize,
        /// The later step it names.
        from: usize,
    },
    /// An `llm` step without a template id.
    #[error("step {step} is an llm step without a template")]
    MissingTemplate {
        /// The step (0-based).
        step: usize,
    },
    /// An `llm` step naming a template the registry does not hold.
    #[error("step {step} names unknown template '{template}'")]
    UnknownTemplate {
        /// The step (0-based).
        step: usize,
        /// The id it names.
        template: String,
    },
    /// A template id registered twice.
    #[error("template '{0}' is already registered")]
    DuplicateTemplate(String),
}

/// Builds a validated [`ExecutionPlan`] step by step.
///
/// ```
/// use adiuva_core::chat::plans::{ExecutionPlanBuilder, PromptTemplateRegistry};
/// use serde_json::json;
///
/// let templates = PromptTemplateRegistry::with_builtin_templates();
/// let plan = ExecutionPlanBuilder::new("task_agent")
///     .add_step("list_tasks", json!({}))
///     .add_llm_step_from("task_agent.plan", json!({"message": "tidy my week"}), 0)
///     .add_data_step("create_task", 1)
///     .build(&templates)
///     .unwrap();
/// assert_eq!(plan.steps[1].prompt_template.as_deref(), Some("task_agent.plan"));
/// ```
#[derive(Debug, Clone)]
pub struct ExecutionPlanBuilder {
    agent: String,
    // Kept as usize until `build` so a bad reference is reported, not truncated.
    steps: Vec<(PlanStep, Option<usize>)>,
}

impl ExecutionPlanBuilder {
    /// An empty plan for `agent`.
    pub fn new(agent: impl Into<String>) -> Self {
        Self {
            agent: agent.into(),
            steps: Vec::new(),
        }
    }

    fn push(
        &mut self,
        action: String,
        template: Option<String>,
        variables: Value,
        from: Option<usize>,
    ) -> &mut Self {
        let variables = match variables {
            Value::Null => None,
            v => Some(v),
        };
        self.steps.push((
            PlanStep {
                action,
                prompt_template: template,
                variables,
                data_from_step: None,
            },
            from,
        ));
        self
    }

    /// A client action (a tool name) with its parameters (`Value::Null` for none).
    pub fn add_step(&mut self, action: impl Into<String>, params: Value) -> &mut Self {
        self.push(action.into(), None, params, None)
    }

    /// A client action with parameters that also takes the output of step `data_from_step`.
    pub fn add_step_from(
        &mut self,
        action: impl Into<String>,
        params: Value,
        data_from_step: usize,
    ) -> &mut Self {
        self.push(action.into(), None, params, Some(data_from_step))
    }

    /// An `llm` step running the server template `template_id` with `variables`.
    pub fn add_llm_step(&mut self, template_id: impl Into<String>, variables: Value) -> &mut Self {
        self.push(
            LLM_ACTION.to_owned(),
            Some(template_id.into()),
            variables,
            None,
        )
    }

    /// An `llm` step whose input is the output of step `data_from_step`.
    pub fn add_llm_step_from(
        &mut self,
        template_id: impl Into<String>,
        variables: Value,
        data_from_step: usize,
    ) -> &mut Self {
        self.push(
            LLM_ACTION.to_owned(),
            Some(template_id.into()),
            variables,
            Some(data_from_step),
        )
    }

    /// A client action fed by the output of step `data_from_step`, with no parameters.
    pub fn add_data_step(&mut self, action: impl Into<String>, data_from_step: usize) -> &mut Self {
        self.push(action.into(), None, Value::Null, Some(data_from_step))
    }

    /// Checks the plan and returns it: at least one step, an agent, every
    /// `data_from_step` naming an earlier step, every `llm` step naming a template that
    /// `templates` holds. Steps carry template ids only, by construction.
    pub fn build(&self, templates: &PromptTemplateRegistry) -> Result<ExecutionPlan, PlanError> {
        if self.agent.trim().is_empty() {
            return Err(PlanError::NoAgent);
        }
        if self.steps.is_empty() {
            return Err(PlanError::Empty);
        }
        let mut steps = Vec::with_capacity(self.steps.len());
        for (i, (step, from)) in self.steps.iter().enumerate() {
            if let Some(from) = *from {
                if from == i {
                    return Err(PlanError::SelfReference { step: i });
                }
                if from >= self.steps.len() {
                    return Err(PlanError::MissingStep { step: i, from });
                }
                if from > i {
                    return Err(PlanError::LaterStep { step: i, from });
                }
            }
            if step.action == LLM_ACTION {
                match &step.prompt_template {
                    None => return Err(PlanError::MissingTemplate { step: i }),
                    Some(id) if templates.get(id).is_none() => {
                        return Err(PlanError::UnknownTemplate {
                            step: i,
                            template: id.clone(),
                        });
                    }
                    Some(_) => {}
                }
            }
            let mut step = step.clone();
            // `from < i` and plans are short, so the conversion cannot fail.
            step.data_from_step = from.and_then(|f| i64::try_from(f).ok());
            steps.push(step);
        }
        Ok(ExecutionPlan {
            agent: self.agent.clone(),
            steps,
        })
    }
}

/// Each agent's generic plan: its list tool, its template, its write tool.
fn agent_plan_shape(agent: &str) -> Option<(&'static str, &'static str, &'static str, Value)> {
    let suggested = json!({"is_ai_suggested": true, "is_approved": false});
    Some(match agent {
        "task_agent" => ("list_tasks", "task_agent.plan", "create_task", suggested),
        "checkpoint_agent" => (
            "list_checkpoints",
            "checkpoint_agent.plan",
            "create_checkpoint",
            suggested,
        ),
        "project_agent" => (
            "list_all_projects",
            "project_agent.plan",
            "create_project",
            Value::Null,
        ),
        "note_agent" => ("list_notes", "note_agent.plan", "create_note", Value::Null),
        _ => return None,
    })
}

/// The plan returned when a chat request asks `execution_mode = plan` for `agent`: fetch
/// with the agent's list tool, run the agent's planning template on the message and that
/// data, then write with the agent's create tool (tasks and checkpoints are created as
/// AI suggestions awaiting approval). Not cached; see [`PlanCache::plan_for_agent`].
pub fn plan_for_agent(
    agent: &str,
    message: &str,
    templates: &PromptTemplateRegistry,
) -> Result<ExecutionPlan, PlanError> {
    let (list, template, write, write_params) =
        agent_plan_shape(agent).ok_or_else(|| PlanError::UnknownAgent(agent.to_owned()))?;
    ExecutionPlanBuilder::new(agent)
        .add_step(list, json!({}))
        .add_llm_step_from(template, json!({ "message": message }), 0)
        .add_step_from(write, write_params, 1)
        .build(templates)
}

/// The cache key part of a message: lowercase, whitespace collapsed.
pub fn normalise_message(message: &str) -> String {
    message
        .split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates() -> PromptTemplateRegistry {
        PromptTemplateRegistry::with_builtin_templates()
    }

    #[test]
    fn a_valid_plan_numbers_its_references() {
        let plan = ExecutionPlanBuilder::new("note_agent")
            .add_step("list_notes", json!({"project_id": "p1"}))
            .add_llm_step_from("project_notes.summarise", json!({}), 0)
            .add_data_step("create_note", 1)
            .build(&templates())
            .unwrap();
        assert_eq!(plan.agent, "note_agent");
        assert_eq!(plan.steps.len(), 3);
        assert_eq!(plan.steps[0].data_from_step, None);
        assert_eq!(plan.steps[1].data_from_step, Some(0));
        assert_eq!(plan.steps[2].data_from_step, Some(1));
        assert_eq!(plan.steps[1].action, "llm");
        assert_eq!(plan.steps[2].variables, None);
    }

    #[test]
    fn references_must_point_at_earlier_steps() {
        let t = templates();
        let err = ExecutionPlanBuilder::new("task_agent")
            .add_step("list_tasks", json!({}))
            .add_data_step("create_task", 5)
            .build(&t)
            .unwrap_err();
        assert_eq!(err, PlanError::MissingStep { step: 1, from: 5 });

        let err = ExecutionPlanBuilder::new("task_agent")
            .add_step("list_tasks", json!({}))
            .add_data_step("create_task", 1)
            .build(&t)
            .unwrap_err();
        assert_eq!(err, PlanError::SelfReference { step: 1 });

        let err = ExecutionPlanBuilder::new("task_agent")
            .add_data_step("create_task", 1)
            .add_step("list_tasks", json!({}))
            .build(&t)
            .unwrap_err();
        assert_eq!(err, PlanError::LaterStep { step: 0, from: 1 });
    }

    #[test]
    fn llm_steps_need_a_known_template() {
        let t = templates();
        let err = ExecutionPlanBuilder::new("task_agent")
            .add_llm_step("no_such_template", json!({}))
            .build(&t)
            .unwrap_err();
        assert_eq!(
            err,
            PlanError::UnknownTemplate {
                step: 0,
                template: "no_such_template".into()
            }
        );
        let err = ExecutionPlanBuilder::new("task_agent")
            .add_step("llm", json!({"prompt": "hi"}))
            .build(&t)
            .unwrap_err();
        assert_eq!(err, PlanError::MissingTemplate { step: 0 });
    }

    #[test]
    fn empty_plans_and_agentless_plans_are_rejected() {
        let t = templates();
        assert_eq!(
            ExecutionPlanBuilder::new("task_agent")
                .build(&t)
                .unwrap_err(),
            PlanError::Empty
        );
        assert_eq!(
            ExecutionPlanBuilder::new(" ")
                .add_step("list_tasks", json!({}))
                .build(&t)
                .unwrap_err(),
            PlanError::NoAgent
        );
    }

    #[test]
    fn every_agent_has_a_plan_and_unknown_agents_are_refused() {
        let t = templates();
        for (agent, tools) in agent_tools() {
            let plan = plan_for_agent(agent, "Plan my week", &t).unwrap();
            assert_eq!(plan.agent, *agent);
            assert_eq!(plan.steps.len(), 3);
            assert!(tools.contains(&plan.steps[0].action.as_str()));
            assert_eq!(plan.steps[1].action, LLM_ACTION);
            assert!(tools.contains(&plan.steps[2].action.as_str()));
            assert_eq!(
                plan.steps[1].variables,
                Some(json!({"message": "Plan my week"}))
            );
        }
        assert_eq!(
            plan_for_agent("mail_agent", "x", &t).unwrap_err(),
            PlanError::UnknownAgent("mail_agent".into())
        );
    }

    #[test]
    fn there_are_23_tools_over_4_agents() {
        let n: usize = agent_tools().iter().map(|(_, t)| t.len()).sum();
        assert_eq!(n, 23);
        assert!(is_known_tool("get_note") && !is_known_tool("llm"));
        assert!(is_known_agent("checkpoint_agent") && !is_known_agent("x"));
    }

    #[test]
    fn messages_normalise_case_and_spacing() {
        assert_eq!(normalise_message("  Plan   my\tWEEK \n"), "plan my week");
    }
}
