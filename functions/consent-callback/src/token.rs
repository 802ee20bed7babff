//! Redeeming an authorization code at `{LOGIN_BASE_URL}/{authority}/oauth2/v2.0/token`: the
//! [`CodeExchange`] port and its implementation on the `oauth2` crate, driven by our own
//! reqwest client (redirects off, so a token request can never be forwarded elsewhere),
//! with Microsoft's token-response (`id_token`) and error-response (`error_codes`,
//! `trace_id`, `correlation_id`, `suberror`) shapes. Client authentication is
//! `client_secret_post`.

use async_trait::async_trait;
use connector_core::config::BaseUrl;
use connector_core::domain::ScopeSet;
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

/// Token responses larger than this are not read (a real one is a few KB).
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// What a code redemption gives us. The access token is not kept: this function never calls Graph.
#[derive(Debug)]
pub struct TokenSet {
    pub refresh_token: Option<RefreshToken>,
    pub id_token: Option<SecretString>,
    /// The `scope` of the response: what was actually granted.
    pub scope: ScopeSet,
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

/// The real exchange. `http` must be built with redirects disabled (see [`http_client`]).
pub struct OAuthCodeExchange {
    http: reqwest::Client,
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
            http,
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

/// The one HTTP client for Microsoft's identity endpoints: no redirects, bounded time.
pub fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(15))
        .user_agent(concat!("office365-connector/", env!("CARGO_PKG_VERSION")))
        .build()
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("request failed")]
    Request(#[source] reqwest::Error),
    #[error("response too large")]
    TooLarge,
    #[error("response could not be built")]
    Build(#[source] http::Error),
}

/// Sends an oauth2 request through reqwest.
pub async fn send(
    client: &reqwest::Client,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, HttpError> {
    let (parts, body) = request.into_parts();
    let response = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(HttpError::Request)?;
    let status = response.status();
    let headers = response.headers().clone();
    if response
        .content_length()
        .is_some_and(|length| length > MAX_RESPONSE_BYTES as u64)
    {
        return Err(HttpError::TooLarge);
    }
    let bytes = response.bytes().await.map_err(HttpError::Request)?;
    if bytes.len() > MAX_RESPONSE_BYTES {
        return Err(HttpError::TooLarge);
    }
    let mut builder = http::Response::builder().status(status);
    if let Some(map) = builder.headers_mut() {
        *map = headers;
    }
    builder.body(bytes.to_vec()).map_err(HttpError::Build)
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
        let shared = self.http.clone();
        let http = move |request: oauth2::HttpRequest| {
            let client = shared.clone();
            async move { send(&client, request).await }
        };
        let response = client
            .exchange_code(AuthorizationCode::new(code.into_secret()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.into_secret()))
            .request_async(&http)
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
        let scope = response
            .scopes()
            .map(|scopes| {
                scopes
                    .iter()
                    .map(|scope| scope.as_str())
                    .collect::<ScopeSet>()
            })
            .unwrap_or_default();
        Ok(TokenSet {
            refresh_token: response
                .refresh_token()
                .map(|token| RefreshToken::new(token.secret().to_owned())),
            id_token: response.extra_fields().id_token.clone(),
            scope,
        })
    }
}
