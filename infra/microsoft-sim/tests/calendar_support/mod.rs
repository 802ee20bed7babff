//! Shared by the calendar, Teams and subscription tests: a world with one app and a tenant whose users have
//! consented, an in-process sim with auto-approve, access tokens obtained through the real authorization-code +
//! PKCE flow, and small HTTP helpers that return status, headers and JSON.

#![allow(dead_code)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use microsoft_sim::{SimOptions, SimServer, World};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const TENANT: &str = "6f1c2b1e-4d7a-4b59-9a57-3b6f0f2d8c11";
pub const CLIENT_ID: &str = "9b3a5f0e-2c1d-4e8f-a7b6-5d4c3b2a1f00";
pub const CLIENT_SECRET: &str = "sim-secret-value";
pub const REDIRECT_URI: &str = "http://localhost:7071/auth/callback";
pub const ADELE: &str = "aa7f2e3c-1b4d-4c5e-8f6a-7b8c9d0e1f2a";
pub const ADELE_UPN: &str = "adele@contoso.com";
pub const BEN: &str = "bb1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0";
pub const BEN_UPN: &str = "ben@contoso.com";
pub const CARA: &str = "cc9d8e7f-6a5b-4c3d-9e1f-0a1b2c3d4e5f";
pub const CARA_UPN: &str = "cara@contoso.com";
pub const ONPREM_UPN: &str = "olaf@contoso.com";

/// Every delegated scope these tests use, granted tenant-wide so sign-in never stops at a consent page.
pub const ALL_SCOPES: &[&str] = &[
    "openid",
    "offline_access",
    "User.Read",
    "Mail.Read",
    "Calendars.Read",
    "Calendars.ReadWrite",
    "Team.ReadBasic.All",
    "Channel.ReadBasic.All",
    "ChannelMessage.Send",
    "Chat.Create",
    "ChatMessage.Send",
    "Chat.Read",
    "ChannelMessage.Read.All",
    "OnlineMeetings.Read",
    "OnlineMeetings.ReadWrite",
];

