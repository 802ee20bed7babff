//! The attack table: every forged, replayed, expired or unbound callback and every bad
//! id_token is refused, and nothing is stored. Tokens are crafted here and served by a mini
//! IdP with our own RSA key; everything else is the real handler path.

mod support;

use connector_core::domain::{TenantId, UserId, UserKey};
use connector_core::ports::{ConnectionStore as _, TenantStore as _, TokenVault as _};
use serde_json::{Value, json};
use support::idp::{TestKey, jwt, jwt_hs256};
use support::{APP_URL, CLIENT_ID, Memory, Started, body, guid, header, query};

const SCOPE: &str = "openid profile email offline_access https://graph.microsoft.com/Calendars.ReadWrite https://graph.microsoft.com/Mail.Read";

/// Nothing about `tid`/`oid` (or anyone) was stored.
async fn assert_nothing_stored(memory: &Memory, tid: &str, oid: &str) {
    let tenant_id = TenantId::parse(tid).expect("guid");
    let key = UserKey::new(tenant_id.clone(), UserId::parse(oid).expect("guid"));
    assert!(
        memory
            .tenants
            .get_tenant(&tenant_id)
            .await
            .expect("read")
            .is_none(),
        "tenant stored"
    );
    assert!(
        memory
            .connections
            .get_connection(&key)
            .await
            .expect("read")
            .is_none(),
        "connection stored"
    );
    assert!(
        memory.vault.get_token(&key).await.expect("read").is_none(),
        "token stored"
    );
    assert!(
        memory.queue.sent(&memory.mail_queue()).is_empty(),
        "mail job queued"
    );
    assert!(
        memory.queue.sent(&memory.calendar_queue()).is_empty(),
        "calendar job queued"
    );
}

fn assert_refused(response: &lambda_http::Response<lambda_http::Body>, status: u16) {
    assert_eq!(response.status(), status, "{}", body(response));
    assert_ne!(header(response, "location"), Some(APP_URL));
}

async fn callback(
    memory: &Memory,
    started: &Started,
    extra: &[(&str, &str)],
    cookie: Option<&str>,
) -> lambda_http::Response<lambda_http::Body> {
    let mut pairs = vec![("state", started.state())];
    pairs.extend_from_slice(extra);
    memory
        .get(&format!("/auth/callback?{}", query(&pairs)), cookie)
        .await
}

#[tokio::test]
async fn state_missing_unknown_replayed_expired_or_unbound_is_refused() {
    let memory = Memory::start().await;
    let (tid, oid) = (guid(), guid());

    // Missing state.
    let started = memory.begin("/auth/login").await;
    let response = memory
        .get(
            &format!("/auth/callback?{}", query(&[("code", "c")])),
            Some(&started.cookie),
        )
        .await;
    assert_refused(&response, 400);
    assert!(body(&response).contains("expired or was already used"));

    // Unknown state.
    let response = memory
        .get(
            &format!(
                "/auth/callback?{}",
                query(&[("code", "c"), ("state", "not-a-state-we-issued")])
            ),
            Some(&started.cookie),
        )
        .await;
    assert_refused(&response, 400);

    // Missing and mismatched binding cookie: each burns its state.
    let response = callback(&memory, &started, &[("code", "c")], None).await;
    assert_refused(&response, 400);
    let again = callback(&memory, &started, &[("code", "c")], Some(&started.cookie)).await;
    assert_refused(&again, 400);
    let other = memory.begin("/auth/login").await;
    let theirs = memory.begin("/auth/login").await;
    let response = callback(&memory, &other, &[("code", "c")], Some(&theirs.cookie)).await;
    assert_refused(&response, 400);

    // A state issued for sign-in is useless at the admin-consent callback.
    let signin = memory.begin("/auth/login").await;
    let response = memory
        .get(
            &format!(
                "/consent/callback?{}",
                query(&[
                    ("admin_consent", "True"),
                    ("tenant", &tid),
                    ("state", signin.state())
                ])
            ),
            Some(&signin.cookie),
        )
        .await;
    assert_refused(&response, 400);

    // Expired: valid state and cookie, eleven minutes later.
    let late = memory.begin("/auth/login").await;
    memory.clock.advance(660);
    let claims = memory
        .idp
        .claims(&tid, &oid, CLIENT_ID, late.nonce(), "eve@contoso.com");
    memory.idp.respond_tokens(&memory.idp.sign(&claims), SCOPE);
    let response = callback(&memory, &late, &[("code", "c")], Some(&late.cookie)).await;
    assert_refused(&response, 400);

    // Replayed: the first use works, the second is refused.
    let fresh = memory.begin("/auth/login").await;
    let claims = memory
        .idp
        .claims(&tid, &oid, CLIENT_ID, fresh.nonce(), "eve@contoso.com");
    memory.idp.respond_tokens(&memory.idp.sign(&claims), SCOPE);
    assert!(
        memory.idp.token_forms().is_empty(),
        "no refused callback reached the token endpoint"
    );
    let first = callback(&memory, &fresh, &[("code", "c")], Some(&fresh.cookie)).await;
    assert_eq!(first.status(), 302, "{}", body(&first));
    let key = UserKey::new(
        TenantId::parse(&tid).expect("guid"),
        UserId::parse(&oid).expect("guid"),
    );
    let stored = memory
        .connections
        .get_connection(&key)
        .await
        .expect("read")
        .expect("stored");
    memory.idp.respond_tokens(&memory.idp.sign(&claims), SCOPE);
    let replay = callback(&memory, &fresh, &[("code", "c")], Some(&fresh.cookie)).await;
    assert_refused(&replay, 400);
    assert_eq!(
        memory.idp.token_forms().len(),
        1,
        "the replay never reached Microsoft"
    );
    assert_eq!(
        memory.connections.get_connection(&key).await.expect("read"),
        Some(stored)
    );
}

