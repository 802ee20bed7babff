//! The whole local stack, for `make up` / `make down`: moto with the template's
//! resources, microsoft-sim with a world, the functions under `cargo lambda watch`, and a
//! `local-stack plumbing` process running the template's schedules and SQS event source
//! mappings against them. Everything binds 127.0.0.1 on a free port and runs detached in
//! its own process group; `.local/pids` records the groups, `down` stops them.
//!
//! How the functions get their configuration: `cargo lambda watch` passes its own
//! environment to every function it starts and adds `--env-file` (KEY=VALUE lines) on top,
//! for every function alike (per-function variables would need
//! `[package.metadata.lambda.watch.env]` in each function's Cargo.toml, which would
//! duplicate the template). So `up` starts watch with a cleared environment (PATH and the
//! Rust toolchain's variables only, so nothing of the caller's AWS profile leaks in) and
//! one env file: the standard AWS variables pointing at moto, plus every function's
//! template environment (Globals overlaid with its own variables) resolved against the
//! stack, with `LoginBaseUrl`/`GraphBaseUrl` = microsoft-sim, `PublicBaseUrl` = the watch
//! server's function-URL path of the HTTP function, and `EntraClientId` /
//! `EntraClientSecretValue` = an app of the world (its secret lands in the ClientSecret
//! secret, where the functions read it). Two functions declaring one variable with
//! different values is refused, since one file serves all.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::functions::{EventKind, FunctionSpec};
use crate::plumbing::Wiring;
use crate::provision::Provisioned;
use crate::{
    Lifetime, Moto, Template, aws_env, free_port, provision, repo_root, venv_tool, wait_for_port,
};

/// Options of `local-stack up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub state_dir: PathBuf,
    pub stack_name: String,
    pub template: PathBuf,
    /// The microsoft-sim world; default [`default_world`].
    pub world: Option<PathBuf>,
    /// Start microsoft-sim with `--auto-approve` (headless runs).
    pub auto_approve: bool,
    /// Schedules run this many times faster than real time.
    pub time_factor: f64,
    /// Run the schedules in the plumbing (off: only `local-stack fire` fires them).
    pub schedules: bool,
    /// Template parameter overrides (win over what `up` derives).
    pub params: BTreeMap<String, String>,
    /// `cargo build` the functions' binaries before starting watch.
    pub build: bool,
    /// The `local-stack` binary, started again as the plumbing process.
    pub local_stack_exe: PathBuf,
}

/// What `up` started, written to `<state-dir>/stack.json` for `plumbing`, `fire`, `down`
/// and drivers (the demo).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StackInfo {
    pub stack_name: String,
    pub template: PathBuf,
    pub aws_endpoint: String,
    pub microsoft_sim_url: String,
    pub world: PathBuf,
    pub lambda_watch_url: String,
    /// `PUBLIC_BASE_URL`: where the HTTP function answers (consent pages, callbacks).
    pub public_base_url: String,
    pub client_id: String,
    /// KEY=VALUE file given to `cargo lambda watch --env-file`.
    pub functions_env_file: PathBuf,
    /// `export` lines for tools (`source .local/env`).
    pub env_file: PathBuf,
    /// Resolved environment of the functions (without AWS credentials).
    pub functions_env: BTreeMap<String, String>,
    /// The longest function timeout, seconds.
    pub max_timeout_secs: u64,
    pub wiring: Wiring,
    pub time_factor: f64,
    pub schedules: bool,
    pub processes: Vec<ProcessInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub name: String,
    /// Also the process group id: each runs in a group of its own.
    pub pid: u32,
    pub log: PathBuf,
}

