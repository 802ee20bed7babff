//! The demo journey (issue 8): the whole product on the local stack, driven headlessly.
//!
//! The stack is `local-stack up` (moto with the template's resources, microsoft-sim with the
//! demo world, the functions under `cargo lambda watch`, the template's SQS event source
//! mappings) with schedules off, so that this driver fires exactly one round. The journey goes
//! over HTTP through the connector's real pages and the sim's authorize endpoints (the sim in
//! auto-approve answers its pages as a user would), then through the queues. Every step is
//! asserted; [`run`] returns the report or the first step that did not do what it says.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use local_stack::repo_root;
use local_stack::stack::StackInfo;
use serde_json::{Value, json};

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where `local-stack up` keeps its state (logs, env files, world).
    pub state_dir: PathBuf,
    pub world: PathBuf,
    pub crm: PathBuf,
    /// Overrides the `messages` of every `generate` entry of the world (the reduced test).
    pub messages_per_folder: Option<u64>,
    /// `cargo build` the binaries first (the test; `make demo` builds before).
    pub build: bool,
    /// Leave the stack running afterwards.
    pub keep: bool,
    /// The feature bundles consented for the first tenant and asked for at sign-in in the
    /// second (`all`, or some of `calendar`, `mail`, `teams`).
    pub bundles: Vec<String>,
    /// `DefaultFeatures`: what users of a tenant the connector does not know yet are asked
    /// for at sign-in (the second tenant's first sign-ins).
    pub sign_in_features: String,
    /// How long each wait for the queues to drain may take.
    pub drain_timeout: Duration,
}

impl Options {
    pub fn new(state_dir: PathBuf) -> Self {
        let root = repo_root();
        Self {
            state_dir,
            world: root.join("infra/local/worlds/demo.json"),
            crm: root.join("infra/local/demo/crm.json"),
            messages_per_folder: None,
            build: false,
            keep: false,
            bundles: vec!["all".into()],
            sign_in_features: "all".into(),
            drain_timeout: Duration::from_secs(600),
        }
    }
}

/// One line of the report per user.
#[derive(Debug, Clone)]
pub struct UserReport {
    pub tenant: String,
    pub upn: String,
    pub status: String,
    pub scanned: u64,
    pub stored: u64,
    pub discarded: u64,
    pub meetings: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub steps: Vec<String>,
    pub users: Vec<UserReport>,
    pub teams_message_url: String,
    pub consent_page: String,
    /// What the platform's queue received from the connector's bus: count per detail-type.
    pub events: std::collections::BTreeMap<String, u64>,
    /// One received event per detail-type.
    pub event_examples: Vec<String>,
    /// The administrator's view and a user's settings page as the demo saw them.
    pub portal_pages: Vec<PathBuf>,
}

impl Report {
    fn step(&mut self, text: impl Into<String>) {
        let text = text.into();
        println!("  ok  {text}");
        self.steps.push(text);
    }

    pub fn render(&self) -> String {
        let mut out = String::from("\n== office365-connector demo: report ==\n\nsteps:\n");
        for s in &self.steps {
            out += &format!("  ok  {s}\n");
        }
        out += &format!(
            "\n{:<10} {:<22} {:<12} {:>8} {:>7} {:>9} {:>9}\n",
            "TENANT", "USER", "STATUS", "SCANNED", "STORED", "DISCARDED", "MEETINGS"
        );
        for u in &self.users {
            out += &format!(
                "{:<10} {:<22} {:<12} {:>8} {:>7} {:>9} {:>9}\n",
                u.tenant, u.upn, u.status, u.scanned, u.stored, u.discarded, u.meetings
            );
        }
        if !self.events.is_empty() {
            out += "\nevents the platform received on its queues (a rule per event type on the connector's bus):\n";
            for (kind, n) in &self.events {
                out += &format!("  {kind:<24} {n:>6}\n");
            }
            out += "  one of each (ids and metadata only):\n";
            for e in &self.event_examples {
                out += &format!("    {e}\n");
            }
        }
        for p in &self.portal_pages {
            out += &format!("\npage saved: {}", p.display());
        }
        out += &format!(
            "\nTeams message posted: {}\n\nTo click through the consent pages yourself in a browser, keep a stack running:\n  make up      (the demo world; microsoft-sim serves its real sign-in and consent pages)\n  then open the consent page it prints (this run's was {}), and `make down` to stop it.\n",
            self.teams_message_url, self.consent_page
        );
        out
    }
}

/// Stops the stack when the journey ends, however it ends.
struct StackGuard {
    state_dir: PathBuf,
    keep: bool,
}

impl Drop for StackGuard {
    fn drop(&mut self) {
        if !self.keep {
            let _ = Command::new(bin("local-stack"))
                .arg("down")
                .arg("--state-dir")
                .arg(&self.state_dir)
                .status();
        }
    }
}

fn bin(name: &str) -> PathBuf {
    repo_root().join("target/debug").join(name)
}

const BINARIES: &[&str] = &[
    "local-stack",
    "microsoft-sim",
    "connectorctl",
    "consent-callback",
    "mail-sync",
    "calendar-sync",
    "teams-post",
    "event-publisher",
    "subscriptions",
];

fn build() -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root()).args(["build", "--locked"]);
    for b in BINARIES {
        cmd.args(["-p", b]);
    }
    ensure!(cmd.status()?.success(), "cargo build failed");
    Ok(())
}

