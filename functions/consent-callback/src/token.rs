//! Redeeming an authorization code at `{LOGIN_BASE_URL}/{authority}/oauth2/v2.0/token`: the
//! [`CodeExchange`] port and its implementation on the `oauth2` crate, driven by
//! connector-core's [`ReqwestDriver`] (the workers' refresh grant uses the same one: redirects
//! off, so a token request can never be forwarded elsewhere; responses size-capped),
//! with Microsoft's token-response (`id_token`) and error-response (`error_codes`,
//! `trace_id`, `correlation_id`, `suberror`) shapes. Client authentication is
//! `client_secret_post`.

use async_trait::async_trait;
use connector_core::config::BaseUrl;
use connector_core::oauth::ReqwestDriver;
pub use connector_core::oauth::token_http_client as http_client;
use connector_core::secret::{AuthCode, ClientSecret, PkceVerifier, RefreshToken, SecretString};
use oauth2::basic::{
    BasicRevocationErrorResponse, BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthType, AuthorizationCode, ClientId, EndpointNotSet, EndpointSet, ExtraTokenFields,
    PkceCodeVerifier, RedirectUrl, RequestTokenError, StandardRevocableToken,
    StandardTokenResponse, TokenResponse as _, TokenUrl,
};
use serde::{Deserialize, Serialize};

use crate::errors::{MicrosoftError, TokenErrorBody};

/// What a code redemption gives us. The access token is never stored: it is used once, by the
/// administrator's verification sign-in, to read the tenant's verified domains.
#[derive(Debug)]
pub struct TokenSet {
    pub access_token: SecretString,
    pub refresh_token: Option<RefreshToken>,
    pub id_token: Option<SecretString>,
    /// The response's `scope` as sent: optional, and never holding `offline_access` even when
    /// granted. Read it with [`ScopeSet::granted_by_token_response`] and the request.
    pub scope: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Microsoft answered with an error body.
    #[error("token endpoint refused the code: {0}")]
    Microsoft(Box<MicrosoftError>),
    /// Microsoft could not be reached.
    #[error("token endpoint unreachable")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Microsoft answered something we cannot read (its text is not kept: it may hold tokens).
    #[error("token endpoint answered unexpectedly: {0}")]
    Protocol(String),
}

#[async_trait]
pub trait CodeExchange: Send + Sync {
    /// Redeems `code` with its PKCE verifier at `authority` (`organizations` or a tenant GUID).
    async fn exchange(
        &self,
        authority: &str,
        code: AuthCode,
        verifier: PkceVerifier,
        redirect_uri: &str,
    ) -> Result<TokenSet, ExchangeError>;
}

/// Microsoft's extra token-response field.
#[derive(Debug, Deserialize, Serialize)]
pub struct MicrosoftTokenFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<SecretString>,
}

impl ExtraTokenFields for MicrosoftTokenFields {}

type MicrosoftTokenResponse = StandardTokenResponse<MicrosoftTokenFields, BasicTokenType>;

type MicrosoftClient = oauth2::Client<
    TokenErrorBody,
    MicrosoftTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// The real exchange, through connector-core's token-endpoint driver. `http` must be built
/// with redirects disabled (see [`http_client`]).
pub struct OAuthCodeExchange {
    driver: ReqwestDriver,
    login_base_url: BaseUrl,
    client_id: String,
    client_secret: ClientSecret,
}

impl OAuthCodeExchange {
    pub fn new(
        http: reqwest::Client,
        login_base_url: BaseUrl,
        client_id: impl Into<String>,
        client_secret: ClientSecret,
    ) -> Self {
        Self {
            driver: ReqwestDriver(http),
            login_base_url,
            client_id: client_id.into(),
            client_secret,
        }
    }

    fn client(
        &self,
        authority: &str,
        redirect_uri: &str,
    ) -> Result<MicrosoftClient, ExchangeError> {
        let token_url = self
            .login_base_url
            .join(&format!("{authority}/oauth2/v2.0/token"));
        Ok(oauth2::Client::new(ClientId::new(self.client_id.clone()))
            .set_client_secret(oauth2::ClientSecret::new(
                self.client_secret.secret().to_owned(),
            ))
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(
                TokenUrl::new(token_url)
                    .map_err(|_| ExchangeError::Protocol("invalid token URL".into()))?,
            )
            .set_redirect_uri(
                RedirectUrl::new(redirect_uri.to_owned())
                    .map_err(|_| ExchangeError::Protocol("invalid redirect URI".into()))?,
            ))
    }
}

#[async_trait]
impl CodeExchange for OAuthCodeExchange {
    #[tracing::instrument(skip_all, fields(authority = authority))]
    async fn exchange(
        &self,
        authority: &str,
        code: AuthCode,
        verifier: PkceVerifier,
        redirect_uri: &str,
    ) -> Result<TokenSet, ExchangeError> {
        let client = self.client(authority, redirect_uri)?;
        let response = client
            .exchange_code(AuthorizationCode::new(code.into_secret()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.into_secret()))
            .request_async(&self.driver)
            .await
            .map_err(|error| match error {
                RequestTokenError::ServerResponse(body) => {
                    ExchangeError::Microsoft(Box::new(MicrosoftError::from_token_error(&body)))
                }
                RequestTokenError::Request(error) => ExchangeError::Transport(Box::new(error)),
                RequestTokenError::Parse(error, _body) => {
                    ExchangeError::Protocol(format!("unreadable JSON at {}", error.path()))
                }
                RequestTokenError::Other(message) => ExchangeError::Protocol(message),
            })?;
        let scope = response.scopes().map(|scopes| {
            scopes
                .iter()
                .map(|scope| scope.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        });
        Ok(TokenSet {
            access_token: SecretString::new(response.access_token().secret().to_owned()),
            refresh_token: response
                .refresh_token()
                .map(|token| RefreshToken::new(token.secret().to_owned())),
            id_token: response.extra_fields().id_token.clone(),
            scope,
        })
    }
}
