//! A connected user: who they are, what they granted, what they switched on, and
//! whether background work may run for them (status, reason, parked-until times).

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::DomainError;
use super::ids::{TenantId, UserId, UserKey};
use super::scopes::{Feature, ScopeSet};
use super::sync::SyncKind;

/// Whether background work runs for a connection. Only `active` connections are fanned out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    Active,
    /// The refresh token stopped working (`invalid_grant`, 401 after a refresh): the user signs in again.
    ReauthRequired,
    /// The grant was withdrawn (65001, 700016, 403 on a granted scope): an admin or the user consents again.
    ConsentRevoked,
    /// The mailbox cannot be reached through Graph (on-premises, `MailboxNotEnabledForRESTAPI`).
    MailboxUnsupported,
    /// The user or an operator disconnected; secret, cursors and imported data are gone.
    Disconnected,
}

impl ConnectionStatus {
    pub const ALL: [ConnectionStatus; 5] = [
        ConnectionStatus::Active,
        ConnectionStatus::ReauthRequired,
        ConnectionStatus::ConsentRevoked,
        ConnectionStatus::MailboxUnsupported,
        ConnectionStatus::Disconnected,
    ];

    /// The stored form, also the status part of the `ByStatusShard` index key (`{status}#{shard}`).
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionStatus::Active => "active",
            ConnectionStatus::ReauthRequired => "reauth_required",
            ConnectionStatus::ConsentRevoked => "consent_revoked",
            ConnectionStatus::MailboxUnsupported => "mailbox_unsupported",
            ConnectionStatus::Disconnected => "disconnected",
        }
    }

    pub fn parse(value: &str) -> Result<Self, DomainError> {
        ConnectionStatus::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(value.trim()))
            .ok_or_else(|| DomainError::UnknownVariant {
                what: "connection status",
                value: value.chars().take(32).collect(),
            })
    }
}

impl fmt::Display for ConnectionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ConnectionStatus {
    type Err = DomainError;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        ConnectionStatus::parse(value)
    }
}

/// A status change: the new status, a machine-readable reason code (e.g. `invalid_grant`,
/// `AADSTS65001`, `MailboxNotEnabledForRESTAPI`, `user_disconnected`) and when it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusChange {
    pub status: ConnectionStatus,
    pub reason: Option<String>,
    pub at: OffsetDateTime,
}

impl StatusChange {
    pub fn new(status: ConnectionStatus, reason: Option<&str>, at: OffsetDateTime) -> Self {
        Self {
            status,
            reason: reason.map(str::to_owned),
            at,
        }
    }
}

/// Switches a user controls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserSwitches {
    pub mail_sync: bool,
    pub calendar_sync: bool,
    /// Import meetings whose participants are all internal (the tenant's verified domains).
    pub internal_meetings: bool,
}

impl Default for UserSwitches {
    fn default() -> Self {
        Self {
            mail_sync: true,
            calendar_sync: true,
            internal_meetings: false,
        }
    }
}

/// Per-feature time before which a parked (throttled) sync is not fanned out again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParkedUntil {
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub mail: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub calendar: Option<OffsetDateTime>,
}

impl ParkedUntil {
    pub fn get(&self, kind: SyncKind) -> Option<OffsetDateTime> {
        match kind {
            SyncKind::Mail => self.mail,
            SyncKind::Calendar => self.calendar,
        }
    }

    pub fn set(&mut self, kind: SyncKind, until: Option<OffsetDateTime>) {
        match kind {
            SyncKind::Mail => self.mail = until,
            SyncKind::Calendar => self.calendar = until,
        }
    }
}

