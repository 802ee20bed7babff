//! The OData query options and `Prefer` preferences the mail routes understand, parsed the way Graph parses them
//! (the `$` prefix optional, names case-insensitive, `+` as space), with Graph's errors for what it refuses.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::graph::graph_error;

/// The query string as `(name without '$', lower-cased; value)` pairs.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        let pairs = url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
            .map(|(k, v)| {
                (
                    k.trim_start_matches('$').to_ascii_lowercase(),
                    v.into_owned(),
                )
            })
            .collect();
        Query { pairs }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == name)
    }
}

/// 400 `ErrorInvalidUrlQuery`, Outlook's code for query options it does not support.
pub fn invalid_query(message: &str) -> Response {
    graph_error(StatusCode::BAD_REQUEST, "ErrorInvalidUrlQuery", message)
}

/// Resolves a `$select` list against the known properties of `type_name`: canonical names, `id` implied.
/// An unknown property is Graph's 400 `RequestBroker--ParseUri`.
#[allow(clippy::result_large_err)]
pub fn parse_select(
    raw: Option<&str>,
    known: &[&'static str],
    type_name: &str,
) -> Result<Option<Vec<&'static str>>, Response> {
    let Some(raw) = raw.filter(|r| !r.trim().is_empty()) else {
        return Ok(None);
    };
    let mut out: Vec<&'static str> = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some(name) = known.iter().find(|k| k.eq_ignore_ascii_case(item)) else {
            return Err(graph_error(
                StatusCode::BAD_REQUEST,
                "RequestBroker--ParseUri",
                &format!("Could not find a property named '{item}' on type '{type_name}'."),
            ));
        };
        if !out.contains(name) {
            out.push(name);
        }
    }
    Ok(Some(out))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CmpOp {
    Ge,
    Gt,
    Le,
    Lt,
}

/// A conjunction of `receivedDateTime <op> <DateTimeOffset>` terms (unix seconds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceivedFilter {
    pub terms: Vec<(CmpOp, i64)>,
}

impl ReceivedFilter {
    pub fn accepts(&self, received: i64) -> bool {
        self.terms.iter().all(|&(op, v)| match op {
            CmpOp::Ge => received >= v,
            CmpOp::Gt => received > v,
            CmpOp::Le => received <= v,
            CmpOp::Lt => received < v,
        })
    }
}

/// Parses `$filter` as far as the mail routes support it. `None` when the expression is anything else.
pub fn parse_received_filter(raw: &str) -> Option<ReceivedFilter> {
    let mut terms = Vec::new();
    let lowered = raw.trim();
    for term in split_and(lowered) {
        let mut parts = term.split_whitespace();
        let (Some(prop), Some(op), Some(value), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        if !prop.eq_ignore_ascii_case("receivedDateTime") {
            return None;
        }
        let op = match op.to_ascii_lowercase().as_str() {
            "ge" => CmpOp::Ge,
            "gt" => CmpOp::Gt,
            "le" => CmpOp::Le,
            "lt" => CmpOp::Lt,
            _ => return None,
        };
        terms.push((op, parse_datetime_literal(value)?.unix_timestamp()));
    }
    (!terms.is_empty()).then_some(ReceivedFilter { terms })
}

fn split_and(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        let lower = rest.to_ascii_lowercase();
        match lower.find(" and ") {
            Some(i) => {
                out.push(rest[..i].trim());
                rest = &rest[i + 5..];
            }
            None => {
                out.push(rest.trim());
                return out;
            }
        }
    }
}

/// An OData DateTimeOffset literal, unquoted (Graph refuses quoted ones): RFC 3339, or a bare date (midnight UTC).
pub fn parse_datetime_literal(value: &str) -> Option<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(value, &Rfc3339) {
        return Some(t);
    }
    let date = time::Date::parse(
        value,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .ok()?;
    Some(date.midnight().assume_utc())
}

/// Graph's wire format for dates: `2014-01-01T00:00:00Z` (no fraction).
pub fn format_datetime(unix: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .unwrap_or_default()
}

/// The `Prefer` preferences of a request (all `Prefer` headers, comma-separated items).
#[derive(Debug, Clone, Default)]
pub struct Prefer {
    pub max_page_size: Option<u32>,
    pub immutable_ids: bool,
    /// `outlook.body-content-type`: `Some(true)` for text, `Some(false)` for html.
    pub body_text: Option<bool>,
}

impl Prefer {
    pub fn from_headers(headers: &HeaderMap) -> Prefer {
        let mut prefer = Prefer::default();
        for value in headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            for item in value.split(',') {
                let Some((name, val)) = item.split_once('=') else {
                    continue;
                };
                let name = name.trim().to_ascii_lowercase();
                let val = val.trim().trim_matches('"');
                match name.as_str() {
                    "odata.maxpagesize" => {
                        prefer.max_page_size = val.parse().ok().filter(|&n| n > 0)
                    }
                    "idtype" => prefer.immutable_ids = val.eq_ignore_ascii_case("ImmutableId"),
                    "outlook.body-content-type" => {
                        if val.eq_ignore_ascii_case("text") {
                            prefer.body_text = Some(true);
                        } else if val.eq_ignore_ascii_case("html") {
                            prefer.body_text = Some(false);
                        }
                    }
                    _ => {}
                }
            }
        }
        prefer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names_lose_the_dollar_and_case() {
        let q = Query::parse(Some(
            "%24select=subject,from&$FILTER=receivedDateTime+ge+2024-01-01T00:00:00Z&top=5",
        ));
        assert_eq!(q.get("select"), Some("subject,from"));
        assert_eq!(
            q.get("filter"),
            Some("receivedDateTime ge 2024-01-01T00:00:00Z")
        );
        assert_eq!(q.get("top"), Some("5"));
    }

    #[test]
    fn received_filters() {
        let f = parse_received_filter(
            "receivedDateTime ge 2024-01-01T00:00:00Z and receivedDateTime lt 2024-02-01",
        )
        .unwrap();
        let jan = parse_datetime_literal("2024-01-15T10:00:00Z")
            .unwrap()
            .unix_timestamp();
        let feb = parse_datetime_literal("2024-02-01T00:00:00Z")
            .unwrap()
            .unix_timestamp();
        assert!(f.accepts(jan));
        assert!(!f.accepts(feb));
        assert!(parse_received_filter("subject eq 'x'").is_none());
        assert!(parse_received_filter("receivedDateTime ge '2024-01-01T00:00:00Z'").is_none());
    }

    #[test]
    fn prefer_items() {
        let mut h = HeaderMap::new();
        h.append(
            "Prefer",
            "odata.maxpagesize=50, IdType=\"ImmutableId\""
                .parse()
                .unwrap(),
        );
        h.append(
            "Prefer",
            "outlook.body-content-type=\"text\"".parse().unwrap(),
        );
        let p = Prefer::from_headers(&h);
        assert_eq!(p.max_page_size, Some(50));
        assert!(p.immutable_ids);
        assert_eq!(p.body_text, Some(true));
    }
}
