//! CSV (RFC 4180) through the csv crate, from rows in PostgreSQL's COPY text format: cells
//! neutralised against spreadsheet formulas (OWASP), booleans as `true`/`false`, `\n` line
//! ends, an optional UTF-8 byte order mark.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::{BufMut, BytesMut};

use super::{RenderError, pg_binary};

/// How the CSV writer treats a column's cells, decided once per export so that PostgreSQL
/// runs no per-row CASE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CsvCell {
    /// Written as it comes.
    Plain,
    /// Free text: a leading `= + - @`, tab or CR gets a `'` unless the cell is a plain number.
    Text,
    /// `t`/`f` from the text format.
    Bool,
    /// A `timestamptz` in the text format of a UTC session (`2026-12-01 18:43:15.938201+00`),
    /// written in RFC 3339 UTC (`2026-12-01T18:43:15.938201Z`), as JSON carries it.
    Timestamp,
    /// An `int8`, a `numeric` and a `date`: as they come in the text format, formatted here
    /// from the binary one.
    Int,
    Decimal,
    Date,
    /// A `uuid`: hex digits and dashes after a hex digit, nothing to neutralise.
    Uuid,
}

/// The COPY format the rows arrive in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyInput {
    /// Tab-separated text lines.
    Text,
    /// PostgreSQL's binary format, each column of the type its [`CsvCell`] names (`text`
    /// for `Plain` and `Text`, `uuid` for `Uuid`).
    Binary,
}

/// The CSV renderer of a row export.
pub struct CsvRows {
    writer: ::csv::Writer<Sink>,
    sink: Sink,
    header: Vec<String>,
    cells: Vec<CsvCell>,
    input: CopyInput,
    bom: bool,
    scratch: Vec<u8>,
    stamp: Vec<u8>,
}

impl CsvRows {
    pub fn new(header: Vec<String>, cells: Vec<CsvCell>, input: CopyInput, bom: bool) -> Self {
        let (writer, sink) = writer();
        CsvRows {
            writer,
            sink,
            header,
            cells,
            input,
            bom,
            scratch: Vec::new(),
            stamp: Vec::new(),
        }
    }

    /// Whether a COPY message holds a row (a binary COPY ends with a trailer that does not).
    pub fn carries_row(&self, message: &[u8]) -> bool {
        match self.input {
            CopyInput::Text => true,
            CopyInput::Binary => pg_binary::carries_tuple(message),
        }
    }

    pub fn open(&mut self, out: &mut BytesMut) -> Result<(), RenderError> {
        if self.bom {
            out.put_slice("\u{feff}".as_bytes());
        }
        self.writer
            .write_record(&self.header)
            .map_err(|e| RenderError::new("CSV", e))?;
        self.flush(out)
    }

    pub fn row(&mut self, line: &[u8]) -> Result<(), RenderError> {
        match self.input {
            CopyInput::Text => {
                let buffers = (&mut self.scratch, &mut self.stamp);
                text_row_to_csv(&mut self.writer, line, &self.cells, buffers)
                    .map_err(|e| RenderError::new("CSV", e))
            }
            CopyInput::Binary => {
                binary_row_to_csv(&mut self.writer, line, &self.cells, &mut self.scratch)
            }
        }
    }

    pub fn flush(&mut self, out: &mut BytesMut) -> Result<(), RenderError> {
        self.writer
            .flush()
            .map_err(|e| RenderError::new("CSV", e))?;
        self.sink.take_into(out);
        Ok(())
    }
}

/// A csv writer with this project's settings, and where its output lands.
pub fn writer() -> (::csv::Writer<Sink>, Sink) {
    let sink = Sink::default();
    let writer = ::csv::WriterBuilder::new()
        .terminator(::csv::Terminator::Any(b'\n'))
        .flexible(true)
        .buffer_capacity(64 * 1024)
        .from_writer(sink.clone());
    (writer, sink)
}

/// Where the csv crate's writer puts its output, shared so the engine can take each batch's
/// bytes while the writer lives on for the whole export.
#[derive(Clone, Default)]
pub struct Sink(Arc<Mutex<Vec<u8>>>);

impl Sink {
    /// Moves what was written so far to the end of `out`.
    pub fn take_into(&self, out: &mut BytesMut) {
        let mut buf = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        out.put_slice(&buf);
        buf.clear();
    }
}

impl std::io::Write for Sink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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
    writer: &mut ::csv::Writer<Sink>,
    line: &[u8],
    cells: &[CsvCell],
    (scratch, stamp): (&mut Vec<u8>, &mut Vec<u8>),
) -> ::csv::Result<()> {
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
            CsvCell::Text => write_text(writer, value)?,
            CsvCell::Timestamp => writer.write_field(rfc3339_utc(value, stamp))?,
            CsvCell::Plain | CsvCell::Int | CsvCell::Decimal | CsvCell::Date | CsvCell::Uuid => {
                writer.write_field(value)?
            }
        }
    }
    writer.write_record(std::iter::empty::<&[u8]>())
}

