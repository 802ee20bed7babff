//! Microsoft Graph v1.0 at `/v1.0`: authentication of callers (the `Principal` extractor), Graph's error body,
//! the per-request ids, gzip, and the middleware stack every Graph route runs through (request log → fault
//! injection → latency → handler). The resources themselves live in the submodules, each with its owner.

pub mod batch;
pub mod calendar;
pub mod mail;
pub mod online_meetings;
pub mod organization;
pub mod subscriptions;
pub mod teams;
pub mod throttle;

use std::collections::BTreeSet;

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tower_http::compression::CompressionLayer;

use crate::identity::AccessTokenError;
use crate::state::SharedSim;

/// Ids of the Graph request being served, echoed in error bodies and response headers.
#[derive(Debug, Clone)]
pub struct RequestIds {
    pub request_id: String,
    pub client_request_id: String,
}

tokio::task_local! {
    static REQUEST_IDS: RequestIds;
}

impl RequestIds {
    /// The ids of the request this task is serving (fresh ones outside a Graph request).
    pub fn current() -> RequestIds {
        REQUEST_IDS.try_with(Clone::clone).unwrap_or_else(|_| {
            let id = uuid::Uuid::new_v4().to_string();
            RequestIds {
                request_id: id.clone(),
                client_request_id: id,
            }
        })
    }
}

/// Graph's error response: `{"error":{"code","message","innerError":{"date","request-id","client-request-id"}}}`
/// with the `request-id`/`client-request-id` headers.
pub fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    let ids = RequestIds::current();
    let date = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]"
        ))
        .unwrap_or_default();
    let body = json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": date,
                "request-id": ids.request_id,
                "client-request-id": ids.client_request_id,
            }
        }
    });
    let mut response = (status, axum::Json(body)).into_response();
    set_id_headers(response.headers_mut(), &ids);
    response
}

fn set_id_headers(headers: &mut HeaderMap, ids: &RequestIds) {
    if let Ok(v) = HeaderValue::from_str(&ids.request_id) {
        headers.insert("request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&ids.client_request_id) {
        headers.insert("client-request-id", v);
    }
}

/// The signed-in user and app behind a Graph request's bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: String,
    pub user_id: String,
    /// Short names (`Mail.Read`) still granted at the time of the request.
    pub scopes: BTreeSet<String>,
    pub client_id: String,
}

impl Principal {
    /// 403 `ErrorAccessDenied` unless the token carries at least one of `scopes`.
    #[allow(clippy::result_large_err)]
    pub fn require_any(&self, scopes: &[&str]) -> Result<(), Response> {
        if scopes
            .iter()
            .any(|s| self.scopes.iter().any(|have| have.eq_ignore_ascii_case(s)))
        {
            Ok(())
        } else {
            Err(graph_error(
                StatusCode::FORBIDDEN,
                "ErrorAccessDenied",
                "Access is denied. Check credentials and try again.",
            ))
        }
    }

    pub fn has(&self, scope: &str) -> bool {
        self.scopes
            .iter()
            .any(|have| have.eq_ignore_ascii_case(scope))
    }
}

/// Graph's 401 for a missing, malformed, expired or revoked token.
pub fn unauthorized(error: AccessTokenError) -> Response {
    unauthorized_with_message(error.graph_message())
}

/// A 401 `InvalidAuthenticationToken` with `message` and Graph's `WWW-Authenticate` challenge.
pub fn unauthorized_with_message(message: &str) -> Response {
    let mut response = graph_error(
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
        message,
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(
            "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", \
             client_id=\"00000003-0000-0000-c000-000000000000\"",
        ),
    );
    response
}

/// The bearer token of a request, if any (scheme case-insensitive, as Graph accepts).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<SharedSim> for Principal {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        sim: &SharedSim,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer_token(&parts.headers).unwrap_or("");
        let claims = sim.validate_access_token(token).map_err(unauthorized)?;
        Ok(Principal {
            tenant_id: claims.tenant_id,
            user_id: claims.user_id,
            scopes: claims.scopes,
            client_id: claims.client_id,
        })
    }
}

/// Assigns the request ids (honouring the caller's `client-request-id`) and stamps them on every response.
async fn request_ids(request: Request, next: Next) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let client_request_id = request
        .headers()
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| request_id.clone());
    let ids = RequestIds {
        request_id,
        client_request_id,
    };
    let mut response = REQUEST_IDS.scope(ids.clone(), next.run(request)).await;
    set_id_headers(response.headers_mut(), &ids);
    response.headers_mut().insert(
        "x-ms-ags-diagnostic",
        HeaderValue::from_static(r#"{"ServerInfo":{"DataCenter":"Local","Slice":"E","Ring":"5","ScaleUnit":"000","RoleInstance":"microsoft-sim"}}"#),
    );
    response
}

/// All of Graph under `/v1.0`, with its middleware. Layers run outside-in: gzip → ids → request log → faults →
/// latency → (Outlook throttling) → handler.
pub fn router(sim: SharedSim) -> Router<SharedSim> {
    let resources = Router::new()
        .merge(mail::router())
        .merge(organization::router())
        .merge(batch::router())
        .merge(calendar::router())
        .merge(teams::router())
        .merge(online_meetings::router())
        .merge(subscriptions::router())
        .fallback(unknown_segment);
    // ---- hook (S2): the Outlook throttling layer goes on the next line, as `.layer(...)` on `resources` ----
    let resources = resources
        .layer(middleware::from_fn_with_state(
            sim.clone(),
            crate::control::latency_layer,
        ))
        // S2: Outlook throttling wraps the injected latency: a slow mailbox keeps requests in flight (MailboxConcurrency).
        .layer(middleware::from_fn_with_state(sim.clone(), throttle::layer))
        .layer(middleware::from_fn_with_state(
            sim.clone(),
            crate::control::fault_layer,
        ))
        .layer(middleware::from_fn_with_state(
            sim,
            crate::control::request_log_layer,
        ))
        .layer(middleware::from_fn(request_ids))
        .layer(
            CompressionLayer::new()
                .quality(tower_http::CompressionLevel::Fastest)
                .gzip(true)
                .no_br()
                .no_deflate()
                .no_zstd(),
        );
    Router::new().nest("/v1.0", resources)
}

/// What Graph answers for a path no resource serves.
async fn unknown_segment(request: Request) -> Response {
    // Graph names the first segment it could not resolve; the routers here only know the path did not match, and
    // the last segment is the one that is usually wrong (`delta()`, a misspelt navigation property).
    let path = request.uri().path().trim_end_matches('/');
    let segment = path.rsplit('/').next().unwrap_or_default();
    graph_error(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        &format!("Resource not found for the segment '{segment}'."),
    )
}

impl IntoResponse for AccessTokenError {
    fn into_response(self) -> Response {
        unauthorized(self)
    }
}
