//! Text logs keep one event per line whatever the values in it say.
//!
//! The text formatter prints `%` fields as they are, and some values come from outside (a
//! decoded path segment, a token's subject, a provider's error text): a `\r\n` in one would
//! forge a log line, an ESC would drive the reader's terminal. This writer escapes every
//! control character but the newline that ends the event.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// Wraps a [`MakeWriter`] so each event's text is written with control characters escaped.
#[derive(Clone, Debug)]
pub struct OneLine<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for OneLine<M> {
    type Writer = OneLineWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        OneLineWriter(self.0.make_writer())
    }
}

/// The writer [`OneLine`] hands out. The formatter writes one event with one `write_all`, so
/// only a newline at the very end of a buffer is taken as the event's end.
#[derive(Debug)]
pub struct OneLineWriter<W>(W);

/// `buf` with control characters (and DEL) escaped, except a final `\n`.
fn escape_controls(buf: &[u8]) -> Vec<u8> {
    let (body, end) = match buf.split_last() {
        Some((b'\n', body)) => (body, &b"\n"[..]),
        _ => (buf, &b""[..]),
    };
    let mut out = Vec::with_capacity(buf.len() + 8);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.push(b'\t'),
            0..=0x1f | 0x7f => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.extend_from_slice(end);
    out
}

impl<W: Write> Write for OneLineWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(&escape_controls(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn controls_are_escaped_and_the_event_stays_one_line() {
        assert_eq!(
            escape_controls(b"a\r\nb\x1b[31m\x00\tc\n"),
            b"a\\r\\nb\\x1b[31m\\x00\tc\n"
        );
        assert_eq!(escape_controls(b"no end"), b"no end");
        assert_eq!(escape_controls("café\n".as_bytes()), "café\n".as_bytes());
    }

    #[test]
    fn a_forged_line_in_a_value_stays_inside_its_event() {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(OneLine(move || sink.clone()))
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let provider = "shopify\r\n2026-01-01T00:00:00Z  INFO forged: admin logged in";
            tracing::warn!(%provider, "OAuth callback failed");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("shopify\\r\\n2026"), "{text}");
    }
}
