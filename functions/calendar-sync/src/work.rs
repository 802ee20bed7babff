//! The calendar's part of a sync run ([`CalendarWork`], a [`SyncWork`]): the shared worker
//! skeleton (connector-core's `sync`) takes the lease, gets the token and handles deadlines,
//! parking and statuses; this walks the primary calendar's `calendarView/delta` from the
//! saved cursor, one page at a time:
//!
//! 1. **Plan**: no cursor, or a tracked window ending less than 11 months ahead → a new
//!    round over `now → now + 12 months` (an *initial* round: a full sync of the window).
//! 2. **Page**: GET the cursor (or the round's first URL) with `Prefer: odata.maxpagesize`,
//!    `outlook.timezone="UTC"` and `IdType="ImmutableId"`; keep the relevant events
//!    (upsert by immutable id), discard the rest unseen, apply removals; then checkpoint the
//!    cursor (the nextLink, finally the deltaLink). A crash or a timeout resumes from the
//!    last checkpoint; replayed pages only repeat idempotent writes.
//! 3. **Reconcile**: when an initial round ends, stored meetings in its window that it did
//!    not deliver are gone or no longer relevant: they are deleted. Every meeting the round
//!    stored is stamped at or after the window's start (the round's start), so "not
//!    delivered" is "stamped before the window's start". Meetings behind the window stay.
//! 4. **Removals**: a stored meeting Graph reports removed is kept when it lies outside the
//!    tracked window (history, or a change out there); inside it, `GET /me/events/{id}`
//!    (20 to a `$batch`) tells a deletion (404) from a move out of the window.
//! 5. **410** (`SyncStateNotFound`): the token is gone; a new initial round starts.
//! 6. **Rules changed** (CRM index, internal domains, the internal-meeting switch): meetings
//!    that did not change may have become relevant or stopped being; a new initial round.

use std::sync::Arc;

use async_trait::async_trait;
use connector_core::calendar::{self, CALENDAR_CURSOR, DeltaItem, OwnAddresses, RemovalAction};
use connector_core::domain::{
    Activity, ActivityContent, ActivityId, CrmIndexSummary, CursorKind, FolderCursor, SyncKind,
    SyncStage, SyncWindow, UserKey,
};
use connector_core::graph::{BATCH_LIMIT, BatchRequest, GraphError, Prefer};
use connector_core::matching::{CrmMatchIndex, CrmMatcher};
use connector_core::ports::{ActivityStore, CrmIndex, PageToken, StoreError};
use connector_core::sync::{RunContext, SyncWork, WorkError, WorkOutcome, first_stage};
use time::OffsetDateTime;
use tracing::{debug, info, warn};

use crate::consent::{ConsentLinker, RunMeetings};

/// Tuning of the calendar walk.
#[derive(Clone, Copy, Debug)]
pub struct CalendarOptions {
    /// `Prefer: odata.maxpagesize`. Events carry their bodies (calendarView delta takes no
    /// `$select`), so a page of 100 stays around a megabyte while a 5,000-occurrence
    /// calendar takes 50 requests.
    pub page_size: u32,
    /// New rounds a run may start after 410s before it gives up (and SQS retries later).
    pub max_restarts: u32,
    /// Activities per page when the reconciliation lists the user's meetings.
    pub list_page_size: u32,
}

impl Default for CalendarOptions {
    fn default() -> Self {
        Self {
            page_size: 100,
            max_restarts: 2,
            list_page_size: 500,
        }
    }
}

/// calendar-sync's [`SyncWork`].
pub struct CalendarWork {
    pub activities: Arc<dyn ActivityStore>,
    pub crm: Arc<dyn CrmIndex>,
    pub options: CalendarOptions,
    /// Explicit Consent Mode (`None`: not wired, as in tests of the import alone).
    pub consent: Option<ConsentLinker>,
}

/// What one run needs to judge events.
pub(crate) struct Judge {
    /// The CRM index the rules come from (`None`: the tenant has none).
    pub(crate) summary: Option<CrmIndexSummary>,
    pub(crate) rules: CrmMatcher,
    /// [`calendar::rules_fingerprint`] of this run's rules.
    fingerprint: String,
    pub(crate) own: OwnAddresses,
    import_internal: bool,
    pub(crate) owner: UserKey,
}

fn malformed(error: calendar::CalendarError) -> WorkError {
    WorkError::Graph(GraphError::Malformed(error.to_string()))
}

