//! `/{tenant}/oauth2/v2.0/authorize` and `/{tenant}/v2.0/adminconsent`: request validation, sign-in, the consent
//! policy (existing grants, user consent allowed or admin-only, admin roles, the admin consent workflow,
//! assignment, cross-tenant accounts), the HTML forms' handlers, auto-approve, and the final redirects.
//!
//! Errors before the redirect URI is known to be registered are pages, never redirects: Microsoft never sends
//! a browser to an unregistered URI.

use std::collections::{BTreeSet, HashMap};

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::Authority;
use super::errors::{self, StsError};
use super::flows::{CodeRecord, PendingRequest, PkceMethod, RequestKind, ResponseMode, SsoSession};
use super::pages;
use super::scopes::{self, RequestedScopes};
use crate::state::{ConsentRequest, ConsentRequestStatus, GrantPrincipal, SharedSim, Sim};
use crate::world::UserConsent;

type Params = HashMap<String, String>;

const SSO_COOKIE: &str = "sim_sso";
/// How long an authorization code can be redeemed (Microsoft: about 10 minutes).
pub const CODE_LIFETIME: time::Duration = time::Duration::minutes(10);
/// How long a pending sign-in (the `ctx` of the forms) stays usable.
const PENDING_LIFETIME: time::Duration = time::Duration::hours(1);

pub async fn authorize_get(
    State(sim): State<SharedSim>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    start(&sim, &tenant, &headers, params, RequestKind::Authorize)
}

pub async fn authorize_post(
    State(sim): State<SharedSim>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Form(params): Form<Params>,
) -> Response {
    start(&sim, &tenant, &headers, params, RequestKind::Authorize)
}

