//! mail-sync and calendar-sync on one mailbox at the same time, as two Lambda functions
//! would: each with its own Graph client, token provider and mailbox budget (nothing
//! shared in memory), one moto (the slot ledger in the sync-state table) and one sim
//! (which counts requests in flight per app + mailbox across all callers and answers
//! 429 `ApplicationThrottled` MailboxConcurrency past 4).
//!
//! With the budget: no MailboxConcurrency 429 and both imports complete. Without it (the
//! control, each client keeping only its own 4): the same runs draw MailboxConcurrency
//! 429s, so the first test would fail without the budget.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use calendar_sync::{CalendarOptions, CalendarWork};
use connector_core::adapters::secrets::SecretsManagerClientSecret;
use connector_core::adapters::slots_dynamodb::DynamoSlotLedger;
use connector_core::budget::{BudgetOptions, MailboxBudget};
use connector_core::clock::Clock;
use connector_core::config::BaseUrl;
use connector_core::domain::{
    ActivityContent, Connection, ConsentMode, Feature, FeatureBundle, ScopeSet, SyncKind, Tenant,
    UserKey,
};
use connector_core::graph::{GraphClient, RetryPolicy, graph_http_client};
use connector_core::messages::{SyncJob, SyncReason};
use connector_core::oauth::{RefreshClient, TokenProvider, token_http_client};
use connector_core::ports::{ConnectionStore, TenantStore, TokenVault};
use connector_core::secret::{RefreshToken, TokenRecord};
use connector_core::sync::{JobOutcome, Worker};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::support::*;

const DOMAIN: &str = "contoso.example";
const UPN: &str = "adele@contoso.example";
const SEED: u64 = 23;
const MESSAGES: u64 = 3_000;
const SERIES: usize = 6;
const PER_SERIES: usize = 100;

/// Daily series with one attendee: the first at a CRM account's domain, the others not.
fn events(now: OffsetDateTime, crm_domain: &str) -> Vec<Value> {
    (0..SERIES)
        .map(|k| {
            let start = now.date().midnight().assume_utc()
                + time::Duration::days(1)
                + time::Duration::hours(7 + k as i64);
            let attendee = if k == 0 {
                format!("pat@{crm_domain}")
            } else {
                format!("x{k}@vendor.io")
            };
            json!({
                "subject": format!("Series {k}"),
                "body": {"contentType": "html", "content": "<p>Agenda</p>"},
                "start": {"dateTime": graph_time(start), "timeZone": "UTC"},
                "end": {"dateTime": graph_time(start + time::Duration::minutes(25)), "timeZone": "UTC"},
                "organizer": who(UPN),
                "attendees": [{"type": "required", "status": {"response": "none", "time": "2026-01-05T10:00:00Z"},
                               "emailAddress": {"name": "someone", "address": attendee}}],
                "recurrence": {
                    "pattern": {"type": "daily", "interval": 1},
                    "range": {"type": "numbered", "startDate": start.date().to_string(),
                              "numberOfOccurrences": PER_SERIES}
                }
            })
        })
        .collect()
}

fn graph_time(at: OffsetDateTime) -> String {
    at.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]"
    ))
    .expect("formats")
}

/// The two functions' workers, each on its own Graph client (with or without a budget).
struct Pair {
    mail: Worker,
    calendar: Worker,
    calendar_work: CalendarWork,
}

fn graph(h: &Harness, budget: bool) -> Result<Arc<GraphClient>> {
    let client = GraphClient::new(
        graph_http_client()?,
        &BaseUrl::parse(&h.base()).map_err(anyhow::Error::msg)?,
    )
    .with_retry(RetryPolicy {
        base_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        ..RetryPolicy::default()
    });
    Ok(Arc::new(if budget {
        client.with_budget(MailboxBudget::new(
            Arc::new(DynamoSlotLedger::new(
                h.dynamo.clone(),
                &h.config.tables.sync_state,
            )),
            BudgetOptions {
                tick: Duration::from_millis(100),
                ..BudgetOptions::default()
            },
        ))
    } else {
        client
    }))
}

fn tokens(h: &Harness, feature: Feature) -> Result<Arc<TokenProvider>> {
    Ok(Arc::new(
        TokenProvider::new(
            h.vault.clone(),
            Arc::new(SecretsManagerClientSecret::new(
                h.secrets.clone(),
                &h.config.microsoft.client_secret_id,
            )),
            RefreshClient::new(
                token_http_client()?,
                h.config.microsoft.login_base_url.clone(),
                CLIENT_ID,
            ),
            h.clock.clone(),
        )
        .for_feature(feature),
    ))
}

