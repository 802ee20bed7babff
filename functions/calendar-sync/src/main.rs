//! Lambda entry point: configuration and the clients, built once per cold start; then the
//! handler.

use std::sync::Arc;

use anyhow::Context as _;
use calendar_sync::CalendarSync;
use connector_core::clock::SystemClock;
use connector_core::config::Config;
use connector_core::sync::LogSummarySink;
use lambda_runtime::{LambdaEvent, run, service_fn};
use serde_json::Value;

// One thread: Lambda gives this function a fraction of one vCPU (1,769 MB buys a whole
// one), so worker threads would only add wake-ups between them.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_current_span(false)
        .without_time()
        .init();

    let config = Config::from_env().context("configuration")?;
    let aws = aws_config::load_from_env().await;
    let mut app = CalendarSync::wire(
        &config,
        &aws,
        Arc::new(SystemClock),
        Arc::new(LogSummarySink),
    )
    .context("building the HTTP clients")?;
    // The hourly schedule's safety net for subscribed users.
    app.fan_out.subscribed = connector_core::notifications::subscribed_polling(
        |name| std::env::var(name).ok(),
        std::time::Duration::from_secs(3600),
    )
    .map_err(anyhow::Error::msg)?;
    let app = Arc::new(app);
    run(service_fn(move |event: LambdaEvent<Value>| {
        let app = app.clone();
        async move {
            let deadline = connector_core::sync::deadline_from_epoch_ms(event.context.deadline);
            app.handle(event.payload, deadline).await
        }
    }))
    .await
}
