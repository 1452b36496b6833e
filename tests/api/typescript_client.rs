//! The TypeScript client in `clients/typescript` against a live server: types generated
//! from the served OpenAPI and AsyncAPI documents, type-checked with `tsc --strict` and
//! a no-casts check, then run with node. It calls every REST operation and speaks both
//! chat WebSocket protocols and the device socket; the device's tool calls are answered
//! by the program.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use adiuva_adapters::llm::fake::Reply;
use serde_json::{Value, json};

use crate::chat::{SERVER_KEY, chat_app, fake_with, is_router, last_user, tool_script};
use crate::helpers::{PASSWORD, email};

/// The package, with its `node_modules` from `npm ci` (see `.ci/run`).
fn package() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/typescript")
}

fn node() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("node"))
            .find(|c| c.is_file())
    })
}

/// A copy of the package's sources in `dir`, sharing its installed `node_modules`: the
/// types are generated into the copy, so the test never writes into the repository.
fn workspace(dir: &Path) {
    let from = package();
    for file in ["package.json", "tsconfig.json"] {
        std::fs::copy(from.join(file), dir.join(file)).expect("copy package file");
    }
    for sub in ["scripts", "src"] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
        for entry in std::fs::read_dir(from.join(sub)).expect("read sources") {
            let path = entry.expect("entry").path();
            if path.is_file() {
                let name = path.file_name().expect("file name");
                std::fs::copy(&path, dir.join(sub).join(name)).expect("copy source");
            }
        }
    }
    #[cfg(unix)]
    std::os::unix::fs::symlink(from.join("node_modules"), dir.join("node_modules"))
        .expect("link node_modules");
}

fn run(what: &str, cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test]
async fn the_typescript_client_drives_every_operation_without_a_cast() {
    let bin = package().join("node_modules/.bin");
    let (Some(node), true) = (node(), bin.join("tsc").is_file()) else {
        return adiuva_core::testing::services::missing(
            "node and the clients/typescript packages",
            "install Node 20 and run `npm ci` in clients/typescript (.ci/run does)",
        );
    };
    // "run <tool>" routes to the tool's agent, which calls it once; a message asking to
    // "clarify" gets the router's question first; anything else (the plan requests) is
    // routed to the note agent.
    let fake = fake_with(|body: &Value| {
        if is_router(body)
            && last_user(body).contains("clarify")
            && !body.to_string().contains("Which project?")
        {
            return Some(Reply::ToolCalls(vec![(
                "ask_user_clarification".into(),
                json!({"question": "Which project?"}).to_string(),
            )]));
        }
        // The agents' setup journey (its request offers `finish_setup`).
        if let Some(reply) = crate::agents::journey_script(body) {
            return Some(reply);
        }
        tool_script(body).or_else(|| is_router(body).then(|| Reply::Text("note_agent".into())))
    })
    .await;
    let app = chat_app(&fake, Some(SERVER_KEY)).await;
    let account = email("ts");
    app.register_ok(&account).await;
    app.adiuva
        .accounts()
        .set_tier(&account, adiuva_core::domain::Tier::Pro)
        .await
        .expect("tier");

    let dir = tempfile::tempdir().expect("tempdir");
    workspace(dir.path());
    let server = app.address.clone();
    // Blocking work off the runtime that serves the program's requests.
    let (stdout, operations) = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || {
            let generated = run(
                "generate",
                Command::new(&node)
                    .current_dir(&dir)
                    .args(["scripts/generate.mjs", &server]),
            );
            assert!(String::from_utf8_lossy(&generated.stdout).contains("asyncapi.ts"));
            run(
                "the no-casts check",
                Command::new(&node)
                    .current_dir(&dir)
                    .arg("scripts/no-casts.mjs"),
            );
            run(
                "tsc --strict",
                Command::new(dir.join("node_modules/.bin/tsc"))
                    .current_dir(&dir)
                    .args(["-p", "."]),
            );
            let out = run(
                "the client program",
                Command::new(&node)
                    .current_dir(&dir)
                    .arg("dist/main.js")
                    .env("ADIUVA_URL", &server)
                    .env("ADIUVA_EMAIL", &account)
                    .env("ADIUVA_PASSWORD", PASSWORD),
            );
            let spec: Value =
                serde_json::from_str(&adiuva_server::api::openapi_json()).expect("spec");
            let ids: Vec<String> = spec["paths"]
                .as_object()
                .into_iter()
                .flatten()
                .flat_map(|(_, ops)| ops.as_object().into_iter().flatten())
                .filter_map(|(_, op)| op["operationId"].as_str().map(str::to_owned))
                .collect();
            (String::from_utf8_lossy(&out.stdout).into_owned(), ids)
        }
    })
    .await
    .expect("the client ran");

    let printed: Vec<&str> = stdout.lines().collect();
    assert!(operations.len() >= 19, "{operations:?}");
    for op in &operations {
        assert!(
            printed.contains(&format!("ok {op}").as_str()),
            "the program called `{op}`:\n{stdout}"
        );
    }
    for extra in [
        "ok get_record 304",
        "ok get_backup 304",
        "ok chat plan",
        "ok ws v1 chat_request",
        "ok ws v1 plan",
        "ok ws v2 user_request",
        "ok ws v2 ask_user_clarification",
        "ok ws v2 navigation",
        "ok ws error frame",
        "ok ws device hello_ack",
        "ok ws device ping",
        "ok ws device tool_call",
        "ok chat device_id",
        "ok ws device forgotten",
        "all operations ok",
    ] {
        assert!(printed.contains(&extra), "printed `{extra}`:\n{stdout}");
    }
}

/// The no-casts check finds each kind of cast (and leaves comparisons, negations,
/// strings and comments alone).
#[test]
fn the_no_casts_check_refuses_every_kind_of_cast() {
    let Some(node) = node() else {
        return adiuva_core::testing::services::missing("node", "install Node 20");
    };
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("scripts")).expect("mkdir");
    std::fs::create_dir_all(dir.path().join("src/generated")).expect("mkdir");
    std::fs::copy(
        package().join("scripts/no-casts.mjs"),
        dir.path().join("scripts/no-casts.mjs"),
    )
    .expect("copy");
    let check = |source: &str| {
        std::fs::write(dir.path().join("src/main.ts"), source).expect("write");
        Command::new(&node)
            .current_dir(dir.path())
            .arg("scripts/no-casts.mjs")
            .output()
            .expect("run the check")
    };
    // Generated code is not checked; the program's own code is.
    std::fs::write(
        dir.path().join("src/generated/openapi.ts"),
        "const x = y as T;\n",
    )
    .expect("write");
    let clean = check(
        "// a comment may say x as y\nconst a = b !== c;\nif (!d) {}\nconst s = \"as is\";\n",
    );
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    for cast in [
        "const a = b as string;",
        "const a = b as unknown;",
        "const a = <any>b;",
        "let a: any = 1;",
        "const a = b!.c;",
        "const a = f()!;",
    ] {
        let out = check(&format!("{cast}\n"));
        assert!(!out.status.success(), "`{cast}` is refused");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("src/main.ts:1"),
            "{cast}"
        );
    }
}
