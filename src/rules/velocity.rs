//! Velocity: how many distinct partners queried a user over sliding windows (multi-lending
//! signal). In process by default; the trait lets a shared store (Redis) implement it later.

use std::collections::HashMap;
use std::sync::Mutex;

/// Distinct partners that queried the user in each window, the current query included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VelocityCounts {
    pub partners_1h: u32,
    pub partners_24h: u32,
    pub partners_30d: u32,
}

pub trait VelocityStore: Send + Sync {
    /// Records a query of `user` by `partner` at `now_ms` and returns the counts after it.
    fn record(&self, user: &str, partner: &str, now_ms: i64) -> VelocityCounts;
}

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
const MONTH_MS: i64 = 30 * DAY_MS;
const SHARDS: usize = 32;

/// Per user: the last query time of each partner (30 days kept). Sharded mutexes keep
/// contention low without an extra crate.
pub struct InProcessVelocity {
    shards: Vec<Mutex<HashMap<String, Vec<(String, i64)>>>>,
}

impl Default for InProcessVelocity {
    fn default() -> Self {
        InProcessVelocity {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

fn shard_of(user: &str) -> usize {
    // FNV-1a: stable and cheap; only spreads users over shards.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in user.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % SHARDS as u64) as usize
}

impl VelocityStore for InProcessVelocity {
    fn record(&self, user: &str, partner: &str, now_ms: i64) -> VelocityCounts {
        let shard = &self.shards[shard_of(user)];
        // A poisoned lock only means another thread panicked mid-update; the data is still usable.
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        let seen = map.entry(user.to_string()).or_default();
        seen.retain(|(_, t)| now_ms - *t < MONTH_MS);
        match seen.iter_mut().find(|(p, _)| p == partner) {
            Some(entry) => entry.1 = entry.1.max(now_ms),
            None => seen.push((partner.to_string(), now_ms)),
        }
        let within = |w: i64| seen.iter().filter(|(_, t)| now_ms - *t < w).count() as u32;
        VelocityCounts {
            partners_1h: within(HOUR_MS),
            partners_24h: within(DAY_MS),
            partners_30d: seen.len() as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_partners_per_window() {
        let v = InProcessVelocity::default();
        let t0 = 1_000 * DAY_MS;
        assert_eq!(v.record("u", "p1", t0).partners_1h, 1);
        assert_eq!(v.record("u", "p1", t0 + 1).partners_1h, 1); // same partner again
        let c = v.record("u", "p2", t0 + 2 * HOUR_MS);
        assert_eq!((c.partners_1h, c.partners_24h, c.partners_30d), (1, 2, 2));
        let c = v.record("u", "p3", t0 + 2 * DAY_MS);
        assert_eq!((c.partners_1h, c.partners_24h, c.partners_30d), (1, 1, 3));
        let c = v.record("u", "p4", t0 + 40 * DAY_MS);
        assert_eq!((c.partners_1h, c.partners_24h, c.partners_30d), (1, 1, 1));
        assert_eq!(v.record("other", "p1", t0).partners_30d, 1);
    }
}
