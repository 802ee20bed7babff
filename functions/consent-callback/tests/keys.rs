//! Signing keys against microsoft-sim: a rollover is picked up by the first token signed with the
//! new key; forged kids cannot make us hammer the JWKS endpoint; a withdrawn key stops validating
//! at the next fetch; a failed periodic refresh keeps the cached keys (until their TTL). Tokens
//! are real sim id_tokens (authorization code flow, auto-approve), validated by [`JwksValidator`].

mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use connector_core::config::BaseUrl;
use consent_callback::idtoken::{IdTokenError, IdTokenValidator as _, JwksValidator, KeyTimings};
use microsoft_sim::{SimOptions, SimServer, World};
use serde_json::{Value, json};
use support::{guid, query};

const REDIRECT: &str = "http://127.0.0.1:9/auth/callback";
const SECRET: &str = "sim~keys-test-secret";

struct Sim {
    server: SimServer,
    client_id: String,
    tid: String,
    upn: String,
    http: reqwest::Client,
}

impl Sim {
    async fn start() -> Sim {
        let (client_id, tid) = (guid(), guid());
        let upn = format!("kim@keys{}.example", &tid[..8]);
        let world = json!({
            "apps": [{"clientId": client_id, "clientSecret": SECRET, "displayName": "Keys test",
                      "redirectUris": [REDIRECT], "permissions": ["Mail.Read"]}],
            "tenants": [{"id": tid, "displayName": "Keys", "verifiedDomains": [upn.split('@').nth(1)],
                         "grants": [{"clientId": client_id, "scopes": ["User.Read"], "principal": "allUsers"}],
                         "users": [{"id": guid(), "userPrincipalName": upn, "displayName": "Kim"}]}],
        });
        let mut options = SimOptions::new(World::from_json(&world.to_string()).expect("world"));
        options.auto_approve = true;
        let server = SimServer::start(options).await.expect("sim");
        Sim {
            server,
            client_id,
            tid,
            upn,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
        }
    }

    fn validator(&self, timings: KeyTimings) -> Arc<JwksValidator> {
        Arc::new(JwksValidator::with_timings(
            consent_callback::token::http_client().expect("client"),
            BaseUrl::parse(&self.server.base_url()).expect("base"),
            self.client_id.clone(),
            timings,
        ))
    }

    /// A fresh id_token with `nonce`, signed by the sim's current signing key.
    async fn id_token(&self, nonce: &str) -> String {
        let base = self.server.base_url();
        let authorize = format!(
            "{base}/{}/oauth2/v2.0/authorize?{}",
            self.tid,
            query(&[
                ("client_id", &self.client_id),
                ("response_type", "code"),
                ("redirect_uri", REDIRECT),
                ("scope", "openid profile User.Read"),
                ("nonce", nonce),
                ("state", "s"),
                ("login_hint", &self.upn),
            ])
        );
        let response = self.http.get(authorize).send().await.expect("authorize");
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("redirect with a code")
            .to_owned();
        let code = url::Url::parse(&location)
            .expect("url")
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| panic!("no code: {location}"));
        assert!(code.len() > 1_000, "realistic code length: {}", code.len());
        let tokens: Value = self
            .http
            .post(format!("{base}/{}/oauth2/v2.0/token", self.tid))
            .form(&[
                ("grant_type", "authorization_code"),
                ("client_id", &self.client_id),
                ("client_secret", SECRET),
                ("code", &code),
                ("redirect_uri", REDIRECT),
            ])
            .send()
            .await
            .expect("token")
            .json()
            .await
            .expect("json");
        tokens["id_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no id_token: {}", tokens["error_description"]))
            .to_owned()
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.server.base_url()))
            .json(&body)
            .send()
            .await
            .expect("control");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.expect("json")
    }

    async fn keys(&self) -> Value {
        self.http
            .get(format!("{}/_sim/keys", self.server.base_url()))
            .send()
            .await
            .expect("keys")
            .json()
            .await
            .expect("json")
    }

    async fn fetches(&self) -> u64 {
        self.keys().await["fetches"].as_u64().expect("fetches")
    }
}

/// `token` with its header's `kid` replaced (the signature no longer matters: the key lookup
/// comes first).
fn with_kid(token: &str, kid: &str) -> String {
    let (header, rest) = token.split_once('.').expect("jwt");
    let mut header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("b64")).expect("json");
    header["kid"] = json!(kid);
    format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header.to_string()))
}

fn timings(refresh_ms: u64, ttl_ms: u64, floor_ms: u64) -> KeyTimings {
    KeyTimings {
        refresh: Duration::from_millis(refresh_ms),
        ttl: Duration::from_millis(ttl_ms),
        floor: Duration::from_millis(floor_ms),
    }
}

