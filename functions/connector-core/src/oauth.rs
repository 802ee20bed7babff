//! The refresh side of OAuth: the refresh-token grant against
//! `{LOGIN_BASE_URL}/{tenant}/oauth2/v2.0/token` (client_secret_post), Microsoft's error
//! bodies parsed and classified, and the [`TokenProvider`] that hands workers access tokens.
//!
//! The grant is built with the `oauth2` crate (typed request and response, redacting secret
//! types), without its reqwest feature: [`ReqwestDriver`] drives it through our reqwest 0.13
//! client, with redirects off as oauth2-rs advises for token endpoints.
//!
//! ## Classification (what a failed refresh does to a connection)
//! - `invalid_grant` / `interaction_required` / `login_required` (revoked or expired grant,
//!   MFA or Conditional Access needing the user) → [`RefreshFailure::ReauthRequired`];
//! - consent withdrawn: AADSTS65001 / 65004 (or `consent_required`), 700016 (app gone from
//!   the tenant, `unauthorized_client`), 500011 (`invalid_resource`), 50105 (user no longer
//!   assigned) → [`RefreshFailure::ConsentRevoked`];
//! - our own configuration: `invalid_client` (7000215 wrong secret value, 7000222 expired
//!   secret, 7000xx assertion problems), `invalid_request`, `unsupported_grant_type`,
//!   `invalid_scope`, and anything unknown → [`RefreshFailure::Operator`]: no user is blamed;
//! - HTTP 5xx, `temporarily_unavailable`, timeouts, connection errors →
//!   [`RefreshFailure::Transient`].
//!
//! ## The app's credential ([`AppCredential`])
//! Every refresh authenticates the app with its client secret or a KMS-signed client
//! assertion; after `invalid_client` a rotated secret is read once and the refresh retried
//! once (see [`crate::credential`]).
//!
//! ## Rotated refresh tokens ([`RotationPolicy`])
//! Every refresh returns a new refresh token. Microsoft does not revoke the old one, and the
//! 90-day limit is an *inactivity* window, so storing every rotation buys nothing while
//! Secrets Manager writes are scarce (and cost a secret version each). The provider keeps the
//! newest token in memory for the warm container and writes it to the vault only when the
//! stored one is older than `store_after` (24 hours by default): at most one write per user
//! per day, and the stored token is never more than a day older than the newest.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use oauth2::basic::{
    BasicRevocationErrorResponse, BasicTokenIntrospectionResponse, BasicTokenResponse,
};
use oauth2::{
    AuthType, EndpointNotSet, EndpointSet, ErrorResponse, RequestTokenError,
    StandardRevocableToken, TokenResponse,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use tracing::{debug, info, instrument, warn};

use crate::clock::Clock;
use crate::config::BaseUrl;
use crate::credential::{AppCredential, ClientAuth, CredentialError, refuses_client};
use crate::domain::{Feature, Scope, ScopeSet, TenantId, UserKey};
use crate::ports::{ClientSecretSource, TokenVault, VaultError};
use crate::secret::{AccessToken, ClientSecret, RefreshToken, TokenRecord};

/// Microsoft's token-endpoint error body (graph-contract §3).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct MicrosoftTokenError {
    pub error: String,
    #[serde(default)]
    pub error_description: Option<String>,
    #[serde(default)]
    pub error_codes: Vec<u64>,
    #[serde(default)]
    pub suberror: Option<String>,
    #[serde(default)]
    pub trace_id: Option<String>,
    #[serde(default)]
    pub correlation_id: Option<String>,
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub error_uri: Option<String>,
    /// A claims challenge (JSON as a string), to pass back to `/authorize`.
    #[serde(default)]
    pub claims: Option<String>,
}

