//! Signed object links: `/api/objects/{key}?expires=&sig=` serves the file store's objects
//! to whoever holds a link signed for that key and not yet expired, and nothing else.

use std::time::Duration;

use haven_objects::{LinkSigner, ObjectKey, ObjectStorage, ObjectsArgs};
use haven_testkit::nats_url;
use secrecy::SecretString;

use crate::webhooks::start_with;

const SECRET: &str = "gateway-object-links-secret-0123456789abcdef";

#[tokio::test]
async fn signed_links_serve_objects_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("objects");
    // A file beside the store's root that no key may reach.
    std::fs::write(dir.path().join("secret.txt"), "outside the store").unwrap();
    let args = |public: &str| ObjectsArgs {
        url: Some(format!("file://{}", root.display())),
        ..ObjectsArgs::memory("unused", SECRET, public)
    };
    let gw = start_with(&nats_url(), None, |c| c.with_objects(args("http://unused"))).await;
    // The export service's view of the same store, making links to this gateway.
    let store = ObjectStorage::open(&args(&gw.base)).unwrap();
    let key = ObjectKey::parse("statistic-exports/shop.myshopify.com/1/2/20261205.csv").unwrap();
    store
        .put(
            &key,
            bytes::Bytes::from_static(b"date,shopId\n2026-12-05,shop\n"),
        )
        .await
        .unwrap();
    let svg = ObjectKey::parse("shop/products/1/variants/2/media/3.svg").unwrap();
    store
        .put(
            &svg,
            bytes::Bytes::from_static(b"<svg onload=\"alert(1)\"/>"),
        )
        .await
        .unwrap();

    let link = store.link(&key, Duration::from_secs(300)).await.unwrap();
    assert!(
        link.starts_with(&format!("{}/api/objects/statistic-exports/", gw.base)),
        "{link}"
    );
    // No token needed: the signature is the credential.
    let ok = gw.http.get(&link).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let h = ok.headers();
    assert_eq!(h["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        h["content-disposition"],
        "attachment; filename=\"20261205.csv\""
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(
        h["cache-control"]
            .to_str()
            .unwrap()
            .starts_with("private, max-age=")
    );
    assert_eq!(ok.text().await.unwrap(), "date,shopId\n2026-12-05,shop\n");

    // An SVG is served as a sandboxed attachment, never as a page of ours.
    let res = gw
        .http
        .get(store.link(&svg, Duration::from_secs(60)).await.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/svg+xml");
    assert!(
        res.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("sandbox")
    );

    let url = reqwest::Url::parse(&link).unwrap();
    let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    let (expires, sig) = (q["expires"].clone(), q["sig"].clone());
    let path = url.path().to_owned();
    let get = |path: String, query: String| {
        let http = gw.http.clone();
        let base = gw.base.clone();
        async move {
            let res = http
                .get(format!("{base}{path}{query}"))
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let body: serde_json::Value = res.json().await.unwrap_or_default();
            (status, body)
        }
    };

    // Tampered: another expiry, another key, a changed signature, none at all.
    let later = expires.parse::<i64>().unwrap() + 3600;
    for (p, query) in [
        (path.clone(), format!("?expires={later}&sig={sig}")),
        (
            path.replace("20261205", "20261204"),
            format!("?expires={expires}&sig={sig}"),
        ),
        (
            path.clone(),
            format!("?expires={expires}&sig={}", sig.replace(&sig[..2], "00")),
        ),
        (path.clone(), format!("?expires={expires}&sig=")),
        (path.clone(), format!("?expires=soon&sig={sig}")),
        (path.clone(), String::new()),
    ] {
        let (status, body) = get(p.clone(), query.clone()).await;
        assert_eq!(status, 403, "{p}{query}: {body}");
        assert_eq!(body["code"], "permission_denied");
    }

    // Expired: signed correctly with the store's secret, for a time already past.
    let signer = LinkSigner::new(SecretString::from(SECRET)).unwrap();
    let past = chrono::Utc::now().timestamp() - 1;
    let (status, body) = get(
        path.clone(),
        format!("?expires={past}&sig={}", signer.signature(&key, past)),
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );

    // Keys that would leave the root are refused before any signature is looked at, even
    // when signed (the signer itself accepts only valid keys, so these are hand-made).
    let future = chrono::Utc::now().timestamp() + 300;
    for raw in [
        "/api/objects/..%2Fsecret.txt",
        "/api/objects/a/..%2F..%2Fsecret.txt",
        "/api/objects/%2E%2E/secret.txt",
        "/api/objects/a%00b",
        "/api/objects/a%5C..%5Csecret.txt",
        "/api/objects/a//b",
        "/api/objects/%2Fetc%2Fpasswd",
    ] {
        let (status, body) = get(raw.to_owned(), format!("?expires={future}&sig={sig}")).await;
        // 400 from us; the HTTP client normalises some of these paths first (`%2E%2E` is a
        // dot segment to it), which then miss the route.
        assert!(matches!(status, 400 | 401 | 404), "{raw}: {status} {body}");
        if status == 400 {
            assert_eq!(body["field"], "key", "{raw}: {body}");
        }
    }
    // Dot segments that the URL layer resolves land on a key that is not signed.
    let (status, _) = get(
        "/api/objects/x/../secret.txt".into(),
        format!("?expires={future}&sig={sig}"),
    )
    .await;
    assert_eq!(status, 403);

    // A link to an object that is gone: 404, not a store error.
    store.delete(&key).await.unwrap();
    assert_eq!(gw.http.get(&link).send().await.unwrap().status(), 404);
    gw.stop.fire();
}
