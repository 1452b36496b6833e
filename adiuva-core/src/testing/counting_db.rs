//! [`CountingDb`]: a [`Database`] wrapper that counts the calls of each repository
//! method and forwards them to any database (the way `object_store`'s `ThrottledStore`
//! wraps any store). Tests use it to prove how often a request reads the database, e.g.
//! that a request reads its user once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use uuid::Uuid;

use crate::domain::{Email, Millis, Role, Tier, UserId};
use crate::ports::Database;
use crate::ports::db::{
    BackupMeta, BackupRepo, BlobKeyRepo, Device, DeviceConnected, DeviceInfo, DeviceRepo,
    DeviceSession, NewQueuedFrame, QueuedFrame, RecordMeta, RecordRepo, RecordSwap, RefreshToken,
    RefreshTokenRepo, RepoResult, Subscription, SubscriptionRepo, User, UserRepo, VectorItemSize,
    VectorUsageRepo,
};

/// Forwards every call to `inner`, counting calls per method name.
pub struct CountingDb {
    inner: Arc<dyn Database>,
    calls: Mutex<HashMap<&'static str, usize>>,
}

/// The methods that read a user row.
pub const USER_READS: [&str; 3] = ["user_by_id", "user_in_session", "user_by_email"];

impl CountingDb {
    /// Counts calls on their way to `inner`.
    pub fn new(inner: Arc<dyn Database>) -> Self {
        Self {
            inner,
            calls: Mutex::new(HashMap::new()),
        }
    }

    fn count(&self, method: &'static str) {
        if let Ok(mut calls) = self.calls.lock() {
            *calls.entry(method).or_default() += 1;
        }
    }

    /// Calls of `method` since the last [`reset`](Self::reset).
    pub fn calls(&self, method: &str) -> usize {
        self.calls
            .lock()
            .map_or(0, |c| c.get(method).copied().unwrap_or(0))
    }

    /// Reads of a user row (any of [`USER_READS`]) since the last reset.
    pub fn user_reads(&self) -> usize {
        USER_READS.iter().map(|m| self.calls(m)).sum()
    }

    /// Every count, by method name.
    pub fn snapshot(&self) -> HashMap<&'static str, usize> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Starts counting from zero.
    pub fn reset(&self) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.clear();
        }
    }
}

#[async_trait]
impl UserRepo for CountingDb {
    async fn insert_user(&self, user: &User) -> RepoResult<()> {
        self.count("insert_user");
        self.inner.insert_user(user).await
    }

    async fn user_by_id(&self, id: UserId) -> RepoResult<Option<User>> {
        self.count("user_by_id");
        self.inner.user_by_id(id).await
    }

    async fn user_in_session(&self, id: UserId, family_id: Uuid) -> RepoResult<Option<User>> {
        self.count("user_in_session");
        self.inner.user_in_session(id, family_id).await
    }

    async fn user_by_email(&self, email: &Email) -> RepoResult<Option<User>> {
        self.count("user_by_email");
        self.inner.user_by_email(email).await
    }

    async fn list_users(&self, offset: u64, limit: u64) -> RepoResult<Vec<User>> {
        self.count("list_users");
        self.inner.list_users(offset, limit).await
    }

    async fn set_tier(&self, id: UserId, tier: Tier, now: Millis) -> RepoResult<()> {
        self.count("set_tier");
        self.inner.set_tier(id, tier, now).await
    }

    async fn set_role(&self, id: UserId, role: Role, now: Millis) -> RepoResult<()> {
        self.count("set_role");
        self.inner.set_role(id, role, now).await
    }

    async fn delete_user(&self, id: UserId) -> RepoResult<()> {
        self.count("delete_user");
        self.inner.delete_user(id).await
    }
}

#[async_trait]
impl RefreshTokenRepo for CountingDb {
    async fn insert_refresh_token(&self, token: &RefreshToken) -> RepoResult<()> {
        self.count("insert_refresh_token");
        self.inner.insert_refresh_token(token).await
    }

