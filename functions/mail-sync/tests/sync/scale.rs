//! A folder with 12,000 messages in the window (beyond the 5,000 cap of filtered delta):
//! every match stored; Outlook's MailboxConcurrency never triggered by our own requests;
//! then an unchanged mailbox costs one Graph request per folder.

use std::collections::BTreeMap;

use anyhow::Result;
use connector_core::sync::JobOutcome;
use serde_json::{Value, json};

use crate::support::*;

const DOMAIN: &str = "contoso.example";
const UPN: &str = "adele@contoso.example";
const SEED: u64 = 11;
const MESSAGES: u64 = 12_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twelve_thousand_messages_then_an_unchanged_mailbox() -> Result<()> {
    let tenant = new_tenant();
    let adele = new_user();
    let world = world(
        &tenant,
        DOMAIN,
        vec![user(&adele, UPN, "exchangeOnline", json!([]))],
        vec![
            json!({"user": UPN, "folder": "inbox", "messages": MESSAGES, "seed": SEED, "crmMatchRatio": 0.2}),
        ],
    );
    let h = Harness::start(tenant.clone(), world).await?;
    h.add_tenant(&[DOMAIN]).await?;
    // The opportunity is older than the generated mail (12 months): the whole folder is in the window.
    h.import_crm(&generated_crm(&tenant, SEED, 400)).await?;
    let key = h.connect(&adele, UPN).await?;
    // Slow Graph down a little so requests overlap and the concurrency limit is exercised.
    h.control(
        reqwest::Method::POST,
        "/_sim/latency",
        Some(json!({"ms": 15})),
    )
    .await?;

    let outcomes = h.run_to_end(&key).await;
    assert_eq!(outcomes.last(), Some(&JobOutcome::Done), "{outcomes:?}");
    let expected = generated_expected(SEED, MESSAGES, "inbox", UPN);
    assert!(expected.len() > 2_000, "the generator drew ~20 % matches");
    let stored = h.stored_ids(&key).await?;
    assert_eq!(stored.len(), expected.len(), "no duplicates, no loss");
    assert_eq!(stored, expected);

    let summary = h
        .sink
        .runs
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("summary");
    // 5,000 through the capped delta + 7,000 through the backfill list, 500 a page.
    assert!(summary.scanned >= MESSAGES, "{summary:?}");
    assert!(summary.pages >= 24, "{summary:?}");
    let stats = h
        .control(reqwest::Method::GET, "/_sim/mailbox-stats", None)
        .await?;
    let ours: Vec<&Value> = stats
        .as_array()
        .or_else(|| stats["value"].as_array())
        .expect("stats")
        .iter()
        .filter(|s| s["mailbox"].as_str() == Some(adele.as_str()))
        .collect();
    assert_eq!(ours.len(), 1, "{stats}");
    assert_eq!(
        ours[0]["throttledConcurrency"], 0,
        "MailboxConcurrency fired: {stats}"
    );
    assert!(
        ours[0]["maxInFlight"].as_u64().unwrap_or(99) <= 4,
        "{stats}"
    );
    assert!(
        ours[0]["maxInFlight"].as_u64().unwrap_or(0) >= 2,
        "requests did overlap: {stats}"
    );

    // Unchanged mailbox: one request per folder, each a deltaLink round.
    h.control(
        reqwest::Method::POST,
        "/_sim/latency",
        Some(json!({"ms": 0})),
    )
    .await?;
    let since = h.next_request_seq().await?;
    assert_eq!(h.run(&key).await, JobOutcome::Done);
    let requests = h.requests_since(since).await?;
    let mut per_folder: BTreeMap<String, usize> = BTreeMap::new();
    for request in &requests {
        let path = request["path"].as_str().unwrap_or_default();
        assert!(
            path.ends_with("/messages/delta"),
            "only delta rounds: {path}"
        );
        assert!(
            request["query"]
                .as_str()
                .unwrap_or_default()
                .contains("deltatoken"),
            "from the saved deltaLink: {request}"
        );
        *per_folder.entry(path.to_owned()).or_default() += 1;
    }
    let folders = h
        .sink
        .runs
        .lock()
        .unwrap()
        .last()
        .map(|s| s.folders)
        .unwrap_or(0);
    assert_eq!(per_folder.len() as u64, folders, "{per_folder:?}");
    assert!(per_folder.values().all(|&n| n == 1), "{per_folder:?}");
    assert_eq!(requests.len() as u64, folders);
    assert_eq!(h.stored_ids(&key).await?, expected);
    Ok(())
}
