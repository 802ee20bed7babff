//! The machinery every sync function shares (mail-sync now, calendar-sync next; teams-post
//! reuses the token and status parts): schedule fan-out, and the worker skeleton around a
//! function's own work.
//!
//! - **Fan-out** ([`fan_out`]): pages of `active` connections (`query_active`), filtered by
//!   [`wants_job`] (switch on, scopes and tenant grant, not parked), one [`SyncJob`] each,
//!   sent with SendMessageBatch while the next page is read; several pages' sends in flight.
//! - **Worker** ([`run_job`]): connection check → lease → token → the function's
//!   [`SyncWork`] → checkpoint (the work's own, after every page) → release, then one summary
//!   log line and one CloudWatch embedded-metric-format line ([`SummarySink`]).
//!   - the lease: [`LEASE_TTL`] (90 s), renewed every [`LEASE_RENEW_EVERY`] by the live run
//!     (conditional on still holding it; a lease that may be lost drops the run, which
//!     writes nothing more: `LeaseLost` when another holder took it, acknowledged;
//!     `LeaseUnrenewed` when renewals failed or hung, kept and back after one lease);
//!     released before a continuation is queued. A job meeting a held lease is `Busy` and
//!     comes back when that lease ends (message hidden, or requeued), never dropped: if the
//!     holder died, it resumes the mailbox within one lease;
//!   - the job's own message: hidden [`RUN_VISIBILITY`] (120 s) as a leased run starts and
//!     extended every [`VISIBILITY_EXTEND_EVERY`] beside it, so a dead worker's job
//!     reappears within two minutes and finds its lease lapsed; after the run a `Retry` is
//!     hidden [`RETRY_BACKOFF`] (the queues' 960 s, as before). [`WorkerTimings`] holds
//!     these timings;
//!   - progress: the meta's stage is written when it changes and the run's counters with
//!     each checkpoint ([`RunContext::enter`], [`RunContext::checkpoint`], [`Progress`]),
//!     so a dead worker's import shows in `connectorctl status`;
//!   - Outlook's 4 concurrent requests: the run's Graph session joins the mailbox's slot
//!     budget when the client has one ([`crate::budget`]; mail-sync and calendar-sync share
//!     it) and leaves it when the work ends;
//!   - deadline: the work gets a deadline [`DEADLINE_MARGIN`] (60 s) before Lambda's and
//!     stops at a page boundary; the run then queues its continuation job. What is still
//!     in flight [`HARD_STOP_MARGIN`] (15 s) before Lambda's deadline is cut (out of time,
//!     continued from the last checkpoint), and a whole job returns [`FINISH_MARGIN`]
//!     before it, so an invocation always reports each record's own outcome;
//!   - throttling past the job's budget: the mailbox is parked (`parkedUntil` on the
//!     connection, stage `parked` with `nextAttemptAt`) and the SQS message is hidden until
//!     then (visibility change) and reported as a batch item failure, so SQS redelivers it
//!     without a failure of ours; after [`PARK_REQUEUE_AFTER`] receives the message is
//!     replaced by a fresh delayed job instead, so parking never walks it into the DLQ;
//!   - errors become connection statuses with reason codes ([`Disposition`]): 401 after
//!     one refresh or `invalid_grant` → `reauth_required`; consent errors or a 403 on a
//!     granted scope → `consent_revoked`; `MailboxNotEnabledForRESTAPI` →
//!     `mailbox_unsupported`. Transient faults fail only this job (SQS retries it); other
//!     jobs of the batch are unaffected.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, stream};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::clock::Clock;
use crate::domain::{
    Connection, ConnectionStatus, ConsentMode, Feature, SkippedItem, StatusChange, SyncCounters,
    SyncKey, SyncKind, SyncMeta, SyncStage, Tenant, TenantId, UserKey,
};
use crate::graph::{GraphClient, GraphError, GraphStats, MailboxSession};
use crate::messages::{SyncJob, SyncReason};
use crate::oauth::{RefreshFailure, TokenError, TokenProvider, UserBearer};
use crate::ports::{
    ConnectionStore, JobQueue, PageToken, QueueError, QueueMessage, StoreError, SyncStateStore,
    TenantStore,
};

/// Time kept free before Lambda's deadline: the work stops, checkpoints and queues its
/// continuation within it.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(60);
/// A parked job received this many times is replaced by a fresh delayed one (the queues'
/// `maxReceiveCount` is 5).
pub const PARK_REQUEUE_AFTER: u32 = 3;
/// A parked sync counts as due this long before its `parkedUntil` (visibility timeouts and
/// clocks are not exact).
pub const PARK_GRACE: time::Duration = time::Duration::minutes(1);
/// Shortest parking.
pub const MIN_PARK: Duration = Duration::from_secs(30);
/// How long a mailbox lease lasts unless its worker renews it: a worker that dies (out of
/// memory, killed, a crash) frees its mailbox this long after its last renewal at most.
pub const LEASE_TTL: Duration = Duration::from_secs(90);
/// How often a live worker renews its lease (three renewals fit in one [`LEASE_TTL`], so
/// one slow or failed renewal does not lose it).
pub const LEASE_RENEW_EVERY: Duration = Duration::from_secs(30);
/// How long before its lease could lapse a run that could not renew it stops: more than a
/// write in flight takes, so none lands after another holder took the lease.
pub const LEASE_MARGIN: Duration = Duration::from_secs(15);
/// How long a leased run keeps its own SQS message hidden, from each extension: a worker
/// that dies lets its message reappear this long after its last extension at most, instead
/// of after the queue's visibility timeout (960 s). At least [`LEASE_TTL`] plus
/// [`VISIBILITY_EXTEND_EVERY`], so that the redelivery finds the dead worker's lease
/// lapsed (its last renewal was no later than its last extension).
pub const RUN_VISIBILITY: Duration = Duration::from_secs(120);
/// How often a live run extends its message's visibility to [`RUN_VISIBILITY`] (four
/// extensions fit in one, so failed ones are retried well before it reappears).
pub const VISIBILITY_EXTEND_EVERY: Duration = Duration::from_secs(30);
/// How long a job kept for a retry (`Retry`) stays hidden after its run: the queues'
/// visibility timeout (960 s in template.yaml), i.e. what SQS gave every retry before runs
/// shortened their message's visibility, so `maxReceiveCount` (5) still spans about 80
/// minutes of transient faults before a job reaches the DLQ.
pub const RETRY_BACKOFF: Duration = Duration::from_secs(960);
/// Time kept free before Lambda's deadline after which the work is cut wherever it is
/// (a Graph or AWS request in flight included): past [`DEADLINE_MARGIN`] the work stops at
/// its next page boundary by itself; this bounds what was already under way.
pub const HARD_STOP_MARGIN: Duration = Duration::from_secs(15);
/// Time kept free before Lambda's deadline by a whole job (meta, lease release,
/// continuation included), so that the invocation answers with every record's outcome.
pub const FINISH_MARGIN: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------------------
// Fan-out

/// Whether a connection should get a `kind` job now: active, the user's switch on, the
/// user's scopes allowing the feature, the tenant's admin grant allowing it (tenants in
/// user-consent mode grant per user, so only the user's scopes count there), the
/// tenant's administrator not having switched the feature off, and not parked past `now`.
/// The fan-out asks it, and so does the worker when the job arrives (a switch turned off
/// in between stops the job).
pub fn wants_job(
    connection: &Connection,
    tenant: Option<&Tenant>,
    kind: SyncKind,
    now: OffsetDateTime,
) -> bool {
    let features: Option<BTreeSet<Feature>> = tenant
        .filter(|tenant| tenant.consent_mode == ConsentMode::Preauthorized)
        .map(Tenant::features);
    let admin_allows = tenant.is_none_or(|tenant| tenant.switches.allows(kind));
    admin_allows && connection.wants_sync(kind, features.as_ref(), now + PARK_GRACE)
}

/// An SQS batch's answer with partial batch failures: the records to deliver again
/// (`keep`), by message id; every other record of the batch is deleted by Lambda.
pub fn batch_response(
    outcomes: impl IntoIterator<Item = (String, bool)>,
) -> aws_lambda_events::sqs::SqsBatchResponse {
    let mut response = aws_lambda_events::sqs::SqsBatchResponse::default();
    for (message_id, keep) in outcomes {
        if keep {
            let mut failure = aws_lambda_events::sqs::BatchItemFailure::default();
            failure.item_identifier = message_id;
            response.batch_item_failures.push(failure);
        }
    }
    response
}

/// What a fan-out did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FanOutReport {
    /// Active connections read.
    pub scanned: u64,
    pub enqueued: u64,
    /// Active connections that did not want a job (switch off, no grant, parked).
    pub skipped: u64,
    /// Jobs SQS did not accept.
    pub failed: u64,
    /// Pages of the status index read.
    pub pages: u64,
    /// SendMessageBatch calls (10 jobs each).
    pub send_calls: u64,
    pub tenants_read: u64,
    /// Connections left to their change notifications this round (their subscription is
    /// healthy and this is not their safety-net round).
    pub subscribed: u64,
    pub elapsed_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FanOutError {
    #[error("reading connections failed")]
    Store(#[from] StoreError),
    #[error("no job could be queued")]
    Queue(#[source] QueueError),
}

/// Fan-out settings.
#[derive(Clone, Copy, Debug)]
pub struct FanOutOptions {
    /// Connections per status-index page.
    pub page_size: u32,
    /// Pages whose jobs are being sent at once.
    pub pages_in_flight: usize,
    /// How users with a healthy change-notification subscription are polled, when the
    /// fan-out is given the subscriptions store.
    pub subscribed: SubscribedPolling,
}

impl Default for FanOutOptions {
    fn default() -> Self {
        Self {
            page_size: 1000,
            pages_in_flight: 8,
            subscribed: SubscribedPolling::default(),
        }
    }
}

/// The safety net under change notifications: a user whose subscription of the kind is
/// healthy gets a scheduled job only one round in `every / schedule` (each user in their
/// own round, by a hash of their id, so the jobs spread over the rounds); the others get
/// theirs every round, as without notifications.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscribedPolling {
    /// The schedule's period (15 minutes for mail, 1 hour for the calendar).
    pub schedule: Duration,
    /// How often a subscribed user is polled anyway (`SUBSCRIBED_POLL_MINUTES`, 360 by
    /// default).
    pub every: Duration,
}

impl Default for SubscribedPolling {
    fn default() -> Self {
        Self {
            schedule: Duration::from_secs(15 * 60),
            every: Duration::from_secs(6 * 3600),
        }
    }
}

impl SubscribedPolling {
    /// Whether `user`'s safety-net round is the one at `now`.
    pub fn due(&self, user: &crate::domain::UserId, now: OffsetDateTime) -> bool {
        let schedule = self.schedule.as_secs().max(1);
        let rounds = (self.every.as_secs() / schedule).max(1);
        let round = (now.unix_timestamp().max(0) as u64) / schedule;
        // FNV-1a: stable across processes and releases.
        let slot = user
            .as_str()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
            });
        round % rounds == slot % rounds
    }
}

/// Queues one `kind` job per connection that wants one.
pub async fn fan_out(
    connections: &dyn ConnectionStore,
    tenants: &dyn TenantStore,
    queue: &dyn JobQueue,
    queue_url: &str,
    kind: SyncKind,
    now: OffsetDateTime,
    options: FanOutOptions,
) -> Result<FanOutReport, FanOutError> {
    fan_out_with(
        connections,
        tenants,
        None,
        queue,
        queue_url,
        kind,
        now,
        options,
    )
    .await
}

