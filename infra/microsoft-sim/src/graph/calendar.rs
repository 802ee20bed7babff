//! Graph calendar: each user's primary calendar (`CalendarStore`), its Graph routes — `calendarView/delta`,
//! `calendarView` and `events/{id}` under `/me` and `/users/{id|upn}` — and the control routes that change
//! events live (`control_router`).
//!
//! Facts and sources: docs/calendar.md in this crate; graph-contract §6. Recurring series are expanded into
//! occurrences (`recurrence`), exceptions and cancelled occurrences are modelled per series, and delta rounds are
//! diffs of the window against server-side sync state (see `delta`).

// Handlers answer with Graph error responses directly; boxing them would buy nothing on these paths.
#![allow(clippy::result_large_err)]

mod control;
mod delta;
mod ids;
mod model;
pub(crate) mod prefer;
mod recurrence;
pub(crate) mod tz;

use std::collections::HashMap;
use std::sync::Mutex;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

pub use control::control_router;
use delta::{DeltaCache, Entry, Token, TokenKind};
pub use ids::IdForm;
use model::{Item, RenderPrefs, Resolved, UserCalendar};
use prefer::Prefer;

use crate::graph::{Principal, graph_error};
use crate::state::{SharedSim, Sim, UserInfo};
use crate::world::{MailboxKind, World};

/// Scopes that read the calendar.
const READ_SCOPES: &[&str] = &["Calendars.Read", "Calendars.ReadWrite"];
/// Page size when the client sends no `Prefer: odata.maxpagesize` (Graph's calendarView default).
const DEFAULT_PAGE: usize = 10;
/// Largest page the sim serves; larger preferences are clipped (Graph's maximum is unconfirmed).
const MAX_PAGE: usize = 1000;

/// Users' calendars and their delta sync state.
pub struct CalendarStore {
    users: Mutex<HashMap<String, UserState>>,
    secret: [u8; 32],
}

impl std::fmt::Debug for CalendarStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CalendarStore").finish_non_exhaustive()
    }
}

struct UserState {
    calendar: UserCalendar,
    delta: DeltaCache,
}

/// How an event changed, for change notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Created,
    Updated,
    Deleted,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Created => "created",
            ChangeType::Updated => "updated",
            ChangeType::Deleted => "deleted",
        }
    }
}

/// One changed event (single event, series master or occurrence) of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventChange {
    pub tenant_id: String,
    pub user_id: String,
    pub change: ChangeType,
    pub rest_id: String,
    pub immutable_id: String,
    pub change_key: Option<String>,
}

/// Why a calendar operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error("no such user")]
    UnknownUser,
    #[error("no such event")]
    NotFound,
    /// `If-Match` named another version of the event.
    #[error("the event has changed since the version If-Match names")]
    PreconditionFailed,
    #[error("{0}")]
    Invalid(String),
}

impl CalendarStore {
    pub fn from_world(world: &World, sim_clock_now: OffsetDateTime) -> anyhow::Result<Self> {
        let directory = crate::state::Directory::from_world(world, sim_clock_now);
        let mut users = HashMap::new();
        for (tenant, world_tenant) in directory.tenants.iter().zip(&world.tenants) {
            for (record, world_user) in tenant.users.iter().zip(&world_tenant.users) {
                let info = record.info.clone();
                let mut calendar = UserCalendar::new(info.clone());
                for (index, event) in world_user.events.iter().enumerate() {
                    let given_id = event.get("id").and_then(Value::as_str).map(str::to_owned);
                    let name = given_id.clone().unwrap_or_else(|| format!("#{index}"));
                    let hash = ids::item_hash(&info.id, &name);
                    let item =
                        Item::parse(hash, given_id, event.clone(), sim_clock_now).map_err(|e| {
                            anyhow::anyhow!(
                                "user {}: event {}: {e}",
                                info.user_principal_name,
                                name
                            )
                        })?;
                    anyhow::ensure!(
                        !calendar.items.contains_key(&hash),
                        "user {}: duplicate event id {name}",
                        info.user_principal_name
                    );
                    calendar.insert(item);
                }
                users.insert(
                    info.id.to_ascii_lowercase(),
                    UserState {
                        calendar,
                        delta: DeltaCache::default(),
                    },
                );
            }
        }
        let mut secret = [0u8; 32];
        rand::fill(&mut secret);
        Ok(CalendarStore {
            users: Mutex::new(users),
            secret,
        })
    }

