//! PostgreSQL's binary COPY format, read one CopyData message at a time, and the text forms
//! of the values a catalogue export carries.
//!
//! Why: PostgreSQL spends much of a text COPY turning timestamps, numerics and UUIDs into
//! text on its one core per query. In binary it only copies bytes, and the export service
//! (a core of its own) writes the text here, in the forms the text path gave: numerics
//! exactly as `numeric_out`, timestamps in RFC 3339 UTC with PostgreSQL's trimmed fraction.
//!
//! PostgreSQL sends the file header in front of the first tuple's message and the trailer
//! (a field count of -1) in a message of its own.

use super::RenderError;

/// `PGCOPY\n\377\r\n\0`, then 32-bit flags and the header extension's length.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// Microseconds and days from the Unix epoch to PostgreSQL's, 2000-01-01.
const PG_EPOCH_DAYS: i64 = 10_957;
const USECS_PER_DAY: i64 = 86_400_000_000;

fn bad(message: impl ToString) -> RenderError {
    RenderError::new("binary COPY", message)
}

/// The message without the file header, if it starts with one.
fn without_header(message: &[u8]) -> Result<&[u8], RenderError> {
    let Some(rest) = message.strip_prefix(SIGNATURE) else {
        return Ok(message);
    };
    let ext = rest.get(4..8).ok_or_else(|| bad("truncated file header"))?;
    let ext = u32::from_be_bytes([ext[0], ext[1], ext[2], ext[3]]) as usize;
    rest.get(8 + ext..)
        .ok_or_else(|| bad("truncated header extension"))
}

/// Whether the message holds a tuple (and not only the header or the trailer).
pub fn carries_tuple(message: &[u8]) -> bool {
    match without_header(message) {
        Ok(rest) => rest.len() >= 2 && rest[..2] != [0xff, 0xff],
        Err(_) => true, // let the renderer report it
    }
}

/// The fields of one tuple: `None` for a NULL. `None` overall for the trailer.
pub fn fields(message: &[u8]) -> Result<Option<Fields<'_>>, RenderError> {
    let rest = without_header(message)?;
    let count = rest
        .get(..2)
        .ok_or_else(|| bad("message without a field count"))?;
    let count = i16::from_be_bytes([count[0], count[1]]);
    if count == -1 {
        return Ok(None);
    }
    Ok(Some(Fields {
        rest: &rest[2..],
        left: u16::try_from(count).map_err(|_| bad("negative field count"))?,
    }))
}

pub struct Fields<'a> {
    rest: &'a [u8],
    left: u16,
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Option<&'a [u8]>, RenderError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let Some((len, rest)) = self.rest.split_first_chunk::<4>() else {
            return Some(Err(bad("truncated field length")));
        };
        let len = i32::from_be_bytes(*len);
        if len < 0 {
            self.rest = rest;
            return Some(Ok(None));
        }
        let len = len as usize;
        let Some(value) = rest.get(..len) else {
            return Some(Err(bad("truncated field")));
        };
        self.rest = &rest[len..];
        Some(Ok(Some(value)))
    }
}

fn array<const N: usize>(value: &[u8], ty: &str) -> Result<[u8; N], RenderError> {
    value
        .try_into()
        .map_err(|_| bad(format!("{ty} of {} bytes", value.len())))
}

/// An `int8`.
pub fn int8(value: &[u8], out: &mut Vec<u8>) -> Result<(), RenderError> {
    let n = i64::from_be_bytes(array(value, "int8")?);
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    Ok(())
}

/// A `bool`, as `true` or `false`.
pub fn boolean(value: &[u8]) -> Result<&'static [u8], RenderError> {
    match value {
        [0] => Ok(b"false"),
        [1] => Ok(b"true"),
        _ => Err(bad("bool that is neither 0 nor 1")),
    }
}

