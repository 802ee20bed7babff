//! `local-stack`: the local stack by hand (`make up`, `make down`), its event plumbing,
//! firing a schedule now, checking the template, or provisioning a template on an
//! emulator someone else runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use local_stack::checks::{check_template, workspace_binaries};
use local_stack::esm::EsmOptions;
use local_stack::plumbing::{Plumbing, PlumbingOptions};
use local_stack::scheduler::fire_now;
use local_stack::stack::{StackInfo, UpOptions};
use local_stack::{Outcome, Template, aws_env, provision, repo_root, sdk_config, template_path};

#[derive(Parser)]
#[command(about = "The local stack, derived from template.yaml")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start moto (with the template's resources), microsoft-sim, the functions under
    /// `cargo lambda watch` and the event plumbing, detached; print the endpoints.
    Up {
        #[arg(long, default_value = ".local")]
        state_dir: PathBuf,
        #[arg(long, default_value = "o365-local")]
        stack_name: String,
        #[arg(long)]
        template: Option<PathBuf>,
        /// microsoft-sim world (default: infra/local/worlds/demo.json, else the sim's minimal world).
        #[arg(long)]
        world: Option<PathBuf>,
        /// Let microsoft-sim sign in and consent without HTML interaction.
        #[arg(long)]
        auto_approve: bool,
        /// Run schedules this many times faster than real time (60: an hour a minute).
        #[arg(long, default_value_t = 1.0)]
        time_factor: f64,
        /// Do not run schedules on their own (fire them with `local-stack fire`).
        #[arg(long)]
        no_schedules: bool,
        /// Do not `cargo build` the functions first.
        #[arg(long)]
        no_build: bool,
        /// Template parameter overrides, NAME=VALUE.
        #[arg(long = "param")]
        params: Vec<String>,
    },
    /// Stop everything `up` started (by the process groups it recorded).
    Down {
        #[arg(long, default_value = ".local")]
        state_dir: PathBuf,
    },
    /// Run the schedules and SQS event source mappings of a stack started by `up`, until
    /// killed (`up` starts it).
    Plumbing {
        #[arg(long, default_value = ".local")]
        state_dir: PathBuf,
    },
    /// Fire schedules of the running stack now and print each invocation's outcome.
    Fire {
        #[arg(long, default_value = ".local")]
        state_dir: PathBuf,
        /// Only the schedules of this function (binary or logical id).
        #[arg(long)]
        function: Option<String>,
        /// Only this rule (name, or event name under the function's Events).
        #[arg(long)]
        rule: Option<String>,
    },
    /// Check the template for what cfn-lint misses; exits 1 on any finding.
    Check {
        #[arg(long)]
        template: Option<PathBuf>,
    },
    /// Create the template's resources on a running emulator and print the
    /// resolved environment as `export` lines.
    Provision {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        stack_name: String,
        #[arg(long)]
        template: Option<PathBuf>,
        /// Parameter overrides, NAME=VALUE.
        #[arg(long = "param")]
        params: Vec<String>,
    },
}

