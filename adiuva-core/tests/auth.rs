//! The auth service against the in-memory reference database, with a clock the tests move.

use std::sync::Arc;

use adiuva_core::auth::AuthConfig;
use adiuva_core::domain::{Role, Tier};
use adiuva_core::ports::{Clock as _, ManualClock};
use adiuva_core::testing::MemoryDb;
use adiuva_core::{Adiuva, Error, Secret};

const PW: &str = "correct horse battery";

fn app() -> (Adiuva, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let app = Adiuva::builder()
        .database(Arc::new(MemoryDb::new()))
        .clock(clock.clone())
        .auth(AuthConfig::new(Secret::new("x".repeat(40))))
        .build()
        .expect("build");
    (app, clock)
}

#[tokio::test]
async fn register_login_me() {
    let (app, clock) = app();
    let tokens = app
        .auth()
        .register(" Alice@Example.com ", PW)
        .await
        .unwrap();
    assert_eq!(tokens.expires_at, clock.now_ms() + 15 * 60 * 1000);
    let id = app
        .auth()
        .verify_access_token(&tokens.access_token)
        .unwrap();
    let me = app.auth().me(id).await.unwrap();
    assert_eq!(me.email.as_str(), "alice@example.com");
    assert_eq!((me.tier, me.role), (Tier::Free, Role::User));
    let again = app.auth().login("ALICE@example.com", PW).await.unwrap();
    assert_eq!(
        app.auth().verify_access_token(&again.access_token).unwrap(),
        id
    );
}

#[tokio::test]
async fn duplicate_email_is_a_conflict() {
    let (app, _) = app();
    app.auth().register("bob@example.com", PW).await.unwrap();
    let err = app
        .auth()
        .register("BOB@example.com", PW)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
}

#[tokio::test]
async fn wrong_password_and_unknown_email_look_the_same() {
    let (app, _) = app();
    app.auth().register("carol@example.com", PW).await.unwrap();
    let a = app
        .auth()
        .login("carol@example.com", "wrong password!!")
        .await
        .unwrap_err();
    let b = app
        .auth()
        .login("nobody@example.com", PW)
        .await
        .unwrap_err();
    let c = app.auth().login("not an email", PW).await.unwrap_err();
    assert_eq!(a.to_string(), b.to_string());
    assert_eq!(b.to_string(), c.to_string());
    assert_eq!(a.code(), "unauthorized");
    // Each failure ran exactly one argon2 verification: an unknown or malformed email is
    // checked against the dummy hash, so it costs what a wrong password costs.
    let before = app.auth().hasher().verifications();
    let _ = app.auth().login("nobody@example.com", PW).await;
    assert_eq!(app.auth().hasher().verifications(), before + 1);
    let _ = app
        .auth()
        .login("carol@example.com", "wrong password!!")
        .await;
    assert_eq!(app.auth().hasher().verifications(), before + 2);
    let _ = app.auth().login("not an email", PW).await;
    assert_eq!(app.auth().hasher().verifications(), before + 3);
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let (app, _) = app();
    let first = app.auth().register("dave@example.com", PW).await.unwrap();
    let second = app.auth().refresh(&first.refresh_token).await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    // Replaying the rotated token is theft: it fails and takes the live one down too.
    assert!(matches!(
        app.auth().refresh(&first.refresh_token).await,
        Err(Error::Unauthorized(_))
    ));
    assert!(matches!(
        app.auth().refresh(&second.refresh_token).await,
        Err(Error::Unauthorized(_))
    ));
    // Another login is a separate family and still works.
    let other = app.auth().login("dave@example.com", PW).await.unwrap();
    assert!(app.auth().refresh(&other.refresh_token).await.is_ok());
    assert!(app.auth().refresh("garbage").await.is_err());
}

#[tokio::test]
async fn tokens_expire_by_the_clock() {
    let (app, clock) = app();
    let t = app.auth().register("erin@example.com", PW).await.unwrap();
    clock.advance(15 * 60 * 1000 - 1000);
    assert!(app.auth().verify_access_token(&t.access_token).is_ok());
    clock.advance(1000);
    assert!(
        app.auth().verify_access_token(&t.access_token).is_err(),
        "access token expired"
    );
    assert!(
        app.auth().refresh(&t.refresh_token).await.is_ok(),
        "refresh token still live"
    );
    let t2 = app.auth().login("erin@example.com", PW).await.unwrap();
    clock.advance(30 * 24 * 3600 * 1000);
    assert!(
        app.auth().refresh(&t2.refresh_token).await.is_err(),
        "refresh token expired"
    );
}

