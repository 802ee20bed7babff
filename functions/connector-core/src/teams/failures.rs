//! Why a Teams message was given up on, and the queue port teams-post works its queue
//! through.
//!
//! SQS only moves a message to the dead-letter queue after `maxReceiveCount` receives, and
//! then with nothing about why. So teams-post dead-letters a message it cannot post itself:
//! it sends the original body to TeamsPostDLQ with message attributes saying what happened
//! ([`FailureReport`]: `code`, `reason`, `detail`, ...) and acknowledges the original. The
//! operator reads them with `connectorctl teams failures` (or in the console, as the DLQ
//! messages' attributes); a message SQS moved there by itself (a crashing function) has no
//! attributes and shows as such. The body is unchanged so a redrive re-posts it.
//!
//! Retries are counted across re-queues by the `teamsRetries` attribute: a message retried
//! (throttling, 5xx) too often on one copy is re-sent as a fresh delayed copy, so waiting
//! out throttling never walks it into the DLQ by `maxReceiveCount`.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use time::OffsetDateTime;

use crate::ports::QueueError;

/// Environment variable with TeamsPostDLQ's URL (template Globals: `!Ref TeamsPostDLQ`).
pub const TEAMS_POST_DLQ_URL: &str = "TEAMS_POST_DLQ_URL";

/// Message attribute names on dead-lettered and re-queued messages.
pub mod attributes {
    /// Stable machine code (`too_large`, `not_a_member`, ...).
    pub const CODE: &str = "code";
    /// One sentence for the operator: what happened and what to do.
    pub const REASON: &str = "reason";
    /// The specifics (sizes, Graph's error code and request id).
    pub const DETAIL: &str = "detail";
    /// The TeamsPostQueue message id of the original.
    pub const SOURCE_MESSAGE_ID: &str = "sourceMessageId";
    /// RFC 3339.
    pub const FAILED_AT: &str = "failedAt";
    pub const TENANT_ID: &str = "tenantId";
    pub const USER_ID: &str = "userId";
    pub const IDEMPOTENCY_KEY: &str = "idempotencyKey";
    /// Deliveries of this message before it was given up on (re-queued copies included).
    pub const DELIVERIES: &str = "deliveries";
    /// On TeamsPostQueue: retries consumed by earlier copies of a re-queued message.
    pub const RETRIES: &str = "teamsRetries";
}

/// Why a message was dead-lettered. Attribute values are cut to what SQS and an operator's
/// screen take; they never hold message content, tokens or addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureReport {
    pub code: String,
    pub reason: String,
    pub detail: String,
    pub source_message_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub failed_at: OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    pub deliveries: u32,
}

impl FailureReport {
    /// The report as SQS string attributes (empty values left out: SQS refuses them).
    pub fn to_attributes(&self) -> Vec<(&'static str, String)> {
        let failed_at = self
            .failed_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut out = vec![
            (attributes::CODE, cut(&self.code, 64)),
            (attributes::REASON, cut(&self.reason, 512)),
            (attributes::DETAIL, cut(&self.detail, 1024)),
            (
                attributes::SOURCE_MESSAGE_ID,
                cut(&self.source_message_id, 128),
            ),
            (attributes::FAILED_AT, failed_at),
            (attributes::DELIVERIES, self.deliveries.to_string()),
        ];
        for (name, value) in [
            (attributes::TENANT_ID, &self.tenant_id),
            (attributes::USER_ID, &self.user_id),
            (attributes::IDEMPOTENCY_KEY, &self.idempotency_key),
        ] {
            if let Some(value) = value {
                out.push((name, cut(value, 256)));
            }
        }
        out.retain(|(_, value)| !value.is_empty());
        out
    }

    /// Reads a report back from string attributes; `None` when there is no `code` (a
    /// message SQS moved by itself).
    pub fn from_attributes(attributes: &HashMap<String, String>) -> Option<Self> {
        let get = |name: &str| attributes.get(name).cloned();
        Some(Self {
            code: get(attributes::CODE)?,
            reason: get(attributes::REASON).unwrap_or_default(),
            detail: get(attributes::DETAIL).unwrap_or_default(),
            source_message_id: get(attributes::SOURCE_MESSAGE_ID).unwrap_or_default(),
            failed_at: get(attributes::FAILED_AT)
                .and_then(|value| {
                    OffsetDateTime::parse(&value, &time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            tenant_id: get(attributes::TENANT_ID),
            user_id: get(attributes::USER_ID),
            idempotency_key: get(attributes::IDEMPOTENCY_KEY),
            deliveries: get(attributes::DELIVERIES)
                .and_then(|value| value.parse().ok())
                .unwrap_or(0),
        })
    }
}

fn cut(value: &str, max_chars: usize) -> String {
    value.chars().take(max_chars).collect()
}

/// A message on the dead-letter queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// Its id on the dead-letter queue.
    pub message_id: String,
    pub body: String,
    /// When it reached the dead-letter queue (SQS `SentTimestamp`).
    #[serde(with = "time::serde::rfc3339::option")]
    pub sent_at: Option<OffsetDateTime>,
    /// `None`: SQS moved it after `maxReceiveCount` receives; no reason was recorded.
    pub report: Option<FailureReport>,
}

#[async_trait]
pub trait TeamsQueues: Send + Sync {
    /// Sends `body` to the dead-letter queue with the report as message attributes.
    async fn dead_letter(&self, body: &str, report: &FailureReport) -> Result<(), QueueError>;
    /// Sends a fresh copy of `body` to TeamsPostQueue, delivered after `delay` (at most 15
    /// minutes), carrying `retries` in its `teamsRetries` attribute.
    async fn requeue(&self, body: &str, retries: u32, delay: Duration) -> Result<(), QueueError>;
    /// Hides a received TeamsPostQueue message for `timeout` (at most 12 hours).
    async fn change_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), QueueError>;
    /// Up to `limit` messages on the dead-letter queue, oldest first, left on the queue.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn reports_round_trip_through_attributes() {
        let report = FailureReport {
            code: "too_large".into(),
            reason: "The message is larger than Teams accepts.".into(),
            detail: "x".repeat(5000),
            source_message_id: "m-1".into(),
            failed_at: datetime!(2026-03-01 9:00 UTC),
            tenant_id: Some("t".into()),
            user_id: None,
            idempotency_key: Some("k".into()),
            deliveries: 2,
        };
        let attributes: HashMap<String, String> = report
            .to_attributes()
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        assert_eq!(attributes.len(), 8, "{attributes:?}");
        assert_eq!(attributes[attributes::DETAIL].len(), 1024);
        let back = FailureReport::from_attributes(&attributes).expect("a report");
        assert_eq!(
            back,
            FailureReport {
                detail: "x".repeat(1024),
                ..report
            }
        );
        assert_eq!(FailureReport::from_attributes(&HashMap::new()), None);
    }
}
