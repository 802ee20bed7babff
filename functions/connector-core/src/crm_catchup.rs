//! Catching up with a CRM that changed: what mail-sync and calendar-sync do so that a
//! user's stored set equals what a fresh import with today's CRM would store, at a cost
//! that follows what changed in the CRM rather than the size of the mailbox.
//!
//! - **The checkpoint** ([`CatchUp`], the sync's cursor [`CRM_CURSOR`]): the `imported_at`
//!   of the CRM import the stored set reflects (`applied`), and a catch-up under way
//!   toward a newer import (`target`, with its progress). A sync's first run starts caught
//!   up with the index it imports with. A newer import during a catch-up restarts it: the
//!   additions since `applied` include both imports'.
//! - **Additions** come from the index itself: every entry keeps the instant of the import
//!   that first brought it ([`crate::ports::CrmIndex::additions_since`]), so a catch-up
//!   needs no change log, and an address removed and brought back is looked for again.
//! - **Removals** ([`prune`]): a stored activity that today's CRM no longer makes relevant
//!   is deleted, with its body. The decision (see the README, "When the CRM changes"):
//!   the stored set follows the CRM both ways, as the import after a lost delta state
//!   already did for mail; a customer who removes a contact from the CRM expects the
//!   connector to stop holding their mail. No Graph request: the stored participants are
//!   judged again by the same rules the import uses.
//! - **What each sync does with additions** is its own: mail searches added addresses
//!   (`$search`) and lists its folders again for added account domains; the calendar
//!   lists its window once (mail-sync's and calendar-sync's READMEs).

use time::OffsetDateTime;
use tracing::info;

use crate::domain::{
    Activity, ActivityId, CatchUpTarget, CrmCatchUp, CrmIndexSummary, FolderCursor, SyncKey,
    SyncKind, TenantId, UserKey,
};
use crate::messages::{SyncJob, SyncReason};
use crate::ports::{
    ActivityStore, ConnectionStore, JobQueue, PageToken, QueueMessage, StoreError, SyncStateStore,
    TenantStore,
};
use crate::sync::wants_job;

/// The folder id of the catch-up checkpoint among a sync's cursors (never a Graph folder
/// id: those are long base64 strings).
pub const CRM_CURSOR: &str = "crm";

/// A sync's catch-up checkpoint, read at the start of a run.
#[derive(Debug)]
pub struct CatchUp {
    cursor: FolderCursor,
}

/// What [`CatchUp::begin`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Begin {
    /// The stored set reflects the current import.
    CaughtUp,
    /// A catch-up toward the current import is under way (resumed from its checkpoint).
    Resumed,
    /// The CRM changed: a catch-up starts (or starts over, toward a newer import).
    Started,
}

impl CatchUp {
    /// Takes the checkpoint out of a sync's listed cursors (the run lists them anyway,
    /// so the checkpoint costs no read of its own). A sync without one starts caught up
    /// with `summary`, written once: its first import matches with that index.
    pub async fn open(
        state: &dyn SyncStateStore,
        key: &SyncKey,
        cursors: &mut Vec<FolderCursor>,
        summary: &CrmIndexSummary,
        now: OffsetDateTime,
    ) -> Result<Self, StoreError> {
        let listed = cursors
            .iter()
            .position(|cursor| cursor.folder_id == CRM_CURSOR)
            .map(|at| cursors.swap_remove(at));
        if let Some(cursor) = listed.filter(|cursor| cursor.catch_up.is_some()) {
            return Ok(Self { cursor });
        }
        let mut cursor = FolderCursor::new(CRM_CURSOR, now);
        cursor.catch_up = Some(CrmCatchUp {
            applied: summary.imported_at,
            target: None,
        });
        state.put_cursor(key, &cursor).await?;
        Ok(Self { cursor })
    }

    fn state(&self) -> &CrmCatchUp {
        self.cursor
            .catch_up
            .as_ref()
            .expect("a catch-up cursor always holds its state")
    }

    fn state_mut(&mut self) -> &mut CrmCatchUp {
        self.cursor
            .catch_up
            .as_mut()
            .expect("a catch-up cursor always holds its state")
    }

    /// The import the stored set reflects.
    pub fn applied(&self) -> OffsetDateTime {
        self.state().applied
    }

    /// Whether an import since the applied one left out an address or domain, so that
    /// stored activities may no longer be relevant ([`prune`] is needed).
    pub fn removals_since_applied(&self, summary: &CrmIndexSummary) -> bool {
        summary
            .removed_at
            .is_some_and(|removed| removed > self.applied())
    }

    /// Compares the checkpoint with the current import (in memory; [`Self::save`] keeps it).
    pub fn begin(&mut self, summary: &CrmIndexSummary) -> Begin {
        let state = self.state_mut();
        if summary.imported_at <= state.applied {
            state.target = None;
            return Begin::CaughtUp;
        }
        if state
            .target
            .as_ref()
            .is_some_and(|target| target.imported_at == summary.imported_at)
        {
            return Begin::Resumed;
        }
        state.target = Some(CatchUpTarget {
            imported_at: summary.imported_at,
            step: 0,
            term: None,
            next: None,
            seen: 0,
            relisting: false,
        });
        Begin::Started
    }

