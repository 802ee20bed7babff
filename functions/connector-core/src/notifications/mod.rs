//! Change notifications: Graph subscriptions per connected user that wake a sync of that
//! mailbox or calendar within seconds, while the schedules stay as the safety net
//! (functions/subscriptions/README.md has the whole picture).
//!
//! - [`manager`]: creates, renews, recreates and deletes the subscriptions (the
//!   subscriptions function, and every disconnection through [`manager::Manager::cancel_all`]);
//! - [`webhook`]: the endpoint Graph calls (a route of the HTTP API): the validation
//!   handshake, change and lifecycle notifications, checked and turned into queued work
//!   without any Graph call;
//! - here: the records, the port they live behind, the client state, and who gets
//!   subscriptions.
//!
//! Microsoft's behaviour relied on, with sources (read 2026-12-06):
//! - subscription resources, `changeType`, `clientState` (≤ 128 characters), the
//!   validation handshake and the notification shape:
//!   <https://learn.microsoft.com/en-us/graph/api/subscription-post-subscriptions>,
//!   <https://learn.microsoft.com/en-us/graph/change-notifications-delivery-webhooks>
//!   (infra/microsoft-sim/conformance/subscriptions/ holds the wire examples);
//! - lifecycle events `reauthorizationRequired`, `subscriptionRemoved`, `missed`:
//!   <https://learn.microsoft.com/en-us/graph/change-notifications-lifecycle-events>;
//! - Outlook resources live at most 10,080 minutes by the docs, but Graph refuses more
//!   than 10,070 ("Subscription expiration can only be 10070 minutes in the future",
//!   observed in public codebases, infra/microsoft-sim/docs/subscriptions.md): we ask for
//!   [`LIFETIME`], under both;
//! - Graph does not promise delivery (notifications can be dropped, delayed, duplicated or
//!   reordered; `missed` says some were lost): a notification only wakes the same delta
//!   sync the schedule runs, so none of that can lose or duplicate anything.

pub mod manager;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::domain::{Connection, ConnectionStatus, SyncKind, Tenant, TenantId, UserId, UserKey};
use crate::ports::{ConnectionStore, JobQueue, QueueMessage, StoreError, TenantStore};
use crate::sync::wants_job;

/// How far ahead a subscription is asked to expire: under Outlook's 10,070 minutes with
/// ten minutes to spare for clocks that disagree.
pub const LIFETIME: time::Duration = time::Duration::minutes(10_060);
/// A subscription expiring sooner than this is renewed (by the renewal schedule, or the
/// next sync run that finds it so). The schedule runs every 6 hours, so a subscription is
/// renewed about two and a half days before it would expire, with many chances to retry.
pub const RENEW_BEFORE: time::Duration = time::Duration::hours(60);
/// A subscription counts as healthy (the schedule may poll its user less often) while it
/// has at least this long to live.
pub const HEALTHY_MARGIN: time::Duration = time::Duration::hours(1);
/// After a failed creation, how long before another attempt (a sync run asks again at
/// every run otherwise).
pub const RETRY_AFTER_FAILURE: time::Duration = time::Duration::hours(1);
/// Notifications of one subscription within this window wake one sync, which starts when
/// the window ends (its job is delayed by it), so it sees every change they announced.
pub const DEBOUNCE: Duration = Duration::from_secs(3);

/// The Graph resource and change types of a user's subscription of `kind`.
///
/// Mail: every message of the mailbox (`me/messages`), created and deleted only: the sync
/// imports messages whose participants match, and those never change after sending, so
/// `updated` (read flags, categories) would only wake runs that find nothing. One
/// subscription for the whole mailbox rather than one per synced folder: a message moved
/// into a synced folder is `created` there. Calendar: the user's events (`me/events`),
/// created, updated (a reschedule) and deleted.
pub fn resource(kind: SyncKind) -> (&'static str, &'static str) {
    match kind {
        SyncKind::Mail => ("me/messages", "created,deleted"),
        SyncKind::Calendar => ("me/events", "created,updated,deleted"),
    }
}

/// Whether `connection` should have a subscription of `kind`: whatever makes it get sync
/// jobs ([`wants_job`]: active, switches, scopes, grant; parking aside), plus the tenant's
/// `changeNotifications` switch.
pub fn wants_subscription(
    connection: &Connection,
    tenant: Option<&Tenant>,
    kind: SyncKind,
    now: OffsetDateTime,
) -> bool {
    let mut unparked = connection.clone();
    unparked.parked_until = Default::default();
    connection.status == ConnectionStatus::Active
        && tenant.is_none_or(|tenant| tenant.switches.change_notifications)
        && wants_job(&unparked, tenant, kind, now)
}