/// [`fan_out`], leaving users whose change-notification subscription of `kind` is healthy
/// to their notifications except in their safety-net round ([`SubscribedPolling`]).
#[allow(clippy::too_many_arguments)]
pub async fn fan_out_with(
    connections: &dyn ConnectionStore,
    tenants: &dyn TenantStore,
    subscriptions: Option<&dyn crate::notifications::SubscriptionStore>,
    queue: &dyn JobQueue,
    queue_url: &str,
    kind: SyncKind,
    now: OffsetDateTime,
    options: FanOutOptions,
) -> Result<FanOutReport, FanOutError> {
    let started = Instant::now();
    let mut report = FanOutReport::default();
    let mut tenant_cache: HashMap<TenantId, Option<Tenant>> = HashMap::new();
    let mut token: Option<PageToken> = None;
    let mut sends = futures::stream::FuturesUnordered::new();
    let mut last_queue_error = None;
    let mut settle = |result: (usize, Result<usize, QueueError>), report: &mut FanOutReport| {
        let (asked, outcome) = result;
        match outcome {
            Ok(sent) => report.enqueued += sent as u64,
            Err(QueueError::EntriesFailed { sent, failures, .. }) => {
                report.enqueued += sent as u64;
                report.failed += failures.len() as u64;
                warn!(
                    failed = failures.len(),
                    "some sync jobs could not be queued"
                );
            }
            Err(error) => {
                report.failed += asked as u64;
                error!(error = %error, "queueing a page of sync jobs failed");
                last_queue_error = Some(error);
            }
        }
    };
    loop {
        let page = connections
            .query_active(options.page_size, token.as_ref())
            .await?;
        report.pages += 1;
        report.scanned += page.items.len() as u64;
        let unseen: BTreeSet<TenantId> = page
            .items
            .iter()
            .map(|connection| connection.tenant_id.clone())
            .filter(|tenant| !tenant_cache.contains_key(tenant))
            .collect();
        let fetched: Vec<(TenantId, Result<Option<Tenant>, StoreError>)> = stream::iter(unseen)
            .map(|tenant_id| async move {
                let tenant = tenants.get_tenant(&tenant_id).await;
                (tenant_id, tenant)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for (tenant_id, tenant) in fetched {
            report.tenants_read += 1;
            tenant_cache.insert(tenant_id, tenant?);
        }
        let wanted: Vec<&Connection> = page
            .items
            .iter()
            .filter(|connection| {
                let tenant = tenant_cache
                    .get(&connection.tenant_id)
                    .and_then(Option::as_ref);
                wants_job(connection, tenant, kind, now)
            })
            .collect();
        // Healthy subscriptions of users whose safety-net round this is not.
        let resting: std::collections::HashSet<UserKey> = match subscriptions {
            Some(store) => {
                let candidates: Vec<UserKey> = wanted
                    .iter()
                    .filter(|c| !options.subscribed.due(&c.user_id, now))
                    .map(|c| c.key())
                    .collect();
                store
                    .subscriptions_of(&candidates, kind)
                    .await?
                    .into_values()
                    .filter(|s| s.active.as_ref().is_some_and(|a| a.healthy(now)))
                    .map(|s| s.user)
                    .collect()
            }
            None => Default::default(),
        };
        report.subscribed += resting.len() as u64;
        let jobs: Vec<QueueMessage> = wanted
            .into_iter()
            .filter(|connection| !resting.contains(&connection.key()))
            .map(|connection| {
                QueueMessage::json(&SyncJob::new(
                    kind,
                    connection.tenant_id.clone(),
                    connection.user_id.clone(),
                    SyncReason::Scheduled,
                ))
            })
            .collect::<Result<_, _>>()
            .map_err(FanOutError::Queue)?;
        report.skipped += (page.items.len() - jobs.len()) as u64 - resting.len() as u64;
        report.send_calls += jobs.len().div_ceil(10) as u64;
        if !jobs.is_empty() {
            sends.push(async move {
                let asked = jobs.len();
                (asked, queue.send_batch(queue_url, &jobs).await)
            });
        }
        while sends.len() >= options.pages_in_flight.max(1) {
            if let Some(result) = sends.next().await {
                settle(result, &mut report);
            }
        }
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    while let Some(result) = sends.next().await {
        settle(result, &mut report);
    }
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    if report.enqueued == 0
        && report.failed > 0
        && let Some(error) = last_queue_error
    {
        return Err(FanOutError::Queue(error));
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------
// Worker

/// How a function's work ended when it did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkOutcome {
    /// Everything is checkpointed and nothing is left for this run.
    Complete,
    /// The deadline came first; checkpoints are saved and a continuation is due.
    OutOfTime,
}

/// A failure of the work.
#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// What a run tells the connection and the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// The connection changes status (work stops until a person acts).
    Status {
        status: ConnectionStatus,
        reason: String,
    },
    /// Throttled beyond this job's budget: park until then.
    Park { retry_after: Duration },
    /// Retry the job later (SQS redelivery); nothing about the connection changes.
    Retry { code: String },
    /// A fault retrying cannot fix: record it and drop the job.
    Fail { code: String },
}

impl WorkError {
    /// The error's meaning for the connection.
    pub fn disposition(&self) -> Disposition {
        match self {
            WorkError::Graph(error) => graph_disposition(error),
            WorkError::Token(error) => token_disposition(error),
            WorkError::Store(_) => Disposition::Retry {
                code: "store_unavailable".into(),
            },
        }
    }
}

fn token_disposition(error: &TokenError) -> Disposition {
    let reason = error.reason_code();
    match error.classify() {
        RefreshFailure::ReauthRequired => Disposition::Status {
            status: ConnectionStatus::ReauthRequired,
            reason,
        },
        RefreshFailure::ConsentRevoked => Disposition::Status {
            status: ConnectionStatus::ConsentRevoked,
            reason,
        },
        RefreshFailure::Operator => Disposition::Retry {
            code: format!("operator:{reason}"),
        },
        RefreshFailure::Transient => Disposition::Retry { code: reason },
    }
}

/// What a Graph failure means (mail and calendar alike).
pub fn graph_disposition(error: &GraphError) -> Disposition {
    match error {
        GraphError::Token(error) => token_disposition(error),
        GraphError::Unauthorized => Disposition::Status {
            status: ConnectionStatus::ReauthRequired,
            reason: "graph_401_after_refresh".into(),
        },
        GraphError::Throttled { retry_after } => Disposition::Park {
            retry_after: *retry_after,
        },
        error if error.is_mailbox_unsupported() => Disposition::Status {
            status: ConnectionStatus::MailboxUnsupported,
            reason: error
                .code()
                .unwrap_or("MailboxNotEnabledForRESTAPI")
                .to_owned(),
        },
        error if error.is_access_denied() => Disposition::Status {
            status: ConnectionStatus::ConsentRevoked,
            reason: format!("graph_403_{}", error.code().unwrap_or("Forbidden")),
        },
        GraphError::Api { status, code, .. } if *status >= 500 || *status == 429 => {
            Disposition::Retry {
                code: format!("graph_{status}_{code}"),
            }
        }
        GraphError::Api { status, code, .. } => Disposition::Fail {
            code: format!("graph_{status}_{code}"),
        },
        GraphError::Transport { .. } => Disposition::Retry {
            code: "graph_unreachable".into(),
        },
        GraphError::ForeignLink => Disposition::Fail {
            code: "graph_foreign_link".into(),
        },
        GraphError::Malformed(_) => Disposition::Retry {
            code: "graph_malformed_response".into(),
        },
        // run_job continues such a run; anything else that meets it retries.
        GraphError::OutOfTime => Disposition::Retry {
            code: "graph_out_of_time".into(),
        },
    }
}

/// A run's progress as `connectorctl status` shows it while the run is under way: the
/// sync's meta as the work last changed its stage, and the run's counters up to its last
/// checkpoint (as `lastRun`, and added to `totals`). Written at each stage change and each
/// checkpoint, so a worker that dies mid-import leaves its stage and counters behind; the
/// skeleton writes the final meta when the run returns.
///
/// Shared by reference: mail-sync's folders checkpoint concurrently ([`Progress::add`]).
/// Writes are serialised, so the stored meta is always the newest.
pub struct Progress<'a> {
    state: &'a dyn SyncStateStore,
    key: SyncKey,
    clock: &'a dyn Clock,
    /// The meta as at the last stage change, and the run's checkpointed counters.
    inner: tokio::sync::Mutex<(SyncMeta, SyncCounters)>,
    /// Items the run skipped so far ([`Progress::skip`]): in every write, so that a run
    /// that dies after its cursor moved past one still leaves it recorded.
    skipped: tokio::sync::Mutex<Vec<SkippedItem>>,
}

impl<'a> Progress<'a> {
    pub fn new(
        state: &'a dyn SyncStateStore,
        key: SyncKey,
        clock: &'a dyn Clock,
        meta: SyncMeta,
    ) -> Self {
        Self {
            state,
            key,
            clock,
            inner: tokio::sync::Mutex::new((meta, SyncCounters::default())),
            skipped: tokio::sync::Mutex::new(Vec::new()),
        }
    }

    /// Records items the store refused for good and writes the meta at once, before the
    /// cursor that passes them is saved. The work also records them in its own meta (the
    /// skeleton's final write).
    pub async fn skip(&self, items: &[SkippedItem]) {
        if items.is_empty() {
            return;
        }
        self.skipped.lock().await.extend_from_slice(items);
        let inner = self.inner.lock().await;
        self.write(&inner.0, &inner.1).await;
    }

    /// A checkpoint of work that keeps its own counters: `page`'s figures are added to
    /// the run's, and the meta is written.
    pub async fn add(&self, page: &SyncCounters) {
        let mut inner = self.inner.lock().await;
        inner.1.add(page);
        self.write(&inner.0, &inner.1).await;
    }

    /// The run's counters as checkpointed so far.
    pub async fn counters(&self) -> SyncCounters {
        self.inner.lock().await.1
    }

    async fn save(&self, meta: &SyncMeta, run: Option<SyncCounters>) {
        let mut inner = self.inner.lock().await;
        inner.0 = meta.clone();
        if let Some(run) = run {
            inner.1 = run;
        }
        self.write(&inner.0, &inner.1).await;
    }

    /// The meta with the run so far; a failed write only costs visibility (the cursors are
    /// what resumes), so it is logged, not raised.
    async fn write(&self, meta: &SyncMeta, run: &SyncCounters) {
        let mut view = meta.clone();
        for item in self.skipped.lock().await.iter() {
            view.record_skipped(item.clone());
        }
        view.last_run = *run;
        view.totals.add(run);
        view.updated_at = self.clock.now();
        if let Err(error) = self.state.put_meta(&self.key, &view).await {
            warn!(error = %error, "could not save the run's progress");
        }
    }
}

/// Everything the work of one job may use.
pub struct RunContext<'a> {
    pub job: &'a SyncJob,
    pub key: SyncKey,
    pub connection: &'a Connection,
    pub tenant: Option<&'a Tenant>,
    /// The sync's meta item; the skeleton saves it after the work. Change its stage
    /// through [`RunContext::enter`] so that the change is visible at once.
    pub meta: &'a mut SyncMeta,
    /// Where checkpoints make the run's progress visible ([`RunContext::checkpoint`], or
    /// [`Progress::add`] from concurrent parts of the work).
    pub progress: &'a Progress<'a>,
    pub session: &'a MailboxSession<'a>,
    pub state: &'a dyn SyncStateStore,
    pub clock: &'a dyn Clock,
    /// Stop at the next page boundary once this passes.
    pub deadline: Instant,
    /// The run's figures; the work adds to them.
    pub counters: &'a mut SyncCounters,
    /// Folders (or calendars) the run visited.
    pub folders: u64,
}

impl RunContext<'_> {
    pub fn out_of_time(&self) -> bool {
        Instant::now() >= self.deadline
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    pub fn user(&self) -> UserKey {
        self.key.user()
    }

    /// Moves the sync to `stage`; a change of stage is written at once (with the run's
    /// counters so far).
    pub async fn enter(&mut self, stage: SyncStage) {
        let changed = self.meta.stage != stage;
        let now = self.now();
        self.meta.enter(stage, now);
        if changed {
            self.progress.save(self.meta, None).await;
        }
    }

    /// The checkpoint hook of work that counts in [`RunContext::counters`]: call it after
    /// saving a cursor; the meta is written with the counters so far.
    pub async fn checkpoint(&self) {
        self.progress.save(self.meta, Some(*self.counters)).await;
    }
}

/// The stage a run shows from its first step, before its work knows better: the first
/// import until one run has succeeded, incremental after.
pub fn first_stage(meta: &SyncMeta) -> SyncStage {
    if meta.last_success_at.is_none() {
        SyncStage::InitialImport
    } else {
        SyncStage::Incremental
    }
}

/// A function's part of a sync run.
#[async_trait]
pub trait SyncWork: Send + Sync {
    fn kind(&self) -> SyncKind;
    /// Does the work, checkpointing as it goes.
    async fn run(&self, ctx: &mut RunContext<'_>) -> Result<WorkOutcome, WorkError>;
}

/// One received job.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The SQS receipt handle (absent when run by hand).
    pub receipt_handle: Option<String>,
    /// SQS's `ApproximateReceiveCount` (1 on first delivery).
    pub receive_count: u32,
    /// Lambda's deadline for this invocation.
    pub deadline: Instant,
}

/// How a job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// The run finished.
    Done,
    /// Out of time: the continuation job is queued.
    Continued,
    /// Another worker holds the mailbox's lease: the job comes back once that lease ends
    /// (its message hidden until then, or, `requeued`, replaced by a fresh delayed job),
    /// so it is not lost if that worker dies; a live worker's run meanwhile covers it.
    Busy { retry_in: Duration, requeued: bool },
    /// The run's lease was taken over (or deleted: a disconnection) while it ran: the run
    /// stopped without writing anything more; the new holder carries on, so the message is
    /// acknowledged.
    LeaseLost,
    /// The run's lease could not be renewed (the store failed or hung; nobody else took
    /// it): the run stopped without writing anything more, and its message is kept, hidden
    /// for one lease, so the next delivery finds the lease lapsed and resumes from the
    /// checkpoints.
    LeaseUnrenewed,
    /// Nothing to do for this connection (gone, inactive, switched off, parked).
    Skipped { reason: &'static str },
    /// Parked until then; the message was hidden (`requeued`: replaced by a fresh job).
    Parked {
        until: OffsetDateTime,
        requeued: bool,
    },
    /// The connection's status changed.
    StatusChanged {
        status: ConnectionStatus,
        reason: String,
    },
    /// Recorded and dropped.
    Failed { code: String },
    /// SQS should deliver it again.
    Retry { code: String },
}

impl JobOutcome {
    /// Whether the SQS message is reported as a batch item failure (kept on the queue).
    pub fn keep_message(&self) -> bool {
        matches!(
            self,
            JobOutcome::Retry { .. }
                | JobOutcome::LeaseUnrenewed
                | JobOutcome::Parked {
                    requeued: false,
                    ..
                }
                | JobOutcome::Busy {
                    requeued: false,
                    ..
                }
        )
    }

    pub fn label(&self) -> &'static str {
        match self {
            JobOutcome::Done => "done",
            JobOutcome::Continued => "continued",
            JobOutcome::Busy { .. } => "busy",
            JobOutcome::LeaseLost => "lease_lost",
            JobOutcome::LeaseUnrenewed => "lease_unrenewed",
            JobOutcome::Skipped { .. } => "skipped",
            JobOutcome::Parked { .. } => "parked",
            JobOutcome::StatusChanged { .. } => "status_changed",
            JobOutcome::Failed { .. } => "failed",
            JobOutcome::Retry { .. } => "retry",
        }
    }
}

