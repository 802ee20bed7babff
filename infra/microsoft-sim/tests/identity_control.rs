//! The control API and the Graph middleware S1 owns: the `Principal` extractor (401/403 shapes, live revocation,
//! expiry), faults, latency, the request log, gzip, and the clock.

mod identity_support;

use std::time::Duration;

use axum::Router;
use axum::routing;
use identity_support::*;
use microsoft_sim::graph::Principal;
use serde_json::{Value, json};
use tower::ServiceExt;

/// A Graph-style handler on the sim's own state, behind the real extractor.
async fn probe(
    sim: microsoft_sim::SharedSim,
    token: Option<&str>,
    scopes: &'static [&'static str],
) -> (u16, axum::http::HeaderMap, Value) {
    let app: Router = Router::new()
        .route(
            "/probe",
            routing::get(move |p: Principal| async move {
                match p.require_any(scopes) {
                    Ok(()) => axum::Json(
                        json!({"user": p.user_id, "tenant": p.tenant_id, "scopes": p.scopes}),
                    )
                    .into_response(),
                    Err(r) => r,
                }
            }),
        )
        .with_state(sim);
    let mut request = axum::http::Request::builder().uri("/probe");
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    let response = app
        .oneshot(request.body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, serde_json::from_slice(&bytes).unwrap())
}

use axum::response::IntoResponse;

fn assert_graph_error(
    status: u16,
    headers: &axum::http::HeaderMap,
    body: &Value,
    want_status: u16,
    code: &str,
) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], code);
    let inner = &body["error"]["innerError"];
    assert!(uuid::Uuid::parse_str(inner["request-id"].as_str().unwrap()).is_ok());
    assert!(inner["client-request-id"].is_string() && inner["date"].is_string());
    assert!(headers.contains_key("request-id") && headers.contains_key("client-request-id"));
}

async fn access_token(base: &str, login: &str, scope: &str) -> String {
    let c = client();
    let code = auto_code(&c, base, "organizations", scope, login).await;
    let body: Value = redeem(&c, base, "organizations", &code, &[])
        .await
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn principal_extractor_401_403_and_live_revocation() {
    let sim = start(true).await;
    let base = sim.base_url();
    let token = access_token(&base, "adele@contoso.com", "openid Mail.Read").await;

    let (s, h, b) = probe(sim.sim(), Some(&token), &["Mail.Read", "Mail.ReadWrite"]).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b,
        json!({"user": ADELE, "tenant": CONTOSO, "scopes": ["Mail.Read"]})
    );
    let _ = h;

    let (s, h, b) = probe(sim.sim(), Some(&token), &["Calendars.Read"]).await;
    assert_graph_error(s, &h, &b, 403, "ErrorAccessDenied");
    assert_eq!(
        b["error"]["message"],
        "Access is denied. Check credentials and try again."
    );

    for bad in [None, Some("not-a-jwt"), Some(&token[..token.len() - 4])] {
        let (s, h, b) = probe(sim.sim(), bad, &["Mail.Read"]).await;
        assert_graph_error(s, &h, &b, 401, "InvalidAuthenticationToken");
        assert!(
            h["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer realm=\"\"")
        );
    }

    // Revoking the grant kills the access token at once.
    let c = client();
    control(
        &c,
        &base,
        "/_sim/revoke",
        json!({"tenantId": CONTOSO, "userId": ADELE, "sessions": false}),
    )
    .await;
    let (s, h, b) = probe(sim.sim(), Some(&token), &["Mail.Read"]).await;
    assert_graph_error(s, &h, &b, 401, "InvalidAuthenticationToken");
}

#[tokio::test]
async fn access_tokens_expire_on_the_sim_clock() {
    let sim = start_with(true, Duration::from_secs(60)).await;
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
    let body: Value = redeem(&c, &base, "organizations", &code, &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["expires_in"], 60);
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(probe(sim.sim(), Some(token), &["Mail.Read"]).await.0, 200);
    control(&c, &base, "/_sim/clock/advance", json!({"seconds": 61})).await;
    let (s, h, b) = probe(sim.sim(), Some(token), &["Mail.Read"]).await;
    assert_graph_error(s, &h, &b, 401, "InvalidAuthenticationToken");
    assert_eq!(
        b["error"]["message"],
        "Lifetime validation failed, the token is expired."
    );
}

