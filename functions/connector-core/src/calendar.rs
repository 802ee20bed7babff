//! Calendar sync's domain: what calendar-sync asks Graph for, how it reads the answer, which
//! meetings it keeps, what it keeps of them, and how it plans its moving window. No HTTP and
//! no store here: the worker in `functions/calendar-sync` drives these rules.
//!
//! - **Window** ([`window_at`], [`needs_rebase`]): `calendarView/delta` fixes its date range
//!   in the state token, so the worker starts a new delta round (a full sync) over
//!   `now → now + 12 months` whenever the tracked window's end is less than 11 months ahead
//!   (roughly monthly). The previous window's meetings that are behind us are history and
//!   stay stored.
//! - **Reading** ([`parse_delta_page`]): an event delta page as Graph sends it, each item
//!   either a change ([`GraphEvent`]) or a removal. Only the fields we may keep are read:
//!   `body`, `bodyPreview` and `responseStatus` are not even deserialised.
//! - **Relevance** ([`assess`]): a meeting is imported when the organizer or an attendee
//!   matches the CRM (the mail rules, through [`MeetingRules`]), or, with the user's
//!   internal-meeting switch on, when every participant is internal and someone other than
//!   the user takes part. Everything else is discarded unseen.
//! - **What is kept** ([`to_meeting`]): ids, series and occurrence start, subject
//!   ("Private meeting" for `sensitivity: private`), UTC start/end, all-day flag, organizer,
//!   attendees with type and response (never the user's own response), online meeting
//!   provider and join URL, location, showAs, cancelled flag, webLink.
//! - **Removals** ([`removal_action`]): Graph reports a deleted event and an event that left
//!   the window (or changed outside it) alike, as `@removed: deleted`. A stored meeting that
//!   no longer overlaps the tracked window is history and is kept; one inside it is confirmed
//!   with a GET before it is deleted.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Deserializer};
use time::format_description::FormatItem;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Month, OffsetDateTime, PrimitiveDateTime};

use crate::domain::{Attendee, Connection, CrmMatch, MatchReason, MeetingActivity, SyncWindow};

/// Months a delta round covers ahead of its start.
pub const WINDOW_MONTHS: u32 = 12;
/// A tracked window whose end is less than this many months ahead is re-based.
pub const REBASE_BELOW_MONTHS: u32 = 11;
/// The sync-state cursor item of the (primary) calendar.
pub const CALENDAR_CURSOR: &str = "calendar";
/// Activity ids of meetings start with this (`event#{immutableId}`).
pub const MEETING_ID_PREFIX: &str = "event#";
/// Stored as the subject of `sensitivity: private` meetings.
pub const PRIVATE_SUBJECT: &str = "Private meeting";

/// Properties fetched when a removal is confirmed with `GET /me/events/{id}`: exactly what
/// [`GraphEvent`] reads, so neither body nor the user's response ever comes over the wire.
pub const EVENT_SELECT: &str = "id,iCalUId,seriesMasterId,originalStart,type,subject,start,end,\
isAllDay,organizer,attendees,isOnlineMeeting,onlineMeetingProvider,onlineMeeting,\
onlineMeetingUrl,location,locations,showAs,isCancelled,webLink,sensitivity";

// ---------------------------------------------------------------------------------------
// Window

/// `at` moved by whole calendar months; a day past the target month's end falls on its
/// last day (31 January + 1 month = 28/29 February).
pub fn add_months(at: OffsetDateTime, months: u32) -> OffsetDateTime {
    let zero_based = at.month() as i64 - 1 + i64::from(months);
    let year = at.year() + (zero_based.div_euclid(12)) as i32;
    let month = Month::try_from((zero_based.rem_euclid(12) + 1) as u8).unwrap_or(Month::December);
    let day = at.day().min(month.length(year));
    at.replace_day(1)
        .and_then(|t| t.replace_year(year))
        .and_then(|t| t.replace_month(month))
        .and_then(|t| t.replace_day(day))
        .unwrap_or(at)
}

/// The window of a delta round started at `now`: from `now` to twelve months later. Its
/// start doubles as the round's start: everything the round stores is stamped at or after
/// it, so it keeps full precision (the query sends whole seconds, rounded down).
pub fn window_at(now: OffsetDateTime) -> SyncWindow {
    let start = now.to_offset(time::UtcOffset::UTC);
    SyncWindow {
        start,
        end: Some(add_months(start, WINDOW_MONTHS)),
    }
}

/// Whether a round over `window` no longer covers enough of the future at `now`.
pub fn needs_rebase(window: Option<&SyncWindow>, now: OffsetDateTime) -> bool {
    match window.and_then(|window| window.end) {
        None => true,
        Some(end) => end < add_months(now, REBASE_BELOW_MONTHS),
    }
}

/// Whether `[start, end)` overlaps the window (calendarView's own rule: a meeting in
/// progress at the window's start belongs to it).
pub fn overlaps(window: &SyncWindow, start: OffsetDateTime, end: OffsetDateTime) -> bool {
    let before_end = window.end.is_none_or(|window_end| start < window_end);
    before_end && (end > window.start || start >= window.start)
}

