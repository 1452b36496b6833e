//! SQLite via sqlx: the embedded default. WAL journal, foreign keys on, a busy timeout
//! so concurrent writers queue instead of failing.

use std::str::FromStr;
use std::time::Duration;

use adiuva_core::ports::Database;
use adiuva_core::ports::db::RepoResult;
use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::AdapterError;
use crate::rows::repo_err;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteDb {
    pool: SqlitePool,
}

impl SqliteDb {
    /// Opens (creating if missing) the database at a `sqlite://PATH` or `sqlite::memory:` URL.
    pub async fn connect(url: &str) -> Result<Self, AdapterError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| {
                AdapterError::Unsupported(format!("'{url}' is not a usable SQLite URL: {e}"))
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable in WAL mode except for the last transactions before a power
            // loss; that is SQLite's recommended setting for WAL.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        if let Some(parent) = options.get_filename().parent()
            && !parent.as_os_str().is_empty()
        {
            tokio::fs::create_dir_all(parent).await.map_err(|e| {
                AdapterError::Connect(format!(
                    "cannot create the database directory {}: {e}",
                    parent.display()
                ))
            })?;
        }
        let in_memory = url.contains(":memory:");
        let pool = SqlitePoolOptions::new()
            // An in-memory database exists per connection: keep exactly one.
            .max_connections(if in_memory { 1 } else { 8 })
            .min_connections(if in_memory { 1 } else { 0 })
            .idle_timeout(if in_memory {
                None
            } else {
                Some(Duration::from_secs(600))
            })
            .max_lifetime(if in_memory {
                None
            } else {
                Some(Duration::from_secs(3600))
            })
            .connect_with(options)
            .await
            .map_err(|e| {
                AdapterError::Connect(format!("cannot open the SQLite database '{url}': {e}"))
            })?;
        Ok(Self { pool })
    }

    /// Applies pending migrations; returns the descriptions of those applied now.
    pub async fn migrate(&self) -> Result<Vec<String>, AdapterError> {
        let pending = self.pending_migrations().await?;
        MIGRATOR.run(&self.pool).await.map_err(|e| {
            AdapterError::Migrate(format!("migrating the SQLite database failed: {e}"))
        })?;
        Ok(pending)
    }

    /// Descriptions of the migrations not yet applied.
    pub async fn pending_migrations(&self) -> Result<Vec<String>, AdapterError> {
        let applied: Vec<i64> =
            match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
            {
                Ok(v) => v,
                // No bookkeeping table yet: nothing applied.
                Err(sqlx::Error::Database(e)) if e.message().contains("no such table") => {
                    Vec::new()
                }
                Err(e) => {
                    return Err(AdapterError::Connect(format!(
                        "reading the migration table failed: {e}"
                    )));
                }
            };
        Ok(MIGRATOR
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .map(|m| format!("{} {}", m.version, m.description))
            .collect())
    }

    /// The connection pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes the pool, waiting for in-flight queries.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// What SQLite does differently from PostgreSQL; the repositories are in `crate::repos`.
mod dialect {
    use uuid::Uuid;

    pub(crate) type Db = sqlx::Sqlite;

    /// Ids are TEXT columns.
    pub(crate) fn id(id: Uuid) -> String {
        id.to_string()
    }

    /// A list travels as one JSON array parameter, read back with `json_each`.
    pub(crate) fn list<T: serde::Serialize>(items: &[T]) -> String {
        serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
    }

    /// SQLite runs one writer at a time; `BEGIN IMMEDIATE` takes that lock before the
    /// first read, so the sums a quota check reads are the ones it writes against.
    pub(crate) const BEGIN_QUOTA: &str = "BEGIN IMMEDIATE";
    pub(crate) const LOCK_USER: &str = "SELECT 1 FROM users WHERE id = $1";

    /// A claim's compare-and-swap of the agent's slot (`$1` the next slot, `$2` now, `$3`
    /// the agent, `$4` the slot read); writers are serialised, so a second claim reads the
    /// first's result.
    pub(crate) const CLAIM_SWAP: &str = "UPDATE agents SET next_run_at = $1, updated_at = $2 \
         WHERE id = $3 AND next_run_at = $4";

    /// One writer at a time: the runs the CTE chose cannot be taken by anyone else before
    /// the UPDATE sets them.
    pub(crate) const TAKE_OVER_RUNS: &str = concat!(
        crate::repos::take_over_pick!(),
        ")",
        crate::repos::take_over_set!()
    );

    pub(crate) const VECTOR_SIZES: &str = "SELECT item_id, size_bytes FROM vector_items \
         WHERE user_id = $1 AND item_id IN (SELECT value FROM json_each($2))";
    pub(crate) const DELETE_VECTORS: &str = "DELETE FROM vector_items \
         WHERE user_id = $1 AND item_id IN (SELECT value FROM json_each($2))";
    /// `WHERE true` resolves SQLite's parsing ambiguity of `ON CONFLICT` after a join.
    pub(crate) const UPSERT_VECTORS: &str = "INSERT INTO vector_items (user_id, item_id, size_bytes, updated_at) \
         SELECT $1, i.value, s.value, $4 FROM json_each($2) AS i JOIN json_each($3) AS s ON s.key = i.key WHERE true \
         ON CONFLICT (user_id, item_id) DO UPDATE SET size_bytes = excluded.size_bytes, updated_at = excluded.updated_at";
}

crate::repos::impl_repos!(SqliteDb, dialect);

#[async_trait]
impl Database for SqliteDb {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> RepoResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(repo_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn fresh() -> (tempfile::TempDir, SqliteDb) {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("nested/adiuva.db").display());
        let db = SqliteDb::connect(&url).await.expect("connect");
        assert_eq!(db.migrate().await.expect("migrate").len(), 8);
        (dir, db)
    }

    #[tokio::test]
    async fn conformance_suite_on_a_file() {
        let (_dir, db) = fresh().await;
        adiuva_core::testing::database::run_all(&db).await;
    }

    #[tokio::test]
    async fn conformance_suite_in_memory() {
        let db = SqliteDb::connect("sqlite::memory:").await.expect("connect");
        db.migrate().await.expect("migrate");
        adiuva_core::testing::database::run_all(&db).await;
    }

    #[tokio::test]
    async fn a_thousand_due_slots_are_claimed_once_by_three_instances() {
        let (_dir, db) = fresh().await;
        crate::repos::a_thousand_due_slots_are_claimed_once_by_three_instances(&db).await;
    }

    #[tokio::test]
    async fn quota_writes_of_an_unknown_user_are_not_found() {
        let (_dir, db) = fresh().await;
        crate::repos::quota_writes_of_an_unknown_user_are_not_found(&db).await;
    }

    #[tokio::test]
    async fn migrations_are_idempotent_and_wal_is_on() {
        let (_dir, db) = fresh().await;
        assert!(db.pending_migrations().await.expect("pending").is_empty());
        assert!(db.migrate().await.expect("again").is_empty());
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(db.pool())
            .await
            .expect("pragma");
        assert_eq!(mode, "wal");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(db.pool())
            .await
            .expect("pragma");
        assert_eq!(fk, 1);
    }
}
