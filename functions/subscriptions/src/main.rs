//! SubscriptionsFunction: wiring only. The manager is built once per cold start; the
//! handler is `subscriptions::handle`.

use std::sync::Arc;

use anyhow::Context as _;
use connector_core::clock::SystemClock;
use connector_core::config::{Config, WebConfig};
use connector_core::notifications::manager::Manager;
use lambda_runtime::{LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_current_span(false)
        .without_time()
        .init();

    let config = Config::from_env().context("configuration")?;
    let web = WebConfig::from_env().context("configuration")?;
    let aws = aws_config::load_from_env().await;
    let manager = Arc::new(
        Manager::on_aws(&config, &web.public_base_url, &aws, Arc::new(SystemClock))
            .context("building the HTTP clients")?,
    );
    run(service_fn(move |event: LambdaEvent<Value>| {
        let manager = manager.clone();
        async move {
            let deadline = connector_core::sync::deadline_from_epoch_ms(event.context.deadline);
            subscriptions::handle(&manager, event.payload, deadline).await
        }
    }))
    .await
}
