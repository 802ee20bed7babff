//! One SQS batch of four calendars: a 401 mid-run (one refresh, then on), revoked sign-in
//! sessions (→ `reauth_required`), an on-premises mailbox (→ `mailbox_unsupported`), and a
//! healthy one: the right statuses, the others finished, no record kept for retry. And a
//! meeting the table refuses for good: recorded, skipped, the calendar not blocked.

use aws_lambda_events::event::sqs::SqsEvent;
use connector_core::domain::{ConnectionStatus, SyncStage, UserKey};
use connector_core::sync::JobOutcome;
use reqwest::Method;
use serde_json::json;
use time::OffsetDateTime;

use crate::support::*;

fn batch(harness: &Harness, keys: &[&UserKey]) -> SqsEvent {
    let records: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(n, key)| {
            json!({
                "messageId": format!("message-{n}"),
                "receiptHandle": format!("receipt-{n}"),
                "body": serde_json::to_string(&harness.job(key)).unwrap(),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_follow_microsofts_errors_and_other_users_finish() {
    let tenant = new_tenant();
    let (adele, ben, cara, olaf) = (new_user(), new_user(), new_user(), new_user());
    let now = OffsetDateTime::now_utc();
    let crm_meeting = |subject: &str, upn: &str| {
        meeting(
            subject,
            day(now, 3, 10),
            30,
            upn,
            vec![attendee("sam@acme.com", "required", "none")],
        )
    };
    let mut on_prem = user(&olaf, "olaf@contoso.com", vec![]);
    on_prem["mailbox"] = json!("onPremises");
    let world = world(
        &tenant,
        vec![
            user(
                &adele,
                "adele@contoso.com",
                vec![crm_meeting("Adele meets Acme", "adele@contoso.com")],
            ),
            user(
                &ben,
                "ben@contoso.com",
                vec![crm_meeting("Ben meets Acme", "ben@contoso.com")],
            ),
            user(
                &cara,
                "cara@contoso.com",
                vec![crm_meeting("Cara meets Acme", "cara@contoso.com")],
            ),
            on_prem,
        ],
    );
    let harness = Harness::start(tenant.clone(), world)
        .await
        .expect("harness");
    let adele = harness.connect(&adele, "adele@contoso.com").await.unwrap();
    let ben = harness.connect(&ben, "ben@contoso.com").await.unwrap();
    let cara = harness.connect(&cara, "cara@contoso.com").await.unwrap();
    let olaf = harness.connect(&olaf, "olaf@contoso.com").await.unwrap();

    harness
        .control(
            Method::POST,
            "/_sim/revoke",
            Some(
                json!({"tenantId": tenant.as_str(), "userId": cara.user_id.as_str(),
                        "grants": false, "sessions": true}),
            ),
        )
        .await
        .unwrap();
    harness
        .control(
            Method::POST,
            "/_sim/faults",
            Some(json!({"pathPrefix": "/v1.0/me/calendarView", "status": 401, "count": 1})),
        )
        .await
        .unwrap();

    let response = harness
        .app
        .jobs(
            batch(&harness, &[&adele, &ben, &cara, &olaf]),
            tokio::time::Instant::now() + std::time::Duration::from_secs(14 * 60),
        )
        .await;
    assert!(
        response.batch_item_failures.is_empty(),
        "status changes are final, not retries"
    );

    for (key, subject) in [(&adele, "Adele meets Acme"), (&ben, "Ben meets Acme")] {
        assert_eq!(
            harness.connection(key).await.unwrap().status,
            ConnectionStatus::Active
        );
        let stored = harness.stored_set(key).await.unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].0, subject);
    }
    let cara_now = harness.connection(&cara).await.unwrap();
    assert_eq!(cara_now.status, ConnectionStatus::ReauthRequired);
    assert_eq!(cara_now.status_reason.as_deref(), Some("AADSTS50173"));
    let olaf_now = harness.connection(&olaf).await.unwrap();
    assert_eq!(olaf_now.status, ConnectionStatus::MailboxUnsupported);
    assert_eq!(
        olaf_now.status_reason.as_deref(),
        Some("MailboxNotEnabledForRESTAPI")
    );
    assert!(harness.stored(&cara).await.unwrap().is_empty());
    assert!(harness.stored(&olaf).await.unwrap().is_empty());

    let runs = harness.sink.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 4);
    let unauthorized: u64 = harness
        .requests_since(0)
        .await
        .unwrap()
        .iter()
        .filter(|r| r["status"] == 401)
        .count() as u64;
    assert_eq!(unauthorized, 1, "the 401 was met once and refreshed past");
    // The fan-out now leaves the two out.
    let report = harness.app.schedule().await.unwrap();
    assert_eq!((report.scanned, report.enqueued), (2, 2));

    // A calendar scope no longer honoured (403 on a granted scope): consent revoked.
    harness
        .control(
            Method::POST,
            "/_sim/faults",
            Some(json!({"pathPrefix": "/v1.0/me/calendarView", "status": 403, "count": 1})),
        )
        .await
        .unwrap();
    assert_eq!(
        harness.run(&ben).await,
        connector_core::sync::JobOutcome::StatusChanged {
            status: ConnectionStatus::ConsentRevoked,
            reason: "graph_403_ErrorAccessDenied".into()
        }
    );
    assert_eq!(
        harness.stored_set(&ben).await.unwrap().len(),
        1,
        "what was imported stays until disconnection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meeting_the_table_refuses_is_recorded_and_skipped_and_the_rest_is_stored() {
    let tenant = new_tenant();
    let adele = new_user();
    let now = OffsetDateTime::now_utc();
    let acme = || vec![attendee("sam@acme.com", "required", "none")];
    // A subject past DynamoDB's 400 KB item limit: the one meeting no retry can store.
    let poison_subject = format!("Acme {}", "x".repeat(450_000));
    let world = world(
        &tenant,
        vec![user(
            &adele,
            "adele@contoso.com",
            vec![
                meeting(
                    "Acme kickoff",
                    day(now, 2, 10),
                    30,
                    "adele@contoso.com",
                    acme(),
                ),
                meeting(
                    &poison_subject,
                    day(now, 3, 10),
                    30,
                    "adele@contoso.com",
                    acme(),
                ),
                meeting(
                    "Acme review",
                    day(now, 4, 10),
                    30,
                    "adele@contoso.com",
                    acme(),
                ),
            ],
        )],
    );
    let harness = Harness::start(tenant, world).await.expect("harness");
    let key = harness.connect(&adele, "adele@contoso.com").await.unwrap();
    capture_logs();

    // One run: done, not retried; the two others stored.
    assert_eq!(harness.run(&key).await, JobOutcome::Done);
    let meetings = harness.meetings(&key).await.unwrap();
    let mut subjects: Vec<_> = meetings.values().map(|(m, _)| m.subject.clone()).collect();
    subjects.sort();
    assert_eq!(subjects, ["Acme kickoff", "Acme review"]);
    let summary = harness.sink.last_run();
    assert_eq!((summary.matched, summary.stored), (3, 2));

    // Recorded in the sync meta (what `connectorctl status` lists): its id and the
    // store's reason, nothing of its content; the calendar is idle, not failed.
    let meta = harness.meta(&key).await.unwrap().expect("meta");
    assert_eq!(meta.stage, SyncStage::Idle);
    assert_eq!(meta.skipped.len(), 1, "{:?}", meta.skipped);
    let skipped = &meta.skipped[0];
    assert!(!skipped.id.is_empty());
    assert!(
        skipped.reason.contains("ValidationException"),
        "{}",
        skipped.reason
    );
    assert!(!skipped.reason.contains("xxxx"));
    assert!(
        !captured_logs().contains("xxxx"),
        "nothing of the meeting logged"
    );

    // The next run starts from the delta link: nothing re-read, nothing blocked.
    assert_eq!(harness.run(&key).await, JobOutcome::Done);
    assert_eq!(harness.sink.last_run().stored, 0);
}
