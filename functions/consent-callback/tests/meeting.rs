//! The recording-consent page `/m/{token}` over real HTTP, on moto: what a guest sees,
//! answers by POST with the page's CSRF value only, the forward to the join URL, the
//! invite's link asking which invited address the guest is, and the pages for links that
//! open nothing.

mod support;

use connector_core::domain::meeting_consent::{
    Answer, ConsentMeeting, ConsentStatus, LinkToken, page_url,
};
use connector_core::domain::{ConsentMode, Tenant, TenantId, UserId, UserKey};
use connector_core::ports::{ConsentMeetingStore as _, TenantStore as _};
use reqwest::redirect::Policy;
use serde_json::json;
use support::guid;
use support::live::{Live, tenant_json};
use time::{Duration, OffsetDateTime};

const JOIN: &str = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_NjA2%40thread.v2/0";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

struct Page {
    status: u16,
    body: String,
    cookie: Option<String>,
    location: Option<String>,
    csp: String,
}

async fn read(response: reqwest::Response) -> Page {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let cookie = header("set-cookie").and_then(|c| {
        c.split(';')
            .next()
            .and_then(|pair| pair.strip_prefix("o365m="))
            .map(str::to_owned)
    });
    let (location, csp) = (header("location"), header("content-security-policy"));
    Page {
        status: response.status().as_u16(),
        cookie,
        location,
        csp: csp.unwrap_or_default(),
        body: response.text().await.expect("body"),
    }
}

async fn get(live: &Live, path: &str) -> Page {
    read(
        client()
            .get(format!("{}{path}", live.public))
            .send()
            .await
            .expect("GET"),
    )
    .await
}

/// A POST as our page's form sends it: the cookie, the hidden CSRF value, our Origin.
async fn post(live: &Live, path: &str, cookie: &str, form: &[(&str, &str)], origin: &str) -> Page {
    read(
        client()
            .post(format!("{}{path}", live.public))
            .header("cookie", format!("o365m={cookie}"))
            .header("origin", origin)
            .form(form)
            .send()
            .await
            .expect("POST"),
    )
    .await
}

fn path(token: &LinkToken) -> String {
    page_url("", token)
}

async fn seed(
    live: &Live,
    owner: &UserKey,
    event: &str,
    start: OffsetDateTime,
    guests: &[&str],
) -> ConsentMeeting {
    let now = OffsetDateTime::now_utc();
    let mut meeting = ConsentMeeting::new(
        owner,
        event,
        start,
        start + Duration::minutes(30),
        guests.iter().map(|g| (*g).to_owned()),
        now,
    );
    meeting.online_meeting_id = Some(format!("online-{event}"));
    meeting.join_url = Some(JOIN.to_owned());
    meeting.activate(now);
    live.consent_meetings
        .save_consent_meeting(&meeting, None)
        .await
        .expect("save")
        .expect("new")
}

