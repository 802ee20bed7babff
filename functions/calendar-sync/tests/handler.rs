//! The handler in-process, fed the sample events of `events/calendar-sync/`, on in-memory
//! ports with microsoft-sim for Graph and the token endpoint: the schedule fans out to
//! exactly the calendars that want a job; the job imports the user's CRM meeting and acks
//! the record; unreadable records and unknown events fail as they should.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use calendar_sync::{CalendarSync, CalendarWork, HandlerError, Invocation, decode};
use connector_core::adapters::memory::{
    MemoryActivityStore, MemoryConnectionStore, MemoryCrmIndex, MemoryJobQueue,
    MemorySyncStateStore, MemoryTenantStore, MemoryTokenVault, StaticClientSecret,
};
use connector_core::clock::{Clock, SystemClock};
use connector_core::config::BaseUrl;
use connector_core::domain::{
    ActivityContent, Connection, ConnectionStatus, ConsentMode, CrmSnapshot, Feature,
    FeatureBundle, ScopeSet, StatusChange, SyncKind, Tenant, TenantId, UserId, UserKey,
    UserSwitches,
};
use connector_core::graph::{GraphClient, graph_http_client};
use connector_core::messages::{SyncJob, SyncReason};
use connector_core::oauth::{RefreshClient, TokenProvider, token_http_client};
use connector_core::ports::{ActivityStore, ConnectionStore, CrmIndex, TenantStore, TokenVault};
use connector_core::secret::{ClientSecret, RefreshToken, TokenRecord};
use connector_core::sync::{LogSummarySink, Worker, WorkerTimings};
use microsoft_sim::{SimOptions, SimServer, World};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::time::Instant;

const QUEUE_URL: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/CalendarSyncQueue";
const CLIENT_ID: &str = "0b7d3e59-6a2c-4f18-9e4d-5c3b2a1f0e9d";
const CLIENT_SECRET: &str = "handler-test~secret";
const REDIRECT_URI: &str = "http://localhost:8420/auth/callback";
/// The ids of `events/calendar-sync/job.json`.
const TENANT: &str = "3f2a7c1e-8b4d-4e6f-9a1c-2d3e4f5a6b7c";
const USER: &str = "7c6b5a4f-3e2d-4c1b-8a9f-0e1d2c3b4a59";
const UPN: &str = "adele@contoso.com";

fn event(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../events/calendar-sync")
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).expect("sample event")).expect("JSON")
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(14 * 60)
}

struct Fixture {
    sim: SimServer,
    app: CalendarSync,
    connections: Arc<MemoryConnectionStore>,
    tenants: Arc<MemoryTenantStore>,
    activities: Arc<MemoryActivityStore>,
    crm: Arc<MemoryCrmIndex>,
    vault: Arc<MemoryTokenVault>,
    queue: Arc<MemoryJobQueue>,
}

fn world(now: OffsetDateTime) -> Value {
    let start =
        now.date().midnight().assume_utc() + time::Duration::days(2) + time::Duration::hours(15);
    let utc = |t: OffsetDateTime| {
        json!({"dateTime": t.format(time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]")).unwrap(),
               "timeZone": "UTC"})
    };
    json!({
        "apps": [{"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET, "redirectUris": [REDIRECT_URI],
                  "displayName": "Connector", "permissions": ["User.Read", "Calendars.ReadWrite"]}],
        "tenants": [{
            "id": TENANT, "displayName": "Contoso", "verifiedDomains": ["contoso.com"], "userConsent": "allowed",
            "grants": [{"clientId": CLIENT_ID, "principal": "allUsers",
                        "scopes": ["openid", "profile", "email", "offline_access", "Calendars.ReadWrite"]}],
            "users": [{"id": USER, "userPrincipalName": UPN, "mail": UPN, "displayName": "Adele Vance",
                       "events": [
                           {"subject": "Acme pricing", "start": utc(start), "end": utc(start + time::Duration::hours(1)),
                            "organizer": {"emailAddress": {"name": "Adele Vance", "address": UPN}},
                            "attendees": [{"type": "required", "status": {"response": "none"},
                                           "emailAddress": {"name": "Sam", "address": "sam@acme.com"}}]},
                           {"subject": "Lunch", "start": utc(start + time::Duration::days(1)),
                            "end": utc(start + time::Duration::days(1) + time::Duration::hours(1)),
                            "organizer": {"emailAddress": {"name": "Adele Vance", "address": UPN}}}
                       ]}]
        }]
    })
}

