//! The tenant's verified domains, read from Microsoft Graph with the access token of the
//! administrator's verification sign-in (used once, never stored): the
//! [`OrganizationDirectory`] port and its Graph adapter.
//!
//! `GET {GRAPH_BASE_URL}/v1.0/organization?$select=id,verifiedDomains` lists the signed-in user's
//! organization. Sources, read 2026-12-05: https://learn.microsoft.com/graph/api/organization-list
//! and https://learn.microsoft.com/graph/api/organization-get (least privileged delegated
//! permission `User.Read`, which reads `id`, `displayName` and `verifiedDomains`);
//! https://learn.microsoft.com/graph/api/resources/verifieddomain (`name`, `type`, `isDefault`,
//! `isInitial`, `capabilities`). A domain is verified in one tenant at a time, so Microsoft vouches
//! that each listed name belongs to this tenant.

use async_trait::async_trait;
use connector_core::domain::TenantId;
use connector_core::graph::{GraphClient, GraphError};
use connector_core::oauth::{BearerSource, TokenError};
use connector_core::secret::{AccessToken, SecretString};
use serde::Deserialize;

use crate::params::normalize_domain;

#[derive(Debug, thiserror::Error)]
pub enum OrganizationError {
    #[error("Microsoft Graph could not be reached")]
    Unreachable,
    #[error("Microsoft Graph answered HTTP {0}")]
    Status(u16),
    #[error("Microsoft Graph answered something unexpected: {0}")]
    Malformed(&'static str),
}

#[async_trait]
pub trait OrganizationDirectory: Send + Sync {
    /// The verified domain names (lower-case) of the signed-in user's organization, which must
    /// be `tenant_id`.
    async fn verified_domains(
        &self,
        access_token: &SecretString,
        tenant_id: &TenantId,
    ) -> Result<Vec<String>, OrganizationError>;
}

/// The adapter, on connector-core's Graph client (its body limit, gzip, 5xx retries, typed
/// errors, and no link followed off the configured Graph host).
pub struct GraphOrganizationDirectory {
    graph: GraphClient,
}

impl GraphOrganizationDirectory {
    pub fn new(graph: GraphClient) -> Self {
        Self { graph }
    }
}

/// The verification sign-in's access token, for one request: nothing to refresh it with.
struct OneToken(AccessToken);

#[async_trait]
impl BearerSource for OneToken {
    async fn bearer(&self) -> Result<AccessToken, TokenError> {
        Ok(self.0.clone())
    }

    async fn refresh_rejected(&self) -> Result<AccessToken, TokenError> {
        Err(TokenError::NotConnected)
    }
}

#[derive(Deserialize)]
struct Page {
    value: Vec<Organization>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Organization {
    id: String,
    #[serde(default)]
    verified_domains: Vec<VerifiedDomain>,
}

#[derive(Deserialize)]
struct VerifiedDomain {
    name: String,
}

#[async_trait]
impl OrganizationDirectory for GraphOrganizationDirectory {
    async fn verified_domains(
        &self,
        access_token: &SecretString,
        tenant_id: &TenantId,
    ) -> Result<Vec<String>, OrganizationError> {
        let bearer = OneToken(AccessToken::new(access_token.secret()));
        let session = self.graph.session(tenant_id.as_str(), &bearer, None);
        let body = session
            .get("/organization?$select=id,verifiedDomains", &[])
            .await
            .map_err(|error| match error {
                GraphError::Api { status, .. } => OrganizationError::Status(status),
                GraphError::Unauthorized => OrganizationError::Status(401),
                GraphError::Transport { .. } => OrganizationError::Unreachable,
                _ => OrganizationError::Malformed("an unusable Graph answer"),
            })?;
        let page: Page = serde_json::from_slice(&body)
            .map_err(|_| OrganizationError::Malformed("not an organization list"))?;
        let [organization] = page.value.as_slice() else {
            return Err(OrganizationError::Malformed("not exactly one organization"));
        };
        if !organization.id.eq_ignore_ascii_case(tenant_id.as_str()) {
            return Err(OrganizationError::Malformed(
                "another tenant's organization",
            ));
        }
        let mut domains: Vec<String> = organization
            .verified_domains
            .iter()
            .filter_map(|domain| normalize_domain(&domain.name))
            .collect();
        domains.sort();
        domains.dedup();
        Ok(domains)
    }
}
