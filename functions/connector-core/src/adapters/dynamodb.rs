//! DynamoDB implementations of the table-backed ports. Table layouts (keys, the
//! `ByStatus` index, TTL attribute) are those of docs/data-model.md; items are the
//! domain types' serde form (camelCase attributes) plus their key attributes.
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
    AccountRecord, Activity, ActivityId, AddressRecord, Connection, ConnectionStatus,
    CrmIndexSummary, CrmLookup, CrmRecordKind, CrmSnapshot, FolderCursor, Lease, ReplaceOutcome,
    StatusChange, SyncKey, SyncKind, SyncMeta, Tenant, TenantId, UserKey, UserSwitches,
};
use crate::matching::{CrmMatchIndex, CrmMatchIndexBuilder};
use crate::ports::{
    ActivityStore, ConnectionStore, CrmIndex, Page, PageToken, StoreError, SyncStateStore,
    TenantStore,
};

pub(super) type Item = HashMap<String, AttributeValue>;

/// DynamoDB's limit of write requests in one BatchWriteItem.
pub const BATCH_WRITE_LIMIT: usize = 25;
/// DynamoDB's limit of keys in one BatchGetItem.
pub const BATCH_GET_LIMIT: usize = 100;
/// Batch calls in flight at once per operation.
const BATCH_CONCURRENCY: usize = 4;

/// Name of the status index (docs/data-model.md).
pub const BY_STATUS_INDEX: &str = "ByStatus";

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

// ---------------------------------------------------------------------------------------
// Tenants

pub struct DynamoTenantStore {
    client: Client,
    table: String,
}

impl DynamoTenantStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

#[async_trait]
impl TenantStore for DynamoTenantStore {
    async fn get_tenant(&self, tenant_id: &TenantId) -> Result<Option<Tenant>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("tenantId", s(tenant_id.as_str()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| backend("GetItem", &self.table, error))?;
        output
            .item
            .map(|item| from_item(item, &self.table, tenant_id.as_str()))
            .transpose()
    }

    async fn put_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        let item = to_item(tenant, &self.table, tenant.tenant_id.as_str())?;
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|error| backend("PutItem", &self.table, error))?;
        Ok(())
    }

    async fn delete_tenant(&self, tenant_id: &TenantId) -> Result<bool, StoreError> {
        let output = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("tenantId", s(tenant_id.as_str()))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|error| backend("DeleteItem", &self.table, error))?;
        Ok(output.attributes.is_some_and(|old| !old.is_empty()))
    }
}

// ---------------------------------------------------------------------------------------
// Connections

pub struct DynamoConnectionStore {
    client: Client,
    table: String,
}

impl DynamoConnectionStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn key(key: &UserKey) -> Item {
        HashMap::from([
            ("tenantId".to_owned(), s(key.tenant_id.as_str())),
            ("userId".to_owned(), s(key.user_id.as_str())),
        ])
    }

    fn decode(&self, item: Item) -> Result<Connection, StoreError> {
        let key = format!(
            "{}#{}",
            string_attr(&item, "tenantId").unwrap_or("?"),
            string_attr(&item, "userId").unwrap_or("?")
        );
        from_item(item, &self.table, &key)
    }

    fn decode_page(
        &self,
        items: Option<Vec<Item>>,
        last: Option<Item>,
    ) -> Result<Page<Connection>, StoreError> {
        let items = items
            .unwrap_or_default()
            .into_iter()
            .map(|item| self.decode(item))
            .collect::<Result<Vec<_>, _>>()?;
        let next = match last {
            Some(key) if !key.is_empty() => Some(encode_token(&key)?),
            _ => None,
        };
        Ok(Page { items, next })
    }

    /// A conditional update of an existing connection, returning the new record.
    async fn update(
        &self,
        key: &UserKey,
        expression: &str,
        names: HashMap<String, String>,
        values: HashMap<String, AttributeValue>,
    ) -> Result<Connection, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(key)))
            .update_expression(expression)
            .condition_expression("attribute_exists(userId)")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match conditional(result, "UpdateItem", &self.table)? {
            Some(output) => self.decode(output.attributes.unwrap_or_default()),
            None => Err(StoreError::NotFound {
                what: format!("connection {key}"),
            }),
        }
    }
}

