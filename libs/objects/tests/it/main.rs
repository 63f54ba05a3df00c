//! The object stores against real backends: a temporary directory, the in-process memory
//! store and a real S3 protocol server (moto), each through the same calls.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use haven_objects::{Backend, ObjectKey, ObjectStorage, ObjectsArgs, ObjectsError};

const SECRET: &str = "object-link-secret-for-tests-0123456789";

fn key(k: &str) -> ObjectKey {
    ObjectKey::parse(k).unwrap()
}

async fn read_all(storage: &ObjectStorage, k: &ObjectKey) -> Vec<u8> {
    let download = storage.get(k).await.unwrap();
    let chunks: Vec<Bytes> = download.body.try_collect().await.unwrap();
    chunks.concat()
}

/// 12 MiB in 64 KiB chunks, generated as it is read.
fn big_body() -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    stream::iter(0..192u32).map(|i| Ok(Bytes::from(vec![(i % 251) as u8; 64 * 1024])))
}

fn expected_big() -> Vec<u8> {
    (0..192u32)
        .flat_map(|i| vec![(i % 251) as u8; 64 * 1024])
        .collect()
}

/// What every backend must do alike.
async fn exercise(storage: &ObjectStorage) {
    let small = key("statistic-exports/s1/p1/v1/20261205.csv");
    storage
        .put(&small, Bytes::from_static(b"date,shopId\n2026-12-05,s1\n"))
        .await
        .unwrap();
    assert_eq!(
        read_all(storage, &small).await,
        b"date,shopId\n2026-12-05,s1\n"
    );
    assert_eq!(
        storage.get(&small).await.unwrap().content_type,
        "text/csv; charset=utf-8"
    );
    // Replacing keeps one object with the new content.
    storage
        .put(&small, Bytes::from_static(b"replaced"))
        .await
        .unwrap();
    assert_eq!(read_all(storage, &small).await, b"replaced");

    // A large object goes up as a streamed multipart upload and reads back whole.
    let big = key("scheduled-exports/t/s/big.csv");
    let size = storage.put_stream(&big, big_body()).await.unwrap();
    assert_eq!(size, 12 * 1024 * 1024);
    assert_eq!(storage.size(&big).await.unwrap(), Some(size));
    assert!(read_all(storage, &big).await == expected_big());

    // A body that fails midway leaves no object behind.
    let broken = key("scheduled-exports/t/s/broken.csv");
    let failing = big_body()
        .take(100)
        .chain(stream::iter([Err(std::io::Error::other(
            "source went away",
        ))]));
    let err = storage.put_stream(&broken, failing).await.unwrap_err();
    assert!(
        matches!(&err, ObjectsError::Source { reason, .. } if reason.contains("source went away")),
        "{err:?}"
    );
    assert_eq!(storage.size(&broken).await.unwrap(), None);

    let mut listed: Vec<String> = storage
        .list(&key("statistic-exports/s1"))
        .map_ok(|l| l.key)
        .try_collect()
        .await
        .unwrap();
    listed.sort();
    assert_eq!(listed, vec![small.to_string()]);

    assert!(matches!(
        storage.get(&key("missing/object.csv")).await,
        Err(ObjectsError::NotFound(k)) if k == "missing/object.csv"
    ));
    storage.delete(&small).await.unwrap();
    storage.delete(&small).await.unwrap();
    assert_eq!(storage.size(&small).await.unwrap(), None);
}

#[tokio::test]
async fn file_store_round_trips_and_streams_large_objects() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("objects");
    let args = ObjectsArgs {
        url: Some(format!("file://{}", root.display())),
        ..ObjectsArgs::memory("unused", SECRET, "http://gateway.test")
    };
    let storage = ObjectStorage::open(&args).unwrap();
    assert_eq!(storage.backend(), Backend::File);
    exercise(&storage).await;
    // Objects are plain files under the root; no staging files are left behind.
    let big = root.join("scheduled-exports/t/s/big.csv");
    assert_eq!(std::fs::metadata(&big).unwrap().len(), 12 * 1024 * 1024);
    let leftovers: Vec<_> = std::fs::read_dir(big.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(leftovers, vec!["big.csv".to_owned()]);

    // Links go through the gateway, signed; the stored address carries no signature.
    let k = key("a/b.csv");
    let link = storage.link(&k, Duration::from_secs(60)).await.unwrap();
    assert!(
        link.starts_with("http://gateway.test/api/objects/a/b.csv?expires="),
        "{link}"
    );
    assert_eq!(
        storage.address(&k),
        "http://gateway.test/api/objects/a/b.csv"
    );
    let url = reqwest::Url::parse(&link).unwrap();
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    let expires: i64 = q["expires"].parse().unwrap();
    storage.verify_link(&k, expires, &q["sig"]).unwrap();
    assert!(
        storage
            .verify_link(&key("a/c.csv"), expires, &q["sig"])
            .is_err()
    );
}