/// Answers the admin-consent redirect with `extra` and returns the verification sign-in it
/// starts (a redirect to Microsoft's authorize endpoint with a new bound state).
async fn consent_reported(memory: &Memory, started: &Started, extra: &[(&str, &str)]) -> Started {
    let mut pairs = vec![("admin_consent", "True"), ("state", started.state())];
    pairs.extend_from_slice(extra);
    let response = memory
        .get(
            &format!("/consent/callback?{}", query(&pairs)),
            Some(&started.cookie),
        )
        .await;
    assert_eq!(response.status(), 302, "{}", body(&response));
    let verification = Started::from_response(&response);
    assert_eq!(
        verification.location.path().rsplit('/').next(),
        Some("authorize")
    );
    assert_eq!(
        verification.params["redirect_uri"],
        "https://connector.example.com/auth/callback"
    );
    assert_eq!(verification.params["code_challenge_method"], "S256");
    assert!(!verification.params["scope"].contains("offline_access"));
    assert!(verification.params["scope"].contains("https://graph.microsoft.com/User.Read"));
    verification
}

async fn tenant_of(memory: &Memory, tid: &str) -> Option<connector_core::domain::Tenant> {
    memory
        .tenants
        .get_tenant(&TenantId::parse(tid).expect("guid"))
        .await
        .expect("read")
}

const GLOBAL_ADMIN: &str = "62e90394-69f5-4237-9190-012177145e10";
const MEMBER_ROLE: &str = "b79fbf4d-3ef9-4689-8143-76b194e85509";

/// The verification's id_token for `tid`/`oid` with `wids` (absent when `None`).
fn verification_token(
    memory: &Memory,
    started: &Started,
    tid: &str,
    oid: &str,
    wids: Option<&[&str]>,
) -> String {
    let mut claims = memory
        .idp
        .claims(tid, oid, CLIENT_ID, started.nonce(), "admin@contoso.com");
    if let Some(wids) = wids {
        claims["wids"] = json!(wids);
    }
    memory.idp.sign(&claims)
}

