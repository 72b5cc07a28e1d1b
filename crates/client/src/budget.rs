//! Spending limits of a wallet (`[wallets.NAME.budget]` in the wallet file) and the pure check
//! of one payment against what the ledger says was already spent.
//!
//! ```toml
//! [wallets.alice.budget]
//! max_per_call = 100
//! per_host = { sats = 500, per = "day" }
//! per_period = { sats = 2000, per = "day" }
//! total = 10000
//! approve_above = 200
//! ```
//!
//! Every amount checked is the decoded invoice's amount plus the most fee the payment may cost,
//! never a price the server claims. Windows are rolling: `per = "day"` means the last 24 hours.
//!
//! x402 payments are checked against a [`TokenBudget`] per asset, in that asset's base units
//! (`[wallets.NAME.x402.assets.budget]`), never against the sats budget.

use std::fmt;

use serde::{Deserialize, Serialize};
use turnpike_l402::{Msat, Sats};

/// A rolling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// The last 3,600 seconds.
    Hour,
    /// The last 86,400 seconds.
    Day,
    /// The last 7 days.
    Week,
    /// The last 30 days.
    Month,
}

impl Period {
    /// The window's length in seconds.
    pub fn seconds(self) -> u64 {
        match self {
            Period::Hour => 3_600,
            Period::Day => 86_400,
            Period::Week => 7 * 86_400,
            Period::Month => 30 * 86_400,
        }
    }

    /// The lowercase name (`hour`, `day`, `week`, `month`).
    pub fn name(self) -> &'static str {
        match self {
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }
}

/// At most `sats` within each rolling `per` window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// The cap, in sats.
    pub sats: u64,
    /// The window.
    pub per: Period,
}

/// A wallet's spending limits, all in sats; a missing limit does not apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Most one payment (invoice amount plus fee reserve) may cost.
    pub max_per_call: Option<u64>,
    /// Most spent on one origin (scheme, host, port) per window.
    pub per_host: Option<Window>,
    /// Most spent in all per window.
    pub per_period: Option<Window>,
    /// Most ever spent by this wallet.
    pub total: Option<u64>,
    /// Above this amount a payment needs a person's yes.
    pub approve_above: Option<u64>,
}

/// Which limit refused a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "limit", rename_all = "snake_case")]
pub enum Limit {
    /// `--max-sats` or `max_sats` of one call.
    CallCap,
    /// The budget's `max_per_call`.
    MaxPerCall,
    /// The budget's `per_host`.
    PerHost {
        /// Its window.
        per: Period,
    },
    /// The budget's `per_period`.
    PerPeriod {
        /// Its window.
        per: Period,
    },
    /// The budget's `total`.
    Total,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::CallCap => write!(f, "this call (--max-sats)"),
            Limit::MaxPerCall => write!(f, "the budget's max_per_call"),
            Limit::PerHost { per } => write!(f, "the budget's per_host limit (per {})", per.name()),
            Limit::PerPeriod { per } => {
                write!(f, "the budget's per_period limit (per {})", per.name())
            }
            Limit::Total => write!(f, "the budget's total"),
        }
    }
}

/// A payment the budget refuses: which limit, the amount asked and what is left under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, thiserror::Error)]
#[error(
    "refused: {asked} asked (invoice plus fee reserve) is above the limit of {limit}: the cap \
     is {cap}, {left} left; nothing was paid"
)]
pub struct Refusal {
    /// The limit that refused.
    pub limit: Limit,
    /// The amount asked (invoice amount plus fee reserve), rounded up to whole sats.
    pub asked: Sats,
    /// The limit's cap.
    pub cap: Sats,
    /// What is left under that limit, rounded down to whole sats.
    pub left: Sats,
}

/// What the ledger says was already charged (paid amounts and fees, and reservations still
/// open) in each scope the budget looks at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spent {
    /// On this payment's origin within the `per_host` window.
    pub host_window: Msat,
    /// Within the `per_period` window.
    pub period_window: Msat,
    /// Ever.
    pub total: Msat,
}

