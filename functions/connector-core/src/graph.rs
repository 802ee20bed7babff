//! The Microsoft Graph client every worker uses (mail, calendar, Teams): reqwest 0.13;
//! gzip asked for and decoded here, in one pass, with a size limit; `Prefer` headers;
//! absolute `@odata.nextLink`/`deltaLink` following (only towards the configured Graph
//! host: a stored link never takes a token elsewhere); Graph's error body as typed errors;
//! `Retry-After` honoured on responses and on `$batch` items; exponential backoff with
//! jitter on 5xx and transport failures; one refresh on a 401; and a per-mailbox limit of
//! 4 requests in flight (Outlook's MailboxConcurrency).
//!
//! Work for one mailbox goes through a [`MailboxSession`]. Without a budget, sessions of
//! the same mailbox in one container share its 4 slots. With a [`MailboxBudget`]
//! ([`GraphClient::with_budget`]; the sync workers' wiring), each session is a holder of
//! the mailbox's cross-process budget and takes its slots from a pool sized by its share,
//! so all the app's workers on a mailbox together stay within 4 ([`crate::budget`]); close
//! the session with [`MailboxSession::close`]. A `$batch` takes as many slots as Graph runs
//! its items in parallel against the mailbox (up to 4), so a batch and other requests
//! together never exceed the limit; a parallel batch wider than the session's share is
//! sent as one `dependsOn` chain (one slot) instead. A session may carry a deadline: a wait (throttling, backoff) that would
//! end past it is not waited; the error goes back to the worker, which parks or continues.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::budget::{BudgetHolder, MailboxBudget, SlotGuard, SlotPool, SlotWait};
use crate::config::BaseUrl;
use crate::oauth::{BearerSource, TokenError};
use crate::secret::AccessToken;

/// A response body.
type Bytes = Vec<u8>;

/// Outlook's limit of concurrent requests per app and mailbox.
pub const MAILBOX_CONCURRENCY: usize = 4;
/// The wait a worker is told when its mailbox's other workers kept every slot.
const MIN_SLOT_RETRY: Duration = Duration::from_secs(60);
/// Requests in one `$batch`.
pub const BATCH_LIMIT: usize = 20;
/// The largest response body read from Graph, decoded: far above any page or `$batch` of
/// 20 full messages the workers ask for, and a bound on what a response (or a gzip bomb)
/// can make a worker hold.
pub const MAX_GRAPH_BODY_BYTES: usize = 64 << 20;

/// A `Prefer` preference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefer {
    /// `odata.maxpagesize={n}`.
    MaxPageSize(u32),
    /// `IdType="ImmutableId"`: ids that survive moves (repeat on every request).
    ImmutableId,
    /// `outlook.body-content-type="text"`.
    BodyText,
    /// `outlook.timezone="UTC"`.
    TimezoneUtc,
}

impl Prefer {
    fn render(self) -> String {
        match self {
            Prefer::MaxPageSize(n) => format!("odata.maxpagesize={n}"),
            Prefer::ImmutableId => "IdType=\"ImmutableId\"".to_owned(),
            Prefer::BodyText => "outlook.body-content-type=\"text\"".to_owned(),
            Prefer::TimezoneUtc => "outlook.timezone=\"UTC\"".to_owned(),
        }
    }

    /// One `Prefer` header value for several preferences.
    pub fn header(prefer: &[Prefer]) -> Option<String> {
        (!prefer.is_empty()).then(|| {
            prefer
                .iter()
                .map(|p| p.render())
                .collect::<Vec<_>>()
                .join(", ")
        })
    }
}

/// Retries and waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries per request on 5xx / transport failures (1 = no retry).
    pub attempts: u32,
    /// First backoff; doubles per retry, with jitter, up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// 429s in a row on one request before giving up (the worker then parks).
    pub throttle_retries: u32,
    /// A `Retry-After` longer than this is not waited in-process.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            throttle_retries: 10,
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// The backoff before retry `n` (from 1): between half and all of `base * 2^(n-1)`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(16);
        let full = self
            .base_backoff
            .saturating_mul(1u32 << exponent)
            .min(self.max_backoff);
        let half = full / 2;
        half + full.mul_f64(rand::random::<f64>() * 0.5)
    }
}

/// Graph's error body: `{"error":{"code","message","innerError":{"request-id",...}}}`.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: ErrorDetail,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default, rename = "innerError")]
    inner_error: Option<InnerError>,
}

#[derive(Debug, Default, Deserialize)]
struct InnerError {
    #[serde(default, rename = "request-id")]
    request_id: Option<String>,
}

