//! The Google and Microsoft adapters against their local fakes, over real sockets: OAuth
//! (consent URL, code exchange with PKCE, refresh), Gmail, Outlook and Teams reads
//! (filters, paging, incremental cursors), and the failure paths (401 refresh, rate
//! limiting, foreign nextLinks, scrubbed secrets).

use std::collections::HashMap;
use std::time::Duration;

use adiuva_adapters::providers::fake::{FAKE_CLIENT_SECRET, FakeGoogle, FakeMail, FakeMicrosoft};
use adiuva_adapters::providers::{GoogleProvider, MicrosoftProvider};
use adiuva_core::Secret;
use adiuva_core::ports::ProviderApi;
use adiuva_core::ports::providers::{
    AuthorizeRequest, Provider, ProviderError, Source, SourceQuery, TokenSet,
};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

const NOW: i64 = 1_780_000_000_000;
const REDIRECT: &str = "https://adiuva.example/oauth/callback";

fn pkce(seed: &str) -> (String, String) {
    let verifier = format!("verifier-{seed}-{}", "v".repeat(40));
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn request(provider: Provider, challenge: &str) -> AuthorizeRequest {
    AuthorizeRequest {
        state: "signed-state-123".into(),
        code_challenge: challenge.into(),
        redirect_uri: REDIRECT.into(),
        scopes: provider.scopes().iter().map(|s| s.to_string()).collect(),
    }
}

fn params(url: &str) -> HashMap<String, String> {
    url::Url::parse(url)
        .expect("url")
        .query_pairs()
        .into_owned()
        .collect()
}

/// Consent + exchange: a fresh token set.
async fn authorise(
    api: &dyn ProviderApi,
    consent: impl Fn(&str) -> Result<(String, String), String>,
) -> TokenSet {
    let (verifier, challenge) = pkce("ok");
    let url = api.authorize_url(&request(api.provider(), &challenge));
    let (code, state) = consent(&url).expect("consent");
    assert_eq!(state, "signed-state-123");
    api.exchange_code(&code, &verifier, REDIRECT, NOW)
        .await
        .expect("exchange")
}

async fn google() -> (FakeGoogle, GoogleProvider, TokenSet) {
    let fake = FakeGoogle::start().await.expect("fake");
    let api = GoogleProvider::new(fake.config()).expect("provider");
    let tokens = authorise(&api, |u| fake.consent(u)).await;
    (fake, api, tokens)
}

async fn microsoft() -> (FakeMicrosoft, MicrosoftProvider, TokenSet) {
    let fake = FakeMicrosoft::start().await.expect("fake");
    let api = MicrosoftProvider::new(fake.config()).expect("provider");
    let tokens = authorise(&api, |u| fake.consent(u)).await;
    (fake, api, tokens)
}

fn filters(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("object")
}

fn query(source: Source, f: Value, cursor: Option<String>, max_items: u32) -> SourceQuery {
    SourceQuery {
        source,
        filters: filters(f),
        cursor,
        max_items,
    }
}

fn mail(from: &str, subject: &str, body: &str, at_s: i64, unread: bool) -> FakeMail {
    FakeMail {
        unread,
        ..FakeMail::new(from, subject, body, NOW + at_s * 1000)
    }
}

#[tokio::test]
async fn google_authorize_url_asks_offline_access_with_pkce_and_the_scopes() {
    let fake = FakeGoogle::start().await.expect("fake");
    let api = GoogleProvider::new(fake.config()).expect("provider");
    let (_, challenge) = pkce("a");
    let url = api.authorize_url(&request(Provider::Google, &challenge));
    assert!(
        url.starts_with(&format!("{}/o/oauth2/v2/auth?", fake.url())),
        "{url}"
    );
    let p = params(&url);
    assert_eq!(p["response_type"], "code");
    assert_eq!(p["client_id"], "fake-client-id");
    assert_eq!(p["redirect_uri"], REDIRECT);
    assert_eq!(p["scope"], "https://www.googleapis.com/auth/gmail.readonly");
    assert_eq!(p["state"], "signed-state-123");
    assert_eq!(p["code_challenge"], challenge);
    assert_eq!(p["code_challenge_method"], "S256");
    assert_eq!(p["access_type"], "offline");
    assert_eq!(p["prompt"], "consent");
    assert!(fake.consent(&url).is_ok());
    // The fake refuses what Google would.
    let plain = url.replace("S256", "plain");
    assert!(fake.consent(&plain).unwrap_err().contains("S256"));
    let online = url.replace("access_type=offline", "access_type=online");
    assert!(fake.consent(&online).is_err());
}

#[tokio::test]
async fn microsoft_authorize_url_uses_the_authority_and_the_issue_scopes() {
    let fake = FakeMicrosoft::start().await.expect("fake");
    let api = MicrosoftProvider::new(fake.config()).expect("provider");
    let (_, challenge) = pkce("m");
    let url = api.authorize_url(&request(Provider::Microsoft, &challenge));
    assert!(
        url.starts_with(&format!("{}/common/oauth2/v2.0/authorize?", fake.url())),
        "{url}"
    );
    let p = params(&url);
    assert_eq!(
        p["scope"],
        "offline_access https://graph.microsoft.com/Mail.Read https://graph.microsoft.com/ChannelMessage.Read.All"
    );
    assert_eq!(p["code_challenge_method"], "S256");
    assert!(!p.contains_key("access_type"));
    assert!(fake.consent(&url).is_ok());
}

#[tokio::test]
async fn a_code_works_once_and_only_with_its_verifier_and_redirect() {
    let fake = FakeGoogle::start().await.expect("fake");
    let api = GoogleProvider::new(fake.config()).expect("provider");
    let (verifier, challenge) = pkce("x");
    let url = api.authorize_url(&request(Provider::Google, &challenge));

    let (code, _) = fake.consent(&url).expect("consent");
    let err = api
        .exchange_code(
            &code,
            "the-wrong-verifier-000000000000000000000000",
            REDIRECT,
            NOW,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::InvalidGrant(_)), "{err:?}");
    // The failed attempt spent it.
    let err = api
        .exchange_code(&code, &verifier, REDIRECT, NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::InvalidGrant(_)), "{err:?}");
    assert!(
        !err.to_string().contains(&code),
        "the code is scrubbed: {err}"
    );

    let (code, _) = fake.consent(&url).expect("consent");
    let err = api
        .exchange_code(&code, &verifier, "https://elsewhere.example/cb", NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::InvalidGrant(_)), "{err:?}");

    let (code, _) = fake.consent(&url).expect("consent");
    let tokens = api
        .exchange_code(&code, &verifier, REDIRECT, NOW)
        .await
        .expect("exchange");
    assert!(!tokens.access_token.expose().is_empty());
    assert!(
        tokens.refresh_token.is_some(),
        "offline access gives a refresh token"
    );
    assert_eq!(tokens.expires_at, NOW + 3_600_000);
    assert_eq!(
        tokens.scope,
        "https://www.googleapis.com/auth/gmail.readonly"
    );
    let again = api
        .exchange_code(&code, &verifier, REDIRECT, NOW)
        .await
        .unwrap_err();
    assert!(matches!(again, ProviderError::InvalidGrant(_)), "{again:?}");
    // invalid_grant is never retried: one request per failed exchange.
    assert_eq!(fake.requests("/token"), 5);
}

