//! Entra never echoes `offline_access` in a token response's `scope`, even when it was
//! requested and granted (Microsoft Q&A 806413, a Microsoft moderator: "never returned as a
//! scope"), and `scope` itself is optional ("if omitted, the token is for the scopes
//! requested", v2-oauth2-auth-code-flow; both read 2026-12-05). microsoft-sim answers
//! either way. A sign-in either way must be a whole connection: active, its refresh token
//! stored as proof of offline access, its first import queued, and included by the next
//! scheduled fan-out. (teams-post's suite signs one user in each way and posts for both.)

mod support;

use connector_core::domain::{ConnectionStatus, Feature, Scope, SyncKind};
use connector_core::messages::SyncReason;
use serde_json::json;
use support::live::{Landing, Live, tenant_json};
use support::{guid, query};

#[tokio::test]
async fn sign_in_without_an_offline_access_echo_or_without_scope_is_a_working_connection() {
    let (tid, echoed, omitted) = (guid(), guid(), guid());
    let dns = format!("northwind{}.example", &guid()[..8]);
    let (echoed_upn, omitted_upn) = (format!("ines@{dns}"), format!("jon@{dns}"));
    let live = Live::start(
        true,
        vec![tenant_json(
            &tid,
            &dns,
            json!({"userConsent": "allowed"}),
            &[(&echoed, &echoed_upn, &[]), (&omitted, &omitted_upn, &[])],
        )],
    )
    .await;

    for (oid, upn, mode) in [
        (&echoed, &echoed_upn, "echo"),
        (&omitted, &omitted_upn, "omit"),
    ] {
        live.control("/_sim/token-scope", json!({ "mode": mode }))
            .await;
        let landed = live
            .browser()
            .open(&live.url(&format!("/auth/login?{}", query(&[("login_hint", upn)]))))
            .await;
        assert!(matches!(landed, Landing::App(_)), "{mode}: {landed:?}");

        let connection = live.connection(&tid, oid).await.expect("connection");
        assert_eq!(connection.status, ConnectionStatus::Active, "{mode}");
        for scope in [Scope::OfflineAccess, Scope::MailRead, Scope::OpenId] {
            assert!(
                connection.granted_scopes.contains(scope),
                "{mode}: {scope:?} in {:?}",
                connection.granted_scopes
            );
        }
        assert!(Feature::Mail.is_usable_with(&connection.granted_scopes));
        let token = live.token(&tid, oid).await.expect("refresh token stored");
        assert!(token.scopes.contains(Scope::OfflineAccess), "{mode}");

        let jobs = live.mail_jobs().await;
        assert_eq!(jobs.len(), 1, "{mode}: the first import is queued");
        assert_eq!(jobs[0].user_id.to_string(), *oid);
        assert_eq!(jobs[0].reason, SyncReason::Initial);
    }

    let report = live.fan_out(SyncKind::Mail).await;
    assert_eq!(report.enqueued, 2, "{report:?}");
    let mut fanned: Vec<String> = live
        .mail_jobs()
        .await
        .iter()
        .map(|job| job.user_id.to_string())
        .collect();
    fanned.sort();
    let mut expected = vec![echoed.clone(), omitted.clone()];
    expected.sort();
    assert_eq!(fanned, expected, "the next fan-out includes both users");
}
