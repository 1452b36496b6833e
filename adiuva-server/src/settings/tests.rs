//! Unit tests of loading and of the generated documents.

use std::collections::HashMap;

use super::declare::SetError;
use super::*;

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

/// Defaults and these variables (no file, no flags).
fn load(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    Settings::load_from(&Overrides::default(), env(pairs))
}

#[test]
fn every_default_parses() {
    let mut s = Settings::defaults();
    for k in KEYS {
        s.set(k.key, &(k.default)())
            .unwrap_or_else(|e| panic!("default of {}: {e}", k.key));
    }
}

#[test]
fn every_key_is_settable_and_documented_in_both_examples() {
    let (env_ex, toml_ex) = (Settings::example_env(), Settings::example_toml());
    for k in KEYS {
        assert!(
            env_ex.contains(&format!("{}=", k.env[0])),
            "{} in .env example",
            k.key
        );
        assert!(
            toml_ex.contains(&format!("# {} =", k.key)),
            "{} in toml example",
            k.key
        );
    }
    let mut s = Settings::defaults();
    assert!(s.set("no_such_key", "x").is_err());
}

#[test]
fn layers_file_then_env_then_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("adiuva.toml");
    std::fs::write(&file, "bind = \"127.0.0.1:9000\"\nbody_limit_bytes = 100\ncors_origins = [\"https://a.example\", \"https://b.example\"]\nenv = \"prod\"\n").expect("write");
    let over = Overrides {
        config_file: Some(file),
        ..Default::default()
    };
    let s = Settings::load_from(
        &over,
        env(&[
            ("ADIUVA_BODY_LIMIT_BYTES", "200"),
            ("JWT_SECRET", "s3cr3t-s3cr3t"),
        ]),
    )
    .expect("load");
    assert_eq!(s.bind.port(), 9000, "file beats default");
    assert_eq!(s.body_limit_bytes, 200, "env beats file");
    assert_eq!(
        s.cors_origins,
        vec!["https://a.example", "https://b.example"]
    );
    assert_eq!(s.env, Environment::Prod);
    assert_eq!(s.effective_log_format(), LogFormat::Json);
    assert_eq!(
        s.jwt_secret.as_ref().map(|s| s.expose().as_str()),
        Some("s3cr3t-s3cr3t")
    );
    let over = Overrides {
        bind: Some("127.0.0.1:1".parse().expect("addr")),
        ..over
    };
    assert_eq!(
        Settings::load_from(&over, env(&[]))
            .expect("load")
            .bind
            .port(),
        1,
        "flags beat all"
    );
}

#[test]
fn adiuva_prefixed_names_beat_plan_names() {
    let s = load(&[
        ("DATABASE_URL", "sqlite://a.db"),
        ("ADIUVA_DATABASE_URL", "sqlite://b.db"),
    ])
    .expect("load");
    assert_eq!(s.database_url(), "sqlite://b.db");
}

#[test]
fn bad_values_name_the_key() {
    let e = load(&[("JWT_ALGORITHM", "RS256")]).unwrap_err();
    assert!(e.to_string().contains("JWT_ALGORITHM"), "{e}");
    let e = load(&[("ADIUVA_BODY_LIMIT_BYTES", "lots")]).unwrap_err();
    assert!(e.to_string().contains("body_limit_bytes"), "{e}");
    let over = Overrides {
        config_file: Some("/nonexistent/adiuva.toml".into()),
        ..Default::default()
    };
    assert!(Settings::load_from(&over, env(&[])).is_err());
}

#[test]
fn secrets_never_print() {
    let s = load(&[
        ("JWT_SECRET", "topsecret-value-123"),
        ("OPENAI_API_KEY", "sk-live-abc"),
        ("DATABASE_URL", "postgres://u:pw-xyz@db/adiuva"),
    ])
    .expect("load");
    let dbg = format!("{s:?}");
    for leaked in ["topsecret-value-123", "sk-live-abc", "pw-xyz"] {
        assert!(!dbg.contains(leaked), "{leaked} leaked into Debug: {dbg}");
    }
    assert!(dbg.contains("u:***@db"));
}

#[test]
fn dev_secret_is_generated_once_and_prod_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Settings::for_data_dir(dir.path());
    let a = s.resolve_jwt_secret().expect("generated");
    let b = s.resolve_jwt_secret().expect("kept");
    assert_eq!(a.expose(), b.expose());
    assert!(a.expose().len() >= 32);
    let mut p = Settings::for_data_dir(dir.path());
    p.env = Environment::Prod;
    let e = p.resolve_jwt_secret().unwrap_err();
    assert!(e.to_string().contains("JWT_SECRET is required"), "{e}");
}

