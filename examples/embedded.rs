//! Embedding Adiuva in a plain tokio program: no HTTP, no server.
//!
//! Builds the library on SQLite in a temporary directory, registers a user, logs in,
//! refreshes the session and reads the profile back.
//!
//! Run: `cargo run -p adiuva-examples --example embedded`

use std::sync::Arc;

use adiuva_adapters::sqlite::SqliteDb;
use adiuva_core::auth::AuthConfig;
use adiuva_core::{Adiuva, Secret};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("adiuva.db").display());

    // Adapters are plain values: open the database and apply its migrations.
    let db = SqliteDb::connect(&url).await?;
    db.migrate().await?;

    // The facade is built from ports. A real program would keep its JWT secret somewhere safe.
    let adiuva = Adiuva::builder()
        .database(Arc::new(db))
        .auth(AuthConfig::new(Secret::new(
            "an embedded secret of at least 32 bytes".into(),
        )))
        .build()?;

    let registered = adiuva
        .auth()
        .register("ada@example.com", "correct horse battery")
        .await?;
    let session = adiuva
        .auth()
        .login("ada@example.com", "correct horse battery")
        .await?;
    let rotated = adiuva.auth().refresh(&session.refresh_token).await?;
    let user_id = adiuva.auth().verify_access_token(&rotated.access_token)?;
    let me = adiuva.auth().me(user_id).await?;

    assert_ne!(registered.refresh_token, rotated.refresh_token);
    println!(
        "registered and logged in {} (id {}, tier {})",
        me.email, me.id, me.tier
    );
    println!(
        "access token expires at {} ms since the epoch",
        rotated.expires_at
    );
    Ok(())
}
