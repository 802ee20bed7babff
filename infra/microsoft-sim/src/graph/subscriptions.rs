//! Graph change-notification subscriptions (webhooks) for Outlook messages and events: `POST /subscriptions`
//! with the validation handshake, `GET`, `PATCH` (renew) and `DELETE /subscriptions/{id}`, and the delivery of
//! basic change notifications when a subscribed message or event changes. Also the control routes that show
//! deliveries and send lifecycle notifications.
//!
//! Facts and sources (graph-contract §9; docs/subscriptions.md in this crate):
//! - Create → 201 with the subscription; Graph first POSTs `{notificationUrl}?validationToken=...`
//!   (`Content-Type: text/plain`) and needs 200, `text/plain` and the decoded token back within 10 s, else 400
//!   `InvalidRequest` "Subscription validation request failed..." [doc + observed messages]. The same check
//!   applies to `lifecycleNotificationUrl`, which can be set only at creation [doc].
//! - Outlook message/event subscriptions live at most 10,070 minutes: the docs say 10,080, but live Graph
//!   rejects that with 400 `ExtensionError` "Subscription expiration can only be 10070 minutes in the future."
//!   [observed]; the sim enforces the observed limit.
//! - Notifications: `{"value":[{subscriptionId, subscriptionExpirationDateTime, changeType, resource,
//!   resourceData{@odata.type, @odata.id, @odata.etag, id}, clientState, tenantId}]}`, 3-second timeout, retried
//!   on failure (Graph retries for hours; the sim twice, 1 s and 2 s apart).
//! - HTTPS notification URLs only, except loopback (`127.0.0.1`, `localhost`, `[::1]`) for local receivers.

// Handlers answer with Graph error responses directly; boxing them would buy nothing on these paths.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::graph::calendar::prefer::Prefer;
use crate::graph::calendar::{ChangeType, EventChange, tz};
use crate::graph::{Principal, graph_error};
use crate::state::{SharedSim, Sim};
use crate::world::World;

/// Outlook message/event subscription lifetime Graph accepts (observed; the docs say 10,080).
pub const OUTLOOK_MAX_MINUTES: i64 = 10_070;
/// Active Outlook subscriptions per mailbox, all apps together [doc].
const MAX_PER_MAILBOX: usize = 1000;
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(10);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(3);
/// Deliveries kept for `/_sim/subscriptions/deliveries`.
const DELIVERY_LOG_CAPACITY: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// `folder`: the id or well-known name in the resource, lower-cased; `None` for all messages.
    Messages {
        folder: Option<String>,
    },
    Events,
}

#[derive(Debug, Clone)]
struct Subscription {
    id: String,
    resource: String,
    kind: Kind,
    change_types: Vec<String>,
    change_type: String,
    notification_url: String,
    lifecycle_notification_url: Option<String>,
    expiration: OffsetDateTime,
    client_state: Option<String>,
    application_id: String,
    creator_id: String,
    tenant_id: String,
    latest_supported_tls_version: String,
    immutable_ids: bool,
}

impl Subscription {
    fn to_json(&self, base_url: &str) -> Value {
        json!({
            "@odata.context": format!("{base_url}/v1.0/$metadata#subscriptions/$entity"),
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.application_id,
            "changeType": self.change_type,
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "notificationQueryOptions": null,
            "lifecycleNotificationUrl": self.lifecycle_notification_url,
            "expirationDateTime": format_expiration(self.expiration),
            "creatorId": self.creator_id,
            "includeResourceData": false,
            "latestSupportedTlsVersion": self.latest_supported_tls_version,
            "encryptionCertificate": null,
            "encryptionCertificateId": null,
            "notificationUrlAppId": null,
        })
    }
}

fn format_expiration(t: OffsetDateTime) -> String {
    let utc = tz::format_utc(t.replace_nanosecond(0).unwrap_or(t));
    // Graph writes 7 fractional digits here: `2016-11-20T18:23:45.9356913Z`.
    format!("{}.{:07}Z", utc.trim_end_matches('Z'), t.nanosecond() / 100)
}

/// One notification POST as the sim made it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub subscription_id: String,
    pub url: String,
    /// `change` or `lifecycle`.
    pub kind: &'static str,
    pub body: Value,
    pub attempts: u32,
    /// Status of the last attempt; `None` when it failed before a response.
    pub status: Option<u16>,
    pub delivered: bool,
}

