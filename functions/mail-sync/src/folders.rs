//! Which mail folders are synced: every folder, child folders included, except Deleted
//! Items, Junk Email, Drafts, Outbox, Conflicts, Sync Issues, Local/Server Failures and
//! Recoverable Items (and what lies below them), and search folders (views of other
//! folders). v1.0 has no `wellKnownName` property, so the well-known folders are found by
//! GETting `/me/mailFolders/{wellKnownName}` (one `$batch`) and comparing ids.

use std::collections::{HashMap, HashSet, VecDeque};

use connector_core::graph::{BatchRequest, GraphError, MailboxSession};
use serde::Deserialize;

/// Well-known folders never synced.
pub const EXCLUDED: [&str; 9] = [
    "deleteditems",
    "junkemail",
    "drafts",
    "outbox",
    "conflicts",
    "syncissues",
    "localfailures",
    "serverfailures",
    "recoverableitemsdeletions",
];

/// Well-known folders named for operators (their ids are looked up with the excluded ones).
pub const NAMED: [&str; 5] = [
    "inbox",
    "sentitems",
    "archive",
    "conversationhistory",
    "scheduled",
];

const FOLDER_SELECT: &str = "id,displayName,parentFolderId,childFolderCount";

/// A folder to sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailFolder {
    pub id: String,
    pub display_name: String,
    pub well_known_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FolderJson {
    #[serde(rename = "@odata.type", default)]
    odata_type: Option<String>,
    id: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    child_folder_count: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct FolderPage {
    #[serde(default)]
    value: Vec<FolderJson>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
}

/// A path segment for an id (ids may hold `+`, `/`, `=`).
pub fn segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

/// Ids of the well-known folders this mailbox has, by name.
async fn well_known_ids(
    session: &MailboxSession<'_>,
) -> Result<HashMap<String, String>, GraphError> {
    let requests: Vec<BatchRequest> = EXCLUDED
        .iter()
        .chain(NAMED.iter())
        .map(|name| BatchRequest {
            id: (*name).to_owned(),
            url: format!("/me/mailFolders/{name}?$select=id"),
            prefer: Vec::new(),
        })
        .collect();
    let mut ids = HashMap::new();
    for item in session.batch(&requests).await? {
        match item.status {
            200 => {
                let folder: FolderJson = item
                    .body
                    .as_ref()
                    .and_then(|body| serde_json::from_str(body.get()).ok())
                    .ok_or_else(|| {
                        GraphError::Malformed("well-known folder without an id".into())
                    })?;
                ids.insert(item.id, folder.id);
            }
            // The mailbox simply lacks it.
            404 => {}
            _ => return Err(item.to_error()),
        }
    }
    Ok(ids)
}

async fn list(session: &MailboxSession<'_>, first: String) -> Result<Vec<FolderJson>, GraphError> {
    let mut url = first;
    let mut out = Vec::new();
    loop {
        let page: FolderPage = session.get_json(&url, &[]).await?;
        out.extend(page.value);
        match page.next_link {
            Some(next) => url = next,
            None => return Ok(out),
        }
    }
}

/// Every folder to sync, parents before children.
pub async fn discover(session: &MailboxSession<'_>) -> Result<Vec<MailFolder>, GraphError> {
    let known = well_known_ids(session).await?;
    let excluded: HashSet<&str> = EXCLUDED
        .iter()
        .filter_map(|name| known.get(*name).map(String::as_str))
        .collect();
    let names: HashMap<&str, &str> = known
        .iter()
        .map(|(name, id)| (id.as_str(), name.as_str()))
        .collect();
    let mut folders = Vec::new();
    let mut queue: VecDeque<String> = VecDeque::new();
    let roots = list(
        session,
        format!("/me/mailFolders?$select={FOLDER_SELECT}&$top=100"),
    )
    .await?;
    let mut seen = HashSet::new();
    let mut visit = |folder: FolderJson,
                     queue: &mut VecDeque<String>,
                     folders: &mut Vec<MailFolder>| {
        let search_folder = folder
            .odata_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("#microsoft.graph.mailSearchFolder"));
        if search_folder || excluded.contains(folder.id.as_str()) || !seen.insert(folder.id.clone())
        {
            return;
        }
        if folder.child_folder_count.unwrap_or(0) > 0 {
            queue.push_back(folder.id.clone());
        }
        folders.push(MailFolder {
            well_known_name: names.get(folder.id.as_str()).map(|name| (*name).to_owned()),
            display_name: folder.display_name.unwrap_or_default(),
            id: folder.id,
        });
    };
    for folder in roots {
        visit(folder, &mut queue, &mut folders);
    }
    while let Some(parent) = queue.pop_front() {
        let children = list(
            session,
            format!(
                "/me/mailFolders/{}/childFolders?$select={FOLDER_SELECT}&$top=100",
                segment(&parent)
            ),
        )
        .await?;
        for folder in children {
            visit(folder, &mut queue, &mut folders);
        }
    }
    Ok(folders)
}
