//! MailSyncFunction: wiring only. Clients are built once per cold start; the handler is
//! `mail_sync::handle`.

use std::sync::Arc;

use connector_core::config::Config;
use connector_core::sync::LogSummarySink;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use mail_sync::MailSettings;
use serde_json::Value;

// One thread: Lambda gives this function a fraction of one vCPU (1,769 MB buys a whole
// one), so worker threads would only add wake-ups between them.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_current_span(false)
        .without_time()
        .init();

    let config = Config::from_env()?;
    let settings = MailSettings::from_lookup(|name| std::env::var(name).ok())?;
    let bucket = connector_core::config::bucket_name(
        &|name| std::env::var(name).ok(),
        connector_core::config::vars::MESSAGE_BODIES_BUCKET,
    )?;
    let aws = aws_config::load_from_env().await;
    // The 15-minute schedule's safety net for subscribed users.
    let fan_out = connector_core::sync::FanOutOptions {
        subscribed: connector_core::notifications::subscribed_polling(
            |name| std::env::var(name).ok(),
            std::time::Duration::from_secs(15 * 60),
        )?,
        ..Default::default()
    };
    let app = mail_sync::build_app(
        &config,
        settings,
        &bucket,
        &aws,
        Arc::new(LogSummarySink),
        fan_out,
    )?;
    let app = &app;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = connector_core::sync::deadline_from_epoch_ms(event.context.deadline);
        mail_sync::handle(app, event.payload, deadline)
            .await
            .map_err(Error::from)
    }))
    .await
}
