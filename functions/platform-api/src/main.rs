//! Lambda entry point: configuration and clients, built once per cold start, then the
//! handler.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use connector_core::adapters::dynamodb::{
    DynamoActivityStore, DynamoConnectionStore, DynamoConsentMeetingStore, DynamoSyncStateStore,
    DynamoTenantStore,
};
use connector_core::adapters::s3::{S3BodyStore, s3_client};
use connector_core::adapters::secrets::SecretsManagerVault;
use connector_core::adapters::teams_dynamodb::DynamoShareTargetStore;
use connector_core::config::{Tables, bucket_name, vars};
use platform_api::lambda::Handler;
use platform_api::{App, Ports, SystemClock};

/// A disconnection waits this long for a running sync's lease, within the function's 30 s
/// timeout; past it the answer is 409 `sync_running` and calling again finishes the job.
const LEASE_WAIT: Duration = Duration::from_secs(15);

// One thread: Lambda gives this function a fraction of one vCPU.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_current_span(false)
        .without_time()
        .init();

    let env = |name: &str| std::env::var(name).ok();
    let tables = Tables::from_lookup(env).context("configuration")?;
    let bucket = bucket_name(&env, vars::MESSAGE_BODIES_BUCKET).context("configuration")?;
    let aws = aws_config::load_from_env().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    let bodies = Arc::new(S3BodyStore::new(
        s3_client(
            aws_sdk_s3::config::Builder::from(&aws),
            aws.endpoint_url().is_some(),
        ),
        bucket,
    ));
    let public_base_url = connector_core::config::WebConfig::from_env()
        .context("configuration")?
        .public_base_url;
    let ports = Ports {
        consent_meetings: Some((
            Arc::new(DynamoConsentMeetingStore::new(
                dynamodb.clone(),
                &tables.activities,
            )),
            public_base_url.as_str().to_owned(),
        )),
        tenants: Arc::new(DynamoTenantStore::new(dynamodb.clone(), &tables.tenants)),
        connections: Arc::new(DynamoConnectionStore::new(
            dynamodb.clone(),
            &tables.connections,
        )),
        sync: Arc::new(DynamoSyncStateStore::new(
            dynamodb.clone(),
            &tables.sync_state,
        )),
        activities: Arc::new(
            DynamoActivityStore::new(dynamodb.clone(), &tables.activities)
                .with_bodies(bodies.clone()),
        ),
        bodies,
        targets: Arc::new(DynamoShareTargetStore::new(dynamodb, &tables.sync_state)),
        vault: Arc::new(SecretsManagerVault::new(
            aws_sdk_secretsmanager::Client::new(&aws),
        )),
        clock: Arc::new(SystemClock),
        lease_wait: LEASE_WAIT,
        // A disconnection deletes the user's change-notification subscriptions at Graph.
        subscriptions: Some(Arc::new(
            connector_core::notifications::manager::Manager::on_aws(
                &connector_core::config::Config::from_env().context("configuration")?,
                &public_base_url,
                &aws,
                Arc::new(SystemClock),
            )
            .context("building the HTTP clients")?,
        )),
    };
    lambda_http::lambda_runtime::run(Handler::new(Arc::new(App::new(ports)))).await
}
