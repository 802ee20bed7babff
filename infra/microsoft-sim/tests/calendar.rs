//! calendarView delta, calendarView and events against an in-process sim: series expansion, paging, change
//! rounds, window exits, preferences, query-option errors, eviction, scopes and mailbox kinds.

mod calendar_support;

use calendar_support::*;
use reqwest::Method;
use serde_json::{Value, json};

const WINDOW: &str = "startDateTime=2026-12-01T00:00:00Z&endDateTime=2027-01-01T00:00:00Z";

fn delta_url(sim: &TestSim) -> String {
    format!("{}/v1.0/me/calendarView/delta?{WINDOW}", sim.base)
}

fn pst(date_time: &str) -> Value {
    json!({"dateTime": date_time, "timeZone": "Pacific Standard Time"})
}

fn utc(date_time: &str) -> Value {
    json!({"dateTime": date_time, "timeZone": "UTC"})
}

/// Adele's calendar: a weekly series (Wednesdays 09:00 Pacific, five occurrences from 2 December 2026) whose
/// 9 December occurrence moved to Thursday 10 December 10:00 and whose 16 December occurrence was cancelled;
/// a customer call and a board meeting she attends; a spring planning meeting outside December.
fn events() -> Value {
    json!([
        {
            "subject": "Weekly CRM sync",
            "body": {"contentType": "html", "content": "<p>Pipeline review</p>"},
            "start": pst("2026-12-02T09:00:00"),
            "end": pst("2026-12-02T09:30:00"),
            "organizer": {"emailAddress": {"name": "Adele Vance", "address": ADELE_UPN}},
            "attendees": [{"type": "required", "status": {"response": "accepted", "time": "2026-11-20T10:00:00Z"},
                           "emailAddress": {"name": "Dana Swope", "address": "dana@fabrikam.com"}}],
            "recurrence": {
                "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["wednesday"], "firstDayOfWeek": "sunday"},
                "range": {"type": "numbered", "startDate": "2026-12-02", "numberOfOccurrences": 5}
            },
            "exceptionOccurrences": [{"originalStartDate": "2026-12-09", "subject": "Moved sync",
                                      "start": pst("2026-12-10T10:00:00"), "end": pst("2026-12-10T11:00:00")}],
            "cancelledOccurrences": ["2026-12-16"]
        },
        {
            "id": "customer-call",
            "subject": "Customer call",
            "start": utc("2026-12-07T15:00:00"),
            "end": utc("2026-12-07T16:00:00"),
            "organizer": {"emailAddress": {"name": "Dana Swope", "address": "dana@fabrikam.com"}},
            "isOnlineMeeting": true,
            "onlineMeetingProvider": "teamsForBusiness",
            "onlineMeeting": {"joinUrl": "https://teams.microsoft.com/l/meetup-join/19%3ameeting_abc%40thread.v2/0"}
        },
        {
            "subject": "Board meeting",
            "start": utc("2026-12-15T10:00:00"),
            "end": utc("2026-12-15T12:00:00"),
            "organizer": {"emailAddress": {"name": "Ben Walters", "address": BEN_UPN}}
        },
        {
            "subject": "Spring planning",
            "start": utc("2027-03-01T09:00:00"),
            "end": utc("2027-03-01T10:00:00")
        }
    ])
}

fn empty_teams() -> [Value; 3] {
    [json!([]), json!([]), json!([])]
}

async fn adele() -> (TestSim, String) {
    let sim = start(world(events(), empty_teams())).await;
    let token = sim.token(ADELE_UPN, "Calendars.ReadWrite").await;
    (sim, token)
}

