//! The app's own credential at Microsoft's token endpoint: a client secret read from Secrets
//! Manager, or a certificate whose private key lives in AWS KMS (`private_key_jwt`).
//!
//! ## Secret rotation without a redeploy
//! The secret is read once per container and kept. When the token endpoint refuses it with
//! `invalid_client` (AADSTS7000215 wrong value, AADSTS7000222 expired: Microsoft's
//! troubleshooting table at
//! https://learn.microsoft.com/azure/developer/java/sdk/troubleshooting-authentication-service-principal,
//! read 2026-12-05; body shape in microsoft-sim's
//! conformance/identity/token-error-invalid-client-secret.json), [`AppCredential::call`]
//! reads the secret again, once, and retries the request once. The re-read is single-flight:
//! every request that failed with the same cached value waits for one `GetSecretValue`, and
//! those that arrive after it retry with its result without reading again. A re-read that
//! finds the same value does not retry (the operator has not rotated yet), and for a minute
//! later failures of that value do not read again, so an expired secret does not turn each
//! token request into a Secrets Manager call.
//!
//! ## Certificate credentials through KMS
//! Microsoft's recommended credential for confidential clients: a JWT client assertion sent
//! as `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer` and
//! `client_assertion=<JWT>`. Format per "Microsoft identity platform application
//! authentication certificate credentials",
//! https://learn.microsoft.com/entra/identity-platform/certificate-credentials (read
//! 2026-12-05): header `alg`, `typ: JWT`, `x5t#S256` (base64url SHA-256 thumbprint of the
//! certificate's DER; `x5t`, SHA-1, in the older revision of the page); claims `aud` (the
//! token endpoint), `iss` = `sub` = the client id, `jti` (a GUID), `nbf`, `iat`, `exp` (5-10
//! minutes after `nbf`). The current page says `alg` "should be PS256"; its earlier revision
//! (https://learn.microsoft.com/previous-versions/azure/active-directory/develop/certificate-credentials,
//! read 2026-12-05) RS256, which Entra still accepts and MSAL Python still sends. We sign
//! RS256 (KMS `RSASSA_PKCS1_V1_5_SHA_256`): JWT's PS256 fixes the PSS salt at 32 bytes,
//! which KMS does, but moto signs PSS with the maximum salt length, so PS256 could not be
//! tested locally. The private key never leaves KMS: each assertion is one KMS `Sign`.
//! An assertion is made per request (a fresh `jti`: Entra may refuse a replayed one).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use time::{Duration, OffsetDateTime};
use tracing::{info, instrument, warn};

use crate::ports::{ClientSecretSource, VaultError};
use crate::secret::{ClientSecret, SecretString};

/// `client_assertion_type` of a JWT client assertion (RFC 7523 §2.2).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long an assertion is valid (Microsoft: "5-10 minutes after nbf").
pub const ASSERTION_LIFETIME: Duration = Duration::minutes(10);

/// After a re-read found the same secret, failures of that value do not read again for this long.
const UNCHANGED_QUIET: StdDuration = StdDuration::from_secs(60);

/// Why no credential could be presented.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("the app's client secret could not be read")]
    Secret(#[source] VaultError),
    #[error("KMS could not sign the client assertion with key {key_id}")]
    Sign {
        key_id: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the client assertion could not be built: {0}")]
    Assertion(String),
}

/// What one token request carries to authenticate the app.
pub enum ClientAuth {
    /// `client_secret` (client_secret_post), with the generation of the cached value.
    Secret {
        value: ClientSecret,
        generation: u64,
    },
    /// `client_assertion` and its type (private_key_jwt).
    Assertion(SecretString),
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientAuth::Secret { generation, .. } => {
                write!(f, "ClientAuth::Secret([redacted], generation {generation})")
            }
            ClientAuth::Assertion(_) => f.write_str("ClientAuth::Assertion([redacted])"),
        }
    }
}

impl ClientAuth {
    /// The secret to set on the oauth2 client (sent in the body), if this is a secret.
    pub fn client_secret(&self) -> Option<oauth2::ClientSecret> {
        match self {
            ClientAuth::Secret { value, .. } => {
                Some(oauth2::ClientSecret::new(value.secret().to_owned()))
            }
            ClientAuth::Assertion(_) => None,
        }
    }

