//! Database repositories.
//!
//! One trait per aggregate. Every method that touches user data takes the owning
//! [`UserId`] and must scope its query by it: a row of another user is reported exactly
//! like a missing one (`None` / [`RepoError::NotFound`]). Timestamps are [`Millis`]; ids
//! are UUIDs. Implementations own their schema and migrations (one folder per dialect)
//! and must behave identically on SQLite and PostgreSQL: the conformance suite in
//! `adiuva_core::testing` is the arbiter.
//!
//! Backends differ in concurrency, not in results: SQLite serialises writers (WAL lets
//! readers proceed), PostgreSQL runs them side by side; conditional updates such as
//! [`RefreshTokenRepo::mark_used`] must be atomic on both.

use async_trait::async_trait;
use uuid::Uuid;

use crate::domain::{Email, Millis, Role, Tier, UserId};

/// What a repository can fail with. Driver errors are converted into this; no driver
/// type crosses the port.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// The row does not exist (or is not the caller's).
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was broken; the text names which (never the value).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database cannot be reached or is overloaded; retrying later may work.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A stored value could not be read back into a domain value.
    #[error("invalid stored data: {0}")]
    Invalid(String),
    /// Anything else.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

/// Shorthand for repository results.
pub type RepoResult<T> = Result<T, RepoError>;

/// An account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Primary key.
    pub id: UserId,
    /// Unique, normalised.
    pub email: Email,
    /// PHC string (argon2id). Never leaves the server.
    pub password_hash: String,
    /// What the user may administer.
    pub role: Role,
    /// Billing tier; the only source of truth for tier gates.
    pub tier: Tier,
    /// Stripe customer, once billing has created one.
    pub stripe_customer_id: Option<String>,
    /// Creation time.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
}

/// Users.
#[async_trait]
pub trait UserRepo: Send + Sync {
    /// Inserts a new user. A taken email → [`RepoError::Conflict`], atomically (two
    /// concurrent inserts of one email: exactly one succeeds).
    async fn insert_user(&self, user: &User) -> RepoResult<()>;
    /// The user with this id.
    async fn user_by_id(&self, id: UserId) -> RepoResult<Option<User>>;
    /// The user with this id, only while the session (refresh-token family) `family_id`
    /// is not revoked: one read that answers "may this access token still act?". A
    /// family with no token rows (purged, or never stored) counts as not revoked.
    async fn user_in_session(&self, id: UserId, family_id: Uuid) -> RepoResult<Option<User>>;
    /// The user with this (normalised) email.
    async fn user_by_email(&self, email: &Email) -> RepoResult<Option<User>>;
    /// Users ordered by creation time (oldest first), `limit` from `offset`.
    async fn list_users(&self, offset: u64, limit: u64) -> RepoResult<Vec<User>>;
    /// Sets the tier. Unknown id → [`RepoError::NotFound`].
    async fn set_tier(&self, id: UserId, tier: Tier, now: Millis) -> RepoResult<()>;
    /// Sets the role. Unknown id → [`RepoError::NotFound`].
    async fn set_role(&self, id: UserId, role: Role, now: Millis) -> RepoResult<()>;
    /// Deletes the user and everything that hangs off the row (tokens, metadata).
    /// Unknown id → [`RepoError::NotFound`]. Blobs are the caller's to delete.
    async fn delete_user(&self, id: UserId) -> RepoResult<()>;
}

/// A stored refresh token. Only the SHA-256 of the token is kept; the token itself is
/// shown to the client once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    /// Primary key.
    pub id: Uuid,
    /// Owner.
    pub user_id: UserId,
    /// Every token issued by rotating one login's tokens shares the login's family.
    pub family_id: Uuid,
    /// SHA-256 of the token, lowercase hex.
    pub token_hash: String,
    /// Expiry.
    pub expires_at: Millis,
    /// Issue time.
    pub created_at: Millis,
    /// When it was exchanged for a new pair; a second use is a replay.
    pub used_at: Option<Millis>,
    /// When it was revoked (family revocation, logout).
    pub revoked_at: Option<Millis>,
}