/// A changed message, as the mail store reports it to `publish_message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageChange {
    pub tenant_id: String,
    pub user_id: String,
    /// The folder the message is in (or left, for `deleted`): its id and, if it has one, its well-known name.
    pub folder_id: String,
    pub folder_well_known_name: Option<String>,
    pub change: ChangeType,
    pub rest_id: String,
    pub immutable_id: String,
    pub change_key: Option<String>,
}

#[derive(Debug)]
pub struct SubscriptionStore {
    subscriptions: Mutex<BTreeMap<String, Subscription>>,
    deliveries: Mutex<Vec<Delivery>>,
    client: reqwest::Client,
}

impl SubscriptionStore {
    pub fn from_world(_world: &World, _sim_clock_now: OffsetDateTime) -> anyhow::Result<Self> {
        // Test receivers serve self-signed certificates and the sim only ever reaches loopback, so certificates
        // are not verified; redirects are not followed.
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .danger_accept_invalid_certs(true)
            .build()?;
        Ok(SubscriptionStore {
            subscriptions: Mutex::new(BTreeMap::new()),
            deliveries: Mutex::new(Vec::new()),
            client,
        })
    }

    fn live(
        &self,
        now: OffsetDateTime,
    ) -> std::sync::MutexGuard<'_, BTreeMap<String, Subscription>> {
        let mut subs = self.subscriptions.lock().expect("subscriptions lock");
        subs.retain(|_, s| s.expiration > now);
        subs
    }

    /// Notifies subscriptions on the user's events of an event change.
    pub fn publish_event(&self, sim: &SharedSim, change: &EventChange) {
        let targets = self.matching(sim.now(), &change.user_id, change.change, |kind| {
            *kind == Kind::Events
        });
        for sub in targets {
            let id = if sub.immutable_ids {
                &change.immutable_id
            } else {
                &change.rest_id
            };
            let resource = format!("Users/{}/Events/{id}", change.user_id);
            self.notify(
                sim,
                &sub,
                change.change,
                resource,
                "#Microsoft.Graph.Event",
                id,
                change.change_key.as_deref(),
            );
        }
    }

    /// Notifies subscriptions on the user's messages (all, or the message's folder) of a message change. The
    /// mail store calls this when a message is created, updated, moved or deleted.
    pub fn publish_message(&self, sim: &SharedSim, change: &MessageChange) {
        let folder_id = change.folder_id.to_ascii_lowercase();
        let well_known = change
            .folder_well_known_name
            .as_deref()
            .map(str::to_ascii_lowercase);
        let targets = self.matching(
            sim.now(),
            &change.user_id,
            change.change,
            |kind| match kind {
                Kind::Messages { folder: None } => true,
                Kind::Messages { folder: Some(f) } => {
                    *f == folder_id || Some(f) == well_known.as_ref()
                }
                Kind::Events => false,
            },
        );
        for sub in targets {
            let id = if sub.immutable_ids {
                &change.immutable_id
            } else {
                &change.rest_id
            };
            let resource = format!("Users/{}/Messages/{id}", change.user_id);
            self.notify(
                sim,
                &sub,
                change.change,
                resource,
                "#Microsoft.Graph.Message",
                id,
                change.change_key.as_deref(),
            );
        }
    }

    fn matching(
        &self,
        now: OffsetDateTime,
        user_id: &str,
        change: ChangeType,
        kind: impl Fn(&Kind) -> bool,
    ) -> Vec<Subscription> {
        self.live(now)
            .values()
            .filter(|s| s.creator_id.eq_ignore_ascii_case(user_id))
            .filter(|s| s.change_types.iter().any(|c| c == change.as_str()))
            .filter(|s| kind(&s.kind))
            .cloned()
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        sim: &SharedSim,
        sub: &Subscription,
        change: ChangeType,
        resource: String,
        odata_type: &str,
        id: &str,
        change_key: Option<&str>,
    ) {
        let mut resource_data = json!({"@odata.type": odata_type, "@odata.id": resource, "id": id});
        if let Some(key) = change_key {
            resource_data["@odata.etag"] = json!(format!("W/\"{key}\""));
        }
        // Each change notification carries its own opaque `id`, as in Microsoft's example
        // (https://learn.microsoft.com/en-us/graph/change-notifications-delivery-webhooks, Change
        // notification example; read 2026-12-05).
        let mut notification = json!({
            "id": uuid::Uuid::new_v4().simple().to_string(),
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": format_expiration(sub.expiration),
            "changeType": change.as_str(),
            "resource": resource,
            "resourceData": resource_data,
            "tenantId": sub.tenant_id,
        });
        if let Some(state) = &sub.client_state {
            notification["clientState"] = json!(state);
        }
        self.deliver(
            sim,
            sub.id.clone(),
            sub.notification_url.clone(),
            "change",
            json!({"value": [notification]}),
        );
    }

    fn deliver(
        &self,
        sim: &SharedSim,
        subscription_id: String,
        url: String,
        kind: &'static str,
        body: Value,
    ) {
        let sim = sim.clone();
        let client = self.client.clone();
        tokio::spawn(async move {
            let mut attempts = 0;
            let mut status = None;
            let mut delivered = false;
            for delay in [0u64, 1, 2] {
                if delay > 0 {
                    tokio::time::sleep(Duration::from_secs(delay)).await;
                }
                attempts += 1;
                let result = client
                    .post(&url)
                    .timeout(DELIVERY_TIMEOUT)
                    .json(&body)
                    .send()
                    .await;
                status = result.as_ref().ok().map(|r| r.status().as_u16());
                if result.is_ok_and(|r| r.status().is_success()) {
                    delivered = true;
                    break;
                }
            }
            let mut log = sim
                .subscriptions
                .deliveries
                .lock()
                .expect("deliveries lock");
            if log.len() == DELIVERY_LOG_CAPACITY {
                log.remove(0);
            }
            log.push(Delivery {
                subscription_id,
                url,
                kind,
                body,
                attempts,
                status,
                delivered,
            });
        });
    }

    /// Every delivery attempted so far (oldest first).
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().expect("deliveries lock").clone()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Graph routes

