//! Outlook-style identifiers for messages and folders.
//!
//! Real ids are URL-safe base64 of binary entry ids: REST message ids start `AAMk`, immutable ids `AAkALgAA`,
//! folder ids `AQMk`. Ours have the same look and carry what the store needs to find the item without a lookup
//! table: a per-mailbox tag, the item key, and (REST ids only) the move generation, so a REST id dies when its
//! message moves (`ErrorItemNotFound`, as Outlook does) while the immutable id stays. A checksum makes edited ids
//! fail to decode instead of hitting another item.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use sha2::{Digest, Sha256};

const REST_PREFIX: [u8; 3] = [0x00, 0x03, 0x24];
const IMMUTABLE_PREFIX: [u8; 6] = [0x00, 0x09, 0x00, 0x2E, 0x00, 0x00];
const FOLDER_PREFIX: [u8; 3] = [0x01, 0x03, 0x24];
/// Real entry ids embed store and folder GUIDs; this filler keeps ours at a realistic length (~100 characters).
const FILLER: [u8; 24] = [
    0x00, 0x46, 0x00, 0x00, 0x00, 0x00, 0x07, 0x00, 0x51, 0x9F, 0x6B, 0xDD, 0xCC, 0xF1, 0x63, 0x49,
    0xB6, 0x8F, 0x3F, 0x1C, 0xE3, 0x97, 0x33, 0x93,
];

/// The 16-byte tag of a mailbox, derived from its owner's object id.
pub fn mailbox_tag(user_id: &str) -> [u8; 16] {
    let digest = Sha256::digest(user_id.to_ascii_lowercase().as_bytes());
    let mut tag = [0u8; 16];
    tag.copy_from_slice(&digest[..16]);
    tag
}

fn checksum(bytes: &[u8]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(b"microsoft-sim/outlook-id");
    h.update(bytes);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

fn encode(prefix: &[u8], tag: &[u8; 16], key: u32, moves: Option<u32>) -> String {
    let mut bytes = Vec::with_capacity(64);
    bytes.extend_from_slice(prefix);
    bytes.extend_from_slice(tag);
    bytes.extend_from_slice(&FILLER);
    bytes.extend_from_slice(&key.to_be_bytes());
    if let Some(moves) = moves {
        bytes.extend_from_slice(&moves.to_be_bytes());
    }
    let check = checksum(&bytes);
    bytes.extend_from_slice(&check);
    URL_SAFE.encode(bytes)
}

/// What an id decodes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodedId {
    /// A REST message id: message `key` as it was named after `moves` moves.
    Rest {
        key: u32,
        moves: u32,
    },
    Immutable {
        key: u32,
    },
    Folder {
        key: u32,
    },
}

pub fn rest_message_id(tag: &[u8; 16], key: u32, moves: u32) -> String {
    encode(&REST_PREFIX, tag, key, Some(moves))
}

pub fn immutable_message_id(tag: &[u8; 16], key: u32) -> String {
    encode(&IMMUTABLE_PREFIX, tag, key, None)
}

pub fn folder_id(tag: &[u8; 16], key: u32) -> String {
    encode(&FOLDER_PREFIX, tag, key, None)
}

/// Decodes an id of the mailbox `tag`; `None` for anything else (another mailbox's id, garbage, an edited id).
pub fn decode(tag: &[u8; 16], id: &str) -> Option<DecodedId> {
    let bytes = URL_SAFE.decode(id).ok()?;
    let (body, check) = bytes.split_at(bytes.len().checked_sub(4)?);
    if checksum(body) != check {
        return None;
    }
    let (kind, rest) = if let Some(rest) = body.strip_prefix(&IMMUTABLE_PREFIX[..]) {
        (1, rest)
    } else if let Some(rest) = body.strip_prefix(&REST_PREFIX[..]) {
        (0, rest)
    } else if let Some(rest) = body.strip_prefix(&FOLDER_PREFIX[..]) {
        (2, rest)
    } else {
        return None;
    };
    let rest = rest.strip_prefix(&tag[..])?.strip_prefix(&FILLER[..])?;
    let key = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    match (kind, rest.len()) {
        (0, 8) => Some(DecodedId::Rest {
            key,
            moves: u32::from_be_bytes(rest[4..8].try_into().ok()?),
        }),
        (1, 4) => Some(DecodedId::Immutable { key }),
        (2, 4) => Some(DecodedId::Folder { key }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_look_like_outlook() {
        let tag = mailbox_tag("5f3b2c4e-0000-4000-8000-000000000001");
        let rest = rest_message_id(&tag, 42, 3);
        let imm = immutable_message_id(&tag, 42);
        let folder = folder_id(&tag, 7);
        assert!(rest.starts_with("AAMk"), "{rest}");
        assert!(imm.starts_with("AAkALgAA"), "{imm}");
        assert!(folder.starts_with("AQMk"), "{folder}");
        assert_eq!(
            decode(&tag, &rest),
            Some(DecodedId::Rest { key: 42, moves: 3 })
        );
        assert_eq!(decode(&tag, &imm), Some(DecodedId::Immutable { key: 42 }));
        assert_eq!(decode(&tag, &folder), Some(DecodedId::Folder { key: 7 }));
        assert_ne!(
            rest,
            rest_message_id(&tag, 42, 4),
            "a move must change the REST id"
        );
    }

    #[test]
    fn foreign_or_edited_ids_do_not_decode() {
        let tag = mailbox_tag("a");
        let other = mailbox_tag("b");
        let id = rest_message_id(&tag, 1, 0);
        assert_eq!(decode(&other, &id), None);
        let mut edited = id.clone().into_bytes();
        edited[20] = if edited[20] == b'A' { b'B' } else { b'A' };
        assert_eq!(decode(&tag, std::str::from_utf8(&edited).unwrap()), None);
        assert_eq!(decode(&tag, "not-an-id"), None);
    }
}
