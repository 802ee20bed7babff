//! DynamoDB implementations of the table-backed ports. Table layouts (keys, the
//! `ByStatusShard` index, TTL attribute) are those of docs/data-model.md; items are the
//! domain types' serde form (camelCase attributes) plus their key attributes. One file per
//! port (`tenants`, `connections`, `sync_state`, `activities`, `crm`); this one holds what
//! they share (attribute helpers, batch writes and reads, page tokens, partition queries).
//!
//! The CRM index is versioned so a replacement is atomic for readers:
//! 1. the new version's id is registered on the `current` pointer item (`pendingVersions`,
//!    readers ignore it) so a crashed import can be cleaned up later;
//! 2. every entry is written under `v#{version}#a#{address}` / `v#{version}#d#{domain}`;
//! 3. the pointer is flipped to the new version with a conditional update (it must still
//!    name the version this import started from; otherwise the import lost a race, deletes
//!    its own entries and reports a conflict);
//! 4. the old version's entries (and those of imports that crashed more than an hour ago)
//!    are deleted.
//!
//! Readers read the pointer, get the entries of that version, and read the pointer again:
//! if it moved, the entries may have been deleted under them, so they retry with the new
//! version. A version's entries are only deleted after the pointer left it, so an
//! unchanged pointer proves the reader saw one complete version.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, KeysAndAttributes, PutRequest, ReturnValue, WriteRequest,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::{StreamExt, TryStreamExt, stream};
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use tracing::{debug, instrument, warn};

use super::backoff::Backoff;
use crate::domain::crm::{normalize_domain, normalize_email};
use crate::domain::{
    AccountRecord, Activity, ActivityId, AddressRecord, Connection, ConnectionStatus, CrmAdditions,
    CrmIndexSummary, CrmLookup, CrmRecordKind, CrmSnapshot, FolderCursor, Lease, ReplaceOutcome,
    StatusChange, SyncKey, SyncKind, SyncMeta, Tenant, TenantId, TenantSwitches, UserKey,
    UserSwitches,
};
use crate::matching::{CrmMatchIndex, CrmMatchIndexBuilder};
use crate::ports::{
    ActivityStore, ConnectionStore, CrmIndex, Page, PageToken, StoreError, SyncStateStore,
    TenantStore,
};

mod activities;
mod connections;
mod crm;
mod fence;
mod meeting_consent;
mod subscriptions;
mod sync_state;
mod tenants;

pub use activities::*;
pub use connections::*;
pub use crm::*;
pub use fence::*;
pub use meeting_consent::*;
pub use subscriptions::DynamoSubscriptionStore;
pub use sync_state::*;
pub use tenants::*;

pub(super) type Item = HashMap<String, AttributeValue>;

/// DynamoDB's limit of write requests in one BatchWriteItem.
pub const BATCH_WRITE_LIMIT: usize = 25;
/// DynamoDB's limit of keys in one BatchGetItem.
pub const BATCH_GET_LIMIT: usize = 100;
/// Batch calls in flight at once per operation.
const BATCH_CONCURRENCY: usize = 4;

/// Name of the status index (docs/data-model.md): partition key `statusShard`
/// (`{status}#{shard}`), sort key `connectionKey`.
pub const BY_STATUS_INDEX: &str = "ByStatusShard";

pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(super) fn backend(
    operation: &'static str,
    resource: &str,
    error: impl std::error::Error + Send + Sync + 'static,
) -> StoreError {
    StoreError::Backend {
        operation,
        resource: resource.to_owned(),
        source: Box::new(error),
    }
}

/// The errors of the write operations that take a condition expression.
pub(super) trait ConditionalWriteError {
    fn is_condition_failed(&self) -> bool;
}

macro_rules! conditional_write_error {
    ($($error:ty),*) => {$(
        impl ConditionalWriteError for $error {
            fn is_condition_failed(&self) -> bool {
                self.is_conditional_check_failed_exception()
            }
        }
    )*};
}

conditional_write_error!(
    aws_sdk_dynamodb::operation::put_item::PutItemError,
    aws_sdk_dynamodb::operation::delete_item::DeleteItemError,
    aws_sdk_dynamodb::operation::update_item::UpdateItemError
);

