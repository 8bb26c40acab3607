//! Per-user rate limiting: a token bucket per `user_id`.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// A keyed token bucket; `None` limits nothing.
pub struct UserRateLimit {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    burst: u32,
}

/// Why a user's reactions cannot pass now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limited {
    /// Too fast: the tokens are there after this wait.
    Wait(Duration),
    /// More at once than the burst: they can never pass together.
    TooMany {
        /// The burst: the most one request may carry for one user.
        burst: u32,
    },
}

impl UserRateLimit {
    /// `per_second` reactions per user, with bursts of up to `burst`.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        UserRateLimit {
            limiter: DefaultKeyedRateLimiter::keyed(
                Quota::per_second(per_second).allow_burst(burst),
            ),
            clock: DefaultClock::default(),
            burst: burst.get(),
        }
    }

    /// Takes `n` tokens from `user`'s bucket, or says how long until they would be there, or
    /// that they never will be.
    pub fn check(&self, user: &str, n: u32) -> Result<(), Limited> {
        let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        match self.limiter.check_key_n(&user.to_owned(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Limited::Wait(not_until.wait_time_from(self.clock.now()))),
            Err(_) => Err(Limited::TooMany { burst: self.burst }),
        }
    }

    /// Forgets users whose buckets are full again (bounds memory).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}