#[tokio::test]
async fn a_forged_admin_consent_callback_records_nothing() {
    let memory = Memory::start().await;
    let (attacker, victim, oid) = (guid(), guid(), guid());

    // A consent link naming no tenant, answered by hand with the victim's tenant: nothing is
    // recorded, the flow only continues into a sign-in at the victim's authority.
    let started = memory.begin("/consent/admin?bundle=mail").await;
    let verification = consent_reported(
        &memory,
        &started,
        &[("tenant", &victim), ("scope", "openid")],
    )
    .await;
    assert!(
        verification
            .location
            .path()
            .starts_with(&format!("/{victim}/oauth2"))
    );
    assert!(tenant_of(&memory, &victim).await.is_none());
    // The forger signs in as the administrator of their own tenant: refused, nothing recorded.
    let token = verification_token(
        &memory,
        &verification,
        &attacker,
        &oid,
        Some(&[GLOBAL_ADMIN]),
    );
    memory.idp.respond_tokens(&token, SCOPE);
    let response = callback(
        &memory,
        &verification,
        &[("code", "c")],
        Some(&verification.cookie),
    )
    .await;
    assert_refused(&response, 403);
    assert!(
        body(&response).contains("different organisation"),
        "{}",
        body(&response)
    );
    assert!(tenant_of(&memory, &victim).await.is_none());
    assert!(tenant_of(&memory, &attacker).await.is_none());

    // A link for one tenant, a token of another: refused.
    let started = memory
        .begin(&format!(
            "/consent/admin?{}",
            query(&[("bundle", "all"), ("tenant", &victim)])
        ))
        .await;
    let verification = consent_reported(&memory, &started, &[("tenant", &attacker)]).await;
    assert!(
        verification
            .location
            .path()
            .starts_with(&format!("/{victim}/oauth2")),
        "the link's tenant is the authority"
    );
    let token = verification_token(
        &memory,
        &verification,
        &attacker,
        &oid,
        Some(&[GLOBAL_ADMIN]),
    );
    memory.idp.respond_tokens(&token, SCOPE);
    let response = callback(
        &memory,
        &verification,
        &[("code", "c")],
        Some(&verification.cookie),
    )
    .await;
    assert_refused(&response, 403);
    assert!(tenant_of(&memory, &attacker).await.is_none());
    assert!(tenant_of(&memory, &victim).await.is_none());

    // Without a valid state, a hand-made success callback records nothing either.
    let response = memory
        .get(
            &format!(
                "/consent/callback?{}",
                query(&[
                    ("admin_consent", "True"),
                    ("tenant", &victim),
                    ("state", "made-up")
                ])
            ),
            Some(&started.cookie),
        )
        .await;
    assert_refused(&response, 400);
    // A verification state is only good at /auth/callback, a consent state only at /consent/callback.
    let started = memory.begin("/consent/admin?bundle=mail").await;
    let verification = consent_reported(&memory, &started, &[]).await;
    assert!(
        verification
            .location
            .path()
            .starts_with("/organizations/oauth2")
    );
    let response = memory
        .get(
            &format!(
                "/consent/callback?{}",
                query(&[
                    ("admin_consent", "True"),
                    ("tenant", &victim),
                    ("state", verification.state())
                ])
            ),
            Some(&verification.cookie),
        )
        .await;
    assert_refused(&response, 400);
    assert!(tenant_of(&memory, &victim).await.is_none());
}

