//! Choosing the blob store from its URL.
//!
//! The blob-store adapters (local files, S3) arrive with the data plane; until then the
//! only thing done with the URL is to make sure its directory exists and is writable.

use std::path::PathBuf;

use crate::AdapterError;

/// The local directory a `file://` URL names.
pub fn file_url_path(url: &str) -> Option<PathBuf> {
    url.strip_prefix("file://").map(PathBuf::from)
}

/// Creates the directory of a `file://` URL and proves it writable; `memory://` needs
/// nothing. Anything else is refused with a sentence.
pub async fn check_blob_url(url: &str) -> Result<String, AdapterError> {
    if url == "memory://" {
        return Ok("in memory (lost on restart)".into());
    }
    let Some(dir) = file_url_path(url) else {
        return Err(AdapterError::Unsupported(format!(
            "ADIUVA_BLOB_URL must be file://DIR or memory:// in this build (got '{url}')"
        )));
    };
    let fail = |what: &str, e: std::io::Error| {
        AdapterError::Connect(format!("the blob directory {} {what}: {e}", dir.display()))
    };
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| fail("cannot be created", e))?;
    let probe = dir.join(format!(".write-probe-{}", uuid::Uuid::new_v4().simple()));
    tokio::fs::write(&probe, b"ok")
        .await
        .map_err(|e| fail("is not writable", e))?;
    tokio::fs::remove_file(&probe)
        .await
        .map_err(|e| fail("does not allow deletes", e))?;
    Ok(dir.display().to_string())
}
