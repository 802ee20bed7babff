//! Issue 7's checks against moto and microsoft-sim: posts to a channel, a chat, a new 1:1
//! (the existing chat returned) and a new group chat appear exactly once each with the
//! sanitized HTML; redelivery and a crash before the acknowledgement post nothing twice;
//! messages that cannot be posted end on the DLQ with their reason while the rest of the
//! batch is posted; a 429 storm ends with every message posted once; share targets are
//! refreshed and stored; a revoked sign-in changes the connection status.

mod support;

use std::time::Duration;

use connector_core::domain::ConnectionStatus;
use connector_core::ports::TenantStore as _;
use connector_core::teams::idempotency::record_id;
use connector_core::teams::{IdempotencyStore as _, RecordState, ShareTargetStore as _};
use serde_json::{Value, json};
use support::*;
use teams_post::Outcome;
use teams_post::sanitize::Sanitizer;

fn posted_to<'a>(messages: &'a [Value], field: &str, value: &str) -> Vec<&'a Value> {
    messages
        .iter()
        .filter(|message| message[field] == value)
        .collect()
}

#[tokio::test]
async fn channel_chat_and_new_chat_posts_appear_once_with_sanitized_html() {
    let env = Env::start().await;
    // Megan starts a 1:1 with Adele first: Adele's newChat with Megan gets it back.
    env.send(&[env.post(
        "k-megan-first",
        MEGAN,
        new_chat(&[ADELE_UPN], None),
        "<p>Hello Adele</p>",
    )])
    .await;
    env.drain(Duration::from_secs(60)).await;
    let chats = env.sim_chats().await;
    assert_eq!(chats.len(), 1, "{chats:#?}");
    assert_eq!(chats[0]["id"], ADELE_MEGAN_CHAT);

    let channel_html = r#"<p>Deal <b>won</b> <img src="https://tracker.example/p.gif"><a href="javascript:alert(1)">x</a></p><script>steal()</script>"#;
    let one_on_one_html = "<p>Hi Megan <em>quick question</em></p><style>p{}</style>";
    let group_html = r#"<h2>Kick-off</h2><ul><li onclick="x()">Tuesday</li></ul>"#;
    env.send(&[
        env.post("k-channel", ADELE, channel(SALES, DEALS), channel_html),
        env.post(
            "k-new-1on1",
            ADELE,
            new_chat(&[MEGAN_UPN], None),
            one_on_one_html,
        ),
        env.post(
            "k-new-group",
            ADELE,
            new_chat(&[MEGAN_UPN, LEE], Some("Fabrikam deal")),
            group_html,
        ),
    ])
    .await;
    env.drain(Duration::from_secs(60)).await;

    let chats = env.sim_chats().await;
    assert_eq!(
        chats.len(),
        2,
        "the 1:1 was returned, not created: {chats:#?}"
    );
    let group = chats
        .iter()
        .find(|chat| chat["chatType"] == "group")
        .expect("group chat");
    assert_eq!(group["topic"], "Fabrikam deal");
    assert_eq!(group["members"].as_array().map(Vec::len), Some(3));
    let group_id = group["id"].as_str().expect("id").to_owned();

    let chat_html =
        "<p>Following up <s>today</s> tomorrow</p><iframe src=\"https://x.example\"></iframe>";
    env.send(&[
        env.post("k-chat", ADELE, chat(&group_id), chat_html),
        env.post(
            "k-new-1on1-again",
            ADELE,
            new_chat(&[MEGAN], None),
            "<p>second</p>",
        ),
    ])
    .await;
    env.drain(Duration::from_secs(60)).await;
    assert_eq!(
        env.sim_chats().await.len(),
        2,
        "the 1:1 is returned, not created again"
    );

    let sanitizer = Sanitizer::new();
    let messages = env.sim_messages().await;
    assert_eq!(messages.len(), 6, "{messages:#?}");
    let in_deals = posted_to(&messages, "channelId", DEALS);
    assert_eq!(in_deals.len(), 1);
    assert_eq!(in_deals[0]["teamId"], SALES);
    assert_eq!(in_deals[0]["contentType"], "html");
    assert_eq!(in_deals[0]["content"], sanitizer.clean(channel_html));
    assert_eq!(
        in_deals[0]["content"],
        r#"<p>Deal <b>won</b> <a rel="noopener noreferrer">x</a></p>"#
    );
    assert_eq!(in_deals[0]["senderId"], ADELE);

    let in_one_on_one = posted_to(&messages, "chatId", ADELE_MEGAN_CHAT);
    let contents: Vec<&str> = in_one_on_one
        .iter()
        .map(|message| message["content"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        contents,
        [
            "<p>Hello Adele</p>",
            "<p>Hi Megan <em>quick question</em></p>",
            "<p>second</p>"
        ]
    );
    let in_group = posted_to(&messages, "chatId", &group_id);
    assert_eq!(in_group.len(), 2);
    assert_eq!(in_group[0]["content"], sanitizer.clean(group_html));
    assert_eq!(in_group[1]["content"], sanitizer.clean(chat_html));

    // Each key's record is COMPLETED with the message Graph created.
    for (key, content) in [
        ("k-channel", sanitizer.clean(channel_html)),
        ("k-new-group", sanitizer.clean(group_html)),
        ("k-chat", sanitizer.clean(chat_html)),
    ] {
        let record = env
            .idempotency
            .get_record(&record_id(&env.tenant_id(), key))
            .await
            .expect("read")
            .expect("a record");
        let RecordState::Completed(result) = record.state else {
            panic!("{key} not completed: {record:?}");
        };
        let message = messages
            .iter()
            .find(|message| message["id"] == result.message_id.as_str())
            .unwrap_or_else(|| panic!("{key}: no message {}", result.message_id));
        assert_eq!(message["content"], content.as_str());
        assert!(
            result
                .web_url
                .as_deref()
                .is_some_and(|url| url.starts_with("https://teams.microsoft.com/l/message/")),
            "{result:?}"
        );
    }
    assert!(env.dead_letters().await.is_empty());
}

#[tokio::test]
async fn redelivery_and_a_crash_before_the_acknowledgement_post_once() {
    let env = Env::start().await;
    let body = env.post(
        "k-repeat",
        ADELE,
        channel(SALES, GENERAL),
        "<p>Renewal signed</p>",
    );
    // The same message delivered three times (a producer retrying, SQS at-least-once).
    env.send(&[body.clone(), body.clone(), body.clone()]).await;
    let reports = env.drain(Duration::from_secs(60)).await;
    let outcomes: Vec<&Outcome> = reports
        .iter()
        .flat_map(|report| report.outcomes.iter().map(|(_, outcome)| outcome))
        .collect();
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Posted { .. }))
            .count(),
        1
    );
    let already: Vec<&&Outcome> = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::AlreadyPosted { .. }))
        .collect();
    assert_eq!(already.len(), 2, "{outcomes:?}");
    let messages = env.sim_messages().await;
    assert_eq!(posted_to(&messages, "channelId", GENERAL).len(), 1);
    let Outcome::AlreadyPosted { message_id, .. } = already[0] else {
        unreachable!()
    };
    assert_eq!(message_id, messages[0]["id"].as_str().expect("id"));

    // A crash after posting, before Lambda deletes the message: the handler ran, its
    // answer never reached SQS. The message comes back (visibility timeout) and is
    // acknowledged without a second post.
    let crash = env.post(
        "k-crash",
        ADELE,
        channel(SALES, GENERAL),
        "<p>Crash test</p>",
    );
    env.send(std::slice::from_ref(&crash)).await;
    let event = env.receive().await;
    assert_eq!(event.records.len(), 1);
    let first = env
        .poster
        .process(
            &event,
            tokio::time::Instant::now() + Duration::from_secs(60),
        )
        .await;
    assert!(matches!(first.outcomes[0].1, Outcome::Posted { .. }));
    // No acknowledgement; the visibility timeout runs out (shortened here).
    env.sqs
        .change_message_visibility()
        .queue_url(env.queue_url())
        .receipt_handle(event.records[0].receipt_handle.clone().expect("receipt"))
        .visibility_timeout(0)
        .send()
        .await
        .expect("visibility");
    let reports = env.drain(Duration::from_secs(30)).await;
    assert!(matches!(
        reports[0].outcomes[0].1,
        Outcome::AlreadyPosted { .. }
    ));
    let crash_posts: Vec<Value> = env
        .sim_messages()
        .await
        .into_iter()
        .filter(|message| message["content"] == "<p>Crash test</p>")
        .collect();
    assert_eq!(crash_posts.len(), 1);

    // The same key with another payload is refused and dead-lettered, nothing posted.
    env.send(&[env.post(
        "k-repeat",
        ADELE,
        channel(SALES, GENERAL),
        "<p>Different text</p>",
    )])
    .await;
    env.drain(Duration::from_secs(30)).await;
    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), 1);
    let report = dead[0].report.as_ref().expect("a reason");
    assert_eq!(report.code, "idempotency_key_reused");
    assert_eq!(report.idempotency_key.as_deref(), Some("k-repeat"));
    assert_eq!(env.sim_messages().await.len(), 2);
}

