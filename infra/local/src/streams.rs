//! The platform's events locally: the template's `AWS::Events::EventBus` created on moto,
//! and Lambda's DynamoDB stream event source mapping: for every `Type: DynamoDB` event of
//! the template's functions, read the table's stream on moto (DescribeStream,
//! GetShardIterator, GetRecords) and invoke the function with batches as Lambda does.
//!
//! What Lambda does, and so what this does ("Using AWS Lambda with Amazon DynamoDB" and
//! "Configuring partial batch response with DynamoDB and Lambda", Lambda developer guide,
//! https://docs.aws.amazon.com/lambda/latest/dg/with-ddb.html and
//! https://docs.aws.amazon.com/lambda/latest/dg/services-ddb-batchfailurereporting.html,
//! read 2026-12-06):
//! - Each shard is read in order from `StartingPosition` (TRIM_HORIZON: the oldest record;
//!   LATEST: only new ones); a batch is up to `BatchSize` records gathered for up to
//!   `MaximumBatchingWindowInSeconds`. The event is `{"Records": [...]}`, each record with
//!   `eventID`, `eventName`, `eventVersion`, `eventSource` "aws:dynamodb", `awsRegion`,
//!   `dynamodb` (`ApproximateCreationDateTime` in epoch seconds, `Keys`, `NewImage`,
//!   `OldImage`, `SequenceNumber`, `SizeBytes`, `StreamViewType`), `eventSourceARN`, and
//!   `userIdentity` for TTL deletions.
//! - The shard does not move on while a batch fails: a failed invocation retries the whole
//!   batch; with `ReportBatchItemFailures`, a response naming a record's `SequenceNumber`
//!   checkpoints the records before it and retries from it (the lowest one named counts;
//!   an empty or null list is success; a malformed response fails the whole batch).
//! - `BisectBatchOnFunctionError` splits a failed batch in two and retries each half
//!   (a split does not count as a retry); `MaximumRetryAttempts` (-1: until the record
//!   expires) bounds the retries, after which a description of the batch (shard, sequence
//!   range, condition) goes to `DestinationConfig.OnFailure` and the shard moves on.
//!
//! Moto 5.2.5 keeps one shard per table (`StreamShard` in `moto/dynamodb/models/table.py`,
//! read 2026-12-06), records every PutItem, UpdateItem, DeleteItem and transaction write,
//! and never expires items by TTL (so `userIdentity` never appears locally).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use aws_config::SdkConfig;
use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::functions::as_u64;
use crate::invoke::{Invoker, Outcome};
use crate::provision::Provisioned;
use crate::template::{Resolver, Template};

/// Creates an `AWS::Events::EventBus`: `Ref` is its name, `Arn` its ARN.
pub async fn create_event_bus(
    sdk: &SdkConfig,
    id: &str,
    stack: &str,
    props: &Value,
    resolver: &mut Resolver,
) -> Result<String> {
    let name = props
        .get("Name")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{stack}-{id}"));
    let events = aws_sdk_eventbridge::Client::new(sdk);
    let out = events
        .create_event_bus()
        .name(&name)
        .send()
        .await
        .context("CreateEventBus")?;
    let arn = out
        .event_bus_arn()
        .map(str::to_string)
        .unwrap_or_else(|| format!("arn:aws:events:us-east-1:123456789012:event-bus/{name}"));
    resolver.attrs.insert((id.to_string(), "Arn".into()), arn);
    resolver
        .attrs
        .insert((id.to_string(), "Name".into()), name.clone());
    Ok(name)
}

/// Subscribes an SQS queue to every event of `source` on a bus, as the platform does with
/// a rule (README, "Events"): creates the queue, its policy letting EventBridge send, and
/// the rule. Returns the queue URL. For tests, the demo and `make up`.
pub async fn subscribe_queue(
    sdk: &SdkConfig,
    bus_name: &str,
    source: &str,
    queue_name: &str,
) -> Result<String> {
    subscribe_queue_to(sdk, bus_name, &json!({ "source": [source] }), queue_name).await
}

