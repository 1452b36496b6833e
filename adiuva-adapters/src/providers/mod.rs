//! The OAuth providers and their sources, over [`HttpClient`](crate::http::HttpClient):
//! `google.rs` (Google OAuth + the Gmail API) and `microsoft.rs` (the Microsoft identity
//! platform + Microsoft Graph: Outlook mail and Teams channel messages). `oauth.rs` holds
//! what both token endpoints share (the form POST, the token answer, `invalid_grant`).
//! `fake.rs` (feature `testing`) holds local servers speaking both providers' wire
//! formats, token endpoints included.
//!
//! What both sources share lives here: the API GET that refreshes the access token once
//! on a 401 ([`Session`]), the mapping of HTTP failures to [`ProviderError`], HTML reduced
//! to text, and the bounds (items per read, pages per read, body size).

use std::time::Duration;

use adiuva_core::Secret;
use adiuva_core::domain::Millis;
use adiuva_core::ports::ProviderApi;
use adiuva_core::ports::providers::{ProviderError, TokenSet};
use reqwest::header::{AUTHORIZATION, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::AdapterError;
use crate::http::{HttpClient, HttpConfig, HttpError, RetrySchedule, bearer};

#[cfg(feature = "testing")]
pub mod fake;
mod google;
mod microsoft;
mod oauth;

pub use google::GoogleProvider;
pub use microsoft::MicrosoftProvider;

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

/// The most items one read returns, whatever `max_items` asks (a run handles a bounded
/// batch; the cursor brings the rest next time).
pub const MAX_ITEMS: u32 = 500;
/// The most pages one read follows (list pages, history pages, nextLinks).
pub const MAX_PAGES: usize = 50;
/// The longest body kept, in bytes (the contract's 16 KiB).
pub const MAX_BODY: usize = 16 * 1024;
/// The most HTML or text looked at to make a body (a huge mail is cut before parsing).
const MAX_RAW_BODY: usize = 512 * 1024;

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

/// The client both providers use: the configured timeout per attempt, 4 attempts for a
/// 429/503 (each wait the server's `Retry-After`, at most 30 s), the client secret
/// scrubbed from every message.
fn http_client(
    timeout: Duration,
    client_secret: &Secret<String>,
) -> Result<HttpClient, AdapterError> {
    let cfg = HttpConfig {
        connect_timeout: timeout.min(Duration::from_secs(10)),
        timeout,
        retry: RetrySchedule {
            max_retries: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        },
    };
    HttpClient::new(cfg, HeaderMap::new(), [client_secret.clone()])
}

/// Retried API answers: rate limiting and an overloaded or unreachable upstream (not a
/// 500, and never a 401: that one is the refresh's business).
fn retry_api(status: StatusCode, _body: &[u8]) -> bool {
    matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::BAD_GATEWAY
            | StatusCode::GATEWAY_TIMEOUT
    )
}

/// An API failure as the contract's error (401 is handled by [`Session::get`]).
fn api_error(e: HttpError) -> ProviderError {
    match &e {
        HttpError::Status {
            status, message, ..
        } => match *status {
            StatusCode::UNAUTHORIZED => ProviderError::Unauthorized,
            StatusCode::FORBIDDEN => ProviderError::Forbidden(message.clone()),
            StatusCode::NOT_FOUND => ProviderError::NotFound(message.clone()),
            StatusCode::TOO_MANY_REQUESTS => ProviderError::RateLimited,
            s if s.is_server_error() => ProviderError::Unavailable(e.to_string()),
            _ => ProviderError::Protocol(e.to_string()),
        },
        HttpError::Transport { .. } => ProviderError::Unavailable(e.to_string()),
        _ => ProviderError::Protocol(e.to_string()),
    }
}

/// One read's authorised GETs: a 401 refreshes the token set once (for the whole read)
/// and retries the request; a 401 after that is [`ProviderError::Unauthorized`].
pub(crate) struct Session<'a> {
    pub(crate) http: &'a HttpClient,
    pub(crate) api: &'a dyn ProviderApi,
    pub(crate) tokens: &'a mut TokenSet,
    pub(crate) now: Millis,
    refreshed: bool,
}

impl<'a> Session<'a> {
    pub(crate) fn new(
        http: &'a HttpClient,
        api: &'a dyn ProviderApi,
        tokens: &'a mut TokenSet,
        now: Millis,
    ) -> Self {
        Self {
            http,
            api,
            tokens,
            now,
            refreshed: false,
        }
    }

