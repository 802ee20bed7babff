//! Creating, renewing, recreating and deleting the users' subscriptions (the subscriptions
//! function runs it; every disconnection calls [`Manager::cancel_all`]).
//!
//! - **Create** after a completed sync run (its worker queues [`SubscriptionJob::Ensure`]
//!   when the user has no healthy subscription): `POST /subscriptions` with a fresh random
//!   client state (only its digest is kept), `notificationUrl` and
//!   `lifecycleNotificationUrl` on our HTTP API, and [`super::LIFETIME`]. Graph validates
//!   both URLs before it answers 201. A refused creation (validation failed, no access,
//!   no token) is recorded with a reason and tried again after
//!   [`super::RETRY_AFTER_FAILURE`]; throttling and 5xx fail the job, which SQS retries.
//! - **Renew**: `PATCH /subscriptions/{id}` with a new expiration, by the renewal schedule
//!   when fewer than [`super::RENEW_BEFORE`] remain, and at once on
//!   `reauthorizationRequired` (Microsoft lets either a reauthorize call or a renewal
//!   answer it). A subscription Graph no longer knows (404) is created again; one whose
//!   renewal Graph refuses for good (403, no usable token) is deleted at Graph and here and
//!   the refusal recorded, so a later creation never leaves two notifying for one user.
//! - **Recreate** on `subscriptionRemoved`, unless the user's subscription is already
//!   another one (a duplicate or late lifecycle notification changes nothing); once the
//!   successor exists, a full delta round (`resync`) finds what changed in between.
//! - **Delete** when the user should not have one any more (switch off, consent changed)
//!   and on disconnection and offboarding, before the user's token is deleted.
//!
//! Sources: graph-contract §9; subscription-post-subscriptions, subscription-update,
//! subscription-delete, change-notifications-lifecycle-events (learn.microsoft.com, read
//! 2026-12-06).

use std::collections::HashMap;
use std::sync::Arc;

use futures::{StreamExt, stream};

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::{info, warn};

use super::webhook::{LIFECYCLE_PATH, NOTIFICATION_PATH};
use super::{
    ClientState, CreateFailure, LIFETIME, RETRY_AFTER_FAILURE, Subscription, SubscriptionStore,
    UserSubscription, resource, wants_subscription,
};
use crate::clock::Clock;
use crate::config::BaseUrl;
use crate::domain::{SyncKind, Tenant, TenantId, UserKey};
use crate::graph::{GraphClient, GraphError};
use crate::messages::{SubscriptionJob, SyncJob, SyncReason};
use crate::oauth::{TokenProvider, UserBearer};
use crate::ports::{ConnectionStore, JobQueue, PageToken, QueueMessage, StoreError, TenantStore};

/// Renewals (and removals) of one page in flight at once in the renewal pass: at Graph's
/// few hundred milliseconds a call, about 50 a second, so a 120 s pass renews some 6,000
/// subscriptions (every 6 hours about 11 % of them are due, so ~27,000 users a pass);
/// what a pass cannot reach, the next one and the users' own sync runs renew.
const RENEWAL_CONCURRENCY: usize = 16;

/// Where Graph sends our notifications.
#[derive(Clone, Debug)]
pub struct NotificationUrls {
    pub change: String,
    pub lifecycle: String,
}

impl NotificationUrls {
    /// The webhook's routes under the HTTP API's public base URL.
    pub fn under(public_base_url: &BaseUrl) -> Self {
        Self {
            change: public_base_url.join(NOTIFICATION_PATH),
            lifecycle: public_base_url.join(LIFECYCLE_PATH),
        }
    }
}

/// What one piece of work did to a user's subscription.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum Outcome {
    /// It exists and lives long enough.
    Healthy,
    Created {
        id: String,
    },
    Renewed {
        id: String,
    },
    /// Deleted, because the user should not have one.
    Removed,
    /// The user should not have one and has none.
    NotWanted,
    /// A creation failed recently; not tried again yet.
    Waiting,
    /// The creation failed; recorded with its reason.
    Failed {
        reason: String,
    },
    /// A lifecycle notification about a subscription that is not the user's any more.
    Stale,
}

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Throttled, 5xx or unreachable: the job is retried.
    #[error("Graph is unavailable: {0}")]
    Graph(#[source] GraphError),
    /// The resync after a recreation could not be queued: the job is retried (the
    /// successor exists by then, so the retry is a stale lifecycle job and the schedule's
    /// next poll of the user does the resync).
    #[error("queueing the resync failed: {0}")]
    Queue(#[source] crate::ports::QueueError),
}

/// What a renewal pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RenewalReport {
    /// Every active connection was looked at (not stopped by the deadline).
    pub complete: bool,
    pub scanned: u64,
    pub renewed: u64,
    pub recreated: u64,
    pub removed: u64,
    pub failed: u64,
}

