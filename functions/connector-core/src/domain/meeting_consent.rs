//! Explicit Consent Mode: recording consent collected through the meeting invite.
//!
//! A host writes an external meeting in Outlook with the platform's add-in, which puts the
//! **placeholder** link `{PUBLIC_BASE_URL}/m/new` into the event's body. calendar-sync finds
//! it (the body is read in memory, never stored), creates a Teams online meeting for the
//! host, and writes the meeting's own consent link, `{PUBLIC_BASE_URL}/m/{token}`, into the
//! body in place of the placeholder. Guests open the link, say whether they agree to be
//! recorded, and are forwarded to the Teams meeting either way. At the start − 60 s the
//! connector decides: record only if every guest agreed ([`ConsentMeeting::decide`]).
//!
//! One [`ConsentMeeting`] per event, kept in the host's partition of the activities table
//! with their meetings (so a disconnection or an offboarding deletes it with them).
//! Who counts as a **guest**: an attendee (required or optional; never a room or equipment)
//! whose address is not the tenant's (not one of its verified domains) and not the host's.
//! A meeting without guests is internal and is not acted on.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use super::{TenantId, UserId, UserKey};

/// The path of the placeholder link the add-in writes (after `PUBLIC_BASE_URL`).
pub const PLACEHOLDER_PATH: &str = "/m/new";
/// The consent page's path prefix (`/m/{token}`).
pub const PAGE_PATH: &str = "/m/";
/// How long before the start the decision is made.
pub const DECISION_LEAD: Duration = Duration::seconds(60);
/// How long before the start the platform is asked to send its consent emails.
pub const REQUEST_LEAD: Duration = Duration::hours(24);
/// How long after its end a meeting's links still open (then: "this link has expired").
pub const LINK_LIFETIME_AFTER_END: Duration = Duration::days(7);
/// Guests of one meeting the connector collects answers for. A save writes the record and
/// each new guest's token item; beyond this a meeting is stopped (`too_many_guests`).
pub const MAX_GUESTS: usize = 300;

/// The placeholder link for a deployment.
pub fn placeholder_url(public_base_url: &str) -> String {
    format!(
        "{}{PLACEHOLDER_PATH}",
        public_base_url.trim_end_matches('/')
    )
}

/// A consent page link for a deployment.
pub fn page_url(public_base_url: &str, token: &LinkToken) -> String {
    format!(
        "{}{PAGE_PATH}{}",
        public_base_url.trim_end_matches('/'),
        token.0
    )
}

/// An unguessable link token: 32 random bytes, base64url (43 characters). It is a
/// credential (it lets its holder answer for a guest): never logged (Debug redacts it).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LinkToken(String);

impl LinkToken {
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// A token as it arrives in a URL; `None` unless it has a generated token's shape, so
    /// nothing else reaches a lookup.
    pub fn parse(text: &str) -> Option<Self> {
        let shaped = text.len() == 43
            && text
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
        shaped.then(|| Self(text.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// SHA-256, hex: the lookup key (the index holds digests, not tokens).
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

impl fmt::Debug for LinkToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkToken([redacted])")
    }
}

/// Where a meeting's consent collection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentStatus {
    /// Found; the online meeting and the link are being written into the event.
    Linking,
    /// The consent link is in the event; answers are collected.
    Active,
    /// The host cancelled (deleted) the meeting.
    Cancelled,
    /// Collection stopped: see `stopReason`.
    Stopped,
}

impl ConsentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentStatus::Linking => "linking",
            ConsentStatus::Active => "active",
            ConsentStatus::Cancelled => "cancelled",
            ConsentStatus::Stopped => "stopped",
        }
    }

    /// Linking or active: the meeting still collects.
    pub fn is_live(self) -> bool {
        matches!(self, ConsentStatus::Linking | ConsentStatus::Active)
    }
}

