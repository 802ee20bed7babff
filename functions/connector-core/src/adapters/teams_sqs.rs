//! SQS adapter of [`TeamsQueues`]: TeamsPostQueue (re-queue, visibility) and TeamsPostDLQ
//! (dead letters with their reason as message attributes, and listing them).
//!
//! Listing leaves the messages where they are: they are received with a short visibility
//! timeout and made visible again at once (`ChangeMessageVisibility` to 0), so listing
//! twice in a row shows the same messages. The DLQ has no redrive policy of its own, so
//! the receive count a listing adds has no effect.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
};
use time::OffsetDateTime;
use tracing::{instrument, warn};

use crate::ports::{MAX_DELAY, QueueError};
use crate::teams::failures::attributes;
use crate::teams::{DeadLetter, FailureReport, TeamsQueues};

/// SQS caps a received message's visibility at 12 hours.
const MAX_VISIBILITY: Duration = Duration::from_secs(43_200);

pub struct SqsTeamsQueues {
    client: Client,
    queue_url: String,
    dead_letter_url: String,
}

impl SqsTeamsQueues {
    pub fn new(
        client: Client,
        queue_url: impl Into<String>,
        dead_letter_url: impl Into<String>,
    ) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            dead_letter_url: dead_letter_url.into(),
        }
    }

    fn backend(
        &self,
        operation: &'static str,
        queue: &str,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> QueueError {
        QueueError::Backend {
            operation,
            queue: queue.to_owned(),
            source: Box::new(error),
        }
    }
}

fn string_attribute(value: impl Into<String>) -> Result<MessageAttributeValue, QueueError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|error| QueueError::InvalidMessage {
            reason: error.to_string(),
        })
}

#[async_trait]
impl TeamsQueues for SqsTeamsQueues {
    #[instrument(skip_all, fields(code = %report.code, source_message_id = %report.source_message_id))]
    async fn dead_letter(&self, body: &str, report: &FailureReport) -> Result<(), QueueError> {
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.dead_letter_url)
            .message_body(body);
        for (name, value) in report.to_attributes() {
            request = request.message_attributes(name, string_attribute(value)?);
        }
        request
            .send()
            .await
            .map_err(|error| self.backend("SendMessage", &self.dead_letter_url, error))?;
        Ok(())
    }

    async fn requeue(&self, body: &str, retries: u32, delay: Duration) -> Result<(), QueueError> {
        let retries = MessageAttributeValue::builder()
            .data_type("Number")
            .string_value(retries.to_string())
            .build()
            .map_err(|error| QueueError::InvalidMessage {
                reason: error.to_string(),
            })?;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .delay_seconds(delay.min(MAX_DELAY).as_secs() as i32)
            .message_attributes(attributes::RETRIES, retries)
            .send()
            .await
            .map_err(|error| self.backend("SendMessage", &self.queue_url, error))?;
        Ok(())
    }

    async fn change_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(timeout.min(MAX_VISIBILITY).as_secs() as i32)
            .send()
            .await
            .map_err(|error| self.backend("ChangeMessageVisibility", &self.queue_url, error))?;
        Ok(())
    }

    #[instrument(skip_all, fields(limit))]
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let mut found: BTreeMap<String, (i64, DeadLetter)> = BTreeMap::new();
        let mut receipts: Vec<String> = Vec::new();
        let mut empty_receives = 0;
        // SQS samples servers on each receive: an empty answer does not prove the queue
        // empty, so stop after two in a row.
        while found.len() < limit && empty_receives < 2 {
            let output = self
                .client
                .receive_message()
                .queue_url(&self.dead_letter_url)
                .max_number_of_messages(10)
                .visibility_timeout(30)
                .wait_time_seconds(0)
                .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
                .message_attribute_names("All")
                .send()
                .await
                .map_err(|error| self.backend("ReceiveMessage", &self.dead_letter_url, error))?;
            let messages = output.messages.unwrap_or_default();
            if messages.is_empty() {
                empty_receives += 1;
                continue;
            }
            empty_receives = 0;
            for message in messages {
                if let Some(receipt) = message.receipt_handle.clone() {
                    receipts.push(receipt);
                }
                let Some(message_id) = message.message_id.clone() else {
                    continue;
                };
                let sent_ms: i64 = message
                    .attributes
                    .as_ref()
                    .and_then(|attributes| {
                        attributes.get(&MessageSystemAttributeName::SentTimestamp)
                    })
                    .and_then(|value| value.parse().ok())
                    .unwrap_or(0);
                let strings: HashMap<String, String> = message
                    .message_attributes
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|(name, value)| value.string_value.map(|value| (name, value)))
                    .collect();
                let letter = DeadLetter {
                    message_id: message_id.clone(),
                    body: message.body.unwrap_or_default(),
                    sent_at: (sent_ms > 0)
                        .then(|| {
                            OffsetDateTime::from_unix_timestamp_nanos(
                                i128::from(sent_ms) * 1_000_000,
                            )
                            .ok()
                        })
                        .flatten(),
                    report: FailureReport::from_attributes(&strings),
                };
                found.insert(message_id, (sent_ms, letter));
            }
        }
        // Put everything back at once.
        for chunk in receipts.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .filter_map(|(index, receipt)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(index.to_string())
                        .receipt_handle(receipt)
                        .visibility_timeout(0)
                        .build()
                        .ok()
                })
                .collect::<Vec<_>>();
            if let Err(error) = self
                .client
                .change_message_visibility_batch()
                .queue_url(&self.dead_letter_url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                warn!(error = %DisplayErrorContext(&error), "listed dead letters stay hidden for 30 s");
            }
        }
        let mut letters: Vec<(i64, DeadLetter)> = found.into_values().collect();
        letters.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| a.1.message_id.cmp(&b.1.message_id))
        });
        Ok(letters
            .into_iter()
            .take(limit)
            .map(|(_, letter)| letter)
            .collect())
    }
}