/// A `numeric`, written as `numeric_out` writes it: every digit of the display scale, no
/// exponent, `NaN`, `Infinity` and `-Infinity` by name.
pub fn numeric(value: &[u8], out: &mut Vec<u8>) -> Result<(), RenderError> {
    let word = |i: usize| -> Result<i16, RenderError> {
        value
            .get(i * 2..i * 2 + 2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| bad("truncated numeric"))
    };
    let ndigits = usize::try_from(word(0)?).map_err(|_| bad("negative numeric length"))?;
    let weight = i32::from(word(1)?);
    let sign = word(2)? as u16;
    let dscale = usize::try_from(word(3)?).map_err(|_| bad("negative numeric scale"))?;
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => {
            out.extend_from_slice(b"NaN");
            return Ok(());
        }
        0xD000 => {
            out.extend_from_slice(b"Infinity");
            return Ok(());
        }
        0xF000 => {
            out.extend_from_slice(b"-Infinity");
            return Ok(());
        }
        other => return Err(bad(format!("numeric sign {other:#06x}"))),
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        let d = word(4 + i)?;
        if !(0..10_000).contains(&d) {
            return Err(bad("numeric digit out of range"));
        }
        digits.push(d as u16);
    }
    // The base-10000 digit at `10000^(weight - i)`, zero outside the stored ones.
    let digit = |i: i32| -> u16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    if sign == 0x4000 {
        out.push(b'-');
    }
    if weight < 0 {
        out.push(b'0');
    } else {
        let mut buf = itoa::Buffer::new();
        out.extend_from_slice(buf.format(digit(0)).as_bytes());
        for i in 1..=weight {
            push_4(out, digit(i));
        }
    }
    if dscale > 0 {
        out.push(b'.');
        let start = out.len();
        let mut i = weight + 1;
        while out.len() - start < dscale {
            push_4(out, digit(i));
            i += 1;
        }
        out.truncate(start + dscale);
    }
    Ok(())
}

fn push_4(out: &mut Vec<u8>, d: u16) {
    out.extend_from_slice(&[
        b'0' + (d / 1000) as u8,
        b'0' + (d / 100 % 10) as u8,
        b'0' + (d / 10 % 10) as u8,
        b'0' + (d % 10) as u8,
    ]);
}

fn push_2(out: &mut Vec<u8>, d: u32) {
    out.extend_from_slice(&[b'0' + (d / 10) as u8, b'0' + (d % 10) as u8]);
}

/// Year, month and day of a day count from 1970-01-01 (proleptic Gregorian; Howard
/// Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `YYYY-MM-DD`; years outside 0–9999 in ISO 8601's expanded form (`-0044`, `+10000`).
fn push_date(out: &mut Vec<u8>, days_from_unix: i64) {
    let (year, month, day) = civil(days_from_unix);
    if (0..=9999).contains(&year) {
        push_2(out, (year / 100) as u32);
        push_2(out, (year % 100) as u32);
    } else {
        out.extend_from_slice(format!("{year:+05}").as_bytes());
    }
    out.push(b'-');
    push_2(out, month);
    out.push(b'-');
    push_2(out, day);
}

/// A `date`, as `YYYY-MM-DD` (`infinity` and `-infinity` by name).
pub fn date(value: &[u8], out: &mut Vec<u8>) -> Result<(), RenderError> {
    match i32::from_be_bytes(array(value, "date")?) {
        i32::MAX => out.extend_from_slice(b"infinity"),
        i32::MIN => out.extend_from_slice(b"-infinity"),
        days => push_date(out, i64::from(days) + PG_EPOCH_DAYS),
    }
    Ok(())
}

/// A `timestamptz` as microseconds since the Unix epoch; `None` for ±infinity.
pub fn unix_micros(value: &[u8]) -> Result<Option<i64>, RenderError> {
    Ok(match i64::from_be_bytes(array(value, "timestamptz")?) {
        i64::MAX | i64::MIN => None,
        m => m.checked_add(PG_EPOCH_DAYS * USECS_PER_DAY),
    })
}

/// A `uuid`, hyphenated in lower case, written into `buf`.
pub fn uuid<'a>(value: &[u8], buf: &'a mut [u8; 36]) -> Result<&'a [u8], RenderError> {
    let id = uuid::Uuid::from_bytes(array(value, "uuid")?);
    Ok(id.hyphenated().encode_lower(buf).as_bytes())
}

