//! Exponential backoff with full jitter, configurable per operation type.

use std::collections::HashMap;
use std::time::Duration;

use rand::Rng;

/// Base and cap of one operation type's backoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(10),
            cap: Duration::from_secs(3600),
        }
    }
}

impl Backoff {
    /// The ceiling of the wait after `attempts` failed attempts: min(cap, base·2^(attempts−1)),
    /// so the first retry waits up to `base`.
    pub fn ceiling(&self, attempts: u32) -> Duration {
        let exp = attempts.saturating_sub(1).min(62);
        let factor = 1u64 << exp;
        let base_ms = u64::try_from(self.base.as_millis()).unwrap_or(u64::MAX);
        let cap_ms = u64::try_from(self.cap.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(base_ms.saturating_mul(factor).min(cap_ms))
    }

    /// Full jitter: uniform in [0, ceiling], so retries of many items spread out instead of
    /// arriving in waves. A provider's `Retry-After` is a floor, itself at most
    /// [`MAX_RETRY_AFTER`].
    pub fn delay(&self, attempts: u32, retry_after: Duration, rng: &mut impl Rng) -> Duration {
        let ceiling = u64::try_from(self.ceiling(attempts).as_millis()).unwrap_or(u64::MAX);
        let jittered = Duration::from_millis(rng.random_range(0..=ceiling));
        jittered.max(retry_after.min(MAX_RETRY_AFTER))
    }
}

/// The longest `Retry-After` honoured: beyond it PostgreSQL's timestamps overflow (a handler
/// saying `Duration::MAX` once failed every result in its batch), and no provider means it.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(365 * 24 * 3600);

/// Backoff per operation type, with a default for the rest.
#[derive(Clone, Debug, Default)]
pub struct BackoffPolicy {
    pub default: Backoff,
    pub per_type: HashMap<String, Backoff>,
}

impl BackoffPolicy {
    pub fn for_type(&self, operation_type: &str) -> Backoff {
        self.per_type
            .get(operation_type)
            .copied()
            .unwrap_or(self.default)
    }

    /// Parses `op=base:cap,op2=base:cap` (humantime durations), e.g.
    /// `integrations.refresh_token=1s:5m`.
    pub fn parse_overrides(spec: &str) -> Result<HashMap<String, Backoff>, String> {
        let mut out = HashMap::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (op, durations) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: expected operation_type=base:cap"))?;
            let (base, cap) = durations
                .split_once(':')
                .ok_or_else(|| format!("`{part}`: expected base:cap after `=`"))?;
            let base =
                humantime::parse_duration(base).map_err(|e| format!("`{part}`: base: {e}"))?;
            let cap = humantime::parse_duration(cap).map_err(|e| format!("`{part}`: cap: {e}"))?;
            if base.is_zero() || cap < base {
                return Err(format!("`{part}`: need 0 < base <= cap"));
            }
            out.insert(op.trim().to_owned(), Backoff { base, cap });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    #[test]
    fn retry_after_is_held_to_a_year() {
        let backoff = Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
        };
        let mut rng = rand::rng();
        assert_eq!(backoff.delay(1, Duration::MAX, &mut rng), MAX_RETRY_AFTER);
    }

    proptest! {
        /// Every delay lies in [max(0, retry_after), max(min(cap, base·2^(n−1)), retry_after)].
        #[test]
        fn delay_is_within_bounds(
            base_ms in 1u64..100_000,
            cap_factor in 1u64..1000,
            attempts in 1u32..200,
            retry_after_ms in 0u64..10_000,
            seed in any::<u64>(),
        ) {
            let backoff = Backoff {
                base: Duration::from_millis(base_ms),
                cap: Duration::from_millis(base_ms * cap_factor),
            };
            let mut rng = SmallRng::seed_from_u64(seed);
            let retry_after = Duration::from_millis(retry_after_ms);
            let delay = backoff.delay(attempts, retry_after, &mut rng);
            let exp = u32::min(attempts - 1, 62);
            let ceiling = (base_ms.saturating_mul(1u64 << exp)).min(base_ms * cap_factor);
            prop_assert!(delay >= retry_after);
            prop_assert!(delay <= Duration::from_millis(ceiling).max(retry_after));
        }

        /// The ceiling never decreases with more attempts and never passes the cap.
        #[test]
        fn ceiling_is_monotonic_and_capped(base_ms in 1u64..100_000, cap_factor in 1u64..1000, attempts in 1u32..500) {
            let backoff = Backoff { base: Duration::from_millis(base_ms), cap: Duration::from_millis(base_ms * cap_factor) };
            prop_assert!(backoff.ceiling(attempts) <= backoff.ceiling(attempts + 1));
            prop_assert!(backoff.ceiling(attempts) <= backoff.cap);
        }
    }

    #[test]
    fn defaults_match_the_spec() {
        let b = Backoff::default();
        assert_eq!(b.ceiling(1), Duration::from_secs(10));
        assert_eq!(b.ceiling(2), Duration::from_secs(20));
        assert_eq!(b.ceiling(9), Duration::from_secs(2560));
        assert_eq!(b.ceiling(10), Duration::from_secs(3600));
    }

    #[test]
    fn jitter_spreads_delays() {
        let b = Backoff::default();
        let mut rng = SmallRng::seed_from_u64(1);
        let delays: std::collections::HashSet<_> = (0..100)
            .map(|_| b.delay(5, Duration::ZERO, &mut rng))
            .collect();
        assert!(delays.len() > 90);
    }

    #[test]
    fn overrides_parse_and_reject_nonsense() {
        let map = BackoffPolicy::parse_overrides("a.b=1s:5m, c=250ms:1s").unwrap();
        assert_eq!(
            map["a.b"],
            Backoff {
                base: Duration::from_secs(1),
                cap: Duration::from_secs(300)
            }
        );
        assert!(BackoffPolicy::parse_overrides("a=5m:1s").is_err());
        assert!(BackoffPolicy::parse_overrides("a=1s").is_err());
        assert!(BackoffPolicy::parse_overrides("a").is_err());
    }
}
