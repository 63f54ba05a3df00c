//! The streaming engine. Rows flow from PostgreSQL to the caller through bounded channels, so
//! memory does not depend on the row count. Files come from one `COPY` statement (one
//! consistent snapshot), one message per row: CSV rows arrive in PostgreSQL's text format and
//! are written out by the csv crate, JSON objects arrive rendered; typed rows come from a
//! cursor-like row stream. A caller that goes away cancels the query and closes its
//! connection; a failure mid-stream ends the stream with an error status.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

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
use haven_proto::time::timestamp as ts;

use crate::history::{self, Ending};
use crate::limiter::Permit;
use crate::plan::{CsvCell, Format, Plan};

/// Rows gathered into one message when they are ready together.
const BATCH_ROWS: usize = 1024;
/// Messages buffered towards a slow caller before PostgreSQL is made to wait.
const CHANNEL_DEPTH: usize = 4;

#[derive(Clone)]
pub struct Engine {
    pub pool: PgPool,
    pub bus: Bus,
    /// How long a caller may take no data before the export is ended as failed.
    pub stall_timeout: Duration,
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
    /// The caller stayed but took nothing for the stall timeout.
    Stalled(Duration),
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
        let pid = sqlx::query_scalar!(
            r#"SELECT pg_backend_pid() AS "pid!" FROM (SELECT set_config('TimeZone', 'UTC', false)) s"#,
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?;
        Ok(Running { conn, pid })
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

impl Engine {
    /// Renders `plan` as a file, streamed as `StreamExportResponse` messages.
    pub fn export(&self, plan: Plan, permit: Permit) -> Delivery<pb::StreamExportResponse> {
        self.spawn(plan, permit, |engine, plan, tx| async move {
            engine.run_export(&plan, &tx).await
        })
    }

    /// Runs one export on its own task, holding the tenant's slot, and records its history
    /// however it ends. A failure is sent to the caller as the stream's final status.
    fn spawn<M, F, Fut>(&self, plan: Plan, permit: Permit, run: F) -> Delivery<M>
    where
        M: Send + 'static,
        F: FnOnce(Engine, Arc<Plan>, mpsc::Sender<Result<M, Status>>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(u64, u64, bool), (Stop, u64, u64)>> + Send,
    {
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let failure = Arc::new(Mutex::new(None));
        let last_word = failure.clone();
        let engine = self.clone();
        let plan = Arc::new(plan);
        tokio::spawn(async move {
            let _permit = permit;
            let started = Instant::now();
            // Held until the failure, if any, and the history row are in place: the caller's
            // stream must not see the channel close before it can read why.
            let open = tx.clone();
            let ending = match run(engine.clone(), plan.clone(), tx).await {
                Ok((rows, bytes, truncated)) => Ending::Completed {
                    rows,
                    bytes,
                    truncated,
                },
                Err((Stop::Gone, rows, bytes)) => Ending::Cancelled { rows, bytes },
                Err((Stop::Stalled(after), rows, bytes)) => {
                    let error = format!(
                        "the client took no data for {} s; the export was ended",
                        after.as_secs()
                    );
                    metrics::counter!("haven_export_stalled_total").increment(1);
                    *last_word.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(Status::deadline_exceeded(error.clone()));
                    Ending::Failed { rows, bytes, error }
                }
                Err((Stop::Failed(status), rows, bytes)) => {
                    let error = status.message().to_owned();
                    *last_word.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
                    Ending::Failed { rows, bytes, error }
                }
            };
            // The stream ends only once the history row is written, so a caller that read
            // to the end can look its export up at once.
            history::record(&engine.pool, &engine.bus, &plan, &ending, started.elapsed()).await;
            drop(open);
        });
        Delivery { rx, failure }
    }

    /// Hands one message to the caller, or says why it cannot: gone, or not reading.
    async fn send<M>(
        &self,
        tx: &mpsc::Sender<Result<M, Status>>,
        message: Result<M, Status>,
    ) -> Result<(), Stop> {
        match tokio::time::timeout(self.stall_timeout, tx.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Stop::Gone),
            Err(_) => Err(Stop::Stalled(self.stall_timeout)),
        }
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
        if let Err(stop) = self
            .send(tx, part(pb::stream_export_response::Part::Start(start)))
            .await
        {
            return Err((stop, 0, 0));
        }
        let mut running = Running::start(&self.pool)
            .await
            .map_err(|s| (Stop::Failed(s), 0, 0))?;
        let (mut rows, mut bytes, mut truncated) = (0u64, 0u64, false);
        let mut out = BytesMut::with_capacity(64 * 1024);
        let mut csv_out = None;
        match plan.format {
            Format::Csv { bom } => {
                let sink = CsvSink::default();
                if bom {
                    out.put_slice("\u{feff}".as_bytes());
                }
                let mut writer = csv::WriterBuilder::new()
                    .terminator(csv::Terminator::Any(b'\n'))
                    .buffer_capacity(64 * 1024)
                    .from_writer(sink.clone());
                let header = writer
                    .write_record(plan.fields.iter().map(|f| f.label))
                    .and_then(|()| Ok(writer.flush()?));
                if header.is_err() {
                    return Err((
                        Stop::Failed(Status::internal("cannot render the CSV header")),
                        0,
                        0,
                    ));
                }
                sink.take_into(&mut out);
                csv_out = Some((writer, sink));
            }
            Format::Json => out.put_slice(b"["),
            Format::Ndjson | Format::Rows => {}
        }
        // The file's first bytes (BOM, header, `[`) need no query: send them at once, so the
        // download starts while PostgreSQL plans.
        if !out.is_empty() {
            let chunk = out.split().freeze();
            bytes += chunk.len() as u64;
            if let Err(stop) = self
                .send(tx, part(pb::stream_export_response::Part::Chunk(chunk)))
                .await
            {
                running.abort(&self.pool).await;
                return Err((stop, 0, bytes));
            }
        }
        let sql = plan.copy_sql();
        let mut scratch = Vec::new();
        let cells: Vec<CsvCell> = plan.fields.iter().map(|f| CsvCell::of(f)).collect();
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
                    match (&mut csv_out, plan.format) {
                        (Some((writer, _)), _) => {
                            text_row_to_csv(writer, &row, &cells, &mut scratch).map_err(|e| {
                                Stop::Failed(Status::internal(format!(
                                    "cannot render a CSV row: {e}"
                                )))
                            })?
                        }
                        (None, Format::Json) => {
                            // Each object arrives as one line; join them with commas.
                            out.put_slice(if rows == 1 { b"\n" } else { b",\n" });
                            out.put_slice(row.strip_suffix(b"\n").unwrap_or(&row));
                        }
                        (None, _) => out.put_slice(&row),
                    }
                }
                if let Some((writer, sink)) = &mut csv_out {
                    writer.flush().map_err(|e| {
                        Stop::Failed(Status::internal(format!("cannot render CSV: {e}")))
                    })?;
                    sink.take_into(&mut out);
                }
                if truncated {
                    break;
                }
                let chunk = out.split().freeze();
                bytes += chunk.len() as u64;
                self.send(tx, part(pb::stream_export_response::Part::Chunk(chunk)))
                    .await?;
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) if truncated => running.abort(&self.pool).await,
            // The connection goes back to the pool now, not after the last sends.
            Ok(()) => drop(running),
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
            if let Err(stop) = self
                .send(tx, part(pb::stream_export_response::Part::Chunk(chunk)))
                .await
            {
                return Err((stop, rows, bytes));
            }
        }
        let summary = pb::ExportSummary {
            record_count: rows,
            bytes,
            truncated,
        };
        if let Err(stop) = self
            .send(tx, part(pb::stream_export_response::Part::Summary(summary)))
            .await
        {
            return Err((stop, rows, bytes));
        }
        Ok((rows, bytes, truncated))
    }

    /// Streams `plan` as typed rows: header, batches, trailer.
    pub fn rows(&self, plan: Plan, permit: Permit) -> Delivery<pb::StreamRowsResponse> {
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
        if let Err(stop) = self.send(tx, part(Part::Header(header))).await {
            return Err((stop, 0, 0));
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
                    && let Err(stop) = self
                        .send(tx, part(Part::Batch(pb::RowBatch { rows: out })))
                        .await
                {
                    return Err(stop);
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
            // The connection goes back to the pool now, not after the last sends.
            Ok(()) => drop(running),
            Err(stop) => {
                running.abort(&self.pool).await;
                return Err((stop, count, 0));
            }
        }
        if let Err(stop) = self
            .send(
                tx,
                part(Part::Trailer(pb::RowsTrailer {
                    record_count: count,
                    truncated,
                })),
            )
            .await
        {
            return Err((stop, count, 0));
        }
        Ok((count, 0, truncated))
    }
}

