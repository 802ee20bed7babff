//! Domain tests on the in-memory ports: the fan-out rules and paging, and a whole mail run
//! (planner, matching, checkpoints) with every store in memory against microsoft-sim.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use connector_core::adapters::memory::{
    MemoryActivityStore, MemoryConnectionStore, MemoryCrmIndex, MemoryJobQueue,
    MemorySyncStateStore, MemoryTenantStore, MemoryTokenVault, StaticClientSecret,
};
use connector_core::clock::{Clock, OffsetClock};
use connector_core::config::BaseUrl;
use connector_core::domain::{
    ActivityContent, Connection, ConnectionStatus, ConsentMode, FeatureBundle, ScopeSet,
    StatusChange, SyncKind, Tenant, TenantId, UserId, UserKey, UserSwitches,
};
use connector_core::graph::{GraphClient, graph_http_client};
use connector_core::messages::{SyncJob, SyncReason};
use connector_core::oauth::{RefreshClient, TokenProvider, token_http_client};
use connector_core::ports::{ActivityStore, ConnectionStore, CrmIndex, TenantStore, TokenVault};
use connector_core::secret::{ClientSecret, RefreshToken, TokenRecord};
use connector_core::sync::{Delivery, FanOutOptions, JobOutcome, Worker, WorkerTimings, fan_out};
use mail_sync::{App, FUNCTION, MailSettings, MailWork};
use microsoft_sim::{SimOptions, SimServer, World};
use time::macros::datetime;
use tokio::time::Instant;

use crate::matching::{expected, megan_crm, megan_folders};
use crate::support::{
    CLIENT_ID, CLIENT_SECRET, CapturingSink, REDIRECT_URI, new_tenant, new_user, user, world,
};

const QUEUE: &str = "http://127.0.0.1:1/123456789012/mail";

fn connection(tenant: &TenantId, n: u32, now: time::OffsetDateTime) -> Connection {
    Connection::new_active(
        tenant.clone(),
        UserId::parse(&format!("00000000-0000-0000-0000-{n:012}")).expect("guid"),
        format!("user{n}@contoso.example"),
        FeatureBundle::All.scope_set(),
        now,
    )
}

