//! The `adiuva` binary as an operator uses it: real processes, real signals.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_adiuva");

/// `adiuva` with a clean environment (no inherited ADIUVA_*/plan variables).
fn adiuva(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("adiuva runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Fails unless the command failed with exactly one line on stderr containing `needle`.
fn assert_one_line_error(o: &Output, needle: &str) {
    assert!(!o.status.success(), "should fail: {}", stdout(o));
    let err = stderr(o);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line on stderr: {err:?}"
    );
    assert!(
        err.starts_with("error: ") && err.contains(needle),
        "{err:?} mentions {needle:?}"
    );
}

#[test]
fn openapi_prints_the_served_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run(adiuva(dir.path()).arg("openapi"));
    assert!(o.status.success());
    let printed: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON on stdout");
    let expected: serde_json::Value =
        serde_json::from_str(&adiuva_server::api::openapi_json()).expect("json");
    assert_eq!(printed, expected);
    assert!(
        !dir.path().join("data").exists(),
        "printing the document touches no data"
    );
}

#[test]
fn config_example_documents_every_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = stdout(&run(adiuva(dir.path()).args(["config", "example"])));
    let toml = stdout(&run(
        adiuva(dir.path()).args(["config", "example", "--format", "toml"])
    ));
    for k in adiuva_server::settings::KEYS {
        assert!(
            env.contains(&format!("\n{}=", k.env[0])),
            "{} in env example",
            k.env[0]
        );
        assert!(
            toml.contains(&format!("# {} =", k.key)),
            "{} in toml example",
            k.key
        );
    }
    for plan_name in [
        "DATABASE_URL",
        "JWT_SECRET",
        "JWT_ALGORITHM",
        "CORS_ORIGINS",
        "ENV",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
    ] {
        assert!(env.contains(plan_name), "{plan_name}");
    }
    // The committed .env.example is exactly what the command prints.
    let committed =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.env.example"))
            .expect(".env.example");
    assert_eq!(
        committed, env,
        ".env.example is stale: regenerate with `adiuva config example > .env.example`"
    );
    assert_one_line_error(
        &run(adiuva(dir.path()).args(["config", "example", "--format", "yaml"])),
        "yaml",
    );
}

#[test]
fn readme_settings_table_is_the_generated_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run(adiuva(dir.path()).args(["config", "example", "--format", "markdown"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let header = table.lines().next().expect("a header row");
    assert_eq!(
        readme.matches(header).count(),
        1,
        "one settings table in README"
    );
    let start = readme.find(header).expect("README has the settings table");
    let end = readme[start..]
        .find("\n\n")
        .map_or(readme.len(), |i| start + i + 1);
    assert_eq!(
        &readme[start..end],
        table,
        "README's settings table is stale: replace it with `adiuva config example --format markdown`"
    );
    // (Other README tables may name a key, e.g. `vector_url`'s values.)
    for k in adiuva_server::settings::KEYS {
        assert_eq!(
            readme[start..end]
                .matches(&format!("\n| `{}` |", k.key))
                .count(),
            1,
            "{} has one row in README's settings table",
            k.key
        );
    }
}

#[test]
fn config_show_prints_the_settings_in_effect_without_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("adiuva.toml"), "backup_retention = 3\n").expect("write");
    let o = run(adiuva(dir.path())
        .args(["config", "show"])
        .env("JWT_SECRET", "jwt-secret-never-shown-0123456789abcdef")
        .env("OPENAI_API_KEY", "sk-never-shown")
        .env("AWS_SECRET_ACCESS_KEY", "aws-never-shown")
        .env("DATABASE_URL", "postgres://u:db-pw-never-shown@db/adiuva")
        .env("ADIUVA_BODY_LIMIT_BYTES", "2048"));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for secret in [
        "jwt-secret-never-shown",
        "sk-never-shown",
        "aws-never-shown",
        "db-pw-never-shown",
    ] {
        assert!(!out.contains(secret), "{secret} printed: {out}");
    }
    for line in [
        "jwt_secret = \"***\"",
        "openai_api_key = \"***\"",
        "aws_secret_access_key = \"***\"",
        "database_url = \"postgres://u:***@db/adiuva\"",
        "body_limit_bytes = 2048",
        "backup_retention = 3",
        "# stripe_secret_key (unset)",
    ] {
        assert!(out.lines().any(|l| l == line), "{line} in {out}");
    }
    assert_eq!(out.lines().count(), adiuva_server::settings::KEYS.len());
    assert!(!dir.path().join("data").exists(), "showing touches no data");

    assert_one_line_error(
        &run(adiuva(dir.path())
            .args(["config", "show"])
            .env("ADIUVA_CHAT_TURN_TIMEOUT_SECS", "soon")),
        "chat_turn_timeout_secs (from $ADIUVA_CHAT_TURN_TIMEOUT_SECS) must be a non-negative whole number (got 'soon')",
    );
    std::fs::write(dir.path().join("adiuva.toml"), "log_format = \"xml\"\n").expect("write");
    assert_one_line_error(
        &run(adiuva(dir.path()).args(["config", "show"])),
        "adiuva.toml: log_format must be auto, text or json (got 'xml')",
    );
}

#[test]
fn migrate_applies_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = run(adiuva(dir.path()).args(["--data-dir", "d", "migrate"]));
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(stdout(&first).contains("applied"), "{}", stdout(&first));
    assert!(dir.path().join("d/adiuva.db").is_file());
    let again = run(adiuva(dir.path()).args(["migrate", "--data-dir", "d"]));
    assert!(
        stdout(&again).contains("up to date"),
        "--data-dir works after the subcommand too"
    );
}

