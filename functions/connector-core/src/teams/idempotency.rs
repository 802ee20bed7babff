//! Idempotency records for Teams posts, after AWS Lambda Powertools' idempotency utility
//! (the reference design; Rust has no port of it):
//!
//! - a record per key: `INPROGRESS` while an invocation posts (its `inProgressExpiration`
//!   is that invocation's Lambda deadline), then `COMPLETED` with what Graph returned
//!   (message id, web URL), kept until `expiresAt` (the table's TTL);
//! - taking a key is one conditional write that succeeds only when no record exists, the
//!   record expired (`expiresAt < now`), or it is `INPROGRESS` and its holder's deadline
//!   passed (`inProgressExpiration < now_ms`): Powertools' condition, unchanged;
//! - the payload hash is validated against a live record: a key reused with another
//!   payload is refused while its record is `COMPLETED` or held by a live invocation. An
//!   abandoned record is taken over by any payload, as in Powertools (where a failed
//!   attempt's record is deleted);
//! - `EXPIRED` is not stored: a record whose `expiresAt` passed is treated as absent, as
//!   Powertools does, because DynamoDB's TTL sweep is lazy.
//!
//! One addition, for `newChat`: a post may save progress (the chat it created) on its
//! `INPROGRESS` record, and a failed attempt *releases* its record (in-progress expiration
//! set to 0) where Powertools deletes it. The next attempt with the same payload takes the
//! key at once and finds the chat instead of creating a second group chat; a different
//! payload takes the key as it would a deleted record, and the progress is dropped.
//!
//! Record ids are `teams-post#{tenantId}#{idempotencyKey}`: keys are the producer's, and
//! one tenant's key must never suppress another tenant's post.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::domain::TenantId;
use crate::messages::TeamsPost;
use crate::ports::StoreError;

/// The stored state of a record (`EXPIRED` is derived from `expiresAt`, never stored).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IdempotencyStatus {
    #[serde(rename = "INPROGRESS")]
    InProgress,
    #[serde(rename = "COMPLETED")]
    Completed,
}

impl IdempotencyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IdempotencyStatus::InProgress => "INPROGRESS",
            IdempotencyStatus::Completed => "COMPLETED",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "INPROGRESS" => Some(IdempotencyStatus::InProgress),
            "COMPLETED" => Some(IdempotencyStatus::Completed),
            _ => None,
        }
    }
}

/// What a post saved before its message existed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostProgress {
    /// The chat a `newChat` target created (or got back, for a 1:1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<String>,
    /// Set just before the message POST goes out, cleared when that POST failed in a way
    /// that proves Graph did not act on it (a 4xx, a refused connection). A record that
    /// still carries it after its attempt ended says "sent, outcome unknown": a 5xx, a
    /// timeout or a reset came after the request left, or the function died waiting. The
    /// next attempt reads the target back ([`PostProgress::sent_at`] bounds the search)
    /// before it posts again.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub sent_at: Option<OffsetDateTime>,
}

impl PostProgress {
    pub fn is_empty(&self) -> bool {
        self.chat_id.is_none() && self.sent_at.is_none()
    }
}

/// What a completed post produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostResult {
    /// Graph's chatMessage id.
    pub message_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_url: Option<String>,
    /// The chat posted into (chat and newChat targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub posted_at: OffsetDateTime,
}

/// One record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub id: String,
    pub payload_hash: String,
    /// When the record stops counting (DynamoDB TTL, whole seconds).
    pub expires_at: OffsetDateTime,
    pub state: RecordState,
}

/// A record's stored state with what belongs to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordState {
    InProgress {
        /// The holder's deadline (milliseconds); the epoch once released.
        until: OffsetDateTime,
        progress: PostProgress,
    },
    Completed(PostResult),
}

impl IdempotencyRecord {
    pub fn status(&self) -> IdempotencyStatus {
        match self.state {
            RecordState::InProgress { .. } => IdempotencyStatus::InProgress,
            RecordState::Completed(_) => IdempotencyStatus::Completed,
        }
    }

    /// In whole seconds, as DynamoDB compares `expiresAt` (epoch seconds) with the
    /// claim's `:now`: both stores then agree on the very same instant.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at.unix_timestamp() < now.unix_timestamp()
    }

    /// Whether an `INPROGRESS` record's holder is past its deadline (or released it).
    pub fn is_abandoned(&self, now: OffsetDateTime) -> bool {
        matches!(self.state, RecordState::InProgress { until, .. } if until < now)
    }
}