/// The figures of one run, logged once as JSON and once as embedded metrics.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    pub function: &'static str,
    pub kind: SyncKind,
    pub tenant_id: String,
    pub user_id: String,
    pub reason: SyncReason,
    pub attempt: u32,
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub stage: SyncStage,
    pub folders: u64,
    pub scanned: u64,
    pub matched: u64,
    pub stored: u64,
    pub removed: u64,
    pub discarded: u64,
    pub pages: u64,
    pub graph_requests: u64,
    pub batch_items: u64,
    pub throttled: u64,
    pub retries: u64,
    pub bytes_received: u64,
    pub elapsed_ms: u64,
}

/// Where run summaries go.
pub trait SummarySink: Send + Sync {
    fn run(&self, summary: &RunSummary);
    fn fan_out(&self, function: &'static str, kind: SyncKind, report: &FanOutReport);
}

/// The CloudWatch embedded-metric-format line of a run (printed alone on stdout, where
/// Lambda's log agent extracts the metrics). Tenant and user ids are properties, not
/// dimensions (their cardinality would make a metric per user).
pub fn emf_line(summary: &RunSummary, timestamp_ms: i128) -> String {
    let metrics: [(&str, u64, &str); 13] = [
        ("Folders", summary.folders, "Count"),
        ("Scanned", summary.scanned, "Count"),
        ("Matched", summary.matched, "Count"),
        ("Stored", summary.stored, "Count"),
        ("Removed", summary.removed, "Count"),
        ("Discarded", summary.discarded, "Count"),
        ("Pages", summary.pages, "Count"),
        ("GraphRequests", summary.graph_requests, "Count"),
        ("BatchItems", summary.batch_items, "Count"),
        ("Throttled", summary.throttled, "Count"),
        ("Retries", summary.retries, "Count"),
        ("BytesReceived", summary.bytes_received, "Bytes"),
        ("ElapsedMs", summary.elapsed_ms, "Milliseconds"),
    ];
    let mut line = serde_json::Map::new();
    line.insert(
        "_aws".into(),
        serde_json::json!({
            "Timestamp": timestamp_ms as i64,
            "CloudWatchMetrics": [{
                "Namespace": "Office365Connector",
                "Dimensions": [["Function", "Outcome"]],
                "Metrics": metrics.iter().map(|(name, _, unit)| serde_json::json!({"Name": name, "Unit": unit})).collect::<Vec<_>>(),
            }],
        }),
    );
    // Failed and retried runs also count as `SyncFailures` by reason class (a bounded set,
    // so each class is one metric the template's alarms watch), across functions and per
    // function.
    let failure = match summary.outcome {
        "failed" | "retry" => Some(failure_reason(summary.code.as_deref().unwrap_or(""))),
        _ => None,
    };
    if let Some(reason) = failure {
        line["_aws"]["CloudWatchMetrics"]
            .as_array_mut()
            .expect("built above")
            .push(serde_json::json!({
                "Namespace": "Office365Connector",
                "Dimensions": [["Reason"], ["Function", "Reason"]],
                "Metrics": [{"Name": "SyncFailures", "Unit": "Count"}],
            }));
        line.insert("Reason".into(), reason.into());
        line.insert("SyncFailures".into(), 1.into());
    }
    line.insert("Function".into(), summary.function.into());
    line.insert("Outcome".into(), summary.outcome.into());
    line.insert("TenantId".into(), summary.tenant_id.clone().into());
    line.insert("UserId".into(), summary.user_id.clone().into());
    for (name, value, _) in metrics {
        line.insert(name.into(), value.into());
    }
    serde_json::Value::Object(line).to_string()
}

/// The reason class of a failed or retried run's code: the `Reason` dimension of the
/// `SyncFailures` metric, one of [`FAILURE_REASONS`]. Codes carry Microsoft's error codes
/// and statuses, too many values for a dimension; the class says who must act.
pub fn failure_reason(code: &str) -> &'static str {
    let graph_status = code
        .strip_prefix("graph_")
        .and_then(|rest| rest.split('_').next())
        .and_then(|status| status.parse::<u16>().ok());
    match code {
        "store_unavailable" => "store_unavailable",
        _ if code.starts_with("operator:") => "app_credentials",
        "graph_out_of_time" => "out_of_time",
        "graph_unreachable" | "graph_malformed_response" => "graph_unavailable",
        _ if graph_status.is_some_and(|s| s >= 500 || s == 429) => "graph_unavailable",
        _ if code.starts_with("graph_") => "graph_rejected",
        _ if code.starts_with("token_endpoint_")
            || code.starts_with("AADSTS")
            || code == "temporarily_unavailable"
            || code == "server_error" =>
        {
            "token_unavailable"
        }
        _ if code.starts_with("park_requeue_failed") || code.starts_with("continuation") => "queue",
        _ => "other",
    }
}

/// Every value [`failure_reason`] returns (template.yaml has an alarm for each).
pub const FAILURE_REASONS: [&str; 8] = [
    "app_credentials",
    "graph_rejected",
    "queue",
    "other",
    "store_unavailable",
    "graph_unavailable",
    "token_unavailable",
    "out_of_time",
];

/// The fan-out's embedded-metric-format line.
pub fn fan_out_emf_line(function: &str, report: &FanOutReport, timestamp_ms: i128) -> String {
    serde_json::json!({
        "_aws": {
            "Timestamp": timestamp_ms as i64,
            "CloudWatchMetrics": [{
                "Namespace": "Office365Connector",
                "Dimensions": [["Function"]],
                "Metrics": [
                    {"Name": "Enqueued", "Unit": "Count"},
                    {"Name": "Skipped", "Unit": "Count"},
                    {"Name": "Subscribed", "Unit": "Count"},
                    {"Name": "EnqueueFailed", "Unit": "Count"},
                    {"Name": "FanOutMs", "Unit": "Milliseconds"},
                ],
            }],
        },
        "Function": function,
        "Enqueued": report.enqueued,
        "Skipped": report.skipped,
        "Subscribed": report.subscribed,
        "EnqueueFailed": report.failed,
        "FanOutMs": report.elapsed_ms,
    })
    .to_string()
}

/// Summaries as a tracing event (the JSON log line) and EMF on stdout.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogSummarySink;

impl SummarySink for LogSummarySink {
    fn run(&self, summary: &RunSummary) {
        info!(
            target: "sync_summary",
            function = summary.function,
            kind = summary.kind.as_str(),
            tenant_id = %summary.tenant_id,
            user_id = %summary.user_id,
            reason = ?summary.reason,
            attempt = summary.attempt,
            outcome = summary.outcome,
            code = summary.code.as_deref().unwrap_or(""),
            stage = summary.stage.as_str(),
            folders = summary.folders,
            scanned = summary.scanned,
            matched = summary.matched,
            stored = summary.stored,
            removed = summary.removed,
            discarded = summary.discarded,
            pages = summary.pages,
            graph_requests = summary.graph_requests,
            batch_items = summary.batch_items,
            throttled = summary.throttled,
            retries = summary.retries,
            bytes_received = summary.bytes_received,
            elapsed_ms = summary.elapsed_ms,
            "sync run"
        );
        println!(
            "{}",
            emf_line(
                summary,
                OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000
            )
        );
    }

    fn fan_out(&self, function: &'static str, kind: SyncKind, report: &FanOutReport) {
        info!(
            target: "sync_summary",
            function,
            kind = kind.as_str(),
            scanned = report.scanned,
            enqueued = report.enqueued,
            skipped = report.skipped,
            failed = report.failed,
            pages = report.pages,
            send_calls = report.send_calls,
            tenants_read = report.tenants_read,
            elapsed_ms = report.elapsed_ms,
            "fan-out"
        );
        println!(
            "{}",
            fan_out_emf_line(
                function,
                report,
                OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000
            )
        );
    }
}

/// The worker's lease and visibility timings. The defaults are the constants above;
/// tests shrink them to run a crash and its redelivery in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerTimings {
    /// [`LEASE_TTL`].
    pub lease_ttl: Duration,
    /// [`LEASE_RENEW_EVERY`].
    pub lease_renew_every: Duration,
    /// [`LEASE_MARGIN`].
    pub lease_margin: Duration,
    /// [`RUN_VISIBILITY`] (whole seconds: SQS's unit).
    pub visibility: Duration,
    /// [`VISIBILITY_EXTEND_EVERY`].
    pub visibility_every: Duration,
    /// [`RETRY_BACKOFF`].
    pub retry_backoff: Duration,
}

impl Default for WorkerTimings {
    fn default() -> Self {
        Self {
            lease_ttl: LEASE_TTL,
            lease_renew_every: LEASE_RENEW_EVERY,
            lease_margin: LEASE_MARGIN,
            visibility: RUN_VISIBILITY,
            visibility_every: VISIBILITY_EXTEND_EVERY,
            retry_backoff: RETRY_BACKOFF,
        }
    }
}

/// What the worker skeleton runs on: built once per cold start.
pub struct Worker {
    pub function: &'static str,
    pub connections: Arc<dyn ConnectionStore>,
    pub tenants: Arc<dyn TenantStore>,
    pub state: Arc<dyn SyncStateStore>,
    pub queue: Arc<dyn JobQueue>,
    pub queue_url: String,
    pub tokens: Arc<TokenProvider>,
    pub graph: Arc<GraphClient>,
    pub clock: Arc<dyn Clock>,
    pub summaries: Arc<dyn SummarySink>,
    /// Lease and visibility timings ([`WorkerTimings::default`] outside tests).
    pub timings: WorkerTimings,
    /// Change notifications: after a completed run, asks for the user's subscription
    /// when it is missing or due ([`crate::notifications::Link::after_run`]).
    pub notifications: Option<Arc<crate::notifications::Link>>,
}

