//! Graph Teams: the teams, channels and chats of the world (`TeamsStore`), the Graph routes to list joined teams
//! and channels, create chats and post channel and chat messages, and the control routes that show what was
//! posted.
//!
//! Facts and sources (graph-contract §7; docs/teams.md in this crate):
//! - `GET /me/joinedTeams` returns only `id`, `displayName`, `description` [doc]; `GET /teams/{id}/channels`
//!   hides private and shared channels the caller is not a member of [doc]; `allChannels` adds the channels
//!   shared into the team and an `@odata.id` per channel [doc].
//! - `POST .../messages` → 201 chatMessage [doc]; over 28 KB → 413 [Teams limits page; the Graph error body is
//!   unconfirmed]; not a member → 403 (error body unconfirmed).
//! - `POST /chats` → 201; "only one one-on-one chat can exist between two members. If a one-on-one chat already
//!   exists, this operation returns the existing chat" [doc] — with 201 as well (the doc names no other status).
//! - At most 4 requests per second per app on one channel [doc, throttling limits]: the fifth within a second
//!   gets 429 with `Retry-After`.
//!
//! World: a team is the union of the `joinedTeams` entries naming it; each entry makes its user a member. A
//! standard channel is visible to every member; a private or shared channel only to the users whose entry lists
//! it. A channel with `hostTeamId` is shared into the team from another: `allChannels` shows it, `channels` not.

// Handlers answer with Graph error responses directly; boxing them would buy nothing on these paths.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::graph::calendar::tz;
use crate::graph::{Principal, graph_error};
use crate::state::{SharedSim, Sim, UserInfo};
use crate::world::World;

/// Teams' message size limit: about 28 KB including HTML, mentions and reactions [Teams limits].
pub const MAX_MESSAGE_BYTES: usize = 28 * 1024;
/// Requests per second per app on one channel [throttling limits].
const DEFAULT_PER_CHANNEL_PER_SECOND: usize = 4;

#[derive(Debug, Clone)]
struct Channel {
    id: String,
    display_name: String,
    description: Option<String>,
    membership_type: String,
    members: BTreeSet<String>,
    host_team_id: Option<String>,
    created: OffsetDateTime,
    extra: Map<String, Value>,
}

#[derive(Debug, Clone)]
struct Team {
    id: String,
    tenant_id: String,
    display_name: String,
    description: Option<String>,
    members: BTreeSet<String>,
    channels: BTreeMap<String, Channel>,
}

