//! CRM matching: which participants of a message (or meeting) make it relevant, and why.
//! The tenant's index is held as a [`CrmMatchIndex`] (flat arenas, built entry by entry as
//! the store pages it in, kept by warm containers); each run wraps it in a [`CrmMatcher`]
//! with the user's notion of internal. Matching itself allocates nothing on the usual path
//! (ASCII addresses), because it runs on every listed message.
//!
//! The rules (issue 5; mail-sync's README states them for operators):
//! - participants are from, sender, to, cc, bcc and reply-to (the caller passes them);
//!   addresses are trimmed and compared case-insensitively;
//! - a participant is **ignored** when it is the connected user's own address, or when its
//!   domain is, or is a subdomain of, one of the tenant's verified domains (or the domain of
//!   the user's own address, unless that is a free-mail domain): colleagues never make mail
//!   relevant, even when the CRM lists them;
//! - otherwise it **matches by address** when it equals a CRM contact's or lead's address
//!   (also at free-mail domains: a lead's gmail address identifies that lead), and **by
//!   account domain** when its domain equals, or is a subdomain of, an account's domain;
//! - account domains never match when they are free-mail or personal domains (the
//!   [`FREE_MAIL_DOMAINS`] list, compared on the domain and its registrable domain), public
//!   suffixes (`co.uk`: the public suffix list, through the `psl` crate), or internal
//!   domains; such entries are dropped when the matcher is built.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;

// foldhash, not std's SipHash: a participant costs up to four hashes (its address and each
// domain suffix), on every listed message. Seeded per process and per index, as std's.
// Lookups are batch work whose timing nobody outside observes, so the minimal
// flooding resistance foldhash claims is enough here.
use foldhash::fast::RandomState;

use crate::domain::{CrmIndexContent, CrmMatch, CrmRecordKind, MatchReason};

/// Free-mail and personal mail domains of the major providers. No Rust crate keeps such a
/// list well (the candidates are unmaintained snapshots), so it is kept here; it only has
/// to catch CRM accounts that were given a consumer domain by mistake, because address
/// matches stay exact. Compared on the domain and on its registrable domain.
pub const FREE_MAIL_DOMAINS: &[&str] = &[
    // Google
    "gmail.com",
    "googlemail.com",
    // Microsoft
    "outlook.com",
    "outlook.fr",
    "outlook.de",
    "outlook.es",
    "outlook.it",
    "outlook.jp",
    "outlook.co.uk",
    "hotmail.com",
    "hotmail.co.uk",
    "hotmail.fr",
    "hotmail.de",
    "hotmail.es",
    "hotmail.it",
    "hotmail.nl",
    "hotmail.be",
    "hotmail.ca",
    "hotmail.com.au",
    "hotmail.com.br",
    "live.com",
    "live.co.uk",
    "live.fr",
    "live.de",
    "live.nl",
    "live.it",
    "live.ca",
    "live.com.au",
    "msn.com",
    "passport.com",
    // Yahoo / AOL
    "yahoo.com",
    "yahoo.co.uk",
    "yahoo.fr",
    "yahoo.de",
    "yahoo.es",
    "yahoo.it",
    "yahoo.ca",
    "yahoo.co.jp",
    "yahoo.co.in",
    "yahoo.com.au",
    "yahoo.com.br",
    "yahoo.com.mx",
    "ymail.com",
    "rocketmail.com",
    "aol.com",
    "aim.com",
    // Apple
    "icloud.com",
    "me.com",
    "mac.com",
    // Privacy-focused and independent providers
    "proton.me",
    "protonmail.com",
    "protonmail.ch",
    "pm.me",
    "tutanota.com",
    "tutanota.de",
    "tuta.io",
    "fastmail.com",
    "fastmail.fm",
    "hey.com",
    "zoho.com",
    "zohomail.com",
    "mail.com",
    "gmx.com",
    "gmx.net",
    "gmx.de",
    "gmx.at",
    "gmx.ch",
    "web.de",
    // Europe: telecom and national providers
    "t-online.de",
    "freenet.de",
    "orange.fr",
    "wanadoo.fr",
    "free.fr",
    "sfr.fr",
    "laposte.net",
    "libero.it",
    "virgilio.it",
    "tiscali.it",
    "alice.it",
    "seznam.cz",
    "wp.pl",
    "o2.pl",
    "interia.pl",
    "onet.pl",
    "btinternet.com",
    "sky.com",
    "virginmedia.com",
    "ntlworld.com",
    "talktalk.net",
    "blueyonder.co.uk",
    "telenet.be",
    "skynet.be",
    "ziggo.nl",
    "kpnmail.nl",
    "bluewin.ch",
    // Russia and Asia
    "yandex.ru",
    "yandex.com",
    "ya.ru",
    "mail.ru",
    "bk.ru",
    "inbox.ru",
    "list.ru",
    "rambler.ru",
    "qq.com",
    "163.com",
    "126.com",
    "sina.com",
    "sohu.com",
    "naver.com",
    "hanmail.net",
    "daum.net",
    "rediffmail.com",
    // Americas and Oceania: ISP mailboxes
    "comcast.net",
    "verizon.net",
    "att.net",
    "sbcglobal.net",
    "bellsouth.net",
    "cox.net",
    "charter.net",
    "earthlink.net",
    "optonline.net",
    "shaw.ca",
    "rogers.com",
    "sympatico.ca",
    "bigpond.com",
    "optusnet.com.au",
    "xtra.co.nz",
    "uol.com.br",
    "bol.com.br",
    "terra.com.br",
];

