//! Graph's mail JSON as mail-sync reads it: listed pages (delta and list) parsed with
//! borrowed strings, so a page is matched in place and dropped whole; and the full
//! message fetched for a match.

use std::borrow::Cow;
use std::fmt;

use connector_core::matching::CrmMatcher;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use time::OffsetDateTime;

/// The minimal `$select` of a listing: ids, participants, date and the draft flag. No
/// subject, no preview, no body: a discarded message costs only these bytes.
pub const LIST_SELECT: &str =
    "id,from,sender,toRecipients,ccRecipients,bccRecipients,replyTo,receivedDateTime,isDraft";

/// What is fetched (through `$batch`) for a match.
pub const FETCH_SELECT: &str = "id,internetMessageId,conversationId,parentFolderId,subject,from,sender,toRecipients,ccRecipients,bccRecipients,replyTo,sentDateTime,receivedDateTime,bodyPreview,body,hasAttachments,webLink,isDraft";

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

/// Meeting requests, responses and cancellations: never imported as mail.
fn is_meeting_message(odata_type: &str) -> bool {
    odata_type.starts_with("#microsoft.graph.eventMessage")
}

/// What a listed item is to the importer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Removed,
    /// Drafts and meeting requests/responses are never imported.
    Skipped,
    Message,
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

/// The engine: reads a listed page (delta or list) in one pass over `body`, with no tree
/// and no per-message structure: each item's fields are visited in place (strings borrowed
/// from the page unless escaped), each recipient address is matched as it is read, and
/// only what outlives the page is kept. Items whose id is in `skip` are ignored (already
/// seen on the previous page).
///
/// The item rules: `@removed` makes a removal; a draft (`isDraft`) or a meeting message
/// (`@odata.type` `#microsoft.graph.eventMessage…`) is listed and discarded; any other
/// item is a message, matched on from, sender, to, cc, bcc and reply-to (the sender only
/// when it is not the author: Graph repeats `from` as `sender` on nearly every message).
pub fn scan_page(
    body: &[u8],
    matcher: &CrmMatcher,
    skip: &[String],
    boundary: bool,
) -> Result<PageScan, serde_json::Error> {
    let mut reader = PageReader {
        matcher,
        skip,
        boundary,
        scan: PageScan::default(),
        oldest: None,
        received: Vec::new(),
    };
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    PageSeed(&mut reader).deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(reader.finish())
}

/// The state of one [`scan_page`].
struct PageReader<'m, 'de> {
    matcher: &'m CrmMatcher,
    skip: &'m [String],
    boundary: bool,
    scan: PageScan,
    /// The oldest `receivedDateTime` of a counted item. Graph writes every one the same
    /// way (UTC, `Z`): text order is time order.
    oldest: Option<Cow<'de, str>>,
    /// With `boundary`: every item's id and `receivedDateTime`, skipped ones included (the
    /// next page repeats them too).
    received: Vec<(Cow<'de, str>, Cow<'de, str>)>,
}

/// One item as read: only what the rules above need.
#[derive(Default)]
struct Item<'de> {
    id: Cow<'de, str>,
    removed: bool,
    meeting: bool,
    draft: bool,
    from: Option<Cow<'de, str>>,
    sender: Option<Cow<'de, str>>,
    /// A recipient of a list matched (from and sender are matched at the item's end).
    matched: bool,
    received: Option<Cow<'de, str>>,
}

impl Item<'_> {
    fn kind(&self) -> Kind {
        if self.removed {
            Kind::Removed
        } else if self.meeting || self.draft {
            Kind::Skipped
        } else {
            Kind::Message
        }
    }
}

