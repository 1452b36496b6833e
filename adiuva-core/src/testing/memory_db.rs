//! An in-memory [`Database`]: the reference implementation of the repository contracts,
//! used by core's own tests. Not durable, not for production.

use std::sync::Mutex;

use async_trait::async_trait;
use uuid::Uuid;

use crate::domain::{Email, Millis, Role, Tier, UserId};
use crate::ports::Database;
use crate::ports::db::{
    AgentConfigRow, AgentCounts, AgentKind, AgentLimits, AgentRepo, AgentRun, AgentStatus,
    BackupMeta, BackupRepo, BlobKeyRepo, Device, DeviceConnected, DeviceInfo, DeviceRepo,
    DeviceSession, JourneyRow, NewQueuedFrame, QueuedFrame, RecordMeta, RecordRepo, RecordSwap,
    RefreshToken, RefreshTokenRepo, RepoError, RepoResult, RunOutcome, RunStatus, SlotClaim,
    Subscription, SubscriptionRepo, User, UserRepo, VectorItemSize, VectorUsageRepo,
};
use crate::quota::CloudUsage;

#[derive(Default)]
struct State {
    users: Vec<User>,
    tokens: Vec<RefreshToken>,
    records: Vec<RecordMeta>,
    backups: Vec<BackupMeta>,
    subscriptions: Vec<Subscription>,
    /// (user, item id) → bytes.
    vector_items: std::collections::BTreeMap<(UserId, String), i64>,
    /// Devices with the next `seq` of their queue.
    devices: Vec<(Device, i64)>,
    /// (user, device id, frame).
    queue: Vec<(UserId, String, QueuedFrame)>,
    agents: Vec<AgentConfigRow>,
    runs: Vec<AgentRun>,
    journeys: Vec<JourneyRow>,
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

