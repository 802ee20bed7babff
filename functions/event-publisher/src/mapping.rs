//! From one DynamoDB stream record (as Lambda delivers it) to at most one platform event.
//!
//! The tables are told apart by their key attributes (activities: `owner` + `activityId`;
//! connections: `tenantId` + `userId`; sync state: `syncKey` + `item`), so the mapping needs
//! no configuration. Images are in DynamoDB's attribute-value JSON (`{"S": ..}`, `{"N": ..}`,
//! `{"M": {..}}`), as in the record shape of the Lambda developer guide, "Using AWS Lambda
//! with Amazon DynamoDB" (https://docs.aws.amazon.com/lambda/latest/dg/with-ddb.html,
//! read 2026-12-06) and `sam local generate-event dynamodb update`.
//!
//! A detail carries ids and metadata only: tenant, user, activity id, kind, fingerprint,
//! times, counts and statuses. Never a subject, body, preview, participant or address, even
//! of a stored activity (discarded messages are never written, so never streamed).
//!
//! Event ids are a hash of what the record says, never of when it was read: a redelivered
//! record (the stream retries a batch) gives the same id, so consumers de-duplicate on
//! `detail.eventId`.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub const ACTIVITY_IMPORTED: &str = "ActivityImported";
pub const ACTIVITY_UPDATED: &str = "ActivityUpdated";
pub const ACTIVITY_REMOVED: &str = "ActivityRemoved";
pub const CONNECTION_STATUS_CHANGED: &str = "ConnectionStatusChanged";
pub const SYNC_RUN_COMPLETED: &str = "SyncRunCompleted";
pub const CONSENT_REQUEST_DUE: &str = "ConsentRequestDue";
pub const RECORDING_DECISION: &str = "RecordingDecision";

/// Every detail type, for the schemas and the docs.
pub const DETAIL_TYPES: [&str; 7] = [
    ACTIVITY_IMPORTED,
    ACTIVITY_UPDATED,
    ACTIVITY_REMOVED,
    CONNECTION_STATUS_CHANGED,
    SYNC_RUN_COMPLETED,
    CONSENT_REQUEST_DUE,
    RECORDING_DECISION,
];

/// Explicit Consent Mode's items share the activities table (`consent#…`,
/// connector-core `adapters/dynamodb/meeting_consent.rs`); only a meeting's own item
/// (`consent#m#…`) publishes.
const CONSENT_PREFIX: &str = "consent#";
const CONSENT_MEETING_PREFIX: &str = "consent#m#";

/// The version of the detail shapes (`detail.schemaVersion`).
pub const SCHEMA_VERSION: u32 = 1;

/// One event for the bus.
#[derive(Debug, Clone, PartialEq)]
pub struct PlatformEvent {
    pub detail_type: &'static str,
    /// The JSON detail; always has `eventId`.
    pub detail: Value,
}

impl PlatformEvent {
    pub fn event_id(&self) -> &str {
        self.detail
            .get("eventId")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// A record that cannot be read (not a DynamoDB stream record of our tables' shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapError(pub String);

impl std::error::Error for MapError {}

impl std::fmt::Display for MapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(what: impl Into<String>) -> MapError {
    MapError(what.into())
}

/// `{"S": "x"}` → "x".
fn s<'a>(image: &'a Value, name: &str) -> Option<&'a str> {
    image.get(name)?.get("S")?.as_str()
}

/// `{"N": "12"}` → 12.
fn n(image: &Value, name: &str) -> Option<i64> {
    image.get(name)?.get("N")?.as_str()?.parse().ok()
}

/// `{"M": {...}}` → the inner map as a Value.
fn m<'a>(image: &'a Value, name: &str) -> Option<&'a Value> {
    image.get(name)?.get("M")
}

fn list_len(image: &Value, name: &str) -> Option<usize> {
    image.get(name)?.get("L")?.as_array().map(Vec::len)
}

