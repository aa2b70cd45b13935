//! The rehearsal's traffic, shaped like a drop: clients polling the event before it opens (a
//! few applying too early), the crowd at the opening, some applying again, and every winner
//! polling their position until ISSUED.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures::StreamExt;
use reqwest::Method;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::RehearseOptions;
use crate::spike::crowd::{self, Sample};

/// How often each polling client reads the event, and each waiting winner their position.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// How long past `--ramp` the event may take to read OPEN before the rehearsal gives up.
const OPENING_GRACE: Duration = Duration::from_secs(15);

/// The routes a drop's clients call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Route {
    /// `GET /coupons/{id}`, polled from the ramp to the end.
    ReadEvent,
    /// Applications before the opening (409 expected).
    ApplyEarly,
    /// The crowd at the opening.
    Apply,
    /// Applying again after the spike (200 for winners, 410 for the rest).
    ApplyAgain,
    /// `GET /coupons/{id}/position`.
    Position,
}

/// One answer as the client saw it; times in µs since the rehearsal started.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub route: Route,
    pub status: u16,
    pub latency_us: u64,
    pub done_us: u64,
}

/// Everything the rehearsal saw.
#[derive(Debug, Default)]
pub struct Observed {
    pub answers: Vec<Answer>,
    /// The crowd's applications, with their positions (for order and density).
    pub crowd: Vec<Sample>,
    /// When the crowd's first request was sent.
    pub crowd_started_us: u64,
    /// Re-applications: (user, status, position answered).
    pub again: Vec<(u32, u16, Option<u32>)>,
    /// Each winner (user index) and the position the crowd's 202 told them.
    pub winners: BTreeMap<u32, u32>,
    /// When each winner was first seen ISSUED.
    pub issued_us: HashMap<u32, u64>,
    /// The statuses of winners not ISSUED when the wait ended.
    pub not_issued: BTreeMap<String, u64>,
    /// Losers who read their position after the spike, and what it said.
    pub loser_statuses: BTreeMap<String, u64>,
}

pub struct Drop {
    pub client: reqwest::Client,
    pub url: String,
    pub coupon: i64,
    pub tokens: Arc<Vec<String>>,
    pub started: Instant,
}