/// Routes relative to `/v1.0` (the Graph router nests them there).
pub fn router() -> Router<SharedSim> {
    Router::new()
        .route("/subscriptions", post(create).get(list))
        .route(
            "/subscriptions/{id}",
            get(get_one).patch(renew).delete(delete),
        )
}

type HandlerResult = Result<Response, Response>;

fn invalid(message: &str) -> Response {
    graph_error(StatusCode::BAD_REQUEST, "InvalidRequest", message)
}

fn not_found() -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        "The object was not found.",
    )
}

/// What a `resource` path subscribes to, and whose mailbox.
fn parse_resource(sim: &Sim, principal: &Principal, resource: &str) -> Result<Kind, Response> {
    let unsupported = || {
        invalid(&format!(
            "Resource '{resource}' is not supported for change notifications."
        ))
    };
    let path = resource.trim().trim_start_matches('/');
    if path.contains('?') {
        return Err(unsupported());
    }
    let segments: Vec<&str> = path.split('/').collect();
    let (owner, rest) = match segments.as_slice() {
        [me, rest @ ..] if me.eq_ignore_ascii_case("me") => (None, rest),
        [users, user, rest @ ..] if users.eq_ignore_ascii_case("users") => (
            Some(
                user.trim_start_matches("('")
                    .trim_end_matches("')")
                    .trim_matches('\''),
            ),
            rest,
        ),
        [users_call, rest @ ..] if users_call.to_ascii_lowercase().starts_with("users(") => {
            let inner = &users_call[6..users_call.len().saturating_sub(1)];
            (Some(inner.trim_matches('\'')), rest)
        }
        _ => return Err(unsupported()),
    };
    if let Some(owner) = owner {
        let user = sim.find_user(owner).ok_or_else(|| {
            graph_error(
                StatusCode::NOT_FOUND,
                "ErrorInvalidUser",
                &format!("The requested user '{owner}' is invalid."),
            )
        })?;
        if !user.id.eq_ignore_ascii_case(&principal.user_id) {
            return Err(graph_error(
                StatusCode::FORBIDDEN,
                "ErrorAccessDenied",
                "Access is denied. Check credentials and try again.",
            ));
        }
    }
    let lower: Vec<String> = rest.iter().map(|s| s.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    match lower.as_slice() {
        ["messages"] => Ok(Kind::Messages { folder: None }),
        ["events"] | ["calendar", "events"] => Ok(Kind::Events),
        ["mailfolders", folder, "messages"] => Ok(Kind::Messages {
            folder: Some(folder.to_string()),
        }),
        [call, "messages"] if call.starts_with("mailfolders(") && call.ends_with(')') => {
            let folder = call["mailfolders(".len()..call.len() - 1].trim_matches('\'');
            Ok(Kind::Messages {
                folder: Some(folder.to_owned()),
            })
        }
        _ => Err(unsupported()),
    }
}

fn check_expiration(sim: &Sim, text: Option<&Value>) -> Result<OffsetDateTime, Response> {
    let text = text
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("expirationDateTime is required."))?;
    let expiration = tz::parse_instant(text)
        .ok_or_else(|| invalid(&format!("Invalid expirationDateTime '{text}'.")))?;
    let now = sim.now();
    if expiration <= now {
        return Err(invalid("Subscription expiration must be in the future."));
    }
    if expiration - now > time::Duration::minutes(OUTLOOK_MAX_MINUTES) {
        return Err(graph_error(
            StatusCode::BAD_REQUEST,
            "ExtensionError",
            &format!(
                "Subscription expiration can only be {OUTLOOK_MAX_MINUTES} minutes in the future."
            ),
        ));
    }
    Ok(expiration)
}

