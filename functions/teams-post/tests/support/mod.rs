//! teams-post for real: its production wiring against moto (a fresh copy of template.yaml's
//! resources) and microsoft-sim in-process, a world whose ids match `events/teams-post/`,
//! users signed in through the sim's real authorization-code flow, and a driver that plays
//! Lambda's SQS event source over the real TeamsPostQueue: receive a batch, hand it to the
//! handler, delete what the handler did not report as failed, until the queue is empty.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use connector_core::adapters::dynamodb::{DynamoConnectionStore, DynamoTenantStore};
use connector_core::adapters::secrets::SecretsManagerVault;
use connector_core::adapters::teams_dynamodb::{DynamoIdempotencyStore, DynamoShareTargetStore};
use connector_core::adapters::teams_sqs::SqsTeamsQueues;
use connector_core::clock::SystemClock;
use connector_core::domain::{
    Connection, ConsentMode, FeatureBundle, ScopeSet, Tenant, TenantId, UserId, UserKey,
};
use connector_core::ports::{ConnectionStore as _, TenantStore as _, TokenVault as _};
use connector_core::secret::{RefreshToken, TokenRecord};
use connector_core::teams::{DeadLetter, TeamsQueues as _};
use microsoft_sim::{SimOptions, SimServer, World};
use serde_json::{Value, json};
use teams_post::config::TeamsPostConfig;
use teams_post::limiter::RateLimiter;
use teams_post::{BatchReport, Settings, TeamsPoster};

/// The tenant of `events/teams-post/`. Tests in one process share one moto, and user
/// secrets are named by tenant and user only (`office365/{tenantId}/{userId}`), so each
/// test that runs beside others takes a tenant of its own ([`Env::start`]).
pub const EVENTS_TENANT: &str = "3b7e2d4c-8a1f-4e6b-9c5d-7f0a2b4c6e81";
pub const CLIENT_ID: &str = "7e1a5c0d-2b3f-4a6e-9d8c-1f2e3d4c5b6a";
pub const CLIENT_SECRET: &str = "teams-post-sim-secret";
pub const REDIRECT_URI: &str = "http://localhost:8400/auth/callback";

pub const ADELE: &str = "a0de1e00-0000-4000-8000-00000000000a";
pub const ADELE_UPN: &str = "adele@contoso.com";
pub const MEGAN: &str = "b0e6a400-0000-4000-8000-00000000000b";
pub const MEGAN_UPN: &str = "megan@contoso.com";
pub const LEE: &str = "c1ee0000-0000-4000-8000-00000000000c";
pub const LEE_UPN: &str = "lee@contoso.com";
/// Connected with the mail bundle only: no Teams consent.
pub const BEN: &str = "d0be0000-0000-4000-8000-00000000000d";
pub const BEN_UPN: &str = "ben@contoso.com";

pub const SALES: &str = "5a1e5000-0000-4000-8000-000000000001";
pub const ENGINEERING: &str = "e6000000-0000-4000-8000-000000000002";
pub const GENERAL: &str = "19:sales-general@thread.tacv2";
pub const DEALS: &str = "19:sales-deals@thread.tacv2";
/// Private: Adele is in it, Megan is not.
pub const LEADERSHIP: &str = "19:sales-leadership@thread.tacv2";
/// In Engineering, which Adele does not belong to.
pub const BUILDS: &str = "19:eng-builds@thread.tacv2";
/// The one-on-one chat of Adele and Megan (ids sorted, as Teams builds them).
pub const ADELE_MEGAN_CHAT: &str =
    "19:a0de1e00-0000-4000-8000-00000000000a_b0e6a400-0000-4000-8000-00000000000b@unq.gbl.spaces";

/// The delegated scopes of the teams bundle, as signed in.
pub const TEAMS_SCOPES: &str = "openid profile email offline_access Team.ReadBasic.All Channel.ReadBasic.All ChannelMessage.Send Chat.Create ChatMessage.Send Chat.Read ChannelMessage.Read.All";

