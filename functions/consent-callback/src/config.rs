//! The function's configuration: connector-core's [`Config`] and [`WebConfig`] plus the
//! settings only this function reads (`DEFAULT_FEATURES`, `APP_DISPLAY_NAME`), read once at
//! start-up and failing with the variable's name. Tests build it from a map.

use std::collections::BTreeSet;

use connector_core::config::{Config, ConfigError, WebConfig};
use connector_core::domain::{Feature, FeatureBundle};

/// Features an unknown tenant's users are asked for at sign-in (besides sign-in itself).
pub const DEFAULT_FEATURES: &str = "DEFAULT_FEATURES";
/// The product name shown on our pages.
pub const APP_DISPLAY_NAME: &str = "APP_DISPLAY_NAME";

const DEFAULT_DISPLAY_NAME: &str = "Office 365 connector";

#[derive(Clone, Debug)]
pub struct ConsentConfig {
    pub core: Config,
    pub web: WebConfig,
    /// Background features requested from users of tenants we do not know yet.
    pub default_features: BTreeSet<Feature>,
    pub app_display_name: String,
}

impl ConsentConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let core = Config::from_lookup(&lookup)?;
        let web = WebConfig::from_lookup(&lookup)?;
        let default_features = match lookup(DEFAULT_FEATURES) {
            Some(value) if !value.trim().is_empty() => parse_features(&value)?,
            _ => BTreeSet::from([Feature::Calendar]),
        };
        let app_display_name = match lookup(APP_DISPLAY_NAME) {
            Some(value) if !value.trim().is_empty() => {
                let value = value.trim().to_owned();
                if value.chars().count() > 80 || value.chars().any(char::is_control) {
                    return Err(ConfigError::Invalid {
                        name: APP_DISPLAY_NAME,
                        reason: "at most 80 printable characters".into(),
                    });
                }
                value
            }
            _ => DEFAULT_DISPLAY_NAME.to_owned(),
        };
        Ok(Self {
            core,
            web,
            default_features,
            app_display_name,
        })
    }

    /// Cookies get `Secure` and the `__Host-` prefix only when browsers reach us over https.
    pub fn secure_cookies(&self) -> bool {
        self.web.public_base_url.as_str().starts_with("https://")
    }

    pub fn client_id(&self) -> &str {
        &self.core.microsoft.client_id
    }

    /// Our admin-consent redirect URI, as registered on the app.
    pub fn admin_consent_redirect_uri(&self) -> String {
        self.web.public_base_url.join("consent/callback")
    }

    /// Our sign-in redirect URI, as registered on the app.
    pub fn sign_in_redirect_uri(&self) -> String {
        self.web.public_base_url.join("auth/callback")
    }
}

/// `calendar,mail` (commas or spaces): the background features of the bundles named.
/// `sign_in`/`auth` are accepted and implied anyway.
fn parse_features(value: &str) -> Result<BTreeSet<Feature>, ConfigError> {
    let mut features = BTreeSet::new();
    for word in value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|word| !word.is_empty())
    {
        let bundle = match word.to_ascii_lowercase().as_str() {
            "sign_in" => FeatureBundle::Auth,
            other => FeatureBundle::parse(other).map_err(|_| ConfigError::Invalid {
                name: DEFAULT_FEATURES,
                reason: "a list of auth, calendar, mail, teams or all".into(),
            })?,
        };
        features.extend(bundle.features());
    }
    features.remove(&Feature::SignIn);
    Ok(features)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;

    use super::*;

    pub(crate) fn env() -> HashMap<String, String> {
        [
            ("TENANTS_TABLE", "t-tenants"),
            ("CONNECTIONS_TABLE", "t-connections"),
            ("SYNC_STATE_TABLE", "t-sync"),
            ("ACTIVITIES_TABLE", "t-activities"),
            ("CRM_TABLE", "t-crm"),
            ("AUTH_SESSIONS_TABLE", "t-sessions"),
            ("IDEMPOTENCY_TABLE", "t-idem"),
            (
                "MAIL_SYNC_QUEUE_URL",
                "http://127.0.0.1:5000/123456789012/mail",
            ),
            (
                "CALENDAR_SYNC_QUEUE_URL",
                "http://127.0.0.1:5000/123456789012/cal",
            ),
            (
                "TEAMS_POST_QUEUE_URL",
                "http://127.0.0.1:5000/123456789012/teams",
            ),
            ("SUBSCRIPTIONS_TABLE", "t-subscriptions"),
            (
                "SUBSCRIPTION_QUEUE_URL",
                "http://127.0.0.1:5000/123456789012/subscriptions",
            ),
            ("CLIENT_SECRET_ID", "stack/entra-client-secret"),
            ("CLIENT_ID", "11111111-2222-3333-4444-555555555555"),
            ("LOGIN_BASE_URL", "https://login.microsoftonline.com"),
            ("GRAPH_BASE_URL", "https://graph.microsoft.com"),
            ("PUBLIC_BASE_URL", "https://connector.example.com"),
            ("APP_BASE_URL", "https://app.example.com/home"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn load(env: &HashMap<String, String>) -> Result<ConsentConfig, ConfigError> {
        ConsentConfig::from_lookup(|name| env.get(name).cloned())
    }

    #[test]
    fn defaults_and_derived_values() {
        let config = load(&env()).expect("complete");
        assert_eq!(config.default_features, BTreeSet::from([Feature::Calendar]));
        assert_eq!(config.app_display_name, "Office 365 connector");
        assert!(config.secure_cookies());
        assert_eq!(
            config.admin_consent_redirect_uri(),
            "https://connector.example.com/consent/callback"
        );
        assert_eq!(
            config.sign_in_redirect_uri(),
            "https://connector.example.com/auth/callback"
        );
    }

    #[test]
    fn own_variables_are_validated() {
        let mut vars = env();
        vars.insert(DEFAULT_FEATURES.into(), "mail, teams".into());
        vars.insert(APP_DISPLAY_NAME.into(), "Acme Connect".into());
        vars.insert("PUBLIC_BASE_URL".into(), "http://127.0.0.1:9000".into());
        let config = load(&vars).expect("valid");
        assert_eq!(
            config.default_features,
            BTreeSet::from([Feature::Mail, Feature::Teams])
        );
        assert_eq!(config.app_display_name, "Acme Connect");
        assert!(!config.secure_cookies());

        vars.insert(DEFAULT_FEATURES.into(), "calendar,everything".into());
        let error = load(&vars).expect_err("unknown feature");
        assert!(error.to_string().contains(DEFAULT_FEATURES), "{error}");
        assert!(!error.to_string().contains("everything"), "{error}");

        let mut vars = env();
        vars.insert(APP_DISPLAY_NAME.into(), "x".repeat(81));
        assert!(load(&vars).is_err());

        let mut vars = env();
        vars.remove("APP_BASE_URL");
        let error = load(&vars).expect_err("missing");
        assert!(error.to_string().contains("APP_BASE_URL"), "{error}");
    }
}
