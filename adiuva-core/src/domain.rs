//! Domain values that carry rules. Each is a newtype whose only constructor is `parse`,
//! so a value that exists has already been checked at the edge.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::Error;

/// A user's id: a UUID (v7, so ids sort by creation time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub Uuid);

impl UserId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses the canonical UUID text form.
    pub fn parse(s: &str) -> Result<Self, Error> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| Error::validation("id", "is not a UUID"))
    }
}

impl Default for UserId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An e-mail address: trimmed, lower-cased, and shaped like `local@domain.tld`.
///
/// The check is deliberately structural (RFC 5321 lengths, one `@`, a dotted domain of
/// letters, digits and hyphens, no whitespace or control characters). Whether the mailbox
/// exists is not ours to know.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Normalises and validates `raw`.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let email = raw.trim().to_lowercase();
        let bad = |why: &str| Error::validation("email", why);
        if email.is_empty() {
            return Err(bad("is empty"));
        }
        if email.len() > 254 {
            return Err(bad("is longer than 254 characters"));
        }
        let Some((local, domain)) = email.split_once('@') else {
            return Err(bad("has no '@'"));
        };
        if local.is_empty() || local.len() > 64 {
            return Err(bad("has an empty or over-long local part"));
        }
        if domain.contains('@') {
            return Err(bad("has more than one '@'"));
        }
        if email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "()<>,;:\\\"[]".contains(c))
        {
            return Err(bad("contains characters not allowed in an address"));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(bad("has a misplaced '.' in the local part"));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 {
            return Err(bad("has a domain without a dot"));
        }
        for label in &labels {
            let ok = !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-');
            if !ok {
                return Err(bad("has an invalid domain"));
            }
        }
        Ok(Self(email))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password as the user typed it: at least [`Password::MIN_CHARS`] characters, at most
/// [`Password::MAX_BYTES`] bytes (argon2 accepts more, but an unbounded input is a cheap
/// way to make the server hash megabytes). Its `Debug` never shows the text.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Fewest characters accepted (Unicode scalar values, not bytes).
    pub const MIN_CHARS: usize = 10;
    /// Most bytes accepted.
    pub const MAX_BYTES: usize = 1024;

    /// Checks the length rules.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        if raw.chars().count() < Self::MIN_CHARS {
            return Err(Error::validation(
                "password",
                format!("must be at least {} characters", Self::MIN_CHARS),
            ));
        }
        if raw.len() > Self::MAX_BYTES {
            return Err(Error::validation(
                "password",
                format!("must be at most {} bytes", Self::MAX_BYTES),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The password text, for hashing only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident, $field:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire and database spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Parses the wire spelling; anything else is a validation error naming the choices.
            pub fn parse(s: &str) -> Result<Self, Error> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(Error::validation(
                        $field,
                        format!(
                            "'{other}' is not one of: {}",
                            [$($text),+].join(", ")
                        ),
                    )),
                }
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// A billing tier (plan step 11). Gates always read it from the database.
    Tier, "tier" {
        /// The default: no cloud storage or backups.
        Free => "free",
        /// Paid, single user.
        Pro => "pro",
        /// Paid, with the plugin marketplace and batch builder.
        Power => "power",
        /// Paid per seat, everything unlimited.
        Team => "team",
    }
);

string_enum!(
    /// What a user may administer.
    Role, "role" {
        /// An ordinary account.
        User => "user",
        /// May review plugins and manage other users.
        Admin => "admin",
    }
);

// The string_enum! macro cannot carry `#[default]`, so these are written out.
#[allow(clippy::derivable_impls)]
impl Default for Tier {
    fn default() -> Self {
        Tier::Free
    }
}

#[allow(clippy::derivable_impls)]
impl Default for Role {
    fn default() -> Self {
        Role::User
    }
}

/// The client's name for a kind of record: 1–64 characters of `[A-Za-z0-9_]`, not
/// starting with a digit. It becomes a blob-key segment, so nothing else is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName(String);

impl TableName {
    /// Checks the shape.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let ok = (1..=64).contains(&raw.len())
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !raw.as_bytes()[0].is_ascii_digit();
        if !ok {
            return Err(Error::validation(
                "table",
                "must be 1-64 letters, digits or underscores, not starting with a digit",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A SHA-256 checksum as the wire carries it: 64 hex digits, kept lowercase.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Checksum(String);

impl Checksum {
    /// Checks the shape (any case; stored lowercase).
    pub fn parse(raw: &str) -> Result<Self, Error> {
        if raw.len() != 64 || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::validation(
                "checksum",
                "must be the SHA-256 of the bytes as 64 hex digits",
            ));
        }
        Ok(Self(raw.to_ascii_lowercase()))
    }

    /// The checksum of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        Self(hex::encode(sha2::Sha256::digest(bytes)))
    }

    /// Whether `bytes` hash to this checksum, compared in constant time.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        use subtle::ConstantTimeEq as _;
        bool::from(Self::of(bytes).0.as_bytes().ct_eq(self.0.as_bytes()))
    }

    /// Lowercase hex.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A client-chosen id of a vector item: 1–[`VectorId::MAX_BYTES`] bytes of text without
/// control characters. NUL in particular: PostgreSQL text cannot hold it, and every
/// backend must store what any other accepts, so the rule is checked here, at the edge,
/// not discovered as a database error.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VectorId(String);

impl VectorId {
    /// Longest id accepted.
    pub const MAX_BYTES: usize = 256;

    /// Checks `raw`; `field` names it in the error (e.g. `vectors[3].id`). The error
    /// never quotes the id.
    pub fn parse(
        field: impl Into<std::borrow::Cow<'static, str>>,
        raw: &str,
    ) -> Result<Self, Error> {
        if raw.is_empty() || raw.len() > Self::MAX_BYTES {
            return Err(Error::validation(
                field,
                format!("must be 1 to {} bytes", Self::MAX_BYTES),
            ));
        }
        if raw.chars().any(char::is_control) {
            return Err(Error::validation(
                field,
                "must not contain control characters (NUL included)",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// A user's own model API key (BYOK), normalised once at the edge: surrounding
/// whitespace is trimmed here and nowhere else, so the value sent to the provider is
/// exactly the value scrubbed from the provider's answers and never a near copy of it.
/// 1–[`ByokKey::MAX_BYTES`] bytes of visible ASCII (what an HTTP header can carry; every
/// provider's keys are such tokens). Its `Debug` never shows the key, and no error
/// message quotes it.
#[derive(Clone, PartialEq, Eq)]
pub struct ByokKey(String);

impl ByokKey {
    /// Longest key accepted (provider keys are under 200 bytes).
    pub const MAX_BYTES: usize = 512;

    /// Trims and checks `raw`.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let key = raw.trim();
        let bad = |why: &str| Error::validation("api_key", why.to_owned());
        if key.is_empty() {
            return Err(bad("is empty"));
        }
        if key.len() > Self::MAX_BYTES {
            return Err(bad(&format!("is longer than {} bytes", Self::MAX_BYTES)));
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad(
                "may hold only visible ASCII characters (no spaces, control characters or NUL)",
            ));
        }
        Ok(Self(key.to_owned()))
    }

    /// The edge's rule for an optional key: absent, `null` or blank means "use the
    /// server's key" (clients send `""` when the user has none); anything else must parse.
    pub fn parse_optional(raw: Option<&str>) -> Result<Option<Self>, Error> {
        match raw {
            None => Ok(None),
            Some(k) if k.trim().is_empty() => Ok(None),
            Some(k) => Self::parse(k).map(Some),
        }
    }

    /// The key, to send to the provider (and to scrub from its answers). Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Serde `deserialize_with` for an `Option<ByokKey>` field, applying
    /// [`parse_optional`](Self::parse_optional).
    pub fn deserialize_optional<'de, D>(d: D) -> Result<Option<Self>, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        let raw = Option::<String>::deserialize(d)?;
        Self::parse_optional(raw.as_deref()).map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for ByokKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ByokKey(***)")
    }
}

/// Milliseconds since the Unix epoch: the wire and storage form of every timestamp.
pub type Millis = i64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lowercased() {
        let e = Email::parse("  Alice.Smith+tag@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "alice.smith+tag@example.com");
    }

    #[test]
    fn bad_emails_are_rejected() {
        for bad in [
            "",
            "   ",
            "alice",
            "alice@",
            "@example.com",
            "alice@example",
            "a@b@c.com",
            "al ice@example.com",
            "alice@exa mple.com",
            "alice@-example.com",
            "alice@example..com",
            ".alice@example.com",
            "al..ice@example.com",
            "alice@example.com\n",
        ] {
            // a trailing newline is trimmed, so that one is fine; all others fail
            if bad == "alice@example.com\n" {
                assert!(Email::parse(bad).is_ok());
                continue;
            }
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let long = format!("{}@example.com", "a".repeat(65));
        assert!(Email::parse(&long).is_err());
    }

    #[test]
    fn passwords_count_characters_not_bytes() {
        assert!(Password::parse("123456789").is_err());
        assert!(Password::parse("1234567890").is_ok());
        assert!(Password::parse("ééééééééé").is_err()); // 9 chars, 18 bytes
        assert!(Password::parse(&"x".repeat(1025)).is_err());
        assert_eq!(
            format!("{:?}", Password::parse("supersecret1").unwrap()),
            "Password(***)"
        );
    }

    #[test]
    fn vector_ids_refuse_nul_and_control_characters() {
        assert_eq!(
            VectorId::parse("id", "note-1 é").unwrap().as_str(),
            "note-1 é"
        );
        for bad in ["", "a\0b", "tab\there", "\u{85}", &"x".repeat(257)] {
            assert!(VectorId::parse("id", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn byok_keys_are_trimmed_once_and_checked() {
        let k = ByokKey::parse("  sk-abc123 \n").unwrap();
        assert_eq!(k.expose(), "sk-abc123");
        assert_eq!(format!("{k:?}"), "ByokKey(***)");
        for bad in ["", "   ", "sk-a\0b", "sk a", "sk-\u{7f}", "sk-é"] {
            let e = ByokKey::parse(bad).unwrap_err().to_string();
            assert!(bad.trim().is_empty() || !e.contains(bad.trim()), "{e}");
        }
        assert!(ByokKey::parse(&"k".repeat(513)).is_err());
        assert_eq!(ByokKey::parse_optional(Some(" ")).unwrap(), None);
        assert_eq!(ByokKey::parse_optional(None).unwrap(), None);
        assert!(ByokKey::parse_optional(Some("a\u{1}b")).is_err());
    }

    #[test]
    fn tiers_and_roles_round_trip() {
        for t in Tier::ALL {
            assert_eq!(Tier::parse(t.as_str()).unwrap(), *t);
        }
        assert!(Tier::parse("gold").is_err());
        assert_eq!(Role::parse("admin").unwrap(), Role::Admin);
        assert_eq!(Tier::default(), Tier::Free);
    }
}
