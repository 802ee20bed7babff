//! The narrow traits handlers depend on, and their error types. Each port has a real
//! adapter (DynamoDB, Secrets Manager, SQS) and an in-memory one for domain tests.
//!
//! Traits use `async-trait` so that they are object safe (`&dyn TenantStore`) and
//! their futures are `Send` (handlers spawn them on the multi-threaded runtime);
//! generic handlers take `&impl Trait` just as well.

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use time::{Date, OffsetDateTime};

use crate::budget::{LedgerRead, MailboxShares};
use crate::domain::{
    Activity, ActivityId, Connection, ConsentMeeting, CrmAdditions, CrmIndexSummary, CrmLookup,
    CrmSnapshot, FolderCursor, Lease, LinkToken, ReplaceOutcome, StatusChange, SyncKey, SyncKind,
    SyncMeta, Tenant, TenantId, TenantSwitches, UserKey, UserSwitches,
};
use crate::matching::CrmMatchIndex;
use crate::messages::SyncJob;
use crate::secret::{ClientSecret, TokenRecord};

/// The Teams ports live with their types in [`crate::teams`].
pub use crate::teams::{IdempotencyStore, ShareTargetStore, TeamsQueues};

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failure of a table-backed port.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or refused the request (after the SDK's own retries).
    #[error("{operation} on {resource} failed")]
    Backend {
        operation: &'static str,
        resource: String,
        #[source]
        source: BoxError,
    },
    /// A stored item does not decode into the domain type.
    #[error("item {key} in {resource} cannot be decoded")]
    Corrupt {
        resource: String,
        key: String,
        #[source]
        source: BoxError,
    },
    /// A batch call kept returning unprocessed items until the retry budget ran out.
    #[error(
        "{operation} on {resource}: {remaining} item(s) still unprocessed after {attempts} attempts"
    )]
    Unprocessed {
        operation: &'static str,
        resource: String,
        remaining: usize,
        attempts: u32,
    },
    /// A conditional write lost against a concurrent writer.
    #[error("{what} was changed concurrently")]
    Conflict { what: String },
    #[error("{what} not found")]
    NotFound { what: String },
    /// A continuation token that this store did not issue.
    #[error("invalid continuation token")]
    InvalidPageToken,
    /// A worker's write refused because the user's connection is no longer active
    /// (disconnected, deleted by offboarding): the fence of docs/fencing.md. The run ends
    /// quietly; nothing of the user is written again.
    #[error("{what}: the connection is no longer active")]
    Fenced { what: String },
}

/// A failure of the token vault.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{operation} of secret {secret_id} failed")]
    Backend {
        operation: &'static str,
        secret_id: String,
        #[source]
        source: BoxError,
    },
    /// The secret exists but its value is not what we store (never echoed).
    #[error("secret {secret_id} has an unreadable value")]
    Corrupt {
        secret_id: String,
        #[source]
        source: BoxError,
    },
    #[error("secret {secret_id} not found")]
    NotFound { secret_id: String },
}

/// One queue entry that could not be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedEntry {
    /// Position in the slice given to `send_batch`.
    pub index: usize,
    pub code: String,
    pub message: String,
    /// SQS blames the message itself (e.g. too large): retrying cannot help.
    pub sender_fault: bool,
}

/// A failure of the job queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{operation} on {queue} failed")]
    Backend {
        operation: &'static str,
        queue: String,
        #[source]
        source: BoxError,
    },
    #[error("message cannot be encoded")]
    Encode(#[source] serde_json::Error),
    #[error("invalid message: {reason}")]
    InvalidMessage { reason: String },
    /// Some entries were not accepted after retries; the others were sent.
    #[error(
        "{} of {} message(s) could not be sent to {queue} (indexes {})",
        failures.len(),
        failures.len() + sent,
        failures.iter().map(|f| format!("{}: {}", f.index, f.code)).collect::<Vec<_>>().join(", ")
    )]
    EntriesFailed {
        queue: String,
        sent: usize,
        failures: Vec<FailedEntry>,
    },
}

/// An opaque continuation token; pass it back to get the next page.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PageToken(pub String);

impl PageToken {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One page of results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// `None` on the last page.
    pub next: Option<PageToken>,
}