#[test]
fn keys_and_variables_are_declared_once() {
    let mut seen = std::collections::HashSet::new();
    for k in KEYS {
        assert!(seen.insert(k.key), "key {} declared twice", k.key);
        for e in k.env {
            assert!(seen.insert(e), "variable {e} named twice");
        }
    }
}

#[test]
fn every_key_appears_exactly_once_in_each_document() {
    let (env_ex, toml_ex, md) = (
        Settings::example_env(),
        Settings::example_toml(),
        Settings::example_markdown(),
    );
    let count = |text: &str, needle: &str| text.matches(needle).count();
    for k in KEYS {
        assert_eq!(count(&env_ex, &format!("\n{}=", k.env[0])), 1, "{}", k.key);
        assert_eq!(count(&toml_ex, &format!("\n# {} =", k.key)), 1, "{}", k.key);
        assert_eq!(count(&md, &format!("\n| `{}` |", k.key)), 1, "{}", k.key);
    }
    assert_eq!(
        env_ex
            .lines()
            .filter(|l| l.contains('=') && !l.starts_with('#'))
            .count(),
        KEYS.len()
    );
    assert_eq!(
        md.lines().count(),
        KEYS.len() + 2,
        "header, rule, one row per key"
    );
    assert!(
        md.contains("| `jwt_secret` | `ADIUVA_JWT_SECRET`, `JWT_SECRET` | — |"),
        "{md}"
    );
    assert!(
        md.contains("| `body_limit_bytes` | `ADIUVA_BODY_LIMIT_BYTES` | `10485760` |"),
        "{md}"
    );
}

#[test]
fn show_prints_every_key_and_never_a_secret() {
    let secrets: Vec<(&str, String)> = KEYS
        .iter()
        .filter(|k| k.secret)
        .map(|k| (k.env[0], format!("secret-{}-value", k.key)))
        .collect();
    assert!(
        secrets.len() >= 9,
        "jwt, openai, cerebras, stripe x2, aws x2, pinecone, qdrant"
    );
    let mut pairs: Vec<(&str, &str)> = secrets.iter().map(|(n, v)| (*n, v.as_str())).collect();
    pairs.push(("DATABASE_URL", "postgres://u:pw-xyz@db/adiuva"));
    pairs.push(("REDIS_URL", "redis://:redis-pw@cache:6379"));
    pairs.push(("ADIUVA_BODY_LIMIT_BYTES", "4096"));
    let s = load(&pairs).expect("load");
    let shown = s.show();
    for (_, leaked) in &pairs[..secrets.len()] {
        assert!(!shown.contains(leaked), "{leaked} leaked: {shown}");
    }
    assert!(
        !shown.contains("pw-xyz") && !shown.contains("redis-pw"),
        "{shown}"
    );
    for k in KEYS.iter().filter(|k| k.secret) {
        assert!(
            shown.contains(&format!("\n{} = \"***\"\n", k.key)),
            "{}: {shown}",
            k.key
        );
    }
    assert!(
        shown.contains("database_url = \"postgres://u:***@db/adiuva\""),
        "{shown}"
    );
    assert!(shown.contains("body_limit_bytes = 4096\n"), "{shown}");
    assert!(shown.contains("# s3_bucket (unset)\n"), "{shown}");
    for k in KEYS {
        let lines = shown
            .lines()
            .filter(|l| {
                l.starts_with(&format!("{} =", k.key)) || *l == format!("# {} (unset)", k.key)
            })
            .count();
        assert_eq!(lines, 1, "{}: {shown}", k.key);
    }
}

