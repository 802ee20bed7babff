//! The calendar's part of catching up with a CRM that changed (connector-core
//! `crm_catchup`; the README's "When the CRM changes"). A CRM change no longer starts a new
//! initial round over the twelve months with bodies:
//!
//! - **Additions**: one listing of the tracked window with the plain calendarView,
//!   `$select`ed to what is kept (no bodies), `$top` 100. Graph cannot filter events by
//!   attendee (`attendees/any(...)` is refused with `UnsupportedEntityExpression`:
//!   https://github.com/microsoftgraph/microsoft-graph-docs-contrib/issues/8066, observed
//!   behaviour, read 2026-12-06), so the listing is the least Graph allows. Each event is
//!   assessed against the additions only; the meetings they involve are judged by every
//!   rule and stored, and nothing else is written.
//! - **Removals**: stored meetings (history included) whose participants no CRM record
//!   matches any more are deleted; internal meetings are left to their own rules.
//!
//! The listing's link is the checkpoint: a run out of time or a crash resumes there.

use std::sync::Arc;

use connector_core::calendar::{self, DeltaItem};
use connector_core::crm_catchup::{self, Begin, CatchUp, Verdict};
use connector_core::domain::{Activity, ActivityContent, FolderCursor, MatchReason, SyncWindow};
use connector_core::matching::CrmMatcher;
use connector_core::sync::{RunContext, WorkError, WorkOutcome};

use crate::work::{CalendarWork, Judge};

impl CalendarWork {
    /// Runs the catch-up when the CRM changed since the stored set was imported.
    pub(crate) async fn catch_up(
        &self,
        ctx: &mut RunContext<'_>,
        judge: &Judge,
        window: &SyncWindow,
        cursors: &mut Vec<FolderCursor>,
    ) -> Result<WorkOutcome, WorkError> {
        let Some(summary) = &judge.summary else {
            return Ok(WorkOutcome::Complete);
        };
        let now = ctx.now();
        let mut catch_up = CatchUp::open(ctx.state, &ctx.key, cursors, summary, now).await?;
        let begin = catch_up.begin(summary);
        if begin == Begin::CaughtUp {
            return Ok(WorkOutcome::Complete);
        }
        if begin == Begin::Started {
            catch_up.save(ctx.state, &ctx.key, now).await?;
        }
        let Some(additions) = self
            .crm
            .additions_since(&ctx.key.tenant_id, catch_up.applied())
            .await?
        else {
            return Ok(WorkOutcome::Complete);
        };
        let (addresses, domains) = additions.index.sizes();
        if addresses + domains > 0 && catch_up.target().is_some_and(|t| t.step == 0) {
            // The additions alone, by the same rules.
            let added = judge.rules.with_same_rules(Arc::new(additions.index));
            if self
                .list_for_additions(ctx, judge, &added, window, &mut catch_up)
                .await?
                == WorkOutcome::OutOfTime
            {
                return Ok(WorkOutcome::OutOfTime);
            }
        }
        // Only when an import since the applied one removed a record. Idempotent: a run
        // that dies before `finish` removes nothing more the next time.
        if catch_up.removals_since_applied(summary) {
            ctx.counters.removed += self.prune_meetings(judge).await?;
        }
        catch_up.finish(ctx.state, &ctx.key, ctx.now()).await?;
        Ok(WorkOutcome::Complete)
    }

    /// Lists the window once, from the checkpoint on, storing the meetings the additions
    /// involve.
    async fn list_for_additions(
        &self,
        ctx: &mut RunContext<'_>,
        judge: &Judge,
        added: &CrmMatcher,
        window: &SyncWindow,
        catch_up: &mut CatchUp,
    ) -> Result<WorkOutcome, WorkError> {
        let prefer = self.prefer();
        loop {
            if ctx.out_of_time() {
                return Ok(WorkOutcome::OutOfTime);
            }
            let url = catch_up
                .target()
                .and_then(|target| target.next.clone())
                .unwrap_or_else(|| calendar::view_path(window, self.options.page_size));
            let body = ctx.session.get(&url, &prefer).await?;
            let page = calendar::parse_delta_page(&body).map_err(|error| {
                WorkError::Graph(connector_core::graph::GraphError::Malformed(
                    error.to_string(),
                ))
            })?;
            drop(body);
            ctx.counters.pages += 1;
            let now = ctx.now();
            let mut upserts = Vec::new();
            for item in page.items {
                let DeltaItem::Changed(event) = item else {
                    continue;
                };
                ctx.counters.scanned += 1;
                let involved = calendar::assess(&event, added, &judge.own, false)
                    .into_matches()
                    .is_some();
                if involved && let Some(activity) = self.keep(judge, &event, now) {
                    ctx.counters.matched += 1;
                    upserts.push(activity);
                }
            }
            self.store(ctx, &upserts, false).await?;
            let Some(target) = catch_up.target_mut() else {
                return Ok(WorkOutcome::Complete);
            };
            match page.next_link {
                Some(next) => target.next = Some(next),
                None => {
                    target.next = None;
                    target.step = 1;
                }
            }
            let done = target.step == 1;
            catch_up.save(ctx.state, &ctx.key, ctx.now()).await?;
            ctx.checkpoint().await;
            if done {
                return Ok(WorkOutcome::Complete);
            }
        }
    }

    /// Deletes stored meetings whose participants no CRM record matches any more (internal
    /// meetings keep their own rules).
    async fn prune_meetings(&self, judge: &Judge) -> Result<u64, WorkError> {
        let rules = &judge.rules;
        let judge_meeting = move |activity: &Activity| match &activity.content {
            ActivityContent::Meeting(meeting) => {
                if activity
                    .matches
                    .iter()
                    .any(|m| m.reason == MatchReason::InternalMeeting)
                {
                    return Verdict::Keep;
                }
                let participants = meeting
                    .organizer
                    .iter()
                    .chain(meeting.attendees.iter())
                    .map(|p| p.address.as_str());
                if rules.explain(participants).is_empty() {
                    Verdict::Remove
                } else {
                    Verdict::Keep
                }
            }
            ActivityContent::Mail(_) => Verdict::Keep,
        };
        Ok(crm_catchup::prune(
            self.activities.as_ref(),
            &judge.owner,
            calendar::MEETING_ID_PREFIX,
            &judge_meeting,
        )
        .await?)
    }
}