#[async_trait]
impl ConnectionStore for DynamoConnectionStore {
    async fn get_connection(&self, key: &UserKey) -> Result<Option<Connection>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| backend("GetItem", &self.table, error))?;
        output.item.map(|item| self.decode(item)).transpose()
    }

    async fn upsert_connection(&self, connection: &Connection) -> Result<(), StoreError> {
        let key = connection.key().to_string();
        let mut item = to_item(connection, &self.table, &key)?;
        item.insert("connectionKey".to_owned(), s(key));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|error| backend("PutItem", &self.table, error))?;
        Ok(())
    }

    async fn set_status(
        &self,
        key: &UserKey,
        change: &StatusChange,
    ) -> Result<Connection, StoreError> {
        let at = to_rfc3339(change.at);
        let names = HashMap::from([
            ("#status".to_owned(), "status".to_owned()),
            ("#changed".to_owned(), "statusChangedAt".to_owned()),
            ("#updated".to_owned(), "updatedAt".to_owned()),
            ("#reason".to_owned(), "statusReason".to_owned()),
        ]);
        let mut values = HashMap::from([
            (":status".to_owned(), s(change.status.as_str())),
            (":at".to_owned(), s(at)),
        ]);
        let expression = match &change.reason {
            Some(reason) => {
                values.insert(":reason".to_owned(), s(reason.clone()));
                "SET #status = :status, #changed = :at, #updated = :at, #reason = :reason"
            }
            None => "SET #status = :status, #changed = :at, #updated = :at REMOVE #reason",
        };
        self.update(key, expression, names, values).await
    }

    async fn set_parked_until(
        &self,
        key: &UserKey,
        kind: SyncKind,
        until: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let names = HashMap::from([
            ("#parked".to_owned(), "parkedUntil".to_owned()),
            ("#kind".to_owned(), kind.as_str().to_owned()),
            ("#updated".to_owned(), "updatedAt".to_owned()),
        ]);
        let mut values = HashMap::from([(":now".to_owned(), s(to_rfc3339(now)))]);
        let expression = match until {
            Some(until) => {
                values.insert(":until".to_owned(), s(to_rfc3339(until)));
                "SET #parked.#kind = :until, #updated = :now"
            }
            None => "SET #updated = :now REMOVE #parked.#kind",
        };
        self.update(key, expression, names, values).await.map(drop)
    }

    async fn set_switches(
        &self,
        key: &UserKey,
        switches: UserSwitches,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let switches =
            serde_dynamo::to_attribute_value(switches).map_err(|error| StoreError::Corrupt {
                resource: self.table.clone(),
                key: key.to_string(),
                source: Box::new(error),
            })?;
        let names = HashMap::from([
            ("#switches".to_owned(), "switches".to_owned()),
            ("#updated".to_owned(), "updatedAt".to_owned()),
        ]);
        let values = HashMap::from([
            (":switches".to_owned(), switches),
            (":now".to_owned(), s(to_rfc3339(now))),
        ]);
        self.update(
            key,
            "SET #switches = :switches, #updated = :now",
            names,
            values,
        )
        .await
        .map(drop)
    }

    async fn list_by_tenant(&self, tenant_id: &TenantId) -> Result<Vec<Connection>, StoreError> {
        query_partition(
            &self.client,
            &self.table,
            ("tenantId", tenant_id.as_str()),
            ("userId", None),
            false,
        )
        .await?
        .into_iter()
        .map(|item| self.decode(item))
        .collect()
    }

    #[instrument(skip_all, fields(table = %self.table, page_size = page_size))]
    async fn query_active(
        &self,
        page_size: u32,
        token: Option<&PageToken>,
    ) -> Result<Page<Connection>, StoreError> {
        let start = token.map(decode_token).transpose()?;
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(BY_STATUS_INDEX)
            .key_condition_expression("#status = :status")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", s(ConnectionStatus::Active.as_str()))
            .limit(page_size.clamp(1, i32::MAX as u32) as i32)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|error| backend("Query", &self.table, error))?;
        self.decode_page(output.items, output.last_evaluated_key)
    }

    async fn list_all(
        &self,
        page_size: u32,
        token: Option<&PageToken>,
    ) -> Result<Page<Connection>, StoreError> {
        let start = token.map(decode_token).transpose()?;
        let output = self
            .client
            .scan()
            .table_name(&self.table)
            .consistent_read(true)
            .limit(page_size.clamp(1, i32::MAX as u32) as i32)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|error| backend("Scan", &self.table, error))?;
        self.decode_page(output.items, output.last_evaluated_key)
    }

    async fn delete_connection(&self, key: &UserKey) -> Result<bool, StoreError> {
        let output = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(key)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|error| backend("DeleteItem", &self.table, error))?;
        Ok(output.attributes.is_some_and(|old| !old.is_empty()))
    }
}

fn to_rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

