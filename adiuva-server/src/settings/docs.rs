//! The documents generated from [`KEYS`]: `.env.example` (`adiuva config example`), the
//! `adiuva.toml` example, README's settings table (`--format markdown`) and the effective
//! configuration (`adiuva config show`). None is written by hand, so none can drift.

use super::{KEYS, Settings};

impl Settings {
    /// Every key, documented, in `.env` form (the committed `.env.example`).
    pub fn example_env() -> String {
        let mut out = String::from(
            "# Adiuva configuration. Every key is optional; defaults shown.\n# Precedence: defaults < adiuva.toml < environment < command-line flags.\n# The first variable named is preferred; the others are accepted aliases.\n\n",
        );
        for k in KEYS {
            out.push_str(&format!("# {}\n", k.doc));
            if k.env.len() > 1 {
                out.push_str(&format!("# Also: {}\n", k.env[1..].join(", ")));
            }
            out.push_str(&format!("{}={}\n\n", k.env[0], (k.default)()));
        }
        out
    }

    /// Every key, documented, in `adiuva.toml` form.
    pub fn example_toml() -> String {
        let mut out = String::from(
            "# adiuva.toml: read from the working directory, or from `--config FILE`.\n# Every key is optional; the environment overrides this file.\n\n",
        );
        for k in KEYS {
            out.push_str(&format!("# {} (env: {})\n", k.doc, k.env.join(", ")));
            out.push_str(&format!("# {} = {}\n\n", k.key, toml_value(&(k.default)())));
        }
        out
    }

    /// README's settings table, one row per key (README must contain exactly this).
    pub fn example_markdown() -> String {
        let mut out = String::from(
            "| key (`adiuva.toml`) | environment | default | meaning |\n|---|---|---|---|\n",
        );
        for k in KEYS {
            let env: Vec<String> = k.env.iter().map(|e| format!("`{e}`")).collect();
            let default = match (k.default)() {
                d if d.is_empty() => "—".to_owned(),
                d => format!("`{d}`"),
            };
            out.push_str(&format!(
                "| `{}` | {} | {default} | {}{} |\n",
                k.key,
                env.join(", "),
                k.doc.replace('|', "\\|"),
                if k.secret {
                    " Secret (printed as `***`)."
                } else {
                    ""
                },
            ));
        }
        out
    }

    /// The settings in effect, one `key = value` line per key in `adiuva.toml` form;
    /// secrets as `***`, URL credentials hidden, unset keys commented out.
    pub fn show(&self) -> String {
        self.shown()
            .into_iter()
            .map(|(key, value)| match value {
                Some(v) => format!("{key} = {}\n", toml_value(&v)),
                None => format!("# {key} (unset)\n"),
            })
            .collect()
    }
}

/// Whole numbers bare, everything else a quoted TOML string.
fn toml_value(v: &str) -> String {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        v.to_owned()
    } else {
        format!("{v:?}")
    }
}