/// A failed Graph call.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// Graph answered with an error status (after retries, for 5xx).
    #[error("Graph answered HTTP {status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        /// Graph's message, cut to 200 characters.
        message: String,
        request_id: Option<String>,
    },
    /// Throttled longer than this job may wait.
    #[error("throttled by Graph beyond this job's budget (retry after {retry_after:?})")]
    Throttled { retry_after: Duration },
    /// A 401 again after refreshing the token.
    #[error("Graph refused the access token even after a refresh")]
    Unauthorized,
    #[error("no access token: {0}")]
    Token(#[from] TokenError),
    /// The URL is kept out (it carries state tokens and ids).
    #[error("Graph could not be reached after {attempts} attempt(s)")]
    Transport {
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    #[error("refused to follow a link that does not point at the configured Graph host")]
    ForeignLink,
    #[error("unreadable Graph response: {0}")]
    Malformed(String),
    /// The session's deadline came while the request waited for one of the mailbox's slots
    /// (other workers held them): nothing was sent; the run is out of time, not throttled.
    #[error("the run's deadline came before a mailbox slot was free")]
    OutOfTime,
}

impl GraphError {
    pub fn status(&self) -> Option<u16> {
        match self {
            GraphError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            GraphError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The delta token is gone (410, `SyncStateNotFound`, `resyncRequired`): start over.
    pub fn is_sync_state_lost(&self) -> bool {
        match self {
            GraphError::Api { status, code, .. } => {
                *status == 410
                    || ["syncstatenotfound", "resyncrequired", "syncstateinvalid"]
                        .contains(&code.to_ascii_lowercase().as_str())
            }
            _ => false,
        }
    }

    /// The mailbox is on-premises, inactive or unlicensed.
    pub fn is_mailbox_unsupported(&self) -> bool {
        matches!(self.code(), Some(code) if code.eq_ignore_ascii_case("MailboxNotEnabledForRESTAPI")
            || code.eq_ignore_ascii_case("ErrorMailboxNotEnabledForRESTAPI"))
    }

    /// 403: a scope we were granted is not honoured any more.
    pub fn is_access_denied(&self) -> bool {
        self.status() == Some(403)
    }
}

/// Figures of a session (shared by its concurrent requests).
#[derive(Debug, Default)]
pub struct SessionStats {
    requests: AtomicU64,
    batch_items: AtomicU64,
    throttled: AtomicU64,
    retries: AtomicU64,
    bytes: AtomicU64,
}

/// A snapshot of [`SessionStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphStats {
    /// HTTP requests sent (a `$batch` counts once; retries count).
    pub requests: u64,
    /// Requests carried inside `$batch` calls.
    pub batch_items: u64,
    /// 429 answers (responses and `$batch` items).
    pub throttled: u64,
    /// Retries after 5xx or transport failures.
    pub retries: u64,
    /// Response bytes read (after gzip decoding).
    pub bytes: u64,
}

impl SessionStats {
    pub fn snapshot(&self) -> GraphStats {
        GraphStats {
            requests: self.requests.load(Ordering::Relaxed),
            batch_items: self.batch_items.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

/// The shared client: one per cold start.
pub struct GraphClient {
    http: reqwest::Client,
    /// `{GRAPH_BASE_URL}/v1.0`.
    base: String,
    /// `scheme://host[:port]` links must start with.
    origin: String,
    retry: RetryPolicy,
    slots: Mutex<HashMap<String, Weak<SlotPool>>>,
    budget: Option<Arc<MailboxBudget>>,
}

/// A reqwest client for Graph: bounded waits, no redirects. gzip is asked for and decoded
/// by the session ([`gunzip`]), not by reqwest's streaming decoder.
pub fn graph_http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        // Even where a test build unifies reqwest's gzip feature in.
        .no_gzip()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(16)
        .build()
}

impl GraphClient {
    pub fn new(http: reqwest::Client, graph_base_url: &BaseUrl) -> Self {
        let base = graph_base_url.join("v1.0");
        let origin = url::Url::parse(&base)
            .map(|url| url.origin().ascii_serialization())
            .unwrap_or_else(|_| graph_base_url.as_str().to_owned());
        Self {
            http,
            base,
            origin,
            retry: RetryPolicy::default(),
            slots: Mutex::new(HashMap::new()),
            budget: None,
        }
    }

    /// Shares each mailbox's 4 slots with the app's other workers through `budget`.
    pub fn with_budget(mut self, budget: Arc<MailboxBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// `{GRAPH_BASE_URL}/v1.0`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The slots of one mailbox, shared by every session of it in this container.
    fn slots(&self, mailbox: &str) -> Arc<SlotPool> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = slots.get(mailbox).and_then(Weak::upgrade) {
            return existing;
        }
        slots.retain(|_, weak| weak.strong_count() > 0);
        let fresh = Arc::new(SlotPool::fixed(MAILBOX_CONCURRENCY as u32));
        slots.insert(mailbox.to_owned(), Arc::downgrade(&fresh));
        fresh
    }

    /// A session for one mailbox (`mailbox` is any stable key, e.g. the user key). With a
    /// budget it joins the mailbox's budget (needs a tokio runtime): close it with
    /// [`MailboxSession::close`].
    pub fn session<'a>(
        &'a self,
        mailbox: &str,
        bearer: &'a dyn BearerSource,
        deadline: Option<Instant>,
    ) -> MailboxSession<'a> {
        let holder = self.budget.as_ref().map(|budget| budget.join(mailbox));
        MailboxSession {
            client: self,
            bearer,
            token: tokio::sync::Mutex::new(None),
            slots: holder
                .as_ref()
                .map_or_else(|| self.slots(mailbox), |holder| holder.pool().clone()),
            holder,
            deadline,
            stats: SessionStats::default(),
        }
    }

    /// An absolute URL for `url`: Graph links as they are (when they point at our Graph
    /// host), paths (`/me/...`) joined to the base.
    pub fn resolve(&self, url: &str) -> Result<String, GraphError> {
        if url.starts_with("http://") || url.starts_with("https://") {
            let same_origin = url::Url::parse(url)
                .map(|parsed| parsed.origin().ascii_serialization() == self.origin)
                .unwrap_or(false);
            if same_origin {
                Ok(url.to_owned())
            } else {
                Err(GraphError::ForeignLink)
            }
        } else {
            Ok(format!("{}/{}", self.base, url.trim_start_matches('/')))
        }
    }
}

/// One request of a `$batch`: a GET of a path relative to `/v1.0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchRequest {
    pub id: String,
    pub url: String,
    pub prefer: Vec<Prefer>,
}

/// One answer of a `$batch`.
#[derive(Debug)]
pub struct BatchItem {
    pub id: String,
    pub status: u16,
    pub body: Option<Box<RawValue>>,
}

impl BatchItem {
    /// Graph's error code of a failed item.
    pub fn error_code(&self) -> Option<String> {
        let body = self.body.as_ref()?;
        serde_json::from_str::<ErrorBody>(body.get())
            .ok()
            .map(|parsed| parsed.error.code)
            .filter(|code| !code.is_empty())
    }

    /// The item's failure as a [`GraphError`].
    pub fn to_error(&self) -> GraphError {
        let detail = self
            .body
            .as_ref()
            .and_then(|body| serde_json::from_str::<ErrorBody>(body.get()).ok())
            .unwrap_or_default()
            .error;
        GraphError::Api {
            status: self.status,
            code: detail.code,
            message: detail.message.chars().take(200).collect(),
            request_id: detail.inner_error.and_then(|inner| inner.request_id),
        }
    }
}

#[derive(Serialize)]
struct BatchBody<'a> {
    requests: Vec<BatchBodyRequest<'a>>,
}

