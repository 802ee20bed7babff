//! Every activity stored or removed in a sync run reaches the platform's queue once
//! (copies only with the same id), and nothing is lost when the worker's writes are not
//! followed by a publish (the publisher down, then failing, then back).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use connector_core::domain::{Activity, ActivityId, UserKey};
use connector_core::sync::JobOutcome;
use event_publisher::{EventBridgeSink, Publisher, SOURCE};
use local_stack::streams::{
    StreamHandle, StreamOptions, spawn_all, stream_mappings, subscribe_queue,
};
use local_stack::{InProcessInvoker, Template, template_path};
use serde_json::{Value, json};

use crate::support::*;

const DOMAIN: &str = "contoso.example";
const UPN: &str = "megan@contoso.example";

fn folders() -> Value {
    json!([
        {"wellKnownName": "inbox", "displayName": "Inbox", "messages": [
            message("e01-contact", "Renewal terms", "jane@acme.example", &[UPN], 2),
            message("e02-domain", "Pricing question", "bob@acme.example", &[UPN], 3),
            message("e03-other", "Lunch on Friday", "friend@other.example", &[UPN], 1),
            message("e04-contact", "Signed contract", "jane@acme.example", &[UPN], 4),
            message("e05-newsletter", "Weekly digest", "news@vendor.example", &[UPN], 1)
        ]}
    ])
}

fn crm_file(tenant: &connector_core::domain::TenantId) -> connector_core::domain::CrmSnapshot {
    let opportunity = (time::OffsetDateTime::now_utc() - time::Duration::days(30)).date();
    crm(
        tenant,
        json!({
            "accounts": [{"id": "001A", "name": "Acme", "domains": ["acme.example"]}],
            "contacts": [{"id": "003J", "email": "jane@acme.example", "accountId": "001A"}],
            "leads": [],
            "opportunities": [
                {"id": "0061", "accountId": "001A", "isClosed": false, "createdDate": format!("{opportunity}")}
            ]
        }),
    )
}

/// The queue the platform subscribed to the bus, and what it received.
struct Platform {
    sqs: aws_sdk_sqs::Client,
    url: String,
    received: Vec<Value>,
}

impl Platform {
    async fn subscribe(h: &Harness) -> Result<Platform> {
        let bus = h
            .stack
            .provisioned
            .physical("ConnectorEventBus")
            .context("the template declares ConnectorEventBus")?
            .to_string();
        let name = format!("{}-platform", h.stack.provisioned.stack_name);
        let url = subscribe_queue(&h.stack.sdk, &bus, SOURCE, &name).await?;
        Ok(Platform {
            sqs: h.sqs.clone(),
            url,
            received: Vec::new(),
        })
    }

    async fn receive(&mut self) -> Result<usize> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await?;
        let messages = out.messages.unwrap_or_default();
        for m in &messages {
            let body: Value = serde_json::from_str(m.body().unwrap_or_default())?;
            self.received.push(body);
            self.sqs
                .delete_message()
                .queue_url(&self.url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await?;
        }
        Ok(messages.len())
    }

    /// Receives until `done` holds for what was received (bounded, so a lost event fails
    /// the test with what did arrive instead of hanging).
    async fn until(&mut self, what: &str, done: impl Fn(&[Value]) -> bool) -> Result<()> {
        for _ in 0..180 {
            if done(&self.received) {
                // Anything still in flight (a duplicate) arrives with it.
                while self.receive().await? > 0 {}
                return Ok(());
            }
            self.receive().await?;
        }
        bail!(
            "{what}: not received; got {}",
            serde_json::to_string_pretty(&self.received)?
        )
    }

    fn of(&self, detail_type: &str) -> Vec<&Value> {
        self.received
            .iter()
            .filter(|e| e["detail-type"] == detail_type)
            .collect()
    }

    /// activityId → the ids of its copies of `detail_type`.
    fn by_activity(&self, detail_type: &str) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for e in self.of(detail_type) {
            out.entry(e["detail"]["activityId"].as_str().unwrap_or("?").to_owned())
                .or_default()
                .insert(e["detail"]["eventId"].as_str().unwrap_or("?").to_owned());
        }
        out
    }
}

fn activity_ids(activities: &[Activity]) -> BTreeSet<String> {
    activities
        .iter()
        .map(|a| a.activity_id.as_str().to_owned())
        .collect()
}