fn pair(h: &Harness, budget: bool) -> Result<Pair> {
    let w = &h.app.worker;
    let mail = Worker {
        function: w.function,
        connections: w.connections.clone(),
        tenants: w.tenants.clone(),
        state: w.state.clone(),
        queue: w.queue.clone(),
        queue_url: w.queue_url.clone(),
        tokens: tokens(h, Feature::Mail)?,
        graph: graph(h, budget)?,
        clock: w.clock.clone(),
        summaries: w.summaries.clone(),
        timings: w.timings,
        notifications: None,
    };
    let calendar = Worker {
        function: calendar_sync::FUNCTION,
        connections: w.connections.clone(),
        tenants: w.tenants.clone(),
        state: w.state.clone(),
        queue: w.queue.clone(),
        queue_url: h.config.queues.calendar_sync.clone(),
        tokens: tokens(h, Feature::Calendar)?,
        graph: graph(h, budget)?,
        clock: w.clock.clone(),
        summaries: w.summaries.clone(),
        timings: w.timings,
        notifications: None,
    };
    let calendar_work = CalendarWork::new(h.activities.clone(), h.crm_index.clone()).with_options(
        CalendarOptions {
            page_size: 10,
            ..CalendarOptions::default()
        },
    );
    Ok(Pair {
        mail,
        calendar,
        calendar_work,
    })
}

/// A mailbox with 3,000 messages and 600 meetings, its user signed in with both features.
async fn setup() -> Result<(Harness, UserKey, String)> {
    let tenant = new_tenant();
    let adele = new_user();
    let crm_domain = microsoft_sim::generate::crm_snapshot(SEED).accounts[0]
        .domain
        .clone();
    let mut user = user(&adele, UPN, "exchangeOnline", json!([]));
    user["events"] = json!(events(OffsetDateTime::now_utc(), &crm_domain));
    let mut world = world(
        &tenant,
        DOMAIN,
        vec![user],
        vec![
            json!({"user": UPN, "folder": "inbox", "messages": MESSAGES, "seed": SEED, "crmMatchRatio": 0.2}),
        ],
    );
    world["apps"][0]["permissions"] = json!(["User.Read", "Mail.Read", "Calendars.ReadWrite"]);
    world["tenants"][0]["grants"][0]["scopes"] = json!([
        "openid",
        "profile",
        "email",
        "offline_access",
        "User.Read",
        "Mail.Read",
        "Calendars.ReadWrite"
    ]);
    let h = Harness::start(tenant.clone(), world).await?;
    let now = h.clock.now();
    let mut record = Tenant::new(tenant.clone(), ConsentMode::Preauthorized, now);
    record.record_admin_consent(FeatureBundle::Mail, &ScopeSet::new(), None, now);
    record.record_admin_consent(FeatureBundle::Calendar, &ScopeSet::new(), None, now);
    record.confirm(now);
    record.verified_domains = [DOMAIN.to_owned()].into_iter().collect();
    h.tenants.put_tenant(&record).await?;
    h.import_crm(&generated_crm(&tenant, SEED, 400)).await?;

    let tokens =
        microsoft_sim::identity::testing::sign_in(&microsoft_sim::identity::testing::SignIn {
            base_url: &h.base(),
            tenant: tenant.as_str(),
            client_id: CLIENT_ID,
            client_secret: Some(CLIENT_SECRET),
            redirect_uri: REDIRECT_URI,
            login: UPN,
            scopes: "openid profile email offline_access https://graph.microsoft.com/Mail.Read https://graph.microsoft.com/Calendars.ReadWrite",
            consent_for_org: false,
            ca_pem: None,
        })
        .await
        .context("signing in")?;
    let key = UserKey::new(tenant.clone(), adele.clone());
    let scopes = ScopeSet::granted_by_token_response(
        Some(&tokens.scope),
        &ScopeSet::new(),
        tokens.refresh_token.is_some(),
    );
    h.vault
        .put_token(
            &key,
            &TokenRecord {
                refresh_token: RefreshToken::new(tokens.refresh_token.context("a refresh token")?),
                scopes: scopes.clone(),
                updated_at: now,
            },
        )
        .await?;
    let mut connection = Connection::new_active(tenant, adele.clone(), UPN, scopes, now);
    connection.mail = Some(UPN.to_owned());
    h.connections.upsert_connection(&connection).await?;
    // Requests stay in flight a while, as on a real mailbox, so the runs overlap.
    h.control(
        reqwest::Method::POST,
        "/_sim/latency",
        Some(json!({"ms": 20})),
    )
    .await?;
    Ok((h, key, adele.to_string()))
}

