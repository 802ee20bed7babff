//! The test harness: microsoft-sim in-process, moto with every resource of template.yaml,
//! the real adapters, a user connected through the sim's real sign-in (authorize with
//! auto-approve → token), and every log line the code under test writes, captured.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use calendar_sync::{CalendarOptions, CalendarSync, CalendarWork, ConsentLinker, FUNCTION};
use connector_core::adapters::dynamodb::{
    DynamoActivityStore, DynamoConnectionStore, DynamoConsentMeetingStore, DynamoCrmIndex,
    DynamoSyncStateStore, DynamoTenantStore,
};
use connector_core::adapters::secrets::{SecretsManagerClientSecret, SecretsManagerVault};
use connector_core::adapters::sqs::SqsJobQueue;
use connector_core::calendar::CALENDAR_CURSOR;
use connector_core::clock::{Clock, OffsetClock};
use connector_core::config::{BaseUrl, Config};
use connector_core::domain::{
    Activity, ActivityContent, Connection, ConsentMode, CrmSnapshot, Feature, FeatureBundle,
    FolderCursor, MeetingActivity, ScopeSet, SyncKey, SyncKind, SyncMeta, Tenant, TenantId, UserId,
    UserKey, UserSwitches,
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
use microsoft_sim::{SimOptions, SimServer, World};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::time::Instant;

pub const CLIENT_ID: &str = "6d2b9c41-0f7e-4a35-b1c8-2e9d7a4f5c60";
pub const CLIENT_SECRET: &str = "calendar-sync-test~secret";
pub const REDIRECT_URI: &str = "http://localhost:8410/auth/callback";
pub const DOMAIN: &str = "contoso.com";
/// The deployment's PUBLIC_BASE_URL (Explicit Consent Mode's placeholder and links).
pub const PUBLIC_BASE_URL: &str = "https://connector.example";

// ---------------------------------------------------------------------------------------
// Captured logs

/// Every line the code under test logged (tracing JSON lines, summary and EMF lines).
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

/// Installs the capturing subscriber once, at trace level for our code (the sim's own
/// logs are not the connector's).
pub fn capture_logs() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let filter = tracing_subscriber::EnvFilter::new(
            "trace,microsoft_sim=off,tower_http=off,axum=off,hyper=off,hyper_util=off,h2=off,\
             aws_smithy_runtime=off,aws_smithy_runtime_api=off,aws_sdk_dynamodb=off,\
             aws_sdk_sqs=off,aws_sdk_secretsmanager=off,aws_config=off,rustls=off,reqwest=off",
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

impl CapturingSink {
    pub fn last_run(&self) -> RunSummary {
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .cloned()
            .expect("a run summary")
    }
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

/// `{"dateTime": ..., "timeZone": "UTC"}`.
pub fn utc(at: OffsetDateTime) -> Value {
    json!({"dateTime": graph_time(at), "timeZone": "UTC"})
}

/// `2026-12-09T20:30:00` (Graph's dateTime without fraction).
pub fn graph_time(at: OffsetDateTime) -> String {
    at.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]"
    ))
    .expect("formats")
}

/// Midnight UTC `days` days after `now`'s date, plus `hours`.
pub fn day(now: OffsetDateTime, days: i64, hours: i64) -> OffsetDateTime {
    now.date().midnight().assume_utc() + time::Duration::days(days) + time::Duration::hours(hours)
}

/// Graph's `emailAddress` recipient.
pub fn who(address: &str) -> Value {
    json!({"emailAddress": {"name": display(address), "address": address}})
}

fn display(address: &str) -> String {
    address
        .split('@')
        .next()
        .unwrap_or(address)
        .replace('.', " ")
}

/// An attendee with its type and response.
pub fn attendee(address: &str, kind: &str, response: &str) -> Value {
    json!({"type": kind, "status": {"response": response, "time": "2026-01-05T10:00:00Z"},
           "emailAddress": {"name": display(address), "address": address}})
}

