//! One way for every suite to run a service in-process and call it: a token for any
//! tenant and role, a spawned server on a free port with a handle to stop it, and a wait
//! for SERVING through `grpc.health.v1`.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use haven_auth::{Claims, Minter, Role};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use uuid::Uuid;

use crate::Switch;

/// The HS256 secret every suite's services verify with (≥ 32 bytes, as the services demand).
pub const JWT_SECRET: &str = "haven-test-secret-at-least-32-bytes!!";

/// A JWT for `tenant` with one `role`, user `tester`, valid for an hour.
pub fn token(tenant: Uuid, role: Role) -> String {
    token_for(tenant, "tester", &[role])
}

/// A JWT for `tenant`, `user` and `roles`, valid for an hour.
pub fn token_for(tenant: Uuid, user: &str, roles: &[Role]) -> String {
    mint(&hour_claims(tenant, user, roles.to_vec()))
}

/// A service token valid for every tenant (the explicit all-tenants scope), for `user`.
pub fn all_tenants_token(user: &str) -> String {
    mint(&hour_claims(Uuid::nil(), user, vec![Role::Service]).for_all_tenants())
}

fn hour_claims(tenant: Uuid, user: &str, roles: Vec<Role>) -> Claims {
    Claims::new(tenant, user.to_owned(), roles, Duration::from_secs(3600))
}

fn mint(claims: &Claims) -> String {
    Minter::hs256(JWT_SECRET.as_bytes())
        .and_then(|m| m.mint(claims))
        .unwrap_or_else(|e| panic!("testkit: cannot mint a token: {e}"))
}

/// Polls `check` every 20 ms until it yields a value, failing the test with `what` once
/// `within` has passed.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `msg` as a gRPC request carrying `token` as its bearer.
pub fn request<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    let value = format!("Bearer {token}")
        .parse()
        .unwrap_or_else(|e| panic!("testkit: token is not a header value: {e}"));
    r.metadata_mut().insert("authorization", value);
    r
}

/// A service running in this process.
pub struct Running {
    pub addr: SocketAddr,
    pub stop: Switch,
    pub task: JoinHandle<()>,
}

impl Running {
    /// `http://addr`, for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A lazily connecting channel to the service.
    pub fn channel(&self) -> Channel {
        channel(self.addr)
    }

    /// Fires its stop switch and waits (up to 30 s) for it to drain and return.
    pub async fn shutdown(self) {
        self.stop.fire();
        match tokio::time::timeout(Duration::from_secs(30), self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("service at {} failed: {e}", self.addr),
            Err(_) => panic!("service at {} did not stop within 30 s", self.addr),
        }
    }
}

/// Runs `serve(listener, shutdown)` on a free loopback port, stopped by `stop`, and returns
/// at once: the caller decides whether to [`wait_serving`] (most do, via [`spawn_serving`]).
pub async fn spawn<F, Fut, E>(stop: &Switch, serve: F) -> Running
where
    F: FnOnce(TcpListener, std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let listener = crate::listener().await;
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("testkit: listener address: {e}"));
    let fut = serve(listener, Box::pin(stop.wait()));
    let task = tokio::spawn(async move {
        if let Err(e) = fut.await {
            panic!("service at {addr} failed: {e}");
        }
    });
    Running {
        addr,
        stop: stop.clone(),
        task,
    }
}

/// [`spawn`] with a switch of its own, returning once the service answers SERVING.
pub async fn spawn_serving<F, Fut, E>(serve: F) -> Running
where
    F: FnOnce(TcpListener, std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let running = spawn(&Switch::new(), serve).await;
    wait_serving(running.addr).await;
    running
}

/// A lazily connecting channel to `addr`.
pub fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap_or_else(|e| panic!("testkit: bad address {addr}: {e}"))
        .connect_lazy()
}

/// The overall health `addr` reports, or `None` when it does not answer within a second.
pub async fn health(addr: SocketAddr) -> Option<ServingStatus> {
    let mut client = HealthClient::new(channel(addr));
    let call = client.check(HealthCheckRequest {
        service: String::new(),
    });
    match tokio::time::timeout(Duration::from_secs(1), call).await {
        Ok(Ok(r)) => ServingStatus::try_from(r.into_inner().status).ok(),
        _ => None,
    }
}

/// Waits (up to 30 s) until `addr` reports `want`.
pub async fn wait_health(addr: SocketAddr, want: ServingStatus) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = health(addr).await;
        if got == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr}: health {got:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 30 s) until `addr` reports SERVING: migrated, connected, ready for calls.
pub async fn wait_serving(addr: SocketAddr) {
    wait_health(addr, ServingStatus::Serving).await;
}
