//! `consent-callback`: the connector's web-facing Lambda (API Gateway HTTP API). It serves
//! the administrators' consent page and links, records admin consent once the
//! administrator's own sign-in proves tenant and role, runs "Sign in with Microsoft"
//! (authorization code + PKCE + nonce, id_token validation), stores what a sign-in grants,
//! and explains every Microsoft error it receives.
//!
//! [`App::handle`] decodes the request and drives the flows over narrow ports: tenants,
//! tenant domains, connections, the token vault, the job queue, auth sessions, the token
//! endpoint and the id_token validator. `main.rs` only builds the real adapters.
//!
//! Routes (GET only): `/consent`, `/consent/admin`, `/consent/callback`, `/auth/login`,
//! `/auth/callback`, `/healthz`; the administrator's and the user's pages ([`portal`]): GET
//! `/admin`, `/admin/login`, `/me`, `/me/login`, POST `/admin/switches`, `/me/switches`,
//! `/me/disconnect`, `/auth/logout`. Anything else is a 404 page; other methods get 405.

pub mod config;
pub mod domains;
pub mod errors;
pub mod html;
pub mod idtoken;
pub mod lambda;
pub mod meeting;
mod notifications;
pub mod organization;
pub mod pages;
pub mod params;
pub mod portal;
pub mod security;
pub mod sessions;
pub mod token;
pub mod websession;

use std::collections::BTreeSet;
use std::sync::Arc;

use connector_core::domain::{
    Connection, ConnectionStatus, ConsentMode, ConsentState, Feature, FeatureBundle, Scope,
    ScopeSet, StatusChange, SyncKind, Tenant, TenantId, TenantSwitches, UserKey,
};
use connector_core::messages::{SyncJob, SyncReason};
use connector_core::ports::{
    ActivityStore, ConnectionStore, JobQueue, ShareTargetStore, SyncStateStore, TenantStore,
    TokenVault, enqueue_sync_jobs,
};
use connector_core::secret::{AuthCode, TokenRecord};
use http::{Method, StatusCode};
use lambda_http::{Body, Request, RequestExt as _, Response};
use serde_json::json;
use tracing::{error, info, warn};

use crate::config::ConsentConfig;
use crate::domains::TenantDomains;
use crate::errors::MicrosoftError;
use crate::html::{html_response, json_response, redirect};
use crate::idtoken::{CONSENT_ADMIN_ROLES, IdTokenClaims, IdTokenValidator};
use crate::organization::OrganizationDirectory;
use crate::pages::Site;
use crate::params::{ParamError, Query, TenantHint, login_hint};
use crate::security::{
    BindingCookie, FLOW_TTL_SECONDS, binding_matches, pkce_pair, random_token, sha256_hex,
};
use crate::sessions::{AuthSession, AuthSessionStore, Flow};
use crate::token::{CodeExchange, ExchangeError};

/// The scopes a user of a pre-authorized tenant asks for: everything the admin granted.
pub const PREAUTHORIZED_SCOPE: &str =
    "openid profile email offline_access https://graph.microsoft.com/.default";

/// Time, injectable for tests (the one clock of the connector).
pub use connector_core::clock::{Clock, SystemClock};

/// Everything the handler talks to.
#[derive(Clone)]
pub struct Ports {
    pub tenants: Arc<dyn TenantStore>,
    pub domains: Arc<dyn TenantDomains>,
    pub connections: Arc<dyn ConnectionStore>,
    pub vault: Arc<dyn TokenVault>,
    pub queue: Arc<dyn JobQueue>,
    pub sessions: Arc<dyn AuthSessionStore>,
    pub exchange: Arc<dyn CodeExchange>,
    pub id_tokens: Arc<dyn IdTokenValidator>,
    /// Graph's `/organization`, read with the verifying administrator's access token.
    pub organization: Arc<dyn OrganizationDirectory>,
    pub clock: Arc<dyn Clock>,
    /// The sessions of `/admin` and `/me` ([`websession`]).
    pub web_sessions: Arc<dyn websession::WebSessionStore>,
    /// Sync state (the administrator's view reads it; disconnecting deletes it).
    pub sync: Arc<dyn SyncStateStore>,
    /// Imported activities (and their bodies): disconnecting deletes them.
    pub activities: Arc<dyn ActivityStore>,
    /// Teams share targets: disconnecting deletes them.
    pub targets: Arc<dyn ShareTargetStore>,
    /// Change notifications: the endpoint Graph calls (`None`: no such route).
    pub webhook: Option<Arc<connector_core::notifications::webhook::Webhook>>,
    /// Disconnecting deletes the user's subscriptions (at Graph, with their token).
    pub subscriptions: Option<Arc<dyn connector_core::offboard::SubscriptionCanceller>>,
    /// Explicit Consent Mode's meetings: the consent page `/m/{token}` (`None`: no page).
    pub consent_meetings: Option<Arc<dyn connector_core::ports::ConsentMeetingStore>>,
}

pub struct App {
    config: ConsentConfig,
    ports: Ports,
}

/// A request that ends early with a page.
struct Stop(Response<Body>);

/// How a code-redemption leg ([`App::redeem`]) words its failures.
struct Leg<'a> {
    /// For logs: `sign-in`, `administrator verification`.
    what: &'static str,
    /// Title of the page when the answer proves nobody.
    title: &'a str,
    unverified: &'a str,
    unverified_status: StatusCode,
    /// Message when Microsoft could not be reached or answered nonsense.
    unreachable: &'a str,
    /// Where to start again, and the link's label.
    again: (String, &'a str),
}

