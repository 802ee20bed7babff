//! `connectorctl sync calendar`, `switches`, and meetings in `activities` and `status`: the
//! real binary against moto and an in-process microsoft-sim, configured only through its
//! environment.

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

const CLIENT_ID: &str = "8e4c2a17-5b3d-4f90-a6c1-2d7e9f0b3a58";
const CLIENT_SECRET: &str = "connectorctl-calendar~secret";
const REDIRECT_URI: &str = "http://localhost:8430/auth/callback";
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

/// `{"dateTime", "timeZone": "UTC"}` `days` days from now at 10:00.
fn at(days: i64) -> Value {
    let t = OffsetDateTime::now_utc().date().midnight().assume_utc()
        + time::Duration::days(days)
        + time::Duration::hours(10);
    json!({"dateTime": t.format(time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]")).unwrap(),
           "timeZone": "UTC"})
}

fn event(subject: &str, days: i64, attendee: &str) -> Value {
    json!({"subject": subject, "start": at(days), "end": at(days + 1),
           "organizer": {"emailAddress": {"name": "Megan", "address": UPN}},
           "attendees": [{"type": "required", "status": {"response": "none"},
                          "emailAddress": {"name": "x", "address": attendee}}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_calendar_switches_and_meetings_in_activities() -> Result<()> {
    let tenant = TenantId::parse(&uuid::Uuid::new_v4().to_string())?;
    let megan = UserId::parse(&uuid::Uuid::new_v4().to_string())?;
    let world = json!({
        "apps": [{"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET, "redirectUris": [REDIRECT_URI],
                  "displayName": "Office 365 connector", "permissions": ["Calendars.ReadWrite"]}],
        "tenants": [{"id": tenant.as_str(), "displayName": "Contoso", "verifiedDomains": ["contoso.example"],
            "grants": [{"clientId": CLIENT_ID, "principal": "allUsers",
                        "scopes": ["openid", "profile", "offline_access", "Calendars.ReadWrite"]}],
            "users": [{"id": megan.as_str(), "userPrincipalName": UPN, "mail": UPN, "displayName": "Megan",
                "events": [
                    event("Acme pricing", 2, "sam@acme.example"),
                    event("Team retro", 3, "ben@contoso.example"),
                    event("Vendor demo", 4, "x@vendor.example")
                ]}]}]
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

    let tokens =
        microsoft_sim::identity::testing::sign_in(&microsoft_sim::identity::testing::SignIn {
            base_url: &base,
            tenant: tenant.as_str(),
            client_id: CLIENT_ID,
            client_secret: Some(CLIENT_SECRET),
            redirect_uri: REDIRECT_URI,
            login: UPN,
            scopes: "openid offline_access https://graph.microsoft.com/Calendars.ReadWrite",
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
    let connections = DynamoConnectionStore::new(dynamo.clone(), var("CONNECTIONS_TABLE")?);
    connections.upsert_connection(&connection).await?;
    let mut t = Tenant::new(tenant.clone(), ConsentMode::Preauthorized, now);
    t.record_admin_consent(FeatureBundle::Calendar, &ScopeSet::new(), None, now);
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

    let output = run(
        &env,
        &["sync", "calendar", "--tenant", &t, "--user", &u, "--json"],
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
        result["summary"]["stored"] == 1 && result["summary"]["scanned"] == 3,
        "{result}"
    );

    // Meetings in the activities listing.
    let output = run(
        &env,
        &["activities", "--tenant", &t, "--user", &u, "--json"],
    )
    .await?;
    ensure!(output.status.success(), "{}", text(&output.stderr));
    let activities: Value = serde_json::from_slice(&output.stdout)?;
    let activities = activities.as_array().context("an array")?;
    ensure!(activities.len() == 1, "{activities:?}");
    ensure!(activities[0]["content"]["kind"] == "meeting");
    ensure!(activities[0]["content"]["subject"] == "Acme pricing");
    ensure!(activities[0]["matches"][0]["matchedOn"] == "acme.example");
    let table = text(
        &run(&env, &["activities", "--tenant", &t, "--user", &u])
            .await?
            .stdout,
    );
    ensure!(
        table.contains("meeting") && table.contains("Acme pricing"),
        "{table}"
    );
    let rows: Value = serde_json::from_slice(&run(&env, &["status", "--json"]).await?.stdout)?;
    let row = rows
        .as_array()
        .context("rows")?
        .iter()
        .find(|r| r["userId"] == megan.as_str())
        .context("Megan's row")?;
    ensure!(
        row["calendar"]["stage"] == "idle" && row["calendar"]["totals"]["stored"] == 1,
        "{row}"
    );

    // Switches: shown, flipped, refused when malformed.
    let output = run(&env, &["switches", "--tenant", &t, "--user", &u]).await?;
    ensure!(output.status.success(), "{}", text(&output.stderr));
    ensure!(
        text(&output.stdout).contains("mail sync on, calendar sync on, internal meetings off"),
        "{}",
        text(&output.stdout)
    );
    let output = run(
        &env,
        &[
            "switches",
            "--tenant",
            &t,
            "--user",
            &u,
            "--internal-meetings",
            "on",
            "--json",
        ],
    )
    .await?;
    ensure!(output.status.success(), "{}", text(&output.stderr));
    let switches: Value = serde_json::from_slice(&output.stdout)?;
    ensure!(
        switches == json!({"mailSync": true, "calendarSync": true, "internalMeetings": true}),
        "{switches}"
    );
    ensure!(
        connections
            .get_connection(&key)
            .await?
            .context("connection")?
            .switches
            .internal_meetings
    );
    let output = run(
        &env,
        &[
            "switches",
            "--tenant",
            &t,
            "--user",
            &u,
            "--calendar",
            "maybe",
        ],
    )
    .await?;
    ensure!(!output.status.success());
    ensure!(
        text(&output.stderr).contains("expected on or off"),
        "{}",
        text(&output.stderr)
    );

    // With internal meetings on, the next sync imports the internal retro as well: the
    // window is read again, both meetings match, and only the new one counts as stored.
    let output = run(&env, &["sync", "calendar", "--tenant", &t, "--user", &u]).await?;
    ensure!(output.status.success(), "{}", text(&output.stderr));
    ensure!(
        text(&output.stdout).contains("outcome: done")
            && text(&output.stdout).contains("matched 2 · stored 1 "),
        "{}",
        text(&output.stdout)
    );

    // Calendar sync off: a manual run is skipped, not failed.
    let output = run(
        &env,
        &[
            "switches",
            "--tenant",
            &t,
            "--user",
            &u,
            "--calendar",
            "off",
        ],
    )
    .await?;
    ensure!(
        text(&output.stdout).contains("calendar sync off"),
        "{}",
        text(&output.stdout)
    );
    let output = run(
        &env,
        &["sync", "calendar", "--tenant", &t, "--user", &u, "--json"],
    )
    .await?;
    ensure!(output.status.success(), "{}", text(&output.stderr));
    let result: Value = serde_json::from_slice(&output.stdout)?;
    ensure!(result["outcome"] == "skipped", "{result}");
    Ok(())
}
