//! NDJSON: PostgreSQL renders each object on a line of its own; the lines pass through.

use bytes::{BufMut, BytesMut};

pub fn row(line: &[u8], out: &mut BytesMut) {
    out.put_slice(line);
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_pass_through_unchanged() {
        let mut out = bytes::BytesMut::new();
        super::row(b"{\"a\":1}\n", &mut out);
        super::row(b"{\"a\":\"x\\ny\"}\n", &mut out);
        assert_eq!(&out[..], b"{\"a\":1}\n{\"a\":\"x\\ny\"}\n");
    }
}