    async fn refresh_token_by_hash(&self, token_hash: &str) -> RepoResult<Option<RefreshToken>> {
        self.count("refresh_token_by_hash");
        self.inner.refresh_token_by_hash(token_hash).await
    }

    async fn mark_refresh_token_used(&self, id: Uuid, now: Millis) -> RepoResult<bool> {
        self.count("mark_refresh_token_used");
        self.inner.mark_refresh_token_used(id, now).await
    }

    async fn revoke_token_family(&self, family_id: Uuid, now: Millis) -> RepoResult<u64> {
        self.count("revoke_token_family");
        self.inner.revoke_token_family(family_id, now).await
    }

    async fn families_revoked_since(&self, since: Millis) -> RepoResult<Vec<Uuid>> {
        self.count("families_revoked_since");
        self.inner.families_revoked_since(since).await
    }

    async fn delete_expired_refresh_tokens(&self, now: Millis) -> RepoResult<u64> {
        self.count("delete_expired_refresh_tokens");
        self.inner.delete_expired_refresh_tokens(now).await
    }
}

#[async_trait]
impl RecordRepo for CountingDb {
    async fn insert_record_within_quota(
        &self,
        meta: &RecordMeta,
        quota_bytes: Option<i64>,
    ) -> RepoResult<bool> {
        self.count("insert_record_within_quota");
        self.inner
            .insert_record_within_quota(meta, quota_bytes)
            .await
    }

    async fn record(&self, user_id: UserId, id: Uuid) -> RepoResult<Option<RecordMeta>> {
        self.count("record");
        self.inner.record(user_id, id).await
    }

    async fn list_records(
        &self,
        user_id: UserId,
        table: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> RepoResult<Vec<RecordMeta>> {
        self.count("list_records");
        self.inner.list_records(user_id, table, offset, limit).await
    }

    async fn replace_record_blob(
        &self,
        meta: &RecordMeta,
        previous_blob_key: &str,
        quota_bytes: Option<i64>,
    ) -> RepoResult<RecordSwap> {
        self.count("replace_record_blob");
        self.inner
            .replace_record_blob(meta, previous_blob_key, quota_bytes)
            .await
    }

    async fn delete_record(&self, user_id: UserId, id: Uuid) -> RepoResult<RecordMeta> {
        self.count("delete_record");
        self.inner.delete_record(user_id, id).await
    }

    async fn stored_bytes(&self, user_id: UserId) -> RepoResult<i64> {
        self.count("stored_bytes");
        self.inner.stored_bytes(user_id).await
    }
}

#[async_trait]
impl BackupRepo for CountingDb {
    async fn insert_backup_within_quota(
        &self,
        meta: &BackupMeta,
        quota_bytes: Option<i64>,
    ) -> RepoResult<bool> {
        self.count("insert_backup_within_quota");
        self.inner
            .insert_backup_within_quota(meta, quota_bytes)
            .await
    }

    async fn list_backups(&self, user_id: UserId) -> RepoResult<Vec<BackupMeta>> {
        self.count("list_backups");
        self.inner.list_backups(user_id).await
    }

    async fn delete_backup(&self, user_id: UserId, id: Uuid) -> RepoResult<BackupMeta> {
        self.count("delete_backup");
        self.inner.delete_backup(user_id, id).await
    }

    async fn backup_bytes(&self, user_id: UserId) -> RepoResult<i64> {
        self.count("backup_bytes");
        self.inner.backup_bytes(user_id).await
    }
}

#[async_trait]
impl BlobKeyRepo for CountingDb {
    async fn referenced_blob_keys(&self) -> RepoResult<Vec<String>> {
        self.count("referenced_blob_keys");
        self.inner.referenced_blob_keys().await
    }

