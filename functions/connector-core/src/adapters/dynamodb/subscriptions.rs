//! SubscriptionsTable (docs/data-model.md): PK `pk`, SK `sk`, TTL `ttl`.
//!
//! - the user's item, `pk = user#{tenantId}#{userId}`, `sk = {kind}`: the subscription
//!   (id, resource, client-state digest, expiry, created/renewed) or the last failed
//!   creation (`failure`);
//! - the subscription's item, `pk = sub#{subscriptionId}`, `sk = sub`: the same
//!   subscription, read consistently by the webhook, and `wakeAt` (epoch ms), the debounce.
//!
//! Both expire (TTL) a day after the subscription would at Graph, so records of users who
//! stopped syncing without a disconnection do not stay.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Item, backend, batch_get, conditional, from_item, n, query_partition, s, to_item};
use crate::adapters::backoff::Backoff;
use crate::domain::{SyncKind, TenantId, UserId, UserKey};
use crate::notifications::{
    CreateFailure, StateDigest, Subscription, SubscriptionStore, UserSubscription,
};
use crate::ports::StoreError;

const PK: &str = "pk";
const SK: &str = "sk";
const ID_SORT: &str = "sub";

/// How long records outlive their subscription's expiry.
const TTL_AFTER_EXPIRY: time::Duration = time::Duration::days(1);
/// A failure record lives this long without a subscription.
const FAILURE_TTL: time::Duration = time::Duration::days(7);

pub struct DynamoSubscriptionStore {
    client: Client,
    table: String,
    backoff: Backoff,
}

impl DynamoSubscriptionStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            backoff: Backoff::default(),
        }
    }
}

fn user_pk(user: &UserKey) -> String {
    format!("user#{}#{}", user.tenant_id, user.user_id)
}

fn id_pk(id: &str) -> String {
    format!("sub#{id}")
}

fn key(pk: String, sk: &str) -> Item {
    HashMap::from([(PK.to_owned(), s(pk)), (SK.to_owned(), s(sk))])
}

/// A subscription as both items store it.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    tenant_id: TenantId,
    user_id: UserId,
    kind: SyncKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subscription_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resource: Option<String>,
    /// SHA-256 of the client state, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_state: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    expires_at: Option<OffsetDateTime>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    created_at: Option<OffsetDateTime>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    renewed_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failure: Option<StoredFailure>,
    ttl: i64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredFailure {
    reason: String,
    #[serde(with = "time::serde::rfc3339")]
    failed_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    retry_at: OffsetDateTime,
}

impl Stored {
    fn of(subscription: &Subscription) -> Self {
        Self {
            tenant_id: subscription.tenant_id.clone(),
            user_id: subscription.user_id.clone(),
            kind: subscription.kind,
            subscription_id: Some(subscription.id.clone()),
            resource: Some(subscription.resource.clone()),
            client_state: Some(subscription.client_state.to_hex()),
            expires_at: Some(subscription.expires_at),
            created_at: Some(subscription.created_at),
            renewed_at: subscription.renewed_at,
            failure: None,
            ttl: (subscription.expires_at + TTL_AFTER_EXPIRY).unix_timestamp(),
        }
    }

    fn subscription(&self) -> Option<Subscription> {
        Some(Subscription {
            tenant_id: self.tenant_id.clone(),
            user_id: self.user_id.clone(),
            kind: self.kind,
            id: self.subscription_id.clone()?,
            resource: self.resource.clone().unwrap_or_default(),
            client_state: StateDigest::from_hex(self.client_state.as_deref()?)?,
            expires_at: self.expires_at?,
            created_at: self.created_at?,
            renewed_at: self.renewed_at,
        })
    }

    fn user_subscription(&self) -> UserSubscription {
        UserSubscription {
            user: UserKey::new(self.tenant_id.clone(), self.user_id.clone()),
            kind: self.kind,
            active: self.subscription(),
            failure: self.failure.as_ref().map(|f| CreateFailure {
                reason: f.reason.clone(),
                failed_at: f.failed_at,
                retry_at: f.retry_at,
            }),
        }
    }
}

impl DynamoSubscriptionStore {
    fn item(&self, stored: &Stored, pk: String, sk: &str) -> Result<Item, StoreError> {
        let mut item = to_item(stored, &self.table, &pk)?;
        item.extend(key(pk, sk));
        Ok(item)
    }

    fn decode(&self, item: Item) -> Result<Stored, StoreError> {
        let name = item
            .get(PK)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default();
        from_item(item, &self.table, &name)
    }
}

