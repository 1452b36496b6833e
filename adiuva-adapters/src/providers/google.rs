//! Google: OAuth (offline access, PKCE) and the Gmail API.
//!
//! A first read lists `users/me/messages` with the agent's `q` (newest first, paging by
//! `nextPageToken` up to `max_items`) and gets each message (`format=full`); its cursor
//! is the newest `historyId` seen (or the profile's when the list is empty). A later read
//! asks `users/me/history` for messages added since the cursor; Gmail's history ignores
//! `q`, so with a query the added ids are kept only if the query's list (its first pages)
//! holds them. A 404 on history (the cursor is too old) falls back to a first read.

use std::collections::HashSet;

use adiuva_core::domain::Millis;
use adiuva_core::ports::ProviderApi;
use adiuva_core::ports::providers::{
    AuthorizeRequest, Provider, ProviderError, Source, SourceItem, SourcePage, SourceQuery,
    TokenSet,
};
use async_trait::async_trait;
use base64::Engine as _;
use serde_json::Value;
use url::form_urlencoded;

use super::oauth::{TokenEndpoint, authorize_url};
use super::{GoogleConfig, MAX_BODY, MAX_ITEMS, MAX_PAGES, Session, cut, html_to_text, str_of};
use crate::AdapterError;
use crate::http::HttpClient;

/// Gmail's largest `maxResults` for a list.
const MAX_LIST_PAGE: u32 = 500;
/// The longest agent query passed on.
const MAX_QUERY: usize = 1024;
/// How many pages of the query's list are searched for ids history reported.
const QUERY_PAGES: usize = 5;

/// Google (Gmail) as a [`ProviderApi`].
#[derive(Debug)]
pub struct GoogleProvider {
    config: GoogleConfig,
    http: HttpClient,
    token: TokenEndpoint,
}

impl GoogleProvider {
    /// A provider over its own HTTP client.
    pub fn new(config: GoogleConfig) -> Result<Self, AdapterError> {
        let http = super::http_client(config.timeout, &config.client_secret)?;
        let token = TokenEndpoint {
            http: http.clone(),
            url: config.token_url.clone(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            scope: None,
        };
        Ok(Self {
            config,
            http,
            token,
        })
    }

    fn api(&self, path_and_query: &str) -> String {
        format!(
            "{}/gmail/v1/users/me/{path_and_query}",
            self.config.gmail_api_url.trim_end_matches('/')
        )
    }
}

fn query_string(pairs: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if !v.is_empty() {
            q.append_pair(k, v);
        }
    }
    q.finish()
}