    fn with_user<T>(
        &self,
        user_id: &str,
        f: impl FnOnce(&mut UserState) -> T,
    ) -> Result<T, CalendarError> {
        let mut users = self.users.lock().expect("calendar lock");
        let state = users
            .get_mut(&user_id.to_ascii_lowercase())
            .ok_or(CalendarError::UnknownUser)?;
        Ok(f(state))
    }

    fn change(
        state: &UserState,
        change: ChangeType,
        hash: ids::ItemHash,
        date: Option<time::Date>,
    ) -> EventChange {
        let user = &state.calendar.user;
        let item = state.calendar.items.get(&hash);
        let key = ids::InstanceKey { item: hash, date };
        let rest_id = match item {
            Some(item) => item.instance_id(date, IdForm::Rest),
            None => ids::encode(IdForm::Rest, key),
        };
        let change_key = item.and_then(|i| {
            if date.is_none() && i.series.is_some() {
                i.render(user, None, &RenderPrefs::default())
                    .and_then(|v| v["changeKey"].as_str().map(str::to_owned))
            } else {
                i.instance(key).map(|inst| inst.tag)
            }
        });
        EventChange {
            tenant_id: user.tenant_id.clone(),
            user_id: user.id.clone(),
            change,
            rest_id,
            immutable_id: ids::encode(IdForm::Immutable, key),
            change_key,
        }
    }

    /// Adds a single event or a series (Graph JSON; `id` kept if given) and returns it as Graph renders it.
    pub fn add_event(
        &self,
        user_id: &str,
        event: Value,
        now: OffsetDateTime,
    ) -> Result<(Value, EventChange), CalendarError> {
        let given_id = event.get("id").and_then(Value::as_str).map(str::to_owned);
        self.with_user(user_id, |state| {
            let hash = match &given_id {
                Some(id) => ids::item_hash(&state.calendar.user.id, id),
                None => *uuid::Uuid::new_v4().as_bytes(),
            };
            if state.calendar.items.contains_key(&hash) {
                return Err(CalendarError::Invalid(
                    "an event with this id exists".into(),
                ));
            }
            let item =
                Item::parse(hash, given_id.clone(), event, now).map_err(CalendarError::Invalid)?;
            let rendered = item
                .render(&state.calendar.user, None, &RenderPrefs::default())
                .expect("an item renders");
            state.calendar.insert(item);
            state.delta.touch(
                ids::InstanceKey {
                    item: hash,
                    date: None,
                },
                given_id,
            );
            Ok((
                rendered,
                Self::change(state, ChangeType::Created, hash, None),
            ))
        })?
    }

    /// Updates (reschedules, renames...) a single event, a whole series (master id) or one occurrence.
    pub fn update_event(
        &self,
        user_id: &str,
        event_id: &str,
        patch: &Map<String, Value>,
        now: OffsetDateTime,
    ) -> Result<(Value, EventChange), CalendarError> {
        self.update_event_if_match(user_id, event_id, patch, now, None)
    }

    /// `update_event` under an `If-Match` precondition: the update happens only when one of the entity tags
    /// listed (`*` = any) equals the event's current `@odata.etag` (compared without the weak `W/` prefix, since
    /// every Outlook etag is weak), else `PreconditionFailed` and nothing changes.
    pub fn update_event_if_match(
        &self,
        user_id: &str,
        event_id: &str,
        patch: &Map<String, Value>,
        now: OffsetDateTime,
        if_match: Option<&str>,
    ) -> Result<(Value, EventChange), CalendarError> {
        self.with_user(user_id, |state| {
            if let Some(if_match) = if_match {
                let current = render_resolved(&state.calendar, event_id, &RenderPrefs::default())?;
                let etag = current["@odata.etag"].as_str().unwrap_or_default();
                if !etag_matches(if_match, etag) {
                    return Err(CalendarError::PreconditionFailed);
                }
            }
            Self::update_in(state, event_id, patch, now)
        })?
    }

