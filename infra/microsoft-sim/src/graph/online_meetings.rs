//! Graph online meetings (delegated): `POST …/onlineMeetings`, `POST …/onlineMeetings/createOrGet`, and
//! `GET`/`PATCH`/`DELETE …/onlineMeetings/{id}` under `/me` and `/users/{id|upn}`; the Teams join page the
//! meetings' `joinWebUrl` points at (served by the sim itself); and the control route that lists a user's
//! meetings. Meetings a Graph event update creates (`isOnlineMeeting: true` with `teamsForBusiness`) live here too.
//!
//! Facts and sources (docs/online-meetings.md in this crate; all read 2026-12-06):
//! - Create: `POST /me/onlineMeetings`, delegated `OnlineMeetings.ReadWrite`, 201 with the onlineMeeting; the
//!   meeting is not on the user's calendar [doc: https://learn.microsoft.com/graph/api/application-post-onlinemeetings].
//! - createOrGet: `externalId` required; 201 when created, 200 when an existing meeting is returned; the meeting
//!   is identified by tenant + user + externalId; no start/end → now and now + 1 h; start without end → start +
//!   1 h; end without start, or end before start → an error
//!   [doc: https://learn.microsoft.com/graph/api/onlinemeeting-createorget].
//! - Update: only the properties sent change; start and end must be sent together; the organizer cannot change;
//!   200 with the updated meeting [doc: https://learn.microsoft.com/graph/api/onlinemeeting-update].
//! - Properties and their shapes: https://learn.microsoft.com/graph/api/resources/onlinemeeting and the three
//!   pages' examples (conformance/calendar/onlinemeeting-*.json).
//! - Unconfirmed (sim choices): the error codes and messages of 400s and 404s, the defaults of a plain create
//!   without times (the createOrGet rule is applied), and the dial-in numbers (fictional 555 numbers).
//! - Deviation on purpose: `joinWebUrl` is on the sim's own base URL (Teams' are on teams.microsoft.com), with
//!   Teams' path and query shape, so a test browser can open it: `GET /l/meetup-join/{thread}/0` serves a small
//!   page with `id="sim-teams-join"` holding the meeting id, 404 for an unknown meeting.

// Handlers answer with Graph error responses directly; boxing them would buy nothing on these paths.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::{Map, Value, json};
use time::{Duration, OffsetDateTime};

use crate::graph::calendar::tz;
use crate::graph::{Principal, graph_error};
use crate::state::{SharedSim, Sim, UserInfo};

/// Delegated permission of create, createOrGet, update and delete [doc: the three pages' permission tables].
const WRITE_SCOPES: &[&str] = &["OnlineMeetings.ReadWrite"];
/// Delegated permissions of Get onlineMeeting (least to most privileged) [doc: onlinemeeting-get].
const READ_SCOPES: &[&str] = &["OnlineMeetings.Read", "OnlineMeetings.ReadWrite"];

/// Properties `PATCH` may change besides subject, times and attendees [doc: onlinemeeting-update, request body].
const UPDATABLE_SETTINGS: &[&str] = &[
    "allowAttendeeToEnableCamera",
    "allowAttendeeToEnableMic",
    "allowBreakoutRooms",
    "allowCopyingAndSharingMeetingContent",
    "allowedLobbyAdmitters",
    "allowedPresenters",
    "allowLiveShare",
    "allowMeetingChat",
    "allowPowerPointSharing",
    "allowRecording",
    "allowTeamworkReactions",
    "allowTranscription",
    "allowWhiteboard",
    "anonymizeIdentityForRoles",
    "isEntryExitAnnounced",
    "lobbyBypassSettings",
    "recordAutomatically",
    "watermarkProtection",
];

/// How a meeting came to be (control API only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Origin {
    /// `POST …/onlineMeetings`.
    Create,
    /// `POST …/onlineMeetings/createOrGet` (the first call; later calls return it).
    CreateOrGet,
    /// A Graph event update that turned the event into a Teams meeting.
    Event,
}

