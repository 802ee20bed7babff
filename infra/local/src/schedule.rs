//! EventBridge schedule expressions: `rate(...)`, 6-field `cron(...)` and (EventBridge
//! Scheduler only) `at(...)`, parsed with AWS's rules and able to say when they fire next.
//!
//! AWS's rules, as its user guides state them (EventBridge "Creating a rule that runs on a
//! schedule", Scheduler "Schedule types"):
//! - `rate(value unit)`: a positive whole number; unit `minute|minutes|hour|hours|day|days`,
//!   singular exactly when the value is 1. A rate rule first fires one period after it is
//!   created.
//! - `cron(Minutes Hours Day-of-month Month Day-of-week Year)`, in UTC: minutes 0-59, hours
//!   0-23, day-of-month 1-31 (`, - * ? / L W`), month 1-12 or JAN-DEC (`, - * /`),
//!   day-of-week 1-7 or SUN-SAT, 1 = Sunday (`, - * ? L #`), year 1970-2199 (`, - * /`).
//!   Exactly one of day-of-month and day-of-week is `?`.
//! - `at(yyyy-mm-ddThh:mm:ss)`: one time (Scheduler).

use std::fmt;
use std::time::Duration;

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// A parsed schedule expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleExpr {
    Rate { value: u64, unit: RateUnit },
    Cron(Box<Cron>),
    At(PrimitiveDateTime),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateUnit {
    Minute,
    Hour,
    Day,
}

impl RateUnit {
    fn seconds(self) -> u64 {
        match self {
            RateUnit::Minute => 60,
            RateUnit::Hour => 3600,
            RateUnit::Day => 86_400,
        }
    }
}

/// Why an expression is not one AWS accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError {
    pub expression: String,
    pub reason: String,
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid schedule expression `{}`: {}",
            self.expression, self.reason
        )
    }
}

impl std::error::Error for ScheduleError {}

/// Which service evaluates the expression: `at()` exists only in EventBridge Scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    EventBridgeRule,
    Scheduler,
}

impl ScheduleExpr {
    pub fn parse(expression: &str, dialect: Dialect) -> Result<Self, ScheduleError> {
        let err = |reason: String| ScheduleError {
            expression: expression.to_string(),
            reason,
        };
        let (kind, inner) = expression
            .split_once('(')
            .and_then(|(k, rest)| rest.strip_suffix(')').map(|inner| (k, inner)))
            .ok_or_else(|| err("expected rate(...), cron(...) or at(...)".into()))?;
        match kind {
            "rate" => parse_rate(inner).map_err(err),
            "cron" => Cron::parse(inner)
                .map(|c| ScheduleExpr::Cron(Box::new(c)))
                .map_err(err),
            "at" if dialect == Dialect::Scheduler => {
                let format = time::macros::format_description!(
                    "[year]-[month]-[day]T[hour]:[minute]:[second]"
                );
                PrimitiveDateTime::parse(inner, &format)
                    .map(ScheduleExpr::At)
                    .map_err(|e| err(format!("at() takes yyyy-mm-ddThh:mm:ss ({e})")))
            }
            "at" => Err(err(
                "at() is an EventBridge Scheduler expression (ScheduleV2), not a rule's".into(),
            )),
            other => Err(err(format!("unknown expression type `{other}`"))),
        }
    }

    /// The period of a rate expression.
    pub fn period(&self) -> Option<Duration> {
        match self {
            ScheduleExpr::Rate { value, unit } => Some(Duration::from_secs(value * unit.seconds())),
            _ => None,
        }
    }

    /// The first fire time strictly after `after`. `anchor` is when the rule was created:
    /// rates count from it. `None` when the expression never fires again.
    pub fn next_after(
        &self,
        after: OffsetDateTime,
        anchor: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        match self {
            ScheduleExpr::Rate { .. } => {
                let period = self.period()?.as_secs() as i64;
                let elapsed = (after - anchor).whole_seconds().max(0);
                let k = elapsed / period + 1;
                Some(anchor + time::Duration::seconds(k * period))
            }
            ScheduleExpr::Cron(cron) => cron.next_after(after),
            ScheduleExpr::At(at) => {
                let at = at.assume_utc();
                (at > after).then_some(at)
            }
        }
    }
}

