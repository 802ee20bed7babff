//! `connectorctl sync mail`, `activities` and `status`: the real binary against moto and an
//! in-process microsoft-sim, configured only through its environment.

use std::process::Output;

use anyhow::{Context, Result, ensure};
use connector_core::adapters::dynamodb::{
    DynamoConnectionStore, DynamoCrmIndex, DynamoTenantStore,
};
use connector_core::adapters::secrets::SecretsManagerVault;
use connector_core::domain::{
    Connection, ConsentMode, CrmSnapshot, FeatureBundle, ScopeSet, Tenant, TenantId, UserId,
    UserKey,
};
use connector_core::ports::{ConnectionStore, CrmIndex, TenantStore, TokenVault};
use connector_core::secret::{RefreshToken, TokenRecord};
use microsoft_sim::{SimOptions, SimServer, World};
use serde_json::{Value, json};
use time::OffsetDateTime;

const CLIENT_ID: &str = "5b8f3021-a4d2-4c9f-8e3b-7d6f1f2c8b44";
const CLIENT_SECRET: &str = "connectorctl-test-secret~value";
const REDIRECT_URI: &str = "http://localhost:8400/auth/callback";
const UPN: &str = "megan@contoso.example";

async fn run(env: &[(String, String)], args: &[&str]) -> Result<Output> {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_connectorctl"));
    command.args(args).env_clear();
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    command.output().await.context("running connectorctl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn days_ago(days: i64) -> String {
    (OffsetDateTime::now_utc() - time::Duration::days(days))
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formats")
}

fn message(key: &str, from: &str, days: i64) -> Value {
    json!({"internetMessageId": format!("<{key}@test>"), "subject": format!("Subject {key}"),
           "from": {"emailAddress": {"name": "x", "address": from}},
           "toRecipients": [{"emailAddress": {"name": "Megan", "address": UPN}}],
           "receivedDateTime": days_ago(days),
           "body": {"contentType": "text", "content": "Hello."}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_mail_then_activities_and_status() -> Result<()> {
    let tenant = TenantId::parse(&uuid::Uuid::new_v4().to_string())?;
    let megan = UserId::parse(&uuid::Uuid::new_v4().to_string())?;
    let world = json!({
        "apps": [{"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET, "redirectUris": [REDIRECT_URI],
                  "displayName": "Office 365 connector", "permissions": ["Mail.Read"]}],
        "tenants": [{"id": tenant.as_str(), "displayName": "Contoso", "verifiedDomains": ["contoso.example"],
            "grants": [{"clientId": CLIENT_ID, "principal": "allUsers",
                        "scopes": ["openid", "profile", "offline_access", "Mail.Read"]}],
            "users": [{"id": megan.as_str(), "userPrincipalName": UPN, "mail": UPN, "displayName": "Megan",
                "mailFolders": [{"wellKnownName": "inbox", "displayName": "Inbox", "messages": [
                    message("a1", "jane@acme.example", 1),
                    message("a2", "news@vendor.example", 1)
                ]}]}]}]
    });
    let mut options = SimOptions::new(World::from_json(&world.to_string())?);
    options.auto_approve = true;
    let sim = SimServer::start(options).await?;
    let base = sim.base_url();
    let stack = local_stack::test_stack().await?;
    let var = |name: &str| stack.env.get(name).cloned().context(name.to_owned());
    let dynamo = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let secrets = aws_sdk_secretsmanager::Client::new(&stack.sdk);
    secrets
        .put_secret_value()
        .secret_id(var("CLIENT_SECRET_ID")?)
        .secret_string(CLIENT_SECRET)
        .send()
        .await?;

    // The user signs in (through the sim) and is connected; the tenant and its CRM exist.
    let tokens =
        microsoft_sim::identity::testing::sign_in(&microsoft_sim::identity::testing::SignIn {
            base_url: &base,
            tenant: tenant.as_str(),
            client_id: CLIENT_ID,
            client_secret: Some(CLIENT_SECRET),
            redirect_uri: REDIRECT_URI,
            login: UPN,
            scopes: "openid offline_access https://graph.microsoft.com/Mail.Read",
            consent_for_org: false,
            ca_pem: None,
        })
        .await?;
    let now = OffsetDateTime::now_utc();
    let key = UserKey::new(tenant.clone(), megan.clone());
    let scopes = ScopeSet::granted_by_token_response(
        Some(&tokens.scope),
        &ScopeSet::new(),
        tokens.refresh_token.is_some(),
    );
    SecretsManagerVault::new(secrets.clone())
        .put_token(
            &key,
            &TokenRecord {
                refresh_token: RefreshToken::new(tokens.refresh_token.context("refresh token")?),
                scopes: scopes.clone(),
                updated_at: now,
            },
        )
        .await?;
    let mut connection = Connection::new_active(tenant.clone(), megan.clone(), UPN, scopes, now);
    connection.mail = Some(UPN.into());
    DynamoConnectionStore::new(dynamo.clone(), var("CONNECTIONS_TABLE")?)
        .upsert_connection(&connection)
        .await?;
    let mut t = Tenant::new(tenant.clone(), ConsentMode::Preauthorized, now);
    t.record_admin_consent(FeatureBundle::Mail, &ScopeSet::new(), None, now);
    t.verified_domains.insert("contoso.example".into());
    DynamoTenantStore::new(dynamo.clone(), var("TENANTS_TABLE")?)
        .put_tenant(&t)
        .await?;
    let snapshot = CrmSnapshot::from_json_slice(
        json!({"tenantId": tenant.as_str(),
               "accounts": [{"id": "001A", "name": "Acme", "domains": ["acme.example"]}]})
        .to_string()
        .as_bytes(),
    )?;
    DynamoCrmIndex::new(dynamo.clone(), var("CRM_TABLE")?)
        .replace_snapshot(&snapshot)
        .await?;

    let mut env = stack.process_env();
    env.push(("CLIENT_ID".into(), CLIENT_ID.into()));
    env.push(("LOGIN_BASE_URL".into(), base.clone()));
    env.push(("GRAPH_BASE_URL".into(), base.clone()));
    let (t, u) = (tenant.to_string(), megan.to_string());

    // Before any sync.
    let output = run(&env, &["status"]).await?;
    ensure!(output.status.success(), "{}", text(&output.stderr));
    ensure!(
        text(&output.stdout).contains("never synced"),
        "{}",
        text(&output.stdout)
    );

    let output = run(
        &env,
        &["sync", "mail", "--tenant", &t, "--user", &u, "--json"],
    )
    .await?;
    ensure!(
        output.status.success(),
        "sync failed: {}\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout)?;
    ensure!(result["outcome"] == "done", "{result}");
    ensure!(
        result["summary"]["stored"] == 1 && result["summary"]["scanned"] == 2,
        "{result}"
    );

    let output = run(
        &env,
        &["activities", "--tenant", &t, "--user", &u, "--json"],
    )
    .await?;
    ensure!(output.status.success(), "{}", text(&output.stderr));
    let activities: Value = serde_json::from_slice(&output.stdout)?;
    let activities = activities.as_array().context("an array")?;
    ensure!(activities.len() == 1, "{activities:?}");
    ensure!(activities[0]["content"]["internetMessageId"] == "<a1@test>");
    ensure!(activities[0]["matches"][0]["matchedOn"] == "acme.example");
    // mail-sync's wiring writes the TTL: the message's date + ActivityRetentionDays (730,
    // the template's default; the tenant sets none).
    let item = dynamo
        .get_item()
        .table_name(var("ACTIVITIES_TABLE")?)
        .key(
            "owner",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("{t}#{u}")),
        )
        .key(
            "activityId",
            aws_sdk_dynamodb::types::AttributeValue::S(
                activities[0]["activityId"]
                    .as_str()
                    .context("activityId")?
                    .to_owned(),
            ),
        )
        .send()
        .await?
        .item
        .context("the stored item")?;
    let dated = activities[0]["content"]["receivedAt"]
        .as_str()
        .or(activities[0]["content"]["sentAt"].as_str())
        .context("a date")?;
    let dated = OffsetDateTime::parse(dated, &time::format_description::well_known::Rfc3339)?;
    ensure!(
        item.get("expiresAt").and_then(|v| v.as_n().ok())
            == Some(&(dated.unix_timestamp() + 730 * 86_400).to_string()),
        "expiresAt {:?} for a message dated {dated}",
        item.get("expiresAt")
    );
    let table = run(&env, &["activities", "--tenant", &t, "--user", &u]).await?;
    ensure!(
        text(&table.stdout).contains("Subject a1") && !text(&table.stdout).contains("Subject a2")
    );

    let output = run(&env, &["status", "--json"]).await?;
    ensure!(output.status.success(), "{}", text(&output.stderr));
    let rows: Value = serde_json::from_slice(&output.stdout)?;
    let row = rows
        .as_array()
        .context("rows")?
        .iter()
        .find(|r| r["userId"] == megan.as_str())
        .context("Megan's row")?;
    ensure!(row["status"] == "active", "{row}");
    ensure!(
        row["mail"]["stage"] == "idle" && row["mail"]["lastSuccessAt"].is_string(),
        "{row}"
    );
    ensure!(row["mail"]["totals"]["stored"] == 1, "{row}");
    let table = run(&env, &["status"]).await?;
    let table = text(&table.stdout);
    ensure!(table.contains(UPN) && table.contains("idle"), "{table}");

    // Bad arguments are refused with a clear message.
    let output = run(&env, &["activities", "--tenant", "contoso", "--user", &u]).await?;
    ensure!(!output.status.success() && text(&output.stderr).contains("--tenant"));
    Ok(())
}