/// What cancelling a user's subscriptions did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelReport {
    /// Deleted at Graph (or already gone there).
    pub cancelled: u64,
    /// Graph could not be asked (no usable token, Graph unavailable): they expire by
    /// themselves within a week, and their notifications find no record and are refused.
    pub left_to_expire: u64,
}

/// Subscription of `kind`'s Graph answer (the fields we read).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphSubscription {
    id: String,
    expiration_date_time: String,
}

/// Where a recreated subscription's resync goes (the sync queues).
#[derive(Clone)]
pub struct Resync {
    pub queue: Arc<dyn JobQueue>,
    pub mail_sync: String,
    pub calendar_sync: String,
}

/// Cheap to clone (shared clients and stores): a copy with another clock or other URLs
/// is `Manager { clock, ..manager.clone() }`.
#[derive(Clone)]
pub struct Manager {
    pub store: Arc<dyn SubscriptionStore>,
    pub connections: Arc<dyn ConnectionStore>,
    pub tenants: Arc<dyn TenantStore>,
    /// Token providers per kind (each asks for its feature's scopes only).
    pub mail_tokens: Arc<TokenProvider>,
    pub calendar_tokens: Arc<TokenProvider>,
    pub graph: Arc<GraphClient>,
    pub clock: Arc<dyn Clock>,
    pub urls: NotificationUrls,
    /// After a successor of a removed subscription exists, a full delta round of the user
    /// finds what changed while there was none (Microsoft: "After creating the new
    /// subscription, you can sync the resource data", change-notifications-lifecycle-events,
    /// read 2026-12-06). `None`: no resync is queued.
    pub resync: Option<Resync>,
}

