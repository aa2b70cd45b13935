//! The generator: applicants drawn from the seed (when each arrives, at which instance, whether
//! they apply again and poll their place), and the patient client each one runs.

use std::time::{Duration, Instant};

use fcfs_coupon::auth::TokenKeys;
use fcfs_coupon::domain::UserId;
use futures::future::join_all;
use serde_json::Value;

use super::history::{History, Kind, Op};
use super::rng::Rng;
use super::system::{Addresses, INSTANCES};

#[derive(Debug, Clone)]
pub struct Plan {
    pub user: i64,
    /// When the first application leaves, from the start of the run.
    pub at: Duration,
    pub instance: usize,
    /// After the first final answer: position polls, then perhaps one more application.
    pub polls: Vec<Duration>,
    pub again: Option<Duration>,
}

/// `users` applicants spread over `window`.
pub fn plans(rng: &mut Rng, users: usize, window: Duration) -> Vec<Plan> {
    let window_ms = window.as_millis() as u64;
    (1..=users as i64)
        .map(|user| Plan {
            user,
            at: rng.millis(0, window_ms),
            instance: rng.range(0, INSTANCES as u64 - 1) as usize,
            polls: (0..rng.range(0, 2))
                .map(|_| rng.millis(100, 3_000))
                .collect(),
            again: rng.chance(30).then(|| rng.millis(100, 4_000)),
        })
        .collect()
}

/// What every client of a run shares.
pub struct Crowd {
    pub http: reqwest::Client,
    pub tokens: TokenKeys,
    pub addresses: Addresses,
    pub history: History,
    pub coupon: i64,
    /// A client asking through 503s and dead instances gives up after this.
    pub give_up: Instant,
}

impl Crowd {
    /// Every plan, each at its moment, all at once.
    pub async fn run(&self, plans: &[Plan]) {
        join_all(plans.iter().map(|plan| self.applicant(plan))).await;
    }

    async fn applicant(&self, plan: &Plan) {
        tokio::time::sleep_until((self.history.origin + plan.at).into()).await;
        let Some(first) = self
            .until_final(plan.user, plan.instance, Kind::Apply)
            .await
        else {
            return;
        };
        for wait in &plan.polls {
            tokio::time::sleep(*wait).await;
            self.until_final(plan.user, first.instance, Kind::Position)
                .await;
        }
        if let Some(wait) = plan.again {
            tokio::time::sleep(wait).await;
            self.until_final(plan.user, (first.instance + 1) % INSTANCES, Kind::Apply)
                .await;
        }
    }

    /// Asks until an answer that is not 503 and not a dead connection, backing off (100 ms
    /// doubling to 1 s) and trying the other instance when this one does not answer.
    pub async fn until_final(&self, user: i64, mut instance: usize, kind: Kind) -> Option<Op> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let op = self.call(user, instance, kind).await;
            if !matches!(op.status, None | Some(503)) {
                return Some(op);
            }
            if Instant::now() > self.give_up {
                return None;
            }
            if op.status.is_none() {
                instance = (instance + 1) % INSTANCES;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// One request, recorded whatever happens to it.
    pub async fn call(&self, user: i64, instance: usize, kind: Kind) -> Op {
        let token = self
            .tokens
            .mint(UserId::new(user).unwrap(), false, Duration::from_secs(3600))
            .unwrap();
        let address = self.addresses.read().unwrap()[instance].clone();
        let sent = Instant::now();
        let answer = match address {
            None => None, // dead: as a refused connection
            Some(base) => {
                let request = match kind {
                    Kind::Apply => self
                        .http
                        .post(format!("{base}/coupons/{}/issue", self.coupon)),
                    Kind::Position => self
                        .http
                        .get(format!("{base}/coupons/{}/position", self.coupon)),
                };
                match request.bearer_auth(token).send().await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        Some((status, resp.json::<Value>().await.unwrap_or_default()))
                    }
                    Err(_) => None,
                }
            }
        };
        let (status, body) = answer.map_or((None, Value::Null), |(s, b)| (Some(s), b));
        let text = |field: &str| body[field].as_str().map(str::to_owned);
        let op = Op {
            user,
            instance,
            kind,
            sent,
            received: Instant::now(),
            status,
            code: text("code"),
            position: body["position"].as_i64(),
            state: text("status"),
            origin: self.history.origin,
        };
        self.history.record(op.clone());
        op
    }
}
