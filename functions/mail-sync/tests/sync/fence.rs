//! Issue 13 item 7, "disconnect and offboarding win against a running worker": a worker
//! is mid-import (the sim slows every page) when the user is disconnected (or the tenant
//! offboarded) through the real disconnection, `connector_core::offboard::Stores::
//! disconnect_user`, on unfenced stores as `connectorctl`, the platform API and `/me` build
//! them: it marks the connection disconnected, deletes the token secret, waits for the
//! worker's lease, deletes the sync state, the activities with their bodies and the share
//! targets (and, offboarding, the connection record). Once that returns and the worker
//! has ended, nothing of the user exists: no activity, no body, no meta, no cursor, no
//! secret; the worker ended quietly as "disconnected"; and any further fenced write or
//! token refresh of the user is refused instead of bringing data back.

use std::time::Duration;

use anyhow::Result;
use connector_core::adapters::dynamodb::{DynamoActivityStore, DynamoSyncStateStore};
use connector_core::adapters::teams_dynamodb::DynamoShareTargetStore;
use connector_core::clock::Clock as _;
use connector_core::domain::{
    ConnectionStatus, StatusChange, SyncKey, SyncKind, SyncMeta, user_body_prefix,
};
use connector_core::offboard::{DISCONNECTED_REASON, Stores};
use connector_core::ports::{
    ActivityStore, BodyStore, ConnectionStore, StoreError, SyncStateStore, TokenVault,
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
    // The disconnection's own, unfenced stores (connectorctl's `AwsStores`).
    let tables = &h.config.tables;
    let ctl_state = DynamoSyncStateStore::new(h.dynamo.clone(), &tables.sync_state);
    let ctl_activities = DynamoActivityStore::new(h.dynamo.clone(), &tables.activities)
        .with_bodies(h.bodies.clone());
    let ctl_targets = DynamoShareTargetStore::new(h.dynamo.clone(), &tables.sync_state);
    let stores = Stores {
        subscriptions: None,
        connections: h.connections.as_ref(),
        sync: &ctl_state,
        activities: &ctl_activities,
        targets: &ctl_targets,
        vault: h.vault.as_ref(),
        // The worker lets go at its next fenced write: well within this.
        lease_wait: Duration::from_secs(60),
    };

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
        let report = stores
            .disconnect_user(&key, !offboard, h.clock.now())
            .await?;
        assert!(report.activities_deleted > 0, "{report:?}");
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
    assert_eq!(
        h.bodies.count_prefix(&user_body_prefix(&key)).await?,
        0,
        "no message body"
    );
    match h.connections.get_connection(&key).await? {
        None => assert!(offboard),
        Some(connection) => {
            assert!(!offboard);
            assert_eq!(connection.status, ConnectionStatus::Disconnected);
            assert_eq!(
                connection.status_reason.as_deref(),
                Some(DISCONNECTED_REASON),
                "recorded as finished"
            );
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
