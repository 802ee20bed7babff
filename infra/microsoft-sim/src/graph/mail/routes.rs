//! The Graph mail handlers: `/me`, mail folders, message lists, a message by id, and message delta, each for
//! `/me/...` and `/users/{id|upn}/...` (the signed-in user only: delegated access to another mailbox is denied).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::delta::{self, ChangeType, Cursor, DeltaItem, DeltaState};
use super::query::{self, CmpOp, Prefer, Query, invalid_query, parse_select};
use super::render::{self, FOLDER_PROPERTIES, MESSAGE_PROPERTIES, RenderOptions};
use super::search;
use super::store::{Entry, Mailbox, MailboxData};
use crate::graph::{Principal, graph_error};
use crate::state::{SharedSim, UserInfo};
use crate::world::MailboxKind;

const MAIL_SCOPES: [&str; 3] = ["Mail.ReadBasic", "Mail.Read", "Mail.ReadWrite"];
/// Delegated permissions that let `/me` read the signed-in user's profile.
const USER_SCOPES: [&str; 8] = [
    "User.Read",
    "User.ReadWrite",
    "User.ReadBasic.All",
    "User.Read.All",
    "User.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
    "Directory.AccessAsUser.All",
];
const USER_PROPERTIES: [&str; 11] = [
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];
/// `$top` range for message lists (List messages doc: 1 to 1000).
const MAX_TOP: usize = 1000;

pub fn router() -> Router<SharedSim> {
    let mut r = Router::new().route("/me", get(me));
    for prefix in ["/me", "/users/{user}"] {
        for folders in ["mailFolders", "mailfolders"] {
            let base = format!("{prefix}/{folders}");
            r = r
                .route(&base, get(list_root_folders))
                .route(&format!("{base}/{{folder}}"), get(get_folder))
                .route(
                    &format!("{base}/{{folder}}/childFolders"),
                    get(list_child_folders),
                )
                .route(
                    &format!("{base}/{{folder}}/childfolders"),
                    get(list_child_folders),
                )
                .route(
                    &format!("{base}/{{folder}}/messages"),
                    get(list_folder_messages),
                )
                .route(
                    &format!("{base}/{{folder}}/messages/delta"),
                    get(messages_delta),
                )
                // The function-call forms Microsoft's SDKs send (`delta()`, and
                // the namespace-qualified one); Graph serves all of them alike.
                .route(
                    &format!("{base}/{{folder}}/messages/delta()"),
                    get(messages_delta),
                )
                .route(
                    &format!("{base}/{{folder}}/messages/microsoft.graph.delta"),
                    get(messages_delta),
                )
                .route(
                    &format!("{base}/{{folder}}/messages/microsoft.graph.delta()"),
                    get(messages_delta),
                )
                .route(
                    &format!("{base}/{{folder}}/messages/{{message}}"),
                    get(get_message),
                );
        }
        r = r
            .route(&format!("{prefix}/messages"), get(list_all_messages))
            .route(&format!("{prefix}/messages/{{message}}"), get(get_message));
    }
    r
}

type Params = Path<HashMap<String, String>>;

/// Graph's JSON content type and OData headers.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = (status, bytes).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(
            "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8",
        ),
    );
    h.insert("odata-version", HeaderValue::from_static("4.0"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    response
}

fn malformed_id() -> Response {
    graph_error(
        StatusCode::BAD_REQUEST,
        "ErrorInvalidIdMalformed",
        "Id is malformed.",
    )
}

fn item_not_found() -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}

/// Who is asking, for which mailbox, with which options.
struct MailCtx {
    sim: SharedSim,
    principal: Principal,
    user: UserInfo,
    mailbox: Arc<Mailbox>,
    /// `/me` or `/users/{as the caller wrote it}`: the start of links we hand out.
    prefix: String,
    query: Query,
    prefer: Prefer,
}

impl MailCtx {
    fn base(&self) -> String {
        format!("{}/v1.0", self.sim.base_url())
    }

    fn render_options(&self, always_type: bool) -> RenderOptions<'_> {
        RenderOptions {
            owner: &self.mailbox.owner,
            immutable_ids: self.prefer.immutable_ids,
            body_text: self.prefer.body_text,
            basic: !self.principal.has("Mail.Read") && !self.principal.has("Mail.ReadWrite"),
            always_type,
        }
    }
}

