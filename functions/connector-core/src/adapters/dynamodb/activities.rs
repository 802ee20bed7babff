//! Activities: the imported emails and meetings.
//!
//! With a body store ([`DynamoActivityStore::with_bodies`]) an item stays under
//! DynamoDB's 400 KB item limit (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html,
//! read 2026-12-05; a BatchWriteItem with one invalid item is refused whole with a
//! ValidationException, BatchWriteItem API reference) by design: a mail activity's body, and its participants,
//! matches and subject beyond the item's limits, go to one object in the body store,
//! written *before* the item that names it (`content.detail`); deleted *after* the item.
//! Every item also carries `fingerprint` (`Activity::fingerprint`), so a re-read message
//! that brings nothing new is neither written nor counted again.
//!
//! With a retention ([`DynamoActivityStore::with_retention`]) every written activity
//! carries `expiresAt` (epoch seconds, the table's TTL attribute): its own date plus the
//! tenant's `activityRetentionDays`, else the stack's default. DynamoDB deletes expired
//! items within days, without a write charge (docs/data-retention.md).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;

use super::*;
use crate::domain::{ActivityContent, MailDetail, body_key, user_body_prefix};
use crate::ports::{BodyStore, Refused, StoreReport, TenantStore};

/// How long a tenant's retention setting is reused before it is read again.
const RETENTION_CACHE: Duration = Duration::from_secs(600);

/// The activities' lifetime: the stack's default and the tenants' own settings.
pub struct ActivityRetention {
    default_days: u32,
    tenants: Arc<dyn TenantStore>,
    cache: Mutex<HashMap<TenantId, (u32, Instant)>>,
}

