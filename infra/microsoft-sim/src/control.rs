//! The test-control API under `/_sim/` (faults, latency, request log, clock, keys, revocation, service
//! principals, consent requests, grants, the app's secret and certificates) and the Graph middleware it drives: request log → fault injection →
//! latency. Mail, calendar and Teams add their own control routes through their `control_router()`s.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{OriginalUri, Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::graph::{RequestIds, bearer_token, graph_error};
use crate::identity::jwt;
use crate::identity::scopes::canonical_scope;
use crate::state::{ConsentRequest, ConsentRequestStatus, GrantPrincipal, SharedSim};

/// Log entries kept; older ones are dropped (their `seq` keeps counting).
const REQUEST_LOG_CAPACITY: usize = 200_000;

#[derive(Debug, Default)]
pub struct ControlState {
    faults: Mutex<Vec<Fault>>,
    latency: Mutex<Option<Latency>>,
    log: Mutex<RequestLog>,
}

#[derive(Debug, Default)]
struct RequestLog {
    next_seq: u64,
    entries: VecDeque<LoggedRequest>,
}

/// One Graph request as the log shows it. Never carries a token.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoggedRequest {
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub prefer: Vec<String>,
    pub user_id: Option<String>,
    pub status: Option<u16>,
    pub start_ms: u64,
    pub end_ms: Option<u64>,
}

/// An injected fault: the next `count` requests matching `method` and `pathPrefix` get this response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    #[serde(default)]
    pub method: Option<String>,
    pub path_prefix: String,
    /// The error status answered (unused by `after: drop` and `after: delay`).
    #[serde(default)]
    pub status: u16,
    #[serde(default = "one")]
    pub count: u32,
    /// Seconds for `Retry-After` (fractional allowed, as in Microsoft's sample). Sent only when set.
    #[serde(default)]
    pub retry_after: Option<f64>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// With status 410: Graph's documented synchronization reset, a 410 whose `Location` is the
    /// request's URL with an empty `$deltatoken` (the initial query) and no body
    /// (https://learn.microsoft.com/en-us/graph/delta-query-overview, Synchronization reset; read 2026-12-05).
    #[serde(default)]
    pub sync_reset: bool,
    /// Lets the request through first (a post is stored) and then spoils its answer: `fail` answers `status`
    /// instead of the real response, `drop` sends the real status line and then cuts the connection before the
    /// body is complete, `delay` holds the real answer back for `delayMs`. Graph does each of these in the wild (a
    /// 5xx, a reset or a gateway timeout after the service acted), so a client cannot tell from the answer
    /// whether its request took effect.
    #[serde(default)]
    pub after: Option<AfterHandler>,
    /// With `after: delay`: how long the answer is held back.
    #[serde(default)]
    pub delay_ms: u64,
}

/// What a fault does to an answer the handler already produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfterHandler {
    Fail,
    Drop,
    Delay,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    pub ms: u64,
    /// Only requests under this path (e.g. `/v1.0/me/mailFolders`); every Graph request when absent.
    #[serde(default)]
    pub path_prefix: Option<String>,
}

impl ControlState {
    fn take_fault(&self, method: &Method, path: &str) -> Option<Fault> {
        let mut faults = self.faults.lock().expect("faults lock");
        let index = faults.iter().position(|f| {
            f.count > 0
                && f.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
                && starts_with_ignore_case(path, &f.path_prefix)
        })?;
        let fault = faults[index].clone();
        faults[index].count -= 1;
        if faults[index].count == 0 {
            faults.remove(index);
        }
        Some(fault)
    }

    /// Logged requests with `seq >= since`.
    pub fn requests_since(&self, since: u64) -> Vec<LoggedRequest> {
        let log = self.log.lock().expect("log lock");
        log.entries
            .iter()
            .filter(|e| e.seq >= since)
            .cloned()
            .collect()
    }

    fn log_start(&self, mut entry: LoggedRequest) -> u64 {
        let mut log = self.log.lock().expect("log lock");
        entry.seq = log.next_seq;
        log.next_seq += 1;
        if log.entries.len() == REQUEST_LOG_CAPACITY {
            log.entries.pop_front();
        }
        let seq = entry.seq;
        log.entries.push_back(entry);
        seq
    }

    fn log_end(&self, seq: u64, status: u16, end_ms: u64) {
        let mut log = self.log.lock().expect("log lock");
        let Some(first) = log.entries.front().map(|e| e.seq) else {
            return;
        };
        if let Some(entry) = seq
            .checked_sub(first)
            .and_then(|i| log.entries.get_mut(i as usize))
        {
            entry.status = Some(status);
            entry.end_ms = Some(end_ms);
        }
    }
}

