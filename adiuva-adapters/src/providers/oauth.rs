//! What Google's and Microsoft's token endpoints share: the consent URL's query, the form
//! POST (client id and secret in the body), the token answer, and the error mapping
//! (`invalid_grant` is [`ProviderError::InvalidGrant`] and never retried).

use adiuva_core::Secret;
use adiuva_core::domain::Millis;
use adiuva_core::ports::providers::{AuthorizeRequest, ProviderError, TokenSet};
use bytes::Bytes;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use url::form_urlencoded;

use crate::http::{HttpClient, HttpError};

/// The longest lifetime believed from a token answer (a bogus `expires_in` must not make
/// a token look valid for years).
const MAX_EXPIRES_IN_SECS: i64 = 24 * 3600;

/// `base?query` with the contract's parameters and `extra` (Google's offline access).
pub(crate) fn authorize_url(
    base: &str,
    client_id: &str,
    request: &AuthorizeRequest,
    extra: &[(&str, &str)],
) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", &request.redirect_uri)
        .append_pair("scope", &request.scopes.join(" "))
        .append_pair("state", &request.state)
        .append_pair("code_challenge", &request.code_challenge)
        .append_pair("code_challenge_method", "S256");
    for (k, v) in extra {
        q.append_pair(k, v);
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{}", q.finish())
}

/// One provider's token endpoint.
#[derive(Debug, Clone)]
pub(crate) struct TokenEndpoint {
    pub(crate) http: HttpClient,
    pub(crate) url: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: Secret<String>,
    /// Microsoft wants the scopes on every token request; Google does not.
    pub(crate) scope: Option<String>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<Value>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

/// Token calls are retried on 429 and 503 only (the server did not act on them).
fn retry_token(status: StatusCode, _body: &[u8]) -> bool {
    matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    )
}

impl TokenEndpoint {
    /// The authorization-code grant (with the PKCE verifier).
    pub(crate) async fn exchange(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
        now: Millis,
    ) -> Result<TokenSet, ProviderError> {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", redirect_uri),
        ];
        self.post(&form, &[code, verifier], None, now).await
    }

    /// The refresh-token grant; an answer without a refresh token keeps the old one.
    pub(crate) async fn refresh(
        &self,
        tokens: &TokenSet,
        now: Millis,
    ) -> Result<TokenSet, ProviderError> {
        let Some(refresh) = &tokens.refresh_token else {
            return Err(ProviderError::InvalidGrant(
                "no refresh token was issued; authorise again".into(),
            ));
        };
        let refresh = refresh.expose().as_str();
        let form = [("grant_type", "refresh_token"), ("refresh_token", refresh)];
        self.post(
            &form,
            &[refresh, tokens.access_token.expose()],
            Some(tokens),
            now,
        )
        .await
    }

    async fn post(
        &self,
        form: &[(&str, &str)],
        secrets: &[&str],
        previous: Option<&TokenSet>,
        now: Millis,
    ) -> Result<TokenSet, ProviderError> {
        // The serializer is not `Send`: it must be gone before the first await.
        let body = {
            let mut body = form_urlencoded::Serializer::new(String::new());
            body.append_pair("client_id", &self.client_id)
                .append_pair("client_secret", self.client_secret.expose());
            for (k, v) in form {
                body.append_pair(k, v);
            }
            if let Some(scope) = &self.scope {
                body.append_pair("scope", scope);
            }
            body.finish()
        };
        let mut call = self
            .http
            .call(Method::POST, &self.url)
            .body("application/x-www-form-urlencoded", Bytes::from(body))
            .retry_when(retry_token)
            // A 429/503 means the grant was not looked at, so asking again is safe. (After
            // a timeout a replayed code fails as `invalid_grant`: the same outcome, the
            // user authorises again.)
            .replay_safe();
        for s in secrets {
            call = call.secret(s);
        }
        let answer = call.send().await.map_err(token_error)?;
        let answer: TokenAnswer = serde_json::from_slice(&answer).map_err(|e| {
            ProviderError::Protocol(format!("the token answer does not parse: {e}"))
        })?;
        if answer.access_token.trim().is_empty() {
            return Err(ProviderError::Protocol(
                "the token answer has no access token".into(),
            ));
        }
        let expires_in = match &answer.expires_in {
            Some(Value::Number(n)) => n.as_i64(),
            // Some servers send it as a string.
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        }
        .unwrap_or(3600)
        .clamp(0, MAX_EXPIRES_IN_SECS);
        let refresh_token = match answer.refresh_token.filter(|r| !r.is_empty()) {
            Some(r) => Some(Secret::new(r)),
            None => previous.and_then(|p| p.refresh_token.clone()),
        };
        let scope = answer
            .scope
            .or_else(|| previous.map(|p| p.scope.clone()))
            .or_else(|| self.scope.clone())
            .unwrap_or_default();
        Ok(TokenSet {
            access_token: Secret::new(answer.access_token),
            refresh_token,
            expires_at: now.saturating_add(expires_in * 1000),
            scope,
        })
    }
}

/// A token endpoint failure: `{"error":"invalid_grant"}` is the user's grant gone; other
/// refusals are this server's configuration (`invalid_client`) or a broken answer.
fn token_error(e: HttpError) -> ProviderError {
    let HttpError::Status {
        status,
        ref message,
        ref body,
        ..
    } = e
    else {
        return super::api_error(e);
    };
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let code = parsed
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let description = parsed
        .as_ref()
        .and_then(|v| v.get("error_description"))
        .and_then(Value::as_str)
        .map(|d| crate::http::shorten(d.to_owned()));
    let text = match description {
        Some(d) => format!("{code}: {d}"),
        None => message.clone(),
    };
    match (status, code) {
        (_, "invalid_grant") => ProviderError::InvalidGrant(text),
        (StatusCode::TOO_MANY_REQUESTS, _) => ProviderError::RateLimited,
        (StatusCode::FORBIDDEN, _) => ProviderError::Forbidden(text),
        (s, _) if s.is_server_error() => ProviderError::Unavailable(e.to_string()),
        _ => ProviderError::Protocol(format!("the token endpoint refused: HTTP {status}: {text}")),
    }
}
