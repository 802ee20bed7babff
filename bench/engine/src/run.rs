//! `connector-bench run`: every measurement of issue 9 items 2–6 in one run, on one moto and
//! one microsoft-sim, written to `measurements.json` (the report generator, `bench/report.py`,
//! adds the engine benchmark, the targets and the ratios).
//!
//! Order: set-up (moto stacks, the sim with every mailbox, the CRM, signed-in users) → cold
//! starts and the Python import → side-by-side listings (Rust, plain Python, msgraph-sdk) and
//! the listing's wire bytes → imports of the small and large mailbox through the real
//! `mail-sync` binary, each followed by an unchanged-mailbox run in the same warm process,
//! the large one then by the CRM changes' catch-ups (`crm_changes.rs`) → the fan-out over the seeded connections → change notifications (issue 15,
//! `notifications.rs`). Graph latency is on for everything after set-up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use connector_core::domain::{SyncKind, TenantId, UserId};
use connector_core::messages::{SyncJob, SyncReason};
use serde::Serialize;
use serde_json::{Value, json};

use crate::awsproxy::{AwsCounts, AwsProxy, FanOutStandIn};
use crate::crm::{CRM_ADDRESSES, CRM_DOMAINS, crm_file, crm_snapshot};
use crate::crm_changes::CrmChanges;
use crate::lambda::{Ending, LambdaProcess};
use crate::listing::{ListingReport, ListingSpec};
use crate::notifications::{NotifyContext, NotifyOptions};
use crate::procstat::ProcSample;
use crate::store::Store;
use crate::world::{self, MailboxUser, TENANT_DOMAIN};

/// Seed of every generated mailbox and of the CRM they were drawn against.
pub const SEED: u64 = 7;
/// Messages in the change-notification user's generated Inbox.
pub const NOTIFIED_MAILBOX: u64 = 200;
/// Outlook's per-mailbox concurrency, which the latency limit divides by.
pub const MAILBOX_CONCURRENCY: u64 = 4;
/// Lambda's longest timeout: the worker's deadline in every invocation.
pub(crate) const LAMBDA_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// What `run` measures; the command line picks the sizes.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub out: PathBuf,
    pub repo: PathBuf,
    /// Where the release binaries are.
    pub bin_dir: PathBuf,
    pub small: u64,
    pub large: u64,
    pub connections: usize,
    /// Connections of the fan-out measured on moto alone (its Query re-scans the table for
    /// every page, so the full count runs against the proxy's stand-in).
    pub moto_connections: usize,
    pub latency_ms: u64,
    pub cold_runs: usize,
    /// msgraph-sdk lists only the small mailbox (about 5–10 ms of CPU per message).
    pub sdk: bool,
    /// Change notifications: arrivals, spacing, webhook throughput (`notifications.rs`).
    pub notify: NotifyOptions,
    /// The parts to run (`cold`, `listings`, `imports`, `crm-changes`, `fan-out`,
    /// `notifications`); `make bench` runs all. `crm-changes` without `imports` imports the
    /// large mailbox only (it measures right after that import). A partial run is for
    /// working on one figure: `report.py` reports the parts it finds.
    pub parts: BTreeSet<String>,
}

impl RunOptions {
    pub(crate) fn runs(&self, part: &str) -> bool {
        self.parts.contains(part)
    }
}

