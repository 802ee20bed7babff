//! Lambda entry point: configuration and clients built once per cold start, then the
//! SQS handler (partial batch responses).

use std::sync::Arc;

use anyhow::Context as _;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use connector_core::clock::SystemClock;
use lambda_runtime::{LambdaEvent, run, service_fn};
use teams_post::config::TeamsPostConfig;
use teams_post::limiter::RateLimiter;
use teams_post::{TeamsPoster, wiring};

// One thread: Lambda gives this function a fraction of one vCPU (1,769 MB buys a whole
// one), so worker threads would only add wake-ups between them.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_current_span(true)
        .without_time()
        .init();

    let config = TeamsPostConfig::from_env().context("configuration")?;
    let aws = aws_config::load_from_env().await;
    let (ports, settings) =
        wiring::real_ports(&config, &aws, Arc::new(SystemClock)).context("clients")?;
    let poster = Arc::new(TeamsPoster::new(
        ports,
        settings,
        Arc::new(RateLimiter::new()),
    ));
    run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let poster = poster.clone();
        async move {
            let deadline = connector_core::sync::deadline_from_epoch_ms(event.context.deadline);
            Ok::<SqsBatchResponse, std::convert::Infallible>(
                poster.handle(&event.payload, deadline).await,
            )
        }
    }))
    .await
}
