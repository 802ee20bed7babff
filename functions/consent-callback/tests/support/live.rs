//! The handler for real: its production adapters against moto (a fresh copy of
//! template.yaml's resources) and microsoft-sim in-process, served over HTTP on
//! 127.0.0.1 so that redirects between our pages and the sim's work as in a browser. Also a
//! browser-like client (cookie jar, redirects followed by hand, forms submitted) and
//! readers for what ended up stored.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_sqs::Client as SqsClient;
use connector_core::adapters::dynamodb::{
    DynamoActivityStore, DynamoConnectionStore, DynamoConsentMeetingStore, DynamoSubscriptionStore,
    DynamoSyncStateStore, DynamoTenantStore,
};
use connector_core::adapters::s3::{S3BodyStore, s3_client};
use connector_core::adapters::secrets::SecretsManagerVault;
use connector_core::adapters::sqs::SqsJobQueue;
use connector_core::adapters::teams_dynamodb::DynamoShareTargetStore;
use connector_core::credential::AppCredential;
use connector_core::domain::{Connection, SyncKind, Tenant, TenantId, UserId, UserKey};
use connector_core::graph::GraphClient;
use connector_core::messages::SyncJob;
use connector_core::notifications::manager::Manager;
use connector_core::notifications::webhook::{Webhook, WebhookQueues};
use connector_core::ports::{ConnectionStore as _, TenantStore as _, TokenVault as _};
use connector_core::secret::TokenRecord;
use connector_core::sync::{FanOutOptions, FanOutReport, fan_out};
use consent_callback::config::ConsentConfig;
use consent_callback::domains::{DynamoTenantDomains, TenantDomains as _};
use consent_callback::idtoken::JwksValidator;
use consent_callback::organization::GraphOrganizationDirectory;
use consent_callback::sessions::DynamoAuthSessionStore;
use consent_callback::token::{OAuthCodeExchange, http_client};
use consent_callback::websession::DynamoWebSessionStore;
use consent_callback::{App, Ports, SystemClock};
use microsoft_sim::{SimOptions, SimServer, World};
use serde_json::{Value, json};

use super::html_forms::{self, Form};

/// Every Graph permission of our bundles, as the app registration declares them.
pub const APP_PERMISSIONS: [&str; 10] = [
    "Calendars.ReadWrite",
    "OnlineMeetings.ReadWrite",
    "Mail.Read",
    "Team.ReadBasic.All",
    "Channel.ReadBasic.All",
    "ChannelMessage.Send",
    "Chat.Create",
    "ChatMessage.Send",
    "Chat.Read",
    "ChannelMessage.Read.All",
];

