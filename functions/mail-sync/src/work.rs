//! The mail import of one mailbox: the [`SyncWork`] that the shared worker skeleton runs.
//!
//! Per run: load the tenant's CRM index (cached per version in the warm container) into a
//! [`CrmMatcher`]; fix the window on the first run; refresh the folder list when it is a
//! day old; then walk every folder (up to 4 at once; the Graph session keeps the mailbox at
//! 4 requests in flight overall), page by page:
//!
//! 1. list a page with the minimal `$select` (`Prefer: odata.maxpagesize`, immutable ids,
//!    gzip), parse it borrowing from the body, match in memory, keep only the ids of
//!    matches and removals, drop the page;
//! 2. fetch the matches through `$batch` (20 per call, `outlook.body-content-type="text"`),
//!    each call one `dependsOn` chain holding one of the mailbox's slots, so that four of
//!    them keep Outlook's 4 slots busy without idling through each call's outer round trip;
//! 3. store them (upserts keyed by immutable id), delete removed ones (only when the stored
//!    copy is in this folder: a message moved to another synced folder is kept), and
//!    checkpoint the folder's cursor (the nextLink, at the end the deltaLink).
//!
//! The three run at once as a pipeline per folder (listing ahead, fetches running on into
//! the next page's matches, the store behind them), with checkpoints strictly in page
//! order; see `MailWork::sync_folder`.
//!
//! ## Completeness beyond 5,000 messages
//! "Applying `$filter` in a delta query returns only up to 5,000 messages"
//! (<https://learn.microsoft.com/graph/delta-query-messages>, read 2026-12-05). Microsoft
//! does not say *which* 5,000 a capped round keeps (newest, oldest or any), nor does a
//! capped round say it was capped: it ends with a deltaLink like any other, and that
//! deltaLink never reports the messages the cap left out. So the first round asks
//! `$filter=receivedDateTime ge {window start}` (with `$orderby=receivedDateTime desc`, the
//! only order delta supports) and, when it ends, the connector decides whether it may have
//! been capped, without trusting any one cap value or order:
//!
//! - it delivered [`FILTERED_DELTA_CAP`] messages or more (the documented number); or
//! - the folder's message list counts more messages in the window than the round
//!   delivered: one request, `$filter=receivedDateTime ge {window start}&$count=true&$top=1`
//!   (`@odata.count`; <https://learn.microsoft.com/graph/query-parameters> documents
//!   `$count=true` with `/me/messages?$top=2&$count=true` as its example). A missing or
//!   unreadable count, or a 400 for the probe, counts as "maybe capped". The probe is
//!   skipped for a round that delivered nothing.
//!
//! A round that may have been capped is followed by a *backfill of the whole window* with
//! the folder's message list (no cap; same minimal `$select`, newest first), before the
//! deltaLink is used: whichever messages the cap kept, the list reads the rest. Its filter
//! and order follow the message-list rule ("Properties that appear in `$orderby` must also
//! appear in `$filter`", in the same order, before any others:
//! <https://learn.microsoft.com/graph/api/user-list-messages>, read 2026-12-05): the first
//! page is `receivedDateTime ge {start}` ordered `receivedDateTime desc`, and every later
//! page adds `and receivedDateTime le {oldest seen so far}` (key paging rather than `$skip`,
//! so a message deleted meanwhile cannot shift a page over an unseen one; Graph's own
//! nextLink is followed only when a whole page shares one timestamp). The backfill's cursor
//! is the next URL, checkpointed after every stored page like the delta's, so a backfill cut
//! off by the Lambda deadline resumes at the page where it stopped. Messages arriving
//! meanwhile come through the deltaLink; everything is an upsert keyed by immutable id, so
//! a message read by both the round and the backfill is stored once.
//!
//! Cost: a capped folder with `W` messages in the window is listed `cap + W` times instead
//! of `W` (the backfill re-lists what the round delivered: 10 extra list requests of 500
//! per 5,000), and the matches among the round's messages are fetched again (≈ 20 % of
//! them: 50 extra `$batch` calls per 5,000). An uncapped folder pays one count request per
//! initial round. The remaining blind spot, only below the documented 5,000: a capped round
//! whose delivered messages are deleted before the count is taken, or delivered twice
//! within the round, in numbers reaching what the cap left out (the count then no longer
//! exceeds what was counted as delivered).
//!
//! Nothing of a discarded message is kept or logged: its id and participants live only in
//! the parsed page, which is dropped before the next one is read.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use connector_core::clock::Clock;
use connector_core::crm_catchup::{Begin, CRM_CURSOR, CatchUp};
use connector_core::domain::{
    Activity, ActivityContent, ActivityId, CrmIndexSummary, CursorKind, FolderCursor, MailActivity,
    Participant, SkippedItem, SyncCounters, SyncKey, SyncKind, SyncStage, SyncWindow, TenantId,
    UserKey,
};
use connector_core::graph::{BATCH_LIMIT, BatchRequest, GraphError, MailboxSession, Prefer};
use connector_core::matching::{CrmMatchIndex, CrmMatcher};
use connector_core::ports::{ActivityStore, CrmIndex, PageToken, StoreReport, SyncStateStore};
use connector_core::sync::{Progress, RunContext, SyncWork, WorkError, WorkOutcome, first_stage};
use futures::future::Either;
use futures::{StreamExt, TryStreamExt, stream};
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::folders::{self, MailFolder, segment};
use crate::page::{FETCH_SELECT, Fetched, LIST_SELECT, PageScan, scan_page};

/// Microsoft's documented cap on a `$filter`ed message delta round (delta-query-messages). One
/// of two signals that a round may have been capped; the window count is the other, and the
/// one that works whatever the cap is.
pub const FILTERED_DELTA_CAP: u64 = 5_000;

/// Fetch batches (and page ends) a folder's fetcher keeps queued: a page's matches (≈100
/// at 20 % of 500, five batches) and the start of the next, so that a page's last batches
/// never leave lanes idle.
const FETCHES_PER_FOLDER: usize = 8;

