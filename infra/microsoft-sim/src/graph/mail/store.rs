//! Mailbox state: folders, messages (compact generated ones or Graph JSON), the ids of both, and the per-folder
//! change log that delta rounds read.
//!
//! Each folder keeps every message it holds, and a tombstone for every message that left it (deleted or moved
//! out), in a log ordered by a mailbox-wide change sequence: a change moves the message's entry to a new, higher
//! sequence number. A delta round is then "entries with sequence in (S, B]": S where the previous round ended, B
//! the mailbox sequence when this round started. Anything that changes during a round leaves that range and is
//! reported by the next round, so nothing is lost and replays are harmless. Folders also index their messages by
//! `receivedDateTime` (newest first) for lists, initial delta rounds and the 5,000-message `$filter` cap.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Value};

use super::ids::{self, DecodedId};
use crate::generate::{GeneratedMessage, Owner};

/// The well-known folders every Exchange Online mailbox has under its root, with their display names and
/// whether Graph lists them only with `includeHiddenFolders=true`.
const DEFAULT_FOLDERS: [(&str, &str, bool); 10] = [
    ("archive", "Archive", false),
    ("conversationhistory", "Conversation History", false),
    ("deleteditems", "Deleted Items", false),
    ("drafts", "Drafts", false),
    ("inbox", "Inbox", false),
    ("junkemail", "Junk Email", false),
    ("outbox", "Outbox", false),
    ("sentitems", "Sent Items", false),
    ("syncissues", "Sync Issues", false),
    ("scheduled", "Scheduled", true),
];
const SYNC_ISSUES_CHILDREN: [(&str, &str); 3] = [
    ("conflicts", "Conflicts"),
    ("localfailures", "Local Failures"),
    ("serverfailures", "Server Failures"),
];

/// Every well-known name Graph resolves (graph-contract §5); the ones a mailbox lacks resolve to 404.
pub const WELL_KNOWN_NAMES: [&str; 17] = [
    "archive",
    "clutter",
    "conflicts",
    "conversationhistory",
    "deleteditems",
    "drafts",
    "inbox",
    "junkemail",
    "localfailures",
    "msgfolderroot",
    "outbox",
    "recoverableitemsdeletions",
    "scheduled",
    "searchfolders",
    "sentitems",
    "serverfailures",
    "syncissues",
];

#[derive(Debug, Clone)]
pub enum Content {
    Generated(GeneratedMessage),
    /// Graph JSON without the properties the store owns (`id`, `parentFolderId`, `changeKey`,
    /// `lastModifiedDateTime`).
    Json(Box<Map<String, Value>>),
}

#[derive(Debug, Clone)]
pub struct MessageRecord {
    pub folder: u32,
    /// Moves so far: part of the REST id, which changes on every move.
    pub moves: u32,
    /// A REST id given by the world file, valid until the first move.
    pub custom_id: Option<Box<str>>,
    /// Sequence of this message's entry in its folder's log.
    pub seq: u64,
    /// Sequence at which it entered its folder (created or moved in): delta's created-vs-updated.
    pub entered_seq: u64,
    pub version: u32,
    pub received: i64,
    pub created: i64,
    pub last_modified: i64,
    pub content: Content,
}

