//! Explicit Consent Mode's store on moto: saves conditional on the version read (a second
//! writer loses and `consent_meetings::update` redoes its change on the new version),
//! links found by their token and only while the meeting holds them, the `due` range in
//! time order, activity listings that never see these items, and deletion with the user's
//! activities.

use anyhow::{Context, Result};
use connector_core::adapters::dynamodb::{DynamoActivityStore, DynamoConsentMeetingStore};
use connector_core::config::Tables;
use connector_core::consent_meetings::{apply_due, update};
use connector_core::domain::meeting_consent::{Answer, ConsentMeeting, LinkToken};
use connector_core::domain::*;
use connector_core::ports::{ActivityStore, ConsentMeetingStore};
use time::Duration;
use time::macros::datetime;

fn owner() -> UserKey {
    UserKey::new(
        TenantId::parse(&uuid::Uuid::new_v4().to_string()).expect("guid"),
        UserId::parse(&uuid::Uuid::new_v4().to_string()).expect("guid"),
    )
}

fn meeting(owner: &UserKey, event: &str, start: time::OffsetDateTime) -> ConsentMeeting {
    let now = datetime!(2026-12-06 09:00 UTC);
    let mut meeting = ConsentMeeting::new(
        owner,
        event,
        start,
        start + Duration::minutes(30),
        [
            "ann@fabrikam.example".to_owned(),
            "ben@northwind.example".to_owned(),
        ],
        now,
    );
    meeting.join_url = Some("https://teams.microsoft.com/l/meetup-join/x".into());
    meeting.activate(now);
    meeting
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_are_conditional_links_resolve_and_everything_goes_with_the_activities() -> Result<()>
{
    let stack = local_stack::test_stack().await?;
    let tables = Tables::from_lookup(|name| stack.env.get(name).cloned())?;
    let dynamo = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let store = DynamoConsentMeetingStore::new(dynamo.clone(), &tables.activities);
    let activities = DynamoActivityStore::new(dynamo, &tables.activities);
    let host = owner();
    let late = meeting(&host, "AAkALgAA-late", datetime!(2026-12-10 15:00 UTC));
    let soon = meeting(&host, "AAkALgAA-soon", datetime!(2026-12-07 10:00 UTC));
    let late = store
        .save_consent_meeting(&late, None)
        .await?
        .context("new")?;
    let soon = store
        .save_consent_meeting(&soon, None)
        .await?
        .context("new")?;
    assert_eq!(late.version, 1);
    // A second creation of the same meeting loses.
    assert!(store.save_consent_meeting(&late, None).await?.is_none());

    // Two writers from the same version: the second loses; update() redoes its change.
    let mut first = late.clone();
    first.answer(0, Answer::Record, datetime!(2026-12-06 10:00 UTC));
    let saved = store
        .save_consent_meeting(&first, Some(&late))
        .await?
        .context("saved")?;
    let mut second = late.clone();
    second.answer(1, Answer::DoNotRecord, datetime!(2026-12-06 10:01 UTC));
    assert!(
        store
            .save_consent_meeting(&second, Some(&late))
            .await?
            .is_none()
    );
    let merged = update(&store, &host, &late.event_id, |m| {
        m.answer(1, Answer::DoNotRecord, datetime!(2026-12-06 10:01 UTC))
    })
    .await?
    .context("there")?;
    assert_eq!(merged.version, saved.version + 1);
    assert_eq!(merged.guests[0].answer, Some(Answer::Record));
    assert_eq!(merged.guests[1].answer, Some(Answer::DoNotRecord));

    // Every link finds its meeting; a guest dropped loses theirs; a made-up one finds nothing.
    for token in merged.tokens().chain(soon.tokens()) {
        let found = store.find_consent_meeting(token).await?.context("found")?;
        assert!(found.holder(token).is_some());
    }
    let dropped = merged.guests[1].token.clone();
    let fewer = update(&store, &host, &late.event_id, |m| {
        m.set_guests(
            ["ann@fabrikam.example".to_owned()],
            datetime!(2026-12-06 11:00 UTC),
        );
        true
    })
    .await?
    .context("there")?;
    assert_eq!(fewer.guests.len(), 1);
    assert_eq!(
        fewer.guests[0].answer,
        Some(Answer::Record),
        "kept guests keep their answer"
    );
    assert!(store.find_consent_meeting(&dropped).await?.is_none());
    assert!(
        store
            .find_consent_meeting(&LinkToken::generate())
            .await?
            .is_none()
    );

    // Due in time order: first the requests (24 h before each start), then the decisions
    // (start - 60 s).
    let due = store
        .due_consent_meetings(datetime!(2026-12-31 00:00 UTC), 10)
        .await?;
    assert_eq!(
        due.iter().map(|(_, id)| id.as_str()).collect::<Vec<_>>(),
        ["AAkALgAA-soon", "AAkALgAA-late"]
    );
    assert!(
        store
            .due_consent_meetings(datetime!(2026-12-06 09:59 UTC), 10)
            .await?
            .is_empty()
    );
    assert_eq!(
        store
            .due_consent_meetings(datetime!(2026-12-06 10:00 UTC), 10)
            .await?
            .len(),
        1
    );
    // One thing per write: the request, then the decision.
    let requested = update(&store, &host, "AAkALgAA-soon", |m| {
        apply_due(m, datetime!(2026-12-07 09:59 UTC))
    })
    .await?
    .context("there")?;
    assert!(requested.requested_at.is_some() && requested.decision.is_none());
    let decided = update(&store, &host, "AAkALgAA-soon", |m| {
        apply_due(m, datetime!(2026-12-07 09:59 UTC))
    })
    .await?
    .context("there")?;
    assert!(decided.decision.is_some());
    assert_eq!(
        store
            .due_consent_meetings(datetime!(2026-12-31 00:00 UTC), 10)
            .await?
            .len(),
        1,
        "a decided meeting leaves the due range"
    );

    // Activity listings never see these items; deleting the activities deletes them.
    let listed = activities.list_activities(&host, 100, None).await?;
    assert!(listed.items.is_empty());
    assert_eq!(store.list_consent_meetings(&host).await?.len(), 2);
    activities.delete_all_activities(&host).await?;
    assert!(store.list_consent_meetings(&host).await?.is_empty());
    for token in fewer.tokens().chain(soon.tokens()) {
        assert!(store.find_consent_meeting(token).await?.is_none());
    }
    Ok(())
}
