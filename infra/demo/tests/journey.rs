//! The demo's journey, reduced (30 generated messages per folder instead of thousands):
//! the same driver as `make demo`, on its own stack, every step asserted by the driver and
//! the report checked here.

use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn the_reduced_demo_journey_completes_every_step() {
    let dir = local_stack::repo_root()
        .join("target/demo-test")
        .join(uuid::Uuid::new_v4().simple().to_string());
    let mut opts = demo::Options::new(dir.clone());
    opts.messages_per_folder = Some(30);
    opts.build = true;
    // 30 messages per folder drain in well under a minute once the functions are built.
    opts.drain_timeout = Duration::from_secs(240);
    let report = tokio::time::timeout(Duration::from_secs(1200), demo::run(&opts))
        .await
        .expect("the reduced demo finishes within 20 minutes")
        .unwrap_or_else(|e| panic!("demo failed: {e:#} (logs in {})", dir.display()));

    assert_eq!(
        report.users.len(),
        5,
        "every user of both tenants is reported"
    );
    for user in &report.users {
        assert_eq!(user.status, "active", "{user:?}");
        // 30 inbox + 30 sent generated, plus the hand-written inbox messages.
        assert!(user.scanned >= 60, "{user:?}");
        assert!(user.stored > 0 && user.discarded > 0, "{user:?}");
        assert!(user.meetings > 0, "{user:?}");
    }
    assert!(
        report.teams_message_url.contains("/v1.0/teams/"),
        "{}",
        report.teams_message_url
    );
    let rendered = report.render();
    for needle in [
        "admin consent for Contoso",
        "token response: scope without offline_access",
        "token response: no scope at all",
        "Need admin approval",
        "fired once",
        "make up",
    ] {
        assert!(
            rendered.contains(needle),
            "report lacks {needle:?}:\n{rendered}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