#[tokio::test]
async fn admin_consent_needs_a_consent_admin_role_in_wids() {
    let memory = Memory::start().await;
    let (tid, oid) = (guid(), guid());
    for (wids, reason) in [
        (None, "no wids claim"),
        (Some(&[MEMBER_ROLE][..]), "a member"),
        (
            Some(&["f2ef992c-3afb-46b9-b7cf-a126ee74c451", MEMBER_ROLE][..]),
            "Global Reader",
        ),
    ] {
        let started = memory
            .begin(&format!(
                "/consent/admin?{}",
                query(&[("bundle", "mail"), ("tenant", &tid)])
            ))
            .await;
        let verification = consent_reported(&memory, &started, &[("tenant", &tid)]).await;
        let token = verification_token(&memory, &verification, &tid, &oid, wids);
        memory.idp.respond_tokens(&token, SCOPE);
        let response = callback(
            &memory,
            &verification,
            &[("code", "c")],
            Some(&verification.cookie),
        )
        .await;
        assert_refused(&response, 403);
        let html = body(&response);
        assert!(
            html.contains("An administrator must grant this consent"),
            "{reason}: {html}"
        );
        assert!(html.contains("Cloud Application Administrator"), "{reason}");
        assert!(tenant_of(&memory, &tid).await.is_none(), "{reason}");
    }

    // A Cloud Application Administrator: recorded for the token's tenant, with what the token
    // response confirms (Mail.Read) and the tenant's verified domains from Graph.
    memory
        .idp
        .organization(&tid, &["Contoso.example", "contoso.onmicrosoft.com"]);
    let started = memory
        .begin(&format!(
            "/consent/admin?{}",
            query(&[("bundle", "all"), ("tenant", &tid)])
        ))
        .await;
    let verification = consent_reported(
        &memory,
        &started,
        &[
            ("tenant", &tid),
            ("scope", "https://graph.microsoft.com/Chat.Create"),
        ],
    )
    .await;
    let token = verification_token(
        &memory,
        &verification,
        &tid,
        &oid,
        Some(&[MEMBER_ROLE, "158c047a-c907-4556-b7ef-446551a6b5f7"]),
    );
    memory.idp.respond_tokens(&token, "openid profile https://graph.microsoft.com/Mail.Read https://graph.microsoft.com/User.Read");
    let response = callback(
        &memory,
        &verification,
        &[("code", "c")],
        Some(&verification.cookie),
    )
    .await;
    assert_eq!(response.status(), 200, "{}", body(&response));
    let tenant = tenant_of(&memory, &tid).await.expect("recorded");
    assert_eq!(
        tenant.consent_mode,
        connector_core::domain::ConsentMode::Preauthorized
    );
    assert_eq!(
        tenant.consent_state,
        connector_core::domain::ConsentState::Confirmed
    );
    assert!(
        tenant
            .granted_scopes
            .contains(connector_core::domain::Scope::MailRead)
    );
    assert!(
        !tenant
            .granted_scopes
            .contains(connector_core::domain::Scope::ChatCreate),
        "the callback's scope is not proof"
    );
    assert!(
        !tenant
            .granted_scopes
            .contains(connector_core::domain::Scope::CalendarsReadWrite),
        "not confirmed by the token response"
    );
    assert!(
        tenant
            .consented_by
            .as_deref()
            .is_some_and(|by| by.contains("Cloud Application Administrator"))
    );
    assert_eq!(
        tenant.verified_domains,
        [
            "contoso.example".to_owned(),
            "contoso.onmicrosoft.com".to_owned()
        ]
        .into()
    );
    use consent_callback::domains::TenantDomains as _;
    for domain in ["contoso.example", "contoso.onmicrosoft.com"] {
        assert_eq!(
            memory
                .domains
                .tenant_for_domain(domain)
                .await
                .expect("read")
                .map(|t| t.to_string()),
            Some(tid.clone())
        );
    }
    // The verification stored no token and no connection for the administrator.
    let key = UserKey::new(
        TenantId::parse(&tid).expect("guid"),
        UserId::parse(&oid).expect("guid"),
    );
    assert!(memory.vault.get_token(&key).await.expect("read").is_none());
    assert!(
        memory
            .connections
            .get_connection(&key)
            .await
            .expect("read")
            .is_none()
    );

    // A link naming a domain: recorded only when Graph lists that domain for the token's tenant.
    let other = guid();
    memory.idp.organization(&other, &["fabrikam.example"]);
    let started = memory
        .begin(&format!(
            "/consent/admin?{}",
            query(&[("bundle", "mail"), ("tenant", "contoso.example")])
        ))
        .await;
    let verification = consent_reported(&memory, &started, &[("tenant", &other)]).await;
    assert!(
        verification
            .location
            .path()
            .starts_with("/contoso.example/oauth2")
    );
    let token = verification_token(&memory, &verification, &other, &oid, Some(&[GLOBAL_ADMIN]));
    memory.idp.respond_tokens(&token, SCOPE);
    let response = callback(
        &memory,
        &verification,
        &[("code", "c")],
        Some(&verification.cookie),
    )
    .await;
    assert_refused(&response, 403);
    assert!(tenant_of(&memory, &other).await.is_none());
}

