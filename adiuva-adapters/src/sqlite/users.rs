//! Users and refresh tokens on SQLite (statements; the code is in `user_repos.rs`).

use super::SqliteDb;
use crate::user_repos::{impl_user_repos, token_columns, user_columns};

mod sql {
    use super::{token_columns, user_columns};

    pub const INSERT_USER: &str = concat!(
        "INSERT INTO users (",
        user_columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    );
    pub const USER_BY_ID: &str = concat!("SELECT ", user_columns!(), " FROM users WHERE id = ?");
    pub const USER_IN_SESSION: &str = concat!(
        "SELECT ",
        user_columns!(),
        " FROM users WHERE id = ? AND NOT EXISTS (SELECT 1 FROM refresh_tokens \
         WHERE family_id = ? AND revoked_at IS NOT NULL)"
    );
    pub const USER_BY_EMAIL: &str =
        concat!("SELECT ", user_columns!(), " FROM users WHERE email = ?");
    pub const LIST_USERS: &str = concat!(
        "SELECT ",
        user_columns!(),
        " FROM users ORDER BY created_at, id LIMIT ? OFFSET ?"
    );
    pub const SET_TIER: &str = "UPDATE users SET tier = ?, updated_at = ? WHERE id = ?";
    pub const SET_ROLE: &str = "UPDATE users SET role = ?, updated_at = ? WHERE id = ?";
    pub const DELETE_USER: &str = "DELETE FROM users WHERE id = ?";
    pub const INSERT_TOKEN: &str = concat!(
        "INSERT INTO refresh_tokens (",
        token_columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    );
    pub const TOKEN_BY_HASH: &str = concat!(
        "SELECT ",
        token_columns!(),
        " FROM refresh_tokens WHERE token_hash = ?"
    );
    pub const MARK_TOKEN_USED: &str = "UPDATE refresh_tokens SET used_at = ? WHERE id = ? AND used_at IS NULL AND revoked_at IS NULL";
    pub const REVOKE_FAMILY: &str =
        "UPDATE refresh_tokens SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL";
    pub const DELETE_EXPIRED_TOKENS: &str = "DELETE FROM refresh_tokens WHERE expires_at < ?";
}

impl_user_repos!(SqliteDb, sql);
