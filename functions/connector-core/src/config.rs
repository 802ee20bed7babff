//! Configuration read from the environment once at start-up, failing fast with the name
//! of the variable that is missing or invalid. The variable names are fixed by
//! docs/data-model.md (tables, queues, secret) and DESIGN.md (Microsoft base URLs).
//!
//! Each part can be read alone (`Tables::from_lookup`, ...) so a tool reads only what it
//! needs; `Config` is what every function reads. `from_lookup` takes any
//! `Fn(&str) -> Option<String>`, so tests build a config from a map.

use std::fmt;

/// Environment variable names.
pub mod vars {
    pub const TENANTS_TABLE: &str = "TENANTS_TABLE";
    pub const CONNECTIONS_TABLE: &str = "CONNECTIONS_TABLE";
    pub const SYNC_STATE_TABLE: &str = "SYNC_STATE_TABLE";
    pub const ACTIVITIES_TABLE: &str = "ACTIVITIES_TABLE";
    pub const CRM_TABLE: &str = "CRM_TABLE";
    pub const AUTH_SESSIONS_TABLE: &str = "AUTH_SESSIONS_TABLE";
    pub const IDEMPOTENCY_TABLE: &str = "IDEMPOTENCY_TABLE";
    pub const SUBSCRIPTIONS_TABLE: &str = "SUBSCRIPTIONS_TABLE";
    pub const MAIL_SYNC_QUEUE_URL: &str = "MAIL_SYNC_QUEUE_URL";
    pub const CALENDAR_SYNC_QUEUE_URL: &str = "CALENDAR_SYNC_QUEUE_URL";
    pub const TEAMS_POST_QUEUE_URL: &str = "TEAMS_POST_QUEUE_URL";
    pub const SUBSCRIPTION_QUEUE_URL: &str = "SUBSCRIPTION_QUEUE_URL";
    pub const CLIENT_SECRET_ID: &str = "CLIENT_SECRET_ID";
    pub const CLIENT_ID: &str = "CLIENT_ID";
    /// `secret` (default) or `certificate`.
    pub const ENTRA_CREDENTIAL: &str = "ENTRA_CREDENTIAL";
    /// KMS key id or ARN of the certificate's private key (certificate credential).
    pub const CERTIFICATE_KMS_KEY_ID: &str = "CERTIFICATE_KMS_KEY_ID";
    /// The certificate's thumbprint in hex: SHA-256 (64 digits) or SHA-1 (40).
    pub const CERTIFICATE_THUMBPRINT: &str = "CERTIFICATE_THUMBPRINT";
    pub const LOGIN_BASE_URL: &str = "LOGIN_BASE_URL";
    pub const GRAPH_BASE_URL: &str = "GRAPH_BASE_URL";
    pub const PUBLIC_BASE_URL: &str = "PUBLIC_BASE_URL";
    pub const APP_BASE_URL: &str = "APP_BASE_URL";
    pub const ACTIVITY_RETENTION_DAYS: &str = "ACTIVITY_RETENTION_DAYS";
    /// mail-sync and connectorctl: the S3 bucket of message bodies.
    pub const MESSAGE_BODIES_BUCKET: &str = "MESSAGE_BODIES_BUCKET";
}

/// `ACTIVITY_RETENTION_DAYS` (1-3650): the default lifetime of an imported activity, which
/// a tenant's `activityRetentionDays` overrides (docs/data-retention.md). Unset: activities
/// get no expiry (tools and tests that write activities without the template's
/// environment).
pub fn activity_retention_days(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<u32>, ConfigError> {
    let name = vars::ACTIVITY_RETENTION_DAYS;
    match lookup(name).filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(value) => match value.trim().parse::<u32>() {
            Ok(days) if (1..=3650).contains(&days) => Ok(Some(days)),
            _ => Err(ConfigError::Invalid {
                name,
                reason: "expected a whole number of days, 1-3650".into(),
            }),
        },
    }
}

