//! `connectorctl`: the operator's tool. Talks to the same tables as the functions, through
//! the standard AWS SDK configuration (`AWS_ENDPOINT_URL`, `AWS_REGION`, profiles, ...)
//! and the functions' environment variables (only those a command needs).

mod commands;
mod teams;

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
functions: CRM_TABLE for `crm`, CONNECTIONS_TABLE for `connections`, SYNC_STATE_TABLE \
for `teams targets`, TEAMS_POST_DLQ_URL for `teams failures`."
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
    /// Teams posting: share targets and failed messages.
    Teams {
        #[command(subcommand)]
        command: TeamsCommand,
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

#[derive(Subcommand)]
enum TeamsCommand {
    /// The teams and channels stored for a user at the last refresh (needs SYNC_STATE_TABLE).
    Targets {
        /// The tenant id (GUID).
        #[arg(long)]
        tenant: String,
        /// The user's object id (GUID).
        #[arg(long)]
        user: String,
        /// Print JSON (the stored share targets, or null) instead of a list.
        #[arg(long)]
        json: bool,
    },
    /// Messages teams-post gave up on, with their reasons, from the dead-letter queue
    /// (needs TEAMS_POST_DLQ_URL). Listing leaves them on the queue.
    Failures {
        /// Print JSON (each message with its body and reason attributes).
        #[arg(long)]
        json: bool,
        /// At most this many messages.
        #[arg(long, default_value_t = 100)]
        limit: usize,
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
        Command::Teams {
            command: TeamsCommand::Targets { tenant, user, json },
        } => teams::targets(&tenant, &user, json).await,
        Command::Teams {
            command: TeamsCommand::Failures { json, limit },
        } => teams::failures(json, limit).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
