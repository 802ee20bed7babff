//! One SQS batch of TeamsPostQueue: every record parsed, checked, posted (or its share
//! targets refreshed) and settled, and the batch answered with the records SQS must keep.
//!
//! How a record is settled:
//! - done (posted, already posted, targets stored) → acknowledged;
//! - not retryable (bad message, too large, not a member, no consent, key reused, ...) →
//!   sent to the dead-letter queue with its reason as message attributes, then
//!   acknowledged (kept instead if the dead-letter send itself failed);
//! - retryable (429, 5xx, Graph unreachable, a store down, the key held by a live
//!   invocation) → hidden for the delay (`ChangeMessageVisibility`) and reported as a
//!   batch item failure, so SQS delivers it again then. Every receive counts towards the
//!   queue's `maxReceiveCount`, so a copy received [`Settings::requeue_after_receives`]
//!   times is replaced by a fresh delayed copy carrying the retries used so far
//!   (`teamsRetries`); past [`Settings::max_retries`] the message is dead-lettered as
//!   `retries_exhausted`. Throttling thus never walks a message into the DLQ by itself,
//!   and `maxReceiveCount` is left to catch what crashes the function.
//!
//! Records for the same target are worked one after the other in arrival order (so a
//! batch does not reorder posts in a channel, and a repeated key in one batch meets its
//! own completed record); different targets run concurrently, under Teams' rate limits
//! ([`crate::limiter`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use connector_core::clock::Clock;
use connector_core::domain::{
    ConnectionStatus, ConsentMode, Feature, Scope, StatusChange, UserKey,
};
use connector_core::graph::GraphError;
use connector_core::messages::{RefreshTargets, TeamsPost, TeamsTarget};
use connector_core::ports::{ConnectionStore, StoreError, TenantStore};
use connector_core::sync::{Disposition, graph_disposition};
use connector_core::teams::failures::attributes;
use connector_core::teams::idempotency::{payload_hash, record_id};
use connector_core::teams::{
    ChannelTarget, Claim, ClaimRequest, FailureReport, IdempotencyStore, PostProgress, PostResult,
    ShareTargetStore, ShareTargets, TeamTarget, TeamsQueues,
};
use futures::StreamExt;
use time::OffsetDateTime;
use tokio::time::Instant;
use tracing::{Instrument, error, info, info_span, warn};

use crate::failure::FailureCode;
use crate::graph::{ReadBack, SeenMessage, TeamsGraph};
use crate::limiter::{RateLimiter, channel_post, chat_post};
use crate::sanitize::{ContentError, Sanitizer};

/// Longest idempotency key accepted (the record id must stay well inside DynamoDB's key limit).
pub const MAX_KEY_CHARS: usize = 256;
/// Members of a chat Graph accepts, the caller included.
pub const MAX_CHAT_MEMBERS: usize = 250;
/// Longest wait a retry asks of SQS (a fresh copy can be delayed at most 15 minutes).
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(900);

/// Tunables, with production defaults.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long a completed record (and so the key) counts.
    pub idempotency_ttl: time::Duration,
    /// Retries (throttling, 5xx, ...) across all copies of a message before it is given up.
    pub max_retries: u32,
    /// Receives of one copy before it is replaced by a fresh delayed copy.
    pub requeue_after_receives: u32,
    /// Targets worked at once.
    pub concurrency: usize,
    /// Channel listings at once during a share-target refresh.
    pub targets_concurrency: usize,
    /// No Graph call is started this close to the Lambda deadline.
    pub deadline_margin: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            idempotency_ttl: time::Duration::days(14),
            max_retries: 20,
            requeue_after_receives: 3,
            concurrency: 8,
            targets_concurrency: 4,
            deadline_margin: Duration::from_secs(5),
        }
    }
}

/// What the handler works with; built once per cold start.
pub struct Ports {
    pub connections: Arc<dyn ConnectionStore>,
    pub tenants: Arc<dyn TenantStore>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub targets: Arc<dyn ShareTargetStore>,
    pub queues: Arc<dyn TeamsQueues>,
    pub graph: Arc<dyn TeamsGraph>,
    pub clock: Arc<dyn Clock>,
}

/// How a record ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Posted {
        message_id: String,
        web_url: Option<String>,
    },
    /// The key had produced a message already: acknowledged without posting.
    AlreadyPosted {
        message_id: String,
        web_url: Option<String>,
    },
    TargetsRefreshed {
        teams: usize,
        channels: usize,
    },
    DeadLettered {
        code: FailureCode,
    },
    /// Hidden until then and kept on the queue.
    RetryLater {
        code: String,
        delay: Duration,
    },
    /// Replaced by a fresh copy delivered after `delay`.
    Requeued {
        code: String,
        delay: Duration,
    },
    /// Could not be settled (dead-letter send failed): kept, SQS delivers it again.
    Kept {
        code: String,
    },
}

impl Outcome {
    /// Whether the record is reported as a batch item failure.
    pub fn keep_message(&self) -> bool {
        matches!(self, Outcome::RetryLater { .. } | Outcome::Kept { .. })
    }

    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Posted { .. } => "posted",
            Outcome::AlreadyPosted { .. } => "already_posted",
            Outcome::TargetsRefreshed { .. } => "targets_refreshed",
            Outcome::DeadLettered { .. } => "dead_lettered",
            Outcome::RetryLater { .. } => "retry_later",
            Outcome::Requeued { .. } => "requeued",
            Outcome::Kept { .. } => "kept",
        }
    }
}

/// The outcomes of a batch, by SQS message id, in record order.
#[derive(Debug, Default)]
pub struct BatchReport {
    pub outcomes: Vec<(String, Outcome)>,
}

