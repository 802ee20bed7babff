//! The test harness: microsoft-sim in-process, moto with every resource of template.yaml,
//! the real adapters, users connected through the sim's real sign-in (authorize with
//! auto-approve → token) and every log line the code under test writes, captured.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use connector_core::adapters::dynamodb::{
    DynamoActivityStore, DynamoConnectionStore, DynamoCrmIndex, DynamoSyncStateStore,
    DynamoTenantStore, Fence,
};
use connector_core::adapters::s3::{S3BodyStore, s3_client};
use connector_core::adapters::secrets::{SecretsManagerClientSecret, SecretsManagerVault};
use connector_core::adapters::sqs::SqsJobQueue;
use connector_core::clock::{Clock, OffsetClock};
use connector_core::config::{BaseUrl, Config};
use connector_core::domain::Feature;
use connector_core::domain::{
    Activity, ActivityContent, Connection, ConsentMode, CrmSnapshot, FeatureBundle, MailActivity,
    ScopeSet, SyncKey, SyncKind, SyncMeta, Tenant, TenantId, UserId, UserKey,
};
use connector_core::graph::{GraphClient, RetryPolicy, graph_http_client};
use connector_core::messages::{SyncJob, SyncReason};
use connector_core::oauth::{RefreshClient, TokenProvider, token_http_client};
use connector_core::ports::{
    ActivityStore, ConnectionStore, CrmIndex, SyncStateStore, TenantStore, TokenVault,
};
use connector_core::secret::{RefreshToken, TokenRecord};
use connector_core::sync::{
    Delivery, FanOutOptions, FanOutReport, JobOutcome, RunSummary, SummarySink, Worker,
    WorkerTimings, emf_line, fan_out_emf_line,
};
use local_stack::TestStack;
use mail_sync::{App, FUNCTION, MailSettings, MailWork};
use microsoft_sim::{SimOptions, SimServer, World};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::time::Instant;

pub const CLIENT_ID: &str = "4a7e2f10-93c1-4b8e-9d2a-6c5f0e1b7a33";
pub const CLIENT_SECRET: &str = "mail-sync-test-secret~value";
pub const REDIRECT_URI: &str = "http://localhost:8400/auth/callback";

// ---------------------------------------------------------------------------------------
// Captured logs

/// Every line the code under test logged (tracing JSON lines and summary/EMF lines).
pub fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| Mutex::new(Vec::new()))
}

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        logs()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber once: debug for everything we run, the sim excluded
/// (its own logs are not the connector's).
pub fn capture_logs() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let filter = tracing_subscriber::EnvFilter::new(
            "debug,microsoft_sim=off,tower_http=off,axum=off,axum_server=off",
        );
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(|| LogWriter)
            .try_init();
    });
}

pub fn captured_logs() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

/// Summaries into the captured logs (JSON line + EMF line), and kept for assertions.
#[derive(Default)]
pub struct CapturingSink {
    pub runs: Mutex<Vec<RunSummary>>,
    pub fan_outs: Mutex<Vec<FanOutReport>>,
}

impl SummarySink for CapturingSink {
    fn run(&self, summary: &RunSummary) {
        let mut out = LogWriter;
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string(summary).unwrap_or_default()
        );
        let _ = writeln!(out, "{}", emf_line(summary, 0));
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(summary.clone());
    }

    fn fan_out(&self, function: &'static str, _kind: SyncKind, report: &FanOutReport) {
        let mut out = LogWriter;
        let _ = writeln!(out, "{}", serde_json::to_string(report).unwrap_or_default());
        let _ = writeln!(out, "{}", fan_out_emf_line(function, report, 0));
        self.fan_outs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(*report);
    }
}

// ---------------------------------------------------------------------------------------
// Worlds

/// Graph's `emailAddress` recipient.
pub fn who(address: &str) -> Value {
    json!({"emailAddress": {"name": address.split('@').next().unwrap_or(address), "address": address}})
}

/// `receivedDateTime` `days` days ago (sim and real clocks agree at start).
pub fn days_ago(days: i64) -> String {
    let at = OffsetDateTime::now_utc() - time::Duration::days(days) - time::Duration::minutes(5);
    at.format(&time::format_description::well_known::Rfc3339)
        .expect("formats")
}

