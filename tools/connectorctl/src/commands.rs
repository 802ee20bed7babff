//! The commands: each reads only the variables it needs, builds its clients from the
//! standard SDK configuration, and goes through connector-core's adapters.

use std::path::Path;

use anyhow::{Context, Result, bail};
use aws_config::BehaviorVersion;
use connector_core::adapters::dynamodb::{
    DynamoConnectionStore, DynamoCrmIndex, DynamoTenantStore,
};
use connector_core::adapters::sqs::SqsJobQueue;
use connector_core::config::{table_name, vars};
use connector_core::crm_catchup::{self, CatchUpQueues};
use connector_core::domain::{
    Connection, CrmIndexSummary, CrmSnapshot, ReplaceOutcome, SnapshotError, TenantId,
};
use connector_core::ports::{ConnectionStore, CrmIndex, TenantStore};
use time::format_description::well_known::Rfc3339;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

async fn dynamodb() -> aws_sdk_dynamodb::Client {
    let sdk = aws_config::load_defaults(BehaviorVersion::latest()).await;
    aws_sdk_dynamodb::Client::new(&sdk)
}

/// Parses and validates the file; the error names the place of every problem.
fn read_snapshot(file: &Path) -> Result<CrmSnapshot> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    match CrmSnapshot::from_json_slice(&bytes) {
        Ok(snapshot) => Ok(snapshot),
        Err(SnapshotError::Syntax {
            path,
            line,
            column,
            message,
            ..
        }) => bail!(
            "{}:{line}:{column}: malformed CRM file at `{path}` (line {line}, column {column}): {message}\n\
             nothing was written",
            file.display()
        ),
        Err(SnapshotError::Invalid { issues }) => {
            let list: Vec<String> = issues
                .iter()
                .map(|issue| format!("  - at `{}`: {}", issue.path, issue.message))
                .collect();
            bail!(
                "{}: invalid CRM file, {} problem(s):\n{}\nnothing was written",
                file.display(),
                issues.len(),
                list.join("\n")
            )
        }
    }
}

fn describe(summary: &CrmIndexSummary) -> String {
    let stats = &summary.stats;
    let oldest = summary
        .oldest_open_opportunity
        .map(|date| format!(", oldest open opportunity created {date}"))
        .unwrap_or_default();
    format!(
        "{} accounts, {} contacts, {} leads, {} opportunities ({} open{oldest}); \
         {} addresses and {} domains indexed",
        stats.accounts,
        stats.contacts,
        stats.leads,
        stats.opportunities,
        stats.open_opportunities,
        stats.addresses,
        stats.domains
    )
}

pub async fn crm_import(file: &Path, dry_run: bool) -> Result<()> {
    let snapshot = read_snapshot(file)?;
    if dry_run {
        let index = snapshot.index();
        println!(
            "{} is a valid CRM snapshot for tenant {}: {} addresses, {} domains (dry run: nothing written)",
            file.display(),
            snapshot.tenant_id,
            index.stats.addresses,
            index.stats.domains
        );
        return Ok(());
    }
    let table = table_name(&env, vars::CRM_TABLE)?;
    let index = DynamoCrmIndex::new(dynamodb().await, table);
    let outcome = index.replace_snapshot(&snapshot).await.with_context(|| {
        format!(
            "importing the CRM snapshot of tenant {}",
            snapshot.tenant_id
        )
    })?;
    match outcome {
        ReplaceOutcome::Unchanged { summary } => println!(
            "CRM snapshot of tenant {} is unchanged (same content as version {} imported {}): nothing written",
            snapshot.tenant_id,
            summary.version,
            summary
                .imported_at
                .format(&Rfc3339)
                .unwrap_or_else(|_| summary.imported_at.to_string())
        ),
        ReplaceOutcome::Replaced {
            summary,
            previous_version,
            written_entries,
            removed_entries,
        } => {
            println!(
                "imported CRM snapshot of tenant {} as version {}: {}",
                snapshot.tenant_id,
                summary.version,
                describe(&summary)
            );
            match previous_version {
                Some(previous) => {
                    println!(
                        "{written_entries} entries written; replaced version {previous} ({removed_entries} old entries removed)"
                    );
                    queue_catch_up(&snapshot.tenant_id).await?;
                }
                None => {
                    println!("{written_entries} entries written; first snapshot of this tenant")
                }
            }
        }
    }
    Ok(())
}