    /// The catch-up under way, if any.
    pub fn target(&self) -> Option<&CatchUpTarget> {
        self.state().target.as_ref()
    }

    pub fn target_mut(&mut self) -> Option<&mut CatchUpTarget> {
        self.state_mut().target.as_mut()
    }

    /// Saves the checkpoint (after each step's writes, so a crash resumes after them).
    pub async fn save(
        &mut self,
        state: &dyn SyncStateStore,
        key: &SyncKey,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.cursor.updated_at = now;
        state.put_cursor(key, &self.cursor).await
    }

    /// The catch-up is complete: the stored set reflects its import.
    pub async fn finish(
        &mut self,
        state: &dyn SyncStateStore,
        key: &SyncKey,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let catch_up = self.state_mut();
        if let Some(target) = catch_up.target.take() {
            catch_up.applied = target.imported_at;
        }
        self.save(state, key, now).await
    }
}

/// Queues a `CrmChanged` job for every mailbox and calendar of the tenant that wants one
/// (the fan-out's rule, [`crate::sync::wants_job`]), after an import that changed the
/// index; returns how many (mail, calendar) jobs were sent.
pub async fn queue_catch_up(
    connections: &dyn ConnectionStore,
    tenants: &dyn TenantStore,
    queue: &dyn JobQueue,
    queues: &CatchUpQueues,
    tenant_id: &TenantId,
    now: OffsetDateTime,
) -> Result<(usize, usize), CatchUpQueueError> {
    let tenant = tenants.get_tenant(tenant_id).await?;
    let mut sent = (0, 0);
    for (kind, url) in [
        (SyncKind::Mail, &queues.mail_sync),
        (SyncKind::Calendar, &queues.calendar_sync),
    ] {
        let messages: Vec<QueueMessage> = connections
            .list_by_tenant(tenant_id)
            .await?
            .iter()
            .filter(|connection| wants_job(connection, tenant.as_ref(), kind, now))
            .map(|connection| {
                let job = SyncJob::new(
                    kind,
                    tenant_id.clone(),
                    connection.user_id.clone(),
                    SyncReason::CrmChanged,
                );
                serde_json::to_string(&job).map(QueueMessage::new)
            })
            .collect::<Result<_, _>>()
            .map_err(|error| CatchUpQueueError::Encode(error.to_string()))?;
        let count = queue.send_batch(url, &messages).await?;
        match kind {
            SyncKind::Mail => sent.0 = count,
            SyncKind::Calendar => sent.1 = count,
        }
    }
    Ok(sent)
}

/// The sync queues a catch-up is sent to.
#[derive(Clone, Debug)]
pub struct CatchUpQueues {
    pub mail_sync: String,
    pub calendar_sync: String,
}

/// Why catch-up jobs could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum CatchUpQueueError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] crate::ports::QueueError),
    #[error("a job could not be encoded: {0}")]
    Encode(String),
}

/// A stored activity judged again by today's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Remove,
    /// The item holds a bounded part of the activity (more participants than it keeps)
    /// and that part no longer matches: judge the whole activity (read back with its
    /// detail).
    NeedsWhole,
}

/// Activities read per page by [`prune`].
pub const PRUNE_PAGE: u32 = 500;

