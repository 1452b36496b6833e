//! Each example builds (cargo builds examples for `cargo test`) and runs to completion.

use std::process::Command;

#[test]
fn embedded_runs() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
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
        .expect("cargo runs");
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
