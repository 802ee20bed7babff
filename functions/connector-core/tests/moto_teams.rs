//! The Teams adapters against moto, on IdempotencyTable, the SyncStateTable and the Teams
//! queues created from template.yaml, each checked against its in-memory twin on the same
//! script: the Powertools claim states, exclusivity among concurrent claimers, progress
//! kept across a takeover by the same payload and dropped for an expired record or
//! another payload, share targets replaced
//! whole, and dead letters listed with their reasons and left on the queue.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use connector_core::adapters::teams_dynamodb::{DynamoIdempotencyStore, DynamoShareTargetStore};
use connector_core::adapters::teams_memory::{MemoryIdempotencyStore, MemoryShareTargetStore};
use connector_core::adapters::teams_sqs::SqsTeamsQueues;
use connector_core::config::vars;
use connector_core::domain::{TenantId, UserId, UserKey};
use connector_core::teams::failures::{TEAMS_POST_DLQ_URL, attributes};
use connector_core::teams::{
    ChannelTarget, Claim, ClaimRequest, FailureReport, IdempotencyStatus, IdempotencyStore,
    PostProgress, PostResult, RecordState, ShareTargetStore, ShareTargets, TeamTarget, TeamsQueues,
};
use time::OffsetDateTime;

fn seconds(n: i64) -> time::Duration {
    time::Duration::seconds(n)
}

/// Whole milliseconds, as the stores keep in-progress deadlines.
fn now() -> OffsetDateTime {
    let at = OffsetDateTime::now_utc();
    OffsetDateTime::from_unix_timestamp_nanos(at.unix_timestamp_nanos() / 1_000_000 * 1_000_000)
        .expect("time")
}

fn claim<'a>(id: &'a str, hash: &'a str, now: OffsetDateTime) -> ClaimRequest<'a> {
    ClaimRequest {
        id,
        payload_hash: hash,
        now,
        in_progress_until: now + seconds(60),
        expires_at: now + seconds(3600),
    }
}

fn result(message_id: &str) -> PostResult {
    PostResult {
        message_id: message_id.into(),
        web_url: Some(format!(
            "https://teams.microsoft.com/l/message/{message_id}"
        )),
        chat_id: Some("19:chat@thread.v2".into()),
        posted_at: OffsetDateTime::from_unix_timestamp(1_795_000_000).expect("time"),
    }
}