impl BatchReport {
    pub fn response(&self) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        for (message_id, outcome) in &self.outcomes {
            if outcome.keep_message() {
                response.add_failure(message_id.clone());
            }
        }
        response
    }

    pub fn outcome(&self, message_id: &str) -> Option<&Outcome> {
        self.outcomes
            .iter()
            .find(|(id, _)| id == message_id)
            .map(|(_, outcome)| outcome)
    }
}

/// Why a record stopped short of done.
#[derive(Debug)]
enum Stop {
    Fail { code: FailureCode, detail: String },
    Retry { code: String, delay: Duration },
}

impl Stop {
    fn fail(code: FailureCode, detail: impl Into<String>) -> Self {
        Stop::Fail {
            code,
            detail: detail.into(),
        }
    }

    fn retry(code: impl Into<String>, delay: Duration) -> Self {
        Stop::Retry {
            code: code.into(),
            delay,
        }
    }

    fn store(error: StoreError) -> Self {
        warn!(error = %error, "a store call failed; the message will be retried");
        Stop::retry("store_unavailable", Duration::from_secs(5))
    }
}

/// One received record.
struct Delivery<'a> {
    message_id: &'a str,
    receipt_handle: Option<&'a str>,
    body: &'a str,
    /// `ApproximateReceiveCount` of this copy (1 on its first delivery).
    receive_count: u32,
    /// Retries used by earlier copies (`teamsRetries`).
    earlier_retries: u32,
}

impl<'a> Delivery<'a> {
    fn of(record: &'a SqsMessage) -> Self {
        Self {
            message_id: record.message_id.as_deref().unwrap_or_default(),
            receipt_handle: record.receipt_handle.as_deref(),
            body: record.body.as_deref().unwrap_or_default(),
            receive_count: record
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|count| count.parse().ok())
                .unwrap_or(1),
            earlier_retries: record
                .message_attributes
                .get(attributes::RETRIES)
                .and_then(|value| value.string_value.as_deref())
                .and_then(|value| value.parse().ok())
                .unwrap_or(0),
        }
    }

    /// Tries used so far, this one included.
    fn tries(&self) -> u32 {
        self.earlier_retries.saturating_add(self.receive_count)
    }
}

/// A record's body, read.
enum Parsed {
    Post(Box<TeamsPost>),
    Refresh(RefreshTargets),
    Invalid {
        code: FailureCode,
        detail: String,
        /// What could be read of who it was for, for the report.
        who: Who,
    },
}

#[derive(Clone, Debug, Default)]
struct Who {
    tenant_id: Option<String>,
    user_id: Option<String>,
    idempotency_key: Option<String>,
}

fn parse(body: &str) -> Parsed {
    let value: serde_json::Value = match serde_json::from_str(body) {
        Ok(value) => value,
        Err(error) => {
            return Parsed::Invalid {
                code: FailureCode::MalformedJson,
                detail: format!(
                    "{:?} error at line {} column {}",
                    error.classify(),
                    error.line(),
                    error.column()
                ),
                who: Who::default(),
            };
        }
    };
    let text = |name: &str| {
        value
            .get(name)
            .and_then(serde_json::Value::as_str)
            .map(|text| text.chars().take(256).collect::<String>())
    };
    let who = Who {
        tenant_id: text("tenantId"),
        user_id: text("userId"),
        idempotency_key: text("idempotencyKey"),
    };
    let kind = match value.get("kind").and_then(serde_json::Value::as_str) {
        Some(kind @ ("post" | "refreshTargets")) => kind.to_owned(),
        Some(other) => {
            return Parsed::Invalid {
                code: FailureCode::UnknownKind,
                detail: format!(
                    "kind \"{}\" is not one of post, refreshTargets",
                    other.chars().take(64).collect::<String>()
                ),
                who,
            };
        }
        None => {
            return Parsed::Invalid {
                code: FailureCode::UnknownKind,
                detail: "the message has no string \"kind\"".into(),
                who,
            };
        }
    };
    // Decoded as the kind's own struct (not through the tagged enum) so a decoding error
    // names the field at fault.
    let decoded = if kind == "post" {
        serde_path_to_error::deserialize::<_, TeamsPost>(value)
            .map(|post| Parsed::Post(Box::new(post)))
    } else {
        serde_path_to_error::deserialize::<_, RefreshTargets>(value).map(Parsed::Refresh)
    };
    decoded.unwrap_or_else(|error| Parsed::Invalid {
        code: FailureCode::InvalidMessage,
        detail: format!(
            "at {}: {}",
            error.path(),
            error
                .inner()
                .to_string()
                .chars()
                .take(300)
                .collect::<String>()
        ),
        who,
    })
}

impl Parsed {
    /// Records with the same group are worked in order, one at a time.
    fn group(&self, message_id: &str) -> String {
        match self {
            Parsed::Post(post) => match &post.target {
                TeamsTarget::Channel {
                    team_id,
                    channel_id,
                } => format!("channel#{team_id}#{channel_id}"),
                TeamsTarget::Chat { chat_id } => format!("chat#{chat_id}"),
                TeamsTarget::NewChat { .. } => {
                    format!("key#{}#{}", post.tenant_id, post.idempotency_key)
                }
            },
            Parsed::Refresh(refresh) => {
                format!("targets#{}#{}", refresh.tenant_id, refresh.user_id)
            }
            Parsed::Invalid { .. } => format!("message#{message_id}"),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Parsed::Post(_) => "post",
            Parsed::Refresh(_) => "refreshTargets",
            Parsed::Invalid { .. } => "invalid",
        }
    }

