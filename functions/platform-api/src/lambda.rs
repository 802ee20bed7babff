//! The platform API as an HTTP function ([`connector_core::http_lambda`]): an event whose
//! `rawQueryString` no URI may hold gets our 400 there, after the same IAM principal check
//! [`crate::App::handle`] makes (without a principal it is a 403 like any other request).

use std::future::Future;

use connector_core::http_lambda::HttpApp;
use http::StatusCode;
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_http::{Body, Request, Response};

use crate::{ApiError, App};

/// The Lambda handler of the platform API.
pub type Handler = connector_core::http_lambda::Handler<App>;

impl HttpApp for App {
    fn serve_request(&self, request: Request) -> impl Future<Output = Response<Body>> + Send {
        self.handle(request)
    }

    fn unreadable_query(&self, event: &ApiGatewayV2httpRequest) -> Response<Body> {
        let has_principal = event
            .request_context
            .authorizer
            .as_ref()
            .and_then(|authorizer| authorizer.iam.as_ref())
            .and_then(|iam| iam.user_arn.as_deref())
            .is_some_and(|arn| arn.starts_with("arn:"));
        if has_principal {
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
        }
        .into_response()
    }
}