type Flowing<T> = Result<T, Stop>;

impl App {
    pub fn new(config: ConsentConfig, ports: Ports) -> Self {
        Self { config, ports }
    }

    pub fn config(&self) -> &ConsentConfig {
        &self.config
    }

    fn site(&self) -> Site<'_> {
        Site {
            product: &self.config.app_display_name,
            client_id: self.config.client_id(),
            public_base_url: self.config.web.public_base_url.as_str(),
        }
    }

    fn cookie(&self) -> BindingCookie {
        BindingCookie {
            secure: self.config.secure_cookies(),
        }
    }

    /// Serves one request. Never fails: every outcome is a page, a redirect or JSON.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let raw_path = request.extensions().raw_http_path();
        let path = if raw_path.is_empty() {
            request.uri().path().to_owned()
        } else {
            raw_path.to_owned()
        };
        if matches!(
            path.as_str(),
            connector_core::notifications::webhook::NOTIFICATION_PATH
                | connector_core::notifications::webhook::LIFECYCLE_PATH
        ) && let Some(response) = self.graph_notifications(&request).await
        {
            return response;
        }
        if meeting::is_meeting_path(&path) {
            return self.meeting(&path, &request).await;
        }
        if let Some(response) = self.portal(&path, &request).await {
            return response;
        }
        let known = matches!(
            path.as_str(),
            "/healthz"
                | "/consent"
                | "/consent/admin"
                | "/consent/callback"
                | "/auth/login"
                | "/auth/callback"
        );
        if !known {
            return self.page(
                StatusCode::NOT_FOUND,
                pages::notice(
                    &self.site(),
                    "Page not found",
                    "There is no page at this address.",
                    Some((&self.site().url("/consent"), "Go to the consent page")),
                ),
                &[],
            );
        }
        if request.method() != Method::GET {
            let mut response = self.page(
                StatusCode::METHOD_NOT_ALLOWED,
                pages::notice(
                    &self.site(),
                    "Method not allowed",
                    "This address only answers GET requests.",
                    None,
                ),
                &[],
            );
            response
                .headers_mut()
                .insert(http::header::ALLOW, http::HeaderValue::from_static("GET"));
            return response;
        }
        if path == "/healthz" {
            return json_response(StatusCode::OK, &json!({"status": "ok"}));
        }
        let query = match Query::parse(request.uri().query()) {
            Ok(query) => query,
            Err(error) => return self.bad_request(&error),
        };
        let outcome = match path.as_str() {
            "/consent" => Ok(self.page(StatusCode::OK, pages::consent_page(&self.site()), &[])),
            "/consent/admin" => self.start_admin_consent(&query).await,
            "/consent/callback" => self.admin_consent_callback(&query, request.headers()).await,
            "/auth/login" => self.start_sign_in(&query).await,
            _ => self.sign_in_callback(&query, request.headers()).await,
        };
        outcome.unwrap_or_else(|Stop(response)| response)
    }

    /// The 400 page for a request whose query cannot even be read (see [`lambda`]).
    pub fn unreadable_request_page(&self) -> Response<Body> {
        self.bad_request(&ParamError::Malformed)
    }

    fn page(&self, status: StatusCode, html: String, cookies: &[String]) -> Response<Body> {
        html_response(status, html, cookies)
    }

    fn bad_request(&self, error: &ParamError) -> Response<Body> {
        let message =
            format!("This link is not valid: {error}. Please use the link from the consent page.");
        self.page(
            StatusCode::BAD_REQUEST,
            pages::notice(
                &self.site(),
                "Invalid request",
                &message,
                Some((&self.site().url("/consent"), "Go to the consent page")),
            ),
            &[],
        )
    }

    fn expired(&self) -> Stop {
        Stop(self.page(
            StatusCode::BAD_REQUEST,
            pages::link_expired(&self.site()),
            &[self.cookie().clear()],
        ))
    }

    /// An internal failure: logged with a reference the page shows; no internal text on the page.
    fn internal(&self, what: &str, source: &dyn std::error::Error) -> Stop {
        let reference = uuid::Uuid::new_v4();
        error!(%reference, error = %source, source_chain = ?source.source().map(ToString::to_string), "{what}");
        Stop(self.page(
            StatusCode::INTERNAL_SERVER_ERROR,
            pages::notice(
                &self.site(),
                "Something went wrong on our side",
                &format!("Nothing you did caused this, and it was not completed. Please try again in a minute. Reference: {reference}"),
                None,
            ),
            &[],
        ))
    }

    /// Creates a flow record and returns the binding cookie to set.
    async fn new_flow(&self, mut session: AuthSession) -> Flowing<String> {
        let binding = random_token();
        session.binding_hash = sha256_hex(&binding);
        self.ports
            .sessions
            .create(&session)
            .await
            .map_err(|error| self.internal("storing an auth session failed", &error))?;
        Ok(self.cookie().set(&binding))
    }

    /// Consumes the state once and checks the browser binding. Anything off: the same
    /// "expired or already used" page, nothing recorded.
    async fn take_flow(
        &self,
        query: &Query,
        headers: &http::HeaderMap,
        flows: &[Flow],
    ) -> Flowing<AuthSession> {
        let flow = flows[0];
        let Some(state) = query.get("state") else {
            warn!(flow = flow.as_str(), "callback without state");
            return Err(self.expired());
        };
        // Our states are 43 base64url characters; web sessions share the table under
        // `web#...` keys, which no state may name.
        if state.contains('#') {
            warn!(flow = flow.as_str(), "callback with a malformed state");
            return Err(self.expired());
        }
        let now = self.ports.clock.now();
        let session = self
            .ports
            .sessions
            .consume(state, now)
            .await
            .map_err(|error| self.internal("consuming an auth session failed", &error))?;
        let Some(session) = session else {
            warn!(flow = flow.as_str(), "unknown, used or expired state");
            return Err(self.expired());
        };
        if !flows.contains(&session.flow) {
            warn!(
                flow = flow.as_str(),
                issued_for = session.flow.as_str(),
                "state used at the wrong callback"
            );
            return Err(self.expired());
        }
        match self.cookie().read(headers) {
            Some(value) if binding_matches(&value, &session.binding_hash) => Ok(session),
            Some(_) => {
                warn!(
                    flow = flow.as_str(),
                    "binding cookie does not match the state"
                );
                Err(self.expired())
            }
            None => {
                warn!(flow = flow.as_str(), "binding cookie missing");
                Err(self.expired())
            }
        }
    }

    // ---------------------------------------------------------------- admin consent

    async fn start_admin_consent(&self, query: &Query) -> Flowing<Response<Body>> {
        let bundle = query
            .get("bundle")
            .ok_or(ParamError::Missing("bundle"))
            .and_then(|value| {
                FeatureBundle::parse(value).map_err(|_| ParamError::Invalid("bundle"))
            })
            .map_err(|error| Stop(self.bad_request(&error)))?;
        let tenant = match query.get("tenant") {
            Some(value) => Some(
                TenantHint::parse(value)
                    .ok_or_else(|| Stop(self.bad_request(&ParamError::Invalid("tenant"))))?,
            ),
            None => None,
        };
        let authority = tenant
            .as_ref()
            .map_or_else(|| "organizations".to_owned(), TenantHint::as_string);
        let now = self.ports.clock.now();
        let state = random_token();
        let scope = admin_consent_scope(bundle);
        let cookie = self
            .new_flow(AuthSession {
                state: state.clone(),
                flow: Flow::AdminConsent,
                bundle,
                requested_tenant: tenant.as_ref().map(TenantHint::as_string),
                authority: authority.clone(),
                scope: scope.clone(),
                pkce_verifier: None,
                nonce: None,
                binding_hash: String::new(),
                created_at: now,
                expires_at: now.unix_timestamp() + FLOW_TTL_SECONDS,
            })
            .await?;
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", self.config.client_id())
            .append_pair("scope", &scope)
            .append_pair("redirect_uri", &self.config.admin_consent_redirect_uri())
            .append_pair("state", &state)
            .finish();
        let location = format!(
            "{}?{query}",
            self.config
                .core
                .microsoft
                .login_base_url
                .join(&format!("{authority}/v2.0/adminconsent"))
        );
        info!(bundle = bundle.as_str(), authority, "admin consent started");
        Ok(redirect(&location, &[cookie]))
    }

    async fn admin_consent_callback(
        &self,
        query: &Query,
        headers: &http::HeaderMap,
    ) -> Flowing<Response<Body>> {
        let session = self
            .take_flow(query, headers, &[Flow::AdminConsent])
            .await?;
        let clear = self.cookie().clear();
        if let Some(error) = query.get("error") {
            let error = MicrosoftError::from_callback(
                error,
                query.get("error_description"),
                query.get("error_subcode"),
            );
            info!(error = %error, bundle = session.bundle.as_str(), "admin consent refused by Microsoft");
            let (status, html) = pages::troubleshooting(
                &self.site(),
                &error,
                session.bundle,
                session.requested_tenant.as_deref(),
            );
            return Ok(self.page(status, html, &[clear]));
        }
        let refuse = |message: &str| {
            Stop(self.page(
                StatusCode::BAD_REQUEST,
                pages::notice(
                    &self.site(),
                    "Consent could not be recorded",
                    message,
                    Some((
                        &self.site().admin_consent_link(
                            session.bundle,
                            session.requested_tenant.as_deref(),
                        ),
                        "Start again",
                    )),
                ),
                std::slice::from_ref(&clear),
            ))
        };
        if !query
            .get("admin_consent")
            .is_some_and(|value| value.eq_ignore_ascii_case("true"))
        {
            warn!("admin consent callback without admin_consent=True");
            return Err(refuse(
                "Microsoft's response did not say that consent was granted. Nothing was recorded.",
            ));
        }
        // The redirect's `tenant` and `scope` are unauthenticated (v2-admin-consent: never use
        // `tenant` to authorize; https://learn.microsoft.com/entra/identity-platform/v2-admin-consent,
        // read 2026-12-05). Nothing is recorded here: the administrator signs in (authorization
        // code + PKCE + nonce) and the grant is recorded for the validated id_token's `tid`, if its
        // `wids` holds a role that can grant tenant-wide consent. `tenant` only picks the authority
        // of that sign-in when the link named none.
        let link_tenant = session
            .requested_tenant
            .as_deref()
            .and_then(TenantHint::parse);
        let reported =
            query
                .get("tenant")
                .and_then(TenantHint::parse)
                .and_then(|hint| match hint {
                    TenantHint::Id(id) => Some(id),
                    TenantHint::Domain(_) => None,
                });
        let authority = match (&link_tenant, &reported) {
            (Some(hint), _) => hint.as_string(),
            (None, Some(id)) => id.to_string(),
            (None, None) => "organizations".to_owned(),
        };
        info!(
            bundle = session.bundle.as_str(),
            authority, "admin consent reported; verifying the administrator"
        );
        self.start_code_flow(
            Flow::AdminVerify,
            session.bundle,
            session.requested_tenant.clone(),
            &authority,
            &verification_scope(session.bundle),
            &[],
        )
        .await
    }

    /// The authorization-code leg every sign-in shares (a user's, or an administrator's
    /// verification): Microsoft's error redirect explained, the code redeemed with the flow's
    /// PKCE verifier, the id_token validated against the flow's nonce. Any failure ends in a
    /// page worded by `leg`; nothing is stored.
    async fn redeem(
        &self,
        session: &AuthSession,
        query: &Query,
        leg: &Leg<'_>,
    ) -> Flowing<(token::TokenSet, IdTokenClaims)> {
        let clear = self.cookie().clear();
        let trouble = |error: &MicrosoftError| {
            let (status, html) = pages::troubleshooting(
                &self.site(),
                error,
                session.bundle,
                session.requested_tenant.as_deref(),
            );
            Stop(self.page(status, html, std::slice::from_ref(&clear)))
        };
        let notice = |status: StatusCode, title: &str, message: &str| {
            Stop(self.page(
                status,
                pages::notice(
                    &self.site(),
                    title,
                    message,
                    Some((&leg.again.0, leg.again.1)),
                ),
                std::slice::from_ref(&clear),
            ))
        };
        if let Some(error) = query.get("error") {
            let error = MicrosoftError::from_callback(
                error,
                query.get("error_description"),
                query.get("error_subcode"),
            );
            info!(error = %error, authority = session.authority, leg = leg.what, "refused by Microsoft");
            return Err(trouble(&error));
        }
        let Some(code) = query.get("code") else {
            return Err(Stop(self.bad_request(&ParamError::Missing("code"))));
        };
        let (Some(verifier), Some(nonce)) = (session.pkce_verifier.clone(), session.nonce.clone())
        else {
            warn!(leg = leg.what, "session without verifier or nonce");
            return Err(self.expired());
        };
        let tokens = match self
            .ports
            .exchange
            .exchange(
                &session.authority,
                AuthCode::new(code),
                verifier,
                &self.config.sign_in_redirect_uri(),
            )
            .await
        {
            Ok(tokens) => tokens,
            Err(ExchangeError::Microsoft(error)) => {
                info!(error = %error, authority = session.authority, leg = leg.what, "code redemption refused by Microsoft");
                return Err(trouble(error.as_ref()));
            }
            Err(error) => {
                error!(error = %error, leg = leg.what, "code redemption failed");
                return Err(notice(
                    StatusCode::BAD_GATEWAY,
                    "Microsoft could not be reached",
                    leg.unreachable,
                ));
            }
        };
        let unverified = || notice(leg.unverified_status, leg.title, leg.unverified);
        let Some(id_token) = tokens.id_token.as_ref() else {
            warn!(leg = leg.what, "token response without id_token");
            return Err(unverified());
        };
        match self
            .ports
            .id_tokens
            .validate(id_token.secret(), &nonce)
            .await
        {
            Ok(claims) => Ok((tokens, claims)),
            Err(error) => {
                warn!(error = %error, leg = leg.what, "id_token rejected");
                Err(unverified())
            }
        }
    }

    /// The administrator's verification sign-in came back: records the consent on proof only.
    async fn admin_verification(
        &self,
        session: AuthSession,
        query: &Query,
    ) -> Flowing<Response<Body>> {
        let clear = self.cookie().clear();
        let link_tenant = session
            .requested_tenant
            .as_deref()
            .and_then(TenantHint::parse);
        let refuse = |title: &str, message: &str| {
            Stop(self.page(
                StatusCode::FORBIDDEN,
                pages::notice(
                    &self.site(),
                    title,
                    message,
                    Some((
                        &self.site().admin_consent_link(
                            session.bundle,
                            session.requested_tenant.as_deref(),
                        ),
                        "Start again",
                    )),
                ),
                std::slice::from_ref(&clear),
            ))
        };
        let (tokens, claims) = self
            .redeem(
                &session,
                query,
                &Leg {
                    what: "administrator verification",
                    title: "Consent could not be verified",
                    unverified: "Microsoft's answer did not prove who signed in, so the consent was not recorded. Nothing was changed. Please start again.",
                    unverified_status: StatusCode::FORBIDDEN,
                    unreachable: "The consent could not be verified because Microsoft's sign-in service did not answer as expected. Nothing was recorded. Please try again in a minute.",
                    again: (
                        self.site().admin_consent_link(
                            session.bundle,
                            session.requested_tenant.as_deref(),
                        ),
                        "Start again",
                    ),
                },
            )
            .await?;
        let tenant_id = claims.tenant_id.clone();
        let other_tenant = match &link_tenant {
            Some(TenantHint::Id(id)) => *id != tenant_id,
            _ => {
                looks_like_guid_authority(&session.authority)
                    && TenantId::parse(&session.authority).is_ok_and(|a| a != tenant_id)
            }
        };
        if other_tenant {
            warn!(authority = session.authority, tid = %tenant_id, "verification sign-in from another tenant than the link's");
            return Err(refuse(
                "Consent could not be recorded",
                "You signed in to a different organisation than the one this consent link was for. Nothing was recorded. Sign in with an administrator account of the organisation named in the link, or ask for a link for your own organisation.",
            ));
        }
        let who = claims
            .preferred_username
            .clone()
            .unwrap_or_else(|| format!("user {}", claims.user_id));
        let Some(role) = claims.consent_admin_role() else {
            if claims.wids.is_none() {
                // Entra only emits `wids` when the app registration's groupMembershipClaims
                // includes directory roles (see README, deploy).
                warn!(tid = %tenant_id, "verification id_token has no wids claim: check the app registration's groupMembershipClaims");
            } else {
                info!(tid = %tenant_id, user_id = %claims.user_id, "verification sign-in by a user who cannot grant tenant-wide consent");
            }
            let roles = CONSENT_ADMIN_ROLES
                .iter()
                .map(|(_, name)| *name)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(refuse(
                "An administrator must grant this consent",
                &format!(
                    "The account you signed in with ({who}) does not hold a directory role that can grant consent for your whole organisation, so nothing was recorded. Ask someone with one of these roles to open the consent link: {roles}."
                ),
            ));
        };

        // What was granted: the bundle's scopes the token response confirms (an absent `scope`
        // means what was asked). OIDC scopes come with any sign-in; `offline_access` is never
        // echoed (https://learn.microsoft.com/answers/questions/806413, read 2026-12-05).
        let proof = tokens
            .scope
            .as_deref()
            .map(ScopeSet::parse)
            .unwrap_or_default();
        let confirmed: Vec<Scope> = session
            .bundle
            .scopes()
            .iter()
            .copied()
            .filter(|scope| scope.is_oidc() || proof.is_empty() || proof.contains(*scope))
            .collect();
        let granted = ScopeSet::from(confirmed.as_slice());
        let bundle_graph = session.bundle.scopes().iter().any(|s| !s.is_oidc());
        if bundle_graph && granted.known().all(|s| s.is_oidc()) {
            warn!(tid = %tenant_id, "verification token confirms none of the bundle's permissions");
            return Err(refuse(
                "Consent could not be recorded",
                "Microsoft did not confirm any of the permissions of this consent link, so nothing was recorded. Please open the consent link again and accept.",
            ));
        }

        // The tenant's verified domains, for routing sign-ins by login_hint/domain_hint.
        let domains = match self
            .ports
            .organization
            .verified_domains(&tokens.access_token, &tenant_id)
            .await
        {
            Ok(domains) => Some(domains),
            Err(error) => {
                warn!(error = %error, tid = %tenant_id, "reading the tenant's verified domains failed");
                None
            }
        };
        if let Some(TenantHint::Domain(domain)) = &link_tenant
            && !domains.as_ref().is_some_and(|d| d.contains(domain))
        {
            warn!(tid = %tenant_id, "the link's domain is not a verified domain of the signed-in tenant");
            return Err(refuse(
                "Consent could not be recorded",
                "The domain named in the consent link could not be confirmed as a verified domain of the organisation you signed in to, so nothing was recorded. Sign in with an administrator account of that organisation, or use a link that names your organisation's tenant id.",
            ));
        }

        let now = self.ports.clock.now();
        let mut tenant = self
            .ports
            .tenants
            .get_tenant(&tenant_id)
            .await
            .map_err(|error| self.internal("reading a tenant failed", &error))?
            .unwrap_or_else(|| Tenant::new(tenant_id.clone(), ConsentMode::Preauthorized, now));
        tenant.record_admin_consent(
            session.bundle,
            &granted,
            Some(format!("{who} (oid {}, {role})", claims.user_id)),
            now,
        );
        tenant.confirm(now);
        if let Some(domains) = &domains {
            tenant.verified_domains = domains.iter().cloned().collect();
        }
        self.ports
            .tenants
            .put_tenant(&tenant)
            .await
            .map_err(|error| self.internal("storing a tenant failed", &error))?;
        for domain in domains.iter().flatten() {
            if let Err(error) = self
                .ports
                .domains
                .record_domain(domain, &tenant_id, now)
                .await
            {
                // Only the login page's tenant guess depends on it: the consent itself stands.
                warn!(error = %error, "recording a verified domain failed");
            }
        }
        info!(tenant_id = %tenant_id, bundle = session.bundle.as_str(), role, domains = domains.as_ref().map_or(0, Vec::len), "admin consent verified and recorded");
        Ok(self.page(
            StatusCode::OK,
            pages::consent_granted(&self.site(), &tenant_id, session.bundle, &granted, &who),
            &[clear],
        ))
    }

    // ---------------------------------------------------------------- sign-in

    /// The tenant a sign-in is for, if we know it.
    async fn known_tenant(&self, hint: Option<&TenantHint>) -> Flowing<Option<Tenant>> {
        let tenant_id = match hint {
            None => return Ok(None),
            Some(TenantHint::Id(id)) => Some(id.clone()),
            Some(TenantHint::Domain(domain)) => self
                .ports
                .domains
                .tenant_for_domain(domain)
                .await
                .map_err(|error| self.internal("looking up a domain failed", &error))?,
        };
        match tenant_id {
            Some(id) => self
                .ports
                .tenants
                .get_tenant(&id)
                .await
                .map_err(|error| self.internal("reading a tenant failed", &error)),
            None => Ok(None),
        }
    }

    async fn start_sign_in(&self, query: &Query) -> Flowing<Response<Body>> {
        let bad = |error: ParamError| Stop(self.bad_request(&error));
        let login_hint = login_hint(query).map_err(bad)?;
        let domain_hint = match query.get("domain_hint") {
            Some(value) => Some(
                TenantHint::parse(value).ok_or_else(|| bad(ParamError::Invalid("domain_hint")))?,
            ),
            None => None,
        };
        let hint = domain_hint.clone().or_else(|| {
            login_hint
                .as_ref()
                .map(|(_, domain)| TenantHint::Domain(domain.clone()))
        });
        let tenant = self.known_tenant(hint.as_ref()).await?;

        let (authority, scope, bundle) = match &tenant {
            Some(tenant) if tenant.consent_mode == ConsentMode::Preauthorized => (
                tenant.tenant_id.to_string(),
                PREAUTHORIZED_SCOPE.to_owned(),
                representative_bundle(&tenant.granted_bundles),
            ),
            Some(tenant) => {
                let features = if tenant.granted_bundles.is_empty() {
                    self.config.default_features.clone()
                } else {
                    tenant
                        .granted_bundles
                        .iter()
                        .flat_map(|bundle| bundle.features())
                        .collect()
                };
                // A user consents only to what the tenant's administrator left on (a
                // pre-authorized tenant's `.default` is the administrator's own grant; the
                // switches stop its use there, fan-out and workers check them).
                let features = switched_on(features, &tenant.switches);
                (
                    tenant.tenant_id.to_string(),
                    explicit_scope(&features),
                    bundle_for(&features),
                )
            }
            None => (
                "organizations".to_owned(),
                explicit_scope(&self.config.default_features),
                bundle_for(&self.config.default_features),
            ),
        };

        let requested_tenant = tenant
            .as_ref()
            .map(|tenant| tenant.tenant_id.to_string())
            .or_else(|| hint.as_ref().map(TenantHint::as_string));
        let mut extra = match &login_hint {
            Some((login_hint, _)) => vec![("login_hint", login_hint.as_str())],
            None => vec![("prompt", "select_account")],
        };
        if let Some(TenantHint::Domain(domain)) = &domain_hint {
            extra.push(("domain_hint", domain));
        }
        info!(
            authority,
            known_tenant = tenant.is_some(),
            preauthorized = scope == PREAUTHORIZED_SCOPE,
            "sign-in started"
        );
        self.start_code_flow(
            Flow::SignIn,
            bundle,
            requested_tenant,
            &authority,
            &scope,
            &extra,
        )
        .await
    }

    /// Starts an authorization-code sign-in (PKCE S256, a nonce, our sign-in callback as
    /// redirect URI): records the single-use flow and redirects the browser to
    /// `{LOGIN_BASE_URL}/{authority}/oauth2/v2.0/authorize` with `extra` parameters (hints,
    /// prompt) after the standard ones.
    async fn start_code_flow(
        &self,
        flow: Flow,
        bundle: FeatureBundle,
        requested_tenant: Option<String>,
        authority: &str,
        scope: &str,
        extra: &[(&str, &str)],
    ) -> Flowing<Response<Body>> {
        let now = self.ports.clock.now();
        let state = random_token();
        let nonce = random_token();
        let (verifier, challenge) = pkce_pair();
        let cookie = self
            .new_flow(AuthSession {
                state: state.clone(),
                flow,
                bundle,
                requested_tenant,
                authority: authority.to_owned(),
                scope: scope.to_owned(),
                pkce_verifier: Some(verifier),
                nonce: Some(nonce.clone()),
                binding_hash: String::new(),
                created_at: now,
                expires_at: now.unix_timestamp() + FLOW_TTL_SECONDS,
            })
            .await?;
        let mut params = url::form_urlencoded::Serializer::new(String::new());
        params
            .append_pair("client_id", self.config.client_id())
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", &self.config.sign_in_redirect_uri())
            .append_pair("response_mode", "query")
            .append_pair("scope", scope)
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        for (name, value) in extra {
            params.append_pair(name, value);
        }
        let location = format!(
            "{}?{}",
            self.config
                .core
                .microsoft
                .login_base_url
                .join(&format!("{authority}/oauth2/v2.0/authorize")),
            params.finish()
        );
        Ok(redirect(&location, &[cookie]))
    }

    async fn sign_in_callback(
        &self,
        query: &Query,
        headers: &http::HeaderMap,
    ) -> Flowing<Response<Body>> {
        let session = self
            .take_flow(
                query,
                headers,
                &[
                    Flow::SignIn,
                    Flow::AdminVerify,
                    Flow::AdminPortal,
                    Flow::UserPortal,
                ],
            )
            .await?;
        if session.flow == Flow::AdminVerify {
            return self.admin_verification(session, query).await;
        }
        if matches!(session.flow, Flow::AdminPortal | Flow::UserPortal) {
            return self.portal_callback(session, query).await;
        }
        let clear = self.cookie().clear();
        let (tokens, claims) = self
            .redeem(
                &session,
                query,
                &Leg {
                    what: "sign-in",
                    title: "This sign-in could not be verified",
                    unverified: "Microsoft's answer did not prove who signed in, so it was not accepted. Nothing was stored. Please sign in again.",
                    unverified_status: StatusCode::BAD_REQUEST,
                    unreachable: "The sign-in could not be completed because Microsoft's sign-in service did not answer as expected. Nothing was stored. Please try again in a minute.",
                    again: (
                        self.site()
                            .sign_in_link(session.requested_tenant.as_deref()),
                        "Sign in again",
                    ),
                },
            )
            .await?;
        if let Ok(authority_tenant) = TenantId::parse(&session.authority)
            && looks_like_guid_authority(&session.authority)
            && authority_tenant != claims.tenant_id
        {
            warn!(authority = session.authority, tid = %claims.tenant_id, "token from another tenant than the authority");
            return Err(Stop(self.page(
                StatusCode::BAD_REQUEST,
                pages::notice(
                    &self.site(),
                    "This sign-in could not be verified",
                    "Microsoft's answer did not prove who signed in, so it was not accepted. Nothing was stored. Please sign in again.",
                    Some((
                        &self.site().sign_in_link(session.requested_tenant.as_deref()),
                        "Sign in again",
                    )),
                ),
                &[clear],
            )));
        }
        self.complete_sign_in(&session, &claims, tokens).await?;
        Ok(redirect(self.config.web.app_base_url.as_str(), &[clear]))
    }

    /// Stores what a validated sign-in gives: token, connection, tenant, domain, first jobs.
    async fn complete_sign_in(
        &self,
        session: &AuthSession,
        claims: &IdTokenClaims,
        tokens: token::TokenSet,
    ) -> Flowing<()> {
        let now = self.ports.clock.now();
        let key = UserKey::new(claims.tenant_id.clone(), claims.user_id.clone());
        let upn = claims
            .preferred_username
            .clone()
            .or_else(|| claims.email.clone())
            .unwrap_or_default();
        let stored_tenant = self
            .ports
            .tenants
            .get_tenant(&key.tenant_id)
            .await
            .map_err(|error| self.internal("reading a tenant failed", &error))?;
        // What was asked: `.default` (a pre-authorized tenant's sign-in) stands for what the
        // tenant's administrator granted.
        let mut requested = ScopeSet::parse(&session.scope);
        if requested.contains_other(".default")
            && let Some(tenant) = &stored_tenant
        {
            requested = requested.union(&tenant.granted_scopes);
        }
        let granted = ScopeSet::granted_by_token_response(
            tokens.scope.as_deref(),
            &requested,
            tokens.refresh_token.is_some(),
        );

        // A disconnection a running sync held up is finished before this sign-in stores
        // anything: its remaining steps delete the token secret and everything imported,
        // which must neither outlive the disconnection nor take the new sign-in's token.
        let read_connection = || async {
            self.ports
                .connections
                .get_connection(&key)
                .await
                .map_err(|error| self.internal("reading a connection failed", &error))
        };
        let mut existing = read_connection().await?;
        if existing
            .as_ref()
            .is_some_and(connector_core::offboard::disconnect_pending)
        {
            if self.finish_disconnection(&key, now).await?.is_err() {
                return Err(Stop(self.page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    pages::notice(
                        &self.site(),
                        "Your disconnection is still finishing",
                        "You disconnected this account while a sync was running, and what you asked us to delete is still being deleted. Nothing of this sign-in was kept. Please sign in again in a few minutes.",
                        None,
                    ),
                    &[],
                )));
            }
            // Finishing rewrote the tombstone.
            existing = read_connection().await?;
        }

        if let Some(refresh_token) = tokens.refresh_token {
            let record = TokenRecord {
                refresh_token,
                scopes: granted.clone(),
                updated_at: now,
            };
            self.ports
                .vault
                .put_token(&key, &record)
                .await
                .map_err(|error| self.internal("storing a refresh token failed", &error))?;
        } else {
            warn!(tenant_id = %key.tenant_id, user_id = %key.user_id, "no refresh token: offline_access not granted");
        }

        let connection = match existing {
            Some(mut connection) => {
                connection.upn.clone_from(&upn);
                connection.granted_scopes = granted.clone();
                if connection.status != ConnectionStatus::Active {
                    connection.apply(&StatusChange::new(
                        ConnectionStatus::Active,
                        Some("signed_in"),
                        now,
                    ));
                }
                connection.mail = claims.email.clone().or(connection.mail);
                connection.display_name = claims.name.clone().or(connection.display_name);
                connection.updated_at = now;
                connection
            }
            None => {
                let mut connection = Connection::new_active(
                    key.tenant_id.clone(),
                    key.user_id.clone(),
                    upn.clone(),
                    granted.clone(),
                    now,
                );
                connection.mail.clone_from(&claims.email);
                connection.display_name.clone_from(&claims.name);
                connection
            }
        };
        self.ports
            .connections
            .upsert_connection(&connection)
            .await
            .map_err(|error| self.internal("storing a connection failed", &error))?;

        let mut tenant = stored_tenant.unwrap_or_else(|| {
            let mut tenant = Tenant::new(key.tenant_id.clone(), ConsentMode::UserConsent, now);
            tenant.granted_bundles.insert(session.bundle);
            tenant
        });
        if tenant.consent_state != ConsentState::Confirmed {
            tenant.confirm(now);
            if tenant.consented_by.is_none() {
                tenant.consented_by = Some(format!("{upn} (oid {})", key.user_id));
            }
        }
        // The tenant's domains come from its verified domains at a proven admin consent only,
        // never from a member's UPN.
        tenant.updated_at = now;
        self.ports
            .tenants
            .put_tenant(&tenant)
            .await
            .map_err(|error| self.internal("storing a tenant failed", &error))?;

        let mut queued = Vec::new();
        for kind in [SyncKind::Mail, SyncKind::Calendar] {
            // The fan-out's own rule, the administrator's switches included.
            if !connector_core::sync::wants_job(&connection, Some(&tenant), kind, now) {
                continue;
            }
            let job = SyncJob::new(
                kind,
                key.tenant_id.clone(),
                key.user_id.clone(),
                SyncReason::Initial,
            );
            match enqueue_sync_jobs(
                self.ports.queue.as_ref(),
                self.config.core.queues.sync_queue(kind),
                &[job],
            )
            .await
            {
                Ok(_) => queued.push(kind.as_str()),
                // The schedule's fan-out picks the connection up anyway; the user is not held back.
                Err(error) => {
                    error!(error = %error, kind = kind.as_str(), "queuing the initial sync failed")
                }
            }
        }
        info!(
            tenant_id = %key.tenant_id,
            user_id = %key.user_id,
            scopes = granted.names().join(" "),
            queued = queued.join(","),
            "sign-in completed"
        );
        Ok(())
    }
}