/// A message in Graph's JSON; `key` becomes its internetMessageId `<key@test>`.
pub fn message(key: &str, subject: &str, from: &str, to: &[&str], days: i64) -> Value {
    json!({
        "internetMessageId": format!("<{key}@test>"),
        "subject": subject,
        "from": who(from),
        "toRecipients": to.iter().map(|a| who(a)).collect::<Vec<_>>(),
        "receivedDateTime": days_ago(days),
        "sentDateTime": days_ago(days),
        "body": {"contentType": "html", "content": format!("<html><body><p>Body of {key}.</p></body></html>")},
        "isRead": false
    })
}

/// A world with one app, one tenant (verified `domain`), its users, and a grant of the
/// mail scopes to everyone.
pub fn world(tenant: &TenantId, domain: &str, users: Vec<Value>, generate: Vec<Value>) -> Value {
    json!({
        "apps": [{"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET, "redirectUris": [REDIRECT_URI],
                  "displayName": "Office 365 connector", "permissions": ["User.Read", "Mail.Read"]}],
        "tenants": [{
            "id": tenant.as_str(), "displayName": "Contoso", "verifiedDomains": [domain],
            "userConsent": "allowed",
            "grants": [{"clientId": CLIENT_ID, "principal": "allUsers",
                        "scopes": ["openid", "profile", "email", "offline_access", "User.Read", "Mail.Read"]}],
            "users": users,
            "generate": generate
        }]
    })
}

/// A user of the world.
pub fn user(id: &UserId, upn: &str, mailbox: &str, folders: Value) -> Value {
    json!({"id": id.as_str(), "userPrincipalName": upn, "mail": upn, "displayName": upn,
           "mailbox": mailbox, "mailFolders": folders})
}

pub fn new_tenant() -> TenantId {
    TenantId::parse(&uuid::Uuid::new_v4().to_string()).expect("guid")
}

pub fn new_user() -> UserId {
    UserId::parse(&uuid::Uuid::new_v4().to_string()).expect("guid")
}

/// A CRM snapshot file.
pub fn crm(tenant: &TenantId, file: Value) -> CrmSnapshot {
    let mut file = file;
    file["tenantId"] = json!(tenant.as_str());
    CrmSnapshot::from_json_slice(file.to_string().as_bytes()).expect("valid CRM file")
}

/// The CRM the sim's generated mailboxes of `seed` were drawn against, with one open
/// opportunity `opportunity_days` old (the window reaches back to it).
pub fn generated_crm(tenant: &TenantId, seed: u64, opportunity_days: i64) -> CrmSnapshot {
    let snapshot = microsoft_sim::generate::crm_snapshot(seed);
    let created = (OffsetDateTime::now_utc() - time::Duration::days(opportunity_days)).date();
    let accounts: Vec<Value> = snapshot
        .accounts
        .iter()
        .enumerate()
        .map(|(n, a)| json!({"id": format!("001{n:04}"), "name": a.name, "domains": [a.domain]}))
        .collect();
    let contacts: Vec<Value> = snapshot
        .accounts
        .iter()
        .enumerate()
        .flat_map(|(n, a)| {
            a.contacts.iter().enumerate().map(move |(p, c)| {
                json!({"id": format!("003{n:04}{p}"), "email": c.address, "accountId": format!("001{n:04}")})
            })
        })
        .collect();
    let leads: Vec<Value> = snapshot
        .leads
        .iter()
        .enumerate()
        .map(|(k, l)| json!({"id": format!("00Q{k:04}"), "email": l.address}))
        .collect();
    crm(
        tenant,
        json!({"accounts": accounts, "contacts": contacts, "leads": leads,
               "opportunities": [{"id": "0060001", "accountId": "0010000", "isClosed": false,
                                  "createdDate": format!("{created}")}]}),
    )
}

/// internetMessageIds the connector must store for a generated folder: CRM matches that
/// are ordinary mail (not meeting requests; drafts live in Drafts, which is not synced).
pub fn generated_expected(seed: u64, messages: u64, folder: &str, owner: &str) -> BTreeSet<String> {
    use microsoft_sim::generate::{GenerateParams, GeneratedKind, Owner, generate};
    let owner = Owner {
        display_name: owner.to_owned(),
        address: owner.to_owned(),
    };
    generate(&GenerateParams {
        seed,
        messages,
        crm_match_ratio: 0.2,
        folder: folder.to_owned(),
        now: OffsetDateTime::now_utc(),
    })
    .iter()
    .filter(|m| m.crm_match && m.kind == GeneratedKind::Mail)
    .map(|m| m.internet_message_id(&owner))
    .collect()
}

