//! The real adapters against moto (the local AWS emulator), on tables, queues and
//! secrets created from template.yaml by `local-stack`. No SDK mocks.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use aws_sdk_dynamodb::types::AttributeValue;
use connector_core::adapters::backoff::Backoff;
use connector_core::adapters::dynamodb::{
    ActivityRetention, DynamoActivityStore, DynamoConnectionStore, DynamoCrmIndex,
    DynamoSyncStateStore, DynamoTenantStore, STATUS_SHARDS, status_shard,
};
use connector_core::adapters::memory::MemoryCrmIndex;
use connector_core::adapters::secrets::{SecretsManagerClientSecret, SecretsManagerVault};
use connector_core::adapters::sqs::SqsJobQueue;
use connector_core::config::{Tables, vars};
use connector_core::domain::crm::domain_and_parents;
use connector_core::domain::*;
use connector_core::matching::CrmMatchIndex;
use connector_core::messages::{SyncJob, SyncReason};
use connector_core::ports::*;
use connector_core::secret::{RefreshToken, TokenRecord};
use local_stack::TestStack;
use time::OffsetDateTime;

fn tenant() -> TenantId {
    TenantId::parse(&uuid::Uuid::new_v4().to_string()).expect("guid")
}

fn user(n: u32) -> UserId {
    UserId::parse(&format!("00000000-0000-0000-0000-{n:012}")).expect("guid")
}

async fn stack() -> Result<(TestStack, Tables)> {
    let stack = local_stack::test_stack().await?;
    let tables = Tables::from_lookup(|name| stack.env.get(name).cloned())?;
    Ok((stack, tables))
}