// ---------------------------------------------------------------------------------------
// Sync state and the mailbox lease

pub struct DynamoSyncStateStore {
    client: Client,
    table: String,
    backoff: Backoff,
}

const LEASE_ITEM: &str = "lease";
const META_ITEM: &str = "meta";
const FOLDER_PREFIX: &str = "folder#";

impl DynamoSyncStateStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            backoff: Backoff::default(),
        }
    }

    fn key(key: &SyncKey, item: &str) -> Item {
        HashMap::from([
            ("syncKey".to_owned(), s(key.to_string())),
            ("item".to_owned(), s(item)),
        ])
    }

    async fn get(&self, key: &SyncKey, item: &str) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(key, item)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| backend("GetItem", &self.table, error))?;
        Ok(output.item)
    }

    async fn put(
        &self,
        key: &SyncKey,
        item: &str,
        value: &impl Serialize,
    ) -> Result<(), StoreError> {
        let mut attributes = to_item(value, &self.table, &format!("{key}/{item}"))?;
        attributes.extend(Self::key(key, item));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(attributes))
            .send()
            .await
            .map_err(|error| backend("PutItem", &self.table, error))?;
        Ok(())
    }
}

fn unix_millis(at: OffsetDateTime) -> i128 {
    at.unix_timestamp_nanos() / 1_000_000
}

#[async_trait]
impl SyncStateStore for DynamoSyncStateStore {
    /// One conditional put: it succeeds only when no lease exists, the lease has expired
    /// (`leaseUntilMs` <= now), or the caller already holds it. DynamoDB serialises
    /// conditional writes on an item, so of concurrent acquirers exactly one succeeds.
    /// `expiresAt` (seconds, the table's TTL attribute) lets DynamoDB sweep dead leases.
    #[instrument(skip_all, fields(sync_key = %key, holder = %holder))]
    async fn acquire_lease(
        &self,
        key: &SyncKey,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = OffsetDateTime::now_utc();
        let until = now + ttl;
        let mut item = Self::key(key, LEASE_ITEM);
        item.insert("holder".to_owned(), s(holder));
        item.insert("leaseUntilMs".to_owned(), n(unix_millis(until)));
        item.insert(
            "expiresAt".to_owned(),
            n(until.unix_timestamp() + i64::from(until.nanosecond() > 0)),
        );
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(
                "attribute_not_exists(syncKey) OR leaseUntilMs <= :now OR holder = :holder",
            )
            .expression_attribute_values(":now", n(unix_millis(now)))
            .expression_attribute_values(":holder", s(holder))
            .send()
            .await;
        conditional(result, "PutItem", &self.table).map(|applied| applied.is_some())
    }

    async fn release_lease(&self, key: &SyncKey, holder: &str) -> Result<bool, StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(key, LEASE_ITEM)))
            .condition_expression("holder = :holder")
            .expression_attribute_values(":holder", s(holder))
            .send()
            .await;
        conditional(result, "DeleteItem", &self.table).map(|applied| applied.is_some())
    }

    async fn get_lease(&self, key: &SyncKey) -> Result<Option<Lease>, StoreError> {
        let Some(item) = self.get(key, LEASE_ITEM).await? else {
            return Ok(None);
        };
        let corrupt = |what: &str| StoreError::Corrupt {
            resource: self.table.clone(),
            key: format!("{key}/{LEASE_ITEM}"),
            source: format!("lease item without a valid {what}").into(),
        };
        let holder = string_attr(&item, "holder")
            .ok_or_else(|| corrupt("holder"))?
            .to_owned();
        let millis: i128 = item
            .get("leaseUntilMs")
            .and_then(|value| value.as_n().ok())
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| corrupt("leaseUntilMs"))?;
        let expires_at = OffsetDateTime::from_unix_timestamp_nanos(millis * 1_000_000)
            .map_err(|_| corrupt("leaseUntilMs"))?;
        Ok(Some(Lease { holder, expires_at }))
    }

    async fn get_meta(&self, key: &SyncKey) -> Result<Option<SyncMeta>, StoreError> {
        self.get(key, META_ITEM)
            .await?
            .map(|item| from_item(item, &self.table, &format!("{key}/{META_ITEM}")))
            .transpose()
    }

    async fn put_meta(&self, key: &SyncKey, meta: &SyncMeta) -> Result<(), StoreError> {
        self.put(key, META_ITEM, meta).await
    }

    async fn get_cursor(
        &self,
        key: &SyncKey,
        folder_id: &str,
    ) -> Result<Option<FolderCursor>, StoreError> {
        let item_key = format!("{FOLDER_PREFIX}{folder_id}");
        self.get(key, &item_key)
            .await?
            .map(|item| from_item(item, &self.table, &format!("{key}/{item_key}")))
            .transpose()
    }

    async fn put_cursor(&self, key: &SyncKey, cursor: &FolderCursor) -> Result<(), StoreError> {
        self.put(key, &format!("{FOLDER_PREFIX}{}", cursor.folder_id), cursor)
            .await
    }

    async fn list_cursors(&self, key: &SyncKey) -> Result<Vec<FolderCursor>, StoreError> {
        let partition = key.to_string();
        query_partition(
            &self.client,
            &self.table,
            ("syncKey", &partition),
            ("item", Some(FOLDER_PREFIX)),
            false,
        )
        .await?
        .into_iter()
        .map(|item| {
            let id = string_attr(&item, "item").unwrap_or("?").to_owned();
            from_item(item, &self.table, &format!("{partition}/{id}"))
        })
        .collect()
    }

    async fn delete_cursor(&self, key: &SyncKey, folder_id: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(key, &format!("{FOLDER_PREFIX}{folder_id}"))))
            .send()
            .await
            .map_err(|error| backend("DeleteItem", &self.table, error))?;
        Ok(())
    }

    async fn delete_sync_state(&self, key: &SyncKey) -> Result<(), StoreError> {
        let partition = key.to_string();
        delete_partition(
            &self.client,
            &self.table,
            ("syncKey", &partition),
            ("item", None),
            self.backoff,
        )
        .await
        .map(drop)
    }
}