    async fn user_in_session(&self, id: UserId, family_id: Uuid) -> RepoResult<Option<User>> {
        self.with(|s| {
            let revoked = s
                .tokens
                .iter()
                .any(|t| t.family_id == family_id && t.revoked_at.is_some());
            s.users.iter().find(|u| u.id == id && !revoked).cloned()
        })
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
            s.records.retain(|r| r.user_id != id);
            s.backups.retain(|b| b.user_id != id);
            s.subscriptions.retain(|x| x.user_id != id);
            s.vector_items.retain(|(u, _), _| *u != id);
            s.devices.retain(|(d, _)| d.user_id != id);
            s.queue.retain(|(u, _, _)| *u != id);
            s.agents.retain(|a| a.user_id != id);
            s.runs.retain(|r| r.user_id != id);
            s.journeys.retain(|j| j.user_id != id);
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

    async fn families_revoked_since(&self, since: Millis) -> RepoResult<Vec<Uuid>> {
        self.with(|s| {
            let mut families: Vec<Uuid> = s
                .tokens
                .iter()
                .filter(|t| t.revoked_at.is_some_and(|at| at >= since))
                .map(|t| t.family_id)
                .collect();
            families.sort_unstable();
            families.dedup();
            families
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

fn record_bytes(s: &State, user: UserId) -> i64 {
    s.records
        .iter()
        .filter(|r| r.user_id == user)
        .map(|r| r.size_bytes)
        .sum()
}

fn backup_bytes(s: &State, user: UserId) -> i64 {
    s.backups
        .iter()
        .filter(|b| b.user_id == user)
        .map(|b| b.size_bytes)
        .sum()
}

/// Removes and returns the one row `is_it` picks (a row of this user with this id), or
/// `NotFound`: the delete of every per-user table.
fn remove_where<T>(rows: &mut Vec<T>, is_it: impl Fn(&T) -> bool) -> RepoResult<T> {
    let i = rows.iter().position(is_it).ok_or(RepoError::NotFound)?;
    Ok(rows.remove(i))
}

fn vector_bytes(s: &State, user: UserId) -> i64 {
    s.vector_items
        .iter()
        .filter(|((u, _), _)| *u == user)
        .map(|(_, b)| b)
        .sum()
}

/// What counts against `cloud_storage_gb` (the rule is `CloudUsage`'s).
fn usage(s: &State, user: UserId) -> CloudUsage {
    CloudUsage {
        records: record_bytes(s, user),
        vectors: vector_bytes(s, user),
    }
}

#[async_trait]
impl VectorUsageRepo for MemoryDb {
    async fn reserve_vector_items(
        &self,
        user_id: UserId,
        items: &[(String, i64)],
        quota: Option<i64>,
        _now: Millis,
    ) -> RepoResult<Option<Vec<VectorItemSize>>> {
        self.with(|s| {
            let previous: Vec<VectorItemSize> = items
                .iter()
                .map(|(id, _)| {
                    (
                        id.clone(),
                        s.vector_items.get(&(user_id, id.clone())).copied(),
                    )
                })
                .collect();
            let freed: i64 = previous.iter().filter_map(|(_, b)| *b).sum();
            let adding: i64 = items.iter().map(|(_, b)| b).sum();
            if !usage(s, user_id).admits(quota, freed, adding) {
                return None;
            }
            for (id, b) in items {
                s.vector_items.insert((user_id, id.clone()), *b);
            }
            Some(previous)
        })
    }

    async fn restore_vector_items(
        &self,
        user_id: UserId,
        previous: &[VectorItemSize],
    ) -> RepoResult<()> {
        self.with(|s| {
            for (id, b) in previous {
                match b {
                    Some(b) => s.vector_items.insert((user_id, id.clone()), *b),
                    None => s.vector_items.remove(&(user_id, id.clone())),
                };
            }
        })
    }

    async fn release_vector_items(&self, user_id: UserId, ids: &[String]) -> RepoResult<u64> {
        self.with(|s| {
            ids.iter()
                .filter(|id| s.vector_items.remove(&(user_id, (*id).clone())).is_some())
                .count() as u64
        })
    }

    async fn release_all_vector_items(&self, user_id: UserId) -> RepoResult<()> {
        self.with(|s| s.vector_items.retain(|(u, _), _| *u != user_id))
    }

    async fn vector_bytes(&self, user_id: UserId) -> RepoResult<i64> {
        self.with(|s| vector_bytes(s, user_id))
    }
}

#[async_trait]
impl RecordRepo for MemoryDb {
    async fn insert_record_within_quota(
        &self,
        m: &RecordMeta,
        quota: Option<i64>,
    ) -> RepoResult<bool> {
        self.with(|s| {
            if s.records
                .iter()
                .any(|r| r.id == m.id || r.blob_key == m.blob_key)
            {
                return Err(RepoError::Conflict("storage_records".into()));
            }
            if !usage(s, m.user_id).admits(quota, 0, m.size_bytes) {
                return Ok(false);
            }
            s.records.push(m.clone());
            Ok(true)
        })?
    }

    async fn record(&self, user_id: UserId, id: Uuid) -> RepoResult<Option<RecordMeta>> {
        self.with(|s| {
            s.records
                .iter()
                .find(|r| r.id == id && r.user_id == user_id)
                .cloned()
        })
    }

    async fn list_records(
        &self,
        user_id: UserId,
        table: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> RepoResult<Vec<RecordMeta>> {
        self.with(|s| {
            let mut mine: Vec<RecordMeta> = s
                .records
                .iter()
                .filter(|r| r.user_id == user_id && table.is_none_or(|t| r.table == t))
                .cloned()
                .collect();
            mine.sort_by_key(|r| std::cmp::Reverse((r.created_at, r.id)));
            mine.into_iter()
                .skip(offset as usize)
                .take(limit as usize)
                .collect()
        })
    }

    async fn replace_record_blob(
        &self,
        m: &RecordMeta,
        previous_blob_key: &str,
        quota: Option<i64>,
    ) -> RepoResult<RecordSwap> {
        self.with(|s| {
            let usage = usage(s, m.user_id);
            let Some(r) = s
                .records
                .iter_mut()
                .find(|r| r.id == m.id && r.user_id == m.user_id)
            else {
                return Err(RepoError::NotFound);
            };
            if r.blob_key != previous_blob_key {
                return Ok(RecordSwap::Stale);
            }
            if !usage.admits(quota, r.size_bytes, m.size_bytes) {
                return Ok(RecordSwap::OverQuota);
            }
            r.blob_key = m.blob_key.clone();
            r.checksum = m.checksum.clone();
            r.size_bytes = m.size_bytes;
            r.updated_at = m.updated_at;
            Ok(RecordSwap::Replaced)
        })?
    }

    async fn delete_record(&self, user_id: UserId, id: Uuid) -> RepoResult<RecordMeta> {
        self.with(|s| remove_where(&mut s.records, |r| r.id == id && r.user_id == user_id))?
    }

    async fn stored_bytes(&self, user_id: UserId) -> RepoResult<i64> {
        self.with(|s| record_bytes(s, user_id))
    }
}

#[async_trait]
impl BackupRepo for MemoryDb {
    async fn insert_backup_within_quota(
        &self,
        m: &BackupMeta,
        quota: Option<i64>,
    ) -> RepoResult<bool> {
        self.with(|s| {
            if s.backups.iter().any(|b| {
                b.id == m.id
                    || b.blob_key == m.blob_key
                    || (b.user_id == m.user_id && b.timestamp == m.timestamp)
            }) {
                return Err(RepoError::Conflict("backups".into()));
            }
            if !crate::quota::fits(quota, backup_bytes(s, m.user_id), 0, m.size_bytes) {
                return Ok(false);
            }
            s.backups.push(m.clone());
            Ok(true)
        })?
    }

    async fn list_backups(&self, user_id: UserId) -> RepoResult<Vec<BackupMeta>> {
        self.with(|s| {
            let mut mine: Vec<BackupMeta> = s
                .backups
                .iter()
                .filter(|b| b.user_id == user_id)
                .cloned()
                .collect();
            mine.sort_by_key(|b| std::cmp::Reverse(b.timestamp));
            mine
        })
    }

    async fn delete_backup(&self, user_id: UserId, id: Uuid) -> RepoResult<BackupMeta> {
        self.with(|s| remove_where(&mut s.backups, |b| b.id == id && b.user_id == user_id))?
    }

    async fn backup_bytes(&self, user_id: UserId) -> RepoResult<i64> {
        self.with(|s| backup_bytes(s, user_id))
    }
}

#[async_trait]
impl BlobKeyRepo for MemoryDb {
    async fn referenced_blob_keys(&self) -> RepoResult<Vec<String>> {
        self.with(|s| {
            let records = s.records.iter().map(|r| r.blob_key.clone());
            records
                .chain(s.backups.iter().map(|b| b.blob_key.clone()))
                .collect()
        })
    }

    async fn user_blob_keys(&self, user_id: UserId) -> RepoResult<Vec<String>> {
        self.with(|s| {
            let records = s.records.iter().filter(|r| r.user_id == user_id);
            let backups = s.backups.iter().filter(|b| b.user_id == user_id);
            records
                .map(|r| r.blob_key.clone())
                .chain(backups.map(|b| b.blob_key.clone()))
                .collect()
        })
    }
}

#[async_trait]
impl SubscriptionRepo for MemoryDb {
    async fn upsert_subscription(&self, sub: &Subscription) -> RepoResult<()> {
        self.with(|s| {
            match s
                .subscriptions
                .iter_mut()
                .find(|x| x.stripe_subscription_id == sub.stripe_subscription_id)
            {
                Some(x) => {
                    x.tier = sub.tier;
                    x.status = sub.status.clone();
                    x.current_period_end = sub.current_period_end;
                }
                None => s.subscriptions.push(sub.clone()),
            }
        })
    }

    async fn subscription_for_user(&self, user_id: UserId) -> RepoResult<Option<Subscription>> {
        self.with(|s| {
            s.subscriptions
                .iter()
                .filter(|x| x.user_id == user_id)
                .max_by_key(|x| (x.created_at, x.id))
                .cloned()
        })
    }
}

impl State {
    fn device_mut(&mut self, user_id: UserId, device_id: &str) -> Option<&mut (Device, i64)> {
        self.devices
            .iter_mut()
            .find(|(d, _)| d.user_id == user_id && d.device_id == device_id)
    }
}

#[async_trait]
impl DeviceRepo for MemoryDb {
    async fn connect_device(
        &self,
        user_id: UserId,
        device_id: &str,
        info: &DeviceInfo,
        session: DeviceSession,
        max_devices: u32,
        now: Millis,
    ) -> RepoResult<DeviceConnected> {
        self.with(|s| {
            if !s.users.iter().any(|u| u.id == user_id) {
                return Err(RepoError::NotFound);
            }
            if let Some((d, _)) = s.device_mut(user_id, device_id) {
                let replaced = d.session.replace(session);
                d.info = info.clone();
                d.last_seen = now;
                let expired = std::mem::take(&mut d.expired_count);
                return Ok(DeviceConnected { replaced, expired });
            }
            let owned = s
                .devices
                .iter()
                .filter(|(d, _)| d.user_id == user_id)
                .count();
            if owned >= max_devices as usize {
                return Err(RepoError::Conflict("devices.limit".into()));
            }
            s.devices.push((
                Device {
                    user_id,
                    device_id: device_id.to_owned(),
                    info: info.clone(),
                    session: Some(session),
                    last_seen: now,
                    created_at: now,
                    expired_count: 0,
                },
                1,
            ));
            Ok(DeviceConnected {
                replaced: None,
                expired: 0,
            })
        })?
    }

    async fn disconnect_device(
        &self,
        user_id: UserId,
        device_id: &str,
        session_id: Uuid,
        now: Millis,
    ) -> RepoResult<bool> {
        self.with(|s| match s.device_mut(user_id, device_id) {
            Some((d, _)) if d.session.is_some_and(|x| x.session_id == session_id) => {
                d.session = None;
                d.last_seen = now;
                true
            }
            _ => false,
        })
    }

    async fn touch_instance_devices(&self, instance_id: Uuid, now: Millis) -> RepoResult<u64> {
        self.with(|s| {
            let mut n = 0;
            for (d, _) in &mut s.devices {
                if d.session.is_some_and(|x| x.instance_id == instance_id) {
                    d.last_seen = now;
                    n += 1;
                }
            }
            n
        })
    }

    async fn devices_with_queued_frames(
        &self,
        instance_id: Uuid,
        now: Millis,
    ) -> RepoResult<Vec<(UserId, String)>> {
        self.with(|s| {
            s.devices
                .iter()
                .filter(|(d, _)| d.session.is_some_and(|x| x.instance_id == instance_id))
                .filter(|(d, _)| {
                    s.queue.iter().any(|(u, id, q)| {
                        *u == d.user_id && *id == d.device_id && q.expires_at > now
                    })
                })
                .map(|(d, _)| (d.user_id, d.device_id.clone()))
                .collect()
        })
    }

    async fn release_instance_devices(&self, instance_id: Uuid, now: Millis) -> RepoResult<u64> {
        self.with(|s| {
            let mut n = 0;
            for (d, _) in &mut s.devices {
                if d.session.is_some_and(|x| x.instance_id == instance_id) {
                    d.session = None;
                    d.last_seen = now;
                    n += 1;
                }
            }
            n
        })
    }

    async fn device(&self, user_id: UserId, device_id: &str) -> RepoResult<Option<Device>> {
        self.with(|s| s.device_mut(user_id, device_id).map(|(d, _)| d.clone()))
    }

    async fn list_devices(&self, user_id: UserId) -> RepoResult<Vec<Device>> {
        self.with(|s| {
            let mut list: Vec<Device> = s
                .devices
                .iter()
                .filter(|(d, _)| d.user_id == user_id)
                .map(|(d, _)| d.clone())
                .collect();
            list.sort_by(|a, b| (a.created_at, &a.device_id).cmp(&(b.created_at, &b.device_id)));
            list
        })
    }

    async fn delete_device(&self, user_id: UserId, device_id: &str) -> RepoResult<Device> {
        self.with(|s| {
            let at = s
                .devices
                .iter()
                .position(|(d, _)| d.user_id == user_id && d.device_id == device_id)
                .ok_or(RepoError::NotFound)?;
            let (device, _) = s.devices.remove(at);
            s.queue
                .retain(|(u, id, _)| !(*u == user_id && id == device_id));
            Ok(device)
        })?
    }

    async fn enqueue_frame(
        &self,
        user_id: UserId,
        device_id: &str,
        frame: &NewQueuedFrame,
        max_frames: u32,
        now: Millis,
    ) -> RepoResult<QueuedFrame> {
        self.with(|s| {
            // A missing device is NotFound before a duplicate frame_id is a Conflict, as
            // in SQL (the seq is taken from the device's row before the insert).
            if s.device_mut(user_id, device_id).is_none() {
                return Err(RepoError::NotFound);
            }
            if s.queue.iter().any(|(_, _, q)| q.frame_id == frame.frame_id) {
                return Err(RepoError::Conflict("device_queue.frame_id".into()));
            }
            let (_, next) = s
                .device_mut(user_id, device_id)
                .ok_or(RepoError::NotFound)?;
            let seq = *next;
            *next += 1;
            let queued = QueuedFrame {
                seq,
                frame_id: frame.frame_id,
                kind: frame.kind.clone(),
                payload: frame.payload.clone(),
                created_at: now,
                expires_at: frame.expires_at,
            };
            s.queue
                .push((user_id, device_id.to_owned(), queued.clone()));
            let mine = |u: &UserId, id: &String| *u == user_id && id == device_id;
            let held = s.queue.iter().filter(|(u, id, _)| mine(u, id)).count();
            let over = held.saturating_sub(max_frames as usize);
            if over > 0 {
                // The queue is kept in seq order per device: the first `over` are oldest.
                let mut dropped = 0;
                s.queue.retain(|(u, id, _)| {
                    if dropped < over && mine(u, id) {
                        dropped += 1;
                        false
                    } else {
                        true
                    }
                });
                if let Some((d, _)) = s.device_mut(user_id, device_id) {
                    d.expired_count += over as i64;
                }
            }
            Ok(queued)
        })?
    }

    async fn queued_frames(
        &self,
        user_id: UserId,
        device_id: &str,
        after_seq: i64,
        now: Millis,
        limit: u32,
    ) -> RepoResult<Vec<QueuedFrame>> {
        self.with(|s| {
            s.queue
                .iter()
                .filter(|(u, id, q)| {
                    *u == user_id && id == device_id && q.seq > after_seq && q.expires_at > now
                })
                .take(limit as usize)
                .map(|(_, _, q)| q.clone())
                .collect()
        })
    }

    async fn queued_count(&self, user_id: UserId, device_id: &str, now: Millis) -> RepoResult<u64> {
        self.with(|s| {
            s.queue
                .iter()
                .filter(|(u, id, q)| *u == user_id && id == device_id && q.expires_at > now)
                .count() as u64
        })
    }

    async fn ack_frame(
        &self,
        user_id: UserId,
        device_id: &str,
        frame_id: Uuid,
    ) -> RepoResult<bool> {
        self.with(|s| {
            let before = s.queue.len();
            s.queue
                .retain(|(u, id, q)| !(*u == user_id && id == device_id && q.frame_id == frame_id));
            s.queue.len() < before
        })
    }

    async fn expire_frames(&self, now: Millis) -> RepoResult<u64> {
        self.with(|s| {
            let mut expired: Vec<(UserId, String)> = Vec::new();
            s.queue.retain(|(u, id, q)| {
                if q.expires_at <= now {
                    expired.push((*u, id.clone()));
                    false
                } else {
                    true
                }
            });
            for (u, id) in &expired {
                if let Some((d, _)) = s.device_mut(*u, id) {
                    d.expired_count += 1;
                }
            }
            expired.len() as u64
        })
    }
}

/// The counts [`AgentLimits`] bound, over one user's configs.
fn agent_counts(agents: &[AgentConfigRow], user_id: UserId) -> AgentCounts {
    let mine: Vec<&AgentConfigRow> = agents.iter().filter(|a| a.user_id == user_id).collect();
    let mut providers: Vec<&str> = mine
        .iter()
        .filter(|a| a.kind == AgentKind::Cloud)
        .filter_map(|a| a.provider.as_deref())
        .collect();
    providers.sort_unstable();
    providers.dedup();
    AgentCounts {
        configured: mine.len() as u64,
        enabled: mine.iter().filter(|a| a.enabled).count() as u64,
        providers: providers.len() as u64,
    }
}

impl State {
    fn agent_mut(&mut self, id: Uuid) -> Option<&mut AgentConfigRow> {
        self.agents.iter_mut().find(|a| a.id == id)
    }

    /// Runs `write` on the agents, undone when it breaks `limits`.
    fn write_agents_within(
        &mut self,
        user_id: UserId,
        limits: AgentLimits,
        write: impl FnOnce(&mut Vec<AgentConfigRow>) -> RepoResult<()>,
    ) -> RepoResult<()> {
        let before = agent_counts(&self.agents, user_id);
        let mut agents = self.agents.clone();
        write(&mut agents)?;
        let after = agent_counts(&agents, user_id);
        if let Some(name) = limits.broken_by(before, after) {
            return Err(RepoError::Conflict(name.into()));
        }
        self.agents = agents;
        Ok(())
    }
}

/// Whether a run holds its agent at `now` (active and its lease not passed).
fn run_holds(run: &AgentRun, now: Millis) -> bool {
    run.status.is_active() && run.lease_until.is_none_or(|l| l >= now)
}

#[async_trait]
impl AgentRepo for MemoryDb {
    async fn insert_agent(&self, row: &AgentConfigRow, limits: AgentLimits) -> RepoResult<()> {
        self.with(|s| {
            if !s.users.iter().any(|u| u.id == row.user_id) {
                return Err(RepoError::NotFound);
            }
            s.write_agents_within(row.user_id, limits, |agents| {
                if agents.iter().any(|a| a.id == row.id) {
                    return Err(RepoError::Conflict("agents.id".into()));
                }
                agents.push(row.clone());
                Ok(())
            })
        })?
    }

    async fn update_agent(&self, row: &AgentConfigRow, limits: AgentLimits) -> RepoResult<()> {
        self.with(|s| {
            s.write_agents_within(row.user_id, limits, |agents| {
                let a = agents
                    .iter_mut()
                    .find(|a| a.id == row.id && a.user_id == row.user_id && a.kind == row.kind)
                    .ok_or(RepoError::NotFound)?;
                *a = AgentConfigRow {
                    id: a.id,
                    user_id: a.user_id,
                    kind: a.kind,
                    created_at: a.created_at,
                    ..row.clone()
                };
                Ok(())
            })
        })?
    }

    async fn agent(&self, user_id: UserId, id: Uuid) -> RepoResult<Option<AgentConfigRow>> {
        self.with(|s| {
            s.agents
                .iter()
                .find(|a| a.id == id && a.user_id == user_id)
                .cloned()
        })
    }

    async fn agent_by_id(&self, id: Uuid) -> RepoResult<Option<AgentConfigRow>> {
        self.with(|s| s.agents.iter().find(|a| a.id == id).cloned())
    }

    async fn list_agents(
        &self,
        user_id: UserId,
        kind: AgentKind,
    ) -> RepoResult<Vec<AgentConfigRow>> {
        self.with(|s| {
            let mut list: Vec<AgentConfigRow> = s
                .agents
                .iter()
                .filter(|a| a.user_id == user_id && a.kind == kind)
                .cloned()
                .collect();
            list.sort_by_key(|a| (a.created_at, a.id));
            list
        })
    }

    async fn delete_agent(&self, user_id: UserId, kind: AgentKind, id: Uuid) -> RepoResult<()> {
        self.with(|s| {
            let before = s.agents.len();
            s.agents
                .retain(|a| !(a.id == id && a.user_id == user_id && a.kind == kind));
            if s.agents.len() == before {
                return Err(RepoError::NotFound);
            }
            s.runs.retain(|r| r.agent_id != id);
            Ok(())
        })?
    }

    async fn set_agent_token(&self, id: Uuid, sealed: &str, now: Millis) -> RepoResult<()> {
        self.with(|s| {
            let a = s.agent_mut(id).ok_or(RepoError::NotFound)?;
            a.oauth_token_sealed = Some(sealed.to_owned());
            a.updated_at = now;
            Ok(())
        })?
    }

    async fn replace_agent_tokens(
        &self,
        user_id: UserId,
        old: &str,
        new: &str,
        now: Millis,
    ) -> RepoResult<u64> {
        self.with(|s| {
            let mut n = 0;
            for a in s
                .agents
                .iter_mut()
                .filter(|a| a.user_id == user_id && a.oauth_token_sealed.as_deref() == Some(old))
            {
                a.oauth_token_sealed = Some(new.to_owned());
                a.updated_at = now;
                n += 1;
            }
            n
        })
    }

    async fn set_agent_cursor(
        &self,
        id: Uuid,
        cursor: Option<&str>,
        now: Millis,
    ) -> RepoResult<()> {
        self.with(|s| {
            let a = s.agent_mut(id).ok_or(RepoError::NotFound)?;
            a.sync_cursor = cursor.map(str::to_owned);
            a.updated_at = now;
            Ok(())
        })?
    }

    async fn pause_agent_for_reauth(&self, id: Uuid, now: Millis) -> RepoResult<()> {
        self.with(|s| {
            let a = s.agent_mut(id).ok_or(RepoError::NotFound)?;
            a.status = AgentStatus::NeedsReauth;
            a.next_run_at = None;
            a.updated_at = now;
            Ok(())
        })?
    }

    async fn due_agents(&self, now: Millis, limit: u32) -> RepoResult<Vec<AgentConfigRow>> {
        self.with(|s| {
            let mut due: Vec<AgentConfigRow> = s
                .agents
                .iter()
                .filter(|a| {
                    a.enabled
                        && a.status == AgentStatus::Active
                        && a.next_run_at.is_some_and(|t| t <= now)
                })
                .cloned()
                .collect();
            due.sort_by_key(|a| (a.next_run_at, a.id));
            due.truncate(limit as usize);
            due
        })
    }

    async fn claim_slot(&self, claim: &SlotClaim) -> RepoResult<Option<AgentRun>> {
        self.with(|s| {
            let slot_taken = s.runs.iter().any(|r| {
                r.agent_id == claim.agent_id && r.scheduled_for == claim.run.scheduled_for
            }) && claim.run.scheduled_for.is_some();
            if slot_taken || s.runs.iter().any(|r| r.id == claim.run.id) {
                return None;
            }
            let a = s.agent_mut(claim.agent_id)?;
            // As in SQL: the run must be this agent's, of its owner.
            if a.next_run_at != Some(claim.expected_next_run_at)
                || a.user_id != claim.run.user_id
                || claim.run.agent_id != claim.agent_id
            {
                return None;
            }
            a.next_run_at = claim.next_run_at;
            a.updated_at = claim.run.created_at;
            s.runs.push(claim.run.clone());
            Some(claim.run.clone())
        })
    }

    async fn insert_run(&self, run: &AgentRun) -> RepoResult<()> {
        self.with(|s| {
            if !s
                .agents
                .iter()
                .any(|a| a.id == run.agent_id && a.user_id == run.user_id)
            {
                return Err(RepoError::NotFound);
            }
            if s.runs.iter().any(|r| r.id == run.id) {
                return Err(RepoError::Conflict("agent_runs.id".into()));
            }
            if run.scheduled_for.is_some()
                && s.runs
                    .iter()
                    .any(|r| r.agent_id == run.agent_id && r.scheduled_for == run.scheduled_for)
            {
                return Err(RepoError::Conflict("agent_runs.slot".into()));
            }
            s.runs.push(run.clone());
            Ok(())
        })?
    }

    async fn active_runs(&self, agent_id: Uuid, now: Millis) -> RepoResult<Vec<AgentRun>> {
        self.with(|s| {
            let mut list: Vec<AgentRun> = s
                .runs
                .iter()
                .filter(|r| r.agent_id == agent_id && run_holds(r, now))
                .cloned()
                .collect();
            list.sort_by_key(|r| (r.created_at, r.id));
            list
        })
    }

    async fn start_run(
        &self,
        run_id: Uuid,
        instance_id: Option<Uuid>,
        lease_until: Millis,
        device_id: Option<&str>,
        now: Millis,
    ) -> RepoResult<bool> {
        self.with(|s| {
            let Some(r) = s
                .runs
                .iter_mut()
                .find(|r| r.id == run_id && r.status.is_active())
            else {
                return false;
            };
            r.status = RunStatus::Running;
            r.instance_id = instance_id;
            r.lease_until = Some(lease_until);
            r.started_at = r.started_at.or(Some(now));
            if let Some(d) = device_id {
                r.device_id = Some(d.to_owned());
            }
            true
        })
    }

    async fn renew_leases(&self, instance_id: Uuid, lease_until: Millis) -> RepoResult<u64> {
        self.with(|s| {
            let mut n = 0;
            for r in s
                .runs
                .iter_mut()
                .filter(|r| r.status.is_active() && r.instance_id == Some(instance_id))
            {
                r.lease_until = Some(lease_until);
                n += 1;
            }
            n
        })
    }

    async fn take_over_runs(
        &self,
        now: Millis,
        instance_id: Uuid,
        lease_until: Millis,
        limit: u32,
    ) -> RepoResult<Vec<AgentRun>> {
        self.with(|s| {
            let mut stale: Vec<(Millis, Uuid)> = s
                .runs
                .iter()
                .filter(|r| r.status.is_active() && r.lease_until.is_some_and(|l| l < now))
                .map(|r| (r.lease_until.unwrap_or_default(), r.id))
                .collect();
            stale.sort_unstable();
            stale.truncate(limit as usize);
            let mut taken = Vec::with_capacity(stale.len());
            for (_, id) in stale {
                if let Some(r) = s.runs.iter_mut().find(|r| r.id == id) {
                    r.status = RunStatus::Running;
                    r.instance_id = Some(instance_id);
                    r.lease_until = Some(lease_until);
                    r.started_at = r.started_at.or(Some(now));
                    r.attempts += 1;
                    taken.push(r.clone());
                }
            }
            taken
        })
    }

    async fn finish_run(&self, run_id: Uuid, outcome: &RunOutcome) -> RepoResult<bool> {
        self.with(|s| {
            let Some(r) = s
                .runs
                .iter_mut()
                .find(|r| r.id == run_id && r.status.is_active())
            else {
                return false;
            };
            r.status = outcome.status;
            r.items_read = outcome.items_read;
            r.items_produced = outcome.items_produced;
            r.error = outcome.error.clone();
            r.finished_at = Some(outcome.finished_at);
            r.instance_id = None;
            r.lease_until = None;
            true
        })
    }

    async fn run(&self, user_id: UserId, id: Uuid) -> RepoResult<Option<AgentRun>> {
        self.with(|s| {
            s.runs
                .iter()
                .find(|r| r.id == id && r.user_id == user_id)
                .cloned()
        })
    }

    async fn list_runs(
        &self,
        user_id: UserId,
        agent_id: Option<Uuid>,
        offset: u64,
        limit: u64,
    ) -> RepoResult<Vec<AgentRun>> {
        self.with(|s| {
            let mut list: Vec<AgentRun> = s
                .runs
                .iter()
                .filter(|r| r.user_id == user_id && agent_id.is_none_or(|a| r.agent_id == a))
                .cloned()
                .collect();
            list.sort_by_key(|r| std::cmp::Reverse((r.created_at, r.id)));
            list.into_iter()
                .skip(usize::try_from(offset).unwrap_or(usize::MAX))
                .take(usize::try_from(limit).unwrap_or(usize::MAX))
                .collect()
        })
    }

    async fn runs_for_slot(
        &self,
        agent_id: Uuid,
        scheduled_for: Millis,
    ) -> RepoResult<Vec<AgentRun>> {
        self.with(|s| {
            s.runs
                .iter()
                .filter(|r| r.agent_id == agent_id && r.scheduled_for == Some(scheduled_for))
                .cloned()
                .collect()
        })
    }

    async fn insert_journey(&self, row: &JourneyRow) -> RepoResult<()> {
        self.with(|s| {
            if !s.users.iter().any(|u| u.id == row.user_id) {
                return Err(RepoError::NotFound);
            }
            if s.journeys.iter().any(|j| j.id == row.id) {
                return Err(RepoError::Conflict("agent_journeys.id".into()));
            }
            s.journeys.push(row.clone());
            Ok(())
        })?
    }

    async fn journey(
        &self,
        user_id: UserId,
        id: Uuid,
        now: Millis,
    ) -> RepoResult<Option<JourneyRow>> {
        self.with(|s| {
            s.journeys
                .iter()
                .find(|j| j.id == id && j.user_id == user_id && j.expires_at > now)
                .cloned()
        })
    }

    async fn update_journey(
        &self,
        user_id: UserId,
        id: Uuid,
        state_sealed: &str,
        done: bool,
        expires_at: Millis,
    ) -> RepoResult<()> {
        self.with(|s| {
            let j = s
                .journeys
                .iter_mut()
                .find(|j| j.id == id && j.user_id == user_id)
                .ok_or(RepoError::NotFound)?;
            j.state_sealed = state_sealed.to_owned();
            j.done = done;
            j.expires_at = expires_at;
            Ok(())
        })?
    }

    async fn delete_expired_journeys(&self, now: Millis) -> RepoResult<u64> {
        self.with(|s| {
            let before = s.journeys.len();
            s.journeys.retain(|j| j.expires_at > now);
            (before - s.journeys.len()) as u64
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