/// A single meeting of `hours` from `start`.
pub fn meeting(
    subject: &str,
    start: OffsetDateTime,
    minutes: i64,
    organizer: &str,
    attendees: Vec<Value>,
) -> Value {
    json!({
        "subject": subject,
        "body": {"contentType": "html", "content": format!("<p>Agenda for {subject}</p>")},
        "start": utc(start),
        "end": utc(start + time::Duration::minutes(minutes)),
        "organizer": who(organizer),
        "attendees": attendees,
    })
}

/// A world with one app, one tenant (verified `contoso.com`) whose users have all
/// granted the calendar scopes, and `users`.
pub fn world(tenant: &TenantId, users: Vec<Value>) -> Value {
    json!({
        "apps": [{"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET, "redirectUris": [REDIRECT_URI],
                  "displayName": "Office 365 connector", "permissions": ["User.Read", "Calendars.ReadWrite", "OnlineMeetings.ReadWrite"]}],
        "tenants": [{
            "id": tenant.as_str(), "displayName": "Contoso", "verifiedDomains": [DOMAIN],
            "userConsent": "allowed",
            "grants": [{"clientId": CLIENT_ID, "principal": "allUsers",
                        "scopes": ["openid", "profile", "email", "offline_access", "User.Read", "Calendars.ReadWrite", "OnlineMeetings.ReadWrite"]}],
            "users": users
        }]
    })
}

/// A user of the world with a primary calendar.
pub fn user(id: &UserId, upn: &str, events: Vec<Value>) -> Value {
    json!({"id": id.as_str(), "userPrincipalName": upn, "mail": upn, "displayName": display(upn),
           "mailbox": "exchangeOnline", "events": events})
}

pub fn new_tenant() -> TenantId {
    TenantId::parse(&uuid::Uuid::new_v4().to_string()).expect("guid")
}

pub fn new_user() -> UserId {
    UserId::parse(&uuid::Uuid::new_v4().to_string()).expect("guid")
}

/// The CRM of these tests: account Acme (`acme.com`), contact Jane at Globex (whose domain
/// is no account), lead Bob at a free-mail address.
pub fn crm(tenant: &TenantId) -> CrmSnapshot {
    let file = json!({
        "tenantId": tenant.as_str(),
        "accounts": [{"id": "001A", "name": "Acme", "domains": ["acme.com"]}],
        "contacts": [{"id": "003G", "email": "jane@globex.com"}],
        "leads": [{"id": "00Q1", "email": "bob.lead@gmail.com", "company": "Initech"}],
        "opportunities": []
    });
    CrmSnapshot::from_json_slice(file.to_string().as_bytes()).expect("valid CRM file")
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
    pub app: CalendarSync,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub connections: Arc<DynamoConnectionStore>,
    pub tenants: Arc<DynamoTenantStore>,
    pub state: Arc<DynamoSyncStateStore>,
    pub activities: Arc<DynamoActivityStore>,
    pub crm_index: Arc<DynamoCrmIndex>,
    pub vault: Arc<SecretsManagerVault>,
    /// Explicit Consent Mode's meetings (wired as main.rs wires them).
    pub consent: Arc<DynamoConsentMeetingStore>,
}

/// How the harness builds the worker (tests swap stores to inject crashes).
#[derive(Default)]
pub struct Setup {
    pub options: CalendarOptions,
    pub state: Option<Arc<dyn SyncStateStore>>,
    pub activities: Option<Arc<dyn ActivityStore>>,
}

impl Harness {
    /// Starts the sim on `world` and provisions a fresh stack.
    pub async fn start(tenant: TenantId, world: Value) -> Result<Harness> {
        Self::start_with(tenant, world, |_| Setup::default()).await
    }