/// `organizations` and domains are not tenant ids; only a GUID authority pins the tenant.
fn looks_like_guid_authority(authority: &str) -> bool {
    matches!(TenantHint::parse(authority), Some(TenantHint::Id(_)))
}

/// What an admin consent link asks: the bundle, plus `User.Read`, the least privileged delegated
/// permission of Graph's `GET /organization` (organization-get, read 2026-12-05), so that the
/// verification sign-in that follows reads the tenant's verified domains without a prompt.
fn admin_consent_scope(bundle: FeatureBundle) -> String {
    format!("{} {USER_READ}", bundle.request_scope_string())
}

/// What the administrator's verification sign-in asks: the bundle's scopes (so the token
/// response says which were granted) without `offline_access` (nothing of it is stored), plus
/// `User.Read`.
fn verification_scope(bundle: FeatureBundle) -> String {
    let mut scopes: Vec<String> = vec!["openid".into(), "profile".into()];
    for scope in bundle.scopes() {
        let qualified = scope.qualified();
        if *scope != Scope::OfflineAccess && !scopes.contains(&qualified) {
            scopes.push(qualified);
        }
    }
    scopes.push(USER_READ.to_owned());
    scopes.join(" ")
}

const USER_READ: &str = "https://graph.microsoft.com/User.Read";

