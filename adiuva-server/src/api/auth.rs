//! `/auth/*` (plan 8g): register, login, refresh, me.

use adiuva_core::Adiuva;
use adiuva_core::auth::AuthTokens as CoreTokens;
use adiuva_core::ports::db::User;
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::{ApiTags, BearerAuth};
use crate::api_errors;

/// Email and password.
#[derive(Debug, Object)]
pub struct Credentials {
    /// Trimmed and lower-cased by the server.
    pub email: String,
    /// At least 10 characters.
    #[oai(write_only)]
    pub password: String,
}

/// A refresh token to exchange.
#[derive(Debug, Object)]
pub struct RefreshRequest {
    /// From the last `AuthTokens`; single use.
    pub refresh_token: String,
}

/// A session (plan `AuthTokens`).
#[derive(Debug, Object)]
pub struct AuthTokens {
    /// JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// Opaque single-use token for `/auth/refresh`.
    pub refresh_token: String,
    /// When the access token expires, ms since the epoch.
    pub expires_at: i64,
}

impl From<CoreTokens> for AuthTokens {
    fn from(t: CoreTokens) -> Self {
        Self {
            access_token: t.access_token,
            refresh_token: t.refresh_token,
            expires_at: t.expires_at,
        }
    }
}

/// The plan's billing tiers.
#[derive(Debug, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum BillingTier {
    /// Free.
    Free,
    /// Pro.
    Pro,
    /// Power.
    Power,
    /// Team.
    Team,
}

impl From<adiuva_core::domain::Tier> for BillingTier {
    fn from(t: adiuva_core::domain::Tier) -> Self {
        use adiuva_core::domain::Tier;
        match t {
            Tier::Free => Self::Free,
            Tier::Pro => Self::Pro,
            Tier::Power => Self::Power,
            Tier::Team => Self::Team,
        }
    }
}

/// Account roles.
#[derive(Debug, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum UserRole {
    /// Ordinary account.
    User,
    /// Administrator.
    Admin,
}

/// The current user (plan `UserProfile`, plus `role` and `created_at`).
#[derive(Debug, Object)]
pub struct UserProfile {
    /// UUID.
    pub id: String,
    /// Normalised email.
    pub email: String,
    /// Billing tier, read from the database.
    pub tier: BillingTier,
    /// Role.
    pub role: UserRole,
    /// Account creation, ms since the epoch.
    pub created_at: i64,
}

impl From<User> for UserProfile {
    fn from(u: User) -> Self {
        use adiuva_core::domain::Role;
        Self {
            id: u.id.to_string(),
            email: u.email.to_string(),
            tier: u.tier.into(),
            role: match u.role {
                Role::User => UserRole::User,
                Role::Admin => UserRole::Admin,
            },
            created_at: u.created_at,
        }
    }
}

api_errors!(
    /// Errors of `POST /auth/register`.
    RegisterError {
        409 => Conflict [conflict]: "An account with this email already exists.",
        413 => PayloadTooLarge [payload_too_large]: "The body is over the size limit.",
        415 => UnsupportedMediaType [unsupported_media_type]: "The body is not JSON.",
        422 => Unprocessable [validation_error, malformed_json]: "Malformed JSON, a missing field, an invalid email or a password under 10 characters.",
    }
);

api_errors!(
    /// Errors of `POST /auth/login` and `POST /auth/refresh`.
    LoginError {
        401 => Unauthorized [unauthorized]: "Wrong email or password, or an invalid, expired or reused refresh token.",
        413 => PayloadTooLarge [payload_too_large]: "The body is over the size limit.",
        415 => UnsupportedMediaType [unsupported_media_type]: "The body is not JSON.",
        422 => Unprocessable [validation_error, malformed_json]: "Malformed JSON or a missing field.",
    }
);

api_errors!(
    /// Errors of authenticated reads.
    AuthedError {
        401 => Unauthorized [unauthorized]: "Missing, invalid or expired access token, or the account no longer exists.",
    }
);

/// Accounts and sessions.
pub struct AuthApi;

#[OpenApi(tag = "ApiTags::Auth")]
impl AuthApi {
    /// Create an account and sign in.
    ///
    /// The email is trimmed and lower-cased. New accounts are on the `free` tier.
    #[oai(path = "/auth/register", method = "post", operation_id = "register")]
    async fn register(
        &self,
        app: Data<&Adiuva>,
        body: Json<Credentials>,
    ) -> Result<Json<AuthTokens>, RegisterError> {
        let tokens = app.auth().register(&body.email, &body.password).await?;
        Ok(Json(tokens.into()))
    }

    /// Sign in with email and password.
    ///
    /// Starts a new session: a short-lived access token and a single-use refresh token.
    #[oai(path = "/auth/login", method = "post", operation_id = "login")]
    async fn login(
        &self,
        app: Data<&Adiuva>,
        body: Json<Credentials>,
    ) -> Result<Json<AuthTokens>, LoginError> {
        let tokens = app.auth().login(&body.email, &body.password).await?;
        Ok(Json(tokens.into()))
    }

    /// Exchange a refresh token for a new pair.
    ///
    /// The presented token is used up. Presenting a used token again revokes every token
    /// of that session (theft detection): sign in again.
    #[oai(path = "/auth/refresh", method = "post", operation_id = "refresh")]
    async fn refresh(
        &self,
        app: Data<&Adiuva>,
        body: Json<RefreshRequest>,
    ) -> Result<Json<AuthTokens>, LoginError> {
        let tokens = app.auth().refresh(&body.refresh_token).await?;
        Ok(Json(tokens.into()))
    }

    /// The signed-in user's profile.
    #[oai(path = "/auth/me", method = "get", operation_id = "me")]
    async fn me(&self, auth: BearerAuth) -> Result<Json<UserProfile>, AuthedError> {
        // The row this request authenticated with: fresh, and not read twice.
        Ok(Json(auth.0.user.into()))
    }
}