pub struct Live {
    pub stack: local_stack::TestStack,
    pub sim: SimServer,
    /// Our base URL (PUBLIC_BASE_URL).
    pub public: String,
    /// APP_BASE_URL: a page the shim serves itself.
    pub app_url: String,
    pub client_id: String,
    pub app: Arc<App>,
    /// The stores the pages read and disconnecting empties, for seeding and asserting.
    pub sync: Arc<DynamoSyncStateStore>,
    pub activities: Arc<DynamoActivityStore>,
    pub consent_meetings: Arc<DynamoConsentMeetingStore>,
    /// The message bodies bucket the activities' bodies go to.
    pub bodies: Arc<S3BodyStore>,
    pub tenants: DynamoTenantStore,
    domains: DynamoTenantDomains,
    connections: DynamoConnectionStore,
    vault: SecretsManagerVault,
    sqs: SqsClient,
    server: tokio::task::JoinHandle<()>,
    /// The subscriptions' manager the app's disconnections use (production wiring).
    pub manager: Arc<Manager>,
    /// The functions' configuration (tables, queues, the sim as Microsoft).
    pub core: connector_core::config::Config,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Follows microsoft-sim's pages (account form, consent Accept) until one of ours.
pub async fn through_microsoft(browser: &Browser, mut landing: Landing, upn: &str) -> Landing {
    for _ in 0..6 {
        let Landing::Page { ref url, .. } = landing else {
            return landing;
        };
        let url = url.clone();
        let forms = landing.forms();
        if let Some(form) = forms
            .iter()
            .find(|f| f.fields.iter().any(|(n, _)| n == "login"))
        {
            landing = browser.submit(&url, form, &[("login", upn)], None).await;
        } else if let Some(form) = forms.iter().find(|f| {
            f.buttons
                .iter()
                .any(|(n, v, _)| n == "decision" && v == "accept")
        }) {
            landing = browser
                .submit(&url, form, &[], Some(("decision", "accept")))
                .await;
        } else {
            return landing;
        }
    }
    landing
}

/// Signs `upn` in at `start` (`/admin/login`, `/me/login`, `/auth/login?..`).
pub async fn sign_in(live: &Live, browser: &Browser, start: &str, upn: &str) -> Landing {
    let first = browser.open(&live.url(start)).await;
    through_microsoft(browser, first, upn).await
}

/// The value of the hidden `csrf` field of the form posting to `action`.
pub fn csrf(html: &str, action: &str) -> String {
    super::html_forms::forms(html)
        .into_iter()
        .find(|f| f.action == action)
        .and_then(|f| f.fields.into_iter().find(|(n, _)| n == "csrf"))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {action} form with a csrf field"))
}

pub async fn get(live: &Live, browser: &Browser, path: &str) -> (u16, String, Option<String>) {
    let response = browser
        .client
        .get(live.url(path))
        .send()
        .await
        .expect("GET");
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, response.text().await.expect("body"), location)
}

pub async fn post(
    live: &Live,
    browser: &Browser,
    path: &str,
    origin: Option<&str>,
    fields: &[(&str, &str)],
) -> (u16, String) {
    let mut request = browser.client.post(live.url(path)).form(fields);
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let response = request.send().await.expect("POST");
    (
        response.status().as_u16(),
        response.text().await.expect("body"),
    )
}

/// `upn` signs in to `/me` in `browser` and disconnects: the answer's status and body.
pub async fn disconnect_from_me(live: &Live, browser: &Browser, upn: &str) -> (u16, String) {
    sign_in(live, browser, "/me/login", upn).await;
    let (_, page, _) = get(live, browser, "/me").await;
    post(
        live,
        browser,
        "/me/disconnect",
        Some(&live.public),
        &[("csrf", &csrf(&page, "/me/disconnect")), ("confirm", "on")],
    )
    .await
}

/// A world tenant: `users` as `(id, upn, roles)`.
pub fn tenant_json(
    id: &str,
    domain: &str,
    policy: Value,
    users: &[(&str, &str, &[&str])],
) -> Value {
    let users: Vec<Value> = users
        .iter()
        .map(|(id, upn, roles)| json!({"id": id, "userPrincipalName": upn, "mail": upn, "displayName": upn.split('@').next().unwrap_or_default(), "roles": roles}))
        .collect();
    let mut tenant =
        json!({"id": id, "displayName": domain, "verifiedDomains": [domain], "users": users});
    if let (Some(tenant), Some(policy)) = (tenant.as_object_mut(), policy.as_object()) {
        tenant.extend(policy.clone());
    }
    tenant
}

impl Live {
    pub async fn start(auto_approve: bool, tenants: Vec<Value>) -> Live {
        Self::start_on("127.0.0.1:0", auto_approve, tenants).await
    }

    pub async fn start_on(addr: &str, auto_approve: bool, tenants: Vec<Value>) -> Live {
        Self::start_with(addr, auto_approve, tenants, BTreeMap::new()).await
    }

