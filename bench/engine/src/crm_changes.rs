//! `crm-changes`: what catching up with a changed CRM costs (the README's "When the CRM
//! changes"), measured on the large mailbox right after its import, in the same warm
//! `mail-sync` process, through the same counting AWS proxy and the sim's request log.
//!
//! Two CRM imports follow each other, each through the store the set-up imported with
//! (`Store::import_crm`), each followed by a `CrmChanged` job for the user (and the
//! continuations the worker queues):
//!
//! 1. **an added contact**: the benchmark CRM plus, as a lead, the vendor address
//!    (`first.last@vendor-{d}.example.net`, never in the CRM) that the most of the
//!    mailbox's messages involve. The worker searches it (`$search`) and fetches the hits.
//! 2. **an added domain**: the same plus an account owning that address's vendor domain.
//!    Every folder lists its window again against the addition only.
//!
//! Which messages the catch-up must store is counted from the generator (the sim's
//! mailbox is `microsoft_sim::generate` of the same seed): the mail (neither drafts nor
//! meeting requests, which the worker never imports) that involves the addition and that
//! no earlier record matched. After each step the stored mail ids are read back from the
//! activities table: none may be gone and exactly that many may be new, or the run fails.
//! The import itself is checked the same way first (every generated message the
//! benchmark CRM matches, and nothing else), so the counting rules are the worker's.
//!
//! Afterwards the benchmark CRM is imported again, so the parts after this one see the
//! CRM every other figure was measured with.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use connector_core::domain::{CrmSnapshot, UserId, UserKey};
use connector_core::messages::SyncReason;
use microsoft_sim::generate::{GenerateParams, GeneratedKind, Owner, generate};
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::awsproxy::AwsCounts;
use crate::crm::crm_snapshot;
use crate::lambda::LambdaProcess;
use crate::run::{
    GraphRequests, ImportContext, ImportRun, SEED, classify, invoke_with_continuations, job_for,
    ms, progress, sim_requests,
};
use crate::world::{self, MailboxUser};

/// The part's figures (`measurements.json`, `crmChanges`).
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CrmChanges {
    pub mailbox: u64,
    /// The full import of the same mailbox just before, for the ratios.
    pub full_import: FullImport,
    /// Mail messages of the generated mailbox the benchmark CRM matches, and the mail the
    /// import left in the activities table (checked equal).
    pub expected_import: u64,
    pub stored_after_import: u64,
    pub steps: Vec<CrmChangeStep>,
    /// Whether the benchmark CRM was imported again afterwards.
    pub restored: bool,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FullImport {
    pub graph: GraphRequests,
    pub wall_ms: f64,
    pub stored: u64,
    pub aws_calls: u64,
}

/// One CRM change and the catch-up that followed it.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CrmChangeStep {
    /// `added contact` or `added domain`.
    pub step: String,
    /// The added address or domain.
    pub addition: String,
    /// `Store::import_crm` of the new snapshot (the bench's side, not the worker's).
    pub crm_import_ms: f64,
    pub invocations: u64,
    pub outcome: String,
    pub wall_ms: f64,
    pub cpu_ms: f64,
    /// The worker's summary line, counters summed over the invocations.
    pub summary: Value,
    pub graph: GraphRequests,
    pub aws: AwsCounts,
    /// Mail messages in the mailbox that involve the addition (already stored ones too).
    pub involving: u64,
    /// Of those, the ones no earlier record matched: what the catch-up must store.
    pub expected_new: u64,
    /// Mail ids in the activities table before and after, and how they differ.
    pub stored_before: u64,
    pub stored_after: u64,
    pub new_ids: u64,
    pub gone_ids: u64,
    /// Graph requests and wall time over the full import's.
    pub graph_vs_import: f64,
    pub wall_vs_import: f64,
}

/// The participants (lower-case addresses) of each generated message the worker imports.
fn generated_mail(user: &MailboxUser) -> Vec<Vec<String>> {
    let owner = Owner {
        display_name: user.upn.clone(),
        address: user.upn.clone(),
    };
    generate(&GenerateParams {
        seed: SEED,
        messages: user.messages,
        crm_match_ratio: world::MATCH_RATIO,
        folder: "inbox".into(),
        now: OffsetDateTime::now_utc(),
    })
    .into_iter()
    .filter(|message| message.kind == GeneratedKind::Mail)
    .map(|message| {
        message
            .participants(&owner)
            .into_iter()
            .map(|address| address.address.to_ascii_lowercase())
            .collect()
    })
    .collect()
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, domain)| domain)
}

