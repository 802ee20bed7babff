//! One user's primary calendar: single events and recurring series (with their exceptions and cancelled
//! occurrences), the expansion of series into occurrences for a time window, and the rendering of each as
//! Graph's `event` JSON.
//!
//! Events are kept as the Graph JSON they were given (world file or control API) minus the properties the
//! service computes (`id`, `type`, `seriesMasterId`, `originalStart`, `changeKey`, timestamps...), plus typed
//! start/end instants. Series take two sim-only inputs named after Graph beta's properties:
//! `exceptionOccurrences` (events with `originalStart` or `originalStartDate` and the fields they change) and
//! `cancelledOccurrences` (`YYYY-MM-DD` dates or beta's `OID.{id}.{date}` strings). v1.0 never shows them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use time::{Date, Duration, OffsetDateTime, PrimitiveDateTime, Time};

use super::ids::{self, IdForm, InstanceKey, ItemHash};
use super::recurrence::Recurrence;
use super::tz::{self, Zone};
use crate::state::UserInfo;

/// Properties the service computes: dropped from input, always written by `render`.
const COMPUTED: &[&str] = &[
    "id",
    "@odata.etag",
    "@odata.type",
    "@odata.context",
    "type",
    "seriesMasterId",
    "originalStart",
    "changeKey",
    "createdDateTime",
    "lastModifiedDateTime",
    "iCalUId",
    "originalStartTimeZone",
    "originalEndTimeZone",
    "webLink",
    "start",
    "end",
    "exceptionOccurrences",
    "cancelledOccurrences",
];

/// The v1.0 `event` properties the sim writes (`$select` accepts these).
pub const EVENT_PROPERTIES: &[&str] = &[
    "allowNewTimeProposals",
    "attendees",
    "body",
    "bodyPreview",
    "categories",
    "changeKey",
    "createdDateTime",
    "end",
    "hasAttachments",
    "hideAttendees",
    "iCalUId",
    "id",
    "importance",
    "isAllDay",
    "isCancelled",
    "isDraft",
    "isOnlineMeeting",
    "isOrganizer",
    "isReminderOn",
    "lastModifiedDateTime",
    "location",
    "locations",
    "onlineMeeting",
    "onlineMeetingProvider",
    "onlineMeetingUrl",
    "organizer",
    "originalEndTimeZone",
    "originalStart",
    "originalStartTimeZone",
    "recurrence",
    "reminderMinutesBeforeStart",
    "responseRequested",
    "responseStatus",
    "sensitivity",
    "seriesMasterId",
    "showAs",
    "start",
    "subject",
    "transactionId",
    "type",
    "webLink",
];

/// Fields an exception may not change (they identify the occurrence or belong to the series).
const SERIES_ONLY: &[&str] = &["recurrence", "organizer", "iCalUId"];

#[derive(Debug, Clone)]
pub struct Exception {
    pub overrides: Map<String, Value>,
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
    pub version: u64,
    pub modified: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct Series {
    pub recurrence: Recurrence,
    /// The recurrence time zone: occurrences keep the series' wall-clock time there across DST changes.
    pub zone: &'static Zone,
    pub local_time: Time,
    pub duration: Duration,
    pub exceptions: BTreeMap<Date, Exception>,
    pub cancelled: BTreeSet<Date>,
}

#[derive(Debug, Clone)]
pub struct Item {
    pub hash: ItemHash,
    /// The id the world gave a single event or series master; it stays its REST id.
    pub given_id: Option<String>,
    pub json: Map<String, Value>,
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
    pub start_zone: &'static Zone,
    pub end_zone: &'static Zone,
    /// `originalStartTimeZone`/`originalEndTimeZone`: the zone names as given.
    pub start_label: String,
    pub end_label: String,
    pub series: Option<Series>,
    pub ical_uid: String,
    pub created: OffsetDateTime,
    pub modified: OffsetDateTime,
    pub version: u64,
}

/// One entry of a calendar view: a single event, an occurrence or an exception.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub key: InstanceKey,
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
    /// Changes whenever anything the instance shows changes: the delta snapshot compares it.
    pub tag: String,
}

