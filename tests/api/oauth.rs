//! `/oauth/{provider}/*` (issue 12): the consent URL, the callback, refresh, and cloud
//! agents made with the sealed token, against local servers speaking Google's and
//! Microsoft's wire formats (`adiuva_adapters::providers::fake`).

use adiuva_adapters::providers::fake::{FAKE_CLIENT_SECRET, FakeGoogle, FakeMicrosoft};
use adiuva_core::domain::Tier;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, assert_error, assert_unauthorized, json_body, log_text, send, spawn_app_with,
};

/// Which fakes the server is configured with.
#[derive(Default)]
pub struct Providers<'a> {
    pub google: Option<&'a FakeGoogle>,
    pub microsoft: Option<&'a FakeMicrosoft>,
    /// An OpenAI-compatible fake for the runs' and journeys' model.
    pub model_url: Option<String>,
    /// The scheduler's tick (default: the setting's default).
    pub scheduler_tick_secs: Option<u64>,
}

/// A server whose providers are these fakes.
pub async fn provider_app(p: Providers<'_>) -> TestApp {
    let google = p.google.map(|g| g.config());
    let microsoft = p.microsoft.map(|m| m.config());
    let model_url = p.model_url;
    let tick = p.scheduler_tick_secs;
    spawn_app_with(move |s| {
        if let Some(t) = tick {
            s.scheduler_tick_secs = t;
        }
        if let Some(g) = google {
            s.google_client_id = Some(g.client_id);
            s.google_client_secret = Some(g.client_secret);
            s.google_auth_url = g.auth_url;
            s.google_token_url = g.token_url;
            s.gmail_api_url = g.gmail_api_url;
        }
        if let Some(m) = microsoft {
            s.microsoft_client_id = Some(m.client_id);
            s.microsoft_client_secret = Some(m.client_secret);
            s.microsoft_authority_url = m.authority_url;
            s.ms_graph_url = m.graph_url;
        }
        if let Some(url) = model_url {
            s.openai_base_url = Some(url);
            s.openai_api_key = Some(adiuva_core::Secret::new(crate::chat::SERVER_KEY.into()));
        }
        s.oauth_redirect_base_url = "https://adiuva.example".into();
    })
    .await
}

/// `GET /oauth/{provider}/authorize` as `token`: the consent URL.
pub async fn authorize(app: &TestApp, provider: &str, token: &str) -> String {
    let resp = app
        .get_as(&format!("/oauth/{provider}/authorize"), token)
        .await;
    assert_eq!(resp.status(), 200, "authorize {provider}");
    let body: Value = json_body(resp).await;
    body["authorization_url"]
        .as_str()
        .expect("authorization_url")
        .to_owned()
}

/// `GET /oauth/{provider}/callback` with these query pairs (no token: the browser).
pub async fn callback(app: &TestApp, provider: &str, query: &[(&str, &str)]) -> reqwest::Response {
    let query: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    send(app.request(
        Method::GET,
        &format!("/oauth/{provider}/callback?{}", query.join("&")),
    ))
    .await
}

/// Percent-encodes a query value (everything but unreserved characters).
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The whole consent flow for the holder of `token`: the sealed token set.
pub async fn connect_google(app: &TestApp, google: &FakeGoogle, token: &str) -> String {
    let url = authorize(app, "google", token).await;
    let (code, state) = google.consent(&url).expect("the fake consents");
    sealed_from(callback(app, "google", &[("code", &code), ("state", &state)]).await).await
}

/// [`connect_google`] for Microsoft.
pub async fn connect_microsoft(app: &TestApp, ms: &FakeMicrosoft, token: &str) -> String {
    let url = authorize(app, "microsoft", token).await;
    let (code, state) = ms.consent(&url).expect("the fake consents");
    sealed_from(callback(app, "microsoft", &[("code", &code), ("state", &state)]).await).await
}

async fn sealed_from(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), 200, "callback");
    let body: Value = json_body(resp).await;
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
    let sealed = body["encrypted_token"].as_str().expect("encrypted_token");
    assert!(!has_fake_token(sealed), "the token set is sealed: {sealed}");
    sealed.to_owned()
}

/// `POST /oauth/{provider}/refresh`.
pub async fn refresh(
    app: &TestApp,
    provider: &str,
    token: &str,
    sealed: &str,
) -> reqwest::Response {
    send(
        app.request_as(Method::POST, &format!("/oauth/{provider}/refresh"), token)
            .json(&json!({ "encrypted_token": sealed })),
    )
    .await
}