/// Whether `domain` (lower-case) is a free-mail or personal mail domain.
pub fn is_free_mail(domain: &str) -> bool {
    let set = free_mail_set();
    if set.contains(domain) {
        return true;
    }
    psl::domain_str(domain).is_some_and(|registrable| set.contains(registrable))
}

fn free_mail_set() -> &'static HashSet<&'static str> {
    static SET: std::sync::OnceLock<HashSet<&'static str>> = std::sync::OnceLock::new();
    SET.get_or_init(|| FREE_MAIL_DOMAINS.iter().copied().collect())
}

/// Whether `domain` is itself a public suffix (`com`, `co.uk`, `github.io`): nobody owns
/// it, so it cannot be an account's domain.
pub fn is_public_suffix(domain: &str) -> bool {
    psl::suffix_str(domain).is_some_and(|suffix| suffix == domain)
}

/// Why account domains of the index were not used (counts only: operators see these in
/// the run summary without any mail data).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DroppedDomains {
    pub free_mail: u32,
    pub public_suffix: u32,
    pub internal: u32,
}

/// One CRM record an entry points to: its kind and where its id sits in the id arena.
#[derive(Clone, Copy, Debug)]
struct Record {
    kind: CrmRecordKind,
    id_start: u32,
    id_end: u32,
}

/// Keys (lower-case addresses or domains) in one string arena, each with a run of
/// [`Record`]s, found through an open-addressing table of entry numbers. A warm container
/// keeps this for every tenant it served, so it holds no per-entry allocation: four flat
/// arrays and two strings whatever the index size.
#[derive(Debug, Default)]
struct Entries {
    keys: Box<str>,
    /// End of entry `i`'s key in `keys` (its start is the previous end).
    key_ends: Box<[u32]>,
    /// End of entry `i`'s records in `records`.
    record_ends: Box<[u32]>,
    records: Box<[Record]>,
    /// A power of two of slots, at most half full.
    slots: Box<[Slot]>,
}

/// One slot of [`Entries`]' table: entry number + 1 (0 for empty) and the high half of the
/// key's hash, so that a probe compares keys only when the tags agree: most lookups are of
/// addresses the CRM does not hold, and each key comparison is a trip to the arenas.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    entry: u32,
    tag: u32,
}

/// The high half of a hash (the low bits choose the slot).
fn tag(hash: u64) -> u32 {
    (hash >> 32) as u32
}

impl Entries {
    fn key(&self, entry: usize) -> &str {
        let start = entry
            .checked_sub(1)
            .map_or(0, |previous| self.key_ends[previous] as usize);
        &self.keys[start..self.key_ends[entry] as usize]
    }

    fn records(&self, entry: usize) -> &[Record] {
        let start = entry
            .checked_sub(1)
            .map_or(0, |previous| self.record_ends[previous] as usize);
        &self.records[start..self.record_ends[entry] as usize]
    }

    /// The slot holding `key` (whose hash is `hash`), or the empty slot where it would go.
    fn probe(&self, hash: u64, key: &str) -> usize {
        let mask = self.slots.len() - 1;
        // Truncation intended: the mask keeps the low bits only.
        let mut slot = hash as usize & mask;
        let tag = tag(hash);
        loop {
            match self.slots[slot] {
                Slot { entry: 0, .. } => return slot,
                taken if taken.tag == tag && self.key(taken.entry as usize - 1) == key => {
                    return slot;
                }
                _ => slot = (slot + 1) & mask,
            }
        }
    }