/// The same script for both stores.
async fn powertools_states(store: &dyn IdempotencyStore) -> Result<()> {
    let id = format!("teams-post#{}#k1", uuid::Uuid::new_v4());
    let t0 = now();

    // Free → acquired, with no progress.
    let first = store.claim(&claim(&id, "h1", t0)).await.context("first")?;
    ensure!(
        first
            == Claim::Acquired {
                progress: PostProgress::default(),
                interrupted: false
            },
        "{first:?}"
    );
    // Held by a live invocation: same payload waits, another payload is refused.
    let held = store
        .claim(&claim(&id, "h1", t0 + seconds(1)))
        .await
        .context("held")?;
    ensure!(
        held == Claim::InProgress {
            until: t0 + seconds(60)
        },
        "{held:?}"
    );
    let other = store
        .claim(&claim(&id, "h2", t0 + seconds(1)))
        .await
        .context("step 1")?;
    ensure!(
        other
            == Claim::PayloadMismatch {
                status: IdempotencyStatus::InProgress
            },
        "{other:?}"
    );

    // Progress survives the holder's crash (deadline passed) and is handed to the next.
    let progress = PostProgress {
        chat_id: Some("19:abc@thread.v2".into()),
        sent_at: None,
    };
    store
        .save_progress(&id, "h1", &progress)
        .await
        .context("step 2")?;
    let later = t0 + seconds(61);
    let takeover = store
        .claim(&claim(&id, "h1", later))
        .await
        .context("step 4")?;
    ensure!(
        takeover
            == Claim::Acquired {
                progress: progress.clone(),
                interrupted: true
            },
        "{takeover:?}"
    );

    // Released after a failure: the next attempt takes it at once, progress included.
    store.release(&id, "h1").await.context("step 5")?;
    let retry = store
        .claim(&claim(&id, "h1", later + seconds(1)))
        .await
        .context("step 6")?;
    ensure!(
        retry
            == Claim::Acquired {
                progress: progress.clone(),
                interrupted: false
            },
        "{retry:?}"
    );

    // Completed: acknowledged with the stored result; another payload refused.
    store
        .complete(&id, "h1", &result("1616990032035"), later + seconds(3600))
        .await
        .context("step 7")?;
    let done = store
        .claim(&claim(&id, "h1", later + seconds(2)))
        .await
        .context("step 8")?;
    ensure!(
        done == Claim::Completed(result("1616990032035")),
        "{done:?}"
    );
    let reused = store
        .claim(&claim(&id, "h2", later + seconds(2)))
        .await
        .context("step 9")?;
    ensure!(
        reused
            == Claim::PayloadMismatch {
                status: IdempotencyStatus::Completed
            },
        "{reused:?}"
    );
    let record = store.get_record(&id).await?.context("record")?;
    ensure!(record.status() == IdempotencyStatus::Completed);
    // Releasing a completed record changes nothing.
    store.release(&id, "h1").await.context("step 10")?;
    ensure!(store.get_record(&id).await?.context("record")?.state == record.state);

    // Not expired until a whole second after `expiresAt` (DynamoDB compares epoch seconds).
    let edge = store
        .claim(&claim(&id, "h2", later + seconds(3600)))
        .await?;
    ensure!(matches!(edge, Claim::PayloadMismatch { .. }), "{edge:?}");
    // Expired (TTL not swept yet): free again for any payload, old progress forgotten.
    let expired_at = later + seconds(3602);
    let fresh = store
        .claim(&claim(&id, "h2", expired_at))
        .await
        .context("step 11")?;
    ensure!(
        fresh
            == Claim::Acquired {
                progress: PostProgress::default(),
                interrupted: false
            },
        "{fresh:?}"
    );
    let record = store.get_record(&id).await?.context("record")?;
    ensure!(
        matches!(&record.state, RecordState::InProgress { progress, .. } if progress.is_empty()),
        "{record:?}"
    );
    ensure!(record.payload_hash == "h2");

    // An abandoned key is taken over by another payload too (Powertools' condition), but
    // the chat created for the first payload is not handed to it.
    let id = format!("teams-post#{}#k2", uuid::Uuid::new_v4());
    store.claim(&claim(&id, "h1", t0)).await?;
    store.save_progress(&id, "h1", &progress).await?;
    let other = store.claim(&claim(&id, "h2", t0 + seconds(61))).await?;
    ensure!(
        other
            == Claim::Acquired {
                progress: PostProgress::default(),
                interrupted: true
            },
        "{other:?}"
    );
    let record = store.get_record(&id).await?.context("record")?;
    ensure!(
        matches!(&record.state, RecordState::InProgress { progress, .. } if progress.is_empty()),
        "{record:?}"
    );
    ensure!(record.payload_hash == "h2");
    // The first payload, back while the new holder is live, is refused.
    let back = store.claim(&claim(&id, "h1", t0 + seconds(62))).await?;
    ensure!(
        back == Claim::PayloadMismatch {
            status: IdempotencyStatus::InProgress
        },
        "{back:?}"
    );
    Ok(())
}

#[tokio::test]
async fn idempotency_records_follow_the_powertools_states() -> Result<()> {
    let stack = local_stack::test_stack().await?;
    let dynamo = DynamoIdempotencyStore::new(
        aws_sdk_dynamodb::Client::new(&stack.sdk),
        stack.var(vars::IDEMPOTENCY_TABLE),
    );
    powertools_states(&dynamo).await.context("DynamoDB")?;
    powertools_states(&MemoryIdempotencyStore::default())
        .await
        .context("memory")?;

    // The DynamoDB item: TTL in seconds, in-progress deadline in milliseconds.
    let id = format!("teams-post#{}#ttl", uuid::Uuid::new_v4());
    let t0 = now();
    dynamo.claim(&claim(&id, "h", t0)).await?;
    let item = aws_sdk_dynamodb::Client::new(&stack.sdk)
        .get_item()
        .table_name(stack.var(vars::IDEMPOTENCY_TABLE))
        .key("id", aws_sdk_dynamodb::types::AttributeValue::S(id.clone()))
        .send()
        .await?
        .item
        .context("item")?;
    let number = |name: &str| -> Result<i128> {
        Ok(item
            .get(name)
            .context(name.to_owned())?
            .as_n()
            .map_err(|_| anyhow::anyhow!("N"))?
            .parse()?)
    };
    ensure!(
        number("expiresAt")? == {
            let ttl = t0 + seconds(3600);
            i128::from(ttl.unix_timestamp() + i64::from(ttl.nanosecond() > 0))
        }
    );
    ensure!(
        number("inProgressExpiration")? == (t0 + seconds(60)).unix_timestamp_nanos() / 1_000_000
    );
    ensure!(item["status"].as_s().ok().map(String::as_str) == Some("INPROGRESS"));
    Ok(())
}