#[tokio::test]
async fn a_crash_after_creating_a_group_chat_reuses_it() {
    let env = Env::start().await;
    // The first post into the new chat fails (503): the chat exists, the message does not.
    env.fault(json!({"method": "POST", "pathPrefix": "/v1.0/chats/19", "status": 503, "count": 1}))
        .await;
    env.send(&[env.post(
        "k-group-retry",
        ADELE,
        new_chat(&[MEGAN_UPN, LEE_UPN], Some("Pricing")),
        "<p>Pricing review</p>",
    )])
    .await;
    let reports = env.drain(Duration::from_secs(60)).await;
    let labels: Vec<&str> = reports
        .iter()
        .flat_map(|report| report.outcomes.iter().map(|(_, o)| o.label()))
        .collect();
    assert_eq!(labels, ["retry_later", "posted"]);
    let chats = env.sim_chats().await;
    assert_eq!(chats.len(), 1, "one group chat, not two: {chats:#?}");
    let messages = env.sim_messages().await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["chatId"], chats[0]["id"]);
    let record = env
        .idempotency
        .get_record(&record_id(&env.tenant_id(), "k-group-retry"))
        .await
        .expect("read")
        .expect("record");
    let RecordState::Completed(result) = record.state else {
        panic!("{record:?}");
    };
    assert_eq!(result.chat_id.as_deref(), chats[0]["id"].as_str());
}

