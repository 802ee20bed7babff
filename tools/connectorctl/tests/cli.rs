//! The real `connectorctl` binary against moto, configured only through its environment
//! (the standard AWS variables and the template's table names).

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{Context, Result};
use aws_sdk_dynamodb::types::AttributeValue;
use connector_core::adapters::dynamodb::{
    DynamoConnectionStore, DynamoCrmIndex, DynamoTenantStore,
};
use connector_core::config::vars;
use connector_core::domain::{
    Connection, ConnectionStatus, ConsentMode, FeatureBundle, StatusChange, SyncKind, Tenant,
    TenantId, UserId, UserKey,
};
use connector_core::messages::{SyncJob, SyncReason};
use connector_core::ports::{ConnectionStore, CrmIndex, TenantStore};
use local_stack::TestStack;
use time::OffsetDateTime;

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

async fn crm_item_count(stack: &TestStack) -> Result<usize> {
    let client = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let output = client
        .scan()
        .table_name(stack.env.get(vars::CRM_TABLE).context("CRM_TABLE")?)
        .send()
        .await?;
    Ok(output.items.unwrap_or_default().len())
}

fn write(dir: &Path, name: &str, content: &str) -> Result<String> {
    let path = dir.join(name);
    std::fs::write(&path, content)?;
    Ok(path.to_string_lossy().into_owned())
}

fn example(tenant_id: &TenantId) -> String {
    format!(
        r#"{{"tenantId": "{tenant_id}",
 "accounts": [{{"id": "001A", "name": "Acme", "domains": ["acme.com"]}}],
 "contacts": [{{"id": "003B", "email": "jane@acme.com", "accountId": "001A"}}],
 "leads": [{{"id": "00Q1", "email": "bob@initech.com", "company": "Initech"}}],
 "opportunities": [{{"id": "006X", "accountId": "001A", "isClosed": false, "createdDate": "2026-06-01"}}]}}"#
    )
}

