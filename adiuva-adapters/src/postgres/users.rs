//! Users and refresh tokens on PostgreSQL (statements; the code is in `user_repos.rs`).
//! Ids arrive as text and are cast to `uuid` here.

use super::PgDb;
use crate::user_repos::{impl_user_repos, token_columns, user_columns};

mod sql {
    use super::{token_columns, user_columns};

    pub const INSERT_USER: &str = concat!(
        "INSERT INTO users (",
        user_columns!(),
        ") VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8)"
    );
    pub const USER_BY_ID: &str = concat!(
        "SELECT ",
        user_columns!(),
        " FROM users WHERE id = $1::uuid"
    );
    pub const USER_IN_SESSION: &str = concat!(
        "SELECT ",
        user_columns!(),
        " FROM users WHERE id = $1::uuid AND NOT EXISTS (SELECT 1 FROM refresh_tokens \
         WHERE family_id = $2::uuid AND revoked_at IS NOT NULL)"
    );
    pub const USER_BY_EMAIL: &str =
        concat!("SELECT ", user_columns!(), " FROM users WHERE email = $1");
    pub const LIST_USERS: &str = concat!(
        "SELECT ",
        user_columns!(),
        " FROM users ORDER BY created_at, id LIMIT $1 OFFSET $2"
    );
    pub const SET_TIER: &str = "UPDATE users SET tier = $1, updated_at = $2 WHERE id = $3::uuid";
    pub const SET_ROLE: &str = "UPDATE users SET role = $1, updated_at = $2 WHERE id = $3::uuid";
    pub const DELETE_USER: &str = "DELETE FROM users WHERE id = $1::uuid";
    pub const INSERT_TOKEN: &str = concat!(
        "INSERT INTO refresh_tokens (",
        token_columns!(),
        ") VALUES ($1::uuid, $2::uuid, $3::uuid, $4, $5, $6, $7, $8)"
    );
    pub const TOKEN_BY_HASH: &str = concat!(
        "SELECT ",
        token_columns!(),
        " FROM refresh_tokens WHERE token_hash = $1"
    );
    pub const MARK_TOKEN_USED: &str = "UPDATE refresh_tokens SET used_at = $1 WHERE id = $2::uuid AND used_at IS NULL AND revoked_at IS NULL";
    pub const REVOKE_FAMILY: &str = "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2::uuid AND revoked_at IS NULL";
    pub const DELETE_EXPIRED_TOKENS: &str = "DELETE FROM refresh_tokens WHERE expires_at < $1";
}

impl_user_repos!(PgDb, sql);
