//! Sealing with the server's token key (`OAUTH_TOKEN_KEY`): OAuth token sets, the OAuth
//! `state`, setup-journey sessions and queued agent results are stored (or handed out)
//! only as AES-256-GCM ciphertexts.
//!
//! A [`Keyring`] holds one or more 32-byte keys, each with a short id; the first is the
//! current one and seals, any of them opens (rotation: put the new key first, keep the
//! old ones until [`Keyring::is_current`] says nothing sealed under them is left). Each
//! purpose gets its own subkey (HKDF-SHA256, `info = "adiuva/<purpose>"`), and the
//! purpose is also the ciphertext's associated data, so a sealed OAuth state cannot be
//! replayed as a token, nor a token as a journey.
//!
//! Format: `<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`, unpadded, nonce 96 random
//! bits.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hkdf::Hkdf;
use sha2::Sha256;

use crate::error::Error;

/// What a sealed value is for (its subkey and associated data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// An OAuth token set (`oauth_token_encrypted`).
    OAuthToken,
    /// The OAuth `state` (user, provider, PKCE verifier, expiry).
    OAuthState,
    /// A setup-journey conversation.
    Journey,
    /// A frame in a device's durable queue (agent results are user content).
    DeviceQueue,
}

impl Purpose {
    fn label(self) -> &'static str {
        match self {
            Purpose::OAuthToken => "oauth-token",
            Purpose::OAuthState => "oauth-state",
            Purpose::Journey => "journey",
            Purpose::DeviceQueue => "device-queue",
        }
    }

    const ALL: [Purpose; 4] = [
        Purpose::OAuthToken,
        Purpose::OAuthState,
        Purpose::Journey,
        Purpose::DeviceQueue,
    ];
}

/// Why a sealed value does not open. Deliberately vague: which key, which purpose, or a
/// changed byte all look the same to a caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the sealed value is invalid or was sealed with another key")]
pub struct SealError;

struct Entry {
    id: String,
    /// One AES key per [`Purpose`], in `Purpose::ALL` order.
    ciphers: Vec<Aes256Gcm>,
}

/// The server's token keys (see the module docs).
pub struct Keyring {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.entries.iter().map(|e| e.id.as_str()).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

/// Ids are short and printable, and never contain the separator.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn decode_key(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).ok()?
    } else {
        STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE_NO_PAD.decode(text))
            .ok()?
    };
    bytes.try_into().ok()
}

impl Keyring {
    /// A keyring from `id:key,id:key,…` (the first seals), where each key is 32 bytes as
    /// 64 hex digits or base64; a lone key without an id gets the id `k1`. Anything else
    /// → `Validation` naming what is wrong (never the key).
    pub fn parse(spec: &str) -> Result<Keyring, Error> {
        let bad = |why: String| Error::validation("oauth_token_key", why);
        let mut entries = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (id, key) = match part.split_once(':') {
                Some((id, key)) => (id.trim(), key),
                None => ("k1", part),
            };
            if !valid_id(id) {
                return Err(bad(format!(
                    "key id {id:?} must be 1-32 characters of A-Z a-z 0-9 - _"
                )));
            }
            if entries.iter().any(|e: &Entry| e.id == id) {
                return Err(bad(format!("key id {id:?} is used twice")));
            }
            let key = decode_key(key).ok_or_else(|| {
                bad(format!(
                    "the key with id {id:?} must be 32 bytes, as 64 hex digits or base64"
                ))
            })?;
            entries.push(Entry::new(id, &key));
        }
        if entries.is_empty() {
            return Err(bad("no key given".into()));
        }
        Ok(Keyring { entries })
    }

    /// A keyring of one random key (id `k1`): tests, and a process that seals only for
    /// itself.
    pub fn random() -> Keyring {
        let mut key = [0u8; 32];
        // The OS refusing randomness is not something to recover from.
        getrandom::fill(&mut key).expect("the OS gives random bytes");
        Keyring {
            entries: vec![Entry::new("k1", &key)],
        }
    }

    /// A new random key as `OAUTH_TOKEN_KEY` expects it (64 hex digits).
    pub fn generate_key() -> String {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the OS gives random bytes");
        hex::encode(key)
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        &self.entries[0].id
    }

    /// Seals `plaintext` for `purpose` under the current key.
    pub fn seal(&self, purpose: Purpose, plaintext: &[u8]) -> String {
        let entry = &self.entries[0];
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).expect("the OS gives random bytes");
        let sealed = entry
            .cipher(purpose)
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: purpose.label().as_bytes(),
                },
            )
            // Encryption fails only past GCM's 64 GiB message limit.
            .expect("a message under GCM's size limit seals");
        let mut out = Vec::with_capacity(12 + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("{}.{}", entry.id, URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens a value [`Keyring::seal`] made for `purpose` under any key of the ring.
    pub fn open(&self, purpose: Purpose, sealed: &str) -> Result<Vec<u8>, SealError> {
        let (id, body) = sealed.split_once('.').ok_or(SealError)?;
        let entry = self.entries.iter().find(|e| e.id == id).ok_or(SealError)?;
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| SealError)?;
        if bytes.len() < 12 + 16 {
            return Err(SealError);
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| SealError)?;
        entry
            .cipher(purpose)
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: purpose.label().as_bytes(),
                },
            )
            .map_err(|_| SealError)
    }

    /// Whether `sealed` is under the current key (else a rotation should re-seal it).
    pub fn is_current(&self, sealed: &str) -> bool {
        sealed
            .split_once('.')
            .is_some_and(|(id, _)| id == self.current_id())
    }
}

