//! Lambda entry point: the EventBridge client built once per cold start, then the
//! DynamoDB stream handler (partial batch responses).

use std::sync::Arc;

use anyhow::Context as _;
use event_publisher::{EventBridgeSink, Publisher};
use lambda_runtime::{LambdaEvent, run, service_fn};
use serde_json::Value;

// One thread: Lambda gives this function a fraction of one vCPU.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_current_span(true)
        .without_time()
        .init();

    let bus = std::env::var("EVENT_BUS_NAME")
        .ok()
        .filter(|b| !b.is_empty())
        .context("configuration: EVENT_BUS_NAME is not set")?;
    let aws = aws_config::load_from_env().await;
    let publisher = Arc::new(Publisher::new(EventBridgeSink::new(
        aws_sdk_eventbridge::Client::new(&aws),
        bus,
    )));
    run(service_fn(move |event: LambdaEvent<Value>| {
        let publisher = publisher.clone();
        async move {
            let report = publisher.handle(&event.payload).await;
            tracing::info!(
                records = report.records,
                published = report.published,
                skipped = report.skipped,
                failed_from = report.failed_from.as_deref().unwrap_or(""),
                "batch done"
            );
            Ok::<Value, std::convert::Infallible>(report.response())
        }
    }))
    .await
}
