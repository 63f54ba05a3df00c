//! Rows in PostgreSQL's binary `COPY` format, written straight into a reusable buffer.
//!
//! Binary input spares the server from parsing text (timestamps, uuids and numerics are
//! most of a text COPY's server-side cost), and the generator from formatting it.

use uuid::Uuid;

/// The binary COPY header: signature, flags, header-extension length.
pub(crate) const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The binary COPY trailer: a field count of -1.
pub(crate) const TRAILER: &[u8] = &[0xff, 0xff];

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// One chunk of rows being written.
pub(crate) struct Rows {
    pub(crate) buf: Vec<u8>,
}

impl Rows {
    /// Starts a row of `fields` columns.
    pub(crate) fn row(&mut self, fields: i16) {
        self.buf.extend_from_slice(&fields.to_be_bytes());
    }

    pub(crate) fn null(&mut self) {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
    }

    fn len(&mut self, n: usize) {
        // Every value written here is a few bytes long.
        let n = i32::try_from(n).unwrap_or(i32::MAX);
        self.buf.extend_from_slice(&n.to_be_bytes());
    }

    pub(crate) fn uuid(&mut self, id: Uuid) {
        self.len(16);
        self.buf.extend_from_slice(id.as_bytes());
    }

    pub(crate) fn text(&mut self, s: &str) {
        self.len(s.len());
        self.buf.extend_from_slice(s.as_bytes());
    }

    /// A text value assembled in place (no intermediate `String`).
    pub(crate) fn text_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        write(&mut self.buf);
        let n = i32::try_from(self.buf.len() - at - 4).unwrap_or(i32::MAX);
        self.buf[at..at + 4].copy_from_slice(&n.to_be_bytes());
    }

    pub(crate) fn bool(&mut self, b: bool) {
        self.len(1);
        self.buf.push(u8::from(b));
    }

    pub(crate) fn int4(&mut self, v: i32) {
        self.len(4);
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn int8(&mut self, v: i64) {
        self.len(8);
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// A `timestamptz`, given in microseconds since the Unix epoch.
    pub(crate) fn timestamptz(&mut self, unix_us: i64) {
        self.int8(unix_us - PG_EPOCH_US);
    }

    /// A `numeric` with two decimals, given in hundredths: base-10000 digits, most
    /// significant first, with leading and trailing zero digits left out as PostgreSQL does.
    pub(crate) fn cents(&mut self, cents: i64) {
        let negative = cents < 0;
        let v = cents.unsigned_abs();
        let mut int = v / 100;
        let mut groups = [0u16; 5];
        let mut n = 0;
        while int > 0 {
            groups[n] = (int % 10_000) as u16;
            int /= 10_000;
            n += 1;
        }
        let weight = n as i16 - 1;
        let mut digits = [0u16; 6];
        for (d, g) in digits.iter_mut().zip(groups[..n].iter().rev()) {
            *d = *g;
        }
        digits[n] = (v % 100) as u16 * 100;
        let mut len = n + 1;
        while len > 0 && digits[len - 1] == 0 {
            len -= 1;
        }
        let sign: u16 = if negative && len > 0 { 0x4000 } else { 0 };
        let weight = if len == 0 { 0 } else { weight };
        self.len(8 + 2 * len);
        self.buf.extend_from_slice(&(len as i16).to_be_bytes());
        self.buf.extend_from_slice(&weight.to_be_bytes());
        self.buf.extend_from_slice(&sign.to_be_bytes());
        self.buf.extend_from_slice(&2i16.to_be_bytes());
        for d in &digits[..len] {
            self.buf.extend_from_slice(&d.to_be_bytes());
        }
    }
}

/// Appends `v` in decimal.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(c: i64) -> Vec<u8> {
        let mut r = Rows { buf: Vec::new() };
        r.cents(c);
        r.buf
    }

    #[test]
    fn numerics_are_canonical_base_10000() {
        // 0.00: no digits.
        assert_eq!(numeric(0), [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 2]);
        // 123.45 = 123 | 4500, weight 0.
        assert_eq!(
            numeric(12_345),
            [0, 0, 0, 12, 0, 2, 0, 0, 0, 0, 0, 2, 0, 123, 0x11, 0x94]
        );
        // 0.05 = 500 at weight -1.
        assert_eq!(
            numeric(5),
            [0, 0, 0, 10, 0, 1, 0xff, 0xff, 0, 0, 0, 2, 0x01, 0xf4]
        );
        // 10000.00 = 1 at weight 1, trailing zero digits dropped; negative.
        assert_eq!(
            numeric(-1_000_000),
            [0, 0, 0, 10, 0, 1, 0, 1, 0x40, 0, 0, 2, 0, 1]
        );
    }

    #[test]
    fn decimals() {
        let mut out = Vec::new();
        push_u64(&mut out, 0);
        out.push(b' ');
        push_u64(&mut out, 5_000_000_123);
        assert_eq!(out, b"0 5000000123");
    }
}