const QUERY_TIME: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// `startDateTime=…&endDateTime=…` of `window` (whole seconds, UTC; an open window ends
/// twelve months after its start).
fn window_range(window: &SyncWindow) -> String {
    let format = |t: OffsetDateTime| {
        t.to_offset(time::UtcOffset::UTC)
            .format(QUERY_TIME)
            .unwrap_or_default()
    };
    let end = window
        .end
        .unwrap_or_else(|| add_months(window.start, WINDOW_MONTHS));
    format!(
        "startDateTime={}&endDateTime={}",
        format(window.start),
        format(end)
    )
}

/// One page of the plain calendarView over `window` (no delta: the CRM catch-up's listing),
/// limited to [`EVENT_SELECT`]: `$select` is supported on calendarView, unlike its delta
/// (https://learn.microsoft.com/graph/api/user-list-calendarview, "Optional query
/// parameters", read 2026-12-06).
pub fn view_path(window: &SyncWindow, top: u32) -> String {
    format!(
        "/me/calendarView?{}&$select={EVENT_SELECT}&$top={top}",
        window_range(window)
    )
}

/// The first request of a round: `/me/calendarView/delta` over `window` (later requests
/// follow the links Graph returns).
pub fn delta_path(window: &SyncWindow) -> String {
    format!("/me/calendarView/delta?{}", window_range(window))
}

/// `GET /me/events/{id}` limited to [`EVENT_SELECT`].
pub fn event_path(id: &str) -> String {
    let id: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
    format!("/me/events/{id}?$select={EVENT_SELECT}")
}

// ---------------------------------------------------------------------------------------
// Reading Graph

/// A calendar item Graph could not be read as.
#[derive(Debug, thiserror::Error)]
pub enum CalendarError {
    /// The page is not an event delta page (the JSON position only: no content).
    #[error("unreadable event page: {category} error at line {line}, column {column}")]
    Page {
        category: &'static str,
        line: usize,
        column: usize,
    },
    #[error("event has no {field}")]
    Missing { field: &'static str },
    /// Times are asked for in UTC; anything else would be misread.
    #[error("event {field} is in time zone {zone:?}, not UTC")]
    NotUtc { field: &'static str, zone: String },
    #[error("event {field} is not a Graph date-time")]
    BadTime { field: &'static str },
}

fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

/// `{"dateTime": "2026-12-09T20:30:00.0000000", "timeZone": "UTC"}`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DateTimeTimeZone {
    #[serde(default, deserialize_with = "null_default")]
    pub date_time: String,
    #[serde(default, deserialize_with = "null_default")]
    pub time_zone: String,
}

const GRAPH_TIME: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]");

/// Time zone names Graph may use for UTC when `outlook.timezone="UTC"` was asked for.
fn is_utc_name(zone: &str) -> bool {
    let zone = zone.trim();
    zone.is_empty()
        || [
            "UTC",
            "Etc/UTC",
            "Coordinated Universal Time",
            "tzone://Microsoft/Utc",
        ]
        .iter()
        .any(|name| zone.eq_ignore_ascii_case(name))
}

impl DateTimeTimeZone {
    /// The instant, when the value is in UTC (as requested with `Prefer: outlook.timezone`).
    pub fn to_utc(&self, field: &'static str) -> Result<OffsetDateTime, CalendarError> {
        if !is_utc_name(&self.time_zone) {
            return Err(CalendarError::NotUtc {
                field,
                zone: self.time_zone.chars().take(64).collect(),
            });
        }
        let text = self.date_time.trim().trim_end_matches('Z');
        PrimitiveDateTime::parse(text, GRAPH_TIME)
            .map(PrimitiveDateTime::assume_utc)
            .map_err(|_| CalendarError::BadTime { field })
    }
}

/// `{"name": "...", "address": "..."}`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
pub struct EmailAddress {
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub address: String,
}

#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Recipient {
    #[serde(default, deserialize_with = "null_default")]
    pub email_address: EmailAddress,
}

#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
pub struct ResponseStatus {
    #[serde(default)]
    pub response: Option<String>,
}

#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GraphAttendee {
    /// `required | optional | resource`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub status: ResponseStatus,
    #[serde(default, deserialize_with = "null_default")]
    pub email_address: EmailAddress,
}

#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OnlineMeeting {
    #[serde(default)]
    pub join_url: Option<String>,
}

#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    #[serde(default)]
    pub display_name: Option<String>,
}

/// An event's body (`itemBody`). Read only to find Explicit Consent Mode's placeholder
/// (`domain::meeting_consent`), in memory: never stored, logged or compared elsewhere.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ItemBody {
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub content: String,
}

