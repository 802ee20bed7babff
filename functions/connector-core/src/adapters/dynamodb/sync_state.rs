//! Sync state: the mailbox lease, the run meta and folder cursors.

use super::*;

pub struct DynamoSyncStateStore {
    client: Client,
    table: String,
    backoff: Backoff,
    fence: Option<Fence>,
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
            fence: None,
        }
    }

    /// A worker's store: the lease, meta and cursor writes only while the user's
    /// connection is active ([`Fence`]).
    pub fn with_fence(mut self, fence: Fence) -> Self {
        self.fence = Some(fence);
        self
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
        if let Some(fence) = &self.fence {
            let put = aws_sdk_dynamodb::types::Put::builder()
                .table_name(&self.table)
                .set_item(Some(attributes))
                .build()
                .map_err(|error| backend("Put", &self.table, error))?;
            return fence
                .put_one(&self.client, &key.user(), &self.table, put)
                .await;
        }
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
        let condition = "attribute_not_exists(syncKey) OR leaseUntilMs <= :now OR holder = :holder";
        if let Some(fence) = &self.fence {
            let put = aws_sdk_dynamodb::types::Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression(condition)
                .expression_attribute_values(":now", n(unix_millis(now)))
                .expression_attribute_values(":holder", s(holder))
                .build()
                .map_err(|error| backend("Put", &self.table, error))?;
            return match fence
                .put_one(&self.client, &key.user(), &self.table, put)
                .await
            {
                Ok(()) => Ok(true),
                Err(StoreError::Conflict { .. }) => Ok(false),
                Err(error) => Err(error),
            };
        }
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .expression_attribute_values(":now", n(unix_millis(now)))
            .expression_attribute_values(":holder", s(holder))
            .send()
            .await;
        conditional(result, "PutItem", &self.table).map(|applied| applied.is_some())
    }

    /// One conditional update: applied only while `holder` is the item's holder, so a
    /// worker whose lease another took over (or whose state was deleted) learns it here.
    #[instrument(skip_all, fields(sync_key = %key, holder = %holder))]
    async fn renew_lease(
        &self,
        key: &SyncKey,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let until = OffsetDateTime::now_utc() + ttl;
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(key, LEASE_ITEM)))
            .condition_expression("holder = :holder")
            .update_expression("SET leaseUntilMs = :until, expiresAt = :expires")
            .expression_attribute_values(":holder", s(holder))
            .expression_attribute_values(":until", n(unix_millis(until)))
            .expression_attribute_values(
                ":expires",
                n(until.unix_timestamp() + i64::from(until.nanosecond() > 0)),
            )
            .send()
            .await;
        conditional(result, "UpdateItem", &self.table).map(|applied| applied.is_some())
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
