//! Keyed rate limits with bounded memory: per token, per client IP, and for minting 402
//! challenges per IP (each challenge costs an invoice, so it is rate limited too).
//!
//! Each key has a token bucket, implemented as GCRA (the generic cell rate algorithm): a key's
//! whole state is one number, its *theoretical arrival time* (TAT), the time at which its bucket
//! would be full again. With `T` the interval between two requests at the sustained rate and
//! `τ = (burst − 1)·T`, a request at `t` is allowed iff `max(TAT, t) − t ≤ τ`, and then
//! `TAT ← max(TAT, t) + T`. Times are integer nanoseconds; `T` is rounded up, so the limit is
//! never more generous than configured.
//!
//! Memory: the keys are spread over shards, each a mutex around a map of at most its share of
//! `max_keys` entries. A key whose TAT is in the past has a full bucket: forgetting it changes
//! nothing. So when a new key finds its shard full, the shard first drops all such idle keys; if
//! that did not leave an eighth of the shard free (so the sweep's cost is amortised over many
//! inserts), it also drops the entries with the earliest TATs, the ones closest to idle, whose
//! loss grants the least: a forgotten key gets a full bucket again. New keys are never refused,
//! and a key that has spent its burst (a late TAT) is the last to be forgotten, so a flood of
//! fresh keys (many source addresses) cannot reset the limits of the busiest keys before it
//! has pushed out every quieter one.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Number of shards (fewer when `max_keys` is smaller).
const SHARDS: usize = 16;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// The longest a bucket may take to refill: 100 years. Keeps every sum of nanoseconds below
/// `u64::MAX`.
const MAX_WINDOW_NANOS: u64 = 100 * 366 * 24 * 3600 * 1_000_000_000;

/// Times are clamped below this, so that `t + τ + T` never overflows (after ~380 years).
const MAX_T: u64 = u64::MAX - 2 * MAX_WINDOW_NANOS;

/// A rate limit: `requests` per `per_secs` seconds sustained, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Requests allowed per `per_secs` seconds, sustained.
    pub requests: u32,
    /// The period, in seconds.
    pub per_secs: u32,
    /// Requests allowed at once, by a key that has been quiet (at least 1).
    pub burst: u32,
}

impl Limit {
    /// Checks that every field is at least 1 and that a bucket refills within 100 years.
    pub fn validate(&self) -> Result<(), String> {
        if self.requests == 0 {
            return Err("requests must be at least 1".into());
        }
        if self.per_secs == 0 {
            return Err("per_secs must be at least 1".into());
        }
        if self.burst == 0 {
            return Err("burst must be at least 1".into());
        }
        if self.raw_window_nanos() > u128::from(MAX_WINDOW_NANOS) {
            return Err(format!(
                "a burst of {} at {} requests per {} s takes more than 100 years to refill",
                self.burst, self.requests, self.per_secs
            ));
        }
        Ok(())
    }

    /// `T` in nanoseconds, rounded up; fields of 0 count as 1.
    fn raw_interval_nanos(&self) -> u128 {
        (u128::from(self.per_secs.max(1)) * NANOS_PER_SEC)
            .div_ceil(u128::from(self.requests.max(1)))
    }

    /// `burst · T`: the time an empty bucket takes to fill.
    fn raw_window_nanos(&self) -> u128 {
        self.raw_interval_nanos() * u128::from(self.burst.max(1))
    }
}

/// A refused request: the time after which the same key's next request would be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// The wait in whole seconds for a `Retry-After` header: rounded up, at least 1.
    pub fn secs_rounded_up(&self) -> u64 {
        let secs = self.0.as_secs();
        let secs = if self.0.subsec_nanos() > 0 {
            secs.saturating_add(1)
        } else {
            secs
        };
        secs.max(1)
    }
}

struct Shard<K> {
    /// Key → TAT, in nanoseconds since the limiter's epoch.
    map: Mutex<HashMap<K, u64>>,
    /// At most this many keys.
    cap: usize,
}