impl<'de> PageReader<'_, 'de> {
    fn add(&mut self, item: Item<'de>) {
        let Item {
            id,
            from,
            sender,
            received,
            ..
        } = &item;
        if self.boundary
            && let Some(received) = received
        {
            self.received.push((id.clone(), received.clone()));
        }
        if !self.skip.is_empty() && self.skip.iter().any(|skip| skip == id.as_ref()) {
            return;
        }
        match item.kind() {
            Kind::Removed => {
                self.scan.removed.push(id.clone().into_owned());
                return;
            }
            Kind::Skipped => {
                self.scan.listed += 1;
                self.scan.discarded += 1;
            }
            Kind::Message => {
                self.scan.listed += 1;
                let sender = sender
                    .as_deref()
                    .filter(|sender| Some(*sender) != from.as_deref());
                if item.matched
                    || self
                        .matcher
                        .matches(from.as_deref().into_iter().chain(sender))
                {
                    self.scan.matched.push(id.clone().into_owned());
                } else {
                    self.scan.discarded += 1;
                }
            }
        }
        if let Some(received) = received
            && self
                .oldest
                .as_deref()
                .is_none_or(|oldest| received.as_ref() < oldest)
        {
            self.oldest = Some(received.clone());
        }
    }

    fn finish(self) -> PageScan {
        let mut scan = self.scan;
        if let Some(oldest) = &self.oldest {
            scan.oldest =
                OffsetDateTime::parse(oldest, &time::format_description::well_known::Rfc3339).ok();
            if self.boundary {
                scan.boundary_ids = self
                    .received
                    .into_iter()
                    .filter(|(_, received)| received == oldest)
                    .map(|(id, _)| id.into_owned())
                    .collect();
            }
        }
        scan
    }
}

/// The page object: `@odata.nextLink`, `@odata.deltaLink`, `value`.
struct PageSeed<'r, 'm, 'de>(&'r mut PageReader<'m, 'de>);

impl<'de> DeserializeSeed<'de> for PageSeed<'_, '_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PageSeed<'_, '_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Graph collection page")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Text<'de>>()? {
            match key.0.as_ref() {
                "@odata.nextLink" => {
                    self.0.scan.next_link = map
                        .next_value::<Option<Text<'de>>>()?
                        .map(|link| link.0.into_owned());
                }
                "@odata.deltaLink" => {
                    self.0.scan.delta_link = map
                        .next_value::<Option<Text<'de>>>()?
                        .map(|link| link.0.into_owned());
                }
                "value" => map.next_value_seed(ItemsSeed(&mut *self.0))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// `value`: the items, each read and then added to the scan. `null` is an empty page.
struct ItemsSeed<'r, 'm, 'de>(&'r mut PageReader<'m, 'de>);

impl<'de> DeserializeSeed<'de> for ItemsSeed<'_, '_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed<'_, '_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of messages")
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let matcher = self.0.matcher;
        while let Some(item) = seq.next_element_seed(ItemSeed(matcher))? {
            self.0.add(item);
        }
        Ok(())
    }
}

/// One item of `value`.
struct ItemSeed<'m>(&'m CrmMatcher);

impl<'de> DeserializeSeed<'de> for ItemSeed<'_> {
    type Value = Item<'de>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Item<'de>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ItemSeed<'_> {
    type Value = Item<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a message")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item<'de>, A::Error> {
        let mut item = Item::default();
        let mut id = None;
        while let Some(key) = map.next_key::<Text<'de>>()? {
            match key.0.as_ref() {
                "id" => id = Some(map.next_value::<Text<'de>>()?.0),
                "@odata.type" => {
                    item.meeting = map
                        .next_value::<Option<Text<'_>>>()?
                        .is_some_and(|t| is_meeting_message(&t.0));
                }
                "@removed" => {
                    map.next_value::<IgnoredAny>()?;
                    item.removed = true;
                }
                "isDraft" => item.draft = map.next_value::<Option<bool>>()? == Some(true),
                "receivedDateTime" => {
                    item.received = map.next_value::<Option<Text<'de>>>()?.map(|t| t.0);
                }
                "from" => {
                    item.from = map
                        .next_value::<Option<Recipient<'de>>>()?
                        .and_then(Recipient::address)
                }
                "sender" => {
                    item.sender = map
                        .next_value::<Option<Recipient<'de>>>()?
                        .and_then(Recipient::address)
                }
                "toRecipients" | "ccRecipients" | "bccRecipients" | "replyTo" => {
                    let seed = RecipientsSeed {
                        matcher: self.0,
                        done: item.matched,
                    };
                    item.matched |= map.next_value_seed(seed)?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        item.id = id.ok_or_else(|| de::Error::missing_field("id"))?;
        Ok(item)
    }
}

/// A recipient list, each address matched as it is read until one matches (`done`: one
/// already did); whether one did. `null` is an empty list.
struct RecipientsSeed<'m> {
    matcher: &'m CrmMatcher,
    done: bool,
}

impl<'de> DeserializeSeed<'de> for RecipientsSeed<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for RecipientsSeed<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of recipients")
    }
    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(self.done)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(self.done)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_seq(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut matched = self.done;
        while !matched {
            let Some(recipient) = seq.next_element::<Recipient<'de>>()? else {
                return Ok(false);
            };
            if let Some(address) = recipient.address() {
                matched = self.matcher.matches([address.as_ref()]);
            }
        }
        // Matched: the rest of the list is only read past.
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(true)
    }
}

