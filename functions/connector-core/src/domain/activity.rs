//! Imported activities: a mail message or a meeting that matched the CRM, keyed by
//! tenant + user + Graph immutable id, with the CRM matches and why they matched.
//!
//! Only what the product shows is here: no attachments, and for meetings no body, no
//! `bodyPreview` and no response of the user's own.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::DomainError;
use super::crm::CrmRecordKind;
use super::ids::{TenantId, UserId, UserKey};

/// `mail#{immutableId}` or `event#{immutableId}`: the sort key of the activities table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ActivityId(String);

impl ActivityId {
    pub fn mail(immutable_id: &str) -> Self {
        Self(format!("mail#{immutable_id}"))
    }

    pub fn meeting(immutable_id: &str) -> Self {
        Self(format!("event#{immutable_id}"))
    }

    pub fn parse(value: &str) -> Result<Self, DomainError> {
        match value.split_once('#') {
            Some(("mail" | "event", id)) if !id.is_empty() => Ok(Self(value.to_owned())),
            _ => Err(DomainError::InvalidKey {
                what: "activity id",
                value: value.chars().take(120).collect(),
            }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Graph immutable id inside.
    pub fn immutable_id(&self) -> &str {
        self.0.split_once('#').map_or("", |(_, id)| id)
    }
}

impl fmt::Display for ActivityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ActivityId {
    type Error = DomainError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ActivityId> for String {
    fn from(value: ActivityId) -> String {
        value.0
    }
}

/// Why a participant made the activity relevant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchReason {
    /// The address equals a contact's or lead's address.
    Address,
    /// The address's domain equals, or is a subdomain of, an account domain.
    AccountDomain,
    /// Every participant is internal and the user imports internal meetings.
    InternalMeeting,
}

/// One reason an activity was kept.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrmMatch {
    /// The participant address that matched (normalised).
    pub participant: String,
    pub reason: MatchReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_kind: Option<CrmRecordKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_id: Option<String>,
    /// What matched: the address, or the account domain.
    pub matched_on: String,
}

/// A participant's role in a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ParticipantRole {
    From,
    Sender,
    To,
    Cc,
    Bcc,
    ReplyTo,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    pub role: ParticipantRole,
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// What is kept of a matching message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MailActivity {
    pub immutable_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internet_message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    pub folder_id: String,
    #[serde(default)]
    pub subject: String,
    pub participants: Vec<Participant>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub sent_at: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub received_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub body_preview: String,
    /// Plain-text body (the fetch asks Graph for text, never HTML or attachments), as
    /// Graph sent it. Empty in a stored item whose [`Self::detail`] is set: the body is in
    /// the body store then, read back by `ActivityStore::get_activity`.
    #[serde(default)]
    pub body_text: String,
    #[serde(default)]
    pub has_attachments: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_link: Option<String>,
    /// Set when the whole message (body, every participant, every match, the full
    /// subject) is kept in the body store and the item holds a bounded part of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<DetailRef>,
}

/// Where the whole of a mail activity is kept, and what the item left out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DetailRef {
    /// The object's key in the body store ([`body_key`]).
    pub key: String,
    /// Bytes of the body text (UTF-8).
    pub body_bytes: u64,
    /// Participants of the message (the item keeps at most [`ITEM_PARTICIPANTS`]).
    pub participants: u64,
    /// CRM matches (the item keeps at most [`ITEM_MATCHES`]).
    pub matches: u64,
}

/// What of a mail activity can grow without bound, kept whole in the body store: one
/// JSON object per activity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MailDetail {
    pub subject: String,
    pub participants: Vec<Participant>,
    pub matches: Vec<CrmMatch>,
    pub body_text: String,
}

/// Participants an activity item keeps (in Graph's order: from, sender, to, cc, bcc,
/// reply-to); a message may have 1,000 and more, each up to ~600 bytes.
pub const ITEM_PARTICIPANTS: usize = 100;
/// CRM matches an activity item keeps (one per matching participant at most).
pub const ITEM_MATCHES: usize = 100;
/// Characters of the subject an activity item keeps.
pub const ITEM_SUBJECT_CHARS: usize = 1_000;