/// Token buckets per key (GCRA), sharded, in bounded memory. Cheap to share behind an `Arc`.
pub struct RateLimiter<K> {
    limit: Limit,
    max_keys: usize,
    /// `T`: nanoseconds between two requests at the sustained rate.
    interval: u64,
    /// `τ = (burst − 1)·T`.
    tolerance: u64,
    /// Time zero, set by the first check.
    epoch: OnceLock<Instant>,
    /// Chooses a key's shard (independent of the maps' own hashers).
    shard_hasher: RandomState,
    shards: Box<[Shard<K>]>,
}

impl<K> std::fmt::Debug for RateLimiter<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limit", &self.limit)
            .field("max_keys", &self.max_keys)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone + Send + Sync> RateLimiter<K> {
    /// A limiter applying `limit` to each key, remembering at most `max_keys` keys.
    ///
    /// `limit` should have passed [`Limit::validate`]; if not, fields of 0 count as 1 and the
    /// refill time is capped at 100 years. A `max_keys` of 0 counts as 1.
    pub fn new(limit: Limit, max_keys: usize) -> RateLimiter<K> {
        let cap_nanos = |n: u128| u64::try_from(n).unwrap_or(u64::MAX).min(MAX_WINDOW_NANOS);
        let interval = cap_nanos(limit.raw_interval_nanos());
        let tolerance = cap_nanos(limit.raw_interval_nanos() * u128::from(limit.burst.max(1) - 1));
        let max_keys = max_keys.max(1);
        let n = SHARDS.min(max_keys);
        let shards = (0..n)
            .map(|i| Shard {
                map: Mutex::new(HashMap::new()),
                cap: max_keys / n + usize::from(i < max_keys % n),
            })
            .collect();
        RateLimiter {
            limit,
            max_keys,
            interval,
            tolerance,
            epoch: OnceLock::new(),
            shard_hasher: RandomState::new(),
            shards,
        }
    }

    /// The limit applied to each key.
    pub fn limit(&self) -> Limit {
        self.limit
    }

    /// Counts one request by `key` at `now`: `Ok` if it is allowed (one unit of the key's bucket
    /// is consumed), else how long until it would be. Takes one shard lock; allocates only for a
    /// key it does not hold yet.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), RetryAfter> {
        let t = self.nanos(now);
        let shard = self.shard(key);
        let mut map = shard.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tat) = map.get_mut(key) {
            let start = (*tat).max(t);
            let ahead = start - t;
            if ahead > self.tolerance {
                return Err(RetryAfter(Duration::from_nanos(ahead - self.tolerance)));
            }
            *tat = start.saturating_add(self.interval);
            return Ok(());
        }
        // A key not held has a full bucket, and burst ≥ 1: allowed.
        if map.len() >= shard.cap {
            make_room(&mut map, shard.cap, t);
        }
        map.insert(key.clone(), t.saturating_add(self.interval));
        Ok(())
    }

    /// Whether a request by `key` at `now` would be allowed, without counting it.
    pub fn peek(&self, key: &K, now: Instant) -> Result<(), RetryAfter> {
        let t = self.nanos(now);
        let map = self
            .shard(key)
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match map.get(key) {
            Some(&tat) if tat.max(t) - t > self.tolerance => Err(RetryAfter(Duration::from_nanos(
                tat.max(t) - t - self.tolerance,
            ))),
            _ => Ok(()),
        }
    }

    /// Keys currently held (including idle ones not yet swept). At most `max_keys`.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.map.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: &K) -> &Shard<K> {
        // The high bits: the maps use the low ones (with other hashers, but still).
        let h = self.shard_hasher.hash_one(key) >> 32;
        let i = usize::try_from(h).unwrap_or(0) % self.shards.len();
        &self.shards[i]
    }

    /// `now` in nanoseconds since the epoch (the first check's `now`); earlier times count as
    /// the epoch.
    fn nanos(&self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_init(|| now);
        let nanos = now.saturating_duration_since(epoch).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX).min(MAX_T)
    }
}