/// A stable id: the first 128 bits of SHA-256 over the parts, hex.
pub fn event_id(detail_type: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(detail_type.as_bytes());
    for p in parts {
        h.update([0u8]);
        h.update(p.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// When DynamoDB wrote the record: `dynamodb.ApproximateCreationDateTime`, epoch seconds.
fn recorded_at(record: &Value) -> Option<String> {
    let v = record.pointer("/dynamodb/ApproximateCreationDateTime")?;
    let secs = v.as_f64().or_else(|| v.as_str()?.parse().ok())?;
    OffsetDateTime::from_unix_timestamp(secs as i64)
        .ok()
        .map(rfc3339)
}

/// A TTL deletion: DynamoDB's own service principal in `userIdentity` ("Time to Live
/// deletions and DynamoDB Streams", Amazon DynamoDB developer guide,
/// https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/time-to-live-ttl-streams.html,
/// read 2026-12-06: `"userIdentity": {"type": "Service", "principalId":
/// "dynamodb.amazonaws.com"}`).
pub fn is_ttl_expiry(record: &Value) -> bool {
    let id = record.get("userIdentity");
    id.and_then(|u| u.get("type")).and_then(Value::as_str) == Some("Service")
        && id
            .and_then(|u| u.get("principalId"))
            .and_then(Value::as_str)
            == Some("dynamodb.amazonaws.com")
}

/// The body object an activity's TTL expiry leaves behind: the key the removed item names
/// (`content.detail.key`, a mail whose whole message is in the body store). Every other
/// removal goes through the activity store, which deletes the object after the item; an
/// expiry is DynamoDB's own, so its stream record is the only place that sees it.
pub fn expired_body(record: &Value) -> Option<&str> {
    if record.get("eventName").and_then(Value::as_str) != Some("REMOVE") || !is_ttl_expiry(record) {
        return None;
    }
    record
        .pointer("/dynamodb/OldImage/content/M/detail/M/key/S")
        .and_then(Value::as_str)
}

/// Which table a record is of, from its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Activities,
    Connections,
    SyncState,
}

fn table_of(keys: &Value) -> Result<Table, MapError> {
    if s(keys, "owner").is_some() && s(keys, "activityId").is_some() {
        Ok(Table::Activities)
    } else if s(keys, "syncKey").is_some() && s(keys, "item").is_some() {
        Ok(Table::SyncState)
    } else if s(keys, "tenantId").is_some() && s(keys, "userId").is_some() {
        Ok(Table::Connections)
    } else {
        Err(bad("the record's keys are of none of the streamed tables"))
    }
}

/// The event one stream record makes, if any.
pub fn map_record(record: &Value) -> Result<Option<PlatformEvent>, MapError> {
    let name = record
        .get("eventName")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no eventName"))?;
    let ddb = record.get("dynamodb").ok_or_else(|| bad("no dynamodb"))?;
    let keys = ddb.get("Keys").ok_or_else(|| bad("no dynamodb.Keys"))?;
    let old = ddb.get("OldImage");
    let new = ddb.get("NewImage");
    let table = table_of(keys)?;
    if table == Table::Activities
        && s(keys, "activityId").is_some_and(|id| id.starts_with(CONSENT_PREFIX))
    {
        return match (name, new) {
            ("INSERT" | "MODIFY", Some(new))
                if s(keys, "activityId")
                    .is_some_and(|id| id.starts_with(CONSENT_MEETING_PREFIX)) =>
            {
                consent_meeting(record, new, old)
            }
            ("INSERT" | "MODIFY" | "REMOVE", _) => Ok(None),
            (other, _) => Err(bad(format!("unknown eventName {other}"))),
        };
    }
    match (name, table) {
        ("INSERT", Table::Activities) => {
            let new = new.ok_or_else(|| bad("INSERT without NewImage"))?;
            activity(ACTIVITY_IMPORTED, record, new, None).map(Some)
        }
        ("MODIFY", Table::Activities) => {
            let (old, new) = old
                .zip(new)
                .ok_or_else(|| bad("MODIFY without both images (stream view type?)"))?;
            if s(old, "fingerprint") == s(new, "fingerprint") {
                return Ok(None);
            }
            activity(ACTIVITY_UPDATED, record, new, Some(old)).map(Some)
        }
        ("REMOVE", Table::Activities) => {
            let old = old.ok_or_else(|| bad("REMOVE without OldImage"))?;
            activity(ACTIVITY_REMOVED, record, old, None).map(Some)
        }
        ("INSERT" | "MODIFY", Table::Connections) => {
            let new = new.ok_or_else(|| bad("connection write without NewImage"))?;
            connection(record, new, old)
        }
        ("REMOVE", Table::Connections) => Ok(None),
        ("INSERT" | "MODIFY", Table::SyncState) => {
            let new = new.ok_or_else(|| bad("sync state write without NewImage"))?;
            sync_run(new, old)
        }
        ("REMOVE", Table::SyncState) => Ok(None),
        (other, _) => Err(bad(format!("unknown eventName {other}"))),
    }
}

fn require<'a>(image: &'a Value, name: &str) -> Result<&'a str, MapError> {
    s(image, name).ok_or_else(|| bad(format!("no string attribute {name}")))
}