/// One forged token per case; each must be refused with nothing stored.
#[tokio::test]
async fn forged_id_tokens_are_refused() {
    let memory = Memory::start().await;
    let other_key = TestKey::generate("test-key-1");
    let unknown_kid = TestKey::generate("never-published");
    let rs256 = |kid: &str| json!({"typ": "JWT", "alg": "RS256", "kid": kid});
    let kid = memory.idp.key.kid.clone();

    type Forge = Box<dyn Fn(&Memory, Value) -> String>;
    type Tamper = Box<dyn Fn(&mut Value, &str, &str)>;
    let cases: Vec<(&str, Tamper, Forge)> = vec![
        (
            "wrong aud",
            Box::new(|c, _, _| c["aud"] = json!("00000000-0000-0000-0000-000000000001")),
            Box::new(|m, c| m.idp.sign(&c)),
        ),
        (
            "wrong iss",
            Box::new(|c, tid, _| {
                c["iss"] = json!(format!("https://login.evil.example/{tid}/v2.0"))
            }),
            Box::new(|m, c| m.idp.sign(&c)),
        ),
        (
            "iss of another tenant",
            Box::new(|c, _, _| {
                let other = guid();
                c["iss"] = json!(format!(
                    "{}/{other}/v2.0",
                    c["iss"]
                        .as_str()
                        .unwrap_or_default()
                        .rsplitn(3, '/')
                        .nth(2)
                        .unwrap_or_default()
                ));
            }),
            Box::new(|m, c| m.idp.sign(&c)),
        ),
        (
            "tid not a GUID",
            Box::new(|c, _, _| {
                c["tid"] = json!("contoso.com");
            }),
            Box::new(|m, c| m.idp.sign(&c)),
        ),
        (
            "expired",
            Box::new(|c, _, _| {
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                c["exp"] = json!(now - 400);
                c["nbf"] = json!(now - 4000);
                c["iat"] = json!(now - 4000);
            }),
            Box::new(|m, c| m.idp.sign(&c)),
        ),
        (
            "not yet valid",
            Box::new(|c, _, _| {
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                c["nbf"] = json!(now + 900);
            }),
            Box::new(|m, c| m.idp.sign(&c)),
        ),
        (
            "wrong nonce",
            Box::new(|c, _, _| c["nonce"] = json!("someone-elses-nonce")),
            Box::new(|m, c| m.idp.sign(&c)),
        ),
        (
            "bad signature",
            Box::new(|_, _, _| {}),
            Box::new(move |m, c| {
                jwt(
                    &other_key,
                    &json!({"typ": "JWT", "alg": "RS256", "kid": m.idp.key.kid}),
                    &c,
                )
            }),
        ),
        (
            "alg none",
            Box::new(|_, _, _| {}),
            Box::new(|m, c| {
                use base64::Engine as _;
                let e = |v: &Value| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
                };
                format!(
                    "{}.{}.",
                    e(&json!({"typ": "JWT", "alg": "none", "kid": m.idp.key.kid})),
                    e(&c)
                )
            }),
        ),
        (
            "HS256 keyed with the public key",
            Box::new(|_, _, _| {}),
            Box::new(|m, c| {
                jwt_hs256(
                    &m.idp.key.public_bytes(),
                    &json!({"typ": "JWT", "alg": "HS256", "kid": m.idp.key.kid}),
                    &c,
                )
            }),
        ),
        (
            "unknown kid",
            Box::new(|_, _, _| {}),
            Box::new(move |_, c| jwt(&unknown_kid, &rs256("never-published"), &c)),
        ),
        (
            "no kid",
            Box::new(|_, _, _| {}),
            Box::new(|m, c| {
                let _ = m;
                jwt(
                    &TestKey::generate("x"),
                    &json!({"typ": "JWT", "alg": "RS256"}),
                    &c,
                )
            }),
        ),
        (
            "no oid",
            Box::new(|c, _, _| {
                if let Some(o) = c.as_object_mut() {
                    o.remove("oid");
                }
            }),
            Box::new(|m, c| m.idp.sign(&c)),
        ),
    ];
    for (name, tamper, forge) in &cases {
        let (tid, oid) = (guid(), guid());
        let started = memory.begin("/auth/login").await;
        let mut claims = memory.idp.claims(
            &tid,
            &oid,
            CLIENT_ID,
            started.nonce(),
            "mallory@contoso.com",
        );
        tamper(&mut claims, &tid, &oid);
        memory.idp.respond_tokens(&forge(&memory, claims), SCOPE);
        let response = callback(&memory, &started, &[("code", "c")], Some(&started.cookie)).await;
        assert_eq!(response.status(), 400, "{name}: {}", body(&response));
        assert!(body(&response).contains("could not be verified"), "{name}");
        assert_nothing_stored(&memory, &tid, &oid).await;
    }
    let _ = kid;

    // The unknown kid caused one refetch; another unknown kid within 5 minutes causes none.
    let fetches = memory.idp.jwks_fetches();
    let started = memory.begin("/auth/login").await;
    let (tid, oid) = (guid(), guid());
    let claims = memory
        .idp
        .claims(&tid, &oid, CLIENT_ID, started.nonce(), "m@contoso.com");
    memory.idp.respond_tokens(
        &jwt(&TestKey::generate("k2"), &rs256("yet-another-kid"), &claims),
        SCOPE,
    );
    let response = callback(&memory, &started, &[("code", "c")], Some(&started.cookie)).await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        memory.idp.jwks_fetches(),
        fetches,
        "no second refetch within 5 minutes"
    );
    assert!(
        fetches <= 2,
        "initial fetch plus at most one refetch, got {fetches}"
    );

    // And a genuine token still works afterwards.
    let started = memory.begin("/auth/login").await;
    let claims = memory
        .idp
        .claims(&tid, &oid, CLIENT_ID, started.nonce(), "m@contoso.com");
    memory.idp.respond_tokens(&memory.idp.sign(&claims), SCOPE);
    let response = callback(&memory, &started, &[("code", "c")], Some(&started.cookie)).await;
    assert_eq!(response.status(), 302, "{}", body(&response));
}

