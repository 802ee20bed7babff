//! The whole local stack as `make up` starts it, from the repository's template: the
//! functions answer under `cargo lambda watch` with the stack's environment, the HTTP
//! invoker reads watch's answers right (response, function error, unknown function), the
//! plumbing runs, and `down` leaves nothing behind.

use std::path::PathBuf;
use std::time::Duration;

use local_stack::invoke::{InvokeError, Invoker};
use local_stack::stack::{StackInfo, UpOptions, alive, down, up};
use local_stack::{Outcome, template_path};
use serde_json::json;

/// Stops the stack even when an assertion fails.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = down(&self.0);
    }
}

#[tokio::test]
async fn up_runs_the_functions_under_cargo_lambda_watch_and_down_stops_everything() {
    let dir = tempfile_dir();
    let opts = UpOptions {
        state_dir: dir.clone(),
        stack_name: format!("up{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        template: template_path(),
        world: None,
        auto_approve: true,
        time_factor: 1.0,
        schedules: false,
        params: Default::default(),
        // Binaries not built yet are compiled by watch on their first invocation.
        build: false,
        local_stack_exe: PathBuf::from(env!("CARGO_BIN_EXE_local-stack")),
    };
    let info = up(&opts).await.expect("the stack comes up");
    let guard = Down(dir.clone());
    assert_eq!(
        StackInfo::load(&dir).unwrap().lambda_watch_url,
        info.lambda_watch_url
    );
    let names: Vec<&str> = info.processes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["microsoft-sim", "moto", "cargo-lambda-watch", "plumbing"]
    );

    // The HTTP function under its function URL, configured from the stack.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(900))
        .build()
        .unwrap();
    let health = client
        .get(format!("{}/healthz", info.public_base_url))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    assert_eq!(info.functions_env["LOGIN_BASE_URL"], info.microsoft_sim_url);
    assert_eq!(info.functions_env["PUBLIC_BASE_URL"], info.public_base_url);
    assert_eq!(info.functions_env["CLIENT_ID"], info.client_id);
    let world: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&info.world).unwrap()).unwrap();
    assert!(
        world
            .to_string()
            .contains(&format!("{}/auth/callback", info.public_base_url)),
        "the world registers our redirect URI"
    );

    // The invoker against watch: a handler error, an unknown function, a response.
    let invoker = info.invoker();
    let scheduled = info
        .wiring
        .schedules
        .first()
        .expect("the template schedules something")
        .clone();
    match invoker
        .invoke(&scheduled.binary, &json!({"neither": "schedule nor SQS"}))
        .await
        .expect("invoked")
    {
        Outcome::FunctionError { error_message, .. } => {
            assert!(!error_message.is_empty())
        }
        other => panic!("a handler error expected, got {other:?}"),
    }
    assert!(matches!(
        invoker.invoke("no-such-function", &json!({})).await,
        Err(InvokeError::UnknownFunction(_))
    ));
    let fired = local_stack::scheduler::fire_now(&invoker, &scheduled)
        .await
        .expect("fired");
    assert!(
        fired.is_ok(),
        "{} on a scheduled event: {fired:?}",
        scheduled.binary
    );

    // Everything runs in its own group; down stops them all.
    let pids: Vec<u32> = info.processes.iter().map(|p| p.pid).collect();
    assert!(pids.iter().all(|p| alive(*p)));
    drop(guard);
    assert!(pids.iter().all(|p| !alive(*p)), "still running after down");
    assert!(!dir.join("pids").exists());
}

fn tempfile_dir() -> PathBuf {
    let dir = local_stack::repo_root()
        .join("target/local-stack-tests")
        .join(uuid::Uuid::new_v4().simple().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
