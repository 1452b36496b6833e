//! An in-memory Qdrant speaking Qdrant's gRPC API, for tests ([`QdrantFake`]).
//!
//! It implements, with Qdrant's documented semantics, the calls a Cosine, single-vector,
//! keyword-filtered index needs: collections (create, get, list, delete, exists), points
//! (upsert, delete by ids or filter, get, count, query, search, create field index) and
//! the health check. Search is brute force, so it is exact. Every other call, and every
//! option of an implemented call that would change its answer and that it does not
//! implement (other distances, named or sparse vectors, score thresholds, prefetch,
//! range or geo conditions, …) fails with `Unimplemented` rather than being ignored.
//!
//! Where it follows Qdrant rather than a convenient reading:
//! - a collection's vector size is fixed; another size is `InvalidArgument`
//!   ("Vector dimension error"), the whole batch is refused, and so is a query;
//! - vectors are normalised on insert (Cosine), scores are dot products of unit vectors,
//!   ties come out by Qdrant point id (not by anything the client chose);
//! - point ids are u64 or UUIDs (any UUID spelling, answered hyphenated lowercase);
//! - an upsert replaces the whole point (vector and payload);
//! - a missing collection is `NotFound`, except deleting it (answers `false`);
//! - `limit` 0 is `InvalidArgument`; a query's `limit` defaults to 10;
//! - `with_payload` defaults to no payload for query/search and to all of it for get;
//! - the health check needs no API key; every other call needs it when one is set
//!   (`Unauthenticated` otherwise).
//!
//! Longer than the ~600-line rule on purpose: it is test support implementing Qdrant's
//! documented semantics call by call (and refusing what it does not implement); one call
//! per section reads best as one file.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use qdrant_client::qdrant::{
    self as q, Filter, PointId, ScoredPoint, Value, WithPayloadSelector, WithVectorsSelector,
    collections_server::{Collections, CollectionsServer},
    condition::ConditionOneOf,
    r#match::MatchValue,
    point_id::PointIdOptions,
    points_selector::PointsSelectorOneOf,
    points_server::{Points, PointsServer},
    qdrant_server::{Qdrant, QdrantServer},
    value::Kind,
    vectors::VectorsOptions,
    vectors_config, with_payload_selector, with_vectors_selector,
};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

/// The version the fake reports in its health check.
pub const FAKE_VERSION: &str = "1.20.0";

/// gRPC messages up to this size are accepted (Qdrant's limit is of this order; tonic's
/// default of 4 MiB would refuse batches a real Qdrant takes).
const MAX_MESSAGE: usize = 64 << 20;

