//! The administrator's sync view (`/admin`) and the user's settings (`/me`).
//!
//! Sign-in: `/admin/login` and `/me/login` run the same authorization-code flow as
//! `/auth/login` (PKCE, nonce, validated id_token) asking `openid profile` only, so signing in
//! here never connects a mailbox. At `/auth/callback` the id_token's `tid` and `oid` become
//! the session's tenant and user: nothing in a request ever names a tenant afterwards, so an
//! administrator of one tenant can see nothing of another. `/admin` needs a directory role
//! that can grant tenant-wide consent (`wids`, [`IdTokenClaims::consent_admin_role`]).
//!
//! Every change is a POST with the session's CSRF token (compared in constant time) from a
//! page of ours (`Origin`, else `Sec-Fetch-Site: same-origin`); GET never changes anything.
//! See docs/admin-pages.md.

use connector_core::domain::{
    Connection, ConnectionStatus, FeatureBundle, SyncKey, SyncKind, SyncMeta, TenantSwitches,
    UserId, UserKey, UserSwitches,
};
use connector_core::offboard::{DisconnectError, Stores, disconnect_pending};
use connector_core::ports::StoreError;
use connector_core::sync::failure_reason;
use http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::{info, warn};

use crate::html::{Html, html_response, page, redirect};
use crate::idtoken::{CONSENT_ADMIN_ROLES, IdTokenClaims};
use crate::params::{Query, login_hint};
use crate::security::{constant_time_eq, random_token, sha256_hex};
use crate::sessions::{AuthSession, Flow};
use crate::websession::{Role, SessionCookie, WEB_SESSION_TTL_SECONDS, WebSession};
use crate::{App, Flowing, Leg, Stop};

/// What the pages' sign-in asks: identity only. `openid` makes the identity platform issue
/// the id_token (with `tid`, `oid`), `profile` adds the name and preferred_username; no Graph
/// permission is asked, so nothing of the mailbox is granted or connected ("OpenID Connect
/// on the Microsoft identity platform",
/// https://learn.microsoft.com/entra/identity-platform/v2-protocols-oidc, read 2026-12-06).
pub const PORTAL_SCOPE: &str = "openid profile";

/// Form bodies larger than this are refused.
const MAX_FORM_BYTES: usize = 4096;

/// How long a disconnection waits for a running sync to let go (the function times out at 20 s).
const LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(8);

/// The paths this module serves, and the one method each answers.
pub fn route(path: &str) -> Option<Method> {
    match path {
        "/admin" | "/admin/login" | "/me" | "/me/login" => Some(Method::GET),
        "/admin/switches"
        | "/admin/disconnect/finish"
        | "/me/switches"
        | "/me/disconnect"
        | "/me/disconnect/finish"
        | "/auth/logout" => Some(Method::POST),
        _ => None,
    }
}

fn at(value: Option<OffsetDateTime>) -> String {
    value
        .and_then(|at| at.format(&Rfc3339).ok())
        .unwrap_or_else(|| "never".into())
}

/// What a status asks of someone, in the words of the consent guides.
pub fn status_advice(status: ConnectionStatus) -> &'static str {
    match status {
        ConnectionStatus::Active => "Nothing to do.",
        ConnectionStatus::ReauthRequired => {
            "The user's sign-in stopped working (password change, revoked session or expired grant). Ask the user to sign in with Microsoft again."
        }
        ConnectionStatus::ConsentRevoked => {
            "The permissions were withdrawn. Grant consent again with the links above (pre-authorization), or ask the user to sign in and accept (user consent)."
        }
        ConnectionStatus::MailboxUnsupported => {
            "Microsoft Graph cannot reach this mailbox (on-premises or not enabled for Exchange Online). Move the mailbox to Exchange Online; nothing else will fix it."
        }
        ConnectionStatus::Disconnected => {
            "The user disconnected; their data was deleted. They sign in again to reconnect."
        }
    }
}

/// What a connection's state asks of someone: [`status_advice`], but for a disconnection that
/// has not finished, which is not "deleted" yet.
pub fn connection_advice(connection: &Connection) -> &'static str {
    if disconnect_pending(connection) {
        PENDING_ADVICE
    } else {
        status_advice(connection.status)
    }
}

/// What the administrator reads about a disconnection that has not finished.
const PENDING_ADVICE: &str = "The user disconnected, but deleting their data has not finished (a sync was still running, or a step failed). Syncing has stopped and their sign-in token is deleted; their imported emails and meetings, the stored message bodies, the sync state and their Teams share targets may still be stored. Finish it with the button here, or the user can with \"Finish disconnecting\" on their settings page (/me); the platform by calling disconnect again (POST /api/v1/tenants/{tenantId}/connections/{userId}/disconnect).";

