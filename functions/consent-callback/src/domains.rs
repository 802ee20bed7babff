//! Which tenant a DNS domain belongs to, for `/auth/login?domain_hint=contoso.com` and
//! `login_hint=adele@contoso.com`: the [`TenantDomains`] port, its DynamoDB adapter and an
//! in-memory twin.
//!
//! connector-core's `TenantStore` only reads by tenant id, so the alias is kept as its own
//! item in the tenants table: `tenantId = "domain#{domain}"`, `aliasOf = {tenant GUID}`.
//! That key can never collide with a tenant (tenant ids are GUIDs). Every signed-in member's
//! UPN suffix is recorded (a UPN suffix is always a verified domain of the user's tenant, and
//! a domain is verified in one tenant at a time, so the last writer is right).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use connector_core::domain::TenantId;
use connector_core::ports::StoreError;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const ALIAS_PREFIX: &str = "domain#";

#[async_trait]
pub trait TenantDomains: Send + Sync {
    /// The tenant that `domain` (lower-case) was last seen in.
    async fn tenant_for_domain(&self, domain: &str) -> Result<Option<TenantId>, StoreError>;
    /// Records that `domain` (lower-case) is a verified domain of `tenant_id`.
    async fn record_domain(
        &self,
        domain: &str,
        tenant_id: &TenantId,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;
}

pub struct DynamoTenantDomains {
    client: Client,
    table: String,
}

impl DynamoTenantDomains {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

fn backend(
    operation: &'static str,
    table: &str,
    error: impl std::error::Error + Send + Sync + 'static,
) -> StoreError {
    StoreError::Backend {
        operation,
        resource: table.to_owned(),
        source: Box::new(error),
    }
}

#[async_trait]
impl TenantDomains for DynamoTenantDomains {
    async fn tenant_for_domain(&self, domain: &str) -> Result<Option<TenantId>, StoreError> {
        let key = format!("{ALIAS_PREFIX}{domain}");
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("tenantId", AttributeValue::S(key.clone()))
            .projection_expression("aliasOf")
            .send()
            .await
            .map_err(|error| backend("GetItem", &self.table, error))?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        let value = item
            .get("aliasOf")
            .and_then(|value| value.as_s().ok())
            .ok_or_else(|| StoreError::Corrupt {
                resource: self.table.clone(),
                key: key.clone(),
                source: "aliasOf missing".into(),
            })?;
        TenantId::parse(value)
            .map(Some)
            .map_err(|error| StoreError::Corrupt {
                resource: self.table.clone(),
                key,
                source: Box::new(error),
            })
    }

    async fn record_domain(
        &self,
        domain: &str,
        tenant_id: &TenantId,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let updated = now.format(&Rfc3339).unwrap_or_default();
        self.client
            .put_item()
            .table_name(&self.table)
            .item(
                "tenantId",
                AttributeValue::S(format!("{ALIAS_PREFIX}{domain}")),
            )
            .item("aliasOf", AttributeValue::S(tenant_id.to_string()))
            .item("updatedAt", AttributeValue::S(updated))
            .send()
            .await
            .map_err(|error| backend("PutItem", &self.table, error))?;
        Ok(())
    }
}

#[derive(Default)]
pub struct MemoryTenantDomains {
    domains: Mutex<HashMap<String, TenantId>>,
}

#[async_trait]
impl TenantDomains for MemoryTenantDomains {
    async fn tenant_for_domain(&self, domain: &str) -> Result<Option<TenantId>, StoreError> {
        Ok(self
            .domains
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(domain)
            .cloned())
    }

    async fn record_domain(
        &self,
        domain: &str,
        tenant_id: &TenantId,
        _now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.domains
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(domain.to_owned(), tenant_id.clone());
        Ok(())
    }
}
