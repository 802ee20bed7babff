//! Microsoft's message delta pages (the conformance corpus) through [`scan_page`]: listed
//! messages, `@removed` items, next and delta links as the doc's rounds show them, and a
//! message matched when the CRM knows its sender.

use std::path::PathBuf;
use std::sync::Arc;

use connector_core::domain::CrmRecordKind;
use connector_core::matching::CrmMatchIndexBuilder;
use serde_json::Value;

use super::*;

fn corpus() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../infra/microsoft-sim/conformance/mail");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| {
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("message-delta-"))
        })
        .collect();
    paths.sort();
    assert!(!paths.is_empty());
    paths
        .into_iter()
        .map(|path| {
            let name = path
                .file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path).expect("readable");
            (name, serde_json::from_str(&text).expect("JSON"))
        })
        .collect()
}

/// A CRM that knows `addresses`; the mailbox is `me@fabrikam.example` (not a doc address).
fn matcher<'a>(addresses: impl IntoIterator<Item = &'a str>) -> CrmMatcher {
    let mut builder = CrmMatchIndexBuilder::new();
    for (n, address) in addresses.into_iter().enumerate() {
        builder.add_address(
            address,
            [(CrmRecordKind::Contact, format!("c{n}").as_str())],
        );
    }
    CrmMatcher::with_index(
        Arc::new(builder.finish()),
        ["fabrikam.example"],
        ["me@fabrikam.example"],
    )
}

#[test]
fn every_message_delta_page_reads_as_documented() {
    for (name, example) in corpus() {
        let meaning = &example["meaning"];
        let body = serde_json::to_vec(&example["response"]["body"]).expect("serialises");
        let known = meaning["matched_when_crm_knows"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let scan = scan_page(
            &body,
            &matcher(known.keys().map(String::as_str)),
            &[],
            false,
        )
        .unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(
            scan.listed,
            meaning["listed"].as_u64().expect("listed"),
            "{name}"
        );
        let removed: Vec<&str> = meaning["removed"]
            .as_array()
            .expect("removed")
            .iter()
            .map(|id| id.as_str().expect("an id"))
            .collect();
        assert_eq!(scan.removed, removed, "{name}");
        assert_eq!(
            scan.next_link.is_some(),
            meaning["next_link"] == true,
            "{name}"
        );
        assert_eq!(
            scan.delta_link.is_some(),
            meaning["delta_link"] == true,
            "{name}"
        );
        let matched: Vec<&str> = known
            .values()
            .map(|id| id.as_str().expect("an id"))
            .collect();
        assert_eq!(scan.matched, matched, "{name}");
        // With no CRM at all, nothing matches and every listed message is discarded.
        let none = scan_page(&body, &matcher([]), &[], false).expect("parses");
        assert!(none.matched.is_empty(), "{name}");
        assert_eq!(none.discarded, none.listed, "{name}");
    }
}
