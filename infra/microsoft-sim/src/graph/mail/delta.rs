//! Message delta (`/mailFolders/{id}/messages/delta`): the state tokens and the paging over a folder's change
//! log (see `store` for the log's model).
//!
//! A token is opaque to clients: URL-safe base64 of a JSON state plus a checksum, carrying the whole query
//! (folder, `$select`, `$filter`, `$orderby`, `changeType`), where the round started (S) and its snapshot
//! boundary (B), the cursor within the round, and the cut-off of the 5,000-message `$filter` cap. The mailbox's
//! delta generation and the store instance are in it too: after an eviction (or a sim restart) the token is an
//! unknown generation and gets 410 `SyncStateNotFound`.
//!
//! Initial round (S = 0): the folder's messages newest first (the `receivedDateTime` index), whatever their
//! sequence, so messages created during the round either show up now or in the next round (harmless replays),
//! never nowhere. Later rounds: log entries in (S, B] in sequence order — tombstones become `@removed`.

use std::cmp::Reverse;
use std::ops::Bound;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::query::CmpOp;
use super::store::{Entry, MailboxData};

/// Microsoft applies `$filter` to a delta round by returning at most this many messages: "Applying `$filter` in a
/// delta query returns only up to 5,000 messages." (https://learn.microsoft.com/graph/delta-query-messages, read
/// 2026-12-05). Which 5,000 it keeps is not said: see [`CapOrder`].
pub const FILTER_CAP: usize = 5_000;

/// Which messages a capped `$filter`ed initial round keeps. Microsoft documents the cap but not which messages it
/// keeps (delta-query-messages, read 2026-12-05), so the sim can play each answer (`POST /_sim/delta-cap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum CapOrder {
    /// The newest `limit` (the first rows of the `receivedDateTime desc` view the round pages through). Default:
    /// the cap reads as a truncation of the result the round would otherwise return, and the only `$orderby`
    /// delta supports is `receivedDateTime desc`.
    #[default]
    Newest,
    /// The oldest `limit`.
    Oldest,
    /// A deterministic pseudo-random `limit` of them, drawn with `seed`.
    Arbitrary,
}

/// The sim's cap on `$filter`ed initial rounds (control API: `GET|POST /_sim/delta-cap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeltaCap {
    /// Messages a capped round returns; Microsoft's is [`FILTER_CAP`]. Smaller values keep tests fast.
    #[serde(default = "default_limit")]
    pub limit: usize,
    #[serde(default)]
    pub order: CapOrder,
    /// Seed of the `arbitrary` draw.
    #[serde(default)]
    pub seed: u64,
}

fn default_limit() -> usize {
    FILTER_CAP
}

impl Default for DeltaCap {
    fn default() -> Self {
        DeltaCap {
            limit: FILTER_CAP,
            order: CapOrder::Newest,
            seed: 0,
        }
    }
}

/// The `arbitrary` draw's rank of a message: the round keeps the `limit` lowest.
fn draw(seed: u64, key: u32) -> u64 {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(key.to_le_bytes());
    let d = h.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&d[..8]);
    u64::from_le_bytes(out)
}
/// Default page without `Prefer: odata.maxpagesize` (observed).
pub const DEFAULT_PAGE: usize = 10;
/// Largest page we honour. Microsoft documents no maximum for message delta; this one is unconfirmed.
pub const MAX_PAGE: usize = 1_000;
/// Log entries one request may scan before it answers with whatever it has (possibly an empty page + nextLink).
const SCAN_BUDGET: usize = 20_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ChangeType {
    Created,
    Updated,
    Deleted,
}

