//! Messages of any size, a message the table refuses, and mail deleted while the delta
//! state was lost: the real mail-sync against microsoft-sim and moto (DynamoDB + S3).
//!
//! Bodies: the connector asks Graph for text (`Prefer: outlook.body-content-type="text"`)
//! and stores the text Graph serves, unchanged; the sim serves an HTML body as its
//! `html_to_text` (as Exchange does), so that is what must read back, byte for byte.

use anyhow::{Context, Result};
use connector_core::domain::{
    ActivityContent, ActivityId, CursorKind, ITEM_PARTICIPANTS, SyncKey, SyncKind,
};
use connector_core::ports::{ActivityStore, BodyStore, SyncStateStore};
use connector_core::sync::JobOutcome;
use microsoft_sim::graph::mail::text::html_to_text;
use serde_json::{Value, json};

use crate::matching::{expected, megan_crm, megan_folders};
use crate::support::*;

const DOMAIN: &str = "contoso.example";
const UPN: &str = "megan@contoso.example";

/// A 5 MB HTML body whose every paragraph differs (a cut or a shuffle shows), with
/// characters of 2, 3 and 4 UTF-8 bytes.
fn big_html() -> String {
    let mut html = String::from("<html><head><style>p{margin:0}</style></head><body>");
    let mut n = 0u32;
    while html.len() < 5 * 1024 * 1024 {
        html.push_str(&format!(
            "<p>Paragraph {n}: price €{n}.00 for Müller &amp; Søn — 数量 {n} 📎</p>"
        ));
        n += 1;
    }
    html.push_str("</body></html>");
    html
}