/// A disconnection's deletion still to do, as the user's settings page lists it.
const STILL_KEPT: [&str; 3] = [
    "the imported emails and meetings, and their stored message bodies",
    "the mail and calendar sync state",
    "your Teams share targets",
];

/// What a sync's last error asks of someone, by its reason class ([`failure_reason`]).
pub fn error_advice(code: &str) -> &'static str {
    match failure_reason(code) {
        "app_credentials" => {
            "The connector's own credentials were refused. Nothing to do on your side: our operators are alerted."
        }
        "graph_rejected" => {
            "Microsoft refused a request for this user. Check that the user still has a licensed mailbox and that consent was granted for the feature; grant consent again if needed."
        }
        "graph_unavailable" | "token_unavailable" | "store_unavailable" | "out_of_time" => {
            "A temporary problem; the next scheduled sync retries by itself."
        }
        "queue" => "A temporary problem; the next scheduled sync retries by itself.",
        _ => "If it repeats, contact support with the user's id.",
    }
}

fn checkbox(name: &str, label: &str, checked: bool, disabled: bool, note: Option<&str>) -> Html {
    let mut html = Html::new();
    html.raw("<p><label><input type=\"checkbox\" name=\"")
        .text(name)
        .raw("\" value=\"on\"");
    if checked {
        html.raw(" checked");
    }
    if disabled {
        html.raw(" disabled");
    }
    html.raw("> ").text(label).raw("</label>");
    if let Some(note) = note {
        html.raw(" <span class=\"muted\">")
            .text(note)
            .raw("</span>");
    }
    html.raw("</p>\n");
    html
}

fn csrf_field(session: &WebSession) -> Html {
    let mut html = Html::new();
    html.raw("<input type=\"hidden\" name=\"csrf\" value=\"")
        .text(&session.csrf)
        .raw("\">\n");
    html
}

fn sign_out_form(session: &WebSession) -> Html {
    let mut html = Html::new();
    html.raw("<form method=\"post\" action=\"/auth/logout\">")
        .append(&csrf_field(session))
        .raw("<p class=\"muted\">Signed in as ")
        .text(&session.upn)
        .raw(" <button type=\"submit\">Sign out</button></p></form>\n");
    html
}

fn sync_cells(html: &mut Html, meta: Option<&SyncMeta>) {
    match meta {
        Some(meta) => {
            html.element("td", meta.stage.as_str())
                .element("td", &at(meta.last_success_at))
                .element(
                    "td",
                    &format!(
                        "{} scanned, {} stored",
                        meta.totals.scanned, meta.totals.stored
                    ),
                );
        }
        None => {
            html.element("td", "not started")
                .element("td", "never")
                .element("td", "-");
        }
    }
}

/// One user's row data.
pub struct UserRow {
    pub connection: Connection,
    pub mail: Option<SyncMeta>,
    pub calendar: Option<SyncMeta>,
}

impl App {
    fn session_cookie(&self) -> SessionCookie {
        SessionCookie {
            secure: self.config.secure_cookies(),
        }
    }

    fn portal_page(&self, status: StatusCode, title: &str, body: &Html) -> Response<Body> {
        html_response(
            status,
            page(&self.config.app_display_name, title, body),
            &[],
        )
    }

    fn portal_notice(&self, status: StatusCode, title: &str, message: &str) -> Response<Body> {
        let mut body = Html::new();
        body.element("p", message);
        self.portal_page(status, title, &body)
    }

    fn store_failed(&self, what: &str, error: &StoreError) -> Stop {
        self.internal(what, error)
    }

    /// Serves the portal's paths; `None` for any other path.
    pub(crate) async fn portal(&self, path: &str, request: &Request) -> Option<Response<Body>> {
        let method = route(path)?;
        if *request.method() != method {
            let mut response = self.portal_notice(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
                "This address does not answer this kind of request.",
            );
            response.headers_mut().insert(
                http::header::ALLOW,
                if method == Method::POST {
                    http::HeaderValue::from_static("POST")
                } else {
                    http::HeaderValue::from_static("GET")
                },
            );
            return Some(response);
        }
        let headers = request.headers();
        let outcome = match path {
            "/admin/login" => self.start_portal_sign_in(Flow::AdminPortal, request).await,
            "/me/login" => self.start_portal_sign_in(Flow::UserPortal, request).await,
            "/admin" => self.admin_view(headers).await,
            "/me" => self.me_view(headers).await,
            _ => self.portal_change(path, request).await,
        };
        Some(outcome.unwrap_or_else(|Stop(response)| response))
    }

