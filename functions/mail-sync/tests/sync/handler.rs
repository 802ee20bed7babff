//! The Lambda handler in-process, fed from `events/mail-sync/schedule.json` and `job.json`.

use std::time::Duration;

use anyhow::{Context, Result};
use connector_core::domain::{ConnectionStatus, StatusChange, UserSwitches};
use connector_core::messages::{SyncJob, SyncReason};
use connector_core::ports::ConnectionStore;
use serde_json::Value;
use tokio::time::Instant;

use crate::matching::{expected, megan_crm, megan_folders};
use crate::support::*;

const DOMAIN: &str = "contoso.example";

fn event(name: &str) -> Result<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../events/mail-sync")
        .join(name);
    Ok(serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| path.display().to_string())?,
    )?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedule_event_fans_out_and_job_event_imports() -> Result<()> {
    let tenant = new_tenant();
    let (megan, off, gone) = (new_user(), new_user(), new_user());
    let users = vec![
        user(
            &megan,
            "megan@contoso.example",
            "exchangeOnline",
            megan_folders(),
        ),
        user(
            &off,
            "off@contoso.example",
            "exchangeOnline",
            megan_folders(),
        ),
        user(
            &gone,
            "gone@contoso.example",
            "exchangeOnline",
            megan_folders(),
        ),
    ];
    let h = Harness::start(tenant.clone(), world(&tenant, DOMAIN, users, vec![])).await?;
    h.add_tenant(&[DOMAIN]).await?;
    h.import_crm(&megan_crm(&tenant)).await?;
    let megan = h.connect(&megan, "megan@contoso.example").await?;
    let off = h.connect(&off, "off@contoso.example").await?;
    let gone = h.connect(&gone, "gone@contoso.example").await?;
    h.connections
        .set_switches(
            &off,
            UserSwitches {
                mail_sync: false,
                ..UserSwitches::default()
            },
            time::OffsetDateTime::now_utc(),
        )
        .await?;
    h.connections
        .set_status(
            &gone,
            &StatusChange::new(
                ConnectionStatus::ReauthRequired,
                Some("invalid_grant"),
                time::OffsetDateTime::now_utc(),
            ),
        )
        .await?;

    // Schedule mode.
    let deadline = Instant::now() + Duration::from_secs(600);
    let report = mail_sync::handle(&h.app, event("schedule.json")?, deadline).await?;
    assert_eq!(report["enqueued"], 1, "{report}");
    assert_eq!(
        report["scanned"], 2,
        "only active connections are read: {report}"
    );
    assert_eq!(report["skipped"], 1, "{report}");
    let received = h
        .sqs
        .receive_message()
        .queue_url(&h.config.queues.mail_sync)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await?;
    let jobs: Vec<SyncJob> = received
        .messages()
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap_or_default()))
        .collect::<Result<_, _>>()?;
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (&jobs[0].user_id, jobs[0].reason),
        (&megan.user_id, SyncReason::Scheduled)
    );
    assert!(
        h.sink
            .fan_outs
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.enqueued == 1)
    );

    // Worker mode: the sample job, aimed at Megan.
    let response = mail_sync::handle(&h.app, job_for(&megan)?, deadline).await?;
    assert_eq!(response, serde_json::json!({"batchItemFailures": []}));
    assert_eq!(h.stored_ids(&megan).await?, expected());

    // Anything else is refused.
    assert!(
        mail_sync::handle(&h.app, serde_json::json!({"hello": "world"}), deadline)
            .await
            .is_err()
    );
    Ok(())
}

/// The job event of `key`'s mailbox, from `events/mail-sync/job.json`.
fn job_for(key: &connector_core::domain::UserKey) -> Result<Value> {
    let mut job = event("job.json")?;
    let mut body: Value =
        serde_json::from_str(job["Records"][0]["body"].as_str().context("body")?)?;
    body["tenantId"] = Value::from(key.tenant_id.as_str());
    body["userId"] = Value::from(key.user_id.as_str());
    job["Records"][0]["body"] = Value::from(body.to_string());
    Ok(job)
}

/// Issue 14: the administrator's email switch (written as `/admin` and the platform API
/// write it, `TenantStore::set_switches`) stops the next fan-out and a job already queued;
/// turned on again, the next fan-out and run import as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_administrators_email_switch_stops_fan_out_and_workers() -> Result<()> {
    use connector_core::ports::TenantStore as _;
    let tenant = new_tenant();
    let megan = new_user();
    let users = vec![user(
        &megan,
        "megan@contoso.example",
        "exchangeOnline",
        megan_folders(),
    )];
    let h = Harness::start(tenant.clone(), world(&tenant, DOMAIN, users, vec![])).await?;
    h.add_tenant(&[DOMAIN]).await?;
    h.import_crm(&megan_crm(&tenant)).await?;
    let megan = h.connect(&megan, "megan@contoso.example").await?;
    let switch = |on: bool| {
        let h = &h;
        let tenant = tenant.clone();
        async move {
            let mut switches = h
                .tenants
                .get_tenant(&tenant)
                .await?
                .context("tenant")?
                .switches;
            switches.mail_sync = on;
            h.tenants
                .set_switches(&tenant, switches, time::OffsetDateTime::now_utc())
                .await?;
            anyhow::Ok(())
        }
    };
    let deadline = Instant::now() + Duration::from_secs(600);

    switch(false).await?;
    let report = mail_sync::handle(&h.app, event("schedule.json")?, deadline).await?;
    assert_eq!(
        (report["enqueued"].as_u64(), report["scanned"].as_u64()),
        (Some(0), Some(1)),
        "{report}"
    );
    // A job queued before the switch: acknowledged, nothing read or stored.
    let response = mail_sync::handle(&h.app, job_for(&megan)?, deadline).await?;
    assert_eq!(response, serde_json::json!({"batchItemFailures": []}));
    assert!(h.stored_ids(&megan).await?.is_empty());

    switch(true).await?;
    let report = mail_sync::handle(&h.app, event("schedule.json")?, deadline).await?;
    assert_eq!(report["enqueued"], 1, "{report}");
    let response = mail_sync::handle(&h.app, job_for(&megan)?, deadline).await?;
    assert_eq!(response, serde_json::json!({"batchItemFailures": []}));
    assert_eq!(h.stored_ids(&megan).await?, expected());
    Ok(())
}
