//! Lambda entry point: configuration, AWS and HTTP clients, the token provider and the Graph
//! client, built once per cold start; then the handler.

use std::sync::Arc;

use anyhow::Context as _;
use calendar_sync::{CalendarSync, CalendarWork, deadline_instant};
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
use connector_core::sync::{LogSummarySink, Worker};
use lambda_runtime::{LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_current_span(false)
        .without_time()
        .init();

    let config = Config::from_env().context("configuration")?;
    let aws = aws_config::load_from_env().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    let secrets = aws_sdk_secretsmanager::Client::new(&aws);
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let tables = &config.tables;
    let microsoft = &config.microsoft;
    let clock = Arc::new(SystemClock);

    let tokens = TokenProvider::new(
        Arc::new(SecretsManagerVault::new(secrets.clone())),
        Arc::new(SecretsManagerClientSecret::new(
            secrets,
            microsoft.client_secret_id.clone(),
        )),
        RefreshClient::new(
            token_http_client().context("building the token HTTP client")?,
            microsoft.login_base_url.clone(),
            microsoft.client_id.clone(),
        ),
        clock.clone(),
    )
    // Calendar scopes only: withdrawing another feature must not fail calendar refreshes.
    .with_request_scopes(&[Scope::CalendarsReadWrite]);
    let graph = GraphClient::new(
        graph_http_client().context("building the Graph HTTP client")?,
        &microsoft.graph_base_url,
    );
    let worker = Worker {
        function: calendar_sync::FUNCTION,
        connections: Arc::new(DynamoConnectionStore::new(
            dynamodb.clone(),
            tables.connections.clone(),
        )),
        tenants: Arc::new(DynamoTenantStore::new(
            dynamodb.clone(),
            tables.tenants.clone(),
        )),
        state: Arc::new(DynamoSyncStateStore::new(
            dynamodb.clone(),
            tables.sync_state.clone(),
        )),
        queue: Arc::new(SqsJobQueue::new(sqs)),
        queue_url: config.queues.calendar_sync.clone(),
        tokens: Arc::new(tokens),
        graph: Arc::new(graph),
        clock,
        summaries: Arc::new(LogSummarySink),
    };
    let work = CalendarWork::new(
        Arc::new(DynamoActivityStore::new(
            dynamodb.clone(),
            tables.activities.clone(),
        )),
        Arc::new(DynamoCrmIndex::new(dynamodb, tables.crm.clone())),
    );
    let app = Arc::new(CalendarSync::new(Arc::new(worker), Arc::new(work)));
    run(service_fn(move |event: LambdaEvent<Value>| {
        let app = app.clone();
        async move {
            let deadline = deadline_instant(event.context.deadline);
            app.handle(event.payload, deadline).await
        }
    }))
    .await
}