async fn fixture() -> Fixture {
    let now = OffsetDateTime::now_utc();
    let mut options = SimOptions::new(World::from_json(&world(now).to_string()).expect("world"));
    options.auto_approve = true;
    let sim = SimServer::start(options).await.expect("sim");
    let base = BaseUrl::parse(&sim.base_url()).expect("base url");
    let connections = Arc::new(MemoryConnectionStore::default());
    let tenants = Arc::new(MemoryTenantStore::default());
    let activities = Arc::new(MemoryActivityStore::default());
    let crm = Arc::new(MemoryCrmIndex::default());
    let vault = Arc::new(MemoryTokenVault::default());
    let queue = Arc::new(MemoryJobQueue::default());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let tokens = TokenProvider::new(
        vault.clone(),
        Arc::new(StaticClientSecret(ClientSecret::new(CLIENT_SECRET))),
        RefreshClient::new(token_http_client().expect("http"), base.clone(), CLIENT_ID),
        clock.clone(),
    )
    .for_feature(Feature::Calendar);
    let worker = Worker {
        function: calendar_sync::FUNCTION,
        connections: connections.clone(),
        tenants: tenants.clone(),
        state: Arc::new(MemorySyncStateStore::default()),
        queue: queue.clone(),
        queue_url: QUEUE_URL.to_owned(),
        tokens: Arc::new(tokens),
        graph: Arc::new(GraphClient::new(graph_http_client().expect("http"), &base)),
        clock,
        summaries: Arc::new(LogSummarySink),
        timings: WorkerTimings::default(),
        notifications: None,
    };
    let work = CalendarWork::new(activities.clone(), crm.clone());
    Fixture {
        sim,
        app: CalendarSync::new(Arc::new(worker), Arc::new(work)),
        connections,
        tenants,
        activities,
        crm,
        vault,
        queue,
    }
}

fn connection(tenant: &TenantId, user: &UserId, scopes: ScopeSet) -> Connection {
    Connection::new_active(
        tenant.clone(),
        user.clone(),
        format!("{user}@contoso.com"),
        scopes,
        OffsetDateTime::now_utc(),
    )
}

#[tokio::test]
async fn the_schedule_event_fans_out_to_the_calendars_that_want_a_job() {
    let f = fixture().await;
    let now = OffsetDateTime::now_utc();
    let tenant = TenantId::parse(TENANT).unwrap();
    let mut record = Tenant::new(tenant.clone(), ConsentMode::Preauthorized, now);
    record.record_admin_consent(FeatureBundle::All, &ScopeSet::new(), None, now);
    f.tenants.put_tenant(&record).await.unwrap();
    let user = |n: u8| UserId::parse(&format!("00000000-0000-0000-0000-0000000000{n:02}")).unwrap();
    let all = FeatureBundle::All.scope_set();
    // Wants a job.
    f.connections
        .upsert_connection(&connection(&tenant, &user(1), all.clone()))
        .await
        .unwrap();
    // Calendar switched off.
    let mut off = connection(&tenant, &user(2), all.clone());
    off.switches = UserSwitches {
        calendar_sync: false,
        ..UserSwitches::default()
    };
    f.connections.upsert_connection(&off).await.unwrap();
    // Parked (throttled) for another hour.
    let mut parked = connection(&tenant, &user(3), all.clone());
    parked
        .parked_until
        .set(SyncKind::Calendar, Some(now + time::Duration::hours(1)));
    f.connections.upsert_connection(&parked).await.unwrap();
    // Mail only.
    f.connections
        .upsert_connection(&connection(
            &tenant,
            &user(4),
            FeatureBundle::Mail.scope_set(),
        ))
        .await
        .unwrap();
    // Needs to sign in again.
    let stale = connection(&tenant, &user(5), all.clone());
    f.connections.upsert_connection(&stale).await.unwrap();
    f.connections
        .set_status(
            &stale.key(),
            &StatusChange::new(ConnectionStatus::ReauthRequired, Some("invalid_grant"), now),
        )
        .await
        .unwrap();

    let payload = event("schedule.json");
    assert!(matches!(decode(payload.clone()), Ok(Invocation::Schedule)));
    let response = f.app.handle(payload, deadline()).await.expect("fan-out");
    assert_eq!(response["enqueued"], 1, "{response}");
    assert_eq!(response["skipped"], 3, "{response}");
    let sent = f.queue.sent(QUEUE_URL);
    assert_eq!(sent.len(), 1);
    let job: SyncJob = serde_json::from_str(&sent[0].body).unwrap();
    assert_eq!(
        job,
        SyncJob::new(SyncKind::Calendar, tenant, user(1), SyncReason::Scheduled)
    );
}

