//! The books, live: every look of the watcher checks, per event running (or retired within
//! `store::BOOKS_AFTER_RETIREMENT_SECS`), that every stage's counts reconcile, and exports what does not as
//! `fcfs_invariant_violations{coupon,kind}` (by how much it is off) with a warning in the log.
//!
//! Two sorts of equality. Those read in one atomic step (one PostgreSQL statement, or one Redis
//! script) hold at every instant, so they are reported at once:
//!
//! - `issued_count`: the rows in `coupon_issue` = the coupon's `issued_count`;
//! - `past_stock`: no row, and no position, past the stock;
//! - `stranded`: every ADMITTED winner is pending or in flight (else no issuer publishes it);
//! - `stages`: admitted = ADMITTED + PUBLISHED + ISSUED + FAILED + lost placeholders (every
//!   place handed out has exactly one stage), and the status hash holds as many entries as
//!   those four counts (a status deleted or added by hand). The counts are kept by the scripts
//!   that change a status, so a status edited in place is not seen here: the audit's full scan
//!   (`fcfs-coupon audit`, STATUS_COUNTER_MISMATCH) finds it.
//!
//! Those that compare Redis with PostgreSQL, or with Kafka, differ while the pipeline moves (a
//! batch committed in PostgreSQL before its statuses advance in Redis). They are reported only
//! once the event has been at rest for [`SETTLE`] (nothing it counts moved) and still differ:
//!
//! - `persisted`: ISSUED in Redis = rows;
//! - `public_count`: the public issued count = rows;
//! - `positions_dense`: positions 1..max are rows, FAILED or lost (no hole nobody explains);
//! - `log_size`: the fairness log holds a leaf for every row, FAILED and lost position;
//! - `kafka_lag`: PUBLISHED winners, not persisted, with the consumer group caught up: nothing
//!   on the topic will persist them.
//!
//! Each event's rows are counted at most once per [`census_every`] (100 µs per winner, 2 s at
//! least), and only on those looks is it judged. The Redis census (census.lua) reads counts,
//! not statuses: O(1) at rest (a few µs of Redis for any size of event), so an event that is
//! never retired (FAILED winners waiting for a redrive, retention 0) costs Redis almost nothing
//! to keep watching; it runs on such a look with the event at rest (nothing pending or in
//! flight, nothing moving), so it is taken at the rows' fingerprint. An event held for a
//! restore (or missing from Redis) is checked on PostgreSQL's side only.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::configuration::KafkaSettings;
use crate::domain::CouponId;
use crate::gate::{Census, Gate, Standing};
use crate::kafka;
use crate::metrics::{InvariantLabel, Metrics};
use crate::store::{PgBooks, Watched};

/// How long an event's counts must stay still before a difference between systems is a
/// violation rather than a pipeline in motion.
pub const SETTLE: Duration = Duration::from_secs(5);

/// The longest the consumer group's offsets are waited for in one look.
const LAG_TIMEOUT: Duration = Duration::from_secs(2);

/// The least time between two censuses of one event; larger events wait longer (see
/// [`census_every`]).
const CENSUS_FLOOR: Duration = Duration::from_secs(2);

/// What paces a look now is PostgreSQL's `count(*)` of the rows, which grows with the event
/// (the census is O(1)); one every 100 µs per winner keeps it well under 1% of a core.
fn census_every(admitted: u64) -> Duration {
    CENSUS_FLOOR.max(Duration::from_micros(admitted.saturating_mul(100)))
}

/// What moves while an event's pipeline moves. A change restarts the settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    admitted: u64,
    pending: u64,
    inflight: u64,
    rows: u32,
    issued_count: u32,
    log_size: Option<u64>,
}

/// One event's state between looks.
struct Ledger {
    fingerprint: Fingerprint,
    still_since: Instant,
    /// When its rows were last counted (see [`Books::counted_recently`]).
    counted_at: Instant,
    /// The last census, and the fingerprint it was taken at.
    census: Option<(Census, Fingerprint)>,
    /// What is reported now, by kind (0: reported before, holds again).
    reported: BTreeMap<&'static str, u64>,
}

/// The live books of every event this watcher sees.
pub struct Books {
    gate: Gate,
    kafka: KafkaSettings,
    metrics: Arc<Metrics>,
    ledgers: Mutex<HashMap<CouponId, Ledger>>,
    /// What is off now, per event, for the public stats (and so the live dashboard).
    open: Mutex<HashMap<CouponId, BTreeMap<&'static str, u64>>>,
}

