//! DynamoDB adapters of the Teams ports: idempotency records in IdempotencyTable and share
//! targets in the SyncStateTable (layouts in docs/data-model.md and the `teams` module).
//!
//! Idempotency item (PK `id`), Powertools' attributes under this repository's names:
//! `status` (`INPROGRESS`/`COMPLETED`), `expiresAt` (epoch seconds, the table's TTL;
//! Powertools' `expiration`), `inProgressExpiration` (epoch milliseconds; Powertools'
//! `in_progress_expiration`), `payloadHash` (Powertools' `validation`), `result`
//! (Powertools' `data`: message id, web URL, chat id, time) and `progress` (ours).

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, PutRequest, ReturnValue, ReturnValuesOnConditionCheckFailure,
    WriteRequest,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tracing::{debug, instrument};

use super::backoff::Backoff;
use crate::domain::UserKey;
use crate::ports::StoreError;
use crate::teams::idempotency::{decide, interrupted};
use crate::teams::targets::targets_partition;
use crate::teams::{
    Claim, ClaimRequest, IdempotencyRecord, IdempotencyStatus, IdempotencyStore, PostProgress,
    PostResult, RecordState, ShareTargetStore, ShareTargets, TeamTarget,
};

type Item = HashMap<String, AttributeValue>;

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn backend(
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

fn unix_millis(at: OffsetDateTime) -> i128 {
    at.unix_timestamp_nanos() / 1_000_000
}

/// Whole seconds, rounded up: a TTL never ends before the time it stands for.
fn unix_seconds_ceil(at: OffsetDateTime) -> i64 {
    at.unix_timestamp() + i64::from(at.nanosecond() > 0)
}

fn number(item: &Item, name: &str) -> Option<i128> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

fn string<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)?.as_s().ok().map(String::as_str)
}

// ---------------------------------------------------------------------------------------
// Idempotency

pub struct DynamoIdempotencyStore {
    client: Client,
    table: String,
}

const STATUS: &str = "status";
const EXPIRES_AT: &str = "expiresAt";
const IN_PROGRESS_EXPIRATION: &str = "inProgressExpiration";
const PAYLOAD_HASH: &str = "payloadHash";
const RESULT: &str = "result";
const PROGRESS: &str = "progress";

impl DynamoIdempotencyStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn key(id: &str) -> Item {
        HashMap::from([("id".to_owned(), s(id))])
    }

    fn corrupt(&self, id: &str, what: &str) -> StoreError {
        StoreError::Corrupt {
            resource: self.table.clone(),
            key: id.to_owned(),
            source: format!("idempotency item without a valid {what}").into(),
        }
    }

    fn decode(&self, item: &Item) -> Result<IdempotencyRecord, StoreError> {
        let id = string(item, "id").ok_or_else(|| self.corrupt("?", "id"))?;
        let status = string(item, STATUS)
            .and_then(IdempotencyStatus::parse)
            .ok_or_else(|| self.corrupt(id, STATUS))?;
        let expires_at = number(item, EXPIRES_AT)
            .and_then(|seconds| OffsetDateTime::from_unix_timestamp(seconds as i64).ok())
            .ok_or_else(|| self.corrupt(id, EXPIRES_AT))?;
        let payload_hash = string(item, PAYLOAD_HASH)
            .ok_or_else(|| self.corrupt(id, PAYLOAD_HASH))?
            .to_owned();
        let state = match status {
            IdempotencyStatus::InProgress => RecordState::InProgress {
                until: number(item, IN_PROGRESS_EXPIRATION)
                    .and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).ok())
                    .ok_or_else(|| self.corrupt(id, IN_PROGRESS_EXPIRATION))?,
                progress: match item.get(PROGRESS) {
                    Some(value) => serde_dynamo::from_attribute_value(value.clone())
                        .map_err(|_| self.corrupt(id, PROGRESS))?,
                    None => PostProgress::default(),
                },
            },
            IdempotencyStatus::Completed => RecordState::Completed(
                item.get(RESULT)
                    .cloned()
                    .and_then(|value| serde_dynamo::from_attribute_value(value).ok())
                    .ok_or_else(|| self.corrupt(id, RESULT))?,
            ),
        };
        Ok(IdempotencyRecord {
            id: id.to_owned(),
            payload_hash,
            expires_at,
            state,
        })
    }

    fn encode<T: Serialize>(&self, id: &str, value: &T) -> Result<AttributeValue, StoreError> {
        serde_dynamo::to_attribute_value(value).map_err(|error| StoreError::Corrupt {
            resource: self.table.clone(),
            key: id.to_owned(),
            source: Box::new(error),
        })
    }

    async fn read(&self, id: &str) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| backend("GetItem", &self.table, error))?;
        Ok(output.item)
    }
}