    fn get(&self, hash: u64, key: &str) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let entry = self.slots[self.probe(hash, key)].entry;
        (entry != 0).then(|| entry as usize - 1)
    }

    /// Entries a lookup can reach: a key listed twice is reached through its last listing.
    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        self.slots
            .iter()
            .filter(|slot| slot.entry != 0)
            .map(|slot| slot.entry as usize - 1)
    }
}

/// [`Entries`] while they are appended.
#[derive(Default)]
struct EntriesBuilder {
    keys: String,
    key_ends: Vec<u32>,
    record_ends: Vec<u32>,
    records: Vec<Record>,
}

impl EntriesBuilder {
    fn push<'r>(
        &mut self,
        ids: &mut String,
        key: &str,
        records: impl IntoIterator<Item = (CrmRecordKind, &'r str)>,
    ) {
        self.keys.push_str(key);
        self.key_ends.push(offset(self.keys.len()));
        for (kind, id) in records {
            let id_start = offset(ids.len());
            ids.push_str(id);
            self.records.push(Record {
                kind,
                id_start,
                id_end: offset(ids.len()),
            });
        }
        self.record_ends.push(offset(self.records.len()));
    }

    fn finish(self, hasher: &RandomState) -> Entries {
        let mut entries = Entries {
            keys: self.keys.into_boxed_str(),
            key_ends: self.key_ends.into_boxed_slice(),
            record_ends: self.record_ends.into_boxed_slice(),
            records: self.records.into_boxed_slice(),
            slots: Box::default(),
        };
        let count = entries.key_ends.len();
        if count == 0 {
            return entries;
        }
        entries.slots = vec![Slot::default(); (count * 2).next_power_of_two()].into_boxed_slice();
        for entry in 0..count {
            let key = entries.key(entry);
            let hash = hasher.hash_one(key);
            let slot = entries.probe(hash, key);
            // A later listing of the same key replaces the earlier one, as a map would.
            entries.slots[slot] = Slot {
                entry: offset(entry + 1),
                tag: tag(hash),
            };
        }
        entries
    }
}

/// Arena offsets are u32: an index of 4 GiB of keys or ids is far beyond any CRM.
fn offset(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// The tenant's CRM index in the form matching needs, independent of the user: contact
/// and lead addresses with the kind and id of their records, and usable account domains
/// with their accounts' ids (free-mail and public-suffix domains are dropped here; which
/// domains are internal depends on the user, so [`CrmMatcher`] decides that). What the
/// store keeps besides (account names, lead companies, contacts' accounts) is not needed
/// to match or to explain a match, so it is not held.
#[derive(Debug, Default)]
pub struct CrmMatchIndex {
    hasher: RandomState,
    addresses: Entries,
    domains: Entries,
    ids: Box<str>,
    free_mail: u32,
    public_suffix: u32,
}

/// Builds a [`CrmMatchIndex`] entry by entry, so a store can feed it page by page and
/// drop each page as soon as it is read.
#[derive(Default)]
pub struct CrmMatchIndexBuilder {
    addresses: EntriesBuilder,
    domains: EntriesBuilder,
    ids: String,
    free_mail: u32,
    public_suffix: u32,
}

impl CrmMatchIndexBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A contact/lead address with the records that carry it.
    pub fn add_address<'r>(
        &mut self,
        address: &str,
        records: impl IntoIterator<Item = (CrmRecordKind, &'r str)>,
    ) {
        let address = address.trim().to_lowercase();
        self.addresses.push(&mut self.ids, &address, records);
    }

    /// An account domain with the ids of the accounts owning it.
    pub fn add_domain<'r>(&mut self, domain: &str, account_ids: impl IntoIterator<Item = &'r str>) {
        let domain = domain.trim().trim_end_matches('.').to_lowercase();
        if is_free_mail(&domain) {
            self.free_mail += 1;
            return;
        }
        if is_public_suffix(&domain) {
            self.public_suffix += 1;
            return;
        }
        let owners = account_ids
            .into_iter()
            .map(|id| (CrmRecordKind::Account, id));
        self.domains.push(&mut self.ids, &domain, owners);
    }

    pub fn finish(self) -> CrmMatchIndex {
        let hasher = RandomState::default();
        CrmMatchIndex {
            addresses: self.addresses.finish(&hasher),
            domains: self.domains.finish(&hasher),
            hasher,
            ids: self.ids.into_boxed_str(),
            free_mail: self.free_mail,
            public_suffix: self.public_suffix,
        }
    }
}