impl Manager {
    /// On the real adapters of `config` (SubscriptionsTable, the users' token secrets, the
    /// app's credential, Graph), with the webhook's routes under `PUBLIC_BASE_URL`.
    pub fn on_aws(
        config: &crate::config::Config,
        public_base_url: &BaseUrl,
        aws: &aws_config::SdkConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, reqwest::Error> {
        use crate::adapters::dynamodb::{
            DynamoConnectionStore, DynamoSubscriptionStore, DynamoTenantStore,
        };
        use crate::adapters::secrets::SecretsManagerVault;
        use crate::credential::AppCredential;
        use crate::domain::Feature;
        use crate::graph::graph_http_client;
        use crate::oauth::{RefreshClient, token_http_client};

        let dynamodb = aws_sdk_dynamodb::Client::new(aws);
        let secrets = aws_sdk_secretsmanager::Client::new(aws);
        let vault = Arc::new(SecretsManagerVault::new(secrets.clone()));
        let credential = Arc::new(AppCredential::from_config(
            &config.microsoft,
            secrets,
            aws_sdk_kms::Client::new(aws),
        ));
        let provider = |feature: Feature| -> Result<Arc<TokenProvider>, reqwest::Error> {
            Ok(Arc::new(
                TokenProvider::with_credential(
                    vault.clone(),
                    credential.clone(),
                    RefreshClient::new(
                        token_http_client()?,
                        config.microsoft.login_base_url.clone(),
                        &config.microsoft.client_id,
                    ),
                    clock.clone(),
                )
                .for_feature(feature),
            ))
        };
        let tables = &config.tables;
        Ok(Self {
            store: Arc::new(DynamoSubscriptionStore::new(
                dynamodb.clone(),
                tables.subscriptions.clone(),
            )),
            connections: Arc::new(DynamoConnectionStore::new(
                dynamodb.clone(),
                &tables.connections,
            )),
            tenants: Arc::new(DynamoTenantStore::new(dynamodb, &tables.tenants)),
            mail_tokens: provider(Feature::Mail)?,
            calendar_tokens: provider(Feature::Calendar)?,
            graph: Arc::new(GraphClient::new(
                graph_http_client()?,
                &config.microsoft.graph_base_url,
            )),
            clock,
            urls: NotificationUrls::under(public_base_url),
            resync: Some(Resync {
                queue: Arc::new(crate::adapters::sqs::SqsJobQueue::new(
                    aws_sdk_sqs::Client::new(aws),
                )),
                mail_sync: config.queues.mail_sync.clone(),
                calendar_sync: config.queues.calendar_sync.clone(),
            }),
        })
    }

    fn tokens(&self, kind: SyncKind) -> &TokenProvider {
        match kind {
            SyncKind::Mail => &self.mail_tokens,
            SyncKind::Calendar => &self.calendar_tokens,
        }
    }

    /// Runs one job of SubscriptionQueue.
    pub async fn handle(&self, job: &SubscriptionJob) -> Result<Outcome, ManagerError> {
        let user = job.user();
        let kind = job.kind();
        match job {
            SubscriptionJob::Ensure { .. } => self.ensure(&user, kind).await,
            SubscriptionJob::Renew {
                subscription_id, ..
            } => {
                let current = self.current(&user, kind).await?;
                match current.active {
                    Some(active) if active.id == *subscription_id => {
                        if !self.wanted(&user, kind).await? {
                            return self.remove(&current.user, kind, Some(active)).await;
                        }
                        self.renew(active).await
                    }
                    _ => Ok(Outcome::Stale),
                }
            }
            SubscriptionJob::Recreate {
                subscription_id, ..
            } => {
                let current = self.current(&user, kind).await?;
                match current.active {
                    Some(active) if active.id == *subscription_id => {
                        // Graph has dropped it: only our records remain.
                        self.store.remove(&user, kind, Some(&active.id)).await?;
                        if !self.wanted(&user, kind).await? {
                            return Ok(Outcome::Removed);
                        }
                        let outcome = self.create(&user, kind, None).await?;
                        if matches!(outcome, Outcome::Created { .. })
                            && let Some(resync) = &self.resync
                        {
                            let job = SyncJob::new(
                                kind,
                                user.tenant_id.clone(),
                                user.user_id.clone(),
                                SyncReason::Resync,
                            );
                            let url = match kind {
                                SyncKind::Mail => &resync.mail_sync,
                                SyncKind::Calendar => &resync.calendar_sync,
                            };
                            let message = QueueMessage::json(&job).map_err(ManagerError::Queue)?;
                            resync
                                .queue
                                .send_batch(url, &[message])
                                .await
                                .map_err(ManagerError::Queue)?;
                        }
                        Ok(outcome)
                    }
                    _ => Ok(Outcome::Stale),
                }
            }
        }
    }

    async fn current(
        &self,
        user: &UserKey,
        kind: SyncKind,
    ) -> Result<UserSubscription, StoreError> {
        let mut found = self
            .store
            .subscriptions_of(std::slice::from_ref(user), kind)
            .await?;
        Ok(found.remove(user).unwrap_or(UserSubscription {
            user: user.clone(),
            kind,
            active: None,
            failure: None,
        }))
    }

    async fn wanted(&self, user: &UserKey, kind: SyncKind) -> Result<bool, StoreError> {
        let Some(connection) = self.connections.get_connection(user).await? else {
            return Ok(false);
        };
        let tenant = self.tenants.get_tenant(&user.tenant_id).await?;
        Ok(wants_subscription(
            &connection,
            tenant.as_ref(),
            kind,
            self.clock.now(),
        ))
    }

    /// Makes the user's subscription of `kind` exist and live long enough, or removes it
    /// when the user should not have one.
    pub async fn ensure(&self, user: &UserKey, kind: SyncKind) -> Result<Outcome, ManagerError> {
        let current = self.current(user, kind).await?;
        if !self.wanted(user, kind).await? {
            return self.remove(user, kind, current.active).await;
        }
        let now = self.clock.now();
        match current.active {
            Some(active) if !active.due_for_renewal(now) => Ok(Outcome::Healthy),
            Some(active) if active.expires_at > now => self.renew(active).await,
            stale => {
                if stale.is_none()
                    && let Some(failure) = &current.failure
                    && failure.retry_at > now
                {
                    return Ok(Outcome::Waiting);
                }
                self.create(user, kind, stale.as_ref().map(|s| s.id.as_str()))
                    .await
            }
        }
    }

    async fn remove(
        &self,
        user: &UserKey,
        kind: SyncKind,
        active: Option<Subscription>,
    ) -> Result<Outcome, ManagerError> {
        let Some(active) = active else {
            return Ok(Outcome::NotWanted);
        };
        self.delete_at_graph(&active).await;
        self.store.remove(user, kind, Some(&active.id)).await?;
        info!(tenant_id = %user.tenant_id, user_id = %user.user_id, kind = kind.as_str(), "subscription removed");
        Ok(Outcome::Removed)
    }

    /// Deletes at Graph; `true` when it is gone there (deleted now, or already).
    async fn delete_at_graph(&self, subscription: &Subscription) -> bool {
        let user = subscription.user();
        let bearer = UserBearer {
            provider: self.tokens(subscription.kind),
            key: user.clone(),
        };
        let session = self.graph.session(&user.to_string(), &bearer, None);
        let result = session
            .delete(&format!("/subscriptions/{}", subscription.id))
            .await;
        session.close().await;
        match result {
            Ok(()) => true,
            // Microsoft documents 204 for a deletion (subscription-delete, read
            // 2026-12-06) but not the answer for a subscription it no longer has; 404 is
            // taken as "gone", and any other error leaves the subscription to expire by
            // itself (at most 10,060 minutes), so either way nothing is kept of it here.
            Err(error) if error.status() == Some(404) => true,
            Err(error) => {
                warn!(
                    tenant_id = %user.tenant_id,
                    user_id = %user.user_id,
                    kind = subscription.kind.as_str(),
                    error = %error,
                    "could not delete a subscription at Graph; it expires by itself"
                );
                false
            }
        }
    }

    async fn create(
        &self,
        user: &UserKey,
        kind: SyncKind,
        replaces: Option<&str>,
    ) -> Result<Outcome, ManagerError> {
        let now = self.clock.now();
        let state = ClientState::generate();
        let (resource, change_type) = resource(kind);
        let expires = format_time(now + LIFETIME);
        let body = json!({
            "changeType": change_type,
            "notificationUrl": self.urls.change,
            "lifecycleNotificationUrl": self.urls.lifecycle,
            "resource": resource,
            "expirationDateTime": expires,
            "clientState": state.expose(),
        });
        let bearer = UserBearer {
            provider: self.tokens(kind),
            key: user.clone(),
        };
        let session = self.graph.session(&user.to_string(), &bearer, None);
        let answer = session.post_json("/subscriptions", &body).await;
        session.close().await;
        let created: GraphSubscription = match answer {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|error| ManagerError::Graph(GraphError::Malformed(error.to_string())))?,
            Err(error) => return self.creation_failed(user, kind, error).await,
        };
        let expires_at = OffsetDateTime::parse(&created.expiration_date_time, &Rfc3339)
            .map_err(|error| ManagerError::Graph(GraphError::Malformed(error.to_string())))?;
        let subscription = Subscription {
            tenant_id: user.tenant_id.clone(),
            user_id: user.user_id.clone(),
            kind,
            id: created.id.clone(),
            resource: resource.to_owned(),
            client_state: state.digest(),
            expires_at,
            created_at: now,
            renewed_at: None,
        };
        self.store.save(&subscription, replaces).await?;
        info!(tenant_id = %user.tenant_id, user_id = %user.user_id, kind = kind.as_str(), "subscription created");
        Ok(Outcome::Created { id: created.id })
    }