/// Starts a new round over the window at `now`.
fn start_round(cursor: &mut FolderCursor, now: OffsetDateTime) {
    cursor.window = Some(calendar::window_at(now));
    cursor.cursor = None;
    cursor.cursor_kind = None;
    cursor.initial_round = true;
    cursor.round_items = 0;
    cursor.updated_at = now;
}

impl CalendarWork {
    pub fn new(activities: Arc<dyn ActivityStore>, crm: Arc<dyn CrmIndex>) -> Self {
        Self {
            activities,
            crm,
            options: CalendarOptions::default(),
            consent: None,
        }
    }

    pub fn with_consent(mut self, consent: ConsentLinker) -> Self {
        self.consent = Some(consent);
        self
    }

    pub fn with_options(mut self, options: CalendarOptions) -> Self {
        self.options = options;
        self
    }

    pub(crate) fn prefer(&self) -> [Prefer; 3] {
        [
            Prefer::MaxPageSize(self.options.page_size),
            Prefer::TimezoneUtc,
            Prefer::ImmutableId,
        ]
    }

    async fn judge(&self, ctx: &RunContext<'_>) -> Result<Judge, StoreError> {
        let (summary, index) = match self.crm.load(&ctx.key.tenant_id).await? {
            Some((summary, index)) => (Some(summary), index),
            None => (None, CrmMatchIndex::default()),
        };
        let own = OwnAddresses::of(ctx.connection);
        let tenant_domains = || {
            ctx.tenant
                .map(|tenant| tenant.verified_domains.iter().map(String::as_str))
                .into_iter()
                .flatten()
        };
        let import_internal = ctx.connection.switches.internal_meetings;
        let rules = CrmMatcher::with_index(Arc::new(index), tenant_domains(), own.iter());
        let fingerprint = calendar::rules_fingerprint(tenant_domains(), &own, import_internal);
        Ok(Judge {
            summary,
            rules,
            fingerprint,
            own,
            import_internal,
            owner: ctx.user(),
        })
    }

    /// Applies one page: upserts, stale deletes, removals. Returns nothing but counters.
    async fn apply_page(
        &self,
        ctx: &mut RunContext<'_>,
        judge: &Judge,
        window: &SyncWindow,
        initial_round: bool,
        items: Vec<DeltaItem>,
        meetings: Option<&mut RunMeetings>,
    ) -> Result<(), WorkError> {
        if let (Some(consent), Some(meetings)) = (&self.consent, meetings) {
            consent.review(ctx, judge, meetings, &items).await?;
        }
        let now = ctx.now();
        let mut upserts = Vec::new();
        let mut stale = Vec::new();
        let mut removals = Vec::new();
        for item in items {
            ctx.counters.scanned += 1;
            match item {
                DeltaItem::Removed { id } => removals.push(id),
                DeltaItem::Changed(event) => match self.keep(judge, &event, now) {
                    Some(activity) => {
                        ctx.counters.matched += 1;
                        upserts.push(activity);
                    }
                    None => {
                        ctx.counters.discarded += 1;
                        // A stored meeting that stopped being relevant (an initial round's
                        // reconciliation catches these wholesale).
                        if !initial_round {
                            stale.push(ActivityId::meeting(&event.id));
                        }
                    }
                },
            }
        }
        // An initial round stamps everything it delivers, changed or not: its
        // reconciliation deletes what it did not deliver.
        self.store(ctx, &upserts, initial_round).await?;
        if !stale.is_empty() {
            self.activities
                .delete_activities(&judge.owner, &stale)
                .await?;
        }
        if !removals.is_empty() {
            self.removed(ctx, judge, window, removals).await?;
        }
        Ok(())
    }

    /// Stores meetings, counting the distinct ones that were new or changed (a re-read
    /// page or a restarted round counts nothing twice). A meeting the store refuses for
    /// good (the table's item limit) is recorded in the sync meta at once, before the
    /// cursor that passes it, and skipped: one bad meeting never blocks the calendar.
    pub(crate) async fn store(
        &self,
        ctx: &mut RunContext<'_>,
        activities: &[Activity],
        rewrite_unchanged: bool,
    ) -> Result<(), WorkError> {
        if activities.is_empty() {
            return Ok(());
        }
        let report = self
            .activities
            .store_activities(activities, rewrite_unchanged)
            .await?;
        ctx.counters.stored += report.written;
        if !report.refused.is_empty() {
            for item in report.skipped_items(ctx.now()) {
                ctx.meta.record_skipped(item);
            }
            ctx.checkpoint().await;
        }
        Ok(())
    }