/// A conditional write's outcome: `Some(output)` when it was applied, `None` when its
/// condition did not hold, a backend error otherwise.
pub(super) fn conditional<O, E, R>(
    result: Result<O, aws_sdk_dynamodb::error::SdkError<E, R>>,
    operation: &'static str,
    resource: &str,
) -> Result<Option<O>, StoreError>
where
    E: ConditionalWriteError + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(output) => Ok(Some(output)),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(ConditionalWriteError::is_condition_failed) =>
        {
            Ok(None)
        }
        Err(error) => Err(backend(operation, resource, error)),
    }
}

fn to_item(value: &impl Serialize, resource: &str, key: &str) -> Result<Item, StoreError> {
    serde_dynamo::to_item(value).map_err(|error| StoreError::Corrupt {
        resource: resource.to_owned(),
        key: key.to_owned(),
        source: Box::new(error),
    })
}

/// One attribute's value (a nested struct as a map), for an update of that attribute alone.
fn to_value(
    value: &impl Serialize,
    resource: &str,
    key: &str,
) -> Result<AttributeValue, StoreError> {
    serde_dynamo::to_attribute_value(value).map_err(|error| StoreError::Corrupt {
        resource: resource.to_owned(),
        key: key.to_owned(),
        source: Box::new(error),
    })
}

fn from_item<T: DeserializeOwned>(item: Item, resource: &str, key: &str) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(|error| StoreError::Corrupt {
        resource: resource.to_owned(),
        key: key.to_owned(),
        source: Box::new(error),
    })
}

fn string_attr<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|value| value.as_s().ok())
        .map(String::as_str)
}

/// A page token is the `LastEvaluatedKey` (string attributes only, as all our keys are),
/// as base64url JSON.
fn encode_token(key: &Item) -> Result<PageToken, StoreError> {
    let mut plain = BTreeMap::new();
    for (name, value) in key {
        let value = value.as_s().map_err(|_| StoreError::InvalidPageToken)?;
        plain.insert(name.clone(), value.clone());
    }
    let json = serde_json::to_vec(&plain).map_err(|_| StoreError::InvalidPageToken)?;
    Ok(PageToken(URL_SAFE_NO_PAD.encode(json)))
}

fn decode_token(token: &PageToken) -> Result<Item, StoreError> {
    let json = URL_SAFE_NO_PAD
        .decode(token.as_str())
        .map_err(|_| StoreError::InvalidPageToken)?;
    let plain: BTreeMap<String, String> =
        serde_json::from_slice(&json).map_err(|_| StoreError::InvalidPageToken)?;
    if plain.is_empty() {
        return Err(StoreError::InvalidPageToken);
    }
    Ok(plain
        .into_iter()
        .map(|(name, value)| (name, s(value)))
        .collect())
}

