//! Calendar commands: `sync calendar` runs calendar-sync's worker path for one user from
//! here (same wiring as the Lambda), and `switches` shows or flips a user's switches.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use aws_config::BehaviorVersion;
use calendar_sync::CalendarSync;
use connector_core::adapters::dynamodb::DynamoConnectionStore;
use connector_core::clock::SystemClock;
use connector_core::config::{Config, table_name, vars};
use connector_core::domain::{SyncKind, TenantId, UserId, UserKey, UserSwitches};
use connector_core::messages::{SyncJob, SyncReason};
use connector_core::ports::ConnectionStore;
use connector_core::sync::{Delivery, FanOutReport, JobOutcome, RunSummary, SummarySink};
use time::OffsetDateTime;

fn user_key(tenant: &str, user: &str) -> Result<UserKey> {
    Ok(UserKey::new(
        TenantId::parse(tenant).context("--tenant must be the tenant id (a GUID)")?,
        UserId::parse(user).context("--user must be the user's object id (a GUID)")?,
    ))
}

/// Keeps the run's summary for printing.
#[derive(Default)]
struct Summaries(Mutex<Option<RunSummary>>);

impl SummarySink for Summaries {
    fn run(&self, summary: &RunSummary) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(summary.clone());
    }

    fn fan_out(&self, _function: &'static str, _kind: SyncKind, _report: &FanOutReport) {}
}

/// `sync calendar`: one run of calendar-sync's worker path for the user, with `minutes` of
/// time (it checkpoints and stops a minute before; the rest is left to a continuation job).
pub async fn sync(tenant: &str, user: &str, minutes: u64, json: bool) -> Result<()> {
    let key = user_key(tenant, user)?;
    let config = Config::from_env().context("configuration")?;
    let aws = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let summaries = Arc::new(Summaries::default());
    let app = CalendarSync::wire(&config, &aws, Arc::new(SystemClock), summaries.clone())
        .context("building the HTTP clients")?;
    let job = SyncJob::new(
        SyncKind::Calendar,
        key.tenant_id.clone(),
        key.user_id.clone(),
        SyncReason::Manual,
    );
    let delivery = Delivery {
        receipt_handle: None,
        receive_count: 1,
        deadline: tokio::time::Instant::now() + Duration::from_secs(minutes.max(2) * 60),
    };
    let outcome = app.worker.run_job(app.work.as_ref(), &job, &delivery).await;
    let summary = summaries
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "outcome": outcome.label(),
                "detail": format!("{outcome:?}"),
                "summary": summary,
            }))?
        );
    } else {
        println!("outcome: {} ({outcome:?})", outcome.label());
        if let Some(s) = summary {
            println!(
                "stage {} · scanned {} · matched {} · stored {} · removed {} · discarded {} · \
                 pages {} · Graph requests {} · throttled {} · {} ms",
                s.stage,
                s.scanned,
                s.matched,
                s.stored,
                s.removed,
                s.discarded,
                s.pages,
                s.graph_requests,
                s.throttled,
                s.elapsed_ms
            );
        }
        if outcome == JobOutcome::Continued {
            println!("out of time: a continuation job was queued for the function");
        }
    }
    anyhow::ensure!(
        !matches!(outcome, JobOutcome::Retry { .. }),
        "the run failed and would be retried"
    );
    Ok(())
}

fn on_off(value: bool) -> &'static str {
    if value { "on" } else { "off" }
}

/// Shows the user's switches, after applying the given ones.
pub async fn switches(
    tenant: &str,
    user: &str,
    calendar: Option<bool>,
    internal_meetings: Option<bool>,
    mail: Option<bool>,
    json: bool,
) -> Result<()> {
    let key = user_key(tenant, user)?;
    let table = table_name(
        &|name: &str| std::env::var(name).ok(),
        vars::CONNECTIONS_TABLE,
    )?;
    let sdk = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let store = DynamoConnectionStore::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    let connection = store
        .get_connection(&key)
        .await?
        .with_context(|| format!("no connection for {key}"))?;
    let mut switches: UserSwitches = connection.switches;
    if let Some(on) = calendar {
        switches.calendar_sync = on;
    }
    if let Some(on) = internal_meetings {
        switches.internal_meetings = on;
    }
    if let Some(on) = mail {
        switches.mail_sync = on;
    }
    if switches != connection.switches {
        store
            .set_switches(&key, switches, OffsetDateTime::now_utc())
            .await?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&switches)?);
    } else {
        println!(
            "{key}: mail sync {}, calendar sync {}, internal meetings {}",
            on_off(switches.mail_sync),
            on_off(switches.calendar_sync),
            on_off(switches.internal_meetings)
        );
    }
    Ok(())
}