#[tokio::test]
async fn deleted_users_cannot_refresh_or_see_themselves() {
    let (app, _) = app();
    let t = app.auth().register("frank@example.com", PW).await.unwrap();
    let id = app.auth().verify_access_token(&t.access_token).unwrap();
    app.accounts().delete("frank@example.com").await.unwrap();
    assert!(app.auth().refresh(&t.refresh_token).await.is_err());
    assert!(matches!(
        app.auth().me(id).await,
        Err(Error::Unauthorized(_))
    ));
}

#[tokio::test]
async fn admin_accounts() {
    let (app, _) = app();
    app.accounts()
        .create("gina@example.com", PW, Role::Admin, Tier::Team)
        .await
        .unwrap();
    let u = app
        .accounts()
        .set_tier("gina@example.com", Tier::Pro)
        .await
        .unwrap();
    assert_eq!((u.tier, u.role), (Tier::Pro, Role::Admin));
    let u = app
        .accounts()
        .set_role("gina@example.com", Role::User)
        .await
        .unwrap();
    assert_eq!(u.role, Role::User);
    assert_eq!(app.accounts().list(0, 10).await.unwrap().len(), 1);
    assert!(matches!(
        app.accounts()
            .set_tier("nobody@example.com", Tier::Pro)
            .await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn memory_db_passes_the_conformance_suite() {
    adiuva_core::testing::database::run_all(&MemoryDb::new()).await;
}

#[tokio::test]
async fn tier_gates_read_the_database() {
    use adiuva_core::tiers::Feature;
    let (app, _) = app();
    let t = app.auth().register("tess@example.com", PW).await.unwrap();
    let id = app.auth().verify_access_token(&t.access_token).unwrap();
    let tiers = app.tiers();
    assert_eq!(tiers.get_tier(id).await.unwrap(), Tier::Free);
    assert!(tiers.check_feature(id, Feature::Agents).await.unwrap());
    assert!(
        !tiers
            .check_feature(id, Feature::CloudStorageGb)
            .await
            .unwrap()
    );
    let err = tiers
        .quota_bytes(id, Feature::CloudStorageGb)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "tier_required");
    assert!(err.to_string().contains("requires the pro tier"), "{err}");
    assert_eq!(tiers.get_rate_limit(id).await.unwrap(), 20);

    app.accounts()
        .set_tier("tess@example.com", Tier::Pro)
        .await
        .unwrap();
    assert_eq!(
        tiers
            .quota_bytes(id, Feature::CloudStorageGb)
            .await
            .unwrap(),
        Some(5 * 1024 * 1024 * 1024)
    );
    assert_eq!(tiers.get_rate_limit(id).await.unwrap(), 60);
    let err = tiers
        .require_feature(id, Feature::PluginMarketplace)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("requires the power tier"), "{err}");

    app.accounts()
        .set_tier("tess@example.com", Tier::Team)
        .await
        .unwrap();
    assert_eq!(
        tiers.quota_bytes(id, Feature::BackupGb).await.unwrap(),
        None,
        "unlimited"
    );
    assert!(tiers.check_feature(id, Feature::Sso).await.unwrap());
}

/// A principal travels through handlers and services: its `Debug` names the user, the
/// tier and the session, never the password hash or the email.
#[tokio::test]
async fn a_principal_debugs_without_its_hash_or_email() {
    let (app, _) = app();
    let tokens = app.auth().register("debug@example.com", PW).await.unwrap();
    let who = app.auth().authenticate(&tokens.access_token).await.unwrap();
    assert!(who.user.password_hash.starts_with("$argon2id$"));
    let shown = format!("{who:?}");
    assert!(shown.contains(&who.id().to_string()), "{shown}");
    assert!(shown.contains("Free"), "{shown}");
    assert!(!shown.contains("argon2"), "{shown}");
    assert!(!shown.contains("example.com"), "{shown}");
}
