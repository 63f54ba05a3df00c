//! The JSON conventions every endpoint shares: RFC 3339 times and `null` for unset values.

/// A protobuf timestamp as RFC 3339 (milliseconds, `Z`), or `None` (`null`) when unset.
pub fn time_str(ts: Option<prost_types::Timestamp>) -> Option<String> {
    ts.as_ref()
        .and_then(haven_proto::time::from_timestamp)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// Protobuf's empty string is "unset": `None` (`null`) in JSON.
pub fn nonempty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}
