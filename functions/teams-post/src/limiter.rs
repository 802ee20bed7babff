//! Teams' per-app posting limits, kept inside the container so a batch of many posts does
//! not throttle itself (graph-contract §7, Microsoft's Teams service limits):
//! - at most 4 requests per second "on a given team or channel": counted per team, its
//!   channels together (the stricter reading; the sim counts per channel);
//! - 50 channel-message posts per second per tenant;
//! - 20 chat-message posts per second per tenant.
//!
//! Each limit is a sliding one-second window (the strictest reading of "per second": any
//! second-long interval holds at most `limit` posts), widened by a small margin because
//! Graph sees our requests later than we send them, not at the same spacing. One limiter
//! lives per warm container; concurrent containers are not coordinated (the function's
//! `MaximumConcurrency` bounds them, and a 429 that still happens is retried after its
//! `Retry-After`).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Requests per second on one team (its channels included).
pub const PER_TEAM_PER_SECOND: usize = 4;
/// Channel-message posts per second per tenant.
pub const CHANNEL_POSTS_PER_TENANT_PER_SECOND: usize = 50;
/// Chat-message posts per second per tenant.
pub const CHAT_POSTS_PER_TENANT_PER_SECOND: usize = 20;
/// Added to the one-second window.
pub const WINDOW_MARGIN: Duration = Duration::from_millis(150);

/// What a post counts against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// One team, all its channels.
    Team(String),
    /// A tenant's channel posts.
    TenantChannelPosts(String),
    /// A tenant's chat posts.
    TenantChatPosts(String),
}

impl Bucket {
    fn limit(&self) -> usize {
        match self {
            Bucket::Team(_) => PER_TEAM_PER_SECOND,
            Bucket::TenantChannelPosts(_) => CHANNEL_POSTS_PER_TENANT_PER_SECOND,
            Bucket::TenantChatPosts(_) => CHAT_POSTS_PER_TENANT_PER_SECOND,
        }
    }
}

/// What a request counts against: a channel post against its team and its tenant's
/// channel posts; a chat post against its tenant's chat posts.
pub fn channel_post(tenant: &str, team_id: &str) -> Vec<Bucket> {
    vec![
        Bucket::Team(team_id.to_owned()),
        Bucket::TenantChannelPosts(tenant.to_owned()),
    ]
}

pub fn chat_post(tenant: &str) -> Vec<Bucket> {
    vec![Bucket::TenantChatPosts(tenant.to_owned())]
}

/// The limiter could not grant a slot before the caller's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WouldWait {
    /// How long from now a slot frees up.
    pub wait: Duration,
}

