//! Change notifications (issue 15's "Checked by"): how long a message takes from its arrival
//! at Microsoft to its activity in the store, how many notification POSTs one webhook
//! instance answers per second, and what a user costs per month with and without
//! notifications (the per-run figures measured here; the model and the prices are in
//! `bench/report.py`).
//!
//! The pieces, each the connector's own code:
//! - **Webhook**: connector-core's [`Webhook`] behind a small axum server on 127.0.0.1 that
//!   does what consent-callback's route does (`functions/consent-callback/src/notifications.rs`):
//!   `?validationToken=` answered `200 text/plain` with the decoded token
//!   ([`validation_answer`]), a batch handed to [`Webhook::handle`] and answered `202`, a
//!   body that is not a batch `400`, a store or queue failure `500`. It runs on a
//!   current-thread runtime of its own thread, as consent-callback's `main` does. Not the
//!   release binary under the local Runtime API: that would need API Gateway v2 events
//!   and lets one instance take one request at a time, which the throughput figure would
//!   only restate as 1 ÷ answer time.
//! - **Subscription**: the first import's run queues `ensure` on SubscriptionQueue (the
//!   worker's own `notifications::Link::after_run`); that job is received from the queue
//!   and handled by [`Manager::handle`] (what the subscriptions function runs), which
//!   creates the subscription at microsoft-sim; the sim validates the notification URLs
//!   with its handshake against the webhook above.
//! - **Worker**: the release `mail-sync` binary under the local Runtime API, one warm
//!   process, fed by local_stack's SQS event source mapping (`infra/local/src/esm.rs`)
//!   with MailSyncFunction's settings from template.yaml (batch size 10, 1 s batching
//!   window), at most one invocation at a time (arrivals never overlap).
//! - **Arrivals**: one message at a time through the sim's control API
//!   (`POST /_sim/users/{user}/messages`), from a CRM contact, so every arrival matches;
//!   the sim notifies the subscription by itself.
//!
//! AWS calls of the worker, the webhook and the manager go through three counting proxies
//! (one each), so each one's calls per run are its own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, Select,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use connector_core::adapters::dynamodb::DynamoSubscriptionStore;
use connector_core::adapters::memory::MemoryJobQueue;
use connector_core::adapters::notifications_memory::MemorySubscriptionStore;
use connector_core::adapters::sqs::SqsJobQueue;
use connector_core::clock::SystemClock;
use connector_core::domain::{SyncKind, TenantId, UserId, UserKey};
use connector_core::messages::{SubscriptionJob, SyncJob, SyncReason};
use connector_core::notifications::manager::{Manager, Outcome};
use connector_core::notifications::webhook::{
    LIFECYCLE_PATH, NOTIFICATION_PATH, Webhook, WebhookError, WebhookQueues, validation_answer,
};
use connector_core::notifications::{
    ClientState, LIFETIME, Subscription, SubscriptionStore, resource,
};
use connector_core::ports::JobQueue;
use local_stack::invoke::{InvokeError, Invoker, Outcome as InvokeOutcome};
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::oneshot;

use crate::awsproxy::{AwsCounts, AwsProxy};
use crate::lambda::{Ending, LambdaProcess};
use crate::run::{
    LAMBDA_TIMEOUT, RunOptions, classify, function_env, last_summary, ms, progress, sim_requests,
    sqs_event,
};
use crate::store::Store;
use crate::world::{self, MailboxUser};

/// Environment variables of the subscription resources, and the names the bench gives
/// them when template.yaml declares none.
const TABLE_VAR: &str = "SUBSCRIPTIONS_TABLE";
const QUEUE_VAR: &str = "SUBSCRIPTION_QUEUE_URL";

/// How often the activities table is read while an arrival is waited for.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// An arrival not stored after this long counts as missed.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(60);

/// What the step measures; `make bench` runs the defaults.
#[derive(Clone, Debug)]
pub struct NotifyOptions {
    pub arrivals: usize,
    /// Arrivals are `spacing_ms` apart plus up to `jitter_ms` more (uniform).
    pub spacing_ms: u64,
    pub jitter_ms: u64,
    /// Notification POSTs in flight during the throughput runs.
    pub concurrency: usize,
    pub throughput_seconds: u64,
    /// Synthetic subscriptions the throughput runs spread their POSTs over.
    pub throughput_subscriptions: usize,
}