#[tokio::test]
async fn unpostable_messages_go_to_the_dlq_with_their_reason_and_the_rest_is_posted() {
    let env = Env::start().await;
    let too_large = format!("<p>{}</p>", "Quarterly numbers ".repeat(1700));
    let bodies = vec![
        env.post("k-ok-1", ADELE, channel(SALES, GENERAL), "<p>first</p>"),
        env.post("k-large", ADELE, channel(SALES, GENERAL), &too_large),
        env.post(
            "k-not-member",
            ADELE,
            channel(ENGINEERING, BUILDS),
            "<p>x</p>",
        ),
        env.post("k-no-consent", BEN, channel(SALES, GENERAL), "<p>y</p>"),
        "{\"kind\": \"post\", \"idempotencyKey\": ".to_owned(),
        json!({"kind": "shout", "tenantId": env.tenant, "userId": ADELE}).to_string(),
        env.post("k-ok-2", ADELE, chat(ADELE_MEGAN_CHAT), "<p>second</p>"),
        env.post("k-ok-3", ADELE, channel(SALES, LEADERSHIP), "<p>third</p>"),
    ];
    // The 1:1 chat must exist for k-ok-2.
    env.send(&[env.post(
        "k-setup",
        ADELE,
        new_chat(&[MEGAN_UPN], None),
        "<p>setup</p>",
    )])
    .await;
    env.drain(Duration::from_secs(30)).await;
    env.send(&bodies).await;
    env.drain(Duration::from_secs(60)).await;

    let messages = env.sim_messages().await;
    let contents: Vec<&str> = messages
        .iter()
        .map(|message| message["content"].as_str().unwrap_or_default())
        .collect();
    for expected in ["<p>first</p>", "<p>second</p>", "<p>third</p>"] {
        assert_eq!(
            contents.iter().filter(|c| **c == expected).count(),
            1,
            "{contents:?}"
        );
    }
    assert_eq!(messages.len(), 4, "setup + three good ones: {contents:?}");

    let dead = env.dead_letters().await;
    let mut by_code: Vec<(String, String)> = dead
        .iter()
        .map(|letter| {
            let report = letter
                .report
                .as_ref()
                .expect("every dead letter has a reason");
            assert!(!report.reason.is_empty() && !report.source_message_id.is_empty());
            (report.code.clone(), letter.body.clone())
        })
        .collect();
    by_code.sort();
    let expected_codes = [
        "malformed_json",
        "no_teams_consent",
        "not_a_member",
        "too_large",
        "unknown_kind",
    ];
    assert_eq!(
        by_code
            .iter()
            .map(|(code, _)| code.as_str())
            .collect::<Vec<_>>(),
        expected_codes
    );
    // The original bodies, so a redrive re-posts them.
    for (code, body) in &by_code {
        let original = match code.as_str() {
            "malformed_json" => &bodies[4],
            "no_teams_consent" => &bodies[3],
            "not_a_member" => &bodies[2],
            "too_large" => &bodies[1],
            _ => &bodies[5],
        };
        assert_eq!(body, original, "{code}");
    }
    let large = dead
        .iter()
        .filter_map(|letter| letter.report.as_ref())
        .find(|report| report.code == "too_large")
        .expect("too_large");
    assert!(large.detail.contains("28672"), "{}", large.detail);
    assert_eq!(large.idempotency_key.as_deref(), Some("k-large"));
    assert_eq!(large.tenant_id.as_deref(), Some(env.tenant.as_str()));
    let member = dead
        .iter()
        .filter_map(|letter| letter.report.as_ref())
        .find(|report| report.code == "not_a_member")
        .expect("not_a_member");
    assert!(member.detail.contains("403"), "{}", member.detail);
    assert_eq!(env.queued().await, 0);
    // Not a member is about the target: the connection stays active.
    let adele = env.connection(ADELE).await;
    assert_eq!(adele.status, ConnectionStatus::Active);
}