#[async_trait]
impl SubscriptionStore for DynamoSubscriptionStore {
    async fn user_subscriptions(
        &self,
        user: &UserKey,
    ) -> Result<Vec<UserSubscription>, StoreError> {
        query_partition(
            &self.client,
            &self.table,
            (PK, &user_pk(user)),
            (SK, None),
            false,
        )
        .await?
        .into_iter()
        .map(|item| Ok(self.decode(item)?.user_subscription()))
        .collect()
    }

    async fn subscriptions_of(
        &self,
        users: &[UserKey],
        kind: SyncKind,
    ) -> Result<HashMap<UserKey, UserSubscription>, StoreError> {
        if users.is_empty() {
            return Ok(HashMap::new());
        }
        let keys = users
            .iter()
            .map(|user| key(user_pk(user), kind.as_str()))
            .collect();
        batch_get(&self.client, &self.table, keys, None, self.backoff)
            .await?
            .into_iter()
            .map(|item| {
                let found = self.decode(item)?.user_subscription();
                Ok((found.user.clone(), found))
            })
            .collect()
    }

    async fn by_id(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(id_pk(id), ID_SORT)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| backend("GetItem", &self.table, error))?;
        match output.item {
            Some(item) => Ok(self.decode(item)?.subscription()),
            None => Ok(None),
        }
    }

    async fn save(
        &self,
        subscription: &Subscription,
        replaces: Option<&str>,
    ) -> Result<(), StoreError> {
        let stored = Stored::of(subscription);
        let user = subscription.user();
        let mut writes = vec![
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(self.item(
                            &stored,
                            user_pk(&user),
                            subscription.kind.as_str(),
                        )?))
                        .build()
                        .map_err(|error| backend("TransactWriteItems", &self.table, error))?,
                )
                .build(),
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(self.item(
                            &stored,
                            id_pk(&subscription.id),
                            ID_SORT,
                        )?))
                        .build()
                        .map_err(|error| backend("TransactWriteItems", &self.table, error))?,
                )
                .build(),
        ];
        if let Some(old) = replaces.filter(|old| *old != subscription.id) {
            writes.push(
                TransactWriteItem::builder()
                    .delete(
                        Delete::builder()
                            .table_name(&self.table)
                            .set_key(Some(key(id_pk(old), ID_SORT)))
                            .build()
                            .map_err(|error| backend("TransactWriteItems", &self.table, error))?,
                    )
                    .build(),
            );
        }
        self.client
            .transact_write_items()
            .set_transact_items(Some(writes))
            .send()
            .await
            .map_err(|error| backend("TransactWriteItems", &self.table, error))?;
        Ok(())
    }

    async fn record_failure(
        &self,
        user: &UserKey,
        kind: SyncKind,
        failure: &CreateFailure,
    ) -> Result<(), StoreError> {
        let stored = Stored {
            tenant_id: user.tenant_id.clone(),
            user_id: user.user_id.clone(),
            kind,
            subscription_id: None,
            resource: None,
            client_state: None,
            expires_at: None,
            created_at: None,
            renewed_at: None,
            failure: Some(StoredFailure {
                reason: failure.reason.clone(),
                failed_at: failure.failed_at,
                retry_at: failure.retry_at,
            }),
            ttl: (failure.failed_at + FAILURE_TTL).unix_timestamp(),
        };
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.item(&stored, user_pk(user), kind.as_str())?))
            .send()
            .await
            .map_err(|error| backend("PutItem", &self.table, error))?;
        Ok(())
    }

    async fn remove(
        &self,
        user: &UserKey,
        kind: SyncKind,
        id: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut request = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user), kind.as_str())));
        if let Some(id) = id {
            // Only the user's item that still names this subscription (or none).
            request = request
                .condition_expression("attribute_not_exists(#id) OR #id = :id")
                .expression_attribute_names("#id", "subscriptionId")
                .expression_attribute_values(":id", s(id));
        }
        conditional(request.send().await, "DeleteItem", &self.table)?;
        if let Some(id) = id {
            self.client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(key(id_pk(id), ID_SORT)))
                .send()
                .await
                .map_err(|error| backend("DeleteItem", &self.table, error))?;
        }
        Ok(())
    }

    async fn claim_wake(
        &self,
        id: &str,
        now: OffsetDateTime,
        window: Duration,
    ) -> Result<bool, StoreError> {
        let now_ms = now.unix_timestamp_nanos() / 1_000_000;
        let cutoff = now_ms - window.as_millis() as i128;
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(id_pk(id), ID_SORT)))
            .update_expression("SET #wake = :now")
            .condition_expression(
                "attribute_exists(#pk) AND (attribute_not_exists(#wake) OR #wake <= :cutoff)",
            )
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#wake", "wakeAt")
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":cutoff", n(cutoff))
            .send()
            .await;
        Ok(conditional(result, "UpdateItem", &self.table)?.is_some())
    }
}