/// How a request wants events written.
#[derive(Debug, Clone)]
pub struct RenderPrefs {
    pub zone: &'static Zone,
    pub zone_label: String,
    pub id_form: IdForm,
}

impl Default for RenderPrefs {
    fn default() -> Self {
        RenderPrefs {
            zone: tz::utc(),
            zone_label: "UTC".to_owned(),
            id_form: IdForm::Rest,
        }
    }
}

fn parse_time_field(
    v: Option<&Value>,
    field: &str,
) -> Result<(OffsetDateTime, &'static Zone, String), String> {
    let v = v
        .filter(|v| v.is_object())
        .ok_or_else(|| format!("{field} is required ({{\"dateTime\", \"timeZone\"}})"))?;
    let label = v
        .get("timeZone")
        .and_then(Value::as_str)
        .unwrap_or("UTC")
        .to_owned();
    let zone = tz::lookup(&label)
        .ok_or_else(|| format!("{field}.timeZone {label:?} is not a time zone the sim knows"))?;
    let text = v
        .get("dateTime")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{field}.dateTime is required"))?;
    let when = tz::parse_date_time(text)
        .ok_or_else(|| format!("{field}.dateTime {text:?} is not an ISO 8601 date-time"))?;
    let label = if label.eq_ignore_ascii_case("utc") {
        "UTC".to_owned()
    } else {
        label
    };
    Ok((when.resolve(zone), zone, label))
}

fn strip_computed(json: &mut Map<String, Value>) {
    for key in COMPUTED {
        json.remove(*key);
    }
}

/// The original local date an `exceptionOccurrences` entry or a control-API call names.
fn occurrence_date(entry: &Map<String, Value>, zone: &Zone) -> Result<Date, String> {
    if let Some(text) = entry.get("originalStartDate").and_then(Value::as_str) {
        return tz::parse_date(text)
            .ok_or_else(|| format!("originalStartDate {text:?} is not YYYY-MM-DD"));
    }
    if let Some(text) = entry.get("originalStart").and_then(Value::as_str) {
        let instant = tz::parse_instant(text)
            .ok_or_else(|| format!("originalStart {text:?} is not a DateTimeOffset"))?;
        return Ok(zone.to_local(instant).date());
    }
    Err("an exception occurrence needs originalStart or originalStartDate".into())
}

