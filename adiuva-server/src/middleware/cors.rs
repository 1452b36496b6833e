//! CORS: the desktop app's `app://…` origins and `http://localhost:<any port>` are always
//! allowed; others only when configured.

use poem::http::Method;
use poem::middleware::Cors;

use super::REQUEST_ID_HEADER;

/// Whether `origin` is one the desktop app or a local dev server uses.
pub fn is_builtin_origin(origin: &str) -> bool {
    if let Some(rest) = origin.strip_prefix("app://") {
        return !rest.is_empty();
    }
    for host in ["http://localhost", "http://127.0.0.1"] {
        if let Some(rest) = origin.strip_prefix(host) {
            return rest.is_empty()
                || rest.strip_prefix(':').is_some_and(|p| {
                    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
                });
        }
    }
    false
}

/// The CORS middleware for these extra origins.
pub fn cors(extra: &[String]) -> Cors {
    let extra: Vec<String> = extra
        .iter()
        .map(|o| o.trim_end_matches('/').to_owned())
        .collect();
    Cors::new()
        .allow_origins_fn(move |origin| {
            is_builtin_origin(origin) || extra.iter().any(|o| o == origin)
        })
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            "authorization",
            "content-type",
            REQUEST_ID_HEADER,
            "if-modified-since",
            "x-backup-version",
            "x-backup-timestamp",
            "x-backup-checksum",
        ])
        .expose_headers([
            REQUEST_ID_HEADER,
            "x-checksum",
            "etag",
            "retry-after",
            "last-modified",
        ])
        .allow_credentials(false)
        .max_age(600)
}

#[cfg(test)]
mod tests {
    use super::is_builtin_origin;

    #[test]
    fn builtin_origins() {
        for ok in [
            "app://adiuva",
            "app://.",
            "http://localhost",
            "http://localhost:5173",
            "http://127.0.0.1:3000",
        ] {
            assert!(is_builtin_origin(ok), "{ok}");
        }
        for bad in [
            "app://",
            "http://localhost.evil.com",
            "http://localhost:99999x",
            "https://localhost:3000",
            "http://evil.com",
            "http://localhost:",
        ] {
            assert!(!is_builtin_origin(bad), "{bad}");
        }
    }
}
