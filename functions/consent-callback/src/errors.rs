//! Errors Microsoft sends back, from a callback's query string or the token endpoint's
//! JSON body, and what each one means for the person in front of the browser.
//!
//! The AADSTS code comes from `error_codes` or the `AADSTSnnnnn` prefix of
//! `error_description`; trace and correlation ids from `trace_id`/`correlation_id` or the
//! description's `Trace ID:`/`Correlation ID:` lines. Every value taken from the description
//! is checked against the characters it may contain, and rendered escaped anyway.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What went wrong, as far as the administrator or user needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// AADSTS50105: assignment is required and the user is not assigned.
    NotAssigned,
    /// AADSTS65001 / 90094 / 90095: an administrator has to approve first.
    AdminApprovalNeeded,
    /// AADSTS65004 or `access_denied`: the consent screen was declined.
    ConsentDeclined,
    /// `error_subcode=cancel`: the user backed out (often of a "Need admin approval" screen).
    Cancelled,
    /// AADSTS50020: the account belongs to another directory.
    OtherDirectory,
    /// AADSTS700016: the application does not exist in that tenant yet.
    AppNotInTenant,
    /// AADSTS7000215 / 7000222: our client secret is wrong or expired; 700027, 700021,
    /// 700023, 700024, 50027: our certificate's client assertion was refused (operator problem).
    BadClientSecret,
    /// AADSTS54005 / a code that was already redeemed or expired: start again.
    CodeAlreadyUsed,
    /// Anything else: shown with its code and ids.
    Other,
}

/// A Microsoft error, from wherever it came.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MicrosoftError {
    pub error: String,
    pub description: Option<String>,
    pub codes: Vec<u32>,
    pub subcode: Option<String>,
    pub suberror: Option<String>,
    pub trace_id: Option<String>,
    pub correlation_id: Option<String>,
    pub timestamp: Option<String>,
}

impl MicrosoftError {
    /// From a callback's `error`, `error_description` and `error_subcode`.
    pub fn from_callback(
        error: &str,
        description: Option<&str>,
        subcode: Option<&str>,
    ) -> MicrosoftError {
        let description = description.map(str::to_owned);
        let mut parsed = MicrosoftError {
            error: error.to_owned(),
            subcode: subcode.map(str::to_owned),
            ..MicrosoftError::default()
        };
        if let Some(text) = &description {
            parsed.codes = aadsts_code(text).into_iter().collect();
            parsed.trace_id = labelled_id(text, "Trace ID:");
            parsed.correlation_id = labelled_id(text, "Correlation ID:");
            parsed.timestamp = labelled_timestamp(text);
        }
        parsed.description = description;
        parsed
    }

    /// From the token endpoint's error body.
    pub fn from_token_error(body: &TokenErrorBody) -> MicrosoftError {
        let mut parsed = MicrosoftError::from_callback(
            body.error.as_str(),
            body.error_description.as_deref(),
            None,
        );
        if !body.error_codes.is_empty() {
            parsed.codes.clone_from(&body.error_codes);
        }
        parsed.suberror = body.suberror.clone().filter(|s| is_token_like(s, 64));
        if let Some(id) = body.trace_id.as_deref().filter(|id| is_id_like(id)) {
            parsed.trace_id = Some(id.to_owned());
        }
        if let Some(id) = body.correlation_id.as_deref().filter(|id| is_id_like(id)) {
            parsed.correlation_id = Some(id.to_owned());
        }
        if let Some(ts) = body.timestamp.as_deref().filter(|ts| is_timestamp_like(ts)) {
            parsed.timestamp = Some(ts.to_owned());
        }
        parsed
    }

    /// The first AADSTS code.
    pub fn code(&self) -> Option<u32> {
        self.codes.first().copied()
    }

    /// `AADSTS50105`, or the `error` value when there is no code (only when it is a plain token).
    pub fn label(&self) -> String {
        match self.code() {
            Some(code) => format!("AADSTS{code}"),
            None if is_token_like(&self.error, 64) => self.error.clone(),
            None => "unknown_error".to_owned(),
        }
    }

