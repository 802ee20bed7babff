//! `connectorctl`: the operator's tool. Talks to the same tables as the functions, through
//! the standard AWS SDK configuration (`AWS_ENDPOINT_URL`, `AWS_REGION`, profiles, ...)
//! and the functions' environment variables (only those a command needs).

mod calendar;
mod commands;
mod consent;
mod mail;
mod offboard;
mod subscriptions;
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
functions: CRM_TABLE for `crm`, CONNECTIONS_TABLE for `connections`, TENANTS_TABLE for `retention`, SYNC_STATE_TABLE \
for `teams targets`, TEAMS_POST_DLQ_URL for `teams failures`, ACTIVITIES_TABLE for \
`activities`, CONNECTIONS_TABLE and SYNC_STATE_TABLE for `status`; `sync mail` needs the \
functions' whole environment (tables, queues, CLIENT_ID, CLIENT_SECRET_ID, LOGIN_BASE_URL, \
GRAPH_BASE_URL)."
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
    /// How long a tenant's imported mail and meetings are kept, in days from each one's
    /// own date (needs TENANTS_TABLE). Without --days, prints it; `--days default` returns to
    /// the stack's ActivityRetentionDays. Applies to activities written from then on.
    Retention {
        /// The tenant id (GUID).
        #[arg(long)]
        tenant: String,
        /// 1-3650, or `default`.
        #[arg(long)]
        days: Option<String>,
    },
    /// Teams posting: share targets and failed messages.
    Teams {
        #[command(subcommand)]
        command: TeamsCommand,
    },
    /// Run a user's sync here: the function's worker path on the configured tables, queue,
    /// vault and Microsoft endpoints (needs the functions' full environment).
    Sync {
        #[command(subcommand)]
        command: SyncCommand,
    },
    /// A user's imported mail and meetings (needs ACTIVITIES_TABLE).
    Activities {
        /// The tenant id (GUID).
        #[arg(long)]
        tenant: String,
        /// The user's object id (GUID).
        #[arg(long)]
        user: String,
        /// Print JSON (the stored activities) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A user's change-notification subscriptions: per kind, Graph's id and resource, the
    /// expiry and state (healthy, renewal_due, expired, failed, none), the last renewal or
    /// why the creation failed (needs SUBSCRIPTIONS_TABLE).
    Subscriptions {
        /// The tenant id (GUID).
        #[arg(long)]
        tenant: String,
        /// The user's object id (GUID).
        #[arg(long)]
        user: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a tenant's switches, or flip them (needs TENANTS_TABLE): what the
    /// administrator's page and the platform API change.
    TenantSwitches {
        /// The tenant id (GUID).
        #[arg(long)]
        tenant: String,
        /// Email sync for the tenant's users.
        #[arg(long, value_name = "on|off", value_parser = on_off)]
        mail: Option<bool>,
        /// Calendar sync for the tenant's users.
        #[arg(long, value_name = "on|off", value_parser = on_off)]
        calendar: Option<bool>,
        /// Posting to Teams on users' behalf.
        #[arg(long, value_name = "on|off", value_parser = on_off)]
        teams: Option<bool>,
        /// Explicit Consent Mode (recording consent through the meeting invite).
        #[arg(long, value_name = "on|off", value_parser = on_off)]
        explicit_consent: Option<bool>,
        /// Graph change notifications.
        #[arg(long, value_name = "on|off", value_parser = on_off)]
        change_notifications: Option<bool>,
        /// Print the switches as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A host's meetings under Explicit Consent Mode: status, guests' answers, decision
    /// (needs ACTIVITIES_TABLE).
    ConsentMeetings {
        /// The tenant id (GUID).
        #[arg(long)]
        tenant: String,
        /// The host's object id (GUID).
        #[arg(long)]
        user: String,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Show a user's switches, or flip them (needs CONNECTIONS_TABLE). Turning internal
    /// meetings on or off makes the next calendar sync read the calendar window again.
    Switches {
        /// The tenant id (GUID).
        #[arg(long)]
        tenant: String,
        /// The user's object id (GUID).
        #[arg(long)]
        user: String,
        /// Calendar sync (the fan-out skips users with it off).
        #[arg(long, value_name = "on|off", value_parser = on_off)]
        calendar: Option<bool>,
        /// Import meetings whose participants are all internal.
        #[arg(long, value_name = "on|off", value_parser = on_off)]
        internal_meetings: Option<bool>,
        /// Mail sync.
        #[arg(long, value_name = "on|off", value_parser = on_off)]
        mail: Option<bool>,
        /// Print the switches as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every connection's status, sync stage, last success, counts and last error
    /// (needs CONNECTIONS_TABLE and SYNC_STATE_TABLE).
    Status {
        /// Print JSON (each connection with its mail and calendar sync state).
        #[arg(long)]
        json: bool,
    },
    /// Disconnect a user: the connection becomes `disconnected` (nothing personal kept),
    /// and the token secret, mail and calendar sync state, imported activities and Teams
    /// share targets are deleted (needs CONNECTIONS_TABLE, SYNC_STATE_TABLE,
    /// ACTIVITIES_TABLE). A later sign-in starts fresh.
    Disconnect {
        /// The tenant id (GUID).
        #[arg(long)]
        tenant: String,
        /// The user's object id (GUID).
        #[arg(long)]
        user: String,
        /// Seconds to wait for a sync that is running for the user to finish.
        #[arg(long, default_value_t = 60)]
        wait: u64,
        /// Print what was done as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Offboard a tenant: every user's data as `disconnect` deletes it and their
    /// connection records, the CRM index, the consent (tenant) record, domain aliases,
    /// sign-in flows in progress and Teams idempotency records (needs the tables of
    /// `disconnect` and TENANTS_TABLE, CRM_TABLE, AUTH_SESSIONS_TABLE, IDEMPOTENCY_TABLE).
    OffboardTenant {
        /// The tenant id (GUID).
        #[arg(long)]
        tenant: String,
        /// Seconds to wait for each running sync to finish.
        #[arg(long, default_value_t = 60)]
        wait: u64,
        /// Print what was done as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SyncCommand {
    /// One mail sync run for the user (mail-sync's worker path).
    Mail {
        /// The tenant id (GUID).
        #[arg(long)]
        tenant: String,
        /// The user's object id (GUID).
        #[arg(long)]
        user: String,
        /// Time the run may take, in minutes (it checkpoints and stops a minute before).
        #[arg(long, default_value_t = 14)]
        minutes: u64,
        /// Print the outcome and the run's figures as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One calendar sync run for the user (calendar-sync's worker path).
    Calendar {
        /// The tenant id (GUID).
        #[arg(long)]
        tenant: String,
        /// The user's object id (GUID).
        #[arg(long)]
        user: String,
        /// Time the run may take, in minutes (it checkpoints and stops a minute before).
        #[arg(long, default_value_t = 14)]
        minutes: u64,
        /// Print the outcome and the run's figures as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `on` / `off` (also true/false, yes/no).
fn on_off(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        other => Err(format!("`{other}`: expected on or off")),
    }
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
        /// Only disconnections that have not finished (`disconnected`, reason
        /// `disconnect_pending`): their data may remain; `disconnect` finishes each.
        #[arg(long)]
        pending_disconnections: bool,
    },
    /// Give connection records written before the status index was sharded their
    /// `statusShard`, so fan-out finds them (needs CONNECTIONS_TABLE). Idempotent; run once
    /// after deploying the `ByStatusShard` index (docs/data-model.md).
    BackfillShards,
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
            command:
                ConnectionsCommand::List {
                    json,
                    tenant,
                    pending_disconnections,
                },
        } => commands::connections_list(json, tenant.as_deref(), pending_disconnections).await,
        Command::Connections {
            command: ConnectionsCommand::BackfillShards,
        } => commands::backfill_shards().await,
        Command::Retention { tenant, days } => commands::retention(&tenant, days).await,
        Command::Teams {
            command: TeamsCommand::Targets { tenant, user, json },
        } => teams::targets(&tenant, &user, json).await,
        Command::Teams {
            command: TeamsCommand::Failures { json, limit },
        } => teams::failures(json, limit).await,
        Command::Sync {
            command:
                SyncCommand::Mail {
                    tenant,
                    user,
                    minutes,
                    json,
                },
        } => mail::sync_mail(&tenant, &user, minutes, json).await,
        Command::Sync {
            command:
                SyncCommand::Calendar {
                    tenant,
                    user,
                    minutes,
                    json,
                },
        } => calendar::sync(&tenant, &user, minutes, json).await,
        Command::Switches {
            tenant,
            user,
            calendar,
            internal_meetings,
            mail,
            json,
        } => calendar::switches(&tenant, &user, calendar, internal_meetings, mail, json).await,
        Command::TenantSwitches {
            tenant,
            mail,
            calendar,
            teams,
            explicit_consent,
            change_notifications,
            json,
        } => {
            consent::tenant_switches(
                &tenant,
                consent::SwitchChanges {
                    mail,
                    calendar,
                    teams,
                    explicit_consent,
                    change_notifications,
                },
                json,
            )
            .await
        }
        Command::ConsentMeetings { tenant, user, json } => {
            consent::consent_meetings(&tenant, &user, json).await
        }
        Command::Activities { tenant, user, json } => mail::activities(&tenant, &user, json).await,
        Command::Subscriptions { tenant, user, json } => {
            subscriptions::show(&tenant, &user, json).await
        }
        Command::Status { json } => mail::status(json).await,
        Command::Disconnect {
            tenant,
            user,
            wait,
            json,
        } => offboard::disconnect(&tenant, &user, wait, json).await,
        Command::OffboardTenant { tenant, wait, json } => {
            offboard::offboard_tenant(&tenant, wait, json).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
