//! The streaming engine: plan → slot → query → chunks → history. Rows flow from PostgreSQL
//! to the caller through bounded channels, so memory does not depend on the row count.
//! Files come from one `COPY` statement (one consistent snapshot), one line per row, turned
//! into the file's format by a renderer (`render/`); typed rows come from a row stream;
//! reports from a few sums in one snapshot, rendered whole. A caller that goes away cancels
//! the query and closes its connection; a failure mid-stream ends the stream with an error
//! status; every export, however it ends, gets its history row and event.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chrono::Utc;
use futures::StreamExt;
use haven_bus::Bus;
use haven_proto::common::v1::DateRange;
use haven_proto::export::v1 as pb;
use haven_proto::time::timestamp as ts;
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use tokio::sync::mpsc;
use tonic::Status;

use crate::billing::Billing;
use crate::brand::{self, BrandReport};
use crate::error::ExportError;
use crate::history::{self, Ending, Record};
use crate::limiter::Permit;
use crate::plan::Plan;
use crate::render::{self, RowRenderer};
use crate::rows::{BatchWriter, RowsFrame};
use crate::sql;

/// Rows gathered into one message when they are ready together.
const BATCH_ROWS: usize = 1024;
/// Messages buffered towards a slow caller before PostgreSQL is made to wait.
const CHANNEL_DEPTH: usize = 4;
/// The largest chunk a whole document is sent in.
const DOCUMENT_CHUNK: usize = 64 * 1024;

#[derive(Clone)]
pub struct Engine {
    pub pool: PgPool,
    pub bus: Bus,
    /// How long a caller may take no data before the export is ended as failed.
    pub stall_timeout: Duration,
}

/// A file to render: what the history records, the download's name and type, and where its
/// bytes come from.
pub struct FileJob {
    pub record: Record,
    pub content_type: &'static str,
    pub filename: String,
    pub body: Body,
}

pub enum Body {
    /// One COPY, each row rendered as it arrives, cut at the record's limit.
    Rows { sql: String, renderer: RowRenderer },
    /// The billing export: counted and copied in one REPEATABLE READ snapshot, so its
    /// envelope's total is its row count; refused, not cut, above the limit.
    Billing(Billing),
    /// A report of sums, gathered in one snapshot and rendered whole.
    BrandReport(BrandReport),
}

impl FileJob {
    /// A catalogue export as a file.
    pub fn export(plan: &Plan) -> Self {
        let renderer = match plan.format {
            crate::plan::Format::Csv { bom } => RowRenderer::Csv(Box::new(render::CsvRows::new(
                plan.fields.iter().map(|f| f.label.to_owned()).collect(),
                plan.fields.iter().map(|f| sql::csv_cell(f)).collect(),
                render::CopyInput::Binary,
                bom,
            ))),
            crate::plan::Format::Json => {
                RowRenderer::Json(render::JsonArray::bare(sql::line_form(plan)))
            }
            crate::plan::Format::Ndjson | crate::plan::Format::Rows => {
                RowRenderer::Ndjson(sql::line_form(plan))
            }
        };
        FileJob {
            record: plan.record(),
            content_type: plan.format.content_type(),
            filename: plan.filename(Utc::now()),
            body: Body::Rows {
                sql: sql::copy_sql(plan),
                renderer,
            },
        }
    }
}

/// The caller's side of one stream: the engine's messages, then its failure, if any, as the
/// final status. The failure never queues behind messages a stalled caller did not take, so
/// the stream ends failed, never silently short, whenever the caller reads again.
pub struct Delivery<M> {
    rx: mpsc::Receiver<Result<M, Status>>,
    failure: Arc<Mutex<Option<Status>>>,
}

impl<M> futures::Stream for Delivery<M> {
    type Item = Result<M, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(None) => Poll::Ready(
                self.failure
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .map(Err),
            ),
            other => other,
        }
    }
}

fn range(record: &Record) -> DateRange {
    DateRange {
        start: Some(ts(record.start)),
        end: Some(ts(record.end)),
    }
}

/// Why a stream stopped early.
enum Stop {
    /// The caller went away.
    Gone,
    Failed(ExportError),
}

impl From<ExportError> for Stop {
    fn from(e: ExportError) -> Self {
        Stop::Failed(e)
    }
}

impl From<sqlx::Error> for Stop {
    fn from(e: sqlx::Error) -> Self {
        Stop::Failed(e.into())
    }
}

impl From<render::RenderError> for Stop {
    fn from(e: render::RenderError) -> Self {
        Stop::Failed(e.into())
    }
}

