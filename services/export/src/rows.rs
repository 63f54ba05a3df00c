//! StreamRows batches written as protobuf bytes straight from the binary COPY's tuples.
//!
//! Building a `RowBatch` of `Row`s of `Value`s cost a `String` or two per cell, and prost
//! then walked every value three times for lengths (batch, row, value) before writing it:
//! together the larger part of the service's time in a StreamRows export. Here each cell is
//! written once, into the batch's own buffer, and the batch goes to tonic already encoded
//! ([`RowsFrame::Encoded`]). Clients see the same bytes prost would have written.

use bytes::{BufMut, Bytes};
use haven_proto::export::v1 as pb;
use prost::encoding::{DecodeContext, WireType, encode_varint, encoded_len_varint};
use tonic::Status;

use crate::catalog::{Field, Kind};
use crate::render::{RenderError, pg_binary as bin};
use crate::sql;

/// One message of the StreamRows stream as it goes on the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum RowsFrame {
    /// The header or the trailer, encoded by prost.
    Message(pb::StreamRowsResponse),
    /// A `StreamRowsResponse` holding one batch, already encoded by [`BatchWriter`].
    Encoded(Bytes),
}

impl Default for RowsFrame {
    fn default() -> Self {
        RowsFrame::Message(pb::StreamRowsResponse::default())
    }
}

impl RowsFrame {
    /// The frame as the generated message type, decoding an encoded batch.
    pub fn into_message(self) -> Result<pb::StreamRowsResponse, Status> {
        match self {
            RowsFrame::Message(m) => Ok(m),
            RowsFrame::Encoded(bytes) => <pb::StreamRowsResponse as prost::Message>::decode(bytes)
                .map_err(|e| {
                    Status::internal(format!("an encoded row batch does not decode: {e}"))
                }),
        }
    }
}

/// Encoding writes the frame's bytes as they are; tonic frames and compresses them as any
/// message. Decoding (only tests decode what the server sends) reads a plain message.
impl prost::Message for RowsFrame {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match self {
            RowsFrame::Message(m) => m.encode_raw(buf),
            RowsFrame::Encoded(bytes) => buf.put_slice(bytes),
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl bytes::Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        let mut message = match std::mem::take(self) {
            RowsFrame::Message(m) => m,
            RowsFrame::Encoded(bytes) => pb::StreamRowsResponse::decode(bytes)?,
        };
        let merged = message.merge_field(tag, wire_type, buf, ctx);
        *self = RowsFrame::Message(message);
        merged
    }

    fn encoded_len(&self) -> usize {
        match self {
            RowsFrame::Message(m) => m.encoded_len(),
            RowsFrame::Encoded(bytes) => bytes.len(),
        }
    }

    fn clear(&mut self) {
        *self = RowsFrame::default();
    }
}

/// Field 2 (`batch`) of `StreamRowsResponse`, and field 1 of `RowBatch` (`rows`), of `Row`
/// (`values`): length-delimited.
const RESPONSE_BATCH: u8 = 2 << 3 | 2;
const REPEATED_1: u8 = 1 << 3 | 2;
/// The cases of `Value.kind`.
const NULL_VALUE: u8 = 1 << 3;
const STRING_VALUE: u8 = 2 << 3 | 2;
const INT64_VALUE: u8 = 3 << 3;
const DECIMAL_VALUE: u8 = 4 << 3 | 2;
const BOOL_VALUE: u8 = 5 << 3;
const TIMESTAMP_VALUE: u8 = 6 << 3 | 2;
const DATE_VALUE: u8 = 7 << 3 | 2;
/// `google.protobuf.Timestamp`'s fields.
const SECONDS: u8 = 1 << 3;
const NANOS: u8 = 2 << 3;

/// Room before a batch's rows for its tag and length (a varint of at most 5 bytes for a
/// length under 4 GiB), so the finished frame is the buffer's tail, uncopied.
const HEAD: usize = 6;