impl Item {
    /// Builds an item from Graph JSON. `now` stamps `createdDateTime`/`lastModifiedDateTime` when absent.
    pub fn parse(
        hash: ItemHash,
        given_id: Option<String>,
        input: Value,
        now: OffsetDateTime,
    ) -> Result<Item, String> {
        let Value::Object(mut json) = input else {
            return Err("an event must be a JSON object".into());
        };
        let (start, start_zone, start_label) = parse_time_field(json.get("start"), "start")?;
        let (end, end_zone, end_label) = parse_time_field(json.get("end"), "end")?;
        if end < start {
            return Err("end is before start".into());
        }
        if json.get("isAllDay").and_then(Value::as_bool) == Some(true) {
            let midnight = |t: OffsetDateTime, z: &Zone| z.to_local(t).time() == Time::MIDNIGHT;
            if !midnight(start, start_zone) || !midnight(end, end_zone) || end == start {
                return Err(
                    "an all-day event starts and ends at midnight and lasts at least a day".into(),
                );
            }
        }
        let created = json
            .get("createdDateTime")
            .and_then(Value::as_str)
            .and_then(tz::parse_instant)
            .unwrap_or(now);
        let modified = json
            .get("lastModifiedDateTime")
            .and_then(Value::as_str)
            .and_then(tz::parse_instant)
            .unwrap_or(created);
        let ical_uid = json
            .get("iCalUId")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| ids::new_ical_uid(&hash));
        let exceptions_in = json.remove("exceptionOccurrences");
        let cancelled_in = json.remove("cancelledOccurrences");
        strip_computed(&mut json);
        let series = match json.get("recurrence") {
            None | Some(Value::Null) => {
                if exceptions_in.is_some() || cancelled_in.is_some() {
                    return Err(
                        "exceptionOccurrences and cancelledOccurrences need a recurrence".into(),
                    );
                }
                None
            }
            Some(rec) => {
                let mut rec = rec.clone();
                let zone_name = rec
                    .pointer("/range/recurrenceTimeZone")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let zone = match &zone_name {
                    Some(name) => tz::lookup(name)
                        .ok_or_else(|| format!("recurrenceTimeZone {name:?} is unknown"))?,
                    None => start_zone,
                };
                let local_start = zone.to_local(start);
                if rec.pointer("/range/startDate").is_none()
                    && let Some(range) = rec.get_mut("range").and_then(Value::as_object_mut)
                {
                    range.insert(
                        "startDate".into(),
                        Value::String(tz::format_date(local_start.date())),
                    );
                }
                if zone_name.is_none()
                    && let Some(range) = rec.get_mut("range").and_then(Value::as_object_mut)
                {
                    range.insert(
                        "recurrenceTimeZone".into(),
                        Value::String(start_label.clone()),
                    );
                }
                let recurrence = Recurrence::parse(&rec)?;
                json.insert("recurrence".into(), rec);
                let mut series = Series {
                    recurrence,
                    zone,
                    local_time: local_start.time(),
                    duration: end - start,
                    exceptions: BTreeMap::new(),
                    cancelled: BTreeSet::new(),
                };
                for entry in exceptions_in
                    .as_ref()
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let entry = entry
                        .as_object()
                        .ok_or("exceptionOccurrences entries are objects")?;
                    let date = occurrence_date(entry, zone)?;
                    series.exception_from_patch(date, entry, modified)?;
                }
                for entry in cancelled_in
                    .as_ref()
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let text = entry
                        .as_str()
                        .ok_or("cancelledOccurrences entries are strings")?;
                    let date_text = text.rsplit('.').next().unwrap_or(text);
                    let date = tz::parse_date(date_text).ok_or_else(|| {
                        format!("cancelled occurrence {text:?} does not end in YYYY-MM-DD")
                    })?;
                    if !series.recurrence.has_date(date) {
                        return Err(format!(
                            "cancelled occurrence {text:?} is not a date of the series"
                        ));
                    }
                    series.exceptions.remove(&date);
                    series.cancelled.insert(date);
                }
                Some(series)
            }
        };
        Ok(Item {
            hash,
            given_id,
            json,
            start,
            end,
            start_zone,
            end_zone,
            start_label,
            end_label,
            series,
            ical_uid,
            created,
            modified,
            version: 1,
        })
    }

    /// Applies a partial update (a PATCH body) to a single event or series master.
    pub fn patch(&mut self, patch: &Map<String, Value>, now: OffsetDateTime) -> Result<(), String> {
        let mut merged = self.json.clone();
        for (k, v) in patch {
            merged.insert(k.clone(), v.clone());
        }
        merged.insert(
            "start".into(),
            patch
                .get("start")
                .cloned()
                .unwrap_or_else(|| self.time_json(self.start, self.start_zone, &self.start_label)),
        );
        merged.insert(
            "end".into(),
            patch
                .get("end")
                .cloned()
                .unwrap_or_else(|| self.time_json(self.end, self.end_zone, &self.end_label)),
        );
        merged.insert("iCalUId".into(), Value::String(self.ical_uid.clone()));
        let mut updated = Item::parse(
            self.hash,
            self.given_id.clone(),
            Value::Object(merged),
            self.created,
        )?;
        if let (Some(old), Some(new)) = (&self.series, &mut updated.series) {
            // Exceptions and cancellations survive a series edit where their dates still belong to it.
            for (date, ex) in &old.exceptions {
                if new.recurrence.has_date(*date) {
                    new.exceptions.insert(*date, ex.clone());
                }
            }
            new.cancelled = old
                .cancelled
                .iter()
                .copied()
                .filter(|d| new.recurrence.has_date(*d))
                .collect();
        }
        updated.created = self.created;
        updated.modified = now;
        updated.version = self.version + 1;
        *self = updated;
        Ok(())
    }

    fn time_json(&self, at: OffsetDateTime, zone: &Zone, label: &str) -> Value {
        tz::date_time_time_zone(at, zone, label)
    }

    pub fn is_organizer(&self, user: &UserInfo) -> bool {
        if let Some(explicit) = self.json.get("isOrganizer").and_then(Value::as_bool) {
            return explicit;
        }
        match self
            .json
            .get("organizer")
            .and_then(|o| o.pointer("/emailAddress/address"))
            .and_then(Value::as_str)
        {
            None => true,
            Some(address) => {
                address.eq_ignore_ascii_case(&user.user_principal_name)
                    || user
                        .mail
                        .as_deref()
                        .is_some_and(|m| m.eq_ignore_ascii_case(address))
            }
        }
    }

    /// The original start of the occurrence on `date`.
    pub fn occurrence_start(&self, date: Date) -> Option<OffsetDateTime> {
        let series = self.series.as_ref()?;
        Some(
            series
                .zone
                .to_utc(PrimitiveDateTime::new(date, series.local_time)),
        )
    }

    /// Whether `date` names a live occurrence (a pattern date, not cancelled).
    pub fn has_occurrence(&self, date: Date) -> bool {
        self.series
            .as_ref()
            .is_some_and(|s| !s.cancelled.contains(&date) && s.recurrence.has_date(date))
    }

    fn tag(&self, exception: Option<&Exception>) -> String {
        let raw = format!("{}.{}", self.version, exception.map_or(0, |e| e.version));
        STANDARD.encode(format!("DwAAABYAAAA{raw}"))
    }

    /// The instance `key` names (a single event, occurrence or exception), if it exists now.
    pub fn instance(&self, key: InstanceKey) -> Option<Instance> {
        match (key.date, &self.series) {
            (None, None) => Some(Instance {
                key,
                start: self.start,
                end: self.end,
                tag: self.tag(None),
            }),
            (Some(date), Some(series)) if self.has_occurrence(date) => {
                let exception = series.exceptions.get(&date);
                let (start, end) = match exception {
                    Some(e) => (e.start, e.end),
                    None => {
                        let start = self.occurrence_start(date)?;
                        (start, start + series.duration)
                    }
                };
                Some(Instance {
                    key,
                    start,
                    end,
                    tag: self.tag(exception),
                })
            }
            _ => None,
        }
    }

    /// Instances overlapping `[from, to)`, in start order.
    pub fn instances_in(&self, from: OffsetDateTime, to: OffsetDateTime, out: &mut Vec<Instance>) {
        let overlaps = |start: OffsetDateTime, end: OffsetDateTime| {
            start < to && (end > from || (start >= from && end == start))
        };
        let Some(series) = &self.series else {
            if overlaps(self.start, self.end) {
                out.push(Instance {
                    key: InstanceKey {
                        item: self.hash,
                        date: None,
                    },
                    start: self.start,
                    end: self.end,
                    tag: self.tag(None),
                });
            }
            return;
        };
        // Dates past the window can still hold exceptions moved into it.
        let mut until = series.zone.to_local(to).date() + Duration::days(1);
        if let Some((last, _)) = series.exceptions.last_key_value() {
            until = until.max(*last);
        }
        for date in series.recurrence.dates_until(until) {
            if series.cancelled.contains(&date) {
                continue;
            }
            let key = InstanceKey {
                item: self.hash,
                date: Some(date),
            };
            if let Some(instance) = self.instance(key)
                && overlaps(instance.start, instance.end)
            {
                out.push(instance);
            }
        }
    }

    /// The REST or immutable id of the item itself (single event or series master).
    pub fn id(&self, form: IdForm) -> String {
        match (&self.given_id, form) {
            (Some(given), IdForm::Rest) => given.clone(),
            _ => ids::encode(
                form,
                InstanceKey {
                    item: self.hash,
                    date: None,
                },
            ),
        }
    }

    pub fn instance_id(&self, date: Option<Date>, form: IdForm) -> String {
        match date {
            None => self.id(form),
            Some(date) => ids::encode(
                form,
                InstanceKey {
                    item: self.hash,
                    date: Some(date),
                },
            ),
        }
    }

    /// Graph's `event` JSON for the item itself (`date: None`: a single event or the series master) or one of
    /// its occurrences.
    pub fn render(
        &self,
        user: &UserInfo,
        date: Option<Date>,
        prefs: &RenderPrefs,
    ) -> Option<Value> {
        let is_organizer = self.is_organizer(user);
        let mut event = defaults(user, is_organizer);
        for (k, v) in &self.json {
            event.insert(k.clone(), v.clone());
        }
        let (kind, start, end, tag, modified) = match (date, &self.series) {
            (None, None) => (
                "singleInstance",
                self.start,
                self.end,
                self.tag(None),
                self.modified,
            ),
            (None, Some(series)) => {
                event.insert(
                    "recurrence".into(),
                    normalized_recurrence(&self.json["recurrence"], series),
                );
                (
                    "seriesMaster",
                    self.start,
                    self.end,
                    self.tag(None),
                    self.modified,
                )
            }
            (Some(date), Some(series)) => {
                let instance = self.instance(InstanceKey {
                    item: self.hash,
                    date: Some(date),
                })?;
                let exception = series.exceptions.get(&date);
                event.insert("recurrence".into(), Value::Null);
                event.insert(
                    "seriesMasterId".into(),
                    Value::String(self.id(prefs.id_form)),
                );
                event.insert(
                    "originalStart".into(),
                    Value::String(tz::format_utc(self.occurrence_start(date)?)),
                );
                event.insert(
                    "iCalUId".into(),
                    Value::String(ids::occurrence_ical_uid(&self.ical_uid, date)),
                );
                let mut modified = self.modified;
                if let Some(e) = exception {
                    for (k, v) in &e.overrides {
                        event.insert(k.clone(), v.clone());
                    }
                    modified = modified.max(e.modified);
                }
                let kind = if exception.is_some() {
                    "exception"
                } else {
                    "occurrence"
                };
                (kind, instance.start, instance.end, instance.tag, modified)
            }
            (Some(_), None) => return None,
        };
        if !event.contains_key("iCalUId") {
            event.insert("iCalUId".into(), Value::String(self.ical_uid.clone()));
        }
        let id = self.instance_id(date, prefs.id_form);
        event.insert("@odata.etag".into(), Value::String(format!("W/\"{tag}\"")));
        event.insert("id".into(), Value::String(id.clone()));
        event.insert("changeKey".into(), Value::String(tag));
        event.insert("type".into(), Value::String(kind.to_owned()));
        event.insert(
            "createdDateTime".into(),
            Value::String(tz::format_utc(self.created)),
        );
        event.insert(
            "lastModifiedDateTime".into(),
            Value::String(tz::format_utc(modified)),
        );
        event.insert(
            "originalStartTimeZone".into(),
            Value::String(self.start_label.clone()),
        );
        event.insert(
            "originalEndTimeZone".into(),
            Value::String(self.end_label.clone()),
        );
        event.insert(
            "start".into(),
            tz::date_time_time_zone(start, prefs.zone, &prefs.zone_label),
        );
        event.insert(
            "end".into(),
            tz::date_time_time_zone(end, prefs.zone, &prefs.zone_label),
        );
        event.insert(
            "webLink".into(),
            Value::String(format!(
                "https://outlook.office365.com/owa/?itemid={}&exvsurl=1&path=/calendar/item",
                url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
            )),
        );
        let preview = body_preview(&event);
        event.insert("bodyPreview".into(), Value::String(preview));
        if !event.contains_key("responseStatus") || event["responseStatus"].is_null() {
            event.insert("responseStatus".into(), response_status(is_organizer));
        }
        Some(Value::Object(event))
    }
}