    /// An optional `login_hint` (an address, as on `/auth/login`) pre-fills Microsoft's
    /// account form; without one Microsoft shows its account picker (`login_hint` and
    /// `prompt=select_account` of the authorize request: ../shared/graph-contract.md
    /// "authorize"; Microsoft Learn, "Microsoft identity platform and OAuth 2.0
    /// authorization code flow", read 2026-12-06).
    async fn start_portal_sign_in(&self, flow: Flow, request: &Request) -> Flowing<Response<Body>> {
        let query =
            Query::parse(request.uri().query()).map_err(|error| Stop(self.bad_request(&error)))?;
        let login_hint = login_hint(&query).map_err(|error| Stop(self.bad_request(&error)))?;
        let extra = match &login_hint {
            Some((hint, _)) => [("login_hint", hint.as_str())],
            None => [("prompt", "select_account")],
        };
        self.start_code_flow(
            flow,
            FeatureBundle::Auth,
            None,
            "organizations",
            PORTAL_SCOPE,
            &extra,
        )
        .await
    }

    /// `/auth/callback` for a portal sign-in: the validated id_token makes the session.
    pub(crate) async fn portal_callback(
        &self,
        session: AuthSession,
        query: &Query,
    ) -> Flowing<Response<Body>> {
        let (login, home) = match session.flow {
            Flow::AdminPortal => ("/admin/login", "/admin"),
            _ => ("/me/login", "/me"),
        };
        let clear = self.cookie().clear();
        let (_, claims) = self
            .redeem(
                &session,
                query,
                &Leg {
                    what: "portal sign-in",
                    title: "This sign-in could not be verified",
                    unverified: "Microsoft's answer did not prove who signed in, so you were not signed in. Please sign in again.",
                    unverified_status: StatusCode::BAD_REQUEST,
                    unreachable: "Microsoft's sign-in service did not answer as expected. Please try again in a minute.",
                    again: (self.site().url(login), "Sign in again"),
                },
            )
            .await?;
        let role = if session.flow == Flow::AdminPortal {
            match claims.consent_admin_role() {
                Some(role) => Some(role),
                None => {
                    info!(tid = %claims.tenant_id, user_id = %claims.user_id, "administrator page refused: no consent admin role");
                    return Ok(html_response(
                        StatusCode::FORBIDDEN,
                        self.need_admin_role_page(claims.preferred_username.as_deref()),
                        &[clear],
                    ));
                }
            }
        } else {
            None
        };
        let cookie = self.new_web_session(&claims, role).await?;
        info!(tid = %claims.tenant_id, user_id = %claims.user_id, admin = role.is_some(), "portal session started");
        // A page of ours continues to `home`: the redirect chain from Microsoft is cross-site,
        // and a browser withholds SameSite=Strict cookies from it (RFC 6265bis §5.2 "same-site"
        // requests; MDN "SameSite cookies", read 2026-12-06); a navigation our page starts is
        // same-site.
        let mut body = Html::new();
        body.element("p", "You are signed in.")
            .raw("<p>")
            .link(home, "Continue")
            .raw("</p>\n");
        let html = page(&self.config.app_display_name, "Signed in", &body).replacen(
            "<meta charset=\"utf-8\">",
            &format!(
                "<meta charset=\"utf-8\">\n<meta http-equiv=\"refresh\" content=\"0;url={home}\">"
            ),
            1,
        );
        Ok(html_response(StatusCode::OK, html, &[clear, cookie]))
    }

    fn need_admin_role_page(&self, who: Option<&str>) -> String {
        let mut body = Html::new();
        body.raw("<p>")
            .text(&format!(
                "The account you signed in with{} does not hold a directory role that can grant consent for your organisation, so it cannot open the administrator's view. You need one of these roles:",
                who.map(|w| format!(" ({w})")).unwrap_or_default()
            ))
            .raw("</p>\n<ul>\n");
        for (_, name) in CONSENT_ADMIN_ROLES {
            body.element("li", name);
        }
        body.raw("</ul>\n<p>")
            .link("/me/login", "Your own connection settings")
            .raw(" are open to every user.</p>\n");
        page(
            &self.config.app_display_name,
            "You need an administrator role",
            &body,
        )
    }

    async fn new_web_session(
        &self,
        claims: &IdTokenClaims,
        admin_role: Option<&'static str>,
    ) -> Flowing<String> {
        let id = random_token();
        let now = self.ports.clock.now().unix_timestamp();
        let session = WebSession {
            id_hash: sha256_hex(&id),
            tenant_id: claims.tenant_id.clone(),
            user_id: claims.user_id.clone(),
            role: if admin_role.is_some() {
                Role::Admin
            } else {
                Role::User
            },
            admin_role: admin_role.map(str::to_owned),
            upn: claims
                .preferred_username
                .clone()
                .or_else(|| claims.email.clone())
                .unwrap_or_default(),
            csrf: random_token(),
            expires_at: now + WEB_SESSION_TTL_SECONDS,
        };
        self.ports
            .web_sessions
            .create(&session)
            .await
            .map_err(|error| self.store_failed("storing a web session failed", &error))?;
        Ok(self.session_cookie().set(&id))
    }