fn check_url(text: &str, field: &str) -> Result<url::Url, Response> {
    let url = url::Url::parse(text).map_err(|_| invalid(&format!("Invalid {field} '{text}'.")))?;
    let loopback = matches!(url.host(), Some(url::Host::Domain("localhost")))
        || matches!(url.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
        || matches!(url.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback());
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err(invalid(&format!(
            "Subscription validation request failed. The {field} must use HTTPS."
        ))),
    }
}

/// Graph's handshake: POST `?validationToken=...` and expect the token back as `text/plain` within 10 s.
async fn validate_endpoint(client: &reqwest::Client, url: &url::Url) -> Result<(), Response> {
    let token = format!(
        "Validation: Testing client application reachability for subscription Request-Id: {}",
        uuid::Uuid::new_v4()
    );
    let mut target = url.clone();
    target
        .query_pairs_mut()
        .append_pair("validationToken", &token);
    let failed =
        |detail: &str| invalid(&format!("Subscription validation request failed. {detail}"));
    let response = client
        .post(target)
        .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .timeout(VALIDATION_TIMEOUT)
        .body("")
        .send()
        .await
        .map_err(|_| {
            failed("Notification endpoint must respond with 200 OK to validation request.")
        })?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        return Err(failed(&format!(
            "HTTP '{}'",
            status
                .canonical_reason()
                .unwrap_or(status.as_str())
                .replace(' ', "")
        )));
    }
    let text_plain = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/plain")
        });
    let body = tokio::time::timeout(VALIDATION_TIMEOUT, response.text())
        .await
        .map_err(|_| {
            failed("Notification endpoint must respond with 200 OK to validation request.")
        })?
        .unwrap_or_default();
    if !text_plain || body != token {
        return Err(failed(
            "Response must exactly match validationToken query parameter.",
        ));
    }
    Ok(())
}

fn scopes_for(kind: &Kind) -> &'static [&'static str] {
    match kind {
        Kind::Messages { .. } => &["Mail.ReadBasic", "Mail.Read", "Mail.ReadWrite"],
        Kind::Events => &["Calendars.Read", "Calendars.ReadWrite"],
    }
}

