//! When the CRM changes after the first import: the stored set equals what a fresh import
//! with the new CRM stores, exactly (no loss, no duplicate, nothing kept that no record
//! matches), through the window moving back, a re-listing for an added domain, `$search`
//! for added addresses, and the removals; a crash in the middle resumes to the same set;
//! an unchanged CRM imported again costs no Graph request.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use anyhow::Result;
use connector_core::domain::{ActivityContent, FolderCursor, SyncKey, SyncKind, UserKey};
use connector_core::ports::{ActivityStore, SyncStateStore};
use connector_core::sync::JobOutcome;
use mail_sync::MailSettings;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::crash::CrashingState;
use crate::matching::{expected, megan_crm, megan_folders};
use crate::support::*;

const DOMAIN: &str = "contoso.example";
const UPN: &str = "megan@contoso.example";

/// A stored message as a fresh import would have it: its key, its folder and why it
/// matched.
type Stored = BTreeSet<(String, String, Vec<(String, String)>)>;

async fn stored_set(h: &Harness, key: &UserKey) -> Result<Stored> {
    let mut out = BTreeSet::new();
    let listed = h.stored(key).await?;
    for activity in &listed {
        if let ActivityContent::Mail(mail) = &activity.content {
            let mut why: Vec<(String, String)> = activity
                .matches
                .iter()
                .map(|m| (format!("{:?}", m.reason), m.matched_on.clone()))
                .collect();
            why.sort();
            out.insert((
                mail.internet_message_id.clone().unwrap_or_default(),
                mail.folder_id.clone(),
                why,
            ));
        }
    }
    assert_eq!(out.len(), listed.len(), "one stored item per message");
    Ok(out)
}

/// Forgets everything of the mailbox and imports it again with the current CRM.
async fn fresh_import(h: &Harness, key: &UserKey) -> Result<Stored> {
    let sync_key = SyncKey::new(key.tenant_id.clone(), key.user_id.clone(), SyncKind::Mail);
    h.state.delete_sync_state(&sync_key).await?;
    h.activities.delete_all_activities(key).await?;
    assert_eq!(h.run_to_end(key).await.last(), Some(&JobOutcome::Done));
    stored_set(h, key).await
}

fn keys(stored: &Stored) -> BTreeSet<String> {
    stored.iter().map(|(key, _, _)| key.clone()).collect()
}

fn date_days_ago(days: i64) -> String {
    format!(
        "{}",
        (time::OffsetDateTime::now_utc() - time::Duration::days(days)).date()
    )
}

/// Megan's CRM as version 1: without the lead Mixed (m21), with a contact for the
/// newsletter's sender (m22).
fn crm_v1(tenant: &connector_core::domain::TenantId) -> connector_core::domain::CrmSnapshot {
    let mut file: Value = serde_json::to_value(megan_crm(tenant)).expect("serialises");
    file["leads"] = json!([{"id": "00Q1", "email": "bob.lead@gmail.com", "company": "Bob's"}]);
    file["contacts"]
        .as_array_mut()
        .expect("contacts")
        .push(json!({"id": "003N", "email": "news@vendor.example"}));
    snapshot(tenant, file)
}

/// Version 2 adds to Megan's CRM an account `other.co.uk` (m17) whose open opportunity is
/// 60 days old (m19, 40 days, enters the window); against version 1 it also adds the lead
/// Mixed (m21) and removes the newsletter's contact (m22).
fn crm_v2(tenant: &connector_core::domain::TenantId) -> connector_core::domain::CrmSnapshot {
    let mut file: Value = serde_json::to_value(megan_crm(tenant)).expect("serialises");
    file["accounts"]
        .as_array_mut()
        .expect("accounts")
        .push(json!({"id": "001O", "name": "Other", "domains": ["other.co.uk"]}));
    file["opportunities"].as_array_mut().expect("opportunities").push(
        json!({"id": "0063", "accountId": "001O", "isClosed": false, "createdDate": date_days_ago(60)}),
    );
    snapshot(tenant, file)
}