    /// Extra form parameters of the token request: the assertion and its type, if any.
    pub fn form_params(&self) -> Vec<(&'static str, String)> {
        match self {
            ClientAuth::Secret { .. } => Vec::new(),
            ClientAuth::Assertion(jwt) => vec![
                ("client_assertion_type", JWT_BEARER.to_owned()),
                ("client_assertion", jwt.secret().to_owned()),
            ],
        }
    }
}

/// Signs with RSASSA-PKCS1-v1_5 SHA-256 (JWS `RS256`), the key staying where it is.
#[async_trait]
pub trait AssertionSigner: Send + Sync {
    async fn sign_rs256(&self, message: &[u8]) -> Result<Vec<u8>, CredentialError>;
}

/// An asymmetric `RSA_2048` (or larger) `SIGN_VERIFY` key in AWS KMS.
pub struct KmsSigner {
    client: aws_sdk_kms::Client,
    key_id: String,
}

impl KmsSigner {
    pub fn new(client: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        Self {
            client,
            key_id: key_id.into(),
        }
    }
}

#[async_trait]
impl AssertionSigner for KmsSigner {
    #[instrument(skip_all, fields(key_id = %self.key_id))]
    async fn sign_rs256(&self, message: &[u8]) -> Result<Vec<u8>, CredentialError> {
        let output = self
            .client
            .sign()
            .key_id(&self.key_id)
            .message(aws_sdk_kms::primitives::Blob::new(message))
            .message_type(aws_sdk_kms::types::MessageType::Raw)
            .signing_algorithm(aws_sdk_kms::types::SigningAlgorithmSpec::RsassaPkcs1V15Sha256)
            .send()
            .await
            .map_err(|error| CredentialError::Sign {
                key_id: self.key_id.clone(),
                source: Box::new(error),
            })?;
        output
            .signature
            .map(|blob| blob.into_inner())
            .ok_or_else(|| CredentialError::Sign {
                key_id: self.key_id.clone(),
                source: "KMS returned no signature".into(),
            })
    }
}

/// The certificate's thumbprint as the assertion header names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Thumbprint {
    /// `x5t#S256`: SHA-256 of the certificate's DER (Microsoft's current recommendation).
    Sha256([u8; 32]),
    /// `x5t`: SHA-1 of the certificate's DER (what the Entra portal shows as "Thumbprint").
    Sha1([u8; 20]),
}

impl Thumbprint {
    /// Hex, as the Entra portal and `openssl x509 -fingerprint` print it (colons allowed):
    /// 64 digits for SHA-256, 40 for SHA-1.
    pub fn parse_hex(value: &str) -> Result<Self, String> {
        let digits: String = value
            .chars()
            .filter(|c| *c != ':' && !c.is_whitespace())
            .collect();
        let bytes = hex::decode(&digits).map_err(|_| "not hexadecimal".to_owned())?;
        match bytes.len() {
            32 => Ok(Thumbprint::Sha256(bytes.try_into().expect("32 bytes"))),
            20 => Ok(Thumbprint::Sha1(bytes.try_into().expect("20 bytes"))),
            _ => Err("a SHA-256 (64 hex digits) or SHA-1 (40 hex digits) thumbprint".into()),
        }
    }

    fn header(&self) -> (&'static str, String) {
        match self {
            Thumbprint::Sha256(bytes) => ("x5t#S256", URL_SAFE_NO_PAD.encode(bytes)),
            Thumbprint::Sha1(bytes) => ("x5t", URL_SAFE_NO_PAD.encode(bytes)),
        }
    }
}

/// Builds `private_key_jwt` assertions signed by a key that never leaves its signer.
pub struct CertificateCredential {
    signer: Arc<dyn AssertionSigner>,
    client_id: String,
    thumbprint: Thumbprint,
}

impl CertificateCredential {
    pub fn new(
        signer: Arc<dyn AssertionSigner>,
        client_id: impl Into<String>,
        thumbprint: Thumbprint,
    ) -> Self {
        Self {
            signer,
            client_id: client_id.into(),
            thumbprint,
        }
    }