fn dynamo(stack: &TestStack) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&stack.sdk)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_is_exclusive_among_20_concurrent_acquirers() -> Result<()> {
    let (stack, tables) = stack().await?;
    let store = Arc::new(DynamoSyncStateStore::new(
        dynamo(&stack),
        &tables.sync_state,
    ));
    let key = SyncKey::new(tenant(), user(1), SyncKind::Mail);
    // Several rounds, each on a fresh mailbox, so a lucky interleaving cannot pass the test.
    for round in 0..3 {
        let key = SyncKey::new(key.tenant_id.clone(), user(round), SyncKind::Mail);
        let start = Arc::new(tokio::sync::Barrier::new(20));
        let mut tasks = Vec::new();
        for i in 0..20 {
            let (store, key, start) = (store.clone(), key.clone(), start.clone());
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                let holder = format!("worker-{i}");
                let won = store
                    .acquire_lease(&key, &holder, Duration::from_secs(60))
                    .await?;
                anyhow::Ok((holder, won))
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            let (holder, won) = task.await??;
            if won {
                winners.push(holder);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let lease = store.get_lease(&key).await?.context("lease stored")?;
        assert_eq!(lease.holder, winners[0]);
        assert!(lease.expires_at > OffsetDateTime::now_utc() + Duration::from_secs(50));
    }
    Ok(())
}

#[tokio::test]
async fn expired_lease_is_taken_over_and_release_needs_the_holder() -> Result<()> {
    let (stack, tables) = stack().await?;
    let store = DynamoSyncStateStore::new(dynamo(&stack), &tables.sync_state);
    let key = SyncKey::new(tenant(), user(7), SyncKind::Calendar);

    assert!(
        store
            .acquire_lease(&key, "a", Duration::from_millis(1200))
            .await?
    );
    assert!(
        !store
            .acquire_lease(&key, "b", Duration::from_secs(60))
            .await?
    );
    // The holder may renew its own lease.
    assert!(
        store
            .acquire_lease(&key, "a", Duration::from_millis(800))
            .await?
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        store
            .acquire_lease(&key, "b", Duration::from_secs(60))
            .await?
    );
    assert_eq!(store.get_lease(&key).await?.context("held")?.holder, "b");

    // "a" lost the lease: its release must not free b's.
    assert!(!store.release_lease(&key, "a").await?);
    assert!(
        !store
            .acquire_lease(&key, "c", Duration::from_secs(60))
            .await?
    );
    assert!(store.release_lease(&key, "b").await?);
    assert!(store.get_lease(&key).await?.is_none());
    assert!(!store.release_lease(&key, "b").await?);
    assert!(
        store
            .acquire_lease(&key, "c", Duration::from_secs(60))
            .await?
    );
    Ok(())
}

#[tokio::test]
async fn a_lease_is_renewed_only_by_its_holder() -> Result<()> {
    let (stack, tables) = stack().await?;
    let store = DynamoSyncStateStore::new(dynamo(&stack), &tables.sync_state);
    let key = SyncKey::new(tenant(), user(8), SyncKind::Mail);

    // Nothing to renew.
    assert!(
        !store
            .renew_lease(&key, "a", Duration::from_secs(60))
            .await?
    );
    assert!(
        store.get_lease(&key).await?.is_none(),
        "renewing creates nothing"
    );

    assert!(
        store
            .acquire_lease(&key, "a", Duration::from_secs(2))
            .await?
    );
    assert!(
        store
            .renew_lease(&key, "a", Duration::from_secs(90))
            .await?
    );
    let lease = store.get_lease(&key).await?.context("held")?;
    assert_eq!(lease.holder, "a");
    assert!(lease.expires_at > OffsetDateTime::now_utc() + Duration::from_secs(80));
    // Another worker cannot renew (nor take) it.
    assert!(
        !store
            .renew_lease(&key, "b", Duration::from_secs(90))
            .await?
    );
    assert!(
        !store
            .acquire_lease(&key, "b", Duration::from_secs(90))
            .await?
    );

    // Taken over (here: by an operator's quiesce after expiry): the old holder learns it.
    assert!(store.acquire_lease(&key, "a", Duration::ZERO).await?);
    assert!(
        store
            .acquire_lease(&key, "c", Duration::from_secs(60))
            .await?
    );
    assert!(
        !store
            .renew_lease(&key, "a", Duration::from_secs(90))
            .await?
    );
    assert_eq!(store.get_lease(&key).await?.context("held")?.holder, "c");

    // Deleted with the sync state (disconnection): the holder learns it too.
    store.delete_sync_state(&key).await?;
    assert!(
        !store
            .renew_lease(&key, "c", Duration::from_secs(90))
            .await?
    );
    assert!(store.get_lease(&key).await?.is_none());
    Ok(())
}

#[tokio::test]
async fn sync_meta_and_cursors_round_trip_and_are_deleted() -> Result<()> {
    let (stack, tables) = stack().await?;
    let store = DynamoSyncStateStore::new(dynamo(&stack), &tables.sync_state);
    let key = SyncKey::new(tenant(), user(3), SyncKind::Mail);
    let other = SyncKey::new(
        key.tenant_id.clone(),
        key.user_id.clone(),
        SyncKind::Calendar,
    );
    let now = OffsetDateTime::from_unix_timestamp(1_780_000_000)?;

    let mut meta = SyncMeta::new(now);
    meta.enter(SyncStage::InitialImport, now);
    meta.window = Some(SyncWindow {
        start: now - Duration::from_secs(7 * 86_400),
        end: None,
    });
    meta.park(now + Duration::from_secs(600), now);
    store.put_meta(&key, &meta).await?;
    assert_eq!(store.get_meta(&key).await?, Some(meta.clone()));
    assert_eq!(store.get_meta(&other).await?, None);

    for folder in ["inbox", "sent", "archive"] {
        let mut cursor = FolderCursor::new(folder, now);
        cursor.cursor = Some(format!(
            "https://graph.microsoft.com/v1.0/me/mailFolders/{folder}/messages/delta?$deltatoken=abc"
        ));
        cursor.cursor_kind = Some(CursorKind::DeltaLink);
        cursor.counters.scanned = 42;
        store.put_cursor(&key, &cursor).await?;
    }
    store
        .put_cursor(&other, &FolderCursor::new("calendar", now))
        .await?;
    assert!(
        store
            .acquire_lease(&key, "w", Duration::from_secs(60))
            .await?
    );

    let cursors = store.list_cursors(&key).await?;
    let ids: Vec<&str> = cursors.iter().map(|c| c.folder_id.as_str()).collect();
    assert_eq!(ids, vec!["archive", "inbox", "sent"]);
    assert_eq!(
        store
            .get_cursor(&key, "inbox")
            .await?
            .context("cursor")?
            .counters
            .scanned,
        42
    );
    store.delete_cursor(&key, "sent").await?;
    assert!(store.get_cursor(&key, "sent").await?.is_none());

    store.delete_sync_state(&key).await?;
    assert!(store.get_meta(&key).await?.is_none());
    assert!(store.list_cursors(&key).await?.is_empty());
    assert!(store.get_lease(&key).await?.is_none());
    assert_eq!(
        store.list_cursors(&other).await?.len(),
        1,
        "other sync untouched"
    );
    Ok(())
}

fn mail_activity(owner: &UserKey, n: usize, subject: &str) -> Activity {
    Activity::new(
        owner.clone(),
        ActivityContent::Mail(MailActivity {
            immutable_id: format!("AAMkAGI2-{n:04}="),
            internet_message_id: Some(format!("<m{n}@acme.com>")),
            conversation_id: Some(format!("conv-{}", n % 7)),
            folder_id: "inbox".into(),
            subject: subject.to_owned(),
            participants: vec![
                Participant {
                    role: ParticipantRole::From,
                    address: "jane@acme.com".into(),
                    name: Some("Jane".into()),
                },
                Participant {
                    role: ParticipantRole::To,
                    address: "adele@contoso.com".into(),
                    name: None,
                },
            ],
            sent_at: Some(
                OffsetDateTime::from_unix_timestamp(1_780_000_000 + n as i64).expect("time"),
            ),
            received_at: None,
            body_preview: "preview".into(),
            body_text: "body ".repeat(50),
            has_attachments: n.is_multiple_of(2),
            web_link: Some(format!("https://outlook.office365.com/owa/?ItemID={n}")),
            detail: None,
        }),
        vec![CrmMatch {
            participant: "jane@acme.com".into(),
            reason: MatchReason::Address,
            record_kind: Some(CrmRecordKind::Contact),
            record_id: Some("003B".into()),
            matched_on: "jane@acme.com".into(),
        }],
        OffsetDateTime::from_unix_timestamp(1_780_100_000).expect("time"),
    )
}

#[tokio::test]
async fn activities_expire_after_their_tenants_retention() -> Result<()> {
    let (stack, tables) = stack().await?;
    let client = dynamo(&stack);
    let ttl = client
        .describe_time_to_live()
        .table_name(&tables.activities)
        .send()
        .await?;
    assert_eq!(
        ttl.time_to_live_description()
            .and_then(|d| d.attribute_name()),
        Some("expiresAt"),
        "the template's TTL attribute"
    );
    let tenants = Arc::new(DynamoTenantStore::new(client.clone(), &tables.tenants));
    let now = OffsetDateTime::from_unix_timestamp(1_780_000_000)?;
    let mut short = Tenant::new(tenant(), ConsentMode::UserConsent, now);
    short.activity_retention_days = Some(30);
    tenants.put_tenant(&short).await?;
    let default = tenant(); // no tenant record: the stack's default applies
    let store = DynamoActivityStore::new(client.clone(), &tables.activities)
        .with_retention(ActivityRetention::new(730, tenants.clone()));

    let short_owner = UserKey::new(short.tenant_id.clone(), user(1));
    let default_owner = UserKey::new(default.clone(), user(2));
    let mut received = mail_activity(&short_owner, 1, "Renewal");
    if let ActivityContent::Mail(mail) = &mut received.content {
        mail.received_at = Some(OffsetDateTime::from_unix_timestamp(1_780_050_000)?);
    }
    let sent_only = mail_activity(&default_owner, 2, "Pricing");
    store
        .upsert_activities(&[received.clone(), sent_only.clone()])
        .await?;

    let expires = |owner: &UserKey, activity: &Activity| {
        let client = client.clone();
        let table = tables.activities.clone();
        let (owner, id) = (owner.to_string(), activity.activity_id.to_string());
        async move {
            let item = client
                .get_item()
                .table_name(table)
                .key("owner", AttributeValue::S(owner))
                .key("activityId", AttributeValue::S(id))
                .send()
                .await?
                .item
                .context("stored")?;
            anyhow::Ok(item["expiresAt"].as_n().expect("N").parse::<i64>()?)
        }
    };
    assert_eq!(
        expires(&short_owner, &received).await?,
        1_780_050_000 + 30 * 86_400,
        "received date + the tenant's 30 days"
    );
    assert_eq!(
        expires(&default_owner, &sent_only).await?,
        1_780_000_002 + 730 * 86_400,
        "sent date + the default 730 days"
    );
    // The item still reads back as the activity.
    assert_eq!(
        store
            .get_activity(&short_owner, &received.activity_id)
            .await?,
        Some(received)
    );
    Ok(())
}

#[tokio::test]
async fn sixty_activities_batch_upsert_then_list() -> Result<()> {
    let (stack, tables) = stack().await?;
    let store = DynamoActivityStore::new(dynamo(&stack), &tables.activities);
    let owner = UserKey::new(tenant(), user(1));
    let neighbour = UserKey::new(owner.tenant_id.clone(), user(2));

    let mut activities: Vec<Activity> = (0..60)
        .map(|n| mail_activity(&owner, n, "Renewal"))
        .collect();
    // A duplicate key in one call must not break the batch: the last version wins.
    activities.push(mail_activity(&owner, 5, "Renewal v2"));
    activities.push(Activity::new(
        owner.clone(),
        ActivityContent::Meeting(MeetingActivity {
            immutable_id: "AAMkMeeting=".into(),
            ical_uid: Some("040000008200E0".into()),
            series_master_id: None,
            occurrence_start: None,
            subject: "QBR".into(),
            start: OffsetDateTime::from_unix_timestamp(1_780_000_000)?,
            end: OffsetDateTime::from_unix_timestamp(1_780_003_600)?,
            is_all_day: false,
            organizer: Some(Attendee {
                address: "jane@acme.com".into(),
                name: None,
                attendee_type: None,
                response: None,
            }),
            attendees: vec![],
            online_meeting_provider: Some("teamsForBusiness".into()),
            join_url: Some("https://teams.microsoft.com/l/meetup-join/x".into()),
            location: None,
            show_as: Some("busy".into()),
            is_cancelled: false,
            web_link: None,
        }),
        vec![],
        OffsetDateTime::from_unix_timestamp(1_780_100_000)?,
    ));
    store.upsert_activities(&activities).await?;
    store
        .upsert_activities(&[mail_activity(&neighbour, 1, "Other user")])
        .await?;

    let mut listed = Vec::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let page = store.list_activities(&owner, 25, token.as_ref()).await?;
        pages += 1;
        listed.extend(page.items);
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
        ensure!(pages < 10, "paging does not end");
    }
    assert!(pages >= 3, "61 items in pages of 25: {pages} pages");
    assert_eq!(listed.len(), 61);
    let ids: BTreeSet<String> = listed.iter().map(|a| a.activity_id.to_string()).collect();
    assert_eq!(ids.len(), 61);
    let five = listed
        .iter()
        .find(|a| a.activity_id == ActivityId::mail("AAMkAGI2-0005="))
        .context("activity 5")?;
    let ActivityContent::Mail(mail) = &five.content else {
        anyhow::bail!("activity 5 is not mail");
    };
    assert_eq!(mail.subject, "Renewal v2");
    let original = activities
        .iter()
        .find(|a| a.activity_id == ActivityId::mail("AAMkAGI2-0017="))
        .context("17")?;
    assert_eq!(
        store
            .get_activity(&owner, &original.activity_id)
            .await?
            .as_ref(),
        Some(original),
        "stored activity round-trips exactly"
    );
    let meeting = store
        .get_activity(&owner, &ActivityId::meeting("AAMkMeeting="))
        .await?
        .context("meeting")?;
    assert!(matches!(meeting.content, ActivityContent::Meeting(ref m) if m.join_url.is_some()));

    // Upserting again is idempotent.
    store.upsert_activities(&activities[..30]).await?;
    let again = store.list_activities(&owner, 100, None).await?;
    assert_eq!(again.items.len(), 61);

    assert!(
        store
            .delete_activity(&owner, &ActivityId::mail("AAMkAGI2-0000="))
            .await?
    );
    assert!(
        !store
            .delete_activity(&owner, &ActivityId::mail("AAMkAGI2-0000="))
            .await?
    );
    let removed: Vec<ActivityId> = (1..=10)
        .map(|n| ActivityId::mail(&format!("AAMkAGI2-{n:04}=")))
        .collect();
    store.delete_activities(&owner, &removed).await?;
    assert_eq!(
        store.list_activities(&owner, 100, None).await?.items.len(),
        50
    );

    assert_eq!(store.delete_all_activities(&owner).await?, 50);
    assert!(
        store
            .list_activities(&owner, 100, None)
            .await?
            .items
            .is_empty()
    );
    assert_eq!(
        store
            .list_activities(&neighbour, 100, None)
            .await?
            .items
            .len(),
        1
    );

    let bad = PageToken("not-a-token".into());
    assert!(matches!(
        store.list_activities(&owner, 10, Some(&bad)).await,
        Err(StoreError::InvalidPageToken)
    ));
    Ok(())
}

/// Reads every active connection through `query_active`, `page_size` at a time; returns
/// the keys in order and the shards the page tokens named.
async fn read_active(
    store: &DynamoConnectionStore,
    page_size: u32,
) -> Result<(Vec<UserKey>, Vec<u64>)> {
    use base64::Engine as _;
    let mut seen = Vec::new();
    let mut shards = Vec::new();
    let mut token: Option<PageToken> = None;
    for _ in 0..200 {
        let page = store.query_active(page_size, token.as_ref()).await?;
        ensure!(
            page.items.len() <= page_size as usize,
            "a page holds at most {page_size}"
        );
        seen.extend(page.items.iter().map(|c| {
            assert_eq!(c.status, ConnectionStatus::Active);
            c.key()
        }));
        match page.next {
            Some(next) => {
                let json =
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(next.as_str())?;
                let position: serde_json::Value = serde_json::from_slice(&json)?;
                shards.push(
                    position["shard"]
                        .as_u64()
                        .context("the token names its shard")?,
                );
                token = Some(next);
            }
            None => return Ok((seen, shards)),
        }
    }
    anyhow::bail!("paging does not end")
}

#[tokio::test]
async fn connections_spread_over_status_shards_and_page_across_them() -> Result<()> {
    let (stack, tables) = stack().await?;
    let client = dynamo(&stack);
    let store = DynamoConnectionStore::new(client.clone(), &tables.connections);
    let now = OffsetDateTime::from_unix_timestamp(1_780_000_000)?;
    let tenants = [tenant(), tenant(), tenant()];
    let mut active = BTreeSet::new();
    for n in 0..64 {
        let connection = Connection::new_active(
            tenants[n as usize % 3].clone(),
            user(n),
            format!("user{n}@contoso.com"),
            FeatureBundle::All.scope_set(),
            now,
        );
        store.upsert_connection(&connection).await?;
        active.insert(connection.key());
    }
    // Ten leave `active`: their shard key follows the status.
    for n in (0..64).step_by(7) {
        let key = UserKey::new(tenants[n as usize % 3].clone(), user(n));
        store
            .set_status(
                &key,
                &StatusChange::new(ConnectionStatus::ReauthRequired, Some("AADSTS50173"), now),
            )
            .await?;
        active.remove(&key);
    }

    // What is stored: `{status}#{shard}` with the shard of the key, over many shards.
    let scan = client.scan().table_name(&tables.connections).send().await?;
    let mut used = BTreeSet::new();
    for item in scan.items() {
        let key = UserKey::new(
            TenantId::parse(item["tenantId"].as_s().expect("S"))?,
            UserId::parse(item["userId"].as_s().expect("S"))?,
        );
        let status = item["status"].as_s().expect("S");
        let shard = status_shard(&key);
        assert!(shard < STATUS_SHARDS);
        assert_eq!(
            item["statusShard"].as_s().expect("S"),
            &format!("{status}#{shard}")
        );
        used.insert(shard);
    }
    ensure!(
        used.len() >= 12,
        "64 connections use {} of 16 shards",
        used.len()
    );

    for page_size in [5, 16, 100] {
        let (seen, shards) = read_active(&store, page_size).await?;
        assert_eq!(seen.len(), active.len(), "page size {page_size}: each once");
        assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), active);
        assert!(shards.windows(2).all(|w| w[0] <= w[1]), "{shards:?}");
        if page_size == 5 {
            ensure!(
                shards.iter().collect::<BTreeSet<_>>().len() > 5,
                "pages end in many shards: {shards:?}"
            );
        }
    }
    // A token naming a shard that does not exist is refused.
    let bad = {
        use base64::Engine as _;
        PageToken(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"shard":16}"#))
    };
    assert!(matches!(
        store.query_active(5, Some(&bad)).await,
        Err(StoreError::InvalidPageToken)
    ));
    Ok(())
}

