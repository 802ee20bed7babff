//! A world that exercises every matching rule, the window and the folder rules: the exact
//! stored set, and what is stored of a match.

use std::collections::BTreeSet;

use anyhow::Result;
use connector_core::domain::{MatchReason, ParticipantRole, SyncStage};
use connector_core::sync::JobOutcome;
use serde_json::{Value, json};

use crate::support::*;

const DOMAIN: &str = "contoso.example";
const UPN: &str = "megan@contoso.example";

fn with(mut message: Value, field: &str, value: Value) -> Value {
    message[field] = value;
    message
}

/// The world: Megan's mailbox, one message per rule.
pub fn megan_folders() -> Value {
    let m = message;
    json!([
        {"wellKnownName": "inbox", "displayName": "Inbox", "messages": [
            m("m01-contact", "Contract", "jane@acme.example", &[UPN], 2),
            m("m02-domain", "Pricing", "someone@acme.example", &[UPN], 2),
            m("m03-subdomain", "EU office", "x@eu.mail.acme.example", &[UPN], 3),
            m("m04-lookalike", "Lookalike", "x@notacme.example", &[UPN], 3),
            m("m05-lead-case", "Lead", "  BOB.LEAD@GMAIL.COM ", &[UPN], 4),
            m("m06-freemail-account", "Free mail", "other@gmail.com", &[UPN], 4),
            m("m07-colleague", "Lunch", "alex@contoso.example", &[UPN], 5),
            m("m08-internal-contact", "Internal contact", "megan.colleague@contoso.example", &[UPN], 5),
            m("m09-to", "Proposal", UPN, &["jane@acme.example"], 6),
            with(m("m10-cc", "Cc", "nobody@vendor.example", &[UPN], 6), "ccRecipients", json!([who("jane@acme.example")])),
            with(m("m11-bcc", "Bcc", UPN, &["nobody@vendor.example"], 6), "bccRecipients", json!([who("jane@acme.example")])),
            with(m("m12-replyto", "Reply-To", "noreply@vendor.example", &[UPN], 7), "replyTo", json!([who("jane@acme.example")])),
            with(m("m13-sender", "On behalf", "assistant@vendor.example", &[UPN], 7), "sender", who("jane@acme.example")),
            with(m("m14-draft", "Draft", UPN, &["jane@acme.example"], 7), "isDraft", json!(true)),
            with(m("m15-meeting", "Meeting", "jane@acme.example", &[UPN], 8), "@odata.type", json!("#microsoft.graph.eventMessageRequest")),
            m("m16-public-suffix-account", "Globex", "x@london.globex.co.uk", &[UPN], 8),
            m("m17-public-suffix", "Other UK", "x@other.co.uk", &[UPN], 8),
            m("m18-in-window", "Within the opportunity", "jane@acme.example", &[UPN], 20),
            m("m19-before-window", "Too old", "jane@acme.example", &[UPN], 40),
            m("m20-own-address", "Own address", UPN, &["x@vendor.example"], 9),
            m("m21-lead-mixed", "Mixed case lead", "mixed@initech.example", &[UPN], 9),
            m("m22-unrelated", "Newsletter", "news@vendor.example", &[UPN], 1)
        ], "childFolders": [
            {"displayName": "Acme", "messages": [
                m("m23-child-folder", "In a child folder", "jane@acme.example", &[UPN], 3)
            ]}
        ]},
        {"wellKnownName": "sentitems", "displayName": "Sent Items", "messages": [
            m("m24-sent", "Sent", UPN, &["jane@acme.example"], 2)
        ]},
        {"wellKnownName": "drafts", "displayName": "Drafts", "messages": [
            m("m25-drafts-folder", "Unsent", UPN, &["jane@acme.example"], 2)
        ]},
        {"wellKnownName": "deleteditems", "displayName": "Deleted Items", "messages": [
            m("m26-deleted-folder", "Deleted", "jane@acme.example", &[UPN], 2)
        ]},
        {"wellKnownName": "junkemail", "displayName": "Junk Email", "messages": [
            m("m27-junk", "Junk", "jane@acme.example", &[UPN], 2)
        ]},
        {"displayName": "Customers", "messages": [
            m("m28-custom-folder", "Custom folder", "ceo@acme.example", &[UPN], 2)
        ]}
    ])
}