fn is_condition_failure<E, R>(error: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    error
        .as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

#[async_trait]
impl IdempotencyStore for DynamoIdempotencyStore {
    /// One conditional UpdateItem (an update, not a put, so a crashed attempt's `progress`
    /// survives the takeover). DynamoDB serialises conditional writes on an item, so of
    /// concurrent claimers exactly one succeeds. The refusal is explained from the item
    /// returned with the failed condition (or, where the endpoint does not return it, a
    /// consistent read), decided by the same rules as the in-memory store.
    #[instrument(skip_all, fields(idempotency_id = %request.id))]
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(request.id)))
            .update_expression(
                "SET #status = :inprogress, #expires = :expires, #ipe = :ipe, #hash = :hash REMOVE #result",
            )
            .condition_expression(
                "attribute_not_exists(id) OR #expires < :now \
                 OR (#status = :inprogress AND #ipe < :now_ms)",
            )
            .expression_attribute_names("#status", STATUS)
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_names("#ipe", IN_PROGRESS_EXPIRATION)
            .expression_attribute_names("#hash", PAYLOAD_HASH)
            .expression_attribute_names("#result", RESULT)
            .expression_attribute_values(":inprogress", s(IdempotencyStatus::InProgress.as_str()))
            .expression_attribute_values(":expires", n(unix_seconds_ceil(request.expires_at)))
            .expression_attribute_values(":ipe", n(unix_millis(request.in_progress_until)))
            .expression_attribute_values(":hash", s(request.payload_hash))
            .expression_attribute_values(":now", n(request.now.unix_timestamp()))
            .expression_attribute_values(":now_ms", n(unix_millis(request.now)))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => {
                let old = output.attributes.filter(|item| !item.is_empty());
                let had_progress = old.as_ref().is_some_and(|item| item.contains_key(PROGRESS));
                let previous = old.map(|item| self.decode(&item)).transpose()?;
                // The condition let us in, so the old item was absent, expired or abandoned:
                // `decide` agrees and says which progress carries over.
                let carried = decide(previous.as_ref(), request).unwrap_or_default();
                let stale = had_progress && carried.is_empty();
                if stale {
                    // The progress of an expired record, or of another payload, is not ours.
                    self.client
                        .update_item()
                        .table_name(&self.table)
                        .set_key(Some(Self::key(request.id)))
                        .update_expression("REMOVE #progress")
                        .condition_expression("#hash = :hash AND #ipe = :ipe")
                        .expression_attribute_names("#progress", PROGRESS)
                        .expression_attribute_names("#hash", PAYLOAD_HASH)
                        .expression_attribute_names("#ipe", IN_PROGRESS_EXPIRATION)
                        .expression_attribute_values(":hash", s(request.payload_hash))
                        .expression_attribute_values(
                            ":ipe",
                            n(unix_millis(request.in_progress_until)),
                        )
                        .send()
                        .await
                        .map_err(|error| backend("UpdateItem", &self.table, error))?;
                }
                Ok(Claim::Acquired {
                    progress: carried,
                    interrupted: interrupted(previous.as_ref(), request.now),
                })
            }
            Err(error) if is_condition_failure(&error) => {
                let returned = error
                    .as_service_error()
                    .and_then(|e| match e {
                        aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(
                            failed,
                        ) => failed.item.clone(),
                        _ => None,
                    })
                    .filter(|item| !item.is_empty());
                let item = match returned {
                    Some(item) => Some(item),
                    None => self.read(request.id).await?,
                };
                let existing = item.map(|item| self.decode(&item)).transpose()?;
                match decide(existing.as_ref(), request) {
                    Err(refusal) => Ok(refusal),
                    // It changed between the write and the read: let the caller retry later.
                    Ok(_) => Err(StoreError::Conflict {
                        what: format!("idempotency record {}", request.id),
                    }),
                }
            }
            Err(error) => Err(backend("UpdateItem", &self.table, error)),
        }
    }

    async fn save_progress(
        &self,
        id: &str,
        payload_hash: &str,
        progress: &PostProgress,
    ) -> Result<(), StoreError> {
        let value = self.encode(id, progress)?;
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(id)))
            .update_expression("SET #progress = :progress")
            .condition_expression("#status = :inprogress AND #hash = :hash")
            .expression_attribute_names("#progress", PROGRESS)
            .expression_attribute_names("#status", STATUS)
            .expression_attribute_names("#hash", PAYLOAD_HASH)
            .expression_attribute_values(":progress", value)
            .expression_attribute_values(":inprogress", s(IdempotencyStatus::InProgress.as_str()))
            .expression_attribute_values(":hash", s(payload_hash))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if is_condition_failure(&error) => Err(StoreError::Conflict {
                what: format!("idempotency record {id}"),
            }),
            Err(error) => Err(backend("UpdateItem", &self.table, error)),
        }
    }

    /// Unconditional on the status: whatever happened to the record meanwhile, a message
    /// now exists and must be recorded. A missing item (swept) is recreated.
    async fn complete(
        &self,
        id: &str,
        payload_hash: &str,
        result: &PostResult,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let value = self.encode(id, result)?;
        let outcome = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(id)))
            .update_expression(
                "SET #status = :completed, #result = :result, #expires = :expires, #hash = :hash \
                 REMOVE #ipe",
            )
            .condition_expression("attribute_not_exists(id) OR #hash = :hash")
            .expression_attribute_names("#status", STATUS)
            .expression_attribute_names("#result", RESULT)
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_names("#hash", PAYLOAD_HASH)
            .expression_attribute_names("#ipe", IN_PROGRESS_EXPIRATION)
            .expression_attribute_values(":completed", s(IdempotencyStatus::Completed.as_str()))
            .expression_attribute_values(":result", value)
            .expression_attribute_values(":expires", n(unix_seconds_ceil(expires_at)))
            .expression_attribute_values(":hash", s(payload_hash))
            .send()
            .await;
        match outcome {
            Ok(_) => Ok(()),
            Err(error) if is_condition_failure(&error) => Err(StoreError::Conflict {
                what: format!("idempotency record {id}"),
            }),
            Err(error) => Err(backend("UpdateItem", &self.table, error)),
        }
    }

    async fn release(&self, id: &str, payload_hash: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(id)))
            .update_expression("SET #ipe = :zero")
            .condition_expression("#status = :inprogress AND #hash = :hash")
            .expression_attribute_names("#ipe", IN_PROGRESS_EXPIRATION)
            .expression_attribute_names("#status", STATUS)
            .expression_attribute_names("#hash", PAYLOAD_HASH)
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":inprogress", s(IdempotencyStatus::InProgress.as_str()))
            .expression_attribute_values(":hash", s(payload_hash))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Nothing of ours to release (completed by a twin, or expired and gone).
            Err(error) if is_condition_failure(&error) => {
                debug!(idempotency_id = %id, "nothing to release");
                Ok(())
            }
            Err(error) => Err(backend("UpdateItem", &self.table, error)),
        }
    }

    async fn get_record(&self, id: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.read(id)
            .await?
            .map(|item| self.decode(&item))
            .transpose()
    }
}

