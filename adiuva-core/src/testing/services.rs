//! Tests that need an outside service (PostgreSQL, Redis, S3) or tool: run when it is
//! configured, say `SKIPPED` when it is not — and fail instead when
//! `ADIUVA_TEST_REQUIRE_SERVICES=1`, so CI cannot pass by skipping.

/// Whether missing services are failures (CI sets `ADIUVA_TEST_REQUIRE_SERVICES=1`).
pub fn services_required() -> bool {
    std::env::var("ADIUVA_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Reports that `what` is missing: panics when services are required, else prints
/// `SKIPPED` with `how` to provide it. The caller then returns.
pub fn missing(what: &str, how: &str) {
    assert!(
        !services_required(),
        "{what} is required (ADIUVA_TEST_REQUIRE_SERVICES=1) but missing: {how}"
    );
    eprintln!("SKIPPED: {what}: {how}");
}

/// The value of the environment variable `var` naming a service; `None` after
/// [`missing`] when it is unset.
pub fn service(var: &str, what: &str) -> Option<String> {
    let value = std::env::var(var).ok();
    if value.is_none() {
        missing(what, &format!("set {var}"));
    }
    value
}
