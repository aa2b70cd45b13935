use std::str::FromStr;

/// Where one user stands for one coupon. Moves only forward:
/// ADMITTED → PUBLISHED → ISSUED (or FAILED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ApplicationStatus {
    NotApplied,
    Admitted,
    Published,
    Issued,
    Failed,
    /// Did not get in and the stock is gone.
    SoldOut,
}

impl ApplicationStatus {
    /// True when polling again cannot change the answer.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Issued | Self::Failed | Self::SoldOut)
    }
}

impl FromStr for ApplicationStatus {
    type Err = String;

    /// Parses the values the gate stores in the per-coupon status hash.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ADMITTED" => Ok(Self::Admitted),
            "PUBLISHED" => Ok(Self::Published),
            "ISSUED" => Ok(Self::Issued),
            "FAILED" => Ok(Self::Failed),
            other => Err(format!("unknown status {other:?} in Redis")),
        }
    }
}