impl Worker {
    /// Runs one job through the skeleton. Never fails: every fault becomes an outcome.
    pub async fn run_job(
        &self,
        work: &dyn SyncWork,
        job: &SyncJob,
        delivery: &Delivery,
    ) -> JobOutcome {
        let started = Instant::now();
        let key = job.key();
        let mut counters = SyncCounters::default();
        let mut stats = GraphStats::default();
        let mut folders = 0;
        let mut stage = SyncStage::Pending;
        // Every record of a batch answers before Lambda's deadline, whatever this one met:
        // the work itself is cut earlier (HARD_STOP_MARGIN); this bounds the rest.
        let finish_by = delivery
            .deadline
            .checked_sub(FINISH_MARGIN)
            .unwrap_or_else(Instant::now);
        let outcome = tokio::time::timeout_at(
            finish_by,
            self.run_inner(
                work,
                job,
                &key,
                delivery,
                &mut counters,
                &mut stats,
                &mut folders,
                &mut stage,
            ),
        )
        .await
        .unwrap_or_else(|_| {
            warn!("the job ran into Lambda's deadline; it will be retried");
            JobOutcome::Retry {
                code: "deadline".into(),
            }
        });
        if outcome == JobOutcome::Done
            && let Some(link) = &self.notifications
        {
            let asked = tokio::time::timeout_at(
                finish_by,
                link.after_run(
                    self.connections.as_ref(),
                    self.tenants.as_ref(),
                    &key.user(),
                    job.kind,
                    self.clock.now(),
                ),
            )
            .await;
            if !matches!(asked, Ok(Ok(_))) {
                warn!("could not check the change-notification subscription; the next run does");
            }
        }
        if let (Some(hide), Some(receipt)) = (
            self.hide_after(&outcome),
            delivery.receipt_handle.as_deref(),
        ) {
            // Bounded by Lambda's deadline, so the invocation still answers in time.
            let by = delivery
                .deadline
                .checked_sub(Duration::from_secs(1))
                .unwrap_or_else(Instant::now);
            let hidden = tokio::time::timeout_at(
                by,
                self.queue.change_visibility(&self.queue_url, receipt, hide),
            )
            .await;
            if !matches!(hidden, Ok(Ok(()))) {
                warn!(
                    outcome = outcome.label(),
                    "could not hide the kept job; it comes back when its current visibility ends"
                );
            }
        }
        counters.graph_requests = stats.requests;
        counters.throttled = stats.throttled;
        let code = match &outcome {
            JobOutcome::StatusChanged { reason, .. } => Some(reason.clone()),
            JobOutcome::Failed { code } | JobOutcome::Retry { code } => Some(code.clone()),
            JobOutcome::Skipped { reason } => Some((*reason).to_owned()),
            _ => None,
        };
        self.summaries.run(&RunSummary {
            function: self.function,
            kind: job.kind,
            tenant_id: job.tenant_id.to_string(),
            user_id: job.user_id.to_string(),
            reason: job.reason,
            attempt: job.attempt,
            outcome: outcome.label(),
            code,
            stage,
            folders,
            scanned: counters.scanned,
            matched: counters.matched,
            stored: counters.stored,
            removed: counters.removed,
            discarded: counters.discarded,
            pages: counters.pages,
            graph_requests: stats.requests,
            batch_items: stats.batch_items,
            throttled: stats.throttled,
            retries: stats.retries,
            bytes_received: stats.bytes,
            elapsed_ms: started.elapsed().as_millis() as u64,
        });
        outcome
    }

