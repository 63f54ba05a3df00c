use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use http::{HeaderValue, Request, Response, StatusCode, header};
use tower::{Layer, Service};

use crate::claims::Principal;
use crate::verify::{AuthError, Verifier};

/// Turns an [`AuthError`] into the response a protocol expects: a gRPC status for tonic,
/// a JSON error body for the HTTP gateway.
pub trait Rejection<B>: Clone + Send + Sync + 'static {
    fn reject(&self, err: AuthError) -> Response<B>;
}

/// Whether the caller is known but may not do this (403 / `PermissionDenied`), rather than
/// unknown (401 / `Unauthenticated`). Every variant is listed: a new one must choose.
fn denied(err: &AuthError) -> bool {
    match err {
        AuthError::PermissionDenied(_) => true,
        AuthError::Missing
        | AuthError::NotBearer
        | AuthError::TooLarge
        | AuthError::Malformed(_)
        | AuthError::Expired
        | AuthError::BadSignature
        | AuthError::UnsupportedAlgorithm(_)
        | AuthError::InvalidClaims(_)
        | AuthError::Config(_) => false,
    }
}

/// gRPC `Unauthenticated` (or `PermissionDenied`) in trailers-only form.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcRejection;

impl<B: Default> Rejection<B> for GrpcRejection {
    fn reject(&self, err: AuthError) -> Response<B> {
        let status = if denied(&err) {
            tonic::Status::permission_denied(err.to_string())
        } else {
            tonic::Status::unauthenticated(err.to_string())
        };
        status.into_http()
    }
}

/// HTTP 401/403 with the gateway's `{ "error": { "code", "message" } }` body.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonRejection;

impl Rejection<axum::body::Body> for JsonRejection {
    fn reject(&self, err: AuthError) -> Response<axum::body::Body> {
        json_error(&err)
    }
}

fn json_error(err: &AuthError) -> Response<axum::body::Body> {
    let (status, code) = if denied(err) {
        (StatusCode::FORBIDDEN, "permission_denied")
    } else {
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    };
    let body = serde_json::json!({ "error": err.to_string(), "code": code });
    let mut response = Response::new(axum::body::Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// Verifies the bearer token of every request except those under public path prefixes
/// (health checks, reflection, metrics) and hands the handler a [`Principal`] in the
/// request extensions.
#[derive(Clone)]
pub struct AuthLayer<R> {
    verifier: Arc<Verifier>,
    public_prefixes: Arc<[String]>,
    optional_prefixes: Arc<[String]>,
    reject: R,
}

impl<R> AuthLayer<R> {
    pub fn new(verifier: Verifier, reject: R) -> Self {
        AuthLayer {
            verifier: Arc::new(verifier),
            public_prefixes: Arc::new([]),
            optional_prefixes: Arc::new([]),
            reject,
        }
    }

    /// Requests under `prefixes` may come without a token (e.g. an OAuth callback, which its
    /// single-use state authenticates); a token that is present is still verified and its
    /// principal handed on, and a bad one is still rejected.
    pub fn optional<I, P>(mut self, prefixes: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        let mut all: Vec<String> = self.optional_prefixes.iter().cloned().collect();
        all.extend(prefixes.into_iter().map(Into::into));
        self.optional_prefixes = all.into();
        self
    }

    /// Requests whose path starts with one of `prefixes` pass without a token.
    pub fn public<I, P>(mut self, prefixes: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        let mut all: Vec<String> = self.public_prefixes.iter().cloned().collect();
        all.extend(prefixes.into_iter().map(Into::into));
        self.public_prefixes = all.into();
        self
    }
}

impl<S, R: Clone> Layer<S> for AuthLayer<R> {
    type Service = AuthService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            verifier: self.verifier.clone(),
            public_prefixes: self.public_prefixes.clone(),
            optional_prefixes: self.optional_prefixes.clone(),
            reject: self.reject.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S, R> {
    inner: S,
    verifier: Arc<Verifier>,
    public_prefixes: Arc<[String]>,
    optional_prefixes: Arc<[String]>,
    reject: R,
}

impl<S, R, ReqB, ResB> Service<Request<ReqB>> for AuthService<S, R>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    R: Rejection<ResB>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response<ResB>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let path = req.uri().path();
        if self
            .public_prefixes
            .iter()
            .any(|p| path.starts_with(p.as_str()))
        {
            return Either::Right(self.inner.call(req));
        }
        let authorization = req.headers().get(header::AUTHORIZATION);
        if authorization.is_none()
            && self
                .optional_prefixes
                .iter()
                .any(|p| path.starts_with(p.as_str()))
        {
            return Either::Right(self.inner.call(req));
        }
        match self
            .verifier
            .verify_header(req.headers().get(header::AUTHORIZATION))
        {
            Ok(principal) => {
                req.extensions_mut().insert(principal);
                Either::Right(self.inner.call(req))
            }
            Err(err) => {
                tracing::info!(path = ?req.uri().path(), error = %err, "request rejected");
                Either::Left(ready(Ok(self.reject.reject(err))))
            }
        }
    }
}

/// The caller of a tonic request. The [`AuthLayer`] guarantees it on guarded routes; a
/// missing one means the route was wired without the layer, which must not pass silently.
#[allow(clippy::result_large_err)]
pub fn principal_of<T>(request: &tonic::Request<T>) -> Result<Principal, tonic::Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| tonic::Status::unauthenticated(AuthError::Missing.to_string()))
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Principal {
    type Rejection = Response<axum::body::Body>;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| json_error(&AuthError::Missing))
    }
}