    async fn user_blob_keys(&self, user_id: UserId) -> RepoResult<Vec<String>> {
        self.count("user_blob_keys");
        self.inner.user_blob_keys(user_id).await
    }
}

#[async_trait]
impl SubscriptionRepo for CountingDb {
    async fn upsert_subscription(&self, sub: &Subscription) -> RepoResult<()> {
        self.count("upsert_subscription");
        self.inner.upsert_subscription(sub).await
    }

    async fn subscription_for_user(&self, user_id: UserId) -> RepoResult<Option<Subscription>> {
        self.count("subscription_for_user");
        self.inner.subscription_for_user(user_id).await
    }
}

#[async_trait]
impl VectorUsageRepo for CountingDb {
    async fn reserve_vector_items(
        &self,
        user_id: UserId,
        items: &[(String, i64)],
        quota_bytes: Option<i64>,
        now: Millis,
    ) -> RepoResult<Option<Vec<VectorItemSize>>> {
        self.count("reserve_vector_items");
        self.inner
            .reserve_vector_items(user_id, items, quota_bytes, now)
            .await
    }

    async fn restore_vector_items(
        &self,
        user_id: UserId,
        previous: &[VectorItemSize],
    ) -> RepoResult<()> {
        self.count("restore_vector_items");
        self.inner.restore_vector_items(user_id, previous).await
    }

    async fn release_vector_items(&self, user_id: UserId, ids: &[String]) -> RepoResult<u64> {
        self.count("release_vector_items");
        self.inner.release_vector_items(user_id, ids).await
    }

    async fn release_all_vector_items(&self, user_id: UserId) -> RepoResult<()> {
        self.count("release_all_vector_items");
        self.inner.release_all_vector_items(user_id).await
    }

    async fn vector_bytes(&self, user_id: UserId) -> RepoResult<i64> {
        self.count("vector_bytes");
        self.inner.vector_bytes(user_id).await
    }
}

#[async_trait]
impl crate::ports::db::AgentRepo for CountingDb {
    async fn insert_agent(
        &self,
        row: &crate::ports::db::AgentConfigRow,
        limits: crate::ports::db::AgentLimits,
    ) -> RepoResult<()> {
        self.count("insert_agent");
        self.inner.insert_agent(row, limits).await
    }

    async fn update_agent(
        &self,
        row: &crate::ports::db::AgentConfigRow,
        limits: crate::ports::db::AgentLimits,
    ) -> RepoResult<()> {
        self.count("update_agent");
        self.inner.update_agent(row, limits).await
    }

    async fn agent(
        &self,
        user_id: UserId,
        id: Uuid,
    ) -> RepoResult<Option<crate::ports::db::AgentConfigRow>> {
        self.count("agent");
        self.inner.agent(user_id, id).await
    }

    async fn agent_by_id(&self, id: Uuid) -> RepoResult<Option<crate::ports::db::AgentConfigRow>> {
        self.count("agent_by_id");
        self.inner.agent_by_id(id).await
    }

    async fn list_agents(
        &self,
        user_id: UserId,
        kind: crate::ports::db::AgentKind,
    ) -> RepoResult<Vec<crate::ports::db::AgentConfigRow>> {
        self.count("list_agents");
        self.inner.list_agents(user_id, kind).await
    }

    async fn delete_agent(
        &self,
        user_id: UserId,
        kind: crate::ports::db::AgentKind,
        id: Uuid,
    ) -> RepoResult<()> {
        self.count("delete_agent");
        self.inner.delete_agent(user_id, kind, id).await
    }

    async fn set_agent_token(&self, id: Uuid, sealed: &str, now: Millis) -> RepoResult<()> {
        self.count("set_agent_token");
        self.inner.set_agent_token(id, sealed, now).await
    }

    async fn replace_agent_tokens(
        &self,
        user_id: UserId,
        old: &str,
        new: &str,
        now: Millis,
    ) -> RepoResult<u64> {
        self.count("replace_agent_tokens");
        self.inner
            .replace_agent_tokens(user_id, old, new, now)
            .await
    }