fn parse_rate(inner: &str) -> Result<ScheduleExpr, String> {
    let mut parts = inner.split(' ');
    let (Some(value), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err("rate takes `value unit`, separated by one space".into());
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "rate value `{value}` is not a positive whole number"
        ));
    }
    let value: u64 = value
        .parse()
        .map_err(|_| format!("rate value `{value}` is too large"))?;
    if value == 0 {
        return Err("rate value must be greater than 0".into());
    }
    let (unit, singular) = match unit {
        "minute" => (RateUnit::Minute, true),
        "minutes" => (RateUnit::Minute, false),
        "hour" => (RateUnit::Hour, true),
        "hours" => (RateUnit::Hour, false),
        "day" => (RateUnit::Day, true),
        "days" => (RateUnit::Day, false),
        other => return Err(format!("unknown rate unit `{other}`")),
    };
    if singular != (value == 1) {
        return Err(format!(
            "rate unit must be {} for a value of {value}",
            if value == 1 { "singular" } else { "plural" }
        ));
    }
    Ok(ScheduleExpr::Rate { value, unit })
}

/// A 6-field AWS cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: Vec<bool>,
    hours: Vec<bool>,
    day_of_month: DayOfMonth,
    months: Vec<bool>,
    day_of_week: DayOfWeek,
    years: Vec<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DayOfMonth {
    Unspecified,
    Days(Vec<bool>),
    Last,
    /// `NW`: the weekday nearest to day N, within the month.
    NearestWeekday(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DayOfWeek {
    Unspecified,
    /// 1 = Sunday.
    Days(Vec<bool>),
    /// `NL`: the last such weekday of the month.
    Last(u8),
    /// `N#k`: the k-th such weekday of the month.
    Nth(u8, u8),
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const FIRST_YEAR: u32 = 1970;
const LAST_YEAR: u32 = 2199;

impl Cron {
    pub fn parse(inner: &str) -> Result<Self, String> {
        let fields: Vec<&str> = inner.split(' ').collect();
        if fields.len() != 6 || fields.iter().any(|f| f.is_empty()) {
            return Err(format!(
                "cron takes 6 fields separated by single spaces (Minutes Hours Day-of-month Month Day-of-week Year), got {}",
                inner.split_whitespace().count()
            ));
        }
        let minutes = parse_set(fields[0], 0, 59, &[], "minutes")?;
        let hours = parse_set(fields[1], 0, 23, &[], "hours")?;
        let months = parse_set(fields[3], 1, 12, &MONTHS, "month")?;
        let years = parse_set(fields[5], FIRST_YEAR, LAST_YEAR, &[], "year")?;
        let day_of_month = match fields[2] {
            "?" => DayOfMonth::Unspecified,
            "L" => DayOfMonth::Last,
            f if f.ends_with('W') => {
                let day = parse_number(&f[..f.len() - 1], 1, 31, &[], "day-of-month")?;
                DayOfMonth::NearestWeekday(day as u8)
            }
            f => DayOfMonth::Days(parse_set(f, 1, 31, &[], "day-of-month")?),
        };
        let day_of_week = match fields[4] {
            "?" => DayOfWeek::Unspecified,
            // Alone, `L` is the last day of the week: Saturday.
            "L" => DayOfWeek::Days((1..=7).map(|d| d == 7).collect()),
            f if f.ends_with('L') => {
                let day = parse_number(&f[..f.len() - 1], 1, 7, &WEEKDAYS, "day-of-week")?;
                DayOfWeek::Last(day as u8)
            }
            f if f.contains('#') => {
                let (day, nth) = f.split_once('#').expect("contains #");
                let day = parse_number(day, 1, 7, &WEEKDAYS, "day-of-week")?;
                let nth = parse_number(nth, 1, 5, &[], "day-of-week occurrence")?;
                DayOfWeek::Nth(day as u8, nth as u8)
            }
            f => DayOfWeek::Days(parse_set(f, 1, 7, &WEEKDAYS, "day-of-week")?),
        };
        let dom_unspecified = day_of_month == DayOfMonth::Unspecified;
        let dow_unspecified = day_of_week == DayOfWeek::Unspecified;
        if dom_unspecified == dow_unspecified {
            return Err(
                "exactly one of day-of-month and day-of-week must be `?` (AWS does not allow both or neither)"
                    .into(),
            );
        }
        Ok(Cron {
            minutes,
            hours,
            day_of_month,
            months,
            day_of_week,
            years,
        })
    }

    fn matches_day(&self, date: Date) -> bool {
        let year = date.year();
        if year < FIRST_YEAR as i32 || year > LAST_YEAR as i32 {
            return false;
        }
        if !self.years[(year as u32 - FIRST_YEAR) as usize]
            || !self.months[u8::from(date.month()) as usize - 1]
        {
            return false;
        }
        let day = date.day();
        let last = date.month().length(year);
        let dom = match &self.day_of_month {
            DayOfMonth::Unspecified => true,
            DayOfMonth::Days(set) => set[day as usize - 1],
            DayOfMonth::Last => day == last,
            DayOfMonth::NearestWeekday(target) => {
                nearest_weekday(year, date.month(), (*target).min(last)) == day
            }
        };
        let weekday = date.weekday().number_from_sunday();
        let dow = match &self.day_of_week {
            DayOfWeek::Unspecified => true,
            DayOfWeek::Days(set) => set[weekday as usize - 1],
            DayOfWeek::Last(wd) => weekday == *wd && day + 7 > last,
            DayOfWeek::Nth(wd, n) => weekday == *wd && (day - 1) / 7 + 1 == *n,
        };
        dom && dow
    }

    /// The first matching minute strictly after `after` (searched up to year 2199).
    pub fn next_after(&self, after: OffsetDateTime) -> Option<OffsetDateTime> {
        let after = after.to_offset(time::UtcOffset::UTC);
        // Whole minutes only: the next candidate is the minute after `after`'s minute.
        let start =
            after.replace_second(0).ok()?.replace_nanosecond(0).ok()? + time::Duration::minutes(1);
        let mut date = start.date();
        let mut from = Some((start.hour(), start.minute()));
        loop {
            if date.year() > LAST_YEAR as i32 {
                return None;
            }
            if self.matches_day(date) {
                let (h0, m0) = from.unwrap_or((0, 0));
                for h in h0..24 {
                    if !self.hours[h as usize] {
                        continue;
                    }
                    let m_start = if h == h0 { m0 } else { 0 };
                    for m in m_start..60 {
                        if self.minutes[m as usize] {
                            let time = Time::from_hms(h, m, 0).ok()?;
                            return Some(PrimitiveDateTime::new(date, time).assume_utc());
                        }
                    }
                }
            }
            date = date.next_day()?;
            from = None;
        }
    }
}

fn nearest_weekday(year: i32, month: Month, day: u8) -> u8 {
    let Ok(date) = Date::from_calendar_date(year, month, day) else {
        return day;
    };
    let last = month.length(year);
    match date.weekday().number_from_sunday() {
        // Saturday: Friday before, unless that leaves the month (then Monday after).
        7 => {
            if day > 1 {
                day - 1
            } else {
                day + 2
            }
        }
        // Sunday: Monday after, unless that leaves the month (then Friday before).
        1 => {
            if day < last {
                day + 1
            } else {
                day - 2
            }
        }
        _ => day,
    }
}

fn parse_number(text: &str, min: u32, max: u32, names: &[&str], what: &str) -> Result<u32, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        return Ok(min + i as u32);
    }
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what}: `{text}` is not a number"));
    }
    let n: u32 = text
        .parse()
        .map_err(|_| format!("{what}: `{text}` is out of range"))?;
    if n < min || n > max {
        return Err(format!("{what}: {n} is outside {min}-{max}"));
    }
    Ok(n)
}

