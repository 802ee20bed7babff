//! Microsoft's calendarView delta pages (the conformance corpus) through [`parse_delta_page`]:
//! changed and removed events, links and times as the doc's round shows them.

use super::*;
use crate::conformance::{body_bytes, examples};

fn ids(values: &serde_json::Value) -> Vec<String> {
    values
        .as_array()
        .expect("an array")
        .iter()
        .map(|id| id.as_str().expect("an id").to_owned())
        .collect()
}

#[test]
fn every_calendar_delta_page_reads_as_documented() {
    for (name, example) in examples("calendar", "calendarview-delta-") {
        let page = parse_delta_page(&body_bytes(&example))
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        let meaning = &example["meaning"];
        let mut changed = Vec::new();
        let mut removed = Vec::new();
        for item in &page.items {
            match item {
                DeltaItem::Changed(event) => {
                    // Every changed event of the doc has UTC times and an organizer.
                    assert!(
                        event.start_utc().is_ok() && event.end_utc().is_ok(),
                        "{name}: {}",
                        event.id
                    );
                    assert!(event.organizer_address().is_some(), "{name}: {}", event.id);
                    changed.push(event.id.clone());
                }
                DeltaItem::Removed { id } => removed.push(id.clone()),
            }
        }
        assert_eq!(changed, ids(&meaning["changed"]), "{name}");
        assert_eq!(removed, ids(&meaning["removed"]), "{name}");
        assert_eq!(
            page.next_link.is_some(),
            meaning["next_link"] == true,
            "{name}"
        );
        assert_eq!(
            page.delta_link.is_some(),
            meaning["delta_link"] == true,
            "{name}"
        );
        if let Some(start) = meaning["first_start_utc"].as_str() {
            let DeltaItem::Changed(first) = &page.items[0] else {
                panic!("{name}")
            };
            let expected =
                time::OffsetDateTime::parse(start, &time::format_description::well_known::Rfc3339)
                    .expect("a time");
            assert_eq!(first.start_utc().expect("a start"), expected, "{name}");
            assert_eq!(
                first.organizer_address(),
                meaning["first_organizer"].as_str(),
                "{name}"
            );
        }
    }
}