/// The user a `/me` or `/users/{user}` path names, if the caller may read it.
#[allow(clippy::result_large_err)]
fn target_user(
    sim: &SharedSim,
    principal: &Principal,
    params: &HashMap<String, String>,
) -> Result<(UserInfo, String), Response> {
    let me = sim
        .user(&principal.tenant_id, &principal.user_id)
        .ok_or_else(item_not_found)?;
    match params.get("user") {
        None => Ok((me, "/me".to_owned())),
        Some(u)
            if u.eq_ignore_ascii_case(&me.id)
                || u.eq_ignore_ascii_case(&me.user_principal_name) =>
        {
            let encoded: String = url::form_urlencoded::byte_serialize(u.as_bytes()).collect();
            Ok((me, format!("/users/{}", encoded.replace("%40", "@"))))
        }
        Some(u) => match sim.find_user(u) {
            // Reading someone else's mailbox needs shared-mailbox permissions this app does not have.
            Some(_) => Err(graph_error(
                StatusCode::FORBIDDEN,
                "ErrorAccessDenied",
                "Access is denied. Check credentials and try again.",
            )),
            None => Err(graph_error(
                StatusCode::NOT_FOUND,
                "ErrorInvalidUser",
                &format!("The requested user '{u}' is invalid."),
            )),
        },
    }
}

#[allow(clippy::result_large_err)]
fn mail_ctx(
    sim: SharedSim,
    principal: Principal,
    params: &HashMap<String, String>,
    uri: &OriginalUri,
    headers: &HeaderMap,
) -> Result<MailCtx, Response> {
    principal.require_any(&MAIL_SCOPES)?;
    let (user, prefix) = target_user(&sim, &principal, params)?;
    let not_enabled = |message: &str| {
        graph_error(
            StatusCode::NOT_FOUND,
            "MailboxNotEnabledForRESTAPI",
            message,
        )
    };
    let mailbox = match user.mailbox {
        MailboxKind::OnPremises => {
            return Err(not_enabled(
                "REST API is not yet supported for this mailbox.",
            ));
        }
        MailboxKind::None => {
            return Err(not_enabled(
                "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
            ));
        }
        MailboxKind::ExchangeOnline => sim.mail.mailbox(&user.id).ok_or_else(|| {
            not_enabled("The mailbox is either inactive, soft-deleted, or is hosted on-premise.")
        })?,
    };
    Ok(MailCtx {
        sim,
        principal,
        user,
        mailbox,
        prefix,
        query: Query::parse(uri.0.query()),
        prefer: Prefer::from_headers(headers),
    })
}

/// Refuses query options a route does not support (rather than silently ignoring them).
#[allow(clippy::result_large_err)]
fn only_options(query: &Query, allowed: &[&str]) -> Result<(), Response> {
    for name in [
        "select",
        "filter",
        "orderby",
        "top",
        "skip",
        "expand",
        "search",
        "count",
        "skiptoken",
        "deltatoken",
        "format",
        "apply",
    ] {
        if query.has(name) && !allowed.contains(&name) {
            return Err(invalid_query(&format!(
                "The query parameter '${name}' is not supported on this resource."
            )));
        }
    }
    Ok(())
}

#[allow(clippy::result_large_err)]
fn parse_count(query: &Query, name: &str, default: usize, max: usize) -> Result<usize, Response> {
    match query.get(name) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n >= usize::from(name == "top") && n <= max => Ok(n),
            _ => Err(invalid_query(&format!(
                "The value '{v}' of ${name} is invalid; it must be between {} and {max}.",
                usize::from(name == "top")
            ))),
        },
    }
}

/// `?name=value&...` of the current query with `$skip` replaced, for nextLinks.
fn next_query(query_raw: Option<&str>, skip: usize) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(query_raw.unwrap_or("").as_bytes()) {
        if !k.trim_start_matches('$').eq_ignore_ascii_case("skip") {
            out.append_pair(&k, &v);
        }
    }
    out.append_pair("$skip", &skip.to_string());
    out.finish()
}