/// A `timestamptz`, in RFC 3339 UTC: `2026-12-01T18:43:15.938201Z`, the fraction trimmed
/// of trailing zeros and left out when zero, as PostgreSQL writes it.
pub fn timestamptz(value: &[u8], out: &mut Vec<u8>) -> Result<(), RenderError> {
    let micros = match i64::from_be_bytes(array(value, "timestamptz")?) {
        i64::MAX => {
            out.extend_from_slice(b"infinity");
            return Ok(());
        }
        i64::MIN => {
            out.extend_from_slice(b"-infinity");
            return Ok(());
        }
        m => m,
    };
    let days = micros.div_euclid(USECS_PER_DAY);
    let of_day = micros.rem_euclid(USECS_PER_DAY);
    push_date(out, days + PG_EPOCH_DAYS);
    let secs = (of_day / 1_000_000) as u32;
    let mut frac = (of_day % 1_000_000) as u32;
    out.push(b'T');
    push_2(out, secs / 3600);
    out.push(b':');
    push_2(out, secs / 60 % 60);
    out.push(b':');
    push_2(out, secs % 60);
    if frac > 0 {
        let mut width = 6;
        while frac.is_multiple_of(10) {
            frac /= 10;
            width -= 1;
        }
        out.push(b'.');
        let digits = itoa::Buffer::new().format(frac).len();
        out.extend(std::iter::repeat_n(b'0', width - digits));
        out.extend_from_slice(itoa::Buffer::new().format(frac).as_bytes());
    }
    out.push(b'Z');
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn numeric_bytes(weight: i16, sign: u16, dscale: i16, digits: &[i16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(digits.len() as i16).to_be_bytes());
        v.extend_from_slice(&weight.to_be_bytes());
        v.extend_from_slice(&sign.to_be_bytes());
        v.extend_from_slice(&dscale.to_be_bytes());
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    fn num(weight: i16, sign: u16, dscale: i16, digits: &[i16]) -> String {
        let mut out = Vec::new();
        numeric(&numeric_bytes(weight, sign, dscale, digits), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn numerics_read_as_numeric_out_writes_them() {
        assert_eq!(num(0, 0, 0, &[]), "0");
        assert_eq!(num(0, 0, 2, &[]), "0.00");
        assert_eq!(num(0, 0, 2, &[12, 5000]), "12.50");
        assert_eq!(num(0, 0x4000, 2, &[12, 5000]), "-12.50");
        assert_eq!(num(1, 0, 0, &[1, 0]), "10000");
        assert_eq!(num(2, 0, 3, &[12, 3456, 7890, 1230]), "1234567890.123");
        assert_eq!(num(-1, 0, 4, &[5]), "0.0005");
        assert_eq!(num(-2, 0, 5, &[1000]), "0.00001");
        assert_eq!(num(0, 0, 1, &[7]), "7.0");
        assert_eq!(num(0, 0xC000, 0, &[]), "NaN");
        assert_eq!(num(0, 0xD000, 0, &[]), "Infinity");
        assert_eq!(num(0, 0xF000, 0, &[]), "-Infinity");
        assert!(numeric(&numeric_bytes(0, 0x1234, 0, &[]), &mut Vec::new()).is_err());
        assert!(numeric(&[0, 1], &mut Vec::new()).is_err());
    }

    fn ts(micros: i64) -> String {
        let mut out = Vec::new();
        timestamptz(&micros.to_be_bytes(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_a_trimmed_fraction() {
        let at = |s: &str| {
            let t = chrono::DateTime::parse_from_rfc3339(s).unwrap();
            (t.timestamp_micros()) - PG_EPOCH_DAYS * USECS_PER_DAY
        };
        for s in [
            "2026-12-01T18:43:15.938201Z",
            "2026-12-01T18:43:15.9382Z",
            "2026-12-01T18:43:15.000001Z",
            "2026-12-01T18:43:15Z",
            "2000-01-01T00:00:00Z",
            "1999-12-31T23:59:59.5Z",
            "2024-02-29T12:00:00Z",
            "1970-01-01T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999Z",
        ] {
            assert_eq!(ts(at(s)), s);
        }
        assert_eq!(ts(i64::MAX), "infinity");
        assert_eq!(ts(i64::MIN), "-infinity");
    }

    #[test]
    fn dates_and_the_rest() {
        let d = |days: i32| {
            let mut out = Vec::new();
            date(&days.to_be_bytes(), &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(d(0), "2000-01-01");
        assert_eq!(d(-1), "1999-12-31");
        assert_eq!(d(9830), "2026-11-30");
        assert_eq!(d(i32::MAX), "infinity");
        let mut out = Vec::new();
        int8(&(-42i64).to_be_bytes(), &mut out).unwrap();
        assert_eq!(out, b"-42");
        assert!(int8(&[1, 2], &mut out).is_err());
        assert_eq!(boolean(&[1]).unwrap(), b"true");
        assert!(boolean(&[2]).is_err());
    }

    #[test]
    fn tuples_headers_nulls_and_the_trailer() {
        let mut first = SIGNATURE.to_vec();
        first.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        first.extend_from_slice(&2i16.to_be_bytes());
        first.extend_from_slice(&(-1i32).to_be_bytes());
        first.extend_from_slice(&3i32.to_be_bytes());
        first.extend_from_slice(b"abc");
        assert!(carries_tuple(&first));
        let values: Vec<_> = fields(&first)
            .unwrap()
            .unwrap()
            .map(|f| f.unwrap())
            .collect();
        assert_eq!(values, [None, Some(&b"abc"[..])]);
        let trailer = (-1i16).to_be_bytes();
        assert!(!carries_tuple(&trailer));
        assert!(fields(&trailer).unwrap().is_none());
        let mut empty = SIGNATURE.to_vec();
        empty.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert!(!carries_tuple(&empty));
        let mut cut = 1i16.to_be_bytes().to_vec();
        cut.extend_from_slice(&9i32.to_be_bytes());
        assert!(fields(&cut).unwrap().unwrap().next().unwrap().is_err());
    }
}
