//! calendarView delta sync state: what each `$deltatoken` remembers, the rounds `$skiptoken`s page through, and
//! the opaque tokens themselves.
//!
//! Exchange keeps sync state server side and hands out references to it; so does the sim. A delta state is the
//! window plus the snapshot (instance → change tag) the client holds once it has paged to the deltaLink. A round
//! diffs the current window against that snapshot: new or changed instances are sent whole, instances that are
//! gone (deleted, cancelled and removed, or moved out of the window) come back as `@removed` with reason
//! `deleted`. As the event-delta page warns, instances outside the window that changed since the previous round
//! are also reported as removed, so clients must filter removals themselves. States and rounds live in a bounded
//! per-user cache; an evicted one answers 410 `SyncStateNotFound`, as Outlook's sync-state cache does.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::ids::{InstanceKey, ItemHash};
use super::model::UserCalendar;

/// Delta states and rounds kept per user before the oldest are evicted.
const CACHE_PER_USER: usize = 256;
/// Journal entries kept per user (they only feed the "changed outside the window" removals).
const JOURNAL_CAPACITY: usize = 20_000;

#[derive(Debug, Clone)]
pub struct DeltaState {
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    pub snapshot: BTreeMap<InstanceKey, String>,
    /// Journal position when the snapshot was taken.
    pub seq: u64,
    /// World ids of the snapshot's single events, so removed ones are reported under the id the client knows.
    pub given: BTreeMap<ItemHash, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Upsert(InstanceKey),
    Removed(InstanceKey, Option<String>),
}

#[derive(Debug, Clone)]
pub struct Round {
    pub entries: Vec<Entry>,
    /// The state the deltaLink of the last page names.
    pub next_state: u64,
}

/// One touched item or occurrence, with the change counter at the time.
#[derive(Debug, Clone)]
struct Touch {
    seq: u64,
    key: InstanceKey,
    given: Option<String>,
}

/// Per-user delta bookkeeping.
#[derive(Debug, Default)]
pub struct DeltaCache {
    next_id: u64,
    seq: u64,
    states: BTreeMap<u64, DeltaState>,
    rounds: BTreeMap<u64, Round>,
    journal: VecDeque<Touch>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Skip,
    Delta,
}

/// A `$skiptoken` (round + offset) or `$deltatoken` (state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub id: u64,
    pub offset: usize,
}

impl Token {
    fn visible(&self) -> String {
        let kind = match self.kind {
            TokenKind::Skip => 's',
            TokenKind::Delta => 'd',
        };
        format!("{kind}.{}.{}", self.id, self.offset)
    }

    /// The MAC covers the token and its user, so a token only works for the mailbox it was issued on.
    fn mac(&self, secret: &[u8; 32], user_id: &str) -> String {
        let digest = Sha256::new()
            .chain_update(secret)
            .chain_update(self.visible().as_bytes())
            .chain_update(b"|")
            .chain_update(user_id.to_ascii_lowercase().as_bytes())
            .finalize();
        hex::encode(&digest[..8])
    }

    pub fn encode(&self, secret: &[u8; 32], user_id: &str) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}.{}", self.visible(), self.mac(secret, user_id)))
    }

    /// `None` when the token is malformed, edited, or another user's.
    pub fn decode(text: &str, secret: &[u8; 32], user_id: &str) -> Option<Token> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(text.trim()).ok()?).ok()?;
        let mut parts = raw.split('.');
        let kind = match parts.next()? {
            "s" => TokenKind::Skip,
            "d" => TokenKind::Delta,
            _ => return None,
        };
        let id = parts.next()?.parse().ok()?;
        let offset = parts.next()?.parse().ok()?;
        let mac = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let token = Token { kind, id, offset };
        (token.mac(secret, user_id) == mac).then_some(token)
    }
}

impl DeltaCache {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The highest state or round id handed out (for the 410 message).
    pub fn highest(&self) -> u64 {
        self.next_id
    }