pub fn world(tenant: &str) -> World {
    let sales = |channels: Value| json!({"id": SALES, "displayName": "Sales", "description": "Sales team", "channels": channels});
    let general = json!({"id": GENERAL, "displayName": "General", "membershipType": "standard"});
    let deals = json!({"id": DEALS, "displayName": "Deals", "membershipType": "standard"});
    let leadership =
        json!({"id": LEADERSHIP, "displayName": "Leadership", "membershipType": "private"});
    let engineering = json!({"id": ENGINEERING, "displayName": "Engineering", "description": null,
        "channels": [{"id": BUILDS, "displayName": "Builds", "membershipType": "standard"}]});
    let json = json!({
        "apps": [{
            "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET, "redirectUris": [REDIRECT_URI],
            "displayName": "Connector",
            "permissions": ["User.Read", "Team.ReadBasic.All", "Channel.ReadBasic.All",
                            "ChannelMessage.Send", "Chat.Create", "ChatMessage.Send",
                            "Chat.Read", "ChannelMessage.Read.All"]
        }],
        "tenants": [{
            "id": tenant, "displayName": "Contoso", "verifiedDomains": ["contoso.com"],
            "userConsent": "allowed",
            "grants": [{"clientId": CLIENT_ID, "principal": "allUsers",
                        "scopes": ["User.Read", "Team.ReadBasic.All", "Channel.ReadBasic.All",
                                   "ChannelMessage.Send", "Chat.Create", "ChatMessage.Send",
                                   "Chat.Read", "ChannelMessage.Read.All"]}],
            "users": [
                {"id": ADELE, "userPrincipalName": ADELE_UPN, "mail": ADELE_UPN, "displayName": "Adele Vance",
                 "joinedTeams": [sales(json!([general, deals, leadership]))]},
                {"id": MEGAN, "userPrincipalName": MEGAN_UPN, "mail": MEGAN_UPN, "displayName": "Megan Bowen",
                 "joinedTeams": [sales(json!([general, deals])), engineering]},
                {"id": LEE, "userPrincipalName": LEE_UPN, "mail": LEE_UPN, "displayName": "Lee Gu"},
                {"id": BEN, "userPrincipalName": BEN_UPN, "mail": BEN_UPN, "displayName": "Ben Walters",
                 "joinedTeams": [sales(json!([general]))]}
            ]
        }]
    });
    World::from_json(&json.to_string()).expect("test world")
}

pub struct Env {
    pub tenant: String,
    pub stack: local_stack::TestStack,
    pub sim: SimServer,
    pub config: TeamsPostConfig,
    pub poster: TeamsPoster,
    pub sqs: aws_sdk_sqs::Client,
    pub queues: SqsTeamsQueues,
    pub idempotency: DynamoIdempotencyStore,
    pub targets: DynamoShareTargetStore,
    pub connections: DynamoConnectionStore,
    pub tenants: DynamoTenantStore,
    pub http: reqwest::Client,
}

impl Env {
    /// A stack and a sim for a tenant of the test's own.
    pub async fn start() -> Env {
        Self::start_for(&uuid::Uuid::new_v4().to_string(), Settings::default()).await
    }

    pub async fn start_for(tenant: &str, settings: Settings) -> Env {
        Self::start_with(tenant, settings, |_| {}).await
    }

