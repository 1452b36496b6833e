//! [`PineconeIndex`]: the [`VectorIndex`] port over a Pinecone serverless (or pod) index,
//! spoken to through Pinecone's REST data plane (API version `2025-04`).
//!
//! How the port maps onto Pinecone:
//! - One Pinecone index serves every user; the port's namespace (the user id) is the
//!   Pinecone namespace. The **dimension is the index's**, fixed when the index was
//!   created: a vector of another length is a `DimensionMismatch` naming the index's
//!   dimension, before any request. The index must use the `cosine` metric.
//! - The payload travels as metadata `{"blob": base64}`. Pinecone allows 40 KB of metadata
//!   per record, so payloads up to 30,711 bytes fit; larger ones are `Invalid`.
//! - Pinecone ids must be ASCII: ids (and namespaces) are percent-encoded on the way in
//!   (`%`, control and non-ASCII bytes only, so plain ids are stored as they are) and
//!   decoded on the way out.
//! - Search asks Pinecone for the top k and re-orders by (score desc, id asc), widening
//!   the request while equal scores straddle the cut so ties are resolved by id, not by
//!   Pinecone's arbitrary order. With an id filter it fetches those records and scores
//!   them locally (exact), since Pinecone's query cannot filter on ids.
//! - **Not exact on real Pinecone:** serverless search is approximate, and Pinecone is
//!   eventually consistent (a write may take a moment to be searchable).
//! - Requests go through [`crate::http`]: they time out (connect 5 s, whole request 30 s)
//!   and are retried with exponential backoff and jitter (or Pinecone's `Retry-After`) on
//!   429, 5xx and connection errors — every call is safe to repeat (upserts and deletes
//!   by id); other failures are reported with Pinecone's message, never with the API key.
//!
//! (About 750 lines: connecting — host lookup, metric and dimension checks — and the port's
//! operations with Pinecone's batching, tie-widening search and id filters belong
//! together; the wire types and encodings are in `wire.rs`.)

#[cfg(feature = "testing")]
pub mod fake;
mod wire;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use adiuva_core::Secret;
use adiuva_core::ports::vector::{VectorError, VectorFilter, VectorHit, VectorIndex, VectorPoint};
use adiuva_core::vector::exact::validate;
use adiuva_core::vector::{dedup_last, sort_hits};
use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::AdapterError;
use crate::http::{HttpClient, HttpConfig, HttpError, RetrySchedule};
use wire::*;

/// Pinecone's control plane (index management), used when no data-plane host is given.
pub const DEFAULT_CONTROLLER_URL: &str = "https://api.pinecone.io";
/// The REST API version this adapter speaks.
pub const API_VERSION: &str = "2025-04";
/// Pinecone's limit on one record's metadata, in bytes.
pub const METADATA_LIMIT: usize = 40 * 1024;
/// Pinecone's longest record id, in characters (after our percent-encoding).
pub const MAX_ID_LEN: usize = 512;
/// Pinecone's largest `topK`.
pub const MAX_TOP_K: usize = 10_000;

/// Pinecone recommends batches of at most 100 records per upsert.
const UPSERT_BATCH: usize = 100;
/// Pinecone refuses requests over 2 MB; stay clearly below.
const UPSERT_BYTES: usize = 1_900_000;
/// Ids per fetch (Pinecone allows 1,000, but they travel in the URL).
const FETCH_BATCH: usize = 100;
/// Bytes of encoded ids per fetch URL, well under common URL limits.
const FETCH_URL_BYTES: usize = 6_000;
/// Ids per delete request (Pinecone's limit).
const DELETE_BATCH: usize = 1_000;
/// Cap on one wait between attempts, including Pinecone's `Retry-After`.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(20);

/// How to reach one Pinecone index.
#[derive(Clone, Debug)]
pub struct PineconeConfig {
    /// The project's API key (sent as `Api-Key`; never logged or quoted in errors).
    pub api_key: Secret<String>,
    /// The index name.
    pub index: String,
    /// The index's data-plane URL (`https://idx-abc.svc.pinecone.io`; without a scheme,
    /// https is assumed). `None`: asked of the control plane at connect.
    pub host: Option<String>,
    /// Pinecone's control plane, normally [`DEFAULT_CONTROLLER_URL`].
    pub controller_url: String,
}