fn sats_msat(sats: u64) -> u128 {
    u128::from(sats) * 1000
}

fn to_sats_floor(msat: u128) -> Sats {
    Sats(u64::try_from(msat / 1000).unwrap_or(u64::MAX))
}

fn to_sats_ceil(msat: u128) -> Sats {
    Sats(u64::try_from(msat.div_ceil(1000)).unwrap_or(u64::MAX))
}

/// The first limit under which `used + asked` would pass its cap, with that cap and what was
/// used under it; amounts in one currency's smallest unit (msat, or a token's base units). The
/// one check behind both [`check`] (sats) and [`check_tokens`] (x402 assets).
fn first_exceeded(
    limits: &[(Limit, Option<u128>, u128)],
    asked: u128,
) -> Option<(Limit, u128, u128)> {
    limits.iter().find_map(|&(limit, cap, used)| {
        let cap = cap?;
        (used.saturating_add(asked) > cap).then_some((limit, cap, used))
    })
}

/// Checks one payment costing at most `asked` against `budget` and a per-call cap, given what
/// was already spent. The first limit that would be exceeded is named.
pub fn check(
    budget: &Budget,
    call_cap: Option<Sats>,
    asked: Msat,
    spent: &Spent,
) -> Result<(), Refusal> {
    let cap = |sats: Option<u64>| sats.map(sats_msat);
    let limits = [
        (Limit::CallCap, cap(call_cap.map(|c| c.0)), 0),
        (Limit::MaxPerCall, cap(budget.max_per_call), 0),
        (
            Limit::PerHost {
                per: budget.per_host.map_or(Period::Day, |w| w.per),
            },
            cap(budget.per_host.map(|w| w.sats)),
            u128::from(spent.host_window.0),
        ),
        (
            Limit::PerPeriod {
                per: budget.per_period.map_or(Period::Day, |w| w.per),
            },
            cap(budget.per_period.map(|w| w.sats)),
            u128::from(spent.period_window.0),
        ),
        (Limit::Total, cap(budget.total), u128::from(spent.total.0)),
    ];
    let asked_msat = u128::from(asked.0);
    match first_exceeded(&limits, asked_msat) {
        None => Ok(()),
        Some((limit, cap_msat, used)) => Err(Refusal {
            limit,
            asked: to_sats_ceil(asked_msat),
            cap: to_sats_floor(cap_msat),
            left: to_sats_floor(cap_msat.saturating_sub(used)),
        }),
    }
}

/// At most `units` base units of a token within each rolling `per` window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitsWindow {
    /// The cap, in the token's base units (USDC: millionths).
    pub units: u64,
    /// The window.
    pub per: Period,
}

/// A wallet's spending limits for one x402 asset, in its base units (USDC has 6 decimals:
/// `10000` is 0.01 USDC); a missing limit does not apply. Kept apart from the sats budget: a
/// payment in one currency never counts against the other's limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBudget {
    /// Most one payment may cost.
    pub max_per_call: Option<u64>,
    /// Most spent on one origin per window.
    pub per_host: Option<UnitsWindow>,
    /// Most spent in all per window.
    pub per_period: Option<UnitsWindow>,
    /// Most ever spent in this asset by this wallet.
    pub total: Option<u64>,
    /// Above this amount a payment needs a person's yes.
    pub approve_above: Option<u64>,
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

