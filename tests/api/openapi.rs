//! The OpenAPI document: served as printed, complete, valid, and usable to generate the
//! desktop app's TypeScript client.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::spawn_app;

async fn served_spec() -> Value {
    let app = spawn_app().await;
    let resp = app.get("/openapi.json").await;
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

#[tokio::test]
async fn the_served_document_is_the_printed_one() {
    let served = served_spec().await;
    let printed: Value = serde_json::from_str(&adiuva_server::api::openapi_json()).expect("json");
    assert_eq!(served, printed);
    assert_eq!(served["servers"][0]["url"], "/api/v1");
}

#[tokio::test]
async fn every_operation_is_documented() {
    let spec = served_spec().await;
    let paths = spec["paths"].as_object().expect("paths");
    let mut ids = Vec::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            let what = format!("{method} {path}");
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{what} has an operationId"));
            ids.push(id.to_owned());
            assert!(
                op["tags"].as_array().is_some_and(|t| !t.is_empty()),
                "{what} has a tag"
            );
            let responses = op["responses"].as_object().expect("responses");
            let public = matches!(
                path.as_str(),
                "/health"
                    | "/auth/register"
                    | "/auth/login"
                    | "/auth/refresh"
                    | "/oauth/{provider}/callback"
            );
            if public {
                assert!(op.get("security").is_none(), "{what} needs no auth");
            } else {
                let sec = op["security"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{what} declares security"));
                assert!(
                    sec.iter().any(|s| s.get("BearerAuth").is_some()),
                    "{what} uses the bearer scheme"
                );
                assert!(responses.contains_key("401"), "{what} documents 401");
            }
            if path != "/health" {
                for code in ["500", "503"] {
                    assert!(responses.contains_key(code), "{what} documents {code}");
                }
                for (code, r) in responses
                    .iter()
                    .filter(|(c, _)| c.starts_with('4') || c.starts_with('5'))
                {
                    let schema = r["content"]["application/json; charset=utf-8"]["schema"]["$ref"]
                        .as_str()
                        .unwrap_or_default();
                    // An ErrorBody, or a body that extends it (the chat's 504 adds
                    // `partial_response`): `detail` and `code` are always there.
                    let name = schema.trim_start_matches("#/components/schemas/");
                    let required = &spec["components"]["schemas"][name]["required"];
                    assert!(
                        schema == "#/components/schemas/ErrorBody"
                            || ["detail", "code"].iter().all(|f| required
                                .as_array()
                                .is_some_and(|r| r.contains(&json!(f)))),
                        "{what} {code} is an ErrorBody or extends it ({schema})"
                    );
                }
            }
            let json_body = op["requestBody"]["content"]
                .as_object()
                .is_some_and(|c| c.keys().any(|k| k.starts_with("application/json")));
            if op.get("requestBody").is_some() {
                assert!(responses.contains_key("422"), "{what} documents 422");
            }
            if json_body {
                for code in ["413", "415", "422"] {
                    assert!(responses.contains_key(code), "{what} documents {code}");
                }
            }
        }
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "operationIds are unique: {ids:?}");
    for expected in ["health", "register", "login", "refresh", "me"] {
        assert!(ids.iter().any(|i| i == expected), "{expected} present");
    }
    let scheme = &spec["components"]["securitySchemes"]["BearerAuth"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
}

/// What a generated client needs to go without casts (issue 10, item 4): optional
/// defaults, byte and binary formats, nullable fields, real schemas for the chat's
/// `context` and `scope`, enums, a discriminated `ChatAnswer`, `Retry-After` on every
/// 429, and no error response an operation never returns.
#[tokio::test]
async fn the_document_types_what_clients_need() {
    let spec = served_spec().await;
    let schemas = &spec["components"]["schemas"];
    let prop = |schema: &str, field: &str| schemas[schema]["properties"][field].clone();
    let required = |schema: &str, field: &str| {
        schemas[schema]["required"]
            .as_array()
            .is_some_and(|r| r.contains(&json!(field)))
    };
    let refers = |v: &Value, to: &str| {
        v.to_string()
            .contains(&format!("#/components/schemas/{to}\""))
    };

    // Server defaults are optional, and carry no schema `default` (generators make a
    // field with a default required).
    for (schema, field) in [
        ("VectorSearchRequest", "top_k"),
        ("ChatPostIn", "execution_mode"),
    ] {
        assert!(!required(schema, field), "{schema}.{field} is optional");
        assert!(
            prop(schema, field).get("default").is_none(),
            "{schema}.{field} has no default"
        );
    }
    // Base64 is `byte`; raw bodies and downloads are `binary`.
    for (schema, field) in [
        ("StorageRecordCreate", "blob"),
        ("StorageRecordUpdate", "blob"),
        ("VectorItem", "blob"),
        ("VectorSearchRequest", "query_blob"),
        ("VectorSearchResult", "blob"),
    ] {
        assert_eq!(prop(schema, field)["format"], "byte", "{schema}.{field}");
    }
    let octet = |v: &Value| v["content"]["application/octet-stream"]["schema"]["format"].clone();
    assert_eq!(
        octet(&spec["paths"]["/backup"]["put"]["requestBody"]),
        "binary"
    );
    assert_eq!(
        octet(&spec["paths"]["/backup"]["get"]["responses"]["200"]),
        "binary"
    );
    assert_eq!(
        octet(&spec["paths"]["/storage/records/{id}"]["get"]["responses"]["200"]),
        "binary"
    );
    // Fields the server sends as null are nullable.
    for (schema, field) in [
        ("PlanActionOut", "table"),
        ("PlanActionOut", "data"),
        ("PlanActionOut", "agent"),
        ("PlanStepOut", "prompt_template"),
        ("PlanStepOut", "variables"),
        ("PlanStepOut", "data_from_step"),
    ] {
        assert_eq!(prop(schema, field)["nullable"], true, "{schema}.{field}");
    }
    // `data` and `variables` are objects; `context` and `scope` have real schemas.
    assert_eq!(prop("PlanActionOut", "data")["type"], "object");
    assert_eq!(prop("PlanStepOut", "variables")["type"], "object");
    assert!(refers(&prop("ChatPostIn", "context"), "ChatContext"));
    assert!(refers(&prop("ChatPostIn", "scope"), "ChatScope"));
    for (field, item) in [
        ("recent_tasks", "ContextTask"),
        ("notes", "ContextNote"),
        ("projects", "ContextProject"),
        ("checkpoints", "ContextCheckpoint"),
        ("task_comments", "ContextTaskComment"),
        ("conversation_history", "ConversationTurn"),
    ] {
        assert!(
            refers(&prop("ChatContext", field)["items"], item),
            "ChatContext.{field}"
        );
    }
    // Closed sets are enums.
    for (schema, field, enumeration) in [
        ("PlaybookOut", "min_tier", "BillingTier"),
        ("PlanActionOut", "type", "ActionType"),
        ("ChatPostIn", "source", "ChatSource"),
        ("Health", "status", "HealthStatus"),
        ("Health", "database", "HealthStatus"),
    ] {
        assert!(
            refers(&prop(schema, field), enumeration),
            "{schema}.{field}"
        );
        assert!(schemas[enumeration]["enum"].is_array(), "{enumeration}");
    }
    assert_eq!(
        schemas["ActionType"]["enum"],
        json!([
            "create_record",
            "update_record",
            "delete_record",
            "index_document",
            "send_notification",
            "call_agent"
        ])
    );
    // The chat's answer says which one it is.
    assert_eq!(
        schemas["ChatAnswer"]["discriminator"]["propertyName"],
        "mode"
    );
    for mode in ["direct", "plan"] {
        assert!(
            schemas["ChatAnswer"]["discriminator"]["mapping"][mode].is_string(),
            "{mode}"
        );
    }
    // Every 429 says when to retry; records answer 304 to If-None-Match.
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            if let Some(r) = op["responses"].get("429") {
                assert!(
                    r["headers"].get("RETRY-AFTER").is_some(),
                    "{method} {path} 429 Retry-After"
                );
            }
        }
    }
    let get_record = &spec["paths"]["/storage/records/{id}"]["get"];
    assert!(
        get_record["responses"]["304"]["headers"]
            .get("ETAG")
            .is_some()
    );
    assert!(
        get_record["parameters"]
            .to_string()
            .contains("If-None-Match")
    );
    // No error response an operation never returns.
    for (path, method, status) in [
        ("/storage/records", "post", "404"),
        ("/storage/records", "post", "409"),
        ("/storage/records", "get", "404"),
        ("/storage/records", "get", "409"),
        ("/storage/records/{id}", "get", "422"),
        ("/storage/records/{id}", "delete", "409"),
        ("/storage/records/{id}", "delete", "422"),
        ("/backup/history", "get", "404"),
        ("/backup/history", "get", "409"),
        ("/backup/{id}", "delete", "409"),
        ("/plans/playbook", "get", "403"),
        ("/plans/playbook", "get", "404"),
    ] {
        assert!(
            spec["paths"][path][method]["responses"]
                .get(status)
                .is_none(),
            "{method} {path} never answers {status}"
        );
    }
}