    async fn creation_failed(
        &self,
        user: &UserKey,
        kind: SyncKind,
        error: GraphError,
    ) -> Result<Outcome, ManagerError> {
        let Some(reason) = refusal(&error) else {
            return Err(ManagerError::Graph(error));
        };
        self.record_refusal(user, kind, reason, &error).await
    }

    async fn record_refusal(
        &self,
        user: &UserKey,
        kind: SyncKind,
        reason: String,
        error: &GraphError,
    ) -> Result<Outcome, ManagerError> {
        let now = self.clock.now();
        warn!(
            tenant_id = %user.tenant_id,
            user_id = %user.user_id,
            kind = kind.as_str(),
            reason,
            error = %error,
            "Graph refused a subscription; tried again after a wait"
        );
        self.store
            .record_failure(
                user,
                kind,
                &CreateFailure {
                    reason: reason.clone(),
                    failed_at: now,
                    retry_at: now + RETRY_AFTER_FAILURE,
                },
            )
            .await?;
        Ok(Outcome::Failed { reason })
    }

    async fn renew(&self, active: Subscription) -> Result<Outcome, ManagerError> {
        let user = active.user();
        let now = self.clock.now();
        let bearer = UserBearer {
            provider: self.tokens(active.kind),
            key: user.clone(),
        };
        let session = self.graph.session(&user.to_string(), &bearer, None);
        let answer = session
            .patch_json(
                &format!("/subscriptions/{}", active.id),
                &json!({ "expirationDateTime": format_time(now + LIFETIME) }),
            )
            .await;
        session.close().await;
        match answer {
            Ok(bytes) => {
                let renewed: GraphSubscription =
                    serde_json::from_slice(&bytes).map_err(|error| {
                        ManagerError::Graph(GraphError::Malformed(error.to_string()))
                    })?;
                let expires_at = OffsetDateTime::parse(&renewed.expiration_date_time, &Rfc3339)
                    .map_err(|error| {
                        ManagerError::Graph(GraphError::Malformed(error.to_string()))
                    })?;
                let mut subscription = active;
                subscription.expires_at = expires_at;
                subscription.renewed_at = Some(now);
                self.store.save(&subscription, None).await?;
                Ok(Outcome::Renewed {
                    id: subscription.id,
                })
            }
            // Gone at Graph (expired, removed): a new one replaces it. (As for a deletion,
            // Microsoft does not document the status for an unknown subscription; any
            // other refusal below also ends in a new one, an hour later.)
            Err(error) if error.status() == Some(404) => {
                self.create(&user, active.kind, Some(&active.id)).await
            }
            // Refused for good (access withdrawn, token unusable): the subscription is given
            // up at Graph and here before the failure is recorded, so that a later creation
            // does not leave two subscriptions notifying for one user.
            Err(error) => {
                let Some(reason) = refusal(&error) else {
                    return Err(ManagerError::Graph(error));
                };
                self.delete_at_graph(&active).await;
                self.store
                    .remove(&user, active.kind, Some(&active.id))
                    .await?;
                self.record_refusal(&user, active.kind, reason, &error)
                    .await
            }
        }
    }

