//! Config CRUD: defaults, `next_run_at`, every 422, tier limits, ownership.

use adiuva_core::Error;
use adiuva_core::agents::{AgentInput, AgentPatch, Schedule, catalog, catalog_item};
use adiuva_core::domain::Tier;
use adiuva_core::ports::db::{AgentKind, AgentRepo, AgentStatus};
use serde_json::{Value, json};
use uuid::Uuid;

use super::support::{Env, T0, cloud, local, map, teams_filters};

fn field_of(e: &Error) -> String {
    match e {
        Error::Validation { field, .. } => field.to_string(),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn the_catalog_has_the_five_types_with_their_sources() {
    let ids: Vec<_> = catalog().iter().map(|c| c.agent_type).collect();
    for id in [
        "inbox_triage",
        "teams_digest",
        "weekly_review",
        "local_files",
        "checkpoint_proposals",
    ] {
        assert!(ids.contains(&id), "{id}");
    }
    let inbox = catalog_item("inbox_triage").unwrap();
    assert_eq!(inbox.kind, AgentKind::Cloud);
    assert_eq!(inbox.reads, ["gmail", "outlook"]);
    assert_eq!(inbox.default_schedule, "0 8 * * 1-5");
    let teams = catalog_item("teams_digest").unwrap();
    assert_eq!(teams.produces, ["digest_note"]);
    assert_eq!(
        catalog_item("weekly_review").unwrap().kind,
        AgentKind::Local
    );
    assert!(catalog_item("nope").is_none());
}

#[tokio::test]
async fn a_local_config_takes_the_types_defaults_and_is_scheduled() {
    let env = Env::new();
    let p = env.user(Tier::Free).await;
    let v = env
        .app
        .agents()
        .create(
            &p,
            AgentKind::Local,
            local("Friday review", "weekly_review"),
        )
        .await
        .unwrap();
    assert_eq!(v.schedule.as_deref(), Some("0 16 * * 5"));
    assert_eq!(v.timezone, "UTC");
    assert!(v.enabled);
    assert_eq!(v.prompt_template, "weekly_review.default");
    assert_eq!(v.status, AgentStatus::Active);
    assert!(!v.connected);
    assert_eq!(v.provider, None);
    let expected = Schedule::parse("0 16 * * 5", "UTC").unwrap().next_after(T0);
    assert_eq!(v.next_run_at, expected);
    assert_eq!(
        v.next_run_at,
        Some(T0 + 8 * 3_600_000),
        "16:00 the same Friday"
    );

    let list = env.app.agents().list(&p, AgentKind::Local).await.unwrap();
    assert_eq!(list, vec![v.clone()]);
    assert!(
        env.app
            .agents()
            .list(&p, AgentKind::Cloud)
            .await
            .unwrap()
            .is_empty()
    );

    // An empty schedule: manual only, never scheduled.
    let mut manual = local("On demand", "local_files");
    manual.schedule = Some(String::new());
    manual.timezone = Some("Europe/Berlin".into());
    manual.prompt_template = Some("local_files.todos_only".into());
    manual.output = map(&[("device_id", json!("laptop-1"))]);
    manual.filters = map(&[("pattern", json!("*.md"))]);
    let m = env
        .app
        .agents()
        .create(&p, AgentKind::Local, manual)
        .await
        .unwrap();
    assert_eq!(m.schedule, None);
    assert_eq!(m.next_run_at, None);
    assert_eq!(m.timezone, "Europe/Berlin");
    assert_eq!(m.prompt_template, "local_files.todos_only");
    assert_eq!(m.output.get("device_id"), Some(&json!("laptop-1")));
}

#[tokio::test]
async fn every_bad_field_is_a_422_on_that_field_and_nothing_is_stored() {
    let env = Env::new();
    let p = env.user(Tier::Power).await;
    let google = env.connect(&p, "google").await;
    let microsoft = env.connect(&p, "microsoft").await;
    let agents = env.app.agents();

    let with = |f: &dyn Fn(&mut AgentInput)| {
        let mut i = local("ok", "weekly_review");
        f(&mut i);
        i
    };
    let cloud_with = |f: &dyn Fn(&mut AgentInput)| {
        let mut i = cloud("ok", "inbox_triage", "google", &google);
        f(&mut i);
        i
    };
    let long_value = "x".repeat(501);
    let cases: Vec<(&str, AgentKind, AgentInput)> = vec![
        ("name", AgentKind::Local, with(&|i| i.name = "   ".into())),
        (
            "name",
            AgentKind::Local,
            with(&|i| i.name = "n".repeat(101)),
        ),
        (
            "name",
            AgentKind::Local,
            with(&|i| i.name = "bad\u{7}name".into()),
        ),
        (
            "agent_type",
            AgentKind::Local,
            with(&|i| i.agent_type = "mystery".into()),
        ),
        (
            "agent_type",
            AgentKind::Local,
            with(&|i| i.agent_type = "inbox_triage".into()),
        ),
        (
            "agent_type",
            AgentKind::Cloud,
            with(&|i| i.agent_type = "weekly_review".into()),
        ),
        (
            "schedule",
            AgentKind::Local,
            with(&|i| i.schedule = Some("every day".into())),
        ),
        (
            "schedule",
            AgentKind::Local,
            with(&|i| i.schedule = Some("0 0 31 2 *".into())),
        ),
        (
            "timezone",
            AgentKind::Local,
            with(&|i| i.timezone = Some("Mars/Olympus".into())),
        ),
        (
            "filters",
            AgentKind::Local,
            with(&|i| i.filters = map(&[("query", json!("x"))])),
        ),
        (
            "filters.project",
            AgentKind::Local,
            with(&|i| i.filters = map(&[("project", json!(7))])),
        ),
        (
            "filters.project",
            AgentKind::Local,
            with(&|i| i.filters = map(&[("project", json!(long_value.clone()))])),
        ),
        (
            "filters",
            AgentKind::Local,
            with(&|i| {
                // Nine 500-character values: each passes, together over 4 KiB.
                i.agent_type = "local_files".into();
                i.filters = map(&[
                    ("folder", json!("f".repeat(500))),
                    ("pattern", json!("p".repeat(500))),
                ]);
                for k in 0..7 {
                    i.filters.insert(format!("k{k}"), json!("v".repeat(500)));
                }
            }),
        ),
        (
            "output",
            AgentKind::Local,
            with(&|i| i.output = map(&[("webhook", json!("https://x"))])),
        ),
        (
            "output.device_id",
            AgentKind::Local,
            with(&|i| i.output = map(&[("device_id", json!("d".repeat(129)))])),
        ),
        (
            "output.device_id",
            AgentKind::Local,
            with(&|i| i.output = map(&[("device_id", json!(5))])),
        ),
        (
            "output",
            AgentKind::Local,
            with(&|i| i.output = map(&[("device_id", json!("d".repeat(2000)))])),
        ),
        (
            "prompt_template",
            AgentKind::Local,
            with(&|i| i.prompt_template = Some("inbox_triage.default".into())),
        ),
        (
            "provider",
            AgentKind::Local,
            with(&|i| i.provider = Some("google".into())),
        ),
        (
            "oauth_token_encrypted",
            AgentKind::Local,
            with(&|i| i.oauth_token_encrypted = Some(google.clone())),
        ),
        (
            "provider",
            AgentKind::Cloud,
            cloud_with(&|i| i.provider = None),
        ),
        (
            "provider",
            AgentKind::Cloud,
            cloud_with(&|i| i.provider = Some("yahoo".into())),
        ),
        (
            "provider",
            AgentKind::Cloud,
            cloud_with(&|i| {
                i.agent_type = "teams_digest".into();
                i.filters = teams_filters();
            }),
        ),
        (
            "oauth_token_encrypted",
            AgentKind::Cloud,
            cloud_with(&|i| i.oauth_token_encrypted = None),
        ),
        (
            "oauth_token_encrypted",
            AgentKind::Cloud,
            cloud_with(&|i| i.oauth_token_encrypted = Some("k1.garbage".into())),
        ),
        (
            "oauth_token_encrypted",
            AgentKind::Cloud,
            cloud_with(&|i| i.oauth_token_encrypted = Some(microsoft.clone())),
        ),
        (
            "filters.filter",
            AgentKind::Cloud,
            cloud_with(&|i| i.filters = map(&[("filter", json!("isRead eq false"))])),
        ),
        (
            "filters.query",
            AgentKind::Cloud,
            cloud_with(&|i| {
                i.provider = Some("microsoft".into());
                i.oauth_token_encrypted = Some(microsoft.clone());
                i.filters = map(&[("query", json!("is:unread"))]);
            }),
        ),
        (
            "filters.team_id",
            AgentKind::Cloud,
            cloud_with(&|i| {
                i.agent_type = "teams_digest".into();
                i.provider = Some("microsoft".into());
                i.oauth_token_encrypted = Some(microsoft.clone());
                i.filters = map(&[("channel_id", json!("c"))]);
            }),
        ),
        (
            "filters.channel_id",
            AgentKind::Cloud,
            cloud_with(&|i| {
                i.agent_type = "teams_digest".into();
                i.provider = Some("microsoft".into());
                i.oauth_token_encrypted = Some(microsoft.clone());
                i.filters = map(&[("team_id", json!("t")), ("channel_id", json!(" "))]);
            }),
        ),
    ];
    for (field, kind, input) in cases {
        let e = agents
            .create(&p, kind, input.clone())
            .await
            .expect_err(&format!("{field}: {input:?} must be refused"));
        assert_eq!(field_of(&e), field, "{input:?}: {e}");
    }
    assert!(agents.list(&p, AgentKind::Local).await.unwrap().is_empty());
    assert!(agents.list(&p, AgentKind::Cloud).await.unwrap().is_empty());

    // The fixed versions pass (the table is not refusing everything).
    let mut teams = cloud("Team", "teams_digest", "microsoft", &microsoft);
    teams.filters = teams_filters();
    let v = agents.create(&p, AgentKind::Cloud, teams).await.unwrap();
    assert!(v.connected);
    assert_eq!(v.provider.as_deref(), Some("microsoft"));
    let mut gmail = cloud("Mail", "inbox_triage", "google", &google);
    gmail.filters = map(&[("query", json!("is:unread"))]);
    agents.create(&p, AgentKind::Cloud, gmail).await.unwrap();
}

#[tokio::test]
async fn a_cloud_agent_of_an_unconfigured_provider_is_503() {
    let env = Env::with(super::support::Options {
        model: false,
        microsoft: false,
    });
    let p = env.user(Tier::Pro).await;
    let mut teams = cloud("Team", "teams_digest", "microsoft", "k.x");
    teams.filters = teams_filters();
    let e = env
        .app
        .agents()
        .create(&p, AgentKind::Cloud, teams)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Unavailable {
                code: "oauth_not_configured",
                ..
            }
        ),
        "{e:?}"
    );
}

