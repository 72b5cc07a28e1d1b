//! The health of a hub's services, for the directory: measured from real traffic (calls
//! forwarded, answered below 500, upstream latency) and from a periodic probe of each
//! upstream; kept in the store in hourly buckets, so replicas add up and show the same.

pub mod board;

pub use board::{HealthBoard, ServiceHealth};
