//! The AWS side of the benchmark on moto: the client secret, the tenant, the CRM snapshot,
//! connected users (refresh token in Secrets Manager, connection in DynamoDB) through the
//! connector's own adapters, and the 100,000 connections of the fan-out benchmark written
//! with BatchWriteItem in the adapter's item shape.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use connector_core::adapters::dynamodb::{
    DynamoConnectionStore, DynamoCrmIndex, DynamoTenantStore,
};
use connector_core::adapters::secrets::SecretsManagerVault;
use connector_core::domain::{
    Connection, ConsentMode, CrmSnapshot, FeatureBundle, ScopeSet, Tenant, TenantId, UserId,
    UserKey,
};
use connector_core::ports::{ConnectionStore, CrmIndex, TenantStore, TokenVault};
use connector_core::secret::{RefreshToken, TokenRecord};
use futures::{StreamExt, TryStreamExt, stream};
use local_stack::TestStack;
use time::OffsetDateTime;

/// The stack's clients and table names.
pub struct Store {
    pub stack: TestStack,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub sqs: aws_sdk_sqs::Client,
}

impl Store {
    pub fn new(stack: TestStack) -> Store {
        Store {
            dynamo: aws_sdk_dynamodb::Client::new(&stack.sdk),
            secrets: aws_sdk_secretsmanager::Client::new(&stack.sdk),
            sqs: aws_sdk_sqs::Client::new(&stack.sdk),
            stack,
        }
    }

    fn table(&self, variable: &str) -> String {
        self.stack.var(variable).to_owned()
    }

    pub async fn put_client_secret(&self, value: &str) -> Result<()> {
        self.secrets
            .put_secret_value()
            .secret_id(self.stack.var("CLIENT_SECRET_ID"))
            .secret_string(value)
            .send()
            .await
            .context("storing the client secret")?;
        Ok(())
    }

    /// A tenant that pre-authorized the mail bundle, with its verified domains.
    pub async fn put_tenant(&self, tenant_id: &TenantId, domains: &[&str]) -> Result<()> {
        let now = OffsetDateTime::now_utc();
        let mut tenant = Tenant::new(tenant_id.clone(), ConsentMode::Preauthorized, now);
        tenant.record_admin_consent(FeatureBundle::Mail, &ScopeSet::new(), None, now);
        tenant.confirm(now);
        tenant.verified_domains = domains.iter().map(|d| (*d).to_owned()).collect();
        DynamoTenantStore::new(self.dynamo.clone(), self.table("TENANTS_TABLE"))
            .put_tenant(&tenant)
            .await?;
        Ok(())
    }

    pub async fn import_crm(&self, snapshot: &CrmSnapshot) -> Result<()> {
        DynamoCrmIndex::new(self.dynamo.clone(), self.table("CRM_TABLE"))
            .replace_snapshot(snapshot)
            .await?;
        Ok(())
    }

    /// Stores a signed-in user's refresh token and active connection, as sign-in does.
    pub async fn connect(
        &self,
        tenant: &TenantId,
        user: &UserId,
        upn: &str,
        refresh_token: String,
        scope: &str,
    ) -> Result<UserKey> {
        let key = UserKey::new(tenant.clone(), user.clone());
        let now = OffsetDateTime::now_utc();
        // The bench signs in through the sim, which answers as Entra does: the refresh token
        // we hold proves offline access, never echoed in `scope`.
        let scopes = ScopeSet::granted_by_token_response(Some(scope), &ScopeSet::new(), true);
        SecretsManagerVault::new(self.secrets.clone())
            .put_token(
                &key,
                &TokenRecord {
                    refresh_token: RefreshToken::new(refresh_token),
                    scopes: scopes.clone(),
                    updated_at: now,
                },
            )
            .await?;
        let mut connection = Connection::new_active(tenant.clone(), user.clone(), upn, scopes, now);
        connection.mail = Some(upn.to_owned());
        DynamoConnectionStore::new(self.dynamo.clone(), self.table("CONNECTIONS_TABLE"))
            .upsert_connection(&connection)
            .await?;
        Ok(key)
    }