fn quota(e: Error) -> String {
    match e {
        Error::Forbidden {
            code: "quota_exceeded",
            detail,
        } => detail,
        other => panic!("expected quota_exceeded, got {other:?}"),
    }
}

#[tokio::test]
async fn free_tier_limits_configured_enabled_and_providers() {
    let env = Env::new();
    let p = env.user(Tier::Free).await;
    let agents = env.app.agents();
    let a = agents
        .create(&p, AgentKind::Local, local("a", "weekly_review"))
        .await
        .unwrap();
    agents
        .create(&p, AgentKind::Local, local("b", "local_files"))
        .await
        .unwrap();
    // A third enabled one breaks batch_active (2).
    let e = agents
        .create(&p, AgentKind::Local, local("c", "local_files"))
        .await
        .unwrap_err();
    let detail = quota(e);
    assert!(
        detail.contains("free") && detail.contains("2 enabled agents"),
        "{detail}"
    );
    // Disabled, it fits (3 configured).
    let mut c = local("c", "checkpoint_proposals");
    c.enabled = Some(false);
    let c = agents.create(&p, AgentKind::Local, c).await.unwrap();
    assert_eq!(c.next_run_at, None, "a disabled agent is not scheduled");
    // A fourth breaks agents (3), even disabled.
    let mut d = local("d", "weekly_review");
    d.enabled = Some(false);
    let detail = quota(agents.create(&p, AgentKind::Local, d).await.unwrap_err());
    assert!(
        detail.contains("free") && detail.contains("3 configured agents"),
        "{detail}"
    );
    // Enabling the third through an update breaks batch_active; nothing changes.
    let patch = AgentPatch {
        enabled: Some(true),
        ..AgentPatch::default()
    };
    quota(
        agents
            .update(&p, AgentKind::Local, c.id, patch.clone())
            .await
            .unwrap_err(),
    );
    let stored = env.db.agent(p.user.id, c.id).await.unwrap().unwrap();
    assert!(!stored.enabled);
    // After disabling another, it can be enabled.
    let off = AgentPatch {
        enabled: Some(false),
        ..AgentPatch::default()
    };
    let a2 = agents
        .update(&p, AgentKind::Local, a.id, off)
        .await
        .unwrap();
    assert_eq!(a2.next_run_at, None);
    let c2 = agents
        .update(&p, AgentKind::Local, c.id, patch)
        .await
        .unwrap();
    assert!(c2.enabled && c2.next_run_at.is_some());

    // One provider on free.
    let q = env.user(Tier::Free).await;
    let google = env.connect(&q, "google").await;
    let microsoft = env.connect(&q, "microsoft").await;
    agents
        .create(
            &q,
            AgentKind::Cloud,
            cloud("g", "inbox_triage", "google", &google),
        )
        .await
        .unwrap();
    let mut teams = cloud("t", "teams_digest", "microsoft", &microsoft);
    teams.filters = teams_filters();
    teams.enabled = Some(false);
    let detail = quota(
        agents
            .create(&q, AgentKind::Cloud, teams)
            .await
            .unwrap_err(),
    );
    assert!(detail.contains("1 connected providers"), "{detail}");
}

