//! The blob store over `object_store`: in memory, a local directory, or any
//! S3-compatible service, chosen by URL (`memory://`, `file://DIR`, `s3://BUCKET`).
//!
//! Uploads stream through `object_store`'s multipart writer in 8 MiB parts with at most
//! two parts in flight, so memory stays bounded whatever the body size; a failed body
//! aborts the upload (local: the temporary file is removed; S3: the multipart upload is
//! aborted), so nothing partial becomes visible.
//!
//! Backends differ in one way: S3 and memory keep the checksum in the object's metadata
//! (`x-amz-meta-checksum` on S3); a local directory has nowhere to keep it and reports
//! `None` (the database row holds it anyway).
//!
//! A local directory fsyncs each finished blob and its directory before the rename that
//! publishes it, so a key whose `put` returned survives a power loss, and the database
//! row written after it never points at bytes that are not on disk. A local upload
//! streams into a staging file beside its target, named `{target}#{n}` (object_store
//! 0.14's `LocalFileSystem`: `n` is the lowest free integer from 1); `list` never shows
//! those, an aborted upload removes its own, and a killed process leaves it behind:
//! [`BlobStore::unfinished_uploads`] reports those files for `storage gc`.
//!
//! Past the ~600-line rule by its unit tests (the last ~170 lines), which exercise private
//! helpers and so live here; the adapter itself is ~440 lines.

use std::sync::Arc;

use adiuva_core::Secret;
use adiuva_core::ports::blob::{
    BlobError, BlobInfo, BlobStore, ByteStream, StoredBlob, UnfinishedUpload,
};
use async_trait::async_trait;
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt as _, PutMultipartOptions, WriteMultipart,
};

use crate::AdapterError;

/// Part size for multipart uploads (S3's minimum is 5 MiB).
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploaded concurrently.
const PARTS_IN_FLIGHT: usize = 2;
const CHECKSUM_KEY: &str = "checksum";

/// Where S3 is and how to sign for it.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// Region (default `us-east-1`).
    pub region: Option<String>,
    /// Endpoint of an S3-compatible service (MinIO, moto, R2…); unset: AWS.
    pub endpoint: Option<String>,
    /// Access key id (unset: the environment's AWS credentials chain).
    pub access_key_id: Option<Secret<String>>,
    /// Secret key (`Debug` prints `***`).
    pub secret_access_key: Option<Secret<String>>,
}

/// A [`BlobStore`] over any `object_store` backend.
#[derive(Debug, Clone)]
pub struct ObjectBlobs {
    store: Arc<dyn ObjectStore>,
    keeps_metadata: bool,
    location: String,
    /// The (canonical) directory of a local store: where its staging files are.
    local_root: Option<std::path::PathBuf>,
}

impl ObjectBlobs {
    /// Blobs in memory (lost on restart; for tests and experiments).
    pub fn memory() -> Self {
        Self {
            store: Arc::new(InMemory::new()),
            keeps_metadata: true,
            location: "in memory (lost on restart)".into(),
            local_root: None,
        }
    }