/// As [`subscribe_queue`], for the events matching an EventBridge event `pattern`.
pub async fn subscribe_queue_to(
    sdk: &SdkConfig,
    bus_name: &str,
    pattern: &serde_json::Value,
    queue_name: &str,
) -> Result<String> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let events = aws_sdk_eventbridge::Client::new(sdk);
    let url = sqs
        .create_queue()
        .queue_name(queue_name)
        .send()
        .await
        .context("CreateQueue")?
        .queue_url
        .ok_or_else(|| anyhow!("CreateQueue returned no URL"))?;
    let arn = crate::esm::queue_attributes(&sqs, &url)
        .await?
        .get("QueueArn")
        .cloned()
        .ok_or_else(|| anyhow!("no QueueArn"))?;
    let rule = format!("{queue_name}-rule");
    let rule_arn = events
        .put_rule()
        .name(&rule)
        .event_bus_name(bus_name)
        .event_pattern(pattern.to_string())
        .send()
        .await
        .context("PutRule")?
        .rule_arn
        .unwrap_or_default();
    // The queue policy EventBridge needs to deliver ("Amazon SQS permissions", EventBridge
    // user guide, https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-resource-based.html#eb-sqs-permissions,
    // read 2026-12-06).
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
        }],
    });
    sqs.set_queue_attributes()
        .queue_url(&url)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::Policy,
            policy.to_string(),
        )
        .send()
        .await
        .context("SetQueueAttributes")?;
    events
        .put_targets()
        .rule(&rule)
        .event_bus_name(bus_name)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("platform-queue")
                .arn(&arn)
                .build()?,
        )
        .send()
        .await
        .context("PutTargets")?;
    Ok(url)
}

/// One DynamoDB event source, resolved against a provisioned stack.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StreamMappingConfig {
    pub function_logical_id: String,
    pub binary: String,
    pub event_name: String,
    pub stream_arn: String,
    pub region: String,
    pub starting_position: String,
    pub batch_size: u32,
    pub batching_window: Duration,
    pub report_batch_item_failures: bool,
    pub bisect_on_function_error: bool,
    /// `None`: retry until the record expires (-1, Lambda's default).
    pub maximum_retry_attempts: Option<u32>,
    /// The on-failure SQS queue's URL, if one is configured.
    pub on_failure_queue_url: Option<String>,
    pub enabled: bool,
}

/// Lambda's default batch size for DynamoDB streams.
pub const DEFAULT_BATCH_SIZE: u64 = 100;

