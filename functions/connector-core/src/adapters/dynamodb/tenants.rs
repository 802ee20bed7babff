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
}