/// A running fake Qdrant on `127.0.0.1`; stopped by [`shutdown`](Self::shutdown) or
/// on drop.
#[derive(Debug)]
pub struct QdrantFake {
    url: String,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl QdrantFake {
    /// Starts a fake that needs no API key, on a fresh port.
    pub async fn start() -> std::io::Result<Self> {
        Self::spawn(None).await
    }

    /// Starts a fake that requires `api_key` in the `api-key` metadata of every call
    /// but the health check, as Qdrant does with `service.api_key` set.
    pub async fn start_with_api_key(api_key: &str) -> std::io::Result<Self> {
        Self::spawn(Some(api_key.into())).await
    }

    async fn spawn(api_key: Option<Arc<str>>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(State::default());
        let check = move |req: Request<()>| -> Result<Request<()>, Status> {
            let Some(want) = &api_key else {
                return Ok(req);
            };
            match req.metadata().get("api-key") {
                None => Err(Status::unauthenticated(
                    "Must provide an API key or an Authorization bearer token",
                )),
                Some(got) if got.as_bytes() == want.as_bytes() => Ok(req),
                Some(_) => Err(Status::unauthenticated("Invalid api-key")),
            }
        };
        let collections = InterceptedService::new(
            CollectionsServer::from_arc(state.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            check.clone(),
        );
        let points = InterceptedService::new(
            PointsServer::from_arc(state.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            check,
        );
        // Qdrant exempts the health check from authentication.
        let health = QdrantServer::from_arc(state.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let task = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(collections)
                .add_service(points)
                .add_service(health)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "fake Qdrant stopped with an error");
            }
        });
        Ok(Self {
            url,
            state,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The gRPC URL (`http://127.0.0.1:PORT`), for `QdrantIndex::connect`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The collections that exist now, by name, with their vector size and point count.
    pub fn collections(&self) -> Vec<(String, usize, usize)> {
        self.state
            .lock()
            .iter()
            .map(|(name, c)| (name.clone(), c.dim, c.points.len()))
            .collect()
    }

    /// Stops accepting calls and waits (up to a second, since clients may hold their
    /// connections open) for the server to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(1), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for QdrantFake {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Everything the fake holds.
#[derive(Debug, Default)]
struct State {
    collections: Mutex<BTreeMap<String, Collection>>,
    operations: std::sync::atomic::AtomicU64,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Collection>> {
        // A panicking handler leaves whole operations only (each mutates after checking).
        self.collections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn next_operation(&self) -> u64 {
        self.operations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct Collection {
    dim: usize,
    points: BTreeMap<Key, Stored>,
    /// Field name → (`FieldType`, params), as created.
    indexes: BTreeMap<String, (i32, Option<q::PayloadIndexParams>)>,
}

#[derive(Debug, Clone)]
struct Stored {
    vector: Vec<f32>,
    payload: HashMap<String, Value>,
    version: u64,
}

/// A point id, ordered as Qdrant orders them (numbers before UUIDs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Key {
    Num(u64),
    Uuid(uuid::Uuid),
}

impl Key {
    fn parse(id: Option<&PointId>) -> Result<Self, Status> {
        match id.and_then(|i| i.point_id_options.as_ref()) {
            Some(PointIdOptions::Num(n)) => Ok(Key::Num(*n)),
            Some(PointIdOptions::Uuid(s)) => uuid::Uuid::parse_str(s)
                .map(Key::Uuid)
                .map_err(|e| Status::invalid_argument(format!("Unable to parse UUID: {s}: {e}"))),
            None => Err(Status::invalid_argument("Wrong input: point id is missing")),
        }
    }

    fn to_id(self) -> PointId {
        PointId {
            point_id_options: Some(match self {
                Key::Num(n) => PointIdOptions::Num(n),
                Key::Uuid(u) => PointIdOptions::Uuid(u.hyphenated().to_string()),
            }),
        }
    }
}

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("the fake Qdrant does not implement {what}"))
}

fn missing(name: &str) -> Status {
    Status::not_found(format!("Not found: Collection `{name}` doesn't exist!"))
}

fn dimension_error(expected: usize, got: usize) -> Status {
    Status::invalid_argument(format!(
        "Wrong input: Vector dimension error: expected dim: {expected}, got {got}"
    ))
}

fn elapsed(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

fn update_response(
    start: Instant,
    op: u64,
    wait: Option<bool>,
) -> Response<q::PointsOperationResponse> {
    // Everything is applied before answering, but like Qdrant the status tells whether
    // the client asked to wait.
    let status = if wait == Some(true) {
        q::UpdateStatus::Completed
    } else {
        q::UpdateStatus::Acknowledged
    };
    Response::new(q::PointsOperationResponse {
        result: Some(q::UpdateResult {
            operation_id: Some(op),
            status: status.into(),
        }),
        time: elapsed(start),
        usage: None,
    })
}

/// Cosine's preprocessing in Qdrant: scale to unit length, leaving a zero vector alone.
fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > f32::EPSILON {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The dense vector of an upserted point.
fn dense_vector(vectors: Option<q::Vectors>) -> Result<Vec<f32>, Status> {
    let vector = match vectors.and_then(|v| v.vectors_options) {
        Some(VectorsOptions::Vector(v)) => v,
        Some(VectorsOptions::Vectors(named)) => {
            // The collection's only vector is the unnamed default one.
            let mut named = named.vectors;
            match (named.len(), named.remove("")) {
                (1, Some(v)) => v,
                _ => {
                    let name = named.keys().next().cloned().unwrap_or_default();
                    return Err(Status::invalid_argument(format!(
                        "Wrong input: Not existing vector name error: {name}"
                    )));
                }
            }
        }
        None => return Err(Status::invalid_argument("Wrong input: point has no vector")),
    };
    match vector.vector {
        Some(q::vector::Vector::Dense(d)) => Ok(d.data),
        Some(_) => Err(unimplemented("sparse, multi-dense or inference vectors")),
        None => {
            // Clients before 1.16 send the deprecated flat fields.
            #[allow(deprecated)]
            if vector.indices.is_some() || vector.vectors_count.is_some() {
                return Err(unimplemented("sparse or multi-dense vectors"));
            }
            #[allow(deprecated)]
            Ok(vector.data)
        }
    }
}

/// A filter checked once, then applied to every point.
#[derive(Debug, Default)]
struct Compiled {
    must: Vec<Cond>,
    should: Vec<Cond>,
    must_not: Vec<Cond>,
}

#[derive(Debug)]
enum Cond {
    Keywords(String, Vec<String>),
    Integers(String, Vec<i64>),
    Bool(String, bool),
    HasId(HashSet<Key>),
    Filter(Compiled),
}

impl Compiled {
    fn new(filter: Option<&Filter>) -> Result<Self, Status> {
        let Some(f) = filter else {
            return Ok(Self::default());
        };
        if f.min_should.is_some() {
            return Err(unimplemented("min_should"));
        }
        let all = |cs: &[q::Condition]| cs.iter().map(Cond::new).collect::<Result<Vec<_>, _>>();
        Ok(Self {
            must: all(&f.must)?,
            should: all(&f.should)?,
            must_not: all(&f.must_not)?,
        })
    }

    fn matches(&self, key: Key, p: &Stored) -> bool {
        self.must.iter().all(|c| c.matches(key, p))
            && !self.must_not.iter().any(|c| c.matches(key, p))
            && (self.should.is_empty() || self.should.iter().any(|c| c.matches(key, p)))
    }
}

impl Cond {
    fn new(c: &q::Condition) -> Result<Self, Status> {
        match &c.condition_one_of {
            Some(ConditionOneOf::Field(f)) => {
                if f.range.is_some()
                    || f.geo_bounding_box.is_some()
                    || f.geo_radius.is_some()
                    || f.values_count.is_some()
                    || f.geo_polygon.is_some()
                    || f.datetime_range.is_some()
                    || f.is_empty.is_some()
                    || f.is_null.is_some()
                {
                    return Err(unimplemented("field conditions other than match"));
                }
                let key = f.key.clone();
                match f.r#match.as_ref().and_then(|m| m.match_value.as_ref()) {
                    Some(MatchValue::Keyword(k)) => Ok(Cond::Keywords(key, vec![k.clone()])),
                    Some(MatchValue::Keywords(ks)) => Ok(Cond::Keywords(key, ks.strings.clone())),
                    Some(MatchValue::Integer(i)) => Ok(Cond::Integers(key, vec![*i])),
                    Some(MatchValue::Integers(is)) => Ok(Cond::Integers(key, is.integers.clone())),
                    Some(MatchValue::Boolean(b)) => Ok(Cond::Bool(key, *b)),
                    Some(_) => Err(unimplemented("text, phrase, prefix or except matches")),
                    None => Err(Status::invalid_argument(
                        "Wrong input: field condition without a condition",
                    )),
                }
            }
            Some(ConditionOneOf::HasId(h)) => Ok(Cond::HasId(
                h.has_id
                    .iter()
                    .map(|i| Key::parse(Some(i)))
                    .collect::<Result<_, _>>()?,
            )),
            Some(ConditionOneOf::Filter(f)) => Ok(Cond::Filter(Compiled::new(Some(f))?)),
            Some(_) => Err(unimplemented(
                "is_empty, is_null, nested, has_vector or slice conditions",
            )),
            None => Err(Status::invalid_argument("Wrong input: empty condition")),
        }
    }

    fn matches(&self, key: Key, p: &Stored) -> bool {
        // A payload field matches when it, or one element of it (an array), does.
        let values = |field: &str| -> Vec<&Kind> {
            match p.payload.get(field).and_then(|v| v.kind.as_ref()) {
                Some(Kind::ListValue(l)) => {
                    l.values.iter().filter_map(|v| v.kind.as_ref()).collect()
                }
                Some(k) => vec![k],
                None => Vec::new(),
            }
        };
        match self {
            Cond::Keywords(field, any) => values(field)
                .into_iter()
                .any(|k| matches!(k, Kind::StringValue(s) if any.contains(s))),
            Cond::Integers(field, any) => values(field)
                .into_iter()
                .any(|k| matches!(k, Kind::IntegerValue(i) if any.contains(i))),
            Cond::Bool(field, b) => values(field)
                .into_iter()
                .any(|k| matches!(k, Kind::BoolValue(v) if v == b)),
            Cond::HasId(ids) => ids.contains(&key),
            Cond::Filter(f) => f.matches(key, p),
        }
    }
}

/// The payload to answer with, per a selector (`default` when there is none).
fn select_payload(
    payload: &HashMap<String, Value>,
    selector: Option<&WithPayloadSelector>,
    default: bool,
) -> HashMap<String, Value> {
    use with_payload_selector::SelectorOptions as S;
    match selector.and_then(|s| s.selector_options.as_ref()) {
        None if default => payload.clone(),
        None => HashMap::new(),
        Some(S::Enable(true)) => payload.clone(),
        Some(S::Enable(false)) => HashMap::new(),
        Some(S::Include(i)) => payload
            .iter()
            .filter(|(k, _)| i.fields.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Some(S::Exclude(e)) => payload
            .iter()
            .filter(|(k, _)| !e.fields.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn select_vectors(
    vector: &[f32],
    selector: Option<&WithVectorsSelector>,
) -> Option<q::VectorsOutput> {
    use with_vectors_selector::SelectorOptions as S;
    let wanted = match selector.and_then(|s| s.selector_options.as_ref()) {
        None | Some(S::Enable(false)) => false,
        Some(S::Enable(true)) => true,
        Some(S::Include(names)) => names.names.iter().any(String::is_empty),
    };
    wanted.then(|| q::VectorsOutput {
        vectors_options: Some(q::vectors_output::VectorsOptions::Vector(q::VectorOutput {
            vector: Some(q::vector_output::Vector::Dense(q::DenseVector {
                data: vector.to_vec(),
            })),
            ..Default::default()
        })),
    })
}

/// What a nearest-neighbour request asks, whichever RPC carried it.
struct Nearest<'a> {
    collection: &'a str,
    vector: Vec<f32>,
    filter: Option<&'a Filter>,
    limit: u64,
    offset: u64,
    with_payload: Option<&'a WithPayloadSelector>,
    with_vectors: Option<&'a WithVectorsSelector>,
}

impl State {
    /// Brute-force nearest neighbours, best first, ties by point id.
    fn nearest(&self, n: Nearest<'_>) -> Result<Vec<ScoredPoint>, Status> {
        if n.limit == 0 {
            return Err(Status::invalid_argument(
                "Validation error in body: [limit: value 0 invalid, must be 1 or larger]",
            ));
        }
        let filter = Compiled::new(n.filter)?;
        let collections = self.lock();
        let c = collections
            .get(n.collection)
            .ok_or_else(|| missing(n.collection))?;
        if n.vector.len() != c.dim {
            return Err(dimension_error(c.dim, n.vector.len()));
        }
        let query = normalise(n.vector);
        let mut scored: Vec<(f32, Key, &Stored)> = c
            .points
            .iter()
            .filter(|(k, p)| filter.matches(**k, p))
            .map(|(k, p)| (dot(&query, &p.vector), *k, p))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        Ok(scored
            .into_iter()
            .skip(usize::try_from(n.offset).unwrap_or(usize::MAX))
            .take(usize::try_from(n.limit).unwrap_or(usize::MAX))
            .map(|(score, key, p)| ScoredPoint {
                id: Some(key.to_id()),
                payload: select_payload(&p.payload, n.with_payload, false),
                score,
                version: p.version,
                vectors: select_vectors(&p.vector, n.with_vectors),
                shard_key: None,
                order_value: None,
            })
            .collect())
    }

    /// The stored vector of a point, for a query by id.
    fn vector_of(&self, collection: &str, id: &PointId) -> Result<Vec<f32>, Status> {
        let key = Key::parse(Some(id))?;
        let collections = self.lock();
        let c = collections
            .get(collection)
            .ok_or_else(|| missing(collection))?;
        c.points
            .get(&key)
            .map(|p| p.vector.clone())
            .ok_or_else(|| Status::not_found(format!("Not found: No point with id {key:?} found")))
    }
}

/// Implements a generated service trait: the handled methods as written, every other
/// one as `Unimplemented`. (One macro for the whole impl, because `async_trait` must see
/// every method already expanded.)
macro_rules! service {
    (
        impl $trait:ident for State { $($handled:tt)* }
        unimplemented { $($name:ident($req:ident) -> $resp:ident;)* }
    ) => {
        #[tonic::async_trait]
        impl $trait for State {
            $($handled)*
            $(
                async fn $name(
                    &self,
                    _request: Request<q::$req>,
                ) -> Result<Response<q::$resp>, Status> {
                    Err(unimplemented(concat!(stringify!($trait), "/", stringify!($name))))
                }
            )*
        }
    };
}

#[tonic::async_trait]
impl Qdrant for State {
    async fn health_check(
        &self,
        _request: Request<q::HealthCheckRequest>,
    ) -> Result<Response<q::HealthCheckReply>, Status> {
        Ok(Response::new(q::HealthCheckReply {
            title: "qdrant - vector search engine".into(),
            version: FAKE_VERSION.into(),
            commit: None,
        }))
    }
}

/// Qdrant's rule for collection names (it also refuses these characters).
fn check_collection_name(name: &str) -> Result<(), Status> {
    const FORBIDDEN: &[char] = &['<', '>', ':', '"', '/', '\\', '|', '?', '*', '\0'];
    if name.is_empty() || name.len() > 255 || name.contains(FORBIDDEN) {
        return Err(Status::invalid_argument(format!(
            "Validation error in body: [collection_name: collection name {name:?} is invalid]"
        )));
    }
    Ok(())
}

service! {
    impl Collections for State {
        async fn get(
            &self,
            request: Request<q::GetCollectionInfoRequest>,
        ) -> Result<Response<q::GetCollectionInfoResponse>, Status> {
            let start = Instant::now();
            let name = request.into_inner().collection_name;
            let collections = self.lock();
            let c = collections.get(&name).ok_or_else(|| missing(&name))?;
            let payload_schema = c
                .indexes
                .iter()
                .map(|(field, (field_type, params))| {
                    // PayloadSchemaType counts from UnknownType = 0; FieldType from Keyword = 0.
                    let data_type = field_type + 1;
                    let points = c.points.values().filter(|p| p.payload.contains_key(field)).count();
                    (
                        field.clone(),
                        q::PayloadSchemaInfo {
                            data_type,
                            params: params.clone(),
                            points: Some(points as u64),
                        },
                    )
                })
                .collect();
            Ok(Response::new(q::GetCollectionInfoResponse {
                result: Some(q::CollectionInfo {
                    status: q::CollectionStatus::Green.into(),
                    optimizer_status: Some(q::OptimizerStatus { ok: true, error: String::new() }),
                    segments_count: 1,
                    config: Some(q::CollectionConfig {
                        params: Some(q::CollectionParams {
                            shard_number: 1,
                            vectors_config: Some(q::VectorsConfig {
                                config: Some(vectors_config::Config::Params(q::VectorParams {
                                    size: c.dim as u64,
                                    distance: q::Distance::Cosine.into(),
                                    ..Default::default()
                                })),
                            }),
                            replication_factor: Some(1),
                            write_consistency_factor: Some(1),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    payload_schema,
                    points_count: Some(c.points.len() as u64),
                    // Brute force: nothing is ever HNSW-indexed.
                    indexed_vectors_count: Some(0),
                    ..Default::default()
                }),
                time: elapsed(start),
            }))
        }

        async fn list(
            &self,
            _request: Request<q::ListCollectionsRequest>,
        ) -> Result<Response<q::ListCollectionsResponse>, Status> {
            let start = Instant::now();
            let collections = self
                .lock()
                .keys()
                .map(|name| q::CollectionDescription { name: name.clone() })
                .collect();
            Ok(Response::new(q::ListCollectionsResponse { collections, time: elapsed(start) }))
        }

        async fn create(
            &self,
            request: Request<q::CreateCollection>,
        ) -> Result<Response<q::CollectionOperationResponse>, Status> {
            let start = Instant::now();
            let req = request.into_inner();
            check_collection_name(&req.collection_name)?;
            if req.sparse_vectors_config.is_some() {
                return Err(unimplemented("sparse vectors"));
            }
            if req.sharding_method.is_some_and(|m| m != q::ShardingMethod::Auto as i32) {
                return Err(unimplemented("custom sharding"));
            }
            let params = match req.vectors_config.and_then(|v| v.config) {
                Some(vectors_config::Config::Params(p)) => p,
                Some(vectors_config::Config::ParamsMap(_)) => {
                    return Err(unimplemented("named vectors"));
                }
                None => return Err(unimplemented("collections without a dense vector")),
            };
            if params.size == 0 || params.size > 65_536 {
                return Err(Status::invalid_argument(format!(
                    "Validation error in body: [vectors_config.size: value {} invalid, must be from 1 to 65536]",
                    params.size
                )));
            }
            if params.distance != q::Distance::Cosine as i32 {
                return Err(unimplemented("distances other than Cosine"));
            }
            if params.multivector_config.is_some() {
                return Err(unimplemented("multivectors"));
            }
            let mut collections = self.lock();
            if collections.contains_key(&req.collection_name) {
                return Err(Status::invalid_argument(format!(
                    "Wrong input: Collection `{}` already exists!",
                    req.collection_name
                )));
            }
            collections.insert(
                req.collection_name,
                Collection {
                    dim: params.size as usize,
                    points: BTreeMap::new(),
                    indexes: BTreeMap::new(),
                },
            );
            Ok(Response::new(q::CollectionOperationResponse { result: true, time: elapsed(start) }))
        }

        async fn delete(
            &self,
            request: Request<q::DeleteCollection>,
        ) -> Result<Response<q::CollectionOperationResponse>, Status> {
            let start = Instant::now();
            let name = request.into_inner().collection_name;
            let result = self.lock().remove(&name).is_some();
            Ok(Response::new(q::CollectionOperationResponse { result, time: elapsed(start) }))
        }

        async fn collection_exists(
            &self,
            request: Request<q::CollectionExistsRequest>,
        ) -> Result<Response<q::CollectionExistsResponse>, Status> {
            let start = Instant::now();
            let name = request.into_inner().collection_name;
            let exists = self.lock().contains_key(&name);
            Ok(Response::new(q::CollectionExistsResponse {
                result: Some(q::CollectionExists { exists }),
                time: elapsed(start),
            }))
        }
    }
    unimplemented {
        update(UpdateCollection) -> CollectionOperationResponse;
        update_aliases(ChangeAliases) -> CollectionOperationResponse;
        list_collection_aliases(ListCollectionAliasesRequest) -> ListAliasesResponse;
        list_aliases(ListAliasesRequest) -> ListAliasesResponse;
        collection_cluster_info(CollectionClusterInfoRequest) -> CollectionClusterInfoResponse;
        update_collection_cluster_setup(UpdateCollectionClusterSetupRequest) -> UpdateCollectionClusterSetupResponse;
        create_shard_key(CreateShardKeyRequest) -> CreateShardKeyResponse;
        delete_shard_key(DeleteShardKeyRequest) -> DeleteShardKeyResponse;
        list_shard_keys(ListShardKeysRequest) -> ListShardKeysResponse;
    }
}

service! {
    impl Points for State {
        async fn upsert(
            &self,
            request: Request<q::UpsertPoints>,
        ) -> Result<Response<q::PointsOperationResponse>, Status> {
            let start = Instant::now();
            let req = request.into_inner();
            if req.shard_key_selector.is_some() {
                return Err(unimplemented("shard keys"));
            }
            if req.update_filter.is_some() {
                return Err(unimplemented("conditional upserts (update_filter)"));
            }
            if req.update_mode.is_some_and(|m| m != q::UpdateMode::Upsert as i32) {
                return Err(unimplemented("insert-only or update-only upserts"));
            }
            // Parse and check everything first: Qdrant refuses the whole batch.
            let mut batch = Vec::with_capacity(req.points.len());
            for p in req.points {
                let key = Key::parse(p.id.as_ref())?;
                batch.push((key, dense_vector(p.vectors)?, p.payload));
            }
            let op = self.next_operation();
            let mut collections = self.lock();
            let c = collections
                .get_mut(&req.collection_name)
                .ok_or_else(|| missing(&req.collection_name))?;
            if let Some((_, v, _)) = batch.iter().find(|(_, v, _)| v.len() != c.dim) {
                return Err(dimension_error(c.dim, v.len()));
            }
            for (key, vector, payload) in batch {
                c.points.insert(
                    key,
                    Stored {
                        vector: normalise(vector),
                        payload,
                        version: op,
                    },
                );
            }
            Ok(update_response(start, op, req.wait))
        }

        async fn delete(
            &self,
            request: Request<q::DeletePoints>,
        ) -> Result<Response<q::PointsOperationResponse>, Status> {
            let start = Instant::now();
            let req = request.into_inner();
            if req.shard_key_selector.is_some() {
                return Err(unimplemented("shard keys"));
            }
            enum Selector {
                Ids(Vec<Key>),
                Filter(Compiled),
            }
            let selector = match req.points.and_then(|p| p.points_selector_one_of) {
                Some(PointsSelectorOneOf::Points(list)) => Selector::Ids(
                    list.ids
                        .iter()
                        .map(|i| Key::parse(Some(i)))
                        .collect::<Result<_, _>>()?,
                ),
                Some(PointsSelectorOneOf::Filter(f)) => Selector::Filter(Compiled::new(Some(&f))?),
                None => return Err(Status::invalid_argument("Wrong input: no points selector")),
            };
            let op = self.next_operation();
            let mut collections = self.lock();
            let c = collections
                .get_mut(&req.collection_name)
                .ok_or_else(|| missing(&req.collection_name))?;
            match selector {
                Selector::Ids(ids) => {
                    for key in ids {
                        c.points.remove(&key);
                    }
                }
                Selector::Filter(f) => c.points.retain(|k, p| !f.matches(*k, p)),
            }
            Ok(update_response(start, op, req.wait))
        }

        async fn get(
            &self,
            request: Request<q::GetPoints>,
        ) -> Result<Response<q::GetResponse>, Status> {
            let start = Instant::now();
            let req = request.into_inner();
            if req.shard_key_selector.is_some() {
                return Err(unimplemented("shard keys"));
            }
            let keys = req
                .ids
                .iter()
                .map(|i| Key::parse(Some(i)))
                .collect::<Result<Vec<_>, _>>()?;
            let collections = self.lock();
            let c = collections
                .get(&req.collection_name)
                .ok_or_else(|| missing(&req.collection_name))?;
            let mut seen = HashSet::new();
            let result = keys
                .into_iter()
                .filter(|k| seen.insert(*k))
                .filter_map(|k| c.points.get(&k).map(|p| (k, p)))
                .map(|(k, p)| q::RetrievedPoint {
                    id: Some(k.to_id()),
                    payload: select_payload(&p.payload, req.with_payload.as_ref(), true),
                    vectors: select_vectors(&p.vector, req.with_vectors.as_ref()),
                    shard_key: None,
                    order_value: None,
                })
                .collect();
            Ok(Response::new(q::GetResponse { result, time: elapsed(start), usage: None }))
        }

        async fn create_field_index(
            &self,
            request: Request<q::CreateFieldIndexCollection>,
        ) -> Result<Response<q::PointsOperationResponse>, Status> {
            let start = Instant::now();
            let req = request.into_inner();
            let Some(field_type) = req.field_type else {
                return Err(Status::invalid_argument("Wrong input: field_type is required"));
            };
            if q::FieldType::try_from(field_type).is_err() {
                return Err(Status::invalid_argument(format!(
                    "Wrong input: unknown field type {field_type}"
                )));
            }
            let op = self.next_operation();
            let mut collections = self.lock();
            let c = collections
                .get_mut(&req.collection_name)
                .ok_or_else(|| missing(&req.collection_name))?;
            // Creating an index that exists replaces it, as in Qdrant. It changes no
            // answer here: filters scan every point anyway.
            c.indexes.insert(req.field_name, (field_type, req.field_index_params));
            Ok(update_response(start, op, req.wait))
        }

        async fn count(
            &self,
            request: Request<q::CountPoints>,
        ) -> Result<Response<q::CountResponse>, Status> {
            let start = Instant::now();
            let req = request.into_inner();
            if req.shard_key_selector.is_some() {
                return Err(unimplemented("shard keys"));
            }
            let filter = Compiled::new(req.filter.as_ref())?;
            let collections = self.lock();
            let c = collections
                .get(&req.collection_name)
                .ok_or_else(|| missing(&req.collection_name))?;
            // Always exact, which an approximate count is allowed to be.
            let count = c.points.iter().filter(|(k, p)| filter.matches(**k, p)).count() as u64;
            Ok(Response::new(q::CountResponse {
                result: Some(q::CountResult { count }),
                time: elapsed(start),
                usage: None,
            }))
        }

        async fn query(
            &self,
            request: Request<q::QueryPoints>,
        ) -> Result<Response<q::QueryResponse>, Status> {
            let start = Instant::now();
            let req = request.into_inner();
            if !req.prefetch.is_empty() {
                return Err(unimplemented("prefetch"));
            }
            if req.score_threshold.is_some() {
                return Err(unimplemented("score_threshold"));
            }
            if req.lookup_from.is_some() || req.shard_key_selector.is_some() {
                return Err(unimplemented("lookup_from and shard keys"));
            }
            if req.using.as_deref().is_some_and(|u| !u.is_empty()) {
                return Err(Status::invalid_argument(format!(
                    "Wrong input: Not existing vector name error: {}",
                    req.using.as_deref().unwrap_or_default()
                )));
            }
            let vector = match req.query.and_then(|q| q.variant) {
                Some(q::query::Variant::Nearest(input)) => match input.variant {
                    Some(q::vector_input::Variant::Dense(d)) => d.data,
                    Some(q::vector_input::Variant::Id(id)) => {
                        self.vector_of(&req.collection_name, &id)?
                    }
                    _ => return Err(unimplemented("nearest queries other than dense vectors or ids")),
                },
                None => return Err(unimplemented("queries without a query (order by id)")),
                Some(_) => return Err(unimplemented("queries other than nearest")),
            };
            let result = self.nearest(Nearest {
                collection: &req.collection_name,
                vector,
                filter: req.filter.as_ref(),
                limit: req.limit.unwrap_or(10),
                offset: req.offset.unwrap_or(0),
                with_payload: req.with_payload.as_ref(),
                with_vectors: req.with_vectors.as_ref(),
            })?;
            Ok(Response::new(q::QueryResponse { result, time: elapsed(start), usage: None }))
        }

        async fn search(
            &self,
            request: Request<q::SearchPoints>,
        ) -> Result<Response<q::SearchResponse>, Status> {
            let start = Instant::now();
            let req = request.into_inner();
            if req.score_threshold.is_some() {
                return Err(unimplemented("score_threshold"));
            }
            if req.sparse_indices.is_some() || req.shard_key_selector.is_some() {
                return Err(unimplemented("sparse vectors and shard keys"));
            }
            if req.vector_name.as_deref().is_some_and(|u| !u.is_empty()) {
                return Err(Status::invalid_argument(format!(
                    "Wrong input: Not existing vector name error: {}",
                    req.vector_name.as_deref().unwrap_or_default()
                )));
            }
            let result = self.nearest(Nearest {
                collection: &req.collection_name,
                vector: req.vector,
                filter: req.filter.as_ref(),
                limit: req.limit,
                offset: req.offset.unwrap_or(0),
                with_payload: req.with_payload.as_ref(),
                with_vectors: req.with_vectors.as_ref(),
            })?;
            Ok(Response::new(q::SearchResponse { result, time: elapsed(start), usage: None }))
        }
    }
    unimplemented {
        update_vectors(UpdatePointVectors) -> PointsOperationResponse;
        delete_vectors(DeletePointVectors) -> PointsOperationResponse;
        set_payload(SetPayloadPoints) -> PointsOperationResponse;
        overwrite_payload(SetPayloadPoints) -> PointsOperationResponse;
        delete_payload(DeletePayloadPoints) -> PointsOperationResponse;
        clear_payload(ClearPayloadPoints) -> PointsOperationResponse;
        delete_field_index(DeleteFieldIndexCollection) -> PointsOperationResponse;
        create_vector_name(CreateVectorNameRequest) -> PointsOperationResponse;
        delete_vector_name(DeleteVectorNameRequest) -> PointsOperationResponse;
        search_batch(SearchBatchPoints) -> SearchBatchResponse;
        search_groups(SearchPointGroups) -> SearchGroupsResponse;
        scroll(ScrollPoints) -> ScrollResponse;
        recommend(RecommendPoints) -> RecommendResponse;
        recommend_batch(RecommendBatchPoints) -> RecommendBatchResponse;
        recommend_groups(RecommendPointGroups) -> RecommendGroupsResponse;
        discover(DiscoverPoints) -> DiscoverResponse;
        discover_batch(DiscoverBatchPoints) -> DiscoverBatchResponse;
        update_batch(UpdateBatchPoints) -> UpdateBatchResponse;
        query_batch(QueryBatchPoints) -> QueryBatchResponse;
        query_groups(QueryPointGroups) -> QueryGroupsResponse;
        facet(FacetCounts) -> FacetResponse;
        search_matrix_pairs(SearchMatrixPoints) -> SearchMatrixPairsResponse;
        search_matrix_offsets(SearchMatrixPoints) -> SearchMatrixOffsetsResponse;
    }
}
