//! The administrator's sync view (`/admin`) and the user's settings (`/me`), end to end: the
//! handler with its production adapters against moto (template.yaml's resources) and
//! microsoft-sim's HTML pages, driven like a browser. Each test asserts what the pages show
//! and what ended up stored.

mod support;

use connector_core::domain::{
    Activity, ActivityContent, ConnectionStatus, CrmMatch, CrmRecordKind, MailActivity,
    MatchReason, Participant, ParticipantRole, SyncFailure, SyncKey, SyncKind, SyncMeta, SyncStage,
    TenantId, UserId, UserKey,
};
use connector_core::ports::{ActivityStore as _, BodyStore as _, SyncStateStore as _};
use serde_json::json;
use support::guid;
use support::live::{
    Browser, Landing, Live, csrf, disconnect_from_me, get, post, sign_in, tenant_json,
};
use time::OffsetDateTime;

fn domain(prefix: &str) -> String {
    format!(
        "{prefix}{}.example",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

fn text(html: &str) -> String {
    support::html_forms::text(html)
}

fn mail_activity(owner: &UserKey, n: usize, upn: &str) -> Activity {
    Activity::new(
        owner.clone(),
        ActivityContent::Mail(MailActivity {
            immutable_id: format!("AAMk-{}-{n}", owner.user_id),
            internet_message_id: Some(format!("<m{n}@acme.com>")),
            conversation_id: None,
            folder_id: "inbox".into(),
            subject: format!("Renewal {n}"),
            participants: vec![
                Participant {
                    role: ParticipantRole::From,
                    address: "jane@acme.com".into(),
                    name: None,
                },
                Participant {
                    role: ParticipantRole::To,
                    address: upn.to_owned(),
                    name: None,
                },
            ],
            sent_at: Some(OffsetDateTime::now_utc()),
            received_at: None,
            body_preview: "preview".into(),
            body_text: "body".into(),
            has_attachments: false,
            web_link: None,
            detail: None,
        }),
        vec![CrmMatch {
            participant: "jane@acme.com".into(),
            reason: MatchReason::Address,
            record_kind: Some(CrmRecordKind::Contact),
            record_id: Some("003B".into()),
            matched_on: "jane@acme.com".into(),
        }],
        OffsetDateTime::now_utc(),
    )
}

fn key(tid: &str, oid: &str) -> UserKey {
    UserKey::new(
        TenantId::parse(tid).expect("tid"),
        UserId::parse(oid).expect("oid"),
    )
}

#[tokio::test]
async fn an_administrator_sees_their_own_tenant_only_and_changes_need_the_csrf_token() {
    let (tid_a, admin_a, user_a, member_a) = (guid(), guid(), guid(), guid());
    let (tid_b, admin_b, user_b) = (guid(), guid(), guid());
    let (dns_a, dns_b) = (domain("contoso"), domain("fabrikam"));
    let (admin_a_upn, user_a_upn, member_a_upn) = (
        format!("admin@{dns_a}"),
        format!("adele@{dns_a}"),
        format!("megan@{dns_a}"),
    );
    let (admin_b_upn, user_b_upn) = (format!("admin@{dns_b}"), format!("bianca@{dns_b}"));
    let live = Live::start(
        false,
        vec![
            tenant_json(
                &tid_a,
                &dns_a,
                json!({"userConsent": "allowed"}),
                &[
                    (&admin_a, &admin_a_upn, &["GlobalAdministrator"]),
                    (&user_a, &user_a_upn, &[]),
                    (&member_a, &member_a_upn, &[]),
                ],
            ),
            tenant_json(
                &tid_b,
                &dns_b,
                json!({"userConsent": "allowed"}),
                &[
                    (&admin_b, &admin_b_upn, &["GlobalAdministrator"]),
                    (&user_b, &user_b_upn, &[]),
                ],
            ),
        ],
    )
    .await;

    // One user of each tenant connects (the real sign-in), A's user has sync state.
    for upn in [&user_a_upn, &user_b_upn] {
        let browser = live.browser();
        let done = sign_in(
            &live,
            &browser,
            &format!("/auth/login?login_hint={upn}"),
            upn,
        )
        .await;
        assert!(matches!(done, Landing::App(_)), "{done:?}");
    }
    let now = OffsetDateTime::now_utc();
    let mut meta = SyncMeta::new(now);
    meta.stage = SyncStage::Idle;
    meta.last_success_at = Some(now);
    meta.totals.scanned = 42;
    meta.totals.stored = 7;
    meta.last_error = Some(SyncFailure {
        code: "graph_403_ErrorAccessDenied".into(),
        message: "denied".into(),
        at: now,
    });
    let mail_key = SyncKey::new(
        TenantId::parse(&tid_a).expect("tid"),
        UserId::parse(&user_a).expect("oid"),
        SyncKind::Mail,
    );
    live.sync.put_meta(&mail_key, &meta).await.expect("meta");

    // No session: the page sends the browser to sign in, changes are refused.
    let anonymous = live.browser();
    let (status, _, location) = get(&live, &anonymous, "/admin").await;
    assert_eq!(status, 302);
    assert_eq!(location.as_deref(), Some(live.url("/admin/login").as_str()));
    let (status, _) = post(
        &live,
        &anonymous,
        "/admin/switches",
        Some(&live.public),
        &[("csrf", "x")],
    )
    .await;
    assert_eq!(status, 403);

    // A's administrator: only A.
    let admin_a_browser = live.browser();
    let signed_in = sign_in(&live, &admin_a_browser, "/admin/login", &admin_a_upn).await;
    let (url, status, _) = signed_in.page();
    assert!(url.starts_with(&live.url("/auth/callback")), "{url}");
    assert_eq!(status, 200, "{}", signed_in.text());
    let (status, page_a, _) = get(&live, &admin_a_browser, "/admin").await;
    assert_eq!(status, 200, "{}", text(&page_a));
    let shown = text(&page_a);
    assert!(shown.contains(&user_a_upn), "{shown}");
    assert!(shown.contains(&tid_a), "{shown}");
    assert!(shown.contains("42 scanned, 7 stored"), "{shown}");
    assert!(shown.contains("graph_403_ErrorAccessDenied"), "{shown}");
    assert!(shown.contains("Grant consent again"), "{shown}");
    assert!(
        !shown.contains(&user_b_upn) && !shown.contains(&tid_b),
        "{shown}"
    );

    // B's administrator sees nothing of A.
    let admin_b_browser = live.browser();
    sign_in(&live, &admin_b_browser, "/admin/login", &admin_b_upn).await;
    let (status, page_b, _) = get(&live, &admin_b_browser, "/admin").await;
    assert_eq!(status, 200);
    let shown_b = text(&page_b);
    assert!(shown_b.contains(&user_b_upn), "{shown_b}");
    for of_a in [&user_a_upn, &admin_a_upn, &member_a_upn, &tid_a, &dns_a] {
        assert!(!shown_b.contains(of_a.as_str()), "{of_a} on B's page");
        assert!(!page_b.contains(of_a.as_str()), "{of_a} in B's markup");
    }

    // A member without an administrator role: 403 at sign-in and on the page.
    let member = live.browser();
    let refused = sign_in(&live, &member, "/admin/login", &member_a_upn).await;
    let (_, status, _) = refused.page();
    assert_eq!(status, 403);
    assert!(
        refused.text().contains("Global Administrator"),
        "{}",
        refused.text()
    );
    let user_browser = live.browser();
    sign_in(&live, &user_browser, "/me/login", &user_a_upn).await;
    let (status, body, _) = get(&live, &user_browser, "/admin").await;
    assert_eq!(status, 403, "{}", text(&body));
    assert!(text(&body).contains("does not hold"), "{}", text(&body));
    // Nor can that user's session change the tenant's switches with its own valid token.
    let (_, me_page, _) = get(&live, &user_browser, "/me").await;
    let user_token = csrf(&me_page, "/me/switches");
    let unchanged = live.tenant(&tid_a).await.expect("tenant A").switches;
    let (status, _) = post(
        &live,
        &user_browser,
        "/admin/switches",
        Some(&live.public),
        &[("csrf", &user_token)],
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        live.tenant(&tid_a).await.expect("tenant A").switches,
        unchanged
    );

    // Changes: without the token, with a foreign origin, with another session's token:
    // refused and nothing changed.
    let token_a = csrf(&page_a, "/admin/switches");
    let token_b = csrf(&page_b, "/admin/switches");
    let before = live.tenant(&tid_a).await.expect("tenant A").switches;
    for (origin, fields) in [
        (Some(live.public.as_str()), vec![("mail_sync", "on")]),
        (
            Some("https://evil.example"),
            vec![("csrf", token_a.as_str()), ("calendar_sync", "on")],
        ),
        (None, vec![("csrf", token_a.as_str())]),
        (Some("null"), vec![("csrf", token_a.as_str())]),
        (
            Some(live.public.as_str()),
            vec![("csrf", token_b.as_str()), ("calendar_sync", "on")],
        ),
    ] {
        let (status, body) =
            post(&live, &admin_a_browser, "/admin/switches", origin, &fields).await;
        assert_eq!(status, 403, "{}", text(&body));
        assert_eq!(
            live.tenant(&tid_a).await.expect("tenant A").switches,
            before
        );
    }
    // A GET never changes anything.
    let (status, _, _) = get(&live, &admin_a_browser, "/admin/switches").await;
    assert_eq!(status, 405);

    // The real form: email sync off, the rest as submitted; B untouched.
    let b_before = live.tenant(&tid_b).await.expect("tenant B").switches;
    let (status, _) = post(
        &live,
        &admin_a_browser,
        "/admin/switches",
        Some(&live.public),
        &[
            ("csrf", &token_a),
            ("calendar_sync", "on"),
            ("teams_sharing", "on"),
        ],
    )
    .await;
    assert_eq!(status, 303);
    let after = live.tenant(&tid_a).await.expect("tenant A").switches;
    assert!(!after.mail_sync && after.calendar_sync && after.teams_sharing);
    assert!(!after.explicit_consent);
    assert_eq!(
        live.tenant(&tid_b).await.expect("tenant B").switches,
        b_before
    );

    // B's administrator turning switches off changes B only, whatever the form says.
    let (status, _) = post(
        &live,
        &admin_b_browser,
        "/admin/switches",
        Some(&live.public),
        &[("csrf", &token_b), ("tenant", &tid_a)],
    )
    .await;
    assert_eq!(status, 303);
    let b_after = live.tenant(&tid_b).await.expect("tenant B").switches;
    assert!(!b_after.mail_sync && !b_after.calendar_sync);
    assert_eq!(live.tenant(&tid_a).await.expect("tenant A").switches, after);

    // Signing out ends the session.
    let (status, _) = post(
        &live,
        &admin_a_browser,
        "/auth/logout",
        Some(&live.public),
        &[("csrf", &token_a)],
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = get(&live, &admin_a_browser, "/admin").await;
    assert_eq!(status, 302);
}

/// A sync worker holds `lease` (it is mid-run) while the user, signed in to `/me` in
/// `browser`, disconnects: the answer's status and body.
async fn disconnect_while_a_sync_runs(
    live: &Live,
    browser: &Browser,
    lease: &SyncKey,
    upn: &str,
) -> (u16, String) {
    assert!(
        live.sync
            .acquire_lease(lease, "worker-1", std::time::Duration::from_secs(300))
            .await
            .expect("lease")
    );
    disconnect_from_me(live, browser, upn).await
}

/// Contoso with an administrator and Adele, who signed in (her connection is active) and
/// has two imported emails (with their bodies) and a mail sync meta.
struct Contoso {
    live: Live,
    /// Adele's browser, signed in to the app (not yet to `/me`).
    browser: Browser,
    tid: String,
    user: String,
    admin_upn: String,
    user_upn: String,
    owner: UserKey,
    mail: SyncKey,
}

impl Contoso {
    async fn start() -> Self {
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
        let browser = live.browser();
        let done = sign_in(
            &live,
            &browser,
            &format!("/auth/login?login_hint={user_upn}"),
            &user_upn,
        )
        .await;
        assert!(matches!(done, Landing::App(_)), "{done:?}");
        let owner = key(&tid, &user);
        live.activities
            .upsert_activities(&[
                mail_activity(&owner, 1, &user_upn),
                mail_activity(&owner, 2, &user_upn),
            ])
            .await
            .expect("activities");
        let mail = SyncKey::new(
            owner.tenant_id.clone(),
            owner.user_id.clone(),
            SyncKind::Mail,
        );
        live.sync
            .put_meta(&mail, &SyncMeta::new(OffsetDateTime::now_utc()))
            .await
            .expect("meta");
        Self {
            live,
            browser,
            tid,
            user,
            admin_upn,
            user_upn,
            owner,
            mail,
        }
    }
}

#[tokio::test]
async fn a_user_turns_calendar_sync_off_then_disconnects_and_their_data_is_gone() {
    let Contoso {
        live,
        browser,
        tid,
        user,
        admin_upn,
        user_upn,
        owner,
        mail: sync_key,
    } = Contoso::start().await;
    assert!(live.token(&tid, &user).await.is_some());

    // No session: sign in first.
    let (status, _, location) = get(&live, &live.browser(), "/me").await;
    assert_eq!((status, location), (302, Some(live.url("/me/login"))));

    sign_in(&live, &browser, "/me/login", &user_upn).await;
    let (status, page, _) = get(&live, &browser, "/me").await;
    assert_eq!(status, 200, "{}", text(&page));
    assert!(text(&page).contains(&user_upn));
    let token = csrf(&page, "/me/switches");

    // Calendar off, internal meetings on.
    let (status, _) = post(
        &live,
        &browser,
        "/me/switches",
        Some(&live.public),
        &[
            ("csrf", &token),
            ("mail_sync", "on"),
            ("internal_meetings", "on"),
        ],
    )
    .await;
    assert_eq!(status, 303);
    let switches = live
        .connection(&tid, &user)
        .await
        .expect("connection")
        .switches;
    assert!(switches.mail_sync && !switches.calendar_sync && switches.internal_meetings);

    // Where the administrator turned email sync off, the user's choice is shown disabled
    // and kept as it was.
    let admin_browser = live.browser();
    sign_in(&live, &admin_browser, "/admin/login", &admin_upn).await;
    let (_, admin_page, _) = get(&live, &admin_browser, "/admin").await;
    let admin_token = csrf(&admin_page, "/admin/switches");
    let (status, _) = post(
        &live,
        &admin_browser,
        "/admin/switches",
        Some(&live.public),
        &[("csrf", &admin_token), ("calendar_sync", "on")],
    )
    .await;
    assert_eq!(status, 303);
    let (_, page, _) = get(&live, &browser, "/me").await;
    assert!(text(&page).contains("Your administrator has turned this off"));
    let (status, _) = post(
        &live,
        &browser,
        "/me/switches",
        Some(&live.public),
        &[("csrf", &token), ("calendar_sync", "on")],
    )
    .await;
    assert_eq!(status, 303);
    let switches = live
        .connection(&tid, &user)
        .await
        .expect("connection")
        .switches;
    assert!(switches.mail_sync && switches.calendar_sync && !switches.internal_meetings);

    // Disconnect: refused without the token or without the confirmation, nothing deleted.
    let (status, _) = post(
        &live,
        &browser,
        "/me/disconnect",
        Some(&live.public),
        &[("confirm", "on")],
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = post(
        &live,
        &browser,
        "/me/disconnect",
        Some(&live.public),
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(status, 400);
    assert!(live.token(&tid, &user).await.is_some());
    assert_eq!(
        live.connection(&tid, &user)
            .await
            .expect("connection")
            .status,
        ConnectionStatus::Active
    );

    let (status, body) = post(
        &live,
        &browser,
        "/me/disconnect",
        Some(&live.public),
        &[("csrf", &token), ("confirm", "on")],
    )
    .await;
    assert_eq!(status, 200, "{}", text(&body));
    assert!(
        text(&body).contains("2 imported emails and meetings"),
        "{}",
        text(&body)
    );
    let gone = live.connection(&tid, &user).await.expect("tombstone");
    assert_eq!(gone.status, ConnectionStatus::Disconnected);
    assert!(gone.upn.is_empty());
    assert!(live.token(&tid, &user).await.is_none(), "token secret left");
    assert!(live.sync.get_meta(&sync_key).await.expect("read").is_none());
    let left = live
        .activities
        .list_activities(&owner, 100, None)
        .await
        .expect("list");
    assert!(left.items.is_empty(), "activities left");
    let (_, page, _) = get(&live, &browser, "/me").await;
    assert!(text(&page).contains("not connected"), "{}", text(&page));
}

/// `/admin`'s users table as text.
fn users_table(html: &str) -> String {
    let start = html.find("<table id=\"users\">").expect("users table");
    let end = start + html[start..].find("</table>").expect("end of table");
    text(&html[start..end])
}

#[tokio::test]
async fn a_disconnection_a_running_sync_stopped_stays_pending_until_the_user_finishes_it() {
    let Contoso {
        live,
        browser,
        tid,
        user,
        admin_upn,
        user_upn,
        owner,
        mail,
    } = Contoso::start().await;
    let prefix = connector_core::domain::user_body_prefix(&owner);
    assert_eq!(live.bodies.count_prefix(&prefix).await.expect("bodies"), 2);
    // A mail worker is in the middle of a run.
    let (status, body) = disconnect_while_a_sync_runs(&live, &browser, &mail, &user_upn).await;
    assert_eq!(status, 503, "{}", text(&body));
    assert!(
        text(&body).contains("not deleted yet") && text(&body).contains("Finish disconnecting"),
        "{}",
        text(&body)
    );
    let pending = live.connection(&tid, &user).await.expect("tombstone");
    assert_eq!(pending.status, ConnectionStatus::Disconnected);
    assert_eq!(pending.status_reason.as_deref(), Some("disconnect_pending"));
    assert!(live.token(&tid, &user).await.is_none(), "token secret left");
    assert_eq!(
        live.activities
            .list_activities(&owner, 100, None)
            .await
            .expect("list")
            .items
            .len(),
        2,
        "nothing deleted under the running sync"
    );

    // /me says what is done and what is not, and offers to finish.
    let (status, page, _) = get(&live, &browser, "/me").await;
    assert_eq!(status, 200);
    let shown = text(&page);
    assert!(
        shown.contains("has not finished")
            && shown.contains("sign-in token (refresh token) is deleted")
            && shown.contains("Not deleted yet")
            && shown.contains("the imported emails and meetings"),
        "{shown}"
    );
    assert!(!shown.contains("not connected"), "{shown}");
    let finish = csrf(&page, "/me/disconnect/finish");

    // /admin shows it as pending, never as deleted.
    let admin_browser = live.browser();
    sign_in(&live, &admin_browser, "/admin/login", &admin_upn).await;
    let (_, admin_page, _) = get(&live, &admin_browser, "/admin").await;
    let table = users_table(&admin_page);
    assert!(
        table.contains("disconnect_pending") && table.contains("has not finished"),
        "{table}"
    );
    assert!(!table.contains("their data was deleted"), "{table}");
    assert!(admin_page.contains("action=\"/admin/disconnect/finish\""));

    // The finish button needs the CSRF token, and while the sync runs it stays pending.
    let (status, _) = post(
        &live,
        &browser,
        "/me/disconnect/finish",
        Some(&live.public),
        &[],
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) = post(
        &live,
        &browser,
        "/me/disconnect/finish",
        Some(&live.public),
        &[("csrf", &finish)],
    )
    .await;
    assert_eq!(status, 503, "{}", text(&body));
    assert!(
        live.connection(&tid, &user)
            .await
            .is_some_and(|c| c.status_reason.as_deref() == Some("disconnect_pending"))
    );

    // The worker's run ends; the button finishes the disconnection.
    assert!(
        live.sync
            .release_lease(&mail, "worker-1")
            .await
            .expect("release")
    );
    let (status, body) = post(
        &live,
        &browser,
        "/me/disconnect/finish",
        Some(&live.public),
        &[("csrf", &finish)],
    )
    .await;
    assert_eq!(status, 200, "{}", text(&body));
    assert!(
        text(&body).contains("2 imported emails and meetings"),
        "{}",
        text(&body)
    );
    let gone = live.connection(&tid, &user).await.expect("tombstone");
    assert_eq!(gone.status, ConnectionStatus::Disconnected);
    assert_eq!(gone.status_reason.as_deref(), Some("operator_disconnected"));
    assert!(
        live.activities
            .list_activities(&owner, 100, None)
            .await
            .expect("list")
            .items
            .is_empty(),
        "activities left"
    );
    assert_eq!(live.bodies.count_prefix(&prefix).await.expect("bodies"), 0);
    assert!(live.sync.get_meta(&mail).await.expect("read").is_none());
    assert!(live.sync.get_lease(&mail).await.expect("read").is_none());

    let (_, page, _) = get(&live, &browser, "/me").await;
    assert!(text(&page).contains("not connected"), "{}", text(&page));
    let (_, admin_page, _) = get(&live, &admin_browser, "/admin").await;
    let table = users_table(&admin_page);
    assert!(
        table.contains("operator_disconnected") && table.contains("their data was deleted"),
        "{table}"
    );
    assert!(!admin_page.contains("action=\"/admin/disconnect/finish\""));
    // Nothing pending any more: the button changes nothing.
    let (status, _) = post(
        &live,
        &browser,
        "/me/disconnect/finish",
        Some(&live.public),
        &[("csrf", &finish)],
    )
    .await;
    assert_eq!(status, 303);
}

#[tokio::test]
async fn an_administrator_finishes_a_pending_disconnection_and_disconnects_nobody_else() {
    let (tid, admin, user, other) = (guid(), guid(), guid(), guid());
    let dns = domain("contoso");
    let (admin_upn, user_upn, other_upn) = (
        format!("admin@{dns}"),
        format!("adele@{dns}"),
        format!("alex@{dns}"),
    );
    let live = Live::start(
        false,
        vec![tenant_json(
            &tid,
            &dns,
            json!({"userConsent": "allowed"}),
            &[
                (&admin, &admin_upn, &["GlobalAdministrator"]),
                (&user, &user_upn, &[]),
                (&other, &other_upn, &[]),
            ],
        )],
    )
    .await;
    let browser = live.browser();
    for upn in [&user_upn, &other_upn] {
        let browser = live.browser();
        let done = sign_in(
            &live,
            &browser,
            &format!("/auth/login?login_hint={upn}"),
            upn,
        )
        .await;
        assert!(matches!(done, Landing::App(_)), "{done:?}");
    }
    let owner = key(&tid, &user);
    live.activities
        .upsert_activities(&[mail_activity(&owner, 1, &user_upn)])
        .await
        .expect("activities");
    let calendar = SyncKey::new(
        owner.tenant_id.clone(),
        owner.user_id.clone(),
        SyncKind::Calendar,
    );
    let (status, _) = disconnect_while_a_sync_runs(&live, &browser, &calendar, &user_upn).await;
    assert_eq!(status, 503);
    assert!(
        live.sync
            .release_lease(&calendar, "worker-1")
            .await
            .expect("release")
    );

    let admin_browser = live.browser();
    sign_in(&live, &admin_browser, "/admin/login", &admin_upn).await;
    let (_, admin_page, _) = get(&live, &admin_browser, "/admin").await;
    let token = csrf(&admin_page, "/admin/disconnect/finish");
    // An active user is not disconnected through this form, and an unknown id changes nothing.
    let stranger = guid();
    for target in [other.as_str(), stranger.as_str()] {
        let (status, _) = post(
            &live,
            &admin_browser,
            "/admin/disconnect/finish",
            Some(&live.public),
            &[("csrf", &token), ("user", target)],
        )
        .await;
        assert_eq!(status, 303);
    }
    assert_eq!(
        live.connection(&tid, &other).await.expect("other").status,
        ConnectionStatus::Active
    );
    assert!(live.token(&tid, &other).await.is_some());
    // A user's own settings session cannot use the administrator's form.
    let (_, page, _) = get(&live, &browser, "/me").await;
    let (status, _) = post(
        &live,
        &browser,
        "/admin/disconnect/finish",
        Some(&live.public),
        &[
            ("csrf", &csrf(&page, "/me/disconnect/finish")),
            ("user", &user),
        ],
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        live.connection(&tid, &user)
            .await
            .and_then(|c| c.status_reason),
        Some("disconnect_pending".into())
    );

    let (status, _) = post(
        &live,
        &admin_browser,
        "/admin/disconnect/finish",
        Some(&live.public),
        &[("csrf", &token), ("user", &user)],
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(
        live.connection(&tid, &user)
            .await
            .and_then(|c| c.status_reason),
        Some("operator_disconnected".into())
    );
    assert!(
        live.activities
            .list_activities(&owner, 10, None)
            .await
            .expect("list")
            .items
            .is_empty()
    );
    let (_, admin_page, _) = get(&live, &admin_browser, "/admin").await;
    assert!(users_table(&admin_page).contains("their data was deleted"));
}

/// Signing in again finishes a pending disconnection first: nothing disconnected is kept
/// under the new connection, and the new sign-in's token is not deleted by the old
/// disconnection's last steps. While the sync still runs, the sign-in stores nothing.
#[tokio::test]
async fn signing_in_again_finishes_a_pending_disconnection_first() {
    let Contoso {
        live,
        browser,
        tid,
        user,
        user_upn,
        owner,
        mail,
        ..
    } = Contoso::start().await;
    let prefix = connector_core::domain::user_body_prefix(&owner);
    let (status, _) = disconnect_while_a_sync_runs(&live, &browser, &mail, &user_upn).await;
    assert_eq!(status, 503);

    // The sync still runs: the sign-in is refused, and stores nothing.
    let again = sign_in(
        &live,
        &live.browser(),
        &format!("/auth/login?login_hint={user_upn}"),
        &user_upn,
    )
    .await;
    let (_, status, body) = again.page();
    assert_eq!(status, 503, "{}", text(body));
    assert!(text(body).contains("still finishing"), "{}", text(body));
    let pending = live.connection(&tid, &user).await.expect("tombstone");
    assert_eq!(pending.status_reason.as_deref(), Some("disconnect_pending"));
    assert!(live.token(&tid, &user).await.is_none(), "no token kept");

    // Once the run has ended, signing in deletes what was left, then connects afresh.
    assert!(
        live.sync
            .release_lease(&mail, "worker-1")
            .await
            .expect("release")
    );
    let again = sign_in(
        &live,
        &live.browser(),
        &format!("/auth/login?login_hint={user_upn}"),
        &user_upn,
    )
    .await;
    assert!(matches!(again, Landing::App(_)), "{again:?}");
    let connection = live.connection(&tid, &user).await.expect("connection");
    assert_eq!(connection.status, ConnectionStatus::Active);
    assert_eq!(connection.upn, user_upn);
    assert!(
        live.token(&tid, &user).await.is_some(),
        "the new token kept"
    );
    assert!(
        live.activities
            .list_activities(&owner, 100, None)
            .await
            .expect("list")
            .items
            .is_empty(),
        "the disconnected activities are gone"
    );
    assert_eq!(live.bodies.count_prefix(&prefix).await.expect("bodies"), 0);
    assert!(live.sync.get_meta(&mail).await.expect("meta").is_none());
}