// ---------------------------------------------------------------------------------------
// Activities

pub struct DynamoActivityStore {
    client: Client,
    table: String,
    backoff: Backoff,
}

impl DynamoActivityStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            backoff: Backoff::default(),
        }
    }

    /// Overrides the retry budget for unprocessed batch items.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// One page of the owner's partition, optionally only ids starting with `prefix`.
    async fn query_activities(
        &self,
        owner: &UserKey,
        prefix: Option<&str>,
        page_size: u32,
        token: Option<&PageToken>,
    ) -> Result<Page<Activity>, StoreError> {
        let start = token.map(decode_token).transpose()?;
        let request = self
            .client
            .query()
            .table_name(&self.table)
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", s(owner.to_string()))
            .limit(page_size.clamp(1, i32::MAX as u32) as i32)
            .set_exclusive_start_key(start);
        let request = match prefix {
            Some(prefix) => request
                .key_condition_expression("#owner = :owner AND begins_with(#id, :prefix)")
                .expression_attribute_names("#id", "activityId")
                .expression_attribute_values(":prefix", s(prefix)),
            None => request.key_condition_expression("#owner = :owner"),
        };
        let output = request
            .send()
            .await
            .map_err(|error| backend("Query", &self.table, error))?;
        let items = output
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|item| self.decode(item))
            .collect::<Result<Vec<_>, _>>()?;
        let next = match output.last_evaluated_key {
            Some(key) if !key.is_empty() => Some(encode_token(&key)?),
            _ => None,
        };
        Ok(Page { items, next })
    }

    fn key(owner: &UserKey, id: &ActivityId) -> Item {
        HashMap::from([
            ("owner".to_owned(), s(owner.to_string())),
            ("activityId".to_owned(), s(id.as_str())),
        ])
    }

    fn decode(&self, item: Item) -> Result<Activity, StoreError> {
        let key = format!(
            "{}/{}",
            string_attr(&item, "owner").unwrap_or("?"),
            string_attr(&item, "activityId").unwrap_or("?")
        );
        from_item(item, &self.table, &key)
    }
}

#[async_trait]
impl ActivityStore for DynamoActivityStore {
    #[instrument(skip_all, fields(table = %self.table, count = activities.len()))]
    async fn upsert_activities(&self, activities: &[Activity]) -> Result<(), StoreError> {
        // BatchWriteItem refuses a batch with the same key twice: keep the last version.
        let mut latest: BTreeMap<(String, String), &Activity> = BTreeMap::new();
        for activity in activities {
            latest.insert(
                (
                    activity.owner().to_string(),
                    activity.activity_id.to_string(),
                ),
                activity,
            );
        }
        let requests = latest
            .into_iter()
            .map(|((owner, id), activity)| {
                let mut item = to_item(activity, &self.table, &format!("{owner}/{id}"))?;
                item.insert("owner".to_owned(), s(owner));
                put_request(item, &self.table)
            })
            .collect::<Result<Vec<_>, _>>()?;
        batch_write(&self.client, &self.table, requests, self.backoff).await
    }