impl PineconeConfig {
    /// An index found through the default control plane.
    pub fn new(api_key: impl Into<String>, index: impl Into<String>) -> Self {
        Self {
            api_key: Secret::new(api_key.into()),
            index: index.into(),
            host: None,
            controller_url: DEFAULT_CONTROLLER_URL.into(),
        }
    }
}

/// Retry schedule for transient failures (429, 5xx, connection errors, timeouts).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// Wait before the second attempt; doubled before each further one.
    pub base_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            base_delay: Duration::from_millis(100),
        }
    }
}

/// A [`VectorIndex`] backed by one Pinecone index (see the module docs).
#[derive(Clone, Debug)]
pub struct PineconeIndex {
    http: HttpClient,
    /// Data-plane base URL, without a trailing slash.
    host: String,
    index: String,
    dim: usize,
}

/// Why one HTTP exchange failed, before it is given the port's meaning.
#[derive(Debug)]
enum Failure {
    /// Pinecone answered with an error status.
    Status { status: StatusCode, message: String },
    /// No usable answer: connection, timeout, or a body we could not read.
    Transport(String),
}

impl From<HttpError> for Failure {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::Status {
                status,
                message,
                attempts,
                ..
            } => Failure::Status {
                status,
                message: match attempts {
                    1 => message,
                    n => format!("{message} (after {n} attempts)"),
                },
            },
            other => Failure::Transport(other.to_string()),
        }
    }
}

impl Failure {
    fn describe(&self, what: &str) -> String {
        match self {
            Failure::Status { status, message } => {
                let hint = if matches!(*status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                    " (check the Pinecone API key)"
                } else {
                    ""
                };
                format!("Pinecone {what} failed: HTTP {status}: {message}{hint}")
            }
            Failure::Transport(e) => format!("Pinecone {what} failed: {e}"),
        }
    }

    fn is_status(&self, s: StatusCode) -> bool {
        matches!(self, Failure::Status { status, .. } if *status == s)
    }

    /// A data-plane failure as the port's error. A 400 on a write or query is about
    /// what we sent; Pinecone's own dimension message becomes a `DimensionMismatch`.
    fn into_vector_error(self, what: &str, about_vectors: bool) -> VectorError {
        if let Failure::Status {
            status: StatusCode::BAD_REQUEST,
            message,
        } = &self
        {
            if let Some((got, expected)) = parse_dimension_message(message) {
                return VectorError::DimensionMismatch { expected, got };
            }
            if about_vectors {
                return VectorError::Invalid(format!("Pinecone refused the {what}: {message}"));
            }
        }
        VectorError::Unavailable(self.describe(what))
    }
}

/// Pinecone retries rate limiting and every 5xx (its 500s are transient too).
fn transient(status: StatusCode, _body: &[u8]) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

fn schedule(retry: RetryPolicy) -> RetrySchedule {
    RetrySchedule {
        max_retries: retry.attempts.max(1) - 1,
        base_delay: retry.base_delay,
        max_delay: MAX_RETRY_DELAY,
    }
}

fn client(api_key: &Secret<String>) -> Result<HttpClient, AdapterError> {
    let key = crate::http::sensitive(api_key.expose()).ok_or_else(|| {
        AdapterError::Connect(
            "the Pinecone API key holds characters an HTTP header cannot carry".into(),
        )
    })?;
    let mut headers = HeaderMap::new();
    headers.insert(HeaderName::from_static("api-key"), key);
    headers.insert(
        "X-Pinecone-API-Version",
        HeaderValue::from_static(API_VERSION),
    );
    let cfg = HttpConfig {
        connect_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(30),
        retry: schedule(RetryPolicy::default()),
    };
    HttpClient::new(cfg, headers, [api_key.clone()])
}

