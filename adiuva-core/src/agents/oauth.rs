//! OAuth: authorize, callback, refresh (see the module docs of `agents`).
//!
//! The `state` is the whole pending authorisation, sealed (`Purpose::OAuthState`): the
//! user, the provider, the PKCE verifier and an expiry. Nothing is stored server-side
//! between the redirect and the callback, so any instance can finish it, and a state
//! cannot be forged, moved to another provider, or used after it expires.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::tokens::{open_tokens, seal_tokens};
use super::{AgentService, OAUTH_STATE_TTL_SECS};
use crate::auth::Principal;
use crate::domain::{Millis, UserId};
use crate::error::Error;
use crate::ports::db::AgentKind;
use crate::ports::providers::{AuthorizeRequest, Provider, ProviderError};
use crate::seal::Purpose;

/// Longest `code` or `state` we look at (real ones are a few hundred bytes).
const MAX_PARAM_BYTES: usize = 4096;
/// Longest sealed token set we try to open.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// A provider call that takes longer is abandoned (the adapters time out sooner; this
/// bounds core even with an adapter that does not).
const PROVIDER_DEADLINE: Duration = Duration::from_secs(60);

/// The sealed `state`'s plaintext.
#[derive(Serialize, Deserialize)]
struct State {
    /// The user who started the authorisation.
    user: UserId,
    provider: Provider,
    /// The PKCE verifier (secret: only ever inside the seal).
    verifier: String,
    /// Expiry (ms).
    exp: Millis,
    /// Makes every state unique (two authorisations in one millisecond).
    nonce: String,
}

/// `NotFound("provider")` for a name that is not a provider.
fn parse_provider(name: &str) -> Result<Provider, Error> {
    Provider::parse(name).ok_or(Error::NotFound("provider"))
}

