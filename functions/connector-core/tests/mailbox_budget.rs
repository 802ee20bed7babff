//! The cross-process mailbox slot budget on both ledgers: the in-memory twin and the
//! DynamoDB adapter against moto (tables from template.yaml by `local-stack`). Each
//! "process" is its own `MailboxBudget` on the shared ledger.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Result, ensure};
use connector_core::adapters::memory::MemorySlotLedger;
use connector_core::adapters::slots_dynamodb::DynamoSlotLedger;
use connector_core::budget::{BudgetOptions, MAILBOX_SLOTS, MailboxBudget, SlotPool, SlotWait};
use connector_core::config::Tables;
use connector_core::ports::SlotLedger;
use tokio::time::Instant;

fn options() -> BudgetOptions {
    BudgetOptions {
        ttl: Duration::from_secs(3),
        guard: Duration::from_secs(1),
        tick: Duration::from_millis(50),
        max_wait: Duration::from_secs(10),
        wants: MAILBOX_SLOTS,
    }
}

fn mailbox() -> String {
    format!("{}#{}", uuid::Uuid::new_v4(), uuid::Uuid::new_v4())
}

/// Waits until `check` holds (polling), at most `within`.
async fn eventually(within: Duration, what: &str, check: impl Fn() -> bool) -> Result<Duration> {
    let started = Instant::now();
    while !check() {
        ensure!(started.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(started.elapsed())
}

async fn shares(ledger: &dyn SlotLedger, mailbox: &str) -> Result<Vec<(u32, u32)>> {
    let read = ledger.read_slots(mailbox).await?;
    let mut out: Vec<(u32, u32)> = read
        .shares
        .holders
        .values()
        .map(|holder| (holder.share, holder.wants))
        .collect();
    out.sort();
    Ok(out)
}

async fn take(pool: &Arc<SlotPool>, n: u32) -> Result<Vec<connector_core::budget::SlotGuard>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            pool.acquire(1, Instant::now() + Duration::from_secs(5))
                .await
                .map_err(|wait| anyhow::anyhow!("no slot: {wait:?}"))?,
        );
    }
    Ok(out)
}