/// A changed (or new) event as calendarView delta reports it, limited to what may be kept,
/// and the body, which is never kept (see [`ItemBody`]): [`to_meeting`] does not read it.
/// There is deliberately no `bodyPreview` or `responseStatus` field.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GraphEvent {
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    #[serde(default, rename = "iCalUId")]
    pub ical_uid: Option<String>,
    #[serde(default)]
    pub series_master_id: Option<String>,
    /// DateTimeOffset (`2026-12-09T17:00:00Z`) of an occurrence or exception.
    #[serde(default)]
    pub original_start: Option<String>,
    /// `singleInstance | occurrence | exception | seriesMaster`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub start: Option<DateTimeTimeZone>,
    #[serde(default)]
    pub end: Option<DateTimeTimeZone>,
    #[serde(default, deserialize_with = "null_default")]
    pub is_all_day: bool,
    #[serde(default)]
    pub organizer: Option<Recipient>,
    #[serde(default, deserialize_with = "null_default")]
    pub attendees: Vec<GraphAttendee>,
    #[serde(default, deserialize_with = "null_default")]
    pub is_online_meeting: bool,
    #[serde(default)]
    pub online_meeting_provider: Option<String>,
    #[serde(default)]
    pub online_meeting: Option<OnlineMeeting>,
    /// Deprecated by Graph, still filled for some providers.
    #[serde(default)]
    pub online_meeting_url: Option<String>,
    #[serde(default)]
    pub location: Option<Location>,
    #[serde(default, deserialize_with = "null_default")]
    pub locations: Vec<Location>,
    #[serde(default)]
    pub show_as: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub is_cancelled: bool,
    #[serde(default)]
    pub web_link: Option<String>,
    /// `normal | personal | private | confidential` (v1.0 has no `isPrivate`).
    #[serde(default)]
    pub sensitivity: Option<String>,
    /// Whether the calendar's owner organizes it ("Set to true if the calendar owner … is
    /// the organizer of the event … This also applies if a delegate organized the event on
    /// behalf of the owner", resources/event, read 2026-12-06); absent: told by the
    /// organizer's address.
    #[serde(default)]
    pub is_organizer: Option<bool>,
    /// As delta delivers it (`conformance/calendar/calendarview-delta-page-last.json`).
    #[serde(default)]
    pub body: Option<ItemBody>,
    /// The version Graph reports (`@odata.etag`, on every event of the delta examples in
    /// `conformance/calendar/`): an update sends it back as `If-Match`.
    #[serde(default, rename = "@odata.etag")]
    pub etag: Option<String>,
}

/// Neither subject nor participants: events of discarded meetings must never reach a log.
impl fmt::Debug for GraphEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphEvent")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl GraphEvent {
    pub fn is_private(&self) -> bool {
        self.sensitivity
            .as_deref()
            .is_some_and(|sensitivity| sensitivity.trim().eq_ignore_ascii_case("private"))
    }

    pub fn is_series_master(&self) -> bool {
        self.kind
            .as_deref()
            .is_some_and(|kind| kind.eq_ignore_ascii_case("seriesMaster"))
    }

    /// The organizer's address, trimmed, when there is one.
    pub fn organizer_address(&self) -> Option<&str> {
        self.organizer
            .as_ref()
            .map(|organizer| organizer.email_address.address.trim())
            .filter(|address| !address.is_empty())
    }

    /// Every participant's address (organizer first, then attendees), trimmed, non-empty.
    pub fn participants(&self) -> impl Iterator<Item = &str> {
        self.organizer_address().into_iter().chain(
            self.attendees
                .iter()
                .map(|attendee| attendee.email_address.address.trim())
                .filter(|address| !address.is_empty()),
        )
    }

    pub fn start_utc(&self) -> Result<OffsetDateTime, CalendarError> {
        self.start
            .as_ref()
            .ok_or(CalendarError::Missing { field: "start" })?
            .to_utc("start")
    }

    pub fn end_utc(&self) -> Result<OffsetDateTime, CalendarError> {
        self.end
            .as_ref()
            .ok_or(CalendarError::Missing { field: "end" })?
            .to_utc("end")
    }
}

/// One entry of a delta page.
#[derive(Debug)]
pub enum DeltaItem {
    /// `@removed`: deleted, or out of the window, or changed outside it (Graph does not say which).
    Removed {
        id: String,
    },
    Changed(Box<GraphEvent>),
}

impl DeltaItem {
    pub fn id(&self) -> &str {
        match self {
            DeltaItem::Removed { id } => id,
            DeltaItem::Changed(event) => &event.id,
        }
    }
}

#[derive(Deserialize)]
struct RawItem {
    #[serde(rename = "@removed", default)]
    removed: Option<serde::de::IgnoredAny>,
    #[serde(flatten)]
    event: GraphEvent,
}

#[derive(Deserialize)]
struct RawPage {
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink", default)]
    delta_link: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    value: Vec<RawItem>,
}

/// A page of `calendarView/delta`.
#[derive(Debug)]
pub struct DeltaPage {
    pub items: Vec<DeltaItem>,
    /// More pages in this round.
    pub next_link: Option<String>,
    /// The round is over; the next round starts here.
    pub delta_link: Option<String>,
}

fn page_error(error: &serde_json::Error) -> CalendarError {
    CalendarError::Page {
        category: match error.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "eof",
        },
        line: error.line(),
        column: error.column(),
    }
}

/// Reads one delta page. Items without an id are dropped (nothing could be done with them).
pub fn parse_delta_page(body: &[u8]) -> Result<DeltaPage, CalendarError> {
    let raw: RawPage = serde_json::from_slice(body).map_err(|error| page_error(&error))?;
    let items = raw
        .value
        .into_iter()
        .filter(|item| !item.event.id.is_empty())
        .map(|item| match item.removed {
            Some(_) => DeltaItem::Removed { id: item.event.id },
            None => DeltaItem::Changed(Box::new(item.event)),
        })
        .collect();
    Ok(DeltaPage {
        items,
        next_link: raw.next_link,
        delta_link: raw.delta_link,
    })
}

/// Reads one event (`GET /me/events/{id}`).
pub fn parse_event(body: &[u8]) -> Result<GraphEvent, CalendarError> {
    serde_json::from_slice(body).map_err(|error| page_error(&error))
}