// ---------------------------------------------------------------------------------------------------------------
// /me

async fn me(State(sim): State<SharedSim>, principal: Principal, uri: OriginalUri) -> Response {
    if let Err(r) = principal.require_any(&USER_SCOPES) {
        return r;
    }
    let Some(user) = sim.user(&principal.tenant_id, &principal.user_id) else {
        return item_not_found();
    };
    let query = Query::parse(uri.0.query());
    if let Err(r) = only_options(&query, &["select"]) {
        return r;
    }
    let select = match parse_select(
        query.get("select"),
        &USER_PROPERTIES,
        "microsoft.graph.user",
    ) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let all = [
        ("businessPhones", json!(user.business_phones)),
        ("displayName", json!(user.display_name)),
        ("givenName", json!(user.given_name)),
        ("jobTitle", json!(user.job_title)),
        ("mail", json!(user.mail)),
        ("mobilePhone", json!(user.mobile_phone)),
        ("officeLocation", json!(user.office_location)),
        ("preferredLanguage", json!(user.preferred_language)),
        ("surname", json!(user.surname)),
        ("userPrincipalName", json!(user.user_principal_name)),
        ("id", json!(user.id)),
    ];
    let mut body = Map::new();
    let context = match &select {
        None => "users/$entity".to_owned(),
        Some(s) => format!("users({})/$entity", s.join(",")),
    };
    body.insert(
        "@odata.context".into(),
        json!(format!("{}/v1.0/$metadata#{context}", sim.base_url())),
    );
    for (name, value) in all {
        if select.as_ref().is_none_or(|s| s.contains(&name)) {
            body.insert(name.into(), value);
        }
    }
    json_response(StatusCode::OK, &Value::Object(body))
}

// ---------------------------------------------------------------------------------------------------------------
// Folders

async fn list_root_folders(
    State(sim): State<SharedSim>,
    principal: Principal,
    Path(params): Params,
    uri: OriginalUri,
    headers: HeaderMap,
) -> Response {
    let ctx = match mail_ctx(sim, principal, &params, &uri, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let root = ctx.mailbox.read().root;
    folder_page(&ctx, root, &uri, "mailFolders")
}

async fn list_child_folders(
    State(sim): State<SharedSim>,
    principal: Principal,
    Path(params): Params,
    uri: OriginalUri,
    headers: HeaderMap,
) -> Response {
    let ctx = match mail_ctx(sim, principal, &params, &uri, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let folder = match resolve_folder(&ctx.mailbox.read(), &params) {
        Ok(f) => f,
        Err(r) => return r,
    };
    folder_page(&ctx, folder, &uri, "childFolders")
}

#[allow(clippy::result_large_err)]
fn resolve_folder(data: &MailboxData, params: &HashMap<String, String>) -> Result<u32, Response> {
    let raw = params.get("folder").map(String::as_str).unwrap_or("");
    match data.resolve_folder(raw) {
        Some(key) => Ok(key),
        // A well-known name this mailbox lacks is "not found"; anything else is not an id at all.
        None if super::store::WELL_KNOWN_NAMES
            .iter()
            .any(|w| w.eq_ignore_ascii_case(raw)) =>
        {
            Err(item_not_found())
        }
        None if super::ids::decode(&data.tag, raw).is_some() => Err(item_not_found()),
        None => Err(malformed_id()),
    }
}

fn folder_page(ctx: &MailCtx, parent: u32, uri: &OriginalUri, segment: &str) -> Response {
    if let Err(r) = only_options(&ctx.query, &["select", "top", "skip", "filter"]) {
        return r;
    }
    if ctx.query.get("filter").is_some() {
        return invalid_query("microsoft-sim does not support $filter on mail folders.");
    }
    let select = match parse_select(
        ctx.query.get("select"),
        &FOLDER_PROPERTIES,
        "microsoft.graph.mailFolder",
    ) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (top, skip) = match (
        parse_count(&ctx.query, "top", 10, MAX_TOP),
        parse_count(&ctx.query, "skip", 0, usize::MAX),
    ) {
        (Ok(t), Ok(s)) => (t, s),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let include_hidden = ctx
        .query
        .get("includehiddenfolders")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let data = ctx.mailbox.read();
    let children = data.child_folders(parent, include_hidden);
    let value: Vec<Value> = children
        .iter()
        .skip(skip)
        .take(top)
        .map(|&k| Value::Object(render::render_folder(&data, k, select.as_deref())))
        .collect();
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!(
            "{}/$metadata#users('{}')/{}",
            ctx.base(),
            ctx.user.id,
            if segment == "mailFolders" {
                "mailFolders".to_owned()
            } else {
                format!("mailFolders('{}')/childFolders", data.folder_id(parent))
            }
        )),
    );
    if skip + top < children.len() {
        let path = if segment == "mailFolders" {
            format!("{}{}/mailFolders", ctx.base(), ctx.prefix)
        } else {
            format!(
                "{}{}/mailFolders/{}/childFolders",
                ctx.base(),
                ctx.prefix,
                data.folder_id(parent)
            )
        };
        body.insert(
            "@odata.nextLink".into(),
            json!(format!("{path}?{}", next_query(uri.0.query(), skip + top))),
        );
    }
    body.insert("value".into(), Value::Array(value));
    json_response(StatusCode::OK, &Value::Object(body))
}

async fn get_folder(
    State(sim): State<SharedSim>,
    principal: Principal,
    Path(params): Params,
    uri: OriginalUri,
    headers: HeaderMap,
) -> Response {
    let ctx = match mail_ctx(sim, principal, &params, &uri, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = only_options(&ctx.query, &["select"]) {
        return r;
    }
    let select = match parse_select(
        ctx.query.get("select"),
        &FOLDER_PROPERTIES,
        "microsoft.graph.mailFolder",
    ) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let data = ctx.mailbox.read();
    let folder = match resolve_folder(&data, &params) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!(
            "{}/$metadata#users('{}')/mailFolders/$entity",
            ctx.base(),
            ctx.user.id
        )),
    );
    body.extend(render::render_folder(&data, folder, select.as_deref()));
    json_response(StatusCode::OK, &Value::Object(body))
}

