//! Sync state of one mailbox or calendar: its stage (so a stuck sync is visible), window,
//! per-folder delta cursors, counters, last success, last error and next attempt.
//!
//! Stored in the sync-state table under `syncKey = {tenantId}#{userId}#{mail|calendar}`,
//! one item per concern (`meta`, `folder#{id}`, `lease`) so a cursor checkpoint after
//! every page writes one small item.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::DomainError;
use super::ids::{TenantId, UserId, UserKey};
use super::scopes::Feature;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncKind {
    Mail,
    Calendar,
}

impl SyncKind {
    pub const ALL: [SyncKind; 2] = [SyncKind::Mail, SyncKind::Calendar];

    pub fn as_str(self) -> &'static str {
        match self {
            SyncKind::Mail => "mail",
            SyncKind::Calendar => "calendar",
        }
    }

    pub fn feature(self) -> Feature {
        match self {
            SyncKind::Mail => Feature::Mail,
            SyncKind::Calendar => Feature::Calendar,
        }
    }

    pub fn parse(value: &str) -> Result<Self, DomainError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "mail" => Ok(SyncKind::Mail),
            "calendar" => Ok(SyncKind::Calendar),
            _ => Err(DomainError::UnknownVariant {
                what: "sync kind",
                value: value.chars().take(32).collect(),
            }),
        }
    }
}

impl fmt::Display for SyncKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SyncKind {
    type Err = DomainError;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        SyncKind::parse(value)
    }
}

/// Which sync of which user: the partition of the sync-state table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SyncKey {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub kind: SyncKind,
}

impl SyncKey {
    pub fn new(tenant_id: TenantId, user_id: UserId, kind: SyncKind) -> Self {
        Self {
            tenant_id,
            user_id,
            kind,
        }
    }

    pub fn user(&self) -> UserKey {
        UserKey::new(self.tenant_id.clone(), self.user_id.clone())
    }

    /// Parses `{tenantId}#{userId}#{kind}`.
    pub fn parse(value: &str) -> Result<Self, DomainError> {
        let invalid = || DomainError::InvalidKey {
            what: "sync key",
            value: value.chars().take(120).collect(),
        };
        let mut parts = value.splitn(3, '#');
        let (Some(tenant), Some(user), Some(kind)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        Ok(Self::new(
            TenantId::parse(tenant)?,
            UserId::parse(user)?,
            SyncKind::parse(kind)?,
        ))
    }
}

impl fmt::Display for SyncKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}#{}", self.tenant_id, self.user_id, self.kind)
    }
}

/// Where a sync is. With `stage_since` it shows a stuck sync: `importing` for hours means
/// a worker keeps dying.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncStage {
    /// Never run: the first job is queued.
    Pending,
    /// The first import of the window is in progress (possibly across continuation jobs).
    InitialImport,
    /// Walking delta cursors after the initial import.
    Incremental,
    /// Finished a run; waiting for the next schedule.
    Idle,
    /// Throttled past the job's budget; resumes at `next_attempt_at`.
    Parked,
    /// The last run failed with an error that needs a person (see `last_error`).
    Failed,
}

impl SyncStage {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncStage::Pending => "pending",
            SyncStage::InitialImport => "initial_import",
            SyncStage::Incremental => "incremental",
            SyncStage::Idle => "idle",
            SyncStage::Parked => "parked",
            SyncStage::Failed => "failed",
        }
    }
}

impl fmt::Display for SyncStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The time range a sync covers. Calendar windows are re-based as time passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncWindow {
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub end: Option<OffsetDateTime>,
}

/// Figures of one run, or totals across runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SyncCounters {
    pub scanned: u64,
    pub matched: u64,
    pub stored: u64,
    pub removed: u64,
    pub discarded: u64,
    pub pages: u64,
    pub graph_requests: u64,
    pub throttled: u64,
}

impl SyncCounters {
    pub fn add(&mut self, other: &SyncCounters) {
        self.scanned += other.scanned;
        self.matched += other.matched;
        self.stored += other.stored;
        self.removed += other.removed;
        self.discarded += other.discarded;
        self.pages += other.pages;
        self.graph_requests += other.graph_requests;
        self.throttled += other.throttled;
    }
}

