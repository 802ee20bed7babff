//! The body store on moto's S3 (the bucket created from template.yaml), and the activities
//! adapter with it: bodies written before items and read back whole, items bounded, an
//! unchanged re-write not counted, a refused item isolated, deletes taking bodies along.

use std::sync::Arc;

use anyhow::{Context, Result};
use connector_core::adapters::dynamodb::DynamoActivityStore;
use connector_core::adapters::memory::MemoryBodyStore;
use connector_core::adapters::s3::{S3BodyStore, s3_client};
use connector_core::config::{Tables, vars};
use connector_core::domain::*;
use connector_core::ports::*;
use time::OffsetDateTime;

fn owner(tenant: &TenantId) -> UserKey {
    UserKey::new(
        tenant.clone(),
        UserId::parse(&uuid::Uuid::new_v4().to_string()).expect("guid"),
    )
}

fn mail(owner: &UserKey, id: &str, body: String, recipients: usize) -> Activity {
    let mut participants = vec![Participant {
        role: ParticipantRole::From,
        address: "jane@acme.com".into(),
        name: Some("Jane".into()),
    }];
    participants.extend((0..recipients).map(|i| Participant {
        role: ParticipantRole::To,
        address: format!("person{i:05}@vendor.example"),
        name: Some(format!("Person {i} with a rather long display name")),
    }));
    Activity::new(
        owner.clone(),
        ActivityContent::Mail(MailActivity {
            immutable_id: id.to_owned(),
            internet_message_id: Some(format!("<{id}@acme.com>")),
            conversation_id: None,
            folder_id: "inbox".into(),
            subject: "Proposal".into(),
            participants,
            sent_at: None,
            received_at: None,
            body_preview: body.chars().take(255).collect(),
            body_text: body,
            has_attachments: false,
            web_link: None,
            detail: None,
        }),
        vec![CrmMatch {
            participant: "jane@acme.com".into(),
            reason: MatchReason::Address,
            record_kind: Some(CrmRecordKind::Contact),
            record_id: Some("003J".into()),
            matched_on: "jane@acme.com".into(),
        }],
        OffsetDateTime::now_utc(),
    )
}

fn body(activity: &Activity) -> &str {
    match &activity.content {
        ActivityContent::Mail(mail) => &mail.body_text,
        ActivityContent::Meeting(_) => "",
    }
}

