//! The simulator's shared state: the directory (apps, tenants, policy, users, grants, consent requests), the
//! Graph stores, the identity state, the control state and the sim clock. One `Sim` per server, shared as
//! `SharedSim`. Locks are never held across an await.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use time::OffsetDateTime;

use crate::control::ControlState;
use crate::graph::calendar::CalendarStore;
use crate::graph::mail::MailStore;
use crate::graph::online_meetings::OnlineMeetingStore;
use crate::graph::subscriptions::SubscriptionStore;
use crate::graph::teams::TeamsStore;
use crate::identity::IdentityState;
use crate::identity::scopes::canonical_scope;
use crate::world::{App, MailboxKind, Role, UserConsent, World};

pub type SharedSim = Arc<Sim>;

/// Options fixed when the server starts.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Sign in the `login_hint` user and accept consent where policy allows, without HTML interaction.
    pub auto_approve: bool,
    /// `expires_in` of access tokens (and their `exp`).
    pub access_token_lifetime: std::time::Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            auto_approve: false,
            access_token_lifetime: std::time::Duration::from_secs(3599),
        }
    }
}

pub struct Sim {
    directory: RwLock<Directory>,
    pub mail: MailStore,
    pub calendar: CalendarStore,
    pub teams: TeamsStore,
    pub online_meetings: OnlineMeetingStore,
    pub subscriptions: SubscriptionStore,
    pub identity: IdentityState,
    pub control: ControlState,
    config: SimConfig,
    clock_offset: Mutex<time::Duration>,
    base_url: OnceLock<String>,
    started: std::time::Instant,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("base_url", &self.base_url.get())
            .finish_non_exhaustive()
    }
}

impl Sim {
    pub fn new(world: &World, config: SimConfig) -> anyhow::Result<Sim> {
        world.validate()?;
        let now = OffsetDateTime::now_utc();
        Ok(Sim {
            directory: RwLock::new(Directory::from_world(world, now)),
            mail: MailStore::from_world(world, now)?,
            calendar: CalendarStore::from_world(world, now)?,
            teams: TeamsStore::from_world(world, now)?,
            online_meetings: OnlineMeetingStore::default(),
            subscriptions: SubscriptionStore::from_world(world, now)?,
            identity: IdentityState::new()?,
            control: ControlState::default(),
            config,
            clock_offset: Mutex::new(time::Duration::ZERO),
            base_url: OnceLock::new(),
            started: std::time::Instant::now(),
        })
    }

    /// The sim clock: real time plus whatever `/_sim/clock/advance` added.
    pub fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + *self.clock_offset.lock().expect("clock lock")
    }

    pub fn advance_clock(&self, by: time::Duration) {
        *self.clock_offset.lock().expect("clock lock") += by;
    }

    /// Milliseconds of real time since the sim started (request-log timestamps: comparable across requests,
    /// unaffected by clock advances).
    pub fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// `http://127.0.0.1:PORT` or `https://...`, without a trailing slash. Set once the listener is bound.
    pub fn base_url(&self) -> &str {
        self.base_url
            .get()
            .map(String::as_str)
            .unwrap_or("http://127.0.0.1")
    }

    pub fn set_base_url(&self, url: String) {
        let _ = self.base_url.set(url.trim_end_matches('/').to_owned());
    }

    pub fn directory(&self) -> RwLockReadGuard<'_, Directory> {
        self.directory.read().expect("directory lock")
    }

    pub fn directory_mut(&self) -> RwLockWriteGuard<'_, Directory> {
        self.directory.write().expect("directory lock")
    }

    /// A user of `tenant_id` by object id or UPN.
    pub fn user(&self, tenant_id: &str, user_id: &str) -> Option<UserInfo> {
        let dir = self.directory();
        let tenant = dir.tenant(tenant_id)?;
        tenant.user(user_id).map(|u| u.info.clone())
    }

    /// A user of any tenant by object id or UPN.
    pub fn find_user(&self, id_or_upn: &str) -> Option<UserInfo> {
        self.directory()
            .find_user(id_or_upn)
            .map(|(_, u)| u.info.clone())
    }
}

/// What Graph needs to know about a directory user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub id: String,
    pub tenant_id: String,
    pub user_principal_name: String,
    pub mail: Option<String>,
    pub display_name: String,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub job_title: Option<String>,
    pub office_location: Option<String>,
    pub mobile_phone: Option<String>,
    pub business_phones: Vec<String>,
    pub preferred_language: Option<String>,
    pub mailbox: MailboxKind,
}

