//! Seeded mailbox generation: the `generate` entries of a world (`{user, folder, messages, seed, crmMatchRatio}`)
//! become large, realistic mailboxes for delta tests and benchmarks, and the CRM snapshot that matches them.
//!
//! Everything is a pure function of the seed (plus "now" for the dates, which are offsets back from it), so a
//! benchmark or a test can call [`generate`] and [`crm_snapshot`] with the same seed and know exactly which
//! messages the connector must keep. Messages are stored compactly ([`GeneratedMessage`], ~80 bytes) and rendered
//! to Graph JSON only when served: a 100,000-message mailbox costs a few MB, not hundreds.
//!
//! CRM address space (the contract with tests and benchmarks):
//! - accounts `0..CRM_ACCOUNTS`: domain `crm-account-{n}.example`; the snapshot lists `CRM_CONTACTS_PER_ACCOUNT`
//!   named contacts per account, but any address at an account domain is a match (domain match);
//! - leads `0..CRM_LEADS`: exact addresses `lead{k}.{first}@freemail-{k % 5}.example.org`; other addresses at the
//!   same `freemail-*` domains are NOT leads, so a matcher must compare lead addresses exactly;
//! - never matching: the owner's own domain (colleagues), `vendor-{n}.example.net`, and non-lead freemail addresses.
//!
//! A message counts as a CRM match ([`GeneratedMessage::crm_match`]) when one of its participants (from, sender,
//! to, cc, replyTo) is at an account domain or is a lead address; `crmMatchRatio` of the messages are drawn that way.

use std::fmt::Write as _;

use time::OffsetDateTime;

/// Number of CRM accounts in every snapshot; account `n` owns the domain `crm-account-{n}.example`.
pub const CRM_ACCOUNTS: u32 = 200;
/// Named contacts listed per account in the snapshot.
pub const CRM_CONTACTS_PER_ACCOUNT: u32 = 3;
/// Number of CRM leads (exact-address matches at free-mail domains).
pub const CRM_LEADS: u32 = 100;

/// Generated mail spans the last ~12 months.
const SPAN_SECONDS: i64 = 365 * 24 * 3600;