#[tokio::test]
async fn crm_import_writes_then_reimport_is_a_no_op() -> Result<()> {
    let stack = local_stack::test_stack().await?;
    let dir = tempfile::tempdir()?;
    let tenant_id = TenantId::parse(&uuid::Uuid::new_v4().to_string())?;
    let file = write(dir.path(), "crm.json", &example(&tenant_id))?;

    let first = run(&stack, &["crm", "import", &file])?;
    assert!(first.status.success(), "stderr: {}", text(&first.stderr));
    let stdout = text(&first.stdout);
    assert!(stdout.contains("imported CRM snapshot"), "{stdout}");
    assert!(
        stdout.contains("2 addresses and 1 domains indexed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("oldest open opportunity created 2026-06-01"),
        "{stdout}"
    );

    let index = DynamoCrmIndex::new(
        aws_sdk_dynamodb::Client::new(&stack.sdk),
        stack.env.get(vars::CRM_TABLE).context("CRM_TABLE")?,
    );
    let found = index
        .lookup(
            &tenant_id,
            &[
                "Jane@Acme.com".into(),
                "bob@initech.com".into(),
                "eve@evil.com".into(),
            ],
            &["acme.com".into()],
        )
        .await?;
    assert_eq!(found.addresses.len(), 2);
    assert_eq!(found.domains["acme.com"][0].name, "Acme");
    let items_after_first = crm_item_count(&stack).await?;
    assert_eq!(items_after_first, 4, "pointer + 2 addresses + 1 domain");

    let again = run(&stack, &["crm", "import", &file])?;
    assert!(again.status.success(), "stderr: {}", text(&again.stderr));
    let stdout = text(&again.stdout);
    assert!(
        stdout.contains("unchanged") && stdout.contains("nothing written"),
        "{stdout}"
    );
    assert_eq!(crm_item_count(&stack).await?, items_after_first);

    // A changed file replaces the index, and every connected mailbox and calendar of the
    // tenant gets a catch-up job (an active connection; a revoked one gets none).
    let connections = DynamoConnectionStore::new(
        aws_sdk_dynamodb::Client::new(&stack.sdk),
        stack
            .env
            .get(vars::CONNECTIONS_TABLE)
            .context("CONNECTIONS_TABLE")?,
    );
    let now = OffsetDateTime::now_utc();
    let users = [
        UserId::parse(&uuid::Uuid::new_v4().to_string())?,
        UserId::parse(&uuid::Uuid::new_v4().to_string())?,
    ];
    for (user, upn) in users.iter().zip(["adele@contoso.com", "lee@contoso.com"]) {
        connections
            .upsert_connection(&Connection::new_active(
                tenant_id.clone(),
                user.clone(),
                upn,
                FeatureBundle::All.scope_set(),
                now,
            ))
            .await?;
    }
    connections
        .set_status(
            &UserKey::new(tenant_id.clone(), users[1].clone()),
            &StatusChange::new(ConnectionStatus::ConsentRevoked, Some("AADSTS65001"), now),
        )
        .await?;
    let changed = example(&tenant_id).replace("bob@initech.com", "robert@initech.com");
    let file2 = write(dir.path(), "crm2.json", &changed)?;
    let third = run(&stack, &["crm", "import", &file2])?;
    assert!(third.status.success(), "stderr: {}", text(&third.stderr));
    let stdout = text(&third.stdout);
    assert!(stdout.contains("replaced version"), "{stdout}");
    assert!(
        stdout.contains("catch-up queued for 1 mailboxes and 1 calendars"),
        "{stdout}"
    );
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    for (queue, kind) in [
        (vars::MAIL_SYNC_QUEUE_URL, SyncKind::Mail),
        (vars::CALENDAR_SYNC_QUEUE_URL, SyncKind::Calendar),
    ] {
        let received = sqs
            .receive_message()
            .queue_url(stack.env.get(queue).context("queue url")?)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await?;
        let jobs: Vec<SyncJob> = received
            .messages()
            .iter()
            .filter_map(|m| serde_json::from_str(m.body()?).ok())
            .filter(|job: &SyncJob| job.tenant_id == tenant_id)
            .collect();
        assert_eq!(jobs.len(), 1, "{queue}: {jobs:?}");
        assert_eq!(
            (jobs[0].kind, &jobs[0].user_id, jobs[0].reason),
            (kind, &users[0], SyncReason::CrmChanged)
        );
    }
    let found = index
        .lookup(
            &tenant_id,
            &["bob@initech.com".into(), "robert@initech.com".into()],
            &[],
        )
        .await?;
    assert_eq!(
        found.addresses.keys().collect::<Vec<_>>(),
        vec!["robert@initech.com"]
    );
    assert_eq!(crm_item_count(&stack).await?, 4);
    Ok(())
}

#[tokio::test]
async fn malformed_crm_file_names_the_line_and_writes_nothing() -> Result<()> {
    let stack = local_stack::test_stack().await?;
    let dir = tempfile::tempdir()?;
    let tenant_id = TenantId::parse(&uuid::Uuid::new_v4().to_string())?;
    // Line 4: `isClosed` is a string.
    let malformed = format!(
        "{{\"tenantId\": \"{tenant_id}\",\n \"accounts\": [{{\"id\": \"001A\", \"name\": \"Acme\", \"domains\": [\"acme.com\"]}}],\n \"contacts\": [{{\"id\": \"003B\", \"email\": \"jane@acme.com\", \"accountId\": \"001A\"}}],\n \"opportunities\": [{{\"id\": \"006X\", \"isClosed\": \"no\", \"createdDate\": \"2026-06-01\"}}]}}\n"
    );
    let file = write(dir.path(), "bad.json", &malformed)?;
    let output = run(&stack, &["crm", "import", &file])?;
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("line 4"), "{stderr}");
    assert!(stderr.contains("`opportunities[0].isClosed`"), "{stderr}");
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert_eq!(crm_item_count(&stack).await?, 0);

    // Semantic problems: each offending element by path, and still nothing written.
    let invalid = example(&tenant_id)
        .replace("\"accountId\": \"001A\"}]", "\"accountId\": \"001Z\"}]")
        .replace("\"domains\": [\"acme.com\"]", "\"domains\": [\"acme\"]")
        .replace("2026-06-01", "2026-06-31");
    let file = write(dir.path(), "invalid.json", &invalid)?;
    let output = run(&stack, &["crm", "import", &file])?;
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    for path in [
        "`accounts[0].domains[0]`",
        "`contacts[0].accountId`",
        "`opportunities[0].createdDate`",
    ] {
        assert!(stderr.contains(path), "{path} missing from: {stderr}");
    }
    assert_eq!(crm_item_count(&stack).await?, 0);
    Ok(())
}

#[tokio::test]
async fn missing_configuration_is_named() -> Result<()> {
    let stack = local_stack::test_stack().await?;
    let dir = tempfile::tempdir()?;
    let tenant_id = TenantId::parse(&uuid::Uuid::new_v4().to_string())?;
    let file = write(dir.path(), "crm.json", &example(&tenant_id))?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_connectorctl"));
    command.args(["crm", "import", &file]).env_clear();
    command.envs(
        stack
            .process_env()
            .into_iter()
            .filter(|(name, _)| name != vars::CRM_TABLE),
    );
    let output = command.output()?;
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("CRM_TABLE"),
        "{}",
        text(&output.stderr)
    );

    let dry = run(&stack, &["crm", "import", "--dry-run", &file])?;
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    assert!(text(&dry.stdout).contains("nothing written"));
    assert_eq!(crm_item_count(&stack).await?, 0);
    Ok(())
}