impl std::fmt::Display for MicrosoftTokenError {
    /// The error, codes, suberror and Microsoft's ids: what support needs. The description
    /// is left out (it can name the user).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error)?;
        for code in &self.error_codes {
            write!(f, " AADSTS{code}")?;
        }
        if let Some(suberror) = &self.suberror {
            write!(f, " (suberror {suberror})")?;
        }
        if let Some(trace) = &self.trace_id {
            write!(f, " trace_id={trace}")?;
        }
        if let Some(correlation) = &self.correlation_id {
            write!(f, " correlation_id={correlation}")?;
        }
        Ok(())
    }
}

impl ErrorResponse for MicrosoftTokenError {}

impl MicrosoftTokenError {
    fn has_code(&self, codes: &[u64]) -> bool {
        self.error_codes.iter().any(|code| codes.contains(code))
    }

    /// What this refusal means for the connection.
    pub fn classify(&self) -> RefreshFailure {
        let error = self.error.to_ascii_lowercase();
        let suberror = self.suberror.as_deref().unwrap_or_default();
        if error == "invalid_client" || self.has_code(&[7000215, 7000222, 700024, 700025, 700027]) {
            return RefreshFailure::Operator;
        }
        if self.has_code(&[65001, 65004, 700016, 500011, 50105])
            || error == "consent_required"
            || error == "unauthorized_client"
            || error == "invalid_resource"
            || suberror.eq_ignore_ascii_case("consent_required")
        {
            return RefreshFailure::ConsentRevoked;
        }
        match error.as_str() {
            "invalid_grant" | "interaction_required" | "login_required" => {
                RefreshFailure::ReauthRequired
            }
            "temporarily_unavailable" | "server_error" => RefreshFailure::Transient,
            _ => RefreshFailure::Operator,
        }
    }

    /// The reason code recorded on the connection: `AADSTS65001`, or the error itself.
    pub fn reason_code(&self) -> String {
        match self.error_codes.first() {
            Some(code) => format!("AADSTS{code}"),
            None => self.error.clone(),
        }
    }
}

/// What a failed refresh means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshFailure {
    /// The user must sign in again.
    ReauthRequired,
    /// An administrator or the user must consent again.
    ConsentRevoked,
    /// Our app registration or request is wrong: an operator must act; no user is blamed.
    Operator,
    /// Try again later.
    Transient,
}

/// A failed refresh.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("the token endpoint refused the refresh: {0}")]
    Refused(Box<MicrosoftTokenError>),
    #[error("the token endpoint answered HTTP {status}")]
    ServerStatus { status: u16 },
    #[error("the token endpoint could not be reached")]
    Transport(#[source] reqwest::Error),
    /// The body is not kept: it may hold tokens.
    #[error("the token endpoint's response could not be read: {0}")]
    Malformed(String),
}

impl OAuthError {
    pub fn classify(&self) -> RefreshFailure {
        match self {
            OAuthError::Refused(error) => error.classify(),
            OAuthError::ServerStatus { status } if *status >= 500 || *status == 429 => {
                RefreshFailure::Transient
            }
            OAuthError::ServerStatus { .. } => RefreshFailure::Operator,
            OAuthError::Transport(_) => RefreshFailure::Transient,
            OAuthError::Malformed(_) => RefreshFailure::Transient,
        }
    }

    pub fn reason_code(&self) -> String {
        match self {
            OAuthError::Refused(error) => error.reason_code(),
            OAuthError::ServerStatus { status } => format!("token_endpoint_http_{status}"),
            OAuthError::Transport(_) => "token_endpoint_unreachable".into(),
            OAuthError::Malformed(_) => "token_endpoint_malformed".into(),
        }
    }
}

/// How the driver failed before oauth2 could parse anything.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("request could not be built: {0}")]
    Build(String),
    #[error("transport")]
    Transport(#[source] reqwest::Error),
    /// 5xx (and 429) bodies are not OAuth errors worth parsing.
    #[error("HTTP {0}")]
    Status(u16),
    /// More than [`MAX_TOKEN_RESPONSE_BYTES`]: not read, whatever it is.
    #[error("response larger than {MAX_TOKEN_RESPONSE_BYTES} bytes")]
    TooLarge,
}

/// Token responses larger than this are not read (a real one is a few KB).
pub const MAX_TOKEN_RESPONSE_BYTES: usize = 256 * 1024;

