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
use connector_core::config::BaseUrl;
use connector_core::domain::TenantId;
use connector_core::secret::SecretString;
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

pub struct GraphOrganizationDirectory {
    http: reqwest::Client,
    graph_base_url: BaseUrl,
}

impl GraphOrganizationDirectory {
    /// `http` must not follow redirects (see `token::http_client`): the bearer token goes to
    /// GRAPH_BASE_URL only.
    pub fn new(http: reqwest::Client, graph_base_url: BaseUrl) -> Self {
        Self {
            http,
            graph_base_url,
        }
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

const MAX_BODY: usize = 256 * 1024;

#[async_trait]
impl OrganizationDirectory for GraphOrganizationDirectory {
    async fn verified_domains(
        &self,
        access_token: &SecretString,
        tenant_id: &TenantId,
    ) -> Result<Vec<String>, OrganizationError> {
        let url = self
            .graph_base_url
            .join("v1.0/organization?$select=id,verifiedDomains");
        let response = self
            .http
            .get(url)
            .bearer_auth(access_token.secret())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|_| OrganizationError::Unreachable)?;
        if !response.status().is_success() {
            return Err(OrganizationError::Status(response.status().as_u16()));
        }
        let body = response
            .bytes()
            .await
            .map_err(|_| OrganizationError::Unreachable)?;
        if body.len() > MAX_BODY {
            return Err(OrganizationError::Malformed("body too large"));
        }
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