#[tokio::test]
async fn google_refresh_keeps_the_refresh_token_until_revoked() {
    let (fake, api, tokens) = google().await;
    let refreshed = api.refresh(&tokens, NOW + 10).await.expect("refresh");
    assert_ne!(refreshed.access_token, tokens.access_token);
    assert_eq!(refreshed.refresh_token, tokens.refresh_token);
    assert_eq!(refreshed.expires_at, NOW + 10 + 3_600_000);
    // The same refresh token still works.
    api.refresh(&refreshed, NOW).await.expect("again");

    fake.revoke_refresh_tokens();
    let err = api.refresh(&refreshed, NOW).await.unwrap_err();
    assert!(matches!(err, ProviderError::InvalidGrant(_)), "{err:?}");
    let rt = refreshed
        .refresh_token
        .as_ref()
        .expect("rt")
        .expose()
        .clone();
    assert!(!err.to_string().contains(&rt), "{err}");
    assert!(!format!("{err:?}").contains(&rt));

    let none = TokenSet {
        refresh_token: None,
        ..refreshed
    };
    let err = api.refresh(&none, NOW).await.unwrap_err();
    assert!(matches!(err, ProviderError::InvalidGrant(_)), "{err:?}");
}

#[tokio::test]
async fn microsoft_refresh_rotates_the_refresh_token() {
    let (fake, api, tokens) = microsoft().await;
    let refreshed = api.refresh(&tokens, NOW).await.expect("refresh");
    assert!(refreshed.refresh_token.is_some());
    assert_ne!(refreshed.refresh_token, tokens.refresh_token, "rotated");
    let old = api.refresh(&tokens, NOW).await.unwrap_err();
    assert!(
        matches!(old, ProviderError::InvalidGrant(_)),
        "the old one died: {old:?}"
    );
    let next = api
        .refresh(&refreshed, NOW)
        .await
        .expect("the new one works");
    fake.revoke_refresh_tokens();
    let err = api.refresh(&next, NOW).await.unwrap_err();
    assert!(matches!(err, ProviderError::InvalidGrant(_)), "{err:?}");
}

