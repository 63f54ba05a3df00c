//! NDJSON: PostgreSQL renders each object on a line of its own, written in the export's
//! [`LineForm`], one per line.

use bytes::{BufMut, BytesMut};

use super::LineForm;

pub fn row(form: &LineForm, line: &[u8], out: &mut BytesMut) {
    form.write(line, out);
    out.put_u8(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_object_gets_a_line_of_its_own() {
        let mut out = BytesMut::new();
        row(&LineForm::Verbatim, b"{\"a\":1}\n", &mut out);
        row(&LineForm::Verbatim, b"{\"a\":\"x\\ny\"}\n", &mut out);
        assert_eq!(&out[..], b"{\"a\":1}\n{\"a\":\"x\\ny\"}\n");
    }
}
