//! Faults: 410 mid-import, a 429 storm, throttling beyond the job's budget (parking), 401
//! mid-run, revoked consent, revoked sessions, an on-premises mailbox, and a batch whose
//! other users finish whatever happens to one of them.

use std::time::Duration;

use anyhow::{Context, Result};
use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use connector_core::domain::{ConnectionStatus, CursorKind, SyncKey, SyncKind, SyncStage};
use connector_core::ports::SyncStateStore;
use connector_core::sync::{DEADLINE_MARGIN, Delivery, JobOutcome};
use mail_sync::MailSettings;
use serde_json::json;
use tokio::time::Instant;

use crate::matching::{expected, megan_crm, megan_folders};
use crate::support::*;

const DOMAIN: &str = "contoso.example";
const UPN: &str = "megan@contoso.example";

async fn megan(
    settings: MailSettings,
    extra_users: Vec<serde_json::Value>,
) -> Result<(Harness, connector_core::domain::UserKey)> {
    let tenant = new_tenant();
    let megan = new_user();
    let mut users = vec![user(&megan, UPN, "exchangeOnline", megan_folders())];
    users.extend(extra_users);
    // Grants per user, so that one user's consent can be withdrawn alone.
    let upns: Vec<String> = users
        .iter()
        .filter_map(|u| u["userPrincipalName"].as_str().map(str::to_owned))
        .collect();
    let mut world = world(&tenant, DOMAIN, users, vec![]);
    world["tenants"][0]["grants"] = json!(upns
        .iter()
        .map(|upn| json!({"clientId": CLIENT_ID, "principal": upn,
                          "scopes": ["openid", "profile", "email", "offline_access", "User.Read", "Mail.Read"]}))
        .collect::<Vec<_>>());
    let h = Harness::start_with(tenant.clone(), world, settings).await?;
    h.add_tenant(&[DOMAIN]).await?;
    h.import_crm(&megan_crm(&tenant)).await?;
    let key = h.connect(&megan, UPN).await?;
    Ok((h, key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_410_mid_import_restarts_the_folder_without_duplicates() -> Result<()> {
    let tenant = new_tenant();
    let patti = new_user();
    let upn = "patti@contoso.example";
    let world = world(
        &tenant,
        DOMAIN,
        vec![user(&patti, upn, "exchangeOnline", json!([]))],
        vec![
            json!({"user": upn, "folder": "inbox", "messages": 300, "seed": 31, "crmMatchRatio": 0.2}),
        ],
    );
    let settings = MailSettings {
        page_size: 10,
        ..MailSettings::default()
    };
    let h = Harness::start_with(tenant.clone(), world, settings).await?;
    h.add_tenant(&[DOMAIN]).await?;
    h.import_crm(&generated_crm(&tenant, 31, 400)).await?;
    let key = h.connect(&patti, upn).await?;
    let sync_key = SyncKey::new(key.tenant_id.clone(), key.user_id.clone(), SyncKind::Mail);
    h.control(
        reqwest::Method::POST,
        "/_sim/latency",
        Some(json!({"ms": 40})),
    )
    .await?;

    // Short invocations until the inbox is part-way through its first round.
    let mut mid_import = false;
    for _ in 0..10 {
        let delivery = Delivery {
            receipt_handle: None,
            receive_count: 1,
            deadline: Instant::now() + DEADLINE_MARGIN + Duration::from_millis(1200),
        };
        let outcome = h
            .app
            .worker
            .run_job(&h.app.work, &h.job(&key), &delivery)
            .await;
        assert_eq!(
            outcome,
            JobOutcome::Continued,
            "out of time means a continuation"
        );
        let inbox = h
            .state
            .list_cursors(&sync_key)
            .await?
            .into_iter()
            .find(|c| c.well_known_name.as_deref() == Some("inbox"));
        if inbox.is_some_and(|c| c.cursor_kind == Some(CursorKind::NextLink) && c.round_items > 0) {
            mid_import = true;
            break;
        }
    }
    assert!(mid_import, "the inbox was left mid-import");
    assert_eq!(
        h.meta(&key).await?.expect("meta").stage,
        SyncStage::InitialImport
    );
    // The continuation went to the queue.
    let received = h
        .sqs
        .receive_message()
        .queue_url(&h.config.queues.mail_sync)
        .max_number_of_messages(10)
        .send()
        .await?;
    let bodies: Vec<serde_json::Value> = received
        .messages()
        .iter()
        .filter_map(|m| m.body().and_then(|b| serde_json::from_str(b).ok()))
        .collect();
    assert!(
        bodies
            .iter()
            .any(|b| b["reason"] == "continuation" && b["userId"] == key.user_id.as_str()),
        "{bodies:?}"
    );

    let before = h.stored_ids(&key).await?;
    h.control(
        reqwest::Method::POST,
        "/_sim/latency",
        Some(json!({"ms": 0})),
    )
    .await?;
    h.control(
        reqwest::Method::POST,
        &format!("/_sim/users/{upn}/delta/evict"),
        Some(json!({})),
    )
    .await?;
    let outcomes = h.run_to_end(&key).await;
    assert_eq!(outcomes.last(), Some(&JobOutcome::Done), "{outcomes:?}");
    assert!(
        captured_logs().contains("delta state lost (410)"),
        "the evicted token was met and the folder restarted"
    );
    let expected = generated_expected(31, 300, "inbox", upn);
    let stored = h.stored(&key).await?;
    let ids = h.stored_ids(&key).await?;
    assert!(before.is_subset(&ids));
    assert_eq!(stored.len(), ids.len(), "no duplicates");
    assert_eq!(ids, expected);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_429_storm_is_waited_out_and_concurrency_never_trips() -> Result<()> {
    let (h, key) = megan(MailSettings::default(), vec![]).await?;
    // Every Graph request under /me (inner $batch requests included) gets 429 for a while.
    h.control(
        reqwest::Method::POST,
        "/_sim/faults",
        Some(json!({"pathPrefix": "/v1.0/me", "status": 429, "count": 12, "retryAfter": 0.2})),
    )
    .await?;
    h.control(
        reqwest::Method::POST,
        "/_sim/faults",
        Some(json!({"pathPrefix": "/v1.0/$batch", "status": 503, "count": 2})),
    )
    .await?;
    assert_eq!(h.run(&key).await, JobOutcome::Done);
    assert_eq!(h.stored_ids(&key).await?, expected());
    let summary = h
        .sink
        .runs
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("summary");
    assert!(summary.throttled >= 12, "{summary:?}");
    assert!(summary.retries >= 2, "{summary:?}");
    let stats = h
        .control(reqwest::Method::GET, "/_sim/mailbox-stats", None)
        .await?;
    let stats = stats
        .as_array()
        .cloned()
        .or_else(|| stats["value"].as_array().cloned())
        .unwrap_or_default();
    assert!(
        stats.iter().all(|s| s["throttledConcurrency"] == 0),
        "{stats:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn throttled_beyond_the_budget_parks_without_failing_the_job() -> Result<()> {
    let (h, key) = megan(MailSettings::default(), vec![]).await?;
    // A long Retry-After: not waited in-process.
    h.control(
        reqwest::Method::POST,
        "/_sim/faults",
        Some(json!({"pathPrefix": "/v1.0/me", "status": 429, "count": 1000, "retryAfter": 600})),
    )
    .await?;
    let queue = &h.config.queues.mail_sync;
    h.sqs
        .send_message()
        .queue_url(queue)
        .message_body(serde_json::to_string(&h.job(&key))?)
        .send()
        .await?;
    let received = h.sqs.receive_message().queue_url(queue).send().await?;
    let message = received.messages().first().context("the job")?.clone();
    let delivery = Delivery {
        receipt_handle: message.receipt_handle().map(str::to_owned),
        receive_count: 1,
        deadline: Instant::now() + Duration::from_secs(600),
    };
    let outcome = h
        .app
        .worker
        .run_job(&h.app.work, &h.job(&key), &delivery)
        .await;
    let JobOutcome::Parked { until, requeued } = outcome.clone() else {
        panic!("parked, not {outcome:?}");
    };
    assert!(
        !requeued && outcome.keep_message(),
        "the message stays, hidden"
    );
    let now = time::OffsetDateTime::now_utc();
    assert!(
        until > now + time::Duration::seconds(590) && until < now + time::Duration::seconds(610)
    );
    let connection = h.connection(&key).await?;
    assert_eq!(connection.status, ConnectionStatus::Active);
    assert_eq!(connection.parked_until.mail, Some(until));
    let meta = h.meta(&key).await?.expect("meta");
    assert_eq!(
        (meta.stage, meta.next_attempt_at),
        (SyncStage::Parked, Some(until))
    );
    // Hidden from other consumers until then.
    let again = h
        .sqs
        .receive_message()
        .queue_url(queue)
        .wait_time_seconds(1)
        .send()
        .await?;
    assert!(again.messages().is_empty(), "the parked job is invisible");
    // The schedule skips the parked mailbox.
    let report = mail_sync::handle_schedule(&h.app).await?;
    assert_eq!((report.enqueued, report.skipped), (0, 1), "{report:?}");

    // Once the time has come (and Graph is fine), the run completes and un-parks.
    h.control(reqwest::Method::DELETE, "/_sim/faults", None)
        .await?;
    h.advance(time::Duration::seconds(601)).await?;
    assert_eq!(h.run(&key).await, JobOutcome::Done);
    assert_eq!(h.connection(&key).await?.parked_until.mail, None);
    assert_eq!(h.stored_ids(&key).await?, expected());
    let report = mail_sync::handle_schedule(&h.app).await?;
    assert_eq!(report.enqueued, 1, "{report:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_401_mid_run_refreshes_once_and_a_second_one_needs_reauth() -> Result<()> {
    let (h, key) = megan(MailSettings::default(), vec![]).await?;
    h.control(
        reqwest::Method::POST,
        "/_sim/faults",
        Some(json!({"pathPrefix": "/v1.0/me/mailFolders", "status": 401, "count": 1})),
    )
    .await?;
    assert_eq!(h.run(&key).await, JobOutcome::Done);
    assert_eq!(h.stored_ids(&key).await?, expected());

    h.control(
        reqwest::Method::POST,
        "/_sim/faults",
        Some(json!({"pathPrefix": "/v1.0/me/mailFolders", "status": 401, "count": 50})),
    )
    .await?;
    let outcome = h.run(&key).await;
    assert_eq!(
        outcome,
        JobOutcome::StatusChanged {
            status: ConnectionStatus::ReauthRequired,
            reason: "graph_401_after_refresh".into()
        }
    );
    let connection = h.connection(&key).await?;
    assert_eq!(connection.status, ConnectionStatus::ReauthRequired);
    assert_eq!(
        connection.status_reason.as_deref(),
        Some("graph_401_after_refresh")
    );
    assert_eq!(h.meta(&key).await?.expect("meta").stage, SyncStage::Failed);
    // Not active any more: the next job does nothing.
    h.control(reqwest::Method::DELETE, "/_sim/faults", None)
        .await?;
    assert_eq!(
        h.run(&key).await,
        JobOutcome::Skipped {
            reason: "not_active"
        }
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_batch_revoked_consent_revoked_sessions_on_premises_and_a_healthy_user() -> Result<()> {
    let rita = new_user();
    let rob = new_user();
    let onprem = new_user();
    let (h, megan) = megan(
        MailSettings::default(),
        vec![
            user(
                &rita,
                "rita@contoso.example",
                "exchangeOnline",
                megan_folders(),
            ),
            user(
                &rob,
                "rob@contoso.example",
                "exchangeOnline",
                megan_folders(),
            ),
            user(&onprem, "onprem@contoso.example", "onPremises", json!([])),
        ],
    )
    .await?;
    let rita = h.connect(&rita, "rita@contoso.example").await?;
    let rob = h.connect(&rob, "rob@contoso.example").await?;
    let onprem = h.connect(&onprem, "onprem@contoso.example").await?;
    // Warm the token cache first: revocation must also beat a cached access token.
    assert_eq!(h.run(&rita).await, JobOutcome::Done);
    h.control(
        reqwest::Method::POST,
        "/_sim/revoke",
        Some(json!({"tenantId": h.tenant.as_str(), "userId": rita.user_id.as_str(), "grants": true, "sessions": false})),
    )
    .await?;
    h.control(
        reqwest::Method::POST,
        "/_sim/revoke",
        Some(json!({"tenantId": h.tenant.as_str(), "userId": rob.user_id.as_str(), "grants": false, "sessions": true})),
    )
    .await?;

    let record = |id: &str, key: &connector_core::domain::UserKey| {
        let mut message = SqsMessage::default();
        message.message_id = Some(id.to_owned());
        message.body = Some(serde_json::to_string(&h.job(key)).expect("json"));
        message
            .attributes
            .insert("ApproximateReceiveCount".into(), "1".into());
        message
    };
    let mut garbage = SqsMessage::default();
    garbage.message_id = Some("m-garbage".into());
    garbage.body = Some("{\"kind\":\"mail\"".into());
    let mut event = SqsEvent::default();
    event.records = vec![
        record("m-megan", &megan),
        record("m-rita", &rita),
        record("m-rob", &rob),
        record("m-onprem", &onprem),
        garbage,
    ];
    let response =
        mail_sync::handle_sqs(&h.app, event, Instant::now() + Duration::from_secs(600)).await;
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(
        failed,
        ["m-garbage"],
        "only the malformed record is kept for a retry"
    );

    assert_eq!(h.connection(&megan).await?.status, ConnectionStatus::Active);
    assert_eq!(h.stored_ids(&megan).await?, expected());
    let rita_connection = h.connection(&rita).await?;
    let rob_connection = h.connection(&rob).await?;
    let onprem_connection = h.connection(&onprem).await?;
    assert_eq!(
        (
            rob_connection.status,
            rob_connection.status_reason.as_deref()
        ),
        (ConnectionStatus::ReauthRequired, Some("AADSTS50173"))
    );
    assert_eq!(
        (
            onprem_connection.status,
            onprem_connection.status_reason.as_deref()
        ),
        (
            ConnectionStatus::MailboxUnsupported,
            Some("MailboxNotEnabledForRESTAPI")
        )
    );
    assert_eq!(
        rita_connection.status,
        ConnectionStatus::ConsentRevoked,
        "{rita_connection:?}"
    );
    for key in [&rob, &onprem, &rita] {
        let meta = h.meta(key).await?.expect("meta");
        assert_eq!(meta.stage, SyncStage::Failed);
        assert!(meta.last_error.is_some());
    }
    Ok(())
}

/// A message gone between its listing and its fetch (404 at the head of a one-lane `$batch`
/// chain) costs only itself: the fetches chained after it, answered 424 without being run,
/// are sent again and stored; every message is fetched once, and the mailbox never sees more
/// than 4 requests at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_gone_before_its_fetch_costs_only_itself() -> Result<()> {
    let tenant = new_tenant();
    let rita = new_user();
    let upn = "rita@contoso.example";
    let world = world(
        &tenant,
        DOMAIN,
        vec![user(&rita, upn, "exchangeOnline", json!([]))],
        vec![
            json!({"user": upn, "folder": "inbox", "messages": 200, "seed": 37, "crmMatchRatio": 0.2}),
        ],
    );
    let settings = MailSettings {
        page_size: 50,
        ..MailSettings::default()
    };
    let h = Harness::start_with(tenant.clone(), world, settings).await?;
    h.add_tenant(&[DOMAIN]).await?;
    h.import_crm(&generated_crm(&tenant, 37, 400)).await?;
    let key = h.connect(&rita, upn).await?;
    h.control(
        reqwest::Method::POST,
        "/_sim/latency",
        Some(json!({"ms": 5})),
    )
    .await?;
    // The first message fetched is gone by the time it is fetched.
    h.control(
        reqwest::Method::POST,
        "/_sim/faults",
        Some(json!({"pathPrefix": "/v1.0/me/messages/", "status": 404, "count": 1})),
    )
    .await?;
    let since = h.next_request_seq().await?;
    assert_eq!(h.run(&key).await, JobOutcome::Done);

    let expected = generated_expected(37, 200, "inbox", upn);
    let ids = h.stored_ids(&key).await?;
    assert!(ids.is_subset(&expected));
    assert_eq!(
        ids.len() + 1,
        expected.len(),
        "only the gone message is missing"
    );
    let log = h.requests_since(since).await?;
    let fetches: Vec<&serde_json::Value> = log
        .iter()
        .filter(|r| {
            let path = r["path"].as_str().unwrap_or_default().to_ascii_lowercase();
            path.contains("/me/messages/")
        })
        .collect();
    assert_eq!(fetches.len(), expected.len(), "each match fetched once");
    assert_eq!(
        fetches.iter().filter(|r| r["status"] == 404).count(),
        1,
        "{fetches:?}"
    );
    let summary = h
        .sink
        .runs
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("summary");
    assert!(
        summary.batch_items > expected.len() as u64,
        "the items chained after the 404 were sent again: {summary:?}"
    );
    let stats = h
        .control(reqwest::Method::GET, "/_sim/mailbox-stats", None)
        .await?;
    let stats = stats
        .as_array()
        .cloned()
        .or_else(|| stats["value"].as_array().cloned())
        .unwrap_or_default();
    assert!(
        stats
            .iter()
            .all(|s| s["throttledConcurrency"] == 0 && s["maxInFlight"].as_u64() <= Some(4)),
        "{stats:?}"
    );
    Ok(())
}