impl StackInfo {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("stack.json")
    }

    pub fn load(state_dir: &Path) -> Result<Self> {
        let path = Self::path(state_dir);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (is the stack up? `make up`)", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    fn save(&self, state_dir: &Path) -> Result<()> {
        std::fs::write(Self::path(state_dir), serde_json::to_string_pretty(self)?)?;
        Ok(())
    }

    /// The SDK configuration of the stack's moto.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        crate::sdk_config(&self.aws_endpoint).await
    }

    /// Invokes through the stack's `cargo lambda watch`.
    pub fn invoker(&self) -> crate::HttpInvoker {
        crate::HttpInvoker::new(
            &self.lambda_watch_url,
            Duration::from_secs(self.max_timeout_secs + 30),
        )
    }

    /// What the plumbing (event sources, schedules) invokes through: the built binaries of
    /// the functions it triggers, each run as its own processes behind our Runtime API
    /// ([`crate::process`]), so a process that dies fails its invocation at once and the
    /// next gets a fresh one, as on Lambda (`cargo lambda watch` 1.9 leaves it waiting for
    /// its timeout). A function whose binary is not built goes through watch.
    pub fn plumbing_invoker(&self, state_dir: &Path) -> crate::process::ProcessInvoker {
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repo_root().join("target"));
        let env: BTreeMap<String, String> = crate::aws_env(&self.aws_endpoint)
            .into_iter()
            .chain(
                self.functions_env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone())),
            )
            .collect();
        let binaries: BTreeSet<&str> = self
            .wiring
            .mappings
            .iter()
            .map(|m| m.binary.as_str())
            .chain(self.wiring.schedules.iter().map(|s| s.binary.as_str()))
            .chain(self.wiring.streams.iter().map(|s| s.binary.as_str()))
            .collect();
        let functions = binaries
            .into_iter()
            .map(|name| (name, target.join("debug").join(name)))
            .filter(|(_, path)| path.is_file())
            .map(|(name, binary)| {
                (
                    name.to_owned(),
                    crate::process::FunctionBinary {
                        binary,
                        env: env.clone(),
                    },
                )
            })
            .collect();
        crate::process::ProcessInvoker::new(
            functions,
            Duration::from_secs(self.max_timeout_secs + 5),
            state_dir.join("functions"),
        )
        .with_fallback(std::sync::Arc::new(self.invoker()))
    }
}

/// The demo world once it exists, else the sim's minimal world.
pub fn default_world() -> PathBuf {
    let demo = repo_root().join("infra/local/worlds/demo.json");
    if demo.exists() {
        demo
    } else {
        repo_root().join("infra/microsoft-sim/worlds/minimal.json")
    }
}

/// The app of a world the connector runs as: the first one with a client secret.
pub struct WorldApp {
    pub client_id: String,
    pub client_secret: String,
}

/// Adds the connector's redirect URIs (under `public_base_url`) to the first app of the
/// world that has a client secret, and returns that app; the sim matches redirect URIs
/// byte for byte, and the public URL carries a port chosen at start.
pub fn prepare_world(world: &mut Value, public_base_url: &str) -> Result<WorldApp> {
    let apps = world
        .get_mut("apps")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| anyhow!("the world has no apps"))?;
    let app = apps
        .iter_mut()
        .find(|a| a.get("clientSecret").and_then(Value::as_str).is_some())
        .ok_or_else(|| {
            anyhow!("the world has no app with a clientSecret (a confidential client)")
        })?;
    let field = |k: &str| app.get(k).and_then(Value::as_str).map(str::to_string);
    let found = WorldApp {
        client_id: field("clientId").ok_or_else(|| anyhow!("app without clientId"))?,
        client_secret: field("clientSecret").expect("checked above"),
    };
    let uris = app
        .as_object_mut()
        .expect("an app is an object")
        .entry("redirectUris")
        .or_insert_with(|| Value::Array(Vec::new()));
    let list = uris
        .as_array_mut()
        .ok_or_else(|| anyhow!("redirectUris is not a list"))?;
    for path in ["/consent/callback", "/auth/callback"] {
        let uri = Value::String(format!("{public_base_url}{path}"));
        if !list.contains(&uri) {
            list.push(uri);
        }
    }
    Ok(found)
}

/// The function behind the HTTP API: its `PUBLIC_BASE_URL` is its function-URL path on
/// the watch server.
fn http_function(functions: &[FunctionSpec]) -> Option<&FunctionSpec> {
    functions.iter().find(|f| {
        f.binary.is_some()
            && f.events
                .iter()
                .any(|e| matches!(&e.kind, EventKind::Other(t) if t == "HttpApi" || t == "Api"))
    })
}

/// Every function's environment merged into one (refusing conflicting values).
pub fn merged_function_env(
    functions: &[FunctionSpec],
    provisioned: &Provisioned,
) -> Result<BTreeMap<String, String>> {
    let mut merged: BTreeMap<String, (String, String)> = BTreeMap::new();
    for f in functions {
        for (name, value) in provisioned.function_env(f)? {
            match merged.get(&name) {
                Some((other, v)) if *v != value => bail!(
                    "{name} is {v:?} for {other} but {value:?} for {}: cargo lambda watch gives all functions one environment",
                    f.logical_id
                ),
                Some(_) => {}
                None => {
                    merged.insert(name, (f.logical_id.clone(), value));
                }
            }
        }
    }
    Ok(merged.into_iter().map(|(k, (_, v))| (k, v)).collect())
}

