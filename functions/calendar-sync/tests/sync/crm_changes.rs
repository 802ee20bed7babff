//! When the CRM changes after the first import: the stored meetings equal what a fresh
//! import with the new CRM stores, without a new round over the window: one `$select`ed
//! listing for the additions, local removals, and no Graph request when nothing changed.

use connector_core::domain::{CrmSnapshot, SyncKey, SyncKind, TenantId, UserKey};
use connector_core::ports::{ActivityStore, CrmIndex, SyncStateStore};
use connector_core::sync::JobOutcome;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::support::*;

const ADELE: &str = "adele@contoso.com";

fn with_attendee(subject: &str, start: OffsetDateTime, address: &str) -> Value {
    meeting(
        subject,
        start,
        60,
        ADELE,
        vec![attendee(address, "required", "none")],
    )
}

/// Version 2 of the tests' CRM: adds the contact `kim@fabrikam.com`, the account domain
/// `northwind.com`, and removes the lead Bob.
fn crm_v2(tenant: &TenantId) -> CrmSnapshot {
    let file = json!({
        "tenantId": tenant.as_str(),
        "accounts": [{"id": "001A", "name": "Acme", "domains": ["acme.com"]},
                     {"id": "001N", "name": "Northwind", "domains": ["northwind.com"]}],
        "contacts": [{"id": "003G", "email": "jane@globex.com"},
                     {"id": "003K", "email": "kim@fabrikam.com"}],
        "leads": [],
        "opportunities": []
    });
    CrmSnapshot::from_json_slice(file.to_string().as_bytes()).expect("valid CRM file")
}

async fn fresh_import(h: &Harness, key: &UserKey) -> Vec<(String, OffsetDateTime)> {
    let sync_key = SyncKey::new(
        key.tenant_id.clone(),
        key.user_id.clone(),
        SyncKind::Calendar,
    );
    h.state.delete_sync_state(&sync_key).await.expect("reset");
    h.activities
        .delete_all_activities(key)
        .await
        .expect("reset");
    assert_eq!(h.run(key).await, JobOutcome::Done);
    h.stored_set(key).await.expect("stored")
}

fn subjects(set: &[(String, OffsetDateTime)]) -> Vec<&str> {
    set.iter().map(|(subject, _)| subject.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_changed_crm_gives_what_a_fresh_import_stores_without_a_new_round() {
    let tenant = new_tenant();
    let adele = new_user();
    let now = OffsetDateTime::now_utc();
    let at = |days| day(now, days, 10);
    let events = vec![
        with_attendee("Acme", at(2), "sam@acme.com"),
        with_attendee("Bob", at(3), "bob.lead@gmail.com"),
        with_attendee("Kim", at(4), "kim@fabrikam.com"),
        with_attendee("Northwind", at(5), "li@sales.northwind.com"),
        with_attendee("Vendor", at(6), "x@vendor.io"),
        with_attendee("Kim later", at(200), "kim@fabrikam.com"),
    ];
    let h = Harness::start(
        tenant.clone(),
        world(&tenant, vec![user(&adele, ADELE, events)]),
    )
    .await
    .expect("harness");
    let key = h.connect(&adele, ADELE).await.expect("connected");
    assert_eq!(h.run(&key).await, JobOutcome::Done);
    assert_eq!(
        subjects(&h.stored_set(&key).await.unwrap()),
        ["Acme", "Bob"]
    );

    // The same CRM again: nothing but the delta round.
    h.crm_index
        .replace_snapshot(&crm(&tenant))
        .await
        .expect("import");
    let seq = h.next_request_seq().await.unwrap();
    assert_eq!(h.run(&key).await, JobOutcome::Done);
    let requests = h.requests_since(seq).await.unwrap();
    assert_eq!(requests.len(), 1, "the deltaLink round only: {requests:#?}");

    h.crm_index
        .replace_snapshot(&crm_v2(&tenant))
        .await
        .expect("import");
    let seq = h.next_request_seq().await.unwrap();
    assert_eq!(h.run(&key).await, JobOutcome::Done);
    let requests = h.requests_since(seq).await.unwrap();
    let paths: Vec<String> = requests
        .iter()
        .map(|r| r["path"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        paths
            .iter()
            .filter(|p| p.ends_with("/calendarView"))
            .count(),
        1,
        "one listing of the window: {paths:?}"
    );
    assert_eq!(
        paths
            .iter()
            .filter(|p| p.ends_with("/calendarView/delta"))
            .count(),
        1,
        "no new round, the deltaLink only: {paths:?}"
    );
    let view = requests
        .iter()
        .find(|r| {
            r["path"]
                .as_str()
                .unwrap_or_default()
                .ends_with("/calendarView")
        })
        .expect("listed");
    assert!(
        view["query"]
            .as_str()
            .unwrap_or_default()
            .contains("$select="),
        "no bodies: {view:?}"
    );
    let caught_up = h.stored_set(&key).await.unwrap();
    assert_eq!(
        subjects(&caught_up),
        ["Acme", "Kim", "Kim later", "Northwind"],
        "Kim and Northwind added, Bob removed"
    );

    // Caught up: the next run is the deltaLink round alone.
    let seq = h.next_request_seq().await.unwrap();
    assert_eq!(h.run(&key).await, JobOutcome::Done);
    assert_eq!(h.requests_since(seq).await.unwrap().len(), 1);

    assert_eq!(
        caught_up,
        fresh_import(&h, &key).await,
        "a fresh import with version 2"
    );
}
