//! Outlook's 4 concurrent requests per app and mailbox, shared across processes.
//!
//! Microsoft: "4 concurrent requests" per app ID and mailbox combination, for every
//! Outlook resource (mail, calendar, contacts, ...) — Outlook service limits in
//! <https://learn.microsoft.com/graph/throttling-limits#outlook-service-limits> (read
//! 2026-12-05). The limit counts ALL of the app's callers, so mail-sync and calendar-sync
//! (separate Lambda functions, separate processes) working one mailbox share the 4. A
//! `$batch` runs up to 4 of its items against a mailbox at once
//! (<https://learn.microsoft.com/graph/json-batching>, and Microsoft's answer in
//! <https://learn.microsoft.com/en-us/answers/questions/1660054>, read 2026-12-05).
//!
//! How the 4 are shared (docs/data-model.md has the item):
//! - every worker run on a mailbox is a **holder** with an id; the mailbox's **ledger**
//!   (one item, [`SlotLedger`]) records each holder's `share`, how many it `wants`, when it
//!   joined and until when its record holds (`untilMs`, [`BudgetOptions::ttl`]);
//! - every write is a compare-and-set on the ledger's version, and a holder only writes a
//!   ledger whose live shares sum to at most [`MAILBOX_SLOTS`];
//! - a holder's requests take slots from its [`SlotPool`], whose capacity is never above
//!   the share last written (raised only after the write; lowered at once, the lower share
//!   written only once the requests in flight fit it);
//! - a request only starts while the holder's record is valid for at least
//!   [`BudgetOptions::guard`] more (the longest a request can last, plus clock skew), so a
//!   holder that cannot renew stops starting requests, and its last ones have ended before
//!   anyone else may count its share as free;
//! - the split is fair: the live holders that want slots get them round-robin in order of
//!   joining (one alone gets all 4; two get 2 and 2). A newcomer records itself with share 0;
//!   the others see it at their next tick ([`BudgetOptions::tick`]), lower their capacity,
//!   wait for their requests in flight to fit, write their smaller share; the newcomer
//!   then claims what is free. When a holder leaves (or its record expires: a crashed
//!   worker), the others grow back at their next tick.
//!
//! Hence at every instant each holder's requests in flight are at most its share in a
//! live record, and the live shares sum to at most 4: together at most 4 in flight.
//! A request that waits longer than [`BudgetOptions::max_wait`] for a slot gives up as
//! [`crate::graph::GraphError::Throttled`], and the worker parks as it does on a 429.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::ports::SlotLedger;

/// Outlook's concurrent requests per app and mailbox.
pub const MAILBOX_SLOTS: u32 = 4;

/// One holder's record in a mailbox's ledger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HolderShare {
    /// Slots the holder may have in flight.
    pub share: u32,
    /// Slots it would use if it could.
    pub wants: u32,
    /// The record holds until then (unix milliseconds); later it counts as gone.
    pub until_ms: i64,
    /// When the holder joined (unix milliseconds): the order of the fair split.
    pub since_ms: i64,
}

impl HolderShare {
    fn live(&self, now_ms: i64) -> bool {
        self.until_ms > now_ms
    }
}

/// A mailbox's ledger: its holders by id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxShares {
    pub holders: BTreeMap<String, HolderShare>,
}

impl MailboxShares {
    /// Forgets expired records.
    pub fn prune(&mut self, now_ms: i64) {
        self.holders.retain(|_, holder| holder.live(now_ms));
    }

    /// The live shares' sum.
    pub fn held(&self, now_ms: i64) -> u32 {
        self.holders
            .values()
            .filter(|holder| holder.live(now_ms))
            .map(|holder| holder.share)
            .sum()
    }

