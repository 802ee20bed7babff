//! The event plumbing against moto, with in-process functions: SQS event source mappings
//! (partial batch failures, whole-batch failures, the DLQ after maxReceiveCount,
//! MaximumConcurrency) and EventBridge schedules (event shape, timing, fire now).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::SqsEvent;
use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::MessageAttributeValue;
use local_stack::esm::{EsmOptions, MappingConfig, event_source_mappings, spawn_mapping};
use local_stack::invoke::{InProcessInvoker, Invoker};
use local_stack::scheduler::{SimClock, fire_now, scheduled_targets, spawn_scheduler};
use local_stack::{Outcome, Template, TestStack};
use serde_json::{Value, json};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plumbing-template.yaml")
}

async fn stack() -> (TestStack, Template) {
    let stack = local_stack::test_stack_from(&fixture(), &BTreeMap::new())
        .await
        .expect("stack");
    (stack, Template::load(&fixture()).expect("template"))
}

fn mapping(stack: &TestStack, template: &Template, function: &str) -> MappingConfig {
    event_source_mappings(template, &stack.provisioned)
        .expect("mappings")
        .into_iter()
        .find(|m| m.function_logical_id == function)
        .expect("mapping of the function")
}

const FAST: EsmOptions = EsmOptions {
    wait_time_seconds: 1,
};

async fn send(stack: &TestStack, queue: &str, bodies: &[&str]) {
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let url = stack.provisioned.physical(queue).expect("queue");
    for body in bodies {
        sqs.send_message()
            .queue_url(url)
            .message_body(*body)
            .send()
            .await
            .expect("send");
    }
}

