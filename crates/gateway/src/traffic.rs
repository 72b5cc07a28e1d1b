//! What a service's real traffic says about its upstream, counted on the request path with
//! atomic adds only: calls forwarded, calls answered below 500, and the upstream latency of
//! answered calls in log-linear millisecond buckets (exact below 16 ms, then 8 buckets per
//! doubling: within 12.5 %). The hub's health flush ([`crate::hub::health`]) adds what was
//! counted to the store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Milliseconds counted exactly (one bucket each).
const EXACT_MS: u64 = 16;
/// Buckets per doubling above [`EXACT_MS`].
const PER_DOUBLING: u64 = 8;
/// Doublings covered above [`EXACT_MS`] (up to 16 ms × 2^14 ≈ 262 s; longer is the last).
const DOUBLINGS: u64 = 14;
/// How many latency buckets there are.
pub const BUCKETS: usize = (EXACT_MS + PER_DOUBLING * DOUBLINGS) as usize;

/// The bucket of a latency of `ms` milliseconds.
pub fn bucket_of(ms: u64) -> u32 {
    let b = if ms < EXACT_MS {
        ms
    } else {
        // ms >= 16: its highest bit is at `top` >= 4; the next three bits pick the sub-bucket.
        let top = u64::from(63 - ms.leading_zeros());
        let sub = (ms >> (top - 3)) & (PER_DOUBLING - 1);
        EXACT_MS + (top - 4) * PER_DOUBLING + sub
    };
    u32::try_from(b.min(BUCKETS as u64 - 1)).unwrap_or(u32::MAX)
}

/// The smallest latency (ms) in bucket `b`: what a median falling in it is reported as.
pub fn bucket_floor(b: u32) -> u64 {
    let b = u64::from(b);
    if b < EXACT_MS {
        return b;
    }
    let top = (b - EXACT_MS) / PER_DOUBLING + 4;
    let sub = (b - EXACT_MS) % PER_DOUBLING;
    (PER_DOUBLING + sub) << (top - 3)
}

/// The median of calls counted per bucket (`(bucket, calls)`, any order): the floor of the
/// bucket holding the middle call (the lower middle for an even count). `None` without calls.
pub fn median_ms(buckets: &[(u32, u64)]) -> Option<u64> {
    let mut sorted = buckets.to_vec();
    sorted.sort_unstable();
    let total: u64 = sorted.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return None;
    }
    let middle = total.div_ceil(2);
    let mut seen = 0;
    for (b, n) in sorted {
        seen += n;
        if seen >= middle {
            return Some(bucket_floor(b));
        }
    }
    None
}

/// A service's traffic counters.
#[derive(Debug)]
pub struct Traffic {
    forwarded: AtomicU64,
    ok: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

impl Default for Traffic {
    fn default() -> Traffic {
        Traffic {
            forwarded: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The counters as they stand (they only grow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficCounts {
    /// Calls forwarded.
    pub forwarded: u64,
    /// Of them, answered below 500.
    pub ok: u64,
    /// Answered calls per bucket.
    pub latency: [u64; BUCKETS],
}

impl Default for TrafficCounts {
    fn default() -> TrafficCounts {
        TrafficCounts {
            forwarded: 0,
            ok: 0,
            latency: [0; BUCKETS],
        }
    }
}

impl TrafficCounts {
    /// What was counted since `earlier`.
    pub fn minus(&self, earlier: &TrafficCounts) -> TrafficCounts {
        TrafficCounts {
            forwarded: self.forwarded.saturating_sub(earlier.forwarded),
            ok: self.ok.saturating_sub(earlier.ok),
            latency: std::array::from_fn(|i| self.latency[i].saturating_sub(earlier.latency[i])),
        }
    }

    /// Nothing counted. Every counter is looked at: they are read one by one while calls go
    /// on, so a delta can hold a call's `ok` (or latency) before its `forwarded`, and one taken
    /// for nothing would be marked flushed and lost.
    pub fn is_zero(&self) -> bool {
        self.forwarded == 0 && self.ok == 0 && self.latency.iter().all(|n| *n == 0)
    }

    /// The non-empty buckets, as `(bucket, calls)`.
    pub fn latency_buckets(&self) -> Vec<(u32, u64)> {
        (0u32..).zip(self.latency).filter(|(_, n)| *n > 0).collect()
    }
}

impl Traffic {
    /// A call forwarded: answered with `status` after `elapsed`, or not answered at all
    /// (unreachable, timed out: `None`, counted as a failure).
    #[inline]
    pub fn record(&self, status: Option<http::StatusCode>, elapsed: Duration) {
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        if let Some(status) = status {
            if !status.is_server_error() {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
            self.latency[bucket_of(ms) as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counters now.
    pub fn counts(&self) -> TrafficCounts {
        TrafficCounts {
            forwarded: self.forwarded.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
            latency: std::array::from_fn(|i| self.latency[i].load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn small_latencies_are_exact_and_large_ones_bounded() {
        for ms in 0..16 {
            assert_eq!(bucket_floor(bucket_of(ms)), ms);
        }
        assert_eq!(bucket_of(16), 16);
        assert_eq!(bucket_floor(bucket_of(17)), 16);
        assert_eq!(bucket_floor(bucket_of(18)), 18);
        assert_eq!(bucket_floor(bucket_of(1000)), 960);
        assert_eq!(bucket_of(u64::MAX) as usize, BUCKETS - 1);
    }

    #[test]
    fn the_median_is_the_middle_call() {
        assert_eq!(median_ms(&[]), None);
        assert_eq!(median_ms(&[(5, 0)]), None);
        assert_eq!(median_ms(&[(5, 1)]), Some(5));
        assert_eq!(median_ms(&[(9, 1), (2, 1), (5, 1)]), Some(5));
        assert_eq!(median_ms(&[(2, 2), (9, 2)]), Some(2));
        assert_eq!(median_ms(&[(2, 1), (9, 2)]), Some(9));
    }

    #[test]
    fn failures_and_5xx_count_as_forwarded_but_not_ok() {
        let t = Traffic::default();
        t.record(Some(http::StatusCode::OK), Duration::from_millis(3));
        t.record(Some(http::StatusCode::NOT_FOUND), Duration::from_millis(3));
        t.record(
            Some(http::StatusCode::BAD_GATEWAY),
            Duration::from_millis(7),
        );
        t.record(None, Duration::from_secs(60));
        let c = t.counts();
        assert_eq!((c.forwarded, c.ok), (4, 2));
        assert_eq!(c.latency_buckets(), [(3, 2), (7, 1)]);
        assert!(c.minus(&c).is_zero());
    }

    #[test]
    fn a_delta_holding_only_an_ok_is_not_nothing() {
        // Read while a call is being recorded: its `ok` seen, its `forwarded` not yet.
        let torn = TrafficCounts {
            ok: 1,
            ..TrafficCounts::default()
        };
        assert!(!torn.is_zero());
        assert!(TrafficCounts::default().is_zero());
    }

    proptest! {
        /// Buckets are ordered like latencies, and a bucket's floor is within 12.5 % below
        /// any latency in it (exact below 16 ms).
        #[test]
        fn buckets_are_monotone_and_tight(a in 0u64..300_000, b in 0u64..300_000) {
            if a <= b {
                prop_assert!(bucket_of(a) <= bucket_of(b));
            }
            let floor = bucket_floor(bucket_of(a));
            prop_assert!(floor <= a);
            if (bucket_of(a) as usize) < BUCKETS - 1 {
                prop_assert!(a - floor <= a / 8, "{a} -> {floor}");
            }
        }
    }
}
