//! The JSON conventions every endpoint shares: RFC 3339 times and `null` for unset values.

use serde_json::Value;

/// A protobuf timestamp as RFC 3339 (milliseconds, `Z`), or `null` when unset.
pub fn time(ts: Option<prost_types::Timestamp>) -> Value {
    ts.as_ref()
        .and_then(haven_proto::time::from_timestamp)
        .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

/// Protobuf's empty string is "unset": `null` in JSON.
pub fn text(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_owned())
    }
}
