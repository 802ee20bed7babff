//! `/{tenant}/v2.0/adminconsent`: success and error redirects exactly as the contract describes.

mod identity_support;

use identity_support::*;

fn admin_consent_params(scope: &str) -> Vec<(&str, &str)> {
    vec![
        ("client_id", APP),
        ("redirect_uri", REDIRECT),
        ("scope", scope),
        ("state", "st-123"),
    ]
}

/// Admin-consent errors: `error`, `error_description`, `error_uri`, `admin_consent=True`, `state`, and no `tenant`.
fn assert_admin_consent_error(
    params: &[(String, String)],
    error: &str,
    code: u32,
    base: &str,
) -> std::collections::HashMap<String, String> {
    let map = assert_redirect_error(params, error, code, base);
    assert_eq!(map["admin_consent"], "True");
    assert!(
        !map.contains_key("tenant"),
        "tenant is absent on errors: {params:?}"
    );
    map
}

#[tokio::test]
async fn admin_grants_for_the_organization_through_the_pages() {
    let sim = start(false).await;
    let base = sim.base_url();
    let c = client();
    let params = admin_consent_params("https://graph.microsoft.com/.default");
    let page = get(
        &c,
        &format!("{base}/organizations/v2.0/adminconsent"),
        &params,
    )
    .await;
    let html = page.text().await.unwrap();
    let ctx = hidden_field(&html, "ctx");
    let consent = post_form(
        &c,
        &base,
        &form_action(&html, "name=\"login\""),
        &[("ctx", &ctx), ("login", "admin@fabrikam.com")],
        None,
    )
    .await;
    let html = consent.text().await.unwrap();
    assert!(html.contains("Accept for your organization"));
    assert!(
        !html.contains("org_consent"),
        "admin consent is always for the organization"
    );
    for permission in ["User.Read", "Mail.Read", "Calendars.Read"] {
        assert!(html.contains(&format!("data-scope=\"{permission}\"")));
    }
    let done = post_form(
        &c,
        &base,
        &form_action(&html, "value=\"accept\""),
        &[("ctx", &ctx), ("decision", "accept")],
        None,
    )
    .await;
    let params = redirect_params(&done);
    let names: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["admin_consent", "tenant", "scope", "state"]);
    let map = as_map(&params);
    assert_eq!(map["admin_consent"], "True");
    assert_eq!(
        map["tenant"], FABRIKAM,
        "organizations resolves to the admin's own tenant"
    );
    assert_eq!(
        map["scope"],
        "https://graph.microsoft.com/Calendars.Read https://graph.microsoft.com/Mail.Read https://graph.microsoft.com/User.Read"
    );
    assert_eq!(map["state"], "st-123");
    let g = grants(&c, &base, FABRIKAM).await;
    assert_eq!(g["servicePrincipals"], serde_json::json!([APP]));
    assert_eq!(g["grants"][0]["principal"], "allUsers");
    // Users of the tenant now sign in without any prompt.
    let (jon, _) = html_sign_in(
        &c,
        &base,
        FABRIKAM,
        &authorize_params("openid Mail.Read", None),
        "jon@fabrikam.com",
    )
    .await;
    assert!(as_map(&redirect_params(&jon)).contains_key("code"));
}

#[tokio::test]
async fn admin_cancel_is_access_denied_65004_without_tenant() {
    let sim = start(false).await;
    let base = sim.base_url();
    let c = client();
    let page = get(
        &c,
        &format!("{base}/{FABRIKAM}/v2.0/adminconsent"),
        &admin_consent_params("Mail.Read"),
    )
    .await;
    let html = page.text().await.unwrap();
    let ctx = hidden_field(&html, "ctx");
    let consent = post_form(
        &c,
        &base,
        &form_action(&html, "name=\"login\""),
        &[("ctx", &ctx), ("login", "admin@fabrikam.com")],
        None,
    )
    .await;
    let html = consent.text().await.unwrap();
    let done = post_form(
        &c,
        &base,
        &form_action(&html, "value=\"cancel\""),
        &[("ctx", &ctx), ("decision", "cancel")],
        None,
    )
    .await;
    let params = redirect_params(&done);
    assert_admin_consent_error(&params, "access_denied", 65004, &base);
    let names: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "error",
            "error_description",
            "error_uri",
            "error_subcode",
            "admin_consent",
            "state"
        ]
    );
    assert!(
        grants(&c, &base, FABRIKAM).await["grants"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn non_admins_cannot_grant_90094() {
    let sim = start(true).await;
    let base = sim.base_url();
    let c = client();
    for user in ["jon@fabrikam.com", "helpdesk@fabrikam.com"] {
        let mut params = admin_consent_params("Mail.Read");
        params.push(("login_hint", user));
        let r = get(
            &c,
            &format!("{base}/organizations/v2.0/adminconsent"),
            &params,
        )
        .await;
        let map = assert_admin_consent_error(&redirect_params(&r), "access_denied", 90094, &base);
        assert_eq!(map["error_subcode"], "cancel");
    }
    assert!(
        grants(&c, &base, FABRIKAM).await["grants"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn admin_from_another_tenant_is_50020_and_auto_approve_admin_succeeds() {
    let sim = start(true).await;
    let base = sim.base_url();
    let c = client();
    let mut params = admin_consent_params("Mail.Read");
    params.push(("login_hint", "adele@contoso.com"));
    let r = get(&c, &format!("{base}/{FABRIKAM}/v2.0/adminconsent"), &params).await;
    assert_admin_consent_error(&redirect_params(&r), "access_denied", 50020, &base);

    let r = get(
        &c,
        &format!("{base}/contoso.com/v2.0/adminconsent"),
        &params,
    )
    .await;
    let map = as_map(&redirect_params(&r));
    assert_eq!(map["tenant"], CONTOSO);
    assert_eq!(map["scope"], "https://graph.microsoft.com/Mail.Read");
}

#[tokio::test]
async fn unregistered_redirect_uri_is_a_page_and_missing_scope_an_error_redirect() {
    let sim = start(true).await;
    let base = sim.base_url();
    let c = client();
    let r = get(
        &c,
        &format!("{base}/organizations/v2.0/adminconsent"),
        &[
            ("client_id", APP),
            ("redirect_uri", "https://evil.example/cb"),
            ("scope", "Mail.Read"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("location").is_none());
    assert!(r.text().await.unwrap().contains("AADSTS50011"));
    let r = get(
        &c,
        &format!("{base}/organizations/v2.0/adminconsent"),
        &[
            ("client_id", APP),
            ("redirect_uri", REDIRECT),
            ("state", "st-123"),
        ],
    )
    .await;
    assert_admin_consent_error(&redirect_params(&r), "invalid_request", 900144, &base);
}
