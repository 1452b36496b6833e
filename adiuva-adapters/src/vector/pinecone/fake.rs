//! [`PineconeFake`]: an in-memory Pinecone that speaks the REST wire format (control
//! plane `GET /indexes/{name}` and the data plane) on one real socket, for tests.
//!
//! It follows Pinecone's documented behaviour rather than what [`super::PineconeIndex`]
//! happens to send: the `Api-Key` header is required (401 otherwise), the dimension and
//! metric are fixed when the fake starts, wrong-length and all-zero vectors, non-ASCII
//! or over-long ids, null metadata values and metadata over 40 KB are refused with 400
//! and a gRPC-style body (`{"code":3,"message":…,"details":[]}`), upserts take at most
//! 1,000 records and 2 MB, fetch and delete at most 1,000 ids, `topK` is 1..=10,000,
//! `deleteAll` of an unknown namespace is 404 "Namespace not found", and records with
//! equal scores come back in no particular order. Scores are exact.
//!
//! For tests of the client's resilience, [`PineconeFake::fail_next`] and
//! [`PineconeFake::fail_always`] make requests fail with a chosen status.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use poem::http::{Method, StatusCode};
use poem::{Request, Response};
use serde_json::{Map, Value, json};

use super::{MAX_ID_LEN, MAX_TOP_K, METADATA_LIMIT};
use crate::fake_server::{LocalServer, lock};

/// Pinecone's largest upsert request.
const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;
/// Pinecone's largest upsert, fetch or delete batch.
const MAX_BATCH: usize = 1_000;

/// A running fake Pinecone project holding one index. Stops when dropped.
pub struct PineconeFake {
    shared: Arc<Shared>,
    server: LocalServer,
}

struct Shared {
    api_key: String,
    index: String,
    dim: usize,
    metric: String,
    base_url: String,
    /// namespace → id → record. A namespace exists while it holds records.
    data: Mutex<BTreeMap<String, HashMap<String, Record>>>,
    faults: Mutex<Faults>,
    requests: AtomicUsize,
    last_api_version: Mutex<Option<String>>,
}

#[derive(Default)]
struct Faults {
    next: VecDeque<StatusCode>,
    always: Option<StatusCode>,
}

#[derive(Clone)]
struct Record {
    values: Vec<f32>,
    metadata: Option<Map<String, Value>>,
}

/// A 4xx/5xx answer.
struct Reply(StatusCode, Value);

type Answer = Result<Value, Reply>;

/// The data plane's gRPC-gateway style error (`code` is the gRPC status code).
fn grpc_error(status: StatusCode, code: u8, message: impl Into<String>) -> Reply {
    Reply(
        status,
        json!({"code": code, "message": message.into(), "details": []}),
    )
}

fn bad_request(message: impl Into<String>) -> Reply {
    grpc_error(StatusCode::BAD_REQUEST, 3, message)
}

impl PineconeFake {
    /// Starts a fake whose index `index` is cosine with `dimension`, accepting `api_key`,
    /// on 127.0.0.1 and a free port.
    pub async fn start(api_key: &str, index: &str, dimension: usize) -> std::io::Result<Self> {
        Self::start_with_metric(api_key, index, dimension, "cosine").await
    }

    /// As [`start`](Self::start), with another metric (`dotproduct`, `euclidean`).
    pub async fn start_with_metric(
        api_key: &str,
        index: &str,
        dimension: usize,
        metric: &str,
    ) -> std::io::Result<Self> {
        let mut shared = None;
        let server = LocalServer::start("Pinecone", |addr| {
            let state = Arc::new(Shared {
                api_key: api_key.into(),
                index: index.into(),
                dim: dimension,
                metric: metric.into(),
                base_url: format!("http://{addr}"),
                data: Mutex::default(),
                faults: Mutex::default(),
                requests: AtomicUsize::new(0),
                last_api_version: Mutex::default(),
            });
            shared = Some(state.clone());
            poem::endpoint::make(move |req: Request| {
                let state = state.clone();
                async move { state.handle(req).await }
            })
        })
        .await?;
        let shared = shared.ok_or_else(|| std::io::Error::other("the fake was not built"))?;
        Ok(Self { shared, server })
    }

