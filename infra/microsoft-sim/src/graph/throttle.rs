//! Outlook's throttling on mailbox routes (mail, calendar, ...), per app ID + mailbox, as the throttling-limits
//! doc describes it: at most 4 concurrent requests (the 5th gets 429 `ApplicationThrottled` "Application is over
//! its MailboxConcurrency limit."), and a request budget per window (10,000 per 10 minutes; tests scale it down
//! through `POST /_sim/throttle`) whose excess gets 429 with `Retry-After` = seconds until the oldest counted
//! request leaves the sliding window. Only admitted requests count against the budget, so honouring
//! `Retry-After` always works.
//!
//! The layer sits on the Graph router after request log and fault injection and around the injected latency (a
//! slow mailbox keeps requests in flight, which is what MailboxConcurrency counts), so it also sees every inner
//! request of a `$batch`. It also keeps per-mailbox statistics (max in-flight, 429 counts) that
//! `GET /_sim/mailbox-stats` reports.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use axum::extract::{FromRequestParts, OriginalUri, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::graph::{Principal, graph_error};
use crate::state::SharedSim;

/// Path segments after `/me` or `/users/{id}` that Outlook (Exchange) serves.
const MAILBOX_SEGMENTS: [&str; 14] = [
    "mailfolders",
    "messages",
    "calendar",
    "calendars",
    "calendarview",
    "calendargroups",
    "events",
    "contacts",
    "contactfolders",
    "mailboxsettings",
    "outlook",
    "inferenceclassification",
    "sendmail",
    "findmeetingtimes",
];

/// Limits per app + mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThrottleConfig {
    pub concurrency: u32,
    pub budget: u32,
    pub window_seconds: u64,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            concurrency: 4,
            budget: 10_000,
            window_seconds: 600,
        }
    }
}

/// A partial update of [`ThrottleConfig`] (`POST /_sim/throttle`).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ThrottleUpdate {
    pub concurrency: Option<u32>,
    pub budget: Option<u32>,
    pub window_seconds: Option<u64>,
}

#[derive(Debug, Default)]
struct Counters {
    in_flight: u32,
    max_in_flight: u32,
    admitted: u64,
    throttled_concurrency: u64,
    throttled_budget: u64,
    /// Admission times (sim clock, unix nanoseconds) inside the budget window.
    window: VecDeque<i128>,
}

/// One app + mailbox as `GET /_sim/mailbox-stats` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MailboxStats {
    pub client_id: String,
    pub mailbox: String,
    pub in_flight: u32,
    pub max_in_flight: u32,
    pub requests: u64,
    pub throttled_concurrency: u64,
    pub throttled_budget: u64,
}

#[derive(Debug, Default)]
pub struct Throttle {
    config: Mutex<ThrottleConfig>,
    counters: Mutex<HashMap<(String, String), Counters>>,
}

enum Admission {
    Admitted,
    Concurrency,
    Budget { retry_after_secs: u64 },
}

impl Throttle {
    pub fn config(&self) -> ThrottleConfig {
        *self.config.lock().expect("throttle config lock")
    }

    pub fn update(&self, update: ThrottleUpdate) -> Result<ThrottleConfig, String> {
        let mut config = self.config.lock().expect("throttle config lock");
        let mut next = *config;
        if let Some(c) = update.concurrency {
            next.concurrency = c;
        }
        if let Some(b) = update.budget {
            next.budget = b;
        }
        if let Some(w) = update.window_seconds {
            next.window_seconds = w;
        }
        if next.concurrency == 0 || next.budget == 0 || next.window_seconds == 0 {
            return Err("concurrency, budget and windowSeconds must be positive".into());
        }
        *config = next;
        Ok(next)
    }

    pub fn stats(&self) -> Vec<MailboxStats> {
        let counters = self.counters.lock().expect("throttle lock");
        let mut out: Vec<MailboxStats> = counters
            .iter()
            .map(|((client, mailbox), c)| MailboxStats {
                client_id: client.clone(),
                mailbox: mailbox.clone(),
                in_flight: c.in_flight,
                max_in_flight: c.max_in_flight,
                requests: c.admitted,
                throttled_concurrency: c.throttled_concurrency,
                throttled_budget: c.throttled_budget,
            })
            .collect();
        out.sort_by(|a, b| (&a.client_id, &a.mailbox).cmp(&(&b.client_id, &b.mailbox)));
        out
    }

    /// Forgets statistics and budget windows (requests in flight stay counted).
    pub fn reset(&self) {
        let mut counters = self.counters.lock().expect("throttle lock");
        counters.retain(|_, c| c.in_flight > 0);
        for c in counters.values_mut() {
            *c = Counters {
                in_flight: c.in_flight,
                max_in_flight: c.in_flight,
                ..Counters::default()
            };
        }
    }

    fn admit(&self, key: &(String, String), now_nanos: i128) -> Admission {
        let config = self.config();
        let window = i128::from(config.window_seconds) * 1_000_000_000;
        let mut counters = self.counters.lock().expect("throttle lock");
        let c = counters.entry(key.clone()).or_default();
        while c.window.front().is_some_and(|&t| t <= now_nanos - window) {
            c.window.pop_front();
        }
        if c.window.len() >= config.budget as usize {
            c.throttled_budget += 1;
            let oldest = c.window.front().copied().unwrap_or(now_nanos);
            let frees_in = (oldest + window - now_nanos).max(0);
            let secs = (frees_in + 999_999_999) / 1_000_000_000;
            return Admission::Budget {
                retry_after_secs: secs.max(1) as u64,
            };
        }
        if c.in_flight >= config.concurrency {
            c.throttled_concurrency += 1;
            return Admission::Concurrency;
        }
        c.in_flight += 1;
        c.max_in_flight = c.max_in_flight.max(c.in_flight);
        c.admitted += 1;
        c.window.push_back(now_nanos);
        Admission::Admitted
    }

