//! `connectorctl teams targets` and `teams failures` as binaries against moto, reading what
//! teams-post's adapters wrote (share targets in the sync state table, dead letters with
//! their reason attributes on TeamsPostDLQ, and one moved there by SQS without a reason).

use std::process::{Command, Output};

use anyhow::{Context, Result};
use connector_core::adapters::teams_dynamodb::DynamoShareTargetStore;
use connector_core::adapters::teams_sqs::SqsTeamsQueues;
use connector_core::config::vars;
use connector_core::domain::{TenantId, UserId};
use connector_core::teams::failures::TEAMS_POST_DLQ_URL;
use connector_core::teams::{
    ChannelTarget, FailureReport, ShareTargetStore as _, ShareTargets, TeamTarget, TeamsQueues as _,
};
use local_stack::TestStack;
use serde_json::Value;

fn run(stack: &TestStack, args: &[&str]) -> Result<Output> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_connectorctl"));
    command.args(args).env_clear();
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    command.envs(stack.process_env());
    command.output().context("running connectorctl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn teams_targets_shows_what_the_last_refresh_stored() -> Result<()> {
    let stack = local_stack::test_stack().await?;
    let tenant = TenantId::parse(&uuid::Uuid::new_v4().to_string())?;
    let user = UserId::parse(&uuid::Uuid::new_v4().to_string())?;
    let args = [
        "teams",
        "targets",
        "--tenant",
        tenant.as_str(),
        "--user",
        user.as_str(),
    ];

    let none = run(&stack, &args)?;
    assert!(none.status.success(), "{}", text(&none.stderr));
    assert!(text(&none.stdout).contains("none refreshed yet"));
    let none_json = run(&stack, &[&args[..], &["--json"]].concat())?;
    assert_eq!(text(&none_json.stdout).trim(), "null");

    let store = DynamoShareTargetStore::new(
        aws_sdk_dynamodb::Client::new(&stack.sdk),
        stack.var(vars::SYNC_STATE_TABLE),
    );
    let channel = |id: &str, name: &str| ChannelTarget {
        id: id.into(),
        display_name: name.into(),
        membership_type: Some("standard".into()),
    };
    let targets = ShareTargets {
        tenant_id: tenant.clone(),
        user_id: user.clone(),
        refreshed_at: time::OffsetDateTime::now_utc(),
        teams: vec![
            TeamTarget {
                id: "team-b".into(),
                display_name: "Sales".into(),
                description: Some("Sales team".into()),
                channels: vec![
                    channel("19:g@thread.tacv2", "General"),
                    channel("19:d@thread.tacv2", "Deals"),
                ],
            },
            TeamTarget {
                id: "team-a".into(),
                display_name: "Engineering".into(),
                description: None,
                channels: vec![channel("19:b@thread.tacv2", "Builds")],
            },
        ],
    };
    store.replace_targets(&targets).await?;

    let listed = run(&stack, &args)?;
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let stdout = text(&listed.stdout);
    assert!(
        stdout.starts_with("2 team(s), 3 channel(s), refreshed "),
        "{stdout}"
    );
    let engineering = stdout.find("Engineering  (team team-a)").expect(&stdout);
    let sales = stdout.find("Sales  (team team-b)").expect(&stdout);
    assert!(engineering < sales, "teams by name: {stdout}");
    assert!(
        stdout.contains("  Deals    standard  19:d@thread.tacv2\n"),
        "{stdout}"
    );

    let json = run(&stack, &[&args[..], &["--json"]].concat())?;
    let value: Value = serde_json::from_slice(&json.stdout)?;
    assert_eq!(value["tenantId"], tenant.as_str());
    assert_eq!(value["teams"][1]["channels"][0]["displayName"], "Deals");
    assert_eq!(value["teams"].as_array().map(Vec::len), Some(2));

    // A later refresh without Engineering removes it.
    let mut fewer = targets.clone();
    fewer.teams.retain(|team| team.id == "team-b");
    store.replace_targets(&fewer).await?;
    let json = run(&stack, &[&args[..], &["--json"]].concat())?;
    let value: Value = serde_json::from_slice(&json.stdout)?;
    assert_eq!(value["teams"].as_array().map(Vec::len), Some(1));

    let bad = run(
        &stack,
        &[
            "teams",
            "targets",
            "--tenant",
            "contoso",
            "--user",
            user.as_str(),
        ],
    )?;
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("--tenant"),
        "{}",
        text(&bad.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn teams_failures_lists_dead_letters_with_their_reasons_and_leaves_them() -> Result<()> {
    let stack = local_stack::test_stack().await?;
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let dlq = stack.var(TEAMS_POST_DLQ_URL).to_owned();
    let queues = SqsTeamsQueues::new(sqs.clone(), stack.var(vars::TEAMS_POST_QUEUE_URL), &dlq);

    let empty = run(&stack, &["teams", "failures"])?;
    assert!(empty.status.success(), "{}", text(&empty.stderr));
    assert_eq!(text(&empty.stdout), "no failed Teams messages\n");

    let body = r#"{"kind":"post","idempotencyKey":"k-large","html":"<p>...</p>"}"#;
    queues
        .dead_letter(
            body,
            &FailureReport {
                code: "too_large".into(),
                reason: "The message is larger than Teams accepts (28 KB after sanitizing).".into(),
                detail: "the sanitized message is 30607 bytes; Teams accepts at most 28672 bytes per message".into(),
                source_message_id: "src-1".into(),
                failed_at: time::OffsetDateTime::now_utc(),
                tenant_id: Some("t-1".into()),
                user_id: Some("u-1".into()),
                idempotency_key: Some("k-large".into()),
                deliveries: 1,
            },
        )
        .await?;
    // What SQS moves by itself after maxReceiveCount carries no reason.
    sqs.send_message()
        .queue_url(&dlq)
        .message_body(r#"{"kind":"post","idempotencyKey":"k-crash"}"#)
        .send()
        .await?;

    let listed = run(&stack, &["teams", "failures"])?;
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let stdout = text(&listed.stdout);
    assert!(stdout.starts_with("2 failed Teams message(s)"), "{stdout}");
    assert!(
        stdout.contains("too_large  tenant t-1  user u-1  key k-large"),
        "{stdout}"
    );
    assert!(
        stdout.contains("detail: the sanitized message is 30607 bytes"),
        "{stdout}"
    );
    assert!(stdout.contains("(no reason recorded)"), "{stdout}");

    // Listing leaves them where they are: the JSON listing right after sees both.
    let json = run(&stack, &["teams", "failures", "--json"])?;
    assert!(json.status.success(), "{}", text(&json.stderr));
    let value: Value = serde_json::from_slice(&json.stdout)?;
    let letters = value.as_array().context("an array")?;
    assert_eq!(letters.len(), 2, "{value:#}");
    let large = letters
        .iter()
        .find(|letter| letter["report"]["code"] == "too_large")
        .context("too_large")?;
    assert_eq!(large["body"], body);
    assert_eq!(large["report"]["sourceMessageId"], "src-1");
    assert!(letters.iter().any(|letter| letter["report"].is_null()));

    let limited = run(&stack, &["teams", "failures", "--json", "--limit", "1"])?;
    let value: Value = serde_json::from_slice(&limited.stdout)?;
    assert_eq!(value.as_array().map(Vec::len), Some(1));

    let mut command = Command::new(env!("CARGO_BIN_EXE_connectorctl"));
    command.args(["teams", "failures"]).env_clear();
    command.envs(local_stack::aws_env(&stack.endpoint));
    let missing = command.output()?;
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains(TEAMS_POST_DLQ_URL));
    Ok(())
}