impl Default for NotifyOptions {
    fn default() -> Self {
        Self {
            arrivals: 200,
            spacing_ms: 4_000,
            jitter_ms: 2_000,
            concurrency: 8,
            throughput_seconds: 10,
            throughput_subscriptions: 100,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Subscription resources

/// SubscriptionsTable and SubscriptionQueue on `store`'s moto, made by the bench when the
/// stack (template.yaml) has none, and their variables added to the stack's environment
/// (every function reads them at start). Returns a note when the bench made them.
pub async fn ensure_subscription_resources(store: &mut Store) -> Result<Option<String>> {
    if store.stack.env.contains_key(TABLE_VAR) && store.stack.env.contains_key(QUEUE_VAR) {
        return Ok(None);
    }
    // Stacks may share one moto: names of their own.
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let table = format!("SubscriptionsTable-bench-{suffix}");
    // The adapter's key schema (connector-core/src/adapters/dynamodb/subscriptions.rs).
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
    };
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
    };
    store
        .dynamo
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .attribute_definitions(attribute("pk")?)
        .attribute_definitions(attribute("sk")?)
        .send()
        .await
        .context("creating the subscriptions table")?;
    let queue = store
        .sqs
        .create_queue()
        .queue_name(format!("SubscriptionQueue-bench-{suffix}"))
        .send()
        .await
        .context("creating the subscription queue")?
        .queue_url
        .context("a queue URL")?;
    store.stack.env.insert(TABLE_VAR.into(), table);
    store.stack.env.insert(QUEUE_VAR.into(), queue);
    Ok(Some(format!(
        "template.yaml declares no {TABLE_VAR} / {QUEUE_VAR}: the bench created SubscriptionsTable \
         (pk, sk) and SubscriptionQueue on moto itself and gave every function their names"
    )))
}

// ---------------------------------------------------------------------------------------
// The webhook

/// Where the webhook keeps subscriptions and queues wakes.
#[derive(Clone, Debug)]
pub enum Backend {
    /// DynamoSubscriptionStore and SqsJobQueue through the AWS SDK at `endpoint`.
    Aws { endpoint: String, table: String },
    /// MemorySubscriptionStore and MemoryJobQueue: the handler's own cost.
    Memory,
}

/// One answer of the webhook.
#[derive(Clone, Copy, Debug)]
struct Answer {
    at: Instant,
    handler_ms: f64,
    status: u16,
    woke: usize,
    debounced: usize,
}

struct HookState {
    webhook: Webhook,
    answers: Arc<Mutex<Vec<Answer>>>,
}

fn plain(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// consent-callback's `graph_notifications`, on axum.
async fn notified(
    State(state): State<Arc<HookState>>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let token = query.as_deref().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(name, _)| name == "validationToken")
            .map(|(_, value)| value.into_owned())
    });
    if let Some(token) = token {
        return match validation_answer(&token) {
            Some(token) => plain(StatusCode::OK, token.to_owned()),
            None => plain(StatusCode::BAD_REQUEST, String::new()),
        };
    }
    let (status, report) = match state.webhook.handle(&body).await {
        Ok(report) => (StatusCode::ACCEPTED, Some(report)),
        Err(WebhookError::Malformed) => (StatusCode::BAD_REQUEST, None),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, None),
    };
    let answer = Answer {
        at: started,
        handler_ms: ms(started.elapsed()),
        status: status.as_u16(),
        woke: report.as_ref().map_or(0, |r| r.woke),
        debounced: report.as_ref().map_or(0, |r| r.debounced),
    };
    state
        .answers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(answer);
    plain(status, String::new())
}

