//! Agent schedules: a five-field cron expression read in an IANA time zone.
//!
//! Slots are instants (ms). A wall-clock time that does not exist on a spring-forward
//! day runs at the first instant after the gap (02:30 in Europe/Berlin → 03:00); a time
//! that happens twice on a fall-back day runs once, at its first occurrence. So a daily
//! agent runs exactly once on both days (croner's rules, checked in the tests below).

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use crate::domain::Millis;
use crate::error::Error;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: Tz,
}

impl Schedule {
    /// Parses `cron` (minute hour day-of-month month day-of-week; no seconds, no year)
    /// read in `timezone`. A bad expression → `Validation` on `schedule`; an unknown
    /// zone → `Validation` on `timezone`.
    pub fn parse(cron: &str, timezone: &str) -> Result<Schedule, Error> {
        let tz = Tz::from_str(timezone.trim()).map_err(|_| {
            Error::validation(
                "timezone",
                "must be an IANA time zone such as Europe/Berlin or UTC",
            )
        })?;
        let cron = cron.trim();
        if cron.len() > 200 || cron.split_whitespace().count() != 5 {
            return Err(Error::validation(
                "schedule",
                "must be a cron expression of five fields: minute hour day-of-month month day-of-week",
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(cron)
            .map_err(|e| {
                Error::validation("schedule", format!("is not a valid cron expression: {e}"))
            })?;
        let schedule = Schedule { cron, tz };
        // An expression that never fires (`0 0 31 2 *`) is as useless as a bad one.
        if schedule.next_after(0).is_none() {
            return Err(Error::validation("schedule", "never fires"));
        }
        Ok(schedule)
    }

    /// Only validates (see [`Schedule::parse`]).
    pub fn validate_timezone(timezone: &str) -> Result<(), Error> {
        Schedule::parse("0 0 * * *", timezone).map(|_| ())
    }

    fn at(&self, ms: Millis) -> Option<DateTime<Tz>> {
        Utc.timestamp_millis_opt(ms)
            .single()
            .map(|t| t.with_timezone(&self.tz))
    }

    /// The first slot strictly after `ms`; `None` when there is none.
    pub fn next_after(&self, ms: Millis) -> Option<Millis> {
        let t = self.at(ms)?;
        self.cron
            .find_next_occurrence(&t, false)
            .ok()
            .map(|n| n.timestamp_millis())
    }

    /// The latest slot in `(after, now]`, if any: the one slot a scheduler that was down
    /// runs to catch up (never a burst of every missed slot).
    pub fn latest_at_or_before(&self, after: Millis, now: Millis) -> Option<Millis> {
        let t = self.at(now)?;
        let prev = self.cron.find_previous_occurrence(&t, true).ok()?;
        let prev = prev.timestamp_millis();
        (prev > after).then_some(prev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> Millis {
        DateTime::parse_from_rfc3339(s)
            .expect("rfc3339")
            .timestamp_millis()
    }

    #[test]
    fn daily_runs_once_across_berlin_dst_changes() {
        let s = Schedule::parse("30 2 * * *", "Europe/Berlin").expect("valid");
        // Spring forward 2026-03-29: 02:30 does not exist; it runs at 03:00 (+02:00).
        let spring = s.next_after(ms("2026-03-28T12:00:00+01:00")).expect("slot");
        assert_eq!(spring, ms("2026-03-29T03:00:00+02:00"));
        assert_eq!(s.next_after(spring), Some(ms("2026-03-30T02:30:00+02:00")));
        // Fall back 2026-10-25: 02:30 happens twice; it runs once.
        let fall = s.next_after(ms("2026-10-24T12:00:00+02:00")).expect("slot");
        assert_eq!(fall, ms("2026-10-25T02:30:00+02:00"));
        assert_eq!(s.next_after(fall), Some(ms("2026-10-26T02:30:00+01:00")));
    }

    #[test]
    fn catch_up_is_the_latest_missed_slot_only() {
        let s = Schedule::parse("0 * * * *", "UTC").expect("valid");
        let after = ms("2026-12-01T08:00:00Z");
        let now = ms("2026-12-01T11:20:00Z");
        assert_eq!(
            s.latest_at_or_before(after, now),
            Some(ms("2026-12-01T11:00:00Z"))
        );
        assert_eq!(s.latest_at_or_before(ms("2026-12-01T11:00:00Z"), now), None);
        assert_eq!(
            s.latest_at_or_before(after, ms("2026-12-01T11:00:00Z")),
            Some(ms("2026-12-01T11:00:00Z"))
        );
    }

    #[test]
    fn rejects_bad_expressions_and_zones() {
        for bad in [
            "",
            "* * * *",
            "0 0 * * * *",
            "61 * * * *",
            "0 0 31 2 *",
            "x y z a b",
        ] {
            let e = Schedule::parse(bad, "UTC").expect_err(bad);
            assert!(
                matches!(e, Error::Validation { ref field, .. } if field == "schedule"),
                "{bad}: {e}"
            );
        }
        let e = Schedule::parse("0 9 * * 1-5", "Mars/Base").expect_err("zone");
        assert!(matches!(e, Error::Validation { ref field, .. } if field == "timezone"));
        Schedule::parse("*/15 9-17 * * 1-5", "America/New_York").expect("valid");
    }
}
