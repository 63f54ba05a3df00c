//! Browsers on the origins in `HAVEN_CORS_ORIGINS` may call the API and read a download's
//! headers; pages of any other origin get no CORS grant, so the browser keeps them out.

use haven_testkit::nats_url;

use crate::webhooks::start_with;

const APP: &str = "http://app.haven.test:3000";

#[tokio::test]
async fn listed_origins_may_call_the_api_and_others_may_not() {
    let gw = start_with(&nats_url(), None, |c| {
        c.with_cors_origins(&format!("https://console.haven.test, {APP}"))
    })
    .await;
    let url = format!("{}/api/export/configs", gw.base);
    let preflight = |origin: &str| {
        gw.http
            .request(reqwest::Method::OPTIONS, &url)
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET")
            .header("Access-Control-Request-Headers", "authorization")
            .send()
    };

    // A listed origin's preflight is answered without a token, and cached for an hour.
    let ok = preflight(APP).await.unwrap();
    assert!(ok.status().is_success(), "{}", ok.status());
    let h = ok.headers();
    assert_eq!(h["access-control-allow-origin"], APP);
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    assert_eq!(h["access-control-max-age"], "3600");
    assert!(h.get("access-control-allow-credentials").is_none());

    // Any other origin gets no grant.
    let other = preflight("http://evil.haven.test").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // The real call carries the grant and exposes what a download page reads, errors too.
    let res = gw
        .http
        .get(&url)
        .header("Origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["access-control-allow-origin"], APP);
    let exposed = res.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in ["content-disposition", "x-export-id", "x-export-limit"] {
        assert!(exposed.contains(name), "{name} not exposed: {exposed}");
    }
    let res = gw
        .http
        .get(&url)
        .header("Origin", "http://evil.haven.test")
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    gw.stop.fire();
}

#[tokio::test]
async fn without_a_list_no_origin_is_granted() {
    let gw = start_with(&nats_url(), None, |c| c).await;
    let res = gw
        .http
        .get(format!("{}/healthz", gw.base))
        .header("Origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("access-control-allow-origin").is_none());
    gw.stop.fire();
}