/// Writes (puts and deletes) in chunks of 25, a few chunks at a time, retrying
/// `UnprocessedItems` with backoff until done or the budget is spent.
async fn batch_write(
    client: &Client,
    table: &str,
    requests: Vec<WriteRequest>,
    backoff: Backoff,
) -> Result<(), StoreError> {
    let chunks: Vec<Vec<WriteRequest>> = requests
        .chunks(BATCH_WRITE_LIMIT)
        .map(<[WriteRequest]>::to_vec)
        .collect();
    stream::iter(chunks)
        .map(|chunk| write_chunk(client, table, chunk, backoff))
        .buffer_unordered(BATCH_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await
        .map(drop)
}

async fn write_chunk(
    client: &Client,
    table: &str,
    mut pending: Vec<WriteRequest>,
    backoff: Backoff,
) -> Result<(), StoreError> {
    let mut attempt = 0;
    while !pending.is_empty() {
        attempt += 1;
        if attempt > backoff.attempts {
            return Err(StoreError::Unprocessed {
                operation: "BatchWriteItem",
                resource: table.to_owned(),
                remaining: pending.len(),
                attempts: backoff.attempts,
            });
        }
        if attempt > 1 {
            backoff.sleep(attempt - 1).await;
        }
        let output = client
            .batch_write_item()
            .request_items(table, pending)
            .send()
            .await
            .map_err(|error| backend("BatchWriteItem", table, error))?;
        pending = output
            .unprocessed_items
            .and_then(|mut unprocessed| unprocessed.remove(table))
            .unwrap_or_default();
        if !pending.is_empty() {
            debug!(
                table,
                unprocessed = pending.len(),
                attempt,
                "BatchWriteItem left items unprocessed"
            );
        }
    }
    Ok(())
}

/// Gets keys in chunks of 100 with consistent reads, retrying `UnprocessedKeys`.
async fn batch_get(
    client: &Client,
    table: &str,
    keys: Vec<Item>,
    projection: Option<&str>,
    backoff: Backoff,
) -> Result<Vec<Item>, StoreError> {
    let chunks: Vec<Vec<Item>> = keys.chunks(BATCH_GET_LIMIT).map(<[Item]>::to_vec).collect();
    let pages: Vec<Vec<Item>> = stream::iter(chunks)
        .map(|chunk| get_chunk(client, table, chunk, projection, backoff))
        .buffer_unordered(BATCH_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(pages.into_iter().flatten().collect())
}

async fn get_chunk(
    client: &Client,
    table: &str,
    keys: Vec<Item>,
    projection: Option<&str>,
    backoff: Backoff,
) -> Result<Vec<Item>, StoreError> {
    let mut found = Vec::with_capacity(keys.len());
    let mut pending = Some(keys);
    let mut attempt = 0;
    while let Some(keys) = pending.take().filter(|keys| !keys.is_empty()) {
        attempt += 1;
        if attempt > backoff.attempts {
            return Err(StoreError::Unprocessed {
                operation: "BatchGetItem",
                resource: table.to_owned(),
                remaining: keys.len(),
                attempts: backoff.attempts,
            });
        }
        if attempt > 1 {
            backoff.sleep(attempt - 1).await;
        }
        let request = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(true)
            .set_projection_expression(projection.map(str::to_owned))
            .build()
            .map_err(|error| backend("BatchGetItem", table, error))?;
        let output = client
            .batch_get_item()
            .request_items(table, request)
            .send()
            .await
            .map_err(|error| backend("BatchGetItem", table, error))?;
        if let Some(mut responses) = output.responses
            && let Some(items) = responses.remove(table)
        {
            found.extend(items);
        }
        pending = output
            .unprocessed_keys
            .and_then(|mut unprocessed| unprocessed.remove(table))
            .map(|keys_and_attributes| keys_and_attributes.keys);
    }
    Ok(found)
}

fn put_request(item: Item, table: &str) -> Result<WriteRequest, StoreError> {
    let put = PutRequest::builder()
        .set_item(Some(item))
        .build()
        .map_err(|error| backend("BatchWriteItem", table, error))?;
    Ok(WriteRequest::builder().put_request(put).build())
}

fn delete_request(key: Item, table: &str) -> Result<WriteRequest, StoreError> {
    let delete = DeleteRequest::builder()
        .set_key(Some(key))
        .build()
        .map_err(|error| backend("BatchWriteItem", table, error))?;
    Ok(WriteRequest::builder().delete_request(delete).build())
}

/// Deletes every item of a partition (those whose sort key starts with `prefix`, when
/// given): one keys-only Query, then BatchWriteItem deletes; how many there were.
async fn delete_partition(
    client: &Client,
    table: &str,
    partition: (&str, &str),
    sort: (&str, Option<&str>),
    backoff: Backoff,
) -> Result<u64, StoreError> {
    let keys = query_partition(client, table, partition, sort, true).await?;
    let count = keys.len() as u64;
    let requests = keys
        .into_iter()
        .map(|key| delete_request(key, table))
        .collect::<Result<Vec<_>, _>>()?;
    batch_write(client, table, requests, backoff).await?;
    Ok(count)
}

/// Every item of a partition (optionally only those whose sort key starts with
/// `prefix`; optionally only the key attributes), following pages.
async fn query_partition(
    client: &Client,
    table: &str,
    (partition_attr, partition): (&str, &str),
    (sort_attr, prefix): (&str, Option<&str>),
    keys_only: bool,
) -> Result<Vec<Item>, StoreError> {
    let mut items = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let mut request = client
            .query()
            .table_name(table)
            .consistent_read(true)
            .expression_attribute_names("#pk", partition_attr)
            .expression_attribute_values(":pk", s(partition))
            .set_exclusive_start_key(start.take());
        request = match prefix {
            Some(prefix) => request
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                .expression_attribute_values(":prefix", s(prefix)),
            None => request.key_condition_expression("#pk = :pk"),
        };
        if keys_only {
            request = request.projection_expression("#pk, #sk");
        }
        if keys_only || prefix.is_some() {
            request = request.expression_attribute_names("#sk", sort_attr);
        }
        let output = request
            .send()
            .await
            .map_err(|error| backend("Query", table, error))?;
        items.extend(output.items.unwrap_or_default());
        match output.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok(items),
        }
    }
}