impl ActivityRetention {
    pub fn new(default_days: u32, tenants: Arc<dyn TenantStore>) -> Self {
        Self {
            default_days,
            tenants,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The tenant's retention in days (its own setting, else the default).
    pub async fn days(&self, tenant_id: &TenantId) -> Result<u32, StoreError> {
        if let Some((days, at)) = self.cache.lock().expect("cache").get(tenant_id)
            && at.elapsed() < RETENTION_CACHE
        {
            return Ok(*days);
        }
        let days = self
            .tenants
            .get_tenant(tenant_id)
            .await?
            .and_then(|tenant| tenant.activity_retention_days)
            .unwrap_or(self.default_days);
        self.cache
            .lock()
            .expect("cache")
            .insert(tenant_id.clone(), (days, Instant::now()));
        Ok(days)
    }
}

/// Item attribute: the activity's fingerprint.
const FINGERPRINT: &str = "fingerprint";

pub struct DynamoActivityStore {
    client: Client,
    table: String,
    backoff: Backoff,
    bodies: Option<Arc<dyn BodyStore>>,
    retention: Option<ActivityRetention>,
    fence: Option<Fence>,
}

/// The activities by (owner, id), the last of one key winning: a BatchWriteItem refuses
/// the same key twice.
fn latest_versions(activities: &[Activity]) -> BTreeMap<(String, String), &Activity> {
    activities
        .iter()
        .map(|activity| {
            (
                (
                    activity.owner().to_string(),
                    activity.activity_id.to_string(),
                ),
                activity,
            )
        })
        .collect()
}

/// A body object to write: its key and bytes.
type BodyObject = (String, Vec<u8>);

/// A put that DynamoDB refused for the item itself.
fn is_validation(error: &(impl ProvideErrorMetadata + ?Sized)) -> bool {
    error.code() == Some("ValidationException")
}

/// DynamoDB's words when it refused a write for an item itself (a ValidationException of
/// BatchWriteItem or PutItem); `None` for any other failure. The messages name limits and
/// types, never attribute values.
fn refusal(error: &StoreError) -> Option<String> {
    use aws_sdk_dynamodb::error::SdkError;
    use aws_sdk_dynamodb::operation::{
        batch_write_item::BatchWriteItemError, put_item::PutItemError,
    };
    let StoreError::Backend { source, .. } = error else {
        return None;
    };
    let service_error: &dyn ProvideErrorMetadata =
        if let Some(e) = source.downcast_ref::<SdkError<BatchWriteItemError>>() {
            e.as_service_error()?
        } else {
            source
                .downcast_ref::<SdkError<PutItemError>>()?
                .as_service_error()?
        };
    is_validation(service_error).then(|| {
        format!(
            "ValidationException: {}",
            service_error
                .message()
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect::<String>()
        )
    })
}

impl DynamoActivityStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            backoff: Backoff::default(),
            bodies: None,
            retention: None,
            fence: None,
        }
    }

    /// A worker's store: before each write it checks that the owners' connections are
    /// still active ([`Fence::ensure_active`]); the mailbox lease orders the write itself
    /// against a disconnection (docs/fencing.md).
    pub fn with_fence(mut self, fence: Fence) -> Self {
        self.fence = Some(fence);
        self
    }

    /// `Fenced` when the connection of any owner among `activities` is no longer active.
    async fn ensure_active<'a>(
        &self,
        activities: impl IntoIterator<Item = &'a Activity>,
    ) -> Result<(), StoreError> {
        let Some(fence) = &self.fence else {
            return Ok(());
        };
        let owners: BTreeMap<String, UserKey> = activities
            .into_iter()
            .map(|activity| (activity.owner().to_string(), activity.owner()))
            .collect();
        for owner in owners.values() {
            fence.ensure_active(&self.client, owner).await?;
        }
        Ok(())
    }

    /// Puts items, 25 per BatchWriteItem.
    async fn put_items(&self, items: Vec<Item>) -> Result<(), StoreError> {
        let requests = items
            .into_iter()
            .map(|item| put_request(item, &self.table))
            .collect::<Result<Vec<_>, _>>()?;
        batch_write(&self.client, &self.table, requests, self.backoff).await
    }

    /// Writes each activity with its expiry (`expiresAt`, the table's TTL attribute).
    pub fn with_retention(mut self, retention: ActivityRetention) -> Self {
        self.retention = Some(retention);
        self
    }

    /// The stack's retention when it has one (`ACTIVITY_RETENTION_DAYS`, config
    /// `activity_retention_days`; a tenant's own setting first), read from `tenants`.
    pub fn with_default_retention(self, days: Option<u32>, tenants: Arc<dyn TenantStore>) -> Self {
        match days {
            Some(days) => self.with_retention(ActivityRetention::new(days, tenants)),
            None => self,
        }
    }

    /// The retention in days of each tenant among `activities` (none without a retention).
    async fn retention_days<'a>(
        &self,
        activities: impl Iterator<Item = &'a Activity>,
    ) -> Result<HashMap<TenantId, u32>, StoreError> {
        let mut days = HashMap::new();
        if let Some(retention) = &self.retention {
            for activity in activities {
                if !days.contains_key(&activity.tenant_id) {
                    days.insert(
                        activity.tenant_id.clone(),
                        retention.days(&activity.tenant_id).await?,
                    );
                }
            }
        }
        Ok(days)
    }

    /// Keeps mail bodies (and what else can grow) in `bodies`. Without one, a mail item
    /// holds its body inline (tools and tests that never store big mail).
    pub fn with_bodies(mut self, bodies: Arc<dyn BodyStore>) -> Self {
        self.bodies = Some(bodies);
        self
    }

    /// The item of an activity and, with a body store, the object to write before it.
    fn prepare(
        &self,
        activity: &Activity,
        retention_days: &HashMap<TenantId, u32>,
    ) -> Result<(Item, Option<BodyObject>), StoreError> {
        let owner = activity.owner().to_string();
        let key = format!("{owner}/{}", activity.activity_id);
        let split = match &self.bodies {
            Some(_) => activity.split_detail(),
            None => None,
        };
        let (mut item, object) = match split {
            Some((bounded, detail)) => {
                let bytes = serde_json::to_vec(&detail).map_err(|error| StoreError::Corrupt {
                    resource: self.table.clone(),
                    key: key.clone(),
                    source: Box::new(error),
                })?;
                let object_key = match &bounded.content {
                    ActivityContent::Mail(mail) => mail.detail.as_ref().map(|d| d.key.clone()),
                    ActivityContent::Meeting(_) => None,
                }
                .unwrap_or_default();
                (
                    to_item(&bounded, &self.table, &key)?,
                    Some((object_key, bytes)),
                )
            }
            None => (to_item(activity, &self.table, &key)?, None),
        };
        item.insert("owner".to_owned(), s(owner));
        item.insert(FINGERPRINT.to_owned(), s(activity.fingerprint()));
        if let Some(days) = retention_days.get(&activity.tenant_id) {
            let expires = activity.expires_at(*days).unix_timestamp();
            item.insert("expiresAt".to_owned(), n(expires));
        }
        Ok((item, object))
    }

    /// Reads the whole message back into an item that names a detail object.
    async fn join_detail(&self, activity: &mut Activity) -> Result<(), StoreError> {
        let (Some(bodies), ActivityContent::Mail(mail)) = (&self.bodies, &activity.content) else {
            return Ok(());
        };
        let Some(detail) = &mail.detail else {
            return Ok(());
        };
        let key = detail.key.clone();
        let Some(bytes) = bodies.get_body(&key).await? else {
            return Err(StoreError::NotFound {
                what: format!("the body of {}", activity.activity_id),
            });
        };
        let detail: MailDetail =
            serde_json::from_slice(&bytes).map_err(|error| StoreError::Corrupt {
                resource: "body store".to_owned(),
                key,
                source: Box::new(error),
            })?;
        activity.join_detail(detail);
        Ok(())
    }

    /// Deletes the body objects of deleted mail items (after the items): the version each
    /// item was (its `fingerprint`), so a newer version written meanwhile keeps its object.
    async fn delete_versions(
        &self,
        owner: &UserKey,
        versions: &[(ActivityId, String)],
    ) -> Result<(), StoreError> {
        let Some(bodies) = &self.bodies else {
            return Ok(());
        };
        let keys: Vec<String> = versions
            .iter()
            .filter(|(id, _)| id.as_str().starts_with("mail#"))
            .map(|(id, fingerprint)| body_key(owner, id, fingerprint))
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        bodies.delete_bodies(&keys).await
    }

    /// The version of a deleted item (`ReturnValues: ALL_OLD`).
    fn deleted_version(id: &ActivityId, old: Option<&Item>) -> Option<(ActivityId, String)> {
        old.and_then(|item| string_attr(item, FINGERPRINT))
            .map(|fingerprint| (id.clone(), fingerprint.to_owned()))
    }

    /// The stored fingerprints of `keys` (owner, activity id), read per owner (`owner` is
    /// a reserved word: the projection names only the sort key and the fingerprint).
    async fn fingerprints(
        &self,
        keys: &[(String, String)],
    ) -> Result<HashMap<(String, String), String>, StoreError> {
        let mut by_owner: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (owner, id) in keys {
            by_owner.entry(owner).or_default().push(id);
        }
        let mut found = HashMap::new();
        for (owner, ids) in by_owner {
            let items = batch_get(
                &self.client,
                &self.table,
                ids.iter()
                    .map(|id| {
                        HashMap::from([
                            ("owner".to_owned(), s(owner)),
                            ("activityId".to_owned(), s(*id)),
                        ])
                    })
                    .collect(),
                Some("activityId, fingerprint"),
                self.backoff,
            )
            .await?;
            for item in items {
                if let (Some(id), Some(fingerprint)) = (
                    string_attr(&item, "activityId"),
                    string_attr(&item, FINGERPRINT),
                ) {
                    found.insert((owner.to_owned(), id.to_owned()), fingerprint.to_owned());
                }
            }
        }
        Ok(found)
    }

    /// Writes body objects, a few at once.
    async fn put_objects(&self, objects: Vec<BodyObject>) -> Result<(), StoreError> {
        let Some(bodies) = &self.bodies else {
            return Ok(());
        };
        stream::iter(objects)
            .map(|(key, bytes)| async move { bodies.put_body(&key, bytes).await })
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await
            .map(drop)
    }

    /// One PutItem; `Ok(Some(reason))` when DynamoDB refused the item itself.
    async fn put_single(&self, item: Item) -> Result<Option<String>, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|error| backend("PutItem", &self.table, error));
        match result {
            Ok(_) => Ok(None),
            Err(error) => match refusal(&error) {
                Some(reason) => Ok(Some(reason)),
                None => Err(error),
            },
        }
    }

    /// Writes the prepared items 25 at a time; a chunk DynamoDB refuses for an item of it
    /// (it then writes none of the chunk) is written again item by item, and a refused
    /// item is reported (its body object deleted) while the rest is stored.
    async fn put_pending(
        &self,
        pending: &[(&Activity, Item, Option<String>, bool)],
        report: &mut StoreReport,
    ) -> Result<(), StoreError> {
        for chunk in pending.chunks(BATCH_WRITE_LIMIT) {
            let items = chunk.iter().map(|(_, item, _, _)| item.clone()).collect();
            let changed = chunk.iter().filter(|(.., changed)| *changed).count() as u64;
            match self.put_items(items).await {
                Ok(()) => report.written += changed,
                Err(error) if refusal(&error).is_some() => {
                    warn!(
                        count = chunk.len(),
                        "a write of activities was refused with a ValidationException; writing the items one by one"
                    );
                    for (activity, item, object_key, changed) in chunk {
                        match self.put_single(item.clone()).await? {
                            None => report.written += u64::from(*changed),
                            Some(reason) => {
                                warn!(activity = %activity.activity_id, %reason, "an activity was refused by the table");
                                if let (Some(bodies), Some(key)) = (&self.bodies, object_key) {
                                    bodies.delete_bodies(std::slice::from_ref(key)).await?;
                                }
                                report.refused.push(Refused {
                                    id: activity.activity_id.clone(),
                                    reason,
                                });
                            }
                        }
                    }
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
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
        // A token names the item to start after; one from another user's partition (or
        // made up) would be refused by DynamoDB as a ValidationException, i.e. a server
        // error: it is the caller's invalid token.
        if let Some(start) = &start
            && (string_attr(start, "owner") != Some(owner.to_string().as_str())
                || string_attr(start, "activityId").is_none()
                || start.len() != 2)
        {
            return Err(StoreError::InvalidPageToken);
        }
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
            // Explicit Consent Mode's items share the partition (meeting_consent.rs).
            None => request
                .key_condition_expression("#owner = :owner")
                .filter_expression("NOT begins_with(#id, :consent)")
                .expression_attribute_names("#id", "activityId")
                .expression_attribute_values(":consent", s(CONSENT_ITEM_PREFIX)),
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
    /// With a body store, [`ActivityStore::store_activities`] writing every activity (so
    /// superseded body versions are deleted as there); an item the table refuses is an
    /// error here.
    #[instrument(skip_all, fields(table = %self.table, count = activities.len()))]
    async fn upsert_activities(&self, activities: &[Activity]) -> Result<(), StoreError> {
        if self.bodies.is_none() {
            // Meetings (calendar-sync): no body, no fingerprint read; one BatchWriteItem
            // per 25, the same key twice keeping the last version.
            let latest = latest_versions(activities);
            let days = self.retention_days(latest.values().copied()).await?;
            self.ensure_active(latest.values().copied()).await?;
            let items = latest
                .into_values()
                .map(|activity| Ok(self.prepare(activity, &days)?.0))
                .collect::<Result<Vec<_>, StoreError>>()?;
            return self.put_items(items).await;
        }
        let report = self.store_activities(activities, true).await?;
        match report.refused.len() {
            0 => Ok(()),
            refused => Err(StoreError::Unprocessed {
                operation: "PutItem",
                resource: self.table.clone(),
                remaining: refused,
                attempts: 1,
            }),
        }
    }

    /// Deduplicates, skips what is stored unchanged, writes each body before its item,
    /// and isolates an item DynamoDB refuses: a BatchWriteItem refused with a
    /// ValidationException (DynamoDB then writes none of the batch) is retried item by
    /// item; an item refused alone is reported (its body object deleted) and the rest is
    /// stored.
    #[instrument(skip_all, fields(table = %self.table, count = activities.len()))]
    async fn store_activities(
        &self,
        activities: &[Activity],
        rewrite_unchanged: bool,
    ) -> Result<StoreReport, StoreError> {
        let latest = latest_versions(activities);
        let keys: Vec<(String, String)> = latest.keys().cloned().collect();
        let stored = self.fingerprints(&keys).await?;
        let days = self.retention_days(latest.values().copied()).await?;
        let mut report = StoreReport::default();
        // (activity, item, body key, whether it is new or changed)
        let mut pending: Vec<(&Activity, Item, Option<String>, bool)> = Vec::new();
        let mut objects = Vec::new();
        // Versions replaced by a changed one: their objects go once the new items are in.
        let mut superseded: HashMap<UserKey, Vec<(ActivityId, String)>> = HashMap::new();
        for (key, activity) in latest {
            let changed = stored.get(&key) != Some(&activity.fingerprint());
            if changed && let Some(old) = stored.get(&key) {
                superseded
                    .entry(activity.owner())
                    .or_default()
                    .push((activity.activity_id.clone(), old.clone()));
            }
            if !changed {
                report.unchanged += 1;
                if !rewrite_unchanged {
                    continue;
                }
            }
            let (item, object) = self.prepare(activity, &days)?;
            let object_key = object.as_ref().map(|(key, _)| key.clone());
            // The body of an unchanged activity is already stored as it would be written.
            if changed {
                objects.extend(object);
            }
            pending.push((activity, item, object_key, changed));
        }
        // Bodies first: an item is only ever written once what it points to exists. A
        // failure below leaves objects without items; the retry overwrites them (same key),
        // a refused item's object is deleted here.
        if pending.is_empty() {
            return Ok(report);
        }
        self.ensure_active(pending.iter().map(|(activity, ..)| *activity))
            .await?;
        self.put_objects(objects).await?;
        self.put_pending(&pending, &mut report).await?;
        for (owner, versions) in &superseded {
            self.delete_versions(owner, versions).await?;
        }
        Ok(report)
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
        let Some(item) = output.item else {
            return Ok(None);
        };
        let mut activity = self.decode(item)?;
        self.join_detail(&mut activity).await?;
        Ok(Some(activity))
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
        let version = Self::deleted_version(id, output.attributes.as_ref());
        self.delete_versions(owner, version.as_slice()).await?;
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
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        let Some(output) = conditional(result, "DeleteItem", &self.table)? else {
            return Ok(false);
        };
        let version = Self::deleted_version(id, output.attributes.as_ref());
        self.delete_versions(owner, version.as_slice()).await?;
        Ok(true)
    }

    async fn delete_activities(
        &self,
        owner: &UserKey,
        ids: &[ActivityId],
    ) -> Result<(), StoreError> {
        let unique: HashSet<&ActivityId> = ids.iter().collect();
        // The versions being deleted, read first (BatchWriteItem returns no old items).
        let versions: Vec<(ActivityId, String)> = if self.bodies.is_some() {
            let keys: Vec<(String, String)> = unique
                .iter()
                .filter(|id| id.as_str().starts_with("mail#"))
                .map(|id| (owner.to_string(), id.to_string()))
                .collect();
            self.fingerprints(&keys)
                .await?
                .into_iter()
                .filter_map(|((_, id), fingerprint)| {
                    Some((ActivityId::parse(&id).ok()?, fingerprint))
                })
                .collect()
        } else {
            Vec::new()
        };
        let requests = unique
            .iter()
            .map(|id| delete_request(Self::key(owner, id), &self.table))
            .collect::<Result<Vec<_>, _>>()?;
        batch_write(&self.client, &self.table, requests, self.backoff).await?;
        self.delete_versions(owner, &versions).await
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

    /// The items, then every body object under the user's prefix (orphans included).
    async fn delete_all_activities(&self, owner: &UserKey) -> Result<u64, StoreError> {
        let partition = owner.to_string();
        let deleted = delete_partition(
            &self.client,
            &self.table,
            ("owner", &partition),
            ("activityId", None),
            self.backoff,
        )
        .await?;
        if let Some(bodies) = &self.bodies {
            bodies.delete_prefix(&user_body_prefix(owner)).await?;
        }
        Ok(deleted)
    }
}

// ---------------------------------------------------------------------------------------
