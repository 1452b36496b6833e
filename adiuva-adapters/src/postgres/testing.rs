//! A fresh PostgreSQL database per test, on the server named by
//! `ADIUVA_TEST_POSTGRES_URL` (any database on it: used to create and drop others).
//!
//! Unset: [`TestDatabase::create`] prints `SKIPPED` and returns `None` — unless
//! `ADIUVA_TEST_REQUIRE_SERVICES=1`, when it panics, so CI cannot pass by skipping.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
    dropped: bool,
}

impl TestDatabase {
    /// Creates `adiuva_test_<tag>_<random>`, or returns `None` when no server is configured.
    pub async fn create(tag: &str) -> Option<Self> {
        let admin_url = adiuva_core::testing::services::service(
            "ADIUVA_TEST_POSTGRES_URL",
            &format!("PostgreSQL tests ({tag})"),
        )?;
        let name = format!("adiuva_test_{tag}_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to ADIUVA_TEST_POSTGRES_URL: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let _ = admin.close().await;
        let mut url = url::Url::parse(&admin_url).expect("ADIUVA_TEST_POSTGRES_URL is a URL");
        url.set_path(&format!("/{name}"));
        let url = url.to_string();
        Some(Self {
            admin_url,
            name,
            url,
            dropped: false,
        })
    }

    /// The test database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Drops the database (closing other connections to it first).
    pub async fn drop_now(mut self) {
        drop_database(&self.admin_url, &self.name).await;
        self.dropped = true;
    }
}

async fn drop_database(admin_url: &str, name: &str) {
    if let Ok(mut admin) = PgConnection::connect(admin_url).await {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await;
        let _ = admin.close().await;
    }
}

impl Drop for TestDatabase {
    /// A test that panicked before `drop_now` still removes its database.
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(drop_database(&admin_url, &name));
            }
        })
        .join();
    }
}
