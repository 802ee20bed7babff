//! JSON bodies of the messages on our SQS queues: sync jobs (mail and calendar queues)
//! and Teams messages (TeamsPostQueue). Field names are camelCase on the wire.

use serde::{Deserialize, Serialize};

use crate::domain::{SyncKey, SyncKind, TenantId, UserId};

/// Why a sync job was queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncReason {
    /// Right after sign-in.
    Initial,
    /// The schedule's fan-out.
    Scheduled,
    /// A worker ran out of time and queued the rest of its work.
    Continuation,
    /// An operator asked for it.
    Manual,
    /// A change notification of the user's subscription (debounced: one job per burst).
    Notified,
    /// Graph said notifications were lost (`missed`) or the subscription was removed:
    /// the whole delta round, at once.
    Resync,
    /// The tenant's CRM changed: catch up with it (`crm_catchup`), at once rather than at
    /// the next scheduled round (a subscribed user's may be hours away).
    CrmChanged,
}

/// One mailbox or calendar to sync:
/// `{"kind": "mail", "tenantId": "...", "userId": "...", "reason": "scheduled", "attempt": 0}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncJob {
    pub kind: SyncKind,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub reason: SyncReason,
    /// How many continuations/redeliveries preceded this job (0 for a fresh one).
    #[serde(default)]
    pub attempt: u32,
}

impl SyncJob {
    pub fn new(kind: SyncKind, tenant_id: TenantId, user_id: UserId, reason: SyncReason) -> Self {
        Self {
            kind,
            tenant_id,
            user_id,
            reason,
            attempt: 0,
        }
    }

    pub fn key(&self) -> SyncKey {
        SyncKey::new(self.tenant_id.clone(), self.user_id.clone(), self.kind)
    }

    /// The job that continues this one.
    pub fn continuation(&self) -> Self {
        Self {
            reason: SyncReason::Continuation,
            attempt: self.attempt.saturating_add(1),
            ..self.clone()
        }
    }
}

/// A message on SubscriptionQueue: work of the subscriptions function on one user's
/// subscription of one kind, tagged by `action`:
/// `{"action": "ensure", "kind": "mail", "tenantId": "...", "userId": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum SubscriptionJob {
    /// Make it exist and live long enough (after a completed sync run that found it
    /// missing or due for renewal), or remove it when the user should not have one.
    #[serde(rename_all = "camelCase")]
    Ensure {
        kind: SyncKind,
        tenant_id: TenantId,
        user_id: UserId,
    },
    /// `reauthorizationRequired`: renew subscription `subscription_id` now.
    #[serde(rename_all = "camelCase")]
    Renew {
        kind: SyncKind,
        tenant_id: TenantId,
        user_id: UserId,
        subscription_id: String,
    },
    /// `subscriptionRemoved`: Graph dropped `subscription_id`; create its successor.
    #[serde(rename_all = "camelCase")]
    Recreate {
        kind: SyncKind,
        tenant_id: TenantId,
        user_id: UserId,
        subscription_id: String,
    },
}

impl SubscriptionJob {
    pub fn kind(&self) -> SyncKind {
        match self {
            Self::Ensure { kind, .. } | Self::Renew { kind, .. } | Self::Recreate { kind, .. } => {
                *kind
            }
        }
    }

    pub fn user(&self) -> crate::domain::UserKey {
        match self {
            Self::Ensure {
                tenant_id, user_id, ..
            }
            | Self::Renew {
                tenant_id, user_id, ..
            }
            | Self::Recreate {
                tenant_id, user_id, ..
            } => crate::domain::UserKey::new(tenant_id.clone(), user_id.clone()),
        }
    }
}

/// Where a Teams post goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum TeamsTarget {
    #[serde(rename_all = "camelCase")]
    Channel { team_id: String, channel_id: String },
    #[serde(rename_all = "camelCase")]
    Chat { chat_id: String },
    /// Create the chat (a 1:1 returns the existing one) and post into it.
    #[serde(rename_all = "camelCase")]
    NewChat {
        /// UPNs or user object ids of the other members.
        members: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
    },
}

/// Post an HTML message as the user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TeamsPost {
    pub idempotency_key: String,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub target: TeamsTarget,
    pub html: String,
}

/// Refresh the teams and channels the user can post to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshTargets {
    pub tenant_id: TenantId,
    pub user_id: UserId,
}

/// A message on TeamsPostQueue, tagged by `kind`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum TeamsMessage {
    Post(TeamsPost),
    RefreshTargets(RefreshTargets),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const USER: &str = "00000000-0000-0000-0000-0000000000aa";

    #[test]
    fn sync_job_wire_format() {
        let job = SyncJob::new(
            SyncKind::Mail,
            TenantId::parse(TENANT).expect("guid"),
            UserId::parse(USER).expect("guid"),
            SyncReason::Scheduled,
        );
        let value = serde_json::to_value(&job).expect("serialises");
        assert_eq!(
            value,
            json!({"kind": "mail", "tenantId": TENANT, "userId": USER, "reason": "scheduled", "attempt": 0})
        );
        let next = job.continuation();
        assert_eq!(next.reason, SyncReason::Continuation);
        assert_eq!(next.attempt, 1);
        let parsed: SyncJob = serde_json::from_value(
            json!({"kind": "calendar", "tenantId": TENANT, "userId": USER, "reason": "initial"}),
        )
        .expect("parses");
        assert_eq!(parsed.kind, SyncKind::Calendar);
        assert!(
            serde_json::from_value::<SyncJob>(
                json!({"kind": "teams", "tenantId": TENANT, "userId": USER, "reason": "initial"})
            )
            .is_err()
        );
    }

    #[test]
    fn teams_messages_follow_the_issue_shapes() {
        for (body, expected) in [
            (
                json!({"kind": "post", "idempotencyKey": "k1", "tenantId": TENANT, "userId": USER,
                       "target": {"type": "channel", "teamId": "t", "channelId": "c"}, "html": "<p>x</p>"}),
                TeamsTarget::Channel {
                    team_id: "t".into(),
                    channel_id: "c".into(),
                },
            ),
            (
                json!({"kind": "post", "idempotencyKey": "k2", "tenantId": TENANT, "userId": USER,
                       "target": {"type": "chat", "chatId": "19:abc"}, "html": "<p>x</p>"}),
                TeamsTarget::Chat {
                    chat_id: "19:abc".into(),
                },
            ),
            (
                json!({"kind": "post", "idempotencyKey": "k3", "tenantId": TENANT, "userId": USER,
                       "target": {"type": "newChat", "members": ["megan@contoso.com"], "topic": "Deal"}, "html": "<p>x</p>"}),
                TeamsTarget::NewChat {
                    members: vec!["megan@contoso.com".into()],
                    topic: Some("Deal".into()),
                },
            ),
        ] {
            let message: TeamsMessage = serde_json::from_value(body.clone()).expect("parses");
            let TeamsMessage::Post(post) = &message else {
                panic!("expected a post");
            };
            assert_eq!(post.target, expected);
            assert_eq!(serde_json::to_value(&message).expect("serialises"), body);
        }

        let refresh = json!({"kind": "refreshTargets", "tenantId": TENANT, "userId": USER});
        let message: TeamsMessage = serde_json::from_value(refresh.clone()).expect("parses");
        assert!(matches!(message, TeamsMessage::RefreshTargets(_)));
        assert_eq!(serde_json::to_value(&message).expect("serialises"), refresh);

        assert!(serde_json::from_value::<TeamsMessage>(json!({"kind": "delete"})).is_err());
    }
}