/// One online meeting, as the control API lists it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Meeting {
    pub id: String,
    pub tenant_id: String,
    pub organizer_id: String,
    pub organizer_user_principal_name: String,
    #[serde(skip)]
    organizer_display_name: String,
    pub external_id: Option<String>,
    pub subject: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub start_date_time: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end_date_time: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub creation_date_time: OffsetDateTime,
    pub join_web_url: String,
    pub thread_id: String,
    pub join_meeting_id: String,
    #[serde(skip)]
    video_teleconference_id: String,
    #[serde(skip)]
    conference_id: String,
    #[serde(skip)]
    attendees: Vec<Value>,
    #[serde(skip)]
    settings: Map<String, Value>,
    pub created_by: Origin,
    /// The event (REST id) whose update created the meeting, for `createdBy: event`.
    pub event_id: Option<String>,
    /// How many times `PATCH` changed it.
    pub updates: u32,
}

/// Every user's online meetings.
#[derive(Debug, Default)]
pub struct OnlineMeetingStore {
    meetings: Mutex<Vec<Meeting>>,
}

fn random_digits(n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'0' + rand::random_range(0..10u8)))
        .collect()
}

/// Graph's UTC timestamps on this resource: 7 fractional digits and `Z` (`2019-07-11T02:17:17.6491364Z`).
fn format_instant(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let base = tz::format_utc(t.replace_nanosecond(0).unwrap_or(t));
    format!(
        "{}.{:07}Z",
        base.trim_end_matches('Z'),
        t.nanosecond() / 100
    )
}

