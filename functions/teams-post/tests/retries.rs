//! How retries are settled, on the in-memory twins of the stores and queues (so each
//! visibility change and re-queued copy can be read back) with Graph from microsoft-sim:
//! a copy received too often is replaced by a fresh one carrying its retries, the retry
//! budget ends on the DLQ, a key held by a live invocation waits for it, no Graph call
//! starts at the deadline, and a team the user left meanwhile is not a share target.

mod support;

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use connector_core::adapters::memory::{
    MemoryConnectionStore, MemoryTenantStore, MemoryTokenVault, StaticClientSecret,
};
use connector_core::adapters::teams_memory::{
    MemoryIdempotencyStore, MemoryShareTargetStore, MemoryTeamsQueues,
};
use connector_core::clock::SystemClock;
use connector_core::config::BaseUrl;
use connector_core::domain::{Connection, ScopeSet};
use connector_core::graph::GraphClient;
use connector_core::oauth::{RefreshClient, TokenProvider, token_http_client};
use connector_core::ports::{ConnectionStore as _, TokenVault as _};
use connector_core::secret::{ClientSecret, RefreshToken, TokenRecord};
use connector_core::teams::idempotency::{payload_hash, record_id};
use connector_core::teams::{Claim, ClaimRequest, IdempotencyStore as _, TeamsQueues as _};
use microsoft_sim::{SimOptions, SimServer};
use serde_json::{Value, json};
use support::*;
use teams_post::graph::{GraphTeams, post_retry_policy};
use teams_post::limiter::RateLimiter;
use teams_post::{Outcome, Ports, Settings, TeamsPoster};
use tokio::time::Instant;

struct Memory {
    sim: SimServer,
    tenant: String,
    poster: TeamsPoster,
    idempotency: Arc<MemoryIdempotencyStore>,
    targets: Arc<MemoryShareTargetStore>,
    queues: Arc<MemoryTeamsQueues>,
}

impl Memory {
    async fn start() -> Memory {
        let tenant = uuid::Uuid::new_v4().to_string();
        let mut options = SimOptions::new(world(&tenant));
        options.auto_approve = true;
        let sim = SimServer::start(options).await.expect("sim");
        let base = BaseUrl::parse(&sim.base_url()).expect("url");
        let tokens =
            microsoft_sim::identity::testing::sign_in(&microsoft_sim::identity::testing::SignIn {
                base_url: base.as_str(),
                tenant: &tenant,
                client_id: CLIENT_ID,
                client_secret: Some(CLIENT_SECRET),
                redirect_uri: REDIRECT_URI,
                login: ADELE_UPN,
                scopes: TEAMS_SCOPES,
                consent_for_org: false,
                ca_pem: None,
            })
            .await
            .expect("sign-in");
        let now = time::OffsetDateTime::now_utc();
        let key = connector_core::domain::UserKey::new(
            tenant.parse().expect("guid"),
            ADELE.parse().expect("guid"),
        );
        let scopes = ScopeSet::granted_by_token_response(
            Some(&tokens.scope),
            &ScopeSet::new(),
            tokens.refresh_token.is_some(),
        );
        let vault = Arc::new(MemoryTokenVault::default());
        vault
            .put_token(
                &key,
                &TokenRecord {
                    refresh_token: RefreshToken::new(tokens.refresh_token.expect("rt")),
                    scopes: scopes.clone(),
                    updated_at: now,
                },
            )
            .await
            .expect("vault");
        let connections = Arc::new(MemoryConnectionStore::default());
        connections
            .upsert_connection(&Connection::new_active(
                key.tenant_id.clone(),
                key.user_id.clone(),
                ADELE_UPN,
                scopes,
                now,
            ))
            .await
            .expect("connection");
        let provider = Arc::new(TokenProvider::new(
            vault,
            Arc::new(StaticClientSecret(ClientSecret::new(CLIENT_SECRET))),
            RefreshClient::new(token_http_client().expect("http"), base.clone(), CLIENT_ID),
            Arc::new(SystemClock),
        ));
        let http = reqwest::Client::new();
        let graph = GraphTeams::new(
            Arc::new(GraphClient::new(http.clone(), &base).with_retry(post_retry_policy())),
            Arc::new(GraphClient::new(http, &base)),
            provider,
        );
        let idempotency = Arc::new(MemoryIdempotencyStore::default());
        let targets = Arc::new(MemoryShareTargetStore::default());
        let queues = Arc::new(MemoryTeamsQueues::default());
        let poster = TeamsPoster::new(
            Ports {
                connections,
                tenants: Arc::new(MemoryTenantStore::default()),
                idempotency: idempotency.clone(),
                targets: targets.clone(),
                queues: queues.clone(),
                graph: Arc::new(graph),
                clock: Arc::new(SystemClock),
            },
            Settings::default(),
            Arc::new(RateLimiter::new()),
        );
        Memory {
            sim,
            tenant,
            poster,
            idempotency,
            targets,
            queues,
        }
    }

