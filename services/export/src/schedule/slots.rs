//! When a schedule runs: its slots in its own time zone, so "Mondays 08:00 Europe/Paris"
//! stays 08:00 in Paris across daylight-saving changes; what a late scheduler does with the
//! slots it missed; and the date range each slot covers. Pure functions of a rule and a
//! clock, tested as tables.

use chrono::{
    DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike, Utc,
    Weekday,
};
use chrono_tz::Tz;

/// How often, and on which day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    Weekly(Weekday),
    /// Day of month 1–31; a month without that day runs on its last day.
    Monthly(u32),
}

/// A schedule's timing: cadence, local time of day, time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub cadence: Cadence,
    pub time: NaiveTime,
    pub zone: Tz,
}

/// The instant a local time names: the earlier of a repeated one (so it runs once), and for
/// one that does not exist (skipped by a DST change) the first valid instant after the gap.
pub fn instant(zone: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    if let Some(at) = zone.from_local_datetime(&local).earliest() {
        return at.with_timezone(&Utc);
    }
    // In a gap: the first local minute that exists after it (gaps last at most a few hours).
    let start = local
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(local);
    for minutes in 1..=24 * 60 {
        let candidate = start + Duration::minutes(minutes);
        if let Some(at) = zone.from_local_datetime(&candidate).earliest() {
            return at.with_timezone(&Utc);
        }
    }
    // Unreachable for real zones; the UTC reading is a safe answer.
    Utc.from_utc_datetime(&local)
}

/// The last day of `year`-`month`.
fn last_day(year: i32, month: u32) -> u32 {
    let (y, m) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1)
        .and_then(|d| d.pred_opt())
        .map(|d| d.day())
        .unwrap_or(28)
}

/// The slot's local date in the month `year`-`month` for a monthly rule.
fn monthly_date(year: i32, month: u32, day: u32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(year, month, day.clamp(1, 31).min(last_day(year, month)))
}

impl Rule {
    /// The first slot strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> DateTime<Utc> {
        let local_today = after.with_timezone(&self.zone).date_naive();
        // Candidates from the day before (a slot's instant may fall before its local date
        // starts in UTC terms) onwards; the first strictly after `after` wins.
        match self.cadence {
            Cadence::Weekly(weekday) => {
                let mut date = local_today - Duration::days(1);
                while date.weekday() != weekday {
                    date += Duration::days(1);
                }
                loop {
                    let at = instant(self.zone, date.and_time(self.time));
                    if at > after {
                        return at;
                    }
                    date += Duration::days(7);
                }
            }
            Cadence::Monthly(day) => {
                let (mut year, mut month) = (local_today.year(), local_today.month());
                // Start a month back, for the same reason as above.
                if month == 1 {
                    year -= 1;
                    month = 12;
                } else {
                    month -= 1;
                }
                loop {
                    if let Some(date) = monthly_date(year, month, day) {
                        let at = instant(self.zone, date.and_time(self.time));
                        if at > after {
                            return at;
                        }
                    }
                    if month == 12 {
                        year += 1;
                        month = 1;
                    } else {
                        month += 1;
                    }
                }
            }
        }
    }
}

/// What a scheduler does with a schedule due at `next_run_at` when it looks at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catchup {
    /// The slot to run now: the latest one due.
    pub run: DateTime<Utc>,
    /// It is not the slot that just came (the service was down across it or more).
    pub late: bool,
    /// Older missed slots, recorded as skipped rather than run.
    pub skipped: Vec<DateTime<Utc>>,
    /// The schedule's next slot after `now`.
    pub next: DateTime<Utc>,
}

/// How late a slot may run and still count as on time (the scheduler's own tick).
pub const ON_TIME: Duration = Duration::minutes(5);

/// `None` while `next_run_at` is still ahead; otherwise one run for the latest due slot, the
/// older due slots skipped. At most `max_skipped` are listed (a schedule paused for years
/// should not write thousands of rows); the count beyond is dropped.
pub fn catch_up(
    rule: &Rule,
    next_run_at: DateTime<Utc>,
    now: DateTime<Utc>,
    max_skipped: usize,
) -> Option<Catchup> {
    if next_run_at > now {
        return None;
    }
    let mut due = vec![next_run_at];
    let mut slot = next_run_at;
    loop {
        let following = rule.next_after(slot);
        if following > now {
            break;
        }
        due.push(following);
        slot = following;
    }
    let run = *due.last().unwrap_or(&next_run_at);
    due.pop();
    let skip_from = due.len().saturating_sub(max_skipped);
    Some(Catchup {
        run,
        late: !due.is_empty() || now - run > ON_TIME,
        skipped: due.split_off(skip_from),
        next: rule.next_after(now.max(run)),
    })
}

/// Which rows a slot's export covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// The seven full local days before the slot's day.
    LastWeek,
    /// The previous calendar month, local.
    LastMonth,
    /// No lower bound.
    AllTime,
}

