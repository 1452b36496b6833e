//! OAuth: the consent URL, the callback's checks of the sealed state, the exchange
//! (PKCE verified by the in-test provider), refresh, and `invalid_grant` pausing agents.

use adiuva_core::Error;
use adiuva_core::agents::AgentPatch;
use adiuva_core::domain::Tier;
use adiuva_core::ports::db::{AgentKind, AgentRepo, AgentStatus, UserRepo};
use adiuva_core::ports::providers::ProviderError;
use adiuva_core::seal::{Keyring, Purpose};

use super::support::{Env, cloud, state_of, teams_filters};

fn bad_request(e: Error) -> &'static str {
    match e {
        Error::BadRequest { code, .. } => code,
        other => panic!("expected a BadRequest, got {other:?}"),
    }
}

#[tokio::test]
async fn authorize_builds_a_pkce_consent_url_and_the_callback_seals_the_tokens() {
    let env = Env::new();
    let p = env.user(Tier::Free).await;
    let url = env
        .app
        .agents()
        .oauth_authorize(&p, "google")
        .await
        .unwrap();
    let req = env.google.last_authorize.lock().unwrap().clone().unwrap();
    assert_eq!(
        req.redirect_uri,
        "https://adiuva.example/api/v1/oauth/google/callback"
    );
    assert_eq!(
        req.scopes,
        ["https://www.googleapis.com/auth/gmail.readonly"]
    );
    assert_eq!(req.code_challenge.len(), 43, "SHA-256, base64url unpadded");
    assert_eq!(state_of(&url), req.state);

    let code = env.google.consent();
    let sealed = env
        .app
        .agents()
        .oauth_callback("google", &code, &req.state)
        .await
        .unwrap();
    // The provider checked S256(verifier) == challenge; the verifier is 64 URL-safe
    // characters and appears in neither the URL nor the state.
    let verifier = env.google.verifiers.lock().unwrap()[0].clone();
    assert_eq!(verifier.len(), 64);
    assert!(
        verifier
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );
    assert!(!url.contains(&verifier));
    assert!(!sealed.contains("access-google") && !sealed.contains("refresh-google"));
    // It is a token the configs accept for that provider.
    let v = env
        .app
        .agents()
        .create(
            &p,
            AgentKind::Cloud,
            cloud("Mail", "inbox_triage", "google", &sealed),
        )
        .await
        .unwrap();
    assert!(v.connected);

    // Two authorisations never share a state or a verifier.
    let url2 = env
        .app
        .agents()
        .oauth_authorize(&p, "google")
        .await
        .unwrap();
    assert_ne!(state_of(&url2), req.state);
}

#[tokio::test]
async fn a_tampered_expired_foreign_or_orphaned_state_is_invalid_state() {
    let env = Env::new();
    let p = env.user(Tier::Free).await;
    let agents = env.app.agents();

    // Tampered: one character changed.
    let (code, state) = env.consent(&p, "google").await;
    let mut bytes = state.clone().into_bytes();
    let last = bytes.len() - 1;
    bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    for bad in [tampered.as_str(), "", "k1.bm9wZQ", &"x".repeat(5000)] {
        let e = agents
            .oauth_callback("google", &code, bad)
            .await
            .unwrap_err();
        assert_eq!(bad_request(e), "invalid_state");
    }
    // Sealed by another server's keys, or as another purpose.
    let foreign = Keyring::random().seal(Purpose::OAuthState, b"{}");
    let e = agents
        .oauth_callback("google", &code, &foreign)
        .await
        .unwrap_err();
    assert_eq!(bad_request(e), "invalid_state");
    let token_as_state = env.connect(&p, "google").await;
    let e = agents
        .oauth_callback("google", &code, &token_as_state)
        .await
        .unwrap_err();
    assert_eq!(bad_request(e), "invalid_state");

    // Google's state at Microsoft's callback.
    let e = agents
        .oauth_callback("microsoft", &code, &state)
        .await
        .unwrap_err();
    assert_eq!(bad_request(e), "invalid_state");

    // Expired: 600 s to consent.
    env.clock.advance(601_000);
    let e = agents
        .oauth_callback("google", &code, &state)
        .await
        .unwrap_err();
    assert_eq!(bad_request(e), "invalid_state");
    assert!(
        env.google.verifiers.lock().unwrap().len() == 1,
        "no refused state reached the provider (only connect's exchange did)"
    );

    // Within its lifetime it works once the user is known; an account deleted meanwhile
    // cannot finish it.
    let q = env.user(Tier::Free).await;
    let (code, state) = env.consent(&q, "google").await;
    env.db.delete_user(q.user.id).await.unwrap();
    let e = agents
        .oauth_callback("google", &code, &state)
        .await
        .unwrap_err();
    assert_eq!(bad_request(e), "invalid_state");
}

