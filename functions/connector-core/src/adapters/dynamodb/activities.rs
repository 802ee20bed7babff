//! Activities: the imported emails and meetings.

use super::*;

pub struct DynamoActivityStore {
    client: Client,
    table: String,
    backoff: Backoff,
    fence: Option<Fence>,
}

impl DynamoActivityStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            backoff: Backoff::default(),
            fence: None,
        }
    }

    /// A worker's store: activities are put only while their owner's connection is active
    /// ([`Fence`]), in transactions instead of batches.
    pub fn with_fence(mut self, fence: Fence) -> Self {
        self.fence = Some(fence);
        self
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
        if let Some(fence) = &self.fence {
            let mut by_owner: BTreeMap<String, (UserKey, Vec<Item>)> = BTreeMap::new();
            for ((owner, id), activity) in latest {
                let mut item = to_item(activity, &self.table, &format!("{owner}/{id}"))?;
                item.insert("owner".to_owned(), s(owner.clone()));
                by_owner
                    .entry(owner)
                    .or_insert_with(|| (activity.owner(), Vec::new()))
                    .1
                    .push(item);
            }
            for (user, items) in by_owner.into_values() {
                fence
                    .put_all(&self.client, &user, &self.table, items)
                    .await?;
            }
            return Ok(());
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
