//! Access tokens (JWT) and refresh tokens (random, stored hashed).

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use uuid::Uuid;

use crate::domain::UserId;
use crate::error::Error;
use crate::secret::Secret;

/// The JWT signing algorithms we accept: HMAC only, since the key is one shared secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 (the plan's default).
    Hs256,
    /// HMAC-SHA384.
    Hs384,
    /// HMAC-SHA512.
    Hs512,
}

impl JwtAlgorithm {
    /// Parses `HS256`/`HS384`/`HS512`; anything else gets a sentence saying why.
    pub fn parse(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_uppercase().as_str() {
            "HS256" => Ok(Self::Hs256),
            "HS384" => Ok(Self::Hs384),
            "HS512" => Ok(Self::Hs512),
            other => Err(Error::validation(
                "JWT_ALGORITHM",
                format!(
                    "'{other}' is not supported: use HS256, HS384 or HS512 (tokens are signed with the shared JWT_SECRET)"
                ),
            )),
        }
    }

    /// The standard name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Hs384 => "HS384",
            Self::Hs512 => "HS512",
        }
    }

    fn jwt(self) -> Algorithm {
        match self {
            Self::Hs256 => Algorithm::HS256,
            Self::Hs384 => Algorithm::HS384,
            Self::Hs512 => Algorithm::HS512,
        }
    }
}

/// The claims of an access token. The tier is deliberately absent: gates read the database.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user id.
    pub sub: String,
    /// Issued at (s).
    pub iat: i64,
    /// Expiry (s).
    pub exp: i64,
    /// Always `access`, so no other kind of token can pass as one.
    pub typ: String,
    /// The session (refresh-token family) the token was issued in, so revoking the
    /// family also refuses its live access tokens. Absent in tokens from older builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fam: Option<String>,
}

/// What a valid access token says: whose it is and which session issued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The user id (`sub`).
    pub user: UserId,
    /// The refresh-token family (`fam`), when the token carries one.
    pub family: Option<Uuid>,
}

/// Signs and checks access tokens.
pub struct JwtKeys {
    algorithm: JwtAlgorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl JwtKeys {
    /// Shortest secret accepted: 32 bytes, the HS256 output size.
    pub const MIN_SECRET_BYTES: usize = 32;

    /// Keys from a shared secret.
    pub fn new(secret: &Secret<String>, algorithm: JwtAlgorithm) -> Result<Self, Error> {
        let bytes = secret.expose().as_bytes();
        if bytes.len() < Self::MIN_SECRET_BYTES {
            return Err(Error::validation(
                "JWT_SECRET",
                format!("must be at least {} bytes", Self::MIN_SECRET_BYTES),
            ));
        }
        Ok(Self {
            algorithm,
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
        })
    }

    /// A token for `user` in session `family`, valid from `now_secs` for `ttl_secs`.
    pub fn issue(
        &self,
        user: UserId,
        family: Option<Uuid>,
        now_secs: i64,
        ttl_secs: i64,
    ) -> Result<String, Error> {
        let claims = AccessClaims {
            sub: user.to_string(),
            iat: now_secs,
            exp: now_secs + ttl_secs,
            typ: "access".into(),
            fam: family.map(|f| f.to_string()),
        };
        jsonwebtoken::encode(&Header::new(self.algorithm.jwt()), &claims, &self.encoding)
            .map_err(|e| Error::internal(format!("signing a token failed: {e}")))
    }

    /// The user a token was issued to, if its signature, algorithm, type and expiry hold
    /// at `now_secs`. Every failure is the same opaque 401 so that a prober learns nothing.
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<VerifiedToken, Error> {
        const INVALID: Error = Error::Unauthorized("invalid or expired access token");
        let mut validation = Validation::new(self.algorithm.jwt());
        // Expiry is checked against our Clock below, so tests can move time.
        validation.validate_exp = false;
        validation.required_spec_claims = ["exp", "sub"].into_iter().map(String::from).collect();
        let data = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &validation)
            .map_err(|_| INVALID)?;
        let claims = data.claims;
        if claims.typ != "access" || claims.exp <= now_secs {
            return Err(INVALID);
        }
        let user = UserId::parse(&claims.sub).map_err(|_| INVALID)?;
        let family = match claims.fam {
            Some(f) => Some(Uuid::parse_str(&f).map_err(|_| INVALID)?),
            None => None,
        };
        Ok(VerifiedToken { user, family })
    }
}

/// A new refresh token: 32 random bytes, base64url without padding.
pub fn new_refresh_token() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::internal(format!("no randomness: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The form a refresh token is stored in: SHA-256, lowercase hex. A fast hash is right
/// here: the token has 256 bits of entropy, so there is nothing to brute-force.
pub fn hash_refresh_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &str, alg: JwtAlgorithm) -> JwtKeys {
        JwtKeys::new(&Secret::new(secret.to_owned()), alg).unwrap()
    }

    #[test]
    fn round_trip_and_expiry() {
        let k = keys(&"k".repeat(32), JwtAlgorithm::Hs256);
        let user = UserId::new();
        let fam = Uuid::now_v7();
        let t = k.issue(user, Some(fam), 1_000, 900).unwrap();
        assert_eq!(k.verify(&t, 1_000).unwrap().user, user);
        assert_eq!(k.verify(&t, 1_899).unwrap().family, Some(fam));
        assert!(k.verify(&t, 1_900).is_err());
    }

    #[test]
    fn wrong_key_and_wrong_algorithm_fail() {
        let a = keys(&"a".repeat(32), JwtAlgorithm::Hs256);
        let b = keys(&"b".repeat(32), JwtAlgorithm::Hs256);
        let a512 = keys(&"a".repeat(32), JwtAlgorithm::Hs512);
        let t = a.issue(UserId::new(), None, 0, 900).unwrap();
        assert!(b.verify(&t, 1).is_err());
        assert!(a512.verify(&t, 1).is_err());
    }

    #[test]
    fn short_secrets_and_asymmetric_algorithms_are_refused() {
        assert!(JwtKeys::new(&Secret::new("short".into()), JwtAlgorithm::Hs256).is_err());
        assert!(JwtAlgorithm::parse("RS256").is_err());
        assert_eq!(JwtAlgorithm::parse("hs512").unwrap(), JwtAlgorithm::Hs512);
    }

    #[test]
    fn refresh_tokens_are_random_and_hashed() {
        let a = new_refresh_token().unwrap();
        let b = new_refresh_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(hash_refresh_token(&a).len(), 64);
        assert_ne!(hash_refresh_token(&a), hash_refresh_token(&b));
    }
}
