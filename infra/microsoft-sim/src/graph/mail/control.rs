//! The mail part of the control API: change mailboxes live (add, update, delete, move messages; add folders),
//! evict delta tokens, and drive and read Outlook throttling. Control errors are plain `{"error": "..."}`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::delta::DeltaCap;
use super::render::{materialise, normalise_json_message};
use super::store::{Content, Mailbox, MailboxData};
use crate::graph::calendar::ChangeType;
use crate::graph::subscriptions::MessageChange;
use crate::graph::throttle::ThrottleUpdate;
use crate::state::SharedSim;

pub fn router() -> Router<SharedSim> {
    Router::new()
        .route("/_sim/users/{user}/messages", post(add_message))
        .route(
            "/_sim/users/{user}/messages/{id}",
            axum::routing::patch(update_message).delete(delete_message),
        )
        .route("/_sim/users/{user}/messages/{id}/move", post(move_message))
        .route("/_sim/users/{user}/mailFolders", post(add_folder))
        .route("/_sim/users/{user}/delta/evict", post(evict))
        .route("/_sim/throttle", get(get_throttle).post(set_throttle))
        .route("/_sim/delta-cap", get(get_delta_cap).post(set_delta_cap))
        .route(
            "/_sim/mailbox-stats",
            get(mailbox_stats).delete(reset_mailbox_stats),
        )
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

#[allow(clippy::result_large_err)]
fn mailbox(sim: &SharedSim, user: &str) -> Result<Arc<Mailbox>, Response> {
    let info = sim
        .find_user(user)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("unknown user {user}")))?;
    sim.mail.mailbox(&info.id).ok_or_else(|| {
        error(
            StatusCode::CONFLICT,
            format!("{user} has no Exchange Online mailbox"),
        )
    })
}

#[allow(clippy::result_large_err)]
fn folder(data: &MailboxData, name: &str) -> Result<u32, Response> {
    data.resolve_folder_loose(name)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no folder {name}")))
}

#[allow(clippy::result_large_err)]
fn message(data: &MailboxData, id: &str) -> Result<u32, Response> {
    data.resolve_message(id)
        .map(|(k, _)| k)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no message {id}")))
}

fn describe(data: &MailboxData, key: u32) -> Value {
    let Some(rec) = data.message(key) else {
        return Value::Null;
    };
    json!({
        "id": data.rest_id(key, rec),
        "immutableId": data.immutable_id(key),
        "folderId": data.folder_id(rec.folder),
        "changeKey": super::render::change_key(key, rec.version),
    })
}

/// A change as change notifications see it (published after the mailbox lock is released).
fn change(
    mailbox: &Mailbox,
    data: &MailboxData,
    key: u32,
    folder: u32,
    rest_id: String,
    kind: ChangeType,
) -> MessageChange {
    MessageChange {
        tenant_id: mailbox.tenant_id.clone(),
        user_id: mailbox.user_id.clone(),
        folder_id: data.folder_id(folder),
        folder_well_known_name: data.folders[folder as usize].well_known.clone(),
        change: kind,
        rest_id,
        immutable_id: data.immutable_id(key),
        change_key: data
            .message(key)
            .map(|rec| super::render::change_key(key, rec.version)),
    }
}

