//! Explicit Consent Mode's shared machinery (the records are `domain::meeting_consent`):
//! changing a record under concurrent writers ([`update`]), and the minute tick that makes
//! what is due happen ([`process_due`]): `ConsentRequestDue` 24 h before the start (or at
//! once), `RecordingDecision` at the start − 60 s.
//!
//! Nothing here publishes: a record's `requestedAt` or `decision` being written is the
//! event (the activities table's stream is the outbox; event-publisher maps it,
//! docs/events.md), so a crash between the write and the publish loses nothing.

use std::collections::HashMap;
use std::time::Duration as StdDuration;

use time::{Duration, OffsetDateTime};
use tracing::{info, warn};

use crate::clock::Clock;
use crate::domain::meeting_consent::stop_reason;
use crate::domain::{ConsentMeeting, TenantId, UserKey};
use crate::ports::{ConsentMeetingStore, StoreError, TenantStore};

/// Saves a change of one meeting: reads it, applies `change` (which says whether it
/// changed anything), saves it if the stored version is still the one read, and starts
/// over when another writer (a guest's answer, the tick, the calendar) saved first.
/// Returns the meeting as saved (or as read, when nothing changed); `None` when there is
/// no such meeting.
pub async fn update(
    store: &dyn ConsentMeetingStore,
    owner: &UserKey,
    event_id: &str,
    mut change: impl FnMut(&mut ConsentMeeting) -> bool,
) -> Result<Option<ConsentMeeting>, StoreError> {
    const ATTEMPTS: u32 = 8;
    for _ in 0..ATTEMPTS {
        let Some(before) = store.get_consent_meeting(owner, event_id).await? else {
            return Ok(None);
        };
        let mut after = before.clone();
        if !change(&mut after) {
            return Ok(Some(before));
        }
        if let Some(saved) = store.save_consent_meeting(&after, Some(&before)).await? {
            return Ok(Some(saved));
        }
    }
    Err(StoreError::Conflict {
        what: "a consent meeting (changed by other writers on every attempt)".into(),
    })
}

/// Makes the first thing due at `now` happen: the request, else the decision. One per
/// write, so each write is one event (event-publisher maps a write to at most one).
/// Whether it changed anything.
pub fn apply_due(meeting: &mut ConsentMeeting, now: OffsetDateTime) -> bool {
    match meeting.next_due() {
        Some(at) if at <= now => {
            if meeting.requested_at.is_none() {
                meeting.requested_at = Some(now);
            } else {
                meeting.decision = Some(meeting.decide(now));
            }
            meeting.updated_at = now;
            true
        }
        _ => false,
    }
}

/// What one tick did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DueReport {
    pub requested: u32,
    pub decided: u32,
    /// Stopped because the tenant switched Explicit Consent Mode off.
    pub stopped: u32,
}

/// The tick (every minute): every meeting with something due before `now + lookahead`,
/// earliest first. A decision falls due at its second: the tick waits for it (at most
/// `lookahead`) and reads the answers then, so a guest who answers in the last minute
/// counts. A tenant whose administrator switched the mode off gets no decision: its
/// meetings stop (`switched_off`).
pub async fn process_due(
    store: &dyn ConsentMeetingStore,
    tenants: &dyn TenantStore,
    clock: &dyn Clock,
    lookahead: Duration,
) -> Result<DueReport, StoreError> {
    let due = store
        .due_consent_meetings(clock.now() + lookahead, 1000)
        .await?;
    let mut report = DueReport::default();
    let mut switched_on: HashMap<TenantId, bool> = HashMap::new();
    for (owner, event_id) in due {
        let on = match switched_on.get(&owner.tenant_id) {
            Some(on) => *on,
            None => {
                let on = tenants
                    .get_tenant(&owner.tenant_id)
                    .await?
                    .is_some_and(|tenant| tenant.switches.explicit_consent);
                switched_on.insert(owner.tenant_id.clone(), on);
                on
            }
        };
        if !on {
            let now = clock.now();
            update(store, &owner, &event_id, |meeting| {
                let live = meeting.status.is_live();
                meeting.stop(stop_reason::SWITCHED_OFF, now);
                live
            })
            .await?;
            report.stopped += 1;
            continue;
        }
        // The request, then the decision (both, for a meeting made in its last minute).
        for _ in 0..2 {
            let Some(meeting) = store.get_consent_meeting(&owner, &event_id).await? else {
                break;
            };
            let Some(at) = meeting.next_due() else {
                break;
            };
            let wait = at - clock.now();
            if wait > lookahead {
                break;
            }
            if wait.is_positive() {
                tokio::time::sleep(StdDuration::from_millis(wait.whole_milliseconds() as u64))
                    .await;
            }
            let Some(saved) = update(store, &owner, &event_id, |meeting| {
                apply_due(meeting, clock.now())
            })
            .await?
            else {
                warn!("a due consent meeting is gone");
                break;
            };
            if meeting.requested_at.is_none() && saved.requested_at.is_some() {
                report.requested += 1;
            } else if saved.decision.is_some() && saved.decision != meeting.decision {
                report.decided += 1;
                info!(
                    tenant_id = %owner.tenant_id,
                    user_id = %owner.user_id,
                    record = saved.decision.as_ref().is_some_and(|d| d.record),
                    "recording decision made"
                );
            } else {
                break;
            }
        }
    }
    Ok(report)
}
