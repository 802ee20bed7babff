//! The Graph change-notification endpoint on the HTTP API (`POST /notifications/graph`
//! and `POST /notifications/graph/lifecycle`): the handshake and the notifications, handled
//! by connector-core's [`Webhook`](connector_core::notifications::webhook::Webhook). Every
//! answer is plain text with no detail: `200` + the token (handshake), `202` (a batch,
//! whatever each item turned out to be), `400` (not a batch), `405` (not a POST), `500`
//! (our store or queue failed: Graph delivers again).

use connector_core::notifications::webhook::{WebhookError, validation_answer};
use http::{HeaderValue, Method, StatusCode, header};
use lambda_http::{Body, Request, Response};
use tracing::{error, info};

use crate::App;
use crate::params::Query;

fn plain(status: StatusCode, body: &str) -> Response<Body> {
    let mut response = Response::new(Body::Text(body.to_owned()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

impl App {
    /// `None` when this deployment has no webhook (the path is then unknown).
    pub(crate) async fn graph_notifications(&self, request: &Request) -> Option<Response<Body>> {
        let webhook = self.ports.webhook.as_ref()?;
        if request.method() != Method::POST {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return Some(response);
        }
        // The handshake: `?validationToken=…` (URL-decoded here), empty body.
        let query = Query::parse(request.uri().query()).unwrap_or_default();
        if let Some(token) = query.get("validationToken") {
            return Some(match validation_answer(token) {
                Some(token) => plain(StatusCode::OK, token),
                None => plain(StatusCode::BAD_REQUEST, ""),
            });
        }
        let body: &[u8] = match request.body() {
            Body::Text(text) => text.as_bytes(),
            Body::Binary(bytes) => bytes,
            Body::Empty => b"",
            _ => b"",
        };
        Some(match webhook.handle(body).await {
            Ok(report) => {
                info!(
                    accepted = report.accepted,
                    refused = report.refused,
                    woke = report.woke,
                    debounced = report.debounced,
                    lifecycle_jobs = report.lifecycle_jobs,
                    "change notifications"
                );
                plain(StatusCode::ACCEPTED, "")
            }
            Err(WebhookError::Malformed) => plain(StatusCode::BAD_REQUEST, ""),
            Err(error) => {
                error!(error = %error, "change notifications could not be queued; Graph will deliver them again");
                plain(StatusCode::INTERNAL_SERVER_ERROR, "")
            }
        })
    }
}
