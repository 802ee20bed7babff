//! Every sample event under `events/<binary>/` invoked on its real function under
//! `cargo lambda watch`, through watch's Lambda Invoke API as `cargo lambda invoke
//! <binary> --data-file <file>` calls it, on one local stack (moto with the template's
//! resources, microsoft-sim with `tests/events/world.json`).
//!
//! The directory is walked, so a new event is covered without touching this test; each
//! `<name>.json` needs a `<name>.expect.json` beside it saying what the event needs seeded
//! first and what it must produce (HTTP: status, body and header substrings; SQS: the
//! `batchItemFailures` ids; schedules: success or error, and fields of the answer; any:
//! Graph requests the invocation must have made or must not have made, and the messages
//! it must have queued). Each event's shape is also checked against what AWS sends,
//! as `sam local generate-event` prints it, so the files stay the ones `sam local invoke
//! -e` takes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail, ensure};
use connector_core::adapters::dynamodb::{
    DynamoConnectionStore, DynamoCrmIndex, DynamoSubscriptionStore, DynamoTenantStore,
};
use connector_core::adapters::secrets::SecretsManagerVault;
use connector_core::domain::{
    Connection, ConsentMode, CrmSnapshot, FeatureBundle, ScopeSet, SyncKind, Tenant, TenantId,
    UserId, UserKey,
};
use connector_core::notifications::{LIFETIME, StateDigest, Subscription, SubscriptionStore as _};
use connector_core::ports::{
    ConnectionStore as _, CrmIndex as _, TenantStore as _, TokenVault as _,
};
use connector_core::secret::{PkceVerifier, RefreshToken, TokenRecord};
use consent_callback::security::sha256_hex;
use consent_callback::sessions::{
    AuthSession, AuthSessionStore as _, DynamoAuthSessionStore, Flow,
};
use local_stack::functions::EventKind;
use local_stack::invoke::Invoker as _;
use local_stack::stack::{StackInfo, UpOptions, down, up};
use local_stack::{Outcome, Template, repo_root, template_path, venv_tool};
use md5::{Digest as _, Md5};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The world's confidential app (`tests/events/world.json`), which the stack runs as.
const CLIENT_SECRET: &str = "events-test~client-secret";
/// The template's default `PublicBaseUrl`, the host the sample HTTP events were sent to
/// (registered as the app's redirect URIs in the world).
const PUBLIC_BASE_URL: &str = "https://connector.example.com";

/// Stops the stack even when an assertion fails.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = down(&self.0);
    }
}

/// `<name>.expect.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Expectation {
    /// What the event exercises (printed as the event passes).
    about: String,
    #[serde(default)]
    seed: Vec<Seed>,
    status_code: Option<u16>,
    #[serde(default)]
    body_contains: Vec<String>,
    /// Header name (lower case; `set-cookie` also covers API Gateway v2's `cookies`) to a
    /// substring of its value.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    batch_item_failures: Option<Vec<String>>,
    outcome: Option<ExpectedOutcome>,
    /// `"METHOD path-substring status"` lines microsoft-sim must have logged during the
    /// invocation (matched as substrings of `"{method} {path} {status}"`).
    #[serde(default)]
    sim_requests: Vec<String>,
    /// Lines as in `simRequests` that microsoft-sim must not have logged.
    #[serde(default)]
    no_sim_requests: Vec<String>,
    /// Fields the function's answer must have, with these values (a schedule's report).
    response: Option<Map<String, Value>>,
    /// Messages the invocation must have sent, per queue.
    #[serde(default)]
    queued: Vec<Queued>,
}

/// The messages one invocation sent to one queue: exactly `count` (delayed ones included;
/// nothing consumes the queues during the test), and, when `bodyContains` is given, one of
/// them holds every substring of it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Queued {
    /// The queue's environment variable (`MAIL_SYNC_QUEUE_URL`, ...).
    queue: String,
    count: u64,
    #[serde(default)]
    body_contains: Vec<String>,
}

#[derive(Debug, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "camelCase")]
enum ExpectedOutcome {
    Success,
    Error,
}

