//! The local AWS stack for tests, the demo and working by hand.
//!
//! - [`Moto`]: the moto server from the repository's `.venv`, on a free
//!   loopback port, stopped when its owner goes away.
//! - [`provision`]: every table, queue and secret that `template.yaml`
//!   declares, created from the template (see `provision.rs`).
//! - [`test_stack`]: both at once for a test, under a unique name prefix, so
//!   tests in one process share one emulator without seeing each other.
//! - The event plumbing AWS provides around Lambda, derived from the template's
//!   functions ([`functions`]): EventBridge schedules ([`scheduler`], expressions in
//!   [`schedule`]) and SQS event source mappings ([`esm`]), invoking functions through an
//!   [`invoke::Invoker`] (`cargo lambda watch`, or closures in tests).
//! - [`checks`]: what the template must satisfy that cfn-lint does not check.
//! - [`stack`]: the whole local stack for `make up` (moto, microsoft-sim, `cargo lambda
//!   watch`, the plumbing), detached, stopped by `make down`.

pub mod checks;
pub mod esm;
pub mod functions;
pub mod invoke;
pub mod plumbing;
pub mod process;
pub mod provision;
pub mod schedule;
pub mod scheduler;
pub mod stack;
pub mod streams;
pub mod template;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_config::{BehaviorVersion, Region, SdkConfig};

pub use functions::FunctionSpec;
pub use invoke::{HttpInvoker, InProcessInvoker, Invoker, Outcome};
pub use provision::{Created, Provisioned, provision};
pub use template::Template;

/// The repository root (where `template.yaml` and `.venv` live).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("infra/local sits two levels below the repository root")
        .to_path_buf()
}

/// The repository's SAM template.
pub fn template_path() -> PathBuf {
    repo_root().join("template.yaml")
}

/// A tool installed in the repository's venv by `make venv`.
pub fn venv_tool(name: &str) -> Result<PathBuf> {
    let path = repo_root().join(".venv/bin").join(name);
    if !path.exists() {
        bail!("{} not found: run `make venv` first", path.display());
    }
    Ok(path)
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listening on {addr} after {timeout:?}")
}

/// How a started moto server ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Stopped when this process exits (tests): a watchdog shell ends moto
    /// once our PID is gone, so even a killed test run leaves nothing behind.
    ThisProcess,
    /// In its own process group, outliving us (`make up`); stop it by PID.
    Detached,
}

/// A running moto server.
#[derive(Debug)]
pub struct Moto {
    pub endpoint: String,
    /// The PID to signal to stop it (the watchdog for `ThisProcess`).
    pub pid: u32,
    child: Option<Child>,
}

impl Moto {
    /// Starts `moto_server` on a free loopback port and waits until it answers.
    pub fn start(lifetime: Lifetime, log: Option<&Path>) -> Result<Moto> {
        // moto_server through our launcher: DynamoDB's conditional writes made atomic as
        // they are on AWS (infra/local/moto_server.py says why).
        venv_tool("moto_server")?;
        let python = venv_tool("python3")?;
        let launcher = repo_root().join("infra/local/moto_server.py");
        let mut last_err = None;
        // A free port can be taken between our probe and moto's bind: retry.
        for _ in 0..3 {
            let port = free_port()?;
            let stdout = match log {
                Some(p) => Stdio::from(std::fs::File::create(p)?),
                None => Stdio::null(),
            };
            let mut cmd = match lifetime {
                Lifetime::ThisProcess => {
                    let mut c = Command::new("sh");
                    c.arg("-c")
                        .arg(
                            "\"$0\" \"$3\" -H 127.0.0.1 -p \"$1\" & m=$!; \
                             trap 'kill $m 2>/dev/null; exit 0' TERM INT; \
                             while kill -0 \"$2\" 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 0.5; done; \
                             kill $m 2>/dev/null; wait $m",
                        )
                        .arg(&python)
                        .arg(port.to_string())
                        .arg(std::process::id().to_string())
                        .arg(&launcher);
                    c
                }
                Lifetime::Detached => {
                    use std::os::unix::process::CommandExt;
                    let mut c = Command::new(&python);
                    c.arg(&launcher)
                        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                        .process_group(0);
                    c
                }
            };
            let stderr = match log {
                Some(p) => Stdio::from(std::fs::OpenOptions::new().append(true).open(p)?),
                None => Stdio::null(),
            };
            let child = cmd
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .spawn()?;
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            match wait_for_port(addr, Duration::from_secs(30)) {
                Ok(()) => {
                    return Ok(Moto {
                        endpoint: format!("http://127.0.0.1:{port}"),
                        pid: child.id(),
                        child: Some(child),
                    });
                }
                Err(e) => {
                    let mut child = child;
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("moto did not start")))
    }

    /// Uses a moto server someone else started.
    pub fn existing(endpoint: &str) -> Moto {
        Moto {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            pid: 0,
            child: None,
        }
    }

    /// Leaves a detached server running after this handle is dropped.
    pub fn into_pid(mut self) -> u32 {
        self.child.take();
        self.pid
    }

    pub async fn sdk_config(&self) -> SdkConfig {
        sdk_config(&self.endpoint).await
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // SIGTERM, not SIGKILL: the watchdog shell traps it and stops moto.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
}

/// An SDK configuration pointed at a local endpoint with test credentials,
/// the same settings the functions get from `AWS_ENDPOINT_URL` and friends.
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "local",
        ))
        .load()
        .await
}

