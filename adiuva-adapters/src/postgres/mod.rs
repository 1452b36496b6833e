//! PostgreSQL via sqlx: the production database, shared by every instance.

use std::str::FromStr;
use std::time::Duration;

use adiuva_core::ports::Database;
use adiuva_core::ports::db::RepoResult;
use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::AdapterError;
use crate::rows::repo_err;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// The PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgDb {
    pool: PgPool,
}

impl PgDb {
    /// Connects to a `postgres://` URL (TLS per its `sslmode`). Fails with a sentence if
    /// the server cannot be reached within ten seconds.
    pub async fn connect(url: &str) -> Result<Self, AdapterError> {
        let redacted = redact(url);
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| {
                AdapterError::Unsupported(format!(
                    "'{redacted}' is not a usable PostgreSQL URL: {e}"
                ))
            })?
            .application_name("adiuva");
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| {
                AdapterError::Connect(format!("cannot connect to PostgreSQL at '{redacted}': {e}"))
            })?;
        Ok(Self { pool })
    }

    /// Applies pending migrations; returns the descriptions of those applied now. Safe to
    /// run from several instances at once (sqlx takes an advisory lock).
    pub async fn migrate(&self) -> Result<Vec<String>, AdapterError> {
        let pending = self.pending_migrations().await?;
        MIGRATOR.run(&self.pool).await.map_err(|e| {
            AdapterError::Migrate(format!("migrating the PostgreSQL database failed: {e}"))
        })?;
        Ok(pending)
    }

    /// Descriptions of the migrations not yet applied.
    pub async fn pending_migrations(&self) -> Result<Vec<String>, AdapterError> {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| {
                AdapterError::Connect(format!("reading the migration table failed: {e}"))
            })?;
        let applied: Vec<i64> = if exists {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
                .map_err(|e| {
                    AdapterError::Connect(format!("reading the migration table failed: {e}"))
                })?
        } else {
            Vec::new()
        };
        Ok(MIGRATOR
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .map(|m| format!("{} {}", m.version, m.description))
            .collect())
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool, waiting for in-flight queries.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The URL with its credentials hidden, for messages (core's one rule).
pub(crate) fn redact(url: &str) -> String {
    adiuva_core::secret::redact_url(url)
}

/// What PostgreSQL does differently from SQLite; the repositories are in `crate::repos`.
mod dialect {
    use uuid::Uuid;

    pub(crate) type Db = sqlx::Postgres;

    /// Ids are native UUID columns.
    pub(crate) fn id(id: Uuid) -> Uuid {
        id
    }

    /// A list is an array parameter.
    pub(crate) fn list<T: Clone>(items: &[T]) -> Vec<T> {
        items.to_vec()
    }

    /// Quota-checked writes lock the owner's `users` row, so concurrent writes of one user
    /// are serialised and the sums each reads include the others' (READ COMMITTED reads
    /// what committed before each statement); other users are not blocked.
    pub(crate) const BEGIN_QUOTA: &str = "BEGIN";
    pub(crate) const LOCK_USER: &str = "SELECT 1 FROM users WHERE id = $1 FOR UPDATE";

    /// A claim's compare-and-swap of the agent's slot (`$1` the next slot, `$2` now, `$3`
    /// the agent, `$4` the slot read). An agent another claim holds locked is skipped, not
    /// waited for: that claim wins the slot (or, failing, leaves it for the next tick), and
    /// instances ticking at once spread over the due agents instead of queueing on each.
    pub(crate) const CLAIM_SWAP: &str = "UPDATE agents SET next_run_at = $1, updated_at = $2 \
         WHERE id = (SELECT id FROM agents WHERE id = $3 AND next_run_at = $4 \
         FOR UPDATE SKIP LOCKED) AND next_run_at = $4";

    /// Concurrent callers lock the runs they choose and skip the ones another has locked,
    /// so each stale run goes to one caller (a row changed meanwhile is re-checked by the
    /// outer WHERE).
    pub(crate) const TAKE_OVER_RUNS: &str = concat!(
        crate::repos::take_over_pick!(),
        " FOR UPDATE SKIP LOCKED)",
        crate::repos::take_over_set!()
    );

    pub(crate) const VECTOR_SIZES: &str =
        "SELECT item_id, size_bytes FROM vector_items WHERE user_id = $1 AND item_id = ANY($2)";
    pub(crate) const DELETE_VECTORS: &str =
        "DELETE FROM vector_items WHERE user_id = $1 AND item_id = ANY($2)";
    pub(crate) const UPSERT_VECTORS: &str = "INSERT INTO vector_items (user_id, item_id, size_bytes, updated_at) \
         SELECT $1, i, s, $4 FROM UNNEST($2::text[], $3::bigint[]) AS t (i, s) \
         ON CONFLICT (user_id, item_id) DO UPDATE SET size_bytes = excluded.size_bytes, updated_at = excluded.updated_at";
}

crate::repos::impl_repos!(PgDb, dialect);

#[async_trait]
impl Database for PgDb {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> RepoResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(repo_err)?;
        Ok(())
    }
}

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod tests {
    use super::testing::TestDatabase;

    #[tokio::test]
    async fn conformance_suite() {
        let Some(test_db) = TestDatabase::create("conformance").await else {
            return;
        };
        let db = super::PgDb::connect(test_db.url()).await.expect("connect");
        assert_eq!(db.migrate().await.expect("migrate").len(), 8);
        assert!(db.migrate().await.expect("again").is_empty(), "idempotent");
        adiuva_core::testing::database::run_all(&db).await;
        crate::repos::quota_writes_of_an_unknown_user_are_not_found(&db).await;
        db.close().await;
        test_db.drop_now().await;
    }

    #[tokio::test]
    async fn a_thousand_due_slots_are_claimed_once_by_three_instances() {
        let Some(test_db) = TestDatabase::create("claims").await else {
            return;
        };
        let db = super::PgDb::connect(test_db.url()).await.expect("connect");
        db.migrate().await.expect("migrate");
        crate::repos::a_thousand_due_slots_are_claimed_once_by_three_instances(&db).await;
        db.close().await;
        test_db.drop_now().await;
    }

    /// A claim skips an agent whose row another transaction holds (answering `None` at
    /// once instead of waiting), and claims it once that transaction ends.
    #[tokio::test]
    async fn a_claim_skips_an_agent_another_writer_holds() {
        use adiuva_core::domain::UserId;
        use adiuva_core::ports::db::UserRepo;
        use adiuva_core::ports::db::{
            AgentConfigRow, AgentKind, AgentLimits, AgentRepo, AgentRun, AgentStatus, RunStatus,
            RunTrigger, SlotClaim,
        };

        let Some(test_db) = TestDatabase::create("claimlock").await else {
            return;
        };
        let db = super::PgDb::connect(test_db.url()).await.expect("connect");
        db.migrate().await.expect("migrate");
        let user = adiuva_core::testing::database::sample_user("claimlock", 1);
        db.insert_user(&user).await.expect("user");
        let agent = AgentConfigRow {
            id: uuid::Uuid::now_v7(),
            user_id: user.id,
            kind: AgentKind::Cloud,
            name: "a".into(),
            agent_type: "inbox_triage".into(),
            schedule: Some("* * * * *".into()),
            timezone: "UTC".into(),
            enabled: true,
            filters: serde_json::json!({}),
            output: serde_json::json!({}),
            prompt_template: "p".into(),
            provider: Some("google".into()),
            oauth_token_sealed: Some("sealed".into()),
            status: AgentStatus::Active,
            sync_cursor: None,
            next_run_at: Some(60_000),
            created_at: 1,
            updated_at: 1,
        };
        db.insert_agent(&agent, AgentLimits::default())
            .await
            .expect("agent");
        let claim = |user_id: UserId| SlotClaim {
            agent_id: agent.id,
            expected_next_run_at: 60_000,
            next_run_at: Some(120_000),
            run: AgentRun {
                id: uuid::Uuid::now_v7(),
                user_id,
                agent_id: agent.id,
                status: RunStatus::Skipped,
                trigger: RunTrigger::Schedule,
                scheduled_for: Some(60_000),
                created_at: 60_000,
                started_at: None,
                finished_at: Some(60_000),
                items_read: 0,
                items_produced: 0,
                error: Some("no device".into()),
                instance_id: None,
                lease_until: None,
                attempts: 1,
                device_id: None,
            },
        };
        let mut holder = db.pool().begin().await.expect("begin");
        sqlx::query("SELECT 1 FROM agents WHERE id = $1 FOR UPDATE")
            .bind(agent.id)
            .fetch_one(&mut *holder)
            .await
            .expect("lock the agent");
        // Bounded: a claim that waited for the lock would wait for this test forever.
        let held = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            db.claim_slot(&claim(user.id)),
        )
        .await
        .expect("the claim does not wait for the lock");
        assert_eq!(held.expect("claim"), None, "skipped while held");
        holder.commit().await.expect("release");
        let won = claim(user.id);
        assert_eq!(
            db.claim_slot(&won).await.expect("claim"),
            Some(won.run.clone()),
            "claimed once free"
        );
        db.close().await;
        test_db.drop_now().await;
    }

    #[test]
    fn passwords_are_redacted_in_messages() {
        assert_eq!(
            super::redact("postgres://u:secret@h:5432/d"),
            "postgres://u:***@h:5432/d"
        );
        assert_eq!(super::redact("postgres://h/d"), "postgres://h/d");
    }
}