/// Tunables (environment variables in the function, see `Settings::from_env`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MailSettings {
    /// `Prefer: odata.maxpagesize` for listings (and `$top` of the backfill list).
    pub page_size: u32,
    /// The window reaches back at least this far.
    pub min_window: time::Duration,
    /// The folder list is re-read when older than this.
    pub folder_refresh: time::Duration,
    /// Folders walked at once.
    pub folder_concurrency: usize,
    /// One-lane `$batch` fetches in flight per run, all folders together (each holds one
    /// of the mailbox's 4 slots; listings take the others as they come).
    pub fetch_concurrency: usize,
}

impl Default for MailSettings {
    /// 500 messages a page: ~300 KB of minimal-`$select` JSON (≈60 KB gzipped), well under
    /// the sizes that draw 504s from Graph, and 0.2 % request overhead per message.
    fn default() -> Self {
        Self {
            page_size: 500,
            min_window: time::Duration::days(7),
            folder_refresh: time::Duration::hours(24),
            folder_concurrency: 4,
            fetch_concurrency: 4,
        }
    }
}

impl MailSettings {
    /// `MAIL_PAGE_SIZE` (10–1000), `MAIL_MIN_WINDOW_DAYS`, `MAIL_FOLDER_REFRESH_HOURS`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut settings = Self::default();
        let number = |name: &str, min: i64, max: i64| -> Result<Option<i64>, String> {
            match lookup(name) {
                None => Ok(None),
                Some(value) if value.trim().is_empty() => Ok(None),
                Some(value) => match value.trim().parse::<i64>() {
                    Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
                    _ => Err(format!("{name} must be a number from {min} to {max}")),
                },
            }
        };
        if let Some(n) = number("MAIL_PAGE_SIZE", 10, 1000)? {
            settings.page_size = n as u32;
        }
        if let Some(n) = number("MAIL_MIN_WINDOW_DAYS", 1, 3650)? {
            settings.min_window = time::Duration::days(n);
        }
        if let Some(n) = number("MAIL_FOLDER_REFRESH_HOURS", 1, 24 * 30)? {
            settings.folder_refresh = time::Duration::hours(n);
        }
        Ok(settings)
    }
}

/// The first import's start: the oldest open opportunity's created date (midnight UTC),
/// and at least `min_window` back from now.
pub fn window_start(
    oldest_open_opportunity: Option<Date>,
    now: OffsetDateTime,
    min_window: time::Duration,
) -> OffsetDateTime {
    let floor = now - min_window;
    let floor = floor.replace_nanosecond(0).unwrap_or(floor);
    match oldest_open_opportunity {
        Some(date) => date.midnight().assume_utc().min(floor),
        None => floor,
    }
}

/// `2026-03-01T08:00:00Z`, as `$filter` values are written.
pub(crate) fn filter_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

pub(crate) fn parse_time(value: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(value, &Rfc3339).ok()
}

/// The first request of a folder's import.
pub fn initial_delta_url(folder_id: &str, start: OffsetDateTime) -> String {
    format!(
        "/me/mailFolders/{}/messages/delta?$select={LIST_SELECT}&$filter=receivedDateTime%20ge%20{}&$orderby=receivedDateTime%20desc",
        segment(folder_id),
        filter_time(start)
    )
}

/// A page of the backfill list: the window's messages (up to `upper` when given), newest
/// first. `receivedDateTime` leads `$filter` because it is the `$orderby` property
/// (user-list-messages: "Using filter and orderby in the same query").
pub fn backfill_url(
    folder_id: &str,
    start: OffsetDateTime,
    upper: Option<OffsetDateTime>,
    top: u32,
) -> String {
    let upper = upper
        .map(|upper| format!("%20and%20receivedDateTime%20le%20{}", filter_time(upper)))
        .unwrap_or_default();
    format!(
        "/me/mailFolders/{}/messages?$select={LIST_SELECT}&$filter=receivedDateTime%20ge%20{}{upper}&$orderby=receivedDateTime%20desc&$top={top}",
        segment(folder_id),
        filter_time(start),
    )
}

/// How many messages the folder holds in the window: one `id`, and `@odata.count`.
pub fn window_count_url(folder_id: &str, start: OffsetDateTime) -> String {
    format!(
        "/me/mailFolders/{}/messages?$select=id&$filter=receivedDateTime%20ge%20{}&$count=true&$top=1",
        segment(folder_id),
        filter_time(start)
    )
}

/// `@odata.count` of a listed page, if it carries one.
#[derive(serde::Deserialize)]
struct Counted {
    #[serde(rename = "@odata.count")]
    count: Option<u64>,
}

/// The tenant's CRM index as this container last loaded it, in matching's compact form
/// only: a warm container keeps it between runs.
struct CachedCrm {
    version: String,
    index: Arc<CrmMatchIndex>,
}

/// Mail's part of a sync run.
pub struct MailWork {
    pub(crate) activities: Arc<dyn ActivityStore>,
    crm: Arc<dyn CrmIndex>,
    pub(crate) settings: MailSettings,
    crm_cache: Mutex<HashMap<TenantId, CachedCrm>>,
}

/// Which listing a request belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Delta,
    Backfill,
}

/// Shared, read-only state of the folders of one run.
pub(crate) struct FolderEnv<'a> {
    pub(crate) session: &'a MailboxSession<'a>,
    pub(crate) state: &'a dyn SyncStateStore,
    pub(crate) clock: &'a dyn Clock,
    pub(crate) key: &'a SyncKey,
    pub(crate) owner: UserKey,
    pub(crate) matcher: &'a CrmMatcher,
    /// The CRM's additions only, while a catch-up re-lists folders (their `relist`).
    added: Option<&'a CrmMatcher>,
    window: SyncWindow,
    deadline: Instant,
    counters: Mutex<SyncCounters>,
    /// Messages the store refused for good this run (recorded in the meta at the end).
    skipped: Mutex<Vec<SkippedItem>>,
    /// The run's visible progress: each page checkpoint adds its counters.
    pub(crate) progress: &'a Progress<'a>,
    /// Fetch batches in flight, all folders together. Bounding them here, before they
    /// queue for the mailbox's slots, keeps a folder's next listing from waiting behind
    /// every queued fetch of every folder.
    fetch_lanes: Semaphore,
}