    /// A signed assertion for the token endpoint `audience`, valid from `now`.
    pub async fn assertion(
        &self,
        audience: &str,
        now: OffsetDateTime,
    ) -> Result<SecretString, CredentialError> {
        let (thumbprint_name, thumbprint) = self.thumbprint.header();
        let mut header = serde_json::Map::new();
        header.insert("alg".into(), "RS256".into());
        header.insert("typ".into(), "JWT".into());
        header.insert(thumbprint_name.into(), thumbprint.into());
        let issued = now.unix_timestamp();
        let claims = serde_json::json!({
            "aud": audience,
            "iss": self.client_id,
            "sub": self.client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": issued,
            "iat": issued,
            "exp": (now + ASSERTION_LIFETIME).unix_timestamp(),
        });
        let encode = |value: &serde_json::Value| -> Result<String, CredentialError> {
            serde_json::to_vec(value)
                .map(|bytes| URL_SAFE_NO_PAD.encode(bytes))
                .map_err(|error| CredentialError::Assertion(error.to_string()))
        };
        let signing_input = format!(
            "{}.{}",
            encode(&serde_json::Value::Object(header))?,
            encode(&claims)?
        );
        let signature = self.signer.sign_rs256(signing_input.as_bytes()).await?;
        Ok(SecretString::new(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        )))
    }
}

struct CachedSecret {
    value: ClientSecret,
    generation: u64,
    /// When a re-read last found this same value.
    unchanged_at: Option<Instant>,
}

/// The client secret, cached per container, re-read single-flight after `invalid_client`.
pub struct SecretCredential {
    source: Arc<dyn ClientSecretSource>,
    /// Held across the read: concurrent first reads and re-reads wait for one `GetSecretValue`.
    state: tokio::sync::Mutex<Option<CachedSecret>>,
}

impl SecretCredential {
    pub fn new(source: Arc<dyn ClientSecretSource>) -> Self {
        Self {
            source,
            state: tokio::sync::Mutex::new(None),
        }
    }

    async fn current(&self) -> Result<ClientAuth, CredentialError> {
        let mut state = self.state.lock().await;
        if state.is_none() {
            let value = self
                .source
                .client_secret()
                .await
                .map_err(CredentialError::Secret)?;
            *state = Some(CachedSecret {
                value,
                generation: 1,
                unchanged_at: None,
            });
        }
        let cached = state.as_ref().expect("just filled");
        Ok(ClientAuth::Secret {
            value: cached.value.clone(),
            generation: cached.generation,
        })
    }

    /// `generation` was refused: read the secret again unless another request already did.
    /// Whether a retry can succeed (a newer value is cached).
    async fn reread(&self, generation: u64) -> Result<bool, CredentialError> {
        let mut state = self.state.lock().await;
        let Some(cached) = state.as_mut() else {
            return Ok(false);
        };
        if cached.generation != generation {
            return Ok(true);
        }
        if cached
            .unchanged_at
            .is_some_and(|at| at.elapsed() < UNCHANGED_QUIET)
        {
            return Ok(false);
        }
        let value = self
            .source
            .client_secret()
            .await
            .map_err(CredentialError::Secret)?;
        if value.secret() == cached.value.secret() {
            warn!(
                "the token endpoint refused the client secret and Secrets Manager still holds it"
            );
            cached.unchanged_at = Some(Instant::now());
            return Ok(false);
        }
        info!(
            generation = generation + 1,
            "read the rotated client secret"
        );
        *cached = CachedSecret {
            value,
            generation: generation + 1,
            unchanged_at: None,
        };
        Ok(true)
    }
}

/// The app's credential, whichever kind the deployment chose.
pub enum AppCredential {
    Secret(SecretCredential),
    Certificate(CertificateCredential),
}

impl AppCredential {
    pub fn secret(source: Arc<dyn ClientSecretSource>) -> Self {
        AppCredential::Secret(SecretCredential::new(source))
    }

    pub fn certificate(credential: CertificateCredential) -> Self {
        AppCredential::Certificate(credential)
    }

    /// What a request to `token_url` presents now.
    pub async fn authenticate(
        &self,
        token_url: &str,
        now: OffsetDateTime,
    ) -> Result<ClientAuth, CredentialError> {
        match self {
            AppCredential::Secret(secret) => secret.current().await,
            AppCredential::Certificate(certificate) => certificate
                .assertion(token_url, now)
                .await
                .map(ClientAuth::Assertion),
        }
    }