#[tokio::test]
async fn records_written_before_the_shards_are_backfilled() -> Result<()> {
    let (stack, tables) = stack().await?;
    let client = dynamo(&stack);
    let store = DynamoConnectionStore::new(client.clone(), &tables.connections);
    let now = OffsetDateTime::from_unix_timestamp(1_780_000_000)?;
    let t = tenant();
    for n in 0..5 {
        let connection = Connection::new_active(
            t.clone(),
            user(n),
            format!("user{n}@contoso.com"),
            FeatureBundle::All.scope_set(),
            now,
        );
        store.upsert_connection(&connection).await?;
    }
    store
        .set_status(
            &UserKey::new(t.clone(), user(4)),
            &StatusChange::new(ConnectionStatus::Disconnected, None, now),
        )
        .await?;
    // Three records as an earlier release wrote them: no `statusShard`.
    for n in [0, 1, 4] {
        client
            .update_item()
            .table_name(&tables.connections)
            .key("tenantId", AttributeValue::S(t.to_string()))
            .key("userId", AttributeValue::S(user(n).to_string()))
            .update_expression("REMOVE statusShard")
            .send()
            .await?;
    }
    assert_eq!(
        read_active(&store, 10).await?.0.len(),
        2,
        "only sharded records are found"
    );

    assert_eq!(store.backfill_status_shards().await?, 3);
    let (seen, _) = read_active(&store, 10).await?;
    assert_eq!(
        seen.into_iter().collect::<BTreeSet<_>>(),
        (0..4)
            .map(|n| UserKey::new(t.clone(), user(n)))
            .collect::<BTreeSet<_>>()
    );
    let disconnected = client
        .get_item()
        .table_name(&tables.connections)
        .key("tenantId", AttributeValue::S(t.to_string()))
        .key("userId", AttributeValue::S(user(4).to_string()))
        .send()
        .await?
        .item
        .context("item")?;
    assert_eq!(
        disconnected["statusShard"].as_s().expect("S"),
        &format!(
            "disconnected#{}",
            status_shard(&UserKey::new(t.clone(), user(4)))
        )
    );
    assert_eq!(store.backfill_status_shards().await?, 0, "idempotent");
    Ok(())
}