/// How Graph runs a batch's items: all at once (up to the mailbox's concurrency) or in one
/// `dependsOn` chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BatchOrder {
    Parallel,
    Serial,
}

#[derive(Serialize)]
struct BatchBodyRequest<'a> {
    id: &'a str,
    method: &'static str,
    url: &'a str,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    headers: HashMap<&'static str, String>,
    #[serde(rename = "dependsOn", skip_serializing_if = "Option::is_none")]
    depends_on: Option<[&'a str; 1]>,
}

#[derive(Deserialize)]
struct BatchAnswer {
    #[serde(default)]
    responses: Vec<BatchAnswerItem>,
}

#[derive(Deserialize)]
struct BatchAnswerItem {
    id: String,
    status: u16,
    #[serde(default)]
    headers: HashMap<String, String>,
    #[serde(default)]
    body: Option<Box<RawValue>>,
}

/// Requests for one mailbox, under its concurrency limit.
pub struct MailboxSession<'a> {
    client: &'a GraphClient,
    bearer: &'a dyn BearerSource,
    token: tokio::sync::Mutex<Option<AccessToken>>,
    slots: Arc<SlotPool>,
    /// The session's place in the mailbox's cross-process budget, if the client has one.
    holder: Option<BudgetHolder>,
    deadline: Option<Instant>,
    stats: SessionStats,
}

/// How one HTTP exchange ended.
enum Exchange {
    Ok(Bytes),
    Status {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
}

/// Why an exchange gave no response to act on.
#[derive(Debug)]
enum ExchangeError {
    /// Not sent, or the answer not read: retried with backoff.
    Transport(reqwest::Error),
    /// Read, but not usable (too large, a broken gzip stream): not retried.
    Body(String),
    /// Not sent: no slot in time, or more slots asked than the session's share.
    Slots(SlotWait),
}

/// Why [`MailboxSession::try_send`] gave up.
enum SendFailure {
    Graph(GraphError),
    /// More slots asked for than the session's share: a parallel batch goes as a chain.
    TooMany,
}

impl From<GraphError> for SendFailure {
    fn from(error: GraphError) -> Self {
        SendFailure::Graph(error)
    }
}

impl From<TokenError> for SendFailure {
    fn from(error: TokenError) -> Self {
        SendFailure::Graph(GraphError::Token(error))
    }
}

impl From<reqwest::Error> for ExchangeError {
    fn from(error: reqwest::Error) -> Self {
        ExchangeError::Transport(error)
    }
}

/// A response's body, decoded: read chunk by chunk into one buffer (at most
/// [`MAX_GRAPH_BODY_BYTES`]), then gunzipped in one pass when Graph sent it gzip-encoded.
async fn read_body(
    mut response: reqwest::Response,
    headers: &HeaderMap,
) -> Result<Bytes, ExchangeError> {
    let too_large = || {
        ExchangeError::Body(format!(
            "the response is larger than {MAX_GRAPH_BODY_BYTES} bytes"
        ))
    };
    let expected = response.content_length().unwrap_or(0);
    if expected > MAX_GRAPH_BODY_BYTES as u64 {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(expected as usize);
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_GRAPH_BODY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    match headers
        .get(reqwest::header::CONTENT_ENCODING)
        .map(HeaderValue::as_bytes)
    {
        None | Some(b"identity") => Ok(body),
        Some(encoding) if encoding.eq_ignore_ascii_case(b"gzip") => {
            gunzip(&body, MAX_GRAPH_BODY_BYTES)
                .map_err(|error| ExchangeError::Body(format!("the gzip-encoded response: {error}")))
        }
        Some(encoding) => Err(ExchangeError::Body(format!(
            "an encoding that was not asked for: {}",
            String::from_utf8_lossy(encoding)
        ))),
    }
}

/// A gzip body (RFC 1952, members concatenated) decompressed in one pass into one buffer
/// sized from its trailer, refusing to grow past `limit` bytes. The CRC of each member is
/// checked.
pub fn gunzip(gzip: &[u8], limit: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    // ISIZE, the last four bytes: the (last member's) decoded size modulo 2^32. A hint only.
    let hint = gzip
        .last_chunk::<4>()
        .map_or(0, |size| u32::from_le_bytes(*size) as usize);
    let mut out = Vec::with_capacity(hint.min(limit));
    let read = flate2::bufread::MultiGzDecoder::new(gzip)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)?;
    if read > limit {
        return Err(std::io::Error::other(format!(
            "decodes to more than {limit} bytes"
        )));
    }
    Ok(out)
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_retry_after)
}