impl From<&CrmIndexContent> for CrmMatchIndex {
    fn from(index: &CrmIndexContent) -> Self {
        Self::from_content_where(index, |_| true, |_| true)
    }
}

impl CrmMatchIndex {
    /// The entries of `index` whose address (or domain) the predicate keeps.
    pub fn from_content_where(
        index: &CrmIndexContent,
        keep_address: impl Fn(&str) -> bool,
        keep_domain: impl Fn(&str) -> bool,
    ) -> Self {
        let mut builder = CrmMatchIndexBuilder::new();
        for (address, records) in index.addresses.iter().filter(|(a, _)| keep_address(a)) {
            builder.add_address(
                address,
                records
                    .iter()
                    .map(|record| (record.kind, record.id.as_str())),
            );
        }
        for (domain, owners) in index.domains.iter().filter(|(d, _)| keep_domain(d)) {
            builder.add_domain(domain, owners.iter().map(|owner| owner.id.as_str()));
        }
        builder.finish()
    }
}

/// Two indexes are equal when they hold the same entries with the same records, whatever
/// their hash order (what a store test compares a load against).
impl PartialEq for CrmMatchIndex {
    fn eq(&self, other: &Self) -> bool {
        self.free_mail == other.free_mail
            && self.public_suffix == other.public_suffix
            && self.listing(&self.addresses) == other.listing(&other.addresses)
            && self.listing(&self.domains) == other.listing(&other.domains)
    }
}

impl Eq for CrmMatchIndex {}

impl CrmMatchIndex {
    /// Reachable entries of `entries` with their records, sorted by key.
    fn listing<'m>(
        &'m self,
        entries: &'m Entries,
    ) -> BTreeMap<&'m str, Vec<(CrmRecordKind, &'m str)>> {
        entries
            .live()
            .map(|entry| {
                let records = Records {
                    records: entries.records(entry),
                    ids: &self.ids,
                };
                (entries.key(entry), records.iter().collect())
            })
            .collect()
    }

    /// The contact/lead addresses, in no particular order.
    pub fn address_keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.addresses.live().map(|entry| self.addresses.key(entry))
    }

    /// The account domains (neither free-mail nor public suffixes), in no particular order.
    pub fn domain_keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.domains.live().map(|entry| self.domains.key(entry))
    }

    /// Distinct contact/lead addresses and account domains that are neither free-mail
    /// nor public suffixes.
    pub fn sizes(&self) -> (usize, usize) {
        (self.addresses.live().count(), self.domains.live().count())
    }

    fn address(&self, lowered: &str) -> Option<Records<'_>> {
        let entry = self.addresses.get(self.hasher.hash_one(lowered), lowered)?;
        Some(Records {
            records: self.addresses.records(entry),
            ids: &self.ids,
        })
    }

    /// The account domain `lowered`, whose hash is `hash` (the caller hashes each suffix
    /// once for this and for its internal domains).
    fn domain(&self, hash: u64, lowered: &str) -> Option<(&str, Records<'_>)> {
        let entry = self.domains.get(hash, lowered)?;
        Some((
            self.domains.key(entry),
            Records {
                records: self.domains.records(entry),
                ids: &self.ids,
            },
        ))
    }
}

/// The records of one entry, with the arena their ids live in.
#[derive(Clone, Copy, Debug)]
struct Records<'m> {
    records: &'m [Record],
    ids: &'m str,
}

impl<'m> Records<'m> {
    fn iter(self) -> impl Iterator<Item = (CrmRecordKind, &'m str)> {
        self.records.iter().map(move |record| {
            (
                record.kind,
                &self.ids[record.id_start as usize..record.id_end as usize],
            )
        })
    }
}

/// The tenant's [`CrmMatchIndex`] seen by one user: what counts as internal is the
/// tenant's verified domains and the user's own domain.
#[derive(Debug)]
pub struct CrmMatcher {
    index: Arc<CrmMatchIndex>,
    /// Keyed with the index's hasher, so each suffix of a participant is hashed once.
    internal: Entries,
    own: Box<[Box<str>]>,
    dropped: DroppedDomains,
    accounts: usize,
}

/// The verdict on one participant.
#[derive(Debug)]
enum Verdict<'m> {
    /// Own address or colleague.
    Ignored,
    NoMatch,
    Match {
        address: Option<Records<'m>>,
        account: Option<(&'m str, Records<'m>)>,
    },
}