impl TokenBudget {
    /// The stricter of two budgets, limit by limit (a window keeps `self`'s period when both
    /// have one): what a connection that lowered `self` by `other` may spend.
    pub fn stricter(&self, other: &TokenBudget) -> TokenBudget {
        let window = |a: Option<UnitsWindow>, b: Option<UnitsWindow>| match (a, b) {
            (Some(x), Some(y)) => Some(UnitsWindow {
                units: x.units.min(y.units),
                per: x.per,
            }),
            (x, None) => x,
            (None, y) => y,
        };
        TokenBudget {
            max_per_call: min_opt(self.max_per_call, other.max_per_call),
            per_host: window(self.per_host, other.per_host),
            per_period: window(self.per_period, other.per_period),
            total: min_opt(self.total, other.total),
            approve_above: min_opt(self.approve_above, other.approve_above),
        }
    }

    /// Whether a payment of `amount` base units needs a person's approval.
    pub fn needs_approval(&self, amount: u128) -> bool {
        self.approve_above
            .is_some_and(|above| amount > u128::from(above))
    }
}

/// What the ledger says was already charged in one asset, in base units, per scope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenSpent {
    /// On this payment's origin within the `per_host` window.
    pub host_window: u128,
    /// Within the `per_period` window.
    pub period_window: u128,
    /// Ever.
    pub total: u128,
}

/// An x402 payment a token budget refuses: which limit, the amounts in base units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error(
    "refused: {asked} base units of {asset} asked is above the limit of the x402 budget's \
     {key}: the cap is {cap}, {left} left; nothing was paid",
    key = .limit.key()
)]
pub struct TokenRefusal {
    /// The asset, `network/address`.
    pub asset: String,
    /// The limit that refused.
    pub limit: Limit,
    /// The amount asked, base units.
    pub asked: u128,
    /// The limit's cap, base units.
    pub cap: u128,
    /// What is left under that limit, base units.
    pub left: u128,
}

impl Limit {
    /// The budget key of this limit (`max_per_call`, `per_host`, ...); `--max-sats` for the cap
    /// of one call.
    pub fn key(&self) -> &'static str {
        match self {
            Limit::CallCap => "--max-sats",
            Limit::MaxPerCall => "max_per_call",
            Limit::PerHost { .. } => "per_host",
            Limit::PerPeriod { .. } => "per_period",
            Limit::Total => "total",
        }
    }
}

/// Checks one x402 payment of `asked` base units of `asset` against its token budget, given
/// what was already spent in that asset.
pub fn check_tokens(
    budget: &TokenBudget,
    asset: &str,
    asked: u128,
    spent: &TokenSpent,
) -> Result<(), TokenRefusal> {
    let window = |w: Option<UnitsWindow>| w.map(|w| u128::from(w.units));
    let limits = [
        (Limit::MaxPerCall, budget.max_per_call.map(u128::from), 0),
        (
            Limit::PerHost {
                per: budget.per_host.map_or(Period::Day, |w| w.per),
            },
            window(budget.per_host),
            spent.host_window,
        ),
        (
            Limit::PerPeriod {
                per: budget.per_period.map_or(Period::Day, |w| w.per),
            },
            window(budget.per_period),
            spent.period_window,
        ),
        (Limit::Total, budget.total.map(u128::from), spent.total),
    ];
    match first_exceeded(&limits, asked) {
        None => Ok(()),
        Some((limit, cap, used)) => Err(TokenRefusal {
            asset: asset.to_owned(),
            limit,
            asked,
            cap,
            left: cap.saturating_sub(used),
        }),
    }
}

