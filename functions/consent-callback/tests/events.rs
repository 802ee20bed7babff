//! The handler in-process, fed the sample API Gateway HTTP API events of
//! `events/consent-callback/`, on in-memory ports (tokens from a mini IdP).

mod support;

use connector_core::domain::{
    ConnectionStatus, ConsentMode, ConsentState, FeatureBundle, Scope, TenantId, UserId, UserKey,
};
use connector_core::ports::{ConnectionStore as _, TenantStore as _, TokenVault as _};
use connector_core::secret::PkceVerifier;
use consent_callback::Clock as _;
use consent_callback::html::CONTENT_SECURITY_POLICY;
use consent_callback::security::sha256_hex;
use consent_callback::sessions::{AuthSession, AuthSessionStore as _, Flow};
use support::{APP_URL, CLIENT_ID, Memory, body, event, header};

const FIXTURE_TENANT: &str = "3b7c1e2a-9d4f-4e6a-8b1c-2d3e4f5a6b7c";
const FIXTURE_USER: &str = "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d";

async fn seed_session(memory: &Memory, state: &str, flow: Flow, authority: &str) {
    let now = memory.clock.now();
    memory
        .sessions
        .create(&AuthSession {
            state: state.to_owned(),
            flow,
            bundle: FeatureBundle::All,
            requested_tenant: None,
            authority: authority.to_owned(),
            scope: FeatureBundle::All.request_scope_string(),
            pkce_verifier: (flow == Flow::SignIn)
                .then(|| PkceVerifier::new("fixture-verifier-0123456789-abcdefghijklmno")),
            nonce: (flow == Flow::SignIn).then(|| "fixture-nonce".to_owned()),
            binding_hash: sha256_hex("fixture-binding-value"),
            created_at: now,
            expires_at: now.unix_timestamp() + 600,
        })
        .await
        .expect("session");
}