/// Frees room in a full shard (see the module documentation): drops the idle keys, then, if
/// fewer than an eighth of `cap` (at least one) entries are free, the entries with the earliest
/// TATs.
fn make_room<K>(map: &mut HashMap<K, u64>, cap: usize, t: u64) {
    map.retain(|_, tat| *tat > t);
    let target = cap - (cap / 8).max(1);
    if map.len() <= target {
        return;
    }
    let excess = map.len() - target;
    let mut tats: Vec<u64> = map.values().copied().collect();
    let (_, &mut threshold, _) = tats.select_nth_unstable(excess - 1);
    let below = tats.iter().filter(|&&tat| tat < threshold).count();
    let mut ties = excess - below;
    map.retain(|_, tat| {
        if *tat < threshold {
            false
        } else if *tat == threshold && ties > 0 {
            ties -= 1;
            false
        } else {
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use proptest::prelude::*;

    use super::*;

    fn limit(requests: u32, per_secs: u32, burst: u32) -> Limit {
        Limit {
            requests,
            per_secs,
            burst,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn peek_tells_without_counting() {
        let rl = RateLimiter::new(limit(2, 1, 2), 100);
        let t0 = Instant::now();
        assert_eq!(rl.peek(&"a", t0), Ok(()));
        assert_eq!(rl.check(&"a", t0), Ok(()));
        for _ in 0..5 {
            assert_eq!(rl.peek(&"a", t0), Ok(()));
        }
        assert_eq!(rl.check(&"a", t0), Ok(()));
        assert_eq!(rl.peek(&"a", t0), Err(RetryAfter(ms(500))));
        assert_eq!(rl.peek(&"a", t0 + ms(500)), Ok(()));
        assert_eq!(rl.peek(&"b", t0), Ok(()));
    }

    #[test]
    fn burst_then_one_per_interval() {
        // T = 500 ms, τ = 1 s.
        let rl = RateLimiter::new(limit(2, 1, 3), 100);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(rl.check(&"a", t0), Ok(()));
        }
        assert_eq!(rl.check(&"a", t0), Err(RetryAfter(ms(500))));
        assert_eq!(rl.check(&"a", t0 + ms(499)), Err(RetryAfter(ms(1))));
        assert_eq!(rl.check(&"a", t0 + ms(500)), Ok(()));
        assert_eq!(rl.check(&"a", t0 + ms(500)), Err(RetryAfter(ms(500))));
        assert_eq!(rl.check(&"a", t0 + ms(1000)), Ok(()));
        assert_eq!(rl.check(&"a", t0 + ms(1250)), Err(RetryAfter(ms(250))));
        // Refused requests consume nothing.
        assert_eq!(rl.check(&"a", t0 + ms(1500)), Ok(()));
        // Quiet long enough: the whole burst again, no more.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(rl.check(&"a", later), Ok(()));
        }
        assert!(rl.check(&"a", later).is_err());
        // Partly refilled: 1.2 s after the bucket emptied, two requests (at 0.5 s each).
        let partly = later + ms(1200);
        assert_eq!(rl.check(&"a", partly), Ok(()));
        assert_eq!(rl.check(&"a", partly), Ok(()));
        assert_eq!(rl.check(&"a", partly), Err(RetryAfter(ms(300))));
    }

    #[test]
    fn retry_after_is_exact_and_rounds_up() {
        let rl = RateLimiter::new(limit(1, 60, 1), 10);
        let t0 = Instant::now();
        assert_eq!(rl.check(&1u8, t0), Ok(()));
        let wait = rl.check(&1u8, t0).unwrap_err();
        assert_eq!(wait, RetryAfter(Duration::from_secs(60)));
        assert_eq!(wait.secs_rounded_up(), 60);
        let wait = rl.check(&1u8, t0 + ms(1500)).unwrap_err();
        assert_eq!(wait, RetryAfter(ms(58_500)));
        assert_eq!(wait.secs_rounded_up(), 59);
        let wait = rl.check(&1u8, t0 + ms(59_999)).unwrap_err();
        assert_eq!(wait.secs_rounded_up(), 1);
        assert_eq!(RetryAfter(Duration::ZERO).secs_rounded_up(), 1);
        assert_eq!(RetryAfter(Duration::from_nanos(1)).secs_rounded_up(), 1);
        assert_eq!(RetryAfter(Duration::from_secs(2)).secs_rounded_up(), 2);
        assert_eq!(RetryAfter(Duration::MAX).secs_rounded_up(), u64::MAX);
        assert_eq!(rl.check(&1u8, t0 + Duration::from_secs(60)), Ok(()));
    }

    #[test]
    fn interval_rounds_up() {
        // 3 per second: T = 333 333 334 ns, never faster than configured.
        let rl = RateLimiter::new(limit(3, 1, 1), 10);
        let t0 = Instant::now();
        assert_eq!(rl.check(&(), t0), Ok(()));
        assert_eq!(
            rl.check(&(), t0),
            Err(RetryAfter(Duration::from_nanos(333_333_334)))
        );
        assert!(
            rl.check(&(), t0 + Duration::from_nanos(333_333_333))
                .is_err()
        );
        assert_eq!(
            rl.check(&(), t0 + Duration::from_nanos(333_333_334)),
            Ok(())
        );
    }

    #[test]
    fn keys_are_independent() {
        let rl = RateLimiter::new(limit(1, 10, 2), 100);
        let t0 = Instant::now();
        assert!(rl.check(&"a".to_owned(), t0).is_ok());
        assert!(rl.check(&"a".to_owned(), t0).is_ok());
        assert!(rl.check(&"a".to_owned(), t0).is_err());
        assert!(rl.check(&"b".to_owned(), t0).is_ok());
        assert!(rl.check(&"b".to_owned(), t0).is_ok());
        assert!(rl.check(&"b".to_owned(), t0).is_err());
        assert_eq!(rl.len(), 2);
        assert!(!rl.is_empty());
    }

    #[test]
    fn times_before_the_first_check_count_as_the_first() {
        let t0 = Instant::now();
        let rl = RateLimiter::new(limit(1, 1, 1), 10);
        assert!(rl.check(&0, t0 + Duration::from_secs(5)).is_ok());
        assert_eq!(
            rl.check(&0, t0),
            Err(RetryAfter(Duration::from_secs(1))),
            "an earlier time neither panics nor grants more"
        );
    }

    #[test]
    fn validate() {
        assert!(limit(10, 60, 5).validate().is_ok());
        assert!(limit(u32::MAX, 1, u32::MAX).validate().is_ok());
        assert!(limit(0, 60, 5).validate().unwrap_err().contains("requests"));
        assert!(limit(10, 0, 5).validate().unwrap_err().contains("per_secs"));
        assert!(limit(10, 60, 0).validate().unwrap_err().contains("burst"));
        assert!(limit(1, u32::MAX, u32::MAX).validate().is_err());
        // Invalid limits still build a limiter that does not panic.
        for l in [
            limit(0, 0, 0),
            limit(1, u32::MAX, u32::MAX),
            limit(u32::MAX, 1, 1),
        ] {
            let rl = RateLimiter::new(l, 0);
            let t0 = Instant::now();
            assert!(rl.check(&1, t0).is_ok());
            if let Some(far) = t0.checked_add(Duration::from_secs(1 << 40)) {
                let _ = rl.check(&1, far);
            }
            let _ = rl.check(&1, t0);
        }
    }

    #[test]
    fn limit_deserializes_strictly() {
        let l: Limit = toml::from_str("requests = 10\nper_secs = 60\nburst = 5").unwrap();
        assert_eq!(l, limit(10, 60, 5));
        assert!(toml::from_str::<Limit>("requests = 10\nper_secs = 60").is_err());
        assert!(toml::from_str::<Limit>("requests = 1\nper_secs = 1\nburst = 1\nx = 1").is_err());
        assert!(toml::from_str::<Limit>("requests = -1\nper_secs = 1\nburst = 1").is_err());
    }

    #[test]
    fn memory_stays_bounded() {
        for max_keys in [1, 3, 16, 1000] {
            let rl = RateLimiter::new(limit(1, 60, 5), max_keys);
            let t0 = Instant::now();
            // A busy key: its whole burst spent.
            for _ in 0..5 {
                assert!(rl.check(&u32::MAX, t0).is_ok());
            }
            for k in 0..100_000u32 {
                // Half at one instant (nothing idle), half spread out (idle keys to sweep).
                let now = if k < 50_000 {
                    t0
                } else {
                    t0 + Duration::from_secs(u64::from(k))
                };
                assert!(rl.check(&k, now).is_ok(), "a new key is allowed");
                if k % 97 == 0 || k < 2000 {
                    assert!(rl.len() <= max_keys, "{} > {max_keys}", rl.len());
                }
            }
            assert!(rl.len() <= max_keys);
        }
        // The busiest key is the last one forgotten while nothing is idle.
        let rl = RateLimiter::new(limit(1, 60, 5), 1000);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(rl.check(&u32::MAX, t0).is_ok());
        }
        for k in 0..100_000u32 {
            assert!(rl.check(&k, t0).is_ok());
        }
        assert!(rl.check(&u32::MAX, t0).is_err(), "still limited");
        assert!(rl.len() <= 1000);
    }

    #[test]
    fn concurrent_checks_never_exceed_the_limit() {
        let l = limit(1000, 1, 50);
        let rl = Arc::new(RateLimiter::<u64>::new(l, 64));
        let allowed = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let rl = rl.clone();
                let allowed = allowed.clone();
                std::thread::spawn(move || {
                    for n in 0..20_000u64 {
                        if rl.check(&0, Instant::now()).is_ok() {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                        // Other keys, in the same shards.
                        let _ = rl.check(&(1 + (n + i) % 200), Instant::now());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let elapsed = start.elapsed().as_nanos();
        let allowed = u128::from(allowed.load(Ordering::Relaxed));
        let bound = u128::from(l.burst) + elapsed * u128::from(l.requests) / NANOS_PER_SEC;
        assert!(allowed >= u128::from(l.burst), "{allowed}");
        assert!(allowed <= bound, "{allowed} > {bound}");
        assert!(rl.len() <= 64);
    }

    #[test]
    fn is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<RateLimiter<String>>();
        assert_send_sync::<RateLimiter<std::net::IpAddr>>();
    }

    proptest! {
        /// Whatever the times (in any order), one key never gets more than
        /// `burst + ⌊elapsed · requests / per_secs⌋` requests.
        #[test]
        fn never_more_than_burst_plus_rate(
            requests in 1u32..50,
            per_secs in 1u32..5,
            burst in 1u32..10,
            times in prop::collection::vec(0u64..20_000_000_000, 1..300),
            sorted in any::<bool>(),
        ) {
            let mut times = times;
            if sorted {
                times.sort_unstable();
            }
            let rl = RateLimiter::new(limit(requests, per_secs, burst), 4);
            let t0 = Instant::now();
            let allowed = times
                .iter()
                .filter(|&&t| rl.check(&"k", t0 + Duration::from_nanos(t)).is_ok())
                .count() as u128;
            let elapsed = u128::from(times.iter().max().unwrap() - times.iter().min().unwrap());
            let bound = u128::from(burst)
                + elapsed * u128::from(requests) / (u128::from(per_secs) * NANOS_PER_SEC);
            prop_assert!(allowed <= bound, "{} > {}", allowed, bound);
            if sorted {
                // And at least the burst, when time only moves forward.
                prop_assert!(allowed >= u128::from(burst).min(times.len() as u128));
            }
        }
    }
}
