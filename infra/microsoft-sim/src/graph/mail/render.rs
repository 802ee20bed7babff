//! Rendering stored messages and folders as Graph JSON: the default property set or a `$select`, the id form
//! the request prefers, `Mail.ReadBasic` stripping, and `outlook.body-content-type` conversion.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use serde_json::{Map, Value, json};

use super::query::format_datetime;
use super::store::{Content, MailboxData, MessageRecord};
use super::text::{html_to_text, preview};
use crate::generate::{GeneratedKind, GeneratedMessage, Owner, html_escape};

/// `microsoft.graph.message` properties, in the order Graph serializes the default set.
pub const MESSAGE_PROPERTIES: [&str; 31] = [
    "id",
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "categories",
    "receivedDateTime",
    "sentDateTime",
    "hasAttachments",
    "internetMessageId",
    "subject",
    "bodyPreview",
    "importance",
    "parentFolderId",
    "conversationId",
    "conversationIndex",
    "isDeliveryReceiptRequested",
    "isReadReceiptRequested",
    "isRead",
    "isDraft",
    "webLink",
    "inferenceClassification",
    "body",
    "sender",
    "from",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "flag",
    // Only when selected.
    "uniqueBody",
    "internetMessageHeaders",
];

/// The properties Graph returns without `$select` (everything but the select-only ones).
pub fn default_message_properties() -> &'static [&'static str] {
    &MESSAGE_PROPERTIES[..29]
}

/// Extra properties an `eventMessageRequest` carries in the default set.
const MEETING_PROPERTIES: [&str; 13] = [
    "meetingMessageType",
    "type",
    "isOutOfDate",
    "isAllDay",
    "isDelegated",
    "responseRequested",
    "allowNewTimeProposals",
    "meetingRequestType",
    "startDateTime",
    "endDateTime",
    "location",
    "recurrence",
    "previousLocation",
];

/// Properties the store computes; JSON content never overrides them.
const OWNED: [&str; 5] = [
    "id",
    "parentFolderId",
    "changeKey",
    "lastModifiedDateTime",
    "@odata.etag",
];

/// How to render for this request.
#[derive(Debug, Clone, Copy)]
pub struct RenderOptions<'a> {
    pub owner: &'a Owner,
    pub immutable_ids: bool,
    /// `Prefer: outlook.body-content-type`: `Some(true)` text, `Some(false)` html.
    pub body_text: Option<bool>,
    /// `Mail.ReadBasic` only: no `body`, `bodyPreview`, `uniqueBody`.
    pub basic: bool,
    /// Delta responses always carry `@odata.type`; lists only for derived types.
    pub always_type: bool,
}

pub fn change_key(key: u32, version: u32) -> String {
    let mut bytes = vec![0x09, 0x00, 0x00, 0x00, 0x16, 0x00, 0x00, 0x00];
    bytes.extend_from_slice(&key.to_be_bytes());
    bytes.extend_from_slice(&version.to_be_bytes());
    STANDARD.encode(bytes)
}

fn recipient(name: &str, address: &str) -> Value {
    json!({"emailAddress": {"name": name, "address": address}})
}

fn odata_type(rec: &MessageRecord) -> &str {
    match &rec.content {
        Content::Generated(g) if g.kind == GeneratedKind::MeetingRequest => {
            "#microsoft.graph.eventMessageRequest"
        }
        Content::Generated(_) => "#microsoft.graph.message",
        Content::Json(m) => m
            .get("@odata.type")
            .and_then(Value::as_str)
            .unwrap_or("#microsoft.graph.message"),
    }
}