fn assert_secure_headers(response: &lambda_http::Response<lambda_http::Body>) {
    assert_eq!(
        header(response, "content-security-policy"),
        Some(CONTENT_SECURITY_POLICY)
    );
    assert_eq!(header(response, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(response, "referrer-policy"), Some("no-referrer"));
    assert_eq!(header(response, "cache-control"), Some("no-store"));
}

#[tokio::test]
async fn healthz_consent_page_and_unknown_routes() {
    let memory = Memory::start().await;
    let health = memory.app.handle(event("healthz")).await;
    assert_eq!(health.status(), 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body(&health)).expect("json")["status"],
        "ok"
    );

    let page = memory.app.handle(event("consent")).await;
    assert_eq!(page.status(), 200);
    assert_secure_headers(&page);
    assert_eq!(
        header(&page, "content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = body(&page);
    assert!(html.contains("All features (recommended)"));
    assert!(html.contains(CLIENT_ID));

    let missing = memory.app.handle(event("not-found")).await;
    assert_eq!(missing.status(), 404);
    assert_secure_headers(&missing);

    let post = memory.app.handle(event("method-not-allowed")).await;
    assert_eq!(post.status(), 405);
    assert_eq!(header(&post, "allow"), Some("GET"));
    assert!(memory.sessions.is_empty(), "a POST starts nothing");
}

#[tokio::test]
async fn consent_admin_redirects_to_the_tenants_adminconsent_endpoint() {
    let memory = Memory::start().await;
    let response = memory.app.handle(event("consent-admin")).await;
    assert_eq!(response.status(), 302);
    assert_secure_headers(&response);
    let started = support::Started::from_response(&response);
    assert_eq!(
        started.location.as_str().split('?').next(),
        Some(format!("{}/contoso.com/v2.0/adminconsent", memory.idp.base_url).as_str())
    );
    assert_eq!(started.params["client_id"], CLIENT_ID);
    assert_eq!(
        started.params["scope"],
        format!(
            "{} https://graph.microsoft.com/User.Read",
            FeatureBundle::All.request_scope_string()
        )
    );
    assert_eq!(
        started.params["redirect_uri"],
        "https://connector.example.com/consent/callback"
    );
    assert_eq!(started.state().len(), 43);
    assert!(started.set_cookie.starts_with("__Host-o365c-flow="));
    assert!(
        started.set_cookie.contains("HttpOnly")
            && started.set_cookie.contains("Secure")
            && started.set_cookie.contains("SameSite=Lax")
    );
    assert_eq!(memory.sessions.len(), 1);
}

#[tokio::test]
async fn consent_callback_continues_into_the_administrators_sign_in() {
    let memory = Memory::start().await;
    seed_session(
        &memory,
        "fixture-admin-consent-state-0001",
        Flow::AdminConsent,
        "organizations",
    )
    .await;
    let response = memory.app.handle(event("consent-callback")).await;
    assert_eq!(response.status(), 302, "{}", body(&response));
    assert_secure_headers(&response);
    // Nothing is recorded on the redirect's word; its tenant only names the sign-in's authority.
    assert!(
        memory
            .tenants
            .get_tenant(&TenantId::parse(FIXTURE_TENANT).expect("guid"))
            .await
            .expect("read")
            .is_none()
    );
    let started = support::Started::from_response(&response);
    assert_eq!(
        started.location.as_str().split('?').next(),
        Some(
            format!(
                "{}/{FIXTURE_TENANT}/oauth2/v2.0/authorize",
                memory.idp.base_url
            )
            .as_str()
        )
    );
    assert_eq!(started.params["response_type"], "code");
    assert_eq!(
        started.params["redirect_uri"],
        "https://connector.example.com/auth/callback"
    );
    assert_eq!(started.params["code_challenge_method"], "S256");
    assert!(!started.nonce().is_empty());
    assert!(started.set_cookie.starts_with("__Host-o365c-flow="));
    // One flow consumed, one created: the verification sign-in.
    assert_eq!(memory.sessions.len(), 1);

    // The same event again: the state is spent.
    let again = memory.app.handle(event("consent-callback")).await;
    assert_eq!(again.status(), 400);
    assert!(body(&again).contains("expired or was already used"));
}

#[tokio::test]
async fn consent_callback_declined_shows_the_troubleshooting_page() {
    let memory = Memory::start().await;
    seed_session(
        &memory,
        "fixture-admin-consent-state-0001",
        Flow::AdminConsent,
        "organizations",
    )
    .await;
    let response = memory.app.handle(event("consent-callback-declined")).await;
    assert_eq!(response.status(), 403);
    assert_secure_headers(&response);
    let html = body(&response);
    assert!(html.contains("Consent was not given"), "{html}");
    assert!(html.contains("AADSTS65004"));
    assert!(
        html.contains("1e2d3c4b-5a69-4788-97a6-b5c4d3e2f101"),
        "correlation id shown"
    );
    assert!(
        memory
            .tenants
            .get_tenant(&TenantId::parse(FIXTURE_TENANT).expect("guid"))
            .await
            .expect("read")
            .is_none()
    );
}

#[tokio::test]
async fn auth_login_asks_an_unknown_tenant_for_the_default_features() {
    let memory = Memory::start().await;
    let response = memory.app.handle(event("auth-login")).await;
    assert_eq!(response.status(), 302);
    let started = support::Started::from_response(&response);
    assert_eq!(
        started.location.as_str().split('?').next(),
        Some(
            format!(
                "{}/organizations/oauth2/v2.0/authorize",
                memory.idp.base_url
            )
            .as_str()
        )
    );
    let p = &started.params;
    assert_eq!(p["response_type"], "code");
    assert_eq!(p["response_mode"], "query");
    assert_eq!(p["code_challenge_method"], "S256");
    assert_eq!(p["code_challenge"].len(), 43);
    assert_eq!(p["nonce"].len(), 43);
    assert_eq!(p["login_hint"], "adele@contoso.com");
    assert!(
        !p.contains_key("prompt"),
        "no account picker when the user is named"
    );
    assert_eq!(
        p["scope"],
        "openid email profile offline_access https://graph.microsoft.com/Calendars.ReadWrite https://graph.microsoft.com/OnlineMeetings.ReadWrite"
    );
    assert_eq!(
        p["redirect_uri"],
        "https://connector.example.com/auth/callback"
    );
}

#[tokio::test]
async fn auth_callback_completes_the_sign_in() {
    let memory = Memory::start().await;
    seed_session(
        &memory,
        "fixture-sign-in-state-0001",
        Flow::SignIn,
        "organizations",
    )
    .await;
    let claims = memory.idp.claims(
        FIXTURE_TENANT,
        FIXTURE_USER,
        CLIENT_ID,
        "fixture-nonce",
        "adele@contoso.com",
    );
    memory.idp.respond_tokens(
        &memory.idp.sign(&claims),
        "openid profile email offline_access https://graph.microsoft.com/Calendars.ReadWrite https://graph.microsoft.com/Mail.Read",
    );
    let response = memory.app.handle(event("auth-callback")).await;
    assert_eq!(response.status(), 302, "{}", body(&response));
    assert_eq!(header(&response, "location"), Some(APP_URL));

    let form = &memory.idp.token_forms()[0];
    assert_eq!(form["grant_type"], "authorization_code");
    assert_eq!(form["code"], "0.AXfixture-authorization-code");
    assert_eq!(
        form["code_verifier"],
        "fixture-verifier-0123456789-abcdefghijklmno"
    );
    assert_eq!(form["client_id"], CLIENT_ID);
    assert_eq!(
        form["client_secret"],
        support::CLIENT_SECRET,
        "client_secret_post"
    );
    assert_eq!(
        form["redirect_uri"],
        "https://connector.example.com/auth/callback"
    );

    let key = UserKey::new(
        TenantId::parse(FIXTURE_TENANT).expect("guid"),
        UserId::parse(FIXTURE_USER).expect("guid"),
    );
    let connection = memory
        .connections
        .get_connection(&key)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(connection.status, ConnectionStatus::Active);
    assert_eq!(connection.upn, "adele@contoso.com");
    assert!(connection.granted_scopes.contains(Scope::MailRead));
    let token = memory
        .vault
        .get_token(&key)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(token.refresh_token.secret(), "rt-0.AXfixture");
    let tenant = memory
        .tenants
        .get_tenant(&key.tenant_id)
        .await
        .expect("read")
        .expect("created");
    assert_eq!(tenant.consent_mode, ConsentMode::UserConsent);
    assert_eq!(tenant.consent_state, ConsentState::Confirmed);
    // A member's UPN domain is not a domain Microsoft vouches for: nothing routes by it.
    assert!(tenant.verified_domains.is_empty());
    use consent_callback::domains::TenantDomains as _;
    assert_eq!(
        memory
            .domains
            .tenant_for_domain("contoso.com")
            .await
            .expect("read"),
        None
    );
    assert_eq!(memory.queue.sent(&memory.mail_queue()).len(), 1);
    assert_eq!(memory.queue.sent(&memory.calendar_queue()).len(), 1);
    let job: serde_json::Value =
        serde_json::from_str(&memory.queue.sent(&memory.mail_queue())[0].body).expect("json");
    assert_eq!(job["reason"], "initial");
    assert_eq!(job["userId"], FIXTURE_USER);
}

#[tokio::test]
async fn auth_callback_not_assigned_shows_what_the_administrator_does() {
    let memory = Memory::start().await;
    seed_session(
        &memory,
        "fixture-sign-in-state-0001",
        Flow::SignIn,
        "organizations",
    )
    .await;
    let response = memory.app.handle(event("auth-callback-not-assigned")).await;
    assert_eq!(response.status(), 403);
    let html = body(&response);
    assert!(html.contains("Users and groups"), "{html}");
    assert!(html.contains("2f3e4d5c-6b7a-4899-a8b7-c6d5e4f3a212"));
    assert!(memory.idp.token_forms().is_empty(), "no code was redeemed");
    assert!(memory.queue.sent(&memory.mail_queue()).is_empty());
}

#[tokio::test]
async fn token_endpoint_errors_become_troubleshooting_pages() {
    let memory = Memory::start().await;
    let cases = [
        (
            401,
            json_error(
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID",
            ),
            500,
            "Secret ID",
        ),
        (
            400,
            json_error(
                "unauthorized_client",
                700016,
                "Application with identifier was not found in the directory",
            ),
            403,
            "not set up in this organisation",
        ),
        (
            400,
            json_error(
                "invalid_grant",
                65001,
                "The user or administrator has not consented to use the application",
            ),
            403,
            "Need admin approval",
        ),
        (
            400,
            json_error(
                "invalid_grant",
                54005,
                "OAuth2 Authorization code was already redeemed",
            ),
            400,
            "already completed",
        ),
    ];
    for (status, error_body, expected, needle) in cases {
        seed_session(
            &memory,
            "fixture-sign-in-state-0001",
            Flow::SignIn,
            "organizations",
        )
        .await;
        memory.idp.respond(status, error_body);
        let response = memory.app.handle(event("auth-callback")).await;
        let html = body(&response);
        assert_eq!(response.status(), expected, "{needle}: {html}");
        assert!(html.contains(needle), "{needle}: {html}");
        assert!(
            html.contains("bbbbbbbb-0000-4000-8000-000000000002"),
            "correlation id shown"
        );
    }
    // Something that is not Microsoft's JSON: a 502 page, nothing stored.
    seed_session(
        &memory,
        "fixture-sign-in-state-0001",
        Flow::SignIn,
        "organizations",
    )
    .await;
    memory.idp.respond(503, serde_json::json!("upstream down"));
    let response = memory.app.handle(event("auth-callback")).await;
    assert_eq!(response.status(), 502, "{}", body(&response));
    assert!(memory.queue.sent(&memory.mail_queue()).is_empty());
}

fn json_error(error: &str, code: u32, text: &str) -> serde_json::Value {
    serde_json::json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {text}\r\nTrace ID: aaaaaaaa-0000-4000-8000-000000000001\r\nCorrelation ID: bbbbbbbb-0000-4000-8000-000000000002\r\nTimestamp: 2026-11-21 10:00:00Z"),
        "error_codes": [code],
        "timestamp": "2026-11-21 10:00:00Z",
        "trace_id": "aaaaaaaa-0000-4000-8000-000000000001",
        "correlation_id": "bbbbbbbb-0000-4000-8000-000000000002",
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}")
    })
}