async fn exclusive(store: Arc<dyn IdempotencyStore>) -> Result<()> {
    for round in 0..3 {
        let id = format!("teams-post#{}#race{round}", uuid::Uuid::new_v4());
        let start = Arc::new(tokio::sync::Barrier::new(16));
        let at = now();
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (store, id, start) = (store.clone(), id.clone(), start.clone());
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                store.claim(&claim(&id, "h", at)).await
            }));
        }
        let mut acquired = 0;
        for task in tasks {
            match task.await?? {
                Claim::Acquired { .. } => acquired += 1,
                Claim::InProgress { .. } => {}
                other => anyhow::bail!("unexpected {other:?}"),
            }
        }
        ensure!(
            acquired == 1,
            "round {round}: {acquired} claimers acquired the key"
        );
    }
    Ok(())
}

/// Exclusivity among concurrent claimers rests on DynamoDB evaluating a conditional write
/// and applying it atomically. moto does not: its `update_item` reads the item, checks the
/// condition and writes without a lock (moto/dynamodb/models/__init__.py), so two of 16
/// racing claimers sometimes both pass there. Against moto the claims are therefore made
/// one after the other (each must see the previous one's write); the in-memory twin is
/// raced for real.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_claimers_exactly_one_acquires() -> Result<()> {
    let stack = local_stack::test_stack().await?;
    let dynamo = DynamoIdempotencyStore::new(
        aws_sdk_dynamodb::Client::new(&stack.sdk),
        stack.var(vars::IDEMPOTENCY_TABLE),
    );
    let id = format!("teams-post#{}#serial", uuid::Uuid::new_v4());
    let at = now();
    let mut acquired = 0;
    for _ in 0..16 {
        if let Claim::Acquired { .. } = dynamo.claim(&claim(&id, "h", at)).await? {
            acquired += 1;
        }
    }
    ensure!(
        acquired == 1,
        "{acquired} sequential claims acquired the key"
    );
    exclusive(Arc::new(MemoryIdempotencyStore::default()))
        .await
        .context("memory")
}

fn targets(user: &UserKey, teams: &[(&str, &str, usize)]) -> ShareTargets {
    ShareTargets {
        tenant_id: user.tenant_id.clone(),
        user_id: user.user_id.clone(),
        refreshed_at: OffsetDateTime::from_unix_timestamp(1_795_000_000).expect("time"),
        teams: teams
            .iter()
            .map(|(id, name, channels)| TeamTarget {
                id: (*id).into(),
                display_name: (*name).into(),
                description: None,
                channels: (0..*channels)
                    .map(|n| ChannelTarget {
                        id: format!("19:{id}-{n}@thread.tacv2"),
                        display_name: format!("Channel {n:03}"),
                        membership_type: Some("standard".into()),
                    })
                    .collect(),
            })
            .collect(),
    }
}

async fn share_targets(store: &dyn ShareTargetStore) -> Result<()> {
    let user = UserKey::new(
        TenantId::parse(&uuid::Uuid::new_v4().to_string())?,
        UserId::parse(&uuid::Uuid::new_v4().to_string())?,
    );
    ensure!(store.get_targets(&user).await?.is_none());
    // 40 teams (more than one BatchWriteItem), one with 300 channels.
    let mut many: Vec<(String, String, usize)> = (0..40)
        .map(|n| (format!("team-{n:02}"), format!("Team {n:02}"), 2))
        .collect();
    many[7].2 = 300;
    let many: Vec<(&str, &str, usize)> = many
        .iter()
        .map(|(id, name, c)| (id.as_str(), name.as_str(), *c))
        .collect();
    store.replace_targets(&targets(&user, &many)).await?;
    let stored = store.get_targets(&user).await?.context("stored")?;
    ensure!(stored.teams.len() == 40 && stored.channel_count() == 39 * 2 + 300);
    let mut expected = targets(&user, &many);
    expected.normalise();
    ensure!(stored == expected, "round trip");

    // A refresh without most teams removes them; another user is untouched.
    let other = UserKey::new(
        user.tenant_id.clone(),
        UserId::parse(&uuid::Uuid::new_v4().to_string())?,
    );
    store
        .replace_targets(&targets(&other, &[("x", "X", 1)]))
        .await?;
    store
        .replace_targets(&targets(
            &user,
            &[("team-03", "Team 03", 1), ("new", "A new team", 0)],
        ))
        .await?;
    let stored = store.get_targets(&user).await?.context("stored")?;
    let names: Vec<&str> = stored
        .teams
        .iter()
        .map(|t| t.display_name.as_str())
        .collect();
    ensure!(names == ["A new team", "Team 03"], "{names:?}");
    ensure!(store.get_targets(&other).await?.is_some());

    store.delete_targets(&user).await?;
    ensure!(store.get_targets(&user).await?.is_none());
    ensure!(store.get_targets(&other).await?.is_some());
    Ok(())
}