/// Drives oauth2's requests through a reqwest 0.13 client: the one driver for every grant
/// (consent-callback's code redemption and the workers' refreshes).
#[derive(Clone, Debug)]
pub struct ReqwestDriver(pub reqwest::Client);

impl<'c> oauth2::AsyncHttpClient<'c> for ReqwestDriver {
    type Error = DriverError;
    type Future =
        Pin<Box<dyn Future<Output = Result<oauth2::HttpResponse, DriverError>> + Send + 'c>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let url = parts.uri.to_string();
            let mut builder = self.0.request(parts.method, url).body(body);
            for (name, value) in &parts.headers {
                builder = builder.header(name, value);
            }
            let response = builder
                .send()
                .await
                .map_err(|error| DriverError::Transport(error.without_url()))?;
            let status = response.status();
            if status.is_server_error() || status.as_u16() == 429 {
                return Err(DriverError::Status(status.as_u16()));
            }
            if response
                .content_length()
                .is_some_and(|length| length > MAX_TOKEN_RESPONSE_BYTES as u64)
            {
                return Err(DriverError::TooLarge);
            }
            let headers = response.headers().clone();
            let bytes = response
                .bytes()
                .await
                .map_err(|error| DriverError::Transport(error.without_url()))?;
            if bytes.len() > MAX_TOKEN_RESPONSE_BYTES {
                return Err(DriverError::TooLarge);
            }
            let mut out = http::Response::builder().status(status);
            for (name, value) in &headers {
                out = out.header(name, value);
            }
            out.body(bytes.to_vec())
                .map_err(|error| DriverError::Build(error.to_string()))
        })
    }
}

type MicrosoftClient = oauth2::Client<
    MicrosoftTokenError,
    BasicTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// What a successful refresh gives.
pub struct TokenGrant {
    pub access_token: AccessToken,
    pub expires_at: OffsetDateTime,
    /// The rotated refresh token, when Microsoft sent one.
    pub refresh_token: Option<RefreshToken>,
    /// What the grant covers, read by [`ScopeSet::granted_by_token_response`]: the response's
    /// `scope` (the scopes asked when absent), with `offline_access`, which Entra never
    /// echoes but the refresh token we redeemed proves.
    pub scopes: ScopeSet,
}

impl std::fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenGrant")
            .field("access_token", &self.access_token)
            .field("expires_at", &self.expires_at)
            .field("refresh_token", &self.refresh_token)
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// The refresh-token grant for one app registration.
#[derive(Clone, Debug)]
pub struct RefreshClient {
    driver: ReqwestDriver,
    login_base_url: BaseUrl,
    client_id: String,
}

/// The reqwest client for Microsoft's identity endpoints (token endpoint, JWKS, discovery):
/// no redirects, so a token request can never be forwarded elsewhere, and bounded time
/// (15 s: consent-callback redeems codes inside API Gateway's 30 s).
pub fn token_http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(15))
        .user_agent(concat!("office365-connector/", env!("CARGO_PKG_VERSION")))
        .build()
}

impl RefreshClient {
    pub fn new(
        http: reqwest::Client,
        login_base_url: BaseUrl,
        client_id: impl Into<String>,
    ) -> Self {
        Self {
            driver: ReqwestDriver(http),
            login_base_url,
            client_id: client_id.into(),
        }
    }

    /// `{LOGIN_BASE_URL}/{tenant}/oauth2/v2.0/token`: where refreshes go, and the `aud` of
    /// a client assertion.
    pub fn token_url(&self, tenant: &TenantId) -> String {
        self.login_base_url
            .join(&format!("{tenant}/oauth2/v2.0/token"))
    }

    fn client(&self, tenant: &TenantId, auth: &ClientAuth) -> Result<MicrosoftClient, OAuthError> {
        let token_url = oauth2::TokenUrl::new(self.token_url(tenant))
            .map_err(|error| OAuthError::Malformed(format!("token URL: {error}")))?;
        let client = oauth2::Client::new(oauth2::ClientId::new(self.client_id.clone()))
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(token_url);
        Ok(match auth.client_secret() {
            Some(secret) => client.set_client_secret(secret),
            None => client,
        })
    }