    fn release(&self, key: &(String, String)) {
        if let Some(c) = self.counters.lock().expect("throttle lock").get_mut(key) {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
    }
}

/// Releases the in-flight slot when the request is done, however it ends (cancellation included).
struct InFlight<'a> {
    throttle: &'a Throttle,
    key: (String, String),
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.throttle.release(&self.key);
    }
}

/// The mailbox a Graph path addresses: `Some(None)` for `/me/...`, `Some(Some(id))` for `/users/{id}/...`,
/// `None` when the path is not a mailbox route.
fn mailbox_target(path: &str) -> Option<Option<String>> {
    let path = path.strip_prefix("/v1.0").unwrap_or(path);
    let mut segments = path.trim_start_matches('/').split('/');
    let first = segments.next()?;
    let (target, resource) = if first.eq_ignore_ascii_case("me") {
        (None, segments.next()?)
    } else if first.eq_ignore_ascii_case("users") {
        let user = segments.next()?;
        (Some(percent_decode(user)), segments.next()?)
    } else {
        return None;
    };
    let resource = resource
        .split('(')
        .next()
        .unwrap_or(resource)
        .to_ascii_lowercase();
    MAILBOX_SEGMENTS
        .contains(&resource.as_str())
        .then_some(target)
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_owned())
}

/// The Outlook throttling middleware (installed on the Graph router by `graph::router`).
pub async fn layer(State(sim): State<SharedSim>, request: Request, next: Next) -> Response {
    let path = request
        .extensions()
        .get::<OriginalUri>()
        .map(|u| u.0.path().to_owned())
        .unwrap_or_else(|| request.uri().path().to_owned());
    let Some(target) = mailbox_target(&path) else {
        return next.run(request).await;
    };
    let (mut parts, body) = request.into_parts();
    // An unauthenticated request is the handler's 401 to give; throttling needs to know the app.
    let Ok(principal) = Principal::from_request_parts(&mut parts, &sim).await else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    let mailbox = match target {
        None => principal.user_id.to_ascii_lowercase(),
        Some(user) => match sim.find_user(&user) {
            Some(info) => info.id.to_ascii_lowercase(),
            None => return next.run(Request::from_parts(parts, body)).await,
        },
    };
    let throttle = &sim.mail.throttle;
    let key = (principal.client_id.to_ascii_lowercase(), mailbox);
    let now = sim.now().unix_timestamp_nanos();
    match throttle.admit(&key, now) {
        Admission::Admitted => {
            let _slot = InFlight { throttle, key };
            next.run(Request::from_parts(parts, body)).await
        }
        Admission::Concurrency => concurrency_response(),
        Admission::Budget { retry_after_secs } => budget_response(retry_after_secs),
    }
}

/// Outlook's MailboxConcurrency 429: the observed body has no `innerError`.
fn concurrency_response() -> Response {
    let body = json!({"error": {"code": "ApplicationThrottled", "message": "Application is over its MailboxConcurrency limit."}});
    let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    let ids = crate::graph::RequestIds::current();
    if let Ok(v) = HeaderValue::from_str(&ids.request_id) {
        response.headers_mut().insert("request-id", v);
    }
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The budget 429: Microsoft's documented throttling response (its exact Outlook wording is unconfirmed).
fn budget_response(retry_after_secs: u64) -> Response {
    let mut response = graph_error(
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        "Please retry again later.",
    );
    if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_paths() {
        assert_eq!(
            mailbox_target("/me/mailFolders/inbox/messages/delta"),
            Some(None)
        );
        assert_eq!(mailbox_target("/v1.0/me/calendarView/delta"), Some(None));
        assert_eq!(
            mailbox_target("/users/a%40b.com/messages"),
            Some(Some("a@b.com".into()))
        );
        assert_eq!(
            mailbox_target("/me/mailfolders('inbox')/messages"),
            Some(None)
        );
        assert_eq!(mailbox_target("/me"), None);
        assert_eq!(mailbox_target("/me/joinedTeams"), None);
        assert_eq!(mailbox_target("/users/x"), None);
        assert_eq!(mailbox_target("/$batch"), None);
    }

    #[test]
    fn concurrency_then_budget() {
        let t = Throttle::default();
        t.update(ThrottleUpdate {
            concurrency: Some(2),
            budget: Some(3),
            window_seconds: Some(60),
        })
        .unwrap();
        let key = ("app".to_owned(), "mbx".to_owned());
        let s = 1_000_000_000i128;
        assert!(matches!(t.admit(&key, 0), Admission::Admitted));
        assert!(matches!(t.admit(&key, 0), Admission::Admitted));
        assert!(matches!(t.admit(&key, 0), Admission::Concurrency));
        t.release(&key);
        t.release(&key);
        assert!(matches!(t.admit(&key, 10 * s), Admission::Admitted));
        t.release(&key);
        match t.admit(&key, 20 * s) {
            Admission::Budget { retry_after_secs } => assert_eq!(retry_after_secs, 40),
            _ => panic!("budget exhausted"),
        }
        assert!(matches!(t.admit(&key, 60 * s), Admission::Admitted));
        let stats = t.stats();
        assert_eq!(stats[0].max_in_flight, 2);
        assert_eq!(
            (stats[0].throttled_concurrency, stats[0].throttled_budget),
            (1, 1)
        );
    }
}