impl Team {
    fn can_see(&self, channel: &Channel, user_id: &str) -> bool {
        self.members.contains(user_id)
            && (channel.membership_type == "standard" || channel.members.contains(user_id))
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatMember {
    pub user_id: String,
    pub user_principal_name: String,
    pub display_name: String,
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Chat {
    pub id: String,
    pub chat_type: String,
    pub topic: Option<String>,
    pub tenant_id: String,
    pub members: Vec<ChatMember>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_date_time: OffsetDateTime,
}

/// A message posted through Graph, as `GET /_sim/teams/messages` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PostedMessage {
    pub id: String,
    pub team_id: Option<String>,
    pub channel_id: Option<String>,
    pub chat_id: Option<String>,
    pub sender_id: String,
    pub sender_user_principal_name: String,
    pub client_id: String,
    pub content_type: String,
    pub content: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_date_time: OffsetDateTime,
    pub web_url: String,
}

#[derive(Debug)]
struct Inner {
    teams: BTreeMap<String, Team>,
    chats: Vec<Chat>,
    posted: Vec<PostedMessage>,
    last_message_ms: i64,
    per_channel_per_second: usize,
    recent: HashMap<(String, String), VecDeque<Instant>>,
}

#[derive(Debug)]
pub struct TeamsStore {
    inner: Mutex<Inner>,
}

impl TeamsStore {
    pub fn from_world(world: &World, sim_clock_now: OffsetDateTime) -> anyhow::Result<Self> {
        let mut teams: BTreeMap<String, Team> = BTreeMap::new();
        for tenant in &world.tenants {
            for user in &tenant.users {
                let user_id = user.id.to_ascii_lowercase();
                for entry in &user.joined_teams {
                    let team = teams
                        .entry(entry.id.to_ascii_lowercase())
                        .or_insert_with(|| Team {
                            id: entry.id.clone(),
                            tenant_id: tenant.id.to_ascii_lowercase(),
                            display_name: entry.display_name.clone(),
                            description: entry.description.clone(),
                            members: BTreeSet::new(),
                            channels: BTreeMap::new(),
                        });
                    anyhow::ensure!(
                        team.tenant_id.eq_ignore_ascii_case(&tenant.id),
                        "team {} appears in two tenants",
                        entry.id
                    );
                    team.members.insert(user_id.clone());
                    for ch in &entry.channels {
                        anyhow::ensure!(
                            ["standard", "private", "shared"]
                                .contains(&ch.membership_type.as_str()),
                            "channel {}: membershipType is standard, private or shared",
                            ch.id
                        );
                        let mut extra = ch.extra.clone();
                        let description = extra
                            .remove("description")
                            .and_then(|v| v.as_str().map(str::to_owned));
                        let host_team_id = extra
                            .remove("hostTeamId")
                            .and_then(|v| v.as_str().map(str::to_owned));
                        let channel =
                            team.channels
                                .entry(ch.id.clone())
                                .or_insert_with(|| Channel {
                                    id: ch.id.clone(),
                                    display_name: ch.display_name.clone(),
                                    description,
                                    membership_type: ch.membership_type.clone(),
                                    members: BTreeSet::new(),
                                    host_team_id,
                                    created: sim_clock_now,
                                    extra,
                                });
                        channel.members.insert(user_id.clone());
                    }
                }
            }
        }
        Ok(TeamsStore {
            inner: Mutex::new(Inner {
                teams,
                chats: Vec::new(),
                posted: Vec::new(),
                last_message_ms: 0,
                per_channel_per_second: DEFAULT_PER_CHANNEL_PER_SECOND,
                recent: HashMap::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("teams lock")
    }

    /// Every message posted so far, oldest first.
    pub fn posted(&self) -> Vec<PostedMessage> {
        self.lock().posted.clone()
    }

    pub fn chats(&self) -> Vec<Chat> {
        self.lock().chats.clone()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Graph routes

/// Routes relative to `/v1.0` (the Graph router nests them there).
pub fn router() -> Router<SharedSim> {
    Router::new()
        .route("/me/joinedTeams", get(joined_teams))
        .route("/me/joinedteams", get(joined_teams))
        .route("/teams/{team}/channels", get(channels))
        .route("/teams/{team}/allChannels", get(all_channels))
        .route("/teams/{team}/allchannels", get(all_channels))
        .route(
            "/teams/{team}/channels/{channel}/messages",
            post(post_channel_message).get(list_channel_messages),
        )
        .route("/chats", post(create_chat))
        .route(
            "/chats/{chat}/messages",
            post(post_chat_message).get(list_chat_messages),
        )
}

type HandlerResult = Result<Response, Response>;

fn forbidden() -> Response {
    graph_error(StatusCode::FORBIDDEN, "Forbidden", "Forbidden")
}

fn bad_request(message: &str) -> Response {
    graph_error(StatusCode::BAD_REQUEST, "BadRequest", message)
}

fn caller(sim: &Sim, principal: &Principal) -> Result<UserInfo, Response> {
    sim.user(&principal.tenant_id, &principal.user_id)
        .ok_or_else(|| {
            graph_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                "Resource could not be discovered.",
            )
        })
}

async fn joined_teams(State(sim): State<SharedSim>, principal: Principal) -> HandlerResult {
    principal.require_any(&[
        "Team.ReadBasic.All",
        "TeamSettings.Read.All",
        "TeamSettings.ReadWrite.All",
        "User.Read.All",
        "User.ReadWrite.All",
        "Directory.Read.All",
        "Directory.ReadWrite.All",
    ])?;
    let user = caller(&sim, &principal)?;
    let inner = sim.teams.lock();
    let value: Vec<Value> = inner
        .teams
        .values()
        .filter(|t| t.members.contains(&user.id))
        .map(|t| json!({"id": t.id, "displayName": t.display_name, "description": t.description}))
        .collect();
    Ok(Json(json!({
        "@odata.context": format!("{}/v1.0/$metadata#teams", sim.base_url()),
        "@odata.count": value.len(),
        "value": value,
    }))
    .into_response())
}

const CHANNEL_READ: &[&str] = &[
    "Channel.ReadBasic.All",
    "ChannelSettings.Read.All",
    "ChannelSettings.ReadWrite.All",
    "Group.Read.All",
    "Group.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];

const CHANNEL_PROPERTIES: &[&str] = &[
    "id",
    "createdDateTime",
    "displayName",
    "description",
    "isFavoriteByDefault",
    "email",
    "tenantId",
    "webUrl",
    "membershipType",
];

fn channel_json(
    sim: &Sim,
    team: &Team,
    channel: &Channel,
    with_odata_id: bool,
) -> Map<String, Value> {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let mut map = Map::new();
    if with_odata_id {
        let host = channel.host_team_id.as_deref().unwrap_or(&team.id);
        map.insert(
            "@odata.id".into(),
            json!(format!(
                "{}/v1.0/tenants/{}/teams/{host}/channels/{}",
                sim.base_url(),
                team.tenant_id,
                channel.id
            )),
        );
    }
    map.insert("id".into(), json!(channel.id));
    map.insert(
        "createdDateTime".into(),
        json!(tz::format_utc(channel.created)),
    );
    map.insert("displayName".into(), json!(channel.display_name));
    map.insert("description".into(), json!(channel.description));
    map.insert("isFavoriteByDefault".into(), Value::Null);
    map.insert("email".into(), json!(""));
    map.insert("tenantId".into(), json!(team.tenant_id));
    map.insert(
        "webUrl".into(),
        json!(format!(
            "https://teams.microsoft.com/l/channel/{}/{}?groupId={}&tenantId={}",
            enc(&channel.id),
            enc(&channel.display_name),
            team.id,
            team.tenant_id
        )),
    );
    map.insert("membershipType".into(), json!(channel.membership_type));
    for (k, v) in &channel.extra {
        map.entry(k.clone()).or_insert_with(|| v.clone());
    }
    map
}

/// `$filter` on channels: `prop eq 'value'` clauses joined by `and` (what the sim supports).
fn channel_filter(text: &str) -> Result<Vec<(String, String)>, Response> {
    let invalid = || bad_request(&format!("Invalid filter clause: {text}"));
    let mut clauses = Vec::new();
    for clause in text.split(" and ") {
        let (prop, value) = clause.split_once(" eq ").ok_or_else(invalid)?;
        let prop = prop.trim();
        let value = value.trim();
        if !value.starts_with('\'') || !value.ends_with('\'') || value.len() < 2 {
            return Err(invalid());
        }
        if !CHANNEL_PROPERTIES
            .iter()
            .any(|p| p.eq_ignore_ascii_case(prop))
        {
            return Err(bad_request(&format!(
                "Could not find a property named '{prop}' on type 'microsoft.graph.channel'."
            )));
        }
        clauses.push((
            prop.to_owned(),
            value[1..value.len() - 1].replace("''", "'"),
        ));
    }
    Ok(clauses)
}

async fn list_channels(
    sim: SharedSim,
    principal: Principal,
    team_id: String,
    raw: Option<String>,
    all: bool,
) -> HandlerResult {
    principal.require_any(CHANNEL_READ)?;
    let user = caller(&sim, &principal)?;
    let pairs: Vec<(String, String)> = raw
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let filter = param("$filter")
        .map(|f| channel_filter(&f))
        .transpose()?
        .unwrap_or_default();
    let select: Option<Vec<String>> =
        param("$select").map(|s| s.split(',').map(|f| f.trim().to_owned()).collect());
    if let Some(unknown) = select
        .iter()
        .flatten()
        .find(|f| !CHANNEL_PROPERTIES.iter().any(|p| p.eq_ignore_ascii_case(f)))
    {
        return Err(bad_request(&format!(
            "Could not find a property named '{unknown}' on type 'microsoft.graph.channel'."
        )));
    }
    let inner = sim.teams.lock();
    let team = inner
        .teams
        .get(&team_id.to_ascii_lowercase())
        .ok_or_else(|| {
            graph_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("No team found with Group Id {team_id}"),
            )
        })?;
    if !team.members.contains(&user.id) {
        return Err(forbidden());
    }
    let mut value = Vec::new();
    for channel in team.channels.values() {
        if !team.can_see(channel, &user.id) || (!all && channel.host_team_id.is_some()) {
            continue;
        }
        let full = channel_json(&sim, team, channel, all);
        let matches = filter.iter().all(|(prop, expected)| {
            full.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(prop))
                .and_then(|(_, v)| v.as_str())
                == Some(expected.as_str())
        });
        if !matches {
            continue;
        }
        let shown = match &select {
            None => full,
            Some(fields) => full
                .into_iter()
                .filter(|(k, _)| {
                    k == "@odata.id"
                        || k == "id"
                        || fields.iter().any(|f| f.eq_ignore_ascii_case(k))
                })
                .collect(),
        };
        value.push(Value::Object(shown));
    }
    let context = if all { "allChannels" } else { "channels" };
    Ok(Json(json!({
        "@odata.context": format!("{}/v1.0/$metadata#teams('{}')/{context}", sim.base_url(), team.id),
        "@odata.count": value.len(),
        "value": value,
    }))
    .into_response())
}

async fn channels(
    State(sim): State<SharedSim>,
    principal: Principal,
    Path(team): Path<String>,
    RawQuery(raw): RawQuery,
) -> HandlerResult {
    list_channels(sim, principal, team, raw, false).await
}

async fn all_channels(
    State(sim): State<SharedSim>,
    principal: Principal,
    Path(team): Path<String>,
    RawQuery(raw): RawQuery,
) -> HandlerResult {
    list_channels(sim, principal, team, raw, true).await
}

/// The `body` of a chatMessage request: (contentType, content). Also enforces the size limit over the parts that
/// count towards it (content, mentions, attachments).
fn message_body(request: &Map<String, Value>) -> Result<(String, String), Response> {
    let body = request
        .get("body")
        .and_then(Value::as_object)
        .ok_or_else(|| bad_request("Missing required property 'body'."))?;
    let content = body
        .get("content")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request("Missing required property 'body.content'."))?;
    let content_type = match body
        .get("contentType")
        .and_then(Value::as_str)
        .unwrap_or("text")
    {
        t if t.eq_ignore_ascii_case("text") => "text",
        t if t.eq_ignore_ascii_case("html") => "html",
        other => {
            return Err(bad_request(&format!(
                "Invalid value '{other}' for body.contentType: text or html."
            )));
        }
    };
    let extras: usize = ["mentions", "attachments", "reactions"]
        .iter()
        .filter_map(|k| request.get(*k))
        .map(|v| serde_json::to_string(v).map_or(0, |s| s.len()))
        .sum();
    if content.len() + extras > MAX_MESSAGE_BYTES {
        return Err(graph_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "Request Entity too large",
        ));
    }
    Ok((content_type.to_owned(), content.to_owned()))
}

/// A JSON object request body, or Graph's 400 for anything else.
pub(crate) fn json_object(body: &[u8]) -> Result<Map<String, Value>, Response> {
    serde_json::from_slice(body).map_err(|_| {
        bad_request(
            "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
        )
    })
}

fn too_many_requests() -> Response {
    let mut response = graph_error(
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        "Please retry again later.",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

impl Inner {
    /// Records a request of `client` on `target` and says whether it is within the per-second limit.
    fn within_rate(&mut self, client: &str, target: &str) -> bool {
        if self.per_channel_per_second == 0 {
            return true;
        }
        let now = Instant::now();
        let window = self
            .recent
            .entry((client.to_ascii_lowercase(), target.to_owned()))
            .or_default();
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            window.pop_front();
        }
        if window.len() >= self.per_channel_per_second {
            return false;
        }
        window.push_back(now);
        true
    }

    /// Teams message ids are the creation time in epoch milliseconds; kept strictly increasing.
    fn next_message_id(&mut self, now: OffsetDateTime) -> (i64, OffsetDateTime) {
        let ms = ((now.unix_timestamp_nanos() / 1_000_000) as i64).max(self.last_message_ms + 1);
        self.last_message_ms = ms;
        let at =
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(now);
        (ms, at)
    }
}

fn format_ms(t: OffsetDateTime) -> String {
    let base = tz::format_utc(t.replace_nanosecond(0).unwrap_or(t));
    format!("{}.{:03}Z", base.trim_end_matches('Z'), t.millisecond())
}

/// What a new chatMessage response is made of.
struct NewMessage<'a> {
    context: String,
    id: i64,
    at: OffsetDateTime,
    web_url: String,
    sender: &'a UserInfo,
    content_type: &'a str,
    content: &'a str,
    request: &'a Map<String, Value>,
    channel_identity: Value,
    chat_id: Option<&'a str>,
}

fn chat_message_json(m: NewMessage<'_>) -> Value {
    let chat = m.chat_id.is_some();
    let mut message = json!({
        "@odata.context": m.context,
        "id": m.id.to_string(),
        "replyToId": null,
        "etag": m.id.to_string(),
        "messageType": "message",
        "createdDateTime": format_ms(m.at),
        "lastModifiedDateTime": format_ms(m.at),
        "lastEditedDateTime": null,
        "deletedDateTime": null,
        "subject": m.request.get("subject").cloned().unwrap_or(Value::Null),
        "summary": null,
        "chatId": m.chat_id,
        "importance": m.request.get("importance").cloned().unwrap_or(json!("normal")),
        "locale": "en-us",
        "webUrl": m.web_url,
        "policyViolation": null,
        "eventDetail": null,
        "from": {
            "application": null,
            "device": null,
            "user": {"@odata.type": "#microsoft.graph.teamworkUserIdentity", "id": m.sender.id,
                "displayName": m.sender.display_name, "userIdentityType": "aadUser", "tenantId": m.sender.tenant_id},
        },
        "body": {"contentType": m.content_type, "content": m.content},
        "channelIdentity": m.channel_identity,
        "attachments": m.request.get("attachments").cloned().unwrap_or(json!([])),
        "mentions": m.request.get("mentions").cloned().unwrap_or(json!([])),
        "reactions": [],
        "messageHistory": [],
    });
    if chat {
        // A chat message's `from` also names its conversation (null for a user's message), as in
        // https://learn.microsoft.com/en-us/graph/api/chat-post-messages (Response; read 2026-12-05).
        message["from"]["conversation"] = Value::Null;
    }
    message
}

async fn post_channel_message(
    State(sim): State<SharedSim>,
    principal: Principal,
    Path((team_id, channel_id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> HandlerResult {
    let request = json_object(&body)?;
    principal.require_any(&["ChannelMessage.Send", "Group.ReadWrite.All"])?;
    let sender = caller(&sim, &principal)?;
    let now = sim.now();
    let mut inner = sim.teams.lock();
    let team = inner
        .teams
        .get(&team_id.to_ascii_lowercase())
        .ok_or_else(|| {
            graph_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("No team found with Group Id {team_id}"),
            )
        })?;
    let channel = team.channels.get(&channel_id).ok_or_else(|| {
        graph_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("Channel '{channel_id}' was not found."),
        )
    })?;
    if !team.can_see(channel, &sender.id) {
        return Err(forbidden());
    }
    let (team_id, tenant_id, channel_id) =
        (team.id.clone(), team.tenant_id.clone(), channel.id.clone());
    let (content_type, content) = message_body(&request)?;
    if !inner.within_rate(&principal.client_id, &format!("{team_id}/{channel_id}")) {
        return Err(too_many_requests());
    }
    let (id, at) = inner.next_message_id(now);
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let web_url = format!(
        "https://teams.microsoft.com/l/message/{}/{id}?groupId={team_id}&tenantId={tenant_id}&createdTime={id}&parentMessageId={id}",
        enc(&channel_id)
    );
    let context = format!(
        "{}/v1.0/$metadata#teams('{team_id}')/channels('{}')/messages/$entity",
        sim.base_url(),
        enc(&channel_id)
    );
    let body = chat_message_json(NewMessage {
        context,
        id,
        at,
        web_url,
        sender: &sender,
        content_type: &content_type,
        content: &content,
        request: &request,
        channel_identity: json!({"teamId": team_id, "channelId": channel_id}),
        chat_id: None,
    });
    inner.posted.push(PostedMessage {
        id: id.to_string(),
        team_id: Some(team_id),
        channel_id: Some(channel_id),
        chat_id: None,
        sender_id: sender.id.clone(),
        sender_user_principal_name: sender.user_principal_name.clone(),
        client_id: principal.client_id.clone(),
        content_type,
        content,
        created_date_time: at,
        web_url: body["webUrl"].as_str().unwrap_or_default().to_owned(),
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// The user a `user@odata.bind` names: `https://graph.microsoft.com/v1.0/users('{id-or-upn}')` (any host), or
/// `users/{id-or-upn}`.
fn bound_user(bind: &str) -> Option<String> {
    let tail = bind
        .rsplit_once("/users")
        .map(|(_, t)| t)
        .or_else(|| bind.strip_prefix("users"))?;
    let inner = if let Some(rest) = tail.strip_prefix("('") {
        rest.strip_suffix("')")?
    } else if let Some(rest) = tail.strip_prefix('(') {
        rest.strip_suffix(')')?
    } else {
        tail.strip_prefix('/')?
    };
    let inner = url::form_urlencoded::parse(format!("x={inner}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())?;
    (!inner.is_empty()).then_some(inner)
}

fn chat_json(sim: &Sim, chat: &Chat) -> Value {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    json!({
        "@odata.context": format!("{}/v1.0/$metadata#chats/$entity", sim.base_url()),
        "id": chat.id,
        "topic": chat.topic,
        "createdDateTime": format_ms(chat.created_date_time),
        "lastUpdatedDateTime": format_ms(chat.created_date_time),
        "chatType": chat.chat_type,
        "webUrl": format!("https://teams.microsoft.com/l/chat/{}/0?tenantId={}", enc(&chat.id), chat.tenant_id),
        "tenantId": chat.tenant_id,
        "onlineMeetingInfo": null,
        "viewpoint": null,
    })
}

async fn create_chat(
    State(sim): State<SharedSim>,
    principal: Principal,
    body: axum::body::Bytes,
) -> HandlerResult {
    let request = json_object(&body)?;
    principal.require_any(&["Chat.Create", "Chat.ReadWrite"])?;
    let creator = caller(&sim, &principal)?;
    let chat_type = match request.get("chatType").and_then(Value::as_str) {
        Some("oneOnOne") => "oneOnOne",
        Some("group") => "group",
        Some(other) => {
            return Err(bad_request(&format!(
                "Invalid value '{other}' for chatType: oneOnOne or group."
            )));
        }
        None => return Err(bad_request("Missing required property 'chatType'.")),
    };
    let topic = request
        .get("topic")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if chat_type == "oneOnOne" && topic.is_some() {
        return Err(bad_request(
            "The chat title can be provided only if the chat is of group type.",
        ));
    }
    let entries = request
        .get("members")
        .and_then(Value::as_array)
        .ok_or_else(|| bad_request("Missing required property 'members'."))?;
    let mut members: Vec<ChatMember> = Vec::new();
    for entry in entries {
        let odata_type = entry
            .get("@odata.type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !odata_type.eq_ignore_ascii_case("#microsoft.graph.aadUserConversationMember") {
            return Err(bad_request(
                "Each member must be a #microsoft.graph.aadUserConversationMember.",
            ));
        }
        let roles: Vec<String> = entry
            .get("roles")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if roles.is_empty() || roles.iter().any(|r| r != "owner" && r != "guest") {
            return Err(bad_request(
                "Each member must be assigned a role of owner or guest.",
            ));
        }
        let bind = entry
            .get("user@odata.bind")
            .and_then(Value::as_str)
            .ok_or_else(|| bad_request("Missing 'user@odata.bind' on a member."))?;
        let named = bound_user(bind)
            .ok_or_else(|| bad_request(&format!("Invalid 'user@odata.bind' value '{bind}'.")))?;
        let user = sim.find_user(&named).ok_or_else(|| {
            graph_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("User '{named}' was not found."),
            )
        })?;
        if members.iter().any(|m| m.user_id == user.id) {
            return Err(bad_request(&format!("User '{named}' is listed twice.")));
        }
        members.push(ChatMember {
            user_id: user.id,
            user_principal_name: user.user_principal_name,
            display_name: user.display_name,
            roles,
        });
    }
    if chat_type == "oneOnOne" && members.len() != 2 {
        return Err(bad_request("A oneOnOne chat has exactly two members."));
    }
    if members.len() < 2 {
        return Err(bad_request("A chat has at least two members."));
    }
    if !members.iter().any(|m| m.user_id == creator.id) {
        return Err(graph_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "The user creating the chat must be one of its members.",
        ));
    }
    let now = sim.now();
    let mut inner = sim.teams.lock();
    if chat_type == "oneOnOne" {
        let mut pair: Vec<&str> = members.iter().map(|m| m.user_id.as_str()).collect();
        pair.sort_unstable();
        let id = format!("19:{}_{}@unq.gbl.spaces", pair[0], pair[1]);
        if let Some(existing) = inner.chats.iter().find(|c| c.id == id) {
            return Ok((StatusCode::CREATED, Json(chat_json(&sim, existing))).into_response());
        }
        let chat = Chat {
            id,
            chat_type: chat_type.into(),
            topic: None,
            tenant_id: creator.tenant_id.clone(),
            members,
            created_date_time: now,
        };
        let body = chat_json(&sim, &chat);
        inner.chats.push(chat);
        return Ok((StatusCode::CREATED, Json(body)).into_response());
    }
    let id = format!("19:{}@thread.v2", uuid::Uuid::new_v4().simple());
    let chat = Chat {
        id,
        chat_type: chat_type.into(),
        topic,
        tenant_id: creator.tenant_id.clone(),
        members,
        created_date_time: now,
    };
    let body = chat_json(&sim, &chat);
    inner.chats.push(chat);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn post_chat_message(
    State(sim): State<SharedSim>,
    principal: Principal,
    Path(chat_id): Path<String>,
    body: axum::body::Bytes,
) -> HandlerResult {
    let request = json_object(&body)?;
    principal.require_any(&["ChatMessage.Send", "Chat.ReadWrite"])?;
    let sender = caller(&sim, &principal)?;
    let now = sim.now();
    let mut inner = sim.teams.lock();
    let chat = inner
        .chats
        .iter()
        .find(|c| c.id == chat_id)
        .ok_or_else(|| {
            graph_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("Chat '{chat_id}' was not found."),
            )
        })?;
    if !chat.members.iter().any(|m| m.user_id == sender.id) {
        return Err(forbidden());
    }
    let (content_type, content) = message_body(&request)?;
    let (id, at) = inner.next_message_id(now);
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let web_url = format!(
        "https://teams.microsoft.com/l/message/{}/{id}?context=%7B%22contextType%22%3A%22chat%22%7D",
        enc(&chat_id)
    );
    let context = format!(
        "{}/v1.0/$metadata#chats('{}')/messages/$entity",
        sim.base_url(),
        enc(&chat_id)
    );
    let body = chat_message_json(NewMessage {
        context,
        id,
        at,
        web_url,
        sender: &sender,
        content_type: &content_type,
        content: &content,
        request: &request,
        channel_identity: Value::Null,
        chat_id: Some(&chat_id),
    });
    inner.posted.push(PostedMessage {
        id: id.to_string(),
        team_id: None,
        channel_id: None,
        chat_id: Some(chat_id),
        sender_id: sender.id.clone(),
        sender_user_principal_name: sender.user_principal_name.clone(),
        client_id: principal.client_id.clone(),
        content_type,
        content,
        created_date_time: at,
        web_url: body["webUrl"].as_str().unwrap_or_default().to_owned(),
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `$top` and `$skiptoken` of a message listing: at most 50 a page, 20 by default [docs below]; the sim's
/// `$skiptoken` is an offset into the newest-first list.
fn page_of(raw: Option<&str>) -> Result<(usize, usize), Response> {
    let mut top = 20;
    let mut skip = 0;
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if k.eq_ignore_ascii_case("$top") {
            top = v
                .parse::<usize>()
                .ok()
                .filter(|t| (1..=50).contains(t))
                .ok_or_else(|| bad_request("Invalid page size requested: $top must be 1 to 50."))?;
        } else if k.eq_ignore_ascii_case("$skiptoken") {
            skip = v
                .parse::<usize>()
                .map_err(|_| bad_request("Invalid $skiptoken."))?;
        }
    }
    Ok((top, skip))
}

/// One page of messages, newest first, with `@odata.nextLink` while more remain.
fn message_page(
    sim: &Sim,
    path: &str,
    raw: Option<&str>,
    mut messages: Vec<&PostedMessage>,
    users: &dyn Fn(&str) -> Option<UserInfo>,
) -> HandlerResult {
    let (top, skip) = page_of(raw)?;
    messages.sort_by_key(|m| std::cmp::Reverse(m.created_date_time));
    let page: Vec<Value> = messages
        .iter()
        .skip(skip)
        .take(top)
        .map(|m| {
            let sender = users(&m.sender_id);
            json!({
                "id": m.id,
                "replyToId": null,
                "etag": m.id,
                "messageType": "message",
                "createdDateTime": format_ms(m.created_date_time),
                "lastModifiedDateTime": format_ms(m.created_date_time),
                "deletedDateTime": null,
                "chatId": m.chat_id,
                "webUrl": m.web_url,
                "from": {"application": null, "device": null, "user": {
                    "@odata.type": "#microsoft.graph.teamworkUserIdentity",
                    "id": m.sender_id,
                    "displayName": sender.as_ref().map(|u| u.display_name.clone()),
                    "userIdentityType": "aadUser",
                    "tenantId": sender.as_ref().map(|u| u.tenant_id.clone()),
                }},
                "body": {"contentType": m.content_type, "content": m.content},
                "channelIdentity": m.team_id.as_ref().map(|team| json!({"teamId": team, "channelId": m.channel_id})),
                "attachments": [],
                "mentions": [],
                "reactions": [],
            })
        })
        .collect();
    let mut body = json!({"value": page});
    if skip + top < messages.len() {
        body["@odata.nextLink"] = json!(format!(
            "{}/v1.0{path}?$top={top}&$skiptoken={}",
            sim.base_url(),
            skip + top
        ));
    }
    Ok(Json(body).into_response())
}

/// `GET /teams/{team}/channels/{channel}/messages`: the channel's messages without replies; delegated
/// `ChannelMessage.Read.All` (or Group.Read(Write).All); `$top` up to 50, 20 by default
/// (https://learn.microsoft.com/en-us/graph/api/channel-list-messages, Permissions and Optional query parameters;
/// read 2026-12-05). The doc states no order; the sim answers newest first.
async fn list_channel_messages(
    State(sim): State<SharedSim>,
    principal: Principal,
    Path((team_id, channel_id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> HandlerResult {
    principal.require_any(&[
        "ChannelMessage.Read.All",
        "Group.Read.All",
        "Group.ReadWrite.All",
    ])?;
    let reader = caller(&sim, &principal)?;
    let inner = sim.teams.lock();
    let team = inner
        .teams
        .get(&team_id.to_ascii_lowercase())
        .ok_or_else(|| {
            graph_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("No team found with Group Id {team_id}"),
            )
        })?;
    let channel = team.channels.get(&channel_id).ok_or_else(|| {
        graph_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("Channel '{channel_id}' was not found."),
        )
    })?;
    if !team.can_see(channel, &reader.id) {
        return Err(forbidden());
    }
    let messages: Vec<&PostedMessage> = inner
        .posted
        .iter()
        .filter(|m| {
            m.team_id.as_deref() == Some(team.id.as_str())
                && m.channel_id.as_deref() == Some(channel.id.as_str())
        })
        .collect();
    let path = format!(
        "/teams/{}/channels/{}/messages",
        team.id,
        url::form_urlencoded::byte_serialize(channel.id.as_bytes()).collect::<String>()
    );
    let users = |id: &str| sim.user(&reader.tenant_id, id);
    message_page(&sim, &path, raw.as_deref(), messages, &users)
}

/// `GET /chats/{chat}/messages`: delegated `Chat.Read` (or Chat.ReadWrite); `$top` up to 50; `$orderby`
/// `createdDateTime desc` or `lastModifiedDateTime desc` (the default), both newest first
/// (https://learn.microsoft.com/en-us/graph/api/chat-list-messages, Permissions and Optional query parameters;
/// read 2026-12-05). Sim messages are never edited, so both orders are the same.
async fn list_chat_messages(
    State(sim): State<SharedSim>,
    principal: Principal,
    Path(chat_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> HandlerResult {
    principal.require_any(&["Chat.Read", "Chat.ReadWrite"])?;
    let reader = caller(&sim, &principal)?;
    let inner = sim.teams.lock();
    let chat = inner
        .chats
        .iter()
        .find(|c| c.id == chat_id)
        .ok_or_else(|| {
            graph_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("Chat '{chat_id}' was not found."),
            )
        })?;
    if !chat.members.iter().any(|m| m.user_id == reader.id) {
        return Err(forbidden());
    }
    let messages: Vec<&PostedMessage> = inner
        .posted
        .iter()
        .filter(|m| m.chat_id.as_deref() == Some(chat.id.as_str()))
        .collect();
    let path = format!(
        "/chats/{}/messages",
        url::form_urlencoded::byte_serialize(chat.id.as_bytes()).collect::<String>()
    );
    let users = |id: &str| sim.user(&reader.tenant_id, id);
    message_page(&sim, &path, raw.as_deref(), messages, &users)
}

// ---------------------------------------------------------------------------------------------------------------
// Control routes

/// `GET /_sim/teams/messages` (everything posted), `GET /_sim/chats` (every chat with its members),
/// `POST /_sim/teams/rate-limit {"perChannelPerSecond": n}` (0 turns the per-channel limit off).
pub fn control_router() -> Router<SharedSim> {
    Router::new()
        .route("/_sim/teams/messages", get(control_messages))
        .route("/_sim/chats", get(control_chats))
        .route("/_sim/teams/rate-limit", post(control_rate_limit))
}

async fn control_messages(State(sim): State<SharedSim>) -> Json<Vec<PostedMessage>> {
    Json(sim.teams.posted())
}

async fn control_chats(State(sim): State<SharedSim>) -> Json<Vec<Chat>> {
    Json(sim.teams.chats())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RateLimit {
    per_channel_per_second: usize,
}

async fn control_rate_limit(
    State(sim): State<SharedSim>,
    Json(limit): Json<RateLimit>,
) -> StatusCode {
    let mut inner = sim.teams.lock();
    inner.per_channel_per_second = limit.per_channel_per_second;
    inner.recent.clear();
    StatusCode::NO_CONTENT
}