const FIRST_NAMES: [&str; 40] = [
    "Adele",
    "Alex",
    "Allan",
    "Ben",
    "Carla",
    "Chris",
    "Dana",
    "Diego",
    "Elena",
    "Emily",
    "Farah",
    "Grady",
    "Hana",
    "Henrietta",
    "Irvin",
    "Isaiah",
    "Jana",
    "Johanna",
    "Joni",
    "Kenji",
    "Lee",
    "Lidia",
    "Lynne",
    "Megan",
    "Miriam",
    "Nestor",
    "Nora",
    "Omar",
    "Patti",
    "Pradeep",
    "Quinn",
    "Raul",
    "Samantha",
    "Sara",
    "Tomas",
    "Uma",
    "Victor",
    "Wen",
    "Yara",
    "Zoe",
];
const LAST_NAMES: [&str; 40] = [
    "Adams", "Bauer", "Booth", "Chen", "Cruz", "Diaz", "Evans", "Fischer", "Garcia", "Gonzalez",
    "Hyde", "Ito", "Jensen", "Khan", "Kowalski", "Larsen", "Lopez", "Martin", "Meyer", "Moreau",
    "Nakamura", "Novak", "Olsen", "Patel", "Quinn", "Rossi", "Sanchez", "Schmidt", "Sharp",
    "Silva", "Swope", "Tanaka", "Ueda", "Vance", "Wagner", "Walsh", "Welch", "Wilber", "Young",
    "Zhang",
];
const COMPANY_WORDS: [&str; 24] = [
    "Alpine",
    "Blue Yonder",
    "Contoso",
    "Coho",
    "Fabrikam",
    "Fourth Coffee",
    "Graphic Design",
    "Humongous",
    "Litware",
    "Lucerne",
    "Margie's",
    "Nod",
    "Northwind",
    "Proseware",
    "Relecloud",
    "Southridge",
    "Tailspin",
    "Trey",
    "Wide World",
    "Wingtip",
    "Woodgrove",
    "Adventure Works",
    "Consolidated",
    "Datum",
];
const TOPICS: [&str; 24] = [
    "renewal",
    "pricing proposal",
    "onboarding plan",
    "quarterly review",
    "contract redlines",
    "security review",
    "pilot results",
    "invoice",
    "roadmap",
    "support escalation",
    "kick-off",
    "procurement questions",
    "implementation timeline",
    "reference call",
    "license true-up",
    "demo follow-up",
    "budget approval",
    "statement of work",
    "data migration",
    "training schedule",
    "integration scope",
    "SLA discussion",
    "expansion options",
    "executive briefing",
];
const SUBJECT_FORMS: [&str; 8] = [
    "{topic}",
    "Re: {topic}",
    "RE: {company} {topic}",
    "Fwd: {topic}",
    "{company}: {topic}",
    "Question about the {topic}",
    "Following up on the {topic}",
    "Re: Re: {company} {topic}",
];
const INTERNAL_TOPICS: [&str; 12] = [
    "Team lunch",
    "Weekly status",
    "Expense report",
    "Offsite agenda",
    "Build is green again",
    "Holiday hours update",
    "New hire onboarding",
    "Parking garage closure",
    "All-hands notes",
    "Laptop refresh",
    "Planning poker",
    "Quarterly goals",
];
const SENTENCES: [&str; 20] = [
    "Thanks for the quick turnaround on this.",
    "I have attached the latest version for your review.",
    "Could you confirm the numbers before Friday?",
    "Our legal team had a few comments on section 4.",
    "Let me know if a call next week works for you.",
    "We are aligned on scope; timing is the open question.",
    "The pilot went well and the team is keen to expand.",
    "Please loop in procurement so we can move forward.",
    "I will share the updated deck after the meeting.",
    "Budget for the next quarter has been approved.",
    "Happy to walk you through the details in person.",
    "The integration tests passed on the staging tenant.",
    "We need a decision on the rollout plan by month end.",
    "Adding my colleague who owns the technical questions.",
    "Here is a summary of what we agreed on the call.",
    "Can we move our sync to Thursday afternoon?",
    "The invoice reflects the discount we discussed.",
    "Looking forward to working together on this.",
    "I am out of office next week with limited access to email.",
    "Best regards, and thanks again for your time.",
];

/// SplitMix64: tiny, fast and stable across Rust and crate versions (a seed must mean the same mailbox forever).
#[derive(Debug, Clone)]
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> SeededRng {
        SeededRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is irrelevant at these sizes.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn mix(a: u64, b: u64) -> u64 {
    SeededRng::new(a ^ b.wrapping_mul(0xD6E8_FEB8_6659_FD93)).next_u64()
}

/// A message participant, packed: names and addresses are derived from the seed at render time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Party {
    /// The mailbox owner.
    Owner,
    /// A colleague at the owner's domain.
    Colleague(u16),
    /// Someone at CRM account `account` (a domain match); `person < CRM_CONTACTS_PER_ACCOUNT` is a listed contact.
    CrmAccount { account: u16, person: u16 },
    /// A CRM lead (exact-address match).
    Lead(u16),
    /// Someone at a vendor domain that no CRM knows.
    Vendor { domain: u16, person: u16 },
    /// A non-lead address at a free-mail domain (same domains as the leads, different addresses).
    Freemail { domain: u8, person: u16 },
}

/// The owner's identity, needed to render the owner and colleague addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub display_name: String,
    pub address: String,
}

impl Owner {
    pub fn domain(&self) -> &str {
        self.address
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or("contoso.com")
    }
}

/// An email address with a display name, as Graph's `emailAddress`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub name: String,
    pub address: String,
}

