//! Playbooks: pre-built plans for common operations, each available from a tier up
//! (plan steps 5 and 8b, `GET /api/v1/plans/playbook[/{plan_id}]`).

use serde::Serialize;
use serde_json::json;

use super::{
    ExecutionPlanBuilder, LLM_ACTION, PlanError, PromptTemplateRegistry, is_known_agent,
    is_known_tool,
};
use crate::chat::types::ExecutionPlan;
use crate::domain::Tier;

/// A pre-built plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Playbook {
    /// Stable id (`create_task_from_email`), the `{plan_id}` of the endpoint.
    pub id: &'static str,
    /// Short name for a menu.
    pub title: &'static str,
    /// One sentence on what it does.
    pub description: &'static str,
    /// The cheapest tier that may run it.
    pub min_tier: Tier,
    /// The steps (template ids, never prompt text).
    pub plan: ExecutionPlan,
}

/// Why a playbook could not be handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlaybookError {
    /// No playbook has that id.
    #[error("no playbook with that id")]
    NotFound,
    /// It exists but needs a higher tier.
    #[error("this playbook requires the {min} tier or above")]
    TierRequired {
        /// The cheapest tier that has it.
        min: Tier,
    },
}

/// Tier's position in `Tier::ALL` (free < pro < power < team). `Tier` itself does not
/// derive `Ord`, and its order is the order of `ALL`.
fn rank(tier: Tier) -> usize {
    Tier::ALL.iter().position(|t| *t == tier).unwrap_or(0)
}

/// Whether `tier` may run something that needs `min`.
pub(crate) fn tier_allows(tier: Tier, min: Tier) -> bool {
    rank(tier) >= rank(min)
}

/// The built-in catalogue, validated.
#[derive(Debug, Clone)]
pub struct Playbooks {
    all: Vec<Playbook>,
}

impl Playbooks {
    /// Builds the built-in playbooks against `templates` and checks each: a known agent,
    /// only client tools and `llm` steps, templates that exist, references to earlier
    /// steps. An error here is a bug in the catalogue (a test builds it).
    pub fn builtin(templates: &PromptTemplateRegistry) -> Result<Self, PlanError> {
        let suggested = |mut v: serde_json::Value| {
            v["is_ai_suggested"] = json!(true);
            v["is_approved"] = json!(false);
            v
        };
        let all = vec![
            Playbook {
                id: "create_task_from_email",
                title: "Create task from email",
                description: "Turns a pasted email into one task, filed under the project it is about.",
                min_tier: Tier::Free,
                plan: ExecutionPlanBuilder::new("task_agent")
                    .add_step("list_all_projects", json!({}))
                    .add_llm_step_from("email_to_task.extract", json!({"email": "{{email}}"}), 0)
                    .add_step_from("create_task", suggested(json!({})), 1)
                    .build(templates)?,
            },
            Playbook {
                id: "summarise_project_notes",
                title: "Summarise a project's notes",
                description: "Reads every note of a project and writes a short summary of decisions and open questions.",
                min_tier: Tier::Free,
                plan: ExecutionPlanBuilder::new("note_agent")
                    .add_step("list_notes", json!({"project_id": "{{project_id}}"}))
                    .add_llm_step_from(
                        "project_notes.summarise",
                        json!({"project_id": "{{project_id}}"}),
                        0,
                    )
                    .build(templates)?,
            },
            Playbook {
                id: "weekly_report",
                title: "Generate weekly report",
                description: "Writes a status report of the last seven days from your tasks and saves it as a note.",
                min_tier: Tier::Pro,
                plan: ExecutionPlanBuilder::new("task_agent")
                    .add_step("list_tasks", json!({"order_by": "due_date"}))
                    .add_llm_step_from("weekly_report.compose", json!({"period_days": 7}), 0)
                    .add_data_step("create_note", 1)
                    .build(templates)?,
            },
            Playbook {
                id: "plan_project_checkpoints",
                title: "Plan a project's checkpoints",
                description: "Proposes dated milestones for a project, added as suggestions for you to approve.",
                min_tier: Tier::Power,
                plan: ExecutionPlanBuilder::new("checkpoint_agent")
                    .add_step("get_project", json!({"project_id": "{{project_id}}"}))
                    .add_step_from(
                        "list_checkpoints",
                        json!({"project_id": "{{project_id}}"}),
                        0,
                    )
                    .add_llm_step_from(
                        "project_checkpoints.propose",
                        json!({"project_id": "{{project_id}}", "horizon_weeks": 12}),
                        1,
                    )
                    .add_step_from(
                        "create_checkpoint",
                        suggested(json!({"project_id": "{{project_id}}"})),
                        2,
                    )
                    .build(templates)?,
            },
        ];
        for pb in &all {
            if !is_known_agent(&pb.plan.agent) {
                return Err(PlanError::UnknownAgent(pb.plan.agent.clone()));
            }
            for (i, step) in pb.plan.steps.iter().enumerate() {
                if step.action != LLM_ACTION && !is_known_tool(&step.action) {
                    return Err(PlanError::UnknownAction {
                        step: i,
                        action: step.action.clone(),
                    });
                }
            }
        }
        Ok(Self { all })
    }

    /// Every playbook, whatever its tier.
    pub fn all(&self) -> &[Playbook] {
        &self.all
    }

    /// The playbooks `tier` may run (`min_tier ≤ tier`).
    pub fn for_tier(&self, tier: Tier) -> Vec<&Playbook> {
        self.all
            .iter()
            .filter(|p| tier_allows(tier, p.min_tier))
            .collect()
    }

    /// Playbook `id` for a user on `tier`.
    pub fn get(&self, id: &str, tier: Tier) -> Result<&Playbook, PlaybookError> {
        let pb = self
            .all
            .iter()
            .find(|p| p.id == id)
            .ok_or(PlaybookError::NotFound)?;
        if !tier_allows(tier, pb.min_tier) {
            return Err(PlaybookError::TierRequired { min: pb.min_tier });
        }
        Ok(pb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_are_ordered() {
        assert!(tier_allows(Tier::Team, Tier::Power));
        assert!(tier_allows(Tier::Pro, Tier::Pro));
        assert!(!tier_allows(Tier::Free, Tier::Pro));
        assert!(!tier_allows(Tier::Power, Tier::Team));
    }
}