/// Version 1 plus the lead Mixed only: an addition `$search` finds.
fn crm_v1_plus_lead(
    tenant: &connector_core::domain::TenantId,
) -> connector_core::domain::CrmSnapshot {
    let mut file: Value = serde_json::to_value(crm_v1(tenant)).expect("serialises");
    file["leads"]
        .as_array_mut()
        .expect("leads")
        .push(json!({"id": "00Q2", "email": "Mixed@Initech.EXAMPLE", "company": "Initech"}));
    snapshot(tenant, file)
}

/// The snapshot's serialised form back to a CRM file (the file format's field names).
fn snapshot(
    tenant: &connector_core::domain::TenantId,
    mut file: Value,
) -> connector_core::domain::CrmSnapshot {
    for opportunity in file["opportunities"].as_array_mut().into_iter().flatten() {
        if opportunity["accountId"].is_null() {
            opportunity
                .as_object_mut()
                .expect("object")
                .remove("accountId");
        }
    }
    crm(tenant, file)
}

async fn megan(settings: MailSettings) -> Result<(Harness, UserKey)> {
    let tenant = new_tenant();
    let id = new_user();
    let world = world(
        &tenant,
        DOMAIN,
        vec![user(&id, UPN, "exchangeOnline", megan_folders())],
        vec![],
    );
    let h = Harness::start_with(tenant.clone(), world, settings).await?;
    h.add_tenant(&[DOMAIN]).await?;
    h.import_crm(&crm_v1(&tenant)).await?;
    let key = h.connect(&id, UPN).await?;
    assert_eq!(h.run_to_end(&key).await.last(), Some(&JobOutcome::Done));
    let mut v1 = expected();
    v1.remove("<m21-lead-mixed@test>");
    v1.insert("<m22-unrelated@test>".to_owned());
    assert_eq!(h.stored_ids(&key).await?, v1, "the import with version 1");
    Ok((h, key))
}

