//! OAuth token sets at rest: sealed with the server's token key (`Purpose::OAuthToken`),
//! carrying the provider they belong to, so a Google set never reaches the Microsoft
//! adapter.

use serde::{Deserialize, Serialize};

use crate::domain::Millis;
use crate::ports::providers::{Provider, TokenSet};
use crate::seal::{Keyring, Purpose, SealError};
use crate::secret::Secret;

/// The plaintext inside the seal. Private: only this module reads or writes it.
#[derive(Serialize, Deserialize)]
struct Sealed {
    /// Format version (bumped on an incompatible change).
    v: u8,
    provider: Provider,
    access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    expires_at: Millis,
    #[serde(default)]
    scope: String,
}

/// Seals `tokens` of `provider` (the `encrypted_token` the API hands out and the configs
/// store).
pub(crate) fn seal_tokens(keyring: &Keyring, provider: Provider, tokens: &TokenSet) -> String {
    let plain = Sealed {
        v: 1,
        provider,
        access_token: tokens.access_token.expose().clone(),
        refresh_token: tokens.refresh_token.as_ref().map(|t| t.expose().clone()),
        expires_at: tokens.expires_at,
        scope: tokens.scope.clone(),
    };
    // Serialising a struct of strings and integers cannot fail; an empty object would
    // only fail to open later, never leak.
    let bytes = serde_json::to_vec(&plain).unwrap_or_default();
    keyring.seal(Purpose::OAuthToken, &bytes)
}

/// Opens a sealed token set: its provider and tokens. Any failure (another key,
/// another purpose, a changed byte, a plaintext that does not parse) is [`SealError`].
pub(crate) fn open_tokens(
    keyring: &Keyring,
    sealed: &str,
) -> Result<(Provider, TokenSet), SealError> {
    let bytes = keyring.open(Purpose::OAuthToken, sealed)?;
    let plain: Sealed = serde_json::from_slice(&bytes).map_err(|_| SealError)?;
    if plain.v != 1 {
        return Err(SealError);
    }
    Ok((
        plain.provider,
        TokenSet {
            access_token: Secret::new(plain.access_token),
            refresh_token: plain.refresh_token.map(Secret::new),
            expires_at: plain.expires_at,
            scope: plain.scope,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> TokenSet {
        TokenSet {
            access_token: Secret::new("acc-123".into()),
            refresh_token: Some(Secret::new("ref-456".into())),
            expires_at: 1_700_000_000_000,
            scope: "a b".into(),
        }
    }

    #[test]
    fn round_trips_with_the_provider() {
        let ring = Keyring::random();
        let sealed = seal_tokens(&ring, Provider::Microsoft, &set());
        assert!(!sealed.contains("acc-123") && !sealed.contains("ref-456"));
        let (provider, tokens) = open_tokens(&ring, &sealed).expect("opens");
        assert_eq!(provider, Provider::Microsoft);
        assert_eq!(tokens, set());
        let mut none = set();
        none.refresh_token = None;
        let (_, back) =
            open_tokens(&ring, &seal_tokens(&ring, Provider::Google, &none)).expect("opens");
        assert_eq!(back.refresh_token, None);
    }

    #[test]
    fn refuses_other_keys_purposes_and_garbage() {
        let ring = Keyring::random();
        let sealed = seal_tokens(&ring, Provider::Google, &set());
        assert_eq!(
            open_tokens(&Keyring::random(), &sealed).map(|_| ()),
            Err(SealError)
        );
        let state = ring.seal(Purpose::OAuthState, b"{}");
        assert_eq!(open_tokens(&ring, &state).map(|_| ()), Err(SealError));
        let not_json = ring.seal(Purpose::OAuthToken, b"not json");
        assert_eq!(open_tokens(&ring, &not_json).map(|_| ()), Err(SealError));
        assert_eq!(open_tokens(&ring, "garbage").map(|_| ()), Err(SealError));
    }
}
