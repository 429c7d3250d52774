//! Service dates: which `service_id`s run on which service date.
//!
//! GTFS rules, as [`ServiceCalendar::is_active`] applies them:
//!
//! - a `calendar.txt` row makes a service run on its weekdays (`monday`..`sunday` = 1)
//!   between `start_date` and `end_date`, both included;
//! - a `calendar_dates.txt` row with `exception_type` 1 adds that date, with 2 removes it.
//!   An added date counts even when the service has no `calendar.txt` row (feeds such as
//!   WMATA's describe every service by `calendar_dates.txt` alone);
//! - a removal wins over the weekly pattern, and also over an addition of the same date
//!   should a (contradictory) feed list both;
//! - a service the feed does not know never runs.
//!
//! A "service date" is the day a trip's schedule belongs to: a trip departing at 25:10:00
//! runs on the evening of that date, so callers ask about the date it starts from.

use std::collections::HashMap;

use gtfs_structures::{Calendar, CalendarDate, Exception};
use jiff::civil::{Date, Weekday};

/// The service calendar of one feed; immutable once built.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceCalendar {
    services: HashMap<String, Service>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Service {
    weekly: Option<Weekly>,
    /// Dates added by `calendar_dates.txt` (exception_type 1), sorted, without duplicates.
    added: Vec<Date>,
    /// Dates removed by `calendar_dates.txt` (exception_type 2), sorted, without duplicates.
    removed: Vec<Date>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Weekly {
    /// Bit `n` set: runs on the weekday whose `to_monday_zero_offset()` is `n`.
    days: u8,
    start: Date,
    end: Date,
}

impl Weekly {
    fn from_calendar(c: &Calendar) -> Self {
        let flags = [
            c.monday,
            c.tuesday,
            c.wednesday,
            c.thursday,
            c.friday,
            c.saturday,
            c.sunday,
        ];
        let days = flags
            .iter()
            .enumerate()
            .fold(0u8, |acc, (i, &on)| if on { acc | (1 << i) } else { acc });
        Weekly {
            days,
            start: c.start_date,
            end: c.end_date,
        }
    }

    fn runs_on_weekday(&self, weekday: Weekday) -> bool {
        self.days & (1 << weekday.to_monday_zero_offset()) != 0
    }

    fn covers(&self, date: Date) -> bool {
        self.start <= date && date <= self.end && self.runs_on_weekday(date.weekday())
    }
}

impl Service {
    fn is_active(&self, date: Date) -> bool {
        if self.removed.binary_search(&date).is_ok() {
            return false;
        }
        self.added.binary_search(&date).is_ok() || self.weekly.is_some_and(|w| w.covers(date))
    }

    /// The first and last dates this service actually runs, if any.
    fn range(&self) -> Option<(Date, Date)> {
        let added = || {
            self.added
                .iter()
                .copied()
                .filter(|d| self.removed.binary_search(d).is_err())
        };
        let mut first = added().next();
        let mut last = added().next_back();
        if let Some(w) = self.weekly {
            // Walk in from each end of the range to a day that runs. The walk is bounded:
            // each removed date can cost at most a week of walking.
            let limit = 7 * (self.removed.len() + 1);
            let walk = |from: Date, step: i64| {
                let mut d = from;
                for _ in 0..limit {
                    if d < w.start || d > w.end {
                        return None;
                    }
                    if self.is_active(d) {
                        return Some(d);
                    }
                    d = d.checked_add(jiff::Span::new().days(step)).ok()?;
                }
                None
            };
            if let Some(d) = walk(w.start, 1) {
                first = Some(first.map_or(d, |f| f.min(d)));
            }
            if let Some(d) = walk(w.end, -1) {
                last = Some(last.map_or(d, |l| l.max(d)));
            }
        }
        Some((first?, last?))
    }

    fn approx_bytes(&self) -> usize {
        (self.added.capacity() + self.removed.capacity()) * std::mem::size_of::<Date>()
    }
}

impl ServiceCalendar {
    /// Builds the calendar from `calendar.txt` rows and `calendar_dates.txt` rows, as
    /// gtfs-structures parses them. A second `calendar.txt` row for the same service
    /// replaces the first (gtfs-structures keeps one per `service_id` anyway).
    pub fn new(
        calendar: impl IntoIterator<Item = Calendar>,
        calendar_dates: impl IntoIterator<Item = CalendarDate>,
    ) -> Self {
        let mut services: HashMap<String, Service> = HashMap::new();
        for c in calendar {
            let weekly = Weekly::from_calendar(&c);
            services.entry(c.id).or_default().weekly = Some(weekly);
        }
        for cd in calendar_dates {
            let service = services.entry(cd.service_id).or_default();
            match cd.exception_type {
                Exception::Added => service.added.push(cd.date),
                Exception::Deleted => service.removed.push(cd.date),
            }
        }
        for service in services.values_mut() {
            for dates in [&mut service.added, &mut service.removed] {
                dates.sort_unstable();
                dates.dedup();
                dates.shrink_to_fit();
            }
        }
        services.shrink_to_fit();
        ServiceCalendar { services }
    }

    /// Whether `service_id` runs on the service date `date`. Unknown services never run.
    pub fn is_active(&self, service_id: &str, date: Date) -> bool {
        self.services
            .get(service_id)
            .is_some_and(|s| s.is_active(date))
    }

    /// Whether the feed knows `service_id` (from either file).
    pub fn contains(&self, service_id: &str) -> bool {
        self.services.contains_key(service_id)
    }

    /// The earliest and the latest date on which any service runs; `None` when none ever
    /// does (no calendar at all, or only removals and empty weekday patterns).
    pub fn service_range(&self) -> Option<(Date, Date)> {
        self.services
            .values()
            .filter_map(Service::range)
            .reduce(|(f1, l1), (f2, l2)| (f1.min(f2), l1.max(l2)))
    }

    /// Number of distinct service ids.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Rough heap size held by the calendar (map capacity, ids, exception dates).
    pub fn approx_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(String, Service)>() + 1;
        self.services.capacity() * entry
            + self
                .services
                .iter()
                .map(|(id, s)| id.capacity() + s.approx_bytes())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn weekly(id: &str, days: [bool; 7], start: Date, end: Date) -> Calendar {
        Calendar {
            id: id.to_owned(),
            monday: days[0],
            tuesday: days[1],
            wednesday: days[2],
            thursday: days[3],
            friday: days[4],
            saturday: days[5],
            sunday: days[6],
            start_date: start,
            end_date: end,
        }
    }

    fn exception(id: &str, d: Date, added: bool) -> CalendarDate {
        CalendarDate {
            service_id: id.to_owned(),
            date: d,
            exception_type: if added {
                Exception::Added
            } else {
                Exception::Deleted
            },
        }
    }

    const WEEKDAYS: [bool; 7] = [true, true, true, true, true, false, false];
    const NONE: [bool; 7] = [false; 7];

    /// 2024-01-01 is a Monday.
    fn weekday_service() -> ServiceCalendar {
        ServiceCalendar::new(
            [weekly("WK", WEEKDAYS, date(2024, 1, 1), date(2024, 1, 31))],
            [],
        )
    }

    #[test]
    fn weekday_flags_apply_within_the_range() {
        let cal = weekday_service();
        assert!(cal.is_active("WK", date(2024, 1, 1)), "Monday");
        assert!(cal.is_active("WK", date(2024, 1, 5)), "Friday");
        assert!(!cal.is_active("WK", date(2024, 1, 6)), "Saturday");
        assert!(!cal.is_active("WK", date(2024, 1, 7)), "Sunday");
    }

    #[test]
    fn start_and_end_dates_are_included_and_bound_the_service() {
        let cal = weekday_service();
        assert!(cal.is_active("WK", date(2024, 1, 1)), "start_date");
        assert!(
            cal.is_active("WK", date(2024, 1, 31)),
            "end_date (Wednesday)"
        );
        assert!(!cal.is_active("WK", date(2023, 12, 29)), "Friday before");
        assert!(!cal.is_active("WK", date(2024, 2, 1)), "Thursday after");
    }

    #[test]
    fn an_added_date_runs_outside_the_weekly_pattern() {
        let cal = ServiceCalendar::new(
            [weekly("WK", WEEKDAYS, date(2024, 1, 1), date(2024, 1, 31))],
            [
                exception("WK", date(2024, 1, 6), true),
                exception("WK", date(2024, 3, 1), true),
            ],
        );
        assert!(cal.is_active("WK", date(2024, 1, 6)), "added Saturday");
        assert!(
            cal.is_active("WK", date(2024, 3, 1)),
            "added after end_date"
        );
        assert!(!cal.is_active("WK", date(2024, 1, 13)), "other Saturday");
    }

    #[test]
    fn a_removed_date_wins_over_the_weekly_pattern() {
        let cal = ServiceCalendar::new(
            [weekly("WK", WEEKDAYS, date(2024, 1, 1), date(2024, 1, 31))],
            [exception("WK", date(2024, 1, 15), false)],
        );
        assert!(!cal.is_active("WK", date(2024, 1, 15)));
        assert!(cal.is_active("WK", date(2024, 1, 16)));
    }

    #[test]
    fn a_removed_date_wins_over_an_added_one() {
        let cal = ServiceCalendar::new(
            [],
            [
                exception("X", date(2024, 5, 1), true),
                exception("X", date(2024, 5, 1), false),
            ],
        );
        assert!(!cal.is_active("X", date(2024, 5, 1)));
    }

    #[test]
    fn calendar_dates_alone_define_a_service() {
        let cal = ServiceCalendar::new(
            [],
            [
                exception("HOLIDAY", date(2024, 12, 25), true),
                exception("HOLIDAY", date(2025, 1, 1), true),
                exception("GONE", date(2024, 12, 24), false),
            ],
        );
        assert!(cal.is_active("HOLIDAY", date(2024, 12, 25)));
        assert!(cal.is_active("HOLIDAY", date(2025, 1, 1)));
        assert!(!cal.is_active("HOLIDAY", date(2024, 12, 26)));
        assert!(!cal.is_active("GONE", date(2024, 12, 24)));
        assert!(cal.contains("GONE"));
        assert_eq!(
            cal.service_range(),
            Some((date(2024, 12, 25), date(2025, 1, 1)))
        );
    }

    #[test]
    fn unknown_services_never_run() {
        let cal = weekday_service();
        assert!(!cal.is_active("NOPE", date(2024, 1, 1)));
        assert!(!cal.contains("NOPE"));
        assert!(!ServiceCalendar::default().is_active("WK", date(2024, 1, 1)));
    }

    #[test]
    fn a_service_with_no_weekdays_runs_only_on_added_dates() {
        let cal = ServiceCalendar::new(
            [weekly("NONE", NONE, date(2024, 1, 1), date(2024, 12, 31))],
            [exception("NONE", date(2024, 7, 4), true)],
        );
        assert!(!cal.is_active("NONE", date(2024, 1, 1)));
        assert!(cal.is_active("NONE", date(2024, 7, 4)));
        assert_eq!(
            cal.service_range(),
            Some((date(2024, 7, 4), date(2024, 7, 4)))
        );
    }

    #[test]
    fn service_range_spans_the_days_that_actually_run() {
        // Weekdays from Saturday 2024-01-06 to Sunday 2024-02-04: runs Mon 8th to Fri 2nd;
        // Monday 8th removed, so the first day is Tuesday 9th.
        let cal = ServiceCalendar::new(
            [
                weekly("WK", WEEKDAYS, date(2024, 1, 6), date(2024, 2, 4)),
                weekly("EMPTY", NONE, date(2020, 1, 1), date(2030, 1, 1)),
            ],
            [
                exception("WK", date(2024, 1, 8), false),
                exception("EXTRA", date(2024, 3, 3), true),
                exception("REMOVED_ONLY", date(2019, 1, 1), false),
            ],
        );
        assert_eq!(
            cal.service_range(),
            Some((date(2024, 1, 9), date(2024, 3, 3)))
        );
        assert_eq!(
            ServiceCalendar::new(
                [weekly("WK", WEEKDAYS, date(2024, 1, 6), date(2024, 2, 4))],
                [],
            )
            .service_range(),
            Some((date(2024, 1, 8), date(2024, 2, 2)))
        );
    }

    #[test]
    fn service_range_of_nothing_is_none() {
        assert_eq!(ServiceCalendar::default().service_range(), None);
        let only_empty = ServiceCalendar::new(
            [weekly("EMPTY", NONE, date(2020, 1, 1), date(2030, 1, 1))],
            [exception("R", date(2021, 1, 1), false)],
        );
        assert_eq!(only_empty.service_range(), None);
        // A range that ends before it starts runs on no day.
        let backwards = ServiceCalendar::new(
            [weekly("B", [true; 7], date(2024, 2, 1), date(2024, 1, 1))],
            [],
        );
        assert_eq!(backwards.service_range(), None);
        assert!(!backwards.is_active("B", date(2024, 1, 15)));
    }

    #[test]
    fn duplicate_exceptions_are_harmless() {
        let cal = ServiceCalendar::new(
            [],
            [
                exception("A", date(2024, 1, 1), true),
                exception("A", date(2024, 1, 1), true),
            ],
        );
        assert!(cal.is_active("A", date(2024, 1, 1)));
        assert_eq!(cal.len(), 1);
        assert!(cal.approx_bytes() > 0);
    }
}
