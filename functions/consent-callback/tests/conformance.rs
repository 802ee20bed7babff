//! Microsoft's discovery document, keys document and v2 id_token claims (the conformance
//! corpus) through the real [`JwksValidator`]: a loopback server publishes the documented
//! discovery and keys documents (hosts moved to loopback, plus our own key in the documented
//! key shape, since the doc's keys are shortened), and the documented claims, re-timed and
//! signed with that key, validate to the tenant and user the doc names.

mod support;

use std::path::PathBuf;

use axum::Router;
use axum::routing::get;
use consent_callback::idtoken::{IdTokenError, IdTokenValidator, JwksValidator};
use serde_json::{Value, json};
use support::idp::{TestKey, jwt};

const MICROSOFT: &str = "https://login.microsoftonline.com";

fn example(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../infra/microsoft-sim/conformance")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("JSON")
}

/// Every string of `value` with Microsoft's login host replaced by `base`, `{tenant}` by `organizations`.
fn rebase(value: &Value, base: &str) -> Value {
    match value {
        Value::String(text) => Value::String(
            text.replace(MICROSOFT, base)
                .replace("{tenant}/", "organizations/"),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|item| rebase(item, base)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), rebase(v, base)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Serves the documented discovery and keys documents (rebased), the keys with `key` added
/// in the documented key shape.
async fn publish(key: &TestKey) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let discovery = rebase(
        &example("identity/openid-configuration.json")["response"]["body"],
        &base,
    );
    let mut keys = rebase(&example("identity/jwks.json")["response"]["body"], &base);
    keys["keys"]
        .as_array_mut()
        .expect("keys")
        .push(documented_shape(key, &base));
    let jwks_path = discovery["jwks_uri"]
        .as_str()
        .expect("jwks_uri")
        .trim_start_matches(&base)
        .to_owned();
    let app = Router::new()
        .route(
            "/organizations/v2.0/.well-known/openid-configuration",
            get(move || async move { axum::Json(discovery) }),
        )
        .route(&jwks_path, get(move || async move { axum::Json(keys) }));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serves") });
    base
}

/// Our key in the documented key shape: the doc's first key with kid, x5t, n and e replaced.
fn documented_shape(key: &TestKey, base: &str) -> Value {
    let mut shaped = rebase(
        &example("identity/jwks.json")["response"]["body"]["keys"][0],
        base,
    );
    let ours = key.jwk("unused");
    for field in ["kid", "n", "e"] {
        shaped[field] = ours[field].clone();
    }
    shaped["x5t"] = ours["kid"].clone();
    shaped
}

#[tokio::test]
async fn the_documented_claims_validate_to_the_documented_tenant_and_user() {
    let id_token = example("identity/id-token-claims-v2.json");
    let meaning = &id_token["meaning"];
    let key = TestKey::generate("conformance-key");
    let base = publish(&key).await;
    let validator = JwksValidator::new(
        consent_callback::token::http_client().expect("client"),
        connector_core::config::BaseUrl::parse(&base).expect("url"),
        id_token["response"]["body"]["aud"].as_str().expect("aud"),
    );
    let mut claims = rebase(&id_token["response"]["body"], &base);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    claims["iat"] = json!(now);
    claims["nbf"] = json!(now);
    claims["exp"] = json!(now + 3600);
    let header = json!({"typ": "JWT", "alg": "RS256", "kid": key.kid});
    let token = jwt(&key, &header, &claims);
    let nonce = meaning["nonce"].as_str().expect("nonce");
    let validated = validator
        .validate(&token, nonce)
        .await
        .expect("the documented claims validate");
    assert_eq!(validated.tenant_id.as_str(), meaning["tenant_id"]);
    assert_eq!(validated.user_id.as_str(), meaning["user_id"]);
    assert_eq!(
        validated.preferred_username.as_deref(),
        meaning["preferred_username"].as_str()
    );
    assert_eq!(validated.name.as_deref(), meaning["name"].as_str());
    assert_eq!(
        validated.issuer,
        format!(
            "{base}/{}/v2.0",
            meaning["tenant_id"].as_str().expect("tid")
        )
    );
    // The documented claims under another tenant's issuer are refused.
    claims["iss"] = json!(format!("{base}/00000000-0000-0000-0000-000000000001/v2.0"));
    let forged = jwt(&key, &header, &claims);
    assert_eq!(
        validator.validate(&forged, nonce).await.err(),
        Some(IdTokenError::Issuer)
    );
}

#[tokio::test]
async fn the_documented_keys_document_is_read_key_by_key() {
    // The doc's own keys are shortened (n = "spv..."): they must be skipped, not break the
    // document; a token naming one of their kids is refused as unknown, ours is accepted.
    let id_token = example("identity/id-token-claims-v2.json");
    let key = TestKey::generate("conformance-key-2");
    let base = publish(&key).await;
    let validator = JwksValidator::new(
        consent_callback::token::http_client().expect("client"),
        connector_core::config::BaseUrl::parse(&base).expect("url"),
        id_token["response"]["body"]["aud"].as_str().expect("aud"),
    );
    let mut claims = rebase(&id_token["response"]["body"], &base);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    claims["iat"] = json!(now);
    claims["nbf"] = json!(now);
    claims["exp"] = json!(now + 3600);
    let documented_kid = example("identity/jwks.json")["meaning"]["kids"][0]
        .as_str()
        .expect("kid")
        .to_owned();
    let unknown = jwt(
        &key,
        &json!({"typ": "JWT", "alg": "RS256", "kid": documented_kid}),
        &claims,
    );
    assert_eq!(
        validator.validate(&unknown, "123523").await.err(),
        Some(IdTokenError::UnknownKey)
    );
}