/// A world around `adele_events` and `teams` (Adele's, Ben's and Cara's `joinedTeams`).
pub fn world(adele_events: Value, teams: [Value; 3]) -> World {
    let [adele_teams, ben_teams, cara_teams] = teams;
    let json = json!({
        "apps": [{"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET, "redirectUris": [REDIRECT_URI], "displayName": "Connector"}],
        "tenants": [{
            "id": TENANT,
            "displayName": "Contoso",
            "verifiedDomains": ["contoso.com"],
            "userConsent": "allowed",
            "grants": [{"clientId": CLIENT_ID, "scopes": ALL_SCOPES, "principal": "allUsers"}],
            "users": [
                {"id": ADELE, "userPrincipalName": ADELE_UPN, "mail": ADELE_UPN, "displayName": "Adele Vance",
                 "events": adele_events, "joinedTeams": adele_teams},
                {"id": BEN, "userPrincipalName": BEN_UPN, "mail": BEN_UPN, "displayName": "Ben Walters", "joinedTeams": ben_teams},
                {"id": CARA, "userPrincipalName": CARA_UPN, "mail": CARA_UPN, "displayName": "Cara Coleman", "joinedTeams": cara_teams},
                {"id": "dd0e1f2a-3b4c-4d5e-8f6a-7b8c9d0e1f2b", "userPrincipalName": ONPREM_UPN, "mail": ONPREM_UPN,
                 "displayName": "Olaf On-Prem", "mailbox": "onPremises"}
            ]
        }]
    });
    World::from_json(&json.to_string()).expect("test world")
}

pub struct TestSim {
    pub server: SimServer,
    pub base: String,
    pub http: reqwest::Client,
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts Graph's error body: status, `error.code`, `error.message`, and the `innerError` ids.
    #[track_caller]
    pub fn assert_graph_error(&self, status: u16, code: &str, message: &str) {
        assert_eq!(self.status.as_u16(), status, "{:#}", self.body);
        assert_eq!(self.body["error"]["code"], code, "{:#}", self.body);
        assert_eq!(self.body["error"]["message"], message, "{:#}", self.body);
        let inner = &self.body["error"]["innerError"];
        assert!(
            inner["request-id"].is_string() && inner["date"].is_string(),
            "{:#}",
            self.body
        );
        assert_eq!(self.header("request-id"), inner["request-id"].as_str());
    }
}

pub async fn start(world: World) -> TestSim {
    let mut options = SimOptions::new(world);
    options.auto_approve = true;
    let server = SimServer::start(options).await.expect("sim starts");
    let base = server.base_url();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("http client");
    TestSim { server, base, http }
}

fn pkce() -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
        + &URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

impl TestSim {
    pub fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            format!("{}{path_or_url}", self.base)
        }
    }

    /// An access token for `upn` with `scopes` (space-separated short names), through `/authorize` (the sim
    /// auto-approves) and `/token`.
    pub async fn token(&self, upn: &str, scopes: &str) -> String {
        let graph_scopes: Vec<String> = scopes
            .split_whitespace()
            .map(|s| {
                if s.contains('.') {
                    format!("https://graph.microsoft.com/{s}")
                } else {
                    s.to_owned()
                }
            })
            .collect();
        let scope = format!("openid offline_access {}", graph_scopes.join(" "));
        let (verifier, challenge) = pkce();
        let authorize = reqwest::Url::parse_with_params(
            &format!("{}/{TENANT}/oauth2/v2.0/authorize", self.base),
            &[
                ("client_id", CLIENT_ID),
                ("response_type", "code"),
                ("redirect_uri", REDIRECT_URI),
                ("response_mode", "query"),
                ("scope", &scope),
                ("state", "s-123"),
                ("nonce", "n-456"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("login_hint", upn),
            ],
        )
        .expect("authorize url");
        let response = self.http.get(authorize).send().await.expect("authorize");
        assert!(
            response.status().is_redirection(),
            "authorize answered {}",
            response.status()
        );
        let location = response.headers()["location"]
            .to_str()
            .expect("location")
            .to_owned();
        let location = reqwest::Url::parse(&location).expect("redirect url");
        let code = location
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| panic!("no code in {location}"));
        let response = self
            .http
            .post(format!("{}/{TENANT}/oauth2/v2.0/token", self.base))
            .form(&[
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", &verifier),
                ("scope", &scope),
            ])
            .send()
            .await
            .expect("token");
        let status = response.status();
        let body: Value = response.json().await.expect("token json");
        assert_eq!(status, StatusCode::OK, "{body:#}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    async fn reply(response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, token: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request = self.http.get(self.url(path)).bearer_auth(token);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        Self::reply(request.send().await.expect("GET")).await
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        token: Option<&str>,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Self::reply(request.send().await.expect("request")).await
    }

    pub async fn post(&self, token: &str, path: &str, body: Value) -> Reply {
        self.send(reqwest::Method::POST, Some(token), path, Some(body))
            .await
    }

    /// A control-API call (no token).
    pub async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Reply {
        self.send(method, None, path, body).await
    }

    /// Follows `@odata.nextLink`s from `first` to the `@odata.deltaLink`; returns every item and that link.
    pub async fn delta_round(
        &self,
        token: &str,
        first: &str,
        headers: &[(&str, &str)],
    ) -> (Vec<Value>, String, usize) {
        let mut items = Vec::new();
        let mut url = first.to_owned();
        let mut pages = 0;
        loop {
            let reply = self.get(token, &url, headers).await;
            assert_eq!(reply.status, StatusCode::OK, "{:#}", reply.body);
            pages += 1;
            items.extend(
                reply.body["value"]
                    .as_array()
                    .expect("value")
                    .iter()
                    .cloned(),
            );
            if let Some(next) = reply.body["@odata.nextLink"].as_str() {
                assert!(reply.body.get("@odata.deltaLink").is_none());
                url = next.to_owned();
                continue;
            }
            let delta = reply.body["@odata.deltaLink"]
                .as_str()
                .expect("a page has a nextLink or a deltaLink");
            return (items, delta.to_owned(), pages);
        }
    }
}