    async fn get_activity(
        &self,
        owner: &UserKey,
        id: &ActivityId,
    ) -> Result<Option<Activity>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(owner, id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| backend("GetItem", &self.table, error))?;
        output.item.map(|item| self.decode(item)).transpose()
    }

    async fn delete_activity(&self, owner: &UserKey, id: &ActivityId) -> Result<bool, StoreError> {
        let output = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(owner, id)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|error| backend("DeleteItem", &self.table, error))?;
        Ok(output.attributes.is_some_and(|old| !old.is_empty()))
    }

    /// One conditional DeleteItem: `content.folderId = :folder`.
    async fn delete_mail_in_folder(
        &self,
        owner: &UserKey,
        id: &ActivityId,
        folder_id: &str,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(owner, id)))
            .condition_expression("#content.#kind = :mail AND #content.#folder = :folder")
            .expression_attribute_names("#content", "content")
            .expression_attribute_names("#kind", "kind")
            .expression_attribute_names("#folder", "folderId")
            .expression_attribute_values(":mail", s("mail"))
            .expression_attribute_values(":folder", s(folder_id))
            .send()
            .await;
        conditional(result, "DeleteItem", &self.table).map(|applied| applied.is_some())
    }

    async fn delete_activities(
        &self,
        owner: &UserKey,
        ids: &[ActivityId],
    ) -> Result<(), StoreError> {
        let unique: HashSet<&ActivityId> = ids.iter().collect();
        let requests = unique
            .into_iter()
            .map(|id| delete_request(Self::key(owner, id), &self.table))
            .collect::<Result<Vec<_>, _>>()?;
        batch_write(&self.client, &self.table, requests, self.backoff).await
    }

    async fn list_activities(
        &self,
        owner: &UserKey,
        page_size: u32,
        token: Option<&PageToken>,
    ) -> Result<Page<Activity>, StoreError> {
        self.query_activities(owner, None, page_size, token).await
    }

    /// Reads only the prefix's range of the partition (`begins_with` on the sort key).
    async fn list_activities_with_prefix(
        &self,
        owner: &UserKey,
        prefix: &str,
        page_size: u32,
        token: Option<&PageToken>,
    ) -> Result<Page<Activity>, StoreError> {
        self.query_activities(owner, Some(prefix), page_size, token)
            .await
    }

    async fn delete_all_activities(&self, owner: &UserKey) -> Result<u64, StoreError> {
        let partition = owner.to_string();
        delete_partition(
            &self.client,
            &self.table,
            ("owner", &partition),
            ("activityId", None),
            self.backoff,
        )
        .await
    }
}

// ---------------------------------------------------------------------------------------
// CRM index

const POINTER: &str = "current";
/// An import that registered a version and did not flip within this time is dead.
const ABANDONED_AFTER: Duration = Duration::from_secs(3600);
/// Readers retry this many times when imports keep flipping the pointer under them.
const LOOKUP_ATTEMPTS: u32 = 5;
/// Entries per Query page of a load. DynamoDB's own 1 MB page is ~4,000 entries, which the
/// SDK holds as ~4,000 attribute maps before the first is decoded; smaller pages keep
/// that peak (and what the allocator keeps of it afterwards) small for a few more round
/// trips, and cost the same read units.
const LOAD_PAGE_ITEMS: i32 = 1000;

pub struct DynamoCrmIndex {
    client: Client,
    table: String,
    backoff: Backoff,
    load_page_items: i32,
}

/// The `current` pointer as read.
struct Pointer {
    summary: Option<CrmIndexSummary>,
    pending: Vec<String>,
}

#[derive(Serialize, serde::Deserialize)]
struct EntryRecords<T> {
    records: Vec<T>,
}

/// What matching reads of an address entry's record ([`AddressRecord`]'s other fields
/// are skipped while decoding).
#[derive(serde::Deserialize)]
struct MatchedRecord {
    kind: CrmRecordKind,
    id: String,
}

/// What matching reads of a domain entry's owner ([`AccountRecord`] without its name).
#[derive(serde::Deserialize)]
struct MatchedOwner {
    id: String,
}