/// A variable that is missing or unusable. The value itself is never echoed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {name} is not set")]
    Missing { name: &'static str },
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Reads one required variable; empty counts as missing.
pub fn required(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<String, ConfigError> {
    match lookup(name) {
        Some(value) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
        _ => Err(ConfigError::Missing { name }),
    }
}

/// Reads a DynamoDB table name and checks it against DynamoDB's naming rules.
pub fn table_name(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<String, ConfigError> {
    let value = required(lookup, name)?;
    let valid_chars = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !(3..=255).contains(&value.len()) || !valid_chars {
        return Err(ConfigError::Invalid {
            name,
            reason: "a DynamoDB table name is 3-255 characters of a-z, A-Z, 0-9, '_', '-', '.'"
                .into(),
        });
    }
    Ok(value)
}

/// Reads an S3 bucket name and checks it against S3's naming rules (3-63 characters of
/// a-z, 0-9, '.', '-', starting and ending with a letter or digit).
pub fn bucket_name(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<String, ConfigError> {
    let value = required(lookup, name)?;
    let valid_chars = value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-'));
    let edges = value
        .chars()
        .next()
        .zip(value.chars().last())
        .is_some_and(|(a, b)| a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric());
    if !(3..=63).contains(&value.len()) || !valid_chars || !edges {
        return Err(ConfigError::Invalid {
            name,
            reason: "an S3 bucket name is 3-63 characters of a-z, 0-9, '.', '-'".into(),
        });
    }
    Ok(value)
}

/// An absolute http(s) URL without query or fragment, kept without a trailing slash so
/// paths are appended with `format!("{base}/...")`.
#[derive(Clone, PartialEq, Eq)]
pub struct BaseUrl(String);

impl BaseUrl {
    pub fn parse(value: &str) -> Result<Self, String> {
        let url = url::Url::parse(value.trim()).map_err(|error| error.to_string())?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("must be an http or https URL".into());
        }
        if url.cannot_be_a_base() || url.host_str().is_none() {
            return Err("must be an absolute URL with a host".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("must not have a query or fragment".into());
        }
        Ok(Self(url.as_str().trim_end_matches('/').to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `{base}/{path}` with exactly one slash between.
    pub fn join(&self, path: &str) -> String {
        format!("{}/{}", self.0, path.trim_start_matches('/'))
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BaseUrl({})", self.0)
    }
}

fn base_url(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<BaseUrl, ConfigError> {
    let value = required(lookup, name)?;
    BaseUrl::parse(&value).map_err(|reason| ConfigError::Invalid { name, reason })
}

fn queue_url(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<String, ConfigError> {
    let value = required(lookup, name)?;
    match url::Url::parse(&value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
            Ok(value)
        }
        _ => Err(ConfigError::Invalid {
            name,
            reason:
                "must be an SQS queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>)"
                    .into(),
        }),
    }
}

/// Physical names of the DynamoDB tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tables {
    pub tenants: String,
    pub connections: String,
    pub sync_state: String,
    pub activities: String,
    pub crm: String,
    pub auth_sessions: String,
    pub idempotency: String,
    /// Change-notification subscriptions (`notifications`).
    pub subscriptions: String,
}

impl Tables {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            tenants: table_name(&lookup, vars::TENANTS_TABLE)?,
            connections: table_name(&lookup, vars::CONNECTIONS_TABLE)?,
            sync_state: table_name(&lookup, vars::SYNC_STATE_TABLE)?,
            activities: table_name(&lookup, vars::ACTIVITIES_TABLE)?,
            crm: table_name(&lookup, vars::CRM_TABLE)?,
            auth_sessions: table_name(&lookup, vars::AUTH_SESSIONS_TABLE)?,
            idempotency: table_name(&lookup, vars::IDEMPOTENCY_TABLE)?,
            subscriptions: table_name(&lookup, vars::SUBSCRIPTIONS_TABLE)?,
        })
    }
}

/// URLs of the SQS queues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queues {
    pub mail_sync: String,
    pub calendar_sync: String,
    pub teams_post: String,
    /// The subscriptions function's jobs (`messages::SubscriptionJob`).
    pub subscriptions: String,
}

impl Queues {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            mail_sync: queue_url(&lookup, vars::MAIL_SYNC_QUEUE_URL)?,
            calendar_sync: queue_url(&lookup, vars::CALENDAR_SYNC_QUEUE_URL)?,
            teams_post: queue_url(&lookup, vars::TEAMS_POST_QUEUE_URL)?,
            subscriptions: queue_url(&lookup, vars::SUBSCRIPTION_QUEUE_URL)?,
        })
    }

    pub fn sync_queue(&self, kind: crate::domain::SyncKind) -> &str {
        match kind {
            crate::domain::SyncKind::Mail => &self.mail_sync,
            crate::domain::SyncKind::Calendar => &self.calendar_sync,
        }
    }
}