#[tokio::test]
async fn connections_query_active_pages_over_the_status_index() -> Result<()> {
    let (stack, tables) = stack().await?;
    let store = DynamoConnectionStore::new(dynamo(&stack), &tables.connections);
    let (t1, t2) = (tenant(), tenant());
    let now = OffsetDateTime::from_unix_timestamp(1_780_000_000)?;
    for n in 0..9 {
        let tenant_id = if n % 3 == 0 { t2.clone() } else { t1.clone() };
        let connection = Connection::new_active(
            tenant_id,
            user(n),
            format!("user{n}@contoso.com"),
            FeatureBundle::All.scope_set(),
            now,
        );
        store.upsert_connection(&connection).await?;
    }
    let revoked = UserKey::new(t1.clone(), user(1));
    let updated = store
        .set_status(
            &revoked,
            &StatusChange::new(ConnectionStatus::ConsentRevoked, Some("AADSTS65001"), now),
        )
        .await?;
    assert_eq!(updated.status, ConnectionStatus::ConsentRevoked);
    assert_eq!(updated.status_reason.as_deref(), Some("AADSTS65001"));
    store
        .set_status(
            &UserKey::new(t1.clone(), user(2)),
            &StatusChange::new(ConnectionStatus::Disconnected, None, now),
        )
        .await?;

    let mut seen = Vec::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let page = store.query_active(2, token.as_ref()).await?;
        pages += 1;
        seen.extend(page.items.into_iter().map(|c| {
            assert_eq!(c.status, ConnectionStatus::Active);
            c.key()
        }));
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
        ensure!(pages < 20, "paging does not end");
    }
    assert!(pages > 1, "more than one page: {pages}");
    assert_eq!(seen.len(), 7);
    assert_eq!(
        seen.iter().collect::<BTreeSet<_>>().len(),
        7,
        "no duplicates"
    );
    assert!(!seen.contains(&revoked));

    let parked_key = UserKey::new(t2.clone(), user(3));
    let until = now + Duration::from_secs(900);
    store
        .set_parked_until(&parked_key, SyncKind::Mail, Some(until), now)
        .await?;
    store
        .set_switches(
            &parked_key,
            UserSwitches {
                mail_sync: true,
                calendar_sync: false,
                internal_meetings: true,
            },
            now,
        )
        .await?;
    let parked = store
        .get_connection(&parked_key)
        .await?
        .context("connection")?;
    assert_eq!(parked.parked_until.mail, Some(until));
    assert!(!parked.switches.calendar_sync && parked.switches.internal_meetings);
    assert!(!parked.wants_sync(SyncKind::Mail, None, now));
    store
        .set_parked_until(&parked_key, SyncKind::Mail, None, now)
        .await?;
    assert!(
        store
            .get_connection(&parked_key)
            .await?
            .context("connection")?
            .wants_sync(SyncKind::Mail, None, now)
    );

    assert_eq!(store.list_by_tenant(&t2).await?.len(), 3);
    assert_eq!(store.list_by_tenant(&t1).await?.len(), 6);
    let missing = UserKey::new(t1.clone(), user(99));
    assert!(matches!(
        store
            .set_status(
                &missing,
                &StatusChange::new(ConnectionStatus::Active, None, now)
            )
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(store.get_connection(&missing).await?.is_none());

    let mut all = 0;
    let mut token = None;
    loop {
        let page = store.list_all(4, token.as_ref()).await?;
        all += page.items.len();
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    assert_eq!(all, 9);
    Ok(())
}

#[tokio::test]
async fn tenants_round_trip() -> Result<()> {
    let (stack, tables) = stack().await?;
    let store = DynamoTenantStore::new(dynamo(&stack), &tables.tenants);
    let now = OffsetDateTime::from_unix_timestamp(1_780_000_000)?;
    let mut record = Tenant::new(tenant(), ConsentMode::UserConsent, now);
    record.verified_domains.insert("contoso.com".into());
    record.record_admin_consent(
        FeatureBundle::All,
        &ScopeSet::new(),
        Some("admin@contoso.com".into()),
        now,
    );
    store.put_tenant(&record).await?;
    assert_eq!(
        store.get_tenant(&record.tenant_id).await?,
        Some(record.clone())
    );
    record.confirm(now);
    store.put_tenant(&record).await?;
    assert_eq!(
        store
            .get_tenant(&record.tenant_id)
            .await?
            .context("tenant")?
            .consent_state,
        ConsentState::Confirmed
    );
    assert!(store.delete_tenant(&record.tenant_id).await?);
    assert!(!store.delete_tenant(&record.tenant_id).await?);
    assert!(store.get_tenant(&record.tenant_id).await?.is_none());
    Ok(())
}

/// A snapshot with `contacts` contacts at acme-N.com (N < accounts), `leads` leads at
/// initech.com, and accounts acme-0.com ... acme-(accounts-1).com.
fn snapshot(
    tenant_id: &TenantId,
    accounts: usize,
    contacts: usize,
    leads: usize,
    tag: &str,
) -> CrmSnapshot {
    let accounts_json: Vec<serde_json::Value> = (0..accounts)
        .map(|a| serde_json::json!({"id": format!("001{a:05}"), "name": format!("Acme {a} {tag}"), "domains": [format!("acme-{a}.com")]}))
        .collect();
    let contacts_json: Vec<serde_json::Value> = (0..contacts)
        .map(|c| serde_json::json!({"id": format!("003{c:05}"), "email": format!("contact{c}@acme-{}.com", c % accounts), "accountId": format!("001{:05}", c % accounts)}))
        .collect();
    let leads_json: Vec<serde_json::Value> = (0..leads)
        .map(|l| serde_json::json!({"id": format!("00Q{l:05}"), "email": format!("lead{l}@initech.com"), "company": "Initech"}))
        .collect();
    let file = serde_json::json!({
        "tenantId": tenant_id.as_str(),
        "accounts": accounts_json,
        "contacts": contacts_json,
        "leads": leads_json,
        "opportunities": [
            {"id": "006A", "accountId": "00100000", "isClosed": false, "createdDate": "2026-04-01"},
            {"id": "006B", "accountId": "00100000", "isClosed": true, "createdDate": "2025-01-01"}
        ]
    });
    CrmSnapshot::from_json_slice(&serde_json::to_vec(&file).expect("json")).expect("valid snapshot")
}

/// Every CRM item of a tenant, as canonical JSON (sorted keys), in key order.
async fn crm_items(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    tenant_id: &TenantId,
) -> Result<Vec<serde_json::Value>> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let output = client
            .query()
            .table_name(table)
            .key_condition_expression("tenantId = :t")
            .expression_attribute_values(":t", AttributeValue::S(tenant_id.to_string()))
            .set_exclusive_start_key(start)
            .send()
            .await?;
        for item in output.items.unwrap_or_default() {
            items.push(serde_dynamo::from_item::<_, serde_json::Value>(item)?);
        }
        match output.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok(items),
        }
    }
}

