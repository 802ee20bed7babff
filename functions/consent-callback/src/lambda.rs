//! consent-callback as an HTTP function ([`connector_core::http_lambda`]): an event whose
//! `rawQueryString` no URI may hold gets our own 400 page.

use std::future::Future;

use connector_core::http_lambda::HttpApp;
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_http::{Body, Request, Response};

use crate::App;

/// The Lambda handler of the consent and sign-in pages.
pub type Handler = connector_core::http_lambda::Handler<App>;

impl HttpApp for App {
    fn serve_request(&self, request: Request) -> impl Future<Output = Response<Body>> + Send {
        self.handle(request)
    }

    fn unreadable_query(&self, _: &ApiGatewayV2httpRequest) -> Response<Body> {
        self.unreadable_request_page()
    }
}
