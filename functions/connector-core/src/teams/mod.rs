//! State of Teams posting that the teams-post function and `connectorctl` share, and the
//! ports it lives behind:
//!
//! - [`idempotency`]: one record per idempotency key, with the semantics of AWS Lambda
//!   Powertools' idempotency utility (`INPROGRESS` until the Lambda deadline, then
//!   `COMPLETED` with the Graph message id and web URL; payload hash validation), plus the
//!   progress a post makes before its message exists (the chat a `newChat` created);
//! - [`targets`]: the teams and channels a user can post to (share targets), cached for
//!   the platform;
//! - [`failures`]: the operator-facing reason a message was given up on, carried as SQS
//!   message attributes on the dead-letter queue, and the queue port that sends, re-queues
//!   and lists them.
//!
//! Real adapters: `adapters::teams_dynamodb` (IdempotencyTable, SyncStateTable) and
//! `adapters::teams_sqs`; in-memory twins in `adapters::teams_memory`.

pub mod failures;
pub mod idempotency;
pub mod targets;

pub use failures::{DeadLetter, FailureReport, TeamsQueues};
pub use idempotency::{
    Claim, ClaimRequest, IdempotencyRecord, IdempotencyStatus, IdempotencyStore, PostProgress,
    PostResult, RecordState,
};
pub use targets::{ChannelTarget, ShareTargetStore, ShareTargets, TeamTarget};