/// Differences found in one look at one event: (kind, by how much), 0 for none.
type Findings = Vec<(&'static str, u64)>;

impl Books {
    pub fn new(gate: Gate, kafka: KafkaSettings, metrics: Arc<Metrics>) -> Self {
        Self {
            gate,
            kafka,
            metrics,
            ledgers: Mutex::default(),
            open: Mutex::default(),
        }
    }

    /// What is off now for `coupon`, by kind (for the API's stats).
    pub fn violations(&self, coupon: CouponId) -> Vec<(&'static str, u64)> {
        let open = self.open.lock().expect("books lock");
        open.get(&coupon)
            .map(|kinds| kinds.iter().map(|(k, v)| (*k, *v)).collect())
            .unwrap_or_default()
    }

    /// Events whose rows were counted less than [`census_every`] ago: the watcher's query does
    /// not count them again yet (a `count(*)` a second of every event would grow with every
    /// event that never retires).
    pub fn counted_recently(&self) -> Vec<i64> {
        let now = Instant::now();
        let ledgers = self.ledgers.lock().expect("books lock");
        ledgers
            .iter()
            .filter(|(_, l)| now - l.counted_at < census_every(l.fingerprint.admitted))
            .map(|(c, _)| c.get())
            .collect()
    }

    /// Events with a violation reported now: checked until it clears, retired or not.
    pub fn open_ids(&self) -> Vec<i64> {
        let open = self.open.lock().expect("books lock");
        open.keys().map(|c| c.get()).collect()
    }

    /// Checks the events the look saw, neither retired nor held (`watched` and `standing` in
    /// the same order), and forgets every other event; then marks the check done.
    pub async fn check(&self, events: &[(&Watched, &Standing)]) {
        let now = Instant::now();
        let seen: HashSet<CouponId> = events.iter().map(|(w, _)| w.coupon.id).collect();
        self.forget_all_but(&seen);
        let mut lag: Option<Option<i64>> = None;
        for (watched, standing) in events {
            let Some(pg) = watched.books else { continue };
            match self.check_one(watched, pg, standing, now, &mut lag).await {
                Ok(findings) => self.report(watched.coupon.id, findings),
                Err(e) => {
                    tracing::debug!(coupon_id = %watched.coupon.id, error = ?e, "could not count the books; next look")
                }
            }
        }
        self.metrics
            .invariant_last_check
            .set(chrono::Utc::now().timestamp_micros() as f64 / 1e6);
    }

    async fn check_one(
        &self,
        watched: &Watched,
        pg: PgBooks,
        standing: &Standing,
        now: Instant,
        lag: &mut Option<Option<i64>>,
    ) -> anyhow::Result<Findings> {
        let coupon = watched.coupon.id;
        // Rows are counted every so often, not every look (see `counted_recently`); between
        // counts the last count stands in the fingerprint and nothing is judged.
        let (fingerprint, at_rest) = {
            let mut ledgers = self.ledgers.lock().expect("books lock");
            let Some(rows) = pg.rows.or(ledgers.get(&coupon).map(|l| l.fingerprint.rows)) else {
                return Ok(Vec::new());
            };
            let fingerprint = Fingerprint {
                admitted: standing.admitted,
                pending: standing.pending,
                inflight: standing.inflight,
                rows,
                issued_count: watched.issued_count,
                log_size: pg.log_size,
            };
            let ledger = ledgers.entry(coupon).or_insert_with(|| Ledger {
                fingerprint,
                still_since: now,
                counted_at: now,
                census: None,
                reported: BTreeMap::new(),
            });
            let moved = ledger.fingerprint != fingerprint;
            if moved {
                ledger.fingerprint = fingerprint;
                ledger.still_since = now;
            }
            if pg.rows.is_some() {
                ledger.counted_at = now;
            }
            let at_rest = !moved && standing.pending == 0 && standing.inflight == 0;
            (fingerprint, at_rest)
        };
        let Some(rows) = pg.rows else {
            return Ok(Vec::new());
        };
        let stock = u64::from(watched.coupon.stock.get());
        let rows = u64::from(rows);
        let mut findings: Findings = vec![
            (
                "issued_count",
                rows.abs_diff(u64::from(watched.issued_count)),
            ),
            (
                "past_stock",
                rows.max(u64::from(watched.last_position))
                    .saturating_sub(stock),
            ),
        ];
        // Held for a restore, or gone from Redis: Redis' books are the restore's business;
        // PostgreSQL's still must balance.
        if standing.held() || !standing.present {
            return Ok(findings);
        }
        // Counted this look, and at rest: the census too (so it runs as seldom as the count).
        let fresh = match at_rest {
            true => self.gate.census(coupon).await?,
            false => None,
        };
        let (census, still_since) = {
            let mut ledgers = self.ledgers.lock().expect("books lock");
            let Some(ledger) = ledgers.get_mut(&coupon) else {
                return Ok(findings);
            };
            if let Some(census) = fresh {
                // A census unlike the last is motion too: a batch persisted between the
                // PostgreSQL read and the census must not count as a difference at rest.
                if ledger.census.is_some_and(|(before, _)| before != census) {
                    ledger.still_since = now;
                }
                ledger.census = Some((census, fingerprint));
            }
            let census = ledger
                .census
                .filter(|(_, taken_at)| *taken_at == fingerprint)
                .map(|(c, _)| c);
            (census, ledger.still_since)
        };
        let Some(c) = census else {
            return Ok(findings);
        };
        let staged = c.status_admitted + c.status_published + c.status_issued + c.status_failed;
        findings.push(("stranded", c.stranded));
        findings.push((
            "stages",
            c.admitted.abs_diff(staged + c.lost) + c.status_entries.abs_diff(staged),
        ));
        if now - still_since < SETTLE {
            return Ok(findings);
        }
        let resolved = rows + c.status_failed + c.lost;
        let last_position = u64::from(watched.last_position);
        findings.push(("persisted", c.status_issued.abs_diff(rows)));
        findings.push(("public_count", c.public_issued.abs_diff(rows)));
        // Published winners explain holes too: a consumer that stopped after persisting later
        // positions first (two issuers, a re-sent batch) leaves them, and `kafka_lag` judges them.
        findings.push((
            "positions_dense",
            last_position.saturating_sub(resolved + c.status_published),
        ));
        // The builder appends in position order and marks FAILED or lost places at the end only
        // once the event is over: until then the log reaches the last row, after it every place.
        if let (Some(size), 0) = (pg.log_size, c.status_published) {
            let over = standing.admitted >= stock
                || watched
                    .coupon
                    .window
                    .closes_at()
                    .is_some_and(|c| c <= chrono::Utc::now());
            let expected = if over { resolved } else { last_position };
            findings.push(("log_size", size.abs_diff(expected)));
        }
        let unpersisted = c.status_published;
        let stuck = if unpersisted == 0 {
            0
        } else {
            if lag.is_none() {
                // Bounded well inside the look's own timeout: a slow broker leaves the kind
                // unjudged, not the look abandoned.
                let offsets = tokio::time::timeout(
                    LAG_TIMEOUT,
                    kafka::group_offsets(&self.kafka, &self.kafka.topic, &self.kafka.group_id),
                )
                .await;
                *lag = Some(match offsets {
                    Ok(Ok(o)) => Some(o.behind()),
                    _ => None,
                });
            }
            match lag {
                Some(Some(0)) => unpersisted,
                _ => 0,
            }
        };
        findings.push(("kafka_lag", stuck));
        Ok(findings)
    }

    /// Exports what is off, logs each change, and clears what holds again.
    fn report(&self, coupon: CouponId, findings: Findings) {
        let mut ledgers = self.ledgers.lock().expect("books lock");
        let Some(ledger) = ledgers.get_mut(&coupon) else {
            return;
        };
        for (kind, off) in findings {
            let before = ledger.reported.get(kind).copied();
            if off == 0 && before.is_none() {
                continue;
            }
            if before != Some(off) {
                if off > 0 {
                    tracing::warn!(coupon_id = %coupon, kind, off, "the books do not balance");
                } else {
                    tracing::info!(coupon_id = %coupon, kind, "the books balance again");
                }
            }
            ledger.reported.insert(kind, off);
            self.metrics
                .invariant_violations
                .get_or_create(&InvariantLabel {
                    coupon: coupon.get(),
                    kind,
                })
                .set(i64::try_from(off).unwrap_or(i64::MAX));
        }
        let open: BTreeMap<&'static str, u64> = ledger
            .reported
            .iter()
            .filter(|(_, off)| **off > 0)
            .map(|(k, v)| (*k, *v))
            .collect();
        let mut shared = self.open.lock().expect("books lock");
        if open.is_empty() {
            shared.remove(&coupon);
        } else {
            shared.insert(coupon, open);
        }
    }

    /// Drops the state and series of events no longer checked (retired a while ago with their
    /// books balanced, or deleted).
    fn forget_all_but(&self, seen: &HashSet<CouponId>) {
        let mut ledgers = self.ledgers.lock().expect("books lock");
        let gone: Vec<CouponId> = ledgers
            .keys()
            .filter(|c| !seen.contains(c))
            .copied()
            .collect();
        let mut shared = self.open.lock().expect("books lock");
        for coupon in gone {
            if let Some(ledger) = ledgers.remove(&coupon) {
                for kind in ledger.reported.keys() {
                    self.metrics.invariant_violations.remove(&InvariantLabel {
                        coupon: coupon.get(),
                        kind,
                    });
                }
            }
            shared.remove(&coupon);
        }
    }
}