/// One `StreamRowsResponse { batch }`, written row by row.
pub struct BatchWriter {
    buf: Vec<u8>,
}

impl BatchWriter {
    pub fn with_capacity(capacity: usize) -> BatchWriter {
        let mut buf = Vec::with_capacity(HEAD + capacity);
        buf.resize(HEAD, 0);
        BatchWriter { buf }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.len() == HEAD
    }

    /// Bytes of rows written so far.
    pub fn len(&self) -> usize {
        self.buf.len() - HEAD
    }

    /// Appends one tuple of the binary COPY as a `Row` of `fields`' values.
    pub fn row(&mut self, fields: &[&Field], tuple: &[u8]) -> Result<(), RenderError> {
        nested(&mut self.buf, REPEATED_1, |out| {
            write_values(fields, tuple, out)
        })
    }

    /// The encoded `StreamRowsResponse`.
    pub fn finish(self) -> Bytes {
        let mut buf = self.buf;
        let len = (buf.len() - HEAD) as u64;
        let start = HEAD - 1 - encoded_len_varint(len);
        buf[start] = RESPONSE_BATCH;
        encode_varint(len, &mut &mut buf[start + 1..HEAD]);
        Bytes::from(buf).slice(start..)
    }
}

/// The values of one tuple, each a `Value` (field 1 of `Row`).
fn write_values(fields: &[&Field], tuple: &[u8], out: &mut Vec<u8>) -> Result<(), RenderError> {
    let Some(values) = bin::fields(tuple)? else {
        return Ok(());
    };
    for (field, value) in fields.iter().zip(values) {
        let Some(value) = value? else {
            out.extend_from_slice(&[REPEATED_1, 2, NULL_VALUE, 0]);
            continue;
        };
        match field.kind {
            Kind::Text if sql::is_uuid(field) => {
                let mut text = [0; 36];
                string(out, STRING_VALUE, bin::uuid(value, &mut text)?);
            }
            Kind::Text => {
                std::str::from_utf8(value).map_err(|_| bad("text that is not UTF-8"))?;
                string(out, STRING_VALUE, value);
            }
            Kind::Int => {
                let n = i64::from_be_bytes(
                    value
                        .try_into()
                        .map_err(|_| bad("int8 of the wrong size"))?,
                ) as u64;
                out.push(REPEATED_1);
                encode_varint(1 + encoded_len_varint(n) as u64, out);
                out.push(INT64_VALUE);
                encode_varint(n, out);
            }
            Kind::Decimal => nested(out, REPEATED_1, |out| {
                nested(out, DECIMAL_VALUE, |out| bin::numeric(value, out))
            })?,
            Kind::Bool => {
                let b = bin::boolean(value)? == b"true";
                out.extend_from_slice(&[REPEATED_1, 2, BOOL_VALUE, u8::from(b)]);
            }
            Kind::Timestamp => {
                let micros = bin::unix_micros(value)?
                    .ok_or_else(|| bad("an infinite timestamp has no instant"))?;
                let seconds = micros.div_euclid(1_000_000);
                let nanos = micros.rem_euclid(1_000_000) * 1000;
                // Zero is proto3's default, which prost leaves out.
                let field_len = |tag_and_value: i64| {
                    if tag_and_value == 0 {
                        0
                    } else {
                        1 + encoded_len_varint(tag_and_value as u64)
                    }
                };
                let ts_len = field_len(seconds) + field_len(nanos);
                out.push(REPEATED_1);
                encode_varint((1 + encoded_len_varint(ts_len as u64) + ts_len) as u64, out);
                out.push(TIMESTAMP_VALUE);
                encode_varint(ts_len as u64, out);
                if seconds != 0 {
                    out.push(SECONDS);
                    encode_varint(seconds as u64, out);
                }
                if nanos != 0 {
                    out.push(NANOS);
                    encode_varint(nanos as u64, out);
                }
            }
            Kind::Date => nested(out, REPEATED_1, |out| {
                nested(out, DATE_VALUE, |out| bin::date(value, out))
            })?,
        }
    }
    Ok(())
}

