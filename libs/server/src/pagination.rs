//! Pagination every List RPC shares: the page size check and opaque page tokens for
//! keyset pagination over `(created_at, id)`, newest first.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Largest `page_size` any List RPC serves.
pub const MAX_PAGE_SIZE: i32 = 1000;

/// The page size to serve: `default` when unset, else `1..=MAX_PAGE_SIZE`, or
/// `InvalidArgument` naming `page_size`.
#[allow(clippy::result_large_err)]
pub fn page_size(requested: Option<i32>, default: i32) -> Result<i64, tonic::Status> {
    match requested {
        None => Ok(i64::from(default)),
        Some(n) if (1..=MAX_PAGE_SIZE).contains(&n) => Ok(i64::from(n)),
        Some(n) => Err(tonic::Status::invalid_argument(format!(
            "page_size: must be between 1 and {MAX_PAGE_SIZE}, got {n}"
        ))),
    }
}

/// The token for the page after the row `(at, id)`.
pub fn encode(at: DateTime<Utc>, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{id}", at.timestamp_micros()))
}

/// The position a token stands for; an empty token is the first page. A token that is not
/// ours is `InvalidArgument` naming `page_token`.
#[allow(clippy::result_large_err)]
pub fn decode(token: &str) -> Result<Option<(DateTime<Utc>, Uuid)>, tonic::Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad =
        || tonic::Status::invalid_argument("page_token: not a token from a previous response");
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (micros, id) = text.split_once(':').ok_or_else(bad)?;
    let at = DateTime::from_timestamp_micros(micros.parse().map_err(|_| bad())?).ok_or_else(bad)?;
    Ok(Some((at, Uuid::parse_str(id).map_err(|_| bad())?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_default_and_bound() {
        assert_eq!(page_size(None, 50).ok(), Some(50));
        assert_eq!(page_size(Some(1000), 50).ok(), Some(1000));
        for bad in [0, -1, 1001] {
            let e = page_size(Some(bad), 50)
                .err()
                .map(|e| (e.code(), e.message().starts_with("page_size: ")));
            assert_eq!(e, Some((tonic::Code::InvalidArgument, true)));
        }
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_named() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap_or_default();
        let id = Uuid::now_v7();
        assert_eq!(decode(&encode(at, id)).ok().flatten(), Some((at, id)));
        assert_eq!(decode("").ok().flatten(), None);
        for bad in [
            "???",
            "bm90LWEtdG9rZW4",
            &URL_SAFE_NO_PAD.encode("12:not-a-uuid"),
        ] {
            let e = decode(bad)
                .err()
                .map(|e| (e.code(), e.message().starts_with("page_token")));
            assert_eq!(e, Some((tonic::Code::InvalidArgument, true)));
        }
    }
}
