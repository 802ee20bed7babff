//! `connectorctl disconnect` and `offboard-tenant`, the real binary against moto. Two
//! tenants' data is written the way the functions write it (connector-core's adapters,
//! consent-callback's domain aliases and flow records, teams-post's stores); afterwards
//! every table of the stack and every secret is scanned: nothing of the disconnected user
//! (but its `disconnected` marker) or of the offboarded tenant remains, and the other
//! user's and the other tenant's data is exactly as before.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use aws_sdk_dynamodb::types::AttributeValue;
use connector_core::adapters::dynamodb::{
    DynamoActivityStore, DynamoConnectionStore, DynamoCrmIndex, DynamoSyncStateStore,
    DynamoTenantStore,
};
use connector_core::adapters::s3::{S3BodyStore, s3_client};
use connector_core::adapters::secrets::SecretsManagerVault;
use connector_core::adapters::teams_dynamodb::{DynamoIdempotencyStore, DynamoShareTargetStore};
use connector_core::config::vars;
use connector_core::domain::{
    Activity, ActivityContent, ActivityId, Connection, ConsentMode, CrmMatch, CrmRecordKind,
    CrmSnapshot, FeatureBundle, FolderCursor, MailActivity, MatchReason, Participant,
    ParticipantRole, SyncKey, SyncKind, SyncMeta, Tenant, TenantId, UserId, UserKey, body_key,
    tenant_body_prefix, user_body_prefix,
};
use connector_core::ports::{
    ActivityStore, BodyStore, ConnectionStore, CrmIndex, SyncStateStore, TenantStore, TokenVault,
};
use connector_core::secret::{PkceVerifier, RefreshToken, TokenRecord};
use connector_core::teams::idempotency::record_id;
use connector_core::teams::{
    ChannelTarget, ClaimRequest, IdempotencyStore, ShareTargetStore, ShareTargets, TeamTarget,
};
use consent_callback::domains::{DynamoTenantDomains, TenantDomains};
use consent_callback::sessions::{AuthSession, AuthSessionStore, DynamoAuthSessionStore, Flow};
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

fn guid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn var<'a>(stack: &'a TestStack, name: &str) -> &'a str {
    stack.var(name)
}

/// Everything a tenant has, written through the producers' own adapters.
struct Seeder<'a> {
    stack: &'a TestStack,
    dynamodb: aws_sdk_dynamodb::Client,
    secrets: aws_sdk_secretsmanager::Client,
    now: OffsetDateTime,
}

