//! Accounts and sessions: registration, login, refresh-token rotation with reuse
//! detection, and access-token verification (plan 8g, 9a).

mod password;
mod tokens;

use std::sync::Arc;

use uuid::Uuid;

pub use password::{HashCost, PasswordHasher};
pub use tokens::{
    AccessClaims, JwtAlgorithm, JwtKeys, VerifiedToken, hash_refresh_token, new_refresh_token,
};

use crate::domain::{Email, Millis, Password, Role, Tier, UserId};
use crate::error::Error;
use crate::ports::db::{RefreshToken, User};
use crate::ports::{Clock, Database, RateLimiter};
use crate::secret::Secret;

/// How sessions are issued.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Shared HMAC secret for access tokens.
    pub jwt_secret: Secret<String>,
    /// HS256 (default), HS384 or HS512.
    pub jwt_algorithm: JwtAlgorithm,
    /// Access-token lifetime in seconds (default 15 min).
    pub access_ttl_secs: i64,
    /// Refresh-token lifetime in seconds (default 30 days).
    pub refresh_ttl_secs: i64,
    /// argon2id cost.
    pub hash_cost: HashCost,
    /// Hashes allowed at once (default: twice the cores).
    pub max_parallel_hashes: usize,
}

impl AuthConfig {
    /// Defaults around a secret.
    pub fn new(jwt_secret: Secret<String>) -> Self {
        Self {
            jwt_secret,
            jwt_algorithm: JwtAlgorithm::Hs256,
            access_ttl_secs: 15 * 60,
            refresh_ttl_secs: 30 * 24 * 3600,
            hash_cost: HashCost::default(),
            max_parallel_hashes: std::thread::available_parallelism().map_or(2, |n| n.get() * 2),
        }
    }
}

/// A fresh session, in the plan's `AuthTokens` shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthTokens {
    /// Short-lived JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// Opaque, single-use token for `/auth/refresh`.
    pub refresh_token: String,
    /// When the access token expires (ms since the epoch).
    pub expires_at: Millis,
}

/// A budget of login attempts per target email, counted through the [`RateLimiter`]
/// port so every instance sharing the limiter (Redis) shares it.
#[derive(Clone)]
pub struct LoginLimit {
    /// Where attempts are counted.
    pub limiter: Arc<dyn RateLimiter>,
    /// Attempts per minute per normalised email.
    pub per_minute: u32,
}

/// Who an access token speaks for, established by [`AuthService::authenticate`]: the
/// user's current row (tier and role included) and the session that issued the token.
///
/// A request authenticates once and carries this to every decision that needs the
/// caller (tier gates, quotas, the rate budget) — the tier is as fresh as the request.
#[derive(Clone)]
pub struct Principal {
    /// The user as the database has it now.
    pub user: User,
    /// The refresh-token family the token belongs to (`None` for tokens without one).
    pub session: Option<Uuid>,
}

/// Names who, never the row's password hash or email: a principal travels through
/// handlers and services, and may end up in a log line.
impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("user_id", &self.user.id)
            .field("tier", &self.user.tier)
            .field("role", &self.user.role)
            .field("session", &self.session)
            .finish()
    }
}

impl Principal {
    /// The user's id.
    pub fn id(&self) -> UserId {
        self.user.id
    }
}

/// Registration, login, refresh and token checks.
#[derive(Clone)]
pub struct AuthService {
    db: Arc<dyn Database>,
    clock: Arc<dyn Clock>,
    keys: Arc<JwtKeys>,
    hasher: PasswordHasher,
    config: AuthConfig,
    login_limit: Option<LoginLimit>,
}

impl std::fmt::Debug for AuthService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService")
            .field("db", &self.db.backend())
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

const BAD_CREDENTIALS: Error = Error::Unauthorized("incorrect email or password");
const BAD_REFRESH: Error = Error::Unauthorized("invalid, expired or revoked refresh token");
/// The same answer for a bad signature, an expired token, a deleted account and a
/// revoked session: a prober learns nothing about which.
const BAD_ACCESS: Error = Error::Unauthorized("invalid or expired access token");