    fn post(&self, key: &str, target: Value) -> String {
        json!({"kind": "post", "idempotencyKey": key, "tenantId": self.tenant, "userId": ADELE,
               "target": target, "html": "<p>hello</p>"})
        .to_string()
    }

    async fn fault(&self, fault: Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/_sim/faults", self.sim.base_url()))
            .json(&fault)
            .send()
            .await
            .expect("fault");
        assert!(response.status().is_success());
    }

    async fn posted(&self) -> usize {
        reqwest::Client::new()
            .get(format!("{}/_sim/teams/messages", self.sim.base_url()))
            .send()
            .await
            .expect("messages")
            .json::<Vec<Value>>()
            .await
            .expect("json")
            .len()
    }
}

/// One record as SQS delivers it: `receive_count`-th receive, `retries` from earlier copies.
fn event(message_id: &str, body: &str, receive_count: u32, retries: Option<u32>) -> SqsEvent {
    let mut attributes = json!({});
    if let Some(retries) = retries {
        attributes = json!({"teamsRetries": {"stringValue": retries.to_string(), "dataType": "Number",
                            "stringListValues": [], "binaryListValues": []}});
    }
    serde_json::from_value(json!({"Records": [{
        "messageId": message_id, "receiptHandle": format!("receipt-{message_id}"), "body": body,
        "attributes": {"ApproximateReceiveCount": receive_count.to_string()},
        "messageAttributes": attributes, "eventSource": "aws:sqs"
    }]}))
    .expect("event")
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

#[tokio::test]
async fn throttled_copies_are_hidden_then_replaced_then_given_up() {
    let env = Memory::start().await;
    env.fault(json!({"method": "POST", "pathPrefix": "/v1.0/teams/", "status": 429, "count": 3, "retryAfter": 7}))
        .await;
    let body = env.post("k-429", channel(SALES, GENERAL));

    // First receive: hidden for Retry-After, kept on the queue (a batch item failure).
    let report = env
        .poster
        .process(&event("m1", &body, 1, None), soon())
        .await;
    assert_eq!(
        report.outcomes[0].1,
        Outcome::RetryLater {
            code: "graph_throttled".into(),
            delay: Duration::from_secs(7)
        }
    );
    assert_eq!(report.response().batch_item_failures.len(), 1);
    assert_eq!(
        env.queues.hidden(),
        [("receipt-m1".to_owned(), Duration::from_secs(7))]
    );

    // Third receive of the same copy: replaced by a fresh delayed copy, this one acknowledged.
    let report = env
        .poster
        .process(&event("m1", &body, 3, None), soon())
        .await;
    assert!(matches!(report.outcomes[0].1, Outcome::Requeued { .. }));
    assert!(report.response().batch_item_failures.is_empty());
    let requeued = env.queues.requeued();
    assert_eq!(requeued.len(), 1);
    assert_eq!(requeued[0].body, body);
    assert_eq!(requeued[0].retries, 3);
    assert_eq!(requeued[0].delay, Duration::from_secs(7));

    // A copy that has used up the budget goes to the DLQ with the last reason.
    let report = env
        .poster
        .process(&event("m2", &body, 1, Some(20)), soon())
        .await;
    assert!(matches!(
        report.outcomes[0].1,
        Outcome::DeadLettered { code } if code.as_str() == "retries_exhausted"
    ));
    let dead = env.queues.dead_letters(10).await.expect("dead letters");
    let reason = dead[0].report.as_ref().expect("report");
    assert_eq!(reason.code, "retries_exhausted");
    assert!(
        reason.detail.contains("graph_throttled"),
        "{}",
        reason.detail
    );
    assert_eq!(reason.deliveries, 21);
    assert_eq!(env.posted().await, 0);

    // Graph healthy again: the next delivery posts.
    let report = env
        .poster
        .process(&event("m3", &body, 1, Some(3)), soon())
        .await;
    assert!(matches!(report.outcomes[0].1, Outcome::Posted { .. }));
    assert_eq!(env.posted().await, 1);
}

#[tokio::test]
async fn a_key_held_by_a_live_invocation_waits_for_it() {
    let env = Memory::start().await;
    let body = env.post("k-held", chat(ADELE_MEGAN_CHAT));
    let post: connector_core::messages::TeamsPost = serde_json::from_str(&body).expect("post");
    let now = time::OffsetDateTime::now_utc();
    let id = record_id(&post.tenant_id, "k-held");
    let hash = payload_hash(&post);
    let claim = env
        .idempotency
        .claim(&ClaimRequest {
            id: &id,
            payload_hash: &hash,
            now,
            in_progress_until: now + time::Duration::seconds(30),
            expires_at: now + time::Duration::days(1),
        })
        .await
        .expect("claim");
    assert!(matches!(claim, Claim::Acquired { .. }));

    let report = env
        .poster
        .process(&event("m1", &body, 1, None), soon())
        .await;
    let Outcome::RetryLater { code, delay } = &report.outcomes[0].1 else {
        panic!("{:?}", report.outcomes);
    };
    assert_eq!(code, "in_progress_elsewhere");
    assert!(
        *delay > Duration::from_secs(29) && *delay <= Duration::from_secs(31),
        "{delay:?}"
    );
    assert_eq!(env.queues.hidden()[0].1, *delay);
    assert_eq!(env.posted().await, 0);
}

#[tokio::test]
async fn nothing_starts_at_the_deadline() {
    let env = Memory::start().await;
    let body = env.post("k-late", channel(SALES, GENERAL));
    let report = env
        .poster
        .process(
            &event("m1", &body, 1, None),
            Instant::now() + Duration::from_secs(2),
        )
        .await;
    assert_eq!(
        report.outcomes[0].1,
        Outcome::RetryLater {
            code: "deadline".into(),
            delay: Duration::from_secs(1)
        }
    );
    assert_eq!(env.posted().await, 0);
    assert!(env.idempotency.records().is_empty(), "no key taken");
}

#[tokio::test]
async fn a_team_left_since_joined_teams_answered_is_not_a_target() {
    let env = Memory::start().await;
    env.fault(json!({"method": "GET", "pathPrefix": format!("/v1.0/teams/{SALES}/channels"), "status": 403, "count": 1}))
        .await;
    let body =
        json!({"kind": "refreshTargets", "tenantId": env.tenant, "userId": ADELE}).to_string();
    let report = env
        .poster
        .process(&event("m1", &body, 1, None), soon())
        .await;
    assert_eq!(
        report.outcomes[0].1,
        Outcome::TargetsRefreshed {
            teams: 0,
            channels: 0
        }
    );
    // Once Graph lists it again, it is back.
    let report = env
        .poster
        .process(&event("m2", &body, 1, None), soon())
        .await;
    assert_eq!(
        report.outcomes[0].1,
        Outcome::TargetsRefreshed {
            teams: 1,
            channels: 3
        }
    );
    let user = connector_core::domain::UserKey::new(
        env.tenant.parse().expect("guid"),
        ADELE.parse().expect("guid"),
    );
    use connector_core::teams::ShareTargetStore as _;
    let stored = env
        .targets
        .get_targets(&user)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(stored.teams[0].id, SALES);
}

#[tokio::test]
async fn a_key_whose_post_failed_can_carry_a_corrected_message() {
    let env = Memory::start().await;
    // Not a member of Engineering: dead-lettered, the key released.
    let wrong = env.post("k-fix", channel(ENGINEERING, BUILDS));
    let report = env
        .poster
        .process(&event("m1", &wrong, 1, None), soon())
        .await;
    assert!(matches!(
        report.outcomes[0].1,
        Outcome::DeadLettered { code } if code.as_str() == "not_a_member"
    ));
    // The producer corrects the target and sends it again with the same key: as with
    // Powertools (a failed attempt leaves no record behind), it is posted.
    let fixed = env.post("k-fix", channel(SALES, GENERAL));
    let report = env
        .poster
        .process(&event("m2", &fixed, 1, None), soon())
        .await;
    assert!(
        matches!(report.outcomes[0].1, Outcome::Posted { .. }),
        "{:?}",
        report.outcomes
    );
    // Now the key has produced a message: the first payload again is refused.
    let report = env
        .poster
        .process(&event("m3", &wrong, 1, None), soon())
        .await;
    assert!(matches!(
        report.outcomes[0].1,
        Outcome::DeadLettered { code } if code.as_str() == "idempotency_key_reused"
    ));
    assert_eq!(env.posted().await, 1);
}
