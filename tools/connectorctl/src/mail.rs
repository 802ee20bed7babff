//! Sync operations: run a user's mail sync here (the worker path of mail-sync, on the real
//! tables, queue, vault and Microsoft endpoints), list a user's imported activities, and
//! show every connection's status and sync state.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use aws_config::BehaviorVersion;
use connector_core::adapters::dynamodb::{
    DynamoActivityStore, DynamoConnectionStore, DynamoSyncStateStore,
};
use connector_core::config::{Config, table_name, vars};
use connector_core::domain::{
    Activity, ActivityContent, Connection, SyncKey, SyncKind, SyncMeta, TenantId, UserId, UserKey,
};
use connector_core::messages::{SyncJob, SyncReason};
use connector_core::ports::{ActivityStore, ConnectionStore, SyncStateStore};
use connector_core::sync::{Delivery, FanOutReport, RunSummary, SummarySink};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn user_key(tenant: &str, user: &str) -> Result<UserKey> {
    Ok(UserKey::new(
        TenantId::parse(tenant).context("--tenant must be the tenant id (GUID)")?,
        UserId::parse(user).context("--user must be the user's object id (GUID)")?,
    ))
}

fn at(time: Option<OffsetDateTime>) -> String {
    time.and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "-".into())
}

/// Keeps the run's summary for printing.
#[derive(Default)]
struct KeepSummary(Mutex<Option<RunSummary>>);

impl SummarySink for KeepSummary {
    fn run(&self, summary: &RunSummary) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(summary.clone());
    }
    fn fan_out(&self, _: &'static str, _: SyncKind, _: &FanOutReport) {}
}

/// `sync mail`: one run of the worker path for the user, with `minutes` of time.
pub async fn sync_mail(tenant: &str, user: &str, minutes: u64, json: bool) -> Result<()> {
    let key = user_key(tenant, user)?;
    let config = Config::from_env()?;
    let settings = mail_sync::MailSettings::from_lookup(env).map_err(anyhow::Error::msg)?;
    let sdk = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let summaries = Arc::new(KeepSummary::default());
    let bucket = connector_core::config::bucket_name(&env, vars::MESSAGE_BODIES_BUCKET)?;
    let app = mail_sync::build_app(
        &config,
        settings,
        &bucket,
        &sdk,
        summaries.clone(),
        Default::default(),
    )?;
    let job = SyncJob::new(
        SyncKind::Mail,
        key.tenant_id.clone(),
        key.user_id.clone(),
        SyncReason::Manual,
    );
    let delivery = Delivery {
        receipt_handle: None,
        receive_count: 1,
        // The worker keeps a 60 s margin before this.
        deadline: tokio::time::Instant::now() + Duration::from_secs(minutes.max(2) * 60),
    };
    let outcome = app.worker.run_job(&app.work, &job, &delivery).await;
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
                "folders {} · scanned {} · matched {} · stored {} · removed {} · discarded {} · pages {} · Graph requests {} ({} in $batch) · throttled {} · {} ms",
                s.folders,
                s.scanned,
                s.matched,
                s.stored,
                s.removed,
                s.discarded,
                s.pages,
                s.graph_requests,
                s.batch_items,
                s.throttled,
                s.elapsed_ms
            );
        }
        if outcome == connector_core::sync::JobOutcome::Continued {
            println!("out of time: a continuation job was queued for the function");
        }
    }
    anyhow::ensure!(
        !matches!(outcome, connector_core::sync::JobOutcome::Retry { .. }),
        "the run failed and would be retried"
    );
    Ok(())
}

async fn dynamodb() -> aws_sdk_dynamodb::Client {
    let sdk = aws_config::load_defaults(BehaviorVersion::latest()).await;
    aws_sdk_dynamodb::Client::new(&sdk)
}

