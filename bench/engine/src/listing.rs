//! The listing half of the mail worker as a process of its own, for the side-by-side
//! comparison with the Python clients: the worker's Graph client (`GraphClient` /
//! `MailboxSession`: reqwest, gzip, `Prefer` headers, the per-mailbox slots) pages a folder's
//! message delta with the worker's `$select` and page size, and each page goes through the
//! worker's own engine (`mail_sync::page::scan_page`). Nothing is fetched or stored:
//! this is the "HTTP read + parse + match" cost per listed message that issue 9 compares.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use async_trait::async_trait;
use connector_core::config::BaseUrl;
use connector_core::domain::CrmSnapshot;
use connector_core::graph::{GraphClient, Prefer, graph_http_client};
use connector_core::matching::CrmMatcher;
use connector_core::oauth::{BearerSource, TokenError};
use connector_core::secret::AccessToken;
use mail_sync::page::scan_page;
use serde::{Deserialize, Serialize};

use crate::procstat;

/// What to list.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListingSpec {
    /// The sim's base URL (Graph is under `/v1.0`).
    pub graph_base: String,
    /// The first request, relative to `/v1.0`.
    pub path: String,
    pub page_size: u32,
    /// The CRM file.
    pub crm: PathBuf,
    /// The mailbox owner's address and the tenant's domain (never matched).
    pub owner: String,
    pub tenant_domain: String,
}

/// What a listing client reports (the Python scripts print the same fields).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListingReport {
    pub client: String,
    pub pages: u64,
    pub listed: u64,
    pub matched: u64,
    pub discarded: u64,
    pub removed: u64,
    /// Response bytes after gzip decoding.
    pub bytes: u64,
    /// CPU of the paging loop (HTTP, decode, parse, match), set-up excluded.
    pub loop_cpu_ms: f64,
    pub loop_wall_ms: f64,
    /// CPU of the whole process up to the report (start-up, imports, set-up included).
    pub process_cpu_ms: f64,
    pub peak_rss_kb: u64,
}

/// A fixed access token (the orchestrator signed the user in).
struct FixedToken(AccessToken);

#[async_trait]
impl BearerSource for FixedToken {
    async fn bearer(&self) -> Result<AccessToken, TokenError> {
        Ok(self.0.clone())
    }

    async fn refresh_rejected(&self) -> Result<AccessToken, TokenError> {
        Err(TokenError::NotConnected)
    }
}

/// Pages the folder to its deltaLink; the token comes from `BENCH_GRAPH_TOKEN`.
pub async fn run(spec: &ListingSpec) -> Result<ListingReport> {
    let token = std::env::var("BENCH_GRAPH_TOKEN").context("BENCH_GRAPH_TOKEN is not set")?;
    let file =
        std::fs::read(&spec.crm).with_context(|| format!("reading {}", spec.crm.display()))?;
    let snapshot = CrmSnapshot::from_json_slice(&file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let index = snapshot.index();
    let matcher = CrmMatcher::new(&index, [spec.tenant_domain.as_str()], [spec.owner.as_str()]);
    let base = BaseUrl::parse(&spec.graph_base).map_err(anyhow::Error::msg)?;
    let client = GraphClient::new(graph_http_client()?, &base);
    let bearer = FixedToken(AccessToken::new(token));
    let session = client.session(&spec.owner, &bearer, None);
    let prefer = [Prefer::MaxPageSize(spec.page_size), Prefer::ImmutableId];

    let mut report = ListingReport {
        client: "rust".into(),
        ..ListingReport::default()
    };
    let cpu = procstat::own_cpu();
    let wall = Instant::now();
    let mut url = spec.path.clone();
    loop {
        let body = session.get(&url, &prefer).await?;
        report.bytes += body.len() as u64;
        let scan = scan_page(&body, &matcher, &[], false)?;
        drop(body);
        report.pages += 1;
        report.listed += scan.listed;
        report.matched += scan.matched.len() as u64;
        report.discarded += scan.discarded;
        report.removed += scan.removed.len() as u64;
        match scan.next_link {
            Some(next) => url = next,
            None => break,
        }
    }
    report.loop_cpu_ms = (procstat::own_cpu() - cpu).as_secs_f64() * 1000.0;
    report.loop_wall_ms = wall.elapsed().as_secs_f64() * 1000.0;
    report.process_cpu_ms = procstat::own_cpu().as_secs_f64() * 1000.0;
    report.peak_rss_kb = procstat::own_peak_rss_kb();
    Ok(report)
}
