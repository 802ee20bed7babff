//! Lambda's SQS event source mapping, locally: for every `Type: SQS` event of the
//! template's functions, long-poll the queue on moto, invoke the function with batches as
//! Lambda does, and settle the batch the way Lambda settles it.
//!
//! What Lambda does, and so what this does (Lambda developer guide, "Using Lambda with
//! Amazon SQS" and "Handling errors for an SQS event source"):
//! - Receive with `WaitTimeSeconds` (long polling), all system attributes (including
//!   `ApproximateReceiveCount`) and all message attributes; the queue's own visibility
//!   timeout applies.
//! - Batches of up to `BatchSize` (default 10) records, gathered for up to
//!   `MaximumBatchingWindowInSeconds`; at most `ScalingConfig.MaximumConcurrency`
//!   invocations in flight (AWS scales to up to 1,000 without it; locally the default is
//!   [`DEFAULT_MAXIMUM_CONCURRENCY`]).
//! - The event is `{"Records": [...]}` with `messageId`, `receiptHandle`, `body`,
//!   `attributes`, `messageAttributes`, `md5OfBody`, `eventSource` "aws:sqs",
//!   `eventSourceARN`, `awsRegion`.
//! - Without `ReportBatchItemFailures`: success deletes every record, a failed invocation
//!   none. With it, the records not listed in `batchItemFailures` are deleted. A null or
//!   empty response, a null `batchItemFailures` or an empty list all mean complete
//!   success; a response that is not that shape, an `itemIdentifier` that is missing,
//!   null, empty, or not a message id of the batch, or a failed invocation fail the whole
//!   batch (nothing deleted).
//! - Records not deleted become visible again when the visibility timeout expires; after
//!   `maxReceiveCount` receives the queue's redrive policy moves them to the DLQ. Moto
//!   does that move itself on ReceiveMessage, as SQS does (checked in moto 5.2.5's
//!   `receive_message` and by this crate's tests), so the emulation relies on it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName, QueueAttributeName,
};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::functions::{SqsSource, as_u64};
use crate::invoke::{Invoker, Outcome};
use crate::provision::Provisioned;
use crate::template::Template;

/// MaximumConcurrency when the template sets none.
pub const DEFAULT_MAXIMUM_CONCURRENCY: u32 = 5;
/// SQS's longest long poll.
pub const MAX_WAIT_TIME_SECONDS: i32 = 20;

/// One mapping, resolved against a provisioned stack.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MappingConfig {
    pub function_logical_id: String,
    pub binary: String,
    pub event_name: String,
    pub queue_logical_id: Option<String>,
    pub queue_url: String,
    pub queue_arn: String,
    pub region: String,
    pub batch_size: u32,
    pub batching_window: Duration,
    pub report_batch_item_failures: bool,
    pub maximum_concurrency: u32,
    pub enabled: bool,
}

/// Every SQS event source of the template, resolved against a provisioned stack.
pub fn event_source_mappings(
    template: &Template,
    provisioned: &Provisioned,
) -> Result<Vec<MappingConfig>> {
    let mut out = Vec::new();
    for function in template.functions()? {
        for (event_name, source) in function.sqs_sources() {
            let context = || format!("{}.Events.{event_name}", function.logical_id);
            let binary = function.binary.clone().ok_or_else(|| {
                anyhow!(
                    "{} has an SQS event source but no Metadata.BuildProperties.Binary",
                    function.logical_id
                )
            })?;
            out.push(
                mapping(
                    provisioned,
                    &function.logical_id,
                    binary,
                    event_name,
                    source,
                )
                .with_context(context)?,
            );
        }
    }
    Ok(out)
}