/// Why collection stopped.
pub mod stop_reason {
    /// The host took the consent link (or the placeholder) out of the event.
    pub const LINK_REMOVED: &str = "link_removed";
    /// No guest is left (every external attendee was removed).
    pub const NO_GUESTS: &str = "no_guests";
    /// More guests than [`super::MAX_GUESTS`].
    pub const TOO_MANY_GUESTS: &str = "too_many_guests";
    /// The tenant's administrator switched Explicit Consent Mode off.
    pub const SWITCHED_OFF: &str = "switched_off";
    /// Became recurring, all-day, or no longer the host's own meeting.
    pub const NOT_ELIGIBLE: &str = "not_eligible";
}

/// A guest's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Record,
    DoNotRecord,
}

impl Answer {
    pub fn as_str(self) -> &'static str {
        match self {
            Answer::Record => "record",
            Answer::DoNotRecord => "do_not_record",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "record" => Some(Answer::Record),
            "do_not_record" => Some(Answer::DoNotRecord),
            _ => None,
        }
    }
}

/// One guest: their address, their own link's token, their answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsentGuest {
    /// Lower-case.
    pub address: String,
    pub token: LinkToken,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Answer>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub answered_at: Option<OffsetDateTime>,
}

/// What was decided at the start − 60 s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// Every guest agreed.
    pub record: bool,
    /// Guests who answered "do not record".
    pub declined: Vec<String>,
    /// Guests who did not answer.
    pub no_answer: Vec<String>,
    /// The start the decision was made for (a reschedule makes a new one).
    #[serde(with = "time::serde::rfc3339")]
    pub starts_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub decided_at: OffsetDateTime,
}

/// One event under Explicit Consent Mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsentMeeting {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    /// The event's immutable id in the host's calendar.
    pub event_id: String,
    /// `createOrGet`'s externalId: fixed when the record is made, so every retry reaches
    /// the same online meeting.
    pub external_id: String,
    pub status: ConsentStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online_meeting_id: Option<String>,
    /// The Teams join URL every answer forwards to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_url: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
    /// The link in the invite (the guest says which invited address they are).
    pub link_token: LinkToken,
    pub guests: Vec<ConsentGuest>,
    /// When `ConsentRequestDue` is published (24 h before, or at once).
    #[serde(with = "time::serde::rfc3339")]
    pub request_due_at: OffsetDateTime,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub requested_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Optimistic concurrency: every save expects the version it read.
    #[serde(default)]
    pub version: u64,
}

/// Which link a token is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkHolder {
    /// The invite's link: the guest says who they are.
    Invite,
    /// One guest's own link (index into `guests`).
    Guest(usize),
}

impl ConsentMeeting {
    /// A new record for an event found with the placeholder.
    pub fn new(
        owner: &UserKey,
        event_id: &str,
        start: OffsetDateTime,
        end: OffsetDateTime,
        guests: impl IntoIterator<Item = String>,
        now: OffsetDateTime,
    ) -> Self {
        let mut meeting = Self {
            tenant_id: owner.tenant_id.clone(),
            user_id: owner.user_id.clone(),
            event_id: event_id.to_owned(),
            external_id: uuid::Uuid::new_v4().to_string(),
            status: ConsentStatus::Linking,
            stop_reason: None,
            online_meeting_id: None,
            join_url: None,
            start,
            end,
            link_token: LinkToken::generate(),
            guests: Vec::new(),
            request_due_at: request_due(start, now),
            requested_at: None,
            decision: None,
            created_at: now,
            updated_at: now,
            version: 0,
        };
        meeting.set_guests(guests, now);
        meeting
    }

    pub fn owner(&self) -> UserKey {
        UserKey::new(self.tenant_id.clone(), self.user_id.clone())
    }

    /// When the decision is made.
    pub fn decision_due_at(&self) -> OffsetDateTime {
        self.start - DECISION_LEAD
    }

    /// The next moment something is due (the request, then the decision); `None` when
    /// nothing is (not active, or both done).
    pub fn next_due(&self) -> Option<OffsetDateTime> {
        if self.status != ConsentStatus::Active {
            return None;
        }
        if self.requested_at.is_none() {
            return Some(self.request_due_at);
        }
        match &self.decision {
            Some(decision) if decision.starts_at == self.start => None,
            _ => Some(self.decision_due_at()),
        }
    }

