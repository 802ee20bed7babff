//! Identifiers of tenants and users as Microsoft issues them (`tid` and `oid`), and
//! the composite keys the tables are built on.
//!
//! Both are GUIDs; they are validated and lower-cased when built so that the same
//! tenant or user can never appear under two spellings in a key.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::DomainError;

macro_rules! guid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses a GUID in any case, with or without braces; stores it lower-case, hyphenated.
            pub fn parse(value: &str) -> Result<Self, DomainError> {
                let trimmed = value.trim().trim_start_matches('{').trim_end_matches('}');
                uuid::Uuid::try_parse(trimmed)
                    .map(|id| Self(id.hyphenated().to_string()))
                    .map_err(|source| DomainError::InvalidId {
                        what: $what,
                        value: value.chars().take(64).collect(),
                        source,
                    })
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = DomainError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = DomainError;
            fn from_str(value: &str) -> Result<Self, Self::Err> {
                Self::parse(value)
            }
        }
    };
}

guid_id!(
    /// An Entra ID tenant (`tid`).
    TenantId,
    "tenant id"
);
guid_id!(
    /// A user's object id in its home tenant (`oid`). Users are never identified by mail or UPN.
    UserId,
    "user object id"
);

/// A connected user: tenant + object id. Renders as `{tenantId}#{userId}`, the form used
/// by the `ByStatus` index (`connectionKey`) and the activities table (`owner`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserKey {
    pub tenant_id: TenantId,
    pub user_id: UserId,
}

impl UserKey {
    pub fn new(tenant_id: TenantId, user_id: UserId) -> Self {
        Self { tenant_id, user_id }
    }

    /// Parses `{tenantId}#{userId}`.
    pub fn parse(value: &str) -> Result<Self, DomainError> {
        let (tenant, user) = value
            .split_once('#')
            .ok_or_else(|| DomainError::InvalidKey {
                what: "user key",
                value: value.chars().take(100).collect(),
            })?;
        Ok(Self::new(TenantId::parse(tenant)?, UserId::parse(user)?))
    }
}

impl fmt::Display for UserKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.tenant_id, self.user_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_normalised_and_validated() {
        let id = TenantId::parse("{72F988BF-86F1-41AF-91AB-2D7CD011DB47}").expect("valid guid");
        assert_eq!(id.as_str(), "72f988bf-86f1-41af-91ab-2d7cd011db47");
        assert!(TenantId::parse("contoso.com").is_err());
        assert!(UserId::parse("").is_err());
        let parsed: TenantId =
            serde_json::from_str("\"72F988BF-86F1-41AF-91AB-2D7CD011DB47\"").expect("deserialises");
        assert_eq!(parsed, id);
        assert!(serde_json::from_str::<UserId>("\"nope\"").is_err());
    }

    #[test]
    fn user_key_round_trips() {
        let key = UserKey::new(
            TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").expect("guid"),
            UserId::parse("00000000-0000-0000-0000-000000000001").expect("guid"),
        );
        let text = key.to_string();
        assert_eq!(
            text,
            "72f988bf-86f1-41af-91ab-2d7cd011db47#00000000-0000-0000-0000-000000000001"
        );
        assert_eq!(UserKey::parse(&text).expect("parses"), key);
        assert!(UserKey::parse("no-separator").is_err());
    }
}
