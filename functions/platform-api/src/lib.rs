//! `platform-api`: the platform's HTTP API under `/api/v1` (API Gateway HTTP API, payload
//! 2.0, every route `AWS_IAM`-authorized). The platform reads a tenant's consent and
//! switches them, lists connections and switches users, disconnects a user, reads the sync
//! status, and lists, reads, deletes and exports activities. The contract is
//! `docs/api/openapi.yaml`; every error is `{"error": {"code", "message"}}` with a fixed
//! message that never repeats the input.
//!
//! [`App::handle`] refuses an event without an IAM principal before anything else (API
//! Gateway does not invoke an `AWS_IAM` route for an unsigned request, so such an event
//! is a misconfigured route or a direct invocation), then routes and calls the
//! connector-core ports: the same stores, and the same `offboard::Stores::disconnect_user`,
//! that `connectorctl`, fan-out and the workers use, so what is written here is what the
//! next fan-out and run read.

pub mod lambda;
mod query;
mod views;

use std::sync::Arc;
use std::time::Duration;

use connector_core::domain::{
    ActivityContent, ActivityId, Connection, ConnectionStatus, MailDetail, SyncKey, SyncKind,
    TenantId, TenantSwitches, UserId, UserKey, UserSwitches,
};
use connector_core::offboard::{DisconnectError, Stores};
use connector_core::ports::{
    ActivityStore, BodyStore, ConnectionStore, ConsentMeetingStore, PageToken, ShareTargetStore,
    StoreError, SyncStateStore, TenantStore, TokenVault,
};
use http::{Method, StatusCode, header};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt as _, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{error, info, warn};

use crate::query::{ActivityQuery, parse_query};
use crate::views::{activity_view, connection_view, consent_meeting_view, sync_view, tenant_view};

/// The routes' common prefix.
pub const PREFIX: &str = "/api/v1";
/// Largest page of `GET .../activities`.
pub const MAX_LIMIT: u32 = 200;
pub const DEFAULT_LIMIT: u32 = 50;
/// Reads of the activities table one page may make (the filter on dates may leave a read
/// empty): bounds a request's time whatever the range.
const MAX_READS: u32 = 10;
/// An export response stops after the line that passes this many bytes and hands a
/// `nextPageToken`: Lambda returns at most 6 MB to a synchronous invocation, the body
/// included (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html,
/// read 2026-12-06).
pub const EXPORT_BUDGET_BYTES: usize = 4 * 1024 * 1024;
/// Activities read per page of an export.
const EXPORT_PAGE: u32 = 25;
/// Largest request body accepted (a switches patch is a few dozen bytes).
const MAX_BODY_BYTES: usize = 16 * 1024;
/// The response header that carries an export's continuation.
pub const NEXT_PAGE_HEADER: &str = "x-next-page-token";

/// Time, injectable for tests (the one clock of the connector).
pub use connector_core::clock::{Clock, SystemClock};

/// Everything the API talks to.
#[derive(Clone)]
pub struct Ports {
    pub tenants: Arc<dyn TenantStore>,
    pub connections: Arc<dyn ConnectionStore>,
    pub sync: Arc<dyn SyncStateStore>,
    /// With the body store attached: `get_activity` returns the whole message.
    pub activities: Arc<dyn ActivityStore>,
    pub bodies: Arc<dyn BodyStore>,
    pub targets: Arc<dyn ShareTargetStore>,
    pub vault: Arc<dyn TokenVault>,
    pub clock: Arc<dyn Clock>,
    /// How long a disconnection waits for a running sync to release its lease.
    pub lease_wait: Duration,
    /// Disconnecting deletes the user's change-notification subscriptions (at Graph, with
    /// their token, before the token is deleted).
    pub subscriptions: Option<Arc<dyn connector_core::offboard::SubscriptionCanceller>>,
    /// Explicit Consent Mode's meetings and `PUBLIC_BASE_URL` (their links are on it);
    /// `None`: the routes answer 404 `consent_meetings_unavailable`.
    pub consent_meetings: Option<(Arc<dyn ConsentMeetingStore>, String)>,
}

