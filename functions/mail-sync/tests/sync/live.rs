//! Live changes between runs: new, deleted and moved messages, and a new child folder
//! (picked up by the daily folder refresh).

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use connector_core::domain::ActivityId;
use connector_core::ports::ActivityStore;
use connector_core::sync::JobOutcome;
use serde_json::json;

use crate::matching::{expected, megan_crm, megan_folders};
use crate::support::*;

const DOMAIN: &str = "contoso.example";
const UPN: &str = "megan@contoso.example";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_deleted_moved_messages_and_a_new_folder() -> Result<()> {
    let tenant = new_tenant();
    let megan = new_user();
    let world = world(
        &tenant,
        DOMAIN,
        vec![user(&megan, UPN, "exchangeOnline", megan_folders())],
        vec![],
    );
    let h = Harness::start(tenant.clone(), world).await?;
    h.add_tenant(&[DOMAIN]).await?;
    h.import_crm(&megan_crm(&tenant)).await?;
    let key = h.connect(&megan, UPN).await?;
    assert_eq!(h.run(&key).await, JobOutcome::Done);
    assert_eq!(h.stored_ids(&key).await?, expected());

    let mail = h.stored_mail(&key).await?;
    let by_key = |k: &str| {
        mail.iter()
            .find(|m| m.internet_message_id.as_deref() == Some(&format!("<{k}@test>")))
            .cloned()
            .with_context(|| format!("{k} stored"))
    };
    let deleted = by_key("m02-domain")?;
    let moved = by_key("m01-contact")?;
    let trashed = by_key("m03-subdomain")?;
    let customers = by_key("m28-custom-folder")?.folder_id;
    let inbox = moved.folder_id.clone();
    let post = reqwest::Method::POST;

    // New mail: one match, one not.
    h.control(post.clone(), &format!("/_sim/users/{UPN}/messages"),
        Some(json!({"folder": "inbox", "message": message("n01-new-match", "New", "jane@acme.example", &[UPN], 0)}))).await?;
    h.control(post.clone(), &format!("/_sim/users/{UPN}/messages"),
        Some(json!({"folder": "inbox", "message": message("n02-new-other", "Other", "x@vendor.example", &[UPN], 0)}))).await?;
    // Deleted for good, moved to Deleted Items, moved to another synced folder.
    h.control(
        reqwest::Method::DELETE,
        &format!("/_sim/users/{UPN}/messages/{}", deleted.immutable_id),
        None,
    )
    .await?;
    h.control(
        post.clone(),
        &format!("/_sim/users/{UPN}/messages/{}/move", trashed.immutable_id),
        Some(json!({"folder": "deleteditems"})),
    )
    .await?;
    h.control(
        post.clone(),
        &format!("/_sim/users/{UPN}/messages/{}/move", moved.immutable_id),
        Some(json!({"folder": "Customers"})),
    )
    .await?;
    // A new child folder with a match in it.
    h.control(
        post.clone(),
        &format!("/_sim/users/{UPN}/mailFolders"),
        Some(json!({"displayName": "Renewals", "parent": "inbox"})),
    )
    .await?;
    h.control(post.clone(), &format!("/_sim/users/{UPN}/messages"),
        Some(json!({"folder": "Renewals", "message": message("n03-new-folder", "Renewal", "jane@acme.example", &[UPN], 0)}))).await?;

    assert_eq!(h.run(&key).await, JobOutcome::Done);
    let mut now_expected: BTreeSet<String> = expected();
    now_expected.insert("<n01-new-match@test>".into());
    now_expected.remove("<m02-domain@test>");
    now_expected.remove("<m03-subdomain@test>");
    assert_eq!(
        h.stored_ids(&key).await?,
        now_expected,
        "the folder list is refreshed daily: not yet the new folder"
    );
    let after = h.stored_mail(&key).await?;
    let moved_now: Vec<_> = after
        .iter()
        .filter(|m| m.internet_message_id.as_deref() == Some("<m01-contact@test>"))
        .collect();
    assert_eq!(moved_now.len(), 1, "moved, not duplicated");
    assert_eq!(
        moved_now[0].immutable_id, moved.immutable_id,
        "immutable ids survive moves"
    );
    assert_eq!(moved_now[0].folder_id, customers);
    assert_ne!(moved_now[0].folder_id, inbox);
    assert!(
        h.activities
            .get_activity(&key, &ActivityId::mail(&deleted.immutable_id))
            .await?
            .is_none()
    );
    let summary = h
        .sink
        .runs
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("summary");
    // Two deletions; the move counts a third when the old folder's removal came first.
    assert!((2..=3).contains(&summary.removed), "{summary:?}");

    // A day later the folder list is refreshed and the new folder imported.
    h.advance(time::Duration::hours(25)).await?;
    assert_eq!(h.run(&key).await, JobOutcome::Done);
    now_expected.insert("<n03-new-folder@test>".into());
    assert_eq!(h.stored_ids(&key).await?, now_expected);
    Ok(())
}
