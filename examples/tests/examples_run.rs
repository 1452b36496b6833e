//! Each example builds (cargo builds examples for `cargo test`) and runs to completion.

use std::process::Command;

/// The example binary `cargo test` already built beside this test (`target/<profile>/
/// examples/`); `cargo run` would resolve the example's features alone and rebuild the
/// whole tree a second time (about 150 s of CI on two cores).
fn built_example(name: &str) -> Option<std::path::PathBuf> {
    let deps = std::env::current_exe().ok()?.parent()?.to_path_buf();
    let path = deps.parent()?.join("examples").join(name);
    path.is_file().then_some(path)
}

#[test]
fn embedded_runs() {
    let out = match built_example("embedded") {
        Some(path) => Command::new(path).output().expect("the example runs"),
        None => {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            Command::new(cargo)
                .args([
                    "run",
                    "--quiet",
                    "--offline",
                    "-p",
                    "adiuva-examples",
                    "--example",
                    "embedded",
                ])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .expect("cargo runs")
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the example failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("registered and logged in ada@example.com"),
        "{stdout}"
    );
    assert!(stdout.contains("tier free"), "{stdout}");
}
