use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::{Add, AddAssign};

/// An amount of money in integer micro-USD (1 USD = 1_000_000), so sums never drift.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Money(pub i64);

impl Money {
    pub const ZERO: Money = Money(0);

    pub fn micro_usd(self) -> i64 {
        self.0
    }

    /// Adds without wrapping: a ledger that overflows must not turn into a credit.
    pub fn saturating_add(self, other: Money) -> Money {
        Money(self.0.saturating_add(other.0))
    }
}

impl Add for Money {
    type Output = Money;
    fn add(self, rhs: Money) -> Money {
        self.saturating_add(rhs)
    }
}

impl AddAssign for Money {
    fn add_assign(&mut self, rhs: Money) {
        *self = self.saturating_add(rhs);
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}${}.{:06}", abs / 1_000_000, abs % 1_000_000)
    }
}

/// Token usage and cost of one provider call, as the provider reported it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost: Money,
    pub provider: String,
    pub model: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_micro_usd_as_dollars() {
        assert_eq!(Money(1_234_567).to_string(), "$1.234567");
        assert_eq!(Money(-5).to_string(), "-$0.000005");
        assert_eq!(Money::ZERO.to_string(), "$0.000000");
    }

    #[test]
    fn addition_saturates_instead_of_wrapping() {
        assert_eq!(Money(i64::MAX) + Money(1), Money(i64::MAX));
    }
}
