//! Explicit Consent Mode against microsoft-sim and moto: the placeholder meeting gets one
//! online meeting and its consent link (every other byte of the event unchanged), whatever
//! the redeliveries; reschedule, cancellation and the link taken out; the recording
//! decision from three guests' answers; meetings that are not the mode's (internal only,
//! hosted by someone else) and a tenant with the mode off are left alone, without a Graph
//! write.

use connector_core::clock::Clock;
use connector_core::consent_meetings::{self, DueReport, process_due};
use connector_core::domain::meeting_consent::{
    self, Answer, ConsentMeeting, ConsentStatus, LinkToken, stop_reason,
};
use connector_core::domain::{TenantSwitches, UserId, UserKey};
use connector_core::ports::{ActivityStore, ConsentMeetingStore, TenantStore};
use connector_core::sync::JobOutcome;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use crate::support::*;

const HOST: &str = "adele@contoso.com";
const SCOPES: &str = "openid profile email offline_access https://graph.microsoft.com/Calendars.ReadWrite https://graph.microsoft.com/OnlineMeetings.ReadWrite";
const GUESTS: [&str; 3] = [
    "ann@fabrikam.example",
    "ben@fabrikam.example",
    "cho@northwind.example",
];

fn placeholder() -> String {
    meeting_consent::placeholder_url(PUBLIC_BASE_URL)
}

/// The add-in's body: HTML with the placeholder as a link and as text, CRLFs and an entity.
fn body_with_placeholder() -> String {
    let p = placeholder();
    format!(
        "<html><head>\r\n<meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\">\r\n</head><body>\r\n<p>Agenda: pricing &amp; next steps \u{2014} caf\u{e9}</p>\r\n<p><a href=\"{p}\">Join with recording consent: {p}</a></p>\r\n</body></html>"
    )
}

/// An external meeting the host organizes, with the placeholder, a colleague and a room.
fn consent_meeting(start: OffsetDateTime, guests: &[&str]) -> Value {
    let mut attendees: Vec<Value> = guests
        .iter()
        .map(|guest| attendee(guest, "required", "none"))
        .collect();
    attendees.push(attendee("megan@contoso.com", "optional", "none"));
    attendees.push(attendee("room.4@contoso.com", "resource", "accepted"));
    let mut event = meeting("Pricing review", start, 45, HOST, attendees);
    event["body"] = json!({"contentType": "html", "content": body_with_placeholder()});
    event["location"] = json!({"displayName": "Room 4"});
    event
}

struct Host {
    h: Harness,
    key: UserKey,
    user: UserId,
}

async fn host(explicit_consent: bool) -> Host {
    let tenant = new_tenant();
    let user = new_user();
    let h = Harness::start(
        tenant.clone(),
        world(&tenant, vec![self::user(&user, HOST, vec![])]),
    )
    .await
    .expect("harness");
    h.tenants
        .set_switches(
            &tenant,
            TenantSwitches {
                explicit_consent,
                ..TenantSwitches::default()
            },
            h.clock.now(),
        )
        .await
        .expect("switches");
    let key = h.connect_with(&user, HOST, SCOPES).await.expect("connect");
    Host { h, key, user }
}

impl Host {
    async fn add(&self, event: Value) -> String {
        let added = self
            .h
            .control(
                reqwest::Method::POST,
                &format!("/_sim/users/{}/events", self.user.as_str()),
                Some(event),
            )
            .await
            .expect("event added");
        added["id"].as_str().expect("an id").to_owned()
    }

    /// The event as the sim stores it (REST id, body as stored).
    async fn event(&self, id: &str) -> Value {
        self.h
            .control(
                reqwest::Method::GET,
                &format!("/_sim/users/{}/events/{}", self.user.as_str(), id),
                None,
            )
            .await
            .expect("the event")
    }

    async fn patch_event(&self, id: &str, patch: Value) {
        self.h
            .control(
                reqwest::Method::PATCH,
                &format!("/_sim/users/{}/events/{}", self.user.as_str(), id),
                Some(patch),
            )
            .await
            .expect("event updated");
    }

