//! What every test of the export service needs: the service on a fresh database, clients
//! with a tenant's token, and whole files read back from a stream.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use haven_appdata::SeedOptions;
use haven_auth::Role;
use haven_proto::export::v1 as pb;
use haven_proto::export::v1::export_service_client::ExportServiceClient;
use haven_server::CommonArgs;
use haven_testkit::{Switch, TestDb};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use uuid::Uuid;

const SECRET: &str = haven_testkit::JWT_SECRET;

#[derive(Clone)]
pub struct Auth(pub tonic::metadata::MetadataValue<tonic::metadata::Ascii>);
impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Ok(r)
    }
}
pub type Client = ExportServiceClient<InterceptedService<Channel, Auth>>;

pub struct Stack {
    pub db: TestDb,
    pub addr: std::net::SocketAddr,
    pub stop: Switch,
    /// The NATS namespace the service publishes its events under.
    pub ns: String,
}

pub async fn start(max_records: &str) -> Stack {
    start_with(max_records, 4).await
}

pub async fn start_with(max_records: &str, per_tenant: usize) -> Stack {
    start_config(max_records, |c| {
        c.max_concurrent_per_tenant = per_tenant;
    })
    .await
}

pub async fn start_config(
    max_records: &str,
    edit: impl FnOnce(&mut haven_export::Config),
) -> Stack {
    let db = TestDb::new().await;
    let ns = haven_testkit::namespace();
    let mut config = haven_export::Config::for_test(CommonArgs::new(
        &db.url,
        &haven_testkit::nats_url(),
        &ns,
        SECRET,
    ));
    config.max_records = max_records.into();
    edit(&mut config);
    let running = haven_testkit::spawn_serving(|listener, shutdown| {
        haven_export::serve(config, listener, shutdown)
    })
    .await;
    Stack {
        db,
        addr: running.addr,
        stop: running.stop,
        ns,
    }
}

impl Stack {
    pub async fn client(&self, tenant: Uuid) -> Client {
        self.client_as(tenant, Role::User).await
    }

    pub async fn client_as(&self, tenant: Uuid, role: Role) -> Client {
        let channel = loop {
            if let Ok(c) = Channel::from_shared(format!("http://{}", self.addr))
                .unwrap()
                .connect()
                .await
            {
                break c;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let token = haven_testkit::token(tenant, role);
        ExportServiceClient::with_interceptor(
            channel,
            Auth(format!("Bearer {token}").parse().unwrap()),
        )
    }

    pub async fn seed(&self, tenant: Uuid, rows: u64, hostile: f64) {
        let mut o = SeedOptions::new(tenant, "T", rows);
        o.days = 30;
        o.hostile_ratio = hostile;
        haven_appdata::seed(&self.db.pool, &o).await.unwrap();
    }
}

pub fn request(ty: &str, format: pb::ExportFormat) -> pb::ExportRequest {
    pb::ExportRequest {
        export_type: ty.into(),
        format: format as i32,
        ..Default::default()
    }
}

/// A whole file as StreamExport and the report RPCs send it.
pub type File = (pb::ExportStart, Vec<u8>, pb::ExportSummary);

/// The whole file and its summary.
pub async fn export(client: &mut Client, req: pb::ExportRequest) -> Result<File, tonic::Status> {
    let stream = client.stream_export(req).await?.into_inner();
    read_file(stream).await
}

/// Reads a file stream to its end; a stream without its summary is an error.
pub async fn read_file(
    mut stream: tonic::Streaming<pb::StreamExportResponse>,
) -> Result<File, tonic::Status> {
    use pb::stream_export_response::Part;
    let (mut start, mut body, mut summary) = (None, Vec::new(), None);
    while let Some(msg) = stream.message().await? {
        match msg.part.unwrap() {
            Part::Start(s) => start = Some(s),
            Part::Chunk(c) => body.extend_from_slice(&c),
            Part::Summary(s) => summary = Some(s),
        }
    }
    Ok((
        start.unwrap(),
        body,
        summary.expect("a complete stream ends with a summary"),
    ))
}

/// The export events published in the stack's namespace from now on.
pub async fn events(stack: &Stack) -> async_nats::Subscriber {
    let client = async_nats::connect(haven_testkit::nats_url())
        .await
        .unwrap();
    client
        .subscribe(format!("{}.haven.exports.events.>", stack.ns))
        .await
        .unwrap()
}

/// The next export event, decoded, with its subject.
pub async fn next_event(
    sub: &mut async_nats::Subscriber,
) -> (String, haven_proto::events::v1::ExportEvent) {
    use futures::StreamExt;
    use prost::Message;
    let msg = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("an export event within 10 s")
        .unwrap();
    let event = haven_proto::events::v1::ExportEvent::decode(msg.payload).unwrap();
    (msg.subject.to_string(), event)
}

/// Makes schedule `id`'s next slot due now, as if the clock had reached it.
pub async fn make_due(pool: &sqlx::PgPool, id: &str) {
    sqlx::query(
        "UPDATE exports.scheduled_exports SET next_run_at = now() - interval '1 second' WHERE id = $1::uuid",
    )
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
}