/// The codes the document lists for `method path` answering `status`.
fn documented_codes(spec: &Value, method: &str, path: &str, status: u16) -> Vec<String> {
    let response = &spec["paths"][path][method]["responses"][status.to_string()];
    let schema = response["content"]["application/json; charset=utf-8"]["schema"]["$ref"]
        .as_str()
        .unwrap_or_else(|| panic!("{method} {path} documents {status}"));
    let name = schema.trim_start_matches("#/components/schemas/");
    spec["components"]["schemas"][name]["properties"]["code"]["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("{name} lists its codes"))
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect()
}

/// Real error answers of each kind (core errors, poem's parse and auth errors, the body
/// limit's) carry a code their operation's document lists for that status.
#[tokio::test]
async fn error_codes_are_the_documented_ones() {
    let app = spawn_app().await;
    let spec: Value = app.get("/openapi.json").await.json().await.expect("json");
    let user = crate::helpers::email("codes");
    let token = app.register_ok(&user).await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let id = uuid::Uuid::new_v4();
    let c = &app.client;
    let cases: Vec<(&str, &str, reqwest::RequestBuilder)> = vec![
        ("post", "/auth/register", c.post(app.url("/auth/register")).json(&json!({"email": user, "password": crate::helpers::PASSWORD}))),
        ("post", "/auth/register", c.post(app.url("/auth/register")).header("content-type", "application/json").body("{")),
        ("post", "/auth/register", c.post(app.url("/auth/register")).header("content-type", "text/plain").body("x")),
        ("post", "/auth/login", c.post(app.url("/auth/login")).json(&json!({"email": user, "password": "wrong password!"}))),
        ("get", "/auth/me", c.get(app.url("/auth/me"))),
        ("post", "/storage/records", c.post(app.url("/storage/records")).bearer_auth(&token).json(&json!({"table": "notes", "blob": "AA==", "checksum": "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"}))),
        ("get", "/storage/records", c.get(app.url("/storage/records?limit=0")).bearer_auth(&token)),
        ("get", "/storage/records/{id}", c.get(app.url(&format!("/storage/records/{id}"))).bearer_auth(&token)),
        ("delete", "/storage/records/{id}", c.delete(app.url(&format!("/storage/records/{id}"))).bearer_auth(&token)),
        ("post", "/storage/vectors/search", c.post(app.url("/storage/vectors/search")).bearer_auth(&token).json(&json!({}))),
        ("get", "/backup", c.get(app.url("/backup")).bearer_auth(&token)),
        ("delete", "/backup/{id}", c.delete(app.url(&format!("/backup/{id}"))).bearer_auth(&token)),
        ("post", "/chat", c.post(app.url("/chat")).bearer_auth(&token).json(&json!({"message": "hi"}))),
        ("post", "/chat", c.post(app.url("/chat")).bearer_auth(&token).json(&json!({"message": "hi", "context": []}))),
        ("post", "/agents/local", c.post(app.url("/agents/local")).bearer_auth(&token).json(&json!({"name": "", "agent_type": "weekly_review"}))),
        ("put", "/agents/local/{id}", c.put(app.url(&format!("/agents/local/{id}"))).bearer_auth(&token).json(&json!({"name": "x"}))),
        ("delete", "/agents/cloud/{id}", c.delete(app.url(&format!("/agents/cloud/{id}"))).bearer_auth(&token)),
        ("post", "/agents/{id}/run", c.post(app.url(&format!("/agents/{id}/run"))).bearer_auth(&token)),
        ("get", "/agents/runs", c.get(app.url("/agents/runs?limit=0")).bearer_auth(&token)),
        ("post", "/agents/journey/message", c.post(app.url("/agents/journey/message")).bearer_auth(&token).json(&json!({"session_id": id, "message": "hi"}))),
        ("get", "/oauth/{provider}/authorize", c.get(app.url("/oauth/google/authorize")).bearer_auth(&token)),
        ("get", "/oauth/{provider}/authorize", c.get(app.url("/oauth/yahoo/authorize")).bearer_auth(&token)),
        ("get", "/oauth/{provider}/callback", c.get(app.url("/oauth/google/callback?error=access_denied"))),
        ("post", "/oauth/{provider}/refresh", c.post(app.url("/oauth/google/refresh")).bearer_auth(&token).json(&json!({"encrypted_token": "x"}))),
    ];
    for (method, path, req) in cases {
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.expect("JSON error body");
        assert!(status >= 400, "{method} {path}: {status} {body}");
        let code = body["code"].as_str().expect("code");
        let listed = documented_codes(&spec, method, path, status);
        assert!(
            listed.iter().any(|c| c == code),
            "{method} {path} {status}: `{code}` is not among {listed:?}"
        );
    }
}

fn skip(what: &str) {
    adiuva_core::testing::services::missing(what, "not found; run .ci/run or install it");
}

fn write_spec(dir: &Path) -> PathBuf {
    let path = dir.join("openapi.json");
    std::fs::write(&path, adiuva_server::api::openapi_json()).expect("write spec");
    path
}

fn find_on_path(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|c| c.is_file())
    })
}

