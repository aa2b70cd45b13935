//! Prometheus metrics, one registry per `Application` (so instances in one process, as in the
//! tests, never mix their counts). Labels stay low-cardinality: outcomes and coupon ids, never
//! user ids.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// How an application ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ApplyResult {
    admitted,
    already,
    sold_out,
    not_open,
    closed,
    not_found,
    /// Refused by a rate limit before reaching the gate.
    rate_limited,
    error,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: ApplyResult,
}

/// The services the pipeline depends on.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Dependency {
    redis,
    postgres,
    kafka,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DependencyLabel {
    pub dependency: Dependency,
}

/// Why the Redis watcher held a coupon (see `crate::ops::reconcile`).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum HoldCause {
    missing,
    regressed,
    server_changed,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HoldLabel {
    pub reason: HoldCause,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub partition: i32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CouponLabel {
    pub coupon: i64,
}

/// One of the books' equalities the watcher checks live (see `crate::ops::invariants`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InvariantLabel {
    pub coupon: i64,
    pub kind: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub applies: Family<ResultLabel, Counter>,
    /// Seconds per application inside the service (gate round trip included).
    pub apply_seconds: Histogram,
    /// Applications inside the gate right now: never more than `http.apply_concurrency`.
    pub apply_in_flight: Gauge,
    /// Applications per admission script call (`APP_GATE__BATCH_*`).
    pub apply_batch_size: Histogram,
    /// Sold-out events this instance answers without Redis (see gate::latch).
    pub sold_out_latched: Gauge,
    pub issuer_batch_size: Histogram,
    /// Seconds from sending a batch to its last delivery report.
    pub publish_seconds: Histogram,
    pub published: Counter,
    pub publish_failures: Counter,
    pub pending: Family<CouponLabel, Gauge>,
    pub inflight: Family<CouponLabel, Gauge>,
    pub consumer_batch_size: Histogram,
    pub rows_persisted: Counter,
    /// Messages whose row was already there: redeliveries after a crash or a rebalance.
    pub redelivered: Counter,
    pub failed_events: Counter,
    /// Messages behind the end of each partition, from librdkafka's statistics.
    pub consumer_lag: Family<PartitionLabel, Gauge>,
    pub dependency_errors: Family<DependencyLabel, Counter>,
    /// Coupons this instance held because Redis lost or regressed their state.
    pub coupons_held: Family<HoldLabel, Counter>,
    /// Held coupons this instance rebuilt from PostgreSQL.
    pub coupons_restored: Counter,
    /// Events with work that the watcher found missing from the issuer's registry and put back.
    pub registry_repairs: Counter,
    /// By how much an equality of the books is off, once it has stayed off past its settle
    /// time; 0 when it holds again (see `crate::ops::invariants`).
    pub invariant_violations: Family<InvariantLabel, Gauge>,
    /// Unix seconds of the watcher's last completed check of the books.
    pub invariant_last_check: Gauge<f64, AtomicU64>,
    /// Issuer ticks run by this process: flat means the issuer stopped.
    pub issuer_ticks: Counter,
    /// 1 when every dependency this process uses answered at the last scrape, else 0.
    pub ready: Gauge,
}

fn sizes() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 4.0, 8))
}

fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut m = Self {
            registry: Registry::with_prefix("fcfs"),
            applies: Family::default(),
            apply_seconds: seconds(),
            apply_in_flight: Gauge::default(),
            apply_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            sold_out_latched: Gauge::default(),
            issuer_batch_size: sizes(),
            publish_seconds: seconds(),
            published: Counter::default(),
            publish_failures: Counter::default(),
            pending: Family::default(),
            inflight: Family::default(),
            consumer_batch_size: sizes(),
            rows_persisted: Counter::default(),
            redelivered: Counter::default(),
            coupons_held: Family::default(),
            coupons_restored: Counter::default(),
            registry_repairs: Counter::default(),
            failed_events: Counter::default(),
            consumer_lag: Family::default(),
            dependency_errors: Family::default(),
            invariant_violations: Family::default(),
            invariant_last_check: Gauge::default(),
            issuer_ticks: Counter::default(),
            ready: Gauge::default(),
        };
        let r = &mut m.registry;
        r.register("apply", "Applications by result", m.applies.clone());
        r.register(
            "apply_duration_seconds",
            "Time to answer an application",
            m.apply_seconds.clone(),
        );
        r.register(
            "apply_in_flight",
            "Applications inside the gate right now (at most http.apply_concurrency)",
            m.apply_in_flight.clone(),
        );
        r.register(
            "apply_batch_size",
            "Applications sent to Redis in one admission call",
            m.apply_batch_size.clone(),
        );
        r.register(
            "sold_out_latched",
            "Sold-out events whose losers this instance answers without Redis",
            m.sold_out_latched.clone(),
        );
        r.register(
            "issuer_batch_size",
            "Winners claimed per batch",
            m.issuer_batch_size.clone(),
        );
        r.register(
            "issuer_publish_duration_seconds",
            "Time to deliver a batch to Kafka",
            m.publish_seconds.clone(),
        );
        r.register(
            "issuer_published",
            "Winners delivered to Kafka",
            m.published.clone(),
        );
        r.register(
            "issuer_publish_failures",
            "Sends that failed and went back to pending",
            m.publish_failures.clone(),
        );
        r.register(
            "pending_winners",
            "Admitted winners waiting for the issuer, per coupon",
            m.pending.clone(),
        );
        r.register(
            "inflight_winners",
            "Winners claimed by an issuer, per coupon",
            m.inflight.clone(),
        );
        r.register(
            "consumer_batch_size",
            "Messages per consumer batch",
            m.consumer_batch_size.clone(),
        );
        r.register(
            "consumer_rows_persisted",
            "Issue rows written to PostgreSQL",
            m.rows_persisted.clone(),
        );
        r.register(
            "consumer_redelivered",
            "Messages whose row was already persisted (redelivered, nothing written)",
            m.redelivered.clone(),
        );
        r.register(
            "consumer_failed_events",
            "Messages set aside as failed events",
            m.failed_events.clone(),
        );
        r.register(
            "consumer_lag",
            "Messages not yet consumed, per partition",
            m.consumer_lag.clone(),
        );
        r.register(
            "dependency_errors",
            "Failed calls to Redis, PostgreSQL or Kafka",
            m.dependency_errors.clone(),
        );
        r.register(
            "coupons_held",
            "Coupons held because Redis lost or regressed their state, by reason",
            m.coupons_held.clone(),
        );
        r.register(
            "coupons_restored",
            "Held coupons rebuilt from PostgreSQL by this instance",
            m.coupons_restored.clone(),
        );
        r.register(
            "registry_repairs",
            "Events with work found missing from the issuer's registry and put back",
            m.registry_repairs.clone(),
        );
        r.register(
            "invariant_violations",
            "How far an equality of the books is off past its settle time, per coupon and kind (0: holds)",
            m.invariant_violations.clone(),
        );
        r.register(
            "invariant_last_check_timestamp_seconds",
            "Unix time of the watcher's last completed check of the books",
            m.invariant_last_check.clone(),
        );
        r.register(
            "issuer_ticks",
            "Issuer ticks run by this process (one a second with the issuer role)",
            m.issuer_ticks.clone(),
        );
        r.register(
            "ready",
            "1 when every dependency this process uses answered at this scrape, else 0",
            m.ready.clone(),
        );
        Arc::new(m)
    }

    pub fn apply(&self, result: ApplyResult) {
        self.applies.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn dependency_error(&self, dependency: Dependency) {
        self.dependency_errors
            .get_or_create(&DependencyLabel { dependency })
            .inc();
    }

    /// The Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