/// Sliding-window limits for several buckets.
pub struct RateLimiter {
    window: Duration,
    grants: Mutex<HashMap<Bucket, VecDeque<Instant>>>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl RateLimiter {
    pub fn new() -> Self {
        Self::with_window(Duration::from_secs(1) + WINDOW_MARGIN)
    }

    pub fn with_window(window: Duration) -> Self {
        Self {
            window,
            grants: Mutex::new(HashMap::new()),
        }
    }

    /// Waits until every bucket has room, then takes one slot in each at the same instant.
    /// Gives up (taking nothing) when the wait would end after `deadline`.
    pub async fn acquire(&self, buckets: &[Bucket], deadline: Instant) -> Result<(), WouldWait> {
        loop {
            let wait = {
                let mut grants = self.grants.lock().await;
                let now = Instant::now();
                let mut wait = Duration::ZERO;
                for bucket in buckets {
                    let window = grants.entry(bucket.clone()).or_default();
                    while window
                        .front()
                        .is_some_and(|granted| now.duration_since(*granted) >= self.window)
                    {
                        window.pop_front();
                    }
                    if window.len() >= bucket.limit() {
                        // The oldest grant still in the window leaves it first.
                        let oldest = window[window.len() - bucket.limit()];
                        wait = wait.max((oldest + self.window).saturating_duration_since(now));
                    }
                }
                if wait.is_zero() {
                    for bucket in buckets {
                        grants.entry(bucket.clone()).or_default().push_back(now);
                    }
                    // Forget buckets nobody used for a while, so a warm container stays small.
                    if grants.len() > 10_000 {
                        let window = self.window;
                        grants.retain(|_, granted| {
                            granted
                                .back()
                                .is_some_and(|last| now.duration_since(*last) < window)
                        });
                    }
                    return Ok(());
                }
                wait
            };
            if Instant::now() + wait > deadline {
                return Err(WouldWait { wait });
            }
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The most grants found in any window-long interval.
    fn busiest(times: &[Instant], window: Duration) -> usize {
        times
            .iter()
            .map(|start| {
                times
                    .iter()
                    .filter(|t| **t >= *start && t.duration_since(*start) < window)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[tokio::test(start_paused = true)]
    async fn a_team_gets_at_most_four_posts_in_any_second() {
        let limiter = RateLimiter::new();
        let far = Instant::now() + Duration::from_secs(3600);
        let mut times = Vec::new();
        for _ in 0..20 {
            limiter
                .acquire(&channel_post("t1", "team"), far)
                .await
                .expect("granted");
            times.push(Instant::now());
        }
        assert_eq!(busiest(&times, Duration::from_secs(1)), 4);
        // 20 posts at 4 per 1.15 s: the last one at 4 windows in.
        let elapsed = times[19].duration_since(times[0]);
        assert!(
            elapsed >= Duration::from_millis(4 * 1150) && elapsed < Duration::from_secs(5),
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn teams_are_independent_but_share_the_tenant_limit() {
        let limiter = std::sync::Arc::new(RateLimiter::new());
        let far = Instant::now() + Duration::from_secs(3600);
        let start = Instant::now();
        // 30 teams x 4 posts each: 120 posts, more than 50 per second for the tenant.
        let mut tasks = Vec::new();
        for team in 0..30 {
            for _ in 0..4 {
                let limiter = limiter.clone();
                tasks.push(tokio::spawn(async move {
                    limiter
                        .acquire(&channel_post("t1", &format!("team{team}")), far)
                        .await
                        .expect("granted");
                    Instant::now()
                }));
            }
        }
        let mut times = Vec::new();
        for task in tasks {
            times.push(task.await.expect("task"));
        }
        assert_eq!(busiest(&times, Duration::from_secs(1)), 50);
        let first_second = times
            .iter()
            .filter(|t| t.duration_since(start) < Duration::from_millis(10))
            .count();
        assert_eq!(first_second, 50, "the first 50 go at once");

        // Another tenant is not held back by the first one's posts.
        let other = Instant::now();
        limiter
            .acquire(&channel_post("t2", "team0"), far)
            .await
            .expect("granted");
        assert_eq!(Instant::now(), other);
    }

    #[tokio::test(start_paused = true)]
    async fn chat_posts_have_their_own_tenant_limit() {
        let limiter = RateLimiter::new();
        let far = Instant::now() + Duration::from_secs(3600);
        let mut times = Vec::new();
        for _ in 0..45 {
            limiter
                .acquire(&chat_post("t1"), far)
                .await
                .expect("granted");
            times.push(Instant::now());
        }
        assert_eq!(busiest(&times, Duration::from_secs(1)), 20);
        // Channel posts of the same tenant are not slowed by the chat posts.
        let before = Instant::now();
        limiter
            .acquire(&channel_post("t1", "team"), far)
            .await
            .expect("granted");
        assert_eq!(Instant::now(), before);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_deadline_is_refused_without_taking_a_slot() {
        let limiter = RateLimiter::new();
        let buckets = channel_post("t1", "team");
        let far = Instant::now() + Duration::from_secs(3600);
        for _ in 0..4 {
            limiter.acquire(&buckets, far).await.expect("granted");
        }
        let soon = Instant::now() + Duration::from_millis(500);
        let refused = limiter
            .acquire(&buckets, soon)
            .await
            .expect_err("would wait");
        assert!(
            refused.wait > Duration::from_millis(500)
                && refused.wait <= Duration::from_millis(1150)
        );
        // Nothing was taken: after the window, four fit again at once.
        tokio::time::sleep(Duration::from_millis(1150)).await;
        let at = Instant::now();
        for _ in 0..4 {
            limiter.acquire(&buckets, far).await.expect("granted");
        }
        assert_eq!(Instant::now(), at);
    }
}