/// An address lower-cased into a stack buffer when it is ASCII and short, else on the heap.
struct Lowered {
    buf: [u8; 256],
    len: usize,
    heap: Option<String>,
}

impl Lowered {
    fn new(address: &str) -> Self {
        let trimmed = address.trim();
        let mut lowered = Lowered {
            buf: [0; 256],
            len: 0,
            heap: None,
        };
        if trimmed.is_ascii() && trimmed.len() <= lowered.buf.len() {
            for (slot, byte) in lowered.buf.iter_mut().zip(trimmed.bytes()) {
                *slot = byte.to_ascii_lowercase();
            }
            lowered.len = trimmed.len();
        } else {
            lowered.heap = Some(trimmed.to_lowercase());
        }
        lowered
    }

    fn as_str(&self) -> &str {
        match &self.heap {
            Some(heap) => heap,
            // ASCII in, ASCII out: always valid UTF-8.
            None => std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default(),
        }
    }
}

impl CrmMatcher {
    /// Builds the matcher from the tenant's index, its verified domains and the connected
    /// user's own addresses (UPN, primary SMTP address).
    pub fn new<'a>(
        index: &CrmIndexContent,
        tenant_domains: impl IntoIterator<Item = &'a str>,
        own_addresses: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        Self::with_index(
            Arc::new(CrmMatchIndex::from(index)),
            tenant_domains,
            own_addresses,
        )
    }

    /// Builds the matcher on an index the container already holds (shared, not copied).
    pub fn with_index<'a>(
        index: Arc<CrmMatchIndex>,
        tenant_domains: impl IntoIterator<Item = &'a str>,
        own_addresses: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let own: BTreeSet<String> = own_addresses
            .into_iter()
            .map(|address| address.trim().to_lowercase())
            .filter(|address| address.contains('@'))
            .collect();
        let mut internal: BTreeSet<String> = tenant_domains
            .into_iter()
            .map(|domain| domain.trim().trim_end_matches('.').to_lowercase())
            .filter(|domain| !domain.is_empty())
            .collect();
        // Tenants whose verified domains we never learned still have colleagues at the
        // user's own domain.
        for address in &own {
            if let Some((_, domain)) = address.rsplit_once('@')
                && !is_free_mail(domain)
            {
                internal.insert(domain.to_owned());
            }
        }
        let internal = {
            let mut builder = EntriesBuilder::default();
            let mut no_ids = String::new();
            for domain in &internal {
                builder.push(&mut no_ids, domain, []);
            }
            builder.finish(&index.hasher)
        };
        // An account domain at or under an internal domain never matches (the verdict
        // stops at the internal suffix); counted here for the run summary.
        let mut dropped = DroppedDomains {
            free_mail: index.free_mail,
            public_suffix: index.public_suffix,
            internal: 0,
        };
        let mut accounts = 0;
        for entry in index.domains.live() {
            if suffixes(index.domains.key(entry)).any(|suffix| {
                internal
                    .get(index.hasher.hash_one(suffix), suffix)
                    .is_some()
            }) {
                dropped.internal += 1;
            } else {
                accounts += 1;
            }
        }
        CrmMatcher {
            index,
            internal,
            own: own.into_iter().map(String::into_boxed_str).collect(),
            dropped,
            accounts,
        }
    }

    /// A matcher on another index with this one's rules: the same internal domains and
    /// own addresses (the CRM catch-up matches against the additions alone this way).
    pub fn with_same_rules(&self, index: Arc<CrmMatchIndex>) -> CrmMatcher {
        let internal: Vec<&str> = self
            .internal
            .live()
            .map(|entry| self.internal.key(entry))
            .collect();
        CrmMatcher::with_index(index, internal, self.own.iter().map(|own| &**own))
    }

    /// Account domains of the index that the rules exclude.
    pub fn dropped_domains(&self) -> DroppedDomains {
        self.dropped
    }

    /// Distinct contact/lead addresses and usable account domains.
    pub fn sizes(&self) -> (usize, usize) {
        (self.index.sizes().0, self.accounts)
    }

    fn verdict(&self, lowered: &str) -> Verdict<'_> {
        if lowered.is_empty() || self.own.iter().any(|own| &**own == lowered) {
            return Verdict::Ignored;
        }
        let Some((_, domain)) = lowered.rsplit_once('@') else {
            return Verdict::NoMatch;
        };
        // Every suffix is checked for internal even after an account domain is found: an
        // account domain under an internal one must not make a colleague match.
        let mut account = None;
        for suffix in suffixes(domain) {
            let hash = self.index.hasher.hash_one(suffix);
            if self.internal.get(hash, suffix).is_some() {
                return Verdict::Ignored;
            }
            if account.is_none() {
                account = self.index.domain(hash, suffix);
            }
        }
        let address = self.index.address(lowered);
        if address.is_none() && account.is_none() {
            Verdict::NoMatch
        } else {
            Verdict::Match { address, account }
        }
    }

    /// Whether any participant matches. The hot path of filtering: no allocation for
    /// ASCII addresses up to 256 bytes.
    pub fn matches<'p>(&self, participants: impl IntoIterator<Item = &'p str>) -> bool {
        participants.into_iter().any(|participant| {
            let lowered = Lowered::new(participant);
            matches!(self.verdict(lowered.as_str()), Verdict::Match { .. })
        })
    }

    /// Every reason the participants match, deduplicated and sorted (what is stored with
    /// an imported activity).
    pub fn explain<'p>(&self, participants: impl IntoIterator<Item = &'p str>) -> Vec<CrmMatch> {
        let mut found = BTreeSet::new();
        for participant in participants {
            let lowered = Lowered::new(participant);
            let lowered = lowered.as_str();
            let Verdict::Match { address, account } = self.verdict(lowered) else {
                continue;
            };
            for (kind, id) in address.into_iter().flat_map(Records::iter) {
                found.insert(CrmMatch {
                    participant: lowered.to_owned(),
                    reason: MatchReason::Address,
                    record_kind: Some(kind),
                    record_id: Some(id.to_owned()),
                    matched_on: lowered.to_owned(),
                });
            }
            if let Some((domain, owners)) = account {
                for (kind, id) in owners.iter() {
                    found.insert(CrmMatch {
                        participant: lowered.to_owned(),
                        reason: MatchReason::AccountDomain,
                        record_kind: Some(kind),
                        record_id: Some(id.to_owned()),
                        matched_on: domain.to_owned(),
                    });
                }
            }
        }
        found.into_iter().collect()
    }

    /// Whether the address is internal (a colleague or the user): calendar-sync's
    /// "every participant is internal" rule uses the same notion.
    pub fn is_internal(&self, address: &str) -> bool {
        let lowered = Lowered::new(address);
        let lowered = lowered.as_str();
        if self.own.iter().any(|own| &**own == lowered) {
            return true;
        }
        let Some((_, domain)) = lowered.rsplit_once('@') else {
            return false;
        };
        suffixes(domain).any(|suffix| {
            self.internal
                .get(self.index.hasher.hash_one(suffix), suffix)
                .is_some()
        })
    }
}

