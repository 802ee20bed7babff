//! In-memory implementations of every port, for fast domain and handler tests. They keep
//! the contracts of the real adapters (lease exclusivity and expiry, atomic snapshot
//! replacement, idempotent upserts, paging) but nothing survives the process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::crm::{normalize_domain, normalize_email};
use crate::domain::{
    Activity, ActivityId, Connection, ConnectionStatus, CrmAdditions, CrmIndexContent,
    CrmIndexSummary, CrmLookup, CrmSnapshot, FolderCursor, Lease, ReplaceOutcome, StatusChange,
    SyncKey, SyncKind, SyncMeta, Tenant, TenantId, TenantSwitches, UserKey, UserSwitches,
};
use crate::matching::CrmMatchIndex;
use crate::ports::{
    ActivityStore, BodyStore, ClientSecretSource, ConnectionStore, CrmIndex, JobQueue, Page,
    PageToken, QueueError, QueueMessage, StoreError, StoreReport, SyncStateStore, TenantStore,
    TokenVault, VaultError, validate_messages,
};
use crate::secret::{ClientSecret, TokenRecord};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not poison the store for the others.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Pages a sorted map from just after `token`.
fn page_of<V: Clone>(
    map: &BTreeMap<String, V>,
    page_size: u32,
    token: Option<&PageToken>,
) -> Result<Page<V>, StoreError> {
    let page_size = page_size.max(1) as usize;
    let start = match token {
        Some(token) => {
            if token.as_str().is_empty() {
                return Err(StoreError::InvalidPageToken);
            }
            std::ops::Bound::Excluded(token.as_str().to_owned())
        }
        None => std::ops::Bound::Unbounded,
    };
    let mut items = Vec::new();
    let mut last_key = None;
    let mut more = false;
    for (key, value) in map.range((start, std::ops::Bound::Unbounded)) {
        if items.len() == page_size {
            more = true;
            break;
        }
        items.push(value.clone());
        last_key = Some(key.clone());
    }
    Ok(Page {
        items,
        next: if more { last_key.map(PageToken) } else { None },
    })
}

#[derive(Default)]
pub struct MemoryTenantStore {
    tenants: Mutex<HashMap<TenantId, Tenant>>,
}

#[async_trait]
impl TenantStore for MemoryTenantStore {
    async fn get_tenant(&self, tenant_id: &TenantId) -> Result<Option<Tenant>, StoreError> {
        Ok(lock(&self.tenants).get(tenant_id).cloned())
    }

    async fn put_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        lock(&self.tenants).insert(tenant.tenant_id.clone(), tenant.clone());
        Ok(())
    }

    async fn delete_tenant(&self, tenant_id: &TenantId) -> Result<bool, StoreError> {
        Ok(lock(&self.tenants).remove(tenant_id).is_some())
    }

    async fn set_switches(
        &self,
        tenant_id: &TenantId,
        switches: TenantSwitches,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut tenants = lock(&self.tenants);
        let tenant = tenants
            .get_mut(tenant_id)
            .ok_or_else(|| StoreError::NotFound {
                what: format!("tenant {tenant_id}"),
            })?;
        tenant.switches = switches;
        tenant.updated_at = now;
        Ok(())
    }
}

/// Connections keyed by `{tenantId}#{userId}`, the order of the `ByStatus` index.
#[derive(Default)]
pub struct MemoryConnectionStore {
    connections: Mutex<BTreeMap<String, Connection>>,
}

impl MemoryConnectionStore {
    fn update(
        &self,
        key: &UserKey,
        change: impl FnOnce(&mut Connection),
    ) -> Result<Connection, StoreError> {
        let mut connections = lock(&self.connections);
        let connection =
            connections
                .get_mut(&key.to_string())
                .ok_or_else(|| StoreError::NotFound {
                    what: format!("connection {key}"),
                })?;
        change(connection);
        Ok(connection.clone())
    }
}

#[async_trait]
impl ConnectionStore for MemoryConnectionStore {
    async fn get_connection(&self, key: &UserKey) -> Result<Option<Connection>, StoreError> {
        Ok(lock(&self.connections).get(&key.to_string()).cloned())
    }

