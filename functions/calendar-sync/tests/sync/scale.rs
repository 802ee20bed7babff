//! A 5,000-occurrence calendar: crash-resume at every checkpoint (and in the middle of
//! pages) gives the exact stored set; a 429 storm is ridden out with `Retry-After`; throttling
//! beyond the job's budget parks the calendar (SQS message hidden, not failed) and the next
//! run finishes the import; the mailbox concurrency limit is never hit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::SqsEvent;
use calendar_sync::CalendarOptions;
use connector_core::adapters::dynamodb::{DynamoActivityStore, DynamoSyncStateStore};
use connector_core::clock::Clock;
use connector_core::domain::{
    Activity, ActivityId, FolderCursor, Lease, SyncKey, SyncMeta, SyncStage, UserKey,
};
use connector_core::ports::{
    ActivityStore, Page, PageToken, QueueMessage, StoreError, SyncStateStore,
};
use connector_core::sync::JobOutcome;
use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::support::*;

const ADELE: &str = "adele@contoso.com";
const SERIES: usize = 20;
const PER_SERIES: usize = 250;
/// The series whose attendee is a CRM account's (the others: external non-CRM, internal,
/// none): every page holds some of its occurrences.
const CRM_SERIES: [usize; 1] = [7];

fn series_start(now: OffsetDateTime, k: usize) -> OffsetDateTime {
    day(now, 1, 6 + (k / 2) as i64) + time::Duration::minutes(30 * (k % 2) as i64)
}

/// 20 daily series of 250 occurrences: 5,000 instances in the window, 250 of them CRM.
fn calendar(now: OffsetDateTime) -> Vec<Value> {
    (0..SERIES)
        .map(|k| {
            let attendees = match k {
                k if CRM_SERIES.contains(&k) => vec![attendee("sam@acme.com", "required", "none")],
                k if k % 3 == 0 => vec![attendee("x@vendor.io", "required", "none")],
                k if k % 3 == 1 => vec![attendee("ben@contoso.com", "required", "none")],
                _ => vec![],
            };
            let start = series_start(now, k);
            let mut event = meeting(&format!("Series {k}"), start, 25, ADELE, attendees);
            event["recurrence"] = json!({
                "pattern": {"type": "daily", "interval": 1},
                "range": {"type": "numbered", "startDate": start.date().to_string(),
                          "numberOfOccurrences": PER_SERIES}
            });
            event
        })
        .collect()
}

fn expected(now: OffsetDateTime) -> Vec<(String, OffsetDateTime)> {
    let mut set: Vec<(String, OffsetDateTime)> = CRM_SERIES
        .iter()
        .flat_map(|&k| {
            (0..PER_SERIES).map(move |n| {
                (
                    format!("Series {k}"),
                    series_start(now, k) + time::Duration::days(n as i64),
                )
            })
        })
        .collect();
    set.sort();
    set
}

