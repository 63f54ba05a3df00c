//! The rules of an item's life, as one pure function: given an item and what happened to
//! it, [`transition`] says what becomes of it. The store only turns decisions into SQL
//! (README, "Retry queue": Outcomes and Error management).
//!
//! The store reads the item with `FOR UPDATE` in the transaction that applies the decision,
//! so the state decided on is the state changed. What stays in SQL selects rows in bulk
//! rather than deciding about one item, so that each stays one statement: claiming takes
//! due `pending` items (`SKIP LOCKED`); giving back a claim whose dispatch was never
//! published only touches it while it is still that claim (`status = 'processing'` and its
//! attempt in the WHERE); the lease rescue takes `processing` items whose lease ran out and
//! hands each to [`transition`] as [`Event::LeaseExpired`].

use std::time::Duration;

use crate::model::Status;

/// What the machine needs to know about an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemState {
    pub status: Status,
    /// Attempts started so far; the current attempt's number while processing.
    pub attempts: i32,
    pub max_attempts: i32,
}

impl ItemState {
    /// No attempt is left after the current one.
    fn exhausted(&self) -> bool {
        self.attempts >= self.max_attempts
    }
}

/// What happened to an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The owner reported that attempt `attempt` succeeded.
    Succeeded { attempt: i32 },
    /// The owner reported a retryable failure; `retry_after` (zero when none was given) is
    /// a floor for the wait.
    Failed { attempt: i32, retry_after: Duration },
    /// The owner reported that no retry can help.
    Permanent { attempt: i32 },
    /// Attempt `attempt`'s lease ran out with no result: the owner or the claiming replica
    /// died. Counts as a failed attempt.
    LeaseExpired { attempt: i32 },
    /// An operator asked for another attempt now.
    RetryNow,
    /// An operator cancelled the item.
    Cancel,
}

/// Why an item failed for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailReason {
    Permanent,
    Exhausted,
}

/// What becomes of the item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Resolved; the resolution is published.
    Resolve,
    /// Pending again after the backoff of its attempts, never sooner than `retry_after`.
    Reschedule { retry_after: Duration },
    /// Failed; published as the dead letter.
    Fail(FailReason),
    /// The item already took this very result (a redelivery): nothing changes, but its
    /// lifecycle event is published again (the bus drops the repeat).
    Replay,
    /// The result is for an attempt that is no longer current, or that already ended
    /// another way: nothing changes.
    Ignore,
    /// Pending and due now, claim cleared, with `max_attempts` so at least one attempt is
    /// left.
    Requeue { max_attempts: i32 },
    /// Cancelled: never dispatched again.
    Cancel,
    /// Nothing to do, and that is no error (cancelling a cancelled item).
    Unchanged,
    /// The operator's request does not apply in this status.
    Refuse,
}

