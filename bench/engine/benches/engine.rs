//! Engine cost per message (issue 9 item 1): one Graph message-delta page, as microsoft-sim
//! serves it for the worker's `$select` (`mail_sync::page::LIST_SELECT`) and page size,
//! through the worker's engine (`mail_sync::page::scan_page`: one pass over the page that
//! classifies each item and matches each address as it is read, with connector-core's
//! `CrmMatcher` against the 10,000-address / 2,000-domain benchmark CRM, keeping the ids of
//! matches). divan counts the allocations. `gunzip` times the decompression
//! of the same page as Graph sends it (gzip), the other CPU cost of reading a page.
//!
//! Per message = the median time (or allocation count) of one page ÷ the messages on it;
//! `bench/report.py` reads divan's table.

use std::sync::OnceLock;

use connector_bench::crm::{crm_file, crm_snapshot};
use connector_bench::world::{self, MailboxUser, TENANT_DOMAIN};
use connector_core::domain::TenantId;
use connector_core::matching::CrmMatcher;
use divan::counter::ItemsCount;
use divan::{AllocProfiler, Bencher, black_box};
use mail_sync::page::{LIST_SELECT, scan_page};

#[global_allocator]
static ALLOC: AllocProfiler = AllocProfiler::system();

const SEED: u64 = 7;
/// The worker's page size and Graph's largest.
const PAGE_SIZES: [u32; 2] = [500, 1000];

struct Fixture {
    matcher: CrmMatcher,
    /// (page size, body, messages listed on it, the body gzip-compressed by the sim).
    pages: Vec<(u32, Vec<u8>, u64, Vec<u8>)>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let tenant = TenantId::parse(&uuid::Uuid::new_v4().to_string()).expect("a GUID");
            let user = MailboxUser::new("avery", 2_000);
            let sim = world::start_sim(&world::world_json(
                tenant.as_str(),
                std::slice::from_ref(&user),
                SEED,
            ))
            .await
            .expect("microsoft-sim");
            let base = sim.base_url();
            let tokens = world::sign_in_user(&base, tenant.as_str(), &user.upn)
                .await
                .expect("sign-in");
            let snapshot = crm_snapshot(&crm_file(&tenant, SEED, 400)).expect("CRM");
            let index = snapshot.index();
            let matcher = CrmMatcher::new(&index, [TENANT_DOMAIN], [user.upn.as_str()]);
            // The page as Graph sends it (gzip); the engine's input is its decompression.
            let raw = reqwest::Client::builder()
                .no_gzip()
                .build()
                .expect("a client");
            let mut pages = Vec::new();
            for size in PAGE_SIZES {
                let gzip = raw
                    .get(format!(
                        "{base}/v1.0/me/mailFolders/inbox/messages/delta?$select={LIST_SELECT}"
                    ))
                    .bearer_auth(&tokens.access_token)
                    .header("Accept-Encoding", "gzip")
                    .header(
                        "Prefer",
                        format!("odata.maxpagesize={size}, IdType=\"ImmutableId\""),
                    )
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .expect("a gzip delta page")
                    .bytes()
                    .await
                    .expect("a body")
                    .to_vec();
                let body = gunzipped(&gzip);
                let listed = scan_page(&body, &matcher, &[], false)
                    .expect("parses")
                    .listed;
                assert_eq!(listed, u64::from(size), "a full page");
                pages.push((size, body, listed, gzip));
            }
            sim.shutdown().await;
            Fixture { matcher, pages }
        })
    })
}

fn page(size: u32) -> (&'static [u8], u64, &'static [u8]) {
    let fixture = fixture();
    let (_, body, listed, gzip) = fixture
        .pages
        .iter()
        .find(|(s, ..)| *s == size)
        .expect("a fetched page");
    (body, *listed, gzip)
}

fn main() {
    fixture();
    divan::main();
}

/// Parse + classify + match + keep match ids: the worker's work per listed page.
#[divan::bench(args = PAGE_SIZES, sample_count = 200)]
fn parse_and_match(bencher: Bencher, size: u32) {
    let (body, listed, _) = page(size);
    let matcher = &fixture().matcher;
    bencher
        .counter(ItemsCount::new(listed))
        .bench(|| scan_page(black_box(body), matcher, &[], false).expect("parses"));
}

/// The floor of any parse: serde_json reading past the whole page (every string scanned,
/// nothing kept, nothing matched). The engine's cost above it is its own.
#[divan::bench(args = PAGE_SIZES, sample_count = 200)]
fn parse_only(bencher: Bencher, size: u32) {
    let (body, listed, _) = page(size);
    bencher.counter(ItemsCount::new(listed)).bench(|| {
        serde_json::from_slice::<serde::de::IgnoredAny>(black_box(body)).expect("parses")
    });
}

/// Decompressing the page as Graph sends it, as the Graph client does (one pass, zlib-rs).
#[divan::bench(args = PAGE_SIZES, sample_count = 200)]
fn gunzip(bencher: Bencher, size: u32) {
    let (body, listed, gzip) = page(size);
    assert_ne!(gzip, body, "the sim compressed the page");
    bencher
        .counter(ItemsCount::new(listed))
        .bench(|| gunzipped(black_box(gzip)).len());
}

/// A gzip body decompressed by the Graph client's own decoder.
fn gunzipped(gzip: &[u8]) -> Vec<u8> {
    connector_core::graph::gunzip(gzip, connector_core::graph::MAX_GRAPH_BODY_BYTES)
        .expect("gunzips")
}