#[tokio::test]
async fn faults_latency_request_log_and_gzip_on_graph_routes() {
    let sim = start(true).await;
    let base = sim.base_url();
    let c = client();
    let token = access_token(&base, "adele@contoso.com", "openid Mail.Read").await;
    c.delete(format!("{base}/_sim/requests"))
        .send()
        .await
        .unwrap();

    let r = control(&c, &base, "/_sim/faults", json!({"method": "GET", "pathPrefix": "/v1.0/me/mailFolders", "status": 429, "count": 2, "retryAfter": 2.5})).await;
    assert_eq!(r.status(), 204);
    for _ in 0..2 {
        let r = c
            .get(format!("{base}/v1.0/me/mailFolders/inbox/messages/delta"))
            .bearer_auth(&token)
            .header("prefer", "odata.maxpagesize=50")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "2.5");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "TooManyRequests");
        assert_eq!(body["error"]["innerError"]["status"], "429");
    }
    let r = c
        .get(format!("{base}/v1.0/me/mailFolders/inbox/messages/delta"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 429, "the fault was used up");
    // Other methods and paths are not affected.
    control(
        &c,
        &base,
        "/_sim/faults",
        json!({"method": "POST", "pathPrefix": "/v1.0/me", "status": 503, "count": 1}),
    )
    .await;
    assert_ne!(
        c.get(format!("{base}/v1.0/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    let faults: Value = c
        .get(format!("{base}/_sim/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(faults.as_array().unwrap().len(), 1);
    c.delete(format!("{base}/_sim/faults"))
        .send()
        .await
        .unwrap();

    control(
        &c,
        &base,
        "/_sim/faults",
        json!({"pathPrefix": "/v1.0/", "status": 410, "count": 1}),
    )
    .await;
    let r = c
        .get(format!(
            "{base}/v1.0/me/mailFolders/inbox/messages/delta?$deltatoken=abc"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "SyncStateNotFound"
    );

    control(&c, &base, "/_sim/latency", json!({"ms": 300})).await;
    let started = std::time::Instant::now();
    c.get(format!("{base}/v1.0/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    control(&c, &base, "/_sim/latency", json!({"ms": 0})).await;

    let log: Value = c
        .get(format!("{base}/_sim/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = log["value"].as_array().unwrap();
    assert!(entries.len() >= 6);
    let first = &entries[0];
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/v1.0/me/mailFolders/inbox/messages/delta");
    assert_eq!(first["prefer"], json!(["odata.maxpagesize=50"]));
    assert_eq!(first["userId"], ADELE);
    assert_eq!(first["status"], 429);
    assert!(first["endMs"].as_u64().unwrap() >= first["startMs"].as_u64().unwrap());
    let with_query = entries.iter().find(|e| e["status"] == 410).unwrap();
    assert_eq!(with_query["query"], "$deltatoken=abc");
    assert!(
        !log.to_string().contains(&token),
        "tokens never appear in the log"
    );
    let since = entries.last().unwrap()["seq"].as_u64().unwrap();
    let tail: Value = c
        .get(format!("{base}/_sim/requests?since={since}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tail["value"].as_array().unwrap().len(), 1);

    // Graph answers are gzip-compressed when asked.
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let r = raw
        .get(format!("{base}/v1.0/nothing-here"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let r = raw
        .get(format!("{base}/v1.0/nothing-here"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("content-encoding").is_none());
    assert_eq!(r.status(), 400);
    let body = r.json::<Value>().await.unwrap();
    assert_eq!(body["error"]["code"], "BadRequest");
    assert_eq!(
        body["error"]["message"],
        "Resource not found for the segment 'nothing-here'."
    );
}

#[tokio::test]
async fn clock_and_consent_request_denial_and_manual_grants() {
    let sim = start(true).await;
    let base = sim.base_url();
    let c = client();
    let before: Value = c
        .get(format!("{base}/_sim/clock"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let after: Value = control(&c, &base, "/_sim/clock/advance", json!({"seconds": 86400}))
        .await
        .json()
        .await
        .unwrap();
    let parse = |v: &Value| {
        time::OffsetDateTime::parse(
            v["now"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    assert!(parse(&after) - parse(&before) >= time::Duration::days(1));
    assert_eq!(
        control(&c, &base, "/_sim/clock/advance", json!({"seconds": -5}))
            .await
            .status(),
        400
    );

    // A denied workflow request leaves the user blocked.
    get(
        &c,
        &format!("{base}/organizations/oauth2/v2.0/authorize"),
        &authorize_params("openid Mail.Read", Some("jon@fabrikam.com")),
    )
    .await;
    let requests: Value = c
        .get(format!("{base}/_sim/consent-requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = requests["value"][0]["id"].as_str().unwrap();
    assert_eq!(
        c.post(format!("{base}/_sim/consent-requests/{id}/deny"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.post(format!("{base}/_sim/consent-requests/{id}/approve"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert!(
        grants(&c, &base, FABRIKAM).await["grants"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // A request filed through the control API puts the user in the pending state (AADSTS90095).
    let r = control(&c, &base, "/_sim/consent-requests", json!({"tenantId": FABRIKAM, "clientId": APP, "user": "jon@fabrikam.com", "scopes": ["Calendars.Read"]})).await;
    assert_eq!(r.status(), 201);
    let r = get(
        &c,
        &format!("{base}/organizations/oauth2/v2.0/authorize"),
        &authorize_params("openid Calendars.Read", Some("jon@fabrikam.com")),
    )
    .await;
    assert_redirect_error(&redirect_params(&r), "access_denied", 90095, &base);

    // A grant added through the control API lets the user in.
    let r = control(&c, &base, "/_sim/grants", json!({"tenantId": FABRIKAM, "clientId": APP, "scopes": ["mail.read"], "principal": "jon@fabrikam.com"})).await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        grants(&c, &base, FABRIKAM).await["grants"][0],
        json!({"clientId": APP, "scopes": ["Mail.Read"], "principal": JON})
    );
    auto_code(
        &c,
        &base,
        "organizations",
        "openid Mail.Read",
        "jon@fabrikam.com",
    )
    .await;
}
