//! DynamoDB adapter of the mailbox slot ledger ([`crate::budget`]): one item per mailbox in
//! the SyncStateTable (layout in docs/data-model.md), written by compare-and-set.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;

use super::dynamodb::{Item, backend, conditional, n, s};
use crate::ports::StoreError;

/// The slot ledger of [`crate::budget`] in the SyncStateTable: one item per mailbox,
/// `syncKey = {tenantId}#{userId}#mailbox`, `item = slots`, with `version` (the
/// compare-and-set counter), `holders` (holder id → `share`, `wants`, `untilMs`,
/// `sinceMs`) and `expiresAt` (the table's TTL: an hour after the last record lapses, so
/// an abandoned ledger is swept).
pub struct DynamoSlotLedger {
    client: Client,
    table: String,
}

const SLOTS_ITEM: &str = "slots";

impl DynamoSlotLedger {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn key(mailbox: &str) -> Item {
        HashMap::from([
            ("syncKey".to_owned(), s(format!("{mailbox}#mailbox"))),
            ("item".to_owned(), s(SLOTS_ITEM)),
        ])
    }
}

#[async_trait]
impl crate::ports::SlotLedger for DynamoSlotLedger {
    async fn read_slots(&self, mailbox: &str) -> Result<crate::budget::LedgerRead, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(mailbox)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| backend("GetItem", &self.table, error))?;
        let Some(mut item) = output.item else {
            return Ok(crate::budget::LedgerRead::default());
        };
        let corrupt = |what: &str| StoreError::Corrupt {
            resource: self.table.clone(),
            key: format!("{mailbox}#mailbox/{SLOTS_ITEM}"),
            source: format!("slot ledger without a valid {what}").into(),
        };
        let version: u64 = item
            .get("version")
            .and_then(|value| value.as_n().ok())
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| corrupt("version"))?;
        let holders = item.remove("holders").ok_or_else(|| corrupt("holders"))?;
        let holders =
            serde_dynamo::from_attribute_value(holders).map_err(|error| StoreError::Corrupt {
                resource: self.table.clone(),
                key: format!("{mailbox}#mailbox/{SLOTS_ITEM}"),
                source: Box::new(error),
            })?;
        Ok(crate::budget::LedgerRead {
            shares: crate::budget::MailboxShares { holders },
            version,
        })
    }

    /// A conditional put naming the version read (`attribute_not_exists` for a new
    /// ledger), or a conditional delete when no holder is left. DynamoDB serialises
    /// conditional writes on an item: of two writers that read one version, one wins.
    async fn write_slots(
        &self,
        mailbox: &str,
        shares: &crate::budget::MailboxShares,
        version: u64,
    ) -> Result<bool, StoreError> {
        let result = if shares.holders.is_empty() {
            if version == 0 {
                return Ok(true);
            }
            let result = self
                .client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(Self::key(mailbox)))
                .condition_expression("version = :version")
                .expression_attribute_values(":version", n(version))
                .send()
                .await;
            return conditional(result, "DeleteItem", &self.table).map(|applied| applied.is_some());
        } else {
            let holders = serde_dynamo::to_attribute_value(&shares.holders).map_err(|error| {
                StoreError::Corrupt {
                    resource: self.table.clone(),
                    key: format!("{mailbox}#mailbox/{SLOTS_ITEM}"),
                    source: Box::new(error),
                }
            })?;
            let last_ms = shares
                .holders
                .values()
                .map(|holder| holder.until_ms)
                .max()
                .unwrap_or(0);
            let mut item = Self::key(mailbox);
            item.insert("version".to_owned(), n(version + 1));
            item.insert("holders".to_owned(), holders);
            item.insert("expiresAt".to_owned(), n(last_ms / 1000 + 3600));
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item));
            let put = if version == 0 {
                put.condition_expression("attribute_not_exists(syncKey)")
            } else {
                put.condition_expression("version = :version")
                    .expression_attribute_values(":version", n(version))
            };
            put.send().await
        };
        conditional(result, "PutItem", &self.table).map(|applied| applied.is_some())
    }
}