impl DynamoCrmIndex {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            backoff: Backoff::default(),
            load_page_items: LOAD_PAGE_ITEMS,
        }
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Entries per Query page of [`CrmIndex::load`] (tests use small pages to load over
    /// many).
    pub fn with_load_page_items(mut self, items: i32) -> Self {
        self.load_page_items = items.max(1);
        self
    }

    fn key(tenant_id: &TenantId, entry: &str) -> Item {
        HashMap::from([
            ("tenantId".to_owned(), s(tenant_id.as_str())),
            ("entry".to_owned(), s(entry)),
        ])
    }

    fn address_entry(version: &str, address: &str) -> String {
        format!("v#{version}#a#{address}")
    }

    fn domain_entry(version: &str, domain: &str) -> String {
        format!("v#{version}#d#{domain}")
    }

    /// Versions start with their creation time (hex seconds) so an abandoned one can be
    /// recognised by age alone.
    fn new_version(now: OffsetDateTime) -> String {
        format!(
            "{:010x}{}",
            now.unix_timestamp().max(0),
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        )
    }

    fn version_created(version: &str) -> Option<OffsetDateTime> {
        let seconds = i64::from_str_radix(version.get(..10)?, 16).ok()?;
        OffsetDateTime::from_unix_timestamp(seconds).ok()
    }

    async fn read_pointer(&self, tenant_id: &TenantId) -> Result<Pointer, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(tenant_id, POINTER)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| backend("GetItem", &self.table, error))?;
        let Some(item) = output.item else {
            return Ok(Pointer {
                summary: None,
                pending: Vec::new(),
            });
        };
        self.decode_pointer(tenant_id, item)
    }

    fn decode_pointer(&self, tenant_id: &TenantId, mut item: Item) -> Result<Pointer, StoreError> {
        let pending = match item.remove("pendingVersions") {
            Some(AttributeValue::Ss(versions)) => versions,
            _ => Vec::new(),
        };
        let summary = if item.contains_key("version") {
            Some(from_item(
                item,
                &self.table,
                &format!("{tenant_id}/{POINTER}"),
            )?)
        } else {
            None
        };
        Ok(Pointer { summary, pending })
    }

    /// Adds or removes a version in the pointer's `pendingVersions` set.
    async fn mark_pending(
        &self,
        tenant_id: &TenantId,
        version: &str,
        pending: bool,
    ) -> Result<(), StoreError> {
        let expression = if pending {
            "ADD pendingVersions :v"
        } else {
            "DELETE pendingVersions :v"
        };
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(tenant_id, POINTER)))
            .update_expression(expression)
            .expression_attribute_values(":v", AttributeValue::Ss(vec![version.to_owned()]))
            .send()
            .await
            .map_err(|error| backend("UpdateItem", &self.table, error))?;
        Ok(())
    }

    /// Deletes every entry of `version`; returns how many there were.
    async fn delete_version(&self, tenant_id: &TenantId, version: &str) -> Result<u64, StoreError> {
        let prefix = format!("v#{version}#");
        delete_partition(
            &self.client,
            &self.table,
            ("tenantId", tenant_id.as_str()),
            ("entry", Some(&prefix)),
            self.backoff,
        )
        .await
    }

    async fn flip(
        &self,
        tenant_id: &TenantId,
        summary: &CrmIndexSummary,
        expected: Option<&str>,
    ) -> Result<Option<Pointer>, StoreError> {
        let summary_item = to_item(summary, &self.table, &format!("{tenant_id}/{POINTER}"))?;
        let mut names = HashMap::new();
        let mut values = HashMap::new();
        let mut sets = Vec::new();
        for (i, (name, value)) in summary_item.into_iter().enumerate() {
            names.insert(format!("#a{i}"), name);
            values.insert(format!(":a{i}"), value);
            sets.push(format!("#a{i} = :a{i}"));
        }
        let mut expression = format!("SET {}", sets.join(", "));
        if summary.oldest_open_opportunity.is_none() {
            names.insert("#oldest".to_owned(), "oldestOpenOpportunity".to_owned());
            expression.push_str(" REMOVE #oldest");
        }
        expression.push_str(" DELETE pendingVersions :mine");
        values.insert(
            ":mine".to_owned(),
            AttributeValue::Ss(vec![summary.version.clone()]),
        );
        names.insert("#version".to_owned(), "version".to_owned());
        let condition = match expected {
            Some(old) => {
                values.insert(":old".to_owned(), s(old));
                "#version = :old"
            }
            None => "attribute_not_exists(#version)",
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(tenant_id, POINTER)))
            .update_expression(expression)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        conditional(result, "UpdateItem", &self.table)?
            .map(|output| self.decode_pointer(tenant_id, output.attributes.unwrap_or_default()))
            .transpose()
    }

    async fn lookup_version(
        &self,
        tenant_id: &TenantId,
        version: &str,
        addresses: &[String],
        domains: &[String],
    ) -> Result<CrmLookup, StoreError> {
        let mut keys = Vec::with_capacity(addresses.len() + domains.len());
        keys.extend(
            addresses
                .iter()
                .map(|address| Self::key(tenant_id, &Self::address_entry(version, address))),
        );
        keys.extend(
            domains
                .iter()
                .map(|domain| Self::key(tenant_id, &Self::domain_entry(version, domain))),
        );
        let items = batch_get(&self.client, &self.table, keys, None, self.backoff).await?;
        let address_prefix = format!("v#{version}#a#");
        let domain_prefix = format!("v#{version}#d#");
        let mut result = CrmLookup::default();
        for item in items {
            let entry = string_attr(&item, "entry").unwrap_or_default().to_owned();
            if let Some(address) = entry.strip_prefix(&address_prefix) {
                let records: EntryRecords<AddressRecord> =
                    from_item(item, &self.table, &format!("{tenant_id}/{entry}"))?;
                result.addresses.insert(address.to_owned(), records.records);
            } else if let Some(domain) = entry.strip_prefix(&domain_prefix) {
                let records: EntryRecords<AccountRecord> =
                    from_item(item, &self.table, &format!("{tenant_id}/{entry}"))?;
                result.domains.insert(domain.to_owned(), records.records);
            }
        }
        Ok(result)
    }

    /// Queries every entry of `version` into a [`CrmMatchIndex`], page by page: each page
    /// is decoded into the index and dropped before the next is requested, so a load holds
    /// one bounded page of SDK items at a time, never the whole stored index.
    async fn load_version(
        &self,
        tenant_id: &TenantId,
        version: &str,
    ) -> Result<CrmMatchIndex, StoreError> {
        let prefix = format!("v#{version}#");
        let address_prefix = format!("{prefix}a#");
        let domain_prefix = format!("{prefix}d#");
        let mut builder = CrmMatchIndexBuilder::new();
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                .expression_attribute_names("#pk", "tenantId")
                .expression_attribute_names("#sk", "entry")
                .expression_attribute_names("#records", "records")
                .expression_attribute_values(":pk", s(tenant_id.as_str()))
                .expression_attribute_values(":prefix", s(&prefix))
                .projection_expression("#sk, #records")
                .limit(self.load_page_items)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|error| backend("Query", &self.table, error))?;
            for item in output.items.unwrap_or_default() {
                let entry = string_attr(&item, "entry").unwrap_or_default().to_owned();
                if let Some(address) = entry.strip_prefix(&address_prefix) {
                    let records: EntryRecords<MatchedRecord> =
                        from_item(item, &self.table, &format!("{tenant_id}/{entry}"))?;
                    builder.add_address(
                        address,
                        records
                            .records
                            .iter()
                            .map(|record| (record.kind, record.id.as_str())),
                    );
                } else if let Some(domain) = entry.strip_prefix(&domain_prefix) {
                    let records: EntryRecords<MatchedOwner> =
                        from_item(item, &self.table, &format!("{tenant_id}/{entry}"))?;
                    builder.add_domain(
                        domain,
                        records.records.iter().map(|owner| owner.id.as_str()),
                    );
                }
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(builder.finish()),
            }
        }
    }
}