// ---------------------------------------------------------------------------------------
// Relevance

/// The CRM rules as calendar-sync needs them (mail-sync's matcher implements them).
pub trait MeetingRules {
    /// Every CRM match among the participants (empty: none). Colleagues and the user
    /// never match.
    fn crm_matches(&self, participants: &[&str]) -> Vec<CrmMatch>;
    /// Whether the address is the user's or a colleague's (the tenant's verified domains).
    fn is_internal(&self, address: &str) -> bool;
}

/// The mail rules, unchanged: participants are the organizer and the attendees.
impl MeetingRules for crate::matching::CrmMatcher {
    fn crm_matches(&self, participants: &[&str]) -> Vec<CrmMatch> {
        self.explain(participants.iter().copied())
    }

    fn is_internal(&self, address: &str) -> bool {
        crate::matching::CrmMatcher::is_internal(self, address)
    }
}

/// The connected user's own addresses (UPN, primary SMTP), lower-cased.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnAddresses(BTreeSet<String>);

impl OwnAddresses {
    pub fn new<'a>(addresses: impl IntoIterator<Item = &'a str>) -> Self {
        Self(
            addresses
                .into_iter()
                .map(|address| address.trim().to_lowercase())
                .filter(|address| address.contains('@'))
                .collect(),
        )
    }

    pub fn of(connection: &Connection) -> Self {
        Self::new(std::iter::once(connection.upn.as_str()).chain(connection.mail.as_deref()))
    }

    pub fn contains(&self, address: &str) -> bool {
        let address = address.trim();
        self.0.iter().any(|own| own.eq_ignore_ascii_case(address))
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

/// A fingerprint of what decides relevance besides the CRM: what is internal (the tenant's
/// verified domains, the user's addresses) and the internal-meeting switch. Stored with the
/// calendar cursor: when it changes, meetings that did not change may have become relevant
/// (or stopped being), so a new initial round runs. A CRM change does not start one: the
/// catch-up (`crm_catchup`) re-assesses only the meetings its changes involve.
pub fn rules_fingerprint<'a>(
    verified_domains: impl IntoIterator<Item = &'a str>,
    own: &OwnAddresses,
    import_internal: bool,
) -> String {
    use sha2::{Digest, Sha256};
    let domains: BTreeSet<String> = verified_domains
        .into_iter()
        .map(|domain| domain.trim().to_lowercase())
        .collect();
    let mut hash = Sha256::new();
    hash.update(b"rules");
    for domain in &domains {
        hash.update(b"\0domain\0");
        hash.update(domain.as_bytes());
    }
    for address in own.iter() {
        hash.update(b"\0own\0");
        hash.update(address.as_bytes());
    }
    hash.update(if import_internal {
        b"\0internal:on".as_slice()
    } else {
        b"\0internal:off".as_slice()
    });
    hex::encode(&hash.finalize()[..16])
}

/// Why a meeting is imported, with what is stored as its matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Relevance {
    /// The organizer or an attendee matches the CRM.
    Crm(Vec<CrmMatch>),
    /// Internal-only meeting, imported because the user switched internal meetings on.
    Internal(Vec<CrmMatch>),
    /// Discarded unseen.
    Irrelevant,
}

impl Relevance {
    /// The matches to store, or `None` to discard the meeting.
    pub fn into_matches(self) -> Option<Vec<CrmMatch>> {
        match self {
            Relevance::Crm(matches) | Relevance::Internal(matches) => Some(matches),
            Relevance::Irrelevant => None,
        }
    }
}

/// A room or equipment (`type: resource`), not a person.
pub fn is_resource(attendee: &GraphAttendee) -> bool {
    attendee
        .kind
        .as_deref()
        .is_some_and(|kind| kind.eq_ignore_ascii_case("resource"))
}

