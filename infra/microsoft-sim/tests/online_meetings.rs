//! Online meetings against an in-process sim: create, createOrGet (idempotent per user and externalId, its
//! default times), get, update (times together), delete, 404s, scope refusals, another user's path, the join page
//! on the sim's own base URL and the control listing.

mod calendar_support;

use calendar_support::*;
use reqwest::Method;
use serde_json::{Value, json};

async fn sim() -> TestSim {
    start(world(json!([]), [json!([]), json!([]), json!([])])).await
}

fn meetings_of(reply: &Reply) -> Vec<Value> {
    reply.body["value"].as_array().expect("value").clone()
}

#[tokio::test]
async fn create_returns_the_documented_meeting_with_a_join_url_on_the_sim() {
    let sim = sim().await;
    let token = sim.token(ADELE_UPN, "OnlineMeetings.ReadWrite").await;
    let created = sim
        .post(
            &token,
            "/v1.0/me/onlineMeetings",
            json!({"startDateTime": "2026-12-14T14:30:34.2444915-07:00",
                   "endDateTime": "2026-12-14T15:00:34.2464912-07:00",
                   "subject": "Renewal review"}),
        )
        .await;
    assert_eq!(created.status.as_u16(), 201, "{:#}", created.body);
    let m = &created.body;
    assert_eq!(m["subject"], "Renewal review");
    assert_eq!(m["startDateTime"], "2026-12-14T21:30:34.2444915Z");
    assert_eq!(m["endDateTime"], "2026-12-14T22:00:34.2464912Z");
    assert_eq!(m["externalId"], Value::Null);
    assert_eq!(
        m["participants"]["organizer"]["identity"]["user"]["id"],
        ADELE
    );
    assert_eq!(
        m["participants"]["organizer"]["identity"]["user"]["displayName"],
        "Adele Vance"
    );
    assert_eq!(m["participants"]["organizer"]["upn"], ADELE_UPN);
    assert_eq!(m["joinMeetingIdSettings"]["isPasscodeRequired"], false);
    assert!(m["videoTeleconferenceId"].is_string());
    let thread = m["chatInfo"]["threadId"].as_str().expect("threadId");
    assert!(thread.starts_with("19:meeting_") && thread.ends_with("@thread.v2"));
    let url = m["joinWebUrl"].as_str().expect("joinWebUrl");
    let opaque = thread
        .trim_start_matches("19:meeting_")
        .trim_end_matches("@thread.v2");
    assert_eq!(
        url,
        format!(
            "{}/l/meetup-join/19%3ameeting_{opaque}%40thread.v2/0?context=%7b%22Tid%22%3a%22{TENANT}%22%2c%22Oid%22%3a%22{ADELE}%22%7d",
            sim.base
        )
    );

    // The join page is served by the sim, naming the meeting.
    let page = sim.http.get(url).send().await.expect("join page");
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.expect("html");
    assert!(html.contains("<title>Microsoft Teams meeting (microsoft-sim)</title>"));
    let id = m["id"].as_str().expect("id");
    assert!(
        html.contains(&format!(
            "id=\"sim-teams-join\" data-thread-id=\"{thread}\">{id}</span>"
        )),
        "{html}"
    );

    // GET returns the same meeting; the control API lists it.
    let got = sim
        .get(&token, &format!("/v1.0/me/onlineMeetings/{id}"), &[])
        .await;
    assert_eq!(got.status.as_u16(), 200, "{:#}", got.body);
    assert_eq!(got.body["joinWebUrl"], url);
    let listed = sim
        .control(
            Method::GET,
            &format!("/_sim/users/{ADELE_UPN}/online-meetings"),
            None,
        )
        .await;
    assert_eq!(listed.status.as_u16(), 200);
    let listed = meetings_of(&listed);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id);
    assert_eq!(listed[0]["createdBy"], "create");
    assert_eq!(listed[0]["joinWebUrl"], url);
    assert_eq!(listed[0]["organizerId"], ADELE);
    assert_eq!(listed[0]["subject"], "Renewal review");
    assert_eq!(listed[0]["startDateTime"], "2026-12-14T21:30:34.2444915Z");

    // An unknown meeting's join page is a 404.
    let unknown = sim
        .http
        .get(format!(
            "{}/l/meetup-join/19%3ameeting_nope%40thread.v2/0",
            sim.base
        ))
        .send()
        .await
        .expect("join page");
    assert_eq!(unknown.status().as_u16(), 404);
}