impl AuthService {
    /// Builds the service; fails on a secret or cost that cannot work.
    pub fn new(
        db: Arc<dyn Database>,
        clock: Arc<dyn Clock>,
        config: AuthConfig,
    ) -> Result<Self, Error> {
        let keys = Arc::new(JwtKeys::new(&config.jwt_secret, config.jwt_algorithm)?);
        let hasher = PasswordHasher::new(config.hash_cost, config.max_parallel_hashes)?;
        Ok(Self {
            db,
            clock,
            keys,
            hasher,
            config,
            login_limit: None,
        })
    }

    /// Also counts login attempts per target email (see [`LoginLimit`]).
    pub fn with_login_limit(mut self, limit: LoginLimit) -> Self {
        self.login_limit = Some(limit);
        self
    }

    /// The same service over another handle on the database (see
    /// [`Adiuva::with_database`](crate::Adiuva::with_database)).
    pub(crate) fn with_database(&self, db: Arc<dyn Database>) -> Self {
        Self { db, ..self.clone() }
    }

    /// The hasher, for admin commands that set passwords.
    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    /// Creates an account and signs it in. A taken email → `Conflict`.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn register(&self, email: &str, password: &str) -> Result<AuthTokens, Error> {
        let user = self
            .create_user(email, password, Role::User, Tier::Free)
            .await?;
        tracing::info!(user_id = %user.id, "user registered");
        self.issue_session(user.id, Uuid::now_v7()).await
    }

    /// Creates an account without signing in (admin CLI, embedding).
    pub async fn create_user(
        &self,
        email: &str,
        password: &str,
        role: Role,
        tier: Tier,
    ) -> Result<User, Error> {
        let email = Email::parse(email)?;
        let password = Password::parse(password)?;
        let password_hash = self.hasher.hash(&password).await?;
        let now = self.clock.now_ms();
        let user = User {
            id: UserId::new(),
            email,
            password_hash,
            role,
            tier,
            stripe_customer_id: None,
            created_at: now,
            updated_at: now,
        };
        self.db
            .insert_user(&user)
            .await
            .map_err(|e| match Error::from(e) {
                Error::Conflict(_) => {
                    Error::Conflict("an account with this email already exists".into())
                }
                other => other,
            })?;
        Ok(user)
    }

    /// Checks the credentials and starts a new session (a new token family).
    ///
    /// An unknown email and a wrong password give the same error after the same work: the
    /// password is verified against a dummy hash when there is no user.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn login(&self, email: &str, password: &str) -> Result<AuthTokens, Error> {
        // A malformed email cannot belong to anyone; still pay for a hash so the
        // response time does not say which check failed.
        let user = match Email::parse(email) {
            Ok(email) => {
                // Before the hash: a refused guess costs no argon2 work.
                self.count_login_attempt(&email).await?;
                self.db.user_by_email(&email).await?
            }
            Err(_) => None,
        };
        let ok = self
            .hasher
            .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await?;
        match user {
            Some(user) if ok => self.issue_session(user.id, Uuid::now_v7()).await,
            _ => Err(BAD_CREDENTIALS),
        }
    }

    /// Exchanges a refresh token for a new pair. The old token becomes used; presenting a
    /// used or revoked token again is treated as theft and revokes its whole family.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub async fn refresh(&self, refresh_token: &str) -> Result<AuthTokens, Error> {
        let now = self.clock.now_ms();
        let hash = hash_refresh_token(refresh_token);
        let Some(token) = self.db.refresh_token_by_hash(&hash).await? else {
            return Err(BAD_REFRESH);
        };
        if token.used_at.is_some() || token.revoked_at.is_some() {
            return Err(self.reuse_detected(&token, now).await);
        }
        if token.expires_at <= now {
            return Err(BAD_REFRESH);
        }
        if !self.db.mark_refresh_token_used(token.id, now).await? {
            // Lost a race with another use of the same token: one of the two is a replay.
            return Err(self.reuse_detected(&token, now).await);
        }
        if self.db.user_by_id(token.user_id).await?.is_none() {
            return Err(BAD_REFRESH);
        }
        self.issue_session(token.user_id, token.family_id).await
    }

    /// Counts one login attempt against `email`'s budget; over it, `RateLimited`.
    /// Every attempt counts, right or wrong, so the budget bounds guesses per account
    /// however many IPs (or accounts' tokens) an attacker spreads them over.
    async fn count_login_attempt(&self, email: &Email) -> Result<(), Error> {
        let Some(limit) = &self.login_limit else {
            return Ok(());
        };
        let key = format!("login:{}", email.as_str());
        crate::rate::count(
            limit.limiter.as_ref(),
            &key,
            limit.per_minute,
            "login attempt",
            |limit, secs| {
                format!(
                    "too many sign-in attempts for this account: the limit is {limit} per minute; retry in {secs} s"
                )
            },
        )
        .await
    }

    async fn reuse_detected(&self, token: &RefreshToken, now: Millis) -> Error {
        match self.db.revoke_token_family(token.family_id, now).await {
            Ok(n) => tracing::warn!(
                user_id = %token.user_id, family_id = %token.family_id, revoked = n,
                "refresh token reuse detected; token family revoked"
            ),
            Err(e) => return e.into(),
        }
        BAD_REFRESH
    }

    /// Deletes refresh tokens that have expired (used, revoked or not); returns how many.
    /// Expired tokens are already refused, so this is housekeeping: the server runs it
    /// at start and hourly.
    pub async fn purge_expired_tokens(&self) -> Result<u64, Error> {
        Ok(self
            .db
            .delete_expired_refresh_tokens(self.clock.now_ms())
            .await?)
    }

    /// The user an access token was issued to, from the token alone (signature,
    /// algorithm, type, expiry). It does not know whether the account still exists or
    /// the session was revoked: requests authenticate with [`authenticate`](Self::authenticate).
    pub fn verify_access_token(&self, token: &str) -> Result<UserId, Error> {
        Ok(self.keys.verify(token, self.clock.now_secs())?.user)
    }

    /// The one check every authenticated request goes through: the token is valid, its
    /// account still exists and its session has not been revoked (refresh-token reuse).
    /// One database read. Any failure is the same 401.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, Error> {
        let verified = self.keys.verify(token.trim(), self.clock.now_secs())?;
        self.still_valid(verified.user, verified.family).await
    }

    /// Re-checks an earlier [`Principal`] (a long-lived socket, before each chat): the
    /// account still exists and the session is not revoked. Returns the fresh row.
    pub async fn reauthenticate(&self, principal: &Principal) -> Result<Principal, Error> {
        self.still_valid(principal.user.id, principal.session).await
    }

    async fn still_valid(&self, user: UserId, session: Option<Uuid>) -> Result<Principal, Error> {
        let row = match session {
            Some(family) => self.db.user_in_session(user, family).await?,
            None => self.db.user_by_id(user).await?,
        };
        match row {
            Some(user) => Ok(Principal { user, session }),
            None => Err(BAD_ACCESS),
        }
    }

    /// The current profile of the token's user, read from the database.
    pub async fn me(&self, user_id: UserId) -> Result<User, Error> {
        self.db
            .user_by_id(user_id)
            .await?
            .ok_or(Error::Unauthorized("the account no longer exists"))
    }

    async fn issue_session(&self, user_id: UserId, family_id: Uuid) -> Result<AuthTokens, Error> {
        let now_ms = self.clock.now_ms();
        let now_secs = now_ms.div_euclid(1000);
        let access_token = self.keys.issue(
            user_id,
            Some(family_id),
            now_secs,
            self.config.access_ttl_secs,
        )?;
        let refresh_token = new_refresh_token()?;
        self.db
            .insert_refresh_token(&RefreshToken {
                id: Uuid::now_v7(),
                user_id,
                family_id,
                token_hash: hash_refresh_token(&refresh_token),
                expires_at: now_ms + self.config.refresh_ttl_secs * 1000,
                created_at: now_ms,
                used_at: None,
                revoked_at: None,
            })
            .await?;
        Ok(AuthTokens {
            access_token,
            refresh_token,
            expires_at: (now_secs + self.config.access_ttl_secs) * 1000,
        })
    }
}
