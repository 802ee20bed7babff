//! Redacting wrappers for every secret the connector handles: refresh and access tokens,
//! the app's client secret, PKCE verifiers, authorization codes, and any other string
//! that must never reach a log.
//!
//! Each type's `Debug` prints `[redacted]`; there is no `Display` (so `{}` does not
//! compile) and no `PartialEq` (so a comparison cannot leak timing or tempt logging);
//! the value is reached only through `.secret()`. Types that are stored serialize as a
//! plain string, because the value has to reach the store.
//!
//! ```compile_fail
//! // No Display: a secret cannot be interpolated with `{}`.
//! let token = connector_core::secret::RefreshToken::new("x");
//! let _ = format!("{token}");
//! ```
//!
//! ```compile_fail
//! // No PartialEq.
//! use connector_core::secret::AccessToken;
//! let _ = AccessToken::new("x") == AccessToken::new("x");
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::domain::ScopeSet;

macro_rules! secret_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The value itself. Every call site is a place where the secret leaves its wrapper.
            pub fn secret(&self) -> &str {
                &self.0
            }

            pub fn into_secret(self) -> String {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }
    };
}

macro_rules! stored_secret_type {
    ($(#[$doc:meta])* $name:ident) => {
        secret_type!($(#[$doc])* $name);

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer).map(Self)
            }
        }
    };
}

stored_secret_type!(
    /// Any secret string without a more specific type.
    SecretString
);
stored_secret_type!(
    /// A Microsoft refresh token; kept in Secrets Manager only.
    RefreshToken
);
stored_secret_type!(
    /// A PKCE `code_verifier`, kept in the auth-session record until the callback.
    PkceVerifier
);
secret_type!(
    /// A Microsoft access token (a bearer credential for Graph); held in memory only.
    AccessToken
);
secret_type!(
    /// The Entra app's client secret value, read from Secrets Manager at start-up.
    ClientSecret
);
secret_type!(
    /// An authorization code from a callback, exchanged once.
    AuthCode
);

/// The value of a user's token secret (`office365/{tenantId}/{userObjectId}`), stored as
/// JSON: `{"refreshToken": "...", "scopes": [...], "updatedAt": "..."}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    pub refresh_token: RefreshToken,
    #[serde(default)]
    pub scopes: ScopeSet,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUE: &str = "0.AAAA-super-secret-value-xyz";

    #[derive(Debug)]
    #[allow(dead_code)]
    struct Holder {
        refresh: RefreshToken,
        access: AccessToken,
        client: ClientSecret,
        verifier: PkceVerifier,
        code: AuthCode,
        other: SecretString,
        nested: Option<Vec<RefreshToken>>,
    }

    #[test]
    fn debug_and_formatting_never_show_the_value() {
        let holder = Holder {
            refresh: RefreshToken::new(VALUE),
            access: AccessToken::new(VALUE),
            client: ClientSecret::new(VALUE),
            verifier: PkceVerifier::new(VALUE),
            code: AuthCode::new(VALUE),
            other: SecretString::new(VALUE),
            nested: Some(vec![RefreshToken::new(VALUE)]),
        };
        for rendered in [
            format!("{holder:?}"),
            format!("{holder:#?}"),
            format!("{:?}", holder.refresh),
            format!("{:>80?}", holder.access),
            format!("{:?}", Some(&holder.client)),
        ] {
            assert!(!rendered.contains(VALUE), "leaked in {rendered}");
            assert!(
                !rendered.contains("super-secret"),
                "partly leaked in {rendered}"
            );
            assert!(rendered.contains("[redacted]"), "{rendered}");
        }
        assert_eq!(format!("{:?}", holder.code), "AuthCode([redacted])");
        assert_eq!(holder.refresh.secret(), VALUE);

        let record = TokenRecord {
            refresh_token: RefreshToken::new(VALUE),
            scopes: ScopeSet::parse("offline_access Mail.Read"),
            updated_at: OffsetDateTime::UNIX_EPOCH,
        };
        assert!(!format!("{record:?}").contains(VALUE));
    }

    #[test]
    fn stored_types_serialise_the_value_for_the_store() {
        let record = TokenRecord {
            refresh_token: RefreshToken::new(VALUE),
            scopes: ScopeSet::parse("offline_access Mail.Read"),
            updated_at: OffsetDateTime::UNIX_EPOCH,
        };
        let json = serde_json::to_value(&record).expect("serialises");
        assert_eq!(json["refreshToken"], VALUE);
        assert_eq!(
            json["scopes"],
            serde_json::json!(["offline_access", "Mail.Read"])
        );
        let back: TokenRecord = serde_json::from_value(json).expect("deserialises");
        assert_eq!(back.refresh_token.secret(), VALUE);
    }
}
