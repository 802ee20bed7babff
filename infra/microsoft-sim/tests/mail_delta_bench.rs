//! Benchmark (ignored by default): the sim serves a generated 100,000-message folder delta, on one core, at
//! 20,000 messages/s or more, so it is never the bottleneck of our own benchmarks. Server and client share one
//! current-thread runtime, so the figure includes the client's own HTTP and JSON work (a conservative number).
//!
//! Run: `cargo test -p microsoft-sim --release --test mail_delta_bench -- --ignored --nocapture`
//! (the 20,000/s floor is asserted in release builds only; debug builds just print the figure).

use std::time::Instant;

use microsoft_sim::{SimOptions, SimServer, World};
use serde_json::{Value, json};

const TENANT: &str = "7a1c2f4e-4d7b-4c41-9b6a-3c5d7e106f0b";
const CLIENT: &str = "9d47c1e3-4f0e-4a2b-8e9d-0c7f1a343c1e";
const USER: &str = "bench@fabrikam.example";
const MESSAGES: usize = 100_000;
/// The properties a mail sync asks for: participants, dates and ids, no body.
const SELECT: &str = "subject,from,sender,toRecipients,ccRecipients,bccRecipients,replyTo,receivedDateTime,\
                      internetMessageId,conversationId,isDraft";

fn world() -> World {
    let world = json!({
        "apps": [{"clientId": CLIENT, "clientSecret": "s", "redirectUris": ["http://localhost/cb"], "displayName": "Bench"}],
        "tenants": [{
            "id": TENANT, "displayName": "Fabrikam", "verifiedDomains": ["fabrikam.example"],
            "grants": [{"clientId": CLIENT, "principal": "allUsers", "scopes": ["openid", "offline_access", "Mail.Read"]}],
            "users": [{"id": "5b7d9f1e-2c4a-4e6f-8a0c-1e3f5a7c9e02", "userPrincipalName": USER, "mail": USER,
                       "displayName": "Bench User", "mailbox": "exchangeOnline"}],
            "generate": [{"user": USER, "folder": "inbox", "messages": MESSAGES, "seed": 42, "crmMatchRatio": 0.2}]
        }]
    });
    World::from_json(&world.to_string()).expect("bench world")
}

async fn token(server: &SimServer) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = server.base_url();
    let verifier = "bench-verifier-bench-verifier-bench-verifier-0123";
    let authorize = http
        .get(format!("{base}/{TENANT}/oauth2/v2.0/authorize"))
        .query(&[
            ("client_id", CLIENT),
            ("response_type", "code"),
            ("redirect_uri", "http://localhost/cb"),
            (
                "scope",
                "openid offline_access https://graph.microsoft.com/Mail.Read",
            ),
            ("state", "s"),
            ("code_challenge", verifier),
            ("code_challenge_method", "plain"),
            ("login_hint", USER),
        ])
        .send()
        .await
        .unwrap();
    let location = authorize.headers()["location"].to_str().unwrap().to_owned();
    let code = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let body: Value = http
        .post(format!("{base}/{TENANT}/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT),
            ("client_secret", "s"),
            ("code", &code),
            ("redirect_uri", "http://localhost/cb"),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["access_token"]
        .as_str()
        .expect("access token")
        .to_owned()
}

/// Walks the inbox delta to its deltaLink; returns (messages, requests, seconds).
async fn walk(
    server: &SimServer,
    token: &str,
    query: &str,
    page: usize,
    gzip: bool,
) -> (usize, usize, f64) {
    let http = if gzip {
        reqwest::Client::new()
    } else {
        reqwest::Client::builder().no_gzip().build().unwrap()
    };
    let mut url = format!(
        "{}/v1.0/me/mailFolders/inbox/messages/delta{query}",
        server.base_url()
    );
    let (mut messages, mut requests) = (0, 0);
    let started = Instant::now();
    loop {
        let body: Value = http
            .get(&url)
            .bearer_auth(token)
            .header("Prefer", format!("odata.maxpagesize={page}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        requests += 1;
        messages += body["value"].as_array().expect("value").len();
        match body["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
    }
    (messages, requests, started.elapsed().as_secs_f64())
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "benchmark: run with --release --ignored --nocapture"]
async fn delta_of_100k_messages_on_one_core() {
    let started = Instant::now();
    let mut options = SimOptions::new(world());
    options.auto_approve = true;
    let server = SimServer::start(options).await.unwrap();
    println!(
        "world with {MESSAGES} generated messages loaded in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let token = token(&server).await;
    let mut sync_rate = 0.0;
    for (label, query, page, gzip) in [
        (
            "$select (sync fields), page 1000, gzip",
            format!("?$select={SELECT}"),
            1000,
            true,
        ),
        (
            "$select (sync fields), page 1000, identity",
            format!("?$select={SELECT}"),
            1000,
            false,
        ),
        (
            "$select (sync fields), page 100, gzip",
            format!("?$select={SELECT}"),
            100,
            true,
        ),
        (
            "all default properties (with bodies), page 1000, gzip",
            String::new(),
            1000,
            true,
        ),
    ] {
        let (messages, requests, secs) = walk(&server, &token, &query, page, gzip).await;
        assert_eq!(messages, MESSAGES, "{label}");
        let rate = messages as f64 / secs;
        println!(
            "{label}: {messages} messages in {requests} requests, {secs:.2} s = {rate:.0} messages/s"
        );
        if sync_rate == 0.0 {
            sync_rate = rate;
        }
    }
    if !cfg!(debug_assertions) {
        assert!(
            sync_rate >= 20_000.0,
            "{sync_rate:.0} messages/s is below the 20,000/s floor"
        );
    }
}