/// Stored content without the import time (which differs from run to run).
async fn content(harness: &Harness, key: &UserKey) -> BTreeMap<String, String> {
    harness
        .stored(key)
        .await
        .unwrap()
        .into_iter()
        .map(|a| {
            (
                a.activity_id.to_string(),
                serde_json::to_string(&(&a.content, &a.matches)).unwrap(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Crashes

/// The real sync-state store; after the `crash_at`-th cursor checkpoint it "dies": the write
/// is done, then the call never returns (the test drops the run, as a crash would).
struct CrashingState {
    inner: Arc<DynamoSyncStateStore>,
    puts: AtomicU64,
    crash_at: AtomicU64,
    crashed: Notify,
    holder: std::sync::Mutex<Option<String>>,
}

#[async_trait]
impl SyncStateStore for CrashingState {
    async fn acquire_lease(
        &self,
        key: &SyncKey,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        *self.holder.lock().unwrap() = Some(holder.to_owned());
        self.inner.acquire_lease(key, holder, ttl).await
    }
    async fn release_lease(&self, key: &SyncKey, holder: &str) -> Result<bool, StoreError> {
        self.inner.release_lease(key, holder).await
    }
    async fn get_lease(&self, key: &SyncKey) -> Result<Option<Lease>, StoreError> {
        self.inner.get_lease(key).await
    }
    async fn get_meta(&self, key: &SyncKey) -> Result<Option<SyncMeta>, StoreError> {
        self.inner.get_meta(key).await
    }
    async fn put_meta(&self, key: &SyncKey, meta: &SyncMeta) -> Result<(), StoreError> {
        self.inner.put_meta(key, meta).await
    }
    async fn get_cursor(
        &self,
        key: &SyncKey,
        folder_id: &str,
    ) -> Result<Option<FolderCursor>, StoreError> {
        self.inner.get_cursor(key, folder_id).await
    }
    async fn put_cursor(&self, key: &SyncKey, cursor: &FolderCursor) -> Result<(), StoreError> {
        self.inner.put_cursor(key, cursor).await?;
        // The calendar's own checkpoints (not the CRM catch-up's cursor).
        if cursor.folder_id != connector_core::calendar::CALENDAR_CURSOR {
            return Ok(());
        }
        let n = self.puts.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.crash_at.load(Ordering::SeqCst) {
            self.crashed.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(())
    }
    async fn list_cursors(&self, key: &SyncKey) -> Result<Vec<FolderCursor>, StoreError> {
        self.inner.list_cursors(key).await
    }
    async fn delete_cursor(&self, key: &SyncKey, folder_id: &str) -> Result<(), StoreError> {
        self.inner.delete_cursor(key, folder_id).await
    }
    async fn delete_sync_state(&self, key: &SyncKey) -> Result<(), StoreError> {
        self.inner.delete_sync_state(key).await
    }
}

/// The real activity store; after the `crash_at`-th upsert (a page's meetings written, its
/// checkpoint not yet) it dies the same way.
struct CrashingActivities {
    inner: Arc<DynamoActivityStore>,
    upserts: AtomicU64,
    crash_at: AtomicU64,
    crashed: Notify,
}

#[async_trait]
impl ActivityStore for CrashingActivities {
    async fn upsert_activities(&self, activities: &[Activity]) -> Result<(), StoreError> {
        self.inner.upsert_activities(activities).await?;
        let n = self.upserts.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.crash_at.load(Ordering::SeqCst) {
            self.crashed.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(())
    }
    async fn get_activity(
        &self,
        owner: &UserKey,
        id: &ActivityId,
    ) -> Result<Option<Activity>, StoreError> {
        self.inner.get_activity(owner, id).await
    }
    async fn delete_activity(&self, owner: &UserKey, id: &ActivityId) -> Result<bool, StoreError> {
        self.inner.delete_activity(owner, id).await
    }
    async fn delete_mail_in_folder(
        &self,
        owner: &UserKey,
        id: &ActivityId,
        folder_id: &str,
    ) -> Result<bool, StoreError> {
        self.inner.delete_mail_in_folder(owner, id, folder_id).await
    }
    async fn delete_activities(
        &self,
        owner: &UserKey,
        ids: &[ActivityId],
    ) -> Result<(), StoreError> {
        self.inner.delete_activities(owner, ids).await
    }
    async fn list_activities(
        &self,
        owner: &UserKey,
        page_size: u32,
        token: Option<&PageToken>,
    ) -> Result<Page<Activity>, StoreError> {
        self.inner.list_activities(owner, page_size, token).await
    }
    async fn delete_all_activities(&self, owner: &UserKey) -> Result<u64, StoreError> {
        self.inner.delete_all_activities(owner).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_checkpoint_resumes_to_the_exact_set() {
    let tenant = new_tenant();
    let adele = new_user();
    let now = OffsetDateTime::now_utc();
    let world = world(&tenant, vec![user(&adele, ADELE, calendar(now))]);
    let mut crashing_state = None;
    let mut crashing_activities = None;
    let harness = Harness::start_with(tenant, world, |stores| {
        let state = Arc::new(CrashingState {
            inner: stores.state.clone(),
            puts: AtomicU64::new(0),
            crash_at: AtomicU64::new(0),
            crashed: Notify::new(),
            holder: std::sync::Mutex::new(None),
        });
        let activities = Arc::new(CrashingActivities {
            inner: stores.activities.clone(),
            upserts: AtomicU64::new(0),
            crash_at: AtomicU64::new(0),
            crashed: Notify::new(),
        });
        crashing_state = Some(state.clone());
        crashing_activities = Some(activities.clone());
        Setup {
            options: CalendarOptions {
                page_size: 500,
                ..CalendarOptions::default()
            },
            state: Some(state as Arc<dyn SyncStateStore>),
            activities: Some(activities as Arc<dyn ActivityStore>),
        }
    })
    .await
    .expect("harness");
    let state = crashing_state.expect("wrapped");
    let activities = crashing_activities.expect("wrapped");
    let key = harness.connect(&adele, ADELE).await.expect("connected");
    let sync_key = Harness::sync_key(&key);

    // The uninterrupted import: 10 pages of 500.
    assert_eq!(harness.run(&key).await, JobOutcome::Done);
    assert_eq!(harness.stored_set(&key).await.unwrap(), expected(now));
    let summary = harness.sink.last_run();
    assert_eq!((summary.scanned, summary.pages), (5_000, 10));
    let baseline = content(&harness, &key).await;
    assert_eq!(baseline.len(), 250);
    let checkpoints = state.puts.load(Ordering::SeqCst);
    let page_writes = activities.upserts.load(Ordering::SeqCst);
    assert_eq!(
        checkpoints, 11,
        "9 nextLinks, the deltaLink, the reconciled round"
    );
    assert_eq!(page_writes, 10, "every page holds CRM occurrences");

    let reset = || async {
        state.inner.delete_sync_state(&sync_key).await.unwrap();
        activities.inner.delete_all_activities(&key).await.unwrap();
        state.puts.store(0, Ordering::SeqCst);
        activities.upserts.store(0, Ordering::SeqCst);
    };
    // The crashed worker's lease expires (its holder is gone); here it is released.
    let expire_lease = || async {
        let holder = state.holder.lock().unwrap().clone().expect("a holder");
        assert!(state.inner.release_lease(&sync_key, &holder).await.unwrap());
    };
    let crash_points = (1..=checkpoints)
        .map(|k| (k, true))
        .chain([1, 5, 10].map(|k| (k, false)));
    for (k, at_checkpoint) in crash_points {
        reset().await;
        let crashed = if at_checkpoint {
            state.crash_at.store(k, Ordering::SeqCst);
            &state.crashed
        } else {
            activities.crash_at.store(k, Ordering::SeqCst);
            &activities.crashed
        };
        tokio::select! {
            outcome = harness.run(&key) => panic!("no crash at {k}: {outcome:?}"),
            () = crashed.notified() => {}
        }
        state.crash_at.store(0, Ordering::SeqCst);
        activities.crash_at.store(0, Ordering::SeqCst);
        if at_checkpoint && k <= 9 {
            // The dead run is visible where `connectorctl status` reads it: its stage and
            // its counters up to its last checkpoint (k - 1 pages of 500 before it died).
            let meta = state
                .inner
                .get_meta(&sync_key)
                .await
                .unwrap()
                .expect("a calendar row");
            assert_eq!(meta.stage, SyncStage::InitialImport, "crash {k}");
            assert_eq!(
                (meta.last_run.pages, meta.last_run.scanned),
                (k - 1, 500 * (k - 1)),
                "crash {k}"
            );
        }
        expire_lease().await;
        assert_eq!(
            harness.run(&key).await,
            JobOutcome::Done,
            "resume after crash {k}"
        );
        assert_eq!(
            content(&harness, &key).await,
            baseline,
            "exact set after a crash at {} {k}",
            if at_checkpoint {
                "checkpoint"
            } else {
                "page write"
            }
        );
        let cursor = harness.cursor(&key).await.unwrap().expect("cursor");
        assert!(!cursor.initial_round);
        assert!(cursor.cursor.unwrap().contains("$deltatoken="));
    }
}

// ---------------------------------------------------------------------------------------
// Throttling

async fn set_throttle(harness: &Harness, budget: u64, window_seconds: u64) {
    harness
        .control(
            Method::POST,
            "/_sim/throttle",
            Some(json!({"budget": budget, "windowSeconds": window_seconds})),
        )
        .await
        .unwrap();
    harness
        .control(Method::DELETE, "/_sim/mailbox-stats", None)
        .await
        .unwrap();
}

async fn mailbox_stats(harness: &Harness) -> Value {
    let stats = harness
        .control(Method::GET, "/_sim/mailbox-stats", None)
        .await
        .unwrap();
    let all = stats
        .get("value")
        .cloned()
        .unwrap_or(stats)
        .as_array()
        .cloned()
        .unwrap_or_default();
    all.into_iter()
        .find(|s| s["userPrincipalName"] == ADELE)
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_ridden_out_or_parks_the_calendar() {
    let tenant = new_tenant();
    let adele = new_user();
    let now = OffsetDateTime::now_utc();
    let world = world(&tenant, vec![user(&adele, ADELE, calendar(now))]);
    let harness = Harness::start_with(tenant, world, |_| Setup {
        options: CalendarOptions {
            page_size: 250,
            ..CalendarOptions::default()
        },
        ..Setup::default()
    })
    .await
    .expect("harness");
    let key = harness.connect(&adele, ADELE).await.expect("connected");

    // A storm: three 429s with Retry-After on the first request, then Outlook admitting
    // 2 requests per second; every 429 says when to come back.
    set_throttle(&harness, 2, 1).await;
    harness
        .control(
            Method::POST,
            "/_sim/faults",
            Some(json!({"pathPrefix": "/v1.0/me/calendarView", "status": 429, "count": 3, "retryAfter": 0.2})),
        )
        .await
        .unwrap();
    assert_eq!(harness.run(&key).await, JobOutcome::Done);
    let summary = harness.sink.last_run();
    assert_eq!(summary.pages, 20);
    assert_eq!(harness.stored_set(&key).await.unwrap(), expected(now));
    let stats = mailbox_stats(&harness).await;
    assert_eq!(
        summary.throttled,
        3 + stats["throttledBudget"].as_u64().unwrap(),
        "every 429 was seen and honoured: {stats}"
    );
    assert_eq!(stats["throttledConcurrency"], 0, "{stats}");
    assert!(stats["maxInFlight"].as_u64().unwrap() <= 4, "{stats}");
    let pending = harness
        .control(Method::GET, "/_sim/faults", None)
        .await
        .unwrap();
    assert!(
        pending
            .get("value")
            .unwrap_or(&pending)
            .as_array()
            .is_none_or(Vec::is_empty),
        "{pending}"
    );

    // Beyond the job's budget: the next 429 asks for ~10 minutes. A fresh import through
    // SQS: the calendar is parked, its message hidden (a batch item failure, not a DLQ walk).
    harness
        .state
        .delete_sync_state(&Harness::sync_key(&key))
        .await
        .unwrap();
    harness
        .activities
        .delete_all_activities(&key)
        .await
        .unwrap();
    set_throttle(&harness, 3, 600).await;
    let queue_url = harness.config.queues.calendar_sync.clone();
    harness
        .app
        .worker
        .queue
        .send_batch(
            &queue_url,
            &[QueueMessage::json(&harness.job(&key)).unwrap()],
        )
        .await
        .unwrap();
    let received = harness
        .sqs
        .receive_message()
        .queue_url(&queue_url)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
        .wait_time_seconds(2)
        .send()
        .await
        .unwrap();
    let message = received.messages().first().expect("the job").clone();
    let attributes: serde_json::Map<String, Value> = message
        .attributes()
        .map(|all| {
            all.iter()
                .map(|(k, v)| (k.as_str().to_owned(), json!(v)))
                .collect()
        })
        .unwrap_or_default();
    let event: SqsEvent = serde_json::from_value(json!({"Records": [{
        "messageId": message.message_id(),
        "receiptHandle": message.receipt_handle(),
        "body": message.body(),
        "attributes": attributes,
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:CalendarSyncQueue",
        "awsRegion": "us-east-1"
    }]}))
    .unwrap();
    let response = harness
        .app
        .jobs(
            event,
            tokio::time::Instant::now() + Duration::from_secs(14 * 60),
        )
        .await;
    assert_eq!(response.batch_item_failures.len(), 1, "kept on the queue");
    assert_eq!(
        response.batch_item_failures[0].item_identifier,
        message.message_id().unwrap()
    );
    let summary = harness.sink.last_run();
    assert_eq!(summary.outcome, "parked");
    assert_eq!(
        summary.pages, 3,
        "three pages stored before the budget ran out"
    );
    let connection = harness.connection(&key).await.unwrap();
    let parked = connection.parked_until.calendar.expect("parked");
    assert!(parked > harness.clock.now() + time::Duration::minutes(5));
    let meta = harness.meta(&key).await.unwrap().unwrap();
    assert_eq!(meta.stage, SyncStage::Parked);
    assert_eq!(meta.next_attempt_at, Some(parked));
    let again = harness
        .sqs
        .receive_message()
        .queue_url(&queue_url)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    assert!(again.messages().is_empty(), "the parked job is hidden");
    // While parked, the fan-out leaves it alone and a stray job is skipped.
    let report = harness.app.schedule().await.unwrap();
    assert_eq!((report.enqueued, report.skipped), (0, 1));
    assert_eq!(
        harness.run(&key).await,
        JobOutcome::Skipped { reason: "parked" }
    );

    // Time passes, Outlook's window empties: the import resumes where it stopped.
    set_throttle(&harness, 10_000, 600).await;
    harness.advance(time::Duration::minutes(11)).await.unwrap();
    assert_eq!(harness.run(&key).await, JobOutcome::Done);
    assert_eq!(harness.sink.last_run().pages, 17);
    assert_eq!(harness.stored_set(&key).await.unwrap(), expected(now));
    assert_eq!(
        harness
            .connection(&key)
            .await
            .unwrap()
            .parked_until
            .calendar,
        None
    );
}