impl Meeting {
    /// A new meeting of `user` (not stored yet).
    pub fn new(
        sim: &Sim,
        user: &UserInfo,
        subject: Option<String>,
        start: OffsetDateTime,
        end: OffsetDateTime,
        created_by: Origin,
    ) -> Meeting {
        let opaque = URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().to_string());
        let thread_id = format!("19:meeting_{opaque}@thread.v2");
        // Graph's ids decode to `1*{organizer oid}*0**{thread id}` (the examples' `MSpkYzE3…` = "1*dc17…").
        let id = URL_SAFE_NO_PAD.encode(format!("1*{}*0**{thread_id}", user.id));
        let join_web_url = format!(
            "{}/l/meetup-join/19%3ameeting_{opaque}%40thread.v2/0?context=%7b%22Tid%22%3a%22{}%22%2c%22Oid%22%3a%22{}%22%7d",
            sim.base_url(),
            user.tenant_id,
            user.id
        );
        Meeting {
            id,
            tenant_id: user.tenant_id.to_ascii_lowercase(),
            organizer_id: user.id.to_ascii_lowercase(),
            organizer_user_principal_name: user.user_principal_name.clone(),
            organizer_display_name: user.display_name.clone(),
            external_id: None,
            subject,
            start_date_time: start,
            end_date_time: end,
            creation_date_time: sim.now(),
            join_web_url,
            thread_id,
            join_meeting_id: random_digits(12),
            video_teleconference_id: random_digits(10),
            conference_id: random_digits(9),
            attendees: Vec::new(),
            settings: Map::new(),
            created_by,
            event_id: None,
            updates: 0,
        }
    }

    /// The dial-in information (fictional numbers; the sim's tenants have no audio conferencing bridge).
    fn audio_conferencing(&self) -> Value {
        json!({
            "conferenceId": self.conference_id,
            "tollNumber": "+1 206-555-0100",
            "tollFreeNumber": "+1 800-555-0100",
            "dialinUrl": format!("https://dialin.teams.microsoft.com/{}?id={}", self.tenant_id, self.conference_id),
        })
    }

    /// `event.onlineMeeting` (an onlineMeetingInfo) for an event this meeting belongs to.
    pub fn online_meeting_info(&self) -> Value {
        json!({
            "joinUrl": self.join_web_url,
            "conferenceId": self.conference_id,
            "tollNumber": "+1 206-555-0100",
            "tollFreeNumbers": ["+1 800-555-0100"],
            "quickDial": format!("+1 206-555-0100,,{}#", self.conference_id),
            "phones": [],
        })
    }

    /// Graph's onlineMeeting JSON.
    pub fn to_graph(&self, base_url: &str) -> Value {
        let attendees: Vec<Value> = self.attendees.clone();
        let mut meeting = json!({
            "@odata.type": "#microsoft.graph.onlineMeeting",
            "@odata.context": format!("{base_url}/v1.0/$metadata#users('{}')/onlineMeetings/$entity", self.organizer_id),
            "id": self.id,
            "creationDateTime": format_instant(self.creation_date_time),
            "startDateTime": format_instant(self.start_date_time),
            "endDateTime": format_instant(self.end_date_time),
            "joinWebUrl": self.join_web_url,
            "subject": self.subject,
            "isBroadcast": false,
            "autoAdmittedUsers": "EveryoneInCompany",
            "isEntryExitAnnounced": true,
            "allowedPresenters": "everyone",
            "allowMeetingChat": "enabled",
            "allowTeamworkReactions": true,
            "allowAttendeeToEnableCamera": true,
            "allowAttendeeToEnableMic": true,
            "allowParticipantsToChangeName": false,
            "recordAutomatically": false,
            "externalId": self.external_id,
            "videoTeleconferenceId": self.video_teleconference_id,
            "joinMeetingIdSettings": {
                "isPasscodeRequired": false,
                "joinMeetingId": self.join_meeting_id,
                "passcode": null,
            },
            "chatInfo": {
                "threadId": self.thread_id,
                "messageId": "0",
                "replyChainMessageId": "0",
            },
            "participants": {
                "organizer": {
                    "upn": self.organizer_user_principal_name,
                    "role": "presenter",
                    "identity": {
                        "azureApplicationInstance": null,
                        "applicationInstance": null,
                        "application": null,
                        "device": null,
                        "user": {
                            "id": self.organizer_id,
                            "displayName": self.organizer_display_name,
                            "tenantId": self.tenant_id,
                            "identityProvider": "AAD",
                        },
                    },
                },
                "attendees": attendees,
                "producers": [],
                "contributors": [],
            },
            "lobbyBypassSettings": {"scope": "organization", "isDialInBypassEnabled": false},
            "audioConferencing": self.audio_conferencing(),
            "joinInformation": {
                "content": format!(
                    "data:text/html,{}",
                    url::form_urlencoded::byte_serialize(
                        format!("<div><a href=\"{}\">Join the meeting now</a></div>", self.join_web_url).as_bytes()
                    )
                    .collect::<String>()
                ),
                "contentType": "html",
            },
        });
        let object = meeting.as_object_mut().expect("an object literal");
        for (k, v) in &self.settings {
            object.insert(k.clone(), v.clone());
        }
        meeting
    }
}

impl OnlineMeetingStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Meeting>> {
        self.meetings.lock().expect("online meetings lock")
    }

    /// Stores a meeting.
    pub fn insert(&self, meeting: Meeting) {
        self.lock().push(meeting);
    }

    /// Every meeting organized by `user_id` (any case), in creation order.
    pub fn of_user(&self, user_id: &str) -> Vec<Meeting> {
        self.lock()
            .iter()
            .filter(|m| m.organizer_id.eq_ignore_ascii_case(user_id))
            .cloned()
            .collect()
    }

    /// Every meeting of the world.
    pub fn all(&self) -> Vec<Meeting> {
        self.lock().clone()
    }

    /// The meeting whose chat thread is `thread_id` (the join URL's path names it).
    pub fn by_thread(&self, thread_id: &str) -> Option<Meeting> {
        self.lock()
            .iter()
            .find(|m| m.thread_id == thread_id)
            .cloned()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Graph routes

type HandlerResult = Result<Response, Response>;

/// Routes relative to `/v1.0`.
pub fn router() -> Router<SharedSim> {
    let mut router = Router::new();
    for prefix in ["/me", "/users/{user}"] {
        for name in ["onlineMeetings", "onlinemeetings"] {
            router = router
                .route(&format!("{prefix}/{name}"), post(create))
                .route(&format!("{prefix}/{name}/createOrGet"), post(create_or_get))
                .route(&format!("{prefix}/{name}/createorget"), post(create_or_get))
                .route(
                    &format!("{prefix}/{name}/{{meeting}}"),
                    get(get_meeting).patch(update).delete(delete),
                );
        }
    }
    router
}

fn bad_request(message: &str) -> Response {
    graph_error(StatusCode::BAD_REQUEST, "BadRequest", message)
}

fn not_found() -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        "The requested onlineMeeting was not found.",
    )
}