    async fn set_agent_cursor(
        &self,
        id: Uuid,
        cursor: Option<&str>,
        now: Millis,
    ) -> RepoResult<()> {
        self.count("set_agent_cursor");
        self.inner.set_agent_cursor(id, cursor, now).await
    }

    async fn pause_agent_for_reauth(&self, id: Uuid, now: Millis) -> RepoResult<()> {
        self.count("pause_agent_for_reauth");
        self.inner.pause_agent_for_reauth(id, now).await
    }

    async fn due_agents(
        &self,
        now: Millis,
        limit: u32,
    ) -> RepoResult<Vec<crate::ports::db::AgentConfigRow>> {
        self.count("due_agents");
        self.inner.due_agents(now, limit).await
    }

    async fn claim_slot(
        &self,
        claim: &crate::ports::db::SlotClaim,
    ) -> RepoResult<Option<crate::ports::db::AgentRun>> {
        self.count("claim_slot");
        self.inner.claim_slot(claim).await
    }

    async fn insert_run(&self, run: &crate::ports::db::AgentRun) -> RepoResult<()> {
        self.count("insert_run");
        self.inner.insert_run(run).await
    }

    async fn active_runs(
        &self,
        agent_id: Uuid,
        now: Millis,
    ) -> RepoResult<Vec<crate::ports::db::AgentRun>> {
        self.count("active_runs");
        self.inner.active_runs(agent_id, now).await
    }

    async fn start_run(
        &self,
        run_id: Uuid,
        instance_id: Option<Uuid>,
        lease_until: Millis,
        device_id: Option<&str>,
        now: Millis,
    ) -> RepoResult<bool> {
        self.count("start_run");
        self.inner
            .start_run(run_id, instance_id, lease_until, device_id, now)
            .await
    }

    async fn renew_leases(&self, instance_id: Uuid, lease_until: Millis) -> RepoResult<u64> {
        self.count("renew_leases");
        self.inner.renew_leases(instance_id, lease_until).await
    }

    async fn take_over_runs(
        &self,
        now: Millis,
        instance_id: Uuid,
        lease_until: Millis,
        limit: u32,
    ) -> RepoResult<Vec<crate::ports::db::AgentRun>> {
        self.count("take_over_runs");
        self.inner
            .take_over_runs(now, instance_id, lease_until, limit)
            .await
    }

    async fn finish_run(
        &self,
        run_id: Uuid,
        outcome: &crate::ports::db::RunOutcome,
    ) -> RepoResult<bool> {
        self.count("finish_run");
        self.inner.finish_run(run_id, outcome).await
    }

    async fn run(
        &self,
        user_id: UserId,
        id: Uuid,
    ) -> RepoResult<Option<crate::ports::db::AgentRun>> {
        self.count("run");
        self.inner.run(user_id, id).await
    }

    async fn list_runs(
        &self,
        user_id: UserId,
        agent_id: Option<Uuid>,
        offset: u64,
        limit: u64,
    ) -> RepoResult<Vec<crate::ports::db::AgentRun>> {
        self.count("list_runs");
        self.inner.list_runs(user_id, agent_id, offset, limit).await
    }

    async fn runs_for_slot(
        &self,
        agent_id: Uuid,
        scheduled_for: Millis,
    ) -> RepoResult<Vec<crate::ports::db::AgentRun>> {
        self.count("runs_for_slot");
        self.inner.runs_for_slot(agent_id, scheduled_for).await
    }

    async fn insert_journey(&self, row: &crate::ports::db::JourneyRow) -> RepoResult<()> {
        self.count("insert_journey");
        self.inner.insert_journey(row).await
    }

    async fn journey(
        &self,
        user_id: UserId,
        id: Uuid,
        now: Millis,
    ) -> RepoResult<Option<crate::ports::db::JourneyRow>> {
        self.count("journey");
        self.inner.journey(user_id, id, now).await
    }