/// The body store key of one version of an activity:
/// `{tenantId}/{userId}/{sha256(activityId)}/{fingerprint, 16 hex digits}`. The owner's
/// prefix lets a user's or a tenant's bodies go by prefix; the hash keeps the key short
/// and free of characters S3 treats specially, whatever Graph's ids hold; the version
/// part means deleting an old version (a message moved out of a folder) never deletes
/// the object a newer item points to.
pub fn body_key(owner: &UserKey, id: &ActivityId, fingerprint: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(id.as_str().as_bytes());
    let version: String = fingerprint.chars().take(16).collect();
    format!(
        "{}{}/{version}",
        user_body_prefix(owner),
        hex::encode(digest)
    )
}

/// Every body of a user: `{tenantId}/{userId}/`.
pub fn user_body_prefix(owner: &UserKey) -> String {
    format!("{}/{}/", owner.tenant_id.as_str(), owner.user_id.as_str())
}

/// Every body of a tenant: `{tenantId}/`.
pub fn tenant_body_prefix(tenant: &TenantId) -> String {
    format!("{}/", tenant.as_str())
}

/// An attendee as Graph reports it (type `required|optional|resource`, response status).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attendee {
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attendee_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
}

/// What is kept of a matching meeting (never the body or the user's own response).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeetingActivity {
    pub immutable_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ical_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_master_id: Option<String>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub occurrence_start: Option<OffsetDateTime>,
    /// "Private meeting" for `sensitivity: private`.
    #[serde(default)]
    pub subject: String,
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
    #[serde(default)]
    pub is_all_day: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organizer: Option<Attendee>,
    #[serde(default)]
    pub attendees: Vec<Attendee>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online_meeting_provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_as: Option<String>,
    #[serde(default)]
    pub is_cancelled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_link: Option<String>,
}

/// The imported thing itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ActivityContent {
    Mail(MailActivity),
    Meeting(MeetingActivity),
}

/// One row of the activities table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub activity_id: ActivityId,
    pub content: ActivityContent,
    pub matches: Vec<CrmMatch>,
    #[serde(with = "time::serde::rfc3339")]
    pub imported_at: OffsetDateTime,
}

impl Activity {
    /// Builds the activity; its id follows from the content's immutable id.
    pub fn new(
        owner: UserKey,
        content: ActivityContent,
        matches: Vec<CrmMatch>,
        now: OffsetDateTime,
    ) -> Self {
        let activity_id = match &content {
            ActivityContent::Mail(mail) => ActivityId::mail(&mail.immutable_id),
            ActivityContent::Meeting(meeting) => ActivityId::meeting(&meeting.immutable_id),
        };
        Self {
            tenant_id: owner.tenant_id,
            user_id: owner.user_id,
            activity_id,
            content,
            matches,
            imported_at: now,
        }
    }

    pub fn owner(&self) -> UserKey {
        UserKey::new(self.tenant_id.clone(), self.user_id.clone())
    }

    /// The date its lifetime counts from: a mail's receipt (else sending, else import), a
    /// meeting's end.
    pub fn dated_at(&self) -> OffsetDateTime {
        match &self.content {
            ActivityContent::Mail(mail) => mail
                .received_at
                .or(mail.sent_at)
                .unwrap_or(self.imported_at),
            ActivityContent::Meeting(meeting) => meeting.end,
        }
    }