impl Series {
    /// Creates or updates the exception on `date` from a patch (`start`/`end` move the occurrence).
    pub fn exception_from_patch(
        &mut self,
        date: Date,
        patch: &Map<String, Value>,
        now: OffsetDateTime,
    ) -> Result<(), String> {
        if self.cancelled.contains(&date) || !self.recurrence.has_date(date) {
            return Err(format!(
                "{} is not an occurrence of the series",
                tz::format_date(date)
            ));
        }
        let original_start = self
            .zone
            .to_utc(PrimitiveDateTime::new(date, self.local_time));
        let (mut start, mut end, mut overrides, version) = match self.exceptions.get(&date) {
            Some(e) => (e.start, e.end, e.overrides.clone(), e.version + 1),
            None => (
                original_start,
                original_start + self.duration,
                Map::new(),
                1,
            ),
        };
        if patch.contains_key("start") {
            start = parse_time_field(patch.get("start"), "start")?.0;
        }
        if patch.contains_key("end") {
            end = parse_time_field(patch.get("end"), "end")?.0;
        } else if patch.contains_key("start") {
            end = start + self.duration;
        }
        if end < start {
            return Err("end is before start".into());
        }
        for (k, v) in patch {
            if COMPUTED.contains(&k.as_str())
                || SERIES_ONLY.contains(&k.as_str())
                || k == "originalStartDate"
            {
                continue;
            }
            overrides.insert(k.clone(), v.clone());
        }
        self.exceptions.insert(
            date,
            Exception {
                overrides,
                start,
                end,
                version,
                modified: now,
            },
        );
        Ok(())
    }
}