    /// How long a kept message stays hidden after its run, where the run's outcome decides
    /// it: a retry waits [`WorkerTimings::retry_backoff`]; a run that could not renew its
    /// lease comes back after one lease, which by then has lapsed whatever renewal last
    /// went through. `Busy` and `Parked` hid their message themselves; the other outcomes
    /// are acknowledged.
    fn hide_after(&self, outcome: &JobOutcome) -> Option<Duration> {
        match outcome {
            JobOutcome::Retry { .. } => Some(self.timings.retry_backoff),
            JobOutcome::LeaseUnrenewed => Some(self.timings.lease_ttl),
            _ => None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_inner(
        &self,
        work: &dyn SyncWork,
        job: &SyncJob,
        key: &SyncKey,
        delivery: &Delivery,
        counters: &mut SyncCounters,
        stats: &mut GraphStats,
        folders: &mut u64,
        stage: &mut SyncStage,
    ) -> JobOutcome {
        let user = key.user();
        let now = self.clock.now();
        if job.kind != work.kind() {
            return JobOutcome::Failed {
                code: "wrong_queue".into(),
            };
        }
        let connection = match self.connections.get_connection(&user).await {
            Ok(Some(connection)) => connection,
            Ok(None) => {
                return JobOutcome::Skipped {
                    reason: "no_connection",
                };
            }
            Err(error) => return retry_store(error),
        };
        let tenant = match self.tenants.get_tenant(&job.tenant_id).await {
            Ok(tenant) => tenant,
            Err(error) => return retry_store(error),
        };
        if connection.status != ConnectionStatus::Active {
            return JobOutcome::Skipped {
                reason: "not_active",
            };
        }
        if !wants_job(&connection, tenant.as_ref(), job.kind, now) {
            return JobOutcome::Skipped {
                reason: if tenant
                    .as_ref()
                    .is_some_and(|tenant| !tenant.switches.allows(job.kind))
                {
                    "disabled_by_admin"
                } else if connection
                    .parked_until
                    .get(job.kind)
                    .is_some_and(|until| until > now + PARK_GRACE)
                {
                    "parked"
                } else {
                    "not_wanted"
                },
            };
        }

        // A short lease, renewed while the run lives: a dead worker frees the mailbox
        // within LEASE_TTL, not at the end of its invocation's deadline.
        let holder = uuid::Uuid::new_v4().to_string();
        match self
            .state
            .acquire_lease(key, &holder, self.timings.lease_ttl)
            .await
        {
            Ok(true) => {}
            Ok(false) => return self.busy(job, key, delivery).await,
            Err(StoreError::Fenced { .. }) => return disconnected(),
            Err(error) => return retry_store(error),
        }
        // The job's own message is kept hidden for a short time, extended while the run
        // lives: a dead worker's message reappears within RUN_VISIBILITY, and its
        // redelivery finds the lease lapsed and resumes from the checkpoints.
        let heartbeat = delivery
            .receipt_handle
            .as_deref()
            .map(|receipt| Heartbeat::new(self, receipt));
        let run = self.leased(
            work,
            job,
            key,
            &connection,
            tenant.as_ref(),
            delivery,
            heartbeat.as_ref(),
            counters,
            stats,
            folders,
            stage,
        );
        let (stop, stopped) = tokio::sync::watch::channel(false);
        // The lease is renewed beside the run; if it may be lost, the run is dropped where
        // it is (it writes nothing more) and ends.
        let leased_run = async {
            let ended = tokio::select! {
                // The lease first: once it may be lost, no further step of the run is polled.
                biased;
                end = keep_lease(self.state.as_ref(), key, &holder, &self.timings) => Err(end),
                outcome = run => Ok(outcome),
            };
            // The heartbeat ends after its request in flight (if any), so none of its
            // extensions lands after the visibility the outcome sets.
            stop.send_replace(true);
            ended
        };
        let keep_visible = async {
            if let Some(heartbeat) = &heartbeat {
                heartbeat.keep(stopped).await;
            }
        };
        let (ended, ()) = tokio::join!(leased_run, keep_visible);
        let outcome = match ended {
            Ok(outcome) => outcome,
            Err(LeaseEnd::Taken) => {
                warn!("the mailbox lease was taken over; the run stops");
                return JobOutcome::LeaseLost;
            }
            Err(LeaseEnd::Unrenewed) => {
                warn!("the mailbox lease could not be renewed; the run stops and comes back");
                return JobOutcome::LeaseUnrenewed;
            }
        };
        // Released before the continuation is queued, so that it finds the mailbox free
        // however soon it is delivered.
        if let Err(error) = self.state.release_lease(key, &holder).await {
            warn!(error = %error, "could not release the mailbox lease (it expires by itself)");
        }
        match outcome {
            JobOutcome::Continued => {
                match self.enqueue(&job.continuation(), Duration::ZERO).await {
                    Ok(()) => JobOutcome::Continued,
                    Err(error) => JobOutcome::Retry {
                        code: format!("continuation_not_queued: {error}"),
                    },
                }
            }
            other => other,
        }
    }

    /// Another worker holds the lease: the job comes back when that lease ends (a live
    /// holder renews it and carries on; a dead one's expires within [`LEASE_TTL`]).
    async fn busy(&self, job: &SyncJob, key: &SyncKey, delivery: &Delivery) -> JobOutcome {
        // Lease times are the store's wall clock, not the run's (possibly shifted) clock.
        let now = OffsetDateTime::now_utc();
        let left = match self.state.get_lease(key).await {
            Ok(Some(lease)) => (lease.expires_at - now)
                .try_into()
                .unwrap_or(Duration::ZERO),
            Ok(None) => Duration::ZERO,
            Err(error) => {
                warn!(error = %error, "could not read the mailbox lease");
                self.timings.lease_ttl
            }
        };
        let wait =
            (left + Duration::from_secs(1)).clamp(Duration::from_secs(2), self.timings.lease_ttl);
        match self.come_back(job, delivery, None, wait).await {
            Ok(requeued) => JobOutcome::Busy {
                retry_in: wait,
                requeued,
            },
            Err(code) => JobOutcome::Retry { code },
        }
    }

    /// Makes the job come back after `wait`: its message hidden that long (reported as a
    /// batch item failure) while it has been received fewer than [`PARK_REQUEUE_AFTER`]
    /// times, otherwise replaced by a fresh delayed job (so it never walks into the DLQ).
    /// During a leased run the message is hidden through its `heartbeat`, which extends it
    /// no more. `Ok(true)`: replaced.
    async fn come_back(
        &self,
        job: &SyncJob,
        delivery: &Delivery,
        heartbeat: Option<&Heartbeat<'_>>,
        wait: Duration,
    ) -> Result<bool, String> {
        let hidden = match (&delivery.receipt_handle, heartbeat) {
            (Some(_), Some(heartbeat)) if delivery.receive_count < PARK_REQUEUE_AFTER => {
                heartbeat.settle(wait).await
            }
            (Some(receipt), None) if delivery.receive_count < PARK_REQUEUE_AFTER => self
                .queue
                .change_visibility(&self.queue_url, receipt, wait)
                .await
                .map_err(|error| warn!(error = %error, "could not hide the job"))
                .is_ok(),
            _ => false,
        };
        if hidden {
            return Ok(false);
        }
        match self.enqueue(&job.continuation(), wait).await {
            Ok(()) => Ok(true),
            Err(error) => Err(format!("requeue_failed: {error}")),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn leased(
        &self,
        work: &dyn SyncWork,
        job: &SyncJob,
        key: &SyncKey,
        connection: &Connection,
        tenant: Option<&Tenant>,
        delivery: &Delivery,
        heartbeat: Option<&Heartbeat<'_>>,
        counters: &mut SyncCounters,
        stats: &mut GraphStats,
        folders: &mut u64,
        stage: &mut SyncStage,
    ) -> JobOutcome {
        let user = key.user();
        let now = self.clock.now();
        let mut meta = match self.state.get_meta(key).await {
            Ok(meta) => meta.unwrap_or_else(|| SyncMeta::new(now)),
            Err(error) => return retry_store(error),
        };
        let bearer = UserBearer {
            provider: &self.tokens,
            key: user.clone(),
        };
        let deadline = delivery
            .deadline
            .checked_sub(DEADLINE_MARGIN)
            .unwrap_or_else(Instant::now);
        // Past this the work is cut wherever it is: nothing it started outlives the
        // invocation (its checkpoints are saved page by page, so the continuation resumes).
        let hard_stop = delivery
            .deadline
            .checked_sub(HARD_STOP_MARGIN)
            .unwrap_or_else(Instant::now);
        let session = self
            .graph
            .session(&user.to_string(), &bearer, Some(deadline));
        let progress = Progress::new(
            self.state.as_ref(),
            key.clone(),
            self.clock.as_ref(),
            meta.clone(),
        );
        let mut visited = 0;
        let work_counters = &mut *counters;
        let run = async {
            // The token first: a refused refresh is known before any Graph call.
            match self.tokens.access_token(&user).await {
                Err(error) => Err(WorkError::Token(error)),
                Ok(_) => {
                    let mut ctx = RunContext {
                        job,
                        key: key.clone(),
                        connection,
                        tenant,
                        meta: &mut meta,
                        progress: &progress,
                        session: &session,
                        state: self.state.as_ref(),
                        clock: self.clock.as_ref(),
                        deadline,
                        counters: work_counters,
                        folders: 0,
                    };
                    let result = work.run(&mut ctx).await;
                    visited = ctx.folders;
                    result
                }
            }
        };
        let result = match tokio::time::timeout_at(hard_stop, run).await {
            // A request that waited for a mailbox slot until the deadline: out of time like
            // any other (checkpoints are saved page by page), so the continuation runs at once.
            Ok(Err(WorkError::Graph(GraphError::OutOfTime))) => Ok(WorkOutcome::OutOfTime),
            Ok(other) => other,
            Err(_) => {
                warn!("the work was cut at the deadline; it continues from its checkpoints");
                // What the cut work had counted up to its last checkpoint.
                *counters = progress.counters().await;
                Ok(WorkOutcome::OutOfTime)
            }
        };
        *folders = visited;
        *stats = session.stats();
        // Leaves the mailbox's slot budget (if any) so other workers grow back at once.
        session.close().await;
        if matches!(result, Err(WorkError::Store(StoreError::Fenced { .. }))) {
            // Disconnected (or offboarded) mid-run: nothing of the user is written again,
            // not even this run's meta.
            return disconnected();
        }
        let now = self.clock.now();
        let mut run = *counters;
        run.graph_requests = stats.requests;
        run.throttled = stats.throttled;
        let mut meta_saved = false;
        let outcome = match result {
            Ok(WorkOutcome::Complete) => {
                meta.finish_run(run, now);
                if connection.parked_until.get(job.kind).is_some()
                    && let Err(error) = self
                        .connections
                        .set_parked_until(&user, job.kind, None, now)
                        .await
                {
                    warn!(error = %error, "could not clear the parked time");
                }
                JobOutcome::Done
            }
            Ok(WorkOutcome::OutOfTime) => {
                meta.last_run = run;
                meta.totals.add(&run);
                meta.updated_at = now;
                // Queued by run_inner once the lease is released.
                JobOutcome::Continued
            }
            Err(error) => {
                meta.totals.add(&run);
                match error.disposition() {
                    Disposition::Status { status, reason } => {
                        meta.fail(&reason, &error_message(&error), now);
                        self.tokens.forget(&user);
                        // The meta before the status: once the connection is not active,
                        // the disconnect fence refuses every write of the user's sync state.
                        *stage = meta.stage;
                        meta_saved = true;
                        if let Err(error) = self.state.put_meta(key, &meta).await {
                            warn!(error = %error, "could not save the sync meta");
                        }
                        match self
                            .connections
                            .set_status(&user, &StatusChange::new(status, Some(&reason), now))
                            .await
                        {
                            Ok(_) => JobOutcome::StatusChanged { status, reason },
                            Err(error) => retry_store(error),
                        }
                    }
                    Disposition::Park { retry_after } => {
                        let wait = retry_after.max(MIN_PARK);
                        let until = now + wait;
                        meta.park(until, now);
                        self.park(job, &user, delivery, heartbeat, wait, until)
                            .await
                    }
                    Disposition::Retry { code } => {
                        meta.last_error = Some(crate::domain::SyncFailure {
                            code: code.clone(),
                            message: error_message(&error),
                            at: now,
                        });
                        meta.updated_at = now;
                        JobOutcome::Retry { code }
                    }
                    Disposition::Fail { code } => {
                        meta.fail(&code, &error_message(&error), now);
                        JobOutcome::Failed { code }
                    }
                }
            }
        };
        if !meta_saved {
            *stage = meta.stage;
            if let Err(error) = self.state.put_meta(key, &meta).await {
                warn!(error = %error, "could not save the sync meta");
            }
        }
        outcome
    }

    async fn enqueue(&self, job: &SyncJob, delay: Duration) -> Result<(), QueueError> {
        let message = QueueMessage::json(job)?.with_delay(delay.min(crate::ports::MAX_DELAY));
        self.queue
            .send_batch(&self.queue_url, &[message])
            .await
            .map(drop)
    }

    /// Parks the sync: `parkedUntil` on the connection, and the message hidden until then
    /// (or replaced by a fresh delayed job when it has been received too often).
    async fn park(
        &self,
        job: &SyncJob,
        user: &UserKey,
        delivery: &Delivery,
        heartbeat: Option<&Heartbeat<'_>>,
        wait: Duration,
        until: OffsetDateTime,
    ) -> JobOutcome {
        let now = self.clock.now();
        if let Err(error) = self
            .connections
            .set_parked_until(user, job.kind, Some(until), now)
            .await
        {
            warn!(error = %error, "could not record the parked time");
        }
        match self.come_back(job, delivery, heartbeat, wait).await {
            Ok(requeued) => JobOutcome::Parked { until, requeued },
            Err(code) => JobOutcome::Retry {
                code: format!("park_{code}"),
            },
        }
    }
}

/// The run met the disconnect fence (docs/fencing.md): dropped, not retried, not recorded.
fn disconnected() -> JobOutcome {
    info!("the connection was disconnected during the run; the job is dropped");
    JobOutcome::Skipped {
        reason: "disconnected",
    }
}

fn retry_store(error: StoreError) -> JobOutcome {
    warn!(error = %error, "a store call failed; the job will be retried");
    JobOutcome::Retry {
        code: "store_unavailable".into(),
    }
}

/// The operator-facing message of an error: our own wording and Microsoft's codes, never
/// a URL, a subject or an address.
fn error_message(error: &WorkError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text.chars().take(500).collect()
}

/// Why [`keep_lease`] stopped keeping the lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LeaseEnd {
    /// Another holder has it, or it is gone (a disconnection deletes it): that holder does
    /// the work, the job is acknowledged.
    Taken,
    /// No renewal went through (they failed or hung) until [`LEASE_MARGIN`] before it
    /// could lapse; nobody is known to hold it but this run: the job comes back.
    Unrenewed,
}

/// Renews `holder`'s lease every [`LEASE_RENEW_EVERY`]; returns once it may be lost:
/// another holder has it, it is gone, or [`LEASE_MARGIN`] before it could lapse without
/// a renewal having gone through (a renewal that hangs is given up then too). The run
/// is dropped when this returns, so none of its writes is started after another worker
/// or a disconnection could have taken the lease: disconnect waits for the lease before
/// it deletes, and activity items are ordered against it by this alone
/// (docs/fencing.md).
async fn keep_lease(
    state: &dyn SyncStateStore,
    key: &SyncKey,
    holder: &str,
    timings: &WorkerTimings,
) -> LeaseEnd {
    let mut held_until = Instant::now() + timings.lease_ttl;
    loop {
        let give_up = held_until - timings.lease_margin;
        tokio::time::sleep_until((Instant::now() + timings.lease_renew_every).min(give_up)).await;
        if Instant::now() >= give_up {
            return LeaseEnd::Unrenewed;
        }
        let asked = Instant::now();
        match tokio::time::timeout_at(give_up, state.renew_lease(key, holder, timings.lease_ttl))
            .await
        {
            Ok(Ok(true)) => held_until = asked + timings.lease_ttl,
            Ok(Ok(false)) => return LeaseEnd::Taken,
            Ok(Err(error)) => {
                warn!(error = %error, "could not renew the mailbox lease");
            }
            Err(_) => return LeaseEnd::Unrenewed,
        }
    }
}

/// Keeps a leased run's own SQS message hidden while the run lives: set to
/// [`WorkerTimings::visibility`] at once, then again every
/// [`WorkerTimings::visibility_every`]. A failed or hung extension is logged and tried
/// again at the next tick; it never stops the run (the message then reappears at worst
/// when the last extension that went through ends, and a redelivery meeting the live
/// run's lease is `Busy`, hidden until the lease ends, not dropped). Once the run has
/// chosen its message's visibility ([`Heartbeat::settle`]) it extends it no more.
struct Heartbeat<'a> {
    queue: &'a dyn JobQueue,
    queue_url: &'a str,
    receipt: &'a str,
    timings: WorkerTimings,
    /// Held across each request, so that an extension and the settling visibility never
    /// race; `true` once settled.
    settled: tokio::sync::Mutex<bool>,
}

impl<'a> Heartbeat<'a> {
    fn new(worker: &'a Worker, receipt: &'a str) -> Self {
        Self {
            queue: worker.queue.as_ref(),
            queue_url: &worker.queue_url,
            receipt,
            timings: worker.timings,
            settled: tokio::sync::Mutex::new(false),
        }
    }

    /// Extends the visibility until `stop` turns `true` (a request in flight is finished
    /// first).
    async fn keep(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut next = Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => return,
                () = tokio::time::sleep_until(next) => {}
            }
            next = Instant::now() + self.timings.visibility_every;
            let settled = self.settled.lock().await;
            if *settled {
                return;
            }
            let extended = tokio::time::timeout_at(
                next,
                self.queue
                    .change_visibility(self.queue_url, self.receipt, self.timings.visibility),
            )
            .await;
            drop(settled);
            match extended {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    warn!(error = %error, "could not extend the job's visibility; tried again");
                }
                Err(_) => warn!("extending the job's visibility hung; tried again"),
            }
        }
    }

    /// Hides the message for `wait` and ends the extensions; whether it was hidden.
    async fn settle(&self, wait: Duration) -> bool {
        let mut settled = self.settled.lock().await;
        *settled = true;
        self.queue
            .change_visibility(self.queue_url, self.receipt, wait)
            .await
            .map_err(|error| warn!(error = %error, "could not hide the job"))
            .is_ok()
    }
}

/// The invocation's deadline (Lambda's `deadline` context field: milliseconds since the
/// epoch) as an [`Instant`].
///
/// A value that cannot be an epoch deadline (before 2001-09-09, i.e. under 10^12 ms) is
/// read as the time left: local emulators such as `cargo lambda watch` send the
/// function's timeout there (`600000`) instead of an absolute time, and reading it as
/// "the deadline passed in 1970" would end every run before it starts.
pub fn deadline_from_epoch_ms(deadline_ms: u64) -> Instant {
    deadline_at(deadline_ms, time::OffsetDateTime::now_utc())
}

fn deadline_at(deadline_ms: u64, now: time::OffsetDateTime) -> Instant {
    const EPOCH_DEADLINE_FLOOR_MS: u64 = 1_000_000_000_000;
    let left_ms = if deadline_ms < EPOCH_DEADLINE_FLOOR_MS {
        deadline_ms
    } else {
        let now_ms = now.unix_timestamp_nanos() / 1_000_000;
        (i128::from(deadline_ms) - now_ms).max(0) as u64
    };
    Instant::now() + Duration::from_millis(left_ms)
}

#[cfg(test)]
mod tests {
    #[test]
    fn deadlines_are_epoch_times_or_emulator_timeouts() {
        let now = time::OffsetDateTime::now_utc();
        let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as u64;
        let left = |d: Instant| d.saturating_duration_since(Instant::now()).as_secs();
        // A real Lambda deadline: 300 s from now.
        assert!((298..=300).contains(&left(super::deadline_at(now_ms + 300_000, now))));
        // A passed deadline leaves nothing.
        assert_eq!(left(super::deadline_at(now_ms - 5_000, now)), 0);
        // cargo lambda watch's fixed `600000`: ten minutes left, not "1970".
        assert!((598..=600).contains(&left(super::deadline_at(600_000, now))));
    }

    use super::*;
    use crate::domain::{FeatureBundle, UserId};
    use time::macros::datetime;

    fn connection() -> Connection {
        Connection::new_active(
            TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").expect("guid"),
            UserId::parse("00000000-0000-0000-0000-0000000000aa").expect("guid"),
            "adele@contoso.com",
            FeatureBundle::All.scope_set(),
            datetime!(2026-03-01 8:00 UTC),
        )
    }

