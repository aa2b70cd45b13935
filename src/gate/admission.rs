use std::sync::LazyLock;

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use redis::Script;

use super::confirm::Written;
use super::{micros_to_time, parse_field, Gate, GateError};
use crate::domain::{CouponId, Position, Status, UserId};

static APPLY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("counts.lua"),
        include_str!("apply.lua")
    ))
});

/// What the gate decided for one application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Admitted {
        ticket: Ticket,
        stock: u32,
    },
    /// The user was admitted before; the original ticket, with its current status.
    AlreadyAdmitted {
        ticket: Ticket,
        stock: u32,
    },
    SoldOut,
    NotOpen,
    Closed,
    UnknownCoupon,
}

impl Admission {
    /// The ticket an admission (new or earlier) carries.
    fn ticket(&self) -> Option<&Ticket> {
        match self {
            Admission::Admitted { ticket, .. } | Admission::AlreadyAdmitted { ticket, .. } => {
                Some(ticket)
            }
            _ => None,
        }
    }
}

/// A winner's place in line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub position: Position,
    /// The Redis-side arrival time; also the sorted-set score.
    pub applied_at: DateTime<Utc>,
    pub status: Status,
}

impl Ticket {
    pub(super) fn parse(position: &str, score: &str, status: &str) -> anyhow::Result<Self> {
        Ok(Self {
            position: Position::new(parse_field(position, "position")?)?,
            applied_at: micros_to_time(parse_field(score, "score")?)?,
            status: status.parse()?,
        })
    }
}

impl Gate {
    /// One application: batched with others for the same event when batching is on (see
    /// `batching`), else a call of its own.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn apply(&self, coupon: CouponId, user: UserId) -> Result<Admission, GateError> {
        let Some(batching) = &self.batching else {
            // Boxed: the call's future is deep, and the handler's would be deeper still.
            let mut answers = Box::pin(self.apply_batch(coupon, &[user])).await?;
            return answers
                .pop()
                .unwrap_or_else(|| Err(anyhow!("the gate answered nothing").into()));
        };
        batching.admit(self, coupon, user).await
    }

    /// One EVALSHA for a batch of applications to one event, in arrival order: each one's
    /// admission, pending entry and status are written together or not at all, and the answers
    /// come back in the same order. `Err`: the call failed and nothing was decided. A member's
    /// own `Err`: its ticket is written but no replica confirmed it (`APP_REDIS__ACK_REPLICAS`);
    /// the members without a ticket have their answers regardless.
    pub async fn apply_batch(
        &self,
        coupon: CouponId,
        users: &[UserId],
    ) -> Result<Vec<Result<Admission, GateError>>, GateError> {
        self.observe_batch(users.len());
        let keys = self.keys(coupon);
        let keys = &keys;
        let reply: Result<Vec<Vec<String>>, GateError> = self
            .run(|mut conn| async move {
                let mut call = APPLY.prepare_invoke();
                call.key(&keys.meta)
                    .key(&keys.seq)
                    .key(&keys.queue)
                    .key(&keys.pending)
                    .key(&keys.status);
                for user in users {
                    call.arg(user.get());
                }
                call.invoke_async(&mut conn).await
            })
            .await;
        let reply = match reply {
            // Held for a restore: whatever this instance latched may no longer hold.
            Err(GateError::Held) => {
                self.unlatch(coupon);
                return Err(GateError::Held);
            }
            other => other?,
        };
        if reply.len() != users.len() {
            return Err(anyhow!("{} answers for {} applications", reply.len(), users.len()).into());
        }
        // The script answered, so the applications count, whatever follows.
        if reply
            .iter()
            .any(|answer| answer.first().is_some_and(|o| o != "NOT_FOUND"))
        {
            self.count_applications(coupon, users.len() as u64);
        }
        let admissions = reply
            .iter()
            .map(|answer| parse_reply(answer))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if admissions.contains(&Admission::SoldOut) {
            self.latch_soon(coupon);
        }
        if admissions.contains(&Admission::UnknownCoupon) {
            // About the event, so every member's answer.
            self.unknown(coupon)?;
        } else {
            self.seen(coupon);
        }
        let confirmed = self.confirm_tickets(coupon, users, &admissions).await;
        Ok(admissions
            .into_iter()
            .map(|admission| match (&confirmed, admission.ticket()) {
                (Err(e), Some(_)) => Err(e.shared()),
                _ => Ok(admission),
            })
            .collect())
    }

    /// Only a ticket needs replicas: the other answers change nothing a client keeps. One
    /// confirmation covers the batch. Tickets still waiting to be published are remembered
    /// here as told (see `told`), re-applications' too: a client told its ticket twice (a
    /// retried call that had run) holds it as surely as one told once.
    async fn confirm_tickets(
        &self,
        coupon: CouponId,
        users: &[UserId],
        admissions: &[Admission],
    ) -> Result<(), GateError> {
        let tickets: Vec<(i64, &Ticket)> = (users.iter().zip(admissions))
            .filter_map(|(user, admission)| Some((user.get(), admission.ticket()?)))
            .collect();
        if let (Some(ack), false) = (&self.ack, tickets.is_empty()) {
            let users = (tickets.iter())
                .map(|(user, ticket)| (*user, ticket.applied_at.timestamp_micros()))
                .collect();
            ack.confirm(Written { coupon, users }).await?;
        }
        for (user, ticket) in tickets {
            if ticket.status == Status::Admitted {
                let score = ticket.applied_at.timestamp_micros();
                self.remember_told(coupon, user, ticket.position.get(), score);
            }
        }
        Ok(())
    }
}

fn parse_reply(reply: &[String]) -> anyhow::Result<Admission> {
    let ticket = || match reply {
        [_, position, score, status, stock] => Ok((
            Ticket::parse(position, score, status)?,
            parse_field(stock, "stock")?,
        )),
        _ => Err(anyhow!("malformed admission reply {reply:?}")),
    };
    Ok(match reply.first().map(String::as_str) {
        Some("ADMITTED") => {
            let (ticket, stock) = ticket()?;
            Admission::Admitted { ticket, stock }
        }
        Some("ALREADY") => {
            let (ticket, stock) = ticket()?;
            Admission::AlreadyAdmitted { ticket, stock }
        }
        Some("SOLD_OUT") => Admission::SoldOut,
        Some("NOT_OPEN") => Admission::NotOpen,
        Some("CLOSED") => Admission::Closed,
        Some("NOT_FOUND") => Admission::UnknownCoupon,
        _ => return Err(anyhow!("unknown admission reply {reply:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_an_admission() {
        let reply = strings(&["ADMITTED", "3", "1700000000123456", "ADMITTED", "100"]);
        let Admission::Admitted { ticket, stock } = parse_reply(&reply).unwrap() else {
            panic!("not admitted")
        };
        assert_eq!(stock, 100);
        assert_eq!(ticket.position.get(), 3);
        assert_eq!(ticket.applied_at.timestamp_micros(), 1_700_000_000_123_456);
        assert_eq!(ticket.status, Status::Admitted);
    }

    #[test]
    fn rejects_malformed_replies() {
        assert!(parse_reply(&strings(&["ADMITTED", "3", "1", "ADMITTED"])).is_err());
        assert!(parse_reply(&strings(&["WHAT"])).is_err());
        assert!(parse_reply(&[]).is_err());
    }
}