#[tokio::test]
async fn unknown_and_unconfigured_providers() {
    let env = Env::with(super::support::Options {
        model: false,
        microsoft: false,
    });
    let p = env.user(Tier::Free).await;
    let agents = env.app.agents();
    let e = agents.oauth_authorize(&p, "yahoo").await.unwrap_err();
    assert!(matches!(e, Error::NotFound("provider")), "{e:?}");
    let e = agents.oauth_callback("yahoo", "c", "s").await.unwrap_err();
    assert!(matches!(e, Error::NotFound("provider")), "{e:?}");
    let e = agents.oauth_authorize(&p, "microsoft").await.unwrap_err();
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
    let e = agents
        .oauth_refresh(&p, "microsoft", "k.x")
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

#[tokio::test]
async fn provider_failures_at_the_exchange_map_without_their_words() {
    let env = Env::new();
    let p = env.user(Tier::Free).await;
    let agents = env.app.agents();

    // A code the provider does not know (or a PKCE mismatch) is invalid_grant.
    let (_, state) = env.consent(&p, "google").await;
    let e = agents
        .oauth_callback("google", "made-up", &state)
        .await
        .unwrap_err();
    assert_eq!(bad_request(e), "invalid_grant");

    let (code, state) = env.consent(&p, "google").await;
    env.google
        .fail_next(ProviderError::Unavailable("503 from upstream".into()));
    let e = agents
        .oauth_callback("google", &code, &state)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Unavailable {
                code: "oauth_provider_unavailable",
                ..
            }
        ),
        "{e:?}"
    );

    let (code, state) = env.consent(&p, "google").await;
    env.google.fail_next(ProviderError::Protocol(
        "body was {\"access_token\":\"leaked-secret-xyz\"}".into(),
    ));
    let e = agents
        .oauth_callback("google", &code, &state)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::BadGateway {
                code: "oauth_provider_error",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!e.to_string().contains("leaked-secret-xyz"), "{e}");
    assert!(
        !format!("{e:?}").contains(&code),
        "the code is not in the error"
    );
}

#[tokio::test]
async fn refresh_saves_the_new_set_into_the_configs_that_held_the_old_one() {
    let env = Env::new();
    let p = env.user(Tier::Pro).await;
    let agents = env.app.agents();
    let old = env.connect(&p, "microsoft").await;
    let other = env.connect(&p, "microsoft").await;
    let mut ids = Vec::new();
    for token in [&old, &old, &other] {
        let mut teams = cloud("Team", "teams_digest", "microsoft", token);
        teams.filters = teams_filters();
        ids.push(agents.create(&p, AgentKind::Cloud, teams).await.unwrap().id);
    }
    // Another user's config holding the same sealed text is not theirs to change.
    let q = env.user(Tier::Pro).await;
    let mut teams = cloud("Team", "teams_digest", "microsoft", &old);
    teams.filters = teams_filters();
    let qs = agents.create(&q, AgentKind::Cloud, teams).await.unwrap().id;

    env.clock.advance(1000);
    let fresh = agents.oauth_refresh(&p, "microsoft", &old).await.unwrap();
    assert_ne!(fresh, old);
    // Microsoft rotated the refresh token: the refresh used the old one.
    assert_eq!(
        env.microsoft.refreshed_with.lock().unwrap()[0].as_deref(),
        Some("refresh-microsoft-1")
    );
    let token_of = |user, id| {
        let db = env.db.clone();
        async move {
            db.agent(user, id)
                .await
                .unwrap()
                .unwrap()
                .oauth_token_sealed
                .unwrap()
        }
    };
    assert_eq!(token_of(p.user.id, ids[0]).await, fresh);
    assert_eq!(token_of(p.user.id, ids[1]).await, fresh);
    assert_eq!(token_of(p.user.id, ids[2]).await, other);
    assert_eq!(token_of(q.user.id, qs).await, old);

    // Refreshing the fresh one uses the rotated refresh token.
    agents.oauth_refresh(&p, "microsoft", &fresh).await.unwrap();
    assert_eq!(
        env.microsoft.refreshed_with.lock().unwrap()[1].as_deref(),
        Some("refresh-microsoft-3")
    );
}