/// After an import that changed the index: a catch-up job for every mailbox and calendar
/// of the tenant (README, "When the CRM changes"). Without the queues' variables, the
/// scheduled rounds catch up instead.
async fn queue_catch_up(tenant_id: &TenantId) -> Result<()> {
    let (Some(mail_sync), Some(calendar_sync)) = (
        env(vars::MAIL_SYNC_QUEUE_URL),
        env(vars::CALENDAR_SYNC_QUEUE_URL),
    ) else {
        println!(
            "{} and {} are not set: the scheduled rounds catch up with the new snapshot",
            vars::MAIL_SYNC_QUEUE_URL,
            vars::CALENDAR_SYNC_QUEUE_URL
        );
        return Ok(());
    };
    let sdk = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let connections =
        DynamoConnectionStore::new(client.clone(), table_name(&env, vars::CONNECTIONS_TABLE)?);
    let tenants = DynamoTenantStore::new(client, table_name(&env, vars::TENANTS_TABLE)?);
    let queue = SqsJobQueue::new(aws_sdk_sqs::Client::new(&sdk));
    let queues = CatchUpQueues {
        mail_sync,
        calendar_sync,
    };
    let (mail, calendar) = crm_catchup::queue_catch_up(
        &connections,
        &tenants,
        &queue,
        &queues,
        tenant_id,
        time::OffsetDateTime::now_utc(),
    )
    .await
    .context("queueing the catch-up jobs")?;
    println!(
        "catch-up queued for {mail} mailboxes and {calendar} calendars (what the new snapshot adds is looked for, what it no longer holds is removed)"
    );
    Ok(())
}

async fn all_connections(
    store: &impl ConnectionStore,
    tenant: Option<&str>,
) -> Result<Vec<Connection>> {
    let mut connections = match tenant {
        Some(tenant) => {
            let tenant_id = TenantId::parse(tenant).context("--tenant")?;
            store.list_by_tenant(&tenant_id).await?
        }
        None => {
            let mut all = Vec::new();
            let mut token = None;
            loop {
                let page = store.list_all(200, token.as_ref()).await?;
                all.extend(page.items);
                match page.next {
                    Some(next) => token = Some(next),
                    None => break all,
                }
            }
        }
    };
    connections.sort_by(|a, b| {
        (a.tenant_id.as_str(), a.upn.as_str(), a.user_id.as_str()).cmp(&(
            b.tenant_id.as_str(),
            b.upn.as_str(),
            b.user_id.as_str(),
        ))
    });
    Ok(connections)
}

/// `connections list`; `pending_disconnections`: only disconnections that have not finished
/// (the scheduled fan-out does not finish them; `disconnect` does).
pub async fn connections_list(
    json: bool,
    tenant: Option<&str>,
    pending_disconnections: bool,
) -> Result<()> {
    let table = table_name(&env, vars::CONNECTIONS_TABLE)?;
    let store = DynamoConnectionStore::new(dynamodb().await, table);
    let mut connections = all_connections(&store, tenant)
        .await
        .context("listing connections")?;
    if pending_disconnections {
        connections.retain(connector_core::offboard::disconnect_pending);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&connections)?);
        return Ok(());
    }
    print!("{}", render_table(&connections));
    Ok(())
}

pub async fn backfill_shards() -> Result<()> {
    let table = table_name(&env, vars::CONNECTIONS_TABLE)?;
    let store = DynamoConnectionStore::new(dynamodb().await, table);
    let updated = store
        .backfill_status_shards()
        .await
        .context("backfilling statusShard")?;
    println!("{updated} connection record(s) given their statusShard");
    Ok(())
}

