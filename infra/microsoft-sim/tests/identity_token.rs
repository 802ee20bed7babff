//! `/token`: code redemption, refresh rotation, every error with Microsoft's body shape, and id_token
//! verification against the published JWKS with an independent JWT implementation.

mod identity_support;

use std::time::Duration;

use identity_support::*;
use serde_json::{Value, json};

async fn jwks(c: &reqwest::Client, base: &str) -> Value {
    c.get(format!("{base}/common/discovery/v2.0/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Verifies an RS256 JWT with the JWKS key named by its `kid` (jsonwebtoken, not the sim's own code).
fn verify(token: &str, jwks: &Value, audience: &str, issuer: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let kid = header.kid.expect("kid");
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("kid published");
    let decoding = jsonwebtoken::DecodingKey::from_rsa_components(
        key["n"].as_str().unwrap(),
        key["e"].as_str().unwrap(),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[issuer]);
    jsonwebtoken::decode::<Value>(token, &decoding, &validation)
        .unwrap()
        .claims
}

#[tokio::test]
async fn code_redemption_returns_microsofts_body_and_a_verifiable_id_token() {
    let sim = start(true).await;
    let base = sim.base_url();
    let c = client();
    let code = auto_code(
        &c,
        &base,
        "organizations",
        "openid profile email offline_access Mail.Read",
        "adele@contoso.com",
    )
    .await;
    let response = redeem(&c, &base, "organizations", &code, &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store, no-cache");
    assert_eq!(response.headers()["pragma"], "no-cache");
    let text = response.text().await.unwrap();
    let order: Vec<usize> = [
        "token_type",
        "scope",
        "expires_in",
        "ext_expires_in",
        "access_token",
        "refresh_token",
        "id_token",
    ]
    .iter()
    .map(|k| {
        text.find(&format!("\"{k}\""))
            .unwrap_or_else(|| panic!("{k} missing in {text}"))
    })
    .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "field order as captured: {text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(
        body["scope"], "profile openid email https://graph.microsoft.com/Mail.Read",
        "offline_access is never echoed (Microsoft Q&A 806413); the refresh token proves it"
    );
    assert!(body["refresh_token"].is_string());
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);

    let keys = jwks(&c, &base).await;
    let claims = verify(
        body["id_token"].as_str().unwrap(),
        &keys,
        APP,
        &format!("{base}/{CONTOSO}/v2.0"),
    );
    assert_eq!(claims["ver"], "2.0");
    assert_eq!(claims["tid"], CONTOSO);
    assert_eq!(claims["oid"], ADELE);
    assert_eq!(claims["preferred_username"], "adele@contoso.com");
    assert_eq!(claims["name"], "Adele Vance");
    assert_eq!(claims["email"], "adele@contoso.com");
    assert_eq!(claims["nonce"], "n-456");
    assert_ne!(claims["sub"], ADELE, "sub is pairwise, not the object id");
    for opaque in ["aio", "rh", "uti", "sid"] {
        assert!(
            claims[opaque].as_str().is_some_and(|s| !s.is_empty()),
            "{opaque}"
        );
    }
    let (iat, nbf, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["nbf"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert!(nbf <= iat && exp - iat == 3600);
    // The access token is Graph's, not the app's: aud Graph, signed with the same published keys.
    let at = verify(
        body["access_token"].as_str().unwrap(),
        &keys,
        "https://graph.microsoft.com",
        &format!("https://sts.windows.net/{CONTOSO}/"),
    );
    assert_eq!(at["scp"], "Mail.Read");
    assert_eq!(at["appid"], APP);
    assert_eq!(at["oid"], ADELE);
}

#[tokio::test]
async fn id_token_and_refresh_token_only_when_asked_and_email_only_when_the_user_has_mail() {
    let sim = start(true).await;
    let base = sim.base_url();
    let c = client();
    let code = auto_code(&c, &base, "organizations", "Mail.Read", "adele@contoso.com").await;
    let body: Value = redeem(&c, &base, "organizations", &code, &[])
        .await
        .json()
        .await
        .unwrap();
    assert!(body.get("id_token").is_none() && body.get("refresh_token").is_none());
    assert_eq!(body["scope"], "https://graph.microsoft.com/Mail.Read");

    let code = auto_code(
        &c,
        &base,
        "organizations",
        "openid profile email Mail.Read",
        "megan@contoso.com",
    )
    .await;
    let body: Value = redeem(&c, &base, "organizations", &code, &[])
        .await
        .json()
        .await
        .unwrap();
    let claims = verify(
        body["id_token"].as_str().unwrap(),
        &jwks(&c, &base).await,
        APP,
        &format!("{base}/{CONTOSO}/v2.0"),
    );
    assert!(claims.get("email").is_none(), "Megan has no mail");

    let code = auto_code(
        &c,
        &base,
        "organizations",
        "openid Mail.Read",
        "adele@contoso.com",
    )
    .await;
    let body: Value = redeem(&c, &base, "organizations", &code, &[])
        .await
        .json()
        .await
        .unwrap();
    let claims = verify(
        body["id_token"].as_str().unwrap(),
        &jwks(&c, &base).await,
        APP,
        &format!("{base}/{CONTOSO}/v2.0"),
    );
    assert!(
        claims.get("email").is_none() && claims.get("preferred_username").is_none(),
        "no email/profile scope"
    );
}

#[tokio::test]
async fn code_is_single_use_and_lives_ten_minutes() {
    let sim = start(true).await;
    let base = sim.base_url();
    let c = client();
    let code = auto_code(
        &c,
        &base,
        "organizations",
        "openid Mail.Read",
        "adele@contoso.com",
    )
    .await;
    assert_eq!(
        redeem(&c, &base, "organizations", &code, &[])
            .await
            .status(),
        200
    );
    assert_token_error(
        redeem(&c, &base, "organizations", &code, &[]).await,
        400,
        "invalid_grant",
        54005,
        &base,
    )
    .await;

    let code = auto_code(
        &c,
        &base,
        "organizations",
        "openid Mail.Read",
        "adele@contoso.com",
    )
    .await;
    control(&c, &base, "/_sim/clock/advance", json!({"seconds": 601})).await;
    assert_token_error(
        redeem(&c, &base, "organizations", &code, &[]).await,
        400,
        "invalid_grant",
        70008,
        &base,
    )
    .await;

    assert_token_error(
        redeem(&c, &base, "organizations", "0.Anot-a-code", &[]).await,
        400,
        "invalid_grant",
        70000,
        &base,
    )
    .await;
}

#[tokio::test]
async fn pkce_s256_and_plain_are_checked_and_redirect_uri_must_match() {
    let sim = start(true).await;
    let base = sim.base_url();
    let c = client();
    let url = format!("{base}/organizations/oauth2/v2.0/authorize");
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    // RFC 7636 appendix B: the S256 challenge of that verifier.
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let mut p = authorize_params("openid Mail.Read", Some("adele@contoso.com"));
    p.extend([
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ]);
    let code = as_map(&redirect_params(&get(&c, &url, &p).await))["code"].clone();
    assert_token_error(
        redeem(
            &c,
            &base,
            "organizations",
            &code,
            &[("code_verifier", "wrong-verifier-wrong-verifier-wrong-verif")],
        )
        .await,
        400,
        "invalid_grant",
        50148,
        &base,
    )
    .await;
    assert_token_error(
        redeem(&c, &base, "organizations", &code, &[]).await,
        400,
        "invalid_grant",
        50148,
        &base,
    )
    .await;
    let mut wrong_redirect = vec![
        ("grant_type", "authorization_code"),
        ("client_id", APP),
        ("client_secret", SECRET),
        ("code", code.as_str()),
        ("redirect_uri", "http://localhost:8400/other"),
        ("code_verifier", verifier),
    ];
    let r = c
        .post(format!("{base}/organizations/oauth2/v2.0/token"))
        .form(&wrong_redirect)
        .send()
        .await
        .unwrap();
    assert_token_error(r, 400, "invalid_grant", 500112, &base).await;
    wrong_redirect[4] = ("redirect_uri", REDIRECT);
    let r = c
        .post(format!("{base}/organizations/oauth2/v2.0/token"))
        .form(&wrong_redirect)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a failed attempt does not burn the code");

    let mut p = authorize_params("openid Mail.Read", Some("adele@contoso.com"));
    p.push((
        "code_challenge",
        "plain-challenge-plain-challenge-plain-challenge",
    ));
    let code = as_map(&redirect_params(&get(&c, &url, &p).await))["code"].clone();
    let ok = redeem(
        &c,
        &base,
        "organizations",
        &code,
        &[(
            "code_verifier",
            "plain-challenge-plain-challenge-plain-challenge",
        )],
    )
    .await;
    assert_eq!(
        ok.status(),
        200,
        "plain is assumed when the method is omitted"
    );
}

#[tokio::test]
async fn client_authentication_errors() {
    let sim = start(true).await;
    let base = sim.base_url();
    let c = client();
    let code = auto_code(
        &c,
        &base,
        "organizations",
        "openid Mail.Read",
        "adele@contoso.com",
    )
    .await;
    let token_url = format!("{base}/organizations/oauth2/v2.0/token");
    let wrong = [
        ("grant_type", "authorization_code"),
        ("client_id", APP),
        ("client_secret", "nope"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
    ];
    let r = c.post(&token_url).form(&wrong).send().await.unwrap();
    assert_token_error(r, 401, "invalid_client", 7000215, &base).await;
    let missing = [
        ("grant_type", "authorization_code"),
        ("client_id", APP),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
    ];
    let r = c.post(&token_url).form(&missing).send().await.unwrap();
    assert_token_error(r, 401, "invalid_client", 7000218, &base).await;
    // client_secret_basic works.
    let r = c
        .post(&token_url)
        .basic_auth(APP, Some(SECRET))
        .form(
            &missing[..1]
                .iter()
                .chain(&missing[2..])
                .cloned()
                .collect::<Vec<_>>(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let r = c
        .post(&token_url)
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", "00000000-0000-4000-8000-000000000000"),
            ("code", "x"),
            ("redirect_uri", REDIRECT),
        ])
        .send()
        .await
        .unwrap();
    assert_token_error(r, 400, "unauthorized_client", 700016, &base).await;
    let r = c
        .post(&token_url)
        .form(&[("grant_type", "password"), ("client_id", APP)])
        .send()
        .await
        .unwrap();
    assert_token_error(r, 400, "unsupported_grant_type", 70003, &base).await;
    let r = c
        .post(&token_url)
        .form(&[("client_id", APP)])
        .send()
        .await
        .unwrap();
    assert_token_error(r, 400, "invalid_request", 900144, &base).await;
    let r = c
        .post(&token_url)
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", PUBLIC_APP),
            ("client_secret", "x"),
            ("refresh_token", "y"),
        ])
        .send()
        .await
        .unwrap();
    assert_token_error(r, 400, "invalid_client", 700025, &base).await;
}

#[tokio::test]
async fn refresh_rotates_and_the_old_token_stays_valid() {
    let sim = start(true).await;
    let base = sim.base_url();
    let c = client();
    let code = auto_code(
        &c,
        &base,
        "organizations",
        "openid offline_access Mail.Read",
        "adele@contoso.com",
    )
    .await;
    let first: Value = redeem(&c, &base, "organizations", &code, &[])
        .await
        .json()
        .await
        .unwrap();
    let rt1 = first["refresh_token"].as_str().unwrap().to_owned();
    let second: Value = refresh(&c, &base, "organizations", &rt1, &[])
        .await
        .json()
        .await
        .unwrap();
    let rt2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rt1, rt2, "a new refresh token every time");
    assert!(second["id_token"].is_string(), "openid carried over");
    assert_eq!(
        second["scope"],
        "openid https://graph.microsoft.com/Mail.Read"
    );
    let third = refresh(&c, &base, CONTOSO, &rt1, &[]).await;
    assert_eq!(third.status(), 200, "the old refresh token is not revoked");
    // A scope that was never consented is a new consent.
    let r = refresh(
        &c,
        &base,
        "organizations",
        &rt2,
        &[(
            "scope",
            "https://graph.microsoft.com/Calendars.Read offline_access",
        )],
    )
    .await;
    let body = assert_token_error(r, 400, "invalid_grant", 65001, &base).await;
    assert_eq!(body["suberror"], "consent_required");
    // A tenant-specific authority of another tenant does not accept it.
    let r = refresh(&c, &base, FABRIKAM, &rt2, &[]).await;
    assert_token_error(r, 400, "invalid_grant", 70000, &base).await;
}

#[tokio::test]
async fn refresh_token_inactive_for_more_than_90_days_is_700082() {
    let sim = start(true).await;
    let base = sim.base_url();
    let c = client();
    let code = auto_code(
        &c,
        &base,
        "organizations",
        "openid offline_access Mail.Read",
        "adele@contoso.com",
    )
    .await;
    let body: Value = redeem(&c, &base, "organizations", &code, &[])
        .await
        .json()
        .await
        .unwrap();
    let rt = body["refresh_token"].as_str().unwrap();
    control(
        &c,
        &base,
        "/_sim/clock/advance",
        json!({"seconds": 89 * 86400}),
    )
    .await;
    let kept: Value = refresh(&c, &base, "organizations", rt, &[])
        .await
        .json()
        .await
        .unwrap();
    let fresh = kept["refresh_token"].as_str().unwrap();
    control(
        &c,
        &base,
        "/_sim/clock/advance",
        json!({"seconds": 2 * 86400}),
    )
    .await;
    let r = refresh(&c, &base, "organizations", rt, &[]).await;
    let body = assert_token_error(r, 400, "invalid_grant", 700082, &base).await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("inactive for 90.00:00:00")
    );
    assert_eq!(
        refresh(&c, &base, "organizations", fresh, &[])
            .await
            .status(),
        200,
        "the rotated token was active"
    );
}

#[tokio::test]
async fn revocation_sessions_50173_grants_65001_and_deleted_service_principal_700016() {
    let sim = start(true).await;
    let base = sim.base_url();
    let c = client();
    let scope = "openid offline_access Mail.Read";
    let rt = |body: Value| body["refresh_token"].as_str().unwrap().to_owned();

    let code = auto_code(&c, &base, "organizations", scope, "adele@contoso.com").await;
    let token = rt(redeem(&c, &base, "organizations", &code, &[])
        .await
        .json()
        .await
        .unwrap());
    control(
        &c,
        &base,
        "/_sim/revoke",
        json!({"tenantId": CONTOSO, "userId": "adele@contoso.com", "grants": false}),
    )
    .await;
    assert_token_error(
        refresh(&c, &base, "organizations", &token, &[]).await,
        400,
        "invalid_grant",
        50173,
        &base,
    )
    .await;

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let code = auto_code(&c, &base, "organizations", scope, "adele@contoso.com").await;
    let token = rt(redeem(&c, &base, "organizations", &code, &[])
        .await
        .json()
        .await
        .unwrap());
    control(
        &c,
        &base,
        "/_sim/revoke",
        json!({"tenantId": CONTOSO, "userId": ADELE, "sessions": false}),
    )
    .await;
    let body = assert_token_error(
        refresh(&c, &base, "organizations", &token, &[]).await,
        400,
        "invalid_grant",
        65001,
        &base,
    )
    .await;
    assert_eq!(body["suberror"], "consent_required");

    let code = auto_code(&c, &base, "organizations", scope, "adele@contoso.com").await;
    let token = rt(redeem(&c, &base, "organizations", &code, &[])
        .await
        .json()
        .await
        .unwrap());
    let r = c
        .post(format!(
            "{base}/_sim/tenants/{CONTOSO}/service-principal/delete"
        ))
        .json(&json!({"clientId": APP}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_token_error(
        refresh(&c, &base, "organizations", &token, &[]).await,
        400,
        "unauthorized_client",
        700016,
        &base,
    )
    .await;
    assert!(
        grants(&c, &base, CONTOSO).await["grants"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn key_rotation_signs_with_the_new_key_and_keeps_the_old_one_published() {
    let sim = start(true).await;
    let base = sim.base_url();
    let c = client();
    let code = auto_code(
        &c,
        &base,
        "organizations",
        "openid offline_access Mail.Read",
        "adele@contoso.com",
    )
    .await;
    let before: Value = redeem(&c, &base, "organizations", &code, &[])
        .await
        .json()
        .await
        .unwrap();
    let old_kid = jsonwebtoken::decode_header(before["id_token"].as_str().unwrap())
        .unwrap()
        .kid
        .unwrap();
    let rotated: Value = c
        .post(format!("{base}/_sim/keys/rotate"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_kid = rotated["kid"].as_str().unwrap();
    assert_ne!(new_kid, old_kid);
    let keys = jwks(&c, &base).await;
    let kids: Vec<&str> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [new_kid, old_kid.as_str()]);
    verify(
        before["id_token"].as_str().unwrap(),
        &keys,
        APP,
        &format!("{base}/{CONTOSO}/v2.0"),
    );
    let after: Value = refresh(
        &c,
        &base,
        "organizations",
        before["refresh_token"].as_str().unwrap(),
        &[],
    )
    .await
    .json()
    .await
    .unwrap();
    let token = after["id_token"].as_str().unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(token).unwrap().kid.unwrap(),
        new_kid
    );
    verify(token, &keys, APP, &format!("{base}/{CONTOSO}/v2.0"));
}

#[tokio::test]
async fn testing_helper_signs_in_through_the_html_pages() {
    let sim = start(false).await;
    let base = sim.base_url();
    let tokens =
        microsoft_sim::identity::testing::sign_in(&microsoft_sim::identity::testing::SignIn {
            base_url: &base,
            tenant: "organizations",
            client_id: APP,
            client_secret: Some(SECRET),
            redirect_uri: REDIRECT,
            login: "megan@contoso.com",
            scopes: "openid offline_access Mail.Read",
            consent_for_org: false,
            ca_pem: None,
        })
        .await
        .unwrap();
    assert_eq!(tokens.scope, "openid https://graph.microsoft.com/Mail.Read");
    let again = microsoft_sim::identity::testing::refresh(
        &base,
        "organizations",
        APP,
        Some(SECRET),
        tokens.refresh_token.as_deref().unwrap(),
        None,
    )
    .await
    .unwrap();
    assert!(again.refresh_token.is_some());
    let claims = sim
        .sim()
        .validate_access_token(&again.access_token)
        .unwrap();
    assert_eq!(claims.user_id, MEGAN);
}

/// The id_token's claims, unverified (the tests above verify signatures).
fn claims_of(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("b64"),
    )
    .expect("json")
}

#[tokio::test]
async fn wids_follow_group_membership_claims_and_organization_lists_verified_domains() {
    // Without groupMembershipClaims (the shared world): no wids, as Entra.
    let sim = start(true).await;
    let (base, c) = (sim.base_url(), client());
    let code = auto_code(
        &c,
        &base,
        "organizations",
        "openid profile User.Read",
        "adele@contoso.com",
    )
    .await;
    let body: Value = redeem(&c, &base, "organizations", &code, &[])
        .await
        .json()
        .await
        .unwrap();
    assert!(
        claims_of(body["id_token"].as_str().unwrap())
            .get("wids")
            .is_none()
    );

    // With DirectoryRole: the user's role template ids and the member role.
    let mut world: Value = serde_json::from_str(&world_json()).unwrap();
    world["apps"][0]["groupMembershipClaims"] = json!("DirectoryRole");
    let mut options = microsoft_sim::SimOptions::new(
        microsoft_sim::World::from_json(&world.to_string()).expect("world"),
    );
    options.auto_approve = true;
    let sim = microsoft_sim::SimServer::start(options).await.expect("sim");
    let base = sim.base_url();
    let member_role = "b79fbf4d-3ef9-4689-8143-76b194e85509";
    for (login, wids) in [
        (
            "adele@contoso.com",
            json!(["62e90394-69f5-4237-9190-012177145e10", member_role]),
        ),
        ("megan@contoso.com", json!([member_role])),
    ] {
        let code = auto_code(
            &c,
            &base,
            "organizations",
            "openid profile User.Read",
            login,
        )
        .await;
        let body: Value = redeem(&c, &base, "organizations", &code, &[])
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            claims_of(body["id_token"].as_str().unwrap())["wids"],
            wids,
            "{login}"
        );
        assert!(
            code.len() >= 1_100 && code.len() <= 1_300,
            "code length {}",
            code.len()
        );

        // GET /organization with the User.Read token: id, displayName and verifiedDomains only.
        let org: Value = c
            .get(format!("{base}/v1.0/organization"))
            .bearer_auth(body["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let org = &org["value"][0];
        assert_eq!(org["id"], CONTOSO);
        assert_eq!(org["displayName"], "Contoso");
        assert!(
            org["tenantType"].is_null(),
            "User.Read reads no other property"
        );
        assert_eq!(
            org["verifiedDomains"],
            json!([
                {"capabilities": "Email, OfficeCommunicationsOnline", "isDefault": true, "isInitial": false, "name": "contoso.com", "type": "Managed"},
                {"capabilities": "Email, OfficeCommunicationsOnline", "isDefault": false, "isInitial": true, "name": "t0d0f6f3e.onmicrosoft.com", "type": "Managed"}
            ])
        );
    }
    let anonymous = c
        .get(format!("{base}/v1.0/organization"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn keys_can_be_withdrawn_and_the_jwks_endpoint_taken_down() {
    let sim = start(true).await;
    let (base, c) = (sim.base_url(), client());
    let post = |path: &str, body: Value| c.post(format!("{base}{path}")).json(&body).send();
    let listed: Value = c
        .get(format!("{base}/_sim/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let old = listed["signing"].as_str().unwrap().to_owned();
    assert_eq!(
        post("/_sim/keys/withdraw", json!({"kid": old}))
            .await
            .unwrap()
            .status(),
        409
    );
    let rotated: Value = post("/_sim/keys/rotate", json!({}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        post("/_sim/keys/withdraw", json!({"kid": "nope"}))
            .await
            .unwrap()
            .status(),
        404
    );
    let withdrawn: Value = post("/_sim/keys/withdraw", json!({"kid": old}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(withdrawn["published"], json!([rotated["kid"]]));
    let kids: Vec<Value> = jwks(&c, &base).await["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].clone())
        .collect();
    assert_eq!(kids, [rotated["kid"].clone()]);

    post("/_sim/keys/outage", json!({"requests": 1}))
        .await
        .unwrap();
    let down = c
        .get(format!("{base}/common/discovery/v2.0/keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(down.status(), 503);
    let up = c
        .get(format!("{base}/common/discovery/v2.0/keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(up.status(), 200);
    let listed: Value = c
        .get(format!("{base}/_sim/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed["fetches"], 2,
        "the two successful JWKS documents served"
    );
}