impl PineconeIndex {
    /// Connects to the index: resolves its host through the control plane when
    /// `cfg.host` is `None`, then learns its dimension and metric (control plane, or the
    /// data plane's `describe_index_stats` when a host is given) and checks that the
    /// data plane answers. Fails unless the metric is cosine and the vectors are dense.
    pub async fn connect(cfg: PineconeConfig) -> Result<Self, AdapterError> {
        if cfg.api_key.expose().trim().is_empty() {
            return Err(AdapterError::Connect(
                "the Pinecone API key is empty; set it to a key of the index's project".into(),
            ));
        }
        if cfg.index.trim().is_empty() {
            return Err(AdapterError::Connect(
                "the Pinecone index name is empty; name an existing index".into(),
            ));
        }
        let mut index = Self {
            http: client(&cfg.api_key)?,
            host: String::new(),
            index: cfg.index.clone(),
            dim: 0,
        };
        let described = match &cfg.host {
            Some(host) => {
                index.host = base_url(host);
                None
            }
            None => {
                let model = index.describe_index(&cfg.controller_url).await?;
                if let Some(IndexStatus {
                    ready: Some(false),
                    state,
                }) = &model.status
                {
                    return Err(AdapterError::Connect(format!(
                        "Pinecone index {:?} is not ready yet (state {}); try again shortly",
                        cfg.index,
                        state.as_deref().unwrap_or("unknown")
                    )));
                }
                let host = model.host.as_deref().ok_or_else(|| {
                    AdapterError::Connect(format!(
                        "Pinecone's control plane gave no host for index {:?}; it may still \
                         be initialising, or set the host explicitly",
                        cfg.index
                    ))
                })?;
                index.host = base_url(host);
                Some(model)
            }
        };
        let stats: IndexStats = index
            .request(
                Method::POST,
                "/describe_index_stats",
                Some(&serde_json::json!({})),
            )
            .await
            .map_err(|f| {
                AdapterError::Connect(format!(
                    "cannot use Pinecone index {:?} at {}: {}",
                    cfg.index,
                    index.host,
                    f.describe("describe_index_stats")
                ))
            })?;
        let (dim, metric, vector_type) = match described {
            Some(model) => (
                model.dimension.or(stats.dimension),
                model.metric,
                model.vector_type,
            ),
            None => {
                let metric = match stats.metric {
                    Some(m) => Some(m),
                    // Older API versions leave the metric out of the stats: ask the
                    // control plane for it.
                    None => index.describe_index(&cfg.controller_url).await?.metric,
                };
                (stats.dimension, metric, stats.vector_type)
            }
        };
        if let Some(t) = vector_type.filter(|t| t != "dense") {
            return Err(AdapterError::Connect(format!(
                "Pinecone index {:?} holds {t} vectors; Adiuva needs a dense index",
                cfg.index
            )));
        }
        let metric = metric.unwrap_or_default();
        if metric != "cosine" {
            return Err(AdapterError::Connect(format!(
                "Pinecone index {:?} uses the {:?} metric; Adiuva needs an index created \
                 with metric \"cosine\"",
                cfg.index, metric
            )));
        }
        index.dim = dim.filter(|&d| d > 0).ok_or_else(|| {
            AdapterError::Connect(format!(
                "Pinecone did not report the dimension of index {:?}",
                cfg.index
            ))
        })?;
        Ok(index)
    }