    fn who(&self) -> Who {
        match self {
            Parsed::Post(post) => Who {
                tenant_id: Some(post.tenant_id.to_string()),
                user_id: Some(post.user_id.to_string()),
                idempotency_key: Some(post.idempotency_key.chars().take(256).collect()),
            },
            Parsed::Refresh(refresh) => Who {
                tenant_id: Some(refresh.tenant_id.to_string()),
                user_id: Some(refresh.user_id.to_string()),
                idempotency_key: None,
            },
            Parsed::Invalid { who, .. } => who.clone(),
        }
    }
}

/// How long before its sent mark an earlier attempt's message may carry as its
/// `createdDateTime` (clock skew between this function and Teams).
pub const SENT_SKEW: time::Duration = time::Duration::minutes(5);

/// What a post's delivery ended with.
enum Delivered {
    Posted(PostResult),
    /// An earlier attempt's post, found by reading the target back.
    Found(PostResult),
}

/// Whether a failed post may have been acted on by Graph: the request left and no answer
/// proves otherwise. A 5xx can come after Teams stored the message (a gateway timing out on
/// it); a reset or a timeout while waiting says nothing; an unreadable 2xx body followed a
/// success. Not sent, or refused before processing (no token, a refused connection, 401,
/// 403, 404, 413, 429 and other 4xx): Graph did not act.
fn outcome_unknown(error: &GraphError) -> bool {
    match error {
        GraphError::Api { status, .. } => *status >= 500,
        GraphError::Transport { source, .. } => !source.is_connect(),
        GraphError::Malformed(_) => true,
        GraphError::Throttled { .. }
        | GraphError::Unauthorized
        | GraphError::Token(_)
        | GraphError::ForeignLink
        | GraphError::OutOfTime => false,
    }
}

/// The words of an HTML fragment: tags dropped, the common entities decoded, whitespace
/// collapsed. What Teams keeps of a message even where it rewrites the markup.
pub fn visible_text(html: &str) -> String {
    let mut text = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => {
                in_tag = true;
                text.push(' ');
            }
            '>' if in_tag => in_tag = false,
            _ if in_tag => {}
            _ => text.push(c),
        }
    }
    let decoded = text
        .replace("&nbsp;", " ")
        .replace("&#160;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&apos;", "'")
        .replace("&amp;", "&");
    decoded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What a finished record produced.
enum Done {
    Posted(PostResult),
    AlreadyPosted(PostResult),
    Refreshed { teams: usize, channels: usize },
}

/// The teams-post function.
pub struct TeamsPoster {
    ports: Ports,
    settings: Settings,
    sanitizer: Sanitizer,
    limiter: Arc<RateLimiter>,
}

impl TeamsPoster {
    pub fn new(ports: Ports, settings: Settings, limiter: Arc<RateLimiter>) -> Self {
        Self {
            ports,
            settings,
            sanitizer: Sanitizer::new(),
            limiter,
        }
    }

    /// Handles one SQS event; `deadline` is the invocation's.
    pub async fn handle(&self, event: &SqsEvent, deadline: Instant) -> SqsBatchResponse {
        self.process(event, deadline).await.response()
    }