/// Refresh tokens.
#[async_trait]
pub trait RefreshTokenRepo: Send + Sync {
    /// Stores a new token. A duplicate hash → [`RepoError::Conflict`].
    async fn insert_refresh_token(&self, token: &RefreshToken) -> RepoResult<()>;
    /// The token with this hash, used or not.
    async fn refresh_token_by_hash(&self, token_hash: &str) -> RepoResult<Option<RefreshToken>>;
    /// Marks the token used, only if it is neither used nor revoked; returns whether this
    /// call did it. Atomic: of two concurrent calls exactly one gets `true`.
    async fn mark_refresh_token_used(&self, id: Uuid, now: Millis) -> RepoResult<bool>;
    /// Revokes every token of the family not yet revoked; returns how many.
    async fn revoke_token_family(&self, family_id: Uuid, now: Millis) -> RepoResult<u64>;
    /// The sessions (token families) revoked at or after `since` (a running instance
    /// closes the sockets such a session opened).
    async fn families_revoked_since(&self, since: Millis) -> RepoResult<Vec<Uuid>>;
    /// Deletes tokens that expired before `now`; returns how many.
    async fn delete_expired_refresh_tokens(&self, now: Millis) -> RepoResult<u64>;
}

/// Metadata of one client-encrypted cloud record (plan 8c). Each version of the bytes
/// lives in the blob store under its own key, `{user_id}/{table}/{id}.{version}` (rows
/// written before versioned keys point at `{user_id}/{table}/{id}`, which stays
/// readable): the bytes under a key never change, so a reader that opens the row's key
/// gets exactly the bytes the row's checksum describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMeta {
    /// Primary key.
    pub id: Uuid,
    /// Owner.
    pub user_id: UserId,
    /// The client's table name (a short identifier).
    pub table: String,
    /// Blob key of the current version.
    pub blob_key: String,
    /// SHA-256 of the blob, lowercase hex.
    pub checksum: String,
    /// Blob size.
    pub size_bytes: i64,
    /// Creation time.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
}

/// What [`RecordRepo::replace_record_blob`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordSwap {
    /// The row now points at the new blob; the previous one is no longer referenced.
    Replaced,
    /// The quota refused; nothing changed.
    OverQuota,
    /// The row no longer points at the expected previous blob (another update won in
    /// between); nothing changed.
    Stale,
}

/// Cloud-record metadata. Every method is scoped to the owner.
#[async_trait]
pub trait RecordRepo: Send + Sync {
    /// Inserts the row if the user's stored bytes plus `meta.size_bytes` stay within
    /// `quota_bytes` (`None` = unlimited), atomically with the check: concurrent inserts
    /// can never exceed the quota together. Over quota → `Ok(false)`, nothing written.
    async fn insert_record_within_quota(
        &self,
        meta: &RecordMeta,
        quota_bytes: Option<i64>,
    ) -> RepoResult<bool>;
    /// One of the user's records.
    async fn record(&self, user_id: UserId, id: Uuid) -> RepoResult<Option<RecordMeta>>;
    /// The user's records, newest first, optionally of one table.
    async fn list_records(
        &self,
        user_id: UserId,
        table: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> RepoResult<Vec<RecordMeta>>;
    /// Switches the row to a new version: sets `blob_key`, `checksum`, `size_bytes` and
    /// `updated_at` from `meta`, but only if the row still points at
    /// `previous_blob_key` (compare-and-swap: of concurrent swaps from one version exactly
    /// one is [`RecordSwap::Replaced`], so only one caller ever owns — and deletes — the
    /// previous blob) and the quota holds as for insert, all in one atomic step. Missing
    /// or not the user's → [`RepoError::NotFound`].
    async fn replace_record_blob(
        &self,
        meta: &RecordMeta,
        previous_blob_key: &str,
        quota_bytes: Option<i64>,
    ) -> RepoResult<RecordSwap>;
    /// Deletes the row and returns it as it was at deletion (so the blob it pointed at
    /// then is the one to delete). Not the user's or missing → [`RepoError::NotFound`].
    async fn delete_record(&self, user_id: UserId, id: Uuid) -> RepoResult<RecordMeta>;
    /// Sum of the user's record sizes.
    async fn stored_bytes(&self, user_id: UserId) -> RepoResult<i64>;
}

/// Metadata of one backup (plan 8e, `BackupMetadata` plus bookkeeping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupMeta {
    /// Primary key.
    pub id: Uuid,
    /// Owner.
    pub user_id: UserId,
    /// Blob key, `{user_id}/backup-{id}`: unique per upload, so no two uploads ever
    /// write the same bytes (rows written before that point at `{user_id}/{timestamp}`).
    pub blob_key: String,
    /// The client's backup format version.
    pub version: i64,
    /// The client's timestamp (ms).
    pub timestamp: Millis,
    /// SHA-256, lowercase hex.
    pub checksum: String,
    /// Size of the blob.
    pub size_bytes: i64,
    /// Upload time.
    pub created_at: Millis,
}

