//! Issue 6's world: external CRM meetings, external non-CRM meetings, internal-only meetings
//! (switch on and off), a private meeting, an all-day event, a weekly series with one
//! exception and one cancelled occurrence, a cancelled attendee copy, an event beyond 12
//! months: the exact stored set, field by field; and the privacy test (marker strings in
//! bodies and in discarded meetings appear nowhere stored or logged).

use connector_core::calendar::PRIVATE_SUBJECT;
use connector_core::domain::{CrmRecordKind, MatchReason, SyncStage, UserSwitches};
use connector_core::sync::JobOutcome;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::support::*;

const ADELE: &str = "adele@contoso.com";

/// Strings that must never be stored or logged: bodies (the user's notes) of kept meetings,
/// and everything of discarded meetings.
const MARKERS: &[&str] = &[
    "NOTE-MARKER-7c1",
    "NOTE-MARKER-pp2",
    "SUBJECT-MARKER-private-4e",
    "SUBJECT-MARKER-vendor-9a",
    "vendor-marker-3b.io",
    "LOCATION-MARKER-5d",
    "NOTE-MARKER-vendor-6f",
    "SUBJECT-MARKER-dentist-2c",
    "NOTE-MARKER-dentist-8e",
    "SUBJECT-MARKER-mixed-1f",
    "SUBJECT-MARKER-far-77",
];
/// Discarded while the internal-meeting switch is off.
const INTERNAL_MARKERS: &[&str] = &["SUBJECT-MARKER-internal-0d", "NOTE-MARKER-internal-ab"];

fn with_body(mut event: Value, note: &str) -> Value {
    event["body"] = json!({"contentType": "html", "content": format!("<p>{note}</p>")});
    event
}

struct Times {
    renewal: OffsetDateTime,
    intro: OffsetDateTime,
    internal: OffsetDateTime,
    private: OffsetDateTime,
    all_day: OffsetDateTime,
    series: [OffsetDateTime; 5],
    moved: OffsetDateTime,
    qbr: OffsetDateTime,
}