/// One message as Graph JSON. `select` is canonical property names (`id` always included).
pub fn render_message(
    data: &MailboxData,
    key: u32,
    rec: &MessageRecord,
    select: Option<&[&'static str]>,
    opts: &RenderOptions<'_>,
) -> Map<String, Value> {
    let mut out = Map::new();
    let ty = odata_type(rec);
    if opts.always_type || ty != "#microsoft.graph.message" {
        out.insert("@odata.type".into(), Value::from(ty));
    }
    let ck = change_key(key, rec.version);
    out.insert("@odata.etag".into(), Value::from(format!("W/\"{ck}\"")));
    let id = if opts.immutable_ids {
        data.immutable_id(key)
    } else {
        data.rest_id(key, rec)
    };
    out.insert("id".into(), Value::from(id.clone()));
    let meeting =
        ty == "#microsoft.graph.eventMessageRequest" || ty == "#microsoft.graph.eventMessage";
    let selected: Vec<&str> = match select {
        Some(s) => s.to_vec(),
        None => {
            let mut all = default_message_properties().to_vec();
            if meeting {
                all.extend_from_slice(&MEETING_PROPERTIES);
            }
            all
        }
    };
    let generated = match &rec.content {
        Content::Generated(g) => Some(GeneratedView::new(g, opts.owner)),
        Content::Json(_) => None,
    };
    for prop in selected {
        if prop == "id" {
            continue;
        }
        if opts.basic && matches!(prop, "body" | "bodyPreview" | "uniqueBody") {
            continue;
        }
        let value = match prop {
            "changeKey" => Value::from(ck.clone()),
            "lastModifiedDateTime" => Value::from(format_datetime(rec.last_modified)),
            "parentFolderId" => Value::from(data.folder_id(rec.folder)),
            "webLink" => Value::from(web_link(&id)),
            _ => match (&rec.content, &generated) {
                (Content::Generated(_), Some(view)) => view.property(prop, rec),
                (Content::Json(map), _) => json_property(map, prop),
                _ => Value::Null,
            },
        };
        let value = match prop {
            "body" | "uniqueBody" => convert_body(value, opts.body_text),
            _ => value,
        };
        out.insert(prop.to_owned(), value);
    }
    out
}

/// One content property of a stored message as Graph JSON (not the store-owned `id`, `changeKey`, ...): what
/// `$search` matches against, read exactly as a list would render it.
pub fn content_property(rec: &MessageRecord, prop: &str, owner: &Owner) -> Value {
    match &rec.content {
        Content::Generated(g) => GeneratedView::new(g, owner).property(prop, rec),
        Content::Json(map) => json_property(map, prop),
    }
}

fn web_link(id: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
    format!(
        "https://outlook.office365.com/owa/?ItemID={encoded}&exvsurl=1&viewmodel=ReadMessageItem"
    )
}

fn json_property(map: &Map<String, Value>, prop: &str) -> Value {
    if let Some(v) = map.get(prop) {
        return v.clone();
    }
    match prop {
        "bodyPreview" => Value::from(body_preview_of(map.get("body"))),
        "uniqueBody" => map.get("body").cloned().unwrap_or(Value::Null),
        "categories" | "toRecipients" | "ccRecipients" | "bccRecipients" | "replyTo" => json!([]),
        _ => Value::Null,
    }
}

/// `bodyPreview` from a Graph `body` object.
pub fn body_preview_of(body: Option<&Value>) -> String {
    let Some(body) = body else {
        return String::new();
    };
    let content = body.get("content").and_then(Value::as_str).unwrap_or("");
    let html = body
        .get("contentType")
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("html"));
    if html {
        preview(&html_to_text(content))
    } else {
        preview(content)
    }
}

/// Applies `outlook.body-content-type` to a `body`/`uniqueBody` value.
fn convert_body(value: Value, text: Option<bool>) -> Value {
    let Some(want_text) = text else { return value };
    let Value::Object(mut body) = value else {
        return value;
    };
    let is_html = body
        .get("contentType")
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("html"));
    let content = body
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if want_text && is_html {
        body.insert("contentType".into(), Value::from("text"));
        body.insert("content".into(), Value::from(html_to_text(&content)));
    } else if !want_text && !is_html {
        let lines: Vec<String> = content.lines().map(html_escape).collect();
        body.insert("contentType".into(), Value::from("html"));
        body.insert(
            "content".into(),
            Value::from(format!(
                "<html><head>\r\n<meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\">\r\n</head>\r\n\
                 <body>\r\n<div>{}</div>\r\n</body>\r\n</html>\r\n",
                lines.join("<br>\r\n")
            )),
        );
    }
    Value::Object(body)
}

/// A generated message with its derived text computed once per render.
struct GeneratedView<'a> {
    g: &'a GeneratedMessage,
    owner: &'a Owner,
    body: std::cell::OnceCell<String>,
}

