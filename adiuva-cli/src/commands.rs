//! What each subcommand does. Errors come back as one sentence for stderr.

use std::io::BufRead as _;
use std::process::ExitCode;

use adiuva_adapters::blobs::check_blob_url;
use adiuva_adapters::database::AnyDatabase;
use adiuva_core::domain::{Role, Tier};
use adiuva_core::gc::GcOptions;
use adiuva_server::settings::{Environment, Overrides, Settings, redact_url};
use adiuva_server::startup::{Application, Backend, shutdown_signal};
use adiuva_server::telemetry;

use crate::{Cli, Command, ConfigCommand, StorageCommand, UserCommand};

/// A failure to report: one line, no backtrace.
pub type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

fn load(
    cli: &Cli,
    bind: Option<std::net::SocketAddr>,
) -> Result<Settings, Box<dyn std::error::Error>> {
    let overrides = Overrides {
        config_file: cli.config.clone(),
        data_dir: cli.data_dir.clone(),
        bind,
    };
    Ok(Settings::load(&overrides)?)
}

/// Logs for commands other than `serve` stay quiet unless asked for.
pub(crate) fn quiet_logs(settings: &Settings) {
    let level =
        if std::env::var_os("ADIUVA_LOG").is_some() || std::env::var_os("RUST_LOG").is_some() {
            settings.log_level.as_str()
        } else {
            "warn"
        };
    telemetry::init_with_writer(settings.effective_log_format(), level, std::io::stderr);
}