    /// The session named by the cookie, if any and unexpired.
    async fn web_session(&self, headers: &http::HeaderMap) -> Flowing<Option<WebSession>> {
        let Some(value) = self.session_cookie().read(headers) else {
            return Ok(None);
        };
        let now = self.ports.clock.now().unix_timestamp();
        self.ports
            .web_sessions
            .get(&sha256_hex(value.secret()), now)
            .await
            .map_err(|error| self.store_failed("reading a web session failed", &error))
    }

    /// The session, or a redirect to `login` (a GET never changes anything, so none is lost).
    async fn require_session(&self, headers: &http::HeaderMap, login: &str) -> Flowing<WebSession> {
        match self.web_session(headers).await? {
            Some(session) => Ok(session),
            None => Err(Stop(redirect(
                &self.site().url(login),
                &[self.session_cookie().clear()],
            ))),
        }
    }

    /// The 403 page for a session that is not an administrator's, `None` for an administrator.
    fn refuse_non_admin(&self, session: &WebSession) -> Option<Response<Body>> {
        (session.role != Role::Admin).then(|| {
            html_response(
                StatusCode::FORBIDDEN,
                self.need_admin_role_page(Some(&session.upn)),
                &[],
            )
        })
    }

    // ------------------------------------------------------------------ /admin

    async fn user_rows(&self, session: &WebSession) -> Flowing<Vec<UserRow>> {
        let connections = self
            .ports
            .connections
            .list_by_tenant(&session.tenant_id)
            .await
            .map_err(|error| self.store_failed("listing connections failed", &error))?;
        let mut rows = Vec::new();
        for connection in connections {
            // Defence in depth: the store was asked for this tenant only.
            if connection.tenant_id != session.tenant_id {
                continue;
            }
            let key = |kind| {
                SyncKey::new(
                    connection.tenant_id.clone(),
                    connection.user_id.clone(),
                    kind,
                )
            };
            let mail = self
                .ports
                .sync
                .get_meta(&key(SyncKind::Mail))
                .await
                .map_err(|error| self.store_failed("reading sync state failed", &error))?;
            let calendar = self
                .ports
                .sync
                .get_meta(&key(SyncKind::Calendar))
                .await
                .map_err(|error| self.store_failed("reading sync state failed", &error))?;
            rows.push(UserRow {
                connection,
                mail,
                calendar,
            });
        }
        rows.sort_by(|a, b| a.connection.upn.cmp(&b.connection.upn));
        Ok(rows)
    }