fn starts_with_ignore_case(path: &str, prefix: &str) -> bool {
    path.len() >= prefix.len()
        && path.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

fn full_path(request: &Request) -> String {
    request
        .extensions()
        .get::<OriginalUri>()
        .map(|u| u.0.path().to_owned())
        .unwrap_or_else(|| request.uri().path().to_owned())
}

/// Records every Graph request (method, path, query, Prefer, user, status, timing). The user comes from the
/// token's unverified `oid` claim: the log is diagnostics, authentication happens in the handler.
pub async fn request_log_layer(
    State(sim): State<SharedSim>,
    request: Request,
    next: Next,
) -> Response {
    let query = request
        .extensions()
        .get::<OriginalUri>()
        .map(|u| u.0.query().map(str::to_owned))
        .unwrap_or_else(|| request.uri().query().map(str::to_owned));
    let entry = LoggedRequest {
        seq: 0,
        method: request.method().to_string(),
        path: full_path(&request),
        query,
        prefer: request
            .headers()
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect(),
        user_id: bearer_token(request.headers())
            .and_then(jwt::peek_claims)
            .and_then(|c| c.get("oid").and_then(Value::as_str).map(str::to_owned)),
        status: None,
        start_ms: sim.uptime_ms(),
        end_ms: None,
    };
    let seq = sim.control.log_start(entry);
    let response = next.run(request).await;
    sim.control
        .log_end(seq, response.status().as_u16(), sim.uptime_ms());
    response
}

/// Answers with an injected fault when one matches, before the handler runs.
pub async fn fault_layer(State(sim): State<SharedSim>, request: Request, next: Next) -> Response {
    let path = full_path(&request);
    match sim.control.take_fault(request.method(), &path) {
        Some(fault) if fault.sync_reset => sync_reset(sim.base_url(), &path, request.uri().query()),
        Some(fault) => match fault.after {
            None => fault_response(&fault),
            Some(after) => {
                let answer = next.run(request).await;
                spoil(answer, after, &fault).await
            }
        },
        None => next.run(request).await,
    }
}

/// The answer to a request that took effect, spoiled as `after` says.
async fn spoil(answer: Response, after: AfterHandler, fault: &Fault) -> Response {
    match after {
        AfterHandler::Fail => fault_response(fault),
        AfterHandler::Delay => {
            tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
            answer
        }
        AfterHandler::Drop => {
            // The status line and headers go out, then the body stream fails: hyper aborts the connection
            // mid-message, which the client sees as a reset while reading the answer.
            let (mut parts, _) = answer.into_parts();
            parts.headers.remove(header::CONTENT_LENGTH);
            let broken = futures::stream::iter([
                Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"{\"id\":")),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "fault: connection dropped after the request took effect",
                )),
            ]);
            Response::from_parts(parts, axum::body::Body::from_stream(broken))
        }
    }
}

/// 410 Gone with `Location`: the request's URL, its state tokens dropped, `$deltatoken=` empty.
fn sync_reset(base: &str, path: &str, query: Option<&str>) -> Response {
    let mut kept: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .filter(|(k, _)| {
                !k.eq_ignore_ascii_case("$deltatoken") && !k.eq_ignore_ascii_case("$skiptoken")
            })
            .collect();
    kept.push(("$deltatoken".to_owned(), String::new()));
    let query: Vec<String> = kept
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
            )
        })
        .collect();
    let location = format!("{base}{path}?{}", query.join("&"));
    let mut response = StatusCode::GONE.into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Delays Graph requests by the configured latency.