/// How many messages a queue holds, visible or not.
async fn depth(stack: &TestStack, queue: &str) -> (u64, u64) {
    let attrs = local_stack::esm::queue_attributes(
        &aws_sdk_sqs::Client::new(&stack.sdk),
        stack.provisioned.physical(queue).expect("queue"),
    )
    .await
    .expect("attributes");
    let n = |k: &str| attrs.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    (
        n("ApproximateNumberOfMessages"),
        n("ApproximateNumberOfMessagesNotVisible"),
    )
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One record as a function saw it.
#[derive(Debug, Clone)]
struct Seen {
    body: String,
    receive_count: u32,
    at: Instant,
}

fn seen_records(event: &Value) -> Vec<(String, String, u32)> {
    event["Records"]
        .as_array()
        .expect("Records")
        .iter()
        .map(|r| {
            (
                r["messageId"].as_str().unwrap().to_string(),
                r["body"].as_str().unwrap().to_string(),
                r["attributes"]["ApproximateReceiveCount"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap(),
            )
        })
        .collect()
}

/// A function that reports the records `fail` picks as failures and logs what it saw.
fn reporting(
    log: Arc<Mutex<Vec<Seen>>>,
    fail: impl Fn(&str, u32) -> bool + Send + Sync + 'static,
) -> InProcessInvoker {
    let fail = Arc::new(fail);
    InProcessInvoker::new().with("worker", move |event: Value| {
        let log = log.clone();
        let fail = fail.clone();
        async move {
            let mut failures = Vec::new();
            for (id, body, count) in seen_records(&event) {
                log.lock().unwrap().push(Seen {
                    body: body.clone(),
                    receive_count: count,
                    at: Instant::now(),
                });
                if fail(&body, count) {
                    failures.push(json!({ "itemIdentifier": id }));
                }
            }
            Ok(json!({ "batchItemFailures": failures }))
        }
    })
}

fn bodies_seen(log: &Arc<Mutex<Vec<Seen>>>, body: &str) -> Vec<Seen> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|s| s.body == body)
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_reported_failure_comes_back_after_the_visibility_timeout_alone() {
    let (stack, template) = stack().await;
    let log = Arc::new(Mutex::new(Vec::new()));
    // "retry" fails on its first delivery only.
    let invoker = reporting(log.clone(), |body, count| body == "retry" && count == 1);
    send(&stack, "WorkerQueue", &["ok-1", "retry", "ok-2"]).await;
    let esm = spawn_mapping(
        mapping(&stack, &template, "WorkerFunction"),
        aws_sdk_sqs::Client::new(&stack.sdk),
        Arc::new(invoker),
        FAST,
    );
    wait_for(
        "the retried record's second delivery",
        Duration::from_secs(20),
        || bodies_seen(&log, "retry").len() >= 2,
    )
    .await;
    // Let anything else that would (wrongly) come back come back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let counts = esm.counts();
    esm.stop().await.unwrap();

    let retry = bodies_seen(&log, "retry");
    assert_eq!(retry.len(), 2, "{retry:?}");
    assert_eq!((retry[0].receive_count, retry[1].receive_count), (1, 2));
    let gap = retry[1].at - retry[0].at;
    assert!(
        gap >= Duration::from_millis(1500),
        "redelivered after {gap:?}, before the 2 s visibility timeout"
    );
    for ok in ["ok-1", "ok-2"] {
        assert_eq!(
            bodies_seen(&log, ok).len(),
            1,
            "{ok} was deleted after success"
        );
    }
    assert_eq!(depth(&stack, "WorkerQueue").await, (0, 0));
    assert_eq!(depth(&stack, "WorkerDLQ").await, (0, 0));
    assert_eq!(counts.deleted, 3);
    assert_eq!(counts.retained, 1);
    assert_eq!(counts.failed_batches, 0);
}

#[tokio::test]
async fn a_record_that_keeps_failing_moves_to_the_dlq_after_max_receive_count() {
    let (stack, template) = stack().await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let invoker = reporting(log.clone(), |body, _| body == "poison");
    send(&stack, "WorkerQueue", &["poison", "fine"]).await;
    let esm = spawn_mapping(
        mapping(&stack, &template, "WorkerFunction"),
        aws_sdk_sqs::Client::new(&stack.sdk),
        Arc::new(invoker),
        FAST,
    );
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let dlq = stack.provisioned.physical("WorkerDLQ").unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let out = sqs
            .receive_message()
            .queue_url(&dlq)
            .wait_time_seconds(1)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap();
        if let Some(m) = out.messages.unwrap_or_default().pop() {
            break m;
        }
        assert!(Instant::now() < deadline, "nothing reached the DLQ");
    };
    esm.stop().await.unwrap();

    assert_eq!(dead.body(), Some("poison"));
    // maxReceiveCount 3: delivered three times, moved on the fourth receive.
    let poison = bodies_seen(&log, "poison");
    assert_eq!(
        poison.iter().map(|s| s.receive_count).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(bodies_seen(&log, "fine").len(), 1);
    assert_eq!(depth(&stack, "WorkerQueue").await, (0, 0));
}

#[tokio::test]
async fn a_function_error_fails_the_whole_batch() {
    let (stack, template) = stack().await;
    let calls = Arc::new(Mutex::new(Vec::<Vec<(String, u32)>>::new()));
    let seen = calls.clone();
    let invoker = InProcessInvoker::new().with("plain", move |event: Value| {
        let seen = seen.clone();
        async move {
            let records: Vec<(String, u32)> = seen_records(&event)
                .into_iter()
                .map(|(_, body, count)| (body, count))
                .collect();
            let first = records.iter().any(|(_, count)| *count == 1);
            seen.lock().unwrap().push(records);
            if first {
                Err("boom".to_string())
            } else {
                Ok(Value::Null)
            }
        }
    });
    send(&stack, "PlainQueue", &["a", "b", "c"]).await;
    let esm = spawn_mapping(
        mapping(&stack, &template, "PlainFunction"),
        aws_sdk_sqs::Client::new(&stack.sdk),
        Arc::new(invoker),
        FAST,
    );
    wait_for(
        "every record delivered twice",
        Duration::from_secs(20),
        || {
            calls
                .lock()
                .unwrap()
                .iter()
                .flatten()
                .filter(|(_, c)| *c == 2)
                .count()
                == 3
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let counts = esm.counts();
    esm.stop().await.unwrap();

    let all: Vec<(String, u32)> = calls.lock().unwrap().iter().flatten().cloned().collect();
    for body in ["a", "b", "c"] {
        let mut counts: Vec<u32> = all
            .iter()
            .filter(|(b, _)| b == body)
            .map(|(_, c)| *c)
            .collect();
        counts.sort();
        assert_eq!(
            counts,
            [1, 2],
            "{body}: kept after the error, deleted after success"
        );
    }
    assert!(counts.failed_batches >= 1);
    assert_eq!(counts.deleted, 3);
    assert_eq!(depth(&stack, "PlainQueue").await, (0, 0));
}

#[tokio::test]
async fn an_unknown_item_identifier_fails_the_whole_batch() {
    let (stack, template) = stack().await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    let invoker = InProcessInvoker::new().with("worker", move |event: Value| {
        let seen = seen.clone();
        async move {
            let records = seen_records(&event);
            let first = records.iter().any(|(_, _, count)| *count == 1);
            for (_, body, count) in records {
                seen.lock().unwrap().push((body, count));
            }
            // On the first delivery: an identifier that is not a message of the batch.
            Ok(if first {
                json!({ "batchItemFailures": [{ "itemIdentifier": "not-a-message-id" }] })
            } else {
                json!({ "batchItemFailures": [] })
            })
        }
    });
    send(&stack, "WorkerQueue", &["x", "y"]).await;
    let esm = spawn_mapping(
        mapping(&stack, &template, "WorkerFunction"),
        aws_sdk_sqs::Client::new(&stack.sdk),
        Arc::new(invoker),
        FAST,
    );
    wait_for("both records redelivered", Duration::from_secs(20), || {
        log.lock().unwrap().iter().filter(|(_, c)| *c == 2).count() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    esm.stop().await.unwrap();
    let mut all = log.lock().unwrap().clone();
    all.sort();
    assert_eq!(
        all,
        [
            ("x".into(), 1),
            ("x".into(), 2),
            ("y".into(), 1),
            ("y".into(), 2)
        ]
    );
    assert_eq!(depth(&stack, "WorkerQueue").await, (0, 0));
}

#[tokio::test]
async fn maximum_concurrency_bounds_invocations_in_flight() {
    let (stack, template) = stack().await;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let (f, m, d) = (in_flight.clone(), max_seen.clone(), done.clone());
    let invoker = InProcessInvoker::new().with("busy", move |event: Value| {
        let (f, m, d) = (f.clone(), m.clone(), d.clone());
        async move {
            let now = f.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(400)).await;
            d.fetch_add(event["Records"].as_array().unwrap().len(), Ordering::SeqCst);
            f.fetch_sub(1, Ordering::SeqCst);
            Ok(json!({}))
        }
    });
    let bodies: Vec<String> = (0..24).map(|i| format!("job-{i}")).collect();
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    send(&stack, "BusyQueue", &refs).await;
    let config = mapping(&stack, &template, "BusyFunction");
    assert_eq!((config.batch_size, config.maximum_concurrency), (2, 3));
    let esm = spawn_mapping(
        config,
        aws_sdk_sqs::Client::new(&stack.sdk),
        Arc::new(invoker),
        FAST,
    );
    wait_for("all 24 records processed", Duration::from_secs(30), || {
        done.load(Ordering::SeqCst) == 24
    })
    .await;
    // The handler counts a record before the mapping deletes it: the last batch's
    // DeleteMessageBatch may still be in flight when the count reaches 24.
    wait_for("all 24 records deleted", Duration::from_secs(10), || {
        esm.counts().deleted == 24
    })
    .await;
    let counts = esm.counts();
    esm.stop().await.unwrap();
    // 12+ batches of 400 ms each: enough to fill 3 slots, never a 4th.
    assert_eq!(max_seen.load(Ordering::SeqCst), 3);
    assert_eq!(counts.max_in_flight, 3);
    assert!(counts.batches >= 12, "{counts:?}");
    assert!(counts.records >= 24 && counts.deleted == 24, "{counts:?}");
    assert_eq!(depth(&stack, "BusyQueue").await, (0, 0));
}

#[tokio::test]
async fn sqs_events_have_lambdas_shape() {
    let (stack, template) = stack().await;
    let events = Arc::new(Mutex::new(Vec::<Value>::new()));
    let captured = events.clone();
    let invoker = InProcessInvoker::new().with("plain", move |event: Value| {
        let captured = captured.clone();
        async move {
            captured.lock().unwrap().push(event);
            Ok(Value::Null)
        }
    });
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let sent = sqs
        .send_message()
        .queue_url(stack.provisioned.physical("PlainQueue").unwrap())
        .message_body(r#"{"job":1}"#)
        .message_attributes(
            "kind",
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value("sync")
                .build()
                .unwrap(),
        )
        .message_attributes(
            "blob",
            MessageAttributeValue::builder()
                .data_type("Binary")
                .binary_value(Blob::new(b"\x00\x01".to_vec()))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let config = mapping(&stack, &template, "PlainFunction");
    let esm = spawn_mapping(config.clone(), sqs, Arc::new(invoker), FAST);
    wait_for("one event", Duration::from_secs(10), || {
        !events.lock().unwrap().is_empty()
    })
    .await;
    esm.stop().await.unwrap();

    let event = events.lock().unwrap()[0].clone();
    let record = &event["Records"][0];
    let keys: Vec<&str> = record
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut keys = keys;
    keys.sort();
    assert_eq!(
        keys,
        [
            "attributes",
            "awsRegion",
            "body",
            "eventSource",
            "eventSourceARN",
            "md5OfBody",
            "messageAttributes",
            "messageId",
            "receiptHandle"
        ]
    );
    assert_eq!(record["eventSource"], "aws:sqs");
    assert_eq!(record["eventSourceARN"], config.queue_arn.as_str());
    assert!(
        config
            .queue_arn
            .starts_with("arn:aws:sqs:us-east-1:123456789012:")
    );
    assert_eq!(record["awsRegion"], "us-east-1");
    assert_eq!(record["body"], r#"{"job":1}"#);
    assert_eq!(record["messageId"], sent.message_id().unwrap());
    assert_eq!(record["md5OfBody"], sent.md5_of_message_body().unwrap());
    for attribute in [
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
    ] {
        assert!(
            record["attributes"][attribute].is_string(),
            "{attribute} missing: {}",
            record["attributes"]
        );
    }
    assert_eq!(record["attributes"]["ApproximateReceiveCount"], "1");
    assert_eq!(
        record["messageAttributes"]["kind"],
        json!({"stringValue": "sync", "stringListValues": [], "binaryListValues": [], "dataType": "String"})
    );
    assert_eq!(record["messageAttributes"]["blob"]["binaryValue"], "AAE=");
    // The Rust runtime's own event types read it.
    let typed: SqsEvent = serde_json::from_value(event.clone()).expect("an SqsEvent");
    assert_eq!(typed.records[0].body.as_deref(), Some(r#"{"job":1}"#));
    assert_eq!(
        typed.records[0].message_attributes["kind"]
            .string_value
            .as_deref(),
        Some("sync")
    );
}

#[tokio::test]
async fn scheduled_events_have_eventbridges_shape_and_fire_on_time() {
    let (stack, template) = stack().await;
    let mut targets = scheduled_targets(&template, &stack.provisioned).unwrap();
    targets.sort_by(|a, b| a.event_name.cmp(&b.event_name));
    let stack_name = &stack.provisioned.stack_name;
    let names: Vec<&str> = targets.iter().map(|t| t.rule_name.as_str()).collect();
    assert_eq!(
        names,
        [
            format!("{stack_name}-nightly"),
            format!("{stack_name}-TickFunctionTick"),
        ]
    );
    let tick = targets[1].clone();
    assert_eq!(tick.binary, "ticker");
    assert_eq!(
        tick.rule_arn,
        format!("arn:aws:events:us-east-1:123456789012:rule/{stack_name}-TickFunctionTick")
    );

    let time = time::macros::datetime!(2026-03-04 08:15:00.250 UTC);
    let event = tick.event(time).unwrap();
    let id = event["id"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    assert_eq!(
        event,
        json!({
            "version": "0",
            "id": id,
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": "123456789012",
            "time": "2026-03-04T08:15:00Z",
            "region": "us-east-1",
            "resources": [tick.rule_arn],
            "detail": {}
        })
    );
    let typed: aws_lambda_events::eventbridge::EventBridgeEvent =
        serde_json::from_value(event).expect("an EventBridgeEvent");
    assert_eq!(typed.detail_type, "Scheduled Event");

    // rate(1 minute) at 120x: a firing every half second.
    let received = Arc::new(Mutex::new(Vec::<(Instant, Value)>::new()));
    let log = received.clone();
    let invoker: Arc<dyn Invoker> =
        Arc::new(InProcessInvoker::new().with("ticker", move |event| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push((Instant::now(), event));
                Ok(Value::Null)
            }
        }));
    let started = Instant::now();
    let scheduler = spawn_scheduler(vec![tick.clone()], SimClock::new(120.0), invoker.clone());
    wait_for("three ticks", Duration::from_secs(10), || {
        received.lock().unwrap().len() >= 3
    })
    .await;
    scheduler.stop().await;
    let got = received.lock().unwrap().clone();
    let first = got[0].0 - started;
    assert!(
        first >= Duration::from_millis(400) && first < Duration::from_millis(1500),
        "first tick after {first:?}: a rate fires one period after creation"
    );
    let times: Vec<time::OffsetDateTime> = got
        .iter()
        .map(|(_, e)| {
            time::OffsetDateTime::parse(
                e["time"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap()
        })
        .collect();
    // Simulated times one minute apart.
    assert_eq!(times[1] - times[0], time::Duration::minutes(1));
    assert!(
        got.iter()
            .all(|(_, e)| e["resources"][0] == tick.rule_arn.as_str())
    );

    // Fire now: one event, at once.
    let before = received.lock().unwrap().len();
    let outcome = fire_now(&*invoker, &targets[0]).await.unwrap();
    assert_eq!(outcome, Outcome::Ok(Value::Null));
    let after = received.lock().unwrap().clone();
    assert_eq!(after.len(), before + 1);
    assert_eq!(
        after.last().unwrap().1["resources"][0],
        format!("arn:aws:events:us-east-1:123456789012:rule/{stack_name}-nightly")
    );
}
