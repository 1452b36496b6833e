//! The rules of `device_hello` (see [`Hello`]): checked before anything is written, each
//! failure naming its field.

use super::Hello;
use crate::error::Error;
use crate::ports::db::DeviceInfo;

const MAX_DEVICE_ID: usize = 128;
const MAX_NAME: usize = 200;
const MAX_SHORT: usize = 64;
const MAX_CAPABILITIES: usize = 32;

/// The device's id and what it says of itself, once valid.
pub(super) fn validate(hello: Hello) -> Result<(String, DeviceInfo), Error> {
    let id_ok = (1..=MAX_DEVICE_ID).contains(&hello.device_id.chars().count())
        && hello
            .device_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
    if !id_ok {
        return Err(Error::validation(
            "device_id",
            "must be 1–128 characters of A–Z a–z 0–9 . _ : -",
        ));
    }
    text("name", "must be", &hello.name, 1, MAX_NAME)?;
    if hello.name.trim().is_empty() {
        return Err(Error::validation("name", "must not be blank"));
    }
    text("platform", "must be", &hello.platform, 0, MAX_SHORT)?;
    text("app_version", "must be", &hello.app_version, 0, MAX_SHORT)?;
    if hello.capabilities.len() > MAX_CAPABILITIES {
        return Err(Error::validation(
            "capabilities",
            format!("must list at most {MAX_CAPABILITIES}"),
        ));
    }
    for c in &hello.capabilities {
        text("capabilities", "entries must be", c, 1, MAX_SHORT)?;
    }
    Ok((
        hello.device_id,
        DeviceInfo {
            name: hello.name,
            platform: hello.platform,
            app_version: hello.app_version,
            capabilities: hello.capabilities,
        },
    ))
}

/// `value` has `min..=max` characters and no control character; `subject` starts the
/// message ("must be", or "entries must be" for a list).
fn text(
    field: &'static str,
    subject: &str,
    value: &str,
    min: usize,
    max: usize,
) -> Result<(), Error> {
    let n = value.chars().count();
    if n < min || n > max {
        return Err(Error::validation(
            field,
            format!("{subject} {min}–{max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::validation(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}
