//! The `microsoft-sim` binary: loads a world, serves it on loopback, prints `listening on <base URL>` first.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use microsoft_sim::{SimOptions, SimServer, World};

#[derive(Parser, Debug)]
#[command(
    name = "microsoft-sim",
    about = "A local Microsoft identity platform and Graph v1.0 for tests"
)]
struct Args {
    /// Address to bind (loopback; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// The world file (JSON).
    #[arg(long)]
    world: PathBuf,
    /// Serve https with a generated CA; DIR/ca.pem is written for clients to trust.
    #[arg(long, value_name = "DIR")]
    tls_self_signed: Option<PathBuf>,
    /// Sign in the login_hint user and accept consent where policy allows, without HTML interaction.
    #[arg(long)]
    auto_approve: bool,
    /// Access-token lifetime in seconds.
    #[arg(long, default_value_t = 3599)]
    access_token_lifetime: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let world = World::load(&args.world)?;
    let mut options = SimOptions::new(world);
    options.addr = args.addr;
    options.tls_dir = args.tls_self_signed;
    options.auto_approve = args.auto_approve;
    options.access_token_lifetime = Duration::from_secs(args.access_token_lifetime);
    let server = SimServer::start(options).await?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {}", server.base_url())?;
        stdout.flush()?;
    }
    tokio::select! {
        result = server.wait() => result,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
