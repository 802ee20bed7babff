//! MailSyncFunction: wiring only. Clients are built once per cold start; the handler is
//! `mail_sync::handle`.

use std::sync::Arc;

use connector_core::adapters::dynamodb::{
    DynamoActivityStore, DynamoConnectionStore, DynamoCrmIndex, DynamoSyncStateStore,
    DynamoTenantStore,
};
use connector_core::adapters::secrets::{SecretsManagerClientSecret, SecretsManagerVault};
use connector_core::adapters::sqs::SqsJobQueue;
use connector_core::clock::SystemClock;
use connector_core::config::Config;
use connector_core::domain::Scope;
use connector_core::graph::{GraphClient, graph_http_client};
use connector_core::oauth::{RefreshClient, TokenProvider, token_http_client};
use connector_core::sync::{FanOutOptions, LogSummarySink, Worker};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use mail_sync::{App, FUNCTION, MailSettings, MailWork};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_current_span(false)
        .without_time()
        .init();

    let config = Config::from_env()?;
    let settings = MailSettings::from_lookup(|name| std::env::var(name).ok())?;
    let aws = aws_config::load_from_env().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&aws);
    let secrets = aws_sdk_secretsmanager::Client::new(&aws);
    let tables = &config.tables;
    let clock = Arc::new(SystemClock);
    let tokens = TokenProvider::new(
        Arc::new(SecretsManagerVault::new(secrets.clone())),
        Arc::new(SecretsManagerClientSecret::new(
            secrets,
            &config.microsoft.client_secret_id,
        )),
        RefreshClient::new(
            token_http_client()?,
            config.microsoft.login_base_url.clone(),
            &config.microsoft.client_id,
        ),
        clock.clone(),
    )
    .with_request_scopes(&[Scope::MailRead]);
    let app = App {
        worker: Worker {
            function: FUNCTION,
            connections: Arc::new(DynamoConnectionStore::new(
                dynamo.clone(),
                &tables.connections,
            )),
            tenants: Arc::new(DynamoTenantStore::new(dynamo.clone(), &tables.tenants)),
            state: Arc::new(DynamoSyncStateStore::new(
                dynamo.clone(),
                &tables.sync_state,
            )),
            queue: Arc::new(SqsJobQueue::new(aws_sdk_sqs::Client::new(&aws))),
            queue_url: config.queues.mail_sync.clone(),
            tokens: Arc::new(tokens),
            graph: Arc::new(GraphClient::new(
                graph_http_client()?,
                &config.microsoft.graph_base_url,
            )),
            clock,
            summaries: Arc::new(LogSummarySink),
        },
        work: MailWork::new(
            Arc::new(DynamoActivityStore::new(dynamo.clone(), &tables.activities)),
            Arc::new(DynamoCrmIndex::new(dynamo, &tables.crm)),
            settings,
        ),
        fan_out: FanOutOptions::default(),
    };
    let app = &app;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = mail_sync::deadline_instant(event.context.deadline);
        mail_sync::handle(app, event.payload, deadline)
            .await
            .map_err(Error::from)
    }))
    .await
}