fn node_tools() -> PathBuf {
    std::env::var_os("ADIUVA_TEST_NODE_TOOLS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/typescript/node_modules/.bin"),
        PathBuf::from,
    )
}

#[test]
fn a_real_validator_accepts_the_document() {
    let Some(validator) = find_on_path("openapi-spec-validator") else {
        return skip("openapi-spec-validator (PyPI)");
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = write_spec(dir.path());
    let out = Command::new(validator)
        .arg(&spec)
        .output()
        .expect("run validator");
    assert!(
        out.status.success(),
        "openapi-spec-validator rejected the document:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_generated_typescript_client_type_checks() {
    let bin = node_tools();
    let (generator, tsc) = (bin.join("openapi-typescript"), bin.join("tsc"));
    if !generator.is_file() || !tsc.is_file() {
        return skip(
            "openapi-typescript and tsc (npm, installed by .ci/run into clients/typescript)",
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = write_spec(dir.path());
    let schema = dir.path().join("schema.d.ts");
    let out = Command::new(&generator)
        .arg(&spec)
        .arg("-o")
        .arg(&schema)
        .output()
        .expect("run openapi-typescript");
    assert!(
        out.status.success(),
        "openapi-typescript failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A client module that uses the generated types the way the desktop app does.
    let client = dir.path().join("client.ts");
    std::fs::write(
        &client,
        r#"import type { paths, components } from "./schema";
type Tokens = components["schemas"]["AuthTokens"];
type Profile = components["schemas"]["UserProfile"];
type ErrorBody = components["schemas"]["ErrorBody"];
type LoginBody = paths["/auth/login"]["post"]["requestBody"]["content"]["application/json; charset=utf-8"];
type MeOk = paths["/auth/me"]["get"]["responses"][200]["content"]["application/json; charset=utf-8"];
type Conflict = paths["/auth/register"]["post"]["responses"][409]["content"]["application/json; charset=utf-8"];
const login: LoginBody = { email: "a@example.com", password: "0123456789" };
const tokens: Tokens = { access_token: "a", refresh_token: "r", expires_at: 1 };
const me: MeOk = { id: "x", email: "a@example.com", tier: "free", role: "user", created_at: 1 };
const profile: Profile = me;
const err: ErrorBody = { detail: "d", code: "c" };
// Each response's codes are a closed set; a coded body is still an ErrorBody.
const conflict: Conflict = { detail: "d", code: "conflict" };
const asError: ErrorBody = conflict;
// @ts-expect-error a code the operation does not answer with
const badCode: Conflict["code"] = "teapot";
// @ts-expect-error tiers are a closed set
const badTier: Profile["tier"] = "gold";
export { login, tokens, profile, err, conflict, asError, badCode, badTier };
"#,
    )
    .expect("write client");
    let out = Command::new(&tsc)
        .args([
            "--noEmit",
            "--strict",
            "--target",
            "es2022",
            "--module",
            "es2022",
            "--moduleResolution",
            "bundler",
        ])
        .arg(&client)
        .output()
        .expect("run tsc");
    assert!(
        out.status.success(),
        "tsc rejected the generated client:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
