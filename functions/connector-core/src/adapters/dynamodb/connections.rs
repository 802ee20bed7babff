//! Connections: one item per user, and the `ByStatus` index for fan-out.

use super::*;

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
        self.update(key, expression, names, values, true).await
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