/// Every `Type: DynamoDB` event source of the template, resolved.
pub fn stream_mappings(
    template: &Template,
    provisioned: &Provisioned,
) -> Result<Vec<StreamMappingConfig>> {
    let mut out = Vec::new();
    for function in template.functions()? {
        let Some((_, resource)) = template
            .resources
            .iter()
            .find(|(id, _)| *id == function.logical_id)
        else {
            continue;
        };
        let Some(events) = resource
            .pointer("/Properties/Events")
            .and_then(Value::as_object)
        else {
            continue;
        };
        for (event_name, event) in events {
            if event.get("Type").and_then(Value::as_str) != Some("DynamoDB") {
                continue;
            }
            let context = || format!("{}.Events.{event_name}", function.logical_id);
            let props = event.get("Properties").cloned().unwrap_or(Value::Null);
            let binary = function
                .binary
                .clone()
                .ok_or_else(|| anyhow!("no Metadata.BuildProperties.Binary"))
                .with_context(context)?;
            let stream = props
                .get("Stream")
                .ok_or_else(|| anyhow!("DynamoDB without Stream"))
                .and_then(|s| provisioned.resolve_string(s))
                .with_context(context)?;
            let number = |key: &str, default: u64| -> Result<u64> {
                match props.get(key) {
                    None => Ok(default),
                    Some(v) => {
                        let r = provisioned.resolve(v)?;
                        as_u64(&r).ok_or_else(|| anyhow!("{key} must be a whole number: {r}"))
                    }
                }
            };
            let retries = match props.get("MaximumRetryAttempts") {
                None => None,
                Some(v) => {
                    let r = provisioned.resolve(v)?;
                    match r
                        .as_i64()
                        .or_else(|| r.as_str().and_then(|s| s.parse().ok()))
                    {
                        Some(-1) => None,
                        Some(n) if n >= 0 => Some(n as u32),
                        _ => {
                            return Err(anyhow!("MaximumRetryAttempts: {r}")).with_context(context);
                        }
                    }
                }
            };
            let on_failure_queue_url = match props
                .pointer("/DestinationConfig/OnFailure/Destination")
            {
                None => None,
                Some(d) => {
                    let arn = provisioned.resolve_string(d).with_context(context)?;
                    let id = provisioned
                        .resolver
                        .attrs
                        .iter()
                        .find(|((_, attr), value)| attr == "Arn" && **value == arn)
                        .map(|((id, _), _)| id.clone())
                        .ok_or_else(|| {
                            anyhow!("on-failure destination {arn} is not a queue of this template")
                        })
                        .with_context(context)?;
                    Some(
                        provisioned
                            .attribute(&id, "QueueUrl")
                            .ok_or_else(|| anyhow!("{id} has no QueueUrl"))?
                            .to_string(),
                    )
                }
            };
            out.push(StreamMappingConfig {
                function_logical_id: function.logical_id.clone(),
                binary,
                event_name: event_name.clone(),
                stream_arn: stream,
                region: provisioned.region.clone(),
                starting_position: props
                    .get("StartingPosition")
                    .and_then(Value::as_str)
                    .unwrap_or("TRIM_HORIZON")
                    .to_string(),
                batch_size: number("BatchSize", DEFAULT_BATCH_SIZE).with_context(context)? as u32,
                batching_window: Duration::from_secs(
                    number("MaximumBatchingWindowInSeconds", 0).with_context(context)?,
                ),
                report_batch_item_failures: props
                    .get("FunctionResponseTypes")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().any(|t| t == "ReportBatchItemFailures")),
                bisect_on_function_error: props
                    .get("BisectBatchOnFunctionError")
                    .is_some_and(|v| v == true || v == "true"),
                maximum_retry_attempts: retries,
                on_failure_queue_url,
                enabled: props
                    .get("Enabled")
                    .is_none_or(|v| v == true || v == "true"),
            });
        }
    }
    Ok(out)
}

fn attribute_json(v: &AttributeValue) -> Value {
    let b64 = |b: &[u8]| Value::from(base64::engine::general_purpose::STANDARD.encode(b));
    match v {
        AttributeValue::S(s) => json!({"S": s}),
        AttributeValue::N(n) => json!({"N": n}),
        AttributeValue::B(b) => json!({"B": b64(b.as_ref())}),
        AttributeValue::Ss(l) => json!({"SS": l}),
        AttributeValue::Ns(l) => json!({"NS": l}),
        AttributeValue::Bs(l) => {
            json!({"BS": l.iter().map(|b| b64(b.as_ref())).collect::<Vec<_>>()})
        }
        AttributeValue::M(m) => json!({"M": image_json(m)}),
        AttributeValue::L(l) => json!({"L": l.iter().map(attribute_json).collect::<Vec<_>>()}),
        AttributeValue::Null(b) => json!({"NULL": b}),
        AttributeValue::Bool(b) => json!({"BOOL": b}),
        _ => Value::Null,
    }
}

fn image_json(image: &std::collections::HashMap<String, AttributeValue>) -> Value {
    Value::Object(
        image
            .iter()
            .map(|(k, v)| (k.clone(), attribute_json(v)))
            .collect(),
    )
}