/// `activities`: a user's imported mail and meetings. `--json` prints each whole: a mail's
/// body and every participant read back from the bodies bucket.
pub async fn activities(tenant: &str, user: &str, json: bool) -> Result<()> {
    let key = user_key(tenant, user)?;
    let table = table_name(&env, vars::ACTIVITIES_TABLE)?;
    let sdk = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let store = DynamoActivityStore::new(aws_sdk_dynamodb::Client::new(&sdk), table)
        .with_bodies(crate::offboard::body_store(&sdk)?);
    let mut all: Vec<Activity> = Vec::new();
    let mut token = None;
    loop {
        let page = store.list_activities(&key, 500, token.as_ref()).await?;
        all.extend(page.items);
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    if json {
        // A listed item holds a bounded part of a mail; read each whole.
        for activity in &mut all {
            if let ActivityContent::Mail(mail) = &activity.content
                && mail.detail.is_some()
                && let Some(whole) = store.get_activity(&key, &activity.activity_id).await?
            {
                *activity = whole;
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    if all.is_empty() {
        println!("no imported activities for {key}");
        return Ok(());
    }
    println!("{:<25} {:<8} {:<40} MATCHED ON", "WHEN", "KIND", "SUBJECT");
    for activity in &all {
        let (kind, when, subject) = match &activity.content {
            ActivityContent::Mail(mail) => ("mail", mail.received_at, mail.subject.as_str()),
            ActivityContent::Meeting(meeting) => {
                ("meeting", Some(meeting.start), meeting.subject.as_str())
            }
        };
        let matched: Vec<String> = activity
            .matches
            .iter()
            .map(|m| m.matched_on.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let subject: String = subject.chars().take(40).collect();
        println!(
            "{:<25} {kind:<8} {subject:<40} {}",
            at(when),
            matched.join(", ")
        );
    }
    println!("{} activities", all.len());
    Ok(())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusRow {
    #[serde(flatten)]
    connection: Connection,
    mail: Option<SyncMeta>,
    calendar: Option<SyncMeta>,
}

/// `status`: every connection with its status and its mail and calendar sync state.
pub async fn status(json: bool) -> Result<()> {
    let client = dynamodb().await;
    let connections =
        DynamoConnectionStore::new(client.clone(), table_name(&env, vars::CONNECTIONS_TABLE)?);
    let state = DynamoSyncStateStore::new(client, table_name(&env, vars::SYNC_STATE_TABLE)?);
    let mut rows = Vec::new();
    let mut token = None;
    loop {
        let page = connections.list_all(200, token.as_ref()).await?;
        for connection in page.items {
            let key = |kind| {
                SyncKey::new(
                    connection.tenant_id.clone(),
                    connection.user_id.clone(),
                    kind,
                )
            };
            let mail = state.get_meta(&key(SyncKind::Mail)).await?;
            let calendar = state.get_meta(&key(SyncKind::Calendar)).await?;
            rows.push(StatusRow {
                connection,
                mail,
                calendar,
            });
        }
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no connections");
        return Ok(());
    }
    println!(
        "{:<30} {:<20} {:<9} {:<15} {:<25} {:>8} {:>7}  LAST ERROR",
        "USER", "STATUS", "SYNC", "STAGE", "LAST SUCCESS", "SCANNED", "STORED"
    );
    for row in &rows {
        let status = match &row.connection.status_reason {
            Some(reason) => format!("{} ({reason})", row.connection.status),
            None => row.connection.status.to_string(),
        };
        for (kind, meta) in [("mail", &row.mail), ("calendar", &row.calendar)] {
            let Some(meta) = meta else {
                continue;
            };
            let error = meta
                .last_error
                .as_ref()
                .map(|e| format!("{} at {}", e.code, at(Some(e.at))))
                .unwrap_or_else(|| "-".into());
            println!(
                "{:<30} {:<20} {kind:<9} {:<15} {:<25} {:>8} {:>7}  {error}",
                row.connection.upn,
                status,
                meta.stage.as_str(),
                at(meta.last_success_at),
                meta.totals.scanned,
                meta.totals.stored,
            );
            // Items that could not be stored (ids and reasons only).
            for skipped in &meta.skipped {
                println!(
                    "{:<30}   skipped {} at {}: {}",
                    "",
                    skipped.id,
                    at(Some(skipped.at)),
                    skipped.reason
                );
            }
        }
        if row.mail.is_none() && row.calendar.is_none() {
            println!(
                "{:<30} {:<20} {:<9} never synced",
                row.connection.upn, status, "-"
            );
        }
    }
    Ok(())
}