/// `SUBSCRIBED_POLL_MINUTES`: how often the schedule of period `schedule` polls a user
/// whose subscription is healthy (60 to 1,440 minutes; 360 when unset), as fan-out options.
pub fn subscribed_polling(
    lookup: impl Fn(&str) -> Option<String>,
    schedule: Duration,
) -> Result<crate::sync::SubscribedPolling, String> {
    let minutes = match lookup("SUBSCRIBED_POLL_MINUTES") {
        None => 360,
        Some(text) => text
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|m| (60..=1440).contains(m))
            .ok_or_else(|| {
                format!("SUBSCRIBED_POLL_MINUTES must be a whole number of minutes from 60 to 1440, not {text:?}")
            })?,
    };
    Ok(crate::sync::SubscribedPolling {
        schedule,
        every: Duration::from_secs(minutes * 60),
    })
}

/// What a sync worker needs to ask for subscriptions: the store (to see whether the
/// user's is healthy) and SubscriptionQueue.
pub struct Link {
    pub store: Arc<dyn SubscriptionStore>,
    pub queue: Arc<dyn JobQueue>,
    pub queue_url: String,
}

impl Link {
    /// On the real adapters: SubscriptionsTable and SubscriptionQueue of `config`.
    pub fn on_aws(
        dynamodb: aws_sdk_dynamodb::Client,
        config: &crate::config::Config,
        queue: Arc<dyn JobQueue>,
    ) -> Self {
        Self {
            store: Arc::new(crate::adapters::dynamodb::DynamoSubscriptionStore::new(
                dynamodb,
                config.tables.subscriptions.clone(),
            )),
            queue,
            queue_url: config.queues.subscriptions.clone(),
        }
    }

    /// After a completed run of `kind`: when the user's subscription is missing or due for
    /// renewal, the user should have one, and no failed creation asks to wait, queues
    /// [`SubscriptionJob::Ensure`](crate::messages::SubscriptionJob). Returns whether it did. A healthy
    /// subscription costs one read.
    pub async fn after_run(
        &self,
        connections: &dyn ConnectionStore,
        tenants: &dyn TenantStore,
        user: &UserKey,
        kind: SyncKind,
        now: OffsetDateTime,
    ) -> Result<bool, LinkError> {
        let current = self
            .store
            .subscriptions_of(std::slice::from_ref(user), kind)
            .await?
            .remove(user);
        if let Some(current) = &current {
            if current
                .active
                .as_ref()
                .is_some_and(|active| !active.due_for_renewal(now))
            {
                return Ok(false);
            }
            if current.active.is_none()
                && current
                    .failure
                    .as_ref()
                    .is_some_and(|failure| failure.retry_at > now)
            {
                return Ok(false);
            }
        }
        let Some(connection) = connections.get_connection(user).await? else {
            return Ok(false);
        };
        let tenant = tenants.get_tenant(&user.tenant_id).await?;
        if !wants_subscription(&connection, tenant.as_ref(), kind, now)
            && current.as_ref().is_none_or(|c| c.active.is_none())
        {
            return Ok(false);
        }
        let job = manager::ensure_job(user, kind);
        self.queue
            .send_batch(&self.queue_url, &[QueueMessage::json(&job)?])
            .await?;
        Ok(true)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] crate::ports::QueueError),
}

// ---------------------------------------------------------------------------------------
// The client state

/// A subscription's `clientState`: 32 random bytes, base64url (43 characters, under
/// Graph's 128). Graph sends it back with every notification; only its SHA-256 digest is
/// stored, so neither the table nor a backup of it can forge a notification.
pub struct ClientState(String);

impl ClientState {
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The value sent to Graph at creation, and never again.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn digest(&self) -> StateDigest {
        StateDigest::of(&self.0)
    }
}

impl std::fmt::Debug for ClientState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientState(redacted)")
    }
}

/// SHA-256 of a client state.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StateDigest([u8; 32]);

impl StateDigest {
    pub fn of(client_state: &str) -> Self {
        Self(Sha256::digest(client_state.as_bytes()).into())
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }

    /// Whether `client_state` is the one this digest was made of, in time independent of
    /// where they differ (every byte of both digests is looked at).
    pub fn matches(&self, client_state: &str) -> bool {
        let other = Self::of(client_state);
        let difference = self
            .0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(difference) == 0
    }
}

impl std::fmt::Debug for StateDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateDigest(..)")
    }
}

// ---------------------------------------------------------------------------------------
// Records