impl ChangeType {
    pub fn parse(s: &str) -> Option<ChangeType> {
        match s.to_ascii_lowercase().as_str() {
            "created" => Some(ChangeType::Created),
            "updated" => Some(ChangeType::Updated),
            "deleted" => Some(ChangeType::Deleted),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cursor {
    /// Nothing returned yet in this round.
    Start,
    /// Initial round: after this `(receivedDateTime, key)` in newest-first order.
    Received(i64, u32),
    /// Later rounds: after this log sequence.
    Seq(u64),
}

/// Everything a nextLink / deltaLink carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaState {
    /// Store instance (a restarted sim has another).
    pub i: u64,
    /// Mailbox delta generation.
    pub g: u32,
    /// Folder key.
    pub f: u32,
    /// `$select` (canonical names), if any.
    pub s: Option<Vec<String>>,
    /// `$filter=receivedDateTime ge|gt v`.
    pub flt: Option<(CmpOp, i64)>,
    /// `$orderby=receivedDateTime desc` was asked.
    pub o: bool,
    pub c: Option<ChangeType>,
    /// Round start S: changes after this sequence (0: initial round).
    pub from: u64,
    /// Snapshot boundary B; `None` in a deltaLink (fixed when the next round starts).
    pub b: Option<u64>,
    pub cur: Cursor,
    /// `$filter` cap: the round ends after this `(receivedDateTime, key)`.
    pub floor: Option<(i64, u32)>,
    /// `$filter` cap, `arbitrary` order: only messages whose `(draw(seed, key), key)` is at most this are returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pick: Option<(u64, u64, u32)>,
}

const TOKEN_KEY: &[u8] = b"microsoft-sim/message-delta/v1";

fn mac(payload: &[u8]) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(TOKEN_KEY);
    h.update(payload);
    let d = h.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&d[..8]);
    out
}

impl DeltaState {
    pub fn encode(&self) -> String {
        let mut bytes = serde_json::to_vec(self).expect("delta state serializes");
        let m = mac(&bytes);
        bytes.extend_from_slice(&m);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(token: &str) -> Option<DeltaState> {
        let bytes = URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).ok()?;
        let (payload, m) = bytes.split_at(bytes.len().checked_sub(8)?);
        if mac(payload) != m {
            return None;
        }
        serde_json::from_slice(payload).ok()
    }

    fn filter_accepts(&self, received: i64) -> bool {
        match self.flt {
            None => true,
            Some((CmpOp::Ge, v)) => received >= v,
            Some((CmpOp::Gt, v)) => received > v,
            Some((CmpOp::Le, v)) => received <= v,
            Some((CmpOp::Lt, v)) => received < v,
        }
    }
}

/// One item of a delta page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaItem {
    /// A message to render (created or updated).
    Message(u32),
    /// `@removed`: the tombstone at this log sequence in the folder.
    Removed(u64),
}

#[derive(Debug)]
pub struct DeltaPage {
    pub items: Vec<DeltaItem>,
    /// `Some(next state)` for a nextLink; `None` when the round is complete (deltaLink).
    pub next: Option<DeltaState>,
    /// The state for the deltaLink when the round is complete.
    pub delta: Option<DeltaState>,
}

/// Starts a round from a deltaLink state, or fixes the boundary of an initial one (the `$filter` cap included:
/// `cap` says how many messages and which).
pub fn begin_round(data: &MailboxData, state: &mut DeltaState, cap: DeltaCap) {
    if state.b.is_some() {
        return;
    }
    state.b = Some(data.seq);
    state.cur = if state.from == 0 {
        Cursor::Start
    } else {
        Cursor::Seq(state.from)
    };
    if state.from == 0 && state.flt.is_some() {
        let folder = &data.folders[state.f as usize];
        let limit = cap.limit.max(1);
        let window = || {
            folder
                .by_received
                .iter()
                .take_while(|(Reverse(r), _)| state.filter_accepts(*r))
                .map(|(Reverse(r), k)| (*r, *k))
        };
        let total = window().count();
        if total <= limit {
            return;
        }
        match cap.order {
            CapOrder::Newest => state.floor = window().nth(limit - 1),
            // Start the round after the newer ones: it walks (and returns) the oldest `limit` only.
            CapOrder::Oldest => {
                if let Some((r, k)) = window().nth(total - limit - 1) {
                    state.cur = Cursor::Received(r, k);
                }
            }
            CapOrder::Arbitrary => {
                let mut ranks: Vec<(u64, u32)> =
                    window().map(|(_, k)| (draw(cap.seed, k), k)).collect();
                ranks.select_nth_unstable(limit - 1);
                let (rank, key) = ranks[limit - 1];
                state.pick = Some((cap.seed, rank, key));
            }
        }
    }
}

