//! The query string of the activity routes: `from`, `to` (RFC 3339), `limit`, `pageToken`.
//! Unknown or repeated parameters are refused rather than ignored, so a typo never
//! silently widens a range.

use std::collections::BTreeMap;

use connector_core::ports::PageToken;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::{ApiError, DEFAULT_LIMIT, MAX_LIMIT};

/// Longest page token accepted (ours are a few hundred bytes).
const MAX_TOKEN_CHARS: usize = 2048;

pub(crate) fn parse_query(raw: &str) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for (name, value) in url::form_urlencoded::parse(raw.as_bytes()) {
        if out.insert(name.into_owned(), value.into_owned()).is_some() {
            return Err(ApiError::bad_request(
                "invalid_query",
                "a query parameter is repeated",
            ));
        }
    }
    Ok(out)
}

pub(crate) struct ActivityQuery {
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
    pub limit: u32,
    pub token: Option<PageToken>,
}

fn time_param(
    params: &BTreeMap<String, String>,
    name: &str,
    code: &'static str,
    message: &'static str,
) -> Result<Option<OffsetDateTime>, ApiError> {
    params
        .get(name)
        .map(|value| {
            OffsetDateTime::parse(value, &Rfc3339).map_err(|_| ApiError::bad_request(code, message))
        })
        .transpose()
}

impl ActivityQuery {
    fn parse(params: &BTreeMap<String, String>, allowed: &[&str]) -> Result<Self, ApiError> {
        if params.keys().any(|name| !allowed.contains(&name.as_str())) {
            return Err(ApiError::bad_request(
                "invalid_query",
                "unknown query parameter",
            ));
        }
        let from = time_param(
            params,
            "from",
            "invalid_from",
            "from must be an RFC 3339 date-time",
        )?;
        let to = time_param(
            params,
            "to",
            "invalid_to",
            "to must be an RFC 3339 date-time",
        )?;
        if let (Some(from), Some(to)) = (from, to)
            && from >= to
        {
            return Err(ApiError::bad_request(
                "invalid_range",
                "from must be earlier than to",
            ));
        }
        let limit = match params.get("limit") {
            None => DEFAULT_LIMIT,
            Some(value) => match value.parse::<u32>() {
                Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => limit,
                _ => {
                    return Err(ApiError::bad_request(
                        "invalid_limit",
                        "limit must be a whole number from 1 to 200",
                    ));
                }
            },
        };
        let token = match params.get("pageToken") {
            None => None,
            Some(token)
                if !token.is_empty()
                    && token.len() <= MAX_TOKEN_CHARS
                    && token
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                Some(PageToken(token.clone()))
            }
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid_page_token",
                    "pageToken is not a token this API issued for this user",
                ));
            }
        };
        Ok(Self {
            from,
            to,
            limit,
            token,
        })
    }

    pub fn list(params: &BTreeMap<String, String>) -> Result<Self, ApiError> {
        Self::parse(params, &["from", "to", "limit", "pageToken"])
    }

    pub fn export(params: &BTreeMap<String, String>) -> Result<Self, ApiError> {
        Self::parse(params, &["from", "to", "pageToken"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(raw: &str) -> Result<ActivityQuery, ApiError> {
        ActivityQuery::list(&parse_query(raw)?)
    }

    #[test]
    fn bad_queries_are_refused_with_their_code() {
        for (raw, code) in [
            ("limit=0", "invalid_limit"),
            ("limit=201", "invalid_limit"),
            ("limit=abc", "invalid_limit"),
            ("from=yesterday", "invalid_from"),
            ("to=2026-13-01T00:00:00Z", "invalid_to"),
            (
                "from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
                "invalid_range",
            ),
            ("limit=1&limit=2", "invalid_query"),
            ("lmit=5", "invalid_query"),
            ("pageToken=a%20b", "invalid_page_token"),
        ] {
            let error = q(raw).err().unwrap_or_else(|| panic!("{raw} accepted"));
            assert_eq!(error.code, code, "{raw}");
        }
    }

    #[test]
    fn good_queries_parse() {
        let query = q(
            "from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00%2B01:00&limit=200&pageToken=eyJh_-",
        )
        .expect("valid");
        assert_eq!(query.limit, 200);
        assert!(query.from.is_some() && query.to.is_some());
        assert_eq!(q("").expect("empty").limit, DEFAULT_LIMIT);
    }
}
