//! In-flight identity state: pending authorize/admin-consent requests (the `ctx` the HTML forms carry),
//! authorization codes, refresh tokens and SSO sessions. Values are secrets: never logged, Debug redacted.

use std::collections::{BTreeSet, HashMap};

use time::OffsetDateTime;

use super::scopes::RequestedScopes;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Authorize,
    AdminConsent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseMode {
    Query,
    Fragment,
    FormPost,
}

/// An authorize or admin-consent request between its arrival and its final redirect.
#[derive(Debug, Clone)]
pub struct PendingRequest {
    pub kind: RequestKind,
    /// The tenant segment of the URL as given (`common`, `organizations`, a GUID or a domain).
    pub authority: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub scopes: RequestedScopes,
    /// The raw `scope` parameter (echoed on admin-consent success when it was `.default`).
    pub raw_scope: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<(String, PkceMethod)>,
    pub prompt: Option<String>,
    pub login_hint: Option<String>,
    pub domain_hint: Option<String>,
    pub response_mode: ResponseMode,
    pub client_info: bool,
    /// The signed-in user (tenant id, user id), once known.
    pub user: Option<(String, String)>,
    /// The SSO session the user signed in with (or reused).
    pub sid: Option<String>,
    pub created: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PkceMethod {
    S256,
    Plain,
}

pub struct CodeRecord {
    pub client_id: String,
    pub redirect_uri: String,
    pub tenant_id: String,
    pub user_id: String,
    pub graph_scopes: BTreeSet<String>,
    pub oidc: BTreeSet<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<(String, PkceMethod)>,
    pub issued: OffsetDateTime,
    pub redeemed: bool,
    pub sid: String,
}

pub struct RefreshRecord {
    pub client_id: String,
    pub tenant_id: String,
    pub user_id: String,
    pub graph_scopes: BTreeSet<String>,
    pub oidc: BTreeSet<String>,
    pub issued: OffsetDateTime,
    pub sid: String,
}

#[derive(Debug, Clone)]
pub struct SsoSession {
    pub tenant_id: String,
    pub user_id: String,
    pub sid: String,
    pub auth_time: OffsetDateTime,
}

#[derive(Default)]
pub struct Flows {
    pub pending: HashMap<String, PendingRequest>,
    pub codes: HashMap<String, CodeRecord>,
    pub refresh_tokens: HashMap<String, RefreshRecord>,
    pub sessions: HashMap<String, SsoSession>,
}

impl std::fmt::Debug for Flows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flows")
            .field("pending", &self.pending.len())
            .field("codes", &self.codes.len())
            .field("refresh_tokens", &self.refresh_tokens.len())
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

/// A random opaque value with a recognisable prefix (codes start `1.A`, refresh tokens `1.A` too on Microsoft's
/// side; the sim keeps them distinct so a code is never accepted as a refresh token).
pub fn random_token(prefix: &str, bytes: usize) -> String {
    use base64::Engine;
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
    )
}

/// An authorization code of the length Entra issues: well over 1,000 characters (1,085 reported in
/// https://github.com/plankanban/planka/issues/1113; "1200–2000+" in https://github.com/IBM/mcp-context-forge/issues/4490,
/// both read 2026-12-05), of the base64url alphabet with `.` separators like real codes (`0.A…`). Here 1,100–1,300
/// characters, the length drawn per code so no consumer can rely on a fixed size.
pub fn authorization_code() -> String {
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let target = 1_100 + usize::from(rand::random::<u8>()) * 200 / 255;
    let mut head = [0u8; 48];
    rand::fill(&mut head[..]);
    let mut code = format!("0.A{}.", engine.encode(head));
    // base64url of n bytes is ceil(4n/3) characters; fill to just under the target and pad with the same alphabet.
    let rest = target.saturating_sub(code.len());
    let mut body = vec![0u8; rest * 3 / 4 + 3];
    rand::fill(&mut body[..]);
    code.push_str(&engine.encode(body));
    code.truncate(target);
    code
}

#[cfg(test)]
mod tests {
    #[test]
    fn authorization_codes_have_realistic_length_and_alphabet() {
        for _ in 0..200 {
            let code = super::authorization_code();
            assert!((1_100..=1_300).contains(&code.len()), "{}", code.len());
            assert!(code.starts_with("0.A"));
            assert!(
                code.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            );
        }
    }
}
