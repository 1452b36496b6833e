//! `/oauth/{provider}/*` (issue 12): connecting Google (Gmail) or Microsoft (Outlook,
//! Teams) for cloud agents. The flow: `authorize` answers the provider's consent URL
//! (PKCE S256 and a sealed, expiring `state` bound to the user); the provider sends the
//! browser to `callback`, which exchanges the code and answers the token set sealed
//! with the server's `oauth_token_key` (`encrypted_token`, for
//! `CloudAgentConfigCreate.oauth_token_encrypted`); `refresh` renews a sealed set.
//! No token, code, verifier or state is ever logged or answered in the clear.

use adiuva_core::Adiuva;
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::{ApiTags, BearerAuth};
use crate::api_errors;

/// Where to send the user's browser.
#[derive(Debug, Object)]
pub struct OAuthAuthorizeResponse {
    /// The provider's consent page, with this server's callback as `redirect_uri`.
    pub authorization_url: String,
}

/// A token set sealed with the server's key (opaque to clients).
#[derive(Debug, Object)]
pub struct OAuthTokenResponse {
    /// Store it in a cloud agent (`oauth_token_encrypted`); only this server opens it.
    pub encrypted_token: String,
}

/// A sealed token set to renew.
#[derive(Debug, Object)]
pub struct OAuthRefreshRequest {
    /// An `encrypted_token` this server answered for this provider.
    pub encrypted_token: String,
}

api_errors!(
    /// Errors of starting an authorisation.
    OAuthAuthorizeError {
        401 => Unauthorized [unauthorized]: "Missing or invalid access token.",
        404 => NotFound [provider_not_found]: "`provider_not_found`: not `google` or `microsoft`.",
    }
    unavailable [oauth_not_configured]
);

api_errors!(
    /// Errors of the provider's redirect back.
    OAuthCallbackError {
        400 => BadRequest [invalid_state, invalid_grant, oauth_denied]: "`oauth_denied`: the user (or the provider) refused consent; `invalid_state`: the state is not one this server issued for this provider, or it expired; `invalid_grant`: the provider refused the code (used, expired, or for another client).",
        404 => NotFound [provider_not_found]: "`provider_not_found`: not `google` or `microsoft`.",
        422 => Unprocessable [validation_error]: "`code` or `state` is missing or too long.",
        502 => BadGateway [oauth_provider_error]: "The provider's token endpoint failed or answered something unusable.",
    }
    unavailable [oauth_not_configured, oauth_provider_unavailable]
);

api_errors!(
    /// Errors of refreshing a token set.
    OAuthRefreshError {
        400 => BadRequest [invalid_grant]: "`invalid_grant`: the provider refused the refresh token; the agents that held it are paused (`needs_reauth`). Connect again.",
        401 => Unauthorized [unauthorized]: "Missing or invalid access token.",
        404 => NotFound [provider_not_found]: "`provider_not_found`: not `google` or `microsoft`.",
        413 => PayloadTooLarge [payload_too_large]: "The body is over the size limit.",
        415 => UnsupportedMediaType [unsupported_media_type]: "The body is not JSON.",
        422 => Unprocessable [validation_error, malformed_json]: "Malformed JSON, or an `encrypted_token` that does not open or is another provider's.",
        502 => BadGateway [oauth_provider_error]: "The provider's token endpoint failed or answered something unusable.",
    }
    unavailable [oauth_not_configured, oauth_provider_unavailable]
);

/// Longest `code` or `state` accepted (providers' codes are a few hundred characters;
/// a sealed state well under a kilobyte).
const MAX_PARAM_CHARS: usize = 4096;

/// OAuth for cloud agents.
pub struct OAuthApi;

#[OpenApi(tag = "ApiTags::Agents")]
impl OAuthApi {
    /// The consent URL for `provider` (`google` or `microsoft`). Open it in the user's
    /// browser; the provider sends it back to `GET /oauth/{provider}/callback`.
    #[oai(
        path = "/oauth/:provider/authorize",
        method = "get",
        operation_id = "oauth_authorize"
    )]
    async fn authorize(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
        provider: Path<String>,
    ) -> Result<Json<OAuthAuthorizeResponse>, OAuthAuthorizeError> {
        let url = app.agents().oauth_authorize(&auth.0, &provider.0).await?;
        Ok(Json(OAuthAuthorizeResponse {
            authorization_url: url,
        }))
    }

    /// Where the provider sends the browser back. Takes no token: the `state` names
    /// the user (sealed, expiring, bound to this provider). Answers the sealed token set.
    #[oai(
        path = "/oauth/:provider/callback",
        method = "get",
        operation_id = "oauth_callback"
    )]
    async fn callback(
        &self,
        app: Data<&Adiuva>,
        provider: Path<String>,
        /// The authorisation code (absent when consent was refused).
        code: Query<Option<String>>,
        /// The state `authorize` put in the consent URL.
        state: Query<Option<String>>,
        /// Set by the provider instead of `code` when consent was refused
        /// (`access_denied`) or failed.
        error: Query<Option<String>>,
    ) -> Result<Json<OAuthTokenResponse>, OAuthCallbackError> {
        // An unknown provider is a 404 whatever the query says.
        if adiuva_core::ports::providers::Provider::parse(&provider.0).is_none() {
            return Err(adiuva_core::Error::NotFound("provider").into());
        }
        if let Some(err) = error.0.as_deref() {
            return Err(adiuva_core::Error::BadRequest {
                code: "oauth_denied",
                detail: denied_detail(err),
            }
            .into());
        }
        let param = |v: Option<String>, name: &'static str| {
            v.filter(|v| !v.is_empty())
                .ok_or_else(|| adiuva_core::Error::validation(name, format!("{name} is required")))
                .and_then(|v| {
                    if v.chars().count() > MAX_PARAM_CHARS {
                        Err(adiuva_core::Error::validation(
                            name,
                            format!("{name} is longer than {MAX_PARAM_CHARS} characters"),
                        ))
                    } else {
                        Ok(v)
                    }
                })
        };
        let code = param(code.0, "code")?;
        let state = param(state.0, "state")?;
        let sealed = app
            .agents()
            .oauth_callback(&provider.0, &code, &state)
            .await?;
        Ok(Json(OAuthTokenResponse {
            encrypted_token: sealed,
        }))
    }

    /// Refresh a sealed token set now (runs refresh on their own when a token expires).
    /// Microsoft rotates refresh tokens: use the answer from now on; your agents that
    /// held the old one are updated.
    #[oai(
        path = "/oauth/:provider/refresh",
        method = "post",
        operation_id = "oauth_refresh"
    )]
    async fn refresh(
        &self,
        app: Data<&Adiuva>,
        auth: BearerAuth,
        provider: Path<String>,
        body: Json<OAuthRefreshRequest>,
    ) -> Result<Json<OAuthTokenResponse>, OAuthRefreshError> {
        let sealed = app
            .agents()
            .oauth_refresh(&auth.0, &provider.0, &body.0.encrypted_token)
            .await?;
        Ok(Json(OAuthTokenResponse {
            encrypted_token: sealed,
        }))
    }
}

/// The provider's `error` in a sentence; only its code's safe characters, bounded, so
/// nothing a caller crafts is echoed back.
fn denied_detail(err: &str) -> String {
    let code: String = err
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect();
    if code == "access_denied" {
        "consent was refused; nothing was connected".into()
    } else {
        format!("the provider did not grant access ({code}); nothing was connected")
    }
}