// ---------------------------------------------------------------------------------------
// Harness

pub struct Harness {
    pub sim: SimServer,
    pub stack: TestStack,
    pub config: Config,
    pub tenant: TenantId,
    pub clock: Arc<OffsetClock>,
    pub sink: Arc<CapturingSink>,
    pub app: App,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub connections: Arc<DynamoConnectionStore>,
    pub tenants: Arc<DynamoTenantStore>,
    pub state: Arc<DynamoSyncStateStore>,
    pub activities: Arc<DynamoActivityStore>,
    /// The stack's message bodies bucket (what `activities` keeps bodies in).
    pub bodies: Arc<S3BodyStore>,
    pub crm_index: Arc<DynamoCrmIndex>,
    pub vault: Arc<SecretsManagerVault>,
}

impl Harness {
    /// Starts the sim on `world` and provisions a fresh stack.
    pub async fn start(tenant: TenantId, world: Value) -> Result<Harness> {
        Self::start_with(tenant, world, MailSettings::default()).await
    }

    pub async fn start_with(
        tenant: TenantId,
        world: Value,
        settings: MailSettings,
    ) -> Result<Harness> {
        capture_logs();
        let world = World::from_json(&world.to_string())?;
        let mut options = SimOptions::new(world);
        options.auto_approve = true;
        let sim = SimServer::start(options).await?;
        let stack = local_stack::test_stack().await?;
        let base = sim.base_url();
        let mut env = stack.env.clone();
        env.insert("CLIENT_ID".into(), CLIENT_ID.into());
        env.insert("LOGIN_BASE_URL".into(), base.clone());
        env.insert("GRAPH_BASE_URL".into(), base.clone());
        let config = Config::from_lookup(|name| env.get(name).cloned())?;
        let dynamo = aws_sdk_dynamodb::Client::new(&stack.sdk);
        let secrets = aws_sdk_secretsmanager::Client::new(&stack.sdk);
        let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
        secrets
            .put_secret_value()
            .secret_id(&config.microsoft.client_secret_id)
            .secret_string(CLIENT_SECRET)
            .send()
            .await
            .context("storing the client secret")?;
        let tables = &config.tables;
        let connections = Arc::new(DynamoConnectionStore::new(
            dynamo.clone(),
            &tables.connections,
        ));
        let tenants = Arc::new(DynamoTenantStore::new(dynamo.clone(), &tables.tenants));
        // Fenced as build_app wires them (docs/fencing.md).
        let state = Arc::new(
            DynamoSyncStateStore::new(dynamo.clone(), &tables.sync_state)
                .with_fence(Fence::new(&tables.connections)),
        );
        let bodies = Arc::new(S3BodyStore::new(
            s3_client(aws_sdk_s3::config::Builder::from(&stack.sdk), true),
            stack.var("MESSAGE_BODIES_BUCKET"),
        ));
        let activities = Arc::new(
            DynamoActivityStore::new(dynamo.clone(), &tables.activities)
                .with_fence(Fence::new(&tables.connections))
                .with_bodies(bodies.clone()),
        );
        let crm_index = Arc::new(DynamoCrmIndex::new(dynamo.clone(), &tables.crm));
        let vault = Arc::new(SecretsManagerVault::new(secrets.clone()));
        let clock = Arc::new(OffsetClock::new());
        let sink = Arc::new(CapturingSink::default());
        let tokens = TokenProvider::new(
            vault.clone(),
            Arc::new(SecretsManagerClientSecret::new(
                secrets.clone(),
                &config.microsoft.client_secret_id,
            )),
            RefreshClient::new(
                token_http_client()?,
                config.microsoft.login_base_url.clone(),
                CLIENT_ID,
            ),
            clock.clone(),
        )
        .for_feature(Feature::Mail);
        let graph = GraphClient::new(
            graph_http_client()?,
            &BaseUrl::parse(&base).map_err(anyhow::Error::msg)?,
        )
        .with_retry(RetryPolicy {
            base_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            ..RetryPolicy::default()
        });
        let app = App {
            worker: Worker {
                function: FUNCTION,
                connections: connections.clone(),
                tenants: tenants.clone(),
                state: state.clone(),
                queue: Arc::new(SqsJobQueue::new(sqs.clone())),
                queue_url: config.queues.mail_sync.clone(),
                tokens: Arc::new(tokens),
                graph: Arc::new(graph),
                clock: clock.clone(),
                summaries: sink.clone(),
                timings: WorkerTimings::default(),
                notifications: None,
            },
            work: MailWork::new(activities.clone(), crm_index.clone(), settings),
            fan_out: FanOutOptions {
                page_size: 50,
                pages_in_flight: 4,
                ..FanOutOptions::default()
            },
        };
        let harness = Harness {
            sim,
            stack,
            config,
            tenant,
            clock,
            sink,
            app,
            dynamo,
            secrets,
            sqs,
            connections,
            tenants,
            state,
            activities,
            bodies,
            crm_index,
            vault,
        };
        Ok(harness)
    }