fn mapping(
    provisioned: &Provisioned,
    function_id: &str,
    binary: String,
    event_name: &str,
    source: &SqsSource,
) -> Result<MappingConfig> {
    let queue_arn = provisioned.resolve_string(&source.queue)?;
    // The queue's URL: the logical id whose Arn attribute is this ARN.
    let queue_logical_id = provisioned
        .resolver
        .attrs
        .iter()
        .find(|((_, attr), value)| attr == "Arn" && **value == queue_arn)
        .map(|((id, _), _)| id.clone());
    let queue_url = queue_logical_id
        .as_deref()
        .and_then(|id| provisioned.attribute(id, "QueueUrl"))
        .ok_or_else(|| anyhow!("Queue {queue_arn} is not a queue of this template"))?
        .to_string();
    let number = |v: &Value, what: &str| -> Result<u64> {
        let resolved = provisioned.resolve(v)?;
        as_u64(&resolved).ok_or_else(|| anyhow!("{what} must be a whole number, got {resolved}"))
    };
    let batch_size = number(&source.batch_size, "BatchSize")? as u32;
    let window = match &source.maximum_batching_window {
        Some(v) => number(v, "MaximumBatchingWindowInSeconds")?,
        None => 0,
    };
    let maximum_concurrency = match &source.maximum_concurrency {
        Some(v) => number(v, "MaximumConcurrency")? as u32,
        None => DEFAULT_MAXIMUM_CONCURRENCY,
    };
    if batch_size == 0 || maximum_concurrency == 0 {
        bail!("BatchSize and MaximumConcurrency must be positive");
    }
    Ok(MappingConfig {
        function_logical_id: function_id.to_string(),
        binary,
        event_name: event_name.to_string(),
        queue_logical_id,
        queue_url,
        queue_arn,
        region: provisioned.region.clone(),
        batch_size,
        batching_window: Duration::from_secs(window),
        report_batch_item_failures: source.report_batch_item_failures,
        maximum_concurrency,
        enabled: source.enabled,
    })
}

