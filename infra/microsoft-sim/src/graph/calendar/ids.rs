//! Outlook-style event identifiers.
//!
//! Real event ids are URL-safe base64 of binary entry ids (REST ids start `AAMk`, immutable ids `AAkALgAA`), and an
//! occurrence's id is its series master's id with the occurrence's original date folded in. Ours carry the
//! 16-byte item hash and that date, so any occurrence of a `noEnd` series can be found without a lookup table; a
//! checksum makes edited ids fail to decode instead of hitting another item. `iCalUId`s follow Outlook's
//! GlobalObjectId layout, whose bytes 16..20 hold the occurrence date (zero on the master).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use sha2::{Digest, Sha256};
use time::{Date, Month};

pub type ItemHash = [u8; 16];

const REST_PREFIX: [u8; 3] = [0x00, 0x03, 0x24];
const IMMUTABLE_PREFIX: [u8; 6] = [0x00, 0x09, 0x00, 0x2E, 0x00, 0x00];
/// Stands in for the store and folder GUIDs real entry ids embed, to keep ids at a realistic length.
const FILLER: [u8; 22] = [
    0x00, 0x46, 0x00, 0x00, 0x00, 0x00, 0x1C, 0x1A, 0x7E, 0x0B, 0x2D, 0x43, 0x71, 0x4E, 0x9A, 0x86,
    0x5D, 0xC2, 0x0E, 0x31, 0x50, 0x07,
];
const GOID_PREFIX: &str = "040000008200E00074C5B7101A82E008";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdForm {
    Rest,
    Immutable,
}

/// An event or occurrence as an id names it: the item and, for occurrences, the original local start date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceKey {
    pub item: ItemHash,
    pub date: Option<Date>,
}

fn checksum(bytes: &[u8]) -> [u8; 4] {
    let digest = Sha256::new()
        .chain_update(b"microsoft-sim/event-id")
        .chain_update(bytes)
        .finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

fn date_bytes(date: Option<Date>) -> [u8; 4] {
    match date {
        None => [0; 4],
        Some(d) => {
            let [hi, lo] = (d.year() as u16).to_be_bytes();
            [hi, lo, u8::from(d.month()), d.day()]
        }
    }
}

pub fn encode(form: IdForm, key: InstanceKey) -> String {
    let mut bytes = Vec::with_capacity(64);
    bytes.extend_from_slice(match form {
        IdForm::Rest => &REST_PREFIX[..],
        IdForm::Immutable => &IMMUTABLE_PREFIX[..],
    });
    bytes.extend_from_slice(&FILLER);
    bytes.extend_from_slice(&key.item);
    bytes.extend_from_slice(&date_bytes(key.date));
    let check = checksum(&bytes);
    bytes.extend_from_slice(&check);
    URL_SAFE.encode(bytes)
}

/// The key an id of ours names; `None` for anything else (garbage, an edited id, a mail id).
pub fn decode(id: &str) -> Option<InstanceKey> {
    let bytes = URL_SAFE.decode(id.trim()).ok()?;
    let (body, check) = bytes.split_at(bytes.len().checked_sub(4)?);
    if checksum(body) != check {
        return None;
    }
    let rest = body
        .strip_prefix(&REST_PREFIX[..])
        .or_else(|| body.strip_prefix(&IMMUTABLE_PREFIX[..]))?;
    let rest = rest.strip_prefix(&FILLER[..])?;
    if rest.len() != 20 {
        return None;
    }
    let mut item = [0u8; 16];
    item.copy_from_slice(&rest[..16]);
    let date = match rest[16..20] {
        [0, 0, 0, 0] => None,
        [hi, lo, month, day] => Some(
            Date::from_calendar_date(
                i32::from(u16::from_be_bytes([hi, lo])),
                Month::try_from(month).ok()?,
                day,
            )
            .ok()?,
        ),
        _ => return None,
    };
    Some(InstanceKey { item, date })
}

/// A stable item hash from the mailbox owner and a name (a world id or position).
pub fn item_hash(user_id: &str, name: &str) -> ItemHash {
    let digest = Sha256::new()
        .chain_update(b"microsoft-sim/event|")
        .chain_update(user_id.to_ascii_lowercase().as_bytes())
        .chain_update(b"|")
        .chain_update(name.as_bytes())
        .finalize();
    let mut hash = [0u8; 16];
    hash.copy_from_slice(&digest[..16]);
    hash
}

/// A GlobalObjectId-shaped `iCalUId` for a new series or single event.
pub fn new_ical_uid(hash: &ItemHash) -> String {
    // Instance date (zero on a master), creation time, reserved, then the little-endian data size (16).
    format!(
        "{GOID_PREFIX}00000000{zeros}{zeros}10000000{}",
        hex::encode_upper(hash),
        zeros = "0".repeat(16)
    )
}

/// The `iCalUId` of one occurrence: the series' GlobalObjectId with the occurrence date in bytes 16..20. A
/// series whose uid is not a GlobalObjectId (an imported iCalendar UID) gets one derived from it.
pub fn occurrence_ical_uid(series_uid: &str, date: Date) -> String {
    let goid = if series_uid.len() >= 40
        && series_uid[..32].eq_ignore_ascii_case(GOID_PREFIX)
        && series_uid.bytes().all(|b| b.is_ascii_hexdigit())
    {
        series_uid.to_ascii_uppercase()
    } else {
        let digest = Sha256::digest(series_uid.as_bytes());
        let mut hash = [0u8; 16];
        hash.copy_from_slice(&digest[..16]);
        new_ical_uid(&hash)
    };
    format!(
        "{}{}{}",
        &goid[..32],
        hex::encode_upper(date_bytes(Some(date))),
        &goid[40..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn ids_round_trip_and_look_like_outlook() {
        let key = InstanceKey {
            item: item_hash("u", "x"),
            date: Some(date!(2026 - 12 - 16)),
        };
        let rest = encode(IdForm::Rest, key);
        let immutable = encode(IdForm::Immutable, key);
        assert!(rest.starts_with("AAMk"), "{rest}");
        assert!(immutable.starts_with("AAkALgAA"), "{immutable}");
        assert_ne!(rest, immutable);
        assert_eq!(decode(&rest), Some(key));
        assert_eq!(decode(&immutable), Some(key));
        let master = InstanceKey { date: None, ..key };
        assert_eq!(decode(&encode(IdForm::Rest, master)), Some(master));
        let mut edited = rest.clone().into_bytes();
        edited[40] = if edited[40] == b'A' { b'B' } else { b'A' };
        assert_eq!(decode(std::str::from_utf8(&edited).unwrap()), None);
    }

    #[test]
    fn occurrence_uids_carry_the_date() {
        let master = new_ical_uid(&item_hash("u", "x"));
        assert_eq!(&master[32..40], "00000000");
        let occurrence = occurrence_ical_uid(&master, date!(2026 - 12 - 16));
        assert_eq!(&occurrence[32..40], "07EA0C10");
        assert_eq!(occurrence[..32], master[..32]);
        assert_eq!(occurrence[40..], master[40..]);
        let imported = occurrence_ical_uid("abc123@google.com", date!(2026 - 12 - 16));
        assert!(imported.starts_with(GOID_PREFIX));
    }
}
