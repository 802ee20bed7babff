//! Outlook throttling per app + mailbox: MailboxConcurrency (more than 4 concurrent requests) and the request
//! budget per window, on mail and calendar routes and on inner batch requests, with the stats tests read.

mod mail_support;

use mail_support::*;
use reqwest::Method;
use serde_json::{Value, json};

async fn stats_for(server: &microsoft_sim::SimServer, mailbox: &str) -> Value {
    let (_, stats) = control(server, Method::GET, "/_sim/mailbox-stats", None).await;
    stats["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["mailbox"] == mailbox)
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fifth_concurrent_request_on_one_mailbox_gets_mailbox_concurrency() {
    let server = start().await;
    let token = token(&server, MEGAN, &["Mail.Read"]).await;
    control(
        &server,
        Method::POST,
        "/_sim/latency",
        Some(json!({"ms": 500, "pathPrefix": "/v1.0/me/mailFolders"})),
    )
    .await;
    let url = format!("{}/v1.0/me/mailFolders/inbox", server.base_url());
    let requests = (0..5).map(|_| {
        let (url, token) = (url.clone(), token.clone());
        async move {
            let response = client().get(&url).bearer_auth(&token).send().await.unwrap();
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, retry_after, response.json::<Value>().await.unwrap())
        }
    });
    let results = futures::future::join_all(requests).await;
    let throttled: Vec<_> = results.iter().filter(|(s, _, _)| *s == 429).collect();
    assert_eq!(throttled.len(), 1, "{results:?}");
    assert_eq!(results.iter().filter(|(s, _, _)| *s == 200).count(), 4);
    let (_, retry_after, body) = throttled[0];
    assert_eq!(
        body,
        &json!({"error": {"code": "ApplicationThrottled", "message": "Application is over its MailboxConcurrency limit."}})
    );
    assert!(
        retry_after
            .as_deref()
            .is_some_and(|r| r.parse::<u64>().is_ok()),
        "{retry_after:?}"
    );
    let stats = stats_for(&server, MEGAN_ID).await;
    assert_eq!(stats["maxInFlight"], 4, "{stats}");
    assert_eq!(stats["throttledConcurrency"], 1);
    assert_eq!(stats["inFlight"], 0);
    assert_eq!(stats["clientId"], CLIENT_ID);

    // Four at a time is fine, and the profile (not a mailbox route) is never counted.
    let requests = (0..4).map(|_| {
        let (url, token) = (url.clone(), token.clone());
        async move {
            client()
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    assert_eq!(futures::future::join_all(requests).await, vec![200; 4]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_request_budget_runs_out_with_retry_after_and_frees_with_time() {
    let server = start().await;
    let megan = token(&server, MEGAN, &["Mail.Read", "Calendars.Read"]).await;
    let adele = token(&server, ADELE, &["Mail.Read"]).await;
    let (status, config) = control(
        &server,
        Method::POST,
        "/_sim/throttle",
        Some(json!({"budget": 5, "windowSeconds": 60})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        config,
        json!({"concurrency": 4, "budget": 5, "windowSeconds": 60})
    );
    let base = server.base_url();
    for _ in 0..5 {
        let (status, _, _) = get(&format!("{base}/v1.0/me/mailFolders/inbox"), &megan, &[]).await;
        assert_eq!(status, 200);
    }
    let (status, headers, body) = get(&format!("{base}/v1.0/me/messages"), &megan, &[]).await;
    assert_eq!(status, 429);
    assert_graph_error(&body, "TooManyRequests", "Please retry again later.");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // The budget is per mailbox and covers calendar routes too.
    let (status, _, _) = get(
        &format!("{base}/v1.0/me/calendarView/delta?startDateTime=2026-01-01T00:00:00Z&endDateTime=2026-02-01T00:00:00Z"),
        &megan,
        &[],
    )
    .await;
    assert_eq!(status, 429);
    let (status, _, _) = get(
        &format!("{base}/v1.0/users/{MEGAN}/mailFolders"),
        &megan,
        &[],
    )
    .await;
    assert_eq!(status, 429, "/users/{{upn}} is the same mailbox");
    let (status, _, _) = get(&format!("{base}/v1.0/me/mailFolders"), &adele, &[]).await;
    assert_eq!(status, 200, "another mailbox has its own budget");
    let stats = stats_for(&server, MEGAN_ID).await;
    assert_eq!(stats["throttledBudget"], 3, "{stats}");
    assert_eq!(stats["requests"], 5);

    // Once the window has moved on (the sim clock), requests pass again.
    let (status, _) = control(
        &server,
        Method::POST,
        "/_sim/clock/advance",
        Some(json!({"seconds": retry_after})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, body) = get(&format!("{base}/v1.0/me/messages?$top=1"), &megan, &[]).await;
    assert_eq!(status, 200, "{body}");

    let (status, _) = control(
        &server,
        Method::POST,
        "/_sim/throttle",
        Some(json!({"budget": 0})),
    )
    .await;
    assert_eq!(status, 400);
    let (_, config) = control(&server, Method::GET, "/_sim/throttle", None).await;
    assert_eq!(config["budget"], 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn inner_batch_requests_count_against_the_budget() {
    let server = start().await;
    let token = token(&server, MEGAN, &["Mail.Read"]).await;
    control(
        &server,
        Method::POST,
        "/_sim/throttle",
        Some(json!({"budget": 3, "windowSeconds": 600})),
    )
    .await;
    let requests: Vec<Value> = (0..5)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/me/mailFolders/inbox"}))
        .collect();
    let response = client()
        .post(format!("{}/v1.0/$batch", server.base_url()))
        .bearer_auth(&token)
        .json(&json!({ "requests": requests }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let items = body["responses"].as_array().unwrap();
    assert_eq!(
        items.iter().filter(|i| i["status"] == 200).count(),
        3,
        "{body}"
    );
    let throttled: Vec<&Value> = items.iter().filter(|i| i["status"] == 429).collect();
    assert_eq!(throttled.len(), 2);
    for t in throttled {
        let retry_after: u64 = t["headers"]["Retry-After"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=600).contains(&retry_after));
        assert_eq!(t["body"]["error"]["code"], "TooManyRequests");
    }
}
