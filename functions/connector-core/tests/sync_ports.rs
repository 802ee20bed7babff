//! Port methods the sync functions added, on DynamoDB (moto) and in memory:
//! `CrmIndex::load` (the whole current version, once replaced the new one, never a mix),
//! `ActivityStore::delete_mail_in_folder` (conditional on the folder), and the folder
//! cursor's mail fields.

use anyhow::{Context, Result, ensure};
use connector_core::adapters::dynamodb::{
    DynamoActivityStore, DynamoCrmIndex, DynamoSyncStateStore,
};
use connector_core::adapters::memory::{MemoryActivityStore, MemoryCrmIndex};
use connector_core::config::Tables;
use connector_core::domain::*;
use connector_core::matching::CrmMatchIndex;
use connector_core::ports::{ActivityStore, CrmIndex, SyncStateStore};
use time::OffsetDateTime;

fn snapshot(tenant: &TenantId, contacts: usize, accounts: usize) -> Result<CrmSnapshot> {
    let file = serde_json::json!({
        "tenantId": tenant.as_str(),
        "accounts": (0..accounts).map(|n| serde_json::json!({
            "id": format!("001{n}"), "name": format!("Account {n}"),
            "domains": [format!("account-{n}.example"), format!("eu.account-{n}.example")]
        })).collect::<Vec<_>>(),
        "contacts": (0..contacts).map(|n| serde_json::json!({
            "id": format!("003{n}"), "email": format!("person{n}@account-{}.example", n % accounts.max(1)),
            "accountId": format!("001{}", n % accounts.max(1))
        })).collect::<Vec<_>>(),
        "leads": [{"id": "00Q1", "email": "lead@gmail.com", "company": "Initech"}],
        "opportunities": [
            {"id": "0061", "accountId": "0010", "isClosed": false, "createdDate": "2026-01-15"},
            {"id": "0062", "accountId": "0010", "isClosed": true, "createdDate": "2025-01-15"}
        ]
    });
    CrmSnapshot::from_json_slice(file.to_string().as_bytes()).context("snapshot")
}

