//! Issue 13 item 7, "disconnect and offboarding win against a running worker": a worker
//! is mid-import (the sim slows every page) when the user is disconnected (or the tenant
//! offboarded). The test plays `connectorctl disconnect_user`'s steps through unfenced
//! stores, in its order (connectorctl is a binary crate, so its code cannot be called
//! from here; tools/connectorctl/tests/offboard.rs runs the binary itself): mark the
//! connection disconnected, delete the token secret, wait for the worker's lease, delete
//! the sync state and the activities (and, offboarding, the connection record). Once that
//! returns and the worker has ended, nothing of the user exists: no activity, no meta, no
//! cursor, no secret; the worker ended quietly as "disconnected"; and any further fenced
//! write or token refresh of the user is refused instead of bringing data back.

use std::time::Duration;

use anyhow::Result;
use connector_core::adapters::dynamodb::{DynamoActivityStore, DynamoSyncStateStore};
use connector_core::clock::Clock as _;
use connector_core::domain::{ConnectionStatus, StatusChange, SyncKey, SyncKind, SyncMeta};
use connector_core::ports::{
    ActivityStore, ConnectionStore, StoreError, SyncStateStore, TokenVault,
};
use connector_core::secret::{RefreshToken, TokenRecord};
use connector_core::sync::JobOutcome;
use mail_sync::MailSettings;
use serde_json::json;

use crate::support::*;

const DOMAIN: &str = "contoso.example";
const UPN: &str = "patti@contoso.example";
const SEED: u64 = 23;
const MESSAGES: u64 = 300;
const PAGE: u32 = 10;

async fn disconnect_mid_import(offboard: bool) -> Result<()> {
    let tenant = new_tenant();
    let patti = new_user();
    let world = world(
        &tenant,
        DOMAIN,
        vec![user(&patti, UPN, "exchangeOnline", json!([]))],
        vec![
            json!({"user": UPN, "folder": "inbox", "messages": MESSAGES, "seed": SEED, "crmMatchRatio": 0.3}),
        ],
    );
    let settings = MailSettings {
        page_size: PAGE,
        ..MailSettings::default()
    };
    let h = Harness::start_with(tenant.clone(), world, settings).await?;
    h.add_tenant(&[DOMAIN]).await?;
    h.import_crm(&generated_crm(&tenant, SEED, 400)).await?;
    let key = h.connect(&patti, UPN).await?;
    let sync_key = SyncKey::new(key.tenant_id.clone(), key.user_id.clone(), SyncKind::Mail);
    // Every Graph page slow: the import takes many seconds.
    h.control(
        reqwest::Method::POST,
        "/_sim/latency",
        Some(json!({"ms": 150})),
    )
    .await?;
    // connectorctl's own, unfenced stores.
    let tables = &h.config.tables;
    let ctl_state = DynamoSyncStateStore::new(h.dynamo.clone(), &tables.sync_state);
    let ctl_activities = DynamoActivityStore::new(h.dynamo.clone(), &tables.activities);

    let job = h.job(&key);
    let delivery = h.delivery();
    let run = h.app.worker.run_job(&h.app.work, &job, &delivery);
    let disconnect = async {
        // Mid-import: some matches stored, the inbox not finished.
        let first = loop {
            if let Some(first) = h.stored(&key).await?.into_iter().next() {
                break first;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // 1. The fence: disconnected (offboarding too marks it first).
        h.connections
            .set_status(
                &key,
                &StatusChange::new(
                    ConnectionStatus::Disconnected,
                    Some("user_disconnected"),
                    h.clock.now(),
                ),
            )
            .await?;
        // 2. The token secret.
        h.vault.delete_token(&key).await?;
        // 3. The worker's lease, then the sync state.
        while !ctl_state
            .acquire_lease(&sync_key, "offboarding-test", Duration::from_secs(60))
            .await?
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ctl_state.delete_sync_state(&sync_key).await?;
        // 4. The activities, and offboarding's connection record.
        ctl_activities.delete_all_activities(&key).await?;
        if offboard {
            h.connections.delete_connection(&key).await?;
        }
        anyhow::Ok(first)
    };
    let (outcome, first) = tokio::join!(run, disconnect);
    let first = first?;
    assert_eq!(
        outcome,
        JobOutcome::Skipped {
            reason: "disconnected"
        },
        "the worker ends quietly, neither retried nor failed"
    );

    // Nothing of the user was written after the disconnect returned.
    assert!(h.stored(&key).await?.is_empty(), "no activity");
    assert_eq!(h.meta(&key).await?, None::<SyncMeta>, "no meta");
    assert!(
        h.state.list_cursors(&sync_key).await?.is_empty(),
        "no cursor"
    );
    assert!(h.state.get_lease(&sync_key).await?.is_none(), "no lease");
    assert!(h.vault.get_token(&key).await?.is_none(), "no secret");
    match h.connections.get_connection(&key).await? {
        None => assert!(offboard),
        Some(connection) => {
            assert!(!offboard);
            assert_eq!(connection.status, ConnectionStatus::Disconnected);
        }
    }

    // And nothing can be: a late worker's writes are refused as a whole, its refresh
    // finds no secret to update, its status change does not overwrite `disconnected`.
    assert!(matches!(
        h.activities.upsert_activities(&[first]).await,
        Err(StoreError::Fenced { .. })
    ));
    assert!(matches!(
        h.state
            .put_meta(&sync_key, &SyncMeta::new(h.clock.now()))
            .await,
        Err(StoreError::Fenced { .. })
    ));
    assert!(matches!(
        h.state
            .acquire_lease(&sync_key, "late-worker", Duration::from_secs(60))
            .await,
        Err(StoreError::Fenced { .. })
    ));
    let refreshed = TokenRecord {
        refresh_token: RefreshToken::new("late-refresh".to_owned()),
        scopes: Default::default(),
        updated_at: h.clock.now(),
    };
    assert!(!h.vault.replace_token(&key, &refreshed).await?);
    assert!(h.vault.get_token(&key).await?.is_none(), "never recreated");
    let late_status = h
        .connections
        .set_status(
            &key,
            &StatusChange::new(
                ConnectionStatus::ReauthRequired,
                Some("invalid_grant"),
                h.clock.now(),
            ),
        )
        .await;
    assert!(late_status.is_err(), "{late_status:?}");
    assert!(h.stored(&key).await?.is_empty());
    assert_eq!(h.meta(&key).await?, None::<SyncMeta>);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disconnect_mid_import_leaves_nothing_written_after_it() -> Result<()> {
    disconnect_mid_import(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offboarding_mid_import_leaves_nothing_written_after_it() -> Result<()> {
    disconnect_mid_import(true).await
}
