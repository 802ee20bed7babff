//! `PATCH /me/events/{id}` against an in-process sim: only the sent properties change (the body stored byte for
//! byte), changeKey/etag/lastModifiedDateTime move, the next delta round reports the event, `If-Match`
//! mismatches are 412, scopes, unknown ids, an attendee's copy, `location` → `locations`, and an event turned
//! into a Teams meeting.

mod calendar_support;

use calendar_support::*;
use reqwest::Method;
use serde_json::{Map, Value, json};

const WINDOW: &str = "startDateTime=2026-12-01T00:00:00Z&endDateTime=2027-01-01T00:00:00Z";

/// HTML with what re-formatting would lose: CRLFs, a tab, entities, non-ASCII, trailing spaces, attribute
/// quoting and an HTML comment.
const TRICKY_HTML: &str = "<html>\r\n<head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\"></head>\r\n<body>\r\n<p class='x'>Agenda:&nbsp;renewal &amp; pricing — Zoë   </p>\t<!-- keep -->\r\n<div>Second&#160;line</div>\r\n</body>\r\n</html>\r\n";

fn events() -> Value {
    json!([
        {
            "id": "renewal",
            "subject": "Renewal review",
            "body": {"contentType": "html", "content": TRICKY_HTML},
            "start": {"dateTime": "2026-12-10T15:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2026-12-10T16:00:00", "timeZone": "UTC"},
            "location": {"displayName": "Room 1"},
            "categories": ["CRM"],
            "organizer": {"emailAddress": {"name": "Adele Vance", "address": ADELE_UPN}},
            "attendees": [{"type": "required", "status": {"response": "accepted", "time": "2026-11-20T10:00:00Z"},
                           "emailAddress": {"name": "Dana Swope", "address": "dana@fabrikam.com"}}]
        },
        {
            "id": "their-call",
            "subject": "Their call",
            "start": {"dateTime": "2026-12-11T15:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2026-12-11T16:00:00", "timeZone": "UTC"},
            "organizer": {"emailAddress": {"name": "Dana Swope", "address": "dana@fabrikam.com"}}
        }
    ])
}

async fn adele() -> (TestSim, String) {
    let sim = start(world(events(), [json!([]), json!([]), json!([])])).await;
    let token = sim.token(ADELE_UPN, "Calendars.ReadWrite").await;
    (sim, token)
}

async fn stored(sim: &TestSim, id: &str) -> Map<String, Value> {
    let reply = sim
        .control(
            Method::GET,
            &format!("/_sim/users/{ADELE_UPN}/events/{id}"),
            None,
        )
        .await;
    assert_eq!(reply.status.as_u16(), 200, "{:#}", reply.body);
    reply.body.as_object().expect("an event").clone()
}

async fn patch(sim: &TestSim, token: &str, id: &str, body: Value, if_match: Option<&str>) -> Reply {
    let mut request = sim
        .http
        .patch(sim.url(&format!("/v1.0/me/events/{id}")))
        .bearer_auth(token)
        .json(&body);
    if let Some(tag) = if_match {
        request = request.header("If-Match", tag);
    }
    let response = request.send().await.expect("PATCH");
    let status = response.status();
    let headers = response.headers().clone();
    let body: Value = response.json().await.expect("json");
    Reply {
        status,
        headers,
        body,
    }
}

