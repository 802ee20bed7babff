//! Offboarding: `connectorctl disconnect` (one user) and `connectorctl offboard-tenant`
//! (every user of a tenant, its CRM index and its consent record).
//!
//! Disconnecting a user is connector-core's [`connector_core::offboard`] (the platform API
//! and the user's settings page use it too).
//!
//! Offboarding a tenant disconnects every user found for it (connection records, and
//! leftovers without one: token secrets named `office365/{tenant}/...`, sync-state and
//! activity partitions keyed `{tenant}#...`), then deletes their connection records
//! altogether, every body object left under the tenant's prefix (orphans of failed
//! writes), the CRM index, the tenant record, and what other parts keep about the
//! tenant outside connector-core's ports ([`Residue`]): consent-callback's domain aliases
//! and its flows in progress, and teams-post's idempotency records.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::types::AttributeValue;
use connector_core::adapters::dynamodb::{
    DynamoActivityStore, DynamoConnectionStore, DynamoCrmIndex, DynamoSyncStateStore,
    DynamoTenantStore,
};
use connector_core::adapters::s3::{S3BodyStore, s3_client};
use connector_core::adapters::secrets::SecretsManagerVault;
use connector_core::adapters::teams_dynamodb::DynamoShareTargetStore;
use connector_core::config::{bucket_name, table_name, vars};
use connector_core::domain::{TenantId, UserId, UserKey, tenant_body_prefix};
pub use connector_core::offboard::{Stores, UserReport};
use connector_core::ports::{BodyStore, CrmIndex, TenantStore};
use serde::Serialize;
use time::OffsetDateTime;

/// What offboarding a tenant needs besides [`Stores`].
pub struct TenantStores<'a> {
    pub tenants: &'a dyn TenantStore,
    pub crm: &'a dyn CrmIndex,
    pub residue: &'a dyn Residue,
    /// The message bodies bucket: what is left under the tenant's prefix after its users.
    pub bodies: &'a dyn BodyStore,
}

/// What other parts of the product keep about a tenant outside connector-core's ports,
/// and leftovers to find users by.
#[async_trait]
pub trait Residue: Send + Sync {
    /// consent-callback's domain aliases (tenants table, `tenantId = domain#{domain}`,
    /// `aliasOf = {tenant}`); returns the domains.
    async fn delete_domain_aliases(&self, tenant: &TenantId) -> Result<Vec<String>>;
    /// consent-callback's flows in progress (auth sessions table) started for the tenant
    /// (its id or one of `domains` as the requested tenant or the authority).
    async fn delete_auth_sessions(&self, tenant: &TenantId, domains: &[String]) -> Result<u64>;
    /// teams-post's idempotency records (`teams-post#{tenant}#{key}`).
    async fn delete_idempotency_records(&self, tenant: &TenantId) -> Result<u64>;
    /// Users that have data but perhaps no connection record: token secrets, sync-state
    /// and activity partitions of the tenant.
    async fn users_with_data(&self, tenant: &TenantId) -> Result<BTreeSet<UserId>>;
}

/// What offboarding a tenant did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantReport {
    pub tenant_id: String,
    pub users: Vec<UserReport>,
    pub tenant_record_deleted: bool,
    /// Body objects found under the tenant's prefix after its users' activities went
    /// (bodies whose item was never written).
    pub orphan_bodies_deleted: u64,
    pub crm_entries_deleted: u64,
    pub domain_aliases_deleted: Vec<String>,
    pub auth_sessions_deleted: u64,
    pub idempotency_records_deleted: u64,
}

/// Offboarding a whole tenant, on top of disconnecting its users.
#[async_trait]
pub trait OffboardTenant {
    async fn offboard_tenant(
        &self,
        more: &TenantStores<'_>,
        tenant: &TenantId,
        now: time::OffsetDateTime,
    ) -> Result<TenantReport>;
}

