//! A counting HTTP proxy in front of moto: the function under test gets the proxy as its
//! `AWS_ENDPOINT_URL`, so every AWS call it makes is counted (by operation, and DynamoDB
//! writes by table and by item) without touching the SDK or the function. Requests and
//! answers pass through byte for byte.
//!
//! For the 100,000-connection fan-out it can also answer two calls itself ([`FanOutStandIn`]):
//! the `ByStatusShard` Query of the connections table (one shard per Query), from the very items written through the
//! proxy with BatchWriteItem (captured on the way to moto), and SendMessageBatch to the mail
//! queue. moto re-scans and re-sorts the whole table for every Query page and re-scans the
//! queue for every message sent, so at that size it would measure moto, not the fan-out.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// What went through the proxy.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AwsCounts {
    /// `DynamoDB_20120810.BatchWriteItem`, `AmazonSQS.SendMessageBatch`, ... → calls.
    pub calls: BTreeMap<String, u64>,
    /// DynamoDB write calls (PutItem, UpdateItem, DeleteItem, BatchWriteItem,
    /// TransactWriteItems) by table name.
    pub dynamo_write_calls: BTreeMap<String, u64>,
    /// Items those calls wrote or deleted, by table name.
    pub dynamo_items_written: BTreeMap<String, u64>,
    /// Time the emulator took to answer, by operation (ms, summed over calls that may
    /// have overlapped).
    pub upstream_ms: BTreeMap<String, f64>,
    /// DynamoDB read request units by table, estimated from the wire ([`read_units`]).
    pub read_units: BTreeMap<String, f64>,
    /// DynamoDB write request units by table, estimated from the wire ([`write_units`]).
    pub write_units: BTreeMap<String, f64>,
}