    /// As [`Harness::start`]; `setup` gets the real stores and may wrap them.
    pub async fn start_with(
        tenant: TenantId,
        world: Value,
        setup: impl FnOnce(&Stores) -> Setup,
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
        let stores = Stores {
            state: Arc::new(DynamoSyncStateStore::new(
                dynamo.clone(),
                &tables.sync_state,
            )),
            activities: Arc::new(DynamoActivityStore::new(dynamo.clone(), &tables.activities)),
        };
        let setup = setup(&stores);
        let connections = Arc::new(DynamoConnectionStore::new(
            dynamo.clone(),
            &tables.connections,
        ));
        let tenants = Arc::new(DynamoTenantStore::new(dynamo.clone(), &tables.tenants));
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
        .for_feature(Feature::Calendar);
        let graph = GraphClient::new(
            graph_http_client()?,
            &BaseUrl::parse(&base).map_err(anyhow::Error::msg)?,
        )
        .with_retry(RetryPolicy {
            base_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            ..RetryPolicy::default()
        });
        let worker = Worker {
            function: FUNCTION,
            connections: connections.clone(),
            tenants: tenants.clone(),
            state: setup.state.clone().unwrap_or_else(|| stores.state.clone()),
            queue: Arc::new(SqsJobQueue::new(sqs.clone())),
            queue_url: config.queues.calendar_sync.clone(),
            tokens: Arc::new(tokens),
            graph: Arc::new(graph),
            clock: clock.clone(),
            summaries: sink.clone(),
            timings: WorkerTimings::default(),
            notifications: None,
        };
        let work = CalendarWork::new(
            setup
                .activities
                .clone()
                .unwrap_or_else(|| stores.activities.clone()),
            crm_index.clone(),
        )
        .with_options(setup.options);
        let consent = Arc::new(DynamoConsentMeetingStore::new(
            dynamo.clone(),
            &tables.activities,
        ));
        let work = work.with_consent(ConsentLinker {
            store: consent.clone(),
            public_base_url: PUBLIC_BASE_URL.to_owned(),
        });
        let mut app = CalendarSync::new(Arc::new(worker), Arc::new(work));
        app.consent = Some(consent.clone());
        app.fan_out = FanOutOptions {
            page_size: 50,
            pages_in_flight: 4,
            ..FanOutOptions::default()
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
            state: stores.state,
            activities: stores.activities,
            crm_index,
            vault,
            consent,
        };
        harness.add_tenant().await?;
        harness
            .crm_index
            .replace_snapshot(&crm(&harness.tenant))
            .await?;
        Ok(harness)
    }

    pub fn base(&self) -> String {
        self.sim.base_url()
    }

    /// The sim's now (real time plus its offset; the worker clock moves with it).
    pub fn now(&self) -> OffsetDateTime {
        self.sim.sim().now()
    }

    /// Records the tenant: pre-authorized for calendar, verified `contoso.com`.
    async fn add_tenant(&self) -> Result<()> {
        let now = self.clock.now();
        let mut tenant = Tenant::new(self.tenant.clone(), ConsentMode::Preauthorized, now);
        tenant.record_admin_consent(FeatureBundle::Calendar, &ScopeSet::new(), None, now);
        tenant.confirm(now);
        tenant.verified_domains = [DOMAIN.to_owned()].into_iter().collect();
        self.tenants.put_tenant(&tenant).await?;
        Ok(())
    }

    /// Signs the user in through the sim (authorize with auto-approve, then the code
    /// exchange), stores the refresh token in the vault and the connection as active.
    pub async fn connect(&self, user: &UserId, upn: &str) -> Result<UserKey> {
        self.connect_with(
            user,
            upn,
            "openid profile email offline_access https://graph.microsoft.com/Calendars.ReadWrite",
        )
        .await
    }