#[async_trait]
impl OffboardTenant for Stores<'_> {
    /// Offboards a whole tenant.
    async fn offboard_tenant(
        &self,
        more: &TenantStores<'_>,
        tenant: &TenantId,
        now: time::OffsetDateTime,
    ) -> Result<TenantReport> {
        // Consent first: with the tenant record gone, nothing new is imported for it.
        let tenant_record_deleted = more
            .tenants
            .delete_tenant(tenant)
            .await
            .with_context(|| format!("deleting the tenant record of {tenant}"))?;
        let mut users: BTreeSet<UserId> = self
            .connections
            .list_by_tenant(tenant)
            .await
            .with_context(|| format!("listing the connections of {tenant}"))?
            .into_iter()
            .map(|c| c.user_id)
            .collect();
        users.extend(more.residue.users_with_data(tenant).await?);
        let mut reports = Vec::new();
        for user in users {
            let key = UserKey::new(tenant.clone(), user);
            reports.push(self.disconnect_user(&key, false, now).await?);
        }
        let orphan_bodies_deleted = more
            .bodies
            .delete_prefix(&tenant_body_prefix(tenant))
            .await
            .with_context(|| format!("deleting the message bodies of {tenant}"))?;
        let crm_entries_deleted = more
            .crm
            .delete_index(tenant)
            .await
            .with_context(|| format!("deleting the CRM index of {tenant}"))?;
        let domain_aliases_deleted = more.residue.delete_domain_aliases(tenant).await?;
        let auth_sessions_deleted = more
            .residue
            .delete_auth_sessions(tenant, &domain_aliases_deleted)
            .await?;
        let idempotency_records_deleted = more.residue.delete_idempotency_records(tenant).await?;
        Ok(TenantReport {
            tenant_id: tenant.to_string(),
            users: reports,
            tenant_record_deleted,
            orphan_bodies_deleted,
            crm_entries_deleted,
            domain_aliases_deleted,
            auth_sessions_deleted,
            idempotency_records_deleted,
        })
    }
}

/// [`Residue`] on DynamoDB and Secrets Manager. Scans: offboarding is rare, and the
/// tables it scans are keyed by something other than the tenant.
pub struct AwsResidue {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub tenants_table: String,
    pub auth_sessions_table: String,
    pub idempotency_table: String,
    pub sync_state_table: String,
    pub activities_table: String,
}

type Item = std::collections::HashMap<String, AttributeValue>;

fn text<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

impl AwsResidue {
    /// Every item of `table` that `keep` selects (all attributes), following pages.
    async fn scan(&self, table: &str, keep: impl Fn(&Item) -> bool) -> Result<Vec<Item>> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .dynamodb
                .scan()
                .table_name(table)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .with_context(|| format!("scanning {table}"))?;
            out.extend(page.items.unwrap_or_default().into_iter().filter(&keep));
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(out),
            }
        }
    }

    async fn delete(&self, table: &str, key: Item) -> Result<()> {
        self.dynamodb
            .delete_item()
            .table_name(table)
            .set_key(Some(key))
            .send()
            .await
            .with_context(|| format!("deleting an item of {table}"))?;
        Ok(())
    }
}

#[async_trait]
impl Residue for AwsResidue {
    async fn delete_domain_aliases(&self, tenant: &TenantId) -> Result<Vec<String>> {
        let aliases = self
            .scan(&self.tenants_table, |item| {
                text(item, "aliasOf") == Some(tenant.as_str())
            })
            .await?;
        let mut domains = Vec::new();
        for item in aliases {
            let Some(key) = text(&item, "tenantId").map(str::to_string) else {
                continue;
            };
            self.delete(
                &self.tenants_table,
                Item::from([("tenantId".into(), AttributeValue::S(key.clone()))]),
            )
            .await?;
            domains.push(key.trim_start_matches("domain#").to_string());
        }
        Ok(domains)
    }

    async fn delete_auth_sessions(&self, tenant: &TenantId, domains: &[String]) -> Result<u64> {
        let names: BTreeSet<String> = std::iter::once(tenant.to_string())
            .chain(domains.iter().map(|d| d.to_lowercase()))
            .collect();
        let mentions = |v: Option<&str>| v.is_some_and(|v| names.contains(&v.to_lowercase()));
        let sessions = self
            .scan(&self.auth_sessions_table, |item| {
                mentions(text(item, "requestedTenant")) || mentions(text(item, "authority"))
            })
            .await?;
        let count = sessions.len() as u64;
        for item in sessions {
            if let Some(state) = text(&item, "state") {
                self.delete(
                    &self.auth_sessions_table,
                    Item::from([("state".into(), AttributeValue::S(state.to_string()))]),
                )
                .await?;
            }
        }
        Ok(count)
    }

