//! Crash-resume: the worker dies after page k of a 30-page import (for every k): it is
//! killed while saving the checkpoint of page k+1, after that page's matches were stored.
//! A rerun gives the exact stored set: no duplicates, no loss. And a worker that dies
//! before its first page still leaves its run visible.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Result;
use async_trait::async_trait;
use connector_core::domain::{FolderCursor, Lease, SyncKey, SyncKind, SyncMeta, SyncStage};
use connector_core::ports::{ActivityStore, StoreError, SyncStateStore};
use connector_core::sync::JobOutcome;
use mail_sync::MailSettings;
use serde_json::json;
use tokio::sync::Notify;

use crate::support::*;

const DOMAIN: &str = "contoso.example";
const UPN: &str = "patti@contoso.example";
const SEED: u64 = 21;
const MESSAGES: u64 = 300;
const PAGE: u32 = 10;

/// A sync-state store that "crashes" (never returns, and says so) on the `crash_at`-th
/// checkpoint that `counts` (here: the inbox's page checkpoints). Its leases expire at
/// once, as a dead worker's would.
pub struct CrashingState {
    pub inner: Arc<dyn SyncStateStore>,
    pub crash_at: u32,
    pub checkpoints: AtomicU32,
    pub crashed: Arc<Notify>,
    pub counts: fn(&FolderCursor) -> bool,
}

/// The inbox's page checkpoints.
fn inbox_page(cursor: &FolderCursor) -> bool {
    cursor.well_known_name.as_deref() == Some("inbox") && cursor.cursor.is_some()
}

#[async_trait]
impl SyncStateStore for CrashingState {
    async fn acquire_lease(
        &self,
        key: &SyncKey,
        holder: &str,
        _ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.inner.acquire_lease(key, holder, Duration::ZERO).await
    }
    async fn release_lease(&self, key: &SyncKey, holder: &str) -> Result<bool, StoreError> {
        self.inner.release_lease(key, holder).await
    }
    async fn get_lease(&self, key: &SyncKey) -> Result<Option<Lease>, StoreError> {
        self.inner.get_lease(key).await
    }
    async fn get_meta(&self, key: &SyncKey) -> Result<Option<SyncMeta>, StoreError> {
        self.inner.get_meta(key).await
    }
    async fn put_meta(&self, key: &SyncKey, meta: &SyncMeta) -> Result<(), StoreError> {
        self.inner.put_meta(key, meta).await
    }
    async fn get_cursor(
        &self,
        key: &SyncKey,
        folder_id: &str,
    ) -> Result<Option<FolderCursor>, StoreError> {
        self.inner.get_cursor(key, folder_id).await
    }
    async fn put_cursor(&self, key: &SyncKey, cursor: &FolderCursor) -> Result<(), StoreError> {
        if (self.counts)(cursor) {
            let n = self.checkpoints.fetch_add(1, Ordering::SeqCst) + 1;
            if n == self.crash_at {
                self.crashed.notify_one();
                std::future::pending::<()>().await;
            }
        }
        self.inner.put_cursor(key, cursor).await
    }
    async fn list_cursors(&self, key: &SyncKey) -> Result<Vec<FolderCursor>, StoreError> {
        self.inner.list_cursors(key).await
    }
    async fn delete_cursor(&self, key: &SyncKey, folder_id: &str) -> Result<(), StoreError> {
        self.inner.delete_cursor(key, folder_id).await
    }
    async fn delete_sync_state(&self, key: &SyncKey) -> Result<(), StoreError> {
        self.inner.delete_sync_state(key).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_after_any_page_resumes_to_the_exact_set() -> Result<()> {
    let tenant = new_tenant();
    let patti = new_user();
    let world = world(
        &tenant,
        DOMAIN,
        vec![user(&patti, UPN, "exchangeOnline", json!([]))],
        vec![
            json!({"user": UPN, "folder": "inbox", "messages": MESSAGES, "seed": SEED, "crmMatchRatio": 0.2}),
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
    let expected = generated_expected(SEED, MESSAGES, "inbox", UPN);
    let pages = MESSAGES as u32 / PAGE;
    assert_eq!(pages, 30);

    for k in 0..pages {
        h.state.delete_sync_state(&sync_key).await?;
        h.activities.delete_all_activities(&key).await?;

        let crashed = Arc::new(Notify::new());
        let state = Arc::new(CrashingState {
            inner: h.state.clone(),
            crash_at: k + 1,
            checkpoints: AtomicU32::new(0),
            crashed: crashed.clone(),
            counts: inbox_page,
        });
        let worker = h.worker_with_state(state.clone());
        let job = h.job(&key);
        let delivery = h.delivery();
        tokio::select! {
            outcome = worker.run_job(&h.app.work, &job, &delivery) => {
                panic!("k={k}: the run should have crashed, it ended with {outcome:?}")
            }
            _ = crashed.notified() => {}
        }
        let before = h.stored_ids(&key).await?;
        assert!(
            before.is_subset(&expected),
            "k={k}: only matches are stored"
        );

        let outcomes = h.run_to_end(&key).await;
        assert_eq!(
            outcomes.last(),
            Some(&JobOutcome::Done),
            "k={k}: {outcomes:?}"
        );
        let stored = h.stored(&key).await?;
        let ids = h.stored_ids(&key).await?;
        assert_eq!(stored.len(), ids.len(), "k={k}: no duplicates");
        assert_eq!(ids, expected, "k={k}: the exact set");
        let inbox = h
            .state
            .list_cursors(&sync_key)
            .await?
            .into_iter()
            .find(|c| c.well_known_name.as_deref() == Some("inbox"))
            .expect("inbox cursor");
        assert_eq!(
            inbox.cursor_kind,
            Some(connector_core::domain::CursorKind::DeltaLink),
            "k={k}: the round finished"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_before_its_first_page_leaves_its_row() -> Result<()> {
    let tenant = new_tenant();
    let id = new_user();
    let world = world(
        &tenant,
        DOMAIN,
        vec![user(&id, UPN, "exchangeOnline", json!([]))],
        vec![
            json!({"user": UPN, "folder": "inbox", "messages": 20, "seed": SEED, "crmMatchRatio": 0.2}),
        ],
    );
    let h = Harness::start_with(tenant.clone(), world, MailSettings::default()).await?;
    h.add_tenant(&[DOMAIN]).await?;
    h.import_crm(&generated_crm(&tenant, SEED, 40)).await?;
    let key = h.connect(&id, UPN).await?;
    // Every Graph answer takes 5 s: the worker is killed while it discovers the folders.
    h.control(
        reqwest::Method::POST,
        "/_sim/latency",
        Some(json!({"ms": 5000})),
    )
    .await?;
    let job = h.job(&key);
    let delivery = h.delivery();
    let run = h.app.worker.run_job(&h.app.work, &job, &delivery);
    let killed = tokio::time::timeout(Duration::from_millis(1500), run).await;
    assert!(
        killed.is_err(),
        "the run should still be waiting on Graph: {killed:?}"
    );

    // What `connectorctl status` reads: a first import under way, with nothing yet counted.
    let meta = h.meta(&key).await?.expect("a mail row for the dead run");
    assert_eq!(meta.stage, SyncStage::InitialImport);
    assert_eq!(meta.last_run.pages, 0);
    assert!(meta.last_success_at.is_none());
    Ok(())
}