    fn update_in(
        state: &mut UserState,
        event_id: &str,
        patch: &Map<String, Value>,
        now: OffsetDateTime,
    ) -> Result<(Value, EventChange), CalendarError> {
        let resolved = state
            .calendar
            .resolve(event_id)
            .ok_or(CalendarError::NotFound)?;
        let (hash, date) = match resolved {
            Resolved::Item(hash) => {
                let item = state.calendar.items.get_mut(&hash).expect("resolved");
                item.patch(patch, now).map_err(CalendarError::Invalid)?;
                (hash, None)
            }
            Resolved::Occurrence(hash, date) => {
                let item = state.calendar.items.get_mut(&hash).expect("resolved");
                let series = item.series.as_mut().expect("occurrences belong to series");
                series
                    .exception_from_patch(date, patch, now)
                    .map_err(CalendarError::Invalid)?;
                (hash, Some(date))
            }
        };
        let given = state.calendar.items[&hash].given_id.clone();
        state
            .delta
            .touch(ids::InstanceKey { item: hash, date }, given);
        let rendered = state.calendar.items[&hash]
            .render(&state.calendar.user, date, &RenderPrefs::default())
            .ok_or(CalendarError::NotFound)?;
        Ok((
            rendered,
            Self::change(state, ChangeType::Updated, hash, date),
        ))
    }

    /// The organizer cancels a meeting (or one occurrence). In the organizer's own calendar it is deleted; an
    /// attendee's copy stays, marked `isCancelled: true`, until the attendee removes it.
    pub fn cancel_event(
        &self,
        user_id: &str,
        event_id: &str,
        now: OffsetDateTime,
    ) -> Result<EventChange, CalendarError> {
        let organizer = self.with_user(user_id, |state| {
            let resolved = state
                .calendar
                .resolve(event_id)
                .ok_or(CalendarError::NotFound)?;
            let hash = match resolved {
                Resolved::Item(h) | Resolved::Occurrence(h, _) => h,
            };
            Ok(state.calendar.items[&hash].is_organizer(&state.calendar.user))
        })??;
        if organizer {
            return self.delete_event(user_id, event_id, now);
        }
        let mut patch = Map::new();
        patch.insert("isCancelled".into(), Value::Bool(true));
        self.update_event(user_id, event_id, &patch, now)
            .map(|(_, change)| change)
    }

    /// Deletes a single event or series (master id), or removes one occurrence from its series.
    pub fn delete_event(
        &self,
        user_id: &str,
        event_id: &str,
        _now: OffsetDateTime,
    ) -> Result<EventChange, CalendarError> {
        self.with_user(user_id, |state| {
            let resolved = state
                .calendar
                .resolve(event_id)
                .ok_or(CalendarError::NotFound)?;
            match resolved {
                Resolved::Item(hash) => {
                    let change = Self::change(state, ChangeType::Deleted, hash, None);
                    let item = state.calendar.remove(&hash).expect("resolved");
                    state.delta.touch(
                        ids::InstanceKey {
                            item: hash,
                            date: None,
                        },
                        item.given_id,
                    );
                    Ok(change)
                }
                Resolved::Occurrence(hash, date) => {
                    let change = Self::change(state, ChangeType::Deleted, hash, Some(date));
                    let item = state.calendar.items.get_mut(&hash).expect("resolved");
                    let series = item.series.as_mut().expect("occurrences belong to series");
                    series.exceptions.remove(&date);
                    series.cancelled.insert(date);
                    state.delta.touch(
                        ids::InstanceKey {
                            item: hash,
                            date: Some(date),
                        },
                        None,
                    );
                    Ok(change)
                }
            }
        })?
    }

    /// Evicts every calendar delta state and round of the user: their tokens answer 410 from now on.
    pub fn evict_delta_tokens(&self, user_id: &str) -> Result<(), CalendarError> {
        self.with_user(user_id, |state| state.delta.evict_all())
    }

    /// An event as `GET /me/events/{id}` shows it (UTC, REST ids).
    pub fn event(&self, user_id: &str, event_id: &str) -> Result<Value, CalendarError> {
        self.with_user(user_id, |state| {
            render_resolved(&state.calendar, event_id, &RenderPrefs::default())
        })?
    }
}

/// Whether an `If-Match` value (`*` or a comma-separated list of entity tags) names `etag`. Weak comparison
/// (RFC 9110 §8.8.3.2): `W/` is ignored on both sides.
fn etag_matches(if_match: &str, etag: &str) -> bool {
    let opaque = |t: &str| {
        let t = t.trim();
        t.strip_prefix("W/").unwrap_or(t).to_owned()
    };
    let current = opaque(etag);
    if_match
        .split(',')
        .any(|candidate| candidate.trim() == "*" || opaque(candidate) == current)
}

fn render_resolved(
    calendar: &UserCalendar,
    event_id: &str,
    prefs: &RenderPrefs,
) -> Result<Value, CalendarError> {
    let (hash, date) = match calendar.resolve(event_id).ok_or(CalendarError::NotFound)? {
        Resolved::Item(h) => (h, None),
        Resolved::Occurrence(h, d) => (h, Some(d)),
    };
    calendar.items[&hash]
        .render(&calendar.user, date, prefs)
        .ok_or(CalendarError::NotFound)
}