fn person_name(seed: u64, salt: u64, index: u64) -> (&'static str, &'static str) {
    let h = mix(seed ^ salt, index);
    (
        FIRST_NAMES[(h % 40) as usize],
        LAST_NAMES[((h >> 16) % 40) as usize],
    )
}

/// Address of a listed or unlisted person at a CRM account.
fn crm_person(seed: u64, account: u32, person: u32) -> Address {
    let (first, last) = person_name(seed, 0xC0, (u64::from(account) << 16) | u64::from(person));
    Address {
        name: format!("{first} {last}"),
        address: format!(
            "{}.{}{person}@crm-account-{account}.example",
            first.to_lowercase(),
            last.to_lowercase()
        ),
    }
}

fn lead_address(seed: u64, lead: u32) -> Address {
    let (first, last) = person_name(seed, 0x1EAD, u64::from(lead));
    Address {
        name: format!("{first} {last}"),
        address: format!(
            "lead{lead}.{}@freemail-{}.example.org",
            first.to_lowercase(),
            lead % 5
        ),
    }
}

/// The CRM that the generated mailboxes of `seed` were drawn against.
#[derive(Debug, Clone, PartialEq)]
pub struct CrmSnapshot {
    pub accounts: Vec<CrmAccount>,
    /// Lead addresses (lowercase), matched exactly.
    pub leads: Vec<Address>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CrmAccount {
    pub name: String,
    /// Lowercase domain; any participant at it matches.
    pub domain: String,
    pub contacts: Vec<Address>,
}

impl CrmSnapshot {
    /// Whether `address` is a CRM participant: at an account domain, or exactly a lead address.
    pub fn matches(&self, address: &str) -> bool {
        let address = address.to_ascii_lowercase();
        let Some((_, domain)) = address.rsplit_once('@') else {
            return false;
        };
        self.accounts.iter().any(|a| a.domain == domain)
            || self.leads.iter().any(|l| l.address == address)
    }
}

/// The CRM snapshot for a seed: `CRM_ACCOUNTS` accounts with their domains and listed contacts, and `CRM_LEADS`
/// leads. It does not depend on the mailbox size, so one snapshot serves every generated mailbox of that seed.
pub fn crm_snapshot(seed: u64) -> CrmSnapshot {
    let accounts = (0..CRM_ACCOUNTS)
        .map(|n| CrmAccount {
            name: format!(
                "{} {n}",
                COMPANY_WORDS[(mix(seed, u64::from(n)) % 24) as usize]
            ),
            domain: format!("crm-account-{n}.example"),
            contacts: (0..CRM_CONTACTS_PER_ACCOUNT)
                .map(|p| crm_person(seed, n, p))
                .collect(),
        })
        .collect();
    let leads = (0..CRM_LEADS).map(|k| lead_address(seed, k)).collect();
    CrmSnapshot { accounts, leads }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeneratedKind {
    Mail,
    /// An `eventMessageRequest` (meeting request) in the folder.
    MeetingRequest,
    /// A draft: lives in the drafts folder whatever folder the spec names.
    Draft,
}

/// One generated message in compact form. Text (subject, body) is derived from `text_seed` when rendered.
#[derive(Debug, Clone)]
pub struct GeneratedMessage {
    pub ordinal: u32,
    pub kind: GeneratedKind,
    /// Unix seconds.
    pub received: i64,
    pub text_seed: u64,
    pub from: Party,
    pub to: [Option<Party>; 3],
    pub cc: [Option<Party>; 2],
    pub is_read: bool,
    pub importance_high: bool,
    pub has_attachments: bool,
    pub crm_match: bool,
    pub conversation: u32,
    /// The seed of the generate entry (names of people are derived from it).
    pub seed: u64,
}

/// What to generate (mirrors a world `generate` entry, with the folder resolved).
#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub seed: u64,
    pub messages: u64,
    pub crm_match_ratio: f64,
    /// Well-known name of the target folder, lowercase (`inbox`, `sentitems`, ...), or a display name.
    pub folder: String,
    pub now: OffsetDateTime,
}

/// Generate the messages of one `generate` entry, oldest first: exactly `messages` for the folder, plus 2 % drafts
/// (kind `Draft`, outside sent items) that belong in the drafts folder.
pub fn generate(params: &GenerateParams) -> Vec<GeneratedMessage> {
    let now = params.now.unix_timestamp();
    let outbound_folder = params.folder.eq_ignore_ascii_case("sentitems");
    let inbound_folder = params.folder.eq_ignore_ascii_case("inbox");
    let ratio = params.crm_match_ratio.clamp(0.0, 1.0);
    let mut rng = SeededRng::new(params.seed ^ 0x005E_ED0F_3A11);
    let count = params.messages.min(u64::from(u32::MAX / 2)) as u32;
    // The folder gets exactly `messages`; drafts (2 % more) go to the drafts folder on top.
    let drafts = if outbound_folder { 0 } else { count / 50 };
    let mut out = Vec::with_capacity((count + drafts) as usize);
    for ordinal in 0..count + drafts {
        let crm_match = rng.unit() < ratio;
        let roll = rng.below(100);
        let kind = if ordinal >= count {
            GeneratedKind::Draft
        } else if roll < 3 {
            GeneratedKind::MeetingRequest
        } else {
            GeneratedKind::Mail
        };
        let outbound = kind == GeneratedKind::Draft
            || outbound_folder
            || (!inbound_folder && kind == GeneratedKind::Mail && rng.below(5) == 0);
        let mut others = [None; 5];
        let n_to = 1 + rng.below(3) as usize;
        let n_cc = rng.below(3) as usize;
        for slot in others.iter_mut().take(n_to + n_cc) {
            *slot = Some(non_crm_party(&mut rng));
        }
        let counterpart = if crm_match {
            crm_party(&mut rng)
        } else {
            non_crm_party(&mut rng)
        };
        let mut to = [None; 3];
        to[1..n_to].copy_from_slice(&others[1..n_to]);
        let mut cc = [None; 2];
        cc[..n_cc].copy_from_slice(&others[n_to..n_to + n_cc]);
        // Outbound mail goes from the owner to the counterpart; inbound mail comes from the counterpart, with the
        // owner always a direct recipient.
        let from = if outbound {
            to[0] = Some(counterpart);
            Party::Owner
        } else {
            to[0] = Some(Party::Owner);
            counterpart
        };
        let age = rng.below(SPAN_SECONDS as u64) as i64 + 60;
        out.push(GeneratedMessage {
            ordinal,
            kind,
            received: now - age,
            text_seed: rng.next_u64(),
            from,
            to,
            cc,
            is_read: rng.below(10) < 7 || outbound,
            importance_high: rng.below(20) == 0,
            has_attachments: rng.below(8) == 0,
            crm_match,
            conversation: rng.below(u64::from(count.max(4) / 3 + 1)) as u32,
            seed: params.seed,
        });
    }
    out.sort_by_key(|m| (m.received, m.ordinal));
    out
}

fn crm_party(rng: &mut SeededRng) -> Party {
    if rng.below(10) < 7 {
        Party::CrmAccount {
            account: rng.below(u64::from(CRM_ACCOUNTS)) as u16,
            person: rng.below(8) as u16,
        }
    } else {
        Party::Lead(rng.below(u64::from(CRM_LEADS)) as u16)
    }
}

fn non_crm_party(rng: &mut SeededRng) -> Party {
    match rng.below(10) {
        0..=3 => Party::Colleague(rng.below(300) as u16),
        4..=7 => Party::Vendor {
            domain: rng.below(500) as u16,
            person: rng.below(50) as u16,
        },
        _ => Party::Freemail {
            domain: rng.below(5) as u8,
            person: rng.below(2000) as u16,
        },
    }
}

impl GeneratedMessage {
    pub fn address(&self, party: Party, owner: &Owner) -> Address {
        let seed = self.seed;
        match party {
            Party::Owner => Address {
                name: owner.display_name.clone(),
                address: owner.address.clone(),
            },
            Party::Colleague(i) => {
                let (first, last) = person_name(seed, 0xC011, u64::from(i));
                Address {
                    name: format!("{first} {last}"),
                    address: format!(
                        "{}.{}{i}@{}",
                        first.to_lowercase(),
                        last.to_lowercase(),
                        owner.domain()
                    ),
                }
            }
            Party::CrmAccount { account, person } => {
                crm_person(seed, u32::from(account), u32::from(person))
            }
            Party::Lead(k) => lead_address(seed, u32::from(k)),
            Party::Vendor { domain, person } => {
                let (first, last) =
                    person_name(seed, 0x7E4D, (u64::from(domain) << 16) | u64::from(person));
                Address {
                    name: format!("{first} {last}"),
                    address: format!(
                        "{}.{}@vendor-{domain}.example.net",
                        first.to_lowercase(),
                        last.to_lowercase()
                    ),
                }
            }
            Party::Freemail { domain, person } => {
                let (first, last) = person_name(seed, 0xF4EE, u64::from(person));
                Address {
                    name: format!("{first} {last}"),
                    address: format!(
                        "{}{}{person}@freemail-{domain}.example.org",
                        first.to_lowercase(),
                        last[..1].to_lowercase()
                    ),
                }
            }
        }
    }