impl<'a> GeneratedView<'a> {
    fn new(g: &'a GeneratedMessage, owner: &'a Owner) -> GeneratedView<'a> {
        GeneratedView {
            g,
            owner,
            body: std::cell::OnceCell::new(),
        }
    }

    fn body(&self) -> &str {
        self.body.get_or_init(|| self.g.body_html(self.owner))
    }

    fn party(&self, p: crate::generate::Party) -> Value {
        let a = self.g.address(p, self.owner);
        recipient(&a.name, &a.address)
    }

    fn property(&self, prop: &str, rec: &MessageRecord) -> Value {
        let g = self.g;
        let draft = g.kind == GeneratedKind::Draft;
        match prop {
            "createdDateTime" => Value::from(format_datetime(rec.created)),
            "receivedDateTime" => Value::from(format_datetime(rec.received)),
            "sentDateTime" => Value::from(format_datetime(
                rec.received - (g.text_seed % 90) as i64 - 1,
            )),
            "categories" => json!([]),
            "hasAttachments" => Value::from(g.has_attachments),
            "internetMessageId" => Value::from(g.internet_message_id(self.owner)),
            "subject" => Value::from(g.subject()),
            "bodyPreview" => Value::from(preview(&html_to_text(self.body()))),
            "importance" => Value::from(if g.importance_high { "high" } else { "normal" }),
            "conversationId" => Value::from(conversation_id(g.conversation_key())),
            "conversationIndex" => Value::from(conversation_index(g.conversation_key(), g.ordinal)),
            "isDeliveryReceiptRequested" | "isReadReceiptRequested" => Value::from(false),
            "isRead" => Value::from(g.is_read),
            "isDraft" => Value::from(draft),
            "inferenceClassification" => {
                Value::from(if g.crm_match || !g.text_seed.is_multiple_of(4) {
                    "focused"
                } else {
                    "other"
                })
            }
            "body" | "uniqueBody" => json!({"contentType": "html", "content": self.body()}),
            "sender" | "from" => self.party(g.from),
            "toRecipients" => Value::Array(g.to.iter().flatten().map(|p| self.party(*p)).collect()),
            "ccRecipients" => Value::Array(g.cc.iter().flatten().map(|p| self.party(*p)).collect()),
            "bccRecipients" | "replyTo" => json!([]),
            "flag" => json!({"flagStatus": "notFlagged"}),
            "internetMessageHeaders" => json!([
                {"name": "Message-ID", "value": g.internet_message_id(self.owner)},
                {"name": "Subject", "value": g.subject()},
            ]),
            _ if g.kind == GeneratedKind::MeetingRequest => self.meeting_property(prop, rec),
            _ => Value::Null,
        }
    }

    fn meeting_property(&self, prop: &str, rec: &MessageRecord) -> Value {
        let g = self.g;
        // The meeting is a few days after the invitation, on the hour, 30 or 60 minutes long.
        let start = (rec.received + 86_400 * (1 + (g.text_seed % 10) as i64)) / 3600 * 3600;
        let end = start
            + if g.text_seed.is_multiple_of(2) {
                1800
            } else {
                3600
            };
        let dt = |t: i64| {
            let s = format_datetime(t);
            json!({"dateTime": format!("{}.0000000", s.trim_end_matches('Z')), "timeZone": "UTC"})
        };
        match prop {
            "meetingMessageType" => Value::from("meetingRequest"),
            "type" => Value::from("singleInstance"),
            "isOutOfDate" | "isAllDay" | "isDelegated" => Value::from(false),
            "responseRequested" | "allowNewTimeProposals" => Value::from(true),
            "meetingRequestType" => Value::from("newMeetingRequest"),
            "startDateTime" => dt(start),
            "endDateTime" => dt(end),
            "location" => {
                json!({"displayName": "Microsoft Teams Meeting", "locationType": "default",
                                 "uniqueIdType": "unknown"})
            }
            _ => Value::Null,
        }
    }
}

pub fn conversation_id(key: u64) -> String {
    let mut bytes = vec![0x00, 0x04, 0x24, 0x00];
    bytes.extend_from_slice(&key.to_be_bytes());
    bytes.extend_from_slice(&[0x00, 0x10, 0x00]);
    bytes.extend_from_slice(&key.rotate_left(17).to_le_bytes());
    URL_SAFE.encode(bytes)
}

fn conversation_index(key: u64, ordinal: u32) -> String {
    let mut bytes = vec![0x01, 0xD9];
    bytes.extend_from_slice(&key.to_be_bytes());
    bytes.extend_from_slice(&key.rotate_left(9).to_be_bytes());
    bytes.extend_from_slice(&ordinal.to_be_bytes());
    STANDARD.encode(bytes)
}