/// `{"emailAddress": {"address": ...}}` (the name is not needed to match).
#[derive(Deserialize)]
struct Recipient<'a> {
    #[serde(rename = "emailAddress", borrow, default)]
    email_address: Option<Address<'a>>,
}

#[derive(Deserialize)]
struct Address<'a> {
    #[serde(borrow, default, deserialize_with = "opt_text")]
    address: Option<Cow<'a, str>>,
}

fn opt_text<'de: 'a, 'a, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Cow<'a, str>>, D::Error> {
    Ok(Option::<Text<'a>>::deserialize(deserializer)?.map(|text| text.0))
}

impl<'a> Recipient<'a> {
    fn address(self) -> Option<Cow<'a, str>> {
        self.email_address?.address
    }
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
        let meeting = self.odata_type.as_deref().is_some_and(is_meeting_message);
        !meeting && self.is_draft != Some(true)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use connector_core::domain::CrmRecordKind;
    use connector_core::matching::CrmMatchIndexBuilder;

    use super::*;

    /// contoso.com is the tenant; the CRM knows a few acme.com people and the globex.com account.
    fn matcher() -> CrmMatcher {
        let mut builder = CrmMatchIndexBuilder::new();
        for (address, id) in [
            ("reply@acme.com", "c1"),
            ("assistant@acme.com", "c2"),
            ("o.brien@acme.com", "c3"),
            ("\"quoted\"@acme.com", "c4"),
            ("colleague@contoso.com", "c5"),
        ] {
            builder.add_address(address, [(CrmRecordKind::Contact, id)]);
        }
        builder.add_domain("globex.com", ["a1"]);
        CrmMatcher::with_index(
            Arc::new(builder.finish()),
            ["contoso.com"],
            ["me@contoso.com"],
        )
    }

    fn scan(json: &[u8]) -> PageScan {
        scan_page(json, &matcher(), &[], false).expect("parses")
    }

    #[test]
    fn a_delta_page_is_classified_and_matched_in_one_pass() {
        let json = br##"{"@odata.context":"x","@odata.nextLink":"https://graph/v1.0/me/mailFolders/a/messages/delta?$skiptoken=t",
            "value":[
              {"@odata.type":"#microsoft.graph.message","@odata.etag":"W/\"x\"","id":"AAk1","receivedDateTime":"2026-03-01T08:00:00Z","isDraft":false,
               "from":{"emailAddress":{"name":"Jane","address":"jane@acme.com"}},"sender":null,
               "toRecipients":[{"emailAddress":{"name":"Me","address":"me@contoso.com"}}],"ccRecipients":[],"bccRecipients":null,
               "replyTo":[{"emailAddress":{"address":"Reply@Acme.com"}}]},
              {"@odata.type":"#microsoft.graph.eventMessageRequest","id":"AAk2","isDraft":false,
               "from":{"emailAddress":{"address":"reply@acme.com"}}},
              {"@odata.type":"#microsoft.graph.message","id":"AAk3","isDraft":true,
               "from":{"emailAddress":{"address":"reply@acme.com"}}},
              {"@odata.type":"#microsoft.graph.message","id":"AAk4","@removed":{"reason":"deleted"}},
              {"id":"AAk5","from":{"emailAddress":{"address":"jane@acme.com"}},"sender":{"emailAddress":{"address":"jane@acme.com"}},
               "receivedDateTime":"2026-02-27T10:00:00Z"},
              {"id":"AAk6","from":{"emailAddress":{"address":"jane@acme.com"}},"sender":{"emailAddress":{"address":"assistant@acme.com"}}},
              {"id":"AAk7","sender":{"emailAddress":{"address":"ceo@sales.globex.com"}},"from":{"emailAddress":{"address":"ceo@sales.globex.com"}}},
              {"id":"AAk8","from":{"emailAddress":{"address":"colleague@contoso.com"}},
               "toRecipients":[{"emailAddress":{"address":"me@contoso.com"}},{"emailAddress":{"address":"x@unknown.org"}}]}
            ]}"##;
        let scan = scan(json);
        assert_eq!(scan.matched, ["AAk1", "AAk6", "AAk7"]);
        assert_eq!(scan.removed, ["AAk4"]);
        // AAk2 (meeting), AAk3 (draft), AAk5 (nobody in the CRM), AAk8 (a colleague, even
        // one the CRM lists, and an unknown address).
        assert_eq!((scan.listed, scan.discarded), (7, 4));
        assert_eq!(
            scan.next_link.as_deref(),
            Some("https://graph/v1.0/me/mailFolders/a/messages/delta?$skiptoken=t")
        );
        assert_eq!(scan.delta_link, None);
        assert_eq!(
            scan.oldest,
            Some(time::macros::datetime!(2026-02-27 10:00 UTC))
        );
        assert!(scan.boundary_ids.is_empty(), "only asked for with boundary");
    }

    #[test]
    fn escaped_strings_are_read_as_their_text() {
        // Graph may escape any character of a JSON string (`\/`, `\uXXXX`, quotes in a
        // display name or a quoted local part); such a string cannot be borrowed.
        let json = br##"{"@odata.deltaLink":"https:\/\/graph\/v1.0\/delta?$deltatoken=a\u0026b",
            "value":[
              {"@odata.type":"#microsoft.graph.eventMessage\u0052equest","id":"AA\u006b1","isDraft":false,
               "from":{"emailAddress":{"address":"reply@acme.com"}}},
              {"@odata.type":"#microsoft.graph.message","id":"AA\u006b2","receivedDateTime":"2026-03-01T08:00:00\u005a",
               "from":{"emailAddress":{"name":"O\"Brien","address":"o.brien\u0040acme.com"}}},
              {"id":"AAk3","ccRecipients":[{"emailAddress":{"address":null}},{"emailAddress":null},{}],
               "toRecipients":[{"emailAddress":{"address":"plain@acme.com"}},{"emailAddress":{"address":"\"quoted\"@acme.com"}}]},
              {"\u0069d":"AAk4","\u0040removed":{}}
            ]}"##;
        let scan = scan(json);
        assert_eq!(
            scan.delta_link.as_deref(),
            Some("https://graph/v1.0/delta?$deltatoken=a&b")
        );
        assert_eq!(scan.matched, ["AAk2", "AAk3"]);
        assert_eq!(scan.removed, ["AAk4"]);
        assert_eq!((scan.listed, scan.discarded), (3, 1));
        assert_eq!(
            scan.oldest,
            Some(time::macros::datetime!(2026-03-01 08:00 UTC))
        );
    }

    #[test]
    fn skipped_items_are_not_counted_but_stay_on_the_boundary() {
        // A keyset-paged list: the previous page ended at 09:00 with AAk3, which this page
        // repeats; the next page will repeat what was received at this page's oldest instant.
        let json = br##"{"value":[
              {"id":"AAk1","receivedDateTime":"2026-03-01T10:00:00Z","from":{"emailAddress":{"address":"reply@acme.com"}}},
              {"id":"AAk2","receivedDateTime":"2026-03-01T09:00:00Z","from":{"emailAddress":{"address":"jane@acme.com"}}},
              {"id":"AAk3","receivedDateTime":"2026-03-01T09:00:00Z","from":{"emailAddress":{"address":"reply@acme.com"}}},
              {"id":"AAk4","receivedDateTime":"2026-03-01T09:00:00Z","isDraft":true}
            ]}"##;
        let scan = scan_page(json, &matcher(), &["AAk3".to_owned()], true).expect("parses");
        assert_eq!(scan.matched, ["AAk1"]);
        assert_eq!((scan.listed, scan.discarded), (3, 2));
        assert_eq!(
            scan.oldest,
            Some(time::macros::datetime!(2026-03-01 09:00 UTC))
        );
        assert_eq!(scan.boundary_ids, ["AAk2", "AAk3", "AAk4"]);
    }

    #[test]
    fn a_malformed_page_is_an_error() {
        for json in [
            &br#"{"value":[{"id":"AAk1","receivedDateTime":12}]}"#[..],
            br#"{"value":[{"receivedDateTime":"2026-03-01T09:00:00Z"}]}"#,
            br#"{"value":[{"id":"AAk1","toRecipients":{"emailAddress":{}}}]}"#,
            br#"{"value":[{"id":"AAk1"}]} trailing"#,
            br#"{"value":[{"id":"AAk1"}"#,
        ] {
            assert!(
                scan_page(json, &matcher(), &[], false).is_err(),
                "{}",
                String::from_utf8_lossy(json)
            );
        }
        assert_eq!(scan(br#"{"value":null}"#), PageScan::default());
    }
}

#[cfg(test)]
#[path = "page_conformance.rs"]
mod conformance;
