//! The disconnect fence (docs/fencing.md): a worker's writes of a user's sync state (taking
//! the mailbox lease, the sync meta, folder cursors) go through TransactWriteItems with a
//! ConditionCheck that the user's connection item still exists with status `active`
//! (a ConditionCheck may name another table than the put it guards:
//! https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TransactWriteItems.html,
//! read 2026-12-05). `connectorctl disconnect` marks the connection disconnected (and
//! `offboard-tenant` deletes it) before it deletes anything, so a running worker's next
//! checkpoint fails with [`StoreError::Fenced`] and the run ends. Activity items are not
//! written in transactions: a worker writes them under the mailbox lease, which disconnect
//! waits for before it deletes, after one strongly consistent read of the connection
//! ([`Fence::ensure_active`]) per write (docs/fencing.md says why that is enough, and
//! cheaper).

use aws_sdk_dynamodb::types::{ConditionCheck, Put, TransactWriteItem};

use super::*;

/// Tries of a transaction cancelled by a concurrent one on the same items.
const CONFLICT_ATTEMPTS: u32 = 6;

/// The connections table whose `status` fences a user's writes.
#[derive(Clone, Debug)]
pub struct Fence {
    connections_table: String,
}

impl Fence {
    pub fn new(connections_table: impl Into<String>) -> Self {
        Self {
            connections_table: connections_table.into(),
        }
    }

    fn check(&self, user: &UserKey) -> Result<TransactWriteItem, StoreError> {
        let check = ConditionCheck::builder()
            .table_name(&self.connections_table)
            .set_key(Some(DynamoConnectionStore::key(user)))
            .condition_expression("#status = :active")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":active", s(ConnectionStatus::Active.as_str()))
            .build()
            .map_err(|error| backend("ConditionCheck", &self.connections_table, error))?;
        Ok(TransactWriteItem::builder().condition_check(check).build())
    }

    /// `Fenced` unless `user`'s connection exists with status `active` now (a strongly
    /// consistent GetItem of its status alone). Not atomic with the write that follows: the
    /// mailbox lease orders those against a disconnection.
    pub(super) async fn ensure_active(
        &self,
        client: &Client,
        user: &UserKey,
    ) -> Result<(), StoreError> {
        let output = client
            .get_item()
            .table_name(&self.connections_table)
            .set_key(Some(DynamoConnectionStore::key(user)))
            .consistent_read(true)
            .projection_expression("#status")
            .expression_attribute_names("#status", "status")
            .send()
            .await
            .map_err(|error| backend("GetItem", &self.connections_table, error))?;
        let active = output
            .item
            .as_ref()
            .and_then(|item| string_attr(item, "status"))
            == Some(ConnectionStatus::Active.as_str());
        if active {
            Ok(())
        } else {
            Err(StoreError::Fenced {
                what: format!("writes of {user}"),
            })
        }
    }

    /// One conditional put of `item` (its own condition, if any) behind the check.
    pub(super) async fn put_one(
        &self,
        client: &Client,
        user: &UserKey,
        table: &str,
        put: Put,
    ) -> Result<(), StoreError> {
        let actions = vec![
            self.check(user)?,
            TransactWriteItem::builder().put(put).build(),
        ];
        self.transact(client, user, actions, table).await
    }

    async fn transact(
        &self,
        client: &Client,
        user: &UserKey,
        actions: Vec<TransactWriteItem>,
        table: &str,
    ) -> Result<(), StoreError> {
        // Every fenced write of a user checks the same connection item, and concurrent
        // transactions on one item (a ConditionCheck included) cancel each other with
        // `TransactionConflict` ("Transaction conflict handling in DynamoDB", DynamoDB
        // Developer Guide, read 2026-12-05): the mail folders a run walks at once, and
        // mail-sync beside calendar-sync, do exactly that. A conflict is retried with a
        // short jittered backoff before it counts as a failure.
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = client
                .transact_write_items()
                .set_transact_items(Some(actions.clone()))
                .send()
                .await;
            let conflict = result.as_ref().err().and_then(|e| e.as_service_error()).is_some_and(|e| match e {
                aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => c
                    .cancellation_reasons()
                    .iter()
                    .any(|r| r.code() == Some("TransactionConflict")),
                aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionInProgressException(_) => true,
                _ => false,
            });
            // A 5xx the SDK's own retries did not get past (seen from moto when mail-sync
            // and calendar-sync write one user's items at once, shared-mailbox test): the
            // same backoff; DynamoDB's own advice for InternalServerError is to retry.
            let server_error = result
                .as_ref()
                .err()
                .and_then(|e| e.raw_response())
                .is_some_and(|r| r.status().is_server_error());
            if (conflict || server_error) && attempt < CONFLICT_ATTEMPTS {
                let base = 20u64 << attempt.min(6);
                let jitter = u64::from(uuid::Uuid::new_v4().as_u128() as u16) % base;
                tokio::time::sleep(Duration::from_millis(base + jitter)).await;
                continue;
            }
            return Self::outcome(result, user, table);
        }
    }

    fn outcome(
        result: Result<
            aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput,
            aws_sdk_dynamodb::error::SdkError<
                aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
            >,
        >,
        user: &UserKey,
        table: &str,
    ) -> Result<(), StoreError> {
        match result {
            Ok(_) => Ok(()),
            Err(error) => {
                // The reasons come in action order: the check is the first.
                let reasons: Vec<Option<String>> = error
                    .as_service_error()
                    .and_then(|e| match e {
                        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => Some(c.cancellation_reasons().iter().map(|r| r.code().map(str::to_owned)).collect()),
                        _ => None,
                    })
                    .unwrap_or_default();
                match reasons.first().and_then(Option::as_deref) {
                    Some("ConditionalCheckFailed") => Err(StoreError::Fenced {
                        what: format!("writes of {user}"),
                    }),
                    _ if reasons
                        .iter()
                        .skip(1)
                        .any(|r| r.as_deref() == Some("ConditionalCheckFailed")) =>
                    {
                        Err(StoreError::Conflict {
                            what: format!("an item of {user} in {table}"),
                        })
                    }
                    _ => Err(backend("TransactWriteItems", table, error)),
                }
            }
        }
    }
}