/// The next page of a round whose boundary is fixed.
pub fn page(data: &MailboxData, state: &DeltaState, size: usize) -> DeltaPage {
    let boundary = state.b.expect("round begun");
    let folder = &data.folders[state.f as usize];
    let mut items = Vec::with_capacity(size.min(1024));
    let finished = |items| DeltaPage {
        items,
        next: None,
        delta: Some(DeltaState {
            b: None,
            cur: Cursor::Start,
            floor: None,
            pick: None,
            from: boundary,
            ..state.clone()
        }),
    };
    if state.from == 0 {
        if state.c == Some(ChangeType::Deleted) {
            return finished(items);
        }
        let start = match state.cur {
            Cursor::Received(r, k) => Bound::Excluded((Reverse(r), k)),
            _ => Bound::Unbounded,
        };
        let floor = state.floor.map(|(r, k)| (Reverse(r), k));
        let mut last = None;
        for &(Reverse(r), k) in folder.by_received.range((start, Bound::Unbounded)) {
            if !state.filter_accepts(r) || floor.is_some_and(|f| (Reverse(r), k) > f) {
                break;
            }
            if state
                .pick
                .is_some_and(|(seed, rank, key)| (draw(seed, k), k) > (rank, key))
            {
                last = Some((r, k));
                continue;
            }
            if items.len() == size {
                // One more exists: this page ends with a nextLink.
                let cur = last
                    .map(|(r, k)| Cursor::Received(r, k))
                    .unwrap_or(state.cur);
                return DeltaPage {
                    items,
                    next: Some(DeltaState {
                        cur,
                        ..state.clone()
                    }),
                    delta: None,
                };
            }
            items.push(DeltaItem::Message(k));
            last = Some((r, k));
        }
        return finished(items);
    }
    let after = match state.cur {
        Cursor::Seq(s) => s,
        _ => state.from,
    };
    let mut scanned = 0usize;
    let mut last_seq = after;
    for (&seq, entry) in folder
        .log
        .range((Bound::Excluded(after), Bound::Included(boundary)))
    {
        let item = match entry {
            Entry::Present(k) => {
                let Some(rec) = data.message(*k) else {
                    continue;
                };
                let kind = if rec.entered_seq > state.from {
                    ChangeType::Created
                } else {
                    ChangeType::Updated
                };
                (state.filter_accepts(rec.received) && state.c.is_none_or(|c| c == kind))
                    .then_some(DeltaItem::Message(*k))
            }
            Entry::Removed(t) => (state.filter_accepts(t.received)
                && state.c.is_none_or(|c| c == ChangeType::Deleted))
            .then_some(DeltaItem::Removed(seq)),
        };
        if let Some(item) = item {
            if items.len() == size {
                return DeltaPage {
                    items,
                    next: Some(DeltaState {
                        cur: Cursor::Seq(last_seq),
                        ..state.clone()
                    }),
                    delta: None,
                };
            }
            items.push(item);
        }
        last_seq = seq;
        scanned += 1;
        if scanned >= SCAN_BUDGET {
            // Outlook, too, may answer a nextLink with a short or empty page; the client just follows it.
            return DeltaPage {
                items,
                next: Some(DeltaState {
                    cur: Cursor::Seq(last_seq),
                    ..state.clone()
                }),
                delta: None,
            };
        }
    }
    finished(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::mail::store::Content;
    use serde_json::{Map, Value};

    fn msg() -> Content {
        let mut m = Map::new();
        m.insert("subject".into(), Value::from("x"));
        Content::Json(Box::new(m))
    }

    fn initial(folder: u32) -> DeltaState {
        DeltaState {
            i: 1,
            g: 1,
            f: folder,
            s: None,
            flt: None,
            o: false,
            c: None,
            from: 0,
            b: None,
            cur: Cursor::Start,
            floor: None,
            pick: None,
        }
    }

    /// Walks a round to its end; returns the items and the deltaLink state.
    fn walk(
        data: &MailboxData,
        state: DeltaState,
        size: usize,
    ) -> (Vec<DeltaItem>, DeltaState, usize) {
        walk_capped(data, state, size, DeltaCap::default())
    }

    fn walk_capped(
        data: &MailboxData,
        mut state: DeltaState,
        size: usize,
        cap: DeltaCap,
    ) -> (Vec<DeltaItem>, DeltaState, usize) {
        begin_round(data, &mut state, cap);
        let mut all = Vec::new();
        let mut requests = 0;
        loop {
            requests += 1;
            let p = page(data, &state, size);
            all.extend(p.items);
            match p.next {
                Some(next) => state = DeltaState::decode(&next.encode()).unwrap(),
                None => return (all, p.delta.unwrap(), requests),
            }
        }
    }

    #[test]
    fn token_round_trip_and_tamper_check() {
        let s = initial(3);
        let t = s.encode();
        assert_eq!(DeltaState::decode(&t), Some(s));
        let mut bad = t.into_bytes();
        let i = bad.len() / 2;
        bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
        assert_eq!(DeltaState::decode(std::str::from_utf8(&bad).unwrap()), None);
    }

    #[test]
    fn initial_round_pages_everything_once_then_empty_round() {
        let mut data = MailboxData::new("u");
        let inbox = data.resolve_folder("inbox").unwrap();
        for i in 0..25 {
            data.insert(inbox, msg(), 1000 + i, 1000 + i, None, 2000);
        }
        let (items, delta, requests) = walk(&data, initial(inbox), 10);
        assert_eq!(items.len(), 25);
        assert_eq!(requests, 3);
        let mut keys: Vec<_> = items
            .iter()
            .map(|i| matches!(i, DeltaItem::Message(_)))
            .collect();
        keys.dedup();
        assert_eq!(keys, vec![true]);
        let (items, _, requests) = walk(&data, delta, 10);
        assert!(items.is_empty());
        assert_eq!(requests, 1);
    }

    #[test]
    fn changes_show_up_in_the_next_round() {
        let mut data = MailboxData::new("u");
        let inbox = data.resolve_folder("inbox").unwrap();
        let archive = data.resolve_folder("archive").unwrap();
        let keys: Vec<u32> = (0..5)
            .map(|i| data.insert(inbox, msg(), 100 + i, 100, None, 100))
            .collect();
        let (_, delta, _) = walk(&data, initial(inbox), 10);
        data.delete(keys[0]);
        data.move_to(keys[1], archive, 200);
        data.update(keys[2], msg(), 102, 200);
        let added = data.insert(inbox, msg(), 300, 300, None, 300);
        let (items, delta2, _) = walk(&data, delta.clone(), 10);
        let removed = items
            .iter()
            .filter(|i| matches!(i, DeltaItem::Removed(_)))
            .count();
        assert_eq!(removed, 2);
        assert!(items.contains(&DeltaItem::Message(keys[2])));
        assert!(items.contains(&DeltaItem::Message(added)));
        // changeType=created only sees the new message.
        let created = DeltaState {
            c: Some(ChangeType::Created),
            ..delta.clone()
        };
        let (items, _, _) = walk(&data, created, 10);
        assert_eq!(items, vec![DeltaItem::Message(added)]);
        // Replaying the old deltaLink is harmless: same answer.
        let (again, _, _) = walk(&data, delta, 10);
        assert_eq!(again.len(), 4);
        let (none, _, _) = walk(&data, delta2, 10);
        assert!(none.is_empty());
    }

    #[test]
    fn filter_caps_the_round_at_5000_newest() {
        let mut data = MailboxData::new("u");
        let inbox = data.resolve_folder("inbox").unwrap();
        for i in 0..6_000 {
            data.insert(inbox, msg(), 10_000 + i, 0, None, 0);
        }
        let state = DeltaState {
            flt: Some((CmpOp::Ge, 10_500)),
            ..initial(inbox)
        };
        let (items, _, _) = walk(&data, state, 1000);
        assert_eq!(items.len(), FILTER_CAP);
        let oldest = items
            .iter()
            .map(|i| match i {
                DeltaItem::Message(k) => data.message(*k).unwrap().received,
                DeltaItem::Removed(_) => unreachable!(),
            })
            .min()
            .unwrap();
        assert_eq!(oldest, 10_000 + 1_000);
        let state = DeltaState {
            flt: Some((CmpOp::Ge, 15_500)),
            ..initial(inbox)
        };
        let (items, _, _) = walk(&data, state, 1000);
        assert_eq!(items.len(), 500);
    }

    /// Received times of a round's messages, newest first.
    fn received(data: &MailboxData, items: &[DeltaItem]) -> Vec<i64> {
        items
            .iter()
            .map(|i| match i {
                DeltaItem::Message(k) => data.message(*k).unwrap().received,
                DeltaItem::Removed(_) => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn the_cap_keeps_the_newest_the_oldest_or_an_arbitrary_subset() {
        let mut data = MailboxData::new("u");
        let inbox = data.resolve_folder("inbox").unwrap();
        for i in 0..300 {
            data.insert(inbox, msg(), 1_000 + i, 0, None, 0);
        }
        // 250 messages in the window (1,050..=1,299), a cap of 40, pages of 7.
        let filtered = DeltaState {
            flt: Some((CmpOp::Ge, 1_050)),
            ..initial(inbox)
        };
        let cap = |order, seed| DeltaCap {
            limit: 40,
            order,
            seed,
        };
        let (items, _, _) = walk_capped(&data, filtered.clone(), 7, cap(CapOrder::Newest, 0));
        assert_eq!(
            received(&data, &items),
            (1_260..1_300).rev().collect::<Vec<_>>()
        );
        let (items, _, _) = walk_capped(&data, filtered.clone(), 7, cap(CapOrder::Oldest, 0));
        assert_eq!(
            received(&data, &items),
            (1_050..1_090).rev().collect::<Vec<_>>()
        );

        let (items, delta, _) =
            walk_capped(&data, filtered.clone(), 7, cap(CapOrder::Arbitrary, 9));
        let times = received(&data, &items);
        assert_eq!(times.len(), 40);
        assert!(
            times.windows(2).all(|w| w[0] > w[1]),
            "newest first, each once"
        );
        assert!(times.iter().all(|t| (1_050..1_300).contains(t)));
        assert!(
            times[0] > 1_200 && times[39] < 1_100,
            "spread over the window, not its newest or oldest 40: {times:?}"
        );
        let (again, _, _) = walk_capped(&data, filtered.clone(), 13, cap(CapOrder::Arbitrary, 9));
        assert_eq!(
            again, items,
            "the same seed draws the same subset at any page size"
        );
        let (other, _, _) = walk_capped(&data, filtered.clone(), 7, cap(CapOrder::Arbitrary, 10));
        assert_ne!(other, items, "another seed, another subset");
        // The deltaLink after a capped round carries no cap: later changes all come through.
        let added = data.insert(inbox, msg(), 2_000, 2_000, None, 2_000);
        let (next, _, _) = walk(&data, delta, 7);
        assert_eq!(next, vec![DeltaItem::Message(added)]);

        // Under the cap nothing is dropped, whatever the order.
        for order in [CapOrder::Newest, CapOrder::Oldest, CapOrder::Arbitrary] {
            let small = DeltaCap {
                limit: 251,
                order,
                seed: 3,
            };
            let (items, _, _) = walk_capped(&data, filtered.clone(), 7, small);
            assert_eq!(items.len(), 251, "{order:?}");
        }
        // Without $filter there is no cap.
        let (items, _, _) = walk_capped(&data, initial(inbox), 50, cap(CapOrder::Oldest, 0));
        assert_eq!(items.len(), 301);
    }

    #[test]
    fn a_long_stretch_of_filtered_changes_yields_an_empty_page_with_a_next_link() {
        let mut data = MailboxData::new("u");
        let inbox = data.resolve_folder("inbox").unwrap();
        let keys: Vec<u32> = (0..SCAN_BUDGET as i64 + 10)
            .map(|i| data.insert(inbox, msg(), i, i, None, i))
            .collect();
        let (_, delta, _) = walk(&data, initial(inbox), 1000);
        for &k in &keys {
            data.update(k, msg(), 0, 1);
        }
        let added = data.insert(inbox, msg(), 5, 5, None, 5);
        let mut state = DeltaState {
            c: Some(ChangeType::Created),
            ..delta
        };
        begin_round(&data, &mut state, DeltaCap::default());
        let first = page(&data, &state, 10);
        assert!(
            first.items.is_empty(),
            "only updates in the first {SCAN_BUDGET} entries"
        );
        let next = first.next.expect("a nextLink, not the end of the round");
        let second = page(&data, &next, 10);
        assert_eq!(second.items, vec![DeltaItem::Message(added)]);
        assert!(second.next.is_none() && second.delta.is_some());
    }
}