/// One live subscription of ours at Graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Subscription {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub kind: SyncKind,
    /// Graph's subscription id.
    pub id: String,
    pub resource: String,
    pub client_state: StateDigest,
    pub expires_at: OffsetDateTime,
    pub created_at: OffsetDateTime,
    pub renewed_at: Option<OffsetDateTime>,
}

impl Subscription {
    pub fn user(&self) -> UserKey {
        UserKey::new(self.tenant_id.clone(), self.user_id.clone())
    }

    pub fn healthy(&self, now: OffsetDateTime) -> bool {
        self.expires_at > now + HEALTHY_MARGIN
    }

    pub fn due_for_renewal(&self, now: OffsetDateTime) -> bool {
        self.expires_at <= now + RENEW_BEFORE
    }
}

/// Why the last attempt to create a user's subscription failed, and when to try again.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateFailure {
    /// A reason code (`validation_failed`, `access_denied`, `token`, `graph_<status>`).
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub failed_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub retry_at: OffsetDateTime,
}

/// What is known of one user's subscription of one kind.
#[derive(Clone, Debug, PartialEq)]
pub struct UserSubscription {
    pub user: UserKey,
    pub kind: SyncKind,
    pub active: Option<Subscription>,
    pub failure: Option<CreateFailure>,
}