/// A comma list of `*`, `N`, `A-B`, with optional `/step`, as a membership table over min..=max.
fn parse_set(
    field: &str,
    min: u32,
    max: u32,
    names: &[&str],
    what: &str,
) -> Result<Vec<bool>, String> {
    let mut set = vec![false; (max - min + 1) as usize];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(parse_number(s, 1, max.max(1), &[], what)?)),
            None => (item, None),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let a = parse_number(a, min, max, names, what)?;
            let b = parse_number(b, min, max, names, what)?;
            if a > b {
                return Err(format!("{what}: range {a}-{b} runs backwards"));
            }
            (a, b)
        } else if range == "?" || range == "L" || range.contains('#') || range.contains('W') {
            return Err(format!("{what}: `{range}` cannot appear in a list"));
        } else {
            let n = parse_number(range, min, max, names, what)?;
            // `N/step` runs from N to the end of the range.
            (n, if step.is_some() { max } else { n })
        };
        let step = step.unwrap_or(1);
        let mut v = lo;
        while v <= hi {
            set[(v - min) as usize] = true;
            v += step;
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn cron(e: &str) -> ScheduleExpr {
        ScheduleExpr::parse(e, Dialect::EventBridgeRule).unwrap()
    }

    fn bad(e: &str) -> String {
        ScheduleExpr::parse(e, Dialect::EventBridgeRule)
            .unwrap_err()
            .reason
    }

    #[test]
    fn rates_follow_aws_unit_rules() {
        assert_eq!(
            cron("rate(15 minutes)").period(),
            Some(Duration::from_secs(900))
        );
        assert_eq!(
            cron("rate(1 hour)").period(),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            cron("rate(1 day)").period(),
            Some(Duration::from_secs(86_400))
        );
        assert!(bad("rate(1 hours)").contains("singular"));
        assert!(bad("rate(5 minute)").contains("plural"));
        assert!(bad("rate(0 minutes)").contains("greater than 0"));
        assert!(bad("rate(-5 minutes)").contains("whole number"));
        assert!(bad("rate(5 weeks)").contains("unit"));
        assert!(bad("rate(5  minutes)").contains("one space"));
        assert!(bad("every(5 minutes)").contains("unknown"));
    }

    #[test]
    fn rates_fire_one_period_after_the_anchor() {
        let anchor = datetime!(2026-03-01 10:00:00 UTC);
        let r = cron("rate(15 minutes)");
        assert_eq!(
            r.next_after(anchor, anchor),
            Some(datetime!(2026-03-01 10:15:00 UTC))
        );
        assert_eq!(
            r.next_after(datetime!(2026-03-01 10:15:00 UTC), anchor),
            Some(datetime!(2026-03-01 10:30:00 UTC))
        );
        assert_eq!(
            r.next_after(datetime!(2026-03-01 10:29:59 UTC), anchor),
            Some(datetime!(2026-03-01 10:30:00 UTC))
        );
    }

    #[test]
    fn cron_needs_six_fields_and_one_question_mark() {
        assert!(bad("cron(0 8 * * ?)").contains("6 fields"));
        assert!(bad("cron(0 8 * * * *)").contains("exactly one"));
        assert!(bad("cron(0 8 ? * ? *)").contains("exactly one"));
        assert!(bad("cron(60 8 * * ? *)").contains("outside 0-59"));
        assert!(bad("cron(0 24 * * ? *)").contains("outside 0-23"));
        assert!(bad("cron(0 8 ? * 8 *)").contains("outside 1-7"));
        assert!(bad("cron(0 8 32 * ? *)").contains("outside 1-31"));
        assert!(bad("cron(0 8 1 13 ? *)").contains("outside 1-12"));
        assert!(bad("cron(0 8 1 * ? 1969)").contains("outside 1970-2199"));
        assert!(bad("cron(5-1 8 1 * ? *)").contains("backwards"));
        assert!(bad("at(2026-03-01T10:00:00)").contains("Scheduler"));
        assert!(ScheduleExpr::parse("at(2026-03-01T10:00:00)", Dialect::Scheduler).is_ok());
    }

    #[test]
    fn cron_next_fire_times() {
        let t = datetime!(2026-03-04 08:00:00 UTC); // a Wednesday
        let next = |e: &str, after| cron(e).next_after(after, after).unwrap();
        assert_eq!(
            next("cron(0 8 * * ? *)", t),
            datetime!(2026-03-05 08:00:00 UTC)
        );
        assert_eq!(
            next("cron(0/15 * * * ? *)", t),
            datetime!(2026-03-04 08:15:00 UTC)
        );
        assert_eq!(
            next(
                "cron(0 9 ? * MON-FRI *)",
                datetime!(2026-03-06 10:00:00 UTC)
            ),
            datetime!(2026-03-09 09:00:00 UTC)
        );
        assert_eq!(
            next("cron(30 2 L * ? *)", t),
            datetime!(2026-03-31 02:30:00 UTC)
        );
        // The last Friday of March 2026 is the 27th; the 2nd Monday is the 9th.
        assert_eq!(
            next("cron(0 12 ? * 6L *)", t),
            datetime!(2026-03-27 12:00:00 UTC)
        );
        assert_eq!(
            next("cron(0 12 ? * 2#2 *)", t),
            datetime!(2026-03-09 12:00:00 UTC)
        );
        // 2026-03-15 is a Sunday: the nearest weekday is Monday the 16th.
        assert_eq!(
            next("cron(0 6 15W * ? *)", t),
            datetime!(2026-03-16 06:00:00 UTC)
        );
        assert_eq!(
            next("cron(0 0 1 JAN ? 2027)", t),
            datetime!(2027-01-01 00:00:00 UTC)
        );
        assert_eq!(cron("cron(0 0 1 JAN ? 2025)").next_after(t, t), None);
        // Seconds are dropped: 08:00:30 still waits for 08:15.
        assert_eq!(
            next("cron(0/15 * * * ? *)", datetime!(2026-03-04 08:00:30 UTC)),
            datetime!(2026-03-04 08:15:00 UTC)
        );
    }
}