/// A request to take a key.
#[derive(Clone, Debug)]
pub struct ClaimRequest<'a> {
    pub id: &'a str,
    pub payload_hash: &'a str,
    pub now: OffsetDateTime,
    /// This invocation's deadline.
    pub in_progress_until: OffsetDateTime,
    /// When the record should stop counting (renewed when the post completes).
    pub expires_at: OffsetDateTime,
}

/// The answer to a claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This invocation holds the key; `progress` is what an interrupted attempt with the
    /// same payload saved. `interrupted`: an earlier attempt held the key and ended without
    /// completing or releasing it (a crash or timeout): if it got as far as Graph's 201, this
    /// attempt posts a second message (the window the README describes).
    Acquired {
        progress: PostProgress,
        interrupted: bool,
    },
    /// The key already produced a message: do not post again.
    Completed(PostResult),
    /// Another live invocation holds the key until then.
    InProgress { until: OffsetDateTime },
    /// The key was used with another payload.
    PayloadMismatch { status: IdempotencyStatus },
}

/// What a claim does given the record found (`None`: no record). `Ok(progress)` means the
/// claim takes the key, carrying that progress over; `Err` is the refusal. Both adapters
/// decide with this one function.
pub fn decide(
    existing: Option<&IdempotencyRecord>,
    request: &ClaimRequest<'_>,
) -> Result<PostProgress, Claim> {
    let Some(record) = existing.filter(|record| !record.is_expired(request.now)) else {
        return Ok(PostProgress::default());
    };
    let same_payload = record.payload_hash == request.payload_hash;
    match &record.state {
        // Abandoned (crashed or released): taken over; the progress only by its own payload.
        RecordState::InProgress { progress, .. } if record.is_abandoned(request.now) => {
            Ok(if same_payload {
                progress.clone()
            } else {
                PostProgress::default()
            })
        }
        _ if !same_payload => Err(Claim::PayloadMismatch {
            status: record.status(),
        }),
        RecordState::Completed(result) => Err(Claim::Completed(result.clone())),
        RecordState::InProgress { until, .. } => Err(Claim::InProgress { until: *until }),
    }
}

/// Whether taking the key over `existing` follows an interrupted attempt: an `INPROGRESS`
/// record, not expired, whose holder's deadline passed without a release.
pub fn interrupted(existing: Option<&IdempotencyRecord>, now: OffsetDateTime) -> bool {
    existing.is_some_and(|record| {
        !record.is_expired(now)
            && matches!(record.state, RecordState::InProgress { until, .. }
                if until < now && until > OffsetDateTime::UNIX_EPOCH)
    })
}

#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Takes the key if it is free, expired, or abandoned by an earlier attempt; of
    /// concurrent claimers exactly one gets `Acquired`.
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, StoreError>;
    /// Saves progress on the held (`INPROGRESS`) record.
    async fn save_progress(
        &self,
        id: &str,
        payload_hash: &str,
        progress: &PostProgress,
    ) -> Result<(), StoreError>;
    /// Marks the record `COMPLETED` with Graph's answer, kept until `expires_at`.
    async fn complete(
        &self,
        id: &str,
        payload_hash: &str,
        result: &PostResult,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Gives the key up after a failed attempt, keeping its progress.
    async fn release(&self, id: &str, payload_hash: &str) -> Result<(), StoreError>;
    async fn get_record(&self, id: &str) -> Result<Option<IdempotencyRecord>, StoreError>;
}

/// The record id of a post's key.
pub fn record_id(tenant_id: &TenantId, idempotency_key: &str) -> String {
    format!("teams-post#{tenant_id}#{idempotency_key}")
}