/// Whether the meeting is imported, and why. Series masters never are (calendarView
/// reports occurrences; a master has no place in the window of its own).
///
/// Internal rule: with `import_internal`, a meeting is imported when every participant
/// (organizer and attendees, rooms included) is internal, and at least one participant
/// other than the user is a person (not a room or equipment): the user's own appointments
/// are not meetings.
pub fn assess(
    event: &GraphEvent,
    rules: &dyn MeetingRules,
    own: &OwnAddresses,
    import_internal: bool,
) -> Relevance {
    if event.is_series_master() {
        return Relevance::Irrelevant;
    }
    let participants: Vec<&str> = event.participants().collect();
    let matches = rules.crm_matches(&participants);
    if !matches.is_empty() {
        return Relevance::Crm(matches);
    }
    if !import_internal || participants.is_empty() {
        return Relevance::Irrelevant;
    }
    if !participants
        .iter()
        .all(|address| rules.is_internal(address))
    {
        return Relevance::Irrelevant;
    }
    let organizer_is_other = event
        .organizer_address()
        .is_some_and(|address| !own.contains(address));
    let other_person = organizer_is_other
        || event.attendees.iter().any(|attendee| {
            let address = attendee.email_address.address.trim();
            !address.is_empty() && !own.contains(address) && !is_resource(attendee)
        });
    if !other_person {
        return Relevance::Irrelevant;
    }
    let mut domains = BTreeSet::new();
    for address in &participants {
        if let Some((_, domain)) = address.rsplit_once('@') {
            domains.insert(domain.to_lowercase());
        }
    }
    let participant = event
        .organizer_address()
        .unwrap_or(participants[0])
        .to_lowercase();
    Relevance::Internal(
        domains
            .into_iter()
            .map(|domain| CrmMatch {
                participant: participant.clone(),
                reason: MatchReason::InternalMeeting,
                record_kind: None,
                record_id: None,
                matched_on: domain,
            })
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------
// What is kept

fn non_empty(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
}

/// The stored form of a relevant event, with the privacy rules applied: no body, no
/// `bodyPreview`, no response of the user's own (their attendee entry keeps no response),
/// and no subject for private meetings.
pub fn to_meeting(
    event: &GraphEvent,
    own: &OwnAddresses,
) -> Result<MeetingActivity, CalendarError> {
    let start = event.start_utc()?;
    let end = event.end_utc()?;
    let occurrence_start = match event.original_start.as_deref().map(str::trim) {
        Some(text) if !text.is_empty() => Some(OffsetDateTime::parse(text, &Rfc3339).map_err(
            |_| CalendarError::BadTime {
                field: "originalStart",
            },
        )?),
        _ => event.series_master_id.as_ref().map(|_| start),
    };
    let subject = if event.is_private() {
        PRIVATE_SUBJECT.to_owned()
    } else {
        event.subject.clone().unwrap_or_default()
    };
    let organizer = event.organizer.as_ref().and_then(|organizer| {
        let address = organizer.email_address.address.trim();
        (!address.is_empty()).then(|| Attendee {
            address: address.to_lowercase(),
            name: non_empty(Some(&organizer.email_address.name)),
            attendee_type: None,
            response: None,
        })
    });
    let attendees = event
        .attendees
        .iter()
        .filter(|attendee| !attendee.email_address.address.trim().is_empty())
        .map(|attendee| {
            let address = attendee.email_address.address.trim();
            Attendee {
                address: address.to_lowercase(),
                name: non_empty(Some(&attendee.email_address.name)),
                attendee_type: non_empty(attendee.kind.as_deref()),
                response: if own.contains(address) {
                    None
                } else {
                    non_empty(attendee.status.response.as_deref())
                },
            }
        })
        .collect();
    let join_url = event
        .online_meeting
        .as_ref()
        .and_then(|meeting| non_empty(meeting.join_url.as_deref()))
        .or_else(|| non_empty(event.online_meeting_url.as_deref()));
    let online_meeting_provider = non_empty(event.online_meeting_provider.as_deref())
        .filter(|provider| !provider.eq_ignore_ascii_case("unknown"));
    let location = event
        .location
        .as_ref()
        .and_then(|location| non_empty(location.display_name.as_deref()))
        .or_else(|| {
            event
                .locations
                .iter()
                .find_map(|location| non_empty(location.display_name.as_deref()))
        });
    Ok(MeetingActivity {
        immutable_id: event.id.clone(),
        ical_uid: non_empty(event.ical_uid.as_deref()),
        series_master_id: non_empty(event.series_master_id.as_deref()),
        occurrence_start,
        subject,
        start,
        end,
        is_all_day: event.is_all_day,
        organizer,
        attendees,
        online_meeting_provider,
        join_url,
        location,
        show_as: non_empty(event.show_as.as_deref()),
        is_cancelled: event.is_cancelled,
        web_link: non_empty(event.web_link.as_deref()),
    })
}

// ---------------------------------------------------------------------------------------
// Removals

/// What to do with a stored meeting Graph reported `@removed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemovalAction {
    /// Outside the tracked window (history behind us, or beyond the window): Graph reports
    /// such meetings when they change or leave the window; they are not deletions.
    Keep,
    /// Inside the window: deleted or moved out of it; a GET tells which.
    Confirm,
}

/// Decides by the stored meeting's time against the window of the round that reported it.
pub fn removal_action(stored: &MeetingActivity, window: &SyncWindow) -> RemovalAction {
    if overlaps(window, stored.start, stored.end) {
        RemovalAction::Confirm
    } else {
        RemovalAction::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    /// Rules over fixed sets: `acme.com` addresses match the CRM, `contoso.com` is internal.
    struct Rules;

    impl MeetingRules for Rules {
        fn crm_matches(&self, participants: &[&str]) -> Vec<CrmMatch> {
            participants
                .iter()
                .map(|p| p.to_lowercase())
                .filter(|p| p.ends_with("@acme.com"))
                .map(|p| CrmMatch {
                    participant: p.clone(),
                    reason: MatchReason::AccountDomain,
                    record_kind: None,
                    record_id: Some("001A".into()),
                    matched_on: "acme.com".into(),
                })
                .collect()
        }

        fn is_internal(&self, address: &str) -> bool {
            address.to_lowercase().ends_with("@contoso.com")
        }
    }

    fn own() -> OwnAddresses {
        OwnAddresses::new([
            "Adele@contoso.com",
            "adele@contoso.onmicrosoft.com",
            "no-at",
        ])
    }

    fn event(value: serde_json::Value) -> GraphEvent {
        serde_json::from_value(value).expect("an event")
    }

    fn person(address: &str, response: &str) -> serde_json::Value {
        json!({"type": "required", "status": {"response": response, "time": "2026-11-20T10:00:00Z"},
               "emailAddress": {"name": "Someone", "address": address}})
    }

    fn utc(text: &str) -> serde_json::Value {
        json!({"dateTime": text, "timeZone": "UTC"})
    }

    #[test]
    fn months_are_calendar_months() {
        assert_eq!(
            add_months(datetime!(2026-01-31 10:00 UTC), 1),
            datetime!(2026-02-28 10:00 UTC)
        );
        assert_eq!(
            add_months(datetime!(2027-11-30 0:00 UTC), 3),
            datetime!(2028-02-29 0:00 UTC)
        );
        assert_eq!(
            add_months(datetime!(2026-11-21 23:18:16 UTC), 12),
            datetime!(2027-11-21 23:18:16 UTC)
        );
        assert_eq!(
            add_months(datetime!(2026-05-15 0:00 UTC), 0),
            datetime!(2026-05-15 0:00 UTC)
        );
    }

    #[test]
    fn windows_rebase_when_less_than_eleven_months_are_covered() {
        let t0 = datetime!(2026-11-21 23:18:16.75 UTC);
        let window = window_at(t0);
        assert_eq!(window.start, t0, "the round's start, exactly");
        assert_eq!(window.end, Some(datetime!(2027-11-21 23:18:16.75 UTC)));
        assert_eq!(
            delta_path(&window),
            "/me/calendarView/delta?startDateTime=2026-11-21T23:18:16Z&endDateTime=2027-11-21T23:18:16Z"
        );
        assert!(!needs_rebase(Some(&window), t0));
        assert!(!needs_rebase(Some(&window), t0 + time::Duration::days(29)));
        assert!(needs_rebase(Some(&window), t0 + time::Duration::days(40)));
        assert!(needs_rebase(None, t0));
        assert!(needs_rebase(
            Some(&SyncWindow {
                start: t0,
                end: None
            }),
            t0
        ));
    }

    #[test]
    fn overlap_follows_calendar_view() {
        let window = SyncWindow {
            start: datetime!(2026-12-01 0:00 UTC),
            end: Some(datetime!(2027-01-01 0:00 UTC)),
        };
        let inside = |s, e| overlaps(&window, s, e);
        assert!(inside(
            datetime!(2026-12-05 9:00 UTC),
            datetime!(2026-12-05 10:00 UTC)
        ));
        assert!(inside(
            datetime!(2026-11-30 23:30 UTC),
            datetime!(2026-12-01 0:30 UTC)
        ));
        assert!(!inside(
            datetime!(2026-11-30 9:00 UTC),
            datetime!(2026-11-30 10:00 UTC)
        ));
        assert!(!inside(
            datetime!(2027-01-01 0:00 UTC),
            datetime!(2027-01-01 1:00 UTC)
        ));
        assert!(inside(
            datetime!(2026-12-01 0:00 UTC),
            datetime!(2026-12-01 0:00 UTC)
        ));
    }

    #[test]
    fn delta_pages_read_changes_and_removals_without_bodies() {
        let page = json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(event)",
            "@odata.nextLink": "https://graph.microsoft.com/v1.0/me/calendarView/delta?$skiptoken=abc",
            "value": [
                {"@odata.type": "#microsoft.graph.event", "id": "AAkALgAA1", "subject": "Renewal",
                 "body": {"contentType": "html", "content": "<p>secret notes</p>"}, "bodyPreview": "secret notes",
                 "responseStatus": {"response": "accepted", "time": "2026-11-20T10:00:00Z"},
                 "start": utc("2026-12-09T20:30:00.0000000"), "end": utc("2026-12-09T21:00:00.0000000"),
                 "attendees": null, "onlineMeeting": null, "isAllDay": null, "location": null},
                {"@odata.type": "#microsoft.graph.event", "id": "AAkALgAA2", "@removed": {"reason": "deleted"}},
                {"@odata.type": "#microsoft.graph.event", "@removed": {"reason": "deleted"}}
            ]
        });
        let page = parse_delta_page(page.to_string().as_bytes()).expect("a page");
        assert_eq!(page.items.len(), 2, "the item without an id is dropped");
        assert!(page.next_link.is_some() && page.delta_link.is_none());
        let DeltaItem::Changed(changed) = &page.items[0] else {
            panic!("a change first");
        };
        assert_eq!(changed.subject.as_deref(), Some("Renewal"));
        assert!(changed.attendees.is_empty() && !changed.is_all_day);
        assert_eq!(
            changed.start_utc().expect("utc"),
            datetime!(2026-12-09 20:30 UTC)
        );
        assert!(matches!(&page.items[1], DeltaItem::Removed { id } if id == "AAkALgAA2"));
        let debug = format!("{changed:?}");
        assert!(
            !debug.contains("Renewal") && !debug.contains("secret"),
            "{debug}"
        );

        let last = parse_delta_page(
            br#"{"@odata.deltaLink":"https://graph.microsoft.com/v1.0/me/calendarView/delta?$deltatoken=x","value":[]}"#,
        )
        .expect("a last page");
        assert!(last.items.is_empty() && last.delta_link.is_some());
        let error = parse_delta_page(b"{\"value\": [1").expect_err("truncated");
        assert!(error.to_string().contains("line 1"), "{error}");
    }

    #[test]
    fn times_must_be_utc() {
        let local = DateTimeTimeZone {
            date_time: "2026-12-09T09:00:00.0000000".into(),
            time_zone: "Pacific Standard Time".into(),
        };
        assert!(matches!(
            local.to_utc("start"),
            Err(CalendarError::NotUtc { .. })
        ));
        let whole = DateTimeTimeZone {
            date_time: "2026-12-09T09:00:00".into(),
            time_zone: "UTC".into(),
        };
        assert_eq!(
            whole.to_utc("start").expect("utc"),
            datetime!(2026-12-09 9:00 UTC)
        );
        let bad = DateTimeTimeZone {
            date_time: "yesterday".into(),
            time_zone: "UTC".into(),
        };
        assert!(matches!(
            bad.to_utc("end"),
            Err(CalendarError::BadTime { field: "end" })
        ));
    }

    #[test]
    fn crm_meetings_are_imported_by_organizer_or_attendee() {
        let by_attendee = event(json!({
            "id": "1", "organizer": {"emailAddress": {"name": "Adele", "address": "adele@contoso.com"}},
            "attendees": [person("jane@ACME.com", "accepted")]
        }));
        let Relevance::Crm(matches) = assess(&by_attendee, &Rules, &own(), false) else {
            panic!("a CRM meeting");
        };
        assert_eq!(matches[0].participant, "jane@acme.com");
        let by_organizer = event(json!({
            "id": "2", "organizer": {"emailAddress": {"name": "Jane", "address": "jane@acme.com"}},
            "attendees": [person("adele@contoso.com", "accepted")]
        }));
        assert!(matches!(
            assess(&by_organizer, &Rules, &own(), false),
            Relevance::Crm(_)
        ));
        let external = event(json!({
            "id": "3", "organizer": {"emailAddress": {"name": "X", "address": "x@other.org"}},
            "attendees": [person("adele@contoso.com", "accepted")]
        }));
        assert_eq!(
            assess(&external, &Rules, &own(), true),
            Relevance::Irrelevant
        );
    }

    #[test]
    fn internal_meetings_need_the_switch_and_another_person() {
        let internal = event(json!({
            "id": "1", "organizer": {"emailAddress": {"name": "Adele", "address": "adele@contoso.com"}},
            "attendees": [person("ben@contoso.com", "accepted"),
                          {"type": "resource", "emailAddress": {"name": "Room", "address": "room1@contoso.com"}}]
        }));
        assert_eq!(
            assess(&internal, &Rules, &own(), false),
            Relevance::Irrelevant
        );
        let Relevance::Internal(matches) = assess(&internal, &Rules, &own(), true) else {
            panic!("an internal meeting");
        };
        assert_eq!(matches.len(), 1);
        assert_eq!(matches[0].reason, MatchReason::InternalMeeting);
        assert_eq!(matches[0].matched_on, "contoso.com");
        assert_eq!(matches[0].participant, "adele@contoso.com");

        let alone_with_a_room = event(json!({
            "id": "2", "organizer": {"emailAddress": {"name": "Adele", "address": "adele@contoso.com"}},
            "attendees": [{"type": "resource", "emailAddress": {"name": "Room", "address": "room1@contoso.com"}}]
        }));
        assert_eq!(
            assess(&alone_with_a_room, &Rules, &own(), true),
            Relevance::Irrelevant
        );
        let own_appointment = event(json!({
            "id": "3", "organizer": {"emailAddress": {"name": "Adele", "address": "ADELE@contoso.com"}}
        }));
        assert_eq!(
            assess(&own_appointment, &Rules, &own(), true),
            Relevance::Irrelevant
        );
        let mixed = event(json!({
            "id": "4", "organizer": {"emailAddress": {"name": "Ben", "address": "ben@contoso.com"}},
            "attendees": [person("friend@example.org", "none")]
        }));
        assert_eq!(assess(&mixed, &Rules, &own(), true), Relevance::Irrelevant);
        let master = event(json!({
            "id": "5", "type": "seriesMaster",
            "organizer": {"emailAddress": {"name": "Jane", "address": "jane@acme.com"}}
        }));
        assert_eq!(assess(&master, &Rules, &own(), true), Relevance::Irrelevant);
    }

    #[test]
    fn stored_meetings_keep_what_the_issue_lists_and_nothing_private() {
        let source = event(json!({
            "id": "AAkALgAAocc", "iCalUId": "040000008200E0", "seriesMasterId": "AAkALgAAmaster",
            "originalStart": "2026-12-09T17:00:00Z", "type": "exception", "subject": "Board prep",
            "sensitivity": "private", "body": {"contentType": "text", "content": "my notes"},
            "start": utc("2026-12-10T18:00:00.0000000"), "end": utc("2026-12-10T19:00:00.0000000"),
            "isAllDay": false,
            "organizer": {"emailAddress": {"name": "Jane Doe", "address": " Jane@Acme.com "}},
            "attendees": [person("adele@contoso.com", "accepted"), person("bob@acme.com", "tentativelyAccepted"),
                          {"type": "optional", "status": null, "emailAddress": {"name": "", "address": "carl@acme.com"}},
                          {"type": "required", "emailAddress": {"name": "Nobody", "address": ""}}],
            "isOnlineMeeting": true, "onlineMeetingProvider": "teamsForBusiness",
            "onlineMeeting": {"joinUrl": "https://teams.microsoft.com/l/meetup-join/abc"},
            "location": {"displayName": ""}, "locations": [{"displayName": "Room 4"}],
            "showAs": "busy", "isCancelled": true, "webLink": "https://outlook.office365.com/owa/?itemid=x"
        }));
        let meeting = to_meeting(&source, &own()).expect("a meeting");
        assert_eq!(meeting.subject, PRIVATE_SUBJECT);
        assert_eq!(meeting.immutable_id, "AAkALgAAocc");
        assert_eq!(meeting.ical_uid.as_deref(), Some("040000008200E0"));
        assert_eq!(meeting.series_master_id.as_deref(), Some("AAkALgAAmaster"));
        assert_eq!(
            meeting.occurrence_start,
            Some(datetime!(2026-12-09 17:00 UTC))
        );
        assert_eq!(meeting.start, datetime!(2026-12-10 18:00 UTC));
        assert_eq!(meeting.end, datetime!(2026-12-10 19:00 UTC));
        let organizer = meeting.organizer.as_ref().expect("organizer");
        assert_eq!(organizer.address, "jane@acme.com");
        assert_eq!(organizer.name.as_deref(), Some("Jane Doe"));
        assert_eq!(meeting.attendees.len(), 3);
        assert_eq!(meeting.attendees[0].address, "adele@contoso.com");
        assert_eq!(
            meeting.attendees[0].response, None,
            "never the user's own response"
        );
        assert_eq!(
            meeting.attendees[1].response.as_deref(),
            Some("tentativelyAccepted")
        );
        assert_eq!(
            meeting.attendees[2].attendee_type.as_deref(),
            Some("optional")
        );
        assert_eq!(meeting.attendees[2].name, None);
        assert_eq!(
            meeting.online_meeting_provider.as_deref(),
            Some("teamsForBusiness")
        );
        assert_eq!(
            meeting.join_url.as_deref(),
            Some("https://teams.microsoft.com/l/meetup-join/abc")
        );
        assert_eq!(meeting.location.as_deref(), Some("Room 4"));
        assert_eq!(meeting.show_as.as_deref(), Some("busy"));
        assert!(meeting.is_cancelled);
        let stored = serde_json::to_string(&meeting).expect("serialises");
        for forbidden in ["my notes", "Board prep", "accepted\"", "bodyPreview"] {
            assert!(!stored.contains(forbidden), "{forbidden} in {stored}");
        }

        let plain = event(json!({
            "id": "single", "subject": "Kick-off", "sensitivity": "normal",
            "start": utc("2026-12-24T00:00:00.0000000"), "end": utc("2026-12-25T00:00:00.0000000"),
            "isAllDay": true, "onlineMeetingProvider": "unknown", "onlineMeetingUrl": "https://zoom.example/j/1"
        }));
        let meeting = to_meeting(&plain, &own()).expect("a meeting");
        assert_eq!(meeting.subject, "Kick-off");
        assert!(meeting.is_all_day);
        assert_eq!(meeting.occurrence_start, None);
        assert_eq!(meeting.online_meeting_provider, None);
        assert_eq!(
            meeting.join_url.as_deref(),
            Some("https://zoom.example/j/1")
        );
        assert_eq!(meeting.organizer, None);

        let broken = event(json!({"id": "x", "start": utc("2026-12-24T00:00:00")}));
        assert!(matches!(
            to_meeting(&broken, &own()),
            Err(CalendarError::Missing { field: "end" })
        ));
    }

    #[test]
    fn removals_outside_the_window_are_kept() {
        let window = window_at(datetime!(2026-12-01 0:00 UTC));
        let mut meeting = to_meeting(
            &event(json!({"id": "m", "start": utc("2026-12-10T09:00:00"), "end": utc("2026-12-10T10:00:00")})),
            &own(),
        )
        .expect("a meeting");
        assert_eq!(removal_action(&meeting, &window), RemovalAction::Confirm);
        meeting.start = datetime!(2026-11-10 9:00 UTC);
        meeting.end = datetime!(2026-11-10 10:00 UTC);
        assert_eq!(removal_action(&meeting, &window), RemovalAction::Keep);
        meeting.start = datetime!(2028-01-10 9:00 UTC);
        meeting.end = datetime!(2028-01-10 10:00 UTC);
        assert_eq!(removal_action(&meeting, &window), RemovalAction::Keep);
    }

    #[test]
    fn fingerprints_follow_every_rule_input() {
        let base = rules_fingerprint(["contoso.com"], &own(), false);
        assert_eq!(base.len(), 32);
        assert_eq!(base, rules_fingerprint([" Contoso.com"], &own(), false));
        for other in [
            rules_fingerprint(["contoso.com", "fabrikam.com"], &own(), false),
            rules_fingerprint(
                ["contoso.com"],
                &OwnAddresses::new(["ben@contoso.com"]),
                false,
            ),
            rules_fingerprint(["contoso.com"], &own(), true),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn meeting_ids_carry_the_prefix() {
        let id = crate::domain::ActivityId::meeting("AAkALgAA1");
        assert!(id.as_str().starts_with(MEETING_ID_PREFIX));
        assert!(
            !crate::domain::ActivityId::mail("AAkALgAA1")
                .as_str()
                .starts_with(MEETING_ID_PREFIX)
        );
    }

    #[test]
    fn event_paths_escape_ids() {
        assert_eq!(
            event_path("AAkALgAA/x+y="),
            format!("/me/events/AAkALgAA%2Fx%2By%3D?$select={EVENT_SELECT}")
        );
    }
}

#[cfg(test)]
#[path = "calendar_conformance.rs"]
mod conformance;