pub async fn latency_layer(State(sim): State<SharedSim>, request: Request, next: Next) -> Response {
    let delay = {
        let latency = sim.control.latency.lock().expect("latency lock");
        latency.as_ref().and_then(|l| {
            let applies = l
                .path_prefix
                .as_deref()
                .is_none_or(|p| starts_with_ignore_case(&full_path(&request), p));
            (applies && l.ms > 0).then(|| Duration::from_millis(l.ms))
        })
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    next.run(request).await
}

fn fault_response(fault: &Fault) -> Response {
    let status = StatusCode::from_u16(fault.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (default_code, default_message) = match fault.status {
        429 => ("TooManyRequests", "Please retry again later."),
        503 => ("serviceNotAvailable", "Service Unavailable"),
        504 => ("UnknownError", ""),
        410 => (
            "SyncStateNotFound",
            "The sync state generation is not found; generation=1;[highest=2]",
        ),
        401 => (
            "InvalidAuthenticationToken",
            "Access token has expired or is not yet valid.",
        ),
        404 => (
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        ),
        403 => (
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        ),
        _ => ("generalException", "General exception while processing."),
    };
    let code = fault.code.as_deref().unwrap_or(default_code);
    let message = fault.message.as_deref().unwrap_or(default_message);
    let mut response = if fault.status == 429 {
        // Microsoft's documented 429 body nests the status and a second message in innerError.
        let ids = RequestIds::current();
        let body = json!({"error": {"code": code, "message": message, "innerError": {
            "code": "429",
            "date": time::OffsetDateTime::now_utc()
                .format(time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"))
                .unwrap_or_default(),
            "message": "Please retry after",
            "request-id": ids.request_id,
            "status": "429",
            "client-request-id": ids.client_request_id,
        }}});
        (status, Json(body)).into_response()
    } else if fault.status == 401 {
        crate::graph::unauthorized_with_message(message)
    } else {
        graph_error(status, code, message)
    };
    if let Some(seconds) = fault.retry_after {
        let value = if seconds.fract() == 0.0 {
            format!("{}", seconds as u64)
        } else {
            format!("{seconds}")
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    response
}

// ---------------------------------------------------------------------------------------------------------------
// Routes

/// Every `/_sim/` route.
pub fn router() -> Router<SharedSim> {
    Router::new()
        .route(
            "/_sim/faults",
            post(add_fault).get(list_faults).delete(clear_faults),
        )
        .route("/_sim/latency", post(set_latency))
        .route("/_sim/requests", get(list_requests).delete(clear_requests))
        .route("/_sim/clock", get(clock))
        .route("/_sim/clock/advance", post(advance_clock))
        .route("/_sim/keys", get(list_keys))
        .route("/_sim/keys/rotate", post(rotate_keys))
        .route("/_sim/keys/withdraw", post(withdraw_key))
        .route("/_sim/keys/outage", post(keys_outage))
        .route("/_sim/revoke", post(revoke))
        .route(
            "/_sim/tenants/{tenant}/service-principal/delete",
            post(delete_service_principal),
        )
        .route("/_sim/tenants/{tenant}/grants", get(list_grants))
        .route(
            "/_sim/consent-requests",
            get(list_consent_requests).post(add_consent_request),
        )
        .route(
            "/_sim/consent-requests/{id}/approve",
            post(approve_consent_request),
        )
        .route(
            "/_sim/consent-requests/{id}/deny",
            post(deny_consent_request),
        )
        .route("/_sim/grants", post(add_grant))
        .route("/_sim/apps/{client_id}/secret", post(rotate_secret))
        .route(
            "/_sim/apps/{client_id}/certificates",
            post(add_certificate).delete(clear_certificates),
        )
        .route("/_sim/token-scope", post(set_token_scope))
        // ---- hook (S2, S3): `.merge(crate::graph::<area>::control_router())` lines go here ----
        .merge(crate::graph::calendar::control_router())
        .merge(crate::graph::teams::control_router())
        .merge(crate::graph::mail::control_router())
        .merge(crate::graph::online_meetings::control_router())
}

fn bad_request(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": message.into()})),
    )
        .into_response()
}

fn not_found(message: impl Into<String>) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": message.into()})),
    )
        .into_response()
}

/// `{"mode": "echo" | "omit"}`: whether token responses carry `scope` (optional per
/// Microsoft's auth-code flow doc).
#[derive(Debug, Deserialize)]
struct TokenScopeMode {
    mode: String,
}

async fn set_token_scope(State(sim): State<SharedSim>, Json(m): Json<TokenScopeMode>) -> Response {
    match m.mode.as_str() {
        "echo" => sim.identity.set_omit_token_scope(false),
        "omit" => sim.identity.set_omit_token_scope(true),
        _ => return bad_request("mode must be \"echo\" or \"omit\""),
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn add_fault(State(sim): State<SharedSim>, Json(fault): Json<Fault>) -> Response {
    let keeps_answer = matches!(fault.after, Some(AfterHandler::Drop | AfterHandler::Delay));
    if !keeps_answer && (StatusCode::from_u16(fault.status).is_err() || fault.status < 400) {
        return bad_request("status must be an HTTP error status");
    }
    if fault.after == Some(AfterHandler::Delay) && fault.delay_ms == 0 {
        return bad_request("after: delay needs delayMs");
    }
    if !fault.path_prefix.starts_with('/') {
        return bad_request("pathPrefix must start with / (e.g. /v1.0/me/mailFolders)");
    }
    sim.control.faults.lock().expect("faults lock").push(fault);
    StatusCode::NO_CONTENT.into_response()
}

async fn list_faults(State(sim): State<SharedSim>) -> Json<Vec<Fault>> {
    Json(sim.control.faults.lock().expect("faults lock").clone())
}

async fn clear_faults(State(sim): State<SharedSim>) -> StatusCode {
    sim.control.faults.lock().expect("faults lock").clear();
    StatusCode::NO_CONTENT
}

async fn set_latency(State(sim): State<SharedSim>, Json(latency): Json<Latency>) -> StatusCode {
    *sim.control.latency.lock().expect("latency lock") = (latency.ms > 0).then_some(latency);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct Since {
    #[serde(default)]
    since: u64,
}

async fn list_requests(State(sim): State<SharedSim>, Query(q): Query<Since>) -> Json<Value> {
    Json(json!({ "value": sim.control.requests_since(q.since) }))
}

async fn clear_requests(State(sim): State<SharedSim>) -> StatusCode {
    sim.control.log.lock().expect("log lock").entries.clear();
    StatusCode::NO_CONTENT
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

async fn clock(State(sim): State<SharedSim>) -> Json<Value> {
    Json(json!({ "now": rfc3339(sim.now()) }))
}

#[derive(Deserialize)]
struct Advance {
    seconds: i64,
}

async fn advance_clock(State(sim): State<SharedSim>, Json(a): Json<Advance>) -> Response {
    if a.seconds < 0 {
        return bad_request("the clock only moves forward");
    }
    sim.advance_clock(time::Duration::seconds(a.seconds));
    Json(json!({ "now": rfc3339(sim.now()) })).into_response()
}

async fn rotate_keys(State(sim): State<SharedSim>) -> Response {
    let mut keys = sim.identity.keys_mut();
    match keys.rotate() {
        Ok(key) => Json(json!({ "kid": key.kid() })).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn list_keys(State(sim): State<SharedSim>) -> Json<Value> {
    let keys = sim.identity.keys();
    let kids = keys.kids();
    Json(json!({ "signing": kids.first(), "published": kids, "fetches": keys.fetches }))
}

#[derive(Deserialize)]
struct Outage {
    requests: u32,
}

/// The next `requests` JWKS requests answer 503.
async fn keys_outage(State(sim): State<SharedSim>, Json(o): Json<Outage>) -> Json<Value> {
    sim.identity.keys_mut().outage = o.requests;
    Json(json!({ "outage": o.requests }))
}

#[derive(Deserialize)]
struct Withdraw {
    kid: String,
}

/// Withdraws a published key that no longer signs: the JWKS stops listing it.
async fn withdraw_key(State(sim): State<SharedSim>, Json(w): Json<Withdraw>) -> Response {
    let mut keys = sim.identity.keys_mut();
    match keys.withdraw(&w.kid) {
        Ok(()) => Json(json!({ "published": keys.kids() })).into_response(),
        Err(crate::identity::keys::WithdrawError::SigningKey) => (
            StatusCode::CONFLICT,
            Json(json!({"error": "the signing key cannot be withdrawn: rotate first"})),
        )
            .into_response(),
        Err(crate::identity::keys::WithdrawError::Unknown) => {
            not_found(format!("no published key {}", w.kid))
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Revoke {
    tenant_id: String,
    #[serde(default)]
    user_id: Option<String>,
    /// Only this app's grants; every app's when absent.
    #[serde(default)]
    client_id: Option<String>,
    /// Remove the delegated grants (refresh then fails with AADSTS65001). Default true.
    #[serde(default = "yes")]
    grants: bool,
    /// Revoke sign-in sessions: refresh tokens issued before now die (AADSTS50173). Default true.
    #[serde(default = "yes")]
    sessions: bool,
}

fn yes() -> bool {
    true
}

async fn revoke(State(sim): State<SharedSim>, Json(r): Json<Revoke>) -> Response {
    let now = sim.now();
    let mut dir = sim.directory_mut();
    let Some(tenant) = dir.tenant_mut(&r.tenant_id) else {
        return not_found("unknown tenant");
    };
    let user_id = match &r.user_id {
        Some(u) => match tenant.user(u) {
            Some(user) => Some(user.info.id.clone()),
            None => return not_found("unknown user"),
        },
        None => None,
    };
    let app_matches = |client: &str| {
        r.client_id
            .as_deref()
            .is_none_or(|c| c.eq_ignore_ascii_case(client))
    };
    let mut removed = 0usize;
    if r.grants {
        let before = tenant.grants.len();
        tenant.grants.retain(|g| {
            let principal_matches = match (&user_id, &g.principal) {
                (None, _) => true,
                (Some(u), GrantPrincipal::User(id)) => id == u,
                (Some(_), GrantPrincipal::AllUsers) => false,
            };
            !(principal_matches && app_matches(&g.client_id))
        });
        removed = before - tenant.grants.len();
    }
    if r.sessions {
        for user in tenant.users.iter_mut() {
            if user_id.as_deref().is_none_or(|u| u == user.info.id) {
                user.sessions_revoked_at = Some(now);
            }
        }
    }
    Json(json!({ "grantsRemoved": removed })).into_response()
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SpDelete {
    #[serde(default)]
    client_id: Option<String>,
}

async fn delete_service_principal(
    State(sim): State<SharedSim>,
    Path(tenant_id): Path<String>,
    body: Option<Json<SpDelete>>,
) -> Response {
    let client_id = body.and_then(|b| b.0.client_id);
    let mut dir = sim.directory_mut();
    let client_id = match client_id {
        Some(c) => c,
        None if dir.apps.len() == 1 => dir.apps[0].client_id.clone(),
        None => return bad_request("clientId is required when the world has several apps"),
    };
    let Some(tenant) = dir.tenant_mut(&tenant_id) else {
        return not_found("unknown tenant");
    };
    if !tenant
        .service_principals
        .remove(&client_id.to_ascii_lowercase())
    {
        return not_found("the app has no service principal in this tenant");
    }
    // Deleting the enterprise application deletes its permission grants with it.
    tenant
        .grants
        .retain(|g| !g.client_id.eq_ignore_ascii_case(&client_id));
    StatusCode::NO_CONTENT.into_response()
}

async fn list_grants(State(sim): State<SharedSim>, Path(tenant_id): Path<String>) -> Response {
    let dir = sim.directory();
    let Some(tenant) = dir.tenant(&tenant_id) else {
        return not_found("unknown tenant");
    };
    let grants: Vec<Value> = tenant
        .grants
        .iter()
        .map(|g| {
            json!({
                "clientId": g.client_id,
                "scopes": g.scopes,
                "principal": match &g.principal { GrantPrincipal::AllUsers => "allUsers".to_owned(), GrantPrincipal::User(u) => u.clone() },
            })
        })
        .collect();
    Json(json!({ "servicePrincipals": tenant.service_principals, "grants": grants }))
        .into_response()
}

async fn list_consent_requests(State(sim): State<SharedSim>) -> Json<Value> {
    Json(json!({ "value": sim.directory().consent_requests }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewConsentRequest {
    tenant_id: String,
    client_id: String,
    /// User id or UPN of the requester.
    user: String,
    scopes: Vec<String>,
    #[serde(default)]
    justification: String,
}

/// Files a workflow request as if the user had clicked "Request approval" (for tests that start from a pending
/// request).
async fn add_consent_request(
    State(sim): State<SharedSim>,
    Json(r): Json<NewConsentRequest>,
) -> Response {
    let now = sim.now();
    let mut dir = sim.directory_mut();
    if dir.app(&r.client_id).is_none() {
        return not_found("unknown app");
    }
    let Some(tenant) = dir.tenant(&r.tenant_id) else {
        return not_found("unknown tenant");
    };
    let Some(user) = tenant.user(&r.user) else {
        return not_found("unknown user");
    };
    let request = ConsentRequest {
        id: uuid::Uuid::new_v4().to_string(),
        tenant_id: tenant.id.clone(),
        client_id: r.client_id.clone(),
        user_id: user.info.id.clone(),
        scopes: r.scopes.iter().map(|s| canonical_scope(s)).collect(),
        justification: r.justification,
        status: ConsentRequestStatus::Pending,
        created_date_time: now,
    };
    dir.consent_requests.push(request.clone());
    (StatusCode::CREATED, Json(json!(request))).into_response()
}

async fn approve_consent_request(State(sim): State<SharedSim>, Path(id): Path<String>) -> Response {
    let now = sim.now();
    let mut dir = sim.directory_mut();
    let Some(request) = dir.consent_requests.iter_mut().find(|r| r.id == id) else {
        return not_found("unknown consent request");
    };
    if request.status != ConsentRequestStatus::Pending {
        return bad_request("the request is no longer pending");
    }
    request.status = ConsentRequestStatus::Approved;
    let request = request.clone();
    let Some(tenant) = dir.tenant_mut(&request.tenant_id) else {
        return not_found("unknown tenant");
    };
    // An approval in the admin consent workflow is an admin consent: tenant-wide.
    tenant.add_grant(
        &request.client_id,
        GrantPrincipal::AllUsers,
        &request.scopes,
        now,
    );
    Json(json!(request)).into_response()
}

async fn deny_consent_request(State(sim): State<SharedSim>, Path(id): Path<String>) -> Response {
    let mut dir = sim.directory_mut();
    let Some(request) = dir.consent_requests.iter_mut().find(|r| r.id == id) else {
        return not_found("unknown consent request");
    };
    if request.status != ConsentRequestStatus::Pending {
        return bad_request("the request is no longer pending");
    }
    request.status = ConsentRequestStatus::Denied;
    Json(json!(request)).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddGrant {
    tenant_id: String,
    client_id: String,
    scopes: Vec<String>,
    /// `allUsers` or a user id / UPN.
    principal: String,
}

async fn add_grant(State(sim): State<SharedSim>, Json(g): Json<AddGrant>) -> Response {
    let now = sim.now();
    let mut dir = sim.directory_mut();
    if dir.app(&g.client_id).is_none() {
        return not_found("unknown app");
    }
    let Some(tenant) = dir.tenant_mut(&g.tenant_id) else {
        return not_found("unknown tenant");
    };
    let principal = if g.principal == "allUsers" {
        GrantPrincipal::AllUsers
    } else {
        match tenant.user(&g.principal) {
            Some(u) => GrantPrincipal::User(u.info.id.clone()),
            None => return not_found("unknown user"),
        }
    };
    let scopes: BTreeSet<String> = g.scopes.iter().map(|s| canonical_scope(s)).collect();
    tenant.add_grant(&g.client_id, principal, &scopes, now);
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /_sim/apps/{clientId}/secret`: the operator rotates the app's client secret. `secret` becomes the only valid
/// one; the previous one is `expired` (AADSTS7000222 when presented, the default) or `removed` (AADSTS7000215).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RotateSecret {
    secret: String,
    #[serde(default = "expired")]
    previous: String,
}

fn expired() -> String {
    "expired".into()
}

async fn rotate_secret(
    State(sim): State<SharedSim>,
    Path(client_id): Path<String>,
    Json(r): Json<RotateSecret>,
) -> Response {
    if r.secret.is_empty() {
        return bad_request("secret must not be empty");
    }
    let mut dir = sim.directory_mut();
    let Some(app) = dir.app_mut(&client_id) else {
        return not_found("unknown app");
    };
    let previous = app.client_secret.replace(r.secret);
    match (r.previous.as_str(), previous) {
        ("expired", Some(old)) => app.expired_secrets.push(old),
        ("expired" | "removed", _) => {}
        _ => return bad_request("previous must be expired or removed"),
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /_sim/apps/{clientId}/certificates`: registers a certificate (its public key and thumbprints) on the app.
async fn add_certificate(
    State(sim): State<SharedSim>,
    Path(client_id): Path<String>,
    Json(key): Json<crate::world::KeyCredential>,
) -> Response {
    use base64::Engine as _;
    if key.thumbprint_sha256.is_none() && key.thumbprint_sha1.is_none() {
        return bad_request("give thumbprintSha256 or thumbprintSha1");
    }
    if base64::engine::general_purpose::STANDARD
        .decode(&key.public_key)
        .is_err()
    {
        return bad_request("publicKey must be base64 DER SubjectPublicKeyInfo");
    }
    let mut dir = sim.directory_mut();
    let Some(app) = dir.app_mut(&client_id) else {
        return not_found("unknown app");
    };
    app.key_credentials.push(key);
    StatusCode::NO_CONTENT.into_response()
}

/// `DELETE /_sim/apps/{clientId}/certificates`: removes every certificate of the app.
async fn clear_certificates(
    State(sim): State<SharedSim>,
    Path(client_id): Path<String>,
) -> Response {
    let mut dir = sim.directory_mut();
    let Some(app) = dir.app_mut(&client_id) else {
        return not_found("unknown app");
    };
    app.key_credentials.clear();
    StatusCode::NO_CONTENT.into_response()
}