#[tokio::test]
async fn a_refresh_without_a_new_refresh_token_keeps_the_old_one() {
    let env = Env::new();
    let p = env.user(Tier::Free).await;
    let agents = env.app.agents();
    let first = env.connect(&p, "google").await;
    let second = agents.oauth_refresh(&p, "google", &first).await.unwrap();
    agents.oauth_refresh(&p, "google", &second).await.unwrap();
    let seen = env.google.refreshed_with.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            Some("refresh-google-1".to_owned()),
            Some("refresh-google-1".to_owned())
        ]
    );
}

#[tokio::test]
async fn invalid_grant_pauses_the_agents_that_held_the_token_until_a_new_one() {
    let env = Env::new();
    let p = env.user(Tier::Pro).await;
    let agents = env.app.agents();
    let dead = env.connect(&p, "google").await;
    let alive = env.connect(&p, "google").await;
    let a = agents
        .create(
            &p,
            AgentKind::Cloud,
            cloud("a", "inbox_triage", "google", &dead),
        )
        .await
        .unwrap();
    let b = agents
        .create(
            &p,
            AgentKind::Cloud,
            cloud("b", "inbox_triage", "google", &alive),
        )
        .await
        .unwrap();
    assert!(a.next_run_at.is_some());

    env.google
        .fail_next(ProviderError::InvalidGrant("Token has been revoked".into()));
    let e = agents.oauth_refresh(&p, "google", &dead).await.unwrap_err();
    assert_eq!(bad_request(e), "invalid_grant");
    let list = agents.list(&p, AgentKind::Cloud).await.unwrap();
    let a1 = list.iter().find(|v| v.id == a.id).unwrap();
    let b1 = list.iter().find(|v| v.id == b.id).unwrap();
    assert_eq!(
        (a1.status, a1.next_run_at),
        (AgentStatus::NeedsReauth, None)
    );
    assert_eq!(b1.status, AgentStatus::Active);
    assert!(b1.next_run_at.is_some());

    // An edit that is not a new token keeps it paused and unscheduled.
    let renamed = agents
        .update(
            &p,
            AgentKind::Cloud,
            a.id,
            AgentPatch {
                name: Some("renamed".into()),
                ..AgentPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (renamed.status, renamed.next_run_at),
        (AgentStatus::NeedsReauth, None)
    );
    // Connecting again: a new token makes it active and scheduled.
    let new = env.connect(&p, "google").await;
    let back = agents
        .update(
            &p,
            AgentKind::Cloud,
            a.id,
            AgentPatch {
                oauth_token_encrypted: Some(new.clone()),
                ..AgentPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(back.status, AgentStatus::Active);
    assert!(back.next_run_at.is_some());
    // A token of the other provider is refused for it.
    let ms = env.connect(&p, "microsoft").await;
    let e = agents
        .update(
            &p,
            AgentKind::Cloud,
            a.id,
            AgentPatch {
                oauth_token_encrypted: Some(ms),
                ..AgentPatch::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Validation { ref field, .. } if field == "oauth_token_encrypted"));
}

#[tokio::test]
async fn refresh_refuses_foreign_or_garbage_tokens_and_reports_outages() {
    let env = Env::new();
    let p = env.user(Tier::Free).await;
    let agents = env.app.agents();
    let google = env.connect(&p, "google").await;
    for (provider, token) in [
        ("microsoft", google.as_str()),
        ("google", "k1.garbage"),
        ("google", &"x".repeat(20_000)),
    ] {
        let e = agents.oauth_refresh(&p, provider, token).await.unwrap_err();
        assert!(
            matches!(e, Error::Validation { ref field, .. } if field == "encrypted_token"),
            "{e:?}"
        );
    }
    env.google.fail_next(ProviderError::RateLimited);
    let e = agents
        .oauth_refresh(&p, "google", &google)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Unavailable {
                code: "oauth_provider_unavailable",
                ..
            }
        ),
        "{e:?}"
    );
}
