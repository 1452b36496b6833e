//! Microsoft: the identity platform (v2.0 endpoints, PKCE, rotating refresh tokens) and
//! Microsoft Graph: Outlook mail and Teams channel messages.
//!
//! Outlook lists `me/mailFolders/{folder}/messages` newest first. Its `$filter` always
//! starts with `receivedDateTime gt {cursor}` (the epoch on a first read): Graph wants
//! the `$orderby` property first in the filter, and the agent's own filter is joined with
//! `and` in parentheses. Teams lists a channel's messages (no server-side filter) and
//! keeps those created after the cursor, stopping at the first page that reaches it.
//! Both follow `@odata.nextLink`, which must stay under the configured Graph base: the
//! access token is never sent anywhere else.

use adiuva_core::domain::Millis;
use adiuva_core::ports::ProviderApi;
use adiuva_core::ports::providers::{
    AuthorizeRequest, Provider, ProviderError, Source, SourceItem, SourcePage, SourceQuery,
    TokenSet,
};
use async_trait::async_trait;
use serde_json::Value;
use url::form_urlencoded;

use super::oauth::{TokenEndpoint, authorize_url};
use super::{
    MAX_BODY, MAX_ITEMS, MAX_PAGES, MicrosoftConfig, Session, cut, html_to_text, parse_time,
    segment, str_of,
};
use crate::AdapterError;
use crate::http::HttpClient;

/// The largest Outlook page asked for.
const OUTLOOK_PAGE: u32 = 100;
/// Graph's largest `$top` for channel messages.
const TEAMS_PAGE: u32 = 50;
/// The cursor of a first Outlook read.
const EPOCH: &str = "1970-01-01T00:00:00Z";
/// The longest agent filter passed on.
const MAX_FILTER: usize = 1024;

/// Microsoft (Outlook, Teams) as a [`ProviderApi`].
#[derive(Debug)]
pub struct MicrosoftProvider {
    config: MicrosoftConfig,
    http: HttpClient,
    token: TokenEndpoint,
    graph: url::Url,
}

impl MicrosoftProvider {
    /// A provider over its own HTTP client.
    pub fn new(config: MicrosoftConfig) -> Result<Self, AdapterError> {
        let http = super::http_client(config.timeout, &config.client_secret)?;
        let graph = url::Url::parse(config.graph_url.trim_end_matches('/')).map_err(|e| {
            AdapterError::Unsupported(format!("the Microsoft Graph URL is not a URL: {e}"))
        })?;
        let token = TokenEndpoint {
            http: http.clone(),
            url: format!(
                "{}/oauth2/v2.0/token",
                config.authority_url.trim_end_matches('/')
            ),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            scope: Some(Provider::Microsoft.scopes().join(" ")),
        };
        Ok(Self {
            config,
            http,
            token,
            graph,
        })
    }

    fn base(&self) -> &str {
        self.config.graph_url.trim_end_matches('/')
    }

    /// Whether a nextLink stays under the configured Graph base (same origin, path
    /// below the base's path).
    fn trusted(&self, link: &str) -> bool {
        let Ok(u) = url::Url::parse(link) else {
            return false;
        };
        let base_path = self.graph.path().trim_end_matches('/');
        u.origin() == self.graph.origin()
            && (u.path() == base_path || u.path().starts_with(&format!("{base_path}/")))
    }

    /// Pages of `first` and its nextLinks until `keep` says stop (it returns false) or
    /// pages run out.
    async fn pages(
        &self,
        s: &mut Session<'_>,
        first: String,
        mut keep: impl FnMut(&Value) -> bool,
    ) -> Result<(), ProviderError> {
        let mut url = first;
        for _ in 0..MAX_PAGES {
            let page = s.get(&url).await?;
            if !keep(&page) {
                return Ok(());
            }
            match str_of(&page, "@odata.nextLink") {
                Some(next) if self.trusted(next) => url = next.to_owned(),
                Some(_) => {
                    return Err(ProviderError::Protocol(
                        "Graph sent a nextLink outside its own base URL; not followed".into(),
                    ));
                }
                None => return Ok(()),
            }
        }
        Ok(())
    }

