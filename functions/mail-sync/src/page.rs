//! Graph's mail JSON as mail-sync reads it: listed pages (delta and list) parsed with
//! borrowed strings, so a page is matched in place and dropped whole; and the full
//! message fetched for a match.

use std::borrow::Cow;
use std::fmt;

use connector_core::matching::CrmMatcher;
use serde::de::{self, IgnoredAny, Visitor};
use serde::{Deserialize, Deserializer};
use time::OffsetDateTime;

/// The minimal `$select` of a listing: ids, participants, date and the draft flag. No
/// subject, no preview, no body: a discarded message costs only these bytes.
pub const LIST_SELECT: &str =
    "id,from,sender,toRecipients,ccRecipients,bccRecipients,replyTo,receivedDateTime,isDraft";

/// What is fetched (through `$batch`) for a match.
pub const FETCH_SELECT: &str = "id,internetMessageId,conversationId,parentFolderId,subject,from,sender,toRecipients,ccRecipients,bccRecipients,replyTo,sentDateTime,receivedDateTime,bodyPreview,body,hasAttachments,webLink,isDraft";

/// One page of a delta round or of a message list.
#[derive(Debug, Deserialize)]
pub struct ListPage<'a> {
    #[serde(
        rename = "@odata.nextLink",
        borrow,
        default,
        deserialize_with = "opt_text"
    )]
    pub next_link: Option<Cow<'a, str>>,
    #[serde(
        rename = "@odata.deltaLink",
        borrow,
        default,
        deserialize_with = "opt_text"
    )]
    pub delta_link: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub value: Vec<Listed<'a>>,
}

/// A listed message (or a removal).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Listed<'a> {
    #[serde(rename = "@odata.type", borrow, default, deserialize_with = "opt_text")]
    pub odata_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(rename = "@removed", default)]
    pub removed: Option<IgnoredAny>,
    #[serde(borrow, default)]
    pub from: Option<Recipient<'a>>,
    #[serde(borrow, default)]
    pub sender: Option<Recipient<'a>>,
    #[serde(borrow, default)]
    pub to_recipients: Option<Vec<Recipient<'a>>>,
    #[serde(borrow, default)]
    pub cc_recipients: Option<Vec<Recipient<'a>>>,
    #[serde(borrow, default)]
    pub bcc_recipients: Option<Vec<Recipient<'a>>>,
    #[serde(borrow, default)]
    pub reply_to: Option<Vec<Recipient<'a>>>,
    #[serde(borrow, default, deserialize_with = "opt_text")]
    pub received_date_time: Option<Cow<'a, str>>,
    #[serde(default)]
    pub is_draft: Option<bool>,
}

/// A JSON string borrowed from the page when it holds no escape, copied when it does
/// (serde borrows a bare `Cow<'a, str>` field, but inside an `Option` it always copies).
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

fn opt_text<'de: 'a, 'a, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Cow<'a, str>>, D::Error> {
    Ok(Option::<Text<'a>>::deserialize(deserializer)?.map(|text| text.0))
}

/// `{"emailAddress": {"address": ...}}` (the name is not needed to match).
#[derive(Debug, Deserialize)]
pub struct Recipient<'a> {
    #[serde(rename = "emailAddress", borrow, default)]
    pub email_address: Option<Address<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct Address<'a> {
    #[serde(borrow, default, deserialize_with = "opt_text")]
    pub address: Option<Cow<'a, str>>,
}

impl<'a> Recipient<'a> {
    fn address(&self) -> Option<&str> {
        self.email_address.as_ref()?.address.as_deref()
    }
}

/// What a listed item is to the importer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Removed,
    /// Drafts and meeting requests/responses are never imported.
    Skipped,
    Message,
}