#[tokio::test]
async fn connections_list_as_json_and_table() -> Result<()> {
    let stack = local_stack::test_stack().await?;
    let store = DynamoConnectionStore::new(
        aws_sdk_dynamodb::Client::new(&stack.sdk),
        stack
            .env
            .get(vars::CONNECTIONS_TABLE)
            .context("CONNECTIONS_TABLE")?,
    );
    let tenant_id = TenantId::parse(&uuid::Uuid::new_v4().to_string())?;
    let now = OffsetDateTime::from_unix_timestamp(1_780_000_000)?;
    for (n, upn) in ["adele@contoso.com", "megan@contoso.com", "lee@contoso.com"]
        .iter()
        .enumerate()
    {
        let connection = Connection::new_active(
            tenant_id.clone(),
            UserId::parse(&format!("00000000-0000-0000-0000-00000000000{n}"))?,
            *upn,
            FeatureBundle::All.scope_set(),
            now,
        );
        store.upsert_connection(&connection).await?;
    }
    let revoked = UserKey::new(
        tenant_id.clone(),
        UserId::parse("00000000-0000-0000-0000-000000000001")?,
    );
    store
        .set_status(
            &revoked,
            &StatusChange::new(ConnectionStatus::ConsentRevoked, Some("AADSTS65001"), now),
        )
        .await?;

    let output = run(&stack, &["connections", "list", "--json"])?;
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout)?;
    assert_eq!(listed.len(), 3);
    let upns: Vec<&str> = listed.iter().filter_map(|c| c["upn"].as_str()).collect();
    assert_eq!(
        upns,
        vec!["adele@contoso.com", "lee@contoso.com", "megan@contoso.com"]
    );
    let megan = &listed[2];
    assert_eq!(megan["status"], "consent_revoked");
    assert_eq!(megan["statusReason"], "AADSTS65001");
    assert_eq!(megan["tenantId"], tenant_id.as_str());
    assert_eq!(listed[0]["status"], "active");

    let table = run(&stack, &["connections", "list"])?;
    assert!(table.status.success(), "stderr: {}", text(&table.stderr));
    let stdout = text(&table.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("TENANT") && lines[0].contains("STATUS"),
        "{stdout}"
    );
    assert!(lines.iter().any(|l| l.contains("megan@contoso.com")
        && l.contains("consent_revoked")
        && l.contains("AADSTS65001")));
    assert_eq!(lines.last().copied(), Some("3 connection(s)"));

    let other = TenantId::parse(&uuid::Uuid::new_v4().to_string())?;
    let filtered = run(
        &stack,
        &["connections", "list", "--json", "--tenant", other.as_str()],
    )?;
    assert!(filtered.status.success());
    let none: Vec<serde_json::Value> = serde_json::from_slice(&filtered.stdout)?;
    assert!(none.is_empty());

    Ok(())
}

#[tokio::test]
async fn backfill_shards_puts_old_records_back_into_fan_out() -> Result<()> {
    let stack = local_stack::test_stack().await?;
    let client = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let table = stack
        .env
        .get(vars::CONNECTIONS_TABLE)
        .context("CONNECTIONS_TABLE")?
        .clone();
    let store = DynamoConnectionStore::new(client.clone(), &table);
    let tenant_id = TenantId::parse(&uuid::Uuid::new_v4().to_string())?;
    let now = OffsetDateTime::from_unix_timestamp(1_780_000_000)?;
    for n in 0..3 {
        let user_id = UserId::parse(&format!("00000000-0000-0000-0000-00000000000{n}"))?;
        store
            .upsert_connection(&Connection::new_active(
                tenant_id.clone(),
                user_id.clone(),
                format!("user{n}@contoso.com"),
                FeatureBundle::All.scope_set(),
                now,
            ))
            .await?;
        // As the release before the sharded index wrote it.
        client
            .update_item()
            .table_name(&table)
            .key("tenantId", AttributeValue::S(tenant_id.to_string()))
            .key("userId", AttributeValue::S(user_id.to_string()))
            .update_expression("REMOVE statusShard")
            .send()
            .await?;
    }
    assert!(store.query_active(10, None).await?.items.is_empty());

    let output = run(&stack, &["connections", "backfill-shards"])?;
    assert!(output.status.success(), "stderr: {}", text(&output.stderr));
    assert!(text(&output.stdout).starts_with("3 connection record(s)"));
    assert_eq!(store.query_active(10, None).await?.items.len(), 3);
    let again = run(&stack, &["connections", "backfill-shards"])?;
    assert!(text(&again.stdout).starts_with("0 connection record(s)"));
    Ok(())
}

