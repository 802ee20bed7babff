//! Shared by the identity tests: a world with one tenant per policy branch, an in-process sim, a client that
//! never follows redirects, and assertions for Microsoft's error shapes.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use microsoft_sim::{SimOptions, SimServer, World};
use serde_json::Value;

pub const APP: &str = "11111111-2222-4333-8444-555555555555";
pub const SECRET: &str = "s3cr3t~value";
pub const REDIRECT: &str = "http://localhost:8400/callback";
pub const PUBLIC_APP: &str = "99999999-8888-4777-8666-555555555555";
pub const PUBLIC_REDIRECT: &str = "http://localhost:8400/public";

pub const CONTOSO: &str = "0d0f6f3e-1c1a-4c55-9c8e-1a2b3c4d5e6f";
pub const FABRIKAM: &str = "7e3b9c1d-2f4a-4b6c-8d0e-1f2a3b4c5d6e";
pub const NORTHWIND: &str = "3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f";
pub const TAILSPIN: &str = "4d5e6f7a-8b9c-4d0e-9f1a-2b3c4d5e6f7a";
pub const WOODGROVE: &str = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b";

pub const ADELE: &str = "8a1d2c3b-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
pub const MEGAN: &str = "5b6c7d8e-9f0a-4b1c-8d2e-3f4a5b6c7d8e";
pub const FAB_ADMIN: &str = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";
pub const JON: &str = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a";

pub fn world_json() -> String {
    serde_json::json!({
        "apps": [
            {"clientId": APP, "clientSecret": SECRET, "redirectUris": [REDIRECT], "displayName": "Connector",
             "permissions": ["User.Read", "Mail.Read", "Calendars.Read"]},
            {"clientId": PUBLIC_APP, "redirectUris": [PUBLIC_REDIRECT], "displayName": "Public tool"}
        ],
        "tenants": [
            {"id": CONTOSO, "displayName": "Contoso", "verifiedDomains": ["contoso.com"], "userConsent": "allowed",
             "users": [
                {"id": ADELE, "userPrincipalName": "adele@contoso.com", "mail": "adele@contoso.com",
                 "displayName": "Adele Vance", "roles": ["GlobalAdministrator"]},
                {"id": MEGAN, "userPrincipalName": "megan@contoso.com", "mail": null, "displayName": "Megan Bowen"}
             ]},
            {"id": FABRIKAM, "displayName": "Fabrikam", "verifiedDomains": ["fabrikam.com"], "userConsent": "adminOnly",
             "adminConsentWorkflow": true, "region": "EU",
             "users": [
                {"id": FAB_ADMIN, "userPrincipalName": "admin@fabrikam.com", "mail": "admin@fabrikam.com",
                 "displayName": "Fabrikam Admin", "roles": ["CloudApplicationAdministrator"]},
                {"id": JON, "userPrincipalName": "jon@fabrikam.com", "mail": "jon@fabrikam.com", "displayName": "Jon Lowe"},
                {"id": "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e", "userPrincipalName": "helpdesk@fabrikam.com",
                 "displayName": "Helpdesk", "roles": ["HelpdeskAdministrator"]}
             ]},
            {"id": NORTHWIND, "displayName": "Northwind", "verifiedDomains": ["northwind.example"], "userConsent": "adminOnly",
             "adminConsentWorkflow": false,
             "users": [{"id": "6f7a8b9c-0d1e-4f2a-8b3c-4d5e6f7a8b9c", "userPrincipalName": "ned@northwind.example",
                        "displayName": "Ned"}]},
            {"id": TAILSPIN, "displayName": "Tailspin", "verifiedDomains": ["tailspin.example"], "userConsent": "allowed",
             "assignmentRequired": true, "assignedUsers": ["alice@tailspin.example"],
             "users": [
                {"id": "7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d", "userPrincipalName": "alice@tailspin.example", "displayName": "Alice"},
                {"id": "8b9c0d1e-2f3a-4b4c-9d5e-6f7a8b9c0d1e", "userPrincipalName": "bob@tailspin.example", "displayName": "Bob"}
             ]},
            {"id": WOODGROVE, "displayName": "Woodgrove", "verifiedDomains": ["woodgrove.example"], "userConsent": "adminOnly",
             "grants": [{"clientId": APP, "scopes": ["User.Read", "Mail.Read"], "principal": "allUsers"}],
             "users": [{"id": "9c0d1e2f-3a4b-4c5d-8e6f-7a8b9c0d1e2f", "userPrincipalName": "wendy@woodgrove.example",
                        "mail": "wendy@woodgrove.example", "displayName": "Wendy"}]}
        ]
    })
    .to_string()
}

