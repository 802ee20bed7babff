//! Shared by the mail, batch and throttle tests: a world with mailboxes of every kind, an in-process sim, tokens
//! from the real authorize + token flow, and small HTTP helpers.
#![allow(dead_code)]

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use microsoft_sim::{SimOptions, SimServer, World};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const TENANT: &str = "6f0b7a1c-2f4e-4d7b-9c41-0b6a3c5d7e10";
pub const CLIENT_ID: &str = "3c1e9a52-8d47-4f0e-a2b6-5e9d0c7f1a34";
pub const CLIENT_SECRET: &str = "sim-secret-value";
pub const REDIRECT_URI: &str = "http://localhost:7071/auth/callback";
pub const MEGAN_ID: &str = "0d2c4f6a-8b1e-4c3d-9a5f-7e6b8c0d2f41";
pub const MEGAN: &str = "megan@contoso.example";
pub const ADELE_ID: &str = "1e3d5f7b-9c2f-4d4e-8b6a-8f7c9d1e3a52";
pub const ADELE: &str = "adele@contoso.example";
pub const ONPREM: &str = "onprem@contoso.example";
pub const NOMAIL: &str = "nomail@contoso.example";
/// Messages generated into Adele's inbox and archive.
pub const ADELE_INBOX: usize = 2_500;
pub const ADELE_ARCHIVE: usize = 6_000;
/// Seed of the inbox generation (the archive uses SEED + 1).
pub const SEED: u64 = 7;

pub fn world() -> World {
    let world = json!({
        "apps": [{"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET, "redirectUris": [REDIRECT_URI],
                  "displayName": "Connector", "permissions": ["User.Read", "Mail.Read", "Calendars.Read"]}],
        "tenants": [{
            "id": TENANT, "displayName": "Contoso", "verifiedDomains": ["contoso.example"],
            "userConsent": "allowed",
            "grants": [{"clientId": CLIENT_ID, "principal": "allUsers",
                        "scopes": ["openid", "profile", "email", "offline_access", "User.Read", "Mail.Read",
                                   "Mail.ReadBasic", "Calendars.Read"]}],
            "users": [
                {"id": MEGAN_ID, "userPrincipalName": MEGAN, "mail": MEGAN, "displayName": "Megan Bowen",
                 "givenName": "Megan", "surname": "Bowen", "jobTitle": "Account Executive",
                 "mailbox": "exchangeOnline",
                 "mailFolders": [
                    {"wellKnownName": "inbox", "displayName": "Inbox", "messages": [
                        {"id": "AAMkWorldMessage1=", "subject": "Renewal pricing",
                         "receivedDateTime": "2026-01-10T09:00:00Z",
                         "from": {"emailAddress": {"name": "Dana Swope", "address": "dana@crm-account-1.example"}},
                         "toRecipients": [{"emailAddress": {"name": "Megan Bowen", "address": MEGAN}}],
                         "body": {"contentType": "html", "content": "<html><body><p>Hello&nbsp;Megan,</p><p>Prices &amp; terms attached.</p></body></html>"}},
                        {"subject": "Team lunch", "receivedDateTime": "2026-01-11T12:00:00Z", "isRead": true,
                         "from": {"emailAddress": {"name": "Alex Wilber", "address": "alex@contoso.example"}},
                         "body": {"contentType": "text", "content": "Pizza at noon."}},
                        {"subject": "Quarterly review", "receivedDateTime": "2026-01-12T08:30:00Z",
                         "from": {"emailAddress": {"name": "Lee Gu", "address": "lee@vendor-3.example.net"}},
                         "body": {"contentType": "text", "content": "Agenda to follow."}}
                    ]},
                    {"displayName": "Projects", "childFolders": [
                        {"displayName": "Northwind", "messages": [
                            {"subject": "Kick-off", "receivedDateTime": "2026-01-05T10:00:00Z",
                             "body": {"contentType": "text", "content": "See you Monday."}}
                        ]}
                    ]},
                    {"displayName": "Receipts"}
                 ]},
                {"id": ADELE_ID, "userPrincipalName": ADELE, "mail": ADELE, "displayName": "Adele Vance",
                 "mailbox": "exchangeOnline"},
                {"id": "2f4e6a8c-0d3b-4e5f-9c7d-9a8b0c2d4e63", "userPrincipalName": ONPREM, "mail": ONPREM,
                 "displayName": "On Prem", "mailbox": "onPremises"},
                {"id": "3a5f7b9d-1e4c-4f6a-8d8e-0b9c1d3e5f74", "userPrincipalName": NOMAIL,
                 "displayName": "No Mailbox", "mailbox": "none"}
            ],
            "generate": [
                {"user": ADELE, "folder": "inbox", "messages": ADELE_INBOX, "seed": SEED, "crmMatchRatio": 0.2},
                {"user": ADELE, "folder": "archive", "messages": ADELE_ARCHIVE, "seed": SEED + 1, "crmMatchRatio": 0.2}
            ]
        }]
    });
    World::from_json(&world.to_string()).expect("test world")
}

