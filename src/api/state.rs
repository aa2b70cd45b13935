use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Semaphore;

use super::rate_limit::ApplyLimiter;
use crate::auth::Verifier;
use crate::domain::CouponId;
use crate::gate::Gate;
use crate::kafka::BrokerProbe;
use crate::metrics::Metrics;
use crate::ops::health::Checked;
use crate::store::CouponSummary;

/// What every handler may use; cheap to clone (each field is a handle or an `Arc`).
#[derive(Clone)]
pub struct AppState {
    pub gate: Gate,
    /// Read and admin endpoints only: the apply path never touches PostgreSQL.
    pub db: PgPool,
    pub tokens: Arc<Verifier>,
    pub broker: BrokerProbe,
    /// The issue topic and consumer group: deleting a rehearsal waits for the group to be
    /// past everything on the topic.
    pub kafka: crate::configuration::KafkaSettings,
    /// The apply bulkhead: permits for applications in progress (`http.apply_concurrency`).
    pub apply_permits: Arc<Semaphore>,
    /// Per-user and per-address token buckets, checked before the gate.
    pub limiter: Arc<ApplyLimiter>,
    /// Which address an application comes from (the peer, or what a trusted proxy says).
    pub client_address: Arc<super::ClientAddress>,
    pub metrics: Arc<Metrics>,
    /// `GET /coupons`, at most a second old (public: anyone may poll it).
    pub list_cache: Arc<super::Fresh<Vec<CouponSummary>>>,
    /// `GET /health/ready` on the public port, at most a second old (the ops port checks live).
    pub ready_cache: Arc<super::Fresh<Checked>>,
    /// `GET /coupons/{id}`'s event (no user's ticket), at most a second old per event.
    pub event_cache: Arc<super::FreshByKey<CouponId, crate::gate::Snapshot>>,
    /// `GET /coupons/{id}/stats`, at most a second old per event.
    pub stats_cache: Arc<super::FreshByKey<CouponId, super::dashboard::CouponStats>>,
    /// The issuer's period (from its schedule): when a polled status can next change.
    pub status_poll: Duration,
    /// The key checkpoints are signed with; `None` when the fairness log is off.
    pub fairness: Option<Arc<crate::fairness::LogKey>>,
    /// Which events are rehearsals, for rehearsal users' calls (see `api::rehearsal`).
    pub rehearsals: Arc<super::rehearsal::Rehearsals>,
    /// Users' own reads: poll answers kept until they may change, database reads limited.
    pub user_reads: Arc<super::user_reads::UserReads>,
    /// The watcher's live books: what is off now, per event (see `ops::reconcile::books`).
    pub books: Option<Arc<crate::ops::reconcile::Books>>,
    /// Each event's fairness log head for its view, at most a second old.
    pub log_cache: Arc<super::FreshByKey<CouponId, crate::fairness::store::LogHead>>,
    /// The fairness log's anonymous reads: their own pool, and each log's copy in memory.
    pub log_reads: Arc<super::log_reads::LogReads>,
}