    pub fn base(&self) -> String {
        self.sim.base_url()
    }

    /// Records the tenant (pre-authorized for mail, with its verified domains).
    pub async fn add_tenant(&self, verified_domains: &[&str]) -> Result<()> {
        let now = self.clock.now();
        let mut tenant = Tenant::new(self.tenant.clone(), ConsentMode::Preauthorized, now);
        tenant.record_admin_consent(FeatureBundle::Mail, &ScopeSet::new(), None, now);
        tenant.confirm(now);
        tenant.verified_domains = verified_domains.iter().map(|d| (*d).to_owned()).collect();
        self.tenants.put_tenant(&tenant).await?;
        Ok(())
    }

    pub async fn import_crm(&self, snapshot: &CrmSnapshot) -> Result<()> {
        self.crm_index.replace_snapshot(snapshot).await?;
        Ok(())
    }

    /// Signs the user in through the sim (authorize with auto-approve, then the code
    /// exchange), stores the refresh token in the vault and the connection as active.
    pub async fn connect(&self, user: &UserId, upn: &str) -> Result<UserKey> {
        let base = self.base();
        let tokens =
            microsoft_sim::identity::testing::sign_in(&microsoft_sim::identity::testing::SignIn {
                base_url: &base,
                tenant: self.tenant.as_str(),
                client_id: CLIENT_ID,
                client_secret: Some(CLIENT_SECRET),
                redirect_uri: REDIRECT_URI,
                login: upn,
                scopes: "openid profile email offline_access https://graph.microsoft.com/Mail.Read",
                consent_for_org: false,
                ca_pem: None,
            })
            .await
            .with_context(|| format!("signing {upn} in"))?;
        let key = UserKey::new(self.tenant.clone(), user.clone());
        let now = self.clock.now();
        let scopes = ScopeSet::granted_by_token_response(
            Some(&tokens.scope),
            &ScopeSet::new(),
            tokens.refresh_token.is_some(),
        );
        self.vault
            .put_token(
                &key,
                &TokenRecord {
                    refresh_token: RefreshToken::new(
                        tokens.refresh_token.context("a refresh token")?,
                    ),
                    scopes: scopes.clone(),
                    updated_at: now,
                },
            )
            .await?;
        let mut connection =
            Connection::new_active(self.tenant.clone(), user.clone(), upn, scopes, now);
        connection.mail = Some(upn.to_owned());
        self.connections.upsert_connection(&connection).await?;
        Ok(key)
    }

    pub fn job(&self, key: &UserKey) -> SyncJob {
        SyncJob::new(
            SyncKind::Mail,
            key.tenant_id.clone(),
            key.user_id.clone(),
            SyncReason::Initial,
        )
    }

    pub fn delivery(&self) -> Delivery {
        Delivery {
            receipt_handle: None,
            receive_count: 1,
            deadline: Instant::now() + Duration::from_secs(14 * 60),
        }
    }

    /// The harness's worker with another sync-state store (fault injection).
    pub fn worker_with_state(&self, state: Arc<dyn SyncStateStore>) -> Worker {
        let w = &self.app.worker;
        Worker {
            function: w.function,
            connections: w.connections.clone(),
            tenants: w.tenants.clone(),
            state,
            queue: w.queue.clone(),
            queue_url: w.queue_url.clone(),
            tokens: w.tokens.clone(),
            graph: w.graph.clone(),
            clock: w.clock.clone(),
            summaries: w.summaries.clone(),
            timings: w.timings,
            notifications: None,
        }
    }