#[tokio::test]
async fn pro_tier_has_no_configured_limit() {
    let env = Env::new();
    let p = env.user(Tier::Pro).await;
    for n in 0..6 {
        let mut i = local(&format!("agent {n}"), "local_files");
        i.enabled = Some(false);
        env.app
            .agents()
            .create(&p, AgentKind::Local, i)
            .await
            .unwrap();
    }
    assert_eq!(
        env.app
            .agents()
            .list(&p, AgentKind::Local)
            .await
            .unwrap()
            .len(),
        6
    );
}

#[tokio::test]
async fn updates_revalidate_and_recompute_the_next_run() {
    let env = Env::new();
    let p = env.user(Tier::Free).await;
    let agents = env.app.agents();
    let v = agents
        .create(&p, AgentKind::Local, local("review", "weekly_review"))
        .await
        .unwrap();
    env.clock.advance(60_000);
    let patch = AgentPatch {
        name: Some("  Morning review ".into()),
        schedule: Some("30 7 * * *".into()),
        timezone: Some("America/New_York".into()),
        filters: Some(map(&[("project", json!("Garden"))])),
        prompt_template: Some("weekly_review.brief".into()),
        ..AgentPatch::default()
    };
    let u = agents
        .update(&p, AgentKind::Local, v.id, patch)
        .await
        .unwrap();
    assert_eq!(u.name, "Morning review");
    assert_eq!(u.timezone, "America/New_York");
    assert_eq!(u.prompt_template, "weekly_review.brief");
    assert_eq!(u.updated_at, T0 + 60_000);
    assert_eq!(u.created_at, T0);
    // 07:30 in New York (EST, UTC-5) is 12:30 UTC; at 08:01 UTC that is today's.
    assert_eq!(u.next_run_at, Some(T0 + 4 * 3_600_000 + 30 * 60_000));
    let stored = env.db.agent(p.user.id, v.id).await.unwrap().unwrap();
    assert_eq!(stored.next_run_at, u.next_run_at);

    // Manual only: no slot.
    let m = agents
        .update(
            &p,
            AgentKind::Local,
            v.id,
            AgentPatch {
                schedule: Some(String::new()),
                ..AgentPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((m.schedule, m.next_run_at), (None, None));

    // A bad patch changes nothing.
    for patch in [
        AgentPatch {
            timezone: Some("Nowhere/Else".into()),
            ..AgentPatch::default()
        },
        AgentPatch {
            filters: Some(map(&[("folder", Value::from("x"))])),
            ..AgentPatch::default()
        },
        AgentPatch {
            oauth_token_encrypted: Some("k.x".into()),
            ..AgentPatch::default()
        },
        AgentPatch {
            name: Some(String::new()),
            ..AgentPatch::default()
        },
    ] {
        let e = agents
            .update(&p, AgentKind::Local, v.id, patch)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Validation { .. }), "{e:?}");
    }
    let after = env.db.agent(p.user.id, v.id).await.unwrap().unwrap();
    assert_eq!(after.name, "Morning review");
}

