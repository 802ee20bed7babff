//! The endpoint Graph calls (`POST /notifications/graph` and its `/lifecycle` twin on the
//! HTTP API). Everything it does is a consistent read and a conditional write per
//! subscription and an SQS send per wake: no Graph call, so it answers within Graph's 3 s
//! (10 s for the handshake) at any load.
//!
//! - **Validation handshake** [doc]: Graph POSTs `?validationToken=…` with an empty body
//!   when a subscription is created; the answer is `200`, `text/plain`, the decoded token
//!   and nothing else ([`validation_answer`]).
//! - **Change notifications** [doc]: each item names its `subscriptionId` and carries the
//!   `clientState` we gave it. An item whose subscription we do not know, or whose client
//!   state does not match (compared as SHA-256 digests, in constant time), is refused:
//!   nothing is done, and the answer is the same `202` as for any other item, so a caller
//!   learns nothing of why (Microsoft: "If there's a mismatch, don't consider the change
//!   notification as valid", change-notifications-delivery-webhooks, read 2026-12-06). A
//!   valid item claims the subscription's wake ([`super::SubscriptionStore::claim_wake`]):
//!   the first of a burst queues one sync job, delayed by [`super::DEBOUNCE`], and the
//!   others within the window find it claimed. The job runs the same delta sync as the
//!   schedule (same cursors, lease and matching), so duplicates and reordering are harmless.
//! - **Lifecycle notifications** [doc, change-notifications-lifecycle-events]:
//!   `reauthorizationRequired` queues a renewal; `subscriptionRemoved` queues a successor
//!   and a full delta round; `missed` queues a full delta round.
//! - A body that is not a notification batch is a `400` with no detail. A store or queue
//!   failure is a `500`, so Graph delivers the batch again (it retries for up to 4 hours),
//!   which only repeats harmless work.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{DEBOUNCE, Subscription, SubscriptionStore};
use crate::clock::Clock;
use crate::domain::SyncKind;
use crate::messages::{SubscriptionJob, SyncJob, SyncReason};
use crate::ports::{JobQueue, QueueError, QueueMessage, StoreError};

/// The path of the change-notification URL under `PUBLIC_BASE_URL`.
pub const NOTIFICATION_PATH: &str = "/notifications/graph";
/// The path of the lifecycle-notification URL under `PUBLIC_BASE_URL`.
pub const LIFECYCLE_PATH: &str = "/notifications/graph/lifecycle";
/// Longest validation token echoed (Graph's are about 130 characters).
pub const MAX_VALIDATION_TOKEN: usize = 1024;
/// Largest notification body read (Graph batches notifications; each is well under 1 KB).
pub const MAX_BODY: usize = 1024 * 1024;

/// The handshake's answer body: the token itself, if it is one we echo.
pub fn validation_answer(token: &str) -> Option<&str> {
    (!token.is_empty()
        && token.len() <= MAX_VALIDATION_TOKEN
        && !token.chars().any(char::is_control))
    .then_some(token)
}

/// One item of a notification batch, change or lifecycle.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Item {
    #[serde(default)]
    subscription_id: Option<String>,
    #[serde(default)]
    client_state: Option<String>,
    #[serde(default)]
    lifecycle_event: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Batch {
    value: Vec<Item>,
}

/// What one batch did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookReport {
    /// Items that named a subscription of ours with its client state.
    pub accepted: usize,
    /// Items refused (unknown subscription, wrong or missing client state).
    pub refused: usize,
    /// Sync jobs queued.
    pub woke: usize,
    /// Wakes found already claimed within the debounce window.
    pub debounced: usize,
    /// Subscription jobs queued (renewals, successors).
    pub lifecycle_jobs: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("the body is not a notification batch")]
    Malformed,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// The queues a notification puts work on.
#[derive(Clone, Debug)]
pub struct WebhookQueues {
    pub mail_sync: String,
    pub calendar_sync: String,
    pub subscriptions: String,
}

impl WebhookQueues {
    fn sync(&self, kind: SyncKind) -> &str {
        match kind {
            SyncKind::Mail => &self.mail_sync,
            SyncKind::Calendar => &self.calendar_sync,
        }
    }
}

pub struct Webhook {
    pub store: Arc<dyn SubscriptionStore>,
    pub queue: Arc<dyn JobQueue>,
    pub queues: WebhookQueues,
    pub clock: Arc<dyn Clock>,
    pub debounce: std::time::Duration,
}

