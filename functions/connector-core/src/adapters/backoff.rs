//! Exponential backoff with jitter for the retries the SDK does not do for us:
//! unprocessed batch items and failed queue entries.

use std::time::Duration;

/// `attempts` tries in all; before try `n` (from 1) waits a random time between half and
/// all of `base * 2^(n-1)`, capped at `max`. Jitter spreads the retries of concurrent
/// workers that were throttled together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
    pub attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(25),
            max: Duration::from_secs(2),
            attempts: 10,
        }
    }
}

impl Backoff {
    /// The wait before retry number `retry` (1 for the first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(20);
        let full = self
            .base
            .saturating_mul(1u32 << exponent)
            .min(self.max)
            .as_millis() as u64;
        let half = full / 2;
        Duration::from_millis(half + rand::random_range(0..=full - half))
    }

    pub async fn sleep(&self, retry: u32) {
        tokio::time::sleep(self.delay(retry)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_are_capped() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            attempts: 5,
        };
        for _ in 0..50 {
            let first = backoff.delay(1);
            assert!(
                (50..=100).contains(&(first.as_millis() as u64)),
                "{first:?}"
            );
            let third = backoff.delay(3);
            assert!(
                (200..=400).contains(&(third.as_millis() as u64)),
                "{third:?}"
            );
            let late = backoff.delay(30);
            assert!(
                (500..=1000).contains(&(late.as_millis() as u64)),
                "{late:?}"
            );
        }
    }
}