/// Read request units of one DynamoDB call, by table, by the on-demand rules (one unit per
/// strongly consistent read of up to 4 KB, half for an eventually consistent one, two for
/// a transactional one), sizes estimated from the wire: an item's size is taken as the
/// size of its DynamoDB JSON in the answer (a little more than DynamoDB counts, so the
/// estimate errs high). GetItem: the answer's size; BatchGetItem: every key asked for
/// (items here are well under 4 KB); Query/Scan: the answer's size, at least one unit's
/// worth; TransactGetItems: every item, twice.
pub fn read_units(operation: &str, request: &Value, answer: &[u8]) -> Vec<(String, f64)> {
    let factor = |consistent: bool| if consistent { 1.0 } else { 0.5 };
    let blocks = |bytes: usize, size: f64| ((bytes as f64) / size).ceil().max(1.0);
    let consistent = request["ConsistentRead"].as_bool() == Some(true);
    let table = || request["TableName"].as_str().unwrap_or("?").to_owned();
    match operation {
        "GetItem" => vec![(table(), blocks(answer.len(), 4096.0) * factor(consistent))],
        "Query" | "Scan" => vec![(table(), blocks(answer.len(), 4096.0) * factor(consistent))],
        "BatchGetItem" => request["RequestItems"]
            .as_object()
            .map(|tables| {
                tables
                    .iter()
                    .map(|(table, ask)| {
                        let keys = ask["Keys"].as_array().map_or(0, Vec::len) as f64;
                        let consistent = ask["ConsistentRead"].as_bool() == Some(true);
                        (table.clone(), keys * factor(consistent))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        "TransactGetItems" => request["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|item| {
                let table = item["Get"]["TableName"].as_str().unwrap_or("?").to_owned();
                (table, 2.0)
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Write request units of one DynamoDB call, by table: one per KB of each item written
/// (its DynamoDB JSON in the request), at least one per item (a delete, or a conditional
/// write whose condition fails, still costs one), twice in a transaction. An UpdateItem
/// is charged by DynamoDB for the larger of the item before and after; the estimate takes
/// the request's size, so it errs low for updates of large items.
pub fn write_units(operation: &str, request: &Value) -> Vec<(String, f64)> {
    let units = |v: &Value| (v.to_string().len() as f64 / 1024.0).ceil().max(1.0);
    let table = || request["TableName"].as_str().unwrap_or("?").to_owned();
    match operation {
        "PutItem" => vec![(table(), units(&request["Item"]))],
        "UpdateItem" => vec![(table(), units(request))],
        "DeleteItem" => vec![(table(), 1.0)],
        "BatchWriteItem" => request["RequestItems"]
            .as_object()
            .map(|tables| {
                tables
                    .iter()
                    .map(|(table, writes)| {
                        let total: f64 = writes
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|w| match w.get("PutRequest") {
                                Some(put) => units(&put["Item"]),
                                None => 1.0,
                            })
                            .sum();
                        (table.clone(), total)
                    })
                    .collect()
            })
            .unwrap_or_default(),
        "TransactWriteItems" => request["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| {
                ["Put", "Update", "Delete", "ConditionCheck"]
                    .iter()
                    .find_map(|kind| item.get(*kind).map(|w| (*kind, w)))
            })
            .map(|(kind, w)| {
                let table = w["TableName"].as_str().unwrap_or("?").to_owned();
                let each = match kind {
                    "Put" => units(&w["Item"]),
                    "Update" => units(w),
                    _ => 1.0,
                };
                (table, 2.0 * each)
            })
            .collect(),
        _ => Vec::new(),
    }
}

impl AwsCounts {
    pub fn calls_of(&self, operation: &str) -> u64 {
        self.calls
            .iter()
            .filter(|(name, _)| name.ends_with(&format!(".{operation}")))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn total_calls(&self) -> u64 {
        self.calls.values().sum()
    }

    /// Capacity of a DynamoDB call, once its answer is in.
    fn record_units(&mut self, target: &str, body: &[u8], answer: &[u8]) {
        let Some(operation) = target.strip_prefix("DynamoDB_20120810.") else {
            return;
        };
        let Ok(body) = serde_json::from_slice::<Value>(body) else {
            return;
        };
        for (table, units) in read_units(operation, &body, answer) {
            *self.read_units.entry(table).or_default() += units;
        }
        for (table, units) in write_units(operation, &body) {
            *self.write_units.entry(table).or_default() += units;
        }
    }

    pub fn total_read_units(&self) -> f64 {
        self.read_units.values().fold(0.0, |a, b| a + b)
    }

    pub fn total_write_units(&self) -> f64 {
        self.write_units.values().fold(0.0, |a, b| a + b)
    }

    fn record(&mut self, target: &str, body: &[u8]) {
        *self.calls.entry(target.to_owned()).or_default() += 1;
        let Some(operation) = target.strip_prefix("DynamoDB_20120810.") else {
            return;
        };
        let Ok(body) = serde_json::from_slice::<Value>(body) else {
            return;
        };
        let mut add = |table: &str, items: u64| {
            *self.dynamo_write_calls.entry(table.to_owned()).or_default() += 1;
            *self
                .dynamo_items_written
                .entry(table.to_owned())
                .or_default() += items;
        };
        match operation {
            "PutItem" | "UpdateItem" | "DeleteItem" => {
                if let Some(table) = body["TableName"].as_str() {
                    add(table, 1);
                }
            }
            "BatchWriteItem" => {
                if let Some(tables) = body["RequestItems"].as_object() {
                    for (table, items) in tables {
                        add(table, items.as_array().map_or(0, |a| a.len() as u64));
                    }
                }
            }
            "TransactWriteItems" => {
                let mut per_table: BTreeMap<String, u64> = BTreeMap::new();
                for item in body["TransactItems"].as_array().into_iter().flatten() {
                    for kind in ["Put", "Update", "Delete"] {
                        if let Some(table) = item[kind]["TableName"].as_str() {
                            *per_table.entry(table.to_owned()).or_default() += 1;
                        }
                    }
                }
                for (table, items) in per_table {
                    add(&table, items);
                }
            }
            _ => {}
        }
    }
}

/// The operation of an AWS request: `X-Amz-Target` (JSON protocols), else the query
/// protocol's `Action`.
fn operation(headers: &HeaderMap, body: &[u8]) -> String {
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        return target.to_owned();
    }
    let action = url::form_urlencoded::parse(body)
        .find(|(key, _)| key == "Action")
        .map(|(_, value)| value.into_owned());
    match action {
        Some(action) => format!("query.{action}"),
        None => "unknown".to_owned(),
    }
}

/// The two calls the proxy answers itself during a large fan-out.
#[derive(Clone, Debug)]
pub struct FanOutStandIn {
    pub connections_table: String,
    pub index: String,
    pub queue_url: String,
}

/// Items written to one table through the proxy, in DynamoDB's wire JSON.
#[derive(Default)]
struct Captured {
    table: String,
    /// connectionKey → item.
    items: BTreeMap<String, Value>,
}

struct Shared {
    upstream: String,
    http: reqwest::Client,
    counts: Mutex<AwsCounts>,
    captured: Mutex<Option<Captured>>,
    stand_in: Mutex<Option<FanOutStandIn>>,
}

/// The running proxy.
pub struct AwsProxy {
    pub endpoint: String,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl AwsProxy {
    /// Listens on 127.0.0.1 and forwards to `upstream` (moto's endpoint).
    pub async fn start(upstream: &str) -> Result<AwsProxy> {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            // Bodies pass through untouched: no decompression, no redirects, no proxies.
            http: reqwest::Client::builder()
                .no_gzip()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(64)
                .build()?,
            counts: Mutex::new(AwsCounts::default()),
            captured: Mutex::new(None),
            stand_in: Mutex::new(None),
        });
        let app = Router::new().fallback(forward).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let (shutdown, stop) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop.await;
                })
                .await;
        });
        Ok(AwsProxy {
            endpoint,
            shared,
            shutdown: Some(shutdown),
        })
    }

    pub fn counts(&self) -> AwsCounts {
        self.shared
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// From now on, keeps a copy of every item written to `table` with BatchWriteItem
    /// (keyed by `connectionKey`).
    pub fn capture(&self, table: &str) {
        *self
            .shared
            .captured
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Captured {
            table: table.to_owned(),
            items: BTreeMap::new(),
        });
    }

    /// Items captured so far.
    pub fn captured(&self) -> usize {
        self.shared
            .captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or(0, |c| c.items.len())
    }

    /// Answers the fan-out's Query and SendMessageBatch itself (`None`: moto again).
    pub fn stand_in(&self, stand_in: Option<FanOutStandIn>) {
        *self
            .shared
            .stand_in
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = stand_in;
    }

    /// Counts from zero (and returns what was counted).
    pub fn take(&self) -> AwsCounts {
        std::mem::take(&mut *self.shared.counts.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for AwsProxy {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

const HOP_BY_HOP: [&str; 5] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
];

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let target = operation(&parts.headers, &body);
    shared
        .counts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .record(&target, &body);
    if target == "DynamoDB_20120810.BatchWriteItem" {
        capture(&shared, &body);
    }
    let stand_in = shared
        .stand_in
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if let Some(stand_in) = stand_in
        && let Some(answer) = answer_locally(&shared, &stand_in, &target, &body)
    {
        return answer;
    }
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut upstream = shared
        .http
        .request(parts.method.clone(), format!("{}{path}", shared.upstream));
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            upstream = upstream.header(name, value);
        }
    }
    let started = std::time::Instant::now();
    let answer = match upstream.body(Bytes::clone(&body)).send().await {
        Ok(answer) => answer,
        Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
    };
    let status = answer.status();
    let mut headers = HeaderMap::new();
    for (name, value) in answer.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            headers.append(name, value.clone());
        }
    }
    let Ok(bytes) = answer.bytes().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    {
        let mut counts = shared.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.record_units(&target, &body, &bytes);
        *counts.upstream_ms.entry(target).or_default() += started.elapsed().as_secs_f64() * 1000.0;
    }
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn capture(shared: &Shared, body: &[u8]) {
    let mut captured = shared.captured.lock().unwrap_or_else(|e| e.into_inner());
    let Some(captured) = captured.as_mut() else {
        return;
    };
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    for request in body["RequestItems"][&captured.table]
        .as_array()
        .into_iter()
        .flatten()
    {
        let item = &request["PutRequest"]["Item"];
        if let Some(key) = item["connectionKey"]["S"].as_str() {
            captured.items.insert(key.to_owned(), item.clone());
        }
    }
}

