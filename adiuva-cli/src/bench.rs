//! `adiuva bench`: closed-loop load on `GET /auth/me` and `POST /auth/login`.
//!
//! Without `--url` it starts a server in this process on a temporary data dir (so the
//! load generator and the server share the machine's cores, as on a one-box deploy).
//! Each of `--concurrency` workers sends requests back to back over keep-alive
//! connections for `--seconds`; we report throughput and latency percentiles. The
//! in-process server logs warnings only (set ADIUVA_LOG to include the access log). The
//! in-process server logs warnings only (set ADIUVA_LOG to include the access log).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adiuva_server::settings::{Overrides, Settings};
use adiuva_server::startup::Application;
use clap::Args;

use crate::Cli;
use crate::commands::CliResult;

/// Options of `adiuva bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Base URL of a running server (e.g. http://127.0.0.1:8080). Default: start one in-process.
    #[arg(long)]
    url: Option<String>,
    /// Concurrent workers.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds per scenario.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Scenarios to run, comma-separated: me, login, login-wrong-password,
    /// login-unknown-email, records-create, records-get (1 KiB blobs).
    #[arg(long, default_value = "me,login")]
    scenarios: String,
    /// Database URL for the in-process server (default: SQLite in a temporary directory).
    #[arg(long)]
    database_url: Option<String>,
}

struct Outcome {
    latencies_us: Vec<u64>,
    errors: u64,
    elapsed: Duration,
}