async fn create(
    State(sim): State<SharedSim>,
    principal: Principal,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> HandlerResult {
    let body = crate::graph::teams::json_object(&body)?;
    let field = |name: &str| body.get(name).filter(|v| !v.is_null());
    let resource = field("resource")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("resource is required."))?
        .to_owned();
    let kind = parse_resource(&sim, &principal, &resource)?;
    principal.require_any(scopes_for(&kind))?;
    let change_type = field("changeType")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("changeType is required."))?
        .to_owned();
    let change_types: Vec<String> = change_type
        .split(',')
        .map(|c| c.trim().to_owned())
        .collect();
    if change_types.is_empty()
        || change_types
            .iter()
            .any(|c| !["created", "updated", "deleted"].contains(&c.as_str()))
    {
        return Err(invalid(&format!(
            "Invalid 'changeType' attribute: '{change_type}'."
        )));
    }
    let notification_url = field("notificationUrl")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("notificationUrl is required."))?
        .to_owned();
    let notification = check_url(&notification_url, "notificationUrl")?;
    let lifecycle_notification_url = field("lifecycleNotificationUrl")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let lifecycle = lifecycle_notification_url
        .as_deref()
        .map(|u| check_url(u, "lifecycleNotificationUrl"))
        .transpose()?;
    let expiration = check_expiration(&sim, field("expirationDateTime"))?;
    let client_state = field("clientState")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if client_state
        .as_ref()
        .is_some_and(|s| s.chars().count() > 128)
    {
        return Err(invalid("The clientState must not exceed 128 characters."));
    }
    if field("includeResourceData").and_then(Value::as_bool) == Some(true) {
        return Err(invalid(
            "The sim sends basic notifications only; includeResourceData is not supported.",
        ));
    }
    let tls = field("latestSupportedTlsVersion")
        .and_then(Value::as_str)
        .unwrap_or("v1_2")
        .to_owned();
    if !["v1_0", "v1_1", "v1_2", "v1_3"].contains(&tls.as_str()) {
        return Err(invalid(&format!(
            "Invalid latestSupportedTlsVersion '{tls}'."
        )));
    }
    let per_mailbox = sim
        .subscriptions
        .live(sim.now())
        .values()
        .filter(|s| s.creator_id == principal.user_id)
        .count();
    if per_mailbox >= MAX_PER_MAILBOX {
        return Err(graph_error(
            StatusCode::FORBIDDEN,
            "ExtensionError",
            "The number of subscriptions for this mailbox has reached its limit.",
        ));
    }
    let client = sim.subscriptions.client.clone();
    validate_endpoint(&client, &notification).await?;
    if let Some(lifecycle) = &lifecycle {
        validate_endpoint(&client, lifecycle).await?;
    }
    let subscription = Subscription {
        id: uuid::Uuid::new_v4().to_string(),
        resource,
        kind,
        change_types,
        change_type,
        notification_url,
        lifecycle_notification_url,
        expiration,
        client_state,
        application_id: principal.client_id.clone(),
        creator_id: principal.user_id.clone(),
        tenant_id: principal.tenant_id.clone(),
        latest_supported_tls_version: tls,
        immutable_ids: Prefer::from_headers(&headers).immutable_id,
    };
    let json = subscription.to_json(sim.base_url());
    sim.subscriptions
        .subscriptions
        .lock()
        .expect("subscriptions lock")
        .insert(subscription.id.clone(), subscription);
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

/// A subscription the calling app created for the signed-in user.
fn owned(sim: &Sim, principal: &Principal, id: &str) -> Result<Subscription, Response> {
    sim.subscriptions
        .live(sim.now())
        .get(id)
        .filter(|s| {
            s.application_id.eq_ignore_ascii_case(&principal.client_id)
                && s.creator_id.eq_ignore_ascii_case(&principal.user_id)
        })
        .cloned()
        .ok_or_else(not_found)
}

async fn list(State(sim): State<SharedSim>, principal: Principal) -> Json<Value> {
    let value: Vec<Value> = sim
        .subscriptions
        .live(sim.now())
        .values()
        .filter(|s| {
            s.application_id.eq_ignore_ascii_case(&principal.client_id)
                && s.creator_id.eq_ignore_ascii_case(&principal.user_id)
        })
        .map(|s| {
            let mut v = s.to_json(sim.base_url());
            v.as_object_mut().expect("object").remove("@odata.context");
            v
        })
        .collect();
    Json(
        json!({"@odata.context": format!("{}/v1.0/$metadata#subscriptions", sim.base_url()), "value": value}),
    )
}

async fn get_one(
    State(sim): State<SharedSim>,
    principal: Principal,
    Path(id): Path<String>,
) -> HandlerResult {
    let sub = owned(&sim, &principal, &id)?;
    Ok(Json(sub.to_json(sim.base_url())).into_response())
}

