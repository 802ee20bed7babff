//! The CRM index, versioned (see the module documentation of `adapters::dynamodb`).

use super::*;

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
    /// When the entry first entered the index ([`since_stamp`] of that import), carried
    /// from version to version while it stays: what [`CrmIndex::additions_since`] reads.
    /// Entries written before stamps existed have none and count as always there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    since: Option<i64>,
}

/// An import's instant as stored on its entries: nanoseconds since the epoch, so two
/// imports are told apart however close.
fn since_stamp(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos()).unwrap_or(i64::MAX)
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
        let absent: Vec<&str> = [
            (
                summary.oldest_open_opportunity.is_none(),
                "oldestOpenOpportunity",
            ),
            (summary.removed_at.is_none(), "removedAt"),
        ]
        .into_iter()
        .filter_map(|(absent, name)| absent.then_some(name))
        .collect();
        for (i, name) in absent.iter().enumerate() {
            names.insert(format!("#absent{i}"), (*name).to_owned());
            expression.push_str(if i == 0 { " REMOVE " } else { ", " });
            expression.push_str(&format!("#absent{i}"));
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

    /// Queries every entry of `version` page by page (at most [`Self::load_page_items`] a
    /// page), projecting `attributes` besides the entry's key, and hands each to `each`
    /// with its key without the version prefix (`a#{address}` / `d#{domain}`); with
    /// `added_after`, only entries stamped after it (a filtered Query: DynamoDB reads the
    /// version's entries, returns the added ones). Each page is dropped before the next is
    /// requested, so a reader holds one bounded page of SDK items, never the whole index.
    async fn for_each_entry(
        &self,
        tenant_id: &TenantId,
        version: &str,
        attributes: &str,
        added_after: Option<i64>,
        mut each: impl FnMut(&str, Item) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let prefix = format!("v#{version}#");
        let mut start: Option<Item> = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                .expression_attribute_names("#pk", "tenantId")
                .expression_attribute_names("#sk", "entry")
                .expression_attribute_names("#attr", attributes)
                .expression_attribute_values(":pk", s(tenant_id.as_str()))
                .expression_attribute_values(":prefix", s(&prefix))
                .projection_expression("#sk, #attr")
                .limit(self.load_page_items)
                .set_exclusive_start_key(start.take());
            if let Some(after) = added_after {
                query = query
                    .filter_expression("#since > :after")
                    .expression_attribute_names("#since", "since")
                    .expression_attribute_values(":after", AttributeValue::N(after.to_string()));
            }
            let output = query
                .send()
                .await
                .map_err(|error| backend("Query", &self.table, error))?;
            for item in output.items.unwrap_or_default() {
                let entry = string_attr(&item, "entry").unwrap_or_default().to_owned();
                if let Some(key) = entry.strip_prefix(&prefix) {
                    each(key, item)?;
                }
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(()),
            }
        }
    }

    /// Every entry of `version` with its stamp (`None`: written before stamps existed):
    /// what the next version carries over.
    async fn stamps_of_version(
        &self,
        tenant_id: &TenantId,
        version: &str,
    ) -> Result<HashMap<String, Option<i64>>, StoreError> {
        let mut stamps = HashMap::new();
        self.for_each_entry(tenant_id, version, "since", None, |key, item| {
            let since = match item.get("since") {
                Some(AttributeValue::N(n)) => n.parse().ok(),
                _ => None,
            };
            stamps.insert(key.to_owned(), since);
            Ok(())
        })
        .await?;
        Ok(stamps)
    }

    /// Every entry of `version` (with `added_after`, the added ones only) as a
    /// [`CrmMatchIndex`], decoded page by page.
    async fn load_version(
        &self,
        tenant_id: &TenantId,
        version: &str,
        added_after: Option<i64>,
    ) -> Result<CrmMatchIndex, StoreError> {
        let mut builder = CrmMatchIndexBuilder::new();
        let what = |key: &str| format!("{tenant_id}/v#{version}#{key}");
        self.for_each_entry(tenant_id, version, "records", added_after, |key, item| {
            if let Some(address) = key.strip_prefix("a#") {
                let records: EntryRecords<MatchedRecord> =
                    from_item(item, &self.table, &what(key))?;
                builder.add_address(
                    address,
                    records
                        .records
                        .iter()
                        .map(|record| (record.kind, record.id.as_str())),
                );
            } else if let Some(domain) = key.strip_prefix("d#") {
                let records: EntryRecords<MatchedOwner> = from_item(item, &self.table, &what(key))?;
                builder.add_domain(
                    domain,
                    records.records.iter().map(|owner| owner.id.as_str()),
                );
            }
            Ok(())
        })
        .await?;
        Ok(builder.finish())
    }

    /// Reads the pointer, reads its version with `read`, and reads the pointer again: an
    /// unchanged pointer proves what was read is one complete version (see the module
    /// doc); a pointer flipped meanwhile reads again. `None` without an index.
    async fn read_consistently<T, F>(
        &self,
        tenant_id: &TenantId,
        what: &str,
        read: impl Fn(String) -> F,
    ) -> Result<Option<(CrmIndexSummary, T)>, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        for _ in 0..LOOKUP_ATTEMPTS {
            let Some(before) = self.read_pointer(tenant_id).await?.summary else {
                return Ok(None);
            };
            let value = read(before.version.clone()).await?;
            let after = self.read_pointer(tenant_id).await?.summary;
            if after.is_some_and(|after| after.version == before.version) {
                return Ok(Some((before, value)));
            }
            debug!("CRM index replaced during {what}; reading the new version");
        }
        Err(StoreError::Conflict {
            what: format!("CRM index of tenant {tenant_id} (kept changing during {what})"),
        })
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
        // Entries that stay keep the stamp of the import that first brought them; new ones
        // get this import's.
        let previous_stamps = match &before.summary {
            Some(summary) => self.stamps_of_version(tenant_id, &summary.version).await?,
            None => HashMap::new(),
        };
        let stamp_of = |key: String| match previous_stamps.get(&key) {
            Some(kept) => *kept,
            None => Some(since_stamp(now)),
        };
        self.mark_pending(tenant_id, &version, true).await?;

        let mut requests = Vec::with_capacity(content.addresses.len() + content.domains.len());
        for (address, records) in &content.addresses {
            let entry = Self::address_entry(&version, address);
            let mut item = to_item(
                &EntryRecords {
                    records: records.clone(),
                    since: stamp_of(format!("a#{address}")),
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
                    since: stamp_of(format!("d#{domain}")),
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

        let removed_any = previous_stamps.keys().any(|key| match key.split_once('#') {
            Some(("a", address)) => !content.addresses.contains_key(address),
            Some(("d", domain)) => !content.domains.contains_key(domain),
            _ => false,
        });
        let summary = CrmIndexSummary {
            version: version.clone(),
            content_hash: content.content_hash.clone(),
            imported_at: now,
            oldest_open_opportunity: content.oldest_open_opportunity,
            stats: content.stats,
            removed_at: CrmIndexSummary::removed_at_after(
                before.summary.as_ref(),
                removed_any,
                now,
            ),
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
        Ok(self
            .read_consistently(tenant_id, "lookup", |version| {
                let (addresses, domains) = (&addresses, &domains);
                async move {
                    self.lookup_version(tenant_id, &version, addresses, domains)
                        .await
                }
            })
            .await?
            .map(|(_, result)| result)
            .unwrap_or_default())
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
        self.read_consistently(tenant_id, "load", |version| async move {
            self.load_version(tenant_id, &version, None).await
        })
        .await
    }

    /// As [`Self::load`], reading only the entries stamped after `after` (a filtered Query:
    /// DynamoDB reads the version's entries, returns the added ones).
    #[instrument(skip_all, fields(table = %self.table, tenant_id = %tenant_id))]
    async fn additions_since(
        &self,
        tenant_id: &TenantId,
        after: OffsetDateTime,
    ) -> Result<Option<CrmAdditions>, StoreError> {
        let after = since_stamp(after);
        Ok(self
            .read_consistently(tenant_id, "a read of its additions", |version| async move {
                self.load_version(tenant_id, &version, Some(after)).await
            })
            .await?
            .map(|(summary, index)| CrmAdditions { summary, index }))
    }
}
