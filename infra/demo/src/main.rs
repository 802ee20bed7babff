//! `make demo`: runs the journey of [`demo::run`] and prints its report; exits 0 only when
//! every step did what it says.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(about = "The whole product on the local stack, driven headlessly, with a report")]
struct Cli {
    #[arg(long, default_value = ".local/demo")]
    state_dir: PathBuf,
    /// Messages per generated folder (default: the world's).
    #[arg(long)]
    messages: Option<u64>,
    /// Leave the stack running afterwards (stop it with `local-stack down --state-dir ...`).
    #[arg(long)]
    keep: bool,
    /// Feature bundles to consent and sign in with (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "all")]
    bundles: Vec<String>,
    /// Features users of a tenant not known yet are asked for at sign-in (DefaultFeatures).
    #[arg(long, default_value = "all")]
    sign_in_features: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut opts = demo::Options::new(cli.state_dir);
    opts.messages_per_folder = cli.messages;
    opts.keep = cli.keep;
    opts.bundles = cli.bundles;
    opts.sign_in_features = cli.sign_in_features;
    // Ctrl-C drops the journey, whose guard stops the stack it started.
    let result = tokio::select! {
        r = demo::run(&opts) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    match result {
        Ok(report) => {
            println!("{}", report.render());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "\ndemo FAILED: {e:#}\n(logs of every process in {})",
                opts.state_dir.display()
            );
            ExitCode::FAILURE
        }
    }
}
