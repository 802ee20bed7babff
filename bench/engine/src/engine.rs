//! The engine's per-page work, as the mail worker does it for every listed page: parse the
//! page with mail-sync's borrowing parser (`mail_sync::page`), classify each item, match its
//! participants with connector-core's `CrmMatcher`, keep only the ids of matches and removals
//! and the page's links, and track the oldest `receivedDateTime`.
//!
//! mail-sync's own loop (`MailWork::read_page`) is private, so this is the same sequence of
//! public calls; it is what the engine benchmark and the Rust listing client time.

use std::borrow::Cow;

use connector_core::matching::CrmMatcher;
use mail_sync::page::{Kind, ListPage};

/// What one listed page gave.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PageScan {
    /// Messages listed (removals excluded; drafts and meeting messages included).
    pub listed: u64,
    pub matched: Vec<String>,
    pub removed: Vec<String>,
    /// Listed but not fetched: no CRM participant, a draft or a meeting message.
    pub discarded: u64,
    pub oldest: Option<String>,
    pub next_link: Option<String>,
    pub delta_link: Option<String>,
}

/// Parses and matches one page of a message listing (delta or list).
pub fn scan_page(body: &[u8], matcher: &CrmMatcher) -> Result<PageScan, serde_json::Error> {
    let page: ListPage<'_> = serde_json::from_slice(body)?;
    let mut scan = PageScan {
        next_link: page.next_link.as_deref().map(str::to_owned),
        delta_link: page.delta_link.as_deref().map(str::to_owned),
        ..PageScan::default()
    };
    let mut oldest: Option<&str> = None;
    for item in &page.value {
        match item.kind() {
            Kind::Removed => {
                scan.removed.push(Cow::into_owned(item.id.clone()));
                continue;
            }
            Kind::Skipped => {
                scan.listed += 1;
                scan.discarded += 1;
            }
            Kind::Message => {
                scan.listed += 1;
                if matcher.matches(item.participants()) {
                    scan.matched.push(Cow::into_owned(item.id.clone()));
                } else {
                    scan.discarded += 1;
                }
            }
        }
        if let Some(received) = item.received_date_time.as_deref()
            && oldest.is_none_or(|o| received < o)
        {
            oldest = Some(received);
        }
    }
    scan.oldest = oldest.map(str::to_owned);
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use connector_core::domain::TenantId;

    #[test]
    fn a_page_is_classified_and_matched_like_the_worker_does() {
        let tenant = TenantId::parse("0b5e3c1a-7d2f-4e8a-9c6b-1f2e3d4c5b6a").expect("guid");
        let snapshot =
            crate::crm::crm_snapshot(&crate::crm::crm_file(&tenant, 7, 30)).expect("crm");
        let index = snapshot.index();
        let matcher = CrmMatcher::new(&index, ["contoso.example"], ["me@contoso.example"]);
        let body = br##"{"@odata.nextLink":"http://sim/v1.0/next","value":[
            {"@odata.type":"#microsoft.graph.message","id":"A1","receivedDateTime":"2026-03-02T08:00:00Z","isDraft":false,
             "from":{"emailAddress":{"address":"Someone@CRM-Account-3.example"}},"toRecipients":[{"emailAddress":{"address":"me@contoso.example"}}]},
            {"@odata.type":"#microsoft.graph.message","id":"A2","receivedDateTime":"2026-03-01T08:00:00Z","isDraft":false,
             "from":{"emailAddress":{"address":"x@vendor-1.example.net"}},"ccRecipients":[{"emailAddress":{"address":"boss@contoso.example"}}]},
            {"@odata.type":"#microsoft.graph.eventMessageRequest","id":"A3","receivedDateTime":"2026-03-03T08:00:00Z",
             "from":{"emailAddress":{"address":"a@crm-account-3.example"}}},
            {"@odata.type":"#microsoft.graph.message","id":"A4","@removed":{"reason":"deleted"}}
        ]}"##;
        let scan = scan_page(body, &matcher).expect("parses");
        assert_eq!(scan.listed, 3);
        assert_eq!(scan.matched, ["A1"]);
        assert_eq!(scan.removed, ["A4"]);
        assert_eq!(scan.discarded, 2);
        assert_eq!(scan.oldest.as_deref(), Some("2026-03-01T08:00:00Z"));
        assert_eq!(scan.next_link.as_deref(), Some("http://sim/v1.0/next"));
        assert!(scan.delta_link.is_none());
    }
}
