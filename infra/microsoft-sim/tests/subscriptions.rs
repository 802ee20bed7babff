//! Change-notification subscriptions against an in-process sim and a tiny webhook receiver on loopback: the
//! validation handshake, lifetime limits, renew and delete, and the notifications themselves.

mod calendar_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use calendar_support::*;
use microsoft_sim::graph::calendar::ChangeType;
use microsoft_sim::graph::subscriptions::MessageChange;
use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Debug, Clone)]
struct Received {
    path: String,
    validation_token: Option<String>,
    content_type: String,
    body: String,
}

type Log = Arc<Mutex<Vec<Received>>>;

/// `/echo/*` answers handshakes correctly; `/wrong` echoes something else; `/json` echoes with the wrong type;
/// `/broken` answers 500. Notifications (no `validationToken`) get 202.
async fn receive(
    State(log): State<Log>,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: String,
) -> Response {
    let validation_token = query.as_deref().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "validationToken")
            .map(|(_, v)| v.into_owned())
    });
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    log.lock().unwrap().push(Received {
        path: path.clone(),
        validation_token: validation_token.clone(),
        content_type,
        body,
    });
    let Some(token) = validation_token else {
        return StatusCode::ACCEPTED.into_response();
    };
    match path.as_str() {
        p if p.starts_with("echo") => {
            ([(header::CONTENT_TYPE, "text/plain")], token).into_response()
        }
        "wrong" => ([(header::CONTENT_TYPE, "text/plain")], "not the token").into_response(),
        "json" => ([(header::CONTENT_TYPE, "application/json")], token).into_response(),
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

struct Receiver {
    url: String,
    log: Log,
    _task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let log: Log = Arc::default();
        let app = Router::new()
            .route("/{*path}", post(receive))
            .with_state(log.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            url,
            log,
            _task: task,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    /// Waits for `n` notifications (non-handshake posts) to `path`.
    async fn notifications(&self, path: &str, n: usize) -> Vec<Value> {
        for _ in 0..100 {
            let found: Vec<Value> = self
                .received()
                .into_iter()
                .filter(|r| r.path == path && r.validation_token.is_none())
                .map(|r| serde_json::from_str(&r.body).unwrap())
                .collect();
            if found.len() >= n {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "fewer than {n} notifications to {path}: {:#?}",
            self.received()
        );
    }
}

fn in_minutes(sim: &TestSim, minutes: i64) -> String {
    let at = sim.server.sim().now() + time::Duration::minutes(minutes);
    at.replace_nanosecond(0).unwrap().format(&Rfc3339).unwrap()
}

async fn setup() -> (TestSim, Receiver, String) {
    let sim = start(world(json!([]), [json!([]), json!([]), json!([])])).await;
    let receiver = Receiver::start().await;
    let token = sim.token(ADELE_UPN, "Calendars.Read Mail.Read").await;
    (sim, receiver, token)
}

fn subscription(receiver: &Receiver, resource: &str, expiration: &str) -> Value {
    json!({
        "changeType": "created,updated,deleted",
        "notificationUrl": format!("{}/echo/notify", receiver.url),
        "lifecycleNotificationUrl": format!("{}/echo/lifecycle", receiver.url),
        "resource": resource,
        "expirationDateTime": expiration,
        "clientState": "client-state-secret",
    })
}

#[tokio::test]
async fn create_runs_the_validation_handshake_and_events_notify() {
    let (sim, receiver, token) = setup().await;
    let expiration = in_minutes(&sim, 3 * 24 * 60);
    let created = sim
        .post(
            &token,
            "/v1.0/subscriptions",
            subscription(&receiver, "/me/events", &expiration),
        )
        .await;
    assert_eq!(created.status, 201, "{:#}", created.body);
    let sub = &created.body;
    let id = sub["id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok());
    assert_eq!(sub["resource"], "/me/events");
    assert_eq!(sub["changeType"], "created,updated,deleted");
    assert_eq!(sub["applicationId"], CLIENT_ID);
    assert_eq!(sub["creatorId"], ADELE);
    assert_eq!(sub["clientState"], "client-state-secret");
    assert_eq!(sub["latestSupportedTlsVersion"], "v1_2");
    assert_eq!(sub["includeResourceData"], false);
    assert_eq!(
        sub["notificationUrl"],
        format!("{}/echo/notify", receiver.url)
    );
    let echoed =
        OffsetDateTime::parse(sub["expirationDateTime"].as_str().unwrap(), &Rfc3339).unwrap();
    assert_eq!(
        echoed,
        OffsetDateTime::parse(&expiration, &Rfc3339).unwrap()
    );
    assert!(
        sub["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("$metadata#subscriptions/$entity")
    );

    let handshakes: Vec<Received> = receiver
        .received()
        .into_iter()
        .filter(|r| r.validation_token.is_some())
        .collect();
    assert_eq!(
        handshakes
            .iter()
            .map(|r| r.path.as_str())
            .collect::<Vec<_>>(),
        ["echo/notify", "echo/lifecycle"]
    );
    for h in &handshakes {
        assert!(h.content_type.starts_with("text/plain"), "{h:?}");
        assert!(
            h.validation_token
                .as_ref()
                .unwrap()
                .starts_with("Validation: Testing client application reachability")
        );
    }

    let added = sim
        .control(
            Method::POST,
            &format!("/_sim/users/{ADELE}/events"),
            Some(json!({
                "subject": "Kick-off",
                "start": {"dateTime": "2026-12-20T10:00:00", "timeZone": "UTC"},
                "end": {"dateTime": "2026-12-20T11:00:00", "timeZone": "UTC"}
            })),
        )
        .await;
    let event_id = added.body["id"].as_str().unwrap().to_owned();
    let deleted = sim
        .control(
            Method::DELETE,
            &format!("/_sim/users/{ADELE}/events/{event_id}"),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204);
    let notes = receiver.notifications("echo/notify", 2).await;
    let kinds: Vec<&str> = notes
        .iter()
        .map(|n| n["value"][0]["changeType"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"created") && kinds.contains(&"deleted"),
        "{notes:#?}"
    );
    let created_note = notes
        .iter()
        .find(|n| n["value"][0]["changeType"] == "created")
        .unwrap();
    let n = &created_note["value"][0];
    assert_eq!(n["subscriptionId"], id);
    assert_eq!(n["clientState"], "client-state-secret");
    assert_eq!(n["tenantId"], TENANT);
    assert_eq!(n["resource"], format!("Users/{ADELE}/Events/{event_id}"));
    assert_eq!(n["resourceData"]["@odata.type"], "#Microsoft.Graph.Event");
    assert_eq!(
        n["resourceData"]["@odata.id"],
        format!("Users/{ADELE}/Events/{event_id}")
    );
    assert_eq!(n["resourceData"]["id"], event_id.as_str());
    assert!(
        n["resourceData"]["@odata.etag"]
            .as_str()
            .unwrap()
            .starts_with("W/\"")
    );
    assert_eq!(
        n["subscriptionExpirationDateTime"],
        sub["expirationDateTime"]
    );

    for _ in 0..100 {
        if sim
            .control(Method::GET, "/_sim/subscriptions/deliveries", None)
            .await
            .body
            .as_array()
            .unwrap()
            .len()
            >= 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deliveries = sim
        .control(Method::GET, "/_sim/subscriptions/deliveries", None)
        .await;
    assert!(
        deliveries
            .body
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["delivered"] == true && d["status"] == 202),
        "{:#}",
        deliveries.body
    );

    let lifecycle = sim
        .control(
            Method::POST,
            &format!("/_sim/subscriptions/{id}/lifecycle"),
            Some(json!({"lifecycleEvent": "reauthorizationRequired"})),
        )
        .await;
    assert_eq!(lifecycle.status, 202);
    let notes = receiver.notifications("echo/lifecycle", 1).await;
    assert_eq!(
        notes[0]["value"][0]["lifecycleEvent"],
        "reauthorizationRequired"
    );
    assert_eq!(notes[0]["value"][0]["subscriptionId"], id);
    assert_eq!(notes[0]["value"][0]["clientState"], "client-state-secret");
}

#[tokio::test]
async fn lifetimes_beyond_outlooks_limit_and_past_expirations_are_refused() {
    let (sim, receiver, token) = setup().await;
    let too_long = sim
        .post(
            &token,
            "/v1.0/subscriptions",
            subscription(&receiver, "/me/events", &in_minutes(&sim, 10_071)),
        )
        .await;
    too_long.assert_graph_error(
        400,
        "ExtensionError",
        "Subscription expiration can only be 10070 minutes in the future.",
    );
    let past = sim
        .post(
            &token,
            "/v1.0/subscriptions",
            subscription(&receiver, "/me/messages", &in_minutes(&sim, -5)),
        )
        .await;
    assert_eq!(past.status, 400);
    assert_eq!(past.body["error"]["code"], "InvalidRequest");
    let longest = sim
        .post(
            &token,
            "/v1.0/subscriptions",
            subscription(&receiver, "/me/messages", &in_minutes(&sim, 10_069)),
        )
        .await;
    assert_eq!(longest.status, 201, "{:#}", longest.body);
    assert!(
        receiver
            .received()
            .iter()
            .all(|r| r.validation_token.is_some()),
        "no notification yet"
    );
}

#[tokio::test]
async fn endpoints_that_fail_the_handshake_and_bad_requests_are_refused() {
    let (sim, receiver, token) = setup().await;
    let expiration = in_minutes(&sim, 60);
    let with_url = |path: &str| {
        json!({"changeType": "created", "notificationUrl": format!("{}/{path}", receiver.url), "resource": "me/messages",
               "expirationDateTime": expiration})
    };
    let mismatch = "Subscription validation request failed. Response must exactly match validationToken query parameter.";
    sim.post(&token, "/v1.0/subscriptions", with_url("wrong"))
        .await
        .assert_graph_error(400, "InvalidRequest", mismatch);
    sim.post(&token, "/v1.0/subscriptions", with_url("json"))
        .await
        .assert_graph_error(400, "InvalidRequest", mismatch);
    let broken = sim
        .post(&token, "/v1.0/subscriptions", with_url("broken"))
        .await;
    assert_eq!(broken.status, 400);
    assert!(
        broken.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Subscription validation request failed.")
    );
    let closed = json!({"changeType": "created", "notificationUrl": "http://127.0.0.1:9/closed", "resource": "me/messages",
                        "expirationDateTime": expiration});
    sim.post(&token, "/v1.0/subscriptions", closed).await.assert_graph_error(
        400,
        "InvalidRequest",
        "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request.",
    );
    let plain_http = json!({"changeType": "created", "notificationUrl": "http://webhook.example.com/notify",
                            "resource": "me/messages", "expirationDateTime": expiration});
    assert_eq!(
        sim.post(&token, "/v1.0/subscriptions", plain_http)
            .await
            .status,
        400
    );
    let mut long_state = with_url("echo/a");
    long_state["clientState"] = json!("s".repeat(129));
    assert_eq!(
        sim.post(&token, "/v1.0/subscriptions", long_state)
            .await
            .status,
        400
    );
    let mut bad_change = with_url("echo/a");
    bad_change["changeType"] = json!("created,moved");
    assert_eq!(
        sim.post(&token, "/v1.0/subscriptions", bad_change)
            .await
            .status,
        400
    );

    let mut other_user = with_url("echo/a");
    other_user["resource"] = json!(format!("/users/{BEN}/events"));
    other_user["changeType"] = json!("updated");
    sim.post(&token, "/v1.0/subscriptions", other_user)
        .await
        .assert_graph_error(
            403,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        );
    let mail_only = sim.token(ADELE_UPN, "Mail.Read").await;
    let mut events = with_url("echo/a");
    events["resource"] = json!("me/events");
    sim.post(&mail_only, "/v1.0/subscriptions", events)
        .await
        .assert_graph_error(
            403,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        );
    assert_eq!(
        sim.control(Method::GET, "/_sim/subscriptions", None)
            .await
            .body,
        json!([])
    );
}

#[tokio::test]
async fn renew_delete_and_visibility() {
    let (sim, receiver, token) = setup().await;
    let created = sim
        .post(
            &token,
            "/v1.0/subscriptions",
            subscription(
                &receiver,
                "me/mailFolders('Inbox')/messages",
                &in_minutes(&sim, 60),
            ),
        )
        .await;
    assert_eq!(created.status, 201, "{:#}", created.body);
    let id = created.body["id"].as_str().unwrap();
    let path = format!("/v1.0/subscriptions/{id}");

    let later = in_minutes(&sim, 2 * 24 * 60);
    let renewed = sim
        .send(
            Method::PATCH,
            Some(&token),
            &path,
            Some(json!({"expirationDateTime": later})),
        )
        .await;
    assert_eq!(renewed.status, 200, "{:#}", renewed.body);
    assert_eq!(
        OffsetDateTime::parse(
            renewed.body["expirationDateTime"].as_str().unwrap(),
            &Rfc3339
        )
        .unwrap(),
        OffsetDateTime::parse(&later, &Rfc3339).unwrap()
    );
    let too_long = sim
        .send(
            Method::PATCH,
            Some(&token),
            &path,
            Some(json!({"expirationDateTime": in_minutes(&sim, 20_000)})),
        )
        .await;
    too_long.assert_graph_error(
        400,
        "ExtensionError",
        "Subscription expiration can only be 10070 minutes in the future.",
    );
    let lifecycle = sim
        .send(
            Method::PATCH,
            Some(&token),
            &path,
            Some(json!({"lifecycleNotificationUrl": format!("{}/echo/other", receiver.url)})),
        )
        .await;
    lifecycle.assert_graph_error(
        400,
        "InvalidRequest",
        "lifecycleNotificationUrl can only be set when the subscription is created.",
    );

    let listed = sim.get(&token, "/v1.0/subscriptions", &[]).await;
    assert_eq!(listed.body["value"].as_array().unwrap().len(), 1);
    let ben = sim.token(BEN_UPN, "Mail.Read").await;
    assert_eq!(
        sim.get(&ben, &path, &[]).await.status,
        404,
        "another user's subscription is invisible"
    );
    assert_eq!(
        sim.get(&ben, "/v1.0/subscriptions", &[]).await.body["value"],
        json!([])
    );

    // Message notifications follow the folder in the resource (the mail store reports changes this way).
    let shared = sim.server.sim();
    let change = |folder: &str, well_known: Option<&str>, id: &str| MessageChange {
        tenant_id: TENANT.into(),
        user_id: ADELE.into(),
        folder_id: folder.into(),
        folder_well_known_name: well_known.map(str::to_owned),
        change: ChangeType::Created,
        rest_id: id.into(),
        immutable_id: format!("imm-{id}"),
        change_key: Some("CQAAABYAAAA".into()),
    };
    shared.subscriptions.publish_message(
        &shared,
        &change("AQMkArchive", Some("archive"), "AAMkArchived"),
    );
    shared
        .subscriptions
        .publish_message(&shared, &change("AQMkInbox", Some("inbox"), "AAMkNew"));
    let notes = receiver.notifications("echo/notify", 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let notes_after = receiver.notifications("echo/notify", 1).await;
    assert_eq!(notes.len(), 1);
    assert_eq!(
        notes_after.len(),
        1,
        "the archive message does not match an inbox subscription"
    );
    assert_eq!(
        notes[0]["value"][0]["resource"],
        format!("Users/{ADELE}/Messages/AAMkNew")
    );
    assert_eq!(
        notes[0]["value"][0]["resourceData"]["@odata.type"],
        "#Microsoft.Graph.Message"
    );

    assert_eq!(
        sim.send(Method::DELETE, Some(&token), &path, None)
            .await
            .status,
        204
    );
    sim.get(&token, &path, &[]).await.assert_graph_error(
        404,
        "ResourceNotFound",
        "The object was not found.",
    );
    assert_eq!(
        sim.send(Method::DELETE, Some(&token), &path, None)
            .await
            .status,
        404
    );
}
