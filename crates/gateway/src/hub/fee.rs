//! The platform fee: a rate in parts per million, parsed from a decimal string (never a float),
//! and the invoice amount it gives, in exact integer arithmetic.
//!
//! **Rounding.** The client pays `ceil(price_msat × (1 + rate))`: the fee is
//! `ceil(price_msat × ppm / 1 000 000)` millisatoshis, so it is never under-charged and never
//! more than one millisatoshi above the exact product. A payee whose wallet takes whole
//! satoshis only (LNbits) gets the invoice rounded up to the next whole satoshi
//! ([`invoice_amount`] with `whole_sats`); the extra millisatoshis count as fee.

use std::fmt;

use turnpike_l402::Msat;

/// Parts per million in one.
const MILLION: u64 = 1_000_000;

/// A fee rate, from 0 to 100 %, in parts per million.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct FeeRate(u32);

impl FeeRate {
    /// No fee.
    pub const ZERO: FeeRate = FeeRate(0);

    /// A rate of `ppm` parts per million, at most 1 000 000 (100 %).
    pub fn from_ppm(ppm: u32) -> Option<FeeRate> {
        (u64::from(ppm) <= MILLION).then_some(FeeRate(ppm))
    }

    /// The rate in parts per million.
    pub fn ppm(self) -> u32 {
        self.0
    }

    /// Parses `"2%"`, `"2.5%"` (at most 4 decimals) or a fraction `"0.02"` (at most 6
    /// decimals), from 0 to 100 %. No signs, exponents, spaces or other characters.
    pub fn parse(text: &str) -> Result<FeeRate, String> {
        let bad = || {
            format!(
                "{text:?} is not a fee: write a percentage (\"2%\", \"2.5%\") or a fraction \
                 (\"0.02\") between 0 and 100 %"
            )
        };
        let (number, scale) = match text.strip_suffix('%') {
            Some(n) => (n, 4),
            None => (text, 6),
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(frac) || whole.len() > 3 {
            return Err(bad());
        }
        if number.contains('.') && frac.is_empty() {
            return Err(bad());
        }
        if frac.len() > scale {
            return Err(format!(
                "{text:?} has more decimals than a part per million can hold"
            ));
        }
        let whole: u64 = whole.parse().map_err(|_| bad())?;
        let frac_value: u64 = match frac {
            "" => 0,
            f => f.parse().map_err(|_| bad())?,
        };
        let frac_ppm = frac_value * 10u64.pow((scale - frac.len()) as u32);
        let ppm = whole * 10u64.pow(scale as u32) + frac_ppm;
        u32::try_from(ppm)
            .ok()
            .and_then(FeeRate::from_ppm)
            .ok_or_else(|| format!("{text:?} is above 100 %"))
    }

    /// The fee on `price`: `ceil(price × ppm / 1 000 000)` millisatoshis.
    pub fn fee_of(self, price: Msat) -> Msat {
        let product = u128::from(price.0) * u128::from(self.0);
        let fee = product.div_ceil(u128::from(MILLION));
        // At most `price` (the rate is at most 100 %), so it fits.
        Msat(u64::try_from(fee).unwrap_or(u64::MAX))
    }
}

impl fmt::Display for FeeRate {
    /// As a percentage, without trailing zeros: `2%`, `2.5%`, `0.0001%`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / 10_000, self.0 % 10_000);
        if frac == 0 {
            return write!(f, "{whole}%");
        }
        let frac = format!("{frac:04}");
        write!(f, "{whole}.{}%", frac.trim_end_matches('0'))
    }
}