    /// What went wrong, by the first of `error_codes` we know (Microsoft may list several:
    /// `[70002, 70000]` for a malformed grant, conformance/identity/token-error-*), then by
    /// `error_subcode` and `error`.
    pub fn problem(&self) -> Problem {
        let by_code = |code: u32| match code {
            50105 => Some(Problem::NotAssigned),
            65001 | 90094 | 90095 => Some(Problem::AdminApprovalNeeded),
            65004 => Some(Problem::ConsentDeclined),
            50020 => Some(Problem::OtherDirectory),
            700016 => Some(Problem::AppNotInTenant),
            7000215 | 7000222 | 700027 | 700021 | 700023 | 700024 | 50027 => {
                Some(Problem::BadClientSecret)
            }
            54005 | 70008 | 70000 if self.error == "invalid_grant" => {
                Some(Problem::CodeAlreadyUsed)
            }
            _ => None,
        };
        if let Some(problem) = self.codes.iter().copied().find_map(by_code) {
            return problem;
        }
        if self.subcode.as_deref() == Some("cancel") {
            return Problem::Cancelled;
        }
        match self.error.as_str() {
            "access_denied" if self.code().is_none() => Problem::ConsentDeclined,
            "consent_required" => Problem::AdminApprovalNeeded,
            _ => Problem::Other,
        }
    }
}

impl fmt::Display for MicrosoftError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Logged: the code and ids only, never the free-text description.
        write!(f, "{}", self.label())?;
        if let Some(trace) = &self.trace_id {
            write!(f, " trace_id={trace}")?;
        }
        if let Some(correlation) = &self.correlation_id {
            write!(f, " correlation_id={correlation}")?;
        }
        Ok(())
    }
}

/// The token endpoint's error body (graph-contract.md §3), as the oauth2 crate's error type.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct TokenErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_codes: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suberror: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_uri: Option<String>,
}

impl fmt::Display for TokenErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", MicrosoftError::from_token_error(self))
    }
}

impl oauth2::ErrorResponse for TokenErrorBody {}

fn aadsts_code(text: &str) -> Option<u32> {
    let start = text.find("AADSTS")? + "AADSTS".len();
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .take(9)
        .collect();
    digits.parse().ok()
}

fn labelled_id(text: &str, label: &str) -> Option<String> {
    let start = text.find(label)? + label.len();
    let id: String = text[start..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || *c == '-')
        .take(64)
        .collect();
    is_id_like(&id).then_some(id)
}

fn labelled_timestamp(text: &str) -> Option<String> {
    let start = text.find("Timestamp:")? + "Timestamp:".len();
    let ts: String = text[start..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '-' | ':' | ' ' | 'Z' | 'T' | '.'))
        .take(32)
        .collect();
    let ts = ts.trim().to_owned();
    is_timestamp_like(&ts).then_some(ts)
}

fn is_id_like(value: &str) -> bool {
    (8..=64).contains(&value.len()) && value.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

fn is_timestamp_like(value: &str) -> bool {
    (10..=32).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '-' | ':' | ' ' | 'Z' | 'T' | '.'))
}