    /// The activity to store for a relevant event; `None` discards it (nothing of it is
    /// kept or logged).
    pub(crate) fn keep(
        &self,
        judge: &Judge,
        event: &calendar::GraphEvent,
        now: OffsetDateTime,
    ) -> Option<Activity> {
        let matches = calendar::assess(event, &judge.rules, &judge.own, judge.import_internal)
            .into_matches()?;
        match calendar::to_meeting(event, &judge.own) {
            Ok(meeting) => Some(Activity::new(
                judge.owner.clone(),
                ActivityContent::Meeting(meeting),
                matches,
                now,
            )),
            Err(error) => {
                warn!(error = %error, "a relevant event is unreadable; skipped");
                None
            }
        }
    }

    /// Graph reported these ids removed: deleted, moved out of the window, or changed
    /// outside it. Stored meetings outside the window are kept; those inside are confirmed
    /// with `GET /me/events/{id}`, 20 to a `$batch`.
    async fn removed(
        &self,
        ctx: &mut RunContext<'_>,
        judge: &Judge,
        window: &SyncWindow,
        ids: Vec<String>,
    ) -> Result<(), WorkError> {
        let mut confirm = Vec::new();
        for id in ids {
            let Some(stored) = self
                .activities
                .get_activity(&judge.owner, &ActivityId::meeting(&id))
                .await?
            else {
                continue;
            };
            let ActivityContent::Meeting(meeting) = &stored.content else {
                continue;
            };
            if calendar::removal_action(meeting, window) == RemovalAction::Keep {
                debug!("a meeting outside the window was reported removed; kept");
                continue;
            }
            confirm.push(id);
        }
        for chunk in confirm.chunks(BATCH_LIMIT) {
            let requests: Vec<BatchRequest> = chunk
                .iter()
                .enumerate()
                .map(|(n, id)| BatchRequest {
                    id: n.to_string(),
                    url: calendar::event_path(id),
                    prefer: vec![Prefer::TimezoneUtc, Prefer::ImmutableId],
                })
                .collect();
            let answers = ctx.session.batch(&requests).await?;
            for (request, id) in requests.iter().zip(chunk) {
                let answer = answers
                    .iter()
                    .find(|answer| answer.id == request.id)
                    .ok_or_else(|| {
                        WorkError::Graph(GraphError::Malformed("a $batch answer is missing".into()))
                    })?;
                let event = match answer.status {
                    404 => None,
                    200..=299 => {
                        let body =
                            answer.body.as_ref().map(|body| body.get()).ok_or_else(|| {
                                WorkError::Graph(GraphError::Malformed(
                                    "a $batch answer without a body".into(),
                                ))
                            })?;
                        Some(calendar::parse_event(body.as_bytes()).map_err(malformed)?)
                    }
                    _ => return Err(answer.to_error().into()),
                };
                self.confirmed(ctx, judge, id, event).await?;
            }
        }
        Ok(())
    }

    /// Applies a confirmation: gone (`None`) → deleted; still there (moved out of the
    /// window) → stored with its new time while relevant, else deleted.
    async fn confirmed(
        &self,
        ctx: &mut RunContext<'_>,
        judge: &Judge,
        id: &str,
        event: Option<calendar::GraphEvent>,
    ) -> Result<(), WorkError> {
        if let Some(activity) = event.and_then(|event| self.keep(judge, &event, ctx.now())) {
            ctx.counters.matched += 1;
            self.store(ctx, &[activity], true).await?;
        } else if self
            .activities
            .delete_activity(&judge.owner, &ActivityId::meeting(id))
            .await?
        {
            ctx.counters.removed += 1;
        }
        Ok(())
    }

    /// After an initial round: deletes stored meetings of the window it did not deliver
    /// (reading the user's meetings only, not their mail).
    async fn reconcile(
        &self,
        ctx: &mut RunContext<'_>,
        owner: &UserKey,
        window: &SyncWindow,
    ) -> Result<(), WorkError> {
        let mut token: Option<PageToken> = None;
        let mut stale = Vec::new();
        loop {
            let page = self
                .activities
                .list_activities_with_prefix(
                    owner,
                    calendar::MEETING_ID_PREFIX,
                    self.options.list_page_size,
                    token.as_ref(),
                )
                .await?;
            for activity in page.items {
                if let ActivityContent::Meeting(meeting) = &activity.content
                    && activity.imported_at < window.start
                    && calendar::overlaps(window, meeting.start, meeting.end)
                {
                    stale.push(activity.activity_id);
                }
            }
            match page.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        if !stale.is_empty() {
            self.activities.delete_activities(owner, &stale).await?;
            ctx.counters.removed += stale.len() as u64;
        }
        Ok(())
    }
}

#[async_trait]
impl SyncWork for CalendarWork {
    fn kind(&self) -> SyncKind {
        SyncKind::Calendar
    }

