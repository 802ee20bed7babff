//! Connections: one item per user, and the `ByStatusShard` index for fan-out.
//!
//! The index's partition key is `statusShard` = `{status}#{shard}`, the shard a fixed hash
//! of the connection's key modulo [`STATUS_SHARDS`]: every write of a connection's status
//! (a put, a status change) writes it too, so the active connections are spread over
//! [`STATUS_SHARDS`] index partitions rather than one (a GSI partition takes about 1,000
//! writes a second; one hot one throttles the table's own writes). [`query_active`] reads
//! the shards in order; its page token names the shard and the position in it.
//! Records written before the shard existed are not in the index until
//! [`DynamoConnectionStore::backfill_status_shards`] (`connectorctl connections
//! backfill-shards`) gives them theirs.
//!
//! [`query_active`]: ConnectionStore::query_active

use super::*;

/// How many `statusShard` partitions each status is spread over. Changing it moves
/// connections between shards: only with a backfill of every record.
pub const STATUS_SHARDS: u32 = 16;

/// The shard of a connection (0..[`STATUS_SHARDS`]): FNV-1a of `{tenantId}#{userId}`, stable
/// across processes and releases.
pub fn status_shard(key: &UserKey) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.to_string().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(STATUS_SHARDS)) as u32
}

/// The `statusShard` attribute of a connection in `status`.
pub fn status_shard_key(status: ConnectionStatus, key: &UserKey) -> String {
    format!("{}#{}", status.as_str(), status_shard(key))
}

/// Where `query_active` stands: the shard, and the last key read in it (none: its start).
#[derive(Serialize, serde::Deserialize)]
struct ShardPosition {
    shard: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    after: BTreeMap<String, String>,
}

impl ShardPosition {
    fn encode(&self) -> Result<PageToken, StoreError> {
        let json = serde_json::to_vec(self).map_err(|_| StoreError::InvalidPageToken)?;
        Ok(PageToken(URL_SAFE_NO_PAD.encode(json)))
    }