/// What the lister hands down a folder's pipeline, in order.
enum Step {
    Page(ListedPage),
    /// The delta state was lost: the folder's import starts over from this cursor, saved
    /// after the pages listed before it.
    Restart(FolderCursor),
}

/// A listed and matched page: only ids outlive the page's body.
struct ListedPage {
    /// Ids to fetch (taken by the fetcher).
    matched: Vec<String>,
    matched_count: u64,
    removed: Vec<String>,
    listed: u64,
    discarded: u64,
    /// The cursor once this page is stored.
    next: FolderCursor,
    /// This page ends the folder's round (and backfill): a restarted round reconciles.
    finishes_round: bool,
}

/// A step whose matches are fetched, ready for the storer.
struct Ready {
    step: Step,
    activities: Vec<Activity>,
    /// Matched when listed, but gone or no longer matching when fetched.
    not_kept: u64,
}

impl FolderEnv<'_> {
    pub(crate) fn out_of_time(&self) -> bool {
        Instant::now() >= self.deadline
    }

    pub(crate) fn add(&self, page: &SyncCounters) {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(page);
    }
}

impl MailWork {
    pub fn new(
        activities: Arc<dyn ActivityStore>,
        crm: Arc<dyn CrmIndex>,
        settings: MailSettings,
    ) -> Self {
        Self {
            activities,
            crm,
            settings,
            crm_cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> MailSettings {
        self.settings
    }

    /// The tenant's current CRM index: one pointer read per run, a full load only when the
    /// version changed since this container last loaded it.
    async fn crm_index(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<(CrmIndexSummary, Arc<CrmMatchIndex>)>, WorkError> {
        let Some(summary) = self.crm.summary(tenant).await? else {
            return Ok(None);
        };
        if let Some(cached) = self
            .crm_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .filter(|cached| cached.version == summary.version)
        {
            return Ok(Some((summary, cached.index.clone())));
        }
        let Some((summary, index)) = self.crm.load(tenant).await? else {
            return Ok(None);
        };
        let index = Arc::new(index);
        self.crm_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                tenant.clone(),
                CachedCrm {
                    version: summary.version.clone(),
                    index: index.clone(),
                },
            );
        Ok(Some((summary, index)))
    }

    /// Brings the stored folder list in line with the mailbox: new folders get a fresh
    /// cursor; folders that are gone lose theirs and their stored messages (their messages
    /// went with them, to Deleted Items, which is not synced).
    async fn reconcile_folders(
        &self,
        state: &dyn SyncStateStore,
        key: &SyncKey,
        owner: &UserKey,
        cursors: &mut Vec<FolderCursor>,
        folders: Vec<MailFolder>,
        now: OffsetDateTime,
    ) -> Result<(), WorkError> {
        let present: HashSet<&str> = folders.iter().map(|f| f.id.as_str()).collect();
        let gone: Vec<String> = cursors
            .iter()
            .filter(|c| !present.contains(c.folder_id.as_str()))
            .map(|c| c.folder_id.clone())
            .collect();
        if !gone.is_empty() {
            self.purge_folders(owner, &gone).await?;
            for folder in &gone {
                state.delete_cursor(key, folder).await?;
            }
            cursors.retain(|c| present.contains(c.folder_id.as_str()));
        }
        let known: HashSet<String> = cursors.iter().map(|c| c.folder_id.clone()).collect();
        for folder in folders {
            if let Some(existing) = cursors.iter_mut().find(|c| c.folder_id == folder.id) {
                if existing.display_name.as_deref() != Some(folder.display_name.as_str())
                    || existing.well_known_name != folder.well_known_name
                {
                    existing.display_name = Some(folder.display_name);
                    existing.well_known_name = folder.well_known_name;
                    state.put_cursor(key, existing).await?;
                }
                continue;
            }
            if known.contains(&folder.id) {
                continue;
            }
            let mut cursor = FolderCursor::new(folder.id, now);
            cursor.display_name = Some(folder.display_name);
            cursor.well_known_name = folder.well_known_name;
            state.put_cursor(key, &cursor).await?;
            cursors.push(cursor);
        }
        Ok(())
    }

    async fn purge_folders(&self, owner: &UserKey, folders: &[String]) -> Result<(), WorkError> {
        let gone: HashSet<&str> = folders.iter().map(String::as_str).collect();
        let mut token = None;
        let mut doomed = Vec::new();
        loop {
            let page = self
                .activities
                .list_activities(owner, 500, token.as_ref())
                .await?;
            for activity in page.items {
                if let ActivityContent::Mail(mail) = &activity.content
                    && gone.contains(mail.folder_id.as_str())
                {
                    doomed.push(activity.activity_id);
                }
            }
            match page.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        if !doomed.is_empty() {
            info!(
                count = doomed.len(),
                "removing messages of folders that no longer exist"
            );
            self.activities.delete_activities(owner, &doomed).await?;
        }
        Ok(())
    }

    /// Walks one folder until its round (and backfill) is done or time is up, as a
    /// pipeline of three stages that run at once (see [`Step`]):
    ///
    /// 1. the lister lists and matches page after page, up to one page ahead of the
    ///    fetcher;
    /// 2. the fetcher fetches the matches through one-lane `$batch`es, continuing into the
    ///    next page's matches while the last ones of a page are out (at most
    ///    [`FETCHES_PER_FOLDER`] batches queued, the run's [`FolderEnv::fetch_lanes`] in
    ///    flight);
    /// 3. the storer stores each page's matches, applies its removals and checkpoints the
    ///    cursor after it, strictly in page order: a checkpoint is written only once
    ///    everything before it is stored.
    ///
    /// Memory stays flat: a page's body is dropped once matched, and matches are held for
    /// at most the page being fetched, one fetched page waiting and the one being stored.
    async fn sync_folder(
        &self,
        env: &FolderEnv<'_>,
        cursor: FolderCursor,
    ) -> Result<WorkOutcome, WorkError> {
        let folder_id = cursor.folder_id.clone();
        let folder = folder_id.as_str();
        let mut totals = cursor.counters;
        let (listed_tx, listed_rx) = tokio::sync::mpsc::channel::<Step>(1);
        let (fetched_tx, mut fetched_rx) = tokio::sync::mpsc::channel::<Ready>(1);

        let lister = self.list_folder(env, cursor, listed_tx);

        let fetcher = async move {
            let listed = stream::unfold(listed_rx, |mut rx| async move {
                rx.recv().await.map(|step| (step, rx))
            });
            let work = listed
                .flat_map(|mut step| {
                    let chunks: Vec<Vec<String>> = match &mut step {
                        Step::Page(page) => chunked(std::mem::take(&mut page.matched)),
                        Step::Restart(_) => Vec::new(),
                    };
                    stream::iter(
                        chunks
                            .into_iter()
                            .map(Either::Left)
                            .chain(std::iter::once(Either::Right(step))),
                    )
                })
                .map(|item| async move {
                    match item {
                        Either::Left(ids) => self.fetch(env, folder, &ids).await.map(Either::Left),
                        Either::Right(step) => Ok(Either::Right(step)),
                    }
                })
                .buffered(FETCHES_PER_FOLDER);
            let mut work = std::pin::pin!(work);
            let mut activities = Vec::new();
            let mut not_kept = 0u64;
            while let Some(done) = work.try_next().await? {
                match done {
                    Either::Left((fetched, dropped)) => {
                        activities.extend(fetched);
                        not_kept += dropped;
                    }
                    Either::Right(step) => {
                        let ready = Ready {
                            step,
                            activities: std::mem::take(&mut activities),
                            not_kept: std::mem::take(&mut not_kept),
                        };
                        if fetched_tx.send(ready).await.is_err() {
                            break;
                        }
                    }
                }
            }
            Ok::<(), WorkError>(())
        };

        let storer = async {
            let stored = async {
                while let Some(ready) = fetched_rx.recv().await {
                    match ready.step {
                        Step::Restart(mut cursor) => {
                            cursor.counters = totals;
                            env.state.put_cursor(env.key, &cursor).await?;
                        }
                        Step::Page(page) => {
                            let mut counters = SyncCounters {
                                scanned: page.listed,
                                pages: 1,
                                matched: page.matched_count,
                                discarded: page.discarded + ready.not_kept,
                                ..SyncCounters::default()
                            };
                            let mut next = page.next;
                            // A restarted round stamps everything it delivers, changed or not,
                            // so that what it did not deliver can be told at its end.
                            let report = if ready.activities.is_empty() {
                                StoreReport::default()
                            } else {
                                self.activities
                                    .store_activities(
                                        &ready.activities,
                                        next.reconcile_before.is_some(),
                                    )
                                    .await?
                            };
                            drop(ready.activities);
                            counters.stored = report.written;
                            self.skip_refused(env, report).await;
                            counters.removed =
                                self.apply_removals(env, folder, &page.removed).await?;
                            if page.finishes_round
                                && let Some(before) = next.reconcile_before.take()
                            {
                                counters.removed += self.reconcile(env, folder, before).await?;
                            }
                            totals.add(&counters);
                            next.counters = totals;
                            env.state.put_cursor(env.key, &next).await?;
                            env.add(&counters);
                            env.progress.add(&counters).await;
                        }
                    }
                }
                Ok::<(), WorkError>(())
            }
            .await;
            // Ends a fetcher waiting to hand over a page (the receiver outlives this block).
            fetched_rx.close();
            stored
        };

        // Not try_join: a lister or fetcher that fails (out of time for a request, a Graph
        // error) must not cut the storer in the middle of a page, its activities written but
        // its counters and checkpoint not (the re-read page would then find them stored and
        // they would never be counted). Their channels close instead, and the storer
        // finishes the pages it holds. A failing storer closes its channel, so the others
        // stop at their next hand-off.
        let (listed, fetched, stored) = tokio::join!(lister, fetcher, storer);
        stored?;
        fetched?;
        listed
    }

    /// The lister stage of [`Self::sync_folder`]: lists and matches the folder's pages in
    /// order and hands each on with the cursor that follows it.
    async fn list_folder(
        &self,
        env: &FolderEnv<'_>,
        mut cursor: FolderCursor,
        out: tokio::sync::mpsc::Sender<Step>,
    ) -> Result<WorkOutcome, WorkError> {
        let prefer = [
            Prefer::MaxPageSize(self.settings.page_size),
            Prefer::ImmutableId,
        ];
        let mut boundary_ids: Vec<String> = Vec::new();
        loop {
            if env.out_of_time() {
                return Ok(WorkOutcome::OutOfTime);
            }
            let (url, phase) = self.next_request(&mut cursor, env.window);
            let body = match env.session.get(&url, &prefer).await {
                Ok(body) => body,
                Err(error) if phase == Phase::Delta && error.is_sync_state_lost() => {
                    warn!(
                        folder = cursor.well_known_name.as_deref().unwrap_or("(custom)"),
                        "delta state lost (410); importing the folder's window again"
                    );
                    restart(&mut cursor, env.clock.now());
                    boundary_ids.clear();
                    // Saved in order, after the pages listed before it.
                    if out.send(Step::Restart(cursor.clone())).await.is_err() {
                        return Ok(WorkOutcome::OutOfTime);
                    }
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            // A re-listing for the CRM's additions matches against them only.
            let matcher = match (phase, cursor.relist, env.added) {
                (Phase::Backfill, true, Some(added)) => added,
                _ => env.matcher,
            };
            let result = self.read_page(&body, matcher, phase, &boundary_ids)?;
            drop(body);

            // The cursor after this page (saved only once the page is stored).
            let mut next = cursor.clone();
            let mut done = false;
            match phase {
                Phase::Delta => {
                    if next.initial_round {
                        next.round_items += result.listed;
                        next.oldest_seen = min_time(next.oldest_seen, result.oldest);
                    }
                    if let Some(link) = &result.next_link {
                        next.cursor = Some(link.clone());
                        next.cursor_kind = Some(CursorKind::NextLink);
                    } else if let Some(link) = &result.delta_link {
                        next.cursor = Some(link.clone());
                        next.cursor_kind = Some(CursorKind::DeltaLink);
                        let start = next.window.unwrap_or(env.window).start;
                        if next.initial_round
                            && self
                                .maybe_capped(env, &next.folder_id, start, next.round_items)
                                .await?
                        {
                            next.backfill = Some(backfill_url(
                                &next.folder_id,
                                start,
                                None,
                                self.settings.page_size,
                            ));
                        } else {
                            done = true;
                        }
                        next.initial_round = false;
                        next.round_items = 0;
                        next.oldest_seen = None;
                    } else {
                        return Err(GraphError::Malformed(
                            "a delta page without nextLink or deltaLink".into(),
                        )
                        .into());
                    }
                }
                Phase::Backfill => {
                    next.backfill = self.next_backfill(&next, env.window, &result);
                    done = next.backfill.is_none();
                    if done {
                        next.relist = false;
                    }
                }
            }
            next.updated_at = env.clock.now();
            let PageScan {
                matched,
                removed,
                listed,
                discarded,
                boundary_ids: boundary,
                ..
            } = result;
            boundary_ids = boundary;
            cursor = next.clone();
            let page = ListedPage {
                matched_count: matched.len() as u64,
                matched,
                removed,
                listed,
                discarded,
                next,
                finishes_round: done,
            };
            if out.send(Step::Page(page)).await.is_err() {
                return Ok(WorkOutcome::OutOfTime);
            }
            if done {
                return Ok(WorkOutcome::Complete);
            }
        }
    }

    /// The request that continues `cursor` (starting the initial round when it has none).
    fn next_request(&self, cursor: &mut FolderCursor, window: SyncWindow) -> (String, Phase) {
        if let Some(backfill) = &cursor.backfill {
            return (backfill.clone(), Phase::Backfill);
        }
        if let Some(link) = &cursor.cursor {
            return (link.clone(), Phase::Delta);
        }
        cursor.initial_round = true;
        cursor.round_items = 0;
        cursor.oldest_seen = None;
        cursor.window = Some(window);
        (
            initial_delta_url(&cursor.folder_id, window.start),
            Phase::Delta,
        )
    }

    /// Whether a finished initial round that delivered `delivered` messages may have been
    /// cut by the `$filter` cap (see the module docs): the documented cap reached, or the
    /// window holding more messages than delivered, or no readable count.
    async fn maybe_capped(
        &self,
        env: &FolderEnv<'_>,
        folder_id: &str,
        start: OffsetDateTime,
        delivered: u64,
    ) -> Result<bool, WorkError> {
        if delivered >= FILTERED_DELTA_CAP {
            return Ok(true);
        }
        if delivered == 0 {
            return Ok(false);
        }
        let body = match env
            .session
            .get(&window_count_url(folder_id, start), &[])
            .await
        {
            Ok(body) => body,
            Err(error) if error.status() == Some(400) => {
                warn!("the window count was refused; reading the whole window to be sure");
                return Ok(true);
            }
            Err(error) => return Err(error.into()),
        };
        match serde_json::from_slice::<Counted>(&body) {
            Ok(Counted { count: Some(count) }) => {
                if count > delivered {
                    info!(
                        delivered,
                        in_window = count,
                        "the filtered delta round was capped; reading the whole window"
                    );
                }
                Ok(count > delivered)
            }
            _ => {
                warn!("no @odata.count for the window; reading the whole window to be sure");
                Ok(true)
            }
        }
    }

    /// The backfill's next link: keyset on `receivedDateTime`, or Graph's own nextLink
    /// when a whole page shares one timestamp; `None` when the list is exhausted.
    fn next_backfill(
        &self,
        cursor: &FolderCursor,
        window: SyncWindow,
        page: &PageScan,
    ) -> Option<String> {
        let next_link = page.next_link.as_ref()?;
        let start = cursor.window.unwrap_or(window).start;
        let upper = cursor.backfill.as_deref().and_then(backfill_upper);
        match (page.oldest, upper) {
            (Some(oldest), None) => Some(backfill_url(
                &cursor.folder_id,
                start,
                Some(oldest),
                self.settings.page_size,
            )),
            (Some(oldest), Some(upper)) if oldest < upper => Some(backfill_url(
                &cursor.folder_id,
                start,
                Some(oldest),
                self.settings.page_size,
            )),
            _ => Some(next_link.clone()),
        }
    }

    /// Parses a listed page and matches it; only ids of matches and removals survive.
    fn read_page(
        &self,
        body: &[u8],
        matcher: &CrmMatcher,
        phase: Phase,
        skip: &[String],
    ) -> Result<PageScan, WorkError> {
        scan_page(body, matcher, skip, phase == Phase::Backfill).map_err(|error| {
            GraphError::Malformed(format!(
                "listed page: {:?} error at line {}",
                error.classify(),
                error.line()
            ))
            .into()
        })
    }

    /// Fetches up to 20 matched messages through one one-lane `$batch` (one of the run's
    /// [`FolderEnv::fetch_lanes`]) and keeps those still matching; returns them and the
    /// number matched but not kept.
    async fn fetch(
        &self,
        env: &FolderEnv<'_>,
        folder_id: &str,
        ids: &[String],
    ) -> Result<(Vec<Activity>, u64), WorkError> {
        let requests: Vec<BatchRequest> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| BatchRequest {
                id: i.to_string(),
                url: format!("/me/messages/{}?$select={FETCH_SELECT}", segment(id)),
                prefer: vec![Prefer::ImmutableId, Prefer::BodyText],
            })
            .collect();
        let answers = {
            let _lane = env
                .fetch_lanes
                .acquire()
                .await
                .expect("the fetch lanes are never closed");
            env.session.batch_serial(&requests).await?
        };
        let now = env.clock.now();
        let mut activities = Vec::with_capacity(answers.len());
        let mut not_kept = 0u64;
        for item in answers {
            match item.status {
                200 => {}
                // Deleted or moved out since it was listed: the delta reports it.
                404 => {
                    not_kept += 1;
                    continue;
                }
                _ => return Err(item.to_error().into()),
            }
            let Some(body) = item.body.as_ref() else {
                not_kept += 1;
                continue;
            };
            let fetched: Fetched = serde_json::from_str(body.get()).map_err(|error| {
                GraphError::Malformed(format!("fetched message: {:?} error", error.classify()))
            })?;
            match to_activity(&env.owner, folder_id, fetched, env.matcher, now) {
                Some(activity) => activities.push(activity),
                None => not_kept += 1,
            }
        }
        Ok((activities, not_kept))
    }

    /// Fetches `ids` of `folder_id` (batches of 20, at most [`FETCHES_PER_FOLDER`] at once)
    /// and stores those that still match, outside a folder's pipeline (the catch-up's
    /// search hits); returns (stored, matched, not kept).
    pub(crate) async fn fetch_and_store(
        &self,
        env: &FolderEnv<'_>,
        folder_id: &str,
        ids: Vec<String>,
    ) -> Result<(u64, u64, u64), WorkError> {
        let fetched: Vec<(Vec<Activity>, u64)> = stream::iter(chunked(ids))
            .map(|chunk| async move { self.fetch(env, folder_id, &chunk).await })
            .buffered(FETCHES_PER_FOLDER)
            .try_collect()
            .await?;
        let not_kept: u64 = fetched.iter().map(|(_, dropped)| dropped).sum();
        let activities: Vec<Activity> = fetched.into_iter().flat_map(|(a, _)| a).collect();
        let matched = activities.len() as u64;
        if activities.is_empty() {
            return Ok((0, 0, not_kept));
        }
        let report = self.activities.store_activities(&activities, false).await?;
        let stored = report.written;
        self.skip_refused(env, report).await;
        Ok((stored, matched, not_kept))
    }

    /// Records the activities the store refused for good: skipped, the page goes on. The
    /// record is written before the cursor that passes them.
    async fn skip_refused(&self, env: &FolderEnv<'_>, report: StoreReport) {
        let items = report.skipped_items(env.clock.now());
        env.progress.skip(&items).await;
        env.skipped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(items);
    }

    /// The end of a round restarted after a 410: the folder's stored messages that the
    /// round did not deliver (stamped before `before`, when it restarted) went while the
    /// sync state was lost; they are deleted (each only while still filed in this folder,
    /// as removals are). Reads the user's stored mail once.
    ///
    /// A 410 means "the application must restart with a full synchronization"
    /// (https://learn.microsoft.com/graph/delta-query-overview, "Synchronization reset";
    /// https://learn.microsoft.com/en-us/answers/questions/649481/http-410-status-error-on-syncing-contacts,
    /// read 2026-12-05): the new round lists what exists, and no source says it reports
    /// what was deleted before it, so the difference is taken here whether or not it does.
    async fn reconcile(
        &self,
        env: &FolderEnv<'_>,
        folder_id: &str,
        before: OffsetDateTime,
    ) -> Result<u64, WorkError> {
        let mut token: Option<PageToken> = None;
        let mut stale = Vec::new();
        loop {
            let page = self
                .activities
                .list_activities_with_prefix(&env.owner, "mail#", 500, token.as_ref())
                .await?;
            for activity in page.items {
                if let ActivityContent::Mail(mail) = &activity.content
                    && mail.folder_id == folder_id
                    && activity.imported_at < before
                {
                    stale.push(activity.activity_id.immutable_id().to_owned());
                }
            }
            match page.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        if !stale.is_empty() {
            info!(
                count = stale.len(),
                "removing messages deleted while the delta state was lost"
            );
        }
        self.apply_removals(env, folder_id, &stale).await
    }

    /// Deletes the stored copies of removed messages that are filed in this folder (one
    /// conditional delete each: a copy that another folder's delta already moved is kept,
    /// even when both folders are walked at once).
    async fn apply_removals(
        &self,
        env: &FolderEnv<'_>,
        folder_id: &str,
        ids: &[String],
    ) -> Result<u64, WorkError> {
        let owner = &env.owner;
        let deleted: Vec<bool> = stream::iter(ids.to_vec())
            .map(|id: String| async move {
                self.activities
                    .delete_mail_in_folder(owner, &ActivityId::mail(&id), folder_id)
                    .await
            })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        Ok(deleted.into_iter().filter(|deleted| *deleted).count() as u64)
    }
}

/// Ids in `$batch`es of at most 20, of even sizes (21 ids are 11 + 10, not 20 + 1: each
/// batch is one lane, and a page's batches run side by side).
fn chunked(ids: Vec<String>) -> Vec<Vec<String>> {
    let batches = ids.len().div_ceil(BATCH_LIMIT);
    let mut chunks = Vec::with_capacity(batches);
    let mut ids = ids.into_iter();
    for left in (1..=batches).rev() {
        let size = ids.len().div_ceil(left);
        chunks.push(ids.by_ref().take(size).collect());
    }
    chunks
}

fn min_time(a: Option<OffsetDateTime>, b: Option<OffsetDateTime>) -> Option<OffsetDateTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The `le` bound of a keyset backfill URL we built.
fn backfill_upper(url: &str) -> Option<OffsetDateTime> {
    let marker = "receivedDateTime%20le%20";
    let start = url.find(marker)? + marker.len();
    let rest = &url[start..];
    let end = rest.find(['&', '%']).unwrap_or(rest.len());
    parse_time(&rest[..end])
}

/// Forgets a folder's progress so its window is imported again, and marks the round to
/// reconcile when it ends (messages deleted while the sync state was lost).
fn restart(cursor: &mut FolderCursor, now: OffsetDateTime) {
    cursor.reconcile_before = Some(now);
    cursor.cursor = None;
    cursor.cursor_kind = None;
    cursor.initial_round = false;
    cursor.round_items = 0;
    cursor.oldest_seen = None;
    cursor.backfill = None;
    cursor.updated_at = now;
}

/// What is stored of a fetched match, or `None` when it no longer qualifies.
fn to_activity(
    owner: &UserKey,
    folder_id: &str,
    fetched: Fetched,
    matcher: &CrmMatcher,
    now: OffsetDateTime,
) -> Option<Activity> {
    if !fetched.is_importable() {
        return None;
    }
    let participants: Vec<Participant> = fetched
        .participants()
        .into_iter()
        .filter_map(|(role, address)| {
            let email = address.address.as_deref()?.trim().to_lowercase();
            (!email.is_empty()).then(|| Participant {
                role,
                address: email,
                name: address.name.clone().filter(|name| !name.trim().is_empty()),
            })
        })
        .collect();
    let matches = matcher.explain(participants.iter().map(|p| p.address.as_str()));
    if matches.is_empty() {
        return None;
    }
    let body = fetched.body.as_ref();
    let mail = MailActivity {
        immutable_id: fetched.id,
        internet_message_id: fetched.internet_message_id,
        conversation_id: fetched.conversation_id,
        folder_id: folder_id.to_owned(),
        subject: fetched.subject.unwrap_or_default(),
        participants,
        sent_at: fetched.sent_date_time.as_deref().and_then(parse_time),
        received_at: fetched.received_date_time.as_deref().and_then(parse_time),
        body_preview: fetched.body_preview.unwrap_or_default(),
        body_text: body.and_then(|b| b.content.clone()).unwrap_or_default(),
        has_attachments: fetched.has_attachments.unwrap_or(false),
        web_link: fetched.web_link,
        detail: None,
    };
    Some(Activity::new(
        owner.clone(),
        ActivityContent::Mail(mail),
        matches,
        now,
    ))
}

#[async_trait]
impl SyncWork for MailWork {
    fn kind(&self) -> SyncKind {
        SyncKind::Mail
    }

    async fn run(&self, ctx: &mut RunContext<'_>) -> Result<WorkOutcome, WorkError> {
        let now = ctx.now();
        let owner = ctx.user();
        // Visible before anything that could kill the worker (a large CRM index, folder
        // discovery): a run that dies here still leaves its row. Refined below once the
        // cursors say whether a window is still being imported.
        ctx.enter(first_stage(ctx.meta)).await;
        let Some((summary, index)) = self.crm_index(&ctx.key.tenant_id).await? else {
            // Nothing can match: leave the cursors where they are until a CRM is imported.
            info!("no CRM index for this tenant; nothing to import");
            return Ok(WorkOutcome::Complete);
        };
        let tenant_domains: Vec<&str> = ctx
            .tenant
            .map(|tenant| tenant.verified_domains.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let own = [
            Some(ctx.connection.upn.as_str()),
            ctx.connection.mail.as_deref(),
        ];
        let matcher = CrmMatcher::with_index(index, tenant_domains, own.into_iter().flatten());
        let oldest_open = summary.oldest_open_opportunity;

        if ctx.meta.window.is_none() {
            ctx.meta.window = Some(SyncWindow {
                start: window_start(oldest_open, now, self.settings.min_window),
                end: None,
            });
        }
        let mut window = ctx.meta.window.unwrap_or(SyncWindow {
            start: window_start(oldest_open, now, self.settings.min_window),
            end: None,
        });

        let mut cursors = ctx.state.list_cursors(&ctx.key).await?;
        let mut catch_up = CatchUp::open(ctx.state, &ctx.key, &mut cursors, &summary, now).await?;
        let refresh_due = cursors.is_empty()
            || ctx
                .meta
                .folders_refreshed_at
                .is_none_or(|at| now - at >= self.settings.folder_refresh);
        if refresh_due {
            let folders = folders::discover(ctx.session).await?;
            self.reconcile_folders(ctx.state, &ctx.key, &owner, &mut cursors, folders, now)
                .await?;
            ctx.meta.folders_refreshed_at = Some(now);
        }

        // The CRM may have changed since the stored set was imported (README, "When the
        // CRM changes"): an older open opportunity widens the window; added records are
        // looked for; what no record matches any more is removed.
        let wanted = window_start(oldest_open, now, self.settings.min_window);
        if wanted < window.start {
            window = self
                .extend_window(ctx.state, &ctx.key, &mut cursors, window, wanted, now)
                .await?;
            ctx.meta.window = Some(window);
        }
        let begin = catch_up.begin(&summary);
        let additions: Option<Arc<CrmMatchIndex>> = match begin {
            Begin::CaughtUp => None,
            Begin::Resumed | Begin::Started => self
                .crm
                .additions_since(&ctx.key.tenant_id, catch_up.applied())
                .await?
                .map(|additions| Arc::new(additions.index)),
        };
        if begin == Begin::Started {
            let (addresses, domains) = additions.as_deref().map_or((0, 0), CrmMatchIndex::sizes);
            info!(addresses, domains, "the CRM changed; catching up");
            if domains > 0 {
                self.plan_relist(ctx.state, &ctx.key, &mut cursors, window, now)
                    .await?;
                if let Some(target) = catch_up.target_mut() {
                    target.relisting = true;
                }
            }
            catch_up.save(ctx.state, &ctx.key, now).await?;
        }
        // The additions alone, by the same rules.
        let added = additions
            .clone()
            .map(|index| matcher.with_same_rules(index));

        let importing = cursors
            .iter()
            .any(|c| c.cursor_kind != Some(CursorKind::DeltaLink) || c.backfill.is_some());
        ctx.enter(if importing {
            SyncStage::InitialImport
        } else {
            SyncStage::Incremental
        })
        .await;
        ctx.folders = cursors.len() as u64;
        // Inbox and Sent Items first: what users look at.
        cursors.sort_by_key(|c| match c.well_known_name.as_deref() {
            Some("inbox") => 0,
            Some("sentitems") => 1,
            _ => 2,
        });

        let env = FolderEnv {
            session: ctx.session,
            state: ctx.state,
            clock: ctx.clock,
            key: &ctx.key,
            owner,
            matcher: &matcher,
            added: added.as_ref(),
            window,
            deadline: ctx.deadline,
            counters: Mutex::new(SyncCounters::default()),
            skipped: Mutex::new(Vec::new()),
            progress: ctx.progress,
            fetch_lanes: Semaphore::new(self.settings.fetch_concurrency.max(1)),
        };
        let outcomes: Result<BTreeSet<OutcomeOrder>, WorkError> = stream::iter(cursors)
            .map(|cursor| {
                let env = &env;
                async move { self.sync_folder(env, cursor).await.map(OutcomeOrder::from) }
            })
            .buffer_unordered(self.settings.folder_concurrency.max(1))
            .try_collect()
            .await;
        let mut outcome = outcomes.map(|outcomes| {
            if outcomes.contains(&OutcomeOrder::OutOfTime) {
                WorkOutcome::OutOfTime
            } else {
                WorkOutcome::Complete
            }
        });
        // The catch-up's searches and removals, once every folder is listed (a re-listing
        // or a widened window included).
        if let (Ok(WorkOutcome::Complete), Some(additions)) = (&outcome, &additions)
            && catch_up.target().is_some()
        {
            outcome = async {
                let mut cursors = ctx.state.list_cursors(&ctx.key).await?;
                cursors.retain(|cursor| cursor.folder_id != CRM_CURSOR);
                let removals = catch_up.removals_since_applied(&summary);
                self.finish_catch_up(
                    &env,
                    &mut catch_up,
                    additions,
                    removals,
                    &mut cursors,
                    window,
                )
                .await
            }
            .await;
        }
        let counters = *env.counters.lock().unwrap_or_else(|e| e.into_inner());
        ctx.counters.add(&counters);
        for item in std::mem::take(&mut *env.skipped.lock().unwrap_or_else(|e| e.into_inner())) {
            ctx.meta.record_skipped(item);
        }
        outcome
    }
}

/// `WorkOutcome` in a set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum OutcomeOrder {
    Complete,
    OutOfTime,
}

impl From<WorkOutcome> for OutcomeOrder {
    fn from(outcome: WorkOutcome) -> Self {
        match outcome {
            WorkOutcome::Complete => OutcomeOrder::Complete,
            WorkOutcome::OutOfTime => OutcomeOrder::OutOfTime,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    #[test]
    fn window_reaches_the_oldest_open_opportunity_and_at_least_a_week() {
        let now = datetime!(2026-03-20 10:15:30.5 UTC);
        let week = time::Duration::days(7);
        assert_eq!(
            window_start(Some(date!(2026 - 01 - 15)), now, week),
            datetime!(2026-01-15 0:00 UTC)
        );
        assert_eq!(
            window_start(Some(date!(2026 - 03 - 18)), now, week),
            datetime!(2026-03-13 10:15:30 UTC)
        );
        assert_eq!(
            window_start(None, now, week),
            datetime!(2026-03-13 10:15:30 UTC)
        );
    }

    #[test]
    fn urls_carry_the_window_and_the_minimal_select() {
        let start = datetime!(2026-01-15 0:00 UTC);
        let url = initial_delta_url("AQMk/x+y=", start);
        assert!(url.starts_with("/me/mailFolders/AQMk%2Fx%2By%3D/messages/delta?$select=id,from,"));
        assert!(url.contains("$filter=receivedDateTime%20ge%202026-01-15T00:00:00Z"));
        assert!(url.contains("$orderby=receivedDateTime%20desc"));
        assert!(!url.contains("subject") && !url.contains("bodyPreview"));
        let upper = datetime!(2026-02-01 12:30:05 UTC);
        let backfill = backfill_url("f", start, Some(upper), 500);
        assert_eq!(backfill_upper(&backfill), Some(upper));
        assert!(backfill.contains("$top=500"));
        let whole = backfill_url("f", start, None, 500);
        assert_eq!(backfill_upper(&whole), None);
        assert!(whole.contains(
            "$filter=receivedDateTime%20ge%202026-01-15T00:00:00Z&$orderby=receivedDateTime%20desc"
        ));
        let count = window_count_url("f", start);
        assert!(count.contains("$count=true") && count.contains("$top=1"));
    }

    #[test]
    fn batches_are_even_and_at_most_twenty() {
        let ids = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>();
        let sizes = |n: usize| chunked(ids(n)).iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(7), vec![7]);
        assert_eq!(sizes(20), vec![20]);
        assert_eq!(sizes(21), vec![11, 10]);
        assert_eq!(sizes(100), vec![20; 5]);
        assert_eq!(sizes(101), vec![17, 17, 17, 17, 17, 16]);
        let all: Vec<String> = chunked(ids(45)).into_iter().flatten().collect();
        assert_eq!(all, ids(45), "every id once, in order");
    }

    #[test]
    fn settings_from_the_environment() {
        let settings = MailSettings::from_lookup(|name| match name {
            "MAIL_PAGE_SIZE" => Some("250".into()),
            "MAIL_MIN_WINDOW_DAYS" => Some("14".into()),
            _ => None,
        })
        .expect("valid");
        assert_eq!(settings.page_size, 250);
        assert_eq!(settings.min_window, time::Duration::days(14));
        assert!(
            MailSettings::from_lookup(|name| (name == "MAIL_PAGE_SIZE").then(|| "5".into()))
                .is_err()
        );
    }
}