    #[test]
    fn fan_out_rule_follows_the_tenant_grant_only_when_preauthorized() {
        let now = datetime!(2026-03-01 9:00 UTC);
        let c = connection();
        let mut tenant = Tenant::new(c.tenant_id.clone(), ConsentMode::UserConsent, now);
        assert!(wants_job(&c, Some(&tenant), SyncKind::Mail, now));
        tenant.consent_mode = ConsentMode::Preauthorized;
        tenant.record_admin_consent(
            FeatureBundle::Calendar,
            &crate::domain::ScopeSet::new(),
            None,
            now,
        );
        assert!(!wants_job(&c, Some(&tenant), SyncKind::Mail, now));
        assert!(wants_job(&c, Some(&tenant), SyncKind::Calendar, now));
        assert!(wants_job(&c, None, SyncKind::Mail, now));
        let mut parked = c.clone();
        parked
            .parked_until
            .set(SyncKind::Mail, Some(now + time::Duration::seconds(30)));
        assert!(
            wants_job(&parked, None, SyncKind::Mail, now),
            "within the grace"
        );
        parked
            .parked_until
            .set(SyncKind::Mail, Some(now + time::Duration::minutes(10)));
        assert!(!wants_job(&parked, None, SyncKind::Mail, now));
    }

    #[test]
    fn the_administrators_switch_stops_the_feature_for_every_user() {
        let now = datetime!(2026-03-01 9:00 UTC);
        let c = connection();
        for mode in [ConsentMode::UserConsent, ConsentMode::Preauthorized] {
            let mut tenant = Tenant::new(c.tenant_id.clone(), mode, now);
            tenant.record_admin_consent(
                FeatureBundle::All,
                &crate::domain::ScopeSet::new(),
                None,
                now,
            );
            tenant.consent_mode = mode;
            assert!(wants_job(&c, Some(&tenant), SyncKind::Mail, now));
            tenant.switches.mail_sync = false;
            assert!(!wants_job(&c, Some(&tenant), SyncKind::Mail, now), "{mode}");
            assert!(wants_job(&c, Some(&tenant), SyncKind::Calendar, now));
            tenant.switches.calendar_sync = false;
            assert!(!wants_job(&c, Some(&tenant), SyncKind::Calendar, now));
        }
    }

    #[test]
    fn a_busy_job_is_kept_unless_requeued_and_a_lost_lease_is_not() {
        let busy = |requeued| JobOutcome::Busy {
            retry_in: Duration::from_secs(30),
            requeued,
        };
        assert!(busy(false).keep_message(), "hidden until the lease ends");
        assert!(
            !busy(true).keep_message(),
            "replaced by a fresh delayed job"
        );
        assert!(!JobOutcome::LeaseLost.keep_message());
        assert!(
            JobOutcome::LeaseUnrenewed.keep_message(),
            "nobody else does the work"
        );
        assert_eq!(busy(true).label(), "busy");
        assert_eq!(JobOutcome::LeaseLost.label(), "lease_lost");
        assert_eq!(JobOutcome::LeaseUnrenewed.label(), "lease_unrenewed");
        assert!(LEASE_TTL >= 3 * LEASE_RENEW_EVERY);
        assert!(HARD_STOP_MARGIN < DEADLINE_MARGIN && FINISH_MARGIN < HARD_STOP_MARGIN);
    }

    /// The queues' `VisibilityTimeout` in template.yaml.
    fn template_visibility(queue: &str) -> Duration {
        let template = include_str!("../../../template.yaml");
        let at = template
            .find(&format!("\n  {queue}:\n"))
            .unwrap_or_else(|| panic!("{queue} in template.yaml"));
        let seconds = template[at..]
            .lines()
            .find_map(|line| line.trim().strip_prefix("VisibilityTimeout:"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("{queue}'s VisibilityTimeout"));
        Duration::from_secs(seconds)
    }

    #[test]
    fn a_dead_workers_message_comes_back_after_its_lease_and_a_retry_no_sooner_than_before() {
        let timings = WorkerTimings::default();
        // A dead worker's last renewal was no later than its last extension, so its message
        // reappears after its lease lapsed: the redelivery resumes, it is not `Busy`.
        assert!(timings.visibility >= timings.lease_ttl + timings.visibility_every);
        assert!(
            timings.visibility <= Duration::from_secs(120),
            "within two minutes"
        );
        assert!(timings.visibility_every < timings.visibility);
        for queue in ["MailSyncQueue", "CalendarSyncQueue"] {
            let queue_visibility = template_visibility(queue);
            assert!(timings.visibility < queue_visibility, "{queue}");
            assert!(
                timings.retry_backoff >= queue_visibility,
                "{queue}: a retry waits as long as before the heartbeat"
            );
        }
    }

    #[test]
    fn graph_errors_map_to_statuses() {
        let api = |status: u16, code: &str| GraphError::Api {
            status,
            code: code.into(),
            message: String::new(),
            request_id: None,
        };
        assert_eq!(
            graph_disposition(&api(404, "MailboxNotEnabledForRESTAPI")),
            Disposition::Status {
                status: ConnectionStatus::MailboxUnsupported,
                reason: "MailboxNotEnabledForRESTAPI".into()
            }
        );
        assert_eq!(
            graph_disposition(&api(403, "ErrorAccessDenied")),
            Disposition::Status {
                status: ConnectionStatus::ConsentRevoked,
                reason: "graph_403_ErrorAccessDenied".into()
            }
        );
        assert_eq!(
            graph_disposition(&GraphError::Unauthorized),
            Disposition::Status {
                status: ConnectionStatus::ReauthRequired,
                reason: "graph_401_after_refresh".into()
            }
        );
        assert!(matches!(
            graph_disposition(&api(503, "serviceNotAvailable")),
            Disposition::Retry { .. }
        ));
        assert!(matches!(
            graph_disposition(&api(400, "ErrorInvalidUrlQuery")),
            Disposition::Fail { .. }
        ));
        assert_eq!(
            graph_disposition(&GraphError::Throttled {
                retry_after: Duration::from_secs(90)
            }),
            Disposition::Park {
                retry_after: Duration::from_secs(90)
            }
        );
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("buffer").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_summary_is_one_json_line_with_every_figure() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || LogSummarySink.run(&summary()));
        let text = String::from_utf8(buffer.0.lock().expect("buffer").clone()).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(lines[0]).expect("json");
        for (field, value) in [
            ("scanned", 10),
            ("matched", 2),
            ("stored", 2),
            ("discarded", 8),
            ("pages", 3),
            ("graph_requests", 5),
        ] {
            assert_eq!(line[field], value, "{field} in {line}");
        }
        assert_eq!(line["tenant_id"], "t");
        assert_eq!(line["outcome"], "done");
    }

    fn summary() -> RunSummary {
        RunSummary {
            function: "mail-sync",
            kind: SyncKind::Mail,
            tenant_id: "t".into(),
            user_id: "u".into(),
            reason: SyncReason::Scheduled,
            attempt: 0,
            outcome: "done",
            code: None,
            stage: SyncStage::Idle,
            folders: 3,
            scanned: 10,
            matched: 2,
            stored: 2,
            removed: 0,
            discarded: 8,
            pages: 3,
            graph_requests: 5,
            batch_items: 2,
            throttled: 0,
            retries: 0,
            bytes_received: 1234,
            elapsed_ms: 50,
        }
    }

    #[test]
    fn emf_line_is_cloudwatch_shaped() {
        let summary = summary();
        let line: serde_json::Value =
            serde_json::from_str(&emf_line(&summary, 1_700_000_000_000)).expect("json");
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "Office365Connector");
        for metric in directive["Metrics"].as_array().expect("metrics") {
            let name = metric["Name"].as_str().expect("name");
            assert!(
                line.get(name).is_some_and(|v| v.is_u64()),
                "{name} has a value"
            );
        }
        for dimension in directive["Dimensions"][0].as_array().expect("dimensions") {
            assert!(line.get(dimension.as_str().expect("name")).is_some());
        }
        assert_eq!(line["Scanned"], 10);
        assert_eq!(
            directive_count(&line),
            1,
            "a finished run counts no failure"
        );
    }

    fn directive_count(line: &serde_json::Value) -> usize {
        line["_aws"]["CloudWatchMetrics"]
            .as_array()
            .expect("directives")
            .len()
    }

    #[test]
    fn template_alarms_on_every_failure_reason() {
        let template = include_str!("../../../template.yaml");
        for reason in FAILURE_REASONS {
            assert!(
                template.contains(&format!("{{ Name: Reason, Value: {reason} }}")),
                "template.yaml has no SyncFailures alarm for {reason}"
            );
        }
    }

    #[test]
    fn failed_and_retried_runs_count_a_failure_by_reason() {
        for (outcome, code, reason) in [
            ("retry", "store_unavailable", "store_unavailable"),
            ("retry", "operator:AADSTS7000215", "app_credentials"),
            ("retry", "graph_503_ServiceUnavailable", "graph_unavailable"),
            ("retry", "graph_429_TooManyRequests", "graph_unavailable"),
            ("retry", "graph_unreachable", "graph_unavailable"),
            (
                "failed",
                "graph_400_ErrorInvalidIdMalformed",
                "graph_rejected",
            ),
            ("failed", "graph_foreign_link", "graph_rejected"),
            ("retry", "token_endpoint_unreachable", "token_unavailable"),
            ("retry", "graph_out_of_time", "out_of_time"),
            ("retry", "park_requeue_failed: queue down", "queue"),
            ("failed", "wrong_queue", "other"),
        ] {
            let mut summary = summary();
            summary.outcome = outcome;
            summary.code = Some(code.to_owned());
            let line: serde_json::Value =
                serde_json::from_str(&emf_line(&summary, 1_700_000_000_000)).expect("json");
            assert_eq!(directive_count(&line), 2, "{code}");
            let directive = &line["_aws"]["CloudWatchMetrics"][1];
            assert_eq!(directive["Namespace"], "Office365Connector");
            assert_eq!(directive["Metrics"][0]["Name"], "SyncFailures");
            for set in directive["Dimensions"].as_array().expect("dimension sets") {
                for name in set.as_array().expect("dimension set") {
                    assert!(line.get(name.as_str().expect("name")).is_some(), "{name}");
                }
            }
            assert_eq!(line["Reason"], reason, "{code}");
            assert_eq!(line["SyncFailures"], 1);
            assert!(FAILURE_REASONS.contains(&reason));
        }
        // Statuses a person must change (reauth, revoked consent) are not failures.
        let mut summary = summary();
        summary.outcome = "status_changed";
        summary.code = Some("AADSTS50173".into());
        let line: serde_json::Value = serde_json::from_str(&emf_line(&summary, 0)).expect("json");
        assert_eq!(directive_count(&line), 1);
        assert!(line.get("Reason").is_none());
    }
}

/// [`keep_lease`] on tokio's paused clock, against a store whose renewals are scripted.
#[cfg(test)]
mod lease_keeping {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::domain::{FolderCursor, Lease, UserId};

    /// What the store does with the next renewal.
    #[derive(Clone, Copy)]
    enum Renewal {
        Renewed,
        Lost,
        Fails,
        Hangs,
    }

    /// Renewals follow the script, then repeat its last entry; nothing else is called.
    struct Scripted {
        script: Mutex<VecDeque<Renewal>>,
        asked: Mutex<Vec<Instant>>,
    }

    impl Scripted {
        fn new(script: &[Renewal]) -> Self {
            Self {
                script: Mutex::new(script.iter().copied().collect()),
                asked: Mutex::new(Vec::new()),
            }
        }
    }