    /// Blobs as files under `dir` (created if missing).
    pub fn local(dir: &std::path::Path) -> Result<Self, AdapterError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            AdapterError::Connect(format!(
                "the blob directory {} cannot be created: {e}",
                dir.display()
            ))
        })?;
        let cannot_use = |e: &dyn std::fmt::Display| {
            AdapterError::Connect(format!(
                "the blob directory {} cannot be used: {e}",
                dir.display()
            ))
        };
        // fsync: a blob is durable before its row is written (see the module docs).
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| cannot_use(&e))?
            .with_fsync(true);
        let root = std::fs::canonicalize(dir).map_err(|e| cannot_use(&e))?;
        Ok(Self {
            store: Arc::new(store),
            keeps_metadata: false,
            location: dir.display().to_string(),
            local_root: Some(root),
        })
    }

    /// Blobs in an S3 bucket. Path-style requests, so any S3-compatible endpoint works.
    pub fn s3(bucket: &str, options: &S3Options) -> Result<Self, AdapterError> {
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region(options.region.clone().unwrap_or_else(|| "us-east-1".into()))
            .with_virtual_hosted_style_request(false);
        if let Some(endpoint) = &options.endpoint {
            b = b
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let (Some(id), Some(secret)) = (&options.access_key_id, &options.secret_access_key) {
            b = b
                .with_access_key_id(id.expose())
                .with_secret_access_key(secret.expose());
        }
        let store = b.build().map_err(|e| {
            AdapterError::Unsupported(format!(
                "the S3 blob store for bucket '{bucket}' cannot be configured: {e}"
            ))
        })?;
        let location = format!(
            "s3://{bucket}{}",
            options
                .endpoint
                .as_ref()
                .map(|e| format!(" at {}", adiuva_core::secret::redact_url(e)))
                .unwrap_or_default()
        );
        Ok(Self {
            store: Arc::new(store),
            keeps_metadata: true,
            location,
            local_root: None,
        })
    }

    /// Chooses the backend from `url`: `memory://`, `file://DIR` or `s3://BUCKET`.
    pub fn from_url(url: &str, s3: &S3Options) -> Result<Self, AdapterError> {
        if url == "memory://" {
            return Ok(Self::memory());
        }
        if let Some(dir) = url.strip_prefix("file://") {
            return Self::local(std::path::Path::new(dir));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let bucket = rest.trim_end_matches('/');
            if bucket.is_empty() || bucket.contains('/') {
                return Err(AdapterError::Unsupported(format!(
                    "'{url}' must name a bucket: s3://BUCKET"
                )));
            }
            return Self::s3(bucket, s3);
        }
        Err(AdapterError::Unsupported(format!(
            "ADIUVA_BLOB_URL must be file://DIR, s3://BUCKET or memory:// (got '{url}')"
        )))
    }

    /// Where the blobs are, for logs.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Writes, reads back and deletes a probe blob: proof the store is usable.
    pub async fn probe(&self) -> Result<(), AdapterError> {
        let key = format!("_probe/{}", uuid::Uuid::new_v4().simple());
        let fail = |what: &str, e: BlobError| {
            AdapterError::Connect(format!("the blob store {} {what}: {e}", self.location))
        };
        let body = futures::stream::iter([Ok(bytes::Bytes::from_static(b"ok"))]).boxed();
        self.put(&key, body, None)
            .await
            .map_err(|e| fail("is not writable", e))?;
        let (_, mut stream) = self
            .get(&key)
            .await
            .map_err(|e| fail("is not readable", e))?;
        let mut read = Vec::new();
        while let Some(chunk) = stream.next().await {
            read.extend_from_slice(&chunk.map_err(|e| fail("is not readable", e))?);
        }
        if read != b"ok" {
            return Err(AdapterError::Connect(format!(
                "the blob store {} returned other bytes than written",
                self.location
            )));
        }
        self.delete(&key)
            .await
            .map_err(|e| fail("does not allow deletes", e))
    }
}

/// Checks a key's shape: relative, `/`-separated segments of `[A-Za-z0-9._-]`, none
/// empty, `.` or `..`.
fn path(key: &str) -> Result<Path, BlobError> {
    let ok = !key.is_empty()
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if !ok {
        return Err(BlobError::InvalidKey(format!("{key:?}")));
    }
    Path::parse(key).map_err(|e| BlobError::InvalidKey(e.to_string()))
}

fn blob_err(e: object_store::Error) -> BlobError {
    match e {
        object_store::Error::NotFound { .. } => BlobError::NotFound,
        object_store::Error::InvalidPath { source } => BlobError::InvalidKey(source.to_string()),
        other => BlobError::Unavailable(other.to_string()),
    }
}