    /// `http://127.0.0.1:<port>`: both the control plane and the index's host.
    pub fn url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The next `n` requests (any route) fail with `status` before being looked at.
    pub fn fail_next(&self, n: usize, status: u16) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        lock(&self.shared.faults)
            .next
            .extend(std::iter::repeat_n(status, n));
    }

    /// Every request fails with `status` until called with `None`.
    pub fn fail_always(&self, status: Option<u16>) {
        lock(&self.shared.faults).always =
            status.map(|s| StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    }

    /// How many requests arrived so far (failed ones included).
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// The `X-Pinecone-API-Version` header of the latest request, if it had one.
    pub fn last_api_version(&self) -> Option<String> {
        lock(&self.shared.last_api_version).clone()
    }

    /// Records stored in `namespace`.
    pub fn vector_count(&self, namespace: &str) -> usize {
        lock(&self.shared.data)
            .get(namespace)
            .map_or(0, HashMap::len)
    }

    /// The stored metadata of one record, as Pinecone would return it.
    pub fn metadata(&self, namespace: &str, id: &str) -> Option<Value> {
        lock(&self.shared.data)
            .get(namespace)?
            .get(id)?
            .metadata
            .clone()
            .map(Value::Object)
    }
}

impl PineconeFake {
    /// Stops listening and closes every connection; returns once the port is closed.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

fn respond(status: StatusCode, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(body.to_string())
}

/// A field under its proto3 JSON name or its original snake_case name (Pinecone's
/// gateway accepts both).
fn field<'a>(obj: &'a Map<String, Value>, camel: &str, snake: &str) -> Option<&'a Value> {
    obj.get(camel).or_else(|| obj.get(snake))
}

fn namespace_of(obj: &Map<String, Value>) -> Result<String, Reply> {
    match obj.get("namespace") {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(bad_request("namespace must be a string")),
    }
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, Reply> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad_request("the request body must be a JSON object")),
        Err(e) => Err(bad_request(format!(
            "Failed to deserialize the JSON body: {e}"
        ))),
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum()
}

impl Shared {
    async fn handle(self: Arc<Self>, req: Request) -> Response {
        self.requests.fetch_add(1, Ordering::SeqCst);
        *lock(&self.last_api_version) = req.header("X-Pinecone-API-Version").map(str::to_owned);
        let injected = {
            let mut f = lock(&self.faults);
            f.next.pop_front().or(f.always)
        };
        if let Some(status) = injected {
            return respond(
                status,
                &json!({"code": 14, "message": format!("injected failure ({status})"), "details": []}),
            );
        }
        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
        let query = req.uri().query().unwrap_or_default().to_owned();
        let control = path.starts_with("/indexes");
        if req.header("Api-Key") != Some(self.api_key.as_str()) {
            let body = if control {
                json!({"error": {"code": "UNAUTHENTICATED", "message": "Invalid API Key"}, "status": 401})
            } else {
                json!({"code": 16, "message": "Invalid API Key", "details": []})
            };
            return respond(StatusCode::UNAUTHORIZED, &body);
        }
        let body = match req.into_body().into_bytes().await {
            Ok(b) => b,
            Err(e) => return respond(StatusCode::BAD_REQUEST, &json!({"message": e.to_string()})),
        };
        let answer = match (&method, path.as_str()) {
            (&Method::GET, p) if p.starts_with("/indexes/") => self.describe_index(&p[9..]),
            (&Method::POST, "/vectors/upsert") => self.upsert(&body),
            (&Method::POST, "/query") => self.query(&body),
            (&Method::POST, "/vectors/delete") => self.delete(&body),
            (&Method::GET, "/vectors/fetch") => self.fetch(&query),
            (&Method::POST | &Method::GET, "/describe_index_stats") => self.stats(),
            (_, "/vectors/upsert" | "/query" | "/vectors/delete" | "/vectors/fetch") => Err(
                grpc_error(StatusCode::METHOD_NOT_ALLOWED, 12, "Method Not Allowed"),
            ),
            _ => Err(grpc_error(StatusCode::NOT_FOUND, 5, "Not Found")),
        };
        match answer {
            Ok(v) => respond(StatusCode::OK, &v),
            Err(Reply(status, v)) => respond(status, &v),
        }
    }

    fn describe_index(&self, name: &str) -> Answer {
        let name = percent_decode(name);
        if name != self.index {
            return Err(Reply(
                StatusCode::NOT_FOUND,
                json!({"error": {"code": "NOT_FOUND", "message": format!("Resource {name} not found")}, "status": 404}),
            ));
        }
        Ok(json!({
            "name": self.index,
            "vector_type": "dense",
            "metric": self.metric,
            "dimension": self.dim,
            "status": {"ready": true, "state": "Ready"},
            "host": self.base_url,
            "spec": {"serverless": {"cloud": "aws", "region": "us-east-1"}},
            "deletion_protection": "disabled",
            "tags": null,
        }))
    }