async fn renew(
    State(sim): State<SharedSim>,
    principal: Principal,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> HandlerResult {
    let body = crate::graph::teams::json_object(&body)?;
    let mut sub = owned(&sim, &principal, &id)?;
    for key in body.keys() {
        match key.as_str() {
            "expirationDateTime" | "notificationUrl" | "@odata.type" => {}
            "lifecycleNotificationUrl" => {
                if body[key].as_str() != sub.lifecycle_notification_url.as_deref() {
                    return Err(invalid(
                        "lifecycleNotificationUrl can only be set when the subscription is created.",
                    ));
                }
            }
            other => {
                return Err(invalid(&format!(
                    "The property '{other}' cannot be updated."
                )));
            }
        }
    }
    if body.contains_key("expirationDateTime") {
        sub.expiration = check_expiration(&sim, body.get("expirationDateTime"))?;
    }
    if let Some(url) = body
        .get("notificationUrl")
        .and_then(Value::as_str)
        .filter(|u| *u != sub.notification_url)
    {
        let parsed = check_url(url, "notificationUrl")?;
        validate_endpoint(&sim.subscriptions.client, &parsed).await?;
        sub.notification_url = url.to_owned();
    }
    let json = sub.to_json(sim.base_url());
    let mut subs = sim.subscriptions.live(sim.now());
    if !subs.contains_key(&id) {
        return Err(not_found());
    }
    subs.insert(id, sub);
    Ok(Json(json).into_response())
}

async fn delete(
    State(sim): State<SharedSim>,
    principal: Principal,
    Path(id): Path<String>,
) -> HandlerResult {
    owned(&sim, &principal, &id)?;
    sim.subscriptions
        .subscriptions
        .lock()
        .expect("subscriptions lock")
        .remove(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------------------------------------------------------
// Control routes

/// `GET /_sim/subscriptions` (every live subscription), `GET /_sim/subscriptions/deliveries` (every
/// notification POST, with status and attempts), `POST /_sim/subscriptions/{id}/lifecycle {lifecycleEvent}`
/// (send `reauthorizationRequired`, `subscriptionRemoved` — which also removes it — or `missed`).
pub fn control_router() -> Router<SharedSim> {
    Router::new()
        .route("/_sim/subscriptions", get(control_list))
        .route("/_sim/subscriptions/deliveries", get(control_deliveries))
        .route(
            "/_sim/subscriptions/{id}/lifecycle",
            post(control_lifecycle),
        )
}

async fn control_list(State(sim): State<SharedSim>) -> Json<Vec<Value>> {
    Json(
        sim.subscriptions
            .live(sim.now())
            .values()
            .map(|s| s.to_json(sim.base_url()))
            .collect(),
    )
}

async fn control_deliveries(State(sim): State<SharedSim>) -> Json<Vec<Delivery>> {
    Json(sim.subscriptions.deliveries())
}

async fn control_lifecycle(
    State(sim): State<SharedSim>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let event = body
        .get("lifecycleEvent")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if !["reauthorizationRequired", "subscriptionRemoved", "missed"].contains(&event.as_str()) {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "lifecycleEvent is reauthorizationRequired, subscriptionRemoved or missed"})))
            .into_response();
    }
    let Some(sub) = sim.subscriptions.live(sim.now()).get(&id).cloned() else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such subscription"})),
        )
            .into_response();
    };
    let Some(url) = sub.lifecycle_notification_url.clone() else {
        return (
            StatusCode::CONFLICT,
            Json(json!({"error": "the subscription has no lifecycleNotificationUrl"})),
        )
            .into_response();
    };
    if event == "subscriptionRemoved" {
        sim.subscriptions
            .subscriptions
            .lock()
            .expect("subscriptions lock")
            .remove(&id);
    }
    let mut notification = json!({
        "subscriptionId": sub.id,
        "subscriptionExpirationDateTime": format_expiration(sub.expiration),
        "tenantId": sub.tenant_id,
        "lifecycleEvent": event,
    });
    if let Some(state) = &sub.client_state {
        notification["clientState"] = json!(state);
    }
    sim.subscriptions.deliver(
        &sim,
        sub.id,
        url,
        "lifecycle",
        json!({"value": [notification]}),
    );
    StatusCode::ACCEPTED.into_response()
}
