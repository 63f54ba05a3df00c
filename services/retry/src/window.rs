//! The in-flight window: how many leases the dispatcher lets stand at once, adapted to what
//! the owners keep up with.
//!
//! A lease runs from the claim, so a dispatch that waits in the owners' stream counts
//! against it. When owners fall behind by more than a lease's worth of work, every dispatch
//! expires before it is run, each rescue burns an attempt and puts the item back at the end
//! of the queue, and the queue never drains: items fail without having run. So when leases
//! expire, the window is cut to what the owners finished in the last lease, or half,
//! whichever is less, but not below one claim batch (at most once per lease and a quarter:
//! a cut shows only a lease later). After a lease with no expiry it grows by a quarter (at least one claim batch), up
//! to `HAVEN_RETRY_MAX_IN_FLIGHT`. A crashed owner or replica cuts it too, which is
//! harmless: it grows back.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

pub struct Window {
    /// The configured cap; 0 means no cap and no adaptation.
    max: i64,
    /// The least cut (unless the cap is lower) and growth step: one claim batch. Lower
    /// would burn fewer attempts while an owner is down, but after a bus outage (nothing
    /// finished) it would take many leases to grow back.
    batch: i64,
    lease: Duration,
    state: Mutex<State>,
}

struct State {
    limit: i64,
    /// The last cut, and the last expiry seen (which holds growth back a lease).
    cut_at: Option<Instant>,
    expired_at: Option<Instant>,
    grown_at: Instant,
    /// Results applied in the current lease-long bucket and the one before it.
    bucket_start: Instant,
    done_now: i64,
    done_before: i64,
}

impl Window {
    pub fn new(max: i64, batch: i64, lease: Duration) -> Self {
        let now = Instant::now();
        // Shown from the start, so a dashboard has the cap before the first cut.
        if max > 0 {
            metrics::gauge!("haven_retry_in_flight_window").set(max as f64);
        }
        Window {
            max,
            batch: batch.max(1),
            lease,
            state: Mutex::new(State {
                limit: max,
                cut_at: None,
                expired_at: None,
                grown_at: now,
                bucket_start: now,
                done_now: 0,
                done_before: 0,
            }),
        }
    }

    /// The leases that may stand now (0: no cap). Grows the window when a lease has passed
    /// since the last expiry and the last growth.
    pub fn limit(&self, now: Instant) -> i64 {
        if self.max == 0 {
            return 0;
        }
        let mut s = self.lock();
        let quiet_since = s.expired_at.map_or(s.grown_at, |e| e.max(s.grown_at));
        if s.limit < self.max && now.saturating_duration_since(quiet_since) >= self.lease {
            s.limit = (s.limit + (s.limit / 4).max(self.batch)).min(self.max);
            s.grown_at = now;
            metrics::gauge!("haven_retry_in_flight_window").set(s.limit as f64);
            tracing::info!(
                window = s.limit,
                "no lease expired for a lease; in-flight window grown"
            );
        }
        s.limit
    }

    /// Owners reported `n` results that the queue applied.
    pub fn finished(&self, n: usize, now: Instant) {
        if self.max == 0 {
            return;
        }
        let mut s = self.lock();
        self.rotate(&mut s, now);
        s.done_now += i64::try_from(n).unwrap_or(i64::MAX);
    }

    /// The rescue took `n` expired leases.
    pub fn expired(&self, n: usize, now: Instant) {
        if self.max == 0 || n == 0 {
            return;
        }
        let mut s = self.lock();
        self.rotate(&mut s, now);
        s.expired_at = Some(now);
        // Claims made before the last cut expire up to a lease after it, and the rescue
        // finds them a little later: those say nothing about the cut window.
        if s.cut_at
            .is_some_and(|c| now.saturating_duration_since(c) < self.lease + self.lease / 4)
        {
            return;
        }
        let done = s.done_now.max(s.done_before);
        let before = s.limit;
        s.limit = (s.limit / 2).min(done).max(self.batch).min(self.max);
        s.cut_at = Some(now);
        metrics::gauge!("haven_retry_in_flight_window").set(s.limit as f64);
        tracing::warn!(
            window = s.limit,
            before,
            finished_last_lease = done,
            "leases expired before their results: owners are behind; in-flight window cut"
        );
    }

