//! Graph's `patternedRecurrence` (`{"pattern": {...}, "range": {...}}`) and its expansion into occurrence dates.
//!
//! Pattern types: `daily`, `weekly`, `absoluteMonthly`, `relativeMonthly`, `absoluteYearly`, `relativeYearly`;
//! range types: `endDate`, `noEnd`, `numbered` (https://learn.microsoft.com/graph/api/resources/recurrencepattern,
//! …/recurrencerange). Dates are local dates in the recurrence time zone; the caller attaches the series' local
//! start time. An `absoluteMonthly`/`absoluteYearly` day past the end of a short month falls on the month's last
//! day, as Outlook schedules "day 31 of every month".

use serde_json::Value;
use time::{Date, Duration, Month, Weekday};

use super::tz::{parse_date, weekday_from_graph};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternType {
    Daily,
    Weekly,
    AbsoluteMonthly,
    RelativeMonthly,
    AbsoluteYearly,
    RelativeYearly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeekIndex {
    First,
    Second,
    Third,
    Fourth,
    Last,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pub kind: PatternType,
    pub interval: u32,
    pub days_of_week: Vec<Weekday>,
    pub day_of_month: u8,
    pub month: u8,
    pub index: WeekIndex,
    pub first_day_of_week: Weekday,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeEnd {
    EndDate(Date),
    NoEnd,
    Numbered(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recurrence {
    pub pattern: Pattern,
    pub start_date: Date,
    pub end: RangeEnd,
    pub recurrence_time_zone: Option<String>,
}

/// Why a `recurrence` object is refused; the text goes into a 400 or a world-loading error.
pub type RecurrenceError = String;

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

impl Recurrence {
    pub fn parse(v: &Value) -> Result<Recurrence, RecurrenceError> {
        let pattern = v
            .get("pattern")
            .filter(|p| p.is_object())
            .ok_or("recurrence.pattern is required")?;
        let range = v
            .get("range")
            .filter(|r| r.is_object())
            .ok_or("recurrence.range is required")?;
        let kind = match str_field(pattern, "type").ok_or("recurrence.pattern.type is required")? {
            "daily" => PatternType::Daily,
            "weekly" => PatternType::Weekly,
            "absoluteMonthly" => PatternType::AbsoluteMonthly,
            "relativeMonthly" => PatternType::RelativeMonthly,
            "absoluteYearly" => PatternType::AbsoluteYearly,
            "relativeYearly" => PatternType::RelativeYearly,
            other => return Err(format!("unknown recurrence pattern type {other:?}")),
        };
        let interval = pattern.get("interval").and_then(Value::as_u64).unwrap_or(1);
        if interval == 0 || interval > 99 {
            return Err("recurrence.pattern.interval must be between 1 and 99".into());
        }
        let days_of_week = match pattern.get("daysOfWeek") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(days)) => days
                .iter()
                .map(|d| {
                    d.as_str()
                        .and_then(weekday_from_graph)
                        .ok_or_else(|| format!("bad day of week {d}"))
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(other) => {
                return Err(format!(
                    "recurrence.pattern.daysOfWeek must be an array, not {other}"
                ));
            }
        };
        let day_of_month = pattern
            .get("dayOfMonth")
            .and_then(Value::as_u64)
            .unwrap_or(0) as u8;
        let month = pattern.get("month").and_then(Value::as_u64).unwrap_or(0) as u8;
        let index = match str_field(pattern, "index").unwrap_or("first") {
            "first" => WeekIndex::First,
            "second" => WeekIndex::Second,
            "third" => WeekIndex::Third,
            "fourth" => WeekIndex::Fourth,
            "last" => WeekIndex::Last,
            other => return Err(format!("unknown recurrence pattern index {other:?}")),
        };
        let first_day_of_week = match str_field(pattern, "firstDayOfWeek") {
            None => Weekday::Sunday,
            Some(d) => weekday_from_graph(d).ok_or_else(|| format!("bad firstDayOfWeek {d:?}"))?,
        };
        match kind {
            PatternType::Weekly | PatternType::RelativeMonthly | PatternType::RelativeYearly
                if days_of_week.is_empty() =>
            {
                return Err(
                    "recurrence.pattern.daysOfWeek is required for this pattern type".into(),
                );
            }
            PatternType::AbsoluteMonthly | PatternType::AbsoluteYearly
                if !(1..=31).contains(&day_of_month) =>
            {
                return Err("recurrence.pattern.dayOfMonth must be between 1 and 31".into());
            }
            _ => {}
        }
        if matches!(
            kind,
            PatternType::AbsoluteYearly | PatternType::RelativeYearly
        ) && !(1..=12).contains(&month)
        {
            return Err("recurrence.pattern.month must be between 1 and 12".into());
        }
        let start_date = str_field(range, "startDate")
            .and_then(parse_date)
            .ok_or("recurrence.range.startDate (YYYY-MM-DD) is required")?;
        let end = match str_field(range, "type").ok_or("recurrence.range.type is required")? {
            "endDate" => {
                RangeEnd::EndDate(str_field(range, "endDate").and_then(parse_date).ok_or(
                    "recurrence.range.endDate (YYYY-MM-DD) is required for an endDate range",
                )?)
            }
            "noEnd" => RangeEnd::NoEnd,
            "numbered" => {
                let n = range
                    .get("numberOfOccurrences")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                if n == 0 {
                    return Err("recurrence.range.numberOfOccurrences must be positive for a numbered range".into());
                }
                RangeEnd::Numbered(n.min(u64::from(u32::MAX)) as u32)
            }
            other => return Err(format!("unknown recurrence range type {other:?}")),
        };
        if let RangeEnd::EndDate(end) = end
            && end < start_date
        {
            return Err("recurrence.range.endDate is before its startDate".into());
        }
        Ok(Recurrence {
            pattern: Pattern {
                kind,
                interval: interval as u32,
                days_of_week,
                day_of_month,
                month,
                index,
                first_day_of_week,
            },
            start_date,
            end,
            recurrence_time_zone: str_field(range, "recurrenceTimeZone").map(str::to_owned),
        })
    }

    /// Occurrence dates in order, from the range start, up to and including `until` (and the range's own end).
    /// Numbered ranges count every pattern date from the start, so `until` never changes which dates exist.
    pub fn dates_until(&self, until: Date) -> Vec<Date> {
        let last = match self.end {
            RangeEnd::EndDate(end) => end.min(until),
            _ => until,
        };
        let limit = match self.end {
            RangeEnd::Numbered(n) => n as usize,
            _ => usize::MAX,
        };
        let mut out = Vec::new();
        if last < self.start_date {
            return out;
        }
        let push = |d: Date, out: &mut Vec<Date>| -> bool {
            if d < self.start_date {
                return true;
            }
            if d > last || out.len() >= limit {
                return false;
            }
            out.push(d);
            true
        };
        let p = &self.pattern;
        let interval = i64::from(p.interval);
        match p.kind {
            PatternType::Daily => {
                let mut d = self.start_date;
                while push(d, &mut out) {
                    d += Duration::days(interval);
                }
            }
            PatternType::Weekly => {
                let offset = |w: Weekday| {
                    i64::from(
                        (7 + w.number_days_from_sunday()
                            - p.first_day_of_week.number_days_from_sunday())
                            % 7,
                    )
                };
                let mut days: Vec<i64> = p.days_of_week.iter().map(|&w| offset(w)).collect();
                days.sort_unstable();
                days.dedup();
                let mut week_start =
                    self.start_date - Duration::days(offset(self.start_date.weekday()));
                'weeks: loop {
                    for &day in &days {
                        if !push(week_start + Duration::days(day), &mut out) {
                            break 'weeks;
                        }
                    }
                    week_start += Duration::weeks(interval);
                }
            }
            PatternType::AbsoluteMonthly | PatternType::RelativeMonthly => {
                let (mut year, mut month) = (self.start_date.year(), self.start_date.month());
                loop {
                    let d = match p.kind {
                        PatternType::AbsoluteMonthly => clamp_day(year, month, p.day_of_month),
                        _ => relative_day(year, month, &p.days_of_week, p.index),
                    };
                    if !push(d, &mut out) {
                        break;
                    }
                    (year, month) = add_months(year, month, p.interval);
                }
            }
            PatternType::AbsoluteYearly | PatternType::RelativeYearly => {
                let month = Month::try_from(p.month).expect("validated month");
                let mut year = self.start_date.year();
                loop {
                    let d = match p.kind {
                        PatternType::AbsoluteYearly => clamp_day(year, month, p.day_of_month),
                        _ => relative_day(year, month, &p.days_of_week, p.index),
                    };
                    if !push(d, &mut out) {
                        break;
                    }
                    year += p.interval as i32;
                }
            }
        }
        out
    }

    /// Whether `date` is an occurrence date of the series.
    pub fn has_date(&self, date: Date) -> bool {
        self.dates_until(date).last() == Some(&date)
    }
}

fn clamp_day(year: i32, month: Month, day: u8) -> Date {
    Date::from_calendar_date(year, month, day.min(month.length(year)))
        .expect("clamped day is valid")
}

fn relative_day(year: i32, month: Month, days: &[Weekday], index: WeekIndex) -> Date {
    let matching: Vec<Date> = (1..=month.length(year))
        .map(|d| Date::from_calendar_date(year, month, d).expect("valid day"))
        .filter(|d| days.contains(&d.weekday()))
        .collect();
    let i = match index {
        WeekIndex::First => 0,
        WeekIndex::Second => 1,
        WeekIndex::Third => 2,
        WeekIndex::Fourth => 3,
        WeekIndex::Last => matching.len() - 1,
    };
    matching[i.min(matching.len() - 1)]
}

fn add_months(year: i32, month: Month, n: u32) -> (i32, Month) {
    let zero_based = year * 12 + i32::from(u8::from(month)) - 1 + n as i32;
    (
        zero_based.div_euclid(12),
        Month::try_from((zero_based.rem_euclid(12) + 1) as u8).expect("valid month"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::date;

    fn rec(v: Value) -> Recurrence {
        Recurrence::parse(&v).unwrap()
    }

    #[test]
    fn weekly_on_two_days_every_other_week() {
        let r = rec(json!({
            "pattern": {"type": "weekly", "interval": 2, "daysOfWeek": ["monday", "thursday"], "firstDayOfWeek": "sunday"},
            "range": {"type": "endDate", "startDate": "2026-12-03", "endDate": "2027-01-01"}
        }));
        assert_eq!(
            r.dates_until(date!(2030 - 01 - 01)),
            vec![
                date!(2026 - 12 - 03),
                date!(2026 - 12 - 14),
                date!(2026 - 12 - 17),
                date!(2026 - 12 - 28),
                date!(2026 - 12 - 31)
            ]
        );
    }

    #[test]
    fn numbered_counts_from_the_start_whatever_the_limit() {
        let r = rec(json!({
            "pattern": {"type": "daily", "interval": 3},
            "range": {"type": "numbered", "startDate": "2026-01-30", "numberOfOccurrences": 4}
        }));
        assert_eq!(
            r.dates_until(date!(2027 - 01 - 01)),
            vec![
                date!(2026 - 01 - 30),
                date!(2026 - 02 - 02),
                date!(2026 - 02 - 05),
                date!(2026 - 02 - 08)
            ]
        );
        assert_eq!(r.dates_until(date!(2026 - 02 - 03)).len(), 2);
        assert!(r.has_date(date!(2026 - 02 - 05)));
        assert!(!r.has_date(date!(2026 - 02 - 11)));
    }

    #[test]
    fn monthly_patterns() {
        let absolute = rec(json!({
            "pattern": {"type": "absoluteMonthly", "interval": 1, "dayOfMonth": 31},
            "range": {"type": "noEnd", "startDate": "2026-01-01"}
        }));
        assert_eq!(
            absolute.dates_until(date!(2026 - 04 - 30)),
            vec![
                date!(2026 - 01 - 31),
                date!(2026 - 02 - 28),
                date!(2026 - 03 - 31),
                date!(2026 - 04 - 30)
            ]
        );
        let relative = rec(json!({
            "pattern": {"type": "relativeMonthly", "interval": 2, "daysOfWeek": ["tuesday"], "index": "last"},
            "range": {"type": "numbered", "startDate": "2026-11-01", "numberOfOccurrences": 3}
        }));
        assert_eq!(
            relative.dates_until(date!(2030 - 01 - 01)),
            vec![
                date!(2026 - 11 - 24),
                date!(2027 - 01 - 26),
                date!(2027 - 03 - 30)
            ]
        );
    }

    #[test]
    fn yearly_patterns() {
        let absolute = rec(json!({
            "pattern": {"type": "absoluteYearly", "interval": 1, "month": 2, "dayOfMonth": 29},
            "range": {"type": "numbered", "startDate": "2027-01-01", "numberOfOccurrences": 2}
        }));
        assert_eq!(
            absolute.dates_until(date!(2030 - 01 - 01)),
            vec![date!(2027 - 02 - 28), date!(2028 - 02 - 29)]
        );
        let relative = rec(json!({
            "pattern": {"type": "relativeYearly", "interval": 1, "month": 11, "daysOfWeek": ["thursday"], "index": "fourth"},
            "range": {"type": "endDate", "startDate": "2026-01-01", "endDate": "2027-12-31"}
        }));
        assert_eq!(
            relative.dates_until(date!(2030 - 01 - 01)),
            vec![date!(2026 - 11 - 26), date!(2027 - 11 - 25)]
        );
    }

    #[test]
    fn bad_recurrences_are_refused() {
        assert!(Recurrence::parse(&json!({"pattern": {"type": "weekly"}, "range": {"type": "noEnd", "startDate": "2026-01-01"}})).is_err());
        assert!(Recurrence::parse(&json!({"pattern": {"type": "daily"}, "range": {"type": "endDate", "startDate": "2026-01-01"}})).is_err());
        assert!(Recurrence::parse(&json!({"pattern": {"type": "hourly"}, "range": {"type": "noEnd", "startDate": "2026-01-01"}})).is_err());
    }
}