// ---------------------------------------------------------------------------------------------------------------
// Graph routes

/// Routes relative to `/v1.0` (the Graph router nests them there).
pub fn router() -> Router<SharedSim> {
    let mut router = Router::new();
    for prefix in ["/me", "/users/{user}"] {
        for view in [
            "calendarView",
            "calendarview",
            "calendar/calendarView",
            "calendar/calendarview",
        ] {
            router = router
                .route(&format!("{prefix}/{view}"), get(calendar_view))
                .route(
                    &format!("{prefix}/{view}/{{function}}"),
                    get(calendar_view_delta),
                );
        }
        router = router
            .route(
                &format!("{prefix}/events/{{event}}"),
                get(get_event).patch(patch_event),
            )
            .route(
                &format!("{prefix}/calendar/events/{{event}}"),
                get(get_event).patch(patch_event),
            );
    }
    router
}

type HandlerResult = Result<Response, Response>;

/// The mailbox a Graph route addresses: `/me`, or `/users/{id|upn}` naming the caller (delegated access to
/// another user's calendar needs sharing, which the sim does not model: 403).
struct Mailbox {
    user: UserInfo,
    /// `me` or `users/{segment}`, for building links.
    prefix: String,
}

fn mailbox(sim: &Sim, principal: &Principal, segment: Option<&str>) -> Result<Mailbox, Response> {
    let (user, prefix) = match segment {
        None => (
            sim.user(&principal.tenant_id, &principal.user_id),
            "me".to_owned(),
        ),
        Some(segment) => {
            let user = sim.find_user(segment).ok_or_else(|| {
                graph_error(
                    StatusCode::NOT_FOUND,
                    "ErrorInvalidUser",
                    &format!("The requested user '{segment}' is invalid."),
                )
            })?;
            if !user.id.eq_ignore_ascii_case(&principal.user_id) {
                return Err(graph_error(
                    StatusCode::FORBIDDEN,
                    "ErrorAccessDenied",
                    "Access is denied. Check credentials and try again.",
                ));
            }
            (Some(user), format!("users/{segment}"))
        }
    };
    let user = user.ok_or_else(|| {
        graph_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            "Resource could not be discovered.",
        )
    })?;
    if user.mailbox != MailboxKind::ExchangeOnline {
        return Err(graph_error(
            StatusCode::NOT_FOUND,
            "MailboxNotEnabledForRESTAPI",
            "REST API is not yet supported for this mailbox.",
        ));
    }
    Ok(Mailbox { user, prefix })
}

fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect()
    })
    .unwrap_or_default()
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn render_prefs(prefer: &Prefer) -> RenderPrefs {
    let id_form = if prefer.immutable_id {
        IdForm::Immutable
    } else {
        IdForm::Rest
    };
    match prefer
        .timezone
        .as_deref()
        .and_then(|name| tz::lookup(name).map(|z| (name, z)))
    {
        Some((name, zone)) => RenderPrefs {
            zone,
            zone_label: name.to_owned(),
            id_form,
        },
        None => RenderPrefs {
            id_form,
            ..RenderPrefs::default()
        },
    }
}

/// `Preference-Applied` for what the sim honoured.
fn preference_applied(response: &mut Response, prefer: &Prefer, page_size: Option<usize>) {
    let mut applied = Vec::new();
    if let Some(n) = page_size.filter(|_| prefer.max_page_size.is_some()) {
        applied.push(format!("odata.maxpagesize={n}"));
    }
    if let Some(zone) = prefer
        .timezone
        .as_deref()
        .filter(|z| tz::lookup(z).is_some())
    {
        applied.push(format!("outlook.timezone=\"{zone}\""));
    }
    if prefer.immutable_id {
        applied.push("IdType=\"ImmutableId\"".to_owned());
    }
    if !applied.is_empty()
        && let Ok(v) = HeaderValue::from_str(&applied.join(", "))
    {
        response.headers_mut().insert("preference-applied", v);
    }
}