fn by_subject<'a>(items: &'a [Value], subject: &str) -> Vec<&'a Value> {
    items.iter().filter(|e| e["subject"] == subject).collect()
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn weekly_series_expands_into_occurrences_with_exception_and_cancellation() {
    let (sim, token) = adele().await;
    let (items, _delta, pages) = sim
        .delta_round(
            &token,
            &delta_url(&sim),
            &[("Prefer", "odata.maxpagesize=2")],
        )
        .await;
    assert_eq!(pages, 3, "six instances, two per page");
    assert_eq!(items.len(), 6, "{items:#?}");
    let starts: Vec<&str> = items
        .iter()
        .map(|e| e["start"]["dateTime"].as_str().unwrap())
        .collect();
    assert_eq!(
        starts,
        [
            "2026-12-02T17:00:00.0000000",
            "2026-12-07T15:00:00.0000000",
            "2026-12-10T18:00:00.0000000",
            "2026-12-15T10:00:00.0000000",
            "2026-12-23T17:00:00.0000000",
            "2026-12-30T17:00:00.0000000",
        ]
    );
    for item in &items {
        assert_eq!(item["@odata.type"], "#microsoft.graph.event");
        assert!(item["@odata.etag"].as_str().unwrap().starts_with("W/\""));
        assert_eq!(item["start"]["timeZone"], "UTC");
        let id = item["id"].as_str().unwrap();
        assert!(id.starts_with("AAMk") || id == "customer-call", "{id}");
    }
    let mut unique = ids(&items);
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6);

    let series: Vec<&Value> = items
        .iter()
        .filter(|e| e["seriesMasterId"].is_string())
        .collect();
    assert_eq!(series.len(), 4);
    let master_id = series[0]["seriesMasterId"].as_str().unwrap();
    assert!(
        series
            .iter()
            .all(|e| e["seriesMasterId"] == master_id && e["id"] != master_id)
    );
    assert_eq!(
        series
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["occurrence", "exception", "occurrence", "occurrence"]
    );
    assert_eq!(
        series
            .iter()
            .map(|e| e["originalStart"].as_str().unwrap())
            .collect::<Vec<_>>(),
        [
            "2026-12-02T17:00:00Z",
            "2026-12-09T17:00:00Z",
            "2026-12-23T17:00:00Z",
            "2026-12-30T17:00:00Z"
        ]
    );
    let mut uids: Vec<&str> = series
        .iter()
        .map(|e| e["iCalUId"].as_str().unwrap())
        .collect();
    uids.dedup();
    assert_eq!(uids.len(), 4, "iCalUId differs per occurrence");
    let moved = series[1];
    assert_eq!(moved["subject"], "Moved sync");
    assert_eq!(
        moved["end"],
        json!({"dateTime": "2026-12-10T19:00:00.0000000", "timeZone": "UTC"})
    );
    assert_eq!(series[0]["subject"], "Weekly CRM sync");
    assert_eq!(series[0]["bodyPreview"], "Pipeline review");
    assert_eq!(series[0]["recurrence"], Value::Null);
    assert_eq!(series[0]["isOrganizer"], true);
    assert_eq!(series[0]["originalStartTimeZone"], "Pacific Standard Time");

    let call = by_subject(&items, "Customer call")[0];
    assert_eq!(call["id"], "customer-call");
    assert_eq!(call["type"], "singleInstance");
    assert_eq!(call["isOrganizer"], false);
    assert_eq!(call["responseStatus"]["response"], "none");
    assert_eq!(
        call["onlineMeeting"]["joinUrl"],
        "https://teams.microsoft.com/l/meetup-join/19%3ameeting_abc%40thread.v2/0"
    );

    let master = sim
        .get(&token, &format!("/v1.0/me/events/{master_id}"), &[])
        .await;
    assert_eq!(master.status, 200, "{:#}", master.body);
    assert_eq!(master.body["type"], "seriesMaster");
    assert_eq!(master.body["id"], master_id);
    assert_eq!(
        master.body["start"],
        json!({"dateTime": "2026-12-02T17:00:00.0000000", "timeZone": "UTC"})
    );
    assert_eq!(
        master.body["recurrence"],
        json!({
            "pattern": {"type": "weekly", "interval": 1, "month": 0, "dayOfMonth": 0, "daysOfWeek": ["wednesday"],
                        "firstDayOfWeek": "sunday", "index": "first"},
            "range": {"type": "numbered", "startDate": "2026-12-02", "endDate": "0001-01-01",
                      "recurrenceTimeZone": "Pacific Standard Time", "numberOfOccurrences": 5}
        })
    );
    assert!(
        master.body.get("exceptionOccurrences").is_none()
            && master.body.get("cancelledOccurrences").is_none()
    );

    let one = sim
        .get(
            &token,
            &format!("/v1.0/me/events/{}", moved["id"].as_str().unwrap()),
            &[],
        )
        .await;
    assert_eq!(one.status, 200);
    let mut expected = moved.clone();
    expected.as_object_mut().unwrap().remove("@odata.type");
    let mut got = one.body.clone();
    assert!(
        got.as_object_mut()
            .unwrap()
            .remove("@odata.context")
            .unwrap()
            .as_str()
            .unwrap()
            .ends_with("/events/$entity")
    );
    assert_eq!(got, expected);
}