/// How the app authenticates at the token endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    /// The client secret of `CLIENT_SECRET_ID`.
    Secret,
    /// A certificate whose private key is the KMS key `kms_key_id`; `thumbprint` as the
    /// certificate registered on the app shows it.
    Certificate {
        kms_key_id: String,
        thumbprint: crate::credential::Thumbprint,
    },
}

/// The Entra app and the Microsoft endpoints (production or microsoft-sim).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Microsoft {
    /// The application (client) id.
    pub client_id: String,
    /// Secrets Manager id (name or ARN) of the client secret value. Empty with a
    /// certificate credential when the variable is not set.
    pub client_secret_id: String,
    pub credential: CredentialKind,
    /// `https://login.microsoftonline.com` in production.
    pub login_base_url: BaseUrl,
    /// `https://graph.microsoft.com` in production (the `/v1.0` is added by callers).
    pub graph_base_url: BaseUrl,
}

impl Microsoft {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let client_id = required(&lookup, vars::CLIENT_ID)?;
        if client_id.chars().any(char::is_whitespace) {
            return Err(ConfigError::Invalid {
                name: vars::CLIENT_ID,
                reason: "must be the application (client) id".into(),
            });
        }
        let credential = match lookup(vars::ENTRA_CREDENTIAL)
            .map(|value| value.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("") | Some("secret") => CredentialKind::Secret,
            Some("certificate") => CredentialKind::Certificate {
                kms_key_id: required(&lookup, vars::CERTIFICATE_KMS_KEY_ID)?,
                thumbprint: crate::credential::Thumbprint::parse_hex(&required(
                    &lookup,
                    vars::CERTIFICATE_THUMBPRINT,
                )?)
                .map_err(|reason| ConfigError::Invalid {
                    name: vars::CERTIFICATE_THUMBPRINT,
                    reason,
                })?,
            },
            Some(_) => {
                return Err(ConfigError::Invalid {
                    name: vars::ENTRA_CREDENTIAL,
                    reason: "must be secret or certificate".into(),
                });
            }
        };
        let client_secret_id = match credential {
            CredentialKind::Secret => required(&lookup, vars::CLIENT_SECRET_ID)?,
            CredentialKind::Certificate { .. } => {
                required(&lookup, vars::CLIENT_SECRET_ID).unwrap_or_default()
            }
        };
        Ok(Self {
            client_id,
            client_secret_id,
            credential,
            login_base_url: base_url(&lookup, vars::LOGIN_BASE_URL)?,
            graph_base_url: base_url(&lookup, vars::GRAPH_BASE_URL)?,
        })
    }
}

