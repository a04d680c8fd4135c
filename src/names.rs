//! Enums with stable lower-case names, as written on the command line and in files.

use crate::error::Error;

/// An enum whose values have stable names; `FromStr` is implemented through it.
pub trait Named: Sized + Copy + 'static {
    /// Every value, in the order they are listed.
    const ALL: &'static [Self];
    /// What the values are, for error messages (e.g. "model").
    const WHAT: &'static str;
    /// The value's name.
    fn name(&self) -> &'static str;

    /// The value named `s`, or an error that lists the names.
    fn from_name(s: &str) -> Result<Self, Error> {
        Self::ALL
            .iter()
            .copied()
            .find(|v| v.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|v| v.name()).collect();
                Error::InvalidConfig(format!(
                    "{} `{s}`: expected one of {}",
                    Self::WHAT,
                    names.join(", ")
                ))
            })
    }
}

/// Implements [`std::str::FromStr`] through [`Named`].
#[macro_export]
macro_rules! from_str_by_name {
    ($t:ty) => {
        impl std::str::FromStr for $t {
            type Err = $crate::error::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$t as $crate::names::Named>::from_name(s)
            }
        }
    };
}
