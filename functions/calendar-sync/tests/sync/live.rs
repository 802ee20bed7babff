//! Changes between runs (new, rescheduled, cancelled, deleted, moved out of the window,
//! becoming relevant, ceasing to be), an unchanged calendar costing one request, a lost
//! delta token (410), and the window re-based after 40 days with history kept.

use connector_core::calendar::add_months;
use connector_core::domain::{SyncStage, UserKey};
use connector_core::sync::JobOutcome;
use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::support::*;

const ADELE: &str = "adele@contoso.com";

fn crm_meeting(subject: &str, start: OffsetDateTime) -> Value {
    meeting(
        subject,
        start,
        60,
        ADELE,
        vec![attendee("sam@acme.com", "required", "none")],
    )
}

/// The sim id of the stored meeting with `subject`.
async fn id_of(harness: &Harness, key: &UserKey, subject: &str) -> String {
    harness
        .meetings(key)
        .await
        .unwrap()
        .into_values()
        .find(|(m, _)| m.subject == subject)
        .unwrap_or_else(|| panic!("{subject} is stored"))
        .0
        .immutable_id
}

fn subjects(set: &[(String, OffsetDateTime)]) -> Vec<&str> {
    set.iter().map(|(s, _)| s.as_str()).collect()
}

/// Graph requests of the sim's log from `since` on, as `METHOD path?query`.
async fn graph_calls(harness: &Harness, since: u64) -> Vec<String> {
    harness
        .requests_since(since)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {}?{} -> {}",
                r["method"].as_str().unwrap_or_default(),
                r["path"].as_str().unwrap_or_default(),
                r["query"].as_str().unwrap_or_default(),
                r["status"]
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_between_runs_are_applied() {
    let tenant = new_tenant();
    let adele = new_user();
    let now = OffsetDateTime::now_utc();
    let at = |days| day(now, days, 10);
    let events = vec![
        crm_meeting("Acme sync", at(3)),
        crm_meeting("Acme review", at(4)),
        meeting(
            "Acme call",
            at(5),
            60,
            "sam@acme.com",
            vec![attendee(ADELE, "required", "accepted")],
        ),
        crm_meeting("Acme demo", at(6)),
        crm_meeting("Acme planning", at(7)),
        crm_meeting("Acme far", at(20)),
        {
            let mut vendor = meeting(
                "Vendor sync",
                at(8),
                60,
                ADELE,
                vec![attendee("x@vendor.io", "required", "none")],
            );
            vendor["id"] = json!("vendor-sync");
            vendor
        },
        crm_meeting("Acme scoping", at(9)),
    ];
    let harness = Harness::start(
        tenant.clone(),
        world(&tenant, vec![user(&adele, ADELE, events)]),
    )
    .await
    .expect("harness");
    let key = harness.connect(&adele, ADELE).await.expect("connected");
    assert_eq!(harness.run(&key).await, JobOutcome::Done);
    let first = harness.stored_set(&key).await.unwrap();
    assert_eq!(
        subjects(&first),
        [
            "Acme call",
            "Acme demo",
            "Acme far",
            "Acme planning",
            "Acme review",
            "Acme scoping",
            "Acme sync"
        ]
    );

    let user_path = format!("/_sim/users/{ADELE}/events");
    let review = id_of(&harness, &key, "Acme review").await;
    let call = id_of(&harness, &key, "Acme call").await;
    let demo = id_of(&harness, &key, "Acme demo").await;
    let planning = id_of(&harness, &key, "Acme planning").await;
    let far = id_of(&harness, &key, "Acme far").await;
    let scoping = id_of(&harness, &key, "Acme scoping").await;
    let kickoff = meeting(
        "Acme kickoff",
        at(10),
        30,
        ADELE,
        vec![attendee("kim@acme.com", "required", "none")],
    );
    harness
        .control(Method::POST, &user_path, Some(kickoff))
        .await
        .unwrap();
    let rescheduled = day(now, 4, 13);
    harness
        .control(
            Method::PATCH,
            &format!("{user_path}/{review}"),
            Some(json!({"start": utc(rescheduled), "end": utc(rescheduled + time::Duration::hours(1))})),
        )
        .await
        .unwrap();
    let cancelled = harness
        .control(Method::POST, &format!("{user_path}/{call}/cancel"), None)
        .await
        .unwrap();
    assert_eq!(
        cancelled["changeType"], "updated",
        "an attendee's copy stays"
    );
    harness
        .control(Method::DELETE, &format!("{user_path}/{demo}"), None)
        .await
        .unwrap();
    let cancelled = harness
        .control(
            Method::POST,
            &format!("{user_path}/{planning}/cancel"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        cancelled["changeType"], "deleted",
        "the organizer's copy goes"
    );
    let beyond = add_months(at(20), 13);
    harness
        .control(
            Method::PATCH,
            &format!("{user_path}/{far}"),
            Some(json!({"start": utc(beyond), "end": utc(beyond + time::Duration::hours(1))})),
        )
        .await
        .unwrap();
    harness
        .control(
            Method::PATCH,
            &format!("{user_path}/vendor-sync"),
            Some(
                json!({"attendees": [attendee("x@vendor.io", "required", "none"),
                                      attendee("sam@acme.com", "required", "none")]}),
            ),
        )
        .await
        .unwrap();
    harness
        .control(
            Method::PATCH,
            &format!("{user_path}/{scoping}"),
            Some(json!({"attendees": [attendee("ben@contoso.com", "required", "none")]})),
        )
        .await
        .unwrap();

    let since = harness.next_request_seq().await.unwrap();
    assert_eq!(harness.run(&key).await, JobOutcome::Done);
    let second = harness.stored_set(&key).await.unwrap();
    assert_eq!(
        second,
        vec![
            ("Acme call".to_owned(), at(5)),
            ("Acme far".to_owned(), beyond),
            ("Acme kickoff".to_owned(), at(10)),
            ("Acme review".to_owned(), rescheduled),
            ("Acme sync".to_owned(), at(3)),
            ("Vendor sync".to_owned(), at(8)),
        ]
    );
    let meetings = harness.meetings(&key).await.unwrap();
    assert!(meetings[&call].0.is_cancelled);
    assert!(!meetings[&review].0.is_cancelled);
    let summary = harness.sink.last_run();
    assert_eq!(
        summary.removed, 2,
        "the deleted and the organizer-cancelled one"
    );
    // The delta round, then the in-window removals (deleted, cancelled, moved out)
    // confirmed in one $batch of three GETs.
    let calls = graph_calls(&harness, since).await;
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("POST /v1.0/$batch"))
            .count(),
        1,
        "{calls:#?}"
    );
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("GET /v1.0/me/events/"))
            .count(),
        3,
        "{calls:#?}"
    );

    // Nothing changed: one request.
    let since = harness.next_request_seq().await.unwrap();
    assert_eq!(harness.run(&key).await, JobOutcome::Done);
    let calls = graph_calls(&harness, since).await;
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert!(calls[0].contains("$deltatoken="), "{calls:#?}");
    assert_eq!(harness.stored_set(&key).await.unwrap(), second);

    // The delta token is lost (evicted) while a meeting is deleted: 410, a new round, and
    // the reconciliation removes what the new round no longer delivers.
    let sync = id_of(&harness, &key, "Acme sync").await;
    harness
        .control(Method::DELETE, &format!("{user_path}/{sync}"), None)
        .await
        .unwrap();
    harness
        .control(
            Method::POST,
            &format!("/_sim/users/{ADELE}/calendar/delta/evict"),
            None,
        )
        .await
        .unwrap();
    let since = harness.next_request_seq().await.unwrap();
    assert_eq!(harness.run(&key).await, JobOutcome::Done);
    let calls = graph_calls(&harness, since).await;
    assert!(calls[0].ends_with("-> 410"), "{calls:#?}");
    assert!(calls[1].contains("startDateTime="), "{calls:#?}");
    assert_eq!(
        harness.stored_set(&key).await.unwrap(),
        second
            .iter()
            .filter(|(s, _)| s != "Acme sync")
            .cloned()
            .collect::<Vec<_>>(),
        "the far meeting is outside the new window and stays"
    );
    assert_eq!(harness.sink.last_run().removed, 1);
    let cursor = harness.cursor(&key).await.unwrap().expect("cursor");
    assert!(!cursor.initial_round && cursor.cursor.unwrap().contains("$deltatoken="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_is_re_based_after_forty_days_and_history_is_kept() {
    let tenant = new_tenant();
    let adele = new_user();
    let now = OffsetDateTime::now_utc();
    let soon = day(now, 5, 10);
    let later = day(now, 20, 10);
    let beyond = add_months(day(now, 20, 10), 12);
    let eleven = add_months(day(now, 0, 10), 11);
    let mut weekly = crm_meeting("Acme weekly", day(now, 1, 8));
    weekly["recurrence"] = json!({
        "pattern": {"type": "weekly", "interval": 1,
                    "daysOfWeek": [day(now, 1, 8).weekday().to_string().to_lowercase()],
                    "firstDayOfWeek": "sunday"},
        "range": {"type": "numbered", "startDate": day(now, 1, 8).date().to_string(), "numberOfOccurrences": 10}
    });
    let events = vec![
        crm_meeting("Acme soon", soon),
        crm_meeting("Acme later", later),
        crm_meeting("Acme beyond", beyond),
        crm_meeting("Acme eleven", eleven),
        weekly,
    ];
    let harness = Harness::start(
        tenant.clone(),
        world(&tenant, vec![user(&adele, ADELE, events)]),
    )
    .await
    .expect("harness");
    let key = harness.connect(&adele, ADELE).await.expect("connected");
    assert_eq!(harness.run(&key).await, JobOutcome::Done);
    let first = harness.stored_set(&key).await.unwrap();
    assert_eq!(first.len(), 13, "{first:#?}");
    assert!(!first.iter().any(|(s, _)| s == "Acme beyond"));
    let first_window = harness
        .cursor(&key)
        .await
        .unwrap()
        .and_then(|c| c.window)
        .expect("window");

    harness.advance(time::Duration::days(40)).await.unwrap();
    let since = harness.next_request_seq().await.unwrap();
    assert_eq!(harness.run(&key).await, JobOutcome::Done);
    let calls = graph_calls(&harness, since).await;
    assert!(
        calls[0].contains("/calendarView/delta?startDateTime="),
        "a new round over a new window: {calls:#?}"
    );
    let second = harness.stored_set(&key).await.unwrap();
    let mut expected = first.clone();
    expected.push(("Acme beyond".to_owned(), beyond));
    expected.sort();
    assert_eq!(
        second, expected,
        "the meeting now in the window is imported; the past ones stay as history; no duplicate"
    );
    let ids: std::collections::BTreeSet<String> =
        harness.meetings(&key).await.unwrap().into_keys().collect();
    assert_eq!(ids.len(), 14);
    let cursor = harness.cursor(&key).await.unwrap().expect("cursor");
    let window = cursor.window.expect("window");
    assert!(window.start >= first_window.start + time::Duration::days(40));
    assert_eq!(
        harness.meta(&key).await.unwrap().unwrap().window,
        Some(window)
    );
    assert_eq!(harness.sink.last_run().removed, 0);

    // No second re-base right after; a change behind the window is not a deletion.
    let soon_id = id_of(&harness, &key, "Acme soon").await;
    harness
        .control(
            Method::DELETE,
            &format!("/_sim/users/{ADELE}/events/{soon_id}"),
            None,
        )
        .await
        .unwrap();
    let since = harness.next_request_seq().await.unwrap();
    assert_eq!(harness.run(&key).await, JobOutcome::Done);
    let calls = graph_calls(&harness, since).await;
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert!(calls[0].contains("$deltatoken="));
    assert_eq!(
        harness.sink.last_run().scanned,
        1,
        "Graph reported the deletion behind the window"
    );
    assert_eq!(harness.stored_set(&key).await.unwrap(), expected);
    let meta = harness.meta(&key).await.unwrap().unwrap();
    assert_eq!(meta.stage, SyncStage::Idle);
}