// ---------------------------------------------------------------------------------------
// Share targets

pub struct DynamoShareTargetStore {
    client: Client,
    table: String,
    backoff: Backoff,
}

const TARGETS_ITEM: &str = "targets";
const TEAM_PREFIX: &str = "team#";
/// DynamoDB's limit of write requests in one BatchWriteItem.
const BATCH_WRITE_LIMIT: usize = 25;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TargetsSummary {
    tenant_id: crate::domain::TenantId,
    user_id: crate::domain::UserId,
    #[serde(with = "time::serde::rfc3339")]
    refreshed_at: OffsetDateTime,
    team_count: usize,
    channel_count: usize,
}

impl DynamoShareTargetStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            backoff: Backoff::default(),
        }
    }

    fn key(user: &UserKey, item: &str) -> Item {
        HashMap::from([
            ("syncKey".to_owned(), s(targets_partition(user))),
            ("item".to_owned(), s(item)),
        ])
    }

    fn to_item(
        &self,
        user: &UserKey,
        item: &str,
        value: &impl Serialize,
    ) -> Result<Item, StoreError> {
        let mut attributes: Item =
            serde_dynamo::to_item(value).map_err(|error| StoreError::Corrupt {
                resource: self.table.clone(),
                key: format!("{}/{item}", targets_partition(user)),
                source: Box::new(error),
            })?;
        attributes.extend(Self::key(user, item));
        Ok(attributes)
    }

    /// Every item of the user's partition.
    async fn partition(&self, user: &UserKey) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("syncKey = :pk")
                .expression_attribute_values(":pk", s(targets_partition(user)))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|error| backend("Query", &self.table, error))?;
            items.extend(output.items.unwrap_or_default());
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }

    /// Writes (puts and deletes) in chunks of 25, retrying unprocessed items with backoff.
    async fn write(&self, requests: Vec<WriteRequest>) -> Result<(), StoreError> {
        for chunk in requests.chunks(BATCH_WRITE_LIMIT) {
            let mut pending = chunk.to_vec();
            let mut attempt = 0;
            while !pending.is_empty() {
                attempt += 1;
                if attempt > self.backoff.attempts {
                    return Err(StoreError::Unprocessed {
                        operation: "BatchWriteItem",
                        resource: self.table.clone(),
                        remaining: pending.len(),
                        attempts: self.backoff.attempts,
                    });
                }
                if attempt > 1 {
                    self.backoff.sleep(attempt - 1).await;
                }
                let output = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(|error| backend("BatchWriteItem", &self.table, error))?;
                pending = output
                    .unprocessed_items
                    .and_then(|mut unprocessed| unprocessed.remove(&self.table))
                    .unwrap_or_default();
            }
        }
        Ok(())
    }

    fn put(&self, item: Item) -> Result<WriteRequest, StoreError> {
        let put = PutRequest::builder()
            .set_item(Some(item))
            .build()
            .map_err(|error| backend("BatchWriteItem", &self.table, error))?;
        Ok(WriteRequest::builder().put_request(put).build())
    }

    fn delete(&self, key: Item) -> Result<WriteRequest, StoreError> {
        let delete = DeleteRequest::builder()
            .set_key(Some(key))
            .build()
            .map_err(|error| backend("BatchWriteItem", &self.table, error))?;
        Ok(WriteRequest::builder().delete_request(delete).build())
    }
}