    /// Every participant address (from, sender, to, cc, replyTo), owner included.
    pub fn participants(&self, owner: &Owner) -> Vec<Address> {
        let mut out = vec![self.address(self.from, owner)];
        out.extend(
            self.to
                .iter()
                .chain(self.cc.iter())
                .flatten()
                .map(|p| self.address(*p, owner)),
        );
        out
    }

    fn company(&self) -> String {
        let party = std::iter::once(self.from)
            .chain(self.to.iter().flatten().copied())
            .find(|p| matches!(p, Party::CrmAccount { .. } | Party::Vendor { .. }));
        match party {
            Some(Party::CrmAccount { account, .. }) => {
                format!(
                    "{} {account}",
                    COMPANY_WORDS[(mix(self.seed, u64::from(account)) % 24) as usize]
                )
            }
            Some(Party::Vendor { domain, .. }) => {
                COMPANY_WORDS[usize::from(domain) % 24].to_owned()
            }
            _ => "Contoso".to_owned(),
        }
    }

    pub fn subject(&self) -> String {
        let mut rng = SeededRng::new(self.text_seed);
        let external = self.crm_match || self.participants_are_external();
        if self.kind == GeneratedKind::MeetingRequest {
            let topic = TOPICS[rng.below(24) as usize];
            return format!(
                "{} {topic}",
                if external {
                    self.company()
                } else {
                    "Team".to_owned()
                }
            );
        }
        if !external {
            return INTERNAL_TOPICS[rng.below(12) as usize].to_owned();
        }
        let form = SUBJECT_FORMS[rng.below(8) as usize];
        let topic = TOPICS[rng.below(24) as usize];
        form.replace("{topic}", topic)
            .replace("{company}", &self.company())
    }

