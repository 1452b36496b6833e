//! The [`BlobStore`] conformance suite. Every check writes under `prefix`, so runs can
//! share a bucket.

use bytes::Bytes;
use futures::StreamExt as _;

use crate::ports::blob::{BlobError, BlobStore, ByteStream};

/// Runs every check below against `store`, under `prefix` (e.g. a random id).
pub async fn run_all(store: &dyn BlobStore, prefix: &str) {
    put_get_delete(store, prefix).await;
    large_multi_chunk_round_trip(store, prefix).await;
    overwrite_replaces(store, prefix).await;
    failed_upload_leaves_nothing(store, prefix).await;
    list_is_scoped_to_the_prefix(store, prefix).await;
    invalid_keys_are_refused(store).await;
}

/// A stream of these chunks.
pub fn chunks(parts: Vec<Vec<u8>>) -> ByteStream {
    futures::stream::iter(parts.into_iter().map(|p| Ok(Bytes::from(p)))).boxed()
}

/// Reads a whole stream.
pub async fn collect(mut s: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    out
}

/// Store, read back (bytes, size, checksum), delete, delete again.
pub async fn put_get_delete(store: &dyn BlobStore, prefix: &str) {
    let key = format!("{prefix}/user/notes/one");
    let info = store
        .put(
            &key,
            chunks(vec![b"hello ".to_vec(), b"world".to_vec()]),
            Some("abc123"),
        )
        .await
        .expect("put");
    assert_eq!((info.key.as_str(), info.size), (key.as_str(), 11));
    let (got, body) = store.get(&key).await.expect("get");
    assert_eq!(got.size, 11);
    if let Some(c) = &got.checksum {
        assert_eq!(c, "abc123", "a kept checksum is the one given");
    }
    assert_eq!(collect(body).await, b"hello world");
    store.delete(&key).await.expect("delete");
    assert!(
        matches!(store.get(&key).await, Err(BlobError::NotFound)),
        "gone after delete"
    );
    store.delete(&key).await.expect("delete is idempotent");
    let empty = format!("{prefix}/user/notes/empty");
    assert_eq!(
        store
            .put(&empty, chunks(vec![]), None)
            .await
            .expect("empty put")
            .size,
        0
    );
    assert!(
        collect(store.get(&empty).await.expect("get").1)
            .await
            .is_empty()
    );
    store.delete(&empty).await.expect("delete");
}

/// A body larger than one upload part survives intact.
pub async fn large_multi_chunk_round_trip(store: &dyn BlobStore, prefix: &str) {
    let key = format!("{prefix}/user/backup/large");
    let parts: Vec<Vec<u8>> = (0..13u8).map(|i| vec![i; 1024 * 1024]).collect();
    let expected: Vec<u8> = parts.concat();
    let info = store.put(&key, chunks(parts), None).await.expect("put");
    assert_eq!(info.size, expected.len() as u64);
    let body = collect(store.get(&key).await.expect("get").1).await;
    assert!(body == expected, "13 MiB round trip differs");
    store.delete(&key).await.expect("delete");
}

/// A second put under one key replaces the first whole.
pub async fn overwrite_replaces(store: &dyn BlobStore, prefix: &str) {
    let key = format!("{prefix}/user/t/over");
    store
        .put(&key, chunks(vec![vec![1; 100]]), Some("one"))
        .await
        .expect("put");
    store
        .put(&key, chunks(vec![vec![2; 10]]), Some("two"))
        .await
        .expect("put again");
    let (info, body) = store.get(&key).await.expect("get");
    assert_eq!(collect(body).await, vec![2; 10]);
    if let Some(c) = info.checksum {
        assert_eq!(c, "two");
    }
    store.delete(&key).await.expect("delete");
}

/// A body stream that fails mid-way stores nothing, and leaves an older blob alone.
pub async fn failed_upload_leaves_nothing(store: &dyn BlobStore, prefix: &str) {
    let key = format!("{prefix}/user/t/broken");
    let broken: ByteStream = futures::stream::iter(vec![
        Ok(Bytes::from(vec![7u8; 64 * 1024])),
        Err(BlobError::Aborted("client went away".into())),
    ])
    .boxed();
    assert!(matches!(
        store.put(&key, broken, None).await,
        Err(BlobError::Aborted(_))
    ));
    assert!(
        matches!(store.get(&key).await, Err(BlobError::NotFound)),
        "no partial blob"
    );
    assert!(
        store
            .list(&format!("{prefix}/user/t/broken"))
            .await
            .expect("list")
            .is_empty(),
        "nothing listed"
    );

    store
        .put(&key, chunks(vec![b"old".to_vec()]), None)
        .await
        .expect("put");
    let broken: ByteStream = futures::stream::iter(vec![
        Ok(Bytes::from_static(b"new")),
        Err(BlobError::Aborted("cut".into())),
    ])
    .boxed();
    assert!(store.put(&key, broken, None).await.is_err());
    assert_eq!(
        collect(store.get(&key).await.expect("get").1).await,
        b"old",
        "old blob intact"
    );
    store.delete(&key).await.expect("delete");
}

/// `list` returns exactly the keys under a prefix, with sizes and a plausible age.
pub async fn list_is_scoped_to_the_prefix(store: &dyn BlobStore, prefix: &str) {
    let keys_of = |listed: Vec<crate::ports::blob::StoredBlob>| {
        let mut keys: Vec<String> = listed.into_iter().map(|b| b.key).collect();
        keys.sort();
        keys
    };
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let keys = [
        format!("{prefix}/a/t/1"),
        format!("{prefix}/a/t/2"),
        format!("{prefix}/a/u/3"),
        format!("{prefix}/ab/t/4"),
    ];
    for k in &keys {
        store
            .put(k, chunks(vec![b"x".to_vec()]), None)
            .await
            .expect("put");
    }
    let listed = store.list(&format!("{prefix}/a")).await.expect("list");
    for b in &listed {
        assert_eq!(b.size, 1, "{b:?}");
        // Clocks of a remote store may differ a little from ours.
        assert!(
            (b.last_modified - before).abs() < 10 * 60 * 1000,
            "last_modified is when it was written: {b:?}, now {before}"
        );
    }
    assert_eq!(
        keys_of(listed),
        keys[..3].to_vec(),
        "prefix is a path, not a string prefix"
    );
    let under_t = store.list(&format!("{prefix}/a/t")).await.expect("list");
    assert_eq!(keys_of(under_t), keys[..2].to_vec());
    for k in &keys {
        store.delete(k).await.expect("delete");
    }
    assert!(
        store
            .list(&format!("{prefix}/a"))
            .await
            .expect("list")
            .is_empty()
    );
}

/// Keys that could escape or confuse the layout are refused.
pub async fn invalid_keys_are_refused(store: &dyn BlobStore) {
    for bad in [
        "", "/abs/key", "a//b", "a/../b", "a/./b", "..", "a/b/", "a\\b", "a/b c",
    ] {
        let r = store.put(bad, chunks(vec![b"x".to_vec()]), None).await;
        assert!(
            matches!(r, Err(BlobError::InvalidKey(_))),
            "{bad:?} must be refused: {r:?}"
        );
        assert!(
            matches!(store.get(bad).await, Err(BlobError::InvalidKey(_))),
            "{bad:?} get"
        );
    }
}