    async fn admin_view(&self, headers: &http::HeaderMap) -> Flowing<Response<Body>> {
        let session = self.require_session(headers, "/admin/login").await?;
        if let Some(refused) = self.refuse_non_admin(&session) {
            return Ok(refused);
        }
        let tenant = self
            .ports
            .tenants
            .get_tenant(&session.tenant_id)
            .await
            .map_err(|error| self.store_failed("reading a tenant failed", &error))?;
        let rows = self.user_rows(&session).await?;
        let tid = session.tenant_id.to_string();
        let mut body = Html::new();
        body.append(&sign_out_form(&session));
        body.raw("<h2>Your organisation</h2>\n<table>\n");
        body.raw("<tr><th>Tenant id</th><td>")
            .text(&tid)
            .raw("</td></tr>\n");
        match &tenant {
            Some(tenant) => {
                let bundles = tenant
                    .granted_bundles
                    .iter()
                    .map(|b| b.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                body.raw("<tr><th>Consent</th><td>")
                    .text(&format!(
                        "{} ({})",
                        tenant.consent_state,
                        match tenant.consent_mode {
                            connector_core::domain::ConsentMode::Preauthorized =>
                                "pre-authorization: granted by an administrator for everyone",
                            connector_core::domain::ConsentMode::UserConsent =>
                                "user consent: each user accepts at sign-in",
                        }
                    ))
                    .raw("</td></tr>\n<tr><th>Consented feature bundles</th><td>")
                    .text(if bundles.is_empty() { "none" } else { &bundles })
                    .raw("</td></tr>\n<tr><th>Consent granted</th><td>")
                    .text(&at(tenant.consented_at))
                    .raw("</td></tr>\n");
            }
            None => {
                body.raw("<tr><th>Consent</th><td>")
                    .text("Nobody in your organisation has granted consent yet.")
                    .raw("</td></tr>\n");
            }
        }
        body.raw("</table>\n<p>Grant consent again (for example after a permission was withdrawn):</p>\n<ul>\n");
        for bundle in FeatureBundle::ALL {
            body.raw("<li>")
                .link(
                    &self.site().admin_consent_link(bundle, Some(&tid)),
                    &format!("Grant consent: {}", bundle.as_str()),
                )
                .raw("</li>\n");
        }
        body.raw("</ul>\n");

        let switches = tenant.as_ref().map(|t| t.switches).unwrap_or_default();
        body.raw("<h2>Organisation switches</h2>\n");
        if tenant.is_some() {
            body.raw("<form method=\"post\" action=\"/admin/switches\">\n")
                .append(&csrf_field(&session))
                .append(&checkbox(
                    "mail_sync",
                    "Email sync",
                    switches.mail_sync,
                    false,
                    Some("Import emails with CRM contacts, every 15 minutes."),
                ))
                .append(&checkbox(
                    "calendar_sync",
                    "Calendar sync",
                    switches.calendar_sync,
                    false,
                    Some("Import meetings with CRM contacts, every hour."),
                ))
                .append(&checkbox(
                    "teams_sharing",
                    "Teams sharing",
                    switches.teams_sharing,
                    false,
                    Some("Users may share to Teams channels and chats."),
                ))
                .append(&checkbox(
                    "explicit_consent",
                    "Explicit consent mode",
                    switches.explicit_consent,
                    false,
                    Some("Guests of your users' external meetings made with the add-in are asked for recording consent through the invite: the connector creates each meeting's Teams meeting and writes its consent link into the invite. Recording happens only if every guest agreed."),
                ))
                .append(&checkbox(
                    "change_notifications",
                    "Change notifications",
                    switches.change_notifications,
                    false,
                    Some("Microsoft tells us of new mail and meeting changes, so they arrive in seconds; the schedules then check subscribed users every few hours."),
                ))
                .raw("<p><button type=\"submit\">Save switches</button></p>\n</form>\n");
        } else {
            body.element(
                "p",
                "The switches become available once consent is granted.",
            );
        }

        body.raw("<h2>Connected users</h2>\n");
        if rows.is_empty() {
            body.element("p", "No user of your organisation has connected yet.");
        } else {
            body.raw("<table id=\"users\">\n<tr><th>User</th><th>Status</th><th>Sync</th><th>Stage</th><th>Last successful sync</th><th>Counts</th><th>Last error and what to do</th></tr>\n");
            for row in &rows {
                let c = &row.connection;
                let user = if c.upn.is_empty() {
                    format!("(disconnected user {})", c.user_id)
                } else {
                    c.upn.clone()
                };
                let status = match &c.status_reason {
                    Some(reason) => format!("{} ({reason})", c.status),
                    None => c.status.to_string(),
                };
                for (kind, meta) in [
                    ("mail", row.mail.as_ref()),
                    ("calendar", row.calendar.as_ref()),
                ] {
                    body.raw("<tr>")
                        .element("td", &user)
                        .element("td", &status)
                        .element("td", kind);
                    sync_cells(&mut body, meta);
                    body.raw("<td>");
                    if disconnect_pending(c) {
                        body.text(PENDING_ADVICE);
                        if kind == "mail" {
                            body.raw("<form method=\"post\" action=\"/admin/disconnect/finish\">")
                                .append(&csrf_field(&session))
                                .raw("<input type=\"hidden\" name=\"user\" value=\"")
                                .text(c.user_id.as_str())
                                .raw("\"><button type=\"submit\">Finish deleting this user's data</button></form>");
                        }
                    } else if c.status != ConnectionStatus::Active {
                        body.text(connection_advice(c));
                    } else if let Some(error) = meta.and_then(|m| m.last_error.as_ref()) {
                        body.raw("<code>")
                            .text(&error.code)
                            .raw("</code> at ")
                            .text(&at(Some(error.at)))
                            .raw(". ")
                            .text(error_advice(&error.code));
                    } else {
                        body.text("-");
                    }
                    body.raw("</td></tr>\n");
                }
            }
            body.raw("</table>\n");
        }
        Ok(self.portal_page(
            StatusCode::OK,
            "Microsoft 365 sync: administrator's view",
            &body,
        ))
    }

    // ------------------------------------------------------------------ /me

    async fn me_view(&self, headers: &http::HeaderMap) -> Flowing<Response<Body>> {
        let session = self.require_session(headers, "/me/login").await?;
        let key = UserKey::new(session.tenant_id.clone(), session.user_id.clone());
        let connection = self
            .ports
            .connections
            .get_connection(&key)
            .await
            .map_err(|error| self.store_failed("reading a connection failed", &error))?;
        if connection.as_ref().is_some_and(disconnect_pending) {
            return Ok(self.pending_view(&session));
        }
        let connection = connection.filter(|c| c.status != ConnectionStatus::Disconnected);
        let tenant_switches = self
            .ports
            .tenants
            .get_tenant(&session.tenant_id)
            .await
            .map_err(|error| self.store_failed("reading a tenant failed", &error))?
            .map(|t| t.switches)
            .unwrap_or_default();
        let mut body = Html::new();
        body.append(&sign_out_form(&session));
        let Some(connection) = connection else {
            body.element("p", "Your Microsoft 365 account is not connected: nothing of yours is imported or kept.")
                .raw("<p>")
                .link(&self.site().sign_in_link(None), "Connect with Microsoft")
                .raw("</p>\n");
            return Ok(self.portal_page(StatusCode::OK, "Your Microsoft 365 connection", &body));
        };
        body.raw("<table>\n<tr><th>Account</th><td>")
            .text(&connection.upn)
            .raw("</td></tr>\n<tr><th>Status</th><td>")
            .text(connection.status.as_str())
            .raw("</td></tr>\n<tr><th>What to do</th><td>")
            .text(status_advice(connection.status))
            .raw("</td></tr>\n</table>\n");
        let mine = connection.switches;
        let off = "Your administrator has turned this off for your organisation.";
        body.raw("<h2>What is imported</h2>\n<form method=\"post\" action=\"/me/switches\">\n")
            .append(&csrf_field(&session))
            .append(&checkbox(
                "mail_sync",
                "Email sync",
                mine.mail_sync && tenant_switches.mail_sync,
                !tenant_switches.mail_sync,
                (!tenant_switches.mail_sync).then_some(off),
            ))
            .append(&checkbox(
                "calendar_sync",
                "Calendar sync",
                mine.calendar_sync && tenant_switches.calendar_sync,
                !tenant_switches.calendar_sync,
                (!tenant_switches.calendar_sync).then_some(off),
            ))
            .append(&checkbox(
                "internal_meetings",
                "Import internal meetings",
                mine.internal_meetings,
                false,
                Some("Meetings whose participants are all from your organisation."),
            ))
            .raw("<p><button type=\"submit\">Save</button></p>\n</form>\n");
        body.raw("<h2>Disconnect</h2>\n<form method=\"post\" action=\"/me/disconnect\">\n")
            .append(&csrf_field(&session))
            .raw("<p>Disconnecting deletes everything the connector keeps of yours: the imported emails and meetings, your sign-in token, the sync state and your Teams share targets. It cannot be undone.</p>\n")
            .append(&checkbox("confirm", "I understand; delete my data", false, false, None))
            .raw("<p><button type=\"submit\">Disconnect</button></p>\n</form>\n");
        Ok(self.portal_page(StatusCode::OK, "Your Microsoft 365 connection", &body))
    }

    /// `/me` while the user's disconnection has not finished: what is deleted, what is not
    /// yet, and the button that finishes it.
    fn pending_view(&self, session: &WebSession) -> Response<Body> {
        let mut body = Html::new();
        body.append(&sign_out_form(session));
        body.element(
            "p",
            "You disconnected your Microsoft 365 account, but deleting your data has not finished (a sync was still running).",
        )
        .element("p", "Already done:")
        .raw("<ul id=\"done\">\n")
        .element("li", "nothing of yours is imported any more")
        .element("li", "your sign-in token (refresh token) is deleted")
        .element("li", "your name, address and permissions are removed from the connection record")
        .raw("</ul>\n")
        .element("p", "Not deleted yet:")
        .raw("<ul id=\"pending\">\n");
        for item in STILL_KEPT {
            body.element("li", item);
        }
        body.raw("</ul>\n<form method=\"post\" action=\"/me/disconnect/finish\">\n")
            .append(&csrf_field(session))
            .raw("<p>Finishing runs every step of the disconnection again, so anything left is deleted. If a sync is still running, try again in a few minutes.</p>\n")
            .raw("<p><button type=\"submit\">Finish disconnecting</button></p>\n</form>\n");
        self.portal_page(StatusCode::OK, "Your disconnection is not finished", &body)
    }

    // ------------------------------------------------------------------ changes (POST)

    /// A change may only come from a page of ours: `Origin` equal to ours, or, when the
    /// browser sends no usable `Origin`, `Sec-Fetch-Site: same-origin`. Our pages carry
    /// `Referrer-Policy: no-referrer`, under which a browser serializes the origin of a
    /// form POST as `null` (Fetch standard, "serializing a request origin",
    /// https://fetch.spec.whatwg.org/#serializing-a-request-origin, read 2026-12-06);
    /// `Sec-Fetch-Site` is set by the browser alone (a forbidden request header: MDN
    /// "Sec-Fetch-Site", https://developer.mozilla.org/docs/Web/HTTP/Reference/Headers/Sec-Fetch-Site,
    /// read 2026-12-06). The CSRF token is checked besides, always.
    pub(crate) fn same_origin(&self, headers: &http::HeaderMap) -> bool {
        let ours = url::Url::parse(self.config.web.public_base_url.as_str())
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default();
        match headers.get(http::header::ORIGIN).map(|o| o.to_str()) {
            Some(Ok("null")) | None => headers
                .get("sec-fetch-site")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v == "same-origin"),
            Some(origin) => origin.is_ok_and(|o| o == ours),
        }
    }

