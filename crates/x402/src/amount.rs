//! Exact token amounts. x402 prices are integers in the asset's base units (USDC has 6
//! decimals, so `"10000"` is 0.01 USDC); there are no floats anywhere.

use std::fmt;
use std::str::FromStr;

use alloy_primitives::U256;

/// The most decimals an asset may declare here: 10^38 still fits in a `u128`.
pub const MAX_DECIMALS: u8 = 38;

/// An amount of a token in its base units (for USDC: millionths of a dollar).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TokenAmount(u128);

/// Why a text is not a token amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// The text is empty.
    #[error("amount is empty")]
    Empty,
    /// A character other than an ASCII digit (or the one `.` of a decimal amount).
    #[error("amount has an invalid character {found:?} at byte {position}")]
    InvalidCharacter {
        /// The character found.
        found: char,
        /// Its byte offset.
        position: usize,
    },
    /// `"01"` or `"00.5"`: a leading zero, which canonical amounts never have.
    #[error("amount has a leading zero")]
    LeadingZero,
    /// `"1."` or `".5"`: a decimal point needs digits on both sides.
    #[error("amount has a decimal point without digits on both sides")]
    BareDecimalPoint,
    /// More fractional digits than the asset has decimals.
    #[error("amount has {found} decimal places but the asset has only {decimals}")]
    TooManyDecimals {
        /// Fractional digits given.
        found: usize,
        /// The asset's decimals.
        decimals: u8,
    },
    /// More decimals than [`MAX_DECIMALS`].
    #[error("an asset with {0} decimals is not supported (at most {MAX_DECIMALS})")]
    UnsupportedDecimals(u8),
    /// Larger than the type holds.
    #[error("amount is too large")]
    Overflow,
}

/// Checks `s` is a canonical unsigned decimal integer: digits only, no sign, no leading zero.
fn check_digits(s: &str, offset: usize) -> Result<(), AmountError> {
    if s.is_empty() {
        return Err(AmountError::Empty);
    }
    if let Some((i, c)) = s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        return Err(AmountError::InvalidCharacter {
            found: c,
            position: offset + i,
        });
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(AmountError::LeadingZero);
    }
    Ok(())
}

/// Parses a canonical decimal `uint256` (as x402 writes `value`, `validAfter`, ...).
pub fn parse_u256(s: &str) -> Result<U256, AmountError> {
    check_digits(s, 0)?;
    U256::from_str_radix(s, 10).map_err(|_| AmountError::Overflow)
}

impl TokenAmount {
    /// Zero.
    pub const ZERO: TokenAmount = TokenAmount(0);

    /// An amount of `units` base units.
    pub const fn from_base_units(units: u128) -> TokenAmount {
        TokenAmount(units)
    }

    /// The amount in base units.
    pub const fn base_units(self) -> u128 {
        self.0
    }

    /// The amount as the `uint256` an EIP-3009 authorisation signs.
    pub fn to_u256(self) -> U256 {
        U256::from(self.0)
    }

    /// Parses base units written as x402 does: a canonical decimal integer (`"10000"`).
    pub fn parse_base_units(s: &str) -> Result<TokenAmount, AmountError> {
        check_digits(s, 0)?;
        s.parse::<u128>()
            .map(TokenAmount)
            .map_err(|_| AmountError::Overflow)
    }

    /// Parses a human amount of an asset with `decimals` decimals, exactly: `"0.01"` with 6
    /// decimals is 10000 base units. Refuses more fractional digits than the asset has (even
    /// zeros), signs, exponents, whitespace and leading zeros.
    pub fn parse_decimal(s: &str, decimals: u8) -> Result<TokenAmount, AmountError> {
        if decimals > MAX_DECIMALS {
            return Err(AmountError::UnsupportedDecimals(decimals));
        }
        let (whole, frac) = match s.split_once('.') {
            Some((w, f)) => {
                if w.is_empty() || f.is_empty() {
                    return Err(AmountError::BareDecimalPoint);
                }
                (w, f)
            }
            None => (s, ""),
        };
        check_digits(whole, 0)?;
        if let Some((i, c)) = frac.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
            return Err(AmountError::InvalidCharacter {
                found: c,
                position: whole.len() + 1 + i,
            });
        }
        if frac.len() > usize::from(decimals) {
            return Err(AmountError::TooManyDecimals {
                found: frac.len(),
                decimals,
            });
        }
        let scale = 10u128.pow(u32::from(decimals));
        let whole: u128 = whole.parse().map_err(|_| AmountError::Overflow)?;
        let frac_units: u128 = if frac.is_empty() {
            0
        } else {
            let digits: u128 = frac.parse().map_err(|_| AmountError::Overflow)?;
            // frac.len() <= decimals <= 38, so this power fits.
            digits * 10u128.pow(u32::from(decimals) - frac.len() as u32)
        };
        whole
            .checked_mul(scale)
            .and_then(|w| w.checked_add(frac_units))
            .map(TokenAmount)
            .ok_or(AmountError::Overflow)
    }

    /// The amount for humans, with `decimals` decimals and no trailing zeros: 10000 base units
    /// of a 6-decimal asset is `"0.01"`. `decimals` above [`MAX_DECIMALS`] are clamped.
    pub fn to_decimal_string(self, decimals: u8) -> String {
        let decimals = decimals.min(MAX_DECIMALS);
        let scale = 10u128.pow(u32::from(decimals));
        let (whole, frac) = (self.0 / scale, self.0 % scale);
        if frac == 0 {
            return whole.to_string();
        }
        let frac = format!("{frac:0width$}", width = usize::from(decimals));
        format!("{whole}.{}", frac.trim_end_matches('0'))
    }

    /// Checked addition.
    pub fn checked_add(self, other: TokenAmount) -> Option<TokenAmount> {
        self.0.checked_add(other.0).map(TokenAmount)
    }

    /// Checked subtraction.
    pub fn checked_sub(self, other: TokenAmount) -> Option<TokenAmount> {
        self.0.checked_sub(other.0).map(TokenAmount)
    }
}