/// A history id: Gmail sends it as a decimal string.
fn history_id(v: &Value) -> Option<u64> {
    match v.get("historyId")? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

#[async_trait]
impl ProviderApi for GoogleProvider {
    fn provider(&self) -> Provider {
        Provider::Google
    }

    fn authorize_url(&self, request: &AuthorizeRequest) -> String {
        authorize_url(
            &self.config.auth_url,
            &self.config.client_id,
            request,
            &[("access_type", "offline"), ("prompt", "consent")],
        )
    }

    async fn exchange_code(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
        now: Millis,
    ) -> Result<TokenSet, ProviderError> {
        self.token.exchange(code, verifier, redirect_uri, now).await
    }

    async fn refresh(&self, tokens: &TokenSet, now: Millis) -> Result<TokenSet, ProviderError> {
        self.token.refresh(tokens, now).await
    }

    async fn read(
        &self,
        tokens: &mut TokenSet,
        query: &SourceQuery,
        now: Millis,
    ) -> Result<SourcePage, ProviderError> {
        if query.source != Source::Gmail {
            return Err(ProviderError::Protocol(format!(
                "{} is not read through Google",
                query.source.as_str()
            )));
        }
        let max = query.max_items.clamp(1, MAX_ITEMS) as usize;
        let q = query
            .filters
            .get("query")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_owned();
        if q.len() > MAX_QUERY {
            return Err(ProviderError::Protocol(
                "the Gmail query is too long".into(),
            ));
        }
        let mut s = Session::new(&self.http, self, tokens, now);
        if let Some(cursor) = query.cursor.as_deref().and_then(|c| c.parse::<u64>().ok()) {
            match self.incremental(&mut s, cursor, &q, max).await {
                Err(ProviderError::NotFound(_)) => {
                    tracing::info!("gmail history cursor too old; reading the newest messages");
                }
                other => return other,
            }
        }
        self.first_read(&mut s, &q, max).await
    }
}

impl GoogleProvider {
    /// The newest `max` messages matching `q`.
    async fn first_read(
        &self,
        s: &mut Session<'_>,
        q: &str,
        max: usize,
    ) -> Result<SourcePage, ProviderError> {
        let ids = self.list(s, q, max, MAX_PAGES).await?;
        let mut items = Vec::with_capacity(ids.len());
        let mut newest: Option<u64> = None;
        for id in &ids {
            if let Some((item, hid)) = self.message(s, id).await? {
                newest = newest.max(hid);
                items.push(item);
            }
        }
        let cursor = match newest {
            Some(h) => h,
            None => {
                let profile = s.get(&self.api("profile")).await?;
                history_id(&profile).ok_or_else(|| {
                    ProviderError::Protocol("the Gmail profile has no historyId".into())
                })?
            }
        };
        items.sort_by_key(|m| std::cmp::Reverse(m.received_at));
        Ok(SourcePage {
            items,
            cursor: Some(cursor.to_string()),
        })
    }

    /// Message ids of the list for `q`, newest first, at most `max` and `pages` pages.
    async fn list(
        &self,
        s: &mut Session<'_>,
        q: &str,
        max: usize,
        pages: usize,
    ) -> Result<Vec<String>, ProviderError> {
        let mut ids = Vec::new();
        let mut page_token = String::new();
        for _ in 0..pages {
            let want = (max - ids.len()).min(MAX_LIST_PAGE as usize).to_string();
            let url = self.api(&format!(
                "messages?{}",
                query_string(&[("q", q), ("maxResults", &want), ("pageToken", &page_token)])
            ));
            let page = s.get(&url).await?;
            for m in page
                .get("messages")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(id) = str_of(m, "id")
                    && ids.len() < max
                {
                    ids.push(id.to_owned());
                }
            }
            match str_of(&page, "nextPageToken") {
                Some(t) if ids.len() < max && !t.is_empty() => page_token = t.to_owned(),
                _ => break,
            }
        }
        Ok(ids)
    }

    /// Messages added since `cursor` (history), filtered by `q`; `NotFound` when the
    /// cursor is too old.
    async fn incremental(
        &self,
        s: &mut Session<'_>,
        cursor: u64,
        q: &str,
        max: usize,
    ) -> Result<SourcePage, ProviderError> {
        let mut added: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        let mut newest = cursor;
        let mut page_token = String::new();
        let start = cursor.to_string();
        for _ in 0..MAX_PAGES {
            let url = self.api(&format!(
                "history?{}",
                query_string(&[
                    ("startHistoryId", &start),
                    ("historyTypes", "messageAdded"),
                    ("maxResults", "500"),
                    ("pageToken", &page_token),
                ])
            ));
            let page = s.get(&url).await?;
            newest = newest.max(history_id(&page).unwrap_or(cursor));
            for record in page
                .get("history")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let msgs = record.get("messagesAdded").and_then(Value::as_array);
                for m in msgs.into_iter().flatten() {
                    if let Some(id) = m.get("message").and_then(|m| str_of(m, "id"))
                        && seen.insert(id.to_owned())
                    {
                        added.push(id.to_owned());
                    }
                }
            }
            match str_of(&page, "nextPageToken") {
                Some(t) if !t.is_empty() => page_token = t.to_owned(),
                _ => break,
            }
        }
        if !q.is_empty() && !added.is_empty() {
            let matching: HashSet<String> = self
                .list(s, q, MAX_LIST_PAGE as usize * QUERY_PAGES, QUERY_PAGES)
                .await?
                .into_iter()
                .collect();
            added.retain(|id| matching.contains(id));
        }
        // History is oldest first: keep the newest `max`.
        let skip = added.len().saturating_sub(max);
        let mut items = Vec::new();
        for id in &added[skip..] {
            if let Some((item, _)) = self.message(s, id).await? {
                items.push(item);
            }
        }
        items.sort_by_key(|m| std::cmp::Reverse(m.received_at));
        Ok(SourcePage {
            items,
            cursor: Some(newest.to_string()),
        })
    }

    /// One message, normalised, with its history id; `None` if it is gone (deleted
    /// between the list and the get).
    async fn message(
        &self,
        s: &mut Session<'_>,
        id: &str,
    ) -> Result<Option<(SourceItem, Option<u64>)>, ProviderError> {
        let url = self.api(&format!("messages/{}?format=full", super::segment(id)));
        let m = match s.get(&url).await {
            Ok(m) => m,
            Err(ProviderError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let payload = m.get("payload").cloned().unwrap_or(Value::Null);
        let header = |name: &str| {
            payload
                .get("headers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|h| str_of(h, "name").is_some_and(|n| n.eq_ignore_ascii_case(name)))
                .and_then(|h| str_of(h, "value"))
                .unwrap_or_default()
                .to_owned()
        };
        let body = match part(&payload, "text/plain", 0) {
            Some(text) => cut(text, MAX_BODY),
            None => part(&payload, "text/html", 0)
                .map(|h| html_to_text(&h))
                .unwrap_or_default(),
        };
        let received_at = match m.get("internalDate") {
            Some(Value::String(s)) => s.parse().ok(),
            Some(Value::Number(n)) => n.as_i64(),
            _ => None,
        }
        .unwrap_or(0);
        let id = str_of(&m, "id").unwrap_or(id).to_owned();
        let item = SourceItem {
            link: Some(format!("https://mail.google.com/mail/u/0/#all/{id}")),
            thread_id: str_of(&m, "threadId").map(str::to_owned),
            from: header("From"),
            subject: header("Subject"),
            snippet: cut(str_of(&m, "snippet").unwrap_or_default().to_owned(), 1024),
            body,
            received_at,
            id,
        };
        Ok(Some((item, history_id(&m))))
    }
}

/// The first part of `mime` in a message payload (depth-first, bounded depth), decoded
/// from base64url.
fn part(p: &Value, mime: &str, depth: usize) -> Option<String> {
    if depth > 8 {
        return None;
    }
    if str_of(p, "mimeType").is_some_and(|m| m.eq_ignore_ascii_case(mime))
        && let Some(data) = p.get("body").and_then(|b| str_of(b, "data"))
    {
        let data = data.trim_end_matches('=');
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(data)
            .ok()?;
        return Some(String::from_utf8_lossy(&bytes).into_owned());
    }
    p.get("parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find_map(|c| part(c, mime, depth + 1))
}