#[tokio::test]
async fn crm_lookup_of_250_addresses_and_domains() -> Result<()> {
    let (stack, tables) = stack().await?;
    let index = DynamoCrmIndex::new(dynamo(&stack), &tables.crm);
    let oracle = MemoryCrmIndex::default();
    let tenant_id = tenant();
    let crm = snapshot(&tenant_id, 40, 150, 60, "v1");
    index.replace_snapshot(&crm).await?;
    oracle.replace_snapshot(&crm).await?;

    // 250 addresses: 120 contacts, 50 leads (some in another case, with spaces), 80 misses.
    let mut addresses: Vec<String> = (0..120)
        .map(|c| format!("contact{c}@acme-{}.com", c % 40))
        .collect();
    addresses.extend((0..50).map(|l| format!("  LEAD{l}@Initech.com ")));
    addresses.extend((0..80).map(|m| format!("stranger{m}@example-{m}.org")));
    assert_eq!(addresses.len(), 250);
    let mut domains: Vec<String> = (0..30)
        .flat_map(|a| domain_and_parents(&format!("mail.acme-{a}.com")))
        .collect();
    domains.extend([
        "gmail.com".to_owned(),
        "initech.com".to_owned(),
        "not a domain".to_owned(),
    ]);

    let found = index.lookup(&tenant_id, &addresses, &domains).await?;
    assert_eq!(found.addresses.len(), 170);
    assert_eq!(found.domains.len(), 30);
    assert_eq!(
        found,
        oracle.lookup(&tenant_id, &addresses, &domains).await?
    );
    let lead = &found.addresses["lead7@initech.com"];
    assert_eq!(
        (lead[0].kind, lead[0].company.as_deref()),
        (CrmRecordKind::Lead, Some("Initech"))
    );
    assert_eq!(found.domains["acme-3.com"][0].id, "00100003");
    assert!(!found.addresses.contains_key("stranger1@example-1.org"));

    let summary = index.summary(&tenant_id).await?.context("summary")?;
    assert_eq!(summary.stats.addresses, 210);
    assert_eq!(summary.stats.domains, 40);
    assert_eq!(
        index.oldest_open_opportunity(&tenant_id).await?,
        Some(time::macros::date!(2026 - 04 - 01))
    );
    // Another tenant sees nothing.
    assert_eq!(
        index.lookup(&tenant(), &addresses, &domains).await?,
        CrmLookup::default()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crm_snapshot_replace_is_atomic_and_idempotent() -> Result<()> {
    let (stack, tables) = stack().await?;
    let client = dynamo(&stack);
    let index = Arc::new(DynamoCrmIndex::new(client.clone(), &tables.crm));
    let tenant_id = tenant();
    let old = snapshot(&tenant_id, 10, 60, 20, "old");
    let new = snapshot(&tenant_id, 12, 30, 40, "new");

    let ReplaceOutcome::Replaced {
        summary: first,
        previous_version: None,
        ..
    } = index.replace_snapshot(&old).await?
    else {
        anyhow::bail!("first import must write");
    };

    // Expected answers of each version, for a fixed probe.
    let probe_addresses: Vec<String> = (0..60)
        .map(|c| format!("contact{c}@acme-{}.com", c % 10))
        .chain((0..40).map(|l| format!("lead{l}@initech.com")))
        .collect();
    let probe_domains: Vec<String> = (0..12).map(|a| format!("acme-{a}.com")).collect();
    let mut expected = Vec::new();
    for crm in [&old, &new] {
        let oracle = MemoryCrmIndex::default();
        oracle.replace_snapshot(crm).await?;
        expected.push(
            oracle
                .lookup(&tenant_id, &probe_addresses, &probe_domains)
                .await?,
        );
    }
    assert_ne!(expected[0], expected[1]);

    // Readers run while the index flips old -> new -> old -> new.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (index, tenant_id, stop) = (index.clone(), tenant_id.clone(), stop.clone());
        let (addresses, domains, expected) = (
            probe_addresses.clone(),
            probe_domains.clone(),
            expected.clone(),
        );
        readers.push(tokio::spawn(async move {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || reads == 0 {
                let seen = index.lookup(&tenant_id, &addresses, &domains).await?;
                ensure!(
                    seen == expected[0] || seen == expected[1],
                    "a lookup saw a mix of two snapshots"
                );
                reads += 1;
            }
            anyhow::Ok(reads)
        }));
    }
    let mut last = first.clone();
    for crm in [&new, &old, &new] {
        let ReplaceOutcome::Replaced {
            summary,
            previous_version,
            written_entries,
            removed_entries,
        } = index.replace_snapshot(crm).await?
        else {
            anyhow::bail!("a changed snapshot must be written");
        };
        assert_eq!(previous_version.as_deref(), Some(last.version.as_str()));
        assert_eq!(
            written_entries,
            summary.stats.addresses + summary.stats.domains
        );
        assert_eq!(removed_entries, last.stats.addresses + last.stats.domains);
        last = summary;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        let reads = reader.await??;
        assert!(reads > 0);
    }

    // Pointer flipped; only the current version's entries remain.
    let summary = index.summary(&tenant_id).await?.context("summary")?;
    assert_eq!(summary.version, last.version);
    assert_eq!(summary.content_hash, new.content_hash());
    let items = crm_items(&client, &tables.crm, &tenant_id).await?;
    let prefix = format!("v#{}#", summary.version);
    let stale: Vec<&str> = items
        .iter()
        .filter_map(|item| item["entry"].as_str())
        .filter(|entry| *entry != "current" && !entry.starts_with(&prefix))
        .collect();
    assert!(stale.is_empty(), "old entries left: {stale:?}");
    assert_eq!(
        items.len() as u64,
        1 + summary.stats.addresses + summary.stats.domains
    );
    assert_eq!(
        index
            .lookup(&tenant_id, &probe_addresses, &probe_domains)
            .await?,
        expected[1]
    );

    // The same content again (even reordered) writes nothing.
    let before = crm_items(&client, &tables.crm, &tenant_id).await?;
    let ReplaceOutcome::Unchanged { summary: unchanged } = index.replace_snapshot(&new).await?
    else {
        anyhow::bail!("identical snapshot must be a no-op");
    };
    assert_eq!(unchanged, summary);
    assert_eq!(crm_items(&client, &tables.crm, &tenant_id).await?, before);
    Ok(())
}

#[tokio::test]
async fn abandoned_crm_imports_are_cleaned_up_and_fresh_ones_kept() -> Result<()> {
    let (stack, tables) = stack().await?;
    let client = dynamo(&stack);
    let index = DynamoCrmIndex::new(client.clone(), &tables.crm);
    let tenant_id = tenant();
    index
        .replace_snapshot(&snapshot(&tenant_id, 2, 2, 0, "a"))
        .await?;

    // Two imports that died after writing an entry: one two hours ago, one just now
    // (possibly still running). Version ids start with their creation time in hex.
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let dead = format!("{:010x}deaddeaddead", now - 7200);
    let running = format!("{:010x}aliveali0000", now);
    for version in [&dead, &running] {
        client
            .update_item()
            .table_name(&tables.crm)
            .key("tenantId", AttributeValue::S(tenant_id.to_string()))
            .key("entry", AttributeValue::S("current".into()))
            .update_expression("ADD pendingVersions :v")
            .expression_attribute_values(":v", AttributeValue::Ss(vec![version.clone()]))
            .send()
            .await?;
        client
            .put_item()
            .table_name(&tables.crm)
            .item("tenantId", AttributeValue::S(tenant_id.to_string()))
            .item(
                "entry",
                AttributeValue::S(format!("v#{version}#a#ghost@acme-0.com")),
            )
            .item("records", AttributeValue::L(vec![]))
            .send()
            .await?;
    }
    // Readers ignore pending versions.
    let seen = index
        .lookup(&tenant_id, &["ghost@acme-0.com".into()], &[])
        .await?;
    assert!(seen.addresses.is_empty());

    let ReplaceOutcome::Replaced {
        removed_entries, ..
    } = index
        .replace_snapshot(&snapshot(&tenant_id, 2, 2, 1, "b"))
        .await?
    else {
        anyhow::bail!("changed snapshot must be written");
    };
    // The replaced version's 4 entries (2 addresses, 2 domains) and the dead import's one.
    assert_eq!(removed_entries, 5);
    let items = crm_items(&client, &tables.crm, &tenant_id).await?;
    let entries: Vec<&str> = items.iter().filter_map(|i| i["entry"].as_str()).collect();
    assert!(!entries.iter().any(|e| e.contains(&dead)), "{entries:?}");
    assert!(entries.iter().any(|e| e.contains(&running)), "{entries:?}");
    let pointer = items
        .iter()
        .find(|i| i["entry"] == "current")
        .context("pointer")?;
    assert_eq!(pointer["pendingVersions"], serde_json::json!([running]));
    Ok(())
}

#[tokio::test]
async fn token_vault_creates_updates_reads_and_deletes() -> Result<()> {
    let (stack, _) = stack().await?;
    let client = aws_sdk_secretsmanager::Client::new(&stack.sdk);
    let vault = SecretsManagerVault::new(client.clone());
    let key = UserKey::new(tenant(), user(4));
    let record = |token: &str| TokenRecord {
        refresh_token: RefreshToken::new(token),
        scopes: FeatureBundle::Mail.scope_set(),
        updated_at: OffsetDateTime::from_unix_timestamp(1_780_000_000).expect("time"),
    };

    assert!(vault.get_token(&key).await?.is_none());
    vault.put_token(&key, &record("refresh-1")).await?;
    let name = format!("office365/{}/{}", key.tenant_id, key.user_id);
    let raw = client.get_secret_value().secret_id(&name).send().await?;
    let stored: serde_json::Value = serde_json::from_str(raw.secret_string().context("string")?)?;
    assert_eq!(stored["refreshToken"], "refresh-1");
    assert_eq!(stored["scopes"][4], "Mail.Read");

    vault.put_token(&key, &record("refresh-2")).await?;
    let read = vault.get_token(&key).await?.context("stored")?;
    assert_eq!(read.refresh_token.secret(), "refresh-2");
    assert!(read.scopes.contains(Scope::MailRead));

    vault.delete_token(&key).await?;
    assert!(vault.get_token(&key).await?.is_none());
    let gone = client.describe_secret().secret_id(&name).send().await;
    assert!(gone.is_err(), "secret still exists after delete");
    vault.delete_token(&key).await?;
    // Deleted without recovery: the name is free again at once.
    vault.put_token(&key, &record("refresh-3")).await?;
    assert_eq!(
        vault
            .get_token(&key)
            .await?
            .context("stored")?
            .refresh_token
            .secret(),
        "refresh-3"
    );

    // A value that is not ours is reported without its content.
    client
        .put_secret_value()
        .secret_id(&name)
        .secret_string("{\"refreshToken\": 7, \"leak\": \"s3cr3t\"}")
        .send()
        .await?;
    let error = vault.get_token(&key).await.expect_err("corrupt value");
    let rendered = format!("{error:?} {error}");
    assert!(matches!(error, VaultError::Corrupt { .. }));
    assert!(!rendered.contains("s3cr3t"), "{rendered}");

    let secret_id = stack
        .env
        .get(vars::CLIENT_SECRET_ID)
        .context("CLIENT_SECRET_ID")?;
    let client_secret = SecretsManagerClientSecret::new(client.clone(), secret_id)
        .client_secret()
        .await?;
    assert!(!client_secret.secret().is_empty());
    let missing = SecretsManagerClientSecret::new(client, "office365/no-such-secret")
        .client_secret()
        .await;
    assert!(matches!(missing, Err(VaultError::NotFound { .. })));
    Ok(())
}

async fn receive_all(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    expected: usize,
    within: Duration,
) -> Result<Vec<String>> {
    let deadline = tokio::time::Instant::now() + within;
    let mut bodies = Vec::new();
    while bodies.len() < expected && tokio::time::Instant::now() < deadline {
        let output = client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await?;
        for message in output.messages.unwrap_or_default() {
            bodies.push(message.body.unwrap_or_default());
            if let Some(handle) = message.receipt_handle {
                client
                    .delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await?;
            }
        }
    }
    Ok(bodies)
}

/// Records the entry count of every SendMessageBatch call the SDK executes.
#[derive(Clone, Debug, Default)]
struct BatchSizes(Arc<std::sync::Mutex<Vec<usize>>>);

impl aws_sdk_sqs::config::Intercept for BatchSizes {
    fn name(&self) -> &'static str {
        "BatchSizes"
    }

    fn read_before_execution(
        &self,
        context: &aws_sdk_sqs::config::interceptors::BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut aws_sdk_sqs::config::ConfigBag,
    ) -> Result<(), aws_sdk_sqs::error::BoxError> {
        if let Some(input) = context
            .input()
            .downcast_ref::<aws_sdk_sqs::operation::send_message_batch::SendMessageBatchInput>(
        ) {
            self.0
                .lock()
                .map_err(|_| "poisoned")?
                .push(input.entries().len());
        }
        Ok(())
    }
}