#[tokio::test]
async fn fan_out_pages_through_active_connections_and_applies_the_rules() -> Result<()> {
    let now = datetime!(2026-03-01 9:00 UTC);
    let connections = MemoryConnectionStore::default();
    let tenants = MemoryTenantStore::default();
    let queue = MemoryJobQueue::default();
    let (open, mail_off, calendar_only) = (new_tenant(), new_tenant(), new_tenant());
    // A user-consent tenant: only the users' own scopes count.
    tenants
        .put_tenant(&Tenant::new(open.clone(), ConsentMode::UserConsent, now))
        .await?;
    // A pre-authorized tenant whose admin granted calendar only.
    let mut tenant = Tenant::new(calendar_only.clone(), ConsentMode::Preauthorized, now);
    tenant.record_admin_consent(FeatureBundle::Calendar, &ScopeSet::new(), None, now);
    tenants.put_tenant(&tenant).await?;
    let mut expected = BTreeSet::new();
    for n in 0..237 {
        let c = connection(&open, n, now);
        match n % 5 {
            0 => expected.insert(c.user_id.clone()),
            1 => {
                connections.upsert_connection(&c).await?;
                connections
                    .set_switches(
                        &c.key(),
                        UserSwitches {
                            mail_sync: false,
                            ..UserSwitches::default()
                        },
                        now,
                    )
                    .await?;
                continue;
            }
            2 => {
                connections.upsert_connection(&c).await?;
                connections
                    .set_status(
                        &c.key(),
                        &StatusChange::new(
                            ConnectionStatus::ConsentRevoked,
                            Some("AADSTS65001"),
                            now,
                        ),
                    )
                    .await?;
                continue;
            }
            3 => {
                connections.upsert_connection(&c).await?;
                connections
                    .set_parked_until(
                        &c.key(),
                        SyncKind::Mail,
                        Some(now + time::Duration::hours(1)),
                        now,
                    )
                    .await?;
                continue;
            }
            _ => {
                // Parked until a time already reached: due again.
                connections.upsert_connection(&c).await?;
                connections
                    .set_parked_until(
                        &c.key(),
                        SyncKind::Mail,
                        Some(now - time::Duration::minutes(1)),
                        now,
                    )
                    .await?;
                expected.insert(c.user_id.clone());
                continue;
            }
        };
        connections.upsert_connection(&c).await?;
    }
    connections
        .upsert_connection(&connection(&calendar_only, 999, now))
        .await?;
    // No tenant record at all: the user's scopes decide.
    let orphan = connection(&mail_off, 998, now);
    expected.insert(orphan.user_id.clone());
    connections.upsert_connection(&orphan).await?;

    let report = fan_out(
        &connections,
        &tenants,
        &queue,
        QUEUE,
        SyncKind::Mail,
        now,
        FanOutOptions {
            page_size: 20,
            pages_in_flight: 3,
            ..FanOutOptions::default()
        },
    )
    .await?;
    let jobs: Vec<SyncJob> = queue
        .sent(QUEUE)
        .iter()
        .map(|m| serde_json::from_str(&m.body))
        .collect::<Result<_, _>>()?;
    let users: BTreeSet<UserId> = jobs.iter().map(|j| j.user_id.clone()).collect();
    assert_eq!(users, expected);
    assert_eq!(jobs.len(), expected.len(), "one job each");
    assert!(
        jobs.iter()
            .all(|j| j.kind == SyncKind::Mail && j.reason == SyncReason::Scheduled)
    );
    let revoked = (0..237).filter(|n| n % 5 == 2).count() as u64;
    assert_eq!(
        report.scanned,
        237 - revoked + 2,
        "only active connections are read: {report:?}"
    );
    assert_eq!(report.enqueued, expected.len() as u64);
    assert_eq!(report.skipped, report.scanned - report.enqueued);
    assert_eq!(
        report.pages,
        report.scanned.div_ceil(20).max(1),
        "{report:?}"
    );
    assert!(
        report.send_calls >= (expected.len() as u64).div_ceil(10),
        "{report:?}"
    );
    assert!(
        report.send_calls <= (expected.len() as u64).div_ceil(10) + report.pages,
        "{report:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whole_run_on_in_memory_stores() -> Result<()> {
    let tenant = new_tenant();
    let megan = new_user();
    let upn = "megan@contoso.example";
    let world_json = world(
        &tenant,
        "contoso.example",
        vec![user(&megan, upn, "exchangeOnline", megan_folders())],
        vec![],
    );
    let mut options = SimOptions::new(World::from_json(&world_json.to_string())?);
    options.auto_approve = true;
    let sim = SimServer::start(options).await?;
    let base = sim.base_url();
    let tokens =
        microsoft_sim::identity::testing::sign_in(&microsoft_sim::identity::testing::SignIn {
            base_url: &base,
            tenant: tenant.as_str(),
            client_id: CLIENT_ID,
            client_secret: Some(CLIENT_SECRET),
            redirect_uri: REDIRECT_URI,
            login: upn,
            scopes: "openid offline_access https://graph.microsoft.com/Mail.Read",
            consent_for_org: false,
            ca_pem: None,
        })
        .await?;

    let clock = Arc::new(OffsetClock::new());
    let now = clock.now();
    let key = UserKey::new(tenant.clone(), megan.clone());
    let original = RefreshToken::new(tokens.refresh_token.clone().expect("refresh token"));
    let vault = Arc::new(MemoryTokenVault::default());
    vault
        .put_token(
            &key,
            &TokenRecord {
                refresh_token: original.clone(),
                scopes: ScopeSet::granted_by_token_response(
                    Some(&tokens.scope),
                    &ScopeSet::new(),
                    tokens.refresh_token.is_some(),
                ),
                // Old enough that the rotated token gets stored.
                updated_at: now - time::Duration::days(2),
            },
        )
        .await?;
    let connections = Arc::new(MemoryConnectionStore::default());
    let mut c = Connection::new_active(
        tenant.clone(),
        megan.clone(),
        upn,
        ScopeSet::granted_by_token_response(
            Some(&tokens.scope),
            &ScopeSet::new(),
            tokens.refresh_token.is_some(),
        ),
        now,
    );
    c.mail = Some(upn.into());
    connections.upsert_connection(&c).await?;
    let tenants = Arc::new(MemoryTenantStore::default());
    let mut t = Tenant::new(tenant.clone(), ConsentMode::Preauthorized, now);
    t.record_admin_consent(FeatureBundle::Mail, &ScopeSet::new(), None, now);
    t.verified_domains.insert("contoso.example".into());
    tenants.put_tenant(&t).await?;
    let crm = Arc::new(MemoryCrmIndex::default());
    crm.replace_snapshot(&megan_crm(&tenant)).await?;
    let activities = Arc::new(MemoryActivityStore::default());
    let queue = Arc::new(MemoryJobQueue::default());
    let provider = TokenProvider::new(
        vault.clone(),
        Arc::new(StaticClientSecret(ClientSecret::new(CLIENT_SECRET))),
        RefreshClient::new(
            token_http_client()?,
            BaseUrl::parse(&base).map_err(anyhow::Error::msg)?,
            CLIENT_ID,
        ),
        clock.clone(),
    );
    let app = App {
        worker: Worker {
            function: FUNCTION,
            connections,
            tenants,
            state: Arc::new(MemorySyncStateStore::default()),
            queue: queue.clone(),
            queue_url: QUEUE.into(),
            tokens: Arc::new(provider),
            graph: Arc::new(GraphClient::new(
                graph_http_client()?,
                &BaseUrl::parse(&base).map_err(anyhow::Error::msg)?,
            )),
            clock: clock.clone(),
            summaries: Arc::new(CapturingSink::default()),
            timings: WorkerTimings::default(),
            notifications: None,
        },
        work: MailWork::new(
            activities.clone(),
            crm,
            MailSettings {
                page_size: 3,
                ..MailSettings::default()
            },
        ),
        fan_out: FanOutOptions::default(),
    };
    let job = SyncJob::new(
        SyncKind::Mail,
        tenant.clone(),
        megan.clone(),
        SyncReason::Initial,
    );
    let delivery = Delivery {
        receipt_handle: None,
        receive_count: 1,
        deadline: Instant::now() + Duration::from_secs(600),
    };
    assert_eq!(
        app.worker.run_job(&app.work, &job, &delivery).await,
        JobOutcome::Done
    );
    let page = activities.list_activities(&key, 1000, None).await?;
    let ids: BTreeSet<String> = page
        .items
        .iter()
        .filter_map(|a| match &a.content {
            ActivityContent::Mail(m) => m.internet_message_id.clone(),
            ActivityContent::Meeting(_) => None,
        })
        .collect();
    assert_eq!(ids, expected());
    // Rotation: the two-day-old refresh token was replaced by the rotated one…
    let stored = vault.get_token(&key).await?.expect("record");
    assert!(stored.updated_at >= now, "stored again");
    assert_ne!(
        stored.refresh_token.secret(),
        original.secret(),
        "the rotated token"
    );
    // …and a refresh the same day keeps it in memory only.
    app.worker.tokens.refresh_rejected(&key).await?;
    let again = vault.get_token(&key).await?.expect("record");
    assert_eq!(
        again.updated_at, stored.updated_at,
        "no second write the same day"
    );
    assert_eq!(again.refresh_token.secret(), stored.refresh_token.secret());
    Ok(())
}
