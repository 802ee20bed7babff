//! Explicit Consent Mode's meetings, in the host's partition of the activities table.
//!
//! | Item | `activityId` | Holds | Index `ByConsentKey` (`consentKey`, `consentSort`) |
//! |---|---|---|---|
//! | the meeting | `consent#m#{eventId}` | the [`ConsentMeeting`] | while something is due: `due`, `{epoch s, 12 digits}#{owner}#{eventId}` |
//! | each link | `consent#t#{sha256(token)}` | `eventId` | `token#{sha256(token)}`, `t` |
//!
//! The index is sparse and projects the keys and `eventId` only: a token is found by its
//! digest (the token itself is in the meeting, which the platform API reads to hand the
//! links out), and the due meetings by one range Query. A meeting expires (`expiresAt`)
//! like its activity: its end plus the tenant's retention; a link a week after the end.
//! Everything is in the owner's partition, so `delete_all_activities` (disconnection,
//! offboarding) deletes it with the meetings; activity listings skip it (`consent#`).

use super::*;
use crate::domain::meeting_consent::LINK_LIFETIME_AFTER_END;
use crate::domain::{ConsentMeeting, LinkToken};
use crate::ports::ConsentMeetingStore;

/// The sparse index of links and due meetings.
pub const BY_CONSENT_KEY_INDEX: &str = "ByConsentKey";
/// Every consent item's `activityId` starts with this (activity listings skip it).
pub const CONSENT_ITEM_PREFIX: &str = "consent#";
const MEETING_PREFIX: &str = "consent#m#";
const LINK_PREFIX: &str = "consent#t#";
const DUE_KEY: &str = "due";

fn meeting_sort(event_id: &str) -> String {
    format!("{MEETING_PREFIX}{event_id}")
}

fn owner_key(owner: &UserKey, sort: String) -> Item {
    HashMap::from([
        ("owner".to_owned(), s(owner.to_string())),
        ("activityId".to_owned(), s(sort)),
    ])
}

pub struct DynamoConsentMeetingStore {
    client: Client,
    table: String,
    backoff: Backoff,
    retention: Option<ActivityRetention>,
}

impl DynamoConsentMeetingStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            backoff: Backoff::default(),
            retention: None,
        }
    }

    /// Meetings expire with the activities: their end plus the tenant's retention.
    pub fn with_retention(mut self, retention: ActivityRetention) -> Self {
        self.retention = Some(retention);
        self
    }

    fn decode(&self, item: Item) -> Result<ConsentMeeting, StoreError> {
        let key = format!(
            "{}/{}",
            string_attr(&item, "owner").unwrap_or("?"),
            string_attr(&item, "activityId").unwrap_or("?")
        );
        from_item(item, &self.table, &key)
    }

    async fn meeting_item(&self, meeting: &ConsentMeeting) -> Result<Item, StoreError> {
        let owner = meeting.owner();
        let sort = meeting_sort(&meeting.event_id);
        let mut item = to_item(meeting, &self.table, &sort)?;
        item.extend(owner_key(&owner, sort));
        if let Some(retention) = &self.retention {
            let days = retention.days(&meeting.tenant_id).await?;
            let expires = meeting.end + time::Duration::days(i64::from(days));
            item.insert("expiresAt".into(), n(expires.unix_timestamp()));
        }
        if let Some(due) = meeting.next_due() {
            item.insert("consentKey".into(), s(DUE_KEY));
            item.insert(
                "consentSort".into(),
                s(format!(
                    "{:012}#{owner}#{}",
                    due.unix_timestamp().max(0),
                    meeting.event_id
                )),
            );
        }
        Ok(item)
    }

    fn link_item(&self, meeting: &ConsentMeeting, token: &LinkToken) -> Item {
        let digest = token.digest();
        let mut item = owner_key(&meeting.owner(), format!("{LINK_PREFIX}{digest}"));
        item.insert("consentKey".into(), s(format!("token#{digest}")));
        item.insert("consentSort".into(), s("t"));
        item.insert("eventId".into(), s(meeting.event_id.clone()));
        item.insert(
            "expiresAt".into(),
            n((meeting.end + LINK_LIFETIME_AFTER_END).unix_timestamp()),
        );
        item
    }

    async fn query_index(
        &self,
        key: &str,
        upto: Option<String>,
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut request = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(BY_CONSENT_KEY_INDEX)
                .expression_attribute_names("#key", "consentKey")
                .expression_attribute_values(":key", s(key))
                .set_exclusive_start_key(start.take());
            request = match &upto {
                Some(upto) => request
                    .key_condition_expression("#key = :key AND #sort <= :upto")
                    .expression_attribute_names("#sort", "consentSort")
                    .expression_attribute_values(":upto", s(upto.clone())),
                None => request.key_condition_expression("#key = :key"),
            };
            let output = request
                .send()
                .await
                .map_err(|error| backend("Query", &self.table, error))?;
            items.extend(output.items.unwrap_or_default());
            if items.len() >= limit {
                items.truncate(limit);
                return Ok(items);
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }
}