/// Backup metadata. Every method is scoped to the owner; `(user_id, timestamp)` is unique.
#[async_trait]
pub trait BackupRepo: Send + Sync {
    /// Inserts the row if the user's kept backups plus this one stay within
    /// `quota_bytes` (`None` = unlimited), atomically with the check. A row with the
    /// same `(user_id, timestamp)` → [`RepoError::Conflict`] (of concurrent inserts of
    /// one timestamp exactly one succeeds).
    async fn insert_backup_within_quota(
        &self,
        meta: &BackupMeta,
        quota_bytes: Option<i64>,
    ) -> RepoResult<bool>;
    /// The user's backups, newest timestamp first.
    async fn list_backups(&self, user_id: UserId) -> RepoResult<Vec<BackupMeta>>;
    /// Deletes one of the user's backups and returns it (so its blob can go too).
    async fn delete_backup(&self, user_id: UserId, id: Uuid) -> RepoResult<BackupMeta>;
    /// Sum of the user's backup sizes.
    async fn backup_bytes(&self, user_id: UserId) -> RepoResult<i64>;
}

/// Which blob keys rows point at, across every table that owns blobs (records' current
/// versions, backups; a future table with blobs adds its column here). `storage gc`
/// deletes what the store holds beyond this set, so a table missing here would lose its
/// blobs: the conformance suite checks every blob-owning table is included.
#[async_trait]
pub trait BlobKeyRepo: Send + Sync {
    /// Every blob key any row points at.
    async fn referenced_blob_keys(&self) -> RepoResult<Vec<String>>;
    /// Every blob key the user's rows point at (to delete them with the account).
    async fn user_blob_keys(&self, user_id: UserId) -> RepoResult<Vec<String>>;
}

/// A Stripe subscription as we mirror it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Primary key.
    pub id: Uuid,
    /// Owner.
    pub user_id: UserId,
    /// Stripe's id (`sub_…`).
    pub stripe_subscription_id: String,
    /// The tier it pays for.
    pub tier: Tier,
    /// Stripe's status (`active`, `past_due`, `canceled`, …).
    pub status: String,
    /// End of the paid period.
    pub current_period_end: Millis,
    /// Creation time.
    pub created_at: Millis,
}

/// Subscriptions, mirrored from the payment provider. `subscription_for_user` returns the
/// most recently created one.
#[async_trait]
pub trait SubscriptionRepo: Send + Sync {
    /// Inserts or replaces by `stripe_subscription_id` (webhooks repeat; must be idempotent).
    async fn upsert_subscription(&self, sub: &Subscription) -> RepoResult<()>;
    /// The user's current subscription, if any.
    async fn subscription_for_user(&self, user_id: UserId) -> RepoResult<Option<Subscription>>;
}

/// A vector item's id and its stored bytes; `None` bytes = it did not exist.
pub type VectorItemSize = (String, Option<i64>);

/// The accounting of vector items (the vectors themselves live in the
/// [`VectorIndex`](super::VectorIndex)): one row per (user, item id) with its stored
/// bytes, which count against the same quota as records (`cloud_storage_gb`).
#[async_trait]
pub trait VectorUsageRepo: Send + Sync {
    /// Records `items` as `(id, bytes)`, replacing rows of the same ids, if the user's
    /// stored bytes (records + vector items) afterwards stay within `quota_bytes`
    /// (`None` = unlimited) — atomically with the check. Over quota → `Ok(None)`,
    /// nothing written; else the previous sizes of these ids, for
    /// [`restore_vector_items`](Self::restore_vector_items).
    async fn reserve_vector_items(
        &self,
        user_id: UserId,
        items: &[(String, i64)],
        quota_bytes: Option<i64>,
        now: Millis,
    ) -> RepoResult<Option<Vec<VectorItemSize>>>;
    /// Puts back what `reserve_vector_items` returned (removing ids that were new).
    async fn restore_vector_items(
        &self,
        user_id: UserId,
        previous: &[VectorItemSize],
    ) -> RepoResult<()>;
    /// Forgets these ids; returns how many rows existed.
    async fn release_vector_items(&self, user_id: UserId, ids: &[String]) -> RepoResult<u64>;
    /// Forgets all of the user's items.
    async fn release_all_vector_items(&self, user_id: UserId) -> RepoResult<()>;
    /// Sum of the user's vector item sizes.
    async fn vector_bytes(&self, user_id: UserId) -> RepoResult<i64>;
}

