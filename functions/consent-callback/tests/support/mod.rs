//! Shared by the handler tests: the handler on in-memory ports in front of a [`idp::MiniIdp`],
//! requests built from URLs or from `events/consent-callback/*.json`, a settable clock, and
//! what the tests assert about stored state.
#![allow(dead_code)]

pub mod html_forms;
pub mod idp;
pub mod live;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use connector_core::adapters::memory::StaticClientSecret;
use connector_core::adapters::memory::{
    MemoryConnectionStore, MemoryJobQueue, MemoryTenantStore, MemoryTokenVault,
};
use connector_core::config::BaseUrl;
use connector_core::credential::AppCredential;
use connector_core::graph::GraphClient;
use connector_core::secret::ClientSecret;
use consent_callback::config::ConsentConfig;
use consent_callback::domains::MemoryTenantDomains;
use consent_callback::idtoken::JwksValidator;
use consent_callback::organization::GraphOrganizationDirectory;
use consent_callback::sessions::MemoryAuthSessionStore;
use consent_callback::token::{OAuthCodeExchange, http_client};
use consent_callback::{App, Clock, Ports};
use lambda_http::{Body, Request, Response};
use time::OffsetDateTime;

pub const CLIENT_ID: &str = "6a1e0c1d-2b3c-4d5e-8f60-718293a4b5c6";
pub const CLIENT_SECRET: &str = "test-client-secret~value";
pub const PUBLIC: &str = "https://connector.example.com";
pub const APP_URL: &str = "https://app.example.com/home";

/// A clock tests move by hand.
pub struct TestClock(Mutex<OffsetDateTime>);

impl TestClock {
    pub fn new() -> TestClock {
        TestClock(Mutex::new(OffsetDateTime::now_utc()))
    }

    pub fn advance(&self, seconds: i64) {
        *self.0.lock().expect("clock") += time::Duration::seconds(seconds);
    }
}

impl Clock for TestClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().expect("clock")
    }
}

