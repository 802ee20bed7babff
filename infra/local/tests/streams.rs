//! The DynamoDB stream event source mapping on moto (`local_stack::streams`): records in
//! order as Lambda delivers them, partial batch failures retried from the named record,
//! function errors bisected and retried, then the batch described to the on-failure queue.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use local_stack::streams::{StreamHandle, StreamOptions, spawn_stream_mapping, stream_mappings};
use local_stack::{InProcessInvoker, Template, template_path, test_stack};
use serde_json::{Value, json};

const OPTIONS: StreamOptions = StreamOptions {
    poll_interval: Duration::from_millis(50),
    retry_pause: Duration::from_millis(20),
};

async fn put_activities(stack: &local_stack::TestStack, n: usize) {
    let ddb = aws_sdk_dynamodb::Client::new(&stack.sdk);
    for i in 0..n {
        ddb.put_item()
            .table_name(stack.var("ACTIVITIES_TABLE"))
            .item("owner", AttributeValue::S("t#u".into()))
            .item("activityId", AttributeValue::S(format!("mail#{i:02}")))
            .item("fingerprint", AttributeValue::S(format!("{i:064}")))
            .send()
            .await
            .unwrap();
    }
}

fn activities_mapping(stack: &local_stack::TestStack) -> local_stack::streams::StreamMappingConfig {
    let template = Template::load(&template_path()).unwrap();
    let mappings = stream_mappings(&template, &stack.provisioned).unwrap();
    let m = mappings
        .into_iter()
        .find(|m| m.event_name == "ActivitiesStream")
        .expect("EventPublisherFunction.Events.ActivitiesStream");
    assert_eq!(m.binary, "event-publisher");
    assert_eq!(m.starting_position, "TRIM_HORIZON");
    assert!(m.report_batch_item_failures && m.bisect_on_function_error);
    assert_eq!(m.maximum_retry_attempts, Some(10));
    assert!(m.on_failure_queue_url.is_some());
    m
}

/// The activities stream's mapping, invoking `invoker`.
fn spawn_activities(stack: &local_stack::TestStack, invoker: InProcessInvoker) -> StreamHandle {
    spawn_stream_mapping(
        activities_mapping(stack),
        &stack.sdk,
        Arc::new(invoker),
        OPTIONS,
    )
}

