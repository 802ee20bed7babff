//! In-memory twin of the subscriptions store, with DynamoDB's semantics (one record per
//! user and kind, one per subscription id, the debounce as a conditional write).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::{SyncKind, UserKey};
use crate::notifications::{CreateFailure, Subscription, SubscriptionStore, UserSubscription};
use crate::ports::StoreError;

#[derive(Default)]
struct State {
    users: HashMap<(UserKey, SyncKind), UserSubscription>,
    ids: HashMap<String, (Subscription, Option<OffsetDateTime>)>,
}

#[derive(Default)]
pub struct MemorySubscriptionStore {
    state: Mutex<State>,
}

impl MemorySubscriptionStore {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every subscription id with a record.
    pub fn ids(&self) -> Vec<String> {
        self.state().ids.keys().cloned().collect()
    }
}

#[async_trait]
impl SubscriptionStore for MemorySubscriptionStore {
    async fn user_subscriptions(
        &self,
        user: &UserKey,
    ) -> Result<Vec<UserSubscription>, StoreError> {
        let state = self.state();
        Ok(SyncKind::ALL
            .iter()
            .filter_map(|kind| state.users.get(&(user.clone(), *kind)).cloned())
            .collect())
    }

    async fn subscriptions_of(
        &self,
        users: &[UserKey],
        kind: SyncKind,
    ) -> Result<HashMap<UserKey, UserSubscription>, StoreError> {
        let state = self.state();
        Ok(users
            .iter()
            .filter_map(|user| {
                let found = state.users.get(&(user.clone(), kind))?;
                Some((user.clone(), found.clone()))
            })
            .collect())
    }

    async fn by_id(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        Ok(self.state().ids.get(id).map(|(s, _)| s.clone()))
    }

    async fn save(
        &self,
        subscription: &Subscription,
        replaces: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        if let Some(old) = replaces.filter(|old| *old != subscription.id) {
            state.ids.remove(old);
        }
        state.users.insert(
            (subscription.user(), subscription.kind),
            UserSubscription {
                user: subscription.user(),
                kind: subscription.kind,
                active: Some(subscription.clone()),
                failure: None,
            },
        );
        state
            .ids
            .insert(subscription.id.clone(), (subscription.clone(), None));
        Ok(())
    }

    async fn record_failure(
        &self,
        user: &UserKey,
        kind: SyncKind,
        failure: &CreateFailure,
    ) -> Result<(), StoreError> {
        self.state().users.insert(
            (user.clone(), kind),
            UserSubscription {
                user: user.clone(),
                kind,
                active: None,
                failure: Some(failure.clone()),
            },
        );
        Ok(())
    }

    async fn remove(
        &self,
        user: &UserKey,
        kind: SyncKind,
        id: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let key = (user.clone(), kind);
        let names_other = match (id, state.users.get(&key).and_then(|u| u.active.as_ref())) {
            (Some(id), Some(active)) => active.id != id,
            _ => false,
        };
        if !names_other {
            state.users.remove(&key);
        }
        if let Some(id) = id {
            state.ids.remove(id);
        }
        Ok(())
    }

    async fn claim_wake(
        &self,
        id: &str,
        now: OffsetDateTime,
        window: Duration,
    ) -> Result<bool, StoreError> {
        let mut state = self.state();
        let Some((_, wake)) = state.ids.get_mut(id) else {
            return Ok(false);
        };
        if wake.is_some_and(|at| at > now - window) {
            return Ok(false);
        }
        *wake = Some(now);
        Ok(true)
    }
}