/// A device's live socket: which session, held by which server instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSession {
    /// The socket's session (new at every `device_hello`).
    pub session_id: Uuid,
    /// The instance whose process holds the socket (its device-bus mailbox).
    pub instance_id: Uuid,
}

/// What a device says of itself in `device_hello` (validated by core before it gets here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Display name ("Work laptop").
    pub name: String,
    /// `macos`, `windows`, `linux`, `ios`, `android`, …
    pub platform: String,
    /// The app's version.
    pub app_version: String,
    /// What the device can do (`tools`, `files`, …).
    pub capabilities: Vec<String>,
}

/// A registered device of a user, with its presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The owner.
    pub user_id: UserId,
    /// Chosen by the device (unique per user).
    pub device_id: String,
    /// As of its last hello.
    pub info: DeviceInfo,
    /// The live socket, while one is connected (see core's presence rule: a session
    /// whose `last_seen` is older than the presence TTL belongs to a dead instance).
    pub session: Option<DeviceSession>,
    /// Last hello, heartbeat of its holder, or disconnect.
    pub last_seen: Millis,
    /// First hello.
    pub created_at: Millis,
    /// Queued frames dropped (over the queue bound, or too old) since the counter was
    /// last taken by a hello.
    pub expired_count: i64,
}

/// What [`DeviceRepo::connect_device`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConnected {
    /// The live session it replaced (to be closed by its holder), if any.
    pub replaced: Option<DeviceSession>,
    /// The device's `expired_count` before this hello (the counter is reset to 0).
    pub expired: i64,
}

/// A frame waiting in a device's durable queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedFrame {
    /// Position in the device's queue: increases with every enqueue, in commit order.
    pub seq: i64,
    /// The frame's id: the device acks it and drops duplicates by it.
    pub frame_id: Uuid,
    /// The frame's type (`agent_trigger`, `notification`).
    pub kind: String,
    /// The frame, serialized by core (opaque to the repository).
    pub payload: Vec<u8>,
    /// When it was queued.
    pub created_at: Millis,
    /// After this it is never delivered.
    pub expires_at: Millis,
}

/// A frame to queue ([`DeviceRepo::enqueue_frame`] gives it its `seq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewQueuedFrame {
    /// The frame's id (unique).
    pub frame_id: Uuid,
    /// The frame's type.
    pub kind: String,
    /// The serialized frame.
    pub payload: Vec<u8>,
    /// After this it is never delivered.
    pub expires_at: Millis,
}

/// Registered devices, their presence, and each device's durable queue of frames that
/// must not be lost (delivered in `seq` order until acked).
#[async_trait]
pub trait DeviceRepo: Send + Sync {
    /// Registers the device (or updates its info) and makes `session` its live session,
    /// `last_seen = now`; takes and resets its `expired_count`. A device the user does not
    /// have yet while they already have `max_devices` → `Conflict("devices.limit")`,
    /// nothing written. An unknown user → `NotFound`.
    async fn connect_device(
        &self,
        user_id: UserId,
        device_id: &str,
        info: &DeviceInfo,
        session: DeviceSession,
        max_devices: u32,
        now: Millis,
    ) -> RepoResult<DeviceConnected>;
    /// Ends `session_id` if it is still the device's live session (`last_seen = now`);
    /// false when another session replaced it or the device is gone.
    async fn disconnect_device(
        &self,
        user_id: UserId,
        device_id: &str,
        session_id: Uuid,
        now: Millis,
    ) -> RepoResult<bool>;
    /// Heartbeat: `last_seen = now` for every device whose live session `instance_id`
    /// holds; how many.
    async fn touch_instance_devices(&self, instance_id: Uuid, now: Millis) -> RepoResult<u64>;
    /// The devices whose live session `instance_id` holds and that have queued frames
    /// not expired at `now` (the holder's sweep for frames whose wake-up was lost).
    async fn devices_with_queued_frames(
        &self,
        instance_id: Uuid,
        now: Millis,
    ) -> RepoResult<Vec<(UserId, String)>>;
    /// Ends every live session `instance_id` holds (it is shutting down); how many.
    async fn release_instance_devices(&self, instance_id: Uuid, now: Millis) -> RepoResult<u64>;
    /// One device of the user.
    async fn device(&self, user_id: UserId, device_id: &str) -> RepoResult<Option<Device>>;
    /// The user's devices, oldest first (then by id).
    async fn list_devices(&self, user_id: UserId) -> RepoResult<Vec<Device>>;
    /// Forgets the device and its queue; returns it as it was (its live session is for
    /// the caller to close). `NotFound` when the user has no such device.
    async fn delete_device(&self, user_id: UserId, device_id: &str) -> RepoResult<Device>;
    /// Appends a frame to the device's queue with the next `seq` (enqueues of one device
    /// serialise, so `seq` order is commit order). When the queue then holds more than
    /// `max_frames`, the oldest are deleted and counted into the device's
    /// `expired_count`. `NotFound` when the user has no such device; `Conflict` when
    /// `frame_id` is already queued. `created_at = now`.
    async fn enqueue_frame(
        &self,
        user_id: UserId,
        device_id: &str,
        frame: &NewQueuedFrame,
        max_frames: u32,
        now: Millis,
    ) -> RepoResult<QueuedFrame>;
    /// Up to `limit` queued frames with `seq > after_seq` that have not expired at
    /// `now`, in `seq` order.
    async fn queued_frames(
        &self,
        user_id: UserId,
        device_id: &str,
        after_seq: i64,
        now: Millis,
        limit: u32,
    ) -> RepoResult<Vec<QueuedFrame>>;
    /// How many queued frames have not expired at `now`.
    async fn queued_count(&self, user_id: UserId, device_id: &str, now: Millis) -> RepoResult<u64>;
    /// Removes an acknowledged frame; false when it was not queued (acked already,
    /// expired, or not this device's).
    async fn ack_frame(&self, user_id: UserId, device_id: &str, frame_id: Uuid)
    -> RepoResult<bool>;
    /// Deletes the frames expired at `now`, counting them into their devices'
    /// `expired_count`; how many.
    async fn expire_frames(&self, now: Millis) -> RepoResult<u64>;
}

