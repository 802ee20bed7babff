//! Lambda entry point: the EventBridge client built once per cold start, then the
//! DynamoDB stream handler (partial batch responses).

use std::sync::Arc;

use anyhow::Context as _;
use connector_core::adapters::s3::{S3BodyStore, s3_client};
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
    let bucket = connector_core::config::bucket_name(
        &|name| std::env::var(name).ok(),
        connector_core::config::vars::MESSAGE_BODIES_BUCKET,
    )
    .context("configuration")?;
    let aws = aws_config::load_from_env().await;
    let bodies = Arc::new(S3BodyStore::new(
        s3_client(
            aws_sdk_s3::config::Builder::from(&aws),
            aws.endpoint_url().is_some(),
        ),
        bucket,
    ));
    let publisher = Arc::new(
        Publisher::new(EventBridgeSink::new(
            aws_sdk_eventbridge::Client::new(&aws),
            bus,
        ))
        .with_bodies(bodies),
    );
    run(service_fn(move |event: LambdaEvent<Value>| {
        let publisher = publisher.clone();
        async move {
            let report = publisher.handle(&event.payload).await;
            tracing::info!(
                records = report.records,
                published = report.published,
                skipped = report.skipped,
                bodies_deleted = report.bodies_deleted,
                failed_from = report.failed_from.as_deref().unwrap_or(""),
                "batch done"
            );
            Ok::<Value, std::convert::Infallible>(report.response())
        }
    }))
    .await
}
