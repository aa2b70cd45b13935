//! Token buckets kept in Redis (`APP_RATE_LIMIT__SCOPE=shared`), so every instance draws on
//! the same bucket: three instances enforce the configured rate, not three times it.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::{Gate, GateError};

static LIMIT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("limit.lua")));

/// One bucket: whose it is and its quota.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Under the prefix, e.g. `limit:user:42`.
    pub name: String,
    pub per_sec: u32,
    pub burst: u32,
}

impl Bucket {
    fn interval_us(&self) -> u64 {
        1_000_000 / u64::from(self.per_sec.max(1))
    }
}

impl Gate {
    /// Takes a token from every bucket, in order; `Some((i, wait))` when bucket `i` had none
    /// (a limited request takes nothing from the buckets before it on one server; on a
    /// cluster, whose buckets live on different shards, it takes from those before it).
    pub async fn take_tokens(
        &self,
        buckets: &[Bucket],
    ) -> Result<Option<(usize, Duration)>, GateError> {
        if !self.cluster {
            return self.take(buckets).await;
        }
        for (i, bucket) in buckets.iter().enumerate() {
            if let Some((_, wait)) = self.take(std::slice::from_ref(bucket)).await? {
                return Ok(Some((i, wait)));
            }
        }
        Ok(None)
    }

    async fn take(&self, buckets: &[Bucket]) -> Result<Option<(usize, Duration)>, GateError> {
        if buckets.is_empty() {
            return Ok(None);
        }
        let prefix = &self.prefix;
        let reply: Vec<i64> = self
            .run(|mut conn| async move {
                let mut invocation = LIMIT.prepare_invoke();
                for bucket in buckets {
                    let interval = bucket.interval_us();
                    invocation
                        .key(format!("{prefix}:{}", bucket.name))
                        .arg(interval)
                        .arg(interval * u64::from(bucket.burst.max(1)));
                }
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        Ok(match reply[..] {
            [index, wait] => Some((
                usize::try_from(index - 1).unwrap_or_default(),
                Duration::from_micros(u64::try_from(wait).unwrap_or_default()),
            )),
            _ => None,
        })
    }
}