impl Entry {
    fn new(id: &str, key: &[u8; 32]) -> Entry {
        let hk = Hkdf::<Sha256>::new(Some(b"adiuva-keyring-v1"), key);
        let ciphers = Purpose::ALL
            .iter()
            .map(|p| {
                let mut sub = [0u8; 32];
                // 32 bytes is far below HKDF-SHA256's output limit.
                hk.expand(format!("adiuva/{}", p.label()).as_bytes(), &mut sub)
                    .expect("32 bytes is a valid HKDF output length");
                Aes256Gcm::new(&Key::<Aes256Gcm>::from(sub))
            })
            .collect();
        Entry {
            id: id.to_owned(),
            ciphers,
        }
    }

    fn cipher(&self, purpose: Purpose) -> &Aes256Gcm {
        let i = Purpose::ALL
            .iter()
            .position(|p| *p == purpose)
            .unwrap_or_default();
        &self.ciphers[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "0000000000000000000000000000000000000000000000000000000000000001";
    const K2: &str = "0000000000000000000000000000000000000000000000000000000000000002";

    #[test]
    fn seals_and_opens_per_purpose() {
        let ring = Keyring::parse(K1).expect("one key");
        let sealed = ring.seal(Purpose::OAuthToken, b"refresh-me");
        assert!(sealed.starts_with("k1."));
        assert!(!sealed.contains("refresh-me"));
        assert_eq!(
            ring.open(Purpose::OAuthToken, &sealed).expect("opens"),
            b"refresh-me"
        );
        assert_eq!(ring.open(Purpose::Journey, &sealed), Err(SealError));
        assert_ne!(sealed, ring.seal(Purpose::OAuthToken, b"refresh-me"));
    }

    #[test]
    fn rotation_opens_old_and_seals_new() {
        let old = Keyring::parse(&format!("a:{K1}")).expect("old");
        let sealed = old.seal(Purpose::OAuthState, b"x");
        let rotated = Keyring::parse(&format!("b:{K2},a:{K1}")).expect("rotated");
        assert_eq!(
            rotated.open(Purpose::OAuthState, &sealed).expect("old key"),
            b"x"
        );
        assert!(!rotated.is_current(&sealed));
        let resealed = rotated.seal(Purpose::OAuthState, b"x");
        assert!(rotated.is_current(&resealed) && resealed.starts_with("b."));
        let without_old = Keyring::parse(&format!("b:{K2}")).expect("old key dropped");
        assert_eq!(
            without_old.open(Purpose::OAuthState, &sealed),
            Err(SealError)
        );
    }

    #[test]
    fn tampering_and_bad_specs_fail() {
        let ring = Keyring::parse(K1).expect("one key");
        let mut sealed = ring.seal(Purpose::DeviceQueue, b"payload").into_bytes();
        let last = sealed.len() - 2;
        sealed[last] = if sealed[last] == b'A' { b'B' } else { b'A' };
        let sealed = String::from_utf8(sealed).expect("ascii");
        assert_eq!(ring.open(Purpose::DeviceQueue, &sealed), Err(SealError));
        for bad in ["", "abc", "x y:00", &format!("a:{K1},a:{K2}")] {
            let err = Keyring::parse(bad).expect_err(bad).to_string();
            assert!(!err.contains(K1), "{err}");
        }
        let debug = format!("{:?}", Keyring::parse(K1).expect("one key"));
        assert!(!debug.contains(K1) && debug.contains("k1"));
    }
}
