//! JSON batching: `POST /v1.0/$batch` (json-batching doc, graph-contract §8). Up to 20 requests, each
//! dispatched through the real Graph router (middleware, throttling and all) with the outer request's
//! `Authorization`; `dependsOn` orders them and a failed dependency gives 424; independent requests run in
//! parallel, at most 4 at a time per mailbox (Graph's rule for Outlook). The outer status is 200 whenever the
//! batch parses; per-item statuses, headers (`Retry-After` on an inner 429) and bodies say what happened.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

use crate::graph::{Principal, graph_error};
use crate::state::SharedSim;

/// Requests per batch (json-batching doc).
pub const MAX_REQUESTS: usize = 20;
/// Inner requests to one mailbox that run at the same time (Graph's Outlook rule).
pub const PER_MAILBOX_PARALLELISM: usize = 4;
/// Largest inner response body collected.
const MAX_INNER_BODY: usize = 64 * 1024 * 1024;

/// Routes relative to `/v1.0`.
pub fn router() -> Router<SharedSim> {
    Router::new().route("/$batch", post(batch))
}

#[derive(Debug, Clone)]
struct Item {
    id: String,
    method: Method,
    url: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Option<Value>,
    depends_on: Vec<String>,
}

fn bad_batch(message: &str) -> Response {
    graph_error(StatusCode::BAD_REQUEST, "BadRequest", message)
}

#[allow(clippy::result_large_err)]
fn parse(body: &[u8]) -> Result<Vec<Item>, Response> {
    let invalid = || bad_batch("Invalid batch payload format.");
    let value: Value = serde_json::from_slice(body).map_err(|_| invalid())?;
    let requests = value
        .get("requests")
        .and_then(Value::as_array)
        .ok_or_else(invalid)?;
    if requests.len() > MAX_REQUESTS {
        return Err(bad_batch(&format!(
            "The number of requests in the batch ({}) exceeds the limit of {MAX_REQUESTS}.",
            requests.len()
        )));
    }
    let mut items = Vec::with_capacity(requests.len());
    let mut ids = HashSet::new();
    for request in requests {
        let obj = request.as_object().ok_or_else(invalid)?;
        let id = obj
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(invalid)?
            .to_owned();
        if !ids.insert(id.to_ascii_lowercase()) {
            return Err(bad_batch(&format!(
                "Batch request contains duplicate id '{id}'."
            )));
        }
        let method = obj
            .get("method")
            .and_then(Value::as_str)
            .and_then(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
            .ok_or_else(invalid)?;
        let url = obj
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(invalid)?
            .to_owned();
        let mut headers = Vec::new();
        if let Some(h) = obj.get("headers") {
            let h = h.as_object().ok_or_else(invalid)?;
            for (name, value) in h {
                let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
                let value = value
                    .as_str()
                    .and_then(|v| HeaderValue::from_str(v).ok())
                    .ok_or_else(invalid)?;
                headers.push((name, value));
            }
        }
        let body = obj.get("body").cloned();
        if body.is_some() && !headers.iter().any(|(n, _)| n == header::CONTENT_TYPE) {
            return Err(bad_batch(&format!(
                "Write request id : {id} does not contain Content-Type header or body."
            )));
        }
        let depends_on = match obj.get("dependsOn") {
            None => Vec::new(),
            Some(d) => d
                .as_array()
                .ok_or_else(invalid)?
                .iter()
                .map(|x| x.as_str().map(str::to_owned).ok_or_else(invalid))
                .collect::<Result<_, _>>()?,
        };
        items.push(Item {
            id,
            method,
            url,
            headers,
            body,
            depends_on,
        });
    }
    for item in &items {
        for dep in &item.depends_on {
            if dep.eq_ignore_ascii_case(&item.id) || !ids.contains(&dep.to_ascii_lowercase()) {
                return Err(bad_batch(&format!(
                    "Request '{}' depends on an unknown request '{dep}'.",
                    item.id
                )));
            }
        }
    }
    if has_cycle(&items) {
        return Err(bad_batch(
            "The dependsOn references of the batch form a cycle.",
        ));
    }
    Ok(items)
}

fn has_cycle(items: &[Item]) -> bool {
    let index: HashMap<String, usize> = items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.id.to_ascii_lowercase(), i))
        .collect();
    // 0 unvisited, 1 on the stack, 2 done.
    fn visit(i: usize, items: &[Item], index: &HashMap<String, usize>, marks: &mut [u8]) -> bool {
        match marks[i] {
            1 => return true,
            2 => return false,
            _ => {}
        }
        marks[i] = 1;
        for dep in &items[i].depends_on {
            if let Some(&j) = index.get(&dep.to_ascii_lowercase())
                && visit(j, items, index, marks)
            {
                return true;
            }
        }
        marks[i] = 2;
        false
    }
    let mut marks = vec![0u8; items.len()];
    (0..items.len()).any(|i| visit(i, items, &index, &mut marks))
}