    async fn outlook(
        &self,
        s: &mut Session<'_>,
        query: &SourceQuery,
        max: usize,
    ) -> Result<SourcePage, ProviderError> {
        let folder = query
            .filters
            .get("folder")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .unwrap_or("inbox");
        let user = query
            .filters
            .get("filter")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|f| !f.is_empty());
        if user.is_some_and(|f| f.len() > MAX_FILTER) {
            return Err(ProviderError::Protocol(
                "the Outlook filter is too long".into(),
            ));
        }
        let since = query.cursor.as_deref().unwrap_or(EPOCH);
        if parse_time(since).is_none() {
            return Err(ProviderError::Protocol(
                "the Outlook cursor is not a timestamp".into(),
            ));
        }
        let mut filter = format!("receivedDateTime gt {since}");
        if let Some(f) = user {
            filter.push_str(&format!(" and ({f})"));
        }
        let top = (max as u32).min(OUTLOOK_PAGE).to_string();
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("$top", &top)
            .append_pair(
                "$select",
                "id,conversationId,from,subject,bodyPreview,body,receivedDateTime,webLink",
            )
            .append_pair("$orderby", "receivedDateTime desc")
            .append_pair("$filter", &filter)
            .finish();
        let first = format!(
            "{}/me/mailFolders/{}/messages?{q}",
            self.base(),
            segment(folder)
        );
        let mut items = Vec::new();
        let mut cursor = query.cursor.clone();
        let mut newest = query.cursor.as_deref().and_then(parse_time);
        self.pages(s, first, |page| {
            for m in page
                .get("value")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if items.len() >= max {
                    break;
                }
                let Some(item) = outlook_item(m) else {
                    continue;
                };
                if newest.is_none_or(|n| item.received_at > n) {
                    newest = Some(item.received_at);
                    cursor = str_of(m, "receivedDateTime").map(str::to_owned);
                }
                items.push(item);
            }
            items.len() < max
        })
        .await?;
        items.sort_by_key(|m| std::cmp::Reverse(m.received_at));
        Ok(SourcePage { items, cursor })
    }

    async fn teams(
        &self,
        s: &mut Session<'_>,
        query: &SourceQuery,
        max: usize,
    ) -> Result<SourcePage, ProviderError> {
        let id = |key: &str| {
            query
                .filters
                .get(key)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| ProviderError::Protocol(format!("a Teams read needs {key}")))
        };
        let (team, channel) = (id("team_id")?, id("channel_id")?);
        let since = match query.cursor.as_deref() {
            Some(c) => Some(parse_time(c).ok_or_else(|| {
                ProviderError::Protocol("the Teams cursor is not a timestamp".into())
            })?),
            None => None,
        };
        let top = (max as u32).min(TEAMS_PAGE);
        let first = format!(
            "{}/teams/{}/channels/{}/messages?$top={top}",
            self.base(),
            segment(team),
            segment(channel)
        );
        let mut items: Vec<SourceItem> = Vec::new();
        let mut cursor = query.cursor.clone();
        let mut newest = since;
        self.pages(s, first, |page| {
            let mut reached = false;
            for m in page
                .get("value")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some((item, created)) = teams_item(m) else {
                    continue;
                };
                if since.is_some_and(|c| item.received_at <= c) {
                    reached = true;
                    continue;
                }
                if newest.is_none_or(|n| item.received_at > n) {
                    newest = Some(item.received_at);
                    cursor = Some(created);
                }
                items.push(item);
            }
            // Channel messages come newest first: a page that reaches the cursor is the
            // last one with anything new.
            !reached && items.len() < max
        })
        .await?;
        items.sort_by_key(|m| std::cmp::Reverse(m.received_at));
        items.truncate(max);
        Ok(SourcePage { items, cursor })
    }
}

/// An Outlook message, or `None` without an id or a receivedDateTime.
fn outlook_item(m: &Value) -> Option<SourceItem> {
    let received_at = parse_time(str_of(m, "receivedDateTime")?)?;
    let from = m.get("from").and_then(|f| f.get("emailAddress"));
    let name = from.and_then(|f| str_of(f, "name")).unwrap_or_default();
    let address = from.and_then(|f| str_of(f, "address")).unwrap_or_default();
    let from = match (name.is_empty(), address.is_empty()) {
        (false, false) => format!("{name} <{address}>"),
        (true, false) => address.to_owned(),
        _ => name.to_owned(),
    };
    Some(SourceItem {
        id: str_of(m, "id")?.to_owned(),
        thread_id: str_of(m, "conversationId").map(str::to_owned),
        from,
        subject: str_of(m, "subject").unwrap_or_default().to_owned(),
        snippet: cut(
            str_of(m, "bodyPreview").unwrap_or_default().to_owned(),
            1024,
        ),
        body: body_text(m.get("body")),
        received_at,
        link: str_of(m, "webLink").map(str::to_owned),
    })
}

/// A Teams channel message (not system events nor deleted ones) and its createdDateTime
/// as sent.
fn teams_item(m: &Value) -> Option<(SourceItem, String)> {
    if str_of(m, "messageType").is_some_and(|t| t != "message")
        || m.get("deletedDateTime").is_some_and(|d| !d.is_null())
    {
        return None;
    }
    let created = str_of(m, "createdDateTime")?;
    let received_at = parse_time(created)?;
    let from = m.get("from");
    let from = ["user", "application", "device"]
        .iter()
        .find_map(|k| {
            from.and_then(|f| f.get(*k))
                .and_then(|u| str_of(u, "displayName"))
        })
        .unwrap_or_default()
        .to_owned();
    let body = body_text(m.get("body"));
    let item = SourceItem {
        id: str_of(m, "id")?.to_owned(),
        thread_id: str_of(m, "replyToId").map(str::to_owned),
        from,
        subject: String::new(),
        snippet: cut(body.clone(), 280),
        body,
        received_at,
        link: str_of(m, "webUrl").map(str::to_owned),
    };
    Some((item, created.to_owned()))
}

/// A Graph `itemBody` as text.
fn body_text(body: Option<&Value>) -> String {
    let Some(body) = body else {
        return String::new();
    };
    let content = str_of(body, "content").unwrap_or_default();
    if str_of(body, "contentType").is_some_and(|t| t.eq_ignore_ascii_case("html")) {
        html_to_text(content)
    } else {
        cut(content.to_owned(), MAX_BODY)
    }
}

#[async_trait]
impl ProviderApi for MicrosoftProvider {
    fn provider(&self) -> Provider {
        Provider::Microsoft
    }

    fn authorize_url(&self, request: &AuthorizeRequest) -> String {
        let base = format!(
            "{}/oauth2/v2.0/authorize",
            self.config.authority_url.trim_end_matches('/')
        );
        authorize_url(&base, &self.config.client_id, request, &[])
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
        let max = query.max_items.clamp(1, MAX_ITEMS) as usize;
        let mut s = Session::new(&self.http, self, tokens, now);
        match query.source {
            Source::Outlook => self.outlook(&mut s, query, max).await,
            Source::Teams => self.teams(&mut s, query, max).await,
            Source::Gmail => Err(ProviderError::Protocol(
                "Gmail is read through Google, not Microsoft".into(),
            )),
        }
    }
}
