//! Per-partner rate limits: a GCRA token bucket per partner (the `governor` crate, lock-free),
//! `rate_per_sec` sustained and `burst` at once. A refusal says when the next call would pass.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};

/// A refused call: over the partner's limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate limit of partner '{partner}' exceeded ({rate_per_sec}/s, burst {burst}); retry after {} ms", retry_after.as_millis().max(1))]
pub struct RateLimited {
    pub partner: String,
    pub rate_per_sec: u32,
    pub burst: u32,
    /// When the next call would be allowed.
    pub retry_after: Duration,
}

/// One partner's limiter.
pub struct RateLimit {
    limiter: DefaultDirectRateLimiter,
    clock: DefaultClock,
    rate_per_sec: u32,
    burst: u32,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RateLimit({}/s, burst {})",
            self.rate_per_sec, self.burst
        )
    }
}

impl RateLimit {
    /// `rate_per_sec` and `burst` of 0 are taken as 1 (the config refuses them anyway).
    pub fn new(rate_per_sec: u32, burst: u32) -> RateLimit {
        let rate = NonZeroU32::new(rate_per_sec).unwrap_or(NonZeroU32::MIN);
        let b = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        RateLimit {
            limiter: DefaultDirectRateLimiter::direct(Quota::per_second(rate).allow_burst(b)),
            clock: DefaultClock::default(),
            rate_per_sec: rate.get(),
            burst: b.get(),
        }
    }

    /// Takes one cell, or says how long until one is free.
    pub fn check(&self, partner: &str) -> Result<(), RateLimited> {
        self.limiter.check().map_err(|not_until| RateLimited {
            partner: partner.to_string(),
            rate_per_sec: self.rate_per_sec,
            burst: self.burst,
            retry_after: not_until.wait_time_from(self.clock.now()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refused_with_a_retry_hint() {
        let l = RateLimit::new(1, 3);
        for _ in 0..3 {
            l.check("p").expect("within the burst");
        }
        let e = l.check("p").expect_err("over the limit");
        assert!(e.retry_after > Duration::ZERO && e.retry_after <= Duration::from_secs(1));
        assert!(e.to_string().contains("retry after"), "{e}");
        let fast = RateLimit::new(1000, 1);
        fast.check("p").expect("first");
        std::thread::sleep(Duration::from_millis(5));
        fast.check("p").expect("replenished after 1 ms");
    }
}
