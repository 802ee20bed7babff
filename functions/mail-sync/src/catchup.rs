//! Mail's part of catching up with a CRM that changed (connector-core `crm_catchup`; the
//! README's "When the CRM changes"):
//!
//! - **The window moves back** ([`MailWork::extend_window`]): an older open opportunity
//!   imported later widens the window; every folder lists the newly covered period with
//!   the message list (no `$filter` cap), `receivedDateTime ge {new start} and le {old
//!   start}`, through the backfill machinery every capped folder uses. What is stored is
//!   not touched.
//! - **Added account domains** ([`MailWork::plan_relist`]): Graph documents no way to
//!   search messages by the domain of a participant's address (the searchable
//!   `participants` are "an SMTP address, display name, or alias"), so every folder lists
//!   its window again, matching each page against the additions only: a message no
//!   addition involves is not fetched, and one an addition involves is fetched and stored
//!   with the whole CRM's matches (again, if earlier records had matched it: its matches
//!   then name the addition too, as a fresh import's would). About one request per 500
//!   messages.
//! - **Added addresses only** ([`MailWork::search_additions`]): `$search` with KQL
//!   `participants:` terms, eight addresses a request, `received>=` the window's start
//!   day, on `/me/messages` (every folder; hits outside the synced folders, drafts and
//!   messages before the window are dropped). Each hit is fetched and judged by the
//!   normal rules. A search returns at most 1,000 results (search-query-parameter): a
//!   batch that reaches it is searched again one address at a time; an address that
//!   reaches it alone falls back to the re-listing.
//! - **Removals**: `crm_catchup::prune` with the full matcher.

use std::collections::{BTreeMap, HashSet};

use connector_core::crm_catchup::{self, CatchUp, Verdict};
use connector_core::domain::{
    Activity, ActivityContent, FolderCursor, SyncCounters, SyncKey, SyncWindow,
};
use connector_core::graph::{GraphError, Prefer};
use connector_core::matching::CrmMatchIndex;
use connector_core::ports::SyncStateStore;
use connector_core::sync::{WorkError, WorkOutcome};
use serde::Deserialize;
use time::OffsetDateTime;
use tracing::info;

use crate::work::{FolderEnv, MailWork, backfill_url, filter_time, parse_time};

/// Addresses one `$search` asks for (a KQL `OR` of `participants:` terms): few enough
/// that the URL stays short and a batch rarely reaches the result limit.
pub const SEARCH_BATCH: usize = 8;
/// "A `$search` request returns up to 1,000 results"
/// (https://learn.microsoft.com/graph/search-query-parameter, "Using $search on message
/// collections", read 2026-12-06).
pub const SEARCH_LIMIT: u32 = 1_000;
/// Results a search page asks for (`$top`).
pub const SEARCH_PAGE: u32 = 250;
/// What a hit needs: where it is filed, when it arrived, whether it is a draft.
const SEARCH_SELECT: &str = "id,parentFolderId,receivedDateTime,isDraft";