    /// Replaces the retry schedule (tests use a short one).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.http = self.http.with_retry(schedule(retry));
        self
    }

    /// The index's dimension: every stored or queried vector must have this length.
    pub fn dimension(&self) -> usize {
        self.dim
    }

    /// The data-plane URL in use.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The index name.
    pub fn index_name(&self) -> &str {
        &self.index
    }

    /// `GET {controller}/indexes/{name}`, its failures as operator-facing sentences.
    async fn describe_index(&self, controller: &str) -> Result<IndexModel, AdapterError> {
        let base = base_url(controller);
        let mut url = Url::parse(&base).map_err(|e| {
            AdapterError::Connect(format!(
                "the Pinecone controller URL {base:?} is invalid: {e}"
            ))
        })?;
        url.path_segments_mut()
            .map_err(|_| {
                AdapterError::Connect(format!(
                    "the Pinecone controller URL {base:?} cannot take a path"
                ))
            })?
            .pop_if_empty()
            .extend(["indexes", &self.index]);
        self.send(Method::GET, url, None)
            .await
            .and_then(|body| self.parse(&body))
            .map_err(|f| {
                let why = match &f {
                    Failure::Status { status, .. } if *status == StatusCode::NOT_FOUND => format!(
                        "Pinecone has no index named {:?} in the API key's project",
                        self.index
                    ),
                    _ => format!("cannot describe Pinecone index {:?}", self.index),
                };
                AdapterError::Connect(format!("{why}: {}", f.describe("describe_index")))
            })
    }

    fn url(&self, path: &str) -> Result<Url, Failure> {
        Url::parse(&format!("{}{path}", self.host))
            .map_err(|e| Failure::Transport(format!("invalid Pinecone URL {:?}: {e}", self.host)))
    }

    fn parse<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T, Failure> {
        serde_json::from_slice(body).map_err(|e| {
            Failure::Transport(format!(
                "unexpected response ({e}): {}",
                self.http.message(body)
            ))
        })
    }

    /// One call with a JSON body and a JSON answer.
    async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, Failure> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| Failure::Transport(format!("cannot encode the request: {e}")))?
            .map(Bytes::from);
        let answer = self.send(method, self.url(path)?, body).await?;
        self.parse(&answer)
    }

    /// Sends with retries on transient failures; the body of a 2xx answer.
    async fn send(&self, method: Method, url: Url, body: Option<Bytes>) -> Result<Bytes, Failure> {
        let mut call = self
            .http
            .call(method, url.as_str())
            .replay_safe()
            .retry_when(transient);
        if let Some(body) = body {
            call = call.json(body);
        }
        Ok(call.send().await?)
    }

    fn check_dim(&self, len: usize) -> Result<(), VectorError> {
        if len != self.dim {
            return Err(VectorError::DimensionMismatch {
                expected: self.dim,
                got: len,
            });
        }
        Ok(())
    }

    /// The records among `ids` (already encoded) that exist: encoded id → record.
    async fn fetch(
        &self,
        namespace: &str,
        ids: &[String],
    ) -> Result<HashMap<String, FetchedVector>, VectorError> {
        let mut found = HashMap::new();
        for chunk in fetch_chunks(ids) {
            let mut url = self
                .url("/vectors/fetch")
                .map_err(|f| f.into_vector_error("fetch", false))?;
            {
                let mut q = url.query_pairs_mut();
                for id in chunk {
                    q.append_pair("ids", id);
                }
                q.append_pair("namespace", namespace);
            }
            let body = self
                .send(Method::GET, url, None)
                .await
                .map_err(|f| f.into_vector_error("fetch", false))?;
            let resp: FetchResponse = self
                .parse(&body)
                .map_err(|f| f.into_vector_error("fetch", false))?;
            found.extend(resp.vectors);
        }
        Ok(found)
    }

    /// Exact search among the named ids: fetch them and score locally.
    async fn search_ids(
        &self,
        namespace: &str,
        query: &[f32],
        top_k: usize,
        ids: &[String],
    ) -> Result<Vec<VectorHit>, VectorError> {
        let mut seen = HashSet::new();
        let encoded: Vec<String> = ids
            .iter()
            .filter(|id| seen.insert(id.as_str()))
            .map(|id| encode_id(id))
            .collect();
        let mut hits = Vec::new();
        for (id, v) in self.fetch(namespace, &encoded).await? {
            hits.push(VectorHit {
                id: decode_returned_id(&id)?,
                score: cosine(query, &v.values),
                payload: decode_payload(v.metadata)?,
            });
        }
        sort_hits(&mut hits);
        hits.truncate(top_k);
        Ok(hits)
    }

    async fn query(
        &self,
        namespace: &str,
        query: &[f32],
        top_k: usize,
    ) -> Result<Vec<Match>, VectorError> {
        let req = QueryRequest {
            namespace,
            vector: query,
            top_k,
            include_metadata: true,
            include_values: false,
        };
        match self
            .request::<QueryResponse>(Method::POST, "/query", Some(&req))
            .await
        {
            Ok(r) => Ok(r.matches),
            // Some Pinecone deployments answer a query of an unknown namespace with 404.
            Err(f) if f.is_status(StatusCode::NOT_FOUND) => Ok(Vec::new()),
            Err(f) => Err(f.into_vector_error("query", true)),
        }
    }
}

