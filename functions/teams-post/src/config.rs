//! teams-post's configuration: what every function reads ([`connector_core::config::Config`])
//! plus the dead-letter queue's URL and the idempotency record lifetime, read once at start
//! and failing fast with the variable's name.

use connector_core::config::{Config, ConfigError, required};
use connector_core::teams::failures::TEAMS_POST_DLQ_URL;

/// How long a completed post's key keeps suppressing repeats, in hours (default 336 =
/// 14 days, the DLQ's retention: a redriven message still meets its record).
pub const IDEMPOTENCY_TTL_HOURS: &str = "IDEMPOTENCY_TTL_HOURS";
/// Targets worked at once per invocation (default 8).
pub const TEAMS_POST_CONCURRENCY: &str = "TEAMS_POST_CONCURRENCY";
/// Longest wait for Graph's answer to a message post, in seconds (default 30). A post
/// whose answer does not come by then counts as "sent, outcome unknown" and is read back
/// before it is posted again.
pub const TEAMS_POST_TIMEOUT_SECONDS: &str = "TEAMS_POST_TIMEOUT_SECONDS";

#[derive(Clone, Debug)]
pub struct TeamsPostConfig {
    pub core: Config,
    pub dead_letter_queue_url: String,
    pub idempotency_ttl: time::Duration,
    pub concurrency: usize,
    /// [`TEAMS_POST_TIMEOUT_SECONDS`].
    pub post_timeout: std::time::Duration,
}

impl TeamsPostConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let core = Config::from_lookup(&lookup)?;
        let dead_letter_queue_url = required(&lookup, TEAMS_POST_DLQ_URL)?;
        if !matches!(url::Url::parse(&dead_letter_queue_url), Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some())
        {
            return Err(ConfigError::Invalid {
                name: TEAMS_POST_DLQ_URL,
                reason: "must be an SQS queue URL".into(),
            });
        }
        let hours = number(&lookup, IDEMPOTENCY_TTL_HOURS, 336, 1..=24 * 365)?;
        let concurrency = number(&lookup, TEAMS_POST_CONCURRENCY, 8, 1..=64)?;
        let post_timeout = number(&lookup, TEAMS_POST_TIMEOUT_SECONDS, 30, 1..=120)?;
        Ok(Self {
            core,
            dead_letter_queue_url,
            idempotency_ttl: time::Duration::hours(hours as i64),
            concurrency: concurrency as usize,
            post_timeout: std::time::Duration::from_secs(post_timeout),
        })
    }
}

fn number(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    match lookup(name).filter(|value| !value.trim().is_empty()) {
        None => Ok(default),
        Some(value) => value
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|value| range.contains(value))
            .ok_or_else(|| ConfigError::Invalid {
                name,
                reason: format!(
                    "must be a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use connector_core::config::vars;

    fn env() -> HashMap<&'static str, String> {
        [
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
                "http://127.0.0.1:5000/1/subscriptions",
            ),
            (vars::MAIL_SYNC_QUEUE_URL, "http://127.0.0.1:5000/1/mail"),
            (vars::CALENDAR_SYNC_QUEUE_URL, "http://127.0.0.1:5000/1/cal"),
            (vars::TEAMS_POST_QUEUE_URL, "http://127.0.0.1:5000/1/teams"),
            (TEAMS_POST_DLQ_URL, "http://127.0.0.1:5000/1/teams-dlq"),
            (vars::CLIENT_SECRET_ID, "office365/client-secret"),
            (vars::CLIENT_ID, "11111111-2222-3333-4444-555555555555"),
            (vars::LOGIN_BASE_URL, "http://127.0.0.1:7000"),
            (vars::GRAPH_BASE_URL, "http://127.0.0.1:7000"),
        ]
        .into_iter()
        .map(|(name, value)| (name, value.to_owned()))
        .collect()
    }

    #[test]
    fn reads_defaults_and_names_what_is_wrong() {
        let env = env();
        let config = TeamsPostConfig::from_lookup(|name| env.get(name).cloned()).expect("valid");
        assert_eq!(config.idempotency_ttl, time::Duration::days(14));
        assert_eq!(config.concurrency, 8);
        assert_eq!(
            config.dead_letter_queue_url,
            "http://127.0.0.1:5000/1/teams-dlq"
        );

        let mut missing = env.clone();
        missing.remove(TEAMS_POST_DLQ_URL);
        let error =
            TeamsPostConfig::from_lookup(|name| missing.get(name).cloned()).expect_err("missing");
        assert!(error.to_string().contains(TEAMS_POST_DLQ_URL), "{error}");

        let mut bad = env.clone();
        bad.insert(IDEMPOTENCY_TTL_HOURS, "0".into());
        let error =
            TeamsPostConfig::from_lookup(|name| bad.get(name).cloned()).expect_err("invalid");
        assert!(error.to_string().contains(IDEMPOTENCY_TTL_HOURS), "{error}");

        let mut custom = env;
        custom.insert(IDEMPOTENCY_TTL_HOURS, "48".into());
        custom.insert(TEAMS_POST_CONCURRENCY, "2".into());
        let config = TeamsPostConfig::from_lookup(|name| custom.get(name).cloned()).expect("valid");
        assert_eq!(config.idempotency_ttl, time::Duration::hours(48));
        assert_eq!(config.concurrency, 2);
    }
}