#[async_trait]
impl CrmIndex for DynamoCrmIndex {
    #[instrument(skip_all, fields(table = %self.table, tenant_id = %snapshot.tenant_id))]
    async fn replace_snapshot(&self, snapshot: &CrmSnapshot) -> Result<ReplaceOutcome, StoreError> {
        let tenant_id = &snapshot.tenant_id;
        let content = snapshot.index();
        let before = self.read_pointer(tenant_id).await?;
        if let Some(summary) = &before.summary
            && summary.content_hash == content.content_hash
        {
            return Ok(ReplaceOutcome::Unchanged {
                summary: summary.clone(),
            });
        }
        let now = OffsetDateTime::now_utc();
        let version = Self::new_version(now);
        self.mark_pending(tenant_id, &version, true).await?;

        let mut requests = Vec::with_capacity(content.addresses.len() + content.domains.len());
        for (address, records) in &content.addresses {
            let entry = Self::address_entry(&version, address);
            let mut item = to_item(
                &EntryRecords {
                    records: records.clone(),
                },
                &self.table,
                &entry,
            )?;
            item.extend(Self::key(tenant_id, &entry));
            requests.push(put_request(item, &self.table)?);
        }
        for (domain, records) in &content.domains {
            let entry = Self::domain_entry(&version, domain);
            let mut item = to_item(
                &EntryRecords {
                    records: records.clone(),
                },
                &self.table,
                &entry,
            )?;
            item.extend(Self::key(tenant_id, &entry));
            requests.push(put_request(item, &self.table)?);
        }
        let written_entries = requests.len() as u64;
        // On failure the version stays pending; a later import deletes it once abandoned.
        batch_write(&self.client, &self.table, requests, self.backoff).await?;

        let summary = CrmIndexSummary {
            version: version.clone(),
            content_hash: content.content_hash.clone(),
            imported_at: now,
            oldest_open_opportunity: content.oldest_open_opportunity,
            stats: content.stats,
        };
        let previous_version = before.summary.as_ref().map(|s| s.version.clone());
        let Some(after) = self
            .flip(tenant_id, &summary, previous_version.as_deref())
            .await?
        else {
            warn!("another import replaced the CRM index first; discarding this one");
            self.delete_version(tenant_id, &version).await?;
            self.mark_pending(tenant_id, &version, false).await?;
            return Err(StoreError::Conflict {
                what: format!("CRM index of tenant {tenant_id}"),
            });
        };

        let mut removed_entries = 0;
        if let Some(old) = &previous_version {
            removed_entries += self.delete_version(tenant_id, old).await?;
        }
        for abandoned in after.pending.iter().filter(|pending| {
            Self::version_created(pending).is_none_or(|created| now - created > ABANDONED_AFTER)
        }) {
            removed_entries += self.delete_version(tenant_id, abandoned).await?;
            self.mark_pending(tenant_id, abandoned, false).await?;
        }
        Ok(ReplaceOutcome::Replaced {
            summary,
            previous_version,
            written_entries,
            removed_entries,
        })
    }