    /// Buckets are aligned to whole leases from the window's start, so the one before is
    /// always the last complete lease.
    fn rotate(&self, s: &mut State, now: Instant) {
        let age = now.saturating_duration_since(s.bucket_start);
        if age < self.lease {
            return;
        }
        let leases = (age.as_nanos() / self.lease.as_nanos().max(1)) as u32;
        s.done_before = if leases == 1 { s.done_now } else { 0 };
        s.done_now = 0;
        s.bucket_start += self.lease * leases;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a few integers, consistent after every statement: a panic elsewhere
        // while holding the lock leaves nothing half-written.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(10);

    #[test]
    fn an_expiry_cuts_to_what_owners_finished_at_most_once_a_lease() {
        let t0 = Instant::now();
        let w = Window::new(10_000, 256, LEASE);
        assert_eq!(w.limit(t0), 10_000);
        w.finished(700, t0 + Duration::from_secs(1));
        w.expired(300, t0 + Duration::from_secs(2));
        assert_eq!(w.limit(t0 + Duration::from_secs(2)), 700);
        // Expiries of claims made before the cut do not cut again.
        w.expired(300, t0 + Duration::from_secs(9));
        w.expired(300, t0 + Duration::from_secs(14));
        assert_eq!(w.limit(t0 + Duration::from_secs(14)), 700);
        // Later they do: halved, as fewer finished than the window.
        w.finished(500, t0 + Duration::from_secs(11));
        w.expired(10, t0 + Duration::from_secs(15));
        assert_eq!(w.limit(t0 + Duration::from_secs(15)), 350);
    }

    #[test]
    fn with_nothing_finished_the_window_keeps_one_batch() {
        let t0 = Instant::now();
        let w = Window::new(10_000, 256, LEASE);
        w.expired(5_000, t0 + Duration::from_secs(1));
        assert_eq!(w.limit(t0 + Duration::from_secs(1)), 256);
    }

    #[test]
    fn a_lease_with_no_expiry_grows_it_back_to_the_cap() {
        let t0 = Instant::now();
        let w = Window::new(2_000, 256, LEASE);
        w.finished(1_000, t0);
        w.expired(1, t0);
        assert_eq!(w.limit(t0), 1_000);
        // Not before a whole lease without expiries.
        w.expired(1, t0 + Duration::from_secs(5));
        assert_eq!(w.limit(t0 + Duration::from_secs(14)), 1_000);
        assert_eq!(w.limit(t0 + Duration::from_secs(15)), 1_256);
        assert_eq!(w.limit(t0 + Duration::from_secs(20)), 1_256);
        assert_eq!(w.limit(t0 + Duration::from_secs(25)), 1_570);
        assert_eq!(w.limit(t0 + Duration::from_secs(35)), 1_962);
        assert_eq!(w.limit(t0 + Duration::from_secs(45)), 2_000);
        assert_eq!(w.limit(t0 + Duration::from_secs(99)), 2_000);
    }

    #[test]
    fn results_older_than_two_leases_are_not_counted() {
        let t0 = Instant::now();
        let w = Window::new(10_000, 256, LEASE);
        w.finished(5_000, t0);
        w.finished(300, t0 + Duration::from_secs(25));
        w.expired(1, t0 + Duration::from_secs(26));
        assert_eq!(w.limit(t0 + Duration::from_secs(26)), 300);
    }

    #[test]
    fn a_cap_below_one_batch_is_never_exceeded() {
        let t0 = Instant::now();
        let w = Window::new(8, 256, LEASE);
        w.expired(8, t0);
        assert_eq!(w.limit(t0), 8);
        assert_eq!(w.limit(t0 + LEASE * 3), 8);
    }

    #[test]
    fn no_cap_means_no_window() {
        let t0 = Instant::now();
        let w = Window::new(0, 256, LEASE);
        w.expired(100, t0);
        assert_eq!(w.limit(t0), 0);
    }
}