/// What an event needs in the stack before it is invoked.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
enum Seed {
    /// A flow record as `/consent/admin` or `/auth/login` would have created it, bound to
    /// the browser cookie value `binding`.
    #[serde(rename_all = "camelCase")]
    AuthSession {
        state: String,
        flow: SeedFlow,
        binding: String,
        #[serde(default = "organizations")]
        authority: String,
    },
    /// The tenant pre-authorized for `bundle`, and the user signed in through
    /// microsoft-sim: refresh token in Secrets Manager, connection active.
    #[serde(rename_all = "camelCase")]
    Connection {
        tenant_id: String,
        user_id: String,
        login: String,
        bundle: String,
    },
    /// A CRM snapshot as `connectorctl crm import` takes it (with its `tenantId`),
    /// made the tenant's index.
    CrmSnapshot(Value),
    /// A change-notification subscription as the subscriptions function saves it once
    /// Graph has created it: `clientState` is what Graph sends back with each notification
    /// (only its SHA-256 digest is stored); it expires [`LIFETIME`] from now.
    #[serde(rename_all = "camelCase")]
    Subscription {
        tenant_id: String,
        user_id: String,
        kind: SyncKind,
        subscription_id: String,
        client_state: String,
    },
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
enum SeedFlow {
    AdminConsent,
    SignIn,
}

fn organizations() -> String {
    "organizations".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Http,
    Sqs,
    Schedule,
    /// A schedule's target `Input`, which EventBridge sends instead of the event
    /// (calendar-sync's consent tick): delivered when the function has a schedule with
    /// exactly that input.
    ScheduleInput,
    /// A DynamoDB stream batch (event-publisher).
    Stream,
}

/// Which AWS event an event file is, from its shape.
fn kind_of(event: &Value) -> Result<Kind> {
    if event
        .pointer("/Records/0/eventSource")
        .and_then(Value::as_str)
        == Some("aws:dynamodb")
    {
        Ok(Kind::Stream)
    } else if event.get("Records").is_some() {
        Ok(Kind::Sqs)
    } else if event.get("version").and_then(Value::as_str) == Some("2.0")
        && event.get("requestContext").is_some()
    {
        Ok(Kind::Http)
    } else if event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event") {
        Ok(Kind::Schedule)
    } else if event.is_object() {
        Ok(Kind::ScheduleInput)
    } else {
        bail!("neither an HTTP API v2, an SQS, a DynamoDB stream nor a scheduled event")
    }
}

/// Every `events/<binary>/<name>.json` (not `.expect.json`), sorted: the order within a
/// function is the file names' (the Teams chat is created by `new-chat` before
/// `post-chat` posts to it).
fn event_files(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    for dir in std::fs::read_dir(root)? {
        let dir = dir?.path();
        if !dir.is_dir() {
            bail!(
                "{}: events/ holds one directory per function",
                dir.display()
            );
        }
        let binary = dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("{}: not a UTF-8 name", dir.display()))?
            .to_string();
        for file in std::fs::read_dir(&dir)? {
            let file = file?.path();
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".json") && !name.ends_with(".expect.json") {
                found.push((binary.clone(), file));
            } else if !name.ends_with(".expect.json") {
                bail!(
                    "{}: only events and their expectations belong here",
                    file.display()
                );
            }
        }
    }
    found.sort();
    Ok(found)
}

fn expectation_path(event: &Path) -> PathBuf {
    let stem = event
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".json"))
        .expect("an event file ends in .json");
    event.with_file_name(format!("{stem}.expect.json"))
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    serde_json::from_str(&text).with_context(|| path.display().to_string())
}

// ---------------------------------------------------------------------------------------
// Shapes

