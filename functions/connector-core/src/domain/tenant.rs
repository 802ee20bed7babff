//! A customer tenant as far as consent is concerned: how its users consent, what its
//! administrator granted, and whether that grant has been confirmed by a validated token.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::DomainError;
use super::ids::TenantId;
use super::scopes::{Feature, FeatureBundle, ScopeSet};
use super::sync::SyncKind;

/// How users of a tenant come to grant our scopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentMode {
    /// An administrator granted tenant-wide consent; users are never prompted (`.default`).
    Preauthorized,
    /// Each user consents to the feature scopes at sign-in.
    UserConsent,
}

impl ConsentMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentMode::Preauthorized => "preauthorized",
            ConsentMode::UserConsent => "user_consent",
        }
    }

    pub fn parse(value: &str) -> Result<Self, DomainError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "preauthorized" => Ok(ConsentMode::Preauthorized),
            "user_consent" => Ok(ConsentMode::UserConsent),
            _ => Err(DomainError::UnknownVariant {
                what: "consent mode",
                value: value.chars().take(32).collect(),
            }),
        }
    }
}

impl fmt::Display for ConsentMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The admin-consent callback's `tenant` can be forged, so a grant is only `reported`
/// until a validated id_token from that tenant `confirmed` it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentState {
    Reported,
    Confirmed,
}

impl ConsentState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentState::Reported => "reported",
            ConsentState::Confirmed => "confirmed",
        }
    }
}

impl fmt::Display for ConsentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a tenant's administrator turned on (the `/admin` page, the platform API). Each
/// one is a ceiling over the users' own switches: a user's mail sync runs only when both
/// allow it. A record written before these existed reads as the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TenantSwitches {
    /// Email import for the tenant's users ("if enabled by your admin").
    pub mail_sync: bool,
    /// Meeting import for the tenant's users.
    pub calendar_sync: bool,
    /// Posting to Teams channels and chats on users' behalf.
    pub teams_sharing: bool,
    /// Explicit Consent Mode (recording consent collected through the meeting invite).
    pub explicit_consent: bool,
    /// Graph change notifications for the users' mail and calendars (changes arrive in
    /// seconds; the schedules poll subscribed users less often). On by default.
    pub change_notifications: bool,
}

impl TenantSwitches {
    /// Whether the administrator lets the tenant's users import `kind`.
    pub fn allows(self, kind: SyncKind) -> bool {
        match kind {
            SyncKind::Mail => self.mail_sync,
            SyncKind::Calendar => self.calendar_sync,
        }
    }
}

impl Default for TenantSwitches {
    fn default() -> Self {
        Self {
            mail_sync: true,
            calendar_sync: true,
            teams_sharing: true,
            explicit_consent: false,
            change_notifications: true,
        }
    }
}

/// One row of the tenants table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    pub tenant_id: TenantId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Lower-case DNS names; the tenant's own addresses never count as CRM matches and
    /// define what an "internal" meeting is.
    #[serde(default)]
    pub verified_domains: BTreeSet<String>,
    pub consent_mode: ConsentMode,
    #[serde(default)]
    pub granted_bundles: BTreeSet<FeatureBundle>,
    #[serde(default)]
    pub granted_scopes: ScopeSet,
    pub consent_state: ConsentState,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub consented_at: Option<OffsetDateTime>,
    /// Who granted it, as far as we know (an admin's UPN or object id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consented_by: Option<String>,
    /// How many days the tenant's imported activities are kept, counted from each one's
    /// own date; `None`: the stack's `ActivityRetentionDays` (docs/data-retention.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_retention_days: Option<u32>,
    /// The administrator's switches.
    #[serde(default)]
    pub switches: TenantSwitches,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl Tenant {
    /// A tenant seen for the first time, nothing granted yet.
    pub fn new(tenant_id: TenantId, consent_mode: ConsentMode, now: OffsetDateTime) -> Self {
        Self {
            tenant_id,
            display_name: None,
            verified_domains: BTreeSet::new(),
            consent_mode,
            granted_bundles: BTreeSet::new(),
            granted_scopes: ScopeSet::new(),
            consent_state: ConsentState::Reported,
            consented_at: None,
            consented_by: None,
            activity_retention_days: None,
            switches: TenantSwitches::default(),
            updated_at: now,
        }
    }

    /// Records an admin consent for `bundle`. Grants accumulate: consenting `mail` after
    /// `calendar` leaves both granted. A new report never downgrades a confirmed tenant.
    pub fn record_admin_consent(
        &mut self,
        bundle: FeatureBundle,
        granted: &ScopeSet,
        by: Option<String>,
        now: OffsetDateTime,
    ) {
        self.consent_mode = ConsentMode::Preauthorized;
        self.granted_bundles.insert(bundle);
        let requested = if granted.is_empty() {
            bundle.scope_set()
        } else {
            granted.clone()
        };
        self.granted_scopes = self.granted_scopes.union(&requested);
        self.consented_at = Some(now);
        if by.is_some() {
            self.consented_by = by;
        }
        self.updated_at = now;
    }

    /// A validated id_token from this tenant proves the tenant is real.
    pub fn confirm(&mut self, now: OffsetDateTime) {
        self.consent_state = ConsentState::Confirmed;
        self.updated_at = now;
    }

    /// Features the tenant-wide grant makes usable.
    pub fn features(&self) -> BTreeSet<Feature> {
        self.granted_scopes.usable_features()
    }

    pub fn has_feature(&self, feature: Feature) -> bool {
        feature.is_usable_with(&self.granted_scopes)
    }

    /// Whether `domain` (any case) is one of the tenant's verified domains.
    pub fn is_internal_domain(&self, domain: &str) -> bool {
        let domain = domain.trim().to_ascii_lowercase();
        self.verified_domains.contains(&domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn admin_consent_accumulates_and_confirmation_sticks() {
        let id = TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").expect("guid");
        let mut tenant = Tenant::new(id, ConsentMode::UserConsent, datetime!(2026-01-01 0:00 UTC));
        assert!(tenant.features().is_empty());

        tenant.record_admin_consent(
            FeatureBundle::Calendar,
            &ScopeSet::new(),
            Some("admin@contoso.com".into()),
            datetime!(2026-01-02 0:00 UTC),
        );
        tenant.confirm(datetime!(2026-01-02 0:01 UTC));
        tenant.record_admin_consent(
            FeatureBundle::Mail,
            &ScopeSet::parse(
                "openid profile email offline_access https://graph.microsoft.com/Mail.Read",
            ),
            None,
            datetime!(2026-01-03 0:00 UTC),
        );
        assert_eq!(tenant.consent_mode, ConsentMode::Preauthorized);
        assert_eq!(tenant.consent_state, ConsentState::Confirmed);
        assert_eq!(
            tenant.features(),
            BTreeSet::from([Feature::SignIn, Feature::Mail, Feature::Calendar])
        );
        assert_eq!(tenant.consented_by.as_deref(), Some("admin@contoso.com"));

        let json = serde_json::to_value(&tenant).expect("serialises");
        assert_eq!(json["consentMode"], "preauthorized");
        assert_eq!(json["consentState"], "confirmed");
        assert_eq!(
            json["grantedBundles"],
            serde_json::json!(["calendar", "mail"])
        );
        let back: Tenant = serde_json::from_value(json).expect("round trips");
        assert_eq!(back, tenant);
    }

    #[test]
    fn consent_mode_parses() {
        assert_eq!(
            ConsentMode::parse("USER_CONSENT").expect("parses"),
            ConsentMode::UserConsent
        );
        assert!(ConsentMode::parse("admin").is_err());
    }
}