    /// As [`Self::handle`], with every record's outcome.
    pub async fn process(&self, event: &SqsEvent, deadline: Instant) -> BatchReport {
        let started = Instant::now();
        let records: Vec<(Delivery<'_>, Parsed)> = event
            .records
            .iter()
            .map(|record| {
                let delivery = Delivery::of(record);
                let parsed = parse(delivery.body);
                (delivery, parsed)
            })
            .collect();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut group_of: HashMap<String, usize> = HashMap::new();
        for (index, (delivery, parsed)) in records.iter().enumerate() {
            let key = parsed.group(delivery.message_id);
            let slot = *group_of.entry(key).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[slot].push(index);
        }
        let records = &records;
        let results: Vec<Vec<(usize, Outcome)>> = futures::stream::iter(groups)
            .map(|group| async move {
                let mut done = Vec::with_capacity(group.len());
                for index in group {
                    let (delivery, parsed) = &records[index];
                    let span = info_span!(
                        "record",
                        message_id = %delivery.message_id,
                        kind = parsed.kind(),
                        receive_count = delivery.receive_count,
                    );
                    let outcome = self
                        .record(delivery, parsed, deadline)
                        .instrument(span)
                        .await;
                    done.push((index, outcome));
                }
                done
            })
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect()
            .await;
        let mut outcomes: Vec<(usize, Outcome)> = results.into_iter().flatten().collect();
        outcomes.sort_by_key(|(index, _)| *index);
        let report = BatchReport {
            outcomes: outcomes
                .into_iter()
                .map(|(index, outcome)| (records[index].0.message_id.to_owned(), outcome))
                .collect(),
        };
        let count = |label: &str| {
            report
                .outcomes
                .iter()
                .filter(|(_, outcome)| outcome.label() == label)
                .count()
        };
        info!(
            records = report.outcomes.len(),
            posted = count("posted"),
            already_posted = count("already_posted"),
            targets_refreshed = count("targets_refreshed"),
            dead_lettered = count("dead_lettered"),
            retry_later = count("retry_later"),
            requeued = count("requeued"),
            kept = count("kept"),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "teams-post batch"
        );
        report
    }

    async fn record(&self, delivery: &Delivery<'_>, parsed: &Parsed, deadline: Instant) -> Outcome {
        let started = Instant::now();
        let who = parsed.who();
        let out_of_time = Instant::now() + self.settings.deadline_margin >= deadline;
        let result = match parsed {
            Parsed::Invalid { code, detail, .. } => Err(Stop::fail(*code, detail.clone())),
            // Nothing that calls Graph starts this close to the deadline.
            _ if out_of_time => Err(Stop::retry("deadline", Duration::from_secs(1))),
            Parsed::Post(post) => self.post(post, deadline).await,
            Parsed::Refresh(refresh) => self.refresh_targets(refresh, deadline).await,
        };
        let outcome = match result {
            Ok(Done::Posted(result)) => Outcome::Posted {
                message_id: result.message_id,
                web_url: result.web_url,
            },
            Ok(Done::AlreadyPosted(result)) => Outcome::AlreadyPosted {
                message_id: result.message_id,
                web_url: result.web_url,
            },
            Ok(Done::Refreshed { teams, channels }) => {
                Outcome::TargetsRefreshed { teams, channels }
            }
            Err(Stop::Fail { code, detail }) => {
                self.dead_letter(delivery, &who, code, detail).await
            }
            Err(Stop::Retry { code, delay }) => self.retry(delivery, &who, code, delay).await,
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let tenant_id = who.tenant_id.as_deref().unwrap_or_default();
        let user_id = who.user_id.as_deref().unwrap_or_default();
        match &outcome {
            Outcome::Posted {
                message_id,
                web_url,
            }
            | Outcome::AlreadyPosted {
                message_id,
                web_url,
            } => {
                info!(
                    tenant_id,
                    user_id,
                    outcome = outcome.label(),
                    graph_message_id = %message_id,
                    web_url = web_url.as_deref().unwrap_or_default(),
                    elapsed_ms,
                    "teams post settled"
                );
            }
            Outcome::TargetsRefreshed { teams, channels } => {
                info!(
                    tenant_id,
                    user_id,
                    outcome = outcome.label(),
                    teams,
                    channels,
                    elapsed_ms,
                    "share targets refreshed"
                );
            }
            Outcome::DeadLettered { code } => {
                warn!(tenant_id, user_id, outcome = outcome.label(), code = %code, elapsed_ms, "teams message dead-lettered");
            }
            Outcome::RetryLater { code, delay } | Outcome::Requeued { code, delay } => {
                info!(
                    tenant_id,
                    user_id,
                    outcome = outcome.label(),
                    code = %code,
                    delay_ms = delay.as_millis() as u64,
                    tries = delivery.tries(),
                    elapsed_ms,
                    "teams message retried later"
                );
            }
            Outcome::Kept { code } => {
                error!(tenant_id, user_id, outcome = outcome.label(), code = %code, elapsed_ms, "teams message kept on the queue");
            }
        }
        outcome
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery<'_>,
        who: &Who,
        code: FailureCode,
        detail: String,
    ) -> Outcome {
        let report = FailureReport {
            code: code.as_str().to_owned(),
            reason: code.reason().to_owned(),
            detail,
            source_message_id: delivery.message_id.to_owned(),
            failed_at: self.ports.clock.now(),
            tenant_id: who.tenant_id.clone(),
            user_id: who.user_id.clone(),
            idempotency_key: who.idempotency_key.clone(),
            deliveries: delivery.tries(),
        };
        match self.ports.queues.dead_letter(delivery.body, &report).await {
            Ok(()) => Outcome::DeadLettered { code },
            Err(error) => {
                error!(error = %error, code = %code, "could not send the message to the dead-letter queue");
                Outcome::Kept {
                    code: format!("dead_letter_failed:{code}"),
                }
            }
        }
    }

    async fn retry(
        &self,
        delivery: &Delivery<'_>,
        who: &Who,
        code: String,
        delay: Duration,
    ) -> Outcome {
        let delay = delay.min(MAX_RETRY_DELAY);
        let tries = delivery.tries();
        if tries > self.settings.max_retries {
            return self
                .dead_letter(
                    delivery,
                    who,
                    FailureCode::RetriesExhausted,
                    format!("{tries} tries; the last one ended with {code}"),
                )
                .await;
        }
        if delivery.receive_count >= self.settings.requeue_after_receives {
            match self.ports.queues.requeue(delivery.body, tries, delay).await {
                Ok(()) => return Outcome::Requeued { code, delay },
                Err(error) => {
                    warn!(error = %error, "could not re-queue a fresh copy; hiding this one instead");
                }
            }
        }
        if let Some(receipt) = delivery.receipt_handle
            && let Err(error) = self.ports.queues.change_visibility(receipt, delay).await
        {
            // SQS redelivers after the queue's visibility timeout instead.
            warn!(error = %error, "could not change the message's visibility");
        }
        Outcome::RetryLater { code, delay }
    }

    /// The connection, active and with the teams bundle granted.
    async fn usable_connection(
        &self,
        user: &UserKey,
    ) -> Result<connector_core::domain::Connection, Stop> {
        let connection = self
            .ports
            .connections
            .get_connection(user)
            .await
            .map_err(Stop::store)?
            .ok_or_else(|| {
                Stop::fail(
                    FailureCode::NotConnected,
                    format!("no connection for {user}"),
                )
            })?;
        match connection.status {
            ConnectionStatus::Active => {}
            ConnectionStatus::ReauthRequired => {
                return Err(Stop::fail(
                    FailureCode::ReauthRequired,
                    format!(
                        "connection status reauth_required ({})",
                        connection
                            .status_reason
                            .as_deref()
                            .unwrap_or("no reason recorded")
                    ),
                ));
            }
            ConnectionStatus::ConsentRevoked => {
                return Err(Stop::fail(
                    FailureCode::ConsentRevoked,
                    format!(
                        "connection status consent_revoked ({})",
                        connection
                            .status_reason
                            .as_deref()
                            .unwrap_or("no reason recorded")
                    ),
                ));
            }
            other => {
                return Err(Stop::fail(
                    FailureCode::ConnectionInactive,
                    format!("connection status {other}"),
                ));
            }
        }
        if !Feature::Teams.is_usable_with(&connection.granted_scopes) {
            return Err(Stop::fail(
                FailureCode::NoTeamsConsent,
                "the user's grant lacks the teams bundle (Team.ReadBasic.All, Channel.ReadBasic.All, ChannelMessage.Send, Chat.Create, ChatMessage.Send, offline_access)",
            ));
        }
        let tenant = self
            .ports
            .tenants
            .get_tenant(&user.tenant_id)
            .await
            .map_err(Stop::store)?;
        if let Some(tenant) = &tenant
            && tenant.consent_mode == ConsentMode::Preauthorized
            && !tenant.has_feature(Feature::Teams)
        {
            return Err(Stop::fail(
                FailureCode::NoTeamsConsent,
                "the tenant's admin consent does not include the teams bundle",
            ));
        }
        if tenant.is_some_and(|tenant| !tenant.switches.teams_sharing) {
            return Err(Stop::fail(
                FailureCode::SharingDisabled,
                "the tenant's administrator turned Teams sharing off",
            ));
        }
        Ok(connection)
    }

    fn time_at(&self, instant: Instant) -> OffsetDateTime {
        let now = self.ports.clock.now();
        let ahead = instant.saturating_duration_since(Instant::now());
        now + ahead
    }

    async fn post(&self, post: &TeamsPost, deadline: Instant) -> Result<Done, Stop> {
        let key = post.idempotency_key.trim();
        if key.is_empty()
            || key.chars().count() > MAX_KEY_CHARS
            || key.chars().any(char::is_control)
        {
            return Err(Stop::fail(
                FailureCode::InvalidMessage,
                format!("idempotencyKey must be 1-{MAX_KEY_CHARS} printable characters"),
            ));
        }
        let user = UserKey::new(post.tenant_id.clone(), post.user_id.clone());
        let target = validate_target(&post.target)?;
        let html = self
            .sanitizer
            .prepare(&post.html)
            .map_err(|error| match error {
                ContentError::Empty => Stop::fail(FailureCode::EmptyMessage, error.to_string()),
                ContentError::TooLarge { .. } => {
                    Stop::fail(FailureCode::TooLarge, error.to_string())
                }
            })?;
        // The key first: a repeat of a message already posted is acknowledged as such, even
        // if the user's connection changed since.
        let id = record_id(&post.tenant_id, &post.idempotency_key);
        let hash = payload_hash(post);
        let now = self.ports.clock.now();
        let claim = self
            .ports
            .idempotency
            .claim(&ClaimRequest {
                id: &id,
                payload_hash: &hash,
                now,
                in_progress_until: self.time_at(deadline),
                expires_at: now + self.settings.idempotency_ttl,
            })
            .await
            .map_err(Stop::store)?;
        let progress = match claim {
            Claim::Acquired {
                progress,
                interrupted,
            } => {
                if interrupted {
                    warn!(
                        sent = progress.sent_at.is_some(),
                        "an earlier attempt at this key ended without completing; if it had sent the post, the target is read back first"
                    );
                }
                progress
            }
            Claim::Completed(result) => return Ok(Done::AlreadyPosted(result)),
            Claim::InProgress { until } => {
                let wait = (until - now).max(time::Duration::ZERO);
                return Err(Stop::retry(
                    "in_progress_elsewhere",
                    Duration::from_millis(
                        wait.whole_milliseconds().clamp(0, i128::from(u32::MAX)) as u64
                    ) + Duration::from_secs(1),
                ));
            }
            Claim::PayloadMismatch { status } => {
                return Err(Stop::fail(
                    FailureCode::IdempotencyKeyReused,
                    format!(
                        "key {} is held by a {} record with another payload",
                        key,
                        status.as_str()
                    ),
                ));
            }
        };

        let result = match self.usable_connection(&user).await {
            Ok(connection) => {
                self.deliver(
                    &user,
                    &connection,
                    post,
                    &target,
                    &html,
                    progress,
                    &id,
                    &hash,
                    deadline,
                )
                .await
            }
            Err(stop) => Err(stop),
        };
        match result {
            Ok(Delivered::Posted(result)) => {
                // First thing after Graph's 201. A crash before it leaves the record
                // marked sent, so the redelivery reads the target back instead of posting.
                self.complete(&id, &hash, &result).await;
                Ok(Done::Posted(result))
            }
            Ok(Delivered::Found(result)) => {
                self.complete(&id, &hash, &result).await;
                Ok(Done::AlreadyPosted(result))
            }
            Err(stop) => {
                if let Err(error) = self.ports.idempotency.release(&id, &hash).await {
                    // It frees itself at its in-progress expiry (this invocation's deadline).
                    warn!(error = %error, "could not release the idempotency record");
                }
                Err(stop)
            }
        }
    }

    /// Records the completed post, retrying briefly: the message exists, so the message is
    /// acknowledged even if the record cannot be written (a redelivery would post again).
    async fn complete(&self, id: &str, hash: &str, result: &PostResult) {
        let expires_at = self.ports.clock.now() + self.settings.idempotency_ttl;
        for attempt in 1..=3u32 {
            match self
                .ports
                .idempotency
                .complete(id, hash, result, expires_at)
                .await
            {
                Ok(()) => return,
                Err(error) if attempt < 3 => {
                    warn!(error = %error, attempt, "recording the completed post failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
                Err(error) => {
                    error!(error = %error, graph_message_id = %result.message_id, "the post succeeded but its idempotency record could not be completed");
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn deliver(
        &self,
        user: &UserKey,
        connection: &connector_core::domain::Connection,
        post: &TeamsPost,
        target: &Target,
        html: &str,
        progress: PostProgress,
        id: &str,
        hash: &str,
        deadline: Instant,
    ) -> Result<Delivered, Stop> {
        let graph = &self.ports.graph;
        let tenant = post.tenant_id.as_str();
        let calls_until = deadline
            .checked_sub(self.settings.deadline_margin)
            .unwrap_or_else(Instant::now);
        let chat_id = match target {
            Target::Channel { .. } => None,
            Target::Chat { chat_id } => Some(chat_id.clone()),
            Target::NewChat { members, topic } => Some(match progress.chat_id.clone() {
                Some(chat_id) => chat_id,
                None => {
                    let members: Vec<String> = members
                        .iter()
                        .filter(|member| {
                            !member.eq_ignore_ascii_case(&connection.upn)
                                && !member.eq_ignore_ascii_case(user.user_id.as_str())
                        })
                        .cloned()
                        .collect();
                    if members.is_empty() {
                        return Err(Stop::fail(
                            FailureCode::InvalidMessage,
                            "newChat names no member other than the user",
                        ));
                    }
                    let chat_id = self
                        .graph_call(
                            user,
                            graph.create_chat(user, &members, topic.as_deref(), deadline),
                        )
                        .await?;
                    // Saved before posting: a retry must not create a second group chat.
                    if let Err(error) = self
                        .ports
                        .idempotency
                        .save_progress(
                            id,
                            hash,
                            &PostProgress {
                                chat_id: Some(chat_id.clone()),
                                sent_at: None,
                            },
                        )
                        .await
                    {
                        warn!(error = %error, "could not save the created chat on the idempotency record");
                    }
                    if Instant::now() >= calls_until {
                        return Err(Stop::retry("deadline", Duration::from_secs(1)));
                    }
                    chat_id
                }
            }),
        };
        let read_back = match (target, chat_id.as_deref()) {
            (
                Target::Channel {
                    team_id,
                    channel_id,
                },
                _,
            ) => ReadBack::Channel {
                team_id,
                channel_id,
            },
            (_, Some(chat_id)) => ReadBack::Chat { chat_id },
            (_, None) => unreachable!("chat targets always have a chat id by now"),
        };

        // An earlier attempt sent this post and never learnt Graph's answer: look for it
        // before posting again.
        if let Some(sent_at) = progress.sent_at {
            if let Some(found) = self
                .find_sent(user, connection, read_back, html, sent_at, deadline)
                .await?
            {
                info!(graph_message_id = %found.id, "the earlier attempt's post is there; not posting again");
                return Ok(Delivered::Found(PostResult {
                    message_id: found.id,
                    web_url: found.web_url,
                    chat_id,
                    posted_at: self.ports.clock.now(),
                }));
            }
            info!("the earlier attempt's post is not there; posting it");
            if Instant::now() >= calls_until {
                return Err(Stop::retry("deadline", Duration::from_secs(1)));
            }
        }

        let buckets = match read_back {
            ReadBack::Channel { team_id, .. } => channel_post(tenant, team_id),
            ReadBack::Chat { .. } => chat_post(tenant),
        };
        self.slot(&buckets, calls_until).await?;
        // Durable before the request leaves: "sent, outcome unknown" until Graph answers.
        let mut marked = PostProgress {
            chat_id: chat_id.clone(),
            sent_at: Some(self.ports.clock.now()),
        };
        self.ports
            .idempotency
            .save_progress(id, hash, &marked)
            .await
            .map_err(Stop::store)?;
        let answer = match read_back {
            ReadBack::Channel {
                team_id,
                channel_id,
            } => {
                graph
                    .post_to_channel(user, team_id, channel_id, html, deadline)
                    .await
            }
            ReadBack::Chat { chat_id } => graph.post_to_chat(user, chat_id, html, deadline).await,
        };
        match answer {
            Ok(message) => Ok(Delivered::Posted(PostResult {
                message_id: message.id,
                web_url: message.web_url,
                chat_id,
                posted_at: self.ports.clock.now(),
            })),
            Err(error) if outcome_unknown(&error) => {
                warn!(error = %error, "the post was sent but its answer was lost; the next attempt reads the target back first");
                let stop = self.graph_failure(user, error).await;
                Err(match stop {
                    Stop::Retry { code, delay } => {
                        Stop::retry(format!("outcome_unknown:{code}"), delay)
                    }
                    other => other,
                })
            }
            Err(error) => {
                // Graph did not act on it: the next attempt posts without reading back.
                marked.sent_at = None;
                if let Err(store) = self
                    .ports
                    .idempotency
                    .save_progress(id, hash, &marked)
                    .await
                {
                    warn!(error = %store, "could not clear the sent mark; the next attempt reads the target back first");
                }
                Err(self.graph_failure(user, error).await)
            }
        }
    }

    /// Our earlier post in the target, if it landed: a message from the user, created no
    /// earlier than [`SENT_SKEW`] before the attempt marked it sent, whose visible text is
    /// the text we sent (Teams may rewrite the markup of what it stores, not the words).
    async fn find_sent(
        &self,
        user: &UserKey,
        connection: &connector_core::domain::Connection,
        read_back: ReadBack<'_>,
        html: &str,
        sent_at: OffsetDateTime,
        deadline: Instant,
    ) -> Result<Option<SeenMessage>, Stop> {
        let scopes = &connection.granted_scopes;
        let (readable, needed) = match read_back {
            ReadBack::Channel { .. } => (
                scopes.contains(Scope::ChannelMessageReadAll)
                    || scopes.contains_other("Group.Read.All")
                    || scopes.contains_other("Group.ReadWrite.All"),
                "ChannelMessage.Read.All",
            ),
            ReadBack::Chat { .. } => (
                scopes.contains(Scope::ChatRead) || scopes.contains_other("Chat.ReadWrite"),
                "Chat.Read",
            ),
        };
        if !readable {
            return Err(Stop::fail(
                FailureCode::OutcomeUnknown,
                format!(
                    "an earlier attempt sent this post at {sent_at} and its answer was lost; the grant lacks {needed}, so it cannot be checked"
                ),
            ));
        }
        let messages = self
            .graph_call(
                user,
                self.ports
                    .graph
                    .messages_since(user, read_back, sent_at - SENT_SKEW, deadline),
            )
            .await?;
        let wanted = visible_text(html);
        let mine = |message: &SeenMessage| {
            message
                .from_user_id
                .as_deref()
                .is_some_and(|from| from.eq_ignore_ascii_case(user.user_id.as_str()))
                && visible_text(&message.content) == wanted
        };
        match messages {
            Some(messages) => Ok(messages.into_iter().find(mine)),
            None => Err(Stop::fail(
                FailureCode::OutcomeUnknown,
                format!(
                    "an earlier attempt sent this post at {sent_at} and its answer was lost; the target holds more new messages than can be read back"
                ),
            )),
        }
    }

    async fn graph_call<T>(
        &self,
        user: &UserKey,
        call: impl std::future::Future<Output = Result<T, GraphError>>,
    ) -> Result<T, Stop> {
        match call.await {
            Ok(value) => Ok(value),
            Err(error) => Err(self.graph_failure(user, error).await),
        }
    }

    async fn slot(&self, buckets: &[crate::limiter::Bucket], until: Instant) -> Result<(), Stop> {
        self.limiter
            .acquire(buckets, until)
            .await
            .map_err(|would| Stop::retry("rate_limited", would.wait.max(Duration::from_secs(1))))
    }

    /// What a Graph failure means for a Teams message. Token and 401 failures go through the
    /// sync machinery's classification and change the connection's status as sync does; a
    /// 403 on a post is about the target (membership), never the connection.
    async fn graph_failure(&self, user: &UserKey, error: GraphError) -> Stop {
        let backoff = Duration::from_secs(5);
        match &error {
            GraphError::Throttled { retry_after } => Stop::retry(
                "graph_throttled",
                (*retry_after).max(Duration::from_secs(1)),
            ),
            GraphError::Api { status: 429, .. } => Stop::retry("graph_throttled", backoff),
            GraphError::Api { status, code, .. } if *status >= 500 => {
                Stop::retry(format!("graph_{status}_{code}"), backoff)
            }
            GraphError::Api {
                status: 403,
                code,
                message,
                request_id,
            } => {
                let detail = format!(
                    "Graph 403 {code}: {message} (request-id {})",
                    request_id.as_deref().unwrap_or("none")
                );
                if code.eq_ignore_ascii_case("ErrorAccessDenied")
                    || code.eq_ignore_ascii_case("Authorization_RequestDenied")
                {
                    Stop::fail(FailureCode::NoTeamsConsent, detail)
                } else {
                    Stop::fail(FailureCode::NotAMember, detail)
                }
            }
            GraphError::Api {
                status,
                code,
                message,
                request_id,
            } => {
                let detail = format!(
                    "Graph {status} {code}: {message} (request-id {})",
                    request_id.as_deref().unwrap_or("none")
                );
                let failure = match status {
                    404 => FailureCode::TargetNotFound,
                    413 => FailureCode::TooLarge,
                    _ => FailureCode::RejectedByGraph,
                };
                Stop::fail(failure, detail)
            }
            GraphError::Transport { .. } => Stop::retry("graph_unreachable", backoff),
            GraphError::Malformed(_) => Stop::retry("graph_malformed_response", backoff),
            GraphError::OutOfTime => Stop::retry("graph_out_of_time", backoff),
            GraphError::ForeignLink => Stop::fail(FailureCode::RejectedByGraph, error.to_string()),
            GraphError::Token(_) | GraphError::Unauthorized => match graph_disposition(&error) {
                Disposition::Status { status, reason } => {
                    self.ports.graph.forget(user);
                    let now = self.ports.clock.now();
                    if let Err(store) = self
                        .ports
                        .connections
                        .set_status(user, &StatusChange::new(status, Some(&reason), now))
                        .await
                    {
                        warn!(error = %store, "could not record the connection's new status");
                        return Stop::store(store);
                    }
                    warn!(status = %status, reason = %reason, "connection status changed");
                    let code = match status {
                        ConnectionStatus::ReauthRequired => FailureCode::ReauthRequired,
                        ConnectionStatus::ConsentRevoked => FailureCode::ConsentRevoked,
                        _ => FailureCode::ConnectionInactive,
                    };
                    Stop::fail(code, format!("connection is now {status} ({reason})"))
                }
                Disposition::Park { retry_after } => Stop::retry("token_throttled", retry_after),
                Disposition::Retry { code } => Stop::retry(code, backoff),
                Disposition::Fail { code } => Stop::fail(FailureCode::RejectedByGraph, code),
            },
        }
    }

    async fn refresh_targets(
        &self,
        refresh: &RefreshTargets,
        deadline: Instant,
    ) -> Result<Done, Stop> {
        let user = UserKey::new(refresh.tenant_id.clone(), refresh.user_id.clone());
        self.usable_connection(&user).await?;
        let graph = &self.ports.graph;
        let joined = self
            .graph_call(&user, graph.joined_teams(&user, deadline))
            .await?;
        let listings: Vec<Result<Option<TeamTarget>, Stop>> = futures::stream::iter(joined)
            .map(|team| {
                let user = &user;
                async move {
                    match graph.channels(user, &team.id, deadline).await {
                        Ok(channels) => Ok(Some(TeamTarget {
                            display_name: team
                                .display_name
                                .clone()
                                .unwrap_or_else(|| team.id.clone()),
                            id: team.id,
                            description: team.description,
                            channels: channels
                                .into_iter()
                                .map(|channel| ChannelTarget {
                                    display_name: channel
                                        .display_name
                                        .unwrap_or_else(|| channel.id.clone()),
                                    id: channel.id,
                                    membership_type: channel.membership_type,
                                })
                                .collect(),
                        })),
                        // Left (or lost) the team since joinedTeams answered: not a target.
                        Err(GraphError::Api {
                            status: 403 | 404, ..
                        }) => Ok(None),
                        Err(error) => Err(self.graph_failure(user, error).await),
                    }
                }
            })
            .buffered(self.settings.targets_concurrency.max(1))
            .collect()
            .await;
        let mut teams = Vec::with_capacity(listings.len());
        for listing in listings {
            if let Some(team) = listing? {
                teams.push(team);
            }
        }
        let targets = ShareTargets {
            tenant_id: refresh.tenant_id.clone(),
            user_id: refresh.user_id.clone(),
            refreshed_at: self.ports.clock.now(),
            teams,
        };
        let channels = targets.channel_count();
        let team_count = targets.teams.len();
        self.ports
            .targets
            .replace_targets(&targets)
            .await
            .map_err(Stop::store)?;
        Ok(Done::Refreshed {
            teams: team_count,
            channels,
        })
    }
}

/// A post's target, checked.
enum Target {
    Channel {
        team_id: String,
        channel_id: String,
    },
    Chat {
        chat_id: String,
    },
    NewChat {
        members: Vec<String>,
        topic: Option<String>,
    },
}

fn validate_target(target: &TeamsTarget) -> Result<Target, Stop> {
    let required = |name: &str, value: &str| {
        if value.trim().is_empty() {
            Err(Stop::fail(
                FailureCode::InvalidMessage,
                format!("target.{name} is empty"),
            ))
        } else {
            Ok(value.trim().to_owned())
        }
    };
    Ok(match target {
        TeamsTarget::Channel {
            team_id,
            channel_id,
        } => Target::Channel {
            team_id: required("teamId", team_id)?,
            channel_id: required("channelId", channel_id)?,
        },
        TeamsTarget::Chat { chat_id } => Target::Chat {
            chat_id: required("chatId", chat_id)?,
        },
        TeamsTarget::NewChat { members, topic } => {
            let mut seen = std::collections::HashSet::new();
            let mut clean = Vec::new();
            for member in members {
                let member = member.trim();
                if member.is_empty() {
                    return Err(Stop::fail(
                        FailureCode::InvalidMessage,
                        "target.members holds an empty entry",
                    ));
                }
                if seen.insert(member.to_ascii_lowercase()) {
                    clean.push(member.to_owned());
                }
            }
            if clean.is_empty() {
                return Err(Stop::fail(
                    FailureCode::InvalidMessage,
                    "target.members is empty",
                ));
            }
            if clean.len() + 1 > MAX_CHAT_MEMBERS {
                return Err(Stop::fail(
                    FailureCode::InvalidMessage,
                    format!("a chat holds at most {MAX_CHAT_MEMBERS} members, the user included"),
                ));
            }
            Target::NewChat {
                members: clean,
                topic: topic.clone(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_sorts_bodies_into_their_failure_codes() {
        let code = |body: &str| match parse(body) {
            Parsed::Invalid { code, .. } => Some(code),
            _ => None,
        };
        assert_eq!(code("{not json"), Some(FailureCode::MalformedJson));
        assert_eq!(code("[1,2]"), Some(FailureCode::UnknownKind));
        assert_eq!(code(r#"{"kind":"delete"}"#), Some(FailureCode::UnknownKind));
        assert_eq!(code(r#"{"kind":7}"#), Some(FailureCode::UnknownKind));
        assert_eq!(
            code(r#"{"kind":"post","tenantId":"nope"}"#),
            Some(FailureCode::InvalidMessage)
        );
        assert_eq!(
            code(
                r#"{"kind":"refreshTargets","tenantId":"72f988bf-86f1-41af-91ab-2d7cd011db47","userId":"00000000-0000-0000-0000-0000000000aa"}"#
            ),
            None
        );
        let Parsed::Invalid { detail, who, .. } = parse(
            r#"{"kind":"post","idempotencyKey":"k","tenantId":"72f988bf-86f1-41af-91ab-2d7cd011db47","userId":"00000000-0000-0000-0000-0000000000aa","target":{"type":"fax","number":"1"},"html":"<p>secret</p>"}"#,
        ) else {
            panic!("invalid");
        };
        assert!(detail.starts_with("at target"), "{detail}");
        assert!(!detail.contains("secret"));
        assert_eq!(who.idempotency_key.as_deref(), Some("k"));
    }

    #[test]
    fn targets_are_checked() {
        assert!(matches!(
            validate_target(&TeamsTarget::Channel {
                team_id: " ".into(),
                channel_id: "c".into()
            }),
            Err(Stop::Fail {
                code: FailureCode::InvalidMessage,
                ..
            })
        ));
        let Ok(Target::NewChat { members, .. }) = validate_target(&TeamsTarget::NewChat {
            members: vec![
                "Megan@contoso.com".into(),
                "megan@contoso.com ".into(),
                "lee@contoso.com".into(),
            ],
            topic: None,
        }) else {
            panic!("valid");
        };
        assert_eq!(members, ["Megan@contoso.com", "lee@contoso.com"]);
        assert!(
            validate_target(&TeamsTarget::NewChat {
                members: vec![],
                topic: None
            })
            .is_err()
        );
        assert!(
            validate_target(&TeamsTarget::NewChat {
                members: (0..250).map(|i| format!("u{i}@contoso.com")).collect(),
                topic: None
            })
            .is_err()
        );
    }
}
