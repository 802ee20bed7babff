//! Live mailbox changes (control API) reach change-notification subscriptions on the folder: created, updated,
//! and a move out of the folder as deleted.

mod mail_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use mail_support::*;
use reqwest::Method;
use serde_json::{Value, json};

type Posts = Arc<Mutex<Vec<Value>>>;

/// Echoes validation tokens; records notifications.
async fn receive(State(posts): State<Posts>, RawQuery(query): RawQuery, body: String) -> Response {
    let token = query.as_deref().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "validationToken")
            .map(|(_, v)| v.into_owned())
    });
    match token {
        Some(t) => ([(header::CONTENT_TYPE, "text/plain")], t).into_response(),
        None => {
            posts
                .lock()
                .unwrap()
                .push(serde_json::from_str(&body).unwrap());
            axum::http::StatusCode::ACCEPTED.into_response()
        }
    }
}

async fn wait_for(posts: &Posts, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let got: Vec<Value> = posts
            .lock()
            .unwrap()
            .iter()
            .flat_map(|p| p["value"].as_array().unwrap().clone())
            .collect();
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} notifications: {:?}", posts.lock().unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn control_api_changes_notify_folder_subscriptions() {
    let server = start().await;
    let token = token(&server, MEGAN, &["Mail.Read"]).await;
    let posts: Posts = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(posts.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let expires = (server.sim().now() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let response = client()
        .post(format!("{}/v1.0/subscriptions", server.base_url()))
        .bearer_auth(&token)
        .json(&json!({"changeType": "created,updated,deleted", "notificationUrl": hook,
                      "resource": "/me/mailfolders('inbox')/messages", "expirationDateTime": expires,
                      "clientState": "mail-test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);

    let (_, added) = control(
        &server,
        Method::POST,
        &format!("/_sim/users/{MEGAN}/messages"),
        Some(json!({"folder": "inbox", "message": {"subject": "Hello"}})),
    )
    .await;
    let id = added["id"].as_str().unwrap().to_owned();
    control(
        &server,
        Method::PATCH,
        &format!("/_sim/users/{MEGAN}/messages/{id}"),
        Some(json!({"isRead": true})),
    )
    .await;
    control(
        &server,
        Method::POST,
        &format!("/_sim/users/{MEGAN}/messages/{id}/move"),
        Some(json!({"folder": "archive"})),
    )
    .await;

    let got = wait_for(&posts, 3).await;
    // Deliveries are concurrent, so their order is not asserted.
    let mut kinds: Vec<&str> = got
        .iter()
        .map(|n| n["changeType"].as_str().unwrap())
        .collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["created", "deleted", "updated"], "{got:?}");
    for n in &got {
        assert_eq!(n["clientState"], "mail-test");
        assert_eq!(n["resource"], format!("Users/{MEGAN_ID}/Messages/{id}"));
        assert_eq!(n["resourceData"]["id"], id.as_str());
        assert_eq!(n["tenantId"], TENANT);
    }
    // The move's creation happened in the archive, which this subscription does not watch.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(wait_for(&posts, 3).await.len(), 3);
}