    async fn delete_idempotency_records(&self, tenant: &TenantId) -> Result<u64> {
        let prefix = connector_core::teams::idempotency::record_id(tenant, "");
        let records = self
            .scan(&self.idempotency_table, |item| {
                text(item, "id").is_some_and(|id| id.starts_with(&prefix))
            })
            .await?;
        let count = records.len() as u64;
        for item in records {
            if let Some(id) = text(&item, "id") {
                self.delete(
                    &self.idempotency_table,
                    Item::from([("id".into(), AttributeValue::S(id.to_string()))]),
                )
                .await?;
            }
        }
        Ok(count)
    }

    async fn users_with_data(&self, tenant: &TenantId) -> Result<BTreeSet<UserId>> {
        let prefix = format!("{tenant}#");
        let mut users = BTreeSet::new();
        let mut user_of = |key: Option<&str>| {
            // `{tenant}#{user}` or `{tenant}#{user}#{kind}`.
            if let Some(rest) = key.and_then(|k| k.strip_prefix(&prefix))
                && let Ok(user) = UserId::parse(rest.split('#').next().unwrap_or_default())
            {
                users.insert(user);
            }
        };
        for item in self
            .scan(&self.sync_state_table, |i| {
                text(i, "syncKey").is_some_and(|k| k.starts_with(&prefix))
            })
            .await?
        {
            user_of(text(&item, "syncKey"));
        }
        for item in self
            .scan(&self.activities_table, |i| {
                text(i, "owner").is_some_and(|k| k.starts_with(&prefix))
            })
            .await?
        {
            user_of(text(&item, "owner"));
        }
        // Token secrets: `office365/{tenant}/{user}` (the name filter matches prefixes).
        let secret_prefix = format!("office365/{tenant}/");
        let mut token = None;
        loop {
            let page = self
                .secrets
                .list_secrets()
                .filters(
                    aws_sdk_secretsmanager::types::Filter::builder()
                        .key(aws_sdk_secretsmanager::types::FilterNameStringType::Name)
                        .values(&secret_prefix)
                        .build(),
                )
                .set_next_token(token)
                .send()
                .await
                .context("listing the tenant's token secrets")?;
            for secret in page.secret_list() {
                if let Some(user) = secret
                    .name()
                    .and_then(|n| n.strip_prefix(&secret_prefix))
                    .and_then(|u| UserId::parse(u).ok())
                {
                    users.insert(user);
                }
            }
            match page.next_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        Ok(users)
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The user-level stores from the environment, kept alive for [`Stores`] to borrow.
struct AwsStores {
    bodies: Arc<S3BodyStore>,
    connections: DynamoConnectionStore,
    sync: DynamoSyncStateStore,
    activities: DynamoActivityStore,
    targets: DynamoShareTargetStore,
    vault: SecretsManagerVault,
    /// `None` when the environment lacks what deleting subscriptions at Graph needs (the
    /// Microsoft settings, `PUBLIC_BASE_URL`, `SUBSCRIPTIONS_TABLE`): said on stderr.
    subscriptions: Option<connector_core::notifications::manager::Manager>,
}

/// The change-notification subscriptions' manager from the stack's environment, or `None`
/// (and a line on stderr) when it is not all there.
fn subscription_manager(
    sdk: &aws_config::SdkConfig,
) -> Option<connector_core::notifications::manager::Manager> {
    let built = connector_core::config::Config::from_env()
        .map_err(|e| e.to_string())
        .and_then(|config| {
            let web = connector_core::config::WebConfig::from_env().map_err(|e| e.to_string())?;
            connector_core::notifications::manager::Manager::on_aws(
                &config,
                &web.public_base_url,
                sdk,
                std::sync::Arc::new(connector_core::clock::SystemClock),
            )
            .map_err(|e| e.to_string())
        });
    match built {
        Ok(manager) => Some(manager),
        Err(error) => {
            eprintln!(
                "note: change-notification subscriptions are not deleted at Graph ({error}); they expire there within a week"
            );
            None
        }
    }
}

/// The message bodies bucket from `MESSAGE_BODIES_BUCKET`.
pub fn body_store(sdk: &aws_config::SdkConfig) -> Result<Arc<S3BodyStore>> {
    Ok(Arc::new(S3BodyStore::new(
        s3_client(
            aws_sdk_s3::config::Builder::from(sdk),
            sdk.endpoint_url().is_some(),
        ),
        bucket_name(&env, vars::MESSAGE_BODIES_BUCKET)?,
    )))
}

impl AwsStores {
    fn from_env(sdk: &aws_config::SdkConfig) -> Result<Self> {
        let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
        let sync_table = table_name(&env, vars::SYNC_STATE_TABLE)?;
        let bodies = body_store(sdk)?;
        Ok(Self {
            bodies: bodies.clone(),
            connections: DynamoConnectionStore::new(
                dynamodb.clone(),
                table_name(&env, vars::CONNECTIONS_TABLE)?,
            ),
            sync: DynamoSyncStateStore::new(dynamodb.clone(), sync_table.clone()),
            activities: DynamoActivityStore::new(
                dynamodb.clone(),
                table_name(&env, vars::ACTIVITIES_TABLE)?,
            )
            .with_bodies(bodies),
            targets: DynamoShareTargetStore::new(dynamodb, sync_table),
            vault: SecretsManagerVault::new(aws_sdk_secretsmanager::Client::new(sdk)),
            subscriptions: subscription_manager(sdk),
        })
    }

    fn stores(&self, lease_wait: Duration) -> Stores<'_> {
        Stores {
            subscriptions: self
                .subscriptions
                .as_ref()
                .map(|m| m as &dyn connector_core::offboard::SubscriptionCanceller),
            connections: &self.connections,
            sync: &self.sync,
            activities: &self.activities,
            targets: &self.targets,
            vault: &self.vault,
            lease_wait,
        }
    }
}

fn print_user(report: &UserReport) {
    println!(
        "{}#{}: connection {} (was {}), {} change-notification subscriptions deleted at Graph \
         ({} left to expire there), token secret deleted, mail and calendar sync state deleted, \
         {} activities deleted, share targets deleted",
        report.tenant_id,
        report.user_id,
        report.connection,
        report.previous_status.as_deref().unwrap_or("absent"),
        report.subscriptions.cancelled,
        report.subscriptions.left_to_expire,
        report.activities_deleted
    );
}

/// `disconnect --tenant T --user U`.
pub async fn disconnect(tenant: &str, user: &str, wait_secs: u64, json: bool) -> Result<()> {
    let key = UserKey::new(
        TenantId::parse(tenant).context("--tenant")?,
        UserId::parse(user).context("--user")?,
    );
    let sdk = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let aws = AwsStores::from_env(&sdk)?;
    let report = aws
        .stores(Duration::from_secs(wait_secs))
        .disconnect_user(&key, true, OffsetDateTime::now_utc())
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_user(&report);
    }
    Ok(())
}

/// `offboard-tenant --tenant T`.
pub async fn offboard_tenant(tenant: &str, wait_secs: u64, json: bool) -> Result<()> {
    let tenant = TenantId::parse(tenant).context("--tenant")?;
    let sdk = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let aws = AwsStores::from_env(&sdk)?;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let tenants_table = table_name(&env, vars::TENANTS_TABLE)?;
    let tenants = DynamoTenantStore::new(dynamodb.clone(), tenants_table.clone());
    let crm = DynamoCrmIndex::new(dynamodb.clone(), table_name(&env, vars::CRM_TABLE)?);
    let residue = AwsResidue {
        dynamodb,
        secrets: aws_sdk_secretsmanager::Client::new(&sdk),
        tenants_table,
        auth_sessions_table: table_name(&env, vars::AUTH_SESSIONS_TABLE)?,
        idempotency_table: table_name(&env, vars::IDEMPOTENCY_TABLE)?,
        sync_state_table: table_name(&env, vars::SYNC_STATE_TABLE)?,
        activities_table: table_name(&env, vars::ACTIVITIES_TABLE)?,
    };
    let more = TenantStores {
        tenants: &tenants,
        crm: &crm,
        residue: &residue,
        bodies: aws.bodies.as_ref(),
    };
    let report = aws
        .stores(Duration::from_secs(wait_secs))
        .offboard_tenant(&more, &tenant, OffsetDateTime::now_utc())
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    for user in &report.users {
        print_user(user);
    }
    println!(
        "tenant {}: {} user(s) offboarded, tenant record {}, {} CRM entries deleted, \
         domain aliases deleted: [{}], {} sign-in flow(s) in progress and {} Teams idempotency \
         record(s) deleted",
        report.tenant_id,
        report.users.len(),
        if report.tenant_record_deleted {
            "deleted"
        } else {
            "absent"
        },
        report.crm_entries_deleted,
        report.domain_aliases_deleted.join(", "),
        report.auth_sessions_deleted,
        report.idempotency_records_deleted
    );
    Ok(())
}