    fn stats(&self) -> Answer {
        let data = lock(&self.data);
        let namespaces: Map<String, Value> = data
            .iter()
            .map(|(ns, recs)| (ns.clone(), json!({"vectorCount": recs.len()})))
            .collect();
        let total: usize = data.values().map(HashMap::len).sum();
        Ok(json!({
            "namespaces": namespaces,
            "dimension": self.dim,
            "indexFullness": 0.0,
            "totalVectorCount": total,
            "metric": self.metric,
            "vectorType": "dense",
        }))
    }

    /// A dense vector as Pinecone checks it: numbers, the index's length, not all zero.
    fn values(&self, v: Option<&Value>, what: &str) -> Result<Vec<f32>, Reply> {
        let Some(Value::Array(items)) = v else {
            return Err(bad_request(format!("{what} must be an array of numbers")));
        };
        let values = items
            .iter()
            .map(|x| x.as_f64().map(|f| f as f32))
            .collect::<Option<Vec<f32>>>()
            .ok_or_else(|| bad_request(format!("{what} must hold only numbers")))?;
        if values.len() != self.dim {
            let prefix = if what == "vector" {
                "Query vector"
            } else {
                "Vector"
            };
            return Err(bad_request(format!(
                "{prefix} dimension {} does not match the dimension of the index {}",
                values.len(),
                self.dim
            )));
        }
        if values.iter().all(|x| *x == 0.0) {
            return Err(bad_request(
                "Dense vectors must contain at least one non-zero value.",
            ));
        }
        Ok(values)
    }