fn exports(vars: &[(String, String)]) -> String {
    let mut out = String::new();
    for (k, v) in vars {
        let _ = writeln!(out, "export {k}='{}'", v.replace('\'', r"'\''"));
    }
    out
}

/// The caller's variables that `cargo lambda watch` and cargo need, and nothing else.
fn toolchain_env() -> Vec<(String, String)> {
    const KEEP: &[&str] = &[
        "PATH",
        "HOME",
        "USER",
        "LANG",
        "TMPDIR",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "CARGO_TARGET_DIR",
    ];
    std::env::vars()
        .filter(|(k, _)| KEEP.contains(&k.as_str()))
        .collect()
}

/// Processes started so far: stopped again if `up` fails half-way.
struct Started {
    processes: Vec<ProcessInfo>,
    armed: bool,
}

impl Drop for Started {
    fn drop(&mut self) {
        if self.armed {
            let pgids: Vec<u32> = self.processes.iter().map(|p| p.pid).collect();
            stop_groups(&pgids);
        }
    }
}

fn spawn_detached(mut cmd: Command, name: &str, log: &Path) -> Result<ProcessInfo> {
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(ProcessInfo {
        name: name.to_string(),
        pid: child.id(),
        log: log.to_path_buf(),
    })
}

/// Waits for a line `listening on <url>` in a log file.
fn wait_for_listening(log: &Path, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(log)
            && let Some(url) = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("listening on "))
        {
            return Ok(url.trim().to_string());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "no `listening on` line in {} after {timeout:?}",
        log.display()
    )
}

/// Builds the functions' binaries so that watch starts them without compiling.
fn build_binaries(binaries: &[String]) -> Result<()> {
    if binaries.is_empty() {
        return Ok(());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root()).args(["build", "--locked"]);
    for b in binaries {
        cmd.args(["--bin", b]);
    }
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build of {} failed", binaries.join(", "));
    }
    Ok(())
}