/// The world the stack runs, written under the state dir.
fn world(opts: &Options, dir: &Path) -> Result<(PathBuf, Value)> {
    let mut world: Value = serde_json::from_str(&std::fs::read_to_string(&opts.world)?)
        .with_context(|| format!("parsing {}", opts.world.display()))?;
    if let Some(n) = opts.messages_per_folder {
        for tenant in world["tenants"].as_array_mut().into_iter().flatten() {
            for g in tenant["generate"].as_array_mut().into_iter().flatten() {
                g["messages"] = json!(n);
            }
        }
    }
    let path = dir.join("demo-world.json");
    std::fs::write(&path, serde_json::to_string_pretty(&world)?)?;
    Ok((path, world))
}

/// The tenant's CRM file: the snapshot the sim's generated mail of `seed` was drawn against,
/// merged with the hand-written accounts of `crm.json`, with an open opportunity old enough
/// that the first import's window covers the generated year.
fn crm_file(hand: &Value, tenant_id: &str, seed: u64) -> Value {
    let generated = microsoft_sim::generate::crm_snapshot(seed);
    let mut accounts = hand["accounts"].as_array().cloned().unwrap_or_default();
    let mut contacts = hand["contacts"].as_array().cloned().unwrap_or_default();
    let mut leads = hand["leads"].as_array().cloned().unwrap_or_default();
    for (n, a) in generated.accounts.iter().enumerate() {
        let id = format!("001G{n:05}");
        accounts.push(json!({"id": id, "name": a.name, "domains": [a.domain]}));
        for (p, c) in a.contacts.iter().enumerate() {
            contacts
                .push(json!({"id": format!("003G{n:05}{p}"), "email": c.address, "accountId": id}));
        }
    }
    for (k, l) in generated.leads.iter().enumerate() {
        leads.push(json!({"id": format!("00QG{k:05}"), "email": l.address}));
    }
    let created = (time::OffsetDateTime::now_utc() - time::Duration::days(400)).date();
    json!({"tenantId": tenant_id, "accounts": accounts, "contacts": contacts, "leads": leads,
           "opportunities": [{"id": "006G00001", "accountId": "001G00000", "isClosed": false,
                              "createdDate": created.to_string()}]})
}

fn tool_env(info: &StackInfo) -> Vec<(String, String)> {
    let mut env = local_stack::aws_env(&info.aws_endpoint);
    env.extend(info.functions_env.clone());
    env
}

fn connectorctl(info: &StackInfo, args: &[&str]) -> Result<String> {
    let out = Command::new(bin("connectorctl"))
        .args(args)
        .envs(tool_env(info))
        .output()
        .context("running connectorctl")?;
    ensure!(
        out.status.success(),
        "connectorctl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// A browser: a cookie jar keyed by host:port (the connector and the sim share 127.0.0.1),
/// redirects followed by hand so that the journey stops at the app's URL.
struct Browser {
    http: reqwest::Client,
    jar: BTreeMap<String, BTreeMap<String, String>>,
}

/// Where a navigation ended.
struct Landing {
    url: String,
    status: u16,
    body: String,
}

impl Browser {
    fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(300))
                .build()
                .expect("a plain client builds"),
            jar: BTreeMap::new(),
        }
    }

    fn origin(url: &url::Url) -> String {
        format!(
            "{}:{}",
            url.host_str().unwrap_or(""),
            url.port_or_known_default().unwrap_or(0)
        )
    }

    /// Follows redirects from `start` until a page answers, or until a URL under `stop_at`.
    async fn navigate(&mut self, start: &str, stop_at: &str) -> Result<Landing> {
        let mut url = url::Url::parse(start)?;
        for _ in 0..20 {
            if url.as_str().starts_with(stop_at) {
                return Ok(Landing {
                    url: url.to_string(),
                    status: 302,
                    body: String::new(),
                });
            }
            let origin = Self::origin(&url);
            let cookies = self.jar.get(&origin).map(|c| {
                c.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            });
            let mut req = self.http.get(url.clone());
            if let Some(c) = cookies.filter(|c| !c.is_empty()) {
                req = req.header("cookie", c);
            }
            let resp = req.send().await.with_context(|| format!("GET {url}"))?;
            for v in resp.headers().get_all("set-cookie") {
                let v = v.to_str().unwrap_or("");
                if let Some((name, value)) = v.split(';').next().and_then(|p| p.split_once('=')) {
                    self.jar
                        .entry(origin.clone())
                        .or_default()
                        .insert(name.trim().into(), value.into());
                }
            }
            let status = resp.status().as_u16();
            if resp.status().is_redirection() {
                let location = resp
                    .headers()
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    .ok_or_else(|| anyhow!("{status} without Location from {url}"))?;
                url = url.join(location)?;
                continue;
            }
            let body = resp.text().await?;
            return Ok(Landing {
                url: url.to_string(),
                status,
                body,
            });
        }
        bail!("more than 20 redirects from {start}")
    }
}

/// Signs `upn` in through `/auth/login` in a fresh browser; where it ended.
async fn sign_in(info: &StackInfo, app_base: &str, upn: &str) -> Result<Landing> {
    let mut browser = Browser::new();
    browser
        .navigate(
            &format!("{}/auth/login?login_hint={upn}", info.public_base_url),
            app_base,
        )
        .await
}

