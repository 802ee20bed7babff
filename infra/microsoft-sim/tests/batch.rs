//! `POST /v1.0/$batch`: per-item responses through the real router, the 20-request limit, `dependsOn` and 424,
//! inner 429s with `Retry-After` in the item headers, and at most 4 inner requests per mailbox at a time.

mod mail_support;

use std::time::Instant;

use mail_support::*;
use reqwest::Method;
use serde_json::{Value, json};

async fn batch(server: &microsoft_sim::SimServer, token: &str, body: &Value) -> (u16, Value) {
    let response = client()
        .post(format!("{}/v1.0/$batch", server.base_url()))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn item<'a>(body: &'a Value, id: &str) -> &'a Value {
    body["responses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no item {id}: {body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn inner_requests_run_through_graph_and_answer_per_item() {
    let server = start().await;
    let token = token(&server, MEGAN, &["Mail.Read", "User.Read"]).await;
    let (status, body) = batch(
        &server,
        &token,
        &json!({"requests": [
            {"id": "1", "method": "GET", "url": "/me/mailFolders/inbox"},
            {"id": "2", "method": "GET", "url": "/me/messages/AAMkWorldMessage1=?$select=subject"},
            {"id": "3", "method": "GET", "url": "me?$select=displayName"},
            {"id": "4", "method": "GET", "url": "/me/messages/garbage"},
            {"id": "5", "method": "GET", "url": "/me/mailFolders/inbox/messages/delta?$select=subject",
             "headers": {"Prefer": "odata.maxpagesize=2"}}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["responses"].as_array().unwrap().len(), 5);
    let inbox = item(&body, "1");
    assert_eq!(inbox["status"], 200);
    assert!(
        inbox["headers"]["Content-Type"]
            .as_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(inbox["body"]["displayName"], "Inbox");
    assert_eq!(item(&body, "2")["body"]["subject"], "Renewal pricing");
    assert_eq!(item(&body, "3")["body"]["displayName"], "Megan Bowen");
    let bad = item(&body, "4");
    assert_eq!(bad["status"], 400);
    assert_eq!(bad["body"]["error"]["code"], "ErrorInvalidIdMalformed");
    let delta = item(&body, "5");
    assert_eq!(
        delta["body"]["value"].as_array().unwrap().len(),
        2,
        "the item's Prefer header applies"
    );
    assert!(delta["body"]["@odata.nextLink"].is_string());

    // The inner requests are real Graph requests: the request log shows each.
    let (_, log) = control(&server, Method::GET, "/_sim/requests", None).await;
    let paths: Vec<&str> = log["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"/v1.0/$batch"));
    assert!(paths.contains(&"/v1.0/me/mailFolders/inbox"));
    assert!(paths.contains(&"/v1.0/me/messages/garbage"));
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_batches_are_400() {
    let server = start().await;
    let token = token(&server, MEGAN, &["Mail.Read"]).await;
    let requests: Vec<Value> = (0..21)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/me/mailFolders/inbox"}))
        .collect();
    let (status, body) = batch(&server, &token, &json!({ "requests": requests })).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "BadRequest");
    assert!(body["error"]["innerError"]["request-id"].is_string());
    let twenty: Vec<Value> = requests[..20].to_vec();
    let (status, body) = batch(&server, &token, &json!({ "requests": twenty })).await;
    assert_eq!(status, 200);
    assert_eq!(body["responses"].as_array().unwrap().len(), 20);
    for malformed in [
        json!({"requests": [{"id": "1", "url": "/me"}]}),
        json!({"requests": [{"id": "1", "method": "GET", "url": "/me"}, {"id": "1", "method": "GET", "url": "/me"}]}),
        json!({"requests": [{"id": "1", "method": "POST", "url": "/me/messages", "body": {"subject": "x"}}]}),
        json!({"requests": [{"id": "1", "method": "GET", "url": "/me", "dependsOn": ["9"]}]}),
        json!({"nothing": []}),
    ] {
        let (status, body) = batch(&server, &token, &malformed).await;
        assert_eq!(status, 400, "{malformed}");
        assert_eq!(body["error"]["code"], "BadRequest");
    }
    let response = client()
        .post(format!("{}/v1.0/$batch", server.base_url()))
        .json(&json!({"requests": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn depends_on_orders_requests_and_fails_dependents_with_424() {
    let server = start().await;
    let token = token(&server, MEGAN, &["Mail.Read"]).await;
    let (_, _) = control(
        &server,
        Method::POST,
        "/_sim/latency",
        Some(json!({"ms": 50, "pathPrefix": "/v1.0/me/mailFolders"})),
    )
    .await;
    let (status, body) = batch(
        &server,
        &token,
        &json!({"requests": [
            {"id": "a", "method": "GET", "url": "/me/mailFolders/nope-not-an-id"},
            {"id": "b", "method": "GET", "url": "/me/mailFolders/inbox", "dependsOn": ["a"]},
            {"id": "c", "method": "GET", "url": "/me/mailFolders/inbox", "dependsOn": ["b"]},
            {"id": "d", "method": "GET", "url": "/me/mailFolders/drafts"},
            {"id": "e", "method": "GET", "url": "/me/mailFolders/sentitems", "dependsOn": ["d"]}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(item(&body, "a")["status"], 400);
    for id in ["b", "c"] {
        let failed = item(&body, id);
        assert_eq!(failed["status"], 424, "{failed}");
        assert!(failed["body"]["error"]["code"].is_string());
    }
    assert_eq!(item(&body, "d")["status"], 200);
    assert_eq!(item(&body, "e")["status"], 200);
    // b and c never ran; e started after d finished.
    let (_, log) = control(&server, Method::GET, "/_sim/requests", None).await;
    let entries = log["value"].as_array().unwrap();
    assert_eq!(
        entries
            .iter()
            .filter(|e| e["path"] == "/v1.0/me/mailFolders/inbox")
            .count(),
        0
    );
    let d = entries
        .iter()
        .find(|e| e["path"] == "/v1.0/me/mailFolders/drafts")
        .unwrap();
    let e = entries
        .iter()
        .find(|e| e["path"] == "/v1.0/me/mailFolders/sentitems")
        .unwrap();
    assert!(
        e["startMs"].as_u64().unwrap() >= d["endMs"].as_u64().unwrap(),
        "{d} {e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_inner_429_carries_retry_after_in_the_item_headers() {
    let server = start().await;
    let token = token(&server, MEGAN, &["Mail.Read"]).await;
    let (status, _) = control(
        &server,
        Method::POST,
        "/_sim/faults",
        Some(json!({"method": "GET", "pathPrefix": "/v1.0/me/mailFolders/archive", "status": 429, "count": 1, "retryAfter": 7})),
    )
    .await;
    assert_eq!(status, 204);
    let (status, body) = batch(
        &server,
        &token,
        &json!({"requests": [
            {"id": "1", "method": "GET", "url": "/me/mailFolders/inbox"},
            {"id": "2", "method": "GET", "url": "/me/mailFolders/archive"}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "a throttled item does not fail the batch");
    assert_eq!(item(&body, "1")["status"], 200);
    let throttled = item(&body, "2");
    assert_eq!(throttled["status"], 429);
    assert_eq!(throttled["headers"]["Retry-After"], "7");
    assert_eq!(throttled["body"]["error"]["code"], "TooManyRequests");
    // Retrying only the failed item works.
    let (_, body) = batch(
        &server,
        &token,
        &json!({"requests": [{"id": "2", "method": "GET", "url": "/me/mailFolders/archive"}]}),
    )
    .await;
    assert_eq!(item(&body, "2")["status"], 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn at_most_four_inner_requests_per_mailbox_run_at_once() {
    let server = start().await;
    let token = token(&server, MEGAN, &["Mail.Read"]).await;
    control(
        &server,
        Method::POST,
        "/_sim/latency",
        Some(json!({"ms": 150, "pathPrefix": "/v1.0/me/messages"})),
    )
    .await;
    control(&server, Method::DELETE, "/_sim/mailbox-stats", None).await;
    let requests: Vec<Value> = (0..12)
        .map(|i| json!({"id": format!("r{i}"), "method": "GET", "url": format!("/me/messages?$top=1&$skip={}", i % 4)}))
        .collect();
    let started = Instant::now();
    let (status, body) = batch(&server, &token, &json!({ "requests": requests })).await;
    let elapsed = started.elapsed();
    assert_eq!(status, 200);
    assert!(
        body["responses"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == 200),
        "{body}"
    );
    assert!(
        elapsed.as_millis() >= 3 * 150,
        "12 requests, 4 at a time, 150 ms each: {elapsed:?}"
    );
    let (_, stats) = control(&server, Method::GET, "/_sim/mailbox-stats", None).await;
    let megan = stats["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["mailbox"] == MEGAN_ID)
        .unwrap();
    assert_eq!(megan["maxInFlight"], 4, "{stats}");
    assert_eq!(megan["throttledConcurrency"], 0);
    assert_eq!(megan["requests"], 12);
    assert_eq!(megan["userPrincipalName"], MEGAN);
}
