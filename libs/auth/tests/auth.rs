//! JWT verification: each way a token can be wrong gets its own clear error.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::convert::Infallible;
use std::time::Duration;

use haven_auth::{
    AuthError, AuthLayer, Claims, GrpcRejection, JsonRejection, Minter, Principal, Role,
    TenantScope, Verifier,
};
use http::{HeaderValue, Request, Response, StatusCode};
use tower::{Layer, ServiceExt, service_fn};
use uuid::Uuid;

const SECRET: &[u8] = b"test-secret-that-is-at-least-32-bytes-long";

fn claims(ttl: Duration) -> Claims {
    Claims::new(Uuid::from_u128(7), "user-1", vec![Role::User], ttl)
}

fn mint(secret: &[u8], claims: &Claims) -> String {
    Minter::hs256(secret).unwrap().mint(claims).unwrap()
}

fn bearer(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
}

#[test]
fn valid_token_yields_principal() {
    let verifier = Verifier::hs256(SECRET).unwrap();
    let token = mint(SECRET, &claims(Duration::from_secs(60)));
    let principal = verifier.verify_header(Some(&bearer(&token))).unwrap();
    assert_eq!(
        principal,
        Principal {
            tenant_id: Uuid::from_u128(7),
            user_id: "user-1".into(),
            roles: vec![Role::User],
            scope: TenantScope::Tenant,
        }
    );
}

#[test]
fn expired_token_is_rejected() {
    let verifier = Verifier::hs256(SECRET).unwrap();
    let mut c = claims(Duration::from_secs(60));
    c.exp = c.iat - 3600;
    assert_eq!(verifier.verify(&mint(SECRET, &c)), Err(AuthError::Expired));
}

#[test]
fn token_signed_with_another_key_is_rejected() {
    let verifier = Verifier::hs256(SECRET).unwrap();
    let token = mint(
        b"another-secret-that-is-also-32-bytes-long!",
        &claims(Duration::from_secs(60)),
    );
    assert_eq!(verifier.verify(&token), Err(AuthError::BadSignature));
}

#[test]
fn malformed_tokens_are_rejected() {
    let verifier = Verifier::hs256(SECRET).unwrap();
    for bad in [
        "not-a-jwt",
        "a.b",
        "a.b.c",
        "....",
        "eyJhbGciOiJIUzI1NiJ9.e30",
    ] {
        let err = verifier.verify(bad).unwrap_err();
        assert!(matches!(err, AuthError::Malformed(_)), "{bad}: {err:?}");
    }
}

#[test]
fn missing_and_non_bearer_headers_are_rejected() {
    let verifier = Verifier::hs256(SECRET).unwrap();
    assert_eq!(verifier.verify_header(None), Err(AuthError::Missing));
    let basic = HeaderValue::from_static("Basic dXNlcjpwYXNz");
    assert_eq!(
        verifier.verify_header(Some(&basic)),
        Err(AuthError::NotBearer)
    );
    let empty = HeaderValue::from_static("Bearer ");
    assert_eq!(
        verifier.verify_header(Some(&empty)),
        Err(AuthError::Missing)
    );
}

#[test]
fn unsigned_alg_none_token_is_rejected() {
    let verifier = Verifier::hs256(SECRET).unwrap();
    // {"alg":"none"} . {"sub":"x"} . (no signature)
    let token = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.";
    assert!(verifier.verify(token).is_err());
}

#[test]
fn token_without_roles_is_rejected() {
    let verifier = Verifier::hs256(SECRET).unwrap();
    let mut c = claims(Duration::from_secs(60));
    c.roles.clear();
    assert!(matches!(
        verifier.verify(&mint(SECRET, &c)),
        Err(AuthError::InvalidClaims(_))
    ));
}

#[test]
fn short_secret_is_a_configuration_error() {
    assert!(matches!(
        Verifier::hs256(b"short"),
        Err(AuthError::Config(_))
    ));
    assert!(matches!(Minter::hs256(b"short"), Err(AuthError::Config(_))));
}

#[test]
fn debug_output_never_shows_keys() {
    let verifier = Verifier::hs256(SECRET).unwrap();
    let minter = Minter::hs256(SECRET).unwrap();
    let shown = format!("{verifier:?} {minter:?}");
    assert!(!shown.contains("test-secret"), "{shown}");
}

