//! Choosing the database from its URL.

use std::sync::Arc;

use adiuva_core::ports::Database;

use crate::AdapterError;
use crate::postgres::PgDb;
use crate::sqlite::SqliteDb;

/// The configured database, with the operational methods (migrations) that are not part
/// of the domain port.
#[derive(Debug, Clone)]
pub enum AnyDatabase {
    /// `sqlite://…`
    Sqlite(Arc<SqliteDb>),
    /// `postgres://…` or `postgresql://…`
    Postgres(Arc<PgDb>),
}

impl AnyDatabase {
    /// Opens the database named by `url`. Does not migrate.
    pub async fn connect(url: &str) -> Result<Self, AdapterError> {
        let scheme = url.split_once(':').map_or("", |(s, _)| s);
        match scheme {
            "sqlite" => Ok(Self::Sqlite(Arc::new(SqliteDb::connect(url).await?))),
            "postgres" | "postgresql" => Ok(Self::Postgres(Arc::new(PgDb::connect(url).await?))),
            _ => Err(AdapterError::Unsupported(format!(
                "DATABASE_URL must start with sqlite:// or postgres:// (got a URL with scheme '{scheme}')"
            ))),
        }
    }

    /// Applies pending migrations; returns the descriptions of those applied now.
    pub async fn migrate(&self) -> Result<Vec<String>, AdapterError> {
        match self {
            Self::Sqlite(db) => db.migrate().await,
            Self::Postgres(db) => db.migrate().await,
        }
    }

    /// Descriptions of migrations not yet applied.
    pub async fn pending_migrations(&self) -> Result<Vec<String>, AdapterError> {
        match self {
            Self::Sqlite(db) => db.pending_migrations().await,
            Self::Postgres(db) => db.pending_migrations().await,
        }
    }

    /// The domain port.
    pub fn port(&self) -> Arc<dyn Database> {
        match self {
            Self::Sqlite(db) => db.clone(),
            Self::Postgres(db) => db.clone(),
        }
    }

    /// Closes connections (waits for in-flight queries).
    pub async fn close(&self) {
        match self {
            Self::Sqlite(db) => db.close().await,
            Self::Postgres(db) => db.close().await,
        }
    }
}