/// Starts the whole stack. Returns once every part answers; the processes keep running.
pub async fn up(opts: &UpOptions) -> Result<StackInfo> {
    let dir = &opts.state_dir;
    std::fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    let pids = dir.join("pids");
    if pids.exists() {
        bail!(
            "{} exists: the stack seems up already (run `make down` first)",
            pids.display()
        );
    }
    let template = Template::load(&opts.template)?;
    let functions = template.functions()?;
    let binaries: Vec<String> = functions.iter().filter_map(|f| f.binary.clone()).collect();
    let max_timeout = functions
        .iter()
        .filter_map(FunctionSpec::timeout_secs)
        .max()
        .unwrap_or(crate::functions::DEFAULT_TIMEOUT_SECS);

    let watch_port = free_port()?;
    let watch_url = format!("http://127.0.0.1:{watch_port}");
    let public_base_url = match http_function(&functions) {
        Some(f) => format!(
            "{watch_url}/lambda-url/{}",
            f.binary.as_deref().expect("filtered on binary")
        ),
        None => watch_url.clone(),
    };

    // The world, with our redirect URIs registered on the app we run as.
    let source_world = opts.world.clone().unwrap_or_else(default_world);
    let mut world: Value = serde_json::from_str(
        &std::fs::read_to_string(&source_world)
            .with_context(|| format!("reading world {}", source_world.display()))?,
    )
    .with_context(|| format!("parsing world {}", source_world.display()))?;
    let app = prepare_world(&mut world, &public_base_url)?;
    let world_path = dir.join("world.json");
    std::fs::write(&world_path, serde_json::to_string_pretty(&world)?)?;

    if opts.build {
        build_binaries(&binaries)?;
    }

    let mut started = Started {
        processes: Vec::new(),
        armed: true,
    };

    // microsoft-sim
    let sim_bin = repo_root().join("target/debug/microsoft-sim");
    if !sim_bin.exists() {
        bail!(
            "{} not found: `cargo build -p microsoft-sim` first",
            sim_bin.display()
        );
    }
    let mut cmd = Command::new(&sim_bin);
    cmd.args(["--addr", "127.0.0.1:0", "--world"])
        .arg(&world_path);
    if opts.auto_approve {
        cmd.arg("--auto-approve");
    }
    let sim_log = dir.join("microsoft-sim.log");
    started
        .processes
        .push(spawn_detached(cmd, "microsoft-sim", &sim_log)?);
    let sim_url = wait_for_listening(&sim_log, Duration::from_secs(30))?;

    // moto + the template's resources
    let moto = Moto::start(Lifetime::Detached, Some(&dir.join("moto.log")))?;
    let aws_endpoint = moto.endpoint.clone();
    started.processes.push(ProcessInfo {
        name: "moto".into(),
        pid: moto.into_pid(),
        log: dir.join("moto.log"),
    });
    let mut params = BTreeMap::from([
        ("LoginBaseUrl".to_string(), sim_url.clone()),
        ("GraphBaseUrl".to_string(), sim_url.clone()),
        ("PublicBaseUrl".to_string(), public_base_url.clone()),
        ("EntraClientId".to_string(), app.client_id.clone()),
        (
            "EntraClientSecretValue".to_string(),
            app.client_secret.clone(),
        ),
    ]);
    params.extend(opts.params.clone());
    let sdk = crate::sdk_config(&aws_endpoint).await;
    let provisioned = provision(&sdk, &template, &opts.stack_name, &params)
        .await
        .context("provisioning the local stack")?;
    // EntraCredential=certificate: the app's certificate is the local KMS key.
    if let Some(certificate) = &provisioned.certificate {
        let response = reqwest::Client::new()
            .post(format!(
                "{sim_url}/_sim/apps/{}/certificates",
                app.client_id
            ))
            .json(&certificate.sim_registration())
            .send()
            .await
            .context("registering the certificate with microsoft-sim")?;
        if !response.status().is_success() {
            bail!(
                "microsoft-sim refused the certificate: {}",
                response.status()
            );
        }
    }
    let wiring = Wiring::from_template(&template, &provisioned)?;

    // Environment files.
    let functions_env = merged_function_env(&functions, &provisioned)?;
    let functions_env_file = dir.join("functions.env");
    let all_env: Vec<(String, String)> = aws_env(&aws_endpoint)
        .into_iter()
        .chain(functions_env.iter().map(|(k, v)| (k.clone(), v.clone())))
        .collect();
    let mut text = String::new();
    for (k, v) in &all_env {
        if v.contains('\n') {
            bail!("{k} contains a newline: not representable in an env file");
        }
        let _ = writeln!(text, "{k}={}", env_file_value(v));
    }
    std::fs::write(&functions_env_file, text)?;
    let env_file = dir.join("env");
    std::fs::write(&env_file, exports(&all_env))?;

    // cargo lambda watch
    let concurrency = wiring
        .mappings
        .iter()
        .map(|m| m.maximum_concurrency)
        .max()
        .unwrap_or(1)
        .max(2);
    let mut cmd = Command::new(venv_tool("cargo-lambda")?);
    cmd.current_dir(repo_root())
        .env_clear()
        .envs(toolchain_env())
        .args(["lambda", "watch", "--ignore-changes", "--quiet"])
        .args(["-A", "127.0.0.1", "-P", &watch_port.to_string()])
        .arg("--env-file")
        .arg(&functions_env_file)
        .args(["--timeout", &(max_timeout + 5).to_string()])
        .args(["--concurrency", &concurrency.to_string()]);
    started.processes.push(spawn_detached(
        cmd,
        "cargo-lambda-watch",
        &dir.join("lambda-watch.log"),
    )?);
    let watch = started.processes.last().expect("just pushed").clone();
    wait_for_port_while_alive(watch_port, &watch, Duration::from_secs(60))?;

    let mut info = StackInfo {
        stack_name: opts.stack_name.clone(),
        template: opts.template.clone(),
        aws_endpoint,
        microsoft_sim_url: sim_url,
        world: world_path,
        lambda_watch_url: watch_url,
        public_base_url,
        client_id: app.client_id,
        functions_env_file,
        env_file,
        functions_env,
        max_timeout_secs: max_timeout,
        wiring,
        time_factor: opts.time_factor,
        schedules: opts.schedules,
        processes: Vec::new(),
    };
    info.processes = started.processes.clone();
    info.save(&dir)?;

    // The plumbing reads stack.json.
    let mut cmd = Command::new(&opts.local_stack_exe);
    cmd.arg("plumbing").arg("--state-dir").arg(&dir);
    let plumbing_log = dir.join("plumbing.log");
    started
        .processes
        .push(spawn_detached(cmd, "plumbing", &plumbing_log)?);
    wait_for_log_line(&plumbing_log, "plumbing running", Duration::from_secs(30))?;

    info.processes = started.processes.clone();
    info.save(&dir)?;
    let mut lines = String::new();
    for p in &info.processes {
        let _ = writeln!(lines, "{} {}", p.pid, p.name);
    }
    std::fs::write(&pids, lines)?;
    started.armed = false;
    Ok(info)
}