pub struct App {
    ports: Ports,
}

/// An error answer: status, stable code, fixed message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: &'static str,
    allow: Option<&'static str>,
}

impl ApiError {
    pub const fn new(status: StatusCode, code: &'static str, message: &'static str) -> Self {
        Self {
            status,
            code,
            message,
            allow: None,
        }
    }

    fn bad_request(code: &'static str, message: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the request could not be completed; retry later",
        )
    }

    fn not_found(code: &'static str, message: &'static str) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn into_response(self) -> Response<Body> {
        let mut response = json_response(
            self.status,
            &json!({"error": {"code": self.code, "message": self.message}}),
        );
        if let Some(allow) = self.allow {
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allow));
        }
        response
    }
}

type Answer = Result<Response<Body>, ApiError>;

/// Logs a store failure (its text names operations and resources, never content) and
/// answers 500 without it.
fn store_failure(what: &'static str) -> impl FnOnce(StoreError) -> ApiError {
    move |source| match source {
        StoreError::InvalidPageToken => ApiError::bad_request(
            "invalid_page_token",
            "pageToken is not a token this API issued for this user",
        ),
        other => {
            error!(error = %other, what, "store failure");
            ApiError::internal()
        }
    }
}

pub fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::Text(value.to_string()))
        .expect("static response parts")
}

fn ok(value: &Value) -> Answer {
    Ok(json_response(StatusCode::OK, value))
}

/// The caller API Gateway authenticated: with `AWS_IAM` authorization an HTTP API puts the
/// signer in `requestContext.authorizer.iam` of the payload 2.0 event (accessKey,
/// accountId, callerId, userArn, userId, ...): "Working with AWS Lambda proxy
/// integrations for HTTP APIs", payload format 2.0
/// (https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html,
/// read 2026-12-06) and "Control access to HTTP APIs with IAM authorization"
/// (https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-access-control-iam.html,
/// read 2026-12-06). Only the principal's ARN is used (logs); nothing else is trusted.
pub fn iam_principal(request: &Request) -> Option<String> {
    let Some(RequestContext::ApiGatewayV2(context)) = request.request_context_ref() else {
        return None;
    };
    let iam = context.authorizer.as_ref()?.iam.as_ref()?;
    iam.user_arn
        .as_deref()
        .map(str::trim)
        .filter(|arn| arn.starts_with("arn:"))
        .map(str::to_owned)
}

/// Decodes one percent-encoded path segment (activity ids hold `#`, sent as `%23`).
fn segment(raw: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::bad_request("invalid_path", "the path is not valid UTF-8"))
}

fn tenant_id(raw: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(&segment(raw)?).map_err(|_| {
        ApiError::bad_request("invalid_tenant_id", "tenantId must be a GUID (Entra tid)")
    })
}

fn user_id(raw: &str) -> Result<UserId, ApiError> {
    UserId::parse(&segment(raw)?)
        .map_err(|_| ApiError::bad_request("invalid_user_id", "userId must be a GUID (Entra oid)"))
}

fn activity_id(raw: &str) -> Result<ActivityId, ApiError> {
    ActivityId::parse(&segment(raw)?).map_err(|_| {
        ApiError::bad_request(
            "invalid_activity_id",
            "activityId must be mail#<id> or event#<id>",
        )
    })
}

fn method_not_allowed(allow: &'static str) -> ApiError {
    let mut error = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this method is not allowed on this path",
    );
    error.allow = Some(allow);
    error
}

/// A switches patch: any subset of the switches, booleans only, nothing else.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TenantSwitchesPatch {
    mail_sync: Option<bool>,
    calendar_sync: Option<bool>,
    teams_sharing: Option<bool>,
    explicit_consent: Option<bool>,
    change_notifications: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UserSwitchesPatch {
    mail_sync: Option<bool>,
    calendar_sync: Option<bool>,
    internal_meetings: Option<bool>,
}