/// The `Records` entry Lambda builds from one received message.
pub fn record(message: &Message, queue_arn: &str, region: &str) -> Value {
    let attributes: Map<String, Value> = message
        .attributes()
        .map(|a| {
            a.iter()
                .map(|(k, v)| (k.as_str().to_string(), Value::String(v.clone())))
                .collect()
        })
        .unwrap_or_default();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let message_attributes: Map<String, Value> = message
        .message_attributes()
        .map(|m| {
            m.iter()
                .map(|(name, value)| {
                    let mut out = Map::new();
                    if let Some(s) = value.string_value() {
                        out.insert("stringValue".into(), s.into());
                    }
                    if let Some(b) = value.binary_value() {
                        out.insert("binaryValue".into(), b64(b.as_ref()).into());
                    }
                    out.insert(
                        "stringListValues".into(),
                        value
                            .string_list_values()
                            .iter()
                            .map(|s| Value::from(s.as_str()))
                            .collect(),
                    );
                    out.insert(
                        "binaryListValues".into(),
                        value
                            .binary_list_values()
                            .iter()
                            .map(|b| Value::from(b64(b.as_ref())))
                            .collect(),
                    );
                    out.insert("dataType".into(), value.data_type().into());
                    (name.clone(), Value::Object(out))
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "messageId": message.message_id().unwrap_or_default(),
        "receiptHandle": message.receipt_handle().unwrap_or_default(),
        "body": message.body().unwrap_or_default(),
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": message.md5_of_body().unwrap_or_default(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    })
}

/// Which records of a batch failed, from the function's response, by Lambda's rules.
/// `Err` = the whole batch counts as failed (with the reason).
pub fn failed_items(
    response: &Value,
    message_ids: &BTreeSet<String>,
) -> Result<BTreeSet<String>, String> {
    let failures = match response {
        Value::Null => return Ok(BTreeSet::new()),
        Value::Object(map) => match map.get("batchItemFailures") {
            None | Some(Value::Null) => return Ok(BTreeSet::new()),
            Some(Value::Array(list)) => list,
            Some(other) => return Err(format!("batchItemFailures is not a list: {other}")),
        },
        other => return Err(format!("response is not a batch response: {other}")),
    };
    let mut out = BTreeSet::new();
    for item in failures {
        let id = item
            .get("itemIdentifier")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("batch item failure without a string itemIdentifier: {item}"))?;
        if id.is_empty() {
            return Err("empty itemIdentifier".into());
        }
        if !message_ids.contains(id) {
            return Err(format!("itemIdentifier {id} is not a message of the batch"));
        }
        out.insert(id.to_string());
    }
    Ok(out)
}

/// Tunables of the emulation itself (not of the mapping).
#[derive(Debug, Clone, Copy)]
pub struct EsmOptions {
    /// Long-poll wait per ReceiveMessage (Lambda uses 20 s; tests use less so that
    /// stopping is quick).
    pub wait_time_seconds: i32,
}

impl Default for EsmOptions {
    fn default() -> Self {
        Self {
            wait_time_seconds: MAX_WAIT_TIME_SECONDS,
        }
    }
}

/// Counters of one mapping.
#[derive(Debug, Default)]
pub struct EsmStats {
    pub batches: AtomicU64,
    pub records: AtomicU64,
    pub deleted: AtomicU64,
    /// Records left on the queue for redelivery (failed, or in a failed batch).
    pub retained: AtomicU64,
    pub failed_batches: AtomicU64,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
}

/// A snapshot of [`EsmStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EsmCounts {
    pub batches: u64,
    pub records: u64,
    pub deleted: u64,
    pub retained: u64,
    pub failed_batches: u64,
    pub max_in_flight: usize,
}

impl EsmStats {
    pub fn counts(&self) -> EsmCounts {
        EsmCounts {
            batches: self.batches.load(Ordering::SeqCst),
            records: self.records.load(Ordering::SeqCst),
            deleted: self.deleted.load(Ordering::SeqCst),
            retained: self.retained.load(Ordering::SeqCst),
            failed_batches: self.failed_batches.load(Ordering::SeqCst),
            max_in_flight: self.max_in_flight.load(Ordering::SeqCst),
        }
    }
}

/// A running mapping.
pub struct EsmHandle {
    pub config: MappingConfig,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<()>>,
    stats: Arc<EsmStats>,
}

impl EsmHandle {
    pub fn counts(&self) -> EsmCounts {
        self.stats.counts()
    }

    /// Stops polling and waits for the invocations in flight to settle.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("event source mapping task")?
    }
}

/// Starts polling for one mapping.
pub fn spawn_mapping(
    config: MappingConfig,
    sqs: aws_sdk_sqs::Client,
    invoker: Arc<dyn Invoker>,
    options: EsmOptions,
) -> EsmHandle {
    let (stop, stopped) = watch::channel(false);
    let stats = Arc::new(EsmStats::default());
    let task = tokio::spawn(poll(
        config.clone(),
        sqs,
        invoker,
        options,
        stats.clone(),
        stopped,
    ));
    EsmHandle {
        config,
        stop,
        task,
        stats,
    }
}

async fn poll(
    config: MappingConfig,
    sqs: aws_sdk_sqs::Client,
    invoker: Arc<dyn Invoker>,
    options: EsmOptions,
    stats: Arc<EsmStats>,
    mut stopped: watch::Receiver<bool>,
) -> Result<()> {
    let permits = Arc::new(Semaphore::new(config.maximum_concurrency as usize));
    let config = Arc::new(config);
    let mut failures_in_a_row = 0u32;
    loop {
        if *stopped.borrow() {
            break;
        }
        // Capacity first: messages are only received when an invocation can start at
        // once, so their visibility timeout is not spent waiting here.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = stopped.changed() => break,
        };
        let batch = match receive_batch(&sqs, &config, options).await {
            Ok(b) => {
                failures_in_a_row = 0;
                b
            }
            Err(e) => {
                failures_in_a_row += 1;
                tracing::warn!(queue = %config.queue_url, error = %format!("{e:#}"), "ReceiveMessage failed");
                drop(permit);
                // Back off on a broken queue (moto gone, queue deleted) instead of spinning.
                let pause = Duration::from_millis(200 * u64::from(failures_in_a_row.min(25)));
                tokio::select! {
                    _ = tokio::time::sleep(pause) => continue,
                    _ = stopped.changed() => break,
                }
            }
        };
        if batch.is_empty() {
            continue;
        }
        let (sqs, invoker, config, stats) =
            (sqs.clone(), invoker.clone(), config.clone(), stats.clone());
        tokio::spawn(async move {
            let in_flight = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            stats.max_in_flight.fetch_max(in_flight, Ordering::SeqCst);
            let result = settle(&sqs, &*invoker, &config, &stats, batch).await;
            stats.in_flight.fetch_sub(1, Ordering::SeqCst);
            if let Err(e) = result {
                tracing::warn!(queue = %config.queue_url, error = %format!("{e:#}"), "settling a batch failed");
            }
            drop(permit);
        });
    }
    // Wait for the invocations in flight.
    let _all = permits
        .acquire_many(config.maximum_concurrency)
        .await
        .expect("semaphore never closed");
    Ok(())
}