#[tokio::test]
async fn a_token_from_another_tenant_than_the_authority_is_refused() {
    let memory = Memory::start().await;
    let (known, other, oid) = (guid(), guid(), guid());
    // Make `known` a pre-authorized tenant so sign-in uses its GUID as the authority.
    let mut tenant = connector_core::domain::Tenant::new(
        TenantId::parse(&known).expect("guid"),
        connector_core::domain::ConsentMode::Preauthorized,
        time::OffsetDateTime::now_utc(),
    );
    tenant
        .granted_bundles
        .insert(connector_core::domain::FeatureBundle::All);
    memory.tenants.put_tenant(&tenant).await.expect("seeded");
    let started = memory
        .begin(&format!(
            "/auth/login?{}",
            query(&[("domain_hint", &known)])
        ))
        .await;
    assert!(
        started
            .location
            .path()
            .starts_with(&format!("/{known}/oauth2"))
    );
    assert_eq!(
        started.params["scope"],
        consent_callback::PREAUTHORIZED_SCOPE
    );
    assert_eq!(started.params["prompt"], "select_account");
    let claims = memory
        .idp
        .claims(&other, &oid, CLIENT_ID, started.nonce(), "x@fabrikam.com");
    memory.idp.respond_tokens(&memory.idp.sign(&claims), SCOPE);
    let response = callback(&memory, &started, &[("code", "c")], Some(&started.cookie)).await;
    assert_refused(&response, 400);
    assert_nothing_stored(&memory, &other, &oid).await;
}