#[tokio::test]
async fn create_or_get_returns_the_same_meeting_for_the_same_external_id() {
    let sim = sim().await;
    let token = sim.token(ADELE_UPN, "OnlineMeetings.ReadWrite").await;
    let body = json!({"startDateTime": "2026-12-14T10:00:00Z", "endDateTime": "2026-12-14T10:30:00Z",
                      "subject": "Customer call", "externalId": "event-AAMkAD-1",
                      "participants": {"attendees": [{"identity": {"user": {"id": BEN}}, "upn": BEN_UPN}]}});
    let first = sim
        .post(&token, "/v1.0/me/onlineMeetings/createOrGet", body.clone())
        .await;
    assert_eq!(first.status.as_u16(), 201, "{:#}", first.body);
    assert_eq!(first.body["externalId"], "event-AAMkAD-1");
    assert_eq!(first.body["participants"]["attendees"][0]["upn"], BEN_UPN);
    assert_eq!(
        first.body["participants"]["attendees"][0]["role"],
        Value::Null
    );
    let again = sim
        .post(&token, "/v1.0/me/onlineMeetings/createOrGet", body)
        .await;
    assert_eq!(again.status.as_u16(), 200, "{:#}", again.body);
    assert_eq!(again.body["id"], first.body["id"]);
    assert_eq!(again.body["joinWebUrl"], first.body["joinWebUrl"]);
    let listed = sim
        .control(
            Method::GET,
            &format!("/_sim/users/{ADELE}/online-meetings"),
            None,
        )
        .await;
    assert_eq!(meetings_of(&listed).len(), 1);
    assert_eq!(meetings_of(&listed)[0]["createdBy"], "createOrGet");
    assert_eq!(meetings_of(&listed)[0]["externalId"], "event-AAMkAD-1");

    // Another user with the same externalId gets a meeting of their own.
    let ben = sim.token(BEN_UPN, "OnlineMeetings.ReadWrite").await;
    let bens = sim
        .post(
            &ben,
            "/v1.0/me/onlineMeetings/createOrGet",
            json!({"externalId": "event-AAMkAD-1"}),
        )
        .await;
    assert_eq!(bens.status.as_u16(), 201, "{:#}", bens.body);
    assert_ne!(bens.body["id"], first.body["id"]);
    let all = sim
        .control(Method::GET, "/_sim/online-meetings", None)
        .await;
    assert_eq!(meetings_of(&all).len(), 2);

    // A different externalId is a different meeting.
    let other = sim
        .post(
            &token,
            &format!("/v1.0/users/{ADELE_UPN}/onlineMeetings/createOrGet"),
            json!({"externalId": "event-AAMkAD-2", "startDateTime": "2026-12-15T09:00:00Z"}),
        )
        .await;
    assert_eq!(other.status.as_u16(), 201, "{:#}", other.body);
    // Start without end: end = start + 1 h [doc].
    assert_eq!(other.body["endDateTime"], "2026-12-15T10:00:00.0000000Z");
}