/// The domain and each parent with at least two labels, most specific first.
fn suffixes(domain: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(domain);
    std::iter::from_fn(move || {
        let current = next?;
        next = current
            .split_once('.')
            .map(|(_, parent)| parent)
            .filter(|parent| parent.contains('.'));
        current.contains('.').then_some(current)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AccountRecord, AddressRecord, CrmIndexStats};

    fn index() -> CrmIndexContent {
        let mut addresses = BTreeMap::new();
        addresses.insert(
            "jane@acme.com".to_owned(),
            vec![AddressRecord {
                kind: CrmRecordKind::Contact,
                id: "003A".into(),
                account_id: Some("001A".into()),
                company: None,
            }],
        );
        addresses.insert(
            "bob.lead@gmail.com".to_owned(),
            vec![AddressRecord {
                kind: CrmRecordKind::Lead,
                id: "00Q1".into(),
                account_id: None,
                company: Some("Initech".into()),
            }],
        );
        addresses.insert(
            "megan@contoso.com".to_owned(),
            vec![AddressRecord {
                kind: CrmRecordKind::Contact,
                id: "003C".into(),
                account_id: None,
                company: None,
            }],
        );
        let mut domains = BTreeMap::new();
        for (domain, id) in [
            ("acme.com", "001A"),
            ("globex.co.uk", "001G"),
            ("gmail.com", "001X"),
            ("co.uk", "001Y"),
            ("sales.contoso.com", "001Z"),
        ] {
            domains.insert(
                domain.to_owned(),
                vec![AccountRecord {
                    id: id.into(),
                    name: id.into(),
                }],
            );
        }
        CrmIndexContent {
            addresses,
            domains,
            oldest_open_opportunity: None,
            stats: CrmIndexStats::default(),
            content_hash: String::new(),
        }
    }

    fn matcher() -> CrmMatcher {
        CrmMatcher::new(
            &index(),
            ["contoso.com"],
            ["adele@contoso.com", "Adele@Contoso.onmicrosoft.com"],
        )
    }

    #[test]
    fn rules() {
        let m = matcher();
        assert_eq!(
            m.dropped_domains(),
            DroppedDomains {
                free_mail: 1,
                public_suffix: 1,
                internal: 1
            }
        );
        // Exact contact and lead addresses, any case, trimmed.
        assert!(m.matches([" JANE@Acme.com "]));
        assert!(m.matches(["bob.lead@gmail.com"]));
        // Domain and subdomain of an account domain; not a parent, not a lookalike.
        assert!(m.matches(["someone@acme.com"]));
        assert!(m.matches(["x@eu.mail.acme.com"]));
        assert!(m.matches(["x@london.globex.co.uk"]));
        assert!(!m.matches(["x@notacme.com"]));
        assert!(!m.matches(["x@acme.com.evil.net"]));
        // Never through free-mail, public suffix or internal account domains.
        assert!(!m.matches(["someone.else@gmail.com"]));
        assert!(!m.matches(["x@other.co.uk"]));
        assert!(!m.matches(["x@sales.contoso.com"]));
        // Colleagues (even when the CRM lists them) and the user never match.
        assert!(!m.matches(["megan@contoso.com"]));
        assert!(!m.matches(["adele@contoso.com"]));
        assert!(!m.matches(["adele@contoso.onmicrosoft.com"]));
        assert!(m.is_internal("colleague@contoso.onmicrosoft.com"));
        assert!(!m.is_internal("jane@acme.com"));
        // Garbage is a miss, not a panic.
        assert!(!m.matches(["", "not-an-address", "@", "a@"]));
    }

    #[test]
    fn explain_lists_every_reason_once() {
        let m = matcher();
        let reasons = m.explain([
            "Jane@acme.com",
            "jane@acme.com",
            "x@eu.acme.com",
            "adele@contoso.com",
        ]);
        let summary: Vec<(String, MatchReason, String)> = reasons
            .iter()
            .map(|r| (r.participant.clone(), r.reason, r.matched_on.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "jane@acme.com".into(),
                    MatchReason::Address,
                    "jane@acme.com".into()
                ),
                (
                    "jane@acme.com".into(),
                    MatchReason::AccountDomain,
                    "acme.com".into()
                ),
                (
                    "x@eu.acme.com".into(),
                    MatchReason::AccountDomain,
                    "acme.com".into()
                ),
            ]
        );
        assert_eq!(reasons[0].record_id.as_deref(), Some("003A"));
        assert!(m.explain(["nobody@example.org"]).is_empty());
    }

    #[test]
    fn non_ascii_and_long_addresses_take_the_slow_path() {
        let m = matcher();
        assert!(m.matches(["JÖRG@acme.com"]));
        let long = format!("{}@acme.com", "a".repeat(300));
        assert!(m.matches([long.as_str()]));
    }

    #[test]
    fn internal_domains_win_over_account_domains_at_any_depth() {
        let m = CrmMatcher::new(&index(), ["eu.acme.com"], ["adele@contoso.com"]);
        // acme.com stays an account domain, but its eu. branch is the tenant's own.
        assert_eq!(m.dropped_domains().internal, 1);
        assert!(m.matches(["x@acme.com"]));
        assert!(m.matches(["x@us.acme.com"]));
        assert!(!m.matches(["x@eu.acme.com"]));
        assert!(!m.matches(["x@mail.eu.acme.com"]));
        assert!(m.is_internal("x@mail.eu.acme.com"));
        // An account domain under the user's own domain is dropped, and so are its subdomains.
        assert!(!m.matches(["x@sales.contoso.com", "x@eu.sales.contoso.com"]));
        assert_eq!(m.sizes(), (3, 2));
    }

    #[test]
    fn compact_index_finds_every_key_of_a_large_index() {
        let mut content = index();
        for n in 0..10_000 {
            content.addresses.insert(
                format!("person{n}@company{}.com", n % 2_000),
                vec![AddressRecord {
                    kind: CrmRecordKind::Lead,
                    id: format!("00Q{n}"),
                    account_id: None,
                    company: None,
                }],
            );
        }
        for n in 0..2_000 {
            content.domains.insert(
                format!("company{n}.com"),
                vec![
                    AccountRecord {
                        id: format!("001{n}"),
                        name: String::new(),
                    },
                    AccountRecord {
                        id: format!("001{n}b"),
                        name: String::new(),
                    },
                ],
            );
        }
        let m = CrmMatcher::new(&content, ["contoso.com"], ["adele@contoso.com"]);
        assert_eq!(m.sizes(), (10_003, 2_002));
        let reasons = m.explain(["Person1234@company1234.com"]);
        let ids: Vec<(MatchReason, Option<&str>, &str)> = reasons
            .iter()
            .map(|r| (r.reason, r.record_id.as_deref(), r.matched_on.as_str()))
            .collect();
        assert_eq!(
            ids,
            vec![
                (
                    MatchReason::Address,
                    Some("00Q1234"),
                    "person1234@company1234.com"
                ),
                (
                    MatchReason::AccountDomain,
                    Some("0011234"),
                    "company1234.com"
                ),
                (
                    MatchReason::AccountDomain,
                    Some("0011234b"),
                    "company1234.com"
                ),
            ]
        );
        for n in (0..10_000).step_by(7) {
            let address = format!("person{n}@company{}.com", n % 2_000);
            assert_eq!(m.explain([address.as_str()]).len(), 3, "{address}");
        }
        assert!(!m.matches(["person1@company2000.com", "x@company20000.com"]));
    }

    #[test]
    fn built_page_by_page_like_a_map() {
        let mut builder = CrmMatchIndexBuilder::new();
        builder.add_address(" Jane@Acme.com", [(CrmRecordKind::Contact, "003A")]);
        // Listed again after normalisation: the later listing wins, as in a map.
        builder.add_address("jane@acme.com", [(CrmRecordKind::Lead, "00Q9")]);
        builder.add_address("nobody@initech.com", []);
        builder.add_domain("Acme.com.", ["001A"]);
        builder.add_domain("gmail.com", ["001X"]);
        builder.add_domain("co.uk", ["001Y"]);
        let index = Arc::new(builder.finish());
        assert_eq!(index.sizes(), (2, 1));
        let mut same = CrmMatchIndexBuilder::new();
        same.add_domain("acme.com", ["001A"]);
        same.add_domain("co.uk", ["001Y"]);
        same.add_domain("gmail.com", ["001X"]);
        same.add_address("nobody@initech.com", []);
        same.add_address("jane@acme.com", [(CrmRecordKind::Lead, "00Q9")]);
        assert_eq!(*index, same.finish());
        let mut other_id = CrmMatchIndexBuilder::new();
        other_id.add_domain("acme.com", ["001B"]);
        other_id.add_domain("co.uk", ["001Y"]);
        other_id.add_domain("gmail.com", ["001X"]);
        other_id.add_address("nobody@initech.com", []);
        other_id.add_address("jane@acme.com", [(CrmRecordKind::Lead, "00Q9")]);
        assert_ne!(*index, other_id.finish());
        let m = CrmMatcher::with_index(index.clone(), [], ["adele@contoso.com"]);
        assert_eq!(
            m.dropped_domains(),
            DroppedDomains {
                free_mail: 1,
                public_suffix: 1,
                internal: 0
            }
        );
        let reasons = m.explain(["jane@acme.com"]);
        assert_eq!(reasons[0].record_kind, Some(CrmRecordKind::Lead));
        assert_eq!(reasons[0].record_id.as_deref(), Some("00Q9"));
        assert_eq!(reasons.len(), 2);
        // A listed address without records still makes the message relevant.
        let other = CrmMatcher::with_index(index, [], []);
        assert!(other.matches(["nobody@initech.com"]));
        let empty = CrmMatcher::with_index(Arc::default(), ["contoso.com"], []);
        assert!(!empty.matches(["jane@acme.com"]));
        assert!(empty.is_internal("x@contoso.com"));
    }

    #[test]
    fn free_mail_and_suffixes() {
        assert!(is_free_mail("gmail.com"));
        assert!(is_free_mail("yahoo.co.uk"));
        assert!(!is_free_mail("acme.com"));
        assert!(is_public_suffix("co.uk"));
        assert!(is_public_suffix("com"));
        assert!(!is_public_suffix("acme.co.uk"));
        let all: Vec<&str> = suffixes("a.b.example.com").collect();
        assert_eq!(all, ["a.b.example.com", "b.example.com", "example.com"]);
        assert_eq!(suffixes("localhost").count(), 0);
    }
}
