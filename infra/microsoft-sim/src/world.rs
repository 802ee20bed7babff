//! The world file: the directory (apps, tenants, policy, users, grants) and each user's mailbox, calendar and
//! teams, as loaded from JSON. Messages and events stay Graph's own JSON (`serde_json::Value`); the stores that
//! serve them own their interpretation.
//!
//! Directory types reject unknown fields so that a misspelt policy key fails loudly instead of silently falling
//! back to a lax default. Folder, team and channel entries keep unknown fields in `extra` for their stores.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct World {
    #[serde(default)]
    pub apps: Vec<App>,
    #[serde(default)]
    pub tenants: Vec<Tenant>,
}

/// An app registration (multi-tenant). `clientSecret` absent means a public client.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct App {
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Earlier client secrets past their end date: presenting one answers AADSTS7000222
    /// (`POST /_sim/apps/{clientId}/secret` rotates the secret into this list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expired_secrets: Vec<String>,
    /// Certificates registered on the app (Microsoft's `keyCredentials`): client assertions
    /// signed by their keys authenticate the app (`POST /_sim/apps/{clientId}/certificates`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_credentials: Vec<KeyCredential>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    pub display_name: String,
    /// The statically configured delegated Graph permissions (short names, e.g. `Mail.Read`): what `/.default`
    /// requests at admin consent. Microsoft calls this `requiredResourceAccess`.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// The manifest's `groupMembershipClaims` (`None`, `SecurityGroup`, `DirectoryRole`, `ApplicationGroup`,
    /// `All`): with `DirectoryRole` or `All`, tokens carry the user's `wids` (directory role template ids). Source:
    /// https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference (`wids`), read 2026-12-05.
    #[serde(default)]
    pub group_membership_claims: Option<String>,
}

/// A registered certificate, as the token endpoint needs it: the public key and the thumbprints
/// the assertion header may name (`x5t#S256`: SHA-256 of the certificate's DER, `x5t`: SHA-1).
/// Without a certificate at hand (a KMS key has none until one is issued for it), the
/// registration gives the thumbprint the client will send.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyCredential {
    /// The RSA public key: DER SubjectPublicKeyInfo (what KMS `GetPublicKey` returns), base64.
    pub public_key: String,
    /// Hex.
    #[serde(default)]
    pub thumbprint_sha256: Option<String>,
    /// Hex.
    #[serde(default)]
    pub thumbprint_sha1: Option<String>,
}

impl App {
    /// Whether the app holds any credential (else it is a public client).
    pub fn is_confidential(&self) -> bool {
        self.client_secret.is_some() || !self.key_credentials.is_empty()
    }