fn is_token_like(value: &str, max: usize) -> bool {
    !value.is_empty()
        && value.len() <= max
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESCRIPTION: &str = "AADSTS50105: Your administrator has configured the application Connector ('1111') to block users unless they are specifically granted ('assigned') access to the application.\r\nTrace ID: 0a1b2c3d-0000-4000-8000-000000000001\r\nCorrelation ID: 9f8e7d6c-0000-4000-8000-000000000002\r\nTimestamp: 2026-03-01 10:00:00Z";

    #[test]
    fn callback_errors_are_parsed_from_the_description() {
        let error = MicrosoftError::from_callback("access_denied", Some(DESCRIPTION), None);
        assert_eq!(error.code(), Some(50105));
        assert_eq!(error.problem(), Problem::NotAssigned);
        assert_eq!(
            error.trace_id.as_deref(),
            Some("0a1b2c3d-0000-4000-8000-000000000001")
        );
        assert_eq!(
            error.correlation_id.as_deref(),
            Some("9f8e7d6c-0000-4000-8000-000000000002")
        );
        assert_eq!(error.timestamp.as_deref(), Some("2026-03-01 10:00:00Z"));
        assert_eq!(
            error.to_string(),
            "AADSTS50105 trace_id=0a1b2c3d-0000-4000-8000-000000000001 correlation_id=9f8e7d6c-0000-4000-8000-000000000002"
        );
    }

    #[test]
    fn classification() {
        let case = |error: &str, description: Option<&str>, subcode: Option<&str>| {
            MicrosoftError::from_callback(error, description, subcode).problem()
        };
        assert_eq!(
            case("access_denied", Some("AADSTS65004: declined"), None),
            Problem::ConsentDeclined
        );
        assert_eq!(case("access_denied", None, None), Problem::ConsentDeclined);
        assert_eq!(
            case("access_denied", None, Some("cancel")),
            Problem::Cancelled
        );
        assert_eq!(
            case("access_denied", Some("AADSTS90094: x"), None),
            Problem::AdminApprovalNeeded
        );
        assert_eq!(
            case("access_denied", Some("AADSTS90095: x"), None),
            Problem::AdminApprovalNeeded
        );
        assert_eq!(
            case("invalid_grant", Some("AADSTS65001: x"), None),
            Problem::AdminApprovalNeeded
        );
        assert_eq!(
            case("access_denied", Some("AADSTS50020: x"), None),
            Problem::OtherDirectory
        );
        assert_eq!(
            case("unauthorized_client", Some("AADSTS700016: x"), None),
            Problem::AppNotInTenant
        );
        assert_eq!(
            case("invalid_client", Some("AADSTS7000215: x"), None),
            Problem::BadClientSecret
        );
        for code in ["7000222", "700027", "700021", "700023", "700024"] {
            assert_eq!(
                case("invalid_client", Some(&format!("AADSTS{code}: x")), None),
                Problem::BadClientSecret
            );
        }
        assert_eq!(
            case("invalid_grant", Some("AADSTS54005: x"), None),
            Problem::CodeAlreadyUsed
        );
        assert_eq!(
            case("server_error", Some("AADSTS90033: x"), None),
            Problem::Other
        );
        assert_eq!(case("<script>", None, None), Problem::Other);
        assert_eq!(
            MicrosoftError::from_callback("<script>", None, None).label(),
            "unknown_error"
        );
    }

    #[test]
    fn token_error_bodies() {
        let body: TokenErrorBody = serde_json::from_value(serde_json::json!({
            "error": "invalid_client",
            "error_description": "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: aaaaaaaa-0000-4000-8000-000000000001\r\nCorrelation ID: bbbbbbbb-0000-4000-8000-000000000002\r\nTimestamp: 2026-03-01 10:00:00Z",
            "error_codes": [7000215],
            "timestamp": "2026-03-01 10:00:00Z",
            "trace_id": "aaaaaaaa-0000-4000-8000-000000000001",
            "correlation_id": "bbbbbbbb-0000-4000-8000-000000000002",
            "error_uri": "https://login.microsoftonline.com/error?code=7000215"
        }))
        .expect("parses");
        let error = MicrosoftError::from_token_error(&body);
        assert_eq!(error.problem(), Problem::BadClientSecret);
        assert_eq!(
            error.correlation_id.as_deref(),
            Some("bbbbbbbb-0000-4000-8000-000000000002")
        );

        let forged = MicrosoftError::from_callback(
            "x",
            Some("Trace ID: <script>alert(1)</script> Correlation ID: \"><img>"),
            None,
        );
        assert_eq!(forged.trace_id, None);
        assert_eq!(forged.correlation_id, None);
    }
}

#[cfg(test)]
#[path = "errors_conformance.rs"]
mod conformance;