pub fn megan_crm(tenant: &connector_core::domain::TenantId) -> connector_core::domain::CrmSnapshot {
    let opportunity = (time::OffsetDateTime::now_utc() - time::Duration::days(30)).date();
    let closed = (time::OffsetDateTime::now_utc() - time::Duration::days(90)).date();
    crm(
        tenant,
        json!({
            "accounts": [
                {"id": "001A", "name": "Acme", "domains": ["acme.example"]},
                {"id": "001G", "name": "Globex UK", "domains": ["globex.co.uk"]},
                {"id": "001X", "name": "Gmail by mistake", "domains": ["gmail.com"]},
                {"id": "001Y", "name": "A public suffix by mistake", "domains": ["co.uk"]},
                {"id": "001Z", "name": "Ourselves", "domains": ["contoso.example"]}
            ],
            "contacts": [
                {"id": "003J", "email": "Jane@Acme.example", "accountId": "001A"},
                {"id": "003M", "email": "megan.colleague@contoso.example", "accountId": "001Z"},
                {"id": "003S", "email": "megan@contoso.example", "accountId": "001Z"}
            ],
            "leads": [
                {"id": "00Q1", "email": "bob.lead@gmail.com", "company": "Bob's"},
                {"id": "00Q2", "email": "Mixed@Initech.EXAMPLE", "company": "Initech"}
            ],
            "opportunities": [
                {"id": "0061", "accountId": "001A", "isClosed": false, "createdDate": format!("{opportunity}")},
                {"id": "0062", "accountId": "001A", "isClosed": true, "createdDate": format!("{closed}")}
            ]
        }),
    )
}

pub const EXPECTED: [&str; 15] = [
    "m01-contact",
    "m02-domain",
    "m03-subdomain",
    "m05-lead-case",
    "m09-to",
    "m10-cc",
    "m11-bcc",
    "m12-replyto",
    "m13-sender",
    "m16-public-suffix-account",
    "m18-in-window",
    "m21-lead-mixed",
    "m23-child-folder",
    "m24-sent",
    "m28-custom-folder",
];

pub fn expected() -> BTreeSet<String> {
    EXPECTED.iter().map(|k| format!("<{k}@test>")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_matching_rule_gives_the_exact_stored_set() -> Result<()> {
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

    // What is stored of a match.
    let mail = h.stored_mail(&key).await?;
    let cc = mail
        .iter()
        .find(|m| m.internet_message_id.as_deref() == Some("<m10-cc@test>"))
        .expect("m10 stored");
    assert_eq!(cc.subject, "Cc");
    assert_eq!(cc.body_text.trim(), "Body of m10-cc.");
    assert!(cc.body_preview.contains("Body of m10-cc"));
    assert!(
        cc.immutable_id.starts_with("AAkALgAA"),
        "an immutable id: {}",
        cc.immutable_id
    );
    assert!(cc.sent_at.is_some() && cc.received_at.is_some() && cc.web_link.is_some());
    assert!(cc.conversation_id.is_some());
    assert!(
        cc.participants
            .iter()
            .any(|p| p.role == ParticipantRole::Cc && p.address == "jane@acme.example")
    );
    let activities = h.stored(&key).await?;
    let reasons = |key: &str| -> BTreeSet<(MatchReason, String)> {
        activities
            .iter()
            .find(|a| matches!(&a.content, connector_core::domain::ActivityContent::Mail(m) if m.internet_message_id.as_deref() == Some(key)))
            .map(|a| a.matches.iter().map(|m| (m.reason, m.matched_on.clone())).collect())
            .unwrap_or_default()
    };
    assert_eq!(
        reasons("<m01-contact@test>"),
        BTreeSet::from([
            (MatchReason::Address, "jane@acme.example".to_owned()),
            (MatchReason::AccountDomain, "acme.example".to_owned())
        ])
    );
    assert_eq!(
        reasons("<m05-lead-case@test>"),
        BTreeSet::from([(MatchReason::Address, "bob.lead@gmail.com".to_owned())])
    );
    assert_eq!(
        reasons("<m03-subdomain@test>"),
        BTreeSet::from([(MatchReason::AccountDomain, "acme.example".to_owned())])
    );
    let child = mail
        .iter()
        .find(|m| m.internet_message_id.as_deref() == Some("<m23-child-folder@test>"))
        .expect("m23 stored");
    let inbox = mail
        .iter()
        .find(|m| m.internet_message_id.as_deref() == Some("<m01-contact@test>"))
        .expect("m01 stored");
    assert_ne!(
        child.folder_id, inbox.folder_id,
        "stored with its own folder"
    );

    // The run's figures and state.
    let meta = h.meta(&key).await?.expect("meta");
    assert_eq!(meta.stage, SyncStage::Idle);
    assert!(meta.last_success_at.is_some() && meta.last_error.is_none());
    assert_eq!(meta.last_run.stored, EXPECTED.len() as u64);
    assert!(meta.window.is_some());
    let summary = h
        .sink
        .runs
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("a summary");
    assert_eq!(summary.outcome, "done");
    assert_eq!(summary.stored, EXPECTED.len() as u64);
    assert_eq!(
        summary.scanned,
        summary.matched + summary.discarded - (summary.matched - summary.stored)
    );
    // Inbox, Acme, Sent Items, Customers, Archive, Conversation History (and no excluded folder).
    assert_eq!(summary.folders, 6, "{summary:?}");

    // A second run changes nothing.
    assert_eq!(h.run(&key).await, JobOutcome::Done);
    assert_eq!(h.stored_ids(&key).await?, expected());
    Ok(())
}
