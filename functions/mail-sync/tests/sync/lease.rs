//! The mailbox lease and the Lambda deadline, through the real path (moto's SQS and
//! DynamoDB, microsoft-sim):
//! - a continuation delivered at once (no SQS delay, received while the run that queued it
//!   is still finishing) is run, not dropped: the first import finishes on its own;
//! - a worker killed mid-import leaves its stage and counters in the sync meta, holds the
//!   mailbox at most one short lease ([`LEASE_TTL`]), and the next delivery after it
//!   resumes to the exact stored set;
//! - a worker killed mid-import lets its own SQS message reappear within the run's short
//!   visibility (no other send, no fan-out): the same message, received again from the
//!   queue, finds the lease lapsed and resumes to the exact stored set;
//! - a batch where one job runs into the deadline with a Graph request in flight: that job
//!   is cut, saves its place and continues; the others succeed; no record fails and the
//!   invocation answers before Lambda's deadline.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use connector_core::domain::{FolderCursor, Lease, SyncKey, SyncKind, SyncMeta, SyncStage};
use connector_core::messages::SyncJob;
use connector_core::ports::{QueueMessage, StoreError, SyncStateStore};
use connector_core::sync::{
    DEADLINE_MARGIN, Delivery, JobOutcome, LEASE_TTL, Worker, WorkerTimings,
};
use futures::StreamExt;
use mail_sync::MailSettings;
use serde_json::json;
use tokio::time::Instant;

use crate::support::*;

const DOMAIN: &str = "contoso.example";
const SEED: u64 = 23;
const MESSAGES: u64 = 300;

/// The real store, with a lease release that takes its time: a continuation queued before
/// the release is received while the lease is still held.
struct SlowRelease {
    inner: Arc<dyn SyncStateStore>,
}

