//! Tenants: one item per tenant.

use super::*;

pub struct DynamoTenantStore {
    client: Client,
    table: String,
}

impl DynamoTenantStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

#[async_trait]
impl TenantStore for DynamoTenantStore {
    async fn get_tenant(&self, tenant_id: &TenantId) -> Result<Option<Tenant>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("tenantId", s(tenant_id.as_str()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| backend("GetItem", &self.table, error))?;
        output
            .item
            .map(|item| from_item(item, &self.table, tenant_id.as_str()))
            .transpose()
    }

    async fn put_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        let item = to_item(tenant, &self.table, tenant.tenant_id.as_str())?;
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|error| backend("PutItem", &self.table, error))?;
        Ok(())
    }

    async fn delete_tenant(&self, tenant_id: &TenantId) -> Result<bool, StoreError> {
        let output = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("tenantId", s(tenant_id.as_str()))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|error| backend("DeleteItem", &self.table, error))?;
        Ok(output.attributes.is_some_and(|old| !old.is_empty()))
    }

    async fn set_switches(
        &self,
        tenant_id: &TenantId,
        switches: TenantSwitches,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let value = to_value(&switches, &self.table, tenant_id.as_str())?;
        // One attribute, so a consent recorded at the same time is not overwritten.
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("tenantId", s(tenant_id.as_str()))
            .update_expression("SET #switches = :switches, #updated = :now")
            .condition_expression("attribute_exists(tenantId)")
            .expression_attribute_names("#switches", "switches")
            .expression_attribute_names("#updated", "updatedAt")
            .expression_attribute_values(":switches", value)
            .expression_attribute_values(":now", s(to_rfc3339(now)))
            .send()
            .await;
        match conditional(result, "UpdateItem", &self.table)? {
            Some(_) => Ok(()),
            None => Err(StoreError::NotFound {
                what: format!("tenant {tenant_id}"),
            }),
        }
    }
}
