//! Reading what a browser sends: the query string (size limits, one value per name, bounded
//! lengths) and the hints it carries (tenant GUID or DNS domain, login hint). Anything that
//! does not fit is refused with a 400 page before any work is done.

use std::collections::HashMap;

use connector_core::domain::TenantId;

/// Larger query strings are refused outright. Room for a `code` at its limit plus the rest of a
/// callback (`state`, `session_state`, `client_info`).
pub const MAX_QUERY_BYTES: usize = 8192;

/// Why a request was refused; the text is ours (never the offending value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("the request is too large")]
    QueryTooLarge,
    #[error("the parameter `{0}` appears more than once")]
    Duplicate(String),
    #[error("the parameter `{0}` is too long")]
    TooLong(String),
    #[error("the parameter `{0}` is not valid")]
    Invalid(&'static str),
    #[error("the parameter `{0}` is missing")]
    Missing(&'static str),
    #[error("the request could not be read")]
    Malformed,
}

/// The longest value we accept for each parameter we read; anything else is capped at 512.
fn max_len(name: &str) -> usize {
    match name {
        "state" => 128,
        // Entra's codes are well over 1,000 characters (1,085 in
        // https://github.com/plankanban/planka/issues/1113, "1200–2000+" in
        // https://github.com/IBM/mcp-context-forge/issues/4490, read 2026-12-05) and no Microsoft
        // document caps them: about twice the longest reported.
        "code" => 4096,
        "error_description" => 2048,
        "error" | "error_subcode" => 64,
        "error_uri" => 512,
        "scope" => 2048,
        "tenant" | "domain_hint" | "login_hint" => 256,
        "admin_consent" | "bundle" => 16,
        "session_state" => 128,
        _ => 512,
    }
}

/// The parsed query: each name at most once.
#[derive(Debug, Default)]
pub struct Query {
    values: HashMap<String, String>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Query, ParamError> {
        let raw = raw.unwrap_or_default();
        if raw.len() > MAX_QUERY_BYTES {
            return Err(ParamError::QueryTooLarge);
        }
        let mut values = HashMap::new();
        for (name, value) in url::form_urlencoded::parse(raw.as_bytes()) {
            if name.is_empty() {
                continue;
            }
            // A name we would echo in an error must itself be harmless and short.
            if name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
            {
                return Err(ParamError::Malformed);
            }
            if value.chars().count() > max_len(&name) {
                return Err(ParamError::TooLong(name.into_owned()));
            }
            if values
                .insert(name.to_string(), value.into_owned())
                .is_some()
            {
                return Err(ParamError::Duplicate(name.into_owned()));
            }
        }
        Ok(Query { values })
    }

    /// The value, `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }
}

/// A tenant as an administrator or a link names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TenantHint {
    Id(TenantId),
    Domain(String),
}

impl TenantHint {
    pub fn parse(value: &str) -> Option<TenantHint> {
        let value = value.trim();
        if looks_like_guid(value) {
            return TenantId::parse(value).ok().map(TenantHint::Id);
        }
        normalize_domain(value).map(TenantHint::Domain)
    }

    pub fn as_string(&self) -> String {
        match self {
            TenantHint::Id(id) => id.to_string(),
            TenantHint::Domain(domain) => domain.clone(),
        }
    }
}