    /// Runs one token request, and once more after `invalid_client` when the client secret
    /// had been rotated in Secrets Manager. `refused_client` says whether an error is the
    /// token endpoint's `invalid_client`; `credential_error` turns a credential failure into
    /// the caller's error. A certificate is never retried: its key does not change under a
    /// running function.
    pub async fn call<T, E, F, Fut>(
        &self,
        token_url: &str,
        now: impl Fn() -> OffsetDateTime,
        refused_client: impl Fn(&E) -> bool,
        credential_error: impl Fn(CredentialError) -> E,
        mut attempt: F,
    ) -> Result<T, E>
    where
        F: FnMut(ClientAuth) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let auth = self
            .authenticate(token_url, now())
            .await
            .map_err(&credential_error)?;
        let generation = match &auth {
            ClientAuth::Secret { generation, .. } => Some(*generation),
            ClientAuth::Assertion(_) => None,
        };
        let error = match attempt(auth).await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let (AppCredential::Secret(secret), Some(generation)) = (self, generation) else {
            return Err(error);
        };
        if !refused_client(&error) {
            return Err(error);
        }
        match secret.reread(generation).await {
            Ok(true) => {}
            Ok(false) => return Err(error),
            Err(reread) => {
                warn!(error = %reread, "could not read the client secret again");
                return Err(error);
            }
        }
        let auth = self
            .authenticate(token_url, now())
            .await
            .map_err(&credential_error)?;
        attempt(auth).await
    }
}

impl AppCredential {
    /// The credential `microsoft` configures: the client secret from Secrets Manager, or the
    /// certificate's KMS key.
    pub fn from_config(
        microsoft: &crate::config::Microsoft,
        secrets: aws_sdk_secretsmanager::Client,
        kms: aws_sdk_kms::Client,
    ) -> Self {
        match &microsoft.credential {
            crate::config::CredentialKind::Secret => AppCredential::secret(Arc::new(
                crate::adapters::secrets::SecretsManagerClientSecret::new(
                    secrets,
                    microsoft.client_secret_id.clone(),
                ),
            )),
            crate::config::CredentialKind::Certificate {
                kms_key_id,
                thumbprint,
            } => AppCredential::certificate(CertificateCredential::new(
                Arc::new(KmsSigner::new(kms, kms_key_id.clone())),
                microsoft.client_id.clone(),
                thumbprint.clone(),
            )),
        }
    }
}

/// Whether a token-endpoint error body (`error`, `error_codes`) refuses the client's
/// credential: `invalid_client`, or one of the client-secret codes.
pub fn refuses_client(error: &str, error_codes: &[u64]) -> bool {
    error.eq_ignore_ascii_case("invalid_client")
        || error_codes
            .iter()
            .any(|code| matches!(code, 7000215 | 7000222))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_parse_from_hex_with_or_without_colons() {
        let sha1 =
            Thumbprint::parse_hex("84:E0:5C:1D:98:BC:E3:A5:42:1D:22:5B:14:0B:36:E8:6A:3D:55:34")
                .expect("sha-1");
        // Microsoft's own example (certificate-credentials, earlier revision, read 2026-12-05).
        assert_eq!(
            sha1.header(),
            ("x5t", "hOBcHZi846VCHSJbFAs26Go9VTQ".to_owned())
        );
        let sha256 = Thumbprint::parse_hex(&"ab".repeat(32)).expect("sha-256");
        assert_eq!(sha256.header().0, "x5t#S256");
        assert!(Thumbprint::parse_hex("abcd").is_err());
        assert!(Thumbprint::parse_hex(&"zz".repeat(20)).is_err());
    }

    #[test]
    fn client_auth_debug_is_redacted() {
        let auth = ClientAuth::Assertion(SecretString::new("eyJ.secret.sig"));
        assert!(!format!("{auth:?}").contains("secret"));
        let auth = ClientAuth::Secret {
            value: ClientSecret::new("value-xyz"),
            generation: 3,
        };
        assert!(!format!("{auth:?}").contains("value-xyz"));
    }

    #[test]
    fn invalid_client_codes_are_recognised() {
        assert!(refuses_client("invalid_client", &[7000215]));
        assert!(refuses_client("invalid_client", &[]));
        assert!(refuses_client("unauthorized_client", &[7000222]));
        assert!(!refuses_client("invalid_grant", &[70008]));
    }
}