    /// As [`Self::start_for`], with the configuration read from the template changed by
    /// `tweak` before the handler is wired.
    pub async fn start_with(
        tenant: &str,
        settings: Settings,
        tweak: impl FnOnce(&mut TeamsPostConfig),
    ) -> Env {
        let mut options = SimOptions::new(world(tenant));
        options.auto_approve = true;
        let sim = SimServer::start(options).await.expect("sim starts");
        let base = sim.base_url();
        let params = BTreeMap::from([
            ("EntraClientId".to_owned(), CLIENT_ID.to_owned()),
            (
                "EntraClientSecretValue".to_owned(),
                CLIENT_SECRET.to_owned(),
            ),
            ("LoginBaseUrl".to_owned(), base.clone()),
            ("GraphBaseUrl".to_owned(), base.clone()),
        ]);
        let stack = local_stack::test_stack_from(&local_stack::template_path(), &params)
            .await
            .expect("local stack");
        let mut config = TeamsPostConfig::from_lookup(|name| stack.env.get(name).cloned())
            .expect("the template's environment configures teams-post");
        tweak(&mut config);
        assert_eq!(config.core.microsoft.graph_base_url.as_str(), base);

        let dynamodb = aws_sdk_dynamodb::Client::new(&stack.sdk);
        let secrets = aws_sdk_secretsmanager::Client::new(&stack.sdk);
        let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
        let tables = &config.core.tables;
        let connections = DynamoConnectionStore::new(dynamodb.clone(), tables.connections.clone());
        let tenants = DynamoTenantStore::new(dynamodb.clone(), tables.tenants.clone());
        let vault = SecretsManagerVault::new(secrets);
        let now = time::OffsetDateTime::now_utc();

        let tenant_id = TenantId::parse(tenant).expect("guid");
        let mut record = Tenant::new(tenant_id.clone(), ConsentMode::Preauthorized, now);
        record.record_admin_consent(FeatureBundle::Teams, &ScopeSet::new(), None, now);
        record.confirm(now);
        tenants.put_tenant(&record).await.expect("tenant");
        let user_key =
            |user: &str| UserKey::new(tenant_id.clone(), UserId::parse(user).expect("guid"));

        // Adele's token response lists her Graph scopes without `offline_access` (Entra never
        // echoes it); Megan's has no `scope` at all (it is optional). Both must post: the
        // connector reads a token response by one rule, ScopeSet::granted_by_token_response.
        let control = reqwest::Client::new();
        for (user, upn, scope_mode) in [(ADELE, ADELE_UPN, "echo"), (MEGAN, MEGAN_UPN, "omit")] {
            let answer = control
                .post(format!("{base}/_sim/token-scope"))
                .json(&json!({ "mode": scope_mode }))
                .send()
                .await
                .expect("sim control");
            assert!(answer.status().is_success(), "token-scope mode");
            let tokens = microsoft_sim::identity::testing::sign_in(
                &microsoft_sim::identity::testing::SignIn {
                    base_url: &base,
                    tenant,
                    client_id: CLIENT_ID,
                    client_secret: Some(CLIENT_SECRET),
                    redirect_uri: REDIRECT_URI,
                    login: upn,
                    scopes: TEAMS_SCOPES,
                    consent_for_org: false,
                    ca_pem: None,
                },
            )
            .await
            .expect("sign-in through the sim");
            assert_eq!(tokens.scope.is_empty(), scope_mode == "omit");
            assert!(!tokens.scope.contains("offline_access"), "never echoed");
            let scopes = ScopeSet::granted_by_token_response(
                Some(&tokens.scope),
                &ScopeSet::parse(TEAMS_SCOPES),
                tokens.refresh_token.is_some(),
            );
            let key = user_key(user);
            vault
                .put_token(
                    &key,
                    &TokenRecord {
                        refresh_token: RefreshToken::new(
                            tokens
                                .refresh_token
                                .expect("offline_access gives a refresh token"),
                        ),
                        scopes: scopes.clone(),
                        updated_at: now,
                    },
                )
                .await
                .expect("token stored");
            connections
                .upsert_connection(&Connection::new_active(
                    key.tenant_id,
                    key.user_id,
                    upn,
                    scopes,
                    now,
                ))
                .await
                .expect("connection");
        }
        let ben = user_key(BEN);
        connections
            .upsert_connection(&Connection::new_active(
                ben.tenant_id,
                ben.user_id,
                BEN_UPN,
                FeatureBundle::Mail.scope_set(),
                now,
            ))
            .await
            .expect("connection");

        let (ports, mut wired) =
            teams_post::wiring::real_ports(&config, &stack.sdk, Arc::new(SystemClock))
                .expect("wiring");
        wired.max_retries = settings.max_retries;
        wired.requeue_after_receives = settings.requeue_after_receives;
        wired.deadline_margin = settings.deadline_margin;
        let poster = TeamsPoster::new(ports, wired, Arc::new(RateLimiter::new()));
        Env {
            tenant: tenant.to_owned(),
            queues: SqsTeamsQueues::new(
                sqs.clone(),
                config.core.queues.teams_post.clone(),
                config.dead_letter_queue_url.clone(),
            ),
            idempotency: DynamoIdempotencyStore::new(dynamodb.clone(), tables.idempotency.clone()),
            targets: DynamoShareTargetStore::new(dynamodb, tables.sync_state.clone()),
            connections,
            tenants,
            http: reqwest::Client::new(),
            config,
            poster,
            sqs,
            sim,
            stack,
        }
    }

    pub fn tenant_id(&self) -> TenantId {
        TenantId::parse(&self.tenant).expect("guid")
    }

    pub fn user_key(&self, user: &str) -> UserKey {
        UserKey::new(self.tenant_id(), UserId::parse(user).expect("guid"))
    }

    /// `user`'s connection as stored now.
    pub async fn connection(&self, user: &str) -> Connection {
        self.connections
            .get_connection(&self.user_key(user))
            .await
            .expect("read")
            .expect("connection")
    }

    /// A `post` message body for this tenant.
    pub fn post(&self, key: &str, user: &str, target: Value, html: &str) -> String {
        json!({"kind": "post", "idempotencyKey": key, "tenantId": self.tenant, "userId": user,
               "target": target, "html": html})
        .to_string()
    }

    pub fn refresh(&self, user: &str) -> String {
        json!({"kind": "refreshTargets", "tenantId": self.tenant, "userId": user}).to_string()
    }

    pub fn queue_url(&self) -> &str {
        &self.config.core.queues.teams_post
    }

    /// Sends bodies to TeamsPostQueue as a producer would.
    pub async fn send(&self, bodies: &[String]) {
        for body in bodies {
            self.sqs
                .send_message()
                .queue_url(self.queue_url())
                .message_body(body)
                .send()
                .await
                .expect("SendMessage");
        }
    }