/// Deletes the user's stored activities of one kind (`prefix`: `mail#`, `event#`) that
/// `judge` no longer keeps, with their bodies; returns how many. Reads the stored items
/// page by page (no Graph request); an activity judged on a bounded item is read whole
/// before it is removed.
pub async fn prune(
    store: &dyn ActivityStore,
    owner: &UserKey,
    prefix: &str,
    judge: &(dyn Fn(&Activity) -> Verdict + Send + Sync),
) -> Result<u64, StoreError> {
    let mut token: Option<PageToken> = None;
    let mut removed = 0u64;
    loop {
        let page = store
            .list_activities_with_prefix(owner, prefix, PRUNE_PAGE, token.as_ref())
            .await?;
        let mut gone: Vec<ActivityId> = Vec::new();
        for activity in &page.items {
            let verdict = match judge(activity) {
                Verdict::NeedsWhole => {
                    match store.get_activity(owner, &activity.activity_id).await? {
                        Some(whole) => match judge(&whole) {
                            Verdict::Remove => Verdict::Remove,
                            _ => Verdict::Keep,
                        },
                        None => Verdict::Keep,
                    }
                }
                verdict => verdict,
            };
            if verdict == Verdict::Remove {
                gone.push(activity.activity_id.clone());
            }
        }
        if !gone.is_empty() {
            store.delete_activities(owner, &gone).await?;
            removed += gone.len() as u64;
        }
        match page.next {
            Some(next) => token = Some(next),
            None => {
                if removed > 0 {
                    info!(
                        removed,
                        kind = prefix.trim_end_matches('#'),
                        "removed activities no CRM record makes relevant any more"
                    );
                }
                return Ok(removed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory::{MemoryActivityStore, MemorySyncStateStore};
    use crate::domain::{ActivityContent, MeetingActivity, SyncKind, TenantId, UserId};
    use time::macros::datetime;

    fn key() -> SyncKey {
        SyncKey {
            tenant_id: TenantId::parse("11111111-1111-1111-1111-111111111111").expect("id"),
            user_id: UserId::parse("22222222-2222-2222-2222-222222222222").expect("id"),
            kind: SyncKind::Mail,
        }
    }

    fn summary(at: OffsetDateTime) -> CrmIndexSummary {
        CrmIndexSummary {
            version: format!("v{}", at.unix_timestamp()),
            content_hash: "h".into(),
            imported_at: at,
            oldest_open_opportunity: None,
            stats: Default::default(),
            removed_at: None,
        }
    }

    #[tokio::test]
    async fn a_first_run_is_caught_up_and_a_newer_import_starts_then_restarts_a_catch_up() {
        let state = MemorySyncStateStore::default();
        let key = key();
        let v1 = datetime!(2026-12-01 10:00 UTC);
        let v2 = datetime!(2026-12-02 10:00 UTC);
        let v3 = datetime!(2026-12-03 10:00 UTC);
        let now = datetime!(2026-12-04 10:00 UTC);

        let mut cursors = state.list_cursors(&key).await.expect("listed");
        let mut catch_up = CatchUp::open(&state, &key, &mut cursors, &summary(v1), now)
            .await
            .expect("open");
        assert_eq!(catch_up.begin(&summary(v1)), Begin::CaughtUp);
        assert_eq!(catch_up.applied(), v1);

        assert_eq!(catch_up.begin(&summary(v2)), Begin::Started);
        catch_up.target_mut().expect("under way").step = 3;
        catch_up.save(&state, &key, now).await.expect("save");

        // A later run resumes where the checkpoint says.
        let mut cursors = state.list_cursors(&key).await.expect("listed");
        assert_eq!(cursors.len(), 1, "the checkpoint was written");
        let mut again = CatchUp::open(&state, &key, &mut cursors, &summary(v2), now)
            .await
            .expect("open");
        assert!(cursors.is_empty(), "taken out of the listing");
        assert_eq!(again.begin(&summary(v2)), Begin::Resumed);
        assert_eq!(again.target().expect("under way").step, 3);
        assert_eq!(again.applied(), v1, "not applied before it finishes");

        // A newer import starts over (its additions since v1 include v2's).
        assert_eq!(again.begin(&summary(v3)), Begin::Started);
        assert_eq!(again.target().expect("under way").step, 0);
        again.finish(&state, &key, now).await.expect("finish");
        let mut cursors = state.list_cursors(&key).await.expect("listed");
        let done = CatchUp::open(&state, &key, &mut cursors, &summary(v3), now)
            .await
            .expect("open");
        assert_eq!(done.applied(), v3);
        assert!(done.target().is_none());
    }

    #[tokio::test]
    async fn prune_removes_what_the_judge_drops_and_reads_bounded_items_whole() {
        let store = MemoryActivityStore::default();
        let owner = key().user();
        let at = datetime!(2026-12-01 10:00 UTC);
        let meeting = |id: &str, subject: &str| {
            let content = ActivityContent::Meeting(MeetingActivity {
                immutable_id: id.into(),
                ical_uid: None,
                series_master_id: None,
                occurrence_start: None,
                subject: subject.into(),
                start: at,
                end: at + time::Duration::hours(1),
                is_all_day: false,
                organizer: None,
                attendees: Vec::new(),
                online_meeting_provider: None,
                join_url: None,
                location: None,
                show_as: None,
                is_cancelled: false,
                web_link: None,
            });
            Activity::new(owner.clone(), content, Vec::new(), at)
        };
        store
            .upsert_activities(&[
                meeting("keep", "keep"),
                meeting("drop", "drop"),
                meeting("whole", "whole"),
            ])
            .await
            .expect("stored");
        let judge = |activity: &Activity| match &activity.content {
            ActivityContent::Meeting(m) if m.subject == "drop" => Verdict::Remove,
            // The memory store keeps activities whole: asking again gives the same item.
            ActivityContent::Meeting(m) if m.subject == "whole" => Verdict::NeedsWhole,
            _ => Verdict::Keep,
        };
        let removed = prune(&store, &owner, "event#", &judge)
            .await
            .expect("pruned");
        assert_eq!(removed, 1);
        let left: Vec<String> = store
            .list_activities(&owner, 10, None)
            .await
            .expect("list")
            .items
            .into_iter()
            .map(|a| a.activity_id.immutable_id().to_owned())
            .collect();
        assert_eq!(left, ["keep", "whole"]);
    }
}
