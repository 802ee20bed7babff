//! Graph mail: every Exchange Online user's mailbox (folders, messages, change logs, delta tokens), built from
//! the world file (and its `generate` entries), served under `/v1.0/me/...` and `/v1.0/users/{id|upn}/...`
//! (graph-contract §5, §10), changed live through the control API (`control_router()`).
//!
//! Submodules: `store` (mailbox state and change log), `ids` (Outlook-style ids), `delta` (message delta
//! tokens and paging), `render` (Graph JSON), `query` (OData options, `Prefer`), `text` (HTML → text),
//! `search` (`$search` on message lists: the KQL subset and its matching), `routes` (Graph handlers), `control`
//! (`/_sim/` mail routes). Throttling is `graph::throttle`, whose state lives here (`MailStore::throttle`)
//! because this store is the one `Sim` gives us.

mod control;
pub mod delta;
pub mod ids;
pub mod query;
pub mod render;
mod routes;
pub mod search;
pub mod store;
pub mod text;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{Context, bail};
use axum::Router;
use serde_json::Value;
use time::OffsetDateTime;

use crate::generate::{GenerateParams, GeneratedKind, Owner, generate};
use crate::graph::throttle::Throttle;
use crate::state::SharedSim;
use crate::world::{MailFolder, MailboxKind, World};
pub(crate) use routes::json_response;
pub use store::Mailbox;
use store::{Content, MailboxData, WELL_KNOWN_NAMES};

/// All mailboxes, keyed by lower-case user object id. Users whose mailbox is `onPremises` or `none` have none.
#[derive(Debug)]
pub struct MailStore {
    mailboxes: RwLock<HashMap<String, Arc<Mailbox>>>,
    /// Differs per store: delta tokens of another sim instance are an unknown generation (410).
    pub(crate) instance: u64,
    /// Outlook throttling counters and limits (`graph::throttle`).
    pub throttle: Throttle,
    /// How many messages a `$filter`ed initial delta round returns, and which (`/_sim/delta-cap`).
    delta_cap: Mutex<delta::DeltaCap>,
}

impl MailStore {
    pub fn from_world(world: &World, sim_clock_now: OffsetDateTime) -> anyhow::Result<Self> {
        let now = sim_clock_now.unix_timestamp();
        let mut mailboxes = HashMap::new();
        for tenant in &world.tenants {
            for user in &tenant.users {
                if user.mailbox != MailboxKind::ExchangeOnline {
                    continue;
                }
                let user_id = user.id.to_ascii_lowercase();
                let owner = Owner {
                    display_name: user.display_name.clone(),
                    address: user
                        .mail
                        .clone()
                        .unwrap_or_else(|| user.user_principal_name.clone()),
                };
                let mut data = MailboxData::new(&user_id);
                for folder in &user.mail_folders {
                    let root = data.root;
                    add_world_folder(&mut data, root, folder, &owner, now)
                        .with_context(|| format!("mailbox of {}", user.user_principal_name))?;
                }
                mailboxes.insert(user_id, (data, owner, tenant.id.to_ascii_lowercase()));
            }
            for spec in &tenant.generate {
                let user = tenant
                    .users
                    .iter()
                    .find(|u| {
                        u.id.eq_ignore_ascii_case(&spec.user)
                            || u.user_principal_name.eq_ignore_ascii_case(&spec.user)
                    })
                    .with_context(|| {
                        format!("generate: no user {} in tenant {}", spec.user, tenant.id)
                    })?;
                let Some((data, _, _)) = mailboxes.get_mut(&user.id.to_ascii_lowercase()) else {
                    bail!("generate: {} has no Exchange Online mailbox", spec.user);
                };
                let folder = data.resolve_folder_loose(&spec.folder).with_context(|| {
                    format!("generate: {} has no folder {}", spec.user, spec.folder)
                })?;
                let drafts = data.resolve_folder("drafts").context("drafts folder")?;
                let params = GenerateParams {
                    seed: spec.seed,
                    messages: spec.messages,
                    crm_match_ratio: spec.crm_match_ratio,
                    folder: data.folders[folder as usize]
                        .well_known
                        .clone()
                        .unwrap_or_else(|| spec.folder.clone()),
                    now: sim_clock_now,
                };
                for message in generate(&params) {
                    let target = if message.kind == GeneratedKind::Draft {
                        drafts
                    } else {
                        folder
                    };
                    let received = message.received;
                    data.insert(
                        target,
                        Content::Generated(message),
                        received,
                        received,
                        None,
                        received,
                    );
                }
            }
        }
        let mailboxes = mailboxes
            .into_iter()
            .map(|(id, (data, owner, tenant_id))| {
                let mailbox = Mailbox {
                    user_id: id.clone(),
                    tenant_id,
                    owner,
                    data: RwLock::new(data),
                };
                (id, Arc::new(mailbox))
            })
            .collect();
        Ok(MailStore {
            mailboxes: RwLock::new(mailboxes),
            instance: rand::random(),
            throttle: Throttle::default(),
            delta_cap: Mutex::new(delta::DeltaCap::default()),
        })
    }