    /// When an activity kept `retention_days` expires (the item's TTL).
    pub fn expires_at(&self, retention_days: u32) -> OffsetDateTime {
        self.dated_at() + time::Duration::days(i64::from(retention_days))
    }
    /// A digest of everything stored of the activity but its import time: equal
    /// fingerprints mean a re-read brought nothing new (see `ActivityStore::store_activities`).
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let mut unstamped = self.clone();
        unstamped.imported_at = OffsetDateTime::UNIX_EPOCH;
        if let ActivityContent::Mail(mail) = &mut unstamped.content {
            mail.detail = None;
        }
        let json = serde_json::to_vec(&unstamped).unwrap_or_default();
        hex::encode(sha2::Sha256::digest(&json))
    }

    /// For a mail activity: the bounded item (body left out, participants, matches and
    /// subject cut to the item's limits, [`MailActivity::detail`] set) and the whole of
    /// what can grow, for the body store. `None` for a meeting (bounded by construction:
    /// no body is kept).
    pub fn split_detail(&self) -> Option<(Activity, MailDetail)> {
        let ActivityContent::Mail(mail) = &self.content else {
            return None;
        };
        let detail = MailDetail {
            subject: mail.subject.clone(),
            participants: mail.participants.clone(),
            matches: self.matches.clone(),
            body_text: mail.body_text.clone(),
        };
        let mut item = self.clone();
        item.matches.truncate(ITEM_MATCHES);
        if let ActivityContent::Mail(bounded) = &mut item.content {
            bounded.body_text = String::new();
            bounded.participants.truncate(ITEM_PARTICIPANTS);
            if let Some((cut, _)) = bounded.subject.char_indices().nth(ITEM_SUBJECT_CHARS) {
                bounded.subject.truncate(cut);
            }
            bounded.detail = Some(DetailRef {
                key: body_key(&self.owner(), &self.activity_id, &self.fingerprint()),
                body_bytes: detail.body_text.len() as u64,
                participants: detail.participants.len() as u64,
                matches: detail.matches.len() as u64,
            });
        }
        Some((item, detail))
    }

    /// Puts the whole message back into an item read from the table (the inverse of
    /// [`Self::split_detail`]; `detail` stays set, telling where it came from).
    pub fn join_detail(&mut self, detail: MailDetail) {
        if let ActivityContent::Mail(mail) = &mut self.content {
            mail.subject = detail.subject;
            mail.participants = detail.participants;
            mail.body_text = detail.body_text;
            self.matches = detail.matches;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    pub(crate) fn sample_mail(owner: &UserKey, id: &str) -> Activity {
        Activity::new(
            owner.clone(),
            ActivityContent::Mail(MailActivity {
                immutable_id: id.to_owned(),
                internet_message_id: Some(format!("<{id}@contoso.com>")),
                conversation_id: Some("conv-1".into()),
                folder_id: "inbox".into(),
                subject: "Renewal".into(),
                participants: vec![Participant {
                    role: ParticipantRole::From,
                    address: "jane@acme.com".into(),
                    name: Some("Jane".into()),
                }],
                sent_at: Some(datetime!(2026-03-01 8:00 UTC)),
                received_at: Some(datetime!(2026-03-01 8:01 UTC)),
                body_preview: "Hi".into(),
                body_text: "Hi there".into(),
                has_attachments: false,
                web_link: None,
                detail: None,
            }),
            vec![CrmMatch {
                participant: "jane@acme.com".into(),
                reason: MatchReason::Address,
                record_kind: Some(CrmRecordKind::Contact),
                record_id: Some("003B".into()),
                matched_on: "jane@acme.com".into(),
            }],
            datetime!(2026-03-01 9:00 UTC),
        )
    }

    #[test]
    fn ids_and_serialised_shape() {
        let owner = UserKey::new(
            TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").expect("guid"),
            UserId::parse("00000000-0000-0000-0000-0000000000aa").expect("guid"),
        );
        let activity = sample_mail(&owner, "AAMkAD=");
        assert_eq!(activity.activity_id.as_str(), "mail#AAMkAD=");
        assert_eq!(activity.activity_id.immutable_id(), "AAMkAD=");
        let json = serde_json::to_value(&activity).expect("serialises");
        assert_eq!(json["content"]["kind"], "mail");
        assert_eq!(json["matches"][0]["reason"], "address");
        let back: Activity = serde_json::from_value(json).expect("round trips");
        assert_eq!(back, activity);
        assert!(ActivityId::parse("note#1").is_err());
        assert!(ActivityId::parse("event#").is_err());
        assert_eq!(
            ActivityId::parse("event#x").expect("valid"),
            ActivityId::meeting("x")
        );
    }
}