    /// Redeems `refresh_token` for a new access token (and a rotated refresh token),
    /// asking for `scopes` (our Graph scopes, qualified, plus `offline_access`) when given.
    pub async fn refresh(
        &self,
        tenant: &TenantId,
        secret: &ClientSecret,
        refresh_token: &RefreshToken,
        scopes: &ScopeSet,
        now: OffsetDateTime,
    ) -> Result<TokenGrant, OAuthError> {
        let auth = ClientAuth::Secret {
            value: secret.clone(),
            generation: 0,
        };
        self.refresh_with(tenant, &auth, refresh_token, scopes, now)
            .await
    }

    /// As [`RefreshClient::refresh`], the app authenticated by `auth` (a secret or an assertion).
    #[instrument(skip_all, fields(tenant_id = %tenant))]
    pub async fn refresh_with(
        &self,
        tenant: &TenantId,
        auth: &ClientAuth,
        refresh_token: &RefreshToken,
        scopes: &ScopeSet,
        now: OffsetDateTime,
    ) -> Result<TokenGrant, OAuthError> {
        let client = self.client(tenant, auth)?;
        let token = oauth2::RefreshToken::new(refresh_token.secret().to_owned());
        let mut request = client.exchange_refresh_token(&token);
        for (name, value) in auth.form_params() {
            request = request.add_extra_param(name, value);
        }
        let asked = request_scopes(scopes);
        for scope in &asked {
            request = request.add_scope(oauth2::Scope::new(scope.clone()));
        }
        let response = request
            .request_async(&self.driver)
            .await
            .map_err(|error| match error {
                RequestTokenError::ServerResponse(error) => OAuthError::Refused(Box::new(error)),
                RequestTokenError::Request(DriverError::Status(status)) => {
                    OAuthError::ServerStatus { status }
                }
                RequestTokenError::Request(DriverError::Transport(error)) => {
                    OAuthError::Transport(error)
                }
                RequestTokenError::Request(DriverError::Build(message)) => {
                    OAuthError::Malformed(message)
                }
                RequestTokenError::Request(error @ DriverError::TooLarge) => {
                    OAuthError::Malformed(error.to_string())
                }
                // serde's message may quote the body, which may hold a token: keep the path only.
                RequestTokenError::Parse(error, _) => {
                    OAuthError::Malformed(format!("unexpected JSON at {}", error.path()))
                }
                RequestTokenError::Other(message) => OAuthError::Malformed(message),
            })?;
        let lifetime = response
            .expires_in()
            .map(|expires_in| Duration::seconds(expires_in.as_secs().min(86_400) as i64))
            .unwrap_or(Duration::hours(1));
        Ok(TokenGrant {
            access_token: AccessToken::new(response.access_token().secret().clone()),
            expires_at: now + lifetime,
            refresh_token: response
                .refresh_token()
                .map(|token| RefreshToken::new(token.secret().clone())),
            scopes: {
                let reported = response.scopes().map(|scopes| {
                    scopes
                        .iter()
                        .map(|scope| scope.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                });
                // Nothing asked: Microsoft keeps the original grant, i.e. the record's scopes.
                let requested = if asked.is_empty() {
                    scopes.clone()
                } else {
                    asked.iter().map(String::as_str).collect()
                };
                ScopeSet::granted_by_token_response(reported.as_deref(), &requested, true)
            },
        })
    }
}

/// The `scope` parameter of a refresh: the Graph scopes of `scopes` (qualified, ours and
/// others such as `Calendars.Read`) and `offline_access`; nothing when the record does not
/// know its scopes (Microsoft then keeps the original grant's).
fn request_scopes(scopes: &ScopeSet) -> Vec<String> {
    let graph_only: ScopeSet = scopes
        .names()
        .into_iter()
        .filter(|name| Scope::parse(name).is_none_or(|scope| !scope.is_oidc()))
        .collect();
    let mut out = graph_only.request_names();
    if !out.is_empty() {
        out.push(Scope::OfflineAccess.name().to_owned());
    }
    out
}

/// When to refresh and when to store a rotated refresh token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotationPolicy {
    /// Refresh when the access token expires within this margin.
    pub refresh_margin: Duration,
    /// Write a rotated refresh token to the vault only when the stored one is older.
    pub store_after: Duration,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            refresh_margin: Duration::minutes(5),
            store_after: Duration::hours(24),
        }
    }
}

