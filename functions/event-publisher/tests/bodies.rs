//! An activity removed by its TTL leaves its body object behind: the publisher deletes it
//! from the stream record (moto's S3, the stack's MessageBodiesBucket). Every other removal
//! is the activity store's to clean up, so its object is left alone here.

use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use connector_core::adapters::s3::{S3BodyStore, s3_client};
use connector_core::ports::{BodyStore, StoreError};
use event_publisher::{EventSink, PlatformEvent, Publisher, expired_body};
use serde_json::{Value, json};

/// `events/event-publisher/activities.json`: INSERT, MODIFY, MODIFY, REMOVE (a user's),
/// REMOVE (DynamoDB's TTL).
fn sample() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .join("events/event-publisher/activities.json");
    let event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    event["Records"].as_array().unwrap().clone()
}

/// Makes the record's item name a body object, as an item whose message is in the body
/// store does (`content.detail`).
fn naming(mut record: Value, key: &str) -> Value {
    let image = if record["dynamodb"]["OldImage"].is_object() {
        "OldImage"
    } else {
        "NewImage"
    };
    record["dynamodb"][image]["content"]["M"]["detail"] = json!({"M": {
        "key": {"S": key}, "bodyBytes": {"N": "5000000"},
        "participants": {"N": "1000"}, "matches": {"N": "1"}}});
    record
}

#[derive(Default)]
struct Sink(Mutex<Vec<PlatformEvent>>);

#[async_trait]
impl EventSink for Sink {
    async fn put(&self, events: &[PlatformEvent]) -> Result<Vec<Option<String>>, String> {
        self.0.lock().unwrap().extend(events.iter().cloned());
        Ok(vec![None; events.len()])
    }
}

#[test]
fn only_a_ttl_removal_names_a_body_to_delete() {
    let records = sample();
    let named: Vec<Value> = records.iter().map(|r| naming(r.clone(), "t/u/k")).collect();
    let found: Vec<Option<&str>> = named.iter().map(expired_body).collect();
    assert_eq!(found, [None, None, None, None, Some("t/u/k")]);
    // A TTL removal of an item without a body object (a meeting, a small mail): nothing.
    assert_eq!(expired_body(&records[4]), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_activity_loses_its_body_and_other_removals_leave_it_to_the_store() {
    let stack = local_stack::test_stack().await.unwrap();
    let bodies = Arc::new(S3BodyStore::new(
        s3_client(
            aws_sdk_s3::config::Builder::from(&stack.sdk),
            stack.sdk.endpoint_url().is_some(),
        ),
        stack.var("MESSAGE_BODIES_BUCKET"),
    ));
    for key in ["t/u/imported", "t/u/deleted", "t/u/expired"] {
        bodies.put_body(key, vec![b'x'; 1024]).await.unwrap();
    }
    let records = sample();
    let batch = json!({"Records": [
        naming(records[0].clone(), "t/u/imported"),
        naming(records[3].clone(), "t/u/deleted"),
        naming(records[4].clone(), "t/u/expired"),
    ]});
    let publisher = Publisher::new(Sink::default()).with_bodies(bodies.clone());
    let report = publisher.handle(&batch).await;
    assert_eq!(report.failed_from, None);
    assert_eq!((report.published, report.bodies_deleted), (3, 1));
    assert_eq!(bodies.get_body("t/u/expired").await.unwrap(), None);
    assert!(bodies.get_body("t/u/imported").await.unwrap().is_some());
    assert!(
        bodies.get_body("t/u/deleted").await.unwrap().is_some(),
        "a user's removal is the store's to clean up"
    );
    // Redelivered (the stream retries a batch): deleting again is harmless.
    let again = publisher.handle(&batch).await;
    assert_eq!((again.failed_from, again.bodies_deleted), (None, 1));
}

/// A body store that cannot delete.
struct Down;

#[async_trait]
impl BodyStore for Down {
    async fn put_body(&self, _: &str, _: Vec<u8>) -> Result<(), StoreError> {
        unreachable!()
    }
    async fn get_body(&self, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
        unreachable!()
    }
    async fn delete_bodies(&self, _: &[String]) -> Result<(), StoreError> {
        Err(StoreError::Backend {
            operation: "DeleteObjects",
            resource: "bodies".into(),
            source: "SlowDown".into(),
        })
    }
    async fn delete_prefix(&self, _: &str) -> Result<u64, StoreError> {
        unreachable!()
    }
    async fn count_prefix(&self, _: &str) -> Result<u64, StoreError> {
        unreachable!()
    }
}

#[tokio::test]
async fn a_body_that_cannot_be_deleted_stops_the_batch_at_its_record() {
    let records = sample();
    let batch = json!({"Records": [
        records[0].clone(),
        records[1].clone(),
        naming(records[4].clone(), "t/u/expired"),
        records[2].clone(),
    ]});
    let mut publisher = Publisher::new(Sink::default()).with_bodies(Arc::new(Down));
    publisher.retry_pause = Duration::from_millis(1);
    let report = publisher.handle(&batch).await;
    let expired_seq = records[4]["dynamodb"]["SequenceNumber"].as_str().unwrap();
    assert_eq!(report.failed_from.as_deref(), Some(expired_seq));
    assert_eq!(report.bodies_deleted, 0);
    // What came before it is published (the MODIFY with an unchanged fingerprint makes
    // none); it and what follows wait for the retry.
    let published: Vec<&str> = publisher
        .sink()
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.detail_type)
        .collect();
    assert_eq!(published, ["ActivityImported"]);
}