    fn refused_change(&self) -> Stop {
        Stop(self.portal_notice(
            StatusCode::FORBIDDEN,
            "This change was not made",
            "The form did not come from this site's current page, or it is too old. Nothing was changed. Open the page again and retry.",
        ))
    }

    async fn portal_change(&self, path: &str, request: &Request) -> Flowing<Response<Body>> {
        let headers = request.headers();
        let login = if path.starts_with("/admin") {
            "/admin/login"
        } else {
            "/me/login"
        };
        let Some(session) = self.web_session(headers).await? else {
            warn!(path, "change without a session");
            return Err(Stop(self.portal_notice(
                StatusCode::FORBIDDEN,
                "You are not signed in",
                "Your session ended, so nothing was changed. Sign in again and retry.",
            )));
        };
        let bytes: &[u8] = request.body().as_ref();
        let form = if bytes.len() > MAX_FORM_BYTES {
            None
        } else {
            std::str::from_utf8(bytes)
                .ok()
                .and_then(|text| Query::parse(Some(text)).ok())
        };
        let Some(form) = form else {
            return Err(self.refused_change());
        };
        let token_ok = form
            .get("csrf")
            .is_some_and(|token| constant_time_eq(token, &session.csrf));
        if !self.same_origin(headers) || !token_ok {
            warn!(path, tid = %session.tenant_id, "change refused: origin or CSRF token");
            return Err(self.refused_change());
        }
        let on = |name: &str| form.get(name).is_some_and(|v| v == "on");
        let now = self.ports.clock.now();
        match path {
            "/admin/switches" => {
                if let Some(refused) = self.refuse_non_admin(&session) {
                    return Ok(refused);
                }
                let switches = TenantSwitches {
                    mail_sync: on("mail_sync"),
                    calendar_sync: on("calendar_sync"),
                    teams_sharing: on("teams_sharing"),
                    explicit_consent: on("explicit_consent"),
                    change_notifications: on("change_notifications"),
                };
                self.ports
                    .tenants
                    .set_switches(&session.tenant_id, switches, now)
                    .await
                    .map_err(|error| self.store_failed("saving tenant switches failed", &error))?;
                info!(tid = %session.tenant_id, ?switches, "tenant switches saved");
                Ok(see_other(&self.site().url("/admin")))
            }
            "/me/switches" => {
                let key = UserKey::new(session.tenant_id.clone(), session.user_id.clone());
                let Some(connection) = self
                    .ports
                    .connections
                    .get_connection(&key)
                    .await
                    .map_err(|error| self.store_failed("reading a connection failed", &error))?
                    .filter(|c| c.status != ConnectionStatus::Disconnected)
                else {
                    return Ok(see_other(&self.site().url("/me")));
                };
                let allowed = self
                    .ports
                    .tenants
                    .get_tenant(&session.tenant_id)
                    .await
                    .map_err(|error| self.store_failed("reading a tenant failed", &error))?
                    .map(|t| t.switches)
                    .unwrap_or_default();
                let current = connection.switches;
                // A switch the administrator turned off is shown disabled and not submitted:
                // the user's own choice stays as it was.
                let switches = UserSwitches {
                    mail_sync: if allowed.mail_sync {
                        on("mail_sync")
                    } else {
                        current.mail_sync
                    },
                    calendar_sync: if allowed.calendar_sync {
                        on("calendar_sync")
                    } else {
                        current.calendar_sync
                    },
                    internal_meetings: on("internal_meetings"),
                };
                self.ports
                    .connections
                    .set_switches(&key, switches, now)
                    .await
                    .map_err(|error| self.store_failed("saving user switches failed", &error))?;
                info!(tid = %session.tenant_id, user_id = %session.user_id, ?switches, "user switches saved");
                Ok(see_other(&self.site().url("/me")))
            }
            "/me/disconnect" => {
                if !on("confirm") {
                    return Ok(self.portal_notice(
                        StatusCode::BAD_REQUEST,
                        "Nothing was deleted",
                        "Tick the confirmation box to disconnect. Nothing was changed.",
                    ));
                }
                self.disconnect(&session, now).await
            }
            "/me/disconnect/finish" => {
                let key = UserKey::new(session.tenant_id.clone(), session.user_id.clone());
                // Only a disconnection the user started: a connection made again since stays.
                if !self.pending_disconnection(&key).await? {
                    return Ok(see_other(&self.site().url("/me")));
                }
                self.disconnect(&session, now).await
            }
            "/admin/disconnect/finish" => {
                if let Some(refused) = self.refuse_non_admin(&session) {
                    return Ok(refused);
                }
                // The session's tenant, never one named by the form.
                let Some(user_id) = form.get("user").and_then(|u| UserId::parse(u).ok()) else {
                    return Err(self.refused_change());
                };
                let key = UserKey::new(session.tenant_id.clone(), user_id);
                // Only what the user asked for: an administrator finishes a disconnection
                // the user started, and cannot disconnect anybody here.
                if !self.pending_disconnection(&key).await? {
                    return Ok(see_other(&self.site().url("/admin")));
                }
                match self.finish_disconnection(&key, now).await? {
                    Ok(report) => {
                        info!(tid = %key.tenant_id, user_id = %key.user_id, activities = report.activities_deleted, admin = %session.user_id, "disconnection finished from the administrator's view");
                        Ok(see_other(&self.site().url("/admin")))
                    }
                    Err(()) => {
                        let mut body = Html::new();
                        body.element("p", "A sync of this user was still running, so their data is not deleted yet. Nothing else changed. Try again in a few minutes.")
                            .raw("<p>")
                            .link("/admin", "Back to the administrator's view")
                            .raw("</p>\n");
                        Ok(self.portal_page(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "Disconnection not finished",
                            &body,
                        ))
                    }
                }
            }
            _ => {
                self.ports
                    .web_sessions
                    .delete(&session.id_hash)
                    .await
                    .map_err(|error| self.store_failed("deleting a web session failed", &error))?;
                let mut body = Html::new();
                body.element("p", "You are signed out.");
                body.raw("<p>").link(login, "Sign in again").raw("</p>\n");
                Ok(html_response(
                    StatusCode::OK,
                    page(&self.config.app_display_name, "Signed out", &body),
                    &[self.session_cookie().clear()],
                ))
            }
        }
    }

