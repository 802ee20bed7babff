//! A minimal local AWS Lambda Runtime API (the calls `lambda_runtime` makes: `GET
//! /2018-06-01/runtime/invocation/next`, `POST .../invocation/{id}/response`, `.../error`,
//! `POST /2018-06-01/runtime/init/error`) on 127.0.0.1, and a function binary run under it as
//! its own process, as Lambda runs a `provided.al2023` bootstrap: one process, one invocation at
//! a time, warm between invocations.
//!
//! It records when the process first polls for work (the end of its cold start) and when each
//! invocation's answer arrives, and reads the process's CPU time and peak RSS from `/proc`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::time::Instant;

use crate::procstat::{self, ProcSample};

/// How an invocation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Response,
    Error,
    InitError,
}

/// The function's answer to one invocation (or its init error).
#[derive(Debug)]
pub struct Completion {
    pub ending: Ending,
    pub body: Vec<u8>,
    pub at: Instant,
}

struct Invocation {
    request_id: String,
    deadline_ms: u64,
    payload: Vec<u8>,
}

struct Shared {
    function_arn: String,
    polls: mpsc::UnboundedSender<Instant>,
    invocations: Mutex<mpsc::UnboundedReceiver<Invocation>>,
    completions: mpsc::UnboundedSender<Completion>,
}

/// The Runtime API server for one function process.
pub struct RuntimeApi {
    addr: SocketAddr,
    polls: mpsc::UnboundedReceiver<Instant>,
    invocations: mpsc::UnboundedSender<Invocation>,
    completions: mpsc::UnboundedReceiver<Completion>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl RuntimeApi {
    pub async fn start(function_name: &str) -> Result<RuntimeApi> {
        let (polls_tx, polls) = mpsc::unbounded_channel();
        let (invocations, invocations_rx) = mpsc::unbounded_channel();
        let (completions_tx, completions) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            function_arn: format!("arn:aws:lambda:us-east-1:000000000000:function:{function_name}"),
            polls: polls_tx,
            invocations: Mutex::new(invocations_rx),
            completions: completions_tx,
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(|s, id, body| finish(s, id, body, Ending::Response)),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/error",
                post(|s, id, body| finish(s, id, body, Ending::Error)),
            )
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (shutdown, stop) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop.await;
                })
                .await;
        });
        Ok(RuntimeApi {
            addr,
            polls,
            invocations,
            completions,
            shutdown: Some(shutdown),
        })
    }

    /// `host:port`, as `AWS_LAMBDA_RUNTIME_API` wants it.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    let _ = shared.polls.send(Instant::now());
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

async fn finish(
    State(shared): State<Arc<Shared>>,
    UrlPath(_id): UrlPath<String>,
    body: Bytes,
    ending: Ending,
) -> StatusCode {
    let _ = shared.completions.send(Completion {
        ending,
        body: body.to_vec(),
        at: Instant::now(),
    });
    StatusCode::ACCEPTED
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    let _ = shared.completions.send(Completion {
        ending: Ending::InitError,
        body: body.to_vec(),
        at: Instant::now(),
    });
    StatusCode::ACCEPTED
}