/// SHA-256 (hex) of what makes a post what it is: user, target and HTML as sent (the
/// key itself and the tenant are in the record id). Computed over the serde form of the
/// message types, whose field order is fixed by their declaration.
pub fn payload_hash(post: &TeamsPost) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Hashed<'a> {
        user_id: &'a crate::domain::UserId,
        target: &'a crate::messages::TeamsTarget,
        html: &'a str,
    }
    let canonical = serde_json::to_vec(&Hashed {
        user_id: &post.user_id,
        target: &post.target,
        html: &post.html,
    })
    .expect("message types always serialise");
    hex::encode(Sha256::digest(&canonical))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserId;
    use crate::messages::TeamsTarget;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-03-01 9:00 UTC);

    fn request(hash: &str) -> ClaimRequest<'_> {
        ClaimRequest {
            id: "teams-post#t#k",
            payload_hash: hash,
            now: NOW,
            in_progress_until: NOW + time::Duration::minutes(1),
            expires_at: NOW + time::Duration::days(14),
        }
    }

    fn record(status: IdempotencyStatus, hash: &str) -> IdempotencyRecord {
        let state = match status {
            IdempotencyStatus::InProgress => RecordState::InProgress {
                until: NOW + time::Duration::seconds(30),
                progress: PostProgress {
                    chat_id: Some("19:chat@thread.v2".into()),
                    sent_at: None,
                },
            },
            IdempotencyStatus::Completed => RecordState::Completed(PostResult {
                message_id: "1616990032035".into(),
                web_url: Some("https://teams.microsoft.com/l/message/x".into()),
                chat_id: None,
                posted_at: NOW,
            }),
        };
        IdempotencyRecord {
            id: "teams-post#t#k".into(),
            payload_hash: hash.into(),
            expires_at: NOW + time::Duration::days(1),
            state,
        }
    }

    #[test]
    fn the_powertools_states() {
        assert_eq!(decide(None, &request("h")), Ok(PostProgress::default()));

        let done = record(IdempotencyStatus::Completed, "h");
        let Err(Claim::Completed(result)) = decide(Some(&done), &request("h")) else {
            panic!("completed");
        };
        assert_eq!(result.message_id, "1616990032035");
        assert_eq!(
            decide(Some(&done), &request("other")),
            Err(Claim::PayloadMismatch {
                status: IdempotencyStatus::Completed
            })
        );

        let held = record(IdempotencyStatus::InProgress, "h");
        assert_eq!(
            decide(Some(&held), &request("h")),
            Err(Claim::InProgress {
                until: NOW + time::Duration::seconds(30)
            })
        );
        assert_eq!(
            decide(Some(&held), &request("other")),
            Err(Claim::PayloadMismatch {
                status: IdempotencyStatus::InProgress
            })
        );

        // The holder's deadline passed: the same payload takes over, with its progress.
        let mut crashed = held.clone();
        if let RecordState::InProgress { until, .. } = &mut crashed.state {
            *until = NOW - time::Duration::milliseconds(1);
        }
        assert_eq!(
            decide(Some(&crashed), &request("h")),
            Ok(PostProgress {
                chat_id: Some("19:chat@thread.v2".into()),
                sent_at: None,
            })
        );
        assert!(interrupted(Some(&crashed), NOW));
        assert!(!interrupted(Some(&held), NOW), "still live");
        let mut released = crashed.clone();
        if let RecordState::InProgress { until, .. } = &mut released.state {
            *until = OffsetDateTime::UNIX_EPOCH;
        }
        assert!(
            !interrupted(Some(&released), NOW),
            "released after a failure"
        );
        assert!(!interrupted(Some(&done), NOW));
        // Another payload takes an abandoned key over, as if its record had been deleted,
        // without the progress made for the first payload.
        assert_eq!(
            decide(Some(&crashed), &request("other")),
            Ok(PostProgress::default())
        );

        // Expired (TTL not swept yet): as if absent, progress and payload forgotten.
        let mut expired = done.clone();
        expired.expires_at = NOW - time::Duration::seconds(1);
        assert_eq!(
            decide(Some(&expired), &request("other")),
            Ok(PostProgress::default())
        );
    }

    #[test]
    fn payload_hash_covers_user_target_and_html() {
        let post = TeamsPost {
            idempotency_key: "k1".into(),
            tenant_id: TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").expect("guid"),
            user_id: UserId::parse("00000000-0000-0000-0000-0000000000aa").expect("guid"),
            target: TeamsTarget::Chat {
                chat_id: "19:a".into(),
            },
            html: "<p>x</p>".into(),
        };
        let hash = payload_hash(&post);
        assert_eq!(hash.len(), 64);
        let mut same = post.clone();
        same.idempotency_key = "k2".into();
        assert_eq!(
            payload_hash(&same),
            hash,
            "the key is not part of the payload"
        );
        for changed in [
            TeamsPost {
                html: "<p>y</p>".into(),
                ..post.clone()
            },
            TeamsPost {
                target: TeamsTarget::Chat {
                    chat_id: "19:b".into(),
                },
                ..post.clone()
            },
            TeamsPost {
                user_id: UserId::parse("00000000-0000-0000-0000-0000000000bb").expect("guid"),
                ..post.clone()
            },
        ] {
            assert_ne!(payload_hash(&changed), hash);
        }
        assert_eq!(
            record_id(&post.tenant_id, "k1"),
            "teams-post#72f988bf-86f1-41af-91ab-2d7cd011db47#k1"
        );
    }
}