#[tokio::test]
async fn a_429_storm_ends_with_every_message_posted_once() {
    let env = Env::start().await;
    env.send(&[env.post(
        "k-setup",
        ADELE,
        new_chat(&[MEGAN_UPN], None),
        "<p>setup</p>",
    )])
    .await;
    env.drain(Duration::from_secs(30)).await;

    // The next 12 channel posts and 6 chat posts are throttled, whatever they are.
    env.fault(json!({"method": "POST", "pathPrefix": "/v1.0/teams/", "status": 429, "count": 12, "retryAfter": 1}))
        .await;
    env.fault(json!({"method": "POST", "pathPrefix": "/v1.0/chats/19", "status": 429, "count": 6, "retryAfter": 1.5}))
        .await;
    let mut bodies = Vec::new();
    for n in 0..12 {
        let target = match n % 3 {
            0 => channel(SALES, GENERAL),
            1 => channel(SALES, DEALS),
            _ => chat(ADELE_MEGAN_CHAT),
        };
        bodies.push(env.post(
            &format!("k-storm-{n}"),
            ADELE,
            target,
            &format!("<p>storm {n}</p>"),
        ));
    }
    env.send(&bodies).await;
    let reports = env.drain(Duration::from_secs(180)).await;
    let labels: Vec<&str> = reports
        .iter()
        .flat_map(|report| report.outcomes.iter().map(|(_, o)| o.label()))
        .collect();
    assert!(labels.contains(&"retry_later"), "{labels:?}");
    assert!(!labels.contains(&"dead_lettered"), "{labels:?}");

    let messages = env.sim_messages().await;
    for n in 0..12 {
        let content = format!("<p>storm {n}</p>");
        assert_eq!(
            messages
                .iter()
                .filter(|message| message["content"] == content.as_str())
                .count(),
            1,
            "storm {n}"
        );
    }
    assert!(env.dead_letters().await.is_empty());
    // Only the injected 429s: our own pacing kept under the sim's 4 per second per channel.
    let throttled = env
        .sim_requests()
        .await
        .iter()
        .filter(|request| request["status"] == 429)
        .count();
    assert_eq!(throttled, 18);
}

#[tokio::test]
async fn many_posts_to_one_channel_stay_under_its_rate_limit() {
    let env = Env::start().await;
    let bodies: Vec<String> = (0..20)
        .map(|n| {
            env.post(
                &format!("k-burst-{n}"),
                ADELE,
                channel(SALES, GENERAL),
                &format!("<p>burst {n}</p>"),
            )
        })
        .collect();
    env.send(&bodies).await;
    let reports = env.drain(Duration::from_secs(120)).await;
    let labels: Vec<&str> = reports
        .iter()
        .flat_map(|report| report.outcomes.iter().map(|(_, o)| o.label()))
        .collect();
    assert_eq!(
        labels.iter().filter(|l| **l == "posted").count(),
        20,
        "{labels:?}"
    );
    let requests = env.sim_requests().await;
    assert!(
        requests.iter().all(|request| request["status"] != 429),
        "the sim throttled us"
    );
    // Arrival order within the channel is kept within a batch.
    let messages = env.sim_messages().await;
    assert_eq!(messages.len(), 20);
}

