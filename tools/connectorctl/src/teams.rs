//! `connectorctl teams ...`: the share targets teams-post stored for a user
//! (SYNC_STATE_TABLE), and the messages it gave up on with their reasons
//! (TeamsPostDLQ, `TEAMS_POST_DLQ_URL`).

use anyhow::{Context, Result, bail};
use aws_config::BehaviorVersion;
use connector_core::adapters::teams_dynamodb::DynamoShareTargetStore;
use connector_core::adapters::teams_sqs::SqsTeamsQueues;
use connector_core::config::{table_name, vars};
use connector_core::domain::{TenantId, UserId, UserKey};
use connector_core::teams::failures::TEAMS_POST_DLQ_URL;
use connector_core::teams::{DeadLetter, ShareTargetStore as _, ShareTargets, TeamsQueues as _};
use time::format_description::well_known::Rfc3339;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_else(|_| at.to_string())
}

/// `teams targets --tenant T --user U [--json]`.
pub async fn targets(tenant: &str, user: &str, json: bool) -> Result<()> {
    let tenant_id = TenantId::parse(tenant).context("--tenant")?;
    let user_id = UserId::parse(user).context("--user")?;
    let table = table_name(&env, vars::SYNC_STATE_TABLE)?;
    let sdk = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let store = DynamoShareTargetStore::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    let key = UserKey::new(tenant_id, user_id);
    let targets = store
        .get_targets(&key)
        .await
        .context("reading share targets")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&targets)?);
        return Ok(());
    }
    match targets {
        Some(targets) => print!("{}", render_targets(&targets)),
        None => println!(
            "no share targets stored for {key}: none refreshed yet (send a refreshTargets message to TeamsPostQueue)"
        ),
    }
    Ok(())
}

fn render_targets(targets: &ShareTargets) -> String {
    let mut out = format!(
        "{} team(s), {} channel(s), refreshed {}\n",
        targets.teams.len(),
        targets.channel_count(),
        rfc3339(targets.refreshed_at)
    );
    for team in &targets.teams {
        out.push_str(&format!("{}  (team {})\n", team.display_name, team.id));
        let width = team
            .channels
            .iter()
            .map(|channel| channel.display_name.chars().count())
            .max()
            .unwrap_or(0);
        for channel in &team.channels {
            out.push_str(&format!(
                "  {:<width$}  {:<8}  {}\n",
                channel.display_name,
                channel.membership_type.as_deref().unwrap_or("-"),
                channel.id,
            ));
        }
    }
    out
}

/// `teams failures [--json] [--limit N]`.
pub async fn failures(json: bool, limit: usize) -> Result<()> {
    let Some(url) = env(TEAMS_POST_DLQ_URL).filter(|url| !url.trim().is_empty()) else {
        bail!("environment variable {TEAMS_POST_DLQ_URL} is not set (TeamsPostDLQ's URL)");
    };
    let sdk = aws_config::load_defaults(BehaviorVersion::latest()).await;
    // Only the dead-letter queue is read; the post queue URL is not needed for that.
    let queues = SqsTeamsQueues::new(aws_sdk_sqs::Client::new(&sdk), String::new(), url);
    let letters = queues
        .dead_letters(limit)
        .await
        .context("reading the dead-letter queue")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&letters)?);
    } else {
        print!("{}", render_failures(&letters));
    }
    Ok(())
}

fn render_failures(letters: &[DeadLetter]) -> String {
    if letters.is_empty() {
        return "no failed Teams messages\n".to_owned();
    }
    let mut out = format!("{} failed Teams message(s), oldest first\n", letters.len());
    for letter in letters {
        match &letter.report {
            Some(report) => {
                out.push_str(&format!(
                    "\n{}  {}  tenant {}  user {}  key {}\n  {}\n",
                    rfc3339(report.failed_at),
                    report.code,
                    report.tenant_id.as_deref().unwrap_or("-"),
                    report.user_id.as_deref().unwrap_or("-"),
                    report.idempotency_key.as_deref().unwrap_or("-"),
                    report.reason,
                ));
                if !report.detail.is_empty() {
                    out.push_str(&format!("  detail: {}\n", report.detail));
                }
                out.push_str(&format!(
                    "  message {} (was {} on TeamsPostQueue, {} deliveries)\n",
                    letter.message_id, report.source_message_id, report.deliveries
                ));
            }
            None => {
                out.push_str(&format!(
                    "\n{}  (no reason recorded)  moved by SQS after maxReceiveCount receives: the function failed on it without settling it\n  message {}\n",
                    letter.sent_at.map(rfc3339).unwrap_or_else(|| "-".into()),
                    letter.message_id
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use connector_core::teams::{ChannelTarget, FailureReport, TeamTarget};
    use time::macros::datetime;

    #[test]
    fn renders_targets_and_failures() {
        let targets = ShareTargets {
            tenant_id: TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").expect("guid"),
            user_id: UserId::parse("00000000-0000-0000-0000-0000000000aa").expect("guid"),
            refreshed_at: datetime!(2026-03-01 9:00 UTC),
            teams: vec![TeamTarget {
                id: "t1".into(),
                display_name: "Sales".into(),
                description: None,
                channels: vec![
                    ChannelTarget {
                        id: "19:a@thread.tacv2".into(),
                        display_name: "General".into(),
                        membership_type: Some("standard".into()),
                    },
                    ChannelTarget {
                        id: "19:b@thread.tacv2".into(),
                        display_name: "Deals".into(),
                        membership_type: None,
                    },
                ],
            }],
        };
        assert_eq!(
            render_targets(&targets),
            "1 team(s), 2 channel(s), refreshed 2026-03-01T09:00:00Z\n\
             Sales  (team t1)\n  \
             General  standard  19:a@thread.tacv2\n  \
             Deals    -         19:b@thread.tacv2\n"
        );

        let letters = vec![
            DeadLetter {
                message_id: "d1".into(),
                body: "{}".into(),
                sent_at: None,
                report: Some(FailureReport {
                    code: "too_large".into(),
                    reason: "Too large.".into(),
                    detail: "30000 bytes".into(),
                    source_message_id: "m1".into(),
                    failed_at: datetime!(2026-03-01 9:00 UTC),
                    tenant_id: Some("t".into()),
                    user_id: None,
                    idempotency_key: Some("k".into()),
                    deliveries: 1,
                }),
            },
            DeadLetter {
                message_id: "d2".into(),
                body: "{}".into(),
                sent_at: Some(datetime!(2026-03-01 9:05 UTC)),
                report: None,
            },
        ];
        let text = render_failures(&letters);
        assert!(text.starts_with("2 failed Teams message(s)"), "{text}");
        assert!(
            text.contains("2026-03-01T09:00:00Z  too_large  tenant t  user -  key k\n  Too large.\n  detail: 30000 bytes\n  message d1 (was m1 on TeamsPostQueue, 1 deliveries)"),
            "{text}"
        );
        assert!(
            text.contains("2026-03-01T09:05:00Z  (no reason recorded)"),
            "{text}"
        );
        assert_eq!(render_failures(&[]), "no failed Teams messages\n");
    }
}