/// Whether `address` is at `domain` or one of its subdomains (the matcher's domain rule).
fn at_domain(address: &str, domain: &str) -> bool {
    let at = domain_of(address);
    at == domain
        || at
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// The vendor address the most generated messages involve (ties: the first by address).
fn busiest_vendor(mail: &[Vec<String>]) -> Option<String> {
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for participants in mail {
        let distinct: BTreeSet<&str> = participants
            .iter()
            .map(String::as_str)
            .filter(|a| {
                domain_of(a).starts_with("vendor-") && domain_of(a).ends_with(".example.net")
            })
            .collect();
        for address in distinct {
            *counts.entry(address).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(address, _)| address.to_owned())
}

fn snapshot_of(file: &Value) -> Result<CrmSnapshot> {
    CrmSnapshot::from_json_slice(file.to_string().as_bytes())
        .map_err(|error| anyhow::anyhow!("{error}"))
        .context("the changed benchmark CRM is refused by the connector's validation")
}

/// Both steps, on `user` (the large mailbox) right after `import` in `process`.
pub(crate) async fn measure(
    ctx: &mut ImportContext<'_>,
    process: &mut LambdaProcess,
    user: &MailboxUser,
    import: &ImportRun,
) -> Result<CrmChanges> {
    let mail = generated_mail(user);
    let generated_crm = microsoft_sim::generate::crm_snapshot(SEED);
    let old: Vec<bool> = mail
        .iter()
        .map(|participants| participants.iter().any(|a| generated_crm.matches(a)))
        .collect();
    let address = busiest_vendor(&mail).context("no vendor address in the generated mailbox")?;
    let domain = domain_of(&address).to_owned();
    let base_index = crm_snapshot(ctx.crm)?.index();
    ensure!(
        !base_index.addresses.contains_key(&address)
            && !base_index.domains.contains_key(&domain)
            && !generated_crm.matches(&address),
        "{address} is in the benchmark CRM already"
    );

    let user_id = UserId::parse(&user.id).map_err(|e| anyhow::anyhow!("{e}"))?;
    let owner = UserKey::new(ctx.tenant.clone(), user_id);
    let ids = ctx.store.mail_activity_ids(&owner).await?;
    let expected_import = old.iter().filter(|o| **o).count() as u64;
    ensure!(
        ids.len() as u64 == expected_import,
        "the import stored {} messages, the generator's mailbox has {expected_import} the CRM matches",
        ids.len()
    );
    let stored_after_import = ids.len() as u64;
    let mut stored = Stored { owner, ids };
    let mut changes = CrmChanges {
        mailbox: user.messages,
        full_import: FullImport {
            graph: import.graph.clone(),
            wall_ms: import.wall_ms,
            stored: import.summary["Stored"].as_u64().unwrap_or(0),
            aws_calls: import.aws.total_calls(),
        },
        expected_import,
        stored_after_import,
        ..CrmChanges::default()
    };

    // 1. An added contact (a lead: an exact address).
    let mut file = ctx.crm.clone();
    file["leads"]
        .as_array_mut()
        .context("the CRM file's leads")?
        .push(json!({"id": "00QB00001", "email": address}));
    let involving = |pred: &dyn Fn(&str) -> bool, already: &dyn Fn(usize) -> bool| {
        let all = mail
            .iter()
            .filter(|p| p.iter().any(|a| pred(a.as_str())))
            .count() as u64;
        let new = mail
            .iter()
            .enumerate()
            .filter(|(n, p)| !already(*n) && p.iter().any(|a| pred(a.as_str())))
            .count() as u64;
        (all, new)
    };
    let is_contact = |a: &str| a == address;
    let (all, new) = involving(&is_contact, &|n| old[n]);
    let change = Change {
        label: "added contact",
        addition: &address,
        snapshot: snapshot_of(&file)?,
        involving: all,
        expected_new: new,
    };
    let step = catch_up(
        ctx,
        process,
        user,
        &mut stored,
        change,
        &changes.full_import,
    )
    .await?;
    changes.steps.push(step);

    // 2. An added domain (an account owning the contact's vendor domain).
    file["accounts"]
        .as_array_mut()
        .context("the CRM file's accounts")?
        .push(json!({"id": "001B00001", "name": "Bench vendor", "domains": [domain]}));
    let is_domain = |a: &str| at_domain(a, &domain);
    let (all, new) = involving(&is_domain, &|n| {
        old[n] || mail[n].iter().any(|a| is_contact(a.as_str()))
    });
    let change = Change {
        label: "added domain",
        addition: &domain,
        snapshot: snapshot_of(&file)?,
        involving: all,
        expected_new: new,
    };
    let step = catch_up(
        ctx,
        process,
        user,
        &mut stored,
        change,
        &changes.full_import,
    )
    .await?;
    changes.steps.push(step);

    ctx.store.import_crm(&crm_snapshot(ctx.crm)?).await?;
    changes.restored = true;
    Ok(changes)
}

/// One CRM change: what is imported, and what the mailbox holds of it.
struct Change<'a> {
    label: &'a str,
    addition: &'a str,
    snapshot: CrmSnapshot,
    /// Mail messages that involve the addition, and those of them no earlier record matched.
    involving: u64,
    expected_new: u64,
}

/// The user's stored mail ids, as last read.
struct Stored {
    owner: UserKey,
    ids: BTreeSet<String>,
}

/// Imports the change's snapshot, runs the user's `CrmChanged` job and checks what it
/// stored.
async fn catch_up(
    ctx: &mut ImportContext<'_>,
    process: &mut LambdaProcess,
    user: &MailboxUser,
    stored: &mut Stored,
    change: Change<'_>,
    full: &FullImport,
) -> Result<CrmChangeStep> {
    let Change {
        label,
        addition,
        snapshot,
        involving,
        expected_new,
    } = change;
    progress(&format!(
        "crm-changes: {label} ({involving} messages involve it, {expected_new} new), catch-up of {} messages",
        user.messages
    ));
    let started = Instant::now();
    ctx.store.import_crm(&snapshot).await?;
    let crm_import_ms = ms(started.elapsed());

    let (_, since) = sim_requests(ctx.http, ctx.sim_base, ctx.since).await?;
    ctx.proxy.take();
    let cpu_before = process.sample()?.cpu_ms;
    let job = job_for(ctx.tenant, user, SyncReason::CrmChanged)?;
    let done = invoke_with_continuations(ctx, process, job, "catch-up").await?;
    let cpu_ms = process.sample()?.cpu_ms - cpu_before;
    let aws = ctx.proxy.take();
    let (entries, next) = sim_requests(ctx.http, ctx.sim_base, since).await?;
    ctx.since = next;
    let graph = classify(&entries, &user.id).0;
    let log = label.replace(' ', "-");
    std::fs::write(
        ctx.options
            .out
            .join(format!("logs/graph-crm-{log}-{}.json", user.messages)),
        serde_json::to_vec(&entries)?,
    )?;

    let after = ctx.store.mail_activity_ids(&stored.owner).await?;
    let new_ids = after.difference(&stored.ids).count() as u64;
    let gone_ids = stored.ids.difference(&after).count() as u64;
    let step = CrmChangeStep {
        step: label.to_owned(),
        addition: addition.to_owned(),
        crm_import_ms,
        invocations: done.invocations,
        outcome: done.outcome,
        wall_ms: ms(done.wall),
        cpu_ms,
        summary: done.summary,
        graph_vs_import: graph.total as f64 / full.graph.total.max(1) as f64,
        wall_vs_import: ms(done.wall) / full.wall_ms.max(1.0),
        graph,
        aws,
        involving,
        expected_new,
        stored_before: stored.ids.len() as u64,
        stored_after: after.len() as u64,
        new_ids,
        gone_ids,
    };
    progress(&format!(
        "crm-changes: {label}: {} in {:.1} s, {} Graph requests ({} searches, {} list pages, {} $batch), {new_ids} stored",
        step.outcome,
        step.wall_ms / 1000.0,
        step.graph.total,
        step.graph.searches,
        step.graph.list_pages,
        step.graph.batch_calls,
    ));
    ensure!(
        step.outcome == "done",
        "the {label} catch-up ended {} after {} invocations",
        step.outcome,
        step.invocations
    );
    ensure!(
        gone_ids == 0 && new_ids == expected_new,
        "the {label} catch-up stored {new_ids} new messages and removed {gone_ids}; the mailbox has {expected_new} that involve {addition} and no earlier record"
    );
    stored.ids = after;
    Ok(step)
}
