//! Rate limits keyed by who asks: a token bucket per `user_id` for reactions, per client
//! address for registrations. What a limiter remembers is bounded: keys whose buckets are
//! full again are forgotten every [`FORGET_EVERY`], and at most `max_keys` are held at once.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// How often keys whose buckets are full again are forgotten: what a flood of new keys can
/// leave behind is what arrives within this and one bucket's refill.
pub const FORGET_EVERY: Duration = Duration::from_secs(1);

/// Keys a limiter holds at most (about 280 bytes each).
pub const MAX_KEYS: usize = 1_000_000;

/// A keyed token bucket.
pub struct KeyedRateLimit {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    burst: u32,
    max_keys: usize,
}

/// Why a key's requests cannot pass now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limited {
    /// Too fast: the tokens are there after this wait.
    Wait(Duration),
    /// More at once than the burst: they can never pass together.
    TooMany {
        /// The burst: the most one request may carry for one key.
        burst: u32,
    },
    /// The limiter holds as many keys as it may: a flood of new keys is on, and nothing passes
    /// until the keys it holds are forgotten.
    Full,
}

impl KeyedRateLimit {
    /// `per_second` for each key, with bursts of up to `burst`, at most `max_keys` held.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32, max_keys: usize) -> Self {
        KeyedRateLimit {
            limiter: DefaultKeyedRateLimiter::keyed(
                Quota::per_second(per_second).allow_burst(burst),
            ),
            clock: DefaultClock::default(),
            burst: burst.get(),
            max_keys,
        }
    }

    /// Takes `n` tokens from `key`'s bucket, or says how long until they would be there, or
    /// that they never will be.
    pub fn check(&self, key: &str, n: u32) -> Result<(), Limited> {
        // A key it holds cannot be told from a new one here, so a full limiter refuses all:
        // the alternative is memory without bound.
        if self.limiter.len() >= self.max_keys {
            return Err(Limited::Full);
        }
        let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        match self.limiter.check_key_n(&key.to_owned(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Limited::Wait(not_until.wait_time_from(self.clock.now()))),
            Err(_) => Err(Limited::TooMany { burst: self.burst }),
        }
    }

    /// Forgets keys whose buckets are full again.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
    }

    /// Gives back the memory of forgotten keys (costly: now and then).
    pub fn shrink(&self) {
        self.limiter.shrink_to_fit();
    }

    /// Keys held now.
    pub fn keys(&self) -> usize {
        self.limiter.len()
    }
}

/// `Retry-After` seconds for a [`Limited::Wait`]: at least one, at most an hour.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().clamp(1.0, 3600.0) as u64
}

/// Starts forgetting `limit`'s idle keys every [`FORGET_EVERY`], on `tasks`.
pub fn spawn_forgetting(
    tasks: &crate::system::Tasks,
    name: &'static str,
    limit: &std::sync::Arc<KeyedRateLimit>,
) {
    let limit = std::sync::Arc::clone(limit);
    tasks.spawn(name, async move {
        let mut every = tokio::time::interval(FORGET_EVERY);
        let mut ticks = 0u64;
        loop {
            every.tick().await;
            limit.forget_idle();
            ticks += 1;
            if ticks.is_multiple_of(60) {
                limit.shrink();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn a_burst_passes_then_the_key_waits() {
        let limit = KeyedRateLimit::new(nz(1), nz(3), 10);
        assert_eq!(limit.check("u", 3), Ok(()));
        assert!(matches!(limit.check("u", 1), Err(Limited::Wait(_))));
        assert_eq!(
            limit.check("v", 1),
            Ok(()),
            "another key has its own bucket"
        );
        assert_eq!(limit.check("w", 4), Err(Limited::TooMany { burst: 3 }));
    }

    #[test]
    fn the_keys_held_are_bounded_and_idle_ones_forgotten() {
        let limit = KeyedRateLimit::new(nz(1000), nz(1), 100);
        for i in 0..100 {
            assert_eq!(limit.check(&format!("u{i}"), 1), Ok(()));
        }
        assert_eq!(limit.keys(), 100);
        assert_eq!(limit.check("one-more", 1), Err(Limited::Full));
        // 1000 per second: every bucket is full again within a few ms.
        std::thread::sleep(Duration::from_millis(20));
        limit.forget_idle();
        assert_eq!(limit.keys(), 0);
        assert_eq!(limit.check("one-more", 1), Ok(()));
    }
}
