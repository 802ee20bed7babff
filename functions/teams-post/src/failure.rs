//! Every reason teams-post gives up on a message, as the operator reads it on the
//! dead-letter queue (`code` and `reason` attributes; `connectorctl teams failures`).
//! Codes are stable: alerts and runbooks may match on them.

/// Why a message is not posted and not retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureCode {
    /// The body is not JSON.
    MalformedJson,
    /// JSON without a `kind` we know.
    UnknownKind,
    /// A known kind with missing or invalid fields.
    InvalidMessage,
    /// Nothing left to post after sanitizing.
    EmptyMessage,
    /// Over Teams' 28 KB after sanitizing (or Graph's 413).
    TooLarge,
    /// The user is not a member of the team, channel or chat (Graph 403).
    NotAMember,
    /// The tenant or the user has not granted the teams bundle (or Graph says the token
    /// lacks the permission).
    NoTeamsConsent,
    /// The tenant's administrator turned Teams sharing off (`/admin`, the platform API).
    SharingDisabled,
    /// No connection for this user.
    NotConnected,
    /// The user must sign in again (refresh refused, or 401 after a refresh).
    ReauthRequired,
    /// The grant was withdrawn.
    ConsentRevoked,
    /// The connection is not active (disconnected, or stopped for another reason).
    ConnectionInactive,
    /// The team, channel, chat or a newChat member does not exist (Graph 404).
    TargetNotFound,
    /// Graph refused the request for another reason (other 4xx).
    RejectedByGraph,
    /// The idempotency key was already used with a different payload.
    IdempotencyKeyReused,
    /// Retried (throttling, 5xx) more times than allowed.
    RetriesExhausted,
    /// An earlier attempt sent the post and its answer was lost (5xx, timeout, reset), and
    /// the user's grant does not let the connector read the target back to check whether
    /// it landed: not posted again, so the target never gets it twice.
    OutcomeUnknown,
}

impl FailureCode {
    pub const ALL: [FailureCode; 17] = [
        FailureCode::MalformedJson,
        FailureCode::UnknownKind,
        FailureCode::InvalidMessage,
        FailureCode::EmptyMessage,
        FailureCode::TooLarge,
        FailureCode::NotAMember,
        FailureCode::NoTeamsConsent,
        FailureCode::SharingDisabled,
        FailureCode::NotConnected,
        FailureCode::ReauthRequired,
        FailureCode::ConsentRevoked,
        FailureCode::ConnectionInactive,
        FailureCode::TargetNotFound,
        FailureCode::RejectedByGraph,
        FailureCode::IdempotencyKeyReused,
        FailureCode::RetriesExhausted,
        FailureCode::OutcomeUnknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureCode::MalformedJson => "malformed_json",
            FailureCode::UnknownKind => "unknown_kind",
            FailureCode::InvalidMessage => "invalid_message",
            FailureCode::EmptyMessage => "empty_message",
            FailureCode::TooLarge => "too_large",
            FailureCode::NotAMember => "not_a_member",
            FailureCode::NoTeamsConsent => "no_teams_consent",
            FailureCode::SharingDisabled => "sharing_disabled",
            FailureCode::NotConnected => "not_connected",
            FailureCode::ReauthRequired => "reauth_required",
            FailureCode::ConsentRevoked => "consent_revoked",
            FailureCode::ConnectionInactive => "connection_inactive",
            FailureCode::TargetNotFound => "target_not_found",
            FailureCode::RejectedByGraph => "rejected_by_graph",
            FailureCode::IdempotencyKeyReused => "idempotency_key_reused",
            FailureCode::RetriesExhausted => "retries_exhausted",
            FailureCode::OutcomeUnknown => "outcome_unknown",
        }
    }

    /// What happened and what to do, in the operator's terms.
    pub fn reason(self) -> &'static str {
        match self {
            FailureCode::MalformedJson => {
                "The message body is not JSON. The producer must send the documented message; this one cannot be posted."
            }
            FailureCode::UnknownKind => {
                "The message's kind is not \"post\" or \"refreshTargets\". Fix the producer; this message cannot be processed."
            }
            FailureCode::InvalidMessage => {
                "The message misses a required field or has an invalid one (see detail). Fix the producer and send it again."
            }
            FailureCode::EmptyMessage => {
                "Nothing is left of the HTML after removing what Teams does not render. Send content Teams can show."
            }
            FailureCode::TooLarge => {
                "The message is larger than Teams accepts (28 KB after sanitizing). Shorten it and send it again with a new idempotency key."
            }
            FailureCode::NotAMember => {
                "The user is not a member of the target team, channel or chat (Microsoft Graph answered 403). Add the user, then redrive the message."
            }
            FailureCode::NoTeamsConsent => {
                "Posting to Teams is not consented for this user: the tenant's administrator (or the user) must grant the teams bundle. Redrive once consented."
            }
            FailureCode::SharingDisabled => {
                "The tenant's administrator turned Teams sharing off. Redrive once an administrator turns it on again (the admin page, or the platform API)."
            }
            FailureCode::NotConnected => {
                "The user has no connection (never signed in, or disconnected). The user must sign in with Microsoft first."
            }
            FailureCode::ReauthRequired => {
                "The user's Microsoft sign-in expired or was revoked; the connection is now reauth_required. Redrive after the user signs in again."
            }
            FailureCode::ConsentRevoked => {
                "The consent for this app was withdrawn; the connection is now consent_revoked. Redrive after consent is granted again."
            }
            FailureCode::ConnectionInactive => {
                "The user's connection is not active (see detail for its status). Redrive after the user reconnects."
            }
            FailureCode::TargetNotFound => {
                "The team, channel, chat or a chat member does not exist (Microsoft Graph answered 404). Check the target."
            }
            FailureCode::RejectedByGraph => {
                "Microsoft Graph refused the request (see detail for its status and code)."
            }
            FailureCode::IdempotencyKeyReused => {
                "The idempotency key was already used for a different message; this one was not posted. Use a new key for new content."
            }
            FailureCode::RetriesExhausted => {
                "Microsoft Graph kept throttling or failing for this message past the retry budget. Redrive it when Graph is healthy."
            }
            FailureCode::OutcomeUnknown => {
                "The post was sent but Microsoft Graph's answer was lost, and the user's grant cannot read the channel or chat back (ChannelMessage.Read.All or Chat.Read). Check the target in Teams; redrive only if the message is missing."
            }
        }
    }
}

impl std::fmt::Display for FailureCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_with_reasons() {
        let mut seen = std::collections::HashSet::new();
        for code in FailureCode::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert!(
                code.as_str()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_'),
                "{code}"
            );
            assert!(code.reason().ends_with('.'), "{code}");
            assert!(code.reason().len() <= 512, "{code}");
        }
    }
}