fn v2_expected() -> BTreeSet<String> {
    let mut v2 = expected();
    v2.insert("<m17-public-suffix@test>".to_owned());
    v2.insert("<m19-before-window@test>".to_owned());
    v2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grown_crm_gives_exactly_what_a_fresh_import_stores() -> Result<()> {
    let (h, key) = megan(MailSettings::default()).await?;
    let tenant = key.tenant_id.clone();

    h.import_crm(&crm_v2(&tenant)).await?;
    let outcomes = h.run_to_end(&key).await;
    assert_eq!(outcomes.last(), Some(&JobOutcome::Done), "{outcomes:?}");
    let caught_up = stored_set(&h, &key).await?;
    assert_eq!(keys(&caught_up), v2_expected());

    // Caught up: the next run lists nothing again.
    let seq = h.next_request_seq().await?;
    assert_eq!(h.run(&key).await, JobOutcome::Done);
    let requests = h.requests_since(seq).await?;
    assert!(
        requests
            .iter()
            .all(|r| r["path"].as_str().unwrap_or_default().contains("delta")
                || r["path"].as_str().unwrap_or_default().ends_with("/me")),
        "only the folders' delta rounds: {requests:#?}"
    );

    assert_eq!(
        caught_up,
        fresh_import(&h, &key).await?,
        "a fresh import with version 2"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_added_lead_is_searched_for_and_nothing_else_is_listed() -> Result<()> {
    let (h, key) = megan(MailSettings::default()).await?;
    let tenant = key.tenant_id.clone();

    h.import_crm(&crm_v1_plus_lead(&tenant)).await?;
    let seq = h.next_request_seq().await?;
    assert_eq!(h.run_to_end(&key).await.last(), Some(&JobOutcome::Done));
    let requests = h.requests_since(seq).await?;
    let searches: Vec<&Value> = requests
        .iter()
        .filter(|r| r["query"].as_str().unwrap_or_default().contains("search"))
        .collect();
    assert_eq!(searches.len(), 1, "one search: {requests:#?}");
    assert!(
        !requests.iter().any(|r| {
            let path = r["path"].as_str().unwrap_or_default();
            path.contains("/mailFolders/") && path.ends_with("/messages")
        }),
        "no folder is listed again: {requests:#?}"
    );
    let caught_up = stored_set(&h, &key).await?;
    assert!(keys(&caught_up).contains("<m21-lead-mixed@test>"));
    assert_eq!(caught_up, fresh_import(&h, &key).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unchanged_crm_imported_again_costs_no_graph_request() -> Result<()> {
    let (h, key) = megan(MailSettings::default()).await?;
    let seq = h.next_request_seq().await?;
    assert_eq!(h.run(&key).await, JobOutcome::Done);
    let plain = h.requests_since(seq).await?.len();

    h.import_crm(&crm_v1(&key.tenant_id)).await?;
    let seq = h.next_request_seq().await?;
    assert_eq!(h.run(&key).await, JobOutcome::Done);
    assert_eq!(
        h.requests_since(seq).await?.len(),
        plain,
        "the same requests as a run without an import"
    );
    Ok(())
}

/// The backfills' page checkpoints (the window moved back and a domain was added: the
/// folders list their whole window again).
fn backfill_page(cursor: &FolderCursor) -> bool {
    cursor.backfill.is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_in_the_middle_of_the_backfill_resumes_to_the_same_set() -> Result<()> {
    let settings = MailSettings {
        page_size: 10,
        ..MailSettings::default()
    };
    let (h, key) = megan(settings).await?;
    let tenant = key.tenant_id.clone();
    h.import_crm(&crm_v2(&tenant)).await?;

    let crashed = Arc::new(Notify::new());
    let state = Arc::new(CrashingState {
        inner: h.state.clone(),
        crash_at: 2,
        checkpoints: AtomicU32::new(0),
        crashed: crashed.clone(),
        counts: backfill_page,
    });
    let worker = h.worker_with_state(state);
    let job = h.job(&key);
    let delivery = h.delivery();
    tokio::select! {
        outcome = worker.run_job(&h.app.work, &job, &delivery) => {
            panic!("the run should have crashed, it ended with {outcome:?}")
        }
        _ = crashed.notified() => {}
    }
    assert!(
        h.stored_ids(&key).await?.is_subset(
            &v2_expected()
                .union(&["<m22-unrelated@test>".to_owned()].into())
                .cloned()
                .collect()
        ),
        "only matches are stored"
    );

    let outcomes = h.run_to_end(&key).await;
    assert_eq!(outcomes.last(), Some(&JobOutcome::Done), "{outcomes:?}");
    let caught_up = stored_set(&h, &key).await?;
    assert_eq!(keys(&caught_up), v2_expected());
    assert_eq!(caught_up, fresh_import(&h, &key).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_added_domain_relists_the_folders_and_fetches_only_its_matches() -> Result<()> {
    let (h, key) = megan(MailSettings::default()).await?;
    let tenant = key.tenant_id.clone();
    let mut file: Value = serde_json::to_value(crm_v1(&tenant)).expect("serialises");
    file["accounts"]
        .as_array_mut()
        .expect("accounts")
        .push(json!({"id": "001O", "name": "Other", "domains": ["other.co.uk"]}));
    h.import_crm(&snapshot(&tenant, file)).await?;

    let seq = h.next_request_seq().await?;
    assert_eq!(h.run_to_end(&key).await.last(), Some(&JobOutcome::Done));
    let requests = h.requests_since(seq).await?;
    let path = |r: &Value| r["path"].as_str().unwrap_or_default().to_owned();
    let listed = requests
        .iter()
        .filter(|r| path(r).contains("/mailFolders/") && path(r).ends_with("/messages"))
        .count();
    let fetched = requests
        .iter()
        .filter(|r| path(r).starts_with("/v1.0/me/messages/"))
        .count();
    assert!(listed >= 5, "every synced folder is listed again: {listed}");
    assert_eq!(fetched, 1, "only the new match is fetched: {requests:#?}");
    let caught_up = stored_set(&h, &key).await?;
    assert!(keys(&caught_up).contains("<m17-public-suffix@test>"));
    assert_eq!(caught_up, fresh_import(&h, &key).await?);
    Ok(())
}
