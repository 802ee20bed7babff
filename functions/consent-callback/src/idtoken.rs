//! id_token validation: the [`IdTokenValidator`] port and [`JwksValidator`], which checks a
//! token the way Microsoft's multi-tenant guidance asks, with `jsonwebtoken` doing the
//! signature, `aud` and time checks.
//!
//! Order matters: the header is read first and anything but `alg: RS256` with a `kid` is
//! refused before a key is looked up (no `none`, no HS256 keyed with our public key). The issuer
//! template comes from the `organizations` discovery document and must live under LOGIN_BASE_URL.
//!
//! Keys (signing-key-rollover, https://learn.microsoft.com/entra/identity-platform/signing-key-rollover,
//! read 2026-12-05: cache by `kid`, 24-hour TTL, refresh every hour, refresh on an unknown `kid`,
//! keep the last known good keys when a fetch fails, one fetch at a time):
//! - a fetch **replaces** the key set, so a key Microsoft withdraws stops validating at the next
//!   fetch (the doc's pseudo-code merges and lets a vanished key live out its 24 hours; we do not
//!   keep trusting a key Microsoft no longer publishes);
//! - keys older than [`KeyTimings::refresh`] (1 hour) are refetched on the next validation; if that
//!   fetch fails the cached keys stay in use until they are [`KeyTimings::ttl`] (24 hours) old;
//! - an unknown `kid` forces a synchronous fetch, at once unless another unknown `kid` forced one
//!   less than [`KeyTimings::floor`] (10 seconds) ago. Fetches are single-flight (one lock;
//!   whoever waited re-checks the cache after the fetch in flight). The doc's floor is 5 minutes,
//!   meant to stop redundant fetches; with single flight, a 10-second floor bounds forged kids to
//!   6 fetches a minute per container, while a genuine rollover (including an emergency one,
//!   which the doc says can happen "immediately") is picked up by the first token signed with the
//!   new key, and even under a forged-kid flood fails sign-ins for at most 10 seconds, not 5
//!   minutes. A failing endpoint is retried at most once per floor too.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use connector_core::config::BaseUrl;
use connector_core::domain::{TenantId, UserId};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::security::constant_time_eq;

/// How long fetched keys and the discovery document are trusted when refreshing them fails.
pub const KEYS_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// How old keys may get before the next validation refetches them (the doc's hourly refresh).
pub const KEYS_REFRESH: Duration = Duration::from_secs(60 * 60);
/// The least time between two key fetches (any cause): see the module doc.
pub const REFETCH_FLOOR: Duration = Duration::from_secs(10);

/// The key cache's clock settings; [`KeyTimings::default`] is production's.
#[derive(Clone, Copy, Debug)]
pub struct KeyTimings {
    /// Keys (and discovery) older than this are refetched on the next validation.
    pub refresh: Duration,
    /// Keys (and discovery) older than this are not used, whatever the fetch did.
    pub ttl: Duration,
    /// No fetch starts sooner than this after the previous attempt.
    pub floor: Duration,
}

impl Default for KeyTimings {
    fn default() -> Self {
        Self {
            refresh: KEYS_REFRESH,
            ttl: KEYS_TTL,
            floor: REFETCH_FLOOR,
        }
    }
}

/// The directory role template ids that can grant tenant-wide admin consent to delegated
/// permissions, as `wids` carries them. Sources, read 2026-12-05:
/// https://learn.microsoft.com/entra/identity/enterprise-apps/grant-admin-consent (Privileged Role
/// Administrator; Cloud Application Administrator or Application Administrator for any permission
/// except Microsoft Graph app roles, which this connector never asks) and
/// https://learn.microsoft.com/entra/identity/role-based-access-control/permissions-reference
/// (template ids; Global Administrator can manage all aspects of Microsoft Entra ID).
pub const CONSENT_ADMIN_ROLES: [(&str, &str); 4] = [
    (
        "62e90394-69f5-4237-9190-012177145e10",
        "Global Administrator",
    ),
    (
        "e8611ab8-c189-46e8-94e1-60213ab1f814",
        "Privileged Role Administrator",
    ),
    (
        "158c047a-c907-4556-b7ef-446551a6b5f7",
        "Cloud Application Administrator",
    ),
    (
        "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3",
        "Application Administrator",
    ),
];
/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 300;