/// Where the csv crate's writer puts its output, shared so the engine can take each batch's
/// bytes while the writer lives on for the whole export.
#[derive(Clone, Default)]
struct CsvSink(Arc<std::sync::Mutex<Vec<u8>>>);

impl CsvSink {
    /// Moves what was written so far to the end of `out`.
    fn take_into(&self, out: &mut BytesMut) {
        let mut buf = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        out.put_slice(&buf);
        buf.clear();
    }
}

impl std::io::Write for CsvSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes one row of `COPY ... TO STDOUT` text format (tab-separated, `\N` for null,
/// backslash escapes) as one CSV record, treating each cell as `cells` says. Tabs and
/// newlines inside values always arrive escaped, so splitting on raw tabs is exact.
fn text_row_to_csv(
    writer: &mut csv::Writer<CsvSink>,
    line: &[u8],
    cells: &[CsvCell],
    scratch: &mut Vec<u8>,
) -> csv::Result<()> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    for (i, field) in line.split(|&b| b == b'\t').enumerate() {
        let cell = cells.get(i).copied().unwrap_or(CsvCell::Plain);
        if field == b"\\N" {
            writer.write_field(b"")?;
            continue;
        }
        let value: &[u8] = if field.contains(&b'\\') {
            unescape(field, scratch);
            scratch
        } else {
            field
        };
        match cell {
            CsvCell::Bool => writer.write_field(match value {
                b"t" => &b"true"[..],
                b"f" => &b"false"[..],
                other => other,
            })?,
            CsvCell::Text if needs_neutralising(value) => {
                let mut prefixed = Vec::with_capacity(value.len() + 1);
                prefixed.push(b'\'');
                prefixed.extend_from_slice(value);
                writer.write_field(&prefixed)?;
            }
            CsvCell::Text | CsvCell::Plain => writer.write_field(value)?,
        }
    }
    writer.write_record(std::iter::empty::<&[u8]>())
}