    /// Whether tokens issued to this app carry `wids`.
    pub fn emits_wids(&self) -> bool {
        self.group_membership_claims
            .as_deref()
            .is_some_and(|value| {
                value
                    .split(',')
                    .any(|v| matches!(v.trim(), "All" | "DirectoryRole"))
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum UserConsent {
    #[default]
    Allowed,
    AdminOnly,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tenant {
    pub id: String,
    pub display_name: String,
    #[serde(default)]
    pub verified_domains: Vec<String>,
    #[serde(default)]
    pub user_consent: UserConsent,
    #[serde(default)]
    pub admin_consent_workflow: bool,
    #[serde(default)]
    pub assignment_required: bool,
    /// User ids or UPNs assigned to the app (matters when `assignmentRequired`).
    #[serde(default)]
    pub assigned_users: Vec<String>,
    #[serde(default)]
    pub grants: Vec<Grant>,
    /// Apps whose service principal exists in the tenant without any grant yet. A grant implies one.
    #[serde(default)]
    pub service_principals: Vec<String>,
    /// `tenant_region_scope` of the tenant's OIDC metadata; `WW` if absent.
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub generate: Vec<GenerateSpec>,
}

/// A delegated permission grant (`oauth2PermissionGrant`): to every user (`allUsers`) or to one user (id or UPN).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Grant {
    pub client_id: String,
    pub scopes: Vec<String>,
    pub principal: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    GlobalAdministrator,
    PrivilegedRoleAdministrator,
    CloudApplicationAdministrator,
    ApplicationAdministrator,
    /// Any other directory role: never allowed to grant tenant-wide consent.
    #[serde(other)]
    Other,
}

/// The template id of the "User" role every member holds; Entra lists it in `wids` too (observed:
/// https://github.com/microsoftgraph/msgraph-sdk-powershell/issues/1782, read 2026-12-05).
pub const MEMBER_ROLE_TEMPLATE_ID: &str = "b79fbf4d-3ef9-4689-8143-76b194e85509";

impl Role {
    /// The role's template id, as `wids` carries it. Source: Microsoft Entra built-in roles,
    /// https://learn.microsoft.com/entra/identity/role-based-access-control/permissions-reference, read 2026-12-05.
    pub fn template_id(self) -> Option<&'static str> {
        match self {
            Role::GlobalAdministrator => Some("62e90394-69f5-4237-9190-012177145e10"),
            Role::PrivilegedRoleAdministrator => Some("e8611ab8-c189-46e8-94e1-60213ab1f814"),
            Role::CloudApplicationAdministrator => Some("158c047a-c907-4556-b7ef-446551a6b5f7"),
            Role::ApplicationAdministrator => Some("9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3"),
            Role::Other => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MailboxKind {
    #[default]
    ExchangeOnline,
    OnPremises,
    None,
}

impl MailboxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MailboxKind::ExchangeOnline => "exchangeOnline",
            MailboxKind::OnPremises => "onPremises",
            MailboxKind::None => "none",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct User {
    pub id: String,
    pub user_principal_name: String,
    #[serde(default)]
    pub mail: Option<String>,
    pub display_name: String,
    #[serde(default)]
    pub given_name: Option<String>,
    #[serde(default)]
    pub surname: Option<String>,
    #[serde(default)]
    pub job_title: Option<String>,
    #[serde(default)]
    pub office_location: Option<String>,
    #[serde(default)]
    pub mobile_phone: Option<String>,
    #[serde(default)]
    pub business_phones: Vec<String>,
    #[serde(default)]
    pub preferred_language: Option<String>,
    #[serde(default)]
    pub roles: Vec<Role>,
    #[serde(default)]
    pub mailbox: MailboxKind,
    #[serde(default)]
    pub mail_folders: Vec<MailFolder>,
    #[serde(default)]
    pub events: Vec<Value>,
    #[serde(default)]
    pub joined_teams: Vec<Team>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MailFolder {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub well_known_name: Option<String>,
    pub display_name: String,
    #[serde(default)]
    pub is_hidden: bool,
    #[serde(default)]
    pub child_folders: Vec<MailFolder>,
    #[serde(default)]
    pub messages: Vec<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Team {
    pub id: String,
    pub display_name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub channels: Vec<Channel>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    pub id: String,
    pub display_name: String,
    #[serde(default = "standard")]
    pub membership_type: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn standard() -> String {
    "standard".to_owned()
}

/// A seeded, generated mailbox folder (for benchmarks and large delta tests).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenerateSpec {
    /// UPN (or id) of the mailbox owner.
    pub user: String,
    /// Well-known name or display name of the folder.
    pub folder: String,
    pub messages: u64,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub crm_match_ratio: f64,
}

impl World {
    pub fn from_json(json: &str) -> anyhow::Result<World> {
        let world: World = serde_json::from_str(json).context("parsing the world file")?;
        world.validate()?;
        Ok(world)
    }

    pub fn load(path: impl AsRef<Path>) -> anyhow::Result<World> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        World::from_json(&text).with_context(|| format!("loading world {}", path.display()))
    }

    /// Structural checks that serde cannot express; each error names the offending entry.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut client_ids = std::collections::HashSet::new();
        for app in &self.apps {
            anyhow::ensure!(
                client_ids.insert(app.client_id.to_ascii_lowercase()),
                "duplicate app {}",
                app.client_id
            );
        }
        let mut tenant_ids = std::collections::HashSet::new();
        let mut user_ids = std::collections::HashSet::new();
        let mut upns = std::collections::HashSet::new();
        for tenant in &self.tenants {
            anyhow::ensure!(
                uuid::Uuid::parse_str(&tenant.id).is_ok(),
                "tenant id {:?} is not a GUID (Microsoft tenant ids always are)",
                tenant.id
            );
            anyhow::ensure!(
                tenant_ids.insert(tenant.id.to_ascii_lowercase()),
                "duplicate tenant {}",
                tenant.id
            );
            for user in &tenant.users {
                anyhow::ensure!(
                    uuid::Uuid::parse_str(&user.id).is_ok(),
                    "user id {:?} is not a GUID (object ids always are)",
                    user.id
                );
                anyhow::ensure!(
                    user_ids.insert(user.id.to_ascii_lowercase()),
                    "duplicate user id {}",
                    user.id
                );
                anyhow::ensure!(
                    upns.insert(user.user_principal_name.to_ascii_lowercase()),
                    "duplicate userPrincipalName {}",
                    user.user_principal_name
                );
            }
            for grant in &tenant.grants {
                anyhow::ensure!(
                    client_ids.contains(&grant.client_id.to_ascii_lowercase()),
                    "tenant {}: grant for unknown app {}",
                    tenant.id,
                    grant.client_id
                );
            }
        }
        Ok(())
    }
}
