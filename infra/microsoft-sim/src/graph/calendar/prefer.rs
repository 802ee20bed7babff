//! The `Prefer` request header preferences calendar routes honour: `odata.maxpagesize`, `outlook.timezone`,
//! `IdType`. Several may arrive comma-separated in one header or in several headers; names are
//! case-insensitive, values may be quoted.

use axum::http::HeaderMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prefer {
    pub max_page_size: Option<usize>,
    pub timezone: Option<String>,
    pub immutable_id: bool,
}

impl Prefer {
    pub fn from_headers(headers: &HeaderMap) -> Prefer {
        let mut prefer = Prefer::default();
        for value in headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            for item in split_outside_quotes(value) {
                let (name, val) = match item.split_once('=') {
                    Some((n, v)) => (n.trim(), v.trim().trim_matches('"').trim()),
                    None => (item.trim(), ""),
                };
                if name.eq_ignore_ascii_case("odata.maxpagesize") {
                    prefer.max_page_size = val.parse::<usize>().ok().filter(|n| *n > 0);
                } else if name.eq_ignore_ascii_case("outlook.timezone") {
                    prefer.timezone = Some(val.to_owned()).filter(|v| !v.is_empty());
                } else if name.eq_ignore_ascii_case("IdType") {
                    prefer.immutable_id = val.eq_ignore_ascii_case("ImmutableId");
                }
            }
        }
        prefer
    }
}

fn split_outside_quotes(value: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' | ';' if !quoted => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_preferences_in_one_or_many_headers() {
        let mut headers = HeaderMap::new();
        headers.append(
            "Prefer",
            "odata.maxpagesize=2, outlook.timezone=\"Pacific Standard Time\""
                .parse()
                .unwrap(),
        );
        headers.append("prefer", "IdType=\"ImmutableId\"".parse().unwrap());
        let p = Prefer::from_headers(&headers);
        assert_eq!(p.max_page_size, Some(2));
        assert_eq!(p.timezone.as_deref(), Some("Pacific Standard Time"));
        assert!(p.immutable_id);
        assert_eq!(Prefer::from_headers(&HeaderMap::new()), Prefer::default());
    }
}