/// Where an agent runs: on the user's device (reads local data the device sends) or in
/// the cloud (reads a provider: Gmail, Outlook, Teams).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentKind {
    /// `LocalAgentConfig`: triggered on a device, which answers with its data.
    Local,
    /// `CloudAgentConfig`: reads a provider with the user's OAuth token.
    Cloud,
}

impl AgentKind {
    /// `local` / `cloud` (stored and on the wire).
    pub fn as_str(self) -> &'static str {
        match self {
            AgentKind::Local => "local",
            AgentKind::Cloud => "cloud",
        }
    }
}

/// Whether an agent may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentStatus {
    /// Runs on its schedule (while `enabled`).
    Active,
    /// The provider refused its refresh token (`invalid_grant`): paused until the user
    /// connects the provider again (a new `oauth_token_encrypted`).
    NeedsReauth,
}

impl AgentStatus {
    /// `active` / `needs_reauth`.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Active => "active",
            AgentStatus::NeedsReauth => "needs_reauth",
        }
    }
}

/// An agent configuration (a local or cloud agent), as stored. Strings are validated by
/// core before they get here; the repository stores them as they are.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfigRow {
    /// Primary key.
    pub id: Uuid,
    /// The owner.
    pub user_id: UserId,
    /// Local or cloud.
    pub kind: AgentKind,
    /// Display name.
    pub name: String,
    /// A catalog type (`inbox_triage`, …).
    pub agent_type: String,
    /// A cron expression (5 fields), or `None`: runs only when asked.
    pub schedule: Option<String>,
    /// An IANA time zone the schedule is read in.
    pub timezone: String,
    /// Whether the scheduler runs it (an enabled agent counts against `batch_active`).
    pub enabled: bool,
    /// Agent-type specific (a Gmail query, a Teams channel, data types…): a JSON object.
    pub filters: serde_json::Value,
    /// Where results go (`{"device_id": …}` or `{}` for every device): a JSON object.
    pub output: serde_json::Value,
    /// The prompt template id the agent runs (server-side text; never sent).
    pub prompt_template: String,
    /// Cloud agents: `google` / `microsoft`.
    pub provider: Option<String>,
    /// Cloud agents: the token set sealed with the server's token key (opaque here).
    pub oauth_token_sealed: Option<String>,
    /// Active or paused for re-authorisation.
    pub status: AgentStatus,
    /// The provider's incremental-sync position (a Gmail `historyId`, a Graph time).
    pub sync_cursor: Option<String>,
    /// The next slot the scheduler will run (ms); `None` while not scheduled (disabled,
    /// no schedule, or needs re-authorisation). Computed by core.
    pub next_run_at: Option<Millis>,
    /// Creation time.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
}

