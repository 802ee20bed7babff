//! `/authorize` policy branches, driven through the real HTML pages and through auto-approve.

mod identity_support;

use identity_support::*;

#[tokio::test]
async fn user_consent_allowed_html_flow_creates_a_user_grant_and_redirects_with_code() {
    let sim = start(false).await;
    let base = sim.base_url();
    let c = client();
    let scope = "openid profile offline_access Mail.Read";
    let page = get(
        &c,
        &format!("{base}/organizations/oauth2/v2.0/authorize"),
        &authorize_params(scope, Some("megan@contoso.com")),
    )
    .await;
    let html = page.text().await.unwrap();
    assert!(
        html.contains("value=\"megan@contoso.com\""),
        "login_hint prefilled"
    );

    let (consent, cookie) = html_sign_in(
        &c,
        &base,
        "organizations",
        &authorize_params(scope, Some("megan@contoso.com")),
        "megan@contoso.com",
    )
    .await;
    assert!(cookie.is_some(), "SSO cookie set at sign-in");
    assert_eq!(consent.status(), 200);
    let html = consent.text().await.unwrap();
    assert!(html.contains("Permissions requested"));
    assert!(html.contains("Read your mail"));
    assert!(html.contains("Maintain access to data you have given it access to"));
    assert!(
        !html.contains("org_consent"),
        "only admins see the organization checkbox"
    );
    let ctx = hidden_field(&html, "ctx");
    let action = form_action(&html, "value=\"accept\"");
    let done = post_form(
        &c,
        &base,
        &action,
        &[("ctx", &ctx), ("decision", "accept")],
        None,
    )
    .await;
    let params = redirect_params(&done);
    assert!(location(&done).starts_with(&format!("{REDIRECT}?code=")));
    let names: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["code", "state", "session_state"]);
    let map = as_map(&params);
    assert_eq!(map["state"], "st-123");
    assert!(uuid::Uuid::parse_str(&map["session_state"]).is_ok());

    let g = grants(&c, &base, CONTOSO).await;
    assert_eq!(
        g["grants"],
        serde_json::json!([{"clientId": APP, "scopes": ["Mail.Read"], "principal": MEGAN}])
    );
    assert_eq!(g["servicePrincipals"], serde_json::json!([APP]));

    // Consented already: the next sign-in (new browser) goes straight back with a code.
    let (again, _) = html_sign_in(
        &c,
        &base,
        "organizations",
        &authorize_params(scope, None),
        "megan@contoso.com",
    )
    .await;
    assert!(as_map(&redirect_params(&again)).contains_key("code"));

    // prompt=consent forces the page anyway.
    let mut forced = authorize_params(scope, None);
    forced.push(("prompt", "consent"));
    let (page, _) = html_sign_in(&c, &base, "organizations", &forced, "megan@contoso.com").await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Permissions requested"));
}