impl Listed<'_> {
    pub fn kind(&self) -> Kind {
        if self.removed.is_some() {
            return Kind::Removed;
        }
        let meeting = self
            .odata_type
            .as_deref()
            .is_some_and(|t| t.starts_with("#microsoft.graph.eventMessage"));
        if meeting || self.is_draft == Some(true) {
            Kind::Skipped
        } else {
            Kind::Message
        }
    }

    /// from, sender, to, cc, bcc, reply-to; the sender only when it is not the author
    /// (Graph repeats `from` as `sender` on nearly every message: one lookup saved).
    pub fn participants(&self) -> impl Iterator<Item = &str> {
        let from = self.from.as_ref().and_then(Recipient::address);
        let sender = self
            .sender
            .as_ref()
            .and_then(Recipient::address)
            .filter(|sender| Some(*sender) != from);
        let singles = [from, sender].into_iter().flatten();
        let lists = [
            &self.to_recipients,
            &self.cc_recipients,
            &self.bcc_recipients,
            &self.reply_to,
        ]
        .into_iter()
        .flat_map(|list| list.iter().flatten());
        singles.chain(lists.filter_map(Recipient::address))
    }
}

/// What one listed page gave: only ids of matches and removals outlive the page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageScan {
    pub matched: Vec<String>,
    pub removed: Vec<String>,
    /// Listed messages (removals excluded), drafts and meeting messages included.
    pub listed: u64,
    /// Listed but not fetched: no CRM participant, a draft or a meeting message.
    pub discarded: u64,
    pub oldest: Option<OffsetDateTime>,
    pub next_link: Option<String>,
    pub delta_link: Option<String>,
    /// With `boundary`: ids of the messages received at `oldest` (a keyset-paged list
    /// repeats that instant on its next page); kept in memory only.
    pub boundary_ids: Vec<String>,
}

/// The engine: parses a listed page (delta or list) borrowing from `body`, classifies each
/// item, matches its participants, and keeps only what outlives the page. Items whose id
/// is in `skip` are ignored (already seen on the previous page).
pub fn scan_page(
    body: &[u8],
    matcher: &CrmMatcher,
    skip: &[String],
    boundary: bool,
) -> Result<PageScan, serde_json::Error> {
    let page: ListPage<'_> = serde_json::from_slice(body)?;
    let mut scan = PageScan {
        next_link: page.next_link.as_deref().map(str::to_owned),
        delta_link: page.delta_link.as_deref().map(str::to_owned),
        ..PageScan::default()
    };
    let mut oldest: Option<&str> = None;
    for item in &page.value {
        if !skip.is_empty() && skip.iter().any(|id| id == item.id.as_ref()) {
            continue;
        }
        match item.kind() {
            Kind::Removed => {
                scan.removed.push(item.id.clone().into_owned());
                continue;
            }
            Kind::Skipped => {
                scan.listed += 1;
                scan.discarded += 1;
            }
            Kind::Message => {
                scan.listed += 1;
                if matcher.matches(item.participants()) {
                    scan.matched.push(item.id.clone().into_owned());
                } else {
                    scan.discarded += 1;
                }
            }
        }
        // Graph writes every receivedDateTime the same way (UTC, `Z`): text order is time order.
        if let Some(received) = item.received_date_time.as_deref()
            && oldest.is_none_or(|o| received < o)
        {
            oldest = Some(received);
        }
    }
    scan.oldest = oldest.and_then(|text| {
        OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
    });
    if boundary && let Some(oldest) = oldest {
        scan.boundary_ids = page
            .value
            .iter()
            .filter(|item| item.received_date_time.as_deref() == Some(oldest))
            .map(|item| item.id.clone().into_owned())
            .collect();
    }
    Ok(scan)
}