    fn participants_are_external(&self) -> bool {
        std::iter::once(self.from)
            .chain(self.to.iter().flatten().copied())
            .any(|p| !matches!(p, Party::Owner | Party::Colleague(_)))
    }

    /// The HTML body as Outlook stores it.
    pub fn body_html(&self, owner: &Owner) -> String {
        let mut rng = SeededRng::new(self.text_seed ^ 0xB0D1);
        let sender = self.address(self.from, owner);
        let greeting = match self.to[0] {
            Some(p) => self
                .address(p, owner)
                .name
                .split(' ')
                .next()
                .unwrap_or("there")
                .to_owned(),
            None => "there".to_owned(),
        };
        let mut html = String::with_capacity(1200);
        html.push_str(
            "<html><head>\r\n<meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\">\r\n</head>\r\n<body>\r\n",
        );
        let _ = write!(html, "<div>Hi {greeting},</div>\r\n");
        let paragraphs = 2 + rng.below(3);
        for _ in 0..paragraphs {
            html.push_str("<p>");
            let n = 2 + rng.below(3);
            for i in 0..n {
                if i > 0 {
                    html.push(' ');
                }
                html.push_str(SENTENCES[rng.below(20) as usize]);
            }
            html.push_str("</p>\r\n");
        }
        let _ = write!(
            html,
            "<div>Best,<br>{}</div>\r\n</body>\r\n</html>\r\n",
            html_escape(&sender.name)
        );
        html
    }