async fn echo_principal(
    req: Request<axum::body::Body>,
) -> Result<Response<axum::body::Body>, Infallible> {
    let who = req
        .extensions()
        .get::<Principal>()
        .map(|p| p.user_id.clone())
        .unwrap_or_default();
    Ok(Response::new(axum::body::Body::from(who)))
}

#[tokio::test]
async fn layer_passes_principal_and_rejects_with_json() {
    let layer =
        AuthLayer::new(Verifier::hs256(SECRET).unwrap(), JsonRejection).public(["/healthz"]);
    let svc = layer.layer(service_fn(echo_principal));

    let token = mint(SECRET, &claims(Duration::from_secs(60)));
    let req = Request::get("/api/x")
        .header("authorization", bearer(&token))
        .body(axum::body::Body::empty())
        .unwrap();
    let res = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
    assert_eq!(&body[..], b"user-1");

    let req = Request::get("/api/x")
        .body(axum::body::Body::empty())
        .unwrap();
    let res = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["code"], "unauthenticated");
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("missing authorization")
    );

    let req = Request::get("/healthz")
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(svc.oneshot(req).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn layer_rejects_grpc_with_unauthenticated_status() {
    let layer = AuthLayer::new(Verifier::hs256(SECRET).unwrap(), GrpcRejection);
    let svc = layer.layer(service_fn(echo_principal));
    let req = Request::post("/haven.retry.v1.RetryService/ListRetryItems")
        .header("authorization", "Bearer garbage")
        .body(axum::body::Body::empty())
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.headers().get("grpc-status").unwrap(), "16");
    let message = res.headers().get("grpc-message").unwrap().to_str().unwrap();
    assert!(message.contains("malformed"), "{message}");
}

#[test]
fn rs256_tokens_verify_with_the_configured_public_key() {
    let private = include_bytes!("fixtures/test-rs256-private.pem");
    let public = include_bytes!("fixtures/test-rs256-public.pem");
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(private).unwrap();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims(Duration::from_secs(60)),
        &key,
    )
    .unwrap();

    // Without the public key, RS256 is not accepted at all.
    let hs_only = Verifier::hs256(SECRET).unwrap();
    assert!(matches!(
        hs_only.verify(&token),
        Err(AuthError::UnsupportedAlgorithm(_))
    ));

    let verifier = Verifier::hs256(SECRET)
        .unwrap()
        .with_rs256_pem(public)
        .unwrap();
    assert_eq!(verifier.verify(&token).unwrap().user_id, "user-1");
    // An HS256 token still works beside it.
    assert!(
        verifier
            .verify(&mint(SECRET, &claims(Duration::from_secs(60))))
            .is_ok()
    );
}