/// `sam local generate-event <service> <event>`: what AWS sends, as SAM knows it.
fn sam_event(service: &str, event: &str) -> Result<Value> {
    let output = Command::new(venv_tool("sam")?)
        .args(["local", "generate-event", service, event])
        .env("SAM_CLI_TELEMETRY", "0")
        .output()
        .context("running sam local generate-event")?;
    ensure!(
        output.status.success(),
        "sam local generate-event {service} {event}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

struct Shapes {
    http: Value,
    sqs: Value,
    schedule: Value,
    dynamodb: Value,
}

/// Keys of `object` at `path` (`None` when it is not an object).
fn keys(object: &Value) -> BTreeSet<&str> {
    object
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

/// Compares the keys of one level: ours must all be AWS's (`extra` allowed besides), and
/// AWS's must all be ours except those AWS only sends sometimes (`optional`).
fn same_keys(
    at: &str,
    ours: &Value,
    aws: &Value,
    optional: &[&str],
    extra: &[&str],
    problems: &mut Vec<String>,
) {
    let (ours, aws) = (keys(ours), keys(aws));
    for k in ours.difference(&aws) {
        if !extra.contains(k) {
            problems.push(format!("{at}: `{k}` is not something AWS sends"));
        }
    }
    for k in aws.difference(&ours) {
        if !optional.contains(k) {
            problems.push(format!("{at}: `{k}` is missing"));
        }
    }
}

fn shape_problems(kind: Kind, event: &Value, shapes: &Shapes) -> Vec<String> {
    let mut problems = Vec::new();
    match kind {
        Kind::Http => {
            let aws = &shapes.http;
            same_keys(
                "event",
                event,
                aws,
                // Present only when the request has them, or with authorizers/stage variables.
                &[
                    "cookies",
                    "queryStringParameters",
                    "body",
                    "pathParameters",
                    "stageVariables",
                ],
                &[],
                &mut problems,
            );
            same_keys(
                "requestContext",
                &event["requestContext"],
                &aws["requestContext"],
                &["authentication", "authorizer"],
                &[],
                &mut problems,
            );
            same_keys(
                "requestContext.http",
                &event["requestContext"]["http"],
                &aws["requestContext"]["http"],
                &[],
                &[],
                &mut problems,
            );
            if event["routeKey"] != event["requestContext"]["routeKey"] {
                problems.push("routeKey differs from requestContext.routeKey".into());
            }
            if event["rawPath"] != event["requestContext"]["http"]["path"] {
                problems.push("rawPath differs from requestContext.http.path".into());
            }
        }
        Kind::Sqs => {
            same_keys("event", event, &shapes.sqs, &[], &[], &mut problems);
            let aws = &shapes.sqs["Records"][0];
            for (i, record) in event["Records"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                same_keys(
                    &format!("Records[{i}]"),
                    record,
                    aws,
                    &[],
                    &[],
                    &mut problems,
                );
                same_keys(
                    &format!("Records[{i}].attributes"),
                    &record["attributes"],
                    &aws["attributes"],
                    // Only on FIFO queues / with AWSTraceHeader.
                    &[],
                    &[
                        "AWSTraceHeader",
                        "SequenceNumber",
                        "MessageGroupId",
                        "MessageDeduplicationId",
                    ],
                    &mut problems,
                );
                let body = record["body"].as_str().unwrap_or("");
                let md5: String = Md5::digest(body.as_bytes())
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                if record["md5OfBody"] != md5.as_str() {
                    problems.push(format!(
                        "Records[{i}].md5OfBody is not the MD5 of the body ({md5})"
                    ));
                }
                if record["eventSource"] != "aws:sqs" {
                    problems.push(format!("Records[{i}].eventSource is not aws:sqs"));
                }
            }
        }
        Kind::Stream => {
            same_keys("event", event, &shapes.dynamodb, &[], &[], &mut problems);
            // SAM's MODIFY record: both images.
            let aws = &shapes.dynamodb["Records"][1];
            for (i, record) in event["Records"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                // `userIdentity` only on TTL deletions.
                same_keys(
                    &format!("Records[{i}]"),
                    record,
                    aws,
                    &[],
                    &["userIdentity"],
                    &mut problems,
                );
                same_keys(
                    &format!("Records[{i}].dynamodb"),
                    &record["dynamodb"],
                    &aws["dynamodb"],
                    &["NewImage", "OldImage"],
                    &[],
                    &mut problems,
                );
                if record["eventSource"] != "aws:dynamodb" {
                    problems.push(format!("Records[{i}].eventSource is not aws:dynamodb"));
                }
            }
        }
        // The template's own Input is the shape (checked where it is matched).
        Kind::ScheduleInput => {}
        Kind::Schedule => {
            // EventBridge puts "version": "0" on every event; SAM's sample omits it.
            same_keys(
                "event",
                event,
                &shapes.schedule,
                &[],
                &["version"],
                &mut problems,
            );
            if event["source"] != "aws.events" {
                problems.push("source is not aws.events".into());
            }
        }
    }
    problems
}

/// The route API Gateway would match for an HTTP event of `logical_id`: the template's
/// `METHOD /path`, else its `ANY /{proxy+}` catch-all (with the proxy path parameter).
fn route_problems(template: &Template, logical_id: &str, event: &Value) -> Vec<String> {
    let method = event["requestContext"]["http"]["method"]
        .as_str()
        .unwrap_or("");
    let path = event["rawPath"].as_str().unwrap_or("");
    let routes: Vec<(String, String)> = template
        .resources
        .iter()
        .filter(|(id, _)| id == logical_id)
        .flat_map(|(_, r)| {
            r["Properties"]["Events"]
                .as_object()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|(_, e)| e["Type"] == "HttpApi")
        .map(|(_, e)| {
            let p = &e["Properties"];
            (
                p["Method"].as_str().unwrap_or("").to_uppercase(),
                p["Path"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let exact = routes
        .iter()
        .find(|(m, p)| path_matches(p, path) && (m == method || m == "ANY"));
    let expected = match exact {
        Some((m, p)) => format!("{m} {p}"),
        None if routes.iter().any(|(m, p)| m == "ANY" && p == "/{proxy+}") => {
            "ANY /{proxy+}".to_string()
        }
        None => return vec![format!("no route of {logical_id} takes {method} {path}")],
    };
    let mut problems = Vec::new();
    if event["routeKey"] != expected.as_str() {
        problems.push(format!(
            "API Gateway matches {method} {path} to `{expected}`, the event says {}",
            event["routeKey"]
        ));
    }
    if expected.contains("{proxy+}")
        && event["pathParameters"]["proxy"] != path.trim_start_matches('/')
    {
        problems.push("a {proxy+} route carries pathParameters.proxy".into());
    }
    if let Some((_, template_path)) = exact {
        for (name, value) in path_parameters(template_path, path) {
            if event["pathParameters"][&name] != value.as_str() {
                problems.push(format!(
                    "the route's {{{name}}} is {value:?} in pathParameters"
                ));
            }
        }
    }
    problems
}

/// Whether a route path (`/api/v1/tenants/{tenantId}`: one `{name}` per whole segment)
/// takes `path`. A greedy `{proxy+}` is the catch-all, matched separately.
fn path_matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter().zip(&p).all(|(t, p)| {
            t == p
                || (t.starts_with('{') && t.ends_with('}') && !t.ends_with("+}") && !p.is_empty())
        })
}

/// The `{name}` segments of a route path and their values in `path`.
fn path_parameters(template: &str, path: &str) -> Vec<(String, String)> {
    template
        .split('/')
        .zip(path.split('/'))
        .filter(|(t, _)| t.starts_with('{') && t.ends_with('}') && !t.ends_with("+}"))
        .map(|(t, p)| (t[1..t.len() - 1].to_owned(), p.to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Seeding

struct Seeder<'a> {
    info: &'a StackInfo,
    tenants: DynamoTenantStore,
    connections: DynamoConnectionStore,
    vault: SecretsManagerVault,
    sessions: DynamoAuthSessionStore,
    crm: DynamoCrmIndex,
    subscriptions: DynamoSubscriptionStore,
}

impl<'a> Seeder<'a> {
    async fn new(info: &'a StackInfo) -> Self {
        let sdk = info.sdk_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        let env = |k: &str| info.functions_env[k].clone();
        Seeder {
            info,
            tenants: DynamoTenantStore::new(dynamodb.clone(), env("TENANTS_TABLE")),
            connections: DynamoConnectionStore::new(dynamodb.clone(), env("CONNECTIONS_TABLE")),
            vault: SecretsManagerVault::new(aws_sdk_secretsmanager::Client::new(&sdk)),
            sessions: DynamoAuthSessionStore::new(dynamodb.clone(), env("AUTH_SESSIONS_TABLE")),
            crm: DynamoCrmIndex::new(dynamodb.clone(), env("CRM_TABLE")),
            subscriptions: DynamoSubscriptionStore::new(dynamodb, env("SUBSCRIPTIONS_TABLE")),
        }
    }

    async fn seed(&self, seed: &Seed) -> Result<()> {
        let now = time::OffsetDateTime::now_utc();
        match seed {
            Seed::AuthSession {
                state,
                flow,
                binding,
                authority,
            } => {
                let sign_in = matches!(flow, SeedFlow::SignIn);
                self.sessions
                    .create(&AuthSession {
                        state: state.clone(),
                        flow: if sign_in {
                            Flow::SignIn
                        } else {
                            Flow::AdminConsent
                        },
                        bundle: FeatureBundle::All,
                        requested_tenant: None,
                        authority: authority.clone(),
                        scope: FeatureBundle::All.request_scope_string(),
                        pkce_verifier: sign_in.then(|| {
                            PkceVerifier::new("events-test-verifier-0123456789-abcdefghijk")
                        }),
                        nonce: sign_in.then(|| "events-test-nonce".to_owned()),
                        binding_hash: sha256_hex(binding),
                        created_at: now,
                        expires_at: now.unix_timestamp() + 600,
                    })
                    .await
                    .map_err(|e| anyhow!("auth session: {e}"))?;
            }
            Seed::Connection {
                tenant_id,
                user_id,
                login,
                bundle,
            } => {
                let bundle = FeatureBundle::parse(bundle).map_err(|e| anyhow!("{e}"))?;
                let tenant_id = TenantId::parse(tenant_id).map_err(|e| anyhow!("{e}"))?;
                let user_id = UserId::parse(user_id).map_err(|e| anyhow!("{e}"))?;
                let mut tenant = Tenant::new(tenant_id.clone(), ConsentMode::Preauthorized, now);
                tenant.record_admin_consent(bundle, &ScopeSet::new(), None, now);
                tenant.confirm(now);
                self.tenants
                    .put_tenant(&tenant)
                    .await
                    .map_err(|e| anyhow!("tenant: {e}"))?;
                let redirect_uri = format!("{PUBLIC_BASE_URL}/auth/callback");
                let tokens = microsoft_sim::identity::testing::sign_in(
                    &microsoft_sim::identity::testing::SignIn {
                        base_url: &self.info.microsoft_sim_url,
                        tenant: tenant_id.as_str(),
                        client_id: &self.info.client_id,
                        client_secret: Some(CLIENT_SECRET),
                        redirect_uri: &redirect_uri,
                        login,
                        scopes: &bundle.request_scope_string(),
                        consent_for_org: false,
                        ca_pem: None,
                    },
                )
                .await
                .with_context(|| format!("signing {login} in at microsoft-sim"))?;
                let scopes = ScopeSet::granted_by_token_response(
                    Some(&tokens.scope),
                    &ScopeSet::new(),
                    tokens.refresh_token.is_some(),
                );
                let key = UserKey::new(tenant_id.clone(), user_id.clone());
                self.vault
                    .put_token(
                        &key,
                        &TokenRecord {
                            refresh_token: RefreshToken::new(
                                tokens.refresh_token.context("no refresh token")?,
                            ),
                            scopes: scopes.clone(),
                            updated_at: now,
                        },
                    )
                    .await
                    .map_err(|e| anyhow!("token: {e}"))?;
                let mut connection = Connection::new_active(tenant_id, user_id, login, scopes, now);
                connection.mail = Some(login.clone());
                self.connections
                    .upsert_connection(&connection)
                    .await
                    .map_err(|e| anyhow!("connection: {e}"))?;
            }
            Seed::CrmSnapshot(file) => {
                let snapshot = CrmSnapshot::from_json_slice(&serde_json::to_vec(file)?)
                    .map_err(|e| anyhow!("CRM snapshot: {e:?}"))?;
                self.crm
                    .replace_snapshot(&snapshot)
                    .await
                    .map_err(|e| anyhow!("CRM index: {e}"))?;
            }
            Seed::Subscription {
                tenant_id,
                user_id,
                kind,
                subscription_id,
                client_state,
            } => {
                let (resource, _) = connector_core::notifications::resource(*kind);
                let subscription = Subscription {
                    tenant_id: TenantId::parse(tenant_id).map_err(|e| anyhow!("{e}"))?,
                    user_id: UserId::parse(user_id).map_err(|e| anyhow!("{e}"))?,
                    kind: *kind,
                    id: subscription_id.clone(),
                    resource: resource.to_owned(),
                    client_state: StateDigest::of(client_state),
                    expires_at: now + LIFETIME,
                    created_at: now,
                    renewed_at: None,
                };
                self.subscriptions
                    .save(&subscription, None)
                    .await
                    .map_err(|e| anyhow!("subscription: {e}"))?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Queues

/// Every message on `queue_url`: visible, in flight and delayed (moto's counts are exact).
async fn messages_on(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Result<u64> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let output = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(A::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .context("GetQueueAttributes")?;
    let attributes = output.attributes().context("no queue attributes")?;
    [
        A::ApproximateNumberOfMessages,
        A::ApproximateNumberOfMessagesNotVisible,
        A::ApproximateNumberOfMessagesDelayed,
    ]
    .iter()
    .map(|name| -> Result<u64> {
        Ok(attributes
            .get(name)
            .map(|v| v.parse::<u64>())
            .transpose()?
            .unwrap_or(0))
    })
    .sum()
}

/// Waits (up to 15 s: a debounced wake is delayed a few seconds) for a message on
/// `queue_url` whose body holds every one of `needles`. Messages looked at stay hidden
/// for a minute; nothing consumes the queues during the test.
async fn find_message(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    needles: &[String],
) -> Result<String> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut seen = Vec::new();
    while tokio::time::Instant::now() < deadline {
        let output = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .wait_time_seconds(1)
            .send()
            .await
            .context("ReceiveMessage")?;
        for message in output.messages() {
            let body = message.body().unwrap_or_default().to_owned();
            if needles.iter().all(|n| body.contains(n.as_str())) {
                return Ok(body);
            }
            seen.push(body);
        }
    }
    bail!("no message holding {needles:?} arrived; seen: {seen:#?}")
}

// ---------------------------------------------------------------------------------------
// Checking outcomes

/// microsoft-sim's request log from `since` on, as `"{method} {path} {status}"` lines.
async fn sim_requests(
    client: &reqwest::Client,
    sim: &str,
    since: u64,
) -> Result<Vec<(u64, String)>> {
    let log: Value = client
        .get(format!("{sim}/_sim/requests?since={since}"))
        .send()
        .await?
        .json()
        .await?;
    Ok(log["value"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap_or(0),
                format!(
                    "{} {} {}",
                    e["method"].as_str().unwrap_or(""),
                    e["path"].as_str().unwrap_or(""),
                    e["status"]
                        .as_u64()
                        .map(|s| s.to_string())
                        .unwrap_or_default()
                ),
            )
        })
        .collect())
}

fn header_values(response: &Map<String, Value>, name: &str) -> Vec<String> {
    let mut values = Vec::new();
    for field in ["headers", "multiValueHeaders"] {
        for (k, v) in response
            .get(field)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            if k.eq_ignore_ascii_case(name) {
                match v {
                    Value::Array(list) => {
                        values.extend(list.iter().filter_map(Value::as_str).map(str::to_string))
                    }
                    Value::String(s) => values.push(s.clone()),
                    _ => {}
                }
            }
        }
    }
    if name == "set-cookie" {
        values.extend(
            response
                .get("cookies")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string),
        );
    }
    values
}

/// A page's visible text, shortened, for failure messages.
fn page_text(body: &str) -> String {
    let body = body.split("</head>").last().unwrap_or(body);
    let mut text = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    words.join(" ").chars().take(800).collect()
}

fn check_http(expect: &Expectation, outcome: &Outcome) -> Result<()> {
    let Outcome::Ok(Value::Object(response)) = outcome else {
        bail!("an HTTP response expected, got {outcome:?}");
    };
    let status = response.get("statusCode").and_then(Value::as_u64);
    let wanted = expect
        .status_code
        .context("an HTTP event's expectation needs statusCode")?;
    let body = match response.get("body").and_then(Value::as_str) {
        Some(b) if response.get("isBase64Encoded") == Some(&Value::Bool(true)) => {
            use base64::Engine as _;
            String::from_utf8_lossy(&base64::engine::general_purpose::STANDARD.decode(b)?)
                .into_owned()
        }
        Some(b) => b.to_string(),
        None => String::new(),
    };
    ensure!(
        status == Some(u64::from(wanted)),
        "status {status:?}, expected {wanted}; page text: {}",
        page_text(&body)
    );
    for needle in &expect.body_contains {
        ensure!(
            body.contains(needle.as_str()),
            "the body lacks {needle:?}; page text: {}",
            page_text(&body)
        );
    }
    for (name, needle) in &expect.headers {
        let values = header_values(response, name);
        ensure!(
            values.iter().any(|v| v.contains(needle.as_str())),
            "no {name} header containing {needle:?} (got {values:?})"
        );
    }
    Ok(())
}

fn check_sqs(expect: &Expectation, outcome: &Outcome) -> Result<()> {
    let wanted = expect
        .batch_item_failures
        .as_ref()
        .context("an SQS or stream event's expectation needs batchItemFailures")?;
    let Outcome::Ok(response) = outcome else {
        bail!("a batch response expected, got {outcome:?}");
    };
    let failures = response
        .get("batchItemFailures")
        .and_then(Value::as_array)
        .with_context(|| format!("no batchItemFailures in {response}"))?;
    let got: BTreeSet<&str> = failures
        .iter()
        .filter_map(|f| f["itemIdentifier"].as_str())
        .collect();
    let wanted: BTreeSet<&str> = wanted.iter().map(String::as_str).collect();
    ensure!(
        got == wanted,
        "batchItemFailures {got:?}, expected {wanted:?}"
    );
    Ok(())
}

fn check_schedule(expect: &Expectation, outcome: &Outcome) -> Result<()> {
    let wanted = expect
        .outcome
        .context("a scheduled event's expectation needs outcome")?;
    let got = if outcome.is_ok() {
        ExpectedOutcome::Success
    } else {
        ExpectedOutcome::Error
    };
    ensure!(got == wanted, "{got:?} expected {wanted:?}: {outcome:?}");
    check_response(expect, outcome)
}

fn check_response(expect: &Expectation, outcome: &Outcome) -> Result<()> {
    let Some(fields) = &expect.response else {
        return Ok(());
    };
    let Outcome::Ok(answer) = outcome else {
        bail!("an answer with {fields:?} expected, got {outcome:?}");
    };
    for (name, value) in fields {
        ensure!(
            answer.get(name) == Some(value),
            "the answer's {name} is {:?}, expected {value}: {answer}",
            answer.get(name)
        );
    }
    Ok(())
}

#[tokio::test]
async fn every_event_file_invokes_its_function_under_cargo_lambda_watch_as_expected() {
    let events_dir = repo_root().join("events");
    let files = event_files(&events_dir).expect("events/ readable");
    assert!(
        !files.is_empty(),
        "no events under {}",
        events_dir.display()
    );

    let shapes = Shapes {
        http: sam_event("apigateway", "http-api-proxy").expect("sam"),
        sqs: sam_event("sqs", "receive-message").expect("sam"),
        schedule: sam_event("cloudwatch", "scheduled-event").expect("sam"),
        dynamodb: sam_event("dynamodb", "update").expect("sam"),
    };
    let template = Template::load(&template_path()).expect("template");
    let functions = template.functions().expect("functions");
    assert_eq!(
        template.parameters["PublicBaseUrl"]["Default"], PUBLIC_BASE_URL,
        "the sample HTTP events are sent to the template's default PublicBaseUrl"
    );

    // Everything that can be found wrong without a stack first.
    let mut cases = Vec::new();
    let mut problems = Vec::new();
    for (binary, path) in &files {
        let rel = path
            .strip_prefix(repo_root())
            .unwrap_or(path)
            .display()
            .to_string();
        let Some(function) = functions
            .iter()
            .find(|f| f.binary.as_deref() == Some(binary))
        else {
            problems.push(format!(
                "{rel}: no function of the template has binary {binary}"
            ));
            continue;
        };
        let event = match read_json(path) {
            Ok(e) => e,
            Err(e) => {
                problems.push(format!("{rel}: {e:#}"));
                continue;
            }
        };
        let kind = match kind_of(&event) {
            Ok(k) => k,
            Err(e) => {
                problems.push(format!("{rel}: {e}"));
                continue;
            }
        };
        let delivered = function.events.iter().any(|e| match (&e.kind, kind) {
            (EventKind::Other(t), Kind::Http) => t == "HttpApi",
            (EventKind::Other(t), Kind::Stream) => t == "DynamoDB",
            (EventKind::Sqs(_), Kind::Sqs) | (EventKind::Schedule(_), Kind::Schedule) => true,
            (EventKind::Schedule(schedule), Kind::ScheduleInput) => schedule
                .input
                .as_ref()
                .and_then(|input| match input {
                    Value::String(text) => serde_json::from_str::<Value>(text).ok(),
                    other => Some(other.clone()),
                })
                .is_some_and(|input| input == event),
            _ => false,
        });
        if !delivered {
            problems.push(format!(
                "{rel}: the template gives {binary} no {kind:?} event source"
            ));
        }
        for p in shape_problems(kind, &event, &shapes) {
            problems.push(format!("{rel}: {p}"));
        }
        if kind == Kind::Http {
            for p in route_problems(&template, &function.logical_id, &event) {
                problems.push(format!("{rel}: {p}"));
            }
        }
        let expect_path = expectation_path(path);
        let expect: Expectation = match read_json(&expect_path)
            .and_then(|v| serde_json::from_value(v).map_err(Into::into))
        {
            Ok(e) => e,
            Err(e) => {
                problems.push(format!(
                    "{rel}: no usable expectation {}: {e:#}",
                    expect_path.display()
                ));
                continue;
            }
        };
        cases.push((binary.clone(), rel, kind, event, expect));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    let dir = repo_root()
        .join("target/local-stack-tests")
        .join(uuid::Uuid::new_v4().simple().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let opts = UpOptions {
        state_dir: dir.clone(),
        stack_name: format!("ev{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        template: template_path(),
        world: Some(repo_root().join("infra/local/tests/events/world.json")),
        auto_approve: true,
        time_factor: 1.0,
        schedules: false,
        // The events are requests to the template's default deployment (host
        // connector.example.com over https): the functions must believe they run there,
        // or the https-only `__Host-` binding cookie the callbacks carry is not theirs.
        params: [("PublicBaseUrl".to_string(), PUBLIC_BASE_URL.to_string())].into(),
        // The debug binaries `cargo test --workspace` has built are reused by watch.
        build: false,
        local_stack_exe: PathBuf::from(env!("CARGO_BIN_EXE_local-stack")),
    };
    let info = up(&opts).await.expect("the stack comes up");
    let _down = Down(dir.clone());
    // The plumbing would consume what fan-outs queue and invoke the workers beside us.
    let plumbing = info
        .processes
        .iter()
        .find(|p| p.name == "plumbing")
        .map(|p| p.pid);
    if let Some(pid) = plumbing {
        local_stack::stack::stop_group(pid);
    }

    let seeder = Seeder::new(&info).await;
    let sqs = aws_sdk_sqs::Client::new(&info.sdk_config().await);
    let invoker = info.invoker();
    let http = reqwest::Client::new();
    let mut failures = Vec::new();
    for (binary, rel, kind, event, expect) in &cases {
        let result: Result<()> = async {
            for seed in &expect.seed {
                seeder.seed(seed).await.context("seeding")?;
            }
            let since = sim_requests(&http, &info.microsoft_sim_url, 0)
                .await?
                .last()
                .map_or(0, |(seq, _)| seq + 1);
            let mut before = Vec::new();
            for queued in &expect.queued {
                let url = info
                    .functions_env
                    .get(&queued.queue)
                    .with_context(|| format!("no queue {}", queued.queue))?;
                before.push(messages_on(&sqs, url).await?);
            }
            let outcome = invoker
                .invoke(binary, event)
                .await
                .map_err(|e| anyhow!("{e}"))?;
            match kind {
                Kind::Http => check_http(expect, &outcome)?,
                Kind::Sqs | Kind::Stream => check_sqs(expect, &outcome)?,
                Kind::Schedule | Kind::ScheduleInput => check_schedule(expect, &outcome)?,
            }
            if !expect.sim_requests.is_empty() || !expect.no_sim_requests.is_empty() {
                let made = sim_requests(&http, &info.microsoft_sim_url, since).await?;
                for needle in &expect.sim_requests {
                    ensure!(
                        made.iter().any(|(_, line)| line.contains(needle.as_str())),
                        "microsoft-sim saw no {needle:?}; it saw {:#?}",
                        made.iter().map(|(_, l)| l).collect::<Vec<_>>()
                    );
                }
                for needle in &expect.no_sim_requests {
                    ensure!(
                        !made.iter().any(|(_, line)| line.contains(needle.as_str())),
                        "microsoft-sim saw {needle:?}; it saw {:#?}",
                        made.iter().map(|(_, l)| l).collect::<Vec<_>>()
                    );
                }
            }
            for (queued, before) in expect.queued.iter().zip(before) {
                let url = &info.functions_env[&queued.queue];
                let sent = messages_on(&sqs, url).await?.saturating_sub(before);
                ensure!(
                    sent == queued.count,
                    "{} messages sent to {}, expected {}",
                    sent,
                    queued.queue,
                    queued.count
                );
                if !queued.body_contains.is_empty() {
                    find_message(&sqs, url, &queued.body_contains)
                        .await
                        .with_context(|| queued.queue.clone())?;
                }
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => eprintln!("ok   {rel}: {}", expect.about),
            Err(e) => {
                eprintln!("FAIL {rel}: {e:#}");
                failures.push(format!("{rel}: {e:#}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