pub async fn start(auto_approve: bool) -> SimServer {
    start_with(auto_approve, Duration::from_secs(3599)).await
}

pub async fn start_with(auto_approve: bool, lifetime: Duration) -> SimServer {
    let world = World::from_json(&world_json()).expect("world");
    let mut options = SimOptions::new(world);
    options.auto_approve = auto_approve;
    options.access_token_lifetime = lifetime;
    SimServer::start(options).await.expect("sim starts")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The standard authorize parameters for the confidential app, overridable.
pub fn authorize_params<'a>(
    scope: &'a str,
    login_hint: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut p = vec![
        ("client_id", APP),
        ("response_type", "code"),
        ("redirect_uri", REDIRECT),
        ("scope", scope),
        ("state", "st-123"),
        ("nonce", "n-456"),
    ];
    if let Some(h) = login_hint {
        p.push(("login_hint", h));
    }
    p
}

pub async fn get(
    client: &reqwest::Client,
    url: &str,
    params: &[(&str, &str)],
) -> reqwest::Response {
    client.get(url).query(params).send().await.unwrap()
}

pub fn location(response: &reqwest::Response) -> String {
    assert_eq!(response.status(), 302, "expected a redirect");
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// The query parameters of a redirect, in order.
pub fn redirect_params(response: &reqwest::Response) -> Vec<(String, String)> {
    let url = url::Url::parse(&location(response)).unwrap();
    url.query_pairs().into_owned().collect()
}

pub fn as_map(params: &[(String, String)]) -> HashMap<String, String> {
    params.iter().cloned().collect()
}

pub fn set_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .map(str::to_owned)
}

/// `error_description` as Microsoft formats it: `AADSTSnnnn: text` then the Trace, Correlation and Timestamp lines.
pub fn assert_description(description: &str, code: u32) {
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "description {description:?}"
    );
    let lines: Vec<&str> = description.split("\r\n").collect();
    assert_eq!(lines.len(), 4, "{description:?}");
    assert!(lines[1].starts_with("Trace ID: ") && uuid::Uuid::parse_str(&lines[1][10..]).is_ok());
    assert!(
        lines[2].starts_with("Correlation ID: ") && uuid::Uuid::parse_str(&lines[2][16..]).is_ok()
    );
    assert!(lines[3].starts_with("Timestamp: "));
    assert_sts_timestamp(&lines[3][11..]);
}

pub fn assert_sts_timestamp(t: &str) {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    assert!(
        time::PrimitiveDateTime::parse(t, format).is_ok(),
        "timestamp {t:?}"
    );
}

/// An error redirect with Microsoft's parameters.
pub fn assert_redirect_error(
    params: &[(String, String)],
    error: &str,
    code: u32,
    base: &str,
) -> HashMap<String, String> {
    let map = as_map(params);
    assert_eq!(
        map.get("error").map(String::as_str),
        Some(error),
        "{params:?}"
    );
    assert_description(&map["error_description"], code);
    assert_eq!(map["error_uri"], format!("{base}/error?code={code}"));
    assert_eq!(map.get("state").map(String::as_str), Some("st-123"));
    assert!(!map.contains_key("code"));
    map
}