#[tokio::test]
async fn refresh_targets_stores_the_users_teams_and_channels() {
    let env = Env::start().await;
    env.send(&[env.refresh(ADELE), env.refresh(MEGAN)]).await;
    env.drain(Duration::from_secs(60)).await;

    let adele = env
        .targets
        .get_targets(&env.user_key(ADELE))
        .await
        .expect("read")
        .expect("refreshed");
    let shape: Vec<(String, Vec<String>)> = adele
        .teams
        .iter()
        .map(|team| {
            (
                team.display_name.clone(),
                team.channels
                    .iter()
                    .map(|c| c.display_name.clone())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [(
            "Sales".to_owned(),
            vec![
                "Deals".to_owned(),
                "General".to_owned(),
                "Leadership".to_owned()
            ]
        )]
    );
    let leadership = &adele.teams[0].channels[2];
    assert_eq!(leadership.id, LEADERSHIP);
    assert_eq!(leadership.membership_type.as_deref(), Some("private"));

    let megan = env
        .targets
        .get_targets(&env.user_key(MEGAN))
        .await
        .expect("read")
        .expect("refreshed");
    let names: Vec<&str> = megan
        .teams
        .iter()
        .map(|t| t.display_name.as_str())
        .collect();
    assert_eq!(names, ["Engineering", "Sales"]);
    assert_eq!(megan.channel_count(), 3, "Megan does not see Leadership");
    assert!(env.dead_letters().await.is_empty());
}

#[tokio::test]
async fn a_revoked_sign_in_marks_the_connection_and_dead_letters_the_post() {
    let env = Env::start().await;
    let before = env.post(
        "k-before",
        ADELE,
        channel(SALES, GENERAL),
        "<p>before revocation</p>",
    );
    env.send(std::slice::from_ref(&before)).await;
    env.drain(Duration::from_secs(30)).await;
    assert_eq!(env.sim_messages().await.len(), 1);
    env.control(
        reqwest::Method::POST,
        "/_sim/revoke",
        Some(json!({"tenantId": env.tenant, "userId": ADELE, "grants": false, "sessions": true})),
    )
    .await;
    env.send(&[env.post(
        "k-revoked",
        ADELE,
        channel(SALES, GENERAL),
        "<p>after revocation</p>",
    )])
    .await;
    env.drain(Duration::from_secs(30)).await;
    assert_eq!(
        env.sim_messages().await.len(),
        1,
        "nothing posted after the revocation"
    );
    let connection = env.connection(ADELE).await;
    assert_eq!(connection.status, ConnectionStatus::ReauthRequired);
    assert_eq!(connection.status_reason.as_deref(), Some("AADSTS50173"));
    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].report.as_ref().map(|r| r.code.as_str()),
        Some("reauth_required")
    );

    // Later posts for the user stop at the connection check, without calling Graph.
    let requests = env.sim_requests().await.len();
    env.send(&[env.post(
        "k-revoked-2",
        ADELE,
        channel(SALES, GENERAL),
        "<p>again</p>",
    )])
    .await;
    env.drain(Duration::from_secs(30)).await;
    assert_eq!(env.sim_requests().await.len(), requests);
    assert_eq!(env.dead_letters().await.len(), 2);

    // A repeat of the message posted before the revocation is still acknowledged as posted.
    env.send(&[before]).await;
    let reports = env.drain(Duration::from_secs(30)).await;
    assert!(matches!(
        reports[0].outcomes[0].1,
        Outcome::AlreadyPosted { .. }
    ));
    assert_eq!(env.dead_letters().await.len(), 2);
}

#[tokio::test]
async fn a_tenant_with_teams_sharing_off_posts_nothing_and_says_why() {
    let env = Env::start().await;
    let mut switches = env
        .tenants
        .get_tenant(&env.tenant_id())
        .await
        .expect("read")
        .expect("tenant")
        .switches;
    switches.teams_sharing = false;
    env.tenants
        .set_switches(&env.tenant_id(), switches, time::OffsetDateTime::now_utc())
        .await
        .expect("switch off");
    let body = env.post("k-off", ADELE, channel(SALES, GENERAL), "<p>off</p>");
    env.send(std::slice::from_ref(&body)).await;
    env.drain(Duration::from_secs(30)).await;
    assert!(env.sim_messages().await.is_empty(), "nothing reached Teams");
    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), 1);
    let report = dead[0].report.as_ref().expect("a reason");
    assert_eq!(report.code, "sharing_disabled");
    assert_eq!(dead[0].body, body, "the original, for a redrive");
    // The user's connection is not the problem: it stays active.
    let adele = env.connection(ADELE).await;
    assert_eq!(adele.status, ConnectionStatus::Active);
}