impl MessageRecord {
    pub fn is_read(&self) -> bool {
        match &self.content {
            Content::Generated(g) => g.is_read,
            Content::Json(m) => m.get("isRead").and_then(Value::as_bool).unwrap_or(false),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Tombstone {
    pub key: u32,
    pub moves: u32,
    pub custom_id: Option<Box<str>>,
    pub received: i64,
}

#[derive(Debug, Clone)]
pub enum Entry {
    Present(u32),
    Removed(Tombstone),
}

#[derive(Debug, Clone)]
pub struct Folder {
    pub key: u32,
    pub parent: Option<u32>,
    pub display_name: String,
    pub well_known: Option<String>,
    pub hidden: bool,
    /// A folder id given by the world file (otherwise the id is generated from the key).
    pub custom_id: Option<String>,
    pub children: Vec<u32>,
    pub log: BTreeMap<u64, Entry>,
    pub by_received: BTreeSet<(Reverse<i64>, u32)>,
}

#[derive(Debug)]
pub struct MailboxData {
    pub tag: [u8; 16],
    pub folders: Vec<Folder>,
    pub messages: Vec<Option<MessageRecord>>,
    custom_message_ids: HashMap<String, u32>,
    custom_folder_ids: HashMap<String, u32>,
    /// The mailbox-wide change sequence (last one handed out).
    pub seq: u64,
    /// Bumped when delta tokens are evicted: older tokens get 410 SyncStateNotFound.
    pub generation: u32,
    pub root: u32,
}

/// How a message id named its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdForm {
    Rest,
    Immutable,
}

impl MailboxData {
    /// A mailbox with the default folder tree of Exchange Online.
    pub fn new(user_id: &str) -> MailboxData {
        let mut data = MailboxData {
            tag: ids::mailbox_tag(user_id),
            folders: Vec::new(),
            messages: Vec::new(),
            custom_message_ids: HashMap::new(),
            custom_folder_ids: HashMap::new(),
            seq: 0,
            generation: 1,
            root: 0,
        };
        let root = data.add_folder(
            None,
            "Top of Information Store",
            Some("msgfolderroot"),
            false,
        );
        data.root = root;
        for (wk, name, hidden) in DEFAULT_FOLDERS {
            let key = data.add_folder(Some(root), name, Some(wk), hidden);
            if wk == "syncissues" {
                for (child_wk, child_name) in SYNC_ISSUES_CHILDREN {
                    data.add_folder(Some(key), child_name, Some(child_wk), false);
                }
            }
        }
        // Outside the IPM subtree: resolvable by name, never listed.
        data.add_folder(None, "Deletions", Some("recoverableitemsdeletions"), true);
        data
    }

    pub fn add_folder(
        &mut self,
        parent: Option<u32>,
        display_name: &str,
        well_known: Option<&str>,
        hidden: bool,
    ) -> u32 {
        let key = self.folders.len() as u32;
        self.folders.push(Folder {
            key,
            parent,
            display_name: display_name.to_owned(),
            well_known: well_known.map(str::to_owned),
            hidden,
            custom_id: None,
            children: Vec::new(),
            log: BTreeMap::new(),
            by_received: BTreeSet::new(),
        });
        if let Some(p) = parent {
            self.folders[p as usize].children.push(key);
        }
        key
    }

    pub fn set_custom_folder_id(&mut self, key: u32, id: &str) {
        self.folders[key as usize].custom_id = Some(id.to_owned());
        self.custom_folder_ids.insert(id.to_owned(), key);
    }

    pub fn folder_id(&self, key: u32) -> String {
        match &self.folders[key as usize].custom_id {
            Some(id) => id.clone(),
            None => ids::folder_id(&self.tag, key),
        }
    }

    /// A folder by id or well-known name (case-insensitive, as Graph resolves them).
    pub fn resolve_folder(&self, id_or_name: &str) -> Option<u32> {
        if let Some(&key) = self.custom_folder_ids.get(id_or_name) {
            return Some(key);
        }
        if let Some(DecodedId::Folder { key }) = ids::decode(&self.tag, id_or_name) {
            return ((key as usize) < self.folders.len()).then_some(key);
        }
        self.folders
            .iter()
            .find(|f| {
                f.well_known
                    .as_deref()
                    .is_some_and(|w| w.eq_ignore_ascii_case(id_or_name))
            })
            .map(|f| f.key)
    }

    /// A folder by well-known name or display name (world files and the control API name folders that way).
    pub fn resolve_folder_loose(&self, name: &str) -> Option<u32> {
        self.resolve_folder(name).or_else(|| {
            self.folders
                .iter()
                .find(|f| f.display_name.eq_ignore_ascii_case(name))
                .map(|f| f.key)
        })
    }

    pub fn rest_id(&self, key: u32, rec: &MessageRecord) -> String {
        match (&rec.custom_id, rec.moves) {
            (Some(id), 0) => id.to_string(),
            _ => ids::rest_message_id(&self.tag, key, rec.moves),
        }
    }

    pub fn immutable_id(&self, key: u32) -> String {
        ids::immutable_message_id(&self.tag, key)
    }

    pub fn tombstone_id(&self, t: &Tombstone, immutable: bool) -> String {
        if immutable {
            return self.immutable_id(t.key);
        }
        match (&t.custom_id, t.moves) {
            (Some(id), 0) => id.to_string(),
            _ => ids::rest_message_id(&self.tag, t.key, t.moves),
        }
    }

    /// A live message by REST id (only its current one) or immutable id.
    pub fn resolve_message(&self, id: &str) -> Option<(u32, IdForm)> {
        if let Some(&key) = self.custom_message_ids.get(id) {
            let rec = self.messages.get(key as usize)?.as_ref()?;
            return (rec.moves == 0).then_some((key, IdForm::Rest));
        }
        match ids::decode(&self.tag, id)? {
            DecodedId::Rest { key, moves } => {
                let rec = self.messages.get(key as usize)?.as_ref()?;
                (rec.moves == moves && !(moves == 0 && rec.custom_id.is_some()))
                    .then_some((key, IdForm::Rest))
            }
            DecodedId::Immutable { key } => {
                self.messages.get(key as usize)?.as_ref()?;
                Some((key, IdForm::Immutable))
            }
            DecodedId::Folder { .. } => None,
        }
    }

    /// Whether `id` is shaped like an id of this mailbox (an item that is gone or moved is "not found", anything
    /// else "malformed").
    pub fn is_message_id_shape(&self, id: &str) -> bool {
        self.custom_message_ids.contains_key(id)
            || matches!(
                ids::decode(&self.tag, id),
                Some(DecodedId::Rest { .. } | DecodedId::Immutable { .. })
            )
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Adds a message to `folder`; returns its key.
    pub fn insert(
        &mut self,
        folder: u32,
        content: Content,
        received: i64,
        created: i64,
        custom_id: Option<String>,
        now: i64,
    ) -> u32 {
        let key = self.messages.len() as u32;
        let seq = self.next_seq();
        if let Some(id) = &custom_id {
            self.custom_message_ids.insert(id.clone(), key);
        }
        self.messages.push(Some(MessageRecord {
            folder,
            moves: 0,
            custom_id: custom_id.map(String::into_boxed_str),
            seq,
            entered_seq: seq,
            version: 1,
            received,
            created,
            last_modified: now.max(created),
            content,
        }));
        let f = &mut self.folders[folder as usize];
        f.log.insert(seq, Entry::Present(key));
        f.by_received.insert((Reverse(received), key));
        key
    }

    /// Replaces a message's content (an update: new change key, new sequence, same ids and folder).
    pub fn update(&mut self, key: u32, content: Content, received: i64, now: i64) -> Option<()> {
        let seq = self.next_seq();
        let rec = self.messages.get_mut(key as usize)?.as_mut()?;
        let folder = &mut self.folders[rec.folder as usize];
        folder.log.remove(&rec.seq);
        folder.log.insert(seq, Entry::Present(key));
        if rec.received != received {
            folder.by_received.remove(&(Reverse(rec.received), key));
            folder.by_received.insert((Reverse(received), key));
        }
        rec.seq = seq;
        rec.version += 1;
        rec.received = received;
        rec.last_modified = now.max(rec.last_modified + 1);
        rec.content = content;
        Some(())
    }

    /// Leaves a tombstone in the message's folder and drops its index entries.
    fn remove_from_folder(&mut self, key: u32) -> Option<()> {
        let seq = self.next_seq();
        let rec = self.messages.get(key as usize)?.as_ref()?;
        let tombstone = Tombstone {
            key,
            moves: rec.moves,
            custom_id: rec.custom_id.clone(),
            received: rec.received,
        };
        let (old_seq, received, folder) = (rec.seq, rec.received, rec.folder);
        let f = &mut self.folders[folder as usize];
        f.log.remove(&old_seq);
        f.by_received.remove(&(Reverse(received), key));
        f.log.insert(seq, Entry::Removed(tombstone));
        Some(())
    }

    pub fn delete(&mut self, key: u32) -> Option<()> {
        self.remove_from_folder(key)?;
        // A world id stays known, so asking for the deleted message is "not found" rather than "malformed".
        self.messages.get_mut(key as usize)?.take()?;
        Some(())
    }

    /// Moves a message: a tombstone in the old folder, a new entry (and a new REST id) in the new one.
    pub fn move_to(&mut self, key: u32, to: u32, now: i64) -> Option<()> {
        let rec = self.messages.get(key as usize)?.as_ref()?;
        if rec.folder == to {
            return Some(());
        }
        self.remove_from_folder(key)?;
        let seq = self.next_seq();
        let rec = self.messages.get_mut(key as usize)?.as_mut()?;
        rec.folder = to;
        rec.moves += 1;
        rec.seq = seq;
        rec.entered_seq = seq;
        rec.version += 1;
        rec.last_modified = now.max(rec.last_modified + 1);
        let received = rec.received;
        let f = &mut self.folders[to as usize];
        f.log.insert(seq, Entry::Present(key));
        f.by_received.insert((Reverse(received), key));
        Some(())
    }

    pub fn message(&self, key: u32) -> Option<&MessageRecord> {
        self.messages.get(key as usize)?.as_ref()
    }

    /// Number of messages and unread messages in a folder.
    pub fn counts(&self, folder: u32) -> (usize, usize) {
        let f = &self.folders[folder as usize];
        let unread = f
            .by_received
            .iter()
            .filter(|(_, k)| self.message(*k).is_some_and(|m| !m.is_read()))
            .count();
        (f.by_received.len(), unread)
    }

    /// The folders `/me/mailFolders` and `childFolders` list under `parent`, ordered by display name.
    pub fn child_folders(&self, parent: u32, include_hidden: bool) -> Vec<u32> {
        let mut children: Vec<u32> = self.folders[parent as usize]
            .children
            .iter()
            .copied()
            .filter(|&c| include_hidden || !self.folders[c as usize].hidden)
            .collect();
        children.sort_by_key(|&c| self.folders[c as usize].display_name.to_lowercase());
        children
    }
}

/// A mailbox owner and their mailbox.
#[derive(Debug)]
pub struct Mailbox {
    pub user_id: String,
    pub tenant_id: String,
    pub owner: Owner,
    pub data: std::sync::RwLock<MailboxData>,
}

impl Mailbox {
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, MailboxData> {
        self.data.read().expect("mailbox lock")
    }

    pub fn write(&self) -> std::sync::RwLockWriteGuard<'_, MailboxData> {
        self.data.write().expect("mailbox lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(subject: &str) -> Content {
        let mut m = Map::new();
        m.insert("subject".into(), Value::from(subject));
        Content::Json(Box::new(m))
    }

    #[test]
    fn default_tree_and_well_known_resolution() {
        let data = MailboxData::new("u1");
        let inbox = data.resolve_folder("Inbox").unwrap();
        assert_eq!(data.folders[inbox as usize].display_name, "Inbox");
        assert_eq!(data.resolve_folder(&data.folder_id(inbox)), Some(inbox));
        assert!(data.resolve_folder("clutter").is_none());
        let listed = data.child_folders(data.root, false);
        assert_eq!(listed.len(), 9);
        assert_eq!(data.child_folders(data.root, true).len(), 10);
    }

    #[test]
    fn moves_change_rest_ids_but_not_immutable_ids() {
        let mut data = MailboxData::new("u1");
        let inbox = data.resolve_folder("inbox").unwrap();
        let archive = data.resolve_folder("archive").unwrap();
        let key = data.insert(inbox, json("a"), 100, 100, None, 100);
        let rest_before = data.rest_id(key, data.message(key).unwrap());
        let imm = data.immutable_id(key);
        data.move_to(key, archive, 200).unwrap();
        let rest_after = data.rest_id(key, data.message(key).unwrap());
        assert_ne!(rest_before, rest_after);
        assert_eq!(data.resolve_message(&rest_before), None);
        assert_eq!(data.resolve_message(&rest_after), Some((key, IdForm::Rest)));
        assert_eq!(data.resolve_message(&imm), Some((key, IdForm::Immutable)));
        // The inbox keeps a tombstone naming the id the client knew.
        let (_, entry) = data.folders[inbox as usize].log.iter().next_back().unwrap();
        match entry {
            Entry::Removed(t) => assert_eq!(data.tombstone_id(t, false), rest_before),
            Entry::Present(_) => panic!("expected a tombstone"),
        }
        assert!(data.folders[inbox as usize].by_received.is_empty());
    }

    #[test]
    fn world_ids_live_until_the_first_move() {
        let mut data = MailboxData::new("u1");
        let inbox = data.resolve_folder("inbox").unwrap();
        let archive = data.resolve_folder("archive").unwrap();
        let key = data.insert(inbox, json("a"), 1, 1, Some("AAMkWorld=".into()), 1);
        assert_eq!(
            data.resolve_message("AAMkWorld="),
            Some((key, IdForm::Rest))
        );
        data.move_to(key, archive, 2).unwrap();
        assert_eq!(data.resolve_message("AAMkWorld="), None);
        assert!(
            data.rest_id(key, data.message(key).unwrap())
                .starts_with("AAMk")
        );
    }
}