/// The webhook on 127.0.0.1, on a thread and a current-thread runtime of its own.
pub struct WebhookServer {
    pub base: String,
    answers: Arc<Mutex<Vec<Answer>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WebhookServer {
    /// Starts the webhook over `backend`, with `seed` saved in its store first.
    pub async fn start(
        backend: Backend,
        queues: WebhookQueues,
        seed: Vec<Subscription>,
    ) -> Result<WebhookServer> {
        let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<SocketAddr>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let shared = answers.clone();
        let thread = std::thread::Builder::new()
            .name("bench-webhook".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready_tx.send(Err(error.into()));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let built = async {
                        let (store, queue): (Arc<dyn SubscriptionStore>, Arc<dyn JobQueue>) =
                            match backend {
                                Backend::Aws { endpoint, table } => {
                                    let sdk = local_stack::sdk_config(&endpoint).await;
                                    (
                                        Arc::new(DynamoSubscriptionStore::new(
                                            aws_sdk_dynamodb::Client::new(&sdk),
                                            table,
                                        )),
                                        Arc::new(SqsJobQueue::new(aws_sdk_sqs::Client::new(&sdk))),
                                    )
                                }
                                Backend::Memory => (
                                    Arc::new(MemorySubscriptionStore::default()),
                                    Arc::new(MemoryJobQueue::default()),
                                ),
                            };
                        for subscription in &seed {
                            store.save(subscription, None).await?;
                        }
                        let webhook = Webhook::new(store, queue, queues, Arc::new(SystemClock));
                        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                        anyhow::Ok((webhook, listener))
                    }
                    .await;
                    let (webhook, listener) = match built {
                        Ok(parts) => parts,
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                            return;
                        }
                    };
                    let address = listener.local_addr();
                    let state = Arc::new(HookState {
                        webhook,
                        answers: shared,
                    });
                    let app = Router::new()
                        .route(NOTIFICATION_PATH, post(notified))
                        .route(LIFECYCLE_PATH, post(notified))
                        .with_state(state);
                    let _ = ready_tx.send(address.map_err(Into::into));
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stop_rx.await;
                        })
                        .await;
                });
            })?;
        let address = ready_rx.await.context("the webhook thread")??;
        Ok(WebhookServer {
            base: format!("http://{address}"),
            answers,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    fn answers(&self) -> Vec<Answer> {
        self.answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

// ---------------------------------------------------------------------------------------
// The worker under the event source mapping

/// One invocation of the worker.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerRun {
    #[serde(skip)]
    started: Instant,
    pub wall_ms: f64,
    pub cpu_ms: f64,
    pub records: usize,
    /// The jobs' reasons (`notified`, `scheduled`, ...).
    pub reasons: Vec<String>,
    pub outcome: String,
    pub ok: bool,
}

/// The warm `mail-sync` process as the mapping's function.
struct Worker {
    process: tokio::sync::Mutex<LambdaProcess>,
    runs: Mutex<Vec<WorkerRun>>,
}

#[async_trait]
impl Invoker for Worker {
    async fn invoke(&self, function: &str, payload: &Value) -> Result<InvokeOutcome, InvokeError> {
        let transport = |reason: String| InvokeError::Transport {
            function: function.to_owned(),
            reason,
        };
        let records = payload["Records"].as_array().cloned().unwrap_or_default();
        let reasons = records
            .iter()
            .filter_map(|r| r["body"].as_str())
            .filter_map(|body| serde_json::from_str::<Value>(body).ok())
            .map(|job| job["reason"].as_str().unwrap_or("?").to_owned())
            .collect();
        let bytes = serde_json::to_vec(payload).map_err(|e| transport(e.to_string()))?;
        let mut process = self.process.lock().await;
        let started = Instant::now();
        let before = process.sample().map_err(|e| transport(format!("{e:#}")))?;
        let invoked = process
            .invoke(&bytes, LAMBDA_TIMEOUT)
            .await
            .map_err(|e| transport(format!("{e:#}")))?;
        let after = process.sample().map_err(|e| transport(format!("{e:#}")))?;
        let summary = last_summary(&process.output(), "mail-sync").unwrap_or(Value::Null);
        let ok = invoked.completion.ending == Ending::Response;
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(WorkerRun {
                started,
                wall_ms: ms(invoked.wall),
                cpu_ms: after.cpu_ms - before.cpu_ms,
                records: records.len(),
                reasons,
                outcome: summary["Outcome"].as_str().unwrap_or_default().to_owned(),
                ok,
            });
        Ok(if ok {
            InvokeOutcome::Ok(
                serde_json::from_slice(&invoked.completion.body).unwrap_or(Value::Null),
            )
        } else {
            InvokeOutcome::FunctionError {
                error_type: "Error".into(),
                error_message: String::from_utf8_lossy(&invoked.completion.body).into_owned(),
            }
        })
    }
}

impl Worker {
    fn runs(&self) -> Vec<WorkerRun> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

// ---------------------------------------------------------------------------------------
// Figures

/// Percentile `p` (0–100) of `values`, nearest rank.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn spread(values: &[f64]) -> Value {
    json!({
        "count": values.len(),
        "p50": percentile(values, 50.0),
        "p99": percentile(values, 99.0),
        "max": values.iter().copied().fold(f64::NAN, f64::max),
        "mean": if values.is_empty() { f64::NAN } else { values.iter().sum::<f64>() / values.len() as f64 },
    })
}

/// AWS figures of `counts` divided over `n` runs or answers.
fn per(counts: &AwsCounts, n: usize) -> Value {
    let n = n.max(1) as f64;
    let calls: BTreeMap<&String, f64> = counts
        .calls
        .iter()
        .map(|(op, c)| (op, *c as f64 / n))
        .collect();
    let sum = |prefix: &str| {
        counts
            .calls
            .iter()
            .filter(|(op, _)| op.starts_with(prefix))
            .map(|(_, c)| *c as f64)
            .fold(0.0, |a, b| a + b)
            / n
    };
    json!({
        "callsByOperation": calls,
        "dynamodbCalls": sum("DynamoDB_20120810."),
        "sqsRequests": sum("AmazonSQS."),
        "secretsManagerCalls": sum("secretsmanager."),
        "readUnits": counts.total_read_units() / n,
        "writeUnits": counts.total_write_units() / n,
        "readUnitsByTable": counts.read_units.iter().map(|(t, u)| (t.clone(), u / n)).collect::<BTreeMap<_, _>>(),
        "writeUnitsByTable": counts.write_units.iter().map(|(t, u)| (t.clone(), u / n)).collect::<BTreeMap<_, _>>(),
    })
}

/// A small deterministic generator for the arrivals' jitter (xorshift64*).
struct Jitter(u64);

impl Jitter {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let value = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        if below == 0 { 0 } else { value % below }
    }
}

/// Activities of `owner` now (a consistent count).
async fn activity_count(
    dynamo: &aws_sdk_dynamodb::Client,
    table: &str,
    owner: &str,
) -> Result<i64> {
    let mut total = 0i64;
    let mut start = None;
    loop {
        let out = dynamo
            .query()
            .table_name(table)
            .key_condition_expression("#o = :o")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_values(":o", AttributeValue::S(owner.to_owned()))
            .select(Select::Count)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .context("counting activities")?;
        total += i64::from(out.count);
        match out.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok(total),
        }
    }
}

fn arrival_message(n: usize, from: &str, to: &str) -> Result<Value> {
    let now = OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .context("formatting now")?;
    let who = |address: &str| json!({"emailAddress": {"name": address.split('@').next().unwrap_or(address), "address": address}});
    Ok(json!({
        "folder": "inbox",
        "message": {
            "internetMessageId": format!("<bench-arrival-{n}-{}@bench.example>", uuid::Uuid::new_v4()),
            "subject": format!("Arrival {n}"),
            "from": who(from),
            "toRecipients": [who(to)],
            "receivedDateTime": now,
            "sentDateTime": now,
            "body": {"contentType": "text", "content": format!("Arrival {n} of the notification benchmark.")},
            "isRead": false
        }
    }))
}

