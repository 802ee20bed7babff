//! The `$filter`ed delta cap, whichever messages it keeps: Microsoft documents that a
//! filtered round returns "only up to 5,000 messages" but not which
//! (https://learn.microsoft.com/graph/delta-query-messages, read 2026-12-05). The sim caps
//! filtered rounds at 50 here (the connector is not told: its own 5,000 never fires) and
//! keeps the newest, the oldest or a seeded arbitrary 50 of 500 messages spread over a
//! year. Every match is stored, none twice, a backfill cut off by the deadline resumes, and
//! the next run picks up new mail through the deltaLink alone.

use std::time::Duration;

use anyhow::Result;
use connector_core::domain::{SyncKey, SyncKind};
use connector_core::ports::SyncStateStore;
use connector_core::sync::{DEADLINE_MARGIN, Delivery, JobOutcome};
use mail_sync::MailSettings;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::support::*;

const DOMAIN: &str = "contoso.example";
const UPN: &str = "megan@contoso.example";
const SEED: u64 = 41;
const MESSAGES: u64 = 500;
const CAP: u64 = 50;

async fn complete_under(order: &str, interrupt_backfill: bool) -> Result<()> {
    let tenant = new_tenant();
    let megan = new_user();
    let world = world(
        &tenant,
        DOMAIN,
        vec![user(&megan, UPN, "exchangeOnline", json!([]))],
        vec![
            json!({"user": UPN, "folder": "inbox", "messages": MESSAGES, "seed": SEED, "crmMatchRatio": 0.2}),
        ],
    );
    let settings = MailSettings {
        page_size: 20,
        ..MailSettings::default()
    };
    let h = Harness::start_with(tenant.clone(), world, settings).await?;
    h.add_tenant(&[DOMAIN]).await?;
    // The opportunity is older than the generated mail: the whole year is in the window.
    h.import_crm(&generated_crm(&tenant, SEED, 400)).await?;
    let key = h.connect(&megan, UPN).await?;
    let cap = h
        .control(
            reqwest::Method::POST,
            "/_sim/delta-cap",
            Some(json!({"limit": CAP, "order": order, "seed": 7})),
        )
        .await?;
    assert_eq!(cap["order"], order);
    let since = h.next_request_seq().await?;

    // Short invocations first: the backfill gets cut off part-way and resumes.
    let mut cut_mid_backfill = false;
    if interrupt_backfill {
        h.control(
            reqwest::Method::POST,
            "/_sim/latency",
            Some(json!({"ms": 30})),
        )
        .await?;
        let sync_key = SyncKey::new(key.tenant_id.clone(), key.user_id.clone(), SyncKind::Mail);
        // Bounded, but generous: on a loaded machine an invocation this short may get little
        // done (joining the mailbox's slot ledger alone costs a DynamoDB read and write).
        for _ in 0..400 {
            let delivery = Delivery {
                receipt_handle: None,
                receive_count: 1,
                deadline: Instant::now() + DEADLINE_MARGIN + Duration::from_millis(400),
            };
            let outcome = h
                .app
                .worker
                .run_job(&h.app.work, &h.job(&key), &delivery)
                .await;
            if outcome != JobOutcome::Continued {
                break;
            }
            let inbox = h
                .state
                .list_cursors(&sync_key)
                .await?
                .into_iter()
                .find(|c| c.well_known_name.as_deref() == Some("inbox"))
                .expect("the inbox cursor");
            if inbox
                .backfill
                .as_deref()
                .is_some_and(|url| url.contains("receivedDateTime%20le%20"))
            {
                cut_mid_backfill = true;
                break;
            }
        }
        h.control(
            reqwest::Method::POST,
            "/_sim/latency",
            Some(json!({"ms": 0})),
        )
        .await?;
    }

    let outcomes = h.run_to_end(&key).await;
    assert_eq!(outcomes.last(), Some(&JobOutcome::Done), "{outcomes:?}");
    let expected = generated_expected(SEED, MESSAGES, "inbox", UPN);
    assert!(
        expected.len() > CAP as usize,
        "more matches than the cap: {}",
        expected.len()
    );
    let stored = h.stored_mail(&key).await?;
    let ids = h.stored_ids(&key).await?;
    assert_eq!(stored.len(), ids.len(), "nothing stored twice");
    let missing: Vec<&String> = expected.difference(&ids).collect();
    assert!(
        missing.is_empty(),
        "{order}: {} never imported",
        missing.len()
    );
    assert_eq!(ids, expected, "{order}: only matches");
    // The backfill re-reads what the round delivered, and a resumed backfill re-reads the
    // page after its last checkpoint: each message still counts once.
    assert_eq!(
        h.stored_by_runs(&key),
        ids.len() as u64,
        "{order}: `stored` counts distinct messages"
    );
    assert_eq!(
        cut_mid_backfill, interrupt_backfill,
        "the backfill was cut off part-way (and resumed)"
    );

    // The round was capped (the sim's 50), the count said so, the whole window was listed.
    let requests = h.requests_since(since).await?;
    let query = |r: &Value| r["query"].as_str().unwrap_or_default().to_owned();
    let inbox_list = |r: &&Value| {
        r["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("/messages") && p.contains("/mailFolders/"))
    };
    let counts: Vec<String> = requests
        .iter()
        .filter(inbox_list)
        .map(query)
        .filter(|q| q.contains("$count=true"))
        .collect();
    assert!(!counts.is_empty(), "the window was counted");
    let whole_window = requests
        .iter()
        .filter(inbox_list)
        .map(query)
        .filter(|q| !q.contains("$count=true") && !q.contains("%20le%20") && !q.contains(" le "))
        .count();
    assert!(
        whole_window >= 1,
        "the backfill's first page reads the whole window"
    );

    // New mail afterwards comes through the deltaLink, with no list request.
    let contact = microsoft_sim::generate::crm_snapshot(SEED).accounts[0].contacts[0]
        .address
        .clone();
    h.control(
        reqwest::Method::POST,
        &format!("/_sim/users/{UPN}/messages"),
        Some(json!({"folder": "inbox",
                    "message": message("after-import", "Next steps", &contact, &[UPN], 0)})),
    )
    .await?;
    let since = h.next_request_seq().await?;
    assert_eq!(h.run(&key).await, JobOutcome::Done);
    let ids = h.stored_ids(&key).await?;
    assert!(
        ids.contains("<after-import@test>"),
        "{order}: new mail imported"
    );
    assert_eq!(ids.len(), expected.len() + 1);
    assert_eq!(h.stored_mail(&key).await?.len(), ids.len());
    for request in h.requests_since(since).await? {
        let path = request["path"].as_str().unwrap_or_default();
        assert!(
            path.ends_with("/messages/delta")
                || path.ends_with("/$batch")
                || path.starts_with("/v1.0/me/messages/"),
            "only deltaLink rounds and the fetch of the new message: {path}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_keeps_the_newest() -> Result<()> {
    complete_under("newest", false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_keeps_the_oldest() -> Result<()> {
    complete_under("oldest", false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_keeps_an_arbitrary_subset_and_the_backfill_resumes() -> Result<()> {
    complete_under("arbitrary", true).await
}