    /// Whose link `token` is, if it is one of this meeting's.
    pub fn holder(&self, token: &LinkToken) -> Option<LinkHolder> {
        if &self.link_token == token {
            return Some(LinkHolder::Invite);
        }
        self.guests
            .iter()
            .position(|guest| &guest.token == token)
            .map(LinkHolder::Guest)
    }

    /// The guest with this address (case-insensitive), if invited.
    pub fn guest_index(&self, address: &str) -> Option<usize> {
        let address = address.trim().to_lowercase();
        self.guests
            .iter()
            .position(|guest| guest.address == address)
    }

    /// Every token of the meeting (the invite's first).
    pub fn tokens(&self) -> impl Iterator<Item = &LinkToken> {
        std::iter::once(&self.link_token).chain(self.guests.iter().map(|guest| &guest.token))
    }

    /// Replaces the guest list: guests still invited keep their link and answer, new ones
    /// get a link, removed ones lose theirs. More than [`MAX_GUESTS`] stops the meeting.
    pub fn set_guests(&mut self, addresses: impl IntoIterator<Item = String>, now: OffsetDateTime) {
        let mut wanted: Vec<String> = addresses
            .into_iter()
            .map(|address| address.trim().to_lowercase())
            .filter(|address| !address.is_empty())
            .collect();
        wanted.sort();
        wanted.dedup();
        let mut old = std::mem::take(&mut self.guests);
        self.guests = wanted
            .into_iter()
            .map(
                |address| match old.iter().position(|guest| guest.address == address) {
                    Some(at) => old.swap_remove(at),
                    None => ConsentGuest {
                        address,
                        token: LinkToken::generate(),
                        answer: None,
                        answered_at: None,
                    },
                },
            )
            .collect();
        if self.guests.len() > MAX_GUESTS {
            self.stop(stop_reason::TOO_MANY_GUESTS, now);
        } else if self.guests.is_empty() {
            self.stop(stop_reason::NO_GUESTS, now);
        }
        self.updated_at = now;
    }

    /// New times: the request's due time follows while not sent; a decision made for the
    /// old start is made again for the new one.
    pub fn reschedule(&mut self, start: OffsetDateTime, end: OffsetDateTime, now: OffsetDateTime) {
        if self.start == start && self.end == end {
            return;
        }
        self.start = start;
        self.end = end;
        if self.requested_at.is_none() {
            self.request_due_at = request_due(start, now);
        }
        self.updated_at = now;
    }

    /// The link is in the event: answers are collected. A request already due (a meeting
    /// made the same day) is made at once, in the same write.
    pub fn activate(&mut self, now: OffsetDateTime) {
        if self.status == ConsentStatus::Linking {
            self.status = ConsentStatus::Active;
            if self.request_due_at <= now {
                self.requested_at = Some(now);
            }
            self.updated_at = now;
        }
    }

    /// Collects again after a stop (the host put the placeholder back): linked anew.
    /// A cancelled meeting stays cancelled (its event is gone).
    pub fn resume(&mut self, now: OffsetDateTime) {
        if self.status == ConsentStatus::Stopped
            && self.guests.len() <= MAX_GUESTS
            && !self.guests.is_empty()
        {
            self.status = ConsentStatus::Linking;
            self.stop_reason = None;
            self.updated_at = now;
        }
    }

    /// Ends collection for `reason`; whether it was still collecting.
    pub fn stop(&mut self, reason: &str, now: OffsetDateTime) -> bool {
        self.end(ConsentStatus::Stopped, Some(reason), now)
    }

    /// The host cancelled the meeting; whether it was still collecting.
    pub fn cancel(&mut self, now: OffsetDateTime) -> bool {
        self.end(ConsentStatus::Cancelled, None, now)
    }

    fn end(&mut self, status: ConsentStatus, reason: Option<&str>, now: OffsetDateTime) -> bool {
        if !self.status.is_live() {
            return false;
        }
        self.status = status;
        self.stop_reason = reason.map(str::to_owned);
        self.updated_at = now;
        true
    }