/// cargo-lambda's env-file reader refuses unquoted spaces; it takes single-quoted values
/// literally and double-quoted ones with `\"` and `\\` escapes.
fn env_file_value(v: &str) -> String {
    let plain = v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-./:,@%+=".contains(c));
    if plain && !v.is_empty() {
        v.to_string()
    } else if !v.contains('\'') {
        format!("'{v}'")
    } else {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// Waits for a port, failing early (with the log's end) if the process exits first.
fn wait_for_port_while_alive(port: u16, process: &ProcessInfo, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        if !alive(process.pid) || Instant::now() >= deadline {
            let log = std::fs::read_to_string(&process.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            bail!(
                "{} is not listening on port {port}; end of {}:\n{}",
                process.name,
                process.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

fn wait_for_log_line(log: &Path, needle: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::fs::read_to_string(log).is_ok_and(|t| t.contains(needle)) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("`{needle}` not in {} after {timeout:?}", log.display())
}

/// Whether a process runs (a zombie, dead but not reaped by its parent, does not).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) if Path::new("/proc/self").exists() => false,
        Err(_) => Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
    }
}

fn signal_group(pgid: u32, signal: &str) -> bool {
    Command::new("kill")
        .args([signal, "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Stops process groups started by `up`: TERM to all, then KILL to what is left after
/// 10 s. Returns, per group, whether it was running.
pub fn stop_groups(pgids: &[u32]) -> Vec<bool> {
    let running: Vec<bool> = pgids.iter().map(|p| signal_group(*p, "-TERM")).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && pgids.iter().any(|p| alive(*p)) {
        std::thread::sleep(Duration::from_millis(100));
    }
    for p in pgids {
        if alive(*p) {
            signal_group(*p, "-KILL");
        }
    }
    running
}

/// Stops one process group started by `up`.
pub fn stop_group(pgid: u32) -> bool {
    stop_groups(&[pgid])[0]
}

/// Stops everything `up` started. Returns the lines it prints.
pub fn down(state_dir: &Path) -> Result<Vec<String>> {
    let pids = state_dir.join("pids");
    let Ok(text) = std::fs::read_to_string(&pids) else {
        return Ok(vec![format!(
            "nothing to stop ({} not found)",
            pids.display()
        )]);
    };
    let groups: Vec<(u32, String)> = text
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let pid = parts.next()?.parse().ok()?;
            Some((pid, parts.next().unwrap_or("process").to_string()))
        })
        .collect();
    let pgids: Vec<u32> = groups.iter().map(|(p, _)| *p).collect();
    let out = groups
        .iter()
        .zip(stop_groups(&pgids))
        .map(|((pid, name), was_running)| {
            format!(
                "stopped {name} (pid {pid}){}",
                if was_running {
                    ""
                } else {
                    " - was not running"
                }
            )
        })
        .collect();
    std::fs::remove_file(&pids)?;
    for f in ["env", "stack.json", "functions.env"] {
        std::fs::remove_file(state_dir.join(f)).ok();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_values_are_quoted_only_when_needed() {
        assert_eq!(
            env_file_value("http://127.0.0.1:1/a"),
            "http://127.0.0.1:1/a"
        );
        assert_eq!(
            env_file_value("Office 365 connector"),
            "'Office 365 connector'"
        );
        assert_eq!(env_file_value(""), "''");
        assert_eq!(env_file_value(r#"it's "x" \ y"#), r#""it's \"x\" \\ y""#);
    }

    #[test]
    fn the_world_gets_our_redirect_uris_once() {
        let mut world = serde_json::json!({"apps": [
            {"clientId": "public", "redirectUris": []},
            {"clientId": "c1", "clientSecret": "s1", "redirectUris": ["http://localhost:8400/auth/callback"]}
        ]});
        let app =
            prepare_world(&mut world, "http://127.0.0.1:9/lambda-url/consent-callback").unwrap();
        assert_eq!(
            (app.client_id.as_str(), app.client_secret.as_str()),
            ("c1", "s1")
        );
        prepare_world(&mut world, "http://127.0.0.1:9/lambda-url/consent-callback").unwrap();
        assert_eq!(
            world["apps"][1]["redirectUris"],
            serde_json::json!([
                "http://localhost:8400/auth/callback",
                "http://127.0.0.1:9/lambda-url/consent-callback/consent/callback",
                "http://127.0.0.1:9/lambda-url/consent-callback/auth/callback"
            ])
        );
        assert_eq!(world["apps"][0]["redirectUris"], serde_json::json!([]));
    }
}
