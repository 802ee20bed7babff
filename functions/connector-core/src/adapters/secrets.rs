//! Secrets Manager implementations: the token vault (one secret per connected user,
//! `office365/{tenantId}/{userObjectId}`, JSON value) and the app's client secret.
//!
//! Secret values never reach an error or a log: a value that does not parse is reported
//! by position only, because serde's messages can quote the input.

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use tracing::instrument;

use crate::domain::{UserKey, token_secret_name};
use crate::ports::{ClientSecretSource, TokenVault, VaultError};
use crate::secret::{ClientSecret, SecretString, TokenRecord};

fn backend(
    operation: &'static str,
    secret_id: &str,
    error: impl std::error::Error + Send + Sync + 'static,
) -> VaultError {
    VaultError::Backend {
        operation,
        secret_id: secret_id.to_owned(),
        source: Box::new(error),
    }
}

/// The per-user refresh-token secrets.
pub struct SecretsManagerVault {
    client: Client,
}

impl SecretsManagerVault {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    fn name(key: &UserKey) -> String {
        token_secret_name(&key.tenant_id, &key.user_id)
    }
}

#[async_trait]
impl TokenVault for SecretsManagerVault {
    /// CreateSecret, and when the secret already exists, PutSecretValue (a new version).
    #[instrument(skip_all, fields(tenant_id = %key.tenant_id, user_id = %key.user_id))]
    async fn put_token(&self, key: &UserKey, record: &TokenRecord) -> Result<(), VaultError> {
        let name = Self::name(key);
        let value =
            SecretString::new(
                serde_json::to_string(record).map_err(|_| VaultError::Corrupt {
                    secret_id: name.clone(),
                    source: "token record cannot be encoded".into(),
                })?,
            );
        let created = self
            .client
            .create_secret()
            .name(&name)
            .description("Office 365 connector: a user's refresh token")
            .secret_string(value.secret())
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_exists_exception()) =>
            {
                self.client
                    .put_secret_value()
                    .secret_id(&name)
                    .secret_string(value.secret())
                    .send()
                    .await
                    .map_err(|error| backend("PutSecretValue", &name, error))?;
                Ok(())
            }
            Err(error) => Err(backend("CreateSecret", &name, error)),
        }
    }

    #[instrument(skip_all, fields(tenant_id = %key.tenant_id, user_id = %key.user_id))]
    async fn get_token(&self, key: &UserKey) -> Result<Option<TokenRecord>, VaultError> {
        let name = Self::name(key);
        let output = match self.client.get_secret_value().secret_id(&name).send().await {
            Ok(output) => output,
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                return Ok(None);
            }
            Err(error) => return Err(backend("GetSecretValue", &name, error)),
        };
        let value = SecretString::new(output.secret_string.unwrap_or_default());
        serde_json::from_str(value.secret())
            .map(Some)
            .map_err(|error| VaultError::Corrupt {
                secret_id: name,
                source: format!(
                    "not a token record ({:?} error at line {}, column {})",
                    error.classify(),
                    error.line(),
                    error.column()
                )
                .into(),
            })
    }

    /// PutSecretValue only. A secret that is gone, or deleted and awaiting its purge, answers
    /// ResourceNotFoundException or InvalidRequestException
    /// (https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_PutSecretValue.html,
    /// Errors; read 2026-12-05): `Ok(false)`, nothing created.
    #[instrument(skip_all, fields(tenant_id = %key.tenant_id, user_id = %key.user_id))]
    async fn replace_token(&self, key: &UserKey, record: &TokenRecord) -> Result<bool, VaultError> {
        let name = Self::name(key);
        let value =
            SecretString::new(
                serde_json::to_string(record).map_err(|_| VaultError::Corrupt {
                    secret_id: name.clone(),
                    source: "token record cannot be encoded".into(),
                })?,
            );
        let put = self
            .client
            .put_secret_value()
            .secret_id(&name)
            .secret_string(value.secret())
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(error)
                if error.as_service_error().is_some_and(|e| {
                    e.is_resource_not_found_exception() || e.is_invalid_request_exception()
                }) =>
            {
                Ok(false)
            }
            Err(error) => Err(backend("PutSecretValue", &name, error)),
        }
    }

    /// DeleteSecret with ForceDeleteWithoutRecovery: a disconnected user's token must not linger.
    #[instrument(skip_all, fields(tenant_id = %key.tenant_id, user_id = %key.user_id))]
    async fn delete_token(&self, key: &UserKey) -> Result<(), VaultError> {
        let name = Self::name(key);
        let result = self
            .client
            .delete_secret()
            .secret_id(&name)
            .force_delete_without_recovery(true)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                Ok(())
            }
            Err(error) => Err(backend("DeleteSecret", &name, error)),
        }
    }
}

/// The Entra app's client secret, stored as the plain secret string of `CLIENT_SECRET_ID`.
pub struct SecretsManagerClientSecret {
    client: Client,
    secret_id: String,
}

impl SecretsManagerClientSecret {
    pub fn new(client: Client, secret_id: impl Into<String>) -> Self {
        Self {
            client,
            secret_id: secret_id.into(),
        }
    }
}

#[async_trait]
impl ClientSecretSource for SecretsManagerClientSecret {
    #[instrument(skip_all, fields(secret_id = %self.secret_id))]
    async fn client_secret(&self) -> Result<ClientSecret, VaultError> {
        let output = match self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
        {
            Ok(output) => output,
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                return Err(VaultError::NotFound {
                    secret_id: self.secret_id.clone(),
                });
            }
            Err(error) => return Err(backend("GetSecretValue", &self.secret_id, error)),
        };
        let value = ClientSecret::new(output.secret_string.unwrap_or_default().trim());
        if value.secret().is_empty() {
            return Err(VaultError::Corrupt {
                secret_id: self.secret_id.clone(),
                source: "the client secret is empty".into(),
            });
        }
        Ok(value)
    }
}