    /// `holder`'s part of a fair split of [`MAILBOX_SLOTS`] among the live holders (and
    /// `holder` itself): one slot at a time, round-robin in order of joining, to those that
    /// want more.
    pub fn fair_share(&self, holder: &str, now_ms: i64) -> u32 {
        let mut order: Vec<(&String, &HolderShare)> = self
            .holders
            .iter()
            .filter(|(id, share)| share.live(now_ms) || id.as_str() == holder)
            .collect();
        order.sort_by_key(|(id, share)| (share.since_ms, *id));
        let mut grant = vec![0u32; order.len()];
        let mut left = MAILBOX_SLOTS;
        while left > 0 {
            let mut gave = false;
            for (slot, (_, share)) in grant.iter_mut().zip(&order) {
                if left > 0 && *slot < share.wants {
                    *slot += 1;
                    left -= 1;
                    gave = true;
                }
            }
            if !gave {
                break;
            }
        }
        order
            .iter()
            .position(|(id, _)| id.as_str() == holder)
            .map_or(0, |at| grant[at])
    }
}

/// A ledger as read: its holders and the version a write must name (0: no ledger yet).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerRead {
    pub shares: MailboxShares,
    pub version: u64,
}

/// The unix time in milliseconds.
pub fn unix_ms(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

fn now_ms() -> i64 {
    unix_ms(OffsetDateTime::now_utc())
}

// ---------------------------------------------------------------------------------------
// The local pool

/// Why no slots were taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotWait {
    /// More slots asked for than the pool has now (a parallel `$batch` under a share
    /// below 4: send it as a chain instead).
    TooMany,
    /// None came free in time.
    TimedOut,
}

#[derive(Debug)]
struct PoolState {
    capacity: u32,
    in_use: u32,
    /// Requests start only before then (`None`: always).
    open_until: Option<Instant>,
    /// Waiting acquirers, first come first served.
    queue: VecDeque<u64>,
    next_ticket: u64,
}

/// A mailbox's slots in this process: a counting semaphore whose capacity the budget
/// changes, first come first served, and a gate closing when the holder's record is about
/// to lapse.
#[derive(Debug)]
pub struct SlotPool {
    state: Mutex<PoolState>,
    changed: Notify,
}

/// Slots taken from a [`SlotPool`]; given back on drop.
#[derive(Debug)]
pub struct SlotGuard {
    pool: Arc<SlotPool>,
    slots: u32,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.pool
            .update(|state| state.in_use = state.in_use.saturating_sub(self.slots));
    }
}

/// Removes a waiter's ticket however its wait ends (cancellation included).
struct Ticket<'a> {
    pool: &'a SlotPool,
    id: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.pool
            .update(|state| state.queue.retain(|id| *id != self.id));
    }
}

impl SlotPool {
    /// A pool of `capacity` slots, always open (no budget: this process's own limit).
    pub fn fixed(capacity: u32) -> Self {
        Self::with(capacity, None)
    }

    /// A pool of no slots, closed: a budget's holder opens it once it has a share.
    pub fn closed() -> Self {
        Self::with(0, Some(Instant::now()))
    }

