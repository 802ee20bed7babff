//! A tiny identity provider for tests that need tokens we craft ourselves: discovery for
//! `organizations`, a JWKS with our own RSA key, and a token endpoint that answers whatever
//! the test put in its slot. It lets the attack table forge id_tokens the real
//! microsoft-sim would never issue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{self, KeyPair as _};
use axum::Router;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

pub struct TestKey {
    pub kid: String,
    pair: KeyPair,
}

impl TestKey {
    pub fn generate(kid: &str) -> TestKey {
        TestKey {
            kid: kid.to_owned(),
            pair: KeyPair::generate(KeySize::Rsa2048).expect("RSA key"),
        }
    }

    pub fn jwk(&self, issuer: &str) -> Value {
        let components: PublicKeyComponents<Vec<u8>> = self.pair.public_key().into();
        let strip = |bytes: &[u8]| {
            let start = bytes.iter().position(|b| *b != 0).unwrap_or(0);
            URL_SAFE_NO_PAD.encode(&bytes[start..])
        };
        json!({"kty": "RSA", "use": "sig", "kid": self.kid, "n": strip(&components.n), "e": strip(&components.e), "issuer": issuer})
    }

    /// The public key's bytes: what an HS256 key-confusion attack would use as the secret.
    pub fn public_bytes(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    pub fn sign_rs256(&self, input: &[u8]) -> Vec<u8> {
        let mut sig = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input,
                &mut sig,
            )
            .expect("signs");
        sig
    }
}

/// `header.claims.signature` with the header and claims as given, signed RS256 by `key`.
pub fn jwt(key: &TestKey, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = key.sign_rs256(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// HS256 over the header and claims with `secret` as the HMAC key.
pub fn jwt_hs256(secret: &[u8], header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

#[derive(Default)]
struct IdpState {
    next: Option<(u16, Value)>,
    jwks_fetches: usize,
    token_forms: Vec<HashMap<String, String>>,
    /// What `GET /v1.0/organization` answers (404 when unset).
    organization: Option<Value>,
}

#[derive(Clone)]
struct Shared {
    base: String,
    key: Arc<TestKey>,
    state: Arc<Mutex<IdpState>>,
}

pub struct MiniIdp {
    pub base_url: String,
    pub key: Arc<TestKey>,
    state: Arc<Mutex<IdpState>>,
    _task: tokio::task::JoinHandle<()>,
}

impl MiniIdp {
    pub async fn start() -> MiniIdp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base_url = format!("http://{}", listener.local_addr().expect("addr"));
        let key = Arc::new(TestKey::generate("test-key-1"));
        let state = Arc::new(Mutex::new(IdpState::default()));
        let shared = Shared {
            base: base_url.clone(),
            key: key.clone(),
            state: state.clone(),
        };
        let app = Router::new()
            .route(
                "/organizations/v2.0/.well-known/openid-configuration",
                get(discovery),
            )
            .route("/common/discovery/v2.0/keys", get(keys))
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route("/v1.0/organization", get(organization))
            .with_state(shared);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serves");
        });
        MiniIdp {
            base_url,
            key,
            state,
            _task: task,
        }
    }

    /// The issuer a token of tenant `tid` carries.
    pub fn issuer(&self, tid: &str) -> String {
        format!("{}/{tid}/v2.0", self.base_url)
    }

    /// The next token-endpoint answer.
    pub fn respond(&self, status: u16, body: Value) {
        self.state.lock().expect("lock").next = Some((status, body));
    }

    /// A successful token response carrying `id_token` and the granted `scope`.
    pub fn respond_tokens(&self, id_token: &str, scope: &str) {
        self.respond(
            200,
            json!({"token_type": "Bearer", "scope": scope, "expires_in": 3599, "ext_expires_in": 3599,
                   "access_token": "at-not-used", "refresh_token": "rt-0.AXfixture", "id_token": id_token}),
        );
    }

    /// `GET /v1.0/organization` answers tenant `tid` with these verified domains.
    pub fn organization(&self, tid: &str, domains: &[&str]) {
        let domains: Vec<Value> = domains
            .iter()
            .enumerate()
            .map(|(i, name)| json!({"capabilities": "Email, OfficeCommunicationsOnline", "isDefault": i == 0, "isInitial": false, "name": name, "type": "Managed"}))
            .collect();
        self.state.lock().expect("lock").organization =
            Some(json!({"value": [{"id": tid, "displayName": "Org", "verifiedDomains": domains}]}));
    }

    pub fn jwks_fetches(&self) -> usize {
        self.state.lock().expect("lock").jwks_fetches
    }

    pub fn token_forms(&self) -> Vec<HashMap<String, String>> {
        self.state.lock().expect("lock").token_forms.clone()
    }

    /// Valid v2 id_token claims for `tid`/`oid`, audience `aud`, with `nonce`.
    pub fn claims(&self, tid: &str, oid: &str, aud: &str, nonce: &str, upn: &str) -> Value {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        json!({"ver": "2.0", "iss": self.issuer(tid), "aud": aud, "tid": tid, "oid": oid, "sub": "pairwise-sub",
               "preferred_username": upn, "email": upn, "name": "Test User", "nonce": nonce,
               "iat": now, "nbf": now, "exp": now + 3600})
    }

    /// A correctly signed token with the standard header.
    pub fn sign(&self, claims: &Value) -> String {
        jwt(
            &self.key,
            &json!({"typ": "JWT", "alg": "RS256", "kid": self.key.kid}),
            claims,
        )
    }
}

async fn discovery(State(shared): State<Shared>) -> Response {
    axum::Json(json!({
        "issuer": format!("{}/{{tenantid}}/v2.0", shared.base),
        "jwks_uri": format!("{}/common/discovery/v2.0/keys", shared.base),
        "token_endpoint": format!("{}/organizations/oauth2/v2.0/token", shared.base),
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
    .into_response()
}

async fn keys(State(shared): State<Shared>) -> Response {
    shared.state.lock().expect("lock").jwks_fetches += 1;
    let issuer = format!("{}/{{tenantid}}/v2.0", shared.base);
    axum::Json(json!({"keys": [shared.key.jwk(&issuer)]})).into_response()
}

async fn organization(State(shared): State<Shared>) -> Response {
    match shared.state.lock().expect("lock").organization.clone() {
        Some(body) => axum::Json(body).into_response(),
        None => (StatusCode::NOT_FOUND, "{}").into_response(),
    }
}

async fn token(
    State(shared): State<Shared>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut state = shared.state.lock().expect("lock");
    state.token_forms.push(form);
    match state.next.take() {
        Some((status, body)) => (
            StatusCode::from_u16(status).expect("status"),
            [("content-type", "application/json; charset=utf-8")],
            body.to_string(),
        )
            .into_response(),
        None => (
            StatusCode::BAD_REQUEST,
            [("content-type", "application/json; charset=utf-8")],
            json!({"error": "invalid_grant", "error_description": "AADSTS70000: no answer prepared", "error_codes": [70000]}).to_string(),
        )
            .into_response(),
    }
}
