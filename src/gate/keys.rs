use crate::domain::CouponId;

/// The Redis keys of one coupon. They share the hash tag `{c<id>}`, so every script touches a
/// single slot and the design runs unchanged on Redis Cluster.
#[derive(Debug, Clone)]
pub struct CouponKeys {
    /// hash: the definition (stock, name, created_at_us, opens_at_us, closes_at_us), the
    /// counters (applications: every application answered, added by each instance once a
    /// second; issued: acknowledged by the consumer, which is also the ISSUED statuses' count),
    /// the other per-status counts (`count:ADMITTED`, `count:PUBLISHED`, `count:FAILED`: kept
    /// by the scripts that change a status, see counts.lua, so a census is O(1)) and, while
    /// Redis' copy is being rebuilt, recovering (see ops::reconcile)
    pub meta: String,
    /// string: the last score handed out, in microseconds
    pub seq: String,
    /// sorted set: admitted user -> score; rank + 1 is the position
    pub queue: String,
    /// list: admitted users not yet published to Kafka
    pub pending: String,
    /// sorted set: users claimed by an issuer -> lease deadline
    pub inflight: String,
    /// hash: user -> ADMITTED | PUBLISHED | ISSUED | FAILED
    pub status: String,
    /// hash: user -> "position:score", tickets instances told and remember, written back while
    /// the coupon is held so the restore can put those winners back (see gate::told)
    pub told: String,
    /// hash: user -> "position:score", winners told a place that a restore could not give
    /// them (`APP_REDIS__ACK_REPLICAS=0`, an earlier arrival holds it and the stock is gone):
    /// their position answer is LOST, at the place they were told. Kept across restores.
    pub lost: String,
    /// `{prefix}:{c<id>}`: every key above starts with it
    base: String,
    /// string: what the replica confirmer writes in this coupon's slot on a cluster, so its
    /// `WAIT` reaches the coupon's master (see gate::confirm); it expires by itself
    pub acks: String,
}

impl CouponKeys {
    /// Every key, in the order the scripts that rebuild or retire a coupon take them
    /// (restore.lua, expire.lua): meta, seq, queue, pending, inflight, status, told, lost.
    pub fn all(&self) -> [&String; 8] {
        [
            &self.meta,
            &self.seq,
            &self.queue,
            &self.pending,
            &self.inflight,
            &self.status,
            &self.told,
            &self.lost,
        ]
    }

    /// string: marks one addition to `applications` as made (see gate::counting); expires
    pub fn counted(&self, addition: &str) -> String {
        format!("{}:counted:{addition}", self.base)
    }

    pub fn new(prefix: &str, coupon: CouponId) -> Self {
        let base = format!("{prefix}:{{c{coupon}}}");
        Self {
            meta: format!("{base}:meta"),
            seq: format!("{base}:seq"),
            queue: format!("{base}:queue"),
            pending: format!("{base}:pending"),
            inflight: format!("{base}:inflight"),
            status: format!("{base}:status"),
            acks: format!("{base}:acks"),
            told: format!("{base}:told"),
            lost: format!("{base}:lost"),
            base,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag_under_the_prefix() {
        let keys = CouponKeys::new("fcfs", CouponId::new(42).unwrap());
        assert_eq!(keys.meta, "fcfs:{c42}:meta");
        assert_eq!(keys.queue, "fcfs:{c42}:queue");
        assert_eq!(keys.pending, "fcfs:{c42}:pending");
    }
}