impl Seeder<'_> {
    async fn tenant(&self, tenant: &TenantId, domain: &str) -> Result<()> {
        let mut record = Tenant::new(tenant.clone(), ConsentMode::Preauthorized, self.now);
        record.verified_domains.insert(domain.to_owned());
        DynamoTenantStore::new(self.dynamodb.clone(), var(self.stack, vars::TENANTS_TABLE))
            .put_tenant(&record)
            .await?;
        DynamoTenantDomains::new(self.dynamodb.clone(), var(self.stack, vars::TENANTS_TABLE))
            .record_domain(domain, tenant, self.now)
            .await?;
        let sessions = DynamoAuthSessionStore::new(
            self.dynamodb.clone(),
            var(self.stack, vars::AUTH_SESSIONS_TABLE),
        );
        for (requested, authority) in [
            (Some(domain.to_owned()), tenant.to_string()),
            (None, tenant.to_string()),
        ] {
            sessions
                .create(&AuthSession {
                    state: guid(),
                    flow: Flow::SignIn,
                    bundle: FeatureBundle::Mail,
                    requested_tenant: requested,
                    authority,
                    scope: "openid offline_access Mail.Read".into(),
                    pkce_verifier: Some(PkceVerifier::new(guid())),
                    nonce: Some(guid()),
                    binding_hash: "00".repeat(32),
                    created_at: self.now,
                    expires_at: self.now.unix_timestamp() + 600,
                })
                .await?;
        }
        let snapshot = format!(
            r#"{{"tenantId": "{tenant}",
             "accounts": [{{"id": "001A", "name": "Acme", "domains": ["acme.com"]}}],
             "contacts": [{{"id": "003B", "email": "jane@acme.com", "accountId": "001A"}}],
             "leads": [], "opportunities": []}}"#
        );
        DynamoCrmIndex::new(self.dynamodb.clone(), var(self.stack, vars::CRM_TABLE))
            .replace_snapshot(&CrmSnapshot::from_json_slice(snapshot.as_bytes())?)
            .await?;
        DynamoIdempotencyStore::new(
            self.dynamodb.clone(),
            var(self.stack, vars::IDEMPOTENCY_TABLE),
        )
        .claim(&ClaimRequest {
            id: &record_id(tenant, &guid()),
            payload_hash: "abc",
            now: self.now,
            in_progress_until: self.now + time::Duration::minutes(1),
            expires_at: self.now + time::Duration::days(14),
        })
        .await?;
        Ok(())
    }

    /// A connected user with everything a user accumulates. `connected`: with a
    /// connection record (leftovers of a failed sign-in have none).
    async fn user(&self, key: &UserKey, upn: &str, connected: bool) -> Result<()> {
        if connected {
            let mut connection = Connection::new_active(
                key.tenant_id.clone(),
                key.user_id.clone(),
                upn,
                FeatureBundle::All.scope_set(),
                self.now,
            );
            connection.mail = Some(upn.to_owned());
            connection.display_name = Some(format!("Name of {upn}"));
            DynamoConnectionStore::new(
                self.dynamodb.clone(),
                var(self.stack, vars::CONNECTIONS_TABLE),
            )
            .upsert_connection(&connection)
            .await?;
        }
        SecretsManagerVault::new(self.secrets.clone())
            .put_token(
                key,
                &TokenRecord {
                    refresh_token: RefreshToken::new(format!("rt-{}", key.user_id)),
                    scopes: FeatureBundle::Mail.scope_set(),
                    updated_at: self.now,
                },
            )
            .await?;
        let sync = DynamoSyncStateStore::new(
            self.dynamodb.clone(),
            var(self.stack, vars::SYNC_STATE_TABLE),
        );
        for kind in SyncKind::ALL {
            let sync_key = SyncKey::new(key.tenant_id.clone(), key.user_id.clone(), kind);
            sync.put_meta(&sync_key, &SyncMeta::new(self.now)).await?;
            sync.put_cursor(&sync_key, &FolderCursor::new("inbox", self.now))
                .await?;
            ensure!(
                sync.acquire_lease(&sync_key, "worker", Duration::from_secs(60))
                    .await?
            );
            ensure!(sync.release_lease(&sync_key, "worker").await?);
        }
        let activities: Vec<Activity> = (0..3).map(|n| mail_activity(key, n, upn)).collect();
        DynamoActivityStore::new(
            self.dynamodb.clone(),
            var(self.stack, vars::ACTIVITIES_TABLE),
        )
        .with_bodies(bodies(self.stack))
        .upsert_activities(&activities)
        .await?;
        // A body whose item was never written (a failed import): offboarding finds it too.
        bodies(self.stack)
            .put_body(
                &body_key(key, &ActivityId::mail("orphan"), "v0"),
                b"{}".to_vec(),
            )
            .await?;
        DynamoShareTargetStore::new(
            self.dynamodb.clone(),
            var(self.stack, vars::SYNC_STATE_TABLE),
        )
        .replace_targets(&ShareTargets {
            tenant_id: key.tenant_id.clone(),
            user_id: key.user_id.clone(),
            refreshed_at: self.now,
            teams: vec![TeamTarget {
                id: guid(),
                display_name: "Sales".into(),
                description: None,
                channels: vec![ChannelTarget {
                    id: "19:general@thread.tacv2".into(),
                    display_name: "General".into(),
                    membership_type: Some("standard".into()),
                }],
            }],
        })
        .await?;
        Ok(())
    }
}

fn mail_activity(owner: &UserKey, n: usize, upn: &str) -> Activity {
    Activity::new(
        owner.clone(),
        ActivityContent::Mail(MailActivity {
            immutable_id: format!("AAMk-{}-{n}", owner.user_id),
            internet_message_id: Some(format!("<m{n}@acme.com>")),
            conversation_id: None,
            folder_id: "inbox".into(),
            subject: format!("Renewal {n}"),
            participants: vec![
                Participant {
                    role: ParticipantRole::From,
                    address: "jane@acme.com".into(),
                    name: None,
                },
                Participant {
                    role: ParticipantRole::To,
                    address: upn.to_owned(),
                    name: None,
                },
            ],
            sent_at: Some(OffsetDateTime::now_utc()),
            received_at: None,
            body_preview: "preview".into(),
            body_text: "body".into(),
            has_attachments: false,
            web_link: None,
            detail: None,
        }),
        vec![CrmMatch {
            participant: "jane@acme.com".into(),
            reason: MatchReason::Address,
            record_kind: Some(CrmRecordKind::Contact),
            record_id: Some("003B".into()),
            matched_on: "jane@acme.com".into(),
        }],
        OffsetDateTime::now_utc(),
    )
}