/// Whether a payment costing at most `asked` needs a person's approval.
pub fn needs_approval(budget: &Budget, asked: Msat) -> bool {
    budget
        .approve_above
        .is_some_and(|above| u128::from(asked.0) > sats_msat(above))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn budget() -> Budget {
        Budget {
            max_per_call: Some(100),
            per_host: Some(Window {
                sats: 500,
                per: Period::Day,
            }),
            per_period: Some(Window {
                sats: 2000,
                per: Period::Day,
            }),
            total: Some(10_000),
            approve_above: Some(200),
        }
    }

    #[test]
    fn parses_the_wallet_file_shape_and_refuses_unknown_keys() {
        let b: Budget = toml::from_str(
            "max_per_call = 100\nper_host = { sats = 500, per = \"day\" }\n\
             per_period = { sats = 2000, per = \"day\" }\ntotal = 10000\napprove_above = 200\n",
        )
        .unwrap();
        assert_eq!(b, budget());
        assert!(toml::from_str::<Budget>("max_per_cal = 1").is_err());
        assert!(toml::from_str::<Budget>("per_host = { sats = 1, per = \"year\" }").is_err());
    }

    #[test]
    fn refusals_name_the_limit_the_amount_and_what_is_left() {
        let spent = Spent {
            host_window: Msat(450_000),
            period_window: Msat(450_000),
            total: Msat(450_000),
        };
        let r = check(&budget(), None, Msat(60_000), &spent).unwrap_err();
        assert_eq!(
            r,
            Refusal {
                limit: Limit::PerHost { per: Period::Day },
                asked: Sats(60),
                cap: Sats(500),
                left: Sats(50),
            }
        );
        let text = r.to_string();
        assert!(
            text.contains("per_host") && text.contains("60 sat"),
            "{text}"
        );
        assert!(
            text.contains("50 sat") && text.contains("nothing was paid"),
            "{text}"
        );

        let r = check(&budget(), None, Msat(100_001), &Spent::default()).unwrap_err();
        assert_eq!((r.limit, r.asked), (Limit::MaxPerCall, Sats(101)));
        let r = check(&budget(), Some(Sats(10)), Msat(11_000), &Spent::default()).unwrap_err();
        assert_eq!(r.limit, Limit::CallCap);
        let spent = Spent {
            total: Msat(9_990_000),
            ..Spent::default()
        };
        let r = check(&budget(), None, Msat(20_000), &spent).unwrap_err();
        assert_eq!((r.limit, r.left), (Limit::Total, Sats(10)));
        // Exactly up to a limit is allowed.
        let spent = Spent {
            host_window: Msat(400_000),
            period_window: Msat(400_000),
            total: Msat(400_000),
        };
        assert_eq!(check(&budget(), None, Msat(100_000), &spent), Ok(()));
    }

    #[test]
    fn approval_is_needed_strictly_above_the_threshold() {
        assert!(!needs_approval(&budget(), Msat(200_000)));
        assert!(needs_approval(&budget(), Msat(200_001)));
        assert!(!needs_approval(&Budget::default(), Msat(u64::MAX)));
    }

    fn token_budget() -> TokenBudget {
        TokenBudget {
            max_per_call: Some(10_000),
            per_host: Some(UnitsWindow {
                units: 50_000,
                per: Period::Day,
            }),
            per_period: Some(UnitsWindow {
                units: 200_000,
                per: Period::Week,
            }),
            total: Some(1_000_000),
            approve_above: None,
        }
    }

    #[test]
    fn token_budgets_parse_and_refuse_naming_the_limit_in_base_units() {
        let b: TokenBudget = toml::from_str(
            "max_per_call = 10000\nper_host = { units = 50000, per = \"day\" }\n\
             per_period = { units = 200000, per = \"week\" }\ntotal = 1000000\n",
        )
        .unwrap();
        assert_eq!(b, token_budget());
        assert!(toml::from_str::<TokenBudget>("approve_sats = 1").is_err());
        let asks: TokenBudget = toml::from_str("approve_above = 5000").unwrap();
        assert!(!asks.needs_approval(5_000) && asks.needs_approval(5_001));
        assert!(!TokenBudget::default().needs_approval(u128::MAX));
        assert!(toml::from_str::<TokenBudget>("per_host = { sats = 1, per = \"day\" }").is_err());
        let r = check_tokens(&b, "eip155:8453/0xa", 10_001, &TokenSpent::default()).unwrap_err();
        assert_eq!(
            (r.limit, r.asked, r.cap, r.left),
            (Limit::MaxPerCall, 10_001, 10_000, 10_000)
        );
        let text = r.to_string();
        assert!(
            text.contains("max_per_call") && text.contains("10001 base units of eip155:8453/0xa"),
            "{text}"
        );
        assert!(text.contains("nothing was paid"), "{text}");
        let spent = TokenSpent {
            host_window: 45_000,
            period_window: 45_000,
            total: 45_000,
        };
        let r = check_tokens(&b, "a", 6_000, &spent).unwrap_err();
        assert_eq!(
            (r.limit, r.left),
            (Limit::PerHost { per: Period::Day }, 5_000)
        );
        assert_eq!(check_tokens(&b, "a", 5_000, &spent), Ok(()));
        assert_eq!(
            check_tokens(&TokenBudget::default(), "a", u128::MAX, &spent),
            Ok(())
        );
    }

    #[test]
    fn a_token_budget_is_only_ever_lowered() {
        let asked = TokenBudget {
            max_per_call: Some(50_000),
            per_host: Some(UnitsWindow {
                units: 1_000,
                per: Period::Hour,
            }),
            per_period: None,
            total: None,
            approve_above: Some(10),
        };
        let b = token_budget().stricter(&asked);
        assert_eq!(b.max_per_call, Some(10_000));
        assert_eq!(
            b.per_host,
            Some(UnitsWindow {
                units: 1_000,
                per: Period::Day
            })
        );
        assert_eq!(b.per_period, token_budget().per_period);
        assert_eq!((b.total, b.approve_above), (Some(1_000_000), Some(10)));
        assert_eq!(TokenBudget::default().stricter(&asked), asked);
    }

    proptest! {
        /// The token check keeps every scope within its cap, and a refusal's `left` is exact.
        #[test]
        fn accepted_token_payments_never_exceed_a_cap(
            host in 0u128..100_000, period in 0u128..400_000, total in 0u128..2_000_000,
            asked in 0u128..100_000,
        ) {
            let b = token_budget();
            let spent = TokenSpent { host_window: host, period_window: period, total };
            match check_tokens(&b, "a", asked, &spent) {
                Ok(()) => {
                    prop_assert!(asked <= 10_000);
                    prop_assert!(host + asked <= 50_000);
                    prop_assert!(period + asked <= 200_000);
                    prop_assert!(total + asked <= 1_000_000);
                }
                Err(r) => {
                    let used = match r.limit {
                        Limit::PerHost { .. } => host,
                        Limit::PerPeriod { .. } => period,
                        Limit::Total => total,
                        _ => 0,
                    };
                    prop_assert!(used + asked > r.cap);
                    prop_assert_eq!(r.left, r.cap.saturating_sub(used));
                }
            }
        }
    }

    proptest! {
        /// Whatever was spent and asked: an accepted payment keeps every scope within its cap,
        /// and a refusal's `left` is what the cap leaves.
        #[test]
        fn accepted_payments_never_exceed_a_cap(
            host in 0u64..3_000_000, period in 0u64..3_000_000, total in 0u64..20_000_000,
            asked in 0u64..3_000_000,
        ) {
            let b = budget();
            let spent = Spent { host_window: Msat(host), period_window: Msat(period), total: Msat(total) };
            match check(&b, None, Msat(asked), &spent) {
                Ok(()) => {
                    prop_assert!(asked <= 100_000);
                    prop_assert!(host + asked <= 500_000);
                    prop_assert!(period + asked <= 2_000_000);
                    prop_assert!(total + asked <= 10_000_000);
                }
                Err(r) => {
                    let used = match r.limit {
                        Limit::PerHost { .. } => host,
                        Limit::PerPeriod { .. } => period,
                        Limit::Total => total,
                        _ => 0,
                    };
                    prop_assert!(used + asked > r.cap.0 * 1000);
                    prop_assert_eq!(r.left.0, (r.cap.0 * 1000).saturating_sub(used) / 1000);
                }
            }
        }
    }
}