    fn with(capacity: u32, open_until: Option<Instant>) -> Self {
        Self {
            state: Mutex::new(PoolState {
                capacity,
                in_use: 0,
                open_until,
                queue: VecDeque::new(),
                next_ticket: 0,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update<T>(&self, change: impl FnOnce(&mut PoolState) -> T) -> T {
        let out = change(&mut self.lock());
        self.changed.notify_waiters();
        out
    }

    /// Slots the pool may have in use now.
    pub fn capacity(&self) -> u32 {
        self.lock().capacity
    }

    /// Slots in use now.
    pub fn in_use(&self) -> u32 {
        self.lock().in_use
    }

    fn set_capacity(&self, capacity: u32) {
        self.update(|state| state.capacity = capacity);
    }

    /// Lowers the capacity to at most `capacity` (requests in flight go on).
    fn lower_capacity(&self, capacity: u32) {
        self.update(|state| state.capacity = state.capacity.min(capacity));
    }

    fn open_until(&self, until: Instant) {
        self.update(|state| state.open_until = Some(until));
    }

    /// Takes `slots` slots, waiting (first come first served) until `until` at most.
    pub async fn acquire(
        self: &Arc<Self>,
        slots: u32,
        until: Instant,
    ) -> Result<SlotGuard, SlotWait> {
        let ticket = {
            let mut state = self.lock();
            let id = state.next_ticket;
            state.next_ticket += 1;
            state.queue.push_back(id);
            Ticket { pool: self, id }
        };
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next_change = {
                let mut state = self.lock();
                let now = Instant::now();
                let open = state.open_until.is_none_or(|open| now < open);
                if open && state.capacity >= 1 && slots > state.capacity {
                    return Err(SlotWait::TooMany);
                }
                if open
                    && state.queue.front() == Some(&ticket.id)
                    && state.in_use + slots <= state.capacity
                {
                    state.queue.pop_front();
                    state.in_use += slots;
                    drop(state);
                    // The next in line may fit too.
                    self.changed.notify_waiters();
                    return Ok(SlotGuard {
                        pool: self.clone(),
                        slots,
                    });
                }
                // The gate closing is a change nobody notifies.
                state.open_until.filter(|open| now < *open)
            };
            let wake = next_change.map_or(until, |open| open.min(until));
            if tokio::time::timeout_at(wake, notified).await.is_err() && Instant::now() >= until {
                return Err(SlotWait::TimedOut);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The budget

/// How the budget runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetOptions {
    /// How long a written record holds: a crashed holder's share is free after this.
    pub ttl: Duration,
    /// Requests start only while the holder's record holds at least this much longer:
    /// the longest a request lasts (the Graph client's 90 s timeout, body included) plus
    /// the clock skew allowed between workers. Below `ttl`.
    pub guard: Duration,
    /// How often a holder reads the ledger (and renews, shrinks, grows).
    pub tick: Duration,
    /// The longest a request waits for a slot before giving up as throttled.
    pub max_wait: Duration,
    /// Slots a holder wants.
    pub wants: u32,
}

impl Default for BudgetOptions {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(120),
            guard: Duration::from_secs(100),
            tick: Duration::from_secs(2),
            max_wait: Duration::from_secs(60),
            wants: MAILBOX_SLOTS,
        }
    }
}

/// The mailboxes' shared budget: one per process, on a [`SlotLedger`].
pub struct MailboxBudget {
    ledger: Arc<dyn SlotLedger>,
    options: BudgetOptions,
}

impl MailboxBudget {
    pub fn new(ledger: Arc<dyn SlotLedger>, options: BudgetOptions) -> Arc<Self> {
        assert!(
            options.guard < options.ttl,
            "the guard must leave a record some validity"
        );
        Arc::new(Self { ledger, options })
    }

    pub fn options(&self) -> BudgetOptions {
        self.options
    }

    /// Joins `mailbox` as a new holder: a background task claims, renews, shrinks and
    /// grows its share; its pool opens once a share is written. Needs a tokio runtime.
    pub fn join(self: &Arc<Self>, mailbox: &str) -> BudgetHolder {
        let pool = Arc::new(SlotPool::closed());
        let id = uuid::Uuid::new_v4().to_string();
        let task = tokio::spawn(hold(
            self.clone(),
            mailbox.to_owned(),
            id.clone(),
            pool.clone(),
        ));
        BudgetHolder {
            budget: self.clone(),
            mailbox: mailbox.to_owned(),
            id,
            pool,
            task: Some(task),
        }
    }

    /// One round of a holder: read, prune, compute its share, write when needed.
    /// Returns whether the pool's capacity still has to come down to the share.
    async fn tick(
        &self,
        mailbox: &str,
        me: &str,
        since_ms: i64,
        pool: &SlotPool,
        last: &mut Renewal,
    ) -> Result<bool, crate::ports::StoreError> {
        let options = self.options;
        for _ in 0..4 {
            let started = Instant::now();
            let now = now_ms();
            let LedgerRead {
                mut shares,
                version,
            } = self.ledger.read_slots(mailbox).await?;
            shares.prune(now);
            let mine = shares.holders.get(me).copied();
            let others: u32 = shares
                .holders
                .iter()
                .filter(|(id, _)| id.as_str() != me)
                .map(|(_, holder)| holder.share)
                .sum();
            let room = MAILBOX_SLOTS.saturating_sub(others);
            let entry = HolderShare {
                share: 0,
                wants: options.wants,
                until_ms: 0,
                since_ms,
            };
            shares.holders.insert(me.to_owned(), entry);
            let desired = shares.fair_share(me, now).min(room);
            pool.lower_capacity(desired);
            // What is in flight stays covered until it has ended.
            let share = desired.max(pool.in_use());
            if share > room {
                // Our record lapsed and others hold the room: wait for ours to drain.
                debug!(share, room, "mailbox slots: waiting for requests to drain");
                return Ok(true);
            }
            let record = HolderShare {
                share,
                wants: options.wants,
                until_ms: now + options.ttl.as_millis() as i64,
                since_ms,
            };
            let half_life = (options.ttl - options.guard) / 2;
            let unchanged =
                mine.is_some_and(|mine| mine.share == share && mine.wants == options.wants);
            let fresh = last
                .open_until
                .is_some_and(|open| open.saturating_duration_since(Instant::now()) > half_life);
            if unchanged && fresh {
                if desired > pool.capacity() && desired <= share {
                    pool.set_capacity(desired);
                }
                return Ok(pool.capacity() < share);
            }
            shares.holders.insert(me.to_owned(), record);
            // Only reachable when clocks disagree on another record's expiry; a share of 0
            // (waiting) adds nothing and may still be recorded.
            if share > 0 && shares.held(now) > MAILBOX_SLOTS {
                warn!("mailbox slots: refused to write a ledger over the limit");
                return Ok(true);
            }
            if self.ledger.write_slots(mailbox, &shares, version).await? {
                let open = started + options.ttl - options.guard;
                last.open_until = Some(open);
                pool.open_until(open);
                if desired > pool.capacity() {
                    pool.set_capacity(desired);
                }
                return Ok(share > desired);
            }
            // Another holder wrote first: read again.
        }
        Ok(true)
    }

    /// Removes `me` from the ledger (a few tries; the record expires by itself anyway).
    async fn leave(&self, mailbox: &str, me: &str) -> Result<(), crate::ports::StoreError> {
        for _ in 0..5 {
            let LedgerRead {
                mut shares,
                version,
            } = self.ledger.read_slots(mailbox).await?;
            if shares.holders.remove(me).is_none() {
                return Ok(());
            }
            shares.prune(now_ms());
            if self.ledger.write_slots(mailbox, &shares, version).await? {
                return Ok(());
            }
        }
        Err(crate::ports::StoreError::Conflict {
            what: format!("the slot ledger of mailbox {mailbox}"),
        })
    }
}

#[derive(Default)]
struct Renewal {
    open_until: Option<Instant>,
}

/// A holder's background task.
async fn hold(budget: Arc<MailboxBudget>, mailbox: String, me: String, pool: Arc<SlotPool>) {
    let since_ms = now_ms();
    let mut last = Renewal::default();
    let tick = budget.options.tick;
    loop {
        let draining = match budget.tick(&mailbox, &me, since_ms, &pool, &mut last).await {
            Ok(draining) => draining,
            Err(error) => {
                warn!(error = %error, "mailbox slots: the ledger could not be read or written");
                false
            }
        };
        if draining {
            // Write the smaller share as soon as the requests in flight fit it.
            let notified = pool.changed.notified();
            let _ = tokio::time::timeout(tick, notified).await;
        } else {
            tokio::time::sleep(tick).await;
        }
    }
}

/// A worker's place in a mailbox's budget. [`Self::release`] at the end; dropped without
/// it, its record expires by itself.
pub struct BudgetHolder {
    budget: Arc<MailboxBudget>,
    mailbox: String,
    id: String,
    pool: Arc<SlotPool>,
    task: Option<JoinHandle<()>>,
}

impl BudgetHolder {
    pub fn pool(&self) -> &Arc<SlotPool> {
        &self.pool
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn max_wait(&self) -> Duration {
        self.budget.options.max_wait
    }

    /// Stops renewing, closes the pool and removes the record.
    pub async fn release(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        self.pool.update(|state| {
            state.capacity = 0;
            state.open_until = Some(Instant::now());
        });
        if let Err(error) = self.budget.leave(&self.mailbox, &self.id).await {
            warn!(error = %error, "mailbox slots: could not leave the ledger (the record expires by itself)");
        }
    }
}

impl Drop for BudgetHolder {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(share: u32, wants: u32, since_ms: i64, until_ms: i64) -> HolderShare {
        HolderShare {
            share,
            wants,
            until_ms,
            since_ms,
        }
    }

    #[test]
    fn fair_split_in_order_of_joining() {
        let now = 1_000;
        let mut shares = MailboxShares::default();
        shares.holders.insert("a".into(), holder(4, 4, 1, 5_000));
        assert_eq!(shares.fair_share("a", now), 4, "alone: all 4");
        shares.holders.insert("b".into(), holder(0, 4, 2, 5_000));
        assert_eq!(
            (shares.fair_share("a", now), shares.fair_share("b", now)),
            (2, 2)
        );
        shares.holders.insert("c".into(), holder(0, 4, 3, 5_000));
        let split: Vec<u32> = ["a", "b", "c"]
            .iter()
            .map(|id| shares.fair_share(id, now))
            .collect();
        assert_eq!(split, vec![2, 1, 1], "the first to join gets the odd slot");
        // One wanting 1 leaves the rest to the others.
        shares.holders.insert("c".into(), holder(0, 1, 3, 5_000));
        shares.holders.remove("b");
        assert_eq!(
            (shares.fair_share("a", now), shares.fair_share("c", now)),
            (3, 1)
        );
        // An expired holder counts for nothing.
        shares.holders.insert("c".into(), holder(1, 4, 3, 999));
        assert_eq!(shares.fair_share("a", now), 4);
        assert_eq!(shares.held(now), 4);
        shares.prune(now);
        assert!(!shares.holders.contains_key("c"));
    }

    #[tokio::test]
    async fn pool_is_first_come_first_served_and_survives_cancelled_waiters() {
        let pool = Arc::new(SlotPool::fixed(4));
        let soon = || Instant::now() + Duration::from_millis(100);
        let three = pool.acquire(3, soon()).await.expect("3 of 4");
        assert_eq!(pool.acquire(5, soon()).await.err(), Some(SlotWait::TooMany));
        // A waiter for 2 comes first; a later one for 1 must not overtake it.
        let first = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.acquire(2, Instant::now() + Duration::from_secs(5))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            pool.acquire(1, soon()).await.err(),
            Some(SlotWait::TimedOut)
        );
        drop(three);
        let two = first.await.expect("task").expect("2 once 3 came back");
        assert_eq!(pool.in_use(), 2);
        // A cancelled waiter leaves no ticket behind.
        let cancelled =
            tokio::time::timeout(Duration::from_millis(20), pool.acquire(3, soon())).await;
        assert!(cancelled.is_err());
        drop(two);
        assert!(pool.acquire(4, soon()).await.is_ok());
        // A closed pool grants nothing until it opens.
        let closed = Arc::new(SlotPool::closed());
        assert_eq!(
            closed.acquire(1, soon()).await.err(),
            Some(SlotWait::TimedOut)
        );
        closed.set_capacity(2);
        closed.open_until(Instant::now() + Duration::from_secs(5));
        assert!(closed.acquire(2, soon()).await.is_ok());
    }
}
