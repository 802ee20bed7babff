//! Disconnecting a user, in this order (`connectorctl disconnect`, the platform API, the
//! user's own settings page all go through [`Stores::disconnect_user`]):
//! 1. the connection becomes `disconnected` with the reason [`DISCONNECT_PENDING_REASON`]
//!    (fan-out and workers skip it from now on) and keeps nothing personal: no UPN, mail, name or scopes, so the record only says "this
//!    user was disconnected"; the next sign-in replaces it with a fresh one. This is the
//!    fence (docs/fencing.md): every worker write of the user's sync state is a transaction
//!    that checks the connection is still active, activities are written only under the
//!    mailbox lease after a check of the same status, and a token refresh never creates a
//!    secret, so a worker still running with a cached access token writes nothing after
//!    this step; offboarding marks the connection the same way first and deletes it last;
//! 2. the user's change-notification subscriptions are deleted at Graph with the user's
//!    token while it still exists, and from the store ([`SubscriptionCanceller`]; one Graph
//!    cannot be asked about is left to expire within a week, and its notifications find no
//!    record and are refused); then the refresh-token secret is deleted at once (no
//!    recovery window);
//! 3. the mail and calendar sync leases are taken, waiting for a worker that is still
//!    running (workers check the connection before they take the lease, so once we hold
//!    it no worker writes for the user any more); then every sync item (lease, meta,
//!    cursors) is deleted. A live worker renews its 90 s lease every 30 s, so the wait
//!    lasts until its run ends; a dead worker's lease lapses within 90 s; a stalled one
//!    gives its run up 15 s before its lease could lapse;
//! 4. the imported activities (their items, then every message body object under the
//!    user's prefix in the bodies bucket) and the Teams share targets are deleted;
//! 5. the connection's reason becomes [`DISCONNECTED_REASON`] (a user's disconnection), or
//!    the record is deleted (offboarding). Until then the record says the disconnection is
//!    not finished, so a failed or interrupted run (a sync still holding its lease, a store
//!    error) stays visible (`/me`, `/admin`, the platform API, `connectorctl connections
//!    list --pending-disconnections`) and running it again finishes it: every step is
//!    idempotent, on a connection already disconnected (pending or finished) as well.

use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use crate::domain::{
    Connection, ConnectionStatus, ParkedUntil, ScopeSet, StatusChange, SyncKey, SyncKind, UserKey,
    UserSwitches,
};
use crate::notifications::manager::CancelReport;
use crate::ports::{
    ActivityStore, ConnectionStore, ShareTargetStore, StoreError, SyncStateStore, TokenVault,
    VaultError,
};

/// Why a disconnection stopped before it was complete. What it did so far stays done, and
/// running it again finishes it.
#[derive(Debug, thiserror::Error)]
pub enum DisconnectError {
    #[error("{step}: {source}")]
    Store {
        step: String,
        #[source]
        source: StoreError,
    },
    #[error("{step}: {source}")]
    Vault {
        step: String,
        #[source]
        source: VaultError,
    },
    #[error(
        "a {kind} sync of {user} is still running (it holds the lease); the connection is \
         disconnected and its secret deleted already, so the sync stops at its next step: \
         disconnect again in a few minutes to delete the rest"
    )]
    StillRunning { kind: SyncKind, user: UserKey },
}

/// Names the step a store error happened in.
trait Step<T> {
    fn step(self, step: impl FnOnce() -> String) -> Result<T, DisconnectError>;
}

impl<T> Step<T> for Result<T, StoreError> {
    fn step(self, step: impl FnOnce() -> String) -> Result<T, DisconnectError> {
        self.map_err(|source| DisconnectError::Store {
            step: step(),
            source,
        })
    }
}

impl<T> Step<T> for Result<T, VaultError> {
    fn step(self, step: impl FnOnce() -> String) -> Result<T, DisconnectError> {
        self.map_err(|source| DisconnectError::Vault {
            step: step(),
            source,
        })
    }
}

/// The reason recorded on a connection once its disconnection finished (everything deleted).
pub const DISCONNECTED_REASON: &str = "operator_disconnected";