pub fn env(login_base: &str) -> HashMap<String, String> {
    [
        ("TENANTS_TABLE", "t-tenants"),
        ("CONNECTIONS_TABLE", "t-connections"),
        ("SYNC_STATE_TABLE", "t-sync"),
        ("ACTIVITIES_TABLE", "t-activities"),
        ("CRM_TABLE", "t-crm"),
        ("AUTH_SESSIONS_TABLE", "t-sessions"),
        ("IDEMPOTENCY_TABLE", "t-idem"),
        ("SUBSCRIPTIONS_TABLE", "t-subscriptions"),
        (
            "SUBSCRIPTION_QUEUE_URL",
            "http://127.0.0.1:1/000000000000/subscriptions",
        ),
        (
            "MAIL_SYNC_QUEUE_URL",
            "http://127.0.0.1:1/000000000000/mail",
        ),
        (
            "CALENDAR_SYNC_QUEUE_URL",
            "http://127.0.0.1:1/000000000000/calendar",
        ),
        (
            "TEAMS_POST_QUEUE_URL",
            "http://127.0.0.1:1/000000000000/teams",
        ),
        ("CLIENT_SECRET_ID", "stack/entra-client-secret"),
        ("CLIENT_ID", CLIENT_ID),
        ("LOGIN_BASE_URL", login_base),
        ("GRAPH_BASE_URL", login_base),
        ("PUBLIC_BASE_URL", PUBLIC),
        ("APP_BASE_URL", APP_URL),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The handler on in-memory ports, talking to a mini IdP for tokens and keys.
pub struct Memory {
    pub app: App,
    pub idp: idp::MiniIdp,
    pub tenants: Arc<MemoryTenantStore>,
    pub domains: Arc<MemoryTenantDomains>,
    pub connections: Arc<MemoryConnectionStore>,
    pub vault: Arc<MemoryTokenVault>,
    pub queue: Arc<MemoryJobQueue>,
    pub sessions: Arc<MemoryAuthSessionStore>,
    pub clock: Arc<TestClock>,
}

impl Memory {
    pub async fn start() -> Memory {
        let idp = idp::MiniIdp::start().await;
        let vars = env(&idp.base_url);
        let config = ConsentConfig::from_lookup(|name| vars.get(name).cloned()).expect("config");
        let login = BaseUrl::parse(&idp.base_url).expect("base url");
        let http = http_client().expect("client");
        let tenants = Arc::new(MemoryTenantStore::default());
        let domains = Arc::new(MemoryTenantDomains::default());
        let connections = Arc::new(MemoryConnectionStore::default());
        let vault = Arc::new(MemoryTokenVault::default());
        let queue = Arc::new(MemoryJobQueue::default());
        let sessions = Arc::new(MemoryAuthSessionStore::default());
        let clock = Arc::new(TestClock::new());
        let ports = Ports {
            webhook: None,
            subscriptions: None,
            consent_meetings: None,
            tenants: tenants.clone(),
            domains: domains.clone(),
            connections: connections.clone(),
            vault: vault.clone(),
            queue: queue.clone(),
            sessions: sessions.clone(),
            exchange: Arc::new(OAuthCodeExchange::new(
                http.clone(),
                login.clone(),
                CLIENT_ID,
                Arc::new(AppCredential::secret(Arc::new(StaticClientSecret(
                    ClientSecret::new(CLIENT_SECRET),
                )))),
            )),
            id_tokens: Arc::new(JwksValidator::new(http.clone(), login.clone(), CLIENT_ID)),
            organization: Arc::new(GraphOrganizationDirectory::new(GraphClient::new(
                connector_core::graph::graph_http_client().expect("client"),
                &login,
            ))),
            clock: clock.clone(),
            web_sessions: Arc::new(consent_callback::websession::MemoryWebSessionStore::default()),
            sync: Arc::new(connector_core::adapters::memory::MemorySyncStateStore::default()),
            activities: Arc::new(connector_core::adapters::memory::MemoryActivityStore::default()),
            targets: Arc::new(
                connector_core::adapters::teams_memory::MemoryShareTargetStore::default(),
            ),
        };
        Memory {
            app: App::new(config, ports),
            idp,
            tenants,
            domains,
            connections,
            vault,
            queue,
            sessions,
            clock,
        }
    }

    pub async fn get(&self, path_and_query: &str, cookie: Option<&str>) -> Response<Body> {
        self.app
            .handle(request("GET", path_and_query, cookie))
            .await
    }

    /// Starts a flow (`/consent/admin?..` or `/auth/login?..`) and returns where it sends the browser.
    pub async fn begin(&self, path_and_query: &str) -> Started {
        let response = self.get(path_and_query, None).await;
        assert_eq!(
            response.status(),
            302,
            "{path_and_query}: {}",
            body(&response)
        );
        Started::from_response(&response)
    }

    pub fn mail_queue(&self) -> String {
        self.app.config().core.queues.mail_sync.clone()
    }

    pub fn calendar_queue(&self) -> String {
        self.app.config().core.queues.calendar_sync.clone()
    }
}

/// A flow's first redirect: Microsoft's URL, its parameters, and the binding cookie.
#[derive(Clone, Debug)]
pub struct Started {
    pub location: url::Url,
    pub params: HashMap<String, String>,
    /// `name=value` of the binding cookie.
    pub cookie: String,
    pub set_cookie: String,
}

impl Started {
    pub fn from_response(response: &Response<Body>) -> Started {
        let location = url::Url::parse(header(response, "location").expect("Location"))
            .expect("absolute Location");
        let set_cookie = header(response, "set-cookie")
            .expect("Set-Cookie")
            .to_owned();
        let cookie = set_cookie.split(';').next().expect("pair").to_owned();
        let params = location.query_pairs().into_owned().collect();
        Started {
            location,
            params,
            cookie,
            set_cookie,
        }
    }

    pub fn state(&self) -> &str {
        &self.params["state"]
    }

    pub fn nonce(&self) -> &str {
        &self.params["nonce"]
    }
}

pub fn request(method: &str, path_and_query: &str, cookie: Option<&str>) -> Request {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(format!("{PUBLIC}{path_and_query}"));
    if let Some(cookie) = cookie {
        builder = builder.header("cookie", cookie);
    }
    builder.body(Body::Empty).expect("request")
}

/// An API Gateway HTTP API v2 event from `events/consent-callback/{name}.json`.
pub fn event(name: &str) -> Request {
    let path = format!(
        "{}/../../events/consent-callback/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let json = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    lambda_http::request::from_str(&json).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn header<'a>(response: &'a Response<Body>, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
}

pub fn body(response: &Response<Body>) -> String {
    String::from_utf8_lossy(response.body().as_ref()).into_owned()
}

/// Form-encodes `pairs` into a query string.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        serializer.append_pair(name, value);
    }
    serializer.finish()
}

pub fn guid() -> String {
    uuid::Uuid::new_v4().to_string()
}