/// `Retry-After` as seconds (fractional ones too, as in Graph's sample) or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::from_secs_f64(seconds.min(86_400.0)));
    }
    let at =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let wait = at - time::OffsetDateTime::now_utc();
    Some(Duration::from_secs_f64(
        wait.as_seconds_f64().clamp(0.0, 86_400.0),
    ))
}

fn api_error(status: StatusCode, body: &[u8]) -> GraphError {
    let detail = serde_json::from_slice::<ErrorBody>(body)
        .unwrap_or_default()
        .error;
    GraphError::Api {
        status: status.as_u16(),
        code: if detail.code.is_empty() {
            status.canonical_reason().unwrap_or("Unknown").to_owned()
        } else {
            detail.code
        },
        message: detail.message.chars().take(200).collect(),
        request_id: detail.inner_error.and_then(|inner| inner.request_id),
    }
}

fn transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

impl MailboxSession<'_> {
    pub fn stats(&self) -> GraphStats {
        self.stats.snapshot()
    }

    pub fn client(&self) -> &GraphClient {
        self.client
    }

    /// Slots the session may use now (its share of the mailbox's budget, or 4).
    pub fn slot_capacity(&self) -> u32 {
        self.slots.capacity()
    }

    /// Ends the session: leaves the mailbox's budget, so that the app's other workers on
    /// the mailbox grow back at once (a session dropped without it leaves when its record
    /// expires).
    pub async fn close(mut self) {
        if let Some(holder) = self.holder.take() {
            holder.release().await;
        }
    }

    /// Slots for one exchange, waited for at most the budget's `max_wait` and never past
    /// the session's deadline.
    async fn take_slots(&self, slots: u32) -> Result<SlotGuard, SlotWait> {
        let mut until = Instant::now()
            + self
                .holder
                .as_ref()
                .map_or(Duration::from_secs(86_400), BudgetHolder::max_wait);
        if let Some(deadline) = self.deadline {
            until = until.min(deadline);
        }
        self.slots.acquire(slots, until).await
    }

    /// Whether waiting `wait` now would still end before the deadline.
    fn can_wait(&self, wait: Duration) -> bool {
        self.deadline
            .is_none_or(|deadline| Instant::now() + wait < deadline)
    }

    async fn bearer(&self, refresh: bool) -> Result<AccessToken, GraphError> {
        let mut token = self.token.lock().await;
        if refresh {
            let fresh = self.bearer.refresh_rejected().await?;
            *token = Some(fresh.clone());
            return Ok(fresh);
        }
        if let Some(token) = token.as_ref() {
            return Ok(token.clone());
        }
        let fresh = self.bearer.bearer().await?;
        *token = Some(fresh.clone());
        Ok(fresh)
    }

    /// One HTTP exchange holding `slots` mailbox slots until the body is read (Graph counts
    /// a request in flight until its response is complete).
    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
        slots: u32,
    ) -> Result<Exchange, ExchangeError> {
        let _permits = self.take_slots(slots).await.map_err(ExchangeError::Slots)?;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let mut response = request
            .header(reqwest::header::ACCEPT_ENCODING, "gzip")
            .send()
            .await?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        let body = read_body(response, &headers).await?;
        self.stats
            .bytes
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        if status.is_success() {
            Ok(Exchange::Ok(body))
        } else {
            Ok(Exchange::Status {
                status,
                headers,
                body,
            })
        }
    }

    /// Sends a request built by `build` (given the bearer token) until it succeeds or
    /// fails for good: 401 → one refresh; 429 → `Retry-After`; 5xx/transport → backoff.
    async fn send(
        &self,
        build: impl Fn(&AccessToken) -> reqwest::RequestBuilder,
        slots: u32,
    ) -> Result<Bytes, GraphError> {
        match self.try_send(build, slots).await {
            Ok(body) => Ok(body),
            Err(SendFailure::Graph(error)) => Err(error),
            // One slot is never more than a share (a share of 0 waits instead).
            Err(SendFailure::TooMany) => Err(GraphError::Throttled {
                retry_after: MIN_SLOT_RETRY,
            }),
        }
    }

    async fn try_send(
        &self,
        build: impl Fn(&AccessToken) -> reqwest::RequestBuilder,
        slots: u32,
    ) -> Result<Bytes, SendFailure> {
        let retry = self.client.retry;
        let mut refreshed = false;
        let mut throttles = 0u32;
        let mut failures = 0u32;
        let mut token = self.bearer(false).await?;
        loop {
            let outcome = self.exchange(build(&token), slots).await;
            let (wait, error) = match outcome {
                Ok(Exchange::Ok(body)) => return Ok(body),
                Ok(Exchange::Status { status, .. }) if status == StatusCode::UNAUTHORIZED => {
                    if refreshed {
                        return Err(GraphError::Unauthorized.into());
                    }
                    refreshed = true;
                    token = self.bearer(true).await?;
                    continue;
                }
                Ok(Exchange::Status {
                    status, headers, ..
                }) if status == StatusCode::TOO_MANY_REQUESTS => {
                    throttles += 1;
                    self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                    let wait = retry_after(&headers).unwrap_or_else(|| retry.backoff(throttles));
                    if throttles > retry.throttle_retries
                        || wait > retry.max_retry_after
                        || !self.can_wait(wait)
                    {
                        return Err(GraphError::Throttled { retry_after: wait }.into());
                    }
                    debug!(wait_ms = wait.as_millis() as u64, "throttled; waiting");
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Ok(Exchange::Status {
                    status,
                    headers,
                    body,
                }) if transient(status) => {
                    failures += 1;
                    let wait = retry_after(&headers).unwrap_or_else(|| retry.backoff(failures));
                    (wait, api_error(status, &body))
                }
                Ok(Exchange::Status { status, body, .. }) => {
                    return Err(api_error(status, &body).into());
                }
                Err(ExchangeError::Body(error)) => return Err(GraphError::Malformed(error).into()),
                Err(ExchangeError::Slots(SlotWait::TooMany)) => return Err(SendFailure::TooMany),
                Err(ExchangeError::Slots(SlotWait::TimedOut)) => {
                    // Cut by our own deadline: the run continues in its next invocation at
                    // once. Past the budget's longest wait: the mailbox's other workers hold
                    // every slot, so as a throttle, to park.
                    if self
                        .deadline
                        .is_some_and(|deadline| Instant::now() >= deadline)
                    {
                        return Err(GraphError::OutOfTime.into());
                    }
                    return Err(GraphError::Throttled {
                        retry_after: MIN_SLOT_RETRY,
                    }
                    .into());
                }
                Err(ExchangeError::Transport(error)) => {
                    failures += 1;
                    let wait = retry.backoff(failures);
                    (
                        wait,
                        GraphError::Transport {
                            attempts: failures,
                            source: error.without_url(),
                        },
                    )
                }
            };
            if failures >= retry.attempts || !self.can_wait(wait) {
                return Err(error.into());
            }
            warn!(attempt = failures, error = %error, "Graph call failed; retrying");
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
        }
    }

    /// GETs a Graph URL (absolute link or `/me/...` path) and returns the body.
    pub async fn get(&self, url: &str, prefer: &[Prefer]) -> Result<Bytes, GraphError> {
        let url = self.client.resolve(url)?;
        let prefer = Prefer::header(prefer);
        self.send(
            |token| {
                let mut request = self.client.http.get(&url).bearer_auth(token.secret());
                if let Some(prefer) = &prefer {
                    request = request.header("Prefer", prefer);
                }
                request
            },
            1,
        )
        .await
    }

    /// GETs and decodes JSON (owned types; page parsing borrows from [`Self::get`] instead).
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        prefer: &[Prefer],
    ) -> Result<T, GraphError> {
        let body = self.get(url, prefer).await?;
        serde_json::from_slice(&body).map_err(|error| {
            GraphError::Malformed(format!(
                "{:?} error at line {}",
                error.classify(),
                error.line()
            ))
        })
    }

    /// POSTs a JSON body to a Graph URL (absolute link or `/...` path) and returns the
    /// answer's body. Retried as the client's [`RetryPolicy`] says, like every request: a
    /// request that must not be repeated in-process (a Teams message: the caller retries
    /// through its queue) goes through a client with `attempts: 1, throttle_retries: 0`,
    /// which hands back the 429 as [`GraphError::Throttled`] and the 5xx as-is.
    pub async fn post_json(
        &self,
        url: &str,
        body: &serde_json::Value,
    ) -> Result<Bytes, GraphError> {
        self.send_json(reqwest::Method::POST, url, body).await
    }

    /// PATCHes a JSON body to a Graph URL, as [`Self::post_json`] (a subscription's renewal).
    pub async fn patch_json(
        &self,
        url: &str,
        body: &serde_json::Value,
    ) -> Result<Bytes, GraphError> {
        self.send_json(reqwest::Method::PATCH, url, body).await
    }

    /// PATCHes with `If-Match: {etag}` when given (Explicit Consent Mode's event update): a
    /// 412 means the item changed since that version was read (RFC 9110 §13.1.1). No
    /// Microsoft page documents If-Match on events, so the caller works either way
    /// (calendar-sync's README).
    pub async fn patch_json_if_match(
        &self,
        url: &str,
        body: &serde_json::Value,
        etag: Option<&str>,
    ) -> Result<Bytes, GraphError> {
        self.send_json_with(reqwest::Method::PATCH, url, body, etag)
            .await
    }

    /// DELETEs a Graph URL (Graph answers 204), retried like every request.
    pub async fn delete(&self, url: &str) -> Result<(), GraphError> {
        let url = self.client.resolve(url)?;
        self.send(
            |token| self.client.http.delete(&url).bearer_auth(token.secret()),
            1,
        )
        .await
        .map(drop)
    }

    async fn send_json(
        &self,
        method: reqwest::Method,
        url: &str,
        body: &serde_json::Value,
    ) -> Result<Bytes, GraphError> {
        self.send_json_with(method, url, body, None).await
    }

    async fn send_json_with(
        &self,
        method: reqwest::Method,
        url: &str,
        body: &serde_json::Value,
        if_match: Option<&str>,
    ) -> Result<Bytes, GraphError> {
        let url = self.client.resolve(url)?;
        let body =
            serde_json::to_vec(body).map_err(|error| GraphError::Malformed(error.to_string()))?;
        self.send(
            |token| {
                let request = self
                    .client
                    .http
                    .request(method.clone(), &url)
                    .bearer_auth(token.secret())
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                let request = match if_match {
                    Some(etag) => request.header(reqwest::header::IF_MATCH, etag),
                    None => request,
                };
                request.body(body.clone())
            },
            1,
        )
        .await
    }

    /// Runs up to 20 GETs as one `$batch`, retrying items answered 429 (after their
    /// `Retry-After`) or 5xx; returns every item's final answer, in request order. Graph
    /// runs up to 4 of them against the mailbox at once, so the call holds 4 slots.
    pub async fn batch(&self, requests: &[BatchRequest]) -> Result<Vec<BatchItem>, GraphError> {
        self.run_batch(requests, BatchOrder::Parallel).await
    }

    /// [`Self::batch`] with the items in one `dependsOn` chain, so that Graph runs them one
    /// after the other and the call holds one mailbox slot.
    ///
    /// Why: a call holds its slots for its whole round trip, and the outer request's own
    /// leg is time in which the mailbox does no work for it. A serial batch of 20 holds
    /// one slot for one outer leg and 20 items (5 % idle at 50 ms per leg), where a
    /// parallel one holds all four for one outer leg and 5 items each (17 % idle); four
    /// serial batches side by side keep the mailbox's 4 slots busy. Graph accepts a batch
    /// that is wholly parallel or wholly sequential, not several chains (Microsoft's
    /// known issue on JSON batching), hence one chain and not `n` lanes.
    ///
    /// An item after a failed one is answered 424 (failed dependency) without being run;
    /// it is sent again with the remaining items (each round settles at least the head of
    /// the chain, so this ends).
    pub async fn batch_serial(
        &self,
        requests: &[BatchRequest],
    ) -> Result<Vec<BatchItem>, GraphError> {
        self.run_batch(requests, BatchOrder::Serial).await
    }

    async fn run_batch(
        &self,
        requests: &[BatchRequest],
        order: BatchOrder,
    ) -> Result<Vec<BatchItem>, GraphError> {
        assert!(
            requests.len() <= BATCH_LIMIT,
            "a $batch holds at most 20 requests"
        );
        let retry = self.client.retry;
        let mut pending: Vec<&BatchRequest> = requests.iter().collect();
        let mut done: HashMap<String, BatchItem> = HashMap::with_capacity(requests.len());
        let mut throttles = 0u32;
        let mut failures = 0u32;
        let mut refreshed = false;
        let url = format!("{}/$batch", self.client.base);
        let mut order = order;
        while !pending.is_empty() {
            let capacity = self.slots.capacity();
            if order == BatchOrder::Parallel
                && capacity >= 1
                && pending.len().min(MAILBOX_CONCURRENCY) as u32 > capacity
            {
                // Graph would run more items at once than this session's share. (A share
                // not known yet is waited for: the slots' answer is TooMany if it is small.)
                order = BatchOrder::Serial;
            }
            let chained = order == BatchOrder::Serial;
            let body = BatchBody {
                requests: pending
                    .iter()
                    .enumerate()
                    .map(|(position, request)| BatchBodyRequest {
                        id: &request.id,
                        method: "GET",
                        url: &request.url,
                        headers: Prefer::header(&request.prefer)
                            .map(|prefer| HashMap::from([("Prefer", prefer)]))
                            .unwrap_or_default(),
                        depends_on: (chained && position > 0)
                            .then(|| [pending[position - 1].id.as_str()]),
                    })
                    .collect(),
            };
            let body = serde_json::to_vec(&body)
                .map_err(|error| GraphError::Malformed(error.to_string()))?;
            self.stats
                .batch_items
                .fetch_add(pending.len() as u64, Ordering::Relaxed);
            let slots = match order {
                BatchOrder::Parallel => pending.len().min(MAILBOX_CONCURRENCY),
                BatchOrder::Serial => 1,
            } as u32;
            let answer = self
                .try_send(
                    |token| {
                        self.client
                            .http
                            .post(&url)
                            .bearer_auth(token.secret())
                            .header(
                                reqwest::header::CONTENT_TYPE,
                                HeaderValue::from_static("application/json"),
                            )
                            .body(body.clone())
                    },
                    slots,
                )
                .await;
            let answer = match answer {
                Ok(answer) => answer,
                Err(SendFailure::TooMany) => {
                    self.stats
                        .batch_items
                        .fetch_sub(pending.len() as u64, Ordering::Relaxed);
                    order = BatchOrder::Serial;
                    continue;
                }
                Err(SendFailure::Graph(error)) => return Err(error),
            };
            let answer: BatchAnswer = serde_json::from_slice(&answer).map_err(|error| {
                GraphError::Malformed(format!("$batch answer: {:?} error", error.classify()))
            })?;
            let mut again = Vec::new();
            let mut wait = Duration::ZERO;
            let mut unauthorized = false;
            let mut throttled_now = false;
            let mut failed_now = false;
            for item in answer.responses {
                let Some(position) = pending.iter().position(|request| request.id == item.id)
                else {
                    continue;
                };
                let status = item.status;
                if status == 401 && refreshed {
                    return Err(GraphError::Unauthorized);
                }
                if status == 424 {
                    // Not run: its predecessor in the chain failed (and is settled or
                    // retried on its own account); kept as its answer should retries run out.
                    again.push(pending[position]);
                    done.insert(
                        item.id.clone(),
                        BatchItem {
                            id: item.id,
                            status,
                            body: item.body,
                        },
                    );
                    continue;
                }
                if status == 429
                    || transient(StatusCode::from_u16(status).unwrap_or(StatusCode::OK))
                    || (status == 401 && !refreshed)
                {
                    let after = item
                        .headers
                        .iter()
                        .find(|(name, _)| name.eq_ignore_ascii_case("retry-after"))
                        .and_then(|(_, value)| parse_retry_after(value));
                    match status {
                        429 => {
                            throttled_now = true;
                            self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                            wait = wait.max(after.unwrap_or_else(|| retry.backoff(throttles + 1)));
                        }
                        401 => unauthorized = true,
                        _ => {
                            failed_now = true;
                            wait = wait.max(after.unwrap_or_else(|| retry.backoff(failures + 1)));
                        }
                    }
                    again.push(pending[position]);
                    // Keep the last answer in case retries run out.
                    done.insert(
                        item.id.clone(),
                        BatchItem {
                            id: item.id,
                            status,
                            body: item.body,
                        },
                    );
                } else {
                    done.insert(
                        item.id.clone(),
                        BatchItem {
                            id: item.id,
                            status,
                            body: item.body,
                        },
                    );
                }
            }
            // Items Graph did not answer are asked again.
            for request in &pending {
                if !done.contains_key(&request.id) && !again.iter().any(|r| r.id == request.id) {
                    again.push(request);
                    failed_now = true;
                }
            }
            if again.is_empty() {
                break;
            }
            if unauthorized {
                refreshed = true;
                self.bearer(true).await?;
            }
            if throttled_now {
                throttles += 1;
                if throttles > retry.throttle_retries
                    || wait > retry.max_retry_after
                    || !self.can_wait(wait)
                {
                    return Err(GraphError::Throttled { retry_after: wait });
                }
            }
            if failed_now {
                failures += 1;
                if failures >= retry.attempts || !self.can_wait(wait) {
                    // Give the caller the last answers; it decides per item.
                    break;
                }
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
            }
            if !wait.is_zero() {
                debug!(
                    wait_ms = wait.as_millis() as u64,
                    items = again.len(),
                    "retrying $batch items"
                );
                tokio::time::sleep(wait).await;
            }
            pending = again;
        }
        Ok(requests
            .iter()
            .filter_map(|request| done.remove(&request.id))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::canned_server;

    fn gzip(members: &[&[u8]]) -> Vec<u8> {
        use std::io::Write;
        let mut out = Vec::new();
        for member in members {
            let mut encoder = flate2::write::GzEncoder::new(&mut out, flate2::Compression::fast());
            encoder.write_all(member).expect("compresses");
            encoder.finish().expect("compresses");
        }
        out
    }

    /// Always the same bearer; a 401 is final. Also the conformance tests' bearer.
    pub(super) struct FixedBearer;

    #[async_trait::async_trait]
    impl BearerSource for FixedBearer {
        async fn bearer(&self) -> Result<AccessToken, TokenError> {
            Ok(AccessToken::new("token"))
        }
        async fn refresh_rejected(&self) -> Result<AccessToken, TokenError> {
            Err(TokenError::NotConnected)
        }
    }

    /// What one GET through a session gives against the canned server, and the requests made.
    async fn get_from(head: &str, body: Vec<u8>) -> (Result<Bytes, GraphError>, Vec<String>) {
        let (base, seen) = canned_server(head.to_owned(), body).await;
        let client = GraphClient::new(graph_http_client().expect("a client"), &base);
        let session = client.session("user@contoso.com", &FixedBearer, None);
        let result = session.get("/me/messages", &[]).await;
        let requests = seen.lock().expect("log").clone();
        (result, requests)
    }

    #[tokio::test]
    async fn bodies_are_asked_for_in_gzip_decoded_and_bounded() {
        let page = br#"{"value":[{"id":"AAk1"}]}"#.repeat(50);
        let gz = gzip(&[&page]);
        let (body, requests) = get_from(
            &format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                gz.len()
            ),
            gz,
        )
        .await;
        assert_eq!(body.expect("decoded"), page);
        assert_eq!(requests.len(), 1);
        assert!(
            requests[0].contains("accept-encoding: gzip"),
            "{}",
            requests[0]
        );

        // An encoding we never asked for, a broken gzip stream, and a body announced past
        // the limit are typed errors, and not retried.
        for (encoding, length, body) in [
            ("br", 4, b"abcd".to_vec()),
            ("gzip", 4, b"abcd".to_vec()),
            ("identity", MAX_GRAPH_BODY_BYTES + 1, Vec::new()),
        ] {
            let (result, requests) = get_from(
                &format!(
                    "HTTP/1.1 200 OK\r\ncontent-encoding: {encoding}\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n"
                ),
                body,
            )
            .await;
            assert!(
                matches!(result, Err(GraphError::Malformed(_))),
                "{encoding}: {result:?}"
            );
            assert_eq!(requests.len(), 1, "{encoding}: not retried");
        }
    }

    /// Under a share of 2 (another worker of the app holds the other 2), a parallel
    /// `$batch` of 4 would run 4 items at once against the mailbox: it goes as a chain.
    #[tokio::test]
    async fn a_parallel_batch_wider_than_the_share_goes_as_a_chain() {
        use crate::budget::{BudgetOptions, HolderShare, MailboxBudget, MailboxShares};
        use crate::ports::SlotLedger;
        let answer = br#"{"responses":[{"id":"0","status":200,"body":{}},{"id":"1","status":200,"body":{}},{"id":"2","status":200,"body":{}},{"id":"3","status":200,"body":{}}]}"#.to_vec();
        let (base, seen) = canned_server(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                answer.len()
            ),
            answer,
        )
        .await;
        let ledger = Arc::new(crate::adapters::memory::MemorySlotLedger::default());
        let mut other = MailboxShares::default();
        other.holders.insert(
            "calendar-sync".into(),
            HolderShare {
                share: 2,
                wants: 4,
                until_ms: crate::budget::unix_ms(time::OffsetDateTime::now_utc()) + 60_000,
                since_ms: 0,
            },
        );
        assert!(ledger.write_slots("mbx", &other, 0).await.expect("written"));
        let client = GraphClient::new(graph_http_client().expect("a client"), &base).with_budget(
            MailboxBudget::new(
                ledger,
                BudgetOptions {
                    tick: Duration::from_millis(20),
                    ..BudgetOptions::default()
                },
            ),
        );
        let session = client.session("mbx", &FixedBearer, None);
        let requests: Vec<BatchRequest> = (0..4)
            .map(|n| BatchRequest {
                id: n.to_string(),
                url: format!("/me/events/{n}"),
                prefer: Vec::new(),
            })
            .collect();
        let answers = session.batch(&requests).await.expect("answered");
        assert_eq!(answers.len(), 4);
        assert_eq!(session.slot_capacity(), 2);
        let sent = seen.lock().expect("log").clone();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].matches("dependson").count(), 3, "{}", sent[0]);
        session.close().await;
    }

    #[test]
    fn gunzip_decodes_checks_and_limits() {
        let page = br#"{"value":[{"id":"AAk1"}]}"#.repeat(100);
        assert_eq!(gunzip(&gzip(&[&page]), 1 << 20).expect("decodes"), page);
        // Concatenated members are one body (RFC 1952).
        assert_eq!(
            gunzip(&gzip(&[b"{\"value\":", b"[]}"]), 1 << 20).expect("decodes"),
            b"{\"value\":[]}"
        );
        // Exactly at the limit passes; one byte over does not.
        assert!(gunzip(&gzip(&[&page]), page.len()).is_ok());
        assert!(gunzip(&gzip(&[&page]), page.len() - 1).is_err());
        // A trailer that lies about the size is only a capacity hint, never trusted.
        let mut lying = gzip(&[&page]);
        let at = lying.len() - 4;
        lying[at..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(gunzip(&lying, 1 << 20).is_err(), "the size is checked too");
        // A corrupted stream (CRC), a truncated one and plain text are errors.
        let mut corrupt = gzip(&[&page]);
        let crc = corrupt.len() - 8;
        corrupt[crc] ^= 0xff;
        assert!(gunzip(&corrupt, 1 << 20).is_err());
        let whole = gzip(&[&page]);
        assert!(gunzip(&whole[..whole.len() / 2], 1 << 20).is_err());
        assert!(gunzip(b"{\"value\":[]}", 1 << 20).is_err());
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after("2.128"),
            Some(Duration::from_millis(2128))
        );
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("soon"), None);
        let date = (time::OffsetDateTime::now_utc() + time::Duration::seconds(30))
            .format(&time::format_description::well_known::Rfc2822)
            .expect("formats");
        let wait = parse_retry_after(&date).expect("a date");
        assert!(
            wait <= Duration::from_secs(30) && wait >= Duration::from_secs(25),
            "{wait:?}"
        );
    }

    #[test]
    fn prefer_header_and_backoff() {
        assert_eq!(
            Prefer::header(&[Prefer::MaxPageSize(500), Prefer::ImmutableId]).as_deref(),
            Some("odata.maxpagesize=500, IdType=\"ImmutableId\"")
        );
        assert_eq!(Prefer::header(&[]), None);
        let policy = RetryPolicy::default();
        for _ in 0..20 {
            let first = policy.backoff(1);
            assert!(first >= Duration::from_millis(250) && first <= Duration::from_millis(500));
            assert!(policy.backoff(30) <= policy.max_backoff);
        }
    }

    #[test]
    fn links_stay_on_the_graph_host() {
        let base = BaseUrl::parse("http://127.0.0.1:8080").expect("url");
        let client = GraphClient::new(reqwest::Client::new(), &base);
        assert_eq!(
            client.resolve("/me/mailFolders").expect("path"),
            "http://127.0.0.1:8080/v1.0/me/mailFolders"
        );
        assert!(
            client
                .resolve("http://127.0.0.1:8080/v1.0/me/messages/delta?$skiptoken=x")
                .is_ok()
        );
        assert!(matches!(
            client.resolve("http://evil.example/v1.0/me"),
            Err(GraphError::ForeignLink)
        ));
        assert!(matches!(
            client.resolve("http://127.0.0.1:9999/v1.0/me"),
            Err(GraphError::ForeignLink)
        ));
    }

    #[test]
    fn error_classes() {
        let body = br#"{"error":{"code":"SyncStateNotFound","message":"gone","innerError":{"request-id":"r1"}}}"#;
        let error = api_error(StatusCode::GONE, body);
        assert!(error.is_sync_state_lost());
        assert!(!error.is_mailbox_unsupported());
        let error = api_error(
            StatusCode::NOT_FOUND,
            br#"{"error":{"code":"MailboxNotEnabledForRESTAPI","message":"REST API is not yet supported for this mailbox."}}"#,
        );
        assert!(error.is_mailbox_unsupported());
        let error = api_error(StatusCode::FORBIDDEN, b"not json");
        assert!(error.is_access_denied());
        assert_eq!(error.code(), Some("Forbidden"));
    }
}

#[cfg(test)]
#[path = "graph_conformance.rs"]
mod conformance;