#[tokio::test]
async fn a_wrong_client_secret_is_a_configuration_error_that_never_shows_the_secret() {
    let fake = FakeGoogle::start().await.expect("fake");
    let mut cfg = fake.config();
    cfg.client_secret = Secret::new("the-wrong-secret-7f3e".into());
    let api = GoogleProvider::new(cfg).expect("provider");
    let (verifier, challenge) = pkce("s");
    let (code, _) = fake
        .consent(&api.authorize_url(&request(Provider::Google, &challenge)))
        .expect("consent");
    let err = api
        .exchange_code(&code, &verifier, REDIRECT, NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Protocol(_)), "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(text.contains("invalid_client"), "{text}");
    for secret in [
        "the-wrong-secret-7f3e",
        code.as_str(),
        verifier.as_str(),
        FAKE_CLIENT_SECRET,
    ] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
}

#[tokio::test]
async fn gmail_reads_the_query_with_paging_then_incrementally_through_history() {
    let (fake, api, mut tokens) = google().await;
    fake.add_gmail_message(mail("Alice", "Invoice 1", "pay me", 1, true));
    fake.add_gmail_message(mail("Bob", "Lunch", "noon?", 2, false));
    let a2 = fake.add_gmail_message(mail("Alice", "Invoice 2", "pay me more", 3, true));
    fake.add_gmail_message(FakeMail {
        html: true,
        ..mail(
            "Carol",
            "News",
            "<p>Hello <b>world</b> &amp; all</p><script>x()</script>",
            4,
            true,
        )
    });
    fake.set_page_size(2);

    let q = json!({"query": "is:unread"});
    let page = api
        .read(&mut tokens, &query(Source::Gmail, q.clone(), None, 10), NOW)
        .await
        .expect("read");
    let subjects: Vec<&str> = page.items.iter().map(|i| i.subject.as_str()).collect();
    assert_eq!(
        subjects,
        ["News", "Invoice 2", "Invoice 1"],
        "newest first, unread only"
    );
    assert_eq!(
        fake.requests("/gmail/v1/users/me/messages"),
        2 + 3,
        "two list pages, three gets"
    );
    let news = &page.items[0];
    assert_eq!(news.body, "Hello world & all", "HTML reduced to text");
    assert_eq!(news.from, "Carol <carol@example.com>");
    assert_eq!(news.received_at, NOW + 4000);
    let inv2 = &page.items[1];
    assert_eq!(inv2.id, a2);
    assert_eq!(
        inv2.body, "pay me more",
        "text/plain decoded from base64url"
    );
    assert_eq!(inv2.snippet, "pay me more");
    assert_eq!(
        inv2.link.as_deref(),
        Some(format!("https://mail.google.com/mail/u/0/#all/{a2}").as_str())
    );
    assert_eq!(inv2.thread_id.as_deref(), Some(format!("t{a2}").as_str()));
    let cursor = page.cursor.expect("cursor");
    assert_eq!(cursor, fake.history_id().to_string());

    // max_items bounds the read.
    let two = api
        .read(&mut tokens, &query(Source::Gmail, q.clone(), None, 2), NOW)
        .await
        .expect("read");
    assert_eq!(two.items.len(), 2);

    // Two new mails, one matching: history finds both, the query keeps one.
    fake.add_gmail_message(mail("Dan", "Read already", "x", 5, false));
    let new = fake.add_gmail_message(mail("Alice", "Invoice 3", "again", 6, true));
    let page = api
        .read(
            &mut tokens,
            &query(Source::Gmail, q.clone(), Some(cursor.clone()), 10),
            NOW,
        )
        .await
        .expect("incremental");
    assert_eq!(
        page.items.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        [new.as_str()]
    );
    assert_eq!(page.cursor, Some(fake.history_id().to_string()));
    assert!(fake.requests("/gmail/v1/users/me/history") >= 1);

    // Without a query, both are new; `from:` narrows to one.
    let all = api
        .read(
            &mut tokens,
            &query(Source::Gmail, json!({}), Some(cursor.clone()), 10),
            NOW,
        )
        .await
        .expect("incremental");
    assert_eq!(all.items.len(), 2);
    let from = api
        .read(
            &mut tokens,
            &query(
                Source::Gmail,
                json!({"query": "from:dan"}),
                Some(cursor),
                10,
            ),
            NOW,
        )
        .await
        .expect("incremental");
    assert_eq!(
        from.items
            .iter()
            .map(|i| i.subject.as_str())
            .collect::<Vec<_>>(),
        ["Read already"]
    );

    // Nothing new: no items, the cursor stays.
    let latest = fake.history_id().to_string();
    let none = api
        .read(
            &mut tokens,
            &query(Source::Gmail, q, Some(latest.clone()), 10),
            NOW,
        )
        .await
        .expect("nothing new");
    assert!(none.items.is_empty());
    assert_eq!(none.cursor, Some(latest));
}