    /// GETs `url` and parses the JSON answer.
    pub(crate) async fn get(&mut self, url: &str) -> Result<Value, ProviderError> {
        loop {
            let token = self.tokens.access_token.expose().clone();
            let auth = bearer(&token).ok_or_else(|| {
                ProviderError::Protocol("the access token is not a header value".into())
            })?;
            let sent = self
                .http
                .call(Method::GET, url)
                .header(AUTHORIZATION, auth)
                .retry_when(retry_api)
                .secret(&token)
                .send()
                .await;
            match sent {
                Ok(body) => {
                    return serde_json::from_slice(&body).map_err(|e| {
                        ProviderError::Protocol(format!("the answer is not JSON: {e}"))
                    });
                }
                Err(e) if e.status() == Some(StatusCode::UNAUTHORIZED) && !self.refreshed => {
                    self.refreshed = true;
                    tracing::debug!(
                        provider = self.api.provider().as_str(),
                        "access token refused; refreshing once"
                    );
                    *self.tokens = self.api.refresh(self.tokens, self.now).await?;
                }
                Err(e) => return Err(api_error(e)),
            }
        }
    }
}

/// A string field.
pub(crate) fn str_of<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

/// `text` cut to at most `max` bytes on a character boundary.
pub(crate) fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// An RFC 3339 timestamp in ms since the epoch.
pub(crate) fn parse_time(s: &str) -> Option<Millis> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// One path segment percent-encoded (Teams ids hold `:` and `@`, a folder name may hold
/// anything): everything but RFC 3986's unreserved characters is escaped.
pub(crate) fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// HTML reduced to text: tags dropped (block ends become line breaks), `script` and
/// `style` contents dropped, the common entities decoded, blank runs collapsed; the
/// result cut to [`MAX_BODY`]. Not a full HTML parser: enough for a model to read mail.
pub fn html_to_text(html: &str) -> String {
    let html = cut(html.to_owned(), MAX_RAW_BODY);
    let mut out = String::with_capacity(html.len().min(MAX_BODY * 2));
    let mut rest = html.as_str();
    while let Some(lt) = rest.find('<') {
        push_text(&mut out, &rest[..lt]);
        let after = &rest[lt + 1..];
        if !after.starts_with(|c: char| c.is_ascii_alphabetic() || matches!(c, '/' | '!' | '?')) {
            // A `<` that opens no tag (`3 < 4`) is text.
            out.push('<');
            rest = after;
            continue;
        }
        let Some(gt) = after.find('>') else {
            // An unclosed `<`: the rest is text.
            push_text(&mut out, &rest[lt..]);
            rest = "";
            break;
        };
        let tag = after[..gt].trim().to_ascii_lowercase();
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        rest = &after[gt + 1..];
        if !tag.starts_with('/') && (name == "script" || name == "style") {
            // Skip to the closing tag (or the end).
            let close = format!("</{name}");
            let lower = rest.to_ascii_lowercase();
            rest = match lower.find(&close) {
                Some(i) => rest[i..].find('>').map_or("", |j| &rest[i + j + 1..]),
                None => "",
            };
            continue;
        }
        if matches!(
            name.as_str(),
            "br" | "p"
                | "div"
                | "li"
                | "tr"
                | "h1"
                | "h2"
                | "h3"
                | "h4"
                | "h5"
                | "h6"
                | "blockquote"
        ) && !out.ends_with('\n')
        {
            out.push('\n');
        }
        if out.len() > MAX_BODY * 2 {
            break;
        }
    }
    push_text(&mut out, rest);
    cut(collapse(&out), MAX_BODY)
}

/// Appends text with its entities decoded.
fn push_text(out: &mut String, text: &str) {
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp..];
        let end = after.find(';').filter(|&i| i <= 10);
        let decoded = end.and_then(|i| entity(&after[1..i]).map(|c| (c, i)));
        match decoded {
            Some((c, i)) => {
                out.push(c);
                rest = &after[i + 1..];
            }
            None => {
                out.push('&');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
}

fn entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        _ => {
            let num = name.strip_prefix('#')?;
            let code = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => num.parse().ok()?,
            };
            char::from_u32(code)?
        }
    })
}

/// Runs of spaces and tabs become one space; lines are trimmed; more than one blank line
/// becomes one.
fn collapse(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines() {
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        out.push_str(&line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_becomes_readable_text() {
        let html = "<html><head><style>p{color:red}</style><script>alert(1)</script></head>\
                    <body><p>Hello&nbsp;<b>Ann</b> &amp; co,</p><p>a &lt;b&gt; &#39;x&#x27;</p>\
                    <div>line<br>two</div>&unknown; 3 < 4</body></html>";
        assert_eq!(
            html_to_text(html),
            "Hello Ann & co,\na <b> 'x'\nline\ntwo\n&unknown; 3 < 4"
        );
        let long = format!("<p>{}</p>", "é".repeat(20_000));
        let text = html_to_text(&long);
        assert!(text.len() <= MAX_BODY && text.starts_with('é'));
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("19:abc@thread.tacv2"), "19%3Aabc%40thread.tacv2");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn cut_respects_char_boundaries() {
        assert_eq!(cut("aé".into(), 2), "a");
        assert_eq!(cut("abc".into(), 5), "abc");
    }
}