pub async fn admin_consent(
    State(sim): State<SharedSim>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Response {
    start(&sim, &tenant, &headers, params, RequestKind::AdminConsent)
}

/// An error shown to the user instead of a redirect. Microsoft serves these pages with 200 (documented for the
/// authorization endpoint: "When the error is displayed on a web page, it uses an HTTP 200 status code").
fn error_page(sim: &Sim, e: &StsError) -> Response {
    let r = e.rendered(sim.now());
    let trailer = r
        .description
        .split_once("\r\n")
        .map(|(_, t)| t.to_owned())
        .unwrap_or_default();
    pages::error_page(StatusCode::OK, e.code, &e.message, &trailer)
}

fn non_empty(params: &Params, name: &str) -> Option<String> {
    params
        .get(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn start(
    sim: &Sim,
    tenant: &str,
    headers: &HeaderMap,
    params: Params,
    kind: RequestKind,
) -> Response {
    let authority = match Authority::resolve(sim, tenant) {
        Ok(a) => a,
        Err(e) => return error_page(sim, &e),
    };
    let Some(client_id) = non_empty(&params, "client_id") else {
        return error_page(sim, &errors::invalid_request_missing("client_id"));
    };
    let registered = {
        let dir = sim.directory();
        match dir.app(&client_id) {
            Some(app) => app.redirect_uris.clone(),
            None => {
                let tenant_name = match &authority {
                    Authority::Tenant { id, .. } => dir
                        .tenant(id)
                        .map(|t| t.display_name.clone())
                        .unwrap_or_default(),
                    _ => tenant.to_owned(),
                };
                return error_page(sim, &errors::app_not_found(&client_id, &tenant_name));
            }
        }
    };
    let Some(redirect_uri) = non_empty(&params, "redirect_uri") else {
        return error_page(sim, &errors::invalid_request_missing("redirect_uri"));
    };
    // Exact match, as Microsoft requires (no prefix or case folding of the path).
    if !registered.contains(&redirect_uri) {
        return error_page(
            sim,
            &errors::redirect_uri_mismatch(&redirect_uri, &client_id),
        );
    }

    let state = params.get("state").cloned();
    let response_mode = match params.get("response_mode").map(String::as_str) {
        None | Some("query") => ResponseMode::Query,
        Some("fragment") if kind == RequestKind::Authorize => ResponseMode::Fragment,
        Some("form_post") if kind == RequestKind::Authorize => ResponseMode::FormPost,
        Some(other) => {
            let e = StsError::new(
                "invalid_request",
                90001,
                format!("Invalid response_mode '{other}'."),
            );
            return redirect_error_raw(sim, &redirect_uri, ResponseMode::Query, kind, &state, &e);
        }
    };
    let fail =
        |e: StsError| redirect_error_raw(sim, &redirect_uri, response_mode, kind, &state, &e);

    if kind == RequestKind::Authorize {
        match params.get("response_type").map(String::as_str) {
            Some("code") => {}
            None => return fail(errors::invalid_request_missing("response_type")),
            Some(other) => return fail(errors::unsupported_response_type(other)),
        }
    }
    let Some(raw_scope) = non_empty(&params, "scope") else {
        return fail(errors::invalid_request_missing("scope"));
    };
    let requested = match RequestedScopes::parse(&raw_scope) {
        Ok(s) => s,
        Err(scopes::ScopeError::UnknownScope(s)) | Err(scopes::ScopeError::UnknownResource(s)) => {
            return fail(errors::invalid_scope(&s));
        }
    };
    let code_challenge = match (
        non_empty(&params, "code_challenge"),
        params.get("code_challenge_method").map(String::as_str),
    ) {
        (None, _) => None,
        (Some(c), None | Some("plain")) => Some((c, PkceMethod::Plain)),
        (Some(c), Some("S256")) => Some((c, PkceMethod::S256)),
        (Some(_), Some(_)) => return fail(errors::invalid_code_challenge_method()),
    };
    let prompt = non_empty(&params, "prompt");
    if let Some(p) = &prompt
        && !matches!(p.as_str(), "login" | "none" | "consent" | "select_account")
    {
        return fail(StsError::new(
            "invalid_request",
            90023,
            format!("Unsupported 'prompt' value '{p}'."),
        ));
    }

    let now = sim.now();
    let ctx = uuid::Uuid::new_v4().to_string();
    let mut request = PendingRequest {
        kind,
        authority: tenant.to_owned(),
        client_id,
        redirect_uri,
        scopes: requested,
        raw_scope,
        state,
        nonce: non_empty(&params, "nonce"),
        code_challenge,
        prompt: prompt.clone(),
        login_hint: non_empty(&params, "login_hint"),
        domain_hint: non_empty(&params, "domain_hint"),
        response_mode,
        client_info: params.get("client_info").is_some_and(|v| v == "1"),
        user: None,
        sid: None,
        created: now,
    };

    // An existing SSO session signs the user in silently unless the app asks for the account screen.
    let session = sso_session(sim, headers).filter(|s| {
        authority.admits(&s.tenant_id)
            && !matches!(prompt.as_deref(), Some("login" | "select_account"))
            && request
                .login_hint
                .as_deref()
                .is_none_or(|hint| sim.find_user(hint).is_some_and(|u| u.id == s.user_id))
    });
    let mut new_session = None;
    if let Some(s) = session {
        request.user = Some((s.tenant_id.clone(), s.user_id.clone()));
        request.sid = Some(s.sid.clone());
    } else if prompt.as_deref() == Some("none") {
        return redirect_error(sim, None, &request, &errors::login_required());
    } else if sim.config().auto_approve
        && let Some((tenant_id, user_id)) = auto_pick_user(sim, &authority, &request)
    {
        let s = create_session(sim, &tenant_id, &user_id);
        request.user = Some((tenant_id, user_id));
        request.sid = Some(s.sid.clone());
        new_session = Some(s);
    }

    sim.identity
        .flows()
        .pending
        .retain(|_, p| now - p.created < PENDING_LIFETIME);
    let signed_in = request.user.is_some();
    sim.identity
        .flows()
        .pending
        .insert(ctx.clone(), request.clone());
    let mut response = if signed_in {
        proceed(sim, &ctx, sim.config().auto_approve)
    } else {
        sign_in_page(sim, &ctx, &request, None)
    };
    if let Some(s) = new_session {
        set_sso_cookie(sim, &mut response, &s);
    }
    response
}

/// The account auto-approve signs in: the `login_hint` user, else the first user of the `domain_hint` tenant,
/// else the first user of a tenant-specific authority.
fn auto_pick_user(
    sim: &Sim,
    authority: &Authority,
    request: &PendingRequest,
) -> Option<(String, String)> {
    let dir = sim.directory();
    if let Some(hint) = &request.login_hint {
        return dir
            .find_user(hint)
            .map(|(t, u)| (t.id.clone(), u.info.id.clone()));
    }
    let tenant = match (&request.domain_hint, authority) {
        (Some(domain), _) => dir.tenant(domain),
        (None, Authority::Tenant { id, .. }) => dir.tenant(id),
        _ => None,
    }?;
    tenant
        .users
        .first()
        .map(|u| (tenant.id.clone(), u.info.id.clone()))
}

fn sso_session(sim: &Sim, headers: &HeaderMap) -> Option<SsoSession> {
    let cookies = headers.get_all(header::COOKIE);
    let sid = cookies
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == SSO_COOKIE)
        .map(|(_, v)| v.to_owned())?;
    let session = sim.identity.flows().sessions.get(&sid).cloned()?;
    // A "revoke sessions" also ends browser sessions.
    let revoked = sim
        .directory()
        .tenant(&session.tenant_id)
        .and_then(|t| t.user(&session.user_id))
        .is_none_or(|u| {
            u.sessions_revoked_at
                .is_some_and(|r| r >= session.auth_time)
        });
    (!revoked).then_some(session)
}

fn create_session(sim: &Sim, tenant_id: &str, user_id: &str) -> SsoSession {
    let session = SsoSession {
        tenant_id: tenant_id.to_owned(),
        user_id: user_id.to_owned(),
        sid: uuid::Uuid::new_v4().to_string(),
        auth_time: sim.now(),
    };
    sim.identity
        .flows()
        .sessions
        .insert(session.sid.clone(), session.clone());
    session
}

fn set_sso_cookie(sim: &Sim, response: &mut Response, session: &SsoSession) {
    let secure = if sim.base_url().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{SSO_COOKIE}={}; Path=/; HttpOnly; SameSite=None{secure}",
        session.sid
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn sign_in_page(sim: &Sim, ctx: &str, request: &PendingRequest, error: Option<&str>) -> Response {
    let accounts: Vec<(String, String)> = {
        let dir = sim.directory();
        let tenant = match Authority::resolve(sim, &request.authority) {
            Ok(Authority::Tenant { id, .. }) => dir.tenant(&id),
            _ => request.domain_hint.as_deref().and_then(|d| dir.tenant(d)),
        };
        tenant
            .map(|t| {
                t.users
                    .iter()
                    .map(|u| {
                        (
                            u.info.user_principal_name.clone(),
                            u.info.display_name.clone(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let action = format!("/{}/login", request.authority);
    pages::sign_in(
        &action,
        ctx,
        request.login_hint.as_deref(),
        &accounts,
        error,
    )
}

/// What policy says for the signed-in user of a pending request.
#[derive(Debug)]
enum Decision {
    Fail(StsError),
    /// Everything requested is consented: no prompt.
    Grant(BTreeSet<String>),
    Consent {
        scopes: BTreeSet<String>,
        org_checkbox: bool,
        for_org: bool,
    },
    NeedAdmin {
        pending: bool,
        workflow: bool,
    },
}

fn evaluate(sim: &Sim, request: &PendingRequest) -> Decision {
    let Some((tenant_id, user_id)) = &request.user else {
        return Decision::Fail(errors::login_required());
    };
    let dir = sim.directory();
    let (Some(tenant), Some(app)) = (dir.tenant(tenant_id), dir.app(&request.client_id)) else {
        return Decision::Fail(errors::login_required());
    };
    let Some(user) = tenant.user(user_id) else {
        return Decision::Fail(errors::login_required());
    };
    let authority = match Authority::resolve(sim, &request.authority) {
        Ok(a) => a,
        Err(e) => return Decision::Fail(e),
    };
    if !authority.admits(tenant_id) {
        let target = match &authority {
            Authority::Tenant { id, .. } => dir
                .tenant(id)
                .map(|t| t.display_name.clone())
                .unwrap_or_default(),
            _ => String::new(),
        };
        return Decision::Fail(errors::wrong_tenant(
            &user.info.user_principal_name,
            tenant_id,
            &target,
            &app.client_id,
            &app.display_name,
        ));
    }
    let is_admin = user.can_grant_admin_consent();
    let static_permissions: BTreeSet<String> = app
        .permissions
        .iter()
        .map(|p| scopes::canonical_scope(p))
        .collect();

    if request.kind == RequestKind::AdminConsent {
        if !is_admin {
            return Decision::NeedAdmin {
                pending: false,
                workflow: false,
            };
        }
        let mut wanted = request.scopes.graph.clone();
        if request.scopes.default {
            wanted.extend(static_permissions);
        }
        return Decision::Consent {
            scopes: wanted,
            org_checkbox: false,
            for_org: true,
        };
    }

    if !tenant.is_assigned(user_id) {
        return Decision::Fail(errors::not_assigned(&app.client_id, &app.display_name));
    }
    let granted = tenant.granted_scopes(&request.client_id, user_id);
    let mut wanted = request.scopes.graph.clone();
    if request.scopes.default {
        // `.default` is "everything already consented"; with nothing consented it asks for the static permissions.
        if granted.is_empty() {
            wanted.extend(static_permissions);
        } else {
            wanted.extend(granted.iter().cloned());
        }
    }
    let missing: BTreeSet<String> = wanted.difference(&granted).cloned().collect();
    let forced = request.prompt.as_deref() == Some("consent");
    let nothing_consented = request.scopes.default && granted.is_empty();
    if missing.is_empty() && !forced && !nothing_consented {
        return Decision::Grant(wanted);
    }
    let user_may_consent = tenant.user_consent == UserConsent::Allowed
        && !missing.iter().any(|s| scopes::requires_admin(s));
    if user_may_consent || is_admin {
        return Decision::Consent {
            scopes: wanted,
            org_checkbox: is_admin,
            for_org: false,
        };
    }
    let pending = dir.consent_requests.iter().any(|r| {
        r.status == ConsentRequestStatus::Pending
            && r.tenant_id == tenant.id
            && r.user_id == user.info.id
            && r.client_id.eq_ignore_ascii_case(&request.client_id)
    });
    Decision::NeedAdmin {
        pending,
        workflow: tenant.admin_consent_workflow,
    }
}

/// Continues a pending request whose user is known: grants silently, shows the consent or admin-approval page,
/// or (auto-approve) answers those pages as a user would.
fn proceed(sim: &Sim, ctx: &str, auto: bool) -> Response {
    let Some(request) = sim.identity.flows().pending.get(ctx).cloned() else {
        return expired_ctx(sim);
    };
    let decision = evaluate(sim, &request);
    let silent = request.prompt.as_deref() == Some("none");
    match decision {
        Decision::Fail(e) => redirect_error(sim, Some(ctx), &request, &e),
        Decision::Grant(scopes) => finish(sim, ctx, &request, scopes),
        Decision::Consent { .. } | Decision::NeedAdmin { .. } if silent => {
            let app_name = sim
                .directory()
                .app(&request.client_id)
                .map(|a| a.display_name.clone())
                .unwrap_or_default();
            let e = errors::consent_required(&request.client_id, &app_name);
            redirect_error(
                sim,
                Some(ctx),
                &request,
                &StsError {
                    error: "consent_required",
                    suberror: None,
                    ..e
                },
            )
        }
        Decision::Consent {
            scopes,
            org_checkbox,
            for_org,
        } => {
            if auto {
                // Admins consent for the organization where users may not consent for themselves.
                let org = for_org || (org_checkbox && tenant_requires_admin(sim, &request));
                apply_consent(sim, &request, &scopes, org);
                return finish(sim, ctx, &request, scopes);
            }
            let (app_name, upn) = names(sim, &request);
            let mut shown: Vec<String> = scopes.iter().cloned().collect();
            shown.extend(request.scopes.oidc.iter().cloned());
            pages::consent(pages::ConsentPage {
                action: &format!("/{}/Consent/Set", request.authority),
                ctx,
                app_name: &app_name,
                user_upn: &upn,
                scopes: shown,
                org_checkbox,
                for_org,
            })
        }
        Decision::NeedAdmin { pending, workflow } => {
            if auto {
                let mut pending = pending;
                if workflow && !pending {
                    create_consent_request(
                        sim,
                        &request,
                        "Requested by microsoft-sim auto-approve",
                    );
                    pending = true;
                }
                return redirect_error(
                    sim,
                    Some(ctx),
                    &request,
                    &need_admin_error(sim, &request, pending),
                );
            }
            let (app_name, upn) = names(sim, &request);
            let request_action = format!("/{}/consent/request", request.authority);
            pages::admin_approval(pages::AdminApprovalPage {
                ctx,
                app_name: &app_name,
                user_upn: &upn,
                back_action: &format!("/{}/interrupt/back", request.authority),
                request_action: workflow.then_some(request_action.as_str()),
                pending,
            })
        }
    }
}

fn tenant_requires_admin(sim: &Sim, request: &PendingRequest) -> bool {
    let dir = sim.directory();
    request
        .user
        .as_ref()
        .and_then(|(t, _)| dir.tenant(t))
        .is_some_and(|t| t.user_consent == UserConsent::AdminOnly)
}

fn need_admin_error(sim: &Sim, request: &PendingRequest, pending: bool) -> StsError {
    let (app_name, _) = names(sim, request);
    let e = if pending {
        errors::admin_approval_pending()
    } else {
        errors::admin_approval_required(&app_name)
    };
    e.subcode("cancel")
}

fn names(sim: &Sim, request: &PendingRequest) -> (String, String) {
    let dir = sim.directory();
    let app = dir
        .app(&request.client_id)
        .map(|a| a.display_name.clone())
        .unwrap_or_default();
    let upn = request
        .user
        .as_ref()
        .and_then(|(t, u)| dir.tenant(t).and_then(|t| t.user(u)))
        .map(|u| u.info.user_principal_name.clone())
        .unwrap_or_default();
    (app, upn)
}

fn apply_consent(sim: &Sim, request: &PendingRequest, scopes: &BTreeSet<String>, org: bool) {
    let Some((tenant_id, user_id)) = &request.user else {
        return;
    };
    let now = sim.now();
    let mut dir = sim.directory_mut();
    if let Some(tenant) = dir.tenant_mut(tenant_id) {
        let principal = if org {
            GrantPrincipal::AllUsers
        } else {
            GrantPrincipal::User(user_id.clone())
        };
        tenant.add_grant(&request.client_id, principal, scopes, now);
    }
}

fn create_consent_request(
    sim: &Sim,
    request: &PendingRequest,
    justification: &str,
) -> Option<ConsentRequest> {
    let (tenant_id, user_id) = request.user.clone()?;
    let now = sim.now();
    let mut scopes = request.scopes.graph.clone();
    {
        let dir = sim.directory();
        if request.scopes.default
            && let Some(app) = dir.app(&request.client_id)
        {
            scopes.extend(app.permissions.iter().map(|p| scopes::canonical_scope(p)));
        }
    }
    let consent_request = ConsentRequest {
        id: uuid::Uuid::new_v4().to_string(),
        tenant_id,
        client_id: request.client_id.clone(),
        user_id,
        scopes,
        justification: justification.to_owned(),
        status: ConsentRequestStatus::Pending,
        created_date_time: now,
    };
    sim.directory_mut()
        .consent_requests
        .push(consent_request.clone());
    Some(consent_request)
}

/// The success redirect: a code (authorize) or the admin-consent confirmation.
fn finish(sim: &Sim, ctx: &str, request: &PendingRequest, scopes: BTreeSet<String>) -> Response {
    sim.identity.flows().pending.remove(ctx);
    let Some((tenant_id, user_id)) = request.user.clone() else {
        return expired_ctx(sim);
    };
    let sid = request
        .sid
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    match request.kind {
        RequestKind::AdminConsent => {
            apply_consent(sim, request, &scopes, true);
            let mut params = vec![
                ("admin_consent".to_owned(), "True".to_owned()),
                ("tenant".to_owned(), tenant_id),
                (
                    "scope".to_owned(),
                    scopes::qualified(&scopes, &BTreeSet::new()),
                ),
            ];
            if let Some(state) = &request.state {
                params.push(("state".to_owned(), state.clone()));
            }
            redirect(&request.redirect_uri, ResponseMode::Query, &params)
        }
        RequestKind::Authorize => {
            let code = super::flows::authorization_code();
            let now = sim.now();
            let mut flows = sim.identity.flows();
            // Long-expired codes are forgotten so a long-running sim's memory stays flat; recently expired ones stay
            // so their redemption still answers "expired" (70008) rather than "unknown" (70000).
            flows
                .codes
                .retain(|_, c| now - c.issued <= CODE_LIFETIME * 6);
            flows.codes.insert(
                code.clone(),
                CodeRecord {
                    client_id: request.client_id.clone(),
                    redirect_uri: request.redirect_uri.clone(),
                    tenant_id: tenant_id.clone(),
                    user_id: user_id.clone(),
                    graph_scopes: scopes,
                    oidc: request.scopes.oidc.clone(),
                    nonce: request.nonce.clone(),
                    code_challenge: request.code_challenge.clone(),
                    issued: now,
                    redeemed: false,
                    sid: sid.clone(),
                },
            );
            drop(flows);
            let mut params = vec![("code".to_owned(), code)];
            if request.client_info {
                params.push(("client_info".to_owned(), client_info(&user_id, &tenant_id)));
            }
            if let Some(state) = &request.state {
                params.push(("state".to_owned(), state.clone()));
            }
            params.push(("session_state".to_owned(), sid));
            redirect(&request.redirect_uri, request.response_mode, &params)
        }
    }
}

/// `client_info`: base64url JSON `{"uid","utid"}`, which MSAL uses to key its account cache.
pub fn client_info(user_id: &str, tenant_id: &str) -> String {
    let json = serde_json::json!({ "uid": user_id, "utid": tenant_id }).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

/// An error redirect that ends the pending request `ctx` (if it was stored).
fn redirect_error(
    sim: &Sim,
    ctx: Option<&str>,
    request: &PendingRequest,
    e: &StsError,
) -> Response {
    if let Some(ctx) = ctx {
        sim.identity.flows().pending.remove(ctx);
    }
    redirect_error_raw(
        sim,
        &request.redirect_uri,
        request.response_mode,
        request.kind,
        &request.state,
        e,
    )
}

fn redirect_error_raw(
    sim: &Sim,
    redirect_uri: &str,
    mode: ResponseMode,
    kind: RequestKind,
    state: &Option<String>,
    e: &StsError,
) -> Response {
    let r = e.rendered(sim.now());
    let mut params = vec![
        ("error".to_owned(), e.error.to_owned()),
        ("error_description".to_owned(), r.description),
        ("error_uri".to_owned(), e.error_uri(sim.base_url())),
    ];
    if let Some(sub) = e.subcode {
        params.push(("error_subcode".to_owned(), sub.to_owned()));
    }
    if kind == RequestKind::AdminConsent {
        params.push(("admin_consent".to_owned(), "True".to_owned()));
    }
    if let Some(state) = state {
        params.push(("state".to_owned(), state.clone()));
    }
    redirect(redirect_uri, mode, &params)
}

fn redirect(redirect_uri: &str, mode: ResponseMode, params: &[(String, String)]) -> Response {
    if mode == ResponseMode::FormPost {
        return pages::form_post(redirect_uri, params);
    }
    let encoded: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let location = match mode {
        ResponseMode::Fragment => format!("{redirect_uri}#{encoded}"),
        _ if redirect_uri.contains('?') => format!("{redirect_uri}&{encoded}"),
        _ => format!("{redirect_uri}?{encoded}"),
    };
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    response
}

fn expired_ctx(sim: &Sim) -> Response {
    let e = StsError::new(
        "invalid_request",
        50089,
        "Authentication failed due to flow token expired. Please restart the sign-in from the application.",
    );
    error_page(sim, &e)
}

fn pending(sim: &Sim, ctx: &str) -> Option<PendingRequest> {
    sim.identity.flows().pending.get(ctx).cloned()
}

#[derive(serde::Deserialize)]
pub struct SignInForm {
    ctx: String,
    #[serde(default)]
    login: String,
}

pub async fn sign_in(State(sim): State<SharedSim>, Form(form): Form<SignInForm>) -> Response {
    let Some(mut request) = pending(&sim, &form.ctx) else {
        return expired_ctx(&sim);
    };
    let Some(user) = sim.find_user(form.login.trim()) else {
        let message = "We couldn't find an account with that username. Try another, or get a new Microsoft account.";
        return sign_in_page(&sim, &form.ctx, &request, Some(message));
    };
    let session = create_session(&sim, &user.tenant_id, &user.id);
    request.user = Some((user.tenant_id.clone(), user.id.clone()));
    request.sid = Some(session.sid.clone());
    // Signing in satisfies prompt=login/select_account; prompt=consent still forces the consent page.
    if matches!(request.prompt.as_deref(), Some("login" | "select_account")) {
        request.prompt = None;
    }
    sim.identity
        .flows()
        .pending
        .insert(form.ctx.clone(), request);
    let mut response = proceed(&sim, &form.ctx, false);
    set_sso_cookie(&sim, &mut response, &session);
    response
}

#[derive(serde::Deserialize)]
pub struct ConsentForm {
    ctx: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    org_consent: Option<String>,
}

pub async fn consent_set(State(sim): State<SharedSim>, Form(form): Form<ConsentForm>) -> Response {
    let Some(request) = pending(&sim, &form.ctx) else {
        return expired_ctx(&sim);
    };
    match evaluate(&sim, &request) {
        Decision::Consent {
            scopes,
            org_checkbox,
            for_org,
        } => {
            if form.decision != "accept" {
                return redirect_error(
                    &sim,
                    Some(&form.ctx),
                    &request,
                    &errors::user_declined().subcode("cancel"),
                );
            }
            let org = for_org || (org_checkbox && form.org_consent.as_deref() == Some("on"));
            apply_consent(&sim, &request, &scopes, org);
            finish(&sim, &form.ctx, &request, scopes)
        }
        // Policy changed while the page was open: answer with what it says now.
        _ => proceed(&sim, &form.ctx, false),
    }
}

#[derive(serde::Deserialize)]
pub struct RequestForm {
    ctx: String,
    #[serde(default)]
    justification: String,
}

pub async fn request_approval(
    State(sim): State<SharedSim>,
    Form(form): Form<RequestForm>,
) -> Response {
    let Some(request) = pending(&sim, &form.ctx) else {
        return expired_ctx(&sim);
    };
    match evaluate(&sim, &request) {
        Decision::NeedAdmin {
            pending: false,
            workflow: true,
        } => {
            create_consent_request(&sim, &request, form.justification.trim());
            let (app_name, _) = names(&sim, &request);
            pages::request_sent(
                &form.ctx,
                &app_name,
                &format!("/{}/interrupt/back", request.authority),
            )
        }
        _ => proceed(&sim, &form.ctx, false),
    }
}

#[derive(serde::Deserialize)]
pub struct BackForm {
    ctx: String,
}

pub async fn back_to_app(State(sim): State<SharedSim>, Form(form): Form<BackForm>) -> Response {
    let Some(request) = pending(&sim, &form.ctx) else {
        return expired_ctx(&sim);
    };
    let pending = matches!(
        evaluate(&sim, &request),
        Decision::NeedAdmin { pending: true, .. }
    );
    redirect_error(
        &sim,
        Some(&form.ctx),
        &request,
        &need_admin_error(&sim, &request, pending),
    )
}

#[derive(serde::Deserialize)]
pub struct ErrorQuery {
    #[serde(default)]
    code: String,
}

/// `error_uri` target: a page naming the code, as login.microsoftonline.com/error does.
pub async fn error_info(Query(q): Query<ErrorQuery>) -> Response {
    let code: u32 = q.code.parse().unwrap_or(0);
    pages::error_page(
        StatusCode::OK,
        code,
        "See the Microsoft Entra authentication and authorization error codes reference.",
        "",
    )
}
