//! An in-memory [`Database`]: the reference implementation of the repository contracts,
//! used by core's own tests. Not durable, not for production.

use std::sync::Mutex;

use async_trait::async_trait;
use uuid::Uuid;

use crate::domain::{Email, Millis, Role, Tier, UserId};
use crate::ports::Database;
use crate::ports::db::{RefreshToken, RefreshTokenRepo, RepoError, RepoResult, User, UserRepo};

#[derive(Default)]
struct State {
    users: Vec<User>,
    tokens: Vec<RefreshToken>,
}

/// Users and tokens in a mutex.
#[derive(Default)]
pub struct MemoryDb {
    state: Mutex<State>,
}

impl MemoryDb {
    /// An empty database.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> RepoResult<T> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| RepoError::Unavailable("poisoned".into()))?;
        Ok(f(&mut state))
    }
}

#[async_trait]
impl UserRepo for MemoryDb {
    async fn insert_user(&self, user: &User) -> RepoResult<()> {
        self.with(|s| {
            if s.users
                .iter()
                .any(|u| u.email == user.email || u.id == user.id)
            {
                return Err(RepoError::Conflict("users.email".into()));
            }
            s.users.push(user.clone());
            Ok(())
        })?
    }

    async fn user_by_id(&self, id: UserId) -> RepoResult<Option<User>> {
        self.with(|s| s.users.iter().find(|u| u.id == id).cloned())
    }

    async fn user_by_email(&self, email: &Email) -> RepoResult<Option<User>> {
        self.with(|s| s.users.iter().find(|u| &u.email == email).cloned())
    }

    async fn list_users(&self, offset: u64, limit: u64) -> RepoResult<Vec<User>> {
        self.with(|s| {
            let mut all = s.users.clone();
            all.sort_by_key(|u| (u.created_at, u.id));
            all.into_iter()
                .skip(offset as usize)
                .take(limit as usize)
                .collect()
        })
    }

    async fn set_tier(&self, id: UserId, tier: Tier, now: Millis) -> RepoResult<()> {
        self.with(|s| match s.users.iter_mut().find(|u| u.id == id) {
            Some(u) => {
                u.tier = tier;
                u.updated_at = now;
                Ok(())
            }
            None => Err(RepoError::NotFound),
        })?
    }

    async fn set_role(&self, id: UserId, role: Role, now: Millis) -> RepoResult<()> {
        self.with(|s| match s.users.iter_mut().find(|u| u.id == id) {
            Some(u) => {
                u.role = role;
                u.updated_at = now;
                Ok(())
            }
            None => Err(RepoError::NotFound),
        })?
    }

    async fn delete_user(&self, id: UserId) -> RepoResult<()> {
        self.with(|s| {
            let before = s.users.len();
            s.users.retain(|u| u.id != id);
            if s.users.len() == before {
                return Err(RepoError::NotFound);
            }
            s.tokens.retain(|t| t.user_id != id);
            Ok(())
        })?
    }
}

#[async_trait]
impl RefreshTokenRepo for MemoryDb {
    async fn insert_refresh_token(&self, token: &RefreshToken) -> RepoResult<()> {
        self.with(|s| {
            if s.tokens.iter().any(|t| t.token_hash == token.token_hash) {
                return Err(RepoError::Conflict("refresh_tokens.token_hash".into()));
            }
            s.tokens.push(token.clone());
            Ok(())
        })?
    }

    async fn refresh_token_by_hash(&self, token_hash: &str) -> RepoResult<Option<RefreshToken>> {
        self.with(|s| {
            s.tokens
                .iter()
                .find(|t| t.token_hash == token_hash)
                .cloned()
        })
    }

    async fn mark_refresh_token_used(&self, id: Uuid, now: Millis) -> RepoResult<bool> {
        self.with(|s| match s.tokens.iter_mut().find(|t| t.id == id) {
            Some(t) if t.used_at.is_none() && t.revoked_at.is_none() => {
                t.used_at = Some(now);
                true
            }
            _ => false,
        })
    }

    async fn revoke_token_family(&self, family_id: Uuid, now: Millis) -> RepoResult<u64> {
        self.with(|s| {
            let mut n = 0;
            for t in s
                .tokens
                .iter_mut()
                .filter(|t| t.family_id == family_id && t.revoked_at.is_none())
            {
                t.revoked_at = Some(now);
                n += 1;
            }
            n
        })
    }

    async fn delete_expired_refresh_tokens(&self, now: Millis) -> RepoResult<u64> {
        self.with(|s| {
            let before = s.tokens.len();
            s.tokens.retain(|t| t.expires_at >= now);
            (before - s.tokens.len()) as u64
        })
    }
}

#[async_trait]
impl Database for MemoryDb {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> RepoResult<()> {
        Ok(())
    }
}
