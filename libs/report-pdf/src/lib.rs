//! Print-ready PDF reports laid out by Typst, used as a library: a title, a few facts, and
//! sections of tables whose coloured header rows repeat on every page a table continues
//! onto, with "Page X of Y" and the generation time on every page.
//!
//! A crate of its own because Typst is heavy: only the crates that make PDFs build it.
//!
//! The report reaches the template (`src/report.typ`) as JSON through a file of an
//! in-memory world, never as markup, so a brand or agent name (`#`, `$`, `*`, `]`, `=cmd`)
//! is only ever text. The fonts are DejaVu Sans, embedded in this crate (licence in
//! `fonts/`): no system font lookup, no network, the same output on every machine.

use std::sync::LazyLock;

use serde::Serialize;
use typst::diag::{FileError, FileResult, SourceDiagnostic};
use typst::foundations::{Bytes, Datetime};
use typst::layout::PagedDocument;
use typst::syntax::{FileId, Source, VirtualPath};
use typst::text::{Font, FontBook};
use typst::utils::LazyHash;
use typst::{Library, LibraryExt, World};

/// A report: a title, a few label/value lines under it, then sections of one table each.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub title: String,
    /// Lines under the title, e.g. ("Brand Name", "Acme").
    pub facts: Vec<(String, String)>,
    pub sections: Vec<Section>,
    /// Printed in every page's footer, e.g. "Generated 2026-12-05 22:59 UTC".
    pub generated: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub heading: String,
    /// The header row.
    pub columns: Vec<String>,
    /// Body cells, already formatted as text, as many in each row as there are columns.
    pub rows: Vec<Vec<String>>,
    /// What the section says instead of a table when it has no rows, e.g. "No Data".
    pub empty: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    #[error(
        "section {section:?}, row {row}: {cells} cells for {columns} columns; \
         give every row one cell per column"
    )]
    RowShape {
        section: String,
        row: usize,
        cells: usize,
        columns: usize,
    },
    #[error("cannot encode the report's data: {0}")]
    Data(#[from] serde_json::Error),
    #[error("cannot lay out the report: {0}")]
    Layout(String),
    #[error("cannot write the PDF: {0}")]
    Write(String),
}

const TEMPLATE: &str = include_str!("report.typ");

/// Memoized results kept across renders: the template and fonts are reused, each report's
/// data is not, so older entries are dropped after every render to keep memory flat.
const CACHE_MAX_AGE: usize = 2;

static FONTS: LazyLock<Vec<Font>> = LazyLock::new(|| {
    [
        &include_bytes!("../fonts/DejaVuSans.ttf")[..],
        &include_bytes!("../fonts/DejaVuSans-Bold.ttf")[..],
    ]
    .into_iter()
    .flat_map(|data| Font::iter(Bytes::new(data)))
    .collect()
});

static BOOK: LazyLock<LazyHash<FontBook>> =
    LazyLock::new(|| LazyHash::new(FontBook::from_fonts(FONTS.iter())));

static LIBRARY: LazyLock<LazyHash<Library>> = LazyLock::new(|| LazyHash::new(Library::default()));

static MAIN: LazyLock<FileId> =
    LazyLock::new(|| FileId::new(None, VirtualPath::new("/report.typ")));

static DATA: LazyLock<FileId> = LazyLock::new(|| FileId::new(None, VirtualPath::new("/data.json")));

/// One compilation: the template as the main file and the report as `/data.json`; there
/// is no other file, so the template can read nothing else.
struct ReportWorld {
    main: Source,
    data: Bytes,
}

impl World for ReportWorld {
    fn library(&self) -> &LazyHash<Library> {
        &LIBRARY
    }

    fn book(&self) -> &LazyHash<FontBook> {
        &BOOK
    }

    fn main(&self) -> FileId {
        *MAIN
    }

    fn source(&self, id: FileId) -> FileResult<Source> {
        if id == *MAIN {
            Ok(self.main.clone())
        } else {
            Err(not_found(id))
        }
    }

    fn file(&self, id: FileId) -> FileResult<Bytes> {
        if id == *DATA {
            Ok(self.data.clone())
        } else {
            Err(not_found(id))
        }
    }

    fn font(&self, index: usize) -> Option<Font> {
        FONTS.get(index).cloned()
    }

    /// None: the output depends only on the report; its time comes in `generated`.
    fn today(&self, _offset: Option<i64>) -> Option<Datetime> {
        None
    }
}

fn not_found(id: FileId) -> FileError {
    FileError::NotFound(id.vpath().as_rootless_path().into())
}

fn messages(diagnostics: &[SourceDiagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| {
            let mut message = d.message.to_string();
            for hint in &d.hints {
                message.push_str(" (hint: ");
                message.push_str(hint);
                message.push(')');
            }
            message
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A row with too few or too many cells would shift every cell after it into the wrong
/// column, so it is refused rather than drawn.
fn check_shape(report: &Report) -> Result<(), PdfError> {
    for section in &report.sections {
        if let Some((row, cells)) = section
            .rows
            .iter()
            .map(Vec::len)
            .enumerate()
            .find(|&(_, cells)| cells != section.columns.len() || cells == 0)
        {
            return Err(PdfError::RowShape {
                section: section.heading.clone(),
                row,
                cells,
                columns: section.columns.len(),
            });
        }
    }
    Ok(())
}

/// Lays out `report` and writes it as PDF bytes.
///
/// Typst's warnings (a glyph that DejaVu Sans lacks, drawn as a box) are not errors: the
/// report is still whole and readable.
pub fn render(report: &Report) -> Result<Vec<u8>, PdfError> {
    check_shape(report)?;
    let world = ReportWorld {
        main: Source::new(*MAIN, TEMPLATE.to_owned()),
        data: Bytes::new(serde_json::to_vec(report)?),
    };
    let document = typst::compile::<PagedDocument>(&world).output;
    let pdf = document
        .map_err(|e| PdfError::Layout(messages(&e)))
        .and_then(|document| {
            typst_pdf::pdf(&document, &typst_pdf::PdfOptions::default())
                .map_err(|e| PdfError::Write(messages(&e)))
        });
    typst::comemo::evict(CACHE_MAX_AGE);
    pdf
}