    async fn online_meetings(&self) -> Vec<Value> {
        self.h
            .control(
                reqwest::Method::GET,
                &format!("/_sim/users/{}/online-meetings", self.user.as_str()),
                None,
            )
            .await
            .expect("online meetings")["value"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// One consent tick looking `lookahead` seconds ahead.
    async fn tick(&self, lookahead: i64) -> DueReport {
        process_due(
            self.h.consent.as_ref(),
            self.h.tenants.as_ref(),
            self.h.clock.as_ref(),
            Duration::seconds(lookahead),
        )
        .await
        .expect("tick")
    }

    async fn run(&self) {
        let outcome = self.h.run(&self.key).await;
        assert!(matches!(outcome, JobOutcome::Done), "{outcome:?}");
    }

    async fn meetings(&self) -> Vec<ConsentMeeting> {
        self.h
            .consent
            .list_consent_meetings(&self.key)
            .await
            .expect("consent meetings")
    }

    /// The record's event id (Graph's immutable id) of the meeting starting at `start`.
    async fn record_id(&self, start: OffsetDateTime) -> String {
        self.meetings()
            .await
            .into_iter()
            .find(|meeting| meeting.start == start)
            .map(|meeting| meeting.event_id)
            .expect("a record starting then")
    }

    async fn only_meeting(&self) -> ConsentMeeting {
        let meetings = self.meetings().await;
        assert_eq!(meetings.len(), 1, "{meetings:#?}");
        meetings.into_iter().next().expect("one")
    }

    /// The Graph writes (anything but GET) since `since`.
    async fn writes_since(&self, since: u64) -> Vec<String> {
        self.h
            .requests_since(since)
            .await
            .expect("requests")
            .iter()
            .filter(|r| r["method"].as_str() != Some("GET"))
            .map(|r| {
                let path = r["path"].as_str().unwrap_or_default();
                format!(
                    "{} {}",
                    r["method"].as_str().unwrap_or_default(),
                    path.strip_prefix("/v1.0").unwrap_or(path)
                )
            })
            .collect()
    }
}

/// Drops what an update is expected to change.
fn without_versions(mut event: Value) -> Value {
    if let Some(object) = event.as_object_mut() {
        for key in [
            "@odata.etag",
            "changeKey",
            "lastModifiedDateTime",
            "body",
            "bodyPreview",
        ] {
            object.remove(key);
        }
    }
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_placeholder_meeting_gets_one_online_meeting_and_its_link_and_nothing_else_changes() {
    let host = host(true).await;
    let now = host.h.now();
    let start = day(now, 3, 15);
    let id = host.add(consent_meeting(start, &GUESTS)).await;
    let before = host.event(&id).await;

    let since = host.h.next_request_seq().await.expect("seq");
    host.run().await;
    let meeting = host.only_meeting().await;
    assert_eq!(meeting.status, ConsentStatus::Active);
    assert_eq!(
        meeting
            .guests
            .iter()
            .map(|g| g.address.as_str())
            .collect::<Vec<_>>(),
        GUESTS,
        "the guests: external people only (no colleague, no room, not the host)"
    );
    assert_eq!(
        (meeting.start, meeting.end),
        (start, start + Duration::minutes(45))
    );
    // A meeting three days ahead: the request is due a day before, not yet made.
    assert_eq!(meeting.request_due_at, start - Duration::hours(24));
    assert_eq!(meeting.requested_at, None);

    let online = host.online_meetings().await;
    assert_eq!(online.len(), 1, "{online:#?}");
    assert_eq!(online[0]["externalId"], json!(meeting.external_id));
    assert_eq!(online[0]["subject"], json!("Pricing review"));
    assert_eq!(
        meeting.join_url.as_deref(),
        online[0]["joinWebUrl"].as_str(),
        "the join URL is the online meeting's"
    );
    let writes = host.writes_since(since).await;
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert_eq!(writes[0], "POST /me/onlineMeetings/createOrGet");
    assert!(writes[1].starts_with("PATCH /me/events/"), "{writes:?}");

    // The body: the placeholder replaced by the invite's link, every other byte as it was.
    let after = host.event(&id).await;
    let link = meeting_consent::page_url(PUBLIC_BASE_URL, &meeting.link_token);
    assert_eq!(
        after["body"]["content"].as_str().expect("body"),
        body_with_placeholder().replace(&placeholder(), &link)
    );
    assert_eq!(after["body"]["contentType"], before["body"]["contentType"]);
    assert_eq!(
        without_versions(after.clone()),
        without_versions(before.clone()),
        "attendees, times, subject, location: as the host wrote them"
    );
    assert_ne!(after["@odata.etag"], before["@odata.etag"]);

    // Redelivered and run again: the patched event comes back through delta; nothing is
    // created or written again.
    let since = host.h.next_request_seq().await.expect("seq");
    host.run().await;
    host.run().await;
    assert_eq!(host.online_meetings().await.len(), 1);
    assert_eq!(host.writes_since(since).await, Vec::<String>::new());
    let again = host.only_meeting().await;
    assert_eq!(again.link_token, meeting.link_token);
    assert_eq!(again.guests, meeting.guests);
    // Nothing of the body is stored: the record holds no subject, body or location.
    let stored = serde_json::to_string(&again).expect("json");
    for text in ["Pricing review", "Agenda", "Room 4", "megan@contoso.com"] {
        assert!(!stored.contains(text), "{text} stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reschedule_moves_the_online_meeting_a_cancellation_and_a_removed_link_end_collection() {
    let host = host(true).await;
    let now = host.h.now();
    let moved = host.add(consent_meeting(day(now, 2, 10), &GUESTS)).await;
    let cancelled = host
        .add(consent_meeting(day(now, 4, 10), &GUESTS[..1]))
        .await;
    let unlinked = host
        .add(consent_meeting(day(now, 5, 10), &GUESTS[1..]))
        .await;
    host.run().await;
    assert_eq!(host.meetings().await.len(), 3);
    assert_eq!(host.online_meetings().await.len(), 3);
    let (moved_id, cancelled_id, unlinked_id) = (
        host.record_id(day(now, 2, 10)).await,
        host.record_id(day(now, 4, 10)).await,
        host.record_id(day(now, 5, 10)).await,
    );

    // Moved to the day after, one guest dropped and one added.
    let new_start = day(now, 3, 14);
    host.patch_event(
        &moved,
        json!({"start": utc(new_start), "end": utc(new_start + Duration::minutes(30)),
               "attendees": [attendee(GUESTS[0], "required", "none"),
                             attendee("dee@tailspin.example", "required", "none")]}),
    )
    .await;
    // The host cancels one meeting, and takes the consent link out of another.
    host.h
        .control(
            reqwest::Method::POST,
            &format!(
                "/_sim/users/{}/events/{}/cancel",
                host.user.as_str(),
                cancelled
            ),
            Some(json!({})),
        )
        .await
        .expect("cancelled");
    host.patch_event(
        &unlinked,
        json!({"body": {"contentType": "html", "content": "<p>We will use our own link.</p>"}}),
    )
    .await;
    let since = host.h.next_request_seq().await.expect("seq");
    host.run().await;

    let meetings = host.meetings().await;
    let find = |id: &str| {
        meetings
            .iter()
            .find(|m| m.event_id == id)
            .cloned()
            .expect("a record")
    };
    let moved_record = find(&moved_id);
    assert_eq!(moved_record.status, ConsentStatus::Active);
    assert_eq!(moved_record.start, new_start);
    assert_eq!(
        moved_record
            .guests
            .iter()
            .map(|g| g.address.as_str())
            .collect::<Vec<_>>(),
        [GUESTS[0], "dee@tailspin.example"]
    );
    let online = host.online_meetings().await;
    let online_moved = online
        .iter()
        .find(|m| m["id"].as_str() == moved_record.online_meeting_id.as_deref())
        .expect("the moved meeting's online meeting");
    assert_eq!(
        online_moved["startDateTime"]
            .as_str()
            .map(|s| s.trim_end_matches('Z').trim_end_matches(".0000000")),
        Some(graph_time(new_start).as_str()),
        "{online_moved}"
    );
    assert_eq!(find(&cancelled_id).status, ConsentStatus::Cancelled);
    let unlinked_record = find(&unlinked_id);
    assert_eq!(unlinked_record.status, ConsentStatus::Stopped);
    assert_eq!(
        unlinked_record.stop_reason.as_deref(),
        Some(stop_reason::LINK_REMOVED)
    );
    // The only write: the moved meeting's online meeting.
    let writes = host.writes_since(since).await;
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert!(
        writes[0].starts_with("PATCH /me/onlineMeetings/"),
        "{writes:?}"
    );
    // Nothing is due for the stopped and cancelled meetings.
    let due = host
        .h
        .consent
        .due_consent_meetings(host.h.now() + Duration::days(30), 100)
        .await
        .expect("due");
    assert_eq!(
        due.iter().map(|(_, id)| id.as_str()).collect::<Vec<_>>(),
        [moved_id.as_str()]
    );

    // The host puts the placeholder back: collection resumes, on the same Teams meeting.
    host.patch_event(
        &unlinked,
        json!({"body": {"contentType": "html", "content": body_with_placeholder()}}),
    )
    .await;
    host.run().await;
    let resumed = host
        .meetings()
        .await
        .into_iter()
        .find(|m| m.event_id == unlinked_id)
        .expect("the record");
    assert_eq!(resumed.status, ConsentStatus::Active);
    assert_eq!(resumed.stop_reason, None);
    assert_eq!(
        resumed.link_token, unlinked_record.link_token,
        "the same link"
    );
    assert_eq!(
        host.online_meetings().await.len(),
        3,
        "the same Teams meeting"
    );
    assert!(
        host.event(&unlinked).await["body"]["content"]
            .as_str()
            .unwrap_or_default()
            .contains(&meeting_consent::page_url(
                PUBLIC_BASE_URL,
                &resumed.link_token
            ))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_decision_records_only_when_every_guest_agreed_and_names_the_others() {
    let host = host(true).await;
    let now = host.h.now();
    // Made the same day: the request is due at once.
    let start = now.replace_nanosecond(0).expect("time") + Duration::hours(2);
    host.add(consent_meeting(start, &GUESTS)).await;
    host.add(consent_meeting(start + Duration::minutes(5), &GUESTS))
        .await;
    host.run().await;
    let three = host.record_id(start).await;
    let agreed = host.record_id(start + Duration::minutes(5)).await;
    for meeting in host.meetings().await {
        assert_eq!(meeting.status, ConsentStatus::Active);
        assert!(meeting.requested_at.is_some(), "requested at once");
    }
    let answer = |id: String, guest: &'static str, answer: Answer| {
        let store = host.h.consent.clone();
        let key = host.key.clone();
        let at = host.h.now();
        async move {
            consent_meetings::update(store.as_ref(), &key, &id, |meeting| {
                let index = meeting.guest_index(guest).expect("a guest");
                meeting.answer(index, answer, at)
            })
            .await
            .expect("answered")
        }
    };
    answer(three.clone(), GUESTS[0], Answer::DoNotRecord).await;
    answer(three.clone(), GUESTS[2], Answer::Record).await;
    for guest in GUESTS {
        answer(agreed.clone(), guest, Answer::Record).await;
    }

    // Nothing is decided before the start - 60 s.
    let report = host.tick(0).await;
    assert_eq!(report.decided, 0);
    host.h
        .advance(Duration::hours(2) + Duration::minutes(4))
        .await
        .expect("advance");
    let report = host.tick(60).await;
    assert_eq!(report.decided, 2, "{report:?}");

    let decision = |id: &str| {
        let store = host.h.consent.clone();
        let key = host.key.clone();
        let id = id.to_owned();
        async move {
            store
                .get_consent_meeting(&key, &id)
                .await
                .expect("read")
                .expect("the meeting")
                .decision
                .expect("decided")
        }
    };
    let first = decision(&three).await;
    assert!(!first.record);
    assert_eq!(first.declined, [GUESTS[0]]);
    assert_eq!(first.no_answer, [GUESTS[1]]);
    assert_eq!(first.starts_at, start);
    let second = decision(&agreed).await;
    assert!(second.record);
    assert!(second.declined.is_empty() && second.no_answer.is_empty());
    // Decided once: the next tick decides nothing again.
    let report = host.tick(60).await;
    assert_eq!(report.decided, 0);

    // Disconnecting (the user's activities deleted) deletes the answers with them.
    let tokens: Vec<LinkToken> = host
        .meetings()
        .await
        .iter()
        .flat_map(|meeting| meeting.tokens().cloned().collect::<Vec<_>>())
        .collect();
    assert_eq!(tokens.len(), 8);
    host.h
        .activities
        .delete_all_activities(&host.key)
        .await
        .expect("deleted");
    assert!(host.meetings().await.is_empty());
    for token in &tokens {
        assert!(
            host.h
                .consent
                .find_consent_meeting(token)
                .await
                .expect("lookup")
                .is_none()
        );
    }
    let everything = host.h.everything().await.expect("everything");
    for guest in GUESTS {
        assert!(
            !everything.contains(guest),
            "{guest} kept after the disconnection"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn internal_meetings_others_meetings_and_a_tenant_without_the_mode_get_no_graph_write() {
    let host = host(true).await;
    let now = host.h.now();
    // Internal only (colleagues and a room): not the mode's.
    let mut internal = consent_meeting(day(now, 2, 9), &[]);
    internal["attendees"] = json!([attendee("megan@contoso.com", "required", "none")]);
    host.add(internal).await;
    // Hosted by a guest who is not a user: the host is only invited.
    let mut theirs = consent_meeting(day(now, 3, 9), &[GUESTS[1]]);
    theirs["organizer"] = who(GUESTS[0]);
    theirs["isOrganizer"] = json!(false);
    theirs["attendees"] = json!([
        attendee(HOST, "required", "none"),
        attendee(GUESTS[1], "required", "none")
    ]);
    host.add(theirs).await;
    let since = host.h.next_request_seq().await.expect("seq");
    host.run().await;
    assert!(host.meetings().await.is_empty());
    assert_eq!(host.writes_since(since).await, Vec::<String>::new());
    assert!(host.online_meetings().await.is_empty());

    // The same placeholder meeting in a tenant with the mode off: no write at all.
    let off = self::host(false).await;
    let id = off.add(consent_meeting(day(now, 2, 15), &GUESTS)).await;
    let before = off.event(&id).await;
    let since = off.h.next_request_seq().await.expect("seq");
    off.run().await;
    assert_eq!(off.writes_since(since).await, Vec::<String>::new());
    assert!(off.meetings().await.is_empty());
    assert!(off.online_meetings().await.is_empty());
    assert_eq!(off.event(&id).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_tokens_of_one_meeting_open_that_meeting_only() {
    let host = host(true).await;
    let now = host.h.now();
    host.add(consent_meeting(day(now, 2, 9), &GUESTS[..2]))
        .await;
    host.add(consent_meeting(day(now, 2, 13), &GUESTS[1..]))
        .await;
    host.run().await;
    let (a, b) = (
        host.record_id(day(now, 2, 9)).await,
        host.record_id(day(now, 2, 13)).await,
    );
    assert_ne!(a, b);
    let meetings = host.meetings().await;
    assert_eq!(meetings.len(), 2);
    for meeting in &meetings {
        for token in meeting.tokens() {
            let found = host
                .h
                .consent
                .find_consent_meeting(token)
                .await
                .expect("lookup")
                .expect("the token's meeting");
            assert_eq!(found.event_id, meeting.event_id);
        }
    }
    let (first, second) = (&meetings[0], &meetings[1]);
    assert!(first.event_id == a || first.event_id == b);
    // A guest invited to both has a different link for each.
    let shared = GUESTS[1];
    let link = |m: &ConsentMeeting| {
        m.guests[m.guest_index(shared).expect("invited")]
            .token
            .clone()
    };
    assert_ne!(link(first), link(second));
    assert_eq!(second.holder(&link(first)), None);
    // A dropped guest's link opens nothing any more.
    let dropped = first.guests[0].token.clone();
    host.patch_event(
        &first.event_id,
        json!({"attendees": first.guests[1..].iter().map(|g| attendee(&g.address, "required", "none")).collect::<Vec<_>>()}),
    )
    .await;
    host.run().await;
    assert!(
        host.h
            .consent
            .find_consent_meeting(&dropped)
            .await
            .expect("lookup")
            .is_none()
    );
    // The activities listing never shows the mode's items.
    let listed = host
        .h
        .activities
        .list_activities(&host.key, 100, None)
        .await
        .expect("list");
    assert!(
        listed
            .items
            .iter()
            .all(|a| !a.activity_id.as_str().starts_with("consent"))
    );
}