/// Decodes COPY's text-format escapes into `out` (COPY TO emits only these, never octal or
/// hex ones).
fn unescape(field: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut bytes = field.iter();
    while let Some(&b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'r') => out.push(b'\r'),
            Some(b'b') => out.push(0x08),
            Some(b'f') => out.push(0x0c),
            Some(b'v') => out.push(0x0b),
            Some(&other) => out.push(other),
            None => out.push(b'\\'),
        }
    }
}

/// OWASP's rule for CSV injection: a cell starting with `= + - @`, tab or CR is a formula to
/// a spreadsheet, except a plain number such as `-42` or `+1.5`, which must stay a number.
fn needs_neutralising(value: &[u8]) -> bool {
    let Some(&first) = value.first() else {
        return false;
    };
    if !matches!(first, b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') {
        return false;
    }
    !is_plain_number(value)
}

/// `^-?[0-9]+(\.[0-9]+)?$`
fn is_plain_number(value: &[u8]) -> bool {
    let digits = value.strip_prefix(b"-").unwrap_or(value);
    let (int, frac) = match digits.iter().position(|&b| b == b'.') {
        Some(dot) => (&digits[..dot], Some(&digits[dot + 1..])),
        None => (digits, None),
    };
    let all_digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    all_digits(int) && frac.is_none_or(all_digits)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn render(lines: &[&[u8]]) -> String {
        let sink = CsvSink::default();
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(sink.clone());
        let mut scratch = Vec::new();
        for line in lines {
            text_row_to_csv(
                &mut w,
                line,
                &[CsvCell::Plain, CsvCell::Plain, CsvCell::Text],
                &mut scratch,
            )
            .unwrap();
        }
        w.flush().unwrap();
        let mut out = BytesMut::new();
        sink.take_into(&mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn text_format_rows_become_rfc4180_records() {
        // null, escaped tab/newline/CR/backslash, quotes and commas, emoji.
        let got = render(&[
            b"1\t\\N\tplain\n",
            b"2\ta\\tb\\nc\\rd\\\\e\tsay \"hi\", ok \xf0\x9f\x98\x80\n",
        ]);
        assert_eq!(
            got,
            "1,,plain\n2,\"a\tb\nc\rd\\e\",\"say \"\"hi\"\", ok \u{1F600}\"\n"
        );
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(got.as_bytes());
        let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
        assert_eq!(&rows[1][1], "a\tb\nc\rd\\e");
        assert_eq!(&rows[1][2], "say \"hi\", ok \u{1F600}");
        assert_eq!(&rows[0][1], "");
    }

    #[test]
    fn formulas_are_neutralised_and_numbers_and_booleans_kept() {
        let sink = CsvSink::default();
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(sink.clone());
        let cells = [
            CsvCell::Text,
            CsvCell::Text,
            CsvCell::Text,
            CsvCell::Plain,
            CsvCell::Bool,
            CsvCell::Bool,
        ];
        let mut scratch = Vec::new();
        text_row_to_csv(
            &mut w,
            b"=SUM(A1)\t-42.5\t\\tcmd\t-7\tt\tf\n",
            &cells,
            &mut scratch,
        )
        .unwrap();
        text_row_to_csv(&mut w, b"@x\t+1\t-\t=1\t\\N\tt\n", &cells, &mut scratch).unwrap();
        w.flush().unwrap();
        let mut out = BytesMut::new();
        sink.take_into(&mut out);
        assert_eq!(
            String::from_utf8(out.to_vec()).unwrap(),
            "'=SUM(A1),-42.5,'\tcmd,-7,true,false\n'@x,'+1,'-,=1,,true\n"
        );
        for (v, plain) in [
            ("12", true),
            ("-12.50", true),
            ("1.", false),
            ("-", false),
            ("1e5", false),
            (".5", false),
        ] {
            assert_eq!(is_plain_number(v.as_bytes()), plain, "{v}");
        }
    }
}