async fn stored(live: &Live, meeting: &ConsentMeeting) -> ConsentMeeting {
    live.consent_meetings
        .get_consent_meeting(&meeting.owner(), &meeting.event_id)
        .await
        .expect("read")
        .expect("there")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_guest_answers_with_the_page_s_csrf_value_and_is_forwarded_either_way() {
    let tid = guid();
    let live = Live::start(
        false,
        vec![tenant_json(&tid, "contoso.example", json!({}), &[])],
    )
    .await;
    let tenant_id = TenantId::parse(&tid).expect("tid");
    let mut tenant = Tenant::new(
        tenant_id.clone(),
        ConsentMode::Preauthorized,
        OffsetDateTime::now_utc(),
    );
    tenant.display_name = Some("Contoso Ltd".into());
    live.tenants.put_tenant(&tenant).await.expect("tenant");
    let owner = UserKey::new(tenant_id, UserId::parse(&guid()).expect("oid"));
    let start =
        (OffsetDateTime::now_utc() + Duration::days(2)).replace_time(time::macros::time!(15:00));
    let meeting = seed(
        &live,
        &owner,
        "AAkALgAA-event-a",
        start,
        &["ann@fabrikam.example", "ben@fabrikam.example"],
    )
    .await;
    let other = seed(
        &live,
        &owner,
        "AAkALgAA-event-b",
        start + Duration::days(3),
        &["zed@tailspin.example"],
    )
    .await;
    let ann = path(&meeting.guests[0].token);

    // What the guest sees: the organization and the start, no attendee, nothing else.
    let page = get(&live, &ann).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Contoso Ltd"), "{}", page.body);
    assert!(
        page.body.contains(
            &start
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        ),
        "{}",
        page.body
    );
    for hidden in ["ann@", "ben@", "zed@", "tailspin", JOIN, "AAkALgAA"] {
        assert!(!page.body.contains(hidden), "{hidden} shown");
    }
    assert!(
        page.csp
            .contains("form-action 'self' https://teams.microsoft.com"),
        "{}",
        page.csp
    );
    let cookie = page.cookie.expect("the CSRF cookie");
    assert!(page.body.contains(&format!("value=\"{cookie}\"")));

    // Refused: no matching CSRF value, another origin; nothing recorded.
    let forged = LinkToken::generate();
    for (value, origin) in [
        (forged.expose(), live.public.as_str()),
        (cookie.as_str(), "https://evil.example"),
    ] {
        let refused = post(
            &live,
            &ann,
            &cookie,
            &[("csrf", value), ("answer", "do_not_record")],
            origin,
        )
        .await;
        assert_eq!(refused.status, 403, "{}", refused.body);
    }
    let missing_cookie = read(
        client()
            .post(format!("{}{ann}", live.public))
            .header("origin", &live.public)
            .form(&[("csrf", cookie.as_str()), ("answer", "record")])
            .send()
            .await
            .expect("POST"),
    )
    .await;
    assert_eq!(missing_cookie.status, 403);
    assert!(stored(&live, &meeting).await.guests[0].answer.is_none());

    // Declines: forwarded to the join URL, the answer stored.
    let answered = post(
        &live,
        &ann,
        &cookie,
        &[("csrf", &cookie), ("answer", "do_not_record")],
        &live.public,
    )
    .await;
    assert_eq!(answered.status, 303, "{}", answered.body);
    assert_eq!(answered.location.as_deref(), Some(JOIN));
    let after = stored(&live, &meeting).await;
    assert_eq!(after.guests[0].answer, Some(Answer::DoNotRecord));
    assert_eq!(after.guests[1].answer, None);

    // The invite's link asks who the guest is; an address not invited records nothing.
    let invite = path(&meeting.link_token);
    let page = get(&live, &invite).await;
    assert!(page.body.contains("name=\"address\""), "{}", page.body);
    let cookie = page.cookie.expect("cookie");
    let stranger = post(
        &live,
        &invite,
        &cookie,
        &[
            ("csrf", &cookie),
            ("address", "zed@tailspin.example"),
            ("answer", "record"),
        ],
        &live.public,
    )
    .await;
    assert_eq!(stranger.status, 200);
    assert!(
        stranger.body.contains("no answer was recorded"),
        "{}",
        stranger.body
    );
    assert_eq!(
        stored(&live, &other).await.guests[0].answer,
        None,
        "another meeting's guest"
    );
    let ben = post(
        &live,
        &invite,
        &cookie,
        &[
            ("csrf", &cookie),
            ("address", " Ben@Fabrikam.example "),
            ("answer", "record"),
        ],
        &live.public,
    )
    .await;
    assert_eq!(ben.status, 303);
    assert_eq!(
        stored(&live, &meeting).await.guests[1].answer,
        Some(Answer::Record)
    );

    // Links that open nothing: all alike, whatever the reason.
    let unknown = get(&live, &path(&LinkToken::generate())).await;
    let malformed = get(&live, "/m/not-a-token").await;
    assert_eq!((unknown.status, malformed.status), (404, 404));
    assert_eq!(unknown.body, malformed.body);
    // The other meeting's link shows that meeting's time only.
    let theirs = get(&live, &path(&other.guests[0].token)).await;
    assert!(
        !theirs.body.contains(
            &start
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        )
    );

    // Cancelled, and long past: clear pages, no form.
    live.consent_meetings
        .save_consent_meeting(
            &{
                let mut cancelled = other.clone();
                cancelled.status = ConsentStatus::Cancelled;
                cancelled
            },
            Some(&other),
        )
        .await
        .expect("save")
        .expect("saved");
    let cancelled = get(&live, &path(&other.guests[0].token)).await;
    assert_eq!(cancelled.status, 410);
    assert!(cancelled.body.contains("cancelled"));
    assert!(!cancelled.body.contains("<form"));
    let past = seed(
        &live,
        &owner,
        "AAkALgAA-event-c",
        OffsetDateTime::now_utc() - Duration::days(9),
        &["ann@fabrikam.example"],
    )
    .await;
    let expired = get(&live, &path(&past.link_token)).await;
    assert_eq!(expired.status, 410);
    assert!(expired.body.contains("expired"));
}
