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
                meeting.stop(stop_reason::SWITCHED_OFF, now)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use time::macros::datetime;

    use super::*;
    use crate::adapters::consent_memory::MemoryConsentMeetingStore;
    use crate::adapters::memory::MemoryTenantStore;
    use crate::clock::ManualClock;
    use crate::domain::meeting_consent::{Answer, ConsentStatus};
    use crate::domain::{ConsentMode, Tenant, TenantSwitches, UserId};

    fn owner(tenant: &TenantId) -> UserKey {
        UserKey::new(
            tenant.clone(),
            UserId::parse("22222222-2222-4222-8222-222222222222").expect("oid"),
        )
    }

    async fn tenant(tenants: &MemoryTenantStore, explicit_consent: bool) -> TenantId {
        let id = TenantId::parse(&uuid::Uuid::new_v4().to_string()).expect("tid");
        let mut tenant = Tenant::new(
            id.clone(),
            ConsentMode::Preauthorized,
            datetime!(2026-12-06 08:00 UTC),
        );
        tenant.switches = TenantSwitches {
            explicit_consent,
            ..TenantSwitches::default()
        };
        tenants.put_tenant(&tenant).await.expect("tenant");
        id
    }

    async fn meeting(
        store: &MemoryConsentMeetingStore,
        owner: &UserKey,
        event: &str,
        start: OffsetDateTime,
        now: OffsetDateTime,
    ) {
        let mut meeting = ConsentMeeting::new(
            owner,
            event,
            start,
            start + time::Duration::minutes(30),
            ["ann@fabrikam.example".to_owned()],
            now,
        );
        meeting.activate(now);
        store
            .save_consent_meeting(&meeting, None)
            .await
            .expect("save")
            .expect("new");
    }

    #[tokio::test]
    async fn the_tick_requests_then_decides_each_once_and_stops_switched_off_tenants() {
        let store = MemoryConsentMeetingStore::default();
        let tenants = MemoryTenantStore::default();
        let now = datetime!(2026-12-06 09:00 UTC);
        let clock = Arc::new(ManualClock::new(now));
        let on = owner(&tenant(&tenants, true).await);
        let off = owner(&tenant(&tenants, false).await);
        // Tomorrow at ten: the request is due today at ten, the decision tomorrow 9:59.
        let start = datetime!(2026-12-07 10:00 UTC);
        meeting(&store, &on, "tomorrow", start, now).await;
        meeting(&store, &off, "elsewhere", start, now).await;
        let lookahead = time::Duration::seconds(0);

        assert_eq!(
            process_due(&store, &tenants, clock.as_ref(), lookahead)
                .await
                .expect("tick"),
            DueReport::default()
        );
        clock.set(datetime!(2026-12-06 10:00 UTC));
        let report = process_due(&store, &tenants, clock.as_ref(), lookahead)
            .await
            .expect("tick");
        assert_eq!(
            (report.requested, report.decided, report.stopped),
            (1, 0, 1)
        );
        let stopped = store
            .get_consent_meeting(&off, "elsewhere")
            .await
            .expect("read")
            .expect("there");
        assert_eq!(stopped.status, ConsentStatus::Stopped);
        assert_eq!(
            stopped.stop_reason.as_deref(),
            Some(stop_reason::SWITCHED_OFF)
        );

        update(&store, &on, "tomorrow", |m| {
            m.answer(0, Answer::Record, datetime!(2026-12-06 12:00 UTC))
        })
        .await
        .expect("answered");
        clock.set(datetime!(2026-12-07 09:59 UTC));
        let report = process_due(&store, &tenants, clock.as_ref(), lookahead)
            .await
            .expect("tick");
        assert_eq!((report.requested, report.decided), (0, 1));
        let decided = store
            .get_consent_meeting(&on, "tomorrow")
            .await
            .expect("read")
            .expect("there");
        assert!(decided.decision.as_ref().is_some_and(|d| d.record));
        // Nothing twice.
        assert_eq!(
            process_due(&store, &tenants, clock.as_ref(), lookahead)
                .await
                .expect("tick"),
            DueReport::default()
        );
    }
}
