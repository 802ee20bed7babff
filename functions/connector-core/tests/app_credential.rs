//! The app's credential through the real token provider, against microsoft-sim's token
//! endpoint and moto (Secrets Manager, KMS) through the real AWS SDK: a client secret rotated
//! at Microsoft and in Secrets Manager is picked up by one re-read, without a new container;
//! a KMS-signed client assertion authenticates refreshes, and one signed by another key is
//! refused with Microsoft's error.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, ensure};
use async_trait::async_trait;
use connector_core::adapters::secrets::{SecretsManagerClientSecret, SecretsManagerVault};
use connector_core::clock::SystemClock;
use connector_core::config::{BaseUrl, Microsoft};
use connector_core::credential::{AppCredential, CertificateCredential, KmsSigner, Thumbprint};
use connector_core::domain::{TenantId, UserId, UserKey};
use connector_core::oauth::{
    OAuthError, RefreshClient, TokenError, TokenProvider, token_http_client,
};
use connector_core::ports::{ClientSecretSource, TokenVault, VaultError};
use connector_core::secret::{ClientSecret, RefreshToken, TokenRecord};
use microsoft_sim::identity::testing::{SignIn, sign_in};
use microsoft_sim::{SimOptions, SimServer, World};
use serde_json::json;
use time::OffsetDateTime;

const REDIRECT: &str = "http://localhost:8400/auth/callback";
const USERS: usize = 6;

fn user_id(n: usize) -> String {
    format!("8a1d2c3b-4e5f-4a6b-8c7d-{n:012}")
}

struct Sim {
    server: SimServer,
    client_id: String,
    /// A tenant of its own: refresh-token secrets are named by tenant and user, and moto is
    /// shared by the tests of this process.
    tenant: String,
}

async fn sim(secret: &str) -> Result<Sim> {
    let client_id = uuid::Uuid::new_v4().to_string();
    let tenant = uuid::Uuid::new_v4().to_string();
    let users: Vec<_> = (0..USERS)
        .map(|n| {
            let upn = format!("user{n}@contoso.com");
            json!({"id": user_id(n), "userPrincipalName": upn, "mail": upn, "displayName": upn, "roles": []})
        })
        .collect();
    let world = json!({
        "apps": [{"clientId": client_id, "clientSecret": secret, "displayName": "Connector",
                  "redirectUris": [REDIRECT], "permissions": ["Mail.Read"]}],
        "tenants": [{"id": tenant, "displayName": "Contoso", "verifiedDomains": ["contoso.com"], "users": users}],
    });
    let mut options = SimOptions::new(World::from_json(&world.to_string())?);
    options.auto_approve = true;
    Ok(Sim {
        server: SimServer::start(options).await?,
        client_id,
        tenant,
    })
}

impl Sim {
    fn base(&self) -> String {
        self.server.base_url()
    }

    /// Signs user `n` in (with the app's secret `secret`) and stores their refresh token.
    async fn connect(
        &self,
        vault: &SecretsManagerVault,
        n: usize,
        secret: &str,
    ) -> Result<UserKey> {
        let base = self.base();
        let tokens = sign_in(&SignIn {
            base_url: &base,
            tenant: &self.tenant,
            client_id: &self.client_id,
            client_secret: Some(secret),
            redirect_uri: REDIRECT,
            login: &format!("user{n}@contoso.com"),
            scopes: "openid offline_access Mail.Read",
            consent_for_org: false,
            ca_pem: None,
        })
        .await?;
        let key = UserKey::new(TenantId::parse(&self.tenant)?, UserId::parse(&user_id(n))?);
        let record = TokenRecord {
            refresh_token: RefreshToken::new(tokens.refresh_token.context("a refresh token")?),
            scopes: connector_core::domain::ScopeSet::parse("offline_access Mail.Read"),
            updated_at: OffsetDateTime::now_utc(),
        };
        vault.put_token(&key, &record).await?;
        Ok(key)
    }

    async fn control(&self, path: &str, body: serde_json::Value) -> Result<()> {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", self.base()))
            .json(&body)
            .send()
            .await?;
        ensure!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        Ok(())
    }

    fn refresh_client(&self) -> Result<RefreshClient> {
        Ok(RefreshClient::new(
            token_http_client()?,
            BaseUrl::parse(&self.base()).map_err(anyhow::Error::msg)?,
            self.client_id.clone(),
        ))
    }
}

/// The real Secrets Manager adapter, counting its reads.
struct Counted {
    inner: SecretsManagerClientSecret,
    reads: AtomicUsize,
}

#[async_trait]
impl ClientSecretSource for Counted {
    async fn client_secret(&self) -> Result<ClientSecret, VaultError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.client_secret().await
    }
}