#[tokio::test]
async fn cancel_on_consent_page_is_access_denied_65004() {
    let sim = start(false).await;
    let base = sim.base_url();
    let c = client();
    let (consent, _) = html_sign_in(
        &c,
        &base,
        "common",
        &authorize_params("openid Mail.Read", None),
        "megan@contoso.com",
    )
    .await;
    let html = consent.text().await.unwrap();
    let ctx = hidden_field(&html, "ctx");
    let action = form_action(&html, "value=\"cancel\"");
    let done = post_form(
        &c,
        &base,
        &action,
        &[("ctx", &ctx), ("decision", "cancel")],
        None,
    )
    .await;
    let map = assert_redirect_error(&redirect_params(&done), "access_denied", 65004, &base);
    assert_eq!(map["error_subcode"], "cancel");
    assert!(
        grants(&c, &base, CONTOSO).await["grants"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn admin_only_without_workflow_shows_need_admin_approval_90094() {
    let sim = start(false).await;
    let base = sim.base_url();
    let c = client();
    let (page, _) = html_sign_in(
        &c,
        &base,
        NORTHWIND,
        &authorize_params("openid Mail.Read", None),
        "ned@northwind.example",
    )
    .await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("Need admin approval") && html.contains("AADSTS90094"));
    assert!(
        !html.contains("Request approval"),
        "no workflow, no request button"
    );
    let ctx = hidden_field(&html, "ctx");
    let action = form_action(&html, "Return to the application");
    let back = post_form(&c, &base, &action, &[("ctx", &ctx)], None).await;
    let map = assert_redirect_error(&redirect_params(&back), "access_denied", 90094, &base);
    assert_eq!(map["error_subcode"], "cancel");
}

#[tokio::test]
async fn admin_consent_workflow_request_pending_then_approved() {
    let sim = start(false).await;
    let base = sim.base_url();
    let c = client();
    let params = authorize_params("openid offline_access Mail.Read", None);
    let (page, _) = html_sign_in(&c, &base, FABRIKAM, &params, "jon@fabrikam.com").await;
    let html = page.text().await.unwrap();
    assert!(html.contains("Need admin approval") && html.contains("Request approval"));
    let ctx = hidden_field(&html, "ctx");
    let action = form_action(&html, "Request approval");
    let sent = post_form(
        &c,
        &base,
        &action,
        &[("ctx", &ctx), ("justification", "I need the CRM sync")],
        None,
    )
    .await;
    let html = sent.text().await.unwrap();
    assert!(html.contains("Request sent"));
    let back = post_form(
        &c,
        &base,
        &form_action(&html, "Back to app"),
        &[("ctx", &ctx)],
        None,
    )
    .await;
    let map = assert_redirect_error(&redirect_params(&back), "access_denied", 90095, &base);
    assert_eq!(map["error_subcode"], "cancel");

    let requests: serde_json::Value = c
        .get(format!("{base}/_sim/consent-requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let request = &requests["value"][0];
    assert_eq!(request["status"], "pending");
    assert_eq!(request["userId"], JON);
    assert_eq!(request["justification"], "I need the CRM sync");
    assert_eq!(request["scopes"], serde_json::json!(["Mail.Read"]));

    // While pending, the page says so (AADSTS90095) and offers no second request.
    let (page, _) = html_sign_in(&c, &base, FABRIKAM, &params, "jon@fabrikam.com").await;
    let html = page.text().await.unwrap();
    assert!(html.contains("AADSTS90095") && !html.contains("Request approval"));

    let id = request["id"].as_str().unwrap();
    let approved = c
        .post(format!("{base}/_sim/consent-requests/{id}/approve"))
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 200);
    let (done, _) = html_sign_in(&c, &base, FABRIKAM, &params, "jon@fabrikam.com").await;
    assert!(
        as_map(&redirect_params(&done)).contains_key("code"),
        "approved: no prompt"
    );
    let g = grants(&c, &base, FABRIKAM).await;
    assert_eq!(g["grants"][0]["principal"], "allUsers");
}

#[tokio::test]
async fn admin_under_admin_only_consents_for_the_organization_with_the_checkbox() {
    let sim = start(false).await;
    let base = sim.base_url();
    let c = client();
    let params = authorize_params("openid Mail.Read Calendars.Read", None);
    let (page, _) = html_sign_in(&c, &base, FABRIKAM, &params, "admin@fabrikam.com").await;
    let html = page.text().await.unwrap();
    assert!(html.contains("Consent on behalf of your organization"));
    let ctx = hidden_field(&html, "ctx");
    let action = form_action(&html, "value=\"accept\"");
    let done = post_form(
        &c,
        &base,
        &action,
        &[("ctx", &ctx), ("decision", "accept"), ("org_consent", "on")],
        None,
    )
    .await;
    assert!(as_map(&redirect_params(&done)).contains_key("code"));
    let g = grants(&c, &base, FABRIKAM).await;
    assert_eq!(
        g["grants"],
        serde_json::json!([{"clientId": APP, "scopes": ["Calendars.Read", "Mail.Read"], "principal": "allUsers"}])
    );
    // Everyone in the tenant now signs in without a prompt.
    let (jon, _) = html_sign_in(&c, &base, FABRIKAM, &params, "jon@fabrikam.com").await;
    assert!(as_map(&redirect_params(&jon)).contains_key("code"));
}

#[tokio::test]
async fn admin_without_the_checkbox_consents_only_for_themselves() {
    let sim = start(false).await;
    let base = sim.base_url();
    let c = client();
    let params = authorize_params("openid Mail.Read", None);
    let (page, _) = html_sign_in(&c, &base, FABRIKAM, &params, "admin@fabrikam.com").await;
    let html = page.text().await.unwrap();
    let ctx = hidden_field(&html, "ctx");
    let done = post_form(
        &c,
        &base,
        &form_action(&html, "value=\"accept\""),
        &[("ctx", &ctx), ("decision", "accept")],
        None,
    )
    .await;
    assert!(as_map(&redirect_params(&done)).contains_key("code"));
    assert_eq!(
        grants(&c, &base, FABRIKAM).await["grants"][0]["principal"],
        FAB_ADMIN
    );
    let (jon, _) = html_sign_in(&c, &base, FABRIKAM, &params, "jon@fabrikam.com").await;
    assert!(jon.text().await.unwrap().contains("Need admin approval"));
}

#[tokio::test]
async fn tenant_wide_grant_from_the_world_means_no_prompt_even_under_admin_only() {
    let sim = start(false).await;
    let base = sim.base_url();
    let c = client();
    let (done, _) = html_sign_in(
        &c,
        &base,
        "organizations",
        &authorize_params("openid Mail.Read", None),
        "wendy@woodgrove.example",
    )
    .await;
    assert!(as_map(&redirect_params(&done)).contains_key("code"));
    // A scope outside the grant is a new consent, which only an admin can give there.
    let (page, _) = html_sign_in(
        &c,
        &base,
        "organizations",
        &authorize_params("openid Calendars.Read", None),
        "wendy@woodgrove.example",
    )
    .await;
    assert!(page.text().await.unwrap().contains("Need admin approval"));
}

#[tokio::test]
async fn assignment_required_and_not_assigned_is_50105() {
    let sim = start(true).await;
    let base = sim.base_url();
    let c = client();
    let url = format!("{base}/{TAILSPIN}/oauth2/v2.0/authorize");
    let denied = get(
        &c,
        &url,
        &authorize_params("openid Mail.Read", Some("bob@tailspin.example")),
    )
    .await;
    let map = assert_redirect_error(&redirect_params(&denied), "access_denied", 50105, &base);
    assert!(map["error_description"].contains("{EUII Hidden}"));
    let ok = get(
        &c,
        &url,
        &authorize_params("openid Mail.Read", Some("alice@tailspin.example")),
    )
    .await;
    assert!(as_map(&redirect_params(&ok)).contains_key("code"));
}

#[tokio::test]
async fn account_from_another_tenant_on_a_tenant_authority_is_50020() {
    let sim = start(false).await;
    let base = sim.base_url();
    let c = client();
    let (denied, _) = html_sign_in(
        &c,
        &base,
        "contoso.com",
        &authorize_params("openid Mail.Read", None),
        "jon@fabrikam.com",
    )
    .await;
    let map = assert_redirect_error(&redirect_params(&denied), "access_denied", 50020, &base);
    assert!(map["error_description"].contains("jon@fabrikam.com"));
}

#[tokio::test]
async fn unknown_app_and_unregistered_redirect_uri_are_error_pages_never_redirects() {
    let sim = start(true).await;
    let base = sim.base_url();
    let c = client();
    let url = format!("{base}/common/oauth2/v2.0/authorize");
    let unknown = get(
        &c,
        &url,
        &[
            ("client_id", "00000000-0000-4000-8000-000000000000"),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT),
            ("scope", "openid"),
        ],
    )
    .await;
    assert_eq!(
        unknown.status(),
        200,
        "an error page, as Microsoft shows it"
    );
    assert!(unknown.headers().get("location").is_none());
    assert!(unknown.text().await.unwrap().contains("AADSTS700016"));

    let mut params = authorize_params("openid", Some("adele@contoso.com"));
    params[2] = ("redirect_uri", "http://localhost:8400/callback/"); // a trailing slash is a different URI
    let mismatch = get(&c, &url, &params).await;
    assert_eq!(mismatch.status(), 200);
    assert!(mismatch.headers().get("location").is_none());
    assert!(mismatch.text().await.unwrap().contains("AADSTS50011"));
}

#[tokio::test]
async fn invalid_scope_unsupported_response_type_and_prompt_are_error_redirects() {
    let sim = start(true).await;
    let base = sim.base_url();
    let c = client();
    let url = format!("{base}/common/oauth2/v2.0/authorize");
    let bad = get(
        &c,
        &url,
        &authorize_params("openid Mail.Reed", Some("adele@contoso.com")),
    )
    .await;
    assert_redirect_error(&redirect_params(&bad), "invalid_scope", 70011, &base);

    let mut token = authorize_params("openid", Some("adele@contoso.com"));
    token[1] = ("response_type", "token");
    let r = get(&c, &url, &token).await;
    assert_redirect_error(
        &redirect_params(&r),
        "unsupported_response_type",
        700054,
        &base,
    );

    let mut admin = authorize_params("openid", Some("adele@contoso.com"));
    admin.push(("prompt", "admin_consent"));
    let r = get(&c, &url, &admin).await;
    assert_redirect_error(&redirect_params(&r), "invalid_request", 90023, &base);
}

#[tokio::test]
async fn default_scope_asks_for_static_permissions_then_means_everything_consented() {
    let sim = start(false).await;
    let base = sim.base_url();
    let c = client();
    let params = authorize_params(
        "openid offline_access https://graph.microsoft.com/.default",
        None,
    );
    let (page, _) = html_sign_in(&c, &base, "organizations", &params, "megan@contoso.com").await;
    let html = page.text().await.unwrap();
    for permission in ["User.Read", "Mail.Read", "Calendars.Read"] {
        assert!(
            html.contains(&format!("data-scope=\"{permission}\"")),
            "{permission} listed"
        );
    }
    let ctx = hidden_field(&html, "ctx");
    let done = post_form(
        &c,
        &base,
        &form_action(&html, "value=\"accept\""),
        &[("ctx", &ctx), ("decision", "accept")],
        None,
    )
    .await;
    let code = as_map(&redirect_params(&done))["code"].clone();
    let token: serde_json::Value = redeem(&c, &base, "organizations", &code, &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        token["scope"],
        "openid https://graph.microsoft.com/Calendars.Read https://graph.microsoft.com/Mail.Read https://graph.microsoft.com/User.Read"
    );
    let (again, _) = html_sign_in(&c, &base, "organizations", &params, "megan@contoso.com").await;
    assert!(
        as_map(&redirect_params(&again)).contains_key("code"),
        ".default with consent: no prompt"
    );
}

#[tokio::test]
async fn prompt_none_login_required_consent_required_and_silent_success() {
    let sim = start(false).await;
    let base = sim.base_url();
    let c = client();
    let url = format!("{base}/organizations/oauth2/v2.0/authorize");
    let mut silent = authorize_params("openid Mail.Read", None);
    silent.push(("prompt", "none"));
    let r = get(&c, &url, &silent).await;
    assert_redirect_error(&redirect_params(&r), "login_required", 50058, &base);

    // Sign in with a scope that is consented, keep the SSO cookie, then ask silently for more.
    let (consent, cookie) = html_sign_in(
        &c,
        &base,
        "organizations",
        &authorize_params("openid User.Read", None),
        "megan@contoso.com",
    )
    .await;
    let html = consent.text().await.unwrap();
    let ctx = hidden_field(&html, "ctx");
    post_form(
        &c,
        &base,
        &form_action(&html, "value=\"accept\""),
        &[("ctx", &ctx), ("decision", "accept")],
        None,
    )
    .await;
    let cookie = cookie.unwrap();
    let r = c
        .get(&url)
        .query(&silent)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_redirect_error(&redirect_params(&r), "consent_required", 65001, &base);

    let mut ok = authorize_params("openid User.Read", None);
    ok.push(("prompt", "none"));
    let r = c
        .get(&url)
        .query(&ok)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert!(as_map(&redirect_params(&r)).contains_key("code"));
}

#[tokio::test]
async fn auto_approve_follows_policy_like_clicking() {
    let sim = start(true).await;
    let base = sim.base_url();
    let c = client();
    // Allowed tenant: straight to the code.
    let code = auto_code(
        &c,
        &base,
        "organizations",
        "openid Mail.Read",
        "megan@contoso.com",
    )
    .await;
    assert!(code.starts_with("0.A"));
    assert_eq!(
        grants(&c, &base, CONTOSO).await["grants"][0]["principal"],
        MEGAN
    );

    // Admin-only tenant with the workflow, non-admin: the request is filed and the app hears access_denied.
    let r = get(
        &c,
        &format!("{base}/organizations/oauth2/v2.0/authorize"),
        &authorize_params("openid Mail.Read", Some("jon@fabrikam.com")),
    )
    .await;
    let map = assert_redirect_error(&redirect_params(&r), "access_denied", 90095, &base);
    assert_eq!(map["error_subcode"], "cancel");
    let requests: serde_json::Value = c
        .get(format!("{base}/_sim/consent-requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(requests["value"].as_array().unwrap().len(), 1);

    // An admin there consents for the organization.
    auto_code(
        &c,
        &base,
        "organizations",
        "openid Mail.Read",
        "admin@fabrikam.com",
    )
    .await;
    assert_eq!(
        grants(&c, &base, FABRIKAM).await["grants"][0]["principal"],
        "allUsers"
    );

    // domain_hint alone picks the tenant's first user.
    let r = get(
        &c,
        &format!("{base}/organizations/oauth2/v2.0/authorize"),
        &[
            ("client_id", APP),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT),
            ("scope", "openid Mail.Read"),
            ("state", "st-123"),
            ("domain_hint", "fabrikam.com"),
        ],
    )
    .await;
    assert!(as_map(&redirect_params(&r)).contains_key("code"));
}

#[tokio::test]
async fn response_modes_fragment_and_form_post() {
    let sim = start(true).await;
    let base = sim.base_url();
    let c = client();
    let url = format!("{base}/organizations/oauth2/v2.0/authorize");
    let mut fragment = authorize_params("openid", Some("adele@contoso.com"));
    fragment.push(("response_mode", "fragment"));
    let r = get(&c, &url, &fragment).await;
    assert!(location(&r).starts_with(&format!("{REDIRECT}#code=")));

    let mut form_post = authorize_params("openid", Some("adele@contoso.com"));
    form_post.push(("response_mode", "form_post"));
    let r = get(&c, &url, &form_post).await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains(&format!("action=\"{REDIRECT}\"")));
    assert!(hidden_field(&html, "code").starts_with("0.A"));
    assert_eq!(hidden_field(&html, "state"), "st-123");
}

#[tokio::test]
async fn unknown_account_on_sign_in_page_shows_an_error_and_stays() {
    let sim = start(false).await;
    let base = sim.base_url();
    let c = client();
    let (page, cookie) = html_sign_in(
        &c,
        &base,
        "organizations",
        &authorize_params("openid", None),
        "nobody@contoso.com",
    )
    .await;
    assert_eq!(page.status(), 200);
    assert!(cookie.is_none());
    let html = page.text().await.unwrap();
    assert!(html.contains("We couldn&#39;t find an account with that username."));
}