/// A token-endpoint error response with Microsoft's body shape and headers.
pub async fn assert_token_error(
    response: reqwest::Response,
    status: u16,
    error: &str,
    code: u32,
    base: &str,
) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["cache-control"], "no-store, no-cache");
    assert_eq!(response.headers()["pragma"], "no-cache");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert_description(body["error_description"].as_str().unwrap(), code);
    assert_eq!(body["error_codes"], serde_json::json!([code]));
    assert_sts_timestamp(body["timestamp"].as_str().unwrap());
    assert!(uuid::Uuid::parse_str(body["trace_id"].as_str().unwrap()).is_ok());
    assert!(uuid::Uuid::parse_str(body["correlation_id"].as_str().unwrap()).is_ok());
    assert_eq!(body["error_uri"], format!("{base}/error?code={code}"));
    body
}

/// Value of a hidden form field on a page.
pub fn hidden_field(html: &str, name: &str) -> String {
    let key = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&key)
        .unwrap_or_else(|| panic!("no field {name} in {html}"))
        + key.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].to_owned()
}

/// The action of the form containing `marker` (a button/field name unique to that form).
pub fn form_action(html: &str, marker: &str) -> String {
    let at = html
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in {html}"));
    let form = html[..at].rfind("<form").unwrap();
    let key = "action=\"";
    let start = html[form..].find(key).unwrap() + form + key.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].replace("&amp;", "&")
}

pub async fn post_form(
    client: &reqwest::Client,
    base: &str,
    action: &str,
    form: &[(&str, &str)],
    cookie: Option<&str>,
) -> reqwest::Response {
    let mut request = client.post(format!("{base}{action}")).form(form);
    if let Some(c) = cookie {
        request = request.header("cookie", c);
    }
    request.send().await.unwrap()
}

/// Drives the HTML sign-in page: GET authorize → sign-in page → POST login. Returns the response after sign-in and
/// the SSO cookie.
pub async fn html_sign_in(
    client: &reqwest::Client,
    base: &str,
    tenant: &str,
    params: &[(&str, &str)],
    login: &str,
) -> (reqwest::Response, Option<String>) {
    let page = get(
        client,
        &format!("{base}/{tenant}/oauth2/v2.0/authorize"),
        params,
    )
    .await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("<h1>Sign in</h1>"), "{html}");
    let ctx = hidden_field(&html, "ctx");
    let action = form_action(&html, "name=\"login\"");
    let response = post_form(
        client,
        base,
        &action,
        &[("ctx", &ctx), ("login", login)],
        None,
    )
    .await;
    let cookie = set_cookie(&response);
    (response, cookie)
}

pub async fn redeem(
    client: &reqwest::Client,
    base: &str,
    tenant: &str,
    code: &str,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("client_id", APP),
        ("client_secret", SECRET),
        ("code", code),
        ("redirect_uri", REDIRECT),
    ];
    form.extend_from_slice(extra);
    client
        .post(format!("{base}/{tenant}/oauth2/v2.0/token"))
        .form(&form)
        .send()
        .await
        .unwrap()
}

pub async fn refresh(
    client: &reqwest::Client,
    base: &str,
    tenant: &str,
    rt: &str,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("client_id", APP),
        ("client_secret", SECRET),
        ("refresh_token", rt),
    ];
    form.extend_from_slice(extra);
    client
        .post(format!("{base}/{tenant}/oauth2/v2.0/token"))
        .form(&form)
        .send()
        .await
        .unwrap()
}

/// Auto-approve sign-in of `login` for `scope`: the code from the first redirect.
pub async fn auto_code(
    client: &reqwest::Client,
    base: &str,
    tenant: &str,
    scope: &str,
    login: &str,
) -> String {
    let response = get(
        client,
        &format!("{base}/{tenant}/oauth2/v2.0/authorize"),
        &authorize_params(scope, Some(login)),
    )
    .await;
    let params = as_map(&redirect_params(&response));
    params
        .get("code")
        .unwrap_or_else(|| panic!("no code: {params:?}"))
        .clone()
}

pub async fn control(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    body: Value,
) -> reqwest::Response {
    client
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

pub async fn grants(client: &reqwest::Client, base: &str, tenant: &str) -> Value {
    client
        .get(format!("{base}/_sim/tenants/{tenant}/grants"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