impl Drop {
    pub async fn play(&self, opts: &RehearseOptions) -> anyhow::Result<Observed> {
        let answers = Arc::new(Mutex::new(Vec::new()));
        let opened = Arc::new(AtomicBool::new(false));
        let stop_polling = CancellationToken::new();
        let pollers: Vec<_> = (0..opts.pollers.max(1))
            .map(|i| {
                tokio::spawn(self.poll_event(
                    i,
                    answers.clone(),
                    opened.clone(),
                    stop_polling.clone(),
                ))
            })
            .collect();
        // A few clients apply before the opening, as real ones do.
        let early = (opts.users as usize / 100).max(1);
        tokio::time::sleep(Duration::from_secs_f64(opts.ramp / 2.0)).await;
        for user in 0..early {
            let (answer, _) = self
                .call(Route::ApplyEarly, Method::POST, &self.apply_url(), user)
                .await;
            answers.lock().expect("answers").push(answer);
        }
        let opening = Instant::now() + Duration::from_secs_f64(opts.ramp) + OPENING_GRACE;
        while !opened.load(Ordering::Acquire) {
            if Instant::now() > opening {
                stop_polling.cancel();
                bail!("the event did not read OPEN within {OPENING_GRACE:?} after --ramp");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        let mut observed = Observed {
            crowd_started_us: self.now_us(),
            ..Observed::default()
        };
        eprintln!("rehearse: open; the crowd applies");
        observed.crowd = crowd::run(
            &self.client,
            Method::POST,
            Arc::new(vec![self.apply_url()]),
            self.tokens.clone(),
            opts.concurrency,
            self.started,
        )
        .await;
        observed.winners = observed
            .crowd
            .iter()
            .filter_map(|s| s.position.filter(|_| s.status == 202).map(|p| (s.user, p)))
            .collect();
        self.apply_again(opts, &answers, &mut observed).await;
        eprintln!(
            "rehearse: {} admitted; polling their positions until ISSUED",
            observed.winners.len()
        );
        self.wait_for_issued(opts, &answers, &mut observed).await;
        stop_polling.cancel();
        for poller in pollers {
            poller.await?;
        }
        observed.answers = std::mem::take(&mut *answers.lock().expect("answers"));
        observed
            .answers
            .extend(observed.crowd.iter().map(|s| Answer {
                route: Route::Apply,
                status: s.status,
                latency_us: s.latency_us,
                done_us: s.done_us,
            }));
        Ok(observed)
    }

    /// One client reading the event until the end; flags the opening when it sees it.
    fn poll_event(
        &self,
        i: usize,
        answers: Arc<Mutex<Vec<Answer>>>,
        opened: Arc<AtomicBool>,
        stop: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let this = self.clone_handle();
        async move {
            // Spread over one period, as independent clients are.
            tokio::time::sleep(POLL_EVERY.mul_f64(i as f64 / 16.0 % 1.0)).await;
            while !stop.is_cancelled() {
                let url = format!("{}/coupons/{}", this.url, this.coupon);
                let (answer, body) = this.call(Route::ReadEvent, Method::GET, &url, i).await;
                answers.lock().expect("answers").push(answer);
                let state = body
                    .as_ref()
                    .and_then(|b| b["state"].as_str().map(str::to_owned));
                if state.is_some_and(|s| s != "SCHEDULED") {
                    opened.store(true, Ordering::Release);
                }
                tokio::select! {
                    _ = tokio::time::sleep(POLL_EVERY) => {}
                    _ = stop.cancelled() => {}
                }
            }
        }
    }

    /// Every k-th user applies again: winners must get 200 at the same place, the rest 410.
    async fn apply_again(
        &self,
        opts: &RehearseOptions,
        answers: &Mutex<Vec<Answer>>,
        observed: &mut Observed,
    ) {
        if opts.reapply <= 0.0 {
            return;
        }
        let every = (1.0 / opts.reapply.min(1.0)).round().max(1.0) as usize;
        let users: Vec<usize> = (0..self.tokens.len()).step_by(every).collect();
        let url = self.apply_url();
        let done: Vec<(Answer, Option<Value>, usize)> = futures::stream::iter(users)
            .map(|user| {
                let url = url.clone();
                async move {
                    let (answer, body) =
                        self.call(Route::ApplyAgain, Method::POST, &url, user).await;
                    (answer, body, user)
                }
            })
            .buffer_unordered(opts.concurrency.max(1))
            .collect()
            .await;
        let position_url = self.position_url();
        for (answer, body, user) in done {
            answers.lock().expect("answers").push(answer);
            let position = body
                .as_ref()
                .and_then(|b| b["position"].as_u64())
                .map(|p| p as u32);
            observed.again.push((user as u32, answer.status, position));
            if !observed.winners.contains_key(&(user as u32)) {
                let (answer, body) = self
                    .call(Route::Position, Method::GET, &position_url, user)
                    .await;
                answers.lock().expect("answers").push(answer);
                let status = body
                    .as_ref()
                    .and_then(|b| b["status"].as_str())
                    .unwrap_or("no answer")
                    .to_owned();
                *observed.loser_statuses.entry(status).or_default() += 1;
            }
        }
    }

    /// Rounds of position reads by every winner not yet ISSUED, until none is left or the
    /// wait (twice `--max-drain-ms`, at least 10 s after the last admission) is over.
    async fn wait_for_issued(
        &self,
        opts: &RehearseOptions,
        answers: &Mutex<Vec<Answer>>,
        observed: &mut Observed,
    ) {
        let last_admission = observed
            .crowd
            .iter()
            .filter(|s| s.status == 202)
            .map(|s| s.done_us)
            .max()
            .unwrap_or_else(|| self.now_us());
        let wait = Duration::from_secs_f64((2.0 * opts.max_drain_ms / 1000.0).max(10.0));
        let deadline_us = last_admission + wait.as_micros() as u64;
        let url = self.position_url();
        let mut waiting: Vec<u32> = observed.winners.keys().copied().collect();
        let mut last_seen: HashMap<u32, String> = HashMap::new();
        while !waiting.is_empty() && self.now_us() < deadline_us {
            let round: Vec<(u32, Answer, Option<String>)> = futures::stream::iter(waiting.clone())
                .map(|user| {
                    let url = url.clone();
                    async move {
                        let (answer, body) = self
                            .call(Route::Position, Method::GET, &url, user as usize)
                            .await;
                        let status = body.and_then(|b| b["status"].as_str().map(str::to_owned));
                        (user, answer, status)
                    }
                })
                .buffer_unordered(opts.concurrency.max(1))
                .collect()
                .await;
            for (user, answer, status) in round {
                answers.lock().expect("answers").push(answer);
                if status.as_deref() == Some("ISSUED") {
                    observed.issued_us.insert(user, answer.done_us);
                }
                last_seen.insert(
                    user,
                    status.unwrap_or_else(|| format!("HTTP {}", answer.status)),
                );
            }
            waiting.retain(|u| !observed.issued_us.contains_key(u));
            if !waiting.is_empty() {
                tokio::time::sleep(POLL_EVERY).await;
            }
        }
        for user in waiting {
            let status = last_seen
                .remove(&user)
                .unwrap_or_else(|| "never read".into());
            *observed.not_issued.entry(status).or_default() += 1;
        }
    }

    async fn call(
        &self,
        route: Route,
        method: Method,
        url: &str,
        user: usize,
    ) -> (Answer, Option<Value>) {
        let sent = Instant::now();
        let result = self
            .client
            .request(method, url)
            .bearer_auth(&self.tokens[user])
            .send()
            .await;
        let (status, body) = match result {
            Ok(resp) => {
                let status = resp.status().as_u16();
                (status, resp.json::<Value>().await.ok())
            }
            Err(_) => (0, None),
        };
        let done = Instant::now();
        let answer = Answer {
            route,
            status,
            latency_us: (done - sent).as_micros() as u64,
            done_us: (done - self.started).as_micros() as u64,
        };
        (answer, body)
    }

    fn apply_url(&self) -> String {
        format!("{}/coupons/{}/issue", self.url, self.coupon)
    }

    fn position_url(&self) -> String {
        format!("{}/coupons/{}/position", self.url, self.coupon)
    }

    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    fn clone_handle(&self) -> Drop {
        Drop {
            client: self.client.clone(),
            url: self.url.clone(),
            coupon: self.coupon,
            tokens: self.tokens.clone(),
            started: self.started,
        }
    }
}