pub async fn run(cli: Cli) -> CliResult {
    match &cli.command {
        Command::Serve { bind } => {
            let settings = load(&cli, *bind)?;
            telemetry::init(&settings);
            let stop = shutdown_signal();
            let app = Application::build(settings).await?;
            app.run_until_stopped(stop).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let settings = load(&cli, None)?;
            quiet_logs(&settings);
            let db = AnyDatabase::connect(&settings.database_url()).await?;
            let applied = db.migrate().await?;
            if applied.is_empty() {
                println!("database is up to date");
            }
            for m in applied {
                println!("applied {m}");
            }
            db.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Openapi => {
            println!("{}", adiuva_server::api::openapi_json());
            Ok(ExitCode::SUCCESS)
        }
        Command::Asyncapi => {
            println!("{}", adiuva_server::asyncapi::asyncapi_json());
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            command: ConfigCommand::Example { format },
        } => {
            match format.as_str() {
                "env" => print!("{}", Settings::example_env()),
                "toml" => print!("{}", Settings::example_toml()),
                "markdown" => print!("{}", Settings::example_markdown()),
                other => {
                    return Err(
                        format!("unknown format '{other}': use env, toml or markdown").into(),
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            command: ConfigCommand::Show,
        } => {
            print!("{}", load(&cli, None)?.show());
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor => doctor(&cli).await,
        Command::User { command } => {
            let settings = load(&cli, None)?;
            quiet_logs(&settings);
            let backend = Backend::connect(&settings).await?;
            let result = user(&backend, command).await;
            backend.database.close().await;
            result
        }
        Command::Storage {
            command: StorageCommand::Gc { apply, min_age },
        } => {
            let settings = load(&cli, None)?;
            quiet_logs(&settings);
            let backend = Backend::connect(&settings).await?;
            let options = GcOptions {
                min_age_ms: *min_age,
                apply: *apply,
            };
            let report = match backend.adiuva.garbage_collector() {
                Ok(gc) => gc.run(options).await,
                Err(e) => Err(e),
            };
            backend.database.close().await;
            let report = report?;
            let verb = if *apply { "deleted" } else { "orphan" };
            for key in &report.orphans {
                println!("{verb} {key}");
            }
            let verb = if *apply { "deleted" } else { "unfinished" };
            for id in &report.unfinished {
                println!("{verb} upload {id}");
            }
            println!(
                "{} orphaned blob(s) ({} bytes), {} unfinished upload(s) ({} bytes){}{}",
                report.orphans.len(),
                report.orphan_bytes,
                report.unfinished.len(),
                report.unfinished_bytes,
                if *apply || report.is_empty() {
                    ""
                } else {
                    "; run with --apply to delete them"
                },
                if report.too_young > 0 {
                    format!("; {} younger than --min-age left alone", report.too_young)
                } else {
                    String::new()
                },
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) => crate::bench::run(args, &cli).await,
        Command::BenchVectors(args) => crate::bench_vectors::run(args).await,
        Command::BenchChat(args) => crate::bench_chat::run(args).await,
        Command::BenchDevices(args) => crate::bench_devices::run(args).await,
        Command::BenchAgents(args) => crate::bench_agents::run(args).await,
    }
}

async fn user(backend: &Backend, command: &UserCommand) -> CliResult {
    let accounts = backend.adiuva.accounts();
    match command {
        UserCommand::Create {
            email,
            password_stdin,
            role,
            tier,
        } => {
            let role = Role::parse(role)?;
            let tier = Tier::parse(tier)?;
            let (password, generated) = if *password_stdin {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                (line.trim_end_matches(['\r', '\n']).to_owned(), false)
            } else {
                (adiuva_core::auth::new_refresh_token()?, true)
            };
            let user = accounts.create(email, &password, role, tier).await?;
            println!(
                "created {} ({}, {}, id {})",
                user.email, user.role, user.tier, user.id
            );
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::List { json } => {
            let mut offset = 0;
            if !json {
                println!(
                    "{:<36}  {:<40}  {:<6}  {:<5}  created_at",
                    "id", "email", "role", "tier"
                );
            }
            loop {
                let page = accounts.list(offset, 500).await?;
                if page.is_empty() {
                    break;
                }
                offset += page.len() as u64;
                for u in page {
                    if *json {
                        let line = serde_json::json!({
                            "id": u.id.to_string(), "email": u.email.as_str(), "role": u.role.as_str(),
                            "tier": u.tier.as_str(), "created_at": u.created_at,
                        });
                        println!("{line}");
                    } else {
                        println!(
                            "{:<36}  {:<40}  {:<6}  {:<5}  {}",
                            u.id, u.email, u.role, u.tier, u.created_at
                        );
                    }
                }
            }
        }
        UserCommand::SetTier { email, tier } => {
            let tier = Tier::parse(tier)?;
            let u = accounts
                .set_tier(email, tier)
                .await
                .map_err(|e| not_found_says_who(e, email))?;
            println!("{} is now on the {} tier", u.email, u.tier);
        }
        UserCommand::SetRole { email, role } => {
            let role = Role::parse(role)?;
            let u = accounts
                .set_role(email, role)
                .await
                .map_err(|e| not_found_says_who(e, email))?;
            println!("{} is now {}", u.email, u.role);
        }
        UserCommand::Delete { email } => {
            let u = accounts
                .delete(email)
                .await
                .map_err(|e| not_found_says_who(e, email))?;
            println!("deleted {} (id {})", u.email, u.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn not_found_says_who(e: adiuva_core::Error, email: &str) -> Box<dyn std::error::Error> {
    match e {
        adiuva_core::Error::NotFound(_) => {
            format!("no user with email '{}'", email.trim().to_lowercase()).into()
        }
        other => other.into(),
    }
}

/// Checks each piece and prints one line per check; fails if any check failed.
/// The scheduler's state and the OAuth providers offered; a provider with a client id
/// but no client secret fails (every code exchange would be refused).
fn check_agents(settings: &Settings, report: &mut impl FnMut(bool, &str, String)) {
    let mut offered = Vec::new();
    for (name, id, secret) in [
        (
            "google",
            settings.google_client_id.is_some(),
            settings.google_client_secret.is_some(),
        ),
        (
            "microsoft",
            settings.microsoft_client_id.is_some(),
            settings.microsoft_client_secret.is_some(),
        ),
    ] {
        match (id, secret) {
            (true, true) => offered.push(name),
            (true, false) => report(
                false,
                "oauth",
                format!("{name}: a client id without a client secret"),
            ),
            _ => {}
        }
    }
    report(
        true,
        "agents",
        format!(
            "scheduler {} (every {} s); OAuth providers: {}; redirect base {}",
            if settings.scheduler_enabled {
                "on"
            } else {
                "off"
            },
            settings.scheduler_tick_secs,
            if offered.is_empty() {
                "none".to_owned()
            } else {
                offered.join(", ")
            },
            settings.oauth_redirect_base_url
        ),
    );
}

async fn doctor(cli: &Cli) -> CliResult {
    let mut failed = 0;
    let mut report = |ok: bool, what: &str, detail: String| {
        println!("{} {what}: {detail}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            failed += 1;
        }
    };
    let settings = match load(cli, None) {
        Ok(s) => {
            report(
                true,
                "config",
                format!("env={:?}, data dir {}", s.env, s.data_dir.display()),
            );
            s
        }
        Err(e) => {
            report(false, "config", e.to_string());
            return Ok(ExitCode::FAILURE);
        }
    };
    quiet_logs(&settings);
    match (&settings.jwt_secret, settings.env) {
        (Some(s), _) if s.expose().len() >= 32 => report(true, "jwt secret", "configured".into()),
        (Some(_), _) => report(
            false,
            "jwt secret",
            "JWT_SECRET must be at least 32 bytes".into(),
        ),
        (None, Environment::Prod) => report(
            false,
            "jwt secret",
            "JWT_SECRET is required when ENV=prod".into(),
        ),
        (None, Environment::Dev) => match settings.resolve_jwt_secret() {
            Ok(_) => report(
                true,
                "jwt secret",
                format!(
                    "dev secret kept in {}",
                    settings.data_dir.join("jwt_secret").display()
                ),
            ),
            Err(e) => report(false, "jwt secret", e.to_string()),
        },
    }
    match settings.resolve_oauth_keyring() {
        Ok(k) if settings.oauth_token_key.is_some() => report(
            true,
            "oauth token key",
            format!("configured (sealing with key id {})", k.current_id()),
        ),
        Ok(_) => report(
            true,
            "oauth token key",
            format!(
                "dev key kept in {}",
                settings.data_dir.join("oauth_token_key").display()
            ),
        ),
        Err(e) => report(false, "oauth token key", e.to_string()),
    }
    check_agents(&settings, &mut report);
    let url = settings.database_url();
    match AnyDatabase::connect(&url).await {
        Ok(db) => {
            match db.port().ping().await {
                Ok(()) => report(true, "database", format!("{} answers", redact_url(&url))),
                Err(e) => report(
                    false,
                    "database",
                    format!("{} does not answer: {e}", redact_url(&url)),
                ),
            }
            match db.pending_migrations().await {
                Ok(p) if p.is_empty() => report(true, "migrations", "up to date".into()),
                Ok(p) => report(
                    true,
                    "migrations",
                    format!(
                        "{} pending (applied at server start or by `adiuva migrate`): {}",
                        p.len(),
                        p.join(", ")
                    ),
                ),
                Err(e) => report(false, "migrations", e.to_string()),
            }
            check_vector_index(&settings, &db, &mut report).await;
            db.close().await;
        }
        Err(e) => report(false, "database", e.to_string()),
    }
    if let Some(url) = &settings.redis_url {
        match adiuva_adapters::rate_limit::RedisRateLimiter::connect(&url.0).await {
            Ok(r) => match r.ping().await {
                Ok(()) => report(
                    true,
                    "redis",
                    format!("{} answers (shared rate limits)", url.redacted()),
                ),
                Err(e) => report(false, "redis", e.to_string()),
            },
            Err(e) => report(false, "redis", e.to_string()),
        }
    }
    check_device_bus(&settings, &mut report).await;
    match check_blob_url(&settings.blob_url(), &settings.s3_options()).await {
        Ok(loc) => report(
            true,
            "blob store",
            format!("{loc} is writable, readable and deletable"),
        ),
        Err(e) => report(false, "blob store", e.to_string()),
    }
    let unused: Vec<&str> = [("STRIPE_SECRET_KEY", settings.stripe_secret_key.is_some())]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
    if !unused.is_empty() {
        println!(
            "note  set but not used by this build yet: {}",
            unused.join(", ")
        );
    }
    if failed > 0 {
        eprintln!("error: {failed} check(s) failed");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Connects the configured device bus and sends one message through it to a mailbox of
/// its own (the way one instance reaches another), within 5 s.
async fn check_device_bus(settings: &Settings, report: &mut impl FnMut(bool, &str, String)) {
    use futures::StreamExt as _;
    let bus =
        adiuva_adapters::device_bus::connect(&settings.device_bus_url(), &settings.database_url())
            .await;
    let (bus, location) = match bus {
        Ok(b) => b,
        Err(e) => return report(false, "device bus", e.to_string()),
    };
    let probe = async {
        let mailbox = uuid::Uuid::new_v4();
        let mut inbox = bus.listen(mailbox).await.map_err(|e| e.to_string())?;
        bus.send(mailbox, bytes::Bytes::from_static(b"doctor"))
            .await
            .map_err(|e| e.to_string())?;
        match inbox.next().await {
            Some(m) if m.as_ref() == b"doctor" => Ok(()),
            _ => Err("the probe message did not come back".to_owned()),
        }
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), probe).await {
        Ok(Ok(())) => report(true, "device bus", format!("{location} delivers")),
        Ok(Err(e)) => report(false, "device bus", format!("{location}: {e}")),
        Err(_) => report(
            false,
            "device bus",
            format!("{location}: the probe message did not arrive within 5 s"),
        ),
    }
}

/// Connects the configured vector index and runs one search on a probe namespace.
/// (Embedded and pgvector need the migrated database; pgvector creates its table.)
async fn check_vector_index(
    settings: &Settings,
    db: &AnyDatabase,
    report: &mut impl FnMut(bool, &str, String),
) {
    if !db.pending_migrations().await.is_ok_and(|p| p.is_empty()) {
        report(
            true,
            "vector index",
            "checked once the migrations are applied".into(),
        );
        return;
    }
    match adiuva_adapters::vector::connect(&settings.vector_settings(), db).await {
        Ok((index, location)) => {
            let probe = index
                .search("_doctor_probe", &[1.0, 0.0], 1, &Default::default())
                .await;
            match probe {
                Ok(_) => report(true, "vector index", format!("{location} answers")),
                Err(e) => report(false, "vector index", format!("{location}: {e}")),
            }
        }
        Err(e) => report(false, "vector index", e.to_string()),
    }
}

/// `--min-age`: `90s`, `30m`, `24h`, `7d` or bare seconds, as milliseconds.
pub fn parse_age(raw: &str) -> Result<i64, String> {
    let raw = raw.trim();
    let (digits, unit_ms) = match raw.char_indices().last() {
        Some((i, 's')) => (&raw[..i], 1_000),
        Some((i, 'm')) => (&raw[..i], 60_000),
        Some((i, 'h')) => (&raw[..i], 3_600_000),
        Some((i, 'd')) => (&raw[..i], 86_400_000),
        _ => (raw, 1_000),
    };
    digits
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .and_then(|n| n.checked_mul(unit_ms))
        .ok_or_else(|| format!("'{raw}' is not a duration like 90s, 30m, 24h or 7d"))
}