fn json_response(body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    if let Ok(id) = axum::http::HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        headers.insert("x-amzn-requestid", id);
    }
    response
}

/// The stand-in's answer, or `None` when the call is not one it takes.
fn answer_locally(
    shared: &Shared,
    stand_in: &FanOutStandIn,
    target: &str,
    body: &[u8],
) -> Option<Response> {
    let request: Value = serde_json::from_slice(body).ok()?;
    match target {
        "DynamoDB_20120810.Query"
            if request["TableName"] == stand_in.connections_table.as_str()
                && request["IndexName"] == stand_in.index.as_str() =>
        {
            // `#key = :value`: the index's partition key attribute (`statusShard`) and the one
            // value asked for (`active#3`).
            let attribute = request["ExpressionAttributeNames"]
                .as_object()?
                .values()
                .next()?
                .as_str()?
                .to_owned();
            let status = request["ExpressionAttributeValues"]
                .as_object()?
                .values()
                .next()?
                .get("S")?
                .as_str()?
                .to_owned();
            let limit = request["Limit"].as_u64().unwrap_or(u64::MAX) as usize;
            let after = request["ExclusiveStartKey"]["connectionKey"]["S"]
                .as_str()
                .map(str::to_owned);
            let captured = shared.captured.lock().unwrap_or_else(|e| e.into_inner());
            let items = captured.as_ref().map(|c| &c.items)?;
            let range = match &after {
                Some(key) => items.range::<String, _>((
                    std::ops::Bound::Excluded(key.clone()),
                    std::ops::Bound::Unbounded,
                )),
                None => items.range::<String, _>(..),
            };
            let page: Vec<&Value> = range
                .map(|(_, item)| item)
                .filter(|item| item[attribute.as_str()]["S"].as_str() == Some(status.as_str()))
                .take(limit)
                .collect();
            let mut answer =
                json!({"Count": page.len(), "ScannedCount": page.len(), "Items": page});
            // As DynamoDB: a full page names its last key, even when nothing follows.
            if page.len() == limit
                && let Some(last) = page.last()
            {
                answer["LastEvaluatedKey"] = json!({
                    attribute.as_str(): last[attribute.as_str()], "connectionKey": last["connectionKey"],
                    "tenantId": last["tenantId"], "userId": last["userId"],
                });
            }
            Some(json_response(&answer))
        }
        "AmazonSQS.SendMessageBatch" if request["QueueUrl"] == stand_in.queue_url.as_str() => {
            use md5::Digest;
            let successful: Vec<Value> = request["Entries"]
                .as_array()?
                .iter()
                .map(|entry| {
                    let body = entry["MessageBody"].as_str().unwrap_or_default();
                    json!({
                        "Id": entry["Id"],
                        "MessageId": uuid::Uuid::new_v4().to_string(),
                        "MD5OfMessageBody": hex_lower(&md5::Md5::digest(body.as_bytes())),
                    })
                })
                .collect();
            Some(json_response(
                &json!({"Successful": successful, "Failed": []}),
            ))
        }
        _ => None,
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_counted_by_table_and_item() {
        let mut counts = AwsCounts::default();
        counts.record(
            "DynamoDB_20120810.BatchWriteItem",
            br#"{"RequestItems":{"acts":[{"PutRequest":{}},{"PutRequest":{}}],"state":[{"DeleteRequest":{}}]}}"#,
        );
        counts.record(
            "DynamoDB_20120810.PutItem",
            br#"{"TableName":"state","Item":{}}"#,
        );
        counts.record("DynamoDB_20120810.GetItem", br#"{"TableName":"state"}"#);
        counts.record(
            "DynamoDB_20120810.TransactWriteItems",
            br#"{"TransactItems":[{"Put":{"TableName":"acts"}},{"Update":{"TableName":"acts"}},{"ConditionCheck":{"TableName":"x"}}]}"#,
        );
        counts.record("AmazonSQS.SendMessageBatch", b"{}");
        assert_eq!(counts.dynamo_write_calls["acts"], 2);
        assert_eq!(counts.dynamo_items_written["acts"], 4);
        assert_eq!(counts.dynamo_write_calls["state"], 2);
        assert_eq!(counts.dynamo_items_written["state"], 2);
        assert!(!counts.dynamo_write_calls.contains_key("x"));
        assert_eq!(counts.calls_of("SendMessageBatch"), 1);
        assert_eq!(counts.calls_of("GetItem"), 1);
        assert_eq!(counts.total_calls(), 5);
    }

    #[test]
    fn request_units_follow_the_on_demand_rules() {
        let get = |consistent: bool| json!({"TableName": "subs", "ConsistentRead": consistent});
        let small = vec![b'x'; 300];
        let large = vec![b'x'; 9000];
        assert_eq!(
            read_units("GetItem", &get(true), &small),
            [("subs".to_owned(), 1.0)]
        );
        assert_eq!(
            read_units("GetItem", &get(false), &small),
            [("subs".to_owned(), 0.5)]
        );
        assert_eq!(
            read_units("GetItem", &get(true), &large),
            [("subs".to_owned(), 3.0)]
        );
        assert_eq!(
            read_units("Query", &get(false), &large),
            [("subs".to_owned(), 1.5)]
        );
        let batch = json!({"RequestItems": {"subs": {"Keys": [{}, {}, {}]},
                                             "conns": {"Keys": [{}], "ConsistentRead": true}}});
        let mut units = read_units("BatchGetItem", &batch, b"{}");
        units.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(units, [("conns".to_owned(), 1.0), ("subs".to_owned(), 1.5)]);
        assert!(read_units("PutItem", &get(true), &small).is_empty());

        let big_item = json!({"Item": {"body": {"S": "y".repeat(2500)}}, "TableName": "acts"});
        assert_eq!(
            write_units("PutItem", &big_item),
            [("acts".to_owned(), 3.0)]
        );
        assert_eq!(
            write_units("UpdateItem", &json!({"TableName": "subs", "Key": {}})),
            [("subs".to_owned(), 1.0)]
        );
        let transact = json!({"TransactItems": [
            {"Put": {"TableName": "subs", "Item": {"a": {"S": "b"}}}},
            {"Delete": {"TableName": "subs", "Key": {}}}]});
        assert_eq!(
            write_units("TransactWriteItems", &transact),
            [("subs".to_owned(), 2.0), ("subs".to_owned(), 2.0)]
        );
        let batch_write = json!({"RequestItems": {"acts": [
            {"PutRequest": {"Item": {"body": {"S": "z".repeat(1500)}}}},
            {"DeleteRequest": {"Key": {}}}]}});
        assert_eq!(
            write_units("BatchWriteItem", &batch_write),
            [("acts".to_owned(), 3.0)]
        );
        let mut counts = AwsCounts::default();
        counts.record_units(
            "DynamoDB_20120810.GetItem",
            get(true).to_string().as_bytes(),
            &small,
        );
        counts.record_units("AmazonSQS.SendMessage", b"{}", b"{}");
        assert_eq!(counts.total_read_units(), 1.0);
        assert_eq!(counts.total_write_units(), 0.0);
    }

    #[test]
    fn the_query_protocol_names_its_action() {
        let headers = HeaderMap::new();
        assert_eq!(
            operation(&headers, b"Action=SendMessageBatch&Version=2012-11-05"),
            "query.SendMessageBatch"
        );
    }

    /// Items written through the proxy come back from the stand-in's Query in key order,
    /// a page at a time, and SendMessageBatch is answered in SQS's shape; nothing reaches
    /// the (absent) upstream for those calls.
    #[tokio::test]
    async fn the_stand_in_serves_captured_items_and_accepts_sends() -> Result<()> {
        let proxy = AwsProxy::start("http://127.0.0.1:9").await?;
        proxy.capture("conns");
        let http = reqwest::Client::new();
        let call = |target: &'static str, body: Value| {
            http.post(&proxy.endpoint)
                .header("x-amz-target", target)
                .header("content-type", "application/x-amz-json-1.0")
                .body(body.to_string())
                .send()
        };
        let items: Vec<Value> = ["t1#u3", "t1#u1", "t2#u2"]
            .iter()
            .map(|key| {
                let (tenant, user) = key.split_once('#').expect("key");
                json!({"PutRequest": {"Item": {"tenantId": {"S": tenant}, "userId": {"S": user},
                       "status": {"S": "active"}, "statusShard": {"S": "active#0"},
                       "connectionKey": {"S": key}}}})
            })
            .collect();
        // Forwarded to the unreachable upstream (502), but captured on the way.
        let written = call(
            "DynamoDB_20120810.BatchWriteItem",
            json!({"RequestItems": {"conns": items}}),
        )
        .await?;
        assert_eq!(written.status(), 502);
        assert_eq!(proxy.captured(), 3);
        proxy.stand_in(Some(FanOutStandIn {
            connections_table: "conns".into(),
            index: "ByStatusShard".into(),
            queue_url: "http://q/mail".into(),
        }));
        let query = |start: Option<Value>| {
            let mut body = json!({"TableName": "conns", "IndexName": "ByStatusShard", "Limit": 2,
                "KeyConditionExpression": "#shard = :shard",
                "ExpressionAttributeNames": {"#shard": "statusShard"},
                "ExpressionAttributeValues": {":shard": {"S": "active#0"}}});
            if let Some(start) = start {
                body["ExclusiveStartKey"] = start;
            }
            call("DynamoDB_20120810.Query", body)
        };
        let first: Value = query(None).await?.json().await?;
        assert_eq!(first["Count"], 2);
        assert_eq!(first["Items"][0]["connectionKey"]["S"], "t1#u1");
        assert_eq!(first["Items"][1]["connectionKey"]["S"], "t1#u3");
        assert_eq!(first["LastEvaluatedKey"]["userId"]["S"], "u3");
        let second: Value = query(Some(first["LastEvaluatedKey"].clone()))
            .await?
            .json()
            .await?;
        assert_eq!(second["Count"], 1);
        assert_eq!(second["Items"][0]["connectionKey"]["S"], "t2#u2");
        assert!(second.get("LastEvaluatedKey").is_none());
        let sent: Value = call(
            "AmazonSQS.SendMessageBatch",
            json!({"QueueUrl": "http://q/mail", "Entries": [{"Id": "0", "MessageBody": "hello"}]}),
        )
        .await?
        .json()
        .await?;
        assert_eq!(sent["Successful"][0]["Id"], "0");
        assert_eq!(
            sent["Successful"][0]["MD5OfMessageBody"],
            "5d41402abc4b2a76b9719d911017c592"
        );
        assert_eq!(sent["Failed"], json!([]));
        let counts = proxy.take();
        assert_eq!(counts.calls_of("Query"), 2);
        assert_eq!(counts.calls_of("SendMessageBatch"), 1);
        Ok(())
    }
}
