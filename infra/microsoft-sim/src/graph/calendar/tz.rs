//! Time zones for calendar events: the Windows zone names Outlook uses (`"Pacific Standard Time"`), a few IANA
//! aliases, and their daylight-saving rules, plus Graph's `dateTimeTimeZone` wire form
//! (`{"dateTime":"2016-12-09T20:30:00.0000000","timeZone":"UTC"}`: local wall time with 7 fractional digits, no
//! offset).
//!
//! A full tz database is out of scope: the sim knows the zones below, with the current rules (US since 2007, EU
//! since 1996, south-eastern Australia since 2008). Event times in an unknown zone are rejected when an event is
//! loaded; an unknown `Prefer: outlook.timezone` falls back to UTC (what Graph does there is unconfirmed).

use time::{Date, Duration, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset, Weekday};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dst {
    None,
    /// Second Sunday of March 02:00 local standard time to first Sunday of November 02:00 local daylight time.
    Us,
    /// Last Sunday of March 01:00 UTC to last Sunday of October 01:00 UTC.
    Eu,
    /// First Sunday of October 02:00 local standard time to first Sunday of April 03:00 local daylight time.
    AuSouth,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Zone {
    /// The Windows name Graph reports back in `timeZone`.
    pub name: &'static str,
    aliases: &'static [&'static str],
    std_minutes: i32,
    dst: Dst,
}

static ZONES: &[Zone] = &[
    Zone {
        name: "UTC",
        aliases: &["Etc/UTC", "Etc/GMT", "Coordinated Universal Time", "Z"],
        std_minutes: 0,
        dst: Dst::None,
    },
    Zone {
        name: "Pacific Standard Time",
        aliases: &["America/Los_Angeles"],
        std_minutes: -8 * 60,
        dst: Dst::Us,
    },
    Zone {
        name: "Mountain Standard Time",
        aliases: &["America/Denver"],
        std_minutes: -7 * 60,
        dst: Dst::Us,
    },
    Zone {
        name: "Central Standard Time",
        aliases: &["America/Chicago"],
        std_minutes: -6 * 60,
        dst: Dst::Us,
    },
    Zone {
        name: "Eastern Standard Time",
        aliases: &["America/New_York"],
        std_minutes: -5 * 60,
        dst: Dst::Us,
    },
    Zone {
        name: "GMT Standard Time",
        aliases: &["Europe/London", "Europe/Dublin", "Europe/Lisbon"],
        std_minutes: 0,
        dst: Dst::Eu,
    },
    Zone {
        name: "W. Europe Standard Time",
        aliases: &[
            "Europe/Berlin",
            "Europe/Amsterdam",
            "Europe/Rome",
            "Europe/Vienna",
            "Europe/Zurich",
            "Europe/Stockholm",
        ],
        std_minutes: 60,
        dst: Dst::Eu,
    },
    Zone {
        name: "Romance Standard Time",
        aliases: &[
            "Europe/Paris",
            "Europe/Brussels",
            "Europe/Madrid",
            "Europe/Copenhagen",
        ],
        std_minutes: 60,
        dst: Dst::Eu,
    },
    Zone {
        name: "Central Europe Standard Time",
        aliases: &["Europe/Budapest", "Europe/Prague", "Europe/Belgrade"],
        std_minutes: 60,
        dst: Dst::Eu,
    },
    Zone {
        name: "FLE Standard Time",
        aliases: &["Europe/Helsinki", "Europe/Kiev", "Europe/Kyiv"],
        std_minutes: 120,
        dst: Dst::Eu,
    },
    Zone {
        name: "India Standard Time",
        aliases: &["Asia/Kolkata", "Asia/Calcutta"],
        std_minutes: 330,
        dst: Dst::None,
    },
    Zone {
        name: "Singapore Standard Time",
        aliases: &["Asia/Singapore"],
        std_minutes: 480,
        dst: Dst::None,
    },
    Zone {
        name: "Tokyo Standard Time",
        aliases: &["Asia/Tokyo"],
        std_minutes: 540,
        dst: Dst::None,
    },
    Zone {
        name: "AUS Eastern Standard Time",
        aliases: &["Australia/Sydney", "Australia/Melbourne"],
        std_minutes: 600,
        dst: Dst::AuSouth,
    },
];

