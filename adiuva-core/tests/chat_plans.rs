//! Plans and playbooks through the public API: validation, tiers, and the rule that no
//! prompt text ever appears in what a client receives.

use adiuva_core::chat::plans::{
    ExecutionPlanBuilder, PlanCache, PlanError, PlaybookError, Playbooks, PromptTemplateRegistry,
    plan_for_agent,
};
use adiuva_core::domain::Tier;
use serde_json::json;

fn normalised_words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .collect::<String>()
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Fails if `json` contains any template's first 8 words, verbatim or normalised.
fn assert_no_prompt_text(json: &str, templates: &PromptTemplateRegistry) {
    let flat = normalised_words(json).join(" ");
    for text in templates.texts() {
        let first8 = text
            .split_whitespace()
            .take(8)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(!json.contains(&first8), "prompt text leaked: {first8}");
        let norm = normalised_words(&first8).join(" ");
        assert!(
            !flat.contains(&norm),
            "prompt text leaked (normalised): {norm}"
        );
    }
}

#[test]
fn no_prompt_text_in_any_plan_or_playbook() {
    let templates = PromptTemplateRegistry::with_builtin_templates();
    assert!(templates.len() >= 8);
    let playbooks = Playbooks::builtin(&templates).expect("the built-in catalogue is valid");
    let json = serde_json::to_string(playbooks.all()).unwrap();
    assert_no_prompt_text(&json, &templates);
    // ...but the ids are there
    for pb in playbooks.all() {
        for step in &pb.plan.steps {
            if let Some(id) = &step.prompt_template {
                assert!(templates.get(id).is_some());
                assert!(json.contains(id.as_str()));
            }
        }
    }
    for agent in [
        "task_agent",
        "checkpoint_agent",
        "project_agent",
        "note_agent",
    ] {
        let plan = plan_for_agent(agent, "Organise next week", &templates).unwrap();
        assert_no_prompt_text(&serde_json::to_string(&plan).unwrap(), &templates);
    }
}

#[test]
fn the_catalogue_has_the_plan_s_playbooks_on_sensible_tiers() {
    let templates = PromptTemplateRegistry::with_builtin_templates();
    let playbooks = Playbooks::builtin(&templates).unwrap();
    for id in [
        "create_task_from_email",
        "weekly_report",
        "plan_project_checkpoints",
        "summarise_project_notes",
    ] {
        assert!(playbooks.get(id, Tier::Team).is_ok(), "{id}");
    }
    let ids = |tier| {
        playbooks
            .for_tier(tier)
            .iter()
            .map(|p| p.id)
            .collect::<Vec<_>>()
    };
    let free = ids(Tier::Free);
    assert!((1..=2).contains(&free.len()), "{free:?}");
    assert!(free.contains(&"create_task_from_email"));
    // each tier sees everything the tier below sees, and more
    let pro = ids(Tier::Pro);
    let power = ids(Tier::Power);
    let team = ids(Tier::Team);
    assert!(free.iter().all(|p| pro.contains(p)) && pro.len() > free.len());
    assert!(pro.iter().all(|p| power.contains(p)) && power.len() > pro.len());
    assert_eq!(team.len(), playbooks.all().len());
    for pb in playbooks.for_tier(Tier::Pro) {
        assert!(pb.min_tier == Tier::Free || pb.min_tier == Tier::Pro);
    }
}

#[test]
fn get_answers_not_found_and_tier_required() {
    let templates = PromptTemplateRegistry::with_builtin_templates();
    let playbooks = Playbooks::builtin(&templates).unwrap();
    assert_eq!(
        playbooks.get("nope", Tier::Team).unwrap_err(),
        PlaybookError::NotFound
    );
    assert_eq!(
        playbooks
            .get("plan_project_checkpoints", Tier::Free)
            .unwrap_err(),
        PlaybookError::TierRequired { min: Tier::Power }
    );
    assert_eq!(
        playbooks.get("weekly_report", Tier::Free).unwrap_err(),
        PlaybookError::TierRequired { min: Tier::Pro }
    );
    let pb = playbooks.get("weekly_report", Tier::Pro).unwrap();
    assert_eq!(pb.plan.agent, "task_agent");
    let pb = playbooks.get("create_task_from_email", Tier::Free).unwrap();
    assert_eq!(pb.plan.steps.last().unwrap().action, "create_task");
}

#[test]
fn playbook_json_is_what_the_endpoint_serves() {
    let templates = PromptTemplateRegistry::with_builtin_templates();
    let playbooks = Playbooks::builtin(&templates).unwrap();
    let pb = playbooks
        .get("plan_project_checkpoints", Tier::Power)
        .unwrap();
    let v = serde_json::to_value(pb).unwrap();
    assert_eq!(v["id"], "plan_project_checkpoints");
    assert_eq!(v["min_tier"], "power");
    assert_eq!(v["plan"]["agent"], "checkpoint_agent");
    assert_eq!(v["plan"]["steps"][2]["action"], "llm");
    assert_eq!(
        v["plan"]["steps"][2]["prompt_template"],
        "project_checkpoints.propose"
    );
    assert_eq!(v["plan"]["steps"][2]["data_from_step"], 1);
    assert_eq!(v["plan"]["steps"][3]["variables"]["is_approved"], false);
}

#[test]
fn builder_reference_errors_through_the_public_api() {
    let t = PromptTemplateRegistry::with_builtin_templates();
    let missing = ExecutionPlanBuilder::new("task_agent")
        .add_data_step("create_task", 3)
        .build(&t);
    assert_eq!(missing, Err(PlanError::MissingStep { step: 0, from: 3 }));
    let selfref = ExecutionPlanBuilder::new("task_agent")
        .add_step("list_tasks", json!({}))
        .add_llm_step_from("task_agent.plan", json!({}), 1)
        .build(&t);
    assert_eq!(selfref, Err(PlanError::SelfReference { step: 1 }));
    let later = ExecutionPlanBuilder::new("task_agent")
        .add_llm_step_from("task_agent.plan", json!({}), 1)
        .add_step("list_tasks", json!({}))
        .build(&t);
    assert_eq!(later, Err(PlanError::LaterStep { step: 0, from: 1 }));
    let unknown = ExecutionPlanBuilder::new("task_agent")
        .add_llm_step("secret_sauce", json!({}))
        .build(&t);
    assert!(matches!(
        unknown,
        Err(PlanError::UnknownTemplate { step: 0, .. })
    ));
    // the registry a plan is checked against matters
    let empty = PromptTemplateRegistry::new();
    assert!(plan_for_agent("task_agent", "x", &empty).is_err());
    assert!(Playbooks::builtin(&empty).is_err());
}

#[test]
fn the_plan_cache_serves_agent_plans() {
    let t = PromptTemplateRegistry::with_builtin_templates();
    let cache = PlanCache::new();
    let a = cache
        .plan_for_agent("note_agent", "Write up the meeting", &t)
        .unwrap();
    let b = cache
        .plan_for_agent("note_agent", "write up  the meeting", &t)
        .unwrap();
    assert_eq!(cache.len(), 1);
    assert_eq!(a.steps[0], b.steps[0]);
    assert_eq!(a.steps[1].prompt_template, b.steps[1].prompt_template);
}