impl FromStr for TokenAmount {
    type Err = AmountError;
    /// Base units, as on the wire; see [`TokenAmount::parse_base_units`].
    fn from_str(s: &str) -> Result<Self, AmountError> {
        TokenAmount::parse_base_units(s)
    }
}

/// Base units, as on the wire (`"10000"`).
impl fmt::Display for TokenAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_amounts_are_exact() {
        let usdc = |s| TokenAmount::parse_decimal(s, 6);
        assert_eq!(usdc("0.01"), Ok(TokenAmount(10_000)));
        assert_eq!(usdc("1"), Ok(TokenAmount(1_000_000)));
        assert_eq!(usdc("12.345678"), Ok(TokenAmount(12_345_678)));
        assert_eq!(usdc("0"), Ok(TokenAmount(0)));
        assert_eq!(usdc("0.000001"), Ok(TokenAmount(1)));
        assert_eq!(
            usdc("0.0000001"),
            Err(AmountError::TooManyDecimals {
                found: 7,
                decimals: 6
            })
        );
        assert_eq!(
            usdc("0.0100000"),
            Err(AmountError::TooManyDecimals {
                found: 7,
                decimals: 6
            })
        );
        assert_eq!(usdc(".5"), Err(AmountError::BareDecimalPoint));
        assert_eq!(usdc("1."), Err(AmountError::BareDecimalPoint));
        assert_eq!(usdc("01"), Err(AmountError::LeadingZero));
        assert_eq!(usdc(""), Err(AmountError::Empty));
        assert!(matches!(
            usdc("-1"),
            Err(AmountError::InvalidCharacter { found: '-', .. })
        ));
        assert!(matches!(
            usdc("1e-2"),
            Err(AmountError::InvalidCharacter { found: 'e', .. })
        ));
        assert!(matches!(
            usdc("0.0 1"),
            Err(AmountError::InvalidCharacter {
                found: ' ',
                position: 3
            })
        ));
        assert_eq!(
            TokenAmount::parse_decimal("1", 39),
            Err(AmountError::UnsupportedDecimals(39))
        );
        assert_eq!(
            TokenAmount::parse_decimal("340282366920938463463374607431768211456", 0),
            Err(AmountError::Overflow)
        );
        assert_eq!(
            TokenAmount::parse_decimal("4", 38),
            Err(AmountError::Overflow)
        );
    }

    #[test]
    fn decimal_display() {
        assert_eq!(TokenAmount(10_000).to_decimal_string(6), "0.01");
        assert_eq!(TokenAmount(1_000_000).to_decimal_string(6), "1");
        assert_eq!(TokenAmount(1_230_001).to_decimal_string(6), "1.230001");
        assert_eq!(TokenAmount(7).to_decimal_string(0), "7");
    }

    #[test]
    fn base_units_are_canonical() {
        assert_eq!("10000".parse(), Ok(TokenAmount(10_000)));
        assert_eq!("010".parse::<TokenAmount>(), Err(AmountError::LeadingZero));
        assert!("+1".parse::<TokenAmount>().is_err());
        assert!("1.0".parse::<TokenAmount>().is_err());
        assert_eq!(parse_u256("0"), Ok(U256::ZERO));
        assert_eq!(
            parse_u256(&U256::MAX.to_string()),
            Ok(U256::MAX),
            "the largest uint256 parses"
        );
        assert_eq!(
            parse_u256(&format!("{}0", U256::MAX)),
            Err(AmountError::Overflow)
        );
    }
}
