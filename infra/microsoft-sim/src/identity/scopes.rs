//! Scope parsing and the catalogue of delegated Graph permissions the sim knows, with the plain-language
//! descriptions the consent page shows (Microsoft's own "user consent" display strings).

use std::collections::BTreeSet;

pub const GRAPH_RESOURCE: &str = "https://graph.microsoft.com";
/// The OIDC scopes: never qualified with a resource, always consentable alongside Graph scopes.
pub const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// (name, consent-page title, admin-consent required by Microsoft's definition).
const GRAPH_DELEGATED: &[(&str, &str, bool)] = &[
    ("User.Read", "Sign you in and read your profile", false),
    (
        "User.ReadBasic.All",
        "Read all users' basic profiles",
        false,
    ),
    ("User.Read.All", "Read all users' full profiles", true),
    ("Mail.ReadBasic", "Read user basic mail", false),
    ("Mail.Read", "Read your mail", false),
    (
        "Mail.ReadWrite",
        "Read and write access to your mail",
        false,
    ),
    ("Mail.Send", "Send mail as you", false),
    ("MailboxSettings.Read", "Read your mailbox settings", false),
    ("Calendars.Read", "Read your calendars", false),
    (
        "Calendars.ReadWrite",
        "Have full access to your calendars",
        false,
    ),
    ("OnlineMeetings.Read", "Read your online meetings", false),
    (
        "OnlineMeetings.ReadWrite",
        "Read and create your online meetings",
        false,
    ),
    (
        "Team.ReadBasic.All",
        "Read the names and descriptions of teams",
        false,
    ),
    (
        "Channel.ReadBasic.All",
        "Read the names and descriptions of channels",
        false,
    ),
    ("ChannelMessage.Send", "Send channel messages", false),
    (
        "ChannelMessage.Read.All",
        "Read user channel messages",
        true,
    ),
    ("Chat.Create", "Create chats", false),
    ("Chat.Read", "Read your chat messages", false),
    ("Chat.ReadWrite", "Read and write your chat messages", false),
    ("ChatMessage.Send", "Send chat messages", false),
];

const OIDC_TITLES: &[(&str, &str)] = &[
    ("openid", "Sign you in"),
    ("profile", "View your basic profile"),
    ("email", "View your email address"),
    (
        "offline_access",
        "Maintain access to data you have given it access to",
    ),
];

/// Why a requested scope string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeError {
    /// A scope of a resource other than Graph (the sim hosts no other resource).
    UnknownResource(String),
    /// A Graph scope name that Graph does not define.
    UnknownScope(String),
}

/// A parsed `scope` parameter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestedScopes {
    /// Canonical Graph scope names (without the resource prefix).
    pub graph: BTreeSet<String>,
    /// OIDC scopes present (`openid`, `profile`, `email`, `offline_access`).
    pub oidc: BTreeSet<String>,
    /// `https://graph.microsoft.com/.default` was requested.
    pub default: bool,
}

impl RequestedScopes {
    pub fn parse(scope: &str) -> Result<RequestedScopes, ScopeError> {
        let mut out = RequestedScopes::default();
        for raw in scope.split([' ', '+']).filter(|s| !s.is_empty()) {
            if let Some(oidc) = OIDC_SCOPES.iter().find(|o| o.eq_ignore_ascii_case(raw)) {
                out.oidc.insert((*oidc).to_owned());
                continue;
            }
            let name = match raw.rsplit_once('/') {
                Some((resource, name)) => {
                    let resource = resource.trim_end_matches('/');
                    let is_graph = resource.eq_ignore_ascii_case(GRAPH_RESOURCE)
                        || resource.eq_ignore_ascii_case("https://graph.microsoft.com/v1.0")
                        || resource.eq_ignore_ascii_case("00000003-0000-0000-c000-000000000000");
                    if !is_graph {
                        return Err(ScopeError::UnknownResource(resource.to_owned()));
                    }
                    name
                }
                // A bare scope means Graph, as Microsoft resolves it.
                None => raw,
            };
            if name == ".default" {
                out.default = true;
                continue;
            }
            match GRAPH_DELEGATED
                .iter()
                .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
            {
                Some((n, _, _)) => {
                    out.graph.insert((*n).to_owned());
                }
                None => return Err(ScopeError::UnknownScope(name.to_owned())),
            }
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.graph.is_empty() && self.oidc.is_empty() && !self.default
    }
}

/// Canonical spelling of a scope (Graph or OIDC); unknown names are kept as given.
pub fn canonical_scope(name: &str) -> String {
    let short = name.rsplit_once('/').map(|(_, n)| n).unwrap_or(name);
    if let Some(o) = OIDC_SCOPES.iter().find(|o| o.eq_ignore_ascii_case(short)) {
        return (*o).to_owned();
    }
    GRAPH_DELEGATED
        .iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(short))
        .map(|(n, _, _)| (*n).to_owned())
        .unwrap_or_else(|| short.to_owned())
}

pub fn is_oidc(name: &str) -> bool {
    OIDC_SCOPES.contains(&name)
}

/// The consent-page line for a scope.
pub fn describe(name: &str) -> &'static str {
    OIDC_TITLES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .or_else(|| {
            GRAPH_DELEGATED
                .iter()
                .find(|(n, _, _)| *n == name)
                .map(|(_, t, _)| *t)
        })
        .unwrap_or("Access data on your behalf")
}

/// Whether Microsoft defines the permission as admin-consent-required.
pub fn requires_admin(name: &str) -> bool {
    GRAPH_DELEGATED
        .iter()
        .any(|(n, _, admin)| *n == name && *admin)
}

/// The `scope` value of a token response: Graph scopes fully qualified, OIDC scopes bare.
pub fn qualified(graph: &BTreeSet<String>, oidc: &BTreeSet<String>) -> String {
    let mut parts: Vec<String> = Vec::new();
    for o in ["profile", "openid", "email"] {
        if oidc.contains(o) {
            parts.push(o.to_owned());
        }
    }
    parts.extend(graph.iter().map(|g| format!("{GRAPH_RESOURCE}/{g}")));
    // `offline_access` is never echoed, even when requested and granted: the refresh token
    // is its only evidence (Microsoft Q&A 806413, a Microsoft moderator: "never returned as
    // a scope"; read 2026-12-05; conformance/identity/token-*.json).
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bare_qualified_default_and_oidc() {
        let s = RequestedScopes::parse(
            "openid offline_access https://graph.microsoft.com/mail.read User.Read",
        )
        .unwrap();
        assert_eq!(
            s.graph,
            ["Mail.Read", "User.Read"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        );
        assert_eq!(
            s.oidc,
            ["offline_access", "openid"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        );
        assert!(!s.default);
        let d = RequestedScopes::parse("https://graph.microsoft.com/.default").unwrap();
        assert!(d.default && d.graph.is_empty());
    }

    #[test]
    fn rejects_unknown_scope_and_resource() {
        assert_eq!(
            RequestedScopes::parse("Mail.Reed"),
            Err(ScopeError::UnknownScope("Mail.Reed".into()))
        );
        assert!(matches!(
            RequestedScopes::parse("https://outlook.office.com/Mail.Read"),
            Err(ScopeError::UnknownResource(_))
        ));
    }
}
