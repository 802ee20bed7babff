//! mail-sync: MailSyncFunction's handler.
//!
//! - **Schedule mode** (EventBridge `rate(15 minutes)`): fan-out of one SQS job per active
//!   mailbox that wants mail sync ([`connector_core::sync::fan_out`]).
//! - **Worker mode** (SQS, partial batch failure reporting): each record is a
//!   [`SyncJob`]; records run concurrently, each through the shared worker skeleton with
//!   [`work::MailWork`]; a record fails alone (`batchItemFailures`), the others are
//!   acknowledged.
//!
//! The handler takes its dependencies as trait objects built once per cold start
//! (`main.rs`), so tests run it in-process on moto and microsoft-sim, or on in-memory ports.

pub mod catchup;
pub mod folders;
pub mod page;
pub mod work;

use std::sync::Arc;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use connector_core::clock::Clock;
use connector_core::domain::SyncKind;
use connector_core::messages::SyncJob;
use connector_core::ports::{ConnectionStore, JobQueue, TenantStore};
use connector_core::sync::{
    Delivery, FanOutOptions, FanOutReport, JobOutcome, SummarySink, Worker, WorkerTimings,
    fan_out_with,
};
use futures::{StreamExt, stream};
use serde_json::Value;
use tokio::time::Instant;
use tracing::{Instrument, error, info_span, warn};

pub use work::{MailSettings, MailWork};

/// The function's name in logs and metrics.
pub const FUNCTION: &str = "mail-sync";

/// Records of one SQS batch run at once (each is another mailbox).
const RECORD_CONCURRENCY: usize = 10;

/// Everything the handler needs, built once per cold start.
pub struct App {
    pub worker: Worker,
    pub work: MailWork,
    pub fan_out: FanOutOptions,
}

impl App {
    pub fn connections(&self) -> &Arc<dyn ConnectionStore> {
        &self.worker.connections
    }

    pub fn tenants(&self) -> &Arc<dyn TenantStore> {
        &self.worker.tenants
    }

    pub fn queue(&self) -> &Arc<dyn JobQueue> {
        &self.worker.queue
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.worker.clock
    }

    pub fn summaries(&self) -> &Arc<dyn SummarySink> {
        &self.worker.summaries
    }
}

/// Builds the function's dependencies on the real adapters (DynamoDB, S3 for message
/// bodies in `bodies_bucket`, Secrets Manager, SQS, Graph and the identity platform from
/// `config`): what `main.rs` runs on, and what `connectorctl sync mail` runs locally.
pub fn build_app(
    config: &connector_core::config::Config,
    settings: MailSettings,
    bodies_bucket: &str,
    aws: &aws_config::SdkConfig,
    summaries: Arc<dyn SummarySink>,
    fan_out: FanOutOptions,
) -> Result<App, reqwest::Error> {
    use connector_core::adapters::dynamodb::{
        DynamoActivityStore, DynamoConnectionStore, DynamoCrmIndex, DynamoSyncStateStore,
        DynamoTenantStore, Fence,
    };
    use connector_core::adapters::s3::{S3BodyStore, s3_client};
    use connector_core::adapters::secrets::SecretsManagerVault;
    use connector_core::adapters::slots_dynamodb::DynamoSlotLedger;
    use connector_core::adapters::sqs::SqsJobQueue;
    use connector_core::budget::{BudgetOptions, MailboxBudget};
    use connector_core::clock::SystemClock;
    use connector_core::credential::AppCredential;
    use connector_core::domain::Feature;
    use connector_core::graph::{GraphClient, graph_http_client};
    use connector_core::oauth::{RefreshClient, TokenProvider, token_http_client};

    let dynamo = aws_sdk_dynamodb::Client::new(aws);
    let queue: Arc<dyn JobQueue> = Arc::new(SqsJobQueue::new(aws_sdk_sqs::Client::new(aws)));
    let secrets = aws_sdk_secretsmanager::Client::new(aws);
    let tables = &config.tables;
    let clock = Arc::new(SystemClock);
    let tokens = TokenProvider::with_credential(
        Arc::new(SecretsManagerVault::new(secrets.clone())),
        Arc::new(AppCredential::from_config(
            &config.microsoft,
            secrets,
            aws_sdk_kms::Client::new(aws),
        )),
        RefreshClient::new(
            token_http_client()?,
            config.microsoft.login_base_url.clone(),
            &config.microsoft.client_id,
        ),
        clock.clone(),
    )
    .for_feature(Feature::Mail);
    Ok(App {
        worker: Worker {
            function: FUNCTION,
            connections: Arc::new(DynamoConnectionStore::new(
                dynamo.clone(),
                &tables.connections,
            )),
            tenants: Arc::new(DynamoTenantStore::new(dynamo.clone(), &tables.tenants)),
            // Every write of the user's data behind the disconnect fence (docs/fencing.md).
            state: Arc::new(
                DynamoSyncStateStore::new(dynamo.clone(), &tables.sync_state)
                    .with_fence(Fence::new(&tables.connections)),
            ),
            queue: queue.clone(),
            queue_url: config.queues.mail_sync.clone(),
            tokens: Arc::new(tokens),
            // Outlook's 4 concurrent requests per mailbox, shared with calendar-sync.
            graph: Arc::new(
                GraphClient::new(graph_http_client()?, &config.microsoft.graph_base_url)
                    .with_budget(MailboxBudget::new(
                        Arc::new(DynamoSlotLedger::new(dynamo.clone(), &tables.sync_state)),
                        BudgetOptions::default(),
                    )),
            ),
            clock,
            summaries,
            timings: WorkerTimings::default(),
            notifications: Some(Arc::new(connector_core::notifications::Link::on_aws(
                dynamo.clone(),
                config,
                queue,
            ))),
        },
        work: MailWork::new(
            Arc::new(
                DynamoActivityStore::new(dynamo.clone(), &tables.activities)
                    .with_fence(Fence::new(&tables.connections))
                    .with_bodies(Arc::new(S3BodyStore::new(
                        s3_client(
                            aws_sdk_s3::config::Builder::from(aws),
                            aws.endpoint_url().is_some(),
                        ),
                        bodies_bucket,
                    )))
                    .with_default_retention(
                        config.activity_retention_days,
                        Arc::new(DynamoTenantStore::new(dynamo.clone(), &tables.tenants)),
                    ),
            ),
            Arc::new(DynamoCrmIndex::new(dynamo, &tables.crm)),
            settings,
        ),
        fan_out,
    })
}

