//! Control routes that change calendars live, as an organizer's or user's actions would, and evict delta
//! tokens. `{user}` is an object id or UPN; `{event}` any REST or immutable id of a single event, series master or
//! occurrence. Every change is published to matching change-notification subscriptions. The subscription
//! control routes ride along here (the control router has one hook line per area).
//!
//! - `POST   /_sim/users/{user}/events` — add a single event or series (Graph JSON) → 201 with the event
//! - `GET    /_sim/users/{user}/events/{event}` — the event as stored and rendered (`GET /me/events/{id}`'s JSON,
//!   UTC, REST ids; the body exactly as stored) → 200, 404 `{"error"}` for an unknown user or event
//! - `PATCH  /_sim/users/{user}/events/{event}` — update; on an occurrence id, creates/updates its exception
//! - `POST   /_sim/users/{user}/events/{event}/cancel` — organizer cancels: deleted from the organizer's
//!   calendar, `isCancelled: true` on an attendee's copy → 200 `{changeType, id}`
//! - `DELETE /_sim/users/{user}/events/{event}` — delete an event or series, or remove one occurrence → 204
//! - `POST   /_sim/users/{user}/calendar/delta/evict` — evict the user's calendar delta tokens → 204

// Handlers answer with Graph error responses directly; boxing them would buy nothing on these paths.
#![allow(clippy::result_large_err)]

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::{CalendarError, EventChange};
use crate::state::SharedSim;

pub fn control_router() -> Router<SharedSim> {
    Router::new()
        .route("/_sim/users/{user}/events", post(add))
        .route(
            "/_sim/users/{user}/events/{event}",
            get(read).patch(update).delete(delete),
        )
        .route("/_sim/users/{user}/events/{event}/cancel", post(cancel))
        .route("/_sim/users/{user}/calendar/delta/evict", post(evict))
        .merge(crate::graph::subscriptions::control_router())
}

fn error(e: CalendarError) -> Response {
    let status = match e {
        CalendarError::UnknownUser | CalendarError::NotFound => StatusCode::NOT_FOUND,
        CalendarError::Invalid(_) => StatusCode::BAD_REQUEST,
        CalendarError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
    };
    (status, Json(json!({"error": e.to_string()}))).into_response()
}

fn user_id(sim: &SharedSim, user: &str) -> Result<String, Response> {
    sim.find_user(user)
        .map(|u| u.id)
        .ok_or_else(|| error(CalendarError::UnknownUser))
}

fn publish(sim: &SharedSim, change: &EventChange) {
    sim.subscriptions.publish_event(sim, change);
}

async fn add(
    State(sim): State<SharedSim>,
    Path(user): Path<String>,
    Json(event): Json<Value>,
) -> Response {
    let user = match user_id(&sim, &user) {
        Ok(u) => u,
        Err(r) => return r,
    };
    match sim.calendar.add_event(&user, event, sim.now()) {
        Ok((event, change)) => {
            publish(&sim, &change);
            (StatusCode::CREATED, Json(event)).into_response()
        }
        Err(e) => error(e),
    }
}

async fn update(
    State(sim): State<SharedSim>,
    Path((user, event)): Path<(String, String)>,
    Json(patch): Json<Map<String, Value>>,
) -> Response {
    let user = match user_id(&sim, &user) {
        Ok(u) => u,
        Err(r) => return r,
    };
    match sim.calendar.update_event(&user, &event, &patch, sim.now()) {
        Ok((event, change)) => {
            publish(&sim, &change);
            Json(event).into_response()
        }
        Err(e) => error(e),
    }
}

async fn read(
    State(sim): State<SharedSim>,
    Path((user, event)): Path<(String, String)>,
) -> Response {
    let user = match user_id(&sim, &user) {
        Ok(u) => u,
        Err(r) => return r,
    };
    match sim.calendar.event(&user, &event) {
        Ok(event) => Json(event).into_response(),
        Err(e) => error(e),
    }
}

async fn cancel(
    State(sim): State<SharedSim>,
    Path((user, event)): Path<(String, String)>,
) -> Response {
    let user = match user_id(&sim, &user) {
        Ok(u) => u,
        Err(r) => return r,
    };
    match sim.calendar.cancel_event(&user, &event, sim.now()) {
        Ok(change) => {
            publish(&sim, &change);
            Json(json!({"changeType": change.change.as_str(), "id": change.rest_id}))
                .into_response()
        }
        Err(e) => error(e),
    }
}

async fn delete(
    State(sim): State<SharedSim>,
    Path((user, event)): Path<(String, String)>,
) -> Response {
    let user = match user_id(&sim, &user) {
        Ok(u) => u,
        Err(r) => return r,
    };
    match sim.calendar.delete_event(&user, &event, sim.now()) {
        Ok(change) => {
            publish(&sim, &change);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => error(e),
    }
}

async fn evict(State(sim): State<SharedSim>, Path(user): Path<String>) -> Response {
    let user = match user_id(&sim, &user) {
        Ok(u) => u,
        Err(r) => return r,
    };
    match sim.calendar.evict_delta_tokens(&user) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(e),
    }
}
