//! The handler fed the sample events of `events/teams-post/` in-process, as `sam local
//! invoke -e` or `cargo lambda invoke --data-file` would, against moto and microsoft-sim
//! (a world with the events' tenant, users, team and channel ids). One test, so the
//! events' fixed tenant is not shared with another test of this process.

mod support;

use std::time::Duration;

use connector_core::teams::ShareTargetStore as _;
use support::*;
use teams_post::Outcome;
use teams_post::sanitize::Sanitizer;
use tokio::time::Instant;

#[tokio::test]
async fn every_sample_event_does_what_it_says() {
    let env = Env::start_for(EVENTS_TENANT, teams_post::Settings::default()).await;
    let run = |name: &'static str| {
        let env = &env;
        async move {
            let event = event_file(name);
            let report = env
                .poster
                .process(&event, Instant::now() + Duration::from_secs(60))
                .await;
            assert_eq!(report.outcomes.len(), event.records.len(), "{name}");
            (event, report)
        }
    };

    let (_, report) = run("refresh-targets").await;
    assert_eq!(
        report.outcomes[0].1,
        Outcome::TargetsRefreshed {
            teams: 1,
            channels: 3
        }
    );
    let targets = env
        .targets
        .get_targets(&env.user_key(ADELE))
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(targets.teams[0].id, SALES);

    let (event, report) = run("post-channel").await;
    let Outcome::Posted { message_id, .. } = &report.outcomes[0].1 else {
        panic!("{:?}", report.outcomes);
    };
    assert!(report.response().batch_item_failures.is_empty());
    let messages = env.sim_messages().await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["id"], message_id.as_str());
    assert_eq!(messages[0]["channelId"], GENERAL);
    let sent: serde_json::Value =
        serde_json::from_str(event.records[0].body.as_deref().expect("body")).expect("json");
    assert_eq!(
        messages[0]["content"],
        Sanitizer::new().clean(sent["html"].as_str().expect("html"))
    );
    assert!(
        !messages[0]["content"]
            .as_str()
            .unwrap_or_default()
            .contains("script")
    );
    // The same event again (a redelivery): acknowledged, not posted.
    let (_, again) = run("post-channel").await;
    assert!(matches!(
        &again.outcomes[0].1,
        Outcome::AlreadyPosted { message_id: id, .. } if id == message_id
    ));

    let (_, report) = run("new-chat").await;
    assert!(matches!(report.outcomes[0].1, Outcome::Posted { .. }));
    let chats = env.sim_chats().await;
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0]["id"], ADELE_MEGAN_CHAT);

    let (_, report) = run("post-chat").await;
    assert!(matches!(report.outcomes[0].1, Outcome::Posted { .. }));
    let messages = env.sim_messages().await;
    assert_eq!(messages.len(), 3);
    assert!(
        messages[1..]
            .iter()
            .all(|message| message["chatId"] == ADELE_MEGAN_CHAT)
    );
    assert!(
        !messages[2]["content"]
            .as_str()
            .unwrap_or_default()
            .contains("iframe")
    );

    for (name, code) in [
        ("post-too-large", "too_large"),
        ("malformed-json", "malformed_json"),
        ("unknown-kind", "unknown_kind"),
    ] {
        let (event, report) = run(name).await;
        assert!(
            matches!(&report.outcomes[0].1, Outcome::DeadLettered { code: c } if c.as_str() == code),
            "{name}: {:?}",
            report.outcomes
        );
        assert!(report.response().batch_item_failures.is_empty(), "{name}");
        let dead = env.dead_letters().await;
        let letter = dead
            .iter()
            .find(|letter| {
                letter.report.as_ref().map(|r| r.source_message_id.as_str())
                    == event.records[0].message_id.as_deref()
            })
            .unwrap_or_else(|| panic!("{name} not on the DLQ: {dead:?}"));
        assert_eq!(letter.report.as_ref().map(|r| r.code.as_str()), Some(code));
        assert_eq!(Some(letter.body.as_str()), event.records[0].body.as_deref());
    }
    assert_eq!(env.sim_messages().await.len(), 3);
}