/// Claim, renewal, shrink-then-grant, release and grow-back, on one ledger.
async fn claim_renew_shrink_grant_release(ledger: Arc<dyn SlotLedger>) -> Result<()> {
    let mailbox = mailbox();
    let mail = MailboxBudget::new(ledger.clone(), options());
    let calendar = MailboxBudget::new(ledger.clone(), options());

    // Alone, a holder gets all 4.
    let a = mail.join(&mailbox);
    eventually(Duration::from_secs(5), "A claims 4", || {
        a.pool().capacity() == 4
    })
    .await?;
    assert_eq!(shares(ledger.as_ref(), &mailbox).await?, vec![(4, 4)]);
    let mut a_flight = take(a.pool(), 4).await?;

    // Renewal: the record's expiry moves on while A works.
    let first = ledger.read_slots(&mailbox).await?.shares.holders[a.id()].until_ms;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let later = ledger.read_slots(&mailbox).await?.shares.holders[a.id()].until_ms;
    assert!(later > first, "renewed: {first} -> {later}");

    // B arrives while A has 4 in flight: B waits (share 0), A lowers its capacity to 2
    // but keeps its share of 4 until its requests in flight fit 2.
    let b = calendar.join(&mailbox);
    eventually(Duration::from_secs(5), "A lowers its capacity", || {
        a.pool().capacity() == 2
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        b.pool().capacity(),
        0,
        "nothing granted while A has 4 in flight"
    );
    assert_eq!(
        shares(ledger.as_ref(), &mailbox).await?,
        vec![(0, 4), (4, 4)]
    );
    // A cannot start a fifth, nor even a third, request.
    let blocked = a
        .pool()
        .acquire(1, Instant::now() + Duration::from_millis(200))
        .await;
    assert_eq!(blocked.err(), Some(SlotWait::TimedOut));

    // Two of A's requests end: A writes 2, then B claims 2.
    a_flight.truncate(2);
    eventually(Duration::from_secs(5), "B gets 2", || {
        b.pool().capacity() == 2
    })
    .await?;
    assert_eq!(
        shares(ledger.as_ref(), &mailbox).await?,
        vec![(2, 4), (2, 4)]
    );
    let b_flight = take(b.pool(), 2).await?;
    // A parallel batch of 4 does not fit a share of 2.
    let wide = b
        .pool()
        .acquire(4, Instant::now() + Duration::from_secs(1))
        .await;
    assert_eq!(wide.err(), Some(SlotWait::TooMany));
    drop(a_flight);

    // A leaves: B grows back to 4.
    a.release().await;
    eventually(Duration::from_secs(5), "B grows to 4", || {
        b.pool().capacity() == 4
    })
    .await?;
    assert_eq!(shares(ledger.as_ref(), &mailbox).await?, vec![(4, 4)]);
    drop(b_flight);
    b.release().await;
    assert_eq!(
        ledger.read_slots(&mailbox).await?.version,
        0,
        "ledger removed"
    );
    Ok(())
}

/// A holder that dies without leaving frees its share when its record expires.
async fn dead_holder_expires(ledger: Arc<dyn SlotLedger>) -> Result<()> {
    let mailbox = mailbox();
    let crashed = MailboxBudget::new(ledger.clone(), options());
    let survivor = MailboxBudget::new(ledger.clone(), options());
    let a = crashed.join(&mailbox);
    eventually(Duration::from_secs(5), "A claims 4", || {
        a.pool().capacity() == 4
    })
    .await?;
    let _in_flight = take(a.pool(), 4).await?;
    // The process dies: no renewal, no release.
    let died = Instant::now();
    drop(a);
    let b = survivor.join(&mailbox);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(b.pool().capacity(), 0, "A's record still holds");
    eventually(Duration::from_secs(6), "B gets 4 after A's expiry", || {
        b.pool().capacity() == 4
    })
    .await?;
    let waited = died.elapsed();
    assert!(
        waited <= options().ttl + Duration::from_secs(2),
        "freed within the ttl: {waited:?}"
    );
    b.release().await;
    Ok(())
}

/// Three processes hammer one mailbox, joining and leaving: never more than 4 slots in
/// use at once across them, and each gets work done.
async fn never_over_four(ledger: Arc<dyn SlotLedger>) -> Result<String> {
    let mailbox = mailbox();
    let in_flight = Arc::new(AtomicU32::new(0));
    let most = Arc::new(AtomicU32::new(0));
    let mut workers = Vec::new();
    for process in 0..3u64 {
        let budget = MailboxBudget::new(ledger.clone(), options());
        let (mailbox, in_flight, most) = (mailbox.clone(), in_flight.clone(), most.clone());
        workers.push(tokio::spawn(async move {
            let done = Arc::new(AtomicU64::new(0));
            // Two runs one after the other per process (join, work, leave).
            for run in 0..2u64 {
                tokio::time::sleep(Duration::from_millis(150 * process + 100 * run)).await;
                let holder = budget.join(&mailbox);
                let until = Instant::now() + Duration::from_millis(1_200);
                let mut tasks = Vec::new();
                for _ in 0..6 {
                    let (pool, in_flight, most, done) = (
                        holder.pool().clone(),
                        in_flight.clone(),
                        most.clone(),
                        done.clone(),
                    );
                    tasks.push(tokio::spawn(async move {
                        while Instant::now() < until {
                            let Ok(_slot) = pool.acquire(1, until).await else {
                                break;
                            };
                            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(3)).await;
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }));
                }
                for task in tasks {
                    task.await.expect("worker task");
                }
                holder.release().await;
            }
            done.load(Ordering::Relaxed)
        }));
    }
    for (process, worker) in workers.into_iter().enumerate() {
        let done = worker.await?;
        assert!(done > 0, "process {process} got slots");
    }
    let most = most.load(Ordering::SeqCst);
    assert!(most <= MAILBOX_SLOTS, "{most} slots in use at once");
    assert_eq!(most, MAILBOX_SLOTS, "the 4 were used");
    Ok(mailbox)
}

// ---------------------------------------------------------------------------------------
// In memory

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_claim_renew_shrink_grant_release() -> Result<()> {
    claim_renew_shrink_grant_release(Arc::new(MemorySlotLedger::default())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_dead_holder_expires() -> Result<()> {
    dead_holder_expires(Arc::new(MemorySlotLedger::default())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_never_over_four() -> Result<()> {
    let ledger = Arc::new(MemorySlotLedger::default());
    let mailbox = never_over_four(ledger.clone()).await?;
    let most = ledger.most_held(&mailbox);
    assert_eq!(most, MAILBOX_SLOTS, "the ledger never recorded more than 4");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// DynamoDB (moto)

async fn dynamo_ledger() -> Result<(local_stack::TestStack, Arc<dyn SlotLedger>)> {
    let stack = local_stack::test_stack().await?;
    let tables = Tables::from_lookup(|name| stack.env.get(name).cloned())?;
    let ledger = Arc::new(DynamoSlotLedger::new(
        aws_sdk_dynamodb::Client::new(&stack.sdk),
        &tables.sync_state,
    ));
    Ok((stack, ledger))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamo_claim_renew_shrink_grant_release() -> Result<()> {
    let (_stack, ledger) = dynamo_ledger().await?;
    claim_renew_shrink_grant_release(ledger).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamo_dead_holder_expires() -> Result<()> {
    let (_stack, ledger) = dynamo_ledger().await?;
    dead_holder_expires(ledger).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamo_never_over_four() -> Result<()> {
    let (_stack, ledger) = dynamo_ledger().await?;
    never_over_four(ledger).await.map(drop)
}

/// Of writers that read one version, exactly one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamo_ledger_is_compare_and_set() -> Result<()> {
    let (_stack, ledger) = dynamo_ledger().await?;
    let mailbox = mailbox();
    let mut shares = connector_core::budget::MailboxShares::default();
    shares.holders.insert(
        "a".into(),
        connector_core::budget::HolderShare {
            share: 4,
            wants: 4,
            until_ms: i64::MAX / 2,
            since_ms: 1,
        },
    );
    assert!(ledger.write_slots(&mailbox, &shares, 0).await?);
    assert!(
        !ledger.write_slots(&mailbox, &shares, 0).await?,
        "a second create loses"
    );
    let read = ledger.read_slots(&mailbox).await?;
    assert_eq!((read.version, &read.shares), (1, &shares));
    assert!(ledger.write_slots(&mailbox, &shares, 1).await?);
    assert!(
        !ledger.write_slots(&mailbox, &shares, 1).await?,
        "a stale version loses"
    );
    let empty = connector_core::budget::MailboxShares::default();
    assert!(
        !ledger.write_slots(&mailbox, &empty, 1).await?,
        "a stale delete loses"
    );
    assert!(ledger.write_slots(&mailbox, &empty, 2).await?);
    assert_eq!(ledger.read_slots(&mailbox).await?.version, 0);
    Ok(())
}