    /// Records that `key` changed (created, updated, cancelled, deleted).
    pub fn touch(&mut self, key: InstanceKey, given: Option<String>) {
        self.seq += 1;
        if self.journal.len() == JOURNAL_CAPACITY {
            self.journal.pop_front();
        }
        self.journal.push_back(Touch {
            seq: self.seq,
            key,
            given,
        });
    }

    pub fn evict_all(&mut self) {
        self.states.clear();
        self.rounds.clear();
    }

    pub fn state(&self, id: u64) -> Option<&DeltaState> {
        self.states.get(&id)
    }

    pub fn round(&self, id: u64) -> Option<&Round> {
        self.rounds.get(&id)
    }

    fn trim(&mut self) {
        while self.states.len() > CACHE_PER_USER {
            self.states.pop_first();
        }
        while self.rounds.len() > CACHE_PER_USER {
            self.rounds.pop_first();
        }
    }

    /// Starts a round against `base` (`None`: the initial full sync of a new window) and returns its id.
    pub fn start_round(
        &mut self,
        calendar: &UserCalendar,
        from: OffsetDateTime,
        to: OffsetDateTime,
        base: Option<&DeltaState>,
    ) -> u64 {
        let current = calendar.instances_in(from, to);
        let mut snapshot = BTreeMap::new();
        let mut given = BTreeMap::new();
        let mut entries = Vec::new();
        for instance in &current {
            snapshot.insert(instance.key, instance.tag.clone());
            if instance.key.date.is_none()
                && let Some(id) = calendar
                    .items
                    .get(&instance.key.item)
                    .and_then(|i| i.given_id.clone())
            {
                given.insert(instance.key.item, id);
            }
            if base.and_then(|b| b.snapshot.get(&instance.key)) != Some(&instance.tag) {
                entries.push(Entry::Upsert(instance.key));
            }
        }
        if let Some(base) = base {
            for key in base.snapshot.keys() {
                if !snapshot.contains_key(key) {
                    entries.push(Entry::Removed(
                        *key,
                        base.given
                            .get(&key.item)
                            .cloned()
                            .filter(|_| key.date.is_none()),
                    ));
                }
            }
            // Changes outside the window since the previous round: reported as removed, as the doc describes.
            let mut reported: BTreeSet<InstanceKey> = base.snapshot.keys().copied().collect();
            reported.extend(snapshot.keys().copied());
            for touch in self.journal.iter().filter(|t| t.seq > base.seq) {
                let outside = !reported.contains(&touch.key)
                    && !self.has_instance_in(calendar, touch.key, from, to);
                if outside && reported.insert(touch.key) {
                    entries.push(Entry::Removed(touch.key, touch.given.clone()));
                }
            }
        }
        let state_id = self.next_id();
        self.states.insert(
            state_id,
            DeltaState {
                from,
                to,
                snapshot,
                seq: self.seq,
                given,
            },
        );
        let round_id = self.next_id();
        self.rounds.insert(
            round_id,
            Round {
                entries,
                next_state: state_id,
            },
        );
        self.trim();
        round_id
    }

    /// Whether a touched key still shows in the window: a series master counts if any occurrence does.
    fn has_instance_in(
        &self,
        calendar: &UserCalendar,
        key: InstanceKey,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> bool {
        let Some(item) = calendar.items.get(&key.item) else {
            return false;
        };
        match (key.date, &item.series) {
            (None, Some(_)) => {
                let mut out = Vec::new();
                item.instances_in(from, to, &mut out);
                !out.is_empty()
            }
            _ => calendar
                .instance(key)
                .is_some_and(|i| i.start < to && i.end > from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_their_user_and_tamper_evident() {
        let secret = [7u8; 32];
        let token = Token {
            kind: TokenKind::Skip,
            id: 42,
            offset: 10,
        };
        let text = token.encode(&secret, "User-A");
        assert_eq!(Token::decode(&text, &secret, "user-a"), Some(token));
        assert_eq!(Token::decode(&text, &secret, "user-b"), None);
        assert_eq!(Token::decode(&text, &[8u8; 32], "user-a"), None);
        let forged = URL_SAFE_NO_PAD.encode("s.43.10.0000000000000000");
        assert_eq!(Token::decode(&forged, &secret, "user-a"), None);
    }
}