    /// Records a guest's answer (a later answer replaces an earlier one). Whether it still
    /// counts is the decision's business: answers after it are kept, not counted.
    pub fn answer(&mut self, guest: usize, answer: Answer, now: OffsetDateTime) -> bool {
        match self.guests.get_mut(guest) {
            Some(guest) => {
                guest.answer = Some(answer);
                guest.answered_at = Some(now);
                self.updated_at = now;
                true
            }
            None => false,
        }
    }

    /// Record only if every guest agreed; lists who declined and who did not answer.
    pub fn decide(&self, now: OffsetDateTime) -> Decision {
        let declined: Vec<String> = self
            .guests
            .iter()
            .filter(|guest| guest.answer == Some(Answer::DoNotRecord))
            .map(|guest| guest.address.clone())
            .collect();
        let no_answer: Vec<String> = self
            .guests
            .iter()
            .filter(|guest| guest.answer.is_none())
            .map(|guest| guest.address.clone())
            .collect();
        Decision {
            record: !self.guests.is_empty() && declined.is_empty() && no_answer.is_empty(),
            declined,
            no_answer,
            starts_at: self.start,
            decided_at: now,
        }
    }

    /// Whether the links still open (until a week after the end).
    pub fn links_open(&self, now: OffsetDateTime) -> bool {
        now <= self.end + LINK_LIFETIME_AFTER_END
    }
}

/// 24 h before the start, or now when that has passed (a meeting made the same day).
fn request_due(start: OffsetDateTime, now: OffsetDateTime) -> OffsetDateTime {
    (start - REQUEST_LEAD).max(now)
}

/// Where the placeholder or the meeting's link is in an event's body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyMark {
    /// The add-in's placeholder: the event is to be linked.
    Placeholder,
    /// The meeting's own consent link (no placeholder left).
    Linked,
    /// Neither.
    None,
}

/// Looks for the placeholder, then for `link` (the meeting's consent link, when known).
pub fn body_mark(body: &str, placeholder: &str, link: Option<&str>) -> BodyMark {
    if body.contains(placeholder) {
        BodyMark::Placeholder
    } else if link.is_some_and(|link| body.contains(link)) {
        BodyMark::Linked
    } else {
        BodyMark::None
    }
}