// ---------------------------------------------------------------------------------------------------------------
// Message lists and a message by id

async fn list_all_messages(
    State(sim): State<SharedSim>,
    principal: Principal,
    Path(params): Params,
    uri: OriginalUri,
    headers: HeaderMap,
) -> Response {
    let ctx = match mail_ctx(sim, principal, &params, &uri, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    message_page(&ctx, None, &uri)
}

async fn list_folder_messages(
    State(sim): State<SharedSim>,
    principal: Principal,
    Path(params): Params,
    uri: OriginalUri,
    headers: HeaderMap,
) -> Response {
    let ctx = match mail_ctx(sim, principal, &params, &uri, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let folder = match resolve_folder(&ctx.mailbox.read(), &params) {
        Ok(f) => f,
        Err(r) => return r,
    };
    message_page(&ctx, Some(folder), &uri)
}

/// One page of a message list: which messages, whether a nextLink follows, and the total for `$count`.
struct Selection {
    page: Vec<u32>,
    more: bool,
    matched: usize,
}

/// A message list, `/me/messages` (folder `None`) or one folder's, with or without `$search`: the options, the
/// rendering and the nextLink are shared; only the choice of messages differs (`received_order` or `searched`).
fn message_page(ctx: &MailCtx, folder: Option<u32>, uri: &OriginalUri) -> Response {
    let search = match ctx.query.get("search") {
        None => None,
        Some(raw) => {
            if let Err(r) = search_options(&ctx.query) {
                return r;
            }
            match search::parse(raw) {
                Ok(expr) => Some(expr),
                Err(m) => return graph_error(StatusCode::BAD_REQUEST, "BadRequest", &m),
            }
        }
    };
    if search.is_none()
        && let Err(r) = only_options(
            &ctx.query,
            &["select", "top", "skip", "filter", "orderby", "count"],
        )
    {
        return r;
    }
    // `$count=true`: the total of matching messages in `@odata.count` (query-parameters, whose own example is
    // `/me/messages?$top=2&$count=true`; https://learn.microsoft.com/graph/query-parameters, read 2026-12-05).
    let count = match ctx
        .query
        .get("count")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("false") => false,
        Some("true") => true,
        Some(v) => {
            return invalid_query(&format!(
                "The value '{v}' of $count is invalid; use true or false."
            ));
        }
    };
    let select = match parse_select(
        ctx.query.get("select"),
        &MESSAGE_PROPERTIES,
        "microsoft.graph.message",
    ) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (top, skip) = match (
        parse_count(&ctx.query, "top", 10, MAX_TOP),
        parse_count(&ctx.query, "skip", 0, usize::MAX),
    ) {
        (Ok(t), Ok(s)) => (t, s),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let data = ctx.mailbox.read();
    let folders: Vec<u32> = match folder {
        Some(f) => vec![f],
        // Every folder of the mailbox (Deleted Items included), not the Recoverable Items.
        None => data
            .folders
            .iter()
            .filter(|f| f.well_known.as_deref() != Some("recoverableitemsdeletions"))
            .map(|f| f.key)
            .collect(),
    };
    let selection = match &search {
        Some(expr) => searched(&data, &folders, expr, &ctx.mailbox.owner, top, skip),
        None => match received_order(ctx, &data, &folders, count, top, skip) {
            Ok(s) => s,
            Err(r) => return r,
        },
    };
    let Selection {
        page,
        more,
        matched,
    } = selection;
    let opts = ctx.render_options(false);
    let value: Vec<Value> = page
        .iter()
        .filter_map(|&k| {
            data.message(k).map(|rec| {
                Value::Object(render::render_message(
                    &data,
                    k,
                    rec,
                    select.as_deref(),
                    &opts,
                ))
            })
        })
        .collect();
    let mut body = Map::new();
    let entity = match &select {
        None => "messages".to_owned(),
        Some(s) => format!("messages({})", s.join(",")),
    };
    body.insert(
        "@odata.context".into(),
        json!(format!(
            "{}/$metadata#users('{}')/{entity}",
            ctx.base(),
            ctx.user.id
        )),
    );
    if count {
        body.insert("@odata.count".into(), json!(matched));
    }
    body.insert("value".into(), Value::Array(value));
    if more {
        let path = match folder {
            Some(f) => format!(
                "{}{}/mailFolders/{}/messages",
                ctx.base(),
                ctx.prefix,
                data.folder_id(f)
            ),
            None => format!("{}{}/messages", ctx.base(), ctx.prefix),
        };
        body.insert(
            "@odata.nextLink".into(),
            json!(format!("{path}?{}", next_query(uri.0.query(), skip + top))),
        );
    }
    let mut response = json_response(StatusCode::OK, &Value::Object(body));
    apply_preference_header(&mut response, &ctx.prefer);
    response
}

/// The query options `$search` on messages combines with, and Graph's answers for the others.
///
/// - `$orderby`: "The results of the search are sorted by the date and time that the message was sent"
///   (https://learn.microsoft.com/graph/search-query-parameter, read 2026-12-06), and Outlook's REST reference
///   said "You cannot use $filter or $orderby in a search request"
///   (https://learn.microsoft.com/previous-versions/office/office-365-api/api/version-2.0/complex-types-for-mail-contacts-calendar#search-requests,
///   as quoted in github.com/microsoftgraph/msgraph-sdk-ruby/pull/55, read 2026-12-06). Graph's answer, as
///   observed: 400 `SearchWithOrderBy` "The query parameter '$orderBy' is not supported with '$search'."
///   (github.com/visionik/mogcli/issues/11, read 2026-12-06).
/// - `$filter`: the same old sentence; the current v1.0 pages say nothing and no captured answer was found, so
///   the code and message of this 400 are ours [sim].
/// - `$count`, `$expand` and the rest: undocumented with `$search`; refused (400) [sim].
/// - `$select`, `$top`, `$skip`: as on the list; nextLinks carry `$skip` like the list's.
#[allow(clippy::result_large_err)]
fn search_options(query: &Query) -> Result<(), Response> {
    if query.has("orderby") {
        return Err(graph_error(
            StatusCode::BAD_REQUEST,
            "SearchWithOrderBy",
            "The query parameter '$orderBy' is not supported with '$search'.",
        ));
    }
    if query.has("filter") {
        return Err(invalid_query(
            "The query parameter '$filter' is not supported with '$search'.",
        ));
    }
    for name in [
        "count",
        "expand",
        "skiptoken",
        "deltatoken",
        "format",
        "apply",
    ] {
        if query.has(name) {
            return Err(invalid_query(&format!(
                "The query parameter '${name}' is not supported with '$search'."
            )));
        }
    }
    Ok(())
}

/// `$search`: the matching messages of `folders`, newest sent first, at most 1,000 in all
/// ([`search::MAX_RESULTS`]); a page of `top` from `skip`, and a nextLink only while results remain under the cap.
fn searched(
    data: &MailboxData,
    folders: &[u32],
    expr: &search::Expr,
    owner: &crate::generate::Owner,
    top: usize,
    skip: usize,
) -> Selection {
    let candidates = folders.iter().flat_map(|&f| {
        data.folders[f as usize]
            .by_received
            .iter()
            .filter_map(|&(_, key)| data.message(key).map(|rec| (key, rec)))
    });
    let hits = search::run(expr, candidates, owner);
    let page: Vec<u32> = hits.iter().skip(skip).take(top).copied().collect();
    Selection {
        more: skip.saturating_add(top) < hits.len(),
        matched: hits.len(),
        page,
    }
}

/// The list without `$search`: `$filter` and `$orderby` on `receivedDateTime`, the folders merged by received
/// time (newest first unless `asc`).
#[allow(clippy::result_large_err)]
fn received_order(
    ctx: &MailCtx,
    data: &MailboxData,
    folders: &[u32],
    count: bool,
    top: usize,
    skip: usize,
) -> Result<Selection, Response> {
    let filter = match ctx.query.get("filter") {
        None => query::ReceivedFilter::default(),
        Some(f) => match query::parse_received_filter(f) {
            Some(f) => f,
            None => {
                return Err(invalid_query(
                    "microsoft-sim supports only receivedDateTime comparisons (ge, gt, le, lt, joined by 'and') in \
                     $filter on messages.",
                ));
            }
        },
    };
    let descending = match ctx.query.get("orderby") {
        None => true,
        Some(o) => {
            let parts: Vec<String> = o.split_whitespace().map(str::to_ascii_lowercase).collect();
            match parts
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice()
            {
                ["receiveddatetime"] | ["receiveddatetime", "asc"] => false,
                ["receiveddatetime", "desc"] => true,
                _ => {
                    return Err(invalid_query(
                        "microsoft-sim supports only $orderby=receivedDateTime [asc|desc] on messages.",
                    ));
                }
            }
        }
    };
    let mut iters: Vec<Box<dyn Iterator<Item = (i64, u32)> + '_>> = folders
        .iter()
        .map(|&f| {
            let set = &data.folders[f as usize].by_received;
            let it: Box<dyn Iterator<Item = (i64, u32)> + '_> = if descending {
                Box::new(set.iter().map(|(std::cmp::Reverse(r), k)| (*r, *k)))
            } else {
                Box::new(set.iter().rev().map(|(std::cmp::Reverse(r), k)| (*r, *k)))
            };
            it
        })
        .collect();
    let mut heads: Vec<Option<(i64, u32)>> = iters.iter_mut().map(|i| i.next()).collect();
    let mut matched = 0usize;
    let mut page: Vec<u32> = Vec::with_capacity(top);
    let mut more = false;
    loop {
        let best = heads
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.map(|h| (i, h)))
            .reduce(|a, b| {
                // Within a folder, equal dates come in key order; the merge keeps that order.
                let (ka, kb) = (
                    (a.1.0, std::cmp::Reverse(a.1.1)),
                    (b.1.0, std::cmp::Reverse(b.1.1)),
                );
                let better = if descending { kb > ka } else { kb < ka };
                if better { b } else { a }
            });
        let Some((i, (received, key))) = best else {
            break;
        };
        heads[i] = iters[i].next();
        if !filter.accepts(received) {
            continue;
        }
        if matched >= skip {
            if page.len() == top {
                more = true;
                if !count {
                    break;
                }
            } else {
                page.push(key);
            }
        }
        matched += 1;
    }
    Ok(Selection {
        page,
        more,
        matched,
    })
}