/// Tier limits a write of agent configs must keep, counted over the user's configs
/// *after* the write (`None`: unlimited). Checked under the user's lock, so concurrent
/// writes cannot pass them together. A count over its limit breaks it only when the write
/// grew it: a user above a lowered limit (a downgrade) can still edit and disable agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AgentLimits {
    /// Configured agents, local and cloud (`agents`).
    pub configured: Option<u32>,
    /// Enabled agents (`batch_active`).
    pub enabled: Option<u32>,
    /// Distinct `provider`s among the user's cloud agents (`providers`).
    pub providers: Option<u32>,
}

/// What [`AgentLimits`] bound, counted over one user's configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AgentCounts {
    /// Configs, local and cloud.
    pub configured: u64,
    /// Enabled configs.
    pub enabled: u64,
    /// Distinct `provider`s among cloud configs.
    pub providers: u64,
}

impl AgentLimits {
    /// The conflict name (`agents.limit`, `batch_active.limit`, `providers.limit`) of the
    /// first limit a write from `before` to `after` broke: a count over its limit that the
    /// write grew. Every repository decides with this, so they agree.
    pub fn broken_by(&self, before: AgentCounts, after: AgentCounts) -> Option<&'static str> {
        let broke = |limit: Option<u32>, before: u64, after: u64| {
            limit.is_some_and(|l| after > u64::from(l) && after > before)
        };
        if broke(self.configured, before.configured, after.configured) {
            Some("agents.limit")
        } else if broke(self.enabled, before.enabled, after.enabled) {
            Some("batch_active.limit")
        } else if broke(self.providers, before.providers, after.providers) {
            Some("providers.limit")
        } else {
            None
        }
    }
}

/// A run's state. `Queued` and `Running` are *active*: the run holds its agent (a slot
/// arriving meanwhile is `Skipped`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Claimed, not started.
    Queued,
    /// Started (a cloud run executing, or a local run waiting for its device).
    Running,
    /// Finished with results delivered (or nothing to deliver).
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Not run (overlap, no device, …; `error` says why).
    Skipped,
    /// The provider refused the token; the agent is paused.
    NeedsReauth,
}

impl RunStatus {
    /// The wire name (`queued`, `running`, `succeeded`, `failed`, `skipped`, `needs_reauth`).
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Skipped => "skipped",
            RunStatus::NeedsReauth => "needs_reauth",
        }
    }

    /// Parses [`RunStatus::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => RunStatus::Queued,
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "skipped" => RunStatus::Skipped,
            "needs_reauth" => RunStatus::NeedsReauth,
            _ => return None,
        })
    }

    /// Queued or running.
    pub fn is_active(self) -> bool {
        matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunTrigger {
    /// `POST /agents/{id}/run`.
    Manual,
    /// A schedule slot.
    Schedule,
}

impl RunTrigger {
    /// `manual` / `schedule`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunTrigger::Manual => "manual",
            RunTrigger::Schedule => "schedule",
        }
    }
}

/// One run of an agent. Keeps counts and ids, never content (rule 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRun {
    /// Primary key.
    pub id: Uuid,
    /// The owner.
    pub user_id: UserId,
    /// The agent.
    pub agent_id: Uuid,
    /// State.
    pub status: RunStatus,
    /// Manual or schedule.
    pub trigger: RunTrigger,
    /// The slot (ms) of a scheduled run; unique per agent. `None` for manual runs.
    pub scheduled_for: Option<Millis>,
    /// When the run row was made.
    pub created_at: Millis,
    /// When it started running.
    pub started_at: Option<Millis>,
    /// When it finished.
    pub finished_at: Option<Millis>,
    /// Items read (mails, messages, local items).
    pub items_read: i64,
    /// Results produced (tasks, notes…).
    pub items_produced: i64,
    /// Why it failed or was skipped (a sentence; never content).
    pub error: Option<String>,
    /// The instance executing it, while it is; `None` otherwise (queued, finished, or a
    /// local run waiting for its device).
    pub instance_id: Option<Uuid>,
    /// While active: the run is taken over (cloud) or failed (local) once this passes
    /// (`lease_until < now`). `None` never passes; finished runs have `None`.
    pub lease_until: Option<Millis>,
    /// How many times it was started (1 + takeovers).
    pub attempts: i32,
    /// Local runs: the device the trigger went to.
    pub device_id: Option<String>,
}

/// How a run ends ([`AgentRepo::finish_run`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// A final status (not queued/running).
    pub status: RunStatus,
    /// Items read.
    pub items_read: i64,
    /// Results produced.
    pub items_produced: i64,
    /// Why, when not succeeded.
    pub error: Option<String>,
    /// When.
    pub finished_at: Millis,
}