/// Whether `text` holds a token the fakes issued (`at-N-<32 hex>`, `rt-N-<32 hex>`) or a
/// code (`code-N-<32 hex>`).
pub fn has_fake_token(text: &str) -> bool {
    ["at-", "rt-", "code-"].iter().any(|prefix| {
        text.match_indices(prefix).any(|(i, _)| {
            let rest = &text[i + prefix.len()..];
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            digits > 0
                && rest[digits..].starts_with('-')
                && rest[digits + 1..]
                    .chars()
                    .take(32)
                    .filter(char::is_ascii_hexdigit)
                    .count()
                    == 32
        })
    })
}

/// A cloud agent of `agent_type` reading `provider` with `sealed`.
pub async fn create_cloud(
    app: &TestApp,
    token: &str,
    agent_type: &str,
    provider: &str,
    sealed: &str,
    filters: Value,
) -> reqwest::Response {
    send(
        app.request_as(Method::POST, "/agents/cloud", token)
            .json(&json!({
                "name": format!("{agent_type} via {provider}"),
                "agent_type": agent_type,
                "provider": provider,
                "oauth_token_encrypted": sealed,
                "filters": filters,
            })),
    )
    .await
}

fn query_of(url: &str) -> std::collections::HashMap<String, String> {
    let q = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let v = v.replace('+', " ");
            let mut out = Vec::new();
            let bytes = v.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'%'
                    && i + 2 < bytes.len()
                    && let Ok(b) = u8::from_str_radix(&v[i + 1..i + 3], 16)
                {
                    out.push(b);
                    i += 3;
                    continue;
                }
                out.push(bytes[i]);
                i += 1;
            }
            (k.to_owned(), String::from_utf8_lossy(&out).into_owned())
        })
        .collect()
}

#[tokio::test]
async fn authorize_answers_a_pkce_consent_url_with_offline_access() {
    let google = FakeGoogle::start().await.expect("fake google");
    let app = provider_app(Providers {
        google: Some(&google),
        ..Providers::default()
    })
    .await;
    let (_, token) = app.account_on("oauth-url", Tier::Free).await;
    let url = authorize(&app, "google", &token).await;
    assert!(url.starts_with(&google.config().auth_url), "{url}");
    let q = query_of(&url);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], google.config().client_id);
    assert_eq!(
        q["redirect_uri"],
        "https://adiuva.example/api/v1/oauth/google/callback"
    );
    assert_eq!(q["code_challenge_method"], "S256");
    // BASE64URL(SHA-256) unpadded is 43 characters.
    assert_eq!(q["code_challenge"].len(), 43, "{url}");
    assert!(q["state"].len() >= 16, "{url}");
    assert_eq!(q["access_type"], "offline");
    assert_eq!(q["prompt"], "consent");
    assert!(
        q["scope"].contains("https://www.googleapis.com/auth/gmail.readonly"),
        "{url}"
    );
    // Each authorisation has its own state and verifier.
    let again = query_of(&authorize(&app, "google", &token).await);
    assert_ne!(again["state"], q["state"]);
    assert_ne!(again["code_challenge"], q["code_challenge"]);
    // The fake, playing Google, accepts it.
    google.consent(&url).expect("a valid consent URL");

    assert_unauthorized(app.get("/oauth/google/authorize").await).await;
    assert_error(
        app.get_as("/oauth/yahoo/authorize", &token).await,
        404,
        "provider_not_found",
    )
    .await;
    // Microsoft has no client id on this server.
    assert_error(
        app.get_as("/oauth/microsoft/authorize", &token).await,
        503,
        "oauth_not_configured",
    )
    .await;
}