/// The reason recorded on a connection from the first step of its disconnection until the
/// last one succeeded: its imported data, bodies, sync state or share targets may remain,
/// and disconnecting again deletes them.
pub const DISCONNECT_PENDING_REASON: &str = "disconnect_pending";

/// Whether `connection` is a disconnection that has not finished.
pub fn disconnect_pending(connection: &Connection) -> bool {
    connection.status == ConnectionStatus::Disconnected
        && connection.status_reason.as_deref() == Some(DISCONNECT_PENDING_REASON)
}

/// Deletes a user's change-notification subscriptions (at Graph and in the store):
/// `notifications::manager::Manager`.
#[async_trait::async_trait]
pub trait SubscriptionCanceller: Send + Sync {
    async fn cancel_all(&self, user: &UserKey) -> Result<CancelReport, StoreError>;
}

/// The ports disconnecting a user goes through.
pub struct Stores<'a> {
    /// `None` where the deployment has no change notifications (no subscription store).
    pub subscriptions: Option<&'a dyn SubscriptionCanceller>,
    pub connections: &'a dyn ConnectionStore,
    pub sync: &'a dyn SyncStateStore,
    pub activities: &'a dyn ActivityStore,
    pub targets: &'a dyn ShareTargetStore,
    pub vault: &'a dyn TokenVault,
    /// How long to wait for a running sync to release its lease.
    pub lease_wait: Duration,
}

/// What disconnecting one user did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserReport {
    pub tenant_id: String,
    pub user_id: String,
    /// The connection's status before (`None`: there was no connection record).
    pub previous_status: Option<String>,
    pub activities_deleted: u64,
    /// Change-notification subscriptions deleted at Graph, and left to expire there.
    pub subscriptions: CancelReport,
    /// `disconnected` (record kept) or `deleted` (tenant offboarding) or `absent`.
    pub connection: &'static str,
}

/// The connection as it stays after a disconnection: who and when, nothing else; its reason
/// says the disconnection is not finished yet. A connection disconnected already keeps the
/// time it was disconnected.
fn tombstone(connection: &Connection, now: OffsetDateTime) -> Connection {
    let disconnected_at = if connection.status == ConnectionStatus::Disconnected {
        connection.status_changed_at
    } else {
        now
    };
    let mut gone = connection.clone();
    gone.upn = String::new();
    gone.mail = None;
    gone.display_name = None;
    gone.granted_scopes = ScopeSet::new();
    gone.switches = UserSwitches::default();
    gone.parked_until = ParkedUntil::default();
    gone.apply(&StatusChange::new(
        ConnectionStatus::Disconnected,
        Some(DISCONNECT_PENDING_REASON),
        disconnected_at,
    ));
    gone.updated_at = now;
    gone
}

