//! Turns an enqueue request into an item to insert, or names what is wrong with it.

use chrono::{DateTime, Utc};
use haven_proto::retry::v1::EnqueueRequest;
use haven_proto::retry::v1::enqueue_request::FirstRun;
use uuid::Uuid;

use std::time::Duration;

use crate::store::{self, NewItem};

/// The payload limit: retry payloads are arguments, not documents.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
const MAX_DELAY_MS: u64 = 365 * 24 * 3600 * 1000;

/// A field and what is wrong with it, for `InvalidArgument`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        field,
        message: message.into(),
    }
}

/// `integrations.register_webhook`: lowercase words joined by dots.
pub fn operation_type(op: &str) -> Result<(), Invalid> {
    if op.is_empty() {
        return Err(invalid("operation_type", "is required"));
    }
    if op.len() > 100 {
        return Err(invalid("operation_type", "is longer than 100 characters"));
    }
    let valid_word = |w: &str| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    if !op.split('.').all(valid_word) {
        return Err(invalid(
            "operation_type",
            format!(
                "`{op}` must be lowercase words of [a-z0-9_] joined by dots, e.g. integrations.register_webhook"
            ),
        ));
    }
    Ok(())
}

fn optional(field: &'static str, value: &str, max: usize) -> Result<Option<String>, Invalid> {
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() > max {
        return Err(invalid(field, format!("is longer than {max} bytes")));
    }
    if value.contains('\0') {
        return Err(invalid(field, "contains a NUL character"));
    }
    Ok(Some(value.to_owned()))
}

/// Validates `request` for `tenant_id`. `source_msg_id` is the NATS message id it came with.
pub fn new_item(
    tenant_id: Uuid,
    user_id: Option<String>,
    request: &EnqueueRequest,
    source_msg_id: Option<String>,
    now: DateTime<Utc>,
) -> Result<NewItem, Invalid> {
    operation_type(&request.operation_type)?;
    let payload = if request.payload_json.trim().is_empty() {
        "{}"
    } else {
        request.payload_json.as_str()
    };
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(invalid(
            "payload_json",
            format!("is larger than {MAX_PAYLOAD_BYTES} bytes"),
        ));
    }
    match serde_json::from_str::<serde_json::Value>(payload) {
        Ok(serde_json::Value::Object(_)) => {}
        Ok(other) => {
            let kind = match other {
                serde_json::Value::Array(_) => "an array",
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Number(_) => "a number",
                serde_json::Value::Bool(_) => "a boolean",
                _ => "null",
            };
            return Err(invalid(
                "payload_json",
                format!("must be a JSON object, got {kind}"),
            ));
        }
        Err(e) => return Err(invalid("payload_json", format!("is not valid JSON: {e}"))),
    }
    // PostgreSQL's jsonb cannot hold NUL characters.
    if payload.contains("\\u0000") {
        return Err(invalid(
            "payload_json",
            "contains \\u0000, which cannot be stored",
        ));
    }
    let max_attempts = match request.max_attempts {
        0 => 5,
        n @ 1..=100 => n,
        n => {
            return Err(invalid(
                "max_attempts",
                format!("must be between 1 and 100 (or 0 for the default of 5), got {n}"),
            ));
        }
    };
    let first_run = match &request.first_run {
        None => store::FirstRun::Now,
        Some(FirstRun::DelayMs(ms)) if *ms > MAX_DELAY_MS => {
            return Err(invalid("delay_ms", "must be at most one year"));
        }
        Some(FirstRun::DelayMs(ms)) => store::FirstRun::After(Duration::from_millis(*ms)),
        Some(FirstRun::RunAt(ts)) => {
            let at = DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).unwrap_or(0))
                .ok_or_else(|| invalid("run_at", "is not a valid timestamp"))?;
            if at > now + chrono::Duration::days(365) {
                return Err(invalid("run_at", "must be within one year"));
            }
            store::FirstRun::At(at)
        }
    };
    let reference_id = optional("reference_id", &request.reference_id, 255)?;
    let reference_table = optional("reference_table", &request.reference_table, 100)?;
    let idempotency_key = optional("idempotency_key", &request.idempotency_key, 255)?;
    // The original error is information, not a contract: keep it, shortened.
    let last_error = (!request.last_error.is_empty()).then(|| {
        let mut e: String = request
            .last_error
            .replace('\0', "")
            .chars()
            .take(4000)
            .collect();
        e.shrink_to_fit();
        e
    });
    Ok(NewItem {
        id: Uuid::now_v7(),
        tenant_id,
        user_id: user_id.filter(|u| !u.is_empty()),
        operation_type: request.operation_type.clone(),
        payload: payload.to_owned(),
        max_attempts,
        last_error,
        first_run,
        reference_id,
        reference_table,
        idempotency_key,
        source_msg_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(op: &str, payload: &str) -> EnqueueRequest {
        EnqueueRequest {
            operation_type: op.into(),
            payload_json: payload.into(),
            ..Default::default()
        }
    }

    fn check(req: EnqueueRequest) -> Result<NewItem, Invalid> {
        new_item(Uuid::nil(), None, &req, None, Utc::now())
    }

    #[test]
    fn accepts_a_plain_request_with_defaults() {
        let item = check(request(
            "integrations.register_webhook",
            r#"{"topic":"orders/create"}"#,
        ))
        .unwrap();
        assert_eq!(item.max_attempts, 5);
        assert_eq!(item.first_run, store::FirstRun::Now);
        assert_eq!(check(request("exports.x", "")).unwrap().payload, "{}");
    }

    #[test]
    fn names_the_bad_field() {
        assert_eq!(
            check(request("", "{}")).unwrap_err().field,
            "operation_type"
        );
        assert_eq!(
            check(request("Bad Type", "{}")).unwrap_err().field,
            "operation_type"
        );
        assert_eq!(
            check(request("a..b", "{}")).unwrap_err().field,
            "operation_type"
        );
        let e = check(request("a.b", "{not json")).unwrap_err();
        assert_eq!(e.field, "payload_json");
        assert!(e.message.contains("not valid JSON"), "{e}");
        assert!(
            check(request("a.b", "[1,2]"))
                .unwrap_err()
                .message
                .contains("an array")
        );
        assert_eq!(
            check(request("a.b", r#"{"a":"\u0000"}"#))
                .unwrap_err()
                .field,
            "payload_json"
        );
        let mut r = request("a.b", "{}");
        r.max_attempts = 1000;
        assert_eq!(check(r.clone()).unwrap_err().field, "max_attempts");
        r.max_attempts = -1;
        assert_eq!(check(r).unwrap_err().field, "max_attempts");
        let mut r = request("a.b", "{}");
        r.idempotency_key = "k".repeat(300);
        assert_eq!(check(r).unwrap_err().field, "idempotency_key");
        let mut r = request("a.b", "{}");
        r.first_run = Some(FirstRun::DelayMs(MAX_DELAY_MS + 1));
        assert_eq!(check(r).unwrap_err().field, "delay_ms");
    }
}