fn publish(sim: &SharedSim, changes: &[MessageChange]) {
    for c in changes {
        sim.subscriptions.publish_message(sim, c);
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMessage {
    /// Well-known name, display name or id.
    folder: String,
    message: Map<String, Value>,
}

async fn add_message(
    State(sim): State<SharedSim>,
    Path(user): Path<String>,
    Json(body): Json<AddMessage>,
) -> Response {
    let mailbox = match mailbox(&sim, &user) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let now = sim.now().unix_timestamp();
    let custom_id = body
        .message
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let (map, received, created) = match normalise_json_message(body.message, now, &mailbox.owner) {
        Ok(x) => x,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let mut data = mailbox.write();
    let folder = match folder(&data, &body.folder) {
        Ok(f) => f,
        Err(r) => return r,
    };
    if custom_id
        .as_deref()
        .is_some_and(|id| data.resolve_message(id).is_some())
    {
        return error(StatusCode::CONFLICT, "a message with that id exists");
    }
    let key = data.insert(
        folder,
        Content::Json(Box::new(map)),
        received,
        created,
        custom_id,
        now,
    );
    let rest = data.rest_id(key, data.message(key).expect("just inserted"));
    let changes = [change(
        &mailbox,
        &data,
        key,
        folder,
        rest,
        ChangeType::Created,
    )];
    let body = describe(&data, key);
    drop(data);
    publish(&sim, &changes);
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn update_message(
    State(sim): State<SharedSim>,
    Path((user, id)): Path<(String, String)>,
    Json(patch): Json<Map<String, Value>>,
) -> Response {
    let mailbox = match mailbox(&sim, &user) {
        Ok(m) => m,
        Err(r) => return r,
    };
    for owned in [
        "id",
        "parentFolderId",
        "changeKey",
        "lastModifiedDateTime",
        "@odata.etag",
    ] {
        if patch.contains_key(owned) {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{owned} is set by the store; move messages with /move"),
            );
        }
    }
    let now = sim.now().unix_timestamp();
    let mut data = mailbox.write();
    let key = match message(&data, &id) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let rec = data.message(key).expect("resolved");
    let mut map = match &rec.content {
        Content::Json(m) => (**m).clone(),
        Content::Generated(_) => materialise(&data, key, rec, &mailbox.owner),
    };
    if patch.contains_key("body") && !patch.contains_key("bodyPreview") {
        map.remove("bodyPreview");
    }
    map.extend(patch);
    let (map, received, _) = match normalise_json_message(map, now, &mailbox.owner) {
        Ok(x) => x,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    data.update(key, Content::Json(Box::new(map)), received, now)
        .expect("resolved message");
    let rec = data.message(key).expect("resolved");
    let (folder, rest) = (rec.folder, data.rest_id(key, rec));
    let changes = [change(
        &mailbox,
        &data,
        key,
        folder,
        rest,
        ChangeType::Updated,
    )];
    let body = describe(&data, key);
    drop(data);
    publish(&sim, &changes);
    Json(body).into_response()
}

async fn delete_message(
    State(sim): State<SharedSim>,
    Path((user, id)): Path<(String, String)>,
) -> Response {
    let mailbox = match mailbox(&sim, &user) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let mut data = mailbox.write();
    let key = match message(&data, &id) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let rec = data.message(key).expect("resolved");
    let (folder, rest) = (rec.folder, data.rest_id(key, rec));
    let changes = [change(
        &mailbox,
        &data,
        key,
        folder,
        rest,
        ChangeType::Deleted,
    )];
    data.delete(key).expect("resolved message");
    drop(data);
    publish(&sim, &changes);
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Move {
    folder: String,
}

async fn move_message(
    State(sim): State<SharedSim>,
    Path((user, id)): Path<(String, String)>,
    Json(body): Json<Move>,
) -> Response {
    let mailbox = match mailbox(&sim, &user) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let now = sim.now().unix_timestamp();
    let mut data = mailbox.write();
    let key = match message(&data, &id) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let to = match folder(&data, &body.folder) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let rec = data.message(key).expect("resolved");
    let (from, old_rest) = (rec.folder, data.rest_id(key, rec));
    if from == to {
        return Json(describe(&data, key)).into_response();
    }
    data.move_to(key, to, now).expect("resolved message");
    let new_rest = data.rest_id(key, data.message(key).expect("moved"));
    // Outlook reports a move as a deletion in the old folder and a creation in the new one.
    let changes = [
        change(&mailbox, &data, key, from, old_rest, ChangeType::Deleted),
        change(&mailbox, &data, key, to, new_rest, ChangeType::Created),
    ];
    let body = describe(&data, key);
    drop(data);
    publish(&sim, &changes);
    Json(body).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AddFolder {
    display_name: String,
    /// Parent folder (well-known name, display name or id); the root when absent.
    #[serde(default)]
    parent: Option<String>,
    #[serde(default)]
    is_hidden: bool,
}

async fn add_folder(
    State(sim): State<SharedSim>,
    Path(user): Path<String>,
    Json(body): Json<AddFolder>,
) -> Response {
    let mailbox = match mailbox(&sim, &user) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let mut data = mailbox.write();
    let parent = match &body.parent {
        Some(p) => match folder(&data, p) {
            Ok(f) => f,
            Err(r) => return r,
        },
        None => data.root,
    };
    let clash = data.folders[parent as usize].children.iter().any(|&c| {
        data.folders[c as usize]
            .display_name
            .eq_ignore_ascii_case(&body.display_name)
    });
    if clash {
        // Outlook refuses duplicate sibling names (ErrorFolderExists).
        return error(
            StatusCode::CONFLICT,
            "a folder with that name exists under the parent",
        );
    }
    let key = data.add_folder(Some(parent), &body.display_name, None, body.is_hidden);
    (
        StatusCode::CREATED,
        Json(json!({"id": data.folder_id(key), "parentFolderId": data.folder_id(parent)})),
    )
        .into_response()
}

async fn evict(State(sim): State<SharedSim>, Path(user): Path<String>) -> Response {
    let mailbox = match mailbox(&sim, &user) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let mut data = mailbox.write();
    data.generation += 1;
    Json(json!({"generation": data.generation})).into_response()
}

async fn get_delta_cap(State(sim): State<SharedSim>) -> Response {
    Json(sim.mail.delta_cap()).into_response()
}

/// `{"limit": 5000, "order": "newest"|"oldest"|"arbitrary", "seed": 0}` (each optional): applies to initial
/// rounds that start from now on.
async fn set_delta_cap(
    State(sim): State<SharedSim>,
    body: Result<Json<DeltaCap>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(cap)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected {\"limit\": n >= 1, \"order\": \"newest\" | \"oldest\" | \"arbitrary\", \"seed\": n}",
        );
    };
    if cap.limit == 0 {
        return error(StatusCode::BAD_REQUEST, "limit must be at least 1");
    }
    sim.mail.set_delta_cap(cap);
    Json(cap).into_response()
}

async fn get_throttle(State(sim): State<SharedSim>) -> Response {
    Json(sim.mail.throttle.config()).into_response()
}

async fn set_throttle(
    State(sim): State<SharedSim>,
    Json(update): Json<ThrottleUpdate>,
) -> Response {
    match sim.mail.throttle.update(update) {
        Ok(config) => Json(config).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn mailbox_stats(State(sim): State<SharedSim>) -> Response {
    let stats: Vec<Value> = sim
        .mail
        .throttle
        .stats()
        .into_iter()
        .map(|s| {
            let upn = sim.find_user(&s.mailbox).map(|u| u.user_principal_name);
            let mut v = serde_json::to_value(&s).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.insert("userPrincipalName".into(), json!(upn));
            }
            v
        })
        .collect();
    Json(json!({"value": stats})).into_response()
}

async fn reset_mailbox_stats(State(sim): State<SharedSim>) -> StatusCode {
    sim.mail.throttle.reset();
    StatusCode::NO_CONTENT
}
