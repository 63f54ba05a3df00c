//! The streaming engine. Rows flow from PostgreSQL to the caller through bounded channels, so
//! memory does not depend on the row count. Files are rendered by PostgreSQL's own `COPY`
//! (one statement: one consistent snapshot), one message per row; typed rows come from a
//! cursor-like row stream. A caller that goes away cancels the query and closes its
//! connection; a failure mid-stream ends the stream with an error status.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use chrono::Utc;
use futures::StreamExt;
use haven_bus::Bus;
use haven_proto::common::v1::DateRange;
use haven_proto::export::v1 as pb;
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres, Row};
use tokio::sync::mpsc;
use tonic::Status;

use crate::catalog::Kind;
use crate::history::{self, Ending, ts};
use crate::limiter::Permit;
use crate::plan::{Format, Plan};

/// Rows gathered into one message when they are ready together.
const BATCH_ROWS: usize = 1024;
/// Messages buffered towards a slow caller before PostgreSQL is made to wait.
const CHANNEL_DEPTH: usize = 4;

#[derive(Clone)]
pub struct Engine {
    pub pool: PgPool,
    pub bus: Bus,
}

fn range(plan: &Plan) -> DateRange {
    DateRange {
        start: Some(ts(plan.start)),
        end: Some(ts(plan.end)),
    }
}

fn db_error(e: sqlx::Error) -> Status {
    tracing::error!(error = %e, "export query failed");
    Status::unavailable("the export query failed; try again")
}

/// Why a stream stopped early.
enum Stop {
    /// The caller went away.
    Gone,
    Failed(Status),
}

/// A connection running one export, with what it takes to stop its query.
struct Running {
    conn: PoolConnection<Postgres>,
    pid: i32,
}

impl Running {
    async fn start(pool: &PgPool) -> Result<Running, Status> {
        let mut conn = pool.acquire().await.map_err(db_error)?;
        // One round trip: who to cancel, and timestamps rendered in UTC.
        let pid: i32 = sqlx::query_scalar(
            "SELECT pg_backend_pid() FROM (SELECT set_config('TimeZone', 'UTC', false)) s",
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?;
        Ok(Running { conn, pid })
    }

    /// Stops the query now and throws the connection away (it is mid-protocol): the backend
    /// is cancelled and then finds its socket closed.
    async fn abort(self, pool: &PgPool) {
        if let Err(e) = sqlx::query("SELECT pg_cancel_backend($1)")
            .bind(self.pid)
            .execute(pool)
            .await
        {
            tracing::warn!(error = %e, pid = self.pid, "cannot cancel export query; closing its connection");
        }
        drop(self.conn.detach());
    }
}

impl Engine {
    /// Renders `plan` as a file, streamed as `StreamExportResponse` messages.
    pub fn export(
        &self,
        plan: Plan,
        permit: Permit,
    ) -> mpsc::Receiver<Result<pb::StreamExportResponse, Status>> {
        self.spawn(plan, permit, |engine, plan, tx| async move {
            engine.run_export(&plan, &tx).await
        })
    }

