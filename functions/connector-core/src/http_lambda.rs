//! Serving API Gateway HTTP API (payload 2.0) events to an [`HttpApp`] (consent-callback's
//! pages, the platform API).
//!
//! API Gateway hands `rawQueryString` over as the client sent it. lambda_http's conversion
//! of an event into an `http::Request` appends it to the URI and panics (`failed to build
//! request`) when it holds a byte a URI may not: an un-encoded space, `"`, `<`, `>`, a
//! control character. The invocation would end in a 500 before the app ran. Such an event
//! gets the app's own answer ([`HttpApp::unreadable_query`]) here, before the conversion;
//! every other event goes through lambda_http's adapter unchanged.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use lambda_http::aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, Body, LambdaEvent, Request, Response, Service};
use serde_json::Value;
use tracing::warn;

/// An HTTP function's application.
pub trait HttpApp: Send + Sync + 'static {
    /// Answers one request.
    fn serve_request(&self, request: Request) -> impl Future<Output = Response<Body>> + Send;
    /// The answer to an event whose query no URI may hold (the request could not be read).
    fn unreadable_query(&self, event: &ApiGatewayV2httpRequest) -> Response<Body>;
}

/// Whether `raw` can be the query of a URI, by the `http` crate's own parser: exactly what
/// lambda_http's conversion will require of it.
pub fn query_is_valid(raw: &str) -> bool {
    raw.is_empty() || http::uri::PathAndQuery::try_from(format!("/?{raw}")).is_ok()
}

/// The invocation handler: the app's answer for an unreadable query, lambda_http's adapter
/// around [`HttpApp::serve_request`] for everything else.
pub struct Handler<A> {
    app: Arc<A>,
}

impl<A> Clone for Handler<A> {
    fn clone(&self) -> Self {
        Self {
            app: self.app.clone(),
        }
    }
}

impl<A: HttpApp> Handler<A> {
    pub fn new(app: Arc<A>) -> Self {
        Self { app }
    }

    /// Serves one event as the Lambda runtime hands it over. The answer is the response
    /// payload as JSON (lambda_http does not export its response type by name).
    pub async fn serve(
        &self,
        event: LambdaEvent<LambdaRequest>,
    ) -> Result<Value, lambda_http::Error> {
        if let LambdaRequest::ApiGatewayV2(request) = &event.payload
            && let Some(query) = &request.raw_query_string
            && !query_is_valid(query)
        {
            // The query itself is not logged: it is whatever the client sent.
            warn!(
                length = query.len(),
                "raw query string is not a valid URI query"
            );
            let answer = to_api_gateway_v2(self.app.unreadable_query(request));
            return Ok(serde_json::to_value(answer)?);
        }
        let app = self.app.clone();
        let mut adapter = Adapter::from(lambda_http::service_fn(move |request: Request| {
            let app = app.clone();
            async move { Ok::<_, std::convert::Infallible>(app.serve_request(request).await) }
        }));
        let response = match adapter.call(event).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        Ok(serde_json::to_value(response)?)
    }
}

impl<A: HttpApp> Service<LambdaEvent<LambdaRequest>> for Handler<A> {
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

/// A response as API Gateway's payload 2.0 response (text body, headers, cookies).
fn to_api_gateway_v2(response: Response<Body>) -> ApiGatewayV2httpResponse {
    let (parts, body) = response.into_parts();
    let mut out = ApiGatewayV2httpResponse::default();
    out.status_code = i64::from(parts.status.as_u16());
    for (name, value) in &parts.headers {
        if name == http::header::SET_COOKIE {
            if let Ok(cookie) = value.to_str() {
                out.cookies.push(cookie.to_owned());
            }
        } else {
            out.headers.append(name.clone(), value.clone());
        }
    }
    out.body = match body {
        Body::Empty => None,
        Body::Text(text) => Some(Body::Text(text)),
        Body::Binary(bytes) => Some(Body::Text(String::from_utf8_lossy(&bytes).into_owned())),
        _ => None,
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_that_would_panic_the_conversion_are_invalid() {
        for bad in [
            "code=a b",
            "state=\"x\"",
            "x=<script>",
            "x=>",
            "x=\u{7}",
            "x=\u{7f}",
        ] {
            assert!(!query_is_valid(bad), "{bad:?}");
        }
        for good in [
            "",
            "code=abc&state=xyz",
            "error_description=AADSTS65004%3A+User+declined",
            "x=%20%22%3C",
            "scope=openid+profile&x=a/b?c",
            // http takes bytes past ASCII as they are; the handler's own parser reads UTF-8.
            "x=\u{e9}",
        ] {
            assert!(query_is_valid(good), "{good:?}");
        }
    }
}