/// What every function reads at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub tables: Tables,
    pub queues: Queues,
    pub microsoft: Microsoft,
    /// `ACTIVITY_RETENTION_DAYS`, see [`activity_retention_days`].
    pub activity_retention_days: Option<u32>,
    /// `PUBLIC_BASE_URL` (the HTTP API), when set: Explicit Consent Mode's placeholder and
    /// consent links are on it (calendar-sync, the platform API).
    pub public_base_url: Option<BaseUrl>,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            tables: Tables::from_lookup(&lookup)?,
            queues: Queues::from_lookup(&lookup)?,
            microsoft: Microsoft::from_lookup(&lookup)?,
            activity_retention_days: activity_retention_days(&lookup)?,
            public_base_url: match lookup(vars::PUBLIC_BASE_URL) {
                Some(_) => Some(base_url(&lookup, vars::PUBLIC_BASE_URL)?),
                None => None,
            },
        })
    }
}

/// The web-facing function's extra settings (consent-callback): where users are sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebConfig {
    /// Our own public base URL; redirect URIs are built from it.
    pub public_base_url: BaseUrl,
    /// The platform's app; the only place a finished sign-in redirects to.
    pub app_base_url: BaseUrl,
}

impl WebConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            public_base_url: base_url(&lookup, vars::PUBLIC_BASE_URL)?,
            app_base_url: base_url(&lookup, vars::APP_BASE_URL)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn activity_retention_days_is_optional_and_bounded() {
        let lookup = |value: &'static str| move |_: &str| Some(value.to_owned());
        assert_eq!(activity_retention_days(|_| None).unwrap(), None);
        assert_eq!(activity_retention_days(lookup("730")).unwrap(), Some(730));
        for bad in ["0", "3651", "two years", "-1"] {
            assert!(
                matches!(
                    activity_retention_days(lookup(bad)),
                    Err(ConfigError::Invalid {
                        name: "ACTIVITY_RETENTION_DAYS",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }

    fn full() -> HashMap<&'static str, String> {
        let mut env = HashMap::new();
        for (name, value) in [
            (vars::TENANTS_TABLE, "t-tenants"),
            (vars::CONNECTIONS_TABLE, "t-connections"),
            (vars::SYNC_STATE_TABLE, "t-sync"),
            (vars::ACTIVITIES_TABLE, "t-activities"),
            (vars::CRM_TABLE, "t-crm"),
            (vars::AUTH_SESSIONS_TABLE, "t-sessions"),
            (vars::IDEMPOTENCY_TABLE, "t-idem"),
            (vars::SUBSCRIPTIONS_TABLE, "t-subscriptions"),
            (
                vars::SUBSCRIPTION_QUEUE_URL,
                "http://127.0.0.1:5000/123456789012/subscriptions",
            ),
            (
                vars::MAIL_SYNC_QUEUE_URL,
                "http://127.0.0.1:5000/123456789012/mail",
            ),
            (
                vars::CALENDAR_SYNC_QUEUE_URL,
                "http://127.0.0.1:5000/123456789012/cal",
            ),
            (
                vars::TEAMS_POST_QUEUE_URL,
                "http://127.0.0.1:5000/123456789012/teams",
            ),
            (vars::CLIENT_SECRET_ID, "office365/client-secret"),
            (vars::CLIENT_ID, "11111111-2222-3333-4444-555555555555"),
            (vars::LOGIN_BASE_URL, "http://127.0.0.1:7000/"),
            (vars::GRAPH_BASE_URL, "https://graph.microsoft.com"),
        ] {
            env.insert(name, value.to_owned());
        }
        env
    }

    fn load(env: &HashMap<&'static str, String>) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| env.get(name).cloned())
    }

    #[test]
    fn reads_every_variable() {
        let config = load(&full()).expect("complete");
        assert_eq!(config.tables.crm, "t-crm");
        assert_eq!(
            config.microsoft.login_base_url.as_str(),
            "http://127.0.0.1:7000"
        );
        assert_eq!(
            config
                .microsoft
                .login_base_url
                .join("/common/v2.0/adminconsent"),
            "http://127.0.0.1:7000/common/v2.0/adminconsent"
        );
        assert_eq!(
            config.queues.sync_queue(crate::domain::SyncKind::Calendar),
            "http://127.0.0.1:5000/123456789012/cal"
        );
    }

    #[test]
    fn every_missing_variable_is_named() {
        for name in full().keys() {
            let mut env = full();
            env.remove(name);
            let error = load(&env).expect_err("incomplete");
            assert!(
                matches!(error, ConfigError::Missing { name: missing } if missing == *name),
                "{error}"
            );
            assert!(error.to_string().contains(name));
        }
        let mut env = full();
        env.insert(vars::CRM_TABLE, "   ".into());
        assert!(matches!(
            load(&env),
            Err(ConfigError::Missing {
                name: vars::CRM_TABLE
            })
        ));
    }

    #[test]
    fn the_credential_is_the_secret_unless_a_certificate_is_configured() {
        let config = load(&full()).expect("complete");
        assert_eq!(config.microsoft.credential, CredentialKind::Secret);

        let mut env = full();
        env.remove(vars::CLIENT_SECRET_ID);
        env.insert(vars::ENTRA_CREDENTIAL, "certificate".into());
        let arn = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        env.insert(vars::CERTIFICATE_KMS_KEY_ID, arn.into());
        env.insert(vars::CERTIFICATE_THUMBPRINT, "AB".repeat(32));
        let config = load(&env).expect("a certificate needs no client secret");
        assert_eq!(
            config.microsoft.credential,
            CredentialKind::Certificate {
                kms_key_id: arn.into(),
                thumbprint: crate::credential::Thumbprint::parse_hex(&"ab".repeat(32))
                    .expect("hex"),
            }
        );
        assert_eq!(config.microsoft.client_secret_id, "");

        for (name, value) in [
            (vars::CERTIFICATE_THUMBPRINT, "not-hex"),
            (vars::ENTRA_CREDENTIAL, "password"),
        ] {
            let mut bad = env.clone();
            bad.insert(name, value.into());
            assert!(
                matches!(load(&bad), Err(ConfigError::Invalid { name: invalid, .. }) if invalid == name)
            );
        }
        for name in [vars::CERTIFICATE_THUMBPRINT, vars::CERTIFICATE_KMS_KEY_ID] {
            let mut missing = env.clone();
            missing.remove(name);
            assert!(
                matches!(load(&missing), Err(ConfigError::Missing { name: gone }) if gone == name)
            );
        }
    }

    #[test]
    fn invalid_values_are_named_without_echoing_them() {
        for (name, value) in [
            (vars::TENANTS_TABLE, "bad table!"),
            (vars::MAIL_SYNC_QUEUE_URL, "mail-queue"),
            (vars::LOGIN_BASE_URL, "ftp://login.example"),
            (vars::GRAPH_BASE_URL, "https://graph.microsoft.com/?x=1"),
            (vars::CLIENT_ID, "a b"),
        ] {
            let mut env = full();
            env.insert(name, value.to_owned());
            let error = load(&env).expect_err("invalid");
            assert!(
                matches!(error, ConfigError::Invalid { name: invalid, .. } if invalid == name),
                "{error}"
            );
            assert!(!error.to_string().contains(value), "{error}");
        }
    }

    #[test]
    fn web_config() {
        let env = HashMap::from([
            (
                vars::PUBLIC_BASE_URL,
                "https://connector.example.com/".to_owned(),
            ),
            (
                vars::APP_BASE_URL,
                "https://app.example.com/home".to_owned(),
            ),
        ]);
        let web = WebConfig::from_lookup(|name| env.get(name).cloned()).expect("complete");
        assert_eq!(
            web.public_base_url.join("auth/callback"),
            "https://connector.example.com/auth/callback"
        );
        assert_eq!(web.app_base_url.as_str(), "https://app.example.com/home");
        let error = WebConfig::from_lookup(|_| None).expect_err("missing");
        assert!(error.to_string().contains("PUBLIC_BASE_URL"));
    }
}