/// What the client pays for `price` under `rate`: `price + fee`, rounded up to a whole
/// satoshi when `whole_sats`; `None` when it would overflow.
pub fn invoice_amount(price: Msat, rate: FeeRate, whole_sats: bool) -> Option<Msat> {
    let amount = price.checked_add(rate.fee_of(price))?;
    if !whole_sats {
        return Some(amount);
    }
    amount.0.div_ceil(1000).checked_mul(1000).map(Msat)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn rates_parse_from_percentages_and_fractions() {
        let ppm = |s: &str| FeeRate::parse(s).map(FeeRate::ppm);
        assert_eq!(ppm("2%"), Ok(20_000));
        assert_eq!(ppm("2.5%"), Ok(25_000));
        assert_eq!(ppm("0.02"), Ok(20_000));
        assert_eq!(ppm("0.000001"), Ok(1));
        assert_eq!(ppm("0.0001%"), Ok(1));
        assert_eq!(ppm("0"), Ok(0));
        assert_eq!(ppm("100%"), Ok(1_000_000));
        assert_eq!(ppm("1"), Ok(1_000_000));
        for bad in [
            "",
            "%",
            "-1%",
            "+2%",
            "2 %",
            " 2%",
            "2.%",
            ".5%",
            "1e-2",
            "0.0000001",
            "0.00001%",
            "100.01%",
            "1.1",
            "2%%",
            "NaN",
            "0x10",
            "1000%",
            "２%",
        ] {
            assert!(FeeRate::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_fee_rounds_up_to_the_millisatoshi() {
        let two = FeeRate::parse("2%").unwrap();
        assert_eq!(two.fee_of(Msat(21_000)), Msat(420));
        assert_eq!(two.fee_of(Msat(1)), Msat(1));
        assert_eq!(two.fee_of(Msat(0)), Msat(0));
        assert_eq!(invoice_amount(Msat(21_000), two, false), Some(Msat(21_420)));
        assert_eq!(invoice_amount(Msat(21_000), two, true), Some(Msat(22_000)));
        assert_eq!(invoice_amount(Msat(50_000), two, true), Some(Msat(51_000)));
        assert_eq!(invoice_amount(Msat(u64::MAX), two, false), None);
        assert_eq!(FeeRate::ZERO.fee_of(Msat(u64::MAX)), Msat(0));
        let all = FeeRate::from_ppm(1_000_000).unwrap();
        assert_eq!(all.fee_of(Msat(u64::MAX)), Msat(u64::MAX));
        assert_eq!(FeeRate::from_ppm(1_000_001), None);
    }

    proptest! {
        /// The amount is the smallest whole millisatoshi at or above `price × (1 + rate)`.
        #[test]
        fn never_under_charges_and_rounds_up_by_less_than_one(
            price in 0u64..=2_100_000_000_000_000_000,
            ppm in 0u32..=1_000_000,
        ) {
            let rate = FeeRate::from_ppm(ppm).unwrap();
            let amount = invoice_amount(Msat(price), rate, false).unwrap();
            let exact = u128::from(price) * u128::from(MILLION + u64::from(ppm));
            let paid = u128::from(amount.0) * u128::from(MILLION);
            prop_assert!(paid >= exact);
            prop_assert!(paid < exact + u128::from(MILLION));
        }

        /// Rounded to whole satoshis: a multiple of 1000, at or above the exact amount, less
        /// than one satoshi above it.
        #[test]
        fn whole_sats_round_up_to_the_satoshi(price in 0u64..=1_000_000_000_000, ppm in 0u32..=1_000_000) {
            let rate = FeeRate::from_ppm(ppm).unwrap();
            let exact = invoice_amount(Msat(price), rate, false).unwrap();
            let sats = invoice_amount(Msat(price), rate, true).unwrap();
            prop_assert_eq!(sats.0 % 1000, 0);
            prop_assert!(sats >= exact && sats.0 < exact.0 + 1000);
        }

        /// Every rate prints as a percentage that parses back to it.
        #[test]
        fn display_parses_back(ppm in 0u32..=1_000_000) {
            let rate = FeeRate::from_ppm(ppm).unwrap();
            prop_assert_eq!(FeeRate::parse(&rate.to_string()), Ok(rate));
        }

        /// Any text is a rate of at most 100 % or an error; never a panic.
        #[test]
        fn any_text_parses_or_fails(text in "\\PC{0,12}") {
            if let Ok(rate) = FeeRate::parse(&text) {
                prop_assert!(rate.ppm() <= 1_000_000);
            }
        }

        /// Fractions and percentages with the same digits agree (`0.0abc` = `a.bc%`).
        #[test]
        fn fraction_and_percentage_agree(ppm in 0u32..=1_000_000) {
            let fraction = format!("{}.{:06}", ppm / 1_000_000, ppm % 1_000_000);
            prop_assert_eq!(FeeRate::parse(&fraction).map(FeeRate::ppm), Ok(ppm));
        }
    }
}