    /// Runs one export on its own task, holding the tenant's slot, and records its history
    /// however it ends. A failure is sent to the caller as the stream's final status.
    fn spawn<M, F, Fut>(
        &self,
        plan: Plan,
        permit: Permit,
        run: F,
    ) -> mpsc::Receiver<Result<M, Status>>
    where
        M: Send + 'static,
        F: FnOnce(Engine, Arc<Plan>, mpsc::Sender<Result<M, Status>>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(u64, u64, bool), (Stop, u64, u64)>> + Send,
    {
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let engine = self.clone();
        let plan = Arc::new(plan);
        tokio::spawn(async move {
            let _permit = permit;
            let started = Instant::now();
            let ending = match run(engine.clone(), plan.clone(), tx.clone()).await {
                Ok((rows, bytes, truncated)) => Ending::Completed {
                    rows,
                    bytes,
                    truncated,
                },
                Err((Stop::Gone, rows, bytes)) => Ending::Cancelled { rows, bytes },
                Err((Stop::Failed(status), rows, bytes)) => {
                    let error = status.message().to_owned();
                    let _ = tx.send(Err(status)).await;
                    Ending::Failed { rows, bytes, error }
                }
            };
            history::record(&engine.pool, &engine.bus, &plan, &ending, started.elapsed()).await;
        });
        rx
    }

    async fn run_export(
        &self,
        plan: &Plan,
        tx: &mpsc::Sender<Result<pb::StreamExportResponse, Status>>,
    ) -> Result<(u64, u64, bool), (Stop, u64, u64)> {
        let part = |p| Ok(pb::StreamExportResponse { part: Some(p) });
        let start = pb::ExportStart {
            export_id: plan.id.to_string(),
            content_type: plan.format.content_type().into(),
            filename: plan.filename(Utc::now()),
            fields: plan.fields.iter().map(|f| f.key.to_owned()).collect(),
            date_range: Some(range(plan)),
            limit: plan.limit,
        };
        if tx
            .send(part(pb::stream_export_response::Part::Start(start)))
            .await
            .is_err()
        {
            return Err((Stop::Gone, 0, 0));
        }
        let mut running = Running::start(&self.pool)
            .await
            .map_err(|s| (Stop::Failed(s), 0, 0))?;
        let (mut rows, mut bytes, mut truncated) = (0u64, 0u64, false);
        let mut out = BytesMut::with_capacity(64 * 1024);
        match plan.format {
            Format::Csv { bom } => {
                if bom {
                    out.put_slice("\u{feff}".as_bytes());
                }
                let mut header = csv::WriterBuilder::new()
                    .terminator(csv::Terminator::Any(b'\n'))
                    .from_writer(Vec::new());
                let written = header
                    .write_record(plan.fields.iter().map(|f| f.label))
                    .map_err(|e| e.to_string())
                    .and_then(|_| header.flush().map_err(|e| e.to_string()));
                let header = header.into_inner().map_err(|e| e.to_string());
                match (written, header) {
                    (Ok(()), Ok(h)) => out.put_slice(&h),
                    _ => {
                        return Err((
                            Stop::Failed(Status::internal("cannot render the CSV header")),
                            0,
                            0,
                        ));
                    }
                }
            }
            Format::Json => out.put_slice(b"["),
            Format::Ndjson | Format::Rows => {}
        }
        // The file's first bytes (BOM, header, `[`) need no query: send them at once, so the
        // download starts while PostgreSQL plans.
        if !out.is_empty() {
            let chunk = out.split().freeze();
            bytes += chunk.len() as u64;
            if tx
                .send(part(pb::stream_export_response::Part::Chunk(chunk)))
                .await
                .is_err()
            {
                running.abort(&self.pool).await;
                return Err((Stop::Gone, 0, bytes));
            }
        }
        let sql = plan.copy_sql();
        let outcome: Result<(), Stop> = async {
            let copy = running
                .conn
                .copy_out_raw(&sql)
                .await
                .map_err(|e| Stop::Failed(db_error(e)))?;
            let mut batches = copy.ready_chunks(BATCH_ROWS);
            while let Some(batch) = batches.next().await {
                for row in batch {
                    let row = row.map_err(|e| Stop::Failed(db_error(e)))?;
                    if rows == plan.limit {
                        truncated = true;
                        break;
                    }
                    rows += 1;
                    match plan.format {
                        Format::Json => {
                            // Each object arrives as one line; join them with commas.
                            out.put_slice(if rows == 1 { b"\n" } else { b",\n" });
                            out.put_slice(row.strip_suffix(b"\n").unwrap_or(&row));
                        }
                        _ => out.put_slice(&row),
                    }
                }
                if truncated {
                    break;
                }
                let chunk = out.split().freeze();
                bytes += chunk.len() as u64;
                if tx
                    .send(part(pb::stream_export_response::Part::Chunk(chunk)))
                    .await
                    .is_err()
                {
                    return Err(Stop::Gone);
                }
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) if truncated => running.abort(&self.pool).await,
            Ok(()) => {}
            Err(stop) => {
                running.abort(&self.pool).await;
                return Err((stop, rows, bytes));
            }
        }
        if plan.format == Format::Json {
            out.put_slice(if rows == 0 { b"]\n" } else { b"\n]\n" });
        }
        if !out.is_empty() {
            let chunk: Bytes = out.split().freeze();
            bytes += chunk.len() as u64;
            if tx
                .send(part(pb::stream_export_response::Part::Chunk(chunk)))
                .await
                .is_err()
            {
                return Err((Stop::Gone, rows, bytes));
            }
        }
        let summary = pb::ExportSummary {
            record_count: rows,
            bytes,
            truncated,
        };
        if tx
            .send(part(pb::stream_export_response::Part::Summary(summary)))
            .await
            .is_err()
        {
            return Err((Stop::Gone, rows, bytes));
        }
        Ok((rows, bytes, truncated))
    }

    /// Streams `plan` as typed rows: header, batches, trailer.
    pub fn rows(
        &self,
        plan: Plan,
        permit: Permit,
    ) -> mpsc::Receiver<Result<pb::StreamRowsResponse, Status>> {
        self.spawn(plan, permit, |engine, plan, tx| async move {
            engine.run_rows(&plan, &tx).await
        })
    }

    async fn run_rows(
        &self,
        plan: &Plan,
        tx: &mpsc::Sender<Result<pb::StreamRowsResponse, Status>>,
    ) -> Result<(u64, u64, bool), (Stop, u64, u64)> {
        use pb::stream_rows_response::Part;
        let part = |p| Ok(pb::StreamRowsResponse { part: Some(p) });
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
            date_range: Some(range(plan)),
            limit: plan.limit,
        };
        if tx.send(part(Part::Header(header))).await.is_err() {
            return Err((Stop::Gone, 0, 0));
        }
        let mut running = Running::start(&self.pool)
            .await
            .map_err(|s| (Stop::Failed(s), 0, 0))?;
        let sql = plan.rows_sql();
        let (mut count, mut truncated) = (0u64, false);
        let outcome: Result<(), Stop> = async {
            let stream = sqlx::query(sqlx::AssertSqlSafe(sql.as_str())).fetch(&mut *running.conn);
            let mut batches = stream.ready_chunks(BATCH_ROWS);
            while let Some(batch) = batches.next().await {
                let mut out = Vec::with_capacity(batch.len());
                for row in batch {
                    let row = row.map_err(|e| Stop::Failed(db_error(e)))?;
                    if count == plan.limit {
                        truncated = true;
                        break;
                    }
                    count += 1;
                    out.push(typed_row(plan, &row).map_err(|e| Stop::Failed(db_error(e)))?);
                }
                if !out.is_empty()
                    && tx
                        .send(part(Part::Batch(pb::RowBatch { rows: out })))
                        .await
                        .is_err()
                {
                    return Err(Stop::Gone);
                }
                if truncated {
                    break;
                }
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) if truncated => running.abort(&self.pool).await,
            Ok(()) => {}
            Err(stop) => {
                running.abort(&self.pool).await;
                return Err((stop, count, 0));
            }
        }
        if tx
            .send(part(Part::Trailer(pb::RowsTrailer {
                record_count: count,
                truncated,
            })))
            .await
            .is_err()
        {
            return Err((Stop::Gone, count, 0));
        }
        Ok((count, 0, truncated))
    }
}

fn typed_row(plan: &Plan, row: &sqlx::postgres::PgRow) -> Result<pb::Row, sqlx::Error> {
    use pb::value::Kind as V;
    let mut values = Vec::with_capacity(plan.fields.len());
    for (i, field) in plan.fields.iter().enumerate() {
        let kind = match field.kind {
            Kind::Text => row.try_get::<Option<String>, _>(i)?.map(V::StringValue),
            Kind::Int => row.try_get::<Option<i64>, _>(i)?.map(V::Int64Value),
            Kind::Decimal => row.try_get::<Option<String>, _>(i)?.map(V::DecimalValue),
            Kind::Bool => row.try_get::<Option<bool>, _>(i)?.map(V::BoolValue),
            Kind::Timestamp => row
                .try_get::<Option<chrono::DateTime<Utc>>, _>(i)?
                .map(|t| V::TimestampValue(ts(t))),
            Kind::Date => row.try_get::<Option<String>, _>(i)?.map(V::DateValue),
        };
        values.push(pb::Value {
            kind: Some(kind.unwrap_or(V::NullValue(0))),
        });
    }
    Ok(pb::Row { values })
}