    async fn upsert_connection(&self, connection: &Connection) -> Result<(), StoreError> {
        lock(&self.connections).insert(connection.key().to_string(), connection.clone());
        Ok(())
    }

    async fn set_status(
        &self,
        key: &UserKey,
        change: &StatusChange,
    ) -> Result<Connection, StoreError> {
        self.update(key, |connection| connection.apply(change))
    }

    async fn replace_disconnected_reason(
        &self,
        key: &UserKey,
        from: &str,
        to: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut connections = lock(&self.connections);
        match connections.get_mut(&key.to_string()) {
            Some(connection)
                if connection.status == ConnectionStatus::Disconnected
                    && connection.status_reason.as_deref() == Some(from) =>
            {
                connection.status_reason = Some(to.to_owned());
                connection.updated_at = now;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn set_parked_until(
        &self,
        key: &UserKey,
        kind: SyncKind,
        until: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.update(key, |connection| {
            connection.parked_until.set(kind, until);
            connection.updated_at = now;
        })
        .map(drop)
    }

    async fn set_switches(
        &self,
        key: &UserKey,
        switches: UserSwitches,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.update(key, |connection| {
            connection.switches = switches;
            connection.updated_at = now;
        })
        .map(drop)
    }

    async fn list_by_tenant(&self, tenant_id: &TenantId) -> Result<Vec<Connection>, StoreError> {
        Ok(lock(&self.connections)
            .values()
            .filter(|connection| &connection.tenant_id == tenant_id)
            .cloned()
            .collect())
    }

    async fn query_active(
        &self,
        page_size: u32,
        token: Option<&PageToken>,
    ) -> Result<Page<Connection>, StoreError> {
        let active: BTreeMap<String, Connection> = lock(&self.connections)
            .iter()
            .filter(|(_, connection)| connection.status == ConnectionStatus::Active)
            .map(|(key, connection)| (key.clone(), connection.clone()))
            .collect();
        page_of(&active, page_size, token)
    }

    async fn list_all(
        &self,
        page_size: u32,
        token: Option<&PageToken>,
    ) -> Result<Page<Connection>, StoreError> {
        let all = lock(&self.connections).clone();
        page_of(&all, page_size, token)
    }

    async fn delete_connection(&self, key: &UserKey) -> Result<bool, StoreError> {
        Ok(lock(&self.connections).remove(&key.to_string()).is_some())
    }
}

#[derive(Default)]
struct SyncItems {
    lease: Option<Lease>,
    meta: Option<SyncMeta>,
    cursors: BTreeMap<String, FolderCursor>,
}

#[derive(Default)]
pub struct MemorySyncStateStore {
    items: Mutex<HashMap<SyncKey, SyncItems>>,
}

#[async_trait]
impl SyncStateStore for MemorySyncStateStore {
    async fn acquire_lease(
        &self,
        key: &SyncKey,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut items = lock(&self.items);
        let entry = items.entry(key.clone()).or_default();
        let free = entry
            .lease
            .as_ref()
            .is_none_or(|lease| lease.expires_at <= now || lease.holder == holder);
        if free {
            entry.lease = Some(Lease {
                holder: holder.to_owned(),
                expires_at: now + ttl,
            });
        }
        Ok(free)
    }

    async fn renew_lease(
        &self,
        key: &SyncKey,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut items = lock(&self.items);
        let Some(lease) = items.get_mut(key).and_then(|entry| entry.lease.as_mut()) else {
            return Ok(false);
        };
        if lease.holder != holder {
            return Ok(false);
        }
        lease.expires_at = now + ttl;
        Ok(true)
    }

    async fn release_lease(&self, key: &SyncKey, holder: &str) -> Result<bool, StoreError> {
        let mut items = lock(&self.items);
        let Some(entry) = items.get_mut(key) else {
            return Ok(false);
        };
        if entry
            .lease
            .as_ref()
            .is_some_and(|lease| lease.holder == holder)
        {
            entry.lease = None;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    async fn get_lease(&self, key: &SyncKey) -> Result<Option<Lease>, StoreError> {
        Ok(lock(&self.items)
            .get(key)
            .and_then(|entry| entry.lease.clone()))
    }

    async fn get_meta(&self, key: &SyncKey) -> Result<Option<SyncMeta>, StoreError> {
        Ok(lock(&self.items)
            .get(key)
            .and_then(|entry| entry.meta.clone()))
    }

    async fn put_meta(&self, key: &SyncKey, meta: &SyncMeta) -> Result<(), StoreError> {
        lock(&self.items).entry(key.clone()).or_default().meta = Some(meta.clone());
        Ok(())
    }

    async fn get_cursor(
        &self,
        key: &SyncKey,
        folder_id: &str,
    ) -> Result<Option<FolderCursor>, StoreError> {
        Ok(lock(&self.items)
            .get(key)
            .and_then(|entry| entry.cursors.get(folder_id).cloned()))
    }

    async fn put_cursor(&self, key: &SyncKey, cursor: &FolderCursor) -> Result<(), StoreError> {
        lock(&self.items)
            .entry(key.clone())
            .or_default()
            .cursors
            .insert(cursor.folder_id.clone(), cursor.clone());
        Ok(())
    }

    async fn list_cursors(&self, key: &SyncKey) -> Result<Vec<FolderCursor>, StoreError> {
        Ok(lock(&self.items)
            .get(key)
            .map(|entry| entry.cursors.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn delete_cursor(&self, key: &SyncKey, folder_id: &str) -> Result<(), StoreError> {
        if let Some(entry) = lock(&self.items).get_mut(key) {
            entry.cursors.remove(folder_id);
        }
        Ok(())
    }

    async fn delete_sync_state(&self, key: &SyncKey) -> Result<(), StoreError> {
        lock(&self.items).remove(key);
        Ok(())
    }
}

/// Activities per owner, sorted by activity id like the table's sort key.
#[derive(Default)]
pub struct MemoryActivityStore {
    activities: Mutex<HashMap<UserKey, BTreeMap<String, Activity>>>,
}

#[async_trait]
impl ActivityStore for MemoryActivityStore {
    async fn upsert_activities(&self, activities: &[Activity]) -> Result<(), StoreError> {
        let mut all = lock(&self.activities);
        for activity in activities {
            all.entry(activity.owner())
                .or_default()
                .insert(activity.activity_id.to_string(), activity.clone());
        }
        Ok(())
    }

    /// Keeps activities whole (no item limit here); counts as the DynamoDB adapter does.
    async fn store_activities(
        &self,
        activities: &[Activity],
        rewrite_unchanged: bool,
    ) -> Result<StoreReport, StoreError> {
        let mut latest: BTreeMap<(UserKey, String), &Activity> = BTreeMap::new();
        for activity in activities {
            latest.insert(
                (activity.owner(), activity.activity_id.to_string()),
                activity,
            );
        }
        let mut all = lock(&self.activities);
        let mut report = StoreReport::default();
        for ((owner, id), activity) in latest {
            let stored = all.entry(owner).or_default();
            if stored
                .get(&id)
                .is_some_and(|old| old.fingerprint() == activity.fingerprint())
            {
                report.unchanged += 1;
                if rewrite_unchanged {
                    stored.insert(id, activity.clone());
                }
            } else {
                stored.insert(id, activity.clone());
                report.written += 1;
            }
        }
        Ok(report)
    }

    async fn get_activity(
        &self,
        owner: &UserKey,
        id: &ActivityId,
    ) -> Result<Option<Activity>, StoreError> {
        Ok(lock(&self.activities)
            .get(owner)
            .and_then(|activities| activities.get(id.as_str()).cloned()))
    }

    async fn delete_activity(&self, owner: &UserKey, id: &ActivityId) -> Result<bool, StoreError> {
        Ok(lock(&self.activities)
            .get_mut(owner)
            .and_then(|activities| activities.remove(id.as_str()))
            .is_some())
    }

    async fn delete_mail_in_folder(
        &self,
        owner: &UserKey,
        id: &ActivityId,
        folder_id: &str,
    ) -> Result<bool, StoreError> {
        let mut all = lock(&self.activities);
        let Some(activities) = all.get_mut(owner) else {
            return Ok(false);
        };
        let in_folder = activities.get(id.as_str()).is_some_and(|activity| {
            matches!(&activity.content, crate::domain::ActivityContent::Mail(mail) if mail.folder_id == folder_id)
        });
        if in_folder {
            activities.remove(id.as_str());
        }
        Ok(in_folder)
    }

    async fn delete_activities(
        &self,
        owner: &UserKey,
        ids: &[ActivityId],
    ) -> Result<(), StoreError> {
        if let Some(activities) = lock(&self.activities).get_mut(owner) {
            for id in ids {
                activities.remove(id.as_str());
            }
        }
        Ok(())
    }

    async fn list_activities(
        &self,
        owner: &UserKey,
        page_size: u32,
        token: Option<&PageToken>,
    ) -> Result<Page<Activity>, StoreError> {
        let activities = lock(&self.activities)
            .get(owner)
            .cloned()
            .unwrap_or_default();
        page_of(&activities, page_size, token)
    }

    async fn delete_all_activities(&self, owner: &UserKey) -> Result<u64, StoreError> {
        Ok(lock(&self.activities)
            .remove(owner)
            .map_or(0, |activities| activities.len() as u64))
    }
}

/// Objects by key, sorted (prefix deletes and counts walk a range).
#[derive(Default)]
pub struct MemoryBodyStore {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemoryBodyStore {
    fn under(&self, prefix: &str) -> Vec<String> {
        lock(&self.objects)
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, _)| key.clone())
            .collect()
    }
}

#[async_trait]
impl BodyStore for MemoryBodyStore {
    async fn put_body(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        lock(&self.objects).insert(key.to_owned(), bytes);
        Ok(())
    }

    async fn get_body(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(lock(&self.objects).get(key).cloned())
    }

    async fn delete_bodies(&self, keys: &[String]) -> Result<(), StoreError> {
        let mut objects = lock(&self.objects);
        for key in keys {
            objects.remove(key);
        }
        Ok(())
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let keys = self.under(prefix);
        let mut objects = lock(&self.objects);
        for key in &keys {
            objects.remove(key);
        }
        Ok(keys.len() as u64)
    }

    async fn count_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        Ok(self.under(prefix).len() as u64)
    }
}

/// Each tenant's index is swapped whole under the lock, so readers see old or new.
#[derive(Default)]
pub struct MemoryCrmIndex {
    indexes: Mutex<HashMap<TenantId, MemoryIndex>>,
}

/// One tenant's current index, with each entry's stamp (`a#{address}`, `d#{domain}` →
/// the import that first brought it), as the DynamoDB store keeps them.
struct MemoryIndex {
    summary: CrmIndexSummary,
    content: CrmIndexContent,
    since: HashMap<String, OffsetDateTime>,
}

impl MemoryIndex {
    fn entries(content: &CrmIndexContent) -> impl Iterator<Item = String> + '_ {
        let addresses = content.addresses.keys().map(|a| format!("a#{a}"));
        addresses.chain(content.domains.keys().map(|d| format!("d#{d}")))
    }
}

#[async_trait]
impl CrmIndex for MemoryCrmIndex {
    async fn replace_snapshot(&self, snapshot: &CrmSnapshot) -> Result<ReplaceOutcome, StoreError> {
        let content = snapshot.index();
        let mut indexes = lock(&self.indexes);
        let previous = indexes.get(&snapshot.tenant_id);
        if let Some(MemoryIndex { summary, .. }) = previous
            && summary.content_hash == content.content_hash
        {
            return Ok(ReplaceOutcome::Unchanged {
                summary: summary.clone(),
            });
        }
        let previous_version = previous.map(|old| old.summary.version.clone());
        let removed_entries = previous.map_or(0, |old| {
            (old.content.addresses.len() + old.content.domains.len()) as u64
        });
        let now = OffsetDateTime::now_utc();
        let since: HashMap<String, OffsetDateTime> = MemoryIndex::entries(&content)
            .map(|entry| {
                let kept = previous.and_then(|old| old.since.get(&entry).copied());
                (entry, kept.unwrap_or(now))
            })
            .collect();
        let removed_any = previous.is_some_and(|old| {
            old.since
                .keys()
                .any(|entry| !since.contains_key(entry.as_str()))
        });
        let summary = CrmIndexSummary {
            version: uuid::Uuid::new_v4().simple().to_string(),
            content_hash: content.content_hash.clone(),
            imported_at: now,
            oldest_open_opportunity: content.oldest_open_opportunity,
            stats: content.stats,
            removed_at: CrmIndexSummary::removed_at_after(
                previous.map(|old| &old.summary),
                removed_any,
                now,
            ),
        };
        let written_entries = (content.addresses.len() + content.domains.len()) as u64;
        indexes.insert(
            snapshot.tenant_id.clone(),
            MemoryIndex {
                summary: summary.clone(),
                content,
                since,
            },
        );
        Ok(ReplaceOutcome::Replaced {
            summary,
            previous_version,
            written_entries,
            removed_entries,
        })
    }

    async fn lookup(
        &self,
        tenant_id: &TenantId,
        addresses: &[String],
        domains: &[String],
    ) -> Result<CrmLookup, StoreError> {
        let indexes = lock(&self.indexes);
        let mut result = CrmLookup::default();
        let Some(MemoryIndex { content, .. }) = indexes.get(tenant_id) else {
            return Ok(result);
        };
        for address in addresses.iter().filter_map(|a| normalize_email(a)) {
            if let Some(records) = content.addresses.get(&address) {
                result.addresses.insert(address, records.clone());
            }
        }
        for domain in domains.iter().filter_map(|d| normalize_domain(d)) {
            if let Some(records) = content.domains.get(&domain) {
                result.domains.insert(domain, records.clone());
            }
        }
        Ok(result)
    }

    async fn summary(&self, tenant_id: &TenantId) -> Result<Option<CrmIndexSummary>, StoreError> {
        Ok(lock(&self.indexes)
            .get(tenant_id)
            .map(|index| index.summary.clone()))
    }

    async fn load(
        &self,
        tenant_id: &TenantId,
    ) -> Result<Option<(CrmIndexSummary, CrmMatchIndex)>, StoreError> {
        Ok(lock(&self.indexes)
            .get(tenant_id)
            .map(|index| (index.summary.clone(), CrmMatchIndex::from(&index.content))))
    }

    async fn delete_index(&self, tenant_id: &TenantId) -> Result<u64, StoreError> {
        Ok(lock(&self.indexes).remove(tenant_id).map_or(0, |index| {
            (index.content.addresses.len() + index.content.domains.len()) as u64 + 1
        }))
    }

    async fn additions_since(
        &self,
        tenant_id: &TenantId,
        after: OffsetDateTime,
    ) -> Result<Option<CrmAdditions>, StoreError> {
        let indexes = lock(&self.indexes);
        let Some(index) = indexes.get(tenant_id) else {
            return Ok(None);
        };
        let is_added = |entry: String| index.since.get(&entry).is_some_and(|since| *since > after);
        let added = CrmMatchIndex::from_content_where(
            &index.content,
            |address| is_added(format!("a#{address}")),
            |domain| is_added(format!("d#{domain}")),
        );
        Ok(Some(CrmAdditions {
            summary: index.summary.clone(),
            index: added,
        }))
    }
}

#[derive(Default)]
pub struct MemoryTokenVault {
    secrets: Mutex<HashMap<UserKey, TokenRecord>>,
}

#[async_trait]
impl TokenVault for MemoryTokenVault {
    async fn put_token(&self, key: &UserKey, record: &TokenRecord) -> Result<(), VaultError> {
        lock(&self.secrets).insert(key.clone(), record.clone());
        Ok(())
    }

    async fn replace_token(&self, key: &UserKey, record: &TokenRecord) -> Result<bool, VaultError> {
        Ok(lock(&self.secrets)
            .get_mut(key)
            .map(|stored| *stored = record.clone())
            .is_some())
    }

    async fn get_token(&self, key: &UserKey) -> Result<Option<TokenRecord>, VaultError> {
        Ok(lock(&self.secrets).get(key).cloned())
    }

    async fn delete_token(&self, key: &UserKey) -> Result<(), VaultError> {
        lock(&self.secrets).remove(key);
        Ok(())
    }
}

/// A fixed client secret.
pub struct StaticClientSecret(pub ClientSecret);

#[async_trait]
impl ClientSecretSource for StaticClientSecret {
    async fn client_secret(&self) -> Result<ClientSecret, VaultError> {
        Ok(self.0.clone())
    }
}

/// Records what was sent, per queue URL, in order.
#[derive(Default)]
pub struct MemoryJobQueue {
    sent: Mutex<HashMap<String, Vec<QueueMessage>>>,
    visibility: Mutex<Vec<(String, String, Duration)>>,
}

impl MemoryJobQueue {
    /// Everything sent to `queue_url` so far.
    pub fn sent(&self, queue_url: &str) -> Vec<QueueMessage> {
        lock(&self.sent).get(queue_url).cloned().unwrap_or_default()
    }

    /// Removes and returns what was sent to `queue_url`.
    pub fn take(&self, queue_url: &str) -> Vec<QueueMessage> {
        lock(&self.sent).remove(queue_url).unwrap_or_default()
    }

    /// `(queue_url, receipt_handle, timeout)` of every visibility change.
    pub fn visibility_changes(&self) -> Vec<(String, String, Duration)> {
        lock(&self.visibility).clone()
    }
}

#[async_trait]
impl JobQueue for MemoryJobQueue {
    async fn send_batch(
        &self,
        queue_url: &str,
        messages: &[QueueMessage],
    ) -> Result<usize, QueueError> {
        validate_messages(messages)?;
        lock(&self.sent)
            .entry(queue_url.to_owned())
            .or_default()
            .extend_from_slice(messages);
        Ok(messages.len())
    }

    async fn change_visibility(
        &self,
        queue_url: &str,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        lock(&self.visibility).push((queue_url.to_owned(), receipt_handle.to_owned(), timeout));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::crm::domain_and_parents;
    use crate::domain::{FeatureBundle, ScopeSet, UserId};
    use crate::messages::{SyncJob, SyncReason};
    use crate::ports::enqueue_sync_jobs;
    use crate::secret::RefreshToken;

    fn tenant() -> TenantId {
        TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").expect("guid")
    }

    fn user(n: u32) -> UserId {
        UserId::parse(&format!("00000000-0000-0000-0000-{n:012}")).expect("guid")
    }

    #[tokio::test]
    async fn offboarding_deletes_a_connection_and_a_tenants_index_only() {
        let connections = MemoryConnectionStore::default();
        let now = OffsetDateTime::now_utc();
        for n in [1, 2] {
            connections
                .upsert_connection(&Connection::new_active(
                    tenant(),
                    user(n),
                    "u@contoso.com",
                    ScopeSet::new(),
                    now,
                ))
                .await
                .expect("upsert");
        }
        let one = UserKey::new(tenant(), user(1));
        assert!(connections.delete_connection(&one).await.expect("delete"));
        assert!(!connections.delete_connection(&one).await.expect("again"));
        assert_eq!(
            connections
                .list_by_tenant(&tenant())
                .await
                .expect("list")
                .len(),
            1
        );

        let crm = MemoryCrmIndex::default();
        let other = TenantId::parse("0d0f6f3e-1c1a-4c55-9c8e-1a2b3c4d5e6f").expect("guid");
        for t in [tenant(), other.clone()] {
            let snapshot = format!(
                r#"{{"tenantId": "{t}", "accounts": [{{"id": "1", "name": "A", "domains": ["acme.com"]}}],
                 "contacts": [], "leads": [], "opportunities": []}}"#
            );
            crm.replace_snapshot(
                &CrmSnapshot::from_json_slice(snapshot.as_bytes()).expect("valid"),
            )
            .await
            .expect("import");
        }
        assert!(crm.delete_index(&tenant()).await.expect("delete") >= 2);
        assert!(crm.summary(&tenant()).await.expect("summary").is_none());
        assert!(crm.summary(&other).await.expect("summary").is_some());
        assert_eq!(crm.delete_index(&tenant()).await.expect("again"), 0);
    }

    #[tokio::test]
    async fn lease_is_exclusive_expires_and_is_released_only_by_its_holder() {
        let store = Arc::new(MemorySyncStateStore::default());
        let key = SyncKey::new(tenant(), user(1), SyncKind::Mail);
        let mut tasks = Vec::new();
        for i in 0..20 {
            let store = store.clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .acquire_lease(&key, &format!("worker-{i}"), Duration::from_secs(60))
                    .await
            }));
        }
        let mut winners = 0;
        for task in tasks {
            if task.await.expect("joins").expect("acquires") {
                winners += 1;
            }
        }
        assert_eq!(winners, 1);
        let holder = store
            .get_lease(&key)
            .await
            .expect("reads")
            .expect("held")
            .holder;
        assert!(!store.release_lease(&key, "intruder").await.expect("ok"));
        assert!(store.release_lease(&key, &holder).await.expect("ok"));
        assert!(
            store
                .acquire_lease(&key, "short", Duration::from_millis(20))
                .await
                .expect("ok")
        );
        assert!(
            !store
                .acquire_lease(&key, "other", Duration::from_secs(5))
                .await
                .expect("ok")
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(
            store
                .acquire_lease(&key, "other", Duration::from_secs(5))
                .await
                .expect("ok")
        );
        // Only the holder renews; a lease taken over is not renewed by its old holder.
        let renew = |holder: &'static str| {
            let (store, key) = (&store, &key);
            async move {
                store
                    .renew_lease(key, holder, Duration::from_secs(5))
                    .await
                    .expect("ok")
            }
        };
        assert!(renew("other").await);
        assert!(!renew("short").await);
        assert!(store.release_lease(&key, "other").await.expect("ok"));
        assert!(!renew("other").await, "a released lease is not renewed");
    }

    #[tokio::test]
    async fn connections_page_over_active_only() {
        let store = MemoryConnectionStore::default();
        let now = OffsetDateTime::now_utc();
        for n in 0..7 {
            let connection = Connection::new_active(
                tenant(),
                user(n),
                format!("u{n}@contoso.com"),
                FeatureBundle::All.scope_set(),
                now,
            );
            store.upsert_connection(&connection).await.expect("upserts");
        }
        store
            .set_status(
                &UserKey::new(tenant(), user(3)),
                &StatusChange::new(ConnectionStatus::ReauthRequired, Some("invalid_grant"), now),
            )
            .await
            .expect("updates");
        let mut seen = Vec::new();
        let mut token = None;
        let mut pages = 0;
        loop {
            let page = store.query_active(2, token.as_ref()).await.expect("pages");
            pages += 1;
            seen.extend(page.items.into_iter().map(|c| c.user_id));
            match page.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(seen.len(), 6);
        assert!(!seen.contains(&user(3)));
        let missing = store
            .set_status(
                &UserKey::new(tenant(), user(99)),
                &StatusChange::new(ConnectionStatus::Disconnected, None, now),
            )
            .await;
        assert!(matches!(missing, Err(StoreError::NotFound { .. })));
    }

    #[tokio::test]
    async fn crm_replace_is_idempotent_and_lookups_normalise() {
        let index = MemoryCrmIndex::default();
        let snapshot = CrmSnapshot::from_json_slice(
            br#"{"tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
                 "accounts": [{"id": "A", "name": "Acme", "domains": ["acme.com"]}],
                 "contacts": [{"id": "C", "email": "jane@acme.com", "accountId": "A"}]}"#,
        )
        .expect("valid");
        assert!(matches!(
            index.replace_snapshot(&snapshot).await.expect("writes"),
            ReplaceOutcome::Replaced {
                written_entries: 2,
                ..
            }
        ));
        assert!(matches!(
            index.replace_snapshot(&snapshot).await.expect("writes"),
            ReplaceOutcome::Unchanged { .. }
        ));
        let found = index
            .lookup(
                &tenant(),
                &[" JANE@acme.com".into(), "nobody@acme.com".into()],
                &domain_and_parents("mail.ACME.com"),
            )
            .await
            .expect("looks up");
        assert_eq!(found.addresses.len(), 1);
        assert_eq!(found.domains["acme.com"][0].id, "A");
    }

    #[tokio::test]
    async fn vault_and_queue() {
        let vault = MemoryTokenVault::default();
        let key = UserKey::new(tenant(), user(1));
        vault
            .put_token(
                &key,
                &TokenRecord {
                    refresh_token: RefreshToken::new("r1"),
                    scopes: ScopeSet::parse("offline_access"),
                    updated_at: OffsetDateTime::now_utc(),
                },
            )
            .await
            .expect("stores");
        assert_eq!(
            vault
                .get_token(&key)
                .await
                .expect("reads")
                .expect("present")
                .refresh_token
                .secret(),
            "r1"
        );
        vault.delete_token(&key).await.expect("deletes");
        assert!(vault.get_token(&key).await.expect("reads").is_none());
        vault
            .delete_token(&key)
            .await
            .expect("deleting again is fine");

        let queue = MemoryJobQueue::default();
        let jobs: Vec<SyncJob> = (0..3)
            .map(|n| SyncJob::new(SyncKind::Mail, tenant(), user(n), SyncReason::Scheduled))
            .collect();
        assert_eq!(
            enqueue_sync_jobs(&queue, "q", &jobs).await.expect("sends"),
            3
        );
        let sent: Vec<SyncJob> = queue
            .take("q")
            .iter()
            .map(|m| serde_json::from_str(&m.body).expect("json"))
            .collect();
        assert_eq!(sent, jobs);
        let too_late = QueueMessage::new("x").with_delay(Duration::from_secs(901));
        assert!(matches!(
            queue.send_batch("q", &[too_late]).await,
            Err(QueueError::InvalidMessage { .. })
        ));
    }
}

/// The slot ledger in memory. It also keeps, per mailbox, the largest sum of live shares
/// ever written (what the limit is about), for tests.
#[derive(Default)]
pub struct MemorySlotLedger {
    ledgers: Mutex<HashMap<String, (u64, crate::budget::MailboxShares)>>,
    most_held: Mutex<HashMap<String, u32>>,
}

impl MemorySlotLedger {
    /// The largest sum of live shares ever written for `mailbox`.
    pub fn most_held(&self, mailbox: &str) -> u32 {
        lock(&self.most_held).get(mailbox).copied().unwrap_or(0)
    }
}

#[async_trait]
impl crate::ports::SlotLedger for MemorySlotLedger {
    async fn read_slots(&self, mailbox: &str) -> Result<crate::budget::LedgerRead, StoreError> {
        Ok(lock(&self.ledgers)
            .get(mailbox)
            .map(|(version, shares)| crate::budget::LedgerRead {
                shares: shares.clone(),
                version: *version,
            })
            .unwrap_or_default())
    }

    async fn write_slots(
        &self,
        mailbox: &str,
        shares: &crate::budget::MailboxShares,
        version: u64,
    ) -> Result<bool, StoreError> {
        let mut ledgers = lock(&self.ledgers);
        let current = ledgers.get(mailbox).map_or(0, |(version, _)| *version);
        if current != version {
            return Ok(false);
        }
        if shares.holders.is_empty() {
            ledgers.remove(mailbox);
        } else {
            ledgers.insert(mailbox.to_owned(), (version + 1, shares.clone()));
        }
        let held = shares.held(crate::budget::unix_ms(OffsetDateTime::now_utc()));
        let mut most = lock(&self.most_held);
        let most = most.entry(mailbox.to_owned()).or_default();
        *most = (*most).max(held);
        Ok(true)
    }
}
