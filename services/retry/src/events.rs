//! Lifecycle events: `haven.retry.events.resolved` and `.failed` (the dead letter).

use haven_bus::{Bus, BusError};
use haven_proto::events::v1::RetryLifecycle;
use haven_retry_client::{FAILED_SUBJECT, RESOLVED_SUBJECT};

use haven_proto::time::timestamp;

use crate::model::{ItemRow, Status};

/// Publishes the event of every item that reached resolved or failed; others are skipped.
/// The message id is the transition's, so a republish after a crash is dropped by the bus.
pub async fn publish_lifecycle(bus: &Bus, items: &[ItemRow]) -> Result<(), BusError> {
    let mut acks = Vec::new();
    for item in items {
        let subject = match item.status {
            Status::Resolved => RESOLVED_SUBJECT,
            Status::Failed => FAILED_SUBJECT,
            Status::Pending | Status::Processing | Status::Cancelled => continue,
        };
        let event = RetryLifecycle {
            item: Some(item.to_proto()),
            occurred_at: Some(timestamp(item.updated_at)),
        };
        let msg_id = format!("{}:{}:{}", item.id, item.attempts, item.status);
        let payload = prost::Message::encode_to_vec(&event).into();
        acks.push((subject, bus.publish_start(subject, payload, &msg_id).await?));
    }
    for (subject, ack) in acks {
        ack.await.map_err(|e| BusError::Publish {
            subject: subject.to_owned(),
            reason: e.to_string(),
        })?;
    }
    if !items.is_empty() {
        let failed = items.iter().filter(|i| i.status == Status::Failed).count();
        if failed > 0 {
            metrics::counter!("haven_retry_dead_letters_total").increment(failed as u64);
        }
    }
    Ok(())
}