/// Signs `upn` in at `{path}/login` in a fresh browser (Microsoft's account form pre-filled
/// by `login_hint`), follows the "Signed in" page to `path`, saves the page as
/// `{dir}/{path}.html` and returns its HTML.
async fn portal_page(
    info: &StackInfo,
    app_base: &str,
    path: &str,
    upn: &str,
    dir: &Path,
) -> Result<String> {
    let mut browser = Browser::new();
    let signed_in = browser
        .navigate(
            &format!("{}{path}/login?login_hint={upn}", info.public_base_url),
            app_base,
        )
        .await?;
    ensure!(
        signed_in.status == 200 && signed_in.url.contains("/auth/callback"),
        "{upn}'s sign-in for {path} ended at {} ({}): {}",
        signed_in.url,
        signed_in.status,
        excerpt(&signed_in.body)
    );
    let page = browser
        .navigate(&format!("{}{path}", info.public_base_url), app_base)
        .await?;
    ensure!(
        page.status == 200,
        "{upn} opening {path}: {} {}",
        page.status,
        excerpt(&page.body)
    );
    std::fs::write(
        dir.join(format!("{}.html", path.trim_start_matches('/'))),
        &page.body,
    )?;
    Ok(page.body)
}

/// Messages in `queue` that are waiting or in flight.
async fn queued(sqs: &aws_sdk_sqs::Client, queue: &str) -> Result<u64> {
    let attributes = local_stack::esm::queue_attributes(sqs, queue).await?;
    Ok([
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
    ]
    .iter()
    .chain(std::iter::once(&"ApproximateNumberOfMessagesDelayed"))
    .filter_map(|name| attributes.get(*name)?.parse::<u64>().ok())
    .sum())
}

async fn sim_post(info: &StackInfo, path: &str, body: Value) -> Result<()> {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", info.microsoft_sim_url))
        .json(&body)
        .send()
        .await?;
    ensure!(resp.status().is_success(), "POST {path}: {}", resp.status());
    Ok(())
}

async fn sim_get(info: &StackInfo, path: &str) -> Result<Value> {
    let resp = reqwest::get(format!("{}{path}", info.microsoft_sim_url)).await?;
    ensure!(resp.status().is_success(), "GET {path}: {}", resp.status());
    Ok(resp.json().await?)
}

/// Waits until every queue of the stack is empty (nothing visible, nothing in flight) for
/// three polls in a row; fails if any dead-letter queue has received something.
async fn drain(info: &StackInfo, sqs: &aws_sdk_sqs::Client, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let queues: Vec<String> = info
        .wiring
        .mappings
        .iter()
        .map(|m| m.queue_url.clone())
        .collect();
    let mut quiet = 0;
    let mut polls = 0u64;
    while quiet < 3 {
        ensure!(
            Instant::now() < deadline,
            "queues not drained after {timeout:?}"
        );
        let mut total = 0;
        for q in &queues {
            total += queued(sqs, q).await?;
        }
        quiet = if total == 0 { quiet + 1 } else { 0 };
        polls += 1;
        if polls.is_multiple_of(30) {
            println!("      ... {total} message(s) still queued or in flight");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Each source queue's dead-letter queue, from its redrive policy (as AWS configures it).
    for q in &queues {
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(q)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy)
            .send()
            .await?;
        let Some(policy) = attrs
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy))
        else {
            continue;
        };
        let policy: Value = serde_json::from_str(policy)?;
        let Some(dlq_name) = policy["deadLetterTargetArn"]
            .as_str()
            .and_then(|arn| arn.rsplit(':').next())
        else {
            continue;
        };
        let dlq = sqs.get_queue_url().queue_name(dlq_name).send().await?;
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(dlq.queue_url().unwrap_or_default())
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await?;
        let n = attrs
            .attributes()
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            })
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        ensure!(n == 0, "dead-letter queue {dlq_name} holds {n} message(s)");
    }
    Ok(())
}

struct DemoUser {
    tenant_id: String,
    tenant_name: String,
    upn: String,
    id: String,
    admin: bool,
}

fn users(world: &Value) -> Vec<DemoUser> {
    let mut out = Vec::new();
    for t in world["tenants"].as_array().into_iter().flatten() {
        for u in t["users"].as_array().into_iter().flatten() {
            out.push(DemoUser {
                tenant_id: t["id"].as_str().unwrap_or_default().into(),
                tenant_name: t["displayName"].as_str().unwrap_or_default().into(),
                upn: u["userPrincipalName"].as_str().unwrap_or_default().into(),
                id: u["id"].as_str().unwrap_or_default().into(),
                admin: u["roles"].as_array().is_some_and(|r| !r.is_empty()),
            });
        }
    }
    out
}