/// Why no access token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The user's secret does not exist (never connected, or disconnected).
    #[error("no refresh token is stored for this user")]
    NotConnected,
    #[error("the token vault failed")]
    Vault(#[source] VaultError),
    #[error("the app's credential could not be presented")]
    ClientSecret(#[source] CredentialError),
    #[error(transparent)]
    Refresh(#[from] OAuthError),
}

impl TokenError {
    pub fn classify(&self) -> RefreshFailure {
        match self {
            TokenError::NotConnected => RefreshFailure::ReauthRequired,
            TokenError::Vault(_) => RefreshFailure::Transient,
            TokenError::ClientSecret(_) => RefreshFailure::Operator,
            TokenError::Refresh(error) => error.classify(),
        }
    }

    pub fn reason_code(&self) -> String {
        match self {
            TokenError::NotConnected => "refresh_token_missing".into(),
            TokenError::Vault(_) => "token_vault_unavailable".into(),
            TokenError::ClientSecret(_) => "client_secret_unavailable".into(),
            TokenError::Refresh(error) => error.reason_code(),
        }
    }
}

/// One user's tokens as the warm container remembers them.
struct Cached {
    access_token: AccessToken,
    expires_at: OffsetDateTime,
    /// The newest refresh token we hold (possibly newer than the stored one).
    refresh_token: RefreshToken,
    scopes: ScopeSet,
    /// `updatedAt` of the vault's copy.
    stored_at: OffsetDateTime,
}

/// Cached users beyond this are evicted (expired ones first) so a long-lived container
/// does not grow without bound.
const CACHE_LIMIT: usize = 10_000;

/// Hands out access tokens per user: from memory while valid, refreshed when within the
/// margin of expiry, rotated refresh tokens stored per [`RotationPolicy`].
pub struct TokenProvider {
    vault: Arc<dyn TokenVault>,
    credential: Arc<AppCredential>,
    client: RefreshClient,
    clock: Arc<dyn Clock>,
    policy: RotationPolicy,
    /// The function's own feature: refreshes ask for its scopes only, as granted
    /// ([`Feature::scopes_in`]); the stored record's scopes when `None`.
    feature: Option<Feature>,
    cache: Mutex<HashMap<UserKey, Cached>>,
}

impl TokenProvider {
    /// Authenticating with the client secret of `client_secret` (see [`TokenProvider::with_credential`]).
    pub fn new(
        vault: Arc<dyn TokenVault>,
        client_secret: Arc<dyn ClientSecretSource>,
        client: RefreshClient,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::with_credential(
            vault,
            Arc::new(AppCredential::secret(client_secret)),
            client,
            clock,
        )
    }

    /// Authenticating with `credential`: a client secret or a KMS-held certificate.
    pub fn with_credential(
        vault: Arc<dyn TokenVault>,
        credential: Arc<AppCredential>,
        client: RefreshClient,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            vault,
            credential,
            client,
            clock,
            policy: RotationPolicy::default(),
            feature: None,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Ask refreshes for this feature's scopes only, as the user granted them (the rule of
    /// [`Feature::scopes_in`], the same one that decides whether the feature is usable), so
    /// that withdrawing another feature's scope does not fail this function's refresh.
    pub fn for_feature(mut self, feature: Feature) -> Self {
        self.feature = Some(feature);
        self
    }

    pub fn with_policy(mut self, policy: RotationPolicy) -> Self {
        self.policy = policy;
        self
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<UserKey, Cached>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A valid access token for the user: cached, or refreshed.
    #[instrument(skip_all, fields(tenant_id = %key.tenant_id, user_id = %key.user_id))]
    pub async fn access_token(&self, key: &UserKey) -> Result<AccessToken, TokenError> {
        let now = self.clock.now();
        if let Some(cached) = self.cache().get(key)
            && cached.expires_at - self.policy.refresh_margin > now
        {
            return Ok(cached.access_token.clone());
        }
        self.refresh(key).await
    }

    /// Graph refused the token we gave: refresh now, whatever its expiry says.
    #[instrument(skip_all, fields(tenant_id = %key.tenant_id, user_id = %key.user_id))]
    pub async fn refresh_rejected(&self, key: &UserKey) -> Result<AccessToken, TokenError> {
        self.refresh(key).await
    }

    /// Drops what the container remembers about a user (after a status change).
    pub fn forget(&self, key: &UserKey) {
        self.cache().remove(key);
    }

    async fn refresh(&self, key: &UserKey) -> Result<AccessToken, TokenError> {
        let remembered = self.cache().get(key).map(|cached| {
            (
                cached.refresh_token.clone(),
                cached.scopes.clone(),
                cached.stored_at,
            )
        });
        let (refresh_token, scopes, stored_at) = match remembered {
            Some(remembered) => remembered,
            None => {
                let record = self
                    .vault
                    .get_token(key)
                    .await
                    .map_err(|error| match error {
                        VaultError::NotFound { .. } => TokenError::NotConnected,
                        other => TokenError::Vault(other),
                    })?
                    .ok_or(TokenError::NotConnected)?;
                (record.refresh_token, record.scopes, record.updated_at)
            }
        };
        let now = self.clock.now();
        let narrowed = self.feature.and_then(|feature| feature.scopes_in(&scopes));
        let asked = narrowed.clone().unwrap_or_else(|| scopes.clone());
        let refreshed = self
            .credential
            .call(
                &self.client.token_url(&key.tenant_id),
                || self.clock.now(),
                |error: &TokenError| match error {
                    TokenError::Refresh(OAuthError::Refused(body)) => {
                        refuses_client(&body.error, &body.error_codes)
                    }
                    _ => false,
                },
                TokenError::ClientSecret,
                |auth| {
                    let (refresh_token, asked) = (&refresh_token, &asked);
                    async move {
                        self.client
                            .refresh_with(&key.tenant_id, &auth, refresh_token, asked, now)
                            .await
                            .map_err(TokenError::from)
                    }
                },
            )
            .await;
        let grant = match refreshed {
            Ok(grant) => grant,
            Err(error) => {
                if error.classify() != RefreshFailure::Transient {
                    self.forget(key);
                }
                return Err(error);
            }
        };
        // A narrowed request reports only what it asked for: keep the record's full set then.
        let scopes = if narrowed.is_some() {
            scopes
        } else {
            grant.scopes.clone()
        };
        let newest = grant.refresh_token.clone().unwrap_or(refresh_token);
        let mut stored_at = stored_at;
        if grant.refresh_token.is_some() && now - stored_at >= self.policy.store_after {
            let record = TokenRecord {
                refresh_token: newest.clone(),
                scopes: scopes.clone(),
                updated_at: now,
            };
            // Never creates the secret: a user disconnected meanwhile stays without one.
            match self.vault.replace_token(key, &record).await {
                Ok(true) => {
                    info!("stored the rotated refresh token");
                    stored_at = now;
                }
                Ok(false) => {
                    info!("the user's token secret is gone (disconnected); not stored again")
                }
                // The stored token stays valid (Microsoft does not revoke rotated ones).
                Err(error) => warn!(error = %error, "could not store the rotated refresh token"),
            }
        } else {
            debug!("kept the rotated refresh token in memory only");
        }
        let access_token = grant.access_token.clone();
        let mut cache = self.cache();
        if cache.len() >= CACHE_LIMIT && !cache.contains_key(key) {
            cache.retain(|_, cached| cached.expires_at > now);
            if cache.len() >= CACHE_LIMIT
                && let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, cached)| cached.expires_at)
                    .map(|(key, _)| key.clone())
            {
                cache.remove(&oldest);
            }
        }
        cache.insert(
            key.clone(),
            Cached {
                access_token: grant.access_token,
                expires_at: grant.expires_at,
                refresh_token: newest,
                scopes,
                stored_at,
            },
        );
        Ok(access_token)
    }
}

/// Source of bearer tokens for one user, as the Graph client needs it.
#[async_trait]
pub trait BearerSource: Send + Sync {
    async fn bearer(&self) -> Result<AccessToken, TokenError>;
    /// The last token was refused (401): get a fresh one.
    async fn refresh_rejected(&self) -> Result<AccessToken, TokenError>;
}

/// A [`TokenProvider`] bound to one user.
pub struct UserBearer<'p> {
    pub provider: &'p TokenProvider,
    pub key: UserKey,
}

#[async_trait]
impl BearerSource for UserBearer<'_> {
    async fn bearer(&self) -> Result<AccessToken, TokenError> {
        self.provider.access_token(&self.key).await
    }

    async fn refresh_rejected(&self) -> Result<AccessToken, TokenError> {
        self.provider.refresh_rejected(&self.key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(body: &str) -> MicrosoftTokenError {
        serde_json::from_str(body).expect("an error body")
    }

    #[test]
    fn microsoft_errors_are_classified() {
        for (body, expected, reason) in [
            (
                r#"{"error":"invalid_grant","error_description":"AADSTS70008: expired","error_codes":[70008],"trace_id":"t","correlation_id":"c"}"#,
                RefreshFailure::ReauthRequired,
                "AADSTS70008",
            ),
            (
                r#"{"error":"invalid_grant","error_codes":[65001],"suberror":"consent_required"}"#,
                RefreshFailure::ConsentRevoked,
                "AADSTS65001",
            ),
            (
                r#"{"error":"unauthorized_client","error_codes":[700016]}"#,
                RefreshFailure::ConsentRevoked,
                "AADSTS700016",
            ),
            (
                r#"{"error":"invalid_client","error_codes":[7000215]}"#,
                RefreshFailure::Operator,
                "AADSTS7000215",
            ),
            (
                r#"{"error":"interaction_required","error_codes":[50076],"suberror":"basic_action"}"#,
                RefreshFailure::ReauthRequired,
                "AADSTS50076",
            ),
            (
                r#"{"error":"temporarily_unavailable"}"#,
                RefreshFailure::Transient,
                "temporarily_unavailable",
            ),
            (
                r#"{"error":"something_new"}"#,
                RefreshFailure::Operator,
                "something_new",
            ),
        ] {
            let error = refusal(body);
            assert_eq!(error.classify(), expected, "{body}");
            assert_eq!(error.reason_code(), reason);
        }
        assert_eq!(
            OAuthError::ServerStatus { status: 503 }.classify(),
            RefreshFailure::Transient
        );
    }

    #[test]
    fn display_keeps_ids_and_drops_the_description() {
        let error = refusal(
            r#"{"error":"invalid_grant","error_description":"AADSTS50173: user adele@contoso.com","error_codes":[50173],"trace_id":"t-1","correlation_id":"c-1"}"#,
        );
        let text = error.to_string();
        assert!(text.contains("AADSTS50173") && text.contains("t-1") && text.contains("c-1"));
        assert!(!text.contains("adele"));
    }

    #[test]
    fn refresh_scopes_are_qualified_graph_scopes() {
        let scopes = ScopeSet::parse("openid profile offline_access Mail.Read");
        assert_eq!(
            request_scopes(&scopes),
            vec![
                "https://graph.microsoft.com/Mail.Read".to_owned(),
                "offline_access".to_owned()
            ]
        );
        assert!(request_scopes(&ScopeSet::new()).is_empty());
    }
}

#[cfg(test)]
#[path = "oauth_conformance.rs"]
mod conformance;