/// The mailbox an inner URL addresses, for the per-mailbox parallelism limit (`None`: not a mailbox).
fn mailbox_of(sim: &SharedSim, principal: &Principal, url: &str) -> Option<String> {
    let path = url.split('?').next().unwrap_or(url).trim_start_matches('/');
    let mut segments = path.split('/');
    match segments.next()? {
        s if s.eq_ignore_ascii_case("me") => segments
            .next()
            .map(|_| principal.user_id.to_ascii_lowercase()),
        s if s.eq_ignore_ascii_case("users") => {
            let user = segments.next()?;
            segments.next()?;
            Some(
                sim.find_user(user)
                    .map(|u| u.id)
                    .unwrap_or_else(|| user.to_owned())
                    .to_ascii_lowercase(),
            )
        }
        _ => None,
    }
}

/// `Retry-After`, `Content-Type`, `OData-Version`: header names as Graph writes them in batch items.
fn display_name(name: &HeaderName) -> String {
    if name.as_str() == "odata-version" {
        return "OData-Version".to_owned();
    }
    name.as_str()
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

async fn run_item(
    router: Router,
    item: &Item,
    authorization: Option<HeaderValue>,
    client_request_id: Option<HeaderValue>,
) -> Value {
    let relative = if item.url.starts_with('/') {
        item.url.clone()
    } else {
        format!("/{}", item.url)
    };
    if relative
        .trim_start_matches('/')
        .to_ascii_lowercase()
        .starts_with("$batch")
    {
        return failed_item(
            &item.id,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Nested batch requests are not supported.",
        );
    }
    let mut builder = Request::builder()
        .method(item.method.clone())
        .uri(format!("/v1.0{relative}"));
    for (name, value) in &item.headers {
        // Inner responses are embedded as JSON, never compressed.
        if name != header::ACCEPT_ENCODING {
            builder = builder.header(name, value);
        }
    }
    if let Some(auth) = authorization {
        builder = builder.header(header::AUTHORIZATION, auth);
    }
    if let Some(id) = client_request_id {
        builder = builder.header("client-request-id", id);
    }
    let body = match &item.body {
        None => Body::empty(),
        Some(Value::String(s)) => {
            let json = item.headers.iter().any(|(n, v)| {
                n == header::CONTENT_TYPE && v.to_str().is_ok_and(|v| v.contains("json"))
            });
            if json {
                Body::from(serde_json::to_vec(&Value::String(s.clone())).unwrap_or_default())
            } else {
                Body::from(
                    STANDARD
                        .decode(s)
                        .unwrap_or_else(|_| s.clone().into_bytes()),
                )
            }
        }
        Some(v) => Body::from(serde_json::to_vec(v).unwrap_or_default()),
    };
    let request = match builder.body(body) {
        Ok(r) => r,
        Err(_) => {
            return failed_item(
                &item.id,
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "Invalid request URL or headers.",
            );
        }
    };
    let response = match router.oneshot(request).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = response.status();
    let mut headers = Map::new();
    for (name, value) in response.headers() {
        if matches!(
            name.as_str(),
            "content-length" | "request-id" | "client-request-id" | "x-ms-ags-diagnostic"
        ) {
            continue;
        }
        if let Ok(v) = value.to_str() {
            headers.insert(display_name(name), Value::from(v));
        }
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    let bytes: Bytes = axum::body::to_bytes(response.into_body(), MAX_INNER_BODY)
        .await
        .unwrap_or_default();
    let mut out = Map::new();
    out.insert("id".into(), Value::from(item.id.clone()));
    out.insert("status".into(), Value::from(status.as_u16()));
    out.insert("headers".into(), Value::Object(headers));
    if !bytes.is_empty() {
        let body = if is_json {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::from(STANDARD.encode(&bytes)))
        } else {
            Value::from(STANDARD.encode(&bytes))
        };
        out.insert("body".into(), body);
    }
    Value::Object(out)
}

fn failed_item(id: &str, status: StatusCode, code: &str, message: &str) -> Value {
    let ids = crate::graph::RequestIds::current();
    let date = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]"
        ))
        .unwrap_or_default();
    json!({
        "id": id,
        "status": status.as_u16(),
        "headers": {"Content-Type": "application/json"},
        "body": {"error": {"code": code, "message": message, "innerError": {
            "date": date, "request-id": ids.request_id, "client-request-id": ids.client_request_id}}},
    })
}

