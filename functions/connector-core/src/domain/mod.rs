//! The connector's domain: tenants, connections, feature bundles and scopes, sync state,
//! activities and the CRM snapshot. Plain data and rules; no AWS SDK, no HTTP, no Lambda.

pub mod activity;
pub mod connection;
pub mod crm;
pub mod ids;
pub mod meeting_consent;
pub mod scopes;
pub mod sync;
pub mod tenant;

pub use activity::{
    Activity, ActivityContent, ActivityId, Attendee, CrmMatch, DetailRef, ITEM_MATCHES,
    ITEM_PARTICIPANTS, ITEM_SUBJECT_CHARS, MailActivity, MailDetail, MatchReason, MeetingActivity,
    Participant, ParticipantRole, body_key, tenant_body_prefix, user_body_prefix,
};
pub use connection::{
    Connection, ConnectionStatus, ParkedUntil, StatusChange, UserSwitches, token_secret_name,
};
pub use crm::{
    AccountRecord, AddressRecord, CrmAdditions, CrmIndexContent, CrmIndexStats, CrmIndexSummary,
    CrmLookup, CrmRecordKind, CrmSnapshot, ReplaceOutcome, SnapshotError, SnapshotIssue,
};
pub use ids::{TenantId, UserId, UserKey};
pub use meeting_consent::{
    Answer, ConsentGuest, ConsentMeeting, ConsentStatus, Decision, LinkToken,
};
pub use scopes::{Feature, FeatureBundle, Scope, ScopeSet};
pub use sync::{
    CatchUpTarget, CrmCatchUp, CursorKind, FolderCursor, Lease, SKIPPED_KEPT, SkippedItem,
    SyncCounters, SyncFailure, SyncKey, SyncKind, SyncMeta, SyncStage, SyncWindow,
};
pub use tenant::{ConsentMode, ConsentState, Tenant, TenantSwitches};

/// A value that does not make a valid domain object.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("`{value}` is not a valid {what}")]
    InvalidId {
        what: &'static str,
        value: String,
        #[source]
        source: uuid::Error,
    },
    #[error("`{value}` is not a valid {what}")]
    InvalidKey { what: &'static str, value: String },
    #[error("unknown feature bundle `{value}` (expected auth, calendar, mail, teams or all)")]
    UnknownBundle { value: String },
    #[error("unknown {what} `{value}`")]
    UnknownVariant { what: &'static str, value: String },
}
