//! Pinecone's wire format (the JSON of the data and control planes) and the encodings
//! this adapter applies on the way: percent-encoded ids, base64 payloads in metadata,
//! fetch requests bounded by URL length.

use std::collections::HashMap;

use adiuva_core::ports::vector::VectorError;
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{FETCH_BATCH, FETCH_URL_BYTES};

/// "Vector dimension 5 does not match the dimension of the index 4" → (5, 4).
pub(super) fn parse_dimension_message(message: &str) -> Option<(usize, usize)> {
    let rest = message.split("dimension ").nth(1)?;
    let got = rest.split_whitespace().next()?.parse().ok()?;
    let expected = message
        .rsplit("dimension of the index ")
        .next()?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    message
        .contains("does not match the dimension of the index")
        .then_some((got, expected))
}

/// The control plane's description of an index (the fields we use).
#[derive(Debug, Deserialize)]
pub(super) struct IndexModel {
    pub(super) dimension: Option<usize>,
    pub(super) metric: Option<String>,
    pub(super) host: Option<String>,
    #[serde(default)]
    pub(super) vector_type: Option<String>,
    #[serde(default)]
    pub(super) status: Option<IndexStatus>,
}

#[derive(Debug, Deserialize)]
pub(super) struct IndexStatus {
    #[serde(default)]
    pub(super) ready: Option<bool>,
    #[serde(default)]
    pub(super) state: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct IndexStats {
    pub(super) dimension: Option<usize>,
    #[serde(default)]
    pub(super) metric: Option<String>,
    #[serde(default)]
    pub(super) vector_type: Option<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct WireVector<'a> {
    pub(super) id: &'a str,
    pub(super) values: &'a [f32],
    pub(super) metadata: WireMetadata<'a>,
}

#[derive(Debug, Serialize)]
pub(super) struct WireMetadata<'a> {
    pub(super) blob: &'a str,
}

#[derive(Debug, Deserialize)]
pub(super) struct StoredMetadata {
    #[serde(default)]
    pub(super) blob: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct QueryRequest<'a> {
    pub(super) namespace: &'a str,
    pub(super) vector: &'a [f32],
    pub(super) top_k: usize,
    pub(super) include_metadata: bool,
    pub(super) include_values: bool,
}

#[derive(Debug, Deserialize)]
pub(super) struct QueryResponse {
    #[serde(default)]
    pub(super) matches: Vec<Match>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Match {
    pub(super) id: String,
    #[serde(default)]
    pub(super) score: f32,
    #[serde(default)]
    pub(super) metadata: Option<StoredMetadata>,
}

#[derive(Debug, Deserialize)]
pub(super) struct FetchResponse {
    #[serde(default)]
    pub(super) vectors: HashMap<String, FetchedVector>,
}

#[derive(Debug, Deserialize)]
pub(super) struct FetchedVector {
    #[serde(default)]
    pub(super) values: Vec<f32>,
    #[serde(default)]
    pub(super) metadata: Option<StoredMetadata>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeleteRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ids: Option<&'a [String]>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(super) delete_all: bool,
    pub(super) namespace: &'a str,
}

/// `https://` unless the host already names a scheme; no trailing slash.
pub(super) fn base_url(host: &str) -> String {
    let host = host.trim().trim_end_matches('/');
    if host.contains("://") {
        host.to_owned()
    } else {
        format!("https://{host}")
    }
}

/// Percent-encodes `%`, control and non-ASCII bytes: Pinecone ids must be ASCII, and
/// leaving every other byte alone keeps ordinary ids readable in Pinecone's console.
pub(super) fn encode_id(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for &b in id.as_bytes() {
        if b == b'%' || !(0x20..0x7f).contains(&b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    out
}

/// The inverse of [`encode_id`]; `None` for text it cannot have produced.
pub(super) fn decode_id(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub(super) fn decode_payload(metadata: Option<StoredMetadata>) -> Result<Bytes, VectorError> {
    match metadata.and_then(|m| m.blob) {
        None => Ok(Bytes::new()),
        Some(b) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map(Bytes::from)
            .map_err(|_| {
                VectorError::Unavailable(
                    "Pinecone returned a record whose `blob` metadata is not base64: the \
                     index holds records Adiuva did not write"
                        .into(),
                )
            }),
    }
}

pub(super) fn decode_returned_id(id: &str) -> Result<String, VectorError> {
    decode_id(id).ok_or_else(|| {
        VectorError::Unavailable(format!(
            "Pinecone returned the id {id:?}, which Adiuva did not write"
        ))
    })
}

/// Cosine of a fetched vector (as Pinecone holds it) and the query, in [-1, 1].
pub(super) fn cosine(a: &[f32], b: &[f32]) -> f32 {
    (adiuva_core::vector::cosine(a, b) as f32).clamp(-1.0, 1.0)
}

/// Splits ids into fetch requests bounded by count and URL length.
pub(super) fn fetch_chunks(ids: &[String]) -> Vec<&[String]> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, id) in ids.iter().enumerate() {
        // Percent-encoding in the query string can triple a byte.
        let cost = id.len() * 3 + 5;
        if i > start && (i - start == FETCH_BATCH || bytes + cost > FETCH_URL_BYTES) {
            chunks.push(&ids[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += cost;
    }
    if start < ids.len() {
        chunks.push(&ids[start..]);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_plain_ids_stay_plain() {
        for id in [
            "plain-id_1:x/y",
            "ünïcødé id/with:odd chars",
            "100%",
            "a\nb",
            "",
        ] {
            let enc = encode_id(id);
            assert!(enc.is_ascii(), "{enc:?} is ASCII");
            assert_eq!(decode_id(&enc).as_deref(), Some(id));
        }
        assert_eq!(encode_id("plain-id_1:x/y"), "plain-id_1:x/y");
        assert_eq!(encode_id("50%"), "50%25");
        assert_eq!(decode_id("%zz"), None);
        assert_eq!(decode_id("%4"), None);
    }

    #[test]
    fn pinecones_dimension_message_is_understood() {
        assert_eq!(
            parse_dimension_message(
                "Vector dimension 5 does not match the dimension of the index 4"
            ),
            Some((5, 4))
        );
        assert_eq!(
            parse_dimension_message(
                "Query vector dimension 3 does not match the dimension of the index 8"
            ),
            Some((3, 8))
        );
        assert_eq!(parse_dimension_message("Metadata size is too big"), None);
    }

    #[test]
    fn fetch_chunks_bound_count_and_length() {
        let ids: Vec<String> = (0..250).map(|i| format!("id{i}")).collect();
        let chunks = fetch_chunks(&ids);
        assert_eq!(
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
            [100, 100, 50]
        );
        let long: Vec<String> = (0..10).map(|i| format!("{i}{}", "x".repeat(500))).collect();
        let chunks = fetch_chunks(&long);
        assert!(chunks.len() > 1 && chunks.iter().all(|c| !c.is_empty()));
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 10);
        assert!(fetch_chunks(&[]).is_empty());
    }

    #[test]
    fn hosts_default_to_https() {
        assert_eq!(
            base_url("idx-abc.svc.pinecone.io"),
            "https://idx-abc.svc.pinecone.io"
        );
        assert_eq!(base_url("http://127.0.0.1:9/"), "http://127.0.0.1:9");
    }
}
