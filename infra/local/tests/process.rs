//! A function process killed mid-invocation, as Lambda treats it: the real mail-sync
//! binary runs under the [`ProcessInvoker`]'s Runtime API; its fan-out waits on an AWS
//! endpoint that never answers; the process is killed (SIGKILL) while it waits. The
//! invocation fails at once with `Runtime.ExitError`, and the next invocation is served by
//! a fresh process.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use local_stack::invoke::Invoker;
use local_stack::process::{FunctionBinary, ProcessInvoker};
use local_stack::{Outcome, repo_root};
use serde_json::json;

/// Builds mail-sync's binary (a no-op when it is up to date) and returns its path.
fn mail_sync_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(repo_root())
        .args(["build", "-p", "mail-sync", "--bin", "mail-sync"])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "mail-sync builds");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"));
    target.join("debug/mail-sync")
}

fn env(aws_endpoint: &str) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = [
        ("TENANTS_TABLE", "tenants"),
        ("CONNECTIONS_TABLE", "connections"),
        ("SYNC_STATE_TABLE", "sync-state"),
        ("ACTIVITIES_TABLE", "activities"),
        ("CRM_TABLE", "crm"),
        ("AUTH_SESSIONS_TABLE", "auth-sessions"),
        ("IDEMPOTENCY_TABLE", "idempotency"),
        ("SUBSCRIPTIONS_TABLE", "subscriptions"),
        ("MESSAGE_BODIES_BUCKET", "bodies"),
        ("CLIENT_SECRET_ID", "client-secret"),
        ("CLIENT_ID", "00000000-0000-0000-0000-000000000001"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for var in [
        "MAIL_SYNC_QUEUE_URL",
        "CALENDAR_SYNC_QUEUE_URL",
        "TEAMS_POST_QUEUE_URL",
        "SUBSCRIPTION_QUEUE_URL",
    ] {
        env.insert(var.into(), format!("{aws_endpoint}/000000000000/q"));
    }
    for var in [
        "LOGIN_BASE_URL",
        "GRAPH_BASE_URL",
        "PUBLIC_BASE_URL",
        "APP_BASE_URL",
    ] {
        env.insert(var.into(), aws_endpoint.to_owned());
    }
    env.insert("AWS_ENDPOINT_URL".into(), aws_endpoint.to_owned());
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_mid_invocation_fails_it_at_once_and_a_fresh_one_serves_the_next() {
    let binary = tokio::task::spawn_blocking(mail_sync_binary)
        .await
        .expect("build");
    // An AWS endpoint that accepts connections and never answers: the fan-out waits.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", silent.local_addr().expect("addr"));
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let logs = std::env::temp_dir().join(format!("process-invoker-{}", uuid::Uuid::new_v4()));
    let invoker = ProcessInvoker::new(
        BTreeMap::from([(
            "mail-sync".to_owned(),
            FunctionBinary {
                binary,
                env: env(&endpoint),
            },
        )]),
        Duration::from_secs(600),
        logs.clone(),
    );
    let schedule = json!({"source": "aws.events", "detail-type": "Scheduled Event"});

    let killer = async {
        let pid = loop {
            if let Some(pid) = invoker.busy_pids("mail-sync").into_iter().next() {
                break pid;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Let it start the fan-out (its first DynamoDB call hangs on the silent endpoint).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let killed = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(
            killed.success(),
            "the process {pid} was gone before the kill (did it fail its init? logs under {})",
            logs.display()
        );
        pid
    };
    let (outcome, killed) = tokio::join!(invoker.invoke("mail-sync", &schedule), killer);
    let Outcome::FunctionError {
        error_type,
        error_message,
    } = outcome.expect("invoked")
    else {
        panic!("the killed invocation failed");
    };
    assert_eq!(error_type, "Runtime.ExitError", "{error_message}");

    // The next invocation gets a fresh process; with the endpoint gone its fan-out fails
    // as a handler error, answered by that process.
    held.abort();
    let _ = held.await;
    let next = async {
        loop {
            if let Some(pid) = invoker.busy_pids("mail-sync").into_iter().next() {
                break pid;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (outcome, served_by) = tokio::join!(invoker.invoke("mail-sync", &schedule), next);
    assert_ne!(served_by, killed, "a fresh process");
    match outcome.expect("invoked") {
        Outcome::FunctionError { error_type, .. } => {
            assert_ne!(error_type, "Runtime.ExitError");
            assert_ne!(error_type, "Sandbox.Timedout");
        }
        Outcome::Ok(value) => panic!("the fan-out cannot succeed without AWS: {value}"),
    }
    let _ = std::fs::remove_dir_all(logs);
}