    /// Renews every subscription of an active connection that is due, and removes those of
    /// users who should not have one any more. The renewal schedule runs it.
    /// Stops before a new page once `stop_at` has passed (the Lambda's deadline less a
    /// page's work): the next pass, six hours later, starts over and finds what is still
    /// due (`report.complete` says whether it got through).
    pub async fn renewal_pass(
        &self,
        page_size: u32,
        stop_at: Option<tokio::time::Instant>,
    ) -> Result<RenewalReport, ManagerError> {
        let mut report = RenewalReport::default();
        let mut tenants: HashMap<TenantId, Option<Tenant>> = HashMap::new();
        let mut token: Option<PageToken> = None;
        loop {
            if stop_at.is_some_and(|at| tokio::time::Instant::now() >= at) {
                warn!(
                    scanned = report.scanned,
                    "the renewal pass ran out of time; the next one goes on"
                );
                return Ok(report);
            }
            let page = self
                .connections
                .query_active(page_size, token.as_ref())
                .await?;
            report.scanned += page.items.len() as u64;
            let users: Vec<UserKey> = page.items.iter().map(|c| c.key()).collect();
            for connection in &page.items {
                if !tenants.contains_key(&connection.tenant_id) {
                    let tenant = self.tenants.get_tenant(&connection.tenant_id).await?;
                    tenants.insert(connection.tenant_id.clone(), tenant);
                }
            }
            // The page's work: removals and due renewals, RENEWAL_CONCURRENCY at a time
            // (each is one user's own Graph call; they share no mailbox slots).
            let now = self.clock.now();
            let mut work: Vec<(UserKey, bool, Subscription)> = Vec::new();
            for kind in SyncKind::ALL {
                let mut found = self.store.subscriptions_of(&users, kind).await?;
                for connection in &page.items {
                    let Some(active) = found.remove(&connection.key()).and_then(|s| s.active)
                    else {
                        continue;
                    };
                    let tenant = tenants.get(&connection.tenant_id).and_then(Option::as_ref);
                    if !wants_subscription(connection, tenant, kind, now) {
                        work.push((connection.key(), false, active));
                    } else if active.due_for_renewal(now) {
                        work.push((connection.key(), true, active));
                    }
                }
            }
            let outcomes: Vec<Result<Outcome, ManagerError>> = stream::iter(work)
                .map(|(user, wanted, active)| async move {
                    if wanted {
                        self.renew(active).await
                    } else {
                        self.remove(&user, active.kind, Some(active)).await
                    }
                })
                .buffer_unordered(RENEWAL_CONCURRENCY)
                .collect()
                .await;
            for outcome in outcomes {
                match outcome {
                    Ok(Outcome::Renewed { .. }) => report.renewed += 1,
                    Ok(Outcome::Created { .. }) => report.recreated += 1,
                    Ok(Outcome::Removed) => report.removed += 1,
                    Ok(_) => report.failed += 1,
                    Err(error) => {
                        report.failed += 1;
                        warn!(error = %error, "renewing a subscription failed; the next pass tries again");
                    }
                }
            }
            match page.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        report.complete = true;
        Ok(report)
    }

    /// Deletes every subscription of `user` at Graph (as far as the user's token still
    /// allows) and in the store. Disconnection runs it before it deletes the token.
    pub async fn cancel_all(&self, user: &UserKey) -> Result<CancelReport, StoreError> {
        let mut report = CancelReport::default();
        for subscription in self.store.user_subscriptions(user).await? {
            if let Some(active) = &subscription.active {
                if self.delete_at_graph(active).await {
                    report.cancelled += 1;
                } else {
                    report.left_to_expire += 1;
                }
            }
            self.store
                .remove(
                    user,
                    subscription.kind,
                    subscription.active.as_ref().map(|a| a.id.as_str()),
                )
                .await?;
        }
        Ok(report)
    }
}

#[async_trait::async_trait]
impl crate::offboard::SubscriptionCanceller for Manager {
    async fn cancel_all(&self, user: &UserKey) -> Result<CancelReport, StoreError> {
        Manager::cancel_all(self, user).await
    }
}

/// The reason code of a Graph error that refuses for good (recorded, tried again after
/// [`RETRY_AFTER_FAILURE`]); `None` for one worth retrying soon (throttled, 5xx,
/// unreachable), which fails the job for SQS to retry.
fn refusal(error: &GraphError) -> Option<String> {
    Some(match error {
        GraphError::Throttled { .. } | GraphError::Transport { .. } | GraphError::OutOfTime => {
            return None;
        }
        GraphError::Api { status, .. } if *status >= 500 => return None,
        GraphError::Api { status: 403, .. } => "access_denied".to_owned(),
        // Graph's wording of a failed handshake ("Subscription validation request failed.
        // ...", change-notifications-delivery-webhooks and observed answers quoted in
        // infra/microsoft-sim/docs/subscriptions.md); other wording still records the
        // refusal, as `graph_400`.
        GraphError::Api {
            status: 400,
            message,
            ..
        } if message.contains("validation request failed") => "validation_failed".to_owned(),
        GraphError::Api { status, .. } => format!("graph_{status}"),
        GraphError::Token(_) | GraphError::Unauthorized => "token".to_owned(),
        GraphError::ForeignLink | GraphError::Malformed(_) => "graph_malformed".to_owned(),
    })
}

/// Graph's own format: `2026-12-13T10:00:00.0000000Z` (UTC, 7 fractional digits).
fn format_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.nanosecond() / 100
    )
}