/// Runs the whole journey. The stack is stopped afterwards unless `keep`.
pub async fn run(opts: &Options) -> Result<Report> {
    if opts.build {
        build()?;
    }
    std::fs::create_dir_all(&opts.state_dir)?;
    let dir = opts.state_dir.canonicalize()?;
    if dir.join("pids").exists() {
        // A previous demo left its stack behind (interrupted): stop it first.
        let _ = Command::new(bin("local-stack"))
            .arg("down")
            .arg("--state-dir")
            .arg(&dir)
            .status();
    }
    let (world_path, world) = world(opts, &dir)?;
    let tenants: Vec<Value> = world["tenants"].as_array().cloned().unwrap_or_default();
    ensure!(tenants.len() == 2, "the demo world needs two tenants");
    let mut report = Report::default();

    println!("starting the local stack (moto, microsoft-sim, cargo lambda watch, SQS sources)...");
    let status = Command::new(bin("local-stack"))
        .current_dir(repo_root())
        .args([
            "up",
            "--auto-approve",
            "--no-schedules",
            "--no-build",
            "--stack-name",
            "o365-demo",
        ])
        .arg("--state-dir")
        .arg(&dir)
        .arg("--world")
        .arg(&world_path)
        .arg("--param")
        .arg(format!("DefaultFeatures={}", opts.sign_in_features))
        .status()
        .context("running local-stack up")?;
    let _guard = StackGuard {
        state_dir: dir.clone(),
        keep: opts.keep,
    };
    ensure!(
        status.success(),
        "local-stack up failed (logs in {})",
        dir.display()
    );
    let info = StackInfo::load(&dir)?;
    report.consent_page = format!("{}/consent", info.public_base_url);
    let app_base = info
        .functions_env
        .get("APP_BASE_URL")
        .cloned()
        .ok_or_else(|| anyhow!("no APP_BASE_URL in the functions' environment"))?;
    let sdk = info.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    // cargo lambda watch starts a function with `cargo run` on its first request: in a
    // checkout where cargo has something to rebuild that takes a while, so the HTTP function
    // is warmed up once, with a generous bound, before the journey's timeouts apply.
    let warm = reqwest::Client::builder()
        .timeout(Duration::from_secs(900))
        .build()?;
    let health = warm
        .get(format!("{}/healthz", info.public_base_url))
        .send()
        .await?;
    ensure!(
        health.status().is_success(),
        "consent-callback /healthz: {}",
        health.status()
    );
    report.step(
        "stack up: moto + template resources, microsoft-sim, the template's functions under cargo lambda watch",
    );

    // The platform subscribes to the connector's bus (a rule to its queue) before anything
    // happens; the stream publisher reads from the streams' start anyway.
    let bus = info
        .functions_env
        .get("EVENT_BUS_NAME")
        .cloned()
        .ok_or_else(|| anyhow!("no EVENT_BUS_NAME in the functions' environment"))?;
    // One queue per detail-type: the counts are then the queues' sizes, where reading
    // thousands of events one receive at a time from moto took minutes.
    let mut platform_queues = Vec::new();
    for kind in event_publisher::DETAIL_TYPES {
        let pattern = json!({"source": [event_publisher::SOURCE], "detail-type": [kind]});
        let name = format!("o365-demo-platform-{kind}");
        let url = local_stack::streams::subscribe_queue_to(&sdk, &bus, &pattern, &name).await?;
        platform_queues.push((kind, url));
    }
    report.step(format!(
        "the platform subscribed a queue per event type to the bus {bus}"
    ));

    // CRM snapshots, one per tenant.
    let hand: Value = serde_json::from_str(&std::fs::read_to_string(&opts.crm)?)
        .with_context(|| format!("parsing {}", opts.crm.display()))?;
    for t in &tenants {
        let id = t["id"].as_str().unwrap_or_default();
        let seed = t["generate"][0]["seed"].as_u64().unwrap_or(7);
        let path = dir.join(format!("crm-{id}.json"));
        std::fs::write(&path, serde_json::to_string(&crm_file(&hand, id, seed))?)?;
        connectorctl(
            &info,
            &["crm", "import", path.to_str().expect("utf-8 path")],
        )?;
        report.step(format!(
            "CRM snapshot imported for {} (connectorctl crm import)",
            t["displayName"].as_str().unwrap_or(id)
        ));
    }

    let people = users(&world);
    let (first, second) = (&tenants[0], &tenants[1]);
    let t1 = first["id"].as_str().unwrap_or_default();
    let t2 = second["id"].as_str().unwrap_or_default();

    // Admin consent for the first tenant through /consent/admin, one flow per bundle
    // (grants accumulate).
    let mut admin_browser = Browser::new();
    for bundle in &opts.bundles {
        let consent = admin_browser
            .navigate(
                &format!(
                    "{}/consent/admin?bundle={bundle}&tenant={t1}",
                    info.public_base_url
                ),
                &app_base,
            )
            .await?;
        ensure!(
            // Microsoft's redirect continues into the administrator's verification sign-in;
            // the consent is recorded (and this page shown) at its callback.
            consent.status == 200
                && consent.url.contains("/auth/callback")
                && consent.body.contains("Consent granted"),
            "admin consent ({bundle}) for {t1} did not land on the connector's success page ({} {}): {}",
            consent.status,
            consent.url,
            excerpt(&consent.body)
        );
    }
    let grants = sim_get(&info, &format!("/_sim/tenants/{t1}/grants")).await?;
    ensure!(
        grants["grants"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g["principal"] == "allUsers")),
        "no tenant-wide grant in {t1} after admin consent: {grants}"
    );
    report.step(format!(
        "admin consent for {} (recorded only after the administrator's own sign-in proved the tenant and a consent-granting directory role)",
        name(first)
    ));

    // Second tenant: a user needs admin approval, requests it, the admin approves.
    let requester = people
        .iter()
        .find(|u| u.tenant_id == t2 && !u.admin)
        .ok_or_else(|| anyhow!("the second tenant needs a non-admin user"))?;
    let landing = sign_in(&info, &app_base, &requester.upn).await?;
    ensure!(
        !landing.url.starts_with(&app_base) && landing.body.contains("9009"),
        "{} was not asked for admin approval ({} {}): {}",
        requester.upn,
        landing.status,
        landing.url,
        excerpt(&landing.body)
    );
    let requests = sim_get(&info, "/_sim/consent-requests").await?;
    let request = requests
        .as_array()
        .or_else(|| requests["value"].as_array())
        .and_then(|rs| {
            rs.iter()
                .find(|r| r["tenantId"] == t2 && r["status"] == "pending")
                .cloned()
        })
        .ok_or_else(|| anyhow!("no pending consent request for {t2}: {requests}"))?;
    report.step(format!(
        "{}: \"Need admin approval\" -> approval requested",
        requester.upn
    ));
    let id = request["id"].as_str().unwrap_or_default();
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/_sim/consent-requests/{id}/approve",
            info.microsoft_sim_url
        ))
        .send()
        .await?;
    ensure!(
        resp.status().is_success(),
        "approving consent request {id}: {}",
        resp.status()
    );
    report.step(format!(
        "{} admin approved the request (admin consent workflow)",
        name(second)
    ));

    // Sign-ins: every user of both tenants reaches the app, the requester first.
    let order = std::iter::once(requester).chain(people.iter().filter(|u| u.upn != requester.upn));
    // Entra never echoes offline_access in a token response's `scope`, and `scope` is
    // optional: the first tenant's users get the former, the second's the latter. Both must
    // become active connections with their first imports queued.
    for u in order {
        let (mode, shape) = if u.tenant_id == t1 {
            ("echo", "scope without offline_access")
        } else {
            ("omit", "no scope at all")
        };
        sim_post(&info, "/_sim/token-scope", json!({ "mode": mode })).await?;
        let landing = sign_in(&info, &app_base, &u.upn).await?;
        ensure!(
            landing.url.starts_with(&app_base),
            "sign-in of {} ended at {} ({}): {}",
            u.upn,
            landing.url,
            landing.status,
            excerpt(&landing.body)
        );
        report.step(format!("{} signed in (token response: {shape})", u.upn));
    }
    let started = Instant::now();
    drain(&info, &sqs, opts.drain_timeout).await?;
    report.step(format!(
        "first imports queued at sign-in done ({}s)",
        started.elapsed().as_secs()
    ));

    // One scheduled round: the schedules fire once, fan-out -> SQS -> workers.
    let invoker = info.invoker();
    for target in &info.wiring.schedules {
        let outcome = local_stack::scheduler::fire_now(&invoker, target).await?;
        ensure!(
            outcome.is_ok(),
            "{} fan-out failed: {outcome:?}",
            target.rule_name
        );
        let did = match &outcome {
            local_stack::Outcome::Ok(value) if value.get("enqueued").is_some() => format!(
                "fan-out: {} jobs, {} users left to their change notifications",
                value["enqueued"], value["subscribed"]
            ),
            local_stack::Outcome::Ok(value) if value.get("decided").is_some() => format!(
                "consent tick: {} requests, {} decisions due",
                value["requested"], value["decided"]
            ),
            local_stack::Outcome::Ok(value) if value.get("renewed").is_some() => format!(
                "renewal pass: {} connections, {} subscriptions renewed (none due yet)",
                value["scanned"], value["renewed"]
            ),
            _ => "run".to_owned(),
        };
        report.step(format!(
            "schedule {} fired once -> {} {did}",
            target.expression_text, target.binary
        ));
    }
    let started = Instant::now();
    drain(&info, &sqs, opts.drain_timeout).await?;
    report.step(format!(
        "mail and calendar queues drained, DLQs empty ({}s)",
        started.elapsed().as_secs()
    ));

    // Change notifications: every user got subscriptions after their first imports; a new
    // email from a CRM contact is stored through Graph's notification, with no schedule.
    let notified = people
        .iter()
        .find(|u| u.tenant_id == t1 && !u.admin)
        .ok_or_else(|| anyhow!("no user in the first tenant"))?;
    let subscriptions: Value = serde_json::from_str(&connectorctl(
        &info,
        &[
            "subscriptions",
            "--tenant",
            t1,
            "--user",
            &notified.id,
            "--json",
        ],
    )?)?;
    ensure!(
        subscriptions[0]["state"] == "healthy",
        "{} has no healthy mail subscription: {subscriptions}",
        notified.upn
    );
    let live = sim_get(&info, "/_sim/subscriptions").await?;
    let subscribed = live.as_array().map_or(0, Vec::len);
    report.step(format!(
        "change notifications: {subscribed} Graph subscriptions (mail and calendar of every user, created after their first imports); {}'s mail: {} ({})",
        notified.upn, subscriptions[0]["state"], subscriptions[0]["resource"]
    ));
    let contact = crm_file(
        &hand,
        t1,
        first["generate"][0]["seed"].as_u64().unwrap_or(7),
    )["contacts"][0]["email"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let subject = format!(
        "Renewal quote {}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let sent = Instant::now();
    sim_post(
        &info,
        &format!("/_sim/users/{}/messages", notified.upn),
        json!({"folder": "inbox", "message": {
            "subject": subject,
            "from": {"emailAddress": {"address": contact}},
            "toRecipients": [{"emailAddress": {"address": notified.upn}}],
        }}),
    )
    .await?;
    loop {
        ensure!(
            sent.elapsed() < Duration::from_secs(120),
            "the notified email was not stored within 2 minutes"
        );
        let stored = connectorctl(
            &info,
            &["activities", "--tenant", t1, "--user", &notified.id],
        )?;
        if stored.contains(&subject) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    report.step(format!(
        "a new email from CRM contact {contact} to {} was stored {:.1}s after it arrived, woken by Graph's change notification (no schedule fired)",
        notified.upn,
        sent.elapsed().as_secs_f64()
    ));
    drain(&info, &sqs, opts.drain_timeout).await?;

    // The CRM grows: an email from someone the CRM did not know was discarded when it
    // arrived; once a lead with that address is imported, the catch-up finds and stores it.
    let prospect = "new.prospect@fabrikam-prospect.example";
    let early = format!(
        "Introduction {}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    sim_post(
        &info,
        &format!("/_sim/users/{}/messages", notified.upn),
        json!({"folder": "inbox", "message": {
            "subject": early,
            "from": {"emailAddress": {"address": prospect}},
            "toRecipients": [{"emailAddress": {"address": notified.upn}}],
        }}),
    )
    .await?;
    // Its notification wakes a run, which discards it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    drain(&info, &sqs, opts.drain_timeout).await?;
    let activities = |info: &StackInfo| {
        connectorctl(
            info,
            &["activities", "--tenant", t1, "--user", &notified.id],
        )
    };
    ensure!(
        !activities(&info)?.contains(&early),
        "an email from outside the CRM was stored"
    );
    let mut grown = crm_file(
        &hand,
        t1,
        first["generate"][0]["seed"].as_u64().unwrap_or(7),
    );
    grown["leads"]
        .as_array_mut()
        .ok_or_else(|| anyhow!("leads"))?
        .push(json!({"id": "00QDEMO01", "email": prospect, "company": "Fabrikam Prospect"}));
    let path = dir.join(format!("crm-{t1}-v2.json"));
    std::fs::write(&path, serde_json::to_string(&grown)?)?;
    let imported = connectorctl(
        &info,
        &["crm", "import", path.to_str().expect("utf-8 path")],
    )?;
    let catch_up = imported
        .lines()
        .find(|line| line.starts_with("catch-up queued"))
        .ok_or_else(|| anyhow!("the import queued no catch-up: {imported}"))?
        .to_owned();
    let started = Instant::now();
    drain(&info, &sqs, opts.drain_timeout).await?;
    ensure!(
        activities(&info)?.contains(&early),
        "the catch-up did not store the new lead's earlier email"
    );
    report.step(format!(
        "the CRM grew by one lead ({prospect}): {catch_up}; its email to {}, discarded when it arrived, was stored by the catch-up ($search) within {}s",
        notified.upn,
        started.elapsed().as_secs()
    ));

    // Explicit Consent Mode: the administrator switches it on; a host writes a meeting
    // with the add-in's placeholder; calendar-sync creates its Teams meeting and writes
    // the consent link into the invite; one guest declines on the consent page and lands
    // on the meeting, the other never answers; the tick decides at the start - 60 s.
    consent_mode(&info, &sdk, &mut report, t1, notified, &sqs, opts).await?;

    // A Teams post through TeamsPostQueue.
    let poster = people
        .iter()
        .find(|u| u.tenant_id == t1 && u.admin)
        .ok_or_else(|| anyhow!("no admin in the first tenant"))?;
    let team = world["tenants"][0]["users"]
        .as_array()
        .and_then(|us| us.iter().find(|u| u["id"] == poster.id.as_str()))
        .map(|u| u["joinedTeams"][0].clone())
        .filter(|t| !t.is_null())
        .ok_or_else(|| anyhow!("{} has no team", poster.upn))?;
    let (team_id, channel_id) = (
        team["id"].as_str().unwrap_or_default().to_string(),
        team["channels"][0]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    );
    let marker = format!("demo-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let body = json!({"kind": "post", "idempotencyKey": marker, "tenantId": t1, "userId": poster.id,
                      "target": {"type": "channel", "teamId": team_id, "channelId": channel_id},
                      "html": format!("<p>Deal <b>Northwind renewal</b> won ({marker})</p>")});
    let queue = info
        .functions_env
        .get("TEAMS_POST_QUEUE_URL")
        .ok_or_else(|| anyhow!("no TEAMS_POST_QUEUE_URL"))?;
    sqs.send_message()
        .queue_url(queue)
        .message_body(body.to_string())
        .send()
        .await?;
    drain(&info, &sqs, opts.drain_timeout).await?;
    let posted = sim_get(&info, "/_sim/teams/messages").await?;
    let message = posted
        .as_array()
        .or_else(|| posted["value"].as_array())
        .and_then(|ms| {
            ms.iter()
                .find(|m| m["content"].as_str().is_some_and(|c| c.contains(&marker)))
                .cloned()
        })
        .ok_or_else(|| anyhow!("the Teams message {marker} is not in the sim"))?;
    report.teams_message_url = format!(
        "{}/v1.0/teams/{team_id}/channels/{}/messages/{}",
        info.microsoft_sim_url,
        url::form_urlencoded::byte_serialize(channel_id.as_bytes()).collect::<String>(),
        message["id"].as_str().unwrap_or_default()
    );
    report.step(format!(
        "Teams post by {} through TeamsPostQueue -> {}",
        poster.upn,
        team["displayName"].as_str().unwrap_or("team")
    ));

    // The figures, as the operator sees them.
    let status: Value = serde_json::from_str(&connectorctl(&info, &["status", "--json"])?)?;
    let rows = status.as_array().cloned().unwrap_or_default();
    let mut failures = Vec::new();
    for u in &people {
        let row = rows
            .iter()
            .find(|r| r["userId"] == u.id.as_str() || r["upn"] == u.upn.as_str());
        let Some(row) = row else {
            failures.push(format!("{}: no connection", u.upn));
            continue;
        };
        let total = |kind: &str, field: &str| row[kind]["totals"][field].as_u64().unwrap_or(0);
        let user = UserReport {
            tenant: u.tenant_name.clone(),
            upn: u.upn.clone(),
            status: row["status"].as_str().unwrap_or("?").to_string(),
            scanned: total("mail", "scanned"),
            stored: total("mail", "stored"),
            discarded: total("mail", "discarded"),
            meetings: total("calendar", "stored"),
        };
        if user.status != "active" {
            failures.push(format!("{}: status {}", u.upn, user.status));
        }
        if user.stored == 0 || user.scanned <= user.stored {
            failures.push(format!(
                "{}: mail scanned {} stored {}",
                u.upn, user.scanned, user.stored
            ));
        }
        let calendar = opts.bundles.iter().any(|b| b == "all" || b == "calendar");
        if calendar && user.meetings == 0 {
            failures.push(format!("{}: no meeting stored", u.upn));
        }
        report.users.push(user);
    }
    if !failures.is_empty() {
        println!("{}", report.render());
        bail!("per-user checks failed:\n  {}", failures.join("\n  "));
    }
    report.step("every user active with mail and meetings stored");

    // The administrator's sync view and a user's settings, as they open them in a browser.
    let admin_page = portal_page(&info, &app_base, "/admin", &poster.upn, &dir).await?;
    let theirs: Vec<&DemoUser> = people.iter().filter(|u| u.tenant_id == t1).collect();
    let missing: Vec<&str> = theirs
        .iter()
        .filter(|u| !admin_page.contains(u.upn.as_str()))
        .map(|u| u.upn.as_str())
        .collect();
    ensure!(
        missing.is_empty() && admin_page.contains("Teams sharing"),
        "the administrator's view of {} lacks {missing:?}: {}",
        name(first),
        excerpt(&admin_page)
    );
    let foreign: Vec<&str> = people
        .iter()
        .filter(|u| u.tenant_id != t1 && admin_page.contains(u.upn.as_str()))
        .map(|u| u.upn.as_str())
        .collect();
    ensure!(
        foreign.is_empty(),
        "the administrator's view of {} shows users of another tenant: {foreign:?}",
        name(first)
    );
    report.step(format!(
        "{} opened the administrator's sync view: {} connections of {} with their mail and calendar sync and the tenant's switches, nothing of {}",
        poster.upn,
        theirs.len(),
        name(first),
        name(second)
    ));
    let me_page = portal_page(&info, &app_base, "/me", &requester.upn, &dir).await?;
    ensure!(
        me_page.contains(requester.upn.as_str()) && me_page.contains("Disconnect"),
        "{}'s settings page does not show their connection: {}",
        requester.upn,
        excerpt(&me_page)
    );
    report.step(format!(
        "{} opened their settings (/me): their connection, its sync switches and disconnect",
        requester.upn
    ));
    report.portal_pages = vec![dir.join("admin.html"), dir.join("me.html")];

    // What the platform received from the connector's bus: each queue's size once it has
    // stopped growing (the publisher has caught up), and one event of each kind.
    let mut last = Vec::new();
    let mut steady = 0;
    let started = Instant::now();
    while steady < 3 {
        ensure!(
            started.elapsed() < opts.drain_timeout,
            "the platform's queues kept growing for {:?}",
            opts.drain_timeout
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut sizes = Vec::new();
        for (_, url) in &platform_queues {
            sizes.push(queued(&sqs, url).await?);
        }
        steady = if sizes == last { steady + 1 } else { 0 };
        last = sizes;
    }
    for ((kind, url), n) in platform_queues.iter().zip(&last) {
        if *n == 0 {
            continue;
        }
        report.events.insert((*kind).to_owned(), *n);
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(1)
            .send()
            .await?;
        if let Some(m) = out.messages().first() {
            let event: Value = serde_json::from_str(m.body().unwrap_or_default())?;
            report
                .event_examples
                .push(format!("{kind}: {}", event["detail"]));
        }
    }
    ensure!(
        report.events.get("ActivityImported").copied().unwrap_or(0) > 0
            && report.events.contains_key("SyncRunCompleted")
            && report.events.contains_key("ConnectionStatusChanged")
            && report.events.contains_key("ConsentRequestDue")
            && report.events.contains_key("RecordingDecision"),
        "the platform's queue is missing events: {:?}",
        report.events
    );
    report.step(format!(
        "the platform received {} events from the bus",
        report.events.values().sum::<u64>()
    ));
    Ok(report)
}

/// The Explicit Consent Mode step (see where it is called).
async fn consent_mode(
    info: &StackInfo,
    sdk: &aws_config::SdkConfig,
    report: &mut Report,
    tenant: &str,
    host: &DemoUser,
    sqs: &aws_sdk_sqs::Client,
    opts: &Options,
) -> Result<()> {
    use connector_core::adapters::dynamodb::DynamoConsentMeetingStore;
    use connector_core::domain::meeting_consent::{page_url, placeholder_url};
    use connector_core::domain::{TenantId, UserId, UserKey};
    use connector_core::ports::ConsentMeetingStore as _;
    connectorctl(
        info,
        &[
            "tenant-switches",
            "--tenant",
            tenant,
            "--explicit-consent",
            "on",
        ],
    )?;
    let public = info.public_base_url.trim_end_matches('/').to_owned();
    let placeholder = placeholder_url(&public);
    let start = time::OffsetDateTime::now_utc() + time::Duration::seconds(150);
    let utc = |at: time::OffsetDateTime| json!({"dateTime": at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default().trim_end_matches('Z'), "timeZone": "UTC"});
    let guests = [
        "ines@northwind-traders.example",
        "omar@northwind-traders.example",
    ];
    let body = format!(
        "<html><body><p>Pricing review with Northwind.</p><p><a href=\"{placeholder}\">Join the meeting</a></p></body></html>"
    );
    sim_post(
        info,
        &format!("/_sim/users/{}/events", host.upn),
        json!({
            "subject": "Northwind pricing review",
            "body": {"contentType": "html", "content": body},
            "start": utc(start),
            "end": utc(start + time::Duration::minutes(30)),
            "organizer": {"emailAddress": {"address": host.upn}},
            "attendees": guests.iter().map(|g| json!({"type": "required", "emailAddress": {"address": g}})).collect::<Vec<_>>(),
        }),
    )
    .await?;
    // The calendar's change notification wakes its sync.
    tokio::time::sleep(Duration::from_secs(5)).await;
    drain(info, sqs, opts.drain_timeout).await?;
    let store = DynamoConsentMeetingStore::new(
        aws_sdk_dynamodb::Client::new(sdk),
        info.functions_env
            .get("ACTIVITIES_TABLE")
            .cloned()
            .ok_or_else(|| anyhow!("no ACTIVITIES_TABLE"))?,
    );
    let owner = UserKey::new(TenantId::parse(tenant)?, UserId::parse(&host.id)?);
    let meetings = store.list_consent_meetings(&owner).await?;
    let meeting = meetings
        .iter()
        .find(|m| m.status.as_str() == "active")
        .ok_or_else(|| anyhow!("the placeholder meeting was not linked: {meetings:?}"))?
        .clone();
    let online = sim_get(info, &format!("/_sim/users/{}/online-meetings", host.upn)).await?;
    let created = online["value"].as_array().map_or(0, Vec::len);
    ensure!(created == 1, "{created} online meetings for one event");
    let join = meeting.join_url.clone().unwrap_or_default();
    report.step(format!(
        "explicit consent mode on: {}'s placeholder meeting got one Teams meeting and its consent link ({}), {} guests; the request to ask them was due at once (same day)",
        host.upn,
        page_url(&public, &meeting.link_token),
        meeting.guests.len()
    ));

    // The first guest declines on their own link and is forwarded to the meeting.
    let link = page_url(&public, &meeting.guests[0].token);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let page = client.get(&link).send().await?;
    let cookie = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.split(';').next().filter(|p| p.contains("o365m=")))
        .ok_or_else(|| anyhow!("the consent page set no CSRF cookie"))?
        .to_owned();
    let csrf = cookie
        .split_once('=')
        .map(|(_, v)| v.to_owned())
        .unwrap_or_default();
    let answered = client
        .post(&link)
        .header("cookie", &cookie)
        .header(
            "origin",
            url::Url::parse(&public)?.origin().ascii_serialization(),
        )
        .form(&[("csrf", csrf.as_str()), ("answer", "do_not_record")])
        .send()
        .await?;
    let location = answered
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    ensure!(
        answered.status().as_u16() == 303 && location == join,
        "the answer did not forward to the join URL: {} {location}",
        answered.status()
    );
    report.step(format!(
        "{} declined on the consent page and was forwarded to the Teams meeting ({join})",
        meeting.guests[0].address
    ));

    // The tick (every minute in AWS; here fired by hand once the decision is less than a
    // minute away): a decision due within its minute is waited for.
    let lead =
        meeting.decision_due_at() - time::OffsetDateTime::now_utc() - time::Duration::seconds(30);
    if lead.is_positive() {
        tokio::time::sleep(Duration::from_secs(lead.whole_seconds() as u64)).await;
    }
    let invoker = info.invoker();
    let mut decision = None;
    for _ in 0..3 {
        let outcome = local_stack::invoke::Invoker::invoke(
            &invoker,
            "calendar-sync",
            &json!({"task": "consent"}),
        )
        .await?;
        ensure!(outcome.is_ok(), "the consent tick failed: {outcome:?}");
        decision = store
            .get_consent_meeting(&owner, &meeting.event_id)
            .await?
            .and_then(|m| m.decision);
        if decision.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(20)).await;
    }
    let decision = decision.ok_or_else(|| anyhow!("no recording decision was made"))?;
    ensure!(
        !decision.record && decision.declined == [guests[0]] && decision.no_answer == [guests[1]],
        "unexpected decision {decision:?}"
    );
    report.step(format!(
        "at the start - 60 s the connector decided: do not record (declined {:?}, no answer {:?}); RecordingDecision goes to the platform",
        decision.declined, decision.no_answer
    ));
    Ok(())
}

fn name(t: &Value) -> &str {
    t["displayName"].as_str().unwrap_or("tenant")
}

fn excerpt(body: &str) -> String {
    body.chars().take(400).collect()
}
