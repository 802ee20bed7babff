//! Share targets: the teams a user belongs to and the channels in them the user can see,
//! as `GET /me/joinedTeams` and `GET /teams/{id}/channels` answered at the last refresh.
//! The platform offers them as places to share to; teams-post refreshes them on a
//! `refreshTargets` message.
//!
//! Stored in the SyncStateTable under the user's `teams` partition
//! (`syncKey = {tenantId}#{userId}#teams`): one `targets` item (when, how many) and one
//! `team#{teamId}` item per team with its channels, so a user in hundreds of teams never
//! meets DynamoDB's 400 KB item limit. No new table: the partition lives and dies with the
//! user's other sync state.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::domain::{TenantId, UserId, UserKey};
use crate::ports::StoreError;

/// A channel the user can see.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelTarget {
    pub id: String,
    pub display_name: String,
    /// `standard`, `private` or `shared`, as Graph reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership_type: Option<String>,
}

/// A team the user belongs to, with its visible channels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TeamTarget {
    pub id: String,
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub channels: Vec<ChannelTarget>,
}

/// Everything a user can share to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShareTargets {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    #[serde(with = "time::serde::rfc3339")]
    pub refreshed_at: OffsetDateTime,
    /// Ordered by display name, then id.
    pub teams: Vec<TeamTarget>,
}

impl ShareTargets {
    pub fn user(&self) -> UserKey {
        UserKey::new(self.tenant_id.clone(), self.user_id.clone())
    }

    pub fn channel_count(&self) -> usize {
        self.teams.iter().map(|team| team.channels.len()).sum()
    }

    /// Sorts teams and channels the way readers get them.
    pub fn normalise(&mut self) {
        self.teams.sort_by(|a, b| {
            (a.display_name.to_lowercase(), &a.id).cmp(&(b.display_name.to_lowercase(), &b.id))
        });
        for team in &mut self.teams {
            team.channels.sort_by(|a, b| {
                (a.display_name.to_lowercase(), &a.id).cmp(&(b.display_name.to_lowercase(), &b.id))
            });
        }
    }
}

/// The `syncKey` of a user's share targets in the SyncStateTable.
pub fn targets_partition(user: &UserKey) -> String {
    format!("{user}#teams")
}

#[async_trait]
pub trait ShareTargetStore: Send + Sync {
    /// Makes `targets` the user's share targets (teams no longer listed are removed).
    async fn replace_targets(&self, targets: &ShareTargets) -> Result<(), StoreError>;
    /// `None` until the first refresh.
    async fn get_targets(&self, user: &UserKey) -> Result<Option<ShareTargets>, StoreError>;
    /// On disconnection.
    async fn delete_targets(&self, user: &UserKey) -> Result<(), StoreError>;
}