/// Every item of every table of the stack, as canonical text, with its table.
async fn all_items(stack: &TestStack) -> Result<Vec<(String, String)>> {
    let client = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let prefix = format!("{}-", stack.provisioned.stack_name);
    let mut tables = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .list_tables()
            .set_exclusive_start_table_name(start)
            .send()
            .await?;
        tables.extend(
            page.table_names()
                .iter()
                .filter(|t| t.starts_with(&prefix))
                .cloned(),
        );
        match page.last_evaluated_table_name {
            Some(last) => start = Some(last),
            None => break,
        }
    }
    ensure!(tables.len() >= 7, "the stack's tables: {tables:?}");
    let mut out = Vec::new();
    for table in tables {
        let mut start = None;
        loop {
            let page = client
                .scan()
                .table_name(&table)
                .set_exclusive_start_key(start)
                .send()
                .await?;
            for item in page.items.unwrap_or_default() {
                out.push((table.clone(), canonical(&item)));
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
    }
    out.sort();
    Ok(out)
}

fn canonical(item: &std::collections::HashMap<String, AttributeValue>) -> String {
    let sorted: BTreeMap<&String, serde_json::Value> =
        item.iter().map(|(k, v)| (k, json_of(v))).collect();
    serde_json::to_string(&sorted).expect("plain JSON")
}

/// An attribute value as JSON with maps and sets in a stable order.
fn json_of(value: &AttributeValue) -> serde_json::Value {
    use serde_json::{Value, json};
    match value {
        AttributeValue::S(s) => json!({ "S": s }),
        AttributeValue::N(n) => json!({ "N": n }),
        AttributeValue::Bool(b) => json!({ "BOOL": b }),
        AttributeValue::Null(_) => json!({ "NULL": true }),
        AttributeValue::L(list) => json!({ "L": list.iter().map(json_of).collect::<Vec<_>>() }),
        AttributeValue::M(map) => {
            let sorted: BTreeMap<&String, Value> =
                map.iter().map(|(k, v)| (k, json_of(v))).collect();
            json!({ "M": sorted })
        }
        AttributeValue::Ss(set) | AttributeValue::Ns(set) => {
            let mut sorted = set.clone();
            sorted.sort();
            json!({ "SET": sorted })
        }
        other => json!({ "OTHER": format!("{other:?}") }),
    }
}

fn mentioning<'a>(items: &'a [(String, String)], needle: &str) -> Vec<&'a (String, String)> {
    items
        .iter()
        .filter(|(_, item)| item.contains(needle))
        .collect()
}

/// Names and values of every secret that mention `needle`.
async fn secrets_mentioning(stack: &TestStack, needle: &str) -> Result<Vec<String>> {
    let client = aws_sdk_secretsmanager::Client::new(&stack.sdk);
    let mut found = Vec::new();
    let mut token = None;
    loop {
        let page = client.list_secrets().set_next_token(token).send().await?;
        for secret in page.secret_list() {
            let name = secret.name().unwrap_or_default().to_owned();
            let value = client
                .get_secret_value()
                .secret_id(&name)
                .send()
                .await
                .ok()
                .and_then(|v| v.secret_string().map(str::to_owned))
                .unwrap_or_default();
            if name.contains(needle) || value.contains(needle) {
                found.push(name);
            }
        }
        match page.next_token {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => break,
        }
    }
    Ok(found)
}

/// The stack's message bodies bucket.
fn bodies(stack: &TestStack) -> Arc<S3BodyStore> {
    Arc::new(S3BodyStore::new(
        s3_client(aws_sdk_s3::config::Builder::from(&stack.sdk), true),
        var(stack, vars::MESSAGE_BODIES_BUCKET),
    ))
}

/// Body objects under a prefix (`{tenant}/` or `{tenant}/{user}/`).
async fn body_objects(stack: &TestStack, prefix: &str) -> Result<u64> {
    Ok(bodies(stack).count_prefix(prefix).await?)
}

fn key(tenant: &TenantId) -> UserKey {
    UserKey::new(tenant.clone(), UserId::parse(&guid()).expect("guid"))
}