fn ids(batch: &Value) -> Vec<String> {
    batch["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["dynamodb"]["Keys"]["activityId"]["S"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

async fn wait_for(mut done: impl FnMut() -> bool) {
    for _ in 0..400 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_failure_is_retried_from_the_named_record_in_order() {
    let stack = test_stack().await.unwrap();
    put_activities(&stack, 6).await;
    let seen: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let log = seen.clone();
    let invoker = InProcessInvoker::new().with("event-publisher", move |event: Value| {
        let log = log.clone();
        async move {
            let batch = ids(&event);
            let first_time = log.lock().unwrap().is_empty();
            log.lock().unwrap().push(batch);
            let records = event["Records"].as_array().unwrap();
            assert_eq!(records[0]["eventSource"], "aws:dynamodb");
            assert_eq!(records[0]["eventName"], "INSERT");
            assert!(records[0]["dynamodb"]["NewImage"]["fingerprint"]["S"].is_string());
            assert!(records[0]["dynamodb"]["ApproximateCreationDateTime"].is_number());
            if first_time {
                // The third record (and so everything after it) failed.
                let seq = records[2]["dynamodb"]["SequenceNumber"].clone();
                return Ok(json!({"batchItemFailures": [{"itemIdentifier": seq}]}));
            }
            Ok(json!({"batchItemFailures": []}))
        }
    });
    let handle = spawn_activities(&stack, invoker);
    wait_for(|| handle.counts().done >= 6).await;
    let counts = handle.counts();
    handle.stop().await.unwrap();
    assert_eq!(counts.done, 6, "{counts:?}");
    assert_eq!(counts.sent_to_on_failure, 0);
    let seen = seen.lock().unwrap().clone();
    let all: Vec<String> = (0..6).map(|i| format!("mail#{i:02}")).collect();
    assert_eq!(seen[0], all, "one batch, in write order");
    assert_eq!(seen[1], all[2..].to_vec(), "retried from the named record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_function_is_bisected_retried_then_described_to_the_on_failure_queue() {
    let stack = test_stack().await.unwrap();
    put_activities(&stack, 4).await;
    let calls: Arc<Mutex<Vec<usize>>> = Arc::default();
    let log = calls.clone();
    let invoker = InProcessInvoker::new().with("event-publisher", move |event: Value| {
        let log = log.clone();
        async move {
            let batch = ids(&event);
            log.lock().unwrap().push(batch.len());
            // mail#01 can never be published; the others can.
            if batch.iter().any(|id| id == "mail#01") {
                return Err("boom".to_string());
            }
            Ok(json!({"batchItemFailures": []}))
        }
    });
    let mut config = activities_mapping(&stack);
    config.maximum_retry_attempts = Some(2);
    let dlq = config.on_failure_queue_url.clone().unwrap();
    let handle = spawn_stream_mapping(config, &stack.sdk, Arc::new(invoker), OPTIONS);
    wait_for(|| {
        let c = handle.counts();
        c.done + c.sent_to_on_failure >= 4
    })
    .await;
    let counts = handle.counts();
    handle.stop().await.unwrap();
    assert_eq!(
        (counts.done, counts.sent_to_on_failure),
        (3, 1),
        "{counts:?}"
    );
    // 4 → [2, 2] → [1, 1] for the failing half, then 2 retries of the single record.
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls, vec![4, 2, 1, 1, 1, 1, 2], "{calls:?}");

    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let out = sqs
        .receive_message()
        .queue_url(&dlq)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    let messages = out.messages.unwrap_or_default();
    assert_eq!(messages.len(), 1);
    let description: Value = serde_json::from_str(messages[0].body().unwrap()).unwrap();
    assert_eq!(
        description["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert_eq!(description["requestContext"]["approximateInvokeCount"], 3);
    let info = &description["DDBStreamBatchInfo"];
    assert_eq!(info["batchSize"], 1);
    assert_eq!(info["startSequenceNumber"], info["endSequenceNumber"]);
    let keys: BTreeMap<&str, &Value> = info
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    assert!(keys.contains_key("streamArn") && keys.contains_key("shardId"));
}

/// infra/local/moto_server.py shares a table's stream with moto's transaction backup: a
/// cancelled TransactWriteItems must still leave no stream record (DynamoDB: all or none),
/// and a committed one exactly its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_transaction_leaves_no_stream_record() {
    let stack = test_stack().await.unwrap();
    let ddb = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let table = stack.var("ACTIVITIES_TABLE");
    put_activities(&stack, 1).await;
    let put = |id: &str| {
        aws_sdk_dynamodb::types::TransactWriteItem::builder()
            .put(
                aws_sdk_dynamodb::types::Put::builder()
                    .table_name(table)
                    .item("owner", AttributeValue::S("t#u".into()))
                    .item("activityId", AttributeValue::S(id.into()))
                    .item("fingerprint", AttributeValue::S("f".repeat(64)))
                    .build()
                    .unwrap(),
            )
            .build()
    };
    let absent = aws_sdk_dynamodb::types::TransactWriteItem::builder()
        .condition_check(
            aws_sdk_dynamodb::types::ConditionCheck::builder()
                .table_name(table)
                .key("owner", AttributeValue::S("t#u".into()))
                .key("activityId", AttributeValue::S("mail#absent".into()))
                .condition_expression("attribute_exists(activityId)")
                .build()
                .unwrap(),
        )
        .build();
    let cancelled = ddb
        .transact_write_items()
        .transact_items(put("mail#cancelled"))
        .transact_items(absent)
        .send()
        .await;
    assert!(
        cancelled.is_err(),
        "the condition check fails the whole transaction"
    );
    ddb.transact_write_items()
        .transact_items(put("mail#committed"))
        .send()
        .await
        .unwrap();

    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let invoker = InProcessInvoker::new().with("event-publisher", move |event: Value| {
        let log = log.clone();
        async move {
            log.lock().unwrap().extend(ids(&event));
            Ok(json!({"batchItemFailures": []}))
        }
    });
    let handle = spawn_activities(&stack, invoker);
    wait_for(|| handle.counts().done >= 2).await;
    // A moment more, for a third record if there were one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    handle.stop().await.unwrap();
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec!["mail#00".to_owned(), "mail#committed".to_owned()]
    );
}