    fn decode(token: &PageToken) -> Result<Self, StoreError> {
        let json = URL_SAFE_NO_PAD
            .decode(token.as_str())
            .map_err(|_| StoreError::InvalidPageToken)?;
        let position: Self =
            serde_json::from_slice(&json).map_err(|_| StoreError::InvalidPageToken)?;
        if position.shard >= STATUS_SHARDS {
            return Err(StoreError::InvalidPageToken);
        }
        Ok(position)
    }
}

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

    /// The connection item's key (also what the fence checks).
    pub(super) fn key(key: &UserKey) -> Item {
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
        mut names: HashMap<String, String>,
        mut values: HashMap<String, AttributeValue>,
        worker_write: bool,
    ) -> Result<Connection, StoreError> {
        // A disconnected connection keeps its status: a worker finishing after
        // `disconnect` cannot turn it into reauth_required or park it (docs/fencing.md).
        // Only a change to disconnected or active (a new sign-in) may touch it.
        let keeps_disconnected = worker_write
            && values.get(":status").is_none_or(|status| {
                status.as_s().is_ok_and(|status| {
                    status != ConnectionStatus::Disconnected.as_str()
                        && status != ConnectionStatus::Active.as_str()
                })
            });
        let condition = if keeps_disconnected {
            names.insert("#fence_status".to_owned(), "status".to_owned());
            values.insert(
                ":fence_disconnected".to_owned(),
                s(ConnectionStatus::Disconnected.as_str()),
            );
            "attribute_exists(userId) AND #fence_status <> :fence_disconnected"
        } else {
            "attribute_exists(userId)"
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(key)))
            .update_expression(expression)
            .condition_expression(condition)
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
        item.insert(
            "statusShard".to_owned(),
            s(status_shard_key(connection.status, &connection.key())),
        );
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
            ("#shard".to_owned(), "statusShard".to_owned()),
        ]);
        let mut values = HashMap::from([
            (":status".to_owned(), s(change.status.as_str())),
            (":shard".to_owned(), s(status_shard_key(change.status, key))),
            (":at".to_owned(), s(at)),
        ]);
        let expression = match &change.reason {
            Some(reason) => {
                values.insert(":reason".to_owned(), s(reason.clone()));
                "SET #status = :status, #shard = :shard, #changed = :at, #updated = :at, #reason = :reason"
            }
            None => {
                "SET #status = :status, #shard = :shard, #changed = :at, #updated = :at REMOVE #reason"
            }
        };
        self.update(key, expression, names, values, true).await
    }

    async fn replace_disconnected_reason(
        &self,
        key: &UserKey,
        from: &str,
        to: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(key)))
            .update_expression("SET #reason = :to, #updated = :now")
            .condition_expression(
                "attribute_exists(userId) AND #status = :disconnected AND #reason = :from",
            )
            .expression_attribute_names("#reason", "statusReason")
            .expression_attribute_names("#updated", "updatedAt")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":to", s(to))
            .expression_attribute_values(":from", s(from))
            .expression_attribute_values(":now", s(to_rfc3339(now)))
            .expression_attribute_values(
                ":disconnected",
                s(ConnectionStatus::Disconnected.as_str()),
            )
            .send()
            .await;
        Ok(conditional(result, "UpdateItem", &self.table)?.is_some())
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
        self.update(key, expression, names, values, true)
            .await
            .map(drop)
    }

    async fn set_switches(
        &self,
        key: &UserKey,
        switches: UserSwitches,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let switches = to_value(&switches, &self.table, &key.to_string())?;
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
            false,
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

    /// Reads the shards in order, filling the page across them; the token names the
    /// shard and the position in it.
    #[instrument(skip_all, fields(table = %self.table, page_size = page_size))]
    async fn query_active(
        &self,
        page_size: u32,
        token: Option<&PageToken>,
    ) -> Result<Page<Connection>, StoreError> {
        let mut position = match token {
            Some(token) => ShardPosition::decode(token)?,
            None => ShardPosition {
                shard: 0,
                after: BTreeMap::new(),
            },
        };
        let want = page_size.clamp(1, i32::MAX as u32) as usize;
        let mut items = Vec::new();
        loop {
            let start = (!position.after.is_empty()).then(|| {
                position
                    .after
                    .iter()
                    .map(|(name, value)| (name.clone(), s(value.clone())))
                    .collect::<Item>()
            });
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(BY_STATUS_INDEX)
                .key_condition_expression("#shard = :shard")
                .expression_attribute_names("#shard", "statusShard")
                .expression_attribute_values(
                    ":shard",
                    s(format!(
                        "{}#{}",
                        ConnectionStatus::Active.as_str(),
                        position.shard
                    )),
                )
                .limit((want - items.len()) as i32)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|error| backend("Query", &self.table, error))?;
            for item in output.items.unwrap_or_default() {
                items.push(self.decode(item)?);
            }
            match output.last_evaluated_key {
                Some(last) if !last.is_empty() => {
                    position.after = last
                        .into_iter()
                        .map(|(name, value)| match value {
                            AttributeValue::S(text) => Ok((name, text)),
                            _ => Err(StoreError::InvalidPageToken),
                        })
                        .collect::<Result<_, _>>()?;
                }
                _ => {
                    position.shard += 1;
                    position.after.clear();
                    if position.shard == STATUS_SHARDS {
                        return Ok(Page { items, next: None });
                    }
                }
            }
            if items.len() >= want {
                return Ok(Page {
                    items,
                    next: Some(position.encode()?),
                });
            }
        }
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

impl DynamoConnectionStore {
    /// Gives every record without a `statusShard` (written before the index was sharded)
    /// its shard, so fan-out finds it. Conditional on the status read, so a concurrent
    /// status change (which writes the shard itself) is never overwritten. Idempotent;
    /// returns how many records it updated.
    pub async fn backfill_status_shards(&self) -> Result<u64, StoreError> {
        let mut updated = 0;
        let mut start = None;
        loop {
            let output = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("attribute_not_exists(#shard)")
                .expression_attribute_names("#shard", "statusShard")
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|error| backend("Scan", &self.table, error))?;
            for item in output.items.unwrap_or_default() {
                let connection = self.decode(item)?;
                let key = connection.key();
                let result = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(Self::key(&key)))
                    .update_expression("SET #shard = :shard")
                    .condition_expression(
                        "attribute_exists(userId) AND #status = :status AND attribute_not_exists(#shard)",
                    )
                    .expression_attribute_names("#shard", "statusShard")
                    .expression_attribute_names("#status", "status")
                    .expression_attribute_values(
                        ":shard",
                        s(status_shard_key(connection.status, &key)),
                    )
                    .expression_attribute_values(":status", s(connection.status.as_str()))
                    .send()
                    .await;
                if conditional(result, "UpdateItem", &self.table)?.is_some() {
                    updated += 1;
                }
            }
            match output.last_evaluated_key {
                Some(last) if !last.is_empty() => start = Some(last),
                _ => return Ok(updated),
            }
        }
    }
}

pub(super) fn to_rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}
