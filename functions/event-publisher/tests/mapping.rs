//! The mapping of real stream record shapes (`events/event-publisher/*.json`, in the shape
//! `sam local generate-event dynamodb update` prints, with our tables' items), the JSON
//! Schemas of `docs/events/`, and the handler's retries and partial batch responses
//! against an in-memory sink.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use event_publisher::mapping::{
    ACTIVITY_IMPORTED, ACTIVITY_REMOVED, ACTIVITY_UPDATED, CONNECTION_STATUS_CHANGED,
    CONSENT_REQUEST_DUE, RECORDING_DECISION, SYNC_RUN_COMPLETED,
};
use event_publisher::{DETAIL_TYPES, EventSink, PlatformEvent, Publisher, map_record};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

fn sample(name: &str) -> Value {
    let path = repo().join("events/event-publisher").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn records(event: &Value) -> Vec<Value> {
    event["Records"].as_array().unwrap().clone()
}

fn mapped(event: &Value) -> Vec<Option<PlatformEvent>> {
    records(event)
        .iter()
        .map(|r| map_record(r).expect("readable"))
        .collect()
}

/// Validates `detail` against `docs/events/<detail_type>.schema.json` (formats checked).
pub fn check_schema(detail_type: &str, detail: &Value) {
    let path = repo()
        .join("docs/events")
        .join(format!("{detail_type}.schema.json"));
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("a valid schema");
    let errors: Vec<String> = validator
        .iter_errors(detail)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{detail_type} {detail}: {errors:?}");
}

/// Nothing of a message's content or participants is in any detail.
fn no_content(event: &PlatformEvent) {
    let text = event.detail.to_string();
    for needle in [
        "Renewal",
        "jane@",
        "acme.example",
        "Hello Megan",
        "adele@",
        "refused the refresh",
    ] {
        assert!(!text.contains(needle), "{needle} in {text}");
    }
}

#[test]
fn activity_records_map_to_imported_updated_and_removed() {
    let events = mapped(&sample("activities.json"));
    let kinds: Vec<Option<&str>> = events
        .iter()
        .map(|e| e.as_ref().map(|e| e.detail_type))
        .collect();
    assert_eq!(
        kinds,
        [
            Some(ACTIVITY_IMPORTED),
            None, // rewritten with the same fingerprint
            Some(ACTIVITY_UPDATED),
            Some(ACTIVITY_REMOVED),
            Some(ACTIVITY_REMOVED),
        ]
    );
    let imported = events[0].as_ref().unwrap();
    assert_eq!(imported.detail["kind"], "mail");
    assert_eq!(
        imported.detail["activityId"],
        "mail#AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A"
    );
    assert_eq!(
        imported.detail["tenantId"],
        "3b7e2d4c-8a1f-4e6b-9c5d-7f0a2b4c6e81"
    );
    assert_eq!(
        imported.detail["userId"],
        "a0de1e00-0000-4000-8000-00000000000a"
    );
    assert_eq!(imported.detail["fingerprint"], "a".repeat(64));
    assert_eq!(imported.detail["occurredAt"], "2026-12-05T16:40:00Z");
    assert_eq!(imported.detail["matchCount"], 1);
    assert_eq!(imported.detail["expiresAt"], "2027-12-06T00:00:00Z");
    let updated = events[2].as_ref().unwrap();
    assert_eq!(updated.detail["fingerprint"], "b".repeat(64));
    assert_eq!(updated.detail["previousFingerprint"], "a".repeat(64));
    assert_eq!(events[3].as_ref().unwrap().detail["reason"], "deleted");
    assert_eq!(events[4].as_ref().unwrap().detail["reason"], "expired");
    for e in events.iter().flatten() {
        check_schema(e.detail_type, &e.detail);
        no_content(e);
    }
}

#[test]
fn connection_records_map_to_status_changes_only() {
    let events = mapped(&sample("connections.json"));
    assert!(
        events[1].is_none(),
        "a switch change is not a status change"
    );
    let made = events[0].as_ref().unwrap();
    assert_eq!(made.detail_type, CONNECTION_STATUS_CHANGED);
    assert_eq!(made.detail["status"], "active");
    assert_eq!(made.detail["previousStatus"], Value::Null);
    let lost = events[2].as_ref().unwrap();
    assert_eq!(
        (&lost.detail["previousStatus"], &lost.detail["status"]),
        (&json!("active"), &json!("reauth_required"))
    );
    assert_eq!(lost.detail["reason"], "invalid_grant");
    for e in events.iter().flatten() {
        check_schema(e.detail_type, &e.detail);
        no_content(e);
    }
}

#[test]
fn sync_state_records_map_to_completed_runs_only() {
    let events = mapped(&sample("sync-state.json"));
    assert!(events[0].is_none(), "a stage change mid-run");
    assert!(events[2].is_none(), "a lease");
    let done = events[1].as_ref().unwrap();
    assert_eq!(done.detail_type, SYNC_RUN_COMPLETED);
    assert_eq!(done.detail["outcome"], "succeeded");
    assert_eq!(done.detail["syncKind"], "mail");
    assert_eq!(done.detail["completedAt"], "2026-12-06T09:15:09Z");
    assert_eq!(done.detail["counts"]["stored"], 3);
    assert_eq!(done.detail["counts"]["discarded"], 37);
    let failed = events[3].as_ref().unwrap();
    assert_eq!(failed.detail["outcome"], "failed");
    assert_eq!(failed.detail["errorCode"], "token_unavailable");
    assert_ne!(done.event_id(), failed.event_id());
    for e in events.iter().flatten() {
        check_schema(e.detail_type, &e.detail);
        no_content(e);
    }
}

#[test]
fn consent_meeting_records_map_to_the_request_and_the_decision_only() {
    let events = mapped(&sample("consent-meetings.json"));
    let kinds: Vec<Option<&str>> = events
        .iter()
        .map(|e| e.as_ref().map(|e| e.detail_type))
        .collect();
    assert_eq!(
        kinds,
        [
            None, // made (linking)
            None, // a link item
            Some(CONSENT_REQUEST_DUE),
            None, // a guest's answer
            Some(RECORDING_DECISION),
            None, // deleted with the user's activities: no ActivityRemoved
            None,
        ]
    );
    let request = events[2].as_ref().unwrap();
    assert_eq!(
        request.detail["calendarEventId"],
        "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg1B"
    );
    assert_eq!(request.detail["startsAt"], "2026-12-07T15:00:00Z");
    assert_eq!(request.detail["guestCount"], 3);
    assert_eq!(request.detail["requestedAt"], "2026-12-06T15:00:02Z");
    let text = request.detail.to_string();
    for secret in ["q1W2e3R4", "Zx9Yw8", "@fabrikam", "teams.microsoft.com"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    let decision = events[4].as_ref().unwrap();
    assert_eq!(decision.detail["record"], false);
    assert_eq!(decision.detail["declined"], json!(["ann@fabrikam.example"]));
    assert_eq!(decision.detail["noAnswer"], json!(["ben@fabrikam.example"]));
    assert_eq!(decision.detail["decidedAt"], "2026-12-07T14:59:00Z");
    assert!(!decision.detail.to_string().contains("q1W2e3R4"), "no link");
    assert_ne!(request.event_id(), decision.event_id());
    for e in events.iter().flatten() {
        check_schema(e.detail_type, &e.detail);
        assert_eq!(
            map_record(&records(&sample("consent-meetings.json"))[2])
                .unwrap()
                .map(|e| e.event_id().to_owned()),
            Some(request.event_id().to_owned())
        );
    }
}

#[test]
fn ids_are_stable_for_a_redelivered_record_and_distinct_between_facts() {
    let mut all = Vec::new();
    for file in ["activities.json", "connections.json", "sync-state.json"] {
        for r in records(&sample(file)) {
            let once = map_record(&r).unwrap();
            // A redelivery is the same record: same id, even read at another time.
            let again = map_record(&r).unwrap();
            assert_eq!(once, again);
            all.extend(once.map(|e| e.event_id().to_owned()));
        }
    }
    // activities.json removes one version twice (deleted, then by TTL): one fact, one id;
    // a version is only ever removed once.
    assert_eq!(all[2], all[3], "{all:?}");
    all.remove(3);
    let distinct: std::collections::BTreeSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "{all:?}");
}

#[test]
fn every_detail_type_has_a_schema() {
    for t in DETAIL_TYPES {
        let path = repo().join("docs/events").join(format!("{t}.schema.json"));
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert!(jsonschema::meta::is_valid(&schema), "{t}");
    }
}

#[test]
fn an_unreadable_record_is_an_error() {
    assert!(map_record(&json!({"eventName": "INSERT"})).is_err());
    assert!(
        map_record(&json!({"eventName": "INSERT", "dynamodb": {"Keys": {"x": {"S": "1"}}}}))
            .is_err()
    );
}

/// A sink that fails what it is told to, and records what it accepted.
#[derive(Default)]
struct Sink {
    accepted: Mutex<Vec<PlatformEvent>>,
    /// Event ids refused this many more times.
    refuse: Mutex<Vec<(String, u32)>>,
    /// Whole calls that fail before any is accepted.
    down_calls: Mutex<u32>,
}

#[async_trait]
impl EventSink for Sink {
    async fn put(&self, events: &[PlatformEvent]) -> Result<Vec<Option<String>>, String> {
        assert!(events.len() <= 10, "PutEvents takes at most 10 entries");
        {
            let mut down = self.down_calls.lock().unwrap();
            if *down > 0 {
                *down -= 1;
                return Err("connection refused".into());
            }
        }
        let mut refuse = self.refuse.lock().unwrap();
        Ok(events
            .iter()
            .map(|e| {
                if let Some((_, left)) = refuse
                    .iter_mut()
                    .find(|(id, left)| id == e.event_id() && *left > 0)
                {
                    *left -= 1;
                    return Some("InternalFailure".to_owned());
                }
                self.accepted.lock().unwrap().push(e.clone());
                None
            })
            .collect())
    }
}

/// 25 activity INSERT records (three PutEvents calls).
fn big_batch() -> Value {
    let template = records(&sample("activities.json"))[0].clone();
    let records: Vec<Value> = (0..25)
        .map(|i| {
            let mut r = template.clone();
            let id = format!("mail#id-{i:02}");
            r["dynamodb"]["Keys"]["activityId"]["S"] = json!(id);
            r["dynamodb"]["NewImage"]["activityId"]["S"] = json!(id);
            r["dynamodb"]["SequenceNumber"] = json!(format!("{}", 1000 + i));
            r
        })
        .collect();
    json!({ "Records": records })
}

fn publisher(sink: Sink) -> Publisher<Sink> {
    let mut p = Publisher::new(sink);
    p.retry_pause = Duration::from_millis(1);
    p
}

#[tokio::test]
async fn failed_entries_are_sent_again_and_everything_is_published_once() {
    let batch = big_batch();
    let ids: Vec<String> = records(&batch)
        .iter()
        .map(|r| map_record(r).unwrap().unwrap().event_id().to_owned())
        .collect();
    let sink = Sink::default();
    *sink.refuse.lock().unwrap() = vec![(ids[3].clone(), 1), (ids[17].clone(), 1)];
    *sink.down_calls.lock().unwrap() = 1;
    let p = publisher(sink);
    let report = p.handle(&batch).await;
    assert_eq!(report.failed_from, None);
    assert_eq!(report.published, 25);
    assert_eq!(report.response(), json!({"batchItemFailures": []}));
    let accepted: Vec<String> = p
        .sink()
        .accepted
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.event_id().to_owned())
        .collect();
    let mut sorted = accepted.clone();
    sorted.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(sorted, want, "each once");
}