fn window(pairs: &[(String, String)]) -> Result<(OffsetDateTime, OffsetDateTime), Response> {
    let missing = || {
        graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidParameter",
            "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.",
        )
    };
    let parse = |name: &str| -> Result<OffsetDateTime, Response> {
        let text = param(pairs, name).ok_or_else(missing)?;
        tz::parse_date_time(text)
            .map(|t| t.resolve(tz::utc()))
            .ok_or_else(|| {
                graph_error(
                    StatusCode::BAD_REQUEST,
                    "ErrorInvalidParameter",
                    &format!("The value '{text}' of parameter '{name}' is invalid."),
                )
            })
    };
    let (from, to) = (parse("StartDateTime")?, parse("EndDateTime")?);
    if to < from {
        return Err(graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidParameter",
            "The parameter 'EndDateTime' must be later than the parameter 'StartDateTime'.",
        ));
    }
    Ok((from, to))
}

async fn calendar_view_delta(
    State(sim): State<SharedSim>,
    principal: Principal,
    path: Path<HashMap<String, String>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> HandlerResult {
    let function = path.get("function").map(String::as_str).unwrap_or_default();
    if ![
        "delta",
        "delta()",
        "microsoft.graph.delta",
        "microsoft.graph.delta()",
    ]
    .iter()
    .any(|f| f.eq_ignore_ascii_case(function))
    {
        return Err(graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("Resource not found for the segment '{function}'."),
        ));
    }
    principal.require_any(READ_SCOPES)?;
    let mailbox = mailbox(&sim, &principal, path.get("user").map(String::as_str))?;
    let pairs = query_pairs(raw.as_deref());
    if pairs.iter().any(|(k, _)| k.eq_ignore_ascii_case("$top")) {
        return Err(graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidUrlQuery",
            "The '$top' parameter is not supported with change tracking over the 'CalendarView' resource as page size \
             cannot be guaranteed. Express page size preferences using the Prefer: odata.maxpagesize= header instead.",
        ));
    }
    let unsupported = [
        "$select", "$filter", "$orderby", "$expand", "$search", "$count", "$skip",
    ];
    if pairs
        .iter()
        .any(|(k, _)| unsupported.iter().any(|u| u.eq_ignore_ascii_case(k)))
    {
        return Err(graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidUrlQuery",
            "The following parameters are not supported with change tracking over the 'CalendarView' resource: \
             '$orderby, $filter, $select, $expand, $search'.",
        ));
    }
    let prefer = Prefer::from_headers(&headers);
    let page_size = prefer.max_page_size.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE);
    let user_id = mailbox.user.id.clone();
    let skip = param(&pairs, "$skiptoken");
    let delta = param(&pairs, "$deltatoken");
    let store = &sim.calendar;
    let token = match skip.or(delta) {
        None => None,
        Some(text) => Some(Token::decode(text, &store.secret, &user_id).ok_or_else(|| {
            graph_error(
                StatusCode::BAD_REQUEST,
                "ErrorInvalidSyncStateData",
                "The sync state data is corrupt or otherwise invalid.",
            )
        })?),
    };
    let initial_window = if token.is_none() {
        Some(window(&pairs)?)
    } else {
        None
    };
    let prefs = render_prefs(&prefer);
    let body = store
        .with_user(&user_id, |state| -> Result<Value, Response> {
            let gone = |state: &UserState, id: u64| {
                graph_error(
                    StatusCode::GONE,
                    "SyncStateNotFound",
                    &format!(
                        "The sync state generation is not found; generation={id};[highest={}]",
                        state.delta.highest()
                    ),
                )
            };
            let (round_id, offset) = match token {
                None => {
                    let (from, to) = initial_window.expect("initial calls carry a window");
                    (state.delta.start_round(&state.calendar, from, to, None), 0)
                }
                Some(Token {
                    kind: TokenKind::Delta,
                    id,
                    ..
                }) => {
                    let base = state
                        .delta
                        .state(id)
                        .cloned()
                        .ok_or_else(|| gone(state, id))?;
                    (
                        state
                            .delta
                            .start_round(&state.calendar, base.from, base.to, Some(&base)),
                        0,
                    )
                }
                Some(Token {
                    kind: TokenKind::Skip,
                    id,
                    offset,
                }) => {
                    state.delta.round(id).ok_or_else(|| gone(state, id))?;
                    (id, offset)
                }
            };
            let round = state
                .delta
                .round(round_id)
                .expect("round just found or made");
            let end = (offset + page_size).min(round.entries.len());
            let mut value = Vec::with_capacity(end.saturating_sub(offset));
            for entry in round.entries.get(offset..end).unwrap_or_default() {
                value.push(match entry {
                    Entry::Upsert(key) => match state.calendar.render_instance(*key, &prefs) {
                        Some(Value::Object(mut event)) => {
                            event.insert("@odata.type".into(), json!("#microsoft.graph.event"));
                            Value::Object(event)
                        }
                        _ => removed(state.calendar.removed_id(*key, prefs.id_form, None)),
                    },
                    Entry::Removed(key, given) => removed(state.calendar.removed_id(
                        *key,
                        prefs.id_form,
                        given.as_deref(),
                    )),
                });
            }
            let link_base = format!(
                "{}/v1.0/{}/calendarView/delta",
                sim.base_url(),
                mailbox.prefix
            );
            let (link_name, link) = if end < round.entries.len() {
                let next = Token {
                    kind: TokenKind::Skip,
                    id: round_id,
                    offset: end,
                }
                .encode(&store.secret, &user_id);
                ("@odata.nextLink", format!("{link_base}?$skiptoken={next}"))
            } else {
                let next = Token {
                    kind: TokenKind::Delta,
                    id: round.next_state,
                    offset: 0,
                }
                .encode(&store.secret, &user_id);
                (
                    "@odata.deltaLink",
                    format!("{link_base}?$deltatoken={next}"),
                )
            };
            Ok(json!({
                "@odata.context": format!("{}/v1.0/$metadata#Collection(event)", sim.base_url()),
                link_name: link,
                "value": value,
            }))
        })
        .map_err(|_| {
            graph_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                "Resource could not be discovered.",
            )
        })??;
    let mut response = axum::Json(body).into_response();
    preference_applied(&mut response, &prefer, Some(page_size));
    Ok(response)
}