/// The `Records` entry Lambda builds from one stream record.
pub fn record(r: &Record, stream_arn: &str, region: &str) -> Value {
    let mut ddb = Map::new();
    if let Some(s) = r.dynamodb() {
        if let Some(at) = s.approximate_creation_date_time() {
            ddb.insert("ApproximateCreationDateTime".into(), at.secs().into());
        }
        if let Some(k) = s.keys() {
            ddb.insert("Keys".into(), image_json(k));
        }
        if let Some(i) = s.new_image() {
            ddb.insert("NewImage".into(), image_json(i));
        }
        if let Some(i) = s.old_image() {
            ddb.insert("OldImage".into(), image_json(i));
        }
        ddb.insert(
            "SequenceNumber".into(),
            s.sequence_number().unwrap_or_default().into(),
        );
        if let Some(n) = s.size_bytes() {
            ddb.insert("SizeBytes".into(), n.into());
        }
        if let Some(v) = s.stream_view_type() {
            ddb.insert("StreamViewType".into(), v.as_str().into());
        }
    }
    let mut out = json!({
        "eventID": r.event_id().unwrap_or_default(),
        "eventName": r.event_name().map(|n| n.as_str()).unwrap_or_default(),
        "eventVersion": r.event_version().unwrap_or("1.1"),
        "eventSource": "aws:dynamodb",
        "awsRegion": r.aws_region().unwrap_or(region),
        "dynamodb": ddb,
        "eventSourceARN": stream_arn,
    });
    if let Some(u) = r.user_identity() {
        out["userIdentity"] = json!({"type": u.r#type(), "principalId": u.principal_id()});
    }
    out
}

fn seq(record: &Value) -> &str {
    record
        .pointer("/dynamodb/SequenceNumber")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// How a batch's invocation ended, by Lambda's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Every record done.
    Done,
    /// Records from this index on are to be retried.
    FailedFrom(usize),
    /// The invocation failed (function error, or a response that is not a batch response).
    Failed(String),
}

/// Reads a stream batch's response.
pub fn settle_response(response: &Value, batch: &[Value]) -> Settled {
    let failures = match response {
        Value::Null => return Settled::Done,
        Value::Object(m) => match m.get("batchItemFailures") {
            None | Some(Value::Null) => return Settled::Done,
            Some(Value::Array(a)) => a,
            Some(other) => {
                return Settled::Failed(format!("batchItemFailures is not a list: {other}"));
            }
        },
        other => return Settled::Failed(format!("not a batch response: {other}")),
    };
    let mut lowest: Option<usize> = None;
    for f in failures {
        let Some(id) = f.get("itemIdentifier").and_then(Value::as_str) else {
            return Settled::Failed(format!("batch item failure without itemIdentifier: {f}"));
        };
        let Some(i) = batch.iter().position(|r| seq(r) == id) else {
            return Settled::Failed(format!("{id} is not a sequence number of the batch"));
        };
        lowest = Some(lowest.map_or(i, |l| l.min(i)));
    }
    match lowest {
        None => Settled::Done,
        Some(i) => Settled::FailedFrom(i),
    }
}

/// Tunables of the emulation itself.
#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    /// Pause between GetRecords calls on an empty shard (Lambda polls four times a second).
    pub poll_interval: Duration,
    /// Pause before a retry (doubling, up to 5 s).
    pub retry_pause: Duration,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(250),
            retry_pause: Duration::from_millis(200),
        }
    }
}

/// Counters of one mapping.
#[derive(Debug, Default)]
pub struct StreamStats {
    pub invocations: AtomicU64,
    pub failed_invocations: AtomicU64,
    /// Records checkpointed as processed.
    pub done: AtomicU64,
    /// Records given up on and described to the on-failure destination.
    pub sent_to_on_failure: AtomicU64,
}

/// A snapshot of [`StreamStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct StreamCounts {
    pub invocations: u64,
    pub failed_invocations: u64,
    pub done: u64,
    pub sent_to_on_failure: u64,
}

/// A running stream mapping.
pub struct StreamHandle {
    pub config: StreamMappingConfig,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<()>>,
    stats: Arc<StreamStats>,
}

impl StreamHandle {
    pub fn counts(&self) -> StreamCounts {
        let s = &self.stats;
        StreamCounts {
            invocations: s.invocations.load(Ordering::SeqCst),
            failed_invocations: s.failed_invocations.load(Ordering::SeqCst),
            done: s.done.load(Ordering::SeqCst),
            sent_to_on_failure: s.sent_to_on_failure.load(Ordering::SeqCst),
        }
    }

    /// Stops reading after the batch in flight.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("stream mapping task")?
    }
}

/// Starts reading one stream.
pub fn spawn_stream_mapping(
    config: StreamMappingConfig,
    sdk: &SdkConfig,
    invoker: Arc<dyn Invoker>,
    options: StreamOptions,
) -> StreamHandle {
    let (stop, stopped) = watch::channel(false);
    let stats = Arc::new(StreamStats::default());
    let poller = Poller {
        config: config.clone(),
        streams: aws_sdk_dynamodbstreams::Client::new(sdk),
        sqs: aws_sdk_sqs::Client::new(sdk),
        invoker,
        options,
        stats: stats.clone(),
        stopped,
    };
    let task = tokio::spawn(async move { poller.run().await });
    StreamHandle {
        config,
        stop,
        task,
        stats,
    }
}

