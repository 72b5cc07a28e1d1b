//! Logging a condition that repeats (accept failures, a full connection table) once when it
//! starts, as a count at most every [`SUMMARY_EVERY`] while it lasts, and once when it ends.

use std::time::{Duration, Instant};

/// Least time between two log lines of one episode.
pub(crate) const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// A repeating condition and how often it happened since it was last logged.
#[derive(Debug)]
pub(crate) struct Episode {
    what: &'static str,
    since: Option<Instant>,
    last_logged: Option<Instant>,
    unlogged: u64,
    total: u64,
}

impl Episode {
    pub(crate) fn new(what: &'static str) -> Episode {
        Episode {
            what,
            since: None,
            last_logged: None,
            unlogged: 0,
            total: 0,
        }
    }

    /// The condition happened (again); returns whether a line was logged.
    pub(crate) fn happened(&mut self, detail: &dyn std::fmt::Display) -> bool {
        let now = Instant::now();
        self.total += 1;
        match (self.since, self.last_logged) {
            (None, _) => {
                self.since = Some(now);
                self.last_logged = Some(now);
                tracing::warn!(detail = %detail, "{}", self.what);
                true
            }
            (Some(_), Some(last)) if now.duration_since(last) < SUMMARY_EVERY => {
                self.unlogged += 1;
                false
            }
            (Some(since), _) => {
                tracing::warn!(
                    detail = %detail,
                    times = self.unlogged + 1,
                    for_secs = now.duration_since(since).as_secs(),
                    "{} (still)",
                    self.what
                );
                self.last_logged = Some(now);
                self.unlogged = 0;
                true
            }
        }
    }

    /// The condition is over (if it was on).
    pub(crate) fn ended(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                times = self.total,
                for_secs = since.elapsed().as_secs(),
                "no longer: {}",
                self.what
            );
            self.last_logged = None;
            self.unlogged = 0;
            self.total = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_start_then_at_most_a_summary_per_period() {
        let mut e = Episode::new("test");
        assert!(e.happened(&"x"));
        let logged = (0..1000).filter(|_| e.happened(&"x")).count();
        assert_eq!(logged, 0);
        assert_eq!(e.total, 1001);
        e.ended();
        assert!(e.happened(&"x"), "a new episode logs its start");
    }
}
