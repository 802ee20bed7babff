//! Function binaries run as Lambda runs them, for crash paths: [`ProcessInvoker`] execs
//! each function's binary behind its own Runtime API (the calls `lambda_runtime` makes:
//! `GET /2018-06-01/runtime/invocation/next`, `POST .../invocation/{id}/response`,
//! `.../error`, `POST /2018-06-01/runtime/init/error`), one invocation at a time per
//! process, warm between invocations, as many processes as invocations in flight.
//!
//! Unlike `cargo lambda watch` 1.9 (see [`crate::invoke`]), a process that dies during an
//! invocation (killed, out of memory, an abort) fails that invocation at once
//! (`Runtime.ExitError`, as Lambda reports it) and is discarded: the next invocation gets a
//! fresh process. An invocation that outlives the timeout kills its process
//! (`Sandbox.Timedout`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::invoke::{InvokeError, Invoker, Outcome};

/// How the process answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Response,
    Error,
    InitError,
}

struct Invocation {
    request_id: String,
    deadline_ms: u64,
    payload: Vec<u8>,
}

struct Shared {
    function_arn: String,
    invocations: Mutex<mpsc::UnboundedReceiver<Invocation>>,
    completions: mpsc::UnboundedSender<(Ending, Vec<u8>)>,
}

/// One process and its Runtime API server.
struct Instance {
    pid: u32,
    child: tokio::process::Child,
    invocations: mpsc::UnboundedSender<Invocation>,
    completions: mpsc::UnboundedReceiver<(Ending, Vec<u8>)>,
    _shutdown: oneshot::Sender<()>,
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    let invocation = shared.invocations.lock().await.recv().await;
    let Some(invocation) = invocation else {
        return StatusCode::GONE.into_response();
    };
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    put("lambda-runtime-aws-request-id", &invocation.request_id);
    put(
        "lambda-runtime-deadline-ms",
        &invocation.deadline_ms.to_string(),
    );
    put("lambda-runtime-invoked-function-arn", &shared.function_arn);
    put(
        "lambda-runtime-trace-id",
        "Root=1-00000000-000000000000000000000000;Sampled=0",
    );
    put("content-type", "application/json");
    (StatusCode::OK, headers, invocation.payload).into_response()
}

fn finish(shared: &Shared, ending: Ending, body: Bytes) -> StatusCode {
    let _ = shared.completions.send((ending, body.to_vec()));
    StatusCode::ACCEPTED
}

/// A function's binary, its environment, and its idle processes.
#[derive(Clone)]
pub struct FunctionBinary {
    pub binary: PathBuf,
    pub env: BTreeMap<String, String>,
}

/// Invokes functions as processes of their binaries (see the module doc).
pub struct ProcessInvoker {
    functions: BTreeMap<String, FunctionBinary>,
    /// Invokes the functions this one has no binary for.
    fallback: Option<Arc<dyn Invoker>>,
    timeout: Duration,
    log_dir: PathBuf,
    idle: Mutex<BTreeMap<String, Vec<Instance>>>,
    busy: std::sync::Mutex<BTreeMap<String, BTreeSet<u32>>>,
}

impl ProcessInvoker {
    /// `functions` by name (the binary name the event sources invoke); `timeout` bounds one
    /// invocation (the function's timeout); each process's output goes to
    /// `log_dir/{function}-{pid}.log`.
    pub fn new(
        functions: BTreeMap<String, FunctionBinary>,
        timeout: Duration,
        log_dir: PathBuf,
    ) -> Self {
        Self {
            functions,
            fallback: None,
            timeout,
            log_dir,
            idle: Mutex::new(BTreeMap::new()),
            busy: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// Functions without a binary here are invoked through `fallback`.
    pub fn with_fallback(mut self, fallback: Arc<dyn Invoker>) -> Self {
        self.fallback = Some(fallback);
        self
    }

    /// The pids of `function`'s processes that are in an invocation now.
    pub fn busy_pids(&self, function: &str) -> BTreeSet<u32> {
        self.busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(function)
            .cloned()
            .unwrap_or_default()
    }

    fn mark(&self, function: &str, pid: u32, busy: bool) {
        let mut all = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let pids = all.entry(function.to_owned()).or_default();
        if busy {
            pids.insert(pid);
        } else {
            pids.remove(&pid);
        }
    }

    async fn spawn(&self, function: &str, spec: &FunctionBinary) -> Result<Instance, String> {
        let (invocations, invocations_rx) = mpsc::unbounded_channel();
        let (completions_tx, completions) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            function_arn: format!("arn:aws:lambda:us-east-1:000000000000:function:{function}"),
            invocations: Mutex::new(invocations_rx),
            completions: completions_tx,
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(|State(s): State<Arc<Shared>>, body: Bytes| async move {
                    finish(&s, Ending::Response, body)
                }),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/error",
                post(|State(s): State<Arc<Shared>>, body: Bytes| async move {
                    finish(&s, Ending::Error, body)
                }),
            )
            .route(
                "/2018-06-01/runtime/init/error",
                post(|State(s): State<Arc<Shared>>, body: Bytes| async move {
                    finish(&s, Ending::InitError, body)
                }),
            )
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr: SocketAddr = listener.local_addr().map_err(|e| e.to_string())?;
        let (shutdown, stop) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop.await;
                })
                .await;
        });
        std::fs::create_dir_all(&self.log_dir).map_err(|e| e.to_string())?;
        let log = self.log_dir.join(format!("{function}-{}.log", addr.port()));
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut command = tokio::process::Command::new(&spec.binary);
        command
            .env_clear()
            .envs(&spec.env)
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", function)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{function}"),
            )
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        let child = command
            .spawn()
            .map_err(|e| format!("starting {}: {e}", spec.binary.display()))?;
        let pid = child.id().ok_or("the process has no pid")?;
        Ok(Instance {
            pid,
            child,
            invocations,
            completions,
            _shutdown: shutdown,
        })
    }
}