#[tokio::test]
async fn file_store_refuses_bad_urls_and_weak_secrets() {
    for url in ["file://relative/dir", "ftp://x/y", "not a url", "s3://"] {
        let args = ObjectsArgs {
            url: Some(url.into()),
            ..ObjectsArgs::memory("unused", SECRET, "http://g")
        };
        let err = ObjectStorage::open(&args).unwrap_err();
        assert!(
            err.to_string().contains("HAVEN_OBJECT_STORE_URL"),
            "{url}: {err}"
        );
    }
    let weak = ObjectsArgs::memory("weak", "short", "http://g");
    assert!(
        ObjectStorage::open(&weak)
            .unwrap_err()
            .to_string()
            .contains("32 bytes")
    );
    let no_secret = ObjectsArgs {
        link_secret: None,
        ..ObjectsArgs::memory("nosecret", SECRET, "http://g")
    };
    let storage = ObjectStorage::open(&no_secret).unwrap();
    assert!(matches!(
        storage.link(&key("a"), Duration::from_secs(1)).await,
        Err(ObjectsError::NoLinkSecret(Backend::Memory))
    ));
}

#[tokio::test]
async fn memory_store_is_shared_by_name_within_a_process() {
    let name = uuid::Uuid::new_v4().simple().to_string();
    let a = ObjectStorage::open(&ObjectsArgs::memory(&name, SECRET, "http://g")).unwrap();
    let b = ObjectStorage::open(&ObjectsArgs::memory(&name, SECRET, "http://g")).unwrap();
    exercise(&a).await;
    a.put(&key("x/y.json"), Bytes::from_static(b"{}"))
        .await
        .unwrap();
    assert_eq!(read_all(&b, &key("x/y.json")).await, b"{}");
    assert_eq!(
        b.get(&key("x/y.json")).await.unwrap().content_type,
        "application/json"
    );
}

#[tokio::test]
async fn s3_store_uploads_in_parts_and_presigns_links() {
    let (endpoint, bucket) = haven_testkit::s3_bucket().await;
    let storage =
        ObjectStorage::open(&ObjectsArgs::s3(&endpoint, &bucket, SECRET, "http://g")).unwrap();
    assert_eq!(storage.backend(), Backend::S3);
    exercise(&storage).await;

    let http = reqwest::Client::new();
    // The 12 MiB object was a multipart upload: S3 gives such objects an ETag ending `-N`.
    let big = key("scheduled-exports/t/s/big.csv");
    let link = storage.link(&big, Duration::from_secs(300)).await.unwrap();
    assert!(link.contains("X-Amz-Signature="), "{link}");
    let response = http.get(&link).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    assert!(
        etag.trim_matches('"').contains('-'),
        "not multipart: {etag}"
    );
    assert_eq!(response.bytes().await.unwrap().len(), 12 * 1024 * 1024);
    assert_eq!(
        storage.address(&big),
        format!("{endpoint}/{bucket}/scheduled-exports/t/s/big.csv")
    );

    // A prefix in the URL keeps every key under it.
    let prefixed = ObjectsArgs {
        url: Some(format!("s3://{bucket}/tenant-files")),
        ..ObjectsArgs::s3(&endpoint, &bucket, SECRET, "http://g")
    };
    let prefixed = ObjectStorage::open(&prefixed).unwrap();
    prefixed
        .put(&key("a/b.json"), Bytes::from_static(b"[]"))
        .await
        .unwrap();
    assert_eq!(
        storage.size(&key("tenant-files/a/b.json")).await.unwrap(),
        Some(2)
    );
    let listed: Vec<String> = prefixed
        .list(&key("a"))
        .map_ok(|l| l.key)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(listed, vec!["a/b.json".to_owned()]);
    let body = http
        .get(
            prefixed
                .link(&key("a/b.json"), Duration::from_secs(60))
                .await
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(body.headers()["content-type"], "application/json");
    assert_eq!(body.bytes().await.unwrap(), "[]");
}