/// A zone by Windows name or IANA alias, case-insensitively.
pub fn lookup(name: &str) -> Option<&'static Zone> {
    let name = name.trim();
    ZONES.iter().find(|z| {
        z.name.eq_ignore_ascii_case(name) || z.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
    })
}

pub fn utc() -> &'static Zone {
    &ZONES[0]
}

fn nth_sunday(year: i32, month: Month, n: u8) -> Date {
    let first = Date::from_calendar_date(year, month, 1).expect("valid date");
    let to_sunday = (7 - first.weekday().number_days_from_sunday()) % 7;
    first + Duration::days(i64::from(to_sunday) + 7 * i64::from(n - 1))
}

fn last_sunday(year: i32, month: Month) -> Date {
    let last = Date::from_calendar_date(year, month, month.length(year)).expect("valid date");
    last - Duration::days(i64::from(last.weekday().number_days_from_sunday()))
}

fn at(date: Date, hour: u8, offset_minutes: i32) -> OffsetDateTime {
    let local = PrimitiveDateTime::new(date, Time::from_hms(hour, 0, 0).expect("valid time"));
    local.assume_utc() - Duration::minutes(i64::from(offset_minutes))
}

impl Zone {
    fn in_dst(&self, utc: OffsetDateTime) -> bool {
        let year = utc.year();
        let std = self.std_minutes;
        match self.dst {
            Dst::None => false,
            Dst::Us => {
                let start = at(nth_sunday(year, Month::March, 2), 2, std);
                let end = at(nth_sunday(year, Month::November, 1), 2, std + 60);
                utc >= start && utc < end
            }
            Dst::Eu => {
                let start = at(last_sunday(year, Month::March), 1, 0);
                let end = at(last_sunday(year, Month::October), 1, 0);
                utc >= start && utc < end
            }
            Dst::AuSouth => {
                let end = at(nth_sunday(year, Month::April, 1), 3, std + 60);
                let start = at(nth_sunday(year, Month::October, 1), 2, std);
                utc < end || utc >= start
            }
        }
    }

    pub fn offset_at(&self, utc: OffsetDateTime) -> UtcOffset {
        let minutes = self.std_minutes + if self.in_dst(utc) { 60 } else { 0 };
        UtcOffset::from_whole_seconds(minutes * 60).expect("offset in range")
    }

    pub fn to_local(&self, utc: OffsetDateTime) -> PrimitiveDateTime {
        let local = utc.to_offset(self.offset_at(utc));
        PrimitiveDateTime::new(local.date(), local.time())
    }

    /// The instant a local wall time denotes. Ambiguous times (the repeated hour) take the earlier instant;
    /// non-existent times (the skipped hour) move forward by the gap, as Outlook does.
    pub fn to_utc(&self, local: PrimitiveDateTime) -> OffsetDateTime {
        let as_std = local.assume_utc() - Duration::minutes(i64::from(self.std_minutes));
        let as_dst = as_std - Duration::minutes(60);
        // Inside the spring-forward gap neither reading is daylight time at its own instant, and the standard
        // reading lands one hour later on the wall clock: the forward move Outlook makes.
        if self.dst != Dst::None && self.in_dst(as_dst) {
            as_dst
        } else {
            as_std
        }
    }
}

/// Graph's `dateTime` text: `2016-12-09T20:30:00.0000000`.
pub fn format_local(local: PrimitiveDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}",
        local.year(),
        u8::from(local.month()),
        local.day(),
        local.hour(),
        local.minute(),
        local.second(),
        local.nanosecond() / 100
    )
}

/// `{"dateTime": ..., "timeZone": ...}` for `utc` rendered in `zone`; `label` is the zone name echoed back
/// (the caller's spelling of a preferred zone, or the Windows name).
pub fn date_time_time_zone(utc: OffsetDateTime, zone: &Zone, label: &str) -> serde_json::Value {
    serde_json::json!({"dateTime": format_local(zone.to_local(utc)), "timeZone": label})
}

