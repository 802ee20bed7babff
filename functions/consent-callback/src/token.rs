//! Redeeming an authorization code at `{LOGIN_BASE_URL}/{authority}/oauth2/v2.0/token`: the
//! [`CodeExchange`] port and its implementation on the `oauth2` crate, driven by
//! connector-core's [`ReqwestDriver`] (the workers' refresh grant uses the same one: redirects
//! off, so a token request can never be forwarded elsewhere; responses size-capped),
//! with Microsoft's token-response (`id_token`) and error-response (`error_codes`,
//! `trace_id`, `correlation_id`, `suberror`) shapes. Client authentication is the app's
//! [`AppCredential`]: `client_secret_post`, re-reading a rotated secret once after
//! `invalid_client` and redeeming again (the sim, like Entra as far as any source says,
//! authenticates the client before it looks at the code, so a refused client does not burn
//! the code; if Entra ever did, the retry meets AADSTS54005 and the user is asked to start
//! again), or a KMS-signed `private_key_jwt` assertion.

use std::sync::Arc;

use async_trait::async_trait;
use connector_core::config::BaseUrl;
use connector_core::credential::{AppCredential, ClientAuth, refuses_client};
use connector_core::oauth::ReqwestDriver;
pub use connector_core::oauth::token_http_client as http_client;
use connector_core::secret::{AuthCode, PkceVerifier, RefreshToken, SecretString};
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
    /// The app's credential could not be presented (Secrets Manager or KMS failed).
    #[error("the app's credential could not be presented")]
    Credential(#[source] Box<connector_core::credential::CredentialError>),
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
    credential: Arc<AppCredential>,
}

impl OAuthCodeExchange {
    pub fn new(
        http: reqwest::Client,
        login_base_url: BaseUrl,
        client_id: impl Into<String>,
        credential: Arc<AppCredential>,
    ) -> Self {
        Self {
            driver: ReqwestDriver(http),
            login_base_url,
            client_id: client_id.into(),
            credential,
        }
    }

    /// `{LOGIN_BASE_URL}/{authority}/oauth2/v2.0/token`, also a client assertion's `aud`.
    fn token_url(&self, authority: &str) -> String {
        self.login_base_url
            .join(&format!("{authority}/oauth2/v2.0/token"))
    }

    fn client(
        &self,
        authority: &str,
        redirect_uri: &str,
        auth: &ClientAuth,
    ) -> Result<MicrosoftClient, ExchangeError> {
        let token_url = self.token_url(authority);
        let client = oauth2::Client::new(ClientId::new(self.client_id.clone()));
        let client = match auth.client_secret() {
            Some(secret) => client.set_client_secret(secret),
            None => client,
        };
        Ok(client
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
        let token_url = self.token_url(authority);
        let response = self
            .credential
            .call(
                &token_url,
                time::OffsetDateTime::now_utc,
                |error: &ExchangeError| match error {
                    ExchangeError::Microsoft(body) => refuses_client(
                        &body.error,
                        &body
                            .codes
                            .iter()
                            .map(|&code| u64::from(code))
                            .collect::<Vec<_>>(),
                    ),
                    _ => false,
                },
                |error| ExchangeError::Credential(Box::new(error)),
                |auth| self.redeem(authority, &code, &verifier, redirect_uri, auth),
            )
            .await?;
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

impl OAuthCodeExchange {
    /// One redemption attempt, the app authenticated by `auth`.
    async fn redeem(
        &self,
        authority: &str,
        code: &AuthCode,
        verifier: &PkceVerifier,
        redirect_uri: &str,
        auth: ClientAuth,
    ) -> Result<MicrosoftTokenResponse, ExchangeError> {
        let client = self.client(authority, redirect_uri, &auth)?;
        let mut request = client
            .exchange_code(AuthorizationCode::new(code.secret().to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.secret().to_owned()));
        for (name, value) in auth.form_params() {
            request = request.add_extra_param(name, value);
        }
        request
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
            })
    }
}