fn events(now: OffsetDateTime) -> (Vec<Value>, Times) {
    let series_start = day(now, 2, 16);
    let weekday = series_start.weekday().to_string().to_lowercase();
    let week = time::Duration::weeks(1);
    let moved = day(now, 10, 17);
    let times = Times {
        renewal: day(now, 3, 14),
        intro: day(now, 5, 9),
        internal: day(now, 7, 9),
        private: day(now, 8, 11),
        all_day: day(now, 10, 0),
        series: [
            series_start,
            moved,
            series_start + week * 2,
            series_start + week * 4,
            series_start + week * 5,
        ],
        moved,
        qbr: day(now, 12, 15),
    };
    let mut renewal = with_body(
        meeting(
            "Acme renewal",
            times.renewal,
            60,
            ADELE,
            vec![attendee("sam@acme.com", "required", "accepted")],
        ),
        "NOTE-MARKER-7c1 budget is 40k",
    );
    renewal["isOnlineMeeting"] = json!(true);
    renewal["onlineMeetingProvider"] = json!("teamsForBusiness");
    renewal["onlineMeeting"] = json!({"joinUrl": "https://teams.microsoft.com/l/meetup-join/19%3ameeting_acme%40thread.v2/0"});
    renewal["location"] = json!({"displayName": "Room 4"});
    renewal["showAs"] = json!("busy");

    let mut intro = meeting(
        "Globex intro",
        times.intro,
        30,
        "jane@globex.com",
        vec![
            attendee(ADELE, "required", "accepted"),
            attendee("pat@globex.com", "optional", "tentativelyAccepted"),
        ],
    );
    intro["responseStatus"] = json!({"response": "accepted", "time": "2026-01-05T10:00:00Z"});

    let mut vendor = with_body(
        meeting(
            "SUBJECT-MARKER-vendor-9a",
            day(now, 6, 10),
            30,
            ADELE,
            vec![attendee(
                "marker.person@vendor-marker-3b.io",
                "required",
                "none",
            )],
        ),
        "NOTE-MARKER-vendor-6f",
    );
    vendor["location"] = json!({"displayName": "LOCATION-MARKER-5d"});

    let internal = with_body(
        meeting(
            "SUBJECT-MARKER-internal-0d",
            times.internal,
            15,
            "ben@contoso.com",
            vec![
                attendee(ADELE, "required", "accepted"),
                attendee("room.2@contoso.com", "resource", "accepted"),
            ],
        ),
        "NOTE-MARKER-internal-ab",
    );

    let mut private = with_body(
        meeting(
            "SUBJECT-MARKER-private-4e",
            times.private,
            45,
            ADELE,
            vec![attendee("kim@acme.com", "required", "none")],
        ),
        "NOTE-MARKER-pp2",
    );
    private["sensitivity"] = json!("private");

    let mut all_day = meeting(
        "Acme onsite",
        times.all_day,
        24 * 60,
        ADELE,
        vec![attendee("sam@acme.com", "required", "accepted")],
    );
    all_day["isAllDay"] = json!(true);
    all_day["showAs"] = json!("oof");

    let mut series = meeting(
        "Lead check-in",
        series_start,
        30,
        ADELE,
        vec![attendee("bob.lead@gmail.com", "required", "none")],
    );
    series["recurrence"] = json!({
        "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": [weekday], "firstDayOfWeek": "sunday"},
        "range": {"type": "numbered", "startDate": series_start.date().to_string(), "numberOfOccurrences": 6}
    });
    series["exceptionOccurrences"] = json!([{
        "originalStartDate": (series_start + week).date().to_string(),
        "subject": "Lead check-in (moved)",
        "start": utc(moved), "end": utc(moved + time::Duration::minutes(30))
    }]);
    let cancelled: OffsetDateTime = series_start + week * 3;
    series["cancelledOccurrences"] = json!([cancelled.date().to_string()]);

    let far = meeting(
        "SUBJECT-MARKER-far-77",
        connector_core::calendar::add_months(day(now, 0, 10), 13),
        60,
        ADELE,
        vec![attendee("sam@acme.com", "required", "none")],
    );
    let dentist = with_body(
        meeting(
            "SUBJECT-MARKER-dentist-2c",
            day(now, 4, 12),
            60,
            ADELE,
            vec![],
        ),
        "NOTE-MARKER-dentist-8e",
    );
    let mut qbr = meeting(
        "Acme QBR",
        times.qbr,
        60,
        "sam@acme.com",
        vec![attendee(ADELE, "required", "accepted")],
    );
    qbr["isCancelled"] = json!(true);
    let mixed = meeting(
        "SUBJECT-MARKER-mixed-1f",
        day(now, 13, 10),
        30,
        "ben@contoso.com",
        vec![
            attendee(ADELE, "required", "none"),
            attendee("mixed.marker@vendor-marker-3b.io", "required", "none"),
        ],
    );
    (
        vec![
            renewal, intro, vendor, internal, private, all_day, series, far, dentist, qbr, mixed,
        ],
        times,
    )
}

fn expected(times: &Times, internal: bool) -> Vec<(String, OffsetDateTime)> {
    let mut set = vec![
        ("Acme renewal".to_owned(), times.renewal),
        ("Globex intro".to_owned(), times.intro),
        (PRIVATE_SUBJECT.to_owned(), times.private),
        ("Acme onsite".to_owned(), times.all_day),
        ("Acme QBR".to_owned(), times.qbr),
    ];
    for (n, start) in times.series.iter().enumerate() {
        let subject = if n == 1 {
            "Lead check-in (moved)"
        } else {
            "Lead check-in"
        };
        set.push((subject.to_owned(), *start));
    }
    if internal {
        set.push(("SUBJECT-MARKER-internal-0d".to_owned(), times.internal));
    }
    set.sort();
    set
}