#[tokio::test]
async fn an_entry_that_keeps_failing_reports_its_record_and_the_stream_retries_from_it() {
    let batch = big_batch();
    let ids: Vec<String> = records(&batch)
        .iter()
        .map(|r| map_record(r).unwrap().unwrap().event_id().to_owned())
        .collect();
    let sink = Sink::default();
    *sink.refuse.lock().unwrap() = vec![(ids[13].clone(), 100)];
    let p = publisher(sink);
    let report = p.handle(&batch).await;
    assert_eq!(report.failed_from.as_deref(), Some("1013"));
    assert_eq!(
        report.response(),
        json!({"batchItemFailures": [{"itemIdentifier": "1013"}]})
    );
    // The first chunk went out; the second all but the failed one; the third waits.
    assert_eq!(p.sink().accepted.lock().unwrap().len(), 19);
}

#[tokio::test]
async fn an_unreadable_record_stops_the_batch_at_it_after_publishing_what_came_before() {
    let mut batch = big_batch();
    batch["Records"][5]["dynamodb"]["Keys"] = json!({"unknown": {"S": "x"}});
    let p = publisher(Sink::default());
    let report = p.handle(&batch).await;
    assert_eq!(report.failed_from.as_deref(), Some("1005"));
    assert_eq!(p.sink().accepted.lock().unwrap().len(), 5);
}