/// `[start, end)` of a slot's export; `start` is `None` for all time.
pub fn range(
    preset: Preset,
    slot: DateTime<Utc>,
    zone: Tz,
) -> (Option<DateTime<Utc>>, DateTime<Utc>) {
    let day = slot.with_timezone(&zone).date_naive();
    let midnight = |d: NaiveDate| instant(zone, d.and_time(NaiveTime::MIN));
    match preset {
        Preset::LastWeek => (Some(midnight(day - Duration::days(7))), midnight(day)),
        Preset::LastMonth => {
            let first = day.with_day(1).unwrap_or(day);
            let previous = (first - Duration::days(1)).with_day(1).unwrap_or(first);
            (Some(midnight(previous)), midnight(first))
        }
        Preset::AllTime => (None, slot),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::America::New_York;
    use chrono_tz::Europe::Paris;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn rule(cadence: Cadence, time: &str, zone: Tz) -> Rule {
        Rule {
            cadence,
            time: NaiveTime::parse_from_str(time, "%H:%M").unwrap(),
            zone,
        }
    }

    #[test]
    fn weekly_slots_keep_their_local_time_across_dst() {
        let mondays = rule(Cadence::Weekly(Weekday::Mon), "08:00", Paris);
        for (after, next) in [
            // Winter: UTC+1.
            ("2026-03-20T00:00:00Z", "2026-03-23T07:00:00Z"),
            // Paris springs forward on 29 March 2026: the next Monday is UTC+2.
            ("2026-03-23T07:00:00Z", "2026-03-30T06:00:00Z"),
            // And falls back on 25 October 2026.
            ("2026-10-20T00:00:00Z", "2026-10-26T07:00:00Z"),
            // Exactly at a slot: the one after.
            ("2026-03-30T06:00:00Z", "2026-04-06T06:00:00Z"),
            // A second before a slot: that slot.
            ("2026-03-30T05:59:59Z", "2026-03-30T06:00:00Z"),
        ] {
            assert_eq!(mondays.next_after(utc(after)), utc(next), "after {after}");
        }
        let ny = rule(Cadence::Weekly(Weekday::Sun), "09:30", New_York);
        // New York springs forward 8 March 2026 and falls back 1 November 2026.
        assert_eq!(
            ny.next_after(utc("2026-03-02T00:00:00Z")),
            utc("2026-03-08T13:30:00Z")
        );
        assert_eq!(
            ny.next_after(utc("2026-03-01T00:00:00Z")),
            utc("2026-03-01T14:30:00Z")
        );
        assert_eq!(
            ny.next_after(utc("2026-10-26T00:00:00Z")),
            utc("2026-11-01T14:30:00Z")
        );
        let plain = rule(Cadence::Weekly(Weekday::Fri), "00:00", chrono_tz::UTC);
        assert_eq!(
            plain.next_after(utc("2026-12-04T00:00:00Z")),
            utc("2026-12-11T00:00:00Z")
        );
        assert_eq!(
            plain.next_after(utc("2026-12-03T23:59:59Z")),
            utc("2026-12-04T00:00:00Z")
        );
    }

    #[test]
    fn a_time_skipped_by_dst_runs_at_the_next_valid_instant_and_a_repeated_one_once() {
        // 02:30 does not exist in Paris on 29 March 2026 (02:00 → 03:00): 03:00 local.
        let sunday_0230 = rule(Cadence::Weekly(Weekday::Sun), "02:30", Paris);
        assert_eq!(
            sunday_0230.next_after(utc("2026-03-28T00:00:00Z")),
            utc("2026-03-29T01:00:00Z")
        );
        // 02:30 happens twice on 25 October 2026 (03:00 → 02:00): the first, then next week.
        let first = sunday_0230.next_after(utc("2026-10-24T00:00:00Z"));
        assert_eq!(first, utc("2026-10-25T00:30:00Z"));
        assert_eq!(sunday_0230.next_after(first), utc("2026-11-01T01:30:00Z"));
        // New York: 02:30 on 8 March 2026 does not exist (02:00 → 03:00 EDT = 07:00 UTC).
        let ny = rule(Cadence::Weekly(Weekday::Sun), "02:30", New_York);
        assert_eq!(
            ny.next_after(utc("2026-03-07T00:00:00Z")),
            utc("2026-03-08T07:00:00Z")
        );
        // 02:30 exists once on 1 November 2026 (after the 02:00 → 01:00 fall back, EST);
        // 01:30 happens twice: the first (EDT) runs, and next week's is EST.
        assert_eq!(
            ny.next_after(utc("2026-10-31T00:00:00Z")),
            utc("2026-11-01T07:30:00Z")
        );
        let ny_0130 = rule(Cadence::Weekly(Weekday::Sun), "01:30", New_York);
        let first = ny_0130.next_after(utc("2026-10-31T00:00:00Z"));
        assert_eq!(first, utc("2026-11-01T05:30:00Z"));
        assert_eq!(ny_0130.next_after(first), utc("2026-11-08T06:30:00Z"));
    }

    #[test]
    fn monthly_slots_fall_back_to_the_months_last_day() {
        let the_31st = rule(Cadence::Monthly(31), "06:00", chrono_tz::UTC);
        let mut at = utc("2027-01-01T00:00:00Z");
        let mut seen = Vec::new();
        for _ in 0..5 {
            at = the_31st.next_after(at);
            seen.push(at.to_rfc3339());
        }
        assert_eq!(
            seen,
            [
                "2027-01-31T06:00:00+00:00",
                "2027-02-28T06:00:00+00:00",
                "2027-03-31T06:00:00+00:00",
                "2027-04-30T06:00:00+00:00",
                "2027-05-31T06:00:00+00:00",
            ]
        );
        // A leap year's February has its 29th.
        let the_30th = rule(Cadence::Monthly(30), "06:00", chrono_tz::UTC);
        assert_eq!(
            the_30th.next_after(utc("2028-01-30T06:00:00Z")),
            utc("2028-02-29T06:00:00Z")
        );
        assert_eq!(
            the_30th.next_after(utc("2028-02-29T06:00:00Z")),
            utc("2028-03-30T06:00:00Z")
        );
        let the_29th = rule(Cadence::Monthly(29), "06:00", chrono_tz::UTC);
        assert_eq!(
            the_29th.next_after(utc("2027-01-29T06:00:00Z")),
            utc("2027-02-28T06:00:00Z")
        );
        assert_eq!(
            the_29th.next_after(utc("2028-01-29T06:00:00Z")),
            utc("2028-02-29T06:00:00Z")
        );
        // Local time in Paris across the spring change: 1 March UTC+1, 1 April UTC+2.
        let first_paris = rule(Cadence::Monthly(1), "09:00", Paris);
        assert_eq!(
            first_paris.next_after(utc("2026-02-15T00:00:00Z")),
            utc("2026-03-01T08:00:00Z")
        );
        assert_eq!(
            first_paris.next_after(utc("2026-03-01T08:00:00Z")),
            utc("2026-04-01T07:00:00Z")
        );
        // A year end.
        assert_eq!(
            first_paris.next_after(utc("2026-12-01T08:00:00Z")),
            utc("2027-01-01T08:00:00Z")
        );
    }

    #[test]
    fn a_scheduler_that_was_down_runs_the_latest_slot_late_and_skips_the_others() {
        let daily_ish = rule(Cadence::Weekly(Weekday::Mon), "08:00", chrono_tz::UTC);
        let next = utc("2026-11-02T08:00:00Z");
        // Not due yet.
        assert_eq!(
            catch_up(&daily_ish, next, utc("2026-11-02T07:59:59Z"), 100),
            None
        );
        // On time.
        let on_time = catch_up(&daily_ish, next, utc("2026-11-02T08:00:30Z"), 100).unwrap();
        assert_eq!(on_time.run, next);
        assert!(!on_time.late);
        assert!(on_time.skipped.is_empty());
        assert_eq!(on_time.next, utc("2026-11-09T08:00:00Z"));
        // Down across two slots (2 and 9 November), back on the 12th: the 9th runs late, the
        // 2nd is skipped, the next is the 16th.
        let back = catch_up(&daily_ish, next, utc("2026-11-12T10:00:00Z"), 100).unwrap();
        assert_eq!(back.run, utc("2026-11-09T08:00:00Z"));
        assert!(back.late);
        assert_eq!(back.skipped, vec![next]);
        assert_eq!(back.next, utc("2026-11-16T08:00:00Z"));
        // One slot missed by hours: late, nothing skipped.
        let hours = catch_up(&daily_ish, next, utc("2026-11-02T20:00:00Z"), 100).unwrap();
        assert!(hours.late && hours.skipped.is_empty());
        // A year away: the skipped list is capped.
        let year = catch_up(&daily_ish, next, utc("2027-11-02T10:00:00Z"), 10).unwrap();
        assert_eq!(year.skipped.len(), 10);
        assert!(year.skipped.windows(2).all(|w| w[0] < w[1]));
        assert!(*year.skipped.last().unwrap() < year.run);
    }

    #[test]
    fn ranges_are_whole_local_days_and_months() {
        let slot = utc("2026-03-30T06:00:00Z"); // Monday 08:00 in Paris
        assert_eq!(
            range(Preset::LastWeek, slot, Paris),
            (
                Some(utc("2026-03-22T23:00:00Z")),
                utc("2026-03-29T22:00:00Z")
            )
        );
        assert_eq!(
            range(Preset::LastMonth, slot, Paris),
            (
                Some(utc("2026-01-31T23:00:00Z")),
                utc("2026-02-28T23:00:00Z")
            )
        );
        assert_eq!(
            range(
                Preset::LastMonth,
                utc("2026-01-01T08:00:00Z"),
                chrono_tz::UTC
            ),
            (
                Some(utc("2025-12-01T00:00:00Z")),
                utc("2026-01-01T00:00:00Z")
            )
        );
        assert_eq!(range(Preset::AllTime, slot, Paris), (None, slot));
    }
}
