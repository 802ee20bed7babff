//! event-publisher: DynamoDB stream records → the platform's events on the connector's
//! EventBridge bus (docs/events.md).
//!
//! The activities, connections and sync-state tables stream `NEW_AND_OLD_IMAGES`; their
//! writes are the outbox. A worker that crashes after its write cannot lose the event (the
//! record is in the stream for 24 hours), and a failed publish is retried by the stream's
//! event source mapping: this handler reports the first record it could not publish as the
//! batch item failure (its `SequenceNumber`), so Lambda retries from that record on and
//! everything before it is checkpointed ("Using AWS Lambda with Amazon DynamoDB",
//! partial batch responses: https://docs.aws.amazon.com/lambda/latest/dg/services-ddb-batchfailurereporting.html,
//! read 2026-12-06). Records after it may be published twice; their ids are the same.
//!
//! PutEvents takes at most 10 entries and answers per entry: `FailedEntryCount`, and an
//! `Entries` array in request order where a failed entry has `ErrorCode`/`ErrorMessage`
//! ("Sending events with PutEvents", https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-putevents.html,
//! and the PutEvents API reference, https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_PutEvents.html,
//! read 2026-12-06). Failed entries are sent again, up to [`PUT_ATTEMPTS`] times in all.
//!
//! An activity removed by its TTL (its retention ran out) leaves its body object in the
//! body store: nothing of ours ran when DynamoDB deleted the item. The activities stream
//! carries that removal, so this handler deletes the object it names
//! ([`mapping::expired_body`]) before it publishes the batch's events; a failed delete is
//! retried from that record like a failed publish.

pub mod mapping;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use connector_core::ports::BodyStore;
use serde_json::{Value, json};

pub use mapping::{DETAIL_TYPES, PlatformEvent, expired_body, map_record};

/// `source` of every event.
pub const SOURCE: &str = "office365-connector";
/// PutEvents' entry limit.
pub const MAX_ENTRIES: usize = 10;
/// Attempts per entry within one invocation before the record is reported failed.
pub const PUT_ATTEMPTS: u32 = 3;

/// Where events go: EventBridge, or a list in tests.
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Puts up to [`MAX_ENTRIES`] events; `Ok` has one entry per event, in order: `None`
    /// when it was accepted, the error code when it failed. `Err`: the call failed as a
    /// whole (nothing is known to be accepted).
    async fn put(&self, events: &[PlatformEvent]) -> Result<Vec<Option<String>>, String>;
}

/// The real sink.
pub struct EventBridgeSink {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl EventBridgeSink {
    pub fn new(client: aws_sdk_eventbridge::Client, bus: impl Into<String>) -> Self {
        Self {
            client,
            bus: bus.into(),
        }
    }
}

#[async_trait]
impl EventSink for EventBridgeSink {
    async fn put(&self, events: &[PlatformEvent]) -> Result<Vec<Option<String>>, String> {
        use aws_sdk_eventbridge::types::PutEventsRequestEntry;
        let entries = events
            .iter()
            .map(|e| {
                PutEventsRequestEntry::builder()
                    .event_bus_name(&self.bus)
                    .source(SOURCE)
                    .detail_type(e.detail_type)
                    .detail(e.detail.to_string())
                    .build()
            })
            .collect();
        let out = self
            .client
            .put_events()
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| {
                format!(
                    "PutEvents: {}",
                    aws_sdk_eventbridge::error::DisplayErrorContext(e)
                )
            })?;
        let results = out.entries();
        if results.len() != events.len() {
            return Err(format!(
                "PutEvents answered {} entries for {}",
                results.len(),
                events.len()
            ));
        }
        Ok(results
            .iter()
            .map(|r| match r.error_code() {
                Some(code) => Some(code.to_owned()),
                None if r.event_id().is_none() => Some("NoEventId".to_owned()),
                None => None,
            })
            .collect())
    }
}

/// The handler of one stream batch.
pub struct Publisher<S> {
    sink: S,
    /// Where expired activities' bodies are deleted.
    bodies: Option<Arc<dyn BodyStore>>,
    /// Pause before sending failed entries again (doubles each time).
    pub retry_pause: Duration,
}

/// What one batch did, for the log and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchReport {
    pub records: usize,
    pub published: usize,
    pub skipped: usize,
    /// Body objects of expired activities deleted.
    pub bodies_deleted: usize,
    /// The `SequenceNumber` of the first record not done, if any.
    pub failed_from: Option<String>,
}