/// `n` random bytes, URL-safe base64 without padding.
fn random_urlsafe(n: usize) -> Result<String, Error> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| Error::internal(format!("no randomness: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// `BASE64URL(SHA256(verifier))`, unpadded (RFC 7636 S256).
pub(crate) fn challenge_s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn redirect_uri(s: &AgentService, provider: Provider) -> String {
    format!(
        "{}/api/v1/oauth/{}/callback",
        s.inner.config.redirect_base_url.trim_end_matches('/'),
        provider.as_str()
    )
}

fn invalid_state(detail: &str) -> Error {
    Error::BadRequest {
        code: "invalid_state",
        detail: detail.to_owned(),
    }
}

/// A provider failure as the API reports it. The provider's own words go to the log
/// only (they are secret-free by the adapter contract, but a client needs none of them).
fn provider_error(provider: Provider, e: ProviderError) -> Error {
    tracing::warn!(provider = provider.as_str(), error = %e, "OAuth provider call failed");
    match e {
        ProviderError::InvalidGrant(_) => Error::BadRequest {
            code: "invalid_grant",
            detail: format!(
                "{} refused the grant; connect the account again",
                provider.as_str()
            ),
        },
        ProviderError::Unavailable(_) | ProviderError::RateLimited => Error::Unavailable {
            code: "oauth_provider_unavailable",
            detail: format!("{} is unavailable; retry later", provider.as_str()),
        },
        ProviderError::NotConfigured(_) => Error::Unavailable {
            code: "oauth_not_configured",
            detail: format!(
                "{} sign-in is not configured on this server",
                provider.as_str()
            ),
        },
        _ => Error::BadGateway {
            code: "oauth_provider_error",
            detail: format!("{} answered the sign-in unexpectedly", provider.as_str()),
        },
    }
}

/// Runs a provider call under [`PROVIDER_DEADLINE`].
async fn bounded<T>(
    provider: Provider,
    call: impl std::future::Future<Output = Result<T, ProviderError>>,
) -> Result<T, Error> {
    match tokio::time::timeout(PROVIDER_DEADLINE, call).await {
        Ok(result) => result.map_err(|e| provider_error(provider, e)),
        Err(_) => Err(provider_error(
            provider,
            ProviderError::Unavailable("timed out".into()),
        )),
    }
}

pub(super) async fn authorize(
    s: &AgentService,
    p: &Principal,
    provider: &str,
) -> Result<String, Error> {
    let provider = parse_provider(provider)?;
    let api = s.provider(provider)?;
    // 48 random bytes are 64 URL-safe characters: RFC 7636 allows 43–128.
    let verifier = random_urlsafe(48)?;
    let state = State {
        user: p.user.id,
        provider,
        verifier: verifier.clone(),
        exp: s.inner.clock.now_ms() + (OAUTH_STATE_TTL_SECS as Millis) * 1000,
        nonce: random_urlsafe(12)?,
    };
    let plain = serde_json::to_vec(&state).map_err(Error::internal)?;
    let sealed = s.inner.keyring.seal(Purpose::OAuthState, &plain);
    Ok(api.authorize_url(&AuthorizeRequest {
        state: sealed,
        code_challenge: challenge_s256(&verifier),
        redirect_uri: redirect_uri(s, provider),
        scopes: provider.scopes().iter().map(|s| (*s).to_owned()).collect(),
    }))
}

pub(super) async fn callback(
    s: &AgentService,
    provider: &str,
    code: &str,
    state: &str,
) -> Result<String, Error> {
    let provider = parse_provider(provider)?;
    let api = s.provider(provider)?;
    if state.is_empty() || state.len() > MAX_PARAM_BYTES {
        return Err(invalid_state("the sign-in state is missing or malformed"));
    }
    let plain = s
        .inner
        .keyring
        .open(Purpose::OAuthState, state)
        .map_err(|_| invalid_state("the sign-in state is invalid; start again"))?;
    let st: State = serde_json::from_slice(&plain)
        .map_err(|_| invalid_state("the sign-in state is invalid; start again"))?;
    if st.provider != provider {
        return Err(invalid_state(
            "the sign-in state belongs to another provider; start again",
        ));
    }
    let now = s.inner.clock.now_ms();
    if now > st.exp {
        return Err(invalid_state("the sign-in took too long; start again"));
    }
    if s.inner.db.user_by_id(st.user).await?.is_none() {
        return Err(invalid_state(
            "the account that started this sign-in no longer exists",
        ));
    }
    if code.is_empty() || code.len() > MAX_PARAM_BYTES {
        return Err(Error::BadRequest {
            code: "invalid_grant",
            detail: "the authorisation code is missing or malformed".into(),
        });
    }
    let tokens = bounded(
        provider,
        api.exchange_code(code, &st.verifier, &redirect_uri(s, provider), now),
    )
    .await?;
    Ok(seal_tokens(&s.inner.keyring, provider, &tokens))
}

pub(super) async fn refresh(
    s: &AgentService,
    p: &Principal,
    provider: &str,
    encrypted_token: &str,
) -> Result<String, Error> {
    let provider = parse_provider(provider)?;
    let api = s.provider(provider)?;
    if encrypted_token.len() > MAX_TOKEN_BYTES {
        return Err(Error::validation("encrypted_token", "is too long"));
    }
    let (sealed_for, tokens) = open_tokens(&s.inner.keyring, encrypted_token).map_err(|_| {
        Error::validation(
            "encrypted_token",
            "is not a token this server issued (connect the provider again)",
        )
    })?;
    if sealed_for != provider {
        return Err(Error::validation(
            "encrypted_token",
            format!(
                "is a {} token, not a {} one",
                sealed_for.as_str(),
                provider.as_str()
            ),
        ));
    }
    let now = s.inner.clock.now_ms();
    match bounded(provider, api.refresh(&tokens, now)).await {
        Ok(mut fresh) => {
            // A provider that does not rotate answers without a refresh token: the old
            // one stays good.
            if fresh.refresh_token.is_none() {
                fresh.refresh_token = tokens.refresh_token.clone();
            }
            let sealed = seal_tokens(&s.inner.keyring, provider, &fresh);
            s.inner
                .db
                .replace_agent_tokens(p.user.id, encrypted_token, &sealed, now)
                .await?;
            Ok(sealed)
        }
        Err(
            e @ Error::BadRequest {
                code: "invalid_grant",
                ..
            },
        ) => {
            // The grant is dead: every agent of the user that holds it stops until the
            // user connects again (runs would only fail).
            let held = s.inner.db.list_agents(p.user.id, AgentKind::Cloud).await?;
            for agent in held
                .iter()
                .filter(|a| a.oauth_token_sealed.as_deref() == Some(encrypted_token))
            {
                s.inner.db.pause_agent_for_reauth(agent.id, now).await?;
            }
            Err(e)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_matches_rfc_7636_appendix_b() {
        assert_eq!(
            challenge_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn verifiers_are_64_url_safe_characters() {
        let v = random_urlsafe(48).expect("random");
        assert_eq!(v.len(), 64);
        assert!(
            v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(v, random_urlsafe(48).expect("random"));
    }
}