fn apply_preference_header(response: &mut Response, prefer: &Prefer) {
    let mut applied = Vec::new();
    if let Some(text) = prefer.body_text {
        applied.push(format!(
            "outlook.body-content-type=\"{}\"",
            if text { "text" } else { "html" }
        ));
    }
    if prefer.immutable_ids {
        applied.push("IdType=\"ImmutableId\"".to_owned());
    }
    if !applied.is_empty()
        && let Ok(v) = HeaderValue::from_str(&applied.join(", "))
    {
        response.headers_mut().insert("preference-applied", v);
    }
}

async fn get_message(
    State(sim): State<SharedSim>,
    principal: Principal,
    Path(params): Params,
    uri: OriginalUri,
    headers: HeaderMap,
) -> Response {
    let ctx = match mail_ctx(sim, principal, &params, &uri, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = only_options(&ctx.query, &["select"]) {
        return r;
    }
    let select = match parse_select(
        ctx.query.get("select"),
        &MESSAGE_PROPERTIES,
        "microsoft.graph.message",
    ) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let data = ctx.mailbox.read();
    let folder = match params.contains_key("folder") {
        true => match resolve_folder(&data, &params) {
            Ok(f) => Some(f),
            Err(r) => return r,
        },
        false => None,
    };
    let raw = params.get("message").map(String::as_str).unwrap_or("");
    let Some((key, _)) = data.resolve_message(raw) else {
        return if data.is_message_id_shape(raw) {
            item_not_found()
        } else {
            malformed_id()
        };
    };
    let Some(rec) = data.message(key) else {
        return item_not_found();
    };
    if folder.is_some_and(|f| f != rec.folder) {
        return item_not_found();
    }
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!(
            "{}/$metadata#users('{}')/messages/$entity",
            ctx.base(),
            ctx.user.id
        )),
    );
    body.extend(render::render_message(
        &data,
        key,
        rec,
        select.as_deref(),
        &ctx.render_options(false),
    ));
    let mut response = json_response(StatusCode::OK, &Value::Object(body));
    apply_preference_header(&mut response, &ctx.prefer);
    response
}