fn deadline_ms(after: Duration) -> u64 {
    (SystemTime::now() + after)
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn error_fields(body: &[u8]) -> (String, String) {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let field = |k: &str| parsed.get(k).and_then(Value::as_str).map(str::to_string);
    (
        field("errorType").unwrap_or_else(|| "Unhandled".into()),
        field("errorMessage")
            .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(500).collect()),
    )
}

#[async_trait]
impl Invoker for ProcessInvoker {
    async fn invoke(&self, function: &str, payload: &Value) -> Result<Outcome, InvokeError> {
        let Some(spec) = self.functions.get(function) else {
            return match &self.fallback {
                Some(fallback) => fallback.invoke(function, payload).await,
                None => Err(InvokeError::UnknownFunction(function.to_owned())),
            };
        };
        let warm = self.idle.lock().await.get_mut(function).and_then(Vec::pop);
        let mut instance = match warm {
            Some(instance) => instance,
            None => self
                .spawn(function, spec)
                .await
                .map_err(|reason| InvokeError::Transport {
                    function: function.to_owned(),
                    reason,
                })?,
        };
        let sent = instance.invocations.send(Invocation {
            request_id: uuid::Uuid::new_v4().to_string(),
            deadline_ms: deadline_ms(self.timeout),
            payload: payload.to_string().into_bytes(),
        });
        if sent.is_err() {
            return Err(InvokeError::Transport {
                function: function.to_owned(),
                reason: "the runtime API stopped".into(),
            });
        }
        self.mark(function, instance.pid, true);
        let ended = tokio::select! {
            completion = instance.completions.recv() => Ok(completion),
            status = instance.child.wait() => Err(Some(status)),
            () = tokio::time::sleep(self.timeout) => Err(None),
        };
        self.mark(function, instance.pid, false);
        match ended {
            Ok(Some((Ending::Response, body))) => {
                self.idle
                    .lock()
                    .await
                    .entry(function.to_owned())
                    .or_default()
                    .push(instance);
                if body.iter().all(u8::is_ascii_whitespace) {
                    return Ok(Outcome::Ok(Value::Null));
                }
                serde_json::from_slice(&body)
                    .map(Outcome::Ok)
                    .map_err(|e| InvokeError::Transport {
                        function: function.to_owned(),
                        reason: format!("response is not JSON: {e}"),
                    })
            }
            Ok(Some((Ending::Error, body))) => {
                self.idle
                    .lock()
                    .await
                    .entry(function.to_owned())
                    .or_default()
                    .push(instance);
                let (error_type, error_message) = error_fields(&body);
                Ok(Outcome::FunctionError {
                    error_type,
                    error_message,
                })
            }
            // An init error: the process is of no further use (dropping it kills it).
            Ok(Some((Ending::InitError, body))) => {
                let (error_type, error_message) = error_fields(&body);
                Ok(Outcome::FunctionError {
                    error_type,
                    error_message,
                })
            }
            Ok(None) => Ok(Outcome::FunctionError {
                error_type: "Runtime.Unknown".into(),
                error_message: format!("{function}: the runtime API stopped"),
            }),
            // Died during the invocation: failed at once; the next gets a fresh process.
            Err(Some(status)) => Ok(Outcome::FunctionError {
                error_type: "Runtime.ExitError".into(),
                error_message: format!(
                    "{function}: the process exited during the invocation ({})",
                    status.map_or_else(|e| e.to_string(), |s| s.to_string())
                ),
            }),
            Err(None) => {
                let _ = instance.child.start_kill();
                let _ = instance.child.wait().await;
                Ok(Outcome::FunctionError {
                    error_type: "Sandbox.Timedout".into(),
                    error_message: format!("{function} did not answer within the timeout"),
                })
            }
        }
    }
}