    /// Whether `key`'s connection is a disconnection that has not finished.
    async fn pending_disconnection(&self, key: &UserKey) -> Flowing<bool> {
        Ok(self
            .ports
            .connections
            .get_connection(key)
            .await
            .map_err(|error| self.store_failed("reading a connection failed", &error))?
            .is_some_and(|c| disconnect_pending(&c)))
    }

    /// Runs `disconnect_user` (keeping the record); `Err(())` when a sync still holds its
    /// lease (the disconnection stays pending), a 500 page on any other failure.
    pub(crate) async fn finish_disconnection(
        &self,
        key: &UserKey,
        now: OffsetDateTime,
    ) -> Flowing<Result<connector_core::offboard::UserReport, ()>> {
        let stores = Stores {
            subscriptions: self.ports.subscriptions.as_deref(),
            connections: self.ports.connections.as_ref(),
            sync: self.ports.sync.as_ref(),
            activities: self.ports.activities.as_ref(),
            targets: self.ports.targets.as_ref(),
            vault: self.ports.vault.as_ref(),
            lease_wait: LEASE_WAIT,
        };
        match stores.disconnect_user(key, true, now).await {
            Ok(report) => Ok(Ok(report)),
            Err(DisconnectError::StillRunning { kind, .. }) => {
                warn!(tid = %key.tenant_id, user_id = %key.user_id, %kind, "disconnection pending: a sync still holds its lease");
                Ok(Err(()))
            }
            Err(error) => Err(self.internal("disconnecting a user failed", &error)),
        }
    }