#[async_trait]
impl ShareTargetStore for DynamoShareTargetStore {
    /// Team items first, then the removal of teams the user left, then the summary item:
    /// a reader during a refresh may briefly see a team the user has just left, never a
    /// partition without its summary once one was written.
    #[instrument(skip_all, fields(tenant_id = %targets.tenant_id, user_id = %targets.user_id, teams = targets.teams.len()))]
    async fn replace_targets(&self, targets: &ShareTargets) -> Result<(), StoreError> {
        let user = targets.user();
        let mut targets = targets.clone();
        targets.normalise();
        let keep: HashSet<String> = targets
            .teams
            .iter()
            .map(|team| format!("{TEAM_PREFIX}{}", team.id))
            .collect();
        let mut writes = Vec::with_capacity(targets.teams.len());
        for team in &targets.teams {
            writes.push(self.put(self.to_item(
                &user,
                &format!("{TEAM_PREFIX}{}", team.id),
                team,
            )?)?);
        }
        self.write(writes).await?;
        let stale = self
            .partition(&user)
            .await?
            .into_iter()
            .filter_map(|item| string(&item, "item").map(str::to_owned))
            .filter(|item| item.starts_with(TEAM_PREFIX) && !keep.contains(item))
            .map(|item| self.delete(Self::key(&user, &item)))
            .collect::<Result<Vec<_>, _>>()?;
        self.write(stale).await?;
        let summary = TargetsSummary {
            tenant_id: targets.tenant_id.clone(),
            user_id: targets.user_id.clone(),
            refreshed_at: targets.refreshed_at,
            team_count: targets.teams.len(),
            channel_count: targets.channel_count(),
        };
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.to_item(&user, TARGETS_ITEM, &summary)?))
            .send()
            .await
            .map_err(|error| backend("PutItem", &self.table, error))?;
        Ok(())
    }

    async fn get_targets(&self, user: &UserKey) -> Result<Option<ShareTargets>, StoreError> {
        let items = self.partition(user).await?;
        let mut summary: Option<TargetsSummary> = None;
        let mut teams = Vec::new();
        for item in items {
            let name = string(&item, "item").unwrap_or_default().to_owned();
            let corrupt = |error: serde_dynamo::Error| StoreError::Corrupt {
                resource: self.table.clone(),
                key: format!("{}/{name}", targets_partition(user)),
                source: Box::new(error),
            };
            if name == TARGETS_ITEM {
                summary = Some(serde_dynamo::from_item(item).map_err(corrupt)?);
            } else if name.starts_with(TEAM_PREFIX) {
                teams.push(serde_dynamo::from_item::<_, TeamTarget>(item).map_err(corrupt)?);
            }
        }
        Ok(summary.map(|summary| {
            let mut targets = ShareTargets {
                tenant_id: summary.tenant_id,
                user_id: summary.user_id,
                refreshed_at: summary.refreshed_at,
                teams,
            };
            targets.normalise();
            targets
        }))
    }

    async fn delete_targets(&self, user: &UserKey) -> Result<(), StoreError> {
        let deletes = self
            .partition(user)
            .await?
            .into_iter()
            .filter_map(|item| string(&item, "item").map(str::to_owned))
            .map(|item| self.delete(Self::key(user, &item)))
            .collect::<Result<Vec<_>, _>>()?;
        self.write(deletes).await
    }
}
