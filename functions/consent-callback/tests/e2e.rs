//! End to end: the handler with its production adapters against moto (template.yaml's
//! resources) and microsoft-sim, driven like a browser, in auto-approve mode and through
//! the sim's HTML pages. Each test asserts what was stored and what was not.

mod support;

use connector_core::domain::{
    ConnectionStatus, ConsentMode, ConsentState, FeatureBundle, Scope, SyncKind,
};
use connector_core::messages::SyncReason;
use serde_json::json;
use support::live::{Landing, Live, tenant_json};
use support::{guid, query};

fn domain(prefix: &str) -> String {
    format!(
        "{prefix}{}.example",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Signs in through the sim's sign-in page (HTML mode): submits the account form.
async fn sign_in_page(browser: &support::live::Browser, landing: &Landing, upn: &str) -> Landing {
    let (url, status, _) = landing.page();
    assert_eq!(status, 200, "{}", landing.text());
    let forms = landing.forms();
    let form = forms
        .iter()
        .find(|f| f.fields.iter().any(|(n, _)| n == "login"))
        .unwrap_or_else(|| panic!("no sign-in form: {}", landing.text()));
    browser.submit(url, form, &[("login", upn)], None).await
}

/// Presses Accept or Cancel on the sim's consent page.
async fn consent_page(
    browser: &support::live::Browser,
    landing: &Landing,
    decision: &str,
) -> Landing {
    let (url, _, _) = landing.page();
    let forms = landing.forms();
    let form = forms
        .iter()
        .find(|f| {
            f.buttons
                .iter()
                .any(|(n, v, _)| n == "decision" && v == decision)
        })
        .unwrap_or_else(|| panic!("no consent form: {}", landing.text()));
    browser
        .submit(url, form, &[], Some(("decision", decision)))
        .await
}

async fn assert_nothing_stored_for(live: &Live, tid: &str, oid: &str) {
    assert!(
        live.connection(tid, oid).await.is_none(),
        "connection stored"
    );
    assert!(live.token(tid, oid).await.is_none(), "token stored");
}

#[tokio::test]
async fn preauthorized_tenant_admin_consent_then_users_sign_in_without_a_prompt() {
    let (tid, admin, user) = (guid(), guid(), guid());
    let dns = domain("contoso");
    let (admin_upn, user_upn) = (format!("admin@{dns}"), format!("adele@{dns}"));
    let live = Live::start(
        false,
        vec![tenant_json(
            &tid,
            &dns,
            json!({"userConsent": "allowed"}),
            &[
                (&admin, &admin_upn, &["GlobalAdministrator"]),
                (&user, &user_upn, &[]),
            ],
        )],
    )
    .await;

    // The administrator: consent page → a bundle's link → the sim's sign-in → Accept → our success page.
    let browser = live.browser();
    let grant = |bundle: &'static str| {
        let browser = &browser;
        let live = &live;
        let admin_upn = admin_upn.clone();
        async move {
            let page = browser.open(&live.url("/consent")).await;
            let (_, status, html) = page.page();
            assert_eq!(status, 200);
            let start = html
                .split("href=\"")
                .filter_map(|rest| rest.split('"').next())
                .map(|href| {
                    href.replace("&#x2F;", "/")
                        .replace("&#x3D;", "=")
                        .replace("&amp;", "&")
                })
                .find(|href| href.ends_with(&format!("bundle={bundle}")))
                .expect("the bundle's link");
            let sign_in = browser.open(&start).await;
            let consent = match sign_in {
                Landing::Page { ref body, .. } if body.contains("name=\"login\"") => {
                    sign_in_page(browser, &sign_in, &admin_upn).await
                }
                other => other,
            };
            assert!(
                consent.text().contains("Accept for your organization"),
                "{}",
                consent.text()
            );
            let done = consent_page(browser, &consent, "accept").await;
            let (url, status, _) = done.page();
            // Microsoft's redirect continues into the administrator's verification sign-in (the
            // sim's session signs them in silently); the consent is recorded at its callback.
            assert!(url.starts_with(&live.url("/auth/callback")), "{url}");
            assert_eq!(status, 200, "{}", done.text());
            assert!(done.text().contains("Consent granted"));
        }
    };
    // Two consents accumulate: mail, then Teams.
    grant("mail").await;
    grant("teams").await;

    let tenant = live.tenant(&tid).await.expect("tenant recorded");
    assert_eq!(tenant.consent_mode, ConsentMode::Preauthorized);
    assert_eq!(tenant.consent_state, ConsentState::Confirmed);
    assert!(tenant.verified_domains.contains(&dns));
    assert_eq!(
        live.domain(&dns).await.map(|t| t.to_string()),
        Some(tid.clone())
    );
    assert_eq!(
        tenant.granted_bundles,
        [FeatureBundle::Mail, FeatureBundle::Teams].into()
    );
    for scope in [
        Scope::MailRead,
        Scope::ChatMessageSend,
        Scope::OfflineAccess,
    ] {
        assert!(tenant.granted_scopes.contains(scope), "{scope}");
    }
    assert!(live.sim.sim().directory().tenant(&tid).is_some());

    // The administrator signs in as a user too: the sim's session signs them in silently.
    let confirm = browser
        .open(&live.url(&format!("/auth/login?{}", query(&[("domain_hint", &tid)]))))
        .await;
    let confirm = match confirm {
        Landing::Page { .. } => sign_in_page(&browser, &confirm, &admin_upn).await,
        other => other,
    };
    assert!(matches!(confirm, Landing::App(_)), "{confirm:?}");
    let tenant = live.tenant(&tid).await.expect("tenant");
    assert_eq!(tenant.consent_state, ConsentState::Confirmed);
    assert!(
        tenant
            .consented_by
            .as_deref()
            .is_some_and(|by| by.contains(&admin))
    );
    assert!(tenant.verified_domains.contains(&dns));

    // A user: `.default`, sign-in page, and straight back to the app: no consent page.
    let user_browser = live.browser();
    let first = user_browser
        .open_until(
            &live.url(&format!(
                "/auth/login?{}",
                query(&[("login_hint", &user_upn)])
            )),
            |url| url.starts_with(&live.sim.base_url()),
        )
        .await;
    let Landing::Stopped(authorize) = first else {
        panic!("{first:?}")
    };
    let authorize = url::Url::parse(&authorize).expect("url");
    let params: std::collections::HashMap<_, _> = authorize.query_pairs().into_owned().collect();
    assert_eq!(authorize.path(), format!("/{tid}/oauth2/v2.0/authorize"));
    assert_eq!(params["scope"], consent_callback::PREAUTHORIZED_SCOPE);
    let page = user_browser.open(authorize.as_str()).await;
    let landed = sign_in_page(&user_browser, &page, &user_upn).await;
    assert!(
        matches!(landed, Landing::App(ref url) if url == &live.app_url),
        "no prompt expected: {landed:?}"
    );

    let connection = live.connection(&tid, &user).await.expect("connection");
    assert_eq!(connection.status, ConnectionStatus::Active);
    assert_eq!(connection.upn, user_upn);
    assert!(connection.granted_scopes.contains(Scope::MailRead));
    assert!(
        connection
            .granted_scopes
            .contains(Scope::ChannelMessageSend)
    );
    assert!(
        !connection
            .granted_scopes
            .contains(Scope::CalendarsReadWrite),
        "calendar was never granted"
    );
    let token = live
        .token(&tid, &user)
        .await
        .expect("refresh token in Secrets Manager");
    assert!(!token.refresh_token.secret().is_empty());
    assert_eq!(
        live.domain(&dns).await.map(|t| t.to_string()),
        Some(tid.clone())
    );

    let mail = live.mail_jobs().await;
    let calendar = live.calendar_jobs().await;
    assert!(
        mail.iter().any(|j| j.user_id.as_str() == user
            && j.kind == SyncKind::Mail
            && j.reason == SyncReason::Initial),
        "{mail:?}"
    );
    assert!(
        calendar.iter().all(|j| j.user_id.as_str() != user),
        "no calendar grant, no calendar job: {calendar:?}"
    );
}

#[tokio::test]
async fn user_consent_tenant_asks_for_explicit_feature_scopes() {
    let (tid, first, second) = (guid(), guid(), guid());
    let dns = domain("tailwind");
    let (first_upn, second_upn) = (format!("nina@{dns}"), format!("omar@{dns}"));
    let live = Live::start(
        true,
        vec![tenant_json(
            &tid,
            &dns,
            json!({"userConsent": "allowed"}),
            &[(&first, &first_upn, &[]), (&second, &second_upn, &[])],
        )],
    )
    .await;
    let browser = live.browser();
    let landed = browser
        .open(&live.url(&format!(
            "/auth/login?{}",
            query(&[("login_hint", &first_upn)])
        )))
        .await;
    assert!(matches!(landed, Landing::App(_)), "{landed:?}");

    let tenant = live.tenant(&tid).await.expect("tenant created");
    assert_eq!(tenant.consent_mode, ConsentMode::UserConsent);
    assert_eq!(tenant.consent_state, ConsentState::Confirmed);
    let connection = live.connection(&tid, &first).await.expect("connection");
    assert!(connection.granted_scopes.contains(Scope::MailRead));
    assert!(
        !connection
            .granted_scopes
            .contains(Scope::CalendarsReadWrite),
        "only the default features were asked for"
    );
    assert!(live.token(&tid, &first).await.is_some());
    assert_eq!(live.mail_jobs().await.len(), 1);
    assert!(
        live.calendar_jobs().await.is_empty(),
        "calendar was not granted: no calendar job"
    );

    // A member's UPN domain routes nothing (only verified domains from a proven admin consent
    // do): the next sign-in goes to `organizations`, with the default features' explicit scopes.
    let next = browser
        .open_until(
            &live.url(&format!(
                "/auth/login?{}",
                query(&[("login_hint", &second_upn)])
            )),
            |url| url.starts_with(&live.sim.base_url()),
        )
        .await;
    let Landing::Stopped(authorize) = next else {
        panic!("{next:?}")
    };
    let authorize = url::Url::parse(&authorize).expect("url");
    let params: std::collections::HashMap<_, _> = authorize.query_pairs().into_owned().collect();
    assert_eq!(authorize.path(), "/organizations/oauth2/v2.0/authorize");
    assert!(params["scope"].contains("https://graph.microsoft.com/Mail.Read"));
    assert!(!params["scope"].contains(".default"));
    let landed = browser.open(authorize.as_str()).await;
    assert!(matches!(landed, Landing::App(_)), "{landed:?}");
    assert!(live.connection(&tid, &second).await.is_some());
}

#[tokio::test]
async fn admin_only_tenant_needs_approval_then_succeeds() {
    let (tid, admin, jon) = (guid(), guid(), guid());
    let dns = domain("fabrikam");
    let jon_upn = format!("jon@{dns}");
    let live = Live::start(
        false,
        vec![tenant_json(
            &tid,
            &dns,
            json!({"userConsent": "adminOnly", "adminConsentWorkflow": true}),
            &[
                (
                    &admin,
                    &format!("admin@{dns}"),
                    &["CloudApplicationAdministrator"],
                ),
                (&jon, &jon_upn, &[]),
            ],
        )],
    )
    .await;
    let browser = live.browser();
    let page = browser
        .open(&live.url(&format!(
            "/auth/login?{}",
            query(&[("login_hint", &jon_upn)])
        )))
        .await;
    let approval = sign_in_page(&browser, &page, &jon_upn).await;
    assert!(
        approval.text().contains("Need admin approval"),
        "{}",
        approval.text()
    );
    let (url, _, _) = approval.page();
    let forms = approval.forms();
    let request = forms
        .iter()
        .find(|f| f.text.contains("Request approval"))
        .expect("request form");
    let sent = browser
        .submit(
            url,
            request,
            &[("justification", "Calendar import for the sales team")],
            None,
        )
        .await;
    assert!(sent.text().contains("Request sent"), "{}", sent.text());
    let (url, _, _) = sent.page();
    let back = sent
        .forms()
        .into_iter()
        .find(|f| f.text.contains("Back to app"))
        .expect("back form");
    let ours = browser.submit(url, &back, &[], None).await;
    let (url, status, _) = ours.page();
    assert!(url.starts_with(&live.url("/auth/callback")), "{url}");
    assert_eq!(status, 403);
    let text = ours.text();
    assert!(text.contains("Need admin approval"), "{text}");
    assert!(text.contains("Admin consent requests"), "{text}");
    assert!(text.contains("AADSTS90095"), "{text}");
    assert!(
        ours.page().2.contains("consent&#x2F;admin?bundle"),
        "links the admin consent"
    );
    assert_nothing_stored_for(&live, &tid, &jon).await;
    assert!(live.tenant(&tid).await.is_none());

    // The administrator approves the request in the admin consent workflow.
    let requests = live.control_get("/_sim/consent-requests").await;
    let pending = requests["value"]
        .as_array()
        .expect("list")
        .iter()
        .find(|r| r["status"] == "pending" || r["status"] == "Pending")
        .unwrap_or_else(|| panic!("no pending request: {requests}"))
        .clone();
    let id = pending["id"].as_str().expect("id");
    live.control(&format!("/_sim/consent-requests/{id}/approve"), json!({}))
        .await;

    let again = browser
        .open(&live.url(&format!(
            "/auth/login?{}",
            query(&[("login_hint", &jon_upn)])
        )))
        .await;
    let again = match again {
        Landing::Page { .. } => sign_in_page(&browser, &again, &jon_upn).await,
        other => other,
    };
    assert!(matches!(again, Landing::App(_)), "{again:?}");
    assert!(live.connection(&tid, &jon).await.is_some());
    assert!(live.token(&tid, &jon).await.is_some());
}

#[tokio::test]
async fn assignment_required_tenant_refuses_unassigned_users_and_admits_assigned_ones() {
    let (tid, alice, bob) = (guid(), guid(), guid());
    let dns = domain("tailspin");
    let (alice_upn, bob_upn) = (format!("alice@{dns}"), format!("bob@{dns}"));
    let live = Live::start(
        true,
        vec![tenant_json(&tid, &dns, json!({"userConsent": "allowed", "assignmentRequired": true, "assignedUsers": [alice_upn]}), &[
            (&alice, &alice_upn, &[]),
            (&bob, &bob_upn, &[]),
        ])],
    )
    .await;
    let refused = live
        .browser()
        .open(&live.url(&format!(
            "/auth/login?{}",
            query(&[("login_hint", &bob_upn)])
        )))
        .await;
    let (_, status, _) = refused.page();
    assert_eq!(status, 403);
    let text = refused.text();
    assert!(text.contains("not assigned"), "{text}");
    assert!(text.contains("Users and groups"), "{text}");
    assert!(text.contains("AADSTS50105"), "{text}");
    assert_nothing_stored_for(&live, &tid, &bob).await;
    assert!(live.tenant(&tid).await.is_none());

    let admitted = live
        .browser()
        .open(&live.url(&format!(
            "/auth/login?{}",
            query(&[("login_hint", &alice_upn)])
        )))
        .await;
    assert!(matches!(admitted, Landing::App(_)), "{admitted:?}");
    assert!(live.connection(&tid, &alice).await.is_some());
}

#[tokio::test]
async fn declined_consent_stores_nothing() {
    let (tid, admin, dan) = (guid(), guid(), guid());
    let dns = domain("litware");
    let (admin_upn, dan_upn) = (format!("admin@{dns}"), format!("dan@{dns}"));
    let live = Live::start(
        false,
        vec![tenant_json(
            &tid,
            &dns,
            json!({"userConsent": "allowed"}),
            &[
                (&admin, &admin_upn, &["GlobalAdministrator"]),
                (&dan, &dan_upn, &[]),
            ],
        )],
    )
    .await;
    // A user cancels the consent page.
    let browser = live.browser();
    let page = browser
        .open(&live.url(&format!(
            "/auth/login?{}",
            query(&[("login_hint", &dan_upn)])
        )))
        .await;
    let consent = sign_in_page(&browser, &page, &dan_upn).await;
    let declined = consent_page(&browser, &consent, "cancel").await;
    let (url, status, _) = declined.page();
    assert!(url.starts_with(&live.url("/auth/callback")), "{url}");
    assert_eq!(status, 403);
    assert!(
        declined.text().contains("Consent was not given"),
        "{}",
        declined.text()
    );
    assert_nothing_stored_for(&live, &tid, &dan).await;

    // An administrator cancels the admin consent.
    let browser = live.browser();
    let page = browser
        .open(&live.url(&format!(
            "/consent/admin?{}",
            query(&[("bundle", "mail"), ("tenant", &tid)])
        )))
        .await;
    let consent = sign_in_page(&browser, &page, &admin_upn).await;
    let declined = consent_page(&browser, &consent, "cancel").await;
    let (url, status, _) = declined.page();
    assert!(url.starts_with(&live.url("/consent/callback")), "{url}");
    assert_eq!(status, 403);
    assert!(
        declined.text().contains("AADSTS65004"),
        "{}",
        declined.text()
    );
    assert!(live.tenant(&tid).await.is_none(), "nothing recorded");
}

#[tokio::test]
async fn an_account_from_another_directory_is_explained() {
    let (home, home_admin, other, visitor) = (guid(), guid(), guid(), guid());
    let (home_dns, other_dns) = (domain("northwind"), domain("adatum"));
    let visitor_upn = format!("vic@{other_dns}");
    let live = Live::start(
        true,
        vec![
            tenant_json(
                &home,
                &home_dns,
                json!({"userConsent": "allowed"}),
                &[(
                    &home_admin,
                    &format!("admin@{home_dns}"),
                    &["GlobalAdministrator"],
                )],
            ),
            tenant_json(
                &other,
                &other_dns,
                json!({"userConsent": "allowed"}),
                &[(&visitor, &visitor_upn, &[])],
            ),
        ],
    )
    .await;
    let consent = live
        .browser()
        .open(&live.url(&format!(
            "/consent/admin?{}",
            query(&[("bundle", "mail"), ("tenant", &home)])
        )))
        .await;
    assert_eq!(consent.page().1, 200, "{}", consent.text());
    assert_eq!(
        live.tenant(&home).await.expect("recorded").consent_mode,
        ConsentMode::Preauthorized
    );

    let refused = live
        .browser()
        .open(&live.url(&format!(
            "/auth/login?{}",
            query(&[("domain_hint", &home), ("login_hint", &visitor_upn)])
        )))
        .await;
    let (_, status, _) = refused.page();
    assert_eq!(status, 403);
    assert!(
        refused.text().contains("another organisation"),
        "{}",
        refused.text()
    );
    assert!(refused.text().contains("AADSTS50020"));
    assert_nothing_stored_for(&live, &other, &visitor).await;
    assert!(live.tenant(&other).await.is_none());
}

#[tokio::test]
async fn signing_key_rollover_between_two_sign_ins() {
    let (tid, first, second) = (guid(), guid(), guid());
    let dns = domain("woodgrove");
    let (first_upn, second_upn) = (format!("ann@{dns}"), format!("ben@{dns}"));
    let live = Live::start(
        true,
        vec![tenant_json(
            &tid,
            &dns,
            json!({"userConsent": "allowed"}),
            &[(&first, &first_upn, &[]), (&second, &second_upn, &[])],
        )],
    )
    .await;
    let landed = live
        .browser()
        .open(&live.url(&format!(
            "/auth/login?{}",
            query(&[("login_hint", &first_upn)])
        )))
        .await;
    assert!(matches!(landed, Landing::App(_)), "{landed:?}");
    let before = live
        .control_get(&format!("/{tid}/discovery/v2.0/keys"))
        .await;
    live.control("/_sim/keys/rotate", json!({})).await;
    let after = live
        .control_get(&format!("/{tid}/discovery/v2.0/keys"))
        .await;
    assert_ne!(
        before["keys"][0]["kid"], after["keys"][0]["kid"],
        "a new signing key"
    );
    let landed = live
        .browser()
        .open(&live.url(&format!(
            "/auth/login?{}",
            query(&[("login_hint", &second_upn)])
        )))
        .await;
    assert!(
        matches!(landed, Landing::App(_)),
        "the new key was fetched: {landed:?}"
    );
    assert!(live.connection(&tid, &first).await.is_some());
    assert!(live.connection(&tid, &second).await.is_some());
}

#[tokio::test]
async fn a_replayed_code_or_callback_is_refused() {
    let (tid, user) = (guid(), guid());
    let dns = domain("proseware");
    let upn = format!("rae@{dns}");
    let live = Live::start(
        true,
        vec![tenant_json(
            &tid,
            &dns,
            json!({"userConsent": "allowed"}),
            &[(&user, &upn, &[])],
        )],
    )
    .await;
    let browser = live.browser();
    let login = live.url(&format!("/auth/login?{}", query(&[("login_hint", &upn)])));
    let is_callback = |url: &str| url.starts_with(&live.url("/auth/callback"));
    let Landing::Stopped(first) = browser.open_until(&login, is_callback).await else {
        panic!("no callback")
    };
    let landed = browser.open(&first).await;
    assert!(matches!(landed, Landing::App(_)), "{landed:?}");
    assert_eq!(live.mail_jobs().await.len(), 1);
    let stored = live.connection(&tid, &user).await.expect("connection");

    // The same callback again: its state is spent.
    let replay = browser.open(&first).await;
    assert_eq!(replay.page().1, 400);
    assert!(replay.text().contains("expired or was already used"));

    // The first code under a fresh state and cookie: Microsoft refuses the redeemed code.
    let Landing::Stopped(second) = browser.open_until(&login, is_callback).await else {
        panic!("no callback")
    };
    let first_code = url::Url::parse(&first)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == "code")
        .expect("code")
        .1
        .into_owned();
    let mut forged = url::Url::parse(&second).expect("url");
    let pairs: Vec<(String, String)> = forged
        .query_pairs()
        .map(|(k, v)| {
            if k == "code" {
                (k.into_owned(), first_code.clone())
            } else {
                (k.into_owned(), v.into_owned())
            }
        })
        .collect();
    forged.query_pairs_mut().clear().extend_pairs(pairs);
    let refused = browser.open(forged.as_str()).await;
    let (_, status, _) = refused.page();
    assert_eq!(status, 400, "{}", refused.text());
    assert!(refused.text().contains("AADSTS54005"), "{}", refused.text());
    assert!(
        live.mail_jobs().await.is_empty(),
        "no second initial import"
    );
    assert_eq!(
        live.connection(&tid, &user)
            .await
            .expect("still there")
            .updated_at,
        stored.updated_at
    );
}