    async fn disconnect(
        &self,
        session: &WebSession,
        now: OffsetDateTime,
    ) -> Flowing<Response<Body>> {
        let key = UserKey::new(session.tenant_id.clone(), session.user_id.clone());
        match self.finish_disconnection(&key, now).await? {
            Ok(report) => {
                info!(tid = %key.tenant_id, user_id = %key.user_id, activities = report.activities_deleted, "user disconnected from the settings page");
                let mut body = Html::new();
                body.element("p", "Your Microsoft 365 account is disconnected. This was deleted:")
                    .raw("<ul id=\"deleted\">\n")
                    .element("li", &format!("{} imported emails and meetings (and the stored message bodies)", report.activities_deleted))
                    .element("li", "your sign-in token (refresh token)")
                    .element("li", "the mail and calendar sync state")
                    .element("li", "your Teams share targets")
                    .element("li", "your name, address and permissions on the connection record (only \"disconnected\" remains)")
                    .raw("</ul>\n<p>")
                    .link("/me", "Back to your settings")
                    .raw("</p>\n");
                Ok(self.portal_page(StatusCode::OK, "Disconnected", &body))
            }
            Err(()) => {
                let mut body = Html::new();
                body.element("p", "Your account is disconnected and your sign-in token deleted, but a sync was still running, so your imported emails and meetings are not deleted yet. Your settings page shows what is left: use its \"Finish disconnecting\" button in a few minutes.")
                    .raw("<p>")
                    .link("/me", "Your settings")
                    .raw("</p>\n");
                Ok(self.portal_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Disconnection not finished",
                    &body,
                ))
            }
        }
    }
}

/// `303 See Other` after a change (post/redirect/get).
fn see_other(location: &str) -> Response<Body> {
    let mut response = redirect(location, &[]);
    *response.status_mut() = StatusCode::SEE_OTHER;
    response
}