#[derive(Debug, Clone)]
pub struct UserRecord {
    pub info: UserInfo,
    pub roles: Vec<Role>,
    /// "Revoke sessions": refresh tokens issued before this instant are dead (AADSTS50173).
    pub sessions_revoked_at: Option<OffsetDateTime>,
}

impl UserRecord {
    /// The roles that may grant tenant-wide consent to delegated Graph permissions (grant-admin-consent:
    /// Privileged Role Administrator, Cloud Application Administrator, Application Administrator; Global
    /// Administrator holds every permission). https://learn.microsoft.com/entra/identity/enterprise-apps/grant-admin-consent
    pub fn can_grant_admin_consent(&self) -> bool {
        self.roles.iter().any(|r| {
            matches!(
                r,
                Role::GlobalAdministrator
                    | Role::PrivilegedRoleAdministrator
                    | Role::CloudApplicationAdministrator
                    | Role::ApplicationAdministrator
            )
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantPrincipal {
    AllUsers,
    /// Object id of the user.
    User(String),
}

#[derive(Debug, Clone)]
pub struct GrantRecord {
    pub client_id: String,
    /// Canonical short scope names (`Mail.Read`, `offline_access`, ...).
    pub scopes: BTreeSet<String>,
    pub principal: GrantPrincipal,
    pub granted_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct TenantRecord {
    /// Lower-case GUID.
    pub id: String,
    pub display_name: String,
    pub verified_domains: Vec<String>,
    pub user_consent: UserConsent,
    pub admin_consent_workflow: bool,
    pub assignment_required: bool,
    /// Object ids of assigned users.
    pub assigned_users: BTreeSet<String>,
    pub region: String,
    /// Client ids (lower case) of apps that have a service principal here.
    pub service_principals: BTreeSet<String>,
    pub grants: Vec<GrantRecord>,
    pub users: Vec<UserRecord>,
}

impl TenantRecord {
    pub fn user(&self, id_or_upn: &str) -> Option<&UserRecord> {
        self.users.iter().find(|u| {
            u.info.id.eq_ignore_ascii_case(id_or_upn)
                || u.info.user_principal_name.eq_ignore_ascii_case(id_or_upn)
        })
    }

    pub fn user_mut(&mut self, id_or_upn: &str) -> Option<&mut UserRecord> {
        self.users.iter_mut().find(|u| {
            u.info.id.eq_ignore_ascii_case(id_or_upn)
                || u.info.user_principal_name.eq_ignore_ascii_case(id_or_upn)
        })
    }

    pub fn has_service_principal(&self, client_id: &str) -> bool {
        self.service_principals
            .contains(&client_id.to_ascii_lowercase())
    }

    /// Scopes granted to `client_id` for `user_id`: tenant-wide grants plus the user's own.
    pub fn granted_scopes(&self, client_id: &str, user_id: &str) -> BTreeSet<String> {
        if !self.has_service_principal(client_id) {
            return BTreeSet::new();
        }
        self.grants
            .iter()
            .filter(|g| g.client_id.eq_ignore_ascii_case(client_id))
            .filter(|g| match &g.principal {
                GrantPrincipal::AllUsers => true,
                GrantPrincipal::User(id) => id.eq_ignore_ascii_case(user_id),
            })
            .flat_map(|g| g.scopes.iter().cloned())
            .collect()
    }

    pub fn is_assigned(&self, user_id: &str) -> bool {
        !self.assignment_required || self.assigned_users.contains(&user_id.to_ascii_lowercase())
    }

    pub fn owns_domain(&self, domain: &str) -> bool {
        self.verified_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
    }

    /// Adds `scopes` to the grant of `principal` (creating it, and the service principal, if absent).
    pub fn add_grant(
        &mut self,
        client_id: &str,
        principal: GrantPrincipal,
        scopes: &BTreeSet<String>,
        now: OffsetDateTime,
    ) {
        self.service_principals
            .insert(client_id.to_ascii_lowercase());
        if let Some(g) = self
            .grants
            .iter_mut()
            .find(|g| g.client_id.eq_ignore_ascii_case(client_id) && g.principal == principal)
        {
            g.scopes.extend(scopes.iter().cloned());
            return;
        }
        self.grants.push(GrantRecord {
            client_id: client_id.to_owned(),
            scopes: scopes.clone(),
            principal,
            granted_at: now,
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ConsentRequestStatus {
    Pending,
    Approved,
    Denied,
}

/// An admin-consent-workflow request (`appConsentRequest` / `userConsentRequest`).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsentRequest {
    pub id: String,
    pub tenant_id: String,
    pub client_id: String,
    pub user_id: String,
    pub scopes: BTreeSet<String>,
    pub justification: String,
    pub status: ConsentRequestStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub created_date_time: OffsetDateTime,
}

#[derive(Debug, Clone, Default)]
pub struct Directory {
    pub apps: Vec<App>,
    pub tenants: Vec<TenantRecord>,
    pub consent_requests: Vec<ConsentRequest>,
}

impl Directory {
    pub fn from_world(world: &World, now: OffsetDateTime) -> Directory {
        let tenants = world
            .tenants
            .iter()
            .map(|t| {
                let users: Vec<UserRecord> = t
                    .users
                    .iter()
                    .map(|u| UserRecord {
                        info: UserInfo {
                            id: u.id.to_ascii_lowercase(),
                            tenant_id: t.id.to_ascii_lowercase(),
                            user_principal_name: u.user_principal_name.clone(),
                            mail: u.mail.clone(),
                            display_name: u.display_name.clone(),
                            given_name: u.given_name.clone(),
                            surname: u.surname.clone(),
                            job_title: u.job_title.clone(),
                            office_location: u.office_location.clone(),
                            mobile_phone: u.mobile_phone.clone(),
                            business_phones: u.business_phones.clone(),
                            preferred_language: u.preferred_language.clone(),
                            mailbox: u.mailbox,
                        },
                        roles: u.roles.clone(),
                        sessions_revoked_at: None,
                    })
                    .collect();
                let resolve = |id_or_upn: &str| {
                    users
                        .iter()
                        .find(|u| {
                            u.info.id.eq_ignore_ascii_case(id_or_upn)
                                || u.info.user_principal_name.eq_ignore_ascii_case(id_or_upn)
                        })
                        .map(|u| u.info.id.clone())
                };
                let mut record = TenantRecord {
                    id: t.id.to_ascii_lowercase(),
                    display_name: t.display_name.clone(),
                    verified_domains: t.verified_domains.clone(),
                    user_consent: t.user_consent,
                    admin_consent_workflow: t.admin_consent_workflow,
                    assignment_required: t.assignment_required,
                    assigned_users: t.assigned_users.iter().filter_map(|u| resolve(u)).collect(),
                    region: t.region.clone().unwrap_or_else(|| "WW".to_owned()),
                    service_principals: t
                        .service_principals
                        .iter()
                        .map(|c| c.to_ascii_lowercase())
                        .collect(),
                    grants: Vec::new(),
                    users: users.clone(),
                };
                for g in &t.grants {
                    let principal = if g.principal == "allUsers" {
                        GrantPrincipal::AllUsers
                    } else {
                        // An unknown user still gets a record, so a grant never silently widens to everyone.
                        GrantPrincipal::User(
                            resolve(&g.principal)
                                .unwrap_or_else(|| g.principal.to_ascii_lowercase()),
                        )
                    };
                    let scopes = g.scopes.iter().map(|s| canonical_scope(s)).collect();
                    record.add_grant(&g.client_id, principal, &scopes, now);
                }
                record
            })
            .collect();
        Directory {
            apps: world.apps.clone(),
            tenants,
            consent_requests: Vec::new(),
        }
    }

    pub fn app_mut(&mut self, client_id: &str) -> Option<&mut App> {
        self.apps
            .iter_mut()
            .find(|a| a.client_id.eq_ignore_ascii_case(client_id))
    }

    pub fn app(&self, client_id: &str) -> Option<&App> {
        self.apps
            .iter()
            .find(|a| a.client_id.eq_ignore_ascii_case(client_id))
    }

    /// A tenant by GUID or verified domain.
    pub fn tenant(&self, id_or_domain: &str) -> Option<&TenantRecord> {
        self.tenants
            .iter()
            .find(|t| t.id.eq_ignore_ascii_case(id_or_domain) || t.owns_domain(id_or_domain))
    }

    pub fn tenant_mut(&mut self, id_or_domain: &str) -> Option<&mut TenantRecord> {
        self.tenants
            .iter_mut()
            .find(|t| t.id.eq_ignore_ascii_case(id_or_domain) || t.owns_domain(id_or_domain))
    }

    /// A user of any tenant by object id or UPN, with its tenant.
    pub fn find_user(&self, id_or_upn: &str) -> Option<(&TenantRecord, &UserRecord)> {
        self.tenants
            .iter()
            .find_map(|t| t.user(id_or_upn).map(|u| (t, u)))
    }
}
