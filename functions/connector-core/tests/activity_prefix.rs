//! `ActivityStore::list_activities_with_prefix`: the DynamoDB adapter reads only the
//! prefix's range (meetings without the user's mail), pages through it, and agrees with the
//! trait's default (the in-memory store's filtering of the full listing).

use anyhow::Result;
use connector_core::adapters::dynamodb::DynamoActivityStore;
use connector_core::adapters::memory::MemoryActivityStore;
use connector_core::config::Tables;
use connector_core::domain::*;
use connector_core::ports::{ActivityStore, PageToken};
use time::macros::datetime;

fn owner(n: u32) -> UserKey {
    UserKey::new(
        TenantId::parse(&uuid::Uuid::new_v4().to_string()).expect("guid"),
        UserId::parse(&format!("00000000-0000-0000-0000-{n:012}")).expect("guid"),
    )
}

fn mail(owner: &UserKey, id: &str) -> Activity {
    Activity::new(
        owner.clone(),
        ActivityContent::Mail(MailActivity {
            immutable_id: id.to_owned(),
            internet_message_id: None,
            conversation_id: None,
            folder_id: "inbox".into(),
            subject: "Renewal".into(),
            participants: vec![],
            sent_at: None,
            received_at: None,
            body_preview: String::new(),
            body_text: "x".repeat(2_000),
            has_attachments: false,
            web_link: None,
            detail: None,
        }),
        vec![],
        datetime!(2026-03-01 9:00 UTC),
    )
}

fn meeting(owner: &UserKey, id: &str) -> Activity {
    Activity::new(
        owner.clone(),
        ActivityContent::Meeting(MeetingActivity {
            immutable_id: id.to_owned(),
            ical_uid: None,
            series_master_id: None,
            occurrence_start: None,
            subject: "Acme sync".into(),
            start: datetime!(2026-03-02 9:00 UTC),
            end: datetime!(2026-03-02 10:00 UTC),
            is_all_day: false,
            organizer: None,
            attendees: vec![],
            online_meeting_provider: None,
            join_url: None,
            location: None,
            show_as: None,
            is_cancelled: false,
            web_link: None,
        }),
        vec![],
        datetime!(2026-03-01 9:00 UTC),
    )
}

/// Every id the store lists under `prefix`, following pages of `page_size`.
async fn ids(
    store: &dyn ActivityStore,
    owner: &UserKey,
    prefix: &str,
    page_size: u32,
) -> Result<(Vec<String>, u32)> {
    let mut out = Vec::new();
    let mut token: Option<PageToken> = None;
    let mut pages = 0;
    loop {
        let page = store
            .list_activities_with_prefix(owner, prefix, page_size, token.as_ref())
            .await?;
        pages += 1;
        out.extend(page.items.into_iter().map(|a| a.activity_id.to_string()));
        match page.next {
            Some(next) => token = Some(next),
            None => return Ok((out, pages)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meetings_are_listed_without_the_mail() -> Result<()> {
    let stack = local_stack::test_stack().await?;
    let tables = Tables::from_lookup(|name| stack.env.get(name).cloned())?;
    let dynamo = DynamoActivityStore::new(
        aws_sdk_dynamodb::Client::new(&stack.sdk),
        &tables.activities,
    );
    let memory = MemoryActivityStore::default();
    let adele = owner(1);
    let ben = owner(2);
    let mut activities: Vec<Activity> =
        (0..30).map(|n| mail(&adele, &format!("m{n:02}"))).collect();
    activities.extend((0..7).map(|n| meeting(&adele, &format!("e{n:02}"))));
    activities.push(meeting(&ben, "e99"));
    for store in [&dynamo as &dyn ActivityStore, &memory] {
        store.upsert_activities(&activities).await?;
    }

    let expected: Vec<String> = (0..7).map(|n| format!("event#e{n:02}")).collect();
    let (listed, pages) = ids(&dynamo, &adele, "event#", 3).await?;
    assert_eq!(listed, expected);
    assert!(pages >= 3, "paged by 3: {pages}");
    let (listed, _) = ids(&memory, &adele, "event#", 3).await?;
    assert_eq!(listed, expected, "the default agrees");
    let (mail_ids, _) = ids(&dynamo, &adele, "mail#", 100).await?;
    assert_eq!(mail_ids.len(), 30);
    let (bens, _) = ids(&dynamo, &ben, "event#", 100).await?;
    assert_eq!(bens, ["event#e99"]);
    Ok(())
}
