//! One JSON object per line as PostgreSQL's `json_build_object` writes it
//! (`{"id" : "x", "at" : "2026-12-01T18:43:15.938201+00:00"}`), made compact and with its
//! timestamps in RFC 3339 UTC (`…Z`), the form CSV carries too. One pass over the bytes in
//! the export service: PostgreSQL keeps its own work to producing the rows.

use bytes::{BufMut, BytesMut};

/// How a row's JSON is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineForm {
    /// As PostgreSQL wrote it (the billing export, whose bytes seed 002 fixes).
    Verbatim,
    /// Without the spaces between tokens; the values of the members flagged `true` (the
    /// object's members in order) are timestamps, written with `Z` for `+00:00`.
    Compact { timestamps: Vec<bool> },
}

impl LineForm {
    /// Writes `line` (its `\n` dropped) to `out`.
    pub fn write(&self, line: &[u8], out: &mut BytesMut) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        match self {
            LineForm::Verbatim => out.put_slice(line),
            LineForm::Compact { timestamps } => compact(line, timestamps, out),
        }
    }
}

fn compact(line: &[u8], timestamps: &[bool], out: &mut BytesMut) {
    out.reserve(line.len());
    let (mut depth, mut member) = (0usize, 0usize);
    let (mut in_string, mut escaped, mut is_value) = (false, false, false);
    let mut value_string = false;
    for &b in line {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
                if value_string && timestamps.get(member).copied().unwrap_or(false) {
                    utc_suffix(out);
                }
            }
            out.put_u8(b);
            continue;
        }
        match b {
            // Outside strings, PostgreSQL's JSON has spaces only between tokens.
            b' ' | b'\t' | b'\n' | b'\r' => continue,
            b'"' => {
                in_string = true;
                value_string = depth == 1 && is_value;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b':' if depth == 1 => is_value = true,
            b',' if depth == 1 => {
                member += 1;
                is_value = false;
            }
            _ => {}
        }
        out.put_u8(b);
    }
}

/// A timestamp string just written (its closing quote not yet): `+00:00` becomes `Z`.
fn utc_suffix(out: &mut BytesMut) {
    if out.ends_with(b"+00:00") {
        out.truncate(out.len() - b"+00:00".len());
        out.put_u8(b'Z');
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn form(ts: &[bool]) -> LineForm {
        LineForm::Compact {
            timestamps: ts.to_vec(),
        }
    }

    fn write(form: &LineForm, line: &str) -> String {
        let mut out = BytesMut::new();
        form.write(line.as_bytes(), &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn spaces_go_and_timestamps_end_in_z() {
        let line = "{\"id\" : \"a b\", \"total\" : 12.50, \"at\" : \"2026-12-01T18:43:15.938201+00:00\", \"ok\" : true}\n";
        assert_eq!(
            write(&form(&[false, false, true, false]), line),
            r#"{"id":"a b","total":12.50,"at":"2026-12-01T18:43:15.938201Z","ok":true}"#
        );
        assert_eq!(write(&LineForm::Verbatim, line), line.trim_end());
    }

    #[test]
    fn text_that_looks_like_json_or_a_timestamp_is_left_alone() {
        // Quotes, escapes, colons, commas and a timestamp-shaped note in a text member.
        let line = r#"{"note" : "x\", \"y\" : {1, 2}: 2026-01-01T00:00:00+00:00", "at" : null, "n" : "+00:00"}"#;
        let got = write(&form(&[false, true, false]), line);
        assert_eq!(
            got,
            r#"{"note":"x\", \"y\" : {1, 2}: 2026-01-01T00:00:00+00:00","at":null,"n":"+00:00"}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&got).unwrap();
        assert_eq!(parsed["at"], serde_json::Value::Null);
    }

    #[test]
    fn nested_values_do_not_shift_the_members() {
        let line = r#"{"tags" : ["a", "b, c"], "at" : "2026-12-01T00:00:00+00:00"}"#;
        assert_eq!(
            write(&form(&[false, true]), line),
            r#"{"tags":["a","b, c"],"at":"2026-12-01T00:00:00Z"}"#
        );
    }
}