#[tokio::test]
async fn twenty_three_jobs_are_enqueued_and_all_received() -> Result<()> {
    let (stack, _) = stack().await?;
    let client = aws_sdk_sqs::Client::new(&stack.sdk);
    let queue_url = stack
        .env
        .get(vars::MAIL_SYNC_QUEUE_URL)
        .context("queue")?
        .clone();
    let sizes = BatchSizes::default();
    let counted = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&stack.sdk)
            .interceptor(sizes.clone())
            .build(),
    );
    let queue = SqsJobQueue::new(counted);
    let tenant_id = tenant();
    let jobs: Vec<SyncJob> = (0..23)
        .map(|n| {
            SyncJob::new(
                SyncKind::Mail,
                tenant_id.clone(),
                user(n),
                SyncReason::Scheduled,
            )
        })
        .collect();
    assert_eq!(enqueue_sync_jobs(&queue, &queue_url, &jobs).await?, 23);
    let mut calls = sizes
        .0
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    calls.sort_unstable();
    assert_eq!(calls, vec![3, 10, 10], "three SendMessageBatch calls");

    let bodies = receive_all(&client, &queue_url, 23, Duration::from_secs(20)).await?;
    let mut received: Vec<SyncJob> = bodies
        .iter()
        .map(|body| serde_json::from_str(body))
        .collect::<Result<_, _>>()?;
    received.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    assert_eq!(received, jobs);

    // A delayed message stays invisible for its delay.
    let delayed = QueueMessage::new("later").with_delay(Duration::from_secs(3));
    queue.send_batch(&queue_url, &[delayed]).await?;
    let early = client
        .receive_message()
        .queue_url(&queue_url)
        .wait_time_seconds(1)
        .send()
        .await?;
    assert!(
        early.messages.unwrap_or_default().is_empty(),
        "delayed message arrived early"
    );
    let late = receive_all(&client, &queue_url, 1, Duration::from_secs(10)).await?;
    assert_eq!(late, vec!["later".to_owned()]);
    Ok(())
}