    async fn update_journey(
        &self,
        user_id: UserId,
        id: Uuid,
        state_sealed: &str,
        done: bool,
        expires_at: Millis,
    ) -> RepoResult<()> {
        self.count("update_journey");
        self.inner
            .update_journey(user_id, id, state_sealed, done, expires_at)
            .await
    }

    async fn delete_expired_journeys(&self, now: Millis) -> RepoResult<u64> {
        self.count("delete_expired_journeys");
        self.inner.delete_expired_journeys(now).await
    }
}

#[async_trait]
impl DeviceRepo for CountingDb {
    async fn connect_device(
        &self,
        user_id: UserId,
        device_id: &str,
        info: &DeviceInfo,
        session: DeviceSession,
        max_devices: u32,
        now: Millis,
    ) -> RepoResult<DeviceConnected> {
        self.count("connect_device");
        self.inner
            .connect_device(user_id, device_id, info, session, max_devices, now)
            .await
    }

    async fn disconnect_device(
        &self,
        user_id: UserId,
        device_id: &str,
        session_id: Uuid,
        now: Millis,
    ) -> RepoResult<bool> {
        self.count("disconnect_device");
        self.inner
            .disconnect_device(user_id, device_id, session_id, now)
            .await
    }

    async fn touch_instance_devices(&self, instance_id: Uuid, now: Millis) -> RepoResult<u64> {
        self.count("touch_instance_devices");
        self.inner.touch_instance_devices(instance_id, now).await
    }

    async fn devices_with_queued_frames(
        &self,
        instance_id: Uuid,
        now: Millis,
    ) -> RepoResult<Vec<(UserId, String)>> {
        self.count("devices_with_queued_frames");
        self.inner
            .devices_with_queued_frames(instance_id, now)
            .await
    }

    async fn release_instance_devices(&self, instance_id: Uuid, now: Millis) -> RepoResult<u64> {
        self.count("release_instance_devices");
        self.inner.release_instance_devices(instance_id, now).await
    }

    async fn device(&self, user_id: UserId, device_id: &str) -> RepoResult<Option<Device>> {
        self.count("device");
        self.inner.device(user_id, device_id).await
    }

    async fn list_devices(&self, user_id: UserId) -> RepoResult<Vec<Device>> {
        self.count("list_devices");
        self.inner.list_devices(user_id).await
    }

    async fn delete_device(&self, user_id: UserId, device_id: &str) -> RepoResult<Device> {
        self.count("delete_device");
        self.inner.delete_device(user_id, device_id).await
    }

    async fn enqueue_frame(
        &self,
        user_id: UserId,
        device_id: &str,
        frame: &NewQueuedFrame,
        max_frames: u32,
        now: Millis,
    ) -> RepoResult<QueuedFrame> {
        self.count("enqueue_frame");
        self.inner
            .enqueue_frame(user_id, device_id, frame, max_frames, now)
            .await
    }

    async fn queued_frames(
        &self,
        user_id: UserId,
        device_id: &str,
        after_seq: i64,
        now: Millis,
        limit: u32,
    ) -> RepoResult<Vec<QueuedFrame>> {
        self.count("queued_frames");
        self.inner
            .queued_frames(user_id, device_id, after_seq, now, limit)
            .await
    }

    async fn queued_count(&self, user_id: UserId, device_id: &str, now: Millis) -> RepoResult<u64> {
        self.count("queued_count");
        self.inner.queued_count(user_id, device_id, now).await
    }

    async fn ack_frame(
        &self,
        user_id: UserId,
        device_id: &str,
        frame_id: Uuid,
    ) -> RepoResult<bool> {
        self.count("ack_frame");
        self.inner.ack_frame(user_id, device_id, frame_id).await
    }

    async fn expire_frames(&self, now: Millis) -> RepoResult<u64> {
        self.count("expire_frames");
        self.inner.expire_frames(now).await
    }
}

#[async_trait]
impl Database for CountingDb {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn ping(&self) -> RepoResult<()> {
        self.count("ping");
        self.inner.ping().await
    }
}