/// One row of the connections table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    /// For display and `login_hint` only; never an identity.
    pub upn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// What the user's last token carried.
    #[serde(default)]
    pub granted_scopes: ScopeSet,
    #[serde(default)]
    pub switches: UserSwitches,
    pub status: ConnectionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub status_changed_at: OffsetDateTime,
    #[serde(default)]
    pub parked_until: ParkedUntil,
    /// Name of the user's refresh-token secret (`office365/{tenantId}/{userObjectId}`).
    pub secret_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl Connection {
    /// A freshly signed-in user: active, default switches, nothing parked.
    pub fn new_active(
        tenant_id: TenantId,
        user_id: UserId,
        upn: impl Into<String>,
        granted_scopes: ScopeSet,
        now: OffsetDateTime,
    ) -> Self {
        let secret_id = token_secret_name(&tenant_id, &user_id);
        Self {
            tenant_id,
            user_id,
            upn: upn.into(),
            mail: None,
            display_name: None,
            granted_scopes,
            switches: UserSwitches::default(),
            status: ConnectionStatus::Active,
            status_reason: None,
            status_changed_at: now,
            parked_until: ParkedUntil::default(),
            secret_id,
            created_at: now,
            updated_at: now,
        }
    }

    pub fn key(&self) -> UserKey {
        UserKey::new(self.tenant_id.clone(), self.user_id.clone())
    }

    pub fn apply(&mut self, change: &StatusChange) {
        self.status = change.status;
        self.status_reason.clone_from(&change.reason);
        self.status_changed_at = change.at;
        self.updated_at = change.at;
    }

    /// Whether the fan-out should enqueue a `kind` job for this user now: active, the
    /// user's switch on, the user's scopes allowing it, the tenant allowing it (when
    /// the tenant's features are given), and not parked past `now`.
    pub fn wants_sync(
        &self,
        kind: SyncKind,
        tenant_features: Option<&std::collections::BTreeSet<Feature>>,
        now: OffsetDateTime,
    ) -> bool {
        let feature = kind.feature();
        let switched_on = match kind {
            SyncKind::Mail => self.switches.mail_sync,
            SyncKind::Calendar => self.switches.calendar_sync,
        };
        let tenant_allows = tenant_features.is_none_or(|features| features.contains(&feature));
        let not_parked = self.parked_until.get(kind).is_none_or(|until| until <= now);
        self.status == ConnectionStatus::Active
            && switched_on
            && feature.is_usable_with(&self.granted_scopes)
            && tenant_allows
            && not_parked
    }
}

/// Secrets Manager name of a user's refresh-token secret.
pub fn token_secret_name(tenant_id: &TenantId, user_id: &UserId) -> String {
    format!("office365/{tenant_id}/{user_id}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::domain::scopes::FeatureBundle;
    use time::macros::datetime;

    fn connection() -> Connection {
        Connection::new_active(
            TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").expect("guid"),
            UserId::parse("00000000-0000-0000-0000-0000000000aa").expect("guid"),
            "adele@contoso.com",
            FeatureBundle::All.scope_set(),
            datetime!(2026-03-01 8:00 UTC),
        )
    }

    #[test]
    fn secret_name_follows_the_contract() {
        let c = connection();
        assert_eq!(
            c.secret_id,
            "office365/72f988bf-86f1-41af-91ab-2d7cd011db47/00000000-0000-0000-0000-0000000000aa"
        );
    }

    #[test]
    fn fan_out_rules() {
        let now = datetime!(2026-03-01 9:00 UTC);
        let mut c = connection();
        assert!(c.wants_sync(SyncKind::Mail, None, now));

        let calendar_only = BTreeSet::from([Feature::SignIn, Feature::Calendar]);
        assert!(!c.wants_sync(SyncKind::Mail, Some(&calendar_only), now));
        assert!(c.wants_sync(SyncKind::Calendar, Some(&calendar_only), now));

        c.parked_until
            .set(SyncKind::Mail, Some(datetime!(2026-03-01 9:30 UTC)));
        assert!(!c.wants_sync(SyncKind::Mail, None, now));
        assert!(c.wants_sync(SyncKind::Mail, None, datetime!(2026-03-01 9:30 UTC)));
        assert!(c.wants_sync(SyncKind::Calendar, None, now));

        c.switches.calendar_sync = false;
        assert!(!c.wants_sync(SyncKind::Calendar, None, now));

        c.apply(&StatusChange::new(
            ConnectionStatus::ReauthRequired,
            Some("invalid_grant"),
            now,
        ));
        assert!(!c.wants_sync(SyncKind::Mail, None, datetime!(2026-03-02 0:00 UTC)));
        assert_eq!(c.status_reason.as_deref(), Some("invalid_grant"));
    }

    #[test]
    fn serialised_form_has_the_index_attributes() {
        let c = connection();
        let json = serde_json::to_value(&c).expect("serialises");
        assert_eq!(json["status"], "active");
        assert_eq!(json["tenantId"], "72f988bf-86f1-41af-91ab-2d7cd011db47");
        assert_eq!(json["switches"]["internalMeetings"], false);
        let back: Connection = serde_json::from_value(json).expect("round trips");
        assert_eq!(back, c);
        for status in ConnectionStatus::ALL {
            assert_eq!(
                ConnectionStatus::parse(status.as_str()).expect("parses"),
                status
            );
        }
    }
}