#[tokio::test]
async fn disconnect_then_offboard_leaves_nothing_and_touches_no_one_else() -> Result<()> {
    let stack = local_stack::test_stack().await?;
    let seeder = Seeder {
        stack: &stack,
        dynamodb: aws_sdk_dynamodb::Client::new(&stack.sdk),
        secrets: aws_sdk_secretsmanager::Client::new(&stack.sdk),
        now: OffsetDateTime::now_utc(),
    };
    let a = TenantId::parse(&guid())?;
    let b = TenantId::parse(&guid())?;
    let (a1, a2, a_orphan, b1) = (key(&a), key(&a), key(&a), key(&b));
    seeder.tenant(&a, "contoso.example").await?;
    seeder.tenant(&b, "fabrikam.example").await?;
    seeder.user(&a1, "adele@contoso.example", true).await?;
    seeder.user(&a2, "alex@contoso.example", true).await?;
    // Data of a user whose sign-in never wrote a connection record.
    seeder
        .user(&a_orphan, "orphan@contoso.example", false)
        .await?;
    seeder.user(&b1, "bianca@fabrikam.example", true).await?;

    let before = all_items(&stack).await?;
    for user in [&a1, &a2, &a_orphan, &b1] {
        assert_eq!(
            body_objects(&stack, &user_body_prefix(user)).await?,
            4,
            "3 bodies and an orphan"
        );
    }
    for (what, needle) in [
        ("a1", a1.user_id.as_str()),
        ("a", a.as_str()),
        ("b", b.as_str()),
    ] {
        ensure!(
            mentioning(&before, needle).len() >= 8,
            "{what} seeded: {:#?}",
            mentioning(&before, needle)
        );
    }

    // Disconnect one user.
    let out = run(
        &stack,
        &[
            "disconnect",
            "--tenant",
            a.as_str(),
            "--user",
            a1.user_id.as_str(),
            "--json",
        ],
    )?;
    ensure!(out.status.success(), "stderr: {}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(report["connection"], "disconnected");
    assert_eq!(report["previousStatus"], "active");
    assert_eq!(report["activitiesDeleted"], 3);
    assert_eq!(body_objects(&stack, &user_body_prefix(&a1)).await?, 0);
    assert_eq!(body_objects(&stack, &user_body_prefix(&a2)).await?, 4);

    let after = all_items(&stack).await?;
    let left = mentioning(&after, a1.user_id.as_str());
    assert_eq!(
        left.len(),
        1,
        "only the disconnected marker remains: {left:#?}"
    );
    let (table, item) = left[0];
    assert_eq!(table, var(&stack, vars::CONNECTIONS_TABLE));
    assert!(item.contains(r#""status":{"S":"disconnected"}"#), "{item}");
    assert!(!item.contains("adele"), "no personal data kept: {item}");
    let connection = DynamoConnectionStore::new(
        aws_sdk_dynamodb::Client::new(&stack.sdk),
        var(&stack, vars::CONNECTIONS_TABLE),
    )
    .get_connection(&a1)
    .await?
    .context("the marker")?;
    assert_eq!(connection.status.as_str(), "disconnected");
    assert!(
        connection.mail.is_none() && connection.display_name.is_none() && connection.upn.is_empty()
    );
    assert!(
        secrets_mentioning(&stack, a1.user_id.as_str())
            .await?
            .is_empty()
    );
    // Everyone else exactly as before.
    for other in [a2.user_id.as_str(), a_orphan.user_id.as_str(), b.as_str()] {
        assert_eq!(
            mentioning(&after, other),
            mentioning(&before, other),
            "{other}"
        );
    }
    assert_eq!(
        secrets_mentioning(&stack, a2.user_id.as_str()).await?.len(),
        1,
        "a2's token secret stays"
    );

    // Offboard the whole tenant.
    let b_before = mentioning(&after, b.as_str())
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    let out = run(
        &stack,
        &["offboard-tenant", "--tenant", a.as_str(), "--json"],
    )?;
    ensure!(out.status.success(), "stderr: {}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        report["users"].as_array().map(Vec::len),
        Some(3),
        "{report:#}"
    );
    assert_eq!(report["tenantRecordDeleted"], true);
    assert_eq!(
        report["domainAliasesDeleted"],
        serde_json::json!(["contoso.example"])
    );
    assert_eq!(report["authSessionsDeleted"], 2);
    assert_eq!(report["idempotencyRecordsDeleted"], 1);
    assert!(
        report["crmEntriesDeleted"].as_u64().unwrap_or(0) >= 3,
        "{report:#}"
    );

    assert_eq!(body_objects(&stack, &tenant_body_prefix(&a)).await?, 0);
    assert_eq!(body_objects(&stack, &tenant_body_prefix(&b)).await?, 4);
    let end = all_items(&stack).await?;
    for needle in [a.as_str(), "contoso.example"] {
        let left = mentioning(&end, needle);
        assert!(left.is_empty(), "{needle} still in: {left:#?}");
        assert!(
            secrets_mentioning(&stack, needle).await?.is_empty(),
            "{needle} still in a secret"
        );
    }
    let b_end = mentioning(&end, b.as_str())
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(b_end, b_before, "the other tenant is untouched");
    assert_eq!(
        secrets_mentioning(&stack, b1.user_id.as_str()).await?.len(),
        1
    );
    Ok(())
}

#[tokio::test]
async fn a_running_sync_is_waited_for_and_a_rerun_finishes_the_job() -> Result<()> {
    let stack = local_stack::test_stack().await?;
    let seeder = Seeder {
        stack: &stack,
        dynamodb: aws_sdk_dynamodb::Client::new(&stack.sdk),
        secrets: aws_sdk_secretsmanager::Client::new(&stack.sdk),
        now: OffsetDateTime::now_utc(),
    };
    let tenant = TenantId::parse(&guid())?;
    let user = key(&tenant);
    seeder.tenant(&tenant, "busy.example").await?;
    seeder.user(&user, "busy@busy.example", true).await?;
    // A calendar worker is in the middle of a run.
    let sync = DynamoSyncStateStore::new(
        aws_sdk_dynamodb::Client::new(&stack.sdk),
        var(&stack, vars::SYNC_STATE_TABLE),
    );
    let calendar = SyncKey::new(tenant.clone(), user.user_id.clone(), SyncKind::Calendar);
    ensure!(
        sync.acquire_lease(&calendar, "worker-1", Duration::from_secs(300))
            .await?
    );

    let args = [
        "disconnect",
        "--tenant",
        tenant.as_str(),
        "--user",
        user.user_id.as_str(),
        "--wait",
        "2",
    ];
    let out = run(&stack, &args)?;
    assert!(
        !out.status.success(),
        "must not report success while a sync runs"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("calendar sync") && stderr.contains("still running"),
        "{stderr}"
    );
    // What it could do is done: no more syncs start, no token to start them with.
    let connection = DynamoConnectionStore::new(
        aws_sdk_dynamodb::Client::new(&stack.sdk),
        var(&stack, vars::CONNECTIONS_TABLE),
    )
    .get_connection(&user)
    .await?
    .context("connection")?;
    assert_eq!(connection.status.as_str(), "disconnected");
    assert_eq!(
        connection.status_reason.as_deref(),
        Some("disconnect_pending")
    );
    let pending = [
        "connections",
        "list",
        "--json",
        "--pending-disconnections",
        "--tenant",
        tenant.as_str(),
    ];
    let out = run(&stack, &pending)?;
    ensure!(out.status.success(), "stderr: {}", text(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        listed
            .as_array()
            .map(|all| all.iter().map(|c| c["userId"].clone()).collect::<Vec<_>>()),
        Some(vec![serde_json::json!(user.user_id.as_str())]),
        "{listed}"
    );
    assert!(
        secrets_mentioning(&stack, user.user_id.as_str())
            .await?
            .is_empty()
    );
    assert!(
        DynamoActivityStore::new(
            aws_sdk_dynamodb::Client::new(&stack.sdk),
            var(&stack, vars::ACTIVITIES_TABLE)
        )
        .list_activities(&user, 10, None)
        .await?
        .items
        .len()
            == 3,
        "nothing of the running sync's data is deleted under it"
    );

    // The worker finishes; the rerun completes the disconnection.
    ensure!(sync.release_lease(&calendar, "worker-1").await?);
    let out = run(&stack, &args)?;
    ensure!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("connection disconnected (was disconnected)"),
        "{stdout}"
    );
    let items = all_items(&stack).await?;
    assert_eq!(mentioning(&items, user.user_id.as_str()).len(), 1);
    let out = run(&stack, &pending)?;
    ensure!(out.status.success(), "stderr: {}", text(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(listed, serde_json::json!([]), "finished: no longer pending");
    Ok(())
}