    /// `tenants` pre-authorized tenants with `per_tenant` active mail connections each,
    /// written 25 items per BatchWriteItem, `in_flight` calls at once.
    pub async fn seed_connections(
        &self,
        tenants: usize,
        per_tenant: usize,
        in_flight: usize,
    ) -> Result<u64> {
        let tenant_ids: Vec<TenantId> = (0..tenants)
            .map(|_| TenantId::parse(&uuid::Uuid::new_v4().to_string()).expect("a GUID"))
            .collect();
        stream::iter(tenant_ids.iter())
            .map(|tenant| async move {
                let domain = format!("t{}.example", &tenant.as_str()[..8]);
                self.put_tenant(tenant, &[domain.as_str()]).await
            })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
        let table = self.table("CONNECTIONS_TABLE");
        let scopes = ScopeSet::parse(crate::world::MAIL_SCOPES);
        let now = OffsetDateTime::now_utc();
        let mut items = Vec::with_capacity(tenants * per_tenant);
        for tenant in &tenant_ids {
            for n in 0..per_tenant {
                let user = UserId::parse(&uuid::Uuid::new_v4().to_string()).expect("a GUID");
                let upn = format!("user{n}@t{}.example", &tenant.as_str()[..8]);
                let mut connection =
                    Connection::new_active(tenant.clone(), user, upn.clone(), scopes.clone(), now);
                connection.mail = Some(upn);
                let mut item: HashMap<String, AttributeValue> = serde_dynamo::to_item(&connection)
                    .context("a connection as a DynamoDB item")?;
                item.insert(
                    "connectionKey".to_owned(),
                    AttributeValue::S(connection.key().to_string()),
                );
                item.insert(
                    "statusShard".to_owned(),
                    AttributeValue::S(connector_core::adapters::dynamodb::status_shard_key(
                        connection.status,
                        &connection.key(),
                    )),
                );
                items.push(item);
            }
        }
        let written = items.len() as u64;
        let chunks: Vec<Vec<HashMap<String, AttributeValue>>> =
            items.chunks(25).map(<[_]>::to_vec).collect();
        stream::iter(chunks)
            .map(|chunk| self.batch_put(&table, chunk))
            .buffer_unordered(in_flight.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        Ok(written)
    }

    async fn batch_put(
        &self,
        table: &str,
        items: Vec<HashMap<String, AttributeValue>>,
    ) -> Result<()> {
        let mut pending: Vec<WriteRequest> = items
            .into_iter()
            .map(|item| {
                WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(item))
                            .build()
                            .expect("an item is set"),
                    )
                    .build()
            })
            .collect();
        for attempt in 0..8 {
            let output = self
                .dynamo
                .batch_write_item()
                .request_items(table, pending)
                .send()
                .await
                .context("BatchWriteItem")?;
            pending = output
                .unprocessed_items
                .and_then(|mut left| left.remove(table))
                .unwrap_or_default();
            if pending.is_empty() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
        }
        bail!("BatchWriteItem kept leaving items unprocessed")
    }

    /// The ids of a user's stored mail activities (`mail#…`), read with a consistent Query
    /// of the activities table (the key only).
    pub async fn mail_activity_ids(&self, owner: &UserKey) -> Result<BTreeSet<String>> {
        let table = self.table("ACTIVITIES_TABLE");
        let mut ids = BTreeSet::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let output = self
                .dynamo
                .query()
                .table_name(&table)
                .consistent_read(true)
                .key_condition_expression("#owner = :owner AND begins_with(#id, :prefix)")
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_names("#id", "activityId")
                .expression_attribute_values(":owner", AttributeValue::S(owner.to_string()))
                .expression_attribute_values(":prefix", AttributeValue::S("mail#".into()))
                .projection_expression("#id")
                .set_exclusive_start_key(start)
                .send()
                .await
                .context("Query of the activities table")?;
            for item in output.items.unwrap_or_default() {
                if let Some(AttributeValue::S(id)) = item.get("activityId") {
                    ids.insert(id.clone());
                }
            }
            start = output.last_evaluated_key.filter(|key| !key.is_empty());
            if start.is_none() {
                return Ok(ids);
            }
        }
    }

    /// The next message of a queue, if any (the worker's continuation job).
    pub async fn receive_one(&self, queue_url: &str) -> Result<Option<String>> {
        let output = self
            .sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(1)
            .wait_time_seconds(1)
            .send()
            .await
            .context("ReceiveMessage")?;
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .next()
            .and_then(|m| m.body))
    }
}
