use std::sync::LazyLock;

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use redis::Script;

use super::{micros_to_time, parse_field, Gate, GateError, Ticket};
use crate::domain::{Coupon, CouponId, CouponName, CouponState, EventWindow, Stock, UserId};

static SNAPSHOT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("snapshot.lua")));

/// One coupon (and optionally one user's ticket) read at one instant of Redis' clock.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub coupon: Coupon,
    pub admitted: u32,
    pub issued: u32,
    /// Redis' clock at the read: the same clock the gate admits by.
    pub now: DateTime<Utc>,
    /// The user's ticket, when a user was asked about and is admitted.
    pub ticket: Option<Ticket>,
}

impl Snapshot {
    /// A coupon just created: nobody admitted yet, read at its creation time.
    pub fn fresh(coupon: Coupon) -> Self {
        Self {
            now: coupon.created_at,
            coupon,
            admitted: 0,
            issued: 0,
            ticket: None,
        }
    }

    pub fn remaining(&self) -> u32 {
        self.coupon.stock.get().saturating_sub(self.admitted)
    }

    pub fn state(&self) -> CouponState {
        self.coupon.window.state_at(self.now, self.remaining() == 0)
    }
}

impl Gate {
    /// The coupon, and `user`'s ticket when they have one.
    pub async fn snapshot(
        &self,
        coupon: CouponId,
        user: Option<UserId>,
    ) -> Result<Option<Snapshot>, GateError> {
        if let Some(user) = user {
            if let Some(answer) = self.losers_snapshot(coupon, user).await {
                return answer;
            }
        }
        self.read_snapshot(coupon, user).await
    }

    /// One read of Redis, at one instant of its clock.
    pub(super) async fn read_snapshot(
        &self,
        coupon: CouponId,
        user: Option<UserId>,
    ) -> Result<Option<Snapshot>, GateError> {
        let keys = self.keys(coupon);
        let keys = &keys;
        let user_arg = user.map(|u| u.to_string()).unwrap_or_default();
        let user_arg = &user_arg;
        let reply: Vec<String> = self
            .run(|mut conn| async move {
                SNAPSHOT
                    .key(&keys.meta)
                    .key(&keys.queue)
                    .key(&keys.status)
                    .key(&keys.lost)
                    .arg(user_arg)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        let snapshot = parse_reply(coupon, &reply)?;
        match snapshot {
            None => self.unknown(coupon)?,
            Some(_) => self.seen(coupon),
        }
        Ok(snapshot)
    }
}

fn optional_time(us: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
    if us.is_empty() {
        return Ok(None);
    }
    micros_to_time(parse_field(us, "timestamp")?).map(Some)
}

fn parse_reply(id: CouponId, reply: &[String]) -> anyhow::Result<Option<Snapshot>> {
    let (head, user) = match reply {
        [] => return Ok(None),
        [head @ .., score, position, status] if reply.len() == 11 => {
            (head, Some(Ticket::parse(position, score, status)?))
        }
        head if reply.len() == 8 => (head, None),
        _ => return Err(anyhow!("malformed snapshot reply {reply:?}")),
    };
    let [stock, name, created, opens, closes, issued, admitted, now] = head else {
        unreachable!("length checked above")
    };
    let coupon = Coupon {
        id,
        name: CouponName::new(name)?,
        stock: Stock::new(parse_field(stock, "stock")?)?,
        window: EventWindow::new(optional_time(opens)?, optional_time(closes)?)?,
        created_at: optional_time(created)?.unwrap_or_default(),
    };
    Ok(Some(Snapshot {
        coupon,
        admitted: parse_field(admitted, "admitted count")?,
        issued: parse_field(issued, "issued count")?,
        now: micros_to_time(parse_field(now, "clock")?)?,
        ticket: user,
    }))
}