/// Milliseconds since the epoch, `after` from now (Lambda's deadline header).
fn deadline_ms(after: Duration) -> u64 {
    (SystemTime::now() + after)
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One invocation's outcome.
#[derive(Debug)]
pub struct Invoked {
    pub completion: Completion,
    /// From handing the event over to the answer.
    pub wall: Duration,
}

/// A function binary running under its own [`RuntimeApi`].
pub struct LambdaProcess {
    pub name: String,
    pub log: PathBuf,
    api: RuntimeApi,
    child: tokio::process::Child,
    pid: u32,
    spawned_at: Instant,
    invocations: u64,
}

impl LambdaProcess {
    /// Execs `binary` with `env` (plus the Lambda variables), stdout and stderr to `log`.
    pub async fn spawn(
        name: &str,
        binary: &Path,
        env: &BTreeMap<String, String>,
        log: &Path,
    ) -> Result<LambdaProcess> {
        let api = RuntimeApi::start(name).await?;
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut command = tokio::process::Command::new(binary);
        command
            .env_clear()
            .envs(env)
            .env("PATH", "/usr/bin:/bin")
            .env("AWS_LAMBDA_RUNTIME_API", api.address())
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
            .env("LAMBDA_TASK_ROOT", "/var/task")
            .env("_HANDLER", "bootstrap")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        let spawned_at = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id().context("the child has a pid")?;
        Ok(LambdaProcess {
            name: name.to_owned(),
            log: log.to_owned(),
            api,
            child,
            pid,
            spawned_at,
            invocations: 0,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(2_000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text[start..].to_owned()
    }

    /// Waits for the next `GET .../invocation/next`; the first one ends the cold start.
    /// Returns the time since exec.
    pub async fn wait_poll(&mut self, timeout: Duration) -> Result<Duration> {
        tokio::select! {
            poll = self.api.polls.recv() => {
                let at = poll.context("runtime API closed")?;
                Ok(at.duration_since(self.spawned_at))
            }
            status = self.child.wait() => {
                bail!("{} exited ({:?}) before polling; log:\n{}", self.name, status.ok(), self.log_tail())
            }
            completion = self.api.completions.recv() => {
                let body = completion.map(|c| String::from_utf8_lossy(&c.body).into_owned()).unwrap_or_default();
                bail!("{} reported an init error: {body}\nlog:\n{}", self.name, self.log_tail())
            }
            _ = tokio::time::sleep(timeout) => bail!("{} did not poll within {timeout:?}", self.name),
        }
    }

    /// Hands `payload` over and waits for the answer (the process stays warm).
    pub async fn invoke(&mut self, payload: &[u8], lambda_timeout: Duration) -> Result<Invoked> {
        self.invocations += 1;
        let request_id = format!("bench-{}-{}", self.name, self.invocations);
        let started = Instant::now();
        self.api
            .invocations
            .send(Invocation {
                request_id,
                deadline_ms: deadline_ms(lambda_timeout),
                payload: payload.to_vec(),
            })
            .map_err(|_| anyhow::anyhow!("runtime API closed"))?;
        let wait = lambda_timeout + Duration::from_secs(30);
        let completion = tokio::select! {
            completion = self.api.completions.recv() => completion.context("runtime API closed")?,
            status = self.child.wait() => {
                bail!("{} exited ({:?}) during an invocation; log:\n{}", self.name, status.ok(), self.log_tail())
            }
            _ = tokio::time::sleep(wait) => bail!("{} did not answer within {wait:?}", self.name),
        };
        let wall = completion.at.duration_since(started);
        Ok(Invoked { completion, wall })
    }

    /// CPU and memory of the process so far.
    pub fn sample(&self) -> Result<ProcSample> {
        procstat::sample(self.pid)
    }

    /// Ends the process (Lambda freezes or recycles it; here it is just stopped).
    pub async fn stop(mut self) -> Result<()> {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        Ok(())
    }

    /// The process's stdout + stderr so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server driven over HTTP the way `lambda_runtime` drives it.
    #[tokio::test]
    async fn the_runtime_api_hands_over_events_and_collects_answers() -> Result<()> {
        let mut api = RuntimeApi::start("probe").await?;
        let base = format!("http://{}/2018-06-01/runtime", api.address());
        let client = reqwest::Client::new();
        let poller = tokio::spawn({
            let client = client.clone();
            let base = base.clone();
            async move { client.get(format!("{base}/invocation/next")).send().await }
        });
        let polled = tokio::time::timeout(Duration::from_secs(5), api.polls.recv()).await?;
        assert!(polled.is_some());
        api.invocations
            .send(Invocation {
                request_id: "r1".into(),
                deadline_ms: deadline_ms(Duration::from_secs(60)),
                payload: br#"{"hello":1}"#.to_vec(),
            })
            .map_err(|_| anyhow::anyhow!("closed"))?;
        let response = poller.await??;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["lambda-runtime-aws-request-id"], "r1");
        assert!(
            response
                .headers()
                .contains_key("lambda-runtime-deadline-ms")
        );
        assert_eq!(response.text().await?, r#"{"hello":1}"#);
        let answered = client
            .post(format!("{base}/invocation/r1/response"))
            .body("\"done\"")
            .send()
            .await?;
        assert_eq!(answered.status(), 202);
        let completion = api.completions.recv().await.expect("completion");
        assert_eq!(completion.ending, Ending::Response);
        assert_eq!(completion.body, b"\"done\"");
        Ok(())
    }
}
