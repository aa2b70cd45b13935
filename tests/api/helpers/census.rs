//! The per-status counts the scripts keep (src/gate/counts.lua) against a full scan of the
//! statuses: what the fault tests that move statuses end with, so a count that drifts under a
//! fault (a lost key, a restore, a redrive, a redelivery) turns them red. Independent of the
//! audit's own comparison (ops::audit), which is the system judging itself.

use fcfs_coupon::gate::CouponKeys;
use redis::aio::ConnectionLike;
use redis::Script;

/// Read and counted in one script, so the counts and the statuses are of the same instant and
/// only the tally crosses the network; a script, not a MULTI, so it runs on a cluster too (the
/// keys share a slot).
const READ: &str = "local tally = {} \
    for _, s in ipairs(redis.call('HVALS', KEYS[2])) do tally[s] = (tally[s] or 0) + 1 end \
    local out = {} for s, n in pairs(tally) do out[#out + 1] = s; out[#out + 1] = n end \
    return {redis.call('HMGET', KEYS[1], 'stock', 'issued', 'count:ADMITTED', \
    'count:PUBLISHED', 'count:FAILED'), out}";

/// How the counts differ from the statuses; empty when they agree, or when Redis holds no
/// definition of the coupon (lost, or never there: the restore rebuilds the counts).
pub async fn counts_unlike_statuses<C: ConnectionLike + Clone>(
    redis: &C,
    keys: &CouponKeys,
) -> Vec<String> {
    let (meta, tally): (Vec<Option<i64>>, Vec<(String, i64)>) = Script::new(READ)
        .key(&keys.meta)
        .key(&keys.status)
        .invoke_async(&mut redis.clone())
        .await
        .expect("the counts and the statuses read");
    if meta[0].is_none() {
        return Vec::new();
    }
    let mut differences = Vec::new();
    if meta[2].is_none() {
        differences.push("no per-status counts in the meta hash".to_owned());
    }
    let counted = ["ISSUED", "ADMITTED", "PUBLISHED", "FAILED"];
    let scanned = |status: &str| {
        (tally.iter())
            .find(|(s, _)| s == status)
            .map_or(0, |(_, n)| *n)
    };
    for (status, kept) in counted.iter().zip(&meta[1..]) {
        let (kept, seen) = (kept.unwrap_or(0), scanned(status));
        if kept != seen {
            differences.push(format!("{status}: counted {kept}, scanned {seen}"));
        }
    }
    let other: i64 = (tally.iter())
        .filter(|(s, _)| !counted.contains(&s.as_str()))
        .map(|(_, n)| n)
        .sum();
    if other > 0 {
        differences.push(format!("{other} statuses none of the four"));
    }
    differences
}