    #[async_trait::async_trait]
    impl SyncStateStore for Scripted {
        async fn acquire_lease(
            &self,
            _: &SyncKey,
            _: &str,
            _: Duration,
        ) -> Result<bool, StoreError> {
            unreachable!("keep_lease only renews")
        }
        async fn renew_lease(&self, _: &SyncKey, _: &str, _: Duration) -> Result<bool, StoreError> {
            self.asked.lock().unwrap().push(Instant::now());
            let next = {
                let mut script = self.script.lock().unwrap();
                if script.len() > 1 {
                    script.pop_front()
                } else {
                    script.front().copied()
                }
            };
            match next.expect("a script") {
                Renewal::Renewed => Ok(true),
                Renewal::Lost => Ok(false),
                Renewal::Fails => Err(StoreError::Backend {
                    operation: "UpdateItem",
                    resource: "sync-state".into(),
                    source: "throttled".into(),
                }),
                Renewal::Hangs => std::future::pending().await,
            }
        }
        async fn release_lease(&self, _: &SyncKey, _: &str) -> Result<bool, StoreError> {
            unreachable!()
        }
        async fn get_lease(&self, _: &SyncKey) -> Result<Option<Lease>, StoreError> {
            unreachable!()
        }
        async fn get_meta(&self, _: &SyncKey) -> Result<Option<SyncMeta>, StoreError> {
            unreachable!()
        }
        async fn put_meta(&self, _: &SyncKey, _: &SyncMeta) -> Result<(), StoreError> {
            unreachable!()
        }
        async fn get_cursor(
            &self,
            _: &SyncKey,
            _: &str,
        ) -> Result<Option<FolderCursor>, StoreError> {
            unreachable!()
        }
        async fn put_cursor(&self, _: &SyncKey, _: &FolderCursor) -> Result<(), StoreError> {
            unreachable!()
        }
        async fn list_cursors(&self, _: &SyncKey) -> Result<Vec<FolderCursor>, StoreError> {
            unreachable!()
        }
        async fn delete_cursor(&self, _: &SyncKey, _: &str) -> Result<(), StoreError> {
            unreachable!()
        }
        async fn delete_sync_state(&self, _: &SyncKey) -> Result<(), StoreError> {
            unreachable!()
        }
    }

    fn key() -> SyncKey {
        SyncKey::new(
            TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").expect("guid"),
            UserId::parse("00000000-0000-0000-0000-0000000000aa").expect("guid"),
            SyncKind::Mail,
        )
    }

    /// How long `keep_lease` kept the lease (`None`: still keeping it after `within`) and
    /// when, from the start, it asked for each renewal.
    async fn kept(script: &[Renewal], within: Duration) -> (Option<Duration>, Vec<Duration>) {
        let (ended, asked) = kept_why(script, within).await;
        (ended.map(|(after, _)| after), asked)
    }

    /// [`kept`], with why it ended.
    async fn kept_why(
        script: &[Renewal],
        within: Duration,
    ) -> (Option<(Duration, LeaseEnd)>, Vec<Duration>) {
        let store = Scripted::new(script);
        let start = Instant::now();
        let timings = WorkerTimings::default();
        let ended = tokio::time::timeout(within, keep_lease(&store, &key(), "worker-1", &timings))
            .await
            .ok()
            .map(|end| (start.elapsed(), end));
        let asked = store
            .asked
            .lock()
            .unwrap()
            .iter()
            .map(|t| *t - start)
            .collect();
        (ended, asked)
    }