const TENANT_PLACEHOLDER: &str = "{tenantid}";

/// What we take from a validated id_token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdTokenClaims {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub preferred_username: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    /// Present when the user's identity provider is not the token's tenant (guests).
    pub idp: Option<String>,
    pub issuer: String,
    /// The `wids` claim (directory role template ids), `None` when the token has none: Entra
    /// emits it only when the app registration's `groupMembershipClaims` is `DirectoryRole` or
    /// `All` (access-token-claims-reference, `wids`, read 2026-12-05; the id-token reference does
    /// not list it, but ID tokens configured for directory roles carry it: observed in
    /// https://github.com/AzureAD/microsoft-authentication-library-for-dotnet/issues/4134).
    /// Absent, no consent is recorded (fail closed).
    pub wids: Option<Vec<String>>,
}

impl IdTokenClaims {
    /// The first role of `wids` that can grant tenant-wide consent, by name.
    pub fn consent_admin_role(&self) -> Option<&'static str> {
        let wids = self.wids.as_ref()?;
        CONSENT_ADMIN_ROLES
            .iter()
            .find(|(id, _)| wids.iter().any(|w| w.eq_ignore_ascii_case(id)))
            .map(|(_, name)| *name)
    }
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdTokenError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm is not RS256")]
    Algorithm,
    #[error("the token's header has no key id")]
    MissingKeyId,
    #[error("the token is signed with a key that is not published")]
    UnknownKey,
    #[error("the token's signature is invalid")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is for another audience")]
    Audience,
    #[error("the token's issuer is not the issuer of its tenant")]
    Issuer,
    #[error("the token's tenant or user id is not a GUID")]
    Identity,
    #[error("the token's nonce does not match")]
    Nonce,
    #[error("the token lacks the claim {0}")]
    MissingClaim(String),
    #[error("the identity platform's metadata could not be read: {0}")]
    Metadata(String),
}

#[async_trait]
pub trait IdTokenValidator: Send + Sync {
    async fn validate(&self, id_token: &str, nonce: &str) -> Result<IdTokenClaims, IdTokenError>;
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<JwkEntry>,
}

#[derive(Deserialize)]
struct JwkEntry {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    key_use: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    /// Microsoft's own extension: the issuer the key may sign for.
    #[serde(default)]
    issuer: Option<String>,
}

struct CachedKey {
    key: DecodingKey,
    issuer: Option<String>,
}

#[derive(Default)]
struct Cache {
    issuer_template: Option<String>,
    jwks_uri: Option<String>,
    discovery_fetched: Option<Instant>,
    keys: HashMap<String, CachedKey>,
    /// The last successful key fetch.
    keys_fetched: Option<Instant>,
    /// The last key fetch attempted, successful or not.
    last_attempt: Option<Instant>,
    /// The last fetch forced by an unknown `kid`.
    last_forced: Option<Instant>,
}

pub struct JwksValidator {
    http: reqwest::Client,
    login_base_url: BaseUrl,
    client_id: String,
    timings: KeyTimings,
    cache: Mutex<Cache>,
}

#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
    kid: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    tid: Option<String>,
    oid: Option<String>,
    nonce: Option<String>,
    preferred_username: Option<String>,
    email: Option<String>,
    name: Option<String>,
    idp: Option<String>,
    wids: Option<Vec<String>>,
}

impl JwksValidator {
    /// `http` must not follow redirects (see `token::http_client`).
    pub fn new(
        http: reqwest::Client,
        login_base_url: BaseUrl,
        client_id: impl Into<String>,
    ) -> Self {
        Self::with_timings(http, login_base_url, client_id, KeyTimings::default())
    }

    /// As [`JwksValidator::new`] with other cache timings (tests shorten them).
    pub fn with_timings(
        http: reqwest::Client,
        login_base_url: BaseUrl,
        client_id: impl Into<String>,
        timings: KeyTimings,
    ) -> Self {
        Self {
            http,
            login_base_url,
            client_id: client_id.into(),
            timings,
            cache: Mutex::new(Cache::default()),
        }
    }

