//! The audit: compares what Redis says about a coupon's winners with what PostgreSQL
//! persisted. Work still moving through the pipeline (pending, in flight, on Kafka) is counted,
//! not reported; a discrepancy is a state the pipeline cannot reach on its own.

use std::collections::{HashMap, HashSet};

use sqlx::PgPool;

use crate::domain::{CouponId, Status};
use crate::fairness;
use crate::gate::{Gate, GateError, GateState, LOST_PREFIX};
use crate::store::{self, StoreError};

/// At most this many discrepancies are listed; `discrepancy_count` has them all.
const LISTED: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Gate(#[from] GateError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone)]
pub struct AuditReport {
    pub coupon_id: CouponId,
    pub stock: u32,
    /// True when there is no discrepancy.
    pub consistent: bool,
    pub redis: RedisCounts,
    pub database: DatabaseCounts,
    pub discrepancy_count: u64,
    /// The first [`LISTED`] discrepancies.
    pub discrepancies: Vec<Discrepancy>,
}

#[derive(Debug, Clone, Default)]
pub struct RedisCounts {
    /// False when Redis holds no state for the coupon (run `fcfs-coupon reconcile`).
    pub present: bool,
    /// Held while being restored from PostgreSQL.
    pub recovering: bool,
    pub admitted: u64,
    pub pending: u64,
    pub inflight: u64,
    /// Claims whose lease ran out; the next issuer tick takes them back.
    pub expired_claims: u64,
    /// Admitted or published winners without a row yet: still on their way.
    pub awaiting_persistence: u64,
    pub issued: u64,
    pub failed: u64,
    /// Positions kept for winners lost with Redis' memory (see reconciliation).
    pub lost_positions: u64,
}

#[derive(Debug, Clone, Default)]
pub struct DatabaseCounts {
    pub rows: u64,
    pub issued_count: u64,
}

#[derive(Debug, Clone)]
pub struct Discrepancy {
    pub kind: DiscrepancyKind,
    pub user_id: Option<i64>,
    pub position: Option<u32>,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscrepancyKind {
    /// PostgreSQL has the coupon, Redis has nothing: reconcile.
    RedisStateMissing,
    AdmittedOverStock,
    PersistedOverStock,
    /// `coupon.issued_count` differs from the number of rows.
    IssuedCountMismatch,
    /// Redis' public `issued` counter differs from the winners it marks ISSUED (the counter
    /// and the status move together, in one script).
    IssuedCounterMismatch,
    /// A per-status count (see counts.lua) differs from the statuses it counts, or a status is
    /// none of the four: the census, which reads the counts, would be wrong.
    StatusCounterMismatch,
    /// A row whose user is not among Redis' winners.
    RowWithoutWinner,
    /// A row whose position differs from the user's place in Redis' queue.
    PositionMismatch,
    /// Redis says ISSUED, PostgreSQL has no row.
    IssuedWithoutRow,
    /// ADMITTED in Redis but neither pending nor in flight: nothing will ever publish it.
    WinnerStuck,
    /// A position whose winner was lost before it was published.
    LostPosition,
    /// PUBLISHED longer than [`PUBLISHED_STUCK_AFTER`] after admission, still no row: the
    /// message is not reaching the consumer.
    PublishedWithoutRow,
    /// Its message could never be persisted (see `failed_event`); once the cause is fixed,
    /// `fcfs-coupon redrive --coupon N` publishes it again.
    WinnerFailed,
    /// The fairness log and PostgreSQL disagree: a row changed, deleted or inserted after its
    /// leaf was appended (see `crate::fairness::audit`).
    LogMismatch,
}

/// How long after admission a published winner may wait for its row before it is reported.
pub const PUBLISHED_STUCK_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Audits one coupon; `None` when PostgreSQL does not know it.
pub async fn audit(
    gate: &Gate,
    db: &PgPool,
    coupon: CouponId,
) -> Result<Option<AuditReport>, AuditError> {
    let Some(definition) = store::find_coupon(db, coupon).await? else {
        return Ok(None);
    };
    let mut redis = gate.inspect(coupon).await?;
    // A retired event's keys expire by design; PostgreSQL alone is its record then.
    let retired = store::archived(db, coupon, None).await?.is_some();
    if retired && redis.stock.is_none() {
        redis.retired = true;
    }
    let (winners, issued_count) = store::persisted_winners(db, coupon).await?;
    let rows: Vec<(i64, u32)> = winners
        .iter()
        .map(|w| (w.user.get(), w.position.get()))
        .collect();
    let mut report = compare(
        coupon,
        definition.stock.get(),
        &redis,
        &rows,
        u64::from(issued_count),
    );
    let leaves = fairness::store::leaves(db, coupon, 1, u32::MAX)
        .await
        .map_err(StoreError::from)?;
    report.add(
        fairness::audit::mismatches(&leaves, &winners)
            .into_iter()
            .map(|m| Discrepancy {
                kind: DiscrepancyKind::LogMismatch,
                user_id: m.user_id,
                position: Some(m.position),
                detail: m.detail,
            }),
    );
    Ok(Some(report))
}

impl AuditReport {
    fn add(&mut self, more: impl IntoIterator<Item = Discrepancy>) {
        for d in more {
            self.discrepancy_count += 1;
            self.consistent = false;
            if self.discrepancies.len() < LISTED {
                self.discrepancies.push(d);
            }
        }
    }
}

/// What the checks found, in the order they found it.
#[derive(Default)]
struct Findings(Vec<Discrepancy>);

impl Findings {
    fn add(
        &mut self,
        kind: DiscrepancyKind,
        user_id: Option<i64>,
        position: Option<u32>,
        detail: String,
    ) {
        self.0.push(Discrepancy {
            kind,
            user_id,
            position,
            detail,
        });
    }
}

/// The comparison itself, free of I/O. `rows`: persisted (user, position).
fn compare(
    coupon: CouponId,
    stock: u32,
    redis: &GateState,
    rows: &[(i64, u32)],
    issued_count: u64,
) -> AuditReport {
    let mut found = Findings::default();
    check_presence_and_counts(&mut found, stock, redis, rows.len() as u64, issued_count);
    check_public_counter(&mut found, redis);
    check_status_counters(&mut found, redis);
    if redis.stock.is_some() {
        check_rows_against_queue(&mut found, redis, rows);
    }
    let counts = walk_queue(&mut found, redis, rows);
    let found = found.0;
    AuditReport {
        coupon_id: coupon,
        stock,
        consistent: found.is_empty(),
        redis: counts,
        database: DatabaseCounts {
            rows: rows.len() as u64,
            issued_count,
        },
        discrepancy_count: found.len() as u64,
        discrepancies: found.into_iter().take(LISTED).collect(),
    }
}

/// Redis holds the coupon; neither side is over stock; the counter matches the rows.
fn check_presence_and_counts(
    found: &mut Findings,
    stock: u32,
    redis: &GateState,
    rows: u64,
    issued_count: u64,
) {
    use DiscrepancyKind::*;
    if redis.stock.is_none() && !redis.recovering && !redis.retired {
        found.add(
            RedisStateMissing,
            None,
            None,
            "Redis holds no state for this coupon; run `fcfs-coupon reconcile`.".into(),
        );
    }
    let admitted = redis.queue.len() as u64;
    if admitted > u64::from(stock) {
        found.add(
            AdmittedOverStock,
            None,
            None,
            format!("{admitted} admitted in Redis, stock {stock}"),
        );
    }
    if rows > u64::from(stock) {
        found.add(
            PersistedOverStock,
            None,
            None,
            format!("{rows} rows, stock {stock}"),
        );
    }
    if issued_count != rows {
        found.add(
            IssuedCountMismatch,
            None,
            None,
            format!("issued_count {issued_count}, rows {rows}"),
        );
    }
}

/// The `issued` number everyone is shown counts each ISSUED winner once.
fn check_public_counter(found: &mut Findings, redis: &GateState) {
    if redis.stock.is_none() {
        return;
    }
    let issued = redis
        .statuses
        .values()
        .filter(|s| s.as_str() == Status::Issued.as_str())
        .count() as u64;
    if redis.issued_counter != issued {
        found.add(
            DiscrepancyKind::IssuedCounterMismatch,
            None,
            None,
            format!(
                "Redis' issued counter is {}, {issued} winners are ISSUED",
                redis.issued_counter
            ),
        );
    }
}

/// The per-status counts the census reads agree with a full scan of the statuses: the one
/// place that scan is still made.
fn check_status_counters(found: &mut Findings, redis: &GateState) {
    let (Some(_), Some(counters)) = (redis.stock, redis.status_counters) else {
        return;
    };
    let counted = [Status::Admitted, Status::Published, Status::Failed];
    let mut scanned = [0i64; 3];
    let mut unknown = 0u64;
    for status in redis.statuses.values() {
        match counted.iter().position(|s| s.as_str() == status) {
            Some(i) => scanned[i] += 1,
            None if status == Status::Issued.as_str() => {}
            None => unknown += 1,
        }
    }
    for ((status, kept), seen) in counted.iter().zip(counters).zip(scanned) {
        if kept != seen {
            found.add(
                DiscrepancyKind::StatusCounterMismatch,
                None,
                None,
                format!("Redis' count of {status} is {kept}, {seen} winners are {status}"),
            );
        }
    }
    if unknown > 0 {
        found.add(
            DiscrepancyKind::StatusCounterMismatch,
            None,
            None,
            format!("{unknown} statuses are none of ADMITTED, PUBLISHED, ISSUED, FAILED"),
        );
    }
}

/// Every persisted row belongs to one of Redis' winners, at that winner's position.
fn check_rows_against_queue(found: &mut Findings, redis: &GateState, rows: &[(i64, u32)]) {
    let positions: HashMap<&str, u32> = redis
        .queue
        .iter()
        .enumerate()
        .map(|(rank, user)| (user.as_str(), rank as u32 + 1))
        .collect();
    for &(user, position) in rows {
        match positions.get(user.to_string().as_str()) {
            None => found.add(
                DiscrepancyKind::RowWithoutWinner,
                Some(user),
                Some(position),
                "persisted, but not among Redis' winners".into(),
            ),
            Some(&p) if p != position => found.add(
                DiscrepancyKind::PositionMismatch,
                Some(user),
                Some(position),
                format!("persisted at {position}, Redis queue says {p}"),
            ),
            Some(_) => {}
        }
    }
}

/// Each queue member's status against its row and the pipeline's lists; the counts.
fn walk_queue(found: &mut Findings, redis: &GateState, rows: &[(i64, u32)]) -> RedisCounts {
    let persisted: HashSet<String> = rows.iter().map(|(u, _)| u.to_string()).collect();
    let pending: HashSet<&str> = redis.pending.iter().map(String::as_str).collect();
    let inflight: HashSet<&str> = redis.inflight.iter().map(|(u, _)| u.as_str()).collect();
    let mut counts = RedisCounts {
        present: redis.stock.is_some(),
        recovering: redis.recovering,
        admitted: redis.queue.len() as u64,
        pending: redis.pending.len() as u64,
        inflight: redis.inflight.len() as u64,
        expired_claims: redis
            .inflight
            .iter()
            .filter(|(_, deadline)| *deadline <= redis.now_ms)
            .count() as u64,
        ..RedisCounts::default()
    };
    let stuck_before_us = redis.now_ms * 1000 - PUBLISHED_STUCK_AFTER.as_micros() as i64;
    for (rank, user) in redis.queue.iter().enumerate() {
        let position = Some(rank as u32 + 1);
        let admitted_at_us = redis.admitted_at_us.get(rank).copied().unwrap_or(i64::MAX);
        if user.starts_with(LOST_PREFIX) {
            counts.lost_positions += 1;
            found.add(
                DiscrepancyKind::LostPosition,
                None,
                position,
                "its winner was lost with Redis' memory before being published".into(),
            );
            continue;
        }
        // A winner without a status entry is as good as ADMITTED (the apply script writes both).
        let status = redis
            .statuses
            .get(user)
            .and_then(|s| s.parse().ok())
            .unwrap_or(Status::Admitted);
        let has_row = persisted.contains(user);
        let user_id = user.parse().ok();
        let claimed = pending.contains(user.as_str()) || inflight.contains(user.as_str());
        match status {
            Status::Issued if has_row => counts.issued += 1,
            Status::Issued => found.add(
                DiscrepancyKind::IssuedWithoutRow,
                user_id,
                position,
                "ISSUED in Redis, no row in PostgreSQL".into(),
            ),
            Status::Failed => {
                counts.failed += 1;
                found.add(
                    DiscrepancyKind::WinnerFailed,
                    user_id,
                    position,
                    "FAILED: see failed_event; fix the cause, then `fcfs-coupon redrive`".into(),
                );
            }
            _ if has_row => counts.issued += 1,
            Status::Published if admitted_at_us < stuck_before_us => found.add(
                DiscrepancyKind::PublishedWithoutRow,
                user_id,
                position,
                format!(
                    "PUBLISHED, no row {}s after admission: is the consumer running?",
                    PUBLISHED_STUCK_AFTER.as_secs()
                ),
            ),
            Status::Admitted if !claimed => found.add(
                DiscrepancyKind::WinnerStuck,
                user_id,
                position,
                "ADMITTED, but neither pending nor in flight".into(),
            ),
            Status::Admitted | Status::Published => counts.awaiting_persistence += 1,
            // Restores record LOST winners outside the line; one in it was written by hand.
            Status::Lost => found.add(
                DiscrepancyKind::WinnerStuck,
                user_id,
                position,
                "LOST, yet in line".into(),
            ),
        }
    }
    counts
}
#[cfg(test)]
mod tests {
    use super::*;

    fn state(queue: &[&str], statuses: &[(&str, &str)], pending: &[&str]) -> GateState {
        GateState {
            stock: Some(3),
            issued_counter: statuses.iter().filter(|(_, s)| *s == "ISSUED").count() as u64,
            status_counters: Some(
                ["ADMITTED", "PUBLISHED", "FAILED"]
                    .map(|c| statuses.iter().filter(|(_, s)| *s == c).count() as i64),
            ),
            queue: queue.iter().map(|s| s.to_string()).collect(),
            statuses: statuses
                .iter()
                .map(|(u, s)| (u.to_string(), s.to_string()))
                .collect(),
            pending: pending.iter().map(|s| s.to_string()).collect(),
            ..GateState::default()
        }
    }

    fn kinds(report: &AuditReport) -> Vec<DiscrepancyKind> {
        report.discrepancies.iter().map(|d| d.kind).collect()
    }

    const COUPON: fn() -> CouponId = || CouponId::new(1).unwrap();

    #[test]
    fn a_finished_pipeline_is_consistent() {
        let redis = state(&["10", "11"], &[("10", "ISSUED"), ("11", "ISSUED")], &[]);
        let report = compare(COUPON(), 3, &redis, &[(10, 1), (11, 2)], 2);
        assert!(report.consistent, "{report:?}");
        assert_eq!(report.redis.issued, 2);
    }

    #[test]
    fn work_in_the_pipeline_is_not_a_discrepancy() {
        let redis = state(
            &["10", "11"],
            &[("10", "ADMITTED"), ("11", "PUBLISHED")],
            &["10"],
        );
        let report = compare(COUPON(), 3, &redis, &[], 0);
        assert!(report.consistent, "{report:?}");
        assert_eq!(report.redis.awaiting_persistence, 2);
    }

    #[test]
    fn each_broken_state_is_named() {
        let redis = state(
            &["10", "11", "12", "~lost:0000000004"],
            &[("10", "ISSUED"), ("11", "ISSUED"), ("12", "ADMITTED")],
            &[],
        );
        let report = compare(COUPON(), 3, &redis, &[(10, 2), (99, 3)], 5);
        assert_eq!(
            kinds(&report),
            vec![
                DiscrepancyKind::AdmittedOverStock,
                DiscrepancyKind::IssuedCountMismatch,
                DiscrepancyKind::PositionMismatch,
                DiscrepancyKind::RowWithoutWinner,
                DiscrepancyKind::IssuedWithoutRow,
                DiscrepancyKind::WinnerStuck,
                DiscrepancyKind::LostPosition,
            ]
        );
        assert!(!report.consistent);
        assert_eq!(report.discrepancy_count, 7);
    }

    #[test]
    fn per_status_counts_unlike_the_statuses_are_reported() {
        let mut redis = state(
            &["10", "11"],
            &[("10", "ADMITTED"), ("11", "BOGUS")],
            &["10"],
        );
        redis.status_counters = Some([2, 0, -1]);
        let report = compare(COUPON(), 3, &redis, &[], 0);
        let details: Vec<&str> = (report.discrepancies.iter())
            .filter(|d| d.kind == DiscrepancyKind::StatusCounterMismatch)
            .map(|d| d.detail.as_str())
            .collect();
        assert_eq!(
            details,
            [
                "Redis' count of ADMITTED is 2, 1 winners are ADMITTED",
                "Redis' count of FAILED is -1, 0 winners are FAILED",
                "1 statuses are none of ADMITTED, PUBLISHED, ISSUED, FAILED",
            ]
        );
        // Written before the counts existed: nothing to compare.
        redis.status_counters = None;
        let report = compare(COUPON(), 3, &redis, &[], 0);
        assert!(!kinds(&report).contains(&DiscrepancyKind::StatusCounterMismatch));
    }

    #[test]
    fn failed_winners_and_long_published_ones_are_reported() {
        let mut redis = state(
            &["10", "11", "12"],
            &[("10", "FAILED"), ("11", "PUBLISHED"), ("12", "PUBLISHED")],
            &[],
        );
        redis.now_ms = 1_000_000_000;
        let stale = (redis.now_ms - PUBLISHED_STUCK_AFTER.as_millis() as i64 - 1) * 1000;
        redis.admitted_at_us = vec![stale, stale, redis.now_ms * 1000];
        let report = compare(COUPON(), 3, &redis, &[], 0);
        assert_eq!(
            kinds(&report),
            vec![
                DiscrepancyKind::WinnerFailed,
                DiscrepancyKind::PublishedWithoutRow,
            ]
        );
        assert_eq!(report.discrepancies[1].user_id, Some(11));
        assert_eq!(report.redis.failed, 1);
        assert_eq!(report.redis.awaiting_persistence, 1);
    }

    #[test]
    fn a_public_counter_that_counted_a_winner_twice_is_reported() {
        let mut redis = state(&["10", "11"], &[("10", "ISSUED"), ("11", "ISSUED")], &[]);
        redis.issued_counter = 3;
        let report = compare(COUPON(), 3, &redis, &[(10, 1), (11, 2)], 2);
        assert_eq!(kinds(&report), vec![DiscrepancyKind::IssuedCounterMismatch]);
    }

    #[test]
    fn missing_redis_state_is_reported() {
        let redis = GateState::default();
        let report = compare(COUPON(), 3, &redis, &[(10, 1)], 1);
        assert_eq!(kinds(&report), vec![DiscrepancyKind::RedisStateMissing]);
    }
}
