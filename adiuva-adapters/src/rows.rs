//! Row → domain mapping shared by the SQL dialects. Columns are read by name; only ids
//! differ (native UUID on PostgreSQL, text on SQLite), behind [`IdColumn`].

use adiuva_core::domain::{Email, Role, Tier, UserId};
use adiuva_core::ports::db::{RefreshToken, RepoError, RepoResult, User};
use sqlx::{ColumnIndex, Decode, Row, Type};
use uuid::Uuid;

/// Reads a UUID column in the dialect's representation.
pub(crate) trait IdColumn {
    /// The UUID in column `col`.
    fn uuid(&self, col: &str) -> RepoResult<Uuid>;
    /// The UUID in the nullable column `col`.
    fn opt_uuid(&self, col: &str) -> RepoResult<Option<Uuid>>;
}

/// Converts a driver error into the port's error; unique violations become `Conflict`
/// naming the constraint, never the value.
pub(crate) fn repo_err(e: sqlx::Error) -> RepoError {
    match e {
        sqlx::Error::RowNotFound => RepoError::NotFound,
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            RepoError::Conflict(db.constraint().map_or_else(
                || {
                    db.message()
                        .trim_start_matches("UNIQUE constraint failed: ")
                        .to_owned()
                },
                str::to_owned,
            ))
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => RepoError::Unavailable(e.to_string()),
        sqlx::Error::Database(db) if db.message().contains("database is locked") => {
            RepoError::Unavailable(db.message().to_owned())
        }
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
            RepoError::Invalid(e.to_string())
        }
        other => RepoError::Other(Box::new(other)),
    }
}

fn invalid(what: &str, e: impl std::fmt::Display) -> RepoError {
    RepoError::Invalid(format!("{what}: {e}"))
}

fn get<'r, R, T>(row: &'r R, col: &str) -> RepoResult<T>
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    row.try_get(col).map_err(repo_err)
}

/// A `users` row.
pub(crate) fn user_from_row<R>(row: &R) -> RepoResult<User>
where
    R: Row + IdColumn,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let email: String = get(row, "email")?;
    let role: String = get(row, "role")?;
    let tier: String = get(row, "tier")?;
    Ok(User {
        id: UserId(row.uuid("id")?),
        email: Email::parse(&email).map_err(|e| invalid("users.email", e))?,
        password_hash: get(row, "password_hash")?,
        role: Role::parse(&role).map_err(|e| invalid("users.role", e))?,
        tier: Tier::parse(&tier).map_err(|e| invalid("users.tier", e))?,
        stripe_customer_id: get(row, "stripe_customer_id")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

/// A `refresh_tokens` row.
pub(crate) fn token_from_row<R>(row: &R) -> RepoResult<RefreshToken>
where
    R: Row + IdColumn,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(RefreshToken {
        id: row.uuid("id")?,
        user_id: UserId(row.uuid("user_id")?),
        family_id: row.uuid("family_id")?,
        token_hash: get(row, "token_hash")?,
        expires_at: get(row, "expires_at")?,
        created_at: get(row, "created_at")?,
        used_at: get(row, "used_at")?,
        revoked_at: get(row, "revoked_at")?,
    })
}

/// `Ok` if a statement touched a row, else `NotFound`.
pub(crate) fn expect_one(rows: u64) -> RepoResult<()> {
    if rows == 0 {
        Err(RepoError::NotFound)
    } else {
        Ok(())
    }
}

impl IdColumn for sqlx::sqlite::SqliteRow {
    fn uuid(&self, col: &str) -> RepoResult<Uuid> {
        let s: String = self.try_get(col).map_err(repo_err)?;
        Uuid::parse_str(&s).map_err(|e| invalid(col, e))
    }

    fn opt_uuid(&self, col: &str) -> RepoResult<Option<Uuid>> {
        let s: Option<String> = self.try_get(col).map_err(repo_err)?;
        s.map(|s| Uuid::parse_str(&s).map_err(|e| invalid(col, e)))
            .transpose()
    }
}

impl IdColumn for sqlx::postgres::PgRow {
    fn uuid(&self, col: &str) -> RepoResult<Uuid> {
        self.try_get(col).map_err(repo_err)
    }

    fn opt_uuid(&self, col: &str) -> RepoResult<Option<Uuid>> {
        self.try_get(col).map_err(repo_err)
    }
}

/// A `storage_records` row.
pub(crate) fn record_from_row<R>(row: &R) -> RepoResult<adiuva_core::ports::db::RecordMeta>
where
    R: Row + IdColumn,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(adiuva_core::ports::db::RecordMeta {
        id: row.uuid("id")?,
        user_id: UserId(row.uuid("user_id")?),
        table: get(row, "table_name")?,
        blob_key: get(row, "blob_key")?,
        checksum: get(row, "checksum")?,
        size_bytes: get(row, "size_bytes")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

/// A `backups` row.
pub(crate) fn backup_from_row<R>(row: &R) -> RepoResult<adiuva_core::ports::db::BackupMeta>
where
    R: Row + IdColumn,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(adiuva_core::ports::db::BackupMeta {
        id: row.uuid("id")?,
        user_id: UserId(row.uuid("user_id")?),
        blob_key: get(row, "blob_key")?,
        version: get(row, "version")?,
        timestamp: get(row, "timestamp")?,
        checksum: get(row, "checksum")?,
        size_bytes: get(row, "size_bytes")?,
        created_at: get(row, "created_at")?,
    })
}

/// A `subscriptions` row.
pub(crate) fn subscription_from_row<R>(row: &R) -> RepoResult<adiuva_core::ports::db::Subscription>
where
    R: Row + IdColumn,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let tier: String = get(row, "tier")?;
    Ok(adiuva_core::ports::db::Subscription {
        id: row.uuid("id")?,
        user_id: UserId(row.uuid("user_id")?),
        stripe_subscription_id: get(row, "stripe_subscription_id")?,
        tier: Tier::parse(&tier).map_err(|e| invalid("subscriptions.tier", e))?,
        status: get(row, "status")?,
        current_period_end: get(row, "current_period_end")?,
        created_at: get(row, "created_at")?,
    })
}

/// A `devices` row. The live session is both of `session_id` and `instance_id` (the
/// table's CHECK keeps them set together).
pub(crate) fn device_from_row<R>(row: &R) -> RepoResult<adiuva_core::ports::db::Device>
where
    R: Row + IdColumn,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    use adiuva_core::ports::db::{Device, DeviceInfo, DeviceSession};

    let capabilities: String = get(row, "capabilities")?;
    let session = match (row.opt_uuid("session_id")?, row.opt_uuid("instance_id")?) {
        (Some(session_id), Some(instance_id)) => Some(DeviceSession {
            session_id,
            instance_id,
        }),
        _ => None,
    };
    Ok(Device {
        user_id: UserId(row.uuid("user_id")?),
        device_id: get(row, "device_id")?,
        info: DeviceInfo {
            name: get(row, "name")?,
            platform: get(row, "platform")?,
            app_version: get(row, "app_version")?,
            capabilities: serde_json::from_str(&capabilities)
                .map_err(|e| invalid("devices.capabilities", e))?,
        },
        session,
        last_seen: get(row, "last_seen")?,
        created_at: get(row, "created_at")?,
        expired_count: get(row, "expired_count")?,
    })
}

