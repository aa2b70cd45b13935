use std::fmt;
use std::str::FromStr;

use super::InvalidValue;

macro_rules! positive_id {
    ($name:ident, $what:literal) => {
        #[doc = concat!("A ", $what, " id: a positive 64-bit integer.")]
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            Hash,
            PartialOrd,
            Ord,
            serde::Serialize,
            serde::Deserialize,
        )]
        #[serde(try_from = "i64", into = "i64")]
        pub struct $name(i64);

        impl TryFrom<i64> for $name {
            type Error = InvalidValue;

            fn try_from(value: i64) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl From<$name> for i64 {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl $name {
            pub fn new(value: i64) -> Result<Self, InvalidValue> {
                if value > 0 {
                    Ok(Self(value))
                } else {
                    Err(InvalidValue(format!(
                        concat!($what, " id must be a positive integer, got {}"),
                        value
                    )))
                }
            }

            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let value = s.parse::<i64>().map_err(|_| {
                    InvalidValue(format!(
                        concat!($what, " id must be a positive integer, got {:?}"),
                        s
                    ))
                })?;
                Self::new(value)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

positive_id!(UserId, "user");
positive_id!(CouponId, "coupon");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_positive_integers_up_to_i64_max() {
        assert_eq!("1".parse::<UserId>().unwrap().get(), 1);
        assert_eq!(
            i64::MAX.to_string().parse::<UserId>().unwrap().get(),
            i64::MAX
        );
    }

    #[test]
    fn rejects_zero_negative_overflow_and_text() {
        for bad in ["0", "-1", "9223372036854775808", "abc", "", " 1", "1.0"] {
            assert!(bad.parse::<UserId>().is_err(), "{bad:?} was accepted");
        }
        assert!(CouponId::new(0).is_err());
    }
}