#[tokio::test]
async fn unsendable_entries_are_reported_by_index() -> Result<()> {
    let (stack, _) = stack().await?;
    let client = aws_sdk_sqs::Client::new(&stack.sdk);
    let queue_url = stack.env.get(vars::TEAMS_POST_QUEUE_URL).context("queue")?;
    let missing_queue = format!("{}-does-not-exist", queue_url);
    let queue = SqsJobQueue::new(client).with_backoff(Backoff {
        base: Duration::from_millis(10),
        max: Duration::from_millis(20),
        attempts: 2,
    });
    let messages: Vec<QueueMessage> = (0..12)
        .map(|n| QueueMessage::new(format!("m{n}")))
        .collect();
    let Err(QueueError::EntriesFailed { sent, failures, .. }) =
        queue.send_batch(&missing_queue, &messages).await
    else {
        anyhow::bail!("sending to a missing queue must fail");
    };
    assert_eq!(sent, 0);
    assert_eq!(
        failures.iter().map(|f| f.index).collect::<Vec<_>>(),
        (0..12).collect::<Vec<_>>()
    );
    Ok(())
}

/// The last step of a disconnection marks only a pending tombstone: never a connection made
/// again by a sign-in, a finished one, or a missing one.
#[tokio::test]
async fn a_disconnection_is_recorded_finished_only_on_its_pending_tombstone() -> Result<()> {
    let (stack, tables) = stack().await?;
    let store = DynamoConnectionStore::new(dynamo(&stack), &tables.connections);
    let now = OffsetDateTime::from_unix_timestamp(1_780_000_000)?;
    let later = OffsetDateTime::from_unix_timestamp(1_780_000_600)?;
    let (from, to) = ("disconnect_pending", "operator_disconnected");
    let mut connection = Connection::new_active(
        tenant(),
        user(1),
        "adele@contoso.com",
        FeatureBundle::All.scope_set(),
        now,
    );
    let key = connection.key();
    ensure!(
        !store
            .replace_disconnected_reason(&key, from, to, later)
            .await?,
        "missing"
    );
    store.upsert_connection(&connection).await?;
    ensure!(
        !store
            .replace_disconnected_reason(&key, from, to, later)
            .await?,
        "active"
    );
    ensure!(store.get_connection(&key).await? == Some(connection.clone()));

    connection.apply(&StatusChange::new(
        ConnectionStatus::Disconnected,
        Some(from),
        now,
    ));
    store.upsert_connection(&connection).await?;
    ensure!(
        store
            .replace_disconnected_reason(&key, from, to, later)
            .await?
    );
    let done = store.get_connection(&key).await?.context("kept")?;
    ensure!(done.status == ConnectionStatus::Disconnected);
    ensure!(done.status_reason.as_deref() == Some(to));
    ensure!((done.status_changed_at, done.updated_at) == (now, later));
    ensure!(
        !store
            .replace_disconnected_reason(&key, from, to, later)
            .await?,
        "finished"
    );
    Ok(())
}

