//! The Qdrant vector index, over gRPC ([`QdrantIndex`]).
//!
//! # Layout in Qdrant
//!
//! The plan's "one collection, the user id as a payload filter", adapted to one thing
//! Qdrant fixes that the port does not: a collection has one vector size, while the
//! port lets each namespace choose its dimension. So there is one shared collection
//! **per dimension**, `{prefix}_{dim}` (`adiuva_vectors_384`), created on the first
//! write of that dimension with Cosine distance and a keyword payload index on
//! `namespace` marked `is_tenant` (Qdrant's multitenancy layout). Each point carries:
//!
//! | payload key | value |
//! |---|---|
//! | `namespace` | the port's namespace (the user id) |
//! | `id` | the client's string id |
//! | `payload` | the opaque payload bytes, base64 (standard alphabet, padded) |
//!
//! Qdrant point ids must be integers or UUIDs, so a point's id is a UUID taken from
//! SHA-256(namespace ‖ NUL ‖ id): deterministic, so an upsert replaces, a delete and an
//! id filter address points without a lookup, and two namespaces never share one.
//!
//! # A namespace's dimension
//!
//! A namespace's points live in one collection. A write or query of dimension `d` for
//! a namespace with no points in `{prefix}_d` counts (exactly) that namespace's points
//! in the other `{prefix}_*` collections; any there is a
//! [`DimensionMismatch`](VectorError::DimensionMismatch) naming that collection's
//! dimension. The common paths cost one extra round trip at most: a search whose
//! namespace has hits in `{prefix}_d` needs no check, and an upsert into a namespace
//! that already has points in `{prefix}_d` needs one count.
//!
//! **Race:** the check and the write are two requests, and Qdrant has no transaction
//! across collections. Two *concurrent first writes* of different dimensions to the same
//! empty namespace can both pass the check, leaving the namespace in two collections.
//! Nothing is lost or leaked to another namespace: each dimension's searches then see
//! their own points, and `delete`/`delete_namespace` clean every collection. Adiuva
//! writes a user's vectors from that user's requests, so this needs one user sending two
//! first batches of different dimensions at once.
//!
//! # Search
//!
//! Qdrant's Cosine scores are cosine similarities (it normalises vectors on insert).
//! Results are re-sorted by (score desc, id asc), since Qdrant orders ties by its own
//! point id, and clamped to [-1, 1] against f32 rounding. Search is **approximate**
//! (HNSW) once Qdrant has indexed the collection and the namespace's points exceed its
//! full-scan threshold (`hnsw_config.full_scan_threshold`); below that it scores the
//! filtered points exactly.
//!
//! Just past the ~600-line rule: the mapping of every port method onto Qdrant's gRPC calls,
//! with the layout table above; splitting it would separate a method from the layout it
//! relies on.

#[cfg(feature = "testing")]
pub mod fake;

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use adiuva_core::ports::vector::{VectorError, VectorFilter, VectorHit, VectorIndex, VectorPoint};
use adiuva_core::vector::{dedup_last, exact::validate, sort_hits};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use qdrant_client::qdrant::{
    Condition, CountPoints, CreateCollection, CreateFieldIndexCollection, DeletePoints, Distance,
    FieldType, Filter, GetPoints, KeywordIndexParams, PayloadIncludeSelector, PayloadIndexParams,
    PointId, PointStruct, PointsIdsList, PointsSelector, Query, QueryPoints, UpsertPoints, Value,
    VectorParams, VectorsConfig, WithPayloadSelector, payload_index_params, points_selector, value,
    vectors_config, with_payload_selector,
};
use qdrant_client::{Qdrant, QdrantError};
use sha2::{Digest as _, Sha256};

use crate::AdapterError;

/// Payload key of the namespace (user id).
const NAMESPACE: &str = "namespace";
/// Payload key of the client's id.
const ID: &str = "id";
/// Payload key of the base64 payload.
const PAYLOAD: &str = "payload";

/// A [`VectorIndex`] on a Qdrant server (see the [module docs](self) for the layout).
pub struct QdrantIndex {
    client: Qdrant,
    prefix: String,
    /// Dimensions whose collection is known to exist with its namespace index, so that
    /// the steady state makes no collection requests. Collections are never dropped by
    /// this adapter, so an entry never goes stale.
    ready: Mutex<BTreeSet<usize>>,
}