/// The real handler behind local-stack's stream mapping, its EventBridge client pointed
/// at moto, or (while `broken`) at a loopback port where nothing listens.
fn publisher_invoker(h: &Harness, broken: Arc<AtomicBool>) -> Result<InProcessInvoker> {
    // EventPublisherFunction's EVENT_BUS_NAME: `!Ref ConnectorEventBus`.
    let bus = h
        .stack
        .provisioned
        .physical("ConnectorEventBus")
        .context("the template declares ConnectorEventBus")?
        .to_owned();
    let good = Arc::new(Publisher::new(EventBridgeSink::new(
        aws_sdk_eventbridge::Client::new(&h.stack.sdk),
        bus.clone(),
    )));
    let refused = format!("http://127.0.0.1:{}", local_stack::free_port()?);
    let bad_client = aws_sdk_eventbridge::Client::from_conf(
        aws_sdk_eventbridge::config::Builder::from(&h.stack.sdk)
            .endpoint_url(refused)
            .build(),
    );
    let mut bad = Publisher::new(EventBridgeSink::new(bad_client, bus));
    bad.retry_pause = Duration::from_millis(10);
    let bad = Arc::new(bad);
    Ok(
        InProcessInvoker::new().with("event-publisher", move |payload| {
            let publisher_down = broken.load(Ordering::SeqCst);
            let (good, bad) = (good.clone(), bad.clone());
            async move {
                let report = if publisher_down {
                    bad.handle(&payload).await
                } else {
                    good.handle(&payload).await
                };
                Ok(report.response())
            }
        }),
    )
}

fn start_streams(h: &Harness, invoker: InProcessInvoker) -> Result<Vec<StreamHandle>> {
    let template = Template::load(&template_path())?;
    let mappings = stream_mappings(&template, &h.stack.provisioned)?;
    let names: BTreeSet<&str> = mappings.iter().map(|m| m.event_name.as_str()).collect();
    ensure!(
        names == BTreeSet::from(["ActivitiesStream", "ConnectionsStream", "SyncStateStream"]),
        "{names:?}"
    );
    Ok(spawn_all(
        mappings,
        &h.stack.sdk,
        Arc::new(invoker),
        StreamOptions {
            poll_interval: Duration::from_millis(100),
            retry_pause: Duration::from_millis(100),
        },
    ))
}

async fn set_up() -> Result<(Harness, UserKey)> {
    let tenant = new_tenant();
    let megan = new_user();
    let world = world(
        &tenant,
        DOMAIN,
        vec![user(&megan, UPN, "exchangeOnline", folders())],
        vec![],
    );
    let h = Harness::start(tenant.clone(), world).await?;
    h.add_tenant(&[DOMAIN]).await?;
    h.import_crm(&crm_file(&tenant)).await?;
    let key = h.connect(&megan, UPN).await?;
    Ok((h, key))
}

/// Checks what the platform received for a first run that stored `stored` and a second
/// that removed `removed`: each once (copies only with the same id), valid, content-free.
fn check(platform: &Platform, stored: &BTreeSet<String>, removed: &BTreeSet<String>) {
    let imported = platform.by_activity("ActivityImported");
    assert_eq!(&imported.keys().cloned().collect::<BTreeSet<_>>(), stored);
    let gone = platform.by_activity("ActivityRemoved");
    assert_eq!(&gone.keys().cloned().collect::<BTreeSet<_>>(), removed);
    for (activity, ids) in imported.iter().chain(gone.iter()) {
        assert_eq!(
            ids.len(),
            1,
            "{activity}: copies with different ids {ids:?}"
        );
    }
    assert!(
        platform.of("ActivityUpdated").is_empty(),
        "nothing changed between the runs"
    );
    for e in platform.of("ActivityRemoved") {
        assert_eq!(e["detail"]["reason"], "deleted");
    }
    let status = platform.of("ConnectionStatusChanged");
    assert!(!status.is_empty());
    assert!(
        status
            .iter()
            .all(|e| e["detail"]["status"] == "active" && e["detail"]["previousStatus"].is_null())
    );
    for e in &platform.received {
        assert_eq!(e["source"], SOURCE);
        let detail_type = e["detail-type"].as_str().unwrap_or_default();
        check_schema(detail_type, &e["detail"]);
        let text = e.to_string();
        for needle in [
            "acme.example",
            "other.example",
            "vendor.example",
            "Renewal",
            "Lunch",
            "Pricing",
            "Body of",
        ] {
            assert!(!text.contains(needle), "{needle} in {text}");
        }
    }
}