/// `image` is the version the event is about (new for imported/updated, old for removed).
fn activity(
    detail_type: &'static str,
    record: &Value,
    image: &Value,
    previous: Option<&Value>,
) -> Result<PlatformEvent, MapError> {
    let owner = require(image, "owner")?;
    let activity_id = require(image, "activityId")?;
    let tenant_id = require(image, "tenantId")?;
    let user_id = require(image, "userId")?;
    let fingerprint = require(image, "fingerprint")?;
    let imported_at = s(image, "importedAt").unwrap_or_default();
    let content = m(image, "content").ok_or_else(|| bad("no content"))?;
    let kind = s(content, "kind").ok_or_else(|| bad("no content.kind"))?;
    let occurred_at = match kind {
        "mail" => s(content, "receivedAt").or_else(|| s(content, "sentAt")),
        _ => s(content, "start"),
    };
    let mut detail = Map::new();
    let removed_reason = (detail_type == ACTIVITY_REMOVED).then(|| {
        if is_ttl_expiry(record) {
            "expired"
        } else {
            "deleted"
        }
    });
    // The version discriminators: the fingerprint, and importedAt, which a later import
    // of the same message after a removal renews (so that one is a new event).
    let previous_fingerprint = previous.and_then(|p| s(p, "fingerprint"));
    let id = event_id(
        detail_type,
        &[
            owner,
            activity_id,
            fingerprint,
            imported_at,
            previous_fingerprint.unwrap_or_default(),
        ],
    );
    detail.insert("eventId".into(), id.into());
    detail.insert("schemaVersion".into(), SCHEMA_VERSION.into());
    detail.insert("tenantId".into(), tenant_id.into());
    detail.insert("userId".into(), user_id.into());
    detail.insert("activityId".into(), activity_id.into());
    detail.insert("kind".into(), kind.into());
    detail.insert("fingerprint".into(), fingerprint.into());
    if let Some(p) = previous_fingerprint {
        detail.insert("previousFingerprint".into(), p.into());
    }
    if !imported_at.is_empty() {
        detail.insert("importedAt".into(), imported_at.into());
    }
    if let Some(at) = occurred_at {
        detail.insert("occurredAt".into(), at.into());
    }
    if let Some(count) = list_len(image, "matches") {
        detail.insert("matchCount".into(), count.into());
    }
    if let Some(expires) = n(image, "expiresAt")
        .and_then(|e| OffsetDateTime::from_unix_timestamp(e).ok())
        .map(rfc3339)
    {
        detail.insert("expiresAt".into(), expires.into());
    }
    if let Some(reason) = removed_reason {
        detail.insert("reason".into(), reason.into());
    }
    if let Some(at) = recorded_at(record) {
        detail.insert("recordedAt".into(), at.into());
    }
    Ok(PlatformEvent {
        detail_type,
        detail: Value::Object(detail),
    })
}

fn connection(
    record: &Value,
    new: &Value,
    old: Option<&Value>,
) -> Result<Option<PlatformEvent>, MapError> {
    let status = require(new, "status")?;
    let previous = old.and_then(|o| s(o, "status"));
    if previous == Some(status) {
        return Ok(None);
    }
    let tenant_id = require(new, "tenantId")?;
    let user_id = require(new, "userId")?;
    let changed_at = s(new, "statusChangedAt").unwrap_or_default();
    let id = event_id(
        CONNECTION_STATUS_CHANGED,
        &[
            tenant_id,
            user_id,
            previous.unwrap_or_default(),
            status,
            changed_at,
        ],
    );
    let mut detail = json!({
        "eventId": id,
        "schemaVersion": SCHEMA_VERSION,
        "tenantId": tenant_id,
        "userId": user_id,
        "status": status,
        "previousStatus": previous,
    });
    if let Some(reason) = s(new, "statusReason") {
        detail["reason"] = reason.into();
    }
    if !changed_at.is_empty() {
        detail["changedAt"] = changed_at.into();
    }
    if let Some(at) = recorded_at(record) {
        detail["recordedAt"] = at.into();
    }
    Ok(Some(PlatformEvent {
        detail_type: CONNECTION_STATUS_CHANGED,
        detail,
    }))
}