fn response_status(is_organizer: bool) -> Value {
    json!({"response": if is_organizer { "organizer" } else { "none" }, "time": "0001-01-01T00:00:00Z"})
}

/// Every property a v1.0 `event` carries, with the values Outlook gives an event that does not set them.
fn defaults(user: &UserInfo, is_organizer: bool) -> Map<String, Value> {
    let address = user
        .mail
        .clone()
        .unwrap_or_else(|| user.user_principal_name.clone());
    let Value::Object(map) = json!({
        "categories": [],
        "transactionId": null,
        "reminderMinutesBeforeStart": 15,
        "isReminderOn": true,
        "hasAttachments": false,
        "subject": "",
        "importance": "normal",
        "sensitivity": "normal",
        "isAllDay": false,
        "isCancelled": false,
        "isOrganizer": is_organizer,
        "responseRequested": true,
        "seriesMasterId": null,
        "showAs": "busy",
        "onlineMeetingUrl": null,
        "isOnlineMeeting": false,
        "onlineMeetingProvider": "unknown",
        "allowNewTimeProposals": true,
        "isDraft": false,
        "hideAttendees": false,
        "body": {"contentType": "html", "content": ""},
        "location": {"displayName": "", "locationType": "default", "uniqueIdType": "unknown", "address": {}, "coordinates": {}},
        "locations": [],
        "recurrence": null,
        "attendees": [],
        "organizer": {"emailAddress": {"name": user.display_name, "address": address}},
        "onlineMeeting": null,
    }) else {
        unreachable!("a JSON object literal")
    };
    map
}