impl std::fmt::Debug for QdrantIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not derived: the client's config holds the API key.
        f.debug_struct("QdrantIndex")
            .field("url", &self.client.config.uri)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl QdrantIndex {
    /// Connects to Qdrant's gRPC port (`http://127.0.0.1:6334`, or `https://…` for
    /// Qdrant Cloud) and checks that it answers and accepts `api_key`. Collections are
    /// named `{collection_prefix}_{dim}`; the prefix may hold ASCII letters, digits,
    /// `_` and `-`.
    ///
    /// For `https`, tonic uses the process's default rustls provider, or ring when none
    /// is installed.
    pub async fn connect(
        url: &str,
        api_key: Option<&str>,
        collection_prefix: &str,
    ) -> Result<Self, AdapterError> {
        let parsed = url::Url::parse(url).map_err(|e| {
            AdapterError::Connect(format!(
                "the Qdrant URL {url:?} is not a URL ({e}); use the gRPC address, like http://127.0.0.1:6334"
            ))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(AdapterError::Connect(format!(
                "the Qdrant URL {url:?} must start with http:// or https:// (Qdrant's gRPC port, usually 6334)"
            )));
        }
        if collection_prefix.is_empty()
            || !collection_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(AdapterError::Connect(format!(
                "the Qdrant collection prefix {collection_prefix:?} must be non-empty ASCII letters, digits, '_' or '-'"
            )));
        }
        // qdrant-client would put a key that is not a valid header value into its error
        // message; refuse it here, without echoing it.
        if let Some(key) = api_key
            && (key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(AdapterError::Connect(
                "the Qdrant API key must be non-empty printable ASCII without spaces".into(),
            ));
        }
        let client = Qdrant::from_url(url)
            .api_key(api_key.map(str::to_owned))
            // The built-in check blocks a thread and prints to stdout; ours is below.
            .skip_compatibility_check()
            .build()
            .map_err(|e| {
                AdapterError::Connect(format!(
                    "cannot set up a Qdrant client for {}: {e}",
                    adiuva_core::secret::redact_url(url)
                ))
            })?;
        let health = client.health_check().await.map_err(|e| {
            AdapterError::Connect(format!(
                "Qdrant at {url} does not answer its gRPC health check ({}); check the URL \
                 (the gRPC port, usually 6334, not the REST port 6333) and that Qdrant is running",
                describe(&e)
            ))
        })?;
        // Qdrant answers health checks without authentication, so an API key is only
        // tested by a call that needs it.
        client.list_collections().await.map_err(|e| {
            let hint = match status_code(&e) {
                Some(tonic::Code::Unauthenticated | tonic::Code::PermissionDenied) => {
                    "; check the configured API key"
                }
                _ => "",
            };
            AdapterError::Connect(format!(
                "Qdrant at {url} refused to list collections ({}){hint}",
                describe(&e)
            ))
        })?;
        tracing::info!(url = %adiuva_core::secret::redact_url(url), version = %health.version, prefix = collection_prefix, "connected to Qdrant");
        Ok(Self {
            client,
            prefix: collection_prefix.to_owned(),
            ready: Mutex::new(BTreeSet::new()),
        })
    }

    fn collection(&self, dim: usize) -> String {
        format!("{}_{dim}", self.prefix)
    }

    /// The dimensions of this prefix's collections, as Qdrant lists them now (other
    /// processes may have created some).
    async fn dimensions(&self) -> Result<Vec<usize>, VectorError> {
        let listed = self.client.list_collections().await.map_err(unavailable)?;
        let head = format!("{}_", self.prefix);
        let mut dims: Vec<usize> = listed
            .collections
            .iter()
            .filter_map(|c| c.name.strip_prefix(&head))
            // Digits only, so that prefix `a` does not claim `a_b_3` of prefix `a_b`.
            .filter(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
            .filter_map(|rest| rest.parse().ok())
            .collect();
        dims.sort_unstable();
        Ok(dims)
    }

    /// Creates `{prefix}_{dim}` and its namespace index unless already known.
    async fn ensure_collection(&self, dim: usize) -> Result<(), VectorError> {
        if self.lock_ready().contains(&dim) {
            return Ok(());
        }
        let name = self.collection(dim);
        let exists = self
            .client
            .collection_exists(name.as_str())
            .await
            .map_err(unavailable)?;
        if !exists {
            let created = self
                .client
                .create_collection(CreateCollection {
                    collection_name: name.clone(),
                    vectors_config: Some(VectorsConfig {
                        config: Some(vectors_config::Config::Params(VectorParams {
                            size: dim as u64,
                            distance: Distance::Cosine.into(),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                })
                .await;
            if let Err(e) = created {
                // Another process may have created it between our check and our create;
                // whatever code Qdrant used to say so, existence is what matters.
                let now = self
                    .client
                    .collection_exists(name.as_str())
                    .await
                    .map_err(unavailable)?;
                if !now {
                    return Err(unavailable(e));
                }
            }
        }
        // Idempotent in Qdrant; repeated once per process per collection so that a
        // collection whose creator died before indexing still gets its index.
        self.client
            .create_field_index(CreateFieldIndexCollection {
                collection_name: name,
                wait: Some(true),
                field_name: NAMESPACE.into(),
                field_type: Some(FieldType::Keyword.into()),
                field_index_params: Some(PayloadIndexParams {
                    index_params: Some(payload_index_params::IndexParams::KeywordIndexParams(
                        KeywordIndexParams {
                            is_tenant: Some(true),
                            ..Default::default()
                        },
                    )),
                }),
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        self.lock_ready().insert(dim);
        Ok(())
    }

    fn lock_ready(&self) -> std::sync::MutexGuard<'_, BTreeSet<usize>> {
        // The set is only ever inserted into, so a panic elsewhere cannot leave it
        // inconsistent: recover from poisoning.
        self.ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Exact count of `namespace`'s points in `{prefix}_{dim}`; 0 when the collection
    /// does not exist.
    async fn count_in(&self, dim: usize, namespace: &str) -> Result<u64, VectorError> {
        let counted = self
            .client
            .count(CountPoints {
                collection_name: self.collection(dim),
                filter: Some(namespace_filter(namespace, None)),
                exact: Some(true),
                ..Default::default()
            })
            .await;
        match counted {
            Ok(r) => Ok(r.result.map_or(0, |c| c.count)),
            Err(e) if status_code(&e) == Some(tonic::Code::NotFound) => Ok(0),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The dimension `namespace` holds, if it has points: `hint` when it has points in
    /// `{prefix}_{hint}` (one request), otherwise whichever other collection holds them.
    async fn namespace_dim(
        &self,
        namespace: &str,
        hint: usize,
    ) -> Result<Option<usize>, VectorError> {
        if self.count_in(hint, namespace).await? > 0 {
            return Ok(Some(hint));
        }
        self.other_dimension(namespace, hint).await
    }

    /// A dimension other than `dim` in whose collection `namespace` has points.
    async fn other_dimension(
        &self,
        namespace: &str,
        dim: usize,
    ) -> Result<Option<usize>, VectorError> {
        for other in self.dimensions().await? {
            if other != dim && self.count_in(other, namespace).await? > 0 {
                return Ok(Some(other));
            }
        }
        Ok(None)
    }
}

#[async_trait]
impl VectorIndex for QdrantIndex {
    #[tracing::instrument(skip_all, fields(points = points.len()), err)]
    async fn upsert(
        &self,
        namespace: &str,
        points: Vec<VectorPoint>,
    ) -> Result<usize, VectorError> {
        // Everything the port refuses is refused before anything is written: all or
        // nothing.
        let points = dedup_last(points);
        let Some(first) = points.first().map(|p| p.vector.len()) else {
            return Ok(0);
        };
        for p in &points {
            validate(&p.vector)?;
        }
        // The namespace's dimension decides which vectors are wrong; an empty namespace
        // takes the batch's first.
        let dim = self.namespace_dim(namespace, first).await?.unwrap_or(first);
        if let Some(p) = points.iter().find(|p| p.vector.len() != dim) {
            return Err(VectorError::DimensionMismatch {
                expected: dim,
                got: p.vector.len(),
            });
        }
        self.ensure_collection(dim).await?;
        let n = points.len();
        let points = points
            .into_iter()
            .map(|p| PointStruct {
                id: Some(point_id(namespace, &p.id)),
                payload: HashMap::from([
                    (NAMESPACE.to_owned(), string_value(namespace)),
                    (ID.to_owned(), string_value(&p.id)),
                    (PAYLOAD.to_owned(), string_value(&B64.encode(&p.payload))),
                ]),
                vectors: Some(p.vector.into()),
            })
            .collect();
        self.client
            .upsert_points(UpsertPoints {
                collection_name: self.collection(dim),
                wait: Some(true),
                points,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        Ok(n)
    }

    #[tracing::instrument(skip_all, fields(top_k = top_k), err)]
    async fn search(
        &self,
        namespace: &str,
        query: &[f32],
        top_k: usize,
        filter: &VectorFilter,
    ) -> Result<Vec<VectorHit>, VectorError> {
        validate(query)?;
        let dim = query.len();
        let ids = filter.ids.as_deref();
        let hits = if top_k == 0 || ids.is_some_and(<[String]>::is_empty) {
            // Qdrant refuses limit 0; and an empty id list means no candidates.
            Vec::new()
        } else {
            let answer = self
                .client
                .query(QueryPoints {
                    collection_name: self.collection(dim),
                    query: Some(Query::new_nearest(query.to_vec())),
                    filter: Some(namespace_filter(namespace, ids)),
                    limit: Some(top_k as u64),
                    with_payload: Some(payload_fields(&[ID, PAYLOAD])),
                    ..Default::default()
                })
                .await;
            match answer {
                Ok(r) => r.result,
                Err(e) if status_code(&e) == Some(tonic::Code::NotFound) => Vec::new(),
                Err(e) => return Err(unavailable(e)),
            }
        };
        if hits.is_empty() {
            // No hits in this dimension: the namespace may live in another one.
            if let Some(expected) = self.other_dimension(namespace, dim).await? {
                return Err(VectorError::DimensionMismatch { expected, got: dim });
            }
            return Ok(Vec::new());
        }
        let mut out = hits
            .into_iter()
            .map(|h| {
                Ok(VectorHit {
                    id: payload_str(&h.payload, ID)?.to_owned(),
                    score: h.score.clamp(-1.0, 1.0),
                    payload: Bytes::from(
                        B64.decode(payload_str(&h.payload, PAYLOAD)?)
                            .map_err(|e| foreign(format!("payload is not base64: {e}")))?,
                    ),
                })
            })
            .collect::<Result<Vec<_>, VectorError>>()?;
        sort_hits(&mut out);
        Ok(out)
    }

    #[tracing::instrument(skip_all, fields(ids = ids.len()), err)]
    async fn delete(&self, namespace: &str, ids: &[String]) -> Result<usize, VectorError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let wanted: Vec<PointId> = {
            let unique: BTreeSet<&String> = ids.iter().collect();
            unique
                .into_iter()
                .map(|id| point_id(namespace, id))
                .collect()
        };
        let mut deleted = 0;
        // Normally one collection holds the namespace, but after the documented race
        // it may be two: look in all of them.
        for dim in self.dimensions().await? {
            let collection = self.collection(dim);
            let found = match self
                .client
                .get_points(GetPoints {
                    collection_name: collection.clone(),
                    ids: wanted.clone(),
                    with_payload: Some(payload_fields(&[NAMESPACE])),
                    ..Default::default()
                })
                .await
            {
                Ok(r) => r.result,
                Err(e) if status_code(&e) == Some(tonic::Code::NotFound) => continue,
                Err(e) => return Err(unavailable(e)),
            };
            // The id is a hash of the namespace, so this only guards against points
            // someone else wrote into our collections.
            let found: Vec<PointId> = found
                .into_iter()
                .filter(|p| payload_str(&p.payload, NAMESPACE).ok() == Some(namespace))
                .filter_map(|p| p.id)
                .collect();
            if found.is_empty() {
                continue;
            }
            deleted += found.len();
            self.client
                .delete_points(DeletePoints {
                    collection_name: collection,
                    wait: Some(true),
                    points: Some(PointsSelector {
                        points_selector_one_of: Some(points_selector::PointsSelectorOneOf::Points(
                            PointsIdsList { ids: found },
                        )),
                    }),
                    ..Default::default()
                })
                .await
                .map_err(unavailable)?;
        }
        Ok(deleted)
    }

    #[tracing::instrument(skip_all, err)]
    async fn delete_namespace(&self, namespace: &str) -> Result<(), VectorError> {
        for dim in self.dimensions().await? {
            let deleted = self
                .client
                .delete_points(DeletePoints {
                    collection_name: self.collection(dim),
                    wait: Some(true),
                    points: Some(PointsSelector {
                        points_selector_one_of: Some(points_selector::PointsSelectorOneOf::Filter(
                            namespace_filter(namespace, None),
                        )),
                    }),
                    ..Default::default()
                })
                .await;
            match deleted {
                Ok(_) => {}
                // Dropped by someone else since we listed it: nothing to delete there.
                Err(e) if status_code(&e) == Some(tonic::Code::NotFound) => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "qdrant"
    }
}

/// The Qdrant point id of `(namespace, id)`: a UUID made of the first 16 bytes of
/// SHA-256(namespace ‖ NUL ‖ id), with the RFC 9562 version-8 ("custom") and variant
/// bits set so that it is a well-formed UUID. The NUL keeps `("a", "bc")` and
/// `("ab", "c")` apart (a namespace is a user id and holds no NUL).
fn point_uuid(namespace: &str, id: &str) -> uuid::Uuid {
    let digest = Sha256::new()
        .chain_update(namespace.as_bytes())
        .chain_update([0u8])
        .chain_update(id.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

fn point_id(namespace: &str, id: &str) -> PointId {
    point_uuid(namespace, id).to_string().into()
}

/// `namespace == ns` (and, with `ids`, the point is one of theirs).
fn namespace_filter(namespace: &str, ids: Option<&[String]>) -> Filter {
    let mut must = vec![Condition::matches(NAMESPACE, namespace.to_owned())];
    if let Some(ids) = ids {
        must.push(Condition::has_id(
            ids.iter().map(|id| point_id(namespace, id)),
        ));
    }
    Filter::must(must)
}

fn payload_fields(fields: &[&str]) -> WithPayloadSelector {
    WithPayloadSelector {
        selector_options: Some(with_payload_selector::SelectorOptions::Include(
            PayloadIncludeSelector {
                fields: fields.iter().map(|f| (*f).to_owned()).collect(),
            },
        )),
    }
}

fn string_value(s: &str) -> Value {
    Value {
        kind: Some(value::Kind::StringValue(s.to_owned())),
    }
}

fn payload_str<'a>(payload: &'a HashMap<String, Value>, key: &str) -> Result<&'a str, VectorError> {
    match payload.get(key).and_then(|v| v.kind.as_ref()) {
        Some(value::Kind::StringValue(s)) => Ok(s),
        _ => Err(foreign(format!(
            "point has no string {key:?} in its payload"
        ))),
    }
}

/// A point this adapter did not write (someone else shares the collection prefix).
fn foreign(what: String) -> VectorError {
    VectorError::Other(
        format!("unexpected point in a Qdrant collection of this prefix: {what}").into(),
    )
}

fn status_code(e: &QdrantError) -> Option<tonic::Code> {
    match e {
        QdrantError::ResponseError { status }
        | QdrantError::ResourceExhaustedError { status, .. } => Some(status.code()),
        _ => None,
    }
}

/// A description of a client error: the gRPC code and message for a status (never its
/// metadata), the error itself otherwise. Neither holds the API key: the client sends
/// it only as request metadata, and `connect` refuses keys it would quote.
fn describe(e: &QdrantError) -> String {
    match e {
        QdrantError::ResponseError { status }
        | QdrantError::ResourceExhaustedError { status, .. } => {
            format!("{:?}: {}", status.code(), status.message())
        }
        other => other.to_string(),
    }
}

fn unavailable(e: QdrantError) -> VectorError {
    VectorError::Unavailable(format!("qdrant: {}", describe(&e)))
}

/// The index at `url` with the server's settings (`qdrant_api_key`,
/// `qdrant_collection`), with a description for logs.
pub async fn connect(
    url: &str,
    settings: &super::VectorSettings,
) -> Result<(std::sync::Arc<dyn VectorIndex>, String), AdapterError> {
    let index = QdrantIndex::connect(
        url,
        settings
            .qdrant_api_key
            .as_ref()
            .map(|k| k.expose().as_str()),
        &settings.qdrant_collection,
    )
    .await?;
    Ok((
        std::sync::Arc::new(index),
        format!(
            "qdrant at {} (collections {}_<dim>)",
            adiuva_core::secret::redact_url(url),
            settings.qdrant_collection
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_ids_are_stable_separated_and_valid_uuids() {
        let a = point_uuid("user-1", "doc");
        assert_eq!(a, point_uuid("user-1", "doc"), "deterministic");
        assert_ne!(a, point_uuid("user-2", "doc"), "namespaces are apart");
        assert_ne!(
            point_uuid("a", "bc"),
            point_uuid("ab", "c"),
            "NUL separates"
        );
        assert_eq!(a.get_version_num(), 8);
        assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
    }
}
