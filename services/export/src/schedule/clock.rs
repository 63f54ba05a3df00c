//! The scheduler's idea of now. Slots follow it; leases do not (they measure whether a
//! replica is alive, in the database's real time). A test sets a manual clock so weeks of
//! slots pass in seconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};

#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The system's clock.
    #[default]
    System,
    /// A clock that moves only when told to (microseconds since the epoch, shared by clones).
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// A manual clock standing at `start`.
    pub fn manual(start: DateTime<Utc>) -> Self {
        Clock::Manual(Arc::new(AtomicI64::new(start.timestamp_micros())))
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Manual(micros) => {
                DateTime::from_timestamp_micros(micros.load(Ordering::SeqCst)).unwrap_or_default()
            }
        }
    }

    /// Moves a manual clock to `to` (every clone sees it); the system clock cannot be set.
    pub fn set(&self, to: DateTime<Utc>) -> bool {
        match self {
            Clock::System => false,
            Clock::Manual(micros) => {
                micros.store(to.timestamp_micros(), Ordering::SeqCst);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_for_every_clone() {
        let start = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let clock = Clock::manual(start);
        let other = clock.clone();
        assert_eq!(other.now(), start);
        assert!(clock.set(start + chrono::Duration::days(3)));
        assert_eq!(other.now(), start + chrono::Duration::days(3));
        assert!(!Clock::System.set(start));
    }
}