/// Issue 12: an admin consent is recorded on proof only. A user-consent tenant exists; a consent
/// link naming no tenant, answered by a hand-written `admin_consent=True&tenant=<it>&scope=openid`,
/// leaves its record and its connection byte-for-byte as they were, also when a member of that
/// tenant (no admin role) completes the sign-in that follows. Then a real consent by a Global
/// Administrator is recorded, with the tenant's verified domains from Graph; a member's UPN
/// domain that is not verified routes nothing.
#[tokio::test]
async fn admin_consent_is_recorded_only_for_a_verified_administrator() {
    let (tid, admin, member, outsider) = (guid(), guid(), guid(), guid());
    let dns = domain("northwind");
    let unverified = domain("unverified");
    let (admin_upn, member_upn, outsider_upn) = (
        format!("admin@{dns}"),
        format!("maria@{dns}"),
        format!("otto@{unverified}"),
    );
    let live = Live::start(
        false,
        vec![tenant_json(
            &tid,
            &dns,
            json!({"userConsent": "allowed"}),
            &[
                (&admin, &admin_upn, &["GlobalAdministrator"]),
                (&member, &member_upn, &[]),
                (&outsider, &outsider_upn, &[]),
            ],
        )],
    )
    .await;

    // A member signs in with user consent: a user-consent tenant with one active connection.
    let member_browser = live.browser();
    let page = member_browser
        .open(&live.url(&format!(
            "/auth/login?{}",
            query(&[("login_hint", &member_upn)])
        )))
        .await;
    let page = sign_in_page(&member_browser, &page, &member_upn).await;
    let landed = consent_page(&member_browser, &page, "accept").await;
    assert!(matches!(landed, Landing::App(_)), "{landed:?}");
    let tenant_before = live.raw_tenant(&tid).await.expect("tenant item");
    let connection_before = live
        .raw_connection(&tid, &member)
        .await
        .expect("connection item");
    let tenant = live.tenant(&tid).await.expect("tenant");
    assert_eq!(tenant.consent_mode, ConsentMode::UserConsent);
    assert!(tenant.verified_domains.is_empty(), "no domain from a UPN");
    assert_eq!(
        live.domain(&dns).await,
        None,
        "a member's UPN domain routes nothing"
    );
    let _ = live.mail_jobs().await;

    // (a) The forged callback: the forger starts a link with no tenant and answers it by hand.
    let forger = live.browser();
    let started = forger
        .open_until(&live.url("/consent/admin?bundle=mail"), |url| {
            url.starts_with(&live.sim.base_url())
        })
        .await;
    let Landing::Stopped(adminconsent) = started else {
        panic!("{started:?}")
    };
    let state = url::Url::parse(&adminconsent)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("state");
    let forged = live.url(&format!(
        "/consent/callback?{}",
        query(&[
            ("admin_consent", "True"),
            ("tenant", &tid),
            ("scope", "openid"),
            ("state", &state)
        ])
    ));
    let next = forger
        .open_until(&forged, |url| url.starts_with(&live.sim.base_url()))
        .await;
    let Landing::Stopped(authorize) = next else {
        panic!("the forged callback must only lead to a sign-in: {next:?}")
    };
    assert!(
        authorize.contains(&format!("/{tid}/oauth2/v2.0/authorize")),
        "{authorize}"
    );
    assert_eq!(live.raw_tenant(&tid).await.as_ref(), Some(&tenant_before));

    // (c) The forger is a member of that tenant and completes the sign-in: nothing recorded.
    let page = forger.open(&authorize).await;
    let page = sign_in_page(&forger, &page, &member_upn).await;
    // The sign-in asks User.Read, which the member consents to for themselves.
    let page = if page.text().contains("Permissions requested") {
        consent_page(&forger, &page, "accept").await
    } else {
        page
    };
    let (_, status, _) = page.page();
    assert_eq!(status, 403, "{}", page.text());
    assert!(
        page.text()
            .contains("An administrator must grant this consent"),
        "{}",
        page.text()
    );
    assert!(page.text().contains("Global Administrator"));
    assert_eq!(
        live.raw_tenant(&tid).await.as_ref(),
        Some(&tenant_before),
        "tenant unchanged"
    );
    assert_eq!(
        live.raw_connection(&tid, &member).await.as_ref(),
        Some(&connection_before),
        "connection unchanged"
    );
    assert_eq!(live.domain(&dns).await, None);
    // Its next sync is unaffected: still active, still due for mail, its token still stored.
    let connection = live.connection(&tid, &member).await.expect("connection");
    assert_eq!(connection.status, ConnectionStatus::Active);
    assert!(connection.wants_sync(SyncKind::Mail, None, time::OffsetDateTime::now_utc()));
    assert!(live.token(&tid, &member).await.is_some());
    assert!(
        live.mail_jobs().await.is_empty(),
        "nothing queued by the forgery"
    );

    // (b) A real consent by a verified Global Administrator of the tenant is recorded.
    let admin_browser = live.browser();
    let page = admin_browser
        .open(&live.url(&format!(
            "/consent/admin?{}",
            query(&[("bundle", "mail"), ("tenant", &tid)])
        )))
        .await;
    let page = sign_in_page(&admin_browser, &page, &admin_upn).await;
    assert!(
        page.text().contains("Accept for your organization"),
        "{}",
        page.text()
    );
    let done = consent_page(&admin_browser, &page, "accept").await;
    let (url, status, _) = done.page();
    assert!(url.starts_with(&live.url("/auth/callback")), "{url}");
    assert_eq!(status, 200, "{}", done.text());
    assert!(done.text().contains("Consent granted"), "{}", done.text());
    let tenant = live.tenant(&tid).await.expect("tenant");
    assert_eq!(tenant.consent_mode, ConsentMode::Preauthorized);
    assert_eq!(tenant.consent_state, ConsentState::Confirmed);
    assert!(tenant.granted_bundles.contains(&FeatureBundle::Mail));
    assert!(tenant.granted_scopes.contains(Scope::MailRead));
    assert!(
        tenant
            .consented_by
            .as_deref()
            .is_some_and(|by| by.contains(&admin) && by.contains("Global Administrator"))
    );
    assert!(
        live.connection(&tid, &admin).await.is_none(),
        "verification stores no connection"
    );
    assert!(
        live.token(&tid, &admin).await.is_none(),
        "verification stores no token"
    );

    // Sign-in routing: the tenant's verified domains (Graph `/organization`) route to it; the
    // outsider's UPN domain, not verified in the tenant, routes nothing.
    assert!(tenant.verified_domains.contains(&dns));
    assert!(!tenant.verified_domains.contains(&unverified));
    assert_eq!(
        live.domain(&dns).await.map(|t| t.to_string()),
        Some(tid.clone())
    );
    for (hint, expected) in [
        (member_upn.clone(), format!("/{tid}/oauth2/v2.0/authorize")),
        (
            outsider_upn.clone(),
            "/organizations/oauth2/v2.0/authorize".to_owned(),
        ),
    ] {
        let landing = live
            .browser()
            .open_until(
                &live.url(&format!("/auth/login?{}", query(&[("login_hint", &hint)]))),
                |url| url.starts_with(&live.sim.base_url()),
            )
            .await;
        let Landing::Stopped(authorize) = landing else {
            panic!("{landing:?}")
        };
        assert_eq!(
            url::Url::parse(&authorize).expect("url").path(),
            expected,
            "{hint}"
        );
    }
    // The outsider signs in (their tenant is found by the token): still no route by their domain.
    let outsider_browser = live.browser();
    let page = outsider_browser
        .open(&live.url(&format!(
            "/auth/login?{}",
            query(&[("login_hint", &outsider_upn)])
        )))
        .await;
    let landed = match page {
        Landing::Page { ref body, .. } if body.contains("name=\"login\"") => {
            sign_in_page(&outsider_browser, &page, &outsider_upn).await
        }
        other => other,
    };
    assert!(matches!(landed, Landing::App(_)), "{landed:?}");
    assert!(live.connection(&tid, &outsider).await.is_some());
    assert_eq!(live.domain(&unverified).await, None);
}