fn removed(id: String) -> Value {
    json!({"@odata.type": "#microsoft.graph.event", "id": id, "@removed": {"reason": "deleted"}})
}

/// `$select` projection: the listed properties plus `id` and `@odata.etag`; an unknown property is Graph's 400.
fn select(event: Value, fields: Option<&[String]>) -> Result<Value, Response> {
    let Some(fields) = fields else {
        return Ok(event);
    };
    let Value::Object(map) = event else {
        return Ok(event);
    };
    let mut out = Map::new();
    for key in ["@odata.etag", "id"] {
        if let Some(v) = map.get(key) {
            out.insert(key.to_owned(), v.clone());
        }
    }
    for field in fields {
        match map.iter().find(|(k, _)| k.eq_ignore_ascii_case(field)) {
            Some((k, v)) => {
                out.insert(k.clone(), v.clone());
            }
            // `originalStart` and the like exist only on some event types.
            None if known_property(field) => {}
            None => {
                return Err(graph_error(
                    StatusCode::BAD_REQUEST,
                    "RequestBroker--ParseUri",
                    &format!(
                        "Could not find a property named '{field}' on type 'microsoft.graph.event'."
                    ),
                ));
            }
        }
    }
    Ok(Value::Object(out))
}

fn select_list(pairs: &[(String, String)]) -> Option<Vec<String>> {
    param(pairs, "$select").map(|s| {
        s.split(',')
            .map(|f| f.trim().to_owned())
            .filter(|f| !f.is_empty())
            .collect()
    })
}

/// Whether `name` is a v1.0 `event` property (for `$select` validation, which must not depend on the data).
fn known_property(name: &str) -> bool {
    model::EVENT_PROPERTIES
        .iter()
        .any(|k| k.eq_ignore_ascii_case(name))
}