    /// One run of the worker path for the user.
    pub async fn run(&self, key: &UserKey) -> JobOutcome {
        self.app
            .worker
            .run_job(&self.app.work, &self.job(key), &self.delivery())
            .await
    }

    /// Runs until the run finishes (continuations included); returns the outcomes.
    pub async fn run_to_end(&self, key: &UserKey) -> Vec<JobOutcome> {
        let mut outcomes = Vec::new();
        for _ in 0..20 {
            let outcome = self.run(key).await;
            let again = outcome == JobOutcome::Continued;
            outcomes.push(outcome);
            if !again {
                break;
            }
        }
        outcomes
    }

    pub async fn stored(&self, key: &UserKey) -> Result<Vec<Activity>> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .activities
                .list_activities(key, 500, token.as_ref())
                .await?;
            out.extend(page.items);
            match page.next {
                Some(next) => token = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// The stored mail, each read whole (its body and every participant from the bodies
    /// bucket, as a reader gets it).
    pub async fn stored_mail(&self, key: &UserKey) -> Result<Vec<MailActivity>> {
        let mut out = Vec::new();
        for listed in self.stored(key).await? {
            let whole = self
                .activities
                .get_activity(key, &listed.activity_id)
                .await?
                .context("a listed activity reads back")?;
            if let ActivityContent::Mail(mail) = whole.content {
                out.push(mail);
            }
        }
        Ok(out)
    }

    /// The stored mail's internetMessageIds (from the listed items alone).
    pub async fn stored_ids(&self, key: &UserKey) -> Result<BTreeSet<String>> {
        Ok(self
            .stored(key)
            .await?
            .into_iter()
            .filter_map(|a| match a.content {
                ActivityContent::Mail(mail) => mail.internet_message_id,
                ActivityContent::Meeting(_) => None,
            })
            .collect())
    }

    /// How many body objects the user has in the bucket.
    pub async fn body_objects(&self, key: &UserKey) -> Result<u64> {
        use connector_core::ports::BodyStore;
        Ok(self
            .bodies
            .count_prefix(&connector_core::domain::user_body_prefix(key))
            .await?)
    }

    /// `stored` summed over every run summary of the user so far.
    pub fn stored_by_runs(&self, key: &UserKey) -> u64 {
        self.sink
            .runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|run| run.user_id == key.user_id.as_str() && run.kind == SyncKind::Mail)
            .map(|run| run.stored)
            .sum()
    }

    pub async fn meta(&self, key: &UserKey) -> Result<Option<SyncMeta>> {
        Ok(self
            .state
            .get_meta(&SyncKey::new(
                key.tenant_id.clone(),
                key.user_id.clone(),
                SyncKind::Mail,
            ))
            .await?)
    }

    pub async fn connection(&self, key: &UserKey) -> Result<Connection> {
        self.connections
            .get_connection(key)
            .await?
            .context("the connection exists")
    }

    /// A `/_sim/` control call.
    pub async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut request = reqwest::Client::new().request(method, format!("{}{path}", self.base()));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let value = response.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "{path}: {status} {value}");
        Ok(value)
    }

    /// Graph requests the sim logged since `since` (its sequence number).
    pub async fn requests_since(&self, since: u64) -> Result<Vec<Value>> {
        let log = self
            .control(
                reqwest::Method::GET,
                &format!("/_sim/requests?since={since}"),
                None,
            )
            .await?;
        Ok(log["value"].as_array().cloned().unwrap_or_default())
    }

    pub async fn next_request_seq(&self) -> Result<u64> {
        let all = self.requests_since(0).await?;
        Ok(all
            .last()
            .and_then(|r| r["seq"].as_u64())
            .map_or(0, |s| s + 1))
    }

    /// Moves the sim clock and the worker's clock forward together.
    pub async fn advance(&self, by: time::Duration) -> Result<()> {
        self.control(
            reqwest::Method::POST,
            "/_sim/clock/advance",
            Some(json!({"seconds": by.whole_seconds()})),
        )
        .await?;
        self.clock.advance(by);
        Ok(())
    }
}