/// The organizer a route addresses: `/me`, or `/users/{id|upn}` naming the caller (delegated access to another
/// user's meetings needs an application access policy and application permissions, which the sim does not
/// serve: 403).
fn organizer(
    sim: &Sim,
    principal: &Principal,
    segment: Option<&str>,
) -> Result<UserInfo, Response> {
    let user = match segment {
        None => sim.user(&principal.tenant_id, &principal.user_id),
        Some(segment) => {
            let user = sim.find_user(segment).ok_or_else(|| {
                graph_error(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("The requested user '{segment}' is invalid."),
                )
            })?;
            if !user.id.eq_ignore_ascii_case(&principal.user_id) {
                return Err(graph_error(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    "Access is denied. Check credentials and try again.",
                ));
            }
            Some(user)
        }
    };
    user.ok_or_else(|| {
        graph_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            "Resource could not be discovered.",
        )
    })
}

fn time_field(body: &Map<String, Value>, name: &str) -> Result<Option<OffsetDateTime>, Response> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => tz::parse_date_time(text)
            .map(|t| Some(t.resolve(tz::utc())))
            .ok_or_else(|| bad_request(&format!("The value of '{name}' is not a valid DateTime."))),
        Some(_) => Err(bad_request(&format!(
            "The value of '{name}' is not a valid DateTime."
        ))),
    }
}

/// Start and end per createOrGet's notes: none → now and now + 1 h; start only → start + 1 h; end without
/// start, or end before start → 400.
fn times(
    body: &Map<String, Value>,
    now: OffsetDateTime,
) -> Result<(OffsetDateTime, OffsetDateTime), Response> {
    let start = time_field(body, "startDateTime")?;
    let end = time_field(body, "endDateTime")?;
    let (start, end) = match (start, end) {
        (None, None) => (now, now + Duration::hours(1)),
        (Some(s), None) => (s, s + Duration::hours(1)),
        (None, Some(_)) => {
            return Err(bad_request(
                "endDateTime cannot be specified without startDateTime.",
            ));
        }
        (Some(s), Some(e)) => (s, e),
    };
    if end < start {
        return Err(bad_request("endDateTime must be later than startDateTime."));
    }
    Ok((start, end))
}

fn subject_field(body: &Map<String, Value>) -> Result<Option<String>, Response> {
    match body.get("subject") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad_request("The value of 'subject' must be a string.")),
    }
}