/// A `device_queue` row.
pub(crate) fn queued_frame_from_row<R>(row: &R) -> RepoResult<adiuva_core::ports::db::QueuedFrame>
where
    R: Row + IdColumn,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(adiuva_core::ports::db::QueuedFrame {
        seq: get(row, "seq")?,
        frame_id: row.uuid("frame_id")?,
        kind: get(row, "kind")?,
        payload: get(row, "payload")?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
    })
}

/// An `agents` row. `filters` and `output` are JSON text on both dialects.
pub(crate) fn agent_from_row<R>(row: &R) -> RepoResult<adiuva_core::ports::db::AgentConfigRow>
where
    R: Row + IdColumn,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    use adiuva_core::ports::db::{AgentConfigRow, AgentKind, AgentStatus};

    let kind: String = get(row, "kind")?;
    let status: String = get(row, "status")?;
    let json = |col: &str| -> RepoResult<serde_json::Value> {
        let text: String = get(row, col)?;
        serde_json::from_str(&text).map_err(|e| invalid(col, e))
    };
    Ok(AgentConfigRow {
        id: row.uuid("id")?,
        user_id: UserId(row.uuid("user_id")?),
        kind: [AgentKind::Local, AgentKind::Cloud]
            .into_iter()
            .find(|k| k.as_str() == kind)
            .ok_or_else(|| invalid("agents.kind", kind))?,
        name: get(row, "name")?,
        agent_type: get(row, "agent_type")?,
        schedule: get(row, "schedule")?,
        timezone: get(row, "timezone")?,
        enabled: get(row, "enabled")?,
        filters: json("filters")?,
        output: json("output")?,
        prompt_template: get(row, "prompt_template")?,
        provider: get(row, "provider")?,
        oauth_token_sealed: get(row, "oauth_token_sealed")?,
        status: [AgentStatus::Active, AgentStatus::NeedsReauth]
            .into_iter()
            .find(|s| s.as_str() == status)
            .ok_or_else(|| invalid("agents.status", status))?,
        sync_cursor: get(row, "sync_cursor")?,
        next_run_at: get(row, "next_run_at")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

/// An `agent_runs` row.
pub(crate) fn agent_run_from_row<R>(row: &R) -> RepoResult<adiuva_core::ports::db::AgentRun>
where
    R: Row + IdColumn,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i32: Decode<'r, R::Database> + Type<R::Database>,
{
    use adiuva_core::ports::db::{AgentRun, RunStatus, RunTrigger};

    let status: String = get(row, "status")?;
    let trigger: String = get(row, "triggered_by")?;
    Ok(AgentRun {
        id: row.uuid("id")?,
        user_id: UserId(row.uuid("user_id")?),
        agent_id: row.uuid("agent_id")?,
        status: RunStatus::parse(&status).ok_or_else(|| invalid("agent_runs.status", status))?,
        trigger: [RunTrigger::Manual, RunTrigger::Schedule]
            .into_iter()
            .find(|t| t.as_str() == trigger)
            .ok_or_else(|| invalid("agent_runs.triggered_by", trigger))?,
        scheduled_for: get(row, "scheduled_for")?,
        created_at: get(row, "created_at")?,
        started_at: get(row, "started_at")?,
        finished_at: get(row, "finished_at")?,
        items_read: get(row, "items_read")?,
        items_produced: get(row, "items_produced")?,
        error: get(row, "error")?,
        instance_id: row.opt_uuid("instance_id")?,
        lease_until: get(row, "lease_until")?,
        attempts: get(row, "attempts")?,
        device_id: get(row, "device_id")?,
    })
}

/// An `agent_journeys` row.
pub(crate) fn journey_from_row<R>(row: &R) -> RepoResult<adiuva_core::ports::db::JourneyRow>
where
    R: Row + IdColumn,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(adiuva_core::ports::db::JourneyRow {
        id: row.uuid("id")?,
        user_id: UserId(row.uuid("user_id")?),
        agent_type: get(row, "agent_type")?,
        state_sealed: get(row, "state_sealed")?,
        done: get(row, "done")?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
    })
}