// ---------------------------------------------------------------------------------------
// The step

pub struct NotifyContext<'a> {
    pub options: &'a RunOptions,
    pub notify: &'a NotifyOptions,
    pub store: &'a Store,
    pub http: &'a reqwest::Client,
    pub sim_base: &'a str,
    pub tenant: &'a TenantId,
    /// Signed in and connected, with a small generated Inbox.
    pub user: &'a MailboxUser,
}

fn queues_of(store: &Store) -> WebhookQueues {
    WebhookQueues {
        mail_sync: store.stack.var("MAIL_SYNC_QUEUE_URL").to_owned(),
        calendar_sync: store.stack.var("CALENDAR_SYNC_QUEUE_URL").to_owned(),
        subscriptions: store.stack.var(QUEUE_VAR).to_owned(),
    }
}

/// The whole step: set-up, latency over the arrivals, webhook throughput, and the per-run
/// figures of the cost model.
pub async fn run(ctx: &NotifyContext<'_>) -> Result<Value> {
    let store = ctx.store;
    let user_id = UserId::parse(&ctx.user.id).map_err(|e| anyhow::anyhow!("{e}"))?;
    let key = UserKey::new(ctx.tenant.clone(), user_id.clone());
    let worker_proxy = AwsProxy::start(&store.stack.endpoint).await?;
    let hook_proxy = AwsProxy::start(&store.stack.endpoint).await?;
    let manager_proxy = AwsProxy::start(&store.stack.endpoint).await?;

    progress("notifications: the webhook on 127.0.0.1");
    let hook = WebhookServer::start(
        Backend::Aws {
            endpoint: hook_proxy.endpoint.clone(),
            table: store.stack.var(TABLE_VAR).to_owned(),
        },
        queues_of(store),
        Vec::new(),
    )
    .await?;

    // The worker, warm, as the mapping's function.
    let mut env = function_env(store, &worker_proxy.endpoint, ctx.sim_base);
    env.insert("PUBLIC_BASE_URL".into(), hook.base.clone());
    let binary = ctx.options.bin_dir.join("mail-sync");
    let log = ctx.options.out.join("logs/notifications-mail-sync.log");
    let mut process = LambdaProcess::spawn("mail-sync", &binary, &env, &log).await?;
    process.wait_poll(Duration::from_secs(30)).await?;

    // The first import, through the real worker: its completed run asks for the user's
    // subscription on SubscriptionQueue.
    progress(&format!(
        "notifications: first import of {} messages",
        ctx.user.messages
    ));
    let mut job = SyncJob::new(
        SyncKind::Mail,
        ctx.tenant.clone(),
        user_id.clone(),
        SyncReason::Initial,
    );
    let mut import_ms = 0.0;
    for _ in 0..6 {
        let invoked = process.invoke(&sqs_event(&job)?, LAMBDA_TIMEOUT).await?;
        import_ms += ms(invoked.wall);
        ensure!(
            invoked.completion.ending == Ending::Response,
            "the first import failed: {}",
            String::from_utf8_lossy(&invoked.completion.body)
        );
        let summary =
            last_summary(&process.output(), "mail-sync").context("no summary from mail-sync")?;
        if summary["Outcome"].as_str() != Some("continued") {
            break;
        }
        let body = store
            .receive_one(store.stack.var("MAIL_SYNC_QUEUE_URL"))
            .await?
            .context("no continuation job queued")?;
        job = serde_json::from_str(&body)?;
    }
    let import_aws = worker_proxy.take();

    progress("notifications: the ensure job, handled by the subscriptions manager");
    let ensure_job: SubscriptionJob = {
        let mut found = None;
        for _ in 0..10 {
            let Some(body) = store.receive_one(store.stack.var(QUEUE_VAR)).await? else {
                continue;
            };
            let job: SubscriptionJob = serde_json::from_str(&body)?;
            if job.user() == key {
                found = Some(job);
                break;
            }
        }
        found.context("the first import queued no subscription job")?
    };
    ensure!(
        matches!(ensure_job, SubscriptionJob::Ensure { .. }),
        "the first import queued {ensure_job:?}, not an ensure job"
    );
    let manager_env = {
        let mut env = function_env(store, &manager_proxy.endpoint, ctx.sim_base);
        env.insert("PUBLIC_BASE_URL".into(), hook.base.clone());
        env
    };
    let config = connector_core::config::Config::from_lookup(|name| manager_env.get(name).cloned())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let base =
        connector_core::config::BaseUrl::parse(&hook.base).map_err(|e| anyhow::anyhow!(e))?;
    let sdk = local_stack::sdk_config(&manager_proxy.endpoint).await;
    let manager = Manager::on_aws(&config, &base, &sdk, Arc::new(SystemClock))?;
    let (_, mut since) = sim_requests(ctx.http, ctx.sim_base, 0).await?;
    let started = Instant::now();
    let created = manager.handle(&ensure_job).await?;
    let create_ms = ms(started.elapsed());
    let create_aws = manager_proxy.take();
    let (entries, next) = sim_requests(ctx.http, ctx.sim_base, since).await?;
    since = next;
    let create_graph = classify(&entries, &ctx.user.id).0;
    let Outcome::Created {
        id: subscription_id,
    } = created
    else {
        bail!("the ensure job did not create a subscription: {created:?}");
    };
    // A renewal, as the schedule (or reauthorizationRequired) would ask for one.
    let started = Instant::now();
    let renewed = manager
        .handle(&SubscriptionJob::Renew {
            kind: SyncKind::Mail,
            tenant_id: ctx.tenant.clone(),
            user_id: user_id.clone(),
            subscription_id: subscription_id.clone(),
        })
        .await?;
    let renew_ms = ms(started.elapsed());
    let renew_aws = manager_proxy.take();
    let (entries, next) = sim_requests(ctx.http, ctx.sim_base, since).await?;
    since = next;
    let renew_graph = classify(&entries, &ctx.user.id).0;
    ensure!(
        matches!(renewed, Outcome::Renewed { .. }),
        "the renewal did not renew: {renewed:?}"
    );

    // Polls of the unchanged mailbox while the subscription is healthy (the safety net's
    // runs, and what every schedule run costs without notifications).
    progress("notifications: scheduled runs of the unchanged mailbox");
    let mut poll_walls = Vec::new();
    let mut poll_cpu = Vec::new();
    worker_proxy.take();
    let polls = 3;
    for _ in 0..polls {
        let job = SyncJob::new(
            SyncKind::Mail,
            ctx.tenant.clone(),
            user_id.clone(),
            SyncReason::Scheduled,
        );
        let before = process.sample()?.cpu_ms;
        let invoked = process.invoke(&sqs_event(&job)?, LAMBDA_TIMEOUT).await?;
        ensure!(
            invoked.completion.ending == Ending::Response,
            "a scheduled run failed"
        );
        poll_walls.push(ms(invoked.wall));
        poll_cpu.push(process.sample()?.cpu_ms - before);
    }
    let poll_aws = worker_proxy.take();
    let (entries, next) = sim_requests(ctx.http, ctx.sim_base, since).await?;
    since = next;
    let poll_graph = classify(&entries, &ctx.user.id).0;

    // ---- arrivals
    let mail_queue = store.stack.var("MAIL_SYNC_QUEUE_URL").to_owned();
    // Jobs left from earlier steps (the fan-out's) would be delivered to this worker.
    // Drained rather than purged: SQS allows one purge a minute, and the fan-out purges.
    loop {
        let out = store
            .sqs
            .receive_message()
            .queue_url(&mail_queue)
            .max_number_of_messages(10)
            .send()
            .await?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for message in messages {
            if let Some(handle) = message.receipt_handle {
                store
                    .sqs
                    .delete_message()
                    .queue_url(&mail_queue)
                    .receipt_handle(handle)
                    .send()
                    .await?;
            }
        }
    }
    let template = local_stack::template::Template::load(&ctx.options.repo.join("template.yaml"))?;
    let mut mapping = local_stack::esm::event_source_mappings(&template, &store.stack.provisioned)?
        .into_iter()
        .find(|m| m.function_logical_id == "MailSyncFunction")
        .context("template.yaml has no SQS source for MailSyncFunction")?;
    let batching_window_ms = ms(mapping.batching_window);
    let batch_size = mapping.batch_size;
    // One warm instance: the arrivals are spaced so that runs never overlap.
    mapping.maximum_concurrency = 1;
    let worker = Arc::new(Worker {
        process: tokio::sync::Mutex::new(process),
        runs: Mutex::new(Vec::new()),
    });
    hook_proxy.take();
    worker_proxy.take();
    let hook_answers_before = hook.answers().len();
    let esm = local_stack::esm::spawn_mapping(
        mapping,
        store.sqs.clone(),
        worker.clone(),
        local_stack::esm::EsmOptions {
            wait_time_seconds: 5,
        },
    );
    let activities = store.stack.var("ACTIVITIES_TABLE").to_owned();
    let owner = key.to_string();
    let crm = microsoft_sim::generate::crm_snapshot(crate::run::SEED);
    let from = crm
        .accounts
        .first()
        .and_then(|a| a.contacts.first())
        .map(|c| c.address.clone())
        .context("the generated CRM has a contact")?;
    let mut jitter = Jitter(0x9e37_79b9_7f4a_7c15 ^ crate::run::SEED);
    let mut latencies = Vec::new();
    let mut one_run = 0usize;
    let mut missed = 0usize;
    let mut overran = 0usize;
    let mut spacings = Vec::new();
    let mut timeline: Vec<(Instant, Option<Duration>)> = Vec::new();
    let mut last_arrival: Option<Instant> = None;
    let mut rows = Vec::new();
    progress(&format!(
        "notifications: {} arrivals, {}–{} ms apart",
        ctx.notify.arrivals,
        ctx.notify.spacing_ms,
        ctx.notify.spacing_ms + ctx.notify.jitter_ms
    ));
    let arrivals_started = Instant::now();
    for n in 0..ctx.notify.arrivals {
        let before = activity_count(&store.dynamo, &activities, &owner).await?;
        let spacing =
            Duration::from_millis(ctx.notify.spacing_ms + jitter.next(ctx.notify.jitter_ms + 1));
        let message = arrival_message(n, &from, &ctx.user.upn)?;
        let arrived = Instant::now();
        // The spacing as it happened: an arrival waits for the one before to be stored.
        if let Some(previous) = last_arrival.replace(arrived) {
            spacings.push(ms(arrived - previous));
        }
        world::control(
            ctx.http,
            ctx.sim_base,
            reqwest::Method::POST,
            &format!("/_sim/users/{}/messages", ctx.user.upn),
            Some(message),
        )
        .await?;
        let mut seen = None;
        while arrived.elapsed() < ARRIVAL_TIMEOUT {
            tokio::time::sleep(POLL_EVERY).await;
            if activity_count(&store.dynamo, &activities, &owner).await? > before {
                seen = Some(arrived.elapsed());
                break;
            }
        }
        match seen {
            Some(latency) => latencies.push(ms(latency)),
            None => missed += 1,
        }
        timeline.push((arrived, seen));
        rows.push(json!({"n": n, "latencyMs": seen.map(ms), "plannedSpacingMs": ms(spacing)}));
        if (n + 1) % 20 == 0 {
            progress(&format!(
                "notifications: {} arrivals, p50 {:.0} ms so far",
                n + 1,
                percentile(&latencies, 50.0)
            ));
        }
        match (arrived + spacing).checked_duration_since(Instant::now()) {
            Some(wait) => tokio::time::sleep(wait).await,
            None => overran += 1,
        }
    }
    // Runs that a late notification would still start.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let arrivals_seconds = arrivals_started.elapsed().as_secs_f64();
    esm.stop().await?;
    let esm_counts = esm_counts_json(&worker);
    let notified_aws = worker_proxy.take();
    let hook_aws = hook_proxy.take();
    let (entries, _) = sim_requests(ctx.http, ctx.sim_base, since).await?;
    let runs = worker.runs();
    // Runs that started between an arrival and its activity's appearance (a run's record
    // is complete only when its invocation has answered, after the activity is written).
    for ((arrived, seen), row) in timeline.iter().zip(rows.iter_mut()) {
        let started = runs
            .iter()
            .filter(|r| r.started >= *arrived && seen.is_none_or(|s| r.started <= *arrived + s))
            .count();
        row["runs"] = json!(started);
        if seen.is_some() && started == 1 {
            one_run += 1;
        }
    }
    let notified_graph = classify(&entries, &ctx.user.id).0;
    let hook_answers: Vec<Answer> = hook
        .answers()
        .into_iter()
        .skip(hook_answers_before)
        .collect();
    let deliveries = world::control(
        ctx.http,
        ctx.sim_base,
        reqwest::Method::GET,
        "/_sim/subscriptions/deliveries",
        None,
    )
    .await?;
    let deliveries: Vec<&Value> = deliveries["value"]
        .as_array()
        .or_else(|| deliveries.as_array())
        .map(|d| {
            d.iter()
                .filter(|d| d["subscriptionId"] == json!(subscription_id))
                .collect()
        })
        .unwrap_or_default();
    hook.stop();
    if let Ok(worker) = Arc::try_unwrap(worker) {
        worker.process.into_inner().stop().await?;
    }

    // ---- throughput of one webhook instance
    let throughput = throughput_runs(ctx).await?;

    let memory = function_memory(&template);
    let run_walls: Vec<f64> = runs.iter().map(|r| r.wall_ms).collect();
    let run_cpu: Vec<f64> = runs.iter().map(|r| r.cpu_ms).collect();
    let handler_ms: Vec<f64> = hook_answers.iter().map(|a| a.handler_ms).collect();
    Ok(json!({
        "settings": {
            "arrivals": ctx.notify.arrivals, "spacingMs": ctx.notify.spacing_ms, "jitterMs": ctx.notify.jitter_ms,
            "latencyMs": ctx.options.latency_ms, "pollEveryMs": ms(POLL_EVERY),
            "arrivalTimeoutMs": ms(ARRIVAL_TIMEOUT), "debounceMs": ms(connector_core::notifications::DEBOUNCE),
            "batchingWindowMs": batching_window_ms, "batchSize": batch_size,
            "mailboxMessages": ctx.user.messages,
        },
        "firstImport": {"wallMs": import_ms, "aws": import_aws},
        "subscription": {
            "resource": resource(SyncKind::Mail).0, "changeTypes": resource(SyncKind::Mail).1,
            "create": {"wallMs": create_ms, "graph": create_graph, "aws": per(&create_aws, 1)},
            "renew": {"wallMs": renew_ms, "graph": renew_graph, "aws": per(&renew_aws, 1)},
        },
        "pollRun": {
            "runs": polls, "wallMs": spread(&poll_walls), "cpuMs": spread(&poll_cpu),
            "graphPerRun": poll_graph.total as f64 / polls as f64,
            "aws": per(&poll_aws, polls),
        },
        "latency": {
            "measured": latencies.len(), "missed": missed, "answeredByOneRun": one_run,
            "ms": spread(&latencies), "spacingMs": spread(&spacings), "overran": overran,
            "seconds": arrivals_seconds,
        },
        "notifiedRuns": {
            "runs": runs.len(),
            "records": runs.iter().map(|r| r.records).sum::<usize>(),
            "reasons": runs.iter().flat_map(|r| r.reasons.clone()).fold(BTreeMap::<String, usize>::new(), |mut m, r| { *m.entry(r).or_default() += 1; m }),
            "failed": runs.iter().filter(|r| !r.ok).count(),
            "wallMs": spread(&run_walls), "cpuMs": spread(&run_cpu),
            "graphPerRun": notified_graph.total as f64 / runs.len().max(1) as f64,
            "aws": per(&notified_aws, runs.len()),
            "esm": esm_counts,
        },
        "webhookPosts": {
            "posts": hook_answers.len(),
            "woke": hook_answers.iter().map(|a| a.woke).sum::<usize>(),
            "debounced": hook_answers.iter().map(|a| a.debounced).sum::<usize>(),
            "non202": hook_answers.iter().filter(|a| a.status != 202).count(),
            "handlerMs": spread(&handler_ms),
            "aws": per(&hook_aws, hook_answers.len()),
            "simDeliveries": deliveries.len(),
            "simDeliveriesNotDelivered": deliveries.iter().filter(|d| d["delivered"] == json!(false)).count(),
        },
        "throughput": throughput,
        "memoryMb": memory,
        "tables": {
            "subscriptions": store.stack.var(TABLE_VAR),
            "connections": store.stack.var("CONNECTIONS_TABLE"),
            "tenants": store.stack.var("TENANTS_TABLE"),
            "activities": activities,
        },
        "rows": rows,
    }))
}