#[tokio::test]
async fn optional_paths_pass_without_a_token_but_verify_one_that_is_sent() {
    let layer =
        AuthLayer::new(Verifier::hs256(SECRET).unwrap(), JsonRejection).optional(["/callback"]);
    let svc = layer.layer(service_fn(echo_principal));
    let get = |auth: Option<String>| {
        let mut b = Request::get("/callback");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(axum::body::Body::empty()).unwrap()
    };
    // No token: passes, without a principal.
    let res = svc.clone().oneshot(get(None)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        axum::body::to_bytes(res.into_body(), 1024)
            .await
            .unwrap()
            .is_empty()
    );
    // A valid token: its principal is handed on.
    let token = mint(SECRET, &claims(Duration::from_secs(60)));
    let res = svc
        .clone()
        .oneshot(get(Some(format!("Bearer {token}"))))
        .await
        .unwrap();
    assert_eq!(
        &axum::body::to_bytes(res.into_body(), 1024).await.unwrap()[..],
        b"user-1"
    );
    // A bad token is still rejected.
    let res = svc
        .oneshot(get(Some("Bearer garbage".into())))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

/// Signs any JSON body with HS256, for claims our own `Claims` would never produce.
fn mint_json(body: &serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        body,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn body(roles: &[&str], aud: &str) -> serde_json::Value {
    serde_json::json!({
        "sub": "x", "tid": Uuid::from_u128(7), "roles": roles, "iss": "haven",
        "aud": aud, "iat": now(), "exp": now() + 60,
    })
}

fn invalid(verifier: &Verifier, token: &str, expected: &str) {
    match verifier.verify(token) {
        Err(AuthError::InvalidClaims(m)) => assert!(m.contains(expected), "{m}"),
        other => panic!("expected InvalidClaims({expected}), got {other:?}"),
    }
}

#[test]
fn time_claims_are_checked() {
    let verifier = Verifier::hs256(SECRET).unwrap();
    // Not valid before an hour from now.
    let mut b = body(&["user"], "haven-users");
    b["nbf"] = (now() + 3600).into();
    invalid(&verifier, &mint_json(&b), "not valid yet");
    // Issued in the future.
    let mut b = body(&["user"], "haven-users");
    b["iat"] = (now() + 3600).into();
    b["exp"] = (now() + 7200).into();
    invalid(&verifier, &mint_json(&b), "iat is in the future");
    // Valid for ever.
    let mut b = body(&["user"], "haven-users");
    b["exp"] = u64::MAX.into();
    invalid(&verifier, &mint_json(&b), "HAVEN_JWT_MAX_TTL");
    // A deployment's own bound.
    let short = Verifier::hs256(SECRET)
        .unwrap()
        .with_max_ttl(Duration::from_secs(600));
    let token = mint(SECRET, &claims(Duration::from_secs(3600)));
    invalid(&short, &token, "HAVEN_JWT_MAX_TTL");
    assert!(verifier.verify(&token).is_ok());
    // No iat at all.
    let mut b = body(&["user"], "haven-users");
    b.as_object_mut().unwrap().remove("iat");
    assert!(matches!(
        verifier.verify(&mint_json(&b)),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn oversize_authorization_headers_are_refused_before_decoding() {
    let verifier = Verifier::hs256(SECRET).unwrap();
    let huge = format!("Bearer {}", "a".repeat(100 * 1024));
    assert_eq!(
        verifier.verify_header(Some(&HeaderValue::from_str(&huge).unwrap())),
        Err(AuthError::TooLarge)
    );
}

#[test]
fn audiences_and_scopes_fit_the_roles() {
    let verifier = Verifier::hs256(SECRET).unwrap();
    // Minted tokens carry the audience their roles call for.
    let service = Claims::new(
        Uuid::from_u128(2),
        "svc",
        vec![Role::Service],
        Duration::from_secs(60),
    );
    assert!(service.aud.contains("haven-internal"));
    let p = verifier.verify(&mint(SECRET, &service)).unwrap();
    assert_eq!(p.scope, TenantScope::Tenant);
    assert!(p.may_act_for(Uuid::from_u128(2)));
    assert!(!p.may_act_for(Uuid::from_u128(1)));
    let all = verifier
        .verify(&mint(SECRET, &service.clone().for_all_tenants()))
        .unwrap();
    assert!(all.may_act_for(Uuid::from_u128(1)));

    invalid(
        &verifier,
        &mint_json(&body(&["service"], "haven-users")),
        "haven-internal",
    );
    invalid(
        &verifier,
        &mint_json(&body(&["user"], "haven-internal")),
        "haven-users",
    );
    invalid(
        &verifier,
        &mint_json(&body(&["admin", "service"], "haven-internal")),
        "cannot be combined",
    );
    let mut b = body(&["user"], "haven-users");
    b["scope"] = "all_tenants".into();
    invalid(&verifier, &mint_json(&b), "service tokens only");
    invalid(
        &verifier,
        &mint_json(&body(&["user"], "someone-else")),
        "audience",
    );
    // No audience at all (a token from before audiences existed).
    let mut b = body(&["user"], "haven-users");
    b.as_object_mut().unwrap().remove("aud");
    assert!(verifier.verify(&mint_json(&b)).is_err());
    // An array audience is fine.
    let mut b = body(&["user"], "haven-users");
    b["aud"] = serde_json::json!(["haven-users", "elsewhere"]);
    assert!(verifier.verify(&mint_json(&b)).is_ok());
}

#[test]
fn a_verification_only_process_needs_no_secret() {
    let public = include_bytes!("fixtures/test-rs256-public.pem");
    let verifier = Verifier::rs256_pem(public).unwrap();
    // HS256 is not accepted at all where no secret is configured.
    assert!(matches!(
        verifier.verify(&mint(SECRET, &claims(Duration::from_secs(60)))),
        Err(AuthError::UnsupportedAlgorithm(_))
    ));
    let args = haven_auth::AuthArgs {
        jwt_secret: None,
        jwt_public_key_file: None,
        jwt_max_ttl: haven_auth::DEFAULT_MAX_TTL,
    };
    assert!(matches!(args.verifier(), Err(AuthError::Config(_))));
}