/// Where subscriptions are kept (SubscriptionsTable; docs/data-model.md). Two items per
/// subscription: the user's (`{tenantId}#{userId}`, kind), which the manager, fan-out and
/// `connectorctl` read, and the subscription id's, which the webhook reads consistently
/// and its debounce writes.
#[async_trait]
pub trait SubscriptionStore: Send + Sync {
    /// Both kinds of one user (absent kinds are left out).
    async fn user_subscriptions(&self, user: &UserKey)
    -> Result<Vec<UserSubscription>, StoreError>;
    /// One kind of many users (the fan-out's and renewal pass's pages).
    async fn subscriptions_of(
        &self,
        users: &[UserKey],
        kind: SyncKind,
    ) -> Result<HashMap<UserKey, UserSubscription>, StoreError>;
    /// The subscription with Graph's id `id`, read consistently.
    async fn by_id(&self, id: &str) -> Result<Option<Subscription>, StoreError>;
    /// Stores `subscription` as its user's of its kind (clearing any failure), replacing
    /// the subscription `replaces` (whose id item is deleted in the same transaction).
    async fn save(
        &self,
        subscription: &Subscription,
        replaces: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Records a failed creation (the user's item keeps no subscription).
    async fn record_failure(
        &self,
        user: &UserKey,
        kind: SyncKind,
        failure: &CreateFailure,
    ) -> Result<(), StoreError>;
    /// Deletes the user's item of `kind` and the id item of `id` (absent ones are fine).
    async fn remove(
        &self,
        user: &UserKey,
        kind: SyncKind,
        id: Option<&str>,
    ) -> Result<(), StoreError>;
    /// The debounce: `true` (and records `now`) when no wake of subscription `id` was
    /// claimed within `window` before `now`, `false` otherwise or when `id` is unknown.
    async fn claim_wake(
        &self,
        id: &str,
        now: OffsetDateTime,
        window: Duration,
    ) -> Result<bool, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_states_are_random_urlsafe_and_within_graphs_limit() {
        let a = ClientState::generate();
        let b = ClientState::generate();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 43);
        assert!(
            a.expose()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn a_digest_matches_only_its_own_state() {
        let state = ClientState::generate();
        let digest = state.digest();
        assert!(digest.matches(state.expose()));
        assert!(!digest.matches(""));
        assert!(!digest.matches(&state.expose()[1..]));
        assert!(!digest.matches(ClientState::generate().expose()));
        let round_trip = StateDigest::from_hex(&digest.to_hex()).expect("hex");
        assert!(round_trip.matches(state.expose()));
        assert!(StateDigest::from_hex("abcd").is_none());
    }

    #[test]
    fn a_subscribed_user_is_polled_once_every_six_hours_and_users_spread_over_the_rounds() {
        let polling = subscribed_polling(|_| None, Duration::from_secs(900)).expect("default");
        assert_eq!(polling.every, Duration::from_secs(6 * 3600));
        let start = time::macros::datetime!(2026-12-06 00:00 UTC);
        let mut per_round = [0u32; 24];
        for n in 0..480u32 {
            let user = UserId::parse(&format!("00000000-0000-0000-0000-{n:012x}")).expect("guid");
            // 24 rounds of 15 minutes: exactly one is the user's.
            let due: Vec<usize> = (0..24)
                .filter(|round| {
                    polling.due(&user, start + time::Duration::minutes(15 * *round as i64))
                })
                .collect();
            assert_eq!(due.len(), 1, "{user}: {due:?}");
            per_round[due[0]] += 1;
            // And again 6 hours later, in the same slot.
            assert!(polling.due(
                &user,
                start + time::Duration::minutes(15 * due[0] as i64 + 360)
            ));
        }
        assert!(per_round.iter().all(|&n| n > 5), "spread: {per_round:?}");
        let hourly = subscribed_polling(
            |name| (name == "SUBSCRIBED_POLL_MINUTES").then(|| "120".to_owned()),
            Duration::from_secs(3600),
        )
        .expect("120");
        assert_eq!(hourly.every, Duration::from_secs(7200));
        for bad in ["59", "1441", "six", ""] {
            assert!(
                subscribed_polling(|_| Some(bad.to_owned()), Duration::from_secs(900)).is_err()
            );
        }
    }

    /// Over one safety-net period (24 rounds of 15 minutes) a user with a healthy
    /// subscription gets exactly one scheduled job; users without one, or whose subscription
    /// is about to expire, get one every round.
    #[tokio::test]
    async fn the_schedule_leaves_healthy_subscribers_to_their_notifications_but_one_round() {
        use crate::adapters::memory::{MemoryConnectionStore, MemoryJobQueue, MemoryTenantStore};
        use crate::adapters::notifications_memory::MemorySubscriptionStore;
        use crate::domain::FeatureBundle;
        use crate::sync::{FanOutOptions, fan_out_with};

        let start = time::macros::datetime!(2026-12-06 00:00 UTC);
        let tenant = TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").expect("guid");
        let connections = MemoryConnectionStore::default();
        let subscriptions = MemorySubscriptionStore::default();
        let mut subscribed = Vec::new();
        for n in 0..41u32 {
            let user = UserId::parse(&format!("00000000-0000-0000-0000-{n:012}")).expect("guid");
            let connection = Connection::new_active(
                tenant.clone(),
                user.clone(),
                format!("u{n}@contoso.example"),
                FeatureBundle::All.scope_set(),
                start,
            );
            connections
                .upsert_connection(&connection)
                .await
                .expect("upsert");
            if n < 31 {
                // The last of these expires within the hour: not healthy.
                let expires_at = if n == 30 {
                    start + time::Duration::minutes(30)
                } else {
                    start + time::Duration::days(5)
                };
                subscriptions
                    .save(
                        &Subscription {
                            tenant_id: tenant.clone(),
                            user_id: user.clone(),
                            kind: SyncKind::Mail,
                            id: format!("sub-{n}"),
                            resource: "me/messages".into(),
                            client_state: ClientState::generate().digest(),
                            expires_at,
                            created_at: start,
                            renewed_at: None,
                        },
                        None,
                    )
                    .await
                    .expect("save");
                if n < 30 {
                    subscribed.push(user);
                }
            }
        }
        let tenants = MemoryTenantStore::default();
        let queue = MemoryJobQueue::default();
        let mut jobs: HashMap<UserId, u32> = HashMap::new();
        let mut resting = 0;
        for round in 0..24 {
            let report = fan_out_with(
                &connections,
                &tenants,
                Some(&subscriptions),
                &queue,
                "q",
                SyncKind::Mail,
                // Schedules fire a little after the quarter hour.
                start + time::Duration::seconds(round * 900 + 7),
                FanOutOptions::default(),
            )
            .await
            .expect("fan-out");
            resting += report.subscribed;
            assert_eq!(report.scanned, 41);
            assert_eq!(report.enqueued + report.subscribed, 41, "{report:?}");
            for message in queue.take("q") {
                let job: crate::messages::SyncJob =
                    serde_json::from_str(&message.body).expect("job");
                *jobs.entry(job.user_id).or_default() += 1;
            }
        }
        for user in &subscribed {
            assert_eq!(jobs[user], 1, "{user}");
        }
        assert_eq!(jobs.values().filter(|&&n| n == 24).count(), 11);
        assert_eq!(resting, 30 * 23);
        // Without the store (or with it empty) everyone is polled every round.
        let report = fan_out_with(
            &connections,
            &tenants,
            None,
            &queue,
            "q",
            SyncKind::Mail,
            start,
            FanOutOptions::default(),
        )
        .await
        .expect("fan-out");
        assert_eq!((report.enqueued, report.subscribed), (41, 0));
    }

    #[test]
    fn mail_ignores_updates_and_calendar_takes_them() {
        assert_eq!(resource(SyncKind::Mail), ("me/messages", "created,deleted"));
        assert_eq!(
            resource(SyncKind::Calendar),
            ("me/events", "created,updated,deleted")
        );
    }
}
