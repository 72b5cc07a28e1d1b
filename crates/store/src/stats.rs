//! Statistics per UTC day and service, shared by replicas: [`StatsStore`], the [`Day`] they are
//! kept by, and the counts of one day ([`StatCounts`]).

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use turnpike_l402::TokenId;

use crate::StoreError;

/// A UTC calendar day, `YYYY-MM-DD`, from 1970-01-01 to 9999-12-31.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(u32);

/// Seconds in a day.
const DAY_SECS: u64 = 86_400;
/// Days from 1970-01-01 to 9999-12-31.
const LAST_DAY: u32 = 2_932_896;

/// A string that is not a `YYYY-MM-DD` day between 1970-01-01 and 9999-12-31.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a day: expected YYYY-MM-DD between 1970-01-01 and 9999-12-31")]
pub struct DayError;

impl Day {
    /// The day holding `unix_secs` (UTC); past 9999-12-31, that last day.
    pub fn from_unix(unix_secs: u64) -> Day {
        Day(u32::try_from(unix_secs / DAY_SECS).map_or(LAST_DAY, |d| d.min(LAST_DAY)))
    }

    /// Days since 1970-01-01.
    pub fn days_since_epoch(self) -> u32 {
        self.0
    }

    /// The day `n` days before this one (1970-01-01 at the earliest).
    pub fn minus_days(self, n: u32) -> Day {
        Day(self.0.saturating_sub(n))
    }

    /// The day `n` days after this one (9999-12-31 at the latest).
    pub fn plus_days(self, n: u32) -> Day {
        Day(self.0.saturating_add(n).min(LAST_DAY))
    }

    /// `(year, month, day)` of this day (proleptic Gregorian calendar).
    pub fn ymd(self) -> (u32, u32, u32) {
        // Days since 0000-03-01 in 400-year eras of 146 097 days (H. Hinnant's method).
        let z = self.0 + 719_468;
        let era = z / 146_097;
        let doe = z % 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + u32::from(m <= 2);
        (y, m, d)
    }

    /// The day `year-month-day`, if it exists and lies within the supported range.
    pub fn from_ymd(year: u32, month: u32, day: u32) -> Option<Day> {
        if !(1970..=9999).contains(&year)
            || !(1..=12).contains(&month)
            || day == 0
            || day > days_in_month(year, month)
        {
            return None;
        }
        let y = if month <= 2 { year - 1 } else { year };
        let era = y / 400;
        let yoe = y % 400;
        let mp = if month > 2 { month - 3 } else { month + 9 };
        let doy = (153 * mp + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Some(Day(era * 146_097 + doe - 719_468))
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl FromStr for Day {
    type Err = DayError;

    /// Exactly `YYYY-MM-DD` (ASCII digits, no sign, no spaces).
    fn from_str(s: &str) -> Result<Day, DayError> {
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(DayError);
        }
        let num = |range: std::ops::Range<usize>| -> Result<u32, DayError> {
            b[range].iter().try_fold(0u32, |n, &c| match c {
                b'0'..=b'9' => Ok(n * 10 + u32::from(c - b'0')),
                _ => Err(DayError),
            })
        };
        Day::from_ymd(num(0..4)?, num(5..7)?, num(8..10)?).ok_or(DayError)
    }
}

/// What happened to one service in one period. `earned_msat` is the price of the payments
/// counted; each count is a number of requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatCounts {
    /// Millisatoshis earned by the payments counted.
    pub earned_msat: u64,
    /// `402` challenges issued.
    pub challenges: u64,
    /// Tokens used for the first time (a payment each).
    pub payments: u64,
    /// Paid calls served and kept charged.
    pub calls_served: u64,
    /// Paid calls given back (upstream failure, 5xx under `refund_on_5xx`, client gone).
    pub calls_refunded: u64,
    /// Calls served without payment (free tier, free service, a dynamic price of zero).
    pub free_calls: u64,
    /// Requests answered `429`.
    pub rate_limited: u64,
}

impl StatCounts {
    /// Whether every count is zero.
    pub fn is_zero(&self) -> bool {
        *self == StatCounts::default()
    }

    /// The counts of `self` and `other` added (saturating).
    pub fn plus(&self, other: &StatCounts) -> StatCounts {
        self.zip(other, u64::saturating_add)
    }