    /// Receives one batch (up to 10) as Lambda's event source would hand it over.
    pub async fn receive(&self) -> SqsEvent {
        let output = self
            .sqs
            .receive_message()
            .queue_url(self.queue_url())
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .expect("ReceiveMessage");
        let records: Vec<Value> = output
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|message| {
                let attributes: HashMap<String, String> = message
                    .attributes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(name, value)| (name.as_str().to_owned(), value))
                    .collect();
                let message_attributes: HashMap<String, Value> = message
                    .message_attributes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(name, value)| {
                        (
                            name,
                            json!({"stringValue": value.string_value, "dataType": value.data_type,
                                   "stringListValues": [], "binaryListValues": []}),
                        )
                    })
                    .collect();
                json!({
                    "messageId": message.message_id,
                    "receiptHandle": message.receipt_handle,
                    "body": message.body,
                    "attributes": attributes,
                    "messageAttributes": message_attributes,
                    "md5OfBody": message.md5_of_body,
                    "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:TeamsPostQueue",
                    "awsRegion": "us-east-1"
                })
            })
            .collect();
        serde_json::from_value(json!({"Records": records})).expect("an SQS event")
    }

    /// Acknowledges what Lambda would: every record not reported as a batch item failure.
    pub async fn acknowledge(&self, event: &SqsEvent, report: &BatchReport) {
        let failed: Vec<String> = report
            .response()
            .batch_item_failures
            .into_iter()
            .map(|failure| failure.item_identifier)
            .collect();
        for record in &event.records {
            let id = record.message_id.clone().unwrap_or_default();
            if failed.contains(&id) {
                continue;
            }
            self.sqs
                .delete_message()
                .queue_url(self.queue_url())
                .receipt_handle(record.receipt_handle.clone().unwrap_or_default())
                .send()
                .await
                .expect("DeleteMessage");
        }
    }

    /// Messages on TeamsPostQueue: visible, in flight, delayed.
    pub async fn queued(&self) -> u64 {
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(self.queue_url())
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .expect("GetQueueAttributes")
            .attributes
            .unwrap_or_default();
        attributes
            .values()
            .filter_map(|value| value.parse::<u64>().ok())
            .sum()
    }

    /// Plays the event source until the queue is empty; returns every batch's report.
    pub async fn drain(&self, within: Duration) -> Vec<BatchReport> {
        let until = tokio::time::Instant::now() + within;
        let mut reports = Vec::new();
        loop {
            assert!(
                tokio::time::Instant::now() < until,
                "TeamsPostQueue not drained within {within:?}: {} left; outcomes so far: {:?}",
                self.queued().await,
                reports
                    .iter()
                    .flat_map(|r: &BatchReport| r.outcomes.iter().map(|(_, o)| o.label()))
                    .collect::<Vec<_>>()
            );
            let event = self.receive().await;
            if event.records.is_empty() {
                if self.queued().await == 0 {
                    return reports;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            let report = self.poster.process(&event, deadline).await;
            self.acknowledge(&event, &report).await;
            reports.push(report);
        }
    }

    pub async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.sim.base_url()));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("sim control API");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap_or(Value::Null)
    }

    /// Every message posted in the sim, oldest first.
    pub async fn sim_messages(&self) -> Vec<Value> {
        let listing = self
            .control(reqwest::Method::GET, "/_sim/teams/messages", None)
            .await;
        listing["value"]
            .as_array()
            .cloned()
            .or_else(|| listing.as_array().cloned())
            .unwrap_or_default()
    }

    pub async fn sim_chats(&self) -> Vec<Value> {
        let listing = self
            .control(reqwest::Method::GET, "/_sim/chats", None)
            .await;
        listing["value"]
            .as_array()
            .cloned()
            .or_else(|| listing.as_array().cloned())
            .unwrap_or_default()
    }

    pub async fn fault(&self, fault: Value) {
        self.control(reqwest::Method::POST, "/_sim/faults", Some(fault))
            .await;
    }

    /// Graph requests the sim saw.
    pub async fn sim_requests(&self) -> Vec<Value> {
        let listing = self
            .control(reqwest::Method::GET, "/_sim/requests", None)
            .await;
        listing["value"].as_array().cloned().unwrap_or_default()
    }

    pub async fn dead_letters(&self) -> Vec<DeadLetter> {
        self.queues.dead_letters(100).await.expect("DLQ listing")
    }
}

pub fn channel(team: &str, channel: &str) -> Value {
    json!({"type": "channel", "teamId": team, "channelId": channel})
}

pub fn chat(chat_id: &str) -> Value {
    json!({"type": "chat", "chatId": chat_id})
}

pub fn new_chat(members: &[&str], topic: Option<&str>) -> Value {
    let mut target = json!({"type": "newChat", "members": members});
    if let Some(topic) = topic {
        target["topic"] = json!(topic);
    }
    target
}

/// An `events/teams-post/<name>.json` file.
pub fn event_file(name: &str) -> SqsEvent {
    let path = local_stack::repo_root()
        .join("events/teams-post")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}