#[async_trait]
impl BlobStore for ObjectBlobs {
    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn put(
        &self,
        key: &str,
        mut body: ByteStream,
        checksum: Option<&str>,
    ) -> Result<BlobInfo, BlobError> {
        let location = path(key)?;
        let mut attributes = Attributes::new();
        if let (true, Some(c)) = (self.keeps_metadata, checksum) {
            attributes.insert(
                Attribute::Metadata(CHECKSUM_KEY.into()),
                c.to_owned().into(),
            );
        }
        let upload = self
            .store
            .put_multipart_opts(
                &location,
                PutMultipartOptions {
                    attributes,
                    ..Default::default()
                },
            )
            .await
            .map_err(blob_err)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    if let Err(abort) = writer.abort().await {
                        tracing::warn!(error = %abort, "aborting a failed upload failed");
                    }
                    return Err(match e {
                        BlobError::Aborted(why) => BlobError::Aborted(why),
                        other => BlobError::Aborted(other.to_string()),
                    });
                }
            };
            size += chunk.len() as u64;
            // Backpressure: never more than PARTS_IN_FLIGHT parts buffered or uploading.
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                let _ = writer.abort().await;
                return Err(blob_err(e));
            }
            writer.write(&chunk);
        }
        writer.finish().await.map_err(blob_err)?;
        Ok(BlobInfo {
            key: key.to_owned(),
            size,
            checksum: checksum.filter(|_| self.keeps_metadata).map(str::to_owned),
        })
    }

    async fn get(&self, key: &str) -> Result<(BlobInfo, ByteStream), BlobError> {
        let result = self.store.get(&path(key)?).await.map_err(blob_err)?;
        let checksum = result
            .attributes
            .get(&Attribute::Metadata(CHECKSUM_KEY.into()))
            .map(|v| v.to_string());
        let info = BlobInfo {
            key: key.to_owned(),
            size: result.meta.size,
            checksum,
        };
        Ok((info, result.into_stream().map_err(blob_err).boxed()))
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match self.store.delete(&path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(blob_err(e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<StoredBlob>, BlobError> {
        let prefix = if prefix.is_empty() {
            None
        } else {
            Some(path(prefix)?)
        };
        self.store
            .list(prefix.as_ref())
            .map_ok(|meta| StoredBlob {
                key: meta.location.to_string(),
                size: meta.size,
                last_modified: meta.last_modified.timestamp_millis(),
            })
            .try_collect()
            .await
            .map_err(blob_err)
    }

    async fn unfinished_uploads(&self) -> Result<Vec<UnfinishedUpload>, BlobError> {
        let Some(root) = self.local_root.clone() else {
            // S3 expires incomplete multipart uploads by a bucket lifecycle rule; memory
            // loses them with the process.
            return Ok(Vec::new());
        };
        tokio::task::spawn_blocking(move || staging_files(&root))
            .await
            .map_err(|e| BlobError::Other(Box::new(e)))?
    }

    async fn discard_unfinished_upload(&self, id: &str) -> Result<(), BlobError> {
        let Some(root) = self.local_root.clone() else {
            return Ok(());
        };
        let file = staging_path(&root, id)?;
        tokio::task::spawn_blocking(move || match std::fs::remove_file(&file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BlobError::Unavailable(format!(
                "removing a staging file: {e}"
            ))),
        })
        .await
        .map_err(|e| BlobError::Other(Box::new(e)))?
    }
}

/// Whether a file name is a `LocalFileSystem` staging file: `{name}#{digits}`.
fn is_staging_name(name: &str) -> bool {
    name.rsplit_once('#').is_some_and(|(base, n)| {
        !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Every staging file under `root`, with its path relative to `root` as the id.
fn staging_files(root: &std::path::Path) -> Result<Vec<UnfinishedUpload>, BlobError> {
    let io = |e: std::io::Error| BlobError::Unavailable(format!("listing staging files: {e}"));
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // Removed meanwhile (an empty directory being cleaned up): nothing in it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io)?;
            let kind = entry.file_type().map_err(io)?;
            if kind.is_dir() {
                dirs.push(entry.path());
                continue;
            }
            let name = entry.file_name();
            if !kind.is_file() || !name.to_str().is_some_and(is_staging_name) {
                continue;
            }
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                // Published or aborted between listing and stat: not a leftover.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(e)),
            };
            let last_modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            let relative = entry.path();
            let relative = relative
                .strip_prefix(root)
                .map_err(|e| BlobError::Other(Box::new(std::io::Error::other(e.to_string()))))?;
            let id = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            found.push(UnfinishedUpload {
                id,
                size: meta.len(),
                last_modified,
            });
        }
    }
    Ok(found)
}

/// The file an unfinished upload's id names, refusing any id that is not a staging file
/// inside `root` (so a bad id can never delete a blob or leave the directory).
fn staging_path(root: &std::path::Path, id: &str) -> Result<std::path::PathBuf, BlobError> {
    let invalid = || BlobError::InvalidKey(format!("{id:?} is not a staging file"));
    let (dirs, name) = id.rsplit_once('/').unwrap_or(("", id));
    let (base, _) = name.rsplit_once('#').ok_or_else(invalid)?;
    if !is_staging_name(name) {
        return Err(invalid());
    }
    // The target key must itself be a valid key: no `..`, no empty segments.
    let target = if dirs.is_empty() {
        base.to_owned()
    } else {
        format!("{dirs}/{base}")
    };
    path(&target).map_err(|_| invalid())?;
    Ok(id.split('/').fold(root.to_path_buf(), |p, seg| p.join(seg)))
}

/// Builds the store for `url` and proves it usable; returns where the blobs are.
pub async fn check_blob_url(url: &str, s3: &S3Options) -> Result<String, AdapterError> {
    let store = ObjectBlobs::from_url(url, s3)?;
    store.probe().await?;
    Ok(store.location().to_owned())
}

#[cfg(test)]
mod tests {

    #[test]
    fn s3_options_debug_prints_no_key() {
        let options = S3Options {
            region: None,
            endpoint: Some("http://127.0.0.1:9000".into()),
            access_key_id: Some(Secret::new("AKIDEXAMPLEID".into())),
            secret_access_key: Some(Secret::new("wJalrXUtnFEMI-secret".into())),
        };
        let printed = format!("{options:?}");
        assert!(!printed.contains("AKIDEXAMPLEID"), "{printed}");
        assert!(!printed.contains("wJalrXUtnFEMI-secret"), "{printed}");
        assert!(printed.contains("***"), "{printed}");
    }
    use super::*;

    fn prefix() -> String {
        format!("t-{}", uuid::Uuid::new_v4().simple())
    }

    #[tokio::test]
    async fn conformance_in_memory() {
        adiuva_core::testing::blobs::run_all(&ObjectBlobs::memory(), &prefix()).await;
    }

    #[tokio::test]
    async fn conformance_on_local_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ObjectBlobs::local(&dir.path().join("blobs")).expect("local");
        adiuva_core::testing::blobs::run_all(&store, &prefix()).await;
        // Nothing left behind by aborted uploads (no temporary files either).
        let leftovers: Vec<_> = walk(dir.path())
            .into_iter()
            .filter(|p| p.is_file())
            .collect();
        assert!(leftovers.is_empty(), "files left on disk: {leftovers:?}");
    }

    #[tokio::test]
    async fn staging_files_are_reported_and_discarded_but_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("blobs");
        let store = ObjectBlobs::local(&root).expect("local");
        let body = futures::stream::iter([Ok(bytes::Bytes::from_static(b"kept"))]).boxed();
        store.put("u/backup-1", body, None).await.expect("put");
        // What a killed upload leaves: the target's name, '#', a number.
        std::fs::write(root.join("u/backup-2#1"), b"half").expect("staging");
        std::fs::create_dir_all(root.join("u/notes")).expect("dir");
        std::fs::write(root.join("u/notes/r.v1#12"), b"partial").expect("staging");
        assert_eq!(
            store
                .list("")
                .await
                .expect("list")
                .into_iter()
                .map(|b| b.key)
                .collect::<Vec<_>>(),
            vec!["u/backup-1".to_string()],
            "staging files are not blobs"
        );
        let mut found = store.unfinished_uploads().await.expect("unfinished");
        found.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(
            found
                .iter()
                .map(|u| (u.id.as_str(), u.size))
                .collect::<Vec<_>>(),
            vec![("u/backup-2#1", 4), ("u/notes/r.v1#12", 7)]
        );
        assert!(found.iter().all(|u| u.last_modified > 0));
        for bad in [
            "u/backup-1",
            "../x#1",
            "u/../../etc#1",
            "u/#1",
            "u/x#",
            "u/x#1a",
        ] {
            assert!(
                store.discard_unfinished_upload(bad).await.is_err(),
                "{bad} refused"
            );
        }
        for u in &found {
            store
                .discard_unfinished_upload(&u.id)
                .await
                .expect("discard");
            store
                .discard_unfinished_upload(&u.id)
                .await
                .expect("idempotent");
        }
        assert!(store.unfinished_uploads().await.expect("none").is_empty());
        assert!(root.join("u/backup-1").is_file(), "the blob is untouched");
        assert!(
            ObjectBlobs::memory()
                .unfinished_uploads()
                .await
                .expect("mem")
                .is_empty()
        );
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
        out
    }

    /// Against a real S3-compatible server: `ADIUVA_TEST_S3_ENDPOINT` (+ `_BUCKET`,
    /// `_ACCESS_KEY_ID`, `_SECRET_ACCESS_KEY`, `_REGION`). CI starts moto_server.
    #[tokio::test]
    async fn conformance_on_s3() {
        let Some(store) = s3_from_env() else { return };
        adiuva_core::testing::blobs::run_all(&store, &prefix()).await;
        store.probe().await.expect("probe");
    }

    fn s3_from_env() -> Option<ObjectBlobs> {
        let var = |k: &str| std::env::var(format!("ADIUVA_TEST_S3_{k}")).ok();
        let endpoint = adiuva_core::testing::services::service(
            "ADIUVA_TEST_S3_ENDPOINT",
            "S3 blob store tests",
        )?;
        let options = S3Options {
            region: var("REGION"),
            endpoint: Some(endpoint),
            access_key_id: Some(Secret::new(
                var("ACCESS_KEY_ID").unwrap_or_else(|| "test".into()),
            )),
            secret_access_key: Some(Secret::new(
                var("SECRET_ACCESS_KEY").unwrap_or_else(|| "test".into()),
            )),
        };
        Some(
            ObjectBlobs::s3(
                &var("BUCKET").unwrap_or_else(|| "adiuva-test".into()),
                &options,
            )
            .expect("s3"),
        )
    }

    #[test]
    fn urls_choose_the_backend_or_say_why_not() {
        assert!(ObjectBlobs::from_url("memory://", &S3Options::default()).is_ok());
        assert!(
            ObjectBlobs::from_url(
                "s3://bucket",
                &S3Options {
                    endpoint: Some("http://127.0.0.1:1".into()),
                    ..Default::default()
                }
            )
            .is_ok()
        );
        for bad in ["ftp://x", "s3://", "s3://a/b", "sqlite://x"] {
            let e = ObjectBlobs::from_url(bad, &S3Options::default()).unwrap_err();
            assert!(!e.to_string().is_empty(), "{bad}");
        }
    }
}