struct Poller {
    config: StreamMappingConfig,
    streams: aws_sdk_dynamodbstreams::Client,
    sqs: aws_sdk_sqs::Client,
    invoker: Arc<dyn Invoker>,
    options: StreamOptions,
    stats: Arc<StreamStats>,
    stopped: watch::Receiver<bool>,
}

impl Poller {
    fn stopping(&self) -> bool {
        *self.stopped.borrow()
    }

    async fn pause(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = self.stopped.changed() => true,
        }
    }

    async fn run(mut self) -> Result<()> {
        // One shard on moto; with several, each would be read by its own poller.
        let shard_id = loop {
            match self.first_shard().await {
                Ok(id) => break id,
                Err(e) => {
                    tracing::warn!(stream = %self.config.stream_arn, error = %format!("{e:#}"), "DescribeStream failed");
                    if self.pause(Duration::from_secs(1)).await {
                        return Ok(());
                    }
                }
            }
        };
        let kind = ShardIteratorType::from(self.config.starting_position.as_str());
        let mut iterator = self
            .streams
            .get_shard_iterator()
            .stream_arn(&self.config.stream_arn)
            .shard_id(&shard_id)
            .shard_iterator_type(kind)
            .send()
            .await
            .context("GetShardIterator")?
            .shard_iterator
            .ok_or_else(|| anyhow!("no shard iterator"))?;
        while !self.stopping() {
            // Gather a batch: up to BatchSize, for up to the batching window.
            let mut batch: Vec<Value> = Vec::new();
            let mut window_end: Option<Instant> = None;
            loop {
                let wanted = (self.config.batch_size as usize - batch.len()).max(1) as i32;
                let out = match self
                    .streams
                    .get_records()
                    .shard_iterator(&iterator)
                    .limit(wanted)
                    .send()
                    .await
                {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::warn!(stream = %self.config.stream_arn, error = %aws_sdk_dynamodbstreams::error::DisplayErrorContext(&e), "GetRecords failed");
                        if self.pause(Duration::from_secs(1)).await {
                            return Ok(());
                        }
                        continue;
                    }
                };
                if let Some(next) = out.next_shard_iterator() {
                    iterator = next.to_string();
                }
                let got = out.records().len();
                batch.extend(
                    out.records()
                        .iter()
                        .map(|r| record(r, &self.config.stream_arn, &self.config.region)),
                );
                if batch.len() >= self.config.batch_size as usize
                    || (!batch.is_empty() && self.config.batching_window.is_zero())
                {
                    break;
                }
                if !batch.is_empty() {
                    let end =
                        *window_end.get_or_insert(Instant::now() + self.config.batching_window);
                    if Instant::now() >= end {
                        break;
                    }
                }
                if got == 0 {
                    let interval = self.options.poll_interval;
                    if self.pause(interval).await {
                        if batch.is_empty() {
                            return Ok(());
                        }
                        break;
                    }
                }
            }
            if !batch.is_empty() {
                self.process(batch, &shard_id).await?;
            }
        }
        Ok(())
    }

    async fn first_shard(&self) -> Result<String> {
        let out = self
            .streams
            .describe_stream()
            .stream_arn(&self.config.stream_arn)
            .send()
            .await
            .context("DescribeStream")?;
        out.stream_description()
            .and_then(|d| d.shards().first())
            .and_then(|s| s.shard_id())
            .map(str::to_string)
            .ok_or_else(|| anyhow!("the stream has no shard"))
    }

    /// Invokes until the batch is done or given up on; the shard waits meanwhile.
    async fn process(&mut self, batch: Vec<Value>, shard_id: &str) -> Result<()> {
        let mut work: VecDeque<(Vec<Value>, u32)> = VecDeque::from([(batch, 0)]);
        let mut pause = self.options.retry_pause;
        while let Some((records, retries)) = work.pop_front() {
            let event = json!({ "Records": records });
            self.stats.invocations.fetch_add(1, Ordering::SeqCst);
            let outcome = self.invoker.invoke(&self.config.binary, &event).await;
            let settled = match outcome {
                Ok(Outcome::Ok(resp)) if self.config.report_batch_item_failures => {
                    settle_response(&resp, &records)
                }
                Ok(Outcome::Ok(_)) => Settled::Done,
                Ok(Outcome::FunctionError {
                    error_type,
                    error_message,
                }) => Settled::Failed(format!("{error_type}: {error_message}")),
                Err(e) => Settled::Failed(e.to_string()),
            };
            let (retry, reason) = match settled {
                Settled::Done => {
                    self.stats
                        .done
                        .fetch_add(records.len() as u64, Ordering::SeqCst);
                    pause = self.options.retry_pause;
                    continue;
                }
                Settled::FailedFrom(i) => {
                    self.stats.done.fetch_add(i as u64, Ordering::SeqCst);
                    (records[i..].to_vec(), "partial batch failure".to_string())
                }
                Settled::Failed(reason) => {
                    self.stats.failed_invocations.fetch_add(1, Ordering::SeqCst);
                    if self.config.bisect_on_function_error && records.len() > 1 {
                        let mut first = records;
                        let second = first.split_off(first.len() / 2);
                        tracing::warn!(function = %self.config.binary, %reason, "stream batch failed: bisecting");
                        work.push_front((second, retries));
                        work.push_front((first, retries));
                        continue;
                    }
                    (records, reason)
                }
            };
            let exhausted = self
                .config
                .maximum_retry_attempts
                .is_some_and(|max| retries >= max);
            if exhausted {
                self.give_up(&retry, shard_id, retries + 1, &reason).await?;
                continue;
            }
            tracing::warn!(function = %self.config.binary, records = retry.len(), retries, %reason, "stream batch failed: retrying");
            work.push_front((retry, retries + 1));
            if self.pause(pause).await {
                return Ok(());
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
        Ok(())
    }

    /// The on-failure destination's invocation record ("Retaining discarded batches for a
    /// DynamoDB event source", https://docs.aws.amazon.com/lambda/latest/dg/services-dynamodb-errors.html,
    /// read 2026-12-06): the batch's shard and sequence range, not the records.
    async fn give_up(
        &self,
        records: &[Value],
        shard_id: &str,
        invoke_count: u32,
        reason: &str,
    ) -> Result<()> {
        self.stats
            .sent_to_on_failure
            .fetch_add(records.len() as u64, Ordering::SeqCst);
        let first = records.first().cloned().unwrap_or(Value::Null);
        let last = records.last().cloned().unwrap_or(Value::Null);
        let arrival = |r: &Value| r.pointer("/dynamodb/ApproximateCreationDateTime").cloned();
        let description = json!({
            "requestContext": {
                "requestId": uuid::Uuid::new_v4().to_string(),
                "functionArn": format!("arn:aws:lambda:{}:{}:function:{}", self.config.region, crate::provision::ACCOUNT_ID, self.config.binary),
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": invoke_count,
            },
            "responseContext": {"functionError": reason.chars().take(200).collect::<String>()},
            "version": "1.0",
            "timestamp": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            "DDBStreamBatchInfo": {
                "shardId": shard_id,
                "startSequenceNumber": seq(&first),
                "endSequenceNumber": seq(&last),
                "approximateArrivalOfFirstRecord": arrival(&first),
                "approximateArrivalOfLastRecord": arrival(&last),
                "batchSize": records.len(),
                "streamArn": self.config.stream_arn,
            },
        });
        tracing::error!(function = %self.config.binary, records = records.len(), "stream batch given up: described to the on-failure destination");
        if let Some(url) = &self.config.on_failure_queue_url {
            self.sqs
                .send_message()
                .queue_url(url)
                .message_body(description.to_string())
                .send()
                .await
                .context("SendMessage to the on-failure destination")?;
        }
        Ok(())
    }
}

/// Every enabled stream mapping of a stack, started.
pub fn spawn_all(
    mappings: Vec<StreamMappingConfig>,
    sdk: &SdkConfig,
    invoker: Arc<dyn Invoker>,
    options: StreamOptions,
) -> Vec<StreamHandle> {
    mappings
        .into_iter()
        .filter(|m| m.enabled)
        .map(|m| spawn_stream_mapping(m, sdk, invoker.clone(), options))
        .collect()
}