/// Every part of a full run.
pub const PARTS: [&str; 6] = [
    "cold",
    "listings",
    "imports",
    "crm-changes",
    "fan-out",
    "notifications",
];

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Measurements {
    pub machine: Value,
    pub settings: Value,
    pub setup: Value,
    pub cold_starts: Vec<ColdStart>,
    pub python_import: Value,
    pub listings: Vec<ListingRun>,
    pub wire: Vec<Value>,
    /// Outlook's request budget per app and mailbox as the sim enforces it by default.
    pub outlook_budget: Value,
    pub import_warm_up: Value,
    pub imports: Vec<ImportRun>,
    /// What catching up with a changed CRM costs on the large mailbox, right after its
    /// import (`crm_changes.rs`); absent when the part was not run.
    pub crm_changes: Option<CrmChanges>,
    pub fan_out: Value,
    /// Issue 15: latency from arrival to stored activity, webhook throughput, per-run
    /// figures of the cost model (`notifications.rs`).
    pub notifications: Value,
    pub notes: Vec<String>,
    pub total_seconds: f64,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ColdStart {
    pub function: String,
    pub binary: String,
    pub binary_bytes: u64,
    pub zip_bytes: u64,
    pub event: String,
    pub runs: usize,
    /// exec → first `GET .../invocation/next`, every run (ms).
    pub to_first_poll_ms: Vec<f64>,
    /// exec → the first invocation's answer, every run (ms).
    pub to_first_response_ms: Vec<f64>,
    pub ending: String,
    pub peak_rss_kb: u64,
    pub skipped: Option<String>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListingRun {
    pub mailbox: u64,
    pub report: Option<ListingReport>,
    pub skipped: Option<String>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportRun {
    pub mailbox: u64,
    pub invocations: u64,
    pub outcome: String,
    pub wall_ms: f64,
    /// The worker process during the import's invocation(s): CPU is the difference; the
    /// peak RSS was reset to the current RSS just before (`before.rssKb`).
    pub before: ProcSample,
    pub after: ProcSample,
    /// The worker's own summary line (EMF) of the last invocation; counters summed over
    /// continuation invocations.
    pub summary: Value,
    pub graph: GraphRequests,
    pub mailbox_stats: Value,
    pub aws: AwsCounts,
    pub tables: BTreeMap<String, String>,
    pub steady: Option<SteadyRun>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SteadyRun {
    pub wall_ms: f64,
    pub outcome: String,
    pub folders: u64,
    pub graph: GraphRequests,
    /// Graph requests per folder path.
    pub per_folder: BTreeMap<String, u64>,
    pub aws: AwsCounts,
    pub cpu_ms: f64,
}

/// The sim's request log for one user over one run, by kind.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphRequests {
    pub total: u64,
    /// `$search` pages on `/me/messages` (the CRM catch-up's searches).
    pub searches: u64,
    /// Message listings (delta and list pages).
    pub list_pages: u64,
    /// The longest chain of listing pages of one folder (pages of a folder follow each
    /// other's links, so they cannot overlap).
    pub longest_folder_chain: u64,
    pub batch_calls: u64,
    /// Requests inside `$batch` calls (message fetches).
    pub fetches: u64,
    pub folder_requests: u64,
    pub other: u64,
    pub throttled: u64,
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) fn progress(message: &str) {
    eprintln!("[bench] {message}");
}

/// The sim's request log after `since` (its sequence numbers), and the next `since`.
pub(crate) async fn sim_requests(
    http: &reqwest::Client,
    base: &str,
    since: u64,
) -> Result<(Vec<Value>, u64)> {
    let log = world::control(
        http,
        base,
        reqwest::Method::GET,
        &format!("/_sim/requests?since={since}"),
        None,
    )
    .await?;
    let entries = log["value"].as_array().cloned().unwrap_or_default();
    let next = entries
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .max()
        .map_or(since, |s| s + 1);
    Ok((entries, next))
}

pub(crate) fn classify(entries: &[Value], user_id: &str) -> (GraphRequests, BTreeMap<String, u64>) {
    let mut graph = GraphRequests::default();
    let mut per_folder: BTreeMap<String, u64> = BTreeMap::new();
    let mut chains: BTreeMap<String, u64> = BTreeMap::new();
    for entry in entries {
        let path = entry["path"].as_str().unwrap_or_default();
        let mine = entry["userId"].as_str() == Some(user_id);
        if !mine {
            continue;
        }
        graph.total += 1;
        if entry["status"].as_u64() == Some(429) {
            graph.throttled += 1;
        }
        let lower = path.to_ascii_lowercase();
        let query = entry["query"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if lower.ends_with("/$batch") {
            graph.batch_calls += 1;
        } else if !lower.contains("/mailfolders/")
            && lower.ends_with("/messages")
            && (query.contains("$search") || query.contains("%24search"))
        {
            graph.searches += 1;
        } else if lower.contains("/mailfolders/")
            && (lower.ends_with("/messages/delta")
                || lower.ends_with("/messages/delta()")
                || lower.ends_with("/messages"))
        {
            graph.list_pages += 1;
            let folder = lower
                .split("/messages")
                .next()
                .unwrap_or_default()
                .to_owned();
            *chains.entry(folder).or_default() += 1;
            *per_folder.entry(path.to_owned()).or_default() += 1;
        } else if lower.contains("/messages/") {
            graph.fetches += 1;
        } else if lower.contains("/mailfolders") {
            graph.folder_requests += 1;
            *per_folder.entry(path.to_owned()).or_default() += 1;
        } else {
            graph.other += 1;
        }
    }
    graph.longest_folder_chain = chains.values().copied().max().unwrap_or(0);
    (graph, per_folder)
}

/// The last EMF summary line `function` printed in `output` (stdout of the process).
pub(crate) fn last_summary(output: &str, function: &str) -> Option<Value> {
    output
        .lines()
        .rev()
        .filter(|line| line.starts_with('{') && line.contains("\"_aws\""))
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|v| v["Function"].as_str() == Some(function) && v.get("Scanned").is_some())
}

pub(crate) fn sqs_event(job: &SyncJob) -> Result<Vec<u8>> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
        .to_string();
    let event = json!({"Records": [{
        "messageId": uuid::Uuid::new_v4().to_string(),
        "receiptHandle": format!("bench-{}", uuid::Uuid::new_v4()),
        "body": serde_json::to_string(job)?,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": now_ms,
                       "SenderId": "bench", "ApproximateFirstReceiveTimestamp": now_ms},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:MailSyncQueue",
        "awsRegion": "us-east-1"
    }]});
    Ok(serde_json::to_vec(&event)?)
}

fn schedule_event(repo: &Path, function: &str) -> Vec<u8> {
    let sample = repo.join(format!("events/{function}/schedule.json"));
    if let Ok(bytes) = std::fs::read(&sample) {
        return bytes;
    }
    serde_json::to_vec(&json!({
        "version": "0", "id": uuid::Uuid::new_v4().to_string(), "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "000000000000", "time": "2026-01-01T00:00:00Z",
        "region": "us-east-1", "resources": [format!("arn:aws:events:us-east-1:000000000000:rule/{function}")],
        "detail": {}
    }))
    .unwrap_or_default()
}

/// The function's environment: the stack's resolved template variables, AWS through the
/// counting proxy, Microsoft at the sim.
pub(crate) fn function_env(
    store: &Store,
    aws_endpoint: &str,
    sim_base: &str,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = store.stack.process_env().into_iter().collect();
    env.insert("AWS_ENDPOINT_URL".into(), aws_endpoint.to_owned());
    env.insert("CLIENT_ID".into(), world::CLIENT_ID.into());
    env.insert("LOGIN_BASE_URL".into(), sim_base.to_owned());
    env.insert("GRAPH_BASE_URL".into(), sim_base.to_owned());
    env.insert("PUBLIC_BASE_URL".into(), "http://127.0.0.1:9000".into());
    env.insert("APP_BASE_URL".into(), "http://127.0.0.1:9001".into());
    env.insert("RUST_LOG".into(), "info".into());
    env
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Zips `binary` as `bootstrap` the way Lambda deployment packages are built.
fn zip_size(options: &RunOptions, binary: &Path, name: &str) -> Result<u64> {
    let zip = options.out.join(format!("zips/{name}.zip"));
    std::fs::create_dir_all(zip.parent().expect("has a parent"))?;
    let output = std::process::Command::new(options.repo.join(".venv/bin/python"))
        .arg(options.repo.join("bench/lambda_zip.py"))
        .arg(binary)
        .arg(&zip)
        .output()
        .context("running bench/lambda_zip.py")?;
    ensure!(
        output.status.success(),
        "lambda_zip.py: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(std::fs::metadata(&zip)?.len())
}

async fn cold_starts(
    options: &RunOptions,
    store: &Store,
    proxy: &AwsProxy,
    sim_base: &str,
) -> Result<Vec<ColdStart>> {
    let env = function_env(store, &proxy.endpoint, sim_base);
    let consent_event = std::fs::read(options.repo.join("events/consent-callback/consent.json"))
        .unwrap_or_default();
    let teams_event = std::fs::read(options.repo.join("events/teams-post/malformed-json.json"))
        .unwrap_or_else(|_| br#"{"Records":[]}"#.to_vec());
    let functions: [(&str, Vec<u8>, &str); 4] = [
        (
            "mail-sync",
            schedule_event(&options.repo, "mail-sync"),
            "schedule (empty connections table)",
        ),
        (
            "calendar-sync",
            schedule_event(&options.repo, "calendar-sync"),
            "schedule (empty connections table)",
        ),
        (
            "consent-callback",
            consent_event,
            "events/consent-callback/consent.json (GET /consent)",
        ),
        (
            "teams-post",
            teams_event,
            "events/teams-post/malformed-json.json (one malformed record)",
        ),
    ];
    let mut results = Vec::new();
    for (name, event, event_label) in functions {
        let binary = options.bin_dir.join(name);
        let mut result = ColdStart {
            function: name.to_owned(),
            binary: binary.display().to_string(),
            event: event_label.to_owned(),
            ..ColdStart::default()
        };
        if !binary.exists() {
            result.skipped = Some(format!("{} is not built", binary.display()));
            results.push(result);
            continue;
        }
        progress(&format!("cold start: {name}"));
        result.binary_bytes = std::fs::metadata(&binary)?.len();
        result.zip_bytes = zip_size(options, &binary, name)?;
        // One untimed run first: the binary's pages in the page cache, as on a Lambda host
        // that has the function's image; every timed run is a new process.
        for run in 0..=options.cold_runs {
            let log = options.out.join(format!("logs/cold-{name}-{run}.log"));
            let mut process = LambdaProcess::spawn(name, &binary, &env, &log).await?;
            let polled = process.wait_poll(Duration::from_secs(30)).await?;
            let invoked = process.invoke(&event, Duration::from_secs(60)).await?;
            let to_response = polled + invoked.wall;
            if run > 0 {
                result.to_first_poll_ms.push(ms(polled));
                result.to_first_response_ms.push(ms(to_response));
                result.ending = format!("{:?}", invoked.completion.ending);
                result.peak_rss_kb = result.peak_rss_kb.max(process.sample()?.peak_rss_kb);
            }
            process.stop().await?;
        }
        result.runs = options.cold_runs;
        results.push(result);
    }
    Ok(results)
}

async fn python_import(options: &RunOptions) -> Result<Value> {
    let python = options.repo.join(".venv/bin/python");
    let mut timed = BTreeMap::new();
    for (label, code) in [
        ("boto3+msal", "import boto3, msal"),
        ("bare interpreter", "pass"),
    ] {
        let mut runs = Vec::new();
        for run in 0..=options.cold_runs {
            let started = Instant::now();
            let status = tokio::process::Command::new(&python)
                .args(["-c", code])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await?;
            ensure!(status.success(), "python -c '{code}' failed");
            if run > 0 {
                runs.push(ms(started.elapsed()));
            }
        }
        timed.insert(
            label,
            json!({"code": code, "runsMs": runs, "medianMs": median(&runs)}),
        );
    }
    Ok(json!({"python": python.display().to_string(), "runs": timed}))
}

/// One listing client as its own process; its JSON report is the last line of stdout.
async fn listing(
    options: &RunOptions,
    client: &str,
    spec: &ListingSpec,
    token: &str,
) -> Result<ListingReport> {
    let spec_path = options.out.join(format!("listing-{client}.json"));
    std::fs::write(&spec_path, serde_json::to_vec_pretty(spec)?)?;
    let mut command = match client {
        "rust" => {
            let mut c = tokio::process::Command::new(std::env::current_exe()?);
            c.arg("list").arg("--spec").arg(&spec_path);
            c
        }
        "python-requests" | "python-msgraph-sdk" => {
            let script = if client == "python-requests" {
                "plain_list.py"
            } else {
                "sdk_list.py"
            };
            let mut c = tokio::process::Command::new(options.repo.join(".venv/bin/python"));
            c.arg(options.repo.join("bench/compare").join(script))
                .arg("--spec")
                .arg(&spec_path);
            c
        }
        other => bail!("unknown listing client {other}"),
    };
    let output = command
        .env("BENCH_GRAPH_TOKEN", token)
        .stdin(Stdio::null())
        .output()
        .await?;
    ensure!(
        output.status.success(),
        "{client} listing failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().context("no report line")?;
    let report: ListingReport =
        serde_json::from_str(line).with_context(|| format!("{client}: {line}"))?;
    Ok(report)
}

/// The listing's bytes on the wire (gzip, as Graph sends them) and decoded.
async fn wire_bytes(base: &str, path: &str, page_size: u32, token: &str) -> Result<Value> {
    let http = reqwest::Client::builder().no_gzip().build()?;
    let mut url = format!("{base}/v1.0{path}");
    let (mut gzip, mut decoded, mut pages) = (0u64, 0u64, 0u64);
    loop {
        let response = http
            .get(&url)
            .bearer_auth(token)
            .header("Accept-Encoding", "gzip")
            .header(
                "Prefer",
                format!("odata.maxpagesize={page_size}, IdType=\"ImmutableId\""),
            )
            .send()
            .await?
            .error_for_status()?;
        let compressed = response
            .headers()
            .get("content-encoding")
            .is_some_and(|v| v == "gzip");
        let body = response.bytes().await?;
        gzip += body.len() as u64;
        let text = if compressed {
            connector_core::graph::gunzip(&body, connector_core::graph::MAX_GRAPH_BODY_BYTES)?
        } else {
            body.to_vec()
        };
        decoded += text.len() as u64;
        pages += 1;
        let page: Value = serde_json::from_slice(&text)?;
        match page["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
    }
    Ok(json!({"pages": pages, "gzipBytes": gzip, "decodedBytes": decoded}))
}

pub(crate) struct ImportContext<'a> {
    pub options: &'a RunOptions,
    pub store: &'a Store,
    pub proxy: &'a AwsProxy,
    pub http: &'a reqwest::Client,
    pub sim_base: &'a str,
    pub tenant: &'a TenantId,
    /// The benchmark CRM file (`crm.json`), which `crm-changes` adds to.
    pub crm: &'a Value,
    pub since: u64,
}

fn add_counters(total: &mut Value, more: &Value) {
    let Some(more) = more.as_object() else { return };
    if !total.is_object() {
        *total = Value::Object(more.clone());
        return;
    }
    for (key, value) in more {
        match (total.get(key).and_then(Value::as_u64), value.as_u64()) {
            (Some(a), Some(b)) if key != "Timestamp" => total[key] = json!(a + b),
            _ => total[key] = value.clone(),
        }
    }
}

pub(crate) fn job_for(
    tenant: &TenantId,
    user: &MailboxUser,
    reason: SyncReason,
) -> Result<SyncJob> {
    let user_id = UserId::parse(&user.id).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(SyncJob::new(
        SyncKind::Mail,
        tenant.clone(),
        user_id,
        reason,
    ))
}

/// Makes the process's VmHWM its current RSS (`/proc/<pid>/clear_refs`, Linux ≥ 4.0), so the
/// next peak is the next run's own.
fn reset_peak_rss(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("resetting the peak RSS of {pid}"))
}

/// The import path of one warm `mail-sync` process: a warm-up job for a user with an empty
/// mailbox (the container loads the tenant's CRM index once, as a warm Lambda container
/// has it), then for each mailbox its import and an unchanged-mailbox run.
async fn imports(
    ctx: &mut ImportContext<'_>,
    warm_up: &MailboxUser,
    users: &[&MailboxUser],
) -> Result<(Value, Vec<ImportRun>, Option<CrmChanges>)> {
    let binary = ctx.options.bin_dir.join("mail-sync");
    ensure!(binary.exists(), "{} is not built", binary.display());
    let env = function_env(ctx.store, &ctx.proxy.endpoint, ctx.sim_base);
    let log = ctx.options.out.join("logs/imports.log");
    let mut process = LambdaProcess::spawn("mail-sync", &binary, &env, &log).await?;
    let cold_start_ms = ms(process.wait_poll(Duration::from_secs(30)).await?);

    progress("import: warm-up job (the tenant's CRM index into the container)");
    ctx.proxy.take();
    let invoked = process
        .invoke(
            &sqs_event(&job_for(ctx.tenant, warm_up, SyncReason::Initial)?)?,
            LAMBDA_TIMEOUT,
        )
        .await?;
    let warm_aws = ctx.proxy.take();
    let warm = process.sample()?;
    let summary = last_summary(&process.output(), "mail-sync").unwrap_or(Value::Null);
    let (_, since) = sim_requests(ctx.http, ctx.sim_base, ctx.since).await?;
    ctx.since = since;
    let warm_up_report = json!({
        "coldStartMs": cold_start_ms,
        "wallMs": ms(invoked.wall),
        "outcome": summary["Outcome"],
        "crmQueryCalls": warm_aws.calls_of("Query"),
        "motoQueryMs": warm_aws.upstream_ms.get("DynamoDB_20120810.Query").copied().unwrap_or(0.0),
        "aws": warm_aws,
        "rssAfterKb": warm.rss_kb,
        "peakRssKb": warm.peak_rss_kb,
        "cpuMs": warm.cpu_ms,
    });

    let mut runs = Vec::new();
    let mut crm_changes = None;
    for user in users {
        progress(&format!(
            "import of {} messages through mail-sync",
            user.messages
        ));
        let run = import_one(ctx, &mut process, user).await?;
        if ctx.options.runs("crm-changes") && user.messages == ctx.options.large {
            crm_changes = Some(crate::crm_changes::measure(ctx, &mut process, user, &run).await?);
        }
        runs.push(run);
    }
    process.stop().await?;
    Ok((warm_up_report, runs, crm_changes))
}

/// One job's invocations in a warm process: the job, then each continuation the worker
/// queued (at most six invocations in all).
pub(crate) struct Invocations {
    pub wall: Duration,
    pub invocations: u64,
    /// The worker's summary line, counters summed over the invocations.
    pub summary: Value,
    /// The last invocation's outcome (`done`, `continued`, ...).
    pub outcome: String,
}

pub(crate) async fn invoke_with_continuations(
    ctx: &ImportContext<'_>,
    process: &mut LambdaProcess,
    mut job: SyncJob,
    what: &str,
) -> Result<Invocations> {
    let queue_url = ctx.store.stack.var("MAIL_SYNC_QUEUE_URL").to_owned();
    let mut done = Invocations {
        wall: Duration::ZERO,
        invocations: 0,
        summary: Value::Null,
        outcome: String::new(),
    };
    loop {
        let invoked = process.invoke(&sqs_event(&job)?, LAMBDA_TIMEOUT).await?;
        done.wall += invoked.wall;
        done.invocations += 1;
        ensure!(
            invoked.completion.ending == Ending::Response,
            "the {what} invocation failed: {}",
            String::from_utf8_lossy(&invoked.completion.body)
        );
        let last = last_summary(&process.output(), "mail-sync")
            .context("no summary line from mail-sync")?;
        add_counters(&mut done.summary, &last);
        done.outcome = last["Outcome"].as_str().unwrap_or_default().to_owned();
        if done.outcome != "continued" || done.invocations >= 6 {
            return Ok(done);
        }
        // The worker queued its continuation; Lambda would deliver it to a warm container.
        let body = ctx
            .store
            .receive_one(&queue_url)
            .await?
            .context("no continuation job queued")?;
        job = serde_json::from_str(&body)?;
    }
}

async fn import_one(
    ctx: &mut ImportContext<'_>,
    process: &mut LambdaProcess,
    user: &MailboxUser,
) -> Result<ImportRun> {
    let job = job_for(ctx.tenant, user, SyncReason::Initial)?;
    let mut run = ImportRun {
        mailbox: user.messages,
        tables: [
            ("activities", "ACTIVITIES_TABLE"),
            ("syncState", "SYNC_STATE_TABLE"),
            ("connections", "CONNECTIONS_TABLE"),
            ("crm", "CRM_TABLE"),
            ("tenants", "TENANTS_TABLE"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ctx.store.stack.var(v).to_owned()))
        .collect(),
        ..ImportRun::default()
    };
    world::control(
        ctx.http,
        ctx.sim_base,
        reqwest::Method::DELETE,
        "/_sim/mailbox-stats",
        None,
    )
    .await?;
    let (_, since) = sim_requests(ctx.http, ctx.sim_base, ctx.since).await?;
    ctx.proxy.take();
    reset_peak_rss(process.pid())?;
    run.before = process.sample()?;
    let done = invoke_with_continuations(ctx, process, job, "import").await?;
    run.invocations = done.invocations;
    run.outcome = done.outcome;
    run.wall_ms = ms(done.wall);
    run.after = process.sample()?;
    run.summary = done.summary;
    run.aws = ctx.proxy.take();
    let (entries, next) = sim_requests(ctx.http, ctx.sim_base, since).await?;
    run.graph = classify(&entries, &user.id).0;
    std::fs::write(
        ctx.options
            .out
            .join(format!("logs/graph-import-{}.json", user.messages)),
        serde_json::to_vec(&entries)?,
    )?;
    run.mailbox_stats = world::control(
        ctx.http,
        ctx.sim_base,
        reqwest::Method::GET,
        "/_sim/mailbox-stats",
        None,
    )
    .await?;
    ctx.since = next;
    progress(&format!(
        "import {}: {} in {:.1} s, {} Graph requests, peak RSS {:.1} MB",
        user.messages,
        run.outcome,
        run.wall_ms / 1000.0,
        run.graph.total,
        run.after.peak_rss_kb as f64 / 1024.0
    ));

    // Unchanged mailbox, same warm process: one request per folder expected.
    let cpu_before = process.sample()?.cpu_ms;
    let steady_job = job_for(ctx.tenant, user, SyncReason::Scheduled)?;
    let invoked = process
        .invoke(&sqs_event(&steady_job)?, LAMBDA_TIMEOUT)
        .await?;
    let last =
        last_summary(&process.output(), "mail-sync").context("no summary line from mail-sync")?;
    let (entries, next) = sim_requests(ctx.http, ctx.sim_base, ctx.since).await?;
    ctx.since = next;
    let (graph, per_folder) = classify(&entries, &user.id);
    run.steady = Some(SteadyRun {
        wall_ms: ms(invoked.wall),
        outcome: last["Outcome"].as_str().unwrap_or_default().to_owned(),
        folders: last["Folders"].as_u64().unwrap_or(0),
        graph,
        per_folder,
        aws: ctx.proxy.take(),
        cpu_ms: process.sample()?.cpu_ms - cpu_before,
    });
    Ok(run)
}

/// One schedule invocation of a fresh `mail-sync` process.
async fn schedule_run(
    options: &RunOptions,
    store: &Store,
    proxy: &AwsProxy,
    sim_base: &str,
    label: &str,
) -> Result<Value> {
    let binary = options.bin_dir.join("mail-sync");
    let env = function_env(store, &proxy.endpoint, sim_base);
    let log = options.out.join(format!("logs/fan-out-{label}.log"));
    proxy.take();
    let mut process = LambdaProcess::spawn("mail-sync", &binary, &env, &log).await?;
    process.wait_poll(Duration::from_secs(30)).await?;
    let before = process.sample()?;
    let invoked = process
        .invoke(&schedule_event(&options.repo, "mail-sync"), LAMBDA_TIMEOUT)
        .await?;
    let after = process.sample()?;
    let counts = proxy.take();
    process.stop().await?;
    ensure!(
        invoked.completion.ending == Ending::Response,
        "the fan-out failed: {}",
        String::from_utf8_lossy(&invoked.completion.body)
    );
    let report: Value = serde_json::from_slice(&invoked.completion.body).unwrap_or(Value::Null);
    progress(&format!(
        "fan-out ({label}): {} jobs in {:.1} s",
        report["enqueued"],
        ms(invoked.wall) / 1000.0
    ));
    Ok(json!({
        "backend": label,
        "wallMs": ms(invoked.wall),
        "report": report,
        "sendMessageBatchCalls": counts.calls_of("SendMessageBatch"),
        "sqsCalls": counts.calls.iter().filter(|(k, _)| k.contains("SQS")).map(|(_, v)| v).sum::<u64>(),
        "queryCalls": counts.calls_of("Query"),
        "aws": counts,
        "cpuMs": after.cpu_ms - before.cpu_ms,
        "peakRssKb": after.peak_rss_kb,
    }))
}

/// Fan-out: first over `moto_connections` on moto alone (its queue drained meanwhile, as
/// the event source mapping would), then over every seeded connection with the proxy
/// answering the ByStatusShard Queries and SendMessageBatch (see `awsproxy`).
async fn fan_out(
    options: &RunOptions,
    store: &Store,
    proxy: &AwsProxy,
    sim_base: &str,
) -> Result<Value> {
    let per_tenant = 100;
    let connections_table = store.stack.var("CONNECTIONS_TABLE").to_owned();
    let queue_url = store.stack.var("MAIL_SYNC_QUEUE_URL").to_owned();
    let seeder = Store::new(local_stack::TestStack {
        sdk: local_stack::sdk_config(&proxy.endpoint).await,
        endpoint: proxy.endpoint.clone(),
        ..store.stack.clone()
    });
    proxy.capture(&connections_table);

    // Moto keeps its queue in a list that every send re-scans: keep it short.
    let drain = {
        let sqs = store.sqs.clone();
        let queue_url = queue_url.clone();
        tokio::spawn(async move {
            loop {
                let _ = sqs.purge_queue().queue_url(&queue_url).send().await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };

    let moto_connections = options.moto_connections.min(options.connections);
    let first_tenants = moto_connections.div_ceil(per_tenant);
    progress(&format!(
        "fan-out: seeding {} connections",
        first_tenants * per_tenant
    ));
    let seeding = Instant::now();
    let mut seeded = seeder
        .seed_connections(first_tenants, per_tenant, 8)
        .await?;
    let mut seed_ms = ms(seeding.elapsed());
    let on_moto = schedule_run(options, store, proxy, sim_base, "moto").await;

    let rest_tenants = options.connections.div_ceil(per_tenant) - first_tenants;
    progress(&format!(
        "fan-out: seeding {} more connections",
        rest_tenants * per_tenant
    ));
    let seeding = Instant::now();
    seeded += seeder.seed_connections(rest_tenants, per_tenant, 8).await?;
    seed_ms += ms(seeding.elapsed());
    proxy.stand_in(Some(FanOutStandIn {
        connections_table,
        index: connector_core::adapters::dynamodb::BY_STATUS_INDEX.into(),
        queue_url,
    }));
    let stand_in = schedule_run(options, store, proxy, sim_base, "stand-in").await;
    proxy.stand_in(None);
    drain.abort();
    Ok(json!({
        "seededConnections": seeded,
        "capturedItems": proxy.captured(),
        "tenants": first_tenants + rest_tenants,
        "seedMs": seed_ms,
        "moto": {"connections": first_tenants * per_tenant, "run": on_moto.map_err(|e| format!("{e:#}")).unwrap_or_else(|e| json!({"error": e}))},
        "standIn": stand_in?,
    }))
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default();
    let memory_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(str::to_owned))
        .unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "memory": memory_kb,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "arch": std::env::consts::ARCH,
    })
}

/// The whole run.
pub async fn run(options: RunOptions) -> Result<Measurements> {
    let started = Instant::now();
    std::fs::create_dir_all(options.out.join("logs"))?;
    let mut m = Measurements {
        machine: machine(),
        ..Measurements::default()
    };
    let page_size = mail_sync::MailSettings::default().page_size;
    m.settings = json!({
        "seed": SEED, "smallMailbox": options.small, "largeMailbox": options.large,
        "matchRatio": world::MATCH_RATIO, "latencyMs": options.latency_ms,
        "mailboxConcurrency": MAILBOX_CONCURRENCY, "pageSize": page_size,
        "listSelect": mail_sync::page::LIST_SELECT, "crmAddresses": CRM_ADDRESSES, "crmDomains": CRM_DOMAINS,
        "connections": options.connections, "motoConnections": options.moto_connections,
        "coldRuns": options.cold_runs,
    });

    // ---- set-up
    progress("set-up: moto and the template's resources");
    let t = Instant::now();
    let mut store = Store::new(local_stack::test_stack().await?);
    let mut cold_store = Store::new(local_stack::test_stack().await?);
    for s in [&mut store, &mut cold_store] {
        if let Some(note) = crate::notifications::ensure_subscription_resources(s).await?
            && !m.notes.contains(&note)
        {
            m.notes.push(note);
        }
    }
    let proxy = AwsProxy::start(&store.stack.endpoint).await?;
    let moto_ms = ms(t.elapsed());
    let tenant =
        TenantId::parse(&uuid::Uuid::new_v4().to_string()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let small = MailboxUser::new("avery", options.small);
    let large = MailboxUser::new("blake", options.large);
    // No generated mail: its job only brings the tenant's CRM index into the container.
    let warm_up = MailboxUser::new("casey", 0);
    // The change-notification user: a small Inbox, so its first import is short.
    let notified = MailboxUser::new("dana", NOTIFIED_MAILBOX);
    progress("set-up: microsoft-sim with generated mailboxes");
    let t = Instant::now();
    let sim = world::start_sim(&world::world_json(
        tenant.as_str(),
        &[
            small.clone(),
            large.clone(),
            warm_up.clone(),
            notified.clone(),
        ],
        SEED,
    ))
    .await?;
    let sim_ms = ms(t.elapsed());
    let base = sim.base_url();
    let http = reqwest::Client::new();
    let crm = crm_file(&tenant, SEED, 400);
    let crm_path = options.out.join("crm.json");
    std::fs::write(&crm_path, serde_json::to_vec(&crm)?)?;
    let snapshot = crm_snapshot(&crm)?;
    progress("set-up: CRM import, tenant, signed-in users");
    let t = Instant::now();
    for s in [&store, &cold_store] {
        s.put_client_secret(world::CLIENT_SECRET).await?;
    }
    store.put_tenant(&tenant, &[TENANT_DOMAIN]).await?;
    store.import_crm(&snapshot).await?;
    for user in [&small, &large, &warm_up, &notified] {
        let tokens = world::sign_in_user(&base, tenant.as_str(), &user.upn).await?;
        let user_id = UserId::parse(&user.id).map_err(|e| anyhow::anyhow!("{e}"))?;
        store
            .connect(
                &tenant,
                &user_id,
                &user.upn,
                tokens.refresh_token.context("a refresh token")?,
                &tokens.scope,
            )
            .await?;
    }
    m.setup =
        json!({"motoAndStacksMs": moto_ms, "simStartMs": sim_ms, "storeSeedMs": ms(t.elapsed())});
    world::control(
        &http,
        &base,
        reqwest::Method::POST,
        "/_sim/latency",
        Some(json!({"ms": options.latency_ms})),
    )
    .await?;

    // ---- cold starts (on the empty stack) and Python's import
    if options.runs("cold") {
        m.cold_starts = cold_starts(&options, &cold_store, &proxy, &base).await?;
        progress("cold import of boto3 + msal");
        m.python_import = python_import(&options).await?;
    }
    proxy.take();

    // ---- side by side: the same folder, the same $select and page size, the same CRM
    let path = format!(
        "/me/mailFolders/inbox/messages/delta?$select={}",
        mail_sync::page::LIST_SELECT
    );
    let listed_users: &[&MailboxUser] = if options.runs("listings") {
        &[&small, &large]
    } else {
        &[]
    };
    for user in listed_users {
        let tokens = world::sign_in_user(&base, tenant.as_str(), &user.upn).await?;
        let spec = ListingSpec {
            graph_base: base.clone(),
            path: path.clone(),
            page_size,
            crm: crm_path.clone(),
            owner: user.upn.clone(),
            tenant_domain: TENANT_DOMAIN.into(),
        };
        for client in ["rust", "python-requests", "python-msgraph-sdk"] {
            if client == "python-msgraph-sdk" && (!options.sdk || user.messages != small.messages) {
                m.listings.push(ListingRun {
                    mailbox: user.messages,
                    report: None,
                    skipped: Some(format!(
                        "{client}: only the {}-message mailbox (its CPU per message would make this one take many minutes)",
                        small.messages
                    )),
                });
                continue;
            }
            progress(&format!("listing {} messages with {client}", user.messages));
            let report = listing(&options, client, &spec, &tokens.access_token).await?;
            m.listings.push(ListingRun {
                mailbox: user.messages,
                report: Some(report),
                skipped: None,
            });
        }
        let mut wire = wire_bytes(&base, &path, page_size, &tokens.access_token).await?;
        wire["mailbox"] = json!(user.messages);
        m.wire.push(wire);
    }
    let consistent: BTreeSet<(u64, u64, u64)> = m
        .listings
        .iter()
        .filter_map(|l| l.report.as_ref().map(|r| (l.mailbox, r.listed, r.matched)))
        .collect();
    let mailboxes: BTreeSet<u64> = consistent.iter().map(|c| c.0).collect();
    if consistent.len() != mailboxes.len() {
        m.notes.push(format!(
            "the listing clients disagree on listed/matched counts: {consistent:?}"
        ));
    }

    // ---- imports through the real worker, then the unchanged mailbox
    let (_, since) = sim_requests(&http, &base, 0).await?;
    let mut ctx = ImportContext {
        options: &options,
        store: &store,
        proxy: &proxy,
        http: &http,
        sim_base: &base,
        tenant: &tenant,
        crm: &crm,
        since,
    };
    // Outlook allows an app 10,000 requests per mailbox in 10 minutes; the large import needs
    // about twice that (one request per fetched match), and the worker would park the
    // mailbox until the budget refills. Measure the import itself: lift the budget, and
    // report the bound it sets at Microsoft.
    let throttle =
        world::control(&http, &base, reqwest::Method::GET, "/_sim/throttle", None).await?;
    world::control(
        &http,
        &base,
        reqwest::Method::POST,
        "/_sim/throttle",
        Some(json!({"budget": 10_000_000})),
    )
    .await?;
    m.outlook_budget = throttle;
    // `crm-changes` measures right after the large mailbox's import, in the same process:
    // without `imports` it imports that mailbox alone.
    let imported: &[&MailboxUser] = if options.runs("imports") {
        &[&small, &large]
    } else if options.runs("crm-changes") {
        &[&large]
    } else {
        &[]
    };
    if !imported.is_empty() {
        let (warm_up, runs, crm_changes) = imports(&mut ctx, &warm_up, imported).await?;
        m.import_warm_up = warm_up;
        m.imports = runs;
        m.crm_changes = crm_changes;
    }

    // ---- fan-out
    if options.runs("fan-out") {
        m.fan_out = fan_out(&options, &store, &proxy, &base).await?;
    }

    // ---- change notifications
    if options.runs("notifications") {
        m.notifications = crate::notifications::run(&NotifyContext {
            options: &options,
            notify: &options.notify,
            store: &store,
            http: &http,
            sim_base: &base,
            tenant: &tenant,
            user: &notified,
        })
        .await?;
    }

    sim.shutdown().await;
    m.total_seconds = started.elapsed().as_secs_f64();
    Ok(m)
}