fn with(mut message: Value, field: &str, value: Value) -> Value {
    message[field] = value;
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_5_mb_body_1000_recipients_and_a_poison_message_all_import() -> Result<()> {
    let tenant = new_tenant();
    let megan = new_user();
    let html = big_html();
    let mut recipients: Vec<Value> = (0..999)
        .map(|i| who(&format!("person{i:04}@vendor{}.example", i % 37)))
        .collect();
    // The one CRM participant comes last: beyond what an item keeps of the list.
    recipients.push(who("jane@acme.example"));
    let poison_id = format!("<{}@test>", "p".repeat(450_000));
    let folders = json!([
        {"wellKnownName": "inbox", "displayName": "Inbox", "messages": [
            with(message("b01-big", "Proposal", "jane@acme.example", &[UPN], 2),
                 "body", json!({"contentType": "html", "content": html})),
            with(message("b02-many", "All hands", "news@vendor.example", &[UPN], 2),
                 "toRecipients", json!(recipients)),
            with(message("b03-poison", "Broken", "jane@acme.example", &[UPN], 3),
                 "internetMessageId", json!(poison_id)),
            message("b04-fine", "Fine", "jane@acme.example", &[UPN], 3),
            message("b05-also-fine", "Also fine", "someone@acme.example", &[UPN], 4),
            message("b06-unrelated", "Newsletter", "news@vendor.example", &[UPN], 4)
        ]},
        {"wellKnownName": "sentitems", "displayName": "Sent Items", "messages": []}
    ]);
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

    // One run imports everything but the poison message, and is done (no retry).
    assert_eq!(h.run(&key).await, JobOutcome::Done);
    let ids = h.stored_ids(&key).await?;
    let want: std::collections::BTreeSet<String> =
        ["b01-big", "b02-many", "b04-fine", "b05-also-fine"]
            .iter()
            .map(|k| format!("<{k}@test>"))
            .collect();
    assert_eq!(ids, want);

    // The 5 MB body reads back whole; the item itself holds none of it.
    let listed = h.stored(&key).await?;
    let listed_mail = |k: &str| {
        listed
            .iter()
            .find_map(|a| match &a.content {
                ActivityContent::Mail(m)
                    if m.internet_message_id.as_deref() == Some(&format!("<{k}@test>")) =>
                {
                    Some((a.activity_id.clone(), m.clone()))
                }
                _ => None,
            })
            .with_context(|| format!("{k} listed"))
    };
    let (big_id, big_item) = listed_mail("b01-big")?;
    let want_body = html_to_text(&html);
    assert!(want_body.len() > 4 * 1024 * 1024, "{}", want_body.len());
    assert!(big_item.body_text.is_empty(), "the item holds no body");
    let detail = big_item
        .detail
        .as_ref()
        .context("the item names its body")?;
    assert_eq!(detail.body_bytes, want_body.len() as u64);
    let whole = h
        .activities
        .get_activity(&key, &big_id)
        .await?
        .context("reads back")?;
    let ActivityContent::Mail(big) = &whole.content else {
        anyhow::bail!("mail");
    };
    assert_eq!(big.body_text.len(), want_body.len());
    assert!(
        big.body_text.as_bytes() == want_body.as_bytes(),
        "byte-exact"
    );

    // 1,000 recipients: the item keeps the first ITEM_PARTICIPANTS; the whole list and the
    // match on the last recipient read back.
    let (many_id, many_item) = listed_mail("b02-many")?;
    assert_eq!(many_item.participants.len(), ITEM_PARTICIPANTS);
    // From, sender (Graph repeats the author as sender) and the 1,000 recipients.
    assert_eq!(
        many_item.detail.as_ref().map(|d| d.participants),
        Some(1002)
    );
    let whole = h
        .activities
        .get_activity(&key, &many_id)
        .await?
        .context("reads back")?;
    let ActivityContent::Mail(many) = &whole.content else {
        anyhow::bail!("mail");
    };
    assert_eq!(
        many.participants.len(),
        1002,
        "from, sender, 1,000 recipients"
    );
    assert_eq!(
        many.participants.last().map(|p| p.address.as_str()),
        Some("jane@acme.example")
    );
    assert!(
        whole
            .matches
            .iter()
            .any(|m| m.participant == "jane@acme.example"),
        "{:?}",
        whole.matches
    );
    let body = h
        .bodies
        .get_body(&many_item.detail.as_ref().context("detail")?.key)
        .await?
        .context("the object")?;
    assert!(body.len() > 40_000, "the object holds the list");

    // The poison message: recorded (id and reason, nothing of its content), skipped; its
    // body object gone; the cursor moved past it.
    let meta = h.meta(&key).await?.context("meta")?;
    assert_eq!(meta.skipped.len(), 1, "{:?}", meta.skipped);
    let skipped = &meta.skipped[0];
    assert!(
        skipped.reason.contains("ValidationException"),
        "{}",
        skipped.reason
    );
    assert!(
        !skipped.reason.contains("ppppp"),
        "no content in the reason"
    );
    assert!(
        h.activities
            .get_activity(&key, &ActivityId::mail(&skipped.id))
            .await?
            .is_none()
    );
    assert_eq!(meta.last_run.stored, 4);
    assert_eq!(
        h.body_objects(&key).await?,
        4,
        "one object per stored message"
    );
    let sync_key = SyncKey::new(key.tenant_id.clone(), key.user_id.clone(), SyncKind::Mail);
    let inbox = h
        .state
        .list_cursors(&sync_key)
        .await?
        .into_iter()
        .find(|c| c.well_known_name.as_deref() == Some("inbox"))
        .context("the inbox cursor")?;
    assert_eq!(inbox.cursor_kind, Some(CursorKind::DeltaLink));
    assert!(
        !captured_logs().contains("ppppppppp"),
        "nothing of the poison message logged"
    );

    // Nothing changed: a second run stores nothing and keeps the record.
    assert_eq!(h.run(&key).await, JobOutcome::Done);
    let meta = h.meta(&key).await?.context("meta")?;
    assert_eq!(meta.last_run.stored, 0);
    assert_eq!(meta.skipped.len(), 1);

    // Mail deleted in Outlook takes its body with it.
    h.control(
        reqwest::Method::DELETE,
        &format!("/_sim/users/{UPN}/messages/{}", big.immutable_id),
        None,
    )
    .await?;
    assert_eq!(h.run(&key).await, JobOutcome::Done);
    assert!(h.activities.get_activity(&key, &big_id).await?.is_none());
    assert!(h.bodies.get_body(&detail.key).await?.is_none());
    assert_eq!(h.body_objects(&key).await?, 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mail_deleted_while_the_delta_state_was_lost_is_removed_and_counted_once() -> Result<()> {
    let tenant = new_tenant();
    let megan = new_user();
    let world = world(
        &tenant,
        DOMAIN,
        vec![user(&megan, UPN, "exchangeOnline", megan_folders())],
        vec![],
    );
    let h = Harness::start(tenant.clone(), world).await?;
    h.add_tenant(&[DOMAIN]).await?;
    h.import_crm(&megan_crm(&tenant)).await?;
    let key = h.connect(&megan, UPN).await?;
    assert_eq!(h.run(&key).await, JobOutcome::Done);
    assert_eq!(h.stored_ids(&key).await?, expected());
    assert_eq!(h.stored_by_runs(&key), expected().len() as u64);

    let listed = h.stored(&key).await?;
    let (gone, gone_body) = listed
        .iter()
        .find_map(|a| match &a.content {
            ActivityContent::Mail(m)
                if m.internet_message_id.as_deref() == Some("<m02-domain@test>") =>
            {
                Some((a.activity_id.clone(), m.detail.clone()?.key))
            }
            _ => None,
        })
        .context("m02 stored")?;

    // The sync state is lost (every delta token of the mailbox evicted); meanwhile a
    // message is deleted for good and a new match arrives.
    h.control(
        reqwest::Method::POST,
        &format!("/_sim/users/{UPN}/delta/evict"),
        Some(json!({})),
    )
    .await?;
    h.control(
        reqwest::Method::DELETE,
        &format!("/_sim/users/{UPN}/messages/{}", gone.immutable_id()),
        None,
    )
    .await?;
    h.control(
        reqwest::Method::POST,
        &format!("/_sim/users/{UPN}/messages"),
        Some(json!({"folder": "inbox", "message": message("n01-new-match", "New", "jane@acme.example", &[UPN], 0)})),
    )
    .await?;
    let runs_before = h.sink.runs.lock().map(|r| r.len()).unwrap_or(0);
    let outcomes = h.run_to_end(&key).await;
    assert_eq!(outcomes.last(), Some(&JobOutcome::Done), "{outcomes:?}");
    assert!(captured_logs().contains("delta state lost (410)"));

    let mut want = expected();
    want.remove("<m02-domain@test>");
    want.insert("<n01-new-match@test>".to_owned());
    assert_eq!(
        h.stored_ids(&key).await?,
        want,
        "the deleted message is gone, the rest stays"
    );
    assert!(h.activities.get_activity(&key, &gone).await?.is_none());
    assert!(h.bodies.get_body(&gone_body).await?.is_none());
    assert_eq!(h.body_objects(&key).await?, want.len() as u64);

    // The restart re-read every message; only the new one counts as stored.
    let runs = h
        .sink
        .runs
        .lock()
        .map(|r| r[runs_before..].to_vec())
        .unwrap_or_default();
    let stored: u64 = runs.iter().map(|r| r.stored).sum();
    let removed: u64 = runs.iter().map(|r| r.removed).sum();
    assert_eq!((stored, removed), (1, 1), "{runs:?}");
    assert_eq!(
        h.stored_by_runs(&key),
        want.len() as u64 + 1,
        "every message counted once"
    );

    // The folder cursors carry no pending reconciliation.
    let sync_key = SyncKey::new(key.tenant_id.clone(), key.user_id.clone(), SyncKind::Mail);
    for cursor in h.state.list_cursors(&sync_key).await? {
        assert_eq!(cursor.reconcile_before, None, "{}", cursor.folder_id);
    }
    Ok(())
}