/// Reads a JSON object body into `T`; 400 for anything else, 422 for an empty patch.
fn patch_body<T: serde::de::DeserializeOwned>(request: &Request) -> Result<T, ApiError> {
    let bytes: &[u8] = request.body().as_ref();
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body is larger than 16 KiB",
        ));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|_| {
        ApiError::bad_request("invalid_json", "the request body is not a JSON document")
    })?;
    match &value {
        Value::Object(map) if map.is_empty() => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "empty_patch",
                "the patch names no switch",
            ));
        }
        Value::Object(_) => {}
        _ => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "the request body must be a JSON object",
            ));
        }
    }
    serde_json::from_value(value).map_err(|_| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_switches",
            "the patch may only set known switches, each to true or false",
        )
    })
}

impl App {
    pub fn new(ports: Ports) -> Self {
        Self { ports }
    }

    /// Serves one request; never fails (errors are answers).
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let Some(principal) = iam_principal(&request) else {
            warn!("request without an IAM principal refused");
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "missing_iam_principal",
                "this API requires AWS_IAM (SigV4) authorization",
            )
            .into_response();
        };
        let method = request.method().clone();
        info!(%method, principal = %principal, "platform API request");
        match self.route(&request).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        }
    }

    async fn route(&self, request: &Request) -> Answer {
        let path = request.uri().path().to_owned();
        let Some(rest) = path.strip_prefix(PREFIX) else {
            return Err(ApiError::not_found("not_found", "no such route"));
        };
        let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
        let method = request.method();
        let query = || parse_query(request.uri().query().unwrap_or(""));
        match parts.as_slice() {
            ["tenants", t] => match *method {
                Method::GET => self.get_tenant(&tenant_id(t)?).await,
                _ => Err(method_not_allowed("GET")),
            },
            ["tenants", t, "switches"] => match *method {
                Method::PATCH => {
                    let tenant = tenant_id(t)?;
                    self.patch_tenant_switches(&tenant, patch_body(request)?)
                        .await
                }
                _ => Err(method_not_allowed("PATCH")),
            },
            ["tenants", t, "connections"] => match *method {
                Method::GET => self.list_connections(&tenant_id(t)?).await,
                _ => Err(method_not_allowed("GET")),
            },
            ["tenants", t, "connections", u, tail @ ..] => {
                let key = UserKey::new(tenant_id(t)?, user_id(u)?);
                match (tail, method) {
                    ([], &Method::GET) => self.get_connection(&key).await,
                    ([], _) => Err(method_not_allowed("GET")),
                    (["switches"], &Method::PATCH) => {
                        self.patch_user_switches(&key, patch_body(request)?).await
                    }
                    (["switches"], _) => Err(method_not_allowed("PATCH")),
                    (["disconnect"], &Method::POST) => self.disconnect(&key).await,
                    (["disconnect"], _) => Err(method_not_allowed("POST")),
                    (["sync"], &Method::GET) => self.sync_status(&key).await,
                    (["sync"], _) => Err(method_not_allowed("GET")),
                    (["activities"], &Method::GET) => {
                        self.list_activities(&key, ActivityQuery::list(&query()?)?)
                            .await
                    }
                    (["activities"], _) => Err(method_not_allowed("GET")),
                    (["activities", a], &Method::GET) => {
                        self.get_activity(&key, &activity_id(a)?).await
                    }
                    (["activities", a], &Method::DELETE) => {
                        self.delete_activity(&key, &activity_id(a)?).await
                    }
                    (["activities", _], _) => Err(method_not_allowed("GET, DELETE")),
                    (["export"], &Method::GET) => {
                        self.export(&key, ActivityQuery::export(&query()?)?).await
                    }
                    (["export"], _) => Err(method_not_allowed("GET")),
                    (["consent-meetings"], &Method::GET) => self.consent_meetings(&key, None).await,
                    (["consent-meetings"], _) => Err(method_not_allowed("GET")),
                    (["consent-meetings", e], &Method::GET) => {
                        self.consent_meetings(&key, Some(e)).await
                    }
                    (["consent-meetings", _], _) => Err(method_not_allowed("GET")),
                    _ => Err(ApiError::not_found("not_found", "no such route")),
                }
            }
            _ => Err(ApiError::not_found("not_found", "no such route")),
        }
    }

    async fn tenant(&self, id: &TenantId) -> Result<connector_core::domain::Tenant, ApiError> {
        self.ports
            .tenants
            .get_tenant(id)
            .await
            .map_err(store_failure("reading the tenant"))?
            .ok_or_else(|| ApiError::not_found("tenant_not_found", "no such tenant"))
    }

    async fn connection(&self, key: &UserKey) -> Result<Connection, ApiError> {
        self.ports
            .connections
            .get_connection(key)
            .await
            .map_err(store_failure("reading the connection"))?
            .ok_or_else(|| ApiError::not_found("connection_not_found", "no such connection"))
    }

    async fn get_tenant(&self, id: &TenantId) -> Answer {
        ok(&tenant_view(&self.tenant(id).await?))
    }

    async fn patch_tenant_switches(&self, id: &TenantId, patch: TenantSwitchesPatch) -> Answer {
        let tenant = self.tenant(id).await?;
        let old = tenant.switches;
        let switches = TenantSwitches {
            mail_sync: patch.mail_sync.unwrap_or(old.mail_sync),
            calendar_sync: patch.calendar_sync.unwrap_or(old.calendar_sync),
            teams_sharing: patch.teams_sharing.unwrap_or(old.teams_sharing),
            explicit_consent: patch.explicit_consent.unwrap_or(old.explicit_consent),
            change_notifications: patch
                .change_notifications
                .unwrap_or(old.change_notifications),
        };
        match self
            .ports
            .tenants
            .set_switches(id, switches, self.ports.clock.now())
            .await
        {
            Ok(()) => {}
            // Offboarded between the read and the write.
            Err(StoreError::NotFound { .. }) => {
                return Err(ApiError::not_found("tenant_not_found", "no such tenant"));
            }
            Err(other) => return Err(store_failure("setting the tenant's switches")(other)),
        }
        info!(tenant_id = %id, ?switches, "tenant switches set");
        self.get_tenant(id).await
    }

    async fn list_connections(&self, id: &TenantId) -> Answer {
        self.tenant(id).await?;
        let mut connections = self
            .ports
            .connections
            .list_by_tenant(id)
            .await
            .map_err(store_failure("listing connections"))?;
        connections.sort_by(|a, b| a.user_id.as_str().cmp(b.user_id.as_str()));
        let items: Vec<Value> = connections.iter().map(connection_view).collect();
        ok(&json!({ "items": items }))
    }

    async fn get_connection(&self, key: &UserKey) -> Answer {
        ok(&connection_view(&self.connection(key).await?))
    }

    async fn patch_user_switches(&self, key: &UserKey, patch: UserSwitchesPatch) -> Answer {
        let connection = self.connection(key).await?;
        if connection.status == ConnectionStatus::Disconnected {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "connection_disconnected",
                "the user is disconnected; switches apply to a connection made by signing in again",
            ));
        }
        let old = connection.switches;
        let switches = UserSwitches {
            mail_sync: patch.mail_sync.unwrap_or(old.mail_sync),
            calendar_sync: patch.calendar_sync.unwrap_or(old.calendar_sync),
            internal_meetings: patch.internal_meetings.unwrap_or(old.internal_meetings),
        };
        match self
            .ports
            .connections
            .set_switches(key, switches, self.ports.clock.now())
            .await
        {
            Ok(()) => {}
            Err(StoreError::NotFound { .. }) => {
                return Err(ApiError::not_found(
                    "connection_not_found",
                    "no such connection",
                ));
            }
            Err(other) => return Err(store_failure("setting the user's switches")(other)),
        }
        info!(tenant_id = %key.tenant_id, user_id = %key.user_id, ?switches, "user switches set");
        self.get_connection(key).await
    }

    async fn disconnect(&self, key: &UserKey) -> Answer {
        self.connection(key).await?;
        let ports = &self.ports;
        let stores = Stores {
            subscriptions: ports.subscriptions.as_deref(),
            connections: ports.connections.as_ref(),
            sync: ports.sync.as_ref(),
            activities: ports.activities.as_ref(),
            targets: ports.targets.as_ref(),
            vault: ports.vault.as_ref(),
            lease_wait: ports.lease_wait,
        };
        match stores.disconnect_user(key, true, ports.clock.now()).await {
            Ok(report) => {
                info!(tenant_id = %key.tenant_id, user_id = %key.user_id,
                      activities_deleted = report.activities_deleted, "user disconnected");
                ok(&serde_json::to_value(&report).map_err(|_| ApiError::internal())?)
            }
            Err(DisconnectError::StillRunning { .. }) => Err(ApiError::new(
                StatusCode::CONFLICT,
                "sync_running",
                "a sync of this user is still running; the connection is disconnected and its \
                 token deleted, and its statusReason is disconnect_pending until the rest is \
                 deleted: call disconnect again in a few minutes to delete it",
            )),
            Err(other) => {
                error!(error = %other, "disconnection failed");
                Err(ApiError::internal())
            }
        }
    }

    /// Explicit Consent Mode: a host's meetings (or one, by its calendar event id), with
    /// the links the platform's emails carry and the answers so far.
    async fn consent_meetings(&self, key: &UserKey, event_id: Option<&str>) -> Answer {
        let Some((store, base)) = &self.ports.consent_meetings else {
            return Err(ApiError::not_found(
                "consent_meetings_unavailable",
                "explicit consent mode is not configured on this stack",
            ));
        };
        self.connection(key).await?;
        match event_id {
            None => {
                let meetings = store
                    .list_consent_meetings(key)
                    .await
                    .map_err(store_failure("listing the consent meetings"))?;
                ok(&json!({
                    "items": meetings
                        .iter()
                        .map(|meeting| consent_meeting_view(meeting, base))
                        .collect::<Vec<_>>(),
                }))
            }
            Some(event_id) => {
                let event_id = segment(event_id)?;
                let meeting = store
                    .get_consent_meeting(key, &event_id)
                    .await
                    .map_err(store_failure("reading the consent meeting"))?
                    .ok_or_else(|| {
                        ApiError::not_found("consent_meeting_not_found", "no such meeting")
                    })?;
                ok(&consent_meeting_view(&meeting, base))
            }
        }
    }

    async fn sync_status(&self, key: &UserKey) -> Answer {
        let connection = self.connection(key).await?;
        let now = self.ports.clock.now();
        let mut kinds = serde_json::Map::new();
        for kind in SyncKind::ALL {
            let sync_key = SyncKey::new(key.tenant_id.clone(), key.user_id.clone(), kind);
            let meta = self
                .ports
                .sync
                .get_meta(&sync_key)
                .await
                .map_err(store_failure("reading the sync meta"))?;
            let lease = self
                .ports
                .sync
                .get_lease(&sync_key)
                .await
                .map_err(store_failure("reading the sync lease"))?;
            let running = lease.is_some_and(|lease| lease.expires_at > now);
            kinds.insert(
                kind.as_str().to_owned(),
                sync_view(&connection, kind, meta.as_ref(), running, now),
            );
        }
        ok(&json!({
            "tenantId": key.tenant_id.as_str(),
            "userId": key.user_id.as_str(),
            "connectionStatus": connection.status.as_str(),
            "mail": kinds.remove("mail"),
            "calendar": kinds.remove("calendar"),
        }))
    }

    async fn list_activities(&self, key: &UserKey, query: ActivityQuery) -> Answer {
        self.connection(key).await?;
        let page = self
            .ports
            .activities
            .list_activities_between(
                key,
                query.from,
                query.to,
                query.limit,
                MAX_READS,
                query.token.as_ref(),
            )
            .await
            .map_err(store_failure("listing activities"))?;
        let items: Vec<Value> = page
            .items
            .iter()
            .map(|activity| activity_view(activity, false))
            .collect();
        let mut body = json!({ "items": items });
        if let Some(next) = page.next {
            body["nextPageToken"] = Value::String(next.0);
        }
        ok(&body)
    }

    async fn get_activity(&self, key: &UserKey, id: &ActivityId) -> Answer {
        self.connection(key).await?;
        let activity = match self.ports.activities.get_activity(key, id).await {
            Ok(Some(activity)) => activity,
            Ok(None) => {
                return Err(ApiError::not_found(
                    "activity_not_found",
                    "no such activity",
                ));
            }
            // The item names a body the bucket no longer has (deleted meanwhile).
            Err(StoreError::NotFound { .. }) => {
                return Err(ApiError::not_found(
                    "activity_not_found",
                    "no such activity",
                ));
            }
            Err(other) => return Err(store_failure("reading the activity")(other)),
        };
        ok(&activity_view(&activity, true))
    }

    async fn delete_activity(&self, key: &UserKey, id: &ActivityId) -> Answer {
        self.connection(key).await?;
        let existed = self
            .ports
            .activities
            .delete_activity(key, id)
            .await
            .map_err(store_failure("deleting the activity"))?;
        if !existed {
            return Err(ApiError::not_found(
                "activity_not_found",
                "no such activity",
            ));
        }
        info!(tenant_id = %key.tenant_id, user_id = %key.user_id, activity_id = %id, "activity deleted");
        Ok(Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Body::Empty)
            .expect("static response parts"))
    }

    /// Adds the whole message to a listed mail activity, read from the body store.
    async fn with_body(
        &self,
        mut activity: connector_core::domain::Activity,
    ) -> Result<Option<connector_core::domain::Activity>, ApiError> {
        let ActivityContent::Mail(mail) = &activity.content else {
            return Ok(Some(activity));
        };
        let Some(detail) = &mail.detail else {
            return Ok(Some(activity));
        };
        let Some(bytes) = self
            .ports
            .bodies
            .get_body(&detail.key)
            .await
            .map_err(store_failure("reading a message body"))?
        else {
            // Deleted since the listing read its item: not exported.
            return Ok(None);
        };
        let detail: MailDetail = serde_json::from_slice(&bytes).map_err(|error| {
            error!(%error, "a stored message body does not decode");
            ApiError::internal()
        })?;
        activity.join_detail(detail);
        Ok(Some(activity))
    }

    /// JSON Lines of the user's activities with their bodies, until the byte budget.
    async fn export(&self, key: &UserKey, query: ActivityQuery) -> Answer {
        self.connection(key).await?;
        let mut out = String::new();
        let mut token: Option<PageToken> = query.token.clone();
        let mut lines = 0u64;
        loop {
            let page = self
                .ports
                .activities
                .list_activities_between(
                    key,
                    query.from,
                    query.to,
                    EXPORT_PAGE,
                    MAX_READS,
                    token.as_ref(),
                )
                .await
                .map_err(store_failure("listing activities"))?;
            for activity in page.items {
                if let Some(activity) = self.with_body(activity).await? {
                    out.push_str(&activity_view(&activity, true).to_string());
                    out.push('\n');
                    lines += 1;
                }
            }
            token = page.next;
            // The budget is checked between pages, so a page boundary is where the next
            // response starts: every activity exactly once.
            if token.is_none() || out.len() >= EXPORT_BUDGET_BYTES {
                break;
            }
        }
        info!(tenant_id = %key.tenant_id, user_id = %key.user_id, lines, "export served");
        let mut response = Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/x-ndjson")
            .header(header::CACHE_CONTROL, "no-store");
        if let Some(next) = &token {
            response = response.header(NEXT_PAGE_HEADER, next.as_str());
        }
        Ok(response
            .body(Body::Text(out))
            .expect("static response parts"))
    }
}