pub async fn run(args: &BenchArgs, cli: &Cli) -> CliResult {
    let _tmp;
    let mut adiuva = None;
    let (base, server) = match &args.url {
        Some(url) => (url.trim_end_matches('/').to_owned(), None),
        None => {
            let dir = tempfile::tempdir()?;
            let mut settings = Settings::load(&Overrides {
                config_file: cli.config.clone(),
                ..Default::default()
            })?;
            // Warnings only: the access log of every request would measure the terminal.
            crate::commands::quiet_logs(&settings);
            settings.data_dir = dir.path().to_path_buf();
            // The bench measures throughput; budgets would measure the limiter.
            settings.rate_limit_enabled = false;
            settings.database_url = args
                .database_url
                .clone()
                .map(adiuva_server::settings::RedactedUrl);
            settings.blob_url = None;
            settings.bind = "127.0.0.1:0".parse()?;
            let app = Application::build(settings).await?;
            adiuva = Some(app.backend().adiuva.clone());
            let base = format!("http://127.0.0.1:{}", app.port());
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let handle = tokio::spawn(app.run_until_stopped(async move {
                let _ = rx.await;
            }));
            _tmp = dir;
            (base, Some((tx, handle)))
        }
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let email = format!("bench-{}@example.com", uuid_like());
    let password = "bench-password-123";
    let creds = serde_json::json!({ "email": email, "password": password });
    let resp = client
        .post(format!("{base}/api/v1/auth/register"))
        .json(&creds)
        .send()
        .await?;
    if !resp.status().is_success() {
        return Err(format!("registering the bench user failed: {}", resp.status()).into());
    }
    let tokens: serde_json::Value = resp.json().await?;
    let access = tokens["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    // Records need a tier with cloud storage: in process we can grant it directly.
    let wants_records = args.scenarios.contains("records");
    let mut record_url = None;
    if wants_records {
        let Some(app) = &adiuva else {
            return Err("records scenarios need the in-process server (omit --url)".into());
        };
        app.accounts()
            .set_tier(&email, adiuva_core::domain::Tier::Team)
            .await?;
        let resp = client
            .post(format!("{base}/api/v1/storage/records"))
            .bearer_auth(&access)
            .json(&record_body())
            .send()
            .await?;
        let created: serde_json::Value = resp.json().await?;
        let id = created["id"]
            .as_str()
            .ok_or("creating the bench record failed")?;
        record_url = Some(format!("{base}/api/v1/storage/records/{id}"));
    }

    println!(
        "adiuva bench: {} workers, {} s per scenario, against {}{}",
        args.concurrency,
        args.seconds,
        base,
        if server.is_some() {
            " (in-process server, sharing this machine's cores)"
        } else {
            ""
        }
    );
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "scenario", "requests", "req/s", "p50 ms", "p99 ms", "errors"
    );
    for scenario in args.scenarios.split(',').map(str::trim) {
        let login = |password: &str, email: &str| Spec {
            label: "POST /auth/login",
            method: reqwest::Method::POST,
            url: format!("{base}/api/v1/auth/login"),
            bearer: None,
            body: Some(serde_json::json!({ "email": email, "password": password })),
            expect: 200,
        };
        let spec = match scenario {
            "me" => Spec {
                label: "GET /auth/me",
                method: reqwest::Method::GET,
                url: format!("{base}/api/v1/auth/me"),
                bearer: Some(format!("Bearer {access}")),
                body: None,
                expect: 200,
            },
            "login" => login(password, &email),
            "records-create" => Spec {
                label: "POST /storage/records",
                method: reqwest::Method::POST,
                url: format!("{base}/api/v1/storage/records"),
                bearer: Some(format!("Bearer {access}")),
                body: Some(record_body()),
                expect: 200,
            },
            "records-get" => Spec {
                label: "GET /storage/records/id",
                method: reqwest::Method::GET,
                url: record_url.clone().unwrap_or_default(),
                bearer: Some(format!("Bearer {access}")),
                body: None,
                expect: 200,
            },
            "login-wrong-password" => Spec {
                label: "login, wrong password",
                expect: 401,
                ..login("not-the-password", &email)
            },
            "login-unknown-email" => Spec {
                label: "login, unknown email",
                expect: 401,
                ..login(password, "nobody-here@example.com")
            },
            other => {
                return Err(format!(
                    "unknown scenario '{other}': use me, login, login-wrong-password or login-unknown-email"
                )
                .into());
            }
        };
        let label = spec.label;
        let outcome = load(args, Arc::new(spec), &client).await;
        report(label, &outcome);
    }
    if let Some((tx, handle)) = server {
        let _ = tx.send(());
        handle.await??;
    }
    Ok(ExitCode::SUCCESS)
}

/// A 1 KiB record with its checksum.
fn record_body() -> serde_json::Value {
    use base64::Engine as _;
    use sha2::Digest as _;
    let blob = vec![0x5Au8; 1024];
    serde_json::json!({
        "table": "bench",
        "blob": base64::engine::general_purpose::STANDARD.encode(&blob),
        "checksum": hex::encode(sha2::Sha256::digest(&blob)),
    })
}

fn uuid_like() -> String {
    adiuva_core::auth::new_refresh_token()
        .unwrap_or_else(|_| "x".into())
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(16)
        .collect()
}

/// One kind of request, and the status that counts as success.
struct Spec {
    label: &'static str,
    method: reqwest::Method,
    url: String,
    bearer: Option<String>,
    body: Option<serde_json::Value>,
    expect: u16,
}

impl Spec {
    fn send(&self, c: &reqwest::Client) -> reqwest::RequestBuilder {
        let mut req = c.request(self.method.clone(), &self.url);
        if let Some(b) = &self.bearer {
            req = req.header("authorization", b);
        }
        if let Some(body) = &self.body {
            req = req.json(body);
        }
        req
    }
}

async fn load(args: &BenchArgs, spec: Arc<Spec>, client: &reqwest::Client) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (spec, client) = (spec.clone(), client.clone());
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(4096);
                let mut errors = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match spec.send(&client).send().await {
                        Ok(resp) if resp.status().as_u16() == spec.expect => {
                            // Read the body so the connection is reusable and the cost counted.
                            if resp.bytes().await.is_err() {
                                errors += 1;
                                continue;
                            }
                            lat.push(t.elapsed().as_micros() as u64);
                        }
                        _ => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut latencies_us = Vec::new();
    let mut errors = 0;
    for w in workers {
        if let Ok((lat, e)) = w.await {
            latencies_us.extend(lat);
            errors += e;
        }
    }
    Outcome {
        latencies_us,
        errors,
        elapsed: started.elapsed(),
    }
}

fn report(name: &str, o: &Outcome) {
    let mut lat = o.latencies_us.clone();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat[i] as f64 / 1000.0
    };
    let rps = lat.len() as f64 / o.elapsed.as_secs_f64();
    println!(
        "{:<22} {:>10} {:>10.0} {:>10.2} {:>10.2} {:>8}",
        name,
        lat.len(),
        rps,
        pct(0.50),
        pct(0.99),
        o.errors
    );
}