// ---------------------------------------------------------------------------------------------------------------
// Message delta

fn unsupported_filter() -> Response {
    invalid_query(
        "The '$filter' parameter value is not supported for 'Messages' resource; only a value of 'receivedDateTime \
         ge value' is supported.",
    )
}

async fn messages_delta(
    State(sim): State<SharedSim>,
    principal: Principal,
    Path(params): Params,
    uri: OriginalUri,
    headers: HeaderMap,
) -> Response {
    let ctx = match mail_ctx(sim, principal, &params, &uri, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    // "There is no support for `$search`" on message delta (message-delta, OData query parameters;
    // https://learn.microsoft.com/graph/api/message-delta, read 2026-12-06). Refused on every call of a round,
    // links included; the error's code and message are ours [sim].
    if ctx.query.has("search") {
        return invalid_query("The query parameter '$search' is not supported on message delta.");
    }
    let size = ctx
        .prefer
        .max_page_size
        .map(|n| n as usize)
        .unwrap_or(delta::DEFAULT_PAGE)
        .min(delta::MAX_PAGE);
    let token = ctx
        .query
        .get("skiptoken")
        .or_else(|| ctx.query.get("deltatoken"));
    let (folder_param, state) = {
        let data = ctx.mailbox.read();
        let folder = match resolve_folder(&data, &params) {
            Ok(f) => f,
            Err(r) => return r,
        };
        let state = match token {
            Some(t) => match DeltaState::decode(t) {
                Some(s) => s,
                None => return invalid_query("The sync state token is not valid."),
            },
            None => match initial_state(&ctx, folder, data.generation) {
                Ok(s) => s,
                Err(r) => return r,
            },
        };
        (folder, state)
    };
    let mut state = state;
    let data = ctx.mailbox.read();
    if state.i != ctx.sim.mail.instance || state.g != data.generation {
        let generation = if state.i == ctx.sim.mail.instance {
            state.g
        } else {
            0
        };
        return graph_error(
            StatusCode::GONE,
            "SyncStateNotFound",
            &format!(
                "The sync state generation is not found; generation={generation};[highest={}]",
                data.generation
            ),
        );
    }
    if state.f != folder_param {
        return invalid_query("The sync state token belongs to another folder.");
    }
    delta::begin_round(&data, &mut state, ctx.sim.mail.delta_cap());
    let page = delta::page(&data, &state, size);
    let opts = ctx.render_options(true);
    let select: Option<Vec<&'static str>> = state.s.as_ref().map(|names| {
        names
            .iter()
            .filter_map(|n| {
                MESSAGE_PROPERTIES
                    .iter()
                    .find(|p| **p == n.as_str())
                    .copied()
            })
            .collect()
    });
    let folder = &data.folders[state.f as usize];
    let value: Vec<Value> = page
        .items
        .iter()
        .filter_map(|item| match item {
            DeltaItem::Message(k) => data.message(*k).map(|rec| {
                Value::Object(render::render_message(
                    &data,
                    *k,
                    rec,
                    select.as_deref(),
                    &opts,
                ))
            }),
            DeltaItem::Removed(seq) => match folder.log.get(seq) {
                Some(Entry::Removed(t)) => Some(json!({
                    "@odata.type": "#microsoft.graph.message",
                    "id": data.tombstone_id(t, opts.immutable_ids),
                    "@removed": {"reason": "deleted"},
                })),
                _ => None,
            },
        })
        .collect();
    let link_base = format!(
        "{}{}/mailFolders/{}/messages/delta",
        ctx.base(),
        ctx.prefix,
        data.folder_id(state.f)
    );
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!("{}/$metadata#Collection(message)", ctx.base())),
    );
    match (&page.next, &page.delta) {
        (Some(next), _) => {
            body.insert(
                "@odata.nextLink".into(),
                json!(format!("{link_base}?$skiptoken={}", next.encode())),
            );
        }
        (None, Some(delta)) => {
            body.insert(
                "@odata.deltaLink".into(),
                json!(format!("{link_base}?$deltatoken={}", delta.encode())),
            );
        }
        (None, None) => {}
    }
    body.insert("value".into(), Value::Array(value));
    drop(data);
    let mut response = json_response(StatusCode::OK, &Value::Object(body));
    apply_preference_header(&mut response, &ctx.prefer);
    response
}