/// Graph's `DateTimeOffset` text in UTC (`createdDateTime`, `originalStart`): `2016-12-09T20:30:00Z`, with 7
/// fractional digits only when there is a fraction.
pub fn format_utc(utc: OffsetDateTime) -> String {
    let utc = utc.to_offset(UtcOffset::UTC);
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second()
    );
    match utc.nanosecond() {
        0 => format!("{base}Z"),
        n => format!("{base}.{:07}Z", n / 100),
    }
}

/// Parses a local `dateTime` (`2026-12-09T20:30:00`, optional fraction of any length). A trailing `Z` or offset,
/// which some clients send, is honoured and overrides the zone.
pub fn parse_date_time(text: &str) -> Option<LocalOrInstant> {
    let text = text.trim();
    if let Some(instant) = parse_instant(text) {
        return Some(LocalOrInstant::Instant(instant));
    }
    parse_local(text).map(LocalOrInstant::Local)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalOrInstant {
    Local(PrimitiveDateTime),
    Instant(OffsetDateTime),
}

impl LocalOrInstant {
    pub fn resolve(self, zone: &Zone) -> OffsetDateTime {
        match self {
            LocalOrInstant::Local(local) => zone.to_utc(local),
            LocalOrInstant::Instant(instant) => instant.to_offset(UtcOffset::UTC),
        }
    }
}

fn parse_local(text: &str) -> Option<PrimitiveDateTime> {
    let (date, time) = match text.split_once('T') {
        Some((d, t)) => (d, t),
        None => (text, "00:00:00"),
    };
    let date = parse_date(date)?;
    let (hms, fraction) = match time.split_once('.') {
        Some((hms, f)) => (hms, Some(f)),
        None => (time, None),
    };
    let mut parts = hms.split(':');
    let hour: u8 = parts.next()?.parse().ok()?;
    let minute: u8 = parts.next()?.parse().ok()?;
    let second: u8 = parts.next().map(str::parse).transpose().ok()?.unwrap_or(0);
    if parts.next().is_some() {
        return None;
    }
    let nanos = match fraction {
        None => 0,
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            let padded = format!("{f:0<9}");
            padded.parse::<u32>().ok()?
        }
        Some(_) => return None,
    };
    let time = Time::from_hms_nano(hour, minute, second, nanos).ok()?;
    Some(PrimitiveDateTime::new(date, time))
}

/// `YYYY-MM-DD`.
pub fn parse_date(text: &str) -> Option<Date> {
    let mut parts = text.trim().split('-');
    let year: i32 = parts.next()?.parse().ok()?;
    let month: u8 = parts.next()?.parse().ok()?;
    let day: u8 = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Date::from_calendar_date(year, Month::try_from(month).ok()?, day).ok()
}

