//! calendar-sync: the CalendarSyncFunction handler.
//!
//! One function, two triggers (DESIGN.md §3):
//! - the hourly EventBridge schedule → **fan-out**: one calendar [`SyncJob`] per active
//!   connection that wants one (connector-core's `sync::fan_out`: calendar switch on,
//!   calendar scopes and tenant grant, not parked);
//! - its SQS queue → **worker**: each record is one calendar, run through connector-core's
//!   worker skeleton with [`CalendarWork`]; records whose job must come back (retry, parked)
//!   are reported as batch item failures, the others are deleted by Lambda.
//!
//! The handler takes the narrow pieces it needs ([`CalendarSync`]); `main.rs` builds them
//! once per cold start.

pub mod catchup;
pub mod consent;
pub mod work;

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use connector_core::adapters::dynamodb::{
    ActivityRetention, DynamoActivityStore, DynamoConnectionStore, DynamoConsentMeetingStore,
    DynamoCrmIndex, DynamoSyncStateStore, DynamoTenantStore, Fence,
};
use connector_core::adapters::secrets::SecretsManagerVault;
use connector_core::adapters::slots_dynamodb::DynamoSlotLedger;
use connector_core::adapters::sqs::SqsJobQueue;
use connector_core::budget::{BudgetOptions, MailboxBudget};
use connector_core::clock::Clock;
use connector_core::config::Config;
use connector_core::consent_meetings::{DueReport, process_due};
use connector_core::credential::AppCredential;
use connector_core::domain::{Feature, SyncKind};
use connector_core::graph::{GraphClient, graph_http_client};
use connector_core::messages::SyncJob;
use connector_core::oauth::{RefreshClient, TokenProvider, token_http_client};
use connector_core::ports::ConsentMeetingStore;
use connector_core::sync::{
    Delivery, FanOutError, FanOutOptions, FanOutReport, JobOutcome, SummarySink, Worker,
    WorkerTimings, fan_out_with,
};
use futures::StreamExt;
use serde_json::Value;
use tokio::time::Instant;
use tracing::{Instrument, error, info, info_span, warn};

pub use consent::ConsentLinker;
pub use work::{CalendarOptions, CalendarWork};

/// The function's name in summaries and metrics.
pub const FUNCTION: &str = "calendar-sync";

/// What an invocation carries.
#[derive(Debug)]
pub enum Invocation {
    /// The EventBridge schedule (`detail-type: Scheduled Event`).
    Schedule,
    /// SQS records, one calendar job each.
    Jobs(SqsEvent),
    /// The minute schedule of Explicit Consent Mode (its target `Input`:
    /// `{"task": "consent"}`).
    ConsentTick,
}

