//! Lambda entry point: configuration, clients and the app credential, built once per cold
//! start, then the handler.

use std::sync::Arc;

use anyhow::Context as _;
use connector_core::adapters::dynamodb::{
    DynamoActivityStore, DynamoConnectionStore, DynamoConsentMeetingStore, DynamoSubscriptionStore,
    DynamoSyncStateStore, DynamoTenantStore,
};
use connector_core::adapters::s3::{S3BodyStore, s3_client};
use connector_core::adapters::secrets::SecretsManagerVault;
use connector_core::adapters::sqs::SqsJobQueue;
use connector_core::adapters::teams_dynamodb::DynamoShareTargetStore;
use connector_core::credential::AppCredential;
use connector_core::graph::{GraphClient, graph_http_client};
use consent_callback::config::ConsentConfig;
use consent_callback::domains::DynamoTenantDomains;
use consent_callback::idtoken::JwksValidator;
use consent_callback::lambda::Handler;
use consent_callback::organization::GraphOrganizationDirectory;
use consent_callback::sessions::DynamoAuthSessionStore;
use consent_callback::token::{OAuthCodeExchange, http_client};
use consent_callback::websession::DynamoWebSessionStore;
use consent_callback::{App, Ports, SystemClock};

// One thread: Lambda gives this function a fraction of one vCPU (1,769 MB buys a whole
// one), so worker threads would only add wake-ups between them.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_current_span(false)
        .without_time()
        .init();

    let config = ConsentConfig::from_env().context("configuration")?;
    // The message bodies bucket: a user's disconnection from `/me` deletes their bodies.
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
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    let secrets = aws_sdk_secretsmanager::Client::new(&aws);
    let sqs = aws_sdk_sqs::Client::new(&aws);
    // The client secret is read on first use (and again when Microsoft refuses it: a
    // rotated secret needs no cold start), or each token request is signed by KMS.
    let credential = Arc::new(AppCredential::from_config(
        &config.core.microsoft,
        secrets.clone(),
        aws_sdk_kms::Client::new(&aws),
    ));
    let http = http_client().context("building the HTTP client")?;
    let microsoft = &config.core.microsoft;
    let tables = &config.core.tables;

    let queue: Arc<dyn connector_core::ports::JobQueue> = Arc::new(SqsJobQueue::new(sqs));
    let clock: Arc<dyn connector_core::clock::Clock> = Arc::new(SystemClock);
    // Change notifications: the endpoint Graph calls, and the subscriptions a user's
    // disconnection deletes.
    let webhook = Arc::new(connector_core::notifications::webhook::Webhook::new(
        Arc::new(DynamoSubscriptionStore::new(
            dynamodb.clone(),
            tables.subscriptions.clone(),
        )),
        queue.clone(),
        connector_core::notifications::webhook::WebhookQueues {
            mail_sync: config.core.queues.mail_sync.clone(),
            calendar_sync: config.core.queues.calendar_sync.clone(),
            subscriptions: config.core.queues.subscriptions.clone(),
        },
        clock.clone(),
    ));
    let subscriptions = Arc::new(
        connector_core::notifications::manager::Manager::on_aws(
            &config.core,
            &config.web.public_base_url,
            &aws,
            clock.clone(),
        )
        .context("building the HTTP clients")?,
    );
    let ports = Ports {
        webhook: Some(webhook),
        subscriptions: Some(subscriptions),
        consent_meetings: Some(Arc::new(DynamoConsentMeetingStore::new(
            dynamodb.clone(),
            tables.activities.clone(),
        ))),
        tenants: Arc::new(DynamoTenantStore::new(
            dynamodb.clone(),
            tables.tenants.clone(),
        )),
        domains: Arc::new(DynamoTenantDomains::new(
            dynamodb.clone(),
            tables.tenants.clone(),
        )),
        connections: Arc::new(DynamoConnectionStore::new(
            dynamodb.clone(),
            tables.connections.clone(),
        )),
        vault: Arc::new(SecretsManagerVault::new(secrets)),
        queue,
        sessions: Arc::new(DynamoAuthSessionStore::new(
            dynamodb.clone(),
            tables.auth_sessions.clone(),
        )),
        web_sessions: Arc::new(DynamoWebSessionStore::new(
            dynamodb.clone(),
            tables.auth_sessions.clone(),
        )),
        sync: Arc::new(DynamoSyncStateStore::new(
            dynamodb.clone(),
            tables.sync_state.clone(),
        )),
        activities: Arc::new(
            DynamoActivityStore::new(dynamodb.clone(), tables.activities.clone())
                .with_bodies(bodies),
        ),
        targets: Arc::new(DynamoShareTargetStore::new(
            dynamodb,
            tables.sync_state.clone(),
        )),
        exchange: Arc::new(OAuthCodeExchange::new(
            http.clone(),
            microsoft.login_base_url.clone(),
            microsoft.client_id.clone(),
            credential,
        )),
        id_tokens: Arc::new(JwksValidator::new(
            http.clone(),
            microsoft.login_base_url.clone(),
            microsoft.client_id.clone(),
        )),
        organization: Arc::new(GraphOrganizationDirectory::new(GraphClient::new(
            graph_http_client().context("building the Graph client")?,
            &microsoft.graph_base_url,
        ))),
        clock,
    };
    let app = Arc::new(App::new(config, ports));
    // Our handler in front of lambda_http's adapter: a query lambda_http cannot turn into a
    // URI gets our 400 page instead of a panic (see consent_callback::lambda).
    lambda_http::lambda_runtime::run(Handler::new(app)).await
}
