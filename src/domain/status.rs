use std::fmt;
use std::str::FromStr;

use super::InvalidValue;

/// Where an admitted winner stands. Moves only forward: ADMITTED → PUBLISHED → ISSUED, or
/// FAILED when its message can never be persisted. `rank` orders them; ISSUED and FAILED are
/// both final and never replace each other. LOST is final too, and never in the pipeline: a
/// winner told a place that a restore could not give back (see restore.lua).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Admitted,
    Published,
    Issued,
    Failed,
    Lost,
}

impl Status {
    /// How the gate stores it in the per-coupon status hash (and the scripts compare it).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admitted => "ADMITTED",
            Self::Published => "PUBLISHED",
            Self::Issued => "ISSUED",
            Self::Failed => "FAILED",
            Self::Lost => "LOST",
        }
    }

    /// True when polling again cannot change it.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Issued | Self::Failed | Self::Lost)
    }
}

impl FromStr for Status {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ADMITTED" => Ok(Self::Admitted),
            "PUBLISHED" => Ok(Self::Published),
            "ISSUED" => Ok(Self::Issued),
            "FAILED" => Ok(Self::Failed),
            "LOST" => Ok(Self::Lost),
            other => Err(InvalidValue(format!("unknown status {other:?}"))),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_its_stored_form() {
        for s in [
            Status::Admitted,
            Status::Published,
            Status::Issued,
            Status::Failed,
            Status::Lost,
        ] {
            assert_eq!(s.as_str().parse::<Status>().unwrap(), s);
        }
        assert!("issued".parse::<Status>().is_err());
    }
}