#[tokio::test]
async fn error_descriptions_are_rendered_inert() {
    let memory = Memory::start().await;
    let started = memory.begin("/auth/login").await;
    let payload = "AADSTS50105: <script>alert(document.cookie)</script><img src=x onerror=alert(1)> \"quoted\" & more\r\nTrace ID: <script>x</script>";
    let response = callback(
        &memory,
        &started,
        &[
            ("error", "access_denied"),
            ("error_description", payload),
            ("error_subcode", "<b>x</b>"),
        ],
        Some(&started.cookie),
    )
    .await;
    assert_eq!(response.status(), 403);
    let html = body(&response);
    assert!(!html.contains("<script>"), "{html}");
    assert!(!html.contains("<img"), "{html}");
    assert!(!html.contains("<b>x"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(document.cookie)&lt;&#x2F;script&gt;"),
        "{html}"
    );
    assert!(html.contains("&quot;quoted&quot; &amp; more"));

    // Even an unknown route or an invalid parameter never echoes the input as markup.
    let response = memory
        .get(
            "/auth/login?login_hint=%3Cscript%3Ealert(1)%3C/script%3E@x.com",
            None,
        )
        .await;
    assert_eq!(response.status(), 400);
    assert!(!body(&response).contains("<script>"));
    let response = memory.get("/%3Cscript%3E", None).await;
    assert_eq!(response.status(), 404);
    assert!(!body(&response).contains("<script>"));
}

#[tokio::test]
async fn open_redirect_attempts_land_on_the_configured_app_only() {
    let memory = Memory::start().await;
    let evil = [
        ("redirect_uri", "https://evil.example/steal"),
        ("return_to", "https://evil.example/"),
        ("next", "//evil.example"),
    ];
    let mut pairs = evil.to_vec();
    pairs.push(("login_hint", "victim@contoso.com"));
    let started = memory
        .begin(&format!("/auth/login?{}", query(&pairs)))
        .await;
    assert_eq!(
        format!("{}", started.location.origin().ascii_serialization()),
        memory.idp.base_url
    );
    assert_eq!(
        started.params["redirect_uri"],
        "https://connector.example.com/auth/callback"
    );

    let (tid, oid) = (guid(), guid());
    let claims = memory
        .idp
        .claims(&tid, &oid, CLIENT_ID, started.nonce(), "victim@contoso.com");
    memory.idp.respond_tokens(&memory.idp.sign(&claims), SCOPE);
    let mut callback_pairs = vec![("code", "c")];
    callback_pairs.extend_from_slice(&evil);
    let response = callback(&memory, &started, &callback_pairs, Some(&started.cookie)).await;
    assert_eq!(response.status(), 302);
    assert_eq!(header(&response, "location"), Some(APP_URL));

    let consent = memory
        .begin(&format!(
            "/consent/admin?{}",
            query(&[
                ("bundle", "all"),
                ("redirect_uri", "https://evil.example/cb")
            ])
        ))
        .await;
    assert_eq!(
        consent.params["redirect_uri"],
        "https://connector.example.com/consent/callback"
    );
    assert_eq!(
        format!("{}", consent.location.origin().ascii_serialization()),
        memory.idp.base_url
    );
}

#[tokio::test]
async fn oversized_and_invalid_parameters_get_a_400_page() {
    let memory = Memory::start().await;
    for path in [
        format!("/auth/callback?state={}", "a".repeat(129)),
        format!("/auth/callback?code={}&state=x", "a".repeat(4097)),
        format!(
            "/auth/callback?error=x&error_description={}&state=x",
            "a".repeat(2049)
        ),
        format!("/consent?x={}", "a".repeat(4100)),
        format!("/consent?x={}", "a".repeat(8200)),
        "/consent/admin?bundle=everything".to_owned(),
        "/consent/admin".to_owned(),
        "/consent/admin?bundle=all&tenant=not%20a%20domain".to_owned(),
        "/consent/admin?bundle=all&bundle=mail".to_owned(),
        "/auth/login?domain_hint=organizations".to_owned(),
        "/admin/login?login_hint=not-an-address".to_owned(),
        "/me/login?login_hint=a%40b%40".to_owned(),
    ] {
        let response = memory.get(&path, None).await;
        assert_eq!(response.status(), 400, "{path}");
        assert!(body(&response).contains("Invalid request"), "{path}");
    }
    assert!(
        memory.sessions.is_empty(),
        "no flow started from a bad request"
    );

    // Entra's codes are well over 1,000 characters: a 2,000-character code of Microsoft's
    // alphabet (with `.`, `-`, `_`) is redeemed as given.
    let (tid, oid) = (guid(), guid());
    let started = memory.begin("/auth/login").await;
    let claims = memory
        .idp
        .claims(&tid, &oid, CLIENT_ID, started.nonce(), "l@contoso.com");
    memory.idp.respond_tokens(&memory.idp.sign(&claims), SCOPE);
    let code = format!("0.A{}", "AbC-_.x9".repeat(250))[..2_000].to_owned();
    let response = callback(&memory, &started, &[("code", &code)], Some(&started.cookie)).await;
    assert_eq!(response.status(), 302, "{}", body(&response));
    assert_eq!(header(&response, "location"), Some(APP_URL));
    let forms = memory.idp.token_forms();
    assert_eq!(forms.last().map(|f| f["code"].clone()), Some(code));
}

/// The portal's sign-ins pass a valid `login_hint` to Microsoft (its account form is then
/// pre-filled) and otherwise ask for Microsoft's account picker.
#[tokio::test]
async fn portal_sign_in_passes_a_login_hint_or_asks_for_an_account() {
    let memory = Memory::start().await;
    for start in ["/admin/login", "/me/login"] {
        let hinted = memory
            .begin(&format!(
                "{start}?{}",
                query(&[("login_hint", "ada@contoso.com")])
            ))
            .await;
        assert_eq!(hinted.params["login_hint"], "ada@contoso.com", "{start}");
        assert!(!hinted.params.contains_key("prompt"), "{start}");
        assert!(hinted.location.path().starts_with("/organizations/oauth2"));
        let picker = memory.begin(start).await;
        assert_eq!(picker.params["prompt"], "select_account", "{start}");
        assert!(!picker.params.contains_key("login_hint"), "{start}");
    }
}

/// The same forgeries against the validator alone: each is refused for its own reason.
#[tokio::test]
async fn the_validator_names_the_reason() {
    use consent_callback::idtoken::{IdTokenError, IdTokenValidator as _, JwksValidator};
    let idp = support::idp::MiniIdp::start().await;
    let validator = JwksValidator::new(
        consent_callback::token::http_client().expect("client"),
        connector_core::config::BaseUrl::parse(&idp.base_url).expect("url"),
        CLIENT_ID,
    );
    let (tid, oid) = (guid(), guid());
    let good = idp.claims(&tid, &oid, CLIENT_ID, "n1", "a@contoso.com");
    let header = json!({"typ": "JWT", "alg": "RS256", "kid": idp.key.kid});
    let with = |name: &str, value: Value| {
        let mut claims = good.clone();
        claims[name] = value;
        claims
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let e = |v: &Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let cases: Vec<(String, IdTokenError)> = vec![
        (
            idp.sign(&with("aud", json!("someone-else"))),
            IdTokenError::Audience,
        ),
        (
            idp.sign(&with(
                "iss",
                json!(format!("https://login.evil.example/{tid}/v2.0")),
            )),
            IdTokenError::Issuer,
        ),
        (
            idp.sign(&with("iss", json!(idp.issuer(&guid())))),
            IdTokenError::Issuer,
        ),
        (
            idp.sign(&with("tid", json!("contoso.com"))),
            IdTokenError::Identity,
        ),
        (
            idp.sign(&with("exp", json!(now - 320))),
            IdTokenError::Expired,
        ),
        (
            idp.sign(&with("nbf", json!(now + 320))),
            IdTokenError::NotYetValid,
        ),
        (idp.sign(&with("nonce", json!("n2"))), IdTokenError::Nonce),
        (
            jwt(&TestKey::generate("test-key-1"), &header, &good),
            IdTokenError::Signature,
        ),
        (
            format!(
                "{}.{}.",
                e(&json!({"alg": "none", "kid": idp.key.kid})),
                e(&good)
            ),
            IdTokenError::Algorithm,
        ),
        (
            jwt_hs256(
                &idp.key.public_bytes(),
                &json!({"alg": "HS256", "kid": idp.key.kid}),
                &good,
            ),
            IdTokenError::Algorithm,
        ),
        (
            jwt(&idp.key, &json!({"alg": "RS256"}), &good),
            IdTokenError::MissingKeyId,
        ),
        (
            jwt(
                &idp.key,
                &json!({"alg": "RS256", "kid": "unpublished"}),
                &good,
            ),
            IdTokenError::UnknownKey,
        ),
        ("not.a-jwt".to_owned(), IdTokenError::Malformed),
    ];
    for (token, expected) in cases {
        assert_eq!(
            validator.validate(&token, "n1").await,
            Err(expected.clone()),
            "{expected}"
        );
    }
    // Within the 300 s leeway both ways, and the genuine token, pass.
    assert!(
        validator
            .validate(&idp.sign(&with("exp", json!(now - 280))), "n1")
            .await
            .is_ok()
    );
    assert!(
        validator
            .validate(&idp.sign(&with("nbf", json!(now + 280))), "n1")
            .await
            .is_ok()
    );
    let claims = validator
        .validate(&idp.sign(&good), "n1")
        .await
        .expect("valid");
    assert_eq!(claims.tenant_id.as_str(), tid);
    assert_eq!(claims.user_id.as_str(), oid);
}
