//! OIDC discovery and JWKS documents, over http and over https with the generated CA.

mod identity_support;

use identity_support::*;
use microsoft_sim::{SimOptions, SimServer, World};
use serde_json::Value;

#[tokio::test]
async fn common_publishes_the_issuer_template_and_microsofts_fields() {
    let sim = start(false).await;
    let base = sim.base_url();
    let c = client();
    let r = c
        .get(format!(
            "{base}/common/v2.0/.well-known/openid-configuration"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "max-age=86400, private");
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["issuer"], format!("{base}/{{tenantid}}/v2.0"));
    assert_eq!(
        doc["token_endpoint"],
        format!("{base}/common/oauth2/v2.0/token")
    );
    assert_eq!(
        doc["authorization_endpoint"],
        format!("{base}/common/oauth2/v2.0/authorize")
    );
    assert_eq!(
        doc["jwks_uri"],
        format!("{base}/common/discovery/v2.0/keys")
    );
    assert_eq!(
        doc["token_endpoint_auth_methods_supported"],
        serde_json::json!([
            "client_secret_post",
            "private_key_jwt",
            "client_secret_basic"
        ])
    );
    assert_eq!(
        doc["subject_types_supported"],
        serde_json::json!(["pairwise"])
    );
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        serde_json::json!(["RS256"])
    );
    assert_eq!(doc["tenant_region_scope"], Value::Null);
    for field in [
        "response_modes_supported",
        "response_types_supported",
        "scopes_supported",
        "request_uri_parameter_supported",
        "userinfo_endpoint",
        "device_authorization_endpoint",
        "http_logout_supported",
        "frontchannel_logout_supported",
        "end_session_endpoint",
        "claims_supported",
        "kerberos_endpoint",
        "cloud_instance_name",
        "cloud_graph_host_name",
        "msgraph_host",
        "rbac_url",
    ] {
        assert!(doc.get(field).is_some(), "{field}");
    }
    let organizations: Value = c
        .get(format!(
            "{base}/organizations/v2.0/.well-known/openid-configuration"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(organizations["issuer"], format!("{base}/{{tenantid}}/v2.0"));
}

#[tokio::test]
async fn tenant_documents_use_the_guid_whether_asked_by_guid_or_domain() {
    let sim = start(false).await;
    let base = sim.base_url();
    let c = client();
    for segment in [FABRIKAM, "fabrikam.com"] {
        let doc: Value = c
            .get(format!(
                "{base}/{segment}/v2.0/.well-known/openid-configuration"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(doc["issuer"], format!("{base}/{FABRIKAM}/v2.0"));
        assert_eq!(
            doc["token_endpoint"],
            format!("{base}/{FABRIKAM}/oauth2/v2.0/token")
        );
        assert_eq!(doc["tenant_region_scope"], "EU");
    }
    let r = c
        .get(format!(
            "{base}/nowhere.example/v2.0/.well-known/openid-configuration"
        ))
        .send()
        .await
        .unwrap();
    assert_token_error(r, 400, "invalid_tenant", 90002, &base).await;
}

#[tokio::test]
async fn jwks_keys_carry_kid_x5t_n_e_x5c_and_the_issuer_template() {
    let sim = start(false).await;
    let base = sim.base_url();
    let c = client();
    let jwks: Value = c
        .get(format!("{base}/common/discovery/v2.0/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["e"], "AQAB");
    assert_eq!(key["kid"], key["x5t"]);
    assert_eq!(key["issuer"], format!("{base}/{{tenantid}}/v2.0"));
    let cert = base64_decode(key["x5c"][0].as_str().unwrap());
    // x5t is the base64url SHA-1 thumbprint of the certificate in x5c.
    let thumbprint = sha1_b64url(&cert);
    assert_eq!(key["x5t"].as_str().unwrap(), thumbprint);
    let per_tenant: Value = c
        .get(format!("{base}/{CONTOSO}/discovery/v2.0/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(per_tenant["keys"][0]["kid"], key["kid"]);
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn sha1_b64url(data: &[u8]) -> String {
    use base64::Engine;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, data);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

#[tokio::test]
async fn https_with_the_generated_ca() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = SimOptions::new(World::from_json(&world_json()).unwrap());
    options.tls_dir = Some(dir.path().to_owned());
    let sim = SimServer::start(options).await.unwrap();
    let base = sim.base_url();
    assert!(base.starts_with("https://127.0.0.1:"));
    let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let c = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .build()
        .unwrap();
    let doc: Value = c
        .get(format!(
            "{base}/common/v2.0/.well-known/openid-configuration"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc["token_endpoint"],
        format!("{base}/common/oauth2/v2.0/token")
    );
    let localhost = base.replace("127.0.0.1", "localhost");
    assert_eq!(
        c.get(format!("{localhost}/common/discovery/v2.0/keys"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // An untrusting client refuses the certificate.
    assert!(
        reqwest::Client::new()
            .get(format!("{base}/common/discovery/v2.0/keys"))
            .send()
            .await
            .is_err()
    );
}