#[async_trait]
impl SyncStateStore for SlowRelease {
    async fn acquire_lease(
        &self,
        key: &SyncKey,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.inner.acquire_lease(key, holder, ttl).await
    }
    async fn renew_lease(
        &self,
        key: &SyncKey,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.inner.renew_lease(key, holder, ttl).await
    }
    async fn release_lease(&self, key: &SyncKey, holder: &str) -> Result<bool, StoreError> {
        tokio::time::sleep(Duration::from_secs(3)).await;
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
        self.inner.put_cursor(key, cursor).await
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

async fn one_user(
    seed: u64,
    messages: u64,
    upn: &str,
) -> Result<(Harness, connector_core::domain::UserKey)> {
    let tenant = new_tenant();
    let id = new_user();
    let world = world(
        &tenant,
        DOMAIN,
        vec![user(&id, upn, "exchangeOnline", json!([]))],
        vec![
            json!({"user": upn, "folder": "inbox", "messages": messages, "seed": seed, "crmMatchRatio": 0.2}),
        ],
    );
    let settings = MailSettings {
        page_size: 10,
        ..MailSettings::default()
    };
    let h = Harness::start_with(tenant.clone(), world, settings).await?;
    h.add_tenant(&[DOMAIN]).await?;
    h.import_crm(&generated_crm(&tenant, seed, 400)).await?;
    let key = h.connect(&id, upn).await?;
    Ok((h, key))
}

async fn latency(h: &Harness, ms: u64) -> Result<()> {
    h.control(
        reqwest::Method::POST,
        "/_sim/latency",
        Some(json!({"ms": ms})),
    )
    .await
    .map(drop)
}

/// Lambda's SQS event source in miniature: receives jobs as soon as they are visible and
/// runs each at once (concurrently with the runs under way), deleting the messages whose
/// outcome does not keep them; until a run ends `Done` (or `give_up` passes).
async fn deliver_until_done(
    h: &Harness,
    worker: &Worker,
    work_time: Duration,
    give_up: Duration,
) -> Result<Vec<JobOutcome>> {
    let queue = h.config.queues.mail_sync.clone();
    let done = AtomicBool::new(false);
    let outcomes = Mutex::new(Vec::new());
    let started = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
    let receiver = async {
        while !done.load(Ordering::SeqCst) && started.elapsed() < give_up {
            let received = h
                .sqs
                .receive_message()
                .queue_url(&queue)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await?;
            for message in received.messages() {
                tx.send(message.clone())?;
            }
        }
        drop(tx);
        Ok::<(), anyhow::Error>(())
    };
    let runner = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|message| (message, rx))
    })
    .for_each_concurrent(10, |message| {
        let (queue, done, outcomes) = (&queue, &done, &outcomes);
        async move {
            let job: SyncJob =
                serde_json::from_str(message.body().unwrap_or_default()).expect("a sync job");
            let delivery = Delivery {
                receipt_handle: message.receipt_handle().map(str::to_owned),
                receive_count: message
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|count| count.parse().ok())
                    .unwrap_or(1),
                deadline: Instant::now() + DEADLINE_MARGIN + work_time,
            };
            let outcome = worker.run_job(&h.app.work, &job, &delivery).await;
            if !outcome.keep_message() {
                h.sqs
                    .delete_message()
                    .queue_url(queue)
                    .receipt_handle(message.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .expect("delete");
            }
            if outcome == JobOutcome::Done {
                done.store(true, Ordering::SeqCst);
            }
            outcomes.lock().expect("outcomes").push(outcome);
        }
    });
    let (received, ()) = tokio::join!(receiver, runner);
    received?;
    Ok(outcomes.into_inner().expect("outcomes"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_continuation_delivered_at_once_is_run_and_the_first_import_finishes() -> Result<()> {
    let upn = "nestor@contoso.example";
    let (h, key) = one_user(SEED, MESSAGES, upn).await?;
    latency(&h, 30).await?;
    let worker = h.worker_with_state(Arc::new(SlowRelease {
        inner: h.state.clone(),
    }));
    h.app
        .worker
        .queue
        .send_batch(
            &h.config.queues.mail_sync,
            &[QueueMessage::json(&h.job(&key))?],
        )
        .await?;

    // Two seconds of work per invocation: the import takes several, each continuation
    // queued with no delay and received at once.
    let outcomes = deliver_until_done(
        &h,
        &worker,
        Duration::from_secs(2),
        Duration::from_secs(240),
    )
    .await?;
    assert!(
        outcomes
            .iter()
            .filter(|o| **o == JobOutcome::Continued)
            .count()
            >= 1,
        "the import spans invocations: {outcomes:?}"
    );
    assert!(
        !outcomes
            .iter()
            .any(|o| matches!(o, JobOutcome::Busy { .. })),
        "no continuation met a held lease: {outcomes:?}"
    );
    assert_eq!(outcomes.last(), Some(&JobOutcome::Done), "{outcomes:?}");
    let expected = generated_expected(SEED, MESSAGES, "inbox", upn);
    assert_eq!(h.stored_ids(&key).await?, expected);
    let meta = h.meta(&key).await?.context("meta")?;
    assert_eq!(meta.stage, SyncStage::Idle);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_worker_shows_its_progress_and_the_next_delivery_resumes_it() -> Result<()> {
    let upn = "lynne@contoso.example";
    let (h, key) = one_user(SEED + 1, MESSAGES, upn).await?;
    let sync_key = SyncKey::new(key.tenant_id.clone(), key.user_id.clone(), SyncKind::Mail);
    latency(&h, 60).await?;

    // The worker dies (its run is dropped where it is) once it has checkpointed a few inbox
    // pages.
    let job = h.job(&key);
    let delivery = h.delivery();
    let checkpointed = async {
        loop {
            if let Some(meta) = h.meta(&key).await.expect("meta")
                && meta.last_run.stored > 0
                && meta.last_run.scanned >= 30
            {
                return meta;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let seen = tokio::select! {
        outcome = h.app.worker.run_job(&h.app.work, &job, &delivery) => {
            panic!("the run should have been killed, it ended with {outcome:?}")
        }
        meta = checkpointed => meta,
    };
    let killed_at = time::OffsetDateTime::now_utc();
    latency(&h, 0).await?;

    // What `connectorctl status` reads: the stage and the counters of the dead run.
    let meta = h.meta(&key).await?.context("a mail row")?;
    assert_eq!(meta.stage, SyncStage::InitialImport);
    assert!(meta.last_run.pages >= seen.last_run.pages);
    assert!(meta.last_run.scanned >= seen.last_run.scanned, "{meta:?}");
    assert_eq!(
        meta.totals, meta.last_run,
        "the first run's counters are the totals"
    );
    let stored = h.stored_ids(&key).await?.len() as u64;
    assert!(
        meta.last_run.stored > 0 && meta.last_run.stored <= stored,
        "counted {} of {stored} stored",
        meta.last_run.stored
    );

    // The dead worker's lease ends one short lease after its last renewal, not at its
    // invocation's deadline.
    let lease = h.state.get_lease(&sync_key).await?.context("the lease")?;
    let left = lease.expires_at - killed_at;
    assert!(
        left <= time::Duration::try_from(LEASE_TTL)?,
        "the lease lasts {left} more"
    );

    // A delivery meanwhile is not dropped: it comes back when the lease ends.
    let outcome = h.run(&key).await;
    let JobOutcome::Busy { retry_in, requeued } = outcome else {
        panic!("expected busy, got {outcome:?}");
    };
    assert!(requeued, "without a receipt the job is queued again");
    assert!(retry_in <= LEASE_TTL + Duration::from_secs(1));

    // The next delivery after the lease ends resumes the import to the exact set.
    let wait = lease.expires_at - time::OffsetDateTime::now_utc();
    if wait.is_positive() {
        tokio::time::sleep(Duration::try_from(wait)? + Duration::from_millis(500)).await;
    }
    let outcomes = h.run_to_end(&key).await;
    assert_eq!(outcomes.last(), Some(&JobOutcome::Done), "{outcomes:?}");
    let expected = generated_expected(SEED + 1, MESSAGES, "inbox", upn);
    let activities = h.stored(&key).await?;
    let ids = h.stored_ids(&key).await?;
    assert_eq!(activities.len(), ids.len(), "no duplicates");
    assert_eq!(ids, expected, "the exact set");
    Ok(())
}

/// The default timings shrunk to seconds, in the same proportions: the visibility covers
/// one lease plus one extension period, so a redelivery finds the dead worker's lease lapsed.
const SHORT: WorkerTimings = WorkerTimings {
    lease_ttl: Duration::from_secs(3),
    lease_renew_every: Duration::from_secs(1),
    lease_margin: Duration::from_secs(1),
    visibility: Duration::from_secs(5),
    visibility_every: Duration::from_secs(1),
    retry_backoff: Duration::from_secs(960),
};

/// Receives from the mail queue until a message comes (or `within` passes).
async fn receive_one(h: &Harness, within: Duration) -> Result<Option<Message>> {
    let started = Instant::now();
    while started.elapsed() < within {
        let received = h
            .sqs
            .receive_message()
            .queue_url(&h.config.queues.mail_sync)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await?;
        let mut messages = received.messages().to_vec();
        anyhow::ensure!(messages.len() <= 1, "one job on the queue: {messages:?}");
        if let Some(message) = messages.pop() {
            return Ok(Some(message));
        }
    }
    Ok(None)
}

fn delivery_of(message: &Message) -> Delivery {
    Delivery {
        receipt_handle: message.receipt_handle().map(str::to_owned),
        receive_count: message
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|count| count.parse().ok())
            .unwrap_or(1),
        deadline: Instant::now() + Duration::from_secs(14 * 60),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_workers_own_message_comes_back_within_its_visibility_and_resumes_the_import()
-> Result<()> {
    let upn = "ingrid@contoso.example";
    let (h, key) = one_user(SEED + 2, MESSAGES, upn).await?;
    // Slow enough that the import outlives a few visibility periods.
    latency(&h, 250).await?;
    let worker = Worker {
        timings: SHORT,
        notifications: None,
        ..h.worker_with_state(h.state.clone())
    };
    h.app
        .worker
        .queue
        .send_batch(
            &h.config.queues.mail_sync,
            &[QueueMessage::json(&h.job(&key))?],
        )
        .await?;
    let first = receive_one(&h, Duration::from_secs(10))
        .await?
        .context("the job")?;
    let delivery = delivery_of(&first);
    assert_eq!(delivery.receive_count, 1);
    let job: SyncJob = serde_json::from_str(first.body().context("a body")?)?;

    // The worker dies (its run is dropped where it is) once some inbox pages are stored,
    // well after its message's first visibility would have ended without the extensions.
    let checkpointed = async {
        loop {
            if let Some(meta) = h.meta(&key).await.expect("meta")
                && meta.last_run.stored > 0
                && meta.last_run.scanned >= 30
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let ran_from = Instant::now();
    tokio::select! {
        outcome = worker.run_job(&h.app.work, &job, &delivery) => {
            panic!("the run should have been killed, it ended with {outcome:?}")
        }
        () = async {
            checkpointed.await;
            let kept_hidden = SHORT.visibility + SHORT.visibility_every;
            if let Some(wait) = kept_hidden.checked_sub(ran_from.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        } => {}
    }
    let killed_at = Instant::now();
    let counts = h
        .sqs
        .get_queue_attributes()
        .queue_url(&h.config.queues.mail_sync)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await?;
    let count = |name| {
        counts
            .attributes()
            .and_then(|a| a.get(&name))
            .cloned()
            .unwrap_or_default()
    };
    assert!(killed_at - ran_from > SHORT.visibility);
    assert_eq!(
        (
            count(QueueAttributeName::ApproximateNumberOfMessages),
            count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        ),
        ("0".to_owned(), "1".to_owned()),
        "the live run kept its message hidden past one visibility"
    );
    latency(&h, 0).await?;
    let stored_before = h.stored_ids(&key).await?.len();
    assert!(stored_before > 0);

    // No other send, no fan-out: the same message comes back by itself, within the run's
    // visibility after the worker died (SQS's own 960 s would be a quarter of an hour).
    let again = receive_one(&h, SHORT.visibility + Duration::from_secs(10))
        .await?
        .context("the dead worker's job came back")?;
    let back_after = killed_at.elapsed();
    assert_eq!(again.message_id(), first.message_id(), "the same message");
    assert!(
        back_after <= SHORT.visibility + Duration::from_secs(2),
        "back {back_after:?} after the kill"
    );
    let delivery = delivery_of(&again);
    assert_eq!(delivery.receive_count, 2);

    // Its run finds the dead worker's lease lapsed and resumes from the checkpoints.
    let outcome = worker.run_job(&h.app.work, &job, &delivery).await;
    assert_eq!(outcome, JobOutcome::Done);
    assert!(!outcome.keep_message());
    h.sqs
        .delete_message()
        .queue_url(&h.config.queues.mail_sync)
        .receipt_handle(again.receipt_handle().unwrap_or_default())
        .send()
        .await?;
    let expected = generated_expected(SEED + 2, MESSAGES, "inbox", upn);
    let activities = h.stored(&key).await?;
    let ids = h.stored_ids(&key).await?;
    assert_eq!(activities.len(), ids.len(), "no duplicates");
    assert_eq!(ids, expected, "the exact set");
    let meta = h.meta(&key).await?.context("meta")?;
    assert_eq!(meta.stage, SyncStage::Idle);
    assert!(
        receive_one(&h, Duration::from_secs(2)).await?.is_none(),
        "nothing left on the queue"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_cut_by_the_deadline_continues_and_the_rest_of_its_batch_succeeds() -> Result<()> {
    let tenant = new_tenant();
    let (big, small_a, small_b) = (new_user(), new_user(), new_user());
    let upns = [
        "big@contoso.example",
        "alpha@contoso.example",
        "beta@contoso.example",
    ];
    let world = world(
        &tenant,
        DOMAIN,
        vec![
            user(&big, upns[0], "exchangeOnline", json!([])),
            user(&small_a, upns[1], "exchangeOnline", json!([])),
            user(&small_b, upns[2], "exchangeOnline", json!([])),
        ],
        vec![
            json!({"user": upns[0], "folder": "inbox", "messages": 600, "seed": 41, "crmMatchRatio": 0.2}),
            json!({"user": upns[1], "folder": "inbox", "messages": 5, "seed": 42, "crmMatchRatio": 0.2}),
            json!({"user": upns[2], "folder": "inbox", "messages": 5, "seed": 43, "crmMatchRatio": 0.2}),
        ],
    );
    let settings = MailSettings {
        page_size: 10,
        ..MailSettings::default()
    };
    let h = Harness::start_with(tenant.clone(), world, settings).await?;
    h.add_tenant(&[DOMAIN]).await?;
    h.import_crm(&generated_crm(&tenant, 41, 400)).await?;
    let big = h.connect(&big, upns[0]).await?;
    let small = [
        h.connect(&small_a, upns[1]).await?,
        h.connect(&small_b, upns[2]).await?,
    ];
    latency(&h, 100).await?;

    let records: Vec<_> = [&big, &small[0], &small[1]]
        .iter()
        .enumerate()
        .map(|(i, key)| {
            json!({
                "messageId": format!("m{i}"),
                "receiptHandle": format!("r{i}"),
                "body": serde_json::to_string(&h.job(key)).expect("json"),
                "attributes": {"ApproximateReceiveCount": "1"},
                "eventSource": "aws:sqs",
            })
        })
        .collect();
    let event = json!({ "Records": records });
    // Ten seconds of work before the deadline margin.
    let deadline = Instant::now() + DEADLINE_MARGIN + Duration::from_secs(10);

    // Once the small mailboxes are done, the big one's next Graph request hangs past
    // Lambda's deadline.
    let hang = async {
        loop {
            let mut idle = 0;
            for key in &small {
                if h.meta(key)
                    .await?
                    .is_some_and(|m| m.stage == SyncStage::Idle)
                {
                    idle += 1;
                }
            }
            if idle == small.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        latency(&h, 120_000).await
    };
    let (response, hung) = tokio::join!(mail_sync::handle(&h.app, event, deadline), hang);
    let answered = Instant::now();
    hung?;
    latency(&h, 0).await?;
    let response = response?;
    assert!(
        answered < deadline,
        "the invocation answers before Lambda's deadline"
    );
    assert_eq!(
        response["batchItemFailures"],
        json!([]),
        "no record fails: {response}"
    );
    let runs = h.sink.runs.lock().expect("runs").clone();
    let outcome_of = |key: &connector_core::domain::UserKey| {
        runs.iter()
            .find(|run| run.user_id == key.user_id.to_string())
            .map(|run| run.outcome)
    };
    assert_eq!(outcome_of(&big), Some("continued"));
    for key in &small {
        assert_eq!(outcome_of(key), Some("done"));
    }
    // The cut job saved its place: some pages are checkpointed and counted, and its
    // continuation is queued.
    let meta = h.meta(&big).await?.context("meta")?;
    assert_eq!(meta.stage, SyncStage::InitialImport);
    assert!(meta.last_run.pages > 0, "{meta:?}");
    let queued = h
        .sqs
        .receive_message()
        .queue_url(&h.config.queues.mail_sync)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await?;
    let jobs: Vec<SyncJob> = queued
        .messages()
        .iter()
        .filter_map(|m| serde_json::from_str(m.body()?).ok())
        .collect();
    assert!(
        jobs.iter().any(|job| job.user_id == big.user_id
            && job.reason == connector_core::messages::SyncReason::Continuation),
        "{jobs:?}"
    );
    Ok(())
}