/// A full message as fetched for storage.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fetched {
    #[serde(rename = "@odata.type", default)]
    pub odata_type: Option<String>,
    pub id: String,
    #[serde(default)]
    pub internet_message_id: Option<String>,
    #[serde(default)]
    pub conversation_id: Option<String>,
    #[serde(default)]
    pub parent_folder_id: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub from: Option<OwnedRecipient>,
    #[serde(default)]
    pub sender: Option<OwnedRecipient>,
    #[serde(default)]
    pub to_recipients: Option<Vec<OwnedRecipient>>,
    #[serde(default)]
    pub cc_recipients: Option<Vec<OwnedRecipient>>,
    #[serde(default)]
    pub bcc_recipients: Option<Vec<OwnedRecipient>>,
    #[serde(default)]
    pub reply_to: Option<Vec<OwnedRecipient>>,
    #[serde(default)]
    pub sent_date_time: Option<String>,
    #[serde(default)]
    pub received_date_time: Option<String>,
    #[serde(default)]
    pub body_preview: Option<String>,
    #[serde(default)]
    pub body: Option<Body>,
    #[serde(default)]
    pub has_attachments: Option<bool>,
    #[serde(default)]
    pub web_link: Option<String>,
    #[serde(default)]
    pub is_draft: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct OwnedRecipient {
    #[serde(rename = "emailAddress", default)]
    pub email_address: Option<OwnedAddress>,
}

#[derive(Debug, Deserialize)]
pub struct OwnedAddress {
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Body {
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
}

/// A participant with its role.
pub type RoleAddress<'a> = (connector_core::domain::ParticipantRole, &'a OwnedAddress);

