//! Architecture Invariant: adiuva-core depends on no I/O crate.

use std::process::Command;

#[test]
fn core_depends_on_no_io_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "adiuva-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let forbidden = [
        "sqlx",
        "reqwest",
        "hyper",
        "poem",
        "object_store",
        "aws-sdk",
        "qdrant-client",
        "redis",
        "tonic",
        "mio",
        "async-stripe",
        "tokio-tungstenite",
    ];
    let names: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        names.contains(&"adiuva-core"),
        "the tree lists the crate itself: {tree}"
    );
    for bad in forbidden {
        assert!(
            !names
                .iter()
                .any(|n| *n == bad || n.starts_with(&format!("{bad}-"))),
            "adiuva-core must not depend on {bad} (found in its dependency tree)"
        );
    }
}