async fn batch(
    State(sim): State<SharedSim>,
    principal: Principal,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let items = match parse(&body) {
        Ok(items) => items,
        Err(r) => return r,
    };
    let router = crate::graph::router(sim.clone()).with_state(sim.clone());
    let authorization = headers.get(header::AUTHORIZATION).cloned();
    let client_request_id = headers.get("client-request-id").cloned();
    let mut semaphores: HashMap<String, Arc<Semaphore>> = HashMap::new();
    let limits: Vec<Option<Arc<Semaphore>>> = items
        .iter()
        .map(|it| {
            mailbox_of(&sim, &principal, &it.url).map(|m| {
                semaphores
                    .entry(m)
                    .or_insert_with(|| Arc::new(Semaphore::new(PER_MAILBOX_PARALLELISM)))
                    .clone()
            })
        })
        .collect();
    // Status of each finished request, by lower-case id.
    let mut done: HashMap<String, u16> = HashMap::new();
    let mut responses: Vec<Value> = Vec::with_capacity(items.len());
    let mut pending: Vec<usize> = (0..items.len()).collect();
    while !pending.is_empty() {
        let (ready, waiting): (Vec<usize>, Vec<usize>) = pending.iter().partition(|&&i| {
            items[i]
                .depends_on
                .iter()
                .all(|d| done.contains_key(&d.to_ascii_lowercase()))
        });
        pending = waiting;
        let mut runnable = Vec::new();
        for i in ready {
            let item = &items[i];
            let failed_dep = item.depends_on.iter().any(|d| {
                done.get(&d.to_ascii_lowercase())
                    .is_some_and(|s| !(200..300).contains(s))
            });
            if failed_dep {
                done.insert(item.id.to_ascii_lowercase(), 424);
                responses.push(failed_item(
                    &item.id,
                    StatusCode::FAILED_DEPENDENCY,
                    "FailedDependency",
                    "The request was not executed because a request it depends on failed.",
                ));
            } else {
                runnable.push(i);
            }
        }
        let wave = runnable.into_iter().map(|i| {
            let router = router.clone();
            let limit = limits[i].clone();
            let (auth, crid) = (authorization.clone(), client_request_id.clone());
            let item = &items[i];
            async move {
                let _permit = match &limit {
                    Some(s) => Some(s.acquire().await.expect("semaphore open")),
                    None => None,
                };
                run_item(router, item, auth, crid).await
            }
        });
        for response in futures::future::join_all(wave).await {
            let id = response
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_ascii_lowercase();
            let status = response
                .get("status")
                .and_then(Value::as_u64)
                .unwrap_or(500) as u16;
            done.insert(id, status);
            responses.push(response);
        }
    }
    let mut response =
        crate::graph::mail::json_response(StatusCode::OK, &json!({"responses": responses}));
    response.headers_mut().remove(header::CACHE_CONTROL);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(body: &str) -> Result<Vec<String>, u16> {
        parse(body.as_bytes())
            .map(|v| v.into_iter().map(|i| i.id).collect())
            .map_err(|r| r.status().as_u16())
    }

    #[test]
    fn parses_and_validates() {
        assert_eq!(
            ids(r#"{"requests":[{"id":"1","method":"GET","url":"/me"}]}"#),
            Ok(vec!["1".to_owned()])
        );
        assert_eq!(ids("not json"), Err(400));
        assert_eq!(ids(r#"{"requests":[{"id":"1","method":"GET"}]}"#), Err(400));
        assert_eq!(
            ids(
                r#"{"requests":[{"id":"1","method":"GET","url":"/me"},{"id":"1","method":"GET","url":"/me"}]}"#
            ),
            Err(400)
        );
        assert_eq!(
            ids(r#"{"requests":[{"id":"1","method":"POST","url":"/x","body":{}}]}"#),
            Err(400)
        );
        assert_eq!(
            ids(r#"{"requests":[{"id":"1","method":"GET","url":"/me","dependsOn":["2"]}]}"#),
            Err(400)
        );
        assert_eq!(
            ids(
                r#"{"requests":[{"id":"1","method":"GET","url":"/me","dependsOn":["2"]},{"id":"2","method":"GET","url":"/me","dependsOn":["1"]}]}"#
            ),
            Err(400)
        );
        let many: Vec<String> = (0..21)
            .map(|i| format!(r#"{{"id":"{i}","method":"GET","url":"/me"}}"#))
            .collect();
        assert_eq!(
            ids(&format!(r#"{{"requests":[{}]}}"#, many.join(","))),
            Err(400)
        );
    }

    #[test]
    fn header_names_as_graph_writes_them() {
        assert_eq!(
            display_name(&HeaderName::from_static("retry-after")),
            "Retry-After"
        );
        assert_eq!(
            display_name(&HeaderName::from_static("odata-version")),
            "OData-Version"
        );
    }
}
