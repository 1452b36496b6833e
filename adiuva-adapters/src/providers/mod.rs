//! The OAuth providers and their sources, over [`HttpClient`](crate::http::HttpClient):
//! `google.rs` (Google OAuth + the Gmail API) and `microsoft.rs` (the Microsoft identity
//! platform + Microsoft Graph: Outlook mail and Teams channel messages). `oauth.rs` holds
//! what both token endpoints share (the form POST, the token answer, `invalid_grant`).
//! `fake.rs` (feature `testing`) holds local servers speaking both providers' wire
//! formats, token endpoints included.

use std::time::Duration;

use adiuva_core::Secret;

use crate::AdapterError;

#[cfg(feature = "testing")]
pub mod fake;

/// Google's production endpoints (the settings' defaults).
pub const GOOGLE_AUTH_URL: &str = "https://accounts.google.com/o/oauth2/v2/auth";
/// Google's token endpoint.
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
/// The Gmail API's base (paths are `/gmail/v1/users/me/…`).
pub const GMAIL_API_URL: &str = "https://gmail.googleapis.com";
/// Microsoft's authority (`{authority}/oauth2/v2.0/authorize` and `/token`).
pub const MICROSOFT_AUTHORITY_URL: &str = "https://login.microsoftonline.com/common";
/// Microsoft Graph's base (paths are `/me/messages`, `/teams/{id}/channels/{id}/messages`).
pub const MS_GRAPH_URL: &str = "https://graph.microsoft.com/v1.0";

/// Google's settings.
#[derive(Debug, Clone)]
pub struct GoogleConfig {
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret.
    pub client_secret: Secret<String>,
    /// Consent page.
    pub auth_url: String,
    /// Token endpoint.
    pub token_url: String,
    /// Gmail API base.
    pub gmail_api_url: String,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// Microsoft's settings.
#[derive(Debug, Clone)]
pub struct MicrosoftConfig {
    /// OAuth client (application) id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: Secret<String>,
    /// Authority (`…/common`, `…/{tenant}`).
    pub authority_url: String,
    /// Graph base.
    pub graph_url: String,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// Google (Gmail) as a [`ProviderApi`](adiuva_core::ports::ProviderApi).
#[derive(Debug)]
pub struct GoogleProvider {
    _config: GoogleConfig,
}

impl GoogleProvider {
    /// A provider over its own HTTP client.
    pub fn new(config: GoogleConfig) -> Result<Self, AdapterError> {
        let _ = config;
        todo!("CONTRACT h-prov")
    }
}

/// Microsoft (Outlook, Teams) as a [`ProviderApi`](adiuva_core::ports::ProviderApi).
#[derive(Debug)]
pub struct MicrosoftProvider {
    _config: MicrosoftConfig,
}

impl MicrosoftProvider {
    /// A provider over its own HTTP client.
    pub fn new(config: MicrosoftConfig) -> Result<Self, AdapterError> {
        let _ = config;
        todo!("CONTRACT h-prov")
    }
}