#[tokio::test]
async fn gmail_falls_back_to_a_full_read_when_history_is_gone() {
    let (fake, api, mut tokens) = google().await;
    // An empty mailbox: the cursor comes from the profile.
    let empty = api
        .read(&mut tokens, &query(Source::Gmail, json!({}), None, 5), NOW)
        .await
        .expect("read");
    assert!(empty.items.is_empty());
    assert_eq!(empty.cursor, Some(fake.history_id().to_string()));
    assert_eq!(fake.requests("/gmail/v1/users/me/profile"), 1);

    let old = empty.cursor.expect("cursor");
    fake.add_gmail_message(mail("Alice", "One", "1", 1, true));
    fake.add_gmail_message(mail("Bob", "Two", "2", 2, true));
    fake.forget_history_before(fake.history_id());
    let page = api
        .read(
            &mut tokens,
            &query(Source::Gmail, json!({}), Some(old), 5),
            NOW,
        )
        .await
        .expect("fallback");
    assert_eq!(
        page.items
            .iter()
            .map(|i| i.subject.as_str())
            .collect::<Vec<_>>(),
        ["Two", "One"]
    );
    assert_eq!(page.cursor, Some(fake.history_id().to_string()));
    assert_eq!(
        fake.requests("/gmail/v1/users/me/history"),
        1,
        "tried history first"
    );
}

