//! OAuth providers and the mail/message sources behind them (Google: Gmail; Microsoft
//! Graph: Outlook, Teams). Each provider's wire format stays inside its adapter; core
//! sees token sets, normalised items and these errors.
//!
//! Contract (every adapter):
//! - `authorize_url` builds the provider's consent URL: `response_type=code`, the
//!   client id, `redirect_uri`, the scopes space-separated, `state`, `code_challenge`
//!   with `code_challenge_method=S256`; Google adds `access_type=offline` and
//!   `prompt=consent` (so a refresh token is issued).
//! - `exchange_code` / `refresh` POST the token endpoint (form body, client id and
//!   secret); a provider's `invalid_grant` is [`ProviderError::InvalidGrant`] and is never
//!   retried. A refresh answer without a `refresh_token` keeps the old one; with one
//!   (Microsoft rotates them) the new one replaces it.
//! - `read` lists the source's items matching the query's filters, following the
//!   provider's paging (`nextPageToken`, `@odata.nextLink`) up to `max_items`, and
//!   returns the cursor to store for the next incremental read. A 401 refreshes the
//!   access token once (updating `tokens`) and retries; a second 401 is
//!   [`ProviderError::Unauthorized`]. A 429 or 503 waits its `Retry-After` (through the
//!   shared HTTP client) and retries a bounded number of times.
//! - No token, code or verifier appears in an error's text or a log line.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::Millis;
use crate::secret::Secret;

/// An OAuth provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// Google (Gmail).
    Google,
    /// Microsoft (Graph: Outlook, Teams).
    Microsoft,
}

impl Provider {
    /// Every provider.
    pub const ALL: [Provider; 2] = [Provider::Google, Provider::Microsoft];

    /// `google` / `microsoft` (the path segment of `/oauth/{provider}` and the configs'
    /// `provider`).
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Google => "google",
            Provider::Microsoft => "microsoft",
        }
    }

    /// Parses [`Provider::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "google" => Some(Provider::Google),
            "microsoft" => Some(Provider::Microsoft),
            _ => None,
        }
    }

    /// The scopes an authorisation asks for (the list).
    pub fn scopes(self) -> &'static [&'static str] {
        match self {
            Provider::Google => &["https://www.googleapis.com/auth/gmail.readonly"],
            Provider::Microsoft => &[
                "offline_access",
                "https://graph.microsoft.com/Mail.Read",
                "https://graph.microsoft.com/ChannelMessage.Read.All",
            ],
        }
    }
}

/// Where a cloud agent reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Gmail messages (Google).
    Gmail,
    /// Outlook mail (Microsoft Graph).
    Outlook,
    /// Teams channel messages (Microsoft Graph).
    Teams,
}

impl Source {
    /// `gmail` / `outlook` / `teams`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Gmail => "gmail",
            Source::Outlook => "outlook",
            Source::Teams => "teams",
        }
    }

    /// The provider that serves it.
    pub fn provider(self) -> Provider {
        match self {
            Source::Gmail => Provider::Google,
            Source::Outlook | Source::Teams => Provider::Microsoft,
        }
    }
}

/// An OAuth token set. Core seals it (with the server's token key) before it is stored
/// or returned; it is never logged (`Debug` prints `***` for the tokens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSet {
    /// The bearer token for API calls.
    pub access_token: Secret<String>,
    /// The long-lived token that gets new access tokens (`None` if the provider sent none).
    pub refresh_token: Option<Secret<String>>,
    /// When the access token expires (ms).
    pub expires_at: Millis,
    /// The scopes granted, space-separated.
    pub scope: String,
}

/// What [`ProviderApi::authorize_url`] puts in the consent URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizeRequest {
    /// The signed, expiring state (opaque to the adapter).
    pub state: String,
    /// `BASE64URL(SHA256(verifier))`, unpadded.
    pub code_challenge: String,
    /// Where the provider sends the browser back.
    pub redirect_uri: String,
    /// The scopes (see [`Provider::scopes`]).
    pub scopes: Vec<String>,
}

/// What to read.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceQuery {
    /// Which source.
    pub source: Source,
    /// The agent's filters: Gmail `{"query": "is:unread"}`; Outlook `{"filter": "isRead
    /// eq false", "folder": "inbox"}`; Teams `{"team_id": …, "channel_id": …}` (both
    /// required; validated by core).
    pub filters: Map<String, Value>,
    /// The previous read's cursor (`None`: first read, the newest `max_items`).
    pub cursor: Option<String>,
    /// At most this many items.
    pub max_items: u32,
}

/// A normalised mail or message. Content: lives only for the run (rule 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceItem {
    /// The provider's id.
    pub id: String,
    /// Thread / conversation id, when the source has one.
    pub thread_id: Option<String>,
    /// Sender ("Name <address>" or the display name).
    pub from: String,
    /// Subject (empty for Teams messages).
    pub subject: String,
    /// A short preview.
    pub snippet: String,
    /// The text (HTML reduced to text), at most 16 KiB.
    pub body: String,
    /// Received or created (ms).
    pub received_at: Millis,
    /// A link that opens it in the provider's app, when known.
    pub link: Option<String>,
}

/// The result of [`ProviderApi::read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePage {
    /// Newest first.
    pub items: Vec<SourceItem>,
    /// The cursor for the next incremental read (a Gmail `historyId`, a Graph timestamp).
    pub cursor: Option<String>,
}

/// What a provider call can fail with (texts never carry a token or code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// `invalid_grant`: the refresh token or code is dead; the user must authorise again.
    #[error("the provider refused the grant: {0}")]
    InvalidGrant(String),
    /// Still 401 after one refresh.
    #[error("the provider rejected the access token")]
    Unauthorized,
    /// 403: the token lacks a scope, or the resource is not the user's.
    #[error("the provider refused access: {0}")]
    Forbidden(String),
    /// 404 of a named resource (a Teams channel that does not exist).
    #[error("not found at the provider: {0}")]
    NotFound(String),
    /// Still rate limited after the retries.
    #[error("the provider is rate limiting")]
    RateLimited,
    /// Network failure, 5xx, timeout.
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    /// An answer that does not parse.
    #[error("unexpected answer from the provider: {0}")]
    Protocol(String),
    /// The provider is not configured on this server (no client id).
    #[error("{0} is not configured on this server")]
    NotConfigured(&'static str),
}

/// One OAuth provider and its sources.
#[async_trait]
pub trait ProviderApi: Send + Sync {
    /// Which provider.
    fn provider(&self) -> Provider;
    /// The consent URL (see the module docs).
    fn authorize_url(&self, request: &AuthorizeRequest) -> String;
    /// Exchanges an authorisation code (with its PKCE verifier).
    async fn exchange_code(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
        now: Millis,
    ) -> Result<TokenSet, ProviderError>;
    /// Gets a new access token with the refresh token (`InvalidGrant` when there is none).
    async fn refresh(&self, tokens: &TokenSet, now: Millis) -> Result<TokenSet, ProviderError>;
    /// Reads a source (see the module docs); `tokens` is updated when a 401 made it
    /// refresh.
    async fn read(
        &self,
        tokens: &mut TokenSet,
        query: &SourceQuery,
        now: Millis,
    ) -> Result<SourcePage, ProviderError>;
}