#[tokio::test]
async fn the_callback_seals_the_token_set_and_a_cloud_agent_takes_it() {
    let google = FakeGoogle::start().await.expect("fake google");
    let app = provider_app(Providers {
        google: Some(&google),
        ..Providers::default()
    })
    .await;
    let (_, token) = app.account_on("oauth-flow", Tier::Free).await;
    let sealed = connect_google(&app, &google, &token).await;
    assert_eq!(google.requests("/token"), 1, "one code exchange");

    let resp = create_cloud(
        &app,
        &token,
        "inbox_triage",
        "google",
        &sealed,
        json!({"query": "is:unread"}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let agent: Value = json_body(resp).await;
    assert_eq!(agent["provider"], "google");
    assert_eq!(agent["connected"], true);
    assert_eq!(agent["status"], "active");
    assert_eq!(agent["agent_type"], "inbox_triage");
    assert!(agent.get("oauth_token_encrypted").is_none(), "{agent}");
    assert!(!agent.to_string().contains(&sealed));
    let listed: Value = app.get_json_as("/agents/cloud", &token).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert!(!listed.to_string().contains(&sealed));

    // Something this server did not seal.
    let bad = create_cloud(
        &app,
        &token,
        "inbox_triage",
        "google",
        "not-sealed",
        json!({}),
    )
    .await;
    assert_error(bad, 422, "validation_error").await;

    // Refresh: a new sealed set; Google keeps its refresh token, so both keep working.
    let resp = refresh(&app, "google", &token, &sealed).await;
    assert_eq!(resp.status(), 200);
    let renewed: Value = json_body(resp).await;
    let renewed = renewed["encrypted_token"]
        .as_str()
        .expect("sealed")
        .to_owned();
    assert_ne!(renewed, sealed);
    assert!(!has_fake_token(&renewed));
    // Each refresh saves its answer into the agents that held the old set: the agent now
    // holds `current`.
    let resp = refresh(&app, "google", &token, &renewed).await;
    assert_eq!(resp.status(), 200);
    let current: Value = json_body(resp).await;
    let current = current["encrypted_token"]
        .as_str()
        .expect("sealed")
        .to_owned();

    // Refused refresh: invalid_grant, and the agent that held the token is paused.
    google.revoke_refresh_tokens();
    assert_error(
        refresh(&app, "google", &token, &current).await,
        400,
        "invalid_grant",
    )
    .await;
    let listed: Value = app.get_json_as("/agents/cloud", &token).await;
    assert_eq!(listed[0]["status"], "needs_reauth", "{listed}");
    // Reconnecting clears it.
    google.revoke_refresh_tokens();
    let fresh = connect_google(&app, &google, &token).await;
    let id = listed[0]["id"].as_str().expect("id");
    let resp = send(
        app.request_as(Method::PUT, &format!("/agents/cloud/{id}"), &token)
            .json(&json!({ "oauth_token_encrypted": fresh })),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let agent: Value = json_body(resp).await;
    assert_eq!(agent["status"], "active", "{agent}");

    // Refresh refusals of the request itself.
    assert_unauthorized(
        send(
            app.request(Method::POST, "/oauth/google/refresh")
                .json(&json!({"encrypted_token": fresh})),
        )
        .await,
    )
    .await;
    assert_error(
        refresh(&app, "google", &token, "garbage").await,
        422,
        "validation_error",
    )
    .await;
    assert_error(
        refresh(&app, "yahoo", &token, &fresh).await,
        404,
        "provider_not_found",
    )
    .await;
}

#[tokio::test]
async fn microsoft_rotates_refresh_tokens_and_the_old_one_dies() {
    let ms = FakeMicrosoft::start().await.expect("fake microsoft");
    let app = provider_app(Providers {
        microsoft: Some(&ms),
        ..Providers::default()
    })
    .await;
    let (_, token) = app.account_on("oauth-ms", Tier::Pro).await;
    let url = authorize(&app, "microsoft", &token).await;
    let q = query_of(&url);
    for scope in [
        "offline_access",
        "https://graph.microsoft.com/Mail.Read",
        "https://graph.microsoft.com/ChannelMessage.Read.All",
    ] {
        assert!(q["scope"].contains(scope), "{scope} in {url}");
    }
    let (code, state) = ms.consent(&url).expect("consent");
    let first =
        sealed_from(callback(&app, "microsoft", &[("code", &code), ("state", &state)]).await).await;
    let second: Value = json_body(refresh(&app, "microsoft", &token, &first).await).await;
    let second = second["encrypted_token"]
        .as_str()
        .expect("sealed")
        .to_owned();
    assert_eq!(
        refresh(&app, "microsoft", &token, &second).await.status(),
        200
    );
    // The first set's refresh token was rotated away.
    assert_error(
        refresh(&app, "microsoft", &token, &first).await,
        400,
        "invalid_grant",
    )
    .await;
    // A Microsoft token set is not Google's.
    assert_error(
        refresh(&app, "google", &token, &second).await,
        503,
        "oauth_not_configured",
    )
    .await;
}

#[tokio::test]
async fn the_callback_refuses_bad_states_codes_and_denied_consent() {
    let google = FakeGoogle::start().await.expect("fake google");
    let ms = FakeMicrosoft::start().await.expect("fake microsoft");
    let app = provider_app(Providers {
        google: Some(&google),
        microsoft: Some(&ms),
        ..Providers::default()
    })
    .await;
    let (_, token) = app.account_on("oauth-bad", Tier::Free).await;
    let url = authorize(&app, "google", &token).await;
    let (code, state) = google.consent(&url).expect("consent");

    // Denied consent: the provider sends `error` instead of `code`.
    assert_error(
        callback(
            &app,
            "google",
            &[
                ("error", "access_denied"),
                ("error_description", "The user denied <script>"),
                ("state", &state),
            ],
        )
        .await,
        400,
        "oauth_denied",
    )
    .await;
    // Whatever the provider wrote is not echoed.
    let other = callback(&app, "google", &[("error", "<b>x</b>server_error")]).await;
    let body = assert_error(other, 400, "oauth_denied").await;
    assert!(!body.to_string().contains('<'), "{body}");
    // A state this server never issued.
    assert_error(
        callback(
            &app,
            "google",
            &[("code", &code), ("state", "forged-state")],
        )
        .await,
        400,
        "invalid_state",
    )
    .await;
    // A tampered state (one character changed).
    let mut tampered: Vec<char> = state.chars().collect();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    assert_error(
        callback(&app, "google", &[("code", &code), ("state", &tampered)]).await,
        400,
        "invalid_state",
    )
    .await;
    // Google's state on Microsoft's callback.
    assert_error(
        callback(&app, "microsoft", &[("code", &code), ("state", &state)]).await,
        400,
        "invalid_state",
    )
    .await;
    // Missing parameters; an unknown provider.
    assert_error(
        callback(&app, "google", &[("state", &state)]).await,
        422,
        "validation_error",
    )
    .await;
    assert_error(
        callback(&app, "google", &[("code", &code)]).await,
        422,
        "validation_error",
    )
    .await;
    assert_error(
        callback(&app, "yahoo", &[("code", &code), ("state", &state)]).await,
        404,
        "provider_not_found",
    )
    .await;
    // The real pair works once; the code is spent after.
    let first = callback(&app, "google", &[("code", &code), ("state", &state)]).await;
    assert_eq!(first.status(), 200);
    assert_error(
        callback(&app, "google", &[("code", &code), ("state", &state)]).await,
        400,
        "invalid_grant",
    )
    .await;
}

#[tokio::test]
async fn the_free_tier_connects_one_provider() {
    let google = FakeGoogle::start().await.expect("fake google");
    let ms = FakeMicrosoft::start().await.expect("fake microsoft");
    let app = provider_app(Providers {
        google: Some(&google),
        microsoft: Some(&ms),
        ..Providers::default()
    })
    .await;
    let (_, free) = app.account_on("oauth-free", Tier::Free).await;
    let g = connect_google(&app, &google, &free).await;
    let m = connect_microsoft(&app, &ms, &free).await;
    let ok = create_cloud(&app, &free, "inbox_triage", "google", &g, json!({})).await;
    assert_eq!(ok.status(), 200);
    assert_error(
        create_cloud(&app, &free, "inbox_triage", "microsoft", &m, json!({})).await,
        403,
        "quota_exceeded",
    )
    .await;
    // A second agent on the same provider is fine.
    let same = create_cloud(&app, &free, "inbox_triage", "google", &g, json!({})).await;
    assert_eq!(same.status(), 200);

    // Pro connects both.
    let (_, pro) = app.account_on("oauth-pro", Tier::Pro).await;
    let g = connect_google(&app, &google, &pro).await;
    let m = connect_microsoft(&app, &ms, &pro).await;
    for (p, sealed) in [("google", &g), ("microsoft", &m)] {
        let r = create_cloud(&app, &pro, "inbox_triage", p, sealed, json!({})).await;
        assert_eq!(r.status(), 200, "{p}");
    }
    // A provider the type does not read.
    assert_error(
        create_cloud(
            &app,
            &pro,
            "teams_digest",
            "google",
            &g,
            json!({"team_id": "t", "channel_id": "c"}),
        )
        .await,
        422,
        "validation_error",
    )
    .await;
    // A Microsoft token set is not a Google one.
    assert_error(
        create_cloud(&app, &pro, "inbox_triage", "google", &m, json!({})).await,
        422,
        "validation_error",
    )
    .await;
}

#[tokio::test]
async fn no_token_code_state_or_client_secret_reaches_the_log() {
    let google = FakeGoogle::start().await.expect("fake google");
    let ms = FakeMicrosoft::start().await.expect("fake microsoft");
    let app = provider_app(Providers {
        google: Some(&google),
        microsoft: Some(&ms),
        ..Providers::default()
    })
    .await;
    let (_, token) = app.account_on("oauth-logs", Tier::Pro).await;
    let url = authorize(&app, "google", &token).await;
    let (code, state) = google.consent(&url).expect("consent");
    let ok = callback(&app, "google", &[("code", &code), ("state", &state)]).await;
    assert_eq!(ok.status(), 200);
    let sealed: Value = json_body(ok).await;
    let sealed = sealed["encrypted_token"]
        .as_str()
        .expect("sealed")
        .to_owned();
    // Failures too: a spent code (the fake quotes it in its error_description), a
    // refused refresh (it quotes the refresh token).
    let spent = callback(&app, "google", &[("code", &code), ("state", &state)]).await;
    assert_eq!(spent.status(), 400);
    let spent_body = spent.text().await.expect("body");
    assert!(!spent_body.contains(&code), "{spent_body}");
    assert!(!has_fake_token(&spent_body), "{spent_body}");
    google.revoke_refresh_tokens();
    let refused = refresh(&app, "google", &token, &sealed).await;
    assert_eq!(refused.status(), 400);
    let refused_body = refused.text().await.expect("body");
    assert!(!has_fake_token(&refused_body), "{refused_body}");
    let m = connect_microsoft(&app, &ms, &token).await;
    assert_eq!(refresh(&app, "microsoft", &token, &m).await.status(), 200);

    let logs = log_text();
    assert!(!logs.contains(&code), "the code was logged");
    assert!(!logs.contains(&state), "the state was logged");
    assert!(
        !logs.contains(FAKE_CLIENT_SECRET),
        "the client secret was logged"
    );
    assert!(!has_fake_token(&logs), "a token or code was logged");
    let key = crate::helpers::OAUTH_TOKEN_KEY.trim_start_matches("k1:");
    assert!(!logs.contains(key), "the token key was logged");
}

/// An expired state is refused. The server's clock cannot be moved from outside, so the
/// test, holding the deployment's token key as every instance does, reseals a real state
/// with its expiry in the past: everything else about it is genuine.
#[tokio::test]
async fn an_expired_state_is_refused() {
    use adiuva_core::seal::{Keyring, Purpose};
    let google = FakeGoogle::start().await.expect("fake google");
    let app = provider_app(Providers {
        google: Some(&google),
        ..Providers::default()
    })
    .await;
    let (_, token) = app.account_on("oauth-expired", Tier::Free).await;
    let url = authorize(&app, "google", &token).await;
    let (code, state) = google.consent(&url).expect("consent");
    let keyring = Keyring::parse(crate::helpers::OAUTH_TOKEN_KEY).expect("the test key");
    let plain = keyring
        .open(Purpose::OAuthState, &state)
        .expect("the server sealed it with the deployment's key");
    let mut fields: Value = serde_json::from_slice(&plain).expect("JSON");
    let exp = fields["exp"].as_i64().expect("an expiry");
    fields["exp"] = json!(exp - 11 * 60 * 1000);
    let expired = keyring.seal(Purpose::OAuthState, fields.to_string().as_bytes());
    assert_error(
        callback(&app, "google", &[("code", &code), ("state", &expired)]).await,
        400,
        "invalid_state",
    )
    .await;
    // The code was not spent on it: the genuine state still works.
    let ok = callback(&app, "google", &[("code", &code), ("state", &state)]).await;
    assert_eq!(ok.status(), 200);
}

/// A provider whose token endpoint is gone: the callback says so (503
/// `oauth_provider_unavailable`, a documented code), never hangs, and leaks nothing.
#[tokio::test]
async fn a_provider_that_is_down_is_a_documented_503() {
    let google = FakeGoogle::start().await.expect("fake google");
    let app = provider_app(Providers {
        google: Some(&google),
        ..Providers::default()
    })
    .await;
    let (_, token) = app.account_on("oauth-down", Tier::Free).await;
    let url = authorize(&app, "google", &token).await;
    let (code, state) = google.consent(&url).expect("consent");
    google.shutdown().await;
    let resp = callback(&app, "google", &[("code", &code), ("state", &state)]).await;
    let body = assert_error(resp, 503, "oauth_provider_unavailable").await;
    assert!(!body.to_string().contains(&code), "{body}");
    let spec: Value = app.get_json_as("/openapi.json", &token).await;
    let codes =
        &spec["components"]["schemas"]["OAuthCallbackError503"]["properties"]["code"]["enum"];
    assert!(
        codes
            .as_array()
            .is_some_and(|c| c.contains(&json!("oauth_provider_unavailable"))),
        "documented: {codes}"
    );
}
