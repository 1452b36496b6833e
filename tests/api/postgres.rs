//! The same HTTP flows on PostgreSQL: the binary is one, the database is a URL.

use serde_json::Value;

use crate::helpers::{
    PASSWORD, access, assert_error, assert_unauthorized, email, json_body, refresh_token,
    spawn_app_on_postgres, status_counts,
};

#[tokio::test]
async fn auth_flow_on_postgres() {
    let Some(app) = spawn_app_on_postgres().await else {
        return;
    };
    let e = email("Pg");
    let first = app.register_ok(&format!(" {} ", e.to_uppercase())).await;
    assert_error(app.register(&e).await, 409, "conflict").await;
    let me = app.me_json(access(&first)).await;
    assert_eq!(me["email"], e.to_lowercase());
    assert_eq!(me["tier"], "free");

    assert_eq!(app.login(&e, PASSWORD).await.status(), 200);
    assert_unauthorized(app.login(&e, "wrong password!").await).await;

    let r1 = refresh_token(&first);
    let second: Value = json_body(app.refresh(r1).await).await;
    let r2 = refresh_token(&second);
    assert_unauthorized(app.refresh(r1).await).await;
    assert_unauthorized(app.refresh(r2).await).await;

    let health: Value = json_body(app.get("/health").await).await;
    assert_eq!(health["database"], "ok");

    // PostgreSQL + local disk.
    crate::records::record_flow(&app).await;
    crate::backups::backup_flow(&app).await;
    crate::vectors::vector_flow(&app, 8).await;
}

#[tokio::test]
async fn concurrent_registrations_of_one_email_on_postgres() {
    let Some(app) = spawn_app_on_postgres().await else {
        return;
    };
    let e = email("pgrace");
    let results = futures::future::join_all((0..6).map(|_| app.register(&e))).await;
    assert_eq!(status_counts(&results), [(200, 1), (409, 5)].into());
}

/// The SaaS shape: PostgreSQL for rows, S3 for blobs (moto_server in CI).
#[tokio::test]
async fn serves_on_postgres_and_s3() {
    let Some(endpoint) =
        adiuva_core::testing::services::service("ADIUVA_TEST_S3_ENDPOINT", "PostgreSQL + S3 stack")
    else {
        return;
    };
    let Some(pg) = adiuva_adapters::postgres::testing::TestDatabase::create("s3stack").await else {
        return;
    };
    let var = |k: &str, d: &str| {
        std::env::var(format!("ADIUVA_TEST_S3_{k}")).unwrap_or_else(|_| d.to_owned())
    };
    let url = pg.url().to_owned();
    let app = crate::helpers::spawn_app_with(|s| {
        s.database_url = Some(adiuva_server::settings::RedactedUrl(url));
        s.blob_url = Some(format!("s3://{}", var("BUCKET", "adiuva-test")));
        s.s3_endpoint = Some(endpoint);
        s.s3_region = Some(var("REGION", "us-east-1"));
        s.aws_access_key_id = Some(adiuva_core::Secret::new(var("ACCESS_KEY_ID", "test")));
        s.aws_secret_access_key = Some(adiuva_core::Secret::new(var("SECRET_ACCESS_KEY", "test")));
    })
    .await;
    assert_eq!(app.adiuva.database().backend(), "postgres");
    let t = app.register_ok(&email("s3")).await;
    assert_eq!(app.me(access(&t)).await.status(), 200);
    drop(app);
    pg.drop_now().await;
}
