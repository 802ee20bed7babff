//! In-memory twins of the Teams ports, with the real adapters' contracts: claims decided by
//! the same rules as the DynamoDB store and atomic under one lock; share targets replaced
//! whole; a queue that records what was dead-lettered, re-queued and hidden.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::UserKey;
use crate::ports::{QueueError, StoreError};
use crate::teams::idempotency::{decide, interrupted};
use crate::teams::{
    Claim, ClaimRequest, DeadLetter, FailureReport, IdempotencyRecord, IdempotencyStore,
    PostProgress, PostResult, RecordState, ShareTargetStore, ShareTargets, TeamsQueues,
};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whole seconds rounded up, as the DynamoDB store keeps `expiresAt`.
fn to_seconds_ceil(at: OffsetDateTime) -> OffsetDateTime {
    let seconds = at.unix_timestamp() + i64::from(at.nanosecond() > 0);
    OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(at)
}

/// Millisecond precision, as the DynamoDB store keeps `inProgressExpiration`.
fn to_millis(at: OffsetDateTime) -> OffsetDateTime {
    let millis = at.unix_timestamp_nanos() / 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(millis * 1_000_000).unwrap_or(at)
}

#[derive(Default)]
pub struct MemoryIdempotencyStore {
    records: Mutex<HashMap<String, IdempotencyRecord>>,
}

impl MemoryIdempotencyStore {
    pub fn records(&self) -> Vec<IdempotencyRecord> {
        let mut records: Vec<_> = lock(&self.records).values().cloned().collect();
        records.sort_by(|a, b| a.id.cmp(&b.id));
        records
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotencyStore {
    async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim, StoreError> {
        let mut records = lock(&self.records);
        let interrupted = interrupted(records.get(request.id), request.now);
        match decide(records.get(request.id), request) {
            Ok(progress) => {
                records.insert(
                    request.id.to_owned(),
                    IdempotencyRecord {
                        id: request.id.to_owned(),
                        payload_hash: request.payload_hash.to_owned(),
                        expires_at: to_seconds_ceil(request.expires_at),
                        state: RecordState::InProgress {
                            until: to_millis(request.in_progress_until),
                            progress: progress.clone(),
                        },
                    },
                );
                Ok(Claim::Acquired {
                    progress,
                    interrupted,
                })
            }
            Err(refusal) => Ok(refusal),
        }
    }

    async fn save_progress(
        &self,
        id: &str,
        payload_hash: &str,
        progress: &PostProgress,
    ) -> Result<(), StoreError> {
        let mut records = lock(&self.records);
        match records.get_mut(id) {
            Some(IdempotencyRecord {
                payload_hash: hash,
                state:
                    RecordState::InProgress {
                        progress: saved, ..
                    },
                ..
            }) if hash == payload_hash => {
                *saved = progress.clone();
                Ok(())
            }
            _ => Err(StoreError::Conflict {
                what: format!("idempotency record {id}"),
            }),
        }
    }

    async fn complete(
        &self,
        id: &str,
        payload_hash: &str,
        result: &PostResult,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut records = lock(&self.records);
        if records
            .get(id)
            .is_some_and(|record| record.payload_hash != payload_hash)
        {
            return Err(StoreError::Conflict {
                what: format!("idempotency record {id}"),
            });
        }
        records.insert(
            id.to_owned(),
            IdempotencyRecord {
                id: id.to_owned(),
                payload_hash: payload_hash.to_owned(),
                expires_at: to_seconds_ceil(expires_at),
                state: RecordState::Completed(result.clone()),
            },
        );
        Ok(())
    }

    async fn release(&self, id: &str, payload_hash: &str) -> Result<(), StoreError> {
        if let Some(IdempotencyRecord {
            payload_hash: hash,
            state: RecordState::InProgress { until, .. },
            ..
        }) = lock(&self.records).get_mut(id)
            && hash == payload_hash
        {
            *until = OffsetDateTime::UNIX_EPOCH;
        }
        Ok(())
    }

    async fn get_record(&self, id: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        Ok(lock(&self.records).get(id).cloned())
    }
}

#[derive(Default)]
pub struct MemoryShareTargetStore {
    targets: Mutex<HashMap<UserKey, ShareTargets>>,
}

#[async_trait]
impl ShareTargetStore for MemoryShareTargetStore {
    async fn replace_targets(&self, targets: &ShareTargets) -> Result<(), StoreError> {
        let mut targets = targets.clone();
        targets.normalise();
        lock(&self.targets).insert(targets.user(), targets);
        Ok(())
    }

    async fn get_targets(&self, user: &UserKey) -> Result<Option<ShareTargets>, StoreError> {
        Ok(lock(&self.targets).get(user).cloned())
    }

    async fn delete_targets(&self, user: &UserKey) -> Result<(), StoreError> {
        lock(&self.targets).remove(user);
        Ok(())
    }
}

/// A message sent back to TeamsPostQueue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requeued {
    pub body: String,
    pub retries: u32,
    pub delay: Duration,
}

#[derive(Default)]
pub struct MemoryTeamsQueues {
    dead: Mutex<Vec<DeadLetter>>,
    requeued: Mutex<Vec<Requeued>>,
    hidden: Mutex<Vec<(String, Duration)>>,
}

impl MemoryTeamsQueues {
    pub fn requeued(&self) -> Vec<Requeued> {
        lock(&self.requeued).clone()
    }

    /// Visibility changes: (receipt handle, timeout).
    pub fn hidden(&self) -> Vec<(String, Duration)> {
        lock(&self.hidden).clone()
    }
}

#[async_trait]
impl TeamsQueues for MemoryTeamsQueues {
    async fn dead_letter(&self, body: &str, report: &FailureReport) -> Result<(), QueueError> {
        let mut dead = lock(&self.dead);
        let message_id = format!("dlq-{}", dead.len() + 1);
        dead.push(DeadLetter {
            message_id,
            body: body.to_owned(),
            sent_at: Some(report.failed_at),
            report: Some(report.clone()),
        });
        Ok(())
    }

    async fn requeue(&self, body: &str, retries: u32, delay: Duration) -> Result<(), QueueError> {
        lock(&self.requeued).push(Requeued {
            body: body.to_owned(),
            retries,
            delay: delay.min(crate::ports::MAX_DELAY),
        });
        Ok(())
    }

    async fn change_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        lock(&self.hidden).push((receipt_handle.to_owned(), timeout));
        Ok(())
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        Ok(lock(&self.dead).iter().take(limit).cloned().collect())
    }
}