#[async_trait]
impl ConsentMeetingStore for DynamoConsentMeetingStore {
    async fn get_consent_meeting(
        &self,
        owner: &UserKey,
        event_id: &str,
    ) -> Result<Option<ConsentMeeting>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(owner_key(owner, meeting_sort(event_id))))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| backend("GetItem", &self.table, error))?;
        output.item.map(|item| self.decode(item)).transpose()
    }

    async fn list_consent_meetings(
        &self,
        owner: &UserKey,
    ) -> Result<Vec<ConsentMeeting>, StoreError> {
        query_partition(
            &self.client,
            &self.table,
            ("owner", &owner.to_string()),
            ("activityId", Some(MEETING_PREFIX)),
            false,
        )
        .await?
        .into_iter()
        .map(|item| self.decode(item))
        .collect()
    }

    async fn save_consent_meeting(
        &self,
        meeting: &ConsentMeeting,
        before: Option<&ConsentMeeting>,
    ) -> Result<Option<ConsentMeeting>, StoreError> {
        let old: HashSet<&LinkToken> = before.into_iter().flat_map(|b| b.tokens()).collect();
        let new: HashSet<&LinkToken> = meeting.tokens().collect();
        // New links first: a link item naming a meeting that then fails to save names a
        // meeting without that link, which no page opens.
        let puts = new
            .iter()
            .filter(|token| !old.contains(*token))
            .map(|token| put_request(self.link_item(meeting, token), &self.table))
            .collect::<Result<Vec<_>, _>>()?;
        batch_write(&self.client, &self.table, puts, self.backoff).await?;
        let mut saved = meeting.clone();
        saved.version = before.map_or(0, |b| b.version) + 1;
        let item = self.meeting_item(&saved).await?;
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .expression_attribute_names("#id", "activityId");
        let request = match before {
            Some(before) => request
                .condition_expression("attribute_exists(#id) AND #version = :version")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":version", n(before.version)),
            None => request.condition_expression("attribute_not_exists(#id)"),
        };
        if conditional(request.send().await, "PutItem", &self.table)?.is_none() {
            return Ok(None);
        }
        let deletes = old
            .iter()
            .filter(|token| !new.contains(*token))
            .map(|token| {
                delete_request(
                    owner_key(&meeting.owner(), format!("{LINK_PREFIX}{}", token.digest())),
                    &self.table,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        batch_write(&self.client, &self.table, deletes, self.backoff).await?;
        Ok(Some(saved))
    }

    async fn find_consent_meeting(
        &self,
        token: &LinkToken,
    ) -> Result<Option<ConsentMeeting>, StoreError> {
        let links = self
            .query_index(&format!("token#{}", token.digest()), None, 1)
            .await?;
        let Some(link) = links.first() else {
            return Ok(None);
        };
        let (Some(owner), Some(event_id)) =
            (string_attr(link, "owner"), string_attr(link, "eventId"))
        else {
            return Ok(None);
        };
        let Ok(owner) = UserKey::parse(owner) else {
            return Ok(None);
        };
        // The meeting must still hold the token: a dropped guest's link opens nothing.
        Ok(self
            .get_consent_meeting(&owner, event_id)
            .await?
            .filter(|meeting| meeting.holder(token).is_some()))
    }

    async fn due_consent_meetings(
        &self,
        until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<(UserKey, String)>, StoreError> {
        // `~` sorts after every owner and id character: all of `until`'s second.
        let upto = format!("{:012}~", until.unix_timestamp().max(0));
        let items = self.query_index(DUE_KEY, Some(upto), limit).await?;
        Ok(items
            .iter()
            .filter_map(|item| {
                let owner = UserKey::parse(string_attr(item, "owner")?).ok()?;
                let event_id = string_attr(item, "activityId")?.strip_prefix(MEETING_PREFIX)?;
                Some((owner, event_id.to_owned()))
            })
            .collect())
    }
}