/// A `Value` holding one string case of known bytes.
fn string(out: &mut Vec<u8>, tag: u8, text: &[u8]) {
    let len = text.len() as u64;
    out.push(REPEATED_1);
    encode_varint(1 + encoded_len_varint(len) as u64 + len, out);
    out.push(tag);
    encode_varint(len, out);
    out.extend_from_slice(text);
}

/// A length-delimited field whose length is known only once `write` has written it: one
/// byte is kept for the length, and the content moved along in the rare case it needs more.
fn nested<E>(
    out: &mut Vec<u8>,
    tag: u8,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(), E> {
    out.push(tag);
    let at = out.len();
    out.push(0);
    write(out)?;
    let len = out.len() - at - 1;
    if len < 0x80 {
        out[at] = len as u8;
    } else {
        let mut varint = [0u8; 10];
        let n = encoded_len_varint(len as u64);
        encode_varint(len as u64, &mut &mut varint[..]);
        out.splice(at..at + 1, varint[..n].iter().copied());
    }
    Ok(())
}

fn bad(what: &str) -> RenderError {
    RenderError::new("rows", what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// A binary COPY tuple (without the file header) of `values`.
    fn tuple(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut t = (values.len() as i16).to_be_bytes().to_vec();
        for v in values {
            match v {
                None => t.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    t.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    t.extend_from_slice(v);
                }
            }
        }
        t
    }

    #[test]
    fn encoded_frames_decode_as_the_generated_messages() {
        let frame = RowsFrame::Message(pb::StreamRowsResponse {
            part: Some(pb::stream_rows_response::Part::Trailer(pb::RowsTrailer {
                record_count: 3,
                truncated: true,
            })),
        });
        let bytes = frame.encode_to_vec();
        assert_eq!(RowsFrame::decode(bytes.as_slice()).unwrap(), frame);
        let batch = pb::StreamRowsResponse {
            part: Some(pb::stream_rows_response::Part::Batch(pb::RowBatch {
                rows: vec![pb::Row { values: vec![] }],
            })),
        };
        let encoded = RowsFrame::Encoded(batch.encode_to_vec().into());
        assert_eq!(encoded.encoded_len(), batch.encoded_len());
        assert_eq!(encoded.clone().into_message().unwrap(), batch);
        assert_eq!(
            RowsFrame::decode(encoded.encode_to_vec().as_slice()).unwrap(),
            RowsFrame::Message(batch)
        );
    }

    #[test]
    fn nested_lengths_of_every_size_match_prost() {
        for len in [0usize, 1, 127, 128, 300, 16_383, 16_384, 70_000] {
            let mut out = vec![7];
            nested::<()>(&mut out, STRING_VALUE, |out| {
                out.extend(std::iter::repeat_n(b'x', len));
                Ok(())
            })
            .unwrap();
            let value = pb::Value {
                kind: Some(pb::value::Kind::StringValue("x".repeat(len))),
            };
            assert_eq!(out[1..], value.encode_to_vec()[..], "length {len}");
        }
    }

    #[test]
    fn a_batch_is_the_bytes_prost_writes() {
        let fields = crate::catalog::TYPES
            .iter()
            .find(|t| t.key == "orders")
            .expect("the orders type")
            .fields
            .iter()
            .collect::<Vec<_>>();
        let kinds: Vec<Kind> = fields.iter().map(|f| f.kind).collect();
        // Every kind the orders type has, with a value and as NULL.
        let value = |f: &Field, i: usize| -> Option<Vec<u8>> {
            if i % 3 == 2 {
                return None;
            }
            Some(match f.kind {
                Kind::Text if sql::is_uuid(f) => uuid::Uuid::from_u128(i as u128 * 7919 + 1)
                    .as_bytes()
                    .to_vec(),
                Kind::Text => format!("text ✓ {i}").repeat(i * 20).into_bytes(),
                Kind::Int => (i as i64 * 1_000_003 - 4).to_be_bytes().to_vec(),
                Kind::Bool => vec![u8::from(i.is_multiple_of(2))],
                Kind::Timestamp => {
                    // 0 (the epoch in PostgreSQL's micros from 2000), negative, fractional.
                    [0i64, -946_684_800_000_000, 817_000_123_456][i % 3]
                        .to_be_bytes()
                        .to_vec()
                }
                Kind::Date => (i as i32 * 400 - 9000).to_be_bytes().to_vec(),
                Kind::Decimal => {
                    // numeric 12.50: 2 digits, weight 0, positive, scale 2.
                    let mut n = Vec::new();
                    for part in [2i16, 0, 0, 2, 12, 5000] {
                        n.extend_from_slice(&part.to_be_bytes());
                    }
                    n
                }
            })
        };
        assert!(kinds.contains(&Kind::Timestamp) && kinds.contains(&Kind::Decimal));
        let mut writer = BatchWriter::with_capacity(0);
        let mut expected = Vec::new();
        for i in 0..9 {
            let values: Vec<Option<Vec<u8>>> = fields
                .iter()
                .enumerate()
                .map(|(j, f)| value(f, i + j))
                .collect();
            let refs: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
            let t = tuple(&refs);
            writer.row(&fields, &t).unwrap();
            expected.push(pb::Row {
                values: fields
                    .iter()
                    .zip(&values)
                    .map(|(f, v)| pb::Value {
                        kind: Some(expected_value(f, v.as_deref())),
                    })
                    .collect(),
            });
        }
        let frame = writer.finish();
        let message = pb::StreamRowsResponse {
            part: Some(pb::stream_rows_response::Part::Batch(pb::RowBatch {
                rows: expected,
            })),
        };
        assert_eq!(frame, message.encode_to_vec());
    }

    /// The value as the generated types hold it, written by the text renderers' helpers.
    fn expected_value(f: &Field, v: Option<&[u8]>) -> pb::value::Kind {
        use pb::value::Kind as V;
        let Some(v) = v else {
            return V::NullValue(0);
        };
        let text = |write: fn(&[u8], &mut Vec<u8>) -> Result<(), RenderError>| {
            let mut out = Vec::new();
            write(v, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        match f.kind {
            Kind::Text if sql::is_uuid(f) => {
                V::StringValue(uuid::Uuid::from_slice(v).unwrap().hyphenated().to_string())
            }
            Kind::Text => V::StringValue(String::from_utf8(v.to_vec()).unwrap()),
            Kind::Int => V::Int64Value(i64::from_be_bytes(v.try_into().unwrap())),
            Kind::Decimal => V::DecimalValue(text(bin::numeric)),
            Kind::Bool => V::BoolValue(v == [1]),
            Kind::Timestamp => {
                let micros = bin::unix_micros(v).unwrap().unwrap();
                V::TimestampValue(prost_types::Timestamp {
                    seconds: micros.div_euclid(1_000_000),
                    nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
                })
            }
            Kind::Date => V::DateValue(text(bin::date)),
        }
    }

    #[test]
    fn bad_text_is_refused() {
        let fields: Vec<&Field> = crate::catalog::TYPES
            .iter()
            .flat_map(|t| t.fields.iter())
            .filter(|f| f.kind == Kind::Text && !sql::is_uuid(f))
            .take(1)
            .collect();
        let t = tuple(&[Some(&[0xff, 0xfe])]);
        let err = BatchWriter::with_capacity(0).row(&fields, &t).unwrap_err();
        assert!(err.to_string().contains("UTF-8"), "{err}");
    }
}