impl Stores<'_> {
    /// Holds the sync lease of `key`, waiting up to `lease_wait` for a running worker.
    async fn quiesce(&self, key: &SyncKey, holder: &str) -> Result<(), DisconnectError> {
        let deadline = tokio::time::Instant::now() + self.lease_wait;
        loop {
            // Long enough to delete everything; deleting the state removes the lease too.
            if self
                .sync
                .acquire_lease(key, holder, Duration::from_secs(600))
                .await
                .step(|| format!("taking the sync lease of {key}"))?
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(DisconnectError::StillRunning {
                    kind: key.kind,
                    user: key.user(),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Disconnects one user. `keep_record`: leave a `disconnected` connection record
    /// (a user's disconnection) or delete it (tenant offboarding).
    pub async fn disconnect_user(
        &self,
        key: &UserKey,
        keep_record: bool,
        now: OffsetDateTime,
    ) -> Result<UserReport, DisconnectError> {
        let existing = self
            .connections
            .get_connection(key)
            .await
            .step(|| format!("reading the connection of {key}"))?;
        // First, also when offboarding deletes the record at the end: a disconnected
        // connection is the fence every worker write checks (docs/fencing.md), so from
        // here on no running worker writes anything of this user again.
        if let Some(connection) = &existing {
            self.connections
                .upsert_connection(&tombstone(connection, now))
                .await
                .step(|| format!("marking {key} disconnected"))?;
        }
        let subscriptions = match self.subscriptions {
            Some(canceller) => canceller
                .cancel_all(key)
                .await
                .step(|| format!("deleting the change-notification subscriptions of {key}"))?,
            None => CancelReport::default(),
        };
        self.vault
            .delete_token(key)
            .await
            .step(|| format!("deleting the token secret of {key}"))?;
        let holder = format!("offboarding-{}", uuid::Uuid::new_v4());
        for kind in SyncKind::ALL {
            let sync_key = SyncKey::new(key.tenant_id.clone(), key.user_id.clone(), kind);
            self.quiesce(&sync_key, &holder).await?;
            self.sync
                .delete_sync_state(&sync_key)
                .await
                .step(|| format!("deleting the sync state of {sync_key}"))?;
        }
        let activities_deleted = self
            .activities
            .delete_all_activities(key)
            .await
            .step(|| format!("deleting the activities of {key}"))?;
        self.targets
            .delete_targets(key)
            .await
            .step(|| format!("deleting the share targets of {key}"))?;
        let connection = match (&existing, keep_record) {
            (Some(_), true) => {
                // Only the tombstone this run wrote: a user who signed in again meanwhile
                // has a new connection, which this must not mark.
                self.connections
                    .replace_disconnected_reason(
                        key,
                        DISCONNECT_PENDING_REASON,
                        DISCONNECTED_REASON,
                        now,
                    )
                    .await
                    .step(|| format!("recording the disconnection of {key} as finished"))?;
                "disconnected"
            }
            (Some(_), false) => {
                self.connections
                    .delete_connection(key)
                    .await
                    .step(|| format!("deleting the connection of {key}"))?;
                "deleted"
            }
            (None, _) => "absent",
        };
        Ok(UserReport {
            tenant_id: key.tenant_id.to_string(),
            user_id: key.user_id.to_string(),
            previous_status: existing.map(|c| c.status.to_string()),
            activities_deleted,
            subscriptions,
            connection,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{FeatureBundle, TenantId, UserId};
    use time::macros::datetime;

    #[test]
    fn a_tombstone_keeps_nothing_personal() {
        let mut connection = Connection::new_active(
            TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").expect("guid"),
            UserId::parse("00000000-0000-0000-0000-000000000001").expect("guid"),
            "adele@contoso.com",
            FeatureBundle::All.scope_set(),
            datetime!(2026-03-01 8:00 UTC),
        );
        connection.mail = Some("adele@contoso.com".into());
        connection.display_name = Some("Adele Vance".into());
        let gone = tombstone(&connection, datetime!(2026-03-02 8:00 UTC));
        assert_eq!(gone.status, ConnectionStatus::Disconnected);
        assert_eq!(
            gone.status_reason.as_deref(),
            Some(DISCONNECT_PENDING_REASON)
        );
        assert!(disconnect_pending(&gone));
        assert_eq!(gone.status_changed_at, datetime!(2026-03-02 8:00 UTC));
        let json = serde_json::to_string(&gone).expect("json");
        assert!(!json.contains("adele") && !json.contains("Adele"), "{json}");
        assert!(gone.granted_scopes.usable_features().is_empty());
        assert_eq!(
            (gone.tenant_id, gone.user_id),
            (connection.tenant_id, connection.user_id)
        );
    }

    fn adele() -> Connection {
        Connection::new_active(
            TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").expect("guid"),
            UserId::parse("00000000-0000-0000-0000-000000000002").expect("guid"),
            "adele@contoso.com",
            FeatureBundle::All.scope_set(),
            datetime!(2026-03-01 8:00 UTC),
        )
    }

    /// A disconnection stopped by a running sync stays recorded as pending (and fenced);
    /// running it again, once the sync let go, finishes it and records that; running it on
    /// the finished tombstone changes nothing but `updatedAt`.
    #[tokio::test]
    async fn an_unfinished_disconnection_is_recorded_as_pending_until_a_rerun_finishes_it() {
        use crate::adapters::memory::{
            MemoryActivityStore, MemoryConnectionStore, MemorySyncStateStore, MemoryTokenVault,
        };
        use crate::adapters::teams_memory::MemoryShareTargetStore;
        use crate::domain::SyncMeta;

        let connections = MemoryConnectionStore::default();
        let sync = MemorySyncStateStore::default();
        let activities = MemoryActivityStore::default();
        let targets = MemoryShareTargetStore::default();
        let vault = MemoryTokenVault::default();
        let stores = Stores {
            subscriptions: None,
            connections: &connections,
            sync: &sync,
            activities: &activities,
            targets: &targets,
            vault: &vault,
            lease_wait: Duration::from_millis(600),
        };
        let connection = adele();
        let key = connection.key();
        connections
            .upsert_connection(&connection)
            .await
            .expect("put");
        let mail = SyncKey::new(key.tenant_id.clone(), key.user_id.clone(), SyncKind::Mail);
        sync.put_meta(&mail, &SyncMeta::new(datetime!(2026-03-01 8:00 UTC)))
            .await
            .expect("meta");
        assert!(
            sync.acquire_lease(&mail, "worker-1", Duration::from_secs(300))
                .await
                .expect("lease")
        );

        let first = datetime!(2026-03-02 8:00 UTC);
        let error = stores
            .disconnect_user(&key, true, first)
            .await
            .expect_err("a sync holds the lease");
        assert!(matches!(
            error,
            DisconnectError::StillRunning {
                kind: SyncKind::Mail,
                ..
            }
        ));
        let pending = connections
            .get_connection(&key)
            .await
            .expect("get")
            .expect("kept");
        assert!(disconnect_pending(&pending), "{pending:?}");
        assert_eq!(pending.status_changed_at, first);
        assert!(
            sync.get_meta(&mail).await.expect("meta").is_some(),
            "nothing deleted under the sync"
        );

        assert!(
            sync.release_lease(&mail, "worker-1")
                .await
                .expect("release")
        );
        let second = datetime!(2026-03-02 8:05 UTC);
        let report = stores
            .disconnect_user(&key, true, second)
            .await
            .expect("finished");
        assert_eq!(report.connection, "disconnected");
        assert_eq!(report.previous_status.as_deref(), Some("disconnected"));
        let done = connections
            .get_connection(&key)
            .await
            .expect("get")
            .expect("kept");
        assert!(!disconnect_pending(&done));
        assert_eq!(done.status, ConnectionStatus::Disconnected);
        assert_eq!(done.status_reason.as_deref(), Some(DISCONNECTED_REASON));
        assert_eq!(
            done.status_changed_at, first,
            "disconnected when it was first asked"
        );
        assert!(sync.get_meta(&mail).await.expect("meta").is_none());

        let third = datetime!(2026-03-03 8:00 UTC);
        stores
            .disconnect_user(&key, true, third)
            .await
            .expect("idempotent");
        let again = connections
            .get_connection(&key)
            .await
            .expect("get")
            .expect("kept");
        assert_eq!(again.status_reason.as_deref(), Some(DISCONNECTED_REASON));
        assert_eq!((again.status_changed_at, again.updated_at), (first, third));
    }

    /// The last step marks only the tombstone its run wrote: a user who signed in again
    /// meanwhile keeps the new, active connection.
    #[tokio::test]
    async fn finishing_never_marks_a_connection_made_again_meanwhile() {
        use crate::adapters::memory::MemoryConnectionStore;

        let connections = MemoryConnectionStore::default();
        let connection = adele();
        let key = connection.key();
        connections
            .upsert_connection(&connection)
            .await
            .expect("put");
        let now = datetime!(2026-03-02 8:00 UTC);
        assert!(
            !connections
                .replace_disconnected_reason(
                    &key,
                    DISCONNECT_PENDING_REASON,
                    DISCONNECTED_REASON,
                    now
                )
                .await
                .expect("write")
        );
        assert_eq!(
            connections
                .get_connection(&key)
                .await
                .expect("get")
                .expect("kept"),
            connection
        );
    }
}