fn parse_params(params: &[String]) -> Result<BTreeMap<String, String>> {
    params
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("--param {p}: expected NAME=VALUE"))
        })
        .collect()
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse().cmd).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Up {
            state_dir,
            stack_name,
            template,
            world,
            auto_approve,
            time_factor,
            no_schedules,
            no_build,
            params,
        } => {
            if time_factor.is_nan() || time_factor <= 0.0 {
                bail!("--time-factor must be positive");
            }
            let opts = UpOptions {
                state_dir,
                stack_name,
                template: template.unwrap_or_else(template_path),
                world,
                auto_approve,
                time_factor,
                schedules: !no_schedules,
                params: parse_params(&params)?,
                build: !no_build,
                local_stack_exe: std::env::current_exe()?,
            };
            let info = local_stack::stack::up(&opts).await?;
            print_up(&info);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Down { state_dir } => {
            for line in local_stack::stack::down(&state_dir)? {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Plumbing { state_dir } => plumbing(&state_dir).await,
        Cmd::Fire {
            state_dir,
            function,
            rule,
        } => fire(&state_dir, function.as_deref(), rule.as_deref()).await,
        Cmd::Check { template } => {
            let template = Template::load(&template.unwrap_or_else(template_path))?;
            let findings = check_template(&template, &workspace_binaries(&repo_root())?);
            for f in &findings {
                println!("{f}");
            }
            if findings.is_empty() {
                println!("template checks: ok");
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::FAILURE)
            }
        }
        Cmd::Provision {
            endpoint,
            stack_name,
            template,
            params,
        } => {
            let params = parse_params(&params)?;
            let template = Template::load(&template.unwrap_or_else(template_path))?;
            let p = provision(
                &sdk_config(&endpoint).await,
                &template,
                &stack_name,
                &params,
            )
            .await?;
            for (k, v) in aws_env(&endpoint).into_iter().chain(p.env) {
                println!("export {k}='{v}'");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_up(info: &StackInfo) {
    println!("local stack {} is up:", info.stack_name);
    println!("  AWS (moto)          {}", info.aws_endpoint);
    println!(
        "  microsoft-sim       {}   (world {})",
        info.microsoft_sim_url,
        info.world.display()
    );
    println!("  cargo lambda watch  {}", info.lambda_watch_url);
    println!("  PUBLIC_BASE_URL     {}", info.public_base_url);
    println!(
        "  consent page        {}/consent   (app {})",
        info.public_base_url, info.client_id
    );
    println!(
        "schedules ({}):",
        if info.schedules {
            format!("running, time factor {}", info.time_factor)
        } else {
            "fire with `local-stack fire`".into()
        }
    );
    for s in &info.wiring.schedules {
        println!(
            "  {:<40} {:<24} -> {}{}",
            s.rule_name,
            s.expression_text,
            s.binary,
            if s.enabled { "" } else { " (disabled)" }
        );
    }
    println!("SQS event source mappings:");
    for m in &info.wiring.mappings {
        println!(
            "  {:<40} -> {} (batch {}, window {}s, max concurrency {}{})",
            m.queue_url,
            m.binary,
            m.batch_size,
            m.batching_window.as_secs(),
            m.maximum_concurrency,
            if m.report_batch_item_failures {
                ", ReportBatchItemFailures"
            } else {
                ""
            }
        );
    }
    println!("processes:");
    for p in &info.processes {
        println!("  {:<20} pid {:<8} log {}", p.name, p.pid, p.log.display());
    }
    println!(
        "environment for tools: source {}   (functions get {})",
        info.env_file.display(),
        info.functions_env_file.display()
    );
    println!("stop everything: make down");
}

async fn plumbing(state_dir: &std::path::Path) -> Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .with_ansi(false)
        .init();
    let info = StackInfo::load(state_dir)?;
    let sdk = info.sdk_config().await;
    let invoker = Arc::new(info.plumbing_invoker(state_dir));
    let options = PlumbingOptions {
        time_factor: info.time_factor,
        schedules: info.schedules,
        esm: EsmOptions::default(),
        streams: Default::default(),
    };
    let plumbing = Plumbing::start(info.wiring.clone(), &sdk, invoker, options);
    tracing::info!(
        schedules = info.wiring.schedules.len(),
        mappings = info.wiring.mappings.len(),
        streams = info.wiring.streams.len(),
        "plumbing running"
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    // A long poll in progress would hold the stop for up to 20 s; invocations cut short
    // leave their messages to reappear after the visibility timeout, as a crash would.
    tracing::info!("stopping: waiting up to 3 s for invocations in flight");
    match tokio::time::timeout(std::time::Duration::from_secs(3), plumbing.stop()).await {
        Ok(stopped) => stopped?,
        Err(_) => tracing::warn!("invocations still in flight at exit"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn fire(
    state_dir: &std::path::Path,
    function: Option<&str>,
    rule: Option<&str>,
) -> Result<ExitCode> {
    let info = StackInfo::load(state_dir)?;
    let invoker = info.invoker();
    let targets: Vec<_> = info
        .wiring
        .schedules
        .iter()
        .filter(|t| function.is_none_or(|f| t.binary == f || t.function_logical_id == f))
        .filter(|t| rule.is_none_or(|r| t.rule_name == r || t.event_name == r))
        .collect();
    if targets.is_empty() {
        bail!(
            "no schedule matches (the template declares: {})",
            info.wiring
                .schedules
                .iter()
                .map(|t| t.rule_name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut ok = true;
    for t in targets {
        let outcome = fire_now(&invoker, t).await?;
        let line = match &outcome {
            Outcome::Ok(response) => {
                serde_json::json!({"rule": t.rule_name, "function": t.binary, "ok": true, "response": response})
            }
            Outcome::FunctionError {
                error_type,
                error_message,
            } => {
                ok = false;
                serde_json::json!({"rule": t.rule_name, "function": t.binary, "ok": false, "errorType": error_type, "errorMessage": error_message})
            }
        };
        println!("{line}");
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