/// The last failure, as an operator reads it: a stable code and a message that carries
/// no token, subject or participant address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncFailure {
    pub code: String,
    pub message: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// The `meta` item of a sync.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncMeta {
    pub stage: SyncStage,
    #[serde(with = "time::serde::rfc3339")]
    pub stage_since: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<SyncWindow>,
    /// The last run's figures.
    #[serde(default)]
    pub last_run: SyncCounters,
    /// Totals since the connection was made.
    #[serde(default)]
    pub totals: SyncCounters,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_success_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<SyncFailure>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_attempt_at: Option<OffsetDateTime>,
    /// When the folder list was last refreshed (mail refreshes it at most daily).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub folders_refreshed_at: Option<OffsetDateTime>,
    /// Items that could not be stored and were skipped, oldest first, the last
    /// [`SKIPPED_KEPT`] only: ids and reasons, never content.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedItem>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// How many skipped items the meta keeps.
pub const SKIPPED_KEPT: usize = 20;

/// An item a sync could not store and skipped (the store refused it for good).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SkippedItem {
    /// Graph's immutable id of the message or event.
    pub id: String,
    /// The store's error code and message (no content of the item).
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

impl SyncMeta {
    /// Records a skipped item; the list keeps the last [`SKIPPED_KEPT`] (one entry per id).
    pub fn record_skipped(&mut self, item: SkippedItem) {
        self.skipped.retain(|known| known.id != item.id);
        self.skipped.push(item);
        let excess = self.skipped.len().saturating_sub(SKIPPED_KEPT);
        self.skipped.drain(..excess);
    }

    pub fn new(now: OffsetDateTime) -> Self {
        Self {
            stage: SyncStage::Pending,
            stage_since: now,
            window: None,
            last_run: SyncCounters::default(),
            totals: SyncCounters::default(),
            last_success_at: None,
            last_error: None,
            next_attempt_at: None,
            folders_refreshed_at: None,
            skipped: Vec::new(),
            updated_at: now,
        }
    }

    /// Moves to `stage`, keeping `stage_since` when the stage does not change.
    pub fn enter(&mut self, stage: SyncStage, now: OffsetDateTime) {
        if self.stage != stage {
            self.stage = stage;
            self.stage_since = now;
        }
        self.updated_at = now;
    }

    /// A run finished: its figures become `last_run` and are added to the totals.
    pub fn finish_run(&mut self, run: SyncCounters, now: OffsetDateTime) {
        self.last_run = run;
        self.totals.add(&run);
        self.last_success_at = Some(now);
        self.last_error = None;
        self.next_attempt_at = None;
        self.enter(SyncStage::Idle, now);
    }

    pub fn park(&mut self, until: OffsetDateTime, now: OffsetDateTime) {
        self.next_attempt_at = Some(until);
        self.enter(SyncStage::Parked, now);
    }

    pub fn fail(&mut self, code: &str, message: &str, now: OffsetDateTime) {
        self.last_error = Some(SyncFailure {
            code: code.to_owned(),
            message: message.to_owned(),
            at: now,
        });
        self.enter(SyncStage::Failed, now);
    }
}

/// What a saved cursor is: a page link of an unfinished round, or the delta link of a
/// finished one. Both are resumed by GETting them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CursorKind {
    NextLink,
    DeltaLink,
}

/// Checkpoint of one mail folder (or of the calendar, under folder id `calendar`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FolderCursor {
    pub folder_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub well_known_name: Option<String>,
    /// The URL to resume from; `None` before the first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor_kind: Option<CursorKind>,
    /// The window the cursor's round was started with (a delta token fixes its window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<SyncWindow>,
    #[serde(default)]
    pub counters: SyncCounters,
    /// The cursor's round is the first one (the import of the window), not a delta round.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub initial_round: bool,
    /// Items the current round has delivered so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub round_items: u64,
    /// The oldest `receivedDateTime` the initial round delivered so far (mail: informational;
    /// which messages a capped filtered delta keeps is unknown, so the backfill ignores it).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub oldest_seen: Option<OffsetDateTime>,
    /// Mail: the list link walking the whole window after an initial round that may have
    /// been capped; `cursor` holds the round's deltaLink meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<String>,
    /// Calendar: a fingerprint of the rules that chose what the round stored (CRM index,
    /// internal domains, the internal-meeting switch). Meetings do not change when the rules
    /// do, so a new fingerprint starts a new initial round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<String>,
    /// Mail: the round was restarted (410) at this instant. When it ends, stored messages
    /// of the folder it did not deliver (stamped before this) are deleted: they went while
    /// the sync state was lost.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub reconcile_before: Option<OffsetDateTime>,
    /// Mail: the backfill lists the folder's window again for the CRM's additions only (an
    /// added account domain): a page's messages are matched against the additions, so
    /// what is already stored is not fetched again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub relist: bool,
    /// The cursor `crm` ([`crate::crm_catchup::CRM_CURSOR`]) only: how far the stored set
    /// has caught up with the tenant's CRM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CrmCatchUp>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// How far a mailbox's (or calendar's) stored set has caught up with its tenant's CRM:
/// the checkpoint of [`crate::crm_catchup`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrmCatchUp {
    /// `imported_at` of the CRM import the stored set reflects: every record it held was
    /// looked for, and nothing of a record it no longer held is kept.
    #[serde(with = "time::serde::rfc3339")]
    pub applied: OffsetDateTime,
    /// A catch-up under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<CatchUpTarget>,
}

/// A catch-up under way, toward one import; a newer import restarts it (its additions
/// include this one's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CatchUpTarget {
    /// `imported_at` of the import being caught up with.
    #[serde(with = "time::serde::rfc3339")]
    pub imported_at: OffsetDateTime,
    /// Steps finished (mail: searches of added addresses, a batch each; calendar: the
    /// listing).
    #[serde(default)]
    pub step: u32,
    /// Mail: the step under way reached Graph's result limit and is searched one address
    /// at a time; this one next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u32>,
    /// The link that continues the step under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Mail: results the search under way has returned so far (Graph returns at most
    /// 1,000).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub seen: u32,
    /// Mail: the folders' re-listing for added domains was set up (their `relist`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub relisting: bool,
}

fn is_zero_u32(value: &u32) -> bool {
    *value == 0
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl FolderCursor {
    pub fn new(folder_id: impl Into<String>, now: OffsetDateTime) -> Self {
        Self {
            folder_id: folder_id.into(),
            display_name: None,
            well_known_name: None,
            cursor: None,
            cursor_kind: None,
            window: None,
            counters: SyncCounters::default(),
            initial_round: false,
            round_items: 0,
            oldest_seen: None,
            backfill: None,
            rules: None,
            reconcile_before: None,
            relist: false,
            catch_up: None,
            updated_at: now,
        }
    }
}

/// A mailbox lease as stored: who holds it and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    pub expires_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn sync_key_round_trips() {
        let key = SyncKey::new(
            TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").expect("guid"),
            UserId::parse("00000000-0000-0000-0000-0000000000aa").expect("guid"),
            SyncKind::Calendar,
        );
        let text = key.to_string();
        assert!(text.ends_with("#calendar"));
        assert_eq!(SyncKey::parse(&text).expect("parses"), key);
        assert!(SyncKey::parse("a#b").is_err());
    }

    #[test]
    fn stages_track_time_and_totals() {
        let t0 = datetime!(2026-03-01 9:00 UTC);
        let t1 = datetime!(2026-03-01 9:05 UTC);
        let mut meta = SyncMeta::new(t0);
        meta.enter(SyncStage::InitialImport, t0);
        meta.enter(SyncStage::InitialImport, t1);
        assert_eq!(meta.stage_since, t0);
        meta.fail("Throttled", "429 beyond budget", t1);
        assert_eq!(meta.stage, SyncStage::Failed);
        let run = SyncCounters {
            scanned: 10,
            matched: 2,
            stored: 2,
            pages: 1,
            ..SyncCounters::default()
        };
        meta.finish_run(run, t1);
        meta.finish_run(run, t1);
        assert_eq!(meta.totals.scanned, 20);
        assert_eq!(meta.last_run, run);
        assert!(meta.last_error.is_none());
        assert_eq!(meta.stage, SyncStage::Idle);

        let json = serde_json::to_value(&meta).expect("serialises");
        assert_eq!(json["stage"], "idle");
        let back: SyncMeta = serde_json::from_value(json).expect("round trips");
        assert_eq!(back, meta);
    }
}
