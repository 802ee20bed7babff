//! `local-stack`: bring the local stack up and down by hand (`make up`,
//! `make down`), or provision a template on an emulator someone else runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use local_stack::{Lifetime, Moto, Template, aws_env, provision, sdk_config, template_path};

#[derive(Parser)]
#[command(about = "The local AWS stack, derived from template.yaml")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start moto in the background, create the template's resources, and
    /// write the environment to `<state-dir>/env`.
    Up {
        #[arg(long, default_value = ".local")]
        state_dir: PathBuf,
        #[arg(long, default_value = "o365-local")]
        stack_name: String,
    },
    /// Stop everything `up` started (by the PIDs it recorded).
    Down {
        #[arg(long, default_value = ".local")]
        state_dir: PathBuf,
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

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Up {
            state_dir,
            stack_name,
        } => up(&state_dir, &stack_name).await,
        Cmd::Down { state_dir } => down(&state_dir),
        Cmd::Provision {
            endpoint,
            stack_name,
            template,
            params,
        } => {
            let params = params
                .iter()
                .map(|p| {
                    p.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .with_context(|| format!("--param {p}: expected NAME=VALUE"))
                })
                .collect::<Result<BTreeMap<_, _>>>()?;
            let template = Template::load(&template.unwrap_or_else(template_path))?;
            let p = provision(
                &sdk_config(&endpoint).await,
                &template,
                &stack_name,
                &params,
            )
            .await?;
            print!("{}", exports(&endpoint, &p.env));
            Ok(())
        }
    }
}

fn exports(endpoint: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let template_env = env.iter().map(|(k, v)| (k.clone(), v.clone()));
    for (k, v) in aws_env(endpoint).into_iter().chain(template_env) {
        let _ = writeln!(out, "export {k}='{v}'");
    }
    out
}

async fn up(state_dir: &Path, stack_name: &str) -> Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let pids = state_dir.join("pids");
    if pids.exists() {
        anyhow::bail!(
            "{} exists: the stack seems up already (run `make down` first)",
            pids.display()
        );
    }
    let moto = Moto::start(Lifetime::Detached, Some(&state_dir.join("moto.log")))?;
    let template = Template::load(&template_path())?;
    // On error `moto` is dropped here, which stops it.
    let provisioned = provision(
        &moto.sdk_config().await,
        &template,
        stack_name,
        &BTreeMap::new(),
    )
    .await
    .context("provisioning the local stack")?;
    let endpoint = moto.endpoint.clone();
    // From here moto outlives us; `down` stops it by PID.
    let pid = moto.into_pid();
    std::fs::write(&pids, format!("{pid}\n"))?;
    let env_file = state_dir.join("env");
    std::fs::write(&env_file, exports(&endpoint, &provisioned.env))?;
    println!(
        "local AWS (moto): {endpoint}  (pid {pid}, log {})",
        state_dir.join("moto.log").display()
    );
    println!("resources from template.yaml, stack name {stack_name}:");
    for c in &provisioned.created {
        println!(
            "  {:<22} {:<28} {}",
            c.logical_id, c.resource_type, c.physical_id
        );
    }
    println!(
        "environment for tools and binaries: source {}",
        env_file.display()
    );
    Ok(())
}

fn down(state_dir: &Path) -> Result<()> {
    let pids = state_dir.join("pids");
    let Ok(text) = std::fs::read_to_string(&pids) else {
        println!("nothing to stop ({} not found)", pids.display());
        return Ok(());
    };
    for pid in text.split_whitespace() {
        let status = std::process::Command::new("kill").arg(pid).status()?;
        println!(
            "stopped pid {pid}{}",
            if status.success() {
                ""
            } else {
                " (was not running)"
            }
        );
    }
    std::fs::remove_file(&pids)?;
    std::fs::remove_file(state_dir.join("env")).ok();
    Ok(())
}
