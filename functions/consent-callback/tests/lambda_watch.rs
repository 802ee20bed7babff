//! The real binary under `cargo lambda watch` (the Lambda runtime emulator), in front of
//! moto: it starts (reading the client secret from Secrets Manager), answers `/healthz`
//! and serves the consent page with its security headers.

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Stops the whole process group (cargo-lambda, cargo, the function) when dropped.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = self.0.id();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg("--")
            .arg(format!("-{pgid}"))
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg("--")
            .arg(format!("-{pgid}"))
            .status();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_answers_under_cargo_lambda_watch() {
    let root = local_stack::repo_root();
    let cargo_lambda =
        local_stack::venv_tool("cargo-lambda").expect("cargo-lambda in .venv (make venv)");
    let stack = local_stack::test_stack().await.expect("local stack");
    let port = local_stack::free_port().expect("port");
    let public = format!("http://127.0.0.1:{port}/lambda-url/consent-callback");

    let mut env = stack.process_env();
    env.extend(
        [
            ("CLIENT_ID", "2d6f0c1e-8a7b-4c3d-9e1f-0a2b3c4d5e6f"),
            ("LOGIN_BASE_URL", "https://login.microsoftonline.com"),
            ("GRAPH_BASE_URL", "https://graph.microsoft.com"),
            ("PUBLIC_BASE_URL", public.as_str()),
            ("APP_BASE_URL", "https://app.example.com/home"),
            ("APP_DISPLAY_NAME", "Office 365 connector (watch test)"),
            ("RUST_LOG", "info"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let dir = root.join("target/consent-callback-watch");
    std::fs::create_dir_all(&dir).expect("dir");
    let env_file = dir.join(format!("{port}.env"));
    let mut file = std::fs::File::create(&env_file).expect("env file");
    let mut seen = std::collections::BTreeMap::new();
    for (name, value) in &env {
        seen.insert(name.clone(), value.clone());
    }
    for (name, value) in &seen {
        assert!(
            !value.contains(['"', '\\', '\n']),
            "{name} needs no escaping"
        );
        writeln!(file, "{name}=\"{value}\"").expect("write");
    }
    let log = std::fs::File::create(dir.join(format!("{port}.log"))).expect("log");

    let child = Command::new(cargo_lambda)
        .current_dir(&root)
        .args([
            "lambda",
            "watch",
            "-A",
            "127.0.0.1",
            "-P",
            &port.to_string(),
        ])
        .args([
            "-p",
            "consent-callback",
            "--bin",
            "consent-callback",
            "--ignore-changes",
        ])
        .arg("--env-file")
        .arg(&env_file)
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("cargo lambda watch starts");
    let mut group = Group(child);

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    // The first answer waits for the binary to compile (the library is usually built already).
    let deadline = Instant::now() + Duration::from_secs(900);
    let health = loop {
        if let Ok(Some(status)) = group.0.try_wait() {
            panic!(
                "cargo lambda watch exited ({status}); see target/consent-callback-watch/{port}.log"
            );
        }
        match client.get(format!("{public}/healthz")).send().await {
            Ok(response) if response.status().is_success() => break response,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_secs(1)).await,
            other => panic!(
                "no answer from cargo lambda watch: {other:?}; see target/consent-callback-watch/{port}.log"
            ),
        }
    };
    let body: serde_json::Value = health.json().await.expect("json");
    assert_eq!(body["status"], "ok");

    let page = client
        .get(format!("{public}/consent"))
        .send()
        .await
        .expect("consent page");
    assert_eq!(page.status(), 200);
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert_eq!(
        csp.as_deref(),
        Some(consent_callback::html::CONTENT_SECURITY_POLICY)
    );
    let html = page.text().await.expect("html");
    assert!(html.contains("Connect Microsoft 365"), "{html}");
    assert!(html.contains("Office 365 connector (watch test)"));
    assert!(html.contains("2d6f0c1e-8a7b-4c3d-9e1f-0a2b3c4d5e6f"));

    let missing = client
        .get(format!("{public}/nothing-here"))
        .send()
        .await
        .expect("404");
    assert_eq!(missing.status(), 404);
}
