//! The audit: compares what Redis says about a coupon's winners with what PostgreSQL
//! persisted. Work still moving through the pipeline (pending, in flight, on Kafka) is counted,
//! not reported; a discrepancy is a state the pipeline cannot reach on its own.

use std::collections::{HashMap, HashSet};

use poem_openapi::{Enum, Object};
use serde::Serialize;
use sqlx::PgPool;

use crate::domain::CouponId;
use crate::gate::{Gate, GateState, LOST_PREFIX};
use crate::store;

/// At most this many discrepancies are listed; `discrepancyCount` has them all.
const LISTED: usize = 100;

#[derive(Debug, Clone, Serialize, Object)]
#[serde(rename_all = "camelCase")]
#[oai(rename_all = "camelCase")]
pub struct AuditReport {
    pub coupon_id: i64,
    pub stock: u32,
    /// True when there is no discrepancy.
    pub consistent: bool,
    pub redis: RedisCounts,
    pub database: DatabaseCounts,
    pub discrepancy_count: u64,
    /// The first 100 discrepancies.
    pub discrepancies: Vec<Discrepancy>,
}

#[derive(Debug, Clone, Default, Serialize, Object)]
#[serde(rename_all = "camelCase")]
#[oai(rename_all = "camelCase")]
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

#[derive(Debug, Clone, Default, Serialize, Object)]
#[serde(rename_all = "camelCase")]
#[oai(rename_all = "camelCase")]
pub struct DatabaseCounts {
    pub rows: u64,
    pub issued_count: u64,
}

#[derive(Debug, Clone, Serialize, Object)]
#[serde(rename_all = "camelCase")]
#[oai(rename_all = "camelCase")]
pub struct Discrepancy {
    pub kind: DiscrepancyKind,
    #[oai(skip_serializing_if_is_none)]
    pub user_id: Option<i64>,
    #[oai(skip_serializing_if_is_none)]
    pub position: Option<u32>,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Enum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[oai(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DiscrepancyKind {
    /// PostgreSQL has the coupon, Redis has nothing: reconcile.
    RedisStateMissing,
    AdmittedOverStock,
    PersistedOverStock,
    /// `coupon.issued_count` differs from the number of rows.
    IssuedCountMismatch,
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
}

/// Audits one coupon; `None` when PostgreSQL does not know it.
pub async fn audit(
    gate: &Gate,
    db: &PgPool,
    coupon: CouponId,
) -> anyhow::Result<Option<AuditReport>> {
    let Some(definition) = store::find_coupon(db, coupon).await? else {
        return Ok(None);
    };
    let redis = gate.inspect(coupon).await?;
    let (rows, issued_count) = store::persisted_winners(db, coupon).await?;
    let rows: Vec<(i64, u32)> = rows.iter().map(|w| (w.user.get(), w.position)).collect();
    Ok(Some(compare(
        coupon,
        definition.stock.get(),
        &redis,
        &rows,
        u64::from(issued_count),
    )))
}

/// The comparison itself, free of I/O. `rows`: persisted (user, position).
fn compare(
    coupon: CouponId,
    stock: u32,
    redis: &GateState,
    rows: &[(i64, u32)],
    issued_count: u64,
) -> AuditReport {
    let mut found = Vec::new();
    let mut add = |kind, user_id, position, detail: String| {
        found.push(Discrepancy {
            kind,
            user_id,
            position,
            detail,
        })
    };
    let present = redis.stock.is_some();
    if !present && !redis.recovering {
        add(
            DiscrepancyKind::RedisStateMissing,
            None,
            None,
            "Redis holds no state for this coupon; run `fcfs-coupon reconcile`.".into(),
        );
    }
    let stock64 = u64::from(stock);
    let admitted = redis.queue.len() as u64;
    if admitted > stock64 {
        add(
            DiscrepancyKind::AdmittedOverStock,
            None,
            None,
            format!("{admitted} admitted in Redis, stock {stock}"),
        );
    }
    if rows.len() as u64 > stock64 {
        add(
            DiscrepancyKind::PersistedOverStock,
            None,
            None,
            format!("{} rows, stock {stock}", rows.len()),
        );
    }
    if issued_count != rows.len() as u64 {
        add(
            DiscrepancyKind::IssuedCountMismatch,
            None,
            None,
            format!("issued_count {issued_count}, rows {}", rows.len()),
        );
    }

    let positions: HashMap<&str, u32> = redis
        .queue
        .iter()
        .enumerate()
        .map(|(rank, user)| (user.as_str(), rank as u32 + 1))
        .collect();
    let persisted: HashSet<String> = rows.iter().map(|(u, _)| u.to_string()).collect();
    if present {
        for (user, position) in rows {
            match positions.get(user.to_string().as_str()) {
                None => add(
                    DiscrepancyKind::RowWithoutWinner,
                    Some(*user),
                    Some(*position),
                    "persisted, but not among Redis' winners".into(),
                ),
                Some(p) if p != position => add(
                    DiscrepancyKind::PositionMismatch,
                    Some(*user),
                    Some(*position),
                    format!("persisted at {position}, Redis queue says {p}"),
                ),
                Some(_) => {}
            }
        }
    }

    let pending: HashSet<&str> = redis.pending.iter().map(String::as_str).collect();
    let inflight: HashSet<&str> = redis.inflight.iter().map(|(u, _)| u.as_str()).collect();
    let mut counts = RedisCounts {
        present,
        recovering: redis.recovering,
        admitted,
        pending: redis.pending.len() as u64,
        inflight: redis.inflight.len() as u64,
        expired_claims: redis
            .inflight
            .iter()
            .filter(|(_, deadline)| *deadline <= redis.now_ms)
            .count() as u64,
        ..RedisCounts::default()
    };
    for (rank, user) in redis.queue.iter().enumerate() {
        let position = Some(rank as u32 + 1);
        if user.starts_with(LOST_PREFIX) {
            counts.lost_positions += 1;
            add(
                DiscrepancyKind::LostPosition,
                None,
                position,
                "its winner was lost with Redis' memory before being published".into(),
            );
            continue;
        }
        let status = redis.statuses.get(user).map_or("ADMITTED", String::as_str);
        let has_row = persisted.contains(user);
        let user_id = user.parse().ok();
        match status {
            "ISSUED" if has_row => counts.issued += 1,
            "ISSUED" => add(
                DiscrepancyKind::IssuedWithoutRow,
                user_id,
                position,
                "ISSUED in Redis, no row in PostgreSQL".into(),
            ),
            "FAILED" => counts.failed += 1,
            _ if has_row => counts.issued += 1,
            "ADMITTED" if !pending.contains(user.as_str()) && !inflight.contains(user.as_str()) => {
                add(
                    DiscrepancyKind::WinnerStuck,
                    user_id,
                    position,
                    "ADMITTED, but neither pending nor in flight".into(),
                )
            }
            _ => counts.awaiting_persistence += 1,
        }
    }

    AuditReport {
        coupon_id: coupon.get(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn state(queue: &[&str], statuses: &[(&str, &str)], pending: &[&str]) -> GateState {
        GateState {
            stock: Some(3),
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
    fn missing_redis_state_is_reported() {
        let redis = GateState::default();
        let report = compare(COUPON(), 3, &redis, &[(10, 1)], 1);
        assert_eq!(kinds(&report), vec![DiscrepancyKind::RedisStateMissing]);
    }
}
