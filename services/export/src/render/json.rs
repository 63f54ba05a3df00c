//! JSON: one array of the objects PostgreSQL renders, one per line, optionally inside an
//! envelope that comes before the array (`{"metadata":{...},"data":[ ... ]}`).

use bytes::{BufMut, BytesMut};

use super::{LineForm, RenderError};

pub struct JsonArray {
    /// Everything up to and including the array's `[`.
    head: Vec<u8>,
    /// Everything after the array's `]`, before the final newline.
    tail: &'static [u8],
    rows: u64,
    form: LineForm,
}

impl JsonArray {
    /// A bare array: `[`, the objects (in `form`), `]`.
    pub fn bare(form: LineForm) -> Self {
        JsonArray {
            head: b"[".to_vec(),
            tail: b"",
            rows: 0,
            form,
        }
    }

    /// The array as the value of `data` after one other member:
    /// `{"<key>":<value>,"data":[ ... ]}`. The value keeps its fields' order.
    pub fn enveloped(key: &str, value: &impl serde::Serialize) -> Result<Self, RenderError> {
        let mut head = Vec::with_capacity(256);
        head.push(b'{');
        serde_json::to_writer(&mut head, key).map_err(|e| RenderError::new("JSON", e))?;
        head.push(b':');
        serde_json::to_writer(&mut head, value).map_err(|e| RenderError::new("JSON", e))?;
        head.extend_from_slice(b",\"data\":[");
        Ok(JsonArray {
            head,
            tail: b"}",
            rows: 0,
            form: LineForm::Verbatim,
        })
    }

    pub fn open(&mut self, out: &mut BytesMut) {
        out.put_slice(&self.head);
    }

    /// Each object arrives as one line; they are joined with commas.
    pub fn row(&mut self, line: &[u8], out: &mut BytesMut) {
        self.rows += 1;
        out.put_slice(if self.rows == 1 { b"\n" } else { b",\n" });
        self.form.write(line, out);
    }

    pub fn close(&mut self, out: &mut BytesMut) {
        out.put_slice(if self.rows == 0 { b"]" } else { b"\n]" });
        out.put_slice(self.tail);
        out.put_slice(b"\n");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn render(mut array: JsonArray, lines: &[&[u8]]) -> serde_json::Value {
        let mut out = BytesMut::new();
        array.open(&mut out);
        for line in lines {
            array.row(line, &mut out);
        }
        array.close(&mut out);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn a_bare_array_is_valid_with_and_without_rows() {
        assert_eq!(
            render(JsonArray::bare(LineForm::Verbatim), &[]),
            serde_json::json!([])
        );
        assert_eq!(
            render(
                JsonArray::bare(LineForm::Verbatim),
                &[b"{\"a\":1}\n", b"{\"a\":\"x,y\"}\n"]
            ),
            serde_json::json!([{"a": 1}, {"a": "x,y"}])
        );
    }

    #[test]
    fn an_envelope_puts_its_member_before_the_data() {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Meta {
            total_records: u64,
            scope: &'static str,
        }
        let meta = Meta {
            total_records: 2,
            scope: "all",
        };
        let mut out = BytesMut::new();
        let mut array = JsonArray::enveloped("metadata", &meta).unwrap();
        array.open(&mut out);
        assert_eq!(
            &out[..],
            b"{\"metadata\":{\"totalRecords\":2,\"scope\":\"all\"},\"data\":["
        );
        array.row(b"{\"n\":1}\n", &mut out);
        array.row(b"{\"n\":2}\n", &mut out);
        array.close(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"metadata": {"totalRecords": 2, "scope": "all"}, "data": [{"n": 1}, {"n": 2}]})
        );
        let empty = render(JsonArray::enveloped("metadata", &meta).unwrap(), &[]);
        assert_eq!(empty["data"], serde_json::json!([]));
    }
}