/// An event this function does not handle (the whole invocation fails: nothing to retry
/// per record).
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("unrecognised event: {0}")]
    UnknownEvent(&'static str),
    #[error("unreadable SQS event")]
    BadSqsEvent(#[source] serde_json::Error),
    #[error("the fan-out failed")]
    FanOut(#[from] FanOutError),
    #[error("the consent tick failed")]
    Consent(#[source] connector_core::ports::StoreError),
}

impl HandlerError {
    /// A stable code for the invocation's error type.
    pub fn code(&self) -> &'static str {
        match self {
            HandlerError::UnknownEvent(_) => "UnknownEvent",
            HandlerError::BadSqsEvent(_) => "BadSqsEvent",
            HandlerError::FanOut(_) => "FanOutFailed",
            HandlerError::Consent(_) => "ConsentTickFailed",
        }
    }
}

/// What Lambda reports for a failed invocation: our code and our own wording.
impl From<HandlerError> for lambda_runtime::Diagnostic {
    fn from(error: HandlerError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: error.code().to_owned(),
            error_message: error.to_string(),
        }
    }
}

/// Tells the two triggers apart: SQS events carry `Records`, scheduled events a
/// `detail-type` of `Scheduled Event`.
pub fn decode(payload: Value) -> Result<Invocation, HandlerError> {
    let Value::Object(object) = &payload else {
        return Err(HandlerError::UnknownEvent("not a JSON object"));
    };
    if object.contains_key("Records") {
        return serde_json::from_value(payload)
            .map(Invocation::Jobs)
            .map_err(HandlerError::BadSqsEvent);
    }
    if object.get("task").and_then(Value::as_str) == Some("consent") {
        return Ok(Invocation::ConsentTick);
    }
    match object.get("detail-type").and_then(Value::as_str) {
        Some("Scheduled Event") => Ok(Invocation::Schedule),
        Some(_) => Err(HandlerError::UnknownEvent(
            "an EventBridge event of another type",
        )),
        None => Err(HandlerError::UnknownEvent("neither SQS nor a schedule")),
    }
}

/// Everything the handler runs on.
pub struct CalendarSync {
    pub worker: Arc<Worker>,
    pub work: Arc<CalendarWork>,
    pub fan_out: FanOutOptions,
    /// Jobs of one SQS batch run at once (different users: the per-mailbox limit is
    /// per user).
    pub job_concurrency: usize,
    /// Explicit Consent Mode's meetings, for the consent tick (`None`: no PUBLIC_BASE_URL).
    pub consent: Option<Arc<dyn ConsentMeetingStore>>,
}

/// How far ahead a consent tick looks: a tick a minute, so a decision due before the next
/// one is waited for by this one.
pub const CONSENT_LOOKAHEAD_SECONDS: i64 = 60;

impl CalendarSync {
    /// The production wiring on the real adapters (the Lambda's `main` and
    /// `connectorctl sync calendar` share it).
    pub fn wire(
        config: &Config,
        aws: &aws_config::SdkConfig,
        clock: Arc<dyn Clock>,
        summaries: Arc<dyn SummarySink>,
    ) -> Result<Self, reqwest::Error> {
        let dynamodb = aws_sdk_dynamodb::Client::new(aws);
        let queue: Arc<dyn connector_core::ports::JobQueue> =
            Arc::new(SqsJobQueue::new(aws_sdk_sqs::Client::new(aws)));
        let secrets = aws_sdk_secretsmanager::Client::new(aws);
        let tables = &config.tables;
        let microsoft = &config.microsoft;
        let tokens = TokenProvider::with_credential(
            Arc::new(SecretsManagerVault::new(secrets.clone())),
            Arc::new(AppCredential::from_config(
                microsoft,
                secrets,
                aws_sdk_kms::Client::new(aws),
            )),
            RefreshClient::new(
                token_http_client()?,
                microsoft.login_base_url.clone(),
                microsoft.client_id.clone(),
            ),
            clock.clone(),
        )
        // Calendar scopes only: withdrawing another feature must not fail calendar refreshes.
        .for_feature(Feature::Calendar);
        let worker = Worker {
            function: FUNCTION,
            connections: Arc::new(DynamoConnectionStore::new(
                dynamodb.clone(),
                tables.connections.clone(),
            )),
            tenants: Arc::new(DynamoTenantStore::new(
                dynamodb.clone(),
                tables.tenants.clone(),
            )),
            // Every write of the user's data behind the disconnect fence (docs/fencing.md).
            state: Arc::new(
                DynamoSyncStateStore::new(dynamodb.clone(), tables.sync_state.clone())
                    .with_fence(Fence::new(tables.connections.clone())),
            ),
            queue: queue.clone(),
            queue_url: config.queues.calendar_sync.clone(),
            tokens: Arc::new(tokens),
            // Outlook's 4 concurrent requests per mailbox, shared with mail-sync.
            graph: Arc::new(
                GraphClient::new(graph_http_client()?, &microsoft.graph_base_url).with_budget(
                    MailboxBudget::new(
                        Arc::new(DynamoSlotLedger::new(
                            dynamodb.clone(),
                            tables.sync_state.clone(),
                        )),
                        BudgetOptions::default(),
                    ),
                ),
            ),
            clock,
            summaries,
            timings: WorkerTimings::default(),
            notifications: Some(Arc::new(connector_core::notifications::Link::on_aws(
                dynamodb.clone(),
                config,
                queue,
            ))),
        };
        // Each meeting's expiry: the tenant's retention, else ACTIVITY_RETENTION_DAYS.
        let activities = DynamoActivityStore::new(dynamodb.clone(), tables.activities.clone())
            .with_fence(Fence::new(tables.connections.clone()))
            .with_default_retention(
                config.activity_retention_days,
                Arc::new(DynamoTenantStore::new(
                    dynamodb.clone(),
                    tables.tenants.clone(),
                )),
            );
        let mut work = CalendarWork::new(
            Arc::new(activities),
            Arc::new(DynamoCrmIndex::new(dynamodb.clone(), tables.crm.clone())),
        );
        let mut app_consent = None;
        if let Some(base) = &config.public_base_url {
            // A meeting's record expires like its activity would.
            let mut store =
                DynamoConsentMeetingStore::new(dynamodb.clone(), tables.activities.clone());
            if let Some(days) = config.activity_retention_days {
                store = store.with_retention(ActivityRetention::new(
                    days,
                    Arc::new(DynamoTenantStore::new(
                        dynamodb.clone(),
                        tables.tenants.clone(),
                    )),
                ));
            }
            let store: Arc<dyn ConsentMeetingStore> = Arc::new(store);
            work = work.with_consent(ConsentLinker {
                store: store.clone(),
                public_base_url: base.as_str().to_owned(),
            });
            app_consent = Some(store);
        }
        let mut app = Self::new(Arc::new(worker), Arc::new(work));
        app.consent = app_consent;
        Ok(app)
    }

    pub fn new(worker: Arc<Worker>, work: Arc<CalendarWork>) -> Self {
        Self {
            worker,
            work,
            fan_out: FanOutOptions::default(),
            job_concurrency: 10,
            consent: None,
        }
    }

    /// The consent tick: what is due before the next tick (a minute on) happens now, a
    /// decision at its second (connector-core `consent_meetings::process_due`).
    pub async fn consent_tick(&self) -> Result<DueReport, HandlerError> {
        let Some(store) = &self.consent else {
            return Err(HandlerError::UnknownEvent(
                "a consent tick, but PUBLIC_BASE_URL is not set",
            ));
        };
        let report = process_due(
            store.as_ref(),
            self.worker.tenants.as_ref(),
            self.worker.clock.as_ref(),
            time::Duration::seconds(CONSENT_LOOKAHEAD_SECONDS),
        )
        .await
        .map_err(HandlerError::Consent)?;
        info!(
            requested = report.requested,
            decided = report.decided,
            stopped = report.stopped,
            "consent tick"
        );
        Ok(report)
    }

    /// Handles one invocation; `deadline` is Lambda's.
    pub async fn handle(&self, payload: Value, deadline: Instant) -> Result<Value, HandlerError> {
        match decode(payload)? {
            Invocation::Schedule => {
                let report = self.schedule().await?;
                Ok(serde_json::to_value(report).unwrap_or(Value::Null))
            }
            Invocation::Jobs(event) => {
                let response = self.jobs(event, deadline).await;
                Ok(serde_json::to_value(response).unwrap_or(Value::Null))
            }
            Invocation::ConsentTick => {
                let report = self.consent_tick().await?;
                Ok(serde_json::json!({
                    "requested": report.requested,
                    "decided": report.decided,
                    "stopped": report.stopped,
                }))
            }
        }
    }

    /// Schedule mode: one job per calendar that wants one, and one summary line.
    pub async fn schedule(&self) -> Result<FanOutReport, FanOutError> {
        let worker = &self.worker;
        let report = fan_out_with(
            worker.connections.as_ref(),
            worker.tenants.as_ref(),
            worker
                .notifications
                .as_ref()
                .map(|link| link.store.as_ref()),
            worker.queue.as_ref(),
            &worker.queue_url,
            SyncKind::Calendar,
            worker.clock.now(),
            self.fan_out,
        )
        .await?;
        worker
            .summaries
            .fan_out(FUNCTION, SyncKind::Calendar, &report);
        Ok(report)
    }

    /// Worker mode: every record through the skeleton; failures reported per record.
    pub async fn jobs(&self, event: SqsEvent, deadline: Instant) -> SqsBatchResponse {
        let outcomes: Vec<(String, bool)> = futures::stream::iter(event.records)
            .map(|record| self.record(record, deadline))
            .buffer_unordered(self.job_concurrency.max(1))
            .collect()
            .await;
        connector_core::sync::batch_response(outcomes)
    }

    /// Runs one record; returns its message id and whether SQS must deliver it again.
    async fn record(&self, record: SqsMessage, deadline: Instant) -> (String, bool) {
        let message_id = record.message_id.clone().unwrap_or_default();
        let span = info_span!("calendar_job", message_id = %message_id);
        let keep = async {
            let job: SyncJob = match record.body.as_deref().map(serde_json::from_str::<SyncJob>) {
                Some(Ok(job)) => job,
                // Kept on the queue: after maxReceiveCount it lands in the DLQ for a person.
                Some(Err(error)) => {
                    error!(error = %error, "unreadable calendar job");
                    return true;
                }
                None => {
                    error!("calendar job without a body");
                    return true;
                }
            };
            if job.kind != SyncKind::Calendar {
                warn!(kind = %job.kind, "a job of another kind on the calendar queue; dropped");
                return false;
            }
            let delivery = Delivery {
                receipt_handle: record.receipt_handle.clone(),
                receive_count: record
                    .attributes
                    .get("ApproximateReceiveCount")
                    .and_then(|count| count.parse().ok())
                    .unwrap_or(1),
                deadline,
            };
            let outcome = self
                .worker
                .run_job(self.work.as_ref(), &job, &delivery)
                .instrument(info_span!("sync", tenant_id = %job.tenant_id, user_id = %job.user_id))
                .await;
            if let JobOutcome::Failed { code } = &outcome {
                warn!(code = %code, "calendar job failed and was dropped");
            }
            outcome.keep_message()
        }
        .instrument(span)
        .await;
        (message_id, keep)
    }
}