#[tokio::test]
async fn retention_is_set_per_tenant_and_back_to_the_default() -> Result<()> {
    let stack = local_stack::test_stack().await?;
    let tenants = DynamoTenantStore::new(
        aws_sdk_dynamodb::Client::new(&stack.sdk),
        stack
            .env
            .get(vars::TENANTS_TABLE)
            .context("TENANTS_TABLE")?,
    );
    let tenant_id = TenantId::parse(&uuid::Uuid::new_v4().to_string())?;
    let now = OffsetDateTime::from_unix_timestamp(1_780_000_000)?;
    tenants
        .put_tenant(&Tenant::new(
            tenant_id.clone(),
            ConsentMode::UserConsent,
            now,
        ))
        .await?;
    let tenant = tenant_id.to_string();

    let shown = run(&stack, &["retention", "--tenant", &tenant])?;
    assert!(shown.status.success(), "stderr: {}", text(&shown.stderr));
    assert!(text(&shown.stdout).starts_with("default"));
    let set = run(&stack, &["retention", "--tenant", &tenant, "--days", "90"])?;
    assert!(set.status.success(), "stderr: {}", text(&set.stderr));
    let stored = tenants.get_tenant(&tenant_id).await?.context("tenant")?;
    assert_eq!(stored.activity_retention_days, Some(90));
    assert_eq!(
        stored.consent_mode,
        ConsentMode::UserConsent,
        "the rest kept"
    );

    let refused = run(&stack, &["retention", "--tenant", &tenant, "--days", "0"])?;
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("1-3650"));
    let reset = run(
        &stack,
        &["retention", "--tenant", &tenant, "--days", "default"],
    )?;
    assert!(reset.status.success(), "stderr: {}", text(&reset.stderr));
    let stored = tenants.get_tenant(&tenant_id).await?.context("tenant")?;
    assert_eq!(stored.activity_retention_days, None);
    Ok(())
}

#[tokio::test]
async fn subscriptions_show_each_kind_with_its_state_and_never_the_client_state() -> Result<()> {
    use connector_core::adapters::dynamodb::DynamoSubscriptionStore;
    use connector_core::domain::SyncKind;
    use connector_core::notifications::{
        ClientState, CreateFailure, Subscription, SubscriptionStore,
    };

    let stack = local_stack::test_stack().await?;
    let store = DynamoSubscriptionStore::new(
        aws_sdk_dynamodb::Client::new(&stack.sdk),
        stack
            .env
            .get(vars::SUBSCRIPTIONS_TABLE)
            .context("SUBSCRIPTIONS_TABLE")?,
    );
    let key = UserKey::new(
        TenantId::parse(&uuid::Uuid::new_v4().to_string())?,
        UserId::parse("00000000-0000-0000-0000-000000000042")?,
    );
    let now = OffsetDateTime::now_utc();
    let state = ClientState::generate();
    store
        .save(
            &Subscription {
                tenant_id: key.tenant_id.clone(),
                user_id: key.user_id.clone(),
                kind: SyncKind::Mail,
                id: "7f105c7d-2dc5-4530-97cd-4e7ae6534c07".into(),
                resource: "me/messages".into(),
                client_state: state.digest(),
                expires_at: now + time::Duration::days(6),
                created_at: now,
                renewed_at: None,
            },
            None,
        )
        .await?;
    store
        .record_failure(
            &key,
            SyncKind::Calendar,
            &CreateFailure {
                reason: "validation_failed".into(),
                failed_at: now,
                retry_at: now + time::Duration::hours(1),
            },
        )
        .await?;
    let (tenant, user) = (key.tenant_id.to_string(), key.user_id.to_string());
    let table = run(
        &stack,
        &["subscriptions", "--tenant", &tenant, "--user", &user],
    )?;
    let out = text(&table.stdout);
    anyhow::ensure!(table.status.success(), "{}", text(&table.stderr));
    let mail = out
        .lines()
        .find(|l| l.starts_with("mail"))
        .context(out.clone())?;
    anyhow::ensure!(
        mail.contains("healthy") && mail.contains("7f105c7d-2dc5-4530-97cd-4e7ae6534c07"),
        "{out}"
    );
    let calendar = out
        .lines()
        .find(|l| l.starts_with("calendar"))
        .context(out.clone())?;
    anyhow::ensure!(
        calendar.contains("failed") && calendar.contains("validation_failed"),
        "{out}"
    );
    let json = run(
        &stack,
        &[
            "subscriptions",
            "--tenant",
            &tenant,
            "--user",
            &user,
            "--json",
        ],
    )?;
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout)?;
    anyhow::ensure!(rows[0]["state"] == "healthy" && rows[0]["resource"] == "me/messages");
    anyhow::ensure!(
        rows[1]["state"] == "failed" && rows[1]["failure"]["reason"] == "validation_failed"
    );
    let both = format!("{out}{}", text(&json.stdout));
    anyhow::ensure!(
        !both.contains(state.expose()) && !both.contains(&state.digest().to_hex()),
        "no client state, no digest"
    );
    Ok(())
}