fn esm_counts_json(worker: &Worker) -> Value {
    let runs = worker.runs();
    json!({
        "batches": runs.len(),
        "records": runs.iter().map(|r| r.records).sum::<usize>(),
    })
}

/// MemorySize of each function in template.yaml (its own, else Globals'), by binary.
fn function_memory(template: &local_stack::template::Template) -> Value {
    let global = template
        .globals
        .pointer("/Function/MemorySize")
        .and_then(Value::as_u64);
    let mut out = serde_json::Map::new();
    for (_, resource) in template.of_type("AWS::Serverless::Function") {
        let Some(binary) = resource
            .pointer("/Metadata/BuildProperties/Binary")
            .and_then(Value::as_str)
        else {
            continue;
        };
        let memory = resource
            .pointer("/Properties/MemorySize")
            .and_then(Value::as_u64)
            .or(global);
        out.insert(binary.to_owned(), json!(memory));
    }
    out.insert("globals".into(), json!(global));
    Value::Object(out)
}

/// Notification POSTs of valid one-item batches at a fixed concurrency for a while, on
/// moto (through the AWS SDK, no counting proxy) and in memory.
async fn throughput_runs(ctx: &NotifyContext<'_>) -> Result<Value> {
    let store = ctx.store;
    // Wakes go to a queue of their own: nothing consumes them.
    let wakes = store
        .sqs
        .create_queue()
        .queue_name(format!(
            "BenchWebhookWakes-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ))
        .send()
        .await?
        .queue_url
        .context("a queue URL")?;
    let queues = WebhookQueues {
        mail_sync: wakes.clone(),
        calendar_sync: wakes.clone(),
        subscriptions: wakes,
    };
    let now = OffsetDateTime::now_utc();
    let mut seed = Vec::new();
    let mut states = Vec::new();
    for _ in 0..ctx.notify.throughput_subscriptions {
        let state = ClientState::generate();
        let subscription = Subscription {
            tenant_id: ctx.tenant.clone(),
            user_id: UserId::parse(&uuid::Uuid::new_v4().to_string())
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            kind: SyncKind::Mail,
            id: uuid::Uuid::new_v4().to_string(),
            resource: "me/messages".into(),
            client_state: state.digest(),
            expires_at: now + LIFETIME,
            created_at: now,
            renewed_at: None,
        };
        states.push((subscription.id.clone(), state.expose().to_owned()));
        seed.push(subscription);
    }
    let mut out = serde_json::Map::new();
    for (label, backend) in [
        (
            "moto",
            Backend::Aws {
                endpoint: store.stack.endpoint.clone(),
                table: store.stack.var(TABLE_VAR).to_owned(),
            },
        ),
        ("memory", Backend::Memory),
    ] {
        progress(&format!(
            "notifications: webhook throughput ({label}), {} in flight for {} s",
            ctx.notify.concurrency, ctx.notify.throughput_seconds
        ));
        let server = WebhookServer::start(backend, queues.clone(), seed.clone()).await?;
        let figures = drive(
            &server,
            &states,
            ctx.tenant,
            ctx.notify.concurrency,
            Duration::from_secs(ctx.notify.throughput_seconds),
        )
        .await?;
        server.stop();
        out.insert(label.into(), figures);
    }
    Ok(Value::Object(out))
}

async fn drive(
    server: &WebhookServer,
    states: &[(String, String)],
    tenant: &TenantId,
    concurrency: usize,
    duration: Duration,
) -> Result<Value> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let url = format!("{}{NOTIFICATION_PATH}", server.base);
    let next = Arc::new(AtomicUsize::new(0));
    let states = Arc::new(states.to_vec());
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (http, url, next, states, tenant) = (
            http.clone(),
            url.clone(),
            next.clone(),
            states.clone(),
            tenant.as_str().to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            while Instant::now() < deadline {
                let (id, state) = &states[next.fetch_add(1, Ordering::Relaxed) % states.len()];
                let message = uuid::Uuid::new_v4();
                let body = json!({"value": [{
                    "id": uuid::Uuid::new_v4().to_string(), "subscriptionId": id,
                    "subscriptionExpirationDateTime": "2030-01-01T00:00:00.0000000Z",
                    "changeType": "created", "resource": format!("Users/bench/Messages/{message}"),
                    "resourceData": {"@odata.type": "#Microsoft.Graph.Message",
                                     "@odata.id": format!("Users/bench/Messages/{message}"), "id": message.to_string()},
                    "clientState": state, "tenantId": tenant,
                }]});
                let sent = Instant::now();
                let status = match http.post(&url).json(&body).send().await {
                    Ok(answer) => answer.status().as_u16(),
                    Err(_) => 0,
                };
                times.push(ms(sent.elapsed()));
                *statuses.entry(status).or_default() += 1;
            }
            (times, statuses)
        }));
    }
    let mut times = Vec::new();
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    for task in tasks {
        let (t, s) = task.await?;
        times.extend(t);
        for (status, n) in s {
            *statuses.entry(status).or_default() += n;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let answers = server.answers();
    let handler: Vec<f64> = answers.iter().map(|a| a.handler_ms).collect();
    let first = answers.first().map(|a| a.at);
    Ok(json!({
        "concurrency": concurrency,
        "seconds": seconds,
        "answers": times.len(),
        "answersPerSecond": times.len() as f64 / seconds,
        "statuses": statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
        "answerMs": spread(&times),
        "handlerMs": spread(&handler),
        "woke": answers.iter().map(|a| a.woke).sum::<usize>(),
        "debounced": answers.iter().map(|a| a.debounced).sum::<usize>(),
        "subscriptions": states.len(),
        "handlerSpanSeconds": first.and_then(|f| answers.last().map(|l| (l.at - f).as_secs_f64())),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 100.0);
        assert_eq!(percentile(&values, 99.0), 198.0);
        assert_eq!(percentile(&values, 100.0), 200.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn jitter_stays_below_its_bound() {
        let mut jitter = Jitter(42);
        let draws: Vec<u64> = (0..1000).map(|_| jitter.next(2001)).collect();
        assert!(draws.iter().all(|d| *d <= 2000));
        assert!(draws.iter().any(|d| *d < 500) && draws.iter().any(|d| *d > 1500));
    }

    /// The webhook server answers Graph's handshake with the decoded token, accepts a
    /// valid batch with a wake, debounces the next one, and refuses a wrong client state
    /// and a body that is not a batch.
    #[tokio::test]
    async fn the_webhook_server_does_what_the_route_does() -> Result<()> {
        let state = ClientState::generate();
        let now = OffsetDateTime::now_utc();
        let tenant = TenantId::parse("0b5e3c1a-7d2f-4e8a-9c6b-1f2e3d4c5b6a").expect("guid");
        let subscription = Subscription {
            tenant_id: tenant.clone(),
            user_id: UserId::parse("1b5e3c1a-7d2f-4e8a-9c6b-1f2e3d4c5b6a").expect("guid"),
            kind: SyncKind::Mail,
            id: "sub-1".into(),
            resource: "me/messages".into(),
            client_state: state.digest(),
            expires_at: now + LIFETIME,
            created_at: now,
            renewed_at: None,
        };
        let queues = WebhookQueues {
            mail_sync: "mail".into(),
            calendar_sync: "calendar".into(),
            subscriptions: "subs".into(),
        };
        let server = WebhookServer::start(Backend::Memory, queues, vec![subscription]).await?;
        let http = reqwest::Client::builder().no_proxy().build()?;
        let url = format!("{}{NOTIFICATION_PATH}", server.base);
        let handshake = http
            .post(format!(
                "{url}?validationToken=Validation%3A%20Testing+reachability"
            ))
            .send()
            .await?;
        assert_eq!(handshake.status(), 200);
        assert!(
            handshake.headers()[header::CONTENT_TYPE]
                .to_str()?
                .starts_with("text/plain")
        );
        assert_eq!(handshake.text().await?, "Validation: Testing reachability");
        let batch = |client_state: &str| {
            json!({"value": [{"subscriptionId": "sub-1", "clientState": client_state,
                              "changeType": "created"}]})
        };
        for _ in 0..2 {
            let answer = http.post(&url).json(&batch(state.expose())).send().await?;
            assert_eq!(answer.status(), 202);
        }
        let wrong = http.post(&url).json(&batch("not-it")).send().await?;
        assert_eq!(wrong.status(), 202);
        let malformed = http.post(&url).body("{").send().await?;
        assert_eq!(malformed.status(), 400);
        let answers = server.answers();
        assert_eq!(answers.len(), 4);
        assert_eq!(answers.iter().map(|a| a.woke).sum::<usize>(), 1);
        assert_eq!(answers.iter().map(|a| a.debounced).sum::<usize>(), 1);
        server.stop();
        Ok(())
    }
}