/// Normalises a world / control-API message: the store owns ids and change tracking, Graph's defaults fill
/// what the JSON leaves out. Returns the content, `receivedDateTime` and `createdDateTime` (unix seconds).
pub fn normalise_json_message(
    mut map: Map<String, Value>,
    now: i64,
    owner: &Owner,
) -> Result<(Map<String, Value>, i64, i64), String> {
    for owned in OWNED {
        map.remove(owned);
    }
    let parse = |name: &str, map: &Map<String, Value>| -> Result<Option<i64>, String> {
        match map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => super::query::parse_datetime_literal(s)
                .map(|t| Some(t.unix_timestamp()))
                .ok_or_else(|| format!("{name} {s:?} is not an ISO 8601 date-time")),
            Some(other) => Err(format!("{name} must be a string, not {other}")),
        }
    };
    let received = parse("receivedDateTime", &map)?.unwrap_or(now);
    let created = parse("createdDateTime", &map)?.unwrap_or(received);
    let sent = parse("sentDateTime", &map)?.unwrap_or(received);
    map.insert(
        "receivedDateTime".into(),
        Value::from(format_datetime(received)),
    );
    map.insert(
        "createdDateTime".into(),
        Value::from(format_datetime(created)),
    );
    map.insert("sentDateTime".into(), Value::from(format_datetime(sent)));
    let from = map.get("from").cloned().filter(|v| !v.is_null());
    if !map.contains_key("sender") {
        map.insert("sender".into(), from.clone().unwrap_or(Value::Null));
    }
    if !map.contains_key("from") {
        map.insert(
            "from".into(),
            map.get("sender").cloned().unwrap_or(Value::Null),
        );
    }
    let domain = from
        .as_ref()
        .and_then(|f| f.pointer("/emailAddress/address"))
        .and_then(Value::as_str)
        .and_then(|a| a.rsplit_once('@').map(|(_, d)| d.to_owned()))
        .unwrap_or_else(|| owner.domain().to_owned());
    map.entry("internetMessageId").or_insert_with(|| {
        Value::from(format!(
            "<{}@{}>",
            uuid::Uuid::new_v4().simple(),
            domain.to_uppercase()
        ))
    });
    map.entry("conversationId")
        .or_insert_with(|| Value::from(conversation_id(rand::random())));
    map.entry("conversationIndex")
        .or_insert_with(|| Value::from(conversation_index(rand::random(), 0)));
    for (k, v) in [
        ("categories", json!([])),
        ("hasAttachments", json!(false)),
        ("subject", json!("")),
        ("importance", json!("normal")),
        ("isDeliveryReceiptRequested", json!(false)),
        ("isReadReceiptRequested", json!(false)),
        ("isRead", json!(false)),
        ("isDraft", json!(false)),
        ("inferenceClassification", json!("focused")),
        ("body", json!({"contentType": "text", "content": ""})),
        ("toRecipients", json!([])),
        ("ccRecipients", json!([])),
        ("bccRecipients", json!([])),
        ("replyTo", json!([])),
        ("flag", json!({"flagStatus": "notFlagged"})),
    ] {
        map.entry(k).or_insert(v);
    }
    if !map.contains_key("bodyPreview") {
        let p = body_preview_of(map.get("body"));
        map.insert("bodyPreview".into(), Value::from(p));
    }
    Ok((map, received, created))
}

/// The full JSON of a message (for turning a generated message into editable JSON).
pub fn materialise(
    data: &MailboxData,
    key: u32,
    rec: &MessageRecord,
    owner: &Owner,
) -> Map<String, Value> {
    let opts = RenderOptions {
        owner,
        immutable_ids: false,
        body_text: None,
        basic: false,
        always_type: false,
    };
    let mut map = render_message(data, key, rec, None, &opts);
    for owned in OWNED {
        map.remove(owned);
    }
    map
}

/// A mail folder as Graph v1.0 serializes it.
pub fn render_folder(
    data: &MailboxData,
    key: u32,
    select: Option<&[&'static str]>,
) -> Map<String, Value> {
    let f = &data.folders[key as usize];
    let (total, unread) = data.counts(key);
    let parent = match f.parent {
        Some(p) => Value::from(data.folder_id(p)),
        // The root's parent is an internal folder Graph still names; ours has no other use.
        None => Value::from(super::ids::folder_id(&data.tag, u32::MAX)),
    };
    let all = [
        ("id", Value::from(data.folder_id(key))),
        ("displayName", Value::from(f.display_name.clone())),
        ("parentFolderId", parent),
        ("childFolderCount", Value::from(f.children.len())),
        ("unreadItemCount", Value::from(unread)),
        ("totalItemCount", Value::from(total)),
        ("isHidden", Value::from(f.hidden)),
    ];
    let mut out = Map::new();
    for (name, value) in all {
        if name == "id" || select.is_none_or(|s| s.contains(&name)) {
            out.insert(name.into(), value);
        }
    }
    out
}

pub const FOLDER_PROPERTIES: [&str; 7] = [
    "id",
    "displayName",
    "parentFolderId",
    "childFolderCount",
    "unreadItemCount",
    "totalItemCount",
    "isHidden",
];