async fn assert_no_marker(harness: &Harness, markers: &[&str]) {
    let everything = harness.everything().await.expect("everything readable");
    // Positive controls: the search sees stored meetings, secrets and the run's log lines.
    for present in [
        "Acme renewal",
        "office365/",
        "\"function\":\"calendar-sync\"",
    ] {
        assert!(everything.contains(present), "{present} is searched");
    }
    for marker in markers {
        assert!(
            !everything.contains(marker),
            "{marker} was stored or logged"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_world_of_issue_6_gives_the_exact_stored_set() {
    let tenant = new_tenant();
    let adele = new_user();
    let ben = new_user();
    let now = OffsetDateTime::now_utc();
    let (adele_events, times) = events(now);
    let world = world(
        &tenant,
        vec![
            user(&adele, ADELE, adele_events),
            user(&ben, "ben@contoso.com", vec![]),
        ],
    );
    let harness = Harness::start(tenant, world).await.expect("harness");
    let key = harness.connect(&adele, ADELE).await.expect("connected");

    // Internal meetings off (the default).
    assert_eq!(harness.run(&key).await, JobOutcome::Done);
    assert_eq!(
        harness.stored_set(&key).await.unwrap(),
        expected(&times, false)
    );
    let summary = harness.sink.last_run();
    assert_eq!(summary.outcome, "done");
    assert_eq!(summary.matched, 10);
    assert_eq!(summary.stored, 10);
    // 14 instances in the window: 10 events and the series as 5, less the far one outside.
    assert_eq!(summary.scanned, 14);
    assert_eq!(summary.discarded, 4);
    let meta = harness.meta(&key).await.unwrap().expect("meta");
    assert_eq!(meta.stage, SyncStage::Idle);
    assert!(meta.window.is_some() && meta.last_success_at.is_some());

    let meetings = harness.meetings(&key).await.unwrap();
    let by_subject = |subject: &str| {
        meetings
            .values()
            .find(|(m, _)| m.subject == subject)
            .unwrap_or_else(|| panic!("{subject} stored"))
            .clone()
    };

    let (renewal, activity) = by_subject("Acme renewal");
    assert_eq!(renewal.end, times.renewal + time::Duration::hours(1));
    assert!(!renewal.is_all_day && !renewal.is_cancelled);
    assert_eq!(renewal.organizer.as_ref().unwrap().address, ADELE);
    assert_eq!(renewal.attendees.len(), 1);
    assert_eq!(renewal.attendees[0].address, "sam@acme.com");
    assert_eq!(
        renewal.attendees[0].attendee_type.as_deref(),
        Some("required")
    );
    assert_eq!(renewal.attendees[0].response.as_deref(), Some("accepted"));
    assert_eq!(
        renewal.online_meeting_provider.as_deref(),
        Some("teamsForBusiness")
    );
    assert_eq!(
        renewal.join_url.as_deref(),
        Some("https://teams.microsoft.com/l/meetup-join/19%3ameeting_acme%40thread.v2/0")
    );
    assert_eq!(renewal.location.as_deref(), Some("Room 4"));
    assert_eq!(renewal.show_as.as_deref(), Some("busy"));
    assert!(
        renewal
            .web_link
            .as_deref()
            .unwrap()
            .starts_with("https://outlook")
    );
    assert!(renewal.ical_uid.is_some());
    assert!(
        renewal.immutable_id.starts_with("AAkALgAA"),
        "immutable ids were asked for: {}",
        renewal.immutable_id
    );
    assert_eq!(renewal.series_master_id, None);
    assert_eq!(activity.matches.len(), 1);
    assert_eq!(activity.matches[0].reason, MatchReason::AccountDomain);
    assert_eq!(activity.matches[0].matched_on, "acme.com");
    assert_eq!(activity.matches[0].record_id.as_deref(), Some("001A"));

    let (intro, activity) = by_subject("Globex intro");
    assert_eq!(intro.organizer.as_ref().unwrap().address, "jane@globex.com");
    let own = intro.attendees.iter().find(|a| a.address == ADELE).unwrap();
    assert_eq!(own.response, None, "never the user's own response");
    let pat = intro
        .attendees
        .iter()
        .find(|a| a.address == "pat@globex.com")
        .unwrap();
    assert_eq!(pat.response.as_deref(), Some("tentativelyAccepted"));
    assert_eq!(pat.attendee_type.as_deref(), Some("optional"));
    assert_eq!(activity.matches.len(), 1, "{:?}", activity.matches);
    assert_eq!(activity.matches[0].reason, MatchReason::Address);
    assert_eq!(
        activity.matches[0].record_kind,
        Some(CrmRecordKind::Contact)
    );
    assert_eq!(activity.matches[0].participant, "jane@globex.com");

    let (private, _) = by_subject(PRIVATE_SUBJECT);
    assert_eq!(private.start, times.private);
    let (onsite, _) = by_subject("Acme onsite");
    assert!(onsite.is_all_day);
    assert_eq!(onsite.end, times.all_day + time::Duration::days(1));
    assert_eq!(onsite.show_as.as_deref(), Some("oof"));
    let (qbr, _) = by_subject("Acme QBR");
    assert!(qbr.is_cancelled);

    let series: Vec<_> = meetings
        .values()
        .filter(|(m, _)| m.subject.starts_with("Lead check-in"))
        .collect();
    assert_eq!(series.len(), 5);
    let master = series[0].0.series_master_id.clone().expect("a series");
    let mut original_starts: Vec<OffsetDateTime> = series
        .iter()
        .map(|(m, a)| {
            assert_eq!(m.series_master_id.as_deref(), Some(master.as_str()));
            assert_eq!(a.matches[0].reason, MatchReason::Address);
            assert_eq!(a.matches[0].record_kind, Some(CrmRecordKind::Lead));
            m.occurrence_start.expect("occurrence start")
        })
        .collect();
    original_starts.sort();
    let week = time::Duration::weeks(1);
    let first = times.series[0];
    assert_eq!(
        original_starts,
        vec![
            first,
            first + week,
            first + week * 2,
            first + week * 4,
            first + week * 5
        ],
        "the exception replaces its occurrence; the cancelled one is absent"
    );
    let moved = series
        .iter()
        .find(|(m, _)| m.subject == "Lead check-in (moved)")
        .unwrap();
    assert_eq!(moved.0.start, times.moved);
    assert_eq!(moved.0.occurrence_start, Some(first + week));

    // Privacy: no body, no discarded meeting, no private subject anywhere.
    assert_no_marker(&harness, &[MARKERS, INTERNAL_MARKERS].concat()).await;

    // Internal meetings on: the rules changed, the window is read again; one more meeting.
    harness
        .set_switches(
            &key,
            UserSwitches {
                internal_meetings: true,
                ..UserSwitches::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(harness.run(&key).await, JobOutcome::Done);
    assert_eq!(
        harness.stored_set(&key).await.unwrap(),
        expected(&times, true)
    );
    // The round re-read 11 relevant meetings; 10 were stored unchanged: distinct new or
    // changed meetings are counted, not writes.
    let summary = harness.sink.last_run();
    assert_eq!((summary.matched, summary.stored), (11, 1));
    let meetings = harness.meetings(&key).await.unwrap();
    let (internal, activity) = meetings
        .values()
        .find(|(m, _)| m.start == times.internal)
        .expect("the internal meeting");
    assert_eq!(
        internal.organizer.as_ref().unwrap().address,
        "ben@contoso.com"
    );
    assert_eq!(activity.matches.len(), 1);
    assert_eq!(activity.matches[0].reason, MatchReason::InternalMeeting);
    assert_eq!(activity.matches[0].matched_on, DOMAIN);
    assert_no_marker(&harness, MARKERS).await;

    // Off again: the internal meeting goes (the reconciliation after the new full round).
    harness
        .set_switches(&key, UserSwitches::default())
        .await
        .unwrap();
    assert_eq!(harness.run(&key).await, JobOutcome::Done);
    assert_eq!(
        harness.stored_set(&key).await.unwrap(),
        expected(&times, false)
    );
    assert_eq!(harness.sink.last_run().removed, 1);

    // Calendar sync off: the fan-out skips the user.
    harness
        .set_switches(
            &key,
            UserSwitches {
                calendar_sync: false,
                ..UserSwitches::default()
            },
        )
        .await
        .unwrap();
    let report = harness.app.schedule().await.expect("fan-out");
    assert_eq!((report.scanned, report.enqueued, report.skipped), (1, 0, 1));
    harness
        .set_switches(&key, UserSwitches::default())
        .await
        .unwrap();
    let report = harness.app.schedule().await.expect("fan-out");
    assert_eq!((report.scanned, report.enqueued), (1, 1));
}