    /// As [`Live::start_on`], with template parameters (`EntraCredential=certificate`: the
    /// stack's KMS key is registered on the app as its certificate).
    pub async fn start_with(
        addr: &str,
        auto_approve: bool,
        tenants: Vec<Value>,
        template_params: BTreeMap<String, String>,
    ) -> Live {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let public = format!("http://{}", listener.local_addr().expect("addr"));
        let app_url = format!("{public}/app/home");
        let client_id = uuid::Uuid::new_v4().to_string();
        let secret = format!("sim~{}", uuid::Uuid::new_v4().simple());
        let world = json!({
            "apps": [{"clientId": client_id, "clientSecret": secret, "displayName": "Office 365 connector",
                      "redirectUris": [format!("{public}/consent/callback"), format!("{public}/auth/callback")],
                      "permissions": APP_PERMISSIONS,
                      // Directory roles in tokens (`wids`): what the admin-consent verification needs.
                      "groupMembershipClaims": "DirectoryRole"}],
            "tenants": tenants,
        });
        let world = World::from_json(&world.to_string()).expect("world");
        let mut options = SimOptions::new(world);
        options.auto_approve = auto_approve;
        let sim = SimServer::start(options).await.expect("sim");

        let mut params = BTreeMap::from([("EntraClientSecretValue".to_owned(), secret)]);
        params.extend(template_params);
        let stack = local_stack::test_stack_from(&local_stack::template_path(), &params)
            .await
            .expect("local stack");
        if let Some(certificate) = &stack.provisioned.certificate {
            let registered = reqwest::Client::new()
                .post(format!(
                    "{}/_sim/apps/{client_id}/certificates",
                    sim.base_url()
                ))
                .json(&certificate.sim_registration())
                .send()
                .await
                .expect("register the certificate");
            assert!(registered.status().is_success());
        }
        let mut vars = stack.env.clone();
        vars.insert("CLIENT_ID".into(), client_id.clone());
        vars.insert("LOGIN_BASE_URL".into(), sim.base_url());
        vars.insert("GRAPH_BASE_URL".into(), sim.base_url());
        vars.insert("PUBLIC_BASE_URL".into(), public.clone());
        vars.insert("APP_BASE_URL".into(), app_url.clone());
        // These journeys check mail jobs and Mail.Read for users of unknown tenants, so the
        // configured default features are mail here (the shipped default is calendar).
        vars.insert("DEFAULT_FEATURES".into(), "mail".into());
        let config = ConsentConfig::from_lookup(|name| vars.get(name).cloned()).expect("config");

        let dynamodb = aws_sdk_dynamodb::Client::new(&stack.sdk);
        let secrets = aws_sdk_secretsmanager::Client::new(&stack.sdk);
        let sqs = SqsClient::new(&stack.sdk);
        let credential = Arc::new(AppCredential::from_config(
            &config.core.microsoft,
            secrets.clone(),
            aws_sdk_kms::Client::new(&stack.sdk),
        ));
        let http = http_client().expect("http client");
        let tables = config.core.tables.clone();
        let login = config.core.microsoft.login_base_url.clone();
        let bodies = Arc::new(S3BodyStore::new(
            s3_client(
                aws_sdk_s3::config::Builder::from(&stack.sdk),
                stack.sdk.endpoint_url().is_some(),
            ),
            vars["MESSAGE_BODIES_BUCKET"].clone(),
        ));
        let sync = Arc::new(DynamoSyncStateStore::new(
            dynamodb.clone(),
            tables.sync_state.clone(),
        ));
        let activities = Arc::new(
            DynamoActivityStore::new(dynamodb.clone(), tables.activities.clone())
                .with_bodies(bodies.clone()),
        );
        // Change notifications as main.rs wires them: the webhook on this server, and the
        // manager a disconnection cancels subscriptions through.
        let queue: Arc<dyn connector_core::ports::JobQueue> =
            Arc::new(SqsJobQueue::new(sqs.clone()));
        let webhook = Arc::new(Webhook::new(
            Arc::new(DynamoSubscriptionStore::new(
                dynamodb.clone(),
                tables.subscriptions.clone(),
            )),
            queue,
            WebhookQueues {
                mail_sync: config.core.queues.mail_sync.clone(),
                calendar_sync: config.core.queues.calendar_sync.clone(),
                subscriptions: config.core.queues.subscriptions.clone(),
            },
            Arc::new(SystemClock),
        ));
        let manager = Arc::new(
            Manager::on_aws(
                &config.core,
                &config.web.public_base_url,
                &stack.sdk,
                Arc::new(SystemClock),
            )
            .expect("manager"),
        );
        let consent_meetings = Arc::new(DynamoConsentMeetingStore::new(
            dynamodb.clone(),
            tables.activities.clone(),
        ));
        let ports = Ports {
            webhook: Some(webhook),
            subscriptions: Some(manager.clone()),
            consent_meetings: Some(consent_meetings.clone()),
            tenants: Arc::new(DynamoTenantStore::new(
                dynamodb.clone(),
                tables.tenants.clone(),
            )),
            domains: Arc::new(DynamoTenantDomains::new(
                dynamodb.clone(),
                tables.tenants.clone(),
            )),
            connections: Arc::new(DynamoConnectionStore::new(
                dynamodb.clone(),
                tables.connections.clone(),
            )),
            vault: Arc::new(SecretsManagerVault::new(secrets.clone())),
            queue: Arc::new(SqsJobQueue::new(sqs.clone())),
            sessions: Arc::new(DynamoAuthSessionStore::new(
                dynamodb.clone(),
                tables.auth_sessions.clone(),
            )),
            exchange: Arc::new(OAuthCodeExchange::new(
                http.clone(),
                login.clone(),
                client_id.clone(),
                credential,
            )),
            id_tokens: Arc::new(JwksValidator::new(http.clone(), login, client_id.clone())),
            organization: Arc::new(GraphOrganizationDirectory::new(GraphClient::new(
                connector_core::graph::graph_http_client().expect("client"),
                &config.core.microsoft.graph_base_url,
            ))),
            clock: Arc::new(SystemClock),
            web_sessions: Arc::new(DynamoWebSessionStore::new(
                dynamodb.clone(),
                tables.auth_sessions.clone(),
            )),
            sync: sync.clone(),
            activities: activities.clone(),
            targets: Arc::new(DynamoShareTargetStore::new(
                dynamodb.clone(),
                tables.sync_state.clone(),
            )),
        };
        let core = config.core.clone();
        let app = Arc::new(App::new(config, ports));
        let server = tokio::spawn(serve(listener, app.clone()));
        Live {
            tenants: DynamoTenantStore::new(dynamodb.clone(), tables.tenants.clone()),
            domains: DynamoTenantDomains::new(dynamodb, tables.tenants),
            connections: DynamoConnectionStore::new(
                aws_sdk_dynamodb::Client::new(&stack.sdk),
                tables.connections,
            ),
            vault: SecretsManagerVault::new(secrets),
            sqs,
            stack,
            sim,
            public,
            app_url,
            client_id,
            app,
            sync,
            activities,
            consent_meetings,
            bodies,
            server,
            manager,
            core,
        }
    }