fn refused_with(error: &TokenError) -> Option<Vec<u64>> {
    match error {
        TokenError::Refresh(OAuthError::Refused(body)) => Some(body.error_codes.clone()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_client_secret_is_read_once_and_every_refresh_succeeds() -> Result<()> {
    let first = format!("first~{}", uuid::Uuid::new_v4().simple());
    let sim = sim(&first).await?;
    let params = BTreeMap::from([("EntraClientSecretValue".to_owned(), first.clone())]);
    let stack = local_stack::test_stack_from(&local_stack::template_path(), &params).await?;
    let secrets = aws_sdk_secretsmanager::Client::new(&stack.sdk);
    let vault = SecretsManagerVault::new(secrets.clone());
    let mut users = Vec::new();
    for n in 0..USERS {
        users.push(sim.connect(&vault, n, &first).await?);
    }
    let source = Arc::new(Counted {
        inner: SecretsManagerClientSecret::new(secrets.clone(), stack.var("CLIENT_SECRET_ID")),
        reads: AtomicUsize::new(0),
    });
    let provider = Arc::new(TokenProvider::new(
        Arc::new(SecretsManagerVault::new(secrets.clone())),
        source.clone(),
        sim.refresh_client()?,
        Arc::new(SystemClock),
    ));
    let refresh_all = |provider: Arc<TokenProvider>, users: Vec<UserKey>| async move {
        let tasks: Vec<_> = users
            .into_iter()
            .map(|key| {
                let provider = provider.clone();
                tokio::spawn(async move { provider.refresh_rejected(&key).await })
            })
            .collect();
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.expect("task"));
        }
        out
    };

    // Cold: every user refreshed concurrently, the secret read once.
    for result in refresh_all(provider.clone(), users.clone()).await {
        result?;
    }
    assert_eq!(source.reads.load(Ordering::SeqCst), 1);

    // The operator rotates: a new secret at Microsoft (the old one expired), then in
    // Secrets Manager. The warm provider still holds the old value.
    let second = format!("second~{}", uuid::Uuid::new_v4().simple());
    sim.control(
        &format!("/_sim/apps/{}/secret", sim.client_id),
        json!({"secret": second}),
    )
    .await?;
    secrets
        .put_secret_value()
        .secret_id(stack.var("CLIENT_SECRET_ID"))
        .secret_string(&second)
        .send()
        .await?;
    // Every user's refresh meets AADSTS7000222 once; one re-read serves them all.
    for result in refresh_all(provider.clone(), users.clone()).await {
        result?;
    }
    assert_eq!(source.reads.load(Ordering::SeqCst), 2);
    // And later refreshes use the new value without reading again.
    provider.refresh_rejected(&users[0]).await?;
    assert_eq!(source.reads.load(Ordering::SeqCst), 2);

    // Rotated at Microsoft but not yet in Secrets Manager: one re-read finds the same value,
    // the refusal stands (an operator problem, AADSTS7000222), and further refusals do not
    // turn into Secrets Manager calls.
    sim.control(
        &format!("/_sim/apps/{}/secret", sim.client_id),
        json!({"secret": "third", "previous": "expired"}),
    )
    .await?;
    let error = provider
        .refresh_rejected(&users[1])
        .await
        .expect_err("the old secret is refused");
    assert_eq!(refused_with(&error), Some(vec![7000222]));
    assert_eq!(
        error.classify(),
        connector_core::oauth::RefreshFailure::Operator
    );
    assert_eq!(source.reads.load(Ordering::SeqCst), 3);
    let error = provider
        .refresh_rejected(&users[2])
        .await
        .expect_err("still refused");
    assert_eq!(refused_with(&error), Some(vec![7000222]));
    assert_eq!(source.reads.load(Ordering::SeqCst), 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kms_signed_assertion_refreshes_and_another_key_is_refused() -> Result<()> {
    let secret = format!("s~{}", uuid::Uuid::new_v4().simple());
    let sim = sim(&secret).await?;
    let params = BTreeMap::from([("EntraCredential".to_owned(), "certificate".to_owned())]);
    let stack = local_stack::test_stack_from(&local_stack::template_path(), &params).await?;
    let certificate = stack
        .provisioned
        .certificate
        .clone()
        .context("the stack's certificate key")?;
    sim.control(
        &format!("/_sim/apps/{}/certificates", sim.client_id),
        certificate.sim_registration(),
    )
    .await?;
    let secrets = aws_sdk_secretsmanager::Client::new(&stack.sdk);
    let kms = aws_sdk_kms::Client::new(&stack.sdk);
    let vault = SecretsManagerVault::new(secrets.clone());
    let adele = sim.connect(&vault, 0, &secret).await?;
    let megan = sim.connect(&vault, 1, &secret).await?;

    // The functions' configuration, as the template gives it.
    let mut env = stack.env.clone();
    env.insert("CLIENT_ID".into(), sim.client_id.clone());
    env.insert("LOGIN_BASE_URL".into(), sim.base());
    env.insert("GRAPH_BASE_URL".into(), sim.base());
    let microsoft = Microsoft::from_lookup(|name| env.get(name).cloned())?;
    let credential = Arc::new(AppCredential::from_config(
        &microsoft,
        secrets.clone(),
        kms.clone(),
    ));
    let provider = TokenProvider::with_credential(
        Arc::new(SecretsManagerVault::new(secrets.clone())),
        credential,
        sim.refresh_client()?,
        Arc::new(SystemClock),
    );
    // No client secret is sent: the sim answers AADSTS7000218 unless the assertion is good.
    provider.access_token(&adele).await?;
    provider.refresh_rejected(&adele).await?;

    // The same thumbprint, signed by another KMS key: Entra's AADSTS700027.
    let other = kms
        .create_key()
        .key_spec(aws_sdk_kms::types::KeySpec::Rsa2048)
        .key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify)
        .send()
        .await?
        .key_metadata
        .context("key")?
        .key_id;
    let forged = AppCredential::certificate(CertificateCredential::new(
        Arc::new(KmsSigner::new(kms.clone(), other)),
        sim.client_id.clone(),
        Thumbprint::parse_hex(&certificate.thumbprint).map_err(anyhow::Error::msg)?,
    ));
    let provider = TokenProvider::with_credential(
        Arc::new(SecretsManagerVault::new(secrets)),
        Arc::new(forged),
        sim.refresh_client()?,
        Arc::new(SystemClock),
    );
    let error = provider.access_token(&megan).await.expect_err("refused");
    assert_eq!(refused_with(&error), Some(vec![700027]));
    assert_eq!(
        error.classify(),
        connector_core::oauth::RefreshFailure::Operator
    );
    Ok(())
}
