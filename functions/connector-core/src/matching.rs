//! CRM matching: which participants of a message (or meeting) make it relevant, and why.
//! Built once per run from the tenant's CRM index; matching itself allocates nothing on the
//! usual path (ASCII addresses), because it runs on every listed message.
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

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::domain::{
    AccountRecord, AddressRecord, CrmIndexContent, CrmMatch, CrmRecordKind, MatchReason,
};

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

/// What a domain means to the matcher.
#[derive(Debug)]
enum DomainEntry {
    /// The tenant's own (or the user's own): participants here are colleagues.
    Internal,
    /// Owned by these accounts.
    Account(Box<[AccountRecord]>),
}

/// Why account domains of the index were not used (counts only: operators see these in
/// the run summary without any mail data).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DroppedDomains {
    pub free_mail: u32,
    pub public_suffix: u32,
    pub internal: u32,
}

/// The tenant's CRM index in hash maps, plus what counts as internal.
#[derive(Debug)]
pub struct CrmMatcher {
    addresses: HashMap<Box<str>, Box<[AddressRecord]>>,
    domains: HashMap<Box<str>, DomainEntry>,
    own: Box<[Box<str>]>,
    dropped: DroppedDomains,
}

/// The verdict on one participant.
#[derive(Debug)]
enum Verdict<'m> {
    /// Own address or colleague.
    Ignored,
    NoMatch,
    Match {
        address: Option<&'m [AddressRecord]>,
        account: Option<(&'m str, &'m [AccountRecord])>,
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

        let mut domains: HashMap<Box<str>, DomainEntry> = HashMap::new();
        for domain in &internal {
            domains.insert(domain.as_str().into(), DomainEntry::Internal);
        }
        let mut dropped = DroppedDomains::default();
        for (domain, owners) in &index.domains {
            let domain = domain.trim().trim_end_matches('.').to_lowercase();
            if is_free_mail(&domain) {
                dropped.free_mail += 1;
                continue;
            }
            if is_public_suffix(&domain) {
                dropped.public_suffix += 1;
                continue;
            }
            if suffixes(&domain).any(|suffix| internal.contains(suffix)) {
                dropped.internal += 1;
                continue;
            }
            domains.insert(
                domain.into_boxed_str(),
                DomainEntry::Account(owners.clone().into_boxed_slice()),
            );
        }
        let addresses = index
            .addresses
            .iter()
            .map(|(address, records)| {
                (
                    address.trim().to_lowercase().into_boxed_str(),
                    records.clone().into_boxed_slice(),
                )
            })
            .collect();
        CrmMatcher {
            addresses,
            domains,
            own: own.into_iter().map(String::into_boxed_str).collect(),
            dropped,
        }
    }

    /// Account domains of the index that the rules exclude.
    pub fn dropped_domains(&self) -> DroppedDomains {
        self.dropped
    }

    /// Distinct contact/lead addresses and usable account domains.
    pub fn sizes(&self) -> (usize, usize) {
        let accounts = self
            .domains
            .values()
            .filter(|entry| matches!(entry, DomainEntry::Account(_)))
            .count();
        (self.addresses.len(), accounts)
    }

    fn verdict(&self, lowered: &str) -> Verdict<'_> {
        if lowered.is_empty() || self.own.iter().any(|own| &**own == lowered) {
            return Verdict::Ignored;
        }
        let Some((_, domain)) = lowered.rsplit_once('@') else {
            return Verdict::NoMatch;
        };
        let mut account = None;
        for suffix in suffixes(domain) {
            match self.domains.get_key_value(suffix) {
                Some((_, DomainEntry::Internal)) => return Verdict::Ignored,
                Some((domain, DomainEntry::Account(owners))) => {
                    account = Some((&**domain, &**owners));
                    break;
                }
                None => {}
            }
        }
        let address = self.addresses.get(lowered).map(|records| &**records);
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
            for record in address.unwrap_or_default() {
                found.insert(CrmMatch {
                    participant: lowered.to_owned(),
                    reason: MatchReason::Address,
                    record_kind: Some(record.kind),
                    record_id: Some(record.id.clone()),
                    matched_on: lowered.to_owned(),
                });
            }
            if let Some((domain, owners)) = account {
                for owner in owners {
                    found.insert(CrmMatch {
                        participant: lowered.to_owned(),
                        reason: MatchReason::AccountDomain,
                        record_kind: Some(CrmRecordKind::Account),
                        record_id: Some(owner.id.clone()),
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
        suffixes(domain)
            .any(|suffix| matches!(self.domains.get(suffix), Some(DomainEntry::Internal)))
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
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::CrmIndexStats;

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
