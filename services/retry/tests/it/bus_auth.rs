//! The bus is authenticated per process: on a server that admits only the processes' nkey
//! users, an anonymous client cannot connect, the gateway cannot hand work to the retry
//! queue (acting as any tenant), and the queue still takes work from the integrations service.

use std::time::Duration;

use haven_bus::auth::BusUser;
use haven_bus::{Bus, NatsArgs};
use haven_server::CommonArgs;
use haven_testkit::{JWT_SECRET, NatsServer, TestDb};
use uuid::Uuid;

use crate::common::enqueue_request;

async fn bus_as(nats: &NatsServer, ns: &str, user: BusUser) -> Bus {
    let args = NatsArgs::new(nats.url(), ns).with_creds(nats.creds(user));
    Bus::connect(&args.config(user.name()).unwrap())
        .await
        .unwrap()
}

async fn items_of(db: &TestDb, tenant: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM retry.retry_items WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn only_a_permitted_process_can_hand_work_to_the_queue() {
    let nats = NatsServer::start_secured().unwrap();
    let db = TestDb::new().await;
    let ns = haven_testkit::namespace();

    // No credentials, or a seed the server does not know: refused at the door.
    assert!(async_nats::connect(nats.url()).await.is_err());
    let stranger = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(stranger.path(), nkeys::KeyPair::new_user().seed().unwrap()).unwrap();
    let mut args = NatsArgs::new(nats.url(), &ns).with_creds(stranger.path());
    args.connect_timeout = Duration::from_secs(1);
    assert!(
        Bus::connect(&args.config("stranger").unwrap())
            .await
            .is_err()
    );

    // The retry service runs with its own credentials.
    let mut common = CommonArgs::new(&db.url, &nats.url(), &ns, JWT_SECRET);
    common.nats.creds = Some(nats.creds(BusUser::Retry));
    let config = haven_retry::Config::for_test(common);
    let _svc = haven_testkit::spawn_serving(|listener, shutdown| {
        haven_retry::serve(config, listener, shutdown)
    })
    .await;

    // The integrations service may enqueue: the item is stored.
    let (victim, other) = (Uuid::new_v4(), Uuid::new_v4());
    let integrations = bus_as(&nats, &ns, BusUser::Integrations).await;
    let mut later = enqueue_request("integrations.refresh_token", "{}");
    later.first_run = Some(haven_proto::retry::v1::enqueue_request::FirstRun::DelayMs(
        3_600_000,
    ));
    haven_retry_client::enqueue(
        &integrations,
        other,
        None,
        later.clone(),
        "from-integrations",
    )
    .await
    .unwrap();
    haven_testkit::wait_for(
        "the permitted enqueue to be stored",
        Duration::from_secs(20),
        || async { (items_of(&db, other).await > 0).then_some(()) },
    )
    .await;

    // The gateway may publish webhooks, but not onto the queue's subject.
    let gateway = bus_as(&nats, &ns, BusUser::Gateway).await;
    gateway
        .ensure_stream(&haven_bus::webhooks_stream())
        .await
        .unwrap();
    gateway
        .publish_bytes("haven.webhooks.shopify.orders.create", "{}".into(), "w-1")
        .await
        .unwrap();
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        haven_retry_client::enqueue(&gateway, victim, None, later, "from-gateway"),
    )
    .await;
    assert!(
        !matches!(refused, Ok(Ok(()))),
        "the gateway's publish onto haven.retry.enqueue was accepted"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(items_of(&db, victim).await, 0);
}