#[tokio::test]
async fn change_rounds_report_created_updated_cancelled_and_deleted() {
    let (sim, token) = adele().await;
    let (first, delta, _) = sim.delta_round(&token, &delta_url(&sim), &[]).await;
    let occurrence_23 = first
        .iter()
        .find(|e| e["originalStart"] == "2026-12-23T17:00:00Z")
        .unwrap()
        .clone();
    let occurrence_30 = first
        .iter()
        .find(|e| e["originalStart"] == "2026-12-30T17:00:00Z")
        .unwrap()
        .clone();
    let board = by_subject(&first, "Board meeting")[0].clone();

    // Nothing changed: one request, empty page, a new deltaLink.
    let quiet = sim.get(&token, &delta, &[]).await;
    assert_eq!(quiet.status, 200);
    assert_eq!(quiet.body["value"], json!([]));
    let delta = quiet.body["@odata.deltaLink"]
        .as_str()
        .expect("deltaLink in one request")
        .to_owned();
    assert!(delta.starts_with(&format!(
        "{}/v1.0/me/calendarView/delta?$deltatoken=",
        sim.base
    )));

    let added = sim
        .control(Method::POST, &format!("/_sim/users/{ADELE_UPN}/events"), Some(json!({
            "subject": "New demo", "start": utc("2026-12-18T14:00:00"), "end": utc("2026-12-18T15:00:00")
        })))
        .await;
    assert_eq!(added.status, 201, "{:#}", added.body);
    let added_id = added.body["id"].as_str().unwrap().to_owned();
    let moved = sim
        .control(
            Method::PATCH,
            &format!(
                "/_sim/users/{ADELE}/events/{}",
                occurrence_23["id"].as_str().unwrap()
            ),
            Some(json!({
                "start": utc("2026-12-24T17:00:00"), "end": utc("2026-12-24T17:30:00")
            })),
        )
        .await;
    assert_eq!(moved.status, 200, "{:#}", moved.body);
    let cancelled = sim
        .control(
            Method::POST,
            &format!(
                "/_sim/users/{ADELE}/events/{}/cancel",
                board["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(
        cancelled.body,
        json!({"changeType": "updated", "id": board["id"]}),
        "an attendee's copy stays, cancelled"
    );
    let deleted = sim
        .control(
            Method::DELETE,
            &format!("/_sim/users/{ADELE}/events/customer-call"),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204);

    let (changes, delta, _) = sim.delta_round(&token, &delta, &[]).await;
    assert_eq!(changes.len(), 4, "{changes:#?}");
    let new = changes
        .iter()
        .find(|e| e["id"] == added_id.as_str())
        .expect("created event");
    assert_eq!(new["type"], "singleInstance");
    assert_eq!(new["subject"], "New demo");
    let rescheduled = changes
        .iter()
        .find(|e| e["id"] == occurrence_23["id"])
        .expect("rescheduled occurrence keeps its id");
    assert_eq!(rescheduled["type"], "exception");
    assert_eq!(
        rescheduled["start"],
        json!({"dateTime": "2026-12-24T17:00:00.0000000", "timeZone": "UTC"})
    );
    assert_eq!(rescheduled["originalStart"], "2026-12-23T17:00:00Z");
    assert_ne!(rescheduled["changeKey"], occurrence_23["changeKey"]);
    let board_now = changes
        .iter()
        .find(|e| e["id"] == board["id"])
        .expect("cancelled meeting is an update");
    assert_eq!(board_now["isCancelled"], true);
    let removed = changes
        .iter()
        .find(|e| e["id"] == "customer-call")
        .expect("deleted event");
    assert_eq!(
        removed,
        &json!({"@odata.type": "#microsoft.graph.event", "id": "customer-call", "@removed": {"reason": "deleted"}})
    );

    // The attendee removes the cancelled meeting; the organizer cancels one occurrence of her own series.
    assert_eq!(
        sim.control(
            Method::DELETE,
            &format!(
                "/_sim/users/{ADELE}/events/{}",
                board["id"].as_str().unwrap()
            ),
            None
        )
        .await
        .status,
        204
    );
    let organizer_cancel = sim
        .control(
            Method::POST,
            &format!(
                "/_sim/users/{ADELE}/events/{}/cancel",
                occurrence_30["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(organizer_cancel.body["changeType"], "deleted");
    let (changes, _, _) = sim.delta_round(&token, &delta, &[]).await;
    let mut removed: Vec<&str> = changes
        .iter()
        .map(|e| {
            assert_eq!(e["@removed"], json!({"reason": "deleted"}), "{e:#}");
            e["id"].as_str().unwrap()
        })
        .collect();
    removed.sort_unstable();
    let mut expected = vec![
        board["id"].as_str().unwrap(),
        occurrence_30["id"].as_str().unwrap(),
    ];
    expected.sort_unstable();
    assert_eq!(removed, expected);
    let gone = sim
        .get(
            &token,
            &format!("/v1.0/me/events/{}", occurrence_30["id"].as_str().unwrap()),
            &[],
        )
        .await;
    gone.assert_graph_error(
        404,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    );
}

#[tokio::test]
async fn events_leaving_the_window_and_changes_outside_it_are_reported_removed() {
    let (sim, token) = adele().await;
    let (_, delta, _) = sim.delta_round(&token, &delta_url(&sim), &[]).await;

    let moved = sim
        .control(
            Method::PATCH,
            &format!("/_sim/users/{ADELE}/events/customer-call"),
            Some(json!({
                "start": utc("2027-02-01T15:00:00"), "end": utc("2027-02-01T16:00:00")
            })),
        )
        .await;
    assert_eq!(moved.status, 200);
    let (changes, delta, _) = sim.delta_round(&token, &delta, &[]).await;
    assert_eq!(
        changes,
        vec![
            json!({"@odata.type": "#microsoft.graph.event", "id": "customer-call", "@removed": {"reason": "deleted"}})
        ]
    );

    // An event added outside the window is reported as removed, as the event-delta page warns.
    let outside = sim
        .control(Method::POST, &format!("/_sim/users/{ADELE}/events"), Some(json!({
            "subject": "Offsite", "start": utc("2027-04-01T09:00:00"), "end": utc("2027-04-01T17:00:00")
        })))
        .await;
    let outside_id = outside.body["id"].as_str().unwrap();
    let (changes, delta, _) = sim.delta_round(&token, &delta, &[]).await;
    assert_eq!(
        changes,
        vec![
            json!({"@odata.type": "#microsoft.graph.event", "id": outside_id, "@removed": {"reason": "deleted"}})
        ]
    );

    // The window is fixed in the token: time passing alone removes nothing.
    let advanced = sim
        .control(
            Method::POST,
            "/_sim/clock/advance",
            Some(json!({"seconds": 40 * 86_400})),
        )
        .await;
    assert!(advanced.status.is_success(), "{:#}", advanced.body);
    let token = sim.token(ADELE_UPN, "Calendars.Read").await;
    let (changes, _, _) = sim.delta_round(&token, &delta, &[]).await;
    assert_eq!(changes, Vec::<Value>::new());
}

#[tokio::test]
async fn unsupported_query_options_and_a_missing_window_are_graphs_400s() {
    let (sim, token) = adele().await;
    let tracking = "The following parameters are not supported with change tracking over the 'CalendarView' resource: \
                    '$orderby, $filter, $select, $expand, $search'.";
    for option in [
        "$select=subject",
        "$filter=isCancelled%20eq%20false",
        "$orderby=start/dateTime",
        "$expand=attachments",
        "$search=%22x%22",
    ] {
        let reply = sim
            .get(&token, &format!("{}&{option}", delta_url(&sim)), &[])
            .await;
        reply.assert_graph_error(400, "ErrorInvalidUrlQuery", tracking);
    }
    let reply = sim
        .get(&token, &format!("{}&$top=5", delta_url(&sim)), &[])
        .await;
    reply.assert_graph_error(
        400,
        "ErrorInvalidUrlQuery",
        "The '$top' parameter is not supported with change tracking over the 'CalendarView' resource as page size \
         cannot be guaranteed. Express page size preferences using the Prefer: odata.maxpagesize= header instead.",
    );
    let reply = sim
        .get(
            &token,
            "/v1.0/me/calendarView/delta?startDateTime=2026-12-01T00:00:00Z",
            &[],
        )
        .await;
    reply.assert_graph_error(
        400,
        "ErrorInvalidParameter",
        "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.",
    );
    // Parameter names are case-insensitive, as in the doc's own example.
    let lower = sim.get(&token, "/v1.0/me/calendarView/delta?startdatetime=2026-12-01T00:00:00Z&enddatetime=2027-01-01T00:00:00Z", &[]).await;
    assert_eq!(lower.status, 200);
}

#[tokio::test]
async fn evicted_and_corrupt_tokens_fail_like_outlook() {
    let (sim, token) = adele().await;
    let first = sim
        .get(
            &token,
            &delta_url(&sim),
            &[("Prefer", "odata.maxpagesize=2")],
        )
        .await;
    let next = first.body["@odata.nextLink"].as_str().unwrap().to_owned();
    let (_, delta, _) = sim
        .delta_round(&token, &next, &[("Prefer", "odata.maxpagesize=2")])
        .await;
    // A nextLink replays harmlessly.
    let replay = sim
        .get(&token, &next, &[("Prefer", "odata.maxpagesize=2")])
        .await;
    assert_eq!(replay.status, 200);

    let evict = sim
        .control(
            Method::POST,
            &format!("/_sim/users/{ADELE_UPN}/calendar/delta/evict"),
            None,
        )
        .await;
    assert_eq!(evict.status, 204);
    for link in [&next, &delta] {
        let reply = sim.get(&token, link, &[]).await;
        assert_eq!(reply.status, 410, "{:#}", reply.body);
        assert_eq!(reply.body["error"]["code"], "SyncStateNotFound");
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("The sync state generation is not found; generation=")
        );
    }
    let corrupt = sim
        .get(
            &token,
            "/v1.0/me/calendarView/delta?$deltatoken=bm90LWEtdG9rZW4",
            &[],
        )
        .await;
    corrupt.assert_graph_error(
        400,
        "ErrorInvalidSyncStateData",
        "The sync state data is corrupt or otherwise invalid.",
    );

    // Another user's token cannot use Adele's links.
    let ben = sim.token(BEN_UPN, "Calendars.Read").await;
    let (_, adele_delta, _) = sim.delta_round(&token, &delta_url(&sim), &[]).await;
    let foreign = sim.get(&ben, &adele_delta, &[]).await;
    assert_eq!(foreign.status, 400);
}

#[tokio::test]
async fn time_zone_and_immutable_id_preferences_apply_per_request() {
    let (sim, token) = adele().await;
    let prefer = [
        ("Prefer", "outlook.timezone=\"Pacific Standard Time\""),
        ("Prefer", "IdType=\"ImmutableId\", odata.maxpagesize=3"),
    ];
    let first = sim.get(&token, &delta_url(&sim), &prefer).await;
    assert_eq!(first.status, 200);
    let applied = first.header("preference-applied").unwrap();
    assert!(
        applied.contains("outlook.timezone=\"Pacific Standard Time\"")
            && applied.contains("odata.maxpagesize=3"),
        "{applied}"
    );
    let items = first.body["value"].as_array().unwrap();
    assert_eq!(
        items[0]["start"],
        json!({"dateTime": "2026-12-02T09:00:00.0000000", "timeZone": "Pacific Standard Time"})
    );
    assert_eq!(items[0]["originalStart"], "2026-12-02T17:00:00Z");
    assert!(
        items
            .iter()
            .all(|e| e["id"].as_str().unwrap().starts_with("AAkALgAA")),
        "{items:#?}"
    );
    assert!(
        items[0]["seriesMasterId"]
            .as_str()
            .unwrap()
            .starts_with("AAkALgAA")
    );
    let immutable_id = items[0]["id"].as_str().unwrap().to_owned();

    // The nextLink works without the preferences; ids and times go back to REST and UTC for that request.
    let rest = sim
        .get(&token, first.body["@odata.nextLink"].as_str().unwrap(), &[])
        .await;
    assert_eq!(rest.status, 200);
    assert!(rest.body["value"].as_array().unwrap().iter().all(|e| {
        let id = e["id"].as_str().unwrap();
        id.starts_with("AAMk") || id == "customer-call"
    }));
    let by_immutable = sim
        .get(&token, &format!("/v1.0/me/events/{immutable_id}"), &[])
        .await;
    assert_eq!(by_immutable.status, 200);
    assert!(
        by_immutable.body["id"]
            .as_str()
            .unwrap()
            .starts_with("AAMk")
    );
    assert_eq!(by_immutable.body["originalStart"], "2026-12-02T17:00:00Z");

    let berlin = sim
        .get(
            &token,
            &delta_url(&sim),
            &[("Prefer", "outlook.timezone=\"W. Europe Standard Time\"")],
        )
        .await;
    assert_eq!(
        berlin.body["value"][0]["start"],
        json!({"dateTime": "2026-12-02T18:00:00.0000000", "timeZone": "W. Europe Standard Time"})
    );
}

#[tokio::test]
async fn calendar_view_pages_with_select_and_events_are_fetched_by_id() {
    let (sim, token) = adele().await;
    let first = sim
        .get(
            &token,
            &format!("/v1.0/me/calendarView?{WINDOW}&$select=subject,start&$top=4"),
            &[],
        )
        .await;
    assert_eq!(first.status, 200, "{:#}", first.body);
    let items = first.body["value"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    for item in items {
        let mut keys: Vec<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["@odata.etag", "id", "start", "subject"]);
    }
    assert!(
        first.body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with(&format!(
                "$metadata#users('{ADELE}')/calendarView(subject,start)"
            ))
    );
    let next = first.body["@odata.nextLink"].as_str().unwrap();
    assert!(
        next.contains("%24skip=4") || next.contains("$skip=4"),
        "{next}"
    );
    let second = sim.get(&token, next, &[]).await;
    assert_eq!(second.body["value"].as_array().unwrap().len(), 2);
    assert!(second.body.get("@odata.nextLink").is_none());

    let bad = sim
        .get(
            &token,
            &format!("/v1.0/me/calendarView?{WINDOW}&$select=subject,colour"),
            &[],
        )
        .await;
    bad.assert_graph_error(
        400,
        "RequestBroker--ParseUri",
        "Could not find a property named 'colour' on type 'microsoft.graph.event'.",
    );

    let selected = sim
        .get(
            &token,
            "/v1.0/me/events/customer-call?$select=subject,isOnlineMeeting",
            &[],
        )
        .await;
    assert_eq!(selected.body["subject"], "Customer call");
    assert_eq!(selected.body["isOnlineMeeting"], true);
    assert!(selected.body.get("start").is_none());
    let missing = sim
        .get(&token, "/v1.0/me/events/AAMkAGI2TG93AAA=", &[])
        .await;
    missing.assert_graph_error(
        404,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    );
}

#[tokio::test]
async fn scopes_mailbox_kinds_and_user_paths() {
    let (sim, token) = adele().await;
    let mail_only = sim.token(ADELE_UPN, "Mail.Read").await;
    sim.get(&mail_only, &delta_url(&sim), &[])
        .await
        .assert_graph_error(
            403,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        );

    let olaf = sim.token(ONPREM_UPN, "Calendars.Read").await;
    sim.get(&olaf, &delta_url(&sim), &[])
        .await
        .assert_graph_error(
            404,
            "MailboxNotEnabledForRESTAPI",
            "REST API is not yet supported for this mailbox.",
        );

    let by_upn = sim
        .get(
            &token,
            &format!("/v1.0/users/{ADELE_UPN}/calendarView/delta()?{WINDOW}"),
            &[],
        )
        .await;
    assert_eq!(by_upn.status, 200, "{:#}", by_upn.body);
    assert_eq!(by_upn.body["value"].as_array().unwrap().len(), 6);
    assert!(
        by_upn.body["@odata.deltaLink"]
            .as_str()
            .unwrap()
            .contains(&format!(
                "/v1.0/users/{ADELE_UPN}/calendarView/delta?$deltatoken="
            ))
    );
    let other = sim
        .get(
            &token,
            &format!("/v1.0/users/{BEN}/calendarView/delta?{WINDOW}"),
            &[],
        )
        .await;
    other.assert_graph_error(
        403,
        "ErrorAccessDenied",
        "Access is denied. Check credentials and try again.",
    );
    let nobody = sim
        .get(
            &token,
            &format!("/v1.0/users/nobody@contoso.com/calendarView/delta?{WINDOW}"),
            &[],
        )
        .await;
    nobody.assert_graph_error(
        404,
        "ErrorInvalidUser",
        "The requested user 'nobody@contoso.com' is invalid.",
    );
    let anonymous = sim.send(Method::GET, None, &delta_url(&sim), None).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.body["error"]["code"],
        "InvalidAuthenticationToken"
    );
}