/// 8-4-4-4-12 hex digits, optionally in braces: the only GUID spelling we accept.
fn looks_like_guid(value: &str) -> bool {
    let inner = value
        .strip_prefix('{')
        .and_then(|v| v.strip_suffix('}'))
        .unwrap_or(value);
    let groups: Vec<&str> = inner.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A DNS name of at least two labels (letters, digits, hyphens; no leading or trailing
/// hyphen; a top-level label that is not all digits), lower-cased.
pub fn normalize_domain(value: &str) -> Option<String> {
    let domain = value.trim().trim_end_matches('.').to_ascii_lowercase();
    if domain.is_empty() || domain.len() > 253 {
        return None;
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return None;
    }
    let label_ok = |label: &&str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    let tld_ok = labels
        .last()
        .is_some_and(|tld| !tld.chars().all(|c| c.is_ascii_digit()));
    (labels.iter().all(label_ok) && tld_ok).then_some(domain)
}

/// A login hint (a UPN or address): `local@domain`, printable, with a valid domain.
/// Returns the hint as given and its domain.
pub fn parse_login_hint(value: &str) -> Option<(String, String)> {
    let value = value.trim();
    let (local, domain) = value.rsplit_once('@')?;
    let local_ok = !local.is_empty()
        && local.len() <= 128
        && local.chars().all(|c| {
            c.is_ascii_graphic() && !matches!(c, '<' | '>' | '"' | '\\' | '@' | ',' | ';')
        });
    let domain = normalize_domain(domain)?;
    local_ok.then(|| (value.to_owned(), domain))
}

/// The query's optional `login_hint` (see [`parse_login_hint`]).
pub fn login_hint(query: &Query) -> Result<Option<(String, String)>, ParamError> {
    query
        .get("login_hint")
        .map(|value| parse_login_hint(value).ok_or(ParamError::Invalid("login_hint")))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_limits() {
        let query = Query::parse(Some("a=1&b=x%20y&empty=")).expect("parses");
        assert_eq!(query.get("b"), Some("x y"));
        assert_eq!(query.get("empty"), None);
        assert!(query.contains("empty"));
        assert_eq!(
            Query::parse(Some("state=1&state=2")).unwrap_err(),
            ParamError::Duplicate("state".into())
        );
        let long_state = format!("state={}", "a".repeat(129));
        assert_eq!(
            Query::parse(Some(&long_state)).unwrap_err(),
            ParamError::TooLong("state".into())
        );
        // Codes of realistic length pass with a margin; past the limit they are refused.
        let code = |len: usize| {
            format!(
                "code=0.A{}&state=s&session_state=00000000-0000-0000-0000-000000000000",
                "Ab-_.".repeat(len / 5)[..len - 3].to_owned()
            )
        };
        let parsed = Query::parse(Some(&code(2_000))).expect("a 2,000-character code");
        assert_eq!(parsed.get("code").map(str::len), Some(2_000));
        assert!(Query::parse(Some(&code(4_096))).is_ok());
        assert_eq!(
            Query::parse(Some(&code(4_097))).unwrap_err(),
            ParamError::TooLong("code".into())
        );
        let huge = format!("x={}", "a".repeat(MAX_QUERY_BYTES));
        assert_eq!(
            Query::parse(Some(&huge)).unwrap_err(),
            ParamError::QueryTooLarge
        );
        assert_eq!(
            Query::parse(Some("%3Cscript%3E=1")).unwrap_err(),
            ParamError::Malformed
        );
        assert!(Query::parse(None).expect("empty").get("x").is_none());
    }

    #[test]
    fn tenant_hints() {
        assert_eq!(
            TenantHint::parse("{72F988BF-86F1-41AF-91AB-2D7CD011DB47}"),
            Some(TenantHint::Id(
                TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").expect("guid")
            ))
        );
        assert_eq!(
            TenantHint::parse("Contoso.OnMicrosoft.com"),
            Some(TenantHint::Domain("contoso.onmicrosoft.com".into()))
        );
        for bad in [
            "contoso",
            "organizations",
            "common",
            "-bad.com",
            "bad-.com",
            "a..b",
            "1.2.3.4",
            "evil.com/path",
            "evil.com?x",
            "<script>.com",
            "72f988bf86f141af91ab2d7cd011db47",
            "",
        ] {
            assert_eq!(TenantHint::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn login_hints() {
        assert_eq!(
            parse_login_hint("Adele.Vance@Contoso.com"),
            Some(("Adele.Vance@Contoso.com".into(), "contoso.com".into()))
        );
        assert_eq!(parse_login_hint("adele"), None);
        assert_eq!(parse_login_hint("a b@contoso.com"), None);
        assert_eq!(parse_login_hint("<x>@contoso.com"), None);
        assert_eq!(parse_login_hint("x@contoso"), None);
    }
}