/// What a stream has sent so far, for the history however it ends.
#[derive(Default)]
struct Sent {
    rows: u64,
    bytes: u64,
    truncated: bool,
}

/// A connection running one export, with what it takes to stop its query.
struct Running {
    conn: PoolConnection<Postgres>,
    pid: i32,
}

impl Running {
    async fn start(pool: &PgPool) -> Result<Running, sqlx::Error> {
        let mut conn = pool.acquire().await?;
        // One round trip: who to cancel, and times and dates rendered in UTC and ISO 8601.
        let pid = sqlx::query_scalar!(
            r#"SELECT pg_backend_pid() AS "pid!"
             FROM (SELECT set_config('TimeZone', 'UTC', false), set_config('DateStyle', 'ISO, YMD', false)) s"#,
        )
        .fetch_one(&mut *conn)
        .await?;
        Ok(Running { conn, pid })
    }

    /// Opens the one snapshot every statement of this export reads.
    async fn snapshot(&mut self) -> Result<(), sqlx::Error> {
        sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *self.conn)
            .await?;
        Ok(())
    }

    /// Ends the snapshot so the connection goes back to the pool clean.
    async fn release(mut self, snapshot: bool) -> Result<(), sqlx::Error> {
        if snapshot {
            sqlx::raw_sql("COMMIT").execute(&mut *self.conn).await?;
        }
        Ok(())
    }

    /// Stops the query now and throws the connection away (it is mid-protocol): the backend
    /// is cancelled and then finds its socket closed.
    async fn abort(self, pool: &PgPool) {
        if let Err(e) = sqlx::query_scalar!("SELECT pg_cancel_backend($1)", self.pid)
            .fetch_one(pool)
            .await
        {
            tracing::warn!(error = %e, pid = self.pid, "cannot cancel export query; closing its connection");
        }
        drop(self.conn.detach());
    }
}

type Part = pb::stream_export_response::Part;
type FileTx = mpsc::Sender<Result<pb::StreamExportResponse, Status>>;

impl Engine {
    /// Renders `job` as a file, streamed as `StreamExportResponse` messages.
    pub fn export(&self, job: FileJob, permit: Permit) -> Delivery<pb::StreamExportResponse> {
        let record = job.record.clone();
        self.spawn(record, permit, |engine, tx| async move {
            engine.run_file(job, &tx).await
        })
    }