#[tokio::test]
async fn another_users_or_the_other_kinds_ids_are_404() {
    let env = Env::new();
    let a = env.user(Tier::Free).await;
    let b = env.user(Tier::Free).await;
    let agents = env.app.agents();
    let v = agents
        .create(&a, AgentKind::Local, local("mine", "weekly_review"))
        .await
        .unwrap();
    let patch = AgentPatch {
        name: Some("stolen".into()),
        ..AgentPatch::default()
    };
    for (who, kind, id) in [
        (&b, AgentKind::Local, v.id),
        (&a, AgentKind::Cloud, v.id),
        (&a, AgentKind::Local, Uuid::new_v4()),
    ] {
        let e = agents
            .update(who, kind, id, patch.clone())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::NotFound("agent")), "{e:?}");
        let e = agents.delete(who, kind, id).await.unwrap_err();
        assert!(matches!(e, Error::NotFound("agent")), "{e:?}");
    }
    assert!(agents.list(&b, AgentKind::Local).await.unwrap().is_empty());
    assert_eq!(
        agents.list(&a, AgentKind::Local).await.unwrap()[0].name,
        "mine"
    );
    agents.delete(&a, AgentKind::Local, v.id).await.unwrap();
    assert!(agents.list(&a, AgentKind::Local).await.unwrap().is_empty());
}
