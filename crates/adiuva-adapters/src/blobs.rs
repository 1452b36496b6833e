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

use std::sync::Arc;

use adiuva_core::ports::blob::{BlobError, BlobInfo, BlobStore, ByteStream};
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
    pub access_key_id: Option<String>,
    /// Secret key.
    pub secret_access_key: Option<String>,
}

/// A [`BlobStore`] over any `object_store` backend.
#[derive(Debug, Clone)]
pub struct ObjectBlobs {
    store: Arc<dyn ObjectStore>,
    keeps_metadata: bool,
    location: String,
}

impl ObjectBlobs {
    /// Blobs in memory (lost on restart; for tests and experiments).
    pub fn memory() -> Self {
        Self {
            store: Arc::new(InMemory::new()),
            keeps_metadata: true,
            location: "in memory (lost on restart)".into(),
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
        let store = LocalFileSystem::new_with_prefix(dir).map_err(|e| {
            AdapterError::Connect(format!(
                "the blob directory {} cannot be used: {e}",
                dir.display()
            ))
        })?;
        Ok(Self {
            store: Arc::new(store),
            keeps_metadata: false,
            location: dir.display().to_string(),
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
            b = b.with_access_key_id(id).with_secret_access_key(secret);
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

    async fn list(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
        let prefix = if prefix.is_empty() {
            None
        } else {
            Some(path(prefix)?)
        };
        self.store
            .list(prefix.as_ref())
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .map_err(blob_err)
    }
}

/// Builds the store for `url` and proves it usable; returns where the blobs are.
pub async fn check_blob_url(url: &str, s3: &S3Options) -> Result<String, AdapterError> {
    let store = ObjectBlobs::from_url(url, s3)?;
    store.probe().await?;
    Ok(store.location().to_owned())
}

#[cfg(test)]
mod tests {
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
            access_key_id: Some(var("ACCESS_KEY_ID").unwrap_or_else(|| "test".into())),
            secret_access_key: Some(var("SECRET_ACCESS_KEY").unwrap_or_else(|| "test".into())),
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