#[test]
fn user_admin_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("data");
    let d = d.to_str().expect("utf8");
    let mut create = adiuva(dir.path())
        .args([
            "user",
            "create",
            "Ops@Example.com",
            "--password-stdin",
            "--role",
            "admin",
            "--data-dir",
            d,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    create
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"a long enough password\n")
        .expect("write");
    let o = create.wait_with_output().expect("wait");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("created ops@example.com (admin, free"),
        "{}",
        stdout(&o)
    );

    // A generated password is printed once.
    let o = run(adiuva(dir.path()).args([
        "--data-dir",
        d,
        "user",
        "create",
        "second@example.com",
        "--tier",
        "pro",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("password: "), "{}", stdout(&o));

    let o = run(adiuva(dir.path()).args([
        "--data-dir",
        d,
        "user",
        "set-tier",
        "OPS@example.com",
        "team",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(adiuva(dir.path()).args([
        "--data-dir",
        d,
        "user",
        "set-role",
        "second@example.com",
        "admin",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));

    let o = run(adiuva(dir.path()).args(["--data-dir", d, "user", "list", "--json"]));
    let users: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(users.len(), 2);
    assert_eq!(
        (
            users[0]["email"].as_str(),
            users[0]["tier"].as_str(),
            users[0]["role"].as_str()
        ),
        (Some("ops@example.com"), Some("team"), Some("admin"))
    );
    assert_eq!(
        (users[1]["tier"].as_str(), users[1]["role"].as_str()),
        (Some("pro"), Some("admin"))
    );
    let table = stdout(&run(adiuva(dir.path()).args([
        "--data-dir",
        d,
        "user",
        "list",
    ])));
    assert!(
        table.lines().count() == 3 && table.contains("second@example.com"),
        "{table}"
    );

    // Wrong input: one clear line, non-zero exit, nothing changed.
    assert_one_line_error(
        &run(adiuva(dir.path()).args([
            "--data-dir",
            d,
            "user",
            "set-tier",
            "ops@example.com",
            "gold",
        ])),
        "'gold' is not one of: free, pro, power, team",
    );
    assert_one_line_error(
        &run(adiuva(dir.path()).args([
            "--data-dir",
            d,
            "user",
            "set-role",
            "ops@example.com",
            "root",
        ])),
        "'root' is not one of: user, admin",
    );
    assert_one_line_error(
        &run(adiuva(dir.path()).args([
            "--data-dir",
            d,
            "user",
            "set-tier",
            "nobody@example.com",
            "pro",
        ])),
        "no user with email 'nobody@example.com'",
    );
    assert_one_line_error(
        &run(adiuva(dir.path()).args(["--data-dir", d, "user", "delete", "nobody@example.com"])),
        "no user with email",
    );
    assert_one_line_error(
        &run(adiuva(dir.path()).args(["--data-dir", d, "user", "create", "second@example.com"])),
        "already exists",
    );
    assert_one_line_error(
        &run(adiuva(dir.path()).args(["--data-dir", d, "user", "create", "not-an-email"])),
        "email",
    );

    let o = run(adiuva(dir.path()).args(["--data-dir", d, "user", "delete", "second@example.com"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(adiuva(dir.path()).args(["--data-dir", d, "user", "list", "--json"]));
    assert_eq!(stdout(&o).lines().count(), 1);
}

#[test]
fn doctor_passes_on_defaults_and_fails_on_bad_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run(adiuva(dir.path()).arg("doctor"));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    for check in [
        "ok   config",
        "ok   jwt secret",
        "ok   database",
        "ok   migrations",
        "ok   blob store",
        "ok   device bus: memory delivers",
        "ok   oauth token key: dev key kept in",
        "ok   agents: scheduler on (every 60 s); OAuth providers: none",
    ] {
        assert!(out.contains(check), "{check} in {out}");
    }

    for (key, value, says) in [
        (
            "ENV",
            "prod",
            "FAIL jwt secret: JWT_SECRET is required when ENV=prod",
        ),
        (
            "DATABASE_URL",
            "mysql://localhost/adiuva",
            "FAIL database: DATABASE_URL must start with sqlite://",
        ),
        ("ADIUVA_BLOB_URL", "ftp://somewhere", "FAIL blob store"),
        ("ADIUVA_DEVICE_BUS_URL", "amqp://mq", "FAIL device bus"),
        (
            "ADIUVA_DEVICE_BUS_URL",
            "postgres",
            "FAIL device bus: device_bus_url 'postgres' uses the database",
        ),
        ("JWT_ALGORITHM", "RS256", "FAIL config"),
        (
            "OAUTH_TOKEN_KEY",
            "too-short",
            "FAIL oauth token key: oauth_token_key",
        ),
        (
            "GOOGLE_CLIENT_ID",
            "id-without-secret",
            "FAIL oauth: google: a client id without a client secret",
        ),
    ] {
        let o = run(adiuva(dir.path()).arg("doctor").env(key, value));
        assert!(!o.status.success(), "{key}={value}");
        assert!(stdout(&o).contains(says), "{}", stdout(&o));
    }

    let o = run(adiuva(dir.path()).args(["--config", "missing.toml", "doctor"]));
    assert!(!o.status.success());
    assert!(stdout(&o).contains("missing.toml"), "{}", stdout(&o));
}

/// A `serve` child and the URL it logged.
struct Server {
    child: Child,
    url: String,
    /// The instance id it logged (its device-bus mailbox, its runs' holder).
    instance: String,
    lines: std::sync::mpsc::Receiver<String>,
}

fn serve(dir: &Path, extra_env: &[(&str, &str)]) -> Server {
    let mut cmd = adiuva(dir);
    cmd.args(["serve", "--bind", "127.0.0.1:0"])
        .env("ADIUVA_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("serve exited early with {status}");
            }
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["fields"]["message"] == "adiuva listening" {
            let url = v["fields"]["url"].as_str().expect("url").to_owned();
            let instance = v["fields"]["instance"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            return Server {
                child,
                url,
                instance,
                lines: rx,
            };
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("serve did not report listening");
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        assert!(Instant::now() < deadline, "server did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn http_get(url: &str) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let resp = reqwest::get(url).await.expect("get");
        (resp.status().as_u16(), resp.text().await.expect("body"))
    })
}

#[test]
fn serve_on_embedded_defaults_then_sigterm_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = serve(dir.path(), &[]);
    assert!(
        server.url.starts_with("http://127.0.0.1:"),
        "{}",
        server.url
    );
    let (status, body) = http_get(&format!("{}/api/v1/health", server.url));
    assert_eq!(status, 200, "{body}");
    for made in ["data/adiuva.db", "data/blobs", "data/jwt_secret"] {
        assert!(
            dir.path().join(made).exists(),
            "{made} created under ./data"
        );
    }
    signal(&server.child, "TERM");
    let status = wait_exit(&mut server.child);
    assert!(status.success(), "SIGTERM exits 0: {status}");
    let rest: Vec<String> = server.lines.try_iter().collect();
    assert!(
        rest.iter().any(|l| l.contains("SIGTERM received")),
        "{rest:?}"
    );
    assert!(
        rest.iter().any(|l| l.contains("adiuva stopped")),
        "{rest:?}"
    );
}

#[test]
fn sigint_exits_zero_and_keeps_the_generated_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = serve(dir.path(), &[]);
    let secret = std::fs::read_to_string(dir.path().join("data/jwt_secret")).expect("secret");
    signal(&server.child, "INT");
    assert!(wait_exit(&mut server.child).success());
    let mut again = serve(dir.path(), &[]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("data/jwt_secret")).expect("secret"),
        secret,
        "generated once, then kept"
    );
    signal(&again.child, "TERM");
    assert!(wait_exit(&mut again.child).success());
}

#[test]
fn prod_without_a_secret_refuses_to_start_and_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run(adiuva(dir.path())
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("ENV", "prod"));
    assert_one_line_error(&o, "JWT_SECRET is required when ENV=prod");
    // The key sealing OAuth tokens too: a generated one would differ per instance.
    let o = run(adiuva(dir.path())
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("ENV", "prod")
        .env("JWT_SECRET", "prod-secret-that-must-not-leak-0123456789"));
    assert_one_line_error(&o, "OAUTH_TOKEN_KEY is required when ENV=prod");
}

#[test]
fn prod_logs_are_json_and_never_show_the_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = "prod-secret-that-must-not-leak-0123456789";
    let mut cmd = adiuva(dir.path());
    cmd.args(["serve", "--bind", "127.0.0.1:0"])
        .env("ENV", "prod")
        .env("JWT_SECRET", secret)
        .env("OAUTH_TOKEN_KEY", OAUTH_KEY)
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut reader = BufReader::new(stderr);
    let mut first = String::new();
    reader.read_line(&mut first).expect("a log line");
    let v: serde_json::Value = serde_json::from_str(&first).expect("prod logs are JSON lines");
    assert!(v["fields"]["message"].is_string(), "{v}");
    signal(&child, "TERM");
    assert!(wait_exit(&mut child).success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).expect("rest");
    assert!(!first.contains(secret) && !rest.contains(secret));
    assert!(!first.contains(OAUTH_KEY) && !rest.contains(OAUTH_KEY));
}

/// An `OAUTH_TOKEN_KEY` for prod servers: 32 bytes in hex.
const OAUTH_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn storage_gc_lists_and_deletes_orphaned_blobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run(adiuva(dir.path()).args(["--data-dir", "d", "storage", "gc"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("0 orphaned blob(s)"), "{}", stdout(&o));
    // A record-shaped blob with no row, as an interrupted write would leave.
    let orphan = dir
        .path()
        .join("d/blobs/0199aaaa-0000-7000-8000-000000000001/notes");
    std::fs::create_dir_all(&orphan).expect("mkdir");
    std::fs::write(orphan.join("0199aaaa-0000-7000-8000-000000000002"), b"lost").expect("write");
    // Just written: within the default grace period (24 h), so left alone.
    let o = run(adiuva(dir.path()).args(["--data-dir", "d", "storage", "gc", "--apply"]));
    let out = stdout(&o);
    assert!(
        out.contains("0 orphaned blob(s)") && out.contains("1 younger than --min-age left alone"),
        "{out}"
    );
    assert!(orphan.join("0199aaaa-0000-7000-8000-000000000002").exists());
    let o = run(adiuva(dir.path()).args(["--data-dir", "d", "storage", "gc", "--min-age", "0s"]));
    let out = stdout(&o);
    assert!(
        out.contains(
            "orphan 0199aaaa-0000-7000-8000-000000000001/notes/0199aaaa-0000-7000-8000-000000000002"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "1 orphaned blob(s) (4 bytes), 0 unfinished upload(s) (0 bytes); run with --apply"
        ),
        "{out}"
    );
    let o = run(adiuva(dir.path()).args([
        "--data-dir",
        "d",
        "storage",
        "gc",
        "--apply",
        "--min-age",
        "0",
    ]));
    assert!(stdout(&o).contains("deleted "), "{}", stdout(&o));
    assert!(!orphan.join("0199aaaa-0000-7000-8000-000000000002").exists());
    let o = run(adiuva(dir.path()).args(["storage", "gc", "--min-age", "soon"]));
    assert!(!o.status.success() && stderr(&o).contains("'soon' is not a duration"));
}

/// SHA-256, lowercase hex.
fn sha(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// `len` bytes that differ per `seed`.
fn patterned(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            // xorshift: cheap, and no two seeds give the same bytes.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Every file under `dir`.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn is_staging(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.rsplit_once('#'))
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The header `name` of `resp`, which must be there and ASCII.
fn header_text(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()[name].to_str().expect("ascii").to_owned()
}

/// Sends request `n` (built by `nth`) for n = 0, 1, … until one gets no answer (the
/// server is gone); returns how many were answered.
async fn until_unanswered(mut nth: impl FnMut(u64) -> reqwest::RequestBuilder) -> usize {
    let mut answered = 0;
    for n in 0u64.. {
        if nth(n).send().await.is_err() {
            return answered;
        }
        answered += 1;
    }
    answered
}

/// Registers `email` on `server` over HTTP; returns the access token.
async fn register(http: &reqwest::Client, server: &Server, email: &str, password: &str) -> String {
    let tokens: serde_json::Value = http
        .post(format!("{}/api/v1/auth/register", server.url))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("tokens");
    tokens["access_token"].as_str().expect("access").to_owned()
}

/// A client of one crash-test server.
struct Client {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Client {
    /// `method` on `/api/v1` + `path` as this client's user.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/api/v1{path}", self.url))
            .bearer_auth(&self.token)
    }

    /// `GET path` as this client's user; panics only if the server does not answer.
    async fn get(&self, path: &str) -> reqwest::Response {
        let sent = self.request(reqwest::Method::GET, path).send().await;
        sent.unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    async fn create(&self, blob: &[u8]) -> String {
        use base64::Engine as _;
        let resp = self
            .request(reqwest::Method::POST, "/storage/records")
            .json(&serde_json::json!({
                "table": "notes",
                "blob": base64::engine::general_purpose::STANDARD.encode(blob),
                "checksum": sha(blob),
            }))
            .send()
            .await
            .expect("create");
        assert_eq!(resp.status(), 200);
        let v: serde_json::Value = resp.json().await.expect("json");
        v["id"].as_str().expect("id").to_owned()
    }

    /// Updates and uploads backups back to back until the server goes away; returns how
    /// many of each were answered. Bodies are made beforehand, so the server's work is
    /// what the kill interrupts.
    async fn drive(&self, ids: &[String], load: &Load, round: u64) -> (usize, usize) {
        let updates = until_unanswered(|n| {
            let n = n as usize;
            let path = format!("/storage/records/{}", ids[n % ids.len()]);
            self.request(reqwest::Method::PUT, &path)
                .header("content-type", "application/json")
                .body(load.updates[n % load.updates.len()].clone())
        });
        let backups = until_unanswered(|n| {
            let (body, checksum) = &load.backups[n as usize % load.backups.len()];
            self.request(reqwest::Method::PUT, "/backup")
                .header("x-backup-version", "1")
                .header("x-backup-timestamp", (round * 1000 + n).to_string())
                .header("x-backup-checksum", checksum)
                .body(body.clone())
        });
        tokio::join!(updates, backups)
    }

    /// Every record and the latest backup are served with bytes matching their checksum.
    async fn check_consistent(&self, ids: &[String]) {
        for id in ids {
            let got = self.get(&format!("/storage/records/{id}")).await;
            assert_eq!(got.status(), 200, "record {id} is readable");
            let checksum = header_text(&got, "x-checksum");
            let body = got.bytes().await.expect("body");
            assert_eq!(sha(&body), checksum, "record {id}: bytes match the row");
        }
        let got = self.get("/backup").await;
        if got.status() == 404 {
            return;
        }
        assert_eq!(got.status(), 200);
        let checksum = header_text(&got, "x-backup-checksum");
        let body = got.bytes().await.expect("body");
        assert_eq!(
            sha(&body),
            checksum,
            "the latest backup's bytes match its row"
        );
        let history: Vec<serde_json::Value> = self
            .get("/backup/history")
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(history[0]["size_bytes"], body.len());
    }
}

/// Request bodies of one round: record updates (JSON) and backups with their checksums.
struct Load {
    updates: Vec<String>,
    backups: Vec<(Vec<u8>, String)>,
}

impl Load {
    /// ~3 MiB each, different per round.
    fn new(round: u64) -> Self {
        use base64::Engine as _;
        let updates = (0..4)
            .map(|i| {
                let blob = patterned(3 * 1024 * 1024 + i * 1000, round * 100 + i as u64);
                serde_json::json!({
                    "blob": base64::engine::general_purpose::STANDARD.encode(&blob),
                    "checksum": sha(&blob),
                })
                .to_string()
            })
            .collect();
        let backups = (0..2)
            .map(|i| {
                let body = patterned(3 * 1024 * 1024 - i * 1000, round * 100 + 50 + i as u64);
                let checksum = sha(&body);
                (body, checksum)
            })
            .collect();
        Self { updates, backups }
    }
}

fn kill_9(server: &mut Server) {
    // Child::kill is SIGKILL on Unix: no destructor, no cleanup runs.
    server.child.kill().expect("kill -9");
    server.child.wait().expect("reaped");
}

#[test]
fn kill_9_mid_writes_leaves_consistent_rows_and_gc_collects_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [
        ("ADIUVA_BODY_LIMIT_BYTES", "16777216"),
        ("ADIUVA_RATE_LIMIT_ENABLED", "false"),
    ];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let mut server = serve(dir.path(), &env);
    let email = "crash@example.com";
    let http = reqwest::Client::new();
    let token = rt.block_on(register(&http, &server, email, "correct horse battery"));
    let o = run(adiuva(dir.path()).args(["user", "set-tier", email, "team"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let mut client = Client {
        http,
        url: server.url.clone(),
        token,
    };
    let ids: Vec<String> = rt.block_on(async {
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(client.create(&patterned(3 * 1024 * 1024, 900 + i)).await);
        }
        ids
    });
    // Kill at a few different moments of a stream of 3 MiB updates and backups.
    for (round, after_ms) in [
        (1u64, 200u64),
        (2, 450),
        (3, 700),
        (4, 950),
        (5, 1300),
        (6, 1700),
    ] {
        let load = Load::new(round);
        let driving = {
            let client = Client {
                http: client.http.clone(),
                url: client.url.clone(),
                token: client.token.clone(),
            };
            let ids = ids.clone();
            rt.spawn(async move { client.drive(&ids, &load, round).await })
        };
        std::thread::sleep(Duration::from_millis(after_ms));
        kill_9(&mut server);
        let (updates, backups) = rt
            .block_on(driving)
            .expect("the driver ends when the server is gone");
        eprintln!("round {round}: killed after {updates} updates and {backups} backups");
        server = serve(dir.path(), &env);
        client.url = server.url.clone();
        rt.block_on(client.check_consistent(&ids));
    }

    // A backup upload killed mid-body leaves its staging file.
    let blobs = dir.path().join("data/blobs");
    let staged_before = files_under(&blobs)
        .into_iter()
        .filter(|p| is_staging(p))
        .count();
    let port: u16 = server
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let mut upload = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        upload,
        "PUT /api/v1/backup HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nX-Backup-Version: 1\r\nX-Backup-Timestamp: 99999\r\nX-Backup-Checksum: {}\r\nContent-Length: 20971520\r\n\r\n",
        client.token,
        sha(b"never finished")
    )
    .expect("head");
    upload
        .write_all(&vec![7u8; 9 * 1024 * 1024])
        .expect("part of the body");
    let deadline = Instant::now() + Duration::from_secs(30);
    while files_under(&blobs)
        .into_iter()
        .filter(|p| is_staging(p))
        .count()
        <= staged_before
    {
        assert!(
            Instant::now() < deadline,
            "the upload never reached the blob store"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    kill_9(&mut server);
    drop(upload);
    let staged: Vec<_> = files_under(&blobs)
        .into_iter()
        .filter(|p| is_staging(p))
        .collect();
    assert!(
        !staged.is_empty(),
        "a killed upload leaves its staging file"
    );
    server = serve(dir.path(), &env);
    client.url = server.url.clone();

    // While the server runs, the default grace period keeps gc off everything just written.
    let o = run(adiuva(dir.path()).args(["storage", "gc"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("0 orphaned blob(s) (0 bytes), 0 unfinished upload(s) (0 bytes)"),
        "{}",
        stdout(&o)
    );
    let o = run(adiuva(dir.path()).args(["storage", "gc", "--min-age", "0s"]));
    let listed = stdout(&o);
    eprintln!(
        "after the kills: {}",
        listed.lines().last().unwrap_or_default()
    );
    for p in &staged {
        let rel = p.strip_prefix(&blobs).expect("under blobs");
        assert!(
            listed.contains(&format!("unfinished upload {}", rel.display())),
            "{} listed: {listed}",
            rel.display()
        );
    }
    let o = run(adiuva(dir.path()).args(["storage", "gc", "--min-age", "0s", "--apply"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("deleted upload"), "{}", stdout(&o));
    let o = run(adiuva(dir.path()).args(["storage", "gc", "--min-age", "0s"]));
    assert!(
        stdout(&o).contains("0 orphaned blob(s) (0 bytes), 0 unfinished upload(s) (0 bytes)"),
        "nothing left: {}",
        stdout(&o)
    );
    assert!(
        files_under(&blobs).iter().all(|p| !is_staging(p)),
        "staging files removed"
    );
    // Everything the rows point at survived the collection.
    rt.block_on(client.check_consistent(&ids));
    signal(&server.child, "TERM");
    assert!(wait_exit(&mut server.child).success());
}

/// Issue #9 item 7: even with `RUST_LOG=trace`, a chat frame's `api_key` (and the
/// access token and password) never reach the log — the WebSocket library's frame logs
/// are dropped whatever the filter says.
#[test]
fn trace_logging_never_prints_a_frames_api_key() {
    use futures::{SinkExt as _, StreamExt as _};
    const KEY: &str = "sk-trace-level-secret-0000000000000007";
    const PASSWORD: &str = "trace level password 7";
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = serve(dir.path(), &[("RUST_LOG", "trace")]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let access = rt.block_on(async {
        let http = reqwest::Client::new();
        let access = register(&http, &server, "trace@example.com", PASSWORD).await;
        let ws_url = format!(
            "{}/api/v1/chat/stream?token={access}",
            server.url.replacen("http://", "ws://", 1)
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(ws_url)
            .await
            .expect("ws connect");
        // A frame the server refuses at once (message is not a string), so no model is
        // called; it still passes through the WebSocket library's reader.
        let frame = serde_json::json!({"type": "chat_request", "message": 7, "api_key": KEY});
        ws.send(tokio_tungstenite::tungstenite::Message::Text(
            frame.to_string().into(),
        ))
        .await
        .expect("send");
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("an answer")
                .expect("open")
                .expect("frame");
            if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
                assert!(t.contains("\"error\""), "{t}");
                break;
            }
        }
        let _ = ws.close(None).await;
        access
    });
    signal(&server.child, "TERM");
    assert!(wait_exit(&mut server.child).success());
    let mut lines = Vec::new();
    while let Ok(l) = server.lines.recv_timeout(Duration::from_secs(5)) {
        lines.push(l);
    }
    let log = lines.join("\n");
    // The filter took effect (nothing else in this build logs at trace once the
    // WebSocket library's frame logs are dropped: with them, this test sees the key).
    assert!(
        lines.iter().any(|l| l.contains("\"level\":\"DEBUG\"")),
        "verbose logging was on"
    );
    for (what, secret) in [
        ("api_key", KEY),
        ("access token", &access),
        ("password", PASSWORD),
    ] {
        assert!(!log.contains(secret), "the {what} is in the trace log");
        assert!(
            !log.contains(&hex_of(secret)),
            "the {what} is in the trace log as hex"
        );
    }
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

type DeviceWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a device socket on `server` and says hello; the socket and its `hello_ack`.
async fn device_hello(server: &Server, token: &str) -> (DeviceWs, serde_json::Value) {
    use futures::SinkExt as _;
    let url = format!(
        "{}/api/v1/ws/device?token={token}",
        server.url.replacen("http://", "ws://", 1)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("device socket");
    let hello = serde_json::json!({"type": "device_hello", "device_id": "desk",
        "name": "Desk", "platform": "linux", "app_version": "1.0.0"});
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        hello.to_string().into(),
    ))
    .await
    .expect("hello");
    let ack = next_device_frame(&mut ws).await;
    assert_eq!(ack["type"], "hello_ack", "{ack}");
    (ws, ack)
}

async fn next_device_frame(ws: &mut DeviceWs) -> serde_json::Value {
    use futures::StreamExt as _;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("a frame within 15 s")
            .expect("socket open")
            .expect("frame");
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            return serde_json::from_str(&t).expect("JSON frame");
        }
    }
}

/// Issue 11, item 5 on a real process: a queued frame the server sent but the device had
/// not acked when the server was `kill -9`ed is sent again by the next server on the
/// same data, with the same id; once acked, never again.
#[test]
fn kill_9_between_send_and_ack_loses_no_queued_frame() {
    use futures::SinkExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [("ADIUVA_RATE_LIMIT_ENABLED", "false")];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let mut server = serve(dir.path(), &env);
    let http = reqwest::Client::new();
    let token = rt.block_on(register(
        &http,
        &server,
        "queue@example.com",
        "correct horse battery",
    ));
    let (ws, ack) = rt.block_on(device_hello(&server, &token));
    assert_eq!(ack["pending"], 0);
    drop(ws);
    // Another instance queues a notification (through the same database, as one would):
    // the payload is the frame as core serializes it.
    let frame_id = uuid::Uuid::new_v4();
    rt.block_on(async {
        let db = adiuva_adapters::database::AnyDatabase::connect(&format!(
            "sqlite://{}",
            dir.path().join("data/adiuva.db").display()
        ))
        .await
        .expect("the server's database")
        .port();
        let user = db
            .user_by_email(&adiuva_core::domain::Email::parse("queue@example.com").expect("email"))
            .await
            .expect("read")
            .expect("the user");
        let frame = adiuva_core::devices::ToDevice::Notification {
            id: frame_id.to_string(),
            kind: "message".into(),
            payload: serde_json::json!({"text": "survives a kill -9"}),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_millis() as i64;
        db.enqueue_frame(
            user.id,
            "desk",
            &adiuva_core::ports::db::NewQueuedFrame {
                frame_id,
                kind: "notification".into(),
                payload: serde_json::to_vec(&frame).expect("serialize"),
                expires_at: now + 3_600_000,
            },
            1000,
            now,
        )
        .await
        .expect("queued");
    });
    // The device reconnects, receives it, and the server dies before the ack.
    let ws = rt.block_on(async {
        let (mut ws, ack) = device_hello(&server, &token).await;
        assert_eq!(ack["pending"], 1, "{ack}");
        let got = next_device_frame(&mut ws).await;
        assert_eq!(got["id"], frame_id.to_string(), "{got}");
        ws
    });
    kill_9(&mut server);
    drop(ws);
    let server = serve(dir.path(), &env);
    rt.block_on(async {
        let (mut ws, ack) = device_hello(&server, &token).await;
        assert_eq!(ack["pending"], 1, "not acked, so still queued: {ack}");
        let again = next_device_frame(&mut ws).await;
        assert_eq!(
            again["id"],
            frame_id.to_string(),
            "the same frame again: {again}"
        );
        assert_eq!(again["payload"]["text"], "survives a kill -9");
        let ack = serde_json::json!({"type": "ack", "id": again["id"]});
        ws.send(tokio_tungstenite::tungstenite::Message::Text(
            ack.to_string().into(),
        ))
        .await
        .expect("ack");
        // The ack is processed before the socket's close (frames of one socket are
        // handled in order); the next hello finds nothing pending.
        ws.close(None).await.expect("close");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (_ws, ack) = device_hello(&server, &token).await;
            if ack["pending"] == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the ack never emptied the queue: {ack}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// One slot's runs, read from the shared database.
struct SlotRuns {
    finished: usize,
    succeeded: usize,
    /// Runs still executing, by the instance holding them.
    running_on: std::collections::HashMap<uuid::Uuid, usize>,
    /// Agents with exactly one run for the slot.
    once: usize,
    /// Runs that a second instance took over.
    taken_over: usize,
}

async fn slot_runs(
    db: &std::sync::Arc<dyn adiuva_core::ports::Database>,
    agents: &[uuid::Uuid],
    slot: i64,
) -> SlotRuns {
    use adiuva_core::ports::db::RunStatus;
    let mut r = SlotRuns {
        finished: 0,
        succeeded: 0,
        running_on: Default::default(),
        once: 0,
        taken_over: 0,
    };
    for id in agents {
        let runs = db.runs_for_slot(*id, slot).await.expect("runs of the slot");
        if runs.len() == 1 {
            r.once += 1;
        }
        for run in runs {
            if run.attempts > 1 {
                r.taken_over += 1;
            }
            match run.status {
                RunStatus::Succeeded => {
                    r.finished += 1;
                    r.succeeded += 1;
                }
                RunStatus::Queued | RunStatus::Running => {
                    if let Some(i) = run.instance_id {
                        *r.running_on.entry(i).or_default() += 1;
                    }
                }
                _ => r.finished += 1,
            }
        }
    }
    r
}

/// Issue 12, item 8: three `serve` processes on one PostgreSQL, 1,000 cloud agents (ten
/// users) due at the same instant, each reading the fake Gmail and asking the fake model.
/// While the slot's runs execute, the instance holding the most of them is `kill -9`ed.
/// Every agent's slot runs exactly once: 1,000 runs, none missed, none doubled, all
/// succeeded — the dead instance's runs taken over when their leases pass — and each
/// user's device has exactly one result per agent in its queue.
///
/// The agents are created through a fourth process with the scheduler off; their daily
/// slot is then set to the last midnight (what a deployment that was down at midnight
/// finds), so the three schedulers start on a due slot without the test waiting for a
/// minute to turn.
#[test]
fn three_instances_run_a_thousand_due_slots_exactly_once_through_a_kill_9() {
    use adiuva_adapters::llm::fake::{FakeOpenAi, Reply};
    use adiuva_adapters::providers::fake::{FakeGoogle, FakeMail};
    use adiuva_core::domain::Tier;

    const USERS: usize = 10;
    const PER_USER: usize = 100;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let Some(pg) = rt.block_on(adiuva_adapters::postgres::testing::TestDatabase::create(
        "agents_kill",
    )) else {
        return;
    };
    let (google, model) = rt.block_on(async {
        let google = FakeGoogle::start().await.expect("fake Google");
        let model = FakeOpenAi::start().await.expect("fake model");
        (google, model)
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_millis() as i64;
    google.add_gmail_message(FakeMail::new(
        "Ann <ann@example.com>",
        "Quarterly figures",
        "Could you send the figures by Friday?",
        now - 60_000,
    ));
    // Slow enough that the kill lands while runs execute.
    model.set_handler(|_| {
        Some(
            Reply::text(r#"{"results":[{"type":"task","title":"Send Ann the figures"}]}"#)
                .delayed(Duration::from_millis(250)),
        )
    });
    let g = google.config();
    let secret = g.client_secret.expose().clone();
    let owned: Vec<(&str, String)> = vec![
        ("ADIUVA_DATABASE_URL", pg.url().to_owned()),
        ("ADIUVA_DEVICE_BUS_URL", "postgres".into()),
        ("ADIUVA_RATE_LIMIT_ENABLED", "false".into()),
        (
            "ADIUVA_JWT_SECRET",
            "kill-9-agents-secret-0123456789abcdef".into(),
        ),
        (
            "ADIUVA_OAUTH_TOKEN_KEY",
            "k1:00000000000000000000000000000000000000000000000000000000000000aa".into(),
        ),
        ("ADIUVA_GOOGLE_CLIENT_ID", g.client_id.clone()),
        ("ADIUVA_GOOGLE_CLIENT_SECRET", secret),
        ("ADIUVA_GOOGLE_AUTH_URL", g.auth_url.clone()),
        ("ADIUVA_GOOGLE_TOKEN_URL", g.token_url.clone()),
        ("ADIUVA_GMAIL_API_URL", g.gmail_api_url.clone()),
        ("ADIUVA_OPENAI_BASE_URL", model.url()),
        ("ADIUVA_OPENAI_API_KEY", "sk-fake".into()),
        ("ADIUVA_SCHEDULER_TICK_SECS", "1".into()),
        ("ADIUVA_AGENT_RUN_LEASE_SECS", "3".into()),
        ("ADIUVA_AGENT_MAX_CONCURRENT_RUNS", "8".into()),
    ];
    let mut env: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().expect("dir")).collect();
    env.push(("ADIUVA_SCHEDULER_ENABLED", "false"));
    let setup = serve(dirs[3].path(), &env);
    env.pop();

    let http = reqwest::Client::new();
    let db = rt.block_on(async {
        adiuva_adapters::database::AnyDatabase::connect(pg.url())
            .await
            .expect("the shared database")
            .port()
    });
    // Ten users, each with a registered (then offline) device, a Google token and 100
    // inbox agents.
    let mut agents = Vec::new();
    let mut users = Vec::new();
    rt.block_on(async {
        for u in 0..USERS {
            let email = format!("agents{u}@example.com");
            let token = register(&http, &setup, &email, "correct horse battery").await;
            let user = db
                .user_by_email(&adiuva_core::domain::Email::parse(&email).expect("email"))
                .await
                .expect("read")
                .expect("the user");
            db.set_tier(user.id, Tier::Team, now).await.expect("tier");
            users.push(user.id);
            let (ws, _) = device_hello(&setup, &token).await;
            drop(ws);
            let auth = format!("Bearer {token}");
            let consent: serde_json::Value = http
                .get(format!("{}/api/v1/oauth/google/authorize", setup.url))
                .header("authorization", &auth)
                .send()
                .await
                .expect("authorize")
                .json()
                .await
                .expect("json");
            let url = consent["authorization_url"].as_str().expect("url");
            let (code, state) = google.consent(url).expect("consent");
            let sealed: serde_json::Value = http
                // Both are URL-safe: the fake's code is `code-N-<hex>`, the state base64url.
                .get(format!(
                    "{}/api/v1/oauth/google/callback?code={code}&state={state}",
                    setup.url
                ))
                .send()
                .await
                .expect("callback")
                .json()
                .await
                .expect("json");
            let sealed = sealed["encrypted_token"]
                .as_str()
                .expect("token")
                .to_owned();
            let creates = (0..PER_USER).map(|i| {
                let body = serde_json::json!({
                    "name": format!("Inbox {i}"), "agent_type": "inbox_triage",
                    "provider": "google", "oauth_token_encrypted": sealed,
                    "schedule": "0 0 * * *", "timezone": "UTC",
                    "filters": {"query": "is:unread"}});
                let req = http
                    .post(format!("{}/api/v1/agents/cloud", setup.url))
                    .header("authorization", &auth)
                    .json(&body);
                async move {
                    let resp = req.send().await.expect("create");
                    assert_eq!(
                        resp.status(),
                        200,
                        "{}",
                        resp.text().await.unwrap_or_default()
                    );
                    let v: serde_json::Value = resp.json().await.expect("json");
                    uuid::Uuid::parse_str(v["id"].as_str().expect("id")).expect("uuid")
                }
            });
            agents.extend(futures::future::join_all(creates).await);
        }
    });
    assert_eq!(agents.len(), USERS * PER_USER);
    let mut setup = setup;
    signal(&setup.child, "TERM");
    wait_exit(&mut setup.child);
    // The last midnight: every agent's due slot.
    let slot = now - now.rem_euclid(86_400_000);
    rt.block_on(async {
        for id in &agents {
            let mut row = db.agent_by_id(*id).await.expect("read").expect("agent");
            assert!(row.next_run_at.is_some_and(|n| n > now), "scheduled ahead");
            row.next_run_at = Some(slot);
            db.update_agent(&row, Default::default())
                .await
                .expect("due");
        }
    });

    let mut servers: Vec<Server> = (0..3).map(|i| serve(dirs[i].path(), &env)).collect();
    let instance_of: Vec<uuid::Uuid> = servers
        .iter()
        .map(|s| uuid::Uuid::parse_str(&s.instance).expect("instance id"))
        .collect();
    // Kill the instance executing the most runs once a good part of the slot is done.
    let deadline = Instant::now() + Duration::from_secs(120);
    let victim = loop {
        let r = rt.block_on(slot_runs(&db, &agents, slot));
        let busiest = r.running_on.iter().max_by_key(|(_, n)| **n);
        if r.finished >= agents.len() / 5
            && let Some((instance, n)) = busiest
            && let Some(i) = instance_of.iter().position(|x| x == instance)
        {
            eprintln!(
                "kill -9 instance {i} holding {n} running runs; {} of {} finished",
                r.finished,
                agents.len()
            );
            break i;
        }
        assert!(
            r.finished < agents.len() && Instant::now() < deadline,
            "no moment with runs in flight to kill an instance in (finished {})",
            r.finished
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    kill_9(&mut servers[victim]);

    let deadline = Instant::now() + Duration::from_secs(180);
    let r = loop {
        let r = rt.block_on(slot_runs(&db, &agents, slot));
        if r.finished == agents.len() || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(
        r.once,
        agents.len(),
        "every agent has exactly one run for the slot"
    );
    assert_eq!(r.finished, agents.len(), "none missed");
    assert_eq!(r.succeeded, agents.len(), "all succeeded");
    assert!(
        r.taken_over > 0,
        "the killed instance's runs were taken over"
    );
    rt.block_on(async {
        let later = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_millis() as i64;
        for user in &users {
            let queued = db.queued_count(*user, "desk", later).await.expect("count");
            assert_eq!(queued, PER_USER as u64, "one result per agent, none twice");
        }
    });
    eprintln!(
        "{} runs, {} taken over after the kill; model calls {}",
        r.finished,
        r.taken_over,
        model.request_count()
    );
    for (i, mut s) in servers.into_iter().enumerate() {
        if i != victim {
            signal(&s.child, "TERM");
            wait_exit(&mut s.child);
        }
    }
    rt.block_on(pg.drop_now());
}