    fn under_login_base(&self, url: &str) -> bool {
        url.starts_with(&format!("{}/", self.login_base_url.as_str()))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, IdTokenError> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|_| IdTokenError::Metadata("unreachable".into()))?;
        if !response.status().is_success() {
            return Err(IdTokenError::Metadata(format!(
                "HTTP {}",
                response.status().as_u16()
            )));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|_| IdTokenError::Metadata("unreadable".into()))?;
        if bytes.len() > 512 * 1024 {
            return Err(IdTokenError::Metadata("too large".into()));
        }
        serde_json::from_slice(&bytes)
            .map_err(|_| IdTokenError::Metadata("not the expected JSON".into()))
    }

    async fn refresh_discovery(&self, cache: &mut Cache) -> Result<(), IdTokenError> {
        let age = cache.discovery_fetched.map(|at| at.elapsed());
        let usable = cache.issuer_template.is_some() && age.is_some_and(|a| a < self.timings.ttl);
        if usable && age.is_some_and(|a| a < self.timings.refresh) {
            return Ok(());
        }
        let url = self
            .login_base_url
            .join("organizations/v2.0/.well-known/openid-configuration");
        let discovery: Discovery = match self.get_json(&url).await {
            Ok(discovery) => discovery,
            // The last known good metadata stays in use until its TTL.
            Err(error) if usable => {
                tracing::warn!(error = %error, "refreshing the OpenID metadata failed; keeping the cached one");
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        if !self.under_login_base(&discovery.issuer)
            || !discovery.issuer.contains(TENANT_PLACEHOLDER)
        {
            return Err(IdTokenError::Metadata(
                "issuer template outside the login base URL".into(),
            ));
        }
        if !self.under_login_base(&discovery.jwks_uri) {
            return Err(IdTokenError::Metadata(
                "jwks_uri outside the login base URL".into(),
            ));
        }
        cache.issuer_template = Some(discovery.issuer);
        cache.jwks_uri = Some(discovery.jwks_uri);
        cache.discovery_fetched = Some(Instant::now());
        Ok(())
    }

    async fn fetch_keys(&self, cache: &mut Cache) -> Result<(), IdTokenError> {
        let uri = cache
            .jwks_uri
            .clone()
            .ok_or_else(|| IdTokenError::Metadata("no jwks_uri".into()))?;
        let set: JwkSet = self.get_json(&uri).await?;
        let mut keys = HashMap::new();
        for entry in set.keys {
            let usable = entry.kty == "RSA"
                && entry.key_use.as_deref().is_none_or(|u| u == "sig")
                && entry.alg.as_deref().is_none_or(|a| a == "RS256");
            let (Some(kid), Some(n), Some(e), true) = (entry.kid, entry.n, entry.e, usable) else {
                continue;
            };
            if let Ok(key) = DecodingKey::from_rsa_components(&n, &e) {
                keys.insert(
                    kid,
                    CachedKey {
                        key,
                        issuer: entry.issuer,
                    },
                );
            }
        }
        cache.keys = keys;
        cache.keys_fetched = Some(Instant::now());
        Ok(())
    }

    /// Ensures fresh metadata and keys, refetching (single-flight, at most once per floor) when
    /// the keys are due for their periodic refresh or `kid` is unknown. Returns the key and the
    /// issuer template.
    async fn key_for(
        &self,
        kid: &str,
    ) -> Result<(DecodingKey, Option<String>, String), IdTokenError> {
        // The lock makes fetches single-flight: a caller that waited finds the new key set.
        let mut cache = self.cache.lock().await;
        self.refresh_discovery(&mut cache).await?;
        let age = cache.keys_fetched.map(|at| at.elapsed());
        let usable = age.is_some_and(|a| a < self.timings.ttl);
        let periodic = !usable || age.is_some_and(|a| a >= self.timings.refresh);
        let unknown = !cache.keys.contains_key(kid);
        let since = |at: Option<Instant>| at.is_none_or(|at| at.elapsed() >= self.timings.floor);
        // Periodic refreshes retry a failing endpoint at most once per floor; fetches forced by
        // an unknown `kid` happen at most once per floor, whatever fetched before them.
        let fetch = if periodic {
            since(cache.last_attempt)
        } else {
            unknown && since(cache.last_forced)
        };
        if fetch {
            cache.last_attempt = Some(Instant::now());
            if !periodic {
                cache.last_forced = cache.last_attempt;
            }
            match self.fetch_keys(&mut cache).await {
                Ok(()) => {}
                // A failed refresh keeps the last known good keys until their TTL.
                Err(error) if usable => {
                    tracing::warn!(error = %error, "refreshing the signing keys failed; keeping the cached ones");
                }
                Err(error) => return Err(error),
            }
        }
        if cache
            .keys_fetched
            .is_none_or(|at| at.elapsed() >= self.timings.ttl)
        {
            return Err(IdTokenError::Metadata("no current signing keys".into()));
        }
        let template = cache
            .issuer_template
            .clone()
            .ok_or_else(|| IdTokenError::Metadata("no issuer".into()))?;
        let cached = cache.keys.get(kid).ok_or(IdTokenError::UnknownKey)?;
        Ok((cached.key.clone(), cached.issuer.clone(), template))
    }
}

fn read_header(token: &str) -> Result<Header, IdTokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(IdTokenError::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| IdTokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| IdTokenError::Malformed)
}