/// The request form of the scopes for sign-in plus `features`: OIDC bare, Graph qualified.
pub fn explicit_scope(features: &BTreeSet<Feature>) -> String {
    let mut scopes = FeatureBundle::Auth.scope_set();
    for feature in features {
        let bundle = match feature {
            Feature::SignIn => FeatureBundle::Auth,
            Feature::Mail => FeatureBundle::Mail,
            Feature::Calendar => FeatureBundle::Calendar,
            Feature::Teams => FeatureBundle::Teams,
        };
        scopes = scopes.union(&bundle.scope_set());
    }
    Scope::ALL
        .into_iter()
        .filter(|scope| scopes.contains(*scope))
        .map(Scope::qualified)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `features` less those the tenant's administrator switched off. Calendar scopes stay
/// while Explicit Consent Mode is on: it writes the consent link into the host's events.
pub fn switched_on(features: BTreeSet<Feature>, switches: &TenantSwitches) -> BTreeSet<Feature> {
    features
        .into_iter()
        .filter(|feature| match feature {
            Feature::SignIn => true,
            Feature::Mail => switches.mail_sync,
            Feature::Calendar => switches.calendar_sync || switches.explicit_consent,
            Feature::Teams => switches.teams_sharing,
        })
        .collect()
}

/// The bundle whose admin consent link fits a set of features.
fn bundle_for(features: &BTreeSet<Feature>) -> FeatureBundle {
    let background: Vec<Feature> = features
        .iter()
        .copied()
        .filter(|f| *f != Feature::SignIn)
        .collect();
    match background.as_slice() {
        [] => FeatureBundle::Auth,
        [Feature::Mail] => FeatureBundle::Mail,
        [Feature::Calendar] => FeatureBundle::Calendar,
        [Feature::Teams] => FeatureBundle::Teams,
        _ => FeatureBundle::All,
    }
}

fn representative_bundle(bundles: &BTreeSet<FeatureBundle>) -> FeatureBundle {
    match bundles.iter().collect::<Vec<_>>().as_slice() {
        [single] => **single,
        _ => FeatureBundle::All,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_scopes_follow_features() {
        assert_eq!(
            explicit_scope(&BTreeSet::new()),
            "openid email profile offline_access"
        );
        assert_eq!(
            explicit_scope(&BTreeSet::from([Feature::Calendar])),
            "openid email profile offline_access https://graph.microsoft.com/Calendars.ReadWrite https://graph.microsoft.com/OnlineMeetings.ReadWrite"
        );
        assert_eq!(
            explicit_scope(&BTreeSet::from([Feature::Mail, Feature::Calendar])),
            "openid email profile offline_access https://graph.microsoft.com/Calendars.ReadWrite https://graph.microsoft.com/OnlineMeetings.ReadWrite https://graph.microsoft.com/Mail.Read"
        );
        assert_eq!(
            bundle_for(&BTreeSet::from([Feature::Mail])),
            FeatureBundle::Mail
        );
        assert_eq!(
            bundle_for(&BTreeSet::from([Feature::Mail, Feature::Teams])),
            FeatureBundle::All
        );
        assert_eq!(bundle_for(&BTreeSet::new()), FeatureBundle::Auth);
    }

    #[test]
    fn sign_in_asks_only_what_the_administrator_left_on() {
        let all = BTreeSet::from([
            Feature::SignIn,
            Feature::Mail,
            Feature::Calendar,
            Feature::Teams,
        ]);
        assert_eq!(switched_on(all.clone(), &TenantSwitches::default()), all);
        let switches = TenantSwitches {
            mail_sync: false,
            teams_sharing: false,
            ..TenantSwitches::default()
        };
        assert_eq!(
            explicit_scope(&switched_on(all.clone(), &switches)),
            "openid email profile offline_access https://graph.microsoft.com/Calendars.ReadWrite https://graph.microsoft.com/OnlineMeetings.ReadWrite"
        );
        let consent_mode_only = TenantSwitches {
            calendar_sync: false,
            explicit_consent: true,
            ..switches
        };
        assert!(switched_on(all.clone(), &consent_mode_only).contains(&Feature::Calendar));
        let nothing = TenantSwitches {
            explicit_consent: false,
            ..consent_mode_only
        };
        assert_eq!(
            switched_on(all, &nothing),
            BTreeSet::from([Feature::SignIn])
        );
    }
}