    /// What `self` has more than `earlier` (saturating at zero).
    pub fn minus(&self, earlier: &StatCounts) -> StatCounts {
        self.zip(earlier, u64::saturating_sub)
    }

    fn zip(&self, o: &StatCounts, f: impl Fn(u64, u64) -> u64) -> StatCounts {
        StatCounts {
            earned_msat: f(self.earned_msat, o.earned_msat),
            challenges: f(self.challenges, o.challenges),
            payments: f(self.payments, o.payments),
            calls_served: f(self.calls_served, o.calls_served),
            calls_refunded: f(self.calls_refunded, o.calls_refunded),
            free_calls: f(self.free_calls, o.free_calls),
            rate_limited: f(self.rate_limited, o.rate_limited),
        }
    }
}

/// The counts of one service on one day: a row of `stats_daily`, or a delta to add to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyStats {
    /// The UTC day.
    pub day: Day,
    /// The service (or route) name.
    pub service: String,
    /// What happened.
    pub counts: StatCounts,
}

/// Statistics per day and service, and the one write that marks a time pass as used.
///
/// Obligations: [`StatsStore::add_daily_stats`] is atomic (all deltas or none) and additive, so
/// any number of replicas adding at once sum up exactly; [`StatsStore::record_pass_use`] returns
/// `true` for exactly one caller per token, across processes.
#[async_trait]
pub trait StatsStore: Send + Sync + 'static {
    /// Adds each delta to its `(day, service)` row (created at zero), in one transaction.
    async fn add_daily_stats(&self, deltas: &[DailyStats]) -> Result<(), StoreError>;

    /// The rows of days `from..=to`, of every service or only `service`, by day then service.
    async fn daily_stats(
        &self,
        from: Day,
        to: Day,
        service: Option<&str>,
    ) -> Result<Vec<DailyStats>, StoreError>;

    /// Records the first use of a token that counts no calls (a time pass) for `service`:
    /// `true` if this call recorded it, `false` if the token was used before. The row is the
    /// token's in `token_passes` (the admin store moves its last use later).
    async fn record_pass_use(
        &self,
        token: &TokenId,
        service: &str,
        now_unix: u64,
    ) -> Result<bool, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_days() {
        assert_eq!(Day::from_unix(0).to_string(), "1970-01-01");
        assert_eq!(Day::from_unix(1_767_225_600).to_string(), "2026-01-01");
        assert_eq!(Day::from_unix(951_782_400).to_string(), "2000-02-29");
        assert_eq!(
            "2000-02-29".parse::<Day>().unwrap().days_since_epoch(),
            11_016
        );
        assert_eq!(
            "9999-12-31".parse::<Day>().unwrap(),
            Day::from_unix(u64::MAX)
        );
        for bad in [
            "",
            "2026-1-01",
            "2026-13-01",
            "2026-00-10",
            "2026-02-29",
            "1900-02-28",
            "1969-12-31",
            "+026-01-01",
            "2026/01/01",
            "2026-01-01 ",
            "２026-01-01",
            "2026-04-31",
        ] {
            assert_eq!(bad.parse::<Day>(), Err(DayError), "{bad:?}");
        }
        assert_eq!(Day::from_unix(0).minus_days(3), Day::from_unix(0));
    }

    proptest! {
        #[test]
        fn every_day_round_trips(d in 0..=LAST_DAY) {
            let day = Day(d);
            let text = day.to_string();
            prop_assert_eq!(text.len(), 10);
            prop_assert_eq!(text.parse::<Day>(), Ok(day));
            let (y, m, dd) = day.ymd();
            prop_assert_eq!(Day::from_ymd(y, m, dd), Some(day));
        }

        #[test]
        fn parsing_never_panics_and_accepts_only_its_own_form(s in "\\PC{0,12}") {
            if let Ok(day) = s.parse::<Day>() {
                prop_assert_eq!(day.to_string(), s);
            }
        }

        #[test]
        fn digit_strings_parse_only_when_the_date_exists(y in 0u32..10_000, m in 0u32..100, d in 0u32..100) {
            let s = format!("{y:04}-{m:02}-{d:02}");
            let valid = (1970..=9999).contains(&y) && (1..=12).contains(&m) && d >= 1
                && d <= days_in_month(y, m);
            prop_assert_eq!(s.parse::<Day>().is_ok(), valid);
        }
    }
}