#[test]
fn parse_errors_name_the_key_from_env_and_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut typed = 0;
    for k in KEYS {
        // Text no typed setting accepts; free-text settings take it and are skipped.
        if Settings::defaults().set(k.key, "not a value!").is_ok() {
            continue;
        }
        typed += 1;
        let e = load(&[(k.env[0], "not a value!")]).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{} (from ${}) must be", k.key, k.env[0])),
            "{e}"
        );
        let file = dir.path().join(format!("{}.toml", k.key));
        std::fs::write(&file, format!("{} = \"not a value!\"\n", k.key)).expect("write");
        let over = Overrides {
            config_file: Some(file.clone()),
            ..Default::default()
        };
        let e = Settings::load_from(&over, env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("{}.toml: {} must be", k.key, k.key)),
            "{e}"
        );
    }
    assert!(typed >= 25, "numbers, flags, addresses and enums: {typed}");
    let e = load(&[("ADIUVA_MODEL_CONTEXT_TOKENS", "100")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model_context_tokens (from $ADIUVA_MODEL_CONTEXT_TOKENS) must be at least 512 (the assistant's"),
        "{e}"
    );
    let e = Settings::defaults()
        .set("backup_retention", "0")
        .unwrap_err()
        .to_string();
    assert_eq!(e, "backup_retention must be at least 1");
    assert!(matches!(
        Settings::defaults().set_text("nope", "1"),
        Err(SetError::Unknown)
    ));
}

#[test]
fn defaults_shared_with_core_and_adapters_are_theirs() {
    let s = Settings::for_data_dir(".");
    assert_eq!(
        s.chat_limits(),
        adiuva_core::chat::orchestrator::ChatLimits::default()
    );
    assert_eq!(
        s.model_roles(),
        adiuva_core::chat::orchestrator::ModelRoles::default()
    );
    let adapter = adiuva_adapters::llm::openai::OpenAiConfig::default();
    assert_eq!(s.llm_config().cerebras_base_url, adapter.cerebras_base_url);
    assert_eq!(s.llm_config().base_url, adapter.base_url);
    assert_eq!(
        s.pinecone_controller_url,
        adiuva_adapters::vector::pinecone::DEFAULT_CONTROLLER_URL
    );
    assert_eq!(s.backup_retention, adiuva_core::backup::DEFAULT_RETENTION);
    assert_eq!(s.quota_gb_bytes, adiuva_core::tiers::GIB);
}

#[test]
fn device_defaults_are_cores_and_the_call_timeout_is_the_tool_timeout() {
    let s = Settings::for_data_dir(".");
    let (got, core) = (
        s.device_config(),
        adiuva_core::devices::DeviceConfig::default(),
    );
    assert_eq!(got.presence_ttl, core.presence_ttl);
    assert_eq!(got.queue_max_frames, core.queue_max_frames);
    assert_eq!(got.queue_max_age, core.queue_max_age);
    assert_eq!(got.max_devices_per_user, core.max_devices_per_user);
    assert_eq!(got.call_timeout.as_secs(), s.chat_tool_timeout_secs);
}

#[test]
fn the_device_bus_follows_device_bus_url_then_redis_url() {
    // Which forms are served, and the errors of the others, are `device_bus::connect`'s
    // (adapters' `connect_refuses_what_it_cannot_serve_and_says_why`).
    let bus = |pairs: &[(&str, &str)]| load(pairs).expect("loads").device_bus_url();
    assert_eq!(bus(&[]), "memory");
    let redis = "redis://:pw@cache:6379";
    assert_eq!(bus(&[("ADIUVA_REDIS_URL", redis)]), redis);
    assert_eq!(
        bus(&[
            ("ADIUVA_REDIS_URL", redis),
            ("ADIUVA_DEVICE_BUS_URL", "memory")
        ]),
        "memory"
    );
    let pg = "postgres://u:secret@db/adiuva";
    assert_eq!(bus(&[("ADIUVA_DEVICE_BUS_URL", pg)]), pg);
    assert_eq!(
        bus(&[
            ("ADIUVA_REDIS_URL", redis),
            ("ADIUVA_DEVICE_BUS_URL", " postgres ")
        ]),
        "postgres"
    );
    // Shown redacted.
    let s = load(&[("ADIUVA_DEVICE_BUS_URL", pg)]).expect("loads");
    let shown = s.shown().into_iter().find(|(k, _)| *k == "device_bus_url");
    assert!(shown.is_some_and(|(_, v)| v.is_some_and(|v| !v.contains("secret"))));
}

#[test]
fn agent_defaults_are_cores_and_the_model_is_the_agent_model() {
    let s = load(&[("AGENT_MODEL", "cerebras/llama")]).expect("load");
    let (got, core) = (
        s.agents_config(),
        adiuva_core::agents::AgentsConfig::default(),
    );
    assert_eq!(got.tick, core.tick);
    assert_eq!(got.lease, core.lease);
    assert_eq!(got.local_timeout, core.local_timeout);
    assert_eq!(got.journey_ttl, core.journey_ttl);
    assert_eq!(got.max_items_per_run, core.max_items_per_run);
    assert_eq!(got.max_concurrent_runs, core.max_concurrent_runs);
    assert_eq!(got.redirect_base_url, "http://localhost:8000");
    assert_eq!(got.model, "cerebras/llama");
    assert_eq!(got.max_tokens, s.agent_max_tokens);
    assert!(s.scheduler_enabled);
    let s = load(&[
        ("ADIUVA_SCHEDULER_TICK_SECS", "5"),
        ("OAUTH_REDIRECT_BASE_URL", "https://adiuva.example/"),
        ("ADIUVA_SCHEDULER_ENABLED", "false"),
    ])
    .expect("load");
    assert_eq!(s.agents_config().tick.as_secs(), 5);
    assert_eq!(
        s.agents_config().redirect_base_url,
        "https://adiuva.example",
        "no double slash before /api/v1"
    );
    assert!(!s.scheduler_enabled);
    for (var, v) in [
        ("ADIUVA_SCHEDULER_TICK_SECS", "0"),
        ("ADIUVA_AGENT_RUN_LEASE_SECS", "2"),
        ("ADIUVA_AGENT_MAX_CONCURRENT_RUNS", "0"),
    ] {
        let e = load(&[(var, v)]).unwrap_err().to_string();
        assert!(e.contains("must be at least"), "{var}: {e}");
    }
}

#[test]
fn providers_are_configured_only_with_a_client_id_and_default_to_the_real_endpoints() {
    let s = load(&[]).expect("load");
    assert!(s.google_config().is_none());
    assert!(s.microsoft_config().is_none());
    let key = "ab".repeat(32);
    let s = load(&[
        ("GOOGLE_CLIENT_ID", "g-id"),
        ("GOOGLE_CLIENT_SECRET", "g-secret-value"),
        ("MICROSOFT_CLIENT_ID", "m-id"),
        ("ADIUVA_MICROSOFT_CLIENT_SECRET", "m-secret-value"),
        ("OAUTH_TOKEN_KEY", key.as_str()),
    ])
    .expect("load");
    let g = s.google_config().expect("google");
    assert_eq!(g.client_id, "g-id");
    assert_eq!(g.client_secret.expose(), "g-secret-value");
    assert_eq!(g.auth_url, adiuva_adapters::providers::GOOGLE_AUTH_URL);
    assert_eq!(g.token_url, adiuva_adapters::providers::GOOGLE_TOKEN_URL);
    assert_eq!(g.gmail_api_url, adiuva_adapters::providers::GMAIL_API_URL);
    let m = s.microsoft_config().expect("microsoft");
    assert_eq!(m.client_id, "m-id");
    assert_eq!(m.client_secret.expose(), "m-secret-value");
    assert_eq!(
        m.authority_url,
        adiuva_adapters::providers::MICROSOFT_AUTHORITY_URL
    );
    assert_eq!(m.graph_url, adiuva_adapters::providers::MS_GRAPH_URL);
    let dbg = format!("{s:?}{g:?}{m:?}");
    let shown = format!("{:?}", s.shown());
    for leaked in ["g-secret-value", "m-secret-value", key.as_str()] {
        assert!(!dbg.contains(leaked), "{leaked} leaked into Debug");
        assert!(!shown.contains(leaked), "{leaked} shown");
    }
}

#[test]
fn the_oauth_key_is_generated_once_in_dev_required_in_prod_and_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Settings::for_data_dir(dir.path());
    let a = s.resolve_oauth_keyring().expect("generated");
    let b = s.resolve_oauth_keyring().expect("kept");
    // The same key: what one seals, the other opens.
    let sealed = a.seal(adiuva_core::seal::Purpose::OAuthToken, b"x");
    assert_eq!(
        b.open(adiuva_core::seal::Purpose::OAuthToken, &sealed)
            .expect("opens"),
        b"x"
    );
    assert!(dir.path().join("oauth_token_key").is_file());
    let mut p = Settings::for_data_dir(dir.path());
    p.env = Environment::Prod;
    let e = p.resolve_oauth_keyring().unwrap_err();
    assert!(e.to_string().contains("OAUTH_TOKEN_KEY is required"), "{e}");
    let bad = "not-a-key-but-secretish";
    let e = load(&[("OAUTH_TOKEN_KEY", bad)])
        .expect("loads")
        .resolve_oauth_keyring()
        .unwrap_err()
        .to_string();
    assert!(e.contains("oauth_token_key"), "{e}");
    assert!(!e.contains(bad), "the key is never in the error: {e}");
}
