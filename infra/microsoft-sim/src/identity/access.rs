//! Access tokens for Graph: JWTs shaped like Microsoft's v1 Graph tokens, signed with the published keys, and
//! their live validation (signature, lifetime, audience, and the grant still existing in the directory).

use std::collections::BTreeSet;

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::jwt;
use crate::state::Sim;

pub const GRAPH_AUDIENCE: &str = "https://graph.microsoft.com";

/// What a valid access token stands for, with the scopes still granted right now.
#[derive(Debug, Clone)]
pub struct AccessClaims {
    pub tenant_id: String,
    pub user_id: String,
    pub client_id: String,
    pub scopes: BTreeSet<String>,
    pub expires_at: OffsetDateTime,
}

/// Why Graph refuses a token; each maps to a 401 `InvalidAuthenticationToken` with Microsoft's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessTokenError {
    Missing,
    Malformed,
    InvalidSignature,
    Expired,
    WrongAudience,
    /// The grant, the service principal or the user's sessions were revoked after issuance.
    Revoked,
}

impl AccessTokenError {
    pub fn graph_message(self) -> &'static str {
        match self {
            AccessTokenError::Missing => "Access token is empty.",
            AccessTokenError::Malformed => {
                "IDX14100: JWT is not well formed, there are no dots (.)."
            }
            AccessTokenError::InvalidSignature => "Access token validation failure.",
            AccessTokenError::Expired => "Lifetime validation failed, the token is expired.",
            AccessTokenError::WrongAudience => "Access token validation failure. Invalid audience.",
            AccessTokenError::Revoked => "Access token validation failure.",
        }
    }
}

impl Sim {
    /// Mints an access token for Graph. The token endpoint is the only production caller; tests use the real
    /// flow through it.
    pub fn issue_access_token(
        &self,
        tenant_id: &str,
        user_id: &str,
        client_id: &str,
        scopes: &BTreeSet<String>,
    ) -> anyhow::Result<(String, OffsetDateTime)> {
        let now = self.now();
        let lifetime = time::Duration::try_from(self.config().access_token_lifetime)?;
        let exp = now + lifetime;
        let user = self
            .user(tenant_id, user_id)
            .ok_or_else(|| anyhow::anyhow!("unknown user"))?;
        let app_name = self
            .directory()
            .app(client_id)
            .map(|a| a.display_name.clone())
            .unwrap_or_default();
        let claims = json!({
            "aud": GRAPH_AUDIENCE,
            "iss": format!("https://sts.windows.net/{tenant_id}/"),
            "iat": now.unix_timestamp(),
            "nbf": now.unix_timestamp(),
            "exp": exp.unix_timestamp(),
            "acct": 0,
            "aio": opaque(),
            "amr": ["pwd"],
            "app_displayname": app_name,
            "appid": client_id,
            "appidacr": "1",
            "idtyp": "user",
            "ipaddr": "127.0.0.1",
            "name": user.display_name,
            "oid": user.id,
            "rh": opaque(),
            "scp": scopes.iter().cloned().collect::<Vec<_>>().join(" "),
            "sub": opaque(),
            "tid": tenant_id,
            "unique_name": user.user_principal_name,
            "upn": user.user_principal_name,
            "uti": opaque(),
            "ver": "1.0",
        });
        let keys = self.identity.keys();
        Ok((jwt::sign(keys.signing_key(), &claims, true)?, exp))
    }

    /// Validates a bearer token as Graph would, and checks live that the grant behind it still exists.
    pub fn validate_access_token(&self, token: &str) -> Result<AccessClaims, AccessTokenError> {
        if token.is_empty() {
            return Err(AccessTokenError::Missing);
        }
        let claims = {
            let keys = self.identity.keys();
            jwt::verify(&keys, token).map_err(|e| match e {
                jwt::VerifyError::Malformed => AccessTokenError::Malformed,
                jwt::VerifyError::UnknownKey | jwt::VerifyError::BadSignature => {
                    AccessTokenError::InvalidSignature
                }
            })?
        };
        let str_claim = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        let int_claim = |name: &str| claims.get(name).and_then(Value::as_i64);
        if str_claim("aud").as_deref() != Some(GRAPH_AUDIENCE) {
            return Err(AccessTokenError::WrongAudience);
        }
        let (Some(tenant_id), Some(user_id), Some(client_id), Some(exp), Some(nbf), Some(iat)) = (
            str_claim("tid"),
            str_claim("oid"),
            str_claim("appid"),
            int_claim("exp"),
            int_claim("nbf"),
            int_claim("iat"),
        ) else {
            return Err(AccessTokenError::Malformed);
        };
        let now = self.now().unix_timestamp();
        // Five minutes of skew on nbf, as Microsoft's validators allow; exp is strict so short-lived test tokens
        // expire when they say.
        if now >= exp || now + 300 < nbf {
            return Err(AccessTokenError::Expired);
        }
        let token_scopes: BTreeSet<String> = str_claim("scp")
            .unwrap_or_default()
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let dir = self.directory();
        let tenant = dir.tenant(&tenant_id).ok_or(AccessTokenError::Revoked)?;
        let user = tenant.user(&user_id).ok_or(AccessTokenError::Revoked)?;
        if user
            .sessions_revoked_at
            .is_some_and(|t| t.unix_timestamp() >= iat)
        {
            return Err(AccessTokenError::Revoked);
        }
        let granted = tenant.granted_scopes(&client_id, &user_id);
        let scopes: BTreeSet<String> = token_scopes.intersection(&granted).cloned().collect();
        if scopes.is_empty() && !token_scopes.is_empty() {
            return Err(AccessTokenError::Revoked);
        }
        Ok(AccessClaims {
            tenant_id,
            user_id,
            client_id,
            scopes,
            expires_at: OffsetDateTime::from_unix_timestamp(exp)
                .map_err(|_| AccessTokenError::Malformed)?,
        })
    }
}

/// An opaque claim value shaped like Microsoft's (aio, rh, uti, sub of access tokens).
pub(crate) fn opaque() -> String {
    use base64::Engine;
    let bytes: [u8; 24] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
