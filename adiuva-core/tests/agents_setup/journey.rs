//! The setup journey over a `ScriptedModel`: questions, a `finish_setup` proposal
//! checked with the configs rules (once back to the model, then defaults), the cap of
//! six user messages, expiry, and isolation between users' sessions.

use adiuva_core::Error;
use adiuva_core::domain::Tier;
use adiuva_core::ports::db::{AgentKind, AgentRepo};
use adiuva_core::ports::llm::{CompletionRequest, Role};
use adiuva_core::testing::llm::{calls, text};
use serde_json::json;
use uuid::Uuid;

use super::support::{Env, T0};

fn all_text(req: &CompletionRequest) -> String {
    req.messages
        .iter()
        .map(|m| {
            let calls: Vec<_> = m.tool_calls.iter().map(|c| c.arguments.clone()).collect();
            format!("{} {}", m.content, calls.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_question_then_a_valid_proposal_gives_a_ready_config() {
    let env = Env::new();
    let p = env.user(Tier::Free).await;
    let agents = env.app.agents();
    env.model
        .push(text("When would you like your weekly review?"));
    let first = agents
        .journey_start(&p, "weekly_review", vec!["tasks".into(), "projects".into()])
        .await
        .unwrap();
    assert!(!first.done && first.config.is_none() && first.prompt_template.is_none());
    assert_eq!(first.message, "When would you like your weekly review?");

    // The model was given the server prompt (type, filters, templates, data types) and
    // the finish_setup tool.
    let req = &env.model.requests()[0];
    assert_eq!(req.messages[0].role, Role::System);
    let system = &req.messages[0].content;
    for needle in [
        "weekly_review",
        "project",
        "weekly_review.brief",
        "tasks, projects",
    ] {
        assert!(system.contains(needle), "{needle} in {system}");
    }
    assert_eq!(req.tools.len(), 1);
    assert_eq!(req.tools[0].name, "finish_setup");
    assert_eq!(
        req.tools[0].parameters["properties"]["prompt_template"]["enum"],
        json!(["weekly_review.default", "weekly_review.brief"])
    );

    env.model.push(calls(&[(
        "finish_setup",
        r#"{"name":"Friday wrap-up","schedule":"0 15 * * 5","timezone":"Europe/Berlin","filters":{"project":"Garden"},"prompt_template":"weekly_review.brief"}"#,
    )]));
    let done = agents
        .journey_message(
            &p,
            first.session_id,
            "Fridays at three, Berlin time, only the Garden project",
        )
        .await
        .unwrap();
    assert_eq!(done.session_id, first.session_id);
    assert!(done.done);
    assert_eq!(done.prompt_template.as_deref(), Some("weekly_review.brief"));
    let config = done.config.clone().unwrap();
    assert_eq!(config.name, "Friday wrap-up");
    assert_eq!(config.agent_type, "weekly_review");
    assert_eq!(config.schedule.as_deref(), Some("0 15 * * 5"));
    assert_eq!(config.timezone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(config.filters.get("project"), Some(&json!("Garden")));
    assert_eq!(config.provider, None);
    assert!(!done.message.is_empty());
    // The second request carried the whole conversation.
    let second = all_text(&env.model.requests()[1]);
    assert!(second.contains("When would you like your weekly review?"));
    assert!(second.contains("only the Garden project"));

    // The config is ready to POST.
    let v = agents.create(&p, AgentKind::Local, config).await.unwrap();
    assert_eq!(v.prompt_template, "weekly_review.brief");

    // A done session takes no more messages.
    let e = agents
        .journey_message(&p, first.session_id, "one more thing")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::BadRequest {
                code: "journey_done",
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_cloud_type_names_its_provider() {
    let env = Env::new();
    let p = env.user(Tier::Free).await;
    let agents = env.app.agents();
    env.model.push(calls(&[(
        "finish_setup",
        r#"{"name":"Outlook triage","schedule":"0 7 * * 1-5","timezone":"UTC","provider":"microsoft","filters":{"folder":"inbox"}}"#,
    )]));
    let r = agents
        .journey_start(&p, "inbox_triage", vec![])
        .await
        .unwrap();
    assert!(r.done);
    let config = r.config.unwrap();
    assert_eq!(config.provider.as_deref(), Some("microsoft"));
    assert_eq!(
        config.prompt_template.as_deref(),
        Some("inbox_triage.default")
    );
    let tool = &env.model.requests()[0].tools[0];
    assert_eq!(
        tool.parameters["properties"]["provider"]["enum"],
        json!(["google", "microsoft"])
    );

    // Teams has one provider: it is named without asking.
    env.model.push(calls(&[(
        "finish_setup",
        r#"{"name":"Standup digest","schedule":"0 17 * * 1-5","timezone":"UTC","filters":{"team_id":"t1","channel_id":"c1"}}"#,
    )]));
    let r = agents
        .journey_start(&p, "teams_digest", vec![])
        .await
        .unwrap();
    assert_eq!(r.config.unwrap().provider.as_deref(), Some("microsoft"));
}

#[tokio::test]
async fn a_bad_proposal_goes_back_to_the_model_once() {
    let env = Env::new();
    let p = env.user(Tier::Free).await;
    let agents = env.app.agents();
    env.model.push(calls(&[(
        "finish_setup",
        r#"{"name":"Files","schedule":"every morning","timezone":"UTC"}"#,
    )]));
    env.model.push(calls(&[(
        "finish_setup",
        r#"{"name":"Files","schedule":"0 9 * * *","timezone":"UTC"}"#,
    )]));
    let r = agents
        .journey_start(&p, "local_files", vec![])
        .await
        .unwrap();
    assert!(r.done);
    assert_eq!(r.config.unwrap().schedule.as_deref(), Some("0 9 * * *"));
    let reqs = env.model.requests();
    assert_eq!(reqs.len(), 2);
    let retry = reqs[1].messages.last().unwrap();
    assert_eq!(retry.role, Role::Tool);
    assert!(retry.content.contains("schedule"), "{}", retry.content);

    // Wrong twice: the valid fields stay, the defaults fill in the rest.
    env.model.push(calls(&[(
        "finish_setup",
        r#"{"name":"Checkpoints","schedule":"whenever","timezone":"Mars/Base","prompt_template":"nope"}"#,
    )]));
    env.model.push(calls(&[("finish_setup", r#"not json"#)]));
    let r = agents
        .journey_start(&p, "checkpoint_proposals", vec![])
        .await
        .unwrap();
    assert!(r.done);
    let c = r.config.unwrap();
    assert_eq!(c.name, "Checkpoints");
    assert_eq!(c.schedule.as_deref(), Some("0 10 * * 1"));
    assert_eq!(c.timezone.as_deref(), Some("UTC"));
    assert_eq!(
        c.prompt_template.as_deref(),
        Some("checkpoint_proposals.default")
    );
    assert_eq!(env.model.requests().len(), 4, "one retry only");
    agents.create(&p, AgentKind::Local, c).await.unwrap();
}

#[tokio::test]
async fn the_sixth_user_message_ends_with_the_defaults() {
    let env = Env::new();
    let p = env.user(Tier::Free).await;
    let agents = env.app.agents();
    for _ in 0..7 {
        env.model.push(text("And what else?"));
    }
    let r = agents
        .journey_start(&p, "local_files", vec![])
        .await
        .unwrap();
    for n in 1..=6 {
        let said = if n == 2 {
            "I am in America/Chicago.".to_owned()
        } else {
            format!("answer {n}")
        };
        let step = agents
            .journey_message(&p, r.session_id, &said)
            .await
            .unwrap();
        assert_eq!(step.done, n == 6, "message {n}");
        if n == 6 {
            let c = step.config.unwrap();
            assert_eq!(c.schedule.as_deref(), Some("0 9 * * *"));
            assert_eq!(c.name, "Local files");
            assert_eq!(c.prompt_template.as_deref(), Some("local_files.default"));
            assert_eq!(
                c.timezone.as_deref(),
                Some("America/Chicago"),
                "the zone they said"
            );
        }
    }
    let e = agents
        .journey_message(&p, r.session_id, "7")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::BadRequest {
                code: "journey_done",
                ..
            }
        ),
        "{e:?}"
    );
    let reqs = env.model.requests();
    assert_eq!(reqs.len(), 7, "start + six messages");
    let zone = "The user's time zone: America/Chicago";
    assert!(!reqs[1].messages[0].content.contains(zone));
    assert!(reqs[2].messages[0].content.contains(zone), "told once said");
}

#[tokio::test]
async fn sessions_expire_after_their_last_message() {
    let env = Env::new();
    let p = env.user(Tier::Free).await;
    let agents = env.app.agents();
    env.model.push(text("q1"));
    env.model.push(text("q2"));
    env.model.push(text("q3"));
    let r = agents
        .journey_start(&p, "weekly_review", vec![])
        .await
        .unwrap();
    // 30 minutes of quiet are allowed; a message starts them again.
    env.clock.advance(29 * 60_000);
    agents.journey_message(&p, r.session_id, "a").await.unwrap();
    env.clock.advance(29 * 60_000);
    agents.journey_message(&p, r.session_id, "b").await.unwrap();
    env.clock.advance(31 * 60_000);
    let e = agents
        .journey_message(&p, r.session_id, "c")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound("journey")), "{e:?}");
    let e = agents
        .journey_message(&p, Uuid::new_v4(), "c")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound("journey")), "{e:?}");
}

#[tokio::test]
async fn one_users_session_never_reaches_another_users_model_input() {
    let env = Env::new();
    let a = env.user(Tier::Free).await;
    let b = env.user(Tier::Free).await;
    let agents = env.app.agents();
    env.model.push(text("Which project?"));
    env.model.push(text("Noted. When?"));
    let sa = agents
        .journey_start(&a, "weekly_review", vec!["alpha-datatype".into()])
        .await
        .unwrap();
    agents
        .journey_message(&a, sa.session_id, "the ALPHA-SECRET-123 project")
        .await
        .unwrap();
    // At rest the conversation is sealed.
    let row = env
        .db
        .journey(a.user.id, sa.session_id, T0)
        .await
        .unwrap()
        .unwrap();
    assert!(!row.state_sealed.contains("ALPHA-SECRET-123"));
    assert!(!row.state_sealed.contains("Which project"));

    // B cannot touch A's session.
    let e = agents
        .journey_message(&b, sa.session_id, "hi")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound("journey")), "{e:?}");

    env.model.push(text("Which project for you?"));
    env.model.push(text("When?"));
    let sb = agents
        .journey_start(&b, "weekly_review", vec![])
        .await
        .unwrap();
    agents
        .journey_message(&b, sb.session_id, "bravo")
        .await
        .unwrap();
    let reqs = env.model.requests();
    assert_eq!(reqs.len(), 4);
    for req in &reqs[2..] {
        let all = all_text(req);
        for a_only in [
            "ALPHA-SECRET-123",
            "alpha-datatype",
            "Which project?",
            "Noted. When?",
        ] {
            assert!(
                !all.contains(a_only),
                "{a_only} leaked into B's model input"
            );
        }
    }
    assert!(all_text(&reqs[3]).contains("bravo"));
}

#[tokio::test]
async fn the_reply_passes_the_sanitizer() {
    let env = Env::new();
    let p = env.user(Tier::Free).await;
    // The model echoes its instructions (a sentence of the journey's server prompt).
    let leak = "Sure! Ask at most one short question at a time, only about what you cannot \
                choose sensibly yourself. When should it run?";
    env.model.push(text(leak));
    let r = env
        .app
        .agents()
        .journey_start(&p, "weekly_review", vec![])
        .await
        .unwrap();
    assert!(
        !r.message.contains("choose sensibly yourself"),
        "{}",
        r.message
    );
    assert!(
        r.message.starts_with("Sure!"),
        "the rest stays: {}",
        r.message
    );
}

#[tokio::test]
async fn bad_input_and_a_missing_model() {
    let env = Env::new();
    let p = env.user(Tier::Free).await;
    let agents = env.app.agents();
    let field = |e: Error| match e {
        Error::Validation { field, .. } => field.to_string(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        field(
            agents
                .journey_start(&p, "mystery", vec![])
                .await
                .unwrap_err()
        ),
        "agent_type"
    );
    let many: Vec<String> = (0..11).map(|i| format!("t{i}")).collect();
    assert_eq!(
        field(
            agents
                .journey_start(&p, "local_files", many)
                .await
                .unwrap_err()
        ),
        "data_types"
    );
    let long = vec!["x".repeat(41)];
    assert_eq!(
        field(
            agents
                .journey_start(&p, "local_files", long)
                .await
                .unwrap_err()
        ),
        "data_types"
    );
    env.model.push(text("q"));
    let r = agents
        .journey_start(&p, "local_files", vec![])
        .await
        .unwrap();
    let e = agents
        .journey_message(&p, r.session_id, &"m".repeat(2001))
        .await
        .unwrap_err();
    assert_eq!(field(e), "message");
    assert_eq!(
        env.model.requests().len(),
        1,
        "refused input never reached the model"
    );

    // The model failing is the chat's 503, and the session is unchanged.
    env.model.push_error("down");
    let e = agents
        .journey_message(&p, r.session_id, "hello")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Unavailable {
                code: "llm_unavailable",
                ..
            }
        ),
        "{e:?}"
    );
    env.model.push(text("q2"));
    agents
        .journey_message(&p, r.session_id, "again")
        .await
        .unwrap();
    let last = all_text(env.model.requests().last().unwrap());
    assert!(last.contains("again") && !last.contains("hello"), "{last}");

    let none = Env::with(super::support::Options {
        model: false,
        microsoft: true,
    });
    let q = none.user(Tier::Free).await;
    let e = none
        .app
        .agents()
        .journey_start(&q, "local_files", vec![])
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Unavailable {
                code: "llm_unavailable",
                ..
            }
        ),
        "{e:?}"
    );
}