/// A failure of the invocation as a whole (only schedule mode has one).
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("unrecognised event: neither an EventBridge schedule nor SQS records")]
    UnknownEvent,
    #[error(transparent)]
    FanOut(#[from] connector_core::sync::FanOutError),
}

/// Handles one invocation: a schedule (fan-out) or an SQS batch (worker).
pub async fn handle(app: &App, event: Value, deadline: Instant) -> Result<Value, HandlerError> {
    if event.get("Records").is_some() {
        let event: SqsEvent =
            serde_json::from_value(event).map_err(|_| HandlerError::UnknownEvent)?;
        let response = handle_sqs(app, event, deadline).await;
        return Ok(serde_json::to_value(response).unwrap_or(Value::Null));
    }
    let scheduled = event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
        || event.get("source").and_then(Value::as_str) == Some("aws.events");
    if scheduled {
        let report = handle_schedule(app).await?;
        return Ok(serde_json::to_value(report).unwrap_or(Value::Null));
    }
    Err(HandlerError::UnknownEvent)
}

/// Schedule mode: one job per mailbox that wants one.
pub async fn handle_schedule(app: &App) -> Result<FanOutReport, HandlerError> {
    let report = fan_out_with(
        app.connections().as_ref(),
        app.tenants().as_ref(),
        app.worker
            .notifications
            .as_ref()
            .map(|link| link.store.as_ref()),
        app.queue().as_ref(),
        &app.worker.queue_url,
        SyncKind::Mail,
        app.clock().now(),
        app.fan_out,
    )
    .await?;
    app.summaries().fan_out(FUNCTION, SyncKind::Mail, &report);
    Ok(report)
}

/// Worker mode: every record through the skeleton; failures reported per record.
pub async fn handle_sqs(app: &App, event: SqsEvent, deadline: Instant) -> SqsBatchResponse {
    let outcomes: Vec<(String, bool)> = stream::iter(event.records)
        .map(|record| async move {
            let message_id = record.message_id.clone().unwrap_or_default();
            let span = info_span!("sqs_record", message_id = %message_id);
            let keep = async {
                let job: SyncJob = match record.body.as_deref().map(serde_json::from_str::<SyncJob>)
                {
                    Some(Ok(job)) => job,
                    _ => {
                        // Kept, so that after maxReceiveCount it lands in the DLQ for a person.
                        error!("the record is not a sync job");
                        return true;
                    }
                };
                let delivery = Delivery {
                    receipt_handle: record.receipt_handle.clone(),
                    receive_count: record
                        .attributes
                        .get("ApproximateReceiveCount")
                        .and_then(|count| count.parse().ok())
                        .unwrap_or(1),
                    deadline,
                };
                let outcome = app.worker.run_job(&app.work, &job, &delivery).await;
                if let JobOutcome::Retry { code } = &outcome {
                    warn!(code = %code, "the job will be retried");
                }
                outcome.keep_message()
            }
            .instrument(span)
            .await;
            (message_id, keep)
        })
        .buffer_unordered(RECORD_CONCURRENCY)
        .collect()
        .await;
    connector_core::sync::batch_response(outcomes)
}