/// Graph writes every recurrence property, zero-valued where the pattern does not use it.
fn normalized_recurrence(given: &Value, series: &Series) -> Value {
    let pattern = given.get("pattern").cloned().unwrap_or_default();
    let range = given.get("range").cloned().unwrap_or_default();
    let get =
        |v: &Value, k: &str, d: Value| v.get(k).filter(|x| !x.is_null()).cloned().unwrap_or(d);
    let r = &series.recurrence;
    json!({
        "pattern": {
            "type": get(&pattern, "type", Value::Null),
            "interval": r.pattern.interval,
            "month": get(&pattern, "month", json!(0)),
            "dayOfMonth": get(&pattern, "dayOfMonth", json!(0)),
            "daysOfWeek": get(&pattern, "daysOfWeek", json!([])),
            "firstDayOfWeek": get(&pattern, "firstDayOfWeek", json!("sunday")),
            "index": get(&pattern, "index", json!("first")),
        },
        "range": {
            "type": get(&range, "type", Value::Null),
            "startDate": tz::format_date(r.start_date),
            "endDate": get(&range, "endDate", json!("0001-01-01")),
            "recurrenceTimeZone": get(&range, "recurrenceTimeZone", json!(series.zone.name)),
            "numberOfOccurrences": get(&range, "numberOfOccurrences", json!(0)),
        }
    })
}

