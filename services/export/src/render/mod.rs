//! Renderers: each turns an export's rows, or a report's sections, into the bytes of one
//! format. They write into the engine's buffer and know nothing of connections or gRPC, so
//! each is tested alone.
//!
//! Row renderers take rows as `COPY ... TO STDOUT` delivers them, one line per row; document
//! renderers take a whole [`Report`], which is a handful of aggregates, never a result set.

pub mod csv;
pub mod json;
pub mod json_line;
pub mod ndjson;
pub mod pg_binary;
pub mod report_csv;
pub mod report_pdf;

use bytes::BytesMut;

pub use self::csv::{CopyInput, CsvCell, CsvRows};
pub use self::json::JsonArray;
pub use self::json_line::LineForm;

/// Why a renderer could not write.
#[derive(Debug, thiserror::Error)]
#[error("cannot render {format}: {message}")]
pub struct RenderError {
    pub format: &'static str,
    pub message: String,
}

impl RenderError {
    pub fn new(format: &'static str, message: impl ToString) -> Self {
        RenderError {
            format,
            message: message.to_string(),
        }
    }
}

/// The renderer of a row export. Rows arrive as COPY messages: PostgreSQL's binary format
/// for catalogue CSV, its text format for billing's, one JSON object per line for JSON and
/// NDJSON.
pub enum RowRenderer {
    /// Boxed: the csv writer is large beside the others.
    Csv(Box<CsvRows>),
    Json(JsonArray),
    Ndjson(LineForm),
}

impl RowRenderer {
    /// What comes before the first row (BOM and header, `[`, an envelope's head). It needs
    /// no query, so the engine sends it while PostgreSQL plans.
    pub fn open(&mut self, out: &mut BytesMut) -> Result<(), RenderError> {
        match self {
            RowRenderer::Csv(csv) => csv.open(out),
            RowRenderer::Json(json) => {
                json.open(out);
                Ok(())
            }
            RowRenderer::Ndjson(_) => Ok(()),
        }
    }

    /// Whether a COPY message holds a row, to be counted and rendered.
    pub fn carries_row(&self, message: &[u8]) -> bool {
        match self {
            RowRenderer::Csv(csv) => csv.carries_row(message),
            RowRenderer::Json(_) | RowRenderer::Ndjson(_) => true,
        }
    }

    pub fn row(&mut self, line: &[u8], out: &mut BytesMut) -> Result<(), RenderError> {
        match self {
            RowRenderer::Csv(csv) => csv.row(line),
            RowRenderer::Json(json) => {
                json.row(line, out);
                Ok(())
            }
            RowRenderer::Ndjson(form) => {
                ndjson::row(form, line, out);
                Ok(())
            }
        }
    }

    /// Moves what a batch of rows left buffered into `out`; called before each chunk is sent.
    pub fn flush(&mut self, out: &mut BytesMut) -> Result<(), RenderError> {
        match self {
            RowRenderer::Csv(csv) => csv.flush(out),
            RowRenderer::Json(_) | RowRenderer::Ndjson(_) => Ok(()),
        }
    }

    /// What comes after the last row.
    pub fn close(&mut self, out: &mut BytesMut) -> Result<(), RenderError> {
        match self {
            RowRenderer::Csv(csv) => csv.flush(out),
            RowRenderer::Json(json) => {
                json.close(out);
                Ok(())
            }
            RowRenderer::Ndjson(_) => Ok(()),
        }
    }
}

/// A report built from a few aggregates: a title, facts under it, and sections of rows.
/// Rendered whole (it is small: bounded by the report's own lists, not by any table's size).
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub title: String,
    pub facts: Vec<(String, String)>,
    pub sections: Vec<Section>,
    /// When it was made, as shown in the file.
    pub generated: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Section {
    pub heading: String,
    /// The header row; `None` for a list of label/value pairs (a summary).
    pub columns: Option<Vec<String>>,
    pub rows: Vec<Vec<String>>,
}

/// What an empty section says, in every format.
pub const NO_DATA: &str = "No Data";
