//! The in-memory twin of [`ConsentMeetingStore`] (domain tests): the same rules as the
//! DynamoDB adapter (`dynamodb/meeting_consent.rs`): saves conditional on the version read,
//! a token opens its meeting only while the meeting holds it, the due meetings earliest
//! first.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::{ConsentMeeting, LinkToken, UserKey};
use crate::ports::{ConsentMeetingStore, StoreError};

#[derive(Default)]
pub struct MemoryConsentMeetingStore {
    meetings: Mutex<BTreeMap<(String, String), ConsentMeeting>>,
}

impl MemoryConsentMeetingStore {
    fn meetings(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), ConsentMeeting>> {
        self.meetings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Deletes a user's meetings (what deleting their activities does in DynamoDB).
    pub fn delete_user(&self, owner: &UserKey) {
        let owner = owner.to_string();
        self.meetings().retain(|(o, _), _| *o != owner);
    }
}

#[async_trait]
impl ConsentMeetingStore for MemoryConsentMeetingStore {
    async fn get_consent_meeting(
        &self,
        owner: &UserKey,
        event_id: &str,
    ) -> Result<Option<ConsentMeeting>, StoreError> {
        Ok(self
            .meetings()
            .get(&(owner.to_string(), event_id.to_owned()))
            .cloned())
    }

    async fn list_consent_meetings(
        &self,
        owner: &UserKey,
    ) -> Result<Vec<ConsentMeeting>, StoreError> {
        let owner = owner.to_string();
        Ok(self
            .meetings()
            .iter()
            .filter(|((o, _), _)| *o == owner)
            .map(|(_, meeting)| meeting.clone())
            .collect())
    }

    async fn save_consent_meeting(
        &self,
        meeting: &ConsentMeeting,
        before: Option<&ConsentMeeting>,
    ) -> Result<Option<ConsentMeeting>, StoreError> {
        let key = (meeting.owner().to_string(), meeting.event_id.clone());
        let mut meetings = self.meetings();
        let stored = meetings.get(&key).map(|m| m.version);
        if stored != before.map(|b| b.version) {
            return Ok(None);
        }
        let mut saved = meeting.clone();
        saved.version = before.map_or(0, |b| b.version) + 1;
        meetings.insert(key, saved.clone());
        Ok(Some(saved))
    }

    async fn find_consent_meeting(
        &self,
        token: &LinkToken,
    ) -> Result<Option<ConsentMeeting>, StoreError> {
        Ok(self
            .meetings()
            .values()
            .find(|meeting| meeting.holder(token).is_some())
            .cloned())
    }

    async fn due_consent_meetings(
        &self,
        until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<(UserKey, String)>, StoreError> {
        let mut due: Vec<(OffsetDateTime, UserKey, String)> = self
            .meetings()
            .values()
            .filter_map(|m| {
                let at = m.next_due()?;
                (at <= until).then(|| (at, m.owner(), m.event_id.clone()))
            })
            .collect();
        due.sort();
        Ok(due
            .into_iter()
            .take(limit)
            .map(|(_, owner, id)| (owner, id))
            .collect())
    }
}