pub async fn retention(tenant: &str, days: Option<String>) -> Result<()> {
    let table = table_name(&env, vars::TENANTS_TABLE)?;
    let tenant_id = TenantId::parse(tenant).context("--tenant must be a GUID")?;
    let store = DynamoTenantStore::new(dynamodb().await, table);
    let mut record = store
        .get_tenant(&tenant_id)
        .await?
        .with_context(|| format!("no tenant {tenant_id}"))?;
    let Some(days) = days else {
        match record.activity_retention_days {
            Some(days) => println!("{days} days"),
            None => println!("default (ActivityRetentionDays of the stack)"),
        }
        return Ok(());
    };
    record.activity_retention_days = match days.as_str() {
        "default" => None,
        text => match text.parse::<u32>() {
            Ok(days) if (1..=3650).contains(&days) => Some(days),
            _ => bail!("--days must be 1-3650 or `default`, got {text}"),
        },
    };
    record.updated_at = time::OffsetDateTime::now_utc();
    store.put_tenant(&record).await?;
    println!(
        "tenant {tenant_id}: activities kept {}",
        match record.activity_retention_days {
            Some(days) => format!("{days} days"),
            None => "the stack's default".into(),
        }
    );
    Ok(())
}

fn on_off(value: bool) -> &'static str {
    if value { "on" } else { "off" }
}

fn render_table(connections: &[Connection]) -> String {
    let header = [
        "TENANT", "USER", "UPN", "STATUS", "REASON", "FEATURES", "MAIL", "CALENDAR", "INTERNAL",
        "SINCE",
    ];
    let rows: Vec<[String; 10]> = connections
        .iter()
        .map(|c| {
            let features: Vec<&str> = c
                .granted_scopes
                .usable_features()
                .into_iter()
                .map(|feature| feature.as_str())
                .collect();
            [
                c.tenant_id.to_string(),
                c.user_id.to_string(),
                c.upn.clone(),
                c.status.to_string(),
                c.status_reason.clone().unwrap_or_else(|| "-".into()),
                if features.is_empty() {
                    "-".into()
                } else {
                    features.join(",")
                },
                on_off(c.switches.mail_sync).into(),
                on_off(c.switches.calendar_sync).into(),
                on_off(c.switches.internal_meetings).into(),
                c.status_changed_at
                    .format(&Rfc3339)
                    .unwrap_or_else(|_| c.status_changed_at.to_string()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out.push_str(&format!("{} connection(s)\n", connections.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use connector_core::domain::{ConnectionStatus, FeatureBundle, ScopeSet, StatusChange, UserId};
    use time::macros::datetime;

    #[test]
    fn table_aligns_columns_and_counts() {
        let mut a = Connection::new_active(
            TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").expect("guid"),
            UserId::parse("00000000-0000-0000-0000-000000000001").expect("guid"),
            "adele@contoso.com",
            FeatureBundle::Mail.scope_set(),
            datetime!(2026-03-01 8:00 UTC),
        );
        a.switches.calendar_sync = false;
        let mut b = Connection::new_active(
            TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").expect("guid"),
            UserId::parse("00000000-0000-0000-0000-000000000002").expect("guid"),
            "x@contoso.com",
            ScopeSet::new(),
            datetime!(2026-03-01 8:00 UTC),
        );
        b.apply(&StatusChange::new(
            ConnectionStatus::ReauthRequired,
            Some("invalid_grant"),
            datetime!(2026-03-02 9:30 UTC),
        ));
        let table = render_table(&[a, b]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("TENANT"));
        let status_column = lines[0].find("STATUS").expect("header");
        assert_eq!(&lines[1][status_column..status_column + 6], "active");
        assert_eq!(
            &lines[2][status_column..status_column + 15],
            "reauth_required"
        );
        assert!(lines[1].contains("mail,sign_in") || lines[1].contains("sign_in,mail"));
        assert!(lines[2].contains("invalid_grant"));
        assert!(lines[2].contains("2026-03-02T09:30:00Z"));
        assert_eq!(lines[3], "2 connection(s)");
    }
}
