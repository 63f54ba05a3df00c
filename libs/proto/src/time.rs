//! `chrono` ↔ `google.protobuf.Timestamp`, written once for every service and the gateway.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

/// The protobuf form of an instant.
pub fn timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        // Always < 1e9 for a `DateTime`, so the conversion cannot fail.
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// The instant a protobuf timestamp stands for; `None` when it lies outside chrono's range
/// or its nanos are not in `0..1e9` (callers name the field in their error).
pub fn from_timestamp(ts: &Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(ts.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)?;
    DateTime::from_timestamp(ts.seconds, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_out_of_range() {
        let at = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap_or_default();
        assert_eq!(from_timestamp(&timestamp(at)), Some(at));
        let bad_nanos = Timestamp {
            seconds: 0,
            nanos: -1,
        };
        assert_eq!(from_timestamp(&bad_nanos), None);
        let too_late = Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert_eq!(from_timestamp(&too_late), None);
    }
}