    fn record(&self, v: &Value) -> Result<(String, Record), Reply> {
        let Value::Object(obj) = v else {
            return Err(bad_request("each vector must be an object"));
        };
        let id = match obj.get("id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(bad_request("Vector ID must not be empty")),
        };
        if !id.is_ascii() {
            return Err(bad_request(format!("ID must be ASCII, but got '{id}'")));
        }
        if id.len() > MAX_ID_LEN {
            return Err(bad_request(format!(
                "Vector ID length {} exceeds the limit of {MAX_ID_LEN} characters",
                id.len()
            )));
        }
        let values = self.values(obj.get("values"), "values")?;
        let metadata = match obj.get("metadata") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let ok = match v {
                        Value::String(_) | Value::Number(_) | Value::Bool(_) => true,
                        Value::Array(a) => a.iter().all(Value::is_string),
                        Value::Null | Value::Object(_) => false,
                    };
                    if !ok {
                        return Err(bad_request(format!(
                            "Metadata value for field {k} must be a string, number, boolean \
                             or list of strings"
                        )));
                    }
                }
                let size = Value::Object(m.clone()).to_string().len();
                if size > METADATA_LIMIT {
                    return Err(bad_request(format!(
                        "Metadata size is {size} bytes, which exceeds the limit of \
                         {METADATA_LIMIT} bytes per vector"
                    )));
                }
                Some(m.clone())
            }
            Some(_) => return Err(bad_request("metadata must be an object")),
        };
        Ok((id, Record { values, metadata }))
    }

    fn upsert(&self, body: &Bytes) -> Answer {
        if body.len() > MAX_REQUEST_BYTES {
            return Err(bad_request(format!(
                "Request size {} bytes exceeds the maximum supported size of {MAX_REQUEST_BYTES} bytes",
                body.len()
            )));
        }
        let obj = parse_object(body)?;
        let ns = namespace_of(&obj)?;
        let Some(Value::Array(vectors)) = obj.get("vectors") else {
            return Err(bad_request("vectors: field is required"));
        };
        if vectors.is_empty() || vectors.len() > MAX_BATCH {
            return Err(bad_request(format!(
                "Invalid upsert: the batch holds {} vectors; it must hold 1 to {MAX_BATCH}",
                vectors.len()
            )));
        }
        // The whole request is checked before anything is stored.
        let records = vectors
            .iter()
            .map(|v| self.record(v))
            .collect::<Result<Vec<_>, _>>()?;
        let n = records.len();
        lock(&self.data).entry(ns).or_default().extend(records);
        Ok(json!({"upsertedCount": n}))
    }

    fn score(&self, q: &[f32], v: &[f32]) -> f64 {
        match self.metric.as_str() {
            "dotproduct" => dot(q, v),
            "euclidean" => q
                .iter()
                .zip(v)
                .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
                .sum(),
            _ => dot(q, v) / (dot(q, q).sqrt() * dot(v, v).sqrt()),
        }
    }

    fn query(&self, body: &Bytes) -> Answer {
        let obj = parse_object(body)?;
        let ns = namespace_of(&obj)?;
        let top_k = field(&obj, "topK", "top_k")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad_request("topK: field is required"))?;
        if top_k < 1 || top_k > MAX_TOP_K as u64 {
            return Err(bad_request(format!(
                "Invalid value for topK: {top_k}; it must be between 1 and {MAX_TOP_K}"
            )));
        }
        let flag = |camel, snake| field(&obj, camel, snake).and_then(Value::as_bool) == Some(true);
        let (with_meta, with_values) = (
            flag("includeMetadata", "include_metadata"),
            flag("includeValues", "include_values"),
        );
        let data = lock(&self.data);
        let records = data.get(&ns);
        let q = match (obj.get("vector"), obj.get("id")) {
            (Some(v), None) => self.values(Some(v), "vector")?,
            (None, Some(Value::String(id))) => match records.and_then(|r| r.get(id)) {
                Some(r) => r.values.clone(),
                None => {
                    return Ok(json!({"matches": [], "namespace": ns, "usage": {"readUnits": 1}}));
                }
            },
            _ => {
                return Err(bad_request("Exactly one of vector or id must be given"));
            }
        };
        // HashMap order: like Pinecone, nothing is promised among equal scores.
        let mut scored: Vec<(f64, &String, &Record)> = records
            .into_iter()
            .flatten()
            .map(|(id, r)| (self.score(&q, &r.values), id, r))
            .collect();
        if self.metric == "euclidean" {
            scored.sort_by(|a, b| a.0.total_cmp(&b.0));
        } else {
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        }
        let matches: Vec<Value> = scored
            .into_iter()
            .take(top_k as usize)
            .map(|(score, id, r)| {
                let mut m = json!({
                    "id": id,
                    "score": score as f32,
                    "values": if with_values { r.values.clone() } else { Vec::new() },
                });
                if let (true, Some(md)) = (with_meta, &r.metadata) {
                    m["metadata"] = Value::Object(md.clone());
                }
                m
            })
            .collect();
        Ok(json!({"results": [], "matches": matches, "namespace": ns, "usage": {"readUnits": 1}}))
    }

    fn delete(&self, body: &Bytes) -> Answer {
        let obj = parse_object(body)?;
        let ns = namespace_of(&obj)?;
        let all = field(&obj, "deleteAll", "delete_all").and_then(Value::as_bool) == Some(true);
        let ids = match obj.get("ids") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad_request("ids must be strings"))?,
            ),
            Some(_) => return Err(bad_request("ids must be an array of strings")),
        };
        let mut data = lock(&self.data);
        match (all, ids) {
            (true, None) => {
                if data.remove(&ns).is_none() {
                    return Err(grpc_error(StatusCode::NOT_FOUND, 5, "Namespace not found"));
                }
            }
            (false, Some(ids)) if !ids.is_empty() && ids.len() <= MAX_BATCH => {
                if let Some(recs) = data.get_mut(&ns) {
                    for id in &ids {
                        recs.remove(id);
                    }
                    if recs.is_empty() {
                        data.remove(&ns);
                    }
                }
            }
            (false, Some(ids)) if ids.len() > MAX_BATCH => {
                return Err(bad_request(format!(
                    "Invalid delete: at most {MAX_BATCH} ids per request, got {}",
                    ids.len()
                )));
            }
            _ => {
                return Err(bad_request(
                    "Exactly one of ids, deleteAll or filter must be given",
                ));
            }
        }
        Ok(json!({}))
    }

    fn fetch(&self, query: &str) -> Answer {
        let mut ids = Vec::new();
        let mut ns = String::new();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "ids" => ids.push(v.into_owned()),
                "namespace" => ns = v.into_owned(),
                _ => {}
            }
        }
        if ids.is_empty() || ids.len() > MAX_BATCH {
            return Err(bad_request(format!(
                "Invalid fetch: between 1 and {MAX_BATCH} ids are required, got {}",
                ids.len()
            )));
        }
        let data = lock(&self.data);
        let mut vectors = Map::new();
        if let Some(recs) = data.get(&ns) {
            for id in ids {
                if let Some(r) = recs.get(&id) {
                    let mut v = json!({"id": id, "values": r.values});
                    if let Some(md) = &r.metadata {
                        v["metadata"] = Value::Object(md.clone());
                    }
                    vectors.insert(id, v);
                }
            }
        }
        Ok(json!({"vectors": vectors, "namespace": ns, "usage": {"readUnits": 1}}))
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}
