//! The app's credential at code redemption, end to end (the handler with its production
//! adapters, moto through the real AWS SDK, microsoft-sim): a certificate credential whose
//! key is in KMS redeems the sign-in's code with a signed client assertion and the stored
//! refresh token then refreshes with one; a certificate Microsoft does not know ends on the
//! operator page with nothing stored; a client secret rotated while the function is warm is
//! picked up without a cold start.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use connector_core::adapters::secrets::SecretsManagerVault;
use connector_core::clock::SystemClock;
use connector_core::config::BaseUrl;
use connector_core::credential::AppCredential;
use connector_core::domain::{TenantId, UserId, UserKey};
use connector_core::oauth::{RefreshClient, TokenProvider, token_http_client};
use serde_json::json;
use support::live::{Landing, Live, tenant_json};
use support::{guid, query};

fn certificate() -> BTreeMap<String, String> {
    BTreeMap::from([("EntraCredential".to_owned(), "certificate".to_owned())])
}

async fn control(live: &Live, path: &str, body: serde_json::Value) -> reqwest::StatusCode {
    let client = reqwest::Client::new();
    let url = format!("{}{path}", live.sim.base_url());
    let request = if body.is_null() {
        client.delete(url)
    } else {
        client.post(url).json(&body)
    };
    request.send().await.expect("sim control").status()
}

/// The app's client secret at Microsoft becomes one nobody has: only the certificate works.
async fn forget_the_secret(live: &Live) {
    let status = control(
        live,
        &format!("/_sim/apps/{}/secret", live.client_id),
        json!({"secret": format!("unknown~{}", uuid::Uuid::new_v4()), "previous": "removed"}),
    )
    .await;
    assert_eq!(status, 204);
}

async fn sign_in(live: &Live, upn: &str) -> Landing {
    live.browser()
        .open(&live.url(&format!("/auth/login?{}", query(&[("login_hint", upn)]))))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kms_signed_assertion_redeems_the_code_and_then_refreshes() {
    let (tid, oid) = (guid(), guid());
    let upn = "nina@kms.example";
    let live = Live::start_with(
        "127.0.0.1:0",
        true,
        vec![tenant_json(
            &tid,
            "kms.example",
            json!({"userConsent": "allowed"}),
            &[(&oid, upn, &[])],
        )],
        certificate(),
    )
    .await;
    forget_the_secret(&live).await;

    let landed = sign_in(&live, upn).await;
    assert!(matches!(landed, Landing::App(_)), "{landed:?}");
    assert!(live.connection(&tid, &oid).await.is_some());
    assert!(live.token(&tid, &oid).await.is_some());

    // The stored refresh token, refreshed as the workers do, signed by the same KMS key.
    let mut env = live.stack.env.clone();
    env.insert("CLIENT_ID".into(), live.client_id.clone());
    env.insert("LOGIN_BASE_URL".into(), live.sim.base_url());
    env.insert("GRAPH_BASE_URL".into(), live.sim.base_url());
    let microsoft = connector_core::config::Microsoft::from_lookup(|name| env.get(name).cloned())
        .expect("config");
    let secrets = aws_sdk_secretsmanager::Client::new(&live.stack.sdk);
    let provider = TokenProvider::with_credential(
        Arc::new(SecretsManagerVault::new(secrets.clone())),
        Arc::new(AppCredential::from_config(
            &microsoft,
            secrets,
            aws_sdk_kms::Client::new(&live.stack.sdk),
        )),
        RefreshClient::new(
            token_http_client().expect("client"),
            BaseUrl::parse(&live.sim.base_url()).expect("url"),
            live.client_id.clone(),
        ),
        Arc::new(SystemClock),
    );
    let key = UserKey::new(
        TenantId::parse(&tid).expect("guid"),
        UserId::parse(&oid).expect("guid"),
    );
    provider
        .access_token(&key)
        .await
        .expect("refreshed with a signed assertion");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_microsoft_does_not_know_stores_nothing() {
    let (tid, oid) = (guid(), guid());
    let upn = "omar@kms.example";
    let live = Live::start_with(
        "127.0.0.1:0",
        true,
        vec![tenant_json(
            &tid,
            "kms.example",
            json!({"userConsent": "allowed"}),
            &[(&oid, upn, &[])],
        )],
        certificate(),
    )
    .await;
    forget_the_secret(&live).await;
    // The app's certificate is now another key's, under the thumbprint our assertions name.
    let path = format!("/_sim/apps/{}/certificates", live.client_id);
    assert_eq!(control(&live, &path, serde_json::Value::Null).await, 204);
    let kms = aws_sdk_kms::Client::new(&live.stack.sdk);
    let other = kms
        .create_key()
        .key_spec(aws_sdk_kms::types::KeySpec::Rsa2048)
        .key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify)
        .send()
        .await
        .expect("key")
        .key_metadata
        .expect("metadata")
        .key_id;
    let public_key = kms
        .get_public_key()
        .key_id(other)
        .send()
        .await
        .expect("public key")
        .public_key
        .expect("der")
        .into_inner();
    let mut registration = live
        .stack
        .provisioned
        .certificate
        .clone()
        .expect("cert")
        .sim_registration();
    use base64::Engine as _;
    registration["publicKey"] = json!(base64::engine::general_purpose::STANDARD.encode(public_key));
    assert_eq!(control(&live, &path, registration).await, 204);

    let landed = sign_in(&live, upn).await;
    let (_, status, html) = landed.page();
    assert_eq!(status, 500, "{html}");
    assert!(
        html.contains("Sign-in is misconfigured on our side"),
        "{html}"
    );
    assert!(live.connection(&tid, &oid).await.is_none());
    assert!(live.token(&tid, &oid).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_rotated_while_warm_redeems_the_next_code() {
    let (tid, first, second) = (guid(), guid(), guid());
    let (first_upn, second_upn) = ("ada@rotate.example", "bob@rotate.example");
    let live = Live::start_with(
        "127.0.0.1:0",
        true,
        vec![tenant_json(
            &tid,
            "rotate.example",
            json!({"userConsent": "allowed"}),
            &[(&first, first_upn, &[]), (&second, second_upn, &[])],
        )],
        BTreeMap::new(),
    )
    .await;
    assert!(matches!(sign_in(&live, first_upn).await, Landing::App(_)));

    // Rotated at Microsoft (the old secret expired) and in Secrets Manager.
    let rotated = format!("rotated~{}", uuid::Uuid::new_v4().simple());
    let status = control(
        &live,
        &format!("/_sim/apps/{}/secret", live.client_id),
        json!({"secret": rotated}),
    )
    .await;
    assert_eq!(status, 204);
    aws_sdk_secretsmanager::Client::new(&live.stack.sdk)
        .put_secret_value()
        .secret_id(live.stack.var("CLIENT_SECRET_ID"))
        .secret_string(&rotated)
        .send()
        .await
        .expect("PutSecretValue");

    let landed = sign_in(&live, second_upn).await;
    assert!(matches!(landed, Landing::App(_)), "{landed:?}");
    assert!(live.connection(&tid, &second).await.is_some());
}