/// The environment a process needs to reach the local AWS endpoint through
/// the standard SDK configuration.
pub fn aws_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A provisioned stack for one test.
#[derive(Debug, Clone)]
pub struct TestStack {
    pub sdk: SdkConfig,
    /// The template's function environment, resolved: `TENANTS_TABLE`,
    /// `MAIL_SYNC_QUEUE_URL`, `CLIENT_SECRET_ID`, ...
    pub env: BTreeMap<String, String>,
    pub endpoint: String,
    pub provisioned: Provisioned,
}

impl TestStack {
    /// Everything a child process (a real binary under test) needs.
    pub fn process_env(&self) -> Vec<(String, String)> {
        let mut env = aws_env(&self.endpoint);
        env.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }

    /// A variable of the resolved environment; panics with its name if the
    /// template does not declare it (a test bug).
    pub fn var(&self, name: &str) -> &str {
        self.env
            .get(name)
            .unwrap_or_else(|| panic!("template.yaml Globals declare no {name}"))
    }
}

static SHARED_MOTO: OnceLock<std::result::Result<Moto, String>> = OnceLock::new();

/// The emulator shared by every test of this process: `LOCAL_AWS_ENDPOINT`
/// if set, else one moto started on first use and stopped at process exit.
pub fn shared_moto() -> Result<&'static Moto> {
    SHARED_MOTO
        .get_or_init(|| match std::env::var("LOCAL_AWS_ENDPOINT") {
            Ok(ep) if !ep.is_empty() => Ok(Moto::existing(&ep)),
            _ => Moto::start(Lifetime::ThisProcess, None).map_err(|e| format!("{e:#}")),
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("starting moto: {e}"))
}

/// A fresh copy of the repository's template resources on the shared
/// emulator, under a unique stack name.
pub async fn test_stack() -> Result<TestStack> {
    test_stack_from(&template_path(), &BTreeMap::new()).await
}

/// As [`test_stack`], from another template and with parameter overrides.
pub async fn test_stack_from(
    template: &Path,
    params: &BTreeMap<String, String>,
) -> Result<TestStack> {
    let moto = shared_moto()?;
    let sdk = moto.sdk_config().await;
    let template = Template::load(template)?;
    // A secret parameter (NoEcho, no default, e.g. EntraClientSecretValue) a test does not
    // care about gets a random value, as a deployer would give one; tests that need it pass
    // their own.
    let mut params = params.clone();
    for (name, decl) in &template.parameters {
        if decl.get("Default").is_none()
            && decl.get("NoEcho").is_some_and(|v| v == true || v == "true")
            && !params.contains_key(name)
        {
            params.insert(
                name.clone(),
                format!("test-{}", uuid::Uuid::new_v4().simple()),
            );
        }
    }
    let params = &params;
    let stack = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let provisioned = provision(&sdk, &template, &stack, params)
        .await
        .with_context(|| format!("provisioning stack {stack} on {}", moto.endpoint))?;
    Ok(TestStack {
        sdk,
        env: provisioned.env.clone(),
        endpoint: moto.endpoint.clone(),
        provisioned,
    })
}