#[tokio::test]
async fn outlook_filters_pages_and_reads_incrementally() {
    let (fake, api, mut tokens) = microsoft().await;
    for i in 1..=5 {
        let html = FakeMail {
            html: true,
            ..mail("Erin", &format!("Mail {i}"), "<p>hi</p>", i, i % 2 == 1)
        };
        fake.add_outlook_message("inbox", html);
    }
    fake.add_outlook_message("archive", mail("Erin", "Archived", "x", 9, true));
    fake.set_page_size(2);
    let f = json!({"filter": "isRead eq false", "folder": "inbox"});
    let page = api
        .read(
            &mut tokens,
            &query(Source::Outlook, f.clone(), None, 10),
            NOW,
        )
        .await
        .expect("read");
    let subjects: Vec<&str> = page.items.iter().map(|i| i.subject.as_str()).collect();
    assert_eq!(subjects, ["Mail 5", "Mail 3", "Mail 1"]);
    assert_eq!(
        fake.requests("/v1.0/me/mailFolders/inbox/messages"),
        2,
        "followed the nextLink"
    );
    assert_eq!(page.items[0].from, "Erin <erin@example.com>");
    assert_eq!(page.items[0].body, "hi");
    assert!(page.items[0].thread_id.is_some() && page.items[0].link.is_some());
    let cursor = page.cursor.expect("cursor");
    assert_eq!(
        cursor, "2026-05-28T20:26:45Z",
        "the newest receivedDateTime"
    );

    let six = fake.add_outlook_message("inbox", mail("Finn", "Mail 6", "new", 6, true));
    fake.add_outlook_message("inbox", mail("Finn", "Mail 7", "read", 7, false));
    let page = api
        .read(
            &mut tokens,
            &query(Source::Outlook, f.clone(), Some(cursor.clone()), 10),
            NOW,
        )
        .await
        .expect("incremental");
    assert_eq!(
        page.items.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        [six.as_str()]
    );
    assert_eq!(page.cursor.as_deref(), Some("2026-05-28T20:26:46Z"));

    // No new mail keeps the cursor; the default folder is the inbox; max_items bounds.
    let same = api
        .read(
            &mut tokens,
            &query(Source::Outlook, f, page.cursor.clone(), 10),
            NOW,
        )
        .await
        .expect("nothing new");
    assert!(same.items.is_empty());
    assert_eq!(same.cursor, page.cursor);
    let two = api
        .read(
            &mut tokens,
            &query(Source::Outlook, json!({}), None, 3),
            NOW,
        )
        .await
        .expect("read");
    assert_eq!(two.items.len(), 3);
    assert_eq!(two.items[0].subject, "Mail 7");

    // A filter Graph refuses is a protocol error.
    let err = api
        .read(
            &mut tokens,
            &query(
                Source::Outlook,
                json!({"filter": "startswith(subject,'a')"}),
                None,
                3,
            ),
            NOW,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn teams_pages_a_channel_and_reads_incrementally() {
    let (fake, api, mut tokens) = microsoft().await;
    let (team, channel) = ("team-1@x", "19:abc@thread.tacv2");
    for i in 1..=5 {
        fake.add_teams_message(
            team,
            channel,
            "Gina",
            &format!("<div>msg&nbsp;{i}</div>"),
            NOW + i * 1000,
        );
    }
    fake.set_page_size(2);
    let f = json!({"team_id": team, "channel_id": channel});
    let page = api
        .read(&mut tokens, &query(Source::Teams, f.clone(), None, 10), NOW)
        .await
        .expect("read");
    let bodies: Vec<&str> = page.items.iter().map(|i| i.body.as_str()).collect();
    assert_eq!(bodies, ["msg 5", "msg 4", "msg 3", "msg 2", "msg 1"]);
    assert_eq!(page.items[0].from, "Gina");
    assert_eq!(page.items[0].subject, "");
    assert_eq!(
        fake.requests("/v1.0/teams/team-1%40x/channels/19%3Aabc%40thread.tacv2/messages"),
        3,
        "ids percent-encoded; three pages"
    );
    let cursor = page.cursor.expect("cursor");
    assert_eq!(cursor, "2026-05-28T20:26:45.000Z");

    fake.add_teams_message(team, channel, "Hal", "<p>six</p>", NOW + 6000);
    let before = fake.requests("/v1.0/teams");
    let page = api
        .read(
            &mut tokens,
            &query(Source::Teams, f.clone(), Some(cursor), 10),
            NOW,
        )
        .await
        .expect("incremental");
    assert_eq!(
        page.items
            .iter()
            .map(|i| i.body.as_str())
            .collect::<Vec<_>>(),
        ["six"]
    );
    assert_eq!(
        fake.requests("/v1.0/teams") - before,
        1,
        "stopped at the page that reached the cursor"
    );
    assert_eq!(page.cursor.as_deref(), Some("2026-05-28T20:26:46.000Z"));

    let err = api
        .read(
            &mut tokens,
            &query(
                Source::Teams,
                json!({"team_id": team, "channel_id": "nope"}),
                None,
                10,
            ),
            NOW,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::NotFound(_)), "{err:?}");
    let err = api
        .read(
            &mut tokens,
            &query(Source::Teams, json!({"team_id": team}), None, 10),
            NOW,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn rate_limiting_is_retried_with_retry_after_a_bounded_number_of_times() {
    let (fake, api, mut tokens) = google().await;
    fake.add_gmail_message(mail("Alice", "One", "1", 1, true));
    let q = query(Source::Gmail, json!({}), None, 5);

    fake.rate_limit_next(2, 1);
    let before = fake.requests("");
    let page = api
        .read(&mut tokens, &q, NOW)
        .await
        .expect("read after 429s");
    assert_eq!(page.items.len(), 1);
    assert_eq!(
        fake.requests("") - before,
        2 + 2,
        "two 429s, then list + get"
    );

    fake.rate_limit_next(10, 0);
    let before = fake.requests("");
    let err = api.read(&mut tokens, &q, NOW).await.unwrap_err();
    assert_eq!(err, ProviderError::RateLimited);
    assert_eq!(fake.requests("") - before, 4, "four attempts, then give up");
}

#[tokio::test]
async fn a_401_refreshes_once_and_updates_the_token_set() {
    let (fake, api, mut tokens) = microsoft().await;
    fake.add_outlook_message("inbox", mail("Ivy", "Hi", "x", 1, true));
    let old = tokens.clone();
    fake.expire_access_tokens();
    let page = api
        .read(
            &mut tokens,
            &query(Source::Outlook, json!({}), None, 5),
            NOW + 7,
        )
        .await
        .expect("read");
    assert_eq!(page.items.len(), 1);
    assert_ne!(tokens.access_token, old.access_token, "a new access token");
    assert_ne!(
        tokens.refresh_token, old.refresh_token,
        "Microsoft rotated the refresh token"
    );
    assert_eq!(tokens.expires_at, NOW + 7 + 3_600_000);
    assert_eq!(
        fake.requests("/common/oauth2/v2.0/token"),
        2,
        "exchange + one refresh"
    );
    // The updated set keeps working without another refresh.
    api.read(
        &mut tokens,
        &query(Source::Outlook, json!({}), None, 5),
        NOW,
    )
    .await
    .expect("read");
    assert_eq!(fake.requests("/common/oauth2/v2.0/token"), 2);
}

#[tokio::test]
async fn a_second_401_is_unauthorized_and_a_revoked_grant_is_invalid_grant() {
    let (fake, api, mut tokens) = google().await;
    // Fresh tokens die at once: the refresh does not help.
    fake.set_access_token_lifetime(Duration::ZERO);
    fake.expire_access_tokens();
    let err = api
        .read(&mut tokens, &query(Source::Gmail, json!({}), None, 5), NOW)
        .await
        .unwrap_err();
    assert_eq!(err, ProviderError::Unauthorized);
    assert_eq!(fake.requests("/token"), 2, "exchange + exactly one refresh");

    fake.revoke_refresh_tokens();
    let err = api
        .read(&mut tokens, &query(Source::Gmail, json!({}), None, 5), NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::InvalidGrant(_)), "{err:?}");
    let rt = tokens.refresh_token.as_ref().expect("rt").expose().clone();
    let at = tokens.access_token.expose().clone();
    let text = format!("{err} {err:?}");
    assert!(!text.contains(&rt) && !text.contains(&at), "{text}");
}

#[tokio::test]
async fn a_next_link_to_another_host_is_refused_without_sending_the_token() {
    let (fake, api, mut tokens) = microsoft().await;
    let elsewhere = FakeMicrosoft::start().await.expect("second fake");
    for i in 1..=3 {
        fake.add_outlook_message("inbox", mail("Jo", &format!("M{i}"), "x", i, true));
    }
    fake.set_page_size(1);
    fake.send_next_links_to(&format!("{}/v1.0", elsewhere.url()));
    let err = api
        .read(
            &mut tokens,
            &query(Source::Outlook, json!({}), None, 5),
            NOW,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Protocol(_)), "{err:?}");
    assert_eq!(
        elsewhere.requests(""),
        0,
        "nothing was sent to the other host"
    );
}

#[tokio::test]
async fn a_silent_provider_times_out_as_unavailable() {
    let fake = FakeGoogle::start().await.expect("fake");
    let mut cfg = fake.config();
    cfg.timeout = Duration::from_millis(200);
    let api = GoogleProvider::new(cfg).expect("provider");
    let tokens = authorise(&api, |u| fake.consent(u)).await;
    fake.delay(Duration::from_secs(2));
    let err = api.refresh(&tokens, NOW).await.unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable(_)), "{err:?}");
    let rt = tokens.refresh_token.as_ref().expect("rt").expose().clone();
    assert!(!err.to_string().contains(&rt));
}