    pub fn internet_message_id(&self, owner: &Owner) -> String {
        let from = self.address(self.from, owner);
        let domain = from
            .address
            .rsplit_once('@')
            .map(|(_, d)| d.to_owned())
            .unwrap_or_default();
        format!(
            "<{:016X}{:08X}@{}>",
            mix(self.text_seed, 1),
            self.ordinal,
            domain.to_uppercase()
        )
    }

    pub fn conversation_key(&self) -> u64 {
        mix(self.seed, u64::from(self.conversation) | (1 << 40))
    }
}

pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(messages: u64, ratio: f64) -> GenerateParams {
        GenerateParams {
            seed: 7,
            messages,
            crm_match_ratio: ratio,
            folder: "inbox".into(),
            now: time::macros::datetime!(2026-01-01 00:00 UTC),
        }
    }

    fn owner() -> Owner {
        Owner {
            display_name: "Megan Bowen".into(),
            address: "meganb@contoso.com".into(),
        }
    }

    #[test]
    fn same_seed_same_mailbox() {
        let a = generate(&params(500, 0.2));
        let b = generate(&params(500, 0.2));
        assert_eq!(
            a.iter().filter(|m| m.kind != GeneratedKind::Draft).count(),
            500
        );
        assert_eq!(a.len(), 510);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                (x.received, x.text_seed, x.crm_match),
                (y.received, y.text_seed, y.crm_match)
            );
            assert_eq!(x.participants(&owner()), y.participants(&owner()));
            assert_eq!(x.subject(), y.subject());
        }
    }

    #[test]
    fn crm_flag_agrees_with_the_snapshot() {
        let snapshot = crm_snapshot(7);
        let messages = generate(&params(5_000, 0.2));
        let mut matched = 0;
        for m in &messages {
            let any = m
                .participants(&owner())
                .iter()
                .any(|a| snapshot.matches(&a.address));
            assert_eq!(
                any,
                m.crm_match,
                "message {} participants {:?}",
                m.ordinal,
                m.participants(&owner())
            );
            matched += usize::from(any);
        }
        // 20 % of 5,100 within a generous binomial margin.
        assert!((870..=1170).contains(&matched), "{matched}");
    }

    #[test]
    fn dates_span_the_last_year_and_are_sorted() {
        let messages = generate(&params(2_000, 0.0));
        let now = params(0, 0.0).now.unix_timestamp();
        assert!(messages.windows(2).all(|w| w[0].received <= w[1].received));
        assert!(
            messages
                .iter()
                .all(|m| m.received < now && m.received > now - SPAN_SECONDS - 120)
        );
        assert!(messages.first().map(|m| m.received).unwrap() < now - 300 * 24 * 3600);
    }

    #[test]
    fn freemail_non_leads_never_collide_with_leads() {
        let snapshot = crm_snapshot(3);
        let m = GeneratedMessage {
            ordinal: 0,
            kind: GeneratedKind::Mail,
            received: 0,
            text_seed: 1,
            from: Party::Owner,
            to: [None; 3],
            cc: [None; 2],
            is_read: false,
            importance_high: false,
            has_attachments: false,
            crm_match: false,
            conversation: 0,
            seed: 3,
        };
        for person in 0..2000 {
            for domain in 0..5 {
                let a = m.address(Party::Freemail { domain, person }, &owner());
                assert!(!snapshot.matches(&a.address), "{}", a.address);
            }
        }
    }
}