async fn calendar_view(
    State(sim): State<SharedSim>,
    principal: Principal,
    path: Path<HashMap<String, String>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> HandlerResult {
    principal.require_any(&[
        "Calendars.ReadBasic",
        "Calendars.Read",
        "Calendars.ReadWrite",
    ])?;
    let mailbox = mailbox(&sim, &principal, path.get("user").map(String::as_str))?;
    let pairs = query_pairs(raw.as_deref());
    if param(&pairs, "$filter").is_some() || param(&pairs, "$search").is_some() {
        return Err(graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidUrlQueryFilter",
            "The query filter contains one or more invalid nodes.",
        ));
    }
    let (from, to) = window(&pairs)?;
    let prefer = Prefer::from_headers(&headers);
    let top = match param(&pairs, "$top") {
        None => prefer.max_page_size.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE),
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                graph_error(
                    StatusCode::BAD_REQUEST,
                    "ErrorInvalidUrlQuery",
                    &format!("The value '{t}' of query option '$top' is invalid."),
                )
            })?,
    };
    let skip = match param(&pairs, "$skip") {
        None => 0,
        Some(s) => s.parse::<usize>().map_err(|_| {
            graph_error(
                StatusCode::BAD_REQUEST,
                "ErrorInvalidUrlQuery",
                &format!("The value '{s}' of query option '$skip' is invalid."),
            )
        })?,
    };
    let descending =
        match param(&pairs, "$orderby").map(|o| o.split_whitespace().collect::<Vec<_>>()) {
            None => false,
            Some(parts)
                if parts
                    .first()
                    .is_some_and(|p| p.eq_ignore_ascii_case("start/dateTime")) =>
            {
                parts.get(1).is_some_and(|d| d.eq_ignore_ascii_case("desc"))
            }
            Some(_) => {
                return Err(graph_error(
                    StatusCode::BAD_REQUEST,
                    "ErrorInvalidUrlQuery",
                    "The sim orders calendarView by start/dateTime only.",
                ));
            }
        };
    let fields = select_list(&pairs);
    if let Some(unknown) = fields.iter().flatten().find(|f| !known_property(f)) {
        return Err(graph_error(
            StatusCode::BAD_REQUEST,
            "RequestBroker--ParseUri",
            &format!(
                "Could not find a property named '{unknown}' on type 'microsoft.graph.event'."
            ),
        ));
    }
    let prefs = render_prefs(&prefer);
    let (events, total) = sim
        .calendar
        .with_user(&mailbox.user.id, |state| {
            let mut instances = state.calendar.instances_in(from, to);
            if descending {
                instances.reverse();
            }
            let total = instances.len();
            let events: Vec<Value> = instances
                .iter()
                .skip(skip)
                .take(top)
                .filter_map(|i| state.calendar.render_instance(i.key, &prefs))
                .collect();
            (events, total)
        })
        .map_err(|_| {
            graph_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                "Resource could not be discovered.",
            )
        })?;
    let value = events
        .into_iter()
        .map(|e| select(e, fields.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    let select_suffix = fields
        .as_ref()
        .map(|f| format!("({})", f.join(",")))
        .unwrap_or_default();
    let mut body = json!({
        "@odata.context": format!("{}/v1.0/$metadata#users('{}')/calendarView{select_suffix}", sim.base_url(), mailbox.user.id),
        "value": value,
    });
    if skip + top < total {
        let mut next: Vec<(String, String)> = pairs
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("$skip") && !k.eq_ignore_ascii_case("$top"))
            .cloned()
            .collect();
        next.push(("$top".into(), top.to_string()));
        next.push(("$skip".into(), (skip + top).to_string()));
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(next)
            .finish();
        body["@odata.nextLink"] = json!(format!(
            "{}/v1.0/{}/calendarView?{query}",
            sim.base_url(),
            mailbox.prefix
        ));
    }
    let mut response = axum::Json(body).into_response();
    preference_applied(&mut response, &prefer, None);
    Ok(response)
}

async fn get_event(
    State(sim): State<SharedSim>,
    principal: Principal,
    path: Path<HashMap<String, String>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> HandlerResult {
    principal.require_any(&[
        "Calendars.ReadBasic",
        "Calendars.Read",
        "Calendars.ReadWrite",
    ])?;
    let mailbox = mailbox(&sim, &principal, path.get("user").map(String::as_str))?;
    let pairs = query_pairs(raw.as_deref());
    let prefer = Prefer::from_headers(&headers);
    let prefs = render_prefs(&prefer);
    let event_id = path.get("event").map(String::as_str).unwrap_or_default();
    let event = sim
        .calendar
        .with_user(&mailbox.user.id, |state| {
            render_resolved(&state.calendar, event_id, &prefs)
        })
        .map_err(|_| {
            graph_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                "Resource could not be discovered.",
            )
        })?
        .map_err(|_| {
            graph_error(
                StatusCode::NOT_FOUND,
                "ErrorItemNotFound",
                "The specified object was not found in the store.",
            )
        })?;
    let fields = select_list(&pairs);
    let event = select(event, fields.as_deref())?;
    Ok(event_entity(&sim, &mailbox.user.id, event, &prefer))
}