/// `participants.attendees` as Graph echoes them: each `meetingParticipantInfo` with `role` (null when absent).
fn attendees_field(body: &Map<String, Value>) -> Result<Option<Vec<Value>>, Response> {
    let Some(attendees) = body.get("participants").and_then(|p| p.get("attendees")) else {
        return Ok(None);
    };
    let Value::Array(list) = attendees else {
        return Err(bad_request("participants.attendees must be a collection."));
    };
    list.iter()
        .map(|a| match a {
            Value::Object(map) => {
                let mut map = map.clone();
                map.entry("role").or_insert(Value::Null);
                Ok(Value::Object(map))
            }
            _ => Err(bad_request(
                "participants.attendees entries must be meetingParticipantInfo objects.",
            )),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn body_object(body: &Bytes) -> Result<Map<String, Value>, Response> {
    crate::graph::teams::json_object(body)
}

fn reply(status: StatusCode, sim: &Sim, meeting: &Meeting) -> Response {
    (status, Json(meeting.to_graph(sim.base_url()))).into_response()
}

async fn create(
    State(sim): State<SharedSim>,
    principal: Principal,
    path: Path<HashMap<String, String>>,
    body: Bytes,
) -> HandlerResult {
    principal.require_any(WRITE_SCOPES)?;
    let user = organizer(&sim, &principal, path.get("user").map(String::as_str))?;
    let body = body_object(&body)?;
    let (start, end) = times(&body, sim.now())?;
    let mut meeting = Meeting::new(
        &sim,
        &user,
        subject_field(&body)?,
        start,
        end,
        Origin::Create,
    );
    meeting.attendees = attendees_field(&body)?.unwrap_or_default();
    let response = reply(StatusCode::CREATED, &sim, &meeting);
    sim.online_meetings.insert(meeting);
    Ok(response)
}

async fn create_or_get(
    State(sim): State<SharedSim>,
    principal: Principal,
    path: Path<HashMap<String, String>>,
    body: Bytes,
) -> HandlerResult {
    principal.require_any(WRITE_SCOPES)?;
    let user = organizer(&sim, &principal, path.get("user").map(String::as_str))?;
    let body = body_object(&body)?;
    let external_id = match body.get("externalId") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(bad_request("The externalId is required.")),
    };
    let (start, end) = times(&body, sim.now())?;
    let subject = subject_field(&body)?;
    let attendees = attendees_field(&body)?;
    let mut meetings = sim.online_meetings.lock();
    // tenant + user + externalId identify the meeting [doc].
    if let Some(existing) = meetings.iter().find(|m| {
        m.organizer_id.eq_ignore_ascii_case(&user.id)
            && m.tenant_id.eq_ignore_ascii_case(&user.tenant_id)
            && m.external_id.as_deref() == Some(external_id.as_str())
    }) {
        return Ok(reply(StatusCode::OK, &sim, existing));
    }
    let mut meeting = Meeting::new(&sim, &user, subject, start, end, Origin::CreateOrGet);
    meeting.external_id = Some(external_id);
    meeting.attendees = attendees.unwrap_or_default();
    let response = reply(StatusCode::CREATED, &sim, &meeting);
    meetings.push(meeting);
    Ok(response)
}

fn find<'a>(meetings: &'a mut [Meeting], user: &UserInfo, id: &str) -> Option<&'a mut Meeting> {
    meetings
        .iter_mut()
        .find(|m| m.id == id && m.organizer_id.eq_ignore_ascii_case(&user.id))
}

async fn get_meeting(
    State(sim): State<SharedSim>,
    principal: Principal,
    path: Path<HashMap<String, String>>,
) -> HandlerResult {
    principal.require_any(READ_SCOPES)?;
    let user = organizer(&sim, &principal, path.get("user").map(String::as_str))?;
    let id = path.get("meeting").map(String::as_str).unwrap_or_default();
    let mut meetings = sim.online_meetings.lock();
    let meeting = find(&mut meetings, &user, id).ok_or_else(not_found)?;
    Ok(reply(StatusCode::OK, &sim, meeting))
}