#[tokio::test]
async fn share_targets_are_replaced_whole() -> Result<()> {
    let stack = local_stack::test_stack().await?;
    share_targets(&DynamoShareTargetStore::new(
        aws_sdk_dynamodb::Client::new(&stack.sdk),
        stack.var(vars::SYNC_STATE_TABLE),
    ))
    .await
    .context("DynamoDB")?;
    share_targets(&MemoryShareTargetStore::default())
        .await
        .context("memory")
}

#[tokio::test]
async fn dead_letters_carry_their_reason_and_requeued_copies_their_retries() -> Result<()> {
    let stack = local_stack::test_stack().await?;
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let queue = stack.var(vars::TEAMS_POST_QUEUE_URL).to_owned();
    let dlq = stack.var(TEAMS_POST_DLQ_URL).to_owned();
    let queues = SqsTeamsQueues::new(sqs.clone(), &queue, &dlq);

    for n in 0..13 {
        let report = FailureReport {
            code: "not_a_member".into(),
            reason: "The user is not a member.".into(),
            detail: format!("Graph 403 Forbidden #{n}"),
            source_message_id: format!("src-{n}"),
            failed_at: OffsetDateTime::from_unix_timestamp(1_795_000_000 + n).expect("time"),
            tenant_id: Some("t".into()),
            user_id: Some("u".into()),
            idempotency_key: None,
            deliveries: 2,
        };
        queues
            .dead_letter(&format!("{{\"n\":{n}}}"), &report)
            .await?;
    }
    let listed = queues.dead_letters(100).await?;
    ensure!(listed.len() == 13, "{}", listed.len());
    let report = listed
        .iter()
        .find(|letter| letter.body == "{\"n\":4}")
        .and_then(|letter| letter.report.clone())
        .context("report")?;
    ensure!(report.detail == "Graph 403 Forbidden #4" && report.source_message_id == "src-4");
    ensure!(report.idempotency_key.is_none() && report.deliveries == 2);
    // Listing left them there.
    ensure!(queues.dead_letters(100).await?.len() == 13);
    ensure!(queues.dead_letters(5).await?.len() == 5);

    // A fresh copy carries the retries used so far and waits out its delay.
    queues
        .requeue("{\"again\":true}", 7, Duration::from_secs(2))
        .await?;
    let early = sqs.receive_message().queue_url(&queue).send().await?;
    ensure!(
        early.messages.unwrap_or_default().is_empty(),
        "delivered before its delay"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let late = sqs
        .receive_message()
        .queue_url(&queue)
        .message_attribute_names("All")
        .wait_time_seconds(2)
        .send()
        .await?;
    let message = late
        .messages
        .unwrap_or_default()
        .pop()
        .context("the copy")?;
    ensure!(message.body.as_deref() == Some("{\"again\":true}"));
    let retries = message
        .message_attributes
        .unwrap_or_default()
        .get(attributes::RETRIES)
        .and_then(|value| value.string_value.clone());
    ensure!(retries.as_deref() == Some("7"), "{retries:?}");

    // Hidden for a while: not received until then.
    queues
        .change_visibility(
            message.receipt_handle.as_deref().context("receipt")?,
            Duration::from_secs(2),
        )
        .await?;
    let hidden = sqs.receive_message().queue_url(&queue).send().await?;
    ensure!(
        hidden.messages.unwrap_or_default().is_empty(),
        "visible while hidden"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let back = sqs
        .receive_message()
        .queue_url(&queue)
        .wait_time_seconds(2)
        .send()
        .await?;
    ensure!(
        back.messages.unwrap_or_default().len() == 1,
        "not back after the delay"
    );
    Ok(())
}