impl Fetched {
    /// Every participant with its role, in Graph's order.
    pub fn participants(&self) -> Vec<RoleAddress<'_>> {
        use connector_core::domain::ParticipantRole as Role;
        let mut out = Vec::new();
        for (role, single) in [(Role::From, &self.from), (Role::Sender, &self.sender)] {
            if let Some(address) = single.as_ref().and_then(|r| r.email_address.as_ref()) {
                out.push((role, address));
            }
        }
        for (role, list) in [
            (Role::To, &self.to_recipients),
            (Role::Cc, &self.cc_recipients),
            (Role::Bcc, &self.bcc_recipients),
            (Role::ReplyTo, &self.reply_to),
        ] {
            for recipient in list.iter().flatten() {
                if let Some(address) = &recipient.email_address {
                    out.push((role, address));
                }
            }
        }
        out
    }

    pub fn is_importable(&self) -> bool {
        let meeting = self
            .odata_type
            .as_deref()
            .is_some_and(|t| t.starts_with("#microsoft.graph.eventMessage"));
        !meeting && self.is_draft != Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_page_borrows_and_classifies() {
        let json = br##"{"@odata.context":"x","@odata.nextLink":"https://graph/v1.0/me/mailFolders/a/messages/delta?$skiptoken=t",
            "value":[
              {"@odata.type":"#microsoft.graph.message","@odata.etag":"W/\"x\"","id":"AAk1","receivedDateTime":"2026-03-01T08:00:00Z","isDraft":false,
               "from":{"emailAddress":{"name":"Jane","address":"jane@acme.com"}},"sender":null,
               "toRecipients":[{"emailAddress":{"name":"Me","address":"me@contoso.com"}}],"ccRecipients":[],"bccRecipients":null,
               "replyTo":[{"emailAddress":{"address":"reply@acme.com"}}]},
              {"@odata.type":"#microsoft.graph.eventMessageRequest","id":"AAk2","isDraft":false},
              {"@odata.type":"#microsoft.graph.message","id":"AAk3","isDraft":true},
              {"@odata.type":"#microsoft.graph.message","id":"AAk4","@removed":{"reason":"deleted"}},
              {"id":"AAk5","from":{"emailAddress":{"address":"jane@acme.com"}},"sender":{"emailAddress":{"address":"jane@acme.com"}}},
              {"id":"AAk6","from":{"emailAddress":{"address":"jane@acme.com"}},"sender":{"emailAddress":{"address":"assistant@acme.com"}}}
            ]}"##;
        let page: ListPage<'_> = serde_json::from_slice(json).expect("parses");
        assert!(page.next_link.is_some() && page.delta_link.is_none());
        let kinds: Vec<Kind> = page.value.iter().map(Listed::kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::Message,
                Kind::Skipped,
                Kind::Skipped,
                Kind::Removed,
                Kind::Message,
                Kind::Message
            ]
        );
        assert_eq!(
            page.value[4].participants().collect::<Vec<_>>(),
            ["jane@acme.com"]
        );
        assert_eq!(
            page.value[5].participants().collect::<Vec<_>>(),
            ["jane@acme.com", "assistant@acme.com"]
        );
        let participants: Vec<&str> = page.value[0].participants().collect();
        assert_eq!(
            participants,
            ["jane@acme.com", "me@contoso.com", "reply@acme.com"]
        );
        assert!(matches!(page.value[0].id, Cow::Borrowed(_)));
        let address = page.value[0]
            .from
            .as_ref()
            .and_then(|r| r.email_address.as_ref());
        assert!(matches!(
            address.and_then(|a| a.address.as_ref()),
            Some(Cow::Borrowed(_))
        ));
        assert!(matches!(page.value[0].odata_type, Some(Cow::Borrowed(_))));
        assert!(matches!(
            page.value[0].received_date_time,
            Some(Cow::Borrowed(_))
        ));
        assert!(matches!(page.next_link, Some(Cow::Borrowed(_))));
    }

    #[test]
    fn escaped_strings_are_unescaped_into_owned_copies() {
        // Graph may escape any character of a JSON string (`\/`, `\uXXXX`, quotes in a
        // display name or a quoted local part); such a string cannot be borrowed.
        let json = br##"{"@odata.deltaLink":"https:\/\/graph\/v1.0\/delta?$deltatoken=a\u0026b",
            "value":[
              {"@odata.type":"#microsoft.graph.eventMessage\u0052equest","id":"AA\u006b1","isDraft":false},
              {"@odata.type":"#microsoft.graph.message","id":"AAk2","receivedDateTime":"2026-03-01T08:00:00\u005a",
               "from":{"emailAddress":{"name":"O\"Brien","address":"o.brien\u0040acme.com"}},
               "toRecipients":[{"emailAddress":{"address":"\"quoted\"@acme.com"}},{"emailAddress":{"address":"plain@acme.com"}}],
               "ccRecipients":[{"emailAddress":{"address":null}},{"emailAddress":null},{}]}
            ]}"##;
        let page: ListPage<'_> = serde_json::from_slice(json).expect("parses");
        assert_eq!(
            page.delta_link.as_deref(),
            Some("https://graph/v1.0/delta?$deltatoken=a&b")
        );
        assert!(matches!(page.delta_link, Some(Cow::Owned(_))));
        assert_eq!(page.value[0].id, "AAk1");
        assert_eq!(page.value[0].kind(), Kind::Skipped);
        assert_eq!(
            page.value[0].odata_type.as_deref(),
            Some("#microsoft.graph.eventMessageRequest")
        );
        let message = &page.value[1];
        assert_eq!(message.kind(), Kind::Message);
        assert_eq!(
            message.received_date_time.as_deref(),
            Some("2026-03-01T08:00:00Z")
        );
        assert!(matches!(message.received_date_time, Some(Cow::Owned(_))));
        let participants: Vec<&str> = message.participants().collect();
        assert_eq!(
            participants,
            ["o.brien@acme.com", "\"quoted\"@acme.com", "plain@acme.com"]
        );
        let to = message.to_recipients.as_deref().expect("to");
        let addresses: Vec<&Cow<'_, str>> = to
            .iter()
            .filter_map(|r| r.email_address.as_ref()?.address.as_ref())
            .collect();
        assert!(matches!(addresses[..], [Cow::Owned(_), Cow::Borrowed(_)]));
    }

    #[test]
    fn a_non_string_where_text_is_expected_is_an_error() {
        let json = br#"{"value":[{"id":"AAk1","receivedDateTime":12}]}"#;
        assert!(serde_json::from_slice::<ListPage<'_>>(json).is_err());
    }
}