#[tokio::test]
async fn the_job_event_imports_the_users_crm_meetings() {
    let f = fixture().await;
    let now = OffsetDateTime::now_utc();
    let tenant = TenantId::parse(TENANT).unwrap();
    let user = UserId::parse(USER).unwrap();
    let key = UserKey::new(tenant.clone(), user.clone());
    let mut record = Tenant::new(tenant.clone(), ConsentMode::UserConsent, now);
    record.verified_domains = ["contoso.com".to_owned()].into_iter().collect();
    f.tenants.put_tenant(&record).await.unwrap();
    let snapshot = json!({"tenantId": TENANT, "accounts": [{"id": "001A", "name": "Acme", "domains": ["acme.com"]}]});
    f.crm
        .replace_snapshot(&CrmSnapshot::from_json_slice(snapshot.to_string().as_bytes()).unwrap())
        .await
        .unwrap();
    let base = f.sim.base_url();
    let tokens =
        microsoft_sim::identity::testing::sign_in(&microsoft_sim::identity::testing::SignIn {
            base_url: &base,
            tenant: TENANT,
            client_id: CLIENT_ID,
            client_secret: Some(CLIENT_SECRET),
            redirect_uri: REDIRECT_URI,
            login: UPN,
            scopes: "openid profile offline_access https://graph.microsoft.com/Calendars.ReadWrite",
            consent_for_org: false,
            ca_pem: None,
        })
        .await
        .expect("signed in");
    let scopes = ScopeSet::granted_by_token_response(
        Some(&tokens.scope),
        &ScopeSet::new(),
        tokens.refresh_token.is_some(),
    );
    f.vault
        .put_token(
            &key,
            &TokenRecord {
                refresh_token: RefreshToken::new(tokens.refresh_token.expect("refresh token")),
                scopes: scopes.clone(),
                updated_at: now,
            },
        )
        .await
        .unwrap();
    let mut connection = Connection::new_active(tenant, user, UPN, scopes, now);
    connection.mail = Some(UPN.to_owned());
    f.connections.upsert_connection(&connection).await.unwrap();

    let response = f
        .app
        .handle(event("job.json"), deadline())
        .await
        .expect("worker");
    assert_eq!(response, json!({"batchItemFailures": []}));
    let page = f.activities.list_activities(&key, 100, None).await.unwrap();
    let subjects: Vec<String> = page
        .items
        .iter()
        .map(|a| match &a.content {
            ActivityContent::Meeting(m) => m.subject.clone(),
            ActivityContent::Mail(_) => panic!("no mail here"),
        })
        .collect();
    assert_eq!(subjects, ["Acme pricing"]);
    assert!(f.queue.sent(QUEUE_URL).is_empty(), "no continuation");

    // The same record again is an incremental round: nothing new, still acknowledged.
    let response = f
        .app
        .handle(event("job.json"), deadline())
        .await
        .expect("worker");
    assert_eq!(response, json!({"batchItemFailures": []}));
}

#[tokio::test]
async fn unreadable_records_are_kept_and_unknown_events_refused() {
    let f = fixture().await;
    let mut payload = event("job.json");
    payload["Records"][0]["body"] = json!("{\"kind\":\"calendar\"");
    let response = f.app.handle(payload, deadline()).await.expect("worker");
    assert_eq!(
        response,
        json!({"batchItemFailures": [{"itemIdentifier": "2e1c5b7a-9d3f-4a6e-8b0c-7f1e2d3c4b5a"}]}),
        "kept for the DLQ"
    );
    // A job of a connection that does not exist is dropped (nothing to do).
    let response = f
        .app
        .handle(event("job.json"), deadline())
        .await
        .expect("worker");
    assert_eq!(response, json!({"batchItemFailures": []}));

    let unknown = json!({"detail-type": "Object Created", "source": "aws.s3"});
    assert!(matches!(
        f.app.handle(unknown, deadline()).await,
        Err(HandlerError::UnknownEvent(_))
    ));
    assert!(matches!(
        decode(json!([1, 2])),
        Err(HandlerError::UnknownEvent(_))
    ));
    let diagnostic: lambda_runtime::Diagnostic =
        HandlerError::UnknownEvent("neither SQS nor a schedule").into();
    assert_eq!(diagnostic.error_type, "UnknownEvent");
}