    /// Runs one export on its own task, holding the tenant's slot, and records its history
    /// however it ends. A failure is sent to the caller as the stream's final status.
    fn spawn<M, F, Fut>(&self, record: Record, permit: Permit, run: F) -> Delivery<M>
    where
        M: Send + 'static,
        F: FnOnce(Engine, mpsc::Sender<Result<M, Status>>) -> Fut + Send + 'static,
        Fut: Future<Output = (Sent, Option<Stop>)> + Send,
    {
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let failure = Arc::new(Mutex::new(None));
        let last_word = failure.clone();
        let engine = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let started = Instant::now();
            // Held until the failure, if any, and the history row are in place: the caller's
            // stream must not see the channel close before it can read why.
            let open = tx.clone();
            let (sent, stop) = run(engine.clone(), tx).await;
            let Sent {
                rows,
                bytes,
                truncated,
            } = sent;
            let ending = match stop {
                None => Ending::Completed {
                    rows,
                    bytes,
                    truncated,
                },
                Some(Stop::Gone) => Ending::Cancelled { rows, bytes },
                Some(Stop::Failed(e)) => {
                    if matches!(e, ExportError::Stalled(_)) {
                        metrics::counter!("haven_export_stalled_total").increment(1);
                    }
                    let status = Status::from(e);
                    let error = status.message().to_owned();
                    *last_word.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
                    Ending::Failed { rows, bytes, error }
                }
            };
            // The stream ends only once the history row is written, so a caller that read
            // to the end can look its export up at once.
            history::record(
                &engine.pool,
                &engine.bus,
                &record,
                &ending,
                started.elapsed(),
            )
            .await;
            drop(open);
        });
        Delivery { rx, failure }
    }

    /// Hands one message to the caller, or says why it cannot: gone, or not reading.
    async fn send<M>(&self, tx: &mpsc::Sender<Result<M, Status>>, message: M) -> Result<(), Stop> {
        match tokio::time::timeout(self.stall_timeout, tx.send(Ok(message))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Stop::Gone),
            Err(_) => Err(ExportError::Stalled(self.stall_timeout).into()),
        }
    }

    async fn send_part(&self, tx: &FileTx, part: Part) -> Result<(), Stop> {
        self.send(tx, pb::StreamExportResponse { part: Some(part) })
            .await
    }

    /// Sends what `out` holds as one chunk, if anything.
    async fn send_chunk(
        &self,
        tx: &FileTx,
        out: &mut BytesMut,
        sent: &mut Sent,
    ) -> Result<(), Stop> {
        if out.is_empty() {
            return Ok(());
        }
        let chunk = out.split().freeze();
        sent.bytes += chunk.len() as u64;
        self.send_part(tx, Part::Chunk(chunk)).await
    }

    async fn run_file(&self, job: FileJob, tx: &FileTx) -> (Sent, Option<Stop>) {
        let mut sent = Sent::default();
        let outcome = self.file(job, tx, &mut sent).await;
        (sent, outcome.err())
    }

    async fn file(&self, job: FileJob, tx: &FileTx, sent: &mut Sent) -> Result<(), Stop> {
        let FileJob {
            record,
            content_type,
            filename,
            body,
        } = job;
        let start = Part::Start(pb::ExportStart {
            export_id: record.id.to_string(),
            content_type: content_type.into(),
            filename,
            fields: record.fields.clone(),
            date_range: Some(range(&record)),
            limit: record.limit,
        });
        match body {
            Body::Rows { sql, mut renderer } => {
                self.send_part(tx, start).await?;
                // The opening bytes go before a connection is taken and set up (two round
                // trips to PostgreSQL), so the download starts at once.
                self.open(&mut renderer, tx, sent).await?;
                let running = Running::start(&self.pool).await?;
                self.copy(running, false, &sql, renderer, record.limit, tx, sent)
                    .await?;
            }
            Body::Billing(billing) => {
                let mut running = Running::start(&self.pool).await?;
                let counted = async {
                    running.snapshot().await?;
                    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(billing.count_sql()))
                        .fetch_one(&mut *running.conn)
                        .await?;
                    Ok::<u64, sqlx::Error>(u64::try_from(total).unwrap_or(0))
                }
                .await;
                let total = match counted {
                    Ok(total) => total,
                    Err(e) => {
                        running.abort(&self.pool).await;
                        return Err(e.into());
                    }
                };
                if total > record.limit {
                    running.abort(&self.pool).await;
                    return Err(ExportError::TooLarge(format!(
                        "{total} rows match, more than the {} one billing export holds; choose a shorter date range",
                        record.limit
                    ))
                    .into());
                }
                if let Err(stop) = self.send_part(tx, start).await {
                    running.abort(&self.pool).await;
                    return Err(stop);
                }
                let mut renderer = match billing.renderer(total, Utc::now()) {
                    Ok(r) => r,
                    Err(e) => {
                        running.abort(&self.pool).await;
                        return Err(e.into());
                    }
                };
                if let Err(stop) = self.open(&mut renderer, tx, sent).await {
                    running.abort(&self.pool).await;
                    return Err(stop);
                }
                self.copy(
                    running,
                    true,
                    &billing.copy_sql(),
                    renderer,
                    record.limit,
                    tx,
                    sent,
                )
                .await?;
            }
            Body::BrandReport(report) => {
                // The document is made whole before its first byte goes, so a failure is a
                // plain error status, never a cut file.
                let mut running = Running::start(&self.pool).await?;
                let gathered = async {
                    running.snapshot().await?;
                    report.gather(&mut running.conn, Utc::now()).await
                }
                .await;
                let (doc, calls) = match gathered {
                    Ok(g) => g,
                    Err(e) => {
                        running.abort(&self.pool).await;
                        return Err(e.into());
                    }
                };
                running.release(true).await?;
                // Rendering a PDF is CPU work: off the async threads.
                let format = report.format;
                let mut out = tokio::task::spawn_blocking(move || match format {
                    brand::Format::Csv => render::report_csv::render(&doc),
                    brand::Format::Pdf => render::report_pdf::render(&doc),
                })
                .await
                .map_err(|e| render::RenderError::new("report", e))??;
                self.send_part(tx, start).await?;
                sent.rows = calls;
                while !out.is_empty() {
                    let mut chunk = out.split_to(out.len().min(DOCUMENT_CHUNK));
                    self.send_chunk(tx, &mut chunk, sent).await?;
                }
            }
        }
        let summary = pb::ExportSummary {
            record_count: sent.rows,
            bytes: sent.bytes,
            truncated: sent.truncated,
        };
        self.send_part(tx, Part::Summary(summary)).await
    }

    /// Sends the renderer's opening bytes (a CSV header, JSON's `[`): they need no query.
    async fn open(
        &self,
        renderer: &mut RowRenderer,
        tx: &FileTx,
        sent: &mut Sent,
    ) -> Result<(), Stop> {
        let mut out = BytesMut::new();
        renderer.open(&mut out)?;
        self.send_chunk(tx, &mut out, sent).await
    }

    /// Streams one COPY through `renderer`, whose opening bytes went before ([`Self::open`]),
    /// stopping after `limit` rows.
    #[allow(clippy::too_many_arguments)]
    async fn copy(
        &self,
        mut running: Running,
        snapshot: bool,
        sql: &str,
        mut renderer: RowRenderer,
        limit: u64,
        tx: &FileTx,
        sent: &mut Sent,
    ) -> Result<(), Stop> {
        let mut out = BytesMut::with_capacity(64 * 1024);
        let streamed: Result<(), Stop> = async {
            let copy = running.conn.copy_out_raw(sql).await?;
            let mut batches = copy.ready_chunks(BATCH_ROWS);
            while let Some(batch) = batches.next().await {
                for row in batch {
                    let row = row?;
                    if !renderer.carries_row(&row) {
                        continue;
                    }
                    if sent.rows == limit {
                        sent.truncated = true;
                        break;
                    }
                    sent.rows += 1;
                    renderer.row(&row, &mut out)?;
                }
                renderer.flush(&mut out)?;
                if sent.truncated {
                    break;
                }
                self.send_chunk(tx, &mut out, sent).await?;
            }
            Ok(())
        }
        .await;
        match streamed {
            Ok(()) if sent.truncated => running.abort(&self.pool).await,
            // The connection goes back to the pool now, not after the last sends.
            Ok(()) => running.release(snapshot).await?,
            Err(stop) => {
                running.abort(&self.pool).await;
                return Err(stop);
            }
        }
        renderer.close(&mut out)?;
        self.send_chunk(tx, &mut out, sent).await
    }

    /// Streams `plan` as typed rows: header, batches, trailer.
    pub fn rows(&self, plan: Plan, permit: Permit) -> Delivery<RowsFrame> {
        self.spawn(plan.record(), permit, |engine, tx| async move {
            let mut sent = Sent::default();
            let outcome = engine.run_rows(&plan, &tx, &mut sent).await;
            (sent, outcome.err())
        })
    }

    async fn run_rows(
        &self,
        plan: &Plan,
        tx: &mpsc::Sender<Result<RowsFrame, Status>>,
        sent: &mut Sent,
    ) -> Result<(), Stop> {
        use pb::stream_rows_response::Part;
        let part = |p| RowsFrame::Message(pb::StreamRowsResponse { part: Some(p) });
        let header = pb::RowsHeader {
            export_id: plan.id.to_string(),
            columns: plan
                .fields
                .iter()
                .map(|f| pb::Column {
                    key: f.key.into(),
                    label: f.label.into(),
                    value_type: f.kind.to_proto() as i32,
                })
                .collect(),
            date_range: Some(range(&plan.record())),
            limit: plan.limit,
        };
        self.send(tx, part(Part::Header(header))).await?;
        let mut running = Running::start(&self.pool).await?;
        let sql = sql::rows_sql(plan);
        let streamed: Result<(), Stop> = async {
            let copy = running.conn.copy_out_raw(&sql).await?;
            let mut batches = copy.ready_chunks(BATCH_ROWS);
            // Each batch's buffer is sized by the one before, so it is rarely grown.
            let mut capacity = 64 * 1024;
            while let Some(batch) = batches.next().await {
                let mut out = BatchWriter::with_capacity(capacity);
                for row in batch {
                    let row = row?;
                    if !render::pg_binary::carries_tuple(&row) {
                        continue;
                    }
                    if sent.rows == plan.limit {
                        sent.truncated = true;
                        break;
                    }
                    sent.rows += 1;
                    out.row(&plan.fields, &row)?;
                }
                if !out.is_empty() {
                    capacity = out.len() + out.len() / 8;
                    self.send(tx, RowsFrame::Encoded(out.finish())).await?;
                }
                if sent.truncated {
                    break;
                }
            }
            Ok(())
        }
        .await;
        match streamed {
            Ok(()) if sent.truncated => running.abort(&self.pool).await,
            // The connection goes back to the pool now, not after the last sends.
            Ok(()) => drop(running),
            Err(stop) => {
                running.abort(&self.pool).await;
                return Err(stop);
            }
        }
        self.send(
            tx,
            part(Part::Trailer(pb::RowsTrailer {
                record_count: sent.rows,
                truncated: sent.truncated,
            })),
        )
        .await
    }
}