/// Writes one tuple of a binary COPY as one CSV record, each value formatted as its
/// [`CsvCell`] says. A message with no tuple (the trailer) writes nothing.
fn binary_row_to_csv(
    writer: &mut ::csv::Writer<Sink>,
    message: &[u8],
    cells: &[CsvCell],
    text: &mut Vec<u8>,
) -> Result<(), RenderError> {
    let Some(fields) = pg_binary::fields(message)? else {
        return Ok(());
    };
    let csv = |e: ::csv::Error| RenderError::new("CSV", e);
    for (i, field) in fields.enumerate() {
        let Some(value) = field? else {
            writer.write_field(b"").map_err(csv)?;
            continue;
        };
        let cell = cells.get(i).copied().unwrap_or(CsvCell::Plain);
        text.clear();
        match cell {
            CsvCell::Plain => writer.write_field(value),
            CsvCell::Text => write_text(writer, value),
            CsvCell::Bool => writer.write_field(pg_binary::boolean(value)?),
            CsvCell::Timestamp => {
                pg_binary::timestamptz(value, text)?;
                writer.write_field(&text[..])
            }
            CsvCell::Int => {
                pg_binary::int8(value, text)?;
                writer.write_field(&text[..])
            }
            CsvCell::Decimal => {
                pg_binary::numeric(value, text)?;
                writer.write_field(&text[..])
            }
            CsvCell::Date => {
                pg_binary::date(value, text)?;
                writer.write_field(&text[..])
            }
            CsvCell::Uuid => writer.write_field(pg_binary::uuid(value, &mut [0; 36])?),
        }
        .map_err(csv)?;
    }
    writer
        .write_record(std::iter::empty::<&[u8]>())
        .map_err(csv)
}

/// `2026-12-01 18:43:15.938201+00` as `2026-12-01T18:43:15.938201Z`; an offset other than
/// UTC's gets RFC 3339's `+HH:MM`, and anything else (`infinity`) is left as it is.
fn rfc3339_utc<'a>(value: &'a [u8], out: &'a mut Vec<u8>) -> &'a [u8] {
    if value.len() < 22 || value[10] != b' ' {
        return value;
    }
    out.clear();
    out.extend_from_slice(value);
    out[10] = b'T';
    if out.ends_with(b"+00") {
        out.truncate(out.len() - 3);
        out.push(b'Z');
    } else if matches!(out[out.len() - 3], b'+' | b'-') {
        out.extend_from_slice(b":00");
    }
    out
}

/// Writes a free-text cell, neutralised when a spreadsheet would take it for a formula.
pub fn write_text<W: std::io::Write>(
    writer: &mut ::csv::Writer<W>,
    value: &[u8],
) -> ::csv::Result<()> {
    if needs_neutralising(value) {
        let mut prefixed = Vec::with_capacity(value.len() + 1);
        prefixed.push(b'\'');
        prefixed.extend_from_slice(value);
        writer.write_field(&prefixed)
    } else {
        writer.write_field(value)
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn render(cells: &[CsvCell], bom: bool, lines: &[&[u8]]) -> String {
        let header = (0..cells.len()).map(|i| format!("c{i}")).collect();
        let mut csv = CsvRows::new(header, cells.to_vec(), CopyInput::Text, bom);
        let mut out = BytesMut::new();
        csv.open(&mut out).unwrap();
        for line in lines {
            csv.row(line).unwrap();
        }
        csv.flush(&mut out).unwrap();
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn text_format_rows_become_rfc4180_records() {
        // null, escaped tab/newline/CR/backslash, quotes and commas, emoji.
        let got = render(
            &[CsvCell::Plain, CsvCell::Plain, CsvCell::Text],
            false,
            &[
                b"1\t\\N\tplain\n",
                b"2\ta\\tb\\nc\\rd\\\\e\tsay \"hi\", ok \xf0\x9f\x98\x80\n",
            ],
        );
        assert_eq!(
            got,
            "c0,c1,c2\n1,,plain\n2,\"a\tb\nc\rd\\e\",\"say \"\"hi\"\", ok \u{1F600}\"\n"
        );
        let mut reader = ::csv::ReaderBuilder::new().from_reader(got.as_bytes());
        let rows: Vec<::csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
        assert_eq!(&rows[1][1], "a\tb\nc\rd\\e");
        assert_eq!(&rows[1][2], "say \"hi\", ok \u{1F600}");
        assert_eq!(&rows[0][1], "");
    }

    #[test]
    fn timestamps_are_written_in_rfc3339_utc() {
        let got = render(
            &[CsvCell::Timestamp; 5],
            false,
            &[b"2026-12-01 18:43:15.938201+00	2026-12-01 00:00:00+00	2026-12-01 18:43:15.5+05:30	2026-12-01 18:43:15-08	infinity
"],
        );
        assert_eq!(
            got,
            "c0,c1,c2,c3,c4\n2026-12-01T18:43:15.938201Z,2026-12-01T00:00:00Z,2026-12-01T18:43:15.5+05:30,2026-12-01T18:43:15-08:00,infinity\n"
        );
        for cell in got.lines().nth(1).unwrap().split(',').take(4) {
            assert!(chrono::DateTime::parse_from_rfc3339(cell).is_ok(), "{cell}");
        }
    }

    #[test]
    fn a_bom_comes_first_when_asked() {
        assert_eq!(render(&[CsvCell::Plain], true, &[]), "\u{feff}c0\n");
        assert_eq!(render(&[CsvCell::Plain], false, &[]), "c0\n");
    }

    #[test]
    fn formulas_are_neutralised_and_numbers_and_booleans_kept() {
        let cells = [
            CsvCell::Text,
            CsvCell::Text,
            CsvCell::Text,
            CsvCell::Plain,
            CsvCell::Bool,
            CsvCell::Bool,
        ];
        let got = render(
            &cells,
            false,
            &[
                b"=SUM(A1)\t-42.5\t\\tcmd\t-7\tt\tf\n",
                b"@x\t+1\t-\t=1\t\\N\tt\n",
            ],
        );
        assert_eq!(
            got.split_once('\n').unwrap().1,
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