#[async_trait]
impl IdTokenValidator for JwksValidator {
    #[tracing::instrument(skip_all)]
    async fn validate(&self, id_token: &str, nonce: &str) -> Result<IdTokenClaims, IdTokenError> {
        if id_token.len() > 16 * 1024 {
            return Err(IdTokenError::Malformed);
        }
        let header = read_header(id_token)?;
        if header.alg.as_deref() != Some("RS256") {
            return Err(IdTokenError::Algorithm);
        }
        let kid = header
            .kid
            .filter(|kid| !kid.is_empty() && kid.len() <= 256)
            .ok_or(IdTokenError::MissingKeyId)?;
        let (key, key_issuer, template) = self.key_for(&kid).await?;

        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[self.client_id.as_str()]);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        let data = jsonwebtoken::decode::<Claims>(id_token, &key, &validation).map_err(
            |error| match error.kind() {
                ErrorKind::InvalidSignature => IdTokenError::Signature,
                ErrorKind::ExpiredSignature => IdTokenError::Expired,
                ErrorKind::ImmatureSignature => IdTokenError::NotYetValid,
                ErrorKind::InvalidAudience => IdTokenError::Audience,
                ErrorKind::InvalidAlgorithm => IdTokenError::Algorithm,
                ErrorKind::MissingRequiredClaim(claim) => IdTokenError::MissingClaim(claim.clone()),
                _ => IdTokenError::Malformed,
            },
        )?;
        let claims = data.claims;

        let tid = claims
            .tid
            .as_deref()
            .ok_or_else(|| IdTokenError::MissingClaim("tid".into()))?;
        let tenant_id = TenantId::parse(tid).map_err(|_| IdTokenError::Identity)?;
        // Compare against the tid as sent: a differently spelt GUID must not pass.
        let expected_issuer = template.replace(TENANT_PLACEHOLDER, tid);
        if claims.iss != expected_issuer || tid != tenant_id.as_str() {
            return Err(IdTokenError::Issuer);
        }
        if let Some(key_issuer) = key_issuer {
            let allowed = key_issuer.replace(TENANT_PLACEHOLDER, tid);
            if claims.iss != allowed {
                return Err(IdTokenError::Issuer);
            }
        }
        let oid = claims
            .oid
            .as_deref()
            .ok_or_else(|| IdTokenError::MissingClaim("oid".into()))?;
        let user_id = UserId::parse(oid).map_err(|_| IdTokenError::Identity)?;
        let token_nonce = claims
            .nonce
            .as_deref()
            .ok_or_else(|| IdTokenError::MissingClaim("nonce".into()))?;
        if !constant_time_eq(token_nonce, nonce) {
            return Err(IdTokenError::Nonce);
        }
        Ok(IdTokenClaims {
            tenant_id,
            user_id,
            preferred_username: claims.preferred_username,
            email: claims.email,
            name: claims.name,
            idp: claims.idp,
            issuer: claims.iss,
            wids: claims.wids,
        })
    }
}
