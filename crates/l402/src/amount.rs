//! Exact money types. Amounts are integers: millisatoshis ([`Msat`]) and satoshis ([`Sats`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// An amount in millisatoshis (1 sat = 1000 msat).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Msat(pub u64);

/// An amount in whole satoshis.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Sats(pub u64);

impl Sats {
    /// Zero satoshis.
    pub const ZERO: Sats = Sats(0);

    /// This amount in millisatoshis, or `None` on overflow.
    pub fn to_msat(self) -> Option<Msat> {
        self.0.checked_mul(1000).map(Msat)
    }

    /// Checked addition.
    pub fn checked_add(self, other: Sats) -> Option<Sats> {
        self.0.checked_add(other.0).map(Sats)
    }
}

impl Msat {
    /// Zero millisatoshis.
    pub const ZERO: Msat = Msat(0);

    /// Whole satoshis, only if this amount has no sub-satoshi part.
    pub fn to_sats_exact(self) -> Option<Sats> {
        self.0.is_multiple_of(1000).then_some(Sats(self.0 / 1000))
    }

    /// Whole satoshis, the sub-satoshi part dropped: what a node that counts in satoshis reports
    /// for this amount.
    pub fn to_sats_floor(self) -> Sats {
        Sats(self.0 / 1000)
    }

    /// Satoshis rounded up: what a payer must be ready to spend for this amount.
    pub fn to_sats_ceil(self) -> Sats {
        Sats(self.0.div_ceil(1000))
    }

    /// Checked addition.
    pub fn checked_add(self, other: Msat) -> Option<Msat> {
        self.0.checked_add(other.0).map(Msat)
    }
}

impl fmt::Display for Sats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} sat", self.0)
    }
}

impl fmt::Display for Msat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} msat", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_are_exact() {
        assert_eq!(Sats(21).to_msat(), Some(Msat(21_000)));
        assert_eq!(Sats(u64::MAX).to_msat(), None);
        assert_eq!(Msat(21_000).to_sats_exact(), Some(Sats(21)));
        assert_eq!(Msat(21_001).to_sats_exact(), None);
        assert_eq!(Msat(21_001).to_sats_ceil(), Sats(22));
        assert_eq!(Msat(0).to_sats_ceil(), Sats(0));
        assert_eq!(Msat(21_999).to_sats_floor(), Sats(21));
        assert_eq!(Msat(21_000).to_sats_floor(), Sats(21));
        assert_eq!(Msat(999).to_sats_floor(), Sats(0));
        assert_eq!(Msat(u64::MAX).to_sats_floor(), Sats(u64::MAX / 1000));
    }
}