/// One search request: messages involving any of `addresses` received on or after
/// `start`'s day. Microsoft's sources (read 2026-12-06):
/// - results "are sorted by the date and time that the message was sent", and
///   `participants` is searched by "SMTP address, display name, or alias"
///   (https://learn.microsoft.com/graph/search-query-parameter);
/// - a date restriction is written as Microsoft's own examples write it: `received:07/23/2018`
///   (the same page) with KQL's `>=` (`Date>=06/01/2016` in the contentQuery example of
///   https://learn.microsoft.com/graph/api/resources/security-ediscoverysearch);
/// - "You cannot use `$filter` or `$orderby` in a search request" (Outlook REST v2.0's
///   search requests, as quoted in https://github.com/microsoftgraph/msgraph-sdk-ruby/pull/55),
///   so the window's start is a KQL restriction, not a `$filter`.
///
/// Whatever the date restriction matches, hits received before the window are dropped
/// here as well ([`MailWork::search_additions`]).
pub fn search_url(addresses: &[&str], start: OffsetDateTime) -> String {
    let terms: Vec<String> = addresses
        .iter()
        .map(|address| format!("participants:{address}"))
        .collect();
    let day = start.date();
    let kql = format!(
        "({}) AND received>={:02}/{:02}/{:04}",
        terms.join(" OR "),
        u8::from(day.month()),
        day.day(),
        day.year()
    );
    format!(
        "/me/messages?$search={}&$select={SEARCH_SELECT}&$top={SEARCH_PAGE}",
        encode(&format!("\"{kql}\""))
    )
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[derive(Deserialize)]
struct SearchPage {
    #[serde(default)]
    value: Vec<Hit>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Hit {
    id: String,
    parent_folder_id: Option<String>,
    received_date_time: Option<String>,
    is_draft: Option<bool>,
}

impl MailWork {
    /// Widens the window to `start` (older than the current one): every folder whose
    /// import has begun lists the newly covered period; a folder not yet begun starts
    /// from `start` anyway. Returns the new window.
    pub(crate) async fn extend_window(
        &self,
        state: &dyn SyncStateStore,
        key: &SyncKey,
        cursors: &mut [FolderCursor],
        window: SyncWindow,
        start: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<SyncWindow, WorkError> {
        let old = window.start;
        info!(
            from = %filter_time(old),
            to = %filter_time(start),
            "an older open opportunity moves the window back; listing the newly covered period"
        );
        for cursor in cursors.iter_mut().filter(|cursor| begun(cursor)) {
            cursor.backfill = Some(if cursor.backfill.is_some() {
                // A backfill under way (a capped folder, or a re-listing) starts over over
                // the whole widened window, with every record.
                backfill_url(&cursor.folder_id, start, None, self.settings.page_size)
            } else {
                backfill_url(&cursor.folder_id, start, Some(old), self.settings.page_size)
            });
            cursor.relist = false;
            cursor.window = Some(SyncWindow {
                start,
                end: cursor.window.and_then(|w| w.end),
            });
            cursor.updated_at = now;
            state.put_cursor(key, cursor).await?;
        }
        Ok(SyncWindow { start, ..window })
    }

    /// Sets every begun folder to list its window again for the additions (`relist`).
    pub(crate) async fn plan_relist(
        &self,
        state: &dyn SyncStateStore,
        key: &SyncKey,
        cursors: &mut [FolderCursor],
        window: SyncWindow,
        now: OffsetDateTime,
    ) -> Result<(), WorkError> {
        for cursor in cursors.iter_mut().filter(|cursor| begun(cursor)) {
            let start = cursor.window.unwrap_or(window).start;
            let full_backfill = cursor.backfill.is_some() && !cursor.relist;
            cursor.backfill = Some(backfill_url(
                &cursor.folder_id,
                start,
                None,
                self.settings.page_size,
            ));
            // A backfill with every record under way (a capped folder's, or the period an
            // older opportunity newly covers) is widened to the whole window instead: it
            // then finds the additions too, and what it fetches again is stored once.
            cursor.relist = !full_backfill;
            cursor.updated_at = now;
            state.put_cursor(key, cursor).await?;
        }
        Ok(())
    }

    /// Runs the catch-up's steps after the folders are done: the additions' searches (or
    /// the re-listing when they cannot be searched), then the removals. Checkpoints after
    /// every stored page; `OutOfTime` leaves the rest to the next run.
    pub(crate) async fn finish_catch_up(
        &self,
        env: &FolderEnv<'_>,
        catch_up: &mut CatchUp,
        additions: &CrmMatchIndex,
        removals: bool,
        cursors: &mut [FolderCursor],
        window: SyncWindow,
    ) -> Result<WorkOutcome, WorkError> {
        let Some(target) = catch_up.target() else {
            return Ok(WorkOutcome::Complete);
        };
        if !target.relisting {
            let mut addresses: Vec<&str> = additions.address_keys().collect();
            addresses.sort_unstable();
            let folders: HashSet<&str> = cursors.iter().map(|c| c.folder_id.as_str()).collect();
            match self
                .search_additions(env, catch_up, &addresses, &folders, window)
                .await?
            {
                Searched::Done => {}
                Searched::OutOfTime => return Ok(WorkOutcome::OutOfTime),
                Searched::TooMany => {
                    info!(
                        "an added address has more messages than a search returns; listing the folders again"
                    );
                    self.plan_relist(env.state, env.key, cursors, window, env.clock.now())
                        .await?;
                    if let Some(target) = catch_up.target_mut() {
                        target.relisting = true;
                    }
                    catch_up.save(env.state, env.key, env.clock.now()).await?;
                    // The folders list again in the next run (queued at once: out of time).
                    return Ok(WorkOutcome::OutOfTime);
                }
            }
        }
        // Only when an import since the applied one removed a record. Idempotent: a run
        // that dies before `finish` removes nothing more the next time.
        if removals {
            let removed = self.prune_mail(env).await?;
            env.add(&SyncCounters {
                removed,
                ..SyncCounters::default()
            });
        }
        catch_up.finish(env.state, env.key, env.clock.now()).await?;
        Ok(WorkOutcome::Complete)
    }

    /// Deletes stored mail today's CRM no longer matches (judged on the stored
    /// participants; a message with more participants than its item keeps is read whole
    /// first).
    async fn prune_mail(&self, env: &FolderEnv<'_>) -> Result<u64, WorkError> {
        let matcher = env.matcher;
        let judge =
            move |activity: &Activity| match &activity.content {
                ActivityContent::Mail(mail) => {
                    let addresses = mail.participants.iter().map(|p| p.address.as_str());
                    if !matcher.explain(addresses).is_empty() {
                        Verdict::Keep
                    } else if mail.detail.as_ref().is_some_and(|detail| {
                        detail.participants as usize > mail.participants.len()
                    }) {
                        Verdict::NeedsWhole
                    } else {
                        Verdict::Remove
                    }
                }
                ActivityContent::Meeting(_) => Verdict::Keep,
            };
        Ok(crm_catchup::prune(self.activities.as_ref(), &env.owner, "mail#", &judge).await?)
    }

    /// The searches of the added addresses, from the checkpoint on.
    async fn search_additions(
        &self,
        env: &FolderEnv<'_>,
        catch_up: &mut CatchUp,
        addresses: &[&str],
        folders: &HashSet<&str>,
        window: SyncWindow,
    ) -> Result<Searched, WorkError> {
        let batches: Vec<&[&str]> = addresses.chunks(SEARCH_BATCH).collect();
        let prefer = [Prefer::ImmutableId];
        loop {
            let Some(target) = catch_up.target_mut() else {
                return Ok(Searched::Done);
            };
            let Some(batch) = batches.get(target.step as usize) else {
                return Ok(Searched::Done);
            };
            let terms: &[&str] = match target.term {
                Some(term) => batch
                    .get(term as usize..term as usize + 1)
                    .unwrap_or_default(),
                None => batch,
            };
            if env.out_of_time() {
                return Ok(Searched::OutOfTime);
            }
            let url = target
                .next
                .clone()
                .unwrap_or_else(|| search_url(terms, window.start));
            let body = env.session.get(&url, &prefer).await?;
            let page: SearchPage = serde_json::from_slice(&body).map_err(|error| {
                GraphError::Malformed(format!("search page: {:?} error", error.classify()))
            })?;
            drop(body);
            let listed = page.value.len() as u64;
            let mut by_folder: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for hit in page.value {
                let Some(folder) = hit
                    .parent_folder_id
                    .filter(|f| folders.contains(f.as_str()))
                else {
                    continue;
                };
                let in_window = hit
                    .received_date_time
                    .as_deref()
                    .and_then(parse_time)
                    .is_some_and(|at| at >= window.start);
                if in_window && hit.is_draft != Some(true) {
                    by_folder.entry(folder).or_default().push(hit.id);
                }
            }
            let mut counters = SyncCounters {
                scanned: listed,
                pages: 1,
                ..SyncCounters::default()
            };
            for (folder, ids) in by_folder {
                let (stored, matched, not_kept) = self.fetch_and_store(env, &folder, ids).await?;
                counters.stored += stored;
                counters.matched += matched;
                counters.discarded += not_kept;
            }
            env.add(&counters);
            env.progress.add(&counters).await;

            let Some(target) = catch_up.target_mut() else {
                return Ok(Searched::Done);
            };
            target.seen = target.seen.saturating_add(listed as u32);
            match page.next_link {
                Some(next) if target.seen < SEARCH_LIMIT => target.next = Some(next),
                _ if target.seen >= SEARCH_LIMIT => {
                    // The search may have left messages out.
                    target.next = None;
                    target.seen = 0;
                    match target.term {
                        None if terms.len() > 1 => target.term = Some(0),
                        _ => return Ok(Searched::TooMany),
                    }
                }
                _ => {
                    target.next = None;
                    target.seen = 0;
                    match target.term {
                        Some(term) if (term as usize + 1) < batch.len() => {
                            target.term = Some(term + 1)
                        }
                        _ => {
                            target.term = None;
                            target.step += 1;
                        }
                    }
                }
            }
            catch_up.save(env.state, env.key, env.clock.now()).await?;
        }
    }
}

/// Whether a folder's import has begun (a folder not yet begun imports its window with
/// today's CRM anyway).
fn begun(cursor: &FolderCursor) -> bool {
    cursor.cursor.is_some() || cursor.backfill.is_some()
}

/// How the searches ended.
enum Searched {
    Done,
    OutOfTime,
    /// One address alone reached the result limit.
    TooMany,
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// Microsoft's participants search (the conformance corpus) read as the catch-up reads
    /// a page: each hit's id, folder, arrival and draft flag, and the nextLink; the result
    /// limit the corpus states is the one the catch-up splits at.
    #[test]
    fn microsofts_search_page_reads_into_hits() {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../infra/microsoft-sim/conformance/mail/message-search-participants.json");
        let example: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("readable")).expect("JSON");
        assert_eq!(
            example["meaning"]["max_results"].as_u64(),
            Some(u64::from(SEARCH_LIMIT))
        );
        let page: SearchPage =
            serde_json::from_value(example["response"]["body"].clone()).expect("a search page");
        assert_eq!(page.value.len(), 2);
        let hit = &page.value[0];
        assert_eq!(hit.id, "AAMkADNkNAAASq35xAAA=");
        assert_eq!(hit.parent_folder_id.as_deref(), Some("AQMkADNkNAAAgEMAAAA"));
        assert_eq!(
            hit.received_date_time.as_deref().and_then(parse_time),
            Some(datetime!(2026-11-05 09:00 UTC))
        );
        assert_eq!(hit.is_draft, Some(false));
        assert!(
            page.next_link
                .as_deref()
                .is_some_and(|l| l.contains("%24skip=2"))
        );
        // Every property the catch-up reads is one the example selects.
        let asked = example["request"]["path"].as_str().expect("path");
        for property in SEARCH_SELECT.split(',') {
            assert!(
                asked.contains(property),
                "{property} is selected in {asked}"
            );
        }
    }

    #[test]
    fn a_search_asks_for_its_addresses_from_the_windows_first_day() {
        let url = search_url(
            &["jane@acme.com", "bob@initech.com"],
            datetime!(2026-06-01 00:00 UTC),
        );
        assert_eq!(
            url,
            "/me/messages?$search=%22%28participants%3Ajane%40acme.com%20OR%20participants%3Abob%40initech.com%29%20AND%20received%3E%3D06%2F01%2F2026%22&$select=id,parentFolderId,receivedDateTime,isDraft&$top=250"
        );
    }
}