#[async_trait]
impl VectorIndex for PineconeIndex {
    #[tracing::instrument(skip_all, fields(points = points.len()), err)]
    async fn upsert(
        &self,
        namespace: &str,
        points: Vec<VectorPoint>,
    ) -> Result<usize, VectorError> {
        let points = dedup_last(points);
        // Everything is checked before the first request, so a refused batch stores nothing.
        let mut encoded = Vec::with_capacity(points.len());
        for p in &points {
            validate(&p.vector)?;
            self.check_dim(p.vector.len())?;
            if p.id.is_empty() {
                return Err(VectorError::Invalid("a point has an empty id".into()));
            }
            let id = encode_id(&p.id);
            if id.len() > MAX_ID_LEN {
                return Err(VectorError::Invalid(format!(
                    "the id {:?} is longer than Pinecone's {MAX_ID_LEN} characters once encoded",
                    p.id
                )));
            }
            let blob = base64::engine::general_purpose::STANDARD.encode(&p.payload);
            let metadata = WireMetadata { blob: &blob };
            let metadata_len = serde_json::to_vec(&metadata)
                .map_err(|e| VectorError::Other(Box::new(e)))?
                .len();
            if metadata_len > METADATA_LIMIT {
                return Err(VectorError::Invalid(format!(
                    "the payload of {:?} is {} bytes; as Pinecone metadata (base64) it takes \
                     {metadata_len} bytes, over Pinecone's limit of {METADATA_LIMIT} per record",
                    p.id,
                    p.payload.len()
                )));
            }
            let json = serde_json::to_vec(&WireVector {
                id: &id,
                values: &p.vector,
                metadata,
            })
            .map_err(|e| VectorError::Other(Box::new(e)))?;
            encoded.push(json);
        }
        let ns = serde_json::to_string(&encode_id(namespace))
            .map_err(|e| VectorError::Other(Box::new(e)))?;
        let url = self
            .url("/vectors/upsert")
            .map_err(|f| f.into_vector_error("upsert", true))?;
        let mut rest = &encoded[..];
        while !rest.is_empty() {
            // Up to 100 records and under 2 MB per request.
            let mut n = 0;
            let mut size = 0;
            while n < rest.len()
                && n < UPSERT_BATCH
                && (n == 0 || size + rest[n].len() < UPSERT_BYTES)
            {
                size += rest[n].len() + 1;
                n += 1;
            }
            let (batch, tail) = rest.split_at(n);
            rest = tail;
            let mut body = Vec::with_capacity(size + ns.len() + 32);
            body.extend_from_slice(b"{\"vectors\":[");
            body.extend_from_slice(&batch.join(&b","[..]));
            body.extend_from_slice(b"],\"namespace\":");
            body.extend_from_slice(ns.as_bytes());
            body.push(b'}');
            self.send(Method::POST, url.clone(), Some(Bytes::from(body)))
                .await
                .map_err(|f| f.into_vector_error("upsert", true))?;
        }
        Ok(points.len())
    }

    #[tracing::instrument(skip_all, fields(top_k), err)]
    async fn search(
        &self,
        namespace: &str,
        query: &[f32],
        top_k: usize,
        filter: &VectorFilter,
    ) -> Result<Vec<VectorHit>, VectorError> {
        validate(query)?;
        self.check_dim(query.len())?;
        if top_k == 0 {
            return Ok(Vec::new());
        }
        let ns = encode_id(namespace);
        if let Some(ids) = &filter.ids {
            return self.search_ids(&ns, query, top_k, ids).await;
        }
        let top_k = top_k.min(MAX_TOP_K);
        // Ask for one more than needed: if it scores as high as the k-th, equal scores
        // straddle the cut and Pinecone chose among them arbitrarily, so widen until
        // the whole tie is in hand and the contract's id order can decide.
        let mut asked = (top_k + 1).min(MAX_TOP_K);
        let matches = loop {
            let matches = self.query(&ns, query, asked).await?;
            let straddles = matches.len() == asked
                && asked > top_k
                && matches[top_k].score >= matches[top_k - 1].score;
            if !straddles || asked == MAX_TOP_K {
                break matches;
            }
            asked = (asked * 2).min(MAX_TOP_K);
        };
        let mut hits = Vec::with_capacity(matches.len());
        for m in matches {
            hits.push(VectorHit {
                id: decode_returned_id(&m.id)?,
                score: m.score.clamp(-1.0, 1.0),
                payload: decode_payload(m.metadata)?,
            });
        }
        sort_hits(&mut hits);
        hits.truncate(top_k);
        Ok(hits)
    }

