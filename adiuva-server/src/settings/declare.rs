//! The machinery behind the one settings declaration in [`super`]: the macro that turns
//! each key's entry into a struct field, a parser arm, a [`KeyDoc`] and so into every
//! document, and the [`Value`] trait that says how a field's type is read and shown.

use std::net::SocketAddr;
use std::path::PathBuf;

use adiuva_core::Secret;
use adiuva_core::auth::JwtAlgorithm;

use super::{Environment, LogFormat, RedactedUrl};

/// One documented key, as declared in `settings!`.
#[derive(Debug)]
pub struct KeyDoc {
    /// Name in `adiuva.toml` (and the `Settings` field).
    pub key: &'static str,
    /// Environment variables, highest precedence first.
    pub env: &'static [&'static str],
    /// The default as text (empty: unset). A function because some defaults are
    /// constants of core or adapters (their one home), rendered here.
    pub default: fn() -> String,
    /// What it does (the field's doc comment).
    pub doc: &'static str,
    /// Whether the value is a secret (`config show` prints `***`).
    pub secret: bool,
}

/// How a setting's type is read from text (file, environment, default) and shown.
pub trait Value: Sized {
    /// A secret is never shown: `config show` prints `***`.
    const SECRET: bool = false;
    /// Reads the value; the error is a phrase that follows the key's name
    /// (`must be … (got '…')`).
    fn parse(text: &str) -> Result<Self, String>;
    /// The value as `config show` prints it; `None` when unset.
    fn show(&self) -> Option<String>;
}

/// The trimmed text through `FromStr`, or why not ("must be {what} (got '…')").
fn parsed<T: std::str::FromStr>(v: &str, what: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("must be {what} (got '{v}')"))
}

macro_rules! numbers {
    ($($t:ty),+) => {$(
        impl Value for $t {
            fn parse(v: &str) -> Result<Self, String> {
                parsed(v, "a non-negative whole number")
            }
            fn show(&self) -> Option<String> {
                Some(self.to_string())
            }
        }
    )+};
}
numbers!(u32, u64, usize, i64);

impl Value for bool {
    fn parse(v: &str) -> Result<Self, String> {
        match v.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(format!("must be true or false (got '{v}')")),
        }
    }
    fn show(&self) -> Option<String> {
        Some(self.to_string())
    }
}

impl Value for String {
    fn parse(v: &str) -> Result<Self, String> {
        Ok(v.to_owned())
    }
    fn show(&self) -> Option<String> {
        Some(self.clone())
    }
}

/// Names (models, endpoints) copied from a file often carry a stray space.
pub fn trimmed(v: &str) -> Result<String, String> {
    Ok(v.trim().to_owned())
}

impl Value for PathBuf {
    fn parse(v: &str) -> Result<Self, String> {
        Ok(PathBuf::from(v))
    }
    fn show(&self) -> Option<String> {
        Some(self.display().to_string())
    }
}

impl Value for SocketAddr {
    fn parse(v: &str) -> Result<Self, String> {
        parsed(v, "an address like 127.0.0.1:8080")
    }
    fn show(&self) -> Option<String> {
        Some(self.to_string())
    }
}

/// A comma-separated list (in `adiuva.toml` also an array of strings).
impl Value for Vec<String> {
    fn parse(v: &str) -> Result<Self, String> {
        Ok(v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect())
    }
    fn show(&self) -> Option<String> {
        (!self.is_empty()).then(|| self.join(","))
    }
}

/// Empty text means unset.
impl Value for Option<String> {
    fn parse(v: &str) -> Result<Self, String> {
        Ok((!v.is_empty()).then(|| v.to_owned()))
    }
    fn show(&self) -> Option<String> {
        self.clone()
    }
}

impl Value for Option<Secret<String>> {
    const SECRET: bool = true;
    fn parse(v: &str) -> Result<Self, String> {
        Ok((!v.is_empty()).then(|| Secret::new(v.to_owned())))
    }
    fn show(&self) -> Option<String> {
        self.as_ref().map(|_| "***".to_owned())
    }
}

/// Shown with its credentials as `***`; the rest of the URL is not secret.
impl Value for Option<RedactedUrl> {
    fn parse(v: &str) -> Result<Self, String> {
        Ok((!v.is_empty()).then(|| RedactedUrl(v.to_owned())))
    }
    fn show(&self) -> Option<String> {
        self.as_ref().map(RedactedUrl::redacted)
    }
}