    /// As [`Harness::connect`], asking for `scopes`.
    pub async fn connect_with(&self, user: &UserId, upn: &str, scopes: &str) -> Result<UserKey> {
        let base = self.base();
        let tokens =
            microsoft_sim::identity::testing::sign_in(&microsoft_sim::identity::testing::SignIn {
                base_url: &base,
                tenant: self.tenant.as_str(),
                client_id: CLIENT_ID,
                client_secret: Some(CLIENT_SECRET),
                redirect_uri: REDIRECT_URI,
                login: upn,
                scopes,
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

    pub async fn set_switches(&self, key: &UserKey, switches: UserSwitches) -> Result<()> {
        self.connections
            .set_switches(key, switches, self.clock.now())
            .await?;
        Ok(())
    }

    pub fn sync_key(key: &UserKey) -> SyncKey {
        SyncKey::new(
            key.tenant_id.clone(),
            key.user_id.clone(),
            SyncKind::Calendar,
        )
    }

    pub fn job(&self, key: &UserKey) -> SyncJob {
        SyncJob::new(
            SyncKind::Calendar,
            key.tenant_id.clone(),
            key.user_id.clone(),
            SyncReason::Scheduled,
        )
    }

    pub fn delivery(&self) -> Delivery {
        Delivery {
            receipt_handle: None,
            receive_count: 1,
            deadline: Instant::now() + Duration::from_secs(14 * 60),
        }
    }

    /// One run of the worker path for the user.
    pub async fn run(&self, key: &UserKey) -> JobOutcome {
        self.app
            .worker
            .run_job(self.app.work.as_ref(), &self.job(key), &self.delivery())
            .await
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

    /// The stored meetings with their matches, by immutable id.
    pub async fn meetings(
        &self,
        key: &UserKey,
    ) -> Result<BTreeMap<String, (MeetingActivity, Activity)>> {
        Ok(self
            .stored(key)
            .await?
            .into_iter()
            .filter_map(|activity| match &activity.content {
                ActivityContent::Meeting(meeting) => Some((
                    meeting.immutable_id.clone(),
                    (meeting.clone(), activity.clone()),
                )),
                ActivityContent::Mail(_) => None,
            })
            .collect())
    }

    /// `(subject, start)` of every stored meeting, sorted.
    pub async fn stored_set(&self, key: &UserKey) -> Result<Vec<(String, OffsetDateTime)>> {
        let mut set: Vec<(String, OffsetDateTime)> = self
            .meetings(key)
            .await?
            .into_values()
            .map(|(meeting, _)| (meeting.subject, meeting.start))
            .collect();
        set.sort();
        Ok(set)
    }

    pub async fn meta(&self, key: &UserKey) -> Result<Option<SyncMeta>> {
        Ok(self.state.get_meta(&Self::sync_key(key)).await?)
    }

    pub async fn cursor(&self, key: &UserKey) -> Result<Option<FolderCursor>> {
        Ok(self
            .state
            .get_cursor(&Self::sync_key(key), CALENDAR_CURSOR)
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

    /// Graph requests the sim logged from sequence number `since` on.
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

    /// Every item of every table of the stack, every secret, and every captured log line,
    /// as one text (the privacy test searches it).
    pub async fn everything(&self) -> Result<String> {
        let mut text = String::new();
        let tables = &self.config.tables;
        for table in [
            &tables.tenants,
            &tables.connections,
            &tables.sync_state,
            &tables.activities,
            &tables.crm,
            &tables.auth_sessions,
            &tables.idempotency,
        ] {
            let mut start = None;
            loop {
                let page = self
                    .dynamo
                    .scan()
                    .table_name(table)
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .with_context(|| format!("scanning {table}"))?;
                for item in page.items() {
                    text.push_str(&format!("{item:?}\n"));
                }
                match page.last_evaluated_key {
                    Some(key) if !key.is_empty() => start = Some(key),
                    _ => break,
                }
            }
        }
        let mut token = None;
        loop {
            let page = self
                .secrets
                .list_secrets()
                .set_next_token(token.take())
                .send()
                .await?;
            for secret in page.secret_list() {
                if let Some(name) = secret.name() {
                    let value = self
                        .secrets
                        .get_secret_value()
                        .secret_id(name)
                        .send()
                        .await?;
                    text.push_str(name);
                    text.push_str(value.secret_string().unwrap_or_default());
                    text.push('\n');
                }
            }
            match page.next_token {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        text.push_str(&captured_logs());
        Ok(text)
    }
}

/// The real stores, handed to [`Setup`] builders.
pub struct Stores {
    pub state: Arc<DynamoSyncStateStore>,
    pub activities: Arc<DynamoActivityStore>,
}