/// The first 255 characters of the body as text, as Outlook computes `bodyPreview`.
fn body_preview(event: &Map<String, Value>) -> String {
    let body = event.get("body");
    let content = body
        .and_then(|b| b.get("content"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let is_html = body
        .and_then(|b| b.get("contentType"))
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("html"));
    let text = if is_html {
        html_to_text(content)
    } else {
        content.to_owned()
    };
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed.chars().take(255).collect()
}

fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    let lower = html.to_ascii_lowercase();
    let mut skip_until: Option<&str> = None;
    let mut i = 0;
    let bytes = html.as_bytes();
    while i < bytes.len() {
        if let Some(end) = skip_until {
            if lower[i..].starts_with(end) {
                i += end.len();
                skip_until = None;
            } else {
                i += 1;
            }
            continue;
        }
        if !in_tag && lower[i..].starts_with("<style") {
            skip_until = Some("</style>");
            continue;
        }
        if !in_tag && lower[i..].starts_with("<script") {
            skip_until = Some("</script>");
            continue;
        }
        let c = html[i..].chars().next().expect("in bounds");
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
        i += c.len_utf8();
    }
    out.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// A user's calendar.
#[derive(Debug, Clone)]
pub struct UserCalendar {
    pub user: UserInfo,
    pub items: BTreeMap<ItemHash, Item>,
    /// World ids of single events and masters, lower-cased, to their items.
    pub given_ids: HashMap<String, ItemHash>,
}

/// What an id resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// A single event or a series master.
    Item(ItemHash),
    Occurrence(ItemHash, Date),
}

impl UserCalendar {
    pub fn new(user: UserInfo) -> UserCalendar {
        UserCalendar {
            user,
            items: BTreeMap::new(),
            given_ids: HashMap::new(),
        }
    }

    pub fn insert(&mut self, item: Item) {
        if let Some(given) = &item.given_id {
            self.given_ids.insert(given.to_ascii_lowercase(), item.hash);
        }
        self.items.insert(item.hash, item);
    }

    pub fn remove(&mut self, hash: &ItemHash) -> Option<Item> {
        let item = self.items.remove(hash)?;
        if let Some(given) = &item.given_id {
            self.given_ids.remove(&given.to_ascii_lowercase());
        }
        Some(item)
    }

    /// Resolves a REST or immutable id of an existing event, series master or live occurrence.
    pub fn resolve(&self, id: &str) -> Option<Resolved> {
        if let Some(hash) = self.given_ids.get(&id.to_ascii_lowercase()) {
            return Some(Resolved::Item(*hash));
        }
        let key = ids::decode(id)?;
        let item = self.items.get(&key.item)?;
        match key.date {
            None => Some(Resolved::Item(key.item)),
            Some(date) if item.has_occurrence(date) => Some(Resolved::Occurrence(key.item, date)),
            Some(_) => None,
        }
    }

    /// Every instance overlapping the window, ordered by start.
    pub fn instances_in(&self, from: OffsetDateTime, to: OffsetDateTime) -> Vec<Instance> {
        let mut out = Vec::new();
        for item in self.items.values() {
            item.instances_in(from, to, &mut out);
        }
        out.sort_by(|a, b| a.start.cmp(&b.start).then(a.key.cmp(&b.key)));
        out
    }

    pub fn instance(&self, key: InstanceKey) -> Option<Instance> {
        self.items.get(&key.item)?.instance(key)
    }

    pub fn render_instance(&self, key: InstanceKey, prefs: &RenderPrefs) -> Option<Value> {
        self.items
            .get(&key.item)?
            .render(&self.user, key.date, prefs)
    }