async fn check(index: &dyn CrmIndex, tenant: &TenantId) -> Result<()> {
    ensure!(index.load(tenant).await?.is_none(), "no index yet");
    let first = snapshot(tenant, 250, 40)?;
    index.replace_snapshot(&first).await?;
    let (summary, loaded) = index.load(tenant).await?.context("loaded")?;
    let expected = first.index();
    ensure!(loaded == CrmMatchIndex::from(&expected), "entries");
    ensure!(summary.content_hash == expected.content_hash, "hash");
    ensure!(summary.oldest_open_opportunity == expected.oldest_open_opportunity);
    ensure!(loaded.sizes() == (251, 80), "{:?}", loaded.sizes());

    let second = snapshot(tenant, 10, 2)?;
    index.replace_snapshot(&second).await?;
    let (summary2, loaded) = index.load(tenant).await?.context("loaded")?;
    ensure!(summary2.version != summary.version, "a new version");
    ensure!(
        loaded == CrmMatchIndex::from(&second.index()),
        "only the new version"
    );
    ensure!(loaded.sizes() == (11, 4));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_returns_the_current_version_on_dynamodb() -> Result<()> {
    let stack = local_stack::test_stack().await?;
    let tables = Tables::from_lookup(|name| stack.env.get(name).cloned())?;
    // Pages of 32 entries: the 331 entries load over 11 Query pages.
    let index = DynamoCrmIndex::new(aws_sdk_dynamodb::Client::new(&stack.sdk), &tables.crm)
        .with_load_page_items(32);
    let tenant = TenantId::parse(&uuid::Uuid::new_v4().to_string())?;
    check(&index, &tenant).await
}

#[tokio::test]
async fn load_returns_the_current_version_in_memory() -> Result<()> {
    let tenant = TenantId::parse(&uuid::Uuid::new_v4().to_string())?;
    check(&MemoryCrmIndex::default(), &tenant).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_cursor_mail_fields_round_trip() -> Result<()> {
    let stack = local_stack::test_stack().await?;
    let tables = Tables::from_lookup(|name| stack.env.get(name).cloned())?;
    let store = DynamoSyncStateStore::new(
        aws_sdk_dynamodb::Client::new(&stack.sdk),
        &tables.sync_state,
    );
    let key = SyncKey::new(
        TenantId::parse(&uuid::Uuid::new_v4().to_string())?,
        UserId::parse(&uuid::Uuid::new_v4().to_string())?,
        SyncKind::Mail,
    );
    let now = OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp())?;
    let mut cursor = FolderCursor::new("AQMkInbox=", now);
    cursor.cursor = Some(
        "https://graph.microsoft.com/v1.0/me/mailFolders/x/messages/delta?$deltatoken=1".into(),
    );
    cursor.cursor_kind = Some(CursorKind::DeltaLink);
    cursor.initial_round = true;
    cursor.round_items = 5000;
    cursor.oldest_seen = Some(now - time::Duration::days(3));
    cursor.backfill =
        Some("https://graph.microsoft.com/v1.0/me/mailFolders/x/messages?$top=500".into());
    store.put_cursor(&key, &cursor).await?;
    ensure!(store.get_cursor(&key, "AQMkInbox=").await?.as_ref() == Some(&cursor));
    let plain = FolderCursor::new("plain", now);
    store.put_cursor(&key, &plain).await?;
    ensure!(store.get_cursor(&key, "plain").await?.as_ref() == Some(&plain));
    Ok(())
}

fn mail(owner: &UserKey, id: &str, folder: &str) -> Activity {
    Activity::new(
        owner.clone(),
        ActivityContent::Mail(MailActivity {
            immutable_id: id.to_owned(),
            internet_message_id: None,
            conversation_id: None,
            folder_id: folder.to_owned(),
            subject: "s".into(),
            participants: Vec::new(),
            sent_at: None,
            received_at: None,
            body_preview: String::new(),
            body_text: String::new(),
            has_attachments: false,
            web_link: None,
            detail: None,
        }),
        Vec::new(),
        OffsetDateTime::UNIX_EPOCH,
    )
}

async fn check_folder_delete(store: &dyn ActivityStore) -> Result<()> {
    let owner = UserKey::new(
        TenantId::parse(&uuid::Uuid::new_v4().to_string())?,
        UserId::parse(&uuid::Uuid::new_v4().to_string())?,
    );
    store
        .upsert_activities(&[
            mail(&owner, "AAk1", "inbox"),
            mail(&owner, "AAk2", "archive"),
        ])
        .await?;
    ensure!(
        !store
            .delete_mail_in_folder(&owner, &ActivityId::mail("AAk2"), "inbox")
            .await?,
        "moved away: kept"
    );
    ensure!(
        store
            .get_activity(&owner, &ActivityId::mail("AAk2"))
            .await?
            .is_some()
    );
    ensure!(
        store
            .delete_mail_in_folder(&owner, &ActivityId::mail("AAk1"), "inbox")
            .await?
    );
    ensure!(
        store
            .get_activity(&owner, &ActivityId::mail("AAk1"))
            .await?
            .is_none()
    );
    ensure!(
        !store
            .delete_mail_in_folder(&owner, &ActivityId::mail("AAk9"), "inbox")
            .await?,
        "never stored"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_is_deleted_only_from_its_folder_on_dynamodb() -> Result<()> {
    let stack = local_stack::test_stack().await?;
    let tables = Tables::from_lookup(|name| stack.env.get(name).cloned())?;
    check_folder_delete(&DynamoActivityStore::new(
        aws_sdk_dynamodb::Client::new(&stack.sdk),
        &tables.activities,
    ))
    .await
}

#[tokio::test]
async fn mail_is_deleted_only_from_its_folder_in_memory() -> Result<()> {
    check_folder_delete(&MemoryActivityStore::default()).await
}
