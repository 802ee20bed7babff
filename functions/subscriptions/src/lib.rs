//! subscriptions: SubscriptionsFunction's handler.
//!
//! - **Schedule mode** (EventBridge `rate(6 hours)`): the renewal pass
//!   ([`Manager::renewal_pass`]): every active connection's subscriptions are renewed when
//!   fewer than 60 hours remain, and removed when the user should not have one any more.
//! - **Worker mode** (SubscriptionQueue, partial batch failure reporting): each record is a
//!   [`SubscriptionJob`]: `ensure` (queued by a sync worker after a completed run that
//!   found the subscription missing or due), `renew` (`reauthorizationRequired`),
//!   `recreate` (`subscriptionRemoved`). Graph unavailable (throttled, 5xx, unreachable)
//!   fails the record alone, which SQS retries; a record that is not a job is kept, so it
//!   reaches the dead-letter queue after `maxReceiveCount` receives.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use connector_core::messages::SubscriptionJob;
use connector_core::notifications::manager::{Manager, ManagerError, Outcome, RenewalReport};
use futures::{StreamExt, stream};
use serde_json::Value;
use tokio::time::Instant;
use tracing::{Instrument, error, info, info_span, warn};

/// The function's name in logs.
pub const FUNCTION: &str = "subscriptions";

/// Records of one SQS batch handled at once (each is one user's subscription).
const RECORD_CONCURRENCY: usize = 10;

/// Connections per page of the renewal pass.
const PAGE_SIZE: u32 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("unrecognised event: neither an EventBridge schedule nor SQS records")]
    UnknownEvent,
    #[error("the renewal pass failed: {0}")]
    Renewal(#[from] ManagerError),
}

impl From<HandlerError> for lambda_runtime::Diagnostic {
    fn from(error: HandlerError) -> Self {
        let error_type = match &error {
            HandlerError::UnknownEvent => "UnknownEvent",
            HandlerError::Renewal(_) => "RenewalFailed",
        };
        lambda_runtime::Diagnostic {
            error_type: error_type.to_owned(),
            error_message: error.to_string(),
        }
    }
}

/// Time kept free before Lambda's deadline by the renewal pass: more than one page's
/// renewals take (1,000 connections, at most 2,000 due, 16 at a time).
const PASS_MARGIN: Duration = Duration::from_secs(50);

/// Handles one invocation: a schedule (renewal pass) or an SQS batch (jobs). `deadline`:
/// Lambda's.
pub async fn handle(
    manager: &Arc<Manager>,
    event: Value,
    deadline: Instant,
) -> Result<Value, HandlerError> {
    if event.get("Records").is_some() {
        let event: SqsEvent =
            serde_json::from_value(event).map_err(|_| HandlerError::UnknownEvent)?;
        let response = handle_jobs(manager, event).await;
        return Ok(serde_json::to_value(response).unwrap_or(Value::Null));
    }
    let scheduled = event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
        || event.get("source").and_then(Value::as_str) == Some("aws.events");
    if scheduled {
        let report = renew(manager, deadline.checked_sub(PASS_MARGIN)).await?;
        return Ok(serde_json::to_value(report).unwrap_or(Value::Null));
    }
    Err(HandlerError::UnknownEvent)
}

/// Schedule mode.
pub async fn renew(
    manager: &Manager,
    stop_at: Option<Instant>,
) -> Result<RenewalReport, HandlerError> {
    let report = manager.renewal_pass(PAGE_SIZE, stop_at).await?;
    info!(
        function = FUNCTION,
        complete = report.complete,
        scanned = report.scanned,
        renewed = report.renewed,
        recreated = report.recreated,
        removed = report.removed,
        failed = report.failed,
        "renewal pass"
    );
    Ok(report)
}

/// Worker mode: every record on its own; the failed ones reported for SQS to retry.
pub async fn handle_jobs(manager: &Arc<Manager>, event: SqsEvent) -> SqsBatchResponse {
    let outcomes: Vec<(String, bool)> = stream::iter(event.records)
        .map(|record| async move {
            let message_id = record.message_id.clone().unwrap_or_default();
            let span = info_span!("sqs_record", message_id = %message_id);
            let keep = async {
                let job = match record
                    .body
                    .as_deref()
                    .map(serde_json::from_str::<SubscriptionJob>)
                {
                    Some(Ok(job)) => job,
                    _ => {
                        error!("the record is not a subscription job");
                        return true;
                    }
                };
                let user = job.user();
                match manager.handle(&job).await {
                    Ok(outcome) => {
                        let label = match &outcome {
                            Outcome::Healthy => "healthy",
                            Outcome::Created { .. } => "created",
                            Outcome::Renewed { .. } => "renewed",
                            Outcome::Removed => "removed",
                            Outcome::NotWanted => "not_wanted",
                            Outcome::Waiting => "waiting",
                            Outcome::Failed { .. } => "failed",
                            Outcome::Stale => "stale",
                        };
                        info!(
                            tenant_id = %user.tenant_id,
                            user_id = %user.user_id,
                            kind = job.kind().as_str(),
                            outcome = label,
                            "subscription job"
                        );
                        false
                    }
                    Err(error) => {
                        warn!(
                            tenant_id = %user.tenant_id,
                            user_id = %user.user_id,
                            error = %error,
                            "subscription job failed; it will be retried"
                        );
                        true
                    }
                }
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