    /// The id of an instance that may no longer exist (for `@removed` entries).
    pub fn removed_id(&self, key: InstanceKey, form: IdForm, given: Option<&str>) -> String {
        match (key.date, given, form) {
            (None, Some(given), IdForm::Rest) => given.to_owned(),
            _ => ids::encode(form, key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::MailboxKind;
    use time::macros::{date, datetime};

    fn user() -> UserInfo {
        UserInfo {
            id: "11111111-1111-1111-1111-111111111111".into(),
            tenant_id: "22222222-2222-2222-2222-222222222222".into(),
            user_principal_name: "adele@contoso.com".into(),
            mail: Some("adele@contoso.com".into()),
            display_name: "Adele Vance".into(),
            given_name: None,
            surname: None,
            job_title: None,
            office_location: None,
            mobile_phone: None,
            business_phones: vec![],
            preferred_language: None,
            mailbox: MailboxKind::ExchangeOnline,
        }
    }

    fn weekly() -> Item {
        Item::parse(
            ids::item_hash("u", "weekly"),
            None,
            json!({
                "subject": "Weekly sync",
                "start": {"dateTime": "2026-12-02T09:00:00", "timeZone": "Pacific Standard Time"},
                "end": {"dateTime": "2026-12-02T09:30:00", "timeZone": "Pacific Standard Time"},
                "recurrence": {
                    "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["wednesday"]},
                    "range": {"type": "numbered", "startDate": "2026-12-02", "numberOfOccurrences": 5}
                },
                "exceptionOccurrences": [{"originalStartDate": "2026-12-09", "subject": "Moved sync",
                    "start": {"dateTime": "2026-12-10T10:00:00", "timeZone": "Pacific Standard Time"},
                    "end": {"dateTime": "2026-12-10T11:00:00", "timeZone": "Pacific Standard Time"}}],
                "cancelledOccurrences": ["2026-12-16"]
            }),
            datetime!(2026-11-01 0:00 UTC),
        )
        .unwrap()
    }

    #[test]
    fn series_expand_with_exception_and_cancellation() {
        let item = weekly();
        let mut out = Vec::new();
        item.instances_in(
            datetime!(2026-12-01 0:00 UTC),
            datetime!(2027-02-01 0:00 UTC),
            &mut out,
        );
        let starts: Vec<_> = out.iter().map(|i| i.start).collect();
        assert_eq!(
            starts,
            vec![
                datetime!(2026-12-02 17:00 UTC),
                datetime!(2026-12-10 18:00 UTC),
                datetime!(2026-12-23 17:00 UTC),
                datetime!(2026-12-30 17:00 UTC),
            ]
        );
        let moved = item
            .render(
                &user(),
                Some(date!(2026 - 12 - 09)),
                &RenderPrefs::default(),
            )
            .unwrap();
        assert_eq!(moved["type"], "exception");
        assert_eq!(moved["subject"], "Moved sync");
        assert_eq!(moved["originalStart"], "2026-12-09T17:00:00Z");
        assert_eq!(
            moved["start"],
            json!({"dateTime": "2026-12-10T18:00:00.0000000", "timeZone": "UTC"})
        );
        assert_eq!(moved["seriesMasterId"], item.id(IdForm::Rest));
        assert!(
            item.render(
                &user(),
                Some(date!(2026 - 12 - 16)),
                &RenderPrefs::default()
            )
            .is_none()
        );
        let master = item.render(&user(), None, &RenderPrefs::default()).unwrap();
        assert_eq!(master["type"], "seriesMaster");
        assert_eq!(
            master["recurrence"]["range"]["recurrenceTimeZone"],
            "Pacific Standard Time"
        );
        assert_eq!(master["recurrence"]["range"]["endDate"], "0001-01-01");
    }

    #[test]
    fn html_bodies_preview_as_text() {
        let item = Item::parse(
            ids::item_hash("u", "one"),
            None,
            json!({
                "start": {"dateTime": "2026-12-02T09:00:00", "timeZone": "UTC"},
                "end": {"dateTime": "2026-12-02T09:30:00", "timeZone": "UTC"},
                "body": {"contentType": "html", "content": "<html><style>p{}</style><p>Agenda:&nbsp;<b>CRM</b></p></html>"}
            }),
            datetime!(2026-11-01 0:00 UTC),
        )
        .unwrap();
        let event = item.render(&user(), None, &RenderPrefs::default()).unwrap();
        assert_eq!(event["bodyPreview"], "Agenda: CRM");
        assert_eq!(event["isOrganizer"], true);
        assert_eq!(event["responseStatus"]["response"], "organizer");
    }
}