/// `PATCH …/events/{id}` [doc: https://learn.microsoft.com/graph/api/event-update, read 2026-12-06]: needs
/// `Calendars.ReadWrite`; only the properties in the body change (each replaced whole: a `body` is stored exactly
/// as sent); `location` without `locations` replaces `locations` with it [doc, request body table]; 200 with the
/// updated event. The update bumps `changeKey`, `@odata.etag` and `lastModifiedDateTime` and shows in the next
/// calendarView delta round. The doc says nothing about events the user does not organize: the sim allows it.
///
/// A body setting `isOnlineMeeting: true` (with `onlineMeetingProvider: teamsForBusiness` sent or already set) on an event without an
/// `onlineMeeting` gives it one (a Teams meeting, `onlineMeeting.joinUrl`), as the doc's example response shows.
///
/// `If-Match` (sim assumption, RFC 9110 semantics; no Microsoft page documents it for events): an entity tag
/// other than the event's current `@odata.etag` → 412 `ErrorIrresolvableConflict` with Exchange's change-key
/// message [observed for message updates: microsoftgraph/msgraph-sdk-dotnet#1201, mguessan/davmail#491].
async fn patch_event(
    State(sim): State<SharedSim>,
    principal: Principal,
    path: Path<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> HandlerResult {
    principal.require_any(&["Calendars.ReadWrite"])?;
    let mailbox = mailbox(&sim, &principal, path.get("user").map(String::as_str))?;
    let mut patch = crate::graph::teams::json_object(&body)?;
    let event_id = path.get("event").map(String::as_str).unwrap_or_default();
    let not_found = || {
        graph_error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        )
    };
    let current = sim
        .calendar
        .event(&mailbox.user.id, event_id)
        .map_err(|_| not_found())?;
    if patch.contains_key("location") && !patch.contains_key("locations") {
        let location = patch["location"].clone();
        let named = location
            .get("displayName")
            .and_then(Value::as_str)
            .is_some_and(|d| !d.is_empty());
        let locations = if named { vec![location] } else { Vec::new() };
        patch.insert("locations".into(), Value::Array(locations));
    }
    let after = |key: &str| patch.get(key).unwrap_or(&current[key]).clone();
    let wants_meeting = patch.get("isOnlineMeeting") == Some(&Value::Bool(true))
        && after("onlineMeetingProvider") == json!("teamsForBusiness")
        && after("onlineMeeting").is_null();
    let mut meeting = wants_meeting.then(|| {
        let now = sim.now();
        crate::graph::online_meetings::Meeting::new(
            &sim,
            &mailbox.user,
            after("subject").as_str().map(str::to_owned),
            now,
            now,
            crate::graph::online_meetings::Origin::Event,
        )
    });
    if let Some(meeting) = &meeting {
        patch.insert("onlineMeeting".into(), meeting.online_meeting_info());
    }
    let if_match = headers
        .get(axum::http::header::IF_MATCH)
        .and_then(|v| v.to_str().ok());
    let (updated, change) = sim
        .calendar
        .update_event_if_match(&mailbox.user.id, event_id, &patch, sim.now(), if_match)
        .map_err(|e| match e {
            CalendarError::UnknownUser | CalendarError::NotFound => not_found(),
            CalendarError::PreconditionFailed => graph_error(
                StatusCode::PRECONDITION_FAILED,
                "ErrorIrresolvableConflict",
                "The send or update operation could not be performed because the change key passed in the \
                 request does not match the current change key for the item.",
            ),
            CalendarError::Invalid(message) => graph_error(
                StatusCode::BAD_REQUEST,
                "ErrorInvalidRequest",
                &message,
            ),
        })?;
    if let Some(mut meeting) = meeting.take() {
        let instant = |v: &Value| {
            v["dateTime"]
                .as_str()
                .and_then(tz::parse_date_time)
                .map(|t| t.resolve(tz::utc()))
        };
        if let (Some(start), Some(end)) = (instant(&updated["start"]), instant(&updated["end"])) {
            meeting.start_date_time = start;
            meeting.end_date_time = end;
        }
        meeting.event_id = Some(change.rest_id.clone());
        sim.online_meetings.insert(meeting);
    }
    sim.subscriptions.publish_event(&sim, &change);
    let prefer = Prefer::from_headers(&headers);
    let prefs = render_prefs(&prefer);
    let event = sim
        .calendar
        .with_user(&mailbox.user.id, |state| {
            render_resolved(&state.calendar, event_id, &prefs)
        })
        .map_err(|_| not_found())?
        .map_err(|_| not_found())?;
    Ok(event_entity(&sim, &mailbox.user.id, event, &prefer))
}

/// One event as `GET` and `PATCH /events/{id}` answer it: its `@odata.context` and the
/// applied preferences.
fn event_entity(sim: &Sim, user_id: &str, mut event: Value, prefer: &Prefer) -> Response {
    event.as_object_mut().expect("events are objects").insert(
        "@odata.context".into(),
        json!(format!(
            "{}/v1.0/$metadata#users('{user_id}')/events/$entity",
            sim.base_url()
        )),
    );
    let mut response = axum::Json(event).into_response();
    preference_applied(&mut response, prefer, None);
    response
}