    pub fn browser(&self) -> Browser {
        Browser {
            client: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            app_url: self.app_url.clone(),
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.public)
    }

    pub async fn tenant(&self, id: &str) -> Option<Tenant> {
        self.tenants
            .get_tenant(&TenantId::parse(id).expect("guid"))
            .await
            .expect("tenants table")
    }

    /// The tenant's DynamoDB item as stored, attribute by attribute.
    pub async fn raw_tenant(
        &self,
        id: &str,
    ) -> Option<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        self.raw_item("TENANTS_TABLE", "tenantId", id, None).await
    }

    /// The connection's DynamoDB item as stored.
    pub async fn raw_connection(
        &self,
        tid: &str,
        oid: &str,
    ) -> Option<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        self.raw_item("CONNECTIONS_TABLE", "tenantId", tid, Some(("userId", oid)))
            .await
    }

    async fn raw_item(
        &self,
        table_var: &str,
        hash: &str,
        value: &str,
        range: Option<(&str, &str)>,
    ) -> Option<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        use aws_sdk_dynamodb::types::AttributeValue;
        let mut request = aws_sdk_dynamodb::Client::new(&self.stack.sdk)
            .get_item()
            .table_name(self.stack.var(table_var))
            .consistent_read(true)
            .key(hash, AttributeValue::S(value.to_owned()));
        if let Some((name, value)) = range {
            request = request.key(name, AttributeValue::S(value.to_owned()));
        }
        request.send().await.expect("GetItem").item
    }

    pub async fn domain(&self, domain: &str) -> Option<TenantId> {
        self.domains
            .tenant_for_domain(domain)
            .await
            .expect("tenants table")
    }

    fn key(tid: &str, oid: &str) -> UserKey {
        UserKey::new(
            TenantId::parse(tid).expect("guid"),
            UserId::parse(oid).expect("guid"),
        )
    }

    pub async fn connection(&self, tid: &str, oid: &str) -> Option<Connection> {
        self.connections
            .get_connection(&Self::key(tid, oid))
            .await
            .expect("connections table")
    }

    pub async fn token(&self, tid: &str, oid: &str) -> Option<TokenRecord> {
        self.vault
            .get_token(&Self::key(tid, oid))
            .await
            .expect("secrets manager")
    }

    /// Every job waiting on a queue (received, so they are not seen twice).
    pub async fn jobs(&self, queue_url: &str) -> Vec<SyncJob> {
        let mut jobs = Vec::new();
        loop {
            let output = self
                .sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .send()
                .await
                .expect("receive");
            let messages = output.messages.unwrap_or_default();
            if messages.is_empty() {
                return jobs;
            }
            for message in messages {
                jobs.push(
                    serde_json::from_str(message.body().unwrap_or_default()).expect("a sync job"),
                );
            }
        }
    }

    pub async fn mail_jobs(&self) -> Vec<SyncJob> {
        self.jobs(self.stack.var("MAIL_SYNC_QUEUE_URL")).await
    }

    pub async fn calendar_jobs(&self) -> Vec<SyncJob> {
        self.jobs(self.stack.var("CALENDAR_SYNC_QUEUE_URL")).await
    }

    /// The scheduled fan-out for `kind`, as mail-sync's and calendar-sync's schedule handlers
    /// run it, over this stack's tables and queue.
    pub async fn fan_out(&self, kind: SyncKind) -> FanOutReport {
        let queue_url = match kind {
            SyncKind::Mail => self.stack.var("MAIL_SYNC_QUEUE_URL"),
            SyncKind::Calendar => self.stack.var("CALENDAR_SYNC_QUEUE_URL"),
        };
        fan_out(
            &self.connections,
            &self.tenants,
            &SqsJobQueue::new(self.sqs.clone()),
            queue_url,
            kind,
            time::OffsetDateTime::now_utc(),
            FanOutOptions::default(),
        )
        .await
        .expect("fan-out")
    }

    /// POSTs to the sim's control API.
    pub async fn control(&self, path: &str, body: Value) -> Value {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", self.sim.base_url()))
            .json(&body)
            .send()
            .await
            .expect("control API");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap_or(Value::Null)
    }

    pub async fn control_get(&self, path: &str) -> Value {
        reqwest::get(format!("{}{path}", self.sim.base_url()))
            .await
            .expect("control API")
            .json()
            .await
            .expect("json")
    }
}