async fn receive_batch(
    sqs: &aws_sdk_sqs::Client,
    config: &MappingConfig,
    options: EsmOptions,
) -> Result<Vec<Message>> {
    let mut batch: Vec<Message> = Vec::new();
    let mut window_end: Option<Instant> = None;
    loop {
        let wanted = (config.batch_size as usize - batch.len()).min(10) as i32;
        let wait = match window_end {
            None => options.wait_time_seconds,
            Some(end) => {
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                (left.as_secs_f64().ceil() as i32).min(options.wait_time_seconds)
            }
        };
        let out = sqs
            .receive_message()
            .queue_url(&config.queue_url)
            .max_number_of_messages(wanted)
            .wait_time_seconds(wait)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .context("ReceiveMessage")?;
        let got = out.messages.unwrap_or_default();
        let got_any = !got.is_empty();
        batch.extend(got);
        if batch.is_empty() {
            // Nothing yet: a poll that ends empty hands control back to the loop.
            break;
        }
        if batch.len() >= config.batch_size as usize || config.batching_window.is_zero() {
            break;
        }
        if window_end.is_none() {
            window_end = Some(Instant::now() + config.batching_window);
        } else if !got_any && window_end.is_some_and(|end| Instant::now() >= end) {
            break;
        }
    }
    Ok(batch)
}

async fn settle(
    sqs: &aws_sdk_sqs::Client,
    invoker: &dyn Invoker,
    config: &MappingConfig,
    stats: &EsmStats,
    batch: Vec<Message>,
) -> Result<()> {
    let records: Vec<Value> = batch
        .iter()
        .map(|m| record(m, &config.queue_arn, &config.region))
        .collect();
    let event = json!({ "Records": records });
    let ids: BTreeSet<String> = batch
        .iter()
        .filter_map(|m| m.message_id().map(str::to_string))
        .collect();
    stats.batches.fetch_add(1, Ordering::SeqCst);
    stats
        .records
        .fetch_add(batch.len() as u64, Ordering::SeqCst);

    let outcome = invoker.invoke(&config.binary, &event).await;
    let failed: Result<BTreeSet<String>, String> = match outcome {
        Ok(Outcome::Ok(response)) if config.report_batch_item_failures => {
            failed_items(&response, &ids)
        }
        Ok(Outcome::Ok(_)) => Ok(BTreeSet::new()),
        Ok(Outcome::FunctionError {
            error_type,
            error_message,
        }) => Err(format!("{error_type}: {error_message}")),
        Err(e) => Err(e.to_string()),
    };
    let to_delete: Vec<&Message> = match &failed {
        Ok(failed) => batch
            .iter()
            .filter(|m| !failed.contains(m.message_id().unwrap_or_default()))
            .collect(),
        Err(reason) => {
            stats.failed_batches.fetch_add(1, Ordering::SeqCst);
            tracing::warn!(function = %config.binary, queue = %config.queue_url, records = batch.len(), %reason, "batch failed: every record stays for redelivery");
            Vec::new()
        }
    };
    let retained = batch.len() - to_delete.len();
    stats.retained.fetch_add(retained as u64, Ordering::SeqCst);
    delete(sqs, &config.queue_url, &to_delete).await?;
    stats
        .deleted
        .fetch_add(to_delete.len() as u64, Ordering::SeqCst);
    tracing::info!(function = %config.binary, records = batch.len(), deleted = to_delete.len(), retained, "batch settled");
    Ok(())
}

async fn delete(sqs: &aws_sdk_sqs::Client, queue_url: &str, messages: &[&Message]) -> Result<()> {
    for chunk in messages.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .build()
                    .map_err(anyhow::Error::from)
            })
            .collect::<Result<Vec<_>>>()?;
        let out = sqs
            .delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .context("DeleteMessageBatch")?;
        if let Some(failure) = out.failed().first() {
            bail!(
                "DeleteMessageBatch: {} ({})",
                failure.code(),
                failure.message().unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// The queue's attributes the checks and the plumbing care about.
pub async fn queue_attributes(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> Result<HashMap<String, String>> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .context("GetQueueAttributes")?;
    Ok(out
        .attributes()
        .map(|a| {
            a.iter()
                .map(|(k, v)| (k.as_str().to_string(), v.clone()))
                .collect()
        })
        .unwrap_or_default())
}

/// Every mapping of a stack, started; for the long-running plumbing.
pub fn spawn_all(
    mappings: Vec<MappingConfig>,
    sqs: &aws_sdk_sqs::Client,
    invoker: Arc<dyn Invoker>,
    options: EsmOptions,
) -> BTreeMap<String, EsmHandle> {
    mappings
        .into_iter()
        .filter(|m| m.enabled)
        .map(|m| {
            let key = format!("{}.{}", m.function_logical_id, m.event_name);
            (key, spawn_mapping(m, sqs.clone(), invoker.clone(), options))
        })
        .collect()
}