async fn update(
    State(sim): State<SharedSim>,
    principal: Principal,
    path: Path<HashMap<String, String>>,
    body: Bytes,
) -> HandlerResult {
    principal.require_any(WRITE_SCOPES)?;
    let user = organizer(&sim, &principal, path.get("user").map(String::as_str))?;
    let id = path.get("meeting").map(String::as_str).unwrap_or_default();
    let body = body_object(&body)?;
    // "Adjusting the start or end date/time of an online meeting always requires both" [doc].
    let start = time_field(&body, "startDateTime")?;
    let end = time_field(&body, "endDateTime")?;
    let new_times = match (start, end) {
        (None, None) => None,
        (Some(s), Some(e)) if e >= s => Some((s, e)),
        (Some(_), Some(_)) => {
            return Err(bad_request("endDateTime must be later than startDateTime."));
        }
        _ => {
            return Err(bad_request(
                "startDateTime and endDateTime must be updated together.",
            ));
        }
    };
    let subject = subject_field(&body)?;
    let attendees = attendees_field(&body)?;
    let mut meetings = sim.online_meetings.lock();
    let meeting = find(&mut meetings, &user, id).ok_or_else(not_found)?;
    if let Some((s, e)) = new_times {
        meeting.start_date_time = s;
        meeting.end_date_time = e;
    }
    if body.contains_key("subject") {
        meeting.subject = subject;
    }
    // Only attendees can be updated; the organizer stays [doc].
    if let Some(attendees) = attendees {
        meeting.attendees = attendees;
    }
    for key in UPDATABLE_SETTINGS {
        if let Some(v) = body.get(*key) {
            meeting.settings.insert((*key).to_owned(), v.clone());
        }
    }
    meeting.updates += 1;
    Ok(reply(StatusCode::OK, &sim, meeting))
}

async fn delete(
    State(sim): State<SharedSim>,
    principal: Principal,
    path: Path<HashMap<String, String>>,
) -> HandlerResult {
    principal.require_any(WRITE_SCOPES)?;
    let user = organizer(&sim, &principal, path.get("user").map(String::as_str))?;
    let id = path.get("meeting").map(String::as_str).unwrap_or_default();
    let mut meetings = sim.online_meetings.lock();
    let before = meetings.len();
    meetings.retain(|m| !(m.id == id && m.organizer_id.eq_ignore_ascii_case(&user.id)));
    if meetings.len() == before {
        return Err(not_found());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------------------------------------------------------
// The join page and control routes (outside /v1.0, no token)

/// `GET /l/meetup-join/{thread}/{message}` (the sim's stand-in for teams.microsoft.com's join page),
/// `GET /_sim/users/{user}/online-meetings` and `GET /_sim/online-meetings` (`{"value": [Meeting…]}`).
pub fn control_router() -> Router<SharedSim> {
    Router::new()
        .route("/l/meetup-join/{thread}/{message}", get(join_page))
        .route(
            "/_sim/users/{user}/online-meetings",
            get(control_user_meetings),
        )
        .route("/_sim/online-meetings", get(control_all_meetings))
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn join_page(
    State(sim): State<SharedSim>,
    Path((thread, _message)): Path<(String, String)>,
) -> Response {
    match sim.online_meetings.by_thread(&thread) {
        Some(meeting) => Html(format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Microsoft Teams meeting (microsoft-sim)</title></head>\n\
             <body><h1>Microsoft Teams meeting (microsoft-sim)</h1>\n<p>Meeting: <span id=\"sim-teams-join\" data-thread-id=\"{}\">{}</span></p></body></html>\n",
            html_escape(&meeting.thread_id),
            html_escape(&meeting.id)
        ))
        .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Html(
                "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Microsoft Teams meeting (microsoft-sim)</title></head>\n\
                 <body><h1>This meeting does not exist</h1></body></html>\n"
                    .to_owned(),
            ),
        )
            .into_response(),
    }
}

async fn control_user_meetings(State(sim): State<SharedSim>, Path(user): Path<String>) -> Response {
    match sim.find_user(&user) {
        Some(user) => Json(json!({"value": sim.online_meetings.of_user(&user.id)})).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such user"})),
        )
            .into_response(),
    }
}

async fn control_all_meetings(State(sim): State<SharedSim>) -> Json<Value> {
    Json(json!({"value": sim.online_meetings.all()}))
}
