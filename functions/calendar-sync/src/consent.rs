//! Explicit Consent Mode in the host's calendar (connector-core `domain::meeting_consent`
//! says what the mode is). Runs on every delta page, before the page's events are judged
//! for import, only in tenants with the mode switched on and for hosts who granted both
//! `Calendars.ReadWrite` and `OnlineMeetings.ReadWrite`; otherwise it makes no Graph call.
//!
//! For each changed event the host **organizes** (`isOrganizer`, else the organizer's
//! address is the host's), a single meeting (not a series or an occurrence), not all-day,
//! not cancelled, starting in the future, with at least one **guest** (an attendee who is
//! neither the tenant's nor a room):
//! - **placeholder in the body, no record** → a record (links for the invite and every
//!   guest), then the online meeting (`POST /me/onlineMeetings/createOrGet` with the
//!   record's externalId: a retry reaches the same meeting, so there is one per event,
//!   ever), then `PATCH /me/events/{id}` with the body as Graph gave it but the
//!   placeholder replaced by the invite's consent link, sent with `If-Match` (the
//!   event's `@odata.etag`), so a host's concurrent edit is never overwritten. Each step is
//!   saved before the next: a crash or a redelivery resumes where it stopped;
//! - **a record, and the link (or the placeholder) still there** → the guests follow the
//!   attendees (kept guests keep their link and answer), new times update the online
//!   meeting (`PATCH /me/onlineMeetings/{id}`) and move the decision;
//! - **a record, link gone** → collection stops (`link_removed`); nothing is written to
//!   Graph. No longer eligible (made recurring, all-day, handed over) → `not_eligible`;
//! - **removed** (`@removed`) with a live record → `GET /me/events/{id}`: 404 is a
//!   cancellation (collection ends), otherwise it moved out of the window (new times).
//!
//! Bodies are read in memory only: nothing of a body is stored or logged, and events
//! without a record and without the placeholder are not looked at further.

use std::collections::HashMap;

use connector_core::calendar::{self, DeltaItem, GraphEvent};
use connector_core::consent_meetings;
use connector_core::domain::meeting_consent::{
    self, BodyMark, ConsentMeeting, ConsentStatus, stop_reason,
};
use connector_core::domain::{Scope, UserKey};
use connector_core::graph::{GraphError, Prefer};
use connector_core::ports::ConsentMeetingStore;
use connector_core::sync::{RunContext, WorkError};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::{info, warn};

use crate::work::Judge;

/// Explicit Consent Mode's part of calendar-sync.
pub struct ConsentLinker {
    pub store: Arc<dyn ConsentMeetingStore>,
    /// `PUBLIC_BASE_URL`: the placeholder's and the consent pages' origin.
    pub public_base_url: String,
}

/// What one run knows of the host's meetings under the mode (read once, when the first
/// page is reviewed).
#[derive(Default)]
pub struct RunMeetings {
    loaded: bool,
    live: HashMap<String, ConsentMeeting>,
}

/// The answer of `createOrGet` (onlineMeeting), what is kept of it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OnlineMeeting {
    id: String,
    join_web_url: Option<String>,
}