/// The keys whose values differ between two stored events.
fn changed(before: &Map<String, Value>, after: &Map<String, Value>) -> Vec<String> {
    let mut keys: Vec<String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[tokio::test]
async fn patch_changes_only_the_sent_properties() {
    let (sim, token) = adele().await;
    let before = stored(&sim, "renewal").await;
    assert_eq!(before["body"]["content"], TRICKY_HTML);
    sim.control(
        Method::POST,
        "/_sim/clock/advance",
        Some(json!({"seconds": 60})),
    )
    .await;
    let reply = patch(
        &sim,
        &token,
        "renewal",
        json!({"subject": "Renewal review (moved)",
               "start": {"dateTime": "2026-12-10T17:00:00", "timeZone": "UTC"},
               "end": {"dateTime": "2026-12-10T18:00:00", "timeZone": "UTC"}}),
        None,
    )
    .await;
    assert_eq!(reply.status.as_u16(), 200, "{:#}", reply.body);
    assert_eq!(reply.body["subject"], "Renewal review (moved)");
    assert_eq!(
        reply.body["start"],
        json!({"dateTime": "2026-12-10T17:00:00.0000000", "timeZone": "UTC"})
    );
    assert!(
        reply.body["@odata.context"]
            .as_str()
            .is_some_and(|c| c.ends_with("/events/$entity"))
    );
    let after = stored(&sim, "renewal").await;
    assert_eq!(
        changed(&before, &after),
        [
            "@odata.etag",
            "changeKey",
            "end",
            "lastModifiedDateTime",
            "start",
            "subject"
        ]
    );
    assert_eq!(after["body"]["content"], TRICKY_HTML);
    assert_ne!(after["changeKey"], before["changeKey"]);
    assert!(
        after["lastModifiedDateTime"].as_str() > before["lastModifiedDateTime"].as_str(),
        "{} vs {}",
        after["lastModifiedDateTime"],
        before["lastModifiedDateTime"]
    );
    // The PATCH response is the stored event.
    let mut answered = reply.body.as_object().expect("event").clone();
    answered.remove("@odata.context");
    assert_eq!(answered, after);
}

#[tokio::test]
async fn a_new_body_is_stored_byte_for_byte_and_served_by_get_and_delta() {
    let (sim, token) = adele().await;
    let (_, delta_link, _) = sim
        .delta_round(
            &token,
            &format!("/v1.0/me/calendarView/delta?{WINDOW}"),
            &[],
        )
        .await;
    let before = stored(&sim, "renewal").await;
    let new_html = format!(
        "{TRICKY_HTML}<p>Join: <a href=\"https://example.test/j?a=1&amp;b=2\">link</a></p>\n"
    );
    let reply = patch(
        &sim,
        &token,
        "renewal",
        json!({"body": {"contentType": "html", "content": new_html}}),
        None,
    )
    .await;
    assert_eq!(reply.status.as_u16(), 200, "{:#}", reply.body);
    assert_eq!(reply.body["body"]["content"], new_html.as_str());
    let after = stored(&sim, "renewal").await;
    assert_eq!(
        changed(&before, &after),
        [
            "@odata.etag",
            "body",
            "bodyPreview",
            "changeKey",
            "lastModifiedDateTime"
        ]
    );
    assert_eq!(
        after["body"],
        json!({"contentType": "html", "content": new_html})
    );
    let got = sim.get(&token, "/v1.0/me/events/renewal", &[]).await;
    assert_eq!(got.body["body"]["content"], new_html.as_str());

    // The next delta round reports the event, changed, with the new body.
    let (items, _, _) = sim.delta_round(&token, &delta_link, &[]).await;
    assert_eq!(items.len(), 1, "{items:#?}");
    assert_eq!(items[0]["id"], "renewal");
    assert_eq!(items[0]["body"]["content"], new_html.as_str());
    assert_eq!(items[0]["changeKey"], after["changeKey"]);
    assert!(items[0].get("@removed").is_none());
}

#[tokio::test]
async fn if_match_other_than_the_current_etag_is_412_and_changes_nothing() {
    let (sim, token) = adele().await;
    let before = stored(&sim, "renewal").await;
    let etag = before["@odata.etag"].as_str().expect("etag").to_owned();
    let stale = patch(
        &sim,
        &token,
        "renewal",
        json!({"subject": "Lost update"}),
        Some("W/\"DwAAABYAAAAstale\""),
    )
    .await;
    stale.assert_graph_error(
        412,
        "ErrorIrresolvableConflict",
        "The send or update operation could not be performed because the change key passed in the request does not \
         match the current change key for the item.",
    );
    assert_eq!(stored(&sim, "renewal").await, before);

    let fresh = patch(
        &sim,
        &token,
        "renewal",
        json!({"subject": "First writer"}),
        Some(&etag),
    )
    .await;
    assert_eq!(fresh.status.as_u16(), 200, "{:#}", fresh.body);
    // The etag just used is stale now.
    let second = patch(
        &sim,
        &token,
        "renewal",
        json!({"subject": "Second writer"}),
        Some(&etag),
    )
    .await;
    assert_eq!(second.status.as_u16(), 412, "{:#}", second.body);
    assert_eq!(stored(&sim, "renewal").await["subject"], "First writer");
    // Its current etag, or `*`, matches.
    let current = fresh.body["@odata.etag"].as_str().expect("etag");
    let third = patch(
        &sim,
        &token,
        "renewal",
        json!({"subject": "Third writer"}),
        Some(current),
    )
    .await;
    assert_eq!(third.status.as_u16(), 200, "{:#}", third.body);
    let any = patch(
        &sim,
        &token,
        "renewal",
        json!({"subject": "Any"}),
        Some("*"),
    )
    .await;
    assert_eq!(any.status.as_u16(), 200, "{:#}", any.body);
}

#[tokio::test]
async fn scopes_unknown_ids_and_an_attendees_copy() {
    let (sim, token) = adele().await;
    let reader = sim.token(ADELE_UPN, "Calendars.Read").await;
    let before = stored(&sim, "renewal").await;
    let refused = patch(&sim, &reader, "renewal", json!({"subject": "x"}), None).await;
    refused.assert_graph_error(
        403,
        "ErrorAccessDenied",
        "Access is denied. Check credentials and try again.",
    );
    assert_eq!(stored(&sim, "renewal").await, before);
    let unknown = patch(&sim, &token, "no-such-event", json!({"subject": "x"}), None).await;
    unknown.assert_graph_error(
        404,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    );
    // Ben cannot patch Adele's calendar through her path.
    let ben = sim.token(BEN_UPN, "Calendars.ReadWrite").await;
    let foreign = sim
        .send(
            Method::PATCH,
            Some(&ben),
            &format!("/v1.0/users/{ADELE_UPN}/events/renewal"),
            Some(json!({"subject": "x"})),
        )
        .await;
    assert_eq!(foreign.status.as_u16(), 403, "{:#}", foreign.body);
    // Adele's own path and the calendar/events path work.
    let own = sim
        .send(
            Method::PATCH,
            Some(&token),
            &format!("/v1.0/users/{ADELE}/calendar/events/renewal"),
            Some(json!({"categories": ["CRM", "Renewal"]})),
        )
        .await;
    assert_eq!(own.status.as_u16(), 200, "{:#}", own.body);
    assert_eq!(own.body["categories"], json!(["CRM", "Renewal"]));
    // Event-update's doc says nothing about attendees' copies: allowed.
    let theirs = patch(
        &sim,
        &token,
        "their-call",
        json!({"body": {"contentType": "text", "content": "my notes"}}),
        None,
    )
    .await;
    assert_eq!(theirs.status.as_u16(), 200, "{:#}", theirs.body);
    assert_eq!(theirs.body["isOrganizer"], false);
    assert_eq!(theirs.body["body"]["content"], "my notes");
    let bad = patch(
        &sim,
        &token,
        "renewal",
        json!({"start": {"dateTime": "not a time", "timeZone": "UTC"}}),
        None,
    )
    .await;
    assert_eq!(bad.status.as_u16(), 400, "{:#}", bad.body);
}

#[tokio::test]
async fn location_replaces_locations_and_teams_meetings_are_created_once() {
    let (sim, token) = adele().await;
    let moved = patch(
        &sim,
        &token,
        "renewal",
        json!({"location": {"displayName": "Room 2"}}),
        None,
    )
    .await;
    assert_eq!(moved.status.as_u16(), 200, "{:#}", moved.body);
    assert_eq!(moved.body["locations"], json!([{"displayName": "Room 2"}]));

    let online = patch(
        &sim,
        &token,
        "renewal",
        json!({"isOnlineMeeting": true, "onlineMeetingProvider": "teamsForBusiness"}),
        None,
    )
    .await;
    assert_eq!(online.status.as_u16(), 200, "{:#}", online.body);
    let join = online.body["onlineMeeting"]["joinUrl"]
        .as_str()
        .expect("joinUrl")
        .to_owned();
    assert!(join.starts_with(&format!("{}/l/meetup-join/19%3ameeting_", sim.base)));
    let listed = sim
        .control(
            Method::GET,
            &format!("/_sim/users/{ADELE}/online-meetings"),
            None,
        )
        .await;
    let meetings = listed.body["value"].as_array().expect("value").clone();
    assert_eq!(meetings.len(), 1);
    assert_eq!(meetings[0]["createdBy"], "event");
    assert_eq!(meetings[0]["eventId"], "renewal");
    assert_eq!(meetings[0]["joinWebUrl"], join.as_str());
    let page = sim.http.get(&join).send().await.expect("join page");
    assert_eq!(page.status().as_u16(), 200);

    // Sending isOnlineMeeting again keeps the meeting it has.
    let again = patch(
        &sim,
        &token,
        "renewal",
        json!({"isOnlineMeeting": true, "subject": "Still online"}),
        None,
    )
    .await;
    assert_eq!(again.status.as_u16(), 200, "{:#}", again.body);
    assert_eq!(again.body["onlineMeeting"]["joinUrl"], join.as_str());
    let listed = sim
        .control(
            Method::GET,
            &format!("/_sim/users/{ADELE}/online-meetings"),
            None,
        )
        .await;
    assert_eq!(listed.body["value"].as_array().expect("value").len(), 1);
}
