//! The privacy promise, proved: unmatched messages carry unique markers in their subject,
//! addresses, names and body; after an import (and a run that sees one of them deleted),
//! no table item, no secret and no captured log line contains any marker.

use anyhow::Result;
use connector_core::sync::JobOutcome;
use serde_json::json;

use crate::matching::{expected, megan_crm, megan_folders};
use crate::support::*;

const DOMAIN: &str = "contoso.example";
const UPN: &str = "megan@contoso.example";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_of_a_discarded_message_is_stored_or_logged() -> Result<()> {
    let marker = format!(
        "privmark{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let subject_marker = format!("{marker}subject");
    let address_marker = format!("{marker}address");
    let name_marker = format!("{marker}name");
    let body_marker = format!("{marker}body");
    let unmatched = |key: &str, days: i64| {
        json!({
            "internetMessageId": format!("<{key}-{marker}@test>"),
            "subject": format!("Confidential {subject_marker} {key}"),
            "from": {"emailAddress": {"name": format!("Private {name_marker}"), "address": format!("{address_marker}@{marker}-home.example")}},
            "toRecipients": [{"emailAddress": {"name": "Megan", "address": UPN}}],
            "ccRecipients": [{"emailAddress": {"name": format!("Friend {name_marker}"), "address": format!("friend.{address_marker}@gmail.com")}}],
            "receivedDateTime": days_ago(days),
            "body": {"contentType": "html", "content": format!("<p>Personal {body_marker} text.</p>")}
        })
    };
    let mut folders = megan_folders();
    let inbox = folders[0]["messages"].as_array_mut().expect("inbox");
    inbox.push(unmatched("p01", 1));
    inbox.push(unmatched("p02", 2));
    let mut meeting = unmatched("p03", 2);
    meeting["@odata.type"] = json!("#microsoft.graph.eventMessageRequest");
    inbox.push(meeting);
    folders[4]["messages"]
        .as_array_mut()
        .expect("junk")
        .push(unmatched("p04", 1));
    folders[2]["messages"]
        .as_array_mut()
        .expect("drafts")
        .push(unmatched("p05", 1));

    let tenant = new_tenant();
    let megan = new_user();
    let world = world(
        &tenant,
        DOMAIN,
        vec![user(&megan, UPN, "exchangeOnline", folders)],
        vec![],
    );
    let h = Harness::start(tenant.clone(), world).await?;
    h.add_tenant(&[DOMAIN]).await?;
    h.import_crm(&megan_crm(&tenant)).await?;
    let key = h.connect(&megan, UPN).await?;
    assert_eq!(h.run(&key).await, JobOutcome::Done);
    assert_eq!(h.stored_ids(&key).await?, expected(), "matches were stored");

    // A live unmatched message, then its deletion: its id comes back as @removed.
    let added = h
        .control(
            reqwest::Method::POST,
            &format!("/_sim/users/{UPN}/messages"),
            Some(json!({"folder": "inbox", "message": unmatched("p06", 0)})),
        )
        .await?;
    assert_eq!(h.run(&key).await, JobOutcome::Done);
    let id = added["immutableId"].as_str().expect("id").to_owned();
    h.control(
        reqwest::Method::DELETE,
        &format!("/_sim/users/{UPN}/messages/{id}"),
        None,
    )
    .await?;
    assert_eq!(h.run(&key).await, JobOutcome::Done);
    let discarded_ids = [id];

    let mut haystacks: Vec<(String, String)> = Vec::new();
    // Every item of every table of the stack.
    for (name, table) in &h.stack.env {
        if !name.ends_with("_TABLE") {
            continue;
        }
        let mut start = None;
        loop {
            let page = h
                .dynamo
                .scan()
                .table_name(table)
                .set_exclusive_start_key(start.take())
                .send()
                .await?;
            for item in page.items() {
                haystacks.push((format!("table {name}"), format!("{item:?}")));
            }
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => break,
            }
        }
    }
    // Every secret.
    let mut token = None;
    loop {
        let page = h
            .secrets
            .list_secrets()
            .set_next_token(token.take())
            .send()
            .await?;
        for secret in page.secret_list() {
            let name = secret.name().unwrap_or_default().to_owned();
            if let Ok(value) = h.secrets.get_secret_value().secret_id(&name).send().await {
                haystacks.push((
                    format!("secret {name}"),
                    value.secret_string().unwrap_or_default().to_owned(),
                ));
            }
            haystacks.push((format!("secret {name} (metadata)"), format!("{secret:?}")));
        }
        match page.next_token() {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    // Every captured log line (tracing JSON, summaries, EMF).
    let logs = captured_logs();
    assert!(
        logs.contains("\"sync run\"") || logs.contains("\"outcome\":\"done\""),
        "logs were captured"
    );
    for line in logs.lines() {
        haystacks.push(("log".into(), line.to_owned()));
    }
    assert!(
        haystacks
            .iter()
            .any(|(place, _)| place.starts_with("table ACTIVITIES"))
    );
    assert!(
        haystacks
            .iter()
            .any(|(place, _)| place.starts_with("secret office365/"))
    );

    for (place, text) in &haystacks {
        let lower = text.to_lowercase();
        assert!(
            !lower.contains(&marker),
            "a marker leaked into {place}: {text}"
        );
        for id in &discarded_ids {
            assert!(
                !text.contains(id.as_str()),
                "a discarded message's id leaked into {place}"
            );
        }
    }
    Ok(())
}
