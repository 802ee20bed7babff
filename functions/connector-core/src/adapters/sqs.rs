//! SQS implementation of the job queue. SendMessageBatch takes at most 10 entries, so a
//! batch is cut into chunks of 10 that are sent concurrently (100,000 jobs is 10,000
//! calls: sequential calls would not fit a Lambda invocation). Entries SQS fails without
//! blaming the message are retried with backoff; whatever still fails is reported by
//! index, and everything else is sent.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use futures::{StreamExt, stream};
use tracing::{debug, instrument, warn};

use super::backoff::Backoff;
use crate::ports::{FailedEntry, JobQueue, QueueError, QueueMessage, validate_messages};

/// SQS's limit of entries in one SendMessageBatch.
pub const SEND_BATCH_LIMIT: usize = 10;

pub struct SqsJobQueue {
    client: Client,
    backoff: Backoff,
    concurrency: usize,
}

impl SqsJobQueue {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            backoff: Backoff::default(),
            concurrency: 32,
        }
    }

    /// SendMessageBatch calls in flight at once.
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sends one chunk; returns (sent, failures).
    async fn send_chunk(
        &self,
        queue_url: &str,
        messages: &[QueueMessage],
        chunk: Vec<usize>,
    ) -> (usize, Vec<FailedEntry>) {
        let mut pending = chunk;
        let mut sent = 0;
        let mut failures = Vec::new();
        let mut attempt = 0;
        while !pending.is_empty() {
            attempt += 1;
            if attempt > 1 {
                self.backoff.sleep(attempt - 1).await;
            }
            let last_attempt = attempt >= self.backoff.attempts;
            let mut entries = Vec::with_capacity(pending.len());
            for &index in &pending {
                let message = &messages[index];
                let entry = SendMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .message_body(&message.body)
                    .delay_seconds(message.delay.as_secs().min(900) as i32)
                    .build();
                match entry {
                    Ok(entry) => entries.push(entry),
                    Err(error) => failures.push(FailedEntry {
                        index,
                        code: "InvalidEntry".into(),
                        message: error.to_string(),
                        sender_fault: true,
                    }),
                }
            }
            pending.retain(|index| !failures.iter().any(|f| f.index == *index));
            if entries.is_empty() {
                break;
            }
            let output = match self
                .client
                .send_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(output) => output,
                Err(error) => {
                    let message = DisplayErrorContext(&error).to_string();
                    warn!(attempt, error = %message, "SendMessageBatch failed");
                    if last_attempt {
                        failures.extend(pending.iter().map(|&index| FailedEntry {
                            index,
                            code: "RequestFailed".into(),
                            message: message.clone(),
                            sender_fault: false,
                        }));
                        break;
                    }
                    continue;
                }
            };
            sent += output.successful.len();
            let mut retry = Vec::new();
            for failed in output.failed {
                let Some(position) = pending
                    .iter()
                    .position(|index| index.to_string() == failed.id)
                else {
                    continue;
                };
                let index = pending.swap_remove(position);
                if failed.sender_fault || last_attempt {
                    failures.push(FailedEntry {
                        index,
                        code: failed.code,
                        message: failed.message.unwrap_or_default(),
                        sender_fault: failed.sender_fault,
                    });
                } else {
                    debug!(code = %failed.code, attempt, "SendMessageBatch entry failed; retrying");
                    retry.push(index);
                }
            }
            pending = retry;
        }
        (sent, failures)
    }
}

#[async_trait]
impl JobQueue for SqsJobQueue {
    #[instrument(skip_all, fields(queue_url = %queue_url, messages = messages.len()))]
    async fn send_batch(
        &self,
        queue_url: &str,
        messages: &[QueueMessage],
    ) -> Result<usize, QueueError> {
        validate_messages(messages)?;
        let indexes: Vec<usize> = (0..messages.len()).collect();
        let chunks: Vec<Vec<usize>> = indexes
            .chunks(SEND_BATCH_LIMIT)
            .map(<[usize]>::to_vec)
            .collect();
        let results: Vec<(usize, Vec<FailedEntry>)> = stream::iter(chunks)
            .map(|chunk| self.send_chunk(queue_url, messages, chunk))
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let sent = results.iter().map(|(sent, _)| sent).sum();
        let mut failures: Vec<FailedEntry> = results
            .into_iter()
            .flat_map(|(_, failures)| failures)
            .collect();
        if failures.is_empty() {
            Ok(sent)
        } else {
            failures.sort_by_key(|failure| failure.index);
            Err(QueueError::EntriesFailed {
                queue: queue_url.to_owned(),
                sent,
                failures,
            })
        }
    }

    async fn change_visibility(
        &self,
        queue_url: &str,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        // SQS caps a message's visibility at 12 hours.
        let seconds = timeout.as_secs().min(43_200) as i32;
        self.client
            .change_message_visibility()
            .queue_url(queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds)
            .send()
            .await
            .map_err(|error| QueueError::Backend {
                operation: "ChangeMessageVisibility",
                queue: queue_url.to_owned(),
                source: Box::new(error),
            })?;
        Ok(())
    }
}