fn strings(list: Option<&Value>) -> Vec<&str> {
    list.and_then(|l| l.get("L"))
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.get("S").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

/// A consent meeting's write: a new `requestedAt` → `ConsentRequestDue` (ids and times:
/// the platform reads the links through its API); a new `decision` → `RecordingDecision`,
/// which names the guests who declined or did not answer (the platform tells the host).
/// The connector writes one of the two at a time (`consent_meetings::apply_due`).
fn consent_meeting(
    record: &Value,
    new: &Value,
    old: Option<&Value>,
) -> Result<Option<PlatformEvent>, MapError> {
    let tenant_id = require(new, "tenantId")?;
    let user_id = require(new, "userId")?;
    let calendar_event_id = require(new, "eventId")?;
    fn decided_at(image: &Value) -> Option<&str> {
        m(image, "decision").and_then(|d| s(d, "decidedAt"))
    }
    fn requested_at(image: &Value) -> Option<&str> {
        s(image, "requestedAt")
    }
    let mut detail = json!({
        "schemaVersion": SCHEMA_VERSION,
        "tenantId": tenant_id,
        "userId": user_id,
        "calendarEventId": calendar_event_id,
    });
    let detail_type = if let Some(at) =
        decided_at(new).filter(|at| old.and_then(decided_at) != Some(*at))
    {
        let decision = m(new, "decision").ok_or_else(|| bad("no decision"))?;
        let starts_at = require(decision, "startsAt")?;
        let record_it = decision
            .get("record")
            .and_then(|r| r.get("BOOL"))
            .and_then(Value::as_bool)
            .ok_or_else(|| bad("no decision.record"))?;
        detail["eventId"] = event_id(
            RECORDING_DECISION,
            &[tenant_id, user_id, calendar_event_id, starts_at, at],
        )
        .into();
        detail["startsAt"] = starts_at.into();
        detail["record"] = record_it.into();
        detail["declined"] = strings(decision.get("declined")).into();
        detail["noAnswer"] = strings(decision.get("noAnswer")).into();
        detail["decidedAt"] = at.into();
        RECORDING_DECISION
    } else if let Some(at) = requested_at(new).filter(|at| old.and_then(requested_at) != Some(*at))
    {
        let starts_at = require(new, "start")?;
        detail["eventId"] = event_id(
            CONSENT_REQUEST_DUE,
            &[tenant_id, user_id, calendar_event_id, at],
        )
        .into();
        detail["startsAt"] = starts_at.into();
        detail["guestCount"] = list_len(new, "guests").unwrap_or(0).into();
        detail["requestedAt"] = at.into();
        CONSENT_REQUEST_DUE
    } else {
        return Ok(None);
    };
    if let Some(at) = recorded_at(record) {
        detail["recordedAt"] = at.into();
    }
    Ok(Some(PlatformEvent {
        detail_type,
        detail,
    }))
}

const COUNTERS: [&str; 8] = [
    "scanned",
    "matched",
    "stored",
    "removed",
    "discarded",
    "pages",
    "graphRequests",
    "throttled",
];

/// A `meta` item write that ends a run: a new `lastSuccessAt` (the run finished,
/// `SyncMeta::finish_run`), or a new `lastError` while `failed` (`SyncMeta::fail`).
fn sync_run(new: &Value, old: Option<&Value>) -> Result<Option<PlatformEvent>, MapError> {
    if s(new, "item") != Some("meta") {
        return Ok(None);
    }
    let sync_key = require(new, "syncKey")?;
    let last_success = |i: &Value| s(i, "lastSuccessAt").map(str::to_owned);
    let last_error_at = |i: &Value| {
        m(i, "lastError")
            .and_then(|e| s(e, "at"))
            .map(str::to_owned)
    };
    let (outcome, completed_at) = match (last_success(new), old.and_then(last_success)) {
        (Some(now), before) if before.as_deref() != Some(now.as_str()) => ("succeeded", now),
        _ => match (
            s(new, "stage"),
            last_error_at(new),
            old.and_then(last_error_at),
        ) {
            (Some("failed"), Some(now), before) if before.as_deref() != Some(now.as_str()) => {
                ("failed", now)
            }
            _ => return Ok(None),
        },
    };
    // `{tenantId}#{userId}#{kind}`
    let mut parts = sync_key.rsplitn(3, '#');
    let (Some(kind), Some(user_id), Some(tenant_id)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("syncKey is not tenant#user#kind"));
    };
    let run_id = event_id("run", &[sync_key, &completed_at]);
    let id = event_id(SYNC_RUN_COMPLETED, &[sync_key, &completed_at, outcome]);
    let mut counts = Map::new();
    if let Some(run) = m(new, "lastRun") {
        for c in COUNTERS {
            counts.insert(c.into(), n(run, c).unwrap_or(0).into());
        }
    }
    let mut detail = json!({
        "eventId": id,
        "schemaVersion": SCHEMA_VERSION,
        "tenantId": tenant_id,
        "userId": user_id,
        "syncKind": kind,
        "runId": run_id,
        "outcome": outcome,
        "completedAt": completed_at,
        "stage": s(new, "stage").unwrap_or_default(),
    });
    if outcome == "succeeded" {
        detail["counts"] = Value::Object(counts);
    } else if let Some(code) = m(new, "lastError").and_then(|e| s(e, "code")) {
        // The code only: the message is for operators.
        detail["errorCode"] = code.into();
    }
    Ok(Some(PlatformEvent {
        detail_type: SYNC_RUN_COMPLETED,
        detail,
    }))
}