    const fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[tokio::test(start_paused = true)]
    async fn renewed_leases_are_kept_for_as_long_as_the_run_lasts() {
        let (ended, asked) = kept(&[Renewal::Renewed], secs(610)).await;
        assert_eq!(ended, None, "still held after ten minutes");
        assert_eq!(asked.len(), 20, "one renewal every {LEASE_RENEW_EVERY:?}");
        assert_eq!(asked[0], LEASE_RENEW_EVERY);
        assert_eq!(asked[19], LEASE_RENEW_EVERY * 20);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_taken_by_another_holder_ends_the_run_at_once() {
        let (ended, asked) = kept_why(&[Renewal::Renewed, Renewal::Lost], secs(600)).await;
        assert_eq!(ended, Some((LEASE_RENEW_EVERY * 2, LeaseEnd::Taken)));
        assert_eq!(asked.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_or_hung_renewals_end_as_unrenewed_not_taken() {
        for script in [[Renewal::Fails], [Renewal::Hangs]] {
            let (ended, _) = kept_why(&script, secs(600)).await;
            assert_eq!(
                ended,
                Some((LEASE_TTL - LEASE_MARGIN, LeaseEnd::Unrenewed)),
                "nobody else holds it: the job comes back"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_renewal_is_given_up_before_the_lease_could_lapse() {
        let (ended, asked) = kept(&[Renewal::Hangs], secs(600)).await;
        assert_eq!(
            ended,
            Some(LEASE_TTL - LEASE_MARGIN),
            "75 s: 15 s before it lapses"
        );
        assert_eq!(asked, vec![LEASE_RENEW_EVERY]);
    }

    #[tokio::test(start_paused = true)]
    async fn failing_renewals_are_retried_until_the_margin_then_the_run_stops() {
        let (ended, asked) = kept(&[Renewal::Fails], secs(600)).await;
        assert_eq!(ended, Some(LEASE_TTL - LEASE_MARGIN));
        assert_eq!(asked, vec![secs(30), secs(60)]);
        // One renewal that goes through after failures restarts the lease's 90 s.
        let (ended, asked) = kept(
            &[Renewal::Fails, Renewal::Renewed, Renewal::Fails],
            secs(600),
        )
        .await;
        assert_eq!(asked[..2], [secs(30), secs(60)]);
        assert_eq!(
            ended,
            Some(secs(60) + LEASE_TTL - LEASE_MARGIN),
            "{asked:?}"
        );
    }
}

#[cfg(test)]
mod progress_tests {
    use super::*;
    use crate::adapters::memory::MemorySyncStateStore;
    use crate::clock::ManualClock;
    use crate::domain::UserId;
    use time::macros::datetime;

    #[tokio::test]
    async fn skipped_items_are_written_at_once_and_kept_in_every_later_write() {
        let now = datetime!(2026-03-01 9:00 UTC);
        let state = MemorySyncStateStore::default();
        let clock = ManualClock::new(now);
        let key = SyncKey::new(
            TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").expect("guid"),
            UserId::parse("00000000-0000-0000-0000-0000000000aa").expect("guid"),
            SyncKind::Mail,
        );
        let progress = Progress::new(&state, key.clone(), &clock, SyncMeta::new(now));
        let item = SkippedItem {
            id: "AAMk-poison".into(),
            reason: "ValidationException: Item size has exceeded the maximum allowed size".into(),
            at: now,
        };
        // Nothing skipped: nothing written.
        progress.skip(&[]).await;
        assert_eq!(state.get_meta(&key).await.expect("read"), None);

        // Written before the checkpoint that passes it: a run that dies now leaves it.
        progress.skip(std::slice::from_ref(&item)).await;
        let meta = state.get_meta(&key).await.expect("read").expect("meta");
        assert_eq!(meta.skipped, vec![item.clone()]);

        // Later checkpoints and a stage change (the work's own meta does not hold it yet)
        // keep it.
        progress
            .add(&SyncCounters {
                pages: 1,
                ..SyncCounters::default()
            })
            .await;
        let mut changed = SyncMeta::new(now);
        changed.enter(SyncStage::InitialImport, now);
        progress.save(&changed, None).await;
        let meta = state.get_meta(&key).await.expect("read").expect("meta");
        assert_eq!(meta.stage, SyncStage::InitialImport);
        assert_eq!(meta.skipped, vec![item]);
        assert_eq!(meta.last_run.pages, 1);
    }

    #[test]
    fn a_run_shows_the_first_import_until_one_succeeds() {
        let now = datetime!(2026-03-01 9:00 UTC);
        let mut meta = SyncMeta::new(now);
        assert_eq!(first_stage(&meta), SyncStage::InitialImport);
        meta.last_success_at = Some(now);
        assert_eq!(first_stage(&meta), SyncStage::Incremental);
    }
}

/// The visibility heartbeat of a leased run's own message and how each end of a run
/// settles it: [`Worker::run_job`] on in-memory stores, microsoft-sim's token endpoint, a
/// queue that records every visibility change, and timings shrunk to seconds.
#[cfg(test)]
mod visibility_keeping {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::adapters::memory::{
        MemoryConnectionStore, MemorySyncStateStore, MemoryTenantStore, MemoryTokenVault,
        StaticClientSecret,
    };
    use crate::clock::SystemClock;
    use crate::config::BaseUrl;
    use crate::domain::{FolderCursor, Lease, ScopeSet, UserId};
    use crate::graph::graph_http_client;
    use crate::oauth::{RefreshClient, token_http_client};
    use crate::ports::TokenVault;
    use crate::secret::{ClientSecret, RefreshToken, TokenRecord};

    const QUEUE: &str = "https://sqs.example/mail-sync";
    const RECEIPT: &str = "receipt-1";
    const SECRET: &str = "sim-secret";
    const REDIRECT: &str = "http://localhost:8400/auth/callback";
    const USER: &str = "8a1d2c3b-4e5f-4a6b-8c7d-000000000001";

    const TIMINGS: WorkerTimings = WorkerTimings {
        lease_ttl: Duration::from_secs(3),
        lease_renew_every: Duration::from_secs(1),
        lease_margin: Duration::from_secs(1),
        visibility: Duration::from_secs(5),
        visibility_every: Duration::from_secs(1),
        retry_backoff: Duration::from_secs(100),
    };

    /// Records every visibility change (when, receipt, timeout); fails them while `failing`.
    #[derive(Default)]
    struct RecordingQueue {
        failing: AtomicBool,
        changes: Mutex<Vec<(Instant, String, Duration)>>,
    }

    impl RecordingQueue {
        fn changes(&self) -> Vec<(Instant, String, Duration)> {
            self.changes.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl JobQueue for RecordingQueue {
        async fn send_batch(
            &self,
            _: &str,
            messages: &[QueueMessage],
        ) -> Result<usize, QueueError> {
            Ok(messages.len())
        }
        async fn change_visibility(
            &self,
            queue_url: &str,
            receipt_handle: &str,
            timeout: Duration,
        ) -> Result<(), QueueError> {
            assert_eq!(queue_url, QUEUE);
            self.changes
                .lock()
                .unwrap()
                .push((Instant::now(), receipt_handle.to_owned(), timeout));
            if self.failing.load(Ordering::SeqCst) {
                return Err(QueueError::Backend {
                    operation: "ChangeMessageVisibility",
                    queue: queue_url.to_owned(),
                    source: "service unavailable".into(),
                });
            }
            Ok(())
        }
    }

    /// The in-memory store, with renewals that fail while `failing`.
    #[derive(Default)]
    struct Renewals {
        inner: MemorySyncStateStore,
        failing: AtomicBool,
    }

    #[async_trait]
    impl SyncStateStore for Renewals {
        async fn acquire_lease(
            &self,
            key: &SyncKey,
            holder: &str,
            ttl: Duration,
        ) -> Result<bool, StoreError> {
            self.inner.acquire_lease(key, holder, ttl).await
        }
        async fn renew_lease(
            &self,
            key: &SyncKey,
            holder: &str,
            ttl: Duration,
        ) -> Result<bool, StoreError> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(StoreError::Backend {
                    operation: "UpdateItem",
                    resource: "sync-state".into(),
                    source: "throttled".into(),
                });
            }
            self.inner.renew_lease(key, holder, ttl).await
        }
        async fn release_lease(&self, key: &SyncKey, holder: &str) -> Result<bool, StoreError> {
            self.inner.release_lease(key, holder).await
        }
        async fn get_lease(&self, key: &SyncKey) -> Result<Option<Lease>, StoreError> {
            self.inner.get_lease(key).await
        }
        async fn get_meta(&self, key: &SyncKey) -> Result<Option<SyncMeta>, StoreError> {
            self.inner.get_meta(key).await
        }
        async fn put_meta(&self, key: &SyncKey, meta: &SyncMeta) -> Result<(), StoreError> {
            self.inner.put_meta(key, meta).await
        }
        async fn get_cursor(
            &self,
            key: &SyncKey,
            folder: &str,
        ) -> Result<Option<FolderCursor>, StoreError> {
            self.inner.get_cursor(key, folder).await
        }
        async fn put_cursor(&self, key: &SyncKey, cursor: &FolderCursor) -> Result<(), StoreError> {
            self.inner.put_cursor(key, cursor).await
        }
        async fn list_cursors(&self, key: &SyncKey) -> Result<Vec<FolderCursor>, StoreError> {
            self.inner.list_cursors(key).await
        }
        async fn delete_cursor(&self, key: &SyncKey, folder: &str) -> Result<(), StoreError> {
            self.inner.delete_cursor(key, folder).await
        }
        async fn delete_sync_state(&self, key: &SyncKey) -> Result<(), StoreError> {
            self.inner.delete_sync_state(key).await
        }
    }

    /// What the work does: works this long then ends so, or never ends.
    enum Plan {
        Finish(Duration),
        FailStore(Duration),
        Throttled(Duration, Duration),
        Forever,
    }

    struct PlannedWork(Plan);

    #[async_trait]
    impl SyncWork for PlannedWork {
        fn kind(&self) -> SyncKind {
            SyncKind::Mail
        }
        async fn run(&self, _: &mut RunContext<'_>) -> Result<WorkOutcome, WorkError> {
            match self.0 {
                Plan::Finish(after) => {
                    tokio::time::sleep(after).await;
                    Ok(WorkOutcome::Complete)
                }
                Plan::FailStore(after) => {
                    tokio::time::sleep(after).await;
                    Err(WorkError::Store(StoreError::Backend {
                        operation: "PutItem",
                        resource: "activities".into(),
                        source: "unavailable".into(),
                    }))
                }
                Plan::Throttled(after, retry_after) => {
                    tokio::time::sleep(after).await;
                    Err(WorkError::Graph(GraphError::Throttled { retry_after }))
                }
                Plan::Forever => std::future::pending().await,
            }
        }
    }

    struct Setup {
        _sim: microsoft_sim::SimServer,
        worker: Worker,
        queue: Arc<RecordingQueue>,
        job: SyncJob,
    }

    /// One active mailbox connected through microsoft-sim (a real refresh token, so the
    /// run gets its access token over HTTP), on in-memory stores.
    async fn setup(state: Arc<dyn SyncStateStore>) -> Setup {
        let client_id = uuid::Uuid::new_v4().to_string();
        let tenant = uuid::Uuid::new_v4().to_string();
        let upn = "adele@contoso.com";
        let world = serde_json::json!({
            "apps": [{"clientId": client_id, "clientSecret": SECRET, "displayName": "Connector",
                      "redirectUris": [REDIRECT], "permissions": ["Mail.Read"]}],
            "tenants": [{"id": tenant, "displayName": "Contoso", "verifiedDomains": ["contoso.com"],
                         "users": [{"id": USER, "userPrincipalName": upn, "mail": upn,
                                    "displayName": "Adele", "roles": []}]}],
        });
        let mut options = microsoft_sim::SimOptions::new(
            microsoft_sim::World::from_json(&world.to_string()).expect("world"),
        );
        options.auto_approve = true;
        let sim = microsoft_sim::SimServer::start(options).await.expect("sim");
        let base = sim.base_url();
        let tokens =
            microsoft_sim::identity::testing::sign_in(&microsoft_sim::identity::testing::SignIn {
                base_url: &base,
                tenant: &tenant,
                client_id: &client_id,
                client_secret: Some(SECRET),
                redirect_uri: REDIRECT,
                login: upn,
                scopes: "openid offline_access Mail.Read",
                consent_for_org: false,
                ca_pem: None,
            })
            .await
            .expect("sign-in");
        let now = OffsetDateTime::now_utc();
        let tenant_id = TenantId::parse(&tenant).expect("guid");
        let user_id = UserId::parse(USER).expect("guid");
        let key = UserKey::new(tenant_id.clone(), user_id.clone());
        let scopes = ScopeSet::parse("offline_access Mail.Read");
        let vault = Arc::new(MemoryTokenVault::default());
        vault
            .put_token(
                &key,
                &TokenRecord {
                    refresh_token: RefreshToken::new(tokens.refresh_token.expect("refresh token")),
                    scopes: scopes.clone(),
                    updated_at: now,
                },
            )
            .await
            .expect("vault");
        let connections = Arc::new(MemoryConnectionStore::default());
        let mut connection =
            Connection::new_active(tenant_id.clone(), user_id.clone(), upn, scopes, now);
        connection.mail = Some(upn.to_owned());
        connections
            .upsert_connection(&connection)
            .await
            .expect("connection");
        let clock = Arc::new(SystemClock);
        let base_url = BaseUrl::parse(&base).expect("base url");
        let queue = Arc::new(RecordingQueue::default());
        let worker = Worker {
            function: "mail-sync",
            connections,
            tenants: Arc::new(MemoryTenantStore::default()),
            state,
            queue: queue.clone(),
            queue_url: QUEUE.into(),
            tokens: Arc::new(TokenProvider::new(
                vault,
                Arc::new(StaticClientSecret(ClientSecret::new(SECRET))),
                RefreshClient::new(
                    token_http_client().expect("client"),
                    base_url.clone(),
                    client_id,
                ),
                clock.clone(),
            )),
            graph: Arc::new(GraphClient::new(
                graph_http_client().expect("client"),
                &base_url,
            )),
            clock,
            summaries: Arc::new(NoSummaries),
            timings: TIMINGS,
            notifications: None,
        };
        let job = SyncJob::new(SyncKind::Mail, tenant_id, user_id, SyncReason::Initial);
        Setup {
            _sim: sim,
            worker,
            queue,
            job,
        }
    }

    struct NoSummaries;

    impl SummarySink for NoSummaries {
        fn run(&self, _: &RunSummary) {}
        fn fan_out(&self, _: &'static str, _: SyncKind, _: &FanOutReport) {}
    }

    fn delivery() -> Delivery {
        Delivery {
            receipt_handle: Some(RECEIPT.into()),
            receive_count: 1,
            deadline: Instant::now() + Duration::from_secs(600),
        }
    }

    /// Runs the job; its outcome, when it started and when it returned.
    async fn run(setup: &Setup, plan: Plan) -> (JobOutcome, Instant, Instant) {
        let started = Instant::now();
        let outcome = setup
            .worker
            .run_job(&PlannedWork(plan), &setup.job, &delivery())
            .await;
        (outcome, started, Instant::now())
    }

    /// The heartbeat's extensions: at once, then about every `visibility_every`.
    fn assert_extended_while_running(
        changes: &[(Instant, String, Duration)],
        started: Instant,
        until: Instant,
    ) {
        let extensions: Vec<Instant> = changes
            .iter()
            .filter(|(_, _, timeout)| *timeout == TIMINGS.visibility)
            .map(|(at, _, _)| *at)
            .collect();
        assert!(
            changes.iter().all(|(_, receipt, _)| receipt == RECEIPT),
            "only the job's own message"
        );
        let first = *extensions.first().expect("an extension");
        assert!(
            first - started < Duration::from_millis(800),
            "hidden as the run starts"
        );
        let mut last = first;
        for at in &extensions[1..] {
            assert!(
                *at - last < TIMINGS.visibility_every + Duration::from_millis(500),
                "extended every {:?}: {extensions:?}",
                TIMINGS.visibility_every
            );
            last = *at;
        }
        assert!(
            until - last < TIMINGS.visibility_every + Duration::from_millis(500),
            "extended until the run ended"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_message_stays_hidden_while_the_run_lives_and_is_then_left_alone() {
        let setup = setup(Arc::new(MemorySyncStateStore::default())).await;
        let (outcome, started, ended) =
            run(&setup, Plan::Finish(Duration::from_millis(3500))).await;
        assert_eq!(outcome, JobOutcome::Done);
        assert!(!outcome.keep_message());
        let changes = setup.queue.changes();
        assert!(changes.len() >= 4, "{changes:?}");
        assert_extended_while_running(&changes, started, ended);
        assert!(
            changes
                .iter()
                .all(|(_, _, timeout)| *timeout == TIMINGS.visibility),
            "a finished run's message is acknowledged, not hidden again: {changes:?}"
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            setup.queue.changes().len(),
            changes.len(),
            "no extension after the run"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failing_extensions_are_retried_and_never_stop_the_run() {
        let setup = setup(Arc::new(MemorySyncStateStore::default())).await;
        setup.queue.failing.store(true, Ordering::SeqCst);
        let (outcome, started, ended) =
            run(&setup, Plan::Finish(Duration::from_millis(3500))).await;
        assert_eq!(outcome, JobOutcome::Done, "the run went on to its end");
        assert!(ended - started >= Duration::from_millis(3500));
        let changes = setup.queue.changes();
        assert!(
            changes.len() >= 4,
            "each failed extension tried again: {changes:?}"
        );
        assert_extended_while_running(&changes, started, ended);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_lost_to_failing_renewals_keeps_the_message_hidden_for_one_lease() {
        let state = Arc::new(Renewals::default());
        state.failing.store(true, Ordering::SeqCst);
        let setup = setup(state).await;
        let (outcome, started, ended) = run(&setup, Plan::Forever).await;
        assert_eq!(outcome, JobOutcome::LeaseUnrenewed);
        assert!(outcome.keep_message(), "reported as a batch item failure");
        let stopped = ended - started;
        assert!(
            stopped >= TIMINGS.lease_ttl - TIMINGS.lease_margin && stopped < TIMINGS.lease_ttl,
            "the run stops before its lease could lapse: {stopped:?}"
        );
        let changes = setup.queue.changes();
        let (_, receipt, last) = changes.last().expect("a visibility change").clone();
        assert_eq!(receipt, RECEIPT);
        assert_eq!(
            last, TIMINGS.lease_ttl,
            "back after one lease, which has lapsed by then: {changes:?}"
        );
        assert_extended_while_running(&changes[..changes.len() - 1], started, ended);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_taken_by_another_holder_is_acknowledged() {
        let state = Arc::new(MemorySyncStateStore::default());
        let setup = setup(state.clone()).await;
        let key = setup.job.key();
        // Another worker takes the mailbox over while the run lives (its own lease lapsed,
        // as after a long pause of this one).
        let take_over = async {
            let holder = loop {
                if let Some(lease) = state.get_lease(&key).await.expect("lease") {
                    break lease.holder;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(state.release_lease(&key, &holder).await.expect("release"));
            assert!(
                state
                    .acquire_lease(&key, "another-worker", Duration::from_secs(60))
                    .await
                    .expect("acquire")
            );
        };
        let ((outcome, started, ended), ()) = tokio::join!(run(&setup, Plan::Forever), take_over);
        assert_eq!(outcome, JobOutcome::LeaseLost);
        assert!(!outcome.keep_message(), "the new holder does the work");
        assert!(
            ended - started < TIMINGS.lease_ttl,
            "stopped at the next renewal"
        );
        let changes = setup.queue.changes();
        assert!(
            changes
                .iter()
                .all(|(_, _, timeout)| *timeout == TIMINGS.visibility),
            "only the heartbeat's extensions; the acknowledged message is not hidden again: {changes:?}"
        );
        assert_eq!(
            state
                .get_lease(&key)
                .await
                .expect("lease")
                .map(|l| l.holder),
            Some("another-worker".to_owned()),
            "the new holder's lease is left alone"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retried_run_hides_its_message_for_the_retry_backoff() {
        let setup = setup(Arc::new(MemorySyncStateStore::default())).await;
        let (outcome, started, ended) =
            run(&setup, Plan::FailStore(Duration::from_millis(1500))).await;
        assert_eq!(
            outcome,
            JobOutcome::Retry {
                code: "store_unavailable".into()
            }
        );
        assert!(outcome.keep_message());
        let changes = setup.queue.changes();
        let (_, _, last) = changes.last().expect("a visibility change").clone();
        assert_eq!(
            last, TIMINGS.retry_backoff,
            "not back sooner than the retry backoff: {changes:?}"
        );
        assert_extended_while_running(&changes[..changes.len() - 1], started, ended);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_parked_run_hides_its_message_until_the_park_ends_and_extends_it_no_more() {
        let setup = setup(Arc::new(MemorySyncStateStore::default())).await;
        let (outcome, _, _) = run(
            &setup,
            Plan::Throttled(Duration::from_millis(1500), Duration::from_secs(45)),
        )
        .await;
        assert!(
            matches!(
                outcome,
                JobOutcome::Parked {
                    requeued: false,
                    ..
                }
            ),
            "{outcome:?}"
        );
        assert!(outcome.keep_message());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let changes = setup.queue.changes();
        let (_, _, last) = changes.last().expect("a visibility change").clone();
        assert_eq!(
            last,
            Duration::from_secs(45),
            "the park's visibility is the last word: {changes:?}"
        );
    }
}