impl Webhook {
    pub fn new(
        store: Arc<dyn SubscriptionStore>,
        queue: Arc<dyn JobQueue>,
        queues: WebhookQueues,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            queue,
            queues,
            clock,
            debounce: DEBOUNCE,
        }
    }

    /// Handles one POSTed batch (change or lifecycle items, or both).
    pub async fn handle(&self, body: &[u8]) -> Result<WebhookReport, WebhookError> {
        if body.len() > MAX_BODY {
            return Err(WebhookError::Malformed);
        }
        let batch: Batch = serde_json::from_slice(body).map_err(|_| WebhookError::Malformed)?;
        let mut report = WebhookReport::default();
        // Items by subscription: one read (and at most one wake) per subscription.
        let mut groups: BTreeMap<String, Vec<Item>> = BTreeMap::new();
        for item in batch.value {
            match item.subscription_id.clone() {
                Some(id) if !id.is_empty() && id.len() <= 256 => {
                    groups.entry(id).or_default().push(item)
                }
                _ => report.refused += 1,
            }
        }
        for (id, items) in groups {
            let subscription = self.store.by_id(&id).await?;
            let mut wake = false;
            let mut lifecycle: Vec<String> = Vec::new();
            for item in items {
                let valid = match (&subscription, item.client_state.as_deref()) {
                    (Some(subscription), Some(state)) => subscription.client_state.matches(state),
                    _ => false,
                };
                if !valid {
                    report.refused += 1;
                    continue;
                }
                report.accepted += 1;
                match item.lifecycle_event {
                    Some(event) => lifecycle.push(event),
                    None => wake = true,
                }
            }
            let Some(subscription) = subscription else {
                continue;
            };
            if wake {
                let now = self.clock.now();
                if self.store.claim_wake(&id, now, self.debounce).await? {
                    self.send_sync(&subscription, SyncReason::Notified, self.debounce)
                        .await?;
                    report.woke += 1;
                } else {
                    report.debounced += 1;
                }
            }
            for event in lifecycle {
                self.lifecycle(&subscription, &event, &mut report).await?;
            }
        }
        if report.refused > 0 {
            // Counts only: never an id, a state or anything of the body.
            warn!(
                refused = report.refused,
                accepted = report.accepted,
                "refused change notifications"
            );
        }
        Ok(report)
    }

    async fn lifecycle(
        &self,
        subscription: &Subscription,
        event: &str,
        report: &mut WebhookReport,
    ) -> Result<(), WebhookError> {
        let kind = subscription.kind;
        let tenant_id = subscription.tenant_id.clone();
        let user_id = subscription.user_id.clone();
        let subscription_id = subscription.id.clone();
        info!(
            tenant_id = %tenant_id,
            user_id = %user_id,
            kind = kind.as_str(),
            event,
            "lifecycle notification"
        );
        match event {
            "reauthorizationRequired" => {
                self.send_job(&SubscriptionJob::Renew {
                    kind,
                    tenant_id,
                    user_id,
                    subscription_id,
                })
                .await?;
                report.lifecycle_jobs += 1;
            }
            "subscriptionRemoved" => {
                self.send_job(&SubscriptionJob::Recreate {
                    kind,
                    tenant_id,
                    user_id,
                    subscription_id,
                })
                .await?;
                report.lifecycle_jobs += 1;
                self.send_sync(subscription, SyncReason::Resync, std::time::Duration::ZERO)
                    .await?;
                report.woke += 1;
            }
            "missed" => {
                self.send_sync(subscription, SyncReason::Resync, std::time::Duration::ZERO)
                    .await?;
                report.woke += 1;
            }
            // A lifecycle event Microsoft adds later: acknowledged, nothing to do.
            _ => {}
        }
        Ok(())
    }

    async fn send_sync(
        &self,
        subscription: &Subscription,
        reason: SyncReason,
        delay: std::time::Duration,
    ) -> Result<(), WebhookError> {
        let job = SyncJob::new(
            subscription.kind,
            subscription.tenant_id.clone(),
            subscription.user_id.clone(),
            reason,
        );
        let message = QueueMessage::json(&job)?.with_delay(delay);
        self.queue
            .send_batch(self.queues.sync(subscription.kind), &[message])
            .await?;
        Ok(())
    }

    async fn send_job(&self, job: &SubscriptionJob) -> Result<(), WebhookError> {
        self.queue
            .send_batch(&self.queues.subscriptions, &[QueueMessage::json(job)?])
            .await?;
        Ok(())
    }
}
