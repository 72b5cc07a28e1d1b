//! The health of a hub's services, for the directory: measured from real traffic (calls
//! forwarded, answered below 500, upstream latency: [`crate::traffic`]) and from a periodic
//! probe of each upstream ([`probe`]); kept in the store in hourly buckets, so replicas add up
//! and every replica shows the same figures ([`flush`]). Nothing here is on the request path:
//! requests only add to atomic counters.

pub mod board;
pub mod flush;
pub mod probe;

use std::time::Duration;

pub use board::{Health, HealthBoard, ServiceHealth};

/// How often counts are added to the store and the board is read back.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(5);

/// Hours the figures cover: the current one and the 23 before.
pub const WINDOW_HOURS: u64 = 24;

/// Hours of buckets kept in the store (older ones are pruned).
pub const KEEP_HOURS: u64 = 7 * 24;
