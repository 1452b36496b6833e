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
                "/health" | "/auth/register" | "/auth/login" | "/auth/refresh"
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