    #[tracing::instrument(skip_all, fields(ids = ids.len()), err)]
    async fn delete(&self, namespace: &str, ids: &[String]) -> Result<usize, VectorError> {
        let ns = encode_id(namespace);
        let mut seen = HashSet::new();
        let encoded: Vec<String> = ids
            .iter()
            .filter(|id| seen.insert(id.as_str()))
            .map(|id| encode_id(id))
            .collect();
        if encoded.is_empty() {
            return Ok(0);
        }
        // Pinecone's delete does not say what it removed: count by fetching first.
        let found = self.fetch(&ns, &encoded).await?;
        let existing: Vec<String> = encoded
            .into_iter()
            .filter(|id| found.contains_key(id))
            .collect();
        for chunk in existing.chunks(DELETE_BATCH) {
            let req = DeleteRequest {
                ids: Some(chunk),
                delete_all: false,
                namespace: &ns,
            };
            match self
                .request::<serde_json::Value>(Method::POST, "/vectors/delete", Some(&req))
                .await
            {
                // The namespace vanished meanwhile: nothing left to delete.
                Err(f) if f.is_status(StatusCode::NOT_FOUND) => {}
                Err(f) => return Err(f.into_vector_error("delete", false)),
                Ok(_) => {}
            }
        }
        Ok(existing.len())
    }

    #[tracing::instrument(skip_all, err)]
    async fn delete_namespace(&self, namespace: &str) -> Result<(), VectorError> {
        let ns = encode_id(namespace);
        let req = DeleteRequest {
            ids: None,
            delete_all: true,
            namespace: &ns,
        };
        match self
            .request::<serde_json::Value>(Method::POST, "/vectors/delete", Some(&req))
            .await
        {
            // Pinecone answers 404 "Namespace not found" for a namespace with no records.
            Ok(_) => Ok(()),
            Err(f) if f.is_status(StatusCode::NOT_FOUND) => Ok(()),
            Err(f) => Err(f.into_vector_error("delete_namespace", false)),
        }
    }

    fn name(&self) -> &'static str {
        "pinecone"
    }
}

/// The index named by the server's settings (`pinecone_api_key`, `pinecone_index`,
/// `pinecone_host`, `pinecone_controller_url`), with a description for logs.
pub async fn connect(
    settings: &super::VectorSettings,
) -> Result<(std::sync::Arc<dyn VectorIndex>, String), AdapterError> {
    let (Some(api_key), Some(index)) = (&settings.pinecone_api_key, &settings.pinecone_index)
    else {
        return Err(AdapterError::Unsupported(
            "the pinecone vector index needs pinecone_api_key and pinecone_index".into(),
        ));
    };
    let cfg = PineconeConfig {
        api_key: api_key.clone(),
        index: index.clone(),
        host: settings.pinecone_host.clone(),
        controller_url: settings.pinecone_controller_url.clone(),
    };
    let pinecone = PineconeIndex::connect(cfg).await?;
    let location = format!(
        "pinecone index '{}' at {} ({} dimensions)",
        pinecone.index_name(),
        adiuva_core::secret::redact_url(pinecone.host()),
        pinecone.dimension()
    );
    Ok((std::sync::Arc::new(pinecone), location))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_never_carry_the_key() {
        let error_message = |body: &[u8], key: &str| {
            client(&Secret::new(key.to_owned()))
                .expect("client")
                .message(body)
        };
        let body = br#"{"code":16,"message":"Invalid API Key pcsk_secret","details":[]}"#;
        assert_eq!(error_message(body, "pcsk_secret"), "Invalid API Key ***");
        let body =
            br#"{"error":{"code":"NOT_FOUND","message":"Resource x not found"},"status":404}"#;
        assert_eq!(error_message(body, "key-123"), "Resource x not found");
        assert_eq!(
            error_message(b"upstream connect error", "key-123"),
            "upstream connect error"
        );
    }
}
