//! How the local plumbing invokes a function: the [`Invoker`] trait, with
//! - [`HttpInvoker`]: the real binaries under `cargo lambda watch`, through its Lambda
//!   Invoke API emulation (`POST /2015-03-31/functions/{binary}/invocations`);
//! - [`InProcessInvoker`]: closures registered by name, for tests of the plumbing itself.
//!
//! What `cargo lambda watch` 1.9 answers (checked against the installed binary): 200 with
//! the handler's JSON; 500 with `{"errorType","errorMessage"}` when the handler returns an
//! error; 408 with an empty body when no answer came within `--timeout` (also what a
//! binary that dies during init produces: the request waits for a runtime that never
//! asks for it); 404 naming the available binaries for an unknown name. Real Lambda
//! answers a function error with 200 and `X-Amz-Function-Error`; both are understood.
//!
//! A function process that dies mid-invocation (killed, out of memory, abort) is not
//! handled as Lambda handles it (the invocation fails at once, a fresh instance serves the
//! next). In cargo-lambda 1.9's watch (read in its `scheduler.rs`, `watcher.rs` and
//! `instance_pool.rs`, 2026-12-06): the watchexec supervisor only logs "command killed" /
//! "command exited" and does nothing (no restart); the instance stays in the function's
//! pool as busy (it is removed only when watchexec itself fails); the pending invocation
//! is answered 408 at `--timeout`; and the instance monitor spawns another instance only
//! while the pool has fewer than `--concurrency` instances, so each dead process takes one
//! of them for good. The plumbing therefore invokes the functions it triggers through
//! [`crate::process::ProcessInvoker`] instead, which behaves as Lambda does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde_json::Value;

/// What an invocation produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The handler returned this payload (`Null` for an empty response).
    Ok(Value),
    /// The invocation failed: the handler returned an error, panicked, crashed, or ran out
    /// of time. Event sources treat all of these alike.
    FunctionError {
        error_type: String,
        error_message: String,
    },
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }
}

/// The invocation could not be made at all.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("function {0} does not exist")]
    UnknownFunction(String),
    #[error("invoking {function}: {reason}")]
    Transport { function: String, reason: String },
}

#[async_trait]
pub trait Invoker: Send + Sync {
    /// Invokes `function` (its binary name) synchronously with `payload`.
    async fn invoke(&self, function: &str, payload: &Value) -> Result<Outcome, InvokeError>;
}

/// Invokes through `cargo lambda watch`.
#[derive(Debug, Clone)]
pub struct HttpInvoker {
    base_url: String,
    client: reqwest::Client,
}

impl HttpInvoker {
    /// `base_url` is the watch server (`http://127.0.0.1:PORT`); `timeout` bounds one
    /// invocation on our side (give it more than the longest function timeout: the watch
    /// server's own `--timeout` should answer first).
    pub fn new(base_url: &str, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .expect("a plain reqwest client always builds");
        Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            client,
        }
    }

    pub fn invoke_url(&self, function: &str) -> String {
        format!(
            "{}/2015-03-31/functions/{function}/invocations",
            self.base_url
        )
    }
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
impl Invoker for HttpInvoker {
    async fn invoke(&self, function: &str, payload: &Value) -> Result<Outcome, InvokeError> {
        let transport = |reason: String| InvokeError::Transport {
            function: function.to_string(),
            reason,
        };
        let response = match self
            .client
            .post(self.invoke_url(function))
            .json(payload)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Ok(Outcome::FunctionError {
                    error_type: "Sandbox.Timedout".into(),
                    error_message: format!("no response from {function} in time"),
                });
            }
            Err(e) => return Err(transport(e.to_string())),
        };
        let status = response.status().as_u16();
        let function_error = response.headers().contains_key("x-amz-function-error");
        let body = response
            .bytes()
            .await
            .map_err(|e| transport(e.to_string()))?;
        match status {
            200 if function_error => {
                let (error_type, error_message) = error_fields(&body);
                Ok(Outcome::FunctionError {
                    error_type,
                    error_message,
                })
            }
            200 if body.iter().all(u8::is_ascii_whitespace) => Ok(Outcome::Ok(Value::Null)),
            200 => serde_json::from_slice(&body)
                .map(Outcome::Ok)
                .map_err(|e| transport(format!("response is not JSON: {e}"))),
            404 => Err(InvokeError::UnknownFunction(function.to_string())),
            408 => Ok(Outcome::FunctionError {
                error_type: "Sandbox.Timedout".into(),
                error_message: format!("{function} did not answer within the timeout"),
            }),
            500 => {
                let (error_type, error_message) = error_fields(&body);
                Ok(Outcome::FunctionError {
                    error_type,
                    error_message,
                })
            }
            other => Err(transport(format!(
                "HTTP {other}: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            ))),
        }
    }
}

/// A handler run in-process: the payload in, the response or an error message out.
pub type Handler =
    Arc<dyn Fn(Value) -> BoxFuture<'static, Result<Value, String>> + Send + Sync + 'static>;

/// Invokes closures registered by function name.
#[derive(Clone, Default)]
pub struct InProcessInvoker {
    handlers: BTreeMap<String, Handler>,
}

impl InProcessInvoker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` as `function`.
    pub fn with<F, Fut>(mut self, function: &str, handler: F) -> Self
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Value, String>> + Send + 'static,
    {
        self.handlers.insert(
            function.to_string(),
            Arc::new(move |payload| Box::pin(handler(payload))),
        );
        self
    }
}

#[async_trait]
impl Invoker for InProcessInvoker {
    async fn invoke(&self, function: &str, payload: &Value) -> Result<Outcome, InvokeError> {
        let handler = self
            .handlers
            .get(function)
            .ok_or_else(|| InvokeError::UnknownFunction(function.to_string()))?
            .clone();
        // A panicking handler is a failed invocation, as the Lambda runtime reports it.
        let result = tokio::spawn(handler(payload.clone())).await;
        Ok(match result {
            Ok(Ok(value)) => Outcome::Ok(value),
            Ok(Err(message)) => Outcome::FunctionError {
                error_type: "HandlerError".into(),
                error_message: message,
            },
            Err(join) => Outcome::FunctionError {
                error_type: "Panic".into(),
                error_message: join.to_string(),
            },
        })
    }
}
