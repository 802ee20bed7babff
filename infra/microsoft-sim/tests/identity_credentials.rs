//! The app's own credentials at `/token`: a rotated client secret (the old one expired: AADSTS7000222, removed:
//! AADSTS7000215) and `private_key_jwt` client assertions checked as Entra checks them (signature against the
//! registered certificate's key, thumbprint, `aud`, `iss`/`sub`, `nbf`/`exp`, a `jti`). Assertions are
//! built here by hand (base64url header and claims, RSA signature); connector-core's tests sign them with KMS.

mod identity_support;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use identity_support::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A self-signed certificate and its key, as an operator would register it on the app.
struct Certificate {
    key: aws_lc_rs::rsa::KeyPair,
    spki_der: Vec<u8>,
    der: Vec<u8>,
}

impl Certificate {
    fn generate() -> Certificate {
        let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 =
            aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&key).unwrap();
        let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec());
        let cert_key =
            rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["connector".to_owned()])
            .unwrap()
            .self_signed(&cert_key)
            .unwrap();
        Certificate {
            key,
            spki_der: rcgen::PublicKeyData::subject_public_key_info(&cert_key),
            der: cert.der().to_vec(),
        }
    }

    fn sha256(&self) -> Vec<u8> {
        Sha256::digest(&self.der).to_vec()
    }

    fn registration(&self) -> Value {
        json!({"publicKey": STANDARD.encode(&self.spki_der), "thumbprintSha256": hex::encode(self.sha256())})
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn claims(base: &str, tenant: &str) -> Value {
    json!({
        "aud": format!("{base}/{tenant}/oauth2/v2.0/token"),
        "iss": APP, "sub": APP,
        "jti": uuid::Uuid::new_v4().to_string(),
        "nbf": now(), "iat": now(), "exp": now() + 600,
    })
}

#[derive(Clone, Copy)]
enum Alg {
    Rs256,
    Ps256,
}

fn sign(key: &aws_lc_rs::rsa::KeyPair, thumbprint: &[u8], claims: &Value, alg: Alg) -> String {
    let (name, padding): (&str, &'static dyn aws_lc_rs::signature::RsaEncoding) = match alg {
        Alg::Rs256 => ("RS256", &aws_lc_rs::signature::RSA_PKCS1_SHA256),
        Alg::Ps256 => ("PS256", &aws_lc_rs::signature::RSA_PSS_SHA256),
    };
    let header = json!({"alg": name, "typ": "JWT", "x5t#S256": URL_SAFE_NO_PAD.encode(thumbprint)});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap()),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap())
    );
    let mut signature = vec![0; key.public_modulus_len()];
    key.sign(
        padding,
        &aws_lc_rs::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

async fn token(
    c: &reqwest::Client,
    base: &str,
    tenant: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    c.post(format!("{base}/{tenant}/oauth2/v2.0/token"))
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn refresh_with_assertion(
    c: &reqwest::Client,
    base: &str,
    rt: &str,
    assertion: &str,
) -> reqwest::Response {
    token(
        c,
        base,
        CONTOSO,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", APP),
            ("refresh_token", rt),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
        ],
    )
    .await
}

#[tokio::test]
async fn a_rotated_secret_is_accepted_and_the_old_one_is_refused_as_microsoft_does() {
    let sim = start(true).await;
    let base = sim.base_url();
    let c = client();
    let code = auto_code(
        &c,
        &base,
        CONTOSO,
        "offline_access Mail.Read",
        "adele@contoso.com",
    )
    .await;
    let tokens: Value = redeem(&c, &base, CONTOSO, &code, &[])
        .await
        .json()
        .await
        .unwrap();
    let rt = tokens["refresh_token"].as_str().unwrap().to_owned();

    let rotated = control(
        &c,
        &base,
        &format!("/_sim/apps/{APP}/secret"),
        json!({"secret": "new~value"}),
    )
    .await;
    assert_eq!(rotated.status(), 204);
    // The old secret expired: AADSTS7000222, invalid_client, HTTP 401.
    let body = assert_token_error(
        refresh(&c, &base, CONTOSO, &rt, &[]).await,
        401,
        "invalid_client",
        7000222,
        &base,
    )
    .await;
    assert!(body["error_description"].as_str().unwrap().contains(APP));
    let form = [
        ("grant_type", "refresh_token"),
        ("client_id", APP),
        ("client_secret", "new~value"),
        ("refresh_token", rt.as_str()),
    ];
    assert_eq!(token(&c, &base, CONTOSO, &form).await.status(), 200);

    // Rotated again with the previous one removed: a wrong secret, AADSTS7000215.
    let rotated = control(
        &c,
        &base,
        &format!("/_sim/apps/{APP}/secret"),
        json!({"secret": "third", "previous": "removed"}),
    )
    .await;
    assert_eq!(rotated.status(), 204);
    let form = [
        ("grant_type", "refresh_token"),
        ("client_id", APP),
        ("client_secret", "new~value"),
        ("refresh_token", rt.as_str()),
    ];
    assert_token_error(
        token(&c, &base, CONTOSO, &form).await,
        401,
        "invalid_client",
        7000215,
        &base,
    )
    .await;
    let form = [
        ("grant_type", "refresh_token"),
        ("client_id", APP),
        ("client_secret", SECRET),
        ("refresh_token", rt.as_str()),
    ];
    assert_token_error(
        token(&c, &base, CONTOSO, &form).await,
        401,
        "invalid_client",
        7000222,
        &base,
    )
    .await;
    let unknown = control(
        &c,
        &base,
        "/_sim/apps/00000000-0000-0000-0000-000000000000/secret",
        json!({"secret": "x"}),
    )
    .await;
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn a_signed_client_assertion_redeems_a_code_and_a_refresh_token() {
    let sim = start(true).await;
    let base = sim.base_url();
    let c = client();
    let cert = Certificate::generate();
    let registered = control(
        &c,
        &base,
        &format!("/_sim/apps/{APP}/certificates"),
        cert.registration(),
    )
    .await;
    assert_eq!(registered.status(), 204);

    let code = auto_code(
        &c,
        &base,
        "organizations",
        "offline_access Mail.Read",
        "adele@contoso.com",
    )
    .await;
    let assertion = sign(
        &cert.key,
        &cert.sha256(),
        &claims(&base, "organizations"),
        Alg::Rs256,
    );
    let response = token(
        &c,
        &base,
        "organizations",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", APP),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &assertion),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    let tokens: Value = response.json().await.unwrap();
    let rt = tokens["refresh_token"].as_str().unwrap().to_owned();

    // PS256, Microsoft's current recommendation, is accepted as well as RS256.
    let assertion = sign(
        &cert.key,
        &cert.sha256(),
        &claims(&base, CONTOSO),
        Alg::Ps256,
    );
    let response = refresh_with_assertion(&c, &base, &rt, &assertion).await;
    assert_eq!(response.status(), 200);
    let rt = response.json::<Value>().await.unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // The same assertion again while it is valid: accepted, as MSAL Python reuses its assertion for 540 s.
    assert_eq!(
        refresh_with_assertion(&c, &base, &rt, &assertion)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn assertions_entra_would_refuse_are_refused_with_its_errors() {
    let sim = start(true).await;
    let base = sim.base_url();
    let c = client();
    let cert = Certificate::generate();
    control(
        &c,
        &base,
        &format!("/_sim/apps/{APP}/certificates"),
        cert.registration(),
    )
    .await;
    let code = auto_code(
        &c,
        &base,
        CONTOSO,
        "offline_access Mail.Read",
        "adele@contoso.com",
    )
    .await;
    let tokens: Value = redeem(&c, &base, CONTOSO, &code, &[])
        .await
        .json()
        .await
        .unwrap();
    let rt = tokens["refresh_token"].as_str().unwrap().to_owned();
    let rs256 = Alg::Rs256;

    // Signed by another key under the registered certificate's thumbprint.
    let other = Certificate::generate();
    let forged = sign(&other.key, &cert.sha256(), &claims(&base, CONTOSO), rs256);
    let body = assert_token_error(
        refresh_with_assertion(&c, &base, &rt, &forged).await,
        401,
        "invalid_client",
        700027,
        &base,
    )
    .await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("Key was found"),
        "{body}"
    );
    // A certificate the app does not know.
    let unknown = sign(&other.key, &other.sha256(), &claims(&base, CONTOSO), rs256);
    let body = assert_token_error(
        refresh_with_assertion(&c, &base, &rt, &unknown).await,
        401,
        "invalid_client",
        700027,
        &base,
    )
    .await;
    let description = body["error_description"].as_str().unwrap();
    assert!(description.contains("The key was not found"), "{body}");
    assert!(
        description.contains(&hex::encode_upper(other.sha256())),
        "{body}"
    );
    // Another audience.
    let mut wrong = claims(&base, CONTOSO);
    wrong["aud"] = json!("https://login.microsoftonline.com/common/oauth2/v2.0/token");
    let assertion = sign(&cert.key, &cert.sha256(), &wrong, rs256);
    assert_token_error(
        refresh_with_assertion(&c, &base, &rt, &assertion).await,
        401,
        "invalid_client",
        700023,
        &base,
    )
    .await;
    // Issued by another client.
    let mut wrong = claims(&base, CONTOSO);
    wrong["iss"] = json!(PUBLIC_APP);
    let assertion = sign(&cert.key, &cert.sha256(), &wrong, rs256);
    assert_token_error(
        refresh_with_assertion(&c, &base, &rt, &assertion).await,
        401,
        "invalid_client",
        700021,
        &base,
    )
    .await;
    // Expired an hour ago.
    let mut wrong = claims(&base, CONTOSO);
    wrong["nbf"] = json!(now() - 4200);
    wrong["exp"] = json!(now() - 3600);
    let assertion = sign(&cert.key, &cert.sha256(), &wrong, rs256);
    assert_token_error(
        refresh_with_assertion(&c, &base, &rt, &assertion).await,
        401,
        "invalid_client",
        700024,
        &base,
    )
    .await;
    // Not yet valid.
    let mut wrong = claims(&base, CONTOSO);
    wrong["nbf"] = json!(now() + 3600);
    wrong["exp"] = json!(now() + 4200);
    let assertion = sign(&cert.key, &cert.sha256(), &wrong, rs256);
    assert_token_error(
        refresh_with_assertion(&c, &base, &rt, &assertion).await,
        401,
        "invalid_client",
        700024,
        &base,
    )
    .await;
    // A tampered payload under a genuine signature.
    let genuine = sign(&cert.key, &cert.sha256(), &claims(&base, CONTOSO), rs256);
    let mut parts: Vec<String> = genuine.split('.').map(str::to_owned).collect();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    payload["exp"] = json!(now() + 86_400);
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap());
    assert_token_error(
        refresh_with_assertion(&c, &base, &rt, &parts.join(".")).await,
        401,
        "invalid_client",
        700027,
        &base,
    )
    .await;
    // The wrong assertion type.
    let assertion = sign(&cert.key, &cert.sha256(), &claims(&base, CONTOSO), rs256);
    let response = token(
        &c,
        &base,
        CONTOSO,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", APP),
            ("refresh_token", &rt),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
            ),
            ("client_assertion", &assertion),
        ],
    )
    .await;
    assert_token_error(response, 401, "invalid_client", 50027, &base).await;
    // After all those refusals the refresh token still works with a good assertion.
    let good = sign(&cert.key, &cert.sha256(), &claims(&base, CONTOSO), rs256);
    assert_eq!(
        refresh_with_assertion(&c, &base, &rt, &good).await.status(),
        200
    );
}