#[allow(clippy::result_large_err)]
fn initial_state(ctx: &MailCtx, folder: u32, generation: u32) -> Result<DeltaState, Response> {
    only_options(
        &ctx.query,
        &["select", "filter", "orderby", "top", "expand"],
    )?;
    if ctx.query.has("expand") {
        return Err(invalid_query(
            "microsoft-sim does not support $expand on message delta.",
        ));
    }
    let select = parse_select(
        ctx.query.get("select"),
        &MESSAGE_PROPERTIES,
        "microsoft.graph.message",
    )?;
    let flt = match ctx.query.get("filter") {
        None => None,
        Some(f) => match query::parse_received_filter(f) {
            Some(filter)
                if filter.terms.len() == 1
                    && matches!(filter.terms[0].0, CmpOp::Ge | CmpOp::Gt) =>
            {
                Some(filter.terms[0])
            }
            _ => return Err(unsupported_filter()),
        },
    };
    let orderby = match ctx.query.get("orderby") {
        None => false,
        Some(o) => {
            let parts: Vec<String> = o.split_whitespace().map(str::to_ascii_lowercase).collect();
            if parts != ["receiveddatetime", "desc"] {
                return Err(invalid_query(
                    "The '$orderby' parameter value is not supported for 'Messages' resource; only a value of \
                     'receivedDateTime desc' is supported.",
                ));
            }
            true
        }
    };
    let change = match ctx.query.get("changetype") {
        None => None,
        Some(c) => match ChangeType::parse(c) {
            Some(c) => Some(c),
            None => {
                return Err(invalid_query(&format!(
                    "The changeType value '{c}' is not valid; use created, updated or deleted."
                )));
            }
        },
    };
    Ok(DeltaState {
        i: ctx.sim.mail.instance,
        g: generation,
        f: folder,
        s: select.map(|s| s.into_iter().map(str::to_owned).collect()),
        flt,
        o: orderby,
        c: change,
        from: 0,
        b: None,
        cur: Cursor::Start,
        floor: None,
        pick: None,
    })
}