    #[instrument(skip_all, fields(table = %self.table, tenant_id = %tenant_id, addresses = addresses.len(), domains = domains.len()))]
    async fn lookup(
        &self,
        tenant_id: &TenantId,
        addresses: &[String],
        domains: &[String],
    ) -> Result<CrmLookup, StoreError> {
        let addresses: Vec<String> = addresses
            .iter()
            .filter_map(|address| normalize_email(address))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let domains: Vec<String> = domains
            .iter()
            .filter_map(|domain| normalize_domain(domain))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if addresses.is_empty() && domains.is_empty() {
            return Ok(CrmLookup::default());
        }
        for _ in 0..LOOKUP_ATTEMPTS {
            let Some(before) = self.read_pointer(tenant_id).await?.summary else {
                return Ok(CrmLookup::default());
            };
            let result = self
                .lookup_version(tenant_id, &before.version, &addresses, &domains)
                .await?;
            let after = self.read_pointer(tenant_id).await?.summary;
            if after.is_some_and(|after| after.version == before.version) {
                return Ok(result);
            }
            debug!("CRM index replaced during lookup; reading the new version");
        }
        Err(StoreError::Conflict {
            what: format!("CRM index of tenant {tenant_id} (kept changing during lookup)"),
        })
    }

    async fn summary(&self, tenant_id: &TenantId) -> Result<Option<CrmIndexSummary>, StoreError> {
        Ok(self.read_pointer(tenant_id).await?.summary)
    }

    /// Deletes every item of the tenant's partition. An import running at the same time
    /// may leave entries behind; offboarding is run on a tenant no longer importing.
    #[instrument(skip_all, fields(table = %self.table, tenant_id = %tenant_id))]
    async fn delete_index(&self, tenant_id: &TenantId) -> Result<u64, StoreError> {
        delete_partition(
            &self.client,
            &self.table,
            ("tenantId", tenant_id.as_str()),
            ("entry", None),
            self.backoff,
        )
        .await
    }

    /// Reads the pointer, queries every entry of its version, and reads the pointer again:
    /// an unchanged pointer proves the entries are one complete version (see the module doc).
    #[instrument(skip_all, fields(table = %self.table, tenant_id = %tenant_id))]
    async fn load(
        &self,
        tenant_id: &TenantId,
    ) -> Result<Option<(CrmIndexSummary, CrmMatchIndex)>, StoreError> {
        for _ in 0..LOOKUP_ATTEMPTS {
            let Some(before) = self.read_pointer(tenant_id).await?.summary else {
                return Ok(None);
            };
            let index = self.load_version(tenant_id, &before.version).await?;
            let after = self.read_pointer(tenant_id).await?.summary;
            if after.is_some_and(|after| after.version == before.version) {
                return Ok(Some((before, index)));
            }
            debug!("CRM index replaced during load; reading the new version");
        }
        Err(StoreError::Conflict {
            what: format!("CRM index of tenant {tenant_id} (kept changing during load)"),
        })
    }
}
