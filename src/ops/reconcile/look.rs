//! One look of the watcher at Redis against PostgreSQL (see the module documentation).

use std::collections::HashSet;

use chrono::Utc;

use super::Reconciler;
use crate::domain::{Coupon, CouponId};
use crate::gate::{HoldId, HoldReason, Standing};
use crate::metrics::{HoldCause, HoldLabel};
use crate::store::{self, Watched};

/// A coupon under a hold, to be restored once that hold is settled.
#[derive(Debug, Clone)]
pub struct Held {
    pub coupon: Coupon,
    pub hold: HoldId,
}

impl Reconciler {
    /// Holds every coupon PostgreSQL has and Redis lacks or regressed (and every coupon when
    /// the server changed, with `APP_REDIS__ACK_REPLICAS=0`); puts back on the issuer's registry
    /// every event with work that is missing from it; records how far each gate got; retires
    /// what is done. Returns the coupons held now, by this look or an earlier one.
    pub(super) async fn look(&self) -> anyhow::Result<Vec<Held>> {
        // PostgreSQL first: Redis' count can only grow after it, so a regression seen is real.
        let (books_open, counted) = self
            .books
            .as_ref()
            .map(|b| (b.open_ids(), b.counted_recently()))
            .unwrap_or_default();
        let (retired, coupons): (Vec<Watched>, Vec<Watched>) =
            store::watched_coupons(&self.db, &books_open, &counted)
                .await?
                .into_iter()
                .partition(|w| w.retired_at.is_some());
        self.keep_retired_latches(&retired);
        self.forget_deleted(retired.iter().chain(&coupons));
        let ids: Vec<CouponId> = coupons.iter().map(|w| w.coupon.id).collect();
        self.gate.remember(ids.iter().copied());
        let survey = self.gate.survey(&ids).await?;
        let registry: HashSet<CouponId> = self.gate.active_coupons().await?.into_iter().collect();
        let (server_changed, lineage_before) = self.server_changed(&survey.server).await?;
        let mut held = Vec::new();
        let mut moved = Vec::new();
        let mut failed = 0;
        let mut checked = Vec::new();
        for (watched, standing) in coupons.into_iter().zip(survey.coupons) {
            let admitted = u32::try_from(standing.admitted).unwrap_or(u32::MAX);
            if standing.present && !standing.held() && admitted > watched.admitted_high {
                moved.push((watched.coupon.id, admitted));
            }
            // One coupon's trouble must not keep the others (their holds, their tickets
            // written back) from this look.
            let looked = self
                .look_at(&watched, &standing, server_changed, &registry)
                .await;
            match looked {
                Ok(Some(h)) => held.push(h),
                Ok(None) => {}
                Err(e) => {
                    failed += 1;
                    tracing::warn!(coupon_id = %watched.coupon.id, error = ?e, "looking at the coupon failed; the next look tries again");
                }
            }
            checked.push((watched, standing));
        }
        store::record_admitted(&self.db, &moved).await?;
        if let Some(books) = &self.books {
            // Retired events too, for a while: they are retired the moment their books first
            // can be judged at rest (see store::BOOKS_AFTER_RETIREMENT_SECS).
            let closing: Vec<&Watched> = retired.iter().filter(|w| w.books.is_some()).collect();
            let ids: Vec<CouponId> = closing.iter().map(|w| w.coupon.id).collect();
            // Not checked this time if they cannot be read: skipping them would forget their
            // violations.
            let survey = if ids.is_empty() {
                Ok(crate::gate::Survey::default())
            } else {
                self.gate.survey(&ids).await
            };
            match survey {
                Ok(survey) => {
                    let events: Vec<(&Watched, &Standing)> = checked
                        .iter()
                        .map(|(w, s)| (w, s))
                        .chain(closing.into_iter().zip(&survey.coupons))
                        .collect();
                    books.check(&events).await;
                }
                Err(e) => {
                    tracing::debug!(error = ?e, "could not survey retired events for the books")
                }
            }
        }
        if server_changed && failed == 0 {
            // Only now, with every hold placed: a look that failed before this sees it again.
            store::set_lineage(
                &self.db,
                &self.prefix,
                lineage_before.as_deref(),
                &survey.server,
            )
            .await?;
        }
        Ok(held)
    }

