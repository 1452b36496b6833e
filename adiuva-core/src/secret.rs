//! A wrapper for values that must never be printed.

use std::fmt;

/// A secret value. `Debug` and `Display` print `***`; only [`Secret::expose`] reveals it,
/// so every place a secret is read is greppable.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The value itself. Never log what this returns.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

/// So a literal can fill a `Secret<String>` field (`api_key: "sk-…".into()`).
impl From<&str> for Secret<String> {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Query parameters whose value is a credential, compared case-insensitively. Any
/// name containing `password`, `secret` or `token` counts too (see [`is_secret_param`]).
const SECRET_PARAMS: &[&str] = &[
    "pass",
    "pwd",
    "key",
    "apikey",
    "api_key",
    "api-key",
    "access_key",
    "sig",
    "signature",
    "credential",
    "credentials",
    "auth",
    "authorization",
    "x-amz-signature",
    "x-amz-credential",
    "x-goog-signature",
    "x-goog-credential",
];

/// Whether a lone user info (`scheme://name@host`) is a user name, as in database URLs,
/// rather than a token, as `https://TOKEN@host` often is.
fn names_a_user(scheme: &str) -> bool {
    matches!(
        scheme.to_ascii_lowercase().as_str(),
        "postgres" | "postgresql" | "redis" | "rediss" | "mysql" | "mongodb" | "amqp" | "amqps"
    )
}

/// Whether a query parameter named `name` carries a credential.
fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMS.contains(&name.as_str())
        || ["password", "secret", "token"]
            .iter()
            .any(|word| name.contains(word))
}

/// The URL with every credential it can carry replaced by `***`, for logs, errors and
/// `adiuva doctor`: the password of `user:password@` (the user name stays, it says
/// which account), a lone `token@` user info (some services take the key as the user
/// name; a database URL's lone user name stays), and the value of every credential-bearing query parameter — `password`,
/// `sslpassword`, `token`, `access_token`, `api_key`, `apikey`, `key`, `secret`, `sig`,
/// `signature`, AWS/GCS presigning (`X-Amz-Signature`, `X-Amz-Credential`,
/// `X-Amz-Security-Token`, …) and any name containing `password`, `secret` or `token`.
/// Not a URL parser: it works on any text shaped like one, and never fails.
pub fn redact_url(url: &str) -> String {
    let (before_fragment, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let (base, query) = match before_fragment.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (before_fragment, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(end);
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _password)) => format!("{user}:***@{host}"),
                    None if userinfo.is_empty() || names_a_user(scheme) => {
                        format!("{userinfo}@{host}")
                    }
                    None => format!("***@{host}"),
                },
                None => authority.to_owned(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => base.to_owned(),
    };
    if let Some(query) = query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_secret_param(name) => format!("{name}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    if let Some(fragment) = fragment {
        // A fragment may hold a token (OAuth implicit flow); it never matters in a log.
        if !fragment.is_empty() {
            out.push_str("#***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_every_credential() {
        let cases = [
            ("postgres://u:secret@h:5432/d", "postgres://u:***@h:5432/d"),
            ("postgres://h:5432/d", "postgres://h:5432/d"),
            (
                "redis://:pw@127.0.0.1:6379/0",
                "redis://:***@127.0.0.1:6379/0",
            ),
            ("https://ghp_tok@example.com/x", "https://***@example.com/x"),
            ("redis://default@h:6379", "redis://default@h:6379"),
            (
                "postgres://u@h/d?password=hunter2&sslmode=require&sslpassword=p2",
                "postgres://u@h/d?password=***&sslmode=require&sslpassword=***",
            ),
            (
                "sqlite:///tmp/a.db?mode=rwc&PASSWORD=x",
                "sqlite:///tmp/a.db?mode=rwc&PASSWORD=***",
            ),
            (
                "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4&X-Amz-Credential=AKIA%2F&X-Amz-Signature=abc&X-Amz-Security-Token=t",
                "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4&X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Security-Token=***",
            ),
            (
                "https://h/v1?api_key=a&apikey=b&key=c&token=d&access_token=e&secret=f&sig=g&signature=h&client_secret=i&page=2",
                "https://h/v1?api_key=***&apikey=***&key=***&token=***&access_token=***&secret=***&sig=***&signature=***&client_secret=***&page=2",
            ),
            ("https://h/cb#access_token=x", "https://h/cb#***"),
            ("a/b/c", "a/b/c"),
            ("", ""),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn never_prints_the_value() {
        let s = Secret::new("hunter2-hunter2".to_owned());
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "hunter2-hunter2");
    }
}
