//! The real ports, built from the configuration once per cold start (by `main`, and by
//! the tests, which run the same wiring against moto and microsoft-sim).

use std::sync::Arc;

use aws_config::SdkConfig;
use connector_core::adapters::dynamodb::{DynamoConnectionStore, DynamoTenantStore};
use connector_core::adapters::secrets::SecretsManagerVault;
use connector_core::adapters::teams_dynamodb::{DynamoIdempotencyStore, DynamoShareTargetStore};
use connector_core::adapters::teams_sqs::SqsTeamsQueues;
use connector_core::clock::Clock;
use connector_core::credential::AppCredential;
use connector_core::graph::{GraphClient, graph_http_client};
use connector_core::oauth::{RefreshClient, TokenProvider, token_http_client};

use crate::config::TeamsPostConfig;
use crate::graph::{GraphTeams, post_retry_policy};
use crate::handler::{Ports, Settings};

/// The ports on DynamoDB, Secrets Manager, SQS and Graph, and the settings from `config`.
pub fn real_ports(
    config: &TeamsPostConfig,
    aws: &SdkConfig,
    clock: Arc<dyn Clock>,
) -> Result<(Ports, Settings), reqwest::Error> {
    let dynamodb = aws_sdk_dynamodb::Client::new(aws);
    let secrets = aws_sdk_secretsmanager::Client::new(aws);
    let sqs = aws_sdk_sqs::Client::new(aws);
    let tables = &config.core.tables;
    let microsoft = &config.core.microsoft;

    let tokens = Arc::new(TokenProvider::with_credential(
        Arc::new(SecretsManagerVault::new(secrets.clone())),
        Arc::new(AppCredential::from_config(
            microsoft,
            secrets,
            aws_sdk_kms::Client::new(aws),
        )),
        RefreshClient::new(
            token_http_client()?,
            microsoft.login_base_url.clone(),
            microsoft.client_id.clone(),
        ),
        clock.clone(),
    ));
    let http = graph_http_client()?;
    // Posts wait for their answer at most `post_timeout` (the shared client's 90 s would
    // outlast most invocations): a post cut off there is "sent, outcome unknown" and read
    // back on the next attempt.
    let post_http = reqwest::Client::builder()
        .no_gzip()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(config.post_timeout)
        .build()?;
    let posts = Arc::new(
        GraphClient::new(post_http, &microsoft.graph_base_url).with_retry(post_retry_policy()),
    );
    let reads = Arc::new(GraphClient::new(http, &microsoft.graph_base_url));

    let ports = Ports {
        connections: Arc::new(DynamoConnectionStore::new(
            dynamodb.clone(),
            tables.connections.clone(),
        )),
        tenants: Arc::new(DynamoTenantStore::new(
            dynamodb.clone(),
            tables.tenants.clone(),
        )),
        idempotency: Arc::new(DynamoIdempotencyStore::new(
            dynamodb.clone(),
            tables.idempotency.clone(),
        )),
        targets: Arc::new(DynamoShareTargetStore::new(
            dynamodb,
            tables.sync_state.clone(),
        )),
        queues: Arc::new(SqsTeamsQueues::new(
            sqs,
            config.core.queues.teams_post.clone(),
            config.dead_letter_queue_url.clone(),
        )),
        graph: Arc::new(GraphTeams::new(posts, reads, tokens)),
        clock,
    };
    let settings = Settings {
        idempotency_ttl: config.idempotency_ttl,
        concurrency: config.concurrency,
        ..Settings::default()
    };
    Ok((ports, settings))
}