/// The body with every placeholder link replaced by `link`; every other byte as it was.
pub fn replace_placeholder(body: &str, placeholder: &str, link: &str) -> String {
    body.replace(placeholder, link)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn owner() -> UserKey {
        UserKey::new(
            TenantId::parse("11111111-1111-4111-8111-111111111111").unwrap(),
            UserId::parse("22222222-2222-4222-8222-222222222222").unwrap(),
        )
    }

    fn meeting(now: OffsetDateTime, start: OffsetDateTime) -> ConsentMeeting {
        let mut meeting = ConsentMeeting::new(
            &owner(),
            "AAMk1",
            start,
            start + Duration::hours(1),
            [
                "a@fabrikam.example".to_owned(),
                "B@Fabrikam.example".to_owned(),
                "c@northwind.example".to_owned(),
            ],
            now,
        );
        meeting.status = ConsentStatus::Active;
        meeting
    }

    #[test]
    fn tokens_are_unguessable_and_redacted() {
        let a = LinkToken::generate();
        let b = LinkToken::generate();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 43);
        assert_eq!(LinkToken::parse(a.expose()), Some(a.clone()));
        assert_eq!(LinkToken::parse("short"), None);
        assert_eq!(LinkToken::parse(&format!("{}/", &a.expose()[..42])), None);
        assert!(!format!("{a:?}").contains(a.expose()));
        assert_eq!(a.digest().len(), 64);
    }

    #[test]
    fn the_request_is_due_a_day_ahead_or_at_once() {
        let now = datetime!(2026-12-06 09:00 UTC);
        let later = meeting(now, datetime!(2026-12-10 15:00 UTC));
        assert_eq!(later.request_due_at, datetime!(2026-12-09 15:00 UTC));
        assert_eq!(later.next_due(), Some(datetime!(2026-12-09 15:00 UTC)));
        let today = meeting(now, datetime!(2026-12-06 16:00 UTC));
        assert_eq!(today.request_due_at, now);
    }

    #[test]
    fn the_decision_records_only_when_every_guest_agreed() {
        let now = datetime!(2026-12-06 09:00 UTC);
        let mut meeting = meeting(now, datetime!(2026-12-06 16:00 UTC));
        assert_eq!(
            meeting
                .guests
                .iter()
                .map(|g| g.address.as_str())
                .collect::<Vec<_>>(),
            [
                "a@fabrikam.example",
                "b@fabrikam.example",
                "c@northwind.example"
            ]
        );
        meeting.answer(0, Answer::DoNotRecord, now);
        meeting.answer(2, Answer::Record, now);
        let decision = meeting.decide(now);
        assert!(!decision.record);
        assert_eq!(decision.declined, ["a@fabrikam.example"]);
        assert_eq!(decision.no_answer, ["b@fabrikam.example"]);
        meeting.answer(0, Answer::Record, now);
        meeting.answer(1, Answer::Record, now);
        let decision = meeting.decide(now);
        assert!(decision.record);
        assert!(decision.declined.is_empty() && decision.no_answer.is_empty());
    }

    #[test]
    fn guests_keep_their_links_and_answers_across_changes() {
        let now = datetime!(2026-12-06 09:00 UTC);
        let mut meeting = meeting(now, datetime!(2026-12-07 16:00 UTC));
        meeting.answer(0, Answer::Record, now);
        let kept = meeting.guests[0].token.clone();
        let dropped = meeting.guests[2].token.clone();
        meeting.set_guests(
            [
                "a@fabrikam.example".to_owned(),
                "d@contoso-partner.example".to_owned(),
            ],
            now,
        );
        assert_eq!(meeting.guests.len(), 2);
        assert_eq!(meeting.holder(&kept), Some(LinkHolder::Guest(0)));
        assert_eq!(meeting.guests[0].answer, Some(Answer::Record));
        assert_eq!(meeting.holder(&dropped), None);
        assert_eq!(
            meeting.holder(&meeting.link_token.clone()),
            Some(LinkHolder::Invite)
        );
        meeting.set_guests(Vec::<String>::new(), now);
        assert_eq!(meeting.status, ConsentStatus::Stopped);
        assert_eq!(meeting.stop_reason.as_deref(), Some(stop_reason::NO_GUESTS));
        assert_eq!(meeting.next_due(), None);
    }

    #[test]
    fn a_reschedule_makes_the_decision_again() {
        let now = datetime!(2026-12-06 09:00 UTC);
        let mut meeting = meeting(now, datetime!(2026-12-06 10:00 UTC));
        meeting.requested_at = Some(now);
        assert_eq!(meeting.next_due(), Some(datetime!(2026-12-06 9:59 UTC)));
        meeting.decision = Some(meeting.decide(now));
        assert_eq!(meeting.next_due(), None);
        meeting.reschedule(
            datetime!(2026-12-08 10:00 UTC),
            datetime!(2026-12-08 11:00 UTC),
            now,
        );
        assert_eq!(meeting.next_due(), Some(datetime!(2026-12-08 9:59 UTC)));
    }

    #[test]
    fn the_placeholder_is_replaced_and_nothing_else() {
        let base = "https://connector.example/";
        let placeholder = placeholder_url(base);
        assert_eq!(placeholder, "https://connector.example/m/new");
        let token = LinkToken::generate();
        let link = page_url(base, &token);
        let body = format!(
            "<html><body><p>Agenda \u{e9}</p><a href=\"{placeholder}\">{placeholder}</a>\r\n</body></html>"
        );
        assert_eq!(
            body_mark(&body, &placeholder, Some(&link)),
            BodyMark::Placeholder
        );
        let replaced = replace_placeholder(&body, &placeholder, &link);
        assert_eq!(replaced, body.replace(&placeholder, &link));
        assert_eq!(
            body_mark(&replaced, &placeholder, Some(&link)),
            BodyMark::Linked
        );
        assert_eq!(
            body_mark("<p>no link</p>", &placeholder, Some(&link)),
            BodyMark::None
        );
    }
}
