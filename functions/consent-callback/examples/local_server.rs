//! Serves the handler over HTTP on 127.0.0.1 in front of moto and microsoft-sim (HTML mode,
//! one tenant with an administrator and a user), for the browser test and for looking at
//! the pages by hand. Prints one JSON line (`url`, `admin`, `user`, `tenant`, `app`,
//! `sim`, and `meeting`: a meeting of the user under Explicit Consent Mode, as
//! calendar-sync leaves it, with its Teams meeting at the sim: `guestLink`, `guest`,
//! `joinUrl`, `eventId`) and runs until its standard input closes.
//!
//! `cargo run -p consent-callback --example local_server`

#[path = "../tests/support/mod.rs"]
mod support;

use serde_json::json;
use std::io::Read as _;
use support::live::{Live, tenant_json};

#[tokio::main]
async fn main() {
    let tenant = uuid::Uuid::new_v4().to_string();
    let (admin, user) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let domain = "contoso.example";
    let (admin_upn, user_upn) = (format!("admin@{domain}"), format!("adele@{domain}"));
    let live = Live::start(
        false,
        vec![tenant_json(
            &tenant,
            domain,
            json!({"userConsent": "allowed"}),
            &[
                (&admin, &admin_upn, &["GlobalAdministrator"]),
                (&user, &user_upn, &[]),
            ],
        )],
    )
    .await;
    let meeting = consent_meeting(&live, &tenant, &user).await;
    println!(
        "{}",
        json!({"url": live.public, "admin": admin_upn, "user": user_upn, "tenant": tenant,
               "app": live.app_url, "sim": live.sim.base_url(), "meeting": meeting})
    );
    // Runs until whoever started it closes our standard input (or kills us).
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await;
    drop(live);
}

/// A meeting of `user` under Explicit Consent Mode, active, with one guest: its Teams
/// meeting made in the sim (its join page is the sim's), its record saved through the
/// connector's own store. The tenant gets its display name.
async fn consent_meeting(live: &Live, tenant: &str, user: &str) -> serde_json::Value {
    use connector_core::domain::meeting_consent::{ConsentMeeting, page_url};
    use connector_core::domain::{ConsentMode, Tenant, TenantId, UserId, UserKey};
    use connector_core::ports::{ConsentMeetingStore as _, TenantStore as _};
    use microsoft_sim::graph::online_meetings::{Meeting, Origin};
    let now = time::OffsetDateTime::now_utc();
    let tenant_id = TenantId::parse(tenant).expect("tid");
    let mut record = Tenant::new(tenant_id.clone(), ConsentMode::Preauthorized, now);
    record.display_name = Some("Contoso Ltd".into());
    live.tenants.put_tenant(&record).await.expect("tenant");
    let start = now + time::Duration::days(2);
    let end = start + time::Duration::minutes(30);
    let sim = live.sim.sim();
    let host = sim.user(tenant, user).expect("the user in the sim");
    let online = Meeting::new(
        &sim,
        &host,
        Some("Pricing review".into()),
        start,
        end,
        Origin::CreateOrGet,
    );
    sim.online_meetings.insert(online.clone());
    let owner = UserKey::new(tenant_id, UserId::parse(user).expect("oid"));
    let guest = "ann@fabrikam.example";
    let mut meeting = ConsentMeeting::new(
        &owner,
        "AAkALgAA-browser-meeting",
        start,
        end,
        [guest.to_owned()],
        now,
    );
    meeting.online_meeting_id = Some(online.id.clone());
    meeting.join_url = Some(online.join_web_url.clone());
    meeting.activate(now);
    let saved = live
        .consent_meetings
        .save_consent_meeting(&meeting, None)
        .await
        .expect("saved")
        .expect("new");
    json!({
        "guest": guest,
        "guestLink": page_url(&live.public, &saved.guests[0].token),
        "joinUrl": online.join_web_url,
        "eventId": saved.event_id,
        "tenant": tenant,
        "userId": user,
    })
}