pub fn format_date(date: Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// An instant with an explicit `Z` or `±hh:mm` offset.
pub fn parse_instant(text: &str) -> Option<OffsetDateTime> {
    let text = text.trim();
    let (local, offset) =
        if let Some(stripped) = text.strip_suffix('Z').or_else(|| text.strip_suffix('z')) {
            (stripped, UtcOffset::UTC)
        } else {
            let split = text.len().checked_sub(6)?;
            let (local, offset) = text.split_at(split);
            let sign = match offset.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = offset[1..].split_once(':')?;
            let h: i32 = h.parse().ok()?;
            let m: i32 = m.parse().ok()?;
            (
                local,
                UtcOffset::from_whole_seconds(sign * (h * 3600 + m * 60)).ok()?,
            )
        };
    if !local.contains('T') {
        return None;
    }
    let local = parse_local(local)?;
    Some(local.assume_offset(offset).to_offset(UtcOffset::UTC))
}

pub fn weekday_from_graph(name: &str) -> Option<Weekday> {
    Some(match name.to_ascii_lowercase().as_str() {
        "sunday" => Weekday::Sunday,
        "monday" => Weekday::Monday,
        "tuesday" => Weekday::Tuesday,
        "wednesday" => Weekday::Wednesday,
        "thursday" => Weekday::Thursday,
        "friday" => Weekday::Friday,
        "saturday" => Weekday::Saturday,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    #[test]
    fn pacific_switches_on_the_us_dates() {
        let pst = lookup("pacific standard time").unwrap();
        assert_eq!(
            pst.offset_at(datetime!(2026-01-15 12:00 UTC)).whole_hours(),
            -8
        );
        assert_eq!(
            pst.offset_at(datetime!(2026-07-15 12:00 UTC)).whole_hours(),
            -7
        );
        // 2026-03-08 is the second Sunday of March: 02:00 PST = 10:00 UTC.
        assert_eq!(
            pst.offset_at(datetime!(2026-03-08 09:59 UTC)).whole_hours(),
            -8
        );
        assert_eq!(
            pst.offset_at(datetime!(2026-03-08 10:00 UTC)).whole_hours(),
            -7
        );
        // 2026-11-01 is the first Sunday of November: 02:00 PDT = 09:00 UTC.
        assert_eq!(
            pst.offset_at(datetime!(2026-11-01 08:59 UTC)).whole_hours(),
            -7
        );
        assert_eq!(
            pst.offset_at(datetime!(2026-11-01 09:00 UTC)).whole_hours(),
            -8
        );
    }

    #[test]
    fn europe_switches_at_one_utc() {
        let berlin = lookup("Europe/Berlin").unwrap();
        assert_eq!(berlin.name, "W. Europe Standard Time");
        assert_eq!(last_sunday(2026, Month::March), date!(2026 - 03 - 29));
        assert_eq!(
            berlin
                .offset_at(datetime!(2026-03-29 00:59 UTC))
                .whole_hours(),
            1
        );
        assert_eq!(
            berlin
                .offset_at(datetime!(2026-03-29 01:00 UTC))
                .whole_hours(),
            2
        );
        assert_eq!(
            berlin
                .offset_at(datetime!(2026-10-25 00:59 UTC))
                .whole_hours(),
            2
        );
        assert_eq!(
            berlin
                .offset_at(datetime!(2026-10-25 01:00 UTC))
                .whole_hours(),
            1
        );
    }

    #[test]
    fn sydney_daylight_spans_the_new_year() {
        let syd = lookup("AUS Eastern Standard Time").unwrap();
        assert_eq!(
            syd.offset_at(datetime!(2026-01-10 00:00 UTC)).whole_hours(),
            11
        );
        assert_eq!(
            syd.offset_at(datetime!(2026-06-10 00:00 UTC)).whole_hours(),
            10
        );
    }

    #[test]
    fn local_round_trips_and_the_gap_moves_forward() {
        let pst = lookup("Pacific Standard Time").unwrap();
        let local = datetime!(2026-07-01 09:30);
        assert_eq!(pst.to_utc(local), datetime!(2026-07-01 16:30 UTC));
        assert_eq!(pst.to_local(datetime!(2026-07-01 16:30 UTC)), local);
        assert_eq!(
            pst.to_utc(datetime!(2026-12-01 09:30)),
            datetime!(2026-12-01 17:30 UTC)
        );
        // 02:30 does not exist on 2026-03-08; Outlook moves it to 03:30 PDT.
        assert_eq!(
            pst.to_utc(datetime!(2026-03-08 02:30)),
            datetime!(2026-03-08 10:30 UTC)
        );
        // 01:30 happens twice on 2026-11-01; the first (PDT) wins.
        assert_eq!(
            pst.to_utc(datetime!(2026-11-01 01:30)),
            datetime!(2026-11-01 08:30 UTC)
        );
    }

    #[test]
    fn wire_formats() {
        assert_eq!(
            format_local(datetime!(2016-12-09 20:30)),
            "2016-12-09T20:30:00.0000000"
        );
        assert_eq!(
            format_utc(datetime!(2016-12-09 20:30 UTC)),
            "2016-12-09T20:30:00Z"
        );
        assert_eq!(
            parse_date_time("2016-12-09T20:30:00.0000000"),
            Some(LocalOrInstant::Local(datetime!(2016-12-09 20:30)))
        );
        assert_eq!(
            parse_date_time("2019-11-08T20:00:00-08:00"),
            Some(LocalOrInstant::Instant(datetime!(2019-11-09 04:00 UTC)))
        );
        assert_eq!(
            parse_date_time("2016-12-01T00:00:00Z"),
            Some(LocalOrInstant::Instant(datetime!(2016-12-01 0:00 UTC)))
        );
        assert_eq!(parse_date_time("2016-13-01T00:00:00"), None);
    }
}