#[async_trait]
pub trait TenantStore: Send + Sync {
    async fn get_tenant(&self, tenant_id: &TenantId) -> Result<Option<Tenant>, StoreError>;
    /// Creates or replaces the tenant record.
    async fn put_tenant(&self, tenant: &Tenant) -> Result<(), StoreError>;
    /// Returns whether a record existed.
    async fn delete_tenant(&self, tenant_id: &TenantId) -> Result<bool, StoreError>;
    /// Replaces the administrator's switches of an existing tenant (`NotFound` otherwise),
    /// leaving the rest of the record as it is.
    async fn set_switches(
        &self,
        tenant_id: &TenantId,
        switches: TenantSwitches,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;
}

#[async_trait]
pub trait ConnectionStore: Send + Sync {
    async fn get_connection(&self, key: &UserKey) -> Result<Option<Connection>, StoreError>;
    /// Creates or replaces the connection record.
    async fn upsert_connection(&self, connection: &Connection) -> Result<(), StoreError>;
    /// Changes the status of an existing connection (`NotFound` otherwise); returns the updated record.
    async fn set_status(
        &self,
        key: &UserKey,
        change: &StatusChange,
    ) -> Result<Connection, StoreError>;
    /// Replaces the reason `from` of a connection that is still `disconnected` with `to`
    /// (status and its time unchanged); `false`, writing nothing, when the record is gone,
    /// is no longer disconnected (the user signed in again) or has another reason.
    async fn replace_disconnected_reason(
        &self,
        key: &UserKey,
        from: &str,
        to: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Parks (or un-parks with `None`) one feature of an existing connection.
    async fn set_parked_until(
        &self,
        key: &UserKey,
        kind: SyncKind,
        until: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Replaces the user's switches on an existing connection.
    async fn set_switches(
        &self,
        key: &UserKey,
        switches: UserSwitches,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Every connection of a tenant, any status.
    async fn list_by_tenant(&self, tenant_id: &TenantId) -> Result<Vec<Connection>, StoreError>;
    /// One page of `active` connections (the `ByStatus` index), for fan-out.
    async fn query_active(
        &self,
        page_size: u32,
        token: Option<&PageToken>,
    ) -> Result<Page<Connection>, StoreError>;
    /// One page of every connection, any status, for operators.
    async fn list_all(
        &self,
        page_size: u32,
        token: Option<&PageToken>,
    ) -> Result<Page<Connection>, StoreError>;
    /// Removes the record altogether (tenant offboarding; a disconnected user keeps a
    /// `disconnected` record instead). Returns whether it existed.
    async fn delete_connection(&self, key: &UserKey) -> Result<bool, StoreError>;
}

#[async_trait]
pub trait SyncStateStore: Send + Sync {
    /// Takes the mailbox lease for `ttl` if it is free, expired, or already `holder`'s
    /// (which renews it). Of concurrent acquirers exactly one gets `true`.
    async fn acquire_lease(
        &self,
        key: &SyncKey,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// Extends `holder`'s lease to `ttl` from now, only while `holder` still holds it
    /// (even past its expiry, as long as nobody else took it); `false` when the lease is
    /// gone or another holder has it. The default takes the lease again, which is the
    /// same unless it expired and was free (wrappers in tests); real adapters override it.
    async fn renew_lease(
        &self,
        key: &SyncKey,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.acquire_lease(key, holder, ttl).await
    }
    /// Releases the lease if `holder` still holds it; returns whether it did.
    async fn release_lease(&self, key: &SyncKey, holder: &str) -> Result<bool, StoreError>;
    async fn get_lease(&self, key: &SyncKey) -> Result<Option<Lease>, StoreError>;
    async fn get_meta(&self, key: &SyncKey) -> Result<Option<SyncMeta>, StoreError>;
    async fn put_meta(&self, key: &SyncKey, meta: &SyncMeta) -> Result<(), StoreError>;
    async fn get_cursor(
        &self,
        key: &SyncKey,
        folder_id: &str,
    ) -> Result<Option<FolderCursor>, StoreError>;
    async fn put_cursor(&self, key: &SyncKey, cursor: &FolderCursor) -> Result<(), StoreError>;
    async fn list_cursors(&self, key: &SyncKey) -> Result<Vec<FolderCursor>, StoreError>;
    async fn delete_cursor(&self, key: &SyncKey, folder_id: &str) -> Result<(), StoreError>;
    /// Removes every item of the sync (lease, meta, cursors): on disconnection.
    async fn delete_sync_state(&self, key: &SyncKey) -> Result<(), StoreError>;
}

/// The ledger of a mailbox's Outlook slots, shared by every worker of the app
/// ([`crate::budget`]): one record per mailbox, written by compare-and-set.
#[async_trait]
pub trait SlotLedger: Send + Sync {
    /// The mailbox's ledger (empty, version 0, when there is none), read consistently.
    async fn read_slots(&self, mailbox: &str) -> Result<LedgerRead, StoreError>;
    /// Stores `shares` if the ledger is still at `version` (as version + 1; no holders:
    /// the ledger is removed). `false` when another writer came first.
    async fn write_slots(
        &self,
        mailbox: &str,
        shares: &MailboxShares,
        version: u64,
    ) -> Result<bool, StoreError>;
}

/// One activity a store refused for good (the store rejected the item itself, not the
/// request): the importer records it and goes on. The reason names the store's error
/// code and never any content of the activity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub id: ActivityId,
    pub reason: String,
}

/// What [`ActivityStore::store_activities`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreReport {
    /// Distinct activities that were new, or differed from the stored copy, and were
    /// written.
    pub written: u64,
    /// Distinct activities already stored exactly so (written again only when asked).
    pub unchanged: u64,
    pub refused: Vec<Refused>,
}

impl StoreReport {
    /// The refused activities as the sync meta records them (id and reason, no content),
    /// each logged.
    pub fn skipped_items(&self, now: OffsetDateTime) -> Vec<crate::domain::SkippedItem> {
        self.refused
            .iter()
            .map(|refused| {
                tracing::warn!(
                    item = refused.id.immutable_id(),
                    reason = %refused.reason,
                    "an item cannot be stored; skipped"
                );
                crate::domain::SkippedItem {
                    id: refused.id.immutable_id().to_owned(),
                    reason: refused.reason.clone(),
                    at: now,
                }
            })
            .collect()
    }
}

#[async_trait]
pub trait ActivityStore: Send + Sync {
    /// Idempotent: an activity with the same owner and id replaces the stored one.
    async fn upsert_activities(&self, activities: &[Activity]) -> Result<(), StoreError>;
    /// As [`Self::upsert_activities`], for an importer: the same id twice counts once (the
    /// last wins); an activity already stored with the same content (its import time
    /// aside) is not written again unless `rewrite_unchanged` (a reconciling round stamps
    /// what it saw with its `imported_at`), and counts as unchanged either way; an activity
    /// the store refuses for good is reported in [`StoreReport::refused`] and the others
    /// are stored. The default writes every activity, counts each as written and refuses
    /// none.
    async fn store_activities(
        &self,
        activities: &[Activity],
        rewrite_unchanged: bool,
    ) -> Result<StoreReport, StoreError> {
        let _ = rewrite_unchanged;
        self.upsert_activities(activities).await?;
        let distinct: std::collections::HashSet<(UserKey, &ActivityId)> = activities
            .iter()
            .map(|a| (a.owner(), &a.activity_id))
            .collect();
        Ok(StoreReport {
            written: distinct.len() as u64,
            ..StoreReport::default()
        })
    }
    async fn get_activity(
        &self,
        owner: &UserKey,
        id: &ActivityId,
    ) -> Result<Option<Activity>, StoreError>;
    /// Returns whether it existed.
    async fn delete_activity(&self, owner: &UserKey, id: &ActivityId) -> Result<bool, StoreError>;
    /// Deletes a stored mail activity only while it is filed in `folder_id`, atomically (a
    /// message that moved to another synced folder meanwhile is kept). Returns whether it
    /// was deleted.
    async fn delete_mail_in_folder(
        &self,
        owner: &UserKey,
        id: &ActivityId,
        folder_id: &str,
    ) -> Result<bool, StoreError>;
    /// Deletes many at once (missing ones are fine).
    async fn delete_activities(
        &self,
        owner: &UserKey,
        ids: &[ActivityId],
    ) -> Result<(), StoreError>;
    /// One page of a user's activities, ordered by activity id.
    async fn list_activities(
        &self,
        owner: &UserKey,
        page_size: u32,
        token: Option<&PageToken>,
    ) -> Result<Page<Activity>, StoreError>;
    /// One page of a user's activities whose id starts with `prefix` (`event#`: meetings
    /// only), ordered by activity id. A page may hold fewer items than asked (even none)
    /// and still have a next one. The default filters [`Self::list_activities`]; stores
    /// that can, read only the prefix.
    async fn list_activities_with_prefix(
        &self,
        owner: &UserKey,
        prefix: &str,
        page_size: u32,
        token: Option<&PageToken>,
    ) -> Result<Page<Activity>, StoreError> {
        let page = self.list_activities(owner, page_size, token).await?;
        Ok(Page {
            items: page
                .items
                .into_iter()
                .filter(|activity| activity.activity_id.as_str().starts_with(prefix))
                .collect(),
            next: page.next,
        })
    }
    /// Deletes every activity of a user (on disconnection); returns how many.
    async fn delete_all_activities(&self, owner: &UserKey) -> Result<u64, StoreError>;

    /// One page of a user's activities dated (`Activity::dated_at`) in `[from, to)`,
    /// ordered by activity id, at most `limit` of them (the platform API). The owner's
    /// partition is read page by page through [`Self::list_activities`], each read asking
    /// only for what the page still lacks, and filtered here: a DynamoDB filter expression
    /// would read (and bill) the same items, and the date is not a key. At most
    /// `max_reads` reads are made, so a page may hold fewer than `limit` (even none) and
    /// still have a next one. The token is the store's own (its last evaluated key), so
    /// every activity is returned exactly once across the pages.
    async fn list_activities_between(
        &self,
        owner: &UserKey,
        from: Option<OffsetDateTime>,
        to: Option<OffsetDateTime>,
        limit: u32,
        max_reads: u32,
        token: Option<&PageToken>,
    ) -> Result<Page<Activity>, StoreError> {
        let limit = limit.max(1);
        let mut items = Vec::new();
        let mut next = token.cloned();
        for _ in 0..max_reads.max(1) {
            let wanted = limit - items.len() as u32;
            let page = self.list_activities(owner, wanted, next.as_ref()).await?;
            items.extend(page.items.into_iter().filter(|activity| {
                let at = activity.dated_at();
                from.is_none_or(|from| at >= from) && to.is_none_or(|to| at < to)
            }));
            next = page.next;
            if next.is_none() || items.len() as u32 >= limit {
                break;
            }
        }
        Ok(Page { items, next })
    }
}

/// Explicit Consent Mode's meetings ([`ConsentMeeting`]), kept in the host's partition of
/// the activities table beside their meetings: deleting a user's activities deletes them.
#[async_trait]
pub trait ConsentMeetingStore: Send + Sync {
    /// A consistent read of one meeting.
    async fn get_consent_meeting(
        &self,
        owner: &UserKey,
        event_id: &str,
    ) -> Result<Option<ConsentMeeting>, StoreError>;
    /// Every meeting of a host (any status), ordered by event id.
    async fn list_consent_meetings(
        &self,
        owner: &UserKey,
    ) -> Result<Vec<ConsentMeeting>, StoreError>;
    /// Saves `meeting` if the stored one is still `before` (by version; `None`: none is
    /// stored), writing the links `before` lacked and deleting those it dropped. Returns
    /// the saved meeting (its version moved on), or `None` when another writer saved
    /// first (read it again and redo the change).
    async fn save_consent_meeting(
        &self,
        meeting: &ConsentMeeting,
        before: Option<&ConsentMeeting>,
    ) -> Result<Option<ConsentMeeting>, StoreError>;
    /// The meeting a link token belongs to, if any.
    async fn find_consent_meeting(
        &self,
        token: &LinkToken,
    ) -> Result<Option<ConsentMeeting>, StoreError>;
    /// Meetings with something due (`ConsentMeeting::next_due`) at or before `until`,
    /// earliest first, at most `limit`.
    async fn due_consent_meetings(
        &self,
        until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<(UserKey, String)>, StoreError>;
}

/// The store of what an activity item cannot hold: one object per mail activity (its
/// body, every participant and match), keyed by [`crate::domain::body_key`] under the
/// owner's prefix (`{tenantId}/{userId}/`). Objects are written before the item that
/// names them and deleted after it.
#[async_trait]
pub trait BodyStore: Send + Sync {
    /// Writes (or overwrites) one object.
    async fn put_body(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError>;
    async fn get_body(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Deletes objects; missing ones are fine.
    async fn delete_bodies(&self, keys: &[String]) -> Result<(), StoreError>;
    /// Deletes every object under `prefix`; returns how many.
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError>;
    /// How many objects are under `prefix` (the offboarding residue check).
    async fn count_prefix(&self, prefix: &str) -> Result<u64, StoreError>;
}

#[async_trait]
pub trait CrmIndex: Send + Sync {
    /// Makes `snapshot` the tenant's index. A concurrent `lookup` sees the old index or
    /// the new one, never a mix. The same content again writes nothing.
    async fn replace_snapshot(&self, snapshot: &CrmSnapshot) -> Result<ReplaceOutcome, StoreError>;
    /// Looks up many addresses and domains at once (inputs are normalised: trimmed,
    /// lower-cased; invalid ones are misses).
    async fn lookup(
        &self,
        tenant_id: &TenantId,
        addresses: &[String],
        domains: &[String],
    ) -> Result<CrmLookup, StoreError>;
    /// The current index's summary: version, hash, counts, oldest open opportunity.
    async fn summary(&self, tenant_id: &TenantId) -> Result<Option<CrmIndexSummary>, StoreError>;
    /// The whole current index of a tenant (one consistent version) in the compact form
    /// matching needs: sync workers load it once per container instead of looking up
    /// every address. Stores build it while reading, never holding the stored form whole.
    async fn load(
        &self,
        tenant_id: &TenantId,
    ) -> Result<Option<(CrmIndexSummary, CrmMatchIndex)>, StoreError>;
    /// Removes the tenant's whole index (every version and the pointer), for tenant
    /// offboarding; returns how many items there were.
    async fn delete_index(&self, tenant_id: &TenantId) -> Result<u64, StoreError>;
    /// The entries of the current index (one consistent version) that were not in the
    /// index current at `after` (the `imported_at` of an earlier summary): each entry keeps
    /// the instant of the import that first brought it, carried from version to version
    /// while it stays, so an address removed and brought back counts as added again.
    /// `None` without an index.
    async fn additions_since(
        &self,
        tenant_id: &TenantId,
        after: OffsetDateTime,
    ) -> Result<Option<CrmAdditions>, StoreError>;

    /// Created date of the tenant's oldest open opportunity.
    async fn oldest_open_opportunity(
        &self,
        tenant_id: &TenantId,
    ) -> Result<Option<Date>, StoreError> {
        Ok(self
            .summary(tenant_id)
            .await?
            .and_then(|summary| summary.oldest_open_opportunity))
    }
}

#[async_trait]
pub trait TokenVault: Send + Sync {
    /// Creates the user's secret or stores a new value in it (sign-in only).
    async fn put_token(&self, key: &UserKey, record: &TokenRecord) -> Result<(), VaultError>;
    /// Stores a new value in the user's existing secret and never creates one (a worker's
    /// refresh): `Ok(false)` when there is no secret (the user was disconnected meanwhile),
    /// so a worker can never bring a deleted token back.
    async fn replace_token(&self, key: &UserKey, record: &TokenRecord) -> Result<bool, VaultError>;
    async fn get_token(&self, key: &UserKey) -> Result<Option<TokenRecord>, VaultError>;
    /// Deletes at once, without a recovery window. Idempotent: a missing secret is fine
    /// (Secrets Manager itself reports success for a forced delete of a missing secret).
    async fn delete_token(&self, key: &UserKey) -> Result<(), VaultError>;
}

#[async_trait]
pub trait ClientSecretSource: Send + Sync {
    /// The Entra app's client secret value.
    async fn client_secret(&self) -> Result<ClientSecret, VaultError>;
}

/// A message to send: its body and an optional delivery delay (0-900 s).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueMessage {
    pub body: String,
    pub delay: Duration,
}

impl QueueMessage {
    pub fn new(body: impl Into<String>) -> Self {
        Self {
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    pub fn json(value: &impl Serialize) -> Result<Self, QueueError> {
        serde_json::to_string(value)
            .map(Self::new)
            .map_err(QueueError::Encode)
    }

    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// SQS's limit on a message's delay.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Sends every message (SendMessageBatch in chunks of 10, chunks in parallel,
    /// failed entries retried); returns how many were sent, or `EntriesFailed` naming
    /// the ones that could not be.
    async fn send_batch(
        &self,
        queue_url: &str,
        messages: &[QueueMessage],
    ) -> Result<usize, QueueError>;
    /// Hides a received message for `timeout` (redelivery later, without counting as a failure of ours).
    async fn change_visibility(
        &self,
        queue_url: &str,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), QueueError>;
}

/// Enqueues sync jobs as JSON.
pub async fn enqueue_sync_jobs(
    queue: &(impl JobQueue + ?Sized),
    queue_url: &str,
    jobs: &[SyncJob],
) -> Result<usize, QueueError> {
    let messages = jobs
        .iter()
        .map(QueueMessage::json)
        .collect::<Result<Vec<_>, _>>()?;
    queue.send_batch(queue_url, &messages).await
}

/// Checks a batch before sending: SQS refuses delays over 900 s and empty bodies.
pub fn validate_messages(messages: &[QueueMessage]) -> Result<(), QueueError> {
    for (index, message) in messages.iter().enumerate() {
        if message.delay > MAX_DELAY {
            return Err(QueueError::InvalidMessage {
                reason: format!("message {index}: delay over 900 seconds"),
            });
        }
        if message.body.is_empty() {
            return Err(QueueError::InvalidMessage {
                reason: format!("message {index}: empty body"),
            });
        }
    }
    Ok(())
}