#[tokio::test]
async fn api_failures_map_to_the_contract_errors() {
    let (fake, api, mut tokens) = google().await;
    let q = query(Source::Gmail, json!({}), None, 5);
    let cases = [
        (403, 1, "Forbidden"),
        (404, 1, "NotFound"),
        (500, 1, "Unavailable"),
        (400, 1, "Protocol"),
    ];
    for (status, attempts, want) in cases {
        fake.fail_next(1, status);
        let before = fake.requests("");
        let err = api.read(&mut tokens, &q, NOW).await.unwrap_err();
        assert!(format!("{err:?}").starts_with(want), "{status}: {err:?}");
        assert_eq!(
            fake.requests("") - before,
            attempts,
            "{status} is not retried"
        );
        let at = tokens.access_token.expose().clone();
        assert!(!format!("{err} {err:?}").contains(&at));
    }
    // A 503 is retried, then the read goes on.
    fake.fail_next(1, 503);
    let before = fake.requests("");
    api.read(&mut tokens, &q, NOW).await.expect("after one 503");
    assert_eq!(fake.requests("") - before, 2 + 1, "503, list, profile");
    let teams = query(
        Source::Teams,
        json!({"team_id": "t", "channel_id": "c"}),
        None,
        5,
    );
    let err = api.read(&mut tokens, &teams, NOW).await.unwrap_err();
    assert!(matches!(err, ProviderError::Protocol(_)), "{err:?}");
    let long = query(Source::Gmail, json!({"query": "x".repeat(5000)}), None, 5);
    let err = api.read(&mut tokens, &long, NOW).await.unwrap_err();
    assert!(matches!(err, ProviderError::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn gmail_history_is_followed_across_pages_and_max_items_keeps_the_newest() {
    let (fake, api, mut tokens) = google().await;
    let cursor = fake.history_id().to_string();
    let ids: Vec<String> = (1..=3)
        .map(|i| fake.add_gmail_message(mail("Kim", &format!("H{i}"), "b", i, true)))
        .collect();
    fake.set_page_size(1);
    let page = api
        .read(
            &mut tokens,
            &query(Source::Gmail, json!({}), Some(cursor.clone()), 10),
            NOW,
        )
        .await
        .expect("incremental");
    let got: Vec<&str> = page.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(got, [ids[2].as_str(), ids[1].as_str(), ids[0].as_str()]);
    assert_eq!(
        fake.requests("/gmail/v1/users/me/history"),
        3,
        "three history pages"
    );
    let two = api
        .read(
            &mut tokens,
            &query(Source::Gmail, json!({}), Some(cursor), 2),
            NOW,
        )
        .await
        .expect("incremental");
    let got: Vec<&str> = two.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(got, [ids[2].as_str(), ids[1].as_str()], "the newest two");
    assert_eq!(two.cursor, Some(fake.history_id().to_string()));
}

/// A log sink for one test (the subscriber is this thread's only).
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_token_reaches_a_log_line() {
    let logs = Logs::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (fake, api, mut tokens) = microsoft().await;
    fake.add_outlook_message("inbox", mail("Lee", "Hi", "x", 1, true));
    let first = tokens.clone();
    // A 429 whose body quotes the token (logged by the retry), then a 401 and a refresh.
    fake.rate_limit_next(1, 0);
    api.read(
        &mut tokens,
        &query(Source::Outlook, json!({}), None, 5),
        NOW,
    )
    .await
    .expect("read");
    fake.expire_access_tokens();
    api.read(
        &mut tokens,
        &query(Source::Outlook, json!({}), None, 5),
        NOW,
    )
    .await
    .expect("read after a refresh");
    fake.revoke_refresh_tokens();
    fake.expire_access_tokens();
    let err = api
        .read(
            &mut tokens,
            &query(Source::Outlook, json!({}), None, 5),
            NOW,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::InvalidGrant(_)), "{err:?}");

    let text = String::from_utf8(logs.0.lock().expect("logs").clone()).expect("utf8");
    assert!(
        text.contains("retrying an outgoing request"),
        "the retry was logged: {text}"
    );
    assert!(text.contains("Rate limit exceeded for token ***"), "{text}");
    assert!(text.contains("refreshing once"), "{text}");
    let secrets = [
        first.access_token.expose().clone(),
        first.refresh_token.clone().expect("rt").expose().clone(),
        tokens.access_token.expose().clone(),
        tokens.refresh_token.clone().expect("rt").expose().clone(),
        FAKE_CLIENT_SECRET.to_owned(),
    ];
    for s in &secrets {
        assert!(
            !text.contains(s.as_str()),
            "{s} leaked into the logs: {text}"
        );
    }
}