#[tokio::test]
async fn a_rollover_is_picked_up_at_once_and_forged_kids_do_not_hammer_the_endpoint() {
    let sim = Sim::start().await;
    // Production timings: the floor is 10 seconds, the periodic refresh an hour.
    let validator = sim.validator(KeyTimings::default());
    let first = sim.id_token("n1").await;
    validator.validate(&first, "n1").await.expect("valid");
    assert_eq!(sim.fetches().await, 1);

    // A rollover: the first token signed with the new key triggers one fetch and validates.
    sim.control("/_sim/keys/rotate", json!({})).await;
    let second = sim.id_token("n2").await;
    validator
        .validate(&second, "n2")
        .await
        .expect("the new key at once");
    assert_eq!(sim.fetches().await, 2);

    // Forged kids right after: within the floor of that forced fetch, refused without fetching.
    for i in 0..10 {
        let token = with_kid(&second, &format!("forged-{i}"));
        assert_eq!(
            validator.validate(&token, "n2").await,
            Err(IdTokenError::UnknownKey)
        );
    }
    assert_eq!(sim.fetches().await, 2);

    // A fresh container: 30 forged kids at once and 30 more make one forced fetch (single
    // flight: the others wait for it, then find the floor not passed).
    let validator = sim.validator(KeyTimings::default());
    validator.validate(&second, "n2").await.expect("valid");
    assert_eq!(sim.fetches().await, 3);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..30 {
        let validator = validator.clone();
        let token = with_kid(&second, &format!("forged-{i}"));
        tasks.spawn(async move { validator.validate(&token, "n2").await });
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.expect("task"), Err(IdTokenError::UnknownKey));
    }
    for i in 30..60 {
        let token = with_kid(&second, &format!("forged-{i}"));
        assert_eq!(
            validator.validate(&token, "n2").await,
            Err(IdTokenError::UnknownKey)
        );
    }
    assert_eq!(sim.fetches().await, 4, "single flight, one fetch per floor");
    // Known keys keep validating meanwhile.
    validator
        .validate(&second, "n2")
        .await
        .expect("still valid");
}

#[tokio::test]
async fn a_rollover_during_a_forged_kid_flood_waits_at_most_the_floor() {
    let sim = Sim::start().await;
    // Rotating generates an RSA key, which takes a while in a debug build: a 3-second floor.
    let validator = sim.validator(timings(3_600_000, 86_400_000, 3_000));
    let first = sim.id_token("n1").await;
    validator.validate(&first, "n1").await.expect("valid");
    assert_eq!(
        validator.validate(&with_kid(&first, "forged"), "n1").await,
        Err(IdTokenError::UnknownKey)
    );
    sim.control("/_sim/keys/rotate", json!({})).await;
    let second = sim.id_token("n2").await;
    // Within the floor of the forged fetch the new key is not fetched yet...
    assert_eq!(
        validator.validate(&second, "n2").await,
        Err(IdTokenError::UnknownKey)
    );
    // ...and right after it, it is.
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    validator
        .validate(&second, "n2")
        .await
        .expect("picked up after the floor");
}

#[tokio::test]
async fn a_withdrawn_key_stops_validating_at_the_next_fetch() {
    let sim = Sim::start().await;
    let validator = sim.validator(timings(500, 86_400_000, 50));
    let old = sim.id_token("n1").await;
    let old_kid = sim.keys().await["signing"]
        .as_str()
        .expect("kid")
        .to_owned();
    validator.validate(&old, "n1").await.expect("valid");
    sim.control("/_sim/keys/rotate", json!({})).await;
    // Rolled over but still published: tokens it signed still validate.
    let new = sim.id_token("n2").await;
    validator.validate(&new, "n2").await.expect("new key");
    validator
        .validate(&old, "n1")
        .await
        .expect("old key still published");

    let withdrawn = sim
        .control("/_sim/keys/withdraw", json!({"kid": old_kid}))
        .await;
    assert!(
        !withdrawn["published"]
            .as_array()
            .expect("kids")
            .contains(&json!(old_kid))
    );
    // Until the next fetch the cached key still validates; the periodic refresh replaces the set.
    validator
        .validate(&old, "n1")
        .await
        .expect("cached until the next fetch");
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert_eq!(
        validator.validate(&old, "n1").await,
        Err(IdTokenError::UnknownKey)
    );
    validator
        .validate(&new, "n2")
        .await
        .expect("the current key");

    // A fetch forced by an unknown kid replaces the set too.
    let validator = sim.validator(KeyTimings::default());
    sim.control("/_sim/keys/rotate", json!({})).await;
    validator.validate(&new, "n2").await.expect("cached");
    let new_kid = sim.keys().await["published"][1]
        .as_str()
        .expect("kid")
        .to_owned();
    sim.control("/_sim/keys/withdraw", json!({"kid": new_kid}))
        .await;
    sim.control("/_sim/keys/rotate", json!({})).await;
    let newest = sim.id_token("n3").await;
    validator
        .validate(&newest, "n3")
        .await
        .expect("forced fetch");
    assert_eq!(
        validator.validate(&new, "n2").await,
        Err(IdTokenError::UnknownKey)
    );
}

#[tokio::test]
async fn a_failed_periodic_refresh_keeps_the_cached_keys_until_their_ttl() {
    let sim = Sim::start().await;
    let validator = sim.validator(timings(300, 1_500, 100));
    let token = sim.id_token("n1").await;
    validator.validate(&token, "n1").await.expect("valid");
    assert_eq!(sim.fetches().await, 1);

    sim.control("/_sim/keys/outage", json!({"requests": 1000}))
        .await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    // The refresh is due and fails: the cached keys stay in use.
    validator
        .validate(&token, "n1")
        .await
        .expect("kept after a failed refresh");
    validator.validate(&token, "n1").await.expect("and again");
    // Past the TTL with the endpoint still down, the keys are no longer trusted.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert!(matches!(
        validator.validate(&token, "n1").await,
        Err(IdTokenError::Metadata(_))
    ));
    // The endpoint is back: the next fetch restores validation.
    sim.control("/_sim/keys/outage", json!({"requests": 0}))
        .await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    validator.validate(&token, "n1").await.expect("valid again");
    assert_eq!(sim.fetches().await, 2);
}
