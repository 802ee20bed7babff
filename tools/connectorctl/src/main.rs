//! `connectorctl`: the operator's tool. Talks to the same tables as the functions, through
//! the standard AWS SDK configuration (`AWS_ENDPOINT_URL`, `AWS_REGION`, profiles, ...)
//! and the functions' environment variables (only those a command needs).

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "connectorctl",
    version,
    about = "Operate the Office 365 connector: import CRM snapshots, inspect connections.",
    long_about = "Operate the Office 365 connector.\n\n\
AWS access uses the standard SDK configuration (AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL \
for a local emulator, ...). Table names come from the same environment variables as the \
functions: CRM_TABLE for `crm`, CONNECTIONS_TABLE for `connections`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The tenant's CRM index (which addresses and domains are CRM records).
    Crm {
        #[command(subcommand)]
        command: CrmCommand,
    },
    /// Connected users.
    Connections {
        #[command(subcommand)]
        command: ConnectionsCommand,
    },
}

#[derive(Subcommand)]
enum CrmCommand {
    /// Validate a CRM snapshot file and make it the tenant's index (needs CRM_TABLE).
    ///
    /// A malformed or invalid file is refused with the JSON path (and line/column) of
    /// the problem, and nothing is written. Importing the same content again is a no-op.
    Import {
        /// The snapshot: {"tenantId", "accounts", "contacts", "leads", "opportunities"}.
        file: PathBuf,
        /// Only validate the file; touch no AWS resource.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum ConnectionsCommand {
    /// List connections and their status (needs CONNECTIONS_TABLE).
    List {
        /// Print JSON (an array of connection records) instead of a table.
        #[arg(long)]
        json: bool,
        /// Only this tenant's connections.
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crm {
            command: CrmCommand::Import { file, dry_run },
        } => commands::crm_import(&file, dry_run).await,
        Command::Connections {
            command: ConnectionsCommand::List { json, tenant },
        } => commands::connections_list(json, tenant.as_deref()).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