/// The scheduler's claim of one slot ([`AgentRepo::claim_slot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotClaim {
    /// The agent.
    pub agent_id: Uuid,
    /// The agent's `next_run_at` the scheduler read (compare-and-swap).
    pub expected_next_run_at: Millis,
    /// Its next slot after this claim (`None`: no further slot).
    pub next_run_at: Option<Millis>,
    /// The run to insert for the slot (`trigger = Schedule`, `scheduled_for` set; its
    /// status `Running` with `instance_id`/`lease_until`, or `Skipped` with a reason).
    pub run: AgentRun,
}

/// A setup-journey session (the conversation is sealed by core; opaque here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JourneyRow {
    /// Primary key (the `session_id`).
    pub id: Uuid,
    /// The owner.
    pub user_id: UserId,
    /// The agent type being set up.
    pub agent_type: String,
    /// The conversation so far, sealed.
    pub state_sealed: String,
    /// Whether it ended with a config.
    pub done: bool,
    /// Creation time.
    pub created_at: Millis,
    /// After this the session is gone (`journey` answers `None`).
    pub expires_at: Millis,
}

/// Agent configs, their runs (one per scheduled slot, claimed once across instances,
/// leased while running) and setup-journey sessions.
///
/// Exactly once per slot: [`AgentRepo::claim_slot`] is a compare-and-swap of the agent's
/// `next_run_at` plus an insert under the unique `(agent_id, scheduled_for)`, in one
/// transaction: of any number of concurrent claims of one slot, exactly one returns the
/// run (unless the winner's transaction fails: then none does, and the slot, still
/// `next_run_at`, is due again at the next tick). A claim may also answer `None` while
/// another writer holds the agent's row (PostgreSQL skips locked agents rather than
/// queueing behind them); the slot stays due, so the next tick claims it.
///
/// A run whose `lease_until` passes while it is active (its instance died) is taken by
/// [`AgentRepo::take_over_runs`], once.
#[async_trait]
pub trait AgentRepo: Send + Sync {
    /// Inserts a config if the user's configs then keep `limits`; a broken limit →
    /// `Conflict("agents.limit" | "batch_active.limit" | "providers.limit")`, nothing
    /// written. An unknown user → `NotFound`.
    async fn insert_agent(&self, row: &AgentConfigRow, limits: AgentLimits) -> RepoResult<()>;
    /// Replaces the user's config `row.id` (every field but `id`, `user_id`, `kind`,
    /// `created_at`) if the limits still hold afterwards (same conflicts as insert).
    /// `NotFound` when the user has no such config of that kind.
    async fn update_agent(&self, row: &AgentConfigRow, limits: AgentLimits) -> RepoResult<()>;
    /// One config of the user.
    async fn agent(&self, user_id: UserId, id: Uuid) -> RepoResult<Option<AgentConfigRow>>;
    /// A config by id alone (the scheduler and runner, which act for its owner).
    async fn agent_by_id(&self, id: Uuid) -> RepoResult<Option<AgentConfigRow>>;
    /// The user's configs of `kind`, oldest first.
    async fn list_agents(
        &self,
        user_id: UserId,
        kind: AgentKind,
    ) -> RepoResult<Vec<AgentConfigRow>>;
    /// Deletes a config and its runs; `NotFound` when the user has no such config of
    /// that kind.
    async fn delete_agent(&self, user_id: UserId, kind: AgentKind, id: Uuid) -> RepoResult<()>;
    /// Sets a config's sealed token (a refresh saved the rotated one); `NotFound` if gone.
    async fn set_agent_token(&self, id: Uuid, sealed: &str, now: Millis) -> RepoResult<()>;
    /// Replaces every config of the user whose sealed token is `old` with `new` (a
    /// refresh through `POST /oauth/{provider}/refresh`); how many.
    async fn replace_agent_tokens(
        &self,
        user_id: UserId,
        old: &str,
        new: &str,
        now: Millis,
    ) -> RepoResult<u64>;
    /// Sets the provider sync position; `NotFound` if gone.
    async fn set_agent_cursor(&self, id: Uuid, cursor: Option<&str>, now: Millis)
    -> RepoResult<()>;
    /// Pauses a config for re-authorisation: `status = NeedsReauth`, `next_run_at = NULL`.
    async fn pause_agent_for_reauth(&self, id: Uuid, now: Millis) -> RepoResult<()>;
    /// Enabled, active configs whose `next_run_at <= now`, earliest first, at most `limit`.
    async fn due_agents(&self, now: Millis, limit: u32) -> RepoResult<Vec<AgentConfigRow>>;
    /// Claims a slot (see the trait docs): `Some(run)` for the one winner, `None` when the
    /// agent's `next_run_at` is no longer `expected_next_run_at`, the slot's run exists, the
    /// run is not this agent's (of its owner), or the agent is gone.
    async fn claim_slot(&self, claim: &SlotClaim) -> RepoResult<Option<AgentRun>>;
    /// Inserts a run (manual runs). An unknown agent (or another user's) → `NotFound`; a
    /// second run of one slot → `Conflict`.
    async fn insert_run(&self, run: &AgentRun) -> RepoResult<()>;
    /// The agent's active runs (queued or running) whose lease has not passed at `now`.
    async fn active_runs(&self, agent_id: Uuid, now: Millis) -> RepoResult<Vec<AgentRun>>;
    /// Moves an active run to `Running` on `instance_id` (or on no instance: a local run
    /// waiting for its device) with `lease_until`, setting `started_at` if unset and
    /// `device_id` if given; false when the run is no longer active.
    async fn start_run(
        &self,
        run_id: Uuid,
        instance_id: Option<Uuid>,
        lease_until: Millis,
        device_id: Option<&str>,
        now: Millis,
    ) -> RepoResult<bool>;
    /// Extends the lease of every active run `instance_id` holds; how many.
    async fn renew_leases(&self, instance_id: Uuid, lease_until: Millis) -> RepoResult<u64>;
    /// Takes up to `limit` active runs whose lease passed before `now`: each becomes
    /// `Running` on `instance_id` with `lease_until` and `attempts + 1`, and is returned
    /// to exactly one caller.
    async fn take_over_runs(
        &self,
        now: Millis,
        instance_id: Uuid,
        lease_until: Millis,
        limit: u32,
    ) -> RepoResult<Vec<AgentRun>>;
    /// Ends an active run with `outcome` (clearing `instance_id` and `lease_until`); false
    /// when it was not active (another instance finished it).
    async fn finish_run(&self, run_id: Uuid, outcome: &RunOutcome) -> RepoResult<bool>;
    /// One run of the user.
    async fn run(&self, user_id: UserId, id: Uuid) -> RepoResult<Option<AgentRun>>;
    /// The user's runs (of one agent, or all), newest first (`created_at`, then id),
    /// `limit` from `offset`.
    async fn list_runs(
        &self,
        user_id: UserId,
        agent_id: Option<Uuid>,
        offset: u64,
        limit: u64,
    ) -> RepoResult<Vec<AgentRun>>;
    /// The runs of one slot of one agent (0 or 1: the proof that a slot ran once).
    async fn runs_for_slot(
        &self,
        agent_id: Uuid,
        scheduled_for: Millis,
    ) -> RepoResult<Vec<AgentRun>>;
    /// Inserts a journey session.
    async fn insert_journey(&self, row: &JourneyRow) -> RepoResult<()>;
    /// The user's session while not expired at `now`.
    async fn journey(
        &self,
        user_id: UserId,
        id: Uuid,
        now: Millis,
    ) -> RepoResult<Option<JourneyRow>>;
    /// Saves a session's state; `NotFound` when the user has no such session (core checks
    /// expiry with [`AgentRepo::journey`] first; expired rows linger until deleted).
    async fn update_journey(
        &self,
        user_id: UserId,
        id: Uuid,
        state_sealed: &str,
        done: bool,
        expires_at: Millis,
    ) -> RepoResult<()>;
    /// Deletes sessions expired at `now`; how many.
    async fn delete_expired_journeys(&self, now: Millis) -> RepoResult<u64>;
}

/// The database as the facade sees it: every implemented repository plus health.
///
/// Grows a supertrait per repository as each capability lands, so an adapter cannot be
/// half a database.
#[async_trait]
pub trait Database:
    UserRepo
    + RefreshTokenRepo
    + RecordRepo
    + BackupRepo
    + BlobKeyRepo
    + SubscriptionRepo
    + VectorUsageRepo
    + DeviceRepo
    + AgentRepo
    + Send
    + Sync
{
    /// A short name for logs and `doctor` (`sqlite`, `postgres`).
    fn backend(&self) -> &'static str;
    /// Round-trips a trivial query.
    async fn ping(&self) -> RepoResult<()>;
}
