//! Serving API Gateway HTTP API (payload 2.0) events, as consent-callback does: lambda_http
//! turns an event into an `http::Request` and panics when `rawQueryString` holds a byte a
//! URI may not (see consent_callback::lambda). Such an event gets our 400 here, after the
//! same IAM principal check [`crate::App::handle`] makes; every other event goes through
//! lambda_http's adapter.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::StatusCode;
use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, LambdaEvent, Request, Service};
use serde_json::{Value, json};

use crate::{ApiError, App};

fn query_is_valid(raw: &str) -> bool {
    raw.is_empty() || http::uri::PathAndQuery::try_from(format!("/?{raw}")).is_ok()
}

#[derive(Clone)]
pub struct Handler {
    app: Arc<App>,
}

impl Handler {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    pub async fn serve(
        &self,
        event: LambdaEvent<LambdaRequest>,
    ) -> Result<Value, lambda_http::Error> {
        if let LambdaRequest::ApiGatewayV2(request) = &event.payload
            && let Some(query) = &request.raw_query_string
            && !query_is_valid(query)
        {
            let has_principal = request
                .request_context
                .authorizer
                .as_ref()
                .and_then(|authorizer| authorizer.iam.as_ref())
                .and_then(|iam| iam.user_arn.as_deref())
                .is_some_and(|arn| arn.starts_with("arn:"));
            let error = if has_principal {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    "the query string is not valid",
                )
            } else {
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "missing_iam_principal",
                    "this API requires AWS_IAM (SigV4) authorization",
                )
            };
            let status = error.status.as_u16();
            let body = serde_json::to_string(&json!({
                "error": {"code": error.code, "message": error.message}
            }))?;
            return Ok(json!({
                "statusCode": status,
                "headers": {"content-type": "application/json", "cache-control": "no-store"},
                "body": body,
                "isBase64Encoded": false,
            }));
        }
        let app = self.app.clone();
        let mut adapter = Adapter::from(lambda_http::service_fn(move |request: Request| {
            let app = app.clone();
            async move { Ok::<_, std::convert::Infallible>(app.handle(request).await) }
        }));
        let response = match adapter.call(event).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        Ok(serde_json::to_value(response)?)
    }
}

impl Service<LambdaEvent<LambdaRequest>> for Handler {
    type Response = Value;
    type Error = lambda_http::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, event: LambdaEvent<LambdaRequest>) -> Self::Future {
        let handler = self.clone();
        Box::pin(async move { handler.serve(event).await })
    }
}