async fn stack() -> Result<(local_stack::TestStack, Tables, Arc<S3BodyStore>)> {
    let stack = local_stack::test_stack().await?;
    let tables = Tables::from_lookup(|name| stack.env.get(name).cloned())?;
    let bucket = stack.var(vars::MESSAGE_BODIES_BUCKET).to_owned();
    let bodies = Arc::new(S3BodyStore::new(
        s3_client(aws_sdk_s3::config::Builder::from(&stack.sdk), true),
        bucket,
    ));
    Ok((stack, tables, bodies))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bucket_is_private_encrypted_and_tls_only() -> Result<()> {
    let (stack, _, bodies) = stack().await?;
    let s3 = s3_client(aws_sdk_s3::config::Builder::from(&stack.sdk), true);
    let bucket = bodies.bucket();
    let block = s3.get_public_access_block().bucket(bucket).send().await?;
    let block = block
        .public_access_block_configuration()
        .context("a public access block")?;
    assert_eq!(
        (
            block.block_public_acls(),
            block.block_public_policy(),
            block.ignore_public_acls(),
            block.restrict_public_buckets()
        ),
        (Some(true), Some(true), Some(true), Some(true))
    );
    let encryption = s3.get_bucket_encryption().bucket(bucket).send().await?;
    let rules = encryption
        .server_side_encryption_configuration()
        .map(|c| c.rules().to_vec())
        .unwrap_or_default();
    assert!(!rules.is_empty(), "default encryption");
    // TLS only: the template's statement, put on a scratch bucket of the emulator (served
    // over plain HTTP, so the local stack leaves that statement out), refuses a request.
    let template = local_stack::template::Template::load(&local_stack::template_path())?;
    let (_, policy) = template
        .resources
        .iter()
        .find(|(id, _)| id == "MessageBodiesBucketPolicy")
        .context("the bucket policy")?;
    let deny = policy
        .pointer("/Properties/PolicyDocument/Statement")
        .and_then(serde_json::Value::as_array)
        .and_then(|statements| {
            statements
                .iter()
                .find(|s| local_stack::provision::denies_plain_http(s))
        })
        .cloned()
        .context("a statement denying plain HTTP")?;
    assert_eq!(deny["Action"], "s3:*");
    let scratch = format!("tls-{}", uuid::Uuid::new_v4().simple());
    s3.create_bucket().bucket(&scratch).send().await?;
    s3.put_object()
        .bucket(&scratch)
        .key("k")
        .body(b"x".to_vec().into())
        .send()
        .await?;
    let mut statement = deny.clone();
    statement["Resource"] = serde_json::json!([
        format!("arn:aws:s3:::{scratch}"),
        format!("arn:aws:s3:::{scratch}/*")
    ]);
    s3.put_bucket_policy()
        .bucket(&scratch)
        .policy(serde_json::json!({"Version": "2012-10-17", "Statement": [statement]}).to_string())
        .send()
        .await?;
    let refused = s3
        .put_object()
        .bucket(&scratch)
        .key("k2")
        .body(b"x".to_vec().into())
        .send()
        .await;
    assert_eq!(
        refused
            .err()
            .and_then(|e| e.raw_response().map(|r| r.status().as_u16())),
        Some(403),
        "plain HTTP is refused under the statement"
    );
    Ok(())
}

/// The same checks on the S3 adapter and its in-memory twin.
async fn check_body_store(store: &dyn BodyStore, tenant: &TenantId) -> Result<()> {
    let (a, b) = (owner(tenant), owner(tenant));
    let other_tenant = owner(&TenantId::parse(&uuid::Uuid::new_v4().to_string())?);
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let id = ActivityId::mail("AAk/x+y=");
    store
        .put_body(&body_key(&a, &id, "v1"), bytes.clone())
        .await?;
    assert_eq!(store.get_body(&body_key(&a, &id, "v1")).await?, Some(bytes));
    for n in 0..5 {
        let id = ActivityId::mail(&format!("m{n}"));
        store.put_body(&body_key(&a, &id, "v1"), vec![n]).await?;
        store.put_body(&body_key(&b, &id, "v1"), vec![n]).await?;
        store
            .put_body(&body_key(&other_tenant, &id, "v1"), vec![n])
            .await?;
    }
    assert_eq!(store.count_prefix(&user_body_prefix(&a)).await?, 6);
    store
        .delete_bodies(&[
            body_key(&a, &id, "v1"),
            body_key(&a, &ActivityId::mail("absent"), "v1"),
        ])
        .await?;
    assert_eq!(store.get_body(&body_key(&a, &id, "v1")).await?, None);
    assert_eq!(store.delete_prefix(&user_body_prefix(&a)).await?, 5);
    assert_eq!(store.count_prefix(&user_body_prefix(&b)).await?, 5);
    assert_eq!(store.delete_prefix(&tenant_body_prefix(tenant)).await?, 5);
    assert_eq!(store.count_prefix(&tenant_body_prefix(tenant)).await?, 0);
    assert_eq!(
        store.count_prefix(&user_body_prefix(&other_tenant)).await?,
        5,
        "another tenant untouched"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_stores_put_get_and_delete_by_key_and_prefix() -> Result<()> {
    let (_stack, _, bodies) = stack().await?;
    let tenant = TenantId::parse(&uuid::Uuid::new_v4().to_string())?;
    check_body_store(bodies.as_ref(), &tenant).await?;
    check_body_store(&MemoryBodyStore::default(), &tenant).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_mail_is_stored_whole_counted_once_and_deleted_with_its_item() -> Result<()> {
    let (stack, tables, bodies) = stack().await?;
    let store = DynamoActivityStore::new(
        aws_sdk_dynamodb::Client::new(&stack.sdk),
        &tables.activities,
    )
    .with_bodies(bodies.clone());
    let tenant = TenantId::parse(&uuid::Uuid::new_v4().to_string())?;
    let user = owner(&tenant);
    let big_body: String = (0..200_000).map(|i| format!("line {i} ü€\r\n")).collect();
    assert!(big_body.len() > 2_000_000);
    let activities = vec![
        mail(&user, "big", big_body.clone(), 0),
        mail(&user, "many", "short".into(), 1_500),
        mail(&user, "small", "hello".into(), 2),
    ];
    let report = store.store_activities(&activities, false).await?;
    assert_eq!((report.written, report.unchanged), (3, 0));
    assert!(report.refused.is_empty());

    let whole = store
        .get_activity(&user, &ActivityId::mail("big"))
        .await?
        .context("stored")?;
    assert_eq!(body(&whole).as_bytes(), big_body.as_bytes());
    let many = store
        .get_activity(&user, &ActivityId::mail("many"))
        .await?
        .context("stored")?;
    assert_eq!(many, {
        let mut want = activities[1].clone();
        if let ActivityContent::Mail(m) = &mut want.content {
            m.detail = match &many.content {
                ActivityContent::Mail(got) => got.detail.clone(),
                ActivityContent::Meeting(_) => None,
            };
        }
        want
    });
    let listed = store.list_activities(&user, 10, None).await?.items;
    for item in &listed {
        let ActivityContent::Mail(m) = &item.content else {
            continue;
        };
        assert!(m.body_text.is_empty() && m.detail.is_some());
        assert!(m.participants.len() <= ITEM_PARTICIPANTS);
    }

    // The same again: nothing new, nothing written; a change is written and counted.
    let report = store.store_activities(&activities, false).await?;
    assert_eq!((report.written, report.unchanged), (0, 3));
    let mut changed = activities.clone();
    changed[2] = mail(&user, "small", "hello again".into(), 2);
    changed.push(changed[2].clone());
    let report = store.store_activities(&changed, false).await?;
    assert_eq!(
        (report.written, report.unchanged),
        (1, 2),
        "the same id twice counts once"
    );
    assert_eq!(
        bodies.count_prefix(&user_body_prefix(&user)).await?,
        3,
        "the superseded version's object is gone"
    );

    // Deletes take bodies along.
    assert!(
        store
            .delete_activity(&user, &ActivityId::mail("big"))
            .await?
    );
    assert_eq!(bodies.count_prefix(&user_body_prefix(&user)).await?, 2);
    assert!(
        store
            .delete_mail_in_folder(&user, &ActivityId::mail("small"), "inbox")
            .await?
    );
    assert_eq!(bodies.count_prefix(&user_body_prefix(&user)).await?, 1);
    // An orphan (a body whose item was never written) goes with the user's activities.
    bodies
        .put_body(
            &body_key(&user, &ActivityId::mail("orphan"), "v0"),
            b"{}".to_vec(),
        )
        .await?;
    assert_eq!(store.delete_all_activities(&user).await?, 1);
    assert_eq!(bodies.count_prefix(&user_body_prefix(&user)).await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_the_table_refuses_is_isolated_and_the_rest_is_stored() -> Result<()> {
    let (stack, tables, bodies) = stack().await?;
    let store = DynamoActivityStore::new(
        aws_sdk_dynamodb::Client::new(&stack.sdk),
        &tables.activities,
    )
    .with_bodies(bodies.clone());
    let user = owner(&TenantId::parse(&uuid::Uuid::new_v4().to_string())?);
    let mut activities: Vec<Activity> = (0..30)
        .map(|n| mail(&user, &format!("ok{n:02}"), format!("body {n}"), 1))
        .collect();
    // An item DynamoDB refuses for itself: a 450 KB internetMessageId pushes it past the
    // 400 KB item limit (moto enforces it as DynamoDB does, with a ValidationException
    // that fails the whole BatchWriteItem).
    let mut poison = mail(&user, "poison", "body".into(), 1);
    if let ActivityContent::Mail(m) = &mut poison.content {
        m.internet_message_id = Some("x".repeat(450_000));
    }
    let poison_key = body_key(&user, &ActivityId::mail("poison"), &poison.fingerprint());
    activities.insert(7, poison);
    let report = store.store_activities(&activities, false).await?;
    assert_eq!(report.written, 30);
    assert_eq!(report.refused.len(), 1);
    assert_eq!(report.refused[0].id, ActivityId::mail("poison"));
    assert!(
        report.refused[0].reason.starts_with("ValidationException"),
        "{}",
        report.refused[0].reason
    );
    assert!(!report.refused[0].reason.contains("xxxx"));
    assert_eq!(
        store.list_activities(&user, 100, None).await?.items.len(),
        30
    );
    assert_eq!(
        bodies.get_body(&poison_key).await?,
        None,
        "the refused item's body is not left behind"
    );
    assert_eq!(bodies.count_prefix(&user_body_prefix(&user)).await?, 30);
    Ok(())
}