impl Value for Environment {
    fn parse(v: &str) -> Result<Self, String> {
        match v.trim().to_ascii_lowercase().as_str() {
            "dev" | "development" => Ok(Environment::Dev),
            "prod" | "production" => Ok(Environment::Prod),
            _ => Err(format!("must be dev or prod (got '{v}')")),
        }
    }
    fn show(&self) -> Option<String> {
        Some(match self {
            Environment::Dev => "dev".into(),
            Environment::Prod => "prod".into(),
        })
    }
}

impl Value for LogFormat {
    fn parse(v: &str) -> Result<Self, String> {
        match v.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(LogFormat::Auto),
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("must be auto, text or json (got '{v}')")),
        }
    }
    fn show(&self) -> Option<String> {
        Some(
            match self {
                LogFormat::Auto => "auto",
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            }
            .into(),
        )
    }
}

impl Value for JwtAlgorithm {
    fn parse(v: &str) -> Result<Self, String> {
        JwtAlgorithm::parse(v).map_err(|_| format!("must be HS256, HS384 or HS512 (got '{v}')"))
    }
    fn show(&self) -> Option<String> {
        Some(self.as_str().into())
    }
}

/// A doc comment's lines, joined (each `///` line starts with a space).
pub const fn doc_text(s: &'static str) -> &'static str {
    s.trim_ascii()
}

/// Why a key could not be set.
pub enum SetError {
    /// No such key.
    Unknown,
    /// The value does not parse or is out of range: a phrase following the key's name.
    Invalid(String),
}

/// Declares every setting once. Each entry is
///
/// ```text
/// /// What it does (the README, `.env.example` and rustdoc text).
/// name: Type = default, env ["ADIUVA_NAME", "ALIAS"] [, parse path] [, min N ("why")];
/// ```
///
/// `Type` implements [`Value`] (how it is read and shown, whether it is secret);
/// `default` is anything `Display` whose text parses as the type (empty: unset);
/// `parse` replaces `Value::parse`; `min` rejects smaller values.
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])+
        $key:ident : $ty:ty = $default:expr, env [$($env:literal),+]
            $(, parse $parse:path)?
            $(, min $min:literal $(($why:literal))?)?
        ;
    )+) => {
        /// All settings, one field per key of [`KEYS`]. Build with [`Settings::load`]
        /// (or [`Settings::for_data_dir`] in tests).
        #[derive(Debug, Clone)]
        pub struct Settings {
            $( $(#[doc = $doc])+ pub $key: $ty, )+
        }

        /// Every key the server reads, in declaration order.
        pub const KEYS: &[KeyDoc] = &[$(KeyDoc {
            key: stringify!($key),
            env: &[$($env),+],
            default: || ($default).to_string(),
            doc: declare::doc_text(concat!($($doc),+)),
            secret: <$ty as declare::Value>::SECRET,
        }),+];

        impl Settings {
            /// Every key at its default. A default that does not parse is a bug of the
            /// declaration, caught by the `every_default_parses` test.
            fn defaults() -> Self {
                Self {
                    $($key: $crate::settings::declare::settings!(@parse $ty $(, $parse)?)(&($default).to_string())
                        .unwrap_or_else(|e| panic!("default of {} {e}", stringify!($key))),)+
                }
            }

            /// Sets one key from text (the file, the environment or a default).
            fn set_text(&mut self, key: &str, v: &str) -> Result<(), SetError> {
                match key {
                    $(stringify!($key) => {
                        let value: $ty = $crate::settings::declare::settings!(@parse $ty $(, $parse)?)(v)
                            .map_err(SetError::Invalid)?;
                        $(if value < $min {
                            return Err(SetError::Invalid(
                                concat!("must be at least ", $min $(, " (", $why, ")")?).into(),
                            ));
                        })?
                        self.$key = value;
                    })+
                    _ => return Err(SetError::Unknown),
                }
                Ok(())
            }

            /// Every key with its value as `config show` prints it (`None`: unset;
            /// secrets as `***`).
            pub fn shown(&self) -> Vec<(&'static str, Option<String>)> {
                vec![$((stringify!($key), declare::Value::show(&self.$key))),+]
            }
        }
    };
    (@parse $ty:ty) => { <$ty as declare::Value>::parse };
    (@parse $ty:ty, $parse:path) => { $parse };
}
pub(super) use settings;