    async fn run(&self, ctx: &mut RunContext<'_>) -> Result<WorkOutcome, WorkError> {
        let now = ctx.now();
        ctx.folders = 1;
        // The calendar's cursor and the CRM catch-up's checkpoint, in one read.
        let mut cursors = ctx.state.list_cursors(&ctx.key).await?;
        let mut cursor = cursors
            .iter()
            .position(|cursor| cursor.folder_id == CALENDAR_CURSOR)
            .map(|at| cursors.swap_remove(at))
            .unwrap_or_else(|| FolderCursor::new(CALENDAR_CURSOR, now));
        // Visible before the CRM index is loaded: a run that dies there leaves its row.
        ctx.enter(first_stage(ctx.meta)).await;
        let judge = self.judge(ctx).await?;
        if cursor.cursor.is_none() || calendar::needs_rebase(cursor.window.as_ref(), now) {
            if cursor.window.is_some() {
                info!("re-basing the calendar window");
            }
            start_round(&mut cursor, now);
        } else if cursor.rules.as_deref() != Some(judge.fingerprint.as_str()) {
            info!("the user's rules changed; re-reading the calendar window");
            start_round(&mut cursor, now);
        }
        cursor.rules = Some(judge.fingerprint.clone());
        let prefer = self.prefer();
        let mut restarts = 0u32;
        // Explicit Consent Mode: only when the tenant has it on and the host granted it.
        let mut consent_meetings = self
            .consent
            .as_ref()
            .filter(|consent| consent.applies(ctx))
            .map(|_| RunMeetings::default());
        loop {
            let Some(window) = cursor.window else {
                start_round(&mut cursor, ctx.now());
                continue;
            };
            ctx.enter(if cursor.initial_round {
                SyncStage::InitialImport
            } else {
                SyncStage::Incremental
            })
            .await;
            if ctx.out_of_time() {
                return Ok(WorkOutcome::OutOfTime);
            }
            let url = cursor
                .cursor
                .clone()
                .unwrap_or_else(|| calendar::delta_path(&window));
            let body = match ctx.session.get(&url, &prefer).await {
                Ok(body) => body,
                Err(error)
                    if error.is_sync_state_lost() && restarts < self.options.max_restarts =>
                {
                    restarts += 1;
                    info!(
                        restarts,
                        "the calendar's delta state is gone; starting a new round"
                    );
                    start_round(&mut cursor, ctx.now());
                    ctx.state.put_cursor(&ctx.key, &cursor).await?;
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            let page = calendar::parse_delta_page(&body).map_err(malformed)?;
            drop(body);
            ctx.counters.pages += 1;
            if cursor.cursor_kind == Some(CursorKind::DeltaLink) {
                cursor.round_items = 0;
            }
            let delivered = page.items.len() as u64;
            self.apply_page(
                ctx,
                &judge,
                &window,
                cursor.initial_round,
                page.items,
                consent_meetings.as_mut(),
            )
            .await?;
            cursor.round_items += delivered;
            cursor.updated_at = ctx.now();
            if let Some(next) = page.next_link {
                cursor.cursor = Some(next);
                cursor.cursor_kind = Some(CursorKind::NextLink);
                ctx.state.put_cursor(&ctx.key, &cursor).await?;
                ctx.checkpoint().await;
                continue;
            }
            let Some(delta) = page.delta_link else {
                return Err(WorkError::Graph(GraphError::Malformed(
                    "an event delta page without nextLink or deltaLink".into(),
                )));
            };
            cursor.cursor = Some(delta);
            cursor.cursor_kind = Some(CursorKind::DeltaLink);
            ctx.state.put_cursor(&ctx.key, &cursor).await?;
            ctx.checkpoint().await;
            if cursor.initial_round {
                self.reconcile(ctx, &judge.owner, &window).await?;
                cursor.initial_round = false;
                cursor.round_items = 0;
                ctx.state.put_cursor(&ctx.key, &cursor).await?;
            }
            ctx.meta.window = Some(window);
            // The CRM may have changed since the stored set was imported.
            return self.catch_up(ctx, &judge, &window, &mut cursors).await;
        }
    }
}