/// The subscriptions store on moto: a subscription's two items, a successor replacing it,
/// the debounce as a conditional write, failures, and removal that spares a successor.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscriptions_are_kept_replaced_debounced_and_removed() -> Result<()> {
    use connector_core::adapters::dynamodb::DynamoSubscriptionStore;
    use connector_core::notifications::{
        ClientState, CreateFailure, Subscription, SubscriptionStore,
    };

    let (stack, tables) = stack().await?;
    let store = DynamoSubscriptionStore::new(dynamo(&stack), &tables.subscriptions);
    let owner = UserKey::new(tenant(), user(7));
    let other = UserKey::new(owner.tenant_id.clone(), user(8));
    let now = time::macros::datetime!(2026-12-06 10:00:00.5 UTC);
    let state = ClientState::generate();
    let first = Subscription {
        tenant_id: owner.tenant_id.clone(),
        user_id: owner.user_id.clone(),
        kind: SyncKind::Mail,
        id: "sub-first".into(),
        resource: "me/messages".into(),
        client_state: state.digest(),
        expires_at: now + time::Duration::minutes(10_060),
        created_at: now,
        renewed_at: None,
    };
    store.save(&first, None).await?;
    ensure!(store.by_id("sub-first").await? == Some(first.clone()));
    ensure!(store.by_id("sub-unknown").await?.is_none());
    let found = store.user_subscriptions(&owner).await?;
    ensure!(found.len() == 1 && found[0].active.as_ref() == Some(&first));
    let page = store
        .subscriptions_of(&[owner.clone(), other.clone()], SyncKind::Mail)
        .await?;
    ensure!(page.len() == 1 && page.contains_key(&owner), "{page:?}");
    ensure!(
        store
            .subscriptions_of(std::slice::from_ref(&owner), SyncKind::Calendar)
            .await?
            .is_empty()
    );
    // What is stored is a digest, never the client state.
    let raw = dynamo(&stack)
        .scan()
        .table_name(&tables.subscriptions)
        .send()
        .await?;
    let dump = format!("{:?}", raw.items());
    ensure!(!dump.contains(state.expose()) && dump.contains(&state.digest().to_hex()));

    // The debounce: one claim per window, another after it; unknown ids claim nothing.
    let window = Duration::from_secs(3);
    ensure!(store.claim_wake("sub-first", now, window).await?);
    ensure!(
        !store
            .claim_wake("sub-first", now + time::Duration::seconds(2), window)
            .await?
    );
    ensure!(
        store
            .claim_wake("sub-first", now + time::Duration::seconds(3), window)
            .await?
    );
    ensure!(!store.claim_wake("sub-unknown", now, window).await?);
    ensure!(
        store.by_id("sub-unknown").await?.is_none(),
        "no item made up"
    );

    // A successor replaces the first: the first's id item goes in the same transaction.
    let second = Subscription {
        id: "sub-second".into(),
        renewed_at: Some(now),
        ..first.clone()
    };
    store.save(&second, Some("sub-first")).await?;
    ensure!(store.by_id("sub-first").await?.is_none());
    ensure!(store.by_id("sub-second").await? == Some(second.clone()));
    // Removing the first (a late lifecycle notification) leaves the successor in place.
    store
        .remove(&owner, SyncKind::Mail, Some("sub-first"))
        .await?;
    ensure!(store.user_subscriptions(&owner).await?[0].active.as_ref() == Some(&second));

    // A failed creation is recorded for its user and kind.
    let failure = CreateFailure {
        reason: "validation_failed".into(),
        failed_at: now,
        retry_at: now + time::Duration::hours(1),
    };
    store
        .record_failure(&other, SyncKind::Calendar, &failure)
        .await?;
    let failed = store
        .subscriptions_of(std::slice::from_ref(&other), SyncKind::Calendar)
        .await?;
    ensure!(failed[&other].active.is_none() && failed[&other].failure == Some(failure));

    store
        .remove(&owner, SyncKind::Mail, Some("sub-second"))
        .await?;
    ensure!(store.user_subscriptions(&owner).await?.is_empty());
    ensure!(store.by_id("sub-second").await?.is_none());
    Ok(())
}

/// The addresses and domains of an index, sorted.
fn keys(index: &CrmMatchIndex) -> (Vec<String>, Vec<String>) {
    let mut addresses: Vec<String> = index.address_keys().map(str::to_owned).collect();
    let mut domains: Vec<String> = index.domain_keys().map(str::to_owned).collect();
    addresses.sort();
    domains.sort();
    (addresses, domains)
}

#[tokio::test]
async fn crm_additions_follow_the_import_that_brought_each_entry() -> Result<()> {
    let (stack, tables) = stack().await?;
    // Small pages: the stamps are carried over across Query pages.
    let index = DynamoCrmIndex::new(dynamo(&stack), &tables.crm).with_load_page_items(3);
    let oracle = MemoryCrmIndex::default();
    let tenant_id = tenant();
    let imports = [
        snapshot(&tenant_id, 2, 4, 1, "v1"),
        // Adds an account (acme-2.com), two contacts and a lead.
        snapshot(&tenant_id, 3, 6, 2, "v2"),
        // Removes the lead and account acme-2.com again; the contacts spread over two
        // accounts again (contact2 and contact3 get v1's addresses back).
        snapshot(&tenant_id, 2, 6, 1, "v3"),
        // Brings the lead back.
        snapshot(&tenant_id, 2, 6, 2, "v4"),
    ];
    // Each store's own import instants, and whether each import removed an entry.
    let mut at: Vec<(OffsetDateTime, OffsetDateTime)> = Vec::new();
    for (n, crm) in imports.iter().enumerate() {
        index.replace_snapshot(crm).await?;
        oracle.replace_snapshot(crm).await?;
        let imported = async |store: &dyn CrmIndex| -> Result<CrmIndexSummary> {
            Ok(store.summary(&tenant_id).await?.expect("imported"))
        };
        let (dynamo, memory) = (imported(&index).await?, imported(&oracle).await?);
        at.push((dynamo.imported_at, memory.imported_at));
        // v2 moved contact2 and contact3 to other addresses, v3 dropped acme-2.com and a
        // lead; v4 only added: it keeps v3's.
        let removed_by: Option<usize> = [None, Some(1), Some(2), Some(2)][n];
        assert_eq!(
            (dynamo.removed_at, memory.removed_at),
            removed_by.map_or((None, None), |k| (Some(at[k].0), Some(at[k].1))),
            "import {n}"
        );
    }
    type Keys = (Vec<String>, Vec<String>);
    let added =
        async |(dynamo_after, memory_after): (OffsetDateTime, OffsetDateTime)| -> Result<Keys> {
            let dynamo = index
                .additions_since(&tenant_id, dynamo_after)
                .await?
                .expect("index");
            let memory = oracle
                .additions_since(&tenant_id, memory_after)
                .await?
                .expect("index");
            assert_eq!(
                keys(&dynamo.index),
                keys(&memory.index),
                "the oracle agrees"
            );
            assert_eq!(dynamo.index, memory.index, "with the same records");
            Ok(keys(&dynamo.index))
        };
    let second_before = |(a, b): (OffsetDateTime, OffsetDateTime)| {
        let second = time::Duration::seconds(1);
        (a - second, b - second)
    };

    // Since the last import: nothing. Since v3: the lead brought back.
    assert_eq!(added(at[3]).await?, (vec![], vec![]));
    assert_eq!(
        added(at[2]).await?,
        (vec!["lead1@initech.com".to_owned()], vec![])
    );
    // Since v1: what v2 and v3 changed (contact2 and contact3 left with v2 and came back
    // with v3; contact4 and contact5 have v3's addresses), the lead brought back; not
    // acme-2.com (gone again), not what stayed all along.
    assert_eq!(
        added(at[0]).await?,
        (
            vec![
                "contact2@acme-0.com".to_owned(),
                "contact3@acme-1.com".to_owned(),
                "contact4@acme-0.com".to_owned(),
                "contact5@acme-1.com".to_owned(),
                "lead1@initech.com".to_owned()
            ],
            vec![]
        )
    );
    // Since before the first import: everything.
    let (addresses, domains) = added(second_before(at[0])).await?;
    assert_eq!((addresses.len(), domains.len()), (8, 2));
    // An unchanged import keeps every stamp.
    index.replace_snapshot(&imports[3]).await?;
    oracle.replace_snapshot(&imports[3]).await?;
    assert_eq!(added(at[3]).await?, (vec![], vec![]));
    Ok(())
}