/// Serves the handler (and a stand-in for the app at `/app/...`) over HTTP.
pub async fn serve(listener: tokio::net::TcpListener, app: Arc<App>) {
    let router = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let app = app.clone();
        async move { shim(&app, request).await }
    });
    let _ = axum::serve(listener, router).await;
}

async fn shim(app: &App, request: axum::extract::Request) -> axum::response::Response {
    if request.uri().path().starts_with("/app/") {
        return axum::response::Html(
            "<!DOCTYPE html><html><head><title>The app</title></head><body><h1>Signed in: the app's home page</h1></body></html>",
        )
        .into_response_ext();
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let request = http::Request::from_parts(parts, lambda_http::Body::from(bytes.to_vec()));
    let response = app.handle(request).await;
    let (parts, body) = response.into_parts();
    axum::response::Response::from_parts(parts, axum::body::Body::from(body.as_ref().to_vec()))
}

trait IntoResponseExt {
    fn into_response_ext(self) -> axum::response::Response;
}

impl<T: axum::response::IntoResponse> IntoResponseExt for T {
    fn into_response_ext(self) -> axum::response::Response {
        self.into_response()
    }
}

/// Where a walk through redirects ended.
#[derive(Debug)]
pub enum Landing {
    /// Redirected to APP_BASE_URL (not fetched).
    App(String),
    /// A page that is not a redirect.
    Page {
        url: String,
        status: u16,
        body: String,
    },
    /// A redirect to a URL the caller asked to stop at (not fetched).
    Stopped(String),
}

impl Landing {
    pub fn page(&self) -> (&str, u16, &str) {
        match self {
            Landing::Page { url, status, body } => (url, *status, body),
            other => panic!("expected a page, got {other:?}"),
        }
    }

    pub fn forms(&self) -> Vec<Form> {
        html_forms::forms(self.page().2)
    }

    pub fn text(&self) -> String {
        html_forms::text(self.page().2)
    }
}

/// A cookie-keeping client that follows redirects itself.
pub struct Browser {
    pub client: reqwest::Client,
    app_url: String,
}

impl Browser {
    pub async fn open(&self, url: &str) -> Landing {
        self.open_until(url, |_| false).await
    }

    pub async fn open_until(&self, url: &str, stop: impl Fn(&str) -> bool) -> Landing {
        let response = self.client.get(url).send().await.expect("GET");
        self.follow(response, stop).await
    }

    async fn follow(
        &self,
        mut response: reqwest::Response,
        stop: impl Fn(&str) -> bool,
    ) -> Landing {
        for _ in 0..20 {
            let url = response.url().clone();
            if response.status().is_redirection() {
                let location = response
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .expect("redirect without Location");
                let next = url.join(location).expect("Location").to_string();
                if next.starts_with(&self.app_url) {
                    return Landing::App(next);
                }
                if stop(&next) {
                    return Landing::Stopped(next);
                }
                response = self.client.get(&next).send().await.expect("GET");
                continue;
            }
            let status = response.status().as_u16();
            let body = response.text().await.expect("body");
            return Landing::Page {
                url: url.to_string(),
                status,
                body,
            };
        }
        panic!("too many redirects");
    }

    /// Submits `form` of the page at `page_url` with `overrides` replacing or adding fields
    /// and `button` as the pressed submit button.
    pub async fn submit(
        &self,
        page_url: &str,
        form: &Form,
        overrides: &[(&str, &str)],
        button: Option<(&str, &str)>,
    ) -> Landing {
        self.submit_until(page_url, form, overrides, button, |_| false)
            .await
    }

    pub async fn submit_until(
        &self,
        page_url: &str,
        form: &Form,
        overrides: &[(&str, &str)],
        button: Option<(&str, &str)>,
        stop: impl Fn(&str) -> bool,
    ) -> Landing {
        let mut fields: Vec<(String, String)> = form
            .fields
            .iter()
            .filter(|(name, _)| !overrides.iter().any(|(o, _)| o == name))
            .cloned()
            .collect();
        fields.extend(
            overrides
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
        );
        if let Some((name, value)) = button {
            fields.push((name.to_owned(), value.to_owned()));
        }
        let action = url::Url::parse(page_url)
            .expect("page URL")
            .join(&form.action)
            .expect("action");
        let response = self
            .client
            .post(action)
            .form(&fields)
            .send()
            .await
            .expect("POST");
        self.follow(response, stop).await
    }
}