impl BatchReport {
    /// The Lambda partial batch response for a stream source.
    pub fn response(&self) -> Value {
        match &self.failed_from {
            Some(seq) => json!({"batchItemFailures": [{"itemIdentifier": seq}]}),
            None => json!({"batchItemFailures": []}),
        }
    }
}

fn sequence_number(record: &Value) -> String {
    record
        .pointer("/dynamodb/SequenceNumber")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

impl<S: EventSink> Publisher<S> {
    pub fn new(sink: S) -> Self {
        Self {
            sink,
            bodies: None,
            retry_pause: Duration::from_millis(200),
        }
    }

    /// Deletes the body objects of activities removed by their TTL in `bodies`.
    pub fn with_bodies(mut self, bodies: Arc<dyn BodyStore>) -> Self {
        self.bodies = Some(bodies);
        self
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// Maps and publishes a `{"Records": [...]}` event, in record order.
    pub async fn handle(&self, event: &Value) -> BatchReport {
        let records = event
            .get("Records")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut report = BatchReport {
            records: records.len(),
            ..BatchReport::default()
        };
        // (record index, event) in record order; a record that cannot be read stops the
        // batch there: it is reported failed, so the stream retries it and, after its
        // retries, sends it to the on-failure destination.
        let mut pending: Vec<(usize, PlatformEvent)> = Vec::new();
        let mut unreadable: Option<usize> = None;
        for (i, record) in records.iter().enumerate() {
            match map_record(record) {
                Ok(Some(e)) => pending.push((i, e)),
                Ok(None) => report.skipped += 1,
                Err(error) => {
                    tracing::error!(sequence = %sequence_number(record), %error, "unreadable stream record");
                    unreadable = Some(i);
                    break;
                }
            }
        }
        // Expired activities' bodies first, up to the first unreadable record: when the
        // delete fails the batch stops at the first of them (deleting again is harmless).
        let readable = &records[..unreadable.unwrap_or(records.len())];
        let expired: Vec<(usize, String)> = readable
            .iter()
            .enumerate()
            .filter_map(|(i, record)| expired_body(record).map(|key| (i, key.to_owned())))
            .collect();
        let mut stop = unreadable;
        if let (Some(bodies), Some((first, _))) = (&self.bodies, expired.first()) {
            let keys: Vec<String> = expired.iter().map(|(_, key)| key.clone()).collect();
            match bodies.delete_bodies(&keys).await {
                Ok(()) => report.bodies_deleted = keys.len(),
                Err(error) => {
                    tracing::warn!(%error, objects = keys.len(), "could not delete expired bodies");
                    stop = Some(*first);
                    pending.retain(|(i, _)| i < first);
                }
            }
        }
        for chunk in pending.chunks(MAX_ENTRIES) {
            match self.put_with_retries(chunk).await {
                Ok(()) => report.published += chunk.len(),
                Err(first_failed) => {
                    report.failed_from = Some(sequence_number(&records[first_failed]));
                    return report;
                }
            }
        }
        if let Some(i) = stop {
            report.failed_from = Some(sequence_number(&records[i]));
        }
        report
    }

    /// Puts a chunk, sending failed entries again; `Err` = the record index of the first
    /// entry still failing.
    async fn put_with_retries(&self, chunk: &[(usize, PlatformEvent)]) -> Result<(), usize> {
        let mut left: Vec<&(usize, PlatformEvent)> = chunk.iter().collect();
        let mut pause = self.retry_pause;
        for attempt in 1..=PUT_ATTEMPTS {
            let events: Vec<PlatformEvent> = left.iter().map(|(_, e)| e.clone()).collect();
            match self.sink.put(&events).await {
                Ok(results) => {
                    let failed: Vec<&(usize, PlatformEvent)> = left
                        .iter()
                        .zip(&results)
                        .filter(|(_, r)| r.is_some())
                        .map(|(e, _)| *e)
                        .collect();
                    for ((_, e), code) in left.iter().zip(&results) {
                        if let Some(code) = code {
                            tracing::warn!(attempt, event_id = %e.event_id(), detail_type = e.detail_type, %code, "PutEvents entry failed");
                        }
                    }
                    left = failed;
                }
                Err(error) => {
                    tracing::warn!(attempt, entries = left.len(), %error, "PutEvents failed");
                }
            }
            if left.is_empty() {
                return Ok(());
            }
            if attempt < PUT_ATTEMPTS {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
        Err(left.iter().map(|(i, _)| *i).min().unwrap_or(0))
    }
}