fn job(key: &UserKey, kind: SyncKind) -> SyncJob {
    SyncJob::new(
        kind,
        key.tenant_id.clone(),
        key.user_id.clone(),
        SyncReason::Initial,
    )
}

async fn timed(
    run: impl std::future::Future<Output = JobOutcome>,
) -> (JobOutcome, Instant, Instant) {
    let started = Instant::now();
    let outcome = run.await;
    (outcome, started, Instant::now())
}

/// Both runs at once; their outcomes and how long they overlapped, as a share of the
/// shorter one.
async fn both(h: &Harness, pair: &Pair, key: &UserKey) -> (JobOutcome, JobOutcome, f64) {
    let mail_job = job(key, SyncKind::Mail);
    let calendar_job = job(key, SyncKind::Calendar);
    let delivery = h.delivery();
    let ((mail, m0, m1), (calendar, c0, c1)) = tokio::join!(
        timed(Box::pin(pair.mail.run_job(
            &h.app.work,
            &mail_job,
            &delivery
        ))),
        timed(
            pair.calendar
                .run_job(&pair.calendar_work, &calendar_job, &delivery)
        ),
    );
    let overlap = m1.min(c1).saturating_duration_since(m0.max(c0));
    let shorter = (m1 - m0).min(c1 - c0);
    (
        mail,
        calendar,
        overlap.as_secs_f64() / shorter.as_secs_f64().max(1e-9),
    )
}

async fn stats(h: &Harness, user_id: &str) -> Result<Value> {
    let stats = h
        .control(reqwest::Method::GET, "/_sim/mailbox-stats", None)
        .await?;
    let all = stats
        .as_array()
        .or_else(|| stats["value"].as_array())
        .cloned()
        .unwrap_or_default();
    all.into_iter()
        .find(|s| s["mailbox"].as_str() == Some(user_id))
        .context("the mailbox's stats")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mail_and_calendar_share_the_mailbox_four() -> Result<()> {
    let (h, key, user_id) = setup().await?;
    let pair = pair(&h, true)?;
    let (mail, calendar, overlap) = both(&h, &pair, &key).await;
    assert_eq!(mail, JobOutcome::Done, "mail import completes");
    assert_eq!(calendar, JobOutcome::Done, "calendar import completes");
    assert!(
        overlap > 0.5,
        "the runs overlapped substantially: {overlap:.2}"
    );

    let stats = stats(&h, &user_id).await?;
    eprintln!("with the budget: overlap {overlap:.2}, sim {stats}");
    assert_eq!(
        stats["throttledConcurrency"], 0,
        "MailboxConcurrency fired: {stats}"
    );
    assert!(stats["maxInFlight"].as_u64().unwrap_or(99) <= 4, "{stats}");

    let expected = generated_expected(SEED, MESSAGES, "inbox", UPN);
    assert_eq!(
        h.stored_ids(&key).await?,
        expected,
        "every matching message"
    );
    let meetings = h
        .stored(&key)
        .await?
        .into_iter()
        .filter(|activity| matches!(activity.content, ActivityContent::Meeting(_)))
        .count();
    assert_eq!(meetings, PER_SERIES, "every CRM meeting");
    let ledger = h
        .dynamo
        .get_item()
        .table_name(&h.config.tables.sync_state)
        .key(
            "syncKey",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("{key}#mailbox")),
        )
        .key(
            "item",
            aws_sdk_dynamodb::types::AttributeValue::S("slots".into()),
        )
        .send()
        .await?;
    assert!(ledger.item.is_none(), "both left the ledger");
    Ok(())
}

/// The control: the same runs with each client keeping only its own 4 slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_budget_the_two_overrun_the_mailbox() -> Result<()> {
    let (h, key, user_id) = setup().await?;
    let pair = pair(&h, false)?;
    let (_, _, overlap) = both(&h, &pair, &key).await;
    assert!(
        overlap > 0.5,
        "the runs overlapped substantially: {overlap:.2}"
    );
    let stats = stats(&h, &user_id).await?;
    eprintln!("without the budget: overlap {overlap:.2}, sim {stats}");
    assert!(
        stats["throttledConcurrency"].as_u64().unwrap_or(0) > 0,
        "two processes with 4 each overrun Outlook's 4: {stats}"
    );
    Ok(())
}
