//! The endpoint Graph calls (`POST /notifications/graph` and its `/lifecycle` twin on the
//! HTTP API). Everything it does is a consistent read and a conditional write per
//! subscription and an SQS send per wake: no Graph call, so it answers within Graph's 3 s
//! (10 s for the handshake) at any load. [doc]: change-notifications-delivery-webhooks
//! (learn.microsoft.com, read 2026-12-06: the handshake's 10 s, 200 and `text/plain` with
//! the decoded token; 2xx within 3 s, 202 when processing is queued; retries for up to 4
//! hours); wire examples in infra/microsoft-sim/conformance/subscriptions/.
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
//!   `reauthorizationRequired` queues a renewal (a renewal reauthorizes too);
//!   `subscriptionRemoved` queues a successor, whose creation queues a full delta round;
//!   `missed` queues a full delta round at once: the delta query from the user's cursor
//!   returns every change since the last run, notified or not, which is the "full data
//!   resync of the resource" Microsoft asks for (change-notifications-lifecycle-events,
//!   read 2026-12-06).
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};
    use time::macros::datetime;

    use super::*;
    use crate::adapters::memory::MemoryJobQueue;
    use crate::adapters::notifications_memory::MemorySubscriptionStore;
    use crate::clock::ManualClock;
    use crate::domain::{TenantId, UserId};
    use crate::notifications::ClientState;

    const MAIL: &str = "https://sqs.test/mail";
    const CALENDAR: &str = "https://sqs.test/calendar";
    const SUBSCRIPTIONS: &str = "https://sqs.test/subscriptions";

    struct Fixture {
        webhook: Webhook,
        queue: Arc<MemoryJobQueue>,
        clock: Arc<ManualClock>,
        state: ClientState,
    }

    async fn fixture(kind: SyncKind) -> Fixture {
        let store = Arc::new(MemorySubscriptionStore::default());
        let state = ClientState::generate();
        let now = datetime!(2026-12-06 10:00 UTC);
        store
            .save(
                &Subscription {
                    tenant_id: TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47")
                        .expect("guid"),
                    user_id: UserId::parse("00000000-0000-0000-0000-0000000000aa").expect("guid"),
                    kind,
                    id: "sub-1".into(),
                    resource: "me/messages".into(),
                    client_state: state.digest(),
                    expires_at: now + time::Duration::days(6),
                    created_at: now,
                    renewed_at: None,
                },
                None,
            )
            .await
            .expect("save");
        let queue = Arc::new(MemoryJobQueue::default());
        let clock = Arc::new(ManualClock::new(now));
        let webhook = Webhook::new(
            store,
            queue.clone(),
            WebhookQueues {
                mail_sync: MAIL.into(),
                calendar_sync: CALENDAR.into(),
                subscriptions: SUBSCRIPTIONS.into(),
            },
            clock.clone(),
        );
        Fixture {
            webhook,
            queue,
            clock,
            state,
        }
    }

    fn change(subscription: &str, state: &str) -> Value {
        json!({
            "id": uuid::Uuid::new_v4().to_string(),
            "subscriptionId": subscription,
            "subscriptionExpirationDateTime": "2026-12-12T10:00:00.0000000Z",
            "changeType": "created",
            "resource": "Users/00000000-0000-0000-0000-0000000000aa/Messages/AAMk1",
            "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "id": "AAMk1"},
            "clientState": state,
            "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        })
    }

    fn lifecycle(event: &str, state: &str) -> Value {
        json!({
            "subscriptionId": "sub-1",
            "subscriptionExpirationDateTime": "2026-12-12T10:00:00.0000000Z",
            "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "clientState": state,
            "lifecycleEvent": event,
        })
    }

    fn batch(items: Vec<Value>) -> Vec<u8> {
        serde_json::to_vec(&json!({ "value": items })).expect("json")
    }

    fn jobs(queue: &MemoryJobQueue, url: &str) -> Vec<(Value, Duration)> {
        queue
            .sent(url)
            .into_iter()
            .map(|m| (serde_json::from_str(&m.body).expect("json"), m.delay))
            .collect()
    }

    #[test]
    fn the_handshake_echoes_only_a_plain_token() {
        let token = "Validation: Testing client application reachability for subscription Request-Id: 3c0f4a2e";
        assert_eq!(validation_answer(token), Some(token));
        assert_eq!(validation_answer(""), None);
        assert_eq!(validation_answer("a\r\nSet-Cookie: x=1"), None);
        assert_eq!(
            validation_answer(&"a".repeat(MAX_VALIDATION_TOKEN + 1)),
            None
        );
    }

    #[tokio::test]
    async fn a_burst_of_100_notifications_wakes_one_delayed_sync_and_a_later_one_another() {
        let f = fixture(SyncKind::Mail).await;
        let mut woke = 0;
        for i in 0..100 {
            // Graph batches some, sends others alone: both ways here.
            let items = if i % 2 == 0 {
                vec![change("sub-1", f.state.expose())]
            } else {
                vec![
                    change("sub-1", f.state.expose()),
                    change("sub-1", f.state.expose()),
                ]
            };
            let report = f.webhook.handle(&batch(items)).await.expect("handled");
            woke += report.woke;
            f.clock.advance(time::Duration::milliseconds(20));
        }
        assert_eq!(woke, 1, "one sync for the burst (2 s of notifications)");
        let sent = jobs(&f.queue, MAIL);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0["reason"], "notified");
        assert_eq!(sent[0].0["kind"], "mail");
        assert_eq!(sent[0].1, DEBOUNCE, "delayed to the end of the window");
        // After the window a new change wakes the next sync.
        f.clock.advance(time::Duration::seconds(3));
        let report = f
            .webhook
            .handle(&batch(vec![change("sub-1", f.state.expose())]))
            .await
            .expect("handled");
        assert_eq!(report.woke, 1);
        assert_eq!(jobs(&f.queue, MAIL).len(), 2);
        assert!(jobs(&f.queue, CALENDAR).is_empty());
    }

    #[tokio::test]
    async fn forged_or_unknown_notifications_are_refused_and_change_nothing() {
        let f = fixture(SyncKind::Mail).await;
        let forged = ClientState::generate();
        let mut no_state = change("sub-1", "x");
        no_state
            .as_object_mut()
            .expect("object")
            .remove("clientState");
        let report = f
            .webhook
            .handle(&batch(vec![
                change("sub-1", forged.expose()),
                change("sub-1", &f.state.expose()[..42]),
                change("sub-2", f.state.expose()),
                no_state,
                json!({"changeType": "created"}),
                lifecycle("missed", forged.expose()),
                lifecycle("subscriptionRemoved", ""),
            ]))
            .await
            .expect("a batch is answered");
        assert_eq!(report.refused, 7);
        assert_eq!(report.accepted, 0);
        assert!(jobs(&f.queue, MAIL).is_empty());
        assert!(jobs(&f.queue, SUBSCRIPTIONS).is_empty());
        // The forged ones did not claim the debounce: the real one still wakes a sync.
        let report = f
            .webhook
            .handle(&batch(vec![change("sub-1", f.state.expose())]))
            .await
            .expect("handled");
        assert_eq!(report.woke, 1);
    }

    #[tokio::test]
    async fn lifecycle_notifications_renew_recreate_and_resync() {
        let f = fixture(SyncKind::Calendar).await;
        let state = f.state.expose();
        let report = f
            .webhook
            .handle(&batch(vec![lifecycle("reauthorizationRequired", state)]))
            .await
            .expect("handled");
        assert_eq!(report.lifecycle_jobs, 1);
        let renew = jobs(&f.queue, SUBSCRIPTIONS);
        assert_eq!(renew[0].0["action"], "renew");
        assert_eq!(renew[0].0["subscriptionId"], "sub-1");
        assert_eq!(renew[0].0["kind"], "calendar");
        assert!(
            jobs(&f.queue, CALENDAR).is_empty(),
            "a renewal syncs nothing"
        );

        f.webhook
            .handle(&batch(vec![lifecycle("subscriptionRemoved", state)]))
            .await
            .expect("handled");
        let after = jobs(&f.queue, SUBSCRIPTIONS);
        assert_eq!(after[1].0["action"], "recreate");
        assert!(
            jobs(&f.queue, CALENDAR).is_empty(),
            "the successor's creation queues the resync"
        );

        f.webhook
            .handle(&batch(vec![
                lifecycle("missed", state),
                lifecycle("someFutureEvent", state),
            ]))
            .await
            .expect("handled");
        let syncs = jobs(&f.queue, CALENDAR);
        assert_eq!(syncs.len(), 1, "missed runs the whole delta round");
        assert_eq!(syncs[0].0["reason"], "resync");
        assert_eq!(syncs[0].1, Duration::ZERO, "at once");
        assert_eq!(jobs(&f.queue, SUBSCRIPTIONS).len(), 2);
    }

    #[tokio::test]
    async fn a_body_that_is_not_a_batch_is_malformed() {
        let f = fixture(SyncKind::Mail).await;
        for body in [&b""[..], b"{}", b"[]", b"{\"value\": 3}", b"<xml/>"] {
            assert!(matches!(
                f.webhook.handle(body).await,
                Err(WebhookError::Malformed)
            ));
        }
        assert!(f.queue.sent(MAIL).is_empty());
    }
}