fn graph_time(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// `POST /me/onlineMeetings/createOrGet`'s body: the record's `externalId` (the same one on
/// every retry: "If the external ID already exists, this API will return the onlineMeeting
/// object with that external ID", onlinemeeting-createorget, read 2026-12-06; wire example
/// `conformance/calendar/onlinemeeting-createorget.json`), the event's subject and times.
fn create_or_get(meeting: &ConsentMeeting, subject: &str) -> serde_json::Value {
    json!({
        "externalId": meeting.external_id,
        "subject": subject,
        "startDateTime": graph_time(meeting.start),
        "endDateTime": graph_time(meeting.end),
    })
}

/// `PATCH /me/onlineMeetings/{id}`: both times together ("always requires both
/// startDateTime and endDateTime", onlinemeeting-update, read 2026-12-06; example
/// `conformance/calendar/onlinemeeting-update.json`).
fn meeting_times(start: OffsetDateTime, end: OffsetDateTime) -> serde_json::Value {
    json!({"startDateTime": graph_time(start), "endDateTime": graph_time(end)})
}

/// `PATCH /me/events/{id}` with the body only: an update changes only the properties sent
/// (event-update, read 2026-12-06; example `conformance/calendar/event-update.json`); the
/// body is an itemBody, `{contentType, content}`, as events are read
/// (`conformance/calendar/calendarview-delta-page-last.json`).
fn body_patch(content_type: Option<&str>, content: &str) -> serde_json::Value {
    json!({"body": {"contentType": content_type.unwrap_or("html"), "content": content}})
}

/// The `id` and `joinWebUrl` of an onlineMeeting answer (resources/onlinemeeting, read
/// 2026-12-06; examples `conformance/calendar/onlinemeeting-*.json`).
fn parse_online_meeting(answer: &[u8]) -> Result<OnlineMeeting, WorkError> {
    serde_json::from_slice(answer).map_err(|error| {
        WorkError::Graph(GraphError::Malformed(format!(
            "an onlineMeeting answer: {:?} at line {}",
            error.classify(),
            error.line()
        )))
    })
}

fn store_error(error: connector_core::ports::StoreError) -> WorkError {
    WorkError::Store(error)
}

impl ConsentLinker {
    /// Whether the mode applies to this run: the tenant's switch, and the host's grant.
    pub fn applies(&self, ctx: &RunContext<'_>) -> bool {
        let on = ctx
            .tenant
            .is_some_and(|tenant| tenant.switches.explicit_consent);
        let granted = ctx
            .connection
            .granted_scopes
            .contains_all(&[Scope::CalendarsReadWrite, Scope::OnlineMeetingsReadWrite]);
        if on && !granted {
            warn!(
                "explicit consent mode is on but the host has not granted Calendars.ReadWrite and OnlineMeetings.ReadWrite; placeholders are left"
            );
        }
        on && granted
    }

    fn placeholder(&self) -> String {
        meeting_consent::placeholder_url(&self.public_base_url)
    }

    fn link(&self, meeting: &ConsentMeeting) -> String {
        meeting_consent::page_url(&self.public_base_url, &meeting.link_token)
    }

    /// Where the event's body stands: the placeholder, the record's link, or neither.
    fn mark(&self, event: &GraphEvent, record: Option<&ConsentMeeting>) -> BodyMark {
        let link = record.map(|meeting| self.link(meeting));
        let body = event.body.as_ref().map_or("", |body| body.content.as_str());
        meeting_consent::body_mark(body, &self.placeholder(), link.as_deref())
    }

    /// Reviews one delta page (see the module's rules).
    pub(crate) async fn review(
        &self,
        ctx: &mut RunContext<'_>,
        judge: &Judge,
        meetings: &mut RunMeetings,
        items: &[DeltaItem],
    ) -> Result<(), WorkError> {
        if !meetings.loaded {
            meetings.live = self
                .store
                .list_consent_meetings(&judge.owner)
                .await
                .map_err(store_error)?
                .into_iter()
                .filter(|meeting| meeting.status.is_live())
                .map(|meeting| (meeting.event_id.clone(), meeting))
                .collect();
            meetings.loaded = true;
        }
        for item in items {
            let (id, outcome) = match item {
                DeltaItem::Changed(event) => {
                    let record = meetings.live.get(&event.id);
                    let mark = self.mark(event, record);
                    if record.is_none() && mark != BodyMark::Placeholder {
                        continue;
                    }
                    (
                        &event.id,
                        self.changed(ctx, judge, record, event, mark).await?,
                    )
                }
                // Deleted (a cancellation) or moved out of the window: Graph does not say
                // which, a GET does.
                DeltaItem::Removed { id } => {
                    let Some(record) = meetings.live.get(id) else {
                        continue;
                    };
                    let outcome = match self.read_event(ctx, id).await? {
                        None => {
                            let now = ctx.now();
                            info!("a meeting under explicit consent was cancelled");
                            self.change(&judge.owner, id, |meeting| meeting.cancel(now))
                                .await?
                        }
                        Some(event) => {
                            let mark = self.mark(&event, Some(record));
                            self.changed(ctx, judge, Some(record), &event, mark).await?
                        }
                    };
                    (id, outcome)
                }
            };
            match outcome {
                Some(meeting) if meeting.status.is_live() => {
                    meetings.live.insert(meeting.event_id.clone(), meeting);
                }
                _ => {
                    meetings.live.remove(id);
                }
            }
        }
        Ok(())
    }

    async fn read_event(
        &self,
        ctx: &RunContext<'_>,
        id: &str,
    ) -> Result<Option<GraphEvent>, WorkError> {
        match ctx
            .session
            .get(
                &calendar::event_path(id),
                &[Prefer::TimezoneUtc, Prefer::ImmutableId],
            )
            .await
        {
            Ok(body) => calendar::parse_event(&body)
                .map(Some)
                .map_err(|error| WorkError::Graph(GraphError::Malformed(error.to_string()))),
            Err(error) if error.status() == Some(404) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Saves a change through connector-core's optimistic update.
    async fn change(
        &self,
        owner: &UserKey,
        event_id: &str,
        change: impl FnMut(&mut ConsentMeeting) -> bool,
    ) -> Result<Option<ConsentMeeting>, WorkError> {
        consent_meetings::update(self.store.as_ref(), owner, event_id, change)
            .await
            .map_err(store_error)
    }

    /// The guests of an event: attendees who are people (not rooms or equipment) outside
    /// the tenant, other than the host.
    fn guests(judge: &Judge, event: &GraphEvent) -> Vec<String> {
        event
            .attendees
            .iter()
            .filter(|attendee| !calendar::is_resource(attendee))
            .map(|attendee| attendee.email_address.address.trim().to_lowercase())
            .filter(|address| {
                address.contains('@')
                    && !judge.own.contains(address)
                    && !judge.rules.is_internal(address)
            })
            .collect()
    }

    /// Whether the host organizes the event: Graph's `isOrganizer`, else the organizer's
    /// address is one of the host's.
    fn hosts(judge: &Judge, event: &GraphEvent) -> bool {
        event.is_organizer.unwrap_or_else(|| {
            event
                .organizer_address()
                .is_some_and(|address| judge.own.contains(address))
        })
    }

    async fn changed(
        &self,
        ctx: &mut RunContext<'_>,
        judge: &Judge,
        record: Option<&ConsentMeeting>,
        event: &GraphEvent,
        mark: BodyMark,
    ) -> Result<Option<ConsentMeeting>, WorkError> {
        let now = ctx.now();
        let times = event.start_utc().ok().zip(event.end_utc().ok());
        let single = event
            .kind
            .as_deref()
            .is_none_or(|kind| kind.eq_ignore_ascii_case("singleInstance"));
        let eligible = Self::hosts(judge, event) && single && !event.is_all_day && times.is_some();
        let guests = Self::guests(judge, event);
        let Some(record) = record else {
            // A new placeholder: only a future meeting with guests is linked.
            let Some((start, end)) = times else {
                return Ok(None);
            };
            if !eligible || event.is_cancelled || start <= now || guests.is_empty() {
                return Ok(None);
            }
            let meeting = ConsentMeeting::new(&judge.owner, &event.id, start, end, guests, now);
            if meeting.status != ConsentStatus::Linking {
                return Ok(None);
            }
            let saved = match self
                .store
                .save_consent_meeting(&meeting, None)
                .await
                .map_err(store_error)?
            {
                Some(saved) => saved,
                // Made meanwhile by another run, or stopped before (the host put the
                // placeholder back): carry on with it, collecting again.
                None => match self
                    .change(&judge.owner, &event.id, |stored| {
                        stored.reschedule(start, end, now);
                        stored.set_guests(meeting.guests.iter().map(|g| g.address.clone()), now);
                        stored.resume(now);
                        true
                    })
                    .await?
                {
                    Some(stored) if stored.status.is_live() => stored,
                    _ => return Ok(None),
                },
            };
            info!("a meeting under explicit consent found; linking it");
            return self.link_event(ctx, judge, saved, event).await.map(Some);
        };
        if mark == BodyMark::None {
            info!("the consent link was taken out of a meeting; collection stopped");
            return self
                .change(&judge.owner, &record.event_id, |meeting| {
                    meeting.stop(stop_reason::LINK_REMOVED, now)
                })
                .await;
        }
        if event.is_cancelled {
            return self
                .change(&judge.owner, &record.event_id, |meeting| {
                    meeting.cancel(now)
                })
                .await;
        }
        let Some((start, end)) = times.filter(|_| eligible) else {
            return self
                .change(&judge.owner, &record.event_id, |meeting| {
                    meeting.stop(stop_reason::NOT_ELIGIBLE, now)
                })
                .await;
        };
        let moved = record.start != start || record.end != end;
        if moved && let Some(online) = &record.online_meeting_id {
            ctx.session
                .patch_json(
                    &format!("/me/onlineMeetings/{online}"),
                    &meeting_times(start, end),
                )
                .await?;
            info!("a meeting under explicit consent was rescheduled");
        }
        let updated = self
            .change(&judge.owner, &record.event_id, |meeting| {
                let before = meeting.clone();
                meeting.reschedule(start, end, now);
                meeting.set_guests(guests.iter().cloned(), now);
                *meeting != before
            })
            .await?;
        match updated {
            Some(meeting)
                if meeting.status == ConsentStatus::Linking || mark == BodyMark::Placeholder =>
            {
                self.link_event(ctx, judge, meeting, event).await.map(Some)
            }
            other => Ok(other),
        }
    }

    /// The online meeting, then the link in the event, then active. Each step is saved, so
    /// a retry does only what is left.
    async fn link_event(
        &self,
        ctx: &mut RunContext<'_>,
        judge: &Judge,
        mut meeting: ConsentMeeting,
        event: &GraphEvent,
    ) -> Result<ConsentMeeting, WorkError> {
        if meeting.online_meeting_id.is_none() {
            let answer = ctx
                .session
                .post_json(
                    "/me/onlineMeetings/createOrGet",
                    &create_or_get(&meeting, event.subject.as_deref().unwrap_or_default()),
                )
                .await?;
            let online = parse_online_meeting(&answer)?;
            let (id, join) = (online.id, online.join_web_url);
            meeting = match self
                .change(&judge.owner, &meeting.event_id, |stored| {
                    stored.online_meeting_id = Some(id.clone());
                    stored.join_url = join.clone();
                    true
                })
                .await?
            {
                Some(saved) => saved,
                None => return Ok(meeting),
            };
        }
        let placeholder = self.placeholder();
        let link = self.link(&meeting);
        if let Some(body) = event
            .body
            .as_ref()
            .filter(|body| body.content.contains(&placeholder))
        {
            let content = meeting_consent::replace_placeholder(&body.content, &placeholder, &link);
            let patched = ctx
                .session
                .patch_json_if_match(
                    &calendar::event_path(&event.id),
                    &body_patch(body.content_type.as_deref(), &content),
                    event.etag.as_deref(),
                )
                .await;
            match patched {
                Ok(_) => {}
                // The host changed the event since this page: its new version comes with
                // the next delta round, and is linked then.
                Err(error) if error.status() == Some(412) => {
                    info!("the event changed before the consent link was written; next round");
                    return Ok(meeting);
                }
                Err(error) => return Err(error.into()),
            }
        }
        let now = ctx.now();
        Ok(self
            .change(&judge.owner, &meeting.event_id, |stored| {
                if stored.status != ConsentStatus::Linking {
                    return false;
                }
                stored.activate(now);
                true
            })
            .await?
            .unwrap_or(meeting))
    }
}

/// The requests and answer reader above against Microsoft's own examples
/// (`infra/microsoft-sim/conformance/calendar/`).
#[cfg(test)]
mod conformance {
    use super::*;
    use connector_core::domain::{TenantId, UserId, UserKey};
    use serde_json::Value;
    use time::macros::datetime;

    fn example(name: &str) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../infra/microsoft-sim/conformance/calendar")
            .join(format!("{name}.json"));
        serde_json::from_str(&std::fs::read_to_string(&path).expect("an example")).expect("JSON")
    }

    fn keys(value: &Value) -> Vec<&str> {
        let mut keys: Vec<&str> = value
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        keys
    }

    /// Every key we send is one the example sends.
    fn sent_as_documented(ours: &Value, documented: &Value) {
        let documented = keys(documented);
        for key in keys(ours) {
            assert!(documented.contains(&key), "{key} is not in {documented:?}");
        }
    }

    #[test]
    fn online_meeting_answers_give_the_id_and_the_join_url() {
        for name in [
            "onlinemeeting-create",
            "onlinemeeting-createorget",
            "onlinemeeting-update",
        ] {
            let answer = example(name)["response"]["body"].clone();
            let parsed = parse_online_meeting(answer.to_string().as_bytes()).expect(name);
            assert_eq!(parsed.id, answer["id"].as_str().expect("id"), "{name}");
            assert_eq!(
                parsed.join_web_url.as_deref(),
                answer["joinWebUrl"].as_str(),
                "{name}"
            );
            assert!(parsed.join_web_url.is_some(), "{name}");
        }
    }

    #[test]
    fn requests_use_the_documented_properties() {
        let owner = UserKey::new(
            TenantId::parse("11111111-1111-4111-8111-111111111111").expect("tid"),
            UserId::parse("22222222-2222-4222-8222-222222222222").expect("oid"),
        );
        let start = datetime!(2026-12-08 15:00 UTC);
        let meeting = ConsentMeeting::new(
            &owner,
            "AAkALgAA",
            start,
            start + time::Duration::minutes(30),
            ["ann@fabrikam.example".to_owned()],
            datetime!(2026-12-06 09:00 UTC),
        );
        let create = example("onlinemeeting-createorget");
        sent_as_documented(
            &create_or_get(&meeting, "Review"),
            &create["request"]["body"],
        );
        let update = example("onlinemeeting-update");
        let times = meeting_times(meeting.start, meeting.end);
        sent_as_documented(&times, &update["request"]["body"]);
        assert_eq!(
            keys(&times),
            ["endDateTime", "startDateTime"],
            "both, always"
        );
        // The body in the itemBody shape Graph reads events with (the delta example's).
        let delta = example("calendarview-delta-page-last");
        let patch = body_patch(Some("html"), "<p>x</p>");
        assert_eq!(
            keys(&patch["body"]),
            keys(&delta["response"]["body"]["value"][0]["body"])
        );
        assert_eq!(keys(&patch), ["body"], "nothing else of the event is sent");
    }
}