/// Asks the subscriptions function to make `user`'s subscription of `kind` healthy: what a
/// sync worker sends after a completed run that found it missing or due.
pub fn ensure_job(user: &UserKey, kind: SyncKind) -> SubscriptionJob {
    SubscriptionJob::Ensure {
        kind,
        tenant_id: user.tenant_id.clone(),
        user_id: user.user_id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn refusals_are_recorded_and_outages_retried() {
        let api = |status: u16, message: &str| GraphError::Api {
            status,
            code: "x".into(),
            message: message.into(),
            request_id: None,
        };
        assert_eq!(refusal(&api(403, "")).as_deref(), Some("access_denied"));
        assert_eq!(
            refusal(&api(
                400,
                "Subscription validation request failed. HTTP 'InternalServerError'"
            ))
            .as_deref(),
            Some("validation_failed")
        );
        assert_eq!(refusal(&api(400, "other")).as_deref(), Some("graph_400"));
        assert_eq!(refusal(&GraphError::Unauthorized).as_deref(), Some("token"));
        assert_eq!(refusal(&api(503, "")), None);
        assert_eq!(
            refusal(&GraphError::Throttled {
                retry_after: std::time::Duration::from_secs(5)
            }),
            None
        );
    }

    #[test]
    fn times_are_written_as_graph_writes_them() {
        assert_eq!(
            format_time(datetime!(2026-12-13 10:00:05.123456789 UTC)),
            "2026-12-13T10:00:05.1234567Z"
        );
        let parsed =
            OffsetDateTime::parse("2026-12-13T10:00:05.1234567Z", &Rfc3339).expect("rfc3339");
        assert_eq!(parsed.second(), 5);
    }
}