    /// One coupon's part of a look: its latch, its hold (and the tickets told here, written
    /// back while it is held), its registry entry, its retirement.
    async fn look_at(
        &self,
        watched: &Watched,
        standing: &Standing,
        server_changed: bool,
        registry: &HashSet<CouponId>,
    ) -> anyhow::Result<Option<Held>> {
        let coupon = watched.coupon.clone();
        // Positions the gate was seen to hand out (every one of them was told, or refused for
        // want of a replica) must still be there: fewer means Redis lost admissions.
        let seen = watched.last_position.max(watched.admitted_high);
        let reason = if !standing.present {
            Some(HoldReason::Missing)
        } else if standing.admitted < u64::from(seen) {
            Some(HoldReason::Regressed)
        } else if server_changed && self.hold_on_server_change {
            Some(HoldReason::ServerChanged)
        } else {
            None
        };
        let full = standing.admitted >= u64::from(coupon.stock.get());
        if standing.held() || !standing.present || !full || reason.is_some() {
            self.gate.unlatch(coupon.id);
        } else {
            self.gate.keep_latch(coupon.id);
        }
        if let Some(hold) = standing.hold.clone() {
            self.announce_told(coupon.id).await;
            return Ok(Some(Held { coupon, hold }));
        }
        if let Some(reason) = reason {
            let Some(hold) = self.gate.hold(coupon.id, reason).await? else {
                return Ok(None);
            };
            self.count_hold(reason);
            tracing::warn!(coupon_id = %coupon.id, ?reason, admitted = standing.admitted, last_position = watched.last_position, admitted_high = watched.admitted_high, "holding the coupon until it is restored from PostgreSQL");
            self.announce_told(coupon.id).await;
            return Ok(Some(Held { coupon, hold }));
        }
        // PostgreSQL was read before Redis: with nothing pending or in flight, every position
        // up to what Redis admitted then is persisted (or lost), so its tickets can go.
        let settled = u64::from(watched.issued_count) + standing.lost >= standing.admitted;
        if settled && standing.pending == 0 && standing.inflight == 0 {
            let admitted = u32::try_from(standing.admitted).unwrap_or(u32::MAX);
            self.gate.forget_told(coupon.id, Some(admitted));
        }
        if !registry.contains(&coupon.id) && has_work(&coupon, standing) {
            self.gate.enlist(coupon.id).await?;
            if let Some(metrics) = &self.metrics {
                metrics.registry_repairs.inc();
            }
            tracing::warn!(coupon_id = %coupon.id, pending = standing.pending, "the event was missing from the issuer's registry: put back");
        }
        self.retire_if_done(watched, standing).await?;
        Ok(None)
    }