/// The rules: see the README, "Retry queue".
pub fn transition(item: &ItemState, event: Event) -> Decision {
    match event {
        Event::Succeeded { attempt }
        | Event::Failed { attempt, .. }
        | Event::Permanent { attempt }
        | Event::LeaseExpired { attempt }
            if attempt != item.attempts =>
        {
            Decision::Ignore
        }
        Event::Succeeded { .. } => match item.status {
            Status::Processing => Decision::Resolve,
            Status::Resolved => Decision::Replay,
            Status::Pending | Status::Failed | Status::Cancelled => Decision::Ignore,
        },
        Event::Failed { retry_after, .. } => match item.status {
            Status::Processing if item.exhausted() => Decision::Fail(FailReason::Exhausted),
            Status::Processing => Decision::Reschedule { retry_after },
            Status::Failed => Decision::Replay,
            Status::Pending | Status::Resolved | Status::Cancelled => Decision::Ignore,
        },
        Event::LeaseExpired { .. } => match item.status {
            Status::Processing if item.exhausted() => Decision::Fail(FailReason::Exhausted),
            Status::Processing => Decision::Reschedule {
                retry_after: Duration::ZERO,
            },
            Status::Failed => Decision::Replay,
            Status::Pending | Status::Resolved | Status::Cancelled => Decision::Ignore,
        },
        Event::Permanent { .. } => match item.status {
            Status::Processing => Decision::Fail(FailReason::Permanent),
            Status::Failed => Decision::Replay,
            Status::Pending | Status::Resolved | Status::Cancelled => Decision::Ignore,
        },
        Event::RetryNow => match item.status {
            Status::Pending | Status::Failed => Decision::Requeue {
                max_attempts: item.max_attempts.max(item.attempts.saturating_add(1)),
            },
            Status::Processing | Status::Resolved | Status::Cancelled => Decision::Refuse,
        },
        Event::Cancel => match item.status {
            Status::Pending | Status::Processing | Status::Failed => Decision::Cancel,
            Status::Cancelled => Decision::Unchanged,
            Status::Resolved => Decision::Refuse,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Declares `Kind` and `KINDS`, every kind, from one list, so none can be left out.
    macro_rules! kinds {
        ($($k:ident),+ $(,)?) => {
            #[derive(Clone, Copy, Debug, PartialEq, Eq)]
            enum Kind { $($k),+ }
            const KINDS: &[Kind] = &[$(Kind::$k),+];
        };
    }

    // The kinds of [`Event`]. `kind` has no catch-all arm, so a new event does not compile
    // until it has a kind here; `event` then needs its sample, and the table its rows.
    kinds!(Succeeded, Failed, Permanent, LeaseExpired, RetryNow, Cancel);

    fn kind(event: &Event) -> Kind {
        match event {
            Event::Succeeded { .. } => Kind::Succeeded,
            Event::Failed { .. } => Kind::Failed,
            Event::Permanent { .. } => Kind::Permanent,
            Event::LeaseExpired { .. } => Kind::LeaseExpired,
            Event::RetryNow => Kind::RetryNow,
            Event::Cancel => Kind::Cancel,
        }
    }

    const RETRY_AFTER: Duration = Duration::from_secs(3);

    /// The event of `kind` about attempt `attempt` (ignored by operator events).
    fn event(kind: Kind, attempt: i32) -> Event {
        match kind {
            Kind::Succeeded => Event::Succeeded { attempt },
            Kind::Failed => Event::Failed {
                attempt,
                retry_after: RETRY_AFTER,
            },
            Kind::Permanent => Event::Permanent { attempt },
            Kind::LeaseExpired => Event::LeaseExpired { attempt },
            Kind::RetryNow => Event::RetryNow,
            Kind::Cancel => Event::Cancel,
        }
    }

    /// Attempt 2 of 5: attempts are left.
    const LEFT: (i32, i32) = (2, 5);
    /// Attempt 5 of 5: the last one.
    const LAST: (i32, i32) = (5, 5);

    use Decision::{Cancel, Fail, Ignore, Refuse, Replay, Requeue, Reschedule, Resolve, Unchanged};
    use FailReason::{Exhausted, Permanent};

    const RESCHEDULE: Decision = Reschedule {
        retry_after: RETRY_AFTER,
    };
    const RESCHEDULE_NOW: Decision = Reschedule {
        retry_after: Duration::ZERO,
    };

    /// Status × event → the decision for an event about the current attempt when attempts
    /// are left (`LEFT`), about the current attempt when it was the last (`LAST`), and about
    /// an earlier attempt (stale). Operator events carry no attempt: their stale column
    /// repeats `LEFT`.
    #[rustfmt::skip]
    const TABLE: &[(Status, Kind, Decision, Decision, Decision)] = &[
        // status              event              attempts left     last attempt          stale
        (Status::Pending,    Kind::Succeeded,    Ignore,            Ignore,               Ignore),
        (Status::Pending,    Kind::Failed,       Ignore,            Ignore,               Ignore),
        (Status::Pending,    Kind::Permanent,    Ignore,            Ignore,               Ignore),
        (Status::Pending,    Kind::LeaseExpired, Ignore,            Ignore,               Ignore),
        (Status::Pending,    Kind::RetryNow,     Requeue { max_attempts: 5 }, Requeue { max_attempts: 6 }, Requeue { max_attempts: 5 }),
        (Status::Pending,    Kind::Cancel,       Cancel,            Cancel,               Cancel),

        (Status::Processing, Kind::Succeeded,    Resolve,           Resolve,              Ignore),
        (Status::Processing, Kind::Failed,       RESCHEDULE,        Fail(Exhausted),      Ignore),
        (Status::Processing, Kind::Permanent,    Fail(Permanent),   Fail(Permanent),      Ignore),
        (Status::Processing, Kind::LeaseExpired, RESCHEDULE_NOW,    Fail(Exhausted),      Ignore),
        (Status::Processing, Kind::RetryNow,     Refuse,            Refuse,               Refuse),
        (Status::Processing, Kind::Cancel,       Cancel,            Cancel,               Cancel),

        (Status::Resolved,   Kind::Succeeded,    Replay,            Replay,               Ignore),
        (Status::Resolved,   Kind::Failed,       Ignore,            Ignore,               Ignore),
        (Status::Resolved,   Kind::Permanent,    Ignore,            Ignore,               Ignore),
        (Status::Resolved,   Kind::LeaseExpired, Ignore,            Ignore,               Ignore),
        (Status::Resolved,   Kind::RetryNow,     Refuse,            Refuse,               Refuse),
        (Status::Resolved,   Kind::Cancel,       Refuse,            Refuse,               Refuse),

        (Status::Failed,     Kind::Succeeded,    Ignore,            Ignore,               Ignore),
        (Status::Failed,     Kind::Failed,       Replay,            Replay,               Ignore),
        (Status::Failed,     Kind::Permanent,    Replay,            Replay,               Ignore),
        (Status::Failed,     Kind::LeaseExpired, Replay,            Replay,               Ignore),
        (Status::Failed,     Kind::RetryNow,     Requeue { max_attempts: 5 }, Requeue { max_attempts: 6 }, Requeue { max_attempts: 5 }),
        (Status::Failed,     Kind::Cancel,       Cancel,            Cancel,               Cancel),

        (Status::Cancelled,  Kind::Succeeded,    Ignore,            Ignore,               Ignore),
        (Status::Cancelled,  Kind::Failed,       Ignore,            Ignore,               Ignore),
        (Status::Cancelled,  Kind::Permanent,    Ignore,            Ignore,               Ignore),
        (Status::Cancelled,  Kind::LeaseExpired, Ignore,            Ignore,               Ignore),
        (Status::Cancelled,  Kind::RetryNow,     Refuse,            Refuse,               Refuse),
        (Status::Cancelled,  Kind::Cancel,       Unchanged,         Unchanged,            Unchanged),
    ];

    fn item(status: Status, (attempts, max_attempts): (i32, i32)) -> ItemState {
        ItemState {
            status,
            attempts,
            max_attempts,
        }
    }

    #[test]
    fn samples_are_of_their_kind() {
        for &k in KINDS {
            assert_eq!(kind(&event(k, 1)), k);
        }
    }

    #[test]
    fn table_covers_every_status_and_event_once() {
        for status in Status::ALL {
            for &k in KINDS {
                let rows = TABLE
                    .iter()
                    .filter(|(s, kk, ..)| s == status && *kk == k)
                    .count();
                assert_eq!(rows, 1, "{status:?} × {k:?} has {rows} rows");
            }
        }
        assert_eq!(TABLE.len(), Status::ALL.len() * KINDS.len());
    }

    #[test]
    fn every_status_and_event_decides_as_the_table_says() {
        for &(status, k, left, last, stale) in TABLE {
            let cases = [
                ("attempts left", item(status, LEFT), LEFT.0, left),
                ("last attempt", item(status, LAST), LAST.0, last),
                ("stale attempt", item(status, LEFT), LEFT.0 - 1, stale),
            ];
            for (case, state, attempt, want) in cases {
                let got = transition(&state, event(k, attempt));
                assert_eq!(got, want, "{status:?} × {k:?}, {case}");
            }
        }
    }

    /// A result for any attempt but the current one changes nothing, earlier or later, in
    /// every status.
    #[test]
    fn results_for_other_attempts_are_ignored() {
        for status in Status::ALL {
            for k in [
                Kind::Succeeded,
                Kind::Failed,
                Kind::Permanent,
                Kind::LeaseExpired,
            ] {
                for attempt in [0, 1, 3, 4, 5, i32::MAX] {
                    let got = transition(&item(*status, LEFT), event(k, attempt));
                    assert_eq!(got, Ignore, "{status:?} × {k:?} for attempt {attempt}");
                }
            }
        }
    }

    #[test]
    fn retry_after_is_passed_on_and_zero_when_not_given() {
        let processing = item(Status::Processing, LEFT);
        for retry_after in [Duration::ZERO, Duration::from_millis(1500)] {
            let got = transition(
                &processing,
                Event::Failed {
                    attempt: LEFT.0,
                    retry_after,
                },
            );
            assert_eq!(got, Reschedule { retry_after });
        }
    }

    /// Past the limit (raised by an earlier retry-now, or lowered by hand) counts as
    /// exhausted, and retry-now still leaves exactly one more attempt.
    #[test]
    fn attempts_beyond_the_limit_are_exhausted() {
        let over = item(Status::Processing, (7, 5));
        assert_eq!(
            transition(&over, event(Kind::LeaseExpired, 7)),
            Fail(Exhausted)
        );
        let failed = item(Status::Failed, (7, 5));
        assert_eq!(
            transition(&failed, Event::RetryNow),
            Requeue { max_attempts: 8 }
        );
    }
}
