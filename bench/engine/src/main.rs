//! `connector-bench run` (every measurement, see `run.rs`) and `connector-bench list` (the
//! Rust listing client the run starts as a child process).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use connector_bench::listing::{self, ListingSpec};
use connector_bench::notifications::NotifyOptions;
use connector_bench::run::{self, RunOptions};

#[derive(Parser)]
#[command(about = "Measured speed, memory and cost of the connector (make bench)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every measurement of issue 9 items 2-6 and issue 15; writes OUT/measurements.json.
    Run {
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
        /// The repository root (events/, bench/, .venv).
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Where the release function binaries are.
        #[arg(long, default_value = "target/release")]
        bin_dir: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        small: u64,
        #[arg(long, default_value_t = 100_000)]
        large: u64,
        #[arg(long, default_value_t = 100_000)]
        connections: usize,
        /// Connections of the fan-out run on moto alone (the rest through the stand-in):
        /// moto answers SendMessageBatch in ~0.1 s, so this stays small.
        #[arg(long, default_value_t = 2_000)]
        moto_connections: usize,
        #[arg(long, default_value_t = 50)]
        latency_ms: u64,
        #[arg(long, default_value_t = 5)]
        cold_runs: usize,
        /// Messages that arrive one at a time in the change-notification latency run.
        #[arg(long, default_value_t = 200)]
        arrivals: usize,
        /// Time between two arrivals (ms), plus up to --arrival-jitter-ms more.
        #[arg(long, default_value_t = 4_000)]
        arrival_spacing_ms: u64,
        #[arg(long, default_value_t = 2_000)]
        arrival_jitter_ms: u64,
        /// Notification POSTs in flight in the webhook throughput runs, and how long each runs.
        #[arg(long, default_value_t = 8)]
        webhook_concurrency: usize,
        #[arg(long, default_value_t = 10)]
        webhook_seconds: u64,
        /// Leave msgraph-sdk out (it is the slow part of the run).
        #[arg(long)]
        no_sdk: bool,
        /// Run only these parts (comma-separated: cold, listings, imports, crm-changes,
        /// fan-out, notifications); crm-changes without imports imports the large mailbox
        /// alone (it measures right after that import). The report shows the parts it finds.
        #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(run::PARTS))]
        only: Vec<String>,
    },
    /// Pages a folder like the worker's listing (child process of `run`); token in
    /// BENCH_GRAPH_TOKEN; prints one JSON report line.
    List {
        #[arg(long)]
        spec: PathBuf,
    },
}

fn main() -> Result<()> {
    let command = Cli::parse().command;
    // The listing runs on one thread, as the functions do (their `main`); the orchestrator,
    // which also hosts microsoft-sim and the AWS proxy, on all cores.
    let runtime = match command {
        Command::List { .. } => tokio::runtime::Builder::new_current_thread(),
        Command::Run { .. } => tokio::runtime::Builder::new_multi_thread(),
    }
    .enable_all()
    .build()?;
    runtime.block_on(main_async(command))
}

async fn main_async(command: Command) -> Result<()> {
    match command {
        Command::Run {
            out,
            repo,
            bin_dir,
            small,
            large,
            connections,
            moto_connections,
            latency_ms,
            cold_runs,
            arrivals,
            arrival_spacing_ms,
            arrival_jitter_ms,
            webhook_concurrency,
            webhook_seconds,
            no_sdk,
            only,
        } => {
            let repo = std::fs::canonicalize(&repo).context("the repository root")?;
            let out = repo.join(out);
            let options = RunOptions {
                out: out.clone(),
                bin_dir: repo.join(bin_dir),
                repo,
                small,
                large,
                connections,
                moto_connections,
                latency_ms,
                cold_runs,
                sdk: !no_sdk,
                notify: NotifyOptions {
                    arrivals,
                    spacing_ms: arrival_spacing_ms,
                    jitter_ms: arrival_jitter_ms,
                    concurrency: webhook_concurrency,
                    throughput_seconds: webhook_seconds,
                    ..NotifyOptions::default()
                },
                parts: if only.is_empty() {
                    run::PARTS.iter().map(|p| p.to_string()).collect()
                } else {
                    only.into_iter().collect()
                },
            };
            let measurements = run::run(options).await?;
            let path = out.join("measurements.json");
            std::fs::write(&path, serde_json::to_vec_pretty(&measurements)?)?;
            eprintln!("[bench] wrote {}", path.display());
        }
        Command::List { spec } => {
            let spec: ListingSpec = serde_json::from_slice(
                &std::fs::read(&spec).with_context(|| format!("reading {}", spec.display()))?,
            )?;
            let report = listing::run(&spec).await?;
            println!("{}", serde_json::to_string(&report)?);
        }
    }
    Ok(())
}