    /// Forgets, in the gate, coupons PostgreSQL did not have in this look nor the last one
    /// (`every`: all it has now): a deleted rehearsal whose keys are gone is then unknown (404)
    /// on every instance, not lost (503).
    fn forget_deleted<'a>(&self, every: impl Iterator<Item = &'a Watched>) {
        let present: HashSet<CouponId> = every.map(|w| w.coupon.id).collect();
        let missing: HashSet<CouponId> = self.gate.known().difference(&present).copied().collect();
        let mut absent = self.absent.lock().expect("absent lock");
        self.gate.forget(missing.intersection(&absent).copied());
        *absent = missing;
    }

    /// Whether Redis answers from another server than the last look, here or on any instance
    /// before (PostgreSQL keeps the identity, so a restart while every instance was down counts).
    /// Also returns the identity PostgreSQL had, so it is replaced only if no other look
    /// replaced it meanwhile (a look on a stale survey must not write an old server back).
    async fn server_changed(&self, server: &str) -> anyhow::Result<(bool, Option<String>)> {
        match store::lineage(&self.db, &self.prefix).await? {
            Some(before) if before == server => Ok((false, Some(before))),
            Some(before) => {
                tracing::warn!(%before, now = %server, "the Redis server changed (restart or failover)");
                Ok((true, Some(before)))
            }
            None => {
                store::set_lineage(&self.db, &self.prefix, None, server).await?;
                Ok((false, None))
            }
        }
    }

    /// Writes back the tickets this instance told of a held coupon, for its restore (see
    /// `gate::told`); every look while it is held, so every live instance's are in before the
    /// settle ends.
    async fn announce_told(&self, coupon: CouponId) {
        match self.gate.announce_told(coupon).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::debug!(coupon_id = %coupon, tickets = n, "tickets told here written back for the restore")
            }
            Err(e) => {
                tracing::warn!(coupon_id = %coupon, error = ?e, "could not write back the tickets told here; trying again next look")
            }
        }
    }

    /// A retired event's losers keep coming while its keys last, and the sold-out latch keeps
    /// answering them; once the keys are gone PostgreSQL answers, and the latch is let go.
    fn keep_retired_latches(&self, retired: &[Watched]) {
        self.gate.note_retired(retired.iter().map(|w| w.coupon.id));
        for w in retired {
            self.gate.forget_told(w.coupon.id, None);
        }
        let gone = self.retention.map(|retention| {
            Utc::now() - chrono::Duration::from_std(retention).unwrap_or_default()
        });
        for w in retired {
            match (gone, w.retired_at) {
                (Some(gone), Some(at)) if at <= gone => self.gate.unlatch(w.coupon.id),
                _ => self.gate.keep_latch(w.coupon.id),
            }
        }
    }

    fn count_hold(&self, reason: HoldReason) {
        if let Some(metrics) = &self.metrics {
            let reason = match reason {
                HoldReason::Missing => HoldCause::missing,
                HoldReason::Regressed => HoldCause::regressed,
                HoldReason::ServerChanged => HoldCause::server_changed,
            };
            metrics
                .coupons_held
                .get_or_create(&HoldLabel { reason })
                .inc();
        }
    }

    /// Retires the Redis copy of an event that is finished (sold out or closed, by Redis' own
    /// clock) with every winner persisted and nothing in the pipeline: its keys expire after
    /// the retention, and PostgreSQL answers its reads from then on (see `store::archived`).
    async fn retire_if_done(&self, watched: &Watched, standing: &Standing) -> anyhow::Result<()> {
        let Some(retention) = self.retention else {
            return Ok(());
        };
        let coupon = &watched.coupon;
        // Placeholders stand for positions nobody can be issued: they count as settled.
        let persisted = u64::from(watched.issued_count) + standing.lost == standing.admitted;
        if !(persisted && standing.pending == 0 && standing.inflight == 0)
            || has_work(coupon, standing)
        {
            return Ok(());
        }
        // This instance's last second of answers goes in before the count is kept; another
        // instance's may still be on its way (at most a second of it is missed).
        self.gate.flush_counts().await;
        if let Some(applications) = self
            .gate
            .expire(coupon.id, retention, standing.admitted)
            .await?
        {
            store::mark_retired(&self.db, coupon.id, applications).await?;
            tracing::info!(coupon_id = %coupon.id, retention_secs = retention.as_secs(), "finished and persisted: its Redis keys expire, reads come from PostgreSQL");
        }
        Ok(())
    }
}

/// Whether the issuer has, or may get, winners to publish: something pending or in flight, or
/// stock left in an event this instance's clock does not see closed. (Redis' clock decides; an
/// event closing here a moment early is caught by the next look, with its winners pending.)
fn has_work(coupon: &Coupon, standing: &Standing) -> bool {
    let open = standing.admitted < u64::from(coupon.stock.get())
        && coupon.window.closes_at().is_none_or(|c| c > Utc::now());
    standing.pending + standing.inflight > 0 || open
}