fn check_schema(detail_type: &str, detail: &Value) {
    let path = local_stack::repo_root()
        .join("docs/events")
        .join(format!("{detail_type}.schema.json"));
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
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

fn has_all(
    received: &[Value],
    stored: &BTreeSet<String>,
    removed: &BTreeSet<String>,
    runs: usize,
) -> bool {
    let ids = |t: &str| -> BTreeSet<String> {
        received
            .iter()
            .filter(|e| e["detail-type"] == t)
            .filter_map(|e| e["detail"]["activityId"].as_str().map(str::to_owned))
            .collect()
    };
    let completed = received
        .iter()
        .filter(|e| e["detail-type"] == "SyncRunCompleted")
        .filter_map(|e| e["detail"]["runId"].as_str())
        .collect::<BTreeSet<_>>()
        .len();
    ids("ActivityImported").is_superset(stored)
        && ids("ActivityRemoved").is_superset(removed)
        && completed >= runs
        && received
            .iter()
            .any(|e| e["detail-type"] == "ConnectionStatusChanged")
}

async fn delete_in_outlook(h: &Harness, key: &UserKey, internet_id: &str) -> Result<String> {
    let mail = h.stored_mail(key).await?;
    let target = mail
        .iter()
        .find(|m| m.internet_message_id.as_deref() == Some(internet_id))
        .with_context(|| format!("{internet_id} stored"))?;
    h.control(
        reqwest::Method::DELETE,
        &format!("/_sim/users/{UPN}/messages/{}", target.immutable_id),
        None,
    )
    .await?;
    Ok(ActivityId::mail(&target.immutable_id).as_str().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_activity_stored_or_removed_in_a_run_reaches_the_platform_once() -> Result<()> {
    let (h, key) = set_up().await?;
    let mut platform = Platform::subscribe(&h).await?;
    let streams = start_streams(&h, publisher_invoker(&h, Arc::new(AtomicBool::new(false)))?)?;

    assert_eq!(h.run(&key).await, JobOutcome::Done);
    let stored = activity_ids(&h.stored(&key).await?);
    assert_eq!(stored.len(), 3, "e01, e02, e04 match the CRM: {stored:?}");
    let removed = BTreeSet::from([delete_in_outlook(&h, &key, "<e02-domain@test>").await?]);
    assert_eq!(h.run(&key).await, JobOutcome::Done);
    assert_eq!(
        activity_ids(&h.stored(&key).await?),
        &stored - &removed,
        "the deletion was applied"
    );

    platform
        .until("every event of both runs", |r| {
            has_all(r, &stored, &removed, 2)
        })
        .await?;
    check(&platform, &stored, &removed);
    let runs = platform.of("SyncRunCompleted");
    let first = runs
        .iter()
        .find(|e| e["detail"]["counts"]["stored"] == 3)
        .expect("the first run's SyncRunCompleted, with its counts");
    assert_eq!(first["detail"]["outcome"], "succeeded");
    assert_eq!(first["detail"]["syncKind"], "mail");
    assert!(
        first["detail"]["counts"]["discarded"].as_u64() >= Some(2),
        "{first}"
    );
    for s in streams {
        s.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_not_followed_by_a_publish_are_still_delivered_when_the_publisher_recovers()
-> Result<()> {
    let (h, key) = set_up().await?;
    let mut platform = Platform::subscribe(&h).await?;

    // The worker writes and nothing publishes: the process "crashed" right after its
    // writes, before any publish could have happened (there is none in the worker).
    assert_eq!(h.run(&key).await, JobOutcome::Done);
    let stored = activity_ids(&h.stored(&key).await?);
    let removed = BTreeSet::from([delete_in_outlook(&h, &key, "<e01-contact@test>").await?]);
    assert_eq!(h.run(&key).await, JobOutcome::Done);

    // Then the publisher starts, with EventBridge refusing connections.
    let broken = Arc::new(AtomicBool::new(true));
    let streams = start_streams(&h, publisher_invoker(&h, broken.clone())?)?;
    let activities = streams
        .iter()
        .find(|s| s.config.event_name == "ActivitiesStream")
        .expect("the activities stream");
    for _ in 0..600 {
        if activities.counts().invocations >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        activities.counts().invocations >= 3,
        "{:?}",
        activities.counts()
    );
    assert_eq!(
        activities.counts().done,
        0,
        "nothing checkpointed while failing"
    );
    assert_eq!(
        platform.receive().await?,
        0,
        "nothing delivered while failing"
    );

    // EventBridge is back: the stream retries from the first failed record.
    broken.store(false, Ordering::SeqCst);
    platform
        .until("every event after recovery", |r| {
            has_all(r, &stored, &removed, 2)
        })
        .await?;
    check(&platform, &stored, &removed);
    let counts: Vec<_> = streams.iter().map(|s| s.counts()).collect();
    assert!(
        counts.iter().all(|c| c.sent_to_on_failure == 0),
        "{counts:?}"
    );
    let dlq = h
        .stack
        .provisioned
        .attribute("EventPublisherDLQ", "QueueUrl")
        .context("EventPublisherDLQ")?
        .to_string();
    let waiting = local_stack::esm::queue_attributes(&h.sqs, &dlq).await?;
    assert_eq!(
        waiting
            .get("ApproximateNumberOfMessages")
            .map(String::as_str),
        Some("0")
    );
    for s in streams {
        s.stop().await?;
    }
    Ok(())
}