    /// The cap on `$filter`ed initial delta rounds that new rounds get.
    pub fn delta_cap(&self) -> delta::DeltaCap {
        *self.delta_cap.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_delta_cap(&self, cap: delta::DeltaCap) {
        *self.delta_cap.lock().unwrap_or_else(|e| e.into_inner()) = cap;
    }

    /// The mailbox of a user (object id, any case).
    pub fn mailbox(&self, user_id: &str) -> Option<Arc<Mailbox>> {
        self.mailboxes
            .read()
            .expect("mailboxes lock")
            .get(&user_id.to_ascii_lowercase())
            .cloned()
    }
}

fn add_world_folder(
    data: &mut MailboxData,
    parent: u32,
    folder: &MailFolder,
    owner: &Owner,
    now: i64,
) -> anyhow::Result<()> {
    let key = match &folder.well_known_name {
        Some(wk) => {
            let wk = wk.to_ascii_lowercase();
            match data.resolve_folder(&wk) {
                Some(key) => {
                    data.folders[key as usize].display_name = folder.display_name.clone();
                    key
                }
                None if WELL_KNOWN_NAMES.contains(&wk.as_str()) => {
                    let root = data.root;
                    data.add_folder(
                        Some(root),
                        &folder.display_name,
                        Some(&wk),
                        folder.is_hidden,
                    )
                }
                None => bail!(
                    "folder {:?}: unknown wellKnownName {wk:?}",
                    folder.display_name
                ),
            }
        }
        None => data.add_folder(Some(parent), &folder.display_name, None, folder.is_hidden),
    };
    if let Some(id) = &folder.id {
        data.set_custom_folder_id(key, id);
    }
    for (i, message) in folder.messages.iter().enumerate() {
        let Value::Object(map) = message else {
            bail!(
                "folder {:?}: message #{i} is not a JSON object",
                folder.display_name
            );
        };
        let custom_id = map.get("id").and_then(Value::as_str).map(str::to_owned);
        let (map, received, created) = render::normalise_json_message(map.clone(), now, owner)
            .map_err(|e| anyhow::anyhow!("folder {:?}: message #{i}: {e}", folder.display_name))?;
        data.insert(
            key,
            Content::Json(Box::new(map)),
            received,
            created,
            custom_id,
            now,
        );
    }
    for child in &folder.child_folders {
        add_world_folder(data, key, child, owner, now)?;
    }
    Ok(())
}

/// Graph mail routes, relative to `/v1.0`.
pub fn router() -> Router<SharedSim> {
    routes::router()
}

/// The mail part of the control API (`/_sim/users/{user}/...`, `/_sim/throttle`, `/_sim/mailbox-stats`).
pub fn control_router() -> Router<SharedSim> {
    control::router()
}