pub async fn start() -> SimServer {
    let mut options = SimOptions::new(world());
    options.auto_approve = true;
    SimServer::start(options).await.expect("sim starts")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// An access token for `upn` with `scopes` (short Graph names), through `/authorize` (auto-approve) and `/token`.
pub async fn token(server: &SimServer, upn: &str, scopes: &[&str]) -> String {
    let base = server.base_url();
    let verifier = URL_SAFE_NO_PAD.encode(rand_bytes());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let scope: Vec<String> = ["openid", "offline_access"]
        .into_iter()
        .map(str::to_owned)
        .chain(
            scopes
                .iter()
                .map(|s| format!("https://graph.microsoft.com/{s}")),
        )
        .collect();
    let http = client();
    let authorize = http
        .get(format!("{base}/{TENANT}/oauth2/v2.0/authorize"))
        .query(&[
            ("client_id", CLIENT_ID),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT_URI),
            ("response_mode", "query"),
            ("scope", &scope.join(" ")),
            ("state", "s1"),
            ("nonce", "n1"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("login_hint", upn),
        ])
        .send()
        .await
        .expect("authorize");
    assert_eq!(
        authorize.status(),
        302,
        "authorize: {:?}",
        authorize.text().await
    );
    let location = authorize.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let redirect = url::Url::parse(&location).expect("redirect url");
    let code = redirect
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no code in {location}"));
    let response = http
        .post(format!("{base}/{TENANT}/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", &verifier),
        ])
        .send()
        .await
        .expect("token");
    let status = response.status();
    let body: Value = response.json().await.expect("token json");
    assert_eq!(status, 200, "token: {body}");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

fn rand_bytes() -> [u8; 32] {
    let mut out = [0u8; 32];
    let seed = uuid::Uuid::new_v4();
    let seed2 = uuid::Uuid::new_v4();
    out[..16].copy_from_slice(seed.as_bytes());
    out[16..].copy_from_slice(seed2.as_bytes());
    out
}

/// A GET with optional `Prefer` values; returns status, headers and the JSON body (`Null` if not JSON).
pub async fn get(url: &str, token: &str, prefer: &[&str]) -> (u16, HeaderMap, Value) {
    let mut request = client().get(url).bearer_auth(token);
    for p in prefer {
        request = request.header("Prefer", *p);
    }
    let response = request.send().await.expect("GET");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

pub async fn control(
    server: &SimServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client().request(method, format!("{}{path}", server.base_url()));
    if let Some(b) = body {
        request = request.json(&b);
    }
    let response = request.send().await.expect("control");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Follows a delta round to its deltaLink; returns every item, the deltaLink and the number of requests.
pub async fn walk_delta(
    first_url: &str,
    token: &str,
    prefer: &[&str],
) -> (Vec<Value>, String, usize) {
    let mut url = first_url.to_owned();
    let mut items = Vec::new();
    let mut requests = 0;
    loop {
        requests += 1;
        let (status, _, body) = get(&url, token, prefer).await;
        assert_eq!(status, 200, "{url}: {body}");
        items.extend(body["value"].as_array().expect("value").iter().cloned());
        if let Some(next) = body["@odata.nextLink"].as_str() {
            assert!(body.get("@odata.deltaLink").is_none());
            url = next.to_owned();
            continue;
        }
        let delta = body["@odata.deltaLink"]
            .as_str()
            .expect("nextLink or deltaLink")
            .to_owned();
        return (items, delta, requests);
    }
}

pub fn ids(items: &[Value]) -> BTreeSet<String> {
    items
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Graph's error body: `{"error":{"code","message","innerError":{"date","request-id","client-request-id"}}}`.
pub fn assert_graph_error(body: &Value, code: &str, message: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["message"], message, "{body}");
    let inner = &body["error"]["innerError"];
    assert!(
        inner["date"].is_string()
            && inner["request-id"].is_string()
            && inner["client-request-id"].is_string(),
        "{body}"
    );
}