#[tokio::test]
async fn create_or_get_defaults_and_refusals() {
    let sim = sim().await;
    let token = sim.token(ADELE_UPN, "OnlineMeetings.ReadWrite").await;
    // No times: now and now + 1 h [doc].
    let created = sim
        .post(
            &token,
            "/v1.0/me/onlineMeetings/createOrGet",
            json!({"externalId": "x-1", "subject": "No times"}),
        )
        .await;
    assert_eq!(created.status.as_u16(), 201, "{:#}", created.body);
    let parse = |v: &Value| {
        time::OffsetDateTime::parse(
            v.as_str().expect("a timestamp"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("RFC 3339")
    };
    let start = parse(&created.body["startDateTime"]);
    let end = parse(&created.body["endDateTime"]);
    assert_eq!(end - start, time::Duration::hours(1));
    assert!((time::OffsetDateTime::now_utc() - start).abs() < time::Duration::minutes(1));

    let missing = sim
        .post(
            &token,
            "/v1.0/me/onlineMeetings/createOrGet",
            json!({"subject": "No external id"}),
        )
        .await;
    missing.assert_graph_error(400, "BadRequest", "The externalId is required.");
    let end_only = sim
        .post(
            &token,
            "/v1.0/me/onlineMeetings/createOrGet",
            json!({"externalId": "x-2", "endDateTime": "2026-12-15T10:00:00Z"}),
        )
        .await;
    assert_eq!(end_only.status.as_u16(), 400, "{:#}", end_only.body);
    let backwards = sim
        .post(
            &token,
            "/v1.0/me/onlineMeetings",
            json!({"startDateTime": "2026-12-15T10:00:00Z", "endDateTime": "2026-12-15T09:00:00Z"}),
        )
        .await;
    assert_eq!(backwards.status.as_u16(), 400, "{:#}", backwards.body);
    let listed = sim
        .control(
            Method::GET,
            &format!("/_sim/users/{ADELE}/online-meetings"),
            None,
        )
        .await;
    assert_eq!(meetings_of(&listed).len(), 1, "refused calls store nothing");
}

#[tokio::test]
async fn update_moves_times_together_and_delete_removes_the_meeting() {
    let sim = sim().await;
    let token = sim.token(ADELE_UPN, "OnlineMeetings.ReadWrite").await;
    let created = sim
        .post(
            &token,
            "/v1.0/me/onlineMeetings",
            json!({"startDateTime": "2026-12-14T10:00:00Z", "endDateTime": "2026-12-14T10:30:00Z", "subject": "Call"}),
        )
        .await;
    let id = created.body["id"].as_str().expect("id").to_owned();
    let path = format!("/v1.0/me/onlineMeetings/{id}");
    let patched = sim
        .send(
            Method::PATCH,
            Some(&token),
            &path,
            Some(json!({"startDateTime": "2026-12-16T14:33:30.8546353-07:00",
                        "endDateTime": "2026-12-16T15:03:30.8566356-07:00",
                        "subject": "Patch Meeting Subject"})),
        )
        .await;
    assert_eq!(patched.status.as_u16(), 200, "{:#}", patched.body);
    assert_eq!(
        patched.body["startDateTime"],
        "2026-12-16T21:33:30.8546353Z"
    );
    assert_eq!(patched.body["endDateTime"], "2026-12-16T22:03:30.8566356Z");
    assert_eq!(patched.body["subject"], "Patch Meeting Subject");
    assert_eq!(patched.body["id"], id);
    assert_eq!(patched.body["joinWebUrl"], created.body["joinWebUrl"]);
    assert_eq!(
        patched.body["creationDateTime"],
        created.body["creationDateTime"]
    );

    // Only the subject: the times stay.
    let renamed = sim
        .send(
            Method::PATCH,
            Some(&token),
            &path,
            Some(json!({"subject": "Renamed"})),
        )
        .await;
    assert_eq!(renamed.status.as_u16(), 200, "{:#}", renamed.body);
    assert_eq!(
        renamed.body["startDateTime"],
        "2026-12-16T21:33:30.8546353Z"
    );
    assert_eq!(renamed.body["subject"], "Renamed");

    // Start without end is refused ("always requires both" [doc]); nothing changes.
    let half = sim
        .send(
            Method::PATCH,
            Some(&token),
            &path,
            Some(json!({"startDateTime": "2026-12-17T10:00:00Z"})),
        )
        .await;
    assert_eq!(half.status.as_u16(), 400, "{:#}", half.body);
    let got = sim.get(&token, &path, &[]).await;
    assert_eq!(got.body["startDateTime"], "2026-12-16T21:33:30.8546353Z");
    let listed = sim
        .control(
            Method::GET,
            &format!("/_sim/users/{ADELE}/online-meetings"),
            None,
        )
        .await;
    assert_eq!(meetings_of(&listed)[0]["updates"], 2);

    let deleted = sim.send(Method::DELETE, Some(&token), &path, None).await;
    assert_eq!(deleted.status.as_u16(), 204, "{:#}", deleted.body);
    let gone = sim.get(&token, &path, &[]).await;
    gone.assert_graph_error(
        404,
        "NotFound",
        "The requested onlineMeeting was not found.",
    );
    let again = sim.send(Method::DELETE, Some(&token), &path, None).await;
    assert_eq!(again.status.as_u16(), 404);
    let patch_gone = sim
        .send(
            Method::PATCH,
            Some(&token),
            &path,
            Some(json!({"subject": "x"})),
        )
        .await;
    assert_eq!(patch_gone.status.as_u16(), 404);
    let listed = sim
        .control(
            Method::GET,
            &format!("/_sim/users/{ADELE}/online-meetings"),
            None,
        )
        .await;
    assert!(meetings_of(&listed).is_empty());
    let join = sim
        .http
        .get(created.body["joinWebUrl"].as_str().expect("url"))
        .send()
        .await
        .expect("join page");
    assert_eq!(join.status().as_u16(), 404, "a deleted meeting has no page");
}

#[tokio::test]
async fn scopes_other_users_and_unknown_ids_are_refused() {
    let sim = sim().await;
    let calendars = sim.token(ADELE_UPN, "Calendars.ReadWrite").await;
    let refused = sim
        .post(
            &calendars,
            "/v1.0/me/onlineMeetings",
            json!({"subject": "No scope"}),
        )
        .await;
    refused.assert_graph_error(
        403,
        "ErrorAccessDenied",
        "Access is denied. Check credentials and try again.",
    );
    let refused = sim
        .post(
            &calendars,
            "/v1.0/me/onlineMeetings/createOrGet",
            json!({"externalId": "a"}),
        )
        .await;
    assert_eq!(refused.status.as_u16(), 403);

    let writer = sim.token(ADELE_UPN, "OnlineMeetings.ReadWrite").await;
    let created = sim
        .post(
            &writer,
            "/v1.0/me/onlineMeetings",
            json!({"subject": "Mine"}),
        )
        .await;
    let id = created.body["id"].as_str().expect("id").to_owned();

    // OnlineMeetings.Read reads but does not write [doc permission tables].
    let reader = sim.token(ADELE_UPN, "OnlineMeetings.Read").await;
    let got = sim
        .get(&reader, &format!("/v1.0/me/onlineMeetings/{id}"), &[])
        .await;
    assert_eq!(got.status.as_u16(), 200, "{:#}", got.body);
    let write = sim
        .send(
            Method::PATCH,
            Some(&reader),
            &format!("/v1.0/me/onlineMeetings/{id}"),
            Some(json!({"subject": "x"})),
        )
        .await;
    assert_eq!(write.status.as_u16(), 403);
    let delete = sim
        .send(
            Method::DELETE,
            Some(&reader),
            &format!("/v1.0/me/onlineMeetings/{id}"),
            None,
        )
        .await;
    assert_eq!(delete.status.as_u16(), 403);

    // Ben cannot see Adele's meeting by id, nor act under her path.
    let ben = sim.token(BEN_UPN, "OnlineMeetings.ReadWrite").await;
    let hidden = sim
        .get(&ben, &format!("/v1.0/me/onlineMeetings/{id}"), &[])
        .await;
    assert_eq!(hidden.status.as_u16(), 404);
    let foreign = sim
        .post(
            &ben,
            &format!("/v1.0/users/{ADELE}/onlineMeetings"),
            json!({"subject": "As Adele"}),
        )
        .await;
    assert_eq!(foreign.status.as_u16(), 403, "{:#}", foreign.body);
    let unknown = sim
        .get(&writer, "/v1.0/me/onlineMeetings/MSpub3RoZXJl", &[])
        .await;
    unknown.assert_graph_error(
        404,
        "NotFound",
        "The requested onlineMeeting was not found.",
    );
    let no_token = sim
        .send(
            Method::POST,
            None,
            "/v1.0/me/onlineMeetings",
            Some(json!({})),
        )
        .await;
    assert_eq!(no_token.status.as_u16(), 401);
    let not_json = sim
        .http
        .post(format!("{}/v1.0/me/onlineMeetings", sim.base))
        .bearer_auth(&writer)
        .body("not json")
        .send()
        .await
        .expect("post");
    assert_eq!(not_json.status().as_u16(), 400);
}
