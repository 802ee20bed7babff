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
    /// Plain-text body (the fetch asks Graph for text, never HTML or attachments).
    #[serde(default)]
    pub body_text: String,
    #[serde(default)]
    pub has_attachments: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_link: Option<String>,
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
